//! Limits on new responder IKE SAs, sans-IO: a global cap of half-open SAs, a cap per
//! source address (strongSwan's `block_threshold`), and a token bucket per source address
//! for IKE_SA_INIT requests.
//!
//! The daemon asks [`InitLimiter::check`] about every IKE_SA_INIT request that fits no SA,
//! before the COOKIE gate and before any responder state exists; it reports every
//! responder SA that starts ([`InitLimiter::opened`]) and every one that stops being
//! half-open (established, failed or dropped: [`InitLimiter::closed`]). A refusal is a
//! counted drop; nothing is sent back (no reflection, no work).
//!
//! Memory is bounded whatever the sources: the token buckets live in a fixed
//! set-associative table ([`RATE_SETS`] sets of [`RATE_WAYS`] entries, indexed by a keyed
//! hash so that a sender cannot aim at one set); a source that is not in its set replaces
//! the entry of that set that has been idle longest (the fullest bucket). Under a flood of
//! spoofed sources the table churns but never grows; an evicted source starts again with a
//! full bucket, which only matters for the few sources that share its set. The half-open
//! counts per source hold one entry per source with at least one half-open SA, so at most
//! `max_half_open` entries.
//!
//! A source is an IPv4 address, or the /64 prefix of an IPv6 address (one host usually
//! has a whole /64 to pick addresses from). Every operation costs O(1): a hash, and a scan
//! of one set.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use serde::Serialize;

/// Most responder IKE SAs still negotiating at once, by default.
pub const DEFAULT_MAX_HALF_OPEN: usize = 1024;
/// strongSwan's default `block_threshold`: half-open SAs per source.
pub const DEFAULT_BLOCK_THRESHOLD: usize = 5;
/// New IKE_SA_INIT requests accepted per second and source, by default.
pub const DEFAULT_INIT_RATE: u32 = 10;
/// Requests a source may send at once before the rate applies, by default.
pub const DEFAULT_INIT_BURST: u32 = 20;
/// Sets of the token-bucket table.
pub const RATE_SETS: usize = 1024;
/// Entries per set of the token-bucket table.
pub const RATE_WAYS: usize = 4;

/// The limits (`[ike]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InitLimits {
    /// Most half-open responder SAs in all (`init_limit_half_open`).
    pub max_half_open: usize,
    /// Most half-open responder SAs per source (`block_threshold`); 0: no limit.
    pub block_threshold: usize,
    /// New IKE_SA_INIT requests per second per source (`init_rate`); 0: no limit.
    pub init_rate: u32,
    /// The size of each source's bucket (`init_burst`, at least 1).
    pub init_burst: u32,
}

impl Default for InitLimits {
    fn default() -> Self {
        InitLimits {
            max_half_open: DEFAULT_MAX_HALF_OPEN,
            block_threshold: DEFAULT_BLOCK_THRESHOLD,
            init_rate: DEFAULT_INIT_RATE,
            init_burst: DEFAULT_INIT_BURST,
        }
    }
}

/// Why a new IKE_SA_INIT request was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `max_half_open` responder SAs are half-open.
    HalfOpen,
    /// Its source has `block_threshold` half-open SAs.
    Blocked,
    /// Its source's bucket is empty.
    Rate,
}

/// The limiter's counters, shown by `mifsec status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LimitStats {
    /// Dropped: the global cap of half-open SAs was reached.
    pub dropped_half_open: u64,
    /// Dropped: the source had `block_threshold` half-open SAs.
    pub dropped_blocked: u64,
    /// Dropped: the source exceeded its IKE_SA_INIT rate.
    pub dropped_rate: u64,
    /// Token buckets replaced in the full table by another source's.
    pub rate_evictions: u64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    source: IpAddr,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn level(&self, now: Instant, rate: f64, burst: f64) -> f64 {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + dt * rate).min(burst)
    }
}

/// The limiter: see the module documentation.
#[derive(Debug)]
pub struct InitLimiter {
    limits: InitLimits,
    buckets: Vec<Option<Bucket>>,
    hasher: RandomState,
    half_open: HashMap<IpAddr, usize>,
    total: usize,
    stats: LimitStats,
}

