//! Per-SA packet, byte and drop counters, shared by every worker and every table snapshot.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why an inbound packet was dropped. Every drop has exactly one reason and one counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// Shorter than the smallest valid packet, or its length is not a multiple of four.
    Truncated,
    /// The SPI does not belong to this SA (or to any SA, at the table level).
    UnknownSpi,
    /// The sequence number was already received (or a redundant copy arrived second).
    Replayed,
    /// The sequence number is older than the replay window, or zero.
    TooOld,
    /// The ICV did not verify.
    Integrity,
    /// The pad bytes are not 1, 2, 3, ... (RFC 4303 section 2.4).
    BadPadding,
    /// The pad length points outside the payload.
    BadTrailer,
    /// The next header does not match the SA's mode (tunnel wants 4 or 41).
    BadNextHeader,
    /// The packet around or inside the ESP payload is not a well-formed IP packet.
    BadIpPacket,
    /// The inner packet's addresses are outside the SA's traffic selectors.
    OutsideSelectors,
    /// Authentic, but above the replay mark stored on disk (manual SAs only): accepting it
    /// could let it be replayed after a crash. The mark moves up a few milliseconds later.
    Unreserved,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 11] = [
        DropReason::Truncated,
        DropReason::UnknownSpi,
        DropReason::Replayed,
        DropReason::TooOld,
        DropReason::Integrity,
        DropReason::BadPadding,
        DropReason::BadTrailer,
        DropReason::BadNextHeader,
        DropReason::BadIpPacket,
        DropReason::OutsideSelectors,
        DropReason::Unreserved,
    ];

    /// A short snake_case name for status output and logs.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::UnknownSpi => "unknown_spi",
            DropReason::Replayed => "replayed",
            DropReason::TooOld => "too_old",
            DropReason::Integrity => "integrity",
            DropReason::BadPadding => "bad_padding",
            DropReason::BadTrailer => "bad_trailer",
            DropReason::BadNextHeader => "bad_next_header",
            DropReason::BadIpPacket => "bad_ip_packet",
            DropReason::OutsideSelectors => "outside_selectors",
            DropReason::Unreserved => "unreserved",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::error::Error for DropReason {}

/// Live counters of one SA direction. All updates are relaxed: they are statistics, read by
/// `status`, and never order other memory.
#[derive(Debug, Default)]
pub struct SaCounters {
    packets: AtomicU64,
    bytes: AtomicU64,
    dummies: AtomicU64,
    drops: [AtomicU64; DropReason::ALL.len()],
}

impl SaCounters {
    /// Counts one packet of `bytes` inner bytes protected or accepted.
    #[inline]
    pub fn count_packet(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Counts one dummy packet (next header 59) received and discarded.
    #[inline]
    pub fn count_dummy(&self) {
        self.dummies.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one drop.
    #[inline]
    pub fn count_drop(&self, reason: DropReason) {
        self.drops[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy for display.
    pub fn snapshot(&self) -> CounterSnapshot {
        let mut drops = [0u64; DropReason::ALL.len()];
        for (d, c) in drops.iter_mut().zip(&self.drops) {
            *d = c.load(Ordering::Relaxed);
        }
        CounterSnapshot {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dummies: self.dummies.load(Ordering::Relaxed),
            drops,
        }
    }
}

/// A plain copy of [`SaCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CounterSnapshot {
    /// Packets protected (outbound) or accepted (inbound).
    pub packets: u64,
    /// Inner bytes of those packets.
    pub bytes: u64,
    /// Dummy packets received and discarded.
    pub dummies: u64,
    /// Drops, indexed by `DropReason as usize`.
    pub drops: [u64; DropReason::ALL.len()],
}

impl CounterSnapshot {
    /// Drops for one reason.
    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops[reason as usize]
    }

    /// Drops for all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}
