//! MOBIKE (RFC 4555) as responder, on the multi-address pipe (`Faults::roamed`): the
//! client moves to a second link and sends UPDATE_SA_ADDRESSES from there. The client's
//! half of MOBIKE is not built yet, so its request is a test exchange ([`Update`]) with
//! the notifies a standard client sends.

use std::sync::{Arc, Mutex};

use super::*;
use crate::ike::sa::exchange::{Ex, Exchange, Key, Kind};
use crate::ike::sa::{MAX_PEER_ADDRESSES, NatStatus, nat_detection_hash};
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

    fn claims(_: ExchangeType, _: &[Payload]) -> bool {
        false
    }

    fn respond(_: &mut Ex<'_>, _: &[Payload]) -> Vec<Payload> {
        Vec::new()
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
