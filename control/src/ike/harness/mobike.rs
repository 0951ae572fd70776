//! MOBIKE (RFC 4555) as responder, on the multi-address pipe (`Faults::roamed`): the
//! client moves to a second link and sends UPDATE_SA_ADDRESSES from there. Its request is
//! a test exchange ([`Update`]) with the notifies a standard client sends. The gateway's
//! return-routability check of the new address (our COOKIE2 INFORMATIONAL) is answered
//! by the client's own MOBIKE responder half.

use std::sync::{Arc, Mutex};

use super::*;
use crate::ike::sa::exchange::{Ex, Exchange, Key, Kind, Responder};
use crate::ike::sa::{MAX_PEER_ADDRESSES, MoveReason, NatStatus, nat_detection_hash};
use crate::wire::{ExchangeType, NotifyPayload, Payload};

/// The client's address on its second link.
const A2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77));

fn n(t: NotifyType, data: Vec<u8>) -> Payload {
    Payload::Notify(NotifyPayload::new(t, data))
}

fn find(p: &[Payload], t: NotifyType) -> Option<&NotifyPayload> {
    p.iter().find_map(|q| match q {
        Payload::Notify(x) if x.notify_type == t => Some(x),
        _ => None,
    })
}

/// The client's INFORMATIONAL: UPDATE_SA_ADDRESSES (if `update`) with NAT_DETECTION_*
/// hashes of `nat` (source, destination) and COOKIE2, plus `extra` notifies; the
/// answers' payloads are kept in `answers`.
#[derive(Debug, Default)]
struct Update {
    spis: (u64, u64),
    update: bool,
    nat: Option<(SocketAddr, SocketAddr)>,
    cookie2: Option<Vec<u8>>,
    extra: Vec<Payload>,
    answers: Arc<Mutex<Vec<Vec<Payload>>>>,
}

impl Exchange for Update {
    fn kind() -> Kind {
        Kind::Other
    }

    fn key(&self) -> Key {
        Key::Other("test-update")
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    fn build_request(&mut self, _: &mut Ex<'_>) -> Option<Vec<Payload>> {
        let (i, r) = self.spis;
        let mut p = Vec::new();
        if self.update {
            p.push(n(NotifyType::UpdateSaAddresses, Vec::new()));
        }
        if let Some((src, dst)) = self.nat {
            p.push(n(
                NotifyType::NatDetectionSourceIp,
                nat_detection_hash(i, r, src).to_vec(),
            ));
            p.push(n(
                NotifyType::NatDetectionDestinationIp,
                nat_detection_hash(i, r, dst).to_vec(),
            ));
        }
        if let Some(c) = &self.cookie2 {
            p.push(n(NotifyType::Cookie2, c.clone()));
        }
        p.extend(self.extra.iter().cloned());
        Some(p)
    }

    fn process_response(self: Box<Self>, _: &mut Ex<'_>, p: &[Payload]) {
        self.answers.lock().unwrap().push(p.to_vec());
    }
}

/// An established client and gateway; the client then moves to A2.
fn roamed() -> Harness {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    h.run(LIMIT);
    h.assert_established();
    assert!(h.resp.mobike() && h.init.mobike());
    h.faults.roamed = Some(A2);
    h
}

/// The client's update from A2 (NAT hashes of `nat_src` -> B), with COOKIE2; returns the
/// answers' slot.
fn send_update(
    h: &mut Harness,
    nat_src: SocketAddr,
    extra: Vec<Payload>,
) -> Arc<Mutex<Vec<Vec<Payload>>>> {
    let answers = Arc::new(Mutex::new(Vec::new()));
    let u = Update {
        spis: h.init.spis().unwrap(),
        update: true,
        nat: Some((nat_src, B)),
        cookie2: Some(vec![0x5a; 16]),
        extra,
        answers: Arc::clone(&answers),
    };
    let now = h.now;
    assert!(h.init.queue_exchange(now, Box::new(u)));
    answers
}

fn moved(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| matches!(e, Event::IkeSaMoved { .. }))
        .collect()
}

