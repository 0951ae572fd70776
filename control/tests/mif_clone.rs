//! RFC 7791 between two mifsec daemons in the multi-interface lab (`mifsec_testkit::mif`):
//! the flow of the KEEP_OLD_IKE_SA draft's appendix B. The client's first IKE SA comes up
//! on link 1 with child `c0`; `mifsec ctl clone mif --local C2 --child c1` clones it, moves
//! the clone to link 2 with MOBIKE and negotiates `c1` on the clone. Asserted from a
//! capture in the client's namespace, dissected by tshark with the IKE keys of
//! `mifsec keys --wireshark` (its `ikev2_decryption_table` lines): the clone is ONE
//! CREATE_CHILD_SA exchange on the first IKE SA, carrying N(CLONE_IKE_SA), with no AUTH
//! payload anywhere and no IKE_SA_INIT or IKE_AUTH on the wire after the first
//! authentication; the clone then moves to link 2 and carries its own child (a ping
//! through `c1`, the engine's counters on link 2), while the first IKE SA and `c0` stay on
//! link 1 and keep working.
//!
//! Needs root (namespaces, TUN, tcpdump, tshark).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use mifsec_testkit::capture::{self, CREATE_CHILD_SA, Capture, IKE_AUTH, IKE_SA_INIT};
use mifsec_testkit::mif::{
    CLIENT_LINKS, MifLab, client_inner, gateway_inner, ike_sas, installed, local_is, tx_from_sa,
};
use mifsec_testkit::roam::unix_now;
use mifsec_testkit::{WAIT, poll, require_root, run, text};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
/// Notify CLONE_IKE_SA (RFC 7791) and the AUTH payload's type.
const CLONE_IKE_SA: &str = "16433";
const AUTH_PAYLOAD: &str = "39";

/// The clone of a status (an established IKE SA with `cloned_from`) with one child.
fn clone_up(st: &Value, local: &str) -> Option<(Value, Value)> {
    let list = ike_sas(st);
    let first = list
        .iter()
        .find(|i| i["cloned_from"].is_null() && i["state"] == "ESTABLISHED")?;
    let clone = list.iter().find(|i| {
        i["cloned_from"] == first["id"]
            && i["state"] == "ESTABLISHED"
            && installed(i).len() == 1
            && i["local"].as_str().is_some_and(|l| l.starts_with(local))
    })?;
    Some((first.clone(), clone.clone()))
}

fn ping_from(ns: &str, src: &str, dst: &str) -> bool {
    (0..5).any(|_| {
        let out = run(Command::new("ip").args([
            "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", src, dst,
        ]));
        out.status.success()
    })
}

