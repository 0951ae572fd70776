//! The daemon after it dropped root, with the real binary in namespaces against a
//! strongSwan 5.9 gateway: `/proc/PID/status` of every thread shows the unprivileged uid,
//! only CAP_NET_ADMIN and CAP_NET_RAW (permitted, effective, inheritable, ambient,
//! bounding) and no_new_privs; and what needs those capabilities still works: the virtual
//! IP and the routes put on the TUN (by `ip`, a child process), a child rekey, an
//! interface added later on a device that appeared after the start (SO_BINDTODEVICE),
//! removing the virtual IP at terminate, and removing the socket at the end.
//!
//! Needs root (namespaces, TUN, strongSwan); see swan_interop.rs.

mod swan;

use std::process::Command;
use std::time::{Duration, Instant};

use swan::*;

/// CAP_NET_ADMIN (12) and CAP_NET_RAW (13), as /proc shows a capability set.
const KEPT: &str = "0000000000003000";

/// The uid and gid of the first of the daemon's default users that exists.
fn default_user() -> (String, String) {
    for name in ["mifsec", "nobody"] {
        let uid = run(Command::new("id").args(["-u", name]));
        let gid = run(Command::new("id").args(["-g", name]));
        if uid.status.success() && gid.status.success() {
            return (
                String::from_utf8_lossy(&uid.stdout).trim().to_owned(),
                String::from_utf8_lossy(&gid.stdout).trim().to_owned(),
            );
        }
    }
    panic!("neither mifsec nor nobody exists");
}

fn field<'a>(status: &'a str, key: &str) -> &'a str {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in\n{status}"))
        .trim()
}

fn ip_out(args: &[&str]) -> String {
    text(&run(Command::new("ip").args(args)))
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn dropped_daemon_keeps_only_what_it_needs_and_still_works() {
    require_root();
    let mut lab = Lab::new("pv", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_swan(&gw_ns, &swan_gateway_conf());
    // The default user: no `user` key.
    let config = mifsec_client_config(&lab, "", "");
    assert!(!config.contains("user"), "{config}");
    lab.start_mifsec("cl", &cl_ns, &config);
    let st = lab.wait_established("cl");
    let s0 = lab.settled("cl", None);
    let vip = st["ike_sas"][0]["vip"].as_str().expect("a VIP").to_owned();

    // Credentials of the process and of every one of its threads.
    let pid = lab.daemons[0].id();
    let (uid, gid) = default_user();
    let tasks: Vec<_> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(
        tasks.len() >= 4,
        "workers, monitor, IKE, control: {tasks:?}"
    );
    for t in std::iter::once(std::path::PathBuf::from(format!("/proc/{pid}"))).chain(tasks) {
        let status = std::fs::read_to_string(t.join("status")).unwrap();
        let name = field(&status, "Name:");
        let ids = |k: &str| {
            field(&status, k)
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(ids("Uid:"), vec![uid.clone(); 4], "{name}: {status}");
        assert_eq!(ids("Gid:"), vec![gid.clone(); 4], "{name}: {status}");
        assert_eq!(field(&status, "Groups:"), gid, "{name}: {status}");
        for set in ["CapInh:", "CapPrm:", "CapEff:", "CapBnd:", "CapAmb:"] {
            assert_eq!(field(&status, set), KEPT, "{name} {set}\n{status}");
        }
        assert_eq!(field(&status, "NoNewPrivs:"), "1", "{name}: {status}");
    }
    let log = lab.log("cl");
    assert!(
        log.contains("with CAP_NET_ADMIN, CAP_NET_RAW; no_new_privs"),
        "{log}"
    );

    // `ip`, run by the dropped daemon, put the VIP and the route on the TUN.
    let addrs = ip_out(&["-n", &cl_ns, "addr", "show", "dev", "mifsec0"]);
    assert!(addrs.contains(&format!("inet {vip}/32")), "{addrs}");
    let routes = ip_out(&["-n", &cl_ns, "route", "show", "dev", "mifsec0"]);
    assert!(routes.contains("10.88.0.0/16"), "{routes}");
    assert!(lab.ping(&cl_ns, "10.88.0.1").status.success());

    // A child rekey.
    let out = lab.mifsec("cl", &["ctl", "rekey", "home"]);
    assert!(out.status.success(), "{}", text(&out));
    let s1 = lab.settled("cl", Some(&s0));
    assert_ne!(s1.child_in, s0.child_in);
    lab.swan_agrees(&gw_ns, &s1);
    assert!(lab.ping(&cl_ns, "10.88.0.1").status.success());

    // An interface on a device that appeared after the drop.
    ip(&[
        "-n", &cl_ns, "link", "add", "pvdum0", "type", "veth", "peer", "name", "pvdum1",
    ]);
    ip(&[
        "-n",
        &cl_ns,
        "addr",
        "add",
        "198.18.77.2/24",
        "dev",
        "pvdum0",
    ]);
    ip(&["-n", &cl_ns, "link", "set", "pvdum0", "up"]);
    let out = lab.mifsec(
        "cl",
        &[
            "ctl",
            "add-interface",
            "extra",
            "--address",
            "198.18.77.2",
            "--device",
            "pvdum0",
        ],
    );
    assert!(out.status.success(), "add-interface: {}", text(&out));
    let st = lab.status_json("cl");
    assert!(
        st["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["name"] == "extra" && i["device"] == "pvdum0"),
        "{st:#}"
    );
    let out = lab.mifsec("cl", &["ctl", "remove-interface", "extra"]);
    assert!(out.status.success(), "remove-interface: {}", text(&out));

    // Terminate: the VIP and the route go again.
    lab.terminate_and_wait("cl", "home", &gw_ns);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let addrs = ip_out(&["-n", &cl_ns, "addr", "show", "dev", "mifsec0"]);
        if !addrs.contains(&vip) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "VIP still there: {addrs}\n{}",
            lab.log("cl")
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = lab.log("cl");
    assert!(!log.contains("Operation not permitted"), "{log}");

    // SIGTERM: a clean stop, the socket removed by the unprivileged daemon.
    let sock = lab.sock("cl");
    let child = &mut lab.daemons[0];
    let pid = child.id() as libc::pid_t;
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "no stop within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.success(), "{st}: {}", lab.log("cl"));
    assert!(!sock.exists(), "socket left behind");
}
