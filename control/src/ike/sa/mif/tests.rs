//! MifState and the path computation of PROTOCOL 4.2.

use std::net::{IpAddr, SocketAddr};

use mifsec_dataplane::sa_table::{Policy, Role};

use super::*;

fn iface(id: u16, addr: &str, priority: u8, alternate: bool) -> MifInterface {
    MifInterface {
        id,
        alternate,
        priority,
        addr: SocketAddr::new(addr.parse().unwrap(), 4500),
        name: format!("l{id}"),
    }
}

fn local(name: &str, addr: &str, priority: u8, alternate: bool) -> LocalInterface {
    LocalInterface {
        name: name.into(),
        addr: addr.parse().unwrap(),
        port: 4500,
        priority,
        alternate,
    }
}

fn set(t: &[MifInterface]) -> Vec<(u16, MifRole)> {
    MifState::resolve_set(
        &MifChild {
            policy: Policy::Failover,
            reorder: false,
            interfaces: vec![],
        },
        t,
    )
}

fn names(p: &[MifPath]) -> Vec<&str> {
    p.iter().map(|p| p.name.as_str()).collect()
}

/// PROTOCOL 7: C (1: prio 0, 2: prio 10) initiated; G (1, 2: prio 0).
fn example() -> (Vec<MifInterface>, Vec<MifInterface>) {
    (
        vec![
            iface(1, "198.18.1.2", 0, false),
            iface(2, "198.18.2.2", 10, false),
        ],
        vec![
            iface(1, "198.18.101.1", 0, false),
            iface(2, "198.18.102.1", 0, false),
        ],
    )
}

#[test]
fn worked_example_order_from_both_sides() {
    let (c, g) = example();
    let (i, r) = (set(&c), set(&g));
    let at_c = paths(&i, &r, &c, &g, true, 16);
    let at_g = paths(&i, &r, &c, &g, false, 16);
    assert_eq!(names(&at_c), ["i1r1", "i1r2", "i2r1", "i2r2"]);
    assert_eq!(names(&at_g), names(&at_c));
    for (a, b) in at_c.iter().zip(&at_g) {
        assert_eq!((a.local, a.remote), (b.remote, b.local));
        assert_eq!((a.local_if, a.remote_if), (b.remote_if, b.local_if));
        assert_eq!(a.role, Role::Active);
        assert_eq!(a.role, b.role);
    }
    assert_eq!(at_c[1].local, c[0].addr);
    assert_eq!(at_c[1].remote, g[1].addr);
    assert_eq!(at_c[1].local_name, "l1");
    assert_eq!(at_g[1].local_name, "l2");
}

#[test]
fn family_mismatch_pairs_are_left_out() {
    let i_t = vec![
        iface(1, "198.18.1.2", 0, false),
        iface(2, "fd00::2", 0, false),
    ];
    let r_t = vec![
        iface(1, "fd00::1", 0, false),
        iface(2, "198.18.101.1", 0, false),
    ];
    let p = paths(&set(&i_t), &set(&r_t), &i_t, &r_t, true, 16);
    assert_eq!(names(&p), ["i1r2", "i2r1"]);
    for x in &p {
        assert_eq!(x.local.is_ipv4(), x.remote.is_ipv4());
    }
    // Nothing of one family on the other side: no paths at all.
    let r_t = vec![iface(1, "fd00::1", 0, false)];
    let i_t = vec![iface(1, "198.18.1.2", 0, false)];
    assert!(paths(&set(&i_t), &set(&r_t), &i_t, &r_t, true, 16).is_empty());
}

#[test]
fn standby_pairs_come_after_active_ones_whatever_their_priority() {
    let i_t = vec![
        iface(1, "198.18.1.2", 50, false),
        iface(2, "198.18.2.2", 0, true),
    ];
    let r_t = vec![
        iface(1, "198.18.101.1", 40, false),
        iface(2, "198.18.102.1", 0, false),
    ];
    let p = paths(&set(&i_t), &set(&r_t), &i_t, &r_t, true, 16);
    // Active: i1r2 (sum 50), i1r1 (90); standby: i2r2 (0), i2r1 (40).
    assert_eq!(names(&p), ["i1r2", "i1r1", "i2r2", "i2r1"]);
    let roles: Vec<Role> = p.iter().map(|p| p.role).collect();
    assert_eq!(
        roles,
        [Role::Active, Role::Active, Role::Standby, Role::Standby]
    );
}

