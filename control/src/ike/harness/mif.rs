//! The multi-interface extension's INFORMATIONAL (docs/PROTOCOL.md sections 3.2, 5, 6) on
//! simulated time: every operation and selection kind, the CHECK answers, loss of each
//! message, both peers at once, races with rekeys, refusals, limits.
//!
//! The client has interfaces 1 (198.18.1.2, priority 0) and 2 (198.18.2.2, priority 10),
//! the gateway 1 (198.18.101.1) and 2 (198.18.102.1), as in PROTOCOL section 7; every
//! child SA starts over all of them (paths i1r1, i1r2, i2r1, i2r2). The tests assert the
//! events and both sides' MIF state (interface tables, each child's two sets, its paths),
//! never timings.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use mifsec_dataplane::sa_table::Role;

use super::*;
use crate::ike::config::{MifOnNew, ts_prefix};
use crate::ike::sa::exchange::{Ex, Exchange, Key, Kind};
use crate::ike::sa::mif::LocalInterface;
use crate::ike::sa::{MifChildChange, MifError, MifTransition, TestMifState};
use crate::wire::{
    ExchangeType, MifInterface, MifInterfaceList, MifOp, MifOperation, MifRefusal, MifResult,
    MifRole, MifSelection, MifStatus, Payload, TrafficSelector,
};

fn iface(name: &str, addr: &str, priority: u8) -> LocalInterface {
    LocalInterface {
        name: name.into(),
        addr: addr.parse().unwrap(),
        port: 4500,
        priority,
        alternate: false,
    }
}

fn client_ifaces() -> Vec<LocalInterface> {
    vec![iface("c1", "198.18.1.2", 0), iface("c2", "198.18.2.2", 10)]
}

fn gateway_ifaces() -> Vec<LocalInterface> {
    vec![
        iface("g1", "198.18.101.1", 0),
        iface("g2", "198.18.102.1", 0),
    ]
}

fn c3() -> LocalInterface {
    iface("c3", "198.18.3.2", 5)
}

fn net(s: &str, len: u8) -> TrafficSelector {
    ts_prefix(s.parse().unwrap(), len)
}

/// Children a, b, c: the client sends 10.1.0.0/16, 10.2.0.0/16 and 10.3.0.0/16 into them.
fn three_children(mut c: IkeConfig, mut g: IkeConfig) -> (IkeConfig, IkeConfig) {
    for (name, n) in [("b", "10.2.0.0"), ("c", "10.3.0.0")] {
        let mut cb = c.child.clone();
        cb.name = name.into();
        cb.remote_ts = vec![net(n, 16)];
        c.more_children.push(cb);
        let mut gb = g.child.clone();
        gb.name = name.into();
        gb.local_ts = vec![net(n, 16)];
        g.more_children.push(gb);
    }
    (c, g)
}

/// An established pair with MIF in use, three children over all four paths.
fn mif_pair_with(c: IkeConfig, g: IkeConfig) -> Harness {
    mif_pair_ifaces(c, g, &client_ifaces(), &gateway_ifaces())
}

fn mif_pair_ifaces(
    c: IkeConfig,
    g: IkeConfig,
    ci: &[LocalInterface],
    gi: &[LocalInterface],
) -> Harness {
    let (c, g) = three_children(c, g);
    negotiated(c, g, ci, gi)
}

/// A pair that negotiated the extension in IKE_AUTH with interfaces `ci` and `gi` (every
/// child over all of them, MIF_CHILD without a list).
fn negotiated(c: IkeConfig, g: IkeConfig, ci: &[LocalInterface], gi: &[LocalInterface]) -> Harness {
    let children = 1 + c.more_children.len();
    let mut h = Harness::new(c, g, Faults::default());
    let now = h.now;
    h.init.set_local_interfaces(now, ci);
    h.resp.set_local_interfaces(now, gi);
    h.run(LIMIT);
    assert!(h.init.is_established() && h.resp.is_established());
    assert!(h.init.mif_in_use() && h.resp.mif_in_use(), "negotiated");
    assert_eq!(h.init.child_spis().len(), children, "{:?}", h.init_events);
    h.init_events.clear();
    h.resp_events.clear();
    h
}

fn mif_pair() -> Harness {
    mif_pair_with(client(), gateway())
}

/// Both sides hold the same sets and paths for every child (PROTOCOL 4.2, 6.3), and each
/// side's peer table is the other's own.
fn assert_same(h: &Harness) -> (TestMifState, TestMifState) {
    let (i, r) = (h.init.test_mif_state(), h.resp.test_mif_state());
    assert_eq!(i.ours, r.peer, "client table vs gateway's copy");
    assert_eq!(r.ours, i.peer, "gateway table vs client's copy");
    assert_eq!(i.children.len(), r.children.len());
    for c in &i.children {
        let d = r
            .children
            .iter()
            .find(|d| d.spi_in == c.spi_out)
            .expect("the child on both sides");
        assert_eq!(
            (&c.i_set, &c.r_set),
            (&d.i_set, &d.r_set),
            "sets of {:08x}",
            c.spi_in
        );
        assert_eq!(c.paths, d.paths, "paths of {:08x}", c.spi_in);
        assert_eq!((&c.local_ts, &c.remote_ts), (&d.remote_ts, &d.local_ts));
    }
    (i, r)
}

fn paths_of(s: &TestMifState) -> Vec<Vec<String>> {
    s.children.iter().map(|c| c.paths.clone()).collect()
}

fn names(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

type Applied = (
    bool,
    Option<MifOp>,
    bool,
    Vec<MifResult>,
    Vec<MifChildChange>,
);

fn applied(events: &[Event]) -> Vec<Applied> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MifApplied {
                initiated,
                op,
                dry_run,
                results,
                children,
                ..
            } => Some((
                *initiated,
                op.clone(),
                *dry_run,
                results.clone(),
                children.clone(),
            )),
            _ => None,
        })
        .collect()
}

