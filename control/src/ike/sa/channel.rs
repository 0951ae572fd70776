//! One IKE SA's message channel: its keys, the message IDs of both directions (a window of
//! one each), the response cache, and our own requests: the one outstanding, its
//! retransmission, and those queued behind it. An established IKE SA has a channel per
//! IKE SA it holds (the current one, old ones after a rekey being deleted, a peer's rekey
//! in a collision), each with its own window, so two IKE SAs with the same peer run side
//! by side.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::core::Core;
use super::ctx::Ctx;
use super::exchange::Exchange;
use super::timer::Timer;

/// Our outstanding request on a channel: the exchange and its message ID.
pub(in crate::ike::sa) struct Pending {
    pub(in crate::ike::sa) ex: Box<dyn Exchange>,
    pub(in crate::ike::sa) id: u32,
}

/// An outstanding request as sent, and its retransmission schedule (the next deadline is
/// `Timer::Retransmit` in the timer table).
#[derive(Debug)]
pub(in crate::ike::sa) struct Retransmit {
    /// Where it goes and the sealed message (all its fragments, back to back): one copy,
    /// or (a MOBIKE probe) one per candidate pair, all with the same message ID.
    pub(in crate::ike::sa) copies: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    pub(in crate::ike::sa) first_sent: Instant,
    pub(in crate::ike::sa) interval: Duration,
    /// A MOBIKE path check: the interval stays fixed (no doubling).
    fixed: bool,
    /// MOBIKE: from this time on the current path counts as dead (once).
    dead_at: Option<Instant>,
    /// An optional request (a probe of a preferred path): dropped, not fatal, at this time.
    drop_at: Option<Instant>,
}

/// What a retransmission timer did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::ike::sa) enum Tick {
    /// Not due, or sent again.
    Alive,
    /// Unanswered on the current path for the MOBIKE path-check time: probe other paths.
    PathDead,
    /// An optional request's time is over: drop it.
    Drop,
    /// The give-up time has passed unanswered.
    GiveUp,
}

impl Retransmit {
    /// `copies` (pairs and sealed bytes; usually one, the current path) sent now, with the
    /// configured first interval; arms `timer`.
    pub(in crate::ike::sa) fn start(
        ctx: &mut Ctx,
        now: Instant,
        timer: Timer,
        copies: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    ) -> Retransmit {
        let interval = ctx.cfg.retransmit.initial;
        // MOBIKE as initiator: a request unanswered for the path-check time (delay and
        // tries) means the path is dead (RFC 4555 section 3.5: we pick another).
        let r = ctx.cfg.roam;
        let dead_at = (ctx.paths.mobike() && ctx.original_initiator)
            .then(|| r.check_delay.map(|d| now + d + r.dead_after()))
            .flatten();
        let rt = Retransmit {
            copies,
            first_sent: now,
            interval,
            fixed: false,
            dead_at,
            drop_at: None,
        };
        rt.send_all(ctx);
        rt.arm(ctx, now, timer);
        rt
    }

    /// Arms `timer` for the next retransmission, the give-up, or a MOBIKE deadline.
    fn arm(&self, ctx: &mut Ctx, now: Instant, timer: Timer) {
        let give_up = self.first_sent + ctx.cfg.retransmit.give_up;
        let at = [
            Some(now + self.interval),
            Some(give_up),
            self.dead_at,
            self.drop_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(give_up);
        ctx.timers.set(timer, at);
    }

    fn send_all(&self, ctx: &mut Ctx) {
        for (l, r, b) in &self.copies {
            ctx.send_to(*l, *r, b.clone());
        }
    }

    /// Sends the request again if `timer` is due, and re-arms it with twice the interval
    /// (a path check: the same interval).
    pub(in crate::ike::sa) fn tick(&mut self, ctx: &mut Ctx, now: Instant, timer: Timer) -> Tick {
        if !ctx.timers.is_due(timer, now) {
            return Tick::Alive;
        }
        let give_up = self.first_sent + ctx.cfg.retransmit.give_up;
        if now >= give_up {
            return Tick::GiveUp;
        }
        if self.drop_at.is_some_and(|d| now >= d) {
            return Tick::Drop;
        }
        if self.dead_at.is_some_and(|d| now >= d) {
            self.dead_at = None;
            self.fixed = false;
            self.arm(ctx, now, timer);
            return Tick::PathDead;
        }
        if !self.fixed {
            self.interval = self.interval.saturating_mul(2);
        }
        self.arm(ctx, now, timer);
        ctx.stats.retransmitted += 1;
        self.send_all(ctx);
        Tick::Alive
    }

    /// [`Retransmit::tick`] for the handshake: `false` once the give-up time has passed.
    pub(in crate::ike::sa) fn run(&mut self, ctx: &mut Ctx, now: Instant, timer: Timer) -> bool {
        self.tick(ctx, now, timer) != Tick::GiveUp
    }
}

/// One IKE SA's keys, windows and requests.
pub(in crate::ike::sa) struct Channel {
    /// Names this channel's retransmission timer.
    pub(in crate::ike::sa) id: u32,
    pub(in crate::ike::sa) core: Core,
    /// The next request ID we expect from the peer.
    pub(in crate::ike::sa) peer_next: u32,
    /// The last response we sent, for retransmitted requests.
    pub(in crate::ike::sa) last_response: Option<(u32, Vec<u8>)>,
    /// The message ID of our next request.
    pub(in crate::ike::sa) own_next: u32,
    /// Our outstanding request (a window of one).
    pub(in crate::ike::sa) pending: Option<Pending>,
    /// The outstanding request's bytes and retransmission schedule.
    retransmit: Option<Retransmit>,
    /// Requests to send on this IKE SA once nothing is outstanding on it.
    pub(in crate::ike::sa) todo: VecDeque<Box<dyn Exchange>>,
}

impl Channel {
    /// The channel of the IKE SA IKE_AUTH established, with the message IDs the handshake
    /// used.
    pub(in crate::ike::sa) fn after_auth(
        ctx: &mut Ctx,
        core: Core,
        (peer_next, own_next): (u32, u32),
        last_response: Option<(u32, Vec<u8>)>,
    ) -> Channel {
        Channel {
            id: ctx.channel_id(),
            core,
            peer_next,
            last_response,
            own_next,
            pending: None,
            retransmit: None,
            todo: VecDeque::new(),
        }
    }

