//! The exchanges of an established IKE SA (RFC 7296 sections 1.3, 1.4, 2.8, 2.18):
//! CREATE_CHILD_SA (child SA rekey with optional PFS, IKE SA rekey, the collision rules of
//! sections 2.8.1 and 2.8.2) and INFORMATIONAL (Delete of child and IKE SAs, liveness
//! checks), with the lifetimes that start rekeys and deletes.
//!
//! Message IDs: a window of one per direction. Our own requests are queued as
//! [`Action`]s and sent one at a time ([`Established::kick`]); requests from the peer are
//! answered whatever we have outstanding. Every request we send has its retransmission
//! schedule in `Ctx::retransmit`; a give-up fails the IKE SA (`FailReason::Timeout`).
//!
//! Make-before-break: a rekeyed child SA stays (and keeps accepting inbound packets) until
//! the Delete exchange for it completes; only then is [`Event::ChildSaDeleted`] raised.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::timer::Timer;
use super::{
    ChildSa, Core, CryptoError, Ctx, Dead, Event, FailReason, IkeSaInfo, NONCE_RANGE,
    SeqLimitAction, State, first_error_notify, has_notify, is_later_fragment, notify, pick_child,
    vip_selectors,
};
use mifsec_dataplane::aead::Cipher;

use crate::ike::config::Mode;
use crate::ike::crypto::{ChildKeys, KeyExchange, Secret};
use crate::ike::proposal::{
    EspRefusal, check_esp_response_pfs, check_ike_rekey_response, esp_response_payload_pfs,
    esp_sa_payload_pfs, ike_rekey_response_payload, ike_rekey_sa_payload, is_subset, narrow,
    select_esp_pfs, select_ike_rekey,
};
use crate::wire::{
    DeletePayload, DhGroup, ExchangeType, KePayload, Message, NotifyPayload, NotifyType, Payload,
    ProtocolId, SaPayload, TrafficSelector, TsPayload,
};

/// How long after a TEMPORARY_FAILURE answer a rekey is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How many deleted old IKE SAs are kept to answer retransmitted requests.
const KEEP_RETIRED: usize = 2;
/// The most child SAs (rekeyed ones awaiting their Delete included) an IKE SA tracks
/// before it refuses new-child requests from the peer (NO_ADDITIONAL_SAS).
pub const MAX_CHILDREN: usize = 64;
/// The most child SAs an IKE SA tracks at all: [`MAX_CHILDREN`] and as many again for
/// replaced ones awaiting their Delete. A peer's rekey beyond it gets TEMPORARY_FAILURE
/// (it may retry once it has deleted the SAs it replaced), so a peer that rekeys and never
/// deletes cannot make the list, or the SAs installed in the engine, grow without bound.
pub const MAX_TRACKED_CHILDREN: usize = 2 * MAX_CHILDREN;

/// Both roles: authenticated. The exchanges after IKE_AUTH live in `established.rs`.
pub(in crate::ike::sa) struct Established {
    /// The current IKE SA.
    pub(in crate::ike::sa) ch: Channel,
    /// Old IKE SAs replaced by a rekey (or made redundant by a collision): still answering
    /// their Delete exchange, or already deleted and kept for retransmitted requests.
    pub(in crate::ike::sa) retiring: Vec<Channel>,
    /// What the caller was told about the IKE SA, kept up to date across rekeys.
    pub(in crate::ike::sa) info: IkeSaInfo,
    /// Our outstanding request (a window of one).
    pub(in crate::ike::sa) pending: Option<PendingRequest>,
    /// Requests to send once nothing is outstanding.
    pub(in crate::ike::sa) todo: VecDeque<Action>,
    /// The last sign of life from the peer: an authenticated IKE message or reported ESP.
    pub(in crate::ike::sa) last_rx: Instant,
    /// A rekey of the IKE SA by the peer, answered while ours was outstanding (RFC 7296
    /// section 2.8.2): the new SA and the lowest nonce of that exchange.
    pub(in crate::ike::sa) peer_ike: Option<(Channel, Vec<u8>)>,
}

/// One IKE SA's keys and message-ID state.
pub(super) struct Channel {
    pub(super) core: Core,
    /// The next request ID we expect from the peer.
    pub(super) peer_next: u32,
    /// The last response we sent, for retransmitted requests.
    pub(super) last_response: Option<(u32, Vec<u8>)>,
    /// The message ID of our next request.
    pub(super) own_next: u32,
}

impl Channel {
    fn spis(&self) -> (u64, u64) {
        (self.core.spi_i, self.core.spi_r)
    }

    fn fresh(core: Core) -> Channel {
        Channel {
            core,
            peer_next: 0,
            last_response: None,
            own_next: 0,
        }
    }
}

/// A request we want to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Action {
    /// Rekey the child SA with this inbound SPI, with a KE in this group if given.
    RekeyChild(u32, Option<DhGroup>),
    /// Rekey the IKE SA, with a KE in this group if given.
    RekeyIke(Option<DhGroup>),
    /// Create the child SA of this configuration (not a rekey), with a KE in this group if
    /// given, else in the first group of its proposals (none: no PFS).
    CreateChild(String, Option<DhGroup>),
    /// Delete the child SAs with these inbound SPIs.
    DeleteChildren(Vec<u32>),
    /// Delete the old IKE SA with these SPIs.
    DeleteIke((u64, u64)),
    /// A liveness check.
    Dpd,
}

/// What our outstanding request was.
enum Pending {
    RekeyChild {
        old_spi_in: u32,
        spi_in: u32,
        ni: Vec<u8>,
        ke: Option<KeyExchange>,
    },
    RekeyIke {
        spi: u64,
        ni: Vec<u8>,
        ke: KeyExchange,
    },
    CreateChild {
        name: String,
        spi_in: u32,
        ni: Vec<u8>,
        ke: Option<KeyExchange>,
        /// The TSi and TSr we proposed.
        ts: (Vec<TrafficSelector>, Vec<TrafficSelector>),
    },
    DeleteChildren(Vec<u32>),
    DeleteIke,
    Dpd,
}

/// Our outstanding request: what, on which IKE SA, with which message ID.
pub(super) struct PendingRequest {
    what: Pending,
    spis: (u64, u64),
    id: u32,
}

/// What to do once the response to a request is out.
enum After {
    Nothing,
    Close,
    Fail(FailReason),
    /// The peer rekeyed the IKE SA: switch to this one.
    Adopt(Channel),
    /// The peer rekeyed the IKE SA while our own rekey is outstanding (collision).
    Defer(Channel, Vec<u8>),
}

/// Which IKE SA a message is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Current,
    Retiring(usize),
    PeerIke,
}

/// The payloads of a CREATE_CHILD_SA request or response for a child SA, new or rekey (the
/// response's nonce is Nr, its KE the responder's).
struct ChildPayloads<'a> {
    sa: &'a SaPayload,
    nonce: &'a [u8],
    ke: Option<&'a KePayload>,
    tsi: &'a TsPayload,
    tsr: &'a TsPayload,
}

