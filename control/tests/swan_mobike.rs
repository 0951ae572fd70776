//! MOBIKE (RFC 4555) with mifsec as the client of a strongSwan 5.9 gateway (charon with
//! kernel-libipsec), in the roaming lab of the test kit (`mifsec_testkit::roam`): the client
//! has two links through a middle router to a gateway with two addresses.
//!
//! - the active link's address is deleted: mifsec moves to the other link, and strongSwan
//!   lists the new address;
//! - the active link is silently blackholed in the middle: mifsec moves;
//! - the gateway's address in use becomes unreachable: mifsec fails over to the gateway's
//!   other address (which strongSwan announced with ADDITIONAL_IP4_ADDRESS);
//! - the preferred link's address comes back: mifsec moves back to it.
//!
//! Each case runs a 100/s ping stream through the tunnel and waits for a reply to a request
//! sent after the event; strongSwan's kernel-libipsec rekeys every child after an update,
//! which the tests accept, but mifsec must count no integrity or replay drop.
//!
//! Needs root (namespaces, TUN, apt-get for strongSwan when missing). Without root it fails;
//! `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` reports it as ignored.

mod swan;

use mifsec_testkit::roam::{GW_ADDRS, LINKS, PingStream, RoamLab, drops, unix_now};
use serde_json::Value;
use std::time::Duration;
use swan::*;

