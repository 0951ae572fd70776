//! The COOKIE gate (`ike::cookie::CookieGate::admit`) on arbitrary IKE_SA_INIT requests:
//! never a panic; a COOKIE answer parses; and the same request sent again with the COOKIE
//! it was given as its first payload is admitted (from the same address, not another).
//! Input: threshold, half-open count, an address byte, a time step byte, then the request.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mifsec_control::ike::cookie::{Admission, CookieGate};
use mifsec_control::wire::{Message, NotifyType, Payload};

fuzz_target!(|data: &[u8]| {
    let [threshold, half_open, addr, step, request @ ..] = data else {
        return;
    };
    let now = Instant::now();
    let Some(mut gate) = CookieGate::new(now, usize::from(*threshold % 4)) else {
        return;
    };
    let ip = IpAddr::V4(Ipv4Addr::new(198, 18, 0, *addr));
    let later = now + Duration::from_secs(u64::from(*step));
    let half_open = usize::from(*half_open);
    let Admission::Cookie(answer) = gate.admit(later, half_open, ip, request) else {
        return;
    };
    let answer = Message::parse(&answer).expect("a COOKIE answer parses");
    let Some(Payload::Notify(n)) = answer.payloads.first() else {
        panic!("a COOKIE answer holds a notify: {answer:?}");
    };
    assert_eq!(n.notify_type, NotifyType::Cookie);
    // The request parsed (else it would have proceeded): send it again with the cookie.
    let mut again = Message::parse(request).expect("the gate parsed it");
    if matches!(again.payloads.first(), Some(Payload::Notify(c)) if c.notify_type == NotifyType::Cookie)
    {
        again.payloads.remove(0);
    }
    again.payloads.insert(0, Payload::Notify(n.clone()));
    let bytes = again.to_bytes();
    let before = gate.stats();
    let other = IpAddr::V4(Ipv4Addr::new(198, 19, 0, *addr));
    assert!(
        matches!(
            gate.admit(later, half_open, other, &bytes),
            Admission::Cookie(_)
        ),
        "a cookie for one address admits another"
    );
    assert_eq!(
        gate.admit(later, half_open, ip, &bytes),
        Admission::Proceed,
        "the cookie the gate gave is refused"
    );
    assert_eq!(gate.stats().cookies_accepted, before.cookies_accepted + 1);
});
