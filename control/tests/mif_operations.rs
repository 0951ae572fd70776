//! The multi-interface extension's operations between two mifsec daemons in the
//! multi-interface lab (`mifsec_testkit::mif`), each under a UDP stream over the children
//! and each counted on the wire (a capture in the client's namespace, read by tshark):
//!
//! - ADD_INTERFACE and REMOVE_INTERFACE of c2 for every child, one INFORMATIONAL each, the
//!   stream losing nothing; after the ADD, c2 carries traffic (policy aggregate);
//! - HARD_HANDOVER from c1 to c2 after c1's address was deleted: traffic back on c2;
//! - SET_ALTERNATES: c2 as every child's alternate takes the traffic while c1 is silently
//!   blackholed in the middle, and hands it back once c1 answers again;
//!
//! CHECK refused, with both sides' full `status --json` compared, is mif_check.rs.
//!
//! The figures (time from the exchange's response to traffic on the new interface, losses)
//! are printed for the closing note; what is asserted is what happened.
//!
//! Needs root (namespaces, TUN, tcpdump, tshark). The lab's interfaces are fixed
//! (`[interfaces.c1] address = ...`): the daemon does not watch a fixed address, so deleting
//! it starts no automatic operation; the `ctl mif` HARD_HANDOVER away from the IKE SA's
//! interface is sent with MOVE_IKE from c2 (PROTOCOL 5.1), and answered.

use std::time::Duration;

use mifsec_testkit::capture::{self, Capture, Counted, INFORMATIONAL, IkeMessage};
use mifsec_testkit::mif::{CLIENT_LINKS, MifLab, Side, loadavg, local_is, sa_paths, tx_from};
use mifsec_testkit::roam::unix_now;
use mifsec_testkit::stream::{Stream, mif_plan};
use mifsec_testkit::{WAIT, poll, require_root};

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
const CHILDREN: usize = 4;
/// The stream is one way: no MOBIKE liveness checks (they are INFORMATIONALs too).
const CLIENT_CONN: &str = "mif = true\npath_check_delay = \"0\"";
const GATEWAY_CONN: &str = "mif = true";
const C1: &str = CLIENT_LINKS[0].addr;
const C2: &str = CLIENT_LINKS[1].addr;

fn lab_with(tag: &str, child: &str, gw_child: &str) -> MifLab {
    let mut lab = MifLab::new(tag, BIN, CHILDREN);
    lab.start_pair_with(CHILDREN, CLIENT_CONN, child, GATEWAY_CONN, gw_child);
    lab
}

