//! The keys of one IKE SA after IKE_SA_INIT and what is done with them: sealing and
//! opening SK messages (and fragments), AUTH, child KEYMAT; NAT detection hashes.

use crate::ike::auth::cert::MAX_CHAIN;
use crate::ike::auth::{AuthError, LocalAuth, PeerAuthInfo, PublicKey, RemoteAuth};
use crate::ike::sa::paths::Path;
use crate::ike::sa::{AuthVerified, FailReason, IkeSaInfo, NatStatus, SIGNATURE_HASHES, Stats};
use std::net::{IpAddr, SocketAddr};

use mifsec_dataplane::aead::Cipher;
use ring::digest;

use crate::ike::config::IkeConfig;
use crate::ike::crypto::{
    ChildKeys, CryptoError, IkeKeys, Prf, Secret, SkCrypter, psk_auth, rekey_skeyseed,
    signed_octets, skeyseed, verify_psk_auth,
};
use crate::ike::fragment::{Outcome, Reassembler, max_message_len};
use crate::ike::proposal::IkeChoice;
use crate::wire::{
    AuthMethod, AuthPayload, CertEncoding, CertPayload, DhGroup, ExchangeType, Flags, Header,
    IdPayload, Message, NotifyPayload, NotifyType, Payload, parse_payloads,
};

/// Keys and values shared by the states after IKE_SA_INIT.
pub(in crate::ike::sa) struct Core {
    pub(in crate::ike::sa) initiator: bool,
    pub(in crate::ike::sa) spi_i: u64,
    pub(in crate::ike::sa) spi_r: u64,
    pub(in crate::ike::sa) ni: Vec<u8>,
    pub(in crate::ike::sa) nr: Vec<u8>,
    pub(in crate::ike::sa) prf: Prf,
    pub(in crate::ike::sa) cipher: Cipher,
    pub(in crate::ike::sa) group: DhGroup,
    pub(in crate::ike::sa) sk_d: Secret,
    pub(in crate::ike::sa) sk_pi: Secret,
    pub(in crate::ike::sa) sk_pr: Secret,
    /// `SK_ei` and `SK_er` (key and salt), kept only for `mifsec keys --wireshark`.
    pub(in crate::ike::sa) sk_e: (Secret, Secret),
    pub(in crate::ike::sa) tx: SkCrypter,
    pub(in crate::ike::sa) rx: SkCrypter,
    /// The IKE_SA_INIT request and response as sent (RealMessage1 and RealMessage2).
    pub(in crate::ike::sa) init_request: Vec<u8>,
    pub(in crate::ike::sa) init_response: Vec<u8>,
    /// With IKE fragmentation negotiated: the largest message sent whole.
    pub(in crate::ike::sa) frag: Option<usize>,
    /// Fragments of messages from the peer being reassembled.
    pub(in crate::ike::sa) reasm: Reassembler,
    /// The peer's SIGNATURE_HASH_ALGORITHMS.
    pub(in crate::ike::sa) peer_hashes: Vec<u16>,
    /// The CA key hashes of the peer's CERTREQ payloads (X.509, at most 32).
    pub(in crate::ike::sa) peer_certreq: Vec<[u8; 20]>,
}

