//! The `mifsec` daemon end to end, as an operator runs it: two `mifsec run` processes in two
//! network namespaces joined by a veth pair, a ping through the tunnel, `mifsec status`,
//! `keys` and `ctl` against the running daemons, and a clean stop on SIGTERM.
//!
//! The namespaces and daemons are the interop tests' lab (swan/mod.rs) without a charon.
//! Needs root (namespaces, TUN). Without root it fails; `MIFSEC_SKIP_ROOT_TESTS=1
//! scripts/test.sh` reports it as ignored.

mod swan;

use std::path::Path;
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

use swan::*;

fn mifsec(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("running mifsec")
}

/// One side's configuration: a one-path, manually keyed SA as in docs/CONFIG.md.
fn config(dir: &Path, side: &str, dev: &str, client: bool) -> String {
    let k1 = "000102030405060708090a0b0c0d0e0f10111213";
    let k2 = "101112131415161718191a1b1c1d1e1f20212223";
    let (addr, local, remote, local_ts, remote_ts, spi_out, key_out, spi_in, key_in) = if client {
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
        )
    };
    format!(
        r#"[dataplane]
workers = 1
addresses = ["{addr}"]
control_socket = "{sock}"

[interfaces.link1]
device = "{dev}"
address = "{local}"

[sa.tunnel]
spi_out = {spi_out}
key_out = "{key_out}"
spi_in = {spi_in}
key_in = "{key_in}"
local_ts = ["{local_ts}"]
remote_ts = ["{remote_ts}"]

[[sa.tunnel.paths]]
name = "fast"
interface = "link1"
remote = "{remote}:4500"
"#,
        sock = dir
            .join(format!("run-{side}"))
            .join(format!("{side}.sock"))
            .display(),
    )
}

