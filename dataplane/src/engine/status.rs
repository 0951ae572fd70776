//! The engine's status, as `mifsec status` shows it (and serialises it with `--json`).

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use serde::Serialize;

use super::Shared;
use crate::counters::{CounterSnapshot, DropReason};

/// The whole engine.
#[derive(Debug, Clone, Serialize)]
pub struct EngineStatus {
    /// Worker threads.
    pub workers: usize,
    /// TUN device name.
    pub tun: String,
    /// TUN offloads in force ("vnet_hdr csum tso4 ..." or "none").
    pub tun_offloads: String,
    /// Number of SA table swaps so far.
    pub table_swaps: u64,
    /// Seconds since the engine started.
    pub uptime_s: f64,
    /// Outer interfaces.
    pub interfaces: Vec<InterfaceStatus>,
    /// SA pairs.
    pub sas: Vec<SaStatus>,
    /// Packets that belong to no SA, by reason.
    pub drops: BTreeMap<String, u64>,
    /// What the offloads did so far, every SA's traffic together.
    pub offload: OffloadStatus,
}

/// The engine's batched path at work, engine-wide counters since the start: non-zero
/// figures show that a flow went through TSO from the TUN, UDP GSO out, UDP GRO in and
/// coalesced writes to the TUN (all zero with `offloads = false`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OffloadStatus {
    /// TUN reads that were super-packets (TSO/USO), segmented by the engine.
    pub tun_super_reads: u64,
    /// UDP sends that carried a GSO train of several ESP datagrams.
    pub gso_sends: u64,
    /// The datagrams in those trains.
    pub gso_datagrams: u64,
    /// UDP receives that were GRO trains of several datagrams.
    pub gro_trains: u64,
    /// The datagrams in those trains.
    pub gro_datagrams: u64,
    /// TUN writes that were coalesced TCP super-packets.
    pub tun_super_writes: u64,
}

/// One outer interface.
#[derive(Debug, Clone, Serialize)]
pub struct InterfaceStatus {
    /// `[interfaces.*]` name.
    pub name: String,
    /// OS device bound to.
    pub device: Option<String>,
    /// Local address:port.
    pub local: String,
    /// Socket offloads in force ("gso gro" or "none").
    pub offloads: String,
}

/// One SA pair.
#[derive(Debug, Clone, Serialize)]
pub struct SaStatus {
    /// Name.
    pub name: String,
    /// "tunnel" or "transport".
    pub mode: String,
    /// Cipher name.
    pub cipher: String,
    /// Extended sequence numbers.
    pub esn: bool,
    /// Scheduling policy.
    pub policy: String,
    /// Outbound SPI, hex.
    pub spi_out: String,
    /// Inbound SPI, hex.
    pub spi_in: String,
    /// Local selectors.
    pub local_ts: Vec<String>,
    /// Remote selectors.
    pub remote_ts: Vec<String>,
    /// Packets sealed.
    pub out_packets: u64,
    /// Inner bytes sealed.
    pub out_bytes: u64,
    /// Last outbound sequence number.
    pub out_seq: u64,
    /// Packets accepted.
    pub in_packets: u64,
    /// Inner bytes accepted.
    pub in_bytes: u64,
    /// Dummy packets (probes included) received.
    pub in_dummies: u64,
    /// Highest sequence number accepted.
    pub replay_top: u64,
    /// Replay window size.
    pub replay_window: u64,
    /// Inbound drops by reason (only non-zero ones).
    pub drops: BTreeMap<String, u64>,
    /// Reorder buffer: packets that waited for a gap to fill.
    pub reorder_held: u64,
    /// Reorder buffer: gaps given up as lost after the window.
    pub reorder_gaps: u64,
    /// Paths.
    pub paths: Vec<PathStatus>,
    /// The sequence marks on disk (manual SAs with a state directory only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marks: Option<MarkStatus>,
}

