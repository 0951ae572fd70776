//! Harness tests of IKE fragmentation (RFC 7383): IKE_AUTH and CREATE_CHILD_SA sent in SKF
//! fragments with a small fragment size, with a fragment lost (the retransmission resends
//! every fragment; a responder answers a retransmitted request once, on its fragment 1),
//! reordered and duplicated, a forged fragment, and a peer without fragmentation.
//!
//! Datagram numbers: 0 and 1 are IKE_SA_INIT; the IKE_AUTH request's fragments follow from 2.

use super::{A, B, Faults, Harness, LIMIT, client, gateway};
use crate::ike::config::IkeConfig;
use crate::ike::fragment::max_message_len;
use crate::ike::sa::{Event, IkeSa, IkeSaInfo, SIGNATURE_HASHES, Transmit};
use crate::wire::{Message, Payload};

/// The smallest fragment size accepted by the configuration: fragments of 168 bytes.
const SIZE: u16 = 200;

fn small(mut c: IkeConfig) -> IkeConfig {
    c.fragment_size = SIZE;
    c
}

fn established(c: IkeConfig, g: IkeConfig, faults: Faults) -> Harness {
    let mut h = Harness::new(c, g, faults);
    h.run(LIMIT);
    h.assert_established();
    h
}

fn no_failure(h: &Harness) {
    for ev in [&h.init_events, &h.resp_events] {
        assert!(
            !ev.iter()
                .any(|e| matches!(e, Event::Failed(_) | Event::Closed)),
            "{ev:?}"
        );
    }
}

/// Both sides established with one child pair, SPIs crossed; the initiator's inbound SPI.
fn one_pair(h: &Harness) -> u32 {
    assert!(h.init.is_established() && h.resp.is_established());
    assert_eq!(h.init.spis(), h.resp.spis());
    let i = h.init.child_spis();
    let r = h.resp.child_spis();
    assert_eq!(i.len(), 1, "{:?}", h.init_events);
    assert_eq!(r.len(), 1, "{:?}", h.resp_events);
    assert_eq!((i[0].0, i[0].1), (r[0].1, r[0].0));
    i[0].0
}

fn is_fragment(bytes: &[u8]) -> bool {
    Message::parse(bytes).is_ok_and(|m| matches!(m.payloads.last(), Some(Payload::Skf(_))))
}

fn info(events: &[Event]) -> &IkeSaInfo {
    events
        .iter()
        .find_map(|e| match e {
            Event::IkeSaEstablished(i) => Some(i),
            _ => None,
        })
        .expect("established")
}

/// The datagrams of the pipe log from `from` on, by direction (to responder?).
fn fragments_from(h: &Harness, from: usize, to_resp: bool) -> Vec<Vec<u8>> {
    h.log[from..]
        .iter()
        .filter(|(d, b)| *d == to_resp && is_fragment(b))
        .map(|(_, b)| b.clone())
        .collect()
}

#[test]
fn ike_auth_and_create_child_sa_in_fragments() {
    let mut h = established(small(client()), small(gateway()), Faults::default());
    let max = max_message_len(SIZE, B);
    // Everything after IKE_SA_INIT fits the fragment size, and both IKE_AUTH messages were
    // fragmented.
    for (_, b) in &h.log[2..] {
        assert!(b.len() <= max, "{} > {max}", b.len());
    }
    let req = fragments_from(&h, 2, true);
    let resp = fragments_from(&h, 2, false);
    assert!(
        req.len() >= 2 && resp.len() >= 2,
        "{} {}",
        req.len(),
        resp.len()
    );
    assert_eq!(h.sent, 2 + req.len() + resp.len());
    for (events, peer_frag) in [(&h.init_events, true), (&h.resp_events, true)] {
        let i = info(events);
        assert_eq!(i.fragmentation, peer_frag);
        assert_eq!(i.peer_signature_hashes, SIGNATURE_HASHES.to_vec());
    }
    let (si, sr) = (h.init.stats(), h.resp.stats());
    assert_eq!(si.fragments_sent, req.len() as u64);
    assert_eq!(sr.fragments_received, req.len() as u64);
    assert_eq!(sr.fragments_sent, resp.len() as u64);
    assert_eq!(si.fragments_received, resp.len() as u64);
    assert_eq!(si.fragments_dropped + sr.fragments_dropped, 0);
    assert_eq!(si.retransmitted + sr.retransmitted, 0);
    let old_in = one_pair(&h);

    // A child rekey: CREATE_CHILD_SA request and response in fragments too.
    let before = h.sent;
    assert!(h.init.rekey_children(h.now));
    h.run_for(LIMIT);
    no_failure(&h);
    let new_in = one_pair(&h);
    assert_ne!(new_in, old_in);
    let req = fragments_from(&h, before, true);
    let resp = fragments_from(&h, before, false);
    assert!(
        req.len() >= 2 && !resp.is_empty(),
        "{} {}",
        req.len(),
        resp.len()
    );
    for (_, b) in &h.log[before..] {
        assert!(b.len() <= max);
    }
}

