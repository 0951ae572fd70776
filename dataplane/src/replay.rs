//! Lock-free anti-replay window (RFC 4303 §3.4.3, in the spirit of RFC 6479).
//!
//! Every inbound ESP packet is checked against its SA's window twice: a cheap
//! [`ReplayWindow::check`] before decryption (to drop obvious replays without spending an AEAD
//! operation on them) and an authoritative [`ReplayWindow::mark`] after the ICV has verified.
//! Several worker threads may do both, for the same SA, at the same time; neither takes a lock.
//!
//! # Layout
//!
//! Sequence numbers are grouped in *blocks* of 32 consecutive values: `block = seq >> 5`,
//! `bit = seq & 31`. The window is a ring of `AtomicU64` *words*; block `b` lives in word
//! `b & mask`. Each word holds, in one atomic value, a *tag* (the low 32 bits of the block number
//! it currently describes) in its high half and that block's 32-bit bitmap in its low half:
//!
//! ```text
//!   63             32 31              0
//!  +-----------------+-----------------+
//!  |  block as u32   |  bitmap (1 bit  |
//!  |     (tag)       |  per seq)       |
//!  +-----------------+-----------------+
//! ```
//!
//! The ring has a power-of-two number of words, at least `2 * size / 32` and at least 4, so it
//! spans at least twice the window. Beside it, `top` holds the highest sequence number marked so
//! far (0 while nothing is marked). A sequence number `seq` is *inside the window* when
//! `seq > top - size`, i.e. the window is `[top - size + 1, top]` plus everything above `top`.
//!
//! # Marking, and why no mark is ever lost
//!
//! The textbook RFC 6479 receiver first advances `top` and then zeroes the words it skipped. Done
//! concurrently this is racy: a thread can clear a word *after* another thread set a bit in it for
//! a sequence number that is still inside the window, and the replay of that packet then passes.
//! Here there is no separate clearing step. [`mark`](ReplayWindow::mark) updates its word with a
//! single compare-and-swap that goes from one of these states to the next:
//!
//! * the word holds the same block and the bit is clear: set the bit;
//! * the word holds the same block and the bit is set: `Replayed`, no change;
//! * the word holds an *older* block (or is still pristine, bitmap 0): replace the whole word by
//!   `tag | bit`, which is "clear the skipped block and mark", atomically;
//! * the word holds a *newer* block: `TooOld`, no change.
//!
//! "Older"/"newer" compare tags as 32-bit serial numbers (`(tag - other) as i32 > 0`).
//!
//! **No replay is ever accepted.** Per word, the tag only ever moves forward and, for one tag, the
//! bitmap only gains bits. Suppose two `mark(s)` calls both returned `Ok`. Both succeeded with a
//! compare-and-swap on the same word, so one of them, say the second, came later in that word's
//! modification order; it read the value written just before it, which is at or after the first
//! one's `tag(s) | bit(s)`: either the same tag with the bit set (`Replayed`) or a newer tag
//! (`TooOld`). Contradiction. This argument uses nothing but the atomicity of one read-modify-write
//! on one location, hence exactly one of N threads marking the same number wins.
//!
//! **Replacing an older block never discards a mark that still matters.** Two blocks sharing a word
//! are a multiple of the ring apart, i.e. at least `2 * size` sequence numbers. When `mark(s)`
//! replaces an older block `b'` by `block(s)`, every number of `b'` is at most
//! `s - 2 * size + 31 < s - size`, so once `top >= s` (set by this very `mark`) all of them are
//! left of the window anyway. In the short interval before `top` catches up, a late packet of `b'`
//! finds a *newer* tag in the word and is refused `TooOld`, never accepted.
//!
//! Likewise a word holding a newer block means a number at least `2 * size - 31` above `seq` was
//! marked, so `seq` is (or is about to be) left of the window: `TooOld` is the right answer.
//!
//! `top` serves only to place the window's left edge. It is raised (a compare-and-swap loop that
//! only ever replaces a lower value, i.e. a `fetch_max`) after the bit is in, so it is monotonic;
//! a reader that sees an older `top` is merely more lenient for an instant (a number that is just
//! leaving the window may still be accepted once if it was never received), never lenient towards
//! a replay, which the words alone refuse.
//!
//! # Memory ordering
//!
//! Every access is `Relaxed`, deliberately. The guarantees above rest only on per-location
//! coherence: every read-modify-write (the compare-and-swaps on a word and on `top`) acts on
//! the latest value in that location's modification order, whatever its ordering argument. The
//! window publishes no other memory (the packet buffer belongs to the thread that marks it), so
//! an `Acquire`/`Release` pair would synchronise nothing. Plain loads (`check`, `is_marked`,
//! `infer_esn`, the `top` load in `mark`) may observe a slightly stale value; a stale word can only
//! lack bits that were set (so `check` lets a packet through to `mark`, which decides), and a stale
//! `top` is lower (more lenient, as argued above). On x86 the orderings compile to the same
//! instructions anyway; on weaker architectures `Relaxed` avoids barriers on the per-packet path.
//!
//! # Limits
//!
//! A tag is the low 32 bits of a block number, so it names its block only modulo 2^32 blocks
//! (2^37 sequence numbers), and older/newer is decided by serial arithmetic, which is exact for
//! blocks less than 2^31 blocks (2^36 numbers) apart. Two situations could exceed that:
//!
//! * A word that no marked packet touched while the window moved 2^36 numbers on (every packet of
//!   every block mapping to it lost, for hours at line rate). Its stale tag may then pass for the
//!   current block or a newer one, and fresh numbers of such blocks may then be refused
//!   (dropped). No replay can be accepted this way: a bit in a word is only ever set by
//!   a successful `mark`.
//! * Sequence numbers handed to `mark` more than 2^36 ahead of `top`. [`ReplayWindow::infer_esn`]
//!   never yields more than 2^32 ahead, and non-ESN numbers are below 2^32, so ESP cannot do
//!   this. With arbitrary `u64` inputs nothing panics and, single-threaded, no replay is ever
//!   accepted; only several such jumps in flight concurrently could confuse the comparison.
//!
//! # Extended sequence numbers
//!
//! All sequence numbers given to the window are full 64-bit values. With ESN only the low 32 bits
//! travel in the packet; [`ReplayWindow::infer_esn`] reconstructs the high half from the window
//! (RFC 4303 Appendix A2.2) before the ICV check, which then authenticates the guess.

