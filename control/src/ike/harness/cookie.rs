//! The responder's COOKIE round trip (RFC 7296 section 2.6) as the daemon runs it: new
//! IKE_SA_INIT requests pass the [`CookieGate`] before a responder SA sees them.

use super::*;
use crate::ike::cookie::{Admission, CookieGate, CookieStats};
use crate::wire::{Message, Payload};

#[test]
fn cookie_demanded_then_handshake_completes() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    let mut gate = CookieGate::new(h.now, 0).unwrap();
    h.collect();
    let (to_resp, first) = h.in_flight.pop_front().unwrap();
    assert!(to_resp);
    // No cookie: the gate answers with one and no responder SA is involved.
    let Admission::Cookie(answer) = gate.admit(h.now, 0, first.local.ip(), &first.bytes) else {
        panic!("no COOKIE demanded");
    };
    h.init
        .handle_datagram(h.now, first.local, first.remote, &answer);
    h.collect();
    let (to_resp, retry) = h.in_flight.pop_front().unwrap();
    assert!(to_resp);
    let m = Message::parse(&retry.bytes).unwrap();
    let Some(Payload::Notify(n)) = m.payloads.first() else {
        panic!("the retry does not start with a notify: {:?}", m.payloads);
    };
    assert_eq!(n.notify_type, NotifyType::Cookie);
    assert_eq!(
        m.header.spi_i,
        Message::parse(&first.bytes).unwrap().header.spi_i
    );
    // With the cookie it proceeds, and the responder SA ignores the COOKIE notify.
    assert_eq!(
        gate.admit(h.now, 0, retry.local.ip(), &retry.bytes),
        Admission::Proceed
    );
    h.in_flight.push_front((true, retry));
    h.run(LIMIT);
    h.assert_established();
    assert_eq!(
        gate.stats(),
        CookieStats {
            cookies_sent: 1,
            cookies_accepted: 1,
            cookies_rejected: 0
        }
    );
}

#[test]
fn cookie_from_another_address_is_rejected() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    let mut gate = CookieGate::new(h.now, 0).unwrap();
    h.collect();
    let (_, first) = h.in_flight.pop_front().unwrap();
    let Admission::Cookie(answer) = gate.admit(h.now, 0, first.local.ip(), &first.bytes) else {
        panic!("no COOKIE demanded");
    };
    h.init
        .handle_datagram(h.now, first.local, first.remote, &answer);
    h.collect();
    let (_, retry) = h.in_flight.pop_front().unwrap();
    // The same retry arriving from a spoofed address gets a new cookie, no SA.
    let spoofed = v4("203.0.113.77");
    assert!(matches!(
        gate.admit(h.now, 0, spoofed, &retry.bytes),
        Admission::Cookie(_)
    ));
    assert_eq!(gate.stats().cookies_rejected, 1);
    assert_eq!(gate.stats().cookies_accepted, 0);
}