impl<'a> ChildPayloads<'a> {
    /// The first of each payload; `None` when one is missing or the nonce's length is out of
    /// range.
    fn parse(p: &'a [Payload]) -> Option<Self> {
        let (mut sa, mut nonce, mut ke, mut tsi, mut tsr) = (None, None, None, None, None);
        for q in p {
            match q {
                Payload::Sa(s) => sa = sa.or(Some(s)),
                Payload::Nonce(n) => nonce = nonce.or(Some(n)),
                Payload::Ke(k) => ke = ke.or(Some(k)),
                Payload::TsI(t) => tsi = tsi.or(Some(t)),
                Payload::TsR(t) => tsr = tsr.or(Some(t)),
                _ => {}
            }
        }
        let (sa, nonce, tsi, tsr) = (sa?, nonce?, tsi?, tsr?);
        NONCE_RANGE.contains(&nonce.len()).then_some(ChildPayloads {
            sa,
            nonce,
            ke,
            tsi,
            tsr,
        })
    }

    /// Initiator: whether the responder's selectors lie within those we sent (`local` ours,
    /// `remote` the peer's).
    fn selectors_within(&self, local: &[TrafficSelector], remote: &[TrafficSelector]) -> bool {
        !self.tsi.selectors.is_empty()
            && !self.tsr.selectors.is_empty()
            && self.tsi.selectors.iter().all(|t| is_subset(t, local))
            && self.tsr.selectors.iter().all(|t| is_subset(t, remote))
    }
}

/// Initiator: the new shared secret of a child exchange with PFS, from our key exchange and
/// the responder's KE payload; `Ok(None)` without PFS. `Err` when the groups do not match
/// what was chosen or the agreement fails.
fn initiator_pfs_secret(
    group: Option<DhGroup>,
    ours: Option<KeyExchange>,
    theirs: Option<&KePayload>,
) -> Result<Option<Secret>, ()> {
    match (group, ours, theirs) {
        (None, None, _) => Ok(None),
        (Some(g), Some(ke), Some(ker)) if ke.group() == g && ker.group == g => {
            ke.agree(&ker.data).map(Some).map_err(|_| ())
        }
        _ => Err(()),
    }
}

/// The group an INVALID_KE_PAYLOAD notify in `p` asks for.
fn invalid_ke_group(p: &[Payload]) -> Option<DhGroup> {
    p.iter().find_map(|q| match q {
        Payload::Notify(n) if n.notify_type == NotifyType::InvalidKePayload => {
            <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(|b| DhGroup::from(u16::from_be_bytes(b)))
        }
        _ => None,
    })
}

/// The answer to an ESP proposal we cannot accept.
fn refusal_notify(r: EspRefusal) -> Vec<Payload> {
    match r {
        EspRefusal::NoProposal => vec![notify(NotifyType::NoProposalChosen)],
        EspRefusal::InvalidKe(g) => vec![Payload::Notify(NotifyPayload::new(
            NotifyType::InvalidKePayload,
            u16::from(g).to_be_bytes().to_vec(),
        ))],
    }
}

/// The responder's keys for a child SA in CREATE_CHILD_SA (new child or rekey): with PFS
/// (a group chosen and the peer's KE), our KE payload and the new shared secret, then the
/// KEYMAT. An error is the notify to answer with.
fn answer_child_keys(
    ctx: &Ctx,
    core: &Core,
    group: Option<DhGroup>,
    ke: Option<&KePayload>,
    ni: &[u8],
    nr: &[u8],
    cipher: Cipher,
) -> Result<(Option<Payload>, ChildKeys), Vec<Payload>> {
    let (ker, gir) = match (group, ke) {
        (Some(g), Some(peer)) => {
            let Ok(ours) = KeyExchange::generate(g, &ctx.rng) else {
                return Err(vec![notify(NotifyType::TemporaryFailure)]);
            };
            let ker = Payload::Ke(KePayload {
                group: g,
                data: ours.public_value().to_vec(),
            });
            match ours.agree(&peer.data) {
                Ok(s) => (Some(ker), Some(s)),
                Err(_) => return Err(vec![notify(NotifyType::InvalidSyntax)]),
            }
        }
        _ => (None, None),
    };
    let keys = ChildKeys::derive(
        core.prf,
        &core.sk_d,
        gir.as_deref().map(|g| &g[..]),
        ni,
        nr,
        cipher,
    )
    .map_err(|_| vec![notify(NotifyType::TemporaryFailure)])?;
    Ok((ker, keys))
}

fn lowest(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.min(b).to_vec()
}

impl Established {
    /// The established state after IKE_AUTH, with its lifetimes started.
    pub(super) fn start(ctx: &mut Ctx, now: Instant, ch: Channel, info: IkeSaInfo) -> State {
        let mut st = Established {
            ch,
            retiring: Vec::new(),
            info,
            pending: None,
            todo: VecDeque::new(),
            last_rx: now,
            peer_ike: None,
        };
        st.start_lifetimes(ctx, now);
        // The initiator creates the further children one by one (CREATE_CHILD_SA).
        if ctx.original_initiator {
            for c in &ctx.cfg.more_children {
                st.todo.push_back(Action::CreateChild(c.name.clone(), None));
            }
        }
        st.kick(ctx, now);
        State::Established(Box::new(st))
    }

    fn start_lifetimes(&mut self, ctx: &mut Ctx, now: Instant) {
        let l = ctx.cfg.lifetimes;
        let rekey_at = l.ike_rekey.map(|t| now + ctx.jittered(t, l.ike_rand));
        ctx.timers.set_or_stop(Timer::IkeRekey, rekey_at);
        ctx.timers
            .set_or_stop(Timer::IkeExpire, l.ike_life.map(|t| now + t));
    }

    fn chan(&mut self, w: Which) -> Option<&mut Channel> {
        match w {
            Which::Current => Some(&mut self.ch),
            Which::Retiring(i) => self.retiring.get_mut(i),
            Which::PeerIke => self.peer_ike.as_mut().map(|(c, _)| c),
        }
    }

    fn which(&self, spis: (u64, u64)) -> Option<Which> {
        if self.ch.spis() == spis {
            return Some(Which::Current);
        }
        if let Some(i) = self.retiring.iter().position(|c| c.spis() == spis) {
            return Some(Which::Retiring(i));
        }
        self.peer_ike
            .as_ref()
            .filter(|(c, _)| c.spis() == spis)
            .map(|_| Which::PeerIke)
    }

    /// Whether a message with these SPIs belongs to this IKE SA (current or old).
    pub(super) fn owns(&self, spis: (u64, u64)) -> bool {
        self.which(spis).is_some()
    }

    pub(super) fn handle(
        mut self: Box<Self>,
        ctx: &mut Ctx,
        now: Instant,
        remote: SocketAddr,
        bytes: &[u8],
        msg: &Message,
    ) -> State {
        let h = &msg.header;
        let Some(w) = self.which((h.spi_i, h.spi_r)) else {
            ctx.stats.unexpected += 1;
            return State::Established(self);
        };
        let Some(ch) = self.chan(w) else {
            ctx.stats.unexpected += 1;
            return State::Established(self);
        };
        if h.flags.initiator() == ch.core.initiator {
            ctx.stats.unexpected += 1;
            return State::Established(self);
        }
        let next = if h.flags.response() {
            self.on_response(ctx, now, w, bytes, msg)
        } else {
            self.on_request(ctx, now, w, remote, bytes, msg)
        };
        match next {
            State::Established(mut st) => {
                st.kick(ctx, now);
                State::Established(st)
            }
            other => other,
        }
    }

