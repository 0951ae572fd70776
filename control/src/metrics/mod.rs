//! The Prometheus text exposition (format 0.0.4) of a running daemon: what `mifsec metrics`
//! prints and what `[metrics] listen` serves over HTTP ([`http`]).
//!
//! Every series is computed at the scrape from the status the daemon already keeps (the
//! engine's counters and path figures, the IKE SA list, the IKE thread's counters in
//! [`Book`]): nothing is counted twice on the packet path. Series are labelled by
//! configuration names, never by SPI, so that rekeys do not churn them: a manual SA by its
//! `[sa.NAME]`, an IKE child SA as `CONN/CHILD` (`sa` label) or by `conn` and `child`; the
//! byte, packet and drop totals of an IKE child add the child SAs already removed (rekeyed
//! away or deleted) to the installed ones, so they keep growing across rekeys. The per-path
//! series of IKE child SAs carry the peer's identity (`peer`), one series per path name
//! (during a rekey the newest child's). The names follow the exporters of strongSwan and
//! WireGuard (`mifsec_ike_sas`, `mifsec_child_sa_bytes_total{conn,child,direction}`,
//! `mifsec_path_rtt_seconds{sa,peer,path,interface}`, ...); docs/CONFIG.md, "`[metrics]`",
//! lists them.
//!
//! The exposition itself is written by the `prometheus-client` crate (names, HELP and TYPE
//! lines, label escaping).

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::daemon::counters::{Book, ChildTotals};
use crate::daemon::status::{ChildState, IkeSaStatus, IkeState, IkeStats};
use crate::dataplane::counters::DropReason;
use crate::dataplane::engine::EngineStatus;

pub mod http;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// What the IKE side adds (a daemon with `[connections.*]`).
#[derive(Debug, Clone, Copy)]
pub struct IkeInputs<'a> {
    /// The configured connections' names (each gets its series, zero when it has no SA).
    pub connections: &'a [String],
    /// The IKE SAs as `status` shows them.
    pub sas: &'a [IkeSaStatus],
    /// The IKE thread's counters of half-open SAs, COOKIEs, limits and queues.
    pub stats: &'a IkeStats,
    /// The operator's counters and the child SAs' bookkeeping.
    pub book: &'a Book,
}

type Labels = Vec<(String, String)>;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The registry of one scrape, filled family by family.
struct Scrape {
    reg: Registry,
}

impl Scrape {
    fn gauge(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, f64)>) {
        let fam = Family::<Labels, Gauge<f64, AtomicU64>>::default();
        for (l, v) in rows {
            fam.get_or_create(&l).set(v);
        }
        self.reg.register(name, help, fam);
    }

    /// A counter; `name` without `_total` (the encoder adds it).
    fn counter(&mut self, name: &str, help: &str, rows: impl IntoIterator<Item = (Labels, u64)>) {
        let fam = Family::<Labels, Counter<u64>>::default();
        for (l, v) in rows {
            fam.get_or_create(&l).inc_by(v);
        }
        self.reg.register(name, help, fam);
    }
}

/// The `sa` label of engine SA `name`: an IKE child's `CONN/CHILD`, else the name (a manual
/// SA's configuration name).
fn sa_label(book: Option<&Book>, name: &str) -> String {
    match book.and_then(|b| b.children.get(name)) {
        Some((conn, child)) => format!("{conn}/{child}"),
        None => name.to_owned(),
    }
}

/// Per `sa` label: the live SAs' counters added to the removed ones'.
fn sa_totals(engine: &EngineStatus, book: Option<&Book>) -> BTreeMap<String, ChildTotals> {
    let mut m: BTreeMap<String, ChildTotals> = BTreeMap::new();
    if let Some(b) = book {
        for ((conn, child), t) in &b.retired {
            m.insert(format!("{conn}/{child}"), *t);
        }
    }
    for sa in &engine.sas {
        let t = m.entry(sa_label(book, &sa.name)).or_default();
        t.out.packets += sa.out_packets;
        t.out.bytes += sa.out_bytes;
        t.inbound.packets += sa.in_packets;
        t.inbound.bytes += sa.in_bytes;
        for r in DropReason::ALL {
            t.inbound.drops[r as usize] += sa.drops.get(r.name()).copied().unwrap_or(0);
        }
    }
    m
}

