//! `mifsec status` for people: the engine's status JSON (as the control socket serves it)
//! turned into text in the manner of `swanctl --list-sas`, plus paths.
//!
//! ```text
//! tunnel: tunnel, aes128gcm16, esn, policy aggregate, 10.1.0.0/24 === 10.2.0.0/24
//!   out 00001001: 1234 packets, 1.6 MB, seq 1234
//!   in  00002001: 1200 packets, 1.5 MB, replay top 1200/65536, drops: replayed 3
//!   path fast  link1 198.18.1.2:4500 -> 198.18.1.1:4500  active  up  rtt 0.21 ms  loss 0.0%  tx 210.3 Mbit/s  rx 1.2 Mbit/s
//! interfaces: link1 198.18.1.2:4500 (veth-c1, gso gro)
//! tun mifsec0 (vnet_hdr csum tso4 tso6 uso4 uso6), 2 workers, 3 table swaps, up 5m03s
//! ```
//!
//! It reads the JSON rather than [`EngineStatus`](crate::dataplane::engine::EngineStatus)
//! itself so that the client needs no `Deserialize` of the engine's types, and it tolerates
//! missing fields (an older or newer daemon).

use std::fmt::Write as _;

use serde_json::Value;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("-")
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn strings(v: &Value, k: &str) -> String {
    let items: Vec<&str> = list(v, k).iter().filter_map(Value::as_str).collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(" ")
    }
}

/// Non-zero entries of a `{name: count}` object, as `name 3, other 1`.
fn counts(v: &Value, k: &str) -> Option<String> {
    let items: Vec<String> = v
        .get(k)
        .and_then(Value::as_object)?
        .iter()
        .filter_map(|(name, c)| c.as_u64().filter(|&c| c > 0).map(|c| format!("{name} {c}")))
        .collect();
    (!items.is_empty()).then(|| items.join(", "))
}

/// Bytes in decimal units: `512 B`, `1.6 MB`.
pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if b < 1000 {
        return format!("{b} B");
    }
    let mut x = b as f64 / 1000.0;
    let mut unit = 0;
    while x >= 999.95 && unit + 1 < UNITS.len() {
        x /= 1000.0;
        unit += 1;
    }
    format!("{x:.1} {}", UNITS[unit])
}

/// A duration in seconds as `42s`, `5m03s` or `2h05m`, `3d04h`.
pub fn uptime(secs: f64) -> String {
    let t = secs.max(0.0) as u64;
    match t {
        0..60 => format!("{t}s"),
        60..3600 => format!("{}m{:02}s", t / 60, t % 60),
        3600..86_400 => format!("{}h{:02}m", t / 3600, t % 3600 / 60),
        _ => format!("{}d{:02}h", t / 86_400, t % 86_400 / 3600),
    }
}