    /// The channel of a new IKE SA from a rekey (message IDs from zero).
    pub(in crate::ike::sa) fn fresh(ctx: &mut Ctx, core: Core) -> Channel {
        Channel::after_auth(ctx, core, (0, 0), None)
    }

    pub(in crate::ike::sa) fn spis(&self) -> (u64, u64) {
        (self.core.spi_i, self.core.spi_r)
    }

    fn timer(&self) -> Timer {
        Timer::Retransmit(self.id)
    }

    /// Sends the sealed request (message ID `id`, for exchange `ex`) as `copies` (pairs
    /// and bytes: one, or a probe's one per pair); it is outstanding until answered, and
    /// retransmitted.
    pub(in crate::ike::sa) fn send_request(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        (ex, id): (Box<dyn Exchange>, u32),
        copies: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
    ) {
        self.retransmit = Some(Retransmit::start(ctx, now, self.timer(), copies));
        self.pending = Some(Pending { ex, id });
    }

    /// Ends the outstanding request (answered, or moot) and returns it.
    pub(in crate::ike::sa) fn finish(&mut self, ctx: &mut Ctx) -> Option<Pending> {
        self.retransmit = None;
        ctx.timers.stop(self.timer());
        self.pending.take()
    }

    /// Our outstanding request's retransmissions go on `path` from now on (the IKE SA
    /// moved: RFC 4555 section 3.5 retransmits to the new addresses), the copy sealed for
    /// that path if it was probed.
    pub(in crate::ike::sa) fn redirect(&mut self, (local, remote): (SocketAddr, SocketAddr)) {
        if let Some(r) = &mut self.retransmit {
            let i = r
                .copies
                .iter()
                .position(|c| (c.0, c.1) == (local, remote))
                .unwrap_or(0);
            let bytes = r.copies.swap_remove(i).2;
            r.copies = vec![(local, remote, bytes)];
        }
    }

    /// Retransmits the outstanding request if its time has come; see [`Tick`].
    pub(in crate::ike::sa) fn run_retransmit(&mut self, ctx: &mut Ctx, now: Instant) -> Tick {
        let timer = self.timer();
        match self.retransmit.as_mut() {
            Some(rt) => rt.tick(ctx, now, timer),
            None => Tick::Alive,
        }
    }

    /// The outstanding request becomes a MOBIKE path check: sent now (if `send_now`) and
    /// then `tries` times in all `interval` apart, after which the path counts as dead.
    pub(in crate::ike::sa) fn check_mode(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        (tries, interval): (u32, std::time::Duration),
        send_now: bool,
    ) {
        let timer = self.timer();
        if let Some(r) = &mut self.retransmit {
            if send_now {
                ctx.stats.retransmitted += 1;
                r.send_all(ctx);
            }
            r.fixed = true;
            r.interval = interval;
            r.dead_at = Some(now + interval.saturating_mul(tries.max(1)));
            r.arm(ctx, now, timer);
        }
    }

    /// The outstanding request (just sent) is a probe: retransmitted from `interval` on,
    /// doubling; if `drop_at`, optional: dropped unanswered then, not fatal.
    pub(in crate::ike::sa) fn probe_mode(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        interval: std::time::Duration,
        drop_at: Option<Instant>,
    ) {
        let timer = self.timer();
        if let Some(r) = &mut self.retransmit {
            r.interval = interval;
            r.drop_at = drop_at;
            r.dead_at = None;
            r.arm(ctx, now, timer);
        }
    }

    /// The sealed bytes of the outstanding request's first copy.
    pub(in crate::ike::sa) fn first_bytes(&self) -> Option<Vec<u8>> {
        self.retransmit
            .as_ref()
            .and_then(|r| r.copies.first())
            .map(|c| c.2.clone())
    }

    /// A MOBIKE probe: the outstanding request goes on each of `copies` now (same message
    /// ID), then every `interval`, doubling, until one answers or the give-up time (kept
    /// from the first send) passes.
    pub(in crate::ike::sa) fn fan_out(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        copies: Vec<(SocketAddr, SocketAddr, Vec<u8>)>,
        interval: std::time::Duration,
    ) {
        let timer = self.timer();
        if let Some(r) = &mut self.retransmit {
            r.copies = copies;
            r.fixed = false;
            r.dead_at = None;
            r.drop_at = None;
            r.interval = interval;
            ctx.stats.retransmitted += 1;
            r.send_all(ctx);
            r.arm(ctx, now, timer);
        }
    }

    /// Where the outstanding request goes (each copy's pair), if one is.
    pub(in crate::ike::sa) fn sent_on(&self) -> Vec<(SocketAddr, SocketAddr)> {
        self.retransmit
            .iter()
            .flat_map(|r| r.copies.iter().map(|c| (c.0, c.1)))
            .collect()
    }

    /// Forgets the channel's requests and stops its timer (the IKE SA is dropped).
    pub(in crate::ike::sa) fn forget(&mut self, ctx: &mut Ctx) {
        self.finish(ctx);
        self.todo.clear();
    }
}
