//! MOBIKE as initiator (RFC 4555 sections 3.5 to 3.8), mifsec client against the mifsec
//! gateway, on the multi-address pipe (`Faults::links`): the client has several local
//! addresses (A, A2, A3), the gateway perhaps two (B, B2); a link is down when its
//! address is in `links.down` (deleted or silently blackholed alike), NATs are
//! `links.nat`. Simulated time throughout.

use super::*;
use crate::ike::config::RoamConfig;
use crate::ike::sa::exchange::{Ex, Exchange, Key, Kind, respond_mobike};
use crate::ike::sa::{MoveError, MoveReason, NatStatus};
use crate::wire::{ExchangeType, NotifyPayload, Payload};

const A2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77));
const A3: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
const B2: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 77));

fn at(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, A.port())
}

/// The moves an event list reports: (reason, local, remote, NAT, children).
fn moves(events: &[Event]) -> Vec<(MoveReason, SocketAddr, SocketAddr, NatStatus, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::IkeSaMoved {
                reason,
                local,
                remote,
                nat,
                children,
                ..
            } => Some((*reason, *local, *remote, *nat, children.len())),
            _ => None,
        })
        .collect()
}

/// A client with local addresses `locals` (told before IKE_AUTH) and the gateway, up.
fn up_with(c: IkeConfig, g: IkeConfig, locals: &[IpAddr]) -> Harness {
    let mut h = Harness::new(c, g, Faults::default());
    let now = h.now;
    h.init.set_local_addresses(now, locals);
    h.run(LIMIT);
    h.assert_established();
    h
}

fn up(locals: &[IpAddr]) -> Harness {
    let h = up_with(client(), gateway(), locals);
    assert!(h.init.mobike() && h.resp.mobike());
    h
}

/// Both ends agree on the path after a move of the client to `local` (no NAT).
fn assert_on(h: &Harness, local: SocketAddr, remote: SocketAddr) {
    assert_eq!(h.init.addresses(), (local, remote));
    assert_eq!(h.resp.addresses(), (remote, local));
    assert!(h.init.is_established() && h.resp.is_established());
}

fn rekeys(events: &[Event]) -> usize {
    Harness::count(events, |e| {
        matches!(e, Event::ChildSaRekeyed { .. } | Event::IkeSaRekeyed(_))
    })
}

/// Steps of `step` for at most `max`: each 250 ms the daemon's report (outbound sent;
/// inbound once the client has moved, as ESP then flows on the new path). Returns the
/// time from the start of the call until `done` held, if it did.
fn with_traffic(
    h: &mut Harness,
    max: Duration,
    done: impl Fn(&Harness) -> bool,
) -> Option<Duration> {
    let t0 = h.now;
    let step = Duration::from_millis(10);
    let mut next_report = t0;
    while h.now - t0 < max {
        if h.now >= next_report {
            let now = h.now;
            let received = !moves(&h.init_events).is_empty();
            h.init.note_traffic(now, true, received);
            next_report += Duration::from_millis(250);
        }
        h.run_for(step);
        if done(h) {
            return Some(h.now - t0);
        }
    }
    None
}

#[test]
fn the_address_lists_go_in_ike_auth_and_in_informational_both_ways() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    let now = h.now;
    h.init.set_local_addresses(now, &[A.ip(), A2]);
    h.resp.set_local_addresses(now, &[B.ip(), B2]);
    h.run(LIMIT);
    h.assert_established();
    // IKE_AUTH: each side's additional addresses (all but the one in use).
    assert_eq!(h.resp.peer_addresses(), &[A2]);
    assert_eq!(h.init.peer_addresses(), &[B2]);
    // A change of either side's set: an INFORMATIONAL with the new list.
    let now = h.now;
    h.init.set_local_addresses(now, &[A.ip(), A2, A3]);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.resp.peer_addresses(), &[A2, A3]);
    let now = h.now;
    h.resp.set_local_addresses(now, &[B.ip()]);
    h.run_for(Duration::from_secs(1));
    assert!(h.init.peer_addresses().is_empty());
    // The same set again: nothing sent.
    let sent = h.sent;
    let now = h.now;
    h.resp.set_local_addresses(now, &[B.ip()]);
    h.init.set_local_addresses(now, &[A.ip(), A2, A3]);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.sent, sent);
    assert!(moves(&h.init_events).is_empty() && moves(&h.resp_events).is_empty());
    assert_eq!(h.init.addresses(), (A, B));
}

