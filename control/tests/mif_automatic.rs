//! Automatic operation of the multi-interface extension (issue 11 item 7) between two
//! mifsec daemons in the multi-interface lab (`mifsec_testkit::mif`). The client's
//! interfaces follow their devices (`[interfaces.c1] device = "c1"`, no `address`: the
//! netlink monitor of daemon/interfaces.rs), c1 preferred (`priority = 0`) over c2
//! (`priority = 10`), with `mif_on_new = "add"` and `mif_prefer = true`; the gateway's are
//! fixed. Under a UDP stream over the children, with a capture in the client's namespace:
//!
//! 1. c2's address appears: the daemon announces it with ADD_INTERFACE for every child
//!    (the client's log: `MIF ADD_INTERFACE answered`), and every child gets paths from c2;
//! 2. c1's address (the active link's, and the IKE SA's) is deleted: REMOVE_INTERFACE with
//!    MOVE_IKE, sent from c2 (a loss with no new interface at the same time is a REMOVE;
//!    HARD_HANDOVER is for a loss paired with a new interface, PROTOCOL 5.1 and CONFIG
//!    `mif_on_new`), and the stream comes back on c2. Printed: the time from the deletion
//!    to the request on the wire (detection), the exchange's round trip, and the time to
//!    the first data from c2 on the wire, the figures of the bar "traffic back within one
//!    round trip plus the detection time";
//! 3. c1's address comes back: it is the preferred interface, so the traffic goes back to
//!    it by SOFT_HANDOVER from c2 (`MIF SOFT_HANDOVER answered`), and c1 carries again.
//!
//! With `mif_on_new = "alternate"` instead, c2's new address is ADD_INTERFACE as a standby:
//! every child gets standby paths from c2, c1 keeps the traffic; once c1's address goes
//! (REMOVE_INTERFACE), the standby paths carry it (a ping through each child).
//!
//! And the active link renumbered (a new address on c1 and the old one deleted within the
//! monitor's 100 ms window, as DHCP may do; c2 has no address): the loss paired with the
//! new interface is one HARD_HANDOVER to it (MOVE_IKE, from the new address), and the
//! stream comes back from the new address. Printed: detection (deletion to the request on
//! the wire), the round trip, and the time to the first data from the new address.
//!
//! Every step waits on the daemon's log and `status --json` with deadlines. Needs root.

use std::time::Duration;

use mifsec_testkit::capture::{self, Capture, INFORMATIONAL, IkeMessage};
use mifsec_testkit::mif::{CLIENT_LINKS, MifLab, Side, loadavg, local_is, sa_paths, tx_from};
use mifsec_testkit::roam::unix_now;
use mifsec_testkit::stream::{Stream, mif_plan};
use mifsec_testkit::{WAIT, poll, require_root};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
const CHILDREN: usize = 2;
const C1: &str = CLIENT_LINKS[0].addr;
const C2: &str = CLIENT_LINKS[1].addr;

