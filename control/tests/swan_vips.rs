//! IPv4 and IPv6 virtual IPs and DNS servers (INTERNAL_IP4_ADDRESS, INTERNAL_IP6_ADDRESS,
//! INTERNAL_IP4_DNS, INTERNAL_IP6_DNS) against strongSwan 5.9, in both roles: both
//! addresses assigned (as `swanctl --list-sas` and `mifsec status` report), the DNS servers
//! shown, and ping and ping -6 through the tunnel.
//!
//! Needs root (namespaces, TUN, strongSwan); see swan_interop.rs.

mod swan;

use serde_json::Value;
use swan::*;

/// The strongSwan gateway: pools of both families (DNS 10.88.0.53 and fd88::53), one
/// child for 10.88.0.0/16 and fd88::/64.
fn swan_gateway_dual_stack() -> String {
    swan_gateway(&[
        ("POOLS", "p4, p6"),
        ("LOCAL_TS", "10.88.0.0/16, fd88::/64"),
        ("ESP", "aes128gcm16"),
        ("P4", "    dns = 10.88.0.53"),
        (
            "POOLS_EXTRA",
            "  p6 {\n    addrs = fd77::/120\n    dns = fd88::53\n  }",
        ),
    ])
}

fn swan_client_dual_stack() -> String {
    swan_client(&[
        ("VIPS", "0.0.0.0, ::"),
        ("REMOTE_TS", "10.88.0.0/16, fd88::/64"),
        ("ESP", "aes128gcm16"),
    ])
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn dual_stack_mifsec_client_strongswan_gateway() {
    require_root();
    let mut lab = Lab::new("v6", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    ip(&["-n", &gw_ns, "addr", "add", "fd88::1/128", "dev", "lo"]);
    lab.start_swan(&gw_ns, &swan_gateway_dual_stack());
    let config = mifsec_client_config(&lab, "", "")
        .replace("vips = [\"0.0.0.0\"]", "vips = [\"0.0.0.0\", \"::\"]")
        .replace(
            "remote_ts = [\"10.88.0.0/16\"]",
            "remote_ts = [\"10.88.0.0/16\", \"fd88::/64\"]",
        )
        .replace("\"aes128gcm16-x25519\"", "\"aes128gcm16\"");
    lab.start_mifsec("cl", &cl_ns, &config);
    let st = lab.wait_established("cl");
    let ike = &st["ike_sas"][0];
    assert_eq!(
        strings(&ike["vips"]),
        vec!["10.77.0.1".to_owned(), "fd77::1".to_owned()],
        "{ike:#}"
    );
    assert_eq!(
        strings(&ike["dns"]),
        vec!["10.88.0.53".to_owned(), "fd88::53".to_owned()],
        "{ike:#}"
    );
    let child = &ike["children"][0];
    assert_eq!(
        strings(&child["local_ts"]),
        vec!["10.77.0.1/32".to_owned(), "fd77::1/128".to_owned()]
    );
    let human = text(&lab.mifsec("cl", &["status"]));
    eprintln!("--- mifsec status (client):\n{human}");
    assert!(human.contains("[10.77.0.1 fd77::1]"), "{human}");
    assert!(human.contains("dns 10.88.0.53 fd88::53"), "{human}");

    let sas = text(&lab.swanctl(&gw_ns, &["--list-sas"]));
    eprintln!("--- swanctl --list-sas (gateway):\n{sas}");
    assert!(sas.contains("10.77.0.1/32"), "{sas}");
    assert!(sas.contains("fd77::1/128"), "{sas}");
    assert!(sas.contains("INSTALLED, TUNNEL-in-UDP"), "{sas}");

    lab.ping_ok("cl", &cl_ns, "10.88.0.1");
    lab.ping_ok("cl", &cl_ns, "fd88::1");
    // Both pings went through the child SA (three echo requests and replies each).
    let (inp, outp) = counters(&lab.status_json("cl"));
    assert!(inp >= 6 && outp >= 6, "SA counters in {inp} out {outp}");
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn dual_stack_strongswan_client_mifsec_gateway() {
    require_root();
    let mut lab = Lab::new("g6", BIN);
    let gw_ns = lab.gw_ns.clone();
    let cl_ns = lab.cl_ns.clone();
    ip(&["-n", &gw_ns, "addr", "add", "fd88::1/128", "dev", "lo"]);
    let config = mifsec_gateway_config(&lab, "", "")
        .replace("pools = [\"p4\"]", "pools = [\"p4\", \"p6\"]")
        .replace(
            "local_ts = [\"10.88.0.0/16\"]",
            "local_ts = [\"10.88.0.0/16\", \"fd88::/64\"]",
        )
        .replace("\"aes128gcm16-x25519\"", "\"aes128gcm16\"")
        .replace(
            "addrs = \"10.77.0.0/24\"\n",
            "addrs = \"10.77.0.0/24\"\ndns = [\"10.88.0.53\"]\n\n\
             [pools.p6]\naddrs = \"fd77::/120\"\ndns = [\"fd88::53\"]\n",
        );
    lab.start_mifsec("gw", &gw_ns, &config);
    lab.start_swan(&cl_ns, &swan_client_dual_stack());
    let log = text(&lab.swan_initiate(&cl_ns, "net"));
    // strongSwan processed both addresses and both DNS servers.
    for a in [
        "installing new virtual IP 10.77.0.1",
        "installing new virtual IP fd77::1",
        "INTERNAL_IP4_DNS",
        "INTERNAL_IP6_DNS",
    ] {
        assert!(log.contains(a), "{a}: {log}");
    }
    let st = lab.wait_established("gw");
    let ike = &st["ike_sas"][0];
    assert_eq!(
        strings(&ike["peer_vips"]),
        vec!["10.77.0.1".to_owned(), "fd77::1".to_owned()],
        "{ike:#}"
    );
    assert_eq!(
        strings(&ike["dns"]),
        vec!["10.88.0.53".to_owned(), "fd88::53".to_owned()]
    );
    assert_eq!(
        strings(&ike["children"][0]["remote_ts"]),
        vec!["10.77.0.1/32".to_owned(), "fd77::1/128".to_owned()]
    );
    let human = text(&lab.mifsec("gw", &["status"]));
    eprintln!("--- mifsec status (gateway):\n{human}");
    assert!(human.contains("[10.77.0.1 fd77::1]"), "{human}");

    let sas = text(&lab.swanctl(&cl_ns, &["--list-sas"]));
    eprintln!("--- swanctl --list-sas (client):\n{sas}");
    assert!(sas.contains("10.77.0.1/32"), "{sas}");
    assert!(sas.contains("fd77::1/128"), "{sas}");
    assert!(sas.contains("fd88::/64"), "{sas}");

    lab.ping_ok("gw", &cl_ns, "10.88.0.1");
    lab.ping_ok("gw", &cl_ns, "fd88::1");
    // Both pings went through the child SA (three echo requests and replies each).
    let (inp, outp) = counters(&lab.status_json("gw"));
    assert!(inp >= 6 && outp >= 6, "SA counters in {inp} out {outp}");

    // Terminating the IKE SA returns both leases: a new IKE SA gets the same addresses.
    let out = lab.swanctl(&cl_ns, &["--terminate", "--ike", "home"]);
    assert!(out.status.success(), "terminate: {}", text(&out));
    lab.swan_initiate(&cl_ns, "net");
    let st = lab.wait_established("gw");
    let ikes = st["ike_sas"].as_array().unwrap();
    let up: Vec<&Value> = ikes
        .iter()
        .filter(|i| i["state"] == "ESTABLISHED")
        .collect();
    assert_eq!(up.len(), 1, "{st:#}");
    assert_eq!(
        strings(&up[0]["peer_vips"]),
        vec!["10.77.0.1".to_owned(), "fd77::1".to_owned()],
        "the leases came back: {st:#}"
    );
}