#[cfg(test)]
thread_local! {
    /// Tests only: the inner payloads of every protected message any IKE SA of this
    /// thread opened (decrypted and authenticated), with its exchange type, in order; the
    /// harness tests check what each side really received.
    pub(in crate::ike) static OPENED: std::cell::RefCell<Vec<(ExchangeType, Vec<Payload>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

impl Core {
    pub(in crate::ike::sa) fn new(
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
    pub(in crate::ike::sa) fn rekeyed(
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
        // Extensions negotiated in IKE_SA_INIT carry over to the new IKE SA (as strongSwan's
        // inherit_pre does).
        core.frag = self.frag;
        core.peer_hashes = self.peer_hashes.clone();
        Ok(core)
    }

    pub(in crate::ike::sa) fn from_seed(
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
            sk_e: (keys.sk_ei.clone(), keys.sk_er.clone()),
            tx,
            rx,
            init_request: messages.0,
            init_response: messages.1,
            frag: None,
            reasm: Reassembler::default(),
            peer_hashes: Vec::new(),
            peer_certreq: Vec::new(),
        })
    }

    /// This IKE SA's line of Wireshark's `ikev2_decryption_table` (initiator SPI,
    /// responder SPI, SK_ei, SK_er, encryption algorithm, SK_ai, SK_ar, integrity
    /// algorithm, as its IKEv2 preferences name them); `None` for an AEAD Wireshark's
    /// table has no entry for (ChaCha20-Poly1305).
    pub(in crate::ike::sa) fn wireshark_line(&self) -> Option<String> {
        let encr = match self.cipher {
            Cipher::Aes128Gcm => "AES-GCM-128 with 16 octet ICV [RFC5282]",
            Cipher::Aes256Gcm => "AES-GCM-256 with 16 octet ICV [RFC5282]",
            Cipher::ChaCha20Poly1305 => return None,
        };
        let hex = |k: &[u8]| k.iter().map(|b| format!("{b:02x}")).collect::<String>();
        Some(format!(
            "{:016x},{:016x},{},{},\"{encr}\",,,\"NONE [RFC4306]\"",
            self.spi_i,
            self.spi_r,
            hex(&self.sk_e.0),
            hex(&self.sk_e.1)
        ))
    }

    pub(in crate::ike::sa) fn header(
        &self,
        exchange_type: ExchangeType,
        response: bool,
        message_id: u32,
    ) -> Header {
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
    pub(in crate::ike::sa) fn seal(
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
    pub(in crate::ike::sa) fn open(
        &mut self,
        bytes: &[u8],
        msg: &Message,
        stats: &mut Stats,
    ) -> Result<Option<Vec<Payload>>, CryptoError> {
        let r = self.open_message(bytes, msg, stats);
        #[cfg(test)]
        if let Ok(Some(p)) = &r {
            OPENED.with(|o| o.borrow_mut().push((msg.header.exchange_type, p.clone())));
        }
        r
    }

    fn open_message(
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
    pub(in crate::ike::sa) fn negotiate_extensions(
        &mut self,
        cfg: &IkeConfig,
        peer: &Message,
        remote: SocketAddr,
    ) {
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
        self.record_certreq(&peer.payloads);
    }

    /// Records the CA key hashes of the peer's CERTREQ payloads among `payloads` (its
    /// IKE_SA_INIT response, or its IKE_AUTH request), at most 32 of them.
    pub(in crate::ike::sa) fn record_certreq(&mut self, payloads: &[Payload]) {
        for p in payloads {
            let Payload::CertReq(c) = p else { continue };
            if c.encoding != CertEncoding::X509Signature {
                continue;
            }
            for h in c.data.chunks_exact(20) {
                if self.peer_certreq.len() >= 32 {
                    return;
                }
                let mut a = [0u8; 20];
                a.copy_from_slice(h);
                if !self.peer_certreq.contains(&a) {
                    self.peer_certreq.push(a);
                }
            }
        }
    }

    /// Our CERT payloads (pubkey with certificates) and AUTH payload. `peer_certreq`: the
    /// peer asked for certificates (we send ours either way; the log says whether one of
    /// its CAs is ours).
    pub(in crate::ike::sa) fn our_auth(
        &self,
        cfg: &IkeConfig,
        id: &IdPayload,
    ) -> Result<Vec<Payload>, FailReason> {
        let (msg, nonce, skp) = if self.initiator {
            (&self.init_request, &self.nr, &self.sk_pi)
        } else {
            (&self.init_response, &self.ni, &self.sk_pr)
        };
        let octets = signed_octets(self.prf, msg, nonce, skp, id);
        match &cfg.local_auth {
            LocalAuth::Psk(psk) => Ok(vec![Payload::Auth(AuthPayload {
                method: AuthMethod::SharedKeyMic,
                data: psk_auth(self.prf, psk, &octets).to_vec(),
            })]),
            LocalAuth::Pubkey {
                key,
                certs,
                rsa_pss,
            } => {
                // With several certificates: the first whose CA the peer's CERTREQ names
                // (as strongSwan chooses), else the first configured.
                let chosen = cfg
                    .cert_choices
                    .iter()
                    .find(|c| c.ca_hashes.iter().any(|h| self.peer_certreq.contains(h)));
                let (key, certs) = match chosen {
                    Some(c) => {
                        tracing::debug!(
                            certificate = %c.subject,
                            "the peer's CERTREQ names this certificate's CA"
                        );
                        (&c.key, &c.certs)
                    }
                    None => (key, certs),
                };
                let (method, data) = key
                    .sign_auth(&self.peer_hashes, *rsa_pss, &octets)
                    .map_err(FailReason::AuthenticationFailed)?;
                let mut out: Vec<Payload> = certs
                    .iter()
                    .map(|c| {
                        Payload::Cert(CertPayload {
                            encoding: CertEncoding::X509Signature,
                            data: c.clone(),
                        })
                    })
                    .collect();
                out.push(Payload::Auth(AuthPayload { method, data }));
                Ok(out)
            }
            // EAP: no AUTH before the EAP exchange (RFC 7296 section 2.16); the one after
            // it is `msk_auth`'s.
            LocalAuth::Eap { .. } => Ok(Vec::new()),
        }
    }

    /// Our AUTH after EAP: `prf(prf(MSK, "Key Pad for IKEv2"), <our signed octets>)`, or
    /// with `SK_p` as the key for a method without an MSK (RFC 7296 section 2.16).
    pub(in crate::ike::sa) fn msk_auth(&self, msk: Option<&[u8]>, id: &IdPayload) -> Payload {
        let (msg, nonce, skp) = if self.initiator {
            (&self.init_request, &self.nr, &self.sk_pi)
        } else {
            (&self.init_response, &self.ni, &self.sk_pr)
        };
        let octets = signed_octets(self.prf, msg, nonce, skp, id);
        let key = msk.unwrap_or(skp);
        Payload::Auth(AuthPayload {
            method: AuthMethod::SharedKeyMic,
            data: psk_auth(self.prf, key, &octets).to_vec(),
        })
    }

    /// Checks the peer's AUTH after EAP against the MSK (as `msk_auth`, the peer's signed
    /// octets with its identity `id`).
    pub(in crate::ike::sa) fn verify_msk_auth(
        &self,
        msk: Option<&[u8]>,
        id: &IdPayload,
        auth: &AuthPayload,
    ) -> Result<AuthVerified, FailReason> {
        let (msg, nonce, skp) = if self.initiator {
            (&self.init_response, &self.ni, &self.sk_pr)
        } else {
            (&self.init_request, &self.nr, &self.sk_pi)
        };
        let octets = signed_octets(self.prf, msg, nonce, skp, id);
        let key = msk.unwrap_or(skp);
        if auth.method == AuthMethod::SharedKeyMic
            && verify_psk_auth(self.prf, key, &octets, &auth.data)
        {
            Ok(AuthVerified(()))
        } else {
            Err(FailReason::AuthenticationFailed(AuthError::EapAuthMismatch))
        }
    }

    /// Our CERTREQ, when the peer must show a certificate of one of our CAs.
    pub(in crate::ike::sa) fn certreq(cfg: &IkeConfig) -> Option<Payload> {
        match &cfg.remote_auth {
            RemoteAuth::Pubkey(t) if t.has_cas() => Some(Payload::CertReq(CertPayload {
                encoding: CertEncoding::X509Signature,
                data: t.certreq_data(),
            })),
            _ => None,
        }
    }

    pub(in crate::ike::sa) fn info(&self, path: &Path, id: IdPayload, mobike: bool) -> IkeSaInfo {
        IkeSaInfo {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            initiator: self.initiator,
            cipher: self.cipher,
            prf: self.prf,
            group: self.group,
            local: path.local,
            remote: path.remote,
            nat: path.nat,
            remote_id: id,
            local_auth: "",
            local_eap_id: None,
            remote_auth: Box::default(),
            peer_mobike: mobike,
            peer_clone: false,
            fragmentation: self.frag.is_some(),
            peer_signature_hashes: self.peer_hashes.clone(),
            vips: Vec::new(),
            dns: Vec::new(),
        }
    }

    /// `KEYMAT` for the first child, split into (inbound, outbound) for us.
    pub(in crate::ike::sa) fn child_keys(
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

/// Checks the peer's identity against the configuration and its AUTH payload (with the
/// certificates of its CERT payloads in `inner` for a signature), and says how the peer
/// authenticated.
pub(in crate::ike::sa) fn verify_peer(
    core: &Core,
    cfg: &IkeConfig,
    id: &IdPayload,
    auth: &AuthPayload,
    inner: &[Payload],
) -> Result<(AuthVerified, PeerAuthInfo), FailReason> {
    let fail = |e| Err(FailReason::AuthenticationFailed(e));
    if cfg
        .remote_id
        .as_ref()
        .is_some_and(|want| !crate::ike::auth::cert::id_matches(want, id))
    {
        return fail(AuthError::WrongId);
    }
    let (msg, nonce, skp) = if core.initiator {
        (&core.init_response, &core.ni, &core.sk_pr)
    } else {
        (&core.init_request, &core.nr, &core.sk_pi)
    };
    let octets = signed_octets(core.prf, msg, nonce, skp, id);
    match (&cfg.remote_auth, auth.method) {
        (RemoteAuth::Psk(psk), AuthMethod::SharedKeyMic) => {
            if verify_psk_auth(core.prf, psk, &octets, &auth.data) {
                Ok((
                    AuthVerified(()),
                    PeerAuthInfo {
                        method: "psk",
                        ..PeerAuthInfo::default()
                    },
                ))
            } else {
                fail(AuthError::PskMismatch)
            }
        }
        (RemoteAuth::Psk(_), _)
        | (RemoteAuth::Pubkey(_), AuthMethod::SharedKeyMic)
        | (RemoteAuth::Eap { .. }, _) => fail(AuthError::MethodNotAllowed),
        (RemoteAuth::Pubkey(trust), method) => {
            let mut chain = Vec::new();
            let mut raw = None;
            for p in inner {
                let Payload::Cert(c) = p else { continue };
                if chain.len() >= MAX_CHAIN {
                    return fail(AuthError::ChainTooLong);
                }
                match c.encoding {
                    CertEncoding::X509Signature => chain.push(c.data.clone()),
                    CertEncoding::RawPublicKey if raw.is_none() => raw = Some(&c.data),
                    _ => return fail(AuthError::UnsupportedCertEncoding),
                }
            }
            let (key, subject, ca) = if !chain.is_empty() {
                let pc = trust
                    .verify(&chain, id, std::time::SystemTime::now())
                    .map_err(FailReason::AuthenticationFailed)?;
                (pc.key, Some(pc.subject), Some(pc.ca))
            } else if let Some(spki) = raw {
                let k = PublicKey::from_spki(spki).map_err(FailReason::AuthenticationFailed)?;
                if !trust.raw_keys().contains(&k) {
                    return fail(AuthError::UnknownRawKey);
                }
                (k, None, None)
            } else {
                // No CERT: a configured raw public key must make the signature.
                let keys = trust.raw_keys();
                if keys.is_empty() {
                    return fail(AuthError::NoCertificate);
                }
                let mut last = AuthError::BadSignature;
                let hit = keys.iter().find(|k| {
                    match k.verify_auth(method, &auth.data, &SIGNATURE_HASHES, &octets) {
                        Ok(()) => true,
                        Err(e) => {
                            last = e;
                            false
                        }
                    }
                });
                let Some(k) = hit else {
                    // A well-formed signature no trusted key made: the peer holds a key
                    // we do not know (other errors say what is wrong with the AUTH).
                    return fail(if last == AuthError::BadSignature {
                        AuthError::NoRawKeySigned
                    } else {
                        last
                    });
                };
                (k.clone(), None, None)
            };
            key.verify_auth(method, &auth.data, &SIGNATURE_HASHES, &octets)
                .map_err(FailReason::AuthenticationFailed)?;
            Ok((
                AuthVerified(()),
                PeerAuthInfo {
                    method: "pubkey",
                    key: Some(key.kind.to_string()),
                    subject,
                    ca,
                    eap_identity: None,
                    tls_subject: None,
                },
            ))
        }
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

pub(in crate::ike::sa) fn nat_notifies(
    spi_i: u64,
    spi_r: u64,
    local: SocketAddr,
    remote: SocketAddr,
) -> [Payload; 2] {
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

/// NAT detection on a received IKE_SA_INIT message whose header carries `spi_i`, `spi_r`,
/// received on `local` from `remote`. No NAT_DETECTION notifies: no NAT assumed.
pub(in crate::ike::sa) fn detect_nat(
    msg: &Message,
    local: SocketAddr,
    remote: SocketAddr,
) -> NatStatus {
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