fn refused(events: &[Event]) -> Vec<MifRefusal> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::MifRefused { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

fn op(op: MifOp, selection: MifSelection) -> MifOperation {
    MifOperation {
        op,
        dry_run: false,
        move_ike: false,
        selection,
    }
}

/// The client's interface `name`'s ID.
fn id_of(h: &Harness, name: &str) -> u16 {
    h.init
        .test_mif_state()
        .ours
        .iter()
        .find(|i| i.name == name)
        .map(|i| i.id)
        .unwrap()
}

fn statuses(r: &[MifResult]) -> Vec<MifStatus> {
    r.iter().map(|r| r.status).collect()
}

/// Our inbound SPIs (the client's), in child order.
fn spis(h: &Harness) -> Vec<u32> {
    h.init
        .test_mif_state()
        .children
        .iter()
        .map(|c| c.spi_in)
        .collect()
}

/// The MIF INFORMATIONAL count in the pipe so far: requests from each side.
fn requests_sent(h: &Harness) -> usize {
    h.log.len()
}

#[test]
fn every_child_starts_over_the_four_paths() {
    let h = mif_pair();
    let (i, _) = assert_same(&h);
    for c in &i.children {
        assert_eq!(c.paths, names(&["i1r1", "i1r2", "i2r1", "i2r2"]));
    }
}

#[test]
fn a_new_interface_is_announced_and_added_for_all_in_one_exchange() {
    let mut h = mif_pair();
    let before = h.log.len();
    let mut ci = client_ifaces();
    ci.push(c3());
    let now = h.now;
    h.init.test_mif_set_local(now, &ci);
    h.run(LIMIT);
    // One request, one response.
    assert_eq!(h.log.len() - before, 2);
    let (i, _) = assert_same(&h);
    for c in &i.children {
        assert_eq!(
            c.paths,
            names(&["i1r1", "i1r2", "i3r1", "i3r2", "i2r1", "i2r2"])
        );
    }
    for (events, initiated) in [(&h.init_events, true), (&h.resp_events, false)] {
        let a = applied(events);
        assert_eq!(a.len(), 1, "{events:?}");
        let (ini, o, dry, results, children) = &a[0];
        assert_eq!((*ini, *dry), (initiated, false));
        assert_eq!(
            o,
            &Some(MifOp::AddInterface {
                id: 3,
                role: MifRole::Active
            })
        );
        assert_eq!(statuses(results), vec![MifStatus::Applied; 3]);
        assert!(results.iter().all(|r| r.paths == 6));
        assert_eq!(children.len(), 3);
        for ch in children {
            assert_eq!(ch.transition, MifTransition::Set);
            assert_eq!(ch.paths.len(), 6);
            assert!(ch.selectors.is_none());
        }
    }
    // The gateway's paths are its own view: local is the gateway's address.
    let (_, r) = (h.init.test_mif_state(), h.resp.test_mif_state());
    assert_eq!(r.peer.len(), 3);
    assert_eq!(r.peer_generation, 2);
}

#[test]
fn a_lost_interface_leaves_every_child() {
    let mut h = mif_pair();
    let now = h.now;
    h.init.test_mif_set_local(now, &client_ifaces()[..1]);
    h.run(LIMIT);
    let (i, r) = assert_same(&h);
    for c in &i.children {
        assert_eq!(c.paths, names(&["i1r1", "i1r2"]));
    }
    assert_eq!(r.peer.len(), 1);
    for events in [&h.init_events, &h.resp_events] {
        let a = applied(events);
        assert_eq!(a.len(), 1, "{events:?}");
        assert_eq!(a[0].1, Some(MifOp::RemoveInterface { id: 2 }));
        assert_eq!(statuses(&a[0].3), vec![MifStatus::Applied; 3]);
        assert_eq!(a[0].4.len(), 3);
    }
}

#[test]
fn remove_by_spis_leaves_only_the_children_named() {
    let mut h = mif_pair();
    let s = spis(&h);
    let now = h.now;
    h.init
        .mif_request(
            now,
            op(
                MifOp::RemoveInterface { id: 2 },
                MifSelection::Spis(vec![s[1], 0xdead_beef]),
            ),
        )
        .unwrap();
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    let p = paths_of(&i);
    assert_eq!(p[0], names(&["i1r1", "i1r2", "i2r1", "i2r2"]));
    assert_eq!(p[1], names(&["i1r1", "i1r2"]));
    assert_eq!(p[2], names(&["i1r1", "i1r2", "i2r1", "i2r2"]));
    let a = applied(&h.init_events);
    assert_eq!(
        a[0].3,
        vec![
            MifResult {
                spi: s[1],
                status: MifStatus::Applied,
                paths: 2
            },
            MifResult {
                spi: 0xdead_beef,
                status: MifStatus::UnknownSa,
                paths: 0
            },
        ]
    );
    assert_eq!(a[0].4.len(), 1);
    assert_eq!(a[0].4[0].spi_in, s[1]);
}

/// Adds the client's interface 3 (as the automatic operation does).
fn with_c3(h: &mut Harness) {
    let mut ci = client_ifaces();
    ci.push(c3());
    let now = h.now;
    h.init.test_mif_set_local(now, &ci);
    h.run(LIMIT);
    assert_same(h);
    h.init_events.clear();
    h.resp_events.clear();
}

#[test]
fn soft_handover_by_ts_moves_the_selected_children_make_before_break() {
    let mut h = mif_pair();
    with_c3(&mut h);
    // Children whose gateway side lies in 10.1.0.0/16 or 10.2.0.0/16: a and b, not c;
    // the client's side: any.
    let sel = MifSelection::Ts {
        sender: Vec::new(),
        receiver: vec![net("10.1.0.0", 16), net("10.2.0.0", 16)],
    };
    let now = h.now;
    h.init
        .mif_request(now, op(MifOp::SoftHandover { from: 1, to: 3 }, sel))
        .unwrap();
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    let p = paths_of(&i);
    assert_eq!(p[0], names(&["i3r1", "i3r2", "i2r1", "i2r2"]));
    assert_eq!(p[1], p[0]);
    assert_eq!(
        p[2],
        names(&["i1r1", "i1r2", "i3r1", "i3r2", "i2r1", "i2r2"])
    );
    for events in [&h.init_events, &h.resp_events] {
        let a = applied(events);
        assert_eq!(statuses(&a[0].3), vec![MifStatus::Applied; 2]);
        assert_eq!(a[0].4.len(), 2);
        for ch in &a[0].4 {
            // i3's paths carry traffic already: i1's just leave.
            assert_eq!(ch.transition, MifTransition::Set);
        }
    }
}

#[test]
fn hard_handover_replaces_at_once_and_soft_names_the_new_paths() {
    let mut h = mif_pair();
    // Interface 3 announced only (mif_on_new = ignore on this client).
    h.init.test_mif_set_on_new(MifOnNew::Ignore);
    with_c3(&mut h);
    let (i, _) = assert_same(&h);
    assert!(paths_of(&i).iter().all(|p| p.len() == 4));
    // CHECK: would the gateway take interface 3 for every child? APPLIED, 6 paths each;
    // nothing changed.
    let r = dry(&mut h, op(MifOp::Check { id: 3 }, MifSelection::All));
    assert_eq!(statuses(&r), vec![MifStatus::Applied; 3]);
    assert!(r.iter().all(|r| r.paths == 6));
    let s = spis(&h);
    let now = h.now;
    h.init
        .mif_request(
            now,
            op(
                MifOp::HardHandover { from: 1, to: 3 },
                MifSelection::Spis(vec![s[0]]),
            ),
        )
        .unwrap();
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    assert_eq!(paths_of(&i)[0], names(&["i3r1", "i3r2", "i2r1", "i2r2"]));
    let a = applied(&h.resp_events);
    assert_eq!(
        a.last().unwrap().4[0].transition,
        MifTransition::Hard {
            from: names(&["i1r1", "i1r2"]),
            to: names(&["i3r1", "i3r2"]),
        }
    );
    // And a soft handover of child b names both sides of the move.
    let now = h.now;
    h.init
        .mif_request(
            now,
            op(
                MifOp::SoftHandover { from: 1, to: 3 },
                MifSelection::Spis(vec![s[1]]),
            ),
        )
        .unwrap();
    h.run(LIMIT);
    assert_same(&h);
    let a = applied(&h.init_events);
    assert_eq!(
        a.last().unwrap().4[0].transition,
        MifTransition::Soft {
            from: names(&["i1r1", "i1r2"]),
            to: names(&["i3r1", "i3r2"]),
        }
    );
}

#[test]
fn set_alternates_makes_standby_paths_in_order() {
    let mut h = mif_pair();
    let now = h.now;
    h.init
        .mif_request(
            now,
            op(MifOp::SetAlternates { ids: vec![2] }, MifSelection::All),
        )
        .unwrap();
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    assert!(
        i.children
            .iter()
            .all(|c| c.i_set == vec![(1, MifRole::Active), (2, MifRole::Standby)])
    );
    let a = applied(&h.init_events);
    let ch = &a[0].4[0];
    let roles: Vec<(String, Role)> = ch.paths.iter().map(|p| (p.name.clone(), p.role)).collect();
    assert_eq!(
        roles,
        vec![
            ("i1r1".into(), Role::Active),
            ("i1r2".into(), Role::Active),
            ("i2r1".into(), Role::Standby),
            ("i2r2".into(), Role::Standby),
        ]
    );
    // Again: NO_CHANGE, nothing changes.
    let now = h.now;
    h.init
        .mif_request(
            now,
            op(MifOp::SetAlternates { ids: vec![2] }, MifSelection::All),
        )
        .unwrap();
    h.run(LIMIT);
    let a = applied(&h.init_events);
    assert_eq!(statuses(&a[1].3), vec![MifStatus::NoChange; 3]);
    assert!(a[1].4.is_empty());
    // Count 0: no alternates: interface 2 leaves.
    let now = h.now;
    h.init
        .mif_request(
            now,
            op(MifOp::SetAlternates { ids: vec![] }, MifSelection::All),
        )
        .unwrap();
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    assert!(paths_of(&i).iter().all(|p| *p == names(&["i1r1", "i1r2"])));
}

/// Runs CHECK (or a dry run) `o` from the client; asserts nothing changed on either side
/// and returns the answer.
fn dry(h: &mut Harness, o: MifOperation) -> Vec<MifResult> {
    let before = (h.init.test_mif_state(), h.resp.test_mif_state());
    let (ni, nr) = (h.init_events.len(), h.resp_events.len());
    let now = h.now;
    h.init.mif_request(now, o).unwrap();
    h.run(LIMIT);
    assert_eq!(before, (h.init.test_mif_state(), h.resp.test_mif_state()));
    let a = applied(&h.init_events[ni..]);
    assert_eq!(a.len(), 1, "{:?}", &h.init_events[ni..]);
    assert!(a[0].2, "dry_run");
    assert!(a[0].4.is_empty());
    let b = applied(&h.resp_events[nr..]);
    assert!(b[0].2 && b[0].4.is_empty());
    assert_eq!(a[0].3, b[0].3);
    a[0].3.clone()
}

#[test]
fn check_answers_every_status_and_changes_nothing() {
    // The gateway: child b refuses operations, child c is limited to 4 paths... (limits
    // are per IKE SA: 5 paths), child c in transport mode is in its own test.
    let mut g = gateway();
    g.mif_max_paths = 5;
    let (c, mut g) = (client(), g);
    let mut gb = g.child.clone();
    gb.name = "b".into();
    gb.local_ts = vec![net("10.2.0.0", 16)];
    gb.mif_accept = false;
    g.more_children.push(gb);
    let mut cb = c.child.clone();
    cb.name = "b".into();
    cb.remote_ts = vec![net("10.2.0.0", 16)];
    let mut c = c;
    c.more_children.push(cb);
    let mut ci = client_ifaces();
    ci.push(c3());
    ci.push(iface("c6", "2001:db8::2", 0));
    let mut h = negotiated(c, g, &ci, &gateway_ifaces());
    // Child a starts over interfaces 1 and 2 only; b over 1.
    let s = spis(&h);
    for (k, set) in [(0usize, vec![1u16, 2]), (1, vec![1])] {
        let st: Vec<(u16, MifRole)> = set.iter().map(|&i| (i, MifRole::Active)).collect();
        h.init.test_mif_child_mut(s[k]).unwrap().initiator_set = st.clone();
        let peer_spi = h.init.test_mif_state().children[k].spi_out;
        h.resp.test_mif_child_mut(peer_spi).unwrap().initiator_set = st;
    }
    assert_same(&h);
    let check = |id, sel| MifOperation {
        op: MifOp::Check { id },
        dry_run: false,
        move_ike: false,
        selection: sel,
    };
    // 3 on a: 6 paths > 5: LIMIT; on b: NOT_ALLOWED; unknown SPI: UNKNOWN_SA.
    let r = dry(
        &mut h,
        check(3, MifSelection::Spis(vec![s[0], s[1], 77_777])),
    );
    assert_eq!(
        statuses(&r),
        vec![
            MifStatus::Limit,
            MifStatus::NotAllowed,
            MifStatus::UnknownSa
        ]
    );
    assert_eq!(r[0].paths, 4, "the paths it has");
    // 1 on a: NO_CHANGE; the IPv6 interface: ADDRESS_FAMILY (the gateway has none).
    let r = dry(&mut h, check(1, MifSelection::Spis(vec![s[0]])));
    assert_eq!(statuses(&r), vec![MifStatus::NoChange]);
    let r = dry(&mut h, check(4, MifSelection::Spis(vec![s[0]])));
    assert_eq!(statuses(&r), vec![MifStatus::AddressFamily]);
    // A dry-run REMOVE of b's only interface: LAST_PATH; of a's 2: APPLIED, 2 paths.
    let rm = |id, sel| MifOperation {
        op: MifOp::RemoveInterface { id },
        dry_run: true,
        move_ike: false,
        selection: sel,
    };
    let r = dry(&mut h, rm(1, MifSelection::Spis(vec![s[1]])));
    assert_eq!(statuses(&r), vec![MifStatus::LastPath]);
    let r = dry(&mut h, rm(2, MifSelection::Spis(vec![s[0]])));
    assert_eq!(
        r,
        vec![MifResult {
            spi: s[0],
            status: MifStatus::Applied,
            paths: 2
        }]
    );
    // A CHECK that would be applied: APPLIED (3 on a once the limit allows it is in the
    // transport test; here 2 on b is NOT_ALLOWED by b's policy, and 3 on nothing... ).
    let r = dry(&mut h, check(2, MifSelection::All));
    assert_eq!(
        statuses(&r),
        vec![MifStatus::NoChange, MifStatus::NotAllowed]
    );
}

#[test]
fn transport_mode_selectors_follow_the_addresses_and_outside_spd_is_refused() {
    let mut c = client();
    let mut g = gateway();
    c.request_vip = false;
    c.child.mode = crate::ike::config::Mode::Transport;
    g.child.mode = crate::ike::config::Mode::Transport;
    // Host to host: the client's selectors are its outer addresses; the gateway accepts
    // the client's addresses in 198.18.0.0/22 only.
    c.child.local_ts = vec![net("198.18.1.2", 32)];
    c.child.remote_ts = vec![net("198.18.101.1", 32)];
    g.child.remote_ts = vec![net("198.18.0.0", 22)];
    g.child.local_ts = vec![net("198.18.101.1", 32)];
    g.pools.clear();
    let ci = vec![iface("c1", "198.18.1.2", 0)];
    let mut h = negotiated(c, g, &ci, &gateway_ifaces()[..1]);
    h.init.test_mif_set_on_new(MifOnNew::Ignore);
    let mut ci2 = ci.clone();
    ci2.push(iface("c2", "198.18.2.2", 0));
    ci2.push(iface("c9", "198.18.9.2", 0));
    let now = h.now;
    h.init.test_mif_set_local(now, &ci2);
    h.run(LIMIT);
    assert_same(&h);
    let s = spis(&h);
    // 198.18.9.2 is outside the gateway's 198.18.0.0/22: OUTSIDE_SPD, nothing changes.
    let r = dry(
        &mut h,
        op(MifOp::Check { id: 3 }, MifSelection::Spis(vec![s[0]])),
    );
    assert_eq!(statuses(&r), vec![MifStatus::OutsideSpd]);
    // The hard handover to 198.18.2.2: the selectors follow on both sides.
    let now = h.now;
    h.init
        .mif_request(
            now,
            op(MifOp::HardHandover { from: 1, to: 2 }, MifSelection::All),
        )
        .unwrap();
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    assert_eq!(i.children[0].local_ts, vec![net("198.18.2.2", 32)]);
    let a = applied(&h.resp_events);
    let sel = a.last().unwrap().4[0].selectors.clone().unwrap();
    assert_eq!(
        sel.1,
        vec![net("198.18.2.2", 32)],
        "the gateway's remote side"
    );
    // ADD of 1 back: both addresses.
    let now = h.now;
    h.init
        .mif_request(
            now,
            op(
                MifOp::AddInterface {
                    id: 1,
                    role: MifRole::Active,
                },
                MifSelection::All,
            ),
        )
        .unwrap();
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    assert_eq!(
        i.children[0].local_ts,
        vec![net("198.18.2.2", 32), net("198.18.1.2", 32)]
    );
}

#[test]
fn loss_of_the_request_or_the_response_is_recovered_and_applied_once() {
    for lost in [0usize, 1] {
        let mut h = mif_pair();
        let k = h.log.len() + lost;
        h.faults.drop.insert(k);
        let now = h.now;
        h.init
            .mif_request(now, op(MifOp::RemoveInterface { id: 2 }, MifSelection::All))
            .unwrap();
        h.run(LIMIT);
        let (i, _) = assert_same(&h);
        assert!(paths_of(&i).iter().all(|p| *p == names(&["i1r1", "i1r2"])));
        assert_eq!(applied(&h.init_events).len(), 1, "lost {lost}");
        assert_eq!(
            applied(&h.resp_events).len(),
            1,
            "lost {lost}: applied once"
        );
        assert!(h.init.stats().retransmitted >= 1);
        if lost == 1 {
            assert_eq!(h.resp.stats().answered_from_cache, 1);
        }
    }
}

#[test]
fn both_peers_operating_at_once_end_with_the_same_paths() {
    for client_first in [true, false] {
        let mut h = mif_pair();
        let now = h.now;
        let c_op = op(MifOp::RemoveInterface { id: 1 }, MifSelection::All);
        let g_op = op(MifOp::SetAlternates { ids: vec![2] }, MifSelection::All);
        if client_first {
            h.init.mif_request(now, c_op).unwrap();
            h.resp.mif_request(now, g_op).unwrap();
        } else {
            h.resp.mif_request(now, g_op).unwrap();
            h.init.mif_request(now, c_op).unwrap();
        }
        h.run(LIMIT);
        let (i, _) = assert_same(&h);
        for c in &i.children {
            assert_eq!(c.i_set, vec![(2, MifRole::Active)]);
            assert_eq!(c.r_set, vec![(1, MifRole::Active), (2, MifRole::Standby)]);
            assert_eq!(c.paths, names(&["i2r1", "i2r2"]));
        }
        assert_eq!(applied(&h.init_events).len(), 2);
        assert_eq!(applied(&h.resp_events).len(), 2);
    }
}

#[test]
fn an_operation_racing_a_child_rekey_reaches_the_new_child() {
    for rekey_by_gateway in [false, true] {
        let mut h = mif_pair();
        let now = h.now;
        if rekey_by_gateway {
            h.resp.rekey_children(now);
        } else {
            h.init.rekey_children(now);
        }
        h.init
            .mif_request(now, op(MifOp::RemoveInterface { id: 2 }, MifSelection::All))
            .unwrap();
        h.run(LIMIT);
        let (i, _) = assert_same(&h);
        assert_eq!(i.children.len(), 3, "the old ones deleted");
        assert!(
            paths_of(&i).iter().all(|p| *p == names(&["i1r1", "i1r2"])),
            "gateway rekeys: {rekey_by_gateway}: {:?}",
            paths_of(&i)
        );
    }
}

#[test]
fn an_operation_in_flight_across_an_ike_rekey() {
    for lose_response in [false, true] {
        let mut h = mif_pair();
        let now = h.now;
        // The gateway rekeys the IKE SA while the client's operation is under way.
        if lose_response {
            let k = h.log.len() + 1;
            h.faults.drop.insert(k);
        }
        h.init
            .mif_request(now, op(MifOp::RemoveInterface { id: 2 }, MifSelection::All))
            .unwrap();
        h.resp.rekey_ike(now);
        h.run(LIMIT);
        assert!(h.init.is_established() && h.resp.is_established());
        let (i, _) = assert_same(&h);
        assert!(paths_of(&i).iter().all(|p| *p == names(&["i1r1", "i1r2"])));
        assert!(!applied(&h.init_events).is_empty());
    }
}

#[test]
fn an_operation_after_an_ike_rekey_runs_on_the_new_sa() {
    let mut h = mif_pair();
    let now = h.now;
    h.init.rekey_ike(now);
    h.init
        .mif_request(now, op(MifOp::RemoveInterface { id: 2 }, MifSelection::All))
        .unwrap();
    h.run(LIMIT);
    let (i, r) = assert_same(&h);
    assert!(paths_of(&i).iter().all(|p| *p == names(&["i1r1", "i1r2"])));
    assert_eq!(r.peer_generation, 1);
    let spis_now = h.init.spis().unwrap();
    let on: Vec<(u64, u64)> = h
        .init_events
        .iter()
        .filter_map(|e| match e {
            Event::MifApplied { spis, .. } => Some(*spis),
            _ => None,
        })
        .collect();
    assert_eq!(on, vec![spis_now], "once, on the new IKE SA");
}

/// A test exchange sending `payloads` as an INFORMATIONAL; answers kept.
#[derive(Debug)]
struct Raw {
    payloads: Vec<Payload>,
    answers: Arc<Mutex<Vec<Vec<Payload>>>>,
}

impl Exchange for Raw {
    fn kind() -> Kind {
        Kind::Other
    }
    fn key(&self) -> Key {
        Key::Other("raw-mif")
    }
    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }
    fn build_request(&mut self, _: &mut Ex<'_>) -> Option<Vec<Payload>> {
        Some(self.payloads.clone())
    }
    fn process_response(self: Box<Self>, _: &mut Ex<'_>, p: &[Payload]) {
        self.answers.lock().unwrap().push(p.to_vec());
    }
}

