//! The packet engine end to end: two engines in two network namespaces joined by two links
//! (one through a middle router that can blackhole it silently), real TUN devices, real
//! sockets, real kernel traffic. Needs root; see `mifsec_tests::root_or_skip`.

use std::time::Duration;

use mifsec_dataplane::aead::Cipher;
use mifsec_dataplane::sa_table::{Policy, Role};
use mifsec_tests::{Lab, Side, lab_config, ping, root_or_skip, udp_stream};

fn up(
    policy: Policy,
    p2: Role,
) -> (
    Lab,
    mifsec_dataplane::engine::Engine,
    mifsec_dataplane::engine::Engine,
) {
    let lab = Lab::new([None, None]);
    let gw = lab.start(
        &lab.gw.clone(),
        lab_config(Side::Gateway, policy, Cipher::Aes128Gcm, p2),
    );
    let cl = lab.start(
        &lab.cl.clone(),
        lab_config(Side::Client, policy, Cipher::Aes128Gcm, p2),
    );
    (lab, cl, gw)
}

#[test]
fn tunnel_up_and_ping() {
    if !root_or_skip("tunnel_up_and_ping") {
        return;
    }
    let (lab, cl, gw) = up(Policy::Failover, Role::Standby);
    let (ok, out) = ping(&lab.cl, "10.2.0.1", 5);
    assert!(ok, "ping through the tunnel failed:\n{out}");
    let (c, g) = (cl.status(), gw.status());
    let (cs, gs) = (&c.sas[0], &g.sas[0]);
    assert!(cs.out_packets >= 5 && cs.in_packets >= 5, "{cs:?}");
    assert!(gs.out_packets >= 5 && gs.in_packets >= 5, "{gs:?}");
    assert!(
        cs.drops.is_empty() && gs.drops.is_empty(),
        "{:?} {:?}",
        cs.drops,
        gs.drops
    );
    // Failover: data went on p1 only; p2 carried probes.
    std::thread::sleep(Duration::from_millis(300));
    let c = cl.status();
    let p = &c.sas[0].paths;
    assert_eq!(
        (p[0].name.as_str(), p[0].state.as_str(), p[1].state.as_str()),
        ("p1", "up", "up"),
        "{p:?}"
    );
    assert!(p[0].rtt_ms.is_some());
}

#[test]
fn soft_handover_loses_nothing() {
    if !root_or_skip("soft_handover_loses_nothing") {
        return;
    }
    let (lab, cl, gw) = up(Policy::Failover, Role::Standby);
    std::thread::sleep(Duration::from_millis(300));
    let cl = std::sync::Arc::new(cl);
    let c2 = std::sync::Arc::clone(&cl);
    let report = udp_stream(
        &lab.cl,
        &lab.gw,
        "10.2.0.1:5001".parse().unwrap(),
        10_000,
        3.0,
        1.5,
        move || {
            c2.handover("tunnel", "p2", false).unwrap();
        },
    );
    assert_eq!(report.received, report.sent, "{report:?}");
    let s = cl.status();
    let p = &s.sas[0].paths;
    assert_eq!(
        (p[0].name.as_str(), p[0].role.as_str()),
        ("p2", "active"),
        "{p:?}"
    );
    assert!(p.iter().find(|x| x.name == "p1").unwrap().tx_packets > 1000);
    assert!(p[0].tx_packets > 1000, "{p:?}");
    drop(gw);
}

#[test]
fn silent_failure_of_the_active_path_recovers() {
    if !root_or_skip("silent_failure_of_the_active_path_recovers") {
        return;
    }
    let (lab, cl, _gw) = up(Policy::Failover, Role::Standby);
    std::thread::sleep(Duration::from_millis(300));
    let lab = std::sync::Arc::new(lab);
    let l2 = std::sync::Arc::clone(&lab);
    let report = udp_stream(
        &lab.cl,
        &lab.gw,
        "10.2.0.1:5002".parse().unwrap(),
        1000,
        4.0,
        1.0,
        move || l2.blackhole_link1(),
    );
    eprintln!("silent failure: {report:?}");
    assert!(
        report.received + 1000 > report.sent,
        "did not recover: {report:?}"
    );
    assert!(report.longest_gap_ms < 1000.0, "gap {report:?}");
    let s = cl.status();
    let p1 = s.sas[0].paths.iter().find(|p| p.name == "p1").unwrap();
    assert_eq!(p1.state, "down");
}