#[test]
fn explicit_address_loss_moves_to_the_other_address_at_once() {
    let mut h = up(&[A.ip(), A2]);
    let spis = h.init.child_spis();
    let t0 = h.now;
    h.faults.links.down.insert(A.ip());
    h.init.set_local_addresses(t0, &[A2]);
    h.run_for(Duration::from_secs(2));
    assert_on(&h, at(A2), B);
    let m = moves(&h.init_events);
    assert_eq!(m.len(), 1, "{:?}", h.init_events);
    assert_eq!(m[0].0, MoveReason::LocalAddressGone);
    assert_eq!((m[0].1, m[0].2), (at(A2), B));
    assert_eq!(m[0].4, spis.len());
    let r = moves(&h.resp_events);
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].0, MoveReason::PeerUpdateVerified);
    // Probe and update: two round trips, no retransmission, no rekey.
    assert_eq!(h.init.stats().retransmitted, 0);
    assert_eq!(h.init.stats().probes, 1);
    assert_eq!(h.init.stats().moves, 1);
    assert_eq!(rekeys(&h.init_events) + rekeys(&h.resp_events), 0);
    assert_eq!(h.init.child_spis(), spis);
    // The update carried the new list: no additional address left.
    assert!(h.resp.peer_addresses().is_empty());
    // The children's new pairs are on the ESP-in-UDP port.
    let Some(Event::IkeSaMoved { children, .. }) = h
        .init_events
        .iter()
        .find(|e| matches!(e, Event::IkeSaMoved { .. }))
    else {
        unreachable!()
    };
    let esp = |ip: IpAddr| SocketAddr::new(ip, crate::ike::sa::ESP_IN_UDP_PORT);
    assert_eq!(children[0].paths, vec![(esp(A2), esp(B.ip()))]);
    // The next exchange runs on the new path.
    let now = h.now;
    assert!(h.init.rekey_children(now));
    h.run_for(Duration::from_secs(2));
    assert_eq!(rekeys(&h.init_events), 1);
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn loss_of_any_single_message_of_the_probe_or_the_update_still_moves() {
    // After the address loss: probe request, its answer, update request, its answer,
    // then the gateway's return-routability check of the new address and its answer.
    let mut h = up(&[A.ip(), A2]);
    h.faults.links.down.insert(A.ip());
    let first = h.sent;
    let now = h.now;
    h.init.set_local_addresses(now, &[A2]);
    h.run_for(Duration::from_secs(5));
    assert_eq!(h.sent - first, 6);
    for lost in 0..6 {
        let mut h = up(&[A.ip(), A2]);
        h.faults.links.down.insert(A.ip());
        h.faults.drop.insert(h.sent + lost);
        let now = h.now;
        h.init.set_local_addresses(now, &[A2]);
        h.run_for(Duration::from_secs(5));
        assert_on(&h, at(A2), B);
        assert_eq!(moves(&h.init_events).len(), 1, "lost {lost}");
        assert_eq!(moves(&h.resp_events).len(), 1, "lost {lost}");
        // The lost one was sent again, once; a lost answer came from the cache.
        let again = h.init.stats().retransmitted + h.resp.stats().retransmitted;
        assert_eq!(again, 1, "lost {lost}");
        let cached = h.resp.stats().answered_from_cache + h.init.stats().answered_from_cache;
        assert_eq!(cached, u64::from(lost % 2 == 1), "lost {lost}");
    }
}

/// Every copy of one of the initiator's requests (retransmissions on one path, probes on
/// others) is the same datagram: a standard responder (strongSwan) answers a request of a
/// Message ID it has processed only when the bytes are those it saw, and ignores others.
fn requests_of_one_id_are_identical(h: &Harness) {
    let mut first: std::collections::HashMap<u32, &[u8]> = std::collections::HashMap::new();
    let mut repeated = 0;
    for (to_resp, b) in &h.log {
        // IKE header: flags at octet 19 (0x20: response), Message ID at octets 20 to 23.
        if !to_resp || b.len() < 28 || b[19] & 0x20 != 0 || b[19] & 0x08 == 0 {
            continue;
        }
        let id = u32::from_be_bytes([b[20], b[21], b[22], b[23]]);
        match first.get(&id) {
            Some(f) => {
                assert_eq!(*f, &b[..], "two different requests with Message ID {id}");
                repeated += 1;
            }
            None => {
                first.insert(id, b);
            }
        }
    }
    assert!(repeated > 0, "no request was sent twice");
}