use std::fmt;

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// The only ordering the window uses; see the module documentation for why it is enough.
const ORD: Ordering = Ordering::Relaxed;

/// log2 of the number of sequence numbers per word (block).
const BLOCK_SHIFT: u32 = 5;
/// Sequence numbers per word.
const BLOCK_BITS: u64 = 1 << BLOCK_SHIFT;
/// Fewest words in a ring.
const MIN_WORDS: u64 = 4;

/// Why a sequence number was refused by [`ReplayWindow::check`] or [`ReplayWindow::mark`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplayError {
    /// The sequence number is 0, which no ESP sender ever uses (counters start at 1).
    Zero,
    /// The sequence number is left of the window (`seq <= top - size`): too old to tell.
    TooOld,
    /// The sequence number has already been received (marked).
    Replayed,
}

impl fmt::Display for ReplayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReplayError::Zero => "sequence number 0 is never valid",
            ReplayError::TooOld => "sequence number is left of the anti-replay window",
            ReplayError::Replayed => "sequence number has already been received",
        })
    }
}

impl std::error::Error for ReplayError {}

/// A window size that [`ReplayWindow::new`] does not accept: not a power of two, or outside
/// [`ReplayWindow::MIN_SIZE`]`..=`[`ReplayWindow::MAX_SIZE`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WindowSizeError {
    requested: u64,
}

impl WindowSizeError {
    /// The size that was asked for.
    pub fn requested(&self) -> u64 {
        self.requested
    }
}

impl fmt::Display for WindowSizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid anti-replay window size {}: must be a power of two from {} to {}",
            self.requested,
            ReplayWindow::MIN_SIZE,
            ReplayWindow::MAX_SIZE
        )
    }
}

impl std::error::Error for WindowSizeError {}

/// Keeps `top`, which every marking thread writes, off the cache line(s) of the read-only fields.
#[repr(align(128))]
struct CacheAligned<T>(T);

/// The anti-replay window of one inbound SA, shared by every worker thread (`&self` everywhere).
///
/// See the [module documentation](crate::replay) for the design and why it is sound.
pub struct ReplayWindow {
    /// Highest sequence number marked so far; 0 while nothing is marked.
    top: CacheAligned<AtomicU64>,
    /// The ring: `tag << 32 | bitmap` per word; length is a power of two >= 4.
    words: Box<[AtomicU64]>,
    /// `words.len() - 1`.
    mask: u64,
    /// Window size in sequence numbers (power of two, `MIN_SIZE..=MAX_SIZE`).
    size: u64,
    /// Every number at or below this is refused as too old: where a manual SA resumes after
    /// a restart (see [`crate::marks`]). 0 for a new SA.
    floor: u64,
}

