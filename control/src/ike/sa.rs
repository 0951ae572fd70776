//! One IKE SA as a sans-IO state machine: the initial exchanges IKE_SA_INIT and IKE_AUTH
//! (PSK) with the first child SA, in either role, and afterwards (module `established`)
//! child and IKE SA rekeys, Deletes, liveness checks and lifetimes.
//!
//! The API follows quinn-proto: feed [`IkeSa::handle_datagram`] and
//! [`IkeSa::handle_timeout`] with the caller's `now`, then drain [`IkeSa::poll_transmit`]
//! and [`IkeSa::poll_event`], and wake up again at [`IkeSa::poll_timeout`]. Nothing here
//! reads a clock or touches a socket.
//!
//! The handshake states are types (after rustls): each state is a struct consumed by its
//! handler, which returns the next state. Child SA keys can only be derived with an
//! [`AuthVerified`] proof, which only the AUTH check can produce.
//!
//! Malformed or unexpected input is a counted drop ([`Stats`]) or the answer RFC 7296
//! section 2.21 prescribes; it never panics and never ends an established SA.

use core::fmt;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mifsec_dataplane::aead::Cipher;
use ring::digest;
use ring::rand::{SecureRandom, SystemRandom};

use super::config::{AddressPool, ChildConfig, IkeConfig, Mode};
use super::crypto::{
    ChildKeys, CryptoError, IkeKeys, KeyExchange, Prf, Secret, SkCrypter, psk_auth, rekey_skeyseed,
    signed_octets, skeyseed, verify_psk_auth,
};
use super::fragment::{HALF_OPEN_LIMITS, Outcome, Reassembler, max_message_len};
use super::proposal::{
    IkeChoice, check_esp_response, check_ike_response, esp_response_payload, esp_sa_payload,
    ike_response_payload, ike_sa_payload, is_subset, narrow, select_esp, select_ike,
};
use crate::wire::{
    AuthMethod, AuthPayload, CfgAttribute, CfgAttributeType, CfgType, CpPayload, DeletePayload,
    DhGroup, ExchangeType, Flags, Header, HeaderPacket, IdPayload, KePayload, Message,
    NotifyPayload, NotifyType, Payload, TrafficSelector, TsPayload, parse_payloads,
};

mod established;
pub use established::{MAX_CHILDREN, MAX_TRACKED_CHILDREN};

use established::{Action, Channel, PendingRequest};

/// Length of the nonces we send.
const NONCE_LEN: usize = 32;
/// Smallest and largest nonce accepted (RFC 7296 section 3.9).
const NONCE_RANGE: core::ops::RangeInclusive<usize> = 16..=256;
/// How many COOKIE retries an initiator makes.
const MAX_COOKIE_RETRIES: u8 = 2;
/// The hash algorithms we announce in SIGNATURE_HASH_ALGORITHMS (RFC 7427 section 4, IANA
/// "IKEv2 Hash Algorithms"): SHA2-256, SHA2-384, SHA2-512.
pub const SIGNATURE_HASHES: [u16; 3] = [2, 3, 4];

/// A datagram to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Transmit {
    /// The local address to send from.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The IKE message (without a non-ESP marker: the socket layer adds it on port 4500).
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Transmit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transmit")
            .field("local", &self.local)
            .field("remote", &self.remote)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// What NAT detection (RFC 7296 section 2.23) found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NatStatus {
    /// Our address is translated: the peer saw another one than we sent from.
    pub local_behind_nat: bool,
    /// The peer's address is translated.
    pub remote_behind_nat: bool,
}

impl NatStatus {
    /// Whether any NAT is in the path (ESP then goes in UDP).
    pub fn any(self) -> bool {
        self.local_behind_nat || self.remote_behind_nat
    }
}

/// An established IKE SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeSaInfo {
    /// The initiator's SPI.
    pub spi_i: u64,
    /// The responder's SPI.
    pub spi_r: u64,
    /// Whether we are the original initiator.
    pub initiator: bool,
    /// The AEAD protecting IKE messages.
    pub cipher: Cipher,
    /// The PRF.
    pub prf: Prf,
    /// The Diffie-Hellman group.
    pub group: DhGroup,
    /// Our address, after any float to the NAT-T port.
    pub local: SocketAddr,
    /// The peer's address, after any float.
    pub remote: SocketAddr,
    /// NAT detection's outcome.
    pub nat: NatStatus,
    /// The identity the peer authenticated as.
    pub remote_id: IdPayload,
    /// Whether the peer advertised MOBIKE_SUPPORTED.
    pub peer_mobike: bool,
    /// Whether IKE fragmentation (RFC 7383) is in use: both sides advertised
    /// IKEV2_FRAGMENTATION_SUPPORTED.
    pub fragmentation: bool,
    /// The hash algorithms of the peer's SIGNATURE_HASH_ALGORITHMS (RFC 7427), as IANA
    /// numbers; empty if it sent none.
    pub peer_signature_hashes: Vec<u16>,
    /// The virtual IPs (INTERNAL_IP4_ADDRESS, INTERNAL_IP6_ADDRESS): assigned to us
    /// (initiator) or leased to the peer (responder).
    pub vips: Vec<IpAddr>,
    /// The DNS servers (INTERNAL_IP4_DNS, INTERNAL_IP6_DNS) received (initiator) or sent
    /// (responder).
    pub dns: Vec<IpAddr>,
}

/// A child SA to install: both directions' SPIs and keys from our point of view.
pub struct ChildSa {
    /// The child configuration's name.
    pub name: String,
    /// The SPI the peer puts on packets to us.
    pub spi_in: u32,
    /// The SPI we put on packets to the peer.
    pub spi_out: u32,
    /// `key || salt` for inbound packets.
    pub keymat_in: Secret,
    /// `key || salt` for outbound packets.
    pub keymat_out: Secret,
    /// The AEAD.
    pub cipher: Cipher,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Tunnel or transport mode.
    pub mode: Mode,
    /// Our side's traffic selectors, as narrowed.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side's traffic selectors, as narrowed.
    pub remote_ts: Vec<TrafficSelector>,
    /// Whether ESP must go in UDP (a NAT was detected).
    pub udp_encap: bool,
}

impl fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSa")
            .field("name", &self.name)
            .field("spi_in", &format_args!("{:08x}", self.spi_in))
            .field("spi_out", &format_args!("{:08x}", self.spi_out))
            .field("cipher", &self.cipher)
            .field("esn", &self.esn)
            .field("mode", &self.mode)
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("udp_encap", &self.udp_encap)
            .finish_non_exhaustive()
    }
}

/// Why an IKE SA failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// A request went unanswered for the give-up time, or a half-open SA expired.
    Timeout,
    /// The peer's AUTH or identity did not verify.
    AuthenticationFailed,
    /// The peer answered with an error notify.
    PeerNotify(NotifyType),
    /// The peer's choice of proposal is not within what we offered.
    NoProposalChosen,
    /// The peer asked for a DH group we did not offer, or asked twice.
    InvalidKe,
    /// A message was malformed in a way that ends the handshake.
    InvalidSyntax,
    /// We requested a virtual IP and got none.
    NoVirtualIp,
    /// A cryptographic operation failed (for example an invalid peer public value).
    Crypto(CryptoError),
    /// The IKE SA reached its hard lifetime without a rekey (a Delete was sent).
    Expired,
}

impl FailReason {
    /// The error notify this failure maps to, where one does.
    pub fn notify_type(self) -> Option<NotifyType> {
        match self {
            FailReason::AuthenticationFailed => Some(NotifyType::AuthenticationFailed),
            FailReason::PeerNotify(n) => Some(n),
            FailReason::NoProposalChosen => Some(NotifyType::NoProposalChosen),
            FailReason::InvalidKe => Some(NotifyType::InvalidKePayload),
            FailReason::InvalidSyntax => Some(NotifyType::InvalidSyntax),
            FailReason::NoVirtualIp => Some(NotifyType::InternalAddressFailure),
            FailReason::Timeout | FailReason::Crypto(_) | FailReason::Expired => None,
        }
    }
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FailReason::Timeout => f.write_str("peer did not answer"),
            FailReason::AuthenticationFailed => f.write_str("peer authentication failed"),
            FailReason::PeerNotify(n) => write!(f, "peer sent error notify {n:?}"),
            FailReason::NoProposalChosen => f.write_str("peer chose a proposal we did not offer"),
            FailReason::InvalidKe => f.write_str("no acceptable key exchange group"),
            FailReason::InvalidSyntax => f.write_str("malformed message"),
            FailReason::NoVirtualIp => f.write_str("no virtual IP assigned"),
            FailReason::Crypto(e) => write!(f, "{e}"),
            FailReason::Expired => f.write_str("hard lifetime reached without a rekey"),
        }
    }
}

/// What [`IkeSa::child_seq_limit`] did about a child SA's sequence numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqLimitAction {
    /// A rekey of the child was started (or queued).
    Rekey,
    /// The child is being replaced by a rekey already (ours or the peer's); nothing more.
    Replacing,
    /// The child was deleted (a Delete is due, `ChildSaDeleted` reported); with `recreate`
    /// a new child of the same configuration follows (CREATE_CHILD_SA).
    Delete {
        /// Whether a new child is created in its place.
        recreate: bool,
    },
}

/// Something the caller must act on.
#[derive(Debug)]
pub enum Event {
    /// The IKE SA is authenticated and established.
    IkeSaEstablished(IkeSaInfo),
    /// A child SA is negotiated: install it.
    ChildSaEstablished(ChildSa),
    /// The first child SA was refused; the IKE SA stays up.
    ChildSaFailed {
        /// The child configuration's name.
        name: String,
        /// The error notify sent or received.
        reason: NotifyType,
    },
    /// The peer deleted child SAs (INFORMATIONAL with an ESP Delete payload): remove them.
    /// The SPIs are the peer's inbound ones, that is our outbound `spi_out` values.
    ChildSaDeleted {
        /// Our outbound SPIs of the deleted child SAs.
        spis_out: Vec<u32>,
    },
    /// A child SA was rekeyed (CREATE_CHILD_SA with REKEY_SA, either side): install `new`
    /// now, next to the old pair, and keep the old one (inbound `old_spi_in`) until a
    /// [`Event::ChildSaDeleted`] names it (make-before-break, RFC 7296 section 2.8).
    ChildSaRekeyed {
        /// The inbound SPI of the child SA replaced.
        old_spi_in: u32,
        /// The new child SA.
        new: ChildSa,
        /// Whether we initiated the rekey: the peer then has the new pair installed
        /// already, and outbound traffic can move to it at once. A rekey responder keeps
        /// sending on the old pair until its Delete (the initiator may not have the new
        /// one yet), as strongSwan does.
        initiated: bool,
    },
    /// The IKE SA was rekeyed (either side): it now runs under the SPIs and algorithms of
    /// `IkeSaInfo`; its child SAs are unchanged. The old SPIs stay routed to this SA until
    /// the old IKE SA's Delete exchange is over.
    IkeSaRekeyed(IkeSaInfo),
    /// The IKE SA failed; nothing more will happen on it.
    Failed(FailReason),
    /// The peer deleted the IKE SA.
    Closed,
}

