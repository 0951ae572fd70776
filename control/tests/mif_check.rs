//! The bar "CHECK refused: both sides' `status --json` identical before and after" (issue
//! 11), on the whole `status --json` of both daemons, not on a projection of it.
//!
//! Two mifsec daemons in the multi-interface lab (`mifsec_testkit::mif`), two children;
//! the gateway's child has `mif_accept = false`, so a CHECK of c2 is answered NOT_ALLOWED
//! for every child. To make the status stand still by itself, the lab is quiet: no traffic,
//! the engine's liveness probes every 60 s (`probe_interval_ms = 60000`, with
//! `dead_after_ms` and `keepalive_s` far beyond the test) instead of every 50 ms, so that
//! after the paths' first probes (return routability at install, then the first probe
//! tick) no packet counter, RTT, loss or rate moves, and no MOBIKE path checks or DPD.
//!
//! What still changes with time alone is the clock: `uptime_s` and the paths' `last_rx_s`
//! (floats, always) and `ike_sas[].established_s` / `rekey_in_s` (whole seconds, when a
//! second boundary passes).
//! A control pair of snapshots of each side with no operation in between proves it: the
//! test waits (deadline) until two snapshots 300 ms apart differ in those fields only, and
//! in nothing else. Then the refused CHECK, and both sides' full statuses before and after
//! must differ only in those clock fields (each moved forward by no more than the time
//! between the snapshots plus 2 s: the whole seconds come with the IKE status, published at
//! least once a second), in the operator's count of INFORMATIONAL messages received and
//! sent (`ike.counters.messages`, one each way on both sides: the CHECK's exchange) and, on
//! the client, in `ike_sas[0].mif.operations`, the count of operations it sent, which goes
//! up by exactly one: the CHECK is recorded as sent. The gateway's status is identical but
//! for those. Needs root.

use std::time::{Duration, Instant};

use mifsec_testkit::capture::{self, Capture, Counted, INFORMATIONAL};
use mifsec_testkit::mif::MifLab;
use mifsec_testkit::roam::unix_now;
use mifsec_testkit::{WAIT, poll, require_root, text};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
const CHILDREN: usize = 2;
/// Probes once a minute; nothing declared dead or kept alive within the test.
const QUIET: &str =
    "workers = 1\nprobe_interval_ms = 60000\ndead_after_ms = 600000\nkeepalive_s = 3600";
/// The fields that move with the clock alone (their last JSON pointer segment).
const CLOCK: [&str; 4] = ["uptime_s", "established_s", "rekey_in_s", "last_rx_s"];

/// The operator's counters of the CHECK's one exchange: each side sends one INFORMATIONAL
/// message and receives one.
const EXCHANGE: [&str; 2] = [
    "/ike/counters/messages/INFORMATIONAL/received",
    "/ike/counters/messages/INFORMATIONAL/sent",
];

/// `d` without the counters of the CHECK's exchange, each of which must have gone up by
/// exactly one from `a` to `b`.
fn without_the_exchange(mut d: Vec<String>, a: &Value, b: &Value) -> Vec<String> {
    for p in EXCHANGE {
        assert_eq!(
            b.pointer(p).and_then(Value::as_u64),
            a.pointer(p).and_then(Value::as_u64).map(|n| n + 1),
            "{p}: one INFORMATIONAL message each way"
        );
    }
    d.retain(|p| !EXCHANGE.contains(&p.as_str()));
    d
}

/// The JSON pointers where `a` and `b` differ (leaves, or a whole array of another length).
fn diffs(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for k in x.keys().chain(y.keys().filter(|k| !x.contains_key(*k))) {
                let (va, vb) = (
                    x.get(k).unwrap_or(&Value::Null),
                    y.get(k).unwrap_or(&Value::Null),
                );
                diffs(va, vb, &format!("{at}/{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diffs(va, vb, &format!("{at}/{i}"), out);
            }
        }
        _ if a != b => out.push(at.to_owned()),
        _ => {}
    }
}

fn is_clock(pointer: &str) -> bool {
    CLOCK.iter().any(|c| pointer.rsplit('/').next() == Some(c))
}

/// Two snapshots of `side` `gap` apart that differ in clock fields only (the lab is quiet);
/// returns the second.
fn quiet(lab: &MifLab, side: &str) -> Value {
    poll(
        WAIT,
        Duration::from_millis(10),
        || {
            let a = lab.status_json(side);
            std::thread::sleep(Duration::from_millis(300)); // the control pair's interval
            let b = lab.status_json(side);
            let mut d = Vec::new();
            diffs(&a, &b, "", &mut d);
            d.retain(|p| !is_clock(p));
            if d.is_empty() { Ok(b) } else { Err(d) }
        },
        |d| {
            format!(
                "{side}: the status still moves by itself in {d:?}\n{}",
                lab.dump()
            )
        },
    )
}

