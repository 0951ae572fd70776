//! Transport-mode mobility with the multi-interface extension (issue 11 item 5, PROTOCOL
//! 6.5) between two mifsec daemons in the multi-interface lab (`mifsec_testkit::mif`):
//!
//! - a transport-mode child SA between the client's c2 (198.18.34.2) and the gateway's g1
//!   (198.18.41.2), negotiated in IKE_AUTH with MIF, confined by `interfaces` to those two
//!   interfaces on each side (its selectors are its outer addresses); the IKE SA itself is
//!   on c1;
//! - the gateway's policy for the child (`remote_ts`) allows the client's 198.18.33.0/24
//!   and 198.18.34.0/24 but not 198.18.36.0/24, the address of the client's third
//!   interface c3: a HARD_HANDOVER c2 -> c3 is refused for the child with OUTSIDE_SPD and
//!   changes nothing on either side (the child's selectors, paths and the engine's SA);
//! - a HARD_HANDOVER c2 -> c1 is applied: both sides' selectors follow (client local_ts
//!   198.18.33.2/32, gateway remote_ts 198.18.33.2/32, in the engine too), and a ping from
//!   198.18.33.2 to 198.18.41.2 (routed into the TUN) goes through ESP on the c1 path and
//!   comes back; one from the old address no longer matches the SA;
//! - a SOFT_HANDOVER c1 -> c2 brings it back the same way, make-before-break.
//!
//! ICMP between the two hosts' outer addresses is routed into each side's TUN by a rule
//! (transport mode protects the hosts' own traffic; the daemon adds no routes for it);
//! ESP in UDP and IKE are UDP and stay on the links. Needs root.

use std::time::Duration;

use mifsec_testkit::mif::{MifLab, local_is, sa_paths};
use mifsec_testkit::swan::PSK;
use mifsec_testkit::template::{MIFSEC_MIF_CLIENT, MIFSEC_MIF_GATEWAY};
use mifsec_testkit::{WAIT, exec_in, ip, poll, require_root};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
const C1: &str = "198.18.33.2";
const C2: &str = "198.18.34.2";
/// The client's third address (on c2's device), outside the gateway's policy.
const C3: &str = "198.18.36.2";
const G1: &str = "198.18.41.2";

fn client_config(lab: &MifLab) -> String {
    let extra = format!(
        "[connections.mif.children.tr]\nmode = \"transport\"\nlocal_ts = [\"{C2}/32\"]\n\
         remote_ts = [\"{G1}/32\"]\ninterfaces = [\"c2\"]\nesp_proposals = [\"aes128gcm16\"]\n"
    );
    let conf = MIFSEC_MIF_CLIENT.render(&[
        ("PSK", PSK),
        ("SOCK", &lab.sock("cl").display().to_string()),
        ("LOCAL_ADDRS", &format!("\"{C1}\", \"{C2}\", \"{C3}\"")),
        ("CONN", "mif = true\npath_check_delay = \"0\""),
        ("CHILDREN", &extra),
    ]);
    // The third interface: a fixed address on c2's device.
    conf.replacen(
        "[connections.mif]",
        &format!("[interfaces.c3]\ndevice = \"c2\"\naddress = \"{C3}\"\n\n[connections.mif]"),
        1,
    )
}

fn gateway_config(lab: &MifLab) -> String {
    // The template's tunnel child `net` stays (the client proposes nothing inside it); the
    // transport child `tr` is the one the client's proposal narrows to.
    let tr = format!(
        "\n[connections.mif.children.tr]\nmode = \"transport\"\nlocal_ts = [\"{G1}/32\"]\n\
         remote_ts = [\"198.18.33.0/24\", \"198.18.34.0/24\"]\ninterfaces = [\"g1\"]\n\
         esp_proposals = [\"aes128gcm16\"]\n"
    );
    MIFSEC_MIF_GATEWAY.render(&[
        ("PSK", PSK),
        ("SOCK", &lab.sock("gw").display().to_string()),
        ("CONN", "mif = true"),
        ("CHILD", &tr),
    ])
}

/// ICMP from `from` to `to` is routed into the daemon's TUN (table 200, before the lab's
/// source rules).
fn icmp_into_tun(ns: &str, from: &str, to: &str) {
    ip(&[
        "-n", ns, "rule", "add", "from", from, "to", to, "ipproto", "icmp", "table", "200",
        "priority", "50",
    ]);
}

fn ping(lab: &MifLab, from: &str) -> (bool, String) {
    exec_in(
        &lab.cl_ns,
        &["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", from, G1],
    )
}

/// The transport child of a status: (IKE child entry, engine SA entry).
fn child(st: &Value) -> (Value, Value) {
    let c = st["ike_sas"][0]["children"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["mode"] == "transport"))
        .cloned()
        .unwrap_or_else(|| panic!("no transport child: {st:#}"));
    let sa = st["sas"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == c["sa"]))
        .cloned()
        .unwrap_or_else(|| panic!("no engine SA {}: {st:#}", c["sa"]));
    (c, sa)
}

/// What a refused move must leave as it was: the child's SPIs, selectors, MIF paths (name,
/// addresses, role) and the engine SA's selectors and paths.
fn shape(st: &Value) -> Value {
    let (c, sa) = child(st);
    let paths = |v: &Value| -> Vec<Value> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|p| json!([p["name"], p["local"], p["remote"], p["role"]]))
            .collect()
    };
    json!({
        "spi": [c["spi_in"], c["spi_out"]],
        "ts": [c["local_ts"], c["remote_ts"]],
        "mif": paths(&c["mif"]["paths"]),
        "engine": [sa["local_ts"], sa["remote_ts"], paths(&sa["paths"])],
        "ike": [st["ike_sas"][0]["local"], st["ike_sas"][0]["mif"]["local_generation"],
                st["ike_sas"][0]["mif"]["peer_generation"]],
    })
}

