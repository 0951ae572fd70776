//! Every IKE and ESP algorithm mifsec implements, negotiated with strongSwan 5.9 in both
//! roles: three cases that between them use each cipher (AES-GCM-16 128 and 256,
//! ChaCha20-Poly1305) for IKE and for ESP, each PRF (HMAC-SHA2-256/384/512), each group
//! (X25519, ECP-256, ECP-384), and PFS in each group on a child rekey; a fourth, mifsec's
//! default ESP proposal (every AEAD, ESN or not) against a plain one. strongSwan's
//! kernel-libipsec has no extended sequence numbers ("IPsec SA: ESN not supported"), so here
//! mifsec offers ESN or not and must settle on 32-bit numbers; ESN itself is tested between
//! mifsec peers (the IKE harness, the engine's ESN tests). Each
//! case asserts the algorithms both sides report, pings through the tunnel, moves an iperf3
//! TCP transfer through it, and rekeys the child (with PFS) under a ping flood.
//!
//! Needs root (namespaces, TUN, strongSwan); see swan/mod.rs.

mod swan;

use swan::*;

/// One negotiation: swanctl proposal strings and what both sides must report.
struct Case {
    tag: &'static str,
    ike: &'static str,
    /// mifsec's `esp_proposals`.
    esp: &'static str,
    /// strongSwan's `esp_proposals`.
    swan_proposal: &'static str,
    /// `swanctl --list-sas` and `mifsec status` name of the IKE algorithms.
    ike_names: &'static str,
    /// strongSwan's name of the child's AEAD (with `/ESN` when negotiated).
    swan_esp: &'static str,
    /// mifsec's name of the child's AEAD.
    mifsec_esp: &'static str,
    esn: bool,
}

const CASES: [Case; 4] = [
    Case {
        tag: "a",
        ike: "aes128gcm16-prfsha256-x25519",
        esp: "chacha20poly1305-ecp384-esn-noesn",
        swan_proposal: "chacha20poly1305-ecp384",
        ike_names: "AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519",
        swan_esp: "CHACHA20_POLY1305",
        mifsec_esp: "chacha20poly1305",
        esn: false,
    },
    Case {
        tag: "b",
        ike: "aes256gcm16-prfsha384-ecp256",
        esp: "aes128gcm16-x25519",
        swan_proposal: "aes128gcm16-x25519",
        ike_names: "AES_GCM_16-256/PRF_HMAC_SHA2_384/ECP_256",
        swan_esp: "AES_GCM_16-128",
        mifsec_esp: "aes128gcm16",
        esn: false,
    },
    Case {
        tag: "c",
        ike: "chacha20poly1305-prfsha512-ecp384",
        esp: "aes256gcm16-ecp256-noesn",
        swan_proposal: "aes256gcm16-ecp256-noesn",
        ike_names: "CHACHA20_POLY1305/PRF_HMAC_SHA2_512/ECP_384",
        swan_esp: "AES_GCM_16-256",
        mifsec_esp: "aes256gcm16",
        esn: false,
    },
    // mifsec's default (every AEAD, ESN or not) against a peer without ESN.
    Case {
        tag: "d",
        ike: "aes128gcm16-prfsha256-x25519",
        esp: "default",
        swan_proposal: "aes128gcm16",
        ike_names: "AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519",
        swan_esp: "AES_GCM_16-128",
        mifsec_esp: "aes128gcm16",
        esn: false,
    },
];

/// What both sides report, traffic, and a PFS child rekey by strongSwan under pings.
/// `side` is mifsec's control socket name, `swan_ns` where charon runs, `cl_ns` and
/// `gw_ns` the client and gateway namespaces.
fn check(lab: &Lab, case: &Case, side: &str, swan_ns: &str, cl_ns: &str, gw_ns: &str) {
    let st = lab.wait_established(side);
    let ike = &st["ike_sas"][0];
    assert_eq!(ike["algorithms"], case.ike_names, "{st:#}");
    let child = &ike["children"][0];
    assert_eq!(child["cipher"], case.mifsec_esp, "{st:#}");
    assert_eq!(child["esn"], case.esn, "{st:#}");
    let sas = text(&lab.swanctl(swan_ns, &["--list-sas"]));
    eprintln!("--- case {}: swanctl --list-sas:\n{sas}", case.tag);
    assert!(sas.contains("ESTABLISHED"), "{sas}");
    assert!(sas.contains(case.ike_names), "{sas}");
    assert!(sas.contains("INSTALLED, TUNNEL-in-UDP"), "{sas}");
    let esp_line = sas
        .lines()
        .find(|l| l.contains("INSTALLED"))
        .unwrap_or_default();
    assert!(
        esp_line.contains(&format!("ESP:{}", case.swan_esp))
            && (case.esn || !esp_line.contains("/ESN")),
        "strongSwan's child is not {}: {esp_line}",
        case.swan_esp
    );

    let ping = lab.ping(cl_ns, "10.88.0.1");
    assert!(
        ping.status.success(),
        "ping through the tunnel ({}): {}\n--- mifsec log:\n{}\n--- charon log:\n{}",
        case.tag,
        text(&ping),
        lab.log(side),
        lab.swan_log()
    );
    let report = lab.iperf3(gw_ns, cl_ns, 2, &[]);
    let mbps = iperf3_bps(&report) / 1e6;
    eprintln!(
        "--- case {}: iperf3 TCP through the tunnel: {mbps:.0} Mbit/s",
        case.tag
    );
    assert!(mbps > 1.0, "iperf3 moved {mbps} Mbit/s: {report:#}");

    // A child rekey by strongSwan, with PFS in the case's group, under traffic.
    let s0 = lab.settled(side, None);
    lab.flood(side, cl_ns, 200, || {
        let out = lab.swanctl(swan_ns, &["--rekey", "--child", "net"]);
        assert!(out.status.success(), "swanctl --rekey: {}", text(&out));
    });
    let s1 = lab.settled(side, Some(&s0));
    assert_ne!(s1.child_in, s0.child_in);
    lab.swan_agrees(swan_ns, &s1);
    let st = lab.status_json(side);
    assert_eq!(st["ike_sas"][0]["children"][0]["cipher"], case.mifsec_esp);
    assert_eq!(st["ike_sas"][0]["children"][0]["esn"], case.esn);
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn every_proposal_mifsec_initiator_strongswan_responder() {
    require_root();
    for case in &CASES {
        let mut lab = Lab::new(&format!("p{}", case.tag), BIN);
        let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
        lab.start_swan(
            &gw_ns,
            &swan_gateway(&[("IKE", case.ike), ("ESP", case.swan_proposal)]),
        );
        let config = mifsec_client(&lab, &[("IKE", case.ike), ("ESP", case.esp)]);
        lab.start_mifsec("cl", &cl_ns, &config);
        check(&lab, case, "cl", &gw_ns, &cl_ns, &gw_ns);
    }
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn every_proposal_strongswan_initiator_mifsec_responder() {
    require_root();
    for case in &CASES {
        let mut lab = Lab::new(&format!("q{}", case.tag), BIN);
        let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
        let config = mifsec_gateway(&lab, &[("IKE", case.ike), ("ESP", case.esp)]);
        lab.start_mifsec("gw", &gw_ns, &config);
        lab.start_swan(
            &cl_ns,
            &swan_client(&[("IKE", case.ike), ("ESP", case.swan_proposal)]),
        );
        lab.swan_initiate(&cl_ns, "net");
        check(&lab, case, "gw", &cl_ns, &cl_ns, &gw_ns);
    }
}