/// The source a limit applies to: the address, IPv4-mapped IPv6 as IPv4, IPv6 as its /64.
pub fn source_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(a) & !((1u128 << 64) - 1))),
        },
    }
}

impl InitLimiter {
    /// A limiter with `limits`, nothing half-open.
    pub fn new(limits: InitLimits) -> InitLimiter {
        InitLimiter {
            limits: InitLimits {
                init_burst: limits.init_burst.max(1),
                ..limits
            },
            buckets: vec![
                None;
                if limits.init_rate > 0 {
                    RATE_SETS * RATE_WAYS
                } else {
                    0
                }
            ],
            hasher: RandomState::new(),
            half_open: HashMap::new(),
            total: 0,
            stats: LimitStats::default(),
        }
    }

    /// The limits.
    pub fn limits(&self) -> InitLimits {
        self.limits
    }

    /// The counters.
    pub fn stats(&self) -> LimitStats {
        self.stats
    }

    /// Responder SAs half-open now (as reported through `opened` and `closed`).
    pub fn half_open(&self) -> usize {
        self.total
    }

    /// Half-open responder SAs of `remote`'s source.
    pub fn half_open_from(&self, remote: IpAddr) -> usize {
        self.half_open.get(&source_of(remote)).copied().unwrap_or(0)
    }

    /// Sources with half-open SAs (the size of the per-source table).
    pub fn sources(&self) -> usize {
        self.half_open.len()
    }

    /// Whether a new IKE_SA_INIT request from `remote` may go on (to the COOKIE gate and
    /// then to a new responder SA). Takes a token from the source's bucket when it may;
    /// counts the refusal when not.
    pub fn check(&mut self, now: Instant, remote: IpAddr) -> Result<(), Refusal> {
        let source = source_of(remote);
        let refusal = if self.total >= self.limits.max_half_open {
            Some(Refusal::HalfOpen)
        } else if self.limits.block_threshold > 0
            && self.half_open.get(&source).copied().unwrap_or(0) >= self.limits.block_threshold
        {
            Some(Refusal::Blocked)
        } else if !self.take_token(now, source) {
            Some(Refusal::Rate)
        } else {
            None
        };
        match refusal {
            None => Ok(()),
            Some(r) => {
                match r {
                    Refusal::HalfOpen => self.stats.dropped_half_open += 1,
                    Refusal::Blocked => self.stats.dropped_blocked += 1,
                    Refusal::Rate => self.stats.dropped_rate += 1,
                }
                Err(r)
            }
        }
    }

    fn take_token(&mut self, now: Instant, source: IpAddr) -> bool {
        if self.limits.init_rate == 0 {
            return true;
        }
        let rate = f64::from(self.limits.init_rate);
        let burst = f64::from(self.limits.init_burst);
        let set = (self.hasher.hash_one(source) as usize) % RATE_SETS;
        let ways = &mut self.buckets[set * RATE_WAYS..(set + 1) * RATE_WAYS];
        let slot = match ways
            .iter()
            .position(|b| b.is_some_and(|b| b.source == source))
        {
            Some(i) => i,
            None => {
                // An empty entry, else the one whose bucket is fullest (idle longest).
                let i = match ways.iter().position(Option::is_none) {
                    Some(i) => i,
                    None => {
                        self.stats.rate_evictions += 1;
                        let mut best = 0;
                        let mut level = f64::MIN;
                        for (i, b) in ways.iter().enumerate() {
                            let l = b.map_or(f64::MAX, |b| b.level(now, rate, burst));
                            if l > level {
                                (best, level) = (i, l);
                            }
                        }
                        best
                    }
                };
                ways[i] = Some(Bucket {
                    source,
                    tokens: burst,
                    at: now,
                });
                i
            }
        };
        let Some(b) = ways[slot].as_mut() else {
            return true;
        };
        let level = b.level(now, rate, burst);
        b.at = now.max(b.at);
        if level >= 1.0 {
            b.tokens = level - 1.0;
            true
        } else {
            b.tokens = level;
            false
        }
    }