/// Sends `payloads` from the client, returns the gateway's answer; asserts neither side
/// changed its MIF state.
fn raw_unchanged(h: &mut Harness, payloads: Vec<Payload>) -> Vec<Payload> {
    let before = (h.init.test_mif_state(), h.resp.test_mif_state());
    let answers = Arc::new(Mutex::new(Vec::new()));
    let now = h.now;
    assert!(h.init.queue_exchange(
        now,
        Box::new(Raw {
            payloads,
            answers: Arc::clone(&answers),
        })
    ));
    h.run(LIMIT);
    assert_eq!(before, (h.init.test_mif_state(), h.resp.test_mif_state()));
    let a = answers.lock().unwrap();
    assert_eq!(a.len(), 1);
    a[0].clone()
}

fn refusal_in(p: &[Payload]) -> Option<MifRefusal> {
    crate::wire::MifNotifies::collect(p).ok()?.refused
}

#[test]
fn refused_requests_leave_both_sides_unchanged() {
    let mut h = mif_pair();
    let client = h.init.test_mif_state().ours;
    let list = |generation: u32, ifs: &[MifInterface]| {
        let mut p: Vec<Payload> = ifs.iter().map(MifInterface::notify).collect();
        p.push(MifInterfaceList { generation }.notify());
        p
    };
    // An operation naming an interface the client never announced: UNKNOWN_INTERFACE,
    // and the list that came with it is not taken either.
    let mut p = list(2, &client[..1]);
    p.push(op(MifOp::RemoveInterface { id: 9 }, MifSelection::All).notify());
    let a = raw_unchanged(&mut h, p);
    assert_eq!(refusal_in(&a), Some(MifRefusal::UnknownInterface));
    // Malformed: interfaces without the list; a MIF_OPERATION with trailing octets.
    let a = raw_unchanged(&mut h, vec![client[0].notify()]);
    assert_eq!(refusal_in(&a), Some(MifRefusal::Malformed));
    let mut data = op(MifOp::RemoveInterface { id: 2 }, MifSelection::All).emit();
    data.push(0);
    let a = raw_unchanged(
        &mut h,
        vec![Payload::Notify(crate::wire::NotifyPayload::new(
            NotifyType::MifOperation,
            data,
        ))],
    );
    assert_eq!(refusal_in(&a), Some(MifRefusal::Malformed));
    // An unknown operation code.
    let mut data = op(MifOp::RemoveInterface { id: 2 }, MifSelection::All).emit();
    data[0] = 99;
    let a = raw_unchanged(
        &mut h,
        vec![Payload::Notify(crate::wire::NotifyPayload::new(
            NotifyType::MifOperation,
            data,
        ))],
    );
    assert_eq!(refusal_in(&a), Some(MifRefusal::UnknownOperation));
    // The operation through the API: refused by the gateway (it lost its copy of the
    // client's interface 2, as if it had never seen it): MifRefused, nothing changes.
    assert!(
        h.resp_events
            .iter()
            .all(|e| !matches!(e, Event::MifApplied { .. }))
    );
}

