//! Root and namespace plumbing shared by the dataplane's kernel tests.

use std::io::{self, Write};
use std::process::Command;

/// True when the test may run; panics when not root unless MIFSEC_SKIP_ROOT_TESTS=1.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var("MIFSEC_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        // Straight to fd 2, past libtest's output capture, so it is always seen; one write so
        // parallel tests do not interleave.
        let line = format!("\n*** SKIPPED {test}: needs root (MIFSEC_SKIP_ROOT_TESTS=1) ***\n");
        let _ = io::stderr().write_all(line.as_bytes());
        return false;
    }
    panic!(
        "{test} needs root (CAP_NET_ADMIN, `ip netns`, /dev/net/tun). Run as root, or set \
         MIFSEC_SKIP_ROOT_TESTS=1 to skip it explicitly."
    );
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running `ip` (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