/// The client's configuration with device-following interfaces and `on_new` as
/// `mif_on_new` (`mif_prefer` with `add`).
fn client_config(lab: &MifLab, on_new: &str) -> String {
    let conf = lab.client_config(
        CHILDREN,
        &format!(
            "mif = true\nmif_on_new = \"{on_new}\"\nmif_prefer = {}\npath_check_delay = \"0\"",
            on_new == "add"
        ),
        "",
    );
    let conf = conf
        .replace(&format!("address = \"{C1}\""), "priority = 0")
        .replace(&format!("address = \"{C2}\""), "priority = 10");
    // `local_addrs` names fixed addresses only (CONFIG.md): none here.
    let conf: String = conf
        .lines()
        .filter(|l| !l.starts_with("local_addrs"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!conf.contains("address = "), "{conf}");
    conf
}

/// How many times the client's log says `MIF <op> answered`.
fn answered(lab: &MifLab, op: &str) -> usize {
    lab.log("cl").matches(&format!("MIF {op} answered")).count()
}

fn wait_answered(lab: &MifLab, op: &str, n: usize, what: &str) {
    poll(
        WAIT,
        Duration::from_millis(10),
        || {
            let k = answered(lab, op);
            if k >= n { Ok(()) } else { Err(k) }
        },
        |k| {
            format!(
                "{what}: {k} times `MIF {op} answered`, not {n}\n{}",
                lab.dump()
            )
        },
    );
}

/// Every child of the client's engine has a path from `addr`.
fn every_child_has_a_path_from(st: &Value, addr: &str) -> bool {
    let sas = st["sas"].as_array().map(Vec::len).unwrap_or(0);
    let with: std::collections::BTreeSet<&str> = sa_paths(st)
        .filter(|(_, p)| local_is(p, addr))
        .map(|(n, _)| n)
        .collect();
    sas == CHILDREN && with.len() == CHILDREN
}

/// The first INFORMATIONAL request the client sent at or after `t0`, and its response.
fn exchange_after(msgs: &[IkeMessage], t0: f64) -> (&IkeMessage, &IkeMessage) {
    let req = msgs
        .iter()
        .find(|m| {
            m.at >= t0
                && m.exchange == INFORMATIONAL
                && !m.response
                && m.src.starts_with("198.18.3")
        })
        .unwrap_or_else(|| panic!("no request after {t0}:\n{}", capture::listing(msgs)));
    let resp = msgs
        .iter()
        .find(|m| m.at >= req.at && m.response && m.message_id == req.message_id)
        .unwrap_or_else(|| panic!("no response:\n{}", capture::listing(msgs)));
    (req, resp)
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn monitor_events_become_add_remove_and_soft_handover_back() {
    require_root();
    let mut lab = MifLab::new("auto", BIN, CHILDREN);
    // c2 has no address yet.
    lab.delete_address(Side::Client, 1);
    let gw = lab.gateway_config("mif = true", "");
    let cl = client_config(&lab, "add");
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_mifsec("gw", &gw_ns, &gw);
    lab.start_mifsec("cl", &cl_ns, &cl);
    lab.wait_children("cl", CHILDREN);
    lab.wait_children("gw", CHILDREN);
    let st = lab.status_json("cl");
    assert!(
        !sa_paths(&st).any(|(_, p)| local_is(p, C2)),
        "no path from c2 before it has an address: {st:#}"
    );
    let mut cap = Capture::start(&lab.cl_ns, &lab.dir.join("auto.pcap"));
    let stream = Stream::start(
        &lab.cl_ns,
        &lab.gw_ns,
        mif_plan(CHILDREN, 1000, Duration::from_secs(4)),
    );
    lab.wait_link_carries(Side::Client, 0, 50, "the stream on c1 first");

    // 1. A new address: ADD_INTERFACE.
    let t_new = unix_now();
    lab.restore_address(Side::Client, 1);
    wait_answered(&lab, "ADD_INTERFACE", 1, "c2's new address");
    let t_added = unix_now();
    poll(
        WAIT,
        Duration::from_millis(10),
        || {
            let st = lab.status_json("cl");
            if every_child_has_a_path_from(&st, C2) {
                Ok(())
            } else {
                Err(st)
            }
        },
        |st| format!("every child with a path from c2 after the ADD: {st:#}"),
    );

    // 2. The active link's address deleted: REMOVE_INTERFACE (MOVE_IKE), traffic on c2.
    let tx2 = tx_from(&lab.status_json("cl"), C2);
    let t_del = unix_now();
    lab.delete_address(Side::Client, 0);
    let back = poll(
        WAIT,
        Duration::from_millis(2),
        || {
            let st = lab.status_json("cl");
            if tx_from(&st, C2) > tx2 + 10 {
                Ok(unix_now())
            } else {
                Err(st)
            }
        },
        |st| {
            format!(
                "no traffic from c2 after c1's address went: {st:#}\n{}",
                lab.dump()
            )
        },
    );
    wait_answered(&lab, "REMOVE_INTERFACE", 1, "c1's address deleted");
    assert_eq!(
        answered(&lab, "HARD_HANDOVER"),
        0,
        "a loss alone is a REMOVE"
    );
    let st = lab.status_json("cl");
    assert!(
        !sa_paths(&st).any(|(_, p)| local_is(p, C1)),
        "no path from c1 once it is removed: {st:#}"
    );
    assert_eq!(
        st["ike_sas"][0]["local"]
            .as_str()
            .map(|l| l.starts_with(C2)),
        Some(true),
        "the IKE SA moved to c2 (MOVE_IKE): {:#}",
        st["ike_sas"][0]
    );

    // 3. The preferred interface returns: SOFT_HANDOVER back to it.
    let t_ret = unix_now();
    lab.restore_address(Side::Client, 0);
    wait_answered(&lab, "SOFT_HANDOVER", 1, "c1 back (mif_prefer)");
    lab.wait_link_carries(
        Side::Client,
        0,
        50,
        "the traffic back on c1 after the soft handover",
    );
    let t_soft = unix_now();
    poll(
        WAIT,
        Duration::from_millis(10),
        || {
            let st = lab.status_json("cl");
            if !sa_paths(&st).any(|(_, p)| local_is(p, C2)) {
                Ok(())
            } else {
                Err(st)
            }
        },
        |st| format!("the soft handover's old paths from c2 gone: {st:#}"),
    );

    let r = stream.join();
    let msgs = cap.stop();
    let listing = capture::listing(&msgs);
    let (add_req, add_resp) = exchange_after(&msgs, t_new);
    let (rm_req, rm_resp) = exchange_after(&msgs, t_del);
    let (soft_req, soft_resp) = exchange_after(&msgs, t_ret);
    assert!(
        add_resp.at <= t_added + 0.5 && rm_req.at < soft_req.at,
        "{listing}"
    );
    assert!(
        rm_req.src.starts_with(C2),
        "the REMOVE sent from c2 (MOVE_IKE):\n{listing}"
    );
    let data2 = capture::data_from(&cap.path, C2, t_del, 8);
    let ms = |a: f64, b: f64| ((a - b) * 10_000.0).round() / 10.0;
    eprintln!(
        "automatic: ADD of c2 {} ms after its address appeared (request {} ms, RTT {} ms); \
         c1's address deleted: REMOVE request on the wire after {} ms (detection), RTT {} ms, \
         data from c2 on the wire after {:?} ms, traffic from c2 by status after {} ms; c1 back: \
         SOFT_HANDOVER request after {} ms, RTT {} ms, c1 carrying {} ms after; stream {}; \
         load {}",
        ms(add_resp.at, t_new),
        ms(add_req.at, t_new),
        ms(add_resp.at, add_req.at),
        ms(rm_req.at, t_del),
        ms(rm_resp.at, rm_req.at),
        data2.map(|d| ms(d, t_del)),
        ms(back, t_del),
        ms(soft_req.at, t_ret),
        ms(soft_resp.at, soft_req.at),
        ms(t_soft, t_ret),
        r.recv.to_json(),
        loadavg()
    );
    assert!(r.recv.last_at > t_soft, "the stream got through at the end");
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn a_new_address_is_kept_as_an_alternate_when_configured_so() {
    require_root();
    let mut lab = MifLab::new("autoalt", BIN, CHILDREN);
    lab.delete_address(Side::Client, 1);
    let gw = lab.gateway_config("mif = true", "");
    let cl = client_config(&lab, "alternate");
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_mifsec("gw", &gw_ns, &gw);
    lab.start_mifsec("cl", &cl_ns, &cl);
    lab.wait_children("cl", CHILDREN);
    lab.wait_children("gw", CHILDREN);
    lab.restore_address(Side::Client, 1);
    wait_answered(&lab, "ADD_INTERFACE", 1, "c2's new address");
    // Every child: c2's paths standby (and verified), c1's active.
    let st = poll(
        WAIT,
        Duration::from_millis(10),
        || {
            let st = lab.status_json("cl");
            let c2: Vec<&Value> = sa_paths(&st)
                .filter(|(_, p)| local_is(p, C2))
                .map(|(_, p)| p)
                .collect();
            let ok = every_child_has_a_path_from(&st, C2)
                && c2
                    .iter()
                    .all(|p| p["role"] == "standby" && p["state"] == "up")
                && sa_paths(&st)
                    .filter(|(_, p)| local_is(p, C1))
                    .all(|(_, p)| p["role"] == "active");
            if ok { Ok(st) } else { Err(st) }
        },
        |st| format!("c2 as every child's standby: {st:#}"),
    );
    let (ok, out) = lab.ping(0);
    assert!(ok, "ping on c1: {out}");
    let tx2 = tx_from(&lab.status_json("cl"), C2);
    assert_eq!(
        tx2,
        tx_from(&st, C2),
        "nothing sent on the standby paths while c1 is up"
    );
    lab.delete_address(Side::Client, 0);
    wait_answered(&lab, "REMOVE_INTERFACE", 1, "c1's address deleted");
    for i in 0..CHILDREN {
        let (ok, out) = lab.ping(i);
        assert!(
            ok,
            "ping through child {i} on the alternate: {out}\n{}",
            lab.dump()
        );
    }
    let st = lab.status_json("cl");
    assert!(
        tx_from(&st, C2) >= tx2 + 3 * CHILDREN as u64,
        "the pings went from c2: {st:#}"
    );
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn the_active_link_renumbered_is_one_hard_handover() {
    require_root();
    const NEW: &str = "198.18.33.3";
    let mut lab = MifLab::new("autohard", BIN, CHILDREN);
    lab.delete_address(Side::Client, 1);
    // The new address becomes the primary when the old one goes (routes through c1 stay).
    mifsec_testkit::ip(&[
        "netns",
        "exec",
        &lab.cl_ns,
        "sysctl",
        "-qw",
        "net.ipv4.conf.c1.promote_secondaries=1",
    ]);
    let gw = lab.gateway_config("mif = true", "");
    let cl = client_config(&lab, "add");
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_mifsec("gw", &gw_ns, &gw);
    lab.start_mifsec("cl", &cl_ns, &cl);
    lab.wait_children("cl", CHILDREN);
    lab.wait_children("gw", CHILDREN);
    let mut cap = Capture::start(&lab.cl_ns, &lab.dir.join("renumber.pcap"));
    let stream = Stream::start(
        &lab.cl_ns,
        &lab.gw_ns,
        mif_plan(CHILDREN, 1000, Duration::from_secs(3)),
    );
    lab.wait_link_carries(Side::Client, 0, 50, "the stream on c1 first");
    let batch = lab.dir.join("renumber.batch");
    std::fs::write(
        &batch,
        format!("addr add {NEW}/24 dev c1\naddr del {C1}/24 dev c1\n"),
    )
    .unwrap();
    let t_del = unix_now();
    mifsec_testkit::ip(&["-n", &lab.cl_ns, "-batch", &batch.display().to_string()]);
    wait_answered(&lab, "HARD_HANDOVER", 1, "c1 renumbered");
    let back = poll(
        WAIT,
        Duration::from_millis(2),
        || {
            let st = lab.status_json("cl");
            if tx_from(&st, NEW) > 10 {
                Ok(unix_now())
            } else {
                Err(st)
            }
        },
        |st| format!("no traffic from {NEW}: {st:#}\n{}", lab.dump()),
    );
    let st = lab.status_json("cl");
    assert!(
        !sa_paths(&st).any(|(_, p)| local_is(p, C1)) && every_child_has_a_path_from(&st, NEW),
        "every child from {NEW} only: {st:#}"
    );
    assert_eq!(
        answered(&lab, "REMOVE_INTERFACE"),
        0,
        "one HARD_HANDOVER, no REMOVE"
    );
    let r = stream.join();
    let msgs = cap.stop();
    let listing = capture::listing(&msgs);
    let (req, resp) = exchange_after(&msgs, t_del);
    assert!(
        req.src.starts_with(NEW),
        "the request from the new address:\n{listing}"
    );
    let data = capture::data_from(&cap.path, NEW, t_del, 8);
    let ms = |a: f64, b: f64| ((a - b) * 10_000.0).round() / 10.0;
    eprintln!(
        "automatic HARD_HANDOVER (c1 renumbered): request on the wire {} ms after the \
         deletion (detection), RTT {} ms, data from {NEW} on the wire after {:?} ms, by status \
         after {} ms; stream {}; load {}",
        ms(req.at, t_del),
        ms(resp.at, req.at),
        data.map(|d| ms(d, t_del)),
        ms(back, t_del),
        r.recv.to_json(),
        loadavg()
    );
    assert!(r.recv.last_at > back, "the stream got through afterwards");
}
