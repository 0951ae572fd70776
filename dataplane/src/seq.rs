//! The outbound sequence counter of an SA.
//!
//! One atomic per SA, shared by every worker. It never wraps: RFC 4303 section 3.3.3 forbids
//! reusing a sequence number (and with the sequence number as the AEAD's explicit IV, reuse
//! would also repeat a nonce). Without ESN the last usable number is 2^32-1, with ESN 2^64-1;
//! after that [`SeqCounter::next`] fails until the SA is replaced by a rekey.
//!
//! A manually keyed SA has a static key, so its numbers must also stay unique across
//! restarts: [`crate::marks`] keeps a mark on disk and lets the counter hand out numbers only
//! up to a *ceiling* that is already stored there ([`SeqCounter::set_ceiling`]). IKE SAs have
//! fresh keys and no ceiling.
//!
//! The keeper sleeps until it is needed: it sets a [`Renewal`] point below the ceiling, and
//! the first worker whose number passes it wakes the keeper (one `unpark`), so an idle or
//! steady SA costs the keeper no periodic wake-ups.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;

/// Where a ceiling asks to be raised: once a number reaches [`Renewal::at`], the first
/// worker that sees it wakes the thread that keeps the ceiling (the mark keeper).
///
/// One relaxed load per packet on the hot path; the wake-up itself (a swap and an
/// `unpark`) happens once per renewal.
#[derive(Debug)]
pub struct Renewal {
    /// The number from which the keeper wants to hear (`u64::MAX`: not armed).
    at: AtomicU64,
    /// The keeper's thread, set when it takes the SA. Locked only when waking it.
    keeper: Mutex<Option<Thread>>,
}

impl Default for Renewal {
    fn default() -> Self {
        Renewal {
            at: AtomicU64::new(u64::MAX),
            keeper: Mutex::new(None),
        }
    }
}

impl Renewal {
    /// The thread to wake from now on.
    pub fn set_keeper(&self, thread: Thread) {
        *self.keeper.lock().unwrap_or_else(|p| p.into_inner()) = Some(thread);
    }

    /// Wake the keeper once a number reaches `at` (it disarms itself when it fires).
    pub fn arm(&self, at: u64) {
        self.at.store(at, Ordering::Relaxed);
    }

    /// The armed point (`u64::MAX`: not armed).
    pub fn at(&self) -> u64 {
        self.at.load(Ordering::Relaxed)
    }

    /// Called with each number used: wakes the keeper the first time one reaches the armed
    /// point.
    #[inline]
    pub fn reached(&self, n: u64) {
        if n >= self.at.load(Ordering::Relaxed) {
            self.wake();
        }
    }

    /// Wakes the keeper now if it is armed (also: a number was refused at the ceiling).
    #[cold]
    pub fn wake(&self) {
        // Only the worker that disarms it wakes the keeper; the others go on.
        if self.at.swap(u64::MAX, Ordering::Relaxed) != u64::MAX
            && let Some(t) = &*self.keeper.lock().unwrap_or_else(|p| p.into_inner())
        {
            t.unpark();
        }
    }
}

/// Why no sequence number was handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqError {
    /// The counter ran out: the SA must not send again.
    Exhausted,
    /// The numbers lie above the ceiling stored on disk (manual SAs): not yet usable. The
    /// mark keeper raises the ceiling ahead of the traffic, so this is rare and brief.
    Unreserved,
}

impl std::fmt::Display for SeqError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SeqError::Exhausted => "sequence numbers exhausted, the SA needs a rekey",
            SeqError::Unreserved => "sequence numbers above the mark stored on disk",
        })
    }
}

impl std::error::Error for SeqError {}

/// What happened when numbers were taken, beyond the numbers themselves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqNotice {
    /// Nothing to report.
    None,
    /// This call crossed the soft limit: ask for a rekey (reported once per counter).
    SoftLimit,
}

/// A monotonic, never-wrapping sequence counter.
#[derive(Debug)]
pub struct SeqCounter {
    /// The last number handed out (0 before the first packet).
    last: AtomicU64,
    limit: u64,
    soft: u64,
    soft_reported: AtomicBool,
    /// Highest number that may be handed out now (`u64::MAX`: no ceiling).
    ceiling: AtomicU64,
    /// Reservations refused because of the ceiling.
    unreserved: AtomicU64,
    /// Where the keeper wants to raise the ceiling.
    renewal: Renewal,
}

impl SeqCounter {
    /// A counter for an SA with or without extended sequence numbers. The soft limit, at which
    /// a rekey is requested, sits at 7/8 of the space.
    pub fn new(esn: bool) -> Self {
        let limit = if esn { u64::MAX } else { u64::from(u32::MAX) };
        Self::with_limits(limit, limit - limit / 8)
    }

    /// A counter with explicit limits (tests start near the end of the space with this).
    pub fn with_limits(limit: u64, soft: u64) -> Self {
        SeqCounter {
            last: AtomicU64::new(0),
            limit,
            soft: soft.min(limit),
            soft_reported: AtomicBool::new(false),
            ceiling: AtomicU64::new(u64::MAX),
            unreserved: AtomicU64::new(0),
            renewal: Renewal::default(),
        }
    }

    /// Allows numbers up to `ceiling` (inclusive). Call it only once `ceiling` is stored
    /// durably: every number handed out afterwards may be on the wire a moment later.
    pub fn set_ceiling(&self, ceiling: u64) {
        // Relaxed: the store follows the fsync in this thread's program order, and a worker
        // that reads the new value therefore reads it after the fsync returned.
        self.ceiling.store(ceiling, Ordering::Relaxed);
    }