/// The IKE SAs (the `ike_sas` list, present when the daemon has IKE connections), as
/// `swanctl --list-sas` shows them:
///
/// ```text
/// home: #1, ESTABLISHED, IKEv2, 8a5f7c0e91d2b3a4_i* 0b1c2d3e4f5a6b7c_r
///   local  'cl' @ 198.18.9.2:4500 [10.77.0.1]
///   remote 'gw' @ 198.18.9.1:4500
///   AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519, nat local
///   established 12s ago
///   net: #home-net-c1a2b3c4, INSTALLED, TUNNEL-in-UDP, ESP SPIs: c1a2b3c4_i 0d0e0f10_o
///     aes128gcm16, 10.77.0.1/32 === 10.88.0.0/16
/// ```
fn ike_sas(st: &Value, out: &mut String) {
    for ike in list(st, "ike_sas") {
        let initiator = ike
            .get("initiator")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let _ = writeln!(
            out,
            "{}: #{}, {}, IKEv2, {}_i{} {}_r{}",
            s(ike, "name"),
            n(ike, "id"),
            s(ike, "state"),
            s(ike, "spi_i"),
            if initiator { "*" } else { "" },
            s(ike, "spi_r"),
            if initiator { "" } else { "*" },
        );
        if let Some(from) = ike.get("cloned_from").and_then(Value::as_u64) {
            let _ = writeln!(out, "  cloned from #{from} (RFC 7791)");
        }
        // Every virtual IP (the list), else the single one older daemons report.
        let vip = |k: &str| {
            let list: Vec<&str> = ike
                .get(format!("{k}s"))
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if list.is_empty() {
                ike.get(k)
                    .and_then(Value::as_str)
                    .map(|v| format!(" [{v}]"))
                    .unwrap_or_default()
            } else {
                format!(" [{}]", list.join(" "))
            }
        };
        let _ = writeln!(
            out,
            "  local  '{}' @ {}{}",
            s(ike, "local_id"),
            s(ike, "local"),
            vip("vip")
        );
        let _ = writeln!(
            out,
            "  remote '{}' @ {}{}",
            s(ike, "remote_id"),
            s(ike, "remote"),
            vip("peer_vip")
        );
        let auth = |k: &str| ike.get(k).and_then(Value::as_str).filter(|a| !a.is_empty());
        if let (Some(l), Some(r)) = (auth("local_auth"), auth("remote_auth")) {
            let cert = match (auth("remote_cert"), auth("remote_ca")) {
                (Some(c), Some(ca)) => format!(", certificate '{c}' issued by '{ca}'"),
                (Some(c), None) => format!(", certificate '{c}'"),
                _ => String::new(),
            };
            let eap = |k: &str| {
                auth(k)
                    .map(|i| format!(" (EAP identity '{i}')"))
                    .unwrap_or_default()
            };
            let (mut le, mut re) = (eap("local_eap_id"), eap("remote_eap_id"));
            if let Some(t) = auth("remote_tls_cert") {
                // EAP-TLS: "(EAP identity 'cl', TLS 1.2, gateway TLS certificate '...')" on
                // the client's side, "client TLS certificate" on the gateway's.
                let v = auth("tls_version").unwrap_or("TLS");
                let (side, who) = if l == "eap-tls" {
                    (&mut le, "gateway")
                } else {
                    (&mut re, "client")
                };
                *side = match side.strip_suffix(')') {
                    Some(head) => format!("{head}, {v}, {who} TLS certificate '{t}')"),
                    None => format!(" ({v}, {who} TLS certificate '{t}')"),
                };
            }
            let _ = writeln!(out, "  auth: local {l}{le}, remote {r}{re}{cert}");
        }
        let dns: Vec<&str> = ike
            .get("dns")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if !dns.is_empty() {
            let _ = writeln!(out, "  dns {}", dns.join(" "));
        }
        if let Some(a) = ike
            .get("algorithms")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            let _ = writeln!(out, "  {a}, nat {}", s(ike, "nat"));
        }
        let frag = |k: &str| ike.get(k).and_then(Value::as_u64).unwrap_or(0);
        let (fs, fr, fd) = (
            frag("fragments_sent"),
            frag("fragments_received"),
            frag("fragments_dropped"),
        );
        if fs + fr + fd > 0 {
            let _ = writeln!(
                out,
                "  IKE fragments: {fs} sent, {fr} received, {fd} dropped"
            );
        }
        mobike_lines(ike, out);
        mif_lines(ike, out);
        if let Some(t) = ike.get("established_s").and_then(Value::as_u64) {
            let _ = writeln!(out, "  established {} ago", uptime(t as f64));
        }
        for c in list(ike, "children") {
            let udp = c.get("udp_encap").and_then(Value::as_bool).unwrap_or(false);
            let _ = writeln!(
                out,
                "  {}: #{}, {}, {}{}, ESP SPIs: {}_i {}_o",
                s(c, "name"),
                s(c, "sa"),
                s(c, "state"),
                s(c, "mode").to_uppercase(),
                if udp { "-in-UDP" } else { "" },
                s(c, "spi_in"),
                s(c, "spi_out"),
            );
            let esn = c.get("esn").and_then(Value::as_bool).unwrap_or(false);
            let _ = writeln!(
                out,
                "    {}{}, {} === {}",
                s(c, "cipher"),
                if esn { "/esn" } else { "" },
                strings(c, "local_ts"),
                strings(c, "remote_ts"),
            );
            mif_child_lines(c, out);
        }
    }
}

/// An IKE SA's multi-interface lines: both sides' announced interfaces.
///
/// ```text
///   MIF in use, ours (generation 2): 1 c1 198.18.1.2:4500 prio 0 active, 2 c2 198.18.2.2:4500 prio 10 alternate
///   peer's (generation 1): 1 g1 198.18.101.1:4500 prio 0 active; operations 3, 0 refused
/// ```
fn mif_lines(ike: &Value, out: &mut String) {
    let Some(m) = ike.get("mif").filter(|m| m.is_object()) else {
        return;
    };
    let ifs = |k: &str| {
        let v: Vec<String> = list(m, k)
            .iter()
            .map(|i| {
                format!(
                    "{} {} {} prio {} {}",
                    n(i, "id"),
                    s(i, "name"),
                    s(i, "address"),
                    n(i, "priority"),
                    s(i, "role")
                )
            })
            .collect();
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.join(", ")
        }
    };
    let in_use = m.get("in_use").and_then(Value::as_bool).unwrap_or(false);
    let _ = writeln!(
        out,
        "  MIF {}, ours (generation {}): {}",
        if in_use { "in use" } else { "not in use" },
        n(m, "local_generation"),
        ifs("local_interfaces")
    );
    let _ = writeln!(
        out,
        "  peer's (generation {}): {}; operations {}, {} refused",
        n(m, "peer_generation"),
        ifs("peer_interfaces"),
        n(m, "operations"),
        n(m, "refused")
    );
}

/// A child SA's MIF paths.
///
/// ```text
///     MIF policy aggregate, reorder: i1r1 c1 198.18.1.2:4500 -> 198.18.101.1:4500 active up rx 10 tx 12 rtt 0.21 ms loss 0.0%
/// ```
fn mif_child_lines(c: &Value, out: &mut String) {
    let Some(m) = c.get("mif").filter(|m| m.is_object()) else {
        return;
    };
    let reorder = m.get("reorder").and_then(Value::as_bool).unwrap_or(false);
    let pending = m
        .get("handover_pending")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let _ = writeln!(
        out,
        "    MIF policy {}{}{}, {} paths",
        s(m, "policy"),
        if reorder { ", reorder" } else { "" },
        if pending {
            ", soft handover under way"
        } else {
            ""
        },
        list(m, "paths").len()
    );
    for p in list(m, "paths") {
        let rtt = p
            .get("rtt_ms")
            .and_then(Value::as_f64)
            .map_or_else(|| "-".to_owned(), |r| format!("{r:.2} ms"));
        let _ = writeln!(
            out,
            "      {} {} {} -> {}  {}  {}  rx {} tx {}  rtt {rtt}  loss {:.1}%",
            s(p, "name"),
            s(p, "interface"),
            s(p, "local"),
            s(p, "remote"),
            s(p, "role"),
            s(p, "state"),
            n(p, "rx_packets"),
            n(p, "tx_packets"),
            f(p, "loss_pct"),
        );
    }
}

