//! IKE fragmentation (RFC 7383) with strongSwan 5.9: both sides configured with a small
//! fragment size so that IKE_AUTH (and a CREATE_CHILD_SA child rekey) go in SKF fragments
//! both ways. Asserts the SA comes up, traffic flows, charon's log shows it split and
//! reassembled IKE messages, and mifsec's status shows fragments sent and received.
//!
//! Needs root (namespaces, TUN, strongSwan); without it they fail, and
//! `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` reports them as ignored.

mod swan;

use swan::*;

/// The fragment size of both sides: the smallest mifsec accepts, so that every IKE_AUTH
/// message and every CREATE_CHILD_SA with PFS is split.
const FRAGMENT_SIZE: u32 = 200;

/// charon's extra settings: the fragment size, and its file log flushed line by line (it
/// is read while charon runs; the section merges with swan.sh's `filelog.swan`).
fn charon_extra() -> String {
    format!("fragment_size = {FRAGMENT_SIZE}\nfilelog {{\nswan {{\nflush_line = yes\n}}\n}}")
}

/// Asserts what charon logged about fragments: that it split messages it sent and
/// reassembled messages it received.
fn assert_swan_fragmented(lab: &Lab) {
    let log = lab.swan_log();
    let frag_lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("fragment") || l.contains("EF("))
        .collect();
    eprintln!(
        "--- charon log lines about fragments:\n{}",
        frag_lines.join("\n")
    );
    assert!(
        log.contains("splitting IKE message"),
        "charon sent no fragments:\n{log}"
    );
    assert!(
        log.contains("reassembled fragmented IKE message"),
        "charon reassembled no fragments:\n{log}"
    );
}

/// Asserts that charon sent and received CREATE_CHILD_SA messages in fragments.
fn assert_swan_rekey_fragmented(lab: &Lab) {
    let log = lab.swan_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("CREATE_CHILD_SA") && l.contains("EF("))
        .collect();
    eprintln!(
        "--- charon log, CREATE_CHILD_SA fragments:\n{}",
        lines.join("\n")
    );
    assert!(
        lines.iter().any(|l| l.contains("parsed CREATE_CHILD_SA"))
            && lines
                .iter()
                .any(|l| l.contains("generating CREATE_CHILD_SA")),
        "{log}"
    );
}

/// Asserts mifsec's status for the one IKE SA of `side`: fragmentation negotiated, and
/// fragments sent and received; returns (sent, received).
fn assert_mifsec_fragmented(lab: &Lab, side: &str) -> (u64, u64) {
    let st = lab.status_json(side);
    let ike = &st["ike_sas"][0];
    assert_eq!(ike["fragmentation"], true, "{st:#}");
    let sent = ike["fragments_sent"].as_u64().unwrap_or(0);
    let received = ike["fragments_received"].as_u64().unwrap_or(0);
    assert!(sent >= 2 && received >= 2, "{st:#}");
    (sent, received)
}

/// The ping through the tunnel, with diagnostics on failure.
fn ping_through(lab: &Lab, side: &str, ns: &str) {
    let ping = lab.ping(ns, "10.88.0.1");
    assert!(
        ping.status.success(),
        "ping through the tunnel: {}\n--- status:\n{:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
        text(&ping),
        lab.status_json(side),
        lab.log(side),
        lab.swan_log()
    );
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn fragmented_mifsec_initiator_strongswan_responder() {
    require_root();
    let mut lab = Lab::new("fi", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    lab.start_swan_with(&gw_ns, &swan_gateway_conf(), &charon_extra());
    let config = mifsec_client_config(
        &lab,
        &format!("fragmentation = \"yes\"\nfragment_size = {FRAGMENT_SIZE}"),
        "",
    );
    lab.start_mifsec("cl", &cl_ns, &config);
    let spis = lab.settled("cl", None);
    lab.swan_agrees(&gw_ns, &spis);
    ping_through(&lab, "cl", &cl_ns);
    assert_swan_fragmented(&lab);
    let (sent, received) = assert_mifsec_fragmented(&lab, "cl");
    let log = lab.log("cl");
    assert!(log.contains("fragmentation on"), "{log}");
    // strongSwan sends SIGNATURE_HASH_ALGORITHMS too; mifsec logs what it recorded.
    assert!(log.contains("peer signature hashes ["), "{log}");
    assert!(!log.contains("peer signature hashes []"), "{log}");

    // A child rekey by mifsec (CREATE_CHILD_SA with a KE payload): fragmented both ways.
    let out = lab.mifsec("cl", &["ctl", "rekey", "home"]);
    assert!(out.status.success(), "ctl rekey: {}", text(&out));
    let after = lab.settled("cl", Some(&spis));
    assert_eq!(
        (after.spi_i.as_str(), after.spi_r.as_str()),
        (spis.spi_i.as_str(), spis.spi_r.as_str())
    );
    lab.swan_agrees(&gw_ns, &after);
    let (sent2, received2) = assert_mifsec_fragmented(&lab, "cl");
    assert!(
        sent2 > sent && received2 > received,
        "{sent}->{sent2} {received}->{received2}"
    );
    ping_through(&lab, "cl", &cl_ns);
    assert_swan_rekey_fragmented(&lab);
    eprintln!(
        "--- mifsec status (client):\n{:#}",
        lab.status_json("cl")["ike_sas"][0]
    );
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn fragmented_strongswan_initiator_mifsec_responder() {
    require_root();
    let mut lab = Lab::new("fr", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    let config = mifsec_gateway_config(&lab, "", "");
    // The daemon-wide default this time.
    let config = format!("[ike]\nfragment_size = {FRAGMENT_SIZE}\n\n{config}");
    lab.start_mifsec("gw", &gw_ns, &config);
    lab.start_swan_with(&cl_ns, &swan_client_conf(), &charon_extra());
    lab.swan_initiate(&cl_ns, "net");
    let spis = lab.settled("gw", None);
    lab.swan_agrees(&cl_ns, &spis);
    ping_through(&lab, "gw", &cl_ns);
    assert_swan_fragmented(&lab);
    let (sent, received) = assert_mifsec_fragmented(&lab, "gw");

    // A child rekey by strongSwan: its fragmented CREATE_CHILD_SA request, our fragmented
    // response.
    let out = lab.swanctl(&cl_ns, &["--rekey", "--child", "net"]);
    assert!(out.status.success(), "swanctl --rekey: {}", text(&out));
    let after = lab.settled("gw", Some(&spis));
    lab.swan_agrees(&cl_ns, &after);
    let (sent2, received2) = assert_mifsec_fragmented(&lab, "gw");
    assert!(
        sent2 > sent && received2 > received,
        "{sent}->{sent2} {received}->{received2}"
    );
    ping_through(&lab, "gw", &cl_ns);
    assert_swan_rekey_fragmented(&lab);
}