    /// A responder SA for `remote` started (it is half-open).
    pub fn opened(&mut self, remote: IpAddr) {
        *self.half_open.entry(source_of(remote)).or_insert(0) += 1;
        self.total += 1;
    }

    /// A responder SA for `remote` that was reported `opened` is no longer half-open.
    pub fn closed(&mut self, remote: IpAddr) {
        let source = source_of(remote);
        if let Some(n) = self.half_open.get_mut(&source) {
            *n -= 1;
            if *n == 0 {
                self.half_open.remove(&source);
            }
            self.total = self.total.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn limits(max: usize, block: usize, rate: u32, burst: u32) -> InitLimits {
        InitLimits {
            max_half_open: max,
            block_threshold: block,
            init_rate: rate,
            init_burst: burst,
        }
    }

    #[test]
    fn token_bucket_per_source() {
        let t0 = Instant::now();
        let mut l = InitLimiter::new(limits(1024, 0, 10, 20));
        let a = ip("198.18.9.3");
        // The burst, then nothing until tokens come back at 10 per second.
        for _ in 0..20 {
            assert_eq!(l.check(t0, a), Ok(()));
        }
        assert_eq!(l.check(t0, a), Err(Refusal::Rate));
        assert_eq!(
            l.check(t0 + Duration::from_millis(50), a),
            Err(Refusal::Rate)
        );
        assert_eq!(l.check(t0 + Duration::from_millis(100), a), Ok(()));
        assert_eq!(
            l.check(t0 + Duration::from_millis(100), a),
            Err(Refusal::Rate)
        );
        // One second: ten more.
        let t1 = t0 + Duration::from_millis(1100);
        for _ in 0..10 {
            assert_eq!(l.check(t1, a), Ok(()));
        }
        assert_eq!(l.check(t1, a), Err(Refusal::Rate));
        // Another source is not affected.
        assert_eq!(l.check(t1, ip("198.18.9.4")), Ok(()));
        // A long pause refills up to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(3600);
        for _ in 0..20 {
            assert_eq!(l.check(t2, a), Ok(()));
        }
        assert_eq!(l.check(t2, a), Err(Refusal::Rate));
        assert_eq!(l.stats().dropped_rate, 5);
        assert_eq!(l.stats().rate_evictions, 0);
        // Rate 0: no limit.
        let mut l = InitLimiter::new(limits(1024, 0, 0, 1));
        for _ in 0..10_000 {
            assert_eq!(l.check(t0, a), Ok(()));
        }
    }

    #[test]
    fn ipv6_sources_are_64_prefixes() {
        let t0 = Instant::now();
        let mut l = InitLimiter::new(limits(1024, 0, 1, 2));
        assert_eq!(l.check(t0, ip("2001:db8:1:2::1")), Ok(()));
        assert_eq!(l.check(t0, ip("2001:db8:1:2:ffff::9")), Ok(()));
        assert_eq!(l.check(t0, ip("2001:db8:1:2::77")), Err(Refusal::Rate));
        assert_eq!(l.check(t0, ip("2001:db8:1:3::1")), Ok(()));
        assert_eq!(source_of(ip("::ffff:198.18.0.1")), ip("198.18.0.1"));
    }

    #[test]
    fn block_threshold_per_source_and_global_cap() {
        let t0 = Instant::now();
        let mut l = InitLimiter::new(limits(8, 5, 0, 1));
        let (a, b) = (ip("198.18.9.3"), ip("198.18.9.4"));
        for _ in 0..5 {
            assert_eq!(l.check(t0, a), Ok(()));
            l.opened(a);
        }
        assert_eq!(l.check(t0, a), Err(Refusal::Blocked));
        assert_eq!(l.half_open_from(a), 5);
        // Another source still gets in, up to the global cap of 8.
        for _ in 0..3 {
            assert_eq!(l.check(t0, b), Ok(()));
            l.opened(b);
        }
        assert_eq!(l.half_open(), 8);
        assert_eq!(l.check(t0, b), Err(Refusal::HalfOpen));
        assert_eq!(l.check(t0, ip("198.18.9.5")), Err(Refusal::HalfOpen));
        // One of a's completes: a is below its threshold, and there is room again.
        l.closed(a);
        assert_eq!(l.half_open(), 7);
        assert_eq!(l.check(t0, a), Ok(()));
        l.opened(a);
        // Full again: the global cap is checked first.
        assert_eq!(l.check(t0, a), Err(Refusal::HalfOpen));
        for _ in 0..5 {
            l.closed(a);
        }
        for _ in 0..3 {
            l.closed(b);
        }
        assert_eq!(l.half_open(), 0);
        assert_eq!(l.sources(), 0, "no entry stays behind");
        // Closing what was never opened changes nothing.
        l.closed(a);
        assert_eq!(l.half_open(), 0);
        assert_eq!(
            l.stats(),
            LimitStats {
                dropped_half_open: 3,
                dropped_blocked: 1,
                dropped_rate: 0,
                rate_evictions: 0
            }
        );
        // block_threshold 0: no per-source limit.
        let mut l = InitLimiter::new(limits(1024, 0, 0, 1));
        for _ in 0..100 {
            assert_eq!(l.check(t0, a), Ok(()));
            l.opened(a);
        }
    }

    #[test]
    fn spoofed_flood_keeps_the_table_bounded_and_a_real_source_limited() {
        let t0 = Instant::now();
        let mut l = InitLimiter::new(limits(1024, 5, 10, 20));
        let flooder = ip("198.18.9.3");
        for _ in 0..20 {
            assert_eq!(l.check(t0, flooder), Ok(()));
        }
        // A million spoofed sources over 100 s: the table stays the same size.
        let mut t = t0;
        for i in 0..1_000_000u32 {
            t = t0 + Duration::from_micros(u64::from(i) * 100);
            let spoofed = IpAddr::V4((0xc612_0000 | i).into());
            let _ = l.check(t, spoofed);
            // The real flooder keeps sending every 10th time; it never gets more than its
            // rate, whatever the churn around it (evictions reset a bucket to full only
            // for the few sources sharing its set).
            if i % 10 == 0 {
                let _ = l.check(t, flooder);
            }
        }
        assert_eq!(l.buckets.len(), RATE_SETS * RATE_WAYS);
        assert!(l.stats().rate_evictions > 900_000);
        // 100,000 attempts by the flooder over 100 s: about 10 per second got through (its
        // nearly empty bucket is never the one evicted; the spoofed entries are fuller).
        let passed = 100_000 - l.stats().dropped_rate;
        assert!((990..=1010).contains(&passed), "{passed} {:?}", l.stats());
        assert_eq!(l.sources(), 0);
        assert!(t > t0);
    }

    #[test]
    fn eviction_prefers_idle_sources() {
        let t0 = Instant::now();
        let mut l = InitLimiter::new(limits(1024, 0, 1, 3));
        // Fill some set completely: find RATE_WAYS + 1 sources of one set.
        let set_of = |l: &InitLimiter, a: IpAddr| (l.hasher.hash_one(a) as usize) % RATE_SETS;
        let first = ip("198.18.0.1");
        let target = set_of(&l, first);
        let mut same: Vec<IpAddr> = vec![first];
        let mut i = 2u32;
        while same.len() < RATE_WAYS + 1 {
            let a = IpAddr::V4((0xc612_0000 | i).into());
            if set_of(&l, a) == target {
                same.push(a);
            }
            i += 1;
        }
        // The busy source empties its bucket; the others take one token each, later.
        for _ in 0..3 {
            assert_eq!(l.check(t0, same[0]), Ok(()));
        }
        assert_eq!(l.check(t0, same[0]), Err(Refusal::Rate));
        let t1 = t0 + Duration::from_millis(10);
        for a in &same[1..RATE_WAYS] {
            assert_eq!(l.check(t1, *a), Ok(()));
        }
        // A newcomer evicts one of the idle ones (fuller bucket), not the empty one.
        assert_eq!(l.check(t1, same[RATE_WAYS]), Ok(()));
        assert_eq!(l.stats().rate_evictions, 1);
        assert_eq!(l.check(t1, same[0]), Err(Refusal::Rate));
    }
}
