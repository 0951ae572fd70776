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

/// The failover choice: the first live active path, else the first live standby (standby
/// paths take over in their order in the SA, which `TableOp::SetPathOrder` sets); when no
/// path is live, the first active path that still has a socket (probes keep running, and
/// sending into a path that may have come back beats sending nowhere). A path whose return
/// routability is not yet shown ([`PathState::verified`](crate::path::PathState::verified))
/// is never chosen, not even by that fallback.
pub fn failover(paths: &[PathEntry]) -> Option<usize> {
    let live = |role| paths.iter().position(|p| p.role == role && p.sendable());
    let fallback = |p: &PathEntry| p.socket.is_some() && p.state.verified();
    live(Role::Active)
        .or_else(|| live(Role::Standby))
        .or_else(|| {
            paths
                .iter()
                .position(|p| p.role == Role::Active && fallback(p))
        })
        .or_else(|| paths.iter().position(fallback))
}

/// Which role carries traffic now: the active paths while one of them is live, else the
/// standby paths.
fn carrying(paths: &[PathEntry]) -> Role {
    if paths.iter().any(|p| p.role == Role::Active && p.sendable()) {
        Role::Active
    } else {
        Role::Standby
    }
}

/// Assigns a train of `n` packets to `dst` to paths. `runs` is cleared first; it stays empty
/// when the SA has no path with a socket.
///
/// For every policy, standby paths carry traffic only while no active path is live, and
/// alternate paths never (they are probed, and used once a handover makes them active):
/// - failover: see [`failover`];
/// - pinned: the first live path of the carrying role (active, or standby while no active
///   path is live) whose pins hold `dst`, else failover;
/// - redundant: every live active path; while none is live, the first live standby;
/// - aggregate: the schedule holds the active paths only (by weight), a slot whose path is
///   not live goes to the failover choice; while no active path is live that is the first
///   live standby.
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
            let role = carrying(&entry.paths);
            let pinned = entry.paths.iter().position(|p| {
                p.role == role && p.sendable() && p.pin.iter().any(|pfx| pfx.contains(dst))
            });
            runs.extend(pinned.or_else(|| failover(&entry.paths)).map(whole));
        }
        Policy::Redundant => {
            runs.extend(
                entry
                    .paths
                    .iter()
                    .enumerate()
                    .filter(|(_, p)| p.role == Role::Active && p.sendable())
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
                    Some(p) if p.role == Role::Active && p.sendable() => slot,
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
    use crate::sa_table::{PathEntry, Prefix, aggregate_schedule};
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
        OutboundEntry {
            name: "t".into(),
            sa: Arc::new(OutboundSa::new(&cfg, None).unwrap()),
            spi_in: 0x2000,
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            schedule: aggregate_schedule(&paths),
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
    fn redundant_sends_every_packet_on_every_live_active_path() {
        use Liveness::*;
        let e = entry(
            Policy::Redundant,
            vec![
                path(1, Role::Active, Up, 1, &[]),
                path(2, Role::Standby, Up, 1, &[]),
                path(3, Role::Alternate, Up, 1, &[]),
                path(4, Role::Active, Down, 1, &[]),
                path(5, Role::Active, Unknown, 1, &[]),
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
                    path: 4,
                    start: 0,
                    len: 3
                }
            ]
        );
        // No active path live: the first live standby, never the alternate.
        e.paths[0].state.set_liveness(Down);
        e.paths[4].state.set_liveness(Down);
        assert_eq!(runs(&e, "10.0.0.1", 3), whole(1, 3));
    }

    /// Standby paths take over in their order only while no active path is live, and the
    /// traffic goes back to the active paths as soon as one is live again, for every policy.
    #[test]
    fn standby_takes_over_in_order_and_hands_back_for_every_policy() {
        use Liveness::*;
        for policy in [
            Policy::Failover,
            Policy::Aggregate,
            Policy::Redundant,
            Policy::Pinned,
        ] {
            let e = entry(
                policy,
                vec![
                    path(1, Role::Standby, Up, 1, &["10.0.0.0/8"]),
                    path(2, Role::Active, Up, 2, &[]),
                    path(3, Role::Standby, Up, 1, &["10.0.0.0/8"]),
                    path(4, Role::Active, Up, 1, &[]),
                    path(5, Role::Alternate, Up, 1, &["10.0.0.0/8"]),
                ],
            );
            let used = |e: &OutboundEntry| {
                let mut on: Vec<usize> = runs(e, "10.0.0.1", 64).iter().map(|r| r.path).collect();
                on.sort_unstable();
                on.dedup();
                on
            };
            let actives = used(&e);
            assert!(
                !actives.is_empty() && actives.iter().all(|&i| i == 1 || i == 3),
                "{policy:?}: only active paths while they are live: {actives:?}"
            );
            e.paths[1].state.set_liveness(Down);
            e.paths[3].state.set_liveness(Down);
            assert_eq!(used(&e), [0], "{policy:?}: the first standby takes over");
            e.paths[0].state.set_liveness(Down);
            assert_eq!(used(&e), [2], "{policy:?}: then the next one");
            e.paths[3].state.set_liveness(Up);
            assert_eq!(used(&e), [3], "{policy:?}: back on the live active path");
        }
    }

    #[test]
    fn an_unverified_path_carries_nothing_not_even_as_the_last_resort() {
        use Liveness::*;
        let unverified = |id, role| {
            let mut p = path(id, role, Unknown, 1, &["10.0.0.0/8"]);
            p.state = Arc::new(PathState::unverified(
                id,
                &format!("p{id}"),
                "lo",
                "127.0.0.1:4500".parse().unwrap(),
                0,
            ));
            p
        };
        for policy in [
            Policy::Failover,
            Policy::Aggregate,
            Policy::Redundant,
            Policy::Pinned,
        ] {
            let e = entry(
                policy,
                vec![
                    unverified(1, Role::Active),
                    path(2, Role::Active, Up, 1, &[]),
                ],
            );
            let all: Vec<usize> = runs(&e, "10.0.0.1", 16).iter().map(|r| r.path).collect();
            assert!(all.iter().all(|&i| i == 1), "{policy:?}: {all:?}");
            // The verified path down too: the fallback takes it, never the unverified one.
            e.paths[1].state.set_liveness(Down);
            let all: Vec<usize> = runs(&e, "10.0.0.1", 16).iter().map(|r| r.path).collect();
            assert!(all.iter().all(|&i| i == 1), "{policy:?}: {all:?}");
            let e = entry(policy, vec![unverified(1, Role::Active)]);
            assert!(runs(&e, "10.0.0.1", 4).is_empty(), "{policy:?}");
            // Verified: it carries traffic.
            e.paths[0].state.verify();
            assert_eq!(runs(&e, "10.0.0.1", 4), whole(0, 4), "{policy:?}");
        }
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
