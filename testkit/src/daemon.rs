//! Driving `mifsec run` daemons: start one in a namespace, wait for its control socket, ask
//! it for its status, stop it.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cmd::{run, text};
use crate::wait::{WAIT, poll};

/// Starts `bin run --config config` in namespace `ns`, its stderr (the log) into `log`;
/// waits until its control socket `sock` exists, and panics with the log if it exits first
/// or the socket does not come within [`WAIT`].
pub fn start_daemon(bin: &Path, ns: &str, config: &Path, log: &Path, sock: &Path) -> Child {
    let log_file = File::create(log).expect("creating the daemon's log");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin)
        .args(["run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("starting mifsec run");
    let read_log = || std::fs::read_to_string(log).unwrap_or_default();
    let exited = poll(
        WAIT,
        Duration::from_millis(50),
        || match child.try_wait().expect("waiting for mifsec run") {
            Some(st) => Ok(Some(st)),
            None if sock.exists() => Ok(None),
            None => Err(()),
        },
        |()| {
            format!(
                "no control socket {} from mifsec run:\n{}",
                sock.display(),
                read_log()
            )
        },
    );
    if let Some(st) = exited {
        panic!("mifsec run exited with {st}:\n{}", read_log());
    }
    child
}

/// `bin ARGS --socket sock`: the CLI against a running daemon.
pub fn mifsec_ctl(bin: &Path, sock: &Path, args: &[&str]) -> Output {
    run(Command::new(bin).args(args).arg("--socket").arg(sock))
}

/// `mifsec status --json` of the daemon at `sock`.
pub fn mifsec_status(bin: &Path, sock: &Path) -> Value {
    let out = mifsec_ctl(bin, sock, &["status", "--json"]);
    assert!(out.status.success(), "mifsec status: {}", text(&out));
    serde_json::from_slice(&out.stdout).expect("status --json is JSON")
}

/// Sends SIGTERM to `child` (if it still runs) and waits up to `timeout` for it to end;
/// returns how it ended, or `None` if it still runs.
pub fn terminate(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    if let Some(st) = child.try_wait().expect("waiting for a child") {
        return Some(st);
    }
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) on a child we spawned and have not reaped: the pid is still ours. No
    // memory is involved.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("waiting for a child") {
            return Some(st);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// [`terminate`] with a few seconds' grace, then SIGKILL: for clean-up on drop.
pub fn stop(child: &mut Child) {
    if terminate(child, Duration::from_secs(3)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
