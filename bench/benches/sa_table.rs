//! The SA table swap: what one `SaTables::publish` costs, alone and while a worker thread keeps
//! loading the snapshot (as the engine's workers do once per batch). The engine tests assert
//! that traffic survives table swaps interleaved with it; how many swaps per second the table
//! takes is this figure. It covers the publication (allocation, the atomic swap, waiting out
//! readers, dropping the old snapshot) of an empty table, not the rebuild of a table from the
//! control state.
//!
//! `sa_table/apply` is the control side's whole cost of a change through `Engine::apply` on
//! a table of 50 and of 1,000 SA pairs with two paths each: copy the state, apply the
//! changes, rebuild the snapshot, publish it (one swap): `sas50/1` one hard handover on 50
//! SAs, `sas50/50` a batch of 50 (a hard handover of every SA, as one multi-interface
//! operation moves them), `sas1000/1` and `sas1000/50` the same on 1,000 SAs, so that the
//! batch's cost can be read beside a single change's and the table's size beside both.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mifsec_dataplane::engine::{Detached, TableOp};
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

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("sa_table/apply");
    for sas in [50u32, 1_000] {
        let t = Detached::new(&Detached::sample_config(sas)).expect("loopback sockets");
        for changes in [1u32, 50] {
            g.throughput(Throughput::Elements(u64::from(changes)));
            g.bench_with_input(
                BenchmarkId::new(format!("sas{sas}"), changes),
                &changes,
                |b, &changes| {
                    let mut flip = false;
                    b.iter(|| {
                        // Every iteration moves the SAs to the other path: a real change
                        // each time.
                        flip = !flip;
                        let path = if flip { "b" } else { "a" };
                        let ops = (0..changes)
                            .map(|i| TableOp::Handover {
                                sa: format!("s{i}"),
                                path: path.into(),
                                hard: true,
                            })
                            .collect();
                        let swaps = t.table_swaps();
                        black_box(t.apply(ops).expect("valid batch"));
                        assert_eq!(t.table_swaps(), swaps + 1);
                    });
                },
            );
        }
    }
    g.finish();
}

criterion_group!(benches, publish, apply);
criterion_main!(benches);