/// An IKE SA's MOBIKE lines: the other addresses known, and its moves once it has moved
/// (or refused or checked something):
///
/// ```text
///   MOBIKE, other local addresses [198.18.2.2], peer's [198.18.9.1]
///   moves 2 (peer-update 1, peer-update-verified 1), last peer-update 3s ago; route checks 1 passed, 0 failed; updates 0 refused, 0 stale
///   route check of 198.18.3.1:4500 under way (child SAs on the previous path)
/// ```
fn mobike_lines(ike: &Value, out: &mut String) {
    if !ike.get("mobike").and_then(Value::as_bool).unwrap_or(false) {
        return;
    }
    let join = |k: &str| {
        list(ike, k)
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = writeln!(
        out,
        "  MOBIKE, other local addresses [{}], peer's [{}]",
        join("local_addrs"),
        join("peer_addrs"),
    );
    let moves = n(ike, "moves");
    let (passed, failed) = (n(ike, "route_checks_passed"), n(ike, "route_checks_failed"));
    let (refused, stale) = (n(ike, "updates_refused"), n(ike, "updates_stale"));
    if moves + passed + failed + refused + stale > 0 {
        let by: Vec<String> = ike
            .get("moves_by_reason")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .map(|(k, v)| format!("{k} {}", v.as_u64().unwrap_or(0)))
                    .collect()
            })
            .unwrap_or_default();
        let last = match (
            ike.get("last_move").and_then(Value::as_str),
            ike.get("last_move_s").and_then(Value::as_u64),
        ) {
            (Some(r), Some(t)) => format!(", last {r} {} ago", uptime(t as f64)),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  moves {moves}{}{last}; route checks {passed} passed, {failed} failed; \
             updates {refused} refused, {stale} stale",
            if by.is_empty() {
                String::new()
            } else {
                format!(" ({})", by.join(", "))
            },
        );
    }
    if let Some(a) = ike.get("route_check").and_then(Value::as_str) {
        let _ = writeln!(
            out,
            "  route check of {a} under way (child SAs on the previous path)"
        );
    }
}

/// The IKE thread's counters (`ike`, present with IKE connections):
///
/// ```text
/// IKE: 0 half-open, cookies from 30 half-open: 1 sent, 1 accepted, 0 rejected
/// IKE_SA_INIT limits: 1024 half-open, 5 per source, 10/s (burst 20) per source; dropped: 0 half-open, 3 blocked, 9 rate (0 evictions)
/// IKE input dropped: 0 queue full (port 500), 0 queue full (port 4500), 0 oversize
/// ```
fn ike_counters(st: &Value, out: &mut String) {
    let Some(ike) = st.get("ike") else {
        return;
    };
    let _ = writeln!(
        out,
        "IKE: {} half-open, cookies from {} half-open: {} sent, {} accepted, {} rejected",
        n(ike, "half_open"),
        n(ike, "cookie_threshold"),
        n(ike, "cookies_sent"),
        n(ike, "cookies_accepted"),
        n(ike, "cookies_rejected"),
    );
    if ike.get("max_half_open").is_none() {
        ike_operator_counters(ike, out);
        return;
    }
    let per_source = match ike.get("block_threshold").and_then(Value::as_u64) {
        Some(0) => "no limit per source".to_owned(),
        Some(b) => format!("{b} per source"),
        None => "-".to_owned(),
    };
    let rate = match ike.get("init_rate").and_then(Value::as_u64) {
        Some(0) => "no rate limit".to_owned(),
        Some(r) => format!("{r}/s (burst {}) per source", n(ike, "init_burst")),
        None => "-".to_owned(),
    };
    let _ = writeln!(
        out,
        "IKE_SA_INIT limits: {} half-open, {per_source}, {rate}; dropped: {} half-open, {} blocked, {} rate ({} evictions)",
        n(ike, "max_half_open"),
        n(ike, "dropped_half_open"),
        n(ike, "dropped_blocked"),
        n(ike, "dropped_rate"),
        n(ike, "rate_evictions"),
    );
    let _ = writeln!(
        out,
        "IKE input dropped: {} queue full (port 500), {} queue full (port 4500), {} oversize",
        n(ike, "queue_dropped_500"),
        n(ike, "queue_dropped_4500"),
        n(ike, "oversize"),
    );
    ike_operator_counters(ike, out);
}