/// The INFORMATIONAL response of the first exchange the client started at or after `t0`.
fn response_after(msgs: &[IkeMessage], t0: f64) -> f64 {
    let req = msgs
        .iter()
        .find(|m| {
            m.at >= t0
                && m.exchange == INFORMATIONAL
                && !m.response
                && m.src.starts_with("198.18.3")
        })
        .unwrap_or_else(|| panic!("no request after {t0}:\n{}", capture::listing(msgs)));
    msgs.iter()
        .find(|m| m.at >= req.at && m.response && m.message_id == req.message_id)
        .unwrap_or_else(|| panic!("no response:\n{}", capture::listing(msgs)))
        .at
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn add_and_remove_an_interface_under_traffic() {
    require_root();
    let lab = lab_with("addrm", "policy = \"aggregate\"", "");
    lab.ctl_mif(&["remove", "c2", "--all"]);
    let mut cap = Capture::start(&lab.cl_ns, &lab.dir.join("addrm.pcap"));
    let stream = Stream::start(
        &lab.cl_ns,
        &lab.gw_ns,
        mif_plan(CHILDREN, 2000, Duration::from_secs(6)),
    );
    lab.wait_link_carries(Side::Client, 0, 100, "the stream on c1 first");
    let st = lab.status_json("cl");
    assert!(
        !sa_paths(&st).any(|(_, p)| local_is(p, C2)),
        "no path from c2 after the REMOVE: {st:#}"
    );

    let t_add = unix_now();
    eprintln!("ctl mif add: {}", lab.ctl_mif(&["add", "c2", "--all"]));
    poll(
        WAIT,
        Duration::from_millis(10),
        || {
            let st = lab.status_json("cl");
            if tx_from(&st, C2) > 20 {
                Ok(())
            } else {
                Err(st)
            }
        },
        |st| format!("no traffic from c2 after the ADD: {st:#}\n{}", lab.dump()),
    );
    // c2 carries for a while beside c1.
    std::thread::sleep(Duration::from_millis(800));
    let t_rm = unix_now();
    eprintln!(
        "ctl mif remove: {}",
        lab.ctl_mif(&["remove", "c2", "--all"])
    );
    let st0 = lab.status_json("cl");
    assert!(
        !sa_paths(&st0).any(|(_, p)| local_is(p, C2)),
        "no path from c2 after the REMOVE: {st0:#}"
    );
    let r = stream.join();
    let t_end = unix_now();
    let msgs = cap.stop();
    let listing = capture::listing(&msgs);
    let add_done = response_after(&msgs, t_add);
    let one = Counted {
        requests: 1,
        responses: 1,
    };
    assert_eq!(
        capture::count(&msgs, INFORMATIONAL, t_add, t_rm),
        one,
        "ADD in one exchange:\n{listing}"
    );
    assert_eq!(
        capture::count(&msgs, INFORMATIONAL, t_rm, t_end),
        one,
        "REMOVE in one exchange:\n{listing}"
    );
    let data = capture::data_from(&cap.path, C2, add_done, 8);
    eprintln!(
        "ADD_INTERFACE c2 for {CHILDREN} children: exchange done {:.1} ms after ctl, traffic on \
         c2 {:?} ms after the response; stream {}; load {}",
        (add_done - t_add) * 1000.0,
        data.map(|d| ((d - add_done) * 10_000.0).round() / 10.0),
        r.recv.to_json(),
        loadavg()
    );
    assert!(data.is_some(), "data from c2 on the wire after the ADD");
    assert_eq!(r.recv.no_end_marker, 0, "{}", r.recv.to_json());
    assert_eq!(r.recv.lost(), 0, "{}", r.recv.to_json());
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn hard_handover_after_the_active_address_is_deleted() {
    require_root();
    let lab = lab_with("hard", "", "");
    lab.ctl_mif(&["remove", "c2", "--all"]);
    let mut cap = Capture::start(&lab.cl_ns, &lab.dir.join("hard.pcap"));
    let stream = Stream::start(
        &lab.cl_ns,
        &lab.gw_ns,
        mif_plan(CHILDREN, 1000, Duration::from_secs(6)),
    );
    lab.wait_link_carries(Side::Client, 0, 50, "the stream on c1 first");
    let t_del = unix_now();
    lab.delete_address(Side::Client, 0);
    let said = lab.ctl_mif(&["hard-handover", "c1", "c2", "--all"]);
    eprintln!("ctl mif hard-handover: {said}");
    let back = poll(
        WAIT,
        Duration::from_millis(5),
        || {
            let st = lab.status_json("cl");
            if tx_from(&st, C2) > 10 {
                Ok(unix_now())
            } else {
                Err(st)
            }
        },
        |st| {
            format!(
                "no traffic from c2 after the HARD_HANDOVER: {st:#}\n{}",
                lab.dump()
            )
        },
    );
    let r = stream.join();
    let msgs = cap.stop();
    let done = response_after(&msgs, t_del);
    let data = capture::data_from(&cap.path, C2, done, 5);
    eprintln!(
        "HARD_HANDOVER c1 -> c2 after c1's address went: traffic from c2 {:.1} ms after the \
         deletion (status), on the wire {:?} ms after the response; stream {}; load {}",
        (back - t_del) * 1000.0,
        data.map(|d| ((d - done) * 10_000.0).round() / 10.0),
        r.recv.to_json(),
        loadavg()
    );
    assert!(r.recv.last_at > back, "the stream got through afterwards");
    // One exchange, its request from c2 (MOVE_IKE: c1 cannot send any more), nothing else.
    let listing = capture::listing(&msgs);
    assert_eq!(
        capture::count(&msgs, INFORMATIONAL, t_del, done),
        Counted {
            requests: 1,
            responses: 1
        },
        "one INFORMATIONAL exchange for the HARD_HANDOVER:\n{listing}"
    );
    assert!(
        msgs.iter()
            .filter(|m| m.at >= t_del && m.at <= done)
            .all(|m| m.exchange == INFORMATIONAL && (m.src.starts_with(C2) || m.response)),
        "the request from c2, no other IKE message:\n{listing}"
    );
    let st = lab.status_json("cl");
    assert!(
        !sa_paths(&st).any(|(_, p)| local_is(p, C1)),
        "no path from c1 any more: {st:#}"
    );
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn an_alternate_takes_over_while_the_primary_is_blackholed_and_hands_back() {
    require_root();
    let lab = lab_with("alt", "", "");
    lab.ctl_mif(&["remove", "c2", "--all"]);
    lab.ctl_mif(&["alternates", "c2", "--all"]);
    let st = lab.status_json("cl");
    assert!(
        sa_paths(&st).any(|(_, p)| local_is(p, C2) && p["role"] != "active"),
        "c2 as a standby path: {st:#}"
    );
    let stream = Stream::start(
        &lab.cl_ns,
        &lab.gw_ns,
        mif_plan(CHILDREN, 1000, Duration::from_secs(8)),
    );
    lab.wait_link_carries(Side::Client, 0, 50, "the stream on c1 first");
    let t_bh = unix_now();
    lab.blackhole(Side::Client, 0);
    lab.wait_link_carries(
        Side::Client,
        1,
        50,
        "the alternate c2 while c1 is blackholed",
    );
    let t_over = unix_now();
    lab.unblackhole(Side::Client, 0);
    let t_back0 = unix_now();
    lab.wait_link_carries(Side::Client, 0, 50, "back on c1 once it answers again");
    let t_back = unix_now();
    let r = stream.join();
    eprintln!(
        "SET_ALTERNATES c2: c1 blackholed, c2 carried within {:.0} ms; c1 back, carrying again \
         within {:.0} ms; stream {}; load {}",
        (t_over - t_bh) * 1000.0,
        (t_back - t_back0) * 1000.0,
        r.recv.to_json(),
        loadavg()
    );
    assert!(r.recv.last_at > t_back, "the stream got through at the end");
}
