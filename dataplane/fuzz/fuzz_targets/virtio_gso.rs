//! The virtio-net header and the GSO splitter (`offload::GsoSplit`) over what a TUN hands
//! over: arbitrary bytes are a header and a packet, refused or split; a plan that was
//! accepted writes every segment within its stated lengths, never panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_dataplane::offload::{GsoSplit, MAX_IP_PACKET, VirtioNetHdr, gso_split};

fuzz_target!(|data: &[u8]| {
    let Ok(hdr) = VirtioNetHdr::parse(data) else {
        assert!(data.len() < VirtioNetHdr::LEN);
        return;
    };
    assert_eq!(hdr.to_bytes()[..], data[..VirtioNetHdr::LEN]);
    let mut again = [0u8; VirtioNetHdr::LEN];
    hdr.emit(&mut again).unwrap();
    assert_eq!(VirtioNetHdr::parse(&again), Ok(hdr));
    let pkt = &data[VirtioNetHdr::LEN..];
    let Ok(plan) = GsoSplit::new(&hdr, pkt) else {
        return;
    };
    let max = plan.max_segment_len();
    assert!(max <= MAX_IP_PACKET);
    assert!(plan.segments() >= 1);
    let mut buf = vec![0u8; max];
    let mut total = 0;
    for i in 0..plan.segments() {
        let n = plan
            .write_segment(i, &mut buf)
            .expect("an accepted plan writes its segments");
        assert_eq!(n, plan.segment_len(i));
        assert!(n <= max);
        total += n;
    }
    assert_eq!(plan.segment_len(plan.segments()), 0);
    // The one-call form agrees, and refuses a scratch buffer one byte short.
    let mut seen = 0;
    let n = gso_split(&hdr, pkt, &mut buf, |s| seen += s.len()).expect("same plan");
    assert_eq!((n, seen), (plan.segments(), total));
    if max > 0 {
        assert!(gso_split(&hdr, pkt, &mut buf[..max - 1], |_| ()).is_err());
    }
});