#[test]
fn a_silently_dead_path_is_found_within_the_configured_time_and_left() {
    let mut h = up(&[A.ip(), A2]);
    // Blackholed: no address event.
    h.faults.links.down.insert(A.ip());
    let took = with_traffic(&mut h, Duration::from_secs(5), |h| {
        !moves(&h.init_events).is_empty()
    })
    .expect("moved");
    // 400 ms without answer, then 3 checks 200 ms apart: dead at 1.0 s, and the probe
    // and the update answer at once on the pipe.
    let r = RoamConfig::default();
    let dead = r.check_delay.unwrap() + r.dead_after();
    assert_eq!(dead, Duration::from_secs(1));
    assert!(
        took >= dead && took <= dead + Duration::from_millis(20),
        "{took:?}"
    );
    assert_eq!(moves(&h.init_events)[0].0, MoveReason::PathDead);
    assert_on(&h, at(A2), B);
    assert_eq!(h.init.stats().path_checks, 1);
    assert_eq!(h.init.stats().probes, 1);
    requests_of_one_id_are_identical(&h);
    // Traffic flows on the new path: no more checks.
    with_traffic(&mut h, Duration::from_secs(3), |_| false);
    assert_eq!(h.init.stats().path_checks, 1);
    assert_eq!(moves(&h.init_events).len(), 1);
}

#[test]
fn a_path_check_answered_keeps_the_path() {
    let mut h = up(&[A.ip(), A2]);
    // Outbound only, but the path works: the check is answered, nothing moves.
    let t0 = h.now;
    while h.now - t0 < Duration::from_secs(2) {
        let now = h.now;
        h.init.note_traffic(now, true, false);
        h.run_for(Duration::from_millis(250));
    }
    assert!(h.init.stats().path_checks >= 1);
    assert!(moves(&h.init_events).is_empty());
    assert_eq!(h.init.addresses(), (A, B));
    assert!(h.init.is_established());
}

#[test]
fn a_manual_move_and_its_refusals() {
    let mut h = up(&[A.ip(), A2]);
    let now = h.now;
    assert_eq!(
        h.resp.request_move(now, B2, None),
        Err(MoveError::NotInitiator)
    );
    assert_eq!(
        h.init.request_move(now, A3, None),
        Err(MoveError::BadAddress)
    );
    assert_eq!(
        h.init
            .request_move(now, A2, Some("2001:db8::1".parse().unwrap())),
        Err(MoveError::BadAddress)
    );
    assert_eq!(h.init.request_move(now, A.ip(), None), Ok(false));
    assert_eq!(h.init.request_move(now, A2, None), Ok(true));
    h.run_for(Duration::from_secs(2));
    assert_on(&h, at(A2), B);
    assert_eq!(moves(&h.init_events)[0].0, MoveReason::Operator);
    assert_eq!(moves(&h.resp_events).len(), 1);
    let mut fresh = IkeSa::initiate(client(), now, A, B).unwrap();
    assert_eq!(
        fresh.request_move(now, A2, None),
        Err(MoveError::NotEstablished)
    );
    let g = IkeConfig {
        mobike: false,
        ..gateway()
    };
    let mut h = up_with(client(), g, &[A.ip(), A2]);
    assert!(!h.init.mobike());
    let now = h.now;
    assert_eq!(h.init.request_move(now, A2, None), Err(MoveError::NoMobike));
}

/// A gateway whose MOBIKE answers are bent: the real responder's answer, then `bend`
/// applied, for updates coming from `from` (any if `None`).
struct Bent;

type Bend = fn(&mut Vec<Payload>, SocketAddr);

static BEND: std::sync::Mutex<Option<(Bend, Option<IpAddr>)>> = std::sync::Mutex::new(None);

impl Exchange for Bent {
    fn kind() -> Kind {
        Kind::Other
    }