    fn on_request(
        mut self: Box<Self>,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        remote: SocketAddr,
        bytes: &[u8],
        msg: &Message,
    ) -> State {
        let h = &msg.header;
        let local = ctx.local;
        let Some(ch) = self.chan(w) else {
            return State::Established(self);
        };
        if h.message_id.wrapping_add(1) == ch.peer_next {
            if let Some((id, cached)) = &ch.last_response {
                if *id == h.message_id {
                    // A retransmitted request in fragments: answer once, on fragment 1.
                    if !is_later_fragment(msg) {
                        ctx.stats.answered_from_cache += 1;
                        ctx.send_to(local, remote, cached.clone());
                    }
                    return State::Established(self);
                }
            }
        }
        if h.message_id != ch.peer_next {
            ctx.stats.unexpected += 1;
            return State::Established(self);
        }
        let inner = match ch.core.open(bytes, msg, &mut ctx.stats) {
            Ok(Some(p)) => Ok(p),
            Ok(None) => return State::Established(self),
            Err(CryptoError::Inner(e)) => Err(e),
            Err(_) => {
                ctx.stats.integrity += 1;
                return State::Established(self);
            }
        };
        self.last_rx = now;
        let mut after = After::Nothing;
        let reply: Vec<Payload> = match (&inner, h.exchange_type) {
            (Err(e), _) => {
                ctx.stats.malformed += 1;
                vec![Payload::Notify(e.notify().unwrap_or(NotifyPayload::new(
                    NotifyType::InvalidSyntax,
                    Vec::new(),
                )))]
            }
            (Ok(p), ExchangeType::Informational) => self.informational(ctx, p, &mut after),
            (Ok(p), ExchangeType::CreateChildSa) if w == Which::Current => {
                self.create_child_sa(ctx, now, p, &mut after)
            }
            (Ok(_), ExchangeType::CreateChildSa) => vec![notify(NotifyType::TemporaryFailure)],
            (Ok(_), _) => vec![notify(NotifyType::NoAdditionalSas)],
        };
        let Some(ch) = self.chan(w) else {
            return State::Established(self);
        };
        let resp = match ch.core.seal(h.exchange_type, true, h.message_id, &reply) {
            Ok(b) => b,
            Err(_) => return State::Established(self),
        };
        ctx.send_to(local, remote, resp.clone());
        ch.peer_next = h.message_id.wrapping_add(1);
        ch.last_response = Some((h.message_id, resp));
        match after {
            After::Nothing => State::Established(self),
            After::Close => self.closed(ctx, now, w),
            After::Fail(reason) => {
                let spis = Some(self.ch.spis());
                let last = self.ch.last_response.take();
                ctx.fail(reason, spis, last)
            }
            After::Adopt(ch) => {
                self.adopt(ctx, now, ch);
                State::Established(self)
            }
            After::Defer(ch, lowest) => {
                self.peer_ike = Some((ch, lowest));
                State::Established(self)
            }
        }
    }

