//! The monitor thread: sends liveness probes on every path, declares paths down when their
//! probes go unanswered, estimates loss and rates, completes soft handovers, and pushes the
//! usage of SAs that report it to the control plane.
//!
//! It ticks every few milliseconds, far below the probe interval, so that a silent failure is
//! noticed within `dead_after` plus one tick.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{GlobalCounters, Shared, USAGE_INTERVAL, table};
use crate::esp::OutboundSa;
use crate::event::{Event, Usage};
use crate::path::{Liveness, LossEwma, PathCounters, Probe, ProbeKind};
use crate::sa_table::{OutboundEntry, PathEntry, Policy, Role};

const TICK: Duration = Duration::from_millis(5);
const RATE_PERIOD_NS: u64 = 1_000_000_000;
/// How often aggregate weights are adjusted.
const WEIGHT_PERIOD_NS: u64 = 100_000_000;
/// Weights of one SA add up to this (fine steps for the controller).
const WEIGHT_SUM: u64 = 10_000;

/// Per-path figures from the previous rate period.
#[derive(Debug, Clone, Copy)]
struct Prev {
    at_ns: u64,
    counters: PathCounters,
    loss: LossEwma,
}

pub(super) fn run(shared: &Shared) {
    crate::debug::panic_point("monitor");
    let mut prev: HashMap<u32, Prev> = HashMap::new();
    let mut last_rates = 0u64;
    let mut last_weights = 0u64;
    let mut last_keepalive = 0u64;
    let mut last_usage = 0u64;
    let mut usage = UsageReports::default();
    let mut path_events = PathEvents::default();
    let probe_ns = shared.probe_interval.as_nanos() as u64;
    let dead_ns = shared.dead_after.as_nanos() as u64;
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = shared.now_ns();
        let table = shared.tables.load_full();
        let keepalive_due =
            now.saturating_sub(last_keepalive) >= shared.keepalive.as_nanos() as u64;
        for entry in &table.outbound {
            for path in &entry.paths {
                if probe_ns == 0 || !entry.probes {
                    if keepalive_due {
                        send_keepalive(shared, path);
                    }
                } else {
                    check_path(shared, entry, path, now, probe_ns, dead_ns);
                }
            }
        }
        if keepalive_due {
            last_keepalive = now;
        }
        if probe_ns > 0 {
            path_events.report(shared, &table);
        }
        if now.saturating_sub(last_weights) >= WEIGHT_PERIOD_NS {
            last_weights = now;
            for entry in &table.outbound {
                if entry.policy == Policy::Aggregate && entry.probes && probe_ns > 0 {
                    adapt_weights(shared, entry);
                }
            }
        }
        if now.saturating_sub(last_rates) >= RATE_PERIOD_NS {
            last_rates = now;
            for entry in &table.outbound {
                for path in &entry.paths {
                    estimate(&mut prev, path, now);
                }
            }
            // Paths that left the table leave the map too.
            prev.retain(|_, p| p.at_ns == now);
        }
        if now.saturating_sub(last_usage) >= USAGE_INTERVAL.as_nanos() as u64 {
            last_usage = now;
            usage.report(shared);
        }
        for (warning, line) in table::advance_pending(shared) {
            if warning {
                tracing::warn!("{line}");
            } else {
                tracing::info!("{line}");
            }
        }
    }
}

/// What the monitor last reported of each SA with `report_usage`, by inbound SPI.
#[derive(Debug, Default)]
struct UsageReports {
    last: HashMap<u32, Usage>,
    /// Where the next round starts: when the channel has no room for every report, each
    /// round begins elsewhere, so no SA waits for ever behind the others.
    turn: usize,
}

impl UsageReports {
    /// Pushes [`Event::Usage`] for every watched SA whose totals moved since its last
    /// report (an SA that never carried anything is not reported).
    fn report(&mut self, shared: &Shared) {
        let watched = table::watched(shared);
        let mut last = HashMap::with_capacity(watched.len());
        for w in &watched {
            if let Some(u) = self.last.remove(&w.spi_in) {
                last.insert(w.spi_in, u);
            }
        }
        self.last = last;
        let n = watched.len();
        for k in 0..n {
            let w = &watched[(self.turn + k) % n];
            let usage = w.usage();
            if self.last.get(&w.spi_in).copied().unwrap_or_default() == usage {
                continue;
            }
            let sent = shared.events.send_spare(Event::Usage {
                spi_in: w.spi_in,
                spi_out: w.spi_out,
                usage,
            });
            if !sent {
                break;
            }
            self.last.insert(w.spi_in, usage);
        }
        self.turn = self.turn.wrapping_add(1);
    }
}

/// What the monitor last reported of each probed path, by path id: (up, verified).
#[derive(Debug, Default)]
struct PathEvents {
    last: HashMap<u32, (bool, bool)>,
    /// The table generation the map was last pruned at.
    generation: u64,
}

