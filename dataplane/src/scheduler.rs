//! Which path(s) each packet of an SA takes, by the SA's policy.
//!
//! Works on a *train*: `n` consecutive packets of one SA (the segments of one TCP super-packet
//! read from the TUN, usually) and returns runs of consecutive packets per path, so that each
//! run can leave in one UDP GSO send.

use std::net::IpAddr;

use crate::sa_table::{OutboundEntry, PathEntry, Policy, Role};

/// Packets `start..start + len` of the train go out on path `path`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    /// Index into the entry's `paths`.
    pub path: usize,
    /// First packet of the run.
    pub start: usize,
    /// Number of packets.
    pub len: usize,
}

/// The failover choice: the first live active path, else the first live standby; when no path
/// is live, the first active path that still has a socket (probes keep running, and sending
/// into a path that may have come back beats sending nowhere).
pub fn failover(paths: &[PathEntry]) -> Option<usize> {
    let live = |role| paths.iter().position(|p| p.role == role && p.sendable());
    live(Role::Active)
        .or_else(|| live(Role::Standby))
        .or_else(|| {
            paths
                .iter()
                .position(|p| p.role == Role::Active && p.socket.is_some())
        })
        .or_else(|| paths.iter().position(|p| p.socket.is_some()))
}

/// Assigns a train of `n` packets to `dst` to paths. `runs` is cleared first; it stays empty
/// when the SA has no path with a socket.
pub fn assign(entry: &OutboundEntry, dst: IpAddr, n: usize, runs: &mut Vec<Run>) {
    runs.clear();
    if n == 0 {
        return;
    }
    let whole = |path| Run {
        path,
        start: 0,
        len: n,
    };
    match entry.policy {
        Policy::Failover => runs.extend(failover(&entry.paths).map(whole)),
        Policy::Pinned => {
            let pinned = entry
                .paths
                .iter()
                .position(|p| p.sendable() && p.pin.iter().any(|pfx| pfx.contains(dst)));
            runs.extend(pinned.or_else(|| failover(&entry.paths)).map(whole));
        }
        Policy::Redundant => {
            runs.extend(
                entry
                    .paths
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.role != Role::Alternate && p.sendable())
                    .map(|(i, _)| whole(i)),
            );
            if runs.is_empty() {
                runs.extend(failover(&entry.paths).map(whole));
            }
        }
        Policy::Aggregate => {
            let Some(fallback) = failover(&entry.paths) else {
                return;
            };
            if entry.schedule.is_empty() {
                runs.push(whole(fallback));
                return;
            }
            let base = entry.take_schedule(n as u64);
            let len = entry.schedule.len() as u64;
            for k in 0..n {
                let slot = entry.schedule[((base + k as u64) % len) as usize] as usize;
                let path = match entry.paths.get(slot) {
                    Some(p) if p.role != Role::Alternate && p.sendable() => slot,
                    _ => fallback,
                };
                match runs.last_mut() {
                    Some(r) if r.path == path => r.len += 1,
                    _ => runs.push(Run {
                        path,
                        start: k,
                        len: 1,
                    }),
                }
            }
        }
    }
}
