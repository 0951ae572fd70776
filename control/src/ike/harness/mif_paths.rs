//! The multi-interface extension's negotiation and child paths (docs/PROTOCOL.md sections
//! 2 to 4, 6.4) between two mifsec IkeSas on simulated time: MIF_SUPPORTED, the interface
//! lists and MIF_CHILD in IKE_AUTH and CREATE_CHILD_SA, both sides' identical path lists,
//! rekeys keeping them, MOBIKE moving only the IKE SA, and a peer without the extension
//! never receiving a private notify (checked on every message either side decrypted).

use super::*;
use crate::ike::config::ChildConfig;
use crate::ike::sa::{LocalInterface, MoveReason, OPENED};
use crate::wire::{ExchangeType, Message, Payload};
use mifsec_dataplane::sa_table::{Policy, Role};

const A2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77));
const B2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77));

fn iface(name: &str, addr: IpAddr, priority: u8, alternate: bool) -> LocalInterface {
    LocalInterface {
        name: name.into(),
        addr,
        port: 4500,
        priority,
        alternate,
    }
}

fn client_ifaces() -> Vec<LocalInterface> {
    vec![iface("l1", A.ip(), 0, false), iface("l2", A2, 10, false)]
}

fn gateway_ifaces() -> Vec<LocalInterface> {
    vec![iface("g1", B.ip(), 0, false), iface("g2", B2, 0, false)]
}

/// Every private-use notify type (>= 40960) in the messages this thread's IKE SAs
/// decrypted since the last call, with the exchange it came in.
fn opened_private() -> Vec<(ExchangeType, u16)> {
    OPENED.with(|o| {
        o.borrow_mut()
            .drain(..)
            .flat_map(|(x, p)| {
                p.into_iter().filter_map(move |p| match p {
                    Payload::Notify(n) if n.notify_type.is_private() => {
                        Some((x, n.notify_type.to_raw()))
                    }
                    _ => None,
                })
            })
            .collect()
    })
}

/// Every private-use notify in the unencrypted payloads of the datagrams in the pipe
/// (IKE_SA_INIT).
fn plain_private(h: &Harness) -> usize {
    h.log
        .iter()
        .filter_map(|(_, b)| Message::parse(b).ok())
        .flat_map(|m| m.payloads)
        .filter(|p| matches!(p, Payload::Notify(n) if n.notify_type.is_private()))
        .count()
}

/// Client and gateway with their interfaces, up (the interfaces told before IKE_AUTH;
/// the client's `more_children` are created once it is up).
fn up(c: IkeConfig, g: IkeConfig) -> Harness {
    OPENED.with(|o| o.borrow_mut().clear());
    let more = !c.more_children.is_empty();
    let mut h = Harness::new(c, g, Faults::default());
    let now = h.now;
    h.init.set_local_interfaces(now, &client_ifaces());
    h.resp.set_local_interfaces(now, &gateway_ifaces());
    h.run(LIMIT);
    if !more {
        h.assert_established();
    }
    assert!(h.init.is_established() && h.resp.is_established());
    h
}

/// The child SA named `name` each side established (the first such event).
fn named<'a>(events: &'a [Event], name: &str) -> &'a ChildSa {
    events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaEstablished(c) if c.name == name => Some(c),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no child {name}: {events:?}"))
}

/// The child SA the other side established as the pair of `c`.
fn pair<'a>(events: &'a [Event], c: &ChildSa) -> &'a ChildSa {
    events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaEstablished(x) if x.spi_in == c.spi_out => Some(x),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no pair of {:08x}: {events:?}", c.spi_in))
}

fn aggregate(mut c: IkeConfig) -> IkeConfig {
    c.child.policy = Policy::Aggregate;
    c
}