    fn claims(exchange: ExchangeType, p: &[Payload]) -> bool {
        exchange == ExchangeType::Informational
            && p.iter().any(|q| {
                matches!(q, Payload::Notify(n) if n.notify_type == NotifyType::UpdateSaAddresses)
            })
    }

    fn respond(x: &mut Ex<'_>, p: &[Payload]) -> Vec<Payload> {
        let from = x.from.map(|f| f.1);
        let bend = *BEND.lock().unwrap();
        match (bend, from) {
            (Some((f, who)), Some(from)) if who.is_none_or(|w| w == from.ip()) => {
                let mut out = Vec::new();
                f(&mut out, from);
                out
            }
            _ => respond_mobike(x, p),
        }
    }

    fn key(&self) -> Key {
        Key::Other("bent")
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    fn build_request(&mut self, _: &mut Ex<'_>) -> Option<Vec<Payload>> {
        None
    }

    fn process_response(self: Box<Self>, _: &mut Ex<'_>, _: &[Payload]) {}
}

/// The tests that bend the gateway share `BEND`: one at a time.
static BENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn cookie2_mismatch_in_the_update_answer_means_no_move() {
    let _one = BENT.lock().unwrap_or_else(|e| e.into_inner());
    *BEND.lock().unwrap() = Some((
        |out, _| {
            out.push(Payload::Notify(NotifyPayload::new(
                NotifyType::Cookie2,
                vec![0xee; 16],
            )))
        },
        None,
    ));
    let mut h = up(&[A.ip(), A2]);
    assert!(
        h.resp
            .register_exchange(crate::ike::sa::exchange::Responder::of::<Bent>())
    );
    let now = h.now;
    assert_eq!(h.init.request_move(now, A2, None), Ok(true));
    h.run_for(Duration::from_secs(2));
    *BEND.lock().unwrap() = None;
    assert_eq!(h.init.stats().cookie2_mismatch, 1);
    assert_eq!(h.init.stats().our_updates_refused, 1);
    assert!(moves(&h.init_events).is_empty());
    assert_eq!(h.init.stats().moves, 0);
    // Back on the path it had.
    assert_eq!(h.init.addresses(), (A, B));
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn unacceptable_addresses_makes_the_client_try_the_next_pair() {
    let _one = BENT.lock().unwrap_or_else(|e| e.into_inner());
    *BEND.lock().unwrap() = Some((
        |out, _| {
            out.push(Payload::Notify(NotifyPayload::new(
                NotifyType::UnacceptableAddresses,
                Vec::new(),
            )))
        },
        Some(A2),
    ));
    let mut h = up(&[A.ip(), A2, A3]);
    assert!(
        h.resp
            .register_exchange(crate::ike::sa::exchange::Responder::of::<Bent>())
    );
    h.faults.links.down.insert(A.ip());
    let now = h.now;
    h.init.set_local_addresses(now, &[A2, A3]);
    h.run_for(Duration::from_secs(3));
    *BEND.lock().unwrap() = None;
    // A2 answered the probe first, the gateway refused it; A3 then.
    assert_on(&h, at(A3), B);
    assert_eq!(h.init.stats().our_updates_refused, 1);
    let m = moves(&h.init_events);
    assert_eq!(m.len(), 1, "{m:?}");
    assert_eq!(m[0].0, MoveReason::LocalAddressGone);
    assert_eq!(h.init.stats().probes, 2);
}

#[test]
fn a_dead_gateway_address_fails_over_to_its_other_address() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    let now = h.now;
    h.init.set_local_addresses(now, &[A.ip()]);
    h.resp.set_local_addresses(now, &[B.ip(), B2]);
    h.run(LIMIT);
    h.assert_established();
    assert_eq!(h.init.peer_addresses(), &[B2]);
    // The gateway's address in use becomes unreachable (no event on the client).
    h.faults.links.down.insert(B.ip());
    let took = with_traffic(&mut h, Duration::from_secs(5), |h| {
        !moves(&h.init_events).is_empty()
    })
    .expect("moved");
    assert!(took <= Duration::from_millis(1020), "{took:?}");
    let b2 = SocketAddr::new(B2, B.port());
    assert_on(&h, A, b2);
    assert_eq!(moves(&h.init_events)[0].0, MoveReason::PathDead);
}

#[test]
fn the_client_moves_back_to_the_preferred_address_once_it_answers() {
    let c = IkeConfig {
        roam: RoamConfig {
            prefer_best_path: true,
            ..RoamConfig::default()
        },
        ..client()
    };
    let mut h = up_with(c, gateway(), &[A.ip(), A2]);
    h.faults.links.down.insert(A.ip());
    let now = h.now;
    h.init.set_local_addresses(now, &[A2]);
    h.run_for(Duration::from_secs(2));
    assert_on(&h, at(A2), B);
    // A is back, but not reachable yet: the probe of it is dropped, nothing fails.
    let now = h.now;
    h.init.set_local_addresses(now, &[A.ip(), A2]);
    h.run_for(Duration::from_secs(3));
    assert_on(&h, at(A2), B);
    assert_eq!(moves(&h.init_events).len(), 1);
    // Reachable again: the next change of the set (or the next probe) moves back.
    h.faults.links.down.remove(&A.ip());
    let now = h.now;
    h.init.set_local_addresses(now, &[A.ip(), A2, A3]);
    h.run_for(Duration::from_secs(2));
    assert_on(&h, A, B);
    let m = moves(&h.init_events);
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[1].0, MoveReason::Preferred);
    // Without prefer_best_path the client stays where it is.
    let mut h = up(&[A.ip(), A2]);
    h.faults.links.down.insert(A.ip());
    let now = h.now;
    h.init.set_local_addresses(now, &[A2]);
    h.run_for(Duration::from_secs(2));
    h.faults.links.down.remove(&A.ip());
    let now = h.now;
    h.init.set_local_addresses(now, &[A.ip(), A2]);
    h.run_for(Duration::from_secs(2));
    assert_on(&h, at(A2), B);
}

#[test]
fn our_rekey_outstanding_on_the_dead_path_is_probed_and_completes_after_the_move() {
    let mut h = up(&[A.ip(), A2]);
    let t0 = h.now;
    // Blackholed without traffic reports: our own request finds it.
    h.faults.links.down.insert(A.ip());
    assert!(h.init.rekey_children(t0));
    h.run_for(Duration::from_secs(5));
    assert_on(&h, at(A2), B);
    let m = moves(&h.init_events);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].0, MoveReason::PathDead);
    let rekeyed = |e: &Event| matches!(e, Event::ChildSaRekeyed { .. });
    assert_eq!(Harness::count(&h.init_events, rekeyed), 1);
    assert_eq!(Harness::count(&h.resp_events, rekeyed), 1);
    // The move took the request's unanswered time (delay and checks: 1 s), not the
    // give-up; every child, the new one included, is listed in the event.
    assert!(h.init.stats().probes == 1);
    let Some(Event::IkeSaMoved { children, .. }) = h
        .init_events
        .iter()
        .find(|e| matches!(e, Event::IkeSaMoved { .. }))
    else {
        unreachable!()
    };
    let spis: Vec<u32> = children.iter().map(|c| c.spi_in).collect();
    for (spi_in, _) in h.init.child_spis() {
        assert!(spis.contains(&spi_in), "{spis:?}");
    }
}

