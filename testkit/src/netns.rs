//! Network namespaces, veth pairs and threads inside a namespace.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cmd::ip;

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A suffix no other namespace or device of this machine's tests has: five digits of the
/// process id and a sequence number (`12345x0`), short enough for a 15-byte device name.
pub fn unique_suffix() -> String {
    format!(
        "{}x{}",
        std::process::id() % 100_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A network namespace, deleted on drop (with the devices in it).
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// Creates namespace `name` (its loopback stays down: see [`Netns::lo_up`]).
    pub fn new(name: impl Into<String>) -> Netns {
        let ns = Netns { name: name.into() };
        ip(&["netns", "add", &ns.name]);
        ns
    }

    /// Brings the namespace's loopback up.
    pub fn lo_up(&self) -> &Self {
        ip(&["-n", &self.name, "link", "set", "lo", "up"]);
        self
    }

    /// Runs a command inside the namespace (with its own /sys), asserting that it succeeds;
    /// returns its stdout.
    pub fn exec(&self, cmd: &[&str]) -> String {
        let out = crate::run(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(cmd),
        );
        assert!(
            out.status.success(),
            "ip netns exec {} {}: {}",
            self.name,
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `f` on a new thread that has joined this namespace (setns is per thread), and
    /// re-raises its panic here. Sockets and devices created there stay in this namespace
    /// wherever they are used afterwards.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&self.name);
                f()
            })
            .join()
            .unwrap_or_else(|e| std::panic::resume_unwind(e))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Joins the calling thread to network namespace `ns` (setns is per thread; threads it spawns
/// afterwards inherit it).
pub fn enter(ns: &str) {
    let f = File::open(format!("/run/netns/{ns}")).expect("open netns file");
    // SAFETY: `f` is an open namespace file descriptor for the whole call; setns(2) only
    // changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {ns}: {}", io::Error::last_os_error());
}

/// Runs `f` on a new thread inside namespace `ns` and returns its result (re-raising its
/// panic).
pub fn in_ns<R: Send + 'static>(ns: &str, f: impl FnOnce() -> R + Send + 'static) -> R {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        enter(&ns);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// A veth pair: `a_dev` in namespace `a_ns`, its peer `b_dev` in `b_ns`.
pub fn veth(a_ns: &str, a_dev: &str, b_ns: &str, b_dev: &str) {
    ip(&[
        "link", "add", a_dev, "netns", a_ns, "type", "veth", "peer", "name", b_dev, "netns", b_ns,
    ]);
}

/// Gives `dev` in `ns` the address `cidr` and brings it up.
pub fn addr_up(ns: &str, dev: &str, cidr: &str) {
    ip(&["-n", ns, "addr", "add", cidr, "dev", dev]);
    ip(&["-n", ns, "link", "set", dev, "up"]);
}