/// ESP packets the engine sent on the transport child's paths from `addr`.
fn tx_from(st: &Value, addr: &str) -> u64 {
    let (_, sa) = child(st);
    sa_paths(st)
        .filter(|(n, p)| *n == sa["name"] && local_is(p, addr))
        .map(|(_, p)| p["tx_packets"].as_u64().unwrap_or(0))
        .sum()
}

/// Waits until both sides' transport child has the client address `addr` as its
/// selector (client local_ts, gateway remote_ts, in the IKE view and in the engine) and
/// its only paths from / to it.
fn wait_on(lab: &MifLab, addr: &str) {
    let host = format!("{addr}/32");
    poll(
        WAIT,
        Duration::from_millis(20),
        || {
            let (cl, gw) = (lab.status_json("cl"), lab.status_json("gw"));
            let ((cc, csa), (gc, gsa)) = (child(&cl), child(&gw));
            let ok = cc["local_ts"] == json!([host])
                && csa["local_ts"] == json!([host])
                && gc["remote_ts"] == json!([host])
                && gsa["remote_ts"] == json!([host])
                && csa["paths"]
                    .as_array()
                    .is_some_and(|p| !p.is_empty() && p.iter().all(|p| local_is(p, addr)));
            if ok { Ok(()) } else { Err((cl, gw)) }
        },
        |(cl, gw): (Value, Value)| {
            format!(
                "the transport child not on {addr}: client {}, gateway {}\n{}",
                json!(child(&cl)),
                json!(child(&gw)),
                lab.dump()
            )
        },
    );
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn transport_mode_selectors_follow_a_move_and_outside_spd_is_refused() {
    require_root();
    let mut lab = MifLab::new("tr", BIN, 0);
    ip(&[
        "-n",
        &lab.cl_ns,
        "addr",
        "add",
        &format!("{C3}/32"),
        "dev",
        "c2",
    ]);
    let (cl_ns, gw_ns) = (lab.cl_ns.clone(), lab.gw_ns.clone());
    let (gw, cl) = (gateway_config(&lab), client_config(&lab));
    lab.start_mifsec("gw", &gw_ns, &gw);
    lab.start_mifsec("cl", &cl_ns, &cl);
    lab.wait_children("cl", 1);
    lab.wait_children("gw", 1);
    for (ns, from, to) in [
        (&cl_ns, "198.18.32.0/21", G1),
        (&gw_ns, G1, "198.18.32.0/21"),
    ] {
        icmp_into_tun(ns, from, to);
        ip(&[
            "-n", ns, "route", "add", "default", "dev", "mifsec0", "table", "200",
        ]);
    }
    wait_on(&lab, C2);
    let (ok, out) = ping(&lab, C2);
    assert!(
        ok,
        "ping {C2} -> {G1} through the transport SA: {out}\n{}",
        lab.dump()
    );
    let st = lab.status_json("cl");
    assert!(
        tx_from(&st, C2) >= 2,
        "the ping went out as ESP from c2: {st:#}"
    );
    let (c, _) = child(&st);
    assert_eq!(c["mif"]["paths"].as_array().map(Vec::len), Some(1), "{c:#}");

    // The move the gateway's policy does not allow: OUTSIDE_SPD, nothing changes.
    let (cl0, gw0) = (lab.status_json("cl"), lab.status_json("gw"));
    let said = lab.ctl_mif(&["hard-handover", "c2", "c3", "--all"]);
    eprintln!("ctl mif hard-handover c2 c3: {said}");
    assert!(
        said.contains("outside-spd"),
        "refused with OUTSIDE_SPD: {said}"
    );
    let (cl1, gw1) = (lab.status_json("cl"), lab.status_json("gw"));
    assert_eq!(shape(&cl0), shape(&cl1), "the client unchanged");
    assert_eq!(shape(&gw0), shape(&gw1), "the gateway unchanged");
    let (ok, out) = ping(&lab, C2);
    assert!(ok, "still through c2 after the refusal: {out}");

    // The allowed move: the selectors follow the addresses on both sides.
    let said = lab.ctl_mif(&["hard-handover", "c2", "c1", "--all"]);
    eprintln!("ctl mif hard-handover c2 c1: {said}");
    assert!(said.contains("applied"), "{said}");
    wait_on(&lab, C1);
    let before = tx_from(&lab.status_json("cl"), C1);
    let (ok, out) = ping(&lab, C1);
    assert!(
        ok,
        "ping {C1} -> {G1} after the move: {out}\n{}",
        lab.dump()
    );
    let st = lab.status_json("cl");
    assert!(
        tx_from(&st, C1) >= before + 2,
        "the ping went out as ESP from c1: {st:#}"
    );
    let (ok, _) = ping(&lab, C2);
    assert!(!ok, "the old address is outside the moved SA's selectors");

    // And back, make-before-break.
    let said = lab.ctl_mif(&["soft-handover", "c1", "c2", "--all"]);
    eprintln!("ctl mif soft-handover c1 c2: {said}");
    assert!(said.contains("applied"), "{said}");
    wait_on(&lab, C2);
    let (ok, out) = ping(&lab, C2);
    assert!(
        ok,
        "ping {C2} -> {G1} after the soft handover back: {out}\n{}",
        lab.dump()
    );
}
