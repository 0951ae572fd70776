//! The aggregate policy's reorder buffer (`reorder::Reorder`) fed authentic packets (distinct
//! sequence numbers, as the replay window guarantees) in any order at any times: never a
//! panic, and once time has run out every packet delivered, each exactly once (markers
//! never).
//!
//! Input: a window byte, then records `seq delta (i16 le) | time step | len` (len 0: a
//! marker with nothing to deliver); an 0xff time step expires instead, and 0xfe sets the
//! sequence number to the u64 (le) that follows.
#![no_main]

use std::collections::BTreeSet;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mifsec_dataplane::reorder::Reorder;

fuzz_target!(|data: &[u8]| {
    let [window, rest @ ..] = data else {
        return;
    };
    let mut rest: &[u8] = rest;
    let r = Reorder::new(Duration::from_micros(u64::from(*window) * 100));
    let mut seq: u64 = 1_000;
    let mut now: u64 = 0;
    let mut pushed = BTreeSet::new();
    let mut with_packet = Vec::new();
    let mut delivered = Vec::new();
    let mut deliver = |p: &[u8]| delivered.push(u64::from_be_bytes(p.try_into().unwrap()));
    while let [a, b, step, len, tail @ ..] = rest {
        rest = tail;
        let delta = i16::from_le_bytes([*a, *b]);
        seq = seq.saturating_add_signed(i64::from(delta)).max(1);
        if *step == 0xfe {
            // An absolute sequence number (ESN: any 64-bit value) in the next eight bytes.
            let Some((abs, tail)) = rest.split_first_chunk::<8>() else {
                break;
            };
            rest = tail;
            seq = u64::from_le_bytes(*abs).max(1);
            continue;
        }
        if *step == 0xff {
            now += 1_000_000;
            r.expire(now, &mut deliver);
            continue;
        }
        now += u64::from(*step) * 10_000;
        if !pushed.insert(seq) {
            continue;
        }
        let pkt = seq.to_be_bytes();
        if *len != 0 {
            with_packet.push(seq);
        }
        r.push(seq, (*len != 0).then_some(&pkt[..]), now, &mut deliver);
    }
    r.expire(u64::MAX, &mut deliver);
    let mut got = delivered.clone();
    got.sort_unstable();
    let before = got.len();
    got.dedup();
    assert_eq!(got.len(), before, "a packet delivered twice: {delivered:?}");
    with_packet.sort_unstable();
    assert_eq!(got, with_packet, "delivered and pushed differ");
    let _ = r.stats();
});