impl fmt::Debug for ReplayWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The ring can hold 64k words: summarise rather than dump it.
        f.debug_struct("ReplayWindow")
            .field("size", &self.size)
            .field("top", &self.top())
            .field("words", &self.words.len())
            .finish()
    }
}

impl ReplayWindow {
    /// Smallest window size accepted by [`new`](Self::new) (RFC 4303 recommends at least 64).
    pub const MIN_SIZE: u64 = 64;
    /// Largest window size accepted by [`new`](Self::new).
    pub const MAX_SIZE: u64 = 1 << 20;

    /// An empty window of `size` sequence numbers.
    ///
    /// `size` must be a power of two in
    /// [`MIN_SIZE`](Self::MIN_SIZE)`..=`[`MAX_SIZE`](Self::MAX_SIZE). The ring then takes
    /// `size / 16` words, i.e. `size / 2` bytes (32 B to 512 KiB), plus `top` on its own cache
    /// line.
    pub fn new(size: u64) -> Result<Self, WindowSizeError> {
        if !size.is_power_of_two() || !(Self::MIN_SIZE..=Self::MAX_SIZE).contains(&size) {
            return Err(WindowSizeError { requested: size });
        }
        // Twice the window, in words; already a power of two since size is.
        let n = (2 * size / BLOCK_BITS).max(MIN_WORDS);
        debug_assert!(n.is_power_of_two());
        let words = (0..n).map(|_| AtomicU64::new(0)).collect::<Box<[_]>>();
        Ok(Self {
            top: CacheAligned(AtomicU64::new(0)),
            words,
            mask: n - 1,
            size,
            floor: 0,
        })
    }

    /// Makes the window refuse every number up to `floor` as [`ReplayError::TooOld`] and
    /// start with `top = floor`, so that ESN inference continues from there: how an SA whose
    /// window was lost (a restart) refuses packets it may have accepted before. Only before
    /// the window is shared, and only upwards.
    pub fn resume_above(&mut self, floor: u64) {
        if floor > self.floor {
            self.floor = floor;
            self.top.0.store(floor, ORD);
        }
    }

    /// The number at or below which everything is refused (0 unless resumed).
    #[inline]
    pub fn floor(&self) -> u64 {
        self.floor
    }

    /// The window size, in sequence numbers.
    #[inline]
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The highest sequence number marked so far, 0 if none.
    #[inline]
    pub fn top(&self) -> u64 {
        self.top.0.load(ORD)
    }

    /// The word that holds `block`.
    #[inline]
    fn word(&self, block: u64) -> &AtomicU64 {
        // `mask == words.len() - 1`, so the index is always in bounds.
        &self.words[(block & self.mask) as usize]
    }

    /// The window's own refusals that do not depend on the word: 0, and left of the window.
    #[inline]
    fn precheck(&self, seq: u64, top: u64) -> Result<(), ReplayError> {
        let size = self.size;
        if seq == 0 {
            return Err(ReplayError::Zero);
        }
        if seq <= self.floor {
            return Err(ReplayError::TooOld);
        }
        // `seq + size <= top` without overflow; when top < size nothing is too old
        // (saturates to 0, and seq >= 1).
        if seq <= top.saturating_sub(size) {
            return Err(ReplayError::TooOld);
        }
        Ok(())
    }

    /// Cheap pre-decryption test: would `seq` be accepted now?
    ///
    /// `Ok` is advisory (another thread may mark `seq` meanwhile; only [`mark`](Self::mark)
    /// decides), but an error is final: the packet can be dropped without decrypting it.
    /// Read-only, never blocks.
    #[inline]
    pub fn check(&self, seq: u64) -> Result<(), ReplayError> {
        self.precheck(seq, self.top())?;
        let block = seq >> BLOCK_SHIFT;
        let w = self.word(block).load(ORD);
        let bit = 1u64 << (seq & (BLOCK_BITS - 1));
        if (w >> 32) as u32 == block as u32 && w & bit != 0 {
            Err(ReplayError::Replayed)
        } else {
            Ok(())
        }
    }

