//! Every deadline of one IKE SA in one table keyed by [`Timer`] (after quinn-proto's
//! `TimerTable`): set, read, stop, and the earliest for `IkeSa::poll_timeout`.

use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(in crate::ike::sa) enum Timer {
    /// The next retransmission (or the give-up) of our outstanding request on the
    /// message window (channel) with this id.
    Retransmit(u32),
    /// A half-open responder SA expires.
    HalfOpen,
    /// The IKE SA is rekeyed (soft lifetime, jitter applied).
    IkeRekey,
    /// The IKE SA is deleted (hard lifetime).
    IkeExpire,
    /// A liveness check is due: armed only while no request is outstanding or queued.
    Dpd,
    /// MOBIKE: outbound traffic has had no answer for `path_check_delay`: check the path.
    PathCheck,
    /// The child SA with this inbound SPI is rekeyed (soft lifetime, jitter applied).
    ChildRekey(u32),
    /// The child SA with this inbound SPI is deleted (hard lifetime).
    ChildExpire(u32),
}

/// The deadlines that are set. A handful per IKE SA and two per child SA, so a vector
/// searched linearly is enough.
#[derive(Debug, Default)]
pub(in crate::ike::sa) struct TimerTable {
    entries: Vec<(Timer, Instant)>,
}

impl TimerTable {
    /// Sets `t` to fire at `at`, replacing an earlier setting.
    pub(in crate::ike::sa) fn set(&mut self, t: Timer, at: Instant) {
        match self.entries.iter_mut().find(|(k, _)| *k == t) {
            Some(e) => e.1 = at,
            None => self.entries.push((t, at)),
        }
    }

    /// Sets `t` to `at`, or stops it when `at` is `None`.
    pub(in crate::ike::sa) fn set_or_stop(&mut self, t: Timer, at: Option<Instant>) {
        match at {
            Some(at) => self.set(t, at),
            None => self.stop(t),
        }
    }

    /// When `t` fires, if it is set.
    pub(in crate::ike::sa) fn get(&self, t: Timer) -> Option<Instant> {
        self.entries.iter().find(|(k, _)| *k == t).map(|e| e.1)
    }

    /// Stops `t`.
    pub(in crate::ike::sa) fn stop(&mut self, t: Timer) {
        self.entries.retain(|(k, _)| *k != t);
    }

    /// Whether `t` is set and due at `now`.
    pub(in crate::ike::sa) fn is_due(&self, t: Timer, now: Instant) -> bool {
        self.get(t).is_some_and(|at| now >= at)
    }

    /// Stops `t` if it is due at `now`, and says whether it was.
    pub(in crate::ike::sa) fn take_due(&mut self, t: Timer, now: Instant) -> bool {
        let due = self.is_due(t, now);
        if due {
            self.stop(t);
        }
        due
    }

    /// The earliest deadline set.
    pub(in crate::ike::sa) fn next_expiry(&self) -> Option<Instant> {
        self.entries.iter().map(|e| e.1).min()
    }

    /// Stops every timer.
    pub(in crate::ike::sa) fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::{Timer, TimerTable};
    use std::time::{Duration, Instant};

    #[test]
    fn set_get_stop_next_expiry() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = TimerTable::default();
        assert_eq!(t.next_expiry(), None);
        t.set(Timer::IkeRekey, t0 + 5 * s);
        t.set(Timer::ChildRekey(7), t0 + 3 * s);
        t.set(Timer::ChildRekey(8), t0 + 4 * s);
        assert_eq!(t.next_expiry(), Some(t0 + 3 * s));
        t.set(Timer::ChildRekey(7), t0 + 6 * s);
        assert_eq!(t.get(Timer::ChildRekey(7)), Some(t0 + 6 * s));
        assert_eq!(t.next_expiry(), Some(t0 + 4 * s));
        assert!(!t.take_due(Timer::ChildRekey(8), t0 + 3 * s));
        assert!(t.take_due(Timer::ChildRekey(8), t0 + 4 * s));
        assert_eq!(t.get(Timer::ChildRekey(8)), None);
        t.stop(Timer::IkeRekey);
        t.set_or_stop(Timer::Dpd, None);
        assert_eq!(t.next_expiry(), Some(t0 + 6 * s));
        t.clear();
        assert_eq!(t.next_expiry(), None);
    }
}
