//! The daemon's side of the multi-interface extension between two mifsec daemons in the
//! multi-interface lab (`mifsec_testkit::mif`: two links per side, every pair a path):
//!
//! * a child SA comes up with m x n = 4 paths on both sides (`status --json`:
//!   `ike_sas[].children[].mif.paths`), and a ping through it is carried on a verified path;
//! * `ctl mif mif remove / add / soft-handover / hard-handover` under a UDP stream, each one
//!   INFORMATIONAL exchange on the wire (capture), both sides' paths as PROTOCOL 4.2 says
//!   afterwards, the stream still getting through;
//! * `--check` (dry runs) and CHECK leave both sides' `status --json` identical, where
//!   "identical" is everything but the figures that move by themselves ([`shape`]: packet
//!   and byte counters, RTTs, loss, path liveness, ages and uptimes, and the count of
//!   operations answered): SAs, SPIs, policies, paths with their interfaces, addresses
//!   and roles, announced interfaces and generations, and the engine's table swaps.
//!
//! Needs root (namespaces, TUN, tcpdump, tshark).

use std::time::Duration;

use mifsec_testkit::capture::{self, Capture, INFORMATIONAL};
use mifsec_testkit::mif::{MifLab, Side, our_id, pairs, peer_ids, tx_on_path};
use mifsec_testkit::roam::unix_now;
use mifsec_testkit::stream::{Stream, mif_plan};
use mifsec_testkit::{Follower, require_root};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
/// The extension on both sides; no MOBIKE path checks (the stream is one way).
const CONN: &str = "mif = true\npath_check_delay = \"0\"";
const GW_CONN: &str = "mif = true";
const CHILDREN: usize = 2;

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn children_over_every_pair_and_each_operation_in_one_exchange() {
    require_root();
    let mut lab = MifLab::new("mfd", BIN, CHILDREN);
    lab.start_pair(CHILDREN, CONN, "", GW_CONN);
    lab.wait_children("gw", CHILDREN);
    let st = lab.status_json("cl");
    let ike = &st["ike_sas"][0];
    assert_eq!(ike["mif"]["in_use"], true, "{ike:#}");
    let (c1, c2) = (our_id(ike, "c1"), our_id(ike, "c2"));
    let r = peer_ids(ike);
    assert_eq!(r.len(), 2, "the gateway's two interfaces: {ike:#}");
    let all = pairs(&[c1, c2], &r);
    let st_cl = lab.wait_paths("cl", CHILDREN, &all, "m x n paths on the client");
    let st_gw = lab.wait_paths("gw", CHILDREN, &all, "m x n paths on the gateway");
    // The gateway sees the client's interfaces as the client announced them.
    let gw_ike = &st_gw["ike_sas"][0];
    assert_eq!(
        gw_ike["mif"]["peer_interfaces"], st_cl["ike_sas"][0]["mif"]["local_interfaces"],
        "{gw_ike:#}"
    );
    // A ping through child 0 goes over a verified path.
    let before = lab.status_json("cl");
    let (ok, out) = lab.ping(0);
    assert!(ok, "ping through child 0: {out}\n{}", lab.dump());
    let after = lab.status_json("cl");
    let used: Vec<&String> = all
        .iter()
        .filter(|p| tx_on_path(&after, p) > tx_on_path(&before, p))
        .collect();
    assert!(!used.is_empty(), "the ping went on no MIF path: {after:#}");
    for c in after["ike_sas"][0]["children"].as_array().unwrap() {
        for p in c["mif"]["paths"].as_array().unwrap() {
            if used.iter().any(|u| **u == p["name"]) && p["tx_packets"].as_u64() > Some(0) {
                assert_ne!(
                    p["state"], "unverified",
                    "sent on an unverified path: {p:#}"
                );
            }
        }
    }

    // Each operation under a stream, one exchange on the wire, both sides afterwards.
    let mut cap = Capture::start(&lab.cl_ns, &lab.dir.join("ops.pcap"));
    let stream = Stream::start(
        &lab.cl_ns,
        &lab.gw_ns,
        mif_plan(CHILDREN, 500, Duration::from_secs(20)),
    );
    lab.wait_link_carries(Side::Client, 0, 20, "the stream on link 1 first");
    let steps: [(&[&str], Vec<String>); 4] = [
        (&["remove", "c2"], pairs(&[c1], &r)),
        // Onto paths that do not exist yet: they are added, and the c1 paths leave once
        // one of them answers (the engine's wait).
        (&["soft-handover", "c1", "c2"], pairs(&[c2], &r)),
        (&["add", "c1"], pairs(&[c2, c1], &r)),
        (&["hard-handover", "c2", "c1"], pairs(&[c1], &r)),
    ];
    // The events the operations make, the engine's end of each soft move among them.
    let events = Follower::spawn(BIN, &lab.sock("cl"), &["events", "--json"]);
    let needle = format!(" pid {} follows the events", events.pid());
    mifsec_testkit::wait_until(mifsec_testkit::WAIT, "the events follower", || {
        lab.log("cl").contains(&needle)
    });
    let mut report = Vec::new();
    for (args, want) in steps {
        let mark = events.mark();
        let swaps = |side: &str| lab.status_json(side)["table_swaps"].as_u64().unwrap();
        let (s_cl, s_gw) = (swaps("cl"), swaps("gw"));
        let t0 = unix_now();
        let answer = lab.ctl_mif(args);
        assert!(
            answer.contains(": applied,") && !answer.contains("no answer"),
            "{args:?}: {answer}"
        );
        lab.wait_paths("cl", CHILDREN, &want, &format!("{args:?} on the client"));
        lab.wait_paths("gw", CHILDREN, &want, &format!("{args:?} on the gateway"));
        let t1 = unix_now();
        let msgs = cap.so_far();
        let info = capture::count(&msgs, INFORMATIONAL, t0, t1);
        assert_eq!(
            (info.requests, info.responses),
            (1, 1),
            "{args:?}: one INFORMATIONAL exchange:\n{}",
            capture::listing(&msgs)
        );
        if args[0] == "remove" {
            // Both children changed in one table swap on each side (nothing else swaps a
            // failover SA's table meanwhile).
            assert_eq!(
                (swaps("cl") - s_cl, swaps("gw") - s_gw),
                (1, 1),
                "one swap per side for both children\n{}",
                lab.dump()
            );
        }
        if args[0] == "soft-handover" {
            // Each child's wait in the engine ended with a c2 path up and the c1 paths gone:
            // one `soft-move-ended` per child.
            let (new, old) = (pairs(&[c2], &r), pairs(&[c1], &r));
            let mut sas = Vec::new();
            for _ in 0..CHILDREN {
                let skip = mark;
                let line = events.wait_line_after(skip, "soft-move-ended of another child", |l| {
                    let v: Value = serde_json::from_str(l).unwrap_or_default();
                    v["event"] == "soft-move-ended"
                        && !sas.contains(&v["sa"].as_str().unwrap_or("").to_owned())
                });
                let v: Value = serde_json::from_str(&line).unwrap();
                assert_eq!(v["removed"], true, "{v}");
                assert!(new.iter().any(|p| v["up"] == *p), "up is a c2 path: {v}");
                let gone: Vec<&str> = v["paths"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                assert!(
                    !gone.is_empty() && gone.iter().all(|p| old.iter().any(|o| o == p)),
                    "the c1 paths left: {v}"
                );
                assert!(v["time"].as_f64().unwrap() >= t0 - 1.0, "{v}");
                sas.push(v["sa"].as_str().unwrap().to_owned());
            }
        }
        report.push(format!("{} {:.0} ms", args[0], (t1 - t0) * 1000.0));
    }
    let r_stream = stream.join();
    cap.stop();
    eprintln!(
        "operations: {}; stream {}",
        report.join(", "),
        r_stream.recv.to_json()
    );
    assert!(r_stream.recv.received.iter().sum::<u64>() > 0);
    assert_eq!(
        r_stream.recv.no_end_marker,
        0,
        "{}",
        r_stream.recv.to_json()
    );
    // After the hard handover back, link 1 carries the traffic.
    lab.wait_link_carries(
        Side::Client,
        0,
        2,
        "a ping on link 1 after the hard handover",
    );
    let (ok, out) = lab.ping(0);
    assert!(ok, "ping after the operations: {out}");
}

/// What of a `status --json` a dry run must leave as it was (see the module's doc).
fn shape(st: &Value) -> Value {
    let arr = |v: &Value| v.as_array().cloned().unwrap_or_default();
    let pick = |v: &Value, keys: &[&str]| {
        Value::Object(
            keys.iter()
                .map(|k| ((*k).to_owned(), v[*k].clone()))
                .collect(),
        )
    };
    json!({
        "table_swaps": st["table_swaps"],
        "sas": arr(&st["sas"]).iter().map(|sa| json!({
            "sa": pick(sa, &["name", "spi_in", "spi_out", "policy", "local_ts", "remote_ts"]),
            "paths": arr(&sa["paths"]).iter()
                .map(|p| pick(p, &["name", "interface", "local", "remote", "role", "weight"]))
                .collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "ike_sas": arr(&st["ike_sas"]).iter().map(|ike| json!({
            "sa": pick(ike, &["name", "state", "spi_i", "spi_r", "local", "remote"]),
            "mif": pick(&ike["mif"], &["in_use", "local_interfaces", "peer_interfaces",
                "local_generation", "peer_generation"]),
            "children": arr(&ike["children"]).iter().map(|c| json!({
                "child": pick(c, &["name", "sa", "state", "spi_in", "spi_out", "local_ts", "remote_ts"]),
                "policy": c["mif"]["policy"],
                "pending": c["mif"]["handover_pending"],
                "paths": arr(&c["mif"]["paths"]).iter()
                    .map(|p| pick(p, &["name", "local_if", "remote_if", "interface", "local", "remote", "role"]))
                    .collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    })
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn dry_runs_and_checks_change_nothing_on_either_side() {
    require_root();
    let mut lab = MifLab::new("mfc", BIN, CHILDREN);
    lab.start_pair(CHILDREN, CONN, "", GW_CONN);
    lab.wait_children("gw", CHILDREN);
    let st = lab.status_json("cl");
    let ike = &st["ike_sas"][0];
    let (c1, c2) = (our_id(ike, "c1"), our_id(ike, "c2"));
    let all = pairs(&[c1, c2], &peer_ids(ike));
    lab.wait_paths("cl", CHILDREN, &all, "m x n paths on the client");
    lab.wait_paths("gw", CHILDREN, &all, "m x n paths on the gateway");
    let spi0 = st["ike_sas"][0]["children"][0]["spi_in"]
        .as_str()
        .unwrap()
        .to_owned();
    for args in [
        &["remove", "c2", "--check"][..],
        &["soft-handover", "c1", "c2", "--check"],
        &["hard-handover", "c1", "c2", "--check", "--spi", &spi0],
        &["alternates", "c2", "--check"],
        &["check", "c2"],
        &[
            "add",
            "c2",
            "--standby",
            "--check",
            "--ts",
            "10.50.0.0/24:10.60.0.0/24",
        ],
    ] {
        let (cl0, gw0) = (shape(&lab.status_json("cl")), shape(&lab.status_json("gw")));
        let answer = lab.ctl_mif(args);
        assert!(!answer.contains("no answer"), "{args:?}: {answer}");
        assert!(
            answer.contains("child SA "),
            "{args:?}: per child SA: {answer}"
        );
        // The answer is in when ctl returns; the status shows what is applied by then.
        let (cl1, gw1) = (shape(&lab.status_json("cl")), shape(&lab.status_json("gw")));
        assert_eq!(cl0, cl1, "{args:?} changed the client: {answer}");
        assert_eq!(gw0, gw1, "{args:?} changed the gateway: {answer}");
        eprintln!("{args:?}: {answer}");
    }
    // A selection of an SPI the peer does not know is answered per SA.
    let answer = lab.ctl_mif(&["check", "c2", "--spi", "deadbeef"]);
    assert!(answer.contains("child SA deadbeef: unknown-sa"), "{answer}");
}
