//! Shared helpers for mifsec's benchmarks: packet builders with the engine's headroom.

/// Headroom left in front of each packet, as the engine's receive buffers do.
pub const HEAD: usize = 64;

/// An IPv4/UDP packet of exactly `size` bytes (at least 28), with a valid header.
pub fn inner_ipv4(size: usize) -> Vec<u8> {
    let size = size.max(28);
    let mut p = vec![0u8; size];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(size as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    for (i, b) in p[28..].iter_mut().enumerate() {
        *b = i as u8;
    }
    p
}

/// Criterion measurement by the calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) instead
/// of the wall clock: on a machine shared with other work, the time this thread waits for a
/// core is left out, so two builds measured at different moments can be compared. Cache and
/// frequency effects of the other work remain. Benchmarks take it when
/// `MIFSEC_BENCH_CLOCK=thread-cpu` is set ([`use_thread_cpu_clock`]).
pub mod thread_cpu {
    use criterion::Throughput;
    use criterion::measurement::{Measurement, ValueFormatter};

    /// The measurement; values are nanoseconds of the thread's CPU time.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct ThreadCpuTime;

    fn now_ns() -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec that outlives the call, and
        // CLOCK_THREAD_CPUTIME_ID is a clock every Linux kernel supports; the call writes
        // only `ts`.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    impl Measurement for ThreadCpuTime {
        type Intermediate = u64;
        type Value = u64;

        fn start(&self) -> u64 {
            now_ns()
        }
        fn end(&self, start: u64) -> u64 {
            now_ns().saturating_sub(start)
        }
        fn add(&self, a: &u64, b: &u64) -> u64 {
            a + b
        }
        fn zero(&self) -> u64 {
            0
        }
        fn to_f64(&self, v: &u64) -> f64 {
            *v as f64
        }
        fn formatter(&self) -> &dyn ValueFormatter {
            &NsFormatter
        }
    }

    /// Nanoseconds shown as ns / µs / ms, throughputs as bytes or elements per CPU second.
    struct NsFormatter;

    impl NsFormatter {
        fn scale(typical: f64) -> (f64, &'static str) {
            if typical < 1e3 {
                (1.0, "ns")
            } else if typical < 1e6 {
                (1e-3, "µs")
            } else if typical < 1e9 {
                (1e-6, "ms")
            } else {
                (1e-9, "s")
            }
        }
    }

    impl ValueFormatter for NsFormatter {
        fn scale_values(&self, typical: f64, values: &mut [f64]) -> &'static str {
            let (f, unit) = Self::scale(typical);
            values.iter_mut().for_each(|v| *v *= f);
            unit
        }

        fn scale_throughputs(
            &self,
            typical: f64,
            throughput: &Throughput,
            values: &mut [f64],
        ) -> &'static str {
            // Per CPU second: amount * 1e9 / ns.
            let (amount, units): (f64, [&'static str; 4]) = match *throughput {
                Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                    (n as f64, ["B/s", "KB/s", "MB/s", "GB/s"])
                }
                Throughput::Elements(n) => (n as f64, ["elem/s", "Kelem/s", "Melem/s", "Gelem/s"]),
            };
            let per_s = amount * 1e9 / typical.max(1e-9);
            let (f, unit) = if per_s < 1e3 {
                (1.0, units[0])
            } else if per_s < 1e6 {
                (1e-3, units[1])
            } else if per_s < 1e9 {
                (1e-6, units[2])
            } else {
                (1e-9, units[3])
            };
            values
                .iter_mut()
                .for_each(|v| *v = amount * 1e9 / v.max(1e-9) * f);
            unit
        }

        fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
            "ns"
        }
    }
}

/// Whether `MIFSEC_BENCH_CLOCK=thread-cpu` asks for [`thread_cpu::ThreadCpuTime`].
pub fn use_thread_cpu_clock() -> bool {
    std::env::var("MIFSEC_BENCH_CLOCK").is_ok_and(|v| v == "thread-cpu")
}