/// The exposition of `engine` (and of `ike`, with IKE connections).
pub fn render(engine: &EngineStatus, ike: Option<IkeInputs<'_>>) -> String {
    let mut s = Scrape {
        reg: Registry::default(),
    };
    let book = ike.map(|i| i.book);
    s.gauge(
        "mifsec_uptime_seconds",
        "Seconds since the packet engine started",
        [(Labels::new(), engine.uptime_s)],
    );
    s.counter(
        "mifsec_table_swaps",
        "SA table swaps published by the engine",
        [(Labels::new(), engine.table_swaps)],
    );
    s.counter(
        "mifsec_engine_drops",
        "Packets of no SA dropped by the engine, and its send and TUN errors, by reason",
        engine
            .drops
            .iter()
            .map(|(r, v)| (labels(&[("reason", r)]), *v)),
    );
    s.gauge(
        "mifsec_sas",
        "SA pairs in the engine (manual SAs and installed IKE child SAs)",
        [(Labels::new(), engine.sas.len() as f64)],
    );
    let totals = sa_totals(engine, book);
    s.counter(
        "mifsec_sa_bytes",
        "Inner bytes sealed (out) and accepted (in) per SA, rekeyed and deleted child SAs included",
        totals.iter().flat_map(|(sa, t)| {
            [
                (labels(&[("sa", sa), ("direction", "in")]), t.inbound.bytes),
                (labels(&[("sa", sa), ("direction", "out")]), t.out.bytes),
            ]
        }),
    );
    s.counter(
        "mifsec_sa_packets",
        "Packets sealed (out) and accepted (in) per SA, rekeyed and deleted child SAs included",
        totals.iter().flat_map(|(sa, t)| {
            [
                (
                    labels(&[("sa", sa), ("direction", "in")]),
                    t.inbound.packets,
                ),
                (labels(&[("sa", sa), ("direction", "out")]), t.out.packets),
            ]
        }),
    );
    s.counter(
        "mifsec_sa_drops",
        "Inbound packets of an SA dropped, by reason",
        totals.iter().flat_map(|(sa, t)| {
            DropReason::ALL
                .iter()
                .map(move |r| (labels(&[("sa", sa), ("reason", r.name())]), t.drops(*r)))
        }),
    );
    paths(&mut s, engine, ike);
    if let Some(i) = ike {
        ike_series(&mut s, engine, i);
    }
    let mut out = String::new();
    // Writing into a String does not fail.
    let _ = prometheus_text::encode(&mut out, &s.reg);
    out
}