#[test]
fn ties_go_by_position_in_the_sets_then_max_paths_cuts() {
    let i_t: Vec<_> = (1..=5)
        .map(|n| iface(n, &format!("198.18.{n}.2"), 0, false))
        .collect();
    let r_t: Vec<_> = (1..=5)
        .map(|n| iface(n, &format!("198.18.10{n}.1"), 0, false))
        .collect();
    // I in the order 3, 1; R in the order 2, 5, 4.
    let i = vec![(3, MifRole::Active), (1, MifRole::Active)];
    let r = vec![
        (2, MifRole::Active),
        (5, MifRole::Active),
        (4, MifRole::Standby),
    ];
    let p = paths(&i, &r, &i_t, &r_t, false, 16);
    assert_eq!(names(&p), ["i3r2", "i3r5", "i1r2", "i1r5", "i3r4", "i1r4"]);
    // The first max paths kept.
    let p = paths(&i, &r, &i_t, &r_t, false, 3);
    assert_eq!(names(&p), ["i3r2", "i3r5", "i1r2"]);
    // 5 x 5 capped at 16.
    let p = paths(&set(&i_t), &set(&r_t), &i_t, &r_t, true, 16);
    assert_eq!(p.len(), 16);
    assert!(paths(&set(&i_t), &set(&r_t), &i_t, &r_t, true, 0).is_empty());
}

#[test]
fn set_entries_not_in_the_table_are_skipped() {
    let (c, g) = example();
    let i = vec![(9, MifRole::Active), (2, MifRole::Active)];
    let r = vec![(1, MifRole::Active), (1, MifRole::Active)];
    let p = paths(&i, &r, &c, &g, true, 16);
    assert_eq!(names(&p), ["i2r1"]);
}

#[test]
fn our_ids_are_stable_and_never_reused() {
    let mut m = MifState::new(true, 16, 16);
    assert!(m.set_local(&[
        local("l1", "198.18.1.2", 0, false),
        local("l2", "198.18.2.2", 10, false)
    ]));
    let ids: Vec<u16> = m.ours.iter().map(|i| i.id).collect();
    assert_eq!(ids, [1, 2]);
    // Not in use yet: the generation stays 1, nothing pending.
    assert_eq!(m.our_generation, 1);
    assert!(!m.list_pending);
    assert!(!m.set_local(&[
        local("l1", "198.18.1.2", 0, false),
        local("l2", "198.18.2.2", 10, false)
    ]));
    m.in_use = true;
    // Priority change keeps the ID; a new address of l2 is a new ID; l1 withdrawn and
    // back is a new ID too.
    assert!(m.set_local(&[local("l2", "198.18.2.2", 5, true)]));
    assert_eq!(m.ours.len(), 1);
    assert_eq!((m.ours[0].id, m.ours[0].priority), (2, 5));
    assert!(m.ours[0].alternate);
    assert_eq!(m.our_generation, 2);
    assert!(m.list_pending);
    assert_eq!(m.withdrawn_pending, [1]);
    assert!(m.set_local(&[
        local("l1", "198.18.1.2", 0, false),
        local("l2", "198.18.22.2", 10, false)
    ]));
    let ids: Vec<u16> = m.ours.iter().map(|i| i.id).collect();
    assert_eq!(ids, [3, 4]);
    assert_eq!(m.our_generation, 3);
    assert_eq!(m.withdrawn_pending, [1, 2]);
    // Duplicates dropped.
    assert!(m.set_local(&[
        local("l1", "198.18.1.2", 0, false),
        local("l1", "198.18.1.2", 0, false)
    ]));
    assert_eq!(m.ours.len(), 1);
}

#[test]
fn the_list_notifies_respect_the_smaller_limit() {
    let mut m = MifState::new(true, 16, 16);
    let list: Vec<_> = (1..=20)
        .map(|n| local(&format!("l{n}"), &format!("198.18.{n}.2"), 0, false))
        .collect();
    m.set_local(&list);
    assert_eq!(m.announced().len(), 16);
    assert!(m.negotiate(Some(MifSupported {
        version: 1,
        max_interfaces: 4,
        max_paths: 2
    })));
    assert_eq!(m.announced().len(), 4);
    assert_eq!(m.max_paths(), 2);
    let n = m.list_notifies();
    assert_eq!(n.len(), 5);
    let got = crate::wire::MifNotifies::collect(&n).unwrap();
    assert_eq!(got.list.unwrap().generation, 1);
    assert_eq!(got.interfaces.len(), 4);
    // Version 2, or none, or ours disabled: not in use.
    assert!(!m.negotiate(Some(MifSupported {
        version: 2,
        max_interfaces: 4,
        max_paths: 2
    })));
    assert!(!m.negotiate(None));
    let mut off = MifState::new(false, 16, 16);
    assert!(!off.negotiate(Some(m.supported())));
    assert_eq!(m.supported().max_interfaces, 16);
}