impl PathEvents {
    /// Pushes [`Event::PathState`] for every probed path whose state moved since its last
    /// report: up or down (once known: a path of unknown liveness is not reported), or
    /// verified. A report the channel refuses is tried again at the next tick.
    fn report(&mut self, shared: &Shared, table: &crate::sa_table::SaTable) {
        if table.generation != self.generation {
            self.generation = table.generation;
            let live: std::collections::HashSet<u32> = table
                .outbound
                .iter()
                .flat_map(|e| e.paths.iter().map(|p| p.state.id))
                .collect();
            self.last.retain(|id, _| live.contains(id));
        }
        for entry in table.outbound.iter().filter(|e| e.probes) {
            for path in &entry.paths {
                let verified = path.state.verified();
                let up = match path.state.liveness() {
                    Liveness::Up => verified,
                    Liveness::Down => false,
                    Liveness::Unknown => continue,
                };
                let now = (up, verified);
                if self.last.get(&path.state.id) == Some(&now) {
                    continue;
                }
                let sent = shared.events.send_spare(Event::PathState {
                    sa: entry.name.clone(),
                    spi_in: entry.spi_in,
                    spi_out: entry.sa.spi(),
                    path: path.state.name.clone(),
                    path_id: path.state.id,
                    up,
                    verified,
                });
                if !sent {
                    return;
                }
                self.last.insert(path.state.id, now);
            }
        }
    }
}

/// Spreads an aggregated SA by measured capacity: a path whose queue builds (its probe RTT
/// rises above its empty-queue RTT by more than the least-queued path's) has more traffic than
/// it can carry and gives up a tenth of its share; the least-queued paths take it. When no
/// queue builds anywhere the weights stay as they are: the links are not the bottleneck. The
/// equilibrium is equal queueing on every path, so each carries what it can and the reorder
/// buffer has little to do. Configured weights are only the starting point.
fn adapt_weights(shared: &Shared, entry: &OutboundEntry) {
    let live: Vec<&PathEntry> = entry
        .paths
        .iter()
        .filter(|p| p.role == Role::Active && p.sendable() && p.state.min_rtt_us() > 0)
        .collect();
    if live.len() < 2 {
        return;
    }
    let q: Vec<u64> = live
        .iter()
        .map(|p| u64::from(p.state.queue_delay_us()))
        .collect();
    let q_min = q.iter().copied().min().unwrap_or(0);
    // Below 2 ms of queue anywhere there is nothing to balance.
    if q.iter().all(|&d| d < 2_000) {
        return;
    }
    let total: u64 = live.iter().map(|p| u64::from(p.weight.max(1))).sum();
    let mut w: Vec<u64> = live
        .iter()
        .map(|p| u64::from(p.weight.max(1)) * WEIGHT_SUM / total.max(1))
        .collect();
    for (wi, &qi) in w.iter_mut().zip(&q) {
        let margin = 2_000 + q_min / 4;
        *wi = if qi > q_min + margin {
            *wi * 9 / 10
        } else {
            *wi * 21 / 20
        };
    }
    // Renormalise; keep every path at 1 % or more so its queue is still measured.
    let sum: u64 = w.iter().sum::<u64>().max(1);
    let floor = WEIGHT_SUM / 100;
    let weights: Vec<(u32, u32)> = live
        .iter()
        .zip(&w)
        .map(|(p, &wi)| (p.state.id, (wi * WEIGHT_SUM / sum).max(floor) as u32))
        .collect();
    table::set_weights(shared, &entry.name, &weights);
}

/// Probes one path when due and updates its liveness.
fn check_path(
    shared: &Shared,
    entry: &OutboundEntry,
    path: &PathEntry,
    now: u64,
    probe_ns: u64,
    dead_ns: u64,
) {
    let (last_reply, last_probe, since) = path.state.probe_times();
    if path.socket.is_some() && now.saturating_sub(last_probe) >= probe_ns {
        send_probe(shared, &entry.sa, path, now);
    }
    // Alive: a probe answer within `dead_after`; or, on a path so loaded that its
    // queue drops probes, authentic traffic from the peer within `dead_after` and a
    // probe answer within five times that (so a one-way failure is still found).
    let probed = last_reply.max(since);
    let by_probe = now.saturating_sub(probed) <= dead_ns;
    let by_rx = now.saturating_sub(path.state.last_rx_ns()) <= dead_ns
        && now.saturating_sub(probed) <= 5 * dead_ns;
    let state = path.state.liveness();
    if !(by_probe || by_rx) && state != Liveness::Down {
        let failovers = path.state.went_down();
        let silent_ms = now.saturating_sub(probed) / 1_000_000;
        tracing::warn!(
            sa = %entry.name,
            path = %path.state.name,
            silent_ms,
            failovers,
            "path down: no probe answer"
        );
    } else if by_rx && !by_probe && state == Liveness::Down {
        path.state.set_liveness(Liveness::Up);
    }
}