/// Counters of what was dropped or repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stats {
    /// Datagrams that did not parse as IKE messages.
    pub malformed: u64,
    /// Well-formed messages that fit no state: wrong SPIs, flags, exchange or message ID.
    pub unexpected: u64,
    /// SK payloads that did not authenticate.
    pub integrity: u64,
    /// Requests we retransmitted.
    pub retransmitted: u64,
    /// Retransmitted requests answered from the response cache.
    pub answered_from_cache: u64,
    /// IKE_SA_INIT requests refused with an error notify (no SA created).
    pub refused_init: u64,
    /// IKE fragments (SKF messages) sent, retransmissions included.
    pub fragments_sent: u64,
    /// IKE fragments received that authenticated.
    pub fragments_received: u64,
    /// Authenticated fragments not used: duplicates, stale, over a limit, or not
    /// negotiated.
    pub fragments_dropped: u64,
}

/// Proof that the peer's AUTH payload verified. Only [`verify_peer`] makes one, and child
/// SA keys can only be derived with one.
#[derive(Debug)]
pub struct AuthVerified(());

/// An outstanding request and its retransmission schedule.
#[derive(Debug)]
struct Retransmit {
    bytes: Vec<u8>,
    first_sent: Instant,
    next_at: Instant,
    interval: Duration,
}

/// Keys and values shared by the states after IKE_SA_INIT.
struct Core {
    initiator: bool,
    spi_i: u64,
    spi_r: u64,
    ni: Vec<u8>,
    nr: Vec<u8>,
    prf: Prf,
    cipher: Cipher,
    group: DhGroup,
    sk_d: Secret,
    sk_pi: Secret,
    sk_pr: Secret,
    tx: SkCrypter,
    rx: SkCrypter,
    /// The IKE_SA_INIT request and response as sent (RealMessage1 and RealMessage2).
    init_request: Vec<u8>,
    init_response: Vec<u8>,
    nat: NatStatus,
    /// With IKE fragmentation negotiated: the largest message sent whole.
    frag: Option<usize>,
    /// Fragments of messages from the peer being reassembled.
    reasm: Reassembler,
    /// The peer's SIGNATURE_HASH_ALGORITHMS.
    peer_hashes: Vec<u16>,
}

impl Core {
    fn new(
        initiator: bool,
        (spi_i, spi_r): (u64, u64),
        ni: Vec<u8>,
        nr: Vec<u8>,
        gir: &[u8],
        choice: (Cipher, Prf, DhGroup),
        messages: (Vec<u8>, Vec<u8>),
    ) -> Result<Core, CryptoError> {
        let seed = skeyseed(choice.1, &ni, &nr, gir);
        Core::from_seed(initiator, (spi_i, spi_r), ni, nr, &seed, choice, messages)
    }

    /// The IKE SA that replaces this one in a rekey (RFC 7296 section 2.18): `SKEYSEED =
    /// prf(SK_d (old), g^ir (new) | Ni | Nr)` with the old PRF, then the new SA's keys.
    fn rekeyed(
        &self,
        initiator: bool,
        spis: (u64, u64),
        ni: Vec<u8>,
        nr: Vec<u8>,
        gir: &[u8],
        choice: IkeChoice,
    ) -> Result<Core, CryptoError> {
        let seed = rekey_skeyseed(self.prf, &self.sk_d, gir, &ni, &nr);
        let mut core = Core::from_seed(
            initiator,
            spis,
            ni,
            nr,
            &seed,
            (choice.cipher, choice.prf, choice.group),
            (Vec::new(), Vec::new()),
        )?;
        core.nat = self.nat;
        // Extensions negotiated in IKE_SA_INIT carry over to the new IKE SA (as strongSwan's
        // inherit_pre does).
        core.frag = self.frag;
        core.peer_hashes = self.peer_hashes.clone();
        Ok(core)
    }

    fn from_seed(
        initiator: bool,
        (spi_i, spi_r): (u64, u64),
        ni: Vec<u8>,
        nr: Vec<u8>,
        seed: &[u8],
        choice: (Cipher, Prf, DhGroup),
        messages: (Vec<u8>, Vec<u8>),
    ) -> Result<Core, CryptoError> {
        let (cipher, prf, group) = choice;
        let keys = IkeKeys::derive(prf, cipher, seed, &ni, &nr, spi_i, spi_r)?;
        let (tx, rx) = if initiator {
            (&keys.sk_ei, &keys.sk_er)
        } else {
            (&keys.sk_er, &keys.sk_ei)
        };
        let tx = SkCrypter::new(cipher, tx)?;
        let rx = SkCrypter::new(cipher, rx)?;
        Ok(Core {
            initiator,
            spi_i,
            spi_r,
            ni,
            nr,
            prf,
            cipher,
            group,
            sk_d: keys.sk_d.clone(),
            sk_pi: keys.sk_pi.clone(),
            sk_pr: keys.sk_pr.clone(),
            tx,
            rx,
            init_request: messages.0,
            init_response: messages.1,
            nat: NatStatus::default(),
            frag: None,
            reasm: Reassembler::default(),
            peer_hashes: Vec::new(),
        })
    }

    fn header(&self, exchange_type: ExchangeType, response: bool, message_id: u32) -> Header {
        let mut flags = if self.initiator {
            Flags::INITIATOR
        } else {
            Flags::NONE
        };
        if response {
            flags = flags | Flags::RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            minor_version: 0,
            exchange_type,
            flags,
            message_id,
        }
    }

    /// Seals a message. With fragmentation negotiated and the message too long, the result
    /// is its SKF fragments back to back (each an IKE message whose header's Length field
    /// delimits it); `Ctx::send` sends them as separate datagrams. Keeping them as one
    /// buffer lets retransmission and the response cache resend all fragments unchanged.
    fn seal(
        &mut self,
        exchange_type: ExchangeType,
        response: bool,
        message_id: u32,
        inner: &[Payload],
    ) -> Result<Vec<u8>, CryptoError> {
        let header = self.header(exchange_type, response, message_id);
        match self.frag {
            Some(max) => Ok(self.tx.seal_fragments(header, inner, max)?.concat()),
            None => self.tx.seal(header, Vec::new(), inner),
        }
    }

    /// Opens a protected message from the peer: an SK message at once; an SKF fragment is
    /// authenticated and stored, and `Ok(None)` returned until its message is complete,
    /// which is then parsed as an SK message's inner payloads would be.
    fn open(
        &mut self,
        bytes: &[u8],
        msg: &Message,
        stats: &mut Stats,
    ) -> Result<Option<Vec<Payload>>, CryptoError> {
        let Some(Payload::Skf(skf)) = msg.payloads.last() else {
            return self.rx.open(bytes, msg).map(Some);
        };
        if self.frag.is_none() {
            // RFC 7383 section 2.5: fragments are only used once both sides support them.
            stats.fragments_dropped += 1;
            return Ok(None);
        }
        let data = self.rx.open_fragment(bytes, msg)?;
        stats.fragments_received += 1;
        let h = &msg.header;
        match self
            .reasm
            .insert(h.flags.response(), h.message_id, skf, data)
        {
            Outcome::Complete(first, plain) => parse_payloads(first, &plain)
                .map(Some)
                .map_err(CryptoError::Inner),
            Outcome::Stored => Ok(None),
            Outcome::Dropped(_) => {
                stats.fragments_dropped += 1;
                Ok(None)
            }
        }
    }

