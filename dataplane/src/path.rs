//! Paths: one (local interface, remote address:port) an SA's packets can take, with its
//! liveness, RTT, loss and rate estimates, and the probes that measure them.
//!
//! A probe is an ESP dummy packet (next header 59, RFC 4303 section 2.6) of the SA itself, so
//! it is encrypted and authenticated like data, and a standard peer simply discards it. Its
//! payload says "request" or "reply"; a mifsec peer answers a request on the path it arrived
//! on, and the reply carries the sender's path id and send time back.
//!
//! [`PathState`] is shared (`Arc`) by every table snapshot that lists the path, so swapping the
//! table never resets a path's figures. Counters are updated by workers with relaxed atomics;
//! the estimates (`rtt`, `loss`, rates) are written by the engine's monitor thread only.
//!
//! The operator's figures cost the packet path nothing new: the time since the last packet
//! received is the `last_rx_ns` the liveness check needs anyway, the RTT variance is updated
//! with each probe answer (a few per second), the failovers are counted by the monitor when
//! it declares the path down, and the loss is the monitor's [`LossEwma`] of its per-second
//! probe counts, so that a path that came back shows its current loss within seconds rather
//! than the loss of the outage.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};

use crate::counters::PacketCounts;

/// Whether a path answers its probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Liveness {
    /// Not probed long enough to know; usable.
    Unknown = 0,
    /// Answers probes.
    Up = 1,
    /// No probe answer for `dead_after`: traffic leaves it.
    Down = 2,
}

impl Liveness {
    fn from_u8(v: u8) -> Liveness {
        match v {
            1 => Liveness::Up,
            2 => Liveness::Down,
            _ => Liveness::Unknown,
        }
    }

    /// Lower-case name for status output.
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Unknown => "unknown",
            Liveness::Up => "up",
            Liveness::Down => "down",
        }
    }
}

/// The live state of one path.
#[derive(Debug)]
pub struct PathState {
    /// Engine-wide unique id, carried in probes.
    pub id: u32,
    /// Name for status and `ctl`.
    pub name: String,
    /// The `[interfaces.*]` name of the local socket.
    pub interface: String,
    /// The peer's address.
    pub remote: SocketAddr,
    /// Packets and bytes sent, and authentic ones received (lanes per worker).
    tx: PacketCounts,
    rx: PacketCounts,
    probes_sent: AtomicU64,
    probes_answered: AtomicU64,
    /// Nanoseconds since the engine's epoch of the last probe answer (0: never).
    last_reply_ns: AtomicU64,
    /// Nanoseconds since the engine's epoch of the last probe sent.
    last_probe_ns: AtomicU64,
    /// Nanoseconds since the engine's epoch of the last authentic packet received.
    last_rx_ns: AtomicU64,
    /// When the path entered the table, to give new paths a grace period.
    since_ns: AtomicU64,
    srtt_us: AtomicU32,
    /// RTT variation (RFC 6298 RTTVAR, the mean deviation), microseconds.
    rttvar_us: AtomicU32,
    /// Times the monitor declared the path down (its traffic failed over elsewhere).
    failovers: AtomicU64,
    /// The smallest probe RTT seen: the path's RTT with empty queues.
    min_rtt_us: AtomicU32,
    loss_permille: AtomicU32,
    tx_bps: AtomicU64,
    rx_bps: AtomicU64,
    liveness: AtomicU8,
    /// Return routability: a probe sent on this path was answered on it (from its remote
    /// address, on its socket). Paths that need no check start verified; the scheduler never
    /// sends data on a path that is not.
    verified: AtomicBool,
}

/// A plain copy of a path's figures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PathCounters {
    /// Packets sent on the path.
    pub tx_packets: u64,
    /// Bytes (ESP) sent on the path.
    pub tx_bytes: u64,
    /// Authentic packets received on the path.
    pub rx_packets: u64,
    /// Bytes (ESP) of those.
    pub rx_bytes: u64,
    /// Probes sent.
    pub probes_sent: u64,
    /// Probe answers received.
    pub probes_answered: u64,
}

