//! Several child SAs under one IKE SA, against strongSwan 5.9: the first child comes with
//! IKE_AUTH, the second with a CREATE_CHILD_SA (with PFS), in both roles. Each case asserts
//! that strongSwan (`swanctl --list-sas`) shows both children INSTALLED under one IKE SA,
//! that `mifsec status` shows both, and that a ping reaches each child's network.
//!
//! Needs root (namespaces, TUN, strongSwan); see swan_interop.rs.

mod swan;

use std::time::{Duration, Instant};

use serde_json::Value;
use swan::*;

/// The strongSwan gateway: 10.88.0.0/16 in child `net`, 10.89.0.0/16 in child `b`
/// (with PFS), a pool, forced UDP encapsulation.
fn swan_gateway_two_children() -> String {
    swan_gateway(&[
        ("ESP", "aes128gcm16"),
        (
            "CHILDREN",
            "      b {\n        local_ts = 10.89.0.0/16\n        esp_proposals = aes128gcm16-x25519\n      }",
        ),
    ])
}

/// The strongSwan client: child `net` to 10.88.0.0/16, child `b` to 10.89.0.0/16 (PFS).
fn swan_client_two_children() -> String {
    swan_client(&[
        ("ESP", "aes128gcm16"),
        (
            "CHILDREN",
            "      b {\n        remote_ts = 10.89.0.0/16\n        esp_proposals = aes128gcm16-x25519\n      }\n      \
             c {\n        remote_ts = 10.90.0.0/16\n        esp_proposals = aes128gcm16\n      }",
        ),
    ])
}

/// The second child of the mifsec configurations (the first, `net`, is the shared one).
const SECOND_CHILD_CLIENT: &str = r#"
[connections.home.children.b]
remote_ts = ["10.89.0.0/16"]
esp_proposals = ["aes128gcm16-x25519"]
"#;

const SECOND_CHILD_GATEWAY: &str = r#"
[connections.rw.children.b]
local_ts = ["10.89.0.0/16"]
esp_proposals = ["aes128gcm16-x25519"]
"#;

