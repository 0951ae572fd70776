//! A sequence-numbered UDP stream spread over many destinations (one per child SA), to count
//! what a handover loses: the sender sends `rate` packets a second in all, round robin over
//! its (source, destination) pairs, each pair with its own sequence numbers; the receiver
//! counts per destination what arrived, what was lost, duplicated or reordered, and the
//! longest gap between two arrivals (over the whole stream and per destination).
//!
//! Bounded: the sender stops after its count or at 1.5 times its duration plus a second,
//! whichever comes first; the receiver keeps one byte per planned packet (at most
//! [`MAX_PACKETS`]) and stops at its deadline or once every destination's end marker came.
//! Used in-process by the tests ([`run_stream`]) and by scripts/bench_mif.py through the
//! `mif-stream` binary (testkit/src/bin/mif-stream.rs), which runs each half on its own.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

/// The most packets a stream may plan (bounds the receiver's memory: a byte per packet).
pub const MAX_PACKETS: u64 = 20_000_000;
/// The most destinations.
pub const MAX_DESTS: usize = 1024;
const MAGIC: &[u8; 4] = b"MFS1";
/// magic, kind (0 data, 1 end), pad, destination index (u16), sequence number (u64), send
/// time in ns since the epoch (u64), count (u64: planned in data packets, sent in end ones).
const HDR: usize = 4 + 1 + 1 + 2 + 8 + 8 + 8;
const END_COPIES: usize = 5;
const TICK: Duration = Duration::from_millis(1);

/// What the sender is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// (source address, destination address) per destination index.
    pub pairs: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// The destination port.
    pub port: u16,
    /// Packets per second, all destinations together.
    pub rate: u32,
    pub duration: Duration,
    /// Payload size in bytes (at least the header, 32).
    pub size: usize,
}

impl Plan {
    /// Packets planned per destination.
    pub fn per_dest(&self) -> u64 {
        let total = (f64::from(self.rate) * self.duration.as_secs_f64()) as u64;
        total / self.pairs.len().max(1) as u64
    }

