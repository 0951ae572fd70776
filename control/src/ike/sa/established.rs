//! An established IKE SA: the queue of our requests, the dispatch of the peer's, and the
//! collision rules (RFC 7296 sections 2.8.1 and 2.8.2), with the lifetimes and liveness
//! checks that queue rekeys, Deletes and checks. The exchanges themselves are types in
//! `exchange/` (one file each, the trait in `exchange/mod.rs`).
//!
//! Message IDs: a window of one per direction and IKE SA ([`Channel`]). Our own requests
//! are queued as exchange objects on the channel they go on and sent one at a time per
//! channel ([`Established::kick`]); requests from the peer are answered whatever we have
//! outstanding. Every request we send has its retransmission schedule in its channel; a
//! give-up fails the IKE SA (`FailReason::Timeout`).
//!
//! Make-before-break: a rekeyed child SA stays (and keeps accepting inbound packets) until
//! the Delete exchange for it completes; only then is [`Event::ChildSaDeleted`] raised.

use std::net::SocketAddr;
use std::time::Instant;

use super::channel::{Channel, Tick};
use super::exchange::delete::deletes_ike;
use super::exchange::{
    AddressUpdate, ChildCreate, ChildRekey, Delete, Effect, Ex, Exchange, IkeRekey, IkeRetry, Key,
    Kind, Liveness, MifRequest, PathCheck, PathUpdate, RETRY_AFTER, Resend, Responder, responders,
};
use super::roam::Pair;
use super::timer::Timer;
use super::{
    Core, CryptoError, Ctx, Dead, Event, FailReason, IkeSaInfo, MifError, MoveError, MoveReason,
    SeqLimitAction, State, has_notify, is_later_fragment, notify,
};
use crate::wire::{ExchangeType, Message, NotifyPayload, NotifyType, Payload};

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

/// Both roles: authenticated.
pub(in crate::ike::sa) struct Established {
    /// The current IKE SA.
    pub(in crate::ike::sa) ch: Channel,
    /// Old IKE SAs replaced by a rekey (or made redundant by a collision): still answering
    /// their Delete exchange, or already deleted and kept for retransmitted requests.
    retiring: Vec<Channel>,
    /// What the caller was told about the IKE SA, kept up to date across rekeys.
    info: IkeSaInfo,
    /// The last sign of life from the peer: an authenticated IKE message or reported ESP.
    last_rx: Instant,
    /// A rekey of the IKE SA by the peer, answered while ours was outstanding (RFC 7296
    /// section 2.8.2): the new SA and the lowest nonce of that exchange.
    peer_ike: Option<(Channel, Vec<u8>)>,
    /// The exchanges a request of the peer's may be, in the order they are asked.
    responders: Vec<Responder>,
}

/// Which IKE SA a message is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    Current,
    Retiring(usize),
    PeerIke,
}

/// The copies of a request for a probe of `pairs`: the same sealed bytes `base` on every
/// pair. A copy is a retransmission, and RFC 7296 section 2.1 has a responder recognise
/// one only when it is identical: strongSwan ignores a request of an already processed
/// Message ID whose bytes differ ("received message ID 2, expected 3, ignored"). The
/// NAT_DETECTION_* in it are those of the pair it was first built for; the new path's NAT
/// is found by the UPDATE_SA_ADDRESSES that follows, with that path's hashes.
fn seal_copies(pairs: &[Pair], base: &[u8]) -> Vec<(SocketAddr, SocketAddr, Vec<u8>)> {
    pairs.iter().map(|&(l, r)| (l, r, base.to_vec())).collect()
}

/// How a request is sent.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// Through the window: outstanding until answered, retransmitted.
    Window,
    /// The IKE SA's last request, whatever is outstanding: fire and forget.
    Last,
}

