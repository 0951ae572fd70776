//! The engine's batched table changes, return-routability-gated paths, path events and
//! standby paths, end to end: two engines in two network namespaces joined by two links
//! (the `mifsec_tests::Lab`), real TUN devices, sockets and kernel traffic. Needs root; see
//! `mifsec_tests::require_root`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mifsec_dataplane::aead::Cipher;
use mifsec_dataplane::engine::{Engine, EngineError, PathSpec, PathStatus, SaSpec, TableOp};
use mifsec_dataplane::event::Event;
use mifsec_dataplane::sa_table::{Policy, Role};
use zeroize::Zeroizing;

use mifsec_tests::{Lab, Side, WAIT, enter, lab_config, ping, require_root, wait_until};

/// Nothing answers there: an address on link 2's subnet that nobody has.
const NOWHERE: &str = "198.18.2.77:4500";

fn up(policy: Policy, p2: Role) -> (Lab, Engine, Engine) {
    let lab = Lab::new([None, None]);
    let gw = lab.start(
        &lab.gw.clone(),
        lab_config(Side::Gateway, policy, Cipher::Aes128Gcm, p2),
    );
    let cl = lab.start(
        &lab.cl.clone(),
        lab_config(Side::Client, policy, Cipher::Aes128Gcm, p2),
    );
    (lab, cl, gw)
}

fn path(name: &str, interface: &str, remote: &str, role: Role, verify: bool) -> PathSpec {
    PathSpec {
        name: name.into(),
        interface: interface.into(),
        remote: remote.parse().unwrap(),
        role,
        weight: 1,
        pin: Vec::new(),
        verify,
    }
}

/// Path `name` of SA `sa` in the engine's status.
fn path_status(e: &Engine, sa: &str, name: &str) -> PathStatus {
    let s = e.status();
    let sa = s.sas.iter().find(|s| s.name == sa).expect("SA");
    sa.paths
        .iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no path {name}: {:?}", sa.paths))
        .clone()
}

/// One SA's name, its paths' names and roles in order, and its policy.
type SaLayout = (String, Vec<(String, String)>, String);

/// What a batch may change, of every SA.
fn layout(e: &Engine) -> Vec<SaLayout> {
    e.status()
        .sas
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                s.paths
                    .iter()
                    .map(|p| (p.name.clone(), p.role.clone()))
                    .collect(),
                s.policy.clone(),
            )
        })
        .collect()
}