/// The operator's counters of the IKE side (`ike.counters`): messages per exchange (in/out),
/// retransmissions, and per connection what happened to its SAs:
///
/// ```text
/// IKE messages in/out: IKE_SA_INIT 1/1, IKE_AUTH 1/1, CREATE_CHILD_SA 2/2, INFORMATIONAL 3/3, other 0/0; 0 retransmitted
///   home: 1 established, rekeys 1 IKE 2 child, auth failures 0 peer 0 ours, moves 0, handovers 0 soft 0 hard
/// ```
fn ike_operator_counters(ike: &Value, out: &mut String) {
    let Some(c) = ike.get("counters") else {
        return;
    };
    if let Some(m) = c.get("messages").and_then(Value::as_object) {
        let rows: Vec<String> = m
            .iter()
            .map(|(x, v)| format!("{x} {}/{}", n(v, "received"), n(v, "sent")))
            .collect();
        let _ = writeln!(
            out,
            "IKE messages in/out: {}; {} retransmitted",
            rows.join(", "),
            n(c, "retransmissions")
        );
    }
    for (name, k) in c
        .get("connections")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let sum = |key: &str| {
            k.get(key)
                .and_then(Value::as_object)
                .map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>())
        };
        let mut line = format!(
            "  {name}: {} established, rekeys {} IKE {} child, auth failures {} peer {} ours, moves {}, handovers {} soft {} hard",
            n(k, "ike_established"),
            n(k, "ike_rekeys"),
            n(k, "child_rekeys"),
            n(k, "auth_failures"),
            n(k, "auth_refused"),
            sum("moves"),
            n(k, "soft_handovers"),
            n(k, "hard_handovers"),
        );
        if let Some(f) = counts(k, "failures") {
            let _ = write!(line, ", failures: {f}");
        }
        let _ = writeln!(out, "{line}");
    }
}

/// The status text for `status`, the `result` of a `{"cmd":"status"}` request.
pub fn status(st: &Value) -> String {
    let mut out = String::new();
    ike_counters(st, &mut out);
    ike_sas(st, &mut out);
    let sas = list(st, "sas");
    if sas.is_empty() {
        out.push_str("no SAs\n");
    }
    for sa in sas {
        let _ = writeln!(
            out,
            "{}: {}, {}, {}, policy {}, {} === {}",
            s(sa, "name"),
            s(sa, "mode"),
            s(sa, "cipher"),
            if sa.get("esn").and_then(Value::as_bool).unwrap_or(false) {
                "esn"
            } else {
                "no esn"
            },
            s(sa, "policy"),
            strings(sa, "local_ts"),
            strings(sa, "remote_ts"),
        );
        let _ = write!(
            out,
            "  out {}: {} packets, {}, seq {}",
            s(sa, "spi_out"),
            n(sa, "out_packets"),
            bytes(n(sa, "out_bytes")),
            n(sa, "out_seq"),
        );
        let marks = sa.get("marks").filter(|m| m.is_object());
        if let Some(m) = marks {
            let _ = write!(out, ", reserved to {}", n(m, "out_reserved"));
            if n(m, "out_waits") > 0 {
                let _ = write!(out, " ({} waits)", n(m, "out_waits"));
            }
        }
        out.push('\n');
        let _ = write!(
            out,
            "  in  {}: {} packets, {}, replay top {}/{}",
            s(sa, "spi_in"),
            n(sa, "in_packets"),
            bytes(n(sa, "in_bytes")),
            n(sa, "replay_top"),
            n(sa, "replay_window"),
        );
        if let Some(m) = marks {
            if n(m, "in_floor") > 0 {
                let _ = write!(out, ", resumed above {}", n(m, "in_floor"));
            }
            let _ = write!(out, ", reserved to {}", n(m, "in_reserved"));
        }
        if let Some(d) = counts(sa, "drops") {
            let _ = write!(out, ", drops: {d}");
        }
        let (held, gaps) = (n(sa, "reorder_held"), n(sa, "reorder_gaps"));
        if held + gaps > 0 {
            let _ = write!(out, ", reorder: held {held}, gaps {gaps}");
        }
        out.push('\n');
        let paths = list(sa, "paths");
        let width = |k: &str| paths.iter().map(|p| s(p, k).len()).max().unwrap_or(0);
        let (wn, wi, wl, wr, wo, ws) = (
            width("name"),
            width("interface"),
            width("local"),
            width("remote"),
            width("role"),
            width("state"),
        );
        let weights = s(sa, "policy") == "aggregate";
        for p in paths {
            let rtt = match (
                p.get("rtt_ms").and_then(Value::as_f64),
                p.get("rtt_var_ms").and_then(Value::as_f64),
            ) {
                (Some(ms), Some(var)) => format!("rtt {ms:.2}±{var:.2} ms"),
                (Some(ms), None) => format!("rtt {ms:.2} ms"),
                (None, _) => "rtt -".into(),
            };
            let line = format!(
                "  path {:wn$}  {:wi$} {:wl$} -> {:wr$}  {:wo$}  {:ws$}  {rtt}  loss {:.1}%  tx {:.1} Mbit/s  rx {:.1} Mbit/s",
                s(p, "name"),
                s(p, "interface"),
                s(p, "local"),
                s(p, "remote"),
                s(p, "role"),
                s(p, "state"),
                f(p, "loss_pct"),
                f(p, "tx_mbps"),
                f(p, "rx_mbps"),
            );
            out.push_str(&line);
            if weights {
                let _ = write!(out, "  weight {}", n(p, "weight"));
            }
            if let Some(t) = p.get("last_rx_s").and_then(Value::as_f64) {
                let _ = write!(out, "  last rx {t:.1}s ago");
            }
            if n(p, "failovers") > 0 {
                let _ = write!(out, "  failovers {}", n(p, "failovers"));
            }
            out.push('\n');
        }
    }
    let ifaces: Vec<String> = list(st, "interfaces")
        .iter()
        .map(|i| {
            let offloads = match s(i, "offloads") {
                "none" | "-" => "no offloads",
                o => o,
            };
            match i.get("device").and_then(Value::as_str) {
                Some(d) => format!("{} {} ({d}, {offloads})", s(i, "name"), s(i, "local")),
                None => format!("{} {} ({offloads})", s(i, "name"), s(i, "local")),
            }
        })
        .collect();
    let _ = writeln!(
        out,
        "interfaces: {}",
        if ifaces.is_empty() {
            "none".into()
        } else {
            ifaces.join(", ")
        }
    );
    configured_interfaces(&mut out, st);
    let (workers, swaps) = (n(st, "workers"), n(st, "table_swaps"));
    let _ = writeln!(
        out,
        "tun {} ({}), {workers} worker{}, {swaps} table swap{}, up {}",
        s(st, "tun"),
        s(st, "tun_offloads"),
        if workers == 1 { "" } else { "s" },
        if swaps == 1 { "" } else { "s" },
        uptime(f(st, "uptime_s")),
    );
    if let Some(c) = counts(st, "drops") {
        let _ = writeln!(out, "outside SAs: {c}");
    }
    // The batched path at work (all zero without offloads or traffic: no line).
    if let Some(o) = st.get("offload").filter(|o| {
        o.as_object()
            .is_some_and(|m| m.values().any(|v| v.as_u64().is_some_and(|v| v > 0)))
    }) {
        let _ = writeln!(
            out,
            "offloads: TUN super-packets {} read, {} written; UDP GSO {} sends ({} datagrams), GRO {} trains ({} datagrams)",
            n(o, "tun_super_reads"),
            n(o, "tun_super_writes"),
            n(o, "gso_sends"),
            n(o, "gso_datagrams"),
            n(o, "gro_trains"),
            n(o, "gro_datagrams"),
        );
    }
    out
}