    /// Records `seq` as received; call only once the packet's ICV has verified.
    ///
    /// Returns `Ok` exactly once per sequence number however many threads race on it, and
    /// `Replayed` or `TooOld` to all others. Sliding the window forward needs no separate
    /// step: a word of a block that has left the window is recycled by the same atomic update that
    /// sets the new bit, so marks of numbers still inside the window are never lost. Lock-free:
    /// retries only when another thread changed the same word in between.
    #[inline]
    pub fn mark(&self, seq: u64) -> Result<(), ReplayError> {
        let top = self.top();
        self.precheck(seq, top)?;
        let block = seq >> BLOCK_SHIFT;
        let tag = block as u32;
        let bit = 1u64 << (seq & (BLOCK_BITS - 1));
        let fresh = (u64::from(tag) << 32) | bit;
        let word = self.word(block);
        let mut cur = word.load(ORD);
        loop {
            let cur_tag = (cur >> 32) as u32;
            let new = if cur_tag == tag {
                if cur & bit != 0 {
                    return Err(ReplayError::Replayed);
                }
                cur | bit
            } else if cur as u32 == 0 || tag.wrapping_sub(cur_tag) as i32 > 0 {
                // Pristine word (only the initial value has an empty bitmap: every store sets a
                // bit), or a block that has left the window: recycle it for this block.
                fresh
            } else {
                // A newer block already uses this word: seq is at least 2*size-31 below it.
                return Err(ReplayError::TooOld);
            };
            match word.compare_exchange_weak(cur, new, ORD, ORD) {
                Ok(_) => break,
                Err(actual) => cur = actual,
            }
        }
        // Advance the left edge (a `fetch_max`). If seq <= the top we read, top is already >= seq
        // (it is monotonic). Written as a CAS loop rather than `fetch_max` so that a thread which
        // finds a higher top already in place gives up without a (contended) locked write.
        let mut t = top;
        while seq > t {
            match self.top.0.compare_exchange_weak(t, seq, ORD, ORD) {
                Ok(_) => break,
                Err(actual) => t = actual,
            }
        }
        Ok(())
    }

    /// Whether `seq`'s bit is currently set in the ring.
    ///
    /// Exact for numbers inside the window; for numbers that have left it the answer is whatever
    /// the ring still remembers. For tests and diagnostics; [`check`](Self::check) and
    /// [`mark`](Self::mark) are what the packet path uses.
    pub fn is_marked(&self, seq: u64) -> bool {
        let block = seq >> BLOCK_SHIFT;
        let w = self.word(block).load(ORD);
        (w >> 32) as u32 == block as u32 && w & (1u64 << (seq & (BLOCK_BITS - 1))) != 0
    }

