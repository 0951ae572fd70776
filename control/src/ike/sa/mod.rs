//! One IKE SA as a sans-IO state machine: the initial exchanges IKE_SA_INIT and IKE_AUTH
//! (PSK) with the first child SA, in either role, and afterwards (module `established`)
//! child and IKE SA rekeys, Deletes, liveness checks and lifetimes.
//!
//! * this file: the [`IkeSa`] API, the events and values it hands out, the state enum;
//! * `core.rs`: an IKE SA's keys (seal, open, AUTH, KEYMAT) and NAT detection;
//! * `ctx.rs`: what the states share (configuration, queues, timers, paths, children,
//!   leases);
//! * `timer.rs`: every deadline in one table keyed by `Timer`;
//! * `paths.rs`: the IKE SA's (local, remote) paths with their NAT state;
//! * `roam.rs`: MOBIKE as initiator: our addresses, path checks, the probe's candidates;
//! * `channel.rs`: one IKE SA's message windows, outstanding request and queue;
//! * `child.rs`: a child SA as the IKE SA tracks it;
//! * `handshake/`: IKE_SA_INIT and IKE_AUTH, `initiator.rs` and `responder.rs`;
//! * `established.rs`: after IKE_AUTH, the queue, dispatch and collision rules;
//! * `exchange/`: the exchanges after IKE_AUTH, one type (and file) each.
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

use crate::ike::auth::{AuthError, PeerAuthInfo};
use ::core::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use mifsec_dataplane::aead::Cipher;

use super::config::{ChildConfig, IkeConfig, Mode};
use super::crypto::{CryptoError, KeyExchange, Prf, Secret};
use super::proposal::narrow;
#[cfg(test)]
use crate::wire::CfgAttribute;
use crate::wire::{
    AuthPayload, DhGroup, ExchangeType, Flags, Header, HeaderPacket, IdPayload, KePayload, Message,
    NotifyPayload, NotifyType, Payload, SaPayload, TrafficSelector, TsPayload,
};

mod channel;
mod child;
mod core;
mod ctx;
mod established;
pub(crate) mod exchange;
mod handshake;
pub(crate) mod mif;
mod paths;
mod roam;
mod timer;

#[cfg(test)]
pub(in crate::ike) use self::core::OPENED;
pub use self::core::nat_detection_hash;
pub use ctx::MAX_CLONE_FAMILY;
pub use established::{MAX_CHILDREN, MAX_TRACKED_CHILDREN};
pub use handshake::{MAX_CP_ATTRIBUTES, MAX_DNS, MAX_VIPS_PER_FAMILY};
pub use mif::{LocalInterface, paths as mif_paths};
pub use paths::{ESP_IN_UDP_PORT, MAX_PEER_ADDRESSES, MAX_VERIFIED, Path};

/// The most local addresses [`IkeSa::set_local_addresses`] keeps.
pub const MAX_LOCAL_ADDRESSES: usize = 32;

use self::core::Core;
use ctx::Ctx;
use established::Established;
use exchange::{ChildRekey, Delete, IkeRekey};
use handshake::{AuthSent, AwaitAuth, AwaitEap, AwaitInit, InitSent};
use timer::Timer;

/// Length of the nonces we send.
const NONCE_LEN: usize = 32;
/// Smallest and largest nonce accepted (RFC 7296 section 3.9).
const NONCE_RANGE: ::core::ops::RangeInclusive<usize> = 16..=256;
/// The hash algorithms we announce in SIGNATURE_HASH_ALGORITHMS (RFC 7427 section 4, IANA
/// "IKEv2 Hash Algorithms"): SHA2-256, SHA2-384, SHA2-512, Identity (RFC 8420, Ed25519).
pub const SIGNATURE_HASHES: [u16; 4] = [2, 3, 4, 5];

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
    /// How we authenticated (`psk`, `pubkey`, `eap-mschapv2`).
    pub local_auth: &'static str,
    /// The EAP identity we authenticated with (printable), for EAP.
    pub local_eap_id: Option<String>,
    /// How the peer authenticated: method, key, certificate subject and CA.
    pub remote_auth: Box<PeerAuthInfo>,
    /// Whether the peer advertised MOBIKE_SUPPORTED.
    pub peer_mobike: bool,
    /// Whether the peer advertised CLONE_IKE_SA_SUPPORTED (RFC 7791) in IKE_AUTH.
    pub peer_clone: bool,
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
    /// The (local, remote) socket address pairs to install the child on: the IKE SA's
    /// paths with the ESP-in-UDP port ([`ESP_IN_UDP_PORT`]). Today one, the IKE SA's
    /// current pair.
    pub paths: Vec<(SocketAddr, SocketAddr)>,
    /// With the multi-interface extension in use (docs/PROTOCOL.md 4.2): the child's
    /// paths over both sides' announced interfaces, its policy and reorder; `None`: no
    /// MIF (a standard peer, MIF off, no pair of interfaces), install on [`Self::paths`].
    pub mif: Option<MifChildPaths>,
}

/// What [`IkeSa::mif_info`] tells of the multi-interface extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MifInfo {
    /// Both sides sent MIF_SUPPORTED.
    pub in_use: bool,
    /// Our interfaces as announced.
    pub ours: Vec<crate::wire::MifInterface>,
    /// The peer's, from its last list we took.
    pub peer: Vec<crate::wire::MifInterface>,
    /// The generation of our list.
    pub our_generation: u32,
    /// The generation of the peer's.
    pub peer_generation: u32,
}