/// The `[interfaces.*]` sections, one line each: device, addresses (fixed or learned) and
/// their sockets; then the interface monitor's counters, when it runs.
///
/// ```text
///   link1 on veth-c1: fixed 198.18.9.2 (socket open)
///   wan on veth-c2 (up, followed): 198.18.1.2 (socket open), 198.18.3.2 (socket open as wan.2)
///   lte on wwan0 (absent, followed): no address
/// netlink: 42 messages, 0 parse errors, 0 resyncs; 3 changes, 1 flap absorbed; sockets opened 3, closed 1, refused 0
/// ```
fn configured_interfaces(out: &mut String, st: &Value) {
    for i in list(st, "configured_interfaces") {
        let name = s(i, "name");
        let followed = s(i, "kind") == "followed";
        let _ = write!(out, "  {name}");
        if let Some(d) = i.get("device").and_then(Value::as_str) {
            let _ = write!(out, " on {d}");
        }
        if followed {
            let state = match (
                i.get("device_present").and_then(Value::as_bool),
                i.get("device_up").and_then(Value::as_bool),
            ) {
                (Some(false), _) => "absent",
                (_, Some(true)) => "up",
                _ => "down",
            };
            let _ = write!(out, " ({state}, followed)");
        }
        out.push_str(": ");
        let addrs: Vec<String> = list(i, "addresses")
            .iter()
            .map(|a| {
                let sock = match (
                    s(a, "socket"),
                    a.get("engine_interface").and_then(Value::as_str),
                ) {
                    ("open", Some(e)) if e != name => format!("socket open as {e}"),
                    ("open", _) => "socket open".to_owned(),
                    (_, _) => match a.get("error").and_then(Value::as_str) {
                        Some(e) => format!("no socket: {e}"),
                        None => "socket closed".to_owned(),
                    },
                };
                format!("{} ({sock})", s(a, "address"))
            })
            .collect();
        if addrs.is_empty() {
            out.push_str("no address\n");
        } else {
            if !followed {
                out.push_str("fixed ");
            }
            let _ = writeln!(out, "{}", addrs.join(", "));
        }
    }
    if let Some(c) = st.get("netlink") {
        let flaps = n(c, "flaps_absorbed");
        let _ = writeln!(
            out,
            "netlink: {} messages, {} parse errors, {} resyncs; {} changes, {flaps} flap{} absorbed; sockets opened {}, closed {}, refused {}",
            n(c, "messages"),
            n(c, "parse_errors"),
            n(c, "resyncs"),
            n(c, "windows"),
            if flaps == 1 { "" } else { "s" },
            n(c, "sockets_opened"),
            n(c, "sockets_closed"),
            n(c, "open_failures"),
        );
    }
}