impl Established {
    /// The established state after IKE_AUTH, with its lifetimes started.
    pub(super) fn start(ctx: &mut Ctx, now: Instant, ch: Channel, info: IkeSaInfo) -> State {
        let mut st = Established {
            ch,
            retiring: Vec::new(),
            info,
            last_rx: now,
            peer_ike: None,
            responders: responders(),
        };
        st.start_lifetimes(ctx, now);
        // The initiator creates the further children one by one (CREATE_CHILD_SA).
        if ctx.original_initiator {
            let clone_only = &ctx.cfg.clone_children;
            let first = ctx.cfg.more_children.iter();
            for c in first.filter(|c| !clone_only.contains(&c.name)) {
                st.ch
                    .todo
                    .push_back(Box::new(ChildCreate::new(c.name.clone(), None)));
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

    fn chan_ref(&self, w: Which) -> Option<&Channel> {
        match w {
            Which::Current => Some(&self.ch),
            Which::Retiring(i) => self.retiring.get(i),
            Which::PeerIke => self.peer_ike.as_ref().map(|(c, _)| c),
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

    /// The Wireshark `ikev2_decryption_table` lines of the current IKE SA and of the old
    /// ones still kept (their messages may be in a capture too).
    pub(super) fn wireshark_lines(&self) -> Vec<String> {
        std::iter::once(&self.ch)
            .chain(&self.retiring)
            .chain(self.peer_ike.as_ref().map(|(c, _)| c))
            .filter_map(|c| c.core.wireshark_line())
            .collect()
    }

    /// Whether a message with these SPIs belongs to this IKE SA (current or old).
    pub(super) fn owns(&self, spis: (u64, u64)) -> bool {
        self.which(spis).is_some()
    }

    /// Runs `f` as an exchange on IKE SA `w`, returning its result and effects.
    fn run<R>(
        &self,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        f: impl FnOnce(&mut Ex<'_>) -> R,
    ) -> Option<(R, Vec<Effect>)> {
        let ch = self.chan_ref(w)?;
        let mut x = Ex {
            ctx,
            core: &ch.core,
            vips: &self.info.vips,
            now,
            from: None,
            message_id: 0,
            current: w == Which::Current,
            effects: Vec::new(),
        };
        let r = f(&mut x);
        Some((r, x.effects))
    }

    pub(super) fn handle(
        mut self: Box<Self>,
        ctx: &mut Ctx,
        now: Instant,
        (local, remote): (SocketAddr, SocketAddr),
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
            self.on_response(ctx, now, w, (local, remote), bytes, msg)
        } else {
            self.on_request(ctx, now, w, (local, remote), bytes, msg)
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
        (arrived_on, remote): (SocketAddr, SocketAddr),
        bytes: &[u8],
        msg: &Message,
    ) -> State {
        let h = &msg.header;
        let before = ctx.paths.pair();
        let Some(ch) = self.chan(w) else {
            return State::Established(self);
        };
        if h.message_id.wrapping_add(1) == ch.peer_next {
            if let Some((id, cached)) = &ch.last_response {
                if *id == h.message_id {
                    // A retransmitted request in fragments: answer once, on fragment 1.
                    if !is_later_fragment(msg) {
                        // From where it arrived, to where it came from: a MOBIKE
                        // initiator retransmits from its new address (RFC 4555 3.5).
                        ctx.stats.answered_from_cache += 1;
                        ctx.send_to(arrived_on, remote, cached.clone());
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
        let (reply, effects) = match &inner {
            Err(e) => {
                ctx.stats.malformed += 1;
                let n = e
                    .notify()
                    .unwrap_or(NotifyPayload::new(NotifyType::InvalidSyntax, Vec::new()));
                (vec![Payload::Notify(n)], Vec::new())
            }
            Ok(p) => self.dispatch(
                ctx,
                now,
                w,
                (h.exchange_type, h.message_id),
                p,
                (arrived_on, remote),
            ),
        };
        if ctx.paths.pair() != before {
            // Outstanding requests of ours follow the move (RFC 4555 section 3.5).
            let path = ctx.paths.pair();
            self.ch.redirect(path);
            self.retiring.iter_mut().for_each(|c| c.redirect(path));
            if let Some((c, _)) = &mut self.peer_ike {
                c.redirect(path);
            }
        }
        // The answer goes from the address the request arrived on to the one it came from
        // (RFC 7296 section 2.11; RFC 4555 section 3.5), moved or not.
        let local = arrived_on;
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
        self.apply(ctx, now, w, effects)
    }

    /// The response to a request of the peer's on IKE SA `w`: the rules that come before
    /// any exchange, then the first exchange that claims it.
    fn dispatch(
        &self,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        (exchange, message_id): (ExchangeType, u32),
        p: &[Payload],
        from: (SocketAddr, SocketAddr),
    ) -> (Vec<Payload>, Vec<Effect>) {
        let refuse = |t| (vec![notify(t)], Vec::new());
        // The peer tells us our AUTH did not verify after all (RFC 7296 section 2.21.2),
        // unless it deletes the IKE SA in the same message.
        if exchange == ExchangeType::Informational
            && has_notify(p, NotifyType::AuthenticationFailed)
            && !deletes_ike(p)
        {
            let reason = FailReason::PeerNotify(NotifyType::AuthenticationFailed);
            return (Vec::new(), vec![Effect::Fail(reason)]);
        }
        // New SAs are made on the current IKE SA only: an old one is being deleted.
        if exchange == ExchangeType::CreateChildSa && w != Which::Current {
            return refuse(NotifyType::TemporaryFailure);
        }
        let Some(r) = self.responders.iter().find(|r| (r.claims)(exchange, p)) else {
            return refuse(NotifyType::NoAdditionalSas);
        };
        // RFC 7296 section 2.8.2: one collision at a time; the peer retries later.
        if r.kind == Kind::IkeRekey && self.peer_ike.is_some() {
            return refuse(NotifyType::TemporaryFailure);
        }
        let respond = r.respond;
        self.run(ctx, now, w, |x| {
            x.from = Some(from);
            x.message_id = message_id;
            respond(x, p)
        })
        .unwrap_or_else(|| (Vec::new(), Vec::new()))
    }

    /// Applies what an exchange on IKE SA `w` reported, in order.
    fn apply(
        mut self: Box<Self>,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        effects: Vec<Effect>,
    ) -> State {
        for e in effects {
            match e {
                Effect::Queue(ex) => self.queue(ex),
                Effect::Close => return self.closed(ctx, now, w),
                Effect::Fail(reason) => {
                    let spis = Some(self.ch.spis());
                    let last = self.ch.last_response.take();
                    return ctx.fail(reason, spis, last);
                }
                Effect::ChildRekeyed {
                    old_spi_in,
                    spi_in,
                    lowest,
                } => self.child_rekey_collision(ctx, old_spi_in, spi_in, &lowest),
                Effect::IkeRekeyed(core, lowest) => self.ike_rekeyed(ctx, now, core, &lowest),
                Effect::PathRefused {
                    pair,
                    before,
                    refused,
                    probe,
                } => {
                    if refused {
                        ctx.roam.refuse(pair);
                    }
                    if ctx.paths.pair() == pair {
                        ctx.paths.move_to(before.local, before.remote, before.nat);
                        self.redirect_all((before.local, before.remote));
                    }
                    if let Some(reason) = probe {
                        self.start_probe(ctx, now, reason);
                    }
                }
                Effect::IkeRekeyFailed(retry) => {
                    if self.peer_ike.is_none() {
                        match retry {
                            Some(IkeRetry::Group(g)) => {
                                self.queue(Box::new(IkeRekey::new(Some(g))));
                            }
                            Some(IkeRetry::Later) => {
                                ctx.timers.set(Timer::IkeRekey, now + RETRY_AFTER);
                            }
                            None => {}
                        }
                    }
                    // Ours failed: a rekey of the peer's answered meanwhile stands alone.
                    if let Some((ch, _)) = self.peer_ike.take() {
                        self.adopt(ctx, now, ch);
                    }
                }
                Effect::Cloned(core) | Effect::PeerCloned(core) => {
                    self.spawn_clone(ctx, now, core);
                }
                Effect::PeerRekeyedIke(core, lowest) => {
                    let ch = Channel::fresh(ctx, core);
                    let own = self.outstanding(&Key::IkeRekey);
                    if own {
                        // Ours is outstanding too: the one with the lowest nonce goes
                        // once both are known (`ike_rekeyed`).
                        self.peer_ike = Some((ch, lowest));
                    } else {
                        self.adopt(ctx, now, ch);
                    }
                }
            }
        }
        State::Established(self)
    }

    /// RFC 7296 section 2.8.1: our rekey of child `old_spi_in` made `spi_in`. If the peer
    /// rekeyed the same child meanwhile, the SA created with the lowest of the four nonces
    /// is redundant and closed by its initiator; the other initiator deletes the old one.
    fn child_rekey_collision(&mut self, ctx: &mut Ctx, old_spi_in: u32, spi_in: u32, ours: &[u8]) {
        let theirs = ctx
            .children
            .iter()
            .find(|c| c.spi_in == old_spi_in)
            .and_then(|c| c.peer_rekey.clone());
        match theirs {
            Some((theirs, _)) if ours < theirs.as_slice() => {
                if let Some(c) = ctx.children.iter_mut().find(|c| c.spi_in == spi_in) {
                    c.rekeyed = true;
                }
                ctx.timers.stop(Timer::ChildRekey(spi_in));
                self.queue(Box::new(Delete::children(vec![spi_in])));
            }
            _ => self.queue(Box::new(Delete::children(vec![old_spi_in]))),
        }
    }

    /// Our rekey of the IKE SA made `core`. RFC 7296 section 2.8.2: if the peer rekeyed it
    /// too, the new IKE SA with the lowest of the four nonces is redundant and deleted by
    /// its initiator; the other initiator deletes the old one.
    fn ike_rekeyed(&mut self, ctx: &mut Ctx, now: Instant, core: Core, low: &[u8]) {
        let ours = Channel::fresh(ctx, core);
        let original = self.ch.spis();
        match self.peer_ike.take() {
            // Ours is redundant: we delete it; the peer deletes the old one.
            Some((theirs, theirs_low)) if low < theirs_low.as_slice() => {
                let redundant = ours.spis();
                self.adopt(ctx, now, theirs);
                self.retiring.push(ours);
                self.queue(Box::new(Delete::ike(Some(redundant))));
            }
            // Ours survives: the peer deletes its redundant one, we delete the old one.
            Some((theirs, _)) => {
                self.retiring.push(theirs);
                self.adopt(ctx, now, ours);
                self.queue(Box::new(Delete::ike(Some(original))));
            }
            None => {
                self.adopt(ctx, now, ours);
                self.queue(Box::new(Delete::ike(Some(original))));
            }
        }
    }

    /// RFC 7791: queues our clone of the IKE SA (a request of its own each time: two
    /// clones asked for are two exchanges).
    pub(super) fn request_clone(&mut self, ctx: &mut Ctx, now: Instant) {
        self.queue(Box::new(IkeRekey::clone_sa(None, 1)));
        self.kick(ctx, now);
    }

    /// RFC 7791: a clone (ours or the peer's) made `core`: a new IKE SA, established, with
    /// this one's configuration, roles, paths, MOBIKE and NAT state and address lists, its
    /// own lifetimes, and no child SAs. This IKE SA is unchanged: no Delete, its children
    /// stay. A clone is no rekey of this IKE SA, so the collision rules of RFC 7296
    /// section 2.8.2 do not apply to it: a rekey of ours or the peer's running meanwhile
    /// completes as it would alone.
    fn spawn_clone(&self, ctx: &mut Ctx, now: Instant, core: Core) {
        let from = self.ch.spis();
        let mut c = ctx.for_clone(from);
        let ch = Channel::fresh(&mut c, core);
        let mut info = self.info.clone();
        info.spi_i = ch.core.spi_i;
        info.spi_r = ch.core.spi_r;
        info.initiator = ch.core.initiator;
        info.cipher = ch.core.cipher;
        info.prf = ch.core.prf;
        info.group = ch.core.group;
        let p = c.paths.current();
        (info.local, info.remote, info.nat) = (p.local, p.remote, p.nat);
        let mut st = Established {
            ch,
            retiring: Vec::new(),
            info: info.clone(),
            last_rx: now,
            peer_ike: None,
            responders: responders(),
        };
        st.start_lifetimes(&mut c, now);
        c.events.push_back(Event::IkeSaCloned { info, from });
        st.kick(&mut c, now);
        ctx.clones.push(super::IkeSa {
            state: State::Established(Box::new(st)),
            ctx: c,
        });
    }

    /// The peer deleted the IKE SA `w`.
    fn closed(mut self: Box<Self>, ctx: &mut Ctx, now: Instant, w: Which) -> State {
        match w {
            Which::Current => {
                if let Some((ch, _)) = self.peer_ike.take() {
                    // The peer won a rekey collision and deleted the old IKE SA: ours
                    // (still outstanding) is moot.
                    self.ch.finish(ctx);
                    self.adopt(ctx, now, ch);
                    return State::Established(self);
                }
                self.ch.forget(ctx);
                ctx.events.push_back(Event::Closed);
                State::Dead(Dead {
                    spis: Some(self.ch.spis()),
                    last_response: self.ch.last_response.take(),
                })
            }
            Which::Retiring(i) => {
                // Old IKE SA deleted by the peer: keep it to answer retransmissions.
                // What was queued for it (its Delete) is moot; a request of ours
                // outstanding on it will not be answered: send it again on the current
                // IKE SA.
                let again = self.retiring.get_mut(i).and_then(|ch| {
                    ch.todo.clear();
                    ch.finish(ctx)
                });
                if let Some(again) = again.and_then(|p| p.ex.requeue()) {
                    self.want(again);
                }
                State::Established(self)
            }
            Which::PeerIke => {
                if let Some((mut ch, _)) = self.peer_ike.take() {
                    ch.forget(ctx);
                }
                State::Established(self)
            }
        }
    }

    /// Makes `ch` the current IKE SA; the previous one retires.
    fn adopt(&mut self, ctx: &mut Ctx, now: Instant, ch: Channel) {
        let mut old = std::mem::replace(&mut self.ch, ch);
        // What was queued for the current IKE SA goes on the new one; a request
        // outstanding on the old one is answered there.
        self.ch.todo.extend(old.todo.drain(..));
        self.retiring.push(old);
        while self.retiring.len() > KEEP_RETIRED + 1 {
            self.retiring.remove(0).forget(ctx);
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

    fn on_response(
        mut self: Box<Self>,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        arrival: Pair,
        bytes: &[u8],
        msg: &Message,
    ) -> State {
        let h = &msg.header;
        let Some(ch) = self
            .chan(w)
            .filter(|ch| ch.pending.as_ref().is_some_and(|p| p.id == h.message_id))
        else {
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
        let sent_on = ch.sent_on();
        let Some(pending) = ch.finish(ctx) else {
            return State::Established(self);
        };
        self.last_rx = now;
        if w == Which::Current {
            self.answered_on(ctx, now, arrival, &sent_on);
        }
        let ran = self.run(ctx, now, w, |x| {
            x.from = Some(arrival);
            pending.ex.process_response(x, &inner)
        });
        let effects = ran.map(|(_, e)| e).unwrap_or_default();
        self.apply(ctx, now, w, effects)
    }

    /// Queues `ex` unless the same request is queued or outstanding already.
    pub(super) fn want(&mut self, ex: Box<dyn Exchange>) {
        let key = ex.key();
        // Only these are refused while outstanding: another Delete or new child is a
        // request of its own.
        let outstanding = matches!(key, Key::IkeRekey | Key::Liveness | Key::ChildRekey(_))
            && self.outstanding(&key);
        if !outstanding && !self.queued(&key) {
            self.queue(ex);
        }
    }

    /// Queues `ex` on the IKE SA it is for (the current one unless it names another);
    /// dropped if that IKE SA is gone.
    fn queue(&mut self, ex: Box<dyn Exchange>) {
        let w = match ex.ike_sa() {
            None => Some(Which::Current),
            Some(spis) => self.which(spis),
        };
        if let Some(ch) = w.and_then(|w| self.chan(w)) {
            ch.todo.push_back(ex);
        }
    }

    /// The channels that send requests: the current IKE SA and old ones being deleted.
    fn channels(&self) -> impl Iterator<Item = &Channel> {
        std::iter::once(&self.ch).chain(&self.retiring)
    }

    /// Whether a request like `key` is outstanding on any IKE SA.
    fn outstanding(&self, key: &Key) -> bool {
        self.channels()
            .any(|ch| ch.pending.as_ref().is_some_and(|p| p.ex.key() == *key))
    }

    /// Whether a request like `key` is queued on any IKE SA.
    fn queued(&self, key: &Key) -> bool {
        self.channels()
            .any(|ch| ch.todo.iter().any(|t| t.key() == *key))
    }

    /// Sends the next queued request of each IKE SA that has none outstanding.
    pub(super) fn kick(&mut self, ctx: &mut Ctx, now: Instant) {
        let ws =
            std::iter::once(Which::Current).chain((0..self.retiring.len()).map(Which::Retiring));
        for w in ws.collect::<Vec<_>>() {
            while let Some(ex) = self
                .chan(w)
                .filter(|ch| ch.pending.is_none())
                .and_then(|ch| ch.todo.pop_front())
            {
                self.issue(ctx, now, w, ex, Delivery::Window);
            }
        }
        self.sync_dpd(ctx);
    }

    /// Sends `ex` as the IKE SA's last request, whatever is outstanding (fire and forget:
    /// the SA ends). Returns whether it was sent.
    pub(super) fn send_last(&mut self, ctx: &mut Ctx, now: Instant, ex: Box<dyn Exchange>) -> bool {
        self.issue(ctx, now, Which::Current, ex, Delivery::Last)
    }

    /// Builds, seals and sends the request of `ex` on IKE SA `w`. Returns whether it was
    /// sent.
    fn issue(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        w: Which,
        mut ex: Box<dyn Exchange>,
        how: Delivery,
    ) -> bool {
        // RFC 7296 section 2.8.2: while a rekey of the peer's that collided with ours is
        // unresolved, we start no other.
        if ex.key() == Key::IkeRekey && self.peer_ike.is_some() {
            return false;
        }
        let Some((Some(payloads), _)) = self.run(ctx, now, w, |x| ex.build_request(x)) else {
            return false;
        };
        let Some(ch) = self.chan(w) else {
            return false;
        };
        let id = ch.own_next;
        let Ok(bytes) = ch.core.seal(ex.exchange_type(), false, id, &payloads) else {
            return false;
        };
        ch.own_next = id.wrapping_add(1);
        let path = ctx.paths.pair();
        let resend = ex.resend();
        let r = ctx.cfg.roam;
        match how {
            Delivery::Window => match &resend {
                Resend::Normal => {
                    ch.send_request(ctx, now, (ex, id), vec![(path.0, path.1, bytes)])
                }
                Resend::Check => {
                    ch.send_request(ctx, now, (ex, id), vec![(path.0, path.1, bytes)]);
                    ch.check_mode(ctx, now, (r.check_tries, r.check_interval), false);
                }
                Resend::Probe(pairs) | Resend::Optional(pairs) => {
                    let copies = seal_copies(pairs, &bytes);
                    let drop_at =
                        matches!(resend, Resend::Optional(_)).then(|| now + r.dead_after());
                    ch.send_request(ctx, now, (ex, id), copies);
                    ch.probe_mode(ctx, now, r.check_interval, drop_at);
                }
            },
            Delivery::Last => ctx.send_to(path.0, path.1, bytes),
        }
        true
    }

    /// MOBIKE: whether we choose the path (both sides support MOBIKE and we are the
    /// original initiator, RFC 4555 section 3.1).
    fn can_roam(ctx: &Ctx) -> bool {
        ctx.paths.mobike() && ctx.original_initiator
    }

    /// Our request went on `sent_on` and its answer came on `arrival`. MOBIKE: another
    /// pair than the current path answered a probe first: it becomes the path. The current
    /// path answered: it works (a probe ends).
    fn answered_on(&mut self, ctx: &mut Ctx, now: Instant, arrival: Pair, sent_on: &[Pair]) {
        if arrival == ctx.paths.pair() {
            ctx.roam.unanswered_since = None;
            ctx.timers.stop(Timer::PathCheck);
            // The current path works: a probe after it went dead ends (a probe of the
            // preferred path ends when it answers there, or is given up).
            if sent_on.len() > 1 || ctx.roam.probing.is_some_and(|r| r != MoveReason::Preferred) {
                ctx.roam.probing = None;
            }
            return;
        }
        if Self::can_roam(ctx) && sent_on.contains(&arrival) {
            let reason = ctx.roam.probing.unwrap_or(MoveReason::PathDead);
            self.switch(ctx, now, arrival, reason);
        }
    }

    /// MOBIKE (RFC 4555 section 3.5): the IKE SA goes on `pair` now (`pending_update`),
    /// our outstanding requests follow, and UPDATE_SA_ADDRESSES is next in line.
    fn switch(&mut self, ctx: &mut Ctx, _now: Instant, pair: Pair, reason: MoveReason) {
        let before = *ctx.paths.current();
        ctx.paths.move_to(pair.0, pair.1, before.nat);
        self.redirect_all(pair);
        ctx.roam.probing = None;
        ctx.roam.unanswered_since = None;
        ctx.roam.peer_saw = None;
        ctx.timers.stop(Timer::PathCheck);
        let update = Key::Other("mobike-path-update");
        self.ch.todo.retain(|t| t.key() != update);
        self.ch
            .todo
            .push_front(Box::new(PathUpdate::new(reason, before)));
    }

    /// Every outstanding request of ours is retransmitted on `pair` from now on.
    fn redirect_all(&mut self, pair: Pair) {
        self.ch.redirect(pair);
        self.retiring.iter_mut().for_each(|c| c.redirect(pair));
        if let Some((c, _)) = &mut self.peer_ike {
            c.redirect(pair);
        }
    }

    /// MOBIKE: the current path is dead or its address gone: probe every candidate pair
    /// (the current path too, if its address is usable) with the outstanding request, or
    /// with a new liveness check; the first that answers becomes the path. Without a
    /// candidate (no usable address) the probe waits for one.
    fn start_probe(&mut self, ctx: &mut Ctx, now: Instant, reason: MoveReason) {
        if !Self::can_roam(ctx) {
            return;
        }
        ctx.roam.probing = Some(reason);
        ctx.timers.stop(Timer::PathCheck);
        let pairs = ctx.roam.candidates(&ctx.paths);
        if pairs.is_empty() {
            return;
        }
        ctx.stats.probes += 1;
        let check = Key::Other("mobike-check");
        self.ch.todo.retain(|t| t.key() != check);
        match self.ch.pending.take() {
            Some(p) => {
                let base = self.ch.first_bytes().unwrap_or_default();
                let copies = seal_copies(&pairs, &base);
                self.ch.pending = Some(p);
                let iv = ctx.cfg.roam.check_interval;
                self.ch.fan_out(ctx, now, copies, iv);
            }
            None => self.ch.todo.push_front(Box::new(PathCheck::probe(pairs))),
        }
    }

    /// See `IkeSa::set_local_addresses`.
    pub(super) fn set_local_addresses(&mut self, ctx: &mut Ctx, now: Instant) {
        if !ctx.paths.mobike() {
            return;
        }
        let gone = !ctx.roam.usable(ctx.paths.local().ip());
        if Self::can_roam(ctx)
            && (gone || ctx.roam.probing.is_some_and(|r| r != MoveReason::Preferred))
        {
            let reason = match ctx.roam.probing {
                Some(r) if !gone => r,
                _ => MoveReason::LocalAddressGone,
            };
            // The update that follows the move carries our new list.
            self.start_probe(ctx, now, reason);
        } else if ctx.roam.additional(&ctx.paths) != ctx.roam.announced {
            self.want(Box::new(AddressUpdate));
        }
        if Self::can_roam(ctx) && ctx.cfg.roam.prefer_best_path && ctx.roam.probing.is_none() {
            if let Some(better) = ctx.roam.better(&ctx.paths) {
                ctx.roam.probing = Some(MoveReason::Preferred);
                self.want(Box::new(PathCheck::optional(vec![better])));
            }
        }
        self.kick(ctx, now);
    }

    /// See `IkeSa::request_move`.
    pub(super) fn request_move(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        local: std::net::IpAddr,
        remote: Option<std::net::IpAddr>,
    ) -> Result<bool, MoveError> {
        if !ctx.paths.mobike() {
            return Err(MoveError::NoMobike);
        }
        if !ctx.original_initiator {
            return Err(MoveError::NotInitiator);
        }
        let (l0, r0) = ctx.paths.pair();
        let remote = remote.unwrap_or(r0.ip());
        if local.is_ipv4() != remote.is_ipv4() || !ctx.roam.usable(local) {
            return Err(MoveError::BadAddress);
        }
        let pair = (
            SocketAddr::new(local, l0.port()),
            SocketAddr::new(remote, r0.port()),
        );
        if pair == (l0, r0) {
            return Ok(false);
        }
        self.switch(ctx, now, pair, MoveReason::Operator);
        self.kick(ctx, now);
        Ok(true)
    }

    /// See `IkeSa::note_traffic`.
    pub(super) fn note_traffic(&mut self, ctx: &mut Ctx, now: Instant, sent: bool, received: bool) {
        if received {
            ctx.roam.unanswered_since = None;
            ctx.timers.stop(Timer::PathCheck);
            self.note_activity(ctx, now);
            return;
        }
        let Some(delay) = ctx.cfg.roam.check_delay else {
            return;
        };
        if sent && Self::can_roam(ctx) && ctx.roam.unanswered_since.is_none() {
            ctx.roam.unanswered_since = Some(now);
            ctx.timers.set(Timer::PathCheck, now + delay);
        }
    }

    /// MOBIKE: traffic went unanswered for `path_check_delay`: check the current path
    /// (the outstanding request of ours, if one is, becomes the check).
    fn path_check(&mut self, ctx: &mut Ctx, now: Instant) {
        if !Self::can_roam(ctx) || ctx.roam.probing.is_some() {
            return;
        }
        ctx.stats.path_checks += 1;
        let r = ctx.cfg.roam;
        if self.ch.pending.is_some() {
            if self.ch.sent_on() == [ctx.paths.pair()] {
                self.ch
                    .check_mode(ctx, now, (r.check_tries, r.check_interval), true);
            }
        } else {
            self.want(Box::new(PathCheck::current()));
        }
    }

    /// Runs the retransmission, lifetime and liveness timers due at `now`. `Err`: the IKE
    /// SA ends, because a request went unanswered for the give-up time (`Timeout`) or it
    /// reached its hard lifetime (`Expired`, a Delete was sent).
    pub(super) fn on_timers(&mut self, ctx: &mut Ctx, now: Instant) -> Result<(), FailReason> {
        let mut alive = true;
        match self.ch.run_retransmit(ctx, now) {
            Tick::GiveUp => alive = false,
            Tick::PathDead => {
                let reason = ctx.roam.probing.unwrap_or(MoveReason::PathDead);
                self.start_probe(ctx, now, reason);
            }
            Tick::Drop => {
                // The preferred path did not answer. The request's Message ID is used:
                // it now goes on the current path (a liveness check there), so that the
                // peer sees no gap in our IDs.
                ctx.roam.probing = None;
                let pair = ctx.paths.pair();
                if let Some(p) = self.ch.pending.take() {
                    let base = self.ch.first_bytes().unwrap_or_default();
                    let copies = seal_copies(&[pair], &base);
                    self.ch.pending = Some(p);
                    let iv = ctx.cfg.retransmit.initial;
                    self.ch.fan_out(ctx, now, copies, iv);
                }
            }
            Tick::Alive => {}
        }
        for ch in &mut self.retiring {
            match ch.run_retransmit(ctx, now) {
                Tick::GiveUp => alive = false,
                Tick::Drop => {
                    ch.finish(ctx);
                }
                Tick::Alive | Tick::PathDead => {}
            }
        }
        if !alive {
            return Err(FailReason::Timeout);
        }
        if ctx.timers.take_due(Timer::PathCheck, now) {
            self.path_check(ctx, now);
        }
        if ctx.timers.is_due(Timer::IkeExpire, now) {
            self.send_last(ctx, now, Box::new(Delete::ike(None)));
            return Err(FailReason::Expired);
        }
        if ctx.timers.take_due(Timer::IkeRekey, now) {
            self.want(Box::new(IkeRekey::new(None)));
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
                self.want(Box::new(ChildRekey::new(s, None)));
            }
        }
        if self.idle() && ctx.timers.is_due(Timer::Dpd, now) {
            self.want(Box::new(Liveness));
        }
        self.kick(ctx, now);
        Ok(())
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
        self.want(Box::new(Delete::children(
            expired.iter().map(|&(i, _)| i).collect(),
        )));
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
            self.want(Box::new(ChildRekey::new(spi_in, None)));
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
        let rekey = Key::ChildRekey(spi_in);
        let ours_pending = self.outstanding(&rekey);
        let ours_queued = self.queued(&rekey);
        let action = if c.rekeyed || c.peer_rekey.is_some() || ours_pending {
            SeqLimitAction::Replacing
        } else if !exhausted {
            // Queued already (by its lifetime, say) or not: one rekey either way.
            self.want(Box::new(ChildRekey::new(spi_in, None)));
            SeqLimitAction::Rekey
        } else {
            if ours_queued {
                self.ch.todo.retain(|a| a.key() != rekey);
                for ch in &mut self.retiring {
                    ch.todo.retain(|a| a.key() != rekey);
                }
            }
            let name = c.name.clone();
            self.expire_children(ctx, &[(spi_in, spi_out)]);
            let recreate = ctx.original_initiator;
            if recreate {
                self.want(Box::new(ChildCreate::new(name, None)));
            }
            SeqLimitAction::Delete { recreate }
        };
        self.kick(ctx, now);
        Some(action)
    }

    /// Whether no request of ours is outstanding or queued.
    fn idle(&self) -> bool {
        self.channels()
            .all(|ch| ch.pending.is_none() && ch.todo.is_empty())
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
        self.channels().any(|ch| {
            matches!(
                ch.pending.as_ref().map(|p| p.ex.key()),
                Some(Key::ChildRekey(_) | Key::IkeRekey)
            )
        })
    }

    /// See `IkeSa::mif_request`.
    pub(super) fn mif_request(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        op: crate::wire::MifOperation,
    ) -> Result<(), MifError> {
        super::exchange::mif::check_request(ctx, &op)?;
        let key = Key::Other("mif");
        let waiting: usize = self
            .channels()
            .map(|ch| ch.todo.iter().filter(|t| t.key() == key).count())
            .sum();
        if waiting >= super::exchange::mif::MAX_QUEUED {
            return Err(MifError::Busy);
        }
        self.queue(Box::new(MifRequest::new(Some(op))));
        self.kick(ctx, now);
        Ok(())
    }

    /// Our interface table changed from `before` (see `exchange::mif::local_changed`):
    /// the automatic requests are queued, as many as the queue takes.
    pub(super) fn mif_local_changed(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        before: &[crate::wire::MifInterface],
    ) {
        let key = Key::Other("mif");
        for ex in super::exchange::mif::local_changed(ctx, before) {
            let waiting: usize = self
                .channels()
                .map(|ch| ch.todo.iter().filter(|t| t.key() == key).count())
                .sum();
            if waiting >= super::exchange::mif::MAX_QUEUED {
                ctx.stats.mif_refused += 1;
                break;
            }
            self.queue(Box::new(ex));
        }
        self.kick(ctx, now);
    }

    /// Tests only: the peer's requests are offered to `r` before any other exchange.
    #[cfg(test)]
    pub(super) fn register(&mut self, r: Responder) {
        self.responders.insert(0, r);
    }
}