/// One path of a child SA over a pair of announced interfaces (PROTOCOL 4.2).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MifPath {
    /// `i<initiator's ID>r<responder's ID>`, the same on both sides (for example `i1r2`).
    pub name: String,
    /// Our address and port on it (our interface's announcement).
    pub local: SocketAddr,
    /// The peer's (its announcement).
    pub remote: SocketAddr,
    /// Active (both interfaces active) or standby.
    pub role: mifsec_dataplane::sa_table::Role,
    /// Our interface's ID.
    pub local_if: u16,
    /// The peer's interface's ID.
    pub remote_if: u16,
    /// Our interface's name (`[interfaces.NAME]`).
    pub local_name: String,
}

/// A child SA's MIF paths, in PROTOCOL 4.2's order, with how we use them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MifChildPaths {
    /// How we schedule outbound packets (our child configuration's `policy`).
    pub policy: mifsec_dataplane::sa_table::Policy,
    /// Hold inbound packets in a reorder buffer: the peer aggregates.
    pub reorder: bool,
    /// The paths, at most the negotiated Max Paths per Child.
    pub paths: Vec<MifPath>,
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
            .field("paths", &self.paths)
            .field("mif", &self.mif)
            .finish_non_exhaustive()
    }
}

/// Why an IKE SA failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// A request went unanswered for the give-up time, or a half-open SA expired.
    Timeout,
    /// The peer's AUTH or identity did not verify, and why.
    AuthenticationFailed(AuthError),
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
            FailReason::AuthenticationFailed(_) => Some(NotifyType::AuthenticationFailed),
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
            FailReason::AuthenticationFailed(e) => write!(f, "peer authentication failed: {e}"),
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
    /// The IKE SA moved to a new path (MOBIKE's UPDATE_SA_ADDRESSES, RFC 4555 section 3.5:
    /// the peer's, or ours once answered and verified): IKE messages now go on `local`,
    /// `remote`; move every child of `children` to its new pair, make-before-break (the
    /// new path in before the old one leaves). All children move in this one event; no
    /// rekey follows.
    IkeSaMoved {
        /// The IKE SA's SPIs (initiator's, responder's).
        spis: (u64, u64),
        /// Our address on the new path.
        local: SocketAddr,
        /// The peer's address on the new path.
        remote: SocketAddr,
        /// NAT detection's outcome on the new path.
        nat: NatStatus,
        /// Every child SA, by inbound SPI, with its new (local, remote) pairs (the
        /// ESP-in-UDP port, as [`ChildSa::paths`]).
        children: Vec<ChildMove>,
        /// Why it moved (logged, counted per IKE SA).
        reason: MoveReason,
    },
    /// RFC 7791: this IKE SA was just cloned from the IKE SA with SPIs `from` (our clone
    /// or the peer's), in one CREATE_CHILD_SA exchange: it is established, without child
    /// SAs, with the original's addresses, MOBIKE and NAT state; its SPIs and algorithms
    /// are `info`'s. The original is unchanged. The first event of a cloned IKE SA.
    IkeSaCloned {
        /// The new IKE SA.
        info: IkeSaInfo,
        /// The SPIs (initiator's, responder's) of the IKE SA it was cloned from.
        from: (u64, u64),
    },
    /// RFC 7791: our clone of this IKE SA failed (the peer refused it, or its answer was
    /// unusable); the IKE SA is unchanged.
    CloneFailed(FailReason),
    /// A MIF exchange (docs/PROTOCOL.md section 5) was answered: by us (`initiated` false:
    /// the peer's request, applied before the answer went out) or by the peer (ours, its
    /// answer applied). `children` are the child SAs whose paths (or transport-mode
    /// selectors) changed, each with its new full path list: the caller applies all of
    /// them in ONE engine table swap. With `dry_run` (DRY_RUN or CHECK) `children` is
    /// empty and `results` says what would have been applied.
    MifApplied {
        /// The IKE SA's SPIs (initiator's, responder's).
        spis: (u64, u64),
        /// Whether the request was ours.
        initiated: bool,
        /// The operation (`None`: the request carried only an interface list).
        op: Option<crate::wire::MifOp>,
        /// DRY_RUN or CHECK: nothing changed.
        dry_run: bool,
        /// The answer per child SA, as on the wire (SPIs: the exchange initiator's
        /// inbound ones).
        results: Vec<crate::wire::MifResult>,
        /// The child SAs whose paths changed.
        children: Vec<MifChildChange>,
    },
    /// Our MIF request was refused as a whole (MIF_REFUSED, or an unusable answer):
    /// nothing changed on either side.
    MifRefused {
        /// The IKE SA's SPIs (initiator's, responder's).
        spis: (u64, u64),
        /// The operation refused (`None`: an interface list alone).
        op: Option<crate::wire::MifOp>,
        /// Why.
        reason: crate::wire::MifRefusal,
    },
    /// The IKE SA failed; nothing more will happen on it.
    Failed(FailReason),
    /// The peer deleted the IKE SA.
    Closed,
}

