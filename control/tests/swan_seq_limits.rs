//! Sequence-number limits of child SAs with real daemons: mifsec as the client of a
//! strongSwan 5.9 gateway, with the outbound sequence space lowered by the test-only knob
//! `[dataplane] test_seq_limit`, rekeys its child SA each time the soft limit (7/8 of the
//! space) is crossed, under a ping flood, without losing a ping; and, when no rekey can
//! complete in time (strongSwan stopped), deletes a child that ran out at once and creates
//! it again once strongSwan answers (also in the IKE harness).
//!
//! Needs root (namespaces, TUN, strongSwan); see swan_interop.rs.

mod swan;

use swan::*;

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn soft_sequence_limit_rekeys_mifsec_client_under_traffic() {
    require_root();
    let mut lab = Lab::new("sq", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_swan(&gw_ns, &swan_gateway_conf());
    // 400 sequence numbers: a rekey at 350 outbound packets. Lifetimes stay at their
    // (hour-long) defaults, so every rekey here comes from the sequence numbers.
    let config = mifsec_client_config(&lab, "", "").replacen(
        "[dataplane]\n",
        "[dataplane]\ntest_seq_limit = 400\n",
        1,
    );
    lab.start_mifsec("cl", &cl_ns, &config);
    lab.wait_established("cl");
    let s0 = lab.settled("cl", None);
    lab.swan_agrees(&gw_ns, &s0);

    // 800 echo requests, one outbound packet each: two soft limits crossed at least.
    lab.flood("cl", &cl_ns, 800, || {});

    lab.child_rekeyed("cl", &s0, &gw_ns);
    let log = lab.log("cl");
    let soft = log
        .matches("at its sequence-number soft limit: rekeying it")
        .count();
    let rekeys = log.matches("child net rekeyed").count();
    eprintln!("--- {soft} soft limits, {rekeys} child rekeys");
    assert!(soft >= 2, "{log}");
    assert!(rekeys >= soft, "{log}");
    assert!(!log.contains("out of sequence numbers"), "{log}");
    assert!(!log.contains("failed"), "{log}");
    lab.swan_has_one_child(&gw_ns);
    // No engine SA ever went past its limit.
    let st = lab.status_json("cl");
    for sa in st["sas"].as_array().unwrap() {
        assert!(sa["out_seq"].as_u64().unwrap_or(0) <= 400, "{sa:#}");
    }
}

/// The child runs out while no rekey can complete (charon is stopped with SIGSTOP and an
/// IKE rekey of ours waits for it, so the child rekey asked for at the soft limit stays
/// queued): mifsec deletes the child at once and, once strongSwan answers again, creates
/// it anew in the rekeyed IKE SA; traffic flows again.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn exhausted_child_is_deleted_and_created_again() {
    use std::time::{Duration, Instant};
    require_root();
    let mut lab = Lab::new("sx", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_swan(&gw_ns, &swan_gateway_conf());
    let config = mifsec_client_config(&lab, "", "").replacen(
        "[dataplane]\n",
        "[dataplane]\ntest_seq_limit = 40\n",
        1,
    );
    lab.start_mifsec("cl", &cl_ns, &config);
    lab.wait_established("cl");
    let s0 = lab.settled("cl", None);
    let charon: libc::pid_t =
        std::fs::read_to_string(lab.swan_dir.as_ref().unwrap().join("charon.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
    // SAFETY: kill(2) on the charon this test started; no memory is involved.
    assert_eq!(unsafe { libc::kill(charon, libc::SIGSTOP) }, 0);
    let out = lab.mifsec("cl", &["ctl", "rekey", "home", "--ike"]);
    assert!(out.status.success(), "{}", text(&out));
    // 60 echo requests, unanswered: the child's 40 sequence numbers run out.
    let _ = run(std::process::Command::new("ip").args([
        "netns",
        "exec",
        &cl_ns,
        "ping",
        "-q",
        "-i",
        "0.02",
        "-c",
        "60",
        "-W",
        "1",
        "10.88.0.1",
    ]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !lab
        .log("cl")
        .contains("out of sequence numbers: deleting it and creating it again")
    {
        assert!(Instant::now() < deadline, "no deletion:\n{}", lab.log("cl"));
        std::thread::sleep(Duration::from_millis(50));
    }
    // Deleted from the engine at once.
    let st = lab.status_json("cl");
    assert!(
        st["sas"].as_array().unwrap().is_empty(),
        "the exhausted child is still installed: {st:#}"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(charon, libc::SIGCONT) }, 0);
    let s1 = lab.settled("cl", Some(&s0));
    assert_ne!(s1.spi_i, s0.spi_i, "the IKE SA was rekeyed");
    assert_ne!(s1.child_in, s0.child_in);
    lab.swan_agrees(&gw_ns, &s1);
    let ping = lab.ping(&cl_ns, "10.88.0.1");
    assert!(ping.status.success(), "{}\n{}", text(&ping), lab.log("cl"));
    lab.swan_has_one_child(&gw_ns);
    let log = lab.log("cl");
    eprintln!("--- mifsec log:\n{log}");
    assert!(!log.contains("failed"), "{log}");
}
