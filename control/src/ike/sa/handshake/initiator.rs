//! The initiator's IKE_SA_INIT and IKE_AUTH: states `InitSent` and `AuthSent`.

use crate::ike::sa::channel::Channel;
use crate::ike::sa::core::{Core, detect_nat, verify_peer};
use crate::ike::sa::ctx::Ctx;
use crate::ike::sa::established::Established;
use crate::ike::sa::exchange::mobike_initiator::announce;
use crate::ike::sa::handshake::{init_extension_notifies, our_nat_notifies};
use crate::ike::sa::{
    AuthVerified, Event, FailReason, Firsts, NONCE_RANGE, Received, State, first_error_notify,
    has_notify, notify,
};
use std::net::IpAddr;
use std::time::Instant;

use crate::ike::auth::eap::{EapPeer, PeerStep};
use crate::ike::auth::{AuthError, LocalAuth, PeerAuthInfo};
use crate::ike::config::Mode;
use crate::ike::crypto::{CryptoError, KeyExchange};
use crate::ike::proposal::{
    check_esp_response, check_ike_response, esp_sa_payload, ike_sa_payload, is_subset,
};
use crate::wire::{
    CfgAttribute, CfgAttributeType, CfgType, CpPayload, DeletePayload, DhGroup, ExchangeType,
    Flags, Header, IdPayload, KePayload, Message, NotifyPayload, NotifyType, Payload, TsPayload,
};
use zeroize::Zeroizing;

/// How many COOKIE retries an initiator makes.
const MAX_COOKIE_RETRIES: u8 = 2;

/// Initiator: IKE_SA_INIT request sent, waiting for the response.
pub(in crate::ike::sa) struct InitSent {
    pub(in crate::ike::sa) spi_i: u64,
    pub(in crate::ike::sa) ni: Vec<u8>,
    pub(in crate::ike::sa) ke: KeyExchange,
    pub(in crate::ike::sa) request: Vec<u8>,
    pub(in crate::ike::sa) ke_retried: bool,
    pub(in crate::ike::sa) cookie: Option<Vec<u8>>,
    pub(in crate::ike::sa) cookie_retries: u8,
}

/// Initiator: IKE_AUTH request sent, waiting for the response.
pub(in crate::ike::sa) struct AuthSent {
    pub(in crate::ike::sa) core: Core,
    pub(in crate::ike::sa) spi_in: u32,
    pub(in crate::ike::sa) transport: bool,
    /// The Message ID of our outstanding IKE_AUTH request (1, then one more for each
    /// round of EAP).
    pub(in crate::ike::sa) mid: u32,
    /// With `local.auth = eap-*`: where the EAP exchange is.
    pub(in crate::ike::sa) eap: Option<Box<EapClient>>,
}

/// The initiator's EAP exchange inside IKE_AUTH (RFC 7296 section 2.16).
pub(in crate::ike::sa) struct EapClient {
    peer: EapPeer,
    /// The gateway's identity, how it authenticated in the first response and the proof
    /// (`None` with EAP-only, RFC 5998: the AUTH after EAP is the proof then).
    gateway: Option<(IdPayload, PeerAuthInfo, Option<AuthVerified>)>,
    /// After EAP-Success, our AUTH from the MSK is sent; the MSK checks the gateway's.
    msk: Option<Option<Zeroizing<Vec<u8>>>>,
}

impl InitSent {
    /// Builds and sends (or re-sends after INVALID_KE_PAYLOAD / COOKIE) the request.
    pub(in crate::ike::sa) fn send(&mut self, ctx: &mut Ctx, now: Instant) {
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
        let (local, remote) = ctx.paths.pair();
        payloads.extend(our_nat_notifies(ctx, self.spi_i, 0, local, remote));
        payloads.extend(init_extension_notifies(&ctx.cfg));
        let msg = Message {
            header: Header::ike_sa_init(self.spi_i, 0, Flags::INITIATOR),
            payloads,
        };
        self.request = msg.to_bytes();
        ctx.send_request(now, self.request.clone());
    }