fn names(c: &ChildSa) -> Vec<String> {
    c.mif
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

/// Both sides' views of one child's paths are the same list, each from its own end.
fn assert_mirrored(i: &ChildSa, r: &ChildSa) {
    let (pi, pr) = (i.mif.as_ref().unwrap(), r.mif.as_ref().unwrap());
    assert!(!pi.paths.is_empty());
    assert_eq!(pi.paths.len(), pr.paths.len());
    for (a, b) in pi.paths.iter().zip(&pr.paths) {
        assert_eq!(a.name, b.name);
        assert_eq!((a.local, a.remote), (b.remote, b.local));
        assert_eq!((a.local_if, a.remote_if), (b.remote_if, b.local_if));
        assert_eq!(a.role, b.role);
    }
}

#[test]
fn mif_is_negotiated_and_both_sides_compute_the_same_paths() {
    let h = up(aggregate(client()), gateway());
    assert!(h.init.mif_in_use() && h.resp.mif_in_use());
    let (i, r) = h.assert_established();
    assert_mirrored(i, r);
    // PROTOCOL 7's example: C's 1 (prio 0) and 2 (prio 10), G's 1 and 2 (prio 0).
    assert_eq!(names(i), ["i1r1", "i1r2", "i2r1", "i2r2"]);
    let p = &i.mif.as_ref().unwrap().paths;
    assert_eq!(
        (p[1].local, p[1].remote),
        (SocketAddr::new(A.ip(), 4500), SocketAddr::new(B2, 4500))
    );
    assert_eq!(p[1].local_name, "l1");
    assert!(p.iter().all(|p| p.role == Role::Active));
    // Each side's own policy; the side receiving from an aggregating peer reorders.
    let (mi, mr) = (i.mif.as_ref().unwrap(), r.mif.as_ref().unwrap());
    assert_eq!((mi.policy, mi.reorder), (Policy::Aggregate, false));
    assert_eq!((mr.policy, mr.reorder), (Policy::Failover, true));
    // The single IKE path is still there for a caller without MIF.
    assert_eq!(i.paths.len(), 1);
    // The tables: each side holds the other's list of generation 1.
    let (peer, generation) = h.init.mif_peer_interfaces();
    assert_eq!((peer.len(), generation), (2, 1));
    assert_eq!(peer[1].addr, SocketAddr::new(B2, 4500));
    assert_eq!(
        h.resp.mif_peer_interfaces().0,
        h.init.mif_local_interfaces()
    );
    // Nothing of it in IKE_SA_INIT; in IKE_AUTH both ways.
    assert_eq!(plain_private(&h), 0);
    let seen = opened_private();
    assert!(seen.iter().all(|(x, _)| *x == ExchangeType::IkeAuth));
    for t in [
        NotifyType::MifSupported,
        NotifyType::MifInterface,
        NotifyType::MifInterfaceList,
        NotifyType::MifChild,
    ] {
        let t = t.to_raw();
        assert_eq!(
            seen.iter().filter(|(_, n)| *n == t).count(),
            if t == NotifyType::MifInterface.to_raw() {
                4
            } else {
                2
            }
        );
    }
}

#[test]
fn alternates_get_standby_paths_after_the_active_ones() {
    OPENED.with(|o| o.borrow_mut().clear());
    let mut h = Harness::new(client(), gateway(), Faults::default());
    let now = h.now;
    h.init.set_local_interfaces(
        now,
        &[iface("l1", A.ip(), 0, false), iface("lte", A2, 0, true)],
    );
    h.resp.set_local_interfaces(now, &gateway_ifaces());
    h.run(LIMIT);
    let (i, r) = h.assert_established();
    assert_mirrored(i, r);
    assert_eq!(names(i), ["i1r1", "i1r2", "i2r1", "i2r2"]);
    let roles: Vec<Role> = i
        .mif
        .as_ref()
        .unwrap()
        .paths
        .iter()
        .map(|p| p.role)
        .collect();
    assert_eq!(
        roles,
        [Role::Active, Role::Active, Role::Standby, Role::Standby]
    );
}

#[test]
fn with_mif_off_on_the_initiator_no_private_notify_is_ever_decrypted() {
    let mut c = client();
    c.mif = false;
    c.more_children = vec![ChildConfig {
        name: "second".into(),
        ..c.child.clone()
    }];
    let mut h = up(c, gateway());
    assert!(!h.init.mif_in_use() && !h.resp.mif_in_use());
    // Everything else that happens on an IKE SA: a new child (CREATE_CHILD_SA), a child
    // rekey, an IKE rekey, interface changes on both sides, a MOBIKE address list.
    assert!(named(&h.init_events, "second").mif.is_none());
    let now = h.now;
    assert!(h.init.rekey_children(now));
    h.run_for(Duration::from_secs(2));
    let now = h.now;
    assert!(h.resp.rekey_ike(now));
    h.run_for(Duration::from_secs(2));
    let now = h.now;
    h.init.set_local_interfaces(now, &client_ifaces()[..1]);
    h.resp.set_local_interfaces(now, &gateway_ifaces()[1..]);
    h.init.set_local_addresses(now, &[A.ip(), A2]);
    h.run_for(Duration::from_secs(2));
    assert!(h.init.is_established() && h.resp.is_established());
    assert!(
        Harness::count(&h.init_events, |e| matches!(
            e,
            Event::ChildSaRekeyed { .. }
        )) >= 2,
        "{:?}",
        h.init_events
    );
    assert!(Harness::count(&h.init_events, |e| matches!(e, Event::IkeSaRekeyed(_))) == 1);
    for e in h.init_events.iter().chain(&h.resp_events) {
        if let Event::ChildSaEstablished(c) | Event::ChildSaRekeyed { new: c, .. } = e {
            assert!(c.mif.is_none());
        }
    }
    assert_eq!(opened_private(), []);
    assert_eq!(plain_private(&h), 0);
}

#[test]
fn with_mif_off_on_the_responder_only_the_ike_auth_offer_carries_any() {
    let mut g = gateway();
    g.mif = false;
    let mut h = up(client(), g);
    assert!(!h.init.mif_in_use() && !h.resp.mif_in_use());
    // The offer in the IKE_AUTH request (a standard peer ignores private status types,
    // RFC 7296 3.10.1) and nothing else: the responder sent none.
    let seen = opened_private();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|(x, _)| *x == ExchangeType::IkeAuth),
        "{seen:?}"
    );
    let now = h.now;
    assert!(h.init.rekey_children(now));
    h.run_for(Duration::from_secs(2));
    let now = h.now;
    assert!(h.init.rekey_ike(now));
    h.run_for(Duration::from_secs(2));
    let now = h.now;
    h.init.set_local_interfaces(now, &client_ifaces()[1..]);
    h.run_for(Duration::from_secs(2));
    assert!(h.init.is_established() && h.resp.is_established());
    assert_eq!(opened_private(), []);
    let (i, r) = h.assert_established();
    assert!(i.mif.is_none() && r.mif.is_none());
}

