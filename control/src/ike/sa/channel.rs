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
    /// The sealed message (all its fragments, back to back).
    pub(in crate::ike::sa) bytes: Vec<u8>,
    /// Where it was sent from and to: a retransmission goes the same way.
    pub(in crate::ike::sa) local: SocketAddr,
    pub(in crate::ike::sa) remote: SocketAddr,
    pub(in crate::ike::sa) first_sent: Instant,
    pub(in crate::ike::sa) interval: Duration,
}

impl Retransmit {
    /// `bytes` sent now from `local` to `remote`, with the configured first interval; arms
    /// `timer`.
    pub(in crate::ike::sa) fn start(
        ctx: &mut Ctx,
        now: Instant,
        timer: Timer,
        (local, remote): (SocketAddr, SocketAddr),
        bytes: Vec<u8>,
    ) -> Retransmit {
        let interval = ctx.cfg.retransmit.initial;
        ctx.send_to(local, remote, bytes.clone());
        ctx.timers.set(timer, now + interval);
        Retransmit {
            bytes,
            local,
            remote,
            first_sent: now,
            interval,
        }
    }

    /// Sends the request again if `timer` is due, and re-arms it with twice the interval.
    /// `false`: the give-up time has passed unanswered.
    pub(in crate::ike::sa) fn run(&mut self, ctx: &mut Ctx, now: Instant, timer: Timer) -> bool {
        if !ctx.timers.is_due(timer, now) {
            return true;
        }
        let give_up = self.first_sent + ctx.cfg.retransmit.give_up;
        if now >= give_up {
            return false;
        }
        self.interval = self.interval.saturating_mul(2);
        ctx.timers.set(timer, (now + self.interval).min(give_up));
        ctx.stats.retransmitted += 1;
        ctx.send_to(self.local, self.remote, self.bytes.clone());
        true
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

    /// Sends the sealed request `bytes` (message ID `id`, for exchange `ex`) from `local`
    /// to `remote`; it is outstanding until answered, and retransmitted.
    pub(in crate::ike::sa) fn send_request(
        &mut self,
        ctx: &mut Ctx,
        now: Instant,
        (ex, id): (Box<dyn Exchange>, u32),
        path: (SocketAddr, SocketAddr),
        bytes: Vec<u8>,
    ) {
        self.retransmit = Some(Retransmit::start(ctx, now, self.timer(), path, bytes));
        self.pending = Some(Pending { ex, id });
    }

    /// Ends the outstanding request (answered, or moot) and returns it.
    pub(in crate::ike::sa) fn finish(&mut self, ctx: &mut Ctx) -> Option<Pending> {
        self.retransmit = None;
        ctx.timers.stop(self.timer());
        self.pending.take()
    }

    /// Retransmits the outstanding request if its time has come. `false`: its give-up time
    /// has passed unanswered.
    /// Our outstanding request's retransmissions go on `path` from now on (the IKE SA
    /// moved: RFC 4555 section 3.5 retransmits to the new addresses).
    pub(in crate::ike::sa) fn redirect(&mut self, (local, remote): (SocketAddr, SocketAddr)) {
        if let Some(r) = &mut self.retransmit {
            r.local = local;
            r.remote = remote;
        }
    }

    pub(in crate::ike::sa) fn run_retransmit(&mut self, ctx: &mut Ctx, now: Instant) -> bool {
        let timer = self.timer();
        match self.retransmit.as_mut() {
            Some(rt) => rt.run(ctx, now, timer),
            None => true,
        }
    }

    /// Forgets the channel's requests and stops its timer (the IKE SA is dropped).
    pub(in crate::ike::sa) fn forget(&mut self, ctx: &mut Ctx) {
        self.finish(ctx);
        self.todo.clear();
    }
}
