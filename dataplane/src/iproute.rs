//! Running iproute2's `ip` (addresses and routes on the TUN): by an absolute path found once
//! in a fixed list, never through `PATH`, with an empty environment. The candidates must be
//! regular files owned by root and writable by nobody else, so that the daemon (which
//! runs `ip` with CAP_NET_ADMIN) never executes a program someone else could have replaced.
//! A later change replaces `ip` with netlink.
//!
//! Besides [`run`], which the engine uses when it opens the TUN, the changes the control
//! plane makes while it runs (a virtual IP on the TUN, a route into it) are typed
//! ([`Change`]) and run in order on a helper thread ([`Queue`]), so that the IKE thread
//! never waits for a subprocess.

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::sa_table::Prefix;

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

/// Why `ip` did not do what it was asked.
#[derive(Debug)]
pub enum IpError {
    /// No trusted `ip` program exists at any of the [`CANDIDATES`].
    NotFound {
        /// What was to run, `ip` itself not included.
        args: String,
    },
    /// The program could not be run.
    Spawn {
        /// The program.
        program: PathBuf,
        /// What was to run.
        args: String,
        /// Why.
        source: std::io::Error,
    },
    /// The helper thread of a [`Queue`] is gone: the change was not made.
    QueueGone {
        /// What was to run.
        args: String,
    },
    /// `ip` ran and failed.
    Failed {
        /// What ran.
        args: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its own message (standard error, trimmed).
        message: String,
    },
}

impl std::fmt::Display for IpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpError::NotFound { args } => write!(
                f,
                "ip {args}: no trusted ip program (looked for {})",
                CANDIDATES.join(", ")
            ),
            IpError::Spawn {
                program,
                args,
                source,
            } => write!(f, "running {} {args}: {source}", program.display()),
            IpError::QueueGone { args } => write!(f, "ip {args}: the helper thread is gone"),
            IpError::Failed { args, message, .. } => write!(f, "ip {args}: {message}"),
        }
    }
}