/// The per-path series.
fn paths(s: &mut Scrape, engine: &EngineStatus, ike: Option<IkeInputs<'_>>) {
    let book = ike.map(|i| i.book);
    // Engine SA -> (peer identity, rekeyed): a rekeyed child's paths give way to its
    // successor's, which have the same names.
    let mut peer: BTreeMap<&str, (&str, bool)> = BTreeMap::new();
    for sa in ike.map_or(&[][..], |i| i.sas) {
        for c in &sa.children {
            peer.insert(
                c.sa.as_str(),
                (sa.remote_id.as_str(), c.state == ChildState::Rekeyed),
            );
        }
    }
    let mut order: Vec<_> = engine.sas.iter().collect();
    order.sort_by_key(|sa| peer.get(sa.name.as_str()).is_some_and(|p| p.1));
    let mut seen = HashSet::new();
    let mut rows = Vec::new();
    for sa in order {
        let label = sa_label(book, &sa.name);
        let who = peer.get(sa.name.as_str()).map_or("", |p| p.0);
        for p in &sa.paths {
            let l = labels(&[
                ("sa", &label),
                ("peer", who),
                ("path", &p.name),
                ("interface", &p.interface),
            ]);
            if seen.insert(l.clone()) {
                rows.push((l, p));
            }
        }
    }
    let with = |l: &Labels, k: &str, v: &str| {
        let mut l = l.clone();
        l.push((k.to_owned(), v.to_owned()));
        l
    };
    s.gauge(
        "mifsec_path_up",
        "1 while the path answers its probes (or carries authentic traffic), else 0",
        rows.iter()
            .map(|(l, p)| (l.clone(), if p.state == "up" { 1.0 } else { 0.0 })),
    );
    s.gauge(
        "mifsec_path_rtt_seconds",
        "Smoothed probe RTT of the path (RFC 6298 SRTT)",
        rows.iter()
            .filter_map(|(l, p)| Some((l.clone(), p.rtt_ms? / 1000.0))),
    );
    s.gauge(
        "mifsec_path_rtt_variance_seconds",
        "Probe RTT variation of the path (RFC 6298 RTTVAR, the mean deviation)",
        rows.iter()
            .filter_map(|(l, p)| Some((l.clone(), p.rtt_var_ms? / 1000.0))),
    );
    s.gauge(
        "mifsec_path_loss_ratio",
        "Probe loss of the path, 0 to 1: a moving average of each second's loss that decays",
        rows.iter().map(|(l, p)| (l.clone(), p.loss_pct / 100.0)),
    );
    s.gauge(
        "mifsec_path_last_receive_age_seconds",
        "Seconds since the last authentic packet was received on the path",
        rows.iter()
            .filter_map(|(l, p)| Some((l.clone(), p.last_rx_s?))),
    );
    s.counter(
        "mifsec_path_failovers",
        "Times the path was declared down and its traffic failed over",
        rows.iter().map(|(l, p)| (l.clone(), p.failovers)),
    );
    s.counter(
        "mifsec_path_bytes",
        "ESP bytes sent (out) and received (in) on the path",
        rows.iter().flat_map(|(l, p)| {
            [
                (with(l, "direction", "in"), p.rx_bytes),
                (with(l, "direction", "out"), p.tx_bytes),
            ]
        }),
    );
    s.counter(
        "mifsec_path_packets",
        "ESP packets sent (out) and received (in) on the path",
        rows.iter().flat_map(|(l, p)| {
            [
                (with(l, "direction", "in"), p.rx_packets),
                (with(l, "direction", "out"), p.tx_packets),
            ]
        }),
    );
}

fn state_name(s: IkeState) -> &'static str {
    match s {
        IkeState::Connecting => "connecting",
        IkeState::Established => "established",
        IkeState::Deleting => "deleting",
    }
}