#[test]
fn lost_request_fragment_resends_all_fragments() {
    // Datagram 3 is the IKE_AUTH request's second fragment.
    let faults = Faults {
        drop: [3].into(),
        ..Faults::default()
    };
    let h = established(small(client()), small(gateway()), faults);
    let (si, sr) = (h.init.stats(), h.resp.stats());
    assert_eq!(si.retransmitted, 1);
    // The first transmission (one fragment lost) and the retransmission, back to back.
    let twice = h.log[2..]
        .iter()
        .take_while(|(to_resp, _)| *to_resp)
        .count();
    let n = twice / 2;
    assert!(n >= 2 && twice == 2 * n, "{twice}");
    // The retransmission is the same fragments again, byte for byte.
    let first: Vec<_> = h.log[2..2 + n].iter().map(|(_, b)| b.clone()).collect();
    let again: Vec<_> = h.log[2 + n..2 + 2 * n]
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert_eq!(first, again);
    assert_eq!(si.fragments_sent, 2 * n as u64);
    // The responder got all but fragment 2 the first time; of the retransmission, fragment
    // 1 (a duplicate) and fragment 2, which completed the message; the rest then belong to
    // an answered request and are ignored (only a fragment 1 would be answered).
    assert_eq!(sr.fragments_received, n as u64 - 1 + 2);
    assert_eq!(sr.fragments_dropped, 1);
    assert_eq!(sr.answered_from_cache, 0);
}

#[test]
fn lost_response_fragment_is_answered_once_from_the_cache() {
    let mut h = Harness::new(small(client()), small(gateway()), Faults::default());
    // Find how many fragments the IKE_AUTH request has with a clean run first.
    h.run(LIMIT);
    let n = fragments_from(&h, 2, true).len();
    // Drop the IKE_AUTH response's last fragment.
    let resp_frags = fragments_from(&h, 2, false).len();
    let faults = Faults {
        drop: [2 + n + resp_frags - 1].into(),
        ..Faults::default()
    };
    let h = established(small(client()), small(gateway()), faults);
    let (si, sr) = (h.init.stats(), h.resp.stats());
    assert_eq!(si.retransmitted, 1);
    // All n request fragments came again, but only fragment 1 made the responder resend
    // its (whole, fragmented) response.
    assert_eq!(sr.answered_from_cache, 1);
    assert_eq!(sr.fragments_sent, 2 * resp_frags as u64);
    assert_eq!(si.fragments_sent, 2 * n as u64);
    assert_eq!(h.sent, 2 + 2 * n + 2 * resp_frags);
}

#[test]
fn lost_fragment_of_create_child_sa_is_recovered() {
    let mut h = established(small(client()), small(gateway()), Faults::default());
    let old_in = one_pair(&h);
    // Lose the second fragment of the rekey request.
    let start = h.sent;
    h.faults.drop.insert(start + 1);
    assert!(h.init.rekey_children(h.now));
    h.run_for(LIMIT);
    no_failure(&h);
    let new_in = one_pair(&h);
    assert_ne!(new_in, old_in);
    assert!(h.init.stats().retransmitted >= 1);
}

/// Moves every datagram `from` has queued to `to`, in the order `order` makes of them.
fn deliver(
    now: std::time::Instant,
    from: &mut IkeSa,
    to: &mut IkeSa,
    order: impl Fn(Vec<Transmit>) -> Vec<Transmit>,
) -> usize {
    let mut ts = Vec::new();
    while let Some(t) = from.poll_transmit() {
        ts.push(t);
    }
    let n = ts.len();
    for t in order(ts) {
        to.handle_datagram(now, t.remote, t.local, &t.bytes);
    }
    n
}