impl PathState {
    /// A new path, unknown liveness, entering service at `now_ns`.
    pub fn new(id: u32, name: &str, interface: &str, remote: SocketAddr, now_ns: u64) -> Self {
        PathState {
            id,
            name: name.to_owned(),
            interface: interface.to_owned(),
            remote,
            tx: PacketCounts::default(),
            rx: PacketCounts::default(),
            probes_sent: AtomicU64::new(0),
            probes_answered: AtomicU64::new(0),
            last_reply_ns: AtomicU64::new(0),
            last_probe_ns: AtomicU64::new(0),
            last_rx_ns: AtomicU64::new(0),
            since_ns: AtomicU64::new(now_ns),
            srtt_us: AtomicU32::new(0),
            rttvar_us: AtomicU32::new(0),
            failovers: AtomicU64::new(0),
            min_rtt_us: AtomicU32::new(u32::MAX),
            loss_permille: AtomicU32::new(0),
            tx_bps: AtomicU64::new(0),
            rx_bps: AtomicU64::new(0),
            liveness: AtomicU8::new(Liveness::Unknown as u8),
            verified: AtomicBool::new(true),
        }
    }

    /// A new path that carries no data until a probe is answered on it ([`Self::verify`]).
    pub fn unverified(
        id: u32,
        name: &str,
        interface: &str,
        remote: SocketAddr,
        now_ns: u64,
    ) -> Self {
        let p = PathState::new(id, name, interface, remote, now_ns);
        p.verified.store(false, Ordering::Relaxed);
        p
    }

    /// Whether return routability is shown (or was never asked for).
    #[inline]
    pub fn verified(&self) -> bool {
        self.verified.load(Ordering::Relaxed)
    }

    /// Records that a probe sent on this path was answered on it; returns whether this is
    /// the first time (the path was unverified until now).
    pub fn verify(&self) -> bool {
        !self.verified.swap(true, Ordering::Relaxed)
    }

    /// Whether the path answers probes and may carry data: up and verified (the test a soft
    /// handover waits for).
    #[inline]
    pub fn answering(&self) -> bool {
        self.liveness() == Liveness::Up && self.verified()
    }

    /// Counts packets sent.
    #[inline]
    pub fn count_tx(&self, packets: u64, bytes: u64) {
        self.tx.add(packets, bytes);
    }

    /// Counts an authentic packet received at `now_ns`.
    #[inline]
    pub fn count_rx(&self, bytes: u64, now_ns: u64) {
        self.rx.add(1, bytes);
        if self.last_rx_ns.load(Ordering::Relaxed) < now_ns {
            self.last_rx_ns.store(now_ns, Ordering::Relaxed);
        }
    }

    /// Nanoseconds of the last authentic packet received (0: never).
    pub fn last_rx_ns(&self) -> u64 {
        self.last_rx_ns.load(Ordering::Relaxed)
    }

    /// Current liveness.
    #[inline]
    pub fn liveness(&self) -> Liveness {
        Liveness::from_u8(self.liveness.load(Ordering::Relaxed))
    }

    /// Whether the scheduler may use the path: verified and not down.
    #[inline]
    pub fn usable(&self) -> bool {
        self.verified() && self.liveness() != Liveness::Down
    }

    /// Sets liveness (monitor thread; tests).
    pub fn set_liveness(&self, l: Liveness) {
        self.liveness.store(l as u8, Ordering::Relaxed);
    }

    /// Records a probe sent at `now_ns`.
    pub fn probe_sent(&self, now_ns: u64) {
        self.probes_sent.fetch_add(1, Ordering::Relaxed);
        self.last_probe_ns.store(now_ns, Ordering::Relaxed);
    }