    pub(in crate::ike::sa) fn handle(mut self: Box<Self>, ctx: &mut Ctx, r: Received<'_>) -> State {
        let (now, (local, remote), bytes, msg) = r.parts();
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
        let f = Firsts::of(&msg.payloads);
        let (Some(sa), Some(ke), Some(nr)) = (f.sa, f.ke, f.nonce) else {
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
        let mut nat = detect_nat(msg, local, remote);
        core.negotiate_extensions(&ctx.cfg, msg, remote);
        // Forced encapsulation: we pretend to be behind a NAT, as the peer now believes.
        nat.local_behind_nat |= ctx.cfg.force_encap;
        ctx.paths.set_nat(nat);
        ctx.stop_retransmit();
        if let (true, Some(port)) = (nat.any(), ctx.cfg.nat_t_port) {
            if ctx.paths.remote().port() != port {
                ctx.paths.float_to(port);
            }
        }
        AuthSent::start(ctx, now, core)
    }
}

impl AuthSent {
    pub(in crate::ike::sa) fn start(ctx: &mut Ctx, now: Instant, mut core: Core) -> State {
        let spi_in = match ctx.esp_spi() {
            Ok(s) => s,
            Err(r) => return ctx.fail(r, Some((core.spi_i, core.spi_r)), None),
        };
        let cfg = &ctx.cfg;
        let mut inner = vec![Payload::IdI(cfg.local_id.clone())];
        // A wildcard DN is a pattern, not an identity to ask for (as strongSwan).
        if let Some(r) = cfg.remote_id.as_ref().filter(|r| {
            r.id_type != crate::wire::IdType::DerAsn1Dn
                || !crate::ike::auth::cert::dn_has_wildcards(&r.data)
        }) {
            inner.push(Payload::IdR(r.clone()));
        }
        match core.our_auth(cfg, &cfg.local_id) {
            Ok(p) => inner.extend(p),
            Err(r) => return ctx.fail(r, Some((core.spi_i, core.spi_r)), None),
        }
        let eap = match &cfg.local_auth {
            LocalAuth::Eap {
                method,
                identity,
                secret,
                tls,
            } => {
                // RFC 5998: we accept EAP-only authentication (for a mutual method).
                inner.push(notify(NotifyType::EapOnlyAuthentication));
                let id = identity
                    .clone()
                    .unwrap_or_else(|| cfg.local_id.data.clone());
                let peer = match tls {
                    Some(creds) => match EapPeer::tls(id, creds) {
                        Ok(p) => p,
                        Err(e) => {
                            let r = FailReason::AuthenticationFailed(AuthError::Eap(e));
                            return ctx.fail(r, Some((core.spi_i, core.spi_r)), None);
                        }
                    },
                    None => EapPeer::new(*method, id, secret.clone()),
                };
                Some(Box::new(EapClient {
                    peer,
                    gateway: None,
                    msk: None,
                }))
            }
            _ => None,
        };
        inner.extend(Core::certreq(cfg));
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
            // Our additional addresses, if known (RFC 4555 section 3.4).
            inner.extend(announce(ctx).unwrap_or_default());
        }
        if ctx.cfg.clone_ike_sa {
            inner.push(notify(NotifyType::CloneIkeSaSupported));
        }
        // The multi-interface extension (docs/PROTOCOL.md 2): offered in IKE_AUTH only.
        let first = ctx.cfg.child.name.clone();
        inner.extend(ctx.mif_auth_payloads(Some(&first)));
        #[cfg(test)]
        inner.extend(ctx.test_auth_extra.iter().cloned());
        match core.seal(ExchangeType::IkeAuth, false, 1, &inner) {
            Ok(bytes) => ctx.send_request(now, bytes),
            Err(e) => return ctx.fail(FailReason::Crypto(e), Some((core.spi_i, core.spi_r)), None),
        }
        State::AuthSent(Box::new(AuthSent {
            core,
            spi_in,
            transport,
            mid: 1,
            eap,
        }))
    }