/// Checks the answer: COOKIE2 echoed, the gateway's NAT_DETECTION hashes of B -> `to`.
fn assert_answer(h: &Harness, answers: &Mutex<Vec<Vec<Payload>>>, to: SocketAddr) {
    let answers = answers.lock().unwrap();
    assert_eq!(answers.len(), 1, "{answers:?}");
    let a = &answers[0];
    assert_eq!(find(a, NotifyType::Cookie2).unwrap().data, vec![0x5a; 16]);
    let (i, r) = h.init.spis().unwrap();
    let src = find(a, NotifyType::NatDetectionSourceIp).unwrap();
    let dst = find(a, NotifyType::NatDetectionDestinationIp).unwrap();
    assert_eq!(src.data, nat_detection_hash(i, r, B).to_vec());
    assert_eq!(dst.data, nat_detection_hash(i, r, to).to_vec());
}

#[test]
fn update_from_a_new_address_moves_the_sa_and_the_gateway_follows() {
    let mut h = roamed();
    let new = SocketAddr::new(A2, A.port());
    let answers = send_update(&mut h, new, Vec::new());
    h.run(LIMIT);
    assert_answer(&h, &answers, new);
    assert_eq!(h.resp.addresses(), (B, new));
    assert_eq!(h.resp.stats().moves, 1);
    let ev = moved(&h.resp_events);
    assert_eq!(ev.len(), 1);
    let spi_in = h.resp.child_spis()[0];
    let Event::IkeSaMoved {
        local,
        remote,
        nat,
        children,
        ..
    } = ev[0]
    else {
        unreachable!()
    };
    assert_eq!((*local, *remote), (B, new));
    assert!(!nat.any());
    assert_eq!(children.len(), 1);
    assert_eq!((children[0].spi_in, children[0].spi_out), spi_in);
    let esp = |ip: IpAddr| SocketAddr::new(ip, crate::ike::sa::ESP_IN_UDP_PORT);
    assert_eq!(children[0].paths, vec![(esp(B.ip()), esp(A2))]);
    assert!(!children[0].udp_encap);
    // The gateway's next request goes to the new address, and the exchange completes.
    let first = h.resp_dests.len();
    let now = h.now;
    assert!(h.resp.rekey_children(now));
    h.run(LIMIT);
    assert!(h.resp_dests.len() > first);
    assert!(
        h.resp_dests[first..].iter().all(|d| d.ip() == A2),
        "{:?}",
        h.resp_dests
    );
    let rekeyed = |e: &Event| matches!(e, Event::ChildSaRekeyed { .. });
    assert_eq!(Harness::count(&h.resp_events, rekeyed), 1);
    assert_eq!(Harness::count(&h.init_events, rekeyed), 1);
    assert!(h.init.is_established() && h.resp.is_established());
    assert_eq!(
        h.init.stats().retransmitted + h.resp.stats().retransmitted,
        0
    );
}

#[test]
fn nat_on_the_new_path_is_detected() {
    let mut h = roamed();
    // The client believes it is at 10.0.0.5: a NAT between its new link and the gateway.
    let inside = SocketAddr::new(v4("10.0.0.5"), 500);
    let answers = send_update(&mut h, inside, Vec::new());
    h.run(LIMIT);
    let new = SocketAddr::new(A2, A.port());
    assert_answer(&h, &answers, new);
    let ev = moved(&h.resp_events);
    let Some(Event::IkeSaMoved { nat, children, .. }) = ev.first() else {
        panic!("{:?}", h.resp_events)
    };
    assert_eq!(
        *nat,
        NatStatus {
            local_behind_nat: false,
            remote_behind_nat: true
        }
    );
    assert!(children[0].udp_encap);
}