/// The IKE series.
fn ike_series(s: &mut Scrape, engine: &EngineStatus, i: IkeInputs<'_>) {
    let mut ike_sas: BTreeMap<(String, &str), u64> = BTreeMap::new();
    let mut child_sas: BTreeMap<(String, String, &str), u64> = BTreeMap::new();
    for c in i.connections {
        for st in ["connecting", "established", "deleting"] {
            ike_sas.insert((c.clone(), st), 0);
        }
    }
    for sa in i.sas {
        *ike_sas
            .entry((sa.name.clone(), state_name(sa.state)))
            .or_default() += 1;
        for c in &sa.children {
            let st = match c.state {
                ChildState::Installed => "installed",
                ChildState::Rekeyed => "rekeyed",
            };
            *child_sas
                .entry((sa.name.clone(), c.name.clone(), st))
                .or_default() += 1;
        }
    }
    s.gauge(
        "mifsec_ike_sas",
        "IKE SAs by connection and state",
        ike_sas
            .iter()
            .map(|((c, st), n)| (labels(&[("conn", c), ("state", st)]), *n as f64)),
    );
    s.gauge(
        "mifsec_child_sas",
        "Child SAs by connection, child and state (rekeyed: replaced, waiting for its Delete)",
        child_sas.iter().map(|((c, ch, st), n)| {
            (
                labels(&[("conn", c), ("child", ch), ("state", st)]),
                *n as f64,
            )
        }),
    );
    // The IKE children's totals, by connection and child: the removed ones' and the
    // installed ones' (lingering rekeyed pairs included).
    let mut totals: BTreeMap<(String, String), ChildTotals> = i.book.retired.clone();
    for sa in &engine.sas {
        if let Some(key) = i.book.children.get(&sa.name) {
            let t = totals.entry(key.clone()).or_default();
            t.out.packets += sa.out_packets;
            t.out.bytes += sa.out_bytes;
            t.inbound.packets += sa.in_packets;
            t.inbound.bytes += sa.in_bytes;
        }
    }
    let by_child = |f: fn(&ChildTotals) -> (u64, u64)| {
        totals
            .iter()
            .flat_map(move |((c, ch), t)| {
                let (inb, out) = f(t);
                [
                    (
                        labels(&[("conn", c), ("child", ch), ("direction", "in")]),
                        inb,
                    ),
                    (
                        labels(&[("conn", c), ("child", ch), ("direction", "out")]),
                        out,
                    ),
                ]
            })
            .collect::<Vec<_>>()
    };
    s.counter(
        "mifsec_child_sa_bytes",
        "Inner bytes of a connection's child SAs, accepted (in) and sealed (out), rekeyed and deleted ones included",
        by_child(|t| (t.inbound.bytes, t.out.bytes)),
    );
    s.counter(
        "mifsec_child_sa_packets",
        "Packets of a connection's child SAs, accepted (in) and sealed (out), rekeyed and deleted ones included",
        by_child(|t| (t.inbound.packets, t.out.packets)),
    );
    let b = i.book;
    s.counter(
        "mifsec_ike_messages",
        "IKE messages by exchange and direction (retransmissions included)",
        b.messages.rows().flat_map(|(x, r, o)| {
            [
                (labels(&[("exchange", x), ("direction", "in")]), r),
                (labels(&[("exchange", x), ("direction", "out")]), o),
            ]
        }),
    );
    s.counter(
        "mifsec_ike_retransmissions",
        "IKE requests retransmitted",
        [(Labels::new(), b.retransmissions)],
    );
    let conns: Vec<(&String, &crate::daemon::counters::ConnCounters)> = b.conns.iter().collect();
    let zero = crate::daemon::counters::ConnCounters::default();
    let mut all: Vec<(&str, &crate::daemon::counters::ConnCounters)> = i
        .connections
        .iter()
        .map(|c| (c.as_str(), b.conns.get(c).unwrap_or(&zero)))
        .collect();
    for (c, k) in &conns {
        if !i.connections.contains(c) {
            all.push((c.as_str(), k));
        }
    }
    s.counter(
        "mifsec_ike_established",
        "IKE SAs established (clones included)",
        all.iter()
            .map(|(c, k)| (labels(&[("conn", c)]), k.ike_established)),
    );
    s.counter(
        "mifsec_ike_rekeys",
        "Rekeys completed, of the IKE SA (kind ike) or of a child SA (kind child)",
        all.iter().flat_map(|(c, k)| {
            [
                (labels(&[("conn", c), ("kind", "ike")]), k.ike_rekeys),
                (labels(&[("conn", c), ("kind", "child")]), k.child_rekeys),
            ]
        }),
    );
    s.counter(
        "mifsec_ike_auth_failures",
        "Authentication failures: the peer's did not verify (side peer), ours was refused (side local)",
        all.iter().flat_map(|(c, k)| {
            [
                (labels(&[("conn", c), ("side", "peer")]), k.auth_failures),
                (labels(&[("conn", c), ("side", "local")]), k.auth_refused),
            ]
        }),
    );
    s.counter(
        "mifsec_ike_failures",
        "IKE SAs that failed for another reason than authentication, by reason",
        all.iter().flat_map(|(c, k)| {
            k.failures
                .iter()
                .map(move |(r, v)| (labels(&[("conn", c), ("reason", r)]), *v))
        }),
    );
    s.counter(
        "mifsec_ike_moves",
        "Moves of an IKE SA and its child SAs to a new path (MOBIKE), by reason",
        all.iter().flat_map(|(c, k)| {
            k.moves
                .iter()
                .map(move |(r, v)| (labels(&[("conn", c), ("reason", r)]), *v))
        }),
    );
    s.counter(
        "mifsec_child_sa_handovers",
        "Child SAs moved by a soft or hard handover of the multi-interface extension",
        all.iter().flat_map(|(c, k)| {
            [
                (labels(&[("conn", c), ("kind", "soft")]), k.soft_handovers),
                (labels(&[("conn", c), ("kind", "hard")]), k.hard_handovers),
            ]
        }),
    );
    let st = i.stats;
    s.gauge(
        "mifsec_ike_half_open",
        "Responder IKE SAs still negotiating",
        [(Labels::new(), st.half_open as f64)],
    );
    s.counter(
        "mifsec_ike_cookies_sent",
        "IKE_SA_INIT requests answered with a COOKIE",
        [(Labels::new(), st.cookies.cookies_sent)],
    );
    s.counter(
        "mifsec_ike_init_dropped",
        "New IKE_SA_INIT requests dropped by the limits, by reason",
        [
            ("half_open", st.limits.dropped_half_open),
            ("blocked", st.limits.dropped_blocked),
            ("rate", st.limits.dropped_rate),
        ]
        .map(|(r, v)| (labels(&[("reason", r)]), v)),
    );
    s.counter(
        "mifsec_ike_queue_dropped",
        "IKE datagrams dropped because the IKE thread's queue was full, by port",
        [
            ("500", st.queue_dropped_500),
            ("4500", st.queue_dropped_4500),
        ]
        .map(|(p, v)| (labels(&[("port", p)]), v)),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::counters::CounterSnapshot;
    use crate::dataplane::engine::{PathStatus, SaStatus};

    fn sa(name: &str, in_bytes: u64, rtt: Option<f64>) -> SaStatus {
        SaStatus {
            name: name.into(),
            mode: "tunnel".into(),
            cipher: "aes128gcm16".into(),
            esn: true,
            policy: "failover".into(),
            spi_out: "00001001".into(),
            spi_in: "00002001".into(),
            local_ts: vec![],
            remote_ts: vec![],
            out_packets: 3,
            out_bytes: 300,
            out_seq: 3,
            in_packets: 2,
            in_bytes,
            in_dummies: 0,
            replay_top: 2,
            replay_window: 64,
            drops: [("replayed".to_owned(), 4)].into(),
            reorder_held: 0,
            reorder_gaps: 0,
            paths: vec![PathStatus {
                name: "p1".into(),
                interface: "link1".into(),
                local: "198.18.1.2:4500".into(),
                remote: "198.18.1.1:4500".into(),
                role: "active".into(),
                state: "up".into(),
                rtt_ms: rtt,
                rtt_var_ms: rtt.map(|r| r / 4.0),
                loss_pct: 12.5,
                last_rx_s: Some(0.25),
                failovers: 2,
                tx_packets: 3,
                tx_bytes: 400,
                rx_packets: 2,
                rx_bytes: 250,
                tx_mbps: 0.0,
                rx_mbps: 0.0,
                weight: 1,
            }],
            marks: None,
        }
    }

    fn engine(sas: Vec<SaStatus>) -> EngineStatus {
        EngineStatus {
            workers: 1,
            tun: "mifsec0".into(),
            tun_offloads: "none".into(),
            table_swaps: 7,
            uptime_s: 12.5,
            interfaces: vec![],
            sas,
            drops: [("no_sa".to_owned(), 5)].into(),
            offload: Default::default(),
        }
    }

    #[test]
    fn manual_sas_by_name() {
        let text = render(&engine(vec![sa("tunnel", 200, Some(2.0))]), None);
        for line in [
            "# TYPE mifsec_sa_bytes_total counter",
            "mifsec_sa_bytes_total{sa=\"tunnel\",direction=\"in\"} 200",
            "mifsec_sa_bytes_total{sa=\"tunnel\",direction=\"out\"} 300",
            "mifsec_sa_drops_total{sa=\"tunnel\",reason=\"replayed\"} 4",
            "mifsec_sa_drops_total{sa=\"tunnel\",reason=\"integrity\"} 0",
            "mifsec_engine_drops_total{reason=\"no_sa\"} 5",
            "mifsec_table_swaps_total 7",
            "mifsec_path_up{sa=\"tunnel\",peer=\"\",path=\"p1\",interface=\"link1\"} 1.0",
            "mifsec_path_rtt_seconds{sa=\"tunnel\",peer=\"\",path=\"p1\",interface=\"link1\"} 0.002",
            "mifsec_path_rtt_variance_seconds{sa=\"tunnel\",peer=\"\",path=\"p1\",interface=\"link1\"} 0.0005",
            "mifsec_path_loss_ratio{sa=\"tunnel\",peer=\"\",path=\"p1\",interface=\"link1\"} 0.125",
            "mifsec_path_last_receive_age_seconds{sa=\"tunnel\",peer=\"\",path=\"p1\",interface=\"link1\"} 0.25",
            "mifsec_path_failovers_total{sa=\"tunnel\",peer=\"\",path=\"p1\",interface=\"link1\"} 2",
            "mifsec_path_bytes_total{sa=\"tunnel\",peer=\"\",path=\"p1\",interface=\"link1\",direction=\"in\"} 250",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        assert!(!text.contains("00002001"), "no SPI anywhere:\n{text}");
        assert!(!text.contains("mifsec_ike_"), "no IKE series without IKE");
        // A path without an RTT yet has no RTT series.
        let text = render(&engine(vec![sa("tunnel", 200, None)]), None);
        assert!(!text.contains("mifsec_path_rtt_seconds{"), "{text}");
    }

    #[test]
    fn ike_children_by_configuration_names_across_rekeys() {
        let mut book = Book::default();
        // Two installed pairs of home/net (a rekey in progress) and one removed before.
        book.children
            .insert("home-net-0000aaaa".into(), ("home".into(), "net".into()));
        book.children
            .insert("home-net-0000bbbb".into(), ("home".into(), "net".into()));
        let mut t = ChildTotals::default();
        t.add(
            &CounterSnapshot {
                packets: 10,
                bytes: 1000,
                ..CounterSnapshot::default()
            },
            &CounterSnapshot {
                packets: 20,
                bytes: 2000,
                ..CounterSnapshot::default()
            },
        );
        book.retired.insert(("home".into(), "net".into()), t);
        book.messages
            .count(crate::wire::ExchangeType::CreateChildSa, true);
        book.retransmissions = 3;
        book.conn("home").child_rekeys = 2;
        let stats = IkeStats::default();
        let conns = vec!["home".to_owned(), "idle".to_owned()];
        let e = engine(vec![
            sa("home-net-0000aaaa", 200, Some(1.0)),
            sa("home-net-0000bbbb", 100, Some(1.0)),
        ]);
        let text = render(
            &e,
            Some(IkeInputs {
                connections: &conns,
                sas: &[],
                stats: &stats,
                book: &book,
            }),
        );
        for line in [
            // 2000 removed + 200 + 100 installed.
            "mifsec_child_sa_bytes_total{conn=\"home\",child=\"net\",direction=\"in\"} 2300",
            "mifsec_child_sa_bytes_total{conn=\"home\",child=\"net\",direction=\"out\"} 1600",
            "mifsec_child_sa_packets_total{conn=\"home\",child=\"net\",direction=\"in\"} 24",
            "mifsec_sa_bytes_total{sa=\"home/net\",direction=\"in\"} 2300",
            "mifsec_ike_messages_total{exchange=\"CREATE_CHILD_SA\",direction=\"out\"} 1",
            "mifsec_ike_messages_total{exchange=\"IKE_AUTH\",direction=\"in\"} 0",
            "mifsec_ike_retransmissions_total 3",
            "mifsec_ike_rekeys_total{conn=\"home\",kind=\"child\"} 2",
            "mifsec_ike_rekeys_total{conn=\"idle\",kind=\"child\"} 0",
            "mifsec_ike_sas{conn=\"idle\",state=\"established\"} 0.0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
        // One series per path name: the pairs of a rekey share it.
        let ups = text
            .lines()
            .filter(|l| l.starts_with("mifsec_path_up{"))
            .count();
        assert_eq!(ups, 1, "{text}");
        assert!(!text.contains("0000aaaa") && !text.contains("0000bbbb"));
    }
}
