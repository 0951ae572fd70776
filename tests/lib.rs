//! Helpers shared by the workspace integration tests: a network-namespace lab with two
//! links between a client and a gateway, engines started inside namespaces, and UDP/TCP
//! traffic generators that run inside a namespace.
//!
//! ```text
//!            link 1 (routed through `mid`, which can blackhole it silently)
//!  client  veth-c1 198.18.1.2 ── 198.18.1.254 [mid] 198.18.4.254 ── 198.18.4.1 veth-g1  gateway
//!          veth-c2 198.18.2.2 ─────────────── link 2 ─────────────── 198.18.2.1 veth-g2
//!  inner:  10.1.0.1 (client TUN)                                     10.2.0.1 (gateway TUN)
//! ```
//!
//! Tests that use it need root. Without root they fail on purpose (see [`require_root`]);
//! `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` reports them as ignored.

use std::net::{SocketAddr, UdpSocket};
use std::process::Command;
use std::time::{Duration, Instant};

use mifsec_dataplane::aead::Cipher;
use mifsec_dataplane::engine::{Engine, EngineConfig, InterfaceConfig, PathSpec, SaSpec};
use mifsec_dataplane::esp::Mode;
use mifsec_dataplane::sa_table::{Policy, Role};
use mifsec_dataplane::tun::TunConfig;
use mifsec_testkit::{Netns, addr_up, unique_suffix, veth};
use zeroize::Zeroizing;

pub use mifsec_testkit::{WAIT, enter, exec_in, in_ns, ip, require_root, wait_until};

/// Waits until every path of `engine`'s first SA answers probes (state `up`).
pub fn wait_paths_up(engine: &Engine) {
    wait_until(WAIT, "every path of the first SA up", || {
        engine.status().sas[0].paths.iter().all(|p| p.state == "up")
    });
}

/// The three namespaces and two links; everything is deleted on drop.
#[derive(Debug)]
pub struct Lab {
    /// Client namespace.
    pub cl: String,
    /// Middle router namespace (link 1 only).
    pub mid: String,
    /// Gateway namespace.
    pub gw: String,
    /// The namespaces, deleted on drop.
    _ns: [Netns; 3],
}