/// The responder's decrypted IKE_AUTH request held the offer; the initiator's decrypted
/// response none (the responder has it off).
#[test]
fn the_offer_is_in_the_request_only() {
    let mut g = gateway();
    g.mif = false;
    OPENED.with(|o| o.borrow_mut().clear());
    let mut h = Harness::new(client(), g, Faults::default());
    h.run(LIMIT);
    h.assert_established();
    let opened = OPENED.with(|o| o.borrow_mut().drain(..).collect::<Vec<_>>());
    // The responder opened the request first, then the initiator the response.
    assert_eq!(opened.len(), 2);
    let private = |p: &[Payload]| {
        p.iter()
            .filter(|p| matches!(p, Payload::Notify(n) if n.notify_type.is_private()))
            .count()
    };
    // MIF_SUPPORTED, MIF_INTERFACE_LIST (no interface known) and MIF_CHILD.
    assert_eq!(private(&opened[0].1), 3);
    assert_eq!(private(&opened[1].1), 0);
}

#[test]
fn a_child_rekey_keeps_the_paths() {
    let mut h = up(aggregate(client()), gateway());
    let (i0, _) = h.assert_established();
    let before = i0.mif.clone().unwrap();
    for rekey_by_init in [true, false] {
        let now = h.now;
        let n = h.init_events.len();
        let m = h.resp_events.len();
        if rekey_by_init {
            assert!(h.init.rekey_children(now));
        } else {
            assert!(h.resp.rekey_children(now));
        }
        h.run_for(Duration::from_secs(2));
        fn new(ev: &[Event]) -> &ChildSa {
            ev.iter()
                .find_map(|e| match e {
                    Event::ChildSaRekeyed { new, .. } => Some(new),
                    _ => None,
                })
                .expect("rekeyed")
        }
        let (ni, nr) = (new(&h.init_events[n..]), new(&h.resp_events[m..]));
        assert_eq!(ni.mif.as_ref(), Some(&before));
        assert_mirrored(ni, nr);
    }
}