#[test]
fn peer_lists_follow_the_generation_rule() {
    let mut m = MifState::new(true, 3, 16);
    let (_, g) = example();
    assert_eq!(m.apply_peer_list(1, &g), Ok(Some(vec![])));
    assert_eq!(m.peer.len(), 2);
    // An older or the same generation is ignored.
    assert_eq!(m.apply_peer_list(1, &g[..1]), Ok(None));
    assert_eq!(m.apply_peer_list(0, &[]), Ok(None));
    assert_eq!(m.peer.len(), 2);
    // A newer one withdrawing 1 and adding 3.
    let three = iface(3, "198.18.103.1", 0, false);
    assert_eq!(
        m.apply_peer_list(3, &[g[1].clone(), three.clone()]),
        Ok(Some(vec![1]))
    );
    assert_eq!(m.peer_generation, 3);
    assert!(m.peer_iface(1).is_none() && m.peer_iface(3).is_some());
    // Refusals change nothing: too many, an ID twice, an ID with a new address, a
    // withdrawn ID back.
    let before = (m.peer.clone(), m.peer_generation);
    let four = [
        g[1].clone(),
        three.clone(),
        iface(4, "198.18.104.1", 0, false),
        iface(5, "198.18.105.1", 0, false),
    ];
    assert_eq!(m.apply_peer_list(4, &four), Err(MifRefusal::Limit));
    assert_eq!(
        m.apply_peer_list(4, &[three.clone(), three.clone()]),
        Err(MifRefusal::Malformed)
    );
    assert_eq!(
        m.apply_peer_list(4, &[iface(3, "198.18.9.9", 0, false)]),
        Err(MifRefusal::Malformed)
    );
    assert_eq!(
        m.apply_peer_list(4, &[g[0].clone()]),
        Err(MifRefusal::Malformed)
    );
    assert_eq!((m.peer.clone(), m.peer_generation), before);
    // Attributes of a kept ID may change.
    let mut three_alt = three.clone();
    three_alt.alternate = true;
    three_alt.priority = 7;
    assert_eq!(m.apply_peer_list(5, &[three_alt]), Ok(Some(vec![2])));
    assert!(m.peer_iface(3).unwrap().alternate);
}

/// Two MifStates, as C and G hold them after IKE_AUTH: both compute the same child paths,
/// each from its side; rekey inheritance and withdrawal.
#[test]
fn both_sides_compute_the_same_child_paths() {
    let mut c = MifState::new(true, 16, 16);
    let mut g = MifState::new(true, 16, 16);
    c.set_local(&[
        local("l1", "198.18.1.2", 0, false),
        local("l2", "198.18.2.2", 10, false),
        local("l3", "fd00:1::2", 0, true),
    ]);
    g.set_local(&[
        local("g1", "198.18.101.1", 0, false),
        local("g2", "198.18.102.1", 0, false),
        local("g6", "fd00:101::1", 0, false),
    ]);
    assert!(c.negotiate(Some(g.supported())));
    assert!(g.negotiate(Some(c.supported())));
    c.apply_peer_list(1, g.announced()).unwrap();
    g.apply_peer_list(1, c.announced()).unwrap();
    let c_child = c.our_child(Policy::Aggregate, &[]);
    let g_child = g.our_child(Policy::Failover, &["g2".into(), "g6".into()]);
    assert_eq!(g_child.interfaces, [2, 3]);
    let cs = c.child_state(true, &c_child, &g_child);
    let gs = g.child_state(false, &g_child, &c_child);
    assert_eq!(cs.initiator_set, gs.initiator_set);
    assert_eq!(cs.responder_set, gs.responder_set);
    let pc = c.child_paths(true, &cs).unwrap();
    let pg = g.child_paths(false, &gs).unwrap();
    assert_eq!(names(&pc.paths), ["i1r2", "i2r2", "i3r3"]);
    assert_eq!(names(&pg.paths), names(&pc.paths));
    assert_eq!(pc.paths[2].role, Role::Standby);
    for (a, b) in pc.paths.iter().zip(&pg.paths) {
        assert_eq!((a.local, a.remote, a.role), (b.remote, b.local, b.role));
    }
    assert_eq!((pc.policy, pc.reorder), (Policy::Aggregate, false));
    assert_eq!((pg.policy, pg.reorder), (Policy::Failover, true));
    assert!(c_child.reorder && !g_child.reorder);

    // A rekey without MIF_CHILD keeps the sets; one with G's new MIF_CHILD takes it.
    let mut rekeyed = cs.clone();
    rekeyed.take_rekey(&c, true, None, None);
    assert_eq!(rekeyed, cs);
    let g_all = g.our_child(Policy::Redundant, &[]);
    rekeyed.take_rekey(&c, true, None, Some(&g_all));
    assert_eq!(rekeyed.responder_set.len(), 3);
    assert_eq!(rekeyed.peer_policy, Policy::Redundant);
    assert_eq!(rekeyed.initiator_set, cs.initiator_set);

    // G withdraws its interface 2 (a newer list): C drops it from the child's set.
    let withdrawn = c
        .apply_peer_list(2, &[g.announced()[0].clone(), g.announced()[2].clone()])
        .unwrap()
        .unwrap();
    assert_eq!(withdrawn, [2]);
    let mut cs2 = cs.clone();
    assert!(cs2.withdraw(true, false, &withdrawn));
    assert!(!cs2.withdraw(true, false, &withdrawn));
    assert_eq!(names(&c.child_paths(true, &cs2).unwrap().paths), ["i3r3"]);
    // Every interface of ours gone: no MIF paths, the child falls back.
    assert!(cs2.withdraw(true, true, &[1, 2, 3]));
    assert!(c.child_paths(true, &cs2).is_none());
    let _: IpAddr = pc.paths[0].local.ip();
}
