//! The IKE responder state machine fed hostile datagrams: a genuine handshake in memory, with
//! one of its messages corrupted as the input says, then the rest of the input as further
//! datagrams to the responder in whatever state it reached. Nothing may panic, and the
//! responder must keep answering sanely (no unbounded output).
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use mifsec_control::ike::{IkeSa, sample};

fn pump(
    from: &mut IkeSa,
    to: &mut IkeSa,
    now: Instant,
    corrupt: Option<(usize, &[u8])>,
    count: &mut usize,
) {
    let (a, b): (SocketAddr, SocketAddr) = (
        "198.18.0.1:500".parse().unwrap(),
        "198.18.0.2:500".parse().unwrap(),
    );
    while let Some(t) = from.poll_transmit() {
        let mut bytes = t.bytes;
        if let Some((which, pattern)) = corrupt
            && which == *count
        {
            let len = bytes.len().max(1);
            for (i, p) in pattern.iter().enumerate() {
                if let Some(b) = bytes.get_mut((i * 7 + usize::from(*p)) % len) {
                    *b ^= *p;
                }
            }
        }
        *count += 1;
        to.handle_datagram(now, b, a, &bytes);
    }
    while from.poll_event().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let split = rest.len().min(16);
    let (pattern, extra) = rest.split_at(split);
    let now = Instant::now();
    let (a, b): (SocketAddr, SocketAddr) = (
        "198.18.0.2:500".parse().unwrap(),
        "198.18.0.1:500".parse().unwrap(),
    );
    let Ok(mut init) = IkeSa::initiate(sample::client(), now, a, b) else {
        return;
    };
    let mut resp = IkeSa::respond(sample::gateway());
    let corrupt = Some((usize::from(sel % 4), pattern));
    let mut sent = 0;
    for round in 0..4u64 {
        let t = now + Duration::from_millis(10 * round);
        pump(&mut init, &mut resp, t, corrupt, &mut sent);
        pump(&mut resp, &mut init, t, corrupt, &mut sent);
    }
    // Whatever state the responder is in: arbitrary datagrams, then a timeout.
    for chunk in extra.chunks(97) {
        resp.handle_datagram(now, b, a, chunk);
    }
    resp.handle_timeout(now + Duration::from_secs(1));
    let mut out = 0;
    while resp.poll_transmit().is_some() {
        out += 1;
        assert!(out < 64, "the responder floods answers");
    }
    while resp.poll_event().is_some() {}
});
