//! Issue 11's first bar between two mifsec daemons in the multi-interface lab
//! (`mifsec_testkit::mif`): 50 child SAs on one IKE SA with the extension in use, every child
//! first on the client's link 1 only (`ctl mif mif remove c2`), a 10,000 packets/s UDP
//! stream spread over the children, then `ctl mif mif soft-handover c1 c2 --all`. Asserted
//! from the capture in the client's namespace: exactly one INFORMATIONAL request and one
//! response between the command and the end of the stream (tshark's reading of the packets,
//! not our logs), no other IKE message; from the stream: no packet sent from the command
//! until a second after every child sends from c2 lost, none duplicated, and no drop by
//! either engine over the whole stream; from `status --json`: every child sends from c2 and
//! no longer from c1.
//!
//! A loss outside the handover's window with no engine drop is the shared machine stalling
//! (seen once at load 11: 4363 of 60000, every destination at once, about 4.5 s after the
//! handover had completed, while three runs with the handover lost 0); the test prints each
//! loss's time and both sides' engine and kernel counters so that a loss can be placed.
//!
//! Needs root (namespaces, TUN, tcpdump, tshark).

use std::time::Duration;

use mifsec_testkit::capture::{self, Capture, Counted, INFORMATIONAL};
use mifsec_testkit::mif::{CLIENT_LINKS, MifLab, Side, loadavg, sas_sending_from, tx_from};
use mifsec_testkit::roam::unix_now;
use mifsec_testkit::stream::{Stream, mif_plan};
use mifsec_testkit::{WAIT, poll, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
const CHILDREN: usize = 50;
/// The stream is one way: no liveness checks (they are INFORMATIONALs too).
const CLIENT_CONN: &str = "mif = true\npath_check_delay = \"0\"";
const GATEWAY_CONN: &str = "mif = true";

/// Where packets of the stream may go missing, as counted by the daemons and the kernels:
/// per side the engine's drops (global, and per SA summed by reason), the SAs' packets out
/// and in (data and probes), the TUN's kernel drops, and UDP receive buffer overflows.
fn counters(lab: &MifLab, side: &str, ns: &str) -> serde_json::Value {
    let st = lab.status_json(side);
    let mut sa_drops = std::collections::BTreeMap::<String, u64>::new();
    let (mut out, mut inp, mut dummies) = (0u64, 0u64, 0u64);
    for sa in st["sas"].as_array().into_iter().flatten() {
        out += sa["out_packets"].as_u64().unwrap_or(0);
        inp += sa["in_packets"].as_u64().unwrap_or(0);
        dummies += sa["in_dummies"].as_u64().unwrap_or(0);
        for (k, v) in sa["drops"].as_object().into_iter().flatten() {
            *sa_drops.entry(k.clone()).or_insert(0) += v.as_u64().unwrap_or(0);
        }
    }
    let (_, link) = mifsec_testkit::exec_in(ns, &["ip", "-s", "-j", "link", "show", "mifsec0"]);
    let tun: serde_json::Value = serde_json::from_str(&link).unwrap_or_default();
    let (_, snmp) = mifsec_testkit::exec_in(ns, &["cat", "/proc/net/snmp"]);
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    serde_json::json!({
        "drops": st["drops"],
        "sa_drops": sa_drops,
        "sa_out_packets": out,
        "sa_in_packets": inp,
        "sa_in_dummies": dummies,
        "tun_stats": tun[0]["stats64"],
        "udp": udp,
    })
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn soft_handover_of_fifty_children_in_one_exchange_loses_nothing() {
    require_root();
    let mut lab = MifLab::new("soft", BIN, CHILDREN);
    lab.start_pair(CHILDREN, CLIENT_CONN, "", GATEWAY_CONN);
    lab.wait_children("gw", CHILDREN);
    // The kernel's TUN queue (500 packets, 50 ms of this stream) overflows when the shared
    // machine starves the client's workers for longer; at load 11 to 17 every loss seen was
    // the client TUN's tx_dropped, no engine or SA drop. A deeper queue, as an operator of a
    // bursty source sets, keeps the test about the handover.
    for (side, ns) in [("cl", lab.cl_ns.clone()), ("gw", lab.gw_ns.clone())] {
        let st = lab.status_json(side);
        let tun = st["tun"].as_str().expect("tun in status");
        let out = std::process::Command::new("ip")
            .args(["-n", &ns, "link", "set", "dev", tun, "txqueuelen", "10000"])
            .output()
            .expect("ip");
        assert!(out.status.success(), "txqueuelen of {tun} in {ns}: {out:?}");
    }
    let (c1, c2) = (CLIENT_LINKS[0].addr, CLIENT_LINKS[1].addr);

    // Every child on c1 only.
    lab.ctl_mif(&["remove", "c2", "--all"]);
    let (cl0, gw0) = (
        counters(&lab, "cl", &lab.cl_ns),
        counters(&lab, "gw", &lab.gw_ns),
    );
    let mut cap = Capture::start(&lab.cl_ns, &lab.dir.join("soft.pcap"));
    let stream = Stream::start(
        &lab.cl_ns,
        &lab.gw_ns,
        mif_plan(CHILDREN, 10_000, Duration::from_secs(6)),
    );
    lab.wait_link_carries(Side::Client, 0, 500, "the stream on c1 first");
    let before = lab.status_json("cl");
    assert_eq!(
        tx_from(&before, c2),
        0,
        "nothing from c2 before the handover"
    );

    let t0 = unix_now();
    let said = lab.ctl_mif(&["soft-handover", "c1", "c2", "--all"]);
    eprintln!("ctl mif soft-handover: {said}");
    let moved = poll(
        WAIT,
        Duration::from_millis(5),
        || {
            let st = lab.status_json("cl");
            let n = sas_sending_from(&before, &st, c2);
            if n >= CHILDREN {
                Ok(unix_now())
            } else {
                Err(n)
            }
        },
        |n| format!("{n} of {CHILDREN} children send from {c2}\n{}", lab.dump()),
    );
    let r = stream.join();
    let t1 = unix_now();
    let msgs = cap.stop();
    let wire = capture::first_esp_from(&cap.path, c2, t0);
    eprintln!(
        "SOFT_HANDOVER of {CHILDREN} children at 10,000 pps: on the wire {:?}; all children \
         from {c2} after {:.1} ms (status), first ESP from it after {:?} ms (wire); stream: {}; \
         load {}",
        capture::tally(&msgs, t0, t1),
        (moved - t0) * 1000.0,
        wire.map(|w| ((w - t0) * 10_000.0).round() / 10.0),
        r.recv.to_json(),
        loadavg()
    );
    // Where any loss happened: each run's time after the handover's command (200 packets a
    // second per destination from the stream's first arrival), and the counters.
    let per_dest_rate = 10_000.0 / CHILDREN as f64;
    let runs: Vec<String> = r
        .recv
        .loss_runs
        .iter()
        .take(10)
        .map(|l| {
            format!(
                "dest {} seq {}+{} at {:+.0} ms",
                l.dest,
                l.first_seq,
                l.count,
                (r.recv.first_at + l.first_seq as f64 / per_dest_rate - t0) * 1000.0
            )
        })
        .collect();
    eprintln!(
        "loss runs (time from the command): {runs:?}\nclient before {cl0}\nclient after {}\n\
         gateway before {gw0}\ngateway after {}",
        counters(&lab, "cl", &lab.cl_ns),
        counters(&lab, "gw", &lab.gw_ns),
    );
    let listing = capture::listing(&msgs);
    assert_eq!(
        capture::count(&msgs, INFORMATIONAL, t0, t1),
        Counted {
            requests: 1,
            responses: 1
        },
        "one INFORMATIONAL exchange for the 50 children:\n{listing}"
    );
    let others = msgs
        .iter()
        .filter(|m| m.at >= t0 && m.at <= t1 && m.exchange != INFORMATIONAL)
        .count();
    assert_eq!(others, 0, "no other IKE message:\n{listing}");
    assert_eq!(r.recv.no_end_marker, 0, "{}", r.recv.to_json());
    // The handover loses nothing: no packet sent from the command until a second after
    // every child sends from c2 is lost (a lost packet's send time: the stream's first
    // arrival plus its sequence number over the per-destination rate), and neither engine
    // drops anything over the whole stream (no path, unknown SPI, send or TUN errors, any
    // SA drop: replay, selectors, authentication). A loss outside that window with no engine
    // drop is the shared machine stalling the stream (printed above with the kernel's TUN
    // and UDP counters), not the handover.
    let (lo, hi) = (t0 - 0.05, moved + 1.0);
    let in_window: u64 = r
        .recv
        .lost_per_seq
        .iter()
        .enumerate()
        .filter(|(seq, _)| {
            let at = r.recv.first_at + *seq as f64 / per_dest_rate;
            at >= lo && at <= hi
        })
        .map(|(_, n)| u64::from(*n))
        .sum();
    assert_eq!(
        in_window,
        0,
        "zero loss at the handover: {}",
        r.recv.to_json()
    );
    for (side, ns, was) in [("cl", &lab.cl_ns, &cl0), ("gw", &lab.gw_ns, &gw0)] {
        let now = counters(&lab, side, ns);
        for k in ["no_path", "unknown_spi", "send_errors", "tun_errors"] {
            assert_eq!(
                now["drops"][k], was["drops"][k],
                "{side}: engine drops {k} during the stream: {was} -> {now}"
            );
        }
        assert_eq!(
            now["sa_drops"], was["sa_drops"],
            "{side}: SA drops during the stream: {was} -> {now}"
        );
    }
    if r.recv.lost() > 0 {
        eprintln!(
            "NOTE: {} lost outside the handover's window (no engine drop): the machine",
            r.recv.lost()
        );
    }
    assert_eq!(r.recv.duplicates, 0, "{}", r.recv.to_json());

    // Afterwards nothing leaves from c1: two statuses a ping apart.
    lab.assert_sends_only_from(c2, c1, "after the handover");
}