impl Lab {
    /// Builds the lab. `rates` shape link 1 and link 2 with tbf (Mbit/s), `None` unshaped.
    pub fn new(rates: [Option<u32>; 2]) -> Lab {
        let id = unique_suffix();
        let (cl, mid, gw) = (
            format!("mfcl{id}"),
            format!("mfmd{id}"),
            format!("mfgw{id}"),
        );
        let ns = [&cl, &mid, &gw].map(|n| Netns::new(n.as_str()));
        for n in &ns {
            n.lo_up();
        }
        let lab = Lab {
            cl,
            mid,
            gw,
            _ns: ns,
        };
        veth(&lab.cl, "veth-c1", &lab.mid, "m-c1");
        veth(&lab.gw, "veth-g1", &lab.mid, "m-g1");
        veth(&lab.cl, "veth-c2", &lab.gw, "veth-g2");
        for (ns, dev, addr) in [
            (&lab.cl, "veth-c1", "198.18.1.2/24"),
            (&lab.mid, "m-c1", "198.18.1.254/24"),
            (&lab.mid, "m-g1", "198.18.4.254/24"),
            (&lab.gw, "veth-g1", "198.18.4.1/24"),
            (&lab.cl, "veth-c2", "198.18.2.2/24"),
            (&lab.gw, "veth-g2", "198.18.2.1/24"),
        ] {
            addr_up(ns, dev, addr);
        }
        ip(&[
            "-n",
            &lab.cl,
            "route",
            "add",
            "198.18.4.0/24",
            "via",
            "198.18.1.254",
            "dev",
            "veth-c1",
        ]);
        ip(&[
            "-n",
            &lab.gw,
            "route",
            "add",
            "198.18.1.0/24",
            "via",
            "198.18.4.254",
            "dev",
            "veth-g1",
        ]);
        let (ok, out) = exec_in(&lab.mid, &["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        assert!(ok, "{out}");
        for (i, rate) in rates.iter().enumerate() {
            if let Some(r) = rate {
                let devs: [(&str, &str); 2] = if i == 0 {
                    [(&lab.cl, "veth-c1"), (&lab.gw, "veth-g1")]
                } else {
                    [(&lab.cl, "veth-c2"), (&lab.gw, "veth-g2")]
                };
                for (ns, dev) in devs {
                    let rate = format!("{r}mbit");
                    let burst = format!("{}kb", (r / 8).max(32));
                    ip(&["-n", ns, "link", "set", dev, "txqueuelen", "1000"]);
                    let out = Command::new("tc")
                        .args([
                            "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", &rate,
                            "burst", &burst, "latency", "20ms",
                        ])
                        .output()
                        .expect("tc");
                    assert!(
                        out.status.success(),
                        "tc: {}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
        }
        lab
    }

    /// Drops link 1 silently in both directions (blackhole routes in the middle namespace; no
    /// interface changes state).
    pub fn blackhole_link1(&self) {
        self.blackhole_routes("add");
    }

    /// Undoes [`Lab::blackhole_link1`].
    pub fn restore_link1(&self) {
        self.blackhole_routes("del");
    }

    fn blackhole_routes(&self, op: &str) {
        for dst in ["198.18.4.1/32", "198.18.1.2/32"] {
            ip(&["-n", &self.mid, "route", op, "blackhole", dst]);
        }
    }

    /// Starts an engine inside namespace `ns` (its threads stay there).
    pub fn start(&self, ns: &str, cfg: EngineConfig) -> Engine {
        in_ns(ns, move || {
            Engine::start(cfg).unwrap_or_else(|e| panic!("engine start: {e}"))
        })
    }
}

/// Which side of the lab a configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// 10.1.0.1, outer 198.18.1.2 / 198.18.2.2.
    Client,
    /// 10.2.0.1, outer 198.18.4.1 / 198.18.2.1.
    Gateway,
}

/// Engine configurations for both sides: one SA pair named `tunnel`, paths `p1` (link 1) and
/// `p2` (link 2), keys fixed (tests only).
pub fn lab_config(side: Side, policy: Policy, cipher: Cipher, p2_role: Role) -> EngineConfig {
    let key_a: Vec<u8> = (0..cipher.keymat_len() as u8)
        .map(|b| b.wrapping_mul(7) ^ 0x55)
        .collect();
    let key_b: Vec<u8> = (0..cipher.keymat_len() as u8)
        .map(|b| b.wrapping_mul(11) ^ 0xAA)
        .collect();
    let (local1, local2, remote1, remote2, inner, peer_inner, tun, dev) = match side {
        Side::Client => (
            "198.18.1.2",
            "198.18.2.2",
            "198.18.4.1",
            "198.18.2.1",
            "10.1.0.1",
            "10.2.0.1",
            "mifsec-c",
            'c',
        ),
        Side::Gateway => (
            "198.18.4.1",
            "198.18.2.1",
            "198.18.1.2",
            "198.18.2.2",
            "10.2.0.1",
            "10.1.0.1",
            "mifsec-g",
            'g',
        ),
    };
    let (spi_out, spi_in, key_out, key_in) = match side {
        Side::Client => (0x1001, 0x2001, key_a, key_b),
        Side::Gateway => (0x2001, 0x1001, key_b, key_a),
    };
    let path = |name: &str, iface: &str, remote: &str, role: Role| PathSpec {
        name: name.into(),
        interface: iface.into(),
        remote: SocketAddr::new(remote.parse().unwrap(), 4500),
        role,
        weight: 1,
        pin: Vec::new(),
        verify: false,
    };
    EngineConfig {
        workers: 2,
        tun: TunConfig {
            name: tun.into(),
            mtu: 1400,
            offloads: true,
            ..TunConfig::default()
        },
        addresses: vec![format!("{inner}/32").parse().unwrap()],
        routes: Vec::new(),
        interfaces: vec![
            InterfaceConfig {
                name: "link1".into(),
                device: Some(format!("veth-{dev}1")),
                address: local1.parse().unwrap(),
                port: 4500,
            },
            InterfaceConfig {
                name: "link2".into(),
                device: Some(format!("veth-{dev}2")),
                address: local2.parse().unwrap(),
                port: 4500,
            },
        ],
        sas: vec![SaSpec {
            name: "tunnel".into(),
            mode: Mode::Tunnel,
            cipher,
            esn: true,
            spi_out,
            key_out: Zeroizing::new(key_out),
            spi_in,
            key_in: Zeroizing::new(key_in),
            local_ts: vec![format!("{inner}/32").parse().unwrap()],
            remote_ts: vec![format!("{peer_inner}/32").parse().unwrap()],
            policy,
            paths: vec![
                path("p1", "link1", remote1, Role::Active),
                path("p2", "link2", remote2, p2_role),
            ],
            reorder: if policy == Policy::Aggregate {
                Duration::from_millis(50)
            } else {
                Duration::ZERO
            },
            probes: true,
            report_usage: false,
        }],
        ..EngineConfig::default()
    }
}

/// What a sequence-numbered UDP stream saw at the receiver.
#[derive(Debug, Clone, Default)]
pub struct StreamReport {
    /// Datagrams sent.
    pub sent: u64,
    /// Distinct datagrams received.
    pub received: u64,
    /// Datagrams received more than once.
    pub duplicates: u64,
    /// Longest time without any datagram arriving after the first, in milliseconds.
    pub longest_gap_ms: f64,
    /// The datagrams that never arrived, as runs of consecutive numbers (first, last).
    pub lost_runs: Vec<(u64, u64)>,
}

impl StreamReport {
    /// Datagrams that never arrived.
    pub fn lost(&self) -> u64 {
        self.lost_runs.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// The longest run of lost datagrams (the first of equals).
    pub fn longest_lost_run(&self) -> Option<(u64, u64)> {
        self.lost_runs
            .iter()
            .copied()
            .reduce(|l, r| if r.1 - r.0 > l.1 - l.0 { r } else { l })
    }

    /// Datagrams lost outside the longest run.
    pub fn lost_outside_longest_run(&self) -> u64 {
        self.lost() - self.longest_lost_run().map_or(0, |(a, b)| b - a + 1)
    }

    /// Datagrams numbered `from` or later that never arrived.
    pub fn lost_from(&self, from: u64) -> u64 {
        self.lost_runs
            .iter()
            .map(|&(a, b)| if b < from { 0 } else { b - a.max(from) + 1 })
            .sum()
    }
}

/// Sends `rate` datagrams per second for `secs` from namespace `from_ns` to `to` (inner
/// address, port), receiving them in `to_ns`; runs `during` once `at` seconds in, and
/// reports what arrived. The stream ends with a short drain period. `before_send(k)` is
/// called on the sender's thread before datagram `k` goes out: to interleave the stream
/// with other events, or to note how far it has got.
#[allow(clippy::too_many_arguments)]
pub fn udp_stream(
    from_ns: &str,
    to_ns: &str,
    to: SocketAddr,
    rate: u64,
    secs: f64,
    at: f64,
    during: impl FnOnce() + Send + 'static,
    mut before_send: impl FnMut(u64) + Send + 'static,
) -> StreamReport {
    let total = (rate as f64 * secs) as u64;
    let rx_ns = to_ns.to_owned();
    let (bound_tx, bound) = std::sync::mpsc::channel();
    let receiver = std::thread::spawn(move || {
        enter(&rx_ns);
        let sock = UdpSocket::bind(to).expect("bind receiver");
        // A deep receive buffer: on a loaded machine this thread may not run for tens of
        // milliseconds, and the kernel must not drop what the tunnel delivered meanwhile.
        let size: libc::c_int = 8 << 20;
        // SAFETY: a valid socket fd and a pointer to a c_int of the length passed.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&sock),
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let _ = bound_tx.send(());
        let mut seen = vec![false; total as usize];
        let mut report = StreamReport::default();
        let mut last: Option<Instant> = None;
        let mut idle_since = Instant::now();
        let mut buf = [0u8; 2048];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 8 => {
                    let now = Instant::now();
                    if let Some(l) = last {
                        report.longest_gap_ms =
                            report.longest_gap_ms.max((now - l).as_secs_f64() * 1e3);
                    }
                    last = Some(now);
                    idle_since = now;
                    let k = u64::from_be_bytes(buf[..8].try_into().unwrap()) as usize;
                    match seen.get_mut(k) {
                        Some(s) if *s => report.duplicates += 1,
                        Some(s) => {
                            *s = true;
                            report.received += 1;
                        }
                        None => {}
                    }
                    if report.received == total {
                        break;
                    }
                }
                _ => {
                    // The drain period: 3 s without a datagram once they have started to
                    // arrive (long enough for a loaded machine), or none at all by long after
                    // the stream should have ended.
                    if idle_since.elapsed() > Duration::from_secs(3)
                        && (last.is_some()
                            || idle_since.elapsed() > Duration::from_secs(secs as u64 + 10))
                    {
                        break;
                    }
                }
            }
        }
        let mut run: Option<(u64, u64)> = None;
        for (k, s) in seen.iter().enumerate() {
            let k = k as u64;
            match (*s, &mut run) {
                (false, Some((_, last))) => *last = k,
                (false, None) => run = Some((k, k)),
                (true, Some(r)) => {
                    report.lost_runs.push(*r);
                    run = None;
                }
                (true, None) => {}
            }
        }
        report.lost_runs.extend(run);
        report
    });
    // The sender starts once the receiver's socket is bound.
    bound
        .recv_timeout(WAIT)
        .expect("the stream's receiver did not bind");
    let tx_ns = from_ns.to_owned();
    let sender = std::thread::spawn(move || {
        enter(&tx_ns);
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        let start = Instant::now();
        // Time spent in `before_send` moves the schedule on: it never causes a burst.
        let mut held = Duration::ZERO;
        let mut payload = [0x5Au8; 200];
        let mut during = Some(during);
        for k in 0..total {
            let due = start + held + Duration::from_secs_f64(k as f64 / rate as f64);
            let now = Instant::now();
            // Pacing, not waiting for a state: datagram k is due k / rate seconds in.
            if due > now {
                std::thread::sleep(due - now);
            }
            if let Some(f) = during.take_if(|_| start.elapsed().as_secs_f64() >= at) {
                std::thread::spawn(f);
            }
            let t = Instant::now();
            before_send(k);
            held += t.elapsed();
            payload[..8].copy_from_slice(&k.to_be_bytes());
            let _ = sock.send_to(&payload, to);
        }
        total
    });
    let sent = sender.join().unwrap();
    let mut report = receiver.join().unwrap();
    report.sent = sent;
    report
}

impl Lab {
    /// [`udp_stream`] from the client namespace to 10.2.0.1:`port` (the gateway's TUN
    /// address), with the datagrams the kernels dropped from full queues meanwhile
    /// ([`QueueDrops::since`]): at most that many of the stream's may be missing without the
    /// tunnel having lost them.
    #[allow(clippy::too_many_arguments)]
    pub fn stream_to_gateway(
        &self,
        port: u16,
        rate: u64,
        secs: f64,
        at: f64,
        during: impl FnOnce() + Send + 'static,
        before_send: impl FnMut(u64) + Send + 'static,
    ) -> (StreamReport, u64) {
        let q0 = QueueDrops::read(self);
        let to = SocketAddr::from(([10, 2, 0, 1], port));
        let report = udp_stream(&self.cl, &self.gw, to, rate, secs, at, during, before_send);
        (report, QueueDrops::read(self).since(&q0))
    }
}

/// Datagrams the kernels dropped at the edges of the tunnel because a queue was full: the
/// signature of a machine too loaded to empty a queue in time, not of the engine losing them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueDrops {
    /// Packets the client's kernel could not queue towards its TUN (`tx_dropped`).
    pub client_tun: u64,
    /// UDP datagrams refused for a full receive buffer in the gateway's namespace (the
    /// engine's outer socket or the stream's receiver): `Udp: RcvbufErrors`.
    pub gateway_udp: u64,
    /// The same in the client's namespace.
    pub client_udp: u64,
}

impl QueueDrops {
    /// The counters now.
    pub fn read(lab: &Lab) -> QueueDrops {
        let tun = |ns: &str, dev: &str| {
            let (ok, out) = exec_in(
                ns,
                &[
                    "cat",
                    &format!("/sys/class/net/{dev}/statistics/tx_dropped"),
                ],
            );
            assert!(ok, "{out}");
            out.trim().parse::<u64>().unwrap()
        };
        let udp = |ns: &str| {
            let (ok, out) = exec_in(ns, &["cat", "/proc/net/snmp"]);
            assert!(ok, "{out}");
            let mut udp = out.lines().filter(|l| l.starts_with("Udp:"));
            let (names, values) = (udp.next().unwrap(), udp.next().unwrap());
            let i = names
                .split_whitespace()
                .position(|n| n == "RcvbufErrors")
                .unwrap();
            values
                .split_whitespace()
                .nth(i)
                .unwrap()
                .parse::<u64>()
                .unwrap()
        };
        QueueDrops {
            client_tun: tun(&lab.cl, "mifsec-c"),
            gateway_udp: udp(&lab.gw),
            client_udp: udp(&lab.cl),
        }
    }

    /// What was dropped since `before`, in all (an upper bound of the stream's datagrams
    /// among them: other packets may have been dropped too).
    pub fn since(&self, before: &QueueDrops) -> u64 {
        (self.client_tun - before.client_tun)
            + (self.gateway_udp - before.gateway_udp)
            + (self.client_udp - before.client_udp)
    }
}

/// Pings `dst` from namespace `ns`: `count` echo requests; returns whether all came back.
pub fn ping(ns: &str, dst: &str, count: u32) -> (bool, String) {
    exec_in(
        ns,
        &[
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            "-q",
            dst,
        ],
    )
}
