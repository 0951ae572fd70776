//! The receive-side reorder buffer of an SA whose peer spreads packets over paths of
//! different delay (the aggregate policy).
//!
//! The sender numbers packets in the order it sends them, so the ESP sequence number is the
//! order TCP expects. Authentic packets (after the ICV and the replay window) are released to
//! the TUN in sequence order; a packet that arrives ahead of a gap is held until the gap fills
//! or until it has waited `window` (then the gap is taken as lost). Bounded in time and in
//! count, so a lost packet costs at most `window` of delay, never a stall.
//!
//! Several workers receive for one SA, so the state sits behind a mutex, and packets are
//! written to the TUN while it is held: releasing in order and then racing another worker to
//! the TUN would undo the work. Only SAs with a reorder window take this path.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Most packets held at once; beyond it the oldest gap is given up.
const MAX_HELD: usize = 8192;

/// A reorder buffer.
#[derive(Debug)]
pub struct Reorder {
    window_ns: u64,
    state: Mutex<State>,
    /// Arrival time of the oldest held packet, `u64::MAX` when none: lets workers skip the
    /// lock when nothing can expire.
    oldest_ns: AtomicU64,
    held_total: AtomicU64,
    gaps_skipped: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Next sequence number to release; 0 before the first packet.
    next: u64,
    held: BTreeMap<u64, Held>,
    /// (sequence number, arrival) of every packet put in `held`, in arrival order (the
    /// workers' clocks agree to within a batch, so the front is the oldest). Entries
    /// whose packet has left `held` are dropped lazily from the front, so the oldest held
    /// packet is found in amortised O(1) per push instead of a scan of everything held.
    arrivals: VecDeque<(u64, u64)>,
    pool: Vec<Vec<u8>>,
}

impl State {
    /// Arrival time of the oldest packet still held, dropping stale entries on the way.
    fn oldest(&mut self) -> Option<u64> {
        while let Some(&(seq, at)) = self.arrivals.front() {
            if self.held.get(&seq).is_some_and(|h| h.at_ns == at) {
                return Some(at);
            }
            self.arrivals.pop_front();
        }
        None
    }

    fn note_arrival(&mut self, seq: u64, at: u64) {
        if self.arrivals.len() >= 2 * MAX_HELD {
            // Stale entries behind a live front: keep the live ones (amortised O(1), since
            // at least MAX_HELD entries went in since the last time).
            let held = &self.held;
            self.arrivals
                .retain(|&(s, a)| held.get(&s).is_some_and(|h| h.at_ns == a));
        }
        self.arrivals.push_back((seq, at));
    }
}

#[derive(Debug)]
struct Held {
    /// The inner packet; `None` for a sequence number that carries nothing to deliver (a
    /// probe, a dropped packet).
    pkt: Option<Vec<u8>>,
    at_ns: u64,
}

impl Reorder {
    /// A buffer that holds packets for at most `window`.
    pub fn new(window: Duration) -> Self {
        Reorder {
            window_ns: window.as_nanos() as u64,
            state: Mutex::new(State::default()),
            oldest_ns: AtomicU64::new(u64::MAX),
            held_total: AtomicU64::new(0),
            gaps_skipped: AtomicU64::new(0),
        }
    }

    /// Packets that had to wait, and gaps given up as lost.
    pub fn stats(&self) -> (u64, u64) {
        (
            self.held_total.load(Ordering::Relaxed),
            self.gaps_skipped.load(Ordering::Relaxed),
        )
    }