#[test]
fn the_gateways_rekey_racing_the_move_completes_on_the_new_path() {
    let mut h = up(&[A.ip(), A2]);
    h.faults.links.down.insert(A.ip());
    let now = h.now;
    // The gateway's rekey goes to A (lost), then the client moves.
    assert!(h.resp.rekey_children(now));
    h.run_for(Duration::from_millis(100));
    let now = h.now;
    h.init.set_local_addresses(now, &[A2]);
    h.run_for(Duration::from_secs(5));
    assert_on(&h, at(A2), B);
    let rekeyed = |e: &Event| matches!(e, Event::ChildSaRekeyed { .. });
    assert_eq!(Harness::count(&h.init_events, rekeyed), 1);
    assert_eq!(Harness::count(&h.resp_events, rekeyed), 1);
    assert_eq!(moves(&h.init_events).len(), 1);
}

#[test]
fn a_nat_on_the_new_path_is_found_by_the_update() {
    let mut h = up(&[A.ip(), A2]);
    // A2 is behind a NAT.
    let public = SocketAddr::new(IpAddr::V4(NAT_IP), 7000);
    h.faults.links.nat.insert(at(A2), public);
    h.faults.links.down.insert(A.ip());
    let now = h.now;
    h.init.set_local_addresses(now, &[A2]);
    h.run_for(Duration::from_secs(2));
    let m = moves(&h.init_events);
    assert_eq!(m.len(), 1);
    assert!(
        m[0].3.local_behind_nat && !m[0].3.remote_behind_nat,
        "{m:?}"
    );
    let r = moves(&h.resp_events);
    assert_eq!(r.len(), 1);
    assert!(r[0].3.remote_behind_nat);
    assert_eq!(h.resp.addresses(), (B, public));
    assert_eq!(h.init.addresses(), (at(A2), B));
}