/// Tests only: one side's MIF state ([`IkeSa::test_mif_state`]).
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestMifState {
    pub(crate) ours: Vec<crate::wire::MifInterface>,
    pub(crate) peer: Vec<crate::wire::MifInterface>,
    pub(crate) our_generation: u32,
    pub(crate) peer_generation: u32,
    pub(crate) children: Vec<TestMifChild>,
}

/// Tests only: one child's MIF state.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TestMifChild {
    pub(crate) spi_in: u32,
    pub(crate) spi_out: u32,
    pub(crate) i_set: Vec<(u16, crate::wire::MifRole)>,
    pub(crate) r_set: Vec<(u16, crate::wire::MifRole)>,
    pub(crate) local_ts: Vec<TrafficSelector>,
    pub(crate) remote_ts: Vec<TrafficSelector>,
    pub(crate) paths: Vec<String>,
}

/// One child SA's new paths after a MIF exchange ([`Event::MifApplied`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MifChildChange {
    /// The child's inbound SPI.
    pub spi_in: u32,
    /// Its new full path list (PROTOCOL 4.2 order).
    pub paths: Vec<MifPath>,
    /// How the new paths take over.
    pub transition: MifTransition,
    /// Transport mode: the child's new (local, remote) selectors, when they changed
    /// (PROTOCOL 6.5).
    pub selectors: Option<(Vec<TrafficSelector>, Vec<TrafficSelector>)>,
}

/// How a child's new paths take over ([`MifChildChange`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MifTransition {
    /// Make the list so; paths new to it carry traffic once a probe was answered on them
    /// (ADD_INTERFACE, REMOVE_INTERFACE, SET_ALTERNATES, a withdrawn interface).
    Set,
    /// SOFT_HANDOVER: make-before-break: `to` (path names) join, verified; `from` leave
    /// once one of `to` answered.
    Soft {
        /// The paths that leave.
        from: Vec<String>,
        /// The paths that join.
        to: Vec<String>,
    },
    /// HARD_HANDOVER: `to` replace `from` at once, unverified (PROTOCOL 4.3).
    Hard {
        /// The paths that leave.
        from: Vec<String>,
        /// The paths that join.
        to: Vec<String>,
    },
}

/// Why [`IkeSa::mif_request`] refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MifError {
    /// The IKE SA is not established.
    NotEstablished,
    /// The extension is not in use on it (the peer did not send MIF_SUPPORTED).
    NotNegotiated,
    /// Too many MIF requests are waiting already.
    Busy,
    /// The operation names an interface we did not announce.
    UnknownInterface,
    /// The selection is beyond PROTOCOL 6.6's limits (256 SPIs, 16 + 16 selectors).
    Limit,
    /// No such IKE SA (from the endpoint).
    NoSuchSa,
}

impl fmt::Display for MifError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MifError::NotEstablished => "the IKE SA is not established",
            MifError::NotNegotiated => "the multi-interface extension is not in use on this IKE SA",
            MifError::Busy => "too many MIF operations are queued on this IKE SA",
            MifError::UnknownInterface => "the operation names an interface we did not announce",
            MifError::Limit => "the selection is too large (256 SPIs, 16 selectors per side)",
            MifError::NoSuchSa => "no such IKE SA",
        })
    }
}

impl std::error::Error for MifError {}

/// Why an IKE SA moved to a new path ([`Event::IkeSaMoved`]). As MOBIKE responder the
/// peer decides (RFC 4555 section 3.1: the initiator chooses the addresses); as
/// initiator the reasons are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MoveReason {
    /// The peer's UPDATE_SA_ADDRESSES from an address it has used before (or the one
    /// IKE_SA_INIT came from): the children move at once.
    PeerUpdate,
    /// The peer's UPDATE_SA_ADDRESSES from a new address, after our return-routability
    /// check (COOKIE2, RFC 4555 sections 3.8 and 5.2.2) was answered from it.
    PeerUpdateVerified,
    /// Initiator: our address on the current path went away.
    LocalAddressGone,
    /// Initiator: the current path stopped answering (liveness check failed).
    PathDead,
    /// Initiator: a preferred path came back.
    Preferred,
    /// Initiator: the operator asked (`mifsec ctl move`).
    Operator,
    /// Initiator: the NAT in front of us maps our address anew (RFC 4555 section 3.8): the
    /// same path, a new address as the peer sees it.
    NatChanged,
}

impl MoveReason {
    /// The reason as the log and `mifsec status` write it.
    pub fn name(self) -> &'static str {
        match self {
            MoveReason::PeerUpdate => "peer-update",
            MoveReason::PeerUpdateVerified => "peer-update-verified",
            MoveReason::LocalAddressGone => "local-address-gone",
            MoveReason::PathDead => "path-dead",
            MoveReason::Preferred => "preferred-path",
            MoveReason::Operator => "operator",
            MoveReason::NatChanged => "nat-mapping-changed",
        }
    }
}

impl fmt::Display for MoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoveReason::PeerUpdate => "the peer's UPDATE_SA_ADDRESSES",
            MoveReason::PeerUpdateVerified => {
                "the peer's UPDATE_SA_ADDRESSES, new address verified (COOKIE2)"
            }
            MoveReason::LocalAddressGone => "our address on the path went away",
            MoveReason::PathDead => "the path stopped answering",
            MoveReason::Preferred => "a preferred path is back",
            MoveReason::Operator => "operator request",
            MoveReason::NatChanged => "the NAT in front of us maps our address anew",
        })
    }
}