#[test]
fn a_refused_api_operation_reports_mif_refused_and_changes_nothing() {
    let mut h = mif_pair();
    // The gateway holds no interface 3 of the client: the client's own table has it, but
    // its list never reached the gateway (the client's list is not pending).
    h.init.test_mif_set_on_new(MifOnNew::Ignore);
    let mut ci = client_ifaces();
    ci.push(c3());
    h.init.test_mif_set_local_quiet(&ci);
    let before = (h.init.test_mif_state(), h.resp.test_mif_state());
    let now = h.now;
    h.init
        .mif_request(
            now,
            op(
                MifOp::AddInterface {
                    id: 3,
                    role: MifRole::Active,
                },
                MifSelection::All,
            ),
        )
        .unwrap();
    h.run(LIMIT);
    assert_eq!(refused(&h.init_events), vec![MifRefusal::UnknownInterface]);
    assert_eq!(before, (h.init.test_mif_state(), h.resp.test_mif_state()));
    assert!(applied(&h.resp_events).is_empty());
}

#[test]
fn without_the_extension_nothing_is_sent_and_requests_are_refused() {
    // The gateway has mif = false: the client's offer in IKE_AUTH goes unanswered.
    let (c, mut g) = three_children(client(), gateway());
    g.mif = false;
    let mut h = Harness::new(c, g, Faults::default());
    let now = h.now;
    h.init.set_local_interfaces(now, &client_ifaces());
    h.resp.set_local_interfaces(now, &gateway_ifaces());
    h.run(LIMIT);
    assert!(h.init.is_established() && !h.init.mif_in_use() && !h.resp.mif_in_use());
    let before = h.log.len();
    let now = h.now;
    assert_eq!(
        h.init
            .mif_request(now, op(MifOp::RemoveInterface { id: 1 }, MifSelection::All)),
        Err(MifError::NotNegotiated)
    );
    let mut ci = client_ifaces();
    ci.push(c3());
    h.init.set_local_interfaces(now, &ci);
    h.run(LIMIT);
    assert_eq!(h.log.len(), before, "nothing on the wire");
    // No private notify reached the gateway after the client's IKE_AUTH request (whose
    // MIF_SUPPORTED it ignored) nor came from it: every message opened.
    for (to_resp, bytes) in &h.log[3..] {
        let p = if *to_resp {
            h.resp.open_test_message(bytes)
        } else {
            h.init.open_test_message(bytes)
        };
        let p = p.expect("opens");
        let private = p
            .iter()
            .any(|q| matches!(q, Payload::Notify(n) if n.notify_type.is_private()));
        assert!(!private, "{p:?}");
    }
    // A peer that sends MIF notifies all the same (it knows the extension, but it is not
    // in use on this IKE SA): NOT_NEGOTIATED, nothing changes.
    let a = raw_unchanged(
        &mut h,
        vec![op(MifOp::RemoveInterface { id: 1 }, MifSelection::All).notify()],
    );
    assert_eq!(refusal_in(&a), Some(MifRefusal::NotNegotiated));
}