    /// Records the extensions the peer's IKE_SA_INIT message announced: IKE fragmentation
    /// (used if we support it too) and its signature hash algorithms.
    fn negotiate_extensions(&mut self, cfg: &IkeConfig, peer: &Message, remote: SocketAddr) {
        let peer_frag = peer
            .notify(NotifyType::Ikev2FragmentationSupported)
            .is_some();
        self.frag =
            (cfg.fragmentation && peer_frag).then(|| max_message_len(cfg.fragment_size, remote));
        self.peer_hashes = peer
            .notify(NotifyType::SignatureHashAlgorithms)
            .map(|n| {
                // RFC 7427 defines a handful: more is noise we neither keep nor log.
                n.data
                    .chunks_exact(2)
                    .take(16)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default();
    }

    /// Our AUTH payload.
    fn our_auth(&self, psk: &[u8], id: &IdPayload) -> AuthPayload {
        let (msg, nonce, skp) = if self.initiator {
            (&self.init_request, &self.nr, &self.sk_pi)
        } else {
            (&self.init_response, &self.ni, &self.sk_pr)
        };
        let octets = signed_octets(self.prf, msg, nonce, skp, id);
        AuthPayload {
            method: AuthMethod::SharedKeyMic,
            data: psk_auth(self.prf, psk, &octets).to_vec(),
        }
    }

    fn info(
        &self,
        local: SocketAddr,
        remote: SocketAddr,
        id: IdPayload,
        mobike: bool,
    ) -> IkeSaInfo {
        IkeSaInfo {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            initiator: self.initiator,
            cipher: self.cipher,
            prf: self.prf,
            group: self.group,
            local,
            remote,
            nat: self.nat,
            remote_id: id,
            peer_mobike: mobike,
            fragmentation: self.frag.is_some(),
            peer_signature_hashes: self.peer_hashes.clone(),
            vips: Vec::new(),
            dns: Vec::new(),
        }
    }

    /// `KEYMAT` for the first child, split into (inbound, outbound) for us.
    fn child_keys(
        &self,
        _proof: &AuthVerified,
        cipher: Cipher,
    ) -> Result<(Secret, Secret), CryptoError> {
        let k = ChildKeys::derive(self.prf, &self.sk_d, None, &self.ni, &self.nr, cipher)?;
        Ok(if self.initiator {
            (k.r_to_i, k.i_to_r)
        } else {
            (k.i_to_r, k.r_to_i)
        })
    }
}

/// Checks the peer's identity against the configuration and its AUTH payload.
fn verify_peer(
    core: &Core,
    cfg: &IkeConfig,
    id: &IdPayload,
    auth: &AuthPayload,
) -> Result<AuthVerified, FailReason> {
    if cfg.remote_id.as_ref().is_some_and(|want| want != id) {
        return Err(FailReason::AuthenticationFailed);
    }
    if auth.method != AuthMethod::SharedKeyMic {
        return Err(FailReason::AuthenticationFailed);
    }
    let (msg, nonce, skp) = if core.initiator {
        (&core.init_response, &core.ni, &core.sk_pr)
    } else {
        (&core.init_request, &core.nr, &core.sk_pi)
    };
    let octets = signed_octets(core.prf, msg, nonce, skp, id);
    if verify_psk_auth(core.prf, &cfg.psk, &octets, &auth.data) {
        Ok(AuthVerified(()))
    } else {
        Err(FailReason::AuthenticationFailed)
    }
}

/// `SHA-1(SPIi | SPIr | IP | port)`, the NAT_DETECTION_*_IP data (RFC 7296 section 2.23).
pub fn nat_detection_hash(spi_i: u64, spi_r: u64, addr: SocketAddr) -> [u8; 20] {
    let mut ctx = digest::Context::new(&digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(&spi_i.to_be_bytes());
    ctx.update(&spi_r.to_be_bytes());
    match addr.ip() {
        IpAddr::V4(a) => ctx.update(&a.octets()),
        IpAddr::V6(a) => ctx.update(&a.octets()),
    }
    ctx.update(&addr.port().to_be_bytes());
    let mut out = [0u8; 20];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn nat_notifies(spi_i: u64, spi_r: u64, local: SocketAddr, remote: SocketAddr) -> [Payload; 2] {
    [
        Payload::Notify(NotifyPayload::new(
            NotifyType::NatDetectionSourceIp,
            nat_detection_hash(spi_i, spi_r, local).to_vec(),
        )),
        Payload::Notify(NotifyPayload::new(
            NotifyType::NatDetectionDestinationIp,
            nat_detection_hash(spi_i, spi_r, remote).to_vec(),
        )),
    ]
}

/// Our NAT_DETECTION notifies; with `force_encap` the source hash is random, so that it
/// cannot match and the peer believes we are behind a NAT (RFC 7296 section 2.23).
fn our_nat_notifies(
    ctx: &Ctx,
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
) -> [Payload; 2] {
    let mut n = nat_notifies(spi_i, spi_r, local, remote);
    if ctx.cfg.force_encap {
        let fake = ctx
            .random::<20>()
            .unwrap_or_else(|_| nat_detection_hash(spi_i, !spi_r, local));
        n[0] = Payload::Notify(NotifyPayload::new(
            NotifyType::NatDetectionSourceIp,
            fake.to_vec(),
        ));
    }
    n
}

/// NAT detection on a received IKE_SA_INIT message whose header carries `spi_i`, `spi_r`,
/// received on `local` from `remote`. No NAT_DETECTION notifies: no NAT assumed.
fn detect_nat(msg: &Message, local: SocketAddr, remote: SocketAddr) -> NatStatus {
    let (i, r) = (msg.header.spi_i, msg.header.spi_r);
    let src = nat_detection_hash(i, r, remote);
    let dst = nat_detection_hash(i, r, local);
    let srcs: Vec<_> = msg
        .notifies()
        .filter(|n| n.notify_type == NotifyType::NatDetectionSourceIp)
        .collect();
    let remote_behind_nat = !srcs.is_empty() && !srcs.iter().any(|n| n.data == src);
    let local_behind_nat = msg
        .notify(NotifyType::NatDetectionDestinationIp)
        .is_some_and(|n| n.data != dst);
    NatStatus {
        local_behind_nat,
        remote_behind_nat,
    }
}

fn first_error_notify(payloads: &[Payload]) -> Option<NotifyType> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.notify_type.is_error() => Some(n.notify_type),
        _ => None,
    })
}

fn has_notify(payloads: &[Payload], t: NotifyType) -> bool {
    payloads
        .iter()
        .any(|p| matches!(p, Payload::Notify(n) if n.notify_type == t))
}

fn notify(t: NotifyType) -> Payload {
    Payload::Notify(NotifyPayload::new(t, Vec::new()))
}

/// The extension notifies of our IKE_SA_INIT request or response:
/// IKEV2_FRAGMENTATION_SUPPORTED (RFC 7383) when enabled, SIGNATURE_HASH_ALGORITHMS
/// (RFC 7427).
fn init_extension_notifies(cfg: &IkeConfig) -> Vec<Payload> {
    let mut out = Vec::new();
    if cfg.fragmentation {
        out.push(notify(NotifyType::Ikev2FragmentationSupported));
    }
    let hashes = SIGNATURE_HASHES
        .iter()
        .flat_map(|h| h.to_be_bytes())
        .collect();
    out.push(Payload::Notify(NotifyPayload::new(
        NotifyType::SignatureHashAlgorithms,
        hashes,
    )));
    out
}

/// Whether `msg` is an SKF fragment other than the first: a retransmitted request is
/// answered from the cache only on its fragment 1 (RFC 7383 section 2.6.1).
fn is_later_fragment(msg: &Message) -> bool {
    matches!(msg.payloads.last(), Some(Payload::Skf(f)) if f.fragment_number != 1)
}

/// Initiator: IKE_SA_INIT request sent, waiting for the response.
struct InitSent {
    spi_i: u64,
    ni: Vec<u8>,
    ke: KeyExchange,
    request: Vec<u8>,
    ke_retried: bool,
    cookie: Option<Vec<u8>>,
    cookie_retries: u8,
}

/// Initiator: IKE_AUTH request sent, waiting for the response.
struct AuthSent {
    core: Core,
    spi_in: u32,
    transport: bool,
}

/// Responder: waiting for an IKE_SA_INIT request.
struct AwaitInit;

/// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
struct AwaitAuth {
    core: Core,
}

/// Both roles: authenticated. The exchanges after IKE_AUTH live in `established.rs`.
struct Established {
    /// The current IKE SA.
    ch: Channel,
    /// Old IKE SAs replaced by a rekey (or made redundant by a collision): still answering
    /// their Delete exchange, or already deleted and kept for retransmitted requests.
    retiring: Vec<Channel>,
    /// What the caller was told about the IKE SA, kept up to date across rekeys.
    info: IkeSaInfo,
    /// Our outstanding request (a window of one).
    pending: Option<PendingRequest>,
    /// Requests to send once nothing is outstanding.
    todo: VecDeque<Action>,
    /// When the IKE SA is rekeyed (soft lifetime, jitter applied).
    rekey_at: Option<Instant>,
    /// When the IKE SA is deleted (hard lifetime).
    expire_at: Option<Instant>,
    /// The last sign of life from the peer: an authenticated IKE message or reported ESP.
    last_rx: Instant,
    /// A rekey of the IKE SA by the peer, answered while ours was outstanding (RFC 7296
    /// section 2.8.2): the new SA and the lowest nonce of that exchange.
    peer_ike: Option<(Channel, Vec<u8>)>,
}

/// A child SA as the IKE SA tracks it (its keys went to the caller).
#[derive(Debug, Clone)]
struct Child {
    name: String,
    spi_in: u32,
    spi_out: u32,
    local_ts: Vec<TrafficSelector>,
    remote_ts: Vec<TrafficSelector>,
    mode: Mode,
    /// When to rekey it (soft lifetime, jitter applied).
    rekey_at: Option<Instant>,
    /// When to delete it (hard lifetime).
    expire_at: Option<Instant>,
    /// Rekey when its byte or packet usage reaches these (soft limits, jitter applied);
    /// cleared once the rekey was asked for.
    rekey_bytes: Option<u64>,
    rekey_packets: Option<u64>,
    /// Delete when its byte or packet usage reaches these (hard limits).
    life_bytes: Option<u64>,
    life_packets: Option<u64>,
    /// Replaced by a rekey of ours; its Delete is due or under way.
    rekeyed: bool,
    /// Replaced by a rekey of the peer's that we answered: the lowest nonce of that
    /// exchange and the new child's inbound SPI (for RFC 7296 section 2.8.1).
    peer_rekey: Option<(Vec<u8>, u32)>,
}

/// Both roles: failed or closed. Still answers a retransmission of the request it last
/// answered, so that the peer learns the outcome.
struct Dead {
    spis: Option<(u64, u64)>,
    last_response: Option<(u32, Vec<u8>)>,
}

enum State {
    InitSent(Box<InitSent>),
    AuthSent(Box<AuthSent>),
    AwaitInit(AwaitInit),
    AwaitAuth(Box<AwaitAuth>),
    Established(Box<Established>),
    Dead(Dead),
}

impl State {
    fn name(&self) -> &'static str {
        match self {
            State::InitSent(_) => "IKE_SA_INIT sent",
            State::AuthSent(_) => "IKE_AUTH sent",
            State::AwaitInit(_) => "awaiting IKE_SA_INIT",
            State::AwaitAuth(_) => "awaiting IKE_AUTH",
            State::Established(_) => "established",
            State::Dead(_) => "dead",
        }
    }
}

/// Everything but the state: configuration, addresses, queues, timers.
struct Ctx {
    cfg: IkeConfig,
    rng: SystemRandom,
    local: SocketAddr,
    remote: SocketAddr,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    retransmit: Option<Retransmit>,
    /// When a half-open responder SA expires.
    half_open_deadline: Option<Instant>,
    stats: Stats,
    /// The installed child SAs.
    children: Vec<Child>,
    /// Whether we started the first IKE SA (a rekey may swap the IKE roles).
    original_initiator: bool,
    /// Responder: the virtual IPs leased to the peer, returned when the SA dies.
    leases: Vec<(Arc<AddressPool>, IpAddr)>,
    /// Tests only: each child rekey exchange's lowest nonce and the new inbound SPI.
    #[cfg(test)]
    rekey_log: Vec<(Vec<u8>, u32)>,
    /// Tests only: attributes a responder adds to its CFG_REPLY (a peer pushing more).
    #[cfg(test)]
    test_cp_extra: Vec<CfgAttribute>,
}

impl Ctx {
    fn send(&mut self, bytes: Vec<u8>) {
        self.send_to(self.local, self.remote, bytes);
    }