/// Where a manual SA's sequence marks stand.
#[derive(Debug, Clone, Serialize)]
pub struct MarkStatus {
    /// Outbound numbers stored as reserved: usable up to here.
    pub out_reserved: u64,
    /// Outbound reservations that had to wait for the mark to move.
    pub out_waits: u64,
    /// Inbound numbers up to here are refused: where the SA resumed at start.
    pub in_floor: u64,
    /// Inbound numbers stored as reserved: accepted up to here.
    pub in_reserved: u64,
}

/// One path of an SA.
#[derive(Debug, Clone, Serialize)]
pub struct PathStatus {
    /// Name.
    pub name: String,
    /// Interface name.
    pub interface: String,
    /// Local address:port ("-" while the interface is gone).
    pub local: String,
    /// Peer address:port.
    pub remote: String,
    /// "active", "standby" or "alternate".
    pub role: String,
    /// "unknown", "up" or "down" ("no-socket" while the interface is gone, "unverified"
    /// while a path added with `verify` has not answered a probe on itself yet).
    pub state: String,
    /// Smoothed RTT of probes, milliseconds (null before the first answer).
    pub rtt_ms: Option<f64>,
    /// RTT variation of probes (RFC 6298 RTTVAR), milliseconds (null before the first
    /// answer).
    pub rtt_var_ms: Option<f64>,
    /// Recent probe loss, percent: a moving average of each second's loss that decays
    /// (a quarter of the way to the newest second's), so a path that came back shows its
    /// current loss within seconds.
    pub loss_pct: f64,
    /// Seconds since the last authentic packet (data or probe) was received on the path
    /// (null: none yet).
    pub last_rx_s: Option<f64>,
    /// Times the path was declared down (no probe answer for `dead_after`): its traffic
    /// failed over to another path.
    pub failovers: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// ESP bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// ESP bytes received.
    pub rx_bytes: u64,
    /// Recent send rate, Mbit/s.
    pub tx_mbps: f64,
    /// Recent receive rate, Mbit/s.
    pub rx_mbps: f64,
    /// Aggregate weight.
    pub weight: u32,
}

/// The outbound and inbound counters of SA `name` (the inbound ones zero when it has no
/// inbound half), without building the whole status.
pub(super) fn counters_of(
    shared: &Shared,
    name: &str,
) -> Option<(CounterSnapshot, CounterSnapshot)> {
    let table = shared.tables.load_full();
    let out = table.outbound.iter().find(|o| o.name == name)?;
    let inbound = table
        .inbound
        .values()
        .find(|i| i.name == name)
        .map(|i| i.sa.counters().snapshot())
        .unwrap_or_default();
    Some((out.sa.counters().snapshot(), inbound))
}