fn estimate(prev: &mut HashMap<u32, Prev>, path: &PathEntry, now: u64) {
    let c = path.state.counters();
    let mut loss = LossEwma::default();
    if let Some(p) = prev.get(&path.state.id) {
        let dt = now.saturating_sub(p.at_ns).max(1) as f64 / 1e9;
        let tx = ((c.tx_bytes - p.counters.tx_bytes) as f64 * 8.0 / dt) as u64;
        let rx = ((c.rx_bytes - p.counters.rx_bytes) as f64 * 8.0 / dt) as u64;
        let sent = c.probes_sent - p.counters.probes_sent;
        let answered = c.probes_answered - p.counters.probes_answered;
        loss = p.loss;
        let permille = loss.update(sent, answered);
        path.state.set_estimates(permille, tx, rx);
    }
    prev.insert(
        path.state.id,
        Prev {
            at_ns: now,
            counters: c,
            loss,
        },
    );
}

/// Probes the paths with these ids at once (new paths that must show return routability:
/// their first probe does not wait for the next probe tick), on SAs that probe at all.
pub(super) fn probe_now(shared: &Shared, ids: &[u32]) {
    if ids.is_empty() || shared.probe_interval.is_zero() {
        return;
    }
    let table = shared.tables.load_full();
    let now = shared.now_ns();
    for entry in table.outbound.iter().filter(|e| e.probes) {
        for path in entry.paths.iter().filter(|p| ids.contains(&p.state.id)) {
            send_probe(shared, &entry.sa, path, now);
        }
    }
}

/// Seals a probe request into a dummy packet of `sa` and sends it on `path`.
fn send_probe(shared: &Shared, sa: &OutboundSa, path: &PathEntry, now: u64) {
    let Some(sock) = &path.socket else { return };
    let mut buf = [0u8; 128];
    let start = OutboundSa::HEADROOM;
    let probe = Probe {
        kind: ProbeKind::Request,
        path_id: path.state.id,
        sent_ns: now,
    };
    if probe.emit(&mut buf[start..]).is_none() {
        return;
    }
    match sa.seal_dummy(&mut buf, start..start + Probe::LEN) {
        Ok(sealed) => {
            path.state.probe_sent(now);
            if sock.send_to(&buf[sealed.range], path.state.remote).is_err() {
                GlobalCounters::bump(&shared.counters.send_errors);
            }
        }
        Err(_) => GlobalCounters::bump(&shared.counters.send_errors),
    }
}

fn send_keepalive(shared: &Shared, path: &PathEntry) {
    if let Some(sock) = &path.socket
        && sock
            .send_to(&[crate::esp::wire::NAT_KEEPALIVE], path.state.remote)
            .is_err()
    {
        GlobalCounters::bump(&shared.counters.send_errors);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_events_follow_changes_and_verification_once_each() {
        let (sh, rx) = table::test_shared_events(1);
        let mut ev = PathEvents::default();
        let t = sh.tables.load_full();
        let (a, b) = (&t.outbound[0].paths[0].state, &t.outbound[0].paths[1].state);
        ev.report(&sh, &t);
        assert_eq!(rx.try_iter().count(), 0, "unknown liveness is not reported");
        a.probe_answered(0, 1);
        b.set_liveness(Liveness::Down);
        ev.report(&sh, &t);
        ev.report(&sh, &t);
        let got: Vec<(String, bool, bool)> = rx
            .try_iter()
            .map(|e| match e {
                Event::PathState {
                    path,
                    up,
                    verified,
                    spi_in,
                    spi_out,
                    sa,
                    ..
                } => {
                    assert_eq!((sa.as_str(), spi_in, spi_out), ("s0", 0x8000, 0x1000));
                    (path, up, verified)
                }
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(
            got,
            [("a".into(), true, true), ("b".into(), false, true)],
            "each change once"
        );
        a.set_liveness(Liveness::Down);
        b.probe_answered(0, 1);
        ev.report(&sh, &t);
        assert_eq!(rx.try_iter().count(), 2);
        // An unverified path: down while it does not answer on itself, then verified.
        table::apply(
            &sh,
            vec![crate::engine::TableOp::AddPath {
                sa: "s0".into(),
                path: crate::engine::PathSpec {
                    name: "c".into(),
                    interface: "l2".into(),
                    remote: "127.0.0.1:9".parse().unwrap(),
                    role: Role::Standby,
                    weight: 1,
                    pin: Vec::new(),
                    verify: true,
                },
            }],
        )
        .unwrap();
        let t = sh.tables.load_full();
        let c = &t.outbound[0].paths[2].state;
        c.probe_answered(0, 1);
        ev.report(&sh, &t);
        c.verify();
        ev.report(&sh, &t);
        let got: Vec<(bool, bool)> = rx
            .try_iter()
            .map(|e| match e {
                Event::PathState { up, verified, .. } => (up, verified),
                e => panic!("{e:?}"),
            })
            .collect();
        assert_eq!(got, [(false, false), (true, true)]);
        // A full channel: the report waits for room and comes then; nothing is lost.
        for spi in 0..8 {
            sh.events.send(Event::SeqSoftLimit { spi });
        }
        c.set_liveness(Liveness::Down);
        ev.report(&sh, &t);
        assert_eq!(rx.try_iter().count(), 8);
        ev.report(&sh, &t);
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(sh.events.lost(), 0);
    }
}