#[test]
fn an_ike_rekey_keeps_the_mif_state_and_new_children_use_it() {
    let mut c = client();
    c.more_children = vec![ChildConfig {
        name: "second".into(),
        policy: Policy::Redundant,
        interfaces: vec!["l2".into()],
        ..c.child.clone()
    }];
    let mut h = up(c, gateway());
    let peer_before = h.init.mif_peer_interfaces().0.to_vec();
    let spis = h.init.spis();
    for by_init in [true, false] {
        let now = h.now;
        if by_init {
            assert!(h.init.rekey_ike(now));
        } else {
            assert!(h.resp.rekey_ike(now));
        }
        h.run_for(Duration::from_secs(2));
    }
    assert_ne!(h.init.spis(), spis);
    assert!(h.init.mif_in_use() && h.resp.mif_in_use());
    assert_eq!(h.init.mif_peer_interfaces(), (&peer_before[..], 1));
    assert_eq!(
        h.resp.mif_peer_interfaces().0,
        h.init.mif_local_interfaces()
    );
    // The second child (CREATE_CHILD_SA after IKE_AUTH): MIF_CHILD both ways, restricted
    // to our l2 on the client's side.
    let i = named(&h.init_events, "second");
    let r = pair(&h.resp_events, i);
    assert_mirrored(i, r);
    assert_eq!(names(i), ["i2r1", "i2r2"]);
    assert_eq!(i.mif.as_ref().unwrap().policy, Policy::Redundant);
    assert_eq!(r.mif.as_ref().unwrap().policy, Policy::Failover);
    // The CREATE_CHILD_SA carried MIF_CHILD both ways.
    let seen = opened_private();
    let in_ccsa = seen
        .iter()
        .filter(|(x, t)| *x == ExchangeType::CreateChildSa && *t == NotifyType::MifChild.to_raw())
        .count();
    assert_eq!(in_ccsa, 2, "{seen:?}");
    // A new child on the rekeyed IKE SA uses the moved state.
    let n = (h.init_events.len(), h.resp_events.len());
    let now = h.now;
    assert!(h.init.create_child(now, "second"));
    h.run_for(Duration::from_secs(2));
    let i = named(&h.init_events[n.0..], "second");
    let r = pair(&h.resp_events[n.1..], i);
    assert_mirrored(i, r);
    assert_eq!(names(i), ["i2r1", "i2r2"]);
}

#[test]
fn mobike_with_mif_moves_the_ike_sa_only() {
    let mut c = client();
    c.more_children = vec![ChildConfig {
        name: "second".into(),
        ..c.child.clone()
    }];
    OPENED.with(|o| o.borrow_mut().clear());
    let mut h = Harness::new(c, gateway(), Faults::default());
    let now = h.now;
    h.init.set_local_interfaces(now, &client_ifaces());
    h.init.set_local_addresses(now, &[A.ip(), A2]);
    h.resp.set_local_interfaces(now, &gateway_ifaces());
    h.run(LIMIT);
    assert!(h.init.mobike() && h.init.mif_in_use());
    assert!(named(&h.init_events, "second").mif.is_some());
    let t0 = h.now;
    // MOBIKE alone (the interface table unchanged: with it, the MIF exchange would move
    // the IKE SA with MOVE_IKE instead).
    h.faults.links.down.insert(A.ip());
    h.init.set_local_addresses(t0, &[A2]);
    h.run_for(Duration::from_secs(3));
    assert_eq!(h.init.addresses().0, SocketAddr::new(A2, A.port()));
    let moved = |ev: &[Event]| {
        ev.iter()
            .filter_map(|e| match e {
                Event::IkeSaMoved {
                    reason, children, ..
                } => Some((*reason, children.len())),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(moved(&h.init_events), [(MoveReason::LocalAddressGone, 0)]);
    assert_eq!(moved(&h.resp_events), [(MoveReason::PeerUpdateVerified, 0)]);
}

#[test]
fn a_peer_limit_bounds_what_is_announced_and_the_paths() {
    // The gateway keeps one interface of the client: each side then announces one (the
    // smaller figure, PROTOCOL 2); the client's second, sent in its IKE_AUTH before it
    // knew, is not taken.
    let mut g = gateway();
    g.mif_max_interfaces = 1;
    let h = up(client(), g);
    assert_eq!(h.init.mif_local_interfaces().len(), 1);
    assert_eq!(h.resp.mif_local_interfaces().len(), 1);
    assert_eq!(h.resp.mif_peer_interfaces().0.len(), 1);
    assert_eq!(h.init.mif_peer_interfaces().0.len(), 1);
    let (i, r) = h.assert_established();
    assert_mirrored(i, r);
    assert_eq!(names(i), ["i1r1"]);
    // At most 2 paths per child on the client: both sides keep the first 2 of 4.
    let mut c = client();
    c.mif_max_paths = 2;
    let h = up(c, gateway());
    let (i, r) = h.assert_established();
    assert_mirrored(i, r);
    assert_eq!(names(i), ["i1r1", "i1r2"]);
}