impl std::error::Error for IpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IpError::Spawn { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Runs `ip ARGS`; on failure the error says what ran and why (ip's own message).
pub fn run(args: &[&str]) -> Result<(), IpError> {
    let Some(ip) = path() else {
        return Err(IpError::NotFound {
            args: args.join(" "),
        });
    };
    let out = Command::new(ip)
        .args(args)
        .env_clear()
        .output()
        .map_err(|source| IpError::Spawn {
            program: ip.to_owned(),
            args: args.join(" "),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(IpError::Failed {
            args: args.join(" "),
            status: out.status,
            message: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

/// One change of the addresses or routes on a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Puts `addr` (a host address, /32 or /128) on `dev`; an IPv6 one without duplicate
    /// address detection.
    AddAddress {
        /// The address.
        addr: IpAddr,
        /// The device.
        dev: String,
    },
    /// Takes `addr` off `dev` again.
    DelAddress {
        /// The address.
        addr: IpAddr,
        /// The device.
        dev: String,
    },
    /// Routes `prefix` into `dev`, from source `src` when given (replacing a route that is
    /// there).
    AddRoute {
        /// The destination.
        prefix: Prefix,
        /// The device.
        dev: String,
        /// The preferred source address.
        src: Option<IpAddr>,
    },
    /// Removes the route of `prefix` into `dev`.
    DelRoute {
        /// The destination.
        prefix: Prefix,
        /// The device.
        dev: String,
    },
}

/// `a/32` or `a/128`.
fn host(a: IpAddr) -> String {
    format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 })
}

impl Change {
    /// The arguments of `ip` that make the change.
    pub fn args(&self) -> Vec<String> {
        let v = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        match self {
            Change::AddAddress { addr, dev } => {
                let mut a = v(&["addr", "replace", &host(*addr), "dev", dev]);
                if addr.is_ipv6() {
                    a.push("nodad".into());
                }
                a
            }
            Change::DelAddress { addr, dev } => v(&["addr", "del", &host(*addr), "dev", dev]),
            Change::AddRoute { prefix, dev, src } => {
                let mut a = v(&["route", "replace", &prefix.to_string(), "dev", dev]);
                if let Some(s) = src {
                    a.extend(["src".into(), s.to_string()]);
                }
                a
            }
            Change::DelRoute { prefix, dev } => {
                v(&["route", "del", &prefix.to_string(), "dev", dev])
            }
        }
    }

    /// Makes the change now (see [`run`]).
    pub fn apply(&self) -> Result<(), IpError> {
        let args = self.args();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a)
    }
}

/// Changes made in order on a helper thread. Pushing waits only when `bound` changes are
/// waiting already; a change that fails goes to the error callback (for the log) and the
/// next one is made. Dropping the queue makes the changes still waiting, then ends the
/// thread.
pub struct Queue {
    tx: Option<Sender<Change>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue").finish_non_exhaustive()
    }
}

impl Queue {
    /// Starts the helper thread (named `name`); `on_error` gets each failure.
    pub fn start(
        name: &str,
        bound: usize,
        on_error: impl Fn(IpError) + Send + 'static,
    ) -> std::io::Result<Queue> {
        let (tx, rx) = crossbeam_channel::bounded::<Change>(bound);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for c in rx {
                    if let Err(e) = c.apply() {
                        on_error(e);
                    }
                }
            })?;
        Ok(Queue {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `change`; an error if the helper thread is gone.
    pub fn push(&self, change: Change) -> Result<(), IpError> {
        let gone = |c: Change| IpError::QueueGone {
            args: c.args().join(" "),
        };
        let Some(tx) = &self.tx else {
            return Err(gone(change));
        };
        tx.send(change).map_err(|e| gone(e.into_inner()))
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_as_ip_arguments() {
        let dev = "mifsec0".to_owned();
        let a = |c: Change| c.args().join(" ");
        assert_eq!(
            a(Change::AddAddress {
                addr: "10.1.0.2".parse().unwrap(),
                dev: dev.clone()
            }),
            "addr replace 10.1.0.2/32 dev mifsec0"
        );
        assert_eq!(
            a(Change::AddAddress {
                addr: "fd00::2".parse().unwrap(),
                dev: dev.clone()
            }),
            "addr replace fd00::2/128 dev mifsec0 nodad"
        );
        assert_eq!(
            a(Change::DelAddress {
                addr: "fd00::2".parse().unwrap(),
                dev: dev.clone()
            }),
            "addr del fd00::2/128 dev mifsec0"
        );
        assert_eq!(
            a(Change::AddRoute {
                prefix: "10.88.0.0/16".parse().unwrap(),
                dev: dev.clone(),
                src: Some("10.1.0.2".parse().unwrap())
            }),
            "route replace 10.88.0.0/16 dev mifsec0 src 10.1.0.2"
        );
        assert_eq!(
            a(Change::AddRoute {
                prefix: "10.88.0.0/16".parse().unwrap(),
                dev: dev.clone(),
                src: None
            }),
            "route replace 10.88.0.0/16 dev mifsec0"
        );
        assert_eq!(
            a(Change::DelRoute {
                prefix: "10.88.0.0/16".parse().unwrap(),
                dev
            }),
            "route del 10.88.0.0/16 dev mifsec0"
        );
    }

    #[test]
    fn a_queue_reports_failures_in_order_and_drains_on_drop() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let q = Queue::start("test-ip", 4, move |e: IpError| {
            let _ = tx.send(e.to_string());
        })
        .unwrap();
        for dev in ["nosuchdev0", "nosuchdev1"] {
            q.push(Change::DelRoute {
                prefix: "10.254.0.0/16".parse().unwrap(),
                dev: dev.into(),
            })
            .unwrap();
        }
        drop(q);
        let errs: Vec<String> = rx.try_iter().collect();
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(
            errs[0].starts_with("ip route del 10.254.0.0/16 dev nosuchdev0: "),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("ip route del 10.254.0.0/16 dev nosuchdev1: "),
            "{errs:?}"
        );
    }

    #[test]
    fn found_by_absolute_path_and_runs() {
        let p = path().expect("iproute2 is installed");
        assert!(p.is_absolute());
        assert!(CANDIDATES.iter().any(|c| Path::new(c) == p));
        assert!(run(&["-V"]).is_ok());
        let e = run(&["nosuchobject"]).unwrap_err();
        assert!(matches!(&e, IpError::Failed { args, .. } if args == "nosuchobject"));
        assert!(e.to_string().starts_with("ip nosuchobject: "), "{e}");
    }
}
