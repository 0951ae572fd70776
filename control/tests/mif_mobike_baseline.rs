//! The standard-means baseline of issue 11's first bar, between two mifsec daemons in the
//! multi-interface lab (`mifsec_testkit::mif`): 50 child SAs on one IKE SA, a 10,000
//! packets/s UDP stream spread over them, and the whole IKE SA moved to the client's second
//! link with MOBIKE (`mifsec ctl move mif --local C2`, UPDATE_SA_ADDRESSES; `mif = false` on
//! both peers: standard means only). Asserted: the
//! children all follow to link 2 (the engine's per-path counters grow there), the stream
//! gets through afterwards, and the capture in the client's namespace shows the move's
//! INFORMATIONAL exchange(s) on the wire and no CREATE_CHILD_SA (no child is rekeyed). The
//! figures (exchanges, time to traffic on the new path, packets lost) are printed;
//! scripts/bench_mif.py records them.
//!
//! Needs root (namespaces, TUN, tcpdump, tshark).

use std::time::Duration;

use mifsec_testkit::capture::{self, Capture, INFORMATIONAL};
use mifsec_testkit::mif::{CLIENT_LINKS, MifLab, Side, loadavg, sas_sending_from, tx_from};
use mifsec_testkit::roam::unix_now;
use mifsec_testkit::stream::{Stream, mif_plan};
use mifsec_testkit::{WAIT, poll, require_root, text};

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
const CHILDREN: usize = 50;
/// Standard means only (`mif = false`: with the extension MOBIKE would move the IKE SA
/// alone), and no liveness checks: the stream is one way, and the checks it would cause (an
/// INFORMATIONAL every 400 ms) are not the move.
const CLIENT_CONN: &str = "mif = false\npath_check_delay = \"0\"";

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn mobike_moves_fifty_children_to_the_second_link() {
    require_root();
    let mut lab = MifLab::new("mob", BIN, CHILDREN);
    lab.start_pair(CHILDREN, CLIENT_CONN, "", "mif = false");
    lab.wait_children("gw", CHILDREN);
    let mut cap = Capture::start(&lab.cl_ns, &lab.dir.join("move.pcap"));

    let stream = Stream::start(
        &lab.cl_ns,
        &lab.gw_ns,
        mif_plan(CHILDREN, 10_000, Duration::from_secs(6)),
    );
    lab.wait_link_carries(Side::Client, 0, 500, "the stream on link 1 first");
    let before = lab.status_json("cl");
    let (c2, c1) = (CLIENT_LINKS[1].addr, CLIENT_LINKS[0].addr);
    let t0 = unix_now();
    let out = lab.mifsec("cl", &["ctl", "move", "mif", "--local", c2]);
    assert!(out.status.success(), "ctl move: {}", text(&out));
    let base = tx_from(&before, c2);
    let moved = poll(
        WAIT,
        Duration::from_millis(5),
        || {
            let st = lab.status_json("cl");
            if tx_from(&st, c2) > base + 50 {
                Ok(unix_now())
            } else {
                Err(st)
            }
        },
        |st| {
            format!(
                "no traffic from {c2} after ctl move: {st:#}\n{}",
                lab.dump()
            )
        },
    );
    // Every child follows.
    poll(
        WAIT,
        Duration::from_millis(50),
        || {
            let st = lab.status_json("cl");
            let n = sas_sending_from(&before, &st, c2);
            if n >= CHILDREN { Ok(()) } else { Err(n) }
        },
        |n| format!("{n} of {CHILDREN} children send from {c2}\n{}", lab.dump()),
    );
    let r = stream.join();
    let t1 = unix_now();
    let msgs = cap.stop();
    let wire = capture::first_esp_from(&cap.path, c2, t0);
    let info = capture::count(&msgs, INFORMATIONAL, t0, t1);
    let tally = capture::tally(&msgs, t0, t1);
    eprintln!(
        "MOBIKE move of {CHILDREN} children at 10,000 pps: exchanges on the wire {tally:?}; \
         traffic from {c2} after {:.1} ms (status), first ESP from it on the wire after {:?} ms; stream: {}; load {}",
        (moved - t0) * 1000.0,
        wire.map(|w| ((w - t0) * 1000.0 * 10.0).round() / 10.0),
        r.recv.to_json(),
        loadavg()
    );
    assert!(
        info.requests >= 1 && info.responses >= 1,
        "the move's INFORMATIONAL on the wire:\n{}",
        capture::listing(&msgs)
    );
    assert_eq!(
        capture::count(&msgs, capture::CREATE_CHILD_SA, t0, t1),
        capture::Counted::default(),
        "no child rekeyed by the move:\n{}",
        capture::listing(&msgs)
    );
    // The stream got through after the move: its last packets arrived.
    assert!(r.recv.last_at > moved, "{}", r.recv.to_json());
    assert_eq!(r.recv.no_end_marker, 0, "{}", r.recv.to_json());
    let st = lab.status_json("cl");
    let ike = &st["ike_sas"][0];
    assert!(
        ike["local"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("{c2}:"))),
        "{ike:#}"
    );
    assert!(wire.is_some(), "ESP from {c2} on the wire");
    // Nothing is sent from link 1 any more: the whole IKE SA moved (the stream has ended;
    // a ping through child 0 goes from link 2).
    lab.assert_sends_only_from(c2, c1, "after the move");
}
