//! TUN device tests against the real kernel, each in a fresh network namespace.
//!
//! Needs root (CAP_NET_ADMIN, `ip netns`, /dev/net/tun). Without root these tests FAIL on
//! purpose; `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` reports them as ignored.
#![cfg(target_os = "linux")]

use mifsec_testkit::{Netns, ip, require_root, unique_suffix};

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::time::{Duration, Instant};

use mifsec_dataplane::offload::{
    GsoSplit, TcpCoalescer, VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_UDP_L4, VIRTIO_NET_HDR_LEN, VirtioNetHdr,
};
use mifsec_dataplane::tun::{Tun, TunConfig, TunQueue};

/// A failure timeout only (generous for a loaded machine): nothing waits for it to pass.
const TIMEOUT: Duration = Duration::from_secs(10);
const LOCAL: Ipv4Addr = Ipv4Addr::new(10, 99, 7, 1);
const PEER: Ipv4Addr = Ipv4Addr::new(10, 99, 7, 2);

// ---- root / namespace plumbing -----------------------------------------------------------

/// A fresh network namespace, deleted on drop.
fn netns() -> Netns {
    Netns::new(format!("mifsec-tun-{}", unique_suffix()))
}

/// A TUN name unique to namespace `ns` (≤ 15 bytes).
fn tun_name(ns: &Netns) -> String {
    format!("mift{}", ns.name.rsplit('-').next().unwrap_or("0"))
}

/// Gives TUN `dev` in `ns` the address LOCAL/24.
fn add_local(ns: &Netns, dev: &str) {
    ip(&[
        "-n",
        &ns.name,
        "addr",
        "add",
        &format!("{LOCAL}/24"),
        "dev",
        dev,
    ]);
}

/// Opens a 2-queue TUN with offloads in the current thread's namespace and gives it
/// LOCAL/24.
fn open_tun(ns: &Netns) -> Tun {
    let name = tun_name(ns);
    let tun = Tun::open(&TunConfig {
        name: name.clone(),
        queues: 2,
        mtu: 1420,
        offloads: true,
    })
    .expect("open TUN");
    assert_eq!(tun.name(), name);
    assert_eq!(tun.queues().len(), 2);
    assert_eq!(tun.mtu(), 1420);
    add_local(ns, &name);
    tun
}

// ---- packets ----------------------------------------------------------------------------

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        acc += u32::from(c[0]) << 8 | c.get(1).map_or(0, |&b| u32::from(b));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

fn pseudo(pkt: &[u8], proto: u8, l4_len: usize) -> u32 {
    sum16(&pkt[12..20], u32::from(proto) + l4_len as u32)
}

/// Builds an IPv4 packet around `l4` (whose checksum field is at `csum_at`, relative to l4;
/// `partial`: leave only the pseudo-header sum there, as with NEEDS_CSUM).
fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    l4: &[u8],
    csum_at: Option<usize>,
    partial: bool,
) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = vec![0u8; 20];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[4..6].copy_from_slice(&0x4242u16.to_be_bytes());
    p[6] = 0x40;
    p[8] = 64;
    p[9] = proto;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    let c = !fold(sum16(&p, 0));
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    if let Some(at) = csum_at {
        let at = 20 + at;
        p[at..at + 2].copy_from_slice(&[0, 0]);
        let ps = if proto == 1 {
            0
        } else {
            pseudo(&p, proto, l4.len())
        };
        let c = if partial {
            fold(ps)
        } else {
            !fold(sum16(&p[20..], ps))
        };
        p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    }
    p
}

fn udp(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    data: &[u8],
    partial: bool,
) -> Vec<u8> {
    let mut u = Vec::with_capacity(8 + data.len());
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    ipv4(src, dst, 17, &u, Some(6), partial)
}

#[allow(clippy::too_many_arguments)]
fn tcp(sport: u16, dport: u16, seq: u32, ack: u32, flags: u8, opts: &[u8], data: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + opts.len() + data.len());
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push((((20 + opts.len()) / 4) as u8) << 4);
    t.push(flags);
    t.extend_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 0]);
    t.extend_from_slice(opts);
    t.extend_from_slice(data);
    ipv4(PEER, LOCAL, 6, &t, Some(16), false)
}