#[test]
fn no_nats_allowed_with_a_nat_is_refused_and_nothing_moves() {
    let mut h = roamed();
    let before = h.resp.addresses();
    let inside = SocketAddr::new(v4("10.0.0.5"), 500);
    let answers = send_update(
        &mut h,
        inside,
        vec![n(NotifyType::NoNatsAllowed, vec![0; 12])],
    );
    h.run(LIMIT);
    let a = answers.lock().unwrap();
    assert!(
        find(&a[0], NotifyType::UnexpectedNatDetected).is_some(),
        "{a:?}"
    );
    assert_eq!(
        find(&a[0], NotifyType::Cookie2).map(|c| c.data.clone()),
        Some(vec![0x5a; 16])
    );
    assert_eq!(h.resp.addresses(), before);
    assert!(moved(&h.resp_events).is_empty());
}

#[test]
fn a_lost_update_is_retransmitted_from_the_new_address_and_still_works() {
    let new = SocketAddr::new(A2, A.port());
    // The request lost, then (another run) the answer lost.
    for lost_response in [false, true] {
        let mut h = roamed();
        h.faults.drop.insert(h.sent + usize::from(lost_response));
        let answers = send_update(&mut h, new, Vec::new());
        h.run(LIMIT);
        assert_answer(&h, &answers, new);
        assert_eq!(h.resp.addresses(), (B, new));
        assert_eq!(moved(&h.resp_events).len(), 1);
        assert_eq!(h.init.stats().retransmitted, 1);
        assert_eq!(h.resp.stats().answered_from_cache, u64::from(lost_response));
        assert_eq!(h.resp_dests.last().unwrap().ip(), A2);
    }
}

