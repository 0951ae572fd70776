//! Sequence-number limits of child SAs with real daemons: mifsec as the client of a
//! strongSwan 5.9 gateway, with the outbound sequence space lowered by the test-only knob
//! `[dataplane] test_seq_limit`, rekeys its child SA each time the soft limit (7/8 of the
//! space) is crossed, under a ping flood, without losing a ping. (Deleting an exhausted
//! child, and re-creating it, is tested in the IKE harness: with a working peer a rekey
//! always completes first.)
//!
//! Needs root (namespaces, TUN, strongSwan); see swan_interop.rs.

mod swan;

use swan::*;

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn soft_sequence_limit_rekeys_mifsec_client_under_traffic() {
    require_root();
    let mut lab = Lab::new("sq");
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

    let s1 = lab.settled("cl", Some(&s0));
    assert_eq!(
        (&s1.spi_i, &s1.spi_r),
        (&s0.spi_i, &s0.spi_r),
        "same IKE SA"
    );
    assert_ne!(s1.child_in, s0.child_in);
    assert_ne!(s1.child_out, s0.child_out);
    lab.swan_agrees(&gw_ns, &s1);
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
    let sas = text(&lab.swanctl(&gw_ns, &["--list-sas"]));
    assert_eq!(sas.matches("ESTABLISHED").count(), 1, "{sas}");
    assert_eq!(sas.matches("INSTALLED").count(), 1, "{sas}");
    // No engine SA ever went past its limit.
    let st = lab.status_json("cl");
    for sa in st["sas"].as_array().unwrap() {
        assert!(sa["out_seq"].as_u64().unwrap_or(0) <= 400, "{sa:#}");
    }
}
