//! Path probes (`path::Probe`, the payload of ESP dummy packets) and the path state they
//! update: arbitrary payloads parse or are refused, a parsed probe re-encodes to the same
//! bytes, and any answer times (late, early, reordered) keep the RTT figures sane.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_dataplane::path::{PathState, Probe};

fuzz_target!(|data: &[u8]| {
    if let Some(p) = Probe::parse(data) {
        let mut out = [0u8; Probe::LEN];
        p.emit(&mut out).unwrap();
        assert_eq!(Probe::parse(&out), Some(p));
        // Everything but the three reserved bytes comes back.
        assert_eq!(out[..5], data[..5]);
        assert_eq!(out[8..], data[8..Probe::LEN]);
    }
    assert!(Probe::parse(data).is_none() || data.len() >= Probe::LEN);
    // The rest drives one path's state: (sent, now) pairs of answered probes.
    let path = PathState::new(1, "p", "link", "198.18.0.1:4500".parse().unwrap(), 0);
    for rec in data.chunks_exact(16) {
        let sent = u64::from_le_bytes(rec[..8].try_into().unwrap());
        let now = u64::from_le_bytes(rec[8..].try_into().unwrap());
        path.probe_sent(sent);
        path.count_rx(64, now);
        path.probe_answered(sent, now);
        let (srtt, min) = (path.srtt_us(), path.min_rtt_us());
        assert!(srtt >= 1 && min >= 1);
        assert_eq!(path.queue_delay_us(), srtt.saturating_sub(min));
        assert!(path.usable());
    }
    let c = path.counters();
    assert_eq!(c.probes_sent, c.probes_answered);
});