    /// Records a probe answer: the probe left at `sent_ns` and came back at `now_ns`.
    pub fn probe_answered(&self, sent_ns: u64, now_ns: u64) {
        self.probes_answered.fetch_add(1, Ordering::Relaxed);
        self.last_reply_ns.fetch_max(now_ns, Ordering::Relaxed);
        // `sent_ns` is what the peer echoed: any value. u32::MAX is min_rtt_us's "no sample
        // yet", so a sample stops one short of it.
        let sample = (now_ns.saturating_sub(sent_ns) / 1000).min(u64::from(u32::MAX - 1)) as u32;
        self.min_rtt_us.fetch_min(sample.max(1), Ordering::Relaxed);
        // srtt = 7/8 srtt + 1/8 sample (RFC 6298); the first sample sets it.
        let prev = self
            .srtt_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(if s == 0 {
                    sample.max(1)
                } else {
                    s - s / 8 + sample / 8
                })
            })
            .unwrap_or(0);
        // rttvar = 3/4 rttvar + 1/4 |srtt - sample| with the srtt before this sample; the
        // first sample sets it to half the sample (RFC 6298 section 2).
        let _ = self
            .rttvar_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(if prev == 0 {
                    sample / 2
                } else {
                    v - v / 4 + prev.abs_diff(sample) / 4
                })
            });
        self.liveness.store(Liveness::Up as u8, Ordering::Relaxed);
    }

    /// Nanoseconds of the last probe answer (0: never), of the last probe, and of entering
    /// service.
    pub fn probe_times(&self) -> (u64, u64, u64) {
        (
            self.last_reply_ns.load(Ordering::Relaxed),
            self.last_probe_ns.load(Ordering::Relaxed),
            self.since_ns.load(Ordering::Relaxed),
        )
    }

    /// Restarts the grace period (a path coming back into service).
    pub fn restart(&self, now_ns: u64) {
        self.since_ns.store(now_ns, Ordering::Relaxed);
        self.set_liveness(Liveness::Unknown);
    }

    /// Smoothed RTT in microseconds (0: no sample yet).
    pub fn srtt_us(&self) -> u32 {
        self.srtt_us.load(Ordering::Relaxed)
    }

    /// RTT variation (RFC 6298 RTTVAR) in microseconds (0 before the first sample).
    pub fn rttvar_us(&self) -> u32 {
        self.rttvar_us.load(Ordering::Relaxed)
    }

    /// Marks the path down (monitor thread) and counts the failover; returns the count.
    pub fn went_down(&self) -> u64 {
        self.set_liveness(Liveness::Down);
        self.failovers.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Times the path was declared down by the monitor.
    pub fn failovers(&self) -> u64 {
        self.failovers.load(Ordering::Relaxed)
    }

    /// The smallest probe RTT seen, in microseconds (0: no sample yet).
    pub fn min_rtt_us(&self) -> u32 {
        match self.min_rtt_us.load(Ordering::Relaxed) {
            u32::MAX => 0,
            v => v,
        }
    }

    /// Queueing delay now: smoothed RTT above the smallest RTT seen, in microseconds.
    pub fn queue_delay_us(&self) -> u32 {
        self.srtt_us().saturating_sub(self.min_rtt_us())
    }

    /// Recent probe loss in per mille (the monitor's [`LossEwma`]).
    pub fn loss_permille(&self) -> u32 {
        self.loss_permille.load(Ordering::Relaxed)
    }

    /// Recent send and receive rates in bits per second.
    pub fn rates_bps(&self) -> (u64, u64) {
        (
            self.tx_bps.load(Ordering::Relaxed),
            self.rx_bps.load(Ordering::Relaxed),
        )
    }

    /// Publishes the monitor's estimates.
    pub fn set_estimates(&self, loss_permille: u32, tx_bps: u64, rx_bps: u64) {
        self.loss_permille.store(loss_permille, Ordering::Relaxed);
        self.tx_bps.store(tx_bps, Ordering::Relaxed);
        self.rx_bps.store(rx_bps, Ordering::Relaxed);
    }

    /// The counters.
    pub fn counters(&self) -> PathCounters {
        let ((tx_packets, tx_bytes), (rx_packets, rx_bytes)) = (self.tx.get(), self.rx.get());
        PathCounters {
            tx_packets,
            tx_bytes,
            rx_packets,
            rx_bytes,
            probes_sent: self.probes_sent.load(Ordering::Relaxed),
            probes_answered: self.probes_answered.load(Ordering::Relaxed),
        }
    }
}

