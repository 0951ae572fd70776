//! The kernel state mifsec changes on its TUN: its configured addresses and the link up
//! (when the engine opens it), the virtual IPs and the routes into it (while the daemon
//! runs). Each [`Change`] is one rtnetlink request, acknowledged by the kernel (see
//! [`crate::netlink::Requests`]); no program is run.
//!
//! [`apply_all`] makes changes at once (the engine's TUN setup); the changes the control
//! plane makes while it runs are made in order on a helper thread ([`Queue`]), so that the
//! IKE thread never waits for the kernel.

use std::net::IpAddr;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use crate::netlink::{RequestError, Requests};
use crate::sa_table::Prefix;

/// Why a change was not made.
#[derive(Debug)]
pub enum IpError {
    /// The kernel refused, or the request failed (the error names the change).
    Netlink(RequestError),
    /// The helper thread of a [`Queue`] is gone: the change was not made.
    QueueGone {
        /// The change.
        what: String,
    },
}

impl std::fmt::Display for IpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IpError::Netlink(e) => e.fmt(f),
            IpError::QueueGone { what } => write!(f, "{what}: the helper thread is gone"),
        }
    }
}

impl std::error::Error for IpError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            IpError::Netlink(e) => Some(e),
            IpError::QueueGone { .. } => None,
        }
    }
}

impl From<RequestError> for IpError {
    fn from(e: RequestError) -> IpError {
        IpError::Netlink(e)
    }
}

/// One change of the addresses, routes or link state of a device. Adding replaces what is
/// there (adding twice succeeds); removing what is not there is an error.
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
    /// Takes the host address `addr` off `dev` again.
    DelAddress {
        /// The address.
        addr: IpAddr,
        /// The device.
        dev: String,
    },
    /// Puts `addr` with its prefix length (`10.0.0.1/24`) on `dev`: the kernel adds the
    /// prefix's route.
    AddPrefixAddress {
        /// The address and prefix length.
        addr: Prefix,
        /// The device.
        dev: String,
    },
    /// Routes `prefix` into `dev` (main table), from source `src` when given (replacing a
    /// route of `prefix` that is there).
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
    /// Sets `dev` administratively up, and its MTU when given.
    SetLinkUp {
        /// The device.
        dev: String,
        /// The MTU.
        mtu: Option<u32>,
    },
}

/// `a/32` or `a/128`.
fn host(a: IpAddr) -> Prefix {
    Prefix {
        addr: a,
        len: if a.is_ipv4() { 32 } else { 128 },
    }
}

impl Change {
    /// What the change does, as its errors name it ("add address 10.1.0.2/32 on mifsec0").
    pub fn what(&self) -> String {
        match self {
            Change::AddAddress { addr, dev } => format!("add address {} on {dev}", host(*addr)),
            Change::DelAddress { addr, dev } => {
                format!("delete address {} on {dev}", host(*addr))
            }
            Change::AddPrefixAddress { addr, dev } => format!("add address {addr} on {dev}"),
            Change::AddRoute { prefix, dev, src } => match src {
                Some(s) => format!("add route {prefix} dev {dev} src {s}"),
                None => format!("add route {prefix} dev {dev}"),
            },
            Change::DelRoute { prefix, dev } => format!("delete route {prefix} dev {dev}"),
            Change::SetLinkUp { dev, mtu } => match mtu {
                Some(m) => format!("set {dev} up mtu {m}"),
                None => format!("set {dev} up"),
            },
        }
    }

    /// Makes the change on `req`'s socket (in the network namespace it was opened in).
    pub fn apply_with(&self, req: &mut Requests) -> Result<(), RequestError> {
        match self {
            Change::AddAddress { addr, dev } => req.add_address(host(*addr), dev, true),
            Change::DelAddress { addr, dev } => req.del_address(host(*addr), dev),
            Change::AddPrefixAddress { addr, dev } => req.add_address(*addr, dev, false),
            Change::AddRoute { prefix, dev, src } => req.add_route(*prefix, dev, *src),
            Change::DelRoute { prefix, dev } => req.del_route(*prefix, dev),
            Change::SetLinkUp { dev, mtu } => req.set_link(dev, Some(true), *mtu),
        }
    }

    /// Makes the change now, on a socket of its own.
    pub fn apply(&self) -> Result<(), IpError> {
        apply_all(std::slice::from_ref(self))
    }
}

/// Makes `changes` in order on one socket; stops at the first that fails.
pub fn apply_all(changes: &[Change]) -> Result<(), IpError> {
    let Some(first) = changes.first() else {
        return Ok(());
    };
    let mut req = Requests::open().map_err(|source| RequestError::Open {
        what: first.what(),
        source,
    })?;
    for c in changes {
        c.apply_with(&mut req)?;
    }
    Ok(())
}

/// Changes made in order on a helper thread (its rtnetlink socket in the namespace of the
/// thread that started the queue). Pushing waits only when `bound` changes are waiting
/// already; a change that fails goes to the error callback (for the log) and the next one
/// is made. Dropping the queue makes the changes still waiting, then ends the thread.
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
                // Opened at the first change, and again after a failure to open.
                let mut req: Option<Requests> = None;
                for c in rx {
                    let r = match &mut req {
                        Some(r) => c.apply_with(r),
                        None => match Requests::open() {
                            Ok(r) => c.apply_with(req.insert(r)),
                            Err(source) => Err(RequestError::Open {
                                what: c.what(),
                                source,
                            }),
                        },
                    };
                    if let Err(e) = r {
                        on_error(IpError::Netlink(e));
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
        let gone = |c: Change| IpError::QueueGone { what: c.what() };
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
    fn changes_name_what_they_do() {
        let dev = "mifsec0".to_owned();
        let w = |c: Change| c.what();
        assert_eq!(
            w(Change::AddAddress {
                addr: "10.1.0.2".parse().unwrap(),
                dev: dev.clone()
            }),
            "add address 10.1.0.2/32 on mifsec0"
        );
        assert_eq!(
            w(Change::DelAddress {
                addr: "fd00::2".parse().unwrap(),
                dev: dev.clone()
            }),
            "delete address fd00::2/128 on mifsec0"
        );
        assert_eq!(
            w(Change::AddPrefixAddress {
                addr: "10.0.0.1/24".parse().unwrap(),
                dev: dev.clone()
            }),
            "add address 10.0.0.1/24 on mifsec0"
        );
        assert_eq!(
            w(Change::AddRoute {
                prefix: "10.88.0.0/16".parse().unwrap(),
                dev: dev.clone(),
                src: Some("10.1.0.2".parse().unwrap())
            }),
            "add route 10.88.0.0/16 dev mifsec0 src 10.1.0.2"
        );
        assert_eq!(
            w(Change::DelRoute {
                prefix: "10.88.0.0/16".parse().unwrap(),
                dev: dev.clone()
            }),
            "delete route 10.88.0.0/16 dev mifsec0"
        );
        assert_eq!(w(Change::SetLinkUp { dev, mtu: None }), "set mifsec0 up");
    }

    /// Only looks devices up: nothing is changed, whatever namespace the test runs in.
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
        assert_eq!(
            errs,
            vec![
                "delete route 10.254.0.0/16 dev nosuchdev0: no device named nosuchdev0",
                "delete route 10.254.0.0/16 dev nosuchdev1: no device named nosuchdev1",
            ]
        );
    }
}
