//! Configuration while running, on the real binary against running daemons: `mifsec ctl
//! reload` and SIGHUP (the file's difference applied, what did not change untouched),
//! `mifsec showconf` (the running configuration, `ctl` changes included, parsed again by
//! `mifsec check`) and `mifsec list-conns`.
//!
//! Two labs of the test kit (two namespaces, one veth): an IKE pair of two mifsec daemons
//! (client `cl`, gateway `gw`), and a pair with a manually keyed SA. Needs root.

mod swan;

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use swan::*;

fn ok(what: &str, out: &Output) -> String {
    assert!(out.status.success(), "{what}: {}", text(out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `mifsec check FILE`: the summary it prints (without the `FILE: OK` line).
fn check_summary(file: &Path) -> String {
    let out = run(Command::new(BIN).arg("check").arg("--config").arg(file));
    let s = ok(&format!("mifsec check {}", file.display()), &out);
    s.lines()
        .filter(|l| !l.ends_with(": OK"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The IKE SAs of a status: (connection, spi_i, spi_r, [child spi_in]) of the established.
fn ike_spis(st: &Value) -> Vec<(String, String, String, Vec<String>)> {
    let mut v: Vec<_> = st["ike_sas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["state"] == "ESTABLISHED")
        .map(|s| {
            (
                s["name"].as_str().unwrap_or_default().to_owned(),
                s["spi_i"].as_str().unwrap_or_default().to_owned(),
                s["spi_r"].as_str().unwrap_or_default().to_owned(),
                s["children"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| c["spi_in"].as_str().unwrap_or_default().to_owned())
                    .collect(),
            )
        })
        .collect();
    v.sort();
    v
}

fn established_count(st: &Value) -> usize {
    st["ike_sas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|s| s["state"] == "ESTABLISHED")
        .count()
}

fn wait_ike_count(lab: &Lab, side: &str, n: usize) -> Value {
    poll(
        WAIT,
        Duration::from_millis(100),
        || {
            let st = lab.status_json(side);
            let all = st["ike_sas"].as_array().map_or(0, Vec::len);
            if established_count(&st) == n && all == n {
                Ok(st)
            } else {
                Err(st)
            }
        },
        |st| {
            format!(
                "{side}: not {n} IKE SAs: {st:#}\n--- log:\n{}",
                lab.log(side)
            )
        },
    )
}

const HOME2: &str = r#"
[connections.home2]
remote_addrs = ["198.18.9.1"]
proposals = ["aes128gcm16-prfsha256-x25519"]

[connections.home2.local]
auth = "psk"
id = "cl"

[connections.home2.remote]
auth = "psk"
id = "gw"

[connections.home2.children.net2]
remote_ts = ["10.88.0.5/32"]
esp_proposals = ["aes128gcm16-x25519"]
"#;

/// A connection nobody initiates, changed by a reload (unrelated to the traffic).
const IDLE: &str = r#"
[connections.idle]
remote_addrs = ["198.18.9.1"]
rekey_time = "@REKEY@"

[connections.idle.local]
auth = "psk"
id = "cl"

[connections.idle.remote]
auth = "psk"
id = "gw"

[connections.idle.children.c]
remote_ts = ["10.88.0.6/32"]
"#;

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn reload_ike_pair_keeps_unchanged_sas_adds_and_removes_connections() {
    require_root();
    let mut lab = Lab::new("rl", BIN);
    let (cns, gns) = (lab.cl_ns.clone(), lab.gw_ns.clone());
    let gw_cfg = mifsec_gateway(&lab, &[]);
    let cl_cfg = format!(
        "{}{}",
        mifsec_client(&lab, &[]),
        IDLE.replace("@REKEY@", "4h")
    );
    let idle_changed = cl_cfg.replace("rekey_time = \"4h\"", "rekey_time = \"2h\"");
    lab.start_mifsec("gw", &gns, &gw_cfg);
    lab.start_mifsec("cl", &cns, &cl_cfg);
    let cl_file = lab.dir.join("cl.toml");
    lab.settled("cl", None);
    let before = ike_spis(&lab.status_json("cl"));
    let gw_before = ike_spis(&lab.status_json("gw"));
    assert_eq!(before.len(), 1, "{before:?}");

    // Nothing changed: nothing done, the same SPIs (no rekey, no new SA).
    let out = ok("ctl reload", &lab.mifsec("cl", &["ctl", "reload"]));
    assert!(out.contains("no changes"), "{out}");
    assert_eq!(ike_spis(&lab.status_json("cl")), before);

    // list-conns, as swanctl --list-conns.
    let lc = ok("list-conns", &lab.mifsec("gw", &["list-conns", "--json"]));
    let lc: Value = serde_json::from_str(&lc).expect("list-conns --json is JSON");
    let rw = &lc.as_array().unwrap()[0];
    assert_eq!(rw["name"], "rw", "{lc:#}");
    assert_eq!(rw["local"]["auth"], "psk");
    assert_eq!(rw["remote"]["id"], "cl");
    assert_eq!(rw["local_addrs"][0], "198.18.9.1");
    assert_eq!(rw["children"][0]["name"], "net");
    assert_eq!(rw["children"][0]["mode"], "TUNNEL");
    assert_eq!(rw["children"][0]["local_ts"][0], "10.88.0.0/16");
    assert_eq!(rw["pools"][0], "p4");
    let human = ok("list-conns", &lab.mifsec("gw", &["list-conns"]));
    assert!(
        human.contains("rw: IKEv2") && human.contains("net: TUNNEL"),
        "{human}"
    );

    // showconf: root gets the secrets; parsed again it is the same configuration.
    let shown = ok("showconf", &lab.mifsec("cl", &["showconf"]));
    assert!(shown.contains(PSK), "root sees the PSK:\n{shown}");
    let again = lab.dir.join("cl-shown.toml");
    std::fs::write(&again, &shown).unwrap();
    assert_eq!(check_summary(&again), check_summary(&cl_file));

    // Under a ping stream through home's child: a connection added and initiated, an
    // unrelated one changed; the first IKE SA untouched (same SPIs), no ping lost.
    let mut st = Value::Null;
    lab.flood("cl", &cns, 400, || {
        std::fs::write(&cl_file, format!("{idle_changed}{HOME2}")).unwrap();
        let out = ok("ctl reload", &lab.mifsec("cl", &["ctl", "reload"]));
        assert!(out.contains("connection home2 added"), "{out}");
        assert!(
            out.contains("connection idle changed: 0 established IKE SAs keep running"),
            "{out}"
        );
        ok(
            "initiate home2",
            &lab.mifsec("cl", &["ctl", "initiate", "home2"]),
        );
        st = wait_ike_count(&lab, "cl", 2);
    });
    let now = ike_spis(&st);
    assert!(
        now.contains(&before[0]),
        "home kept its SPIs: {now:?} {before:?}"
    );
    wait_ike_count(&lab, "gw", 2);
    let lc = ok("list-conns", &lab.mifsec("cl", &["list-conns", "--json"]));
    assert!(lc.contains("\"home2\""), "{lc}");

    // A broken file changes nothing and says where: file, line, key.
    let broken = format!("{idle_changed}{HOME2}").replace(
        "[connections.home2.children.net2]\n",
        "[connections.home2.children.net2]\nrekey_tme = \"1h\"\n",
    );
    let line = broken
        .lines()
        .position(|l| l.starts_with("rekey_tme"))
        .unwrap()
        + 1;
    std::fs::write(&cl_file, &broken).unwrap();
    let out = lab.mifsec("cl", &["ctl", "reload"]);
    assert!(
        !out.status.success(),
        "a broken file is refused: {}",
        text(&out)
    );
    let err = text(&out);
    let want = format!(
        "{}:{line}: connections.home2.children.net2",
        cl_file.display()
    );
    assert!(
        err.contains(&want) && err.contains("rekey_tme"),
        "want {want}:\n{err}"
    );
    assert_eq!(ike_spis(&lab.status_json("cl")), now);
    let shown2 = ok("showconf", &lab.mifsec("cl", &["showconf"]));
    assert!(shown2.contains("[connections.home2]") && !shown2.contains("rekey_tme"));

    // The connection removed: its IKE SA deleted (at the peer too), home's untouched.
    std::fs::write(&cl_file, &cl_cfg).unwrap();
    let out = ok("ctl reload", &lab.mifsec("cl", &["ctl", "reload"]));
    assert!(
        out.contains("connection home2 removed: 1 IKE SA deleted"),
        "{out}"
    );
    assert_eq!(ike_spis(&wait_ike_count(&lab, "cl", 1)), before);
    assert_eq!(ike_spis(&wait_ike_count(&lab, "gw", 1)), gw_before);
    let out = lab.mifsec("cl", &["ctl", "initiate", "home2"]);
    assert!(!out.status.success(), "home2 is gone: {}", text(&out));

    // SIGHUP does the same as ctl reload.
    std::fs::write(&cl_file, format!("{cl_cfg}{HOME2}")).unwrap();
    let pid = lab.daemons[1].id();
    // SAFETY: kill(2) on our own child's pid (`ip netns exec` execs mifsec in place).
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) }, 0);
    poll(
        WAIT,
        Duration::from_millis(100),
        || {
            let lc = ok("list-conns", &lab.mifsec("cl", &["list-conns", "--json"]));
            if lc.contains("\"home2\"") {
                Ok(())
            } else {
                Err(lc)
            }
        },
        |lc| {
            format!(
                "SIGHUP did not load home2: {lc}\n--- log:\n{}",
                lab.log("cl")
            )
        },
    );
    assert!(lab.log("cl").contains("SIGHUP received: reloading"));
    assert!(lab.log("cl").contains("connection home2 added"));
    assert_eq!(ike_spis(&lab.status_json("cl")), before);

    // An interface's priority changed: the mifsec peer is told (the multi-interface
    // extension's announcement, a new generation), nothing else changes.
    let gw_mif = |st: &Value| st["ike_sas"][0]["mif"].clone();
    let m0 = gw_mif(&lab.status_json("gw"));
    assert_eq!(
        m0["in_use"], true,
        "both mifsec: the extension in use: {m0:#}"
    );
    assert_eq!(m0["peer_interfaces"][0]["priority"], 0, "{m0:#}");
    let prio = format!("{cl_cfg}{HOME2}").replace(
        "address = \"198.18.9.2\"\n",
        "address = \"198.18.9.2\"\npriority = 7\n",
    );
    assert!(prio.contains("priority = 7"), "{prio}");
    std::fs::write(&cl_file, &prio).unwrap();
    let out = ok("ctl reload", &lab.mifsec("cl", &["ctl", "reload"]));
    assert!(
        out.contains("interfaces announced again: [wan 198.18.9.2:4500 priority 7]"),
        "{out}"
    );
    let m1 = poll(
        WAIT,
        Duration::from_millis(100),
        || {
            let m = gw_mif(&lab.status_json("gw"));
            if m["peer_interfaces"][0]["priority"] == 7 {
                Ok(m)
            } else {
                Err(m)
            }
        },
        |m| format!("the gateway was not told priority 7: {m:#}"),
    );
    assert!(
        m1["peer_generation"].as_u64() > m0["peer_generation"].as_u64(),
        "{m0:#}\n{m1:#}"
    );
    assert_eq!(ike_spis(&lab.status_json("cl")), before);
    assert_eq!(ike_spis(&lab.status_json("gw")), gw_before);
    // Unchanged again: nothing announced.
    let out = ok("ctl reload", &lab.mifsec("cl", &["ctl", "reload"]));
    assert!(out.contains("no changes"), "{out}");
}

/// One side's configuration: a manually keyed SA over one link (as daemon_netns.rs).
fn manual(lab: &Lab, side: &str, client: bool, extra_path: &str) -> String {
    let k1 = "000102030405060708090a0b0c0d0e0f10111213";
    let k2 = "101112131415161718191a1b1c1d1e1f20212223";
    let (addr, local, remote, lts, rts, so, ko, si, ki, dev) = if client {
        (
            "10.1.0.1/32",
            "198.18.9.2",
            "198.18.9.1",
            "10.1.0.0/24",
            "10.2.0.0/24",
            0x1001,
            k1,
            0x2001,
            k2,
            &lab.cl_if,
        )
    } else {
        (
            "10.2.0.1/32",
            "198.18.9.1",
            "198.18.9.2",
            "10.2.0.0/24",
            "10.1.0.0/24",
            0x2001,
            k2,
            0x1001,
            k1,
            &lab.gw_if,
        )
    };
    format!(
        r#"[dataplane]
workers = 1
addresses = ["{addr}"]
control_socket = "{sock}"
state_dir = "{state}"

[interfaces.link1]
device = "{dev}"
address = "{local}"

[sa.tunnel]
spi_out = {so}
key_out = "{ko}"
spi_in = {si}
key_in = "{ki}"
local_ts = ["{lts}"]
remote_ts = ["{rts}"]

[[sa.tunnel.paths]]
name = "fast"
interface = "link1"
remote = "{remote}:4500"
{extra_path}"#,
        sock = lab.sock(side).display(),
        state = lab.dir.join(format!("{side}-state")).display(),
    )
}

fn sa<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["sas"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no SA {name}: {st:#}"))
}

fn path_names(sa: &Value) -> Vec<String> {
    sa["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn reload_manual_sa_paths_showconf_and_the_file_wins() {
    require_root();
    let mut lab = Lab::new("rm", BIN);
    let (cns, gns) = (lab.cl_ns.clone(), lab.gw_ns.clone());
    let gw_cfg = manual(&lab, "gw", false, "");
    let cl_cfg = manual(&lab, "cl", true, "");
    lab.start_mifsec("gw", &gns, &gw_cfg);
    lab.start_mifsec("cl", &cns, &cl_cfg);
    let cl_file = lab.dir.join("cl.toml");
    lab.ping_ok("cl", &cns, "10.2.0.1");
    let st = lab.status_json("cl");
    let out0 = sa(&st, "tunnel")["out_packets"].as_u64().unwrap();
    assert!(out0 > 0, "{st:#}");

    // showconf without secrets for a client that may not read keys is covered by the
    // unit tests; root gets them, and the output passes check as the same configuration.
    let shown = ok("showconf", &lab.mifsec("cl", &["showconf"]));
    assert!(
        shown.contains("000102030405060708090a0b0c0d0e0f10111213"),
        "{shown}"
    );
    let again = lab.dir.join("cl-shown.toml");
    std::fs::write(&again, &shown).unwrap();
    assert_eq!(check_summary(&again), check_summary(&cl_file));

    // A ctl change shows in showconf, and passes check.
    ok(
        "add-path",
        &lab.mifsec(
            "cl",
            &[
                "ctl",
                "add-path",
                "tunnel",
                "spare",
                "--interface",
                "link1",
                "--remote",
                "198.18.9.1:4501",
                "--role",
                "standby",
            ],
        ),
    );
    ok(
        "policy",
        &lab.mifsec("cl", &["ctl", "policy", "tunnel", "redundant"]),
    );
    let shown = ok("showconf", &lab.mifsec("cl", &["showconf"]));
    assert!(
        shown.contains("name = \"spare\"") && shown.contains("policy = \"redundant\""),
        "{shown}"
    );
    std::fs::write(&again, &shown).unwrap();
    let summary = check_summary(&again);
    assert!(summary.contains("spare"), "{summary}");

    // The file wins: a reload of the unchanged file undoes both.
    let out = ok("ctl reload", &lab.mifsec("cl", &["ctl", "reload"]));
    assert!(
        out.contains("sa tunnel: policy failover, path spare removed"),
        "{out}"
    );
    let st = lab.status_json("cl");
    assert_eq!(path_names(sa(&st, "tunnel")), ["fast"]);
    assert_eq!(sa(&st, "tunnel")["policy"], "failover");

    // An interface added and removed by ctl: showconf shows it and its path, then neither
    // (the path stays in the engine, on no socket), and what it shows passes check.
    let dev = lab.cl_if.clone();
    let ctl = |args: &[&str]| ok(&args.join(" "), &lab.mifsec("cl", args));
    ctl(&[
        "ctl",
        "add-interface",
        "link2",
        "--address",
        "198.18.9.2",
        "--port",
        "4502",
        "--device",
        &dev,
    ]);
    ctl(&[
        "ctl",
        "add-path",
        "tunnel",
        "side",
        "--interface",
        "link2",
        "--remote",
        "198.18.9.1:4500",
        "--role",
        "standby",
    ]);
    let shown = ok("showconf", &lab.mifsec("cl", &["showconf"]));
    assert!(
        shown.contains("[interfaces.link2]") && shown.contains("name = \"side\""),
        "{shown}"
    );
    ctl(&["ctl", "remove-interface", "link2"]);
    let shown = ok("showconf", &lab.mifsec("cl", &["showconf"]));
    assert!(
        !shown.contains("link2") && !shown.contains("name = \"side\""),
        "{shown}"
    );
    std::fs::write(&again, &shown).unwrap();
    assert_eq!(check_summary(&again), check_summary(&cl_file));
    let st = lab.status_json("cl");
    assert_eq!(path_names(sa(&st, "tunnel")), ["fast", "side"]);
    // The file wins here too: the path on the removed interface goes.
    let out = ok("ctl reload", &lab.mifsec("cl", &["ctl", "reload"]));
    assert!(out.contains("sa tunnel: path side removed"), "{out}");
    assert_eq!(path_names(sa(&lab.status_json("cl"), "tunnel")), ["fast"]);

    // Paths changed in the file: applied in one swap, the SA itself untouched (its
    // counters go on, traffic flows).
    let extra = "\n[[sa.tunnel.paths]]\nname = \"slow\"\ninterface = \"link1\"\nremote = \"198.18.9.1:4500\"\nrole = \"standby\"\n";
    std::fs::write(&cl_file, manual(&lab, "cl", true, extra)).unwrap();
    let out = ok("ctl reload", &lab.mifsec("cl", &["ctl", "reload"]));
    assert!(out.contains("sa tunnel: path slow added"), "{out}");
    let st = lab.status_json("cl");
    let t = sa(&st, "tunnel");
    assert_eq!(path_names(t), ["fast", "slow"]);
    assert!(
        t["out_packets"].as_u64().unwrap() >= out0,
        "counters kept: {t:#}"
    );
    assert_eq!(
        t["spi_out"],
        sa(&lab.status_json("cl"), "tunnel")["spi_out"]
    );
    lab.ping_ok("cl", &cns, "10.2.0.1");

    // A broken file: nothing changes, the error names file, line and key.
    let broken =
        manual(&lab, "cl", true, extra).replace("198.18.9.1:4500\"\nrole", "198.18.9.1\"\nrole");
    let line = broken
        .lines()
        .position(|l| l == "remote = \"198.18.9.1\"")
        .unwrap()
        + 1;
    std::fs::write(&cl_file, &broken).unwrap();
    let out = lab.mifsec("cl", &["ctl", "reload"]);
    assert!(!out.status.success(), "{}", text(&out));
    let want = format!("{}:{line}: sa.tunnel.paths[1].remote", cl_file.display());
    assert!(text(&out).contains(&want), "want {want}: {}", text(&out));
    assert_eq!(
        path_names(sa(&lab.status_json("cl"), "tunnel")),
        ["fast", "slow"]
    );

    // What only a restart changes is refused, naming the key; nothing applied.
    let restart = manual(&lab, "cl", true, extra).replace("workers = 1", "workers = 2");
    std::fs::write(&cl_file, restart).unwrap();
    let out = lab.mifsec("cl", &["ctl", "reload"]);
    assert!(
        !out.status.success() && text(&out).contains("dataplane.workers"),
        "{}",
        text(&out)
    );
    assert_eq!(
        path_names(sa(&lab.status_json("cl"), "tunnel")),
        ["fast", "slow"]
    );

    // The SA's keys and SPIs changed: it is replaced (and resumes above its marks).
    let swapped = manual(&lab, "cl", true, "")
        .replace("spi_out = 4097", "spi_out = 4098")
        .replace("spi_in = 8193", "spi_in = 8194");
    std::fs::write(&cl_file, &swapped).unwrap();
    std::fs::write(
        lab.dir.join("gw.toml"),
        manual(&lab, "gw", false, "")
            .replace("spi_out = 8193", "spi_out = 8194")
            .replace("spi_in = 4097", "spi_in = 4098"),
    )
    .unwrap();
    let out = ok("ctl reload", &lab.mifsec("cl", &["ctl", "reload"]));
    assert!(
        out.contains("sa tunnel replaced (spi_in 00002002, spi_out 00001002)"),
        "{out}"
    );
    ok("ctl reload gw", &lab.mifsec("gw", &["ctl", "reload"]));
    lab.ping_ok("cl", &cns, "10.2.0.1");
    let st = lab.status_json("cl");
    assert_eq!(sa(&st, "tunnel")["spi_out"], "00001002", "{st:#}");
}