fn status_json(sock: &Path) -> serde_json::Value {
    let o = mifsec(&["status", "--json", "--socket", &sock.display().to_string()]);
    assert!(
        o.status.success(),
        "status: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("status --json is JSON")
}

/// SIGTERM, then wait up to 10 s for a clean exit.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on a child we spawned and have not reaped: the pid is still ours.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "mifsec run did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn two_daemons_ping_status_ctl_and_stop() {
    require_root();
    let mut lab = Lab::new("dn");
    let (cns, gns) = (lab.cl_ns.clone(), lab.gw_ns.clone());
    let gw_cfg = config(&lab.dir, "gw", &lab.gw_if, false);
    // The client's control socket admits group 4242 for status and ctl.
    let cl_cfg = config(&lab.dir, "client", &lab.cl_if, true).replacen(
        "[dataplane]\n",
        "[dataplane]\ncontrol_group = \"4242\"\n",
        1,
    );
    let gw = lab.start_mifsec("gw", &gns, &gw_cfg);

    // An engine that cannot start (its interface's device does not exist): exit 1, a clear
    // message, no socket left behind, and nothing left in the namespace for the real client.
    let bad = lab.dir.join("bad.toml");
    std::fs::write(
        &bad,
        cl_cfg.replace(
            &format!("device = \"{}\"", lab.cl_if),
            "device = \"nosuchdev0\"",
        ),
    )
    .unwrap();
    let o = Command::new("ip")
        .args(["netns", "exec", &cns, BIN, "run", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("mifsec: cannot start the engine: ") && err.contains("nosuchdev0"),
        "{err}"
    );
    assert!(!lab.sock("client").exists());
    assert!(
        !lab.sock("client").parent().unwrap().exists(),
        "the socket directory it created is removed again"
    );

    let cl = lab.start_mifsec("client", &cns, &cl_cfg);
    let cl_s = cl.display().to_string();

    // The gateway's socket is root's only: mode 0600; the client's is its group's too.
    use std::os::unix::fs::MetadataExt as _;
    let meta = std::fs::metadata(&gw).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o600, 0));
    let meta = std::fs::metadata(&cl).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, 4242));

    // Wait for the path to answer probes, then ping through the tunnel.
    wait_until(WAIT, "the client's path up", || {
        status_json(&cl)["sas"][0]["paths"][0]["state"] == "up"
    });
    let ping = Command::new("ip")
        .args([
            "netns", "exec", &cns, "ping", "-c", "3", "-W", "1", "10.2.0.1",
        ])
        .output()
        .expect("running ping");
    assert!(
        ping.status.success(),
        "ping through the tunnel failed:\n{}\n{}\nclient log:\n{}\ngateway log:\n{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr),
        lab.log("client"),
        lab.log("gw")
    );

    for (side, sock) in [("client", &cl), ("gw", &gw)] {
        let st = status_json(sock);
        let sa = &st["sas"][0];
        assert_eq!(sa["name"], "tunnel");
        assert!(sa["out_packets"].as_u64().unwrap() > 0, "{side}: {sa}");
        assert!(sa["in_packets"].as_u64().unwrap() > 0, "{side}: {sa}");
        assert_eq!(sa["paths"][0]["name"], "fast");
    }

    // Human status.
    let o = mifsec(&["status", "--socket", &cl_s]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.starts_with("tunnel: tunnel, aes128gcm16, esn, policy failover, 10.1.0.0/24 === 10.2.0.0/24\n  out 00001001: "),
        "{text}"
    );
    assert!(
        text.contains("  path fast  link1 198.18.9.2:4500 -> 198.18.9.1:4500  active  up  rtt "),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "interfaces: link1 198.18.9.2:4500 ({}, ",
            lab.cl_if
        )),
        "{text}"
    );

    // Keys for Wireshark: one line per direction.
    let o = mifsec(&["keys", "--wireshark", "--socket", &cl_s]);
    assert!(o.status.success());
    let keys = String::from_utf8_lossy(&o.stdout);
    assert_eq!(keys.lines().count(), 2, "{keys}");
    assert!(
        keys.contains("0x00001001") && keys.contains("0x00002001"),
        "{keys}"
    );

    // A member of the control group reads status but gets no keys; anybody else does not
    // get in at all.
    use std::os::unix::process::CommandExt as _;
    let as_user = |gid: u32, args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--socket", &cl_s])
            .uid(65534)
            .gid(gid)
            .output()
            .unwrap()
    };
    let o = as_user(4242, &["status", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = as_user(4242, &["keys", "--wireshark"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("`keys` hands out session keys and needs root"),
        "{err}"
    );
    assert!(o.stdout.is_empty());
    let o = as_user(65534, &["status"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("Permission denied"), "{err}");

    // ctl: a change the engine accepts, and one it refuses.
    let o = mifsec(&["ctl", "policy", "tunnel", "redundant", "--socket", &cl_s]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(!o.stdout.is_empty());
    assert_eq!(status_json(&cl)["sas"][0]["policy"], "redundant");
    let o = mifsec(&["ctl", "handover", "tunnel", "nosuchpath", "--socket", &cl_s]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("nosuchpath"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // A second daemon on a served socket is refused before it touches the network.
    let o = mifsec(&[
        "run",
        "--config",
        &lab.dir.join("client.toml").display().to_string(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another mifsec daemon is serving this socket"),
        "{err}"
    );
    assert!(cl.exists());
    assert_eq!(status_json(&cl)["sas"][0]["name"], "tunnel");

    // SIGTERM stops both cleanly and removes their sockets.
    for (i, sock, side) in [(1, &cl, "client"), (0, &gw, "gw")] {
        let st = terminate(&mut lab.daemons[i]);
        assert!(st.success(), "{side} exited with {st}:\n{}", lab.log(side));
        assert!(!sock.exists(), "{side} left its socket behind");
        let log = lab.log(side);
        assert!(log.contains("mifsec: started: tun mifsec0"), "{log}");
        assert!(
            log.contains("SIGTERM received: stopping") && log.contains("mifsec: stopped"),
            "{log}"
        );
        assert!(
            !log.contains("0001020304") && !log.contains("1011121314"),
            "keys in the log:\n{log}"
        );
    }
    let log = lab.log("client");
    // The file holds manual keys: a warning at start if others can read it.
    let mode = std::fs::metadata(lab.dir.join("client.toml"))
        .unwrap()
        .mode()
        & 0o777;
    assert_eq!(
        log.contains("holds keys or secrets but is readable by"),
        mode & 0o044 != 0,
        "mode {mode:o}:\n{log}"
    );
    assert!(
        log.contains("mifsec: control socket: keys requested by uid 0 pid ")
            && log.contains(": answered 2 lines"),
        "{log}"
    );
    assert!(
        log.contains("mifsec: control socket: refused keys from uid 65534 pid "),
        "{log}"
    );
    assert!(
        lab.log("client")
            .contains("mifsec: ctl policy tunnel redundant: "),
        "{}",
        lab.log("client")
    );
}