#[test]
fn a_new_nat_mapping_seen_by_a_path_check_is_followed_by_an_update() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    let first = SocketAddr::new(IpAddr::V4(NAT_IP), 6000);
    h.faults.links.nat.insert(A, first);
    h.faults.links.nat.insert(
        SocketAddr::new(A.ip(), 4500),
        SocketAddr::new(IpAddr::V4(NAT_IP), 6001),
    );
    let now = h.now;
    h.init.set_local_addresses(now, &[A.ip()]);
    h.run(LIMIT);
    h.assert_established();
    let (local, _) = h.init.addresses();
    assert_eq!(local.port(), 4500);
    // One-way traffic: checks run and learn what the gateway sees.
    let step = |h: &mut Harness| {
        for _ in 0..8 {
            let now = h.now;
            h.init.note_traffic(now, true, false);
            h.run_for(Duration::from_millis(250));
        }
    };
    step(&mut h);
    assert!(h.init.stats().path_checks >= 1);
    assert!(moves(&h.init_events).is_empty());
    // The NAT rebinds: the next check sees another address for us.
    let rebound = SocketAddr::new(IpAddr::V4(NAT_IP), 7777);
    h.faults.links.nat.insert(local, rebound);
    step(&mut h);
    let m = moves(&h.init_events);
    assert_eq!(m.len(), 1, "{:?}", h.init_events);
    assert_eq!(m[0].0, MoveReason::NatChanged);
    assert_eq!(h.resp.addresses().1, rebound);
    assert_eq!(moves(&h.resp_events).len(), 1);
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn with_no_path_answering_the_sa_ends_after_the_usual_give_up_time() {
    let mut h = up(&[A.ip()]);
    h.faults.links.down.insert(A.ip());
    let t0 = h.now;
    let ended = with_traffic(&mut h, Duration::from_secs(40), |h| h.init.is_dead());
    let took = ended.expect("dead");
    assert_eq!(Harness::failure(&h.init_events), Some(FailReason::Timeout));
    // The check started 0.4 s in; the give-up is 30 s after its first send.
    assert_eq!(took, Duration::from_millis(30_400), "{:?}", h.now - t0);
    assert!(h.init.stats().probes >= 1);
}

#[test]
fn an_ike_rekey_outstanding_on_the_dead_path_completes_and_the_move_follows() {
    let mut h = up(&[A.ip(), A2]);
    let old = h.init.spis();
    h.faults.links.down.insert(A.ip());
    let now = h.now;
    assert!(h.init.rekey_ike(now));
    h.run_for(Duration::from_millis(300));
    let now = h.now;
    h.init.set_local_addresses(now, &[A2]);
    h.run_for(Duration::from_secs(5));
    assert_on(&h, at(A2), B);
    let rekeyed = |e: &Event| matches!(e, Event::IkeSaRekeyed(_));
    assert_eq!(Harness::count(&h.init_events, rekeyed), 1);
    assert_eq!(Harness::count(&h.resp_events, rekeyed), 1);
    assert_ne!(h.init.spis(), old);
    assert_eq!(h.init.spis(), h.resp.spis());
    assert_eq!(moves(&h.init_events).len(), 1);
    assert_eq!(moves(&h.resp_events).len(), 1);
    // The new IKE SA works on the new path.
    let now = h.now;
    assert!(h.init.rekey_children(now));
    h.run_for(Duration::from_secs(2));
    let crekeyed = |e: &Event| matches!(e, Event::ChildSaRekeyed { .. });
    assert_eq!(Harness::count(&h.resp_events, crekeyed), 1);
    assert!(h.init.is_established() && h.resp.is_established());
}
