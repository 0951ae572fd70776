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

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;
    use crate::aead::{Backend, Cipher};
    use crate::esp::{Mode, OutboundSa, SaConfig};
    use crate::path::{Liveness, PathState};
    use crate::sa_table::{PathEntry, Prefix, smooth_schedule};
    use crate::sys::udp::{OuterSocket, SocketConfig};

    fn path(id: u32, role: Role, live: Liveness, weight: u32, pin: &[&str]) -> PathEntry {
        let sock = OuterSocket::bind(&SocketConfig::new("127.0.0.1:0".parse().unwrap())).unwrap();
        let state = PathState::new(
            id,
            &format!("p{id}"),
            "lo",
            "127.0.0.1:4500".parse().unwrap(),
            0,
        );
        state.set_liveness(live);
        PathEntry {
            state: Arc::new(state),
            socket: Some(Arc::new(sock)),
            role,
            weight,
            pin: pin.iter().map(|p| p.parse::<Prefix>().unwrap()).collect(),
        }
    }

    fn entry(policy: Policy, paths: Vec<PathEntry>) -> OutboundEntry {
        let keymat = [1u8; 20];
        let cfg = SaConfig {
            spi: 0x1000,
            cipher: Cipher::Aes128Gcm,
            backend: Backend::Ring,
            keymat: &keymat,
            esn: true,
            mode: Mode::Tunnel,
            replay_window: 64,
        };
        let weights: Vec<u32> = paths.iter().map(|p| p.weight).collect();
        OutboundEntry {
            name: "t".into(),
            sa: Arc::new(OutboundSa::new(&cfg, None).unwrap()),
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            schedule: smooth_schedule(&weights),
            paths,
            policy,
            cursor: Arc::new(AtomicU64::new(0)),
            probes: true,
        }
    }

    /// All `len` packets of a train on path `path`.
    fn whole(path: usize, len: usize) -> Vec<Run> {
        vec![Run {
            path,
            start: 0,
            len,
        }]
    }

    fn runs(e: &OutboundEntry, dst: &str, n: usize) -> Vec<Run> {
        let mut r = Vec::new();
        assign(e, dst.parse().unwrap(), n, &mut r);
        r
    }

    #[test]
    fn failover_takes_the_first_live_active_then_standby_then_anything_with_a_socket() {
        use Liveness::*;
        let e = entry(
            Policy::Failover,
            vec![
                path(1, Role::Active, Down, 1, &[]),
                path(2, Role::Standby, Up, 1, &[]),
                path(3, Role::Active, Up, 1, &[]),
            ],
        );
        assert_eq!(runs(&e, "10.0.0.1", 5), whole(2, 5));
        let e = entry(
            Policy::Failover,
            vec![
                path(1, Role::Active, Down, 1, &[]),
                path(2, Role::Standby, Unknown, 1, &[]),
            ],
        );
        assert_eq!(runs(&e, "10.0.0.1", 1), whole(1, 1));
        // Nothing live: the first active path rather than nowhere.
        let e = entry(
            Policy::Failover,
            vec![
                path(1, Role::Standby, Down, 1, &[]),
                path(2, Role::Active, Down, 1, &[]),
            ],
        );
        assert_eq!(runs(&e, "10.0.0.1", 1), whole(1, 1));
        let mut gone = path(1, Role::Active, Up, 1, &[]);
        gone.socket = None;
        let e = entry(Policy::Failover, vec![gone]);
        assert!(runs(&e, "10.0.0.1", 1).is_empty(), "no socket, no path");
    }

    #[test]
    fn redundant_sends_every_packet_on_every_live_non_alternate_path() {
        use Liveness::*;
        let e = entry(
            Policy::Redundant,
            vec![
                path(1, Role::Active, Up, 1, &[]),
                path(2, Role::Standby, Up, 1, &[]),
                path(3, Role::Alternate, Up, 1, &[]),
                path(4, Role::Active, Down, 1, &[]),
            ],
        );
        assert_eq!(
            runs(&e, "10.0.0.1", 3),
            [
                Run {
                    path: 0,
                    start: 0,
                    len: 3
                },
                Run {
                    path: 1,
                    start: 0,
                    len: 3
                }
            ]
        );
    }

    #[test]
    fn pinned_follows_the_destination_prefix_else_failover() {
        use Liveness::*;
        let e = entry(
            Policy::Pinned,
            vec![
                path(1, Role::Active, Up, 1, &["10.9.0.0/16"]),
                path(2, Role::Active, Up, 1, &["10.8.0.0/16"]),
            ],
        );
        assert_eq!(runs(&e, "10.8.1.1", 2), whole(1, 2));
        assert_eq!(runs(&e, "10.9.1.1", 2), whole(0, 2));
        assert_eq!(runs(&e, "10.7.1.1", 2), whole(0, 2));
    }

    #[test]
    fn aggregate_follows_the_weights_and_skips_dead_paths() {
        use Liveness::*;
        let e = entry(
            Policy::Aggregate,
            vec![
                path(1, Role::Active, Up, 3, &[]),
                path(2, Role::Active, Up, 1, &[]),
            ],
        );
        let r = runs(&e, "10.0.0.1", 400);
        let on = |p: usize| {
            r.iter()
                .filter(|x| x.path == p)
                .map(|x| x.len)
                .sum::<usize>()
        };
        assert_eq!((on(0), on(1)), (300, 100), "{r:?}");
        assert_eq!(r.iter().map(|x| x.len).sum::<usize>(), 400);
        assert!(
            r.windows(2).all(|w| w[0].start + w[0].len == w[1].start),
            "runs are consecutive"
        );
        let e = entry(
            Policy::Aggregate,
            vec![
                path(1, Role::Active, Up, 3, &[]),
                path(2, Role::Active, Down, 1, &[]),
            ],
        );
        assert_eq!(runs(&e, "10.0.0.1", 40), whole(0, 40));
    }
}
