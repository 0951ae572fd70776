//! The daemon's own failures, with the real binary in a network namespace.
//!
//! A panic in any of its threads ends the whole process with a clear message and exit
//! status 70 (so a supervisor restarts it), and removes the control socket. The panic is
//! provoked by the debug-only hook `MIFSEC_DEBUG_PANIC=<point>`
//! (`mifsec_dataplane::debug`). Needs root (namespaces, TUN).

mod swan;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use swan::*;

/// Runs `mifsec run` in the client namespace with `MIFSEC_DEBUG_PANIC=point`, pokes the
/// control socket once it exists (so the `control` point is reached), and returns the
/// exit code and the log once the process has ended (20 s at most).
fn run_until_exit(lab: &Lab, cfg: &str, point: &str) -> (Option<i32>, String) {
    let path = lab.dir.join(format!("{point}.toml"));
    std::fs::write(&path, cfg).unwrap();
    let log_path = lab.dir.join(format!("{point}.log"));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new("ip")
        .args(["netns", "exec", &lab.cl_ns, BIN, "run", "--config"])
        .arg(&path)
        .env("MIFSEC_DEBUG_PANIC", point)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting mifsec run");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut poked = false;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return (st.code(), std::fs::read_to_string(&log_path).unwrap());
        }
        if !poked && lab.sock("cl").exists() {
            // Reaches the control-socket thread; the answer does not matter.
            let _ = lab.mifsec("cl", &["status"]);
            poked = true;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "mifsec run with MIFSEC_DEBUG_PANIC={point} still running after 20 s:\n{}",
                std::fs::read_to_string(&log_path).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn a_panic_in_any_thread_ends_the_daemon_with_status_70() {
    require_root();
    let lab = Lab::new("pn", BIN);
    // A client of a gateway that never answers, with an interface that follows a device:
    // enough for every thread to exist.
    let cfg = mifsec_client_config(&lab, "", "") + "\n[interfaces.late]\ndevice = \"nosuch0\"\n";
    for (point, thread) in [
        ("worker", "mifsec-worker-0"),
        ("monitor", "mifsec-monitor"),
        ("ike", "mifsec-ike"),
        ("netlink", "mifsec-netlink"),
        ("control", "mifsec-ctl-conn"),
    ] {
        let (code, log) = run_until_exit(&lab, &cfg, point);
        assert_eq!(code, Some(70), "{point}: {log}");
        let line = format!("mifsec: thread {thread} panicked at ");
        assert!(log.contains(&line), "{point}: no {line:?} in\n{log}");
        assert!(
            log.contains(&format!(
                "MIFSEC_DEBUG_PANIC={point}: panicking on purpose (a test hook of debug builds); exiting with status 70"
            )),
            "{point}: {log}"
        );
        assert!(
            !lab.sock("cl").exists(),
            "{point}: the control socket was left behind"
        );
        assert!(!log.contains("mifsec: stopped"), "{point}: {log}");
    }
}
