//! ESP seal and open against the bare AEAD of the same backend, in one run.
//!
//! For each cipher, backend and size (64, 512, 1400, 8900 bytes of inner packet):
//! - `bare_seal`: the AEAD alone over the same bytes with an 8-byte AAD (the reference);
//! - `bare_seal_esp_bytes` (ring only): the AEAD alone over as many bytes as ESP encrypts for
//!   that packet (payload, padding to `pad_align`, pad length and next header: for 64 bytes 80
//!   with AES-GCM, 68 with ChaCha20-Poly1305), so that what ESP's trailer costs the AEAD shows
//!   apart from ESP's own work;
//! - `esp_seal`: a full tunnel-mode ESP seal (sequence number, header, padding, trailer, ICV);
//! - `bare_seal_open` / `esp_seal_open`: a seal followed by an open, the open including the
//!   replay check and mark, the trailer checks and the counters.
//!
//! `scripts/bench-micro.sh` runs this and prints Mpps, GB/s and ESP/bare ratios. With
//! `MIFSEC_BENCH_CLOCK=thread-cpu` it measures the thread's CPU time rather than the wall
//! clock (for a machine shared with other work).

use criterion::measurement::Measurement;
use criterion::{BenchmarkId, Criterion, Throughput};
use mifsec_bench::thread_cpu::ThreadCpuTime;
use mifsec_bench::{HEAD, inner_ipv4, use_thread_cpu_clock};
use mifsec_dataplane::aead::{AeadKey, Backend, Cipher};
use mifsec_dataplane::esp::sa::pad_align;
use mifsec_dataplane::esp::{InboundSa, Mode, OutboundSa, SaConfig};
use std::hint::black_box;

const SIZES: [usize; 4] = [64, 512, 1400, 8900];

fn bench_esp<M: Measurement>(c: &mut Criterion<M>) {
    // Counts as a packet worker does: into a lane of its own.
    let _lane = mifsec_dataplane::counters::claim_lane();
    for cipher in Cipher::ALL {
        for backend in Backend::ALL {
            let keymat: Vec<u8> = (0..cipher.keymat_len() as u8).collect();
            let mut g = c.benchmark_group(format!("{cipher}/{backend:?}"));
            for size in SIZES {
                g.throughput(Throughput::Bytes(size as u64));
                let key = AeadKey::new(cipher, backend, &keymat).unwrap();
                let mut buf = vec![0u8; HEAD + size + OutboundSa::TAILROOM];
                let iv = [7u8; 8];
                let aad = [1u8; 8];
                g.bench_function(BenchmarkId::new("bare_seal", size), |b| {
                    b.iter(|| black_box(key.seal(&iv, &aad, &mut buf[HEAD..HEAD + size]).unwrap()))
                });
                if backend == Backend::Ring {
                    // What tunnel mode encrypts: the packet, padding, pad length, next header.
                    let enc = (size + 2).next_multiple_of(pad_align(cipher));
                    g.bench_function(BenchmarkId::new("bare_seal_esp_bytes", size), |b| {
                        b.iter(|| {
                            black_box(key.seal(&iv, &aad, &mut buf[HEAD..HEAD + enc]).unwrap())
                        })
                    });
                }
                g.bench_function(BenchmarkId::new("bare_seal_open", size), |b| {
                    b.iter(|| {
                        let p = &mut buf[HEAD..HEAD + size];
                        let tag = key.seal(&iv, &aad, p).unwrap();
                        key.open(&iv, &aad, p, &tag).unwrap();
                    })
                });

                let cfg = SaConfig {
                    spi: 0x1000,
                    cipher,
                    backend,
                    keymat: &keymat,
                    esn: false,
                    mode: Mode::Tunnel,
                    replay_window: 4096,
                };
                let out = OutboundSa::new(&cfg, None).unwrap();
                let inb = InboundSa::new(&cfg).unwrap();
                let pkt = inner_ipv4(size);
                buf[HEAD..HEAD + size].copy_from_slice(&pkt);
                g.bench_function(BenchmarkId::new("esp_seal", size), |b| {
                    b.iter(|| {
                        // Seal reads only the version nibble of the (now encrypted) packet.
                        buf[HEAD] = 0x45;
                        black_box(out.seal(&mut buf, HEAD..HEAD + size).unwrap())
                    })
                });
                let out = OutboundSa::new(&cfg, None).unwrap();
                buf[HEAD..HEAD + size].copy_from_slice(&pkt);
                g.bench_function(BenchmarkId::new("esp_seal_open", size), |b| {
                    b.iter(|| {
                        let s = out.seal(&mut buf, HEAD..HEAD + size).unwrap();
                        black_box(inb.open(&mut buf, s.range).unwrap())
                    })
                });
            }
            g.finish();
        }
    }
}

fn config<M: Measurement>(c: Criterion<M>) -> Criterion<M> {
    c.warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2))
        .configure_from_args()
}

fn main() {
    if use_thread_cpu_clock() {
        let mut c = config(Criterion::default().with_measurement(ThreadCpuTime));
        bench_esp(&mut c);
        c.final_summary();
    } else {
        let mut c = config(Criterion::default());
        bench_esp(&mut c);
        c.final_summary();
    }
}