#[test]
fn reordered_and_duplicated_fragments() {
    let now = std::time::Instant::now();
    let mut init = IkeSa::initiate(small(client()), now, A, B).unwrap();
    let mut resp = IkeSa::respond(small(gateway()));
    assert_eq!(deliver(now, &mut init, &mut resp, |t| t), 1);
    assert_eq!(deliver(now, &mut resp, &mut init, |t| t), 1);
    // The IKE_AUTH request's fragments backwards, the last one twice in a row.
    let n = deliver(now, &mut init, &mut resp, |mut t| {
        t.reverse();
        let last = t[0].clone();
        t.insert(1, last);
        t
    });
    assert!(n >= 2);
    assert!(resp.is_established());
    // The response's fragments: last first, then the rest in order.
    let m = deliver(now, &mut resp, &mut init, |mut t| {
        t.rotate_right(1);
        t
    });
    assert!(m >= 2);
    assert!(init.is_established());
    assert_eq!(resp.stats().fragments_dropped, 1);
    assert_eq!(resp.stats().fragments_received, n as u64 + 1);
    assert_eq!(init.stats().fragments_received, m as u64);
    assert_eq!(init.spis(), resp.spis());
}

#[test]
fn forged_fragment_is_dropped_and_the_sa_survives() {
    let mut h = established(small(client()), small(gateway()), Faults::default());
    let old_in = one_pair(&h);
    // A genuine later fragment of the already answered IKE_AUTH request: ignored, not
    // answered (only fragment 1 of a retransmission is).
    let frag = fragments_from(&h, 2, true)[1].clone();
    h.resp.handle_datagram(h.now, B, A, &frag);
    assert_eq!(h.resp.poll_transmit(), None);
    // A child rekey whose request fragments reach the responder after a forged copy of
    // one of them.
    assert!(h.init.rekey_children(h.now));
    let mut ts = Vec::new();
    while let Some(t) = h.init.poll_transmit() {
        ts.push(t);
    }
    assert!(ts.len() >= 2);
    let mut forged = ts[1].bytes.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0x80;
    let before = h.resp.stats();
    h.resp.handle_datagram(h.now, B, A, &forged);
    let after = h.resp.stats();
    assert_eq!(after.integrity, before.integrity + 1);
    assert_eq!(after.fragments_received, before.fragments_received);
    assert!(h.resp.is_established());
    for t in ts {
        h.resp.handle_datagram(h.now, t.remote, t.local, &t.bytes);
    }
    h.run_for(LIMIT);
    no_failure(&h);
    assert_ne!(one_pair(&h), old_in);
    assert_eq!(h.resp.stats().integrity, before.integrity + 1);
}

#[test]
fn no_fragments_with_a_peer_without_fragmentation() {
    let mut g = small(gateway());
    g.fragmentation = false;
    let h = established(small(client()), g, Faults::default());
    assert!(!info(&h.init_events).fragmentation);
    assert!(!info(&h.resp_events).fragmentation);
    assert_eq!(h.sent, 4, "IKE_AUTH goes whole");
    assert!(h.log.iter().all(|(_, b)| !is_fragment(b)));
    assert!(h.log[2].1.len() > max_message_len(SIZE, B));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Random SKF messages with the established SA's SPIs, as requests or responses of
    /// nearby message IDs, never panic, never authenticate and never end the SA.
    #[test]
    fn random_skf_messages_never_hurt_an_established_sa(
        msgs in proptest::collection::vec(
            (0u32..4, proptest::prelude::any::<bool>(), 1u16..6, 1u16..6,
             proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)),
            1..20),
    ) {
        use crate::wire::{ExchangeType, Flags, Header, PayloadType, SkfPayload};
        let mut h = established(small(client()), small(gateway()), Faults::default());
        let (spi_i, spi_r) = h.resp.spis().unwrap();
        let before = h.resp.stats();
        for (id, response, a, b, data) in msgs {
            let flags = if response { Flags::INITIATOR | Flags::RESPONSE } else { Flags::INITIATOR };
            let m = Message {
                header: Header {
                    spi_i,
                    spi_r,
                    minor_version: 0,
                    exchange_type: ExchangeType::CreateChildSa,
                    flags,
                    message_id: id,
                },
                payloads: vec![Payload::Skf(SkfPayload {
                    first_inner: PayloadType::Notify,
                    fragment_number: a.min(b),
                    total_fragments: a.max(b),
                    data,
                })],
            };
            h.resp.handle_datagram(h.now, B, A, &m.to_bytes());
        }
        proptest::prop_assert!(h.resp.is_established());
        let after = h.resp.stats();
        proptest::prop_assert_eq!(after.fragments_received, before.fragments_received);
        proptest::prop_assert_eq!(after.fragments_dropped, before.fragments_dropped);
        h.run_for(std::time::Duration::from_secs(1));
        no_failure(&h);
        one_pair(&h);
    }
}
