//! Anti-replay window micro-benchmarks.
//!
//! One element = one packet's worth of window work: `check` (before decryption) followed by
//! `mark` (after the ICV verified).

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mifsec_dataplane::replay::ReplayWindow;

/// Packets per criterion iteration.
const BATCH: u64 = 1024;

/// Packets refused in the contended benchmark (a thread falling more than a window behind the
/// other would make its work artificially cheap): reported after the run.
static REFUSED: AtomicU64 = AtomicU64::new(0);
/// Packets handled in the contended benchmark.
static HANDLED: AtomicU64 = AtomicU64::new(0);

fn single_thread(c: &mut Criterion) {
    let mut g = c.benchmark_group("replay/single_thread_in_order");
    g.throughput(Throughput::Elements(BATCH));
    for size in [1024u64, 65536] {
        g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
            let w = ReplayWindow::new(size).unwrap();
            let mut seq = 0u64;
            b.iter(|| {
                for _ in 0..BATCH {
                    seq += 1;
                    let s = black_box(seq);
                    if w.check(s).is_ok() {
                        let _ = black_box(w.mark(s));
                    }
                }
            });
        });
    }
    g.finish();
}

/// A per-thread progress counter on its own cache lines.
#[repr(align(128))]
struct Progress(AtomicU64);

fn two_threads_contending(c: &mut Criterion) {
    const THREADS: u64 = 2;
    /// Packets a thread handles between two looks at the other thread's progress.
    const CHUNK: u64 = 256;
    let mut g = c.benchmark_group("replay/two_threads_interleaved");
    // Elements are packets over both threads: each thread handles BATCH / 2 per iteration.
    g.throughput(Throughput::Elements(BATCH));
    let size = 65536u64;
    // Without pacing, a thread that gets ahead (or a descheduled one) pushes the other's numbers
    // out of the window, and refusals are much cheaper than real work. So a thread never runs
    // more than a quarter window ahead of the other: every packet is real work (REFUSED stays 0).
    let max_lead = size / 4;
    g.bench_function(BenchmarkId::from_parameter(size), |b| {
        b.iter_custom(|iters| {
            let w = ReplayWindow::new(size).unwrap();
            let progress = [Progress(AtomicU64::new(0)), Progress(AtomicU64::new(0))];
            let chunks = (iters * BATCH / THREADS).div_ceil(CHUNK);
            let start = Instant::now();
            thread::scope(|sc| {
                for t in 0..THREADS {
                    let (w, progress) = (&w, &progress);
                    sc.spawn(move || {
                        let other = &progress[(1 - t) as usize].0;
                        // Thread t handles t+1, t+1+THREADS, ...: both hammer the same words.
                        let mut seq = t + 1;
                        let mut refused = 0u64;
                        for _ in 0..chunks {
                            let mut spins = 0u32;
                            while seq > other.load(Ordering::Relaxed) + max_lead {
                                spins += 1;
                                if spins < 1000 {
                                    std::hint::spin_loop();
                                } else {
                                    thread::yield_now();
                                }
                            }
                            for _ in 0..CHUNK {
                                let s = black_box(seq);
                                if w.check(s).and_then(|()| w.mark(s)).is_err() {
                                    refused += 1;
                                }
                                seq += THREADS;
                            }
                            progress[t as usize].0.store(seq, Ordering::Relaxed);
                        }
                        // Let a waiting peer finish.
                        progress[t as usize]
                            .0
                            .store(u64::MAX / 2, Ordering::Relaxed);
                        REFUSED.fetch_add(refused, Ordering::Relaxed);
                        HANDLED.fetch_add(chunks * CHUNK, Ordering::Relaxed);
                    });
                }
            });
            let elapsed: Duration = start.elapsed();
            // Scale to the requested iteration count (chunks round up by < CHUNK packets).
            elapsed.mul_f64((iters * BATCH) as f64 / (chunks * CHUNK * THREADS) as f64)
        });
    });
    g.finish();
    let handled = HANDLED.load(Ordering::Relaxed);
    let refused = REFUSED.load(Ordering::Relaxed);
    eprintln!(
        "replay/two_threads_interleaved: {refused} of {handled} packets refused ({:.4}%)",
        refused as f64 * 100.0 / handled.max(1) as f64
    );
}

criterion_group!(benches, single_thread, two_threads_contending);
criterion_main!(benches);