    /// The peer deleted the IKE SA `w`.
    fn closed(mut self: Box<Self>, ctx: &mut Ctx, now: Instant, w: Which) -> State {
        match w {
            Which::Current => {
                if let Some((ch, _)) = self.peer_ike.take() {
                    // The peer won a rekey collision and deleted the old IKE SA: ours
                    // (still outstanding) is moot.
                    if self
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.spis == self.ch.spis())
                    {
                        self.pending = None;
                        ctx.stop_retransmit();
                    }
                    self.adopt(ctx, now, ch);
                    return State::Established(self);
                }
                ctx.stop_retransmit();
                ctx.events.push_back(Event::Closed);
                State::Dead(Dead {
                    spis: Some(self.ch.spis()),
                    last_response: self.ch.last_response.take(),
                })
            }
            Which::Retiring(i) => {
                // Old IKE SA deleted by the peer: keep it to answer retransmissions.
                let spis = self.retiring.get(i).map(Channel::spis);
                self.todo
                    .retain(|a| !matches!(a, Action::DeleteIke(s) if Some(*s) == spis));
                // A request of ours outstanding on it will not be answered: send it again
                // on the current IKE SA.
                if self.pending.as_ref().is_some_and(|p| Some(p.spis) == spis) {
                    ctx.stop_retransmit();
                    if let Some(p) = self.pending.take() {
                        match p.what {
                            Pending::RekeyChild { old_spi_in, .. } => {
                                self.want(Action::RekeyChild(old_spi_in, None));
                            }
                            Pending::DeleteChildren(spis) => {
                                self.want(Action::DeleteChildren(spis));
                            }
                            Pending::CreateChild { name, .. } => {
                                self.want(Action::CreateChild(name, None));
                            }
                            Pending::RekeyIke { .. } | Pending::DeleteIke | Pending::Dpd => {}
                        }
                    }
                }
                State::Established(self)
            }
            Which::PeerIke => {
                self.peer_ike = None;
                State::Established(self)
            }
        }
    }

    /// Makes `ch` the current IKE SA; the previous one retires.
    fn adopt(&mut self, ctx: &mut Ctx, now: Instant, ch: Channel) {
        let old = std::mem::replace(&mut self.ch, ch);
        self.retiring.push(old);
        while self.retiring.len() > KEEP_RETIRED + 1 {
            self.retiring.remove(0);
        }
        let core = &self.ch.core;
        self.info.spi_i = core.spi_i;
        self.info.spi_r = core.spi_r;
        self.info.initiator = core.initiator;
        self.info.cipher = core.cipher;
        self.info.prf = core.prf;
        self.info.group = core.group;
        self.start_lifetimes(ctx, now);
        ctx.events.push_back(Event::IkeSaRekeyed(self.info.clone()));
    }

    fn informational(&mut self, ctx: &mut Ctx, p: &[Payload], after: &mut After) -> Vec<Payload> {
        if p.iter()
            .any(|x| matches!(x, Payload::Delete(d) if d.protocol == ProtocolId::Ike))
        {
            *after = After::Close;
            return Vec::new();
        }
        if has_notify(p, NotifyType::AuthenticationFailed) {
            *after = After::Fail(FailReason::PeerNotify(NotifyType::AuthenticationFailed));
            return Vec::new();
        }
        // Child deletes (RFC 7296 section 1.4.1): answer with the inbound halves.
        let mut spis_out = Vec::new();
        let mut spis_in = Vec::new();
        for d in p.iter().filter_map(|x| match x {
            Payload::Delete(d) if d.protocol == ProtocolId::Esp => Some(d),
            _ => None,
        }) {
            for spi in &d.spis {
                let Ok(b) = <[u8; 4]>::try_from(spi.as_slice()) else {
                    continue;
                };
                let out = u32::from_be_bytes(b);
                if let Some(i) = ctx.children.iter().position(|c| c.spi_out == out) {
                    let c = ctx.children.remove(i);
                    ctx.stop_child_timers(c.spi_in);
                    spis_in.push(c.spi_in);
                    spis_out.push(out);
                }
            }
        }
        if spis_out.is_empty() {
            Vec::new()
        } else {
            ctx.events.push_back(Event::ChildSaDeleted { spis_out });
            vec![Payload::Delete(DeletePayload::esp(&spis_in))]
        }
    }

    fn create_child_sa(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        p: &[Payload],
        after: &mut After,
    ) -> Vec<Payload> {
        let rekey = p.iter().find_map(|x| match x {
            Payload::Notify(n) if n.notify_type == NotifyType::RekeySa => Some(n),
            _ => None,
        });
        if let Some(n) = rekey {
            let spi = <[u8; 4]>::try_from(n.spi.as_slice()).map(u32::from_be_bytes);
            return match (n.protocol, spi) {
                (ProtocolId::Esp, Ok(spi)) => self.answer_child_rekey(ctx, now, p, spi),
                _ => vec![notify(NotifyType::InvalidSyntax)],
            };
        }
        let ike_sa = p.iter().any(|x| {
            matches!(x, Payload::Sa(s) if s.proposals.iter().any(|q| q.protocol == ProtocolId::Ike))
        });
        if ike_sa {
            return self.answer_ike_rekey(ctx, p, after);
        }
        self.answer_new_child(ctx, now, p)
    }

    /// A CREATE_CHILD_SA request for a new child SA (RFC 7296 section 1.3.1): the first
    /// child configuration whose selectors fit, narrowed as in IKE_AUTH. A refusal is an
    /// error notify; the IKE SA and its other children are untouched.
    fn answer_new_child(&mut self, ctx: &mut Ctx, now: Instant, p: &[Payload]) -> Vec<Payload> {
        let Some(ChildPayloads {
            sa,
            nonce: ni,
            ke,
            tsi,
            tsr,
        }) = ChildPayloads::parse(p)
        else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        if ctx.children.len() >= MAX_CHILDREN {
            return vec![notify(NotifyType::NoAdditionalSas)];
        }
        // A gateway narrows the peer's side to the virtual IPs it leased.
        let vips = if ctx.original_initiator {
            &[][..]
        } else {
            &self.info.vips[..]
        };
        let picked = pick_child(&ctx.cfg, vips, &tsi.selectors, &tsr.selectors, |c| {
            select_esp_pfs(sa, &c.proposals, ke.map(|k| k.group))
        });
        let (child, (number, spi_out, choice, group), ts_i, ts_r) = match picked {
            Ok(x) => x,
            Err(None) => return vec![notify(NotifyType::TsUnacceptable)],
            Err(Some(r)) => return refusal_notify(r),
        };
        let (Ok(spi_in), Ok(nr)) = (ctx.esp_spi(), ctx.nonce()) else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        let (ker, keys) =
            match answer_child_keys(ctx, &self.ch.core, group, ke, ni, &nr, choice.cipher) {
                Ok(k) => k,
                Err(refusal) => return refusal,
            };
        let transport =
            child.mode == Mode::Transport && has_notify(p, NotifyType::UseTransportMode);
        let new = ChildSa {
            name: child.name.clone(),
            spi_in,
            spi_out,
            keymat_in: keys.i_to_r,
            keymat_out: keys.r_to_i,
            cipher: choice.cipher,
            esn: choice.esn,
            mode: if transport {
                Mode::Transport
            } else {
                Mode::Tunnel
            },
            local_ts: ts_r.clone(),
            remote_ts: ts_i.clone(),
            udp_encap: self.ch.core.nat.any(),
        };
        let mut reply = Vec::new();
        if transport {
            reply.push(notify(NotifyType::UseTransportMode));
        }
        reply.push(Payload::Sa(esp_response_payload_pfs(
            number, spi_in, choice, group,
        )));
        reply.push(Payload::Nonce(nr));
        reply.extend(ker);
        reply.push(Payload::TsI(TsPayload { selectors: ts_i }));
        reply.push(Payload::TsR(TsPayload { selectors: ts_r }));
        ctx.track_child(now, &new);
        ctx.events.push_back(Event::ChildSaEstablished(new));
        reply
    }

    fn answer_child_rekey(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        p: &[Payload],
        old_out: u32,
    ) -> Vec<Payload> {
        let Some(x) = ctx.children.iter().position(|c| c.spi_out == old_out) else {
            return vec![Payload::Notify(NotifyPayload {
                protocol: ProtocolId::Esp,
                spi: old_out.to_be_bytes().to_vec(),
                notify_type: NotifyType::ChildSaNotFound,
                data: Vec::new(),
            })];
        };
        // Already replaced (our own rekey completed, or the peer's): RFC 7296 2.8.1 lets
        // the late side learn it from TEMPORARY_FAILURE. So does a peer whose replaced
        // children, never deleted, fill the list: before any key exchange is computed.
        if ctx.children[x].rekeyed
            || ctx.children[x].peer_rekey.is_some()
            || ctx.children.len() >= MAX_TRACKED_CHILDREN
        {
            return vec![notify(NotifyType::TemporaryFailure)];
        }
        let Some(ChildPayloads {
            sa,
            nonce: ni,
            ke,
            tsi,
            tsr,
        }) = ChildPayloads::parse(p)
        else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        let proposals = &ctx.cfg.child_named(&ctx.children[x].name).proposals;
        let (number, spi_out, choice, group) =
            match select_esp_pfs(sa, proposals, ke.map(|k| k.group)) {
                Ok(c) => c,
                Err(r) => return refusal_notify(r),
            };
        let old = &ctx.children[x];
        let ts_i = narrow(&tsi.selectors, &old.remote_ts);
        let ts_r = narrow(&tsr.selectors, &old.local_ts);
        if ts_i.is_empty() || ts_r.is_empty() {
            return vec![notify(NotifyType::TsUnacceptable)];
        }
        let (Ok(spi_in), Ok(nr)) = (ctx.esp_spi(), ctx.nonce()) else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        let (ker, keys) =
            match answer_child_keys(ctx, &self.ch.core, group, ke, ni, &nr, choice.cipher) {
                Ok(k) => k,
                Err(refusal) => return refusal,
            };
        let out: Vec<Payload> = ker.into_iter().collect();
        let old = &ctx.children[x];
        let new = ChildSa {
            name: old.name.clone(),
            spi_in,
            spi_out,
            keymat_in: keys.i_to_r,
            keymat_out: keys.r_to_i,
            cipher: choice.cipher,
            esn: choice.esn,
            mode: old.mode,
            local_ts: ts_r.clone(),
            remote_ts: ts_i.clone(),
            udp_encap: self.ch.core.nat.any(),
        };
        let mut reply = Vec::new();
        if old.mode == Mode::Transport {
            reply.push(notify(NotifyType::UseTransportMode));
        }
        reply.push(Payload::Sa(esp_response_payload_pfs(
            number, spi_in, choice, group,
        )));
        reply.push(Payload::Nonce(nr.clone()));
        reply.extend(out);
        reply.push(Payload::TsI(TsPayload { selectors: ts_i }));
        reply.push(Payload::TsR(TsPayload { selectors: ts_r }));
        let old_spi_in = old.spi_in;
        ctx.children[x].peer_rekey = Some((lowest(ni, &nr), spi_in));
        #[cfg(test)]
        ctx.rekey_log.push((lowest(ni, &nr), spi_in));
        ctx.timers.stop(Timer::ChildRekey(old_spi_in));
        ctx.track_child(now, &new);
        ctx.events.push_back(Event::ChildSaRekeyed {
            old_spi_in,
            new,
            initiated: false,
        });
        reply
    }

    fn answer_ike_rekey(
        &mut self,
        ctx: &mut Ctx,
        p: &[Payload],
        after: &mut After,
    ) -> Vec<Payload> {
        let own_ike_rekey = matches!(
            self.pending,
            Some(PendingRequest {
                what: Pending::RekeyIke { .. },
                ..
            })
        );
        if self.peer_ike.is_some() {
            return vec![notify(NotifyType::TemporaryFailure)];
        }
        let (mut sa, mut ni, mut ke) = (None, None, None);
        for q in p {
            match q {
                Payload::Sa(s) => sa = sa.or(Some(s)),
                Payload::Nonce(n) => ni = ni.or(Some(n)),
                Payload::Ke(k) => ke = ke.or(Some(k)),
                _ => {}
            }
        }
        let (Some(sa), Some(ni), Some(ke)) = (sa, ni, ke) else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        if !NONCE_RANGE.contains(&ni.len()) {
            return vec![notify(NotifyType::InvalidSyntax)];
        }
        let Some((number, peer_spi, choice)) = select_ike_rekey(sa, &ctx.cfg.proposals, ke.group)
        else {
            return vec![notify(NotifyType::NoProposalChosen)];
        };
        if choice.group != ke.group {
            return vec![Payload::Notify(NotifyPayload::new(
                NotifyType::InvalidKePayload,
                u16::from(choice.group).to_be_bytes().to_vec(),
            ))];
        }
        let (Ok(spi), Ok(nr)) = (ctx.ike_spi(), ctx.nonce()) else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        let Ok(ours) = KeyExchange::generate(choice.group, &ctx.rng) else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        let public = ours.public_value().to_vec();
        let Ok(gir) = ours.agree(&ke.data) else {
            return vec![notify(NotifyType::InvalidSyntax)];
        };
        // The rekey's initiator is the new IKE SA's initiator (RFC 7296 section 2.18).
        let Ok(core) =
            self.ch
                .core
                .rekeyed(false, (peer_spi, spi), ni.clone(), nr.clone(), &gir, choice)
        else {
            return vec![notify(NotifyType::TemporaryFailure)];
        };
        let ch = Channel::fresh(core);
        *after = if own_ike_rekey {
            After::Defer(ch, lowest(ni, &nr))
        } else {
            After::Adopt(ch)
        };
        vec![
            Payload::Sa(ike_rekey_response_payload(number, choice, spi)),
            Payload::Nonce(nr),
            Payload::Ke(KePayload {
                group: choice.group,
                data: public,
            }),
        ]
    }

    fn on_response(
        mut self: Box<Self>,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        bytes: &[u8],
        msg: &Message,
    ) -> State {
        let h = &msg.header;
        let fits = self
            .pending
            .as_ref()
            .is_some_and(|p| p.spis == (h.spi_i, h.spi_r) && p.id == h.message_id);
        let Some(ch) = self.chan(w).filter(|_| fits) else {
            ctx.stats.unexpected += 1;
            return State::Established(self);
        };
        let inner = match ch.core.open(bytes, msg, &mut ctx.stats) {
            Ok(Some(p)) => p,
            Ok(None) => return State::Established(self),
            Err(CryptoError::Inner(_)) => {
                // Unusable answer: the exchange failed; the SA stays.
                ctx.stats.malformed += 1;
                Vec::new()
            }
            Err(_) => {
                ctx.stats.integrity += 1;
                return State::Established(self);
            }
        };
        ctx.stop_retransmit();
        self.last_rx = now;
        let Some(pending) = self.pending.take() else {
            return State::Established(self);
        };
        match pending.what {
            Pending::Dpd => {}
            Pending::DeleteChildren(spis_in) => {
                let spis_out: Vec<u32> = ctx
                    .remove_children(|c| spis_in.contains(&c.spi_in))
                    .iter()
                    .map(|c| c.spi_out)
                    .collect();
                if !spis_out.is_empty() {
                    ctx.events.push_back(Event::ChildSaDeleted { spis_out });
                }
            }
            Pending::DeleteIke => {}
            Pending::RekeyChild {
                old_spi_in,
                spi_in,
                ni,
                ke,
            } => self.child_rekeyed(ctx, now, w, &inner, (old_spi_in, spi_in), &ni, ke),
            Pending::RekeyIke { spi, ni, ke } => {
                self.ike_rekeyed(ctx, now, w, &inner, spi, &ni, ke);
            }
            Pending::CreateChild {
                name,
                spi_in,
                ni,
                ke,
                ts,
            } => self.child_created(ctx, now, w, &inner, (name, spi_in), &ni, ke, ts),
        }
        State::Established(self)
    }

    /// Our child rekey's response arrived on IKE SA `w` (whose SK_d derives the keys:
    /// the IKE SA may have been rekeyed by the peer meanwhile).
    #[allow(clippy::too_many_arguments)]
    fn child_rekeyed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        p: &[Payload],
        (old_spi_in, spi_in): (u32, u32),
        ni: &[u8],
        ke: Option<KeyExchange>,
    ) {
        let x = ctx.children.iter().position(|c| c.spi_in == old_spi_in);
        let proposals = x
            .map(|x| ctx.cfg.child_named(&ctx.children[x].name).proposals.clone())
            .unwrap_or_else(|| ctx.cfg.child.proposals.clone());
        let retry_later = |ctx: &mut Ctx, at: Instant| {
            if ctx
                .children
                .iter()
                .any(|c| c.spi_in == old_spi_in && !c.rekeyed && c.peer_rekey.is_none())
            {
                ctx.timers.set(Timer::ChildRekey(old_spi_in), at);
            }
        };
        if let Some(t) = first_error_notify(p) {
            match t {
                NotifyType::InvalidKePayload => {
                    let g = invalid_ke_group(p);
                    let ours = proposals
                        .iter()
                        .any(|q| g.is_some_and(|g| q.groups.contains(&g)));
                    let tried = ke.as_ref().map(KeyExchange::group);
                    if ours && g != tried {
                        self.todo.push_back(Action::RekeyChild(old_spi_in, g));
                    }
                }
                NotifyType::TemporaryFailure => retry_later(ctx, now + RETRY_AFTER),
                _ => {}
            }
            return;
        }
        let Some(r) = ChildPayloads::parse(p) else {
            ctx.stats.malformed += 1;
            return;
        };
        let Some((spi_out, choice, group)) = check_esp_response_pfs(r.sa, &proposals) else {
            return;
        };
        let Ok(gir) = initiator_pfs_secret(group, ke, r.ke) else {
            return;
        };
        let (nr, tsi, tsr) = (r.nonce, r.tsi, r.tsr);
        let Some(x) = x else {
            // The child went away meanwhile (the peer deleted it): drop the new one too.
            self.todo.push_back(Action::DeleteChildren(vec![spi_in]));
            return;
        };
        let old = &ctx.children[x];
        if !r.selectors_within(&old.local_ts, &old.remote_ts) {
            self.todo.push_back(Action::DeleteChildren(vec![spi_in]));
            return;
        }
        let Some(core) = self.chan(w).map(|c| &c.core) else {
            return;
        };
        let Ok(keys) = ChildKeys::derive(
            core.prf,
            &core.sk_d,
            gir.as_deref().map(|g| &g[..]),
            ni,
            nr,
            choice.cipher,
        ) else {
            return;
        };
        let new = ChildSa {
            name: old.name.clone(),
            spi_in,
            spi_out,
            keymat_in: keys.r_to_i,
            keymat_out: keys.i_to_r,
            cipher: choice.cipher,
            esn: choice.esn,
            mode: old.mode,
            local_ts: tsi.selectors.clone(),
            remote_ts: tsr.selectors.clone(),
            udp_encap: self.ch.core.nat.any(),
        };
        let peer_rekey = old.peer_rekey.clone();
        ctx.children[x].rekeyed = true;
        ctx.timers.stop(Timer::ChildRekey(old_spi_in));
        ctx.track_child(now, &new);
        ctx.events.push_back(Event::ChildSaRekeyed {
            old_spi_in,
            new,
            initiated: true,
        });
        #[cfg(test)]
        ctx.rekey_log.push((lowest(ni, nr), spi_in));
        match peer_rekey {
            // RFC 7296 section 2.8.1: the SA created with the lowest of the four nonces is
            // redundant and closed by its initiator; the other initiator deletes the old.
            Some((theirs, _)) if lowest(ni, nr) < theirs => {
                if let Some(c) = ctx.children.iter_mut().find(|c| c.spi_in == spi_in) {
                    c.rekeyed = true;
                }
                ctx.timers.stop(Timer::ChildRekey(spi_in));
                self.todo.push_back(Action::DeleteChildren(vec![spi_in]));
            }
            _ => self
                .todo
                .push_back(Action::DeleteChildren(vec![old_spi_in])),
        }
    }

    /// The response to our CREATE_CHILD_SA for a new child arrived on IKE SA `w`.
    #[allow(clippy::too_many_arguments)]
    fn child_created(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        p: &[Payload],
        (name, spi_in): (String, u32),
        ni: &[u8],
        ke: Option<KeyExchange>,
        (sent_i, sent_r): (Vec<TrafficSelector>, Vec<TrafficSelector>),
    ) {
        let Some(cfg) = ctx.cfg.all_children().find(|c| c.name == name).cloned() else {
            return;
        };
        let failed = |ctx: &mut Ctx, reason: NotifyType| {
            ctx.events.push_back(Event::ChildSaFailed {
                name: name.clone(),
                reason,
            });
        };
        if let Some(t) = first_error_notify(p) {
            if t == NotifyType::InvalidKePayload {
                let g = invalid_ke_group(p);
                let ours = cfg
                    .proposals
                    .iter()
                    .any(|q| g.is_some_and(|g| q.groups.contains(&g)));
                if ours && g != ke.as_ref().map(KeyExchange::group) {
                    self.todo.push_back(Action::CreateChild(name.clone(), g));
                    return;
                }
            }
            return failed(ctx, t);
        }
        let Some(r) = ChildPayloads::parse(p) else {
            ctx.stats.malformed += 1;
            return failed(ctx, NotifyType::InvalidSyntax);
        };
        let (nr, tsi, tsr) = (r.nonce, r.tsi, r.tsr);
        let Some((spi_out, choice, group)) = check_esp_response_pfs(r.sa, &cfg.proposals) else {
            // The SA may exist at the peer: delete our half of it.
            self.todo.push_back(Action::DeleteChildren(vec![spi_in]));
            return failed(ctx, NotifyType::NoProposalChosen);
        };
        let Ok(gir) = initiator_pfs_secret(group, ke, r.ke) else {
            return failed(ctx, NotifyType::InvalidKePayload);
        };
        let ts_ok = r.selectors_within(&sent_i, &sent_r);
        let Some(core) = self.chan(w).map(|c| &c.core).filter(|_| ts_ok) else {
            return failed(ctx, NotifyType::TsUnacceptable);
        };
        let Ok(keys) = ChildKeys::derive(
            core.prf,
            &core.sk_d,
            gir.as_deref().map(|g| &g[..]),
            ni,
            nr,
            choice.cipher,
        ) else {
            return failed(ctx, NotifyType::TemporaryFailure);
        };
        let transport = cfg.mode == Mode::Transport && has_notify(p, NotifyType::UseTransportMode);
        let new = ChildSa {
            name: name.clone(),
            spi_in,
            spi_out,
            keymat_in: keys.r_to_i,
            keymat_out: keys.i_to_r,
            cipher: choice.cipher,
            esn: choice.esn,
            mode: if transport {
                Mode::Transport
            } else {
                Mode::Tunnel
            },
            local_ts: tsi.selectors.clone(),
            remote_ts: tsr.selectors.clone(),
            udp_encap: self.ch.core.nat.any(),
        };
        ctx.track_child(now, &new);
        ctx.events.push_back(Event::ChildSaEstablished(new));
    }

    #[allow(clippy::too_many_arguments)]
    fn ike_rekeyed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        p: &[Payload],
        spi: u64,
        ni: &[u8],
        ke: KeyExchange,
    ) {
        let failed = |st: &mut Self, ctx: &mut Ctx| {
            // Ours failed: a rekey of the peer's answered meanwhile stands alone.
            if let Some((ch, _)) = st.peer_ike.take() {
                st.adopt(ctx, now, ch);
            }
        };
        if let Some(t) = first_error_notify(p) {
            match t {
                NotifyType::InvalidKePayload => {
                    let g = invalid_ke_group(p);
                    let ours = ctx
                        .cfg
                        .proposals
                        .iter()
                        .any(|q| g.is_some_and(|g| q.groups.contains(&g)));
                    if ours && g != Some(ke.group()) && self.peer_ike.is_none() {
                        self.todo.push_back(Action::RekeyIke(g));
                    }
                }
                NotifyType::TemporaryFailure if self.peer_ike.is_none() => {
                    ctx.timers.set(Timer::IkeRekey, now + RETRY_AFTER);
                }
                _ => {}
            }
            failed(self, ctx);
            return;
        }
        let (mut sa, mut nr, mut ker) = (None, None, None);
        for q in p {
            match q {
                Payload::Sa(s) => sa = sa.or(Some(s)),
                Payload::Nonce(n) => nr = nr.or(Some(n)),
                Payload::Ke(k) => ker = ker.or(Some(k)),
                _ => {}
            }
        }
        let checked = match (sa, nr, ker) {
            (Some(sa), Some(nr), Some(ker)) if NONCE_RANGE.contains(&nr.len()) => {
                check_ike_rekey_response(sa, &ctx.cfg.proposals)
                    .filter(|(_, c)| c.group == ke.group() && ker.group == c.group)
                    .map(|(spi_r, c)| (spi_r, c, nr, ker))
            }
            _ => None,
        };
        let Some((spi_r, choice, nr, ker)) = checked else {
            ctx.stats.malformed += 1;
            failed(self, ctx);
            return;
        };
        let Ok(gir) = ke.agree(&ker.data) else {
            failed(self, ctx);
            return;
        };
        let rekeyed = self.chan(w).map(|c| {
            c.core
                .rekeyed(true, (spi, spi_r), ni.to_vec(), nr.clone(), &gir, choice)
        });
        let Some(Ok(core)) = rekeyed else {
            failed(self, ctx);
            return;
        };
        let ours = Channel::fresh(core);
        let original = self.ch.spis();
        match self.peer_ike.take() {
            // RFC 7296 section 2.8.2: the new IKE SA with the lowest of the four nonces is
            // redundant and deleted by its initiator (us); the peer deletes the old one.
            Some((theirs, low)) if lowest(ni, nr) < low => {
                let redundant = ours.spis();
                self.adopt(ctx, now, theirs);
                self.retiring.push(ours);
                self.todo.push_back(Action::DeleteIke(redundant));
            }
            // Ours survives: the peer deletes its redundant one, we delete the old one.
            Some((theirs, _)) => {
                self.retiring.push(theirs);
                self.adopt(ctx, now, ours);
                self.todo.push_back(Action::DeleteIke(original));
            }
            None => {
                self.adopt(ctx, now, ours);
                self.todo.push_back(Action::DeleteIke(original));
            }
        }
    }

    /// Queues `a` unless it is queued or outstanding already.
    pub(super) fn want(&mut self, a: Action) {
        let outstanding = match (&a, self.pending.as_ref().map(|p| &p.what)) {
            (Action::RekeyIke(_), Some(Pending::RekeyIke { .. })) => true,
            (Action::Dpd, Some(Pending::Dpd)) => true,
            (Action::RekeyChild(s, _), Some(Pending::RekeyChild { old_spi_in, .. })) => {
                s == old_spi_in
            }
            _ => false,
        };
        let queued = self.todo.iter().any(|t| match (t, &a) {
            (Action::RekeyChild(x, _), Action::RekeyChild(y, _)) => x == y,
            (Action::RekeyIke(_), Action::RekeyIke(_)) => true,
            (x, y) => x == y,
        });
        if !outstanding && !queued {
            self.todo.push_back(a);
        }
    }

    /// Sends the next queued request if none is outstanding.
    pub(super) fn kick(&mut self, ctx: &mut Ctx, now: Instant) {
        while self.pending.is_none() {
            let Some(a) = self.todo.pop_front() else {
                break;
            };
            self.send_action(ctx, now, a);
        }
        self.sync_dpd(ctx);
    }

    fn send_action(&mut self, ctx: &mut Ctx, now: Instant, a: Action) {
        let (what, payloads, exchange, which) = match a {
            Action::Dpd => (Pending::Dpd, Vec::new(), ExchangeType::Informational, None),
            Action::DeleteChildren(spis) => {
                if spis.is_empty() {
                    return;
                }
                let p = vec![Payload::Delete(DeletePayload::esp(&spis))];
                (
                    Pending::DeleteChildren(spis),
                    p,
                    ExchangeType::Informational,
                    None,
                )
            }
            Action::DeleteIke(spis) => {
                let Some(Which::Retiring(i)) = self.which(spis) else {
                    return;
                };
                let p = vec![Payload::Delete(DeletePayload::ike())];
                (
                    Pending::DeleteIke,
                    p,
                    ExchangeType::Informational,
                    Some(Which::Retiring(i)),
                )
            }
            Action::RekeyChild(old_spi_in, group) => {
                let Some(c) = ctx
                    .children
                    .iter()
                    .find(|c| c.spi_in == old_spi_in && !c.rekeyed && c.peer_rekey.is_none())
                else {
                    return;
                };
                let (local_ts, remote_ts, mode) = (c.local_ts.clone(), c.remote_ts.clone(), c.mode);
                let proposals = ctx.cfg.child_named(&c.name).proposals.clone();
                let group =
                    group.or_else(|| proposals.iter().find_map(|p| p.groups.first().copied()));
                let ke = match group.map(|g| KeyExchange::generate(g, &ctx.rng)) {
                    Some(Ok(k)) => Some(k),
                    Some(Err(_)) => return,
                    None => None,
                };
                let (Ok(spi_in), Ok(ni)) = (ctx.esp_spi(), ctx.nonce()) else {
                    return;
                };
                let mut p = vec![Payload::Notify(NotifyPayload {
                    protocol: ProtocolId::Esp,
                    spi: old_spi_in.to_be_bytes().to_vec(),
                    notify_type: NotifyType::RekeySa,
                    data: Vec::new(),
                })];
                if mode == Mode::Transport {
                    p.push(notify(NotifyType::UseTransportMode));
                }
                p.push(Payload::Sa(esp_sa_payload_pfs(
                    &proposals,
                    spi_in,
                    ke.is_some(),
                )));
                p.push(Payload::Nonce(ni.clone()));
                if let Some(k) = &ke {
                    p.push(Payload::Ke(KePayload {
                        group: k.group(),
                        data: k.public_value().to_vec(),
                    }));
                }
                p.push(Payload::TsI(TsPayload {
                    selectors: local_ts,
                }));
                p.push(Payload::TsR(TsPayload {
                    selectors: remote_ts,
                }));
                let what = Pending::RekeyChild {
                    old_spi_in,
                    spi_in,
                    ni,
                    ke,
                };
                (what, p, ExchangeType::CreateChildSa, None)
            }
            Action::CreateChild(name, group) => {
                let Some(cfg) = ctx.cfg.all_children().find(|c| c.name == name).cloned() else {
                    return;
                };
                let group =
                    group.or_else(|| cfg.proposals.iter().find_map(|p| p.groups.first().copied()));
                let ke = match group.map(|g| KeyExchange::generate(g, &ctx.rng)) {
                    Some(Ok(k)) => Some(k),
                    Some(Err(_)) => return,
                    None => None,
                };
                let (Ok(spi_in), Ok(ni)) = (ctx.esp_spi(), ctx.nonce()) else {
                    return;
                };
                // With virtual IPs our side is them (swanctl's `dynamic`).
                let mut local_ts = cfg.local_ts.clone();
                if !self.info.vips.is_empty() {
                    let narrowed = narrow(&local_ts, &vip_selectors(&self.info.vips));
                    if !narrowed.is_empty() {
                        local_ts = narrowed;
                    }
                }
                let mut p = Vec::new();
                if cfg.mode == Mode::Transport {
                    p.push(notify(NotifyType::UseTransportMode));
                }
                p.push(Payload::Sa(esp_sa_payload_pfs(
                    &cfg.proposals,
                    spi_in,
                    ke.is_some(),
                )));
                p.push(Payload::Nonce(ni.clone()));
                if let Some(k) = &ke {
                    p.push(Payload::Ke(KePayload {
                        group: k.group(),
                        data: k.public_value().to_vec(),
                    }));
                }
                p.push(Payload::TsI(TsPayload {
                    selectors: local_ts.clone(),
                }));
                p.push(Payload::TsR(TsPayload {
                    selectors: cfg.remote_ts.clone(),
                }));
                let what = Pending::CreateChild {
                    name,
                    spi_in,
                    ni,
                    ke,
                    ts: (local_ts, cfg.remote_ts),
                };
                (what, p, ExchangeType::CreateChildSa, None)
            }
            Action::RekeyIke(group) => {
                if self.peer_ike.is_some() {
                    return;
                }
                let group = group.or_else(|| {
                    ctx.cfg
                        .proposals
                        .first()
                        .and_then(|p| p.groups.first().copied())
                });
                let Some(Ok(ke)) = group.map(|g| KeyExchange::generate(g, &ctx.rng)) else {
                    return;
                };
                let (Ok(spi), Ok(ni)) = (ctx.ike_spi(), ctx.nonce()) else {
                    return;
                };
                let p = vec![
                    Payload::Sa(ike_rekey_sa_payload(&ctx.cfg.proposals, spi)),
                    Payload::Nonce(ni.clone()),
                    Payload::Ke(KePayload {
                        group: ke.group(),
                        data: ke.public_value().to_vec(),
                    }),
                ];
                (
                    Pending::RekeyIke { spi, ni, ke },
                    p,
                    ExchangeType::CreateChildSa,
                    None,
                )
            }
        };
        let w = which.unwrap_or(Which::Current);
        let Some(ch) = self.chan(w) else {
            return;
        };
        let id = ch.own_next;
        let Ok(bytes) = ch.core.seal(exchange, false, id, &payloads) else {
            return;
        };
        ch.own_next = id.wrapping_add(1);
        let spis = ch.spis();
        ctx.send_request(now, bytes);
        self.pending = Some(PendingRequest { what, spis, id });
    }

    /// Runs the lifetime and liveness timers due at `now`. Returns `false` when the IKE
    /// SA reached its hard lifetime (a Delete was sent; the caller ends it).
    pub(super) fn on_timers(&mut self, ctx: &mut Ctx, now: Instant) -> bool {
        if ctx.timers.is_due(Timer::IkeExpire, now) {
            let id = self.ch.own_next;
            let payloads = [Payload::Delete(DeletePayload::ike())];
            if let Ok(b) = self
                .ch
                .core
                .seal(ExchangeType::Informational, false, id, &payloads)
            {
                ctx.send(b);
            }
            return false;
        }
        if ctx.timers.take_due(Timer::IkeRekey, now) {
            self.want(Action::RekeyIke(None));
        }
        let mut expired = Vec::new();
        let mut rekey = Vec::new();
        for c in &ctx.children {
            if ctx.timers.is_due(Timer::ChildExpire(c.spi_in), now) {
                expired.push((c.spi_in, c.spi_out));
            } else if ctx.timers.is_due(Timer::ChildRekey(c.spi_in), now) {
                rekey.push((c.spi_in, !c.rekeyed && c.peer_rekey.is_none()));
            }
        }
        self.expire_children(ctx, &expired);
        for (s, live) in rekey {
            ctx.timers.stop(Timer::ChildRekey(s));
            if live {
                self.want(Action::RekeyChild(s, None));
            }
        }
        if self.idle() && ctx.timers.is_due(Timer::Dpd, now) {
            self.want(Action::Dpd);
        }
        self.kick(ctx, now);
        true
    }

    /// Deletes the child SAs `expired` (inbound, outbound SPI): reported at once, the
    /// Delete queued.
    fn expire_children(&mut self, ctx: &mut Ctx, expired: &[(u32, u32)]) {
        if expired.is_empty() {
            return;
        }
        ctx.remove_children(|c| expired.iter().any(|&(i, _)| i == c.spi_in));
        ctx.events.push_back(Event::ChildSaDeleted {
            spis_out: expired.iter().map(|&(_, o)| o).collect(),
        });
        self.want(Action::DeleteChildren(
            expired.iter().map(|&(i, _)| i).collect(),
        ));
    }

    /// Child `spi_in` has carried `bytes` and `packets`: rekey it at the soft limits,
    /// delete it at the hard ones (see `IkeSa::child_usage`).
    pub(super) fn child_usage(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        spi_in: u32,
        (bytes, packets): (u64, u64),
    ) {
        let Some(c) = ctx
            .children
            .iter_mut()
            .find(|c| c.spi_in == spi_in && !c.rekeyed && c.peer_rekey.is_none())
        else {
            return;
        };
        let reached = |limit: Option<u64>, used: u64| limit.is_some_and(|l| used >= l);
        if reached(c.life_bytes, bytes) || reached(c.life_packets, packets) {
            let spi_out = c.spi_out;
            self.expire_children(ctx, &[(spi_in, spi_out)]);
        } else if reached(c.rekey_bytes, bytes) || reached(c.rekey_packets, packets) {
            c.rekey_bytes = None;
            c.rekey_packets = None;
            self.want(Action::RekeyChild(spi_in, None));
        } else {
            return;
        }
        self.kick(ctx, now);
    }

    /// See `IkeSa::child_seq_limit`.
    pub(super) fn child_seq_limit(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        spi_out: u32,
        exhausted: bool,
    ) -> Option<SeqLimitAction> {
        let c = ctx.children.iter().find(|c| c.spi_out == spi_out)?;
        let spi_in = c.spi_in;
        let ours_pending = matches!(
            self.pending.as_ref().map(|p| &p.what),
            Some(Pending::RekeyChild { old_spi_in, .. }) if *old_spi_in == spi_in
        );
        let ours_queued = self
            .todo
            .iter()
            .any(|a| matches!(a, Action::RekeyChild(s, _) if *s == spi_in));
        let action = if c.rekeyed || c.peer_rekey.is_some() || ours_pending {
            SeqLimitAction::Replacing
        } else if !exhausted {
            // Queued already (by its lifetime, say) or not: one rekey either way.
            self.want(Action::RekeyChild(spi_in, None));
            SeqLimitAction::Rekey
        } else {
            if ours_queued {
                self.todo
                    .retain(|a| !matches!(a, Action::RekeyChild(s, _) if *s == spi_in));
            }
            let name = c.name.clone();
            self.expire_children(ctx, &[(spi_in, spi_out)]);
            let recreate = ctx.original_initiator;
            if recreate {
                self.want(Action::CreateChild(name, None));
            }
            SeqLimitAction::Delete { recreate }
        };
        self.kick(ctx, now);
        Some(action)
    }

    /// Whether no request of ours is outstanding or queued.
    fn idle(&self) -> bool {
        self.pending.is_none() && self.todo.is_empty()
    }

    /// Arms the liveness check `dpd.delay` after the last sign of life while we are idle,
    /// and stops it while a request is outstanding or queued (its answer is one).
    fn sync_dpd(&self, ctx: &mut Ctx) {
        let at = ctx
            .cfg
            .dpd
            .delay
            .filter(|_| self.idle())
            .map(|d| self.last_rx + d);
        ctx.timers.set_or_stop(Timer::Dpd, at);
    }

    /// Records a sign of life from the peer (for example inbound ESP).
    pub(super) fn note_activity(&mut self, ctx: &mut Ctx, now: Instant) {
        self.last_rx = self.last_rx.max(now);
        self.sync_dpd(ctx);
    }

    /// Whether a rekey of the IKE SA or a child SA is under way.
    pub(super) fn rekeying(&self) -> bool {
        matches!(
            self.pending.as_ref().map(|p| &p.what),
            Some(Pending::RekeyChild { .. } | Pending::RekeyIke { .. })
        )
    }
}

#[cfg(test)]
mod tests {
    use super::lowest;

    #[test]
    fn lowest_nonce_compares_bytes() {
        assert_eq!(lowest(&[1, 2], &[1, 3]), vec![1, 2]);
        assert_eq!(lowest(&[2], &[1, 255]), vec![1, 255]);
    }
}
