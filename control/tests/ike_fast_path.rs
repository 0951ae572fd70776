//! An IKE-negotiated child SA takes the engine's batched path as a manually keyed SA does
//! (issue 14 item 7): two mifsec daemons in the interop lab's namespaces (testkit's
//! `swan::Lab`) with two packet workers each, an IKEv2 connection (the lab's templates, PSK,
//! ESP AES-128-GCM with ESN) and beside it a manually keyed SA with the same cipher. One TCP
//! flow through each SA, each way, and for every transfer: the SA carried it (its byte
//! counters, not the other SA's), and the engine-wide offload counters of `status --json`
//! grew: TUN super-packets read (TSO) and UDP GSO sends on the sender, UDP GRO trains and
//! coalesced TUN writes on the receiver. Both SAs are the same kind of engine SA (mode,
//! cipher, ESN, policy, paths), the engine has the two workers asked for, and every socket
//! has GSO and GRO. Events only: no speed is asserted (the bench's `ike` case measures it).
//!
//! Needs root (namespaces, TUN, iperf3). Without root it fails; `MIFSEC_SKIP_ROOT_TESTS=1
//! scripts/test.sh` reports it as ignored.

mod swan;

use std::process::{Command, Stdio};

use serde_json::Value;
use swan::*;

/// The engine SA of a status that is the manual SA `tunnel` (`manual`) or the IKE child
/// (`home-net-<spi>` on the client, `rw-net-<spi>` on the gateway).
fn sa(st: &Value, manual: bool) -> &Value {
    st["sas"]
        .as_array()
        .and_then(|l| l.iter().find(|s| (s["name"] == "tunnel") == manual))
        .unwrap_or_else(|| panic!("no engine SA (manual: {manual}): {st:#}"))
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} is not a number in {v:#}"))
}

/// How far offload counter `k` grew between two statuses.
fn grew(before: &Value, after: &Value, k: &str) -> u64 {
    u(&after["offload"], k) - u(&before["offload"], k)
}

/// One iperf3 TCP transfer for `secs` s from `src` (in `cl_ns`) to a one-shot server on
/// `dst` (in `gw_ns`), `-R` for the reverse direction; returns the bytes received.
fn iperf(lab: &Lab, dst: &str, src: &str, reverse: bool, secs: u32) -> u64 {
    let server = Command::new("ip")
        .args(["netns", "exec", &lab.gw_ns, "iperf3", "-s", "-1", "-B", dst])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("iperf3 -s");
    wait_listening(&lab.gw_ns, 5201);
    let mut c = Command::new("ip");
    c.args([
        "netns", "exec", &lab.cl_ns, "iperf3", "-c", dst, "-B", src, "-J", "-t",
    ])
    .arg(secs.to_string());
    if reverse {
        c.arg("-R");
    }
    let out = run(&mut c);
    let server = server.wait_with_output().expect("iperf3 server output");
    assert!(
        out.status.success(),
        "iperf3 {src} -> {dst}: {}\n--- server:\n{}",
        text(&out),
        text(&server)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    report["end"]["sum_received"]["bytes"]
        .as_u64()
        .expect("iperf3's bytes received")
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn an_ike_child_takes_the_batched_path_as_a_manual_sa_does() {
    require_root();
    let mut lab = Lab::new("fp", BIN);
    let (cns, gns) = (lab.cl_ns.clone(), lab.gw_ns.clone());
    let dataplane = |side: &str, addr: &str| {
        format!(
            "workers = 2\naddresses = [\"{addr}\"]\nstate_dir = \"{}\"",
            lab.dir.join(format!("{side}-state")).display()
        )
    };
    let esp = ("ESP", "aes128gcm16-esn");
    let gw = with_manual_sa(
        mifsec_gateway(&lab, &[("DATAPLANE", &dataplane("gw", "10.2.0.1/32")), esp]),
        false,
    );
    let cl = with_manual_sa(
        mifsec_client(&lab, &[("DATAPLANE", &dataplane("cl", "10.1.0.1/32")), esp]),
        true,
    );
    lab.start_mifsec("gw", &gns, &gw);
    lab.start_mifsec("cl", &cns, &cl);
    let st = lab.wait_established("cl");
    let vip = st["ike_sas"][0]["vips"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no virtual IP: {st:#}"))
        .to_owned();
    lab.ping_ok("cl", &cns, "10.88.0.1");
    lab.ping_ok("cl", &cns, "10.2.0.1");

    // The same kind of engine SA, the workers asked for, GSO and GRO on every socket.
    for side in ["cl", "gw"] {
        let st = lab.status_json(side);
        let (manual, child) = (sa(&st, true), sa(&st, false));
        for k in ["mode", "cipher", "esn", "policy"] {
            assert_eq!(
                manual[k], child[k],
                "{side}: {k} of {manual:#} and {child:#}"
            );
        }
        assert_eq!(child["cipher"], "aes128gcm16", "{side}: {child:#}");
        assert_eq!(child["esn"], true, "{side}: {child:#}");
        assert_eq!(
            manual["paths"].as_array().map(Vec::len),
            child["paths"].as_array().map(Vec::len),
            "{side}: paths of {manual:#} and {child:#}"
        );
        assert_eq!(st["workers"], 2, "{side}: {st:#}");
        assert!(
            st["tun_offloads"]
                .as_str()
                .is_some_and(|o| o.contains("tso4")),
            "{side}: {st:#}"
        );
        for i in st["interfaces"].as_array().unwrap() {
            assert_eq!(i["offloads"], "gso gro", "{side}: {i:#}");
        }
    }

    // One TCP flow through each SA, each way: the SA carries it, on the batched path.
    for (name, manual, dst, src) in [
        ("manual SA", true, "10.2.0.1", "10.1.0.1"),
        ("IKE child", false, "10.88.0.1", vip.as_str()),
    ] {
        for reverse in [false, true] {
            let what = format!("{name}, {}", if reverse { "reverse" } else { "forward" });
            let before = [lab.status_json("cl"), lab.status_json("gw")];
            let bytes = iperf(&lab, dst, src, reverse, 2);
            let after = [lab.status_json("cl"), lab.status_json("gw")];
            let (s, r) = if reverse { (1, 0) } else { (0, 1) };
            let sealed =
                u(sa(&after[s], manual), "out_bytes") - u(sa(&before[s], manual), "out_bytes");
            let opened =
                u(sa(&after[r], manual), "in_bytes") - u(sa(&before[r], manual), "in_bytes");
            assert!(
                sealed >= bytes * 9 / 10 && opened >= bytes * 9 / 10,
                "{what}: {bytes} bytes received, the SA sealed {sealed} and opened {opened}"
            );
            let beside =
                u(sa(&after[s], !manual), "out_bytes") - u(sa(&before[s], !manual), "out_bytes");
            assert!(
                beside < bytes / 100,
                "{what}: {beside} bytes went through the other SA"
            );
            for k in ["tun_super_reads", "gso_sends", "gso_datagrams"] {
                assert!(
                    grew(&before[s], &after[s], k) > 0,
                    "{what}: the sender's {k} did not grow: {:#}",
                    after[s]["offload"]
                );
            }
            for k in ["gro_trains", "gro_datagrams", "tun_super_writes"] {
                assert!(
                    grew(&before[r], &after[r], k) > 0,
                    "{what}: the receiver's {k} did not grow: {:#}",
                    after[r]["offload"]
                );
            }
        }
    }
}
