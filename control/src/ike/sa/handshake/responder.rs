//! The responder's IKE_SA_INIT and IKE_AUTH: states `AwaitInit` and `AwaitAuth`.

use crate::ike::sa::channel::Channel;
use crate::ike::sa::core::{Core, detect_nat, verify_peer};
use crate::ike::sa::ctx::Ctx;
use crate::ike::sa::established::Established;
use crate::ike::sa::exchange::mobike_initiator::announce;
use crate::ike::sa::handshake::{init_extension_notifies, our_nat_notifies};
use crate::ike::sa::timer::Timer;
use crate::ike::sa::{
    AuthVerified, ChildSa, Event, FailReason, Firsts, NONCE_RANGE, Received, State, Transmit,
    child_mode, first_error_notify, has_notify, is_later_fragment, notify, pick_child,
};
use std::net::IpAddr;
use std::time::Instant;

use crate::ike::auth::eap::{EapServer, ServerStep};
use crate::ike::auth::{AuthError, PeerAuthInfo, RemoteAuth};
use crate::ike::config::Mode;
use crate::ike::crypto::{CryptoError, KeyExchange};
use crate::ike::fragment::{HALF_OPEN_LIMITS, Reassembler};
use crate::ike::proposal::{
    IkeChoice, esp_response_payload, ike_response_payload, select_esp, select_ike,
};
use crate::wire::{
    CfgAttribute, CfgAttributeType, CfgType, CpPayload, ExchangeType, Flags, Header, IdPayload,
    KePayload, Message, NotifyPayload, NotifyType, Payload, TsPayload,
};
use std::sync::Arc;
use zeroize::Zeroizing;

/// Responder: waiting for an IKE_SA_INIT request.
pub(in crate::ike::sa) struct AwaitInit;

/// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH.
pub(in crate::ike::sa) struct AwaitAuth {
    pub(in crate::ike::sa) core: Core,
}