    /// Takes the authentic packet `seq` (or a marker with nothing to deliver) and releases,
    /// through `deliver`, everything now in order. `deliver` runs under the lock.
    pub fn push(&self, seq: u64, pkt: Option<&[u8]>, now_ns: u64, deliver: &mut dyn FnMut(&[u8])) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.next == 0 {
            st.next = seq;
        }
        if seq < st.next {
            // Late: its gap was already given up. Better late than never for TCP.
            if let Some(p) = pkt {
                deliver(p);
            }
            return;
        }
        if seq == st.next {
            if let Some(p) = pkt {
                deliver(p);
            }
            // Saturating: with ESN a sequence number can be u64::MAX, and nothing follows.
            st.next = seq.saturating_add(1);
            self.release_in_order(&mut st, deliver);
        } else {
            let copy = pkt.map(|p| {
                let mut v = st.pool.pop().unwrap_or_default();
                v.clear();
                v.extend_from_slice(p);
                v
            });
            st.held.insert(
                seq,
                Held {
                    pkt: copy,
                    at_ns: now_ns,
                },
            );
            st.note_arrival(seq, now_ns);
            self.held_total.fetch_add(1, Ordering::Relaxed);
            if st.held.len() > MAX_HELD {
                self.skip_gap(&mut st, deliver);
            }
        }
        self.expire_locked(&mut st, now_ns, deliver);
        self.update_oldest(&mut st);
    }

    /// Gives up gaps whose held packets waited longer than the window.
    pub fn expire(&self, now_ns: u64, deliver: &mut dyn FnMut(&[u8])) {
        let oldest = self.oldest_ns.load(Ordering::Relaxed);
        if oldest == u64::MAX || now_ns.saturating_sub(oldest) < self.window_ns {
            return;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.expire_locked(&mut st, now_ns, deliver);
        self.update_oldest(&mut st);
    }

    fn expire_locked(&self, st: &mut State, now_ns: u64, deliver: &mut dyn FnMut(&[u8])) {
        while st
            .held
            .values()
            .next()
            .is_some_and(|h| now_ns.saturating_sub(h.at_ns) >= self.window_ns)
        {
            self.skip_gap(st, deliver);
        }
    }

    /// Declares the gap before the first held packet lost and releases what follows it.
    fn skip_gap(&self, st: &mut State, deliver: &mut dyn FnMut(&[u8])) {
        if let Some((&first, _)) = st.held.iter().next() {
            st.next = first;
            self.gaps_skipped.fetch_add(1, Ordering::Relaxed);
            self.release_in_order(st, deliver);
        }
    }

    fn release_in_order(&self, st: &mut State, deliver: &mut dyn FnMut(&[u8])) {
        while let Some(h) = st.held.remove(&st.next) {
            if let Some(p) = h.pkt {
                deliver(&p);
                if st.pool.len() < 256 {
                    st.pool.push(p);
                }
            }
            st.next = st.next.saturating_add(1);
        }
    }

    fn update_oldest(&self, st: &mut State) {
        let oldest = st.oldest().unwrap_or(u64::MAX);
        self.oldest_ns.store(oldest, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(r: &Reorder, seq: u64, at: u64, out: &mut Vec<u8>) {
        r.push(seq, Some(&[seq as u8]), at, &mut |p| out.push(p[0]));
    }

    #[test]
    fn releases_in_order_and_fills_gaps() {
        let r = Reorder::new(Duration::from_millis(10));
        let mut out = Vec::new();
        run(&r, 1, 0, &mut out);
        run(&r, 3, 0, &mut out);
        run(&r, 4, 0, &mut out);
        assert_eq!(out, [1]);
        run(&r, 2, 0, &mut out);
        assert_eq!(out, [1, 2, 3, 4]);
        // A marker fills a gap without delivering anything.
        run(&r, 6, 0, &mut out);
        r.push(5, None, 0, &mut |p| out.push(p[0]));
        assert_eq!(out, [1, 2, 3, 4, 6]);
    }

    #[test]
    fn a_lost_packet_costs_at_most_the_window() {
        let r = Reorder::new(Duration::from_millis(10));
        let mut out = Vec::new();
        run(&r, 1, 0, &mut out);
        run(&r, 3, 1_000_000, &mut out);
        r.expire(5_000_000, &mut |p| out.push(p[0]));
        assert_eq!(out, [1]);
        r.expire(11_000_000, &mut |p| out.push(p[0]));
        assert_eq!(out, [1, 3]);
        // The lost packet turns up late: delivered, not held.
        run(&r, 2, 12_000_000, &mut out);
        assert_eq!(out, [1, 3, 2]);
        assert_eq!(r.stats(), (1, 1));
    }

    /// The oldest arrival (what lets workers skip the lock) is found without a scan, and is
    /// the oldest still held after releases.
    #[test]
    fn the_oldest_arrival_is_tracked() {
        let r = Reorder::new(Duration::from_millis(10));
        let mut out = Vec::new();
        run(&r, 1, 0, &mut out);
        run(&r, 5, 1_000, &mut out);
        run(&r, 3, 8_000, &mut out);
        assert_eq!(r.oldest_ns.load(Ordering::Relaxed), 1_000);
        run(&r, 2, 9_000, &mut out);
        run(&r, 4, 9_500, &mut out);
        assert_eq!(out, [1, 2, 3, 4, 5]);
        assert_eq!(r.oldest_ns.load(Ordering::Relaxed), u64::MAX);
        run(&r, 7, 20_000, &mut out);
        assert_eq!(r.oldest_ns.load(Ordering::Relaxed), 20_000);
    }

    /// Packets released long ago leave no trace: the arrival list stays bounded while one
    /// gap is held open and many packets come and go behind it.
    #[test]
    fn the_arrival_list_stays_bounded() {
        let r = Reorder::new(Duration::from_secs(100));
        let mut n = 0usize;
        r.push(1, Some(&[0]), 0, &mut |_| n += 1);
        for s in 3..(3 + 5 * MAX_HELD as u64) {
            r.push(s, Some(&[0]), 0, &mut |_| n += 1);
            let st = r.state.lock().unwrap();
            assert!(st.arrivals.len() <= 2 * MAX_HELD + 1);
        }
        assert!(n > MAX_HELD);
    }

    #[test]
    fn the_last_sequence_number_does_not_overflow() {
        // Found by the reorder fuzz target: releasing u64::MAX overflowed `next`.
        let r = Reorder::new(Duration::from_millis(10));
        let mut out = Vec::new();
        r.push(u64::MAX - 2, Some(&[1]), 0, &mut |p| out.push(p[0]));
        r.push(u64::MAX, Some(&[3]), 0, &mut |p| out.push(p[0]));
        r.push(u64::MAX - 1, Some(&[2]), 0, &mut |p| out.push(p[0]));
        assert_eq!(out, [1, 2, 3]);
        let r = Reorder::new(Duration::from_millis(10));
        r.push(u64::MAX, Some(&[9]), 0, &mut |p| out.push(p[0]));
        assert_eq!(out, [1, 2, 3, 9]);
    }

    #[test]
    fn bounded_in_count() {
        let r = Reorder::new(Duration::from_secs(100));
        let mut n = 0usize;
        r.push(1, Some(&[0]), 0, &mut |_| n += 1);
        for s in 3..(3 + MAX_HELD as u64 + 10) {
            r.push(s, Some(&[0]), 0, &mut |_| n += 1);
        }
        assert!(n > 1, "the oldest gap was given up");
    }
}