    /// Queues a sealed message: one datagram, or the fragments `Core::seal` put back to
    /// back, one datagram each.
    fn send_to(&mut self, local: SocketAddr, remote: SocketAddr, bytes: Vec<u8>) {
        let mut lens = Vec::new();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let len = HeaderPacket::new_checked(rest)
                .map(|h| h.length() as usize)
                .ok()
                .filter(|l| (1..=rest.len()).contains(l))
                .unwrap_or(rest.len());
            lens.push(len);
            rest = &rest[len..];
        }
        if lens.len() <= 1 {
            self.transmits.push_back(Transmit {
                local,
                remote,
                bytes,
            });
            return;
        }
        self.stats.fragments_sent += lens.len() as u64;
        let mut at = 0;
        for len in lens {
            self.transmits.push_back(Transmit {
                local,
                remote,
                bytes: bytes[at..at + len].to_vec(),
            });
            at += len;
        }
    }

    fn send_request(&mut self, now: Instant, bytes: Vec<u8>) {
        self.send(bytes.clone());
        self.retransmit = Some(Retransmit {
            bytes,
            first_sent: now,
            next_at: now + self.cfg.retransmit.initial,
            interval: self.cfg.retransmit.initial,
        });
    }

    fn random<const N: usize>(&self) -> Result<[u8; N], FailReason> {
        let mut b = [0u8; N];
        self.rng
            .fill(&mut b)
            .map_err(|_| FailReason::Crypto(CryptoError::Rng))?;
        Ok(b)
    }

    /// `base` minus a random amount of at most `rand` (strongSwan's `rand_time`).
    fn jittered(&self, base: Duration, rand: Duration) -> Duration {
        let span = u64::try_from(rand.as_millis()).unwrap_or(u64::MAX);
        if span == 0 {
            return base;
        }
        let r = self.random::<8>().map(u64::from_be_bytes).unwrap_or(0) % span.saturating_add(1);
        base.saturating_sub(Duration::from_millis(r))
    }

    /// `base` less a random amount of at most `rand` (at least 1).
    fn jittered_count(&self, base: u64, rand: u64) -> u64 {
        if rand == 0 {
            return base;
        }
        let r = self.random::<8>().map(u64::from_be_bytes).unwrap_or(0) % rand.saturating_add(1);
        base.saturating_sub(r).max(1)
    }

    /// Starts tracking a new child SA, with its lifetimes (its configuration's own, else
    /// the IKE SA's `child_*` ones).
    fn track_child(&mut self, now: Instant, c: &ChildSa) {
        let l = self.cfg.lifetimes;
        let l = self
            .cfg
            .child_named(&c.name)
            .lifetimes
            .unwrap_or_else(|| l.child_lifetimes());
        let mut child = Child::new(c);
        child.rekey_at = l.rekey.map(|t| now + self.jittered(t, l.rand));
        child.expire_at = l.life.map(|t| now + t);
        child.rekey_bytes = l.rekey_bytes.map(|b| self.jittered_count(b, l.rand_bytes));
        child.rekey_packets = l
            .rekey_packets
            .map(|p| self.jittered_count(p, l.rand_packets));
        child.life_bytes = l.life_bytes;
        child.life_packets = l.life_packets;
        self.children.push(child);
    }

    /// Returns the leased virtual IPs to their pools.
    fn release_leases(&mut self) {
        for (pool, addr) in self.leases.drain(..) {
            pool.release(addr);
        }
    }

    /// Responder: leases a virtual IP of each family a CFG_REQUEST asks for, from the
    /// first pool of that family with a free address. `Err` (INTERNAL_ADDRESS_FAILURE)
    /// when addresses were asked for, pools of an asked family exist, and none could be
    /// leased; a family without a pool is left out.
    fn lease_vips(&mut self, cp: &CpPayload) -> Result<Vec<IpAddr>, NotifyType> {
        let wants = |t| cp.attributes.iter().any(|a| a.attr_type == t);
        let mut vips = Vec::new();
        let mut pools_asked = false;
        for (v6, t) in [
            (false, CfgAttributeType::InternalIp4Address),
            (true, CfgAttributeType::InternalIp6Address),
        ] {
            if !wants(t) {
                continue;
            }
            for pool in self.cfg.pools.iter().filter(|p| p.is_ipv6() == v6) {
                pools_asked = true;
                if let Some(a) = pool.lease() {
                    self.leases.push((Arc::clone(pool), a));
                    vips.push(a);
                    break;
                }
            }
        }
        if pools_asked && vips.is_empty() {
            return Err(NotifyType::InternalAddressFailure);
        }
        Ok(vips)
    }

    /// The DNS servers of our pools, each once.
    fn pool_dns(&self) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = Vec::new();
        for d in self.cfg.pools.iter().flat_map(|p| p.dns().iter()) {
            if !out.contains(d) {
                out.push(*d);
            }
        }
        out
    }

    fn nonce(&self) -> Result<Vec<u8>, FailReason> {
        Ok(self.random::<NONCE_LEN>()?.to_vec())
    }

    fn ike_spi(&self) -> Result<u64, FailReason> {
        loop {
            let spi = u64::from_be_bytes(self.random()?);
            if spi != 0 {
                return Ok(spi);
            }
        }
    }

    fn esp_spi(&self) -> Result<u32, FailReason> {
        loop {
            let spi = u32::from_be_bytes(self.random()?);
            if spi >= 256 {
                return Ok(spi);
            }
        }
    }

    /// Ends the SA: timers off, a `Failed` event, a dead state keeping `last_response`.
    fn fail(
        &mut self,
        reason: FailReason,
        spis: Option<(u64, u64)>,
        last_response: Option<(u32, Vec<u8>)>,
    ) -> State {
        self.retransmit = None;
        self.half_open_deadline = None;
        self.events.push_back(Event::Failed(reason));
        State::Dead(Dead {
            spis,
            last_response,
        })
    }

    /// An unencrypted IKE_SA_INIT response carrying one notify, to `header`'s request.
    fn refuse_init(&mut self, request: &Header, n: NotifyPayload) {
        let msg = Message {
            header: Header {
                spi_i: request.spi_i,
                spi_r: 0,
                minor_version: 0,
                exchange_type: ExchangeType::IkeSaInit,
                flags: Flags::RESPONSE,
                message_id: request.message_id,
            },
            payloads: vec![Payload::Notify(n)],
        };
        self.stats.refused_init += 1;
        self.send(msg.to_bytes());
    }
}

/// One IKE SA, initiator or responder.
pub struct IkeSa {
    state: State,
    ctx: Ctx,
}

impl fmt::Debug for IkeSa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IkeSa")
            .field("state", &self.state.name())
            .field("local", &self.ctx.local)
            .field("remote", &self.ctx.remote)
            .field("stats", &self.ctx.stats)
            .finish_non_exhaustive()
    }
}

impl IkeSa {
    /// Starts an IKE SA as initiator from `local` to `remote`: the IKE_SA_INIT request is
    /// ready in [`IkeSa::poll_transmit`]. The KE payload is in the first group of the first
    /// proposal.
    pub fn initiate(
        cfg: IkeConfig,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<IkeSa, FailReason> {
        let mut ctx = Ctx::new(cfg, local, remote);
        ctx.original_initiator = true;
        let group = ctx
            .cfg
            .proposals
            .first()
            .and_then(|p| p.groups.first().copied())
            .ok_or(FailReason::NoProposalChosen)?;
        let ke = KeyExchange::generate(group, &ctx.rng).map_err(FailReason::Crypto)?;
        let mut st = InitSent {
            spi_i: ctx.ike_spi()?,
            ni: ctx.nonce()?,
            ke,
            request: Vec::new(),
            ke_retried: false,
            cookie: None,
            cookie_retries: 0,
        };
        st.send(&mut ctx, now);
        Ok(IkeSa {
            state: State::InitSent(Box::new(st)),
            ctx,
        })
    }

    /// A responder waiting for an IKE_SA_INIT request. Its addresses are those the request
    /// arrives on and from.
    pub fn respond(cfg: IkeConfig) -> IkeSa {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        IkeSa {
            state: State::AwaitInit(AwaitInit),
            ctx: Ctx::new(cfg, unspecified, unspecified),
        }
    }

    /// Processes one received datagram (an IKE message, non-ESP marker removed), received
    /// on `local` from `remote`.
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) {
        let msg = match Message::parse(bytes) {
            Ok(m) => m,
            Err(e) => {
                self.ctx.stats.malformed += 1;
                // An IKE_SA_INIT request we cannot parse gets the RFC's answer where one
                // exists (unsupported critical payload, higher major version); anything
                // else is unauthenticated and dropped.
                if let (State::AwaitInit(_), Ok(h)) =
                    (&self.state, HeaderPacket::new_checked(bytes))
                {
                    let is_init_request = h.exchange_type() == ExchangeType::IkeSaInit
                        && !h.flags().response()
                        && h.message_id() == 0;
                    let answer = e
                        .notify()
                        .filter(|n| n.notify_type != NotifyType::InvalidSyntax && is_init_request);
                    if let Some(n) = answer {
                        let header = Header {
                            spi_i: h.spi_i(),
                            spi_r: 0,
                            minor_version: 0,
                            exchange_type: ExchangeType::IkeSaInit,
                            flags: Flags::NONE,
                            message_id: 0,
                        };
                        self.ctx.local = local;
                        self.ctx.remote = remote;
                        self.ctx.refuse_init(&header, n);
                    }
                }
                return;
            }
        };
        let state = core::mem::replace(
            &mut self.state,
            State::Dead(Dead {
                spis: None,
                last_response: None,
            }),
        );
        let ctx = &mut self.ctx;
        self.state = match state {
            State::InitSent(st) => st.handle(ctx, now, (local, remote), bytes, &msg),
            State::AuthSent(st) => st.handle(ctx, now, bytes, &msg),
            State::AwaitInit(st) => st.handle(ctx, now, (local, remote), bytes, &msg),
            State::AwaitAuth(st) => st.handle(ctx, now, local, remote, bytes, &msg),
            State::Established(st) => st.handle(ctx, now, remote, bytes, &msg),
            State::Dead(st) => st.handle(ctx, remote, &msg),
        };
        self.release_if_dead();
    }

    /// A dead SA returns its virtual IP leases to the pools.
    fn release_if_dead(&mut self) {
        if matches!(self.state, State::Dead(_)) {
            self.ctx.release_leases();
        }
    }