    fn check(&self) {
        assert!(
            !self.pairs.is_empty() && self.pairs.len() <= MAX_DESTS,
            "1 to {MAX_DESTS} destinations"
        );
        assert!(
            self.per_dest() * self.pairs.len() as u64 <= MAX_PACKETS,
            "at most {MAX_PACKETS} packets"
        );
        assert!(
            self.size >= HDR && self.size <= 65_000,
            "size {HDR} to 65000"
        );
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// What the sender did.
#[derive(Debug, Clone, Default)]
pub struct SendReport {
    /// Packets sent per destination.
    pub sent: Vec<u64>,
    /// send(2) errors by kind (a route or queue missing for a moment).
    pub errors: BTreeMap<String, u64>,
    /// When the first and last packet left (seconds since the epoch).
    pub started: f64,
    pub ended: f64,
    /// The most the sender fell behind its schedule.
    pub max_lag: Duration,
}

impl SendReport {
    pub fn to_json(&self) -> Value {
        json!({
            "sent": self.sent.iter().sum::<u64>(),
            "sent_per_dest": self.sent,
            "errors": self.errors,
            "started": self.started,
            "ended": self.ended,
            "max_lag_ms": self.max_lag.as_secs_f64() * 1000.0,
        })
    }
}

/// Sends the stream of `plan` (from the calling thread's namespace), then the end markers.
pub fn send(plan: &Plan) -> SendReport {
    plan.check();
    let socks: Vec<UdpSocket> = plan
        .pairs
        .iter()
        .map(|(src, dst)| {
            let s = UdpSocket::bind(SocketAddrV4::new(*src, 0))
                .unwrap_or_else(|e| panic!("bind {src}: {e}"));
            s.connect(SocketAddrV4::new(*dst, plan.port))
                .unwrap_or_else(|e| panic!("connect {dst}: {e}"));
            s.set_nonblocking(true).expect("nonblocking");
            s
        })
        .collect();
    let per = plan.per_dest();
    let n = socks.len() as u64;
    let total = per * n;
    let mut rep = SendReport {
        sent: vec![0; socks.len()],
        ..SendReport::default()
    };
    let mut buf = vec![0u8; plan.size];
    buf[..4].copy_from_slice(MAGIC);
    let t0 = Instant::now();
    let hard_end = t0 + plan.duration.mul_f64(1.5) + Duration::from_secs(1);
    rep.started = now_ns() as f64 / 1e9;
    let mut k: u64 = 0; // packets sent in all, in order: packet k goes to destination k % n
    while k < total {
        let now = Instant::now();
        if now >= hard_end {
            break;
        }
        let due = ((now - t0).as_secs_f64() * f64::from(plan.rate)) as u64;
        let due = due.min(total);
        if due > k + 1 {
            let behind = Duration::from_secs_f64((due - k) as f64 / f64::from(plan.rate));
            rep.max_lag = rep.max_lag.max(behind);
        }
        while k < due {
            let d = (k % n) as usize;
            let seq = k / n;
            buf[4] = 0;
            buf[6..8].copy_from_slice(&(d as u16).to_be_bytes());
            buf[8..16].copy_from_slice(&seq.to_be_bytes());
            buf[16..24].copy_from_slice(&now_ns().to_be_bytes());
            buf[24..32].copy_from_slice(&per.to_be_bytes());
            match socks[d].send(&buf) {
                Ok(_) => rep.sent[d] += 1,
                Err(e) => *rep.errors.entry(format!("{:?}", e.kind())).or_insert(0) += 1,
            }
            k += 1;
        }
        std::thread::sleep(TICK);
    }
    rep.ended = now_ns() as f64 / 1e9;
    for _ in 0..END_COPIES {
        for (d, s) in socks.iter().enumerate() {
            buf[4] = 1;
            buf[6..8].copy_from_slice(&(d as u16).to_be_bytes());
            buf[24..32].copy_from_slice(&rep.sent[d].to_be_bytes());
            let _ = s.send(&buf[..HDR]);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    rep
}

/// One run of consecutive lost packets of one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct LossRun {
    pub dest: usize,
    pub first_seq: u64,
    pub count: u64,
}

/// What the receiver saw.
#[derive(Debug, Clone, Default)]
pub struct RecvReport {
    /// Per destination: packets the sender said it sent (from its end marker; else planned).
    pub sent: Vec<u64>,
    /// Per destination: unique packets received.
    pub received: Vec<u64>,
    pub duplicates: u64,
    /// Packets that came after one with a higher sequence number of the same destination.
    pub reordered: u64,
    /// Destinations whose end marker never came (their `sent` is the planned count).
    pub no_end_marker: usize,
    /// The longest time between two consecutive arrivals of the whole stream.
    pub longest_gap: Duration,
    /// The longest time between two consecutive arrivals of one destination.
    pub longest_gap_per_dest: Duration,
    /// When the longest gap of the whole stream began (seconds since the epoch).
    pub longest_gap_from: f64,
    /// The first runs of lost packets (at most 100).
    pub loss_runs: Vec<LossRun>,
    /// Per sequence number, how many destinations lost it (every loss, not only the first
    /// runs: with the stream's rate it says when packets were lost).
    pub lost_per_seq: Vec<u32>,
    /// Datagrams that were not of this stream (counted, ignored).
    pub foreign: u64,
    /// Seconds since the epoch of the first and last arrival.
    pub first_at: f64,
    pub last_at: f64,
}

impl RecvReport {
    pub fn lost(&self) -> u64 {
        self.sent
            .iter()
            .zip(&self.received)
            .map(|(s, r)| s.saturating_sub(*r))
            .sum()
    }

    pub fn to_json(&self) -> Value {
        json!({
            "sent": self.sent.iter().sum::<u64>(),
            "received": self.received.iter().sum::<u64>(),
            "lost": self.lost(),
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "no_end_marker": self.no_end_marker,
            "longest_gap_ms": self.longest_gap.as_secs_f64() * 1000.0,
            "longest_gap_from": self.longest_gap_from,
            "longest_gap_per_dest_ms": self.longest_gap_per_dest.as_secs_f64() * 1000.0,
            "destinations": self.sent.len(),
            "dests_with_loss": self.sent.iter().zip(&self.received).filter(|(s, r)| r < s).count(),
            "loss_runs": self.loss_runs.iter().map(|r| json!({"dest": r.dest, "first_seq": r.first_seq, "count": r.count})).collect::<Vec<_>>(),
            "foreign": self.foreign,
            "first_at": self.first_at,
            "last_at": self.last_at,
        })
    }
}

/// A bound receiver (bind it before the sender starts).
#[derive(Debug)]
pub struct Receiver {
    sock: UdpSocket,
    dests: usize,
    per_dest: u64,
}

impl Receiver {
    /// Binds UDP `port` on every address of the calling thread's namespace, for a stream of
    /// `dests` destinations of `per_dest` packets each.
    pub fn bind(port: u16, dests: usize, per_dest: u64) -> Receiver {
        assert!(
            dests > 0 && dests <= MAX_DESTS,
            "1 to {MAX_DESTS} destinations"
        );
        assert!(per_dest * dests as u64 <= MAX_PACKETS);
        let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
            .unwrap_or_else(|e| panic!("bind UDP {port}: {e}"));
        set_rcvbuf(&sock, 16 << 20);
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("read timeout");
        Receiver {
            sock,
            dests,
            per_dest,
        }
    }

    /// Receives until every destination's end marker came or `deadline` passed.
    pub fn run(self, deadline: Duration) -> RecvReport {
        let n = self.dests;
        let per = self.per_dest as usize;
        let mut seen = vec![vec![0u8; per]; n];
        let mut highest: Vec<Option<u64>> = vec![None; n];
        let mut last_at: Vec<Option<u64>> = vec![None; n];
        let mut end: Vec<Option<u64>> = vec![None; n];
        let mut rep = RecvReport {
            received: vec![0; n],
            ..RecvReport::default()
        };
        let mut gap_max: u64 = 0;
        let mut gap_dest_max: u64 = 0;
        let mut prev: Option<u64> = None;
        let mut first: Option<u64> = None;
        let stop = Instant::now() + deadline;
        let mut buf = vec![0u8; 65_536];
        let mut ends = 0;
        while Instant::now() < stop && ends < n {
            let len = match self.sock.recv(&mut buf) {
                Ok(l) => l,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    continue;
                }
                Err(e) => panic!("recv: {e}"),
            };
            let at = now_ns();
            let p = &buf[..len];
            if len < HDR || &p[..4] != MAGIC {
                rep.foreign += 1;
                continue;
            }
            let d = usize::from(u16::from_be_bytes([p[6], p[7]]));
            let seq = u64::from_be_bytes(p[8..16].try_into().unwrap());
            let count = u64::from_be_bytes(p[24..32].try_into().unwrap());
            if d >= n {
                rep.foreign += 1;
                continue;
            }
            if p[4] == 1 {
                if end[d].is_none() {
                    end[d] = Some(count.min(self.per_dest));
                    ends += 1;
                }
                continue;
            }
            let Some(slot) = usize::try_from(seq).ok().and_then(|s| seen[d].get_mut(s)) else {
                rep.foreign += 1;
                continue;
            };
            if *slot != 0 {
                rep.duplicates += 1;
                continue;
            }
            *slot = 1;
            rep.received[d] += 1;
            if highest[d].is_some_and(|h| h > seq) {
                rep.reordered += 1;
            }
            highest[d] = Some(highest[d].map_or(seq, |h| h.max(seq)));
            if let Some(t) = prev {
                let g = at.saturating_sub(t);
                if g > gap_max {
                    gap_max = g;
                    rep.longest_gap_from = t as f64 / 1e9;
                }
            }
            if let Some(t) = last_at[d] {
                gap_dest_max = gap_dest_max.max(at.saturating_sub(t));
            }
            last_at[d] = Some(at);
            prev = Some(at);
            first.get_or_insert(at);
        }
        rep.longest_gap = Duration::from_nanos(gap_max);
        rep.longest_gap_per_dest = Duration::from_nanos(gap_dest_max);
        rep.first_at = first.unwrap_or(0) as f64 / 1e9;
        rep.last_at = prev.unwrap_or(0) as f64 / 1e9;
        rep.no_end_marker = end.iter().filter(|e| e.is_none()).count();
        rep.sent = end.iter().map(|e| e.unwrap_or(self.per_dest)).collect();
        for (d, s) in seen.iter().enumerate() {
            let sent = rep.sent[d] as usize;
            for (i, _) in s.iter().take(sent).enumerate().filter(|(_, x)| **x == 0) {
                if rep.lost_per_seq.len() <= i {
                    rep.lost_per_seq.resize(i + 1, 0);
                }
                rep.lost_per_seq[i] += 1;
            }
            let mut i = 0;
            while i < sent && rep.loss_runs.len() < 100 {
                if s[i] == 0 {
                    let j = (i..sent).find(|&j| s[j] != 0).unwrap_or(sent);
                    rep.loss_runs.push(LossRun {
                        dest: d,
                        first_seq: i as u64,
                        count: (j - i) as u64,
                    });
                    i = j;
                } else {
                    i += 1;
                }
            }
        }
        rep
    }
}

fn set_rcvbuf(sock: &UdpSocket, size: libc::c_int) {
    use std::os::fd::AsRawFd;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt(2) on a socket we own, with a pointer to a c_int that lives for
        // the call and its size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// A stream running on two threads: the receiver in one namespace, the sender in another.
#[derive(Debug)]
pub struct Stream {
    sender: std::thread::JoinHandle<SendReport>,
    receiver: std::thread::JoinHandle<RecvReport>,
}

/// Both halves' reports.
#[derive(Debug, Clone)]
pub struct StreamReport {
    pub send: SendReport,
    pub recv: RecvReport,
}

impl Stream {
    /// Starts the receiver in `recv_ns` (bound before the sender starts), then the sender
    /// of `plan` in `send_ns`.
    pub fn start(send_ns: &str, recv_ns: &str, plan: Plan) -> Stream {
        plan.check();
        let (tx, rx) = std::sync::mpsc::channel();
        let (dests, per, port) = (plan.pairs.len(), plan.per_dest(), plan.port);
        let deadline = plan.duration.mul_f64(1.5) + Duration::from_secs(5);
        let rns = recv_ns.to_owned();
        let receiver = std::thread::spawn(move || {
            crate::enter(&rns);
            let r = Receiver::bind(port, dests, per);
            tx.send(()).expect("the starter waits");
            r.run(deadline)
        });
        rx.recv().expect("the receiver bound its socket");
        let sns = send_ns.to_owned();
        let sender = std::thread::spawn(move || {
            crate::enter(&sns);
            send(&plan)
        });
        Stream { sender, receiver }
    }

    /// Waits for both halves.
    pub fn join(self) -> StreamReport {
        let send = self
            .sender
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        let recv = self
            .receiver
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e));
        StreamReport { send, recv }
    }
}

/// The plan of `children` destinations of the multi-interface lab (child i: 10.50.i.1 ->
/// 10.60.i.1, port 5599).
pub fn mif_plan(children: usize, rate: u32, duration: Duration) -> Plan {
    Plan {
        pairs: (0..children)
            .map(|i| {
                (
                    crate::mif::client_inner(i).parse().unwrap(),
                    crate::mif::gateway_inner(i).parse().unwrap(),
                )
            })
            .collect(),
        port: 5599,
        rate,
        duration,
        size: 200,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Over loopback in this namespace: every packet arrives, each destination separately.
    #[test]
    fn loopback_stream_counts_everything() {
        let plan = Plan {
            pairs: vec![
                ("127.0.0.1".parse().unwrap(), "127.0.0.1".parse().unwrap()),
                ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap()),
            ],
            port: 0,
            rate: 2000,
            duration: Duration::from_millis(300),
            size: 64,
        };
        let r = Receiver::bind(0, 2, plan.per_dest());
        let port = r.sock.local_addr().unwrap().port();
        let plan = Plan { port, ..plan };
        let h = std::thread::spawn(move || r.run(Duration::from_secs(10)));
        let s = send(&plan);
        let r = h.join().unwrap();
        assert_eq!(s.sent, vec![300, 300]);
        assert_eq!(r.sent, vec![300, 300]);
        assert_eq!(r.no_end_marker, 0);
        assert_eq!(r.lost(), 0, "{:?}", r.loss_runs);
        assert_eq!(r.duplicates, 0);
    }
}