/// tshark over `pcap` with Wireshark's `ikev2_decryption_table` set to `table` (its own
/// HOME): one line per IKE message: exchange type, response flag, SPIs, payload types,
/// notify types.
fn decrypted(pcap: &Path, home: &Path, table: &str) -> Vec<Vec<String>> {
    let dir = home.join(".config/wireshark");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ikev2_decryption_table"), table).unwrap();
    let out = run(Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args(["-n", "-Y", "isakmp", "-T", "fields", "-E", "separator=|"])
        .args(["-e", "frame.time_epoch", "-e", "isakmp.exchangetype"])
        .args([
            "-e",
            "isakmp.flag_r",
            "-e",
            "isakmp.ispi",
            "-e",
            "isakmp.rspi",
        ])
        .args(["-e", "isakmp.typepayload", "-e", "isakmp.notify.msgtype"])
        .env("HOME", home));
    assert!(out.status.success(), "tshark: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect()
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn clone_moves_to_the_second_link_with_its_own_child() {
    clone_flow("cln", false);
}

/// The same flow with the multi-interface extension in use on both sides: MOBIKE moves the
/// clone's IKE SA alone, and the clone's child is confined to the clone's interface (its
/// MIF_CHILD lists only c2), so it still runs on link 2 only.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn clone_moves_to_the_second_link_with_its_own_child_under_mif() {
    clone_flow("clm", true);
}

fn clone_flow(tag: &str, mif: bool) {
    require_root();
    assert!(
        capture::have_tshark(),
        "tshark is missing: apt-get install -y tshark (scripts/test.sh does)"
    );
    let mut lab = MifLab::new(tag, BIN, 2);
    // c0 on the first IKE SA; c1 only on clones.
    let gw = lab.gateway_config(&format!("mif = {mif}"), "");
    let cl = lab.client_config(2, &format!("clone_children = [\"c1\"]\nmif = {mif}"), "");
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_mifsec("gw", &gw_ns, &gw);
    lab.start_mifsec("cl", &cl_ns, &cl);
    lab.wait_children("cl", 1);
    lab.wait_children("gw", 1);
    let (c1, c2) = (CLIENT_LINKS[0].addr, CLIENT_LINKS[1].addr);
    let mut cap = Capture::start(&lab.cl_ns, &lab.dir.join("clone.pcap"));
    let before = lab.status_json("cl");
    let first_before = ike_sas(&before)[0].clone();
    let c0 = installed(&first_before)[0].clone();

    let t0 = unix_now();
    let out = lab.mifsec(
        "cl",
        &["ctl", "clone", "mif", "--local", c2, "--child", "c1"],
    );
    assert!(out.status.success(), "ctl clone: {}", text(&out));
    let (first, clone) = poll(
        WAIT,
        Duration::from_millis(50),
        || {
            let st = lab.status_json("cl");
            clone_up(&st, c2).ok_or(st)
        },
        |st| format!("no clone on {c2} with its child: {st:#}\n{}", lab.dump()),
    );
    let t_up = unix_now();
    // The gateway has it too: two IKE SAs, the clone with its child.
    poll(
        WAIT,
        Duration::from_millis(50),
        || {
            let st = lab.status_json("gw");
            let list = ike_sas(&st);
            let ok = list.len() == 2
                && list
                    .iter()
                    .any(|i| !i["cloned_from"].is_null() && installed(i).len() == 1);
            if ok { Ok(()) } else { Err(st) }
        },
        |st| format!("gateway: {st:#}\n{}", lab.dump()),
    );
    // The first IKE SA: same SPIs, same child, still on link 1.
    for k in ["spi_i", "spi_r", "id", "local"] {
        assert_eq!(first[k], first_before[k], "{k}");
    }
    assert!(first["local"].as_str().unwrap().starts_with(c1));
    assert_eq!(installed(&first).len(), 1);
    assert_eq!(installed(&first)[0]["spi_in"], c0["spi_in"]);
    assert_eq!(first["peer_clone"], true);
    let c1_child = installed(&clone)[0].clone();
    assert_eq!(c1_child["name"], "c1");
    if mif {
        // Confined to the clone's interface: MIF paths from c2 only, on both sides.
        let paths = c1_child["mif"]["paths"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !paths.is_empty() && paths.iter().all(|p| local_is(p, c2)),
            "the clone's child over c2 only: {c1_child:#}"
        );
        let gst = lab.status_json("gw");
        let theirs: Vec<Value> = ike_sas(&gst)
            .iter()
            .flat_map(installed)
            .filter(|c| c["spi_in"] == c1_child["spi_out"])
            .collect();
        assert!(
            theirs.len() == 1
                && theirs[0]["mif"]["paths"].as_array().is_some_and(|p| {
                    !p.is_empty()
                        && p.iter().all(|p| {
                            p["remote"]
                                .as_str()
                                .is_some_and(|r| r.starts_with(&format!("{c2}:")))
                        })
                }),
            "the gateway's side of the clone's child towards c2 only: {gst:#}"
        );
    }

    // Each child carries its own traffic on its own link.
    let st0 = lab.status_json("cl");
    let (sa_c0, sa_c1) = (
        c0["sa"].as_str().unwrap().to_owned(),
        c1_child["sa"].as_str().unwrap().to_owned(),
    );
    assert!(
        ping_from(&lab.cl_ns, &client_inner(1), &gateway_inner(1)),
        "ping through the clone's child c1\n{}",
        lab.dump()
    );
    assert!(
        ping_from(&lab.cl_ns, &client_inner(0), &gateway_inner(0)),
        "ping through the first IKE SA's child c0\n{}",
        lab.dump()
    );
    let st1 = lab.status_json("cl");
    let clone_link2 = tx_from_sa(&st1, &sa_c1, c2) - tx_from_sa(&st0, &sa_c1, c2);
    let first_link1 = tx_from_sa(&st1, &sa_c0, c1) - tx_from_sa(&st0, &sa_c0, c1);
    assert!(clone_link2 >= 3, "c1 sent {clone_link2} on link 2\n{st1:#}");
    assert!(first_link1 >= 3, "c0 sent {first_link1} on link 1\n{st1:#}");
    assert_eq!(
        tx_from_sa(&st1, &sa_c1, c1),
        0,
        "c1 never on link 1\n{st1:#}"
    );
    assert_eq!(
        tx_from_sa(&st1, &sa_c0, c2),
        0,
        "c0 never on link 2\n{st1:#}"
    );

    // The capture, decrypted with the keys mifsec hands out.
    let keys = lab.mifsec("cl", &["keys", "--wireshark"]);
    assert!(keys.status.success(), "keys: {}", text(&keys));
    let keys = String::from_utf8_lossy(&keys.stdout).to_string();
    let table: String = keys
        .lines()
        .skip_while(|l| *l != "# ikev2_decryption_table")
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(table.lines().count(), 2, "two IKE SAs' keys:\n{keys}");
    // tcpdump hands packets over in blocks: wait until it has written the clone's and the
    // child's CREATE_CHILD_SA exchanges (four messages) before stopping it.
    poll(
        WAIT,
        Duration::from_millis(100),
        || {
            let m = cap.so_far();
            let n = capture::count(&m, CREATE_CHILD_SA, t0, unix_now());
            if n.requests >= 2 && n.responses >= 2 {
                Ok(())
            } else {
                Err(m)
            }
        },
        |m| format!("the capture so far:\n{}", capture::listing(&m)),
    );
    let t1 = unix_now();
    let msgs = cap.stop();
    let listing = capture::listing(&msgs);
    let tally = capture::tally(&msgs, t0, t1);
    let spi = |v: &Value, k: &str| v[k].as_str().unwrap().to_string();
    let on_first = |m: &&capture::IkeMessage| {
        m.spi_i.trim_start_matches("0x") == spi(&first, "spi_i")
            && m.spi_r.trim_start_matches("0x") == spi(&first, "spi_r")
    };
    let clone_msgs: Vec<_> = msgs
        .iter()
        .filter(|m| m.at >= t0 && m.exchange == CREATE_CHILD_SA)
        .filter(on_first)
        .collect();
    eprintln!(
        "clone: ctl to clone up with child on {c2}: {:.1} ms; exchanges on the wire {tally:?}; \
         CREATE_CHILD_SA on the first IKE SA: {}; c1 {clone_link2} packets on link 2, c0 \
         {first_link1} on link 1",
        (t_up - t0) * 1000.0,
        clone_msgs.len()
    );
    assert_eq!(
        clone_msgs.iter().map(|m| m.response).collect::<Vec<_>>(),
        vec![false, true],
        "the clone is one CREATE_CHILD_SA exchange on the first IKE SA:\n{listing}"
    );
    // The first IKE SA is untouched: nothing else on it (with the extension, no MOBIKE
    // path checks started by the probes of its MIF child either).
    assert_eq!(
        msgs.iter()
            .filter(|m| m.at >= t0 && m.exchange != CREATE_CHILD_SA)
            .filter(on_first)
            .count(),
        0,
        "no other exchange on the first IKE SA:\n{listing}"
    );
    for x in [IKE_SA_INIT, IKE_AUTH] {
        assert_eq!(
            capture::count(&msgs, x, t0, t1),
            capture::Counted::default(),
            "no {} after the clone started:\n{listing}",
            capture::exchange_name(x)
        );
    }
    let home = lab.dir.join("wireshark-home");
    let rows = decrypted(&cap.path, &home, &table);
    let after: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| r[0].parse::<f64>().is_ok_and(|t| t >= t0))
        .collect();
    assert!(!after.is_empty(), "tshark saw nothing after t0");
    let clone_req = after
        .iter()
        .find(|r| {
            r[1] == "36"
                && r[3].trim_start_matches("0x") == spi(&first, "spi_i")
                && r[2] != "1"
                && r[2] != "True"
        })
        .unwrap_or_else(|| panic!("the clone request in the capture: {after:?}"));
    assert!(
        clone_req[6].split(',').any(|n| n == CLONE_IKE_SA),
        "decrypted, the request carries N(CLONE_IKE_SA): {clone_req:?}\n{keys}"
    );
    for r in &after {
        assert!(
            !r[5].split(',').any(|p| p == AUTH_PAYLOAD),
            "an AUTH payload after the clone started: {r:?}"
        );
    }
    // Still both IKE SAs, and the first one's child still works after it all.
    assert!(ping_from(&lab.cl_ns, &client_inner(0), &gateway_inner(0)));
    assert_eq!(ike_sas(&lab.status_json("cl")).len(), 2);
}

