//! MOBIKE (RFC 4555) with mifsec as the responder: a strongSwan 5.9 client (charon with
//! kernel-libipsec, MOBIKE on by default) with two links to a mifsec gateway, in the
//! roaming lab of the test kit (`mifsec_testkit::roam`). The client's address on link 1 is
//! deleted; strongSwan sends UPDATE_SA_ADDRESSES from link 2, mifsec answers there at once,
//! checks the new address (COOKIE2) and moves the child SAs' engine paths make-before-break.
//! Asserted: traffic flows on link 2, `swanctl --list-sas` and `mifsec status` both show the
//! new address, mifsec counts the move with its reason, and mifsec's side counts no
//! integrity or replay drop. strongSwan's kernel-libipsec cannot update an SA in place and
//! rekeys its children after the update: that rekey is accepted here.
//!
//! Also `ctl move` by hand on a mifsec client of a strongSwan gateway (the side that may
//! move), and its refusal on the gateway (the responder may not).
//!
//! Needs root (namespaces, TUN, apt-get for strongSwan when missing). Without root it fails;
//! `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` reports it as ignored.

mod swan;

use std::time::Duration;

use mifsec_testkit::roam::{GW_ADDRS, LINKS, RoamLab, drops, unix_now};
use swan::*;

/// The gateway's one IKE SA in `st` (panics with the status otherwise).
fn only_ike(st: &serde_json::Value) -> &serde_json::Value {
    let sas = st["ike_sas"].as_array().expect("ike_sas");
    assert_eq!(sas.len(), 1, "{st:#}");
    &sas[0]
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn strongswan_client_roams_and_the_mifsec_gateway_follows() {
    require_root();
    let mut lab = RoamLab::new("mrsp", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    let config = lab.mifsec_gateway(&[("ESP", "aes128gcm16")]);
    lab.start_mifsec("gw", &gw_ns, &config);
    lab.start_swan(&cl_ns, &RoamLab::swan_client(&[("ESP", "aes128gcm16")]));
    lab.swan_initiate(&cl_ns, "net");
    let st = lab.wait_established("gw");
    let ike = only_ike(&st);
    assert_eq!(ike["initiator"], false);
    assert_eq!(ike["mobike"], true, "{ike:#}");
    let old_remote = ike["remote"].as_str().unwrap().to_owned();
    assert!(
        old_remote.starts_with(&format!("{}:", LINKS[0].addr)),
        "{ike:#}"
    );
    let moves_before = ike["moves"].as_u64().unwrap_or(0);

    let ping = lab.ping_stream("roam");
    lab.wait_link_carries(0, 10, "gw", "the tunnel on link 1 first");

    // The client's address on link 1 goes: charon roams to link 2.
    let t = unix_now();
    lab.delete_address(0);
    let new_prefix = format!("{}:", LINKS[1].addr);
    let mut last = serde_json::Value::Null;
    let ok = poll_until(WAIT, || {
        last = lab.status_json("gw");
        let ike = &last["ike_sas"][0];
        ike["remote"]
            .as_str()
            .is_some_and(|r| r.starts_with(&new_prefix))
            && ike["moves"].as_u64().unwrap_or(0) > moves_before
    });
    assert!(
        ok,
        "mifsec did not follow the client to link 2:\n{last:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
        lab.log("gw"),
        lab.swan_log()
    );
    assert!(
        ping.wait_answered_after(t, WAIT).is_some(),
        "no reply after the move: {}\n--- status:\n{:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
        ping.output(),
        lab.status_json("gw"),
        lab.log("gw"),
        lab.swan_log()
    );
    lab.wait_link_carries(1, 10, "gw", "the tunnel on link 2 after the move");

    // Both sides list the new address.
    let sas = text(&lab.swanctl(&cl_ns, &["--list-sas"]));
    eprintln!("--- swanctl --list-sas (client) after the move:\n{sas}");
    assert!(sas.contains("ESTABLISHED"), "{sas}");
    assert!(sas.contains(&format!("{}[", LINKS[1].addr)), "{sas}");
    assert!(!sas.contains(&format!("{}[", LINKS[0].addr)), "{sas}");
    let status = text(&lab.mifsec("gw", &["status"]));
    eprintln!("--- mifsec status (gateway) after the move:\n{status}");
    assert!(status.contains(&format!("@ {}", new_prefix)), "{status}");
    assert!(status.contains("  moves "), "{status}");
    let st = lab.status_json("gw");
    let ike = only_ike(&st);
    let reasons = ike["moves_by_reason"].as_object().expect("moves_by_reason");
    assert!(
        reasons.contains_key("peer-update-verified"),
        "a new address is checked before the children move: {ike:#}"
    );
    assert_eq!(ike["route_checks_passed"], 1, "{ike:#}");
    assert!(ike["route_check"].is_null(), "{ike:#}");
    let log = lab.log("gw");
    assert!(
        log.contains("peer-update-verified") && log.contains("make-before-break"),
        "the move is logged with its reason:\n{log}"
    );

    // A move by hand of an IKE SA we are the responder of is refused, clearly.
    let out = lab.mifsec("gw", &["ctl", "move", "rw", "--local", GW_ADDRS[1]]);
    let said = text(&out);
    assert!(!out.status.success(), "{said}");
    assert!(
        said.contains("we are its responder") && said.contains("initiator"),
        "{said}"
    );

    // Traffic carries on for a while on link 2 (strongSwan rekeys its children meanwhile).
    let n = ping.replies().len();
    ping.wait_replies(n + 50, WAIT);
    let r = ping.stop();
    let st = lab.status_json("gw");
    let d = drops(&st);
    eprintln!(
        "roam (strongSwan client -> mifsec gateway): {} sent, {} lost, longest gap {:?}; mifsec drops {d:?}",
        r.transmitted, r.lost, r.longest_gap
    );
    for bad in ["integrity", "replayed"] {
        assert_eq!(d.get(bad), None, "{bad} drops on mifsec's side: {st:#}");
    }
}

/// Polls `cond` every 100 ms until it holds (true) or `timeout` passes (false).
fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `mifsec ctl move` on the side that may move: a mifsec client (two links, fixed
/// addresses) of a strongSwan gateway is moved by hand to its second link; strongSwan
/// lists the new address, traffic goes on link 2, and the move is counted with reason
/// `operator`.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn ctl_move_moves_a_mifsec_client_to_its_other_link() {
    require_root();
    let mut lab = RoamLab::new("mmov", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    lab.start_swan(&gw_ns, &RoamLab::swan_gateway(&[("ESP", "aes128gcm16")]));
    let config = lab.mifsec_client(&[("ESP", "aes128gcm16")]);
    lab.start_mifsec("cl", &cl_ns, &config);
    let st = lab.wait_established("cl");
    let ike = only_ike(&st);
    assert_eq!(ike["initiator"], true);
    assert!(
        ike["local"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("{}:", LINKS[0].addr))),
        "{ike:#}"
    );
    let ping = lab.ping_stream("move");
    lab.wait_link_carries(0, 10, "cl", "the tunnel on link 1 first");

    let t = unix_now();
    let out = lab.mifsec("cl", &["ctl", "move", "home", "--local", LINKS[1].addr]);
    let said = text(&out);
    assert!(out.status.success(), "ctl move: {said}");
    assert!(said.contains("moving to"), "{said}");
    let new_prefix = format!("{}:", LINKS[1].addr);
    let mut last = serde_json::Value::Null;
    let ok = poll_until(WAIT, || {
        last = lab.status_json("cl");
        let ike = &last["ike_sas"][0];
        ike["local"]
            .as_str()
            .is_some_and(|l| l.starts_with(&new_prefix))
            && ike["moves_by_reason"]["operator"].as_u64() == Some(1)
    });
    assert!(
        ok,
        "the client did not move to link 2:\n{last:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
        lab.log("cl"),
        lab.swan_log()
    );
    assert!(
        ping.wait_answered_after(t, WAIT).is_some(),
        "no reply after the move: {}\n--- status:\n{:#}\n--- mifsec log:\n{}",
        ping.output(),
        lab.status_json("cl"),
        lab.log("cl")
    );
    lab.wait_link_carries(1, 10, "cl", "the tunnel on link 2 after ctl move");
    let sas = text(&lab.swanctl(&gw_ns, &["--list-sas"]));
    eprintln!("--- swanctl --list-sas (gateway) after ctl move:\n{sas}");
    assert!(sas.contains(&format!("{}[", LINKS[1].addr)), "{sas}");
    let status = text(&lab.mifsec("cl", &["status"]));
    eprintln!("--- mifsec status (client) after ctl move:\n{status}");
    assert!(status.contains("operator 1"), "{status}");
    let log = lab.log("cl");
    assert!(
        log.contains("operator"),
        "the move is logged with its reason:\n{log}"
    );

    // Moving again to where it is: nothing to do, said so.
    let out = lab.mifsec("cl", &["ctl", "move", "home", "--local", LINKS[1].addr]);
    assert!(text(&out).contains("already on"), "{}", text(&out));
    // An address that is not ours: refused.
    let out = lab.mifsec("cl", &["ctl", "move", "home", "--local", "198.18.23.2"]);
    assert!(!out.status.success(), "{}", text(&out));

    let n = ping.replies().len();
    ping.wait_replies(n + 50, WAIT);
    let r = ping.stop();
    let st = lab.status_json("cl");
    let d = drops(&st);
    eprintln!(
        "ctl move (mifsec client -> strongSwan gateway): {} sent, {} lost, longest gap {:?}; mifsec drops {d:?}",
        r.transmitted, r.lost, r.longest_gap
    );
    for bad in ["integrity", "replayed"] {
        assert_eq!(d.get(bad), None, "{bad} drops on mifsec's side: {st:#}");
    }
}