    /// The ceiling in force (`u64::MAX` when there is none).
    pub fn ceiling(&self) -> u64 {
        self.ceiling.load(Ordering::Relaxed)
    }

    /// Where the ceiling's keeper wants to hear from the counter.
    pub fn renewal(&self) -> &Renewal {
        &self.renewal
    }

    /// How many reservations the ceiling refused.
    pub fn unreserved(&self) -> u64 {
        self.unreserved.load(Ordering::Relaxed)
    }

    /// Starts the counter after `last` (tests, and resuming a manual SA).
    pub fn set_last(&self, last: u64) {
        self.last.store(last.min(self.limit), Ordering::Relaxed);
    }

    /// The last number handed out.
    pub fn last(&self) -> u64 {
        self.last.load(Ordering::Relaxed)
    }

    /// Takes `n` consecutive numbers, returning the first. Either all `n` are taken or none.
    #[inline]
    pub fn reserve(&self, n: u64) -> Result<(u64, SeqNotice), SeqError> {
        // Relaxed is enough: uniqueness comes from the read-modify-write itself, and no other
        // memory is published through this counter. The ceiling only ever rises, so reading it
        // once before the update never lets a number above a stored ceiling out.
        let bound = self.limit.min(self.ceiling.load(Ordering::Relaxed));
        let prev = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                last.checked_add(n).filter(|&end| end <= bound)
            })
            .map_err(|last| {
                if last.checked_add(n).is_some_and(|end| end <= self.limit) {
                    self.unreserved.fetch_add(1, Ordering::Relaxed);
                    self.renewal.wake();
                    SeqError::Unreserved
                } else {
                    SeqError::Exhausted
                }
            })?;
        let end = prev + n;
        self.renewal.reached(end);
        let notice = if end >= self.soft && !self.soft_reported.swap(true, Ordering::Relaxed) {
            SeqNotice::SoftLimit
        } else {
            SeqNotice::None
        };
        Ok((prev + 1, notice))
    }

    /// Takes the next number.
    #[inline]
    pub fn next(&self) -> Result<(u64, SeqNotice), SeqError> {
        self.reserve(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_at_one_and_counts_up() {
        let c = SeqCounter::new(false);
        assert_eq!(c.next().unwrap().0, 1);
        assert_eq!(c.next().unwrap().0, 2);
        assert_eq!(c.reserve(10).unwrap().0, 3);
        assert_eq!(c.next().unwrap().0, 13);
    }

    #[test]
    fn never_wraps_without_esn() {
        let c = SeqCounter::new(false);
        c.set_last(u64::from(u32::MAX) - 2);
        assert_eq!(c.next().unwrap().0, u64::from(u32::MAX) - 1);
        assert_eq!(c.next().unwrap().0, u64::from(u32::MAX));
        assert_eq!(c.next(), Err(SeqError::Exhausted));
        assert_eq!(c.next(), Err(SeqError::Exhausted));
        assert_eq!(c.last(), u64::from(u32::MAX));
    }

    #[test]
    fn never_wraps_with_esn() {
        let c = SeqCounter::new(true);
        c.set_last(u64::MAX - 1);
        assert_eq!(c.next().unwrap().0, u64::MAX);
        assert_eq!(c.next(), Err(SeqError::Exhausted));
        assert_eq!(c.reserve(2), Err(SeqError::Exhausted));
    }

    #[test]
    fn a_batch_that_does_not_fit_takes_nothing() {
        let c = SeqCounter::with_limits(10, 10);
        c.set_last(8);
        assert_eq!(c.reserve(3), Err(SeqError::Exhausted));
        assert_eq!(c.reserve(2).unwrap().0, 9);
    }

    #[test]
    fn the_ceiling_holds_numbers_back_until_it_rises() {
        let c = SeqCounter::new(false);
        c.set_ceiling(10);
        assert_eq!(c.reserve(8).unwrap().0, 1);
        assert_eq!(c.reserve(3), Err(SeqError::Unreserved));
        assert_eq!(c.reserve(2).unwrap().0, 9);
        assert_eq!(c.next(), Err(SeqError::Unreserved));
        assert_eq!(c.unreserved(), 2);
        assert_eq!(c.last(), 10);
        c.set_ceiling(20);
        assert_eq!(c.next().unwrap().0, 11);
        // The space's own end still says exhausted, whatever the ceiling.
        c.set_last(u64::from(u32::MAX));
        c.set_ceiling(u64::MAX);
        assert_eq!(c.next(), Err(SeqError::Exhausted));
    }

    #[test]
    fn soft_limit_is_reported_once() {
        let c = SeqCounter::with_limits(100, 50);
        c.set_last(48);
        assert_eq!(c.next().unwrap().1, SeqNotice::None);
        assert_eq!(c.next().unwrap().1, SeqNotice::SoftLimit);
        assert_eq!(c.next().unwrap().1, SeqNotice::None);
    }

    #[test]
    fn threads_never_share_a_number() {
        let c = SeqCounter::new(false);
        let mut all: Vec<u64> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..10_000).map(|_| c.next().unwrap().0).collect::<Vec<_>>()))
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 40_000);
        assert_eq!(all.first(), Some(&1));
        assert_eq!(all.last(), Some(&40_000));
    }
}