    pub(in crate::ike::sa) fn handle(mut self: Box<Self>, ctx: &mut Ctx, r: Received<'_>) -> State {
        let (now, _, bytes, msg) = r.parts();
        let h = &msg.header;
        let spis = Some((self.core.spi_i, self.core.spi_r));
        let fits = h.spi_i == self.core.spi_i
            && h.spi_r == self.core.spi_r
            && h.exchange_type == ExchangeType::IkeAuth
            && h.flags.response()
            && !h.flags.initiator()
            && h.message_id == self.mid;
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
        if self.eap.is_some() {
            return self.eap_round(ctx, now, inner);
        }
        let f = Firsts::of(&inner);
        let (Some(idr), Some(auth)) = (f.idr, f.auth) else {
            let reason = first_error_notify(&inner)
                .map_or(FailReason::InvalidSyntax, FailReason::PeerNotify);
            return ctx.fail(reason, spis, None);
        };
        let idr = idr.clone();
        let st = *self;
        let mut core = st.core;
        let (proof, peer_auth) = match verify_peer(&core, &ctx.cfg, &idr, auth, &inner) {
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
        let rest = (st.spi_in, st.transport, 2);
        Self::finish(ctx, now, core, rest, &inner, (&idr, proof, peer_auth))
    }

    /// One IKE_AUTH response of an EAP exchange: the gateway's identity and AUTH (first
    /// response), an EAP request (answered in the next IKE_AUTH request), EAP-Success
    /// (answered with our AUTH from the MSK), or the last response with the gateway's
    /// AUTH from the MSK and the child SA.
    fn eap_round(mut self: Box<Self>, ctx: &mut Ctx, now: Instant, inner: Vec<Payload>) -> State {
        let spis = Some((self.core.spi_i, self.core.spi_r));
        let fail =
            |ctx: &mut Ctx, e: AuthError| ctx.fail(FailReason::AuthenticationFailed(e), spis, None);
        let eap_payload = inner.iter().find_map(|p| match p {
            Payload::Eap(b) => Some(b.as_slice()),
            _ => None,
        });
        let f = Firsts::of(&inner);
        let Some(eap) = self.eap.as_mut() else {
            return State::AuthSent(self);
        };
        if eap.gateway.is_none() {
            let Some(idr) = f.idr else {
                let reason = first_error_notify(&inner)
                    .map_or(FailReason::InvalidSyntax, FailReason::PeerNotify);
                return ctx.fail(reason, spis, None);
            };
            match f.auth {
                Some(auth) => match verify_peer(&self.core, &ctx.cfg, idr, auth, &inner) {
                    Ok((proof, info)) => eap.gateway = Some((idr.clone(), info, Some(proof))),
                    Err(reason) => return ctx.fail(reason, spis, None),
                },
                None => {
                    // EAP-only (RFC 5998): only for a method that authenticates the
                    // gateway as well.
                    if let Some(t) = first_error_notify(&inner) {
                        return ctx.fail(FailReason::PeerNotify(t), spis, None);
                    }
                    if ctx
                        .cfg
                        .remote_id
                        .as_ref()
                        .is_some_and(|want| !crate::ike::auth::cert::id_matches(want, idr))
                    {
                        return fail(ctx, AuthError::WrongId);
                    }
                    let method = match &ctx.cfg.local_auth {
                        LocalAuth::Eap { method, .. } => *method,
                        _ => return fail(ctx, AuthError::MethodNotAllowed),
                    };
                    if !method.mutual() {
                        return fail(ctx, AuthError::EapOnlyNotMutual);
                    }
                    let info = PeerAuthInfo {
                        method: method.name(),
                        ..PeerAuthInfo::default()
                    };
                    eap.gateway = Some((idr.clone(), info, None));
                }
            }
            // EAP-TLS: the gateway's TLS certificate must name the identity it just gave
            // (which matched remote.id, if configured).
            eap.peer.set_server_id(idr);
        }
        if let Some(msk) = &eap.msk {
            // The last response: the gateway's AUTH from the MSK, then the child SA.
            let Some(auth) = f.auth else {
                let reason = first_error_notify(&inner)
                    .map_or(FailReason::InvalidSyntax, FailReason::PeerNotify);
                return ctx.fail(reason, spis, None);
            };
            let proof = match self.core.verify_msk_auth(
                msk.as_deref().map(|m| &m[..]),
                &eap.gateway.as_ref().expect("set above").0,
                auth,
            ) {
                Ok(p) => p,
                Err(reason) => return ctx.fail(reason, spis, None),
            };
            let st = *self;
            let eap = st.eap.expect("EAP state");
            let (idr, mut info, first_proof) = eap.gateway.expect("set above");
            info.tls_subject = eap.peer.tls_server();
            if first_proof.is_none() {
                // EAP-only: the TLS certificate is the one the gateway showed.
                info.subject = info.tls_subject.as_ref().map(|t| t.0.clone());
            }
            // With a certificate-authenticated gateway that check is the proof of record;
            // with EAP-only it is the MSK AUTH.
            let proof = first_proof.unwrap_or(proof);
            let rest = (st.spi_in, st.transport, st.mid + 1);
            return Self::finish(ctx, now, st.core, rest, &inner, (&idr, proof, info));
        }
        if let Some(t) = first_error_notify(&inner) {
            return ctx.fail(FailReason::PeerNotify(t), spis, None);
        }
        let Some(packet) = eap_payload else {
            return fail(ctx, AuthError::EapMissing);
        };
        let next = match eap.peer.process(packet, &ctx.rng) {
            Ok(PeerStep::Respond(r)) => vec![Payload::Eap(ctx.eap_out(self.mid, r))],
            Ok(PeerStep::Success(msk)) => {
                let p = self
                    .core
                    .msk_auth(msk.as_deref().map(|m| &m[..]), &ctx.cfg.local_id);
                eap.msk = Some(msk);
                vec![p]
            }
            Err(e) => return fail(ctx, AuthError::Eap(e)),
        };
        ctx.stop_retransmit();
        self.mid += 1;
        match self
            .core
            .seal(ExchangeType::IkeAuth, false, self.mid, &next)
        {
            Ok(bytes) => ctx.send_request(now, bytes),
            Err(e) => return ctx.fail(FailReason::Crypto(e), spis, None),
        }
        State::AuthSent(self)
    }

    /// The peer is authenticated: the rest of the IKE_AUTH response (extensions, virtual
    /// IPs, the child SA), then established with our next Message ID `next_mid`.
    fn finish(
        ctx: &mut Ctx,
        now: Instant,
        mut core: Core,
        (spi_in, transport, next_mid): (u32, bool, u32),
        inner: &[Payload],
        (idr, proof, peer_auth): (&IdPayload, AuthVerified, PeerAuthInfo),
    ) -> State {
        let spis = Some((core.spi_i, core.spi_r));
        let inner = inner.to_vec();
        ctx.stop_retransmit();
        let peer_mobike = has_notify(&inner, NotifyType::MobikeSupported);
        ctx.paths
            .note_mobike(ctx.cfg.mobike && peer_mobike, &inner, &mut ctx.stats);
        ctx.peer_clone = has_notify(&inner, NotifyType::CloneIkeSaSupported);
        ctx.mif_take_auth(&inner);
        let mut info = core.info(ctx.paths.current(), idr.clone(), peer_mobike);
        if let LocalAuth::Eap { identity, .. } = &ctx.cfg.local_auth {
            let id = identity.as_ref().unwrap_or(&ctx.cfg.local_id.data);
            info.local_eap_id = Some(crate::log::printable(&String::from_utf8_lossy(id)));
        }
        info.peer_clone = ctx.peer_clone;
        info.local_auth = ctx.cfg.local_auth.name();
        info.remote_auth = Box::new(peer_auth);
        let cp = inner.iter().find_map(|p| match p {
            Payload::Cp(c) if c.cfg_type == CfgType::Reply => Some(c),
            _ => None,
        });
        let (v4, v6) = (ctx.cfg.request_vip, ctx.cfg.request_vip6);
        (info.vips, info.dns) = cp.map(|c| cp_reply_values(c, v4, v6)).unwrap_or_default();
        let vips_missing = (v4 || v6) && info.vips.is_empty();
        ctx.events.push_back(Event::IkeSaEstablished(info.clone()));
        let established = |ctx: &mut Ctx, core| {
            let ch = Channel::after_auth(ctx, core, (0, next_mid), None);
            Established::start(ctx, now, ch, info)
        };
        let name = ctx.cfg.child.name.clone();
        let child_error = first_error_notify(&inner);
        let f = Firsts::of(&inner);
        let (Some(sa), Some(tsi), Some(tsr)) = (f.sa, f.tsi, f.tsr) else {
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
            if let Ok(b) = core.seal(ExchangeType::Informational, false, next_mid, &n) {
                ctx.send(b);
            }
            return ctx.fail(FailReason::NoVirtualIp, spis, None);
        }
        let mode = if transport && has_notify(&inner, NotifyType::UseTransportMode) {
            Mode::Transport
        } else {
            Mode::Tunnel
        };
        let (keymat_in, keymat_out) = match core.child_keys(&proof, choice.cipher) {
            Ok(k) => k,
            Err(e) => return ctx.fail(FailReason::Crypto(e), spis, None),
        };
        let child = ctx.child_sa(
            name,
            (spi_in, spi_out),
            (keymat_in, keymat_out),
            choice,
            mode,
            (tsi.selectors.clone(), tsr.selectors.clone()),
        );
        ctx.establish_child(now, child, &inner);
        established(ctx, core)
    }
}

/// Our CFG_REQUEST: an address and DNS servers of each family asked for.
pub(in crate::ike::sa) fn cp_request(v4: bool, v6: bool) -> Option<Payload> {
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
pub(in crate::ike::sa) fn cp_reply_values(
    cp: &CpPayload,
    v4: bool,
    v6: bool,
) -> (Vec<IpAddr>, Vec<IpAddr>) {
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