/// `mifsec list-conns`: the loaded connections as `swanctl --list-conns` lays them out.
pub fn list_conns(v: &Value) -> String {
    let list = |v: &Value| -> String {
        let items: Vec<String> = v
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_owned))
            .collect();
        if items.is_empty() {
            "-".into()
        } else {
            items.join(", ")
        }
    };
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    let mut out = String::new();
    let conns = v.as_array().map(Vec::as_slice).unwrap_or_default();
    if conns.is_empty() {
        out.push_str("no connections loaded\n");
    }
    for c in conns {
        let _ = writeln!(
            out,
            "{}: {}, start_action {}, rekeying every {}, dpd {}",
            s(&c["name"]),
            s(&c["version"]),
            s(&c["start_action"]),
            s(&c["rekey_time"]),
            s(&c["dpd_delay"])
        );
        let _ = writeln!(out, "  local:  {}", list(&c["local_addrs"]));
        let _ = writeln!(out, "  remote: {}", list(&c["remote_addrs"]));
        let _ = writeln!(out, "  proposals: {}", list(&c["proposals"]));
        for side in ["local", "remote"] {
            let _ = writeln!(out, "  {side} {} authentication:", s(&c[side]["auth"]));
            let _ = writeln!(out, "    id: {}", s(&c[side]["id"]));
        }
        if c["vips"].as_array().is_some_and(|a| !a.is_empty()) {
            let _ = writeln!(out, "  vips: {}", list(&c["vips"]));
        }
        if c["pools"].as_array().is_some_and(|a| !a.is_empty()) {
            let _ = writeln!(out, "  pools: {}", list(&c["pools"]));
        }
        let _ = writeln!(
            out,
            "  mobike {}, mif {}",
            if c["mobike"] == true { "yes" } else { "no" },
            if c["mif"] == true { "yes" } else { "no" }
        );
        for ch in c["children"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  {}: {}, policy {}{}",
                s(&ch["name"]),
                s(&ch["mode"]),
                s(&ch["policy"]),
                if ch["clone_only"] == true {
                    ", on clones only"
                } else {
                    ""
                }
            );
            let _ = writeln!(out, "    local:  {}", list(&ch["local_ts"]));
            let _ = writeln!(out, "    remote: {}", list(&ch["remote_ts"]));
            let _ = writeln!(out, "    esp_proposals: {}", list(&ch["esp_proposals"]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::dataplane::engine::{
        EngineStatus, InterfaceStatus, MarkStatus, OffloadStatus, PathStatus, SaStatus,
    };

    fn path(name: &str, iface: &str, local: &str, remote: &str, rtt: Option<f64>) -> PathStatus {
        PathStatus {
            name: name.into(),
            interface: iface.into(),
            local: local.into(),
            remote: remote.into(),
            role: "active".into(),
            state: "up".into(),
            rtt_ms: rtt,
            rtt_var_ms: None,
            loss_pct: 0.0,
            last_rx_s: None,
            failovers: 0,
            tx_packets: 10,
            tx_bytes: 1000,
            rx_packets: 5,
            rx_bytes: 500,
            tx_mbps: 210.31,
            rx_mbps: 1.2,
            weight: 300,
        }
    }

    #[test]
    fn status_text() {
        let st = EngineStatus {
            workers: 2,
            tun: "mifsec0".into(),
            tun_offloads: "vnet_hdr csum tso4 tso6 uso4 uso6".into(),
            table_swaps: 3,
            uptime_s: 303.5,
            interfaces: vec![
                InterfaceStatus {
                    name: "link1".into(),
                    device: Some("veth-c1".into()),
                    local: "198.18.1.2:4500".into(),
                    offloads: "gso gro".into(),
                },
                InterfaceStatus {
                    name: "link2".into(),
                    device: None,
                    local: "198.18.2.2:4500".into(),
                    offloads: "none".into(),
                },
            ],
            sas: vec![SaStatus {
                name: "tunnel".into(),
                mode: "tunnel".into(),
                cipher: "aes128gcm16".into(),
                esn: true,
                policy: "aggregate".into(),
                spi_out: "0000100a".into(),
                spi_in: "0000200a".into(),
                local_ts: vec!["10.1.0.0/24".into()],
                remote_ts: vec!["10.2.0.0/24".into()],
                out_packets: 1234,
                out_bytes: 1_612_345,
                out_seq: 1234,
                in_packets: 1200,
                in_bytes: 1_500_000,
                in_dummies: 0,
                replay_top: 1200,
                replay_window: 65536,
                drops: BTreeMap::from([("replayed".to_owned(), 3)]),
                reorder_held: 0,
                reorder_gaps: 0,
                marks: Some(MarkStatus {
                    out_reserved: 65_536,
                    out_waits: 0,
                    in_floor: 1000,
                    in_reserved: 8192,
                }),
                paths: vec![
                    path(
                        "fast",
                        "link1",
                        "198.18.1.2:4500",
                        "198.18.1.1:4500",
                        Some(0.2104),
                    ),
                    path("slow2", "link2", "198.18.2.2:4500", "198.18.2.1:4500", None),
                ],
            }],
            drops: BTreeMap::from([("no_sa".to_owned(), 0), ("malformed".to_owned(), 2)]),
            offload: OffloadStatus {
                tun_super_reads: 40,
                gso_sends: 90,
                gso_datagrams: 1100,
                gro_trains: 70,
                gro_datagrams: 900,
                tun_super_writes: 60,
            },
        };
        let text = status(&serde_json::to_value(&st).unwrap());
        let want = "\
tunnel: tunnel, aes128gcm16, esn, policy aggregate, 10.1.0.0/24 === 10.2.0.0/24
  out 0000100a: 1234 packets, 1.6 MB, seq 1234, reserved to 65536
  in  0000200a: 1200 packets, 1.5 MB, replay top 1200/65536, resumed above 1000, reserved to 8192, drops: replayed 3
  path fast   link1 198.18.1.2:4500 -> 198.18.1.1:4500  active  up  rtt 0.21 ms  loss 0.0%  tx 210.3 Mbit/s  rx 1.2 Mbit/s  weight 300
  path slow2  link2 198.18.2.2:4500 -> 198.18.2.1:4500  active  up  rtt -  loss 0.0%  tx 210.3 Mbit/s  rx 1.2 Mbit/s  weight 300
interfaces: link1 198.18.1.2:4500 (veth-c1, gso gro), link2 198.18.2.2:4500 (no offloads)
tun mifsec0 (vnet_hdr csum tso4 tso6 uso4 uso6), 2 workers, 3 table swaps, up 5m03s
outside SAs: malformed 2
offloads: TUN super-packets 40 read, 60 written; UDP GSO 90 sends (1100 datagrams), GRO 70 trains (900 datagrams)
";
        assert_eq!(text, want);
    }

    #[test]
    fn empty_and_partial_status() {
        let text = status(&serde_json::json!({}));
        assert_eq!(
            text,
            "no SAs\ninterfaces: none\ntun - (-), 0 workers, 0 table swaps, up 0s\n"
        );
    }

    #[test]
    fn ike_counters_line() {
        let st = serde_json::json!({"ike": {"half_open": 2, "cookie_threshold": 0,
            "cookies_sent": 3, "cookies_accepted": 1, "cookies_rejected": 1}});
        let text = status(&st);
        assert!(
            text.starts_with(
                "IKE: 2 half-open, cookies from 0 half-open: 3 sent, 1 accepted, 1 rejected\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn operator_counters_and_path_figures() {
        let st = serde_json::json!({
            "ike": {"half_open": 0, "counters": {
                "messages": {"IKE_SA_INIT": {"received": 1, "sent": 1},
                             "CREATE_CHILD_SA": {"received": 2, "sent": 3}},
                "retransmissions": 1,
                "connections": {"home": {"ike_established": 1, "ike_rekeys": 1,
                    "child_rekeys": 2, "auth_failures": 0, "auth_refused": 1,
                    "failures": {"timeout": 1}, "moves": {"operator": 2},
                    "soft_handovers": 3, "hard_handovers": 0}}}},
            "sas": [{"name": "t", "paths": [{"name": "p1", "rtt_ms": 2.0,
                "rtt_var_ms": 0.5, "last_rx_s": 0.25, "failovers": 2}]}]
        });
        let text = status(&st);
        for line in [
            "IKE messages in/out: CREATE_CHILD_SA 2/3, IKE_SA_INIT 1/1; 1 retransmitted",
            "  home: 1 established, rekeys 1 IKE 2 child, auth failures 0 peer 1 ours, moves 2, handovers 3 soft 0 hard, failures: timeout 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let path = text.lines().find(|l| l.contains("path p1")).unwrap();
        assert!(path.contains("rtt 2.00±0.50 ms"), "{path}");
        assert!(path.ends_with("  last rx 0.2s ago  failovers 2"), "{path}");
    }

    #[test]
    fn ike_limit_lines() {
        let st = serde_json::json!({"ike": {"half_open": 5, "cookie_threshold": 30,
            "cookies_sent": 0, "cookies_accepted": 0, "cookies_rejected": 0,
            "half_open_sources": 1, "max_half_open": 1024, "block_threshold": 5,
            "init_rate": 10, "init_burst": 20, "dropped_half_open": 0, "dropped_blocked": 3,
            "dropped_rate": 9, "rate_evictions": 0, "queue_dropped_500": 1,
            "queue_dropped_4500": 2, "oversize": 4}});
        let text = status(&st);
        assert!(
            text.contains(
                "IKE_SA_INIT limits: 1024 half-open, 5 per source, 10/s (burst 20) per source; \
                 dropped: 0 half-open, 3 blocked, 9 rate (0 evictions)\n\
                 IKE input dropped: 1 queue full (port 500), 2 queue full (port 4500), 4 oversize\n"
            ),
            "{text}"
        );
        let mut off = st.clone();
        off["ike"]["block_threshold"] = 0.into();
        off["ike"]["init_rate"] = 0.into();
        let text = status(&off);
        assert!(
            text.contains("1024 half-open, no limit per source, no rate limit;"),
            "{text}"
        );
    }

    #[test]
    fn a_clone_says_where_it_came_from() {
        let st = serde_json::json!({"ike_sas": [
            {"name": "home", "id": 1, "state": "ESTABLISHED"},
            {"name": "home", "id": 2, "state": "ESTABLISHED", "cloned_from": 1}]});
        let text = status(&st);
        assert_eq!(text.matches("cloned from").count(), 1, "{text}");
        assert!(text.contains("home: #2, ESTABLISHED"), "{text}");
        assert!(text.contains("  cloned from #1 (RFC 7791)\n"), "{text}");
    }

    #[test]
    fn mif_lines_show_interfaces_and_paths() {
        let st = serde_json::json!({"ike_sas": [{"name": "mif", "state": "ESTABLISHED",
            "mif": {"in_use": true, "local_generation": 2, "peer_generation": 1,
                "operations": 3, "refused": 1,
                "local_interfaces": [{"id": 1, "name": "c1", "address": "198.18.1.2:4500",
                    "priority": 0, "role": "active"}],
                "peer_interfaces": []},
            "children": [{"name": "net", "sa": "mif-net-c1000001", "state": "INSTALLED",
                "mif": {"policy": "aggregate", "reorder": true, "handover_pending": false,
                    "paths": [{"name": "i1r1", "interface": "c1", "local": "198.18.1.2:4500",
                        "remote": "198.18.101.1:4500", "role": "active", "state": "up",
                        "rx_packets": 10, "tx_packets": 12, "rtt_ms": 0.214, "loss_pct": 0.0}]}}]}]});
        let text = status(&st);
        assert!(
            text.contains(
                "  MIF in use, ours (generation 2): 1 c1 198.18.1.2:4500 prio 0 active\n  \
                 peer's (generation 1): -; operations 3, 1 refused\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "    MIF policy aggregate, reorder, 1 paths\n      i1r1 c1 198.18.1.2:4500 -> \
                 198.18.101.1:4500  active  up  rx 10 tx 12  rtt 0.21 ms  loss 0.0%\n"
            ),
            "{text}"
        );
        let off = serde_json::json!({"ike_sas": [{"name": "x", "state": "ESTABLISHED", "mif": null,
            "children": [{"name": "c", "mif": null}]}]});
        assert!(!status(&off).contains("MIF"));
    }

    #[test]
    fn mobike_lines_show_addresses_and_moves() {
        let ike = serde_json::json!({"ike_sas": [{"name": "home", "state": "ESTABLISHED",
            "mobike": true, "local_addrs": ["198.18.2.2"], "peer_addrs": [],
            "moves": 2, "moves_by_reason": {"peer-update": 1, "peer-update-verified": 1},
            "last_move": "peer-update", "last_move_s": 3, "route_checks_passed": 1,
            "route_checks_failed": 0, "updates_refused": 0, "updates_stale": 0,
            "route_check": "198.18.3.1:4500"}]});
        let text = status(&ike);
        assert!(
            text.contains("  MOBIKE, other local addresses [198.18.2.2], peer's []\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "  moves 2 (peer-update 1, peer-update-verified 1), last peer-update 3s ago; \
                 route checks 1 passed, 0 failed; updates 0 refused, 0 stale\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("route check of 198.18.3.1:4500 under way"),
            "{text}"
        );
        let quiet = serde_json::json!({"ike_sas": [{"name": "home", "state": "ESTABLISHED",
            "mobike": true, "moves": 0}]});
        let text = status(&quiet);
        assert!(text.contains("  MOBIKE, other local addresses [], peer's []\n"));
        assert!(!text.contains("moves"), "{text}");
        let off = serde_json::json!({"ike_sas": [{"name": "home", "state": "ESTABLISHED"}]});
        assert!(!status(&off).contains("MOBIKE"));
    }

    #[test]
    fn ike_fragments_line_only_when_fragments_moved() {
        let ike = |sent: u64| {
            serde_json::json!({"ike_sas": [{"name": "home", "state": "ESTABLISHED",
                "fragments_sent": sent, "fragments_received": 2, "fragments_dropped": 1}]})
        };
        let text = status(&ike(4));
        assert!(
            text.contains("  IKE fragments: 4 sent, 2 received, 1 dropped\n"),
            "{text}"
        );
        let none = serde_json::json!({"ike_sas": [{"name": "home", "state": "ESTABLISHED",
            "fragments_sent": 0, "fragments_received": 0, "fragments_dropped": 0}]});
        assert!(!status(&none).contains("IKE fragments"));
    }

    #[test]
    fn units() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1000), "1.0 kB");
        assert_eq!(bytes(1_612_345), "1.6 MB");
        assert_eq!(bytes(999_999), "1.0 MB");
        assert_eq!(bytes(3_000_000_000), "3.0 GB");
        assert_eq!(uptime(59.9), "59s");
        assert_eq!(uptime(3599.0), "59m59s");
        assert_eq!(uptime(7500.0), "2h05m");
        assert_eq!(uptime(90_000.0), "1d01h");
    }

    #[test]
    fn configured_interfaces_and_the_monitor() {
        let st = serde_json::json!({
            "configured_interfaces": [
                {"name": "link1", "device": "veth-c1", "kind": "fixed", "addresses": [
                    {"address": "198.18.9.2", "port": 4500, "socket": "open", "engine_interface": "link1"}]},
                {"name": "wan", "device": "veth-c2", "kind": "followed", "device_present": true,
                 "device_up": true, "addresses": [
                    {"address": "198.18.1.2", "port": 4500, "socket": "open", "engine_interface": "wan"},
                    {"address": "198.18.3.2", "port": 4500, "socket": "open", "engine_interface": "wan.2"},
                    {"address": "198.18.4.2", "port": 4500, "socket": "closed", "error": "interface wan.3 exists"}]},
                {"name": "lte", "device": "wwan0", "kind": "followed", "device_present": false,
                 "device_up": false, "addresses": []}
            ],
            "netlink": {"messages": 42, "parse_errors": 0, "resyncs": 0, "windows": 3,
                        "flaps_absorbed": 1, "sockets_opened": 3, "sockets_closed": 1, "open_failures": 0}
        });
        let mut out = String::new();
        configured_interfaces(&mut out, &st);
        assert_eq!(
            out,
            "  link1 on veth-c1: fixed 198.18.9.2 (socket open)\n\
             \x20 wan on veth-c2 (up, followed): 198.18.1.2 (socket open), 198.18.3.2 (socket open as wan.2), 198.18.4.2 (no socket: interface wan.3 exists)\n\
             \x20 lte on wwan0 (absent, followed): no address\n\
             netlink: 42 messages, 0 parse errors, 0 resyncs; 3 changes, 1 flap absorbed; sockets opened 3, closed 1, refused 0\n"
        );
    }
}
