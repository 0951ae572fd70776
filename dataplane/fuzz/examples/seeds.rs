//! Writes the committed seed corpus of every dataplane fuzz target into `seeds/TARGET/`
//! (run by `scripts/fuzz-seeds.sh`): well-formed packets, headers and probes to mutate.

use std::fs;
use std::path::Path;

use mifsec_dataplane::aead::{Backend, Cipher};
use mifsec_dataplane::esp::{Mode, OutboundSa, SaConfig};
use mifsec_dataplane::offload::{
    VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_GSO_TCPV4,
    VIRTIO_NET_HDR_GSO_TCPV6, VIRTIO_NET_HDR_GSO_UDP_L4, VirtioNetHdr,
};
use mifsec_dataplane::path::{Probe, ProbeKind};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

fn csum(data: &[u8], mut sum: u64) -> u16 {
    for c in data.chunks(2) {
        sum += u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An IPv4 or IPv6 packet of protocol `proto` (6 TCP, 17 UDP) with valid checksums.
fn packet(v6: bool, proto: u8, seq: u32, flags: u8, payload: &[u8]) -> Vec<u8> {
    let l4_len = if proto == 6 { 20 } else { 8 } + payload.len();
    let mut p = Vec::new();
    if v6 {
        p.extend_from_slice(&[0x60, 0, 0, 0]);
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p.extend_from_slice(&[proto, 64]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    } else {
        p.extend_from_slice(&[0x45, 0]);
        p.extend_from_slice(&((20 + l4_len) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 1, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        let c = csum(&p[..20], 0);
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let l3 = p.len();
    p.extend_from_slice(&[0x1f, 0x90, 0xc3, 0x50]);
    if proto == 6 {
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&7u32.to_be_bytes());
        p.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0]);
    }
    p.extend_from_slice(payload);
    let (s, d) = if v6 {
        (8..24, 24..40)
    } else {
        (12..16, 16..20)
    };
    let mut pseudo = u64::from(proto) + l4_len as u64;
    for c in p[s].chunks(2).chain(p[d].chunks(2)) {
        pseudo += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    let at = l3 + if proto == 6 { 16 } else { 6 };
    let c = csum(&p[l3..], pseudo);
    p[at..at + 2].copy_from_slice(&c.to_be_bytes());
    p
}

fn with_hdr(hdr: VirtioNetHdr, pkt: &[u8]) -> Vec<u8> {
    let mut v = hdr.to_bytes().to_vec();
    v.extend_from_slice(pkt);
    v
}

/// Records for `tcp_coalesce`: flags (1: fix checksums), length, packet.
fn batch(pkts: &[Vec<u8>]) -> Vec<u8> {
    let mut v = vec![1u8];
    for p in pkts {
        v.push(1);
        v.extend_from_slice(&(p.len() as u16).to_le_bytes());
        v.extend_from_slice(p);
    }
    v
}

const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

fn main() {
    let data = [0xabu8; 3000];
    for (name, v6, gso, proto) in [
        ("tcp4", false, VIRTIO_NET_HDR_GSO_TCPV4, 6),
        ("tcp6", true, VIRTIO_NET_HDR_GSO_TCPV6, 6),
        ("udp4-l4", false, VIRTIO_NET_HDR_GSO_UDP_L4, 17),
    ] {
        let pkt = packet(v6, proto, 1, ACK | PSH, &data);
        let l3 = if v6 { 40 } else { 20 };
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: gso,
            hdr_len: (l3 + if proto == 6 { 20 } else { 8 }) as u16,
            gso_size: 1000,
            csum_start: l3 as u16,
            csum_offset: if proto == 6 { 16 } else { 6 },
        };
        write("virtio_gso", name, &with_hdr(hdr, &pkt));
    }
    let small = packet(false, 17, 0, 0, b"hello");
    let hdr = VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type: VIRTIO_NET_HDR_GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 20,
        csum_offset: 6,
    };
    write("virtio_gso", "csum-only", &with_hdr(hdr, &small));
    write(
        "virtio_gso",
        "plain",
        &with_hdr(VirtioNetHdr::default(), &small),
    );

    let seg = |v6: bool, i: u32, flags: u8| packet(v6, 6, 1 + 1000 * i, flags, &data[..1000]);
    write(
        "tcp_coalesce",
        "one-flow-v4",
        &batch(&[
            seg(false, 0, ACK),
            seg(false, 1, ACK),
            seg(false, 2, ACK | PSH),
        ]),
    );
    write(
        "tcp_coalesce",
        "one-flow-v6",
        &batch(&[seg(true, 0, ACK), seg(true, 1, ACK), seg(true, 2, ACK)]),
    );
    write(
        "tcp_coalesce",
        "mixed",
        &batch(&[
            seg(false, 0, ACK),
            seg(true, 0, ACK),
            small.clone(),
            seg(false, 1, ACK),
            seg(false, 2, 0x02),
            seg(true, 1, ACK),
        ]),
    );

    for (name, kind) in [("request", ProbeKind::Request), ("reply", ProbeKind::Reply)] {
        let mut b = vec![0u8; Probe::LEN];
        Probe {
            kind,
            path_id: 3,
            sent_ns: 1_000_000,
        }
        .emit(&mut b)
        .unwrap();
        // Then (sent, now) pairs: in order, late, answered before it was sent.
        for (s, n) in [(1_000_000u64, 3_000_000u64), (5, u64::MAX), (9_000_000, 1)] {
            b.extend_from_slice(&s.to_le_bytes());
            b.extend_from_slice(&n.to_le_bytes());
        }
        write("path_probe", name, &b);
    }

    // Reorder records: seq delta (i16 le), time step (0xff: expire), len.
    let rec = |d: i16, step: u8, len: u8| {
        let mut v = d.to_le_bytes().to_vec();
        v.extend_from_slice(&[step, len]);
        v
    };
    let mut r = vec![10u8];
    for (d, step, len) in [
        (1, 1, 1),
        (2, 1, 1),
        (-1, 1, 1),
        (3, 1, 0),
        (1, 0xff, 0),
        (5, 2, 1),
    ] {
        r.extend(rec(d, step, len));
    }
    write("reorder", "gaps", &r);
    let mut r = vec![0u8];
    for d in [1i16, 1, 1, 1, 1] {
        r.extend(rec(d, 0, 1));
    }
    write("reorder", "in-order", &r);

    // ESP: a keepalive, an IKE marker, and packets sealed as esp_open's SAs seal them.
    write("esp_parse", "keepalive", &[0xff]);
    write("esp_parse", "ike", &[0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    let keymat = [7u8; 20];
    for (i, (esn, mode)) in [
        (false, Mode::Tunnel),
        (false, Mode::Transport),
        (true, Mode::Tunnel),
        (true, Mode::Transport),
    ]
    .into_iter()
    .enumerate()
    {
        let cfg = SaConfig {
            spi: 0x1234,
            cipher: Cipher::Aes128Gcm,
            backend: Backend::Ring,
            keymat: &keymat,
            esn,
            mode,
            replay_window: 64,
        };
        let out = OutboundSa::new(&cfg, None).expect("an SA");
        let inner = packet(false, 17, 0, 0, b"ping");
        let mut buf = vec![0u8; 64 + inner.len() + OutboundSa::TAILROOM];
        buf[64..64 + inner.len()].copy_from_slice(&inner);
        let s = out.seal(&mut buf, 64..64 + inner.len()).expect("seal");
        let mut seed = vec![i as u8];
        seed.extend_from_slice(&buf[s.range.clone()]);
        write("esp_open", &format!("sealed-{i}"), &seed);
        if i == 0 {
            write("esp_parse", "esp", &buf[s.range]);
        }
        let mut plain = vec![0x80 | i as u8];
        plain.extend_from_slice(&inner);
        write("esp_open", &format!("to-seal-{i}"), &plain);
    }
    netlink_seeds();
    eprintln!("dataplane fuzz seeds written");
}

/// rtnetlink datagrams as the kernel sends them: a link, IPv4 and IPv6 addresses (one
/// tentative), an address deletion, a link deletion.
fn netlink_seeds() {
    use mifsec_dataplane::netlink::encode;
    use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
    use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage as M};

    let mut link = LinkMessage::default();
    link.header.index = 2;
    link.header.flags = LinkFlags::Up | LinkFlags::LowerUp;
    link.attributes.push(LinkAttribute::IfName("eth0".into()));
    let addr = |ip: &str, prefix_len, flags| {
        let mut m = AddressMessage::default();
        m.header.family = if ip.contains(':') {
            AddressFamily::Inet6
        } else {
            AddressFamily::Inet
        };
        m.header.index = 2;
        m.header.prefix_len = prefix_len;
        m.attributes
            .push(AddressAttribute::Address(ip.parse().unwrap()));
        m.attributes.push(AddressAttribute::Flags(flags));
        m
    };
    let v4 = addr("198.18.0.1", 24, AddressFlags::Permanent);
    let v6 = addr("fd00::1", 64, AddressFlags::Permanent);
    let tentative = addr("fd00::2", 64, AddressFlags::Tentative);
    let mut dump = encode(M::NewLink(link.clone()));
    dump.extend(encode(M::NewAddress(v4.clone())));
    dump.extend(encode(M::NewAddress(v6)));
    dump.extend(encode(M::NewAddress(tentative)));
    write("netlink_parse", "dump", &dump);
    let mut gone = encode(M::NewLink(link.clone()));
    gone.extend(encode(M::NewAddress(v4.clone())));
    gone.extend(encode(M::DelAddress(v4)));
    gone.extend(encode(M::DelLink(link)));
    write("netlink_parse", "removals", &gone);
    netlink_answer_seeds();
}

/// Answers to request 1 as the kernel sends them: an acknowledgement, a refusal with the
/// extended ack's text (`NETLINK_CAP_ACK`, `NETLINK_EXT_ACK`), and a route dump (an IPv4
/// route with a source, an IPv6 one, the end of the dump).
fn netlink_answer_seeds() {
    use mifsec_dataplane::netlink::encode;
    use netlink_packet_route::AddressFamily;
    use netlink_packet_route::RouteNetlinkMessage as M;
    use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage};

    fn msg(kind: u16, flags: u16, payload: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(((16 + payload.len()) as u32).to_ne_bytes());
        b.extend(kind.to_ne_bytes());
        b.extend(flags.to_ne_bytes());
        b.extend(1u32.to_ne_bytes()); // the sequence number
        b.extend(0u32.to_ne_bytes()); // the kernel's port
        b.extend(payload);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    const NLM_F_CAPPED: u16 = 0x100;
    const NLM_F_ACK_TLVS: u16 = 0x200;
    // The request's header as the kernel copies it back (RTM_NEWROUTE, request | ack).
    let request = &msg(24, 5, &[])[..16];
    let error = |code: i32, flags: u16, tlvs: &[u8]| {
        let mut p = code.to_ne_bytes().to_vec();
        p.extend(request);
        p.extend(tlvs);
        msg(NLMSG_ERROR, flags, &p)
    };
    write("netlink_parse", "ack", &error(0, NLM_F_CAPPED, &[]));
    let text = b"Invalid prefix for given prefix length\0";
    let mut tlv = ((4 + text.len()) as u16).to_ne_bytes().to_vec();
    tlv.extend(1u16.to_ne_bytes()); // NLMSGERR_ATTR_MSG
    tlv.extend(text);
    while tlv.len() % 4 != 0 {
        tlv.push(0);
    }
    write(
        "netlink_parse",
        "refused-ext-ack",
        &error(-22, NLM_F_CAPPED | NLM_F_ACK_TLVS, &tlv),
    );
    let route = |family, dst: &str, len, src: Option<&str>| {
        let mut m = RouteMessage::default();
        m.header.address_family = family;
        m.header.destination_prefix_length = len;
        m.header.table = 254;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(
                dst.parse::<std::net::IpAddr>().unwrap(),
            )));
        m.attributes.push(RouteAttribute::Oif(5));
        if let Some(s) = src {
            m.attributes
                .push(RouteAttribute::PrefSource(RouteAddress::from(
                    s.parse::<std::net::IpAddr>().unwrap(),
                )));
        }
        let mut b = encode(M::NewRoute(m));
        b[6..8].copy_from_slice(&2u16.to_ne_bytes()); // NLM_F_MULTI
        b[8..12].copy_from_slice(&1u32.to_ne_bytes());
        b
    };
    let mut dump = route(AddressFamily::Inet, "10.88.0.0", 16, Some("10.1.0.2"));
    dump.extend(route(AddressFamily::Inet6, "fd00:88::", 32, None));
    dump.extend(msg(NLMSG_DONE, 2, &0i32.to_ne_bytes()));
    write("netlink_parse", "route-dump", &dump);
}