/// `clone_per_interface = true`: once the first IKE SA is up on link 1, the client clones
/// it by itself, moves the clone to link 2 and negotiates the clone-only child `c1` there;
/// one IKE_AUTH exchange on the wire in all.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn clone_per_interface_from_one_authentication() {
    require_root();
    assert!(
        capture::have_tshark(),
        "tshark is missing: apt-get install -y tshark"
    );
    let mut lab = MifLab::new("cpi", BIN, 2);
    let gw = lab.gateway_config("", "");
    let cl = lab.client_config(
        2,
        "clone_children = [\"c1\"]\nclone_per_interface = true",
        "",
    );
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    let mut cap = Capture::start(&cl_ns, &lab.dir.join("cpi.pcap"));
    let t0 = unix_now();
    lab.start_mifsec("gw", &gw_ns, &gw);
    lab.start_mifsec("cl", &cl_ns, &cl);
    let (c1, c2) = (CLIENT_LINKS[0].addr, CLIENT_LINKS[1].addr);
    let (first, clone) = poll(
        WAIT,
        Duration::from_millis(50),
        || {
            let st = lab.status_json("cl");
            clone_up(&st, c2).ok_or(st)
        },
        |st| format!("no automatic clone on {c2}: {st:#}\n{}", lab.dump()),
    );
    assert!(first["local"].as_str().unwrap().starts_with(c1));
    assert_eq!(installed(&first).len(), 1);
    assert_eq!(installed(&first)[0]["name"], "c0");
    assert_eq!(installed(&clone)[0]["name"], "c1");
    // The extension is on (the default): the clone's child runs over c2 alone.
    let paths = installed(&clone)[0]["mif"]["paths"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        !paths.is_empty() && paths.iter().all(|p| local_is(p, c2)),
        "the clone's child over c2 only: {clone:#}"
    );
    assert!(
        ping_from(&lab.cl_ns, &client_inner(1), &gateway_inner(1)),
        "ping through the clone's child\n{}",
        lab.dump()
    );
    assert!(ping_from(&lab.cl_ns, &client_inner(0), &gateway_inner(0)));
    poll(
        WAIT,
        Duration::from_millis(100),
        || {
            let m = cap.so_far();
            let n = capture::count(&m, CREATE_CHILD_SA, t0, unix_now());
            if n.requests >= 2 && n.responses >= 2 {
                Ok(())
            } else {
                Err(m)
            }
        },
        |m| format!("the capture so far:\n{}", capture::listing(&m)),
    );
    let msgs = cap.stop();
    let t1 = unix_now();
    let tally = capture::tally(&msgs, t0, t1);
    eprintln!("clone_per_interface: exchanges on the wire from the start {tally:?}");
    assert_eq!(
        capture::count(&msgs, IKE_AUTH, t0, t1),
        capture::Counted {
            requests: 1,
            responses: 1
        },
        "one authentication in all:\n{}",
        capture::listing(&msgs)
    );
    assert_eq!(ike_sas(&lab.status_json("cl")).len(), 2);
}
