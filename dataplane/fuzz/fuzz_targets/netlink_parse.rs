//! rtnetlink parsing of arbitrary datagrams, never a panic: the interface monitor's
//! (`netlink::apply_datagram`: applied or counted as malformed, and the snapshot it builds
//! diffs against an empty one into exactly one change per link and per address), and the
//! request side's (`netlink::parse_answer`: the acknowledgement, the kernel's errno and its
//! extended-ack text, the end of a dump, messages of other sequence numbers skipped; and
//! `netlink::parse_route`, the route dump's hand-written reading, on every message).
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_dataplane::netlink::{
    MonitorCounters, Snapshot, apply_datagram, diff, parse_answer, parse_route,
};

fuzz_target!(|data: &[u8]| {
    let mut snap = Snapshot::default();
    let mut c = MonitorCounters::default();
    apply_datagram(data, &mut snap, &mut c);
    assert!(c.messages + c.parse_errors <= data.len() as u64 / 16 + 1);
    let mut out = Vec::new();
    diff(&Snapshot::default(), &snap, &mut out);
    let addrs: usize = snap.links.values().map(|l| l.addrs.len()).sum();
    assert_eq!(out.len(), snap.links.len() + addrs);

    // The seeds answer request 1 (as the kernel numbers nothing, any number is as good).
    let mut n = 0;
    if let Some(text) = parse_answer(data, 1, &mut n) {
        assert!(text.len() <= 1024, "bounded: {text:?}");
        assert!(!text.chars().any(char::is_control), "{text:?}");
    }
    assert!(n <= data.len() / 16);
    // Each message as a route.
    let mut off = 0;
    while data.len() >= off + 16 {
        let len = u32::from_ne_bytes([data[off], data[off + 1], data[off + 2], data[off + 3]]);
        let end = (off + len as usize).min(data.len());
        if let Some(r) = parse_route(&data[off..end]) {
            assert!(r.dst.len <= if r.dst.addr.is_ipv4() { 32 } else { 128 });
        }
        if len < 16 {
            break;
        }
        off += (len as usize + 3) & !3;
    }
});