/// Why [`IkeSa::request_move`] refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveError {
    /// The IKE SA is not established.
    NotEstablished,
    /// MOBIKE is not in use on it (one side did not send MOBIKE_SUPPORTED).
    NoMobike,
    /// We are its responder: the initiator decides the path (RFC 4555 section 3.1).
    NotInitiator,
    /// The local address is not one of our usable ones, or of another family than the
    /// remote one.
    BadAddress,
    /// No such IKE SA (from the endpoint).
    NoSuchSa,
}

impl fmt::Display for MoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MoveError::NotEstablished => "the IKE SA is not established",
            MoveError::NoMobike => "MOBIKE is not in use on this IKE SA",
            MoveError::NotInitiator => {
                "we are the responder of this IKE SA: the initiator decides its path"
            }
            MoveError::BadAddress => "the local address is not usable (or families differ)",
            MoveError::NoSuchSa => "no such IKE SA",
        })
    }
}

impl std::error::Error for MoveError {}

/// Why [`IkeSa::clone_ike`] refused (RFC 7791).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneError {
    /// The IKE SA is not established.
    NotEstablished,
    /// Our configuration says `clone = false`: we did not send CLONE_IKE_SA_SUPPORTED.
    Disabled,
    /// The peer did not send CLONE_IKE_SA_SUPPORTED: it is never asked.
    PeerUnsupported,
    /// The IKE SA and its clones are [`MAX_CLONE_FAMILY`] already.
    Limit,
    /// No such IKE SA (from the endpoint).
    NoSuchSa,
}

impl fmt::Display for CloneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CloneError::NotEstablished => "the IKE SA is not established",
            CloneError::Disabled => "cloning is disabled for this connection (clone = false)",
            CloneError::PeerUnsupported => {
                "the peer did not announce CLONE_IKE_SA_SUPPORTED (RFC 7791): not asked"
            }
            CloneError::Limit => "too many clones of this IKE SA",
            CloneError::NoSuchSa => "no such IKE SA",
        })
    }
}

impl std::error::Error for CloneError {}

/// One child SA's new addresses after its IKE SA moved ([`Event::IkeSaMoved`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildMove {
    /// The child's inbound SPI.
    pub spi_in: u32,
    /// The child's outbound SPI.
    pub spi_out: u32,
    /// The (local, remote) pairs to install it on now, as [`ChildSa::paths`].
    pub paths: Vec<(SocketAddr, SocketAddr)>,
    /// Whether ESP must go in UDP on the new path.
    pub udp_encap: bool,
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
    /// MOBIKE moves of the IKE SA to a new path (the peer's UPDATE_SA_ADDRESSES).
    pub moves: u64,
    /// Return-routability checks (COOKIE2) of a peer's new address answered correctly.
    pub route_checks_passed: u64,
    /// ... answered without our COOKIE2 (the child SAs did not follow).
    pub route_checks_failed: u64,
    /// The peer's UPDATE_SA_ADDRESSES refused: NAT with NO_NATS_ALLOWED
    /// (UNEXPECTED_NAT_DETECTED) or an address local policy refuses
    /// (UNACCEPTABLE_ADDRESSES).
    pub updates_refused: u64,
    /// The peer's UPDATE_SA_ADDRESSES older than one processed already (nothing moved).
    pub updates_stale: u64,
    /// The peer's additional-address notifies not kept: over the cap
    /// (`MAX_PEER_ADDRESSES`), of a wrong length, or duplicates.
    pub peer_addresses_dropped: u64,
    /// MOBIKE answers whose COOKIE2 was missing or not ours (no move followed).
    pub cookie2_mismatch: u64,
    /// MOBIKE liveness checks of the current path started by traffic without answer.
    pub path_checks: u64,
    /// Probes: a request of ours sent on every candidate pair after the path was found
    /// dead or its address went away.
    pub probes: u64,
    /// Our UPDATE_SA_ADDRESSES refused by the peer (UNACCEPTABLE_ADDRESSES,
    /// UNEXPECTED_NAT_DETECTED, another error) or not verified: no move.
    pub our_updates_refused: u64,
    /// MIF operations answered (ours and the peer's).
    pub mif_operations: u64,
    /// MIF requests refused as a whole (MIF_REFUSED sent or received).
    pub mif_refused: u64,
}

/// Proof that the peer's AUTH payload verified. Only `core::verify_peer` makes one, and child
/// SA keys can only be derived with one.
#[derive(Debug)]
pub struct AuthVerified(());

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

/// One received IKE message, as the handshake's states handle it.
#[derive(Clone, Copy)]
struct Received<'a> {
    now: Instant,
    /// The address it arrived on (ours).
    local: SocketAddr,
    /// The address it came from (the peer's).
    remote: SocketAddr,
    /// The datagram (non-ESP marker removed).
    bytes: &'a [u8],
    /// What it parsed to.
    msg: &'a Message,
}

impl<'a> Received<'a> {
    /// The time, the addresses (ours, the peer's), the datagram and its message.
    fn parts(self) -> (Instant, (SocketAddr, SocketAddr), &'a [u8], &'a Message) {
        (self.now, (self.local, self.remote), self.bytes, self.msg)
    }
}

