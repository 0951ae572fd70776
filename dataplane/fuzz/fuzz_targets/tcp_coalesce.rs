//! The TCP coalescer (`offload::TcpCoalescer`, GRO towards the TUN) on batches of arbitrary
//! packets, optionally with their IPv4 and TCP checksums made valid so that mutated
//! segments still merge. Never a panic; the indices it returns are in order and in range;
//! every super-packet it builds is one the GSO splitter accepts, and splitting the output
//! gives back as many packets and bytes as went in.
//!
//! Input: a capacity byte, then records `flags | len (u16 le) | packet`; flags bit 0 fixes
//! the checksums.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_dataplane::offload::{GsoSplit, TcpCoalescer, VirtioNetHdr};

const OFFSET: usize = 16;

fn csum(data: &[u8], mut sum: u64) -> u16 {
    for c in data.chunks(2) {
        sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Makes the IPv4 header and TCP checksums of `p` valid, where it has them.
fn fix_checksums(p: &mut [u8]) {
    let Some(&first) = p.first() else { return };
    let (l3, addrs) = match first >> 4 {
        4 if p.len() >= 20 => {
            let ihl = usize::from(first & 0xf) * 4;
            if ihl < 20 || p.len() < ihl {
                return;
            }
            p[10..12].fill(0);
            let c = csum(&p[..ihl], 0);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            if p[9] != 6 {
                return;
            }
            (ihl, 12..20)
        }
        6 if p.len() >= 40 && p[6] == 6 => (40, 8..40),
        _ => return,
    };
    if p.len() < l3 + 20 {
        return;
    }
    let mut pseudo = 6u64 + (p.len() - l3) as u64;
    for c in p[addrs].chunks(2) {
        pseudo += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    p[l3 + 16..l3 + 18].fill(0);
    let c = csum(&p[l3..], pseudo);
    p[l3 + 16..l3 + 18].copy_from_slice(&c.to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    let [cap, rest @ ..] = data else {
        return;
    };
    let mut rest: &[u8] = rest;
    let extra = if cap & 1 != 0 {
        65_535
    } else {
        usize::from(*cap) * 16
    };
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    while let [flags, lo, hi, tail @ ..] = rest {
        if bufs.len() == 64 {
            break;
        }
        let n = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (pkt, tail) = tail.split_at(n);
        rest = tail;
        let mut b = Vec::with_capacity(OFFSET + n + extra);
        b.resize(OFFSET, 0xee);
        b.extend_from_slice(pkt);
        if flags & 1 != 0 {
            fix_checksums(&mut b[OFFSET..]);
        }
        bufs.push(b);
    }
    let in_bytes: usize = bufs.iter().map(|b| b.len() - OFFSET).sum();
    let count = bufs.len();
    let mut gro = TcpCoalescer::with_capacity(count);
    let out = gro
        .coalesce(&mut bufs, OFFSET)
        .expect("buffers are long enough")
        .to_vec();
    assert!(out.windows(2).all(|w| w[0] < w[1]), "{out:?}");
    assert!(out.iter().all(|&i| i < count));
    let (mut segments, mut bytes) = (0, 0);
    for &i in &out {
        let b = &bufs[i];
        let hdr = VirtioNetHdr::parse(&b[OFFSET - VirtioNetHdr::LEN..]).unwrap();
        let pkt = &b[OFFSET..];
        if !hdr.is_gso() {
            segments += 1;
            bytes += pkt.len();
            continue;
        }
        let plan = GsoSplit::new(&hdr, pkt).expect("a built super-packet splits");
        for s in 0..plan.segments() {
            bytes += plan.segment_len(s);
        }
        segments += plan.segments();
    }
    assert_eq!(segments, count, "packets in and out");
    assert_eq!(bytes, in_bytes, "bytes in and out");
});