/// `b` against `a`: every clock field moved forward by at most `elapsed` (plus two seconds:
/// the whole-second ones are published with the IKE status), then the pointers where they
/// differ otherwise.
fn compare(a: &Value, b: &Value, elapsed: Duration) -> Vec<String> {
    let mut d = Vec::new();
    diffs(a, b, "", &mut d);
    for p in d.iter().filter(|p| is_clock(p)) {
        let (x, y) = (
            a.pointer(p).and_then(Value::as_f64),
            b.pointer(p).and_then(Value::as_f64),
        );
        let step = match (x, y) {
            (Some(x), Some(y)) if p.ends_with("rekey_in_s") => x - y,
            (Some(x), Some(y)) => y - x,
            _ => panic!("{p}: {x:?} -> {y:?}"),
        };
        // The IKE SAs' whole seconds are published with their status (at least once a
        // second, `PUBLISH_EVERY`): up to a second stale, plus the rounding.
        assert!(
            step >= 0.0 && step <= elapsed.as_secs_f64() + 2.0,
            "{p} moved by {step} in {elapsed:?}"
        );
    }
    d.retain(|p| !is_clock(p));
    d
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn a_refused_check_leaves_both_full_statuses_identical() {
    require_root();
    let mut lab = MifLab::new("chkf", BIN, CHILDREN);
    let gw = lab
        .gateway_config("mif = true", "mif_accept = false")
        .replacen("workers = 1", QUIET, 1);
    let cl = lab
        .client_config(CHILDREN, "mif = true\npath_check_delay = \"0\"", "")
        .replacen("workers = 1", QUIET, 1);
    assert!(gw.contains("probe_interval_ms") && cl.contains("probe_interval_ms"));
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_mifsec("gw", &gw_ns, &gw);
    lab.start_mifsec("cl", &cl_ns, &cl);
    lab.wait_children("cl", CHILDREN);
    lab.wait_children("gw", CHILDREN);
    // Every path verified (up) before the statuses are taken.
    poll(
        WAIT,
        Duration::from_millis(20),
        || {
            let st = lab.status_json("cl");
            let up = mifsec_testkit::mif::sa_paths(&st).all(|(_, p)| p["state"] == "up");
            if up { Ok(()) } else { Err(st) }
        },
        |st| format!("the client's paths up: {st:#}"),
    );

    // The control pairs: the status of each side stands still but for the clock.
    let t0 = Instant::now();
    let gw0 = quiet(&lab, "gw");
    let t1 = Instant::now();
    let cl0 = quiet(&lab, "cl");

    let mut cap = Capture::start(&lab.cl_ns, &lab.dir.join("check.pcap"));
    let ts = unix_now();
    let out = lab.mifsec("cl", &["ctl", "mif", "mif", "check", "c2", "--all"]);
    let said = text(&out);
    eprintln!("ctl mif check (refused): {said}");
    assert!(out.status.success(), "{said}");
    assert_eq!(
        said.matches("not-allowed").count(),
        CHILDREN,
        "refused per child, with the reason: {said}"
    );
    let cl1 = lab.status_json("cl");
    let t2 = Instant::now();
    let gw1 = lab.status_json("gw");
    let t3 = Instant::now();
    let msgs = cap.stop();
    assert_eq!(
        capture::count(&msgs, INFORMATIONAL, ts, unix_now()),
        Counted {
            requests: 1,
            responses: 1
        },
        "the CHECK was one exchange:\n{}",
        capture::listing(&msgs)
    );

    let gw_diff = without_the_exchange(compare(&gw0, &gw1, t3 - t0), &gw0, &gw1);
    assert!(
        gw_diff.is_empty(),
        "the gateway's status changed in {gw_diff:?}: before {gw0:#}\nafter {gw1:#}"
    );
    let cl_diff = without_the_exchange(compare(&cl0, &cl1, t2 - t1), &cl0, &cl1);
    let ops = "/ike_sas/0/mif/operations";
    assert_eq!(
        cl_diff,
        vec![ops.to_owned()],
        "the client's status changed in {cl_diff:?} (only the count of operations sent may): \
         before {cl0:#}\nafter {cl1:#}"
    );
    assert_eq!(
        cl1.pointer(ops).and_then(Value::as_u64),
        cl0.pointer(ops).and_then(Value::as_u64).map(|n| n + 1),
        "the CHECK counted once as an operation sent"
    );
    eprintln!(
        "CHECK refused: gateway status identical but for {CLOCK:?}; client identical but for \
         {CLOCK:?} and {ops} (+1)"
    );
}