#[test]
fn limits_are_answered_and_bounded() {
    let mut g = gateway();
    g.mif_max_interfaces = 3;
    let mut h = mif_pair_with(client(), g);
    let mut client = h.init.test_mif_state().ours;
    for k in 0..3u8 {
        client.push(MifInterface {
            id: 10 + u16::from(k),
            alternate: false,
            priority: 0,
            addr: format!("198.18.{}.2:4500", 20 + k).parse().unwrap(),
            name: format!("x{k}"),
        });
    }
    // Five interfaces to a gateway that keeps three: LIMIT, nothing taken.
    let mut p: Vec<Payload> = client.iter().map(MifInterface::notify).collect();
    p.push(MifInterfaceList { generation: 5 }.notify());
    let a = raw_unchanged(&mut h, p);
    assert_eq!(refusal_in(&a), Some(MifRefusal::Limit));
    // Too many SPIs: refused by the API, and by the gateway when sent anyway.
    let now = h.now;
    let many: Vec<u32> = (1..=257).collect();
    assert_eq!(
        h.init.mif_request(
            now,
            op(
                MifOp::RemoveInterface { id: 2 },
                MifSelection::Spis(many.clone())
            )
        ),
        Err(MifError::Limit)
    );
    // REMOVE 2, kind SPIS, count 257: built by hand (the codec caps what it emits).
    let mut data = vec![2, 0, 0, 0, 0, 2, 0, 0, 1, 0, 1, 1];
    for s in many {
        data.extend(s.to_be_bytes());
    }
    let a = raw_unchanged(
        &mut h,
        vec![Payload::Notify(crate::wire::NotifyPayload::new(
            NotifyType::MifOperation,
            data,
        ))],
    );
    assert_eq!(refusal_in(&a), Some(MifRefusal::Limit));
    // The queue of our requests is bounded.
    let now = h.now;
    let mut busy = 0;
    for _ in 0..40 {
        if h.init
            .mif_request(now, op(MifOp::Check { id: 1 }, MifSelection::All))
            == Err(MifError::Busy)
        {
            busy += 1;
        }
    }
    assert!(busy >= 40 - 17, "{busy}");
    h.run(LIMIT);
    assert_same(&h);
}