/// A path's probe loss as it decays: an exponentially weighted moving average of the loss
/// of each rate period (the monitor's, one second), with weight [`LossEwma::ALPHA`] for the
/// newest. After an outage the figure falls by a quarter each period in which probes are
/// answered again (below 5 % within about 11 s of 100 %), where a cumulative ratio would
/// show the outage's loss for as long as the path lives. A period without probes sent leaves
/// it as it was; the first period with probes sets it. Kept by the monitor thread alone
/// (plain fields, no atomics); [`PathState::set_estimates`] publishes it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LossEwma {
    /// The loss ratio, 0 to 1 (`None` before the first period with probes).
    ratio: Option<f64>,
}

impl LossEwma {
    /// The newest period's weight.
    pub const ALPHA: f64 = 0.25;

    /// Takes one period: `sent` probes went out and `answered` answers came in (answers to
    /// probes of the period before count too; more answers than probes is no loss).
    /// Returns the loss now, in per mille.
    pub fn update(&mut self, sent: u64, answered: u64) -> u32 {
        if sent > 0 {
            let sample = sent.saturating_sub(answered) as f64 / sent as f64;
            self.ratio = Some(match self.ratio {
                None => sample,
                Some(r) => r + Self::ALPHA * (sample - r),
            });
        }
        self.permille()
    }

    /// The loss in per mille, rounded (0 before the first sample).
    pub fn permille(&self) -> u32 {
        self.ratio
            .map_or(0, |r| (r * 1000.0).round().clamp(0.0, 1000.0) as u32)
    }
}

/// What a probe says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Please echo this on the path it came on.
    Request,
    /// The echo.
    Reply,
}

/// A liveness probe, carried as the payload of an ESP dummy packet.
///
/// ```text
/// "MFPR" | kind (1: request, 2: reply) | 0 0 0 | path id (u32) | sent_ns (u64)
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Request or reply.
    pub kind: ProbeKind,
    /// The sender's path id.
    pub path_id: u32,
    /// The sender's clock when it sent the request.
    pub sent_ns: u64,
}

impl Probe {
    /// Bytes on the wire.
    pub const LEN: usize = 20;
    const MAGIC: [u8; 4] = *b"MFPR";

    /// Writes the probe into `out[..Probe::LEN]`.
    pub fn emit(&self, out: &mut [u8]) -> Option<()> {
        let out = out.get_mut(..Self::LEN)?;
        out[..4].copy_from_slice(&Self::MAGIC);
        out[4..8].copy_from_slice(&[
            match self.kind {
                ProbeKind::Request => 1,
                ProbeKind::Reply => 2,
            },
            0,
            0,
            0,
        ]);
        out[8..12].copy_from_slice(&self.path_id.to_be_bytes());
        out[12..20].copy_from_slice(&self.sent_ns.to_be_bytes());
        Some(())
    }

