//! Running iproute2's `ip` (addresses and routes on the TUN): by an absolute path found once
//! in a fixed list, never through `PATH`, with an empty environment. The candidates must be
//! regular files owned by root and writable by nobody else, so that the daemon (which
//! runs `ip` with CAP_NET_ADMIN) never executes a program someone else could have replaced.
//! A later change replaces `ip` with netlink.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where `ip` is looked for, in this order.
pub const CANDIDATES: [&str; 4] = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"];

static IP: OnceLock<Option<PathBuf>> = OnceLock::new();

fn trusted(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| {
        m.is_file() && m.uid() == 0 && m.mode() & 0o022 == 0 && m.mode() & 0o111 != 0
    })
}

/// The `ip` program, resolved at the first call and remembered.
pub fn path() -> Option<&'static Path> {
    IP.get_or_init(|| {
        CANDIDATES
            .iter()
            .map(Path::new)
            .find(|p| trusted(p))
            .map(Path::to_path_buf)
    })
    .as_deref()
}

/// Runs `ip ARGS`; on failure the error says what ran and why (ip's own message).
pub fn run(args: &[&str]) -> Result<(), String> {
    let Some(ip) = path() else {
        return Err(format!(
            "ip {}: no trusted ip program (looked for {})",
            args.join(" "),
            CANDIDATES.join(", ")
        ));
    };
    let out = Command::new(ip)
        .args(args)
        .env_clear()
        .output()
        .map_err(|e| format!("running {} {}: {e}", ip.display(), args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_by_absolute_path_and_runs() {
        let p = path().expect("iproute2 is installed");
        assert!(p.is_absolute());
        assert!(CANDIDATES.iter().any(|c| Path::new(c) == p));
        assert!(run(&["-V"]).is_ok());
        let e = run(&["nosuchobject"]).unwrap_err();
        assert!(e.starts_with("ip nosuchobject: "), "{e}");
    }
}