#[test]
fn a_preferred_interface_coming_back_takes_the_traffic_back() {
    let mut c = client();
    c.mif_prefer = true;
    let mut h = mif_pair_with(c, gateway());
    // 1 (priority 0) goes: REMOVE; comes back (a new ID, 3): SOFT_HANDOVER from 2 to it.
    let now = h.now;
    h.init.test_mif_set_local(now, &client_ifaces()[1..]);
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    assert!(paths_of(&i).iter().all(|p| *p == names(&["i2r1", "i2r2"])));
    let now = h.now;
    h.init.test_mif_set_local(now, &client_ifaces());
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    assert!(
        paths_of(&i).iter().all(|p| *p == names(&["i3r1", "i3r2"])),
        "{:?}",
        paths_of(&i)
    );
    let a = applied(&h.init_events);
    assert_eq!(
        a.last().unwrap().1,
        Some(MifOp::SoftHandover { from: 2, to: 3 })
    );
}

#[test]
fn a_new_interface_as_alternate_or_ignored() {
    for (on_new, expect) in [
        (MifOnNew::Alternate, Some(MifRole::Standby)),
        (MifOnNew::Ignore, None),
    ] {
        let mut h = mif_pair();
        h.init.test_mif_set_on_new(on_new);
        with_c3(&mut h);
        let (i, r) = assert_same(&h);
        assert_eq!(r.peer.len(), 3, "announced either way");
        for c in &i.children {
            assert_eq!(c.i_set.iter().find(|e| e.0 == 3).map(|e| e.1), expect);
        }
    }
}