/// Waits until `side` shows one established IKE SA with exactly the children `names`
/// installed (nothing rekeyed waiting), each with inbound SPIs not in `not`. Returns the
/// IKE SA's status.
fn wait_children(lab: &Lab, side: &str, names: &[&str], not: &[String]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(25);
    loop {
        let st = lab.status_json(side);
        if let Some([ike]) = st["ike_sas"].as_array().map(Vec::as_slice) {
            let children = ike["children"].as_array().cloned().unwrap_or_default();
            let mut got: Vec<&str> = children
                .iter()
                .filter(|c| c["state"] == "INSTALLED")
                .filter(|c| !not.iter().any(|n| c["spi_in"] == n.as_str()))
                .filter_map(|c| c["name"].as_str())
                .collect();
            got.sort_unstable();
            let mut want = names.to_vec();
            want.sort_unstable();
            if ike["state"] == "ESTABLISHED" && got == want && children.len() == names.len() {
                return ike.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "mifsec ({side}) has not children {names:?}: {st:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
            lab.log(side),
            lab.swan_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// strongSwan's `--list-sas` in `ns` shows one IKE SA with children `net` and `b`, both
/// INSTALLED, with the SPIs mifsec reports.
fn swan_shows_both(lab: &Lab, ns: &str, ike: &Value) -> String {
    let sas = text(&lab.swanctl(ns, &["--list-sas"]));
    assert_eq!(sas.matches("ESTABLISHED").count(), 1, "one IKE SA: {sas}");
    assert_eq!(
        sas.matches("INSTALLED, TUNNEL-in-UDP").count(),
        2,
        "two children: {sas}"
    );
    for name in ["net", "b"] {
        assert!(
            sas.lines()
                .any(|l| l.trim_start().starts_with(&format!("{name}: #"))
                    && l.contains("INSTALLED")),
            "child {name}: {sas}"
        );
    }
    for c in ike["children"].as_array().unwrap() {
        for k in ["spi_in", "spi_out"] {
            let spi = c[k].as_str().unwrap();
            assert!(sas.contains(spi), "strongSwan lacks {spi}: {sas}");
        }
    }
    sas
}

fn spis_in(ike: &Value) -> Vec<String> {
    ike["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["spi_in"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn two_children_mifsec_client_strongswan_gateway() {
    require_root();
    let mut lab = Lab::new("ch", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    ip(&["-n", &gw_ns, "addr", "add", "10.89.0.1/32", "dev", "lo"]);
    lab.start_swan(&gw_ns, &swan_gateway_two_children());
    let config = mifsec_client_config(&lab, "", "").replace(
        "esp_proposals = [\"aes128gcm16-x25519\"]\n",
        &format!("esp_proposals = [\"aes128gcm16\"]\n{SECOND_CHILD_CLIENT}"),
    );
    lab.start_mifsec("cl", &cl_ns, &config);
    let ike = wait_children(&lab, "cl", &["net", "b"], &[]);
    assert_eq!(ike["initiator"], true);
    let sas = swan_shows_both(&lab, &gw_ns, &ike);
    eprintln!("--- swanctl --list-sas (gateway):\n{sas}");
    let human = text(&lab.mifsec("cl", &["status"]));
    eprintln!("--- mifsec status (client):\n{human}");
    assert!(
        human.contains("home-net-") && human.contains("home-b-"),
        "{human}"
    );
    lab.ping_ok("cl", &cl_ns, "10.88.0.1");
    lab.ping_ok("cl", &cl_ns, "10.89.0.1");

    // `ctl rekey` rekeys both children; both work afterwards.
    let before = spis_in(&ike);
    let out = lab.mifsec("cl", &["ctl", "rekey", "home"]);
    assert!(out.status.success(), "ctl rekey: {}", text(&out));
    let ike = wait_children(&lab, "cl", &["net", "b"], &before);
    swan_shows_both(&lab, &gw_ns, &ike);
    lab.ping_ok("cl", &cl_ns, "10.88.0.1");
    lab.ping_ok("cl", &cl_ns, "10.89.0.1");

    // Terminate: both sides forget everything.
    lab.terminate_and_wait("cl", "home", &gw_ns);
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn two_children_strongswan_client_mifsec_gateway() {
    require_root();
    let mut lab = Lab::new("cr", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    ip(&["-n", &gw_ns, "addr", "add", "10.89.0.1/32", "dev", "lo"]);
    let config = mifsec_gateway_config(&lab, "", "").replace(
        "esp_proposals = [\"aes128gcm16-x25519\"]\n",
        &format!("esp_proposals = [\"aes128gcm16\"]\n{SECOND_CHILD_GATEWAY}"),
    );
    lab.start_mifsec("gw", &gw_ns, &config);
    lab.start_swan(&cl_ns, &swan_client_two_children());
    for child in ["net", "b"] {
        lab.swan_initiate(&cl_ns, child);
    }
    let ike = wait_children(&lab, "gw", &["net", "b"], &[]);
    assert_eq!(ike["initiator"], false);
    assert_eq!(ike["peer_vip"], "10.77.0.1");
    // Both children's peer side is the virtual IP.
    for c in ike["children"].as_array().unwrap() {
        assert_eq!(c["remote_ts"][0], "10.77.0.1/32", "{c}");
    }
    let sas = swan_shows_both(&lab, &cl_ns, &ike);
    eprintln!("--- swanctl --list-sas (client):\n{sas}");
    eprintln!(
        "--- mifsec status (gateway):\n{}",
        text(&lab.mifsec("gw", &["status"]))
    );
    lab.ping_ok("gw", &cl_ns, "10.88.0.1");
    lab.ping_ok("gw", &cl_ns, "10.89.0.1");

    // A child for selectors no configured child allows (10.90.0.0/16) is refused with
    // TS_UNACCEPTABLE; the IKE SA and both children stay.
    let out = lab.swanctl(&cl_ns, &["--initiate", "--child", "c"]);
    assert!(!out.status.success(), "child c must fail: {}", text(&out));
    // swanctl streams charon's log of the exchange.
    assert!(text(&out).contains("TS_UNACCEPTABLE"), "{}", text(&out));
    let ike = wait_children(&lab, "gw", &["net", "b"], &[]);
    swan_shows_both(&lab, &cl_ns, &ike);
    lab.ping_ok("gw", &cl_ns, "10.89.0.1");

    // strongSwan deletes child b: the gateway removes it; the IKE SA and `net` stay.
    let out = lab.swanctl(&cl_ns, &["--terminate", "--child", "b"]);
    assert!(out.status.success(), "terminate b: {}", text(&out));
    wait_children(&lab, "gw", &["net"], &[]);
    lab.ping_ok("gw", &cl_ns, "10.88.0.1");
}
