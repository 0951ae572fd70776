//! IKEv2 interoperation with strongSwan 5.9 (charon with kernel-libipsec, Debian packages):
//! two network namespaces joined by a veth pair, strongSwan on one side and `mifsec run` on
//! the other, PSK, AES-GCM-128 / PRF-HMAC-SHA2-256 / X25519 for IKE, AES-GCM-128 for ESP,
//! forced UDP encapsulation, a virtual IP from the gateway's pool, and a ping through the
//! tunnel. Each case asserts what strongSwan reports (`swanctl --list-sas`) as well as what
//! mifsec reports (`mifsec status`).
//!
//! The strongSwan side is driven by scripts/swan.sh (install, start, load, swanctl, stop).
//!
//! Needs root (namespaces, TUN, apt-get for strongSwan when missing). Without root it fails;
//! `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` reports it as ignored.

mod swan;

use std::time::{Duration, Instant};

use swan::*;

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn mifsec_initiator_strongswan_responder() {
    require_root();
    let mut lab = Lab::new("i", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    lab.start_swan(&gw_ns, &swan_gateway(&[("ESP", "aes128gcm16")]));
    // The shared client configuration, without `start_action`: this test initiates itself.
    let config = mifsec_client(
        &lab,
        &[("ESP", "aes128gcm16"), ("CHILD", "mode = \"tunnel\"")],
    )
    .replace("start_action = \"start\"\n", "");
    assert!(!config.contains("start_action"), "{config}");
    lab.start_mifsec("cl", &cl_ns, &config);
    let t0 = Instant::now();
    let out = lab.mifsec("cl", &["ctl", "initiate", "home"]);
    assert!(out.status.success(), "ctl initiate: {}", text(&out));
    let st = lab.wait_established("cl");
    let up_ms = t0.elapsed().as_millis();
    let ike = &st["ike_sas"][0];
    assert_eq!(ike["name"], "home");
    assert_eq!(ike["initiator"], true);
    assert_eq!(ike["remote_id"], "gw");
    assert_eq!(
        ike["algorithms"],
        "AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519"
    );
    assert!(
        ike["local"].as_str().unwrap().ends_with(":4500"),
        "floated to 4500: {ike}"
    );
    let vip = ike["vip"].as_str().expect("a virtual IP").to_owned();
    assert!(vip.starts_with("10.77.0."), "vip {vip}");
    assert_eq!(ike["children"][0]["udp_encap"], true);

    // strongSwan's view.
    let sas = lab.swanctl(&gw_ns, &["--list-sas"]);
    let sas = text(&sas);
    eprintln!("--- swanctl --list-sas (gateway), established after {up_ms} ms:\n{sas}");
    assert!(sas.contains("ESTABLISHED"), "{sas}");
    assert!(sas.contains("INSTALLED, TUNNEL-in-UDP"), "{sas}");
    assert!(
        sas.contains("AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519"),
        "{sas}"
    );
    assert!(sas.contains(&format!("{vip}/32")), "{sas}");

    // Traffic.
    let ping = lab.ping(&cl_ns, "10.88.0.1");
    assert!(
        ping.status.success(),
        "ping through the tunnel: {}\n--- status:\n{:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
        text(&ping),
        lab.status_json("cl"),
        lab.log("cl"),
        lab.swan_log()
    );
    let st = lab.status_json("cl");
    let (inp, outp) = counters(&st);
    assert!(
        inp >= 3 && outp >= 3,
        "SA counters in {inp} out {outp}: {st:#}"
    );
    let human = text(&lab.mifsec("cl", &["status"]));
    eprintln!("--- mifsec status (client):\n{human}");
    assert!(human.contains("ESTABLISHED"), "{human}");
    let sas = text(&lab.swanctl(&gw_ns, &["--list-sas"]));
    assert!(sas.contains("packets"), "strongSwan counts packets: {sas}");

    // Terminate from mifsec: both sides forget the SAs.
    lab.terminate_and_wait("cl", "home", &gw_ns);
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn strongswan_initiator_mifsec_responder() {
    require_root();
    let mut lab = Lab::new("r", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    let config = mifsec_gateway(&lab, &[("ESP", "aes128gcm16")]);
    lab.start_mifsec("gw", &gw_ns, &config);
    lab.start_swan(&cl_ns, &swan_client(&[("ESP", "aes128gcm16")]));
    let t0 = Instant::now();
    lab.swan_initiate(&cl_ns, "net");
    let up_ms = t0.elapsed().as_millis();
    let st = lab.wait_established("gw");
    let ike = &st["ike_sas"][0];
    assert_eq!(ike["initiator"], false);
    assert_eq!(ike["remote_id"], "cl");
    assert_eq!(ike["peer_vip"], "10.77.0.1");
    assert_eq!(ike["children"][0]["udp_encap"], true);

    let sas = text(&lab.swanctl(&cl_ns, &["--list-sas"]));
    eprintln!("--- swanctl --list-sas (client), initiate took {up_ms} ms:\n{sas}");
    assert!(sas.contains("ESTABLISHED"), "{sas}");
    assert!(sas.contains("INSTALLED, TUNNEL-in-UDP"), "{sas}");
    assert!(sas.contains("10.77.0.1/32"), "{sas}");

    let ping = lab.ping(&cl_ns, "10.88.0.1");
    assert!(
        ping.status.success(),
        "ping through the tunnel: {}\n--- status:\n{:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
        text(&ping),
        lab.status_json("gw"),
        lab.log("gw"),
        lab.swan_log()
    );
    let st = lab.status_json("gw");
    let (inp, outp) = counters(&st);
    assert!(
        inp >= 3 && outp >= 3,
        "SA counters in {inp} out {outp}: {st:#}"
    );
    eprintln!(
        "--- mifsec status (gateway):\n{}",
        text(&lab.mifsec("gw", &["status"]))
    );

    // Terminate from strongSwan: mifsec removes the SAs.
    let out = lab.swanctl(&cl_ns, &["--terminate", "--ike", "home"]);
    assert!(out.status.success(), "swanctl --terminate: {}", text(&out));
    let deadline = Instant::now() + WAIT;
    loop {
        let st = lab.status_json("gw");
        if st["ike_sas"].as_array().is_some_and(Vec::is_empty)
            && st["sas"].as_array().is_some_and(Vec::is_empty)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mifsec still has SAs after the peer's delete: {st:#}\n{}",
            lab.log("gw")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// strongSwan in `swan_ns` rekeys the child (`child`), then the IKE SA (`ike`), then the
/// child again, each under a ping flood from `ping_ns`; mifsec (`side`) and strongSwan
/// agree on the new SPIs each time and nothing is lost.
fn rekeys_by_strongswan(lab: &Lab, side: &str, swan_ns: &str, ping_ns: &str, ike: &str) {
    lab.wait_established(side);
    let s0 = lab.settled(side, None);
    lab.swan_agrees(swan_ns, &s0);
    assert!(lab.ping(ping_ns, "10.88.0.1").status.success());

    // A child rekey by strongSwan (with PFS), under traffic.
    let rekey_child = || {
        let out = lab.swanctl(swan_ns, &["--rekey", "--child", "net"]);
        assert!(out.status.success(), "swanctl --rekey: {}", text(&out));
    };
    lab.flood(side, ping_ns, 300, rekey_child);
    let s1 = lab.settled(side, Some(&s0));
    assert_eq!((&s1.spi_i, &s1.spi_r), (&s0.spi_i, &s0.spi_r));
    assert_ne!(s1.child_in, s0.child_in);
    assert_ne!(s1.child_out, s0.child_out);
    lab.swan_agrees(swan_ns, &s1);

    // An IKE rekey by strongSwan: new IKE SPIs, the child stays.
    lab.flood(side, ping_ns, 300, || {
        let out = lab.swanctl(swan_ns, &["--rekey", "--ike", ike]);
        assert!(
            out.status.success(),
            "swanctl --rekey --ike: {}",
            text(&out)
        );
    });
    let s2 = lab.settled(side, Some(&s1));
    assert_ne!(s2.spi_i, s1.spi_i);
    assert_eq!((&s2.child_in, &s2.child_out), (&s1.child_in, &s1.child_out));
    lab.swan_agrees(swan_ns, &s2);

    // And a child rekey by strongSwan on the new IKE SA.
    lab.flood(side, ping_ns, 300, rekey_child);
    let s3 = lab.settled(side, Some(&s2));
    assert_ne!(s3.child_in, s2.child_in);
    assert_eq!(s3.spi_i, s2.spi_i);
    lab.swan_agrees(swan_ns, &s3);
    let sas = lab.swan_has_one_child(swan_ns);
    eprintln!("--- swanctl --list-sas after three rekeys:\n{sas}");
}

/// Eight seconds of pings while mifsec (`side`, child rekey_time 3 s, IKE 5 s) rekeys:
/// nothing lost, at least two child rekeys and one IKE rekey, strongSwan agrees.
fn rekeys_by_mifsec_lifetimes(lab: &Lab, side: &str, swan_ns: &str, ping_ns: &str) {
    lab.wait_established(side);
    let s0 = lab.settled(side, None);
    let gw_ns = if ping_ns == lab.cl_ns {
        &lab.gw_ns
    } else {
        &lab.cl_ns
    };
    lab.flood(side, ping_ns, 800, || {
        // An iperf3 UDP stream rides along the pings through the rekeys.
        let report = lab.iperf3(gw_ns, ping_ns, 6, &["-u", "-b", "30M", "-l", "1200"]);
        eprintln!(
            "--- iperf3 UDP during lifetime rekeys: {} of {} datagrams lost",
            report["end"]["sum"]["lost_packets"], report["end"]["sum"]["packets"]
        );
    });
    // Nothing the rekeys did made mifsec drop an authentic packet.
    let st = lab.status_json(side);
    for reason in ["integrity", "replayed", "too_old", "unknown_spi"] {
        let global = st["drops"][reason].as_u64().unwrap_or(0);
        let per_sa: u64 = st["sas"].as_array().map_or(0, |l| {
            l.iter()
                .map(|s| s["drops"][reason].as_u64().unwrap_or(0))
                .sum()
        });
        assert_eq!(global + per_sa, 0, "{reason} drops during rekeys: {st:#}");
    }
    let s1 = lab.settled(side, Some(&s0));
    assert_ne!(s1.child_in, s0.child_in);
    assert_ne!(s1.spi_i, s0.spi_i);
    lab.swan_agrees(swan_ns, &s1);
    let log = lab.log(side);
    assert!(log.matches("child net rekeyed").count() >= 2, "{log}");
    assert!(log.matches("IKE SA rekeyed").count() >= 1, "{log}");
    assert!(!log.contains("failed"), "{log}");
    let sas = text(&lab.swanctl(swan_ns, &["--list-sas"]));
    eprintln!("--- swanctl --list-sas after lifetime rekeys:\n{sas}");
    assert_eq!(sas.matches("ESTABLISHED").count(), 1, "{sas}");
}

const MIFSEC_LIFETIMES: (&str, &str) = (
    "rekey_time = \"5s\"\nrand_time = 0\nlife_time = \"60s\"\ndpd_delay = \"2s\"",
    "rekey_time = \"3s\"\nrand_time = 0\nlife_time = \"60s\"",
);

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn rekeys_by_strongswan_gateway_under_traffic() {
    require_root();
    let mut lab = Lab::new("k", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_swan(&gw_ns, &swan_gateway_conf());
    let config = mifsec_client_config(&lab, "", "");
    lab.start_mifsec("cl", &cl_ns, &config);
    rekeys_by_strongswan(&lab, "cl", &gw_ns, &cl_ns, "rw");
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn rekeys_by_strongswan_client_under_traffic() {
    require_root();
    let mut lab = Lab::new("m", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    let config = mifsec_gateway_config(&lab, "", "");
    lab.start_mifsec("gw", &gw_ns, &config);
    lab.start_swan(&cl_ns, &swan_client_conf());
    lab.swan_initiate(&cl_ns, "net");
    rekeys_by_strongswan(&lab, "gw", &cl_ns, &cl_ns, "home");
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn lifetime_rekeys_by_mifsec_client_under_traffic() {
    require_root();
    let mut lab = Lab::new("n", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_swan(&gw_ns, &swan_gateway_conf());
    let config = mifsec_client_config(&lab, MIFSEC_LIFETIMES.0, MIFSEC_LIFETIMES.1);
    lab.start_mifsec("cl", &cl_ns, &config);
    rekeys_by_mifsec_lifetimes(&lab, "cl", &gw_ns, &cl_ns);
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn lifetime_rekeys_by_mifsec_gateway_under_traffic() {
    require_root();
    let mut lab = Lab::new("l", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    let config = mifsec_gateway_config(&lab, MIFSEC_LIFETIMES.0, MIFSEC_LIFETIMES.1);
    lab.start_mifsec("gw", &gw_ns, &config);
    lab.start_swan(&cl_ns, &swan_client_conf());
    lab.swan_initiate(&cl_ns, "net");
    rekeys_by_mifsec_lifetimes(&lab, "gw", &cl_ns, &cl_ns);
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn dpd_clears_the_sas_when_strongswan_vanishes() {
    require_root();
    let mut lab = Lab::new("d", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_swan(&gw_ns, &swan_gateway_conf());
    let config = mifsec_client_config(&lab, "dpd_delay = \"2s\"\ndpd_action = \"clear\"", "");
    lab.start_mifsec("cl", &cl_ns, &config);
    lab.wait_established("cl");
    // Liveness checks are answered while strongSwan is there: two of them (INFORMATIONAL
    // requests charon parsed), and the SAs are still up.
    wait_until(WAIT, "two liveness checks answered by charon", || {
        lab.swan_log()
            .matches("parsed INFORMATIONAL request")
            .count()
            >= 2
    });
    lab.settled("cl", None);
    // strongSwan freezes (IKE and, with kernel-libipsec, ESP): the peer is gone.
    let pid_file = lab.swan_dir.as_ref().unwrap().join("charon.pid");
    let pid: libc::pid_t = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) on the charon this test started.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs(45);
    loop {
        let st = lab.status_json("cl");
        if st["ike_sas"].as_array().is_some_and(Vec::is_empty)
            && st["sas"].as_array().is_some_and(Vec::is_empty)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "mifsec kept its SAs: {st:#}\n{}",
            lab.log("cl")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // After the DPD delay and the 30 s retransmission give-up, not before. A lower bound
    // only: a loaded machine can make this later, never earlier.
    assert!(
        t0.elapsed() >= Duration::from_secs(25),
        "{:?}",
        t0.elapsed()
    );
    assert!(lab.log("cl").contains("failed: peer did not answer"));
    // SAFETY: as above; let it run so that it can be stopped.
    unsafe { libc::kill(pid, libc::SIGCONT) };
}

/// Traffic from the peer postpones the liveness checks: while replies come in through the
/// tunnel (the engine pushes the child's usage), mifsec sends charon no liveness check, and
/// once they stop, the checks come again.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn inbound_traffic_postpones_liveness_checks() {
    require_root();
    let mut lab = Lab::new("a", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_swan(&gw_ns, &swan_gateway_conf());
    let config = mifsec_client_config(&lab, "dpd_delay = \"1s\"\ndpd_action = \"clear\"", "");
    lab.start_mifsec("cl", &cl_ns, &config);
    lab.wait_established("cl");
    let checks = |lab: &Lab| {
        lab.swan_log()
            .matches("parsed INFORMATIONAL request")
            .count()
    };
    wait_until(
        WAIT,
        "a liveness check answered by charon while idle",
        || checks(&lab) >= 1,
    );
    // Six seconds of pings every 10 ms: six liveness intervals, all with traffic.
    let ping = lab.ping_stream("cl", &cl_ns, 600);
    let during = checks(&lab);
    let out = ping.wait_with_output().expect("ping output");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // One check may have been on its way before the first usage report of the stream.
    let after = checks(&lab);
    assert!(
        after <= during + 1,
        "{} liveness checks during six seconds of traffic\n{}",
        after - during,
        lab.log("cl")
    );
    wait_until(
        WAIT,
        "liveness checks again once the traffic stopped",
        || checks(&lab) > after,
    );
}

/// `mifsec ctl rekey` under a ping flood, as the client against a strongSwan gateway: a child
/// rekey, then an IKE rekey, each with new SPIs that strongSwan agrees on, and no ping lost.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn rekeys_by_mifsec_ctl_under_traffic() {
    require_root();
    let mut lab = Lab::new("q", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_swan(&gw_ns, &swan_gateway_conf());
    let config = mifsec_client_config(&lab, "", "");
    lab.start_mifsec("cl", &cl_ns, &config);
    lab.wait_established("cl");
    let s0 = lab.settled("cl", None);
    lab.flood("cl", &cl_ns, 400, || {
        let out = lab.mifsec("cl", &["ctl", "rekey", "home"]);
        assert!(out.status.success(), "ctl rekey: {}", text(&out));
        // The IKE rekey once the child rekey has completed (a new child, the old one gone).
        lab.settled("cl", Some(&s0));
        let out = lab.mifsec("cl", &["ctl", "rekey", "home", "--ike"]);
        assert!(out.status.success(), "ctl rekey --ike: {}", text(&out));
    });
    let s1 = lab.settled("cl", Some(&s0));
    assert_ne!(s1.child_in, s0.child_in, "the child SA was not rekeyed");
    assert_ne!(s1.spi_i, s0.spi_i, "the IKE SA was not rekeyed");
    lab.swan_agrees(&gw_ns, &s1);
    let out = lab.mifsec("cl", &["ctl", "rekey", "nope"]);
    assert!(
        !out.status.success(),
        "rekey of an unknown connection must fail"
    );
}