/// True if the IPv4 header and L4 checksums of `p` verify.
fn checksums_ok(p: &[u8]) -> bool {
    let l3 = usize::from(p[0] & 0xf) * 4;
    let ps = if p[9] == 1 {
        0
    } else {
        pseudo(p, p[9], p.len() - l3)
    };
    fold(sum16(&p[..l3], 0)) == 0xffff && fold(sum16(&p[l3..], ps)) == 0xffff
}

fn with_vnet(hdr: VirtioNetHdr, pkt: &[u8]) -> Vec<u8> {
    let mut b = hdr.to_bytes().to_vec();
    b.extend_from_slice(pkt);
    b
}

/// Reads packets from any queue until `want` accepts one (returning what it maps it to), or
/// the deadline passes. Non-matching packets (IPv6 router solicitations, ...) are skipped.
fn read_until<T>(
    queues: &[TunQueue],
    mut want: impl FnMut(&VirtioNetHdr, &[u8]) -> Option<T>,
) -> T {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = vec![0u8; VIRTIO_NET_HDR_LEN + 65_535];
    loop {
        let mut idle = true;
        for q in queues {
            match q.read(&mut buf) {
                Ok(n) => {
                    idle = false;
                    assert!(n >= VIRTIO_NET_HDR_LEN, "short read {n}");
                    let hdr = VirtioNetHdr::parse(&buf).unwrap();
                    if let Some(t) = want(&hdr, &buf[VIRTIO_NET_HDR_LEN..n]) {
                        return t;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => panic!("TUN read: {e}"),
            }
        }
        assert!(Instant::now() < deadline, "timed out waiting for a packet");
        if idle {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

fn is_v4_to(p: &[u8], proto: u8, dst: Ipv4Addr, dport: Option<u16>) -> bool {
    p.len() >= 28
        && p[0] >> 4 == 4
        && p[9] == proto
        && p[16..20] == dst.octets()
        && dport.is_none_or(|d| p[22..24] == d.to_be_bytes())
}

// ---- tests ------------------------------------------------------------------------------

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn udp_from_namespace_is_read_from_a_queue() {
    require_root();
    let ns = netns();
    ns.run(|| {
        let tun = open_tun(&ns);
        let off = tun.offloads();
        let _ = writeln!(io::stderr(), "TUN offloads on this kernel: {off}");
        assert!(
            off.vnet_hdr && off.csum && off.tso4 && off.tso6,
            "offloads: {off}"
        );
        assert!(tun.queues().iter().all(|q| q.vnet_hdr()));

        let sock = UdpSocket::bind(SocketAddrV4::new(LOCAL, 0)).unwrap();
        let sport = sock.local_addr().unwrap().port();
        let msg = b"hello through the TUN";
        sock.send_to(msg, SocketAddrV4::new(PEER, 9999)).unwrap();
        let (hdr, seg) = read_until(tun.queues(), |hdr, p| {
            is_v4_to(p, 17, PEER, Some(9999)).then(|| {
                // Complete a partial checksum if the kernel left one (NEEDS_CSUM).
                let plan = GsoSplit::new(hdr, p).expect("valid virtio header");
                assert_eq!(plan.segments(), 1);
                let mut seg = vec![0u8; plan.max_segment_len()];
                plan.write_segment(0, &mut seg).unwrap();
                (*hdr, seg)
            })
        });
        assert!(!hdr.is_gso());
        if hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0 {
            assert_eq!((hdr.csum_start, hdr.csum_offset), (20, 6));
        }
        let _ = writeln!(io::stderr(), "UDP from the namespace came with {hdr:?}");
        assert!(checksums_ok(&seg), "bad checksum in {seg:02x?}");
        assert_eq!(seg[12..16], LOCAL.octets());
        assert_eq!(seg[20..22], sport.to_be_bytes());
        assert_eq!(&seg[28..], msg);
    });
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn written_packets_reach_the_kernel() {
    require_root();
    let ns = netns();
    ns.run(|| {
        let tun = open_tun(&ns);
        let q = tun.queues();
        let sock = UdpSocket::bind(SocketAddrV4::new(LOCAL, 7777)).unwrap();
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        let mut buf = [0u8; 2048];

        // A plain UDP datagram with a full checksum and a zero virtio header.
        let pkt = udp(PEER, 5555, LOCAL, 7777, b"written to queue 0", false);
        assert!(checksums_ok(&pkt));
        let frame = with_vnet(VirtioNetHdr::default(), &pkt);
        assert_eq!(q[0].write(&frame).unwrap(), frame.len());
        let (n, from) = sock
            .recv_from(&mut buf)
            .expect("datagram written to the TUN");
        assert_eq!(&buf[..n], b"written to queue 0");
        assert_eq!(from, SocketAddrV4::new(PEER, 5555).into());

        // A USO super-packet: three 500-byte datagrams in one write on queue 1.
        if tun.offloads().uso4 {
            let data: Vec<u8> = (0..1500u32).map(|i| (i % 251) as u8).collect();
            let sup = udp(PEER, 5556, LOCAL, 7777, &data, true);
            let hdr = VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: VIRTIO_NET_HDR_GSO_UDP_L4,
                hdr_len: 28,
                gso_size: 500,
                csum_start: 20,
                csum_offset: 6,
            };
            let frame = with_vnet(hdr, &sup);
            assert_eq!(q[1].write(&frame).unwrap(), frame.len());
            for chunk in data.chunks(500) {
                let n = sock.recv(&mut buf).expect("USO segment");
                assert_eq!(&buf[..n], chunk);
            }
        }

        // An ICMP echo request to our own address comes back as a reply on the TUN.
        let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34, 0, 1];
        icmp.extend_from_slice(b"ping payload");
        let c = !fold(sum16(&icmp, 0));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let pkt = ipv4(PEER, LOCAL, 1, &icmp, None, false);
        q[1].write(&with_vnet(VirtioNetHdr::default(), &pkt))
            .unwrap();
        read_until(q, |hdr, p| {
            (is_v4_to(p, 1, PEER, None) && p[20] == 0 && p[24..26] == [0x12, 0x34]).then(|| {
                let plan = GsoSplit::new(hdr, p).unwrap();
                let mut seg = vec![0u8; plan.max_segment_len()];
                plan.write_segment(0, &mut seg).unwrap();
                assert!(checksums_ok(&seg));
                assert_eq!(&seg[28..], b"ping payload");
            })
        });
    });
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn plain_tun_without_offloads() {
    require_root();
    let ns = netns();
    ns.run(|| {
        // A name template: the kernel picks the number.
        let tun = Tun::open(&TunConfig {
            name: "mifplain%d".into(),
            queues: 3,
            mtu: 0,
            offloads: false,
        })
        .expect("open plain TUN");
        assert_eq!(tun.name(), "mifplain0");
        assert_eq!(tun.offloads().to_string(), "none");
        assert_eq!(tun.mtu(), 1500);
        let queues = tun.into_queues();
        assert_eq!(queues.len(), 3);
        assert!(queues.iter().all(|q| !q.vnet_hdr()));
        add_local(&ns, "mifplain0");

        let sock = UdpSocket::bind(SocketAddrV4::new(LOCAL, 0)).unwrap();
        sock.send_to(b"plain", SocketAddrV4::new(PEER, 9999))
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let mut buf = [0u8; 2048];
        'outer: loop {
            for q in &queues {
                match q.read(&mut buf) {
                    // No virtio header: the IP packet starts at byte 0, checksum complete.
                    Ok(n) if is_v4_to(&buf[..n], 17, PEER, Some(9999)) => {
                        assert!(checksums_ok(&buf[..n]));
                        assert_eq!(&buf[28..n], b"plain");
                        break 'outer;
                    }
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("TUN read: {e}"),
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for the datagram"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let rx = UdpSocket::bind(SocketAddrV4::new(LOCAL, 7777)).unwrap();
        rx.set_read_timeout(Some(TIMEOUT)).unwrap();
        let pkt = udp(PEER, 5555, LOCAL, 7777, b"plain write", false);
        assert_eq!(queues[2].write(&pkt).unwrap(), pkt.len());
        let n = rx
            .recv(&mut buf)
            .expect("datagram written to the plain TUN");
        assert_eq!(&buf[..n], b"plain write");
    });
}

/// Plays the TCP peer by hand: handshake, then a GRO-coalesced super-packet towards the
/// kernel, then a first flight from the kernel, read as TSO super-packets and split.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn tcp_gro_write_and_tso_read_with_the_kernel() {
    require_root();
    const ACK: u8 = 0x10;
    const PSH: u8 = 0x08;
    const SYN: u8 = 0x02;
    const MSS: usize = 1360;
    let ns = netns();
    ns.run(|| {
        let tun = open_tun(&ns);
        let q = tun.queues();
        let listener = TcpListener::bind(SocketAddrV4::new(LOCAL, 8080)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let (sport, isn) = (40_000u16, 1_000u32);

        // Handshake. SYN with an MSS option.
        let mss_opt = [2, 4, (MSS >> 8) as u8, MSS as u8];
        let syn = tcp(sport, 8080, isn, 0, SYN, &mss_opt, &[]);
        q[0].write(&with_vnet(VirtioNetHdr::default(), &syn))
            .unwrap();
        let server_isn = read_until(q, |_, p| {
            (is_v4_to(p, 6, PEER, Some(sport)) && p[33] == SYN | ACK).then(|| {
                assert_eq!(p[28..32], (isn + 1).to_be_bytes());
                u32::from_be_bytes([p[24], p[25], p[26], p[27]])
            })
        });
        let (mut seq, ack) = (isn + 1, server_isn.wrapping_add(1));
        let ack_pkt = tcp(sport, 8080, seq, ack, ACK, &[], &[]);
        q[0].write(&with_vnet(VirtioNetHdr::default(), &ack_pkt))
            .unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let mut stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "accept timed out");
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => panic!("accept: {e}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();

        // GRO: ten segments coalesced into one super-packet, written in one go.
        let data: Vec<u8> = (0..10 * MSS).map(|i| (i * 7 % 256) as u8).collect();
        let mut bufs: Vec<Vec<u8>> = data
            .chunks(MSS)
            .enumerate()
            .map(|(i, chunk)| {
                let flags = if i == 9 { ACK | PSH } else { ACK };
                let p = tcp(sport, 8080, seq + (i * MSS) as u32, ack, flags, &[], chunk);
                let mut b = Vec::with_capacity(VIRTIO_NET_HDR_LEN + 65_535);
                b.resize(VIRTIO_NET_HDR_LEN, 0);
                b.extend_from_slice(&p);
                b
            })
            .collect();
        let mut gro = TcpCoalescer::new();
        let out = gro
            .coalesce(&mut bufs, VIRTIO_NET_HDR_LEN)
            .unwrap()
            .to_vec();
        assert_eq!(out, [0]);
        let hdr = VirtioNetHdr::parse(&bufs[0]).unwrap();
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(usize::from(hdr.gso_size), MSS);
        assert_eq!(q[1].write(&bufs[0]).unwrap(), bufs[0].len());
        let mut got = vec![0u8; data.len()];
        stream
            .read_exact(&mut got)
            .expect("server reads the coalesced data");
        assert_eq!(got, data);
        seq += data.len() as u32;

        // TSO: the kernel's first flight towards us, split back into MSS segments.
        let reply: Vec<u8> = (0..20_000u32).map(|i| (i % 253) as u8).collect();
        stream.write_all(&reply).unwrap();
        let mut received = Vec::new();
        let mut super_packets = 0;
        let mut scratch = vec![0u8; 65_535];
        while received.len() < 8 * MSS {
            read_until(q, |hdr, p| {
                if !is_v4_to(p, 6, PEER, Some(sport)) || p.len() == 40 {
                    return None; // other traffic, or a bare ACK
                }
                let plan = GsoSplit::new(hdr, p).expect("valid TSO packet");
                if hdr.gso_type == VIRTIO_NET_HDR_GSO_TCPV4 {
                    super_packets += 1;
                    assert!(plan.segments() > 1);
                }
                for i in 0..plan.segments() {
                    let n = plan.write_segment(i, &mut scratch).unwrap();
                    let s = &scratch[..n];
                    assert!(n <= 20 + 20 + MSS, "segment of {n} bytes exceeds the MSS");
                    assert!(checksums_ok(s), "segment {i} checksum");
                    let sseq = u32::from_be_bytes([s[24], s[25], s[26], s[27]]);
                    let expect = ack.wrapping_add(received.len() as u32);
                    assert_eq!(sseq, expect, "in-order data");
                    assert_eq!(s[28..32], seq.to_be_bytes());
                    received.extend_from_slice(&s[40..]);
                }
                Some(())
            });
        }
        assert_eq!(received, reply[..received.len()]);
        let _ = writeln!(
            io::stderr(),
            "kernel sent {} bytes in {super_packets} TSO super-packet(s)",
            received.len()
        );
        assert!(super_packets > 0, "no TSO super-packet seen");
    });
}