#[test]
fn lost_with_a_new_one_is_a_hard_handover_with_move_ike() {
    // The IKE SA runs over the client's interface 1 (its address is the IKE path's).
    let a_if = iface("ca", &super::A.ip().to_string(), 0);
    let mut h = mif_pair_ifaces(
        client(),
        gateway(),
        &[a_if, iface("c2", "198.18.2.2", 10)],
        &gateway_ifaces(),
    );
    let now = h.now;
    h.init.test_mif_set_local(
        now,
        &[iface("c2", "198.18.2.2", 10), iface("cb", "198.18.7.2", 0)],
    );
    h.run(LIMIT);
    let (i, _) = assert_same(&h);
    let a = applied(&h.init_events);
    assert_eq!(a[0].1, Some(MifOp::HardHandover { from: 1, to: 3 }));
    assert!(
        paths_of(&i)
            .iter()
            .all(|p| *p == names(&["i3r1", "i3r2", "i2r1", "i2r2"]))
    );
    // The IKE SA moved to the new interface on both sides.
    assert_eq!(
        h.init.addresses().0.ip(),
        "198.18.7.2".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        h.resp.addresses().1.ip(),
        "198.18.7.2".parse::<IpAddr>().unwrap()
    );
    let _ = id_of(&h, "cb");
    let _ = requests_sent(&h);
}