impl AwaitInit {
    pub(in crate::ike::sa) fn handle(self, ctx: &mut Ctx, r: Received<'_>) -> State {
        let (now, (local, remote), bytes, msg) = r.parts();
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
        ctx.paths.set_addresses(local, remote);
        let f = Firsts::of(&msg.payloads);
        let (Some(sa), Some(ke), Some(ni)) = (f.sa, f.ke, f.nonce) else {
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

    pub(in crate::ike::sa) fn accept(
        ctx: &mut Ctx,
        now: Instant,
        (msg, bytes): (&Message, &[u8]),
        number: u8,
        choice: IkeChoice,
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
        let (local, remote) = ctx.paths.pair();
        payloads.extend(our_nat_notifies(ctx, spi_i, spi_r, local, remote));
        payloads.extend(Core::certreq(&ctx.cfg));
        payloads.extend(init_extension_notifies(&ctx.cfg));
        let response = Message {
            header: Header::ike_sa_init(spi_i, spi_r, Flags::RESPONSE),
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
        let mut nat = detect_nat(msg, local, remote);
        nat.local_behind_nat |= ctx.cfg.force_encap;
        ctx.paths.set_nat(nat);
        core.negotiate_extensions(&ctx.cfg, msg, remote);
        // Half-open, the SA holds little: the request and response (the request no longer
        // than the daemon accepts, `daemon::ike_thread::MAX_MESSAGE`) and at most a small IKE_AUTH
        // being reassembled; the full limits apply once the peer is authenticated.
        core.reasm = Reassembler::new(HALF_OPEN_LIMITS);
        ctx.send(response);
        ctx.timers
            .set(Timer::HalfOpen, now + ctx.cfg.retransmit.give_up);
        Ok(State::AwaitAuth(Box::new(AwaitAuth { core })))
    }
}

/// The responder's outcome of the child SA part of IKE_AUTH.
pub(in crate::ike::sa) struct ChildOutcome {
    pub(in crate::ike::sa) payloads: Vec<Payload>,
    pub(in crate::ike::sa) result: Result<ChildSa, NotifyType>,
    /// The virtual IPs leased and DNS servers sent (empty when the child failed).
    pub(in crate::ike::sa) vips: Vec<IpAddr>,
    pub(in crate::ike::sa) dns: Vec<IpAddr>,
}

impl AwaitAuth {
    pub(in crate::ike::sa) fn handle(mut self: Box<Self>, ctx: &mut Ctx, r: Received<'_>) -> State {
        let (now, (local, remote), bytes, msg) = r.parts();
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
        ctx.paths.set_addresses(local, remote);
        let mut core = self.core;
        core.record_certreq(&inner);
        let f = Firsts::of(&inner);
        let Some(idi) = f.idi else {
            return refuse(
                ctx,
                &mut core,
                1,
                NotifyType::InvalidSyntax,
                FailReason::InvalidSyntax,
            );
        };
        let idi = idi.clone();
        let Some(auth) = f.auth else {
            // No AUTH: the initiator wants EAP (RFC 7296 section 2.16).
            return AwaitEap::start(ctx, now, core, idi, inner);
        };
        let (proof, peer_auth) = match verify_peer(&core, &ctx.cfg, &idi, auth, &inner) {
            Ok(p) => p,
            Err(reason) => {
                return refuse(ctx, &mut core, 1, NotifyType::AuthenticationFailed, reason);
            }
        };
        let mut out = vec![Payload::IdR(ctx.cfg.local_id.clone())];
        match core.our_auth(&ctx.cfg, &ctx.cfg.local_id) {
            Ok(p) => out.extend(p),
            Err(reason) => {
                return refuse(ctx, &mut core, 1, NotifyType::AuthenticationFailed, reason);
            }
        }
        Self::complete(ctx, now, core, (&idi, &inner, proof, peer_auth), out, 1)
    }

    /// The initiator is authenticated: the rest of the last IKE_AUTH response (`out` holds
    /// our IDr and AUTH, or our AUTH from the MSK) from its first request `inner`: the
    /// child SA, extensions; sent as Message ID `mid`, and established.
    pub(in crate::ike::sa) fn complete(
        ctx: &mut Ctx,
        now: Instant,
        mut core: Core,
        (idi, inner, proof, peer_auth): (&IdPayload, &[Payload], AuthVerified, PeerAuthInfo),
        mut out: Vec<Payload>,
        mid: u32,
    ) -> State {
        let spis = Some((core.spi_i, core.spi_r));
        // The extension is in use when the peer offered it and ours is on (PROTOCOL 2).
        let mif = ctx.mif_take_auth(inner);
        let child = Self::negotiate_child(ctx, &core, &proof, inner);
        out.extend(child.payloads);
        if ctx.cfg.mobike {
            out.push(notify(NotifyType::MobikeSupported));
            // Our additional addresses, if known and the peer does MOBIKE (section 3.4).
            if has_notify(inner, NotifyType::MobikeSupported) {
                out.extend(announce(ctx).unwrap_or_default());
            }
        }
        // RFC 7791 section 3: in the IKE_AUTH response too, whatever the request carried.
        if ctx.cfg.clone_ike_sa {
            out.push(notify(NotifyType::CloneIkeSaSupported));
        }
        if mif {
            let name = child.result.as_ref().ok().map(|c| c.name.clone());
            out.extend(ctx.mif_auth_payloads(name.as_deref()));
        }
        let resp = match core.seal(ExchangeType::IkeAuth, true, mid, &out) {
            Ok(b) => b,
            Err(e) => return ctx.fail(FailReason::Crypto(e), spis, None),
        };
        ctx.send(resp.clone());
        ctx.timers.stop(Timer::HalfOpen);
        let peer_mobike = has_notify(inner, NotifyType::MobikeSupported);
        ctx.paths
            .note_mobike(ctx.cfg.mobike && peer_mobike, inner, &mut ctx.stats);
        ctx.peer_clone = has_notify(inner, NotifyType::CloneIkeSaSupported);
        let mut info = core.info(ctx.paths.current(), idi.clone(), peer_mobike);
        info.peer_clone = ctx.peer_clone;
        info.local_auth = ctx.cfg.local_auth.name();
        info.remote_auth = Box::new(peer_auth);
        info.vips = child.vips;
        info.dns = child.dns;
        ctx.events.push_back(Event::IkeSaEstablished(info.clone()));
        match child.result {
            Ok(c) => ctx.establish_child(now, c, inner),
            Err(reason) => ctx.events.push_back(Event::ChildSaFailed {
                name: ctx.cfg.child.name.clone(),
                reason,
            }),
        }
        core.reasm = Reassembler::default();
        let ch = Channel::after_auth(ctx, core, (mid + 1, 0), Some((mid, resp)));
        Established::start(ctx, now, ch, info)
    }

    pub(in crate::ike::sa) fn negotiate_child(
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
        let f = Firsts::of(inner);
        let cp = inner.iter().find_map(|p| match p {
            Payload::Cp(c) if c.cfg_type == CfgType::Request => Some(c),
            _ => None,
        });
        let (Some(sa), Some(tsi), Some(tsr)) = (f.sa, f.tsi, f.tsr) else {
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
            result: Ok(ctx.child_sa(
                child.name.clone(),
                (spi_in, spi_out),
                (keymat_in, keymat_out),
                choice,
                child_mode(transport),
                (ts_r, ts_i),
            )),
            vips,
            dns,
        }
    }
}

/// Answers IKE_AUTH request `mid` with one error notify and fails with `reason`; a
/// retransmission of the request gets the same answer.
fn refuse(ctx: &mut Ctx, core: &mut Core, mid: u32, t: NotifyType, reason: FailReason) -> State {
    refuse_with(ctx, core, mid, vec![notify(t)], reason)
}

fn refuse_with(
    ctx: &mut Ctx,
    core: &mut Core,
    mid: u32,
    payloads: Vec<Payload>,
    reason: FailReason,
) -> State {
    let spis = Some((core.spi_i, core.spi_r));
    let resp = core.seal(ExchangeType::IkeAuth, true, mid, &payloads).ok();
    if let Some(b) = &resp {
        ctx.send(b.clone());
    }
    ctx.fail(reason, spis, resp.map(|b| (mid, b)))
}

/// Responder: an EAP exchange inside IKE_AUTH (RFC 7296 section 2.16), we the
/// authenticator (`remote.auth = eap-*`). Bounded: at most `eap::MAX_ROUNDS` round trips
/// (`eap_tls::MAX_TLS_ROUNDS` with EAP-TLS),
/// all within the half-open timer that runs from IKE_SA_INIT.
pub(in crate::ike::sa) struct AwaitEap {
    pub(in crate::ike::sa) core: Core,
    /// The initiator's identity and its first IKE_AUTH request (SA, TS, CP, notifies:
    /// the child SA is negotiated from it once authenticated).
    idi: IdPayload,
    first: Vec<Payload>,
    server: EapServer,
    /// The Message ID of the request we expect next.
    mid: u32,
    /// Our last response, resent when its request is retransmitted.
    last: Vec<u8>,
    /// After EAP-Success: the MSK its AUTH is checked with, and the EAP identity.
    done: Option<(Zeroizing<Vec<u8>>, Vec<u8>)>,
}

impl AwaitEap {
    /// The first IKE_AUTH request had no AUTH: answer with our IDr, our AUTH (CERT) and
    /// the first EAP request.
    fn start(
        ctx: &mut Ctx,
        now: Instant,
        mut core: Core,
        idi: IdPayload,
        inner: Vec<Payload>,
    ) -> State {
        let _ = now;
        let RemoteAuth::Eap {
            method,
            users,
            ask_identity,
            tls,
            tls13_indication,
        } = &ctx.cfg.remote_auth
        else {
            let reason = FailReason::AuthenticationFailed(AuthError::EapNotConfigured);
            return refuse(ctx, &mut core, 1, NotifyType::AuthenticationFailed, reason);
        };
        if ctx
            .cfg
            .remote_id
            .as_ref()
            .is_some_and(|want| !crate::ike::auth::cert::id_matches(want, &idi))
        {
            let reason = FailReason::AuthenticationFailed(AuthError::WrongId);
            return refuse(ctx, &mut core, 1, NotifyType::AuthenticationFailed, reason);
        }
        let (method, ask) = (*method, *ask_identity);
        let started = match tls {
            Some(creds) => {
                EapServer::start_tls(Arc::clone(creds), ask, &idi, *tls13_indication, &ctx.rng)
            }
            None => EapServer::start(method, Arc::clone(users), ask, &idi.data, &ctx.rng),
        };
        let (server, first_eap) = match started {
            Ok(x) => x,
            Err(e) => {
                let reason = FailReason::AuthenticationFailed(AuthError::Eap(e));
                return refuse(ctx, &mut core, 1, NotifyType::AuthenticationFailed, reason);
            }
        };
        let mut out = vec![Payload::IdR(ctx.cfg.local_id.clone())];
        // Our AUTH always: EAP-only (RFC 5998) is for a gateway whose own local auth is
        // EAP, and strongSwan's responder sends its AUTH too when its local auth is pubkey
        // (its client's EAP_ONLY_AUTHENTICATION notwithstanding, which it always sends).
        match core.our_auth(&ctx.cfg, &ctx.cfg.local_id) {
            Ok(p) => out.extend(p),
            Err(reason) => {
                return refuse(ctx, &mut core, 1, NotifyType::AuthenticationFailed, reason);
            }
        }
        out.push(Payload::Eap(ctx.eap_out(1, first_eap)));
        let spis = Some((core.spi_i, core.spi_r));
        let resp = match core.seal(ExchangeType::IkeAuth, true, 1, &out) {
            Ok(b) => b,
            Err(e) => return ctx.fail(FailReason::Crypto(e), spis, None),
        };
        ctx.send(resp.clone());
        State::AwaitEap(Box::new(AwaitEap {
            core,
            idi,
            first: inner,
            server,
            mid: 2,
            last: resp,
            done: None,
        }))
    }

    pub(in crate::ike::sa) fn handle(mut self: Box<Self>, ctx: &mut Ctx, r: Received<'_>) -> State {
        let (now, (local, remote), bytes, msg) = r.parts();
        let h = &msg.header;
        let ours = h.spi_i == self.core.spi_i
            && h.spi_r == self.core.spi_r
            && h.exchange_type == ExchangeType::IkeAuth
            && !h.flags.response()
            && h.flags.initiator();
        if ours && h.message_id == self.mid - 1 && !is_later_fragment(msg) {
            // Our last response was lost: send it again (RFC 7296 section 2.1).
            ctx.stats.answered_from_cache += 1;
            ctx.transmits.push_back(Transmit {
                local,
                remote,
                bytes: self.last.clone(),
            });
            return State::AwaitEap(self);
        }
        let spis = Some((self.core.spi_i, self.core.spi_r));
        let gives_up = h.spi_i == self.core.spi_i
            && h.spi_r == self.core.spi_r
            && h.exchange_type == ExchangeType::Informational
            && !h.flags.response()
            && h.flags.initiator()
            && h.message_id == self.mid;
        if gives_up {
            // The initiator ends the EAP exchange with an error notify (strongSwan's
            // client does so after our TLS alert, rather than acknowledge it): answered
            // with an empty INFORMATIONAL response, and we fail with our own refusal's
            // reason if there is one.
            if let Ok(Some(p)) = self.core.open(bytes, msg, &mut ctx.stats) {
                if let Some(t) = first_error_notify(&p) {
                    let mid = self.mid;
                    let resp = self
                        .core
                        .seal(ExchangeType::Informational, true, mid, &[])
                        .ok();
                    if let Some(b) = &resp {
                        ctx.send(b.clone());
                    }
                    let reason = match self.server.refusal() {
                        Some(e) => FailReason::AuthenticationFailed(AuthError::Eap(e)),
                        None => FailReason::PeerNotify(t),
                    };
                    return ctx.fail(reason, spis, resp.map(|b| (mid, b)));
                }
            }
            ctx.stats.unexpected += 1;
            return State::AwaitEap(self);
        }
        if !ours || h.message_id != self.mid {
            ctx.stats.unexpected += 1;
            return State::AwaitEap(self);
        }
        let inner = match self.core.open(bytes, msg, &mut ctx.stats) {
            Ok(Some(p)) => p,
            Ok(None) => return State::AwaitEap(self),
            Err(CryptoError::Inner(_)) => {
                ctx.stats.malformed += 1;
                let mid = self.mid;
                return refuse(
                    ctx,
                    &mut self.core,
                    mid,
                    NotifyType::InvalidSyntax,
                    FailReason::InvalidSyntax,
                );
            }
            Err(_) => {
                ctx.stats.integrity += 1;
                return State::AwaitEap(self);
            }
        };
        ctx.paths.set_addresses(local, remote);
        let mid = self.mid;
        let auth_failed = |e| FailReason::AuthenticationFailed(e);
        if let Some((msk, identity)) = &self.done {
            // After EAP-Success: the initiator's AUTH from the MSK.
            let auth = inner.iter().find_map(|p| match p {
                Payload::Auth(a) => Some(a),
                _ => None,
            });
            let Some(auth) = auth else {
                let reason = auth_failed(AuthError::MalformedAuth);
                return refuse(
                    ctx,
                    &mut self.core,
                    mid,
                    NotifyType::AuthenticationFailed,
                    reason,
                );
            };
            let proof = match self.core.verify_msk_auth(Some(msk), &self.idi, auth) {
                Ok(p) => p,
                Err(reason) => {
                    return refuse(
                        ctx,
                        &mut self.core,
                        mid,
                        NotifyType::AuthenticationFailed,
                        reason,
                    );
                }
            };
            let our = self.core.msk_auth(Some(msk), &ctx.cfg.local_id);
            let info = PeerAuthInfo {
                method: ctx.cfg.remote_auth.name(),
                eap_identity: Some(crate::log::printable(&String::from_utf8_lossy(identity))),
                tls_subject: self
                    .server
                    .tls_client()
                    .map(|(s, v)| (crate::log::printable(&s), v)),
                ..PeerAuthInfo::default()
            };
            let st = *self;
            return AwaitAuth::complete(
                ctx,
                now,
                st.core,
                (&st.idi, &st.first, proof, info),
                vec![our],
                mid,
            );
        }
        let packet = inner.iter().find_map(|p| match p {
            Payload::Eap(b) => Some(b.as_slice()),
            _ => None,
        });
        let Some(packet) = packet else {
            let reason = auth_failed(AuthError::EapMissing);
            return refuse(
                ctx,
                &mut self.core,
                mid,
                NotifyType::AuthenticationFailed,
                reason,
            );
        };
        let out = match self.server.process(packet, &ctx.rng) {
            Ok(ServerStep::Request(r)) => Payload::Eap(ctx.eap_out(mid, r)),
            Ok(ServerStep::Success {
                packet,
                msk,
                identity,
            }) => {
                self.done = Some((msk, identity));
                Payload::Eap(packet)
            }
            Err(e) => {
                let failure = Payload::Eap(self.server.failure());
                let payloads = vec![failure, notify(NotifyType::AuthenticationFailed)];
                return refuse_with(
                    ctx,
                    &mut self.core,
                    mid,
                    payloads,
                    auth_failed(AuthError::Eap(e)),
                );
            }
        };
        let resp = match self.core.seal(ExchangeType::IkeAuth, true, mid, &[out]) {
            Ok(b) => b,
            Err(e) => return ctx.fail(FailReason::Crypto(e), spis, None),
        };
        ctx.send(resp.clone());
        self.last = resp;
        self.mid += 1;
        State::AwaitEap(self)
    }
}

/// Our CFG_REPLY with virtual IPs and DNS servers. An IPv6 address goes with prefix
/// length 128 (RFC 7296 section 3.15.1: 17 octets).
pub(in crate::ike::sa) fn cp_reply(vips: &[IpAddr], dns: &[IpAddr]) -> Payload {
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