/// A child SA's mode: transport if both sides asked for it, else tunnel.
fn child_mode(transport: bool) -> Mode {
    if transport {
        Mode::Transport
    } else {
        Mode::Tunnel
    }
}

/// The first SA, Nonce, KE, TSi, TSr, IDi, IDr and AUTH payload of a message's payloads, each if present
/// (the handshake and the exchanges take the first of each).
#[derive(Debug, Default, Clone, Copy)]
struct Firsts<'a> {
    sa: Option<&'a SaPayload>,
    nonce: Option<&'a Vec<u8>>,
    ke: Option<&'a KePayload>,
    tsi: Option<&'a TsPayload>,
    tsr: Option<&'a TsPayload>,
    idi: Option<&'a IdPayload>,
    idr: Option<&'a IdPayload>,
    auth: Option<&'a AuthPayload>,
}

impl<'a> Firsts<'a> {
    fn of(payloads: &'a [Payload]) -> Self {
        let mut f = Firsts::default();
        for p in payloads {
            match p {
                Payload::Sa(s) => f.sa = f.sa.or(Some(s)),
                Payload::Nonce(n) => f.nonce = f.nonce.or(Some(n)),
                Payload::Ke(k) => f.ke = f.ke.or(Some(k)),
                Payload::TsI(t) => f.tsi = f.tsi.or(Some(t)),
                Payload::TsR(t) => f.tsr = f.tsr.or(Some(t)),
                Payload::IdI(i) => f.idi = f.idi.or(Some(i)),
                Payload::IdR(i) => f.idr = f.idr.or(Some(i)),
                Payload::Auth(a) => f.auth = f.auth.or(Some(a)),
                _ => {}
            }
        }
        f
    }
}