#[test]
fn the_peers_address_list_is_kept_and_updated() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    h.init.push_test_auth_payloads(vec![
        n(NotifyType::AdditionalIp4Address, vec![10, 9, 0, 1]),
        n(NotifyType::AdditionalIp6Address, Vec::new()),
        n(
            NotifyType::AdditionalIp6Address,
            vec![0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
    ]);
    h.run(LIMIT);
    h.assert_established();
    assert_eq!(
        h.resp.peer_addresses(),
        &[v4("10.9.0.1"), "2001:db8::1".parse::<IpAddr>().unwrap()]
    );
    // The empty ADDITIONAL_IP6_ADDRESS was dropped and counted.
    assert_eq!(h.resp.stats().peer_addresses_dropped, 1);
    let before = h.resp.addresses();
    let spis = h.init.spis().unwrap();
    let list = |h: &mut Harness, extra: Vec<Payload>| {
        let u = Update {
            spis,
            extra,
            ..Update::default()
        };
        let now = h.now;
        assert!(h.init.queue_exchange(now, Box::new(u)));
        h.run(LIMIT);
    };
    list(
        &mut h,
        vec![n(NotifyType::AdditionalIp4Address, vec![10, 9, 0, 2])],
    );
    assert_eq!(h.resp.peer_addresses(), &[v4("10.9.0.2")]);
    list(
        &mut h,
        vec![n(NotifyType::NoAdditionalAddresses, Vec::new())],
    );
    assert!(h.resp.peer_addresses().is_empty());
    let many = (0..MAX_PEER_ADDRESSES as u8 + 4)
        .map(|i| n(NotifyType::AdditionalIp4Address, vec![10, 9, 1, i]))
        .collect();
    list(&mut h, many);
    assert_eq!(h.resp.peer_addresses().len(), MAX_PEER_ADDRESSES);
    assert_eq!(h.resp.stats().peer_addresses_dropped, 1 + 4);
    // An address list alone moves nothing.
    assert_eq!(h.resp.addresses(), before);
    assert!(moved(&h.resp_events).is_empty());
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn without_mobike_an_update_changes_nothing() {
    let gw = IkeConfig {
        mobike: false,
        ..gateway()
    };
    let mut h = Harness::new(client(), gw, Faults::default());
    h.init
        .push_test_auth_payloads(vec![n(NotifyType::AdditionalIp4Address, vec![10, 9, 0, 1])]);
    h.run(LIMIT);
    h.assert_established();
    assert!(!h.resp.mobike());
    assert!(h.resp.peer_addresses().is_empty());
    let before = h.resp.addresses();
    h.faults.roamed = Some(A2);
    let answers = send_update(&mut h, SocketAddr::new(A2, A.port()), Vec::new());
    // The answer goes to the address the request came from; the SA stays where it was.
    h.run(LIMIT);
    assert_eq!(answers.lock().unwrap().as_slice(), &[Vec::<Payload>::new()]);
    assert_eq!(h.resp.addresses(), before);
    assert!(moved(&h.resp_events).is_empty());
}

#[test]
fn the_gateways_outstanding_request_is_retransmitted_to_the_new_address() {
    let mut h = roamed();
    // The gateway's rekey goes to the old address (lost: the old link is gone), then the
    // client's update arrives from the new one.
    let first = h.resp_dests.len();
    let now = h.now;
    assert!(h.resp.rekey_children(now));
    let new = SocketAddr::new(A2, A.port());
    let answers = send_update(&mut h, new, Vec::new());
    h.run(LIMIT);
    assert_answer(&h, &answers, new);
    let dests = &h.resp_dests[first..];
    assert_eq!(dests[0].ip(), A.ip(), "{dests:?}");
    assert!(dests[1..].iter().all(|d| d.ip() == A2), "{dests:?}");
    assert_eq!(h.resp.stats().retransmitted, 1);
    let rekeyed = |e: &Event| matches!(e, Event::ChildSaRekeyed { .. });
    assert_eq!(Harness::count(&h.resp_events, rekeyed), 1);
    assert_eq!(Harness::count(&h.init_events, rekeyed), 1);
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn cookie2_alone_is_echoed_and_a_bad_one_refused() {
    let mut h = roamed();
    let before = h.resp.addresses();
    let spis = h.init.spis().unwrap();
    let ask = |h: &mut Harness, cookie2: Vec<u8>, update: bool| {
        let answers = Arc::new(Mutex::new(Vec::new()));
        let u = Update {
            spis,
            update,
            cookie2: Some(cookie2),
            answers: Arc::clone(&answers),
            ..Update::default()
        };
        let now = h.now;
        assert!(h.init.queue_exchange(now, Box::new(u)));
        h.run(LIMIT);
        answers.lock().unwrap().pop().unwrap()
    };
    // A return-routability check (RFC 4555 section 3.8): COOKIE2 back, nothing moves.
    let a = ask(&mut h, vec![1; 8], false);
    assert_eq!(find(&a, NotifyType::Cookie2).unwrap().data, vec![1; 8]);
    assert_eq!(h.resp.addresses(), before);
    // COOKIE2 of 7 or 65 octets: INVALID_SYNTAX, and the update does not move the SA.
    for len in [7, 65] {
        let a = ask(&mut h, vec![2; len], true);
        assert!(find(&a, NotifyType::InvalidSyntax).is_some(), "{a:?}");
        assert!(find(&a, NotifyType::Cookie2).is_none());
    }
    assert_eq!(h.resp.addresses(), before);
    assert!(moved(&h.resp_events).is_empty());
    assert!(h.init.is_established() && h.resp.is_established());
}

/// The reasons of the gateway's moves, in order.
fn reasons(h: &Harness) -> Vec<MoveReason> {
    h.resp_events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaMoved { reason, .. } => Some(*reason),
            _ => None,
        })
        .collect()
}

/// The children's pairs in the gateway's last move.
fn last_move_paths(h: &Harness) -> Vec<(u32, Vec<(SocketAddr, SocketAddr)>)> {
    let ev = moved(&h.resp_events);
    let Some(Event::IkeSaMoved { children, .. }) = ev.last() else {
        panic!("no move: {:?}", h.resp_events)
    };
    children
        .iter()
        .map(|c| (c.spi_in, c.paths.clone()))
        .collect()
}

fn esp(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, crate::ike::sa::ESP_IN_UDP_PORT)
}

