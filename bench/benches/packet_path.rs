//! The IP header work on the packet path, apart from the AEAD: what the engine's workers do to
//! a packet before it is sealed and after it is opened.
//!
//! - `gso_split/tcp4_64k`: a 64 KiB TCP super-packet from the TUN (TSO) cut into 1400-byte
//!   segments, each with its IPv4 length, ID and checksum and its TCP checksum rewritten;
//! - `gro/tcp4_46x1400`: 46 in-order 1400-byte TCP segments coalesced into one super-packet
//!   (every segment's TCP checksum verified, the IP header and the partial checksum rebuilt);
//! - `transport/seal_open/1400`: transport-mode ESP seal and open of a 1400-byte IPv4 packet
//!   (the IP header parsed, moved, rewritten with protocol 50 and back), AEAD included, next
//!   to `tunnel/seal_open/1400` for the same packet in tunnel mode.
//!
//! Every figure covers code that parses or builds IP headers; compare a change to that code
//! against its parent in one session.

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mifsec_bench::{HEAD, inner_ipv4};
use mifsec_dataplane::aead::{Backend, Cipher};
use mifsec_dataplane::esp::{InboundSa, Mode, OutboundSa, SaConfig};
use mifsec_dataplane::offload::{
    GsoSplit, TcpCoalescer, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VirtioNetHdr,
};

const MSS: usize = 1400;

/// RFC 1071 sum, folded (a reference of the bench's own, so that it measures nothing it builds).
fn fold(mut s: u64) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

fn sum(data: &[u8]) -> u64 {
    data.chunks(2)
        .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

/// An IPv4/TCP packet with `data`; `partial`: the TCP checksum field holds the pseudo-header
/// sum only (as a TSO super-packet from the kernel), else the full checksum.
fn tcp4(seq: u32, data: &[u8], partial: bool) -> Vec<u8> {
    let total = 40 + data.len();
    let mut p = vec![0u8; 40];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = 6;
    p[12..16].copy_from_slice(&[10, 0, 0, 1]);
    p[16..20].copy_from_slice(&[10, 0, 0, 2]);
    let c = !fold(sum(&p[..20]));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p[20..22].copy_from_slice(&40000u16.to_be_bytes());
    p[22..24].copy_from_slice(&443u16.to_be_bytes());
    p[24..28].copy_from_slice(&seq.to_be_bytes());
    p[28..32].copy_from_slice(&7u32.to_be_bytes());
    p[32] = 5 << 4;
    p[33] = 0x10;
    p[34..36].copy_from_slice(&0xffffu16.to_be_bytes());
    p.extend_from_slice(data);
    let pseudo = sum(&p[12..20]) + 6 + (total - 20) as u64;
    let c = if partial {
        fold(pseudo)
    } else {
        !fold(pseudo + sum(&p[20..]))
    };
    p[36..38].copy_from_slice(&c.to_be_bytes());
    p
}

fn offloads(c: &mut Criterion) {
    let data: Vec<u8> = (0..65_535 - 40).map(|i| (i * 7) as u8).collect();
    let sup = tcp4(1000, &data, true);
    let hdr = VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_TCPV4,
        hdr_len: 40,
        gso_size: MSS as u16,
        csum_start: 20,
        csum_offset: 16,
    };
    let mut out = vec![0u8; 2048];
    let mut g = c.benchmark_group("gso_split");
    g.throughput(Throughput::Bytes(sup.len() as u64));
    g.bench_function("tcp4_64k", |b| {
        b.iter(|| {
            let split = GsoSplit::new(&hdr, black_box(&sup)).unwrap();
            for i in 0..split.segments() {
                black_box(split.write_segment(i, &mut out).unwrap());
            }
        })
    });
    g.finish();

    let segs: Vec<Vec<u8>> = (0..46u32)
        .map(|i| {
            let at = i as usize * MSS;
            tcp4(1000 + at as u32, &data[at..at + MSS], false)
        })
        .collect();
    let mut gro = TcpCoalescer::with_capacity(64);
    let mut g = c.benchmark_group("gro");
    g.throughput(Throughput::Bytes((46 * MSS) as u64));
    g.bench_function("tcp4_46x1400", |b| {
        b.iter_batched_ref(
            || {
                segs.iter()
                    .map(|s| {
                        let mut v = Vec::with_capacity(16 + 65_535);
                        v.resize(16, 0);
                        v.extend_from_slice(s);
                        v
                    })
                    .collect::<Vec<_>>()
            },
            |bufs| {
                let n = gro.coalesce(bufs, 16).unwrap().len();
                assert_eq!(n, 1);
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn modes(c: &mut Criterion) {
    let size = 1400;
    let keymat: Vec<u8> = (0..20u8).collect();
    let pkt = inner_ipv4(size);
    let mut buf = vec![0u8; HEAD + size + OutboundSa::TAILROOM];
    for (name, mode) in [("tunnel", Mode::Tunnel), ("transport", Mode::Transport)] {
        let cfg = SaConfig {
            spi: 0x1000,
            cipher: Cipher::Aes128Gcm,
            backend: Backend::Ring,
            keymat: &keymat,
            esn: false,
            mode,
            replay_window: 4096,
        };
        let out = OutboundSa::new(&cfg, None).unwrap();
        let inb = InboundSa::new(&cfg).unwrap();
        let mut g = c.benchmark_group(format!("{name}/seal_open"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("{size}"), |b| {
            b.iter(|| {
                buf[HEAD..HEAD + size].copy_from_slice(&pkt);
                let s = out.seal(&mut buf, HEAD..HEAD + size).unwrap();
                black_box(inb.open(&mut buf, s.range).unwrap())
            })
        });
        g.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = offloads, modes
}
criterion_main!(benches);
