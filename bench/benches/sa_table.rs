//! The SA table swap: what one `SaTables::publish` costs, alone and while a worker thread keeps
//! loading the snapshot (as the engine's workers do once per batch). The engine tests assert
//! that traffic survives table swaps interleaved with it; how many swaps per second the table
//! takes is this figure. It covers the publication (allocation, the atomic swap, waiting out
//! readers, dropping the old snapshot) of an empty table, not the rebuild of a table from the
//! control state.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mifsec_dataplane::sa_table::{SaTable, SaTables};

fn publish(c: &mut Criterion) {
    let mut g = c.benchmark_group("sa_table/publish");
    g.throughput(Throughput::Elements(1));
    for readers in [0usize, 1] {
        g.bench_with_input(
            BenchmarkId::new("readers", readers),
            &readers,
            |b, &readers| {
                let tables = SaTables::default();
                let stop = AtomicBool::new(false);
                thread::scope(|sc| {
                    for _ in 0..readers {
                        sc.spawn(|| {
                            while !stop.load(Ordering::Relaxed) {
                                black_box(tables.load().generation);
                            }
                        });
                    }
                    b.iter(|| tables.publish(SaTable::default()));
                    stop.store(true, Ordering::Relaxed);
                });
            },
        );
    }
    g.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
