//! Interfaces that follow their device's addresses (`[interfaces.NAME]` with only a
//! `device`), end to end: a mifsec client and a mifsec gateway in two namespaces (the lab of
//! swan/mod.rs without a charon). The client's interface has no address at start, so it
//! initiates once one appears; its sockets open and close as addresses come and go, a
//! second address gets a socket of its own, the IKE SA learns the address set (and, its
//! address deleted, moves to the other one with MOBIKE, the gateway following, and traffic
//! flows again from the new address), a device created after the start is followed, a
//! link flap within the debounce window changes nothing, and a longer link down closes the
//! link's sockets (and up reopens them).
//!
//! Needs root (namespaces, TUN). Without root it fails; `MIFSEC_SKIP_ROOT_TESTS=1
//! scripts/test.sh` reports it as ignored.

mod swan;

use std::process::{Command, Stdio};

use mifsec_testkit::{addr_up, veth};
use serde_json::Value;
use swan::*;

/// The configured interface `name` of a status.
fn iface<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["configured_interfaces"]
        .as_array()
        .and_then(|l| l.iter().find(|i| i["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The addresses of configured interface `name` whose socket is open, with the engine
/// interface of each.
fn open(st: &Value, name: &str) -> Vec<(String, String)> {
    iface(st, name)["addresses"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|a| a["socket"] == "open")
                .map(|a| {
                    (
                        a["address"].as_str().unwrap_or("").to_owned(),
                        a["engine_interface"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until `cond` holds of the client's status; the failure shows the last status and
/// the client's log.
fn wait_status(lab: &Lab, what: &str, cond: impl Fn(&Value) -> bool) {
    poll(
        WAIT,
        std::time::Duration::from_millis(50),
        || {
            let st = lab.status_json("cl");
            if cond(&st) { Ok(()) } else { Err(st) }
        },
        |st| {
            format!(
                "{what}: not seen; last status:\n{st:#}\n--- client log:\n{}",
                lab.log("cl")
            )
        },
    );
}

fn netlink(st: &Value, key: &str) -> u64 {
    st["netlink"][key].as_u64().unwrap_or(u64::MAX)
}

/// The engine's sockets (`interfaces` of the status) as (name, local address:port).
fn engine_sockets(st: &Value) -> Vec<(String, String)> {
    st["interfaces"]
        .as_array()
        .map(|l| {
            l.iter()
                .map(|i| {
                    (
                        i["name"].as_str().unwrap_or("").to_owned(),
                        i["local"].as_str().unwrap_or("").to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `ip -n NS -batch -` with `lines`: one process, so that the commands follow each other
/// within a few milliseconds.
fn ip_batch(ns: &str, lines: &str) {
    use std::io::Write as _;
    let mut c = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("running ip -batch");
    c.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    assert!(c.wait().unwrap().success(), "ip -batch {lines:?}");
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn sockets_follow_the_addresses_of_a_device() {
    require_root();
    let mut lab = Lab::new("fi", BIN);
    let (cns, gns) = (lab.cl_ns.clone(), lab.gw_ns.clone());
    let cl_if = lab.cl_if.clone();
    let pid = std::process::id();
    let (late_c, late_g) = (format!("fil{pid}c"), format!("fil{pid}g"));
    // The client's device has no address at start.
    ip(&["-n", &cns, "addr", "flush", "dev", &cl_if]);

    let gw_cfg = mifsec_gateway(&lab, &[]);
    lab.start_mifsec("gw", &gns, &gw_cfg);
    // `wan` names only a device; `late` a device that does not exist yet.
    let cl_cfg = mifsec_client(&lab, &[]).replace("address = \"198.18.9.2\"\n", "")
        + &format!("\n[interfaces.late]\ndevice = \"{late_c}\"\n");
    assert!(!cl_cfg.contains("198.18.9.2"), "{cl_cfg}");
    let check = lab.dir.join("check.toml");
    std::fs::write(&check, &cl_cfg).unwrap();
    let o = run(Command::new(BIN).arg("check").arg("--config").arg(&check));
    assert!(o.status.success(), "mifsec check: {}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "interface wan: the addresses of {cl_if}, port 4500 (learned and followed)"
        )),
        "{}",
        text(&o)
    );
    lab.start_mifsec("cl", &cns, &cl_cfg);

    // Running, with nothing to bind yet: the missing device is logged, not an error.
    let st = lab.status_json("cl");
    assert_eq!(iface(&st, "wan")["kind"], "followed", "{st:#}");
    assert_eq!(iface(&st, "wan")["device_up"], true, "{st:#}");
    assert!(open(&st, "wan").is_empty(), "{st:#}");
    assert_eq!(iface(&st, "late")["device_present"], false, "{st:#}");
    assert!(engine_sockets(&st).is_empty(), "{st:#}");
    wait_until(WAIT, "the client waiting for a local address", || {
        lab.log("cl")
            .contains("no local address of 198.18.9.1's family; initiating once one appears")
    });
    assert!(
        lab.log("cl").contains(&format!(
            "interface late: device {late_c} does not exist (yet); its addresses are followed once it appears"
        )),
        "{}",
        lab.log("cl")
    );

    // An address appears: a socket on it, IKE from it, traffic through the tunnel.
    ip(&["-n", &cns, "addr", "add", "198.18.9.2/24", "dev", &cl_if]);
    wait_status(&lab, "a socket on 198.18.9.2", |st| {
        open(st, "wan") == [("198.18.9.2".into(), "wan".into())]
    });
    let st = lab.status_json("cl");
    assert_eq!(
        engine_sockets(&st),
        [("wan".to_owned(), "198.18.9.2:4500".to_owned())]
    );
    lab.wait_established("cl");
    lab.ping_ok("cl", &cns, "10.88.0.1");
    let log = lab.log("cl");
    assert!(
        log.contains("ike: local addresses now [198.18.9.2]"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "interface wan: 198.18.9.2 on {cl_if}: interface wan open on 198.18.9.2:4500"
        )),
        "{log}"
    );

    // A second address in the same subnet (kept when the first goes: promote_secondaries):
    // a socket of its own, and IKE is told.
    ip(&[
        "netns",
        "exec",
        &cns,
        "sysctl",
        "-qw",
        &format!("net.ipv4.conf.{cl_if}.promote_secondaries=1"),
    ]);
    ip(&["-n", &cns, "addr", "add", "198.18.9.3/24", "dev", &cl_if]);
    wait_status(&lab, "a socket on 198.18.9.3 too", |st| {
        open(st, "wan").len() == 2
    });
    let st = lab.status_json("cl");
    assert_eq!(
        open(&st, "wan"),
        [
            ("198.18.9.2".into(), "wan".into()),
            ("198.18.9.3".into(), "wan.2".into())
        ]
    );
    assert_eq!(netlink(&st, "sockets_opened"), 2, "{st:#}");
    assert!(
        lab.log("cl")
            .contains("ike: local addresses now [198.18.9.2 198.18.9.3]"),
        "{}",
        lab.log("cl")
    );

    // The first address goes: its socket closes, the other stays; the IKE SA, told that
    // its address is gone, moves to the other (MOBIKE) and the gateway follows.
    ip(&["-n", &cns, "addr", "del", "198.18.9.2/24", "dev", &cl_if]);
    wait_status(&lab, "the socket on 198.18.9.2 closed", |st| {
        open(st, "wan") == [("198.18.9.3".into(), "wan.2".into())]
    });
    let st = lab.status_json("cl");
    assert_eq!(netlink(&st, "sockets_closed"), 1, "{st:#}");
    assert_eq!(
        netlink(&st, "removals_at_once"),
        1,
        "a deleted address is acted on without waiting for the window: {st:#}"
    );
    assert!(
        !engine_sockets(&st).iter().any(|(n, _)| n == "wan"),
        "{st:#}"
    );
    let log = lab.log("cl");
    assert!(
        log.contains(&format!(
            "interface wan: 198.18.9.2 is no longer usable on {cl_if}: socket wan closed"
        )),
        "{log}"
    );
    assert!(
        log.contains("ike: local addresses now [198.18.9.3]"),
        "{log}"
    );
    wait_status(&lab, "the client's IKE SA on 198.18.9.3", |st| {
        st["ike_sas"][0]["local"] == "198.18.9.3:4500"
    });
    poll(
        WAIT,
        std::time::Duration::from_millis(50),
        || {
            let st = lab.status_json("gw");
            if st["ike_sas"][0]["remote"] == "198.18.9.3:4500" {
                Ok(())
            } else {
                Err(st)
            }
        },
        |st| {
            format!(
                "the gateway did not follow:\n{st:#}\n--- gateway log:\n{}",
                lab.log("gw")
            )
        },
    );

    // The children moved with it (make-before-break): traffic flows from the new address.
    lab.ping_ok("cl", &cns, "10.88.0.1");

    // A device that appears after the start, with an address: followed.
    veth(&cns, &late_c, &gns, &late_g);
    addr_up(&gns, &late_g, "198.18.10.1/24");
    addr_up(&cns, &late_c, "198.18.10.2/24");
    wait_status(&lab, "a socket on the late device", |st| {
        open(st, "late") == [("198.18.10.2".into(), "late".into())]
    });
    let st = lab.status_json("cl");
    assert_eq!(iface(&st, "late")["device_present"], true, "{st:#}");
    assert_eq!(netlink(&st, "sockets_opened"), 3, "{st:#}");
    assert!(
        lab.log("cl")
            .contains("ike: local addresses now [198.18.9.3 198.18.10.2]"),
        "{}",
        lab.log("cl")
    );

    // A link flap within the debounce window: seen, and nothing closed or opened.
    let before = lab.status_json("cl");
    ip_batch(
        &cns,
        &format!("link set {cl_if} down\nlink set {cl_if} up\n"),
    );
    wait_status(&lab, "the flap absorbed", |st| {
        netlink(st, "flaps_absorbed") > netlink(&before, "flaps_absorbed")
    });
    let st = lab.status_json("cl");
    for k in [
        "sockets_opened",
        "sockets_closed",
        "windows",
        "removals_at_once",
    ] {
        assert_eq!(netlink(&st, k), netlink(&before, k), "{k}: {st:#}");
    }
    assert_eq!(open(&st, "wan").len(), 1, "{st:#}");
    assert!(
        !lab.log("cl").contains("socket wan.2 closed"),
        "{}",
        lab.log("cl")
    );

    // An address with a socket deleted: closed at once (not after the window); added back
    // at once (most often within the window that the deletion opened, whose changes then
    // undo each other): open again.
    let before = lab.status_json("cl");
    ip(&["-n", &cns, "addr", "del", "198.18.10.2/24", "dev", &late_c]);
    wait_status(&lab, "the late device's socket closed", |st| {
        netlink(st, "sockets_closed") == netlink(&before, "sockets_closed") + 1
    });
    ip(&["-n", &cns, "addr", "add", "198.18.10.2/24", "dev", &late_c]);
    wait_status(&lab, "the late device's socket open again", |st| {
        netlink(st, "sockets_opened") == netlink(&before, "sockets_opened") + 1
            && open(st, "late") == [("198.18.10.2".into(), "late".into())]
    });
    let st = lab.status_json("cl");
    assert_eq!(
        netlink(&st, "removals_at_once"),
        netlink(&before, "removals_at_once") + 1,
        "{st:#}"
    );

    // A link down for longer than the window closes its socket; up again, it reopens
    // under the same name.
    ip(&["-n", &cns, "link", "set", &cl_if, "down"]);
    wait_status(&lab, "the socket of the downed link closed", |st| {
        open(st, "wan").is_empty() && iface(st, "wan")["device_up"] == false
    });
    let st = lab.status_json("cl");
    assert_eq!(netlink(&st, "sockets_closed"), 3, "{st:#}");
    assert_eq!(
        open(&st, "late").len(),
        1,
        "the other device is untouched: {st:#}"
    );
    ip(&["-n", &cns, "link", "set", &cl_if, "up"]);
    wait_status(&lab, "the socket reopened", |st| {
        open(st, "wan") == [("198.18.9.3".into(), "wan.2".into())]
    });
    let st = lab.status_json("cl");
    assert_eq!(netlink(&st, "sockets_opened"), 5, "{st:#}");

    // The human status shows it too.
    let o = lab.mifsec("cl", &["status"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains(&format!(
            "  wan on {cl_if} (up, followed): 198.18.9.3 (socket open as wan.2)\n"
        )),
        "{t}"
    );
    assert!(t.contains("netlink: "), "{t}");

    // A clean stop.
    let st = terminate(&mut lab.daemons[1], std::time::Duration::from_secs(10));
    assert!(
        st.is_some_and(|s| s.success()),
        "client: {st:?}\n{}",
        lab.log("cl")
    );
    // Its Delete left through the learned socket (the follower stops after IKE).
    assert!(
        !lab.log("cl").contains("ike: no interface named"),
        "{}",
        lab.log("cl")
    );
}