    /// Reconstructs the full 64-bit sequence number of a packet carrying only its low 32 bits
    /// (ESN, RFC 4303 Appendix A2.2), from the current `top` (T) and window size (W).
    ///
    /// With `Th`/`Tl` the high/low halves of T and `bottom = Tl - W + 1 (mod 2^32)`:
    ///
    /// * Case A, `Tl >= W - 1` (the window lies within one 2^32 subspace): if `seq_low >= bottom`
    ///   the packet is in T's subspace (`Th`), otherwise it is in the next one (`Th + 1`).
    /// * Case B, `Tl < W - 1` (the window straddles a subspace boundary): if `seq_low >= bottom`
    ///   the packet is in the previous subspace (`Th - 1`), otherwise in T's (`Th`).
    ///
    /// At the very start (T < W, `Th = 0`) there is no previous subspace, and past `Th = 2^32 - 1`
    /// no next one; the high half then stays at `Th` instead of wrapping, so the result is never
    /// a number that did not exist (the ICV check or [`mark`](Self::mark) then refuses a wrong
    /// guess). The result is always within 2^32 of T.
    #[inline]
    pub fn infer_esn(&self, seq_low: u32) -> u64 {
        let t = self.top();
        let th = (t >> 32) as u32;
        let tl = t as u32;
        // size <= 2^20, so it fits; W - 1 >= 63.
        let w1 = (self.size - 1) as u32;
        let bottom = tl.wrapping_sub(w1);
        let seqh = if tl >= w1 {
            // Case A.
            if seq_low >= bottom {
                th
            } else {
                th.saturating_add(1)
            }
        } else if seq_low >= bottom {
            // Case B, upper part of the previous subspace.
            th.saturating_sub(1)
        } else {
            th
        };
        (u64::from(seqh) << 32) | u64::from(seq_low)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn win(size: u64) -> ReplayWindow {
        ReplayWindow::new(size).expect("valid size")
    }

    #[test]
    fn window_start() {
        let w = win(64);
        assert_eq!(w.top(), 0);
        assert_eq!(w.size(), 64);
        assert_eq!(w.check(0), Err(ReplayError::Zero));
        assert_eq!(w.mark(0), Err(ReplayError::Zero));
        assert_eq!(w.check(1), Ok(()));
        assert!(!w.is_marked(1));
        assert_eq!(w.mark(1), Ok(()));
        assert_eq!(w.top(), 1);
        assert!(w.is_marked(1));
        assert_eq!(w.check(1), Err(ReplayError::Replayed));
        assert_eq!(w.mark(1), Err(ReplayError::Replayed));
        // The rest of block 0 (tag 0, like the pristine words) still works.
        for s in 2..32 {
            assert_eq!(w.check(s), Ok(()), "{s}");
            assert_eq!(w.mark(s), Ok(()), "{s}");
        }
        for s in 1..32 {
            assert!(w.is_marked(s));
            assert_eq!(w.mark(s), Err(ReplayError::Replayed));
        }
        assert_eq!(w.top(), 31);
        assert_eq!(w.check(0), Err(ReplayError::Zero));
    }

    #[test]
    fn a_resumed_window_refuses_everything_up_to_its_floor() {
        let mut w = win(64);
        w.resume_above(1_000_000);
        assert_eq!(w.floor(), 1_000_000);
        assert_eq!(w.top(), 1_000_000);
        // Inside what would be the window, and far below it: all too old.
        for s in [1, 999_937, 999_999, 1_000_000] {
            assert_eq!(w.check(s), Err(ReplayError::TooOld), "{s}");
            assert_eq!(w.mark(s), Err(ReplayError::TooOld), "{s}");
        }
        assert_eq!(w.mark(1_000_001), Ok(()));
        assert_eq!(w.mark(1_000_001), Err(ReplayError::Replayed));
        assert_eq!(w.mark(1_000_050), Ok(()));
        assert_eq!(w.mark(1_000_003), Ok(()));
        // ESN inference continues from the floor, not from zero.
        w.resume_above(5); // never downwards
        assert_eq!(w.floor(), 1_000_000);
        let mut e = win(64);
        e.resume_above((7 << 32) | 100);
        assert_eq!(e.infer_esn(101), (7 << 32) | 101);
    }

    #[test]
    fn out_of_order_start_within_window() {
        let w = win(64);
        assert_eq!(w.mark(50), Ok(()));
        assert_eq!(w.mark(3), Ok(()));
        assert_eq!(w.mark(1), Ok(()));
        assert_eq!(w.mark(3), Err(ReplayError::Replayed));
        assert_eq!(w.top(), 50);
    }

    #[test]
    fn exact_window_edge() {
        for size in [64u64, 1024, 65536] {
            let w = win(size);
            let top = 10 * size + 7;
            assert_eq!(w.mark(top), Ok(()));
            // Left edge of the window: top - size + 1 accepted, top - size refused.
            assert_eq!(w.check(top - size + 1), Ok(()));
            assert_eq!(w.check(top - size), Err(ReplayError::TooOld));
            assert_eq!(w.mark(top - size), Err(ReplayError::TooOld));
            assert!(!w.is_marked(top - size));
            assert_eq!(w.mark(top - size + 1), Ok(()));
            assert_eq!(w.mark(top - size + 1), Err(ReplayError::Replayed));
            assert_eq!(w.top(), top);
        }
    }

    #[test]
    fn very_old() {
        let w = win(64);
        assert_eq!(w.mark(1_000_000), Ok(()));
        for s in [1u64, 2, 31, 32, 999_000, 1_000_000 - 64] {
            assert_eq!(w.check(s), Err(ReplayError::TooOld), "{s}");
            assert_eq!(w.mark(s), Err(ReplayError::TooOld), "{s}");
        }
        assert_eq!(w.mark(1_000_000 - 63), Ok(()));
    }

    #[test]
    fn far_ahead_jump() {
        let size = 1024;
        let w = win(size);
        for s in 1..=3 * size {
            assert_eq!(w.mark(s), Ok(()));
        }
        let top = 3 * size + 10 * size;
        assert_eq!(w.check(top), Ok(()));
        assert_eq!(w.mark(top), Ok(()));
        assert_eq!(w.top(), top);
        // Everything inside the new window but below top is new, though the ring words still
        // carry the tags (and bits) of blocks marked before the jump.
        for s in top - size + 1..top {
            assert!(!w.is_marked(s), "{s}");
            assert_eq!(w.check(s), Ok(()), "{s}");
        }
        for s in (top - size + 1..top).rev() {
            assert_eq!(w.mark(s), Ok(()), "{s}");
        }
        for s in top - size + 1..=top {
            assert_eq!(w.mark(s), Err(ReplayError::Replayed), "{s}");
        }
        // Outside: refused.
        for s in [top - size, top - size - 1, 3 * size, 1] {
            assert_eq!(w.check(s), Err(ReplayError::TooOld), "{s}");
            assert_eq!(w.mark(s), Err(ReplayError::TooOld), "{s}");
        }
    }

    #[test]
    fn sliding_clears_exactly_skipped_words() {
        let size = 1024u64;
        let w = win(size);
        // A pattern over 3000 numbers: every third one.
        let marked = |s: u64| s % 3 == 0;
        for s in (1..=3000).filter(|&s| marked(s)) {
            assert_eq!(w.mark(s), Ok(()));
        }
        assert_eq!(w.top(), 3000);
        // Slide by less than the window: the skipped numbers 3001..3700 reuse ring words that
        // held blocks around 950..1650, which had bits set.
        assert_eq!(w.mark(3700), Ok(()));
        let left = 3700 - size + 1; // 2677
        for s in left..=3000 {
            assert_eq!(w.is_marked(s), marked(s), "old mark kept/absent at {s}");
            let expect = if marked(s) {
                Err(ReplayError::Replayed)
            } else {
                Ok(())
            };
            assert_eq!(w.check(s), expect, "{s}");
        }
        for s in 3001..3700 {
            assert!(!w.is_marked(s), "skipped {s} must be unmarked");
            assert_eq!(w.check(s), Ok(()), "{s}");
        }
        for s in [1, 2, 3, left - 1, left - 2, left - 3] {
            assert_eq!(w.check(s), Err(ReplayError::TooOld), "{s}");
        }
        // Now mark the skipped numbers and the holes; the old pattern must still refuse.
        for s in 3001..3700 {
            assert_eq!(w.mark(s), Ok(()), "{s}");
        }
        for s in left..=3000 {
            let expect = if marked(s) {
                Err(ReplayError::Replayed)
            } else {
                Ok(())
            };
            assert_eq!(w.mark(s), expect, "{s}");
        }
        for s in left..=3700 {
            assert!(w.is_marked(s), "{s}");
        }
    }

    #[test]
    fn all_sizes_and_invalid_sizes() {
        let mut size = ReplayWindow::MIN_SIZE;
        while size <= ReplayWindow::MAX_SIZE {
            let w = win(size);
            assert_eq!(w.size(), size);
            let top = 3 * size + 5;
            assert_eq!(w.mark(top), Ok(()));
            assert_eq!(w.mark(top - size + 1), Ok(()));
            assert_eq!(w.mark(top - size + 1), Err(ReplayError::Replayed));
            assert_eq!(w.mark(top - size), Err(ReplayError::TooOld));
            assert_eq!(w.mark(top + 2 * size), Ok(()));
            assert_eq!(w.mark(top + size + 1), Ok(()));
            assert_eq!(w.mark(top + size), Err(ReplayError::TooOld));
            size <<= 1;
        }
        for bad in [
            0u64,
            1,
            2,
            32,
            63,
            65,
            96,
            100,
            1000,
            3 << 10,
            (1 << 20) + 1,
            1 << 21,
            1 << 32,
            1 << 63,
            u64::MAX,
        ] {
            let e = ReplayWindow::new(bad).expect_err("must be refused");
            assert_eq!(e.requested(), bad);
            assert!(e.to_string().contains(&bad.to_string()));
        }
    }

    #[test]
    fn extreme_values_do_not_panic() {
        for size in [ReplayWindow::MIN_SIZE, ReplayWindow::MAX_SIZE] {
            let w = win(size);
            for s in [u64::MAX, u64::MAX - 1, 1 << 63, u64::MAX - size] {
                let _ = w.check(s);
                let _ = w.is_marked(s);
            }
            let _ = w.infer_esn(u32::MAX);
            assert_eq!(w.mark(u64::MAX), Ok(()));
            assert_eq!(w.top(), u64::MAX);
            assert_eq!(w.check(u64::MAX), Err(ReplayError::Replayed));
            assert_eq!(w.mark(u64::MAX), Err(ReplayError::Replayed));
            assert_eq!(w.mark(u64::MAX - 1), Ok(()));
            assert_eq!(w.mark(u64::MAX - size + 1), Ok(()));
            assert_eq!(w.mark(u64::MAX - size), Err(ReplayError::TooOld));
            assert_eq!(w.mark(1), Err(ReplayError::TooOld));
            assert_eq!(w.check(0), Err(ReplayError::Zero));
            // Th = 2^32 - 1: no next subspace, must not wrap or panic.
            let e = w.infer_esn(3);
            assert_eq!(e, 0xFFFF_FFFF_0000_0003);
            assert_eq!(w.check(e), Err(ReplayError::TooOld));
            assert_eq!(w.infer_esn(u32::MAX), u64::MAX);
            let _ = format!("{w:?}");
        }
        // Huge jumps from a populated window.
        let w = win(64);
        for s in [1, 2, 1 << 40, (1 << 40) + 64, u64::MAX - 5, u64::MAX] {
            let _ = w.check(s);
            let _ = w.mark(s);
        }
        assert_eq!(w.top(), u64::MAX);
    }

    #[test]
    fn duplicate_is_replayed() {
        let w = win(128);
        for s in [5u64, 100, 37, 64, 65] {
            assert_eq!(w.mark(s), Ok(()));
            assert_eq!(w.mark(s), Err(ReplayError::Replayed));
            assert_eq!(w.check(s), Err(ReplayError::Replayed));
        }
        // Neighbours untouched.
        for s in [4u64, 6, 99, 101, 36, 38, 63, 66] {
            assert!(!w.is_marked(s), "{s}");
        }
    }

    #[test]
    fn errors_display() {
        for e in [
            ReplayError::Zero,
            ReplayError::TooOld,
            ReplayError::Replayed,
        ] {
            assert!(!e.to_string().is_empty());
            let _: &dyn std::error::Error = &e;
        }
    }

    /// Sets `top` to `t` (fresh window, one mark).
    fn with_top(size: u64, t: u64) -> ReplayWindow {
        let w = win(size);
        w.mark(t).expect("fresh window accepts");
        assert_eq!(w.top(), t);
        w
    }

    #[test]
    fn esn_low_wrap() {
        let w = with_top(64, (1 << 32) - 5);
        // Just past the 2^32 boundary: next subspace.
        assert_eq!(w.infer_esn(3), (1 << 32) + 3);
        assert_eq!(w.infer_esn(0), 1 << 32);
        // Slightly behind top: stays in the low subspace.
        assert_eq!(w.infer_esn(u32::MAX - 9), (1 << 32) - 10);
        assert_eq!(w.infer_esn(u32::MAX - 4), (1 << 32) - 5);
        assert_eq!(w.infer_esn(u32::MAX), (1 << 32) - 1);
        // Inferred numbers then behave as expected.
        assert_eq!(w.mark(w.infer_esn(3)), Ok(()));
        assert_eq!(w.top(), (1 << 32) + 3);
        assert_eq!(w.mark(w.infer_esn(u32::MAX - 9)), Ok(()));
        assert_eq!(
            w.mark(w.infer_esn(u32::MAX - 9)),
            Err(ReplayError::Replayed)
        );
    }

    #[test]
    fn esn_case_a() {
        // Tl >= W - 1: window inside one subspace. T = 5 * 2^32 + 1000, W = 64.
        let t = (5u64 << 32) + 1000;
        let w = with_top(64, t);
        let bottom = 1000 - 63;
        assert_eq!(w.infer_esn(bottom), (5 << 32) + u64::from(bottom));
        assert_eq!(w.infer_esn(1000), t);
        assert_eq!(w.infer_esn(5000), (5 << 32) + 5000);
        assert_eq!(w.infer_esn(u32::MAX), (5 << 32) + u64::from(u32::MAX));
        // Below the window's bottom: next subspace.
        assert_eq!(w.infer_esn(bottom - 1), (6 << 32) + u64::from(bottom - 1));
        assert_eq!(w.infer_esn(0), 6 << 32);
        // Tl exactly W - 1 is still case A, bottom = 0.
        let w = with_top(64, (2u64 << 32) + 63);
        assert_eq!(w.infer_esn(0), 2 << 32);
        assert_eq!(w.infer_esn(u32::MAX), (2 << 32) + u64::from(u32::MAX));
    }

    #[test]
    fn esn_case_b() {
        // Tl < W - 1: window straddles the boundary. T = 2^32 + 10, W = 64.
        let t = (1u64 << 32) + 10;
        let w = with_top(64, t);
        let bottom = 10u32.wrapping_sub(63); // 2^32 - 53
        assert_eq!(w.infer_esn(bottom), u64::from(bottom));
        assert_eq!(w.infer_esn(u32::MAX), u64::from(u32::MAX));
        assert_eq!(w.infer_esn(bottom - 1), (1 << 32) + u64::from(bottom - 1));
        assert_eq!(w.infer_esn(5), (1 << 32) + 5);
        assert_eq!(w.infer_esn(10), t);
        assert_eq!(w.infer_esn(1 << 31), (1 << 32) + (1 << 31));
        assert_eq!(w.infer_esn(0), 1 << 32);
        // The previous-subspace guess is inside the window and accepted.
        assert_eq!(w.mark(w.infer_esn(u32::MAX - 2)), Ok(()));
        assert_eq!(w.mark(w.infer_esn(bottom - 1)), Ok(()));
    }

    #[test]
    fn esn_start_no_underflow() {
        // Nothing marked: T = 0, case B with Th = 0.
        let w = win(64);
        assert_eq!(w.infer_esn(1), 1);
        assert_eq!(w.infer_esn(0), 0);
        assert_eq!(w.infer_esn(u32::MAX), u64::from(u32::MAX));
        assert_eq!(w.infer_esn(u32::MAX - 62), u64::from(u32::MAX - 62));
        let w = with_top(1 << 20, 17);
        assert_eq!(w.infer_esn(5), 5);
        assert_eq!(w.infer_esn(u32::MAX), u64::from(u32::MAX));
        assert_eq!(w.infer_esn(100_000), 100_000);
    }

    /// Single-threaded reference: a set and a top.
    struct Model {
        size: u64,
        top: u64,
        set: BTreeSet<u64>,
    }

    impl Model {
        fn check(&self, seq: u64) -> Result<(), ReplayError> {
            if seq == 0 {
                Err(ReplayError::Zero)
            } else if seq.checked_add(self.size).is_some_and(|e| e <= self.top) {
                Err(ReplayError::TooOld)
            } else if self.set.contains(&seq) {
                Err(ReplayError::Replayed)
            } else {
                Ok(())
            }
        }

        fn mark(&mut self, seq: u64) -> Result<(), ReplayError> {
            self.check(seq)?;
            self.set.insert(seq);
            self.top = self.top.max(seq);
            Ok(())
        }
    }

    fn op_strategy() -> impl Strategy<Value = (bool, i64)> {
        (
            any::<bool>(),
            prop_oneof![
                8 => -300i64..300,
                2 => -3000i64..3000,
                1 => 0i64..20_000,
            ],
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn matches_reference_model(
            size_log in 6u32..11,
            start in prop_oneof![Just(0u64), 1u64..100_000, Just((1u64 << 32) - 500)],
            ops in prop::collection::vec(op_strategy(), 1..400),
        ) {
            let size = 1u64 << size_log;
            let w = win(size);
            let mut m = Model { size, top: 0, set: BTreeSet::new() };
            for (is_mark, rel) in ops {
                // Sequence numbers around the current top, so the window edge is hit often.
                let base = if m.top == 0 { start } else { m.top };
                let seq = base.saturating_add_signed(rel);
                if is_mark {
                    prop_assert_eq!(w.mark(seq), m.mark(seq), "mark {}", seq);
                } else {
                    prop_assert_eq!(w.check(seq), m.check(seq), "check {}", seq);
                }
                prop_assert_eq!(w.top(), m.top);
            }
            // Every number inside the final window agrees.
            let lo = m.top.saturating_sub(size) + 1;
            for s in lo..=m.top + 40 {
                prop_assert_eq!(w.is_marked(s), m.set.contains(&s), "is_marked {}", s);
                prop_assert_eq!(w.check(s), m.check(s), "final check {}", s);
            }
        }
    }
}