pub(super) fn collect(shared: &Shared) -> EngineStatus {
    let table = shared.tables.load_full();
    let now = shared.now_ns();
    let interfaces = table
        .sockets
        .iter()
        .map(|(name, s)| InterfaceStatus {
            name: name.clone(),
            device: s.device().map(str::to_owned),
            local: s.local_addr().to_string(),
            offloads: s.offloads().to_string(),
        })
        .collect();
    let mut sas = Vec::new();
    for out in &table.outbound {
        let inbound = table.inbound.values().find(|i| i.name == out.name);
        let oc = out.sa.counters().snapshot();
        let (reorder_held, reorder_gaps) = inbound
            .and_then(|i| i.reorder.as_ref())
            .map_or((0, 0), |r| r.stats());
        let marks = inbound
            .filter(|i| out.sa.seq().ceiling() != u64::MAX || i.sa.ceiling() != u64::MAX)
            .map(|i| MarkStatus {
                out_reserved: out.sa.seq().ceiling(),
                out_waits: out.sa.seq().unreserved(),
                in_floor: i.sa.replay().floor(),
                in_reserved: i.sa.ceiling(),
            });
        let (ic, top, window, spi_in) = match inbound {
            Some(i) => (
                i.sa.counters().snapshot(),
                i.sa.replay().top(),
                i.sa.replay().size(),
                format!("{:08x}", i.sa.spi()),
            ),
            None => (Default::default(), 0, 0, "-".into()),
        };
        let drops = DropReason::ALL
            .iter()
            .filter(|r| ic.drops(**r) > 0)
            .map(|r| (r.name().to_owned(), ic.drops(*r)))
            .collect();
        let paths = out
            .paths
            .iter()
            .map(|p| {
                let c = p.state.counters();
                let (tx_bps, rx_bps) = p.state.rates_bps();
                let srtt = p.state.srtt_us();
                PathStatus {
                    name: p.state.name.clone(),
                    interface: p.state.interface.clone(),
                    local: p
                        .socket
                        .as_ref()
                        .map_or_else(|| "-".into(), |s| s.local_addr().to_string()),
                    remote: p.state.remote.to_string(),
                    role: p.role.name().into(),
                    state: if p.socket.is_none() {
                        "no-socket".into()
                    } else if !p.state.verified() {
                        "unverified".into()
                    } else {
                        p.state.liveness().name().into()
                    },
                    rtt_ms: (srtt > 0).then(|| f64::from(srtt) / 1000.0),
                    rtt_var_ms: (srtt > 0).then(|| f64::from(p.state.rttvar_us()) / 1000.0),
                    loss_pct: f64::from(p.state.loss_permille()) / 10.0,
                    last_rx_s: match p.state.last_rx_ns() {
                        0 => None,
                        t => Some(now.saturating_sub(t) as f64 / 1e9),
                    },
                    failovers: p.state.failovers(),
                    tx_packets: c.tx_packets,
                    tx_bytes: c.tx_bytes,
                    rx_packets: c.rx_packets,
                    rx_bytes: c.rx_bytes,
                    tx_mbps: tx_bps as f64 / 1e6,
                    rx_mbps: rx_bps as f64 / 1e6,
                    weight: p.weight,
                }
            })
            .collect();
        sas.push(SaStatus {
            name: out.name.clone(),
            mode: out.sa.mode().name().into(),
            cipher: out.sa.cipher().name().into(),
            esn: out.sa.esn(),
            policy: out.policy.name().into(),
            spi_out: format!("{:08x}", out.sa.spi()),
            spi_in,
            local_ts: out.local_ts.iter().map(ToString::to_string).collect(),
            remote_ts: out.remote_ts.iter().map(ToString::to_string).collect(),
            out_packets: oc.packets,
            out_bytes: oc.bytes,
            out_seq: out.sa.seq().last(),
            in_packets: ic.packets,
            in_bytes: ic.bytes,
            in_dummies: ic.dummies,
            replay_top: top,
            replay_window: window,
            drops,
            reorder_held,
            reorder_gaps,
            paths,
            marks,
        });
    }
    let c = &shared.counters;
    let drops = [
        ("no_sa", &c.no_sa),
        ("no_path", &c.no_path),
        ("unknown_spi", &c.unknown_spi),
        ("malformed", &c.malformed),
        ("keepalives_rx", &c.keepalives_rx),
        ("ike_unclaimed", &c.ike_unclaimed),
        ("ike_oversize", &c.ike_oversize),
        ("send_errors", &c.send_errors),
        ("tun_errors", &c.tun_errors),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.load(Ordering::Relaxed)))
    .collect();
    EngineStatus {
        workers: shared.workers,
        tun: shared.tun_name.clone(),
        tun_offloads: shared.tun_offloads.to_string(),
        table_swaps: shared.tables.swaps(),
        uptime_s: shared.epoch.elapsed().as_secs_f64(),
        interfaces,
        sas,
        drops,
        offload: OffloadStatus {
            tun_super_reads: c.tun_super_reads.load(Ordering::Relaxed),
            gso_sends: c.gso_sends.load(Ordering::Relaxed),
            gso_datagrams: c.gso_datagrams.load(Ordering::Relaxed),
            gro_trains: c.gro_trains.load(Ordering::Relaxed),
            gro_datagrams: c.gro_datagrams.load(Ordering::Relaxed),
            tun_super_writes: c.tun_super_writes.load(Ordering::Relaxed),
        },
    }
}