    /// Parses a dummy packet's payload; `None` if it is not a probe.
    pub fn parse(b: &[u8]) -> Option<Probe> {
        if b.len() < Self::LEN || b[..4] != Self::MAGIC {
            return None;
        }
        let kind = match b[4] {
            1 => ProbeKind::Request,
            2 => ProbeKind::Reply,
            _ => return None,
        };
        Some(Probe {
            kind,
            path_id: u32::from_be_bytes(b[8..12].try_into().ok()?),
            sent_ns: u64::from_be_bytes(b[12..20].try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trip_and_garbage() {
        let p = Probe {
            kind: ProbeKind::Reply,
            path_id: 7,
            sent_ns: 123_456_789,
        };
        let mut b = [0u8; 24];
        p.emit(&mut b).unwrap();
        assert_eq!(Probe::parse(&b), Some(p));
        assert_eq!(Probe::parse(&b[..19]), None);
        b[4] = 9;
        assert_eq!(Probe::parse(&b), None);
        assert_eq!(Probe::parse(&[0u8; 40]), None);
    }

    #[test]
    fn an_absurd_echoed_send_time_still_counts_as_a_sample() {
        // Found by the path_probe fuzz target: an RTT sample of 4295 s or more was clamped
        // to u32::MAX, the "no sample" mark, so min_rtt_us read 0 after an answer.
        let p = PathState::new(1, "p1", "link1", "198.18.1.1:4500".parse().unwrap(), 0);
        p.probe_answered(0, u64::MAX);
        assert_eq!(p.min_rtt_us(), u32::MAX - 1);
        assert!(p.srtt_us() >= 1);
        assert_eq!(p.queue_delay_us(), 0);
    }

    #[test]
    fn loss_decays_after_an_outage() {
        let mut l = LossEwma::default();
        assert_eq!(l.update(0, 0), 0, "no probes: no figure");
        assert_eq!(l.update(10, 10), 0);
        // A 10 s outage: every probe lost.
        for _ in 0..10 {
            l.update(10, 0);
        }
        assert!(l.permille() >= 940, "the outage shows: {}", l.permille());
        // The link comes back: a period without probes changes nothing, then answers.
        assert_eq!(l.update(0, 0), l.permille());
        let mut after = Vec::new();
        for _ in 0..20 {
            after.push(l.update(10, 10));
        }
        assert!(after.windows(2).all(|w| w[1] <= w[0]), "{after:?}");
        assert!(
            after[0] <= 750,
            "a quarter gone after one good second: {after:?}"
        );
        assert!(after[10] < 50, "under 5 % within 11 s: {after:?}");
        // Where the cumulative ratio of the same probes still says 1/3 lost.
        let (sent, answered) = (10 + 100 + 200, 10 + 200);
        assert!((sent - answered) * 1000 / sent > 300);
        assert_eq!(
            l.update(10, 10) / 10,
            0,
            "back to (nearly) nothing: {}",
            l.permille()
        );
        // A partly lossy link settles at its loss; late answers are no negative loss.
        let mut l = LossEwma::default();
        for _ in 0..40 {
            l.update(10, 8);
        }
        assert_eq!(l.permille(), 200);
        l.update(2, 5);
        assert_eq!(l.permille(), 150);
    }

    #[test]
    fn rttvar_and_failovers() {
        let p = PathState::new(1, "p1", "link1", "198.18.1.1:4500".parse().unwrap(), 0);
        assert_eq!(p.rttvar_us(), 0);
        p.probe_answered(0, 2_000_000);
        assert_eq!((p.srtt_us(), p.rttvar_us()), (2000, 1000));
        // srtt 2000, sample 4000: rttvar = 750 + 500.
        p.probe_answered(0, 4_000_000);
        assert_eq!(p.rttvar_us(), 1250);
        assert_eq!(p.failovers(), 0);
        assert_eq!(p.went_down(), 1);
        assert_eq!(p.liveness(), Liveness::Down);
        assert_eq!(p.failovers(), 1);
    }

    #[test]
    fn rtt_and_liveness_follow_answers() {
        let p = PathState::new(1, "p1", "link1", "198.18.1.1:4500".parse().unwrap(), 0);
        assert_eq!(p.liveness(), Liveness::Unknown);
        assert!(p.usable());
        p.probe_answered(1_000_000, 3_000_000);
        assert_eq!(p.srtt_us(), 2000);
        assert_eq!(p.liveness(), Liveness::Up);
        p.probe_answered(10_000_000, 11_000_000);
        assert_eq!(p.srtt_us(), 2000 - 250 + 125);
        p.set_liveness(Liveness::Down);
        assert!(!p.usable());
    }

    #[test]
    fn an_unverified_path_is_unusable_until_verified_once() {
        let p = PathState::unverified(1, "p1", "link1", "198.18.1.1:4500".parse().unwrap(), 0);
        assert!(!p.verified() && !p.usable() && !p.answering());
        // An answer on some other path of the SA (liveness Up) is not return routability.
        p.probe_answered(1_000, 2_000);
        assert!(!p.usable() && !p.answering());
        assert!(p.verify(), "the first verification is reported");
        assert!(!p.verify(), "only once");
        assert!(p.usable() && p.answering());
        assert!(PathState::new(2, "p2", "l", "198.18.1.1:4500".parse().unwrap(), 0).verified());
    }
}
