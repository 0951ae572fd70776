//! The interface monitor's parsing of rtnetlink datagrams (`netlink::apply_datagram`):
//! arbitrary bytes are applied or counted as malformed, never a panic, and the snapshot they
//! build diffs against an empty one into exactly one change per link and per address.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_dataplane::netlink::{MonitorCounters, Snapshot, apply_datagram, diff};

fuzz_target!(|data: &[u8]| {
    let mut snap = Snapshot::default();
    let mut c = MonitorCounters::default();
    apply_datagram(data, &mut snap, &mut c);
    assert!(c.messages + c.parse_errors <= data.len() as u64 / 16 + 1);
    let mut out = Vec::new();
    diff(&Snapshot::default(), &snap, &mut out);
    let addrs: usize = snap.links.values().map(|l| l.addrs.len()).sum();
    assert_eq!(out.len(), snap.links.len() + addrs);
});
