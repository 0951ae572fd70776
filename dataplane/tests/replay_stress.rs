//! Multi-threaded stress tests of the lock-free anti-replay window.
#![cfg(not(loom))]

use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use mifsec_dataplane::replay::{ReplayError, ReplayWindow};

const THREADS: usize = 4;

/// Small deterministic PRNG (splitmix64); no dependency needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Shuffles `v` within consecutive chunks of `chunk` elements: every element moves by less than
/// `chunk` positions.
fn local_shuffle<T>(v: &mut [T], chunk: usize, rng: &mut Rng) {
    for c in v.chunks_mut(chunk) {
        for i in (1..c.len()).rev() {
            let j = rng.below(i as u64 + 1) as usize;
            c.swap(i, j);
        }
    }
}

/// Every thread tries to mark every number of the same stream (each in its own locally shuffled
/// order, the stream itself having forward jumps both smaller and larger than the window). Each
/// number must be won at most once, and exactly once where no thread could have seen it left of
/// the window.
#[test]
fn same_seqs_won_exactly_once() {
    const SIZE: u64 = 1024;
    const LEN: usize = 200_000;
    const REORDER: usize = 16;

    let mut rng = Rng(0x5EED_0001);
    // The stream: increasing numbers with occasional jumps.
    let mut base = Vec::with_capacity(LEN);
    let mut s = 0u64;
    for i in 0..LEN {
        s += 1;
        if i % 5000 == 4999 {
            // Alternate a jump inside the window and one far past it.
            s += if (i / 5000) % 2 == 0 {
                SIZE / 2
            } else {
                3 * SIZE + rng.below(SIZE)
            };
        }
        base.push(s);
    }
    // Per-thread orders, as indices into `base`.
    let orders: Vec<Vec<usize>> = (0..THREADS)
        .map(|_| {
            let mut o: Vec<usize> = (0..LEN).collect();
            local_shuffle(&mut o, REORDER, &mut rng);
            o
        })
        .collect();
    // A number is "safe" if, in every thread's order, nothing before it is `SIZE` or more ahead
    // of it: then no thread can have pushed it out of the window before some thread marked it.
    let mut safe = vec![true; LEN];
    for o in &orders {
        let mut max_before = 0u64;
        for &i in o {
            if max_before >= base[i] + SIZE {
                safe[i] = false;
            }
            max_before = max_before.max(base[i]);
        }
    }
    let unsafe_count = safe.iter().filter(|s| !**s).count();
    // The far jumps must create some unsafe numbers, but only a few.
    assert!(
        unsafe_count > 0 && unsafe_count < LEN / 100,
        "{unsafe_count}"
    );

    let w = ReplayWindow::new(SIZE).unwrap();
    let wins: Vec<AtomicU32> = (0..LEN).map(|_| AtomicU32::new(0)).collect();
    let barrier = Barrier::new(THREADS);
    thread::scope(|sc| {
        for o in &orders {
            let (w, wins, base, barrier) = (&w, &wins, &base, &barrier);
            sc.spawn(move || {
                barrier.wait();
                for &i in o {
                    let seq = base[i];
                    if w.check(seq).is_err() {
                        continue;
                    }
                    match w.mark(seq) {
                        Ok(()) => {
                            wins[i].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(ReplayError::Replayed | ReplayError::TooOld) => {}
                        Err(ReplayError::Zero) => panic!("seq {seq} is not 0"),
                    }
                }
            });
        }
    });

    let mut won = 0usize;
    for i in 0..LEN {
        let n = wins[i].load(Ordering::Relaxed);
        assert!(n <= 1, "seq {} won {n} times", base[i]);
        if safe[i] {
            assert_eq!(n, 1, "seq {} (safe) won {n} times", base[i]);
        }
        won += n as usize;
    }
    assert!(won >= LEN - unsafe_count);
    assert_eq!(w.top(), *base.last().unwrap());
    // Everything that was won and is still inside the window is marked, and refused again.
    for i in 0..LEN {
        if base[i] + SIZE > w.top() && wins[i].load(Ordering::Relaxed) == 1 {
            assert!(w.is_marked(base[i]));
            assert_eq!(w.mark(base[i]), Err(ReplayError::Replayed));
        }
    }
    // How fast contended threads get through the window is a figure of the criterion
    // benchmark replay/two_threads_interleaved (bench/benches/replay.rs), not a test.
}

/// Thread `i` marks the numbers congruent to `i` mod 4, in rounds of `size / 2` numbers
/// separated by a barrier (so the distance between any marked number and any pending one stays
/// below the window size), locally shuffled within each round: nothing may ever be refused.
fn disjoint_never_refused(size: u64, len: u64) {
    let round = size / 2;
    let rounds = len.div_ceil(round);
    let w = ReplayWindow::new(size).unwrap();
    let barrier = Barrier::new(THREADS);
    let total_ok = AtomicU32::new(0);
    thread::scope(|sc| {
        for t in 0..THREADS as u64 {
            let (w, barrier, total_ok) = (&w, &barrier, &total_ok);
            sc.spawn(move || {
                let mut rng = Rng(0xD15_0000 + t);
                let mut mine = Vec::new();
                let mut ok = 0u32;
                for r in 0..rounds {
                    mine.clear();
                    mine.extend(
                        (r * round + 1..=(r + 1) * round).filter(|s| s % THREADS as u64 == t),
                    );
                    let n = mine.len();
                    local_shuffle(&mut mine, n, &mut rng);
                    for &seq in &mine {
                        assert_eq!(w.check(seq), Ok(()), "check {seq} (thread {t})");
                        assert_eq!(w.mark(seq), Ok(()), "mark {seq} (thread {t})");
                        ok += 1;
                    }
                    barrier.wait();
                }
                total_ok.fetch_add(ok, Ordering::Relaxed);
            });
        }
    });
    let last = rounds * round;
    assert_eq!(u64::from(total_ok.load(Ordering::Relaxed)), last);
    assert_eq!(w.top(), last);
    for seq in last - size + 1..=last {
        assert!(w.is_marked(seq), "{seq}");
        assert_eq!(w.check(seq), Err(ReplayError::Replayed));
    }
}

#[test]
fn disjoint_interleaved_never_refused_large_window() {
    disjoint_never_refused(4096, 200_000);
}

#[test]
fn disjoint_interleaved_never_refused_small_window() {
    disjoint_never_refused(64, 20_000);
}