    /// Runs the timers due at `now`: retransmissions, give-up, half-open expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
        self.release_if_dead();
    }

    fn run_timers(&mut self, now: Instant) {
        let ctx = &mut self.ctx;
        if ctx.half_open_deadline.is_some_and(|d| now >= d) {
            let spis = self.spis();
            self.state = self.ctx.fail(FailReason::Timeout, spis, None);
            return;
        }
        if let Some(rt) = ctx.retransmit.as_mut() {
            if now >= rt.next_at {
                let give_up = rt.first_sent + ctx.cfg.retransmit.give_up;
                if now >= give_up {
                    let spis = self.spis();
                    self.state = self.ctx.fail(FailReason::Timeout, spis, None);
                    return;
                }
                rt.interval = rt.interval.saturating_mul(2);
                rt.next_at = (now + rt.interval).min(give_up);
                let bytes = rt.bytes.clone();
                ctx.stats.retransmitted += 1;
                ctx.send(bytes);
            }
        }
        if let State::Established(st) = &mut self.state {
            if !st.on_timers(&mut self.ctx, now) {
                let spis = self.spis();
                self.ctx.children.clear();
                self.state = self.ctx.fail(FailReason::Expired, spis, None);
            }
        }
    }

    /// Reports the traffic of child SA `spi_in` (our inbound SPI of the pair) so far:
    /// `bytes` and `packets` are cumulative counts for the pair, each the larger of the
    /// inbound and the outbound count. Each direction is an SA of its own, and swanctl's
    /// `rekey_bytes`/`life_bytes` (and the kernel that enforces them for strongSwan) apply
    /// to each SA, so the pair reaches a limit when either direction does; the sum would
    /// rekey twice as early as a peer with the same settings expects.
    ///
    /// At the soft limit (`child_rekey_bytes` / `child_rekey_packets`, jitter applied) the
    /// child is rekeyed once, as by its time lifetime; at the hard limit it is deleted
    /// (a Delete is sent, `ChildSaDeleted` is reported). Unknown SPIs, children already
    /// being replaced, and SAs not established are ignored.
    pub fn child_usage(&mut self, now: Instant, spi_in: u32, bytes: u64, packets: u64) {
        if let State::Established(st) = &mut self.state {
            st.child_usage(&mut self.ctx, now, spi_in, (bytes, packets));
        }
    }

    /// The engine reports that the outbound SA `spi_out` of one of this IKE SA's child SAs
    /// crossed its soft sequence-number limit (`exhausted` false), or ran out of sequence
    /// numbers and refuses to send (`exhausted` true).
    ///
    /// At the soft limit the child is rekeyed, as by its lifetime. Once exhausted, unless a
    /// rekey is replacing it already, it is deleted (Delete sent, `ChildSaDeleted`
    /// reported) and, when we are the original initiator, a new child of the same
    /// configuration is created with CREATE_CHILD_SA, as strongSwan does after a hard
    /// expire (a responder leaves that to its peer and the log). `None`: `spi_out` is not
    /// one of ours, or the SA is not established.
    pub fn child_seq_limit(
        &mut self,
        now: Instant,
        spi_out: u32,
        exhausted: bool,
    ) -> Option<SeqLimitAction> {
        match &mut self.state {
            State::Established(st) => st.child_seq_limit(&mut self.ctx, now, spi_out, exhausted),
            _ => None,
        }
    }

    /// Records inbound ESP activity on this IKE SA's child SAs at `now`: it postpones the
    /// next liveness check.
    pub fn note_activity(&mut self, now: Instant) {
        if let State::Established(st) = &mut self.state {
            st.note_activity(now);
        }
    }

    /// Rekeys the child SAs now (CREATE_CHILD_SA with REKEY_SA). Returns whether the SA is
    /// established (otherwise nothing happens).
    pub fn rekey_children(&mut self, now: Instant) -> bool {
        let State::Established(st) = &mut self.state else {
            return false;
        };
        let spis: Vec<u32> = self
            .ctx
            .children
            .iter()
            .filter(|c| !c.rekeyed && c.peer_rekey.is_none())
            .map(|c| c.spi_in)
            .collect();
        for s in spis {
            st.want(Action::RekeyChild(s, None));
        }
        st.kick(&mut self.ctx, now);
        true
    }

    /// Rekeys the IKE SA now. Returns whether the SA is established.
    pub fn rekey_ike(&mut self, now: Instant) -> bool {
        let State::Established(st) = &mut self.state else {
            return false;
        };
        st.want(Action::RekeyIke(None));
        st.kick(&mut self.ctx, now);
        true
    }

    /// When the IKE SA is next rekeyed by its lifetime, if it is established and has one.
    pub fn next_rekey(&self) -> Option<Instant> {
        match &self.state {
            State::Established(st) => st.rekey_at,
            _ => None,
        }
    }

    /// Whether a rekey (IKE or child) is outstanding.
    pub fn is_rekeying(&self) -> bool {
        matches!(&self.state, State::Established(st) if st.rekeying())
    }

    /// The installed child SAs' (inbound, outbound) SPIs, including old ones replaced by a
    /// rekey whose Delete has not completed yet.
    pub fn child_spis(&self) -> Vec<(u32, u32)> {
        self.ctx
            .children
            .iter()
            .map(|c| (c.spi_in, c.spi_out))
            .collect()
    }

    /// Tests only: each child rekey exchange's lowest nonce and the new inbound SPI.
    #[cfg(test)]
    pub(crate) fn rekey_log(&self) -> &[(Vec<u8>, u32)] {
        &self.ctx.rekey_log
    }

    /// Tests only: a responder adds `attrs` to the CFG_REPLY it sends.
    #[cfg(test)]
    pub(crate) fn push_test_cp_attributes(&mut self, attrs: Vec<CfgAttribute>) {
        self.ctx.test_cp_extra = attrs;
    }

    /// Tests only: seals `payloads` as our next request on the current IKE SA (no
    /// retransmission, no pending state), to feed the peer crafted requests.
    #[cfg(test)]
    pub(crate) fn seal_test_request(
        &mut self,
        exchange: ExchangeType,
        payloads: &[Payload],
    ) -> Option<Vec<u8>> {
        let State::Established(st) = &mut self.state else {
            return None;
        };
        let id = st.ch.own_next;
        st.ch.own_next = id.wrapping_add(1);
        st.ch.core.seal(exchange, false, id, payloads).ok()
    }

    /// Tests only: opens a message sealed by the peer on the current IKE SA.
    #[cfg(test)]
    pub(crate) fn open_test_message(&self, bytes: &[u8]) -> Option<Vec<Payload>> {
        let State::Established(st) = &self.state else {
            return None;
        };
        let msg = Message::parse(bytes).ok()?;
        st.ch.core.rx.open(bytes, &msg).ok()
    }

    /// Fuzzing only: the message ID of our next request on the current IKE SA, used up if
    /// `take`. `None` unless established.
    #[cfg(fuzzing)]
    pub fn fuzz_next_id(&mut self, take: bool) -> Option<u32> {
        let State::Established(st) = &mut self.state else {
            return None;
        };
        let id = st.ch.own_next;
        if take {
            st.ch.own_next = id.wrapping_add(1);
        }
        Some(id)
    }

    /// Fuzzing only: seals `plain` (the encoding of an inner payload chain starting with a
    /// `first` payload) on the current IKE SA as this side would send it, so that a fuzz
    /// target can feed the peer mutated inner payloads that pass the ICV: a request or a
    /// response with `message_id`, `flags_xor` applied to the header flags, as one SK
    /// message or with `fragment = Some((number, total))` one SKF fragment. `None` unless
    /// established.
    #[cfg(fuzzing)]
    #[allow(clippy::too_many_arguments)]
    pub fn fuzz_seal(
        &mut self,
        exchange: ExchangeType,
        response: bool,
        message_id: u32,
        flags_xor: u8,
        first: crate::wire::PayloadType,
        plain: &[u8],
        fragment: Option<(u16, u16)>,
    ) -> Option<Vec<u8>> {
        let State::Established(st) = &mut self.state else {
            return None;
        };
        let mut header = st.ch.core.header(exchange, response, message_id);
        header.flags = Flags(header.flags.0 ^ flags_xor);
        st.ch.core.tx.seal_raw(header, first, plain, fragment).ok()
    }

    /// Fuzzing only (seed generation): the inner payloads of an SK message the peer sealed
    /// on the current IKE SA.
    #[cfg(fuzzing)]
    pub fn fuzz_open(&self, bytes: &[u8]) -> Option<Vec<Payload>> {
        let State::Established(st) = &self.state else {
            return None;
        };
        let msg = Message::parse(bytes).ok()?;
        st.ch.core.rx.open(bytes, &msg).ok()
    }

    /// Whether a message with these IKE SPIs belongs to this SA: its current SPIs, those
    /// of an old IKE SA being deleted after a rekey, or (with `spi_r` zero) an initiator
    /// SPI of a negotiation.
    pub fn owns(&self, spi_i: u64, spi_r: u64) -> bool {
        match &self.state {
            State::Established(st) => st.owns((spi_i, spi_r)),
            _ => match self.spis() {
                Some(s) => s == (spi_i, spi_r) || (spi_r == 0 && s.0 == spi_i),
                None => self.spi_i() == Some(spi_i),
            },
        }
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.ctx.transmits.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.ctx.events.pop_front()
    }

    /// When [`IkeSa::handle_timeout`] must next be called, if at all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let rt = self.ctx.retransmit.as_ref().map(|r| r.next_at);
        let timers = match &self.state {
            State::Established(st) => st.next_timer(&self.ctx),
            _ => None,
        };
        [rt, self.ctx.half_open_deadline, timers]
            .into_iter()
            .flatten()
            .min()
    }

    /// Whether we started this IKE SA (the original initiator).
    pub fn is_initiator(&self) -> bool {
        self.ctx.original_initiator
    }

    /// The initiator's SPI, once known (always for an initiator; for a responder once the
    /// IKE_SA_INIT request has been accepted).
    pub fn spi_i(&self) -> Option<u64> {
        match &self.state {
            State::InitSent(s) => Some(s.spi_i),
            _ => self.spis().map(|(i, _)| i),
        }
    }

    /// Deletes the IKE SA and its child SAs: an established SA sends an INFORMATIONAL
    /// request with a Delete payload (fire and forget: the peer deletes on receipt and an
    /// answer changes nothing here); an SA still negotiating is abandoned. Either way the
    /// SA is dead afterwards and no event is raised. Returns whether a Delete was sent.
    pub fn delete(&mut self, _now: Instant) -> bool {
        let spis = self.spis();
        let state = core::mem::replace(
            &mut self.state,
            State::Dead(Dead {
                spis,
                last_response: None,
            }),
        );
        self.ctx.retransmit = None;
        self.ctx.half_open_deadline = None;
        self.ctx.children.clear();
        self.ctx.release_leases();
        let State::Established(mut st) = state else {
            return false;
        };
        let id = st.ch.own_next;
        let payloads = [Payload::Delete(DeletePayload::ike())];
        match st
            .ch
            .core
            .seal(ExchangeType::Informational, false, id, &payloads)
        {
            Ok(bytes) => {
                self.ctx.send(bytes);
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the IKE SA is established.
    pub fn is_established(&self) -> bool {
        matches!(self.state, State::Established(_))
    }

    /// Whether the IKE SA has failed or been closed.
    pub fn is_dead(&self) -> bool {
        matches!(self.state, State::Dead(_))
    }

    /// A short name of the current state, for status output.
    pub fn state_name(&self) -> &'static str {
        self.state.name()
    }

    /// The SPIs (initiator's, responder's), once both are known.
    pub fn spis(&self) -> Option<(u64, u64)> {
        match &self.state {
            State::AuthSent(s) => Some((s.core.spi_i, s.core.spi_r)),
            State::AwaitAuth(s) => Some((s.core.spi_i, s.core.spi_r)),
            State::Established(s) => Some((s.ch.core.spi_i, s.ch.core.spi_r)),
            State::Dead(d) => d.spis,
            State::InitSent(_) | State::AwaitInit(_) => None,
        }
    }

    /// The drop and retransmission counters.
    pub fn stats(&self) -> Stats {
        self.ctx.stats
    }

    /// Our current local and remote addresses (after any float to the NAT-T port).
    pub fn addresses(&self) -> (SocketAddr, SocketAddr) {
        (self.ctx.local, self.ctx.remote)
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.release_leases();
    }
}

impl Ctx {
    fn new(cfg: IkeConfig, local: SocketAddr, remote: SocketAddr) -> Ctx {
        Ctx {
            cfg,
            rng: SystemRandom::new(),
            local,
            remote,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            retransmit: None,
            half_open_deadline: None,
            stats: Stats::default(),
            children: Vec::new(),
            original_initiator: false,
            leases: Vec::new(),
            #[cfg(test)]
            rekey_log: Vec::new(),
            #[cfg(test)]
            test_cp_extra: Vec::new(),
        }
    }
}

impl InitSent {
    /// Builds and sends (or re-sends after INVALID_KE_PAYLOAD / COOKIE) the request.
    fn send(&mut self, ctx: &mut Ctx, now: Instant) {
        let mut payloads = Vec::new();
        if let Some(c) = &self.cookie {
            payloads.push(Payload::Notify(NotifyPayload::new(
                NotifyType::Cookie,
                c.clone(),
            )));
        }
        payloads.push(Payload::Sa(ike_sa_payload(&ctx.cfg.proposals)));
        payloads.push(Payload::Ke(KePayload {
            group: self.ke.group(),
            data: self.ke.public_value().to_vec(),
        }));
        payloads.push(Payload::Nonce(self.ni.clone()));
        payloads.extend(our_nat_notifies(ctx, self.spi_i, 0, ctx.local, ctx.remote));
        payloads.extend(init_extension_notifies(&ctx.cfg));
        let msg = Message {
            header: Header {
                spi_i: self.spi_i,
                spi_r: 0,
                minor_version: 0,
                exchange_type: ExchangeType::IkeSaInit,
                flags: Flags::INITIATOR,
                message_id: 0,
            },
            payloads,
        };
        self.request = msg.to_bytes();
        ctx.send_request(now, self.request.clone());
    }

    fn handle(
        mut self: Box<Self>,
        ctx: &mut Ctx,
        now: Instant,
        (local, remote): (SocketAddr, SocketAddr),
        bytes: &[u8],
        msg: &Message,
    ) -> State {
        let h = &msg.header;
        let fits = h.exchange_type == ExchangeType::IkeSaInit
            && h.flags.response()
            && !h.flags.initiator()
            && h.message_id == 0
            && h.spi_i == self.spi_i;
        if !fits {
            ctx.stats.unexpected += 1;
            return State::InitSent(self);
        }
        if let Some(n) = msg.notify(NotifyType::InvalidKePayload) {
            let group = <[u8; 2]>::try_from(n.data.as_slice())
                .map(|b| DhGroup::from(u16::from_be_bytes(b)))
                .ok();
            let offered = group.is_some_and(|g| {
                ctx.cfg.proposals.iter().any(|p| p.groups.contains(&g)) && g != self.ke.group()
            });
            return match (group, offered && !self.ke_retried) {
                (Some(g), true) => match KeyExchange::generate(g, &ctx.rng) {
                    Ok(ke) => {
                        self.ke = ke;
                        self.ke_retried = true;
                        self.send(ctx, now);
                        State::InitSent(self)
                    }
                    Err(e) => ctx.fail(FailReason::Crypto(e), None, None),
                },
                _ => ctx.fail(FailReason::InvalidKe, None, None),
            };
        }
        if let Some(n) = msg.notify(NotifyType::Cookie) {
            if self.cookie_retries >= MAX_COOKIE_RETRIES || n.data.is_empty() || n.data.len() > 64 {
                return ctx.fail(FailReason::PeerNotify(NotifyType::Cookie), None, None);
            }
            self.cookie = Some(n.data.clone());
            self.cookie_retries += 1;
            self.send(ctx, now);
            return State::InitSent(self);
        }
        if let Some(t) = first_error_notify(&msg.payloads) {
            return ctx.fail(FailReason::PeerNotify(t), None, None);
        }
        let (mut sa, mut ke, mut nr) = (None, None, None);
        for p in &msg.payloads {
            match p {
                Payload::Sa(s) => sa = sa.or(Some(s)),
                Payload::Ke(k) => ke = ke.or(Some(k)),
                Payload::Nonce(n) => nr = nr.or(Some(n)),
                _ => {}
            }
        }
        let (Some(sa), Some(ke), Some(nr)) = (sa, ke, nr) else {
            ctx.stats.malformed += 1;
            return State::InitSent(self);
        };
        if h.spi_r == 0 || !NONCE_RANGE.contains(&nr.len()) {
            ctx.stats.malformed += 1;
            return State::InitSent(self);
        }
        let Some(choice) = check_ike_response(sa, &ctx.cfg.proposals) else {
            return ctx.fail(FailReason::NoProposalChosen, None, None);
        };
        if choice.group != self.ke.group() || ke.group != choice.group {
            return ctx.fail(FailReason::InvalidKe, None, None);
        }
        let response = bytes.to_vec();
        let st = *self;
        let gir = match st.ke.agree(&ke.data) {
            Ok(g) => g,
            Err(e) => return ctx.fail(FailReason::Crypto(e), None, None),
        };
        let core = Core::new(
            true,
            (st.spi_i, h.spi_r),
            st.ni,
            nr.clone(),
            &gir,
            (choice.cipher, choice.prf, choice.group),
            (st.request, response),
        );
        let mut core = match core {
            Ok(c) => c,
            Err(e) => return ctx.fail(FailReason::Crypto(e), None, None),
        };
        core.nat = detect_nat(msg, local, remote);
        core.negotiate_extensions(&ctx.cfg, msg, remote);
        // Forced encapsulation: we pretend to be behind a NAT, as the peer now believes.
        core.nat.local_behind_nat |= ctx.cfg.force_encap;
        ctx.retransmit = None;
        if let (true, Some(port)) = (core.nat.any(), ctx.cfg.nat_t_port) {
            if ctx.remote.port() != port {
                ctx.local.set_port(port);
                ctx.remote.set_port(port);
            }
        }
        AuthSent::start(ctx, now, core)
    }
}

impl AuthSent {
    fn start(ctx: &mut Ctx, now: Instant, mut core: Core) -> State {
        let spi_in = match ctx.esp_spi() {
            Ok(s) => s,
            Err(r) => return ctx.fail(r, Some((core.spi_i, core.spi_r)), None),
        };
        let cfg = &ctx.cfg;
        let mut inner = vec![Payload::IdI(cfg.local_id.clone())];
        if let Some(r) = &cfg.remote_id {
            inner.push(Payload::IdR(r.clone()));
        }
        inner.push(Payload::Auth(core.our_auth(&cfg.psk, &cfg.local_id)));
        inner.extend(cp_request(cfg.request_vip, cfg.request_vip6));
        let transport = cfg.child.mode == Mode::Transport;
        if transport {
            inner.push(notify(NotifyType::UseTransportMode));
        }
        inner.push(Payload::Sa(esp_sa_payload(&cfg.child.proposals, spi_in)));
        inner.push(Payload::TsI(TsPayload {
            selectors: cfg.child.local_ts.clone(),
        }));
        inner.push(Payload::TsR(TsPayload {
            selectors: cfg.child.remote_ts.clone(),
        }));
        if cfg.mobike {
            inner.push(notify(NotifyType::MobikeSupported));
        }
        match core.seal(ExchangeType::IkeAuth, false, 1, &inner) {
            Ok(bytes) => ctx.send_request(now, bytes),
            Err(e) => return ctx.fail(FailReason::Crypto(e), Some((core.spi_i, core.spi_r)), None),
        }
        State::AuthSent(Box::new(AuthSent {
            core,
            spi_in,
            transport,
        }))
    }

    fn handle(
        mut self: Box<Self>,
        ctx: &mut Ctx,
        now: Instant,
        bytes: &[u8],
        msg: &Message,
    ) -> State {
        let h = &msg.header;
        let spis = Some((self.core.spi_i, self.core.spi_r));
        let fits = h.spi_i == self.core.spi_i
            && h.spi_r == self.core.spi_r
            && h.exchange_type == ExchangeType::IkeAuth
            && h.flags.response()
            && !h.flags.initiator()
            && h.message_id == 1;
        if !fits {
            ctx.stats.unexpected += 1;
            return State::AuthSent(self);
        }
        let inner = match self.core.open(bytes, msg, &mut ctx.stats) {
            Ok(Some(p)) => p,
            Ok(None) => return State::AuthSent(self),
            Err(CryptoError::Inner(_)) => {
                ctx.stats.malformed += 1;
                return ctx.fail(FailReason::InvalidSyntax, spis, None);
            }
            Err(_) => {
                ctx.stats.integrity += 1;
                return State::AuthSent(self);
            }
        };
        let (mut idr, mut auth) = (None, None);
        for p in &inner {
            match p {
                Payload::IdR(i) => idr = idr.or(Some(i)),
                Payload::Auth(a) => auth = auth.or(Some(a)),
                _ => {}
            }
        }
        let (Some(idr), Some(auth)) = (idr, auth) else {
            let reason = first_error_notify(&inner)
                .map_or(FailReason::InvalidSyntax, FailReason::PeerNotify);
            return ctx.fail(reason, spis, None);
        };
        let st = *self;
        let mut core = st.core;
        let proof = match verify_peer(&core, &ctx.cfg, idr, auth) {
            Ok(p) => p,
            Err(reason) => {
                // Tell the responder, which already believes the SA is up (RFC 7296
                // section 2.21.2), in a fire-and-forget INFORMATIONAL.
                let n = [notify(NotifyType::AuthenticationFailed)];
                if let Ok(b) = core.seal(ExchangeType::Informational, false, 2, &n) {
                    ctx.send(b);
                }
                return ctx.fail(reason, spis, None);
            }
        };
        ctx.retransmit = None;
        let peer_mobike = has_notify(&inner, NotifyType::MobikeSupported);
        let mut info = core.info(ctx.local, ctx.remote, idr.clone(), peer_mobike);
        let cp = inner.iter().find_map(|p| match p {
            Payload::Cp(c) if c.cfg_type == CfgType::Reply => Some(c),
            _ => None,
        });
        let (v4, v6) = (ctx.cfg.request_vip, ctx.cfg.request_vip6);
        (info.vips, info.dns) = cp.map(|c| cp_reply_values(c, v4, v6)).unwrap_or_default();
        let vips_missing = (v4 || v6) && info.vips.is_empty();
        ctx.events.push_back(Event::IkeSaEstablished(info.clone()));
        let established = |ctx: &mut Ctx, core| {
            let ch = Channel {
                core,
                peer_next: 0,
                last_response: None,
                own_next: 2,
            };
            Established::start(ctx, now, ch, info)
        };
        let name = ctx.cfg.child.name.clone();
        let child_error = first_error_notify(&inner);
        let (mut sa, mut tsi, mut tsr) = (None, None, None);
        for p in &inner {
            match p {
                Payload::Sa(s) => sa = sa.or(Some(s)),
                Payload::TsI(t) => tsi = tsi.or(Some(t)),
                Payload::TsR(t) => tsr = tsr.or(Some(t)),
                _ => {}
            }
        }
        let (Some(sa), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            let reason = child_error.unwrap_or(NotifyType::NoProposalChosen);
            ctx.events.push_back(Event::ChildSaFailed { name, reason });
            return established(ctx, core);
        };
        let child = &ctx.cfg.child;
        let Some((spi_out, choice)) = check_esp_response(sa, &child.proposals) else {
            ctx.events.push_back(Event::ChildSaFailed {
                name,
                reason: NotifyType::NoProposalChosen,
            });
            return established(ctx, core);
        };
        let ts_ok = !tsi.selectors.is_empty()
            && !tsr.selectors.is_empty()
            && tsi.selectors.iter().all(|t| is_subset(t, &child.local_ts))
            && tsr.selectors.iter().all(|t| is_subset(t, &child.remote_ts));
        if !ts_ok {
            ctx.events.push_back(Event::ChildSaFailed {
                name,
                reason: NotifyType::TsUnacceptable,
            });
            return established(ctx, core);
        }
        if vips_missing {
            let n = [Payload::Delete(DeletePayload::ike())];
            if let Ok(b) = core.seal(ExchangeType::Informational, false, 2, &n) {
                ctx.send(b);
            }
            return ctx.fail(FailReason::NoVirtualIp, spis, None);
        }
        let mode = if st.transport && has_notify(&inner, NotifyType::UseTransportMode) {
            Mode::Transport
        } else {
            Mode::Tunnel
        };
        let (keymat_in, keymat_out) = match core.child_keys(&proof, choice.cipher) {
            Ok(k) => k,
            Err(e) => return ctx.fail(FailReason::Crypto(e), spis, None),
        };
        let child = ChildSa {
            name,
            spi_in: st.spi_in,
            spi_out,
            keymat_in,
            keymat_out,
            cipher: choice.cipher,
            esn: choice.esn,
            mode,
            local_ts: tsi.selectors.clone(),
            remote_ts: tsr.selectors.clone(),
            udp_encap: core.nat.any(),
        };
        ctx.track_child(now, &child);
        ctx.events.push_back(Event::ChildSaEstablished(child));
        established(ctx, core)
    }
}

impl AwaitInit {
    fn handle(
        self,
        ctx: &mut Ctx,
        now: Instant,
        (local, remote): (SocketAddr, SocketAddr),
        bytes: &[u8],
        msg: &Message,
    ) -> State {
        let h = &msg.header;
        let fits = h.exchange_type == ExchangeType::IkeSaInit
            && !h.flags.response()
            && h.flags.initiator()
            && h.message_id == 0
            && h.spi_r == 0
            && h.spi_i != 0;
        if !fits {
            ctx.stats.unexpected += 1;
            return State::AwaitInit(self);
        }
        ctx.local = local;
        ctx.remote = remote;
        let (mut sa, mut ke, mut ni) = (None, None, None);
        for p in &msg.payloads {
            match p {
                Payload::Sa(s) => sa = sa.or(Some(s)),
                Payload::Ke(k) => ke = ke.or(Some(k)),
                Payload::Nonce(n) => ni = ni.or(Some(n)),
                _ => {}
            }
        }
        let (Some(sa), Some(ke), Some(ni)) = (sa, ke, ni) else {
            ctx.refuse_init(h, NotifyPayload::new(NotifyType::InvalidSyntax, Vec::new()));
            return State::AwaitInit(self);
        };
        if !NONCE_RANGE.contains(&ni.len()) {
            ctx.refuse_init(h, NotifyPayload::new(NotifyType::InvalidSyntax, Vec::new()));
            return State::AwaitInit(self);
        }
        let Some((number, choice)) = select_ike(sa, &ctx.cfg.proposals, ke.group) else {
            ctx.refuse_init(
                h,
                NotifyPayload::new(NotifyType::NoProposalChosen, Vec::new()),
            );
            return State::AwaitInit(self);
        };
        if choice.group != ke.group {
            let data = u16::from(choice.group).to_be_bytes().to_vec();
            ctx.refuse_init(h, NotifyPayload::new(NotifyType::InvalidKePayload, data));
            return State::AwaitInit(self);
        }
        match Self::accept(ctx, now, (msg, bytes), number, choice, &ke.data, ni) {
            Ok(st) => st,
            Err(reason) => {
                let t = reason.notify_type().unwrap_or(NotifyType::InvalidSyntax);
                ctx.refuse_init(h, NotifyPayload::new(t, Vec::new()));
                State::AwaitInit(self)
            }
        }
    }

    fn accept(
        ctx: &mut Ctx,
        now: Instant,
        (msg, bytes): (&Message, &[u8]),
        number: u8,
        choice: super::proposal::IkeChoice,
        peer_ke: &[u8],
        ni: &[u8],
    ) -> Result<State, FailReason> {
        let spi_i = msg.header.spi_i;
        let spi_r = ctx.ike_spi()?;
        let nr = ctx.nonce()?;
        let ke = KeyExchange::generate(choice.group, &ctx.rng).map_err(FailReason::Crypto)?;
        let mut payloads = vec![
            Payload::Sa(ike_response_payload(number, choice)),
            Payload::Ke(KePayload {
                group: choice.group,
                data: ke.public_value().to_vec(),
            }),
            Payload::Nonce(nr.clone()),
        ];
        payloads.extend(our_nat_notifies(ctx, spi_i, spi_r, ctx.local, ctx.remote));
        payloads.extend(init_extension_notifies(&ctx.cfg));
        let response = Message {
            header: Header {
                spi_i,
                spi_r,
                minor_version: 0,
                exchange_type: ExchangeType::IkeSaInit,
                flags: Flags::RESPONSE,
                message_id: 0,
            },
            payloads,
        }
        .to_bytes();
        let gir = ke.agree(peer_ke).map_err(|_| FailReason::InvalidSyntax)?;
        let mut core = Core::new(
            false,
            (spi_i, spi_r),
            ni.to_vec(),
            nr,
            &gir,
            (choice.cipher, choice.prf, choice.group),
            (bytes.to_vec(), response.clone()),
        )
        .map_err(FailReason::Crypto)?;
        core.nat = detect_nat(msg, ctx.local, ctx.remote);
        core.nat.local_behind_nat |= ctx.cfg.force_encap;
        core.negotiate_extensions(&ctx.cfg, msg, ctx.remote);
        // Half-open, the SA holds little: the request and response (the request no longer
        // than the daemon accepts, `ikectl::MAX_MESSAGE`) and at most a small IKE_AUTH
        // being reassembled; the full limits apply once the peer is authenticated.
        core.reasm = Reassembler::new(HALF_OPEN_LIMITS);
        ctx.send(response);
        ctx.half_open_deadline = Some(now + ctx.cfg.retransmit.give_up);
        Ok(State::AwaitAuth(Box::new(AwaitAuth { core })))
    }
}

/// The responder's outcome of the child SA part of IKE_AUTH.
struct ChildOutcome {
    payloads: Vec<Payload>,
    result: Result<ChildSa, NotifyType>,
    /// The virtual IPs leased and DNS servers sent (empty when the child failed).
    vips: Vec<IpAddr>,
    dns: Vec<IpAddr>,
}

impl AwaitAuth {
    fn handle(
        mut self: Box<Self>,
        ctx: &mut Ctx,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
        msg: &Message,
    ) -> State {
        let h = &msg.header;
        let core = &self.core;
        // A retransmitted IKE_SA_INIT request: answer from the cache.
        if h.exchange_type == ExchangeType::IkeSaInit
            && !h.flags.response()
            && h.spi_i == core.spi_i
            && h.spi_r == 0
            && h.message_id == 0
        {
            ctx.stats.answered_from_cache += 1;
            ctx.transmits.push_back(Transmit {
                local,
                remote,
                bytes: core.init_response.clone(),
            });
            return State::AwaitAuth(self);
        }
        let fits = h.spi_i == core.spi_i
            && h.spi_r == core.spi_r
            && h.exchange_type == ExchangeType::IkeAuth
            && !h.flags.response()
            && h.flags.initiator()
            && h.message_id == 1;
        if !fits {
            ctx.stats.unexpected += 1;
            return State::AwaitAuth(self);
        }
        let spis = Some((core.spi_i, core.spi_r));
        let inner = match self.core.open(bytes, msg, &mut ctx.stats) {
            Ok(Some(p)) => p,
            Ok(None) => return State::AwaitAuth(self),
            Err(CryptoError::Inner(e)) => {
                ctx.stats.malformed += 1;
                let mut core = self.core;
                let n = e
                    .notify()
                    .unwrap_or(NotifyPayload::new(NotifyType::InvalidSyntax, vec![]));
                let resp = core.seal(ExchangeType::IkeAuth, true, 1, &[Payload::Notify(n)]);
                if let Ok(b) = &resp {
                    ctx.send(b.clone());
                }
                return ctx.fail(FailReason::InvalidSyntax, spis, resp.ok().map(|b| (1, b)));
            }
            Err(_) => {
                ctx.stats.integrity += 1;
                return State::AwaitAuth(self);
            }
        };
        // Responses go back where the request came from (the initiator may have floated).
        ctx.local = local;
        ctx.remote = remote;
        let mut core = self.core;
        let (mut idi, mut auth) = (None, None);
        for p in &inner {
            match p {
                Payload::IdI(i) => idi = idi.or(Some(i)),
                Payload::Auth(a) => auth = auth.or(Some(a)),
                _ => {}
            }
        }
        let (Some(idi), Some(auth)) = (idi, auth) else {
            let n = [notify(NotifyType::InvalidSyntax)];
            let resp = core.seal(ExchangeType::IkeAuth, true, 1, &n).ok();
            if let Some(b) = &resp {
                ctx.send(b.clone());
            }
            return ctx.fail(FailReason::InvalidSyntax, spis, resp.map(|b| (1, b)));
        };
        let proof = match verify_peer(&core, &ctx.cfg, idi, auth) {
            Ok(p) => p,
            Err(reason) => {
                let n = [notify(NotifyType::AuthenticationFailed)];
                let resp = core.seal(ExchangeType::IkeAuth, true, 1, &n).ok();
                if let Some(b) = &resp {
                    ctx.send(b.clone());
                }
                return ctx.fail(reason, spis, resp.map(|b| (1, b)));
            }
        };
        let cfg = &ctx.cfg;
        let mut out = vec![
            Payload::IdR(cfg.local_id.clone()),
            Payload::Auth(core.our_auth(&cfg.psk, &cfg.local_id)),
        ];
        let child = Self::negotiate_child(ctx, &core, &proof, &inner);
        out.extend(child.payloads);
        if ctx.cfg.mobike {
            out.push(notify(NotifyType::MobikeSupported));
        }
        let resp = match core.seal(ExchangeType::IkeAuth, true, 1, &out) {
            Ok(b) => b,
            Err(e) => return ctx.fail(FailReason::Crypto(e), spis, None),
        };
        ctx.send(resp.clone());
        ctx.half_open_deadline = None;
        let peer_mobike = has_notify(&inner, NotifyType::MobikeSupported);
        let mut info = core.info(ctx.local, ctx.remote, idi.clone(), peer_mobike);
        info.vips = child.vips;
        info.dns = child.dns;
        ctx.events.push_back(Event::IkeSaEstablished(info.clone()));
        match child.result {
            Ok(c) => {
                ctx.track_child(now, &c);
                ctx.events.push_back(Event::ChildSaEstablished(c));
            }
            Err(reason) => ctx.events.push_back(Event::ChildSaFailed {
                name: ctx.cfg.child.name.clone(),
                reason,
            }),
        }
        core.reasm = Reassembler::default();
        let ch = Channel {
            core,
            peer_next: 2,
            last_response: Some((1, resp)),
            own_next: 0,
        };
        Established::start(ctx, now, ch, info)
    }

    fn negotiate_child(
        ctx: &mut Ctx,
        core: &Core,
        proof: &AuthVerified,
        inner: &[Payload],
    ) -> ChildOutcome {
        let fail = |t: NotifyType| ChildOutcome {
            payloads: vec![notify(t)],
            result: Err(t),
            vips: Vec::new(),
            dns: Vec::new(),
        };
        let (mut sa, mut tsi, mut tsr, mut cp) = (None, None, None, None);
        for p in inner {
            match p {
                Payload::Sa(s) => sa = sa.or(Some(s)),
                Payload::TsI(t) => tsi = tsi.or(Some(t)),
                Payload::TsR(t) => tsr = tsr.or(Some(t)),
                Payload::Cp(c) if c.cfg_type == CfgType::Request => cp = cp.or(Some(c)),
                _ => {}
            }
        }
        let (Some(sa), Some(tsi), Some(tsr)) = (sa, tsi, tsr) else {
            return fail(NotifyType::InvalidSyntax);
        };
        // Virtual IPs first: the peer's selectors are narrowed to them.
        let vips = match cp.map(|c| ctx.lease_vips(c)) {
            Some(Ok(v)) => v,
            Some(Err(t)) => return fail(t),
            None => Vec::new(),
        };
        let dns = if cp.is_some() {
            ctx.pool_dns()
        } else {
            Vec::new()
        };
        let picked = pick_child(&ctx.cfg, &vips, &tsi.selectors, &tsr.selectors, |c| {
            select_esp(sa, &c.proposals).ok_or(NotifyType::NoProposalChosen)
        });
        let (child, (number, spi_out, choice), ts_i, ts_r) = match picked {
            Ok(p) => p,
            Err(e) => {
                ctx.release_leases();
                return fail(e.unwrap_or(NotifyType::TsUnacceptable));
            }
        };
        let keys = ctx.esp_spi().and_then(|spi| {
            Ok((
                spi,
                core.child_keys(proof, choice.cipher)
                    .map_err(FailReason::Crypto)?,
            ))
        });
        let Ok((spi_in, (keymat_in, keymat_out))) = keys else {
            ctx.release_leases();
            return fail(NotifyType::TemporaryFailure);
        };
        let transport =
            child.mode == Mode::Transport && has_notify(inner, NotifyType::UseTransportMode);
        let mut payloads = Vec::new();
        if !vips.is_empty() || !dns.is_empty() {
            #[allow(unused_mut)]
            let mut cp = cp_reply(&vips, &dns);
            #[cfg(test)]
            if let Payload::Cp(c) = &mut cp {
                c.attributes.extend(ctx.test_cp_extra.iter().cloned());
            }
            payloads.push(cp);
        }
        if transport {
            payloads.push(notify(NotifyType::UseTransportMode));
        }
        payloads.push(Payload::Sa(esp_response_payload(number, spi_in, choice)));
        payloads.push(Payload::TsI(TsPayload {
            selectors: ts_i.clone(),
        }));
        payloads.push(Payload::TsR(TsPayload {
            selectors: ts_r.clone(),
        }));
        ChildOutcome {
            payloads,
            result: Ok(ChildSa {
                name: child.name.clone(),
                spi_in,
                spi_out,
                keymat_in,
                keymat_out,
                cipher: choice.cipher,
                esn: choice.esn,
                mode: if transport {
                    Mode::Transport
                } else {
                    Mode::Tunnel
                },
                local_ts: ts_r,
                remote_ts: ts_i,
                udp_encap: core.nat.any(),
            }),
            vips,
            dns,
        }
    }
}

/// Host selectors (/32, /128) of virtual IPs.
fn vip_selectors(vips: &[IpAddr]) -> Vec<TrafficSelector> {
    vips.iter()
        .map(|a| super::config::ts_prefix(*a, if a.is_ipv4() { 32 } else { 128 }))
        .collect()
}

/// A responder's choice among its child configurations for a request's selectors: the
/// first, in configuration order, whose selectors overlap the request's (the peer's side
/// also narrowed to its virtual IPs, if any) and whose proposals `select` accepts. Returns
/// the configuration, `select`'s result and the narrowed TSi and TSr. `Err(None)`: no
/// configuration's selectors fit (TS_UNACCEPTABLE); `Err(Some(e))`: some did, but `select`
/// refused them all, the first time with `e`.
#[allow(clippy::type_complexity)]
fn pick_child<T, E>(
    cfg: &IkeConfig,
    vips: &[IpAddr],
    tsi: &[TrafficSelector],
    tsr: &[TrafficSelector],
    mut select: impl FnMut(&ChildConfig) -> Result<T, E>,
) -> Result<(ChildConfig, T, Vec<TrafficSelector>, Vec<TrafficSelector>), Option<E>> {
    let mut refusal = None;
    for child in cfg.all_children() {
        let mut ts_i = narrow(tsi, &child.remote_ts);
        if !vips.is_empty() {
            ts_i = narrow(&ts_i, &vip_selectors(vips));
        }
        let ts_r = narrow(tsr, &child.local_ts);
        if ts_i.is_empty() || ts_r.is_empty() {
            continue;
        }
        match select(child) {
            Ok(t) => return Ok((child.clone(), t, ts_i, ts_r)),
            Err(e) => {
                refusal.get_or_insert(e);
            }
        }
    }
    Err(refusal)
}

/// Our CFG_REQUEST: an address and DNS servers of each family asked for.
fn cp_request(v4: bool, v6: bool) -> Option<Payload> {
    let mut attributes = Vec::new();
    if v4 {
        attributes.push(CfgAttribute::request(CfgAttributeType::InternalIp4Address));
        attributes.push(CfgAttribute::request(CfgAttributeType::InternalIp4Dns));
    }
    if v6 {
        attributes.push(CfgAttribute::request(CfgAttributeType::InternalIp6Address));
        attributes.push(CfgAttribute::request(CfgAttributeType::InternalIp6Dns));
    }
    (!attributes.is_empty()).then_some(Payload::Cp(CpPayload {
        cfg_type: CfgType::Request,
        attributes,
    }))
}

/// Our CFG_REPLY with virtual IPs and DNS servers. An IPv6 address goes with prefix
/// length 128 (RFC 7296 section 3.15.1: 17 octets).
fn cp_reply(vips: &[IpAddr], dns: &[IpAddr]) -> Payload {
    let mut attributes = Vec::new();
    for a in vips {
        attributes.push(match a {
            IpAddr::V4(v) => CfgAttribute::ipv4(CfgAttributeType::InternalIp4Address, *v),
            IpAddr::V6(v) => {
                CfgAttribute::ipv6_prefix(CfgAttributeType::InternalIp6Address, *v, 128)
            }
        });
    }
    for a in dns {
        attributes.push(match a {
            IpAddr::V4(v) => CfgAttribute::ipv4(CfgAttributeType::InternalIp4Dns, *v),
            IpAddr::V6(v) => CfgAttribute::ipv6(CfgAttributeType::InternalIp6Dns, *v),
        });
    }
    Payload::Cp(CpPayload {
        cfg_type: CfgType::Reply,
        attributes,
    })
}

/// The most CFG_REPLY attributes an initiator looks at: the rest are ignored.
pub const MAX_CP_ATTRIBUTES: usize = 32;
/// The most virtual IPs of each family an initiator takes from a CFG_REPLY (we ask for
/// one; each one taken becomes an address on the TUN).
pub const MAX_VIPS_PER_FAMILY: usize = 1;
/// The most DNS servers an initiator takes from a CFG_REPLY.
pub const MAX_DNS: usize = 8;

/// The virtual IPs and DNS servers of a CFG_REPLY, of the families we asked for: at most
/// [`MAX_VIPS_PER_FAMILY`] addresses of each family and [`MAX_DNS`] servers, from the first
/// [`MAX_CP_ATTRIBUTES`] attributes, so that a peer cannot make us install an unbounded
/// number of addresses. Malformed values and unspecified addresses are skipped.
fn cp_reply_values(cp: &CpPayload, v4: bool, v6: bool) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let (mut vips, mut dns) = (Vec::<IpAddr>::new(), Vec::<IpAddr>::new());
    for a in cp.attributes.iter().take(MAX_CP_ATTRIBUTES) {
        let (is_vip, addr) = match a.attr_type {
            CfgAttributeType::InternalIp4Address if v4 => (true, a.as_ipv4().map(IpAddr::V4)),
            CfgAttributeType::InternalIp6Address if v6 => {
                (true, a.as_ipv6_prefix().map(|(x, _)| IpAddr::V6(x)))
            }
            CfgAttributeType::InternalIp4Dns if v4 => (false, a.as_ipv4().map(IpAddr::V4)),
            CfgAttributeType::InternalIp6Dns if v6 => (false, a.as_ipv6().map(IpAddr::V6)),
            _ => continue,
        };
        let Some(x) = addr.filter(|x| !x.is_unspecified()) else {
            continue;
        };
        if is_vip {
            let same_family = vips.iter().filter(|v| v.is_ipv4() == x.is_ipv4()).count();
            if same_family < MAX_VIPS_PER_FAMILY && !vips.contains(&x) {
                vips.push(x);
            }
        } else if dns.len() < MAX_DNS && !dns.contains(&x) {
            dns.push(x);
        }
    }
    (vips, dns)
}

impl Dead {
    fn handle(self, ctx: &mut Ctx, remote: SocketAddr, msg: &Message) -> State {
        let h = &msg.header;
        let cached = match (&self.spis, &self.last_response) {
            (Some((i, r)), Some((id, b)))
                if h.spi_i == *i
                    && h.spi_r == *r
                    && h.message_id == *id
                    && !h.flags.response()
                    && !is_later_fragment(msg) =>
            {
                Some(b.clone())
            }
            _ => None,
        };
        match cached {
            Some(bytes) => {
                ctx.stats.answered_from_cache += 1;
                ctx.send_to(ctx.local, remote, bytes);
            }
            None => ctx.stats.unexpected += 1,
        }
        State::Dead(self)
    }
}