/// A background UDP stream from the client through the tunnel to 10.2.0.1:`port` at about
/// 1000 datagrams per second, for at most 60 s or until the returned flag is set.
fn background_stream(lab: &Lab, port: u16) -> Arc<AtomicBool> {
    let stop = Arc::new(AtomicBool::new(false));
    let (s2, ns) = (stop.clone(), lab.cl.clone());
    std::thread::spawn(move || {
        enter(&ns);
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        let to = SocketAddr::from(([10, 2, 0, 1], port));
        let start = Instant::now();
        for k in 0u64..60_000 {
            if s2.load(Ordering::Relaxed) {
                break;
            }
            let due = start + Duration::from_millis(k);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            let _ = sock.send_to(&k.to_be_bytes(), to);
        }
    });
    stop
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn a_batch_over_fifty_sas_is_one_swap_and_an_invalid_one_changes_nothing() {
    require_root();
    let (lab, cl, _gw) = up(Policy::Failover, Role::Standby);
    // 50 more SA pairs on the client (selectors of their own; only `tunnel` carries traffic).
    let base = lab_config(
        Side::Client,
        Policy::Failover,
        Cipher::Aes128Gcm,
        Role::Standby,
    )
    .sas
    .remove(0);
    for i in 0..50u32 {
        let key = |d: u8| Zeroizing::new((0..20).map(|b| b ^ d ^ (i as u8)).collect::<Vec<u8>>());
        cl.install_sa(SaSpec {
            name: format!("c{i}"),
            spi_out: 0x10_000 + i,
            spi_in: 0x20_000 + i,
            key_out: key(0x11),
            key_in: key(0x77),
            remote_ts: vec![format!("10.3.{i}.0/24").parse().unwrap()],
            ..base.clone()
        })
        .unwrap();
    }
    let names: Vec<String> = std::iter::once("tunnel".to_owned())
        .chain((0..50).map(|i| format!("c{i}")))
        .collect();
    // Every SA: a new path p3 on link 2, a hard handover to it, p1 removed.
    let moves = |names: &[String]| -> Vec<TableOp> {
        names
            .iter()
            .flat_map(|sa| {
                [
                    TableOp::AddPath {
                        sa: sa.clone(),
                        path: path("p3", "link2", "198.18.2.1:4500", Role::Standby, false),
                    },
                    TableOp::Handover {
                        sa: sa.clone(),
                        path: "p3".into(),
                        hard: true,
                    },
                    TableOp::RemovePath {
                        sa: sa.clone(),
                        path: "p1".into(),
                    },
                ]
            })
            .collect()
    };
    // Invalid: the same moves and, last, a path of an SA that does not exist.
    let before = layout(&cl);
    let swaps = cl.table_swaps();
    let mut bad = moves(&names);
    bad.push(TableOp::RemovePath {
        sa: "c99".into(),
        path: "p1".into(),
    });
    let e = cl.apply(bad).unwrap_err();
    assert!(
        matches!(&e, EngineError::InBatch { index: 153, source } if matches!(**source, EngineError::NoSa { .. })),
        "{e}"
    );
    assert_eq!(
        cl.table_swaps(),
        swaps,
        "an invalid batch publishes nothing"
    );
    assert_eq!(layout(&cl), before, "an invalid batch changes nothing");
    let (ok, out) = ping(&lab.cl, "10.2.0.1", 2);
    assert!(ok, "{out}");
    // Valid: 153 changes over 51 SAs, one swap.
    let swaps = cl.table_swaps();
    let msgs = cl.apply(moves(&names)).unwrap();
    assert_eq!(msgs.len(), 153);
    assert_eq!(cl.table_swaps(), swaps + 1, "one swap for the whole batch");
    for (sa, paths, _) in layout(&cl) {
        let want = [("p3", "active"), ("p2", "standby")].map(|(a, b)| (a.into(), b.into()));
        assert_eq!(paths, want, "{sa}");
    }
    // The tunnel carries on over p3.
    let (ok, out) = ping(&lab.cl, "10.2.0.1", 3);
    assert!(ok, "{out}");
    assert!(path_status(&cl, "tunnel", "p3").tx_packets >= 3);
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn a_verify_path_carries_data_only_once_its_probe_is_answered() {
    require_root();
    let (lab, cl, _gw) = up(Policy::Failover, Role::Standby);
    mifsec_tests::wait_paths_up(&cl);
    let events = cl.take_event_receiver().unwrap();
    let stop = background_stream(&lab, 5101);
    // A path to where nothing answers, first in the order and active: it must never carry
    // a data packet (not even as the last resort once p1 and p2 are gone).
    let swaps = cl.table_swaps();
    cl.apply(vec![
        TableOp::AddPath {
            sa: "tunnel".into(),
            path: path("v", "link2", NOWHERE, Role::Active, true),
        },
        TableOp::SetPathOrder {
            sa: "tunnel".into(),
            order: vec!["v".into()],
        },
    ])
    .unwrap();
    assert_eq!(cl.table_swaps(), swaps + 1);
    let tx1 = path_status(&cl, "tunnel", "p1").tx_packets;
    wait_until(WAIT, "p1 carries the stream on", || {
        path_status(&cl, "tunnel", "p1").tx_packets > tx1 + 200
    });
    let v = path_status(&cl, "tunnel", "v");
    assert_eq!((v.state.as_str(), v.tx_packets), ("unverified", 0), "{v:?}");
    // A path the gateway answers on (p2 replaced by `w`, same addresses), ahead of p1 and
    // active: unverified at first, then verified by its first probe's answer, and then it
    // carries the stream (failover: the first live active path).
    let t0 = Instant::now();
    cl.apply(vec![
        TableOp::RemovePath {
            sa: "tunnel".into(),
            path: "p2".into(),
        },
        TableOp::AddPath {
            sa: "tunnel".into(),
            path: path("w", "link2", "198.18.2.1:4500", Role::Active, true),
        },
        TableOp::SetPathOrder {
            sa: "tunnel".into(),
            order: vec!["v".into(), "w".into()],
        },
    ])
    .unwrap();
    let mut seen: Vec<(String, bool, bool)> = Vec::new();
    let verified = loop {
        let left = WAIT.saturating_sub(t0.elapsed());
        assert!(!left.is_zero(), "no event of w verified: {seen:?}");
        match events.recv_timeout(left) {
            Ok(Event::PathState {
                path, up, verified, ..
            }) => {
                seen.push((path.clone(), up, verified));
                if path == "w" && up && verified {
                    break t0.elapsed();
                }
            }
            Ok(_) => {}
            Err(e) => panic!("no event of w verified: {e}; {seen:?}"),
        }
    };
    // The figure of the bar (a new path carries traffic within one round trip plus one
    // probe interval, 50 ms here): its first probe goes at once.
    eprintln!(
        "verify path: verified {:.1} ms after apply",
        verified.as_secs_f64() * 1e3
    );
    wait_until(WAIT, "w carries the stream", || {
        path_status(&cl, "tunnel", "w").tx_packets > 200
    });
    let tx1 = path_status(&cl, "tunnel", "p1").tx_packets;
    let w = path_status(&cl, "tunnel", "w").tx_packets;
    wait_until(WAIT, "w carries more", || {
        path_status(&cl, "tunnel", "w").tx_packets > w + 200
    });
    assert_eq!(
        path_status(&cl, "tunnel", "p1").tx_packets,
        tx1,
        "p1 idle once w is verified"
    );
    // The unanswered path: still nothing, and reported down, unverified.
    let v = path_status(&cl, "tunnel", "v");
    assert_eq!((v.state.as_str(), v.tx_packets), ("unverified", 0), "{v:?}");
    seen.extend(events.try_iter().filter_map(|e| match e {
        Event::PathState {
            path, up, verified, ..
        } => Some((path, up, verified)),
        _ => None,
    }));
    let v: Vec<_> = seen.iter().filter(|e| e.0 == "v").collect();
    assert_eq!(v, [&("v".to_owned(), false, false)], "{seen:?}");
    stop.store(true, Ordering::Relaxed);
}

/// For each policy that could spread traffic over standby paths: p2 standby carries nothing
/// while p1 answers, takes over when p1's peer stops answering (blackhole), and the traffic
/// goes back to p1 once it answers again.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn standby_takes_over_when_the_active_path_is_silent_and_hands_back() {
    require_root();
    for (policy, port) in [(Policy::Redundant, 5102), (Policy::Aggregate, 5103)] {
        let (lab, cl, _gw) = up(policy, Role::Standby);
        mifsec_tests::wait_paths_up(&cl);
        let events = cl.take_event_receiver().unwrap();
        let stop = background_stream(&lab, port);
        let tx = |p: &str| path_status(&cl, "tunnel", p).tx_packets;
        wait_until(WAIT, "p1 carries the stream", || tx("p1") > 300);
        assert_eq!(tx("p2"), 0, "{policy:?}: standby used while p1 answers");
        lab.blackhole_link1();
        wait_until(WAIT, "p1 down", || {
            path_status(&cl, "tunnel", "p1").state == "down"
        });
        let p2 = tx("p2");
        wait_until(WAIT, "p2 takes over", || tx("p2") > p2 + 200);
        lab.restore_link1();
        wait_until(WAIT, "p1 up again", || {
            path_status(&cl, "tunnel", "p1").state == "up"
        });
        let p1 = tx("p1");
        wait_until(WAIT, "p1 carries again", || tx("p1") > p1 + 50);
        let p2 = tx("p2");
        let p1 = tx("p1");
        wait_until(WAIT, "p1 carries more", || tx("p1") > p1 + 300);
        assert_eq!(tx("p2"), p2, "{policy:?}: standby used after p1 came back");
        stop.store(true, Ordering::Relaxed);
        // The engine told the control side: p1 down, then up.
        let p1_events: Vec<bool> = events
            .try_iter()
            .filter_map(|e| match e {
                Event::PathState { path, up, .. } if path == "p1" => Some(up),
                _ => None,
            })
            .collect();
        assert!(
            p1_events.ends_with(&[false, true]),
            "{policy:?}: p1 events {p1_events:?}"
        );
    }
}