#[test]
fn children_follow_a_new_address_only_once_the_check_is_answered() {
    let mut h = roamed();
    let new = SocketAddr::new(A2, A.port());
    // The update (n), its answer (n+1), our check (n+2, lost once), its answer.
    let n = h.sent;
    h.faults.drop.insert(n + 2);
    let answers = send_update(&mut h, new, Vec::new());
    h.run_for(Duration::from_millis(100));
    // The IKE SA answered and moved at once; the children wait for the check.
    assert_answer(&h, &answers, new);
    assert_eq!(h.resp.addresses(), (B, new));
    assert!(moved(&h.resp_events).is_empty(), "{:?}", h.resp_events);
    h.run(LIMIT);
    assert_eq!(reasons(&h), vec![MoveReason::PeerUpdateVerified]);
    let s = h.resp.stats();
    assert_eq!((s.route_checks_passed, s.route_checks_failed), (1, 0));
    assert_eq!(s.retransmitted, 1);
    // The check is an INFORMATIONAL with COOKIE2 to the new address only.
    assert!(
        h.resp_dests[h.resp_dests.len() - 3..]
            .iter()
            .all(|d| *d == new)
    );
    let spi_in = h.resp.child_spis()[0].0;
    assert_eq!(
        last_move_paths(&h),
        vec![(spi_in, vec![(esp(B.ip()), esp(A2))])]
    );
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn loss_of_any_single_message_of_update_and_check() {
    let new = SocketAddr::new(A2, A.port());
    for lost in 0..4 {
        let mut h = roamed();
        h.faults.drop.insert(h.sent + lost);
        let answers = send_update(&mut h, new, Vec::new());
        h.run(LIMIT);
        assert_answer(&h, &answers, new);
        assert_eq!(h.resp.addresses(), (B, new), "lost {lost}");
        assert_eq!(
            reasons(&h),
            vec![MoveReason::PeerUpdateVerified],
            "lost {lost}"
        );
        assert_eq!(h.resp.stats().moves, 1, "lost {lost}");
        assert_eq!(
            h.init.stats().retransmitted + h.resp.stats().retransmitted,
            1,
            "lost {lost}"
        );
        assert!(h.init.is_established() && h.resp.is_established());
    }
}

/// A client whose MOBIKE half answers COOKIE2 with another cookie.
struct BadEcho;

impl Exchange for BadEcho {
    fn kind() -> Kind {
        Kind::Other
    }
    fn claims(e: ExchangeType, p: &[Payload]) -> bool {
        e == ExchangeType::Informational && find(p, NotifyType::Cookie2).is_some()
    }
    fn respond(_: &mut Ex<'_>, p: &[Payload]) -> Vec<Payload> {
        let mut c = find(p, NotifyType::Cookie2).unwrap().data.clone();
        c[0] ^= 1;
        vec![n(NotifyType::Cookie2, c)]
    }
    fn key(&self) -> Key {
        Key::Other("bad-echo")
    }
    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }
    fn build_request(&mut self, _: &mut Ex<'_>) -> Option<Vec<Payload>> {
        None
    }
    fn process_response(self: Box<Self>, _: &mut Ex<'_>, _: &[Payload]) {}
}

#[test]
fn a_cookie2_mismatch_keeps_the_children_where_they_were() {
    let mut h = roamed();
    assert!(h.init.register_exchange(Responder::of::<BadEcho>()));
    let new = SocketAddr::new(A2, A.port());
    let answers = send_update(&mut h, new, Vec::new());
    h.run(LIMIT);
    assert_answer(&h, &answers, new);
    // The IKE SA follows (the peer authenticated its update), the children do not.
    assert_eq!(h.resp.addresses(), (B, new));
    assert!(moved(&h.resp_events).is_empty(), "{:?}", h.resp_events);
    let s = h.resp.stats();
    assert_eq!((s.route_checks_passed, s.route_checks_failed), (0, 1));
    // A child created now still goes on the old, verified path.
    let now = h.now;
    assert!(h.resp.rekey_children(now));
    h.run(LIMIT);
    let new_child = h
        .resp_events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaRekeyed { new, .. } => Some(new),
            _ => None,
        })
        .expect("rekeyed");
    assert_eq!(new_child.paths, vec![(esp(B.ip()), esp(A.ip()))]);
    // Back to the old address: verified, nothing to check, nothing to move.
    h.faults.roamed = None;
    let answers = send_update(&mut h, A, Vec::new());
    h.run(LIMIT);
    assert_answer(&h, &answers, A);
    assert_eq!(h.resp.addresses(), (B, A));
    assert!(moved(&h.resp_events).is_empty());
    assert_eq!(h.resp.stats().route_checks_failed, 1);
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn moving_back_to_a_verified_address_needs_no_check() {
    let mut h = roamed();
    let new = SocketAddr::new(A2, A.port());
    send_update(&mut h, new, Vec::new());
    h.run(LIMIT);
    assert_eq!(reasons(&h), vec![MoveReason::PeerUpdateVerified]);
    // The old link comes back and the client returns to it: A was verified.
    h.faults.roamed = None;
    let answers = send_update(&mut h, A, Vec::new());
    h.run(LIMIT);
    assert_answer(&h, &answers, A);
    assert_eq!(
        reasons(&h),
        vec![MoveReason::PeerUpdateVerified, MoveReason::PeerUpdate]
    );
    assert_eq!(h.resp.stats().route_checks_passed, 1);
    let spi_in = h.resp.child_spis()[0].0;
    assert_eq!(
        last_move_paths(&h),
        vec![(spi_in, vec![(esp(B.ip()), esp(A.ip()))])]
    );
    assert_eq!(h.resp.stats().moves, 2);
}