/// A strongSwan gateway with both addresses, a mifsec client on two device-only interfaces
/// (`link1` and `link2`, addresses learned) with `client` variables; waits until the
/// tunnel carries pings. Returns the lab and a running ping stream.
fn lab(tag: &str, client: &[(&str, &str)]) -> (RoamLab, PingStream) {
    require_root();
    let mut lab = RoamLab::new(tag, BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    lab.start_swan(&gw_ns, &RoamLab::swan_gateway(&[]));
    let config = lab.mifsec_client(&[client, &[("LINK1", ""), ("LINK2", "")]].concat());
    lab.start_mifsec("cl", &cl_ns, &config);
    lab.wait_established("cl");
    let ping = lab.ping_stream("before");
    lab.wait_link_carries(0, 10, "cl", "the tunnel on link 1 first");
    (lab, ping)
}

/// The mifsec client's IKE SA: (local, remote) socket addresses.
fn ike_path(st: &Value) -> (String, String) {
    let ike = &st["ike_sas"][0];
    (
        ike["local"].as_str().unwrap_or("").to_owned(),
        ike["remote"].as_str().unwrap_or("").to_owned(),
    )
}

/// Waits until the mifsec client's IKE SA runs from `local` to `remote` (addresses).
fn wait_path(lab: &RoamLab, local: &str, remote: &str, what: &str) -> Value {
    poll(
        WAIT,
        Duration::from_millis(50),
        || {
            let st = lab.status_json("cl");
            let (l, r) = ike_path(&st);
            if l.starts_with(&format!("{local}:")) && r.starts_with(&format!("{remote}:")) {
                Ok(st)
            } else {
                Err(st)
            }
        },
        |st| {
            format!(
                "{what}: mifsec's IKE SA is not on {local} -> {remote}:\n{st:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
                lab.log("cl"),
                lab.swan_log()
            )
        },
    )
}

/// Waits until the mifsec client's IKE SA runs from `local` (an address) to any gateway
/// address; returns that gateway address.
fn wait_path_from(lab: &RoamLab, local: &str, what: &str) -> String {
    let st = poll(
        WAIT,
        Duration::from_millis(50),
        || {
            let st = lab.status_json("cl");
            let (l, r) = ike_path(&st);
            let gw = GW_ADDRS.iter().any(|a| r.starts_with(&format!("{a}:")));
            if l.starts_with(&format!("{local}:")) && gw {
                Ok(st)
            } else {
                Err(st)
            }
        },
        |st| {
            format!(
                "{what}: mifsec's IKE SA is not on {local} -> a gateway address:\n{st:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
                lab.log("cl"),
                lab.swan_log()
            )
        },
    );
    let (_, r) = ike_path(&st);
    r.rsplit_once(':').map(|(a, _)| a.to_owned()).unwrap_or(r)
}

/// Waits until strongSwan (the gateway) lists the client at `client` and itself at `gw`.
fn wait_swan_lists(lab: &RoamLab, client: &str, gw: &str) -> String {
    let gw_ns = lab.gw_ns.clone();
    poll(
        WAIT,
        Duration::from_millis(100),
        || {
            let sas = text(&lab.swanctl(&gw_ns, &["--list-sas"]));
            let ok = sas.contains("ESTABLISHED")
                && sas.contains(&format!("remote 'cl' @ {client}["))
                && sas.contains(&format!("local  'gw' @ {gw}["));
            if ok { Ok(sas) } else { Err(sas) }
        },
        |sas| {
            format!(
                "strongSwan does not list {client} <-> {gw}:\n{sas}\n--- mifsec log:\n{}\n--- charon log:\n{}",
                lab.log("cl"),
                lab.swan_log()
            )
        },
    )
}

/// Waits for a reply to a request sent after `t` (the tunnel carries traffic again).
fn wait_traffic(lab: &RoamLab, ping: &PingStream, t: f64, what: &str) {
    if ping.wait_answered_after(t, WAIT).is_none() {
        panic!(
            "{what}: no ping answered within {WAIT:?}\n--- status:\n{:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
            lab.status_json("cl"),
            lab.log("cl"),
            lab.swan_log()
        );
    }
}

/// mifsec counted no integrity or replay drop.
fn no_integrity_or_replay_drops(lab: &RoamLab) {
    let st = lab.status_json("cl");
    let d = drops(&st);
    for reason in ["integrity", "replayed", "too_old"] {
        assert_eq!(d.get(reason), None, "{reason} drops: {d:?}\n{st:#}");
    }
}

/// Stops the stream and prints what it saw (figures for the reader; the benchmark measures).
fn finish(ping: PingStream, what: &str) {
    let r = ping.stop();
    eprintln!(
        "{what}: {} requests, {} lost, longest gap {:?}",
        r.transmitted, r.lost, r.longest_gap
    );
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn address_deleted_mifsec_moves_to_the_other_link() {
    let (lab, ping) = lab("ad", &[]);
    wait_path(&lab, LINKS[0].addr, GW_ADDRS[0], "at the start");
    wait_swan_lists(&lab, LINKS[0].addr, GW_ADDRS[0]);

    lab.delete_address(0);
    let t = unix_now();
    // Every pair from link 2 is probed at once and the first answer wins: either gateway
    // address is right (strongSwan announced its second one).
    let gw = wait_path_from(&lab, LINKS[1].addr, "after link 1's address went");
    let sas = wait_swan_lists(&lab, LINKS[1].addr, &gw);
    eprintln!("--- swanctl --list-sas after the move:\n{sas}");
    wait_traffic(&lab, &ping, t, "after the move");
    lab.wait_link_carries(1, 10, "cl", "the tunnel on link 2");
    no_integrity_or_replay_drops(&lab);
    finish(ping, "address deleted");
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn link_blackholed_mifsec_moves() {
    let (lab, ping) = lab("bh", &[]);
    wait_path(&lab, LINKS[0].addr, GW_ADDRS[0], "at the start");

    lab.blackhole_link(0);
    let t = unix_now();
    // The probe goes to every pair at once and the first answer wins: from link 2 either
    // gateway address (strongSwan announced its second one) is a right answer.
    let gw = wait_path_from(&lab, LINKS[1].addr, "after link 1 went silent");
    assert!(GW_ADDRS.contains(&gw.as_str()), "moved to {gw}");
    wait_swan_lists(&lab, LINKS[1].addr, &gw);
    wait_traffic(&lab, &ping, t, "after the move");
    lab.wait_link_carries(1, 10, "cl", "the tunnel on link 2");
    no_integrity_or_replay_drops(&lab);
    finish(ping, "link blackholed");
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn gateway_address_unreachable_mifsec_fails_over_to_its_other_address() {
    let (lab, ping) = lab("ga", &[]);
    wait_path(&lab, LINKS[0].addr, GW_ADDRS[0], "at the start");
    // strongSwan announced its other address in IKE_AUTH (ADDITIONAL_IP4_ADDRESS).
    wait_until(WAIT, "the gateway's other address known to mifsec", || {
        lab.status_json("cl").to_string().contains(GW_ADDRS[1])
    });

    lab.blackhole_gateway(0);
    let t = unix_now();
    let st = poll(
        WAIT,
        Duration::from_millis(50),
        || {
            let st = lab.status_json("cl");
            if ike_path(&st).1.starts_with(&format!("{}:", GW_ADDRS[1])) {
                Ok(st)
            } else {
                Err(st)
            }
        },
        |st| {
            format!(
                "mifsec did not fail over to {}:\n{st:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
                GW_ADDRS[1],
                lab.log("cl"),
                lab.swan_log()
            )
        },
    );
    let local = ike_path(&st).0;
    let local = local.rsplit_once(':').map_or("", |(a, _)| a).to_owned();
    wait_swan_lists(&lab, &local, GW_ADDRS[1]);
    wait_traffic(&lab, &ping, t, "after the failover");
    no_integrity_or_replay_drops(&lab);
    finish(ping, "gateway address unreachable");
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn preferred_link_back_mifsec_moves_back() {
    // link1 comes first (the monitor's order): preferred, once its address is back.
    let (lab, ping) = lab("pb", &[("CONN", "prefer_best_path = true")]);
    wait_path(&lab, LINKS[0].addr, GW_ADDRS[0], "at the start");

    lab.delete_address(0);
    wait_path_from(&lab, LINKS[1].addr, "after link 1's address went");
    lab.restore_address(0);
    let t = unix_now();
    // The first answer of the probe wins: either gateway address is right.
    let gw = wait_path_from(&lab, LINKS[0].addr, "once link 1's address is back");
    wait_swan_lists(&lab, LINKS[0].addr, &gw);
    wait_traffic(&lab, &ping, t, "after moving back");
    lab.wait_link_carries(0, 10, "cl", "the tunnel on link 1 again");
    no_integrity_or_replay_drops(&lab);
    finish(ping, "preferred link back");
}