#[test]
fn a_priority_change_reorders_the_paths_on_both_sides_at_once() {
    let mut h = mif_pair();
    // c2 becomes the preferred interface: a list alone, no operation.
    let ci = vec![iface("c1", "198.18.1.2", 20), iface("c2", "198.18.2.2", 10)];
    let before = h.log.len();
    let now = h.now;
    h.init.set_local_interfaces(now, &ci);
    h.run(LIMIT);
    assert_eq!(h.log.len() - before, 2, "one exchange");
    let (i, r) = assert_same(&h);
    assert_eq!(r.peer_generation, 2);
    for c in &i.children {
        assert_eq!(c.paths, names(&["i2r1", "i2r2", "i1r1", "i1r2"]));
    }
    for events in [&h.init_events, &h.resp_events] {
        let a = applied(events);
        assert_eq!(a.len(), 1, "{events:?}");
        assert_eq!(a[0].1, None, "a list alone");
        assert_eq!(a[0].4.len(), 3);
        assert!(a[0].4.iter().all(|c| c.transition == MifTransition::Set));
    }
}

#[test]
fn an_operation_racing_a_mobike_update() {
    for mif_first in [true, false] {
        let mut h = mif_pair();
        let a2: IpAddr = "192.0.2.77".parse().unwrap();
        let now = h.now;
        h.init.set_local_addresses(now, &[super::A.ip(), a2]);
        h.run(LIMIT);
        let now = h.now;
        let remove = op(MifOp::RemoveInterface { id: 2 }, MifSelection::All);
        if mif_first {
            h.init.mif_request(now, remove).unwrap();
            assert_eq!(h.init.request_move(now, a2, None), Ok(true));
        } else {
            assert_eq!(h.init.request_move(now, a2, None), Ok(true));
            h.init.mif_request(now, remove).unwrap();
        }
        h.run(LIMIT);
        assert!(h.init.is_established() && h.resp.is_established());
        let (i, _) = assert_same(&h);
        assert!(paths_of(&i).iter().all(|p| *p == names(&["i1r1", "i1r2"])));
        assert_eq!(h.init.addresses().0.ip(), a2, "the IKE SA moved");
        assert_eq!(h.resp.addresses().1.ip(), a2);
        assert_eq!(applied(&h.resp_events).len(), 1);
    }
}

#[test]
fn the_interface_under_the_ike_sa_lost_is_removed_with_move_ike() {
    let a_if = iface("ca", &super::A.ip().to_string(), 0);
    let mut h = mif_pair_ifaces(
        client(),
        gateway(),
        &[a_if, iface("c2", "198.18.2.2", 10)],
        &gateway_ifaces(),
    );
    // The link under the IKE SA is gone: nothing reaches or leaves its address any more.
    h.faults.links.down.insert(super::A.ip());
    let now = h.now;
    h.init
        .set_local_interfaces(now, &[iface("c2", "198.18.2.2", 10)]);
    h.run(LIMIT);
    assert!(h.init.is_established() && h.resp.is_established());
    let (i, _) = assert_same(&h);
    let a = applied(&h.init_events);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].1, Some(MifOp::RemoveInterface { id: 1 }));
    assert!(paths_of(&i).iter().all(|p| *p == names(&["i2r1", "i2r2"])));
    let c2: IpAddr = "198.18.2.2".parse().unwrap();
    assert_eq!(
        h.init.addresses().0.ip(),
        c2,
        "the request went from interface 2"
    );
    assert_eq!(h.resp.addresses().1.ip(), c2, "and the gateway followed");
}

/// One operation of a random sequence, on interface IDs 1 to 3 (the gateway has only 1
/// and 2: its 3 is refused before sending).
fn any_op() -> impl Strategy<Value = MifOp> {
    prop_oneof![
        (1u16..=3, any::<bool>()).prop_map(|(id, standby)| MifOp::AddInterface {
            id,
            role: if standby {
                MifRole::Standby
            } else {
                MifRole::Active
            },
        }),
        (1u16..=3).prop_map(|id| MifOp::RemoveInterface { id }),
        (1u16..=3, 1u16..=3).prop_map(|(from, to)| MifOp::SoftHandover { from, to }),
        (1u16..=3, 1u16..=3).prop_map(|(from, to)| MifOp::HardHandover { from, to }),
        proptest::collection::vec(1u16..=3, 0..3).prop_map(|ids| MifOp::SetAlternates { ids }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Random operations of both peers, sent at the same moment or one after the other:
    /// both sides always end with the same sets and paths (PROTOCOL 6.3).
    #[test]
    fn random_operations_of_both_peers_commute(
        steps in proptest::collection::vec((any_op(), any_op(), 0u8..3, 0usize..3), 1..6)
    ) {
        let mut ci = client_ifaces();
        ci.push(c3());
        let (c, g) = three_children(client(), gateway());
        let mut h = negotiated(c, g, &ci, &gateway_ifaces());
        for (c_op, g_op, who, child) in steps {
            let now = h.now;
            let sel = MifSelection::Spis(vec![spis(&h)[child % 3]]);
            if who != 1 {
                let _ = h.init.mif_request(now, op(c_op, sel.clone()));
            }
            if who != 0 {
                let peer_spi = h.resp.test_mif_state().children[child % 3].spi_in;
                let _ = h.resp.mif_request(now, op(g_op, MifSelection::Spis(vec![peer_spi])));
            }
            h.run(LIMIT);
            prop_assert!(h.init.is_established() && h.resp.is_established());
            assert_same(&h);
        }
    }
}