#[test]
fn nat_appearing_on_the_same_address_moves_the_children_into_udp_at_once() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    h.run(LIMIT);
    h.assert_established();
    // Same source address, but the client's hashes say it sent from 10.0.0.5: a NAT.
    let inside = SocketAddr::new(v4("10.0.0.5"), 500);
    let answers = send_update(&mut h, inside, Vec::new());
    h.run(LIMIT);
    assert_answer(&h, &answers, A);
    assert_eq!(reasons(&h), vec![MoveReason::PeerUpdate]);
    let Some(Event::IkeSaMoved { nat, children, .. }) = moved(&h.resp_events).first().copied()
    else {
        unreachable!()
    };
    assert!(nat.remote_behind_nat && !nat.local_behind_nat);
    assert!(children[0].udp_encap);
    assert_eq!(h.resp.stats().moves, 0, "the addresses did not change");
}

#[test]
fn an_address_local_policy_refuses_gets_unacceptable_addresses() {
    let gw = IkeConfig {
        mobike_peers: vec![A.ip()],
        clone_ike_sa: true,
        clone_children: Vec::new(),
        ..gateway()
    };
    let mut h = Harness::new(client(), gw, Faults::default());
    h.run(LIMIT);
    h.assert_established();
    let before = h.resp.addresses();
    h.faults.roamed = Some(A2);
    let answers = send_update(&mut h, SocketAddr::new(A2, A.port()), Vec::new());
    h.run(LIMIT);
    let a = answers.lock().unwrap();
    assert!(
        find(&a[0], NotifyType::UnacceptableAddresses).is_some(),
        "{a:?}"
    );
    // The refusal copies the COOKIE2 too (RFC 4555 section 3.8).
    assert_eq!(
        find(&a[0], NotifyType::Cookie2).map(|c| c.data.clone()),
        Some(vec![0x5a; 16])
    );
    assert_eq!(h.resp.addresses(), before);
    assert!(moved(&h.resp_events).is_empty());
    assert_eq!(h.resp.stats().updates_refused, 1);
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn an_older_update_does_not_move_the_sa_back() {
    let mut h = roamed();
    const A3: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
    let first = h.sent;
    send_update(&mut h, SocketAddr::new(A2, A.port()), Vec::new());
    h.run(LIMIT);
    h.faults.roamed = Some(A3);
    let second = h.sent;
    send_update(&mut h, SocketAddr::new(A3, A.port()), Vec::new());
    h.run(LIMIT);
    let at_a3 = (B, SocketAddr::new(A3, A.port()));
    assert_eq!(h.resp.addresses(), at_a3);
    assert_eq!(reasons(&h).len(), 2);
    // The first update again, late, from its address: older, refused, nothing moves.
    let (to_resp, old) = h.log[first].clone();
    assert!(to_resp);
    let unexpected = h.resp.stats().unexpected;
    let now = h.now;
    h.resp
        .handle_datagram(now, B, SocketAddr::new(A2, A.port()), &old);
    h.run(LIMIT);
    assert_eq!(h.resp.addresses(), at_a3);
    assert_eq!(h.resp.stats().unexpected, unexpected + 1);
    // The last one again from A2 (the client retransmitting from another address):
    // answered there from the cache, nothing moves.
    let (_, last) = h.log[second].clone();
    let from_a2 = SocketAddr::new(A2, A.port());
    h.resp.handle_datagram(now, B, from_a2, &last);
    h.collect();
    assert_eq!(*h.resp_dests.last().unwrap(), from_a2);
    assert_eq!(h.resp.stats().answered_from_cache, 1);
    assert_eq!(h.resp.addresses(), at_a3);
    assert_eq!(reasons(&h).len(), 2);
}

#[test]
fn a_move_racing_a_child_rekey_moves_the_new_child_too() {
    let mut h = roamed();
    // The gateway's child rekey goes to the old address and is lost; the update comes
    // from the new one; the rekey completes there, then the check.
    let now = h.now;
    assert!(h.resp.rekey_children(now));
    let new = SocketAddr::new(A2, A.port());
    send_update(&mut h, new, Vec::new());
    h.run(LIMIT);
    let rekeyed = h
        .resp_events
        .iter()
        .find_map(|e| match e {
            Event::ChildSaRekeyed { new, .. } => Some(new.spi_in),
            _ => None,
        })
        .expect("rekeyed");
    assert_eq!(reasons(&h), vec![MoveReason::PeerUpdateVerified]);
    // Every child the gateway tracks at the move goes, the rekey's new one included.
    let moved: Vec<u32> = last_move_paths(&h).into_iter().map(|(s, _)| s).collect();
    assert!(moved.contains(&rekeyed), "{moved:?}");
    assert!(
        last_move_paths(&h)
            .iter()
            .all(|(_, p)| *p == vec![(esp(B.ip()), esp(A2))])
    );
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn a_move_racing_an_ike_rekey() {
    for rekey_first in [false, true] {
        let mut h = roamed();
        let new = SocketAddr::new(A2, A.port());
        let now = h.now;
        if rekey_first {
            // The client's IKE rekey, then its update (queued behind it).
            assert!(h.init.rekey_ike(now));
            send_update(&mut h, new, Vec::new());
        } else {
            // The update, then the gateway's IKE rekey while its check is due.
            send_update(&mut h, new, Vec::new());
            assert!(h.resp.rekey_ike(now));
        }
        h.run(LIMIT);
        let ike_rekeyed = |e: &Event| matches!(e, Event::IkeSaRekeyed(_));
        assert_eq!(
            Harness::count(&h.resp_events, ike_rekeyed),
            1,
            "{rekey_first}"
        );
        assert_eq!(
            reasons(&h),
            vec![MoveReason::PeerUpdateVerified],
            "{rekey_first}"
        );
        assert_eq!(h.resp.addresses(), (B, new));
        let spi_in = h.resp.child_spis()[0].0;
        assert_eq!(
            last_move_paths(&h),
            vec![(spi_in, vec![(esp(B.ip()), esp(A2))])]
        );
        assert!(h.init.is_established() && h.resp.is_established());
    }
}
