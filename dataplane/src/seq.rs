//! The outbound sequence counter of an SA.
//!
//! One atomic per SA, shared by every worker. It never wraps: RFC 4303 section 3.3.3 forbids
//! reusing a sequence number (and with the sequence number as the AEAD's explicit IV, reuse
//! would also repeat a nonce). Without ESN the last usable number is 2^32-1, with ESN 2^64-1;
//! after that [`SeqCounter::next`] fails until the SA is replaced by a rekey.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The counter ran out: the SA must not send again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqExhausted;

impl std::fmt::Display for SeqExhausted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("sequence numbers exhausted, the SA needs a rekey")
    }
}

impl std::error::Error for SeqExhausted {}

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
        }
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
    pub fn reserve(&self, n: u64) -> Result<(u64, SeqNotice), SeqExhausted> {
        // Relaxed is enough: uniqueness comes from the read-modify-write itself, and no other
        // memory is published through this counter.
        let prev = self
            .last
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                last.checked_add(n).filter(|&end| end <= self.limit)
            })
            .map_err(|_| SeqExhausted)?;
        let end = prev + n;
        let notice = if end >= self.soft && !self.soft_reported.swap(true, Ordering::Relaxed) {
            SeqNotice::SoftLimit
        } else {
            SeqNotice::None
        };
        Ok((prev + 1, notice))
    }

    /// Takes the next number.
    #[inline]
    pub fn next(&self) -> Result<(u64, SeqNotice), SeqExhausted> {
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
        assert_eq!(c.next(), Err(SeqExhausted));
        assert_eq!(c.next(), Err(SeqExhausted));
        assert_eq!(c.last(), u64::from(u32::MAX));
    }

    #[test]
    fn never_wraps_with_esn() {
        let c = SeqCounter::new(true);
        c.set_last(u64::MAX - 1);
        assert_eq!(c.next().unwrap().0, u64::MAX);
        assert_eq!(c.next(), Err(SeqExhausted));
        assert_eq!(c.reserve(2), Err(SeqExhausted));
    }

    #[test]
    fn a_batch_that_does_not_fit_takes_nothing() {
        let c = SeqCounter::with_limits(10, 10);
        c.set_last(8);
        assert_eq!(c.reserve(3), Err(SeqExhausted));
        assert_eq!(c.reserve(2).unwrap().0, 9);
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