/// Whether `msg` is an SKF fragment other than the first: a retransmitted request is
/// answered from the cache only on its fragment 1 (RFC 7383 section 2.6.1).
fn is_later_fragment(msg: &Message) -> bool {
    matches!(msg.payloads.last(), Some(Payload::Skf(f)) if f.fragment_number != 1)
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
    AwaitEap(Box<AwaitEap>),
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
            State::AwaitEap(_) => "IKE_AUTH with EAP",
            State::Established(_) => "established",
            State::Dead(_) => "dead",
        }
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
            .field("paths", &self.ctx.paths.all())
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
                        let header = Header::ike_sa_init(h.spi_i(), 0, Flags::NONE);
                        self.ctx.paths.set_addresses(local, remote);
                        self.ctx.refuse_init(&header, n);
                    }
                }
                return;
            }
        };
        let state = std::mem::replace(
            &mut self.state,
            State::Dead(Dead {
                spis: None,
                last_response: None,
            }),
        );
        let ctx = &mut self.ctx;
        let received = Received {
            now,
            local,
            remote,
            bytes,
            msg: &msg,
        };
        self.state = match state {
            State::InitSent(st) => st.handle(ctx, received),
            State::AuthSent(st) => st.handle(ctx, received),
            State::AwaitInit(st) => st.handle(ctx, received),
            State::AwaitAuth(st) => st.handle(ctx, received),
            State::AwaitEap(st) => st.handle(ctx, received),
            State::Established(st) => st.handle(ctx, now, (local, remote), bytes, &msg),
            State::Dead(st) => st.handle(ctx, remote, &msg),
        };
        self.release_if_dead();
    }

    /// A dead SA returns its virtual IP leases to the pools.
    fn release_if_dead(&mut self) {
        if matches!(self.state, State::Dead(_)) {
            self.ctx.timers.clear();
            self.ctx.release_leases();
        }
    }

    /// Runs the timers due at `now`: retransmissions, give-up, half-open expiry.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.run_timers(now);
        self.release_if_dead();
    }

    fn run_timers(&mut self, now: Instant) {
        if self.ctx.timers.is_due(Timer::HalfOpen, now) || !self.ctx.run_retransmit(now) {
            let spis = self.spis();
            self.state = self.ctx.fail(FailReason::Timeout, spis, None);
            return;
        }
        if let State::Established(st) = &mut self.state {
            if let Err(reason) = st.on_timers(&mut self.ctx, now) {
                let spis = self.spis();
                if reason == FailReason::Expired {
                    self.ctx.children.clear();
                }
                self.state = self.ctx.fail(reason, spis, None);
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

    /// Our usable local addresses are now `addrs`, preferred first (the daemon calls this
    /// whenever the set changes; the endpoint orders them by the connection's
    /// `local_addrs`). Bounded: at most [`MAX_LOCAL_ADDRESSES`], duplicates dropped.
    ///
    /// With MOBIKE (RFC 4555), in either role, the peer is told our additional addresses
    /// (all but the current path's) in an INFORMATIONAL when that list changed (section
    /// 3.6); before IKE_AUTH, the list goes in IKE_AUTH. As the original initiator: if the
    /// current path's address is gone, the candidate pairs are probed and the IKE SA moves
    /// to the first that answers ([`MoveReason::LocalAddressGone`]); with `prefer_best_path`, a
    /// more preferred address than the current one is probed and, if it answers, moved to
    /// ([`MoveReason::Preferred`]). Without MOBIKE the list is only kept.
    pub fn set_local_addresses(&mut self, now: Instant, addrs: &[IpAddr]) {
        let mut list: Vec<IpAddr> = Vec::new();
        for a in addrs {
            if !list.contains(a) && list.len() < MAX_LOCAL_ADDRESSES {
                list.push(*a);
            }
        }
        self.ctx.roam.local = Some(list);
        if let State::Established(st) = &mut self.state {
            st.set_local_addresses(&mut self.ctx, now);
        }
    }

    /// Whether the multi-interface extension is in use on this IKE SA (both sides sent
    /// MIF_SUPPORTED version 1 in IKE_AUTH).
    pub fn mif_in_use(&self) -> bool {
        self.ctx.mif.in_use
    }

    /// Our interfaces as announced to the peer (IDs, addresses, priorities, flags).
    pub fn mif_local_interfaces(&self) -> &[crate::wire::MifInterface] {
        self.ctx.mif.announced()
    }

    /// The peer's interfaces from its last accepted list, and that list's generation.
    pub fn mif_peer_interfaces(&self) -> (&[crate::wire::MifInterface], u32) {
        (&self.ctx.mif.peer, self.ctx.mif.peer_generation)
    }

    /// Our usable local addresses as last given to [`IkeSa::set_local_addresses`]
    /// (`None`: never given).
    pub fn local_addresses(&self) -> Option<&[IpAddr]> {
        self.ctx.roam.local.as_deref()
    }

    /// Moves the IKE SA by hand to our address `local` and the peer's `remote` (`None`:
    /// its current one), keeping the ports (`mifsec ctl move`): IKE goes on the new path
    /// at once and UPDATE_SA_ADDRESSES follows there; once it is answered and verified,
    /// [`Event::IkeSaMoved`] (reason [`MoveReason::Operator`]) moves the children. If the
    /// new path does not answer, the other paths are probed as for a dead path.
    ///
    /// `Ok(false)`: already on that path. Refused (`Err`) unless established, with MOBIKE,
    /// as the original initiator (the initiator decides, RFC 4555 section 3.1), with a
    /// usable `local` of the family of `remote`.
    pub fn request_move(
        &mut self,
        now: Instant,
        local: IpAddr,
        remote: Option<IpAddr>,
    ) -> Result<bool, MoveError> {
        match &mut self.state {
            State::Established(st) => st.request_move(&mut self.ctx, now, local, remote),
            _ => Err(MoveError::NotEstablished),
        }
    }

    /// The daemon's report about this IKE SA's child SAs since its last one (from the
    /// engine's usage pushes, about every 250 ms while a child moves): whether any
    /// outbound ESP was `sent`, and whether any inbound ESP was `received`.
    ///
    /// Anything received is a sign of life (it postpones the next liveness check, as
    /// [`IkeSa::note_activity`]). With MOBIKE as the original initiator, outbound traffic
    /// with nothing inbound for `path_check_delay` starts a liveness check of the current
    /// path (NAT_DETECTION_* and COOKIE2), sent `path_check_tries` times
    /// `path_check_interval` apart; unanswered, the path is dead: the candidate pairs are
    /// probed and the IKE SA moves to the first that answers ([`MoveReason::PathDead`]).
    pub fn note_traffic(&mut self, now: Instant, sent: bool, received: bool) {
        if let State::Established(st) = &mut self.state {
            st.note_traffic(&mut self.ctx, now, sent, received);
        }
    }

    /// Records inbound ESP activity on this IKE SA's child SAs at `now`: it postpones the
    /// next liveness check.
    pub fn note_activity(&mut self, now: Instant) {
        if let State::Established(st) = &mut self.state {
            st.note_activity(&mut self.ctx, now);
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
            st.want(Box::new(ChildRekey::new(s, None)));
        }
        st.kick(&mut self.ctx, now);
        true
    }

    /// Clones the IKE SA (RFC 7791): a CREATE_CHILD_SA with N(CLONE_IKE_SA) that rekeys
    /// it, after which both IKE SAs live on; the new one, without child SAs, comes out of
    /// [`IkeSa::take_clones`] with [`Event::IkeSaCloned`] as its first event. A peer that
    /// did not send CLONE_IKE_SA_SUPPORTED is never asked (`Err`, nothing sent); a failure
    /// later is [`Event::CloneFailed`].
    pub fn clone_ike(&mut self, now: Instant) -> Result<(), CloneError> {
        let State::Established(st) = &mut self.state else {
            return Err(CloneError::NotEstablished);
        };
        if !self.ctx.cfg.clone_ike_sa {
            return Err(CloneError::Disabled);
        }
        if !self.ctx.peer_clone {
            return Err(CloneError::PeerUnsupported);
        }
        if !self.ctx.may_clone() {
            return Err(CloneError::Limit);
        }
        st.request_clone(&mut self.ctx, now);
        Ok(())
    }

    /// Negotiates a new child SA of configuration `name` on this IKE SA now
    /// (CREATE_CHILD_SA; on a clone, the appendix-B flow's own child). `false`: not
    /// established, or no child configuration of that name.
    pub fn create_child(&mut self, now: Instant, name: &str) -> bool {
        let State::Established(st) = &mut self.state else {
            return false;
        };
        if !self.ctx.cfg.all_children().any(|c| c.name == name) {
            return false;
        }
        st.want(Box::new(exchange::ChildCreate::new(name.to_string(), None)));
        st.kick(&mut self.ctx, now);
        true
    }

    /// Tests only: a clone request whatever the peer announced and the limits say (a
    /// peer that does not follow RFC 7791).
    #[cfg(test)]
    pub(crate) fn clone_ike_unchecked(&mut self, now: Instant) {
        if let State::Established(st) = &mut self.state {
            st.request_clone(&mut self.ctx, now);
        }
    }

    /// RFC 7791: the IKE SAs cloned from this one since the last call (ours or the
    /// peer's), each established and routed by its own SPIs: the caller keeps and drives
    /// each as an IKE SA of its own.
    pub fn take_clones(&mut self) -> Vec<IkeSa> {
        std::mem::take(&mut self.ctx.clones)
    }

    /// The keys of this IKE SA (and of old ones it still keeps after a rekey) as lines of
    /// Wireshark's `ikev2_decryption_table` (`mifsec keys --wireshark`, root only). Empty
    /// unless established, and for ChaCha20-Poly1305 (Wireshark cannot decrypt it).
    pub fn wireshark_ike_keys(&self) -> Vec<String> {
        match &self.state {
            State::Established(st) => st.wireshark_lines(),
            _ => Vec::new(),
        }
    }

    /// RFC 7791: the SPIs of the IKE SA this one was cloned from, if it was.
    pub fn cloned_from(&self) -> Option<(u64, u64)> {
        self.ctx.cloned_from
    }

    /// Whether the peer sent CLONE_IKE_SA_SUPPORTED (RFC 7791) in IKE_AUTH.
    pub fn peer_supports_clone(&self) -> bool {
        self.ctx.peer_clone
    }

    /// Rekeys the IKE SA now. Returns whether the SA is established.
    pub fn rekey_ike(&mut self, now: Instant) -> bool {
        let State::Established(st) = &mut self.state else {
            return false;
        };
        st.want(Box::new(IkeRekey::new(None)));
        st.kick(&mut self.ctx, now);
        true
    }

    /// When the IKE SA is next rekeyed by its lifetime, if it is established and has one.
    pub fn next_rekey(&self) -> Option<Instant> {
        match &self.state {
            State::Established(_) => self.ctx.timers.get(Timer::IkeRekey),
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

    /// Tests only: an initiator adds `payloads` to its IKE_AUTH request (a peer sending
    /// its MOBIKE address list there).
    #[cfg(test)]
    pub(crate) fn push_test_auth_payloads(&mut self, payloads: Vec<Payload>) {
        self.ctx.test_auth_extra = payloads;
    }

    /// Tests only: every EAP packet this side sends goes through `f` (round, packet).
    #[cfg(test)]
    pub(crate) fn set_test_eap_out(&mut self, f: ctx::EapRewrite) {
        self.ctx.test_eap_out = Some(f);
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

    /// Fuzzing only: the EAP packet this side sends in round `r` (from 1: the IKE_AUTH
    /// message's ID) is replaced by the bytes given for `r`, sealed as usual.
    #[cfg(fuzzing)]
    pub fn fuzz_eap_replace(&mut self, list: Vec<(u32, Vec<u8>)>) {
        self.ctx.fuzz_eap = list;
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
        match self.state {
            State::Dead(_) => None,
            _ => self.ctx.timers.next_expiry(),
        }
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
    pub fn delete(&mut self, now: Instant) -> bool {
        let spis = self.spis();
        let state = std::mem::replace(
            &mut self.state,
            State::Dead(Dead {
                spis,
                last_response: None,
            }),
        );
        self.ctx.retransmit = None;
        self.ctx.timers.clear();
        self.ctx.children.clear();
        self.ctx.release_leases();
        let State::Established(mut st) = state else {
            return false;
        };
        st.send_last(&mut self.ctx, now, Box::new(Delete::ike(None)))
    }

    /// Tests only: the peer's requests are offered to the responder half of `r` before
    /// any other exchange's. `false` unless established.
    #[cfg(test)]
    pub(crate) fn register_exchange(&mut self, r: exchange::Responder) -> bool {
        let State::Established(st) = &mut self.state else {
            return false;
        };
        st.register(r);
        true
    }

    /// Tests only: queues our request `ex` (as lifetimes and the API queue theirs).
    /// `false` unless established.
    #[cfg(test)]
    pub(crate) fn queue_exchange(&mut self, now: Instant, ex: Box<dyn exchange::Exchange>) -> bool {
        let State::Established(st) = &mut self.state else {
            return false;
        };
        st.want(ex);
        st.kick(&mut self.ctx, now);
        true
    }

    /// Queues a MIF operation (docs/PROTOCOL.md section 5) on this IKE SA: one request at
    /// a time, the others wait in order; our interface list goes with it if it changed
    /// since the peer last took one. Its answer is [`Event::MifApplied`] (with `dry_run`
    /// for DRY_RUN and CHECK) or [`Event::MifRefused`]. Refused at once (`Err`) unless
    /// established with the extension in use, with every interface it names one of ours,
    /// within the selection limits, and with fewer than 16 requests waiting.
    pub fn mif_request(
        &mut self,
        now: Instant,
        op: crate::wire::MifOperation,
    ) -> Result<(), MifError> {
        match &mut self.state {
            State::Established(st) => st.mif_request(&mut self.ctx, now, op),
            _ => Err(MifError::NotEstablished),
        }
    }

    /// MIF: our interfaces are now `list` (the daemon's monitor, through
    /// `Endpoint::set_local_interfaces`): an interface keeps its ID while its name and
    /// address stay, a new one gets a new ID. Before IKE_AUTH the table goes in IKE_AUTH;
    /// once established with the extension in use, ONE INFORMATIONAL with the new list
    /// and the operation the configuration chooses is queued (a new interface:
    /// `mif_on_new`; a lost one: REMOVE_INTERFACE, or HARD_HANDOVER to one gained at the
    /// same time; the most preferred one back with `mif_prefer`: SOFT_HANDOVER to it).
    pub fn set_local_interfaces(&mut self, now: Instant, list: &[mif::LocalInterface]) {
        let before = self.ctx.mif.announced().to_vec();
        if self.ctx.mif.set_local(list) {
            if let State::Established(st) = &mut self.state {
                st.mif_local_changed(&mut self.ctx, now, &before);
            }
        }
    }

    /// Tests only: our (ID, address) table, the peer's, and each child's (inbound SPI,
    /// initiator set, responder set, local selectors, remote selectors), for comparing
    /// both sides' MIF state.
    #[cfg(test)]
    pub(crate) fn test_mif_state(&self) -> TestMifState {
        let m = &self.ctx.mif;
        TestMifState {
            ours: m.ours.clone(),
            peer: m.peer.clone(),
            our_generation: m.our_generation,
            peer_generation: m.peer_generation,
            children: self
                .ctx
                .children
                .iter()
                .map(|c| {
                    let st = c.mif.as_ref();
                    TestMifChild {
                        spi_in: c.spi_in,
                        spi_out: c.spi_out,
                        i_set: st.map(|s| s.initiator_set.clone()).unwrap_or_default(),
                        r_set: st.map(|s| s.responder_set.clone()).unwrap_or_default(),
                        local_ts: c.local_ts.clone(),
                        remote_ts: c.remote_ts.clone(),
                        paths: self.test_mif_paths(c.spi_in),
                    }
                })
                .collect(),
        }
    }

    /// Tests only: child `spi_in`'s MIF path names, as the exchange computes them.
    #[cfg(test)]
    pub(crate) fn test_mif_paths(&self, spi_in: u32) -> Vec<String> {
        self.ctx
            .children
            .iter()
            .find(|c| c.spi_in == spi_in)
            .and_then(|c| exchange::mif::test_paths(&self.ctx, c))
            .unwrap_or_default()
    }

    /// Tests only: our interface table is now `ours` (as the daemon's monitor would
    /// give it); the automatic operation follows.
    #[cfg(test)]
    pub(crate) fn test_mif_set_local(&mut self, now: Instant, ours: &[mif::LocalInterface]) {
        self.set_local_interfaces(now, ours);
    }

    /// Tests only: `mif_on_new` is now `on_new`.
    #[cfg(test)]
    pub(crate) fn test_mif_set_on_new(&mut self, on_new: super::config::MifOnNew) {
        self.ctx.cfg.mif_on_new = on_new;
    }

    /// Tests only: our interface table is now `ours`, and the peer is never told (no list
    /// pending, no operation).
    #[cfg(test)]
    pub(crate) fn test_mif_set_local_quiet(&mut self, ours: &[mif::LocalInterface]) {
        let m = &mut self.ctx.mif;
        let generation = m.our_generation;
        m.set_local(ours);
        m.our_generation = generation;
        m.list_pending = false;
        m.withdrawn_pending.clear();
    }

    /// Tests only: the MIF state of the child SA with inbound SPI `spi_in`.
    #[cfg(test)]
    pub(crate) fn test_mif_child_mut(&mut self, spi_in: u32) -> Option<&mut mif::MifChildState> {
        self.ctx
            .children
            .iter_mut()
            .find(|c| c.spi_in == spi_in)
            .and_then(|c| c.mif.as_mut())
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
            State::AwaitEap(s) => Some((s.core.spi_i, s.core.spi_r)),
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
        self.ctx.paths.pair()
    }

    /// Whether MOBIKE (RFC 4555) is in use: both sides sent MOBIKE_SUPPORTED.
    pub fn mobike(&self) -> bool {
        self.ctx.paths.mobike()
    }

    /// The peer's additional addresses (MOBIKE), as its last list said.
    pub fn peer_addresses(&self) -> &[IpAddr] {
        self.ctx.paths.peer_addresses()
    }

    /// The multi-interface extension on this IKE SA, for `status` and `ctl mif`: `None`
    /// when our configuration does not have it (`mif = false`).
    pub fn mif_info(&self) -> Option<MifInfo> {
        let m = &self.ctx.mif;
        m.enabled.then(|| MifInfo {
            in_use: m.in_use,
            ours: m.ours.clone(),
            peer: m.peer.clone(),
            our_generation: m.our_generation,
            peer_generation: m.peer_generation,
        })
    }

    /// MOBIKE responder: the peer address our return-routability check is under way for
    /// (the IKE SA is there already, its child SAs follow when the check is answered).
    pub fn route_check(&self) -> Option<SocketAddr> {
        self.ctx.paths.check().map(|c| c.path.remote)
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
                ctx.send_to(ctx.paths.local(), remote, bytes);
            }
            None => ctx.stats.unexpected += 1,
        }
        State::Dead(self)
    }
}
