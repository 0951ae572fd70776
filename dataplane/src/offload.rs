//! TSO/USO splitting and TCP GRO coalescing for a TUN device opened with `IFF_VNET_HDR`.
//!
//! With `IFF_VNET_HDR` every packet read from or written to the TUN carries a 10-byte
//! `virtio_net_hdr` in front (see [`VirtioNetHdr`]). The kernel may then hand us:
//!
//! * TCP super-packets of up to 64 KiB (`gso_type` TCPV4/TCPV6), which [`GsoSplit`] cuts into
//!   `gso_size`-payload segments with their own IP lengths/IDs/checksums, TCP sequence numbers
//!   and full TCP checksums, ready to be encrypted one by one;
//! * UDP super-packets (`gso_type` UDP_L4, "USO"), cut into `gso_size` datagrams;
//! * single packets whose L4 checksum is only partial (`NEEDS_CSUM`), which [`GsoSplit`]
//!   completes.
//!
//! On the way back, [`TcpCoalescer`] merges in-order TCP segments of one flow (after decryption)
//! into one super-packet with a GSO virtio header so the kernel runs its TCP stack once per
//! 64 KiB instead of once per segment.
//!
//! Everything here is pure byte manipulation: no syscalls, no allocation per packet. The
//! approach follows wireguard-go's `tun/offload_linux.go`; header layouts are from
//! `include/uapi/linux/virtio_net.h`, RFC 9293 and RFC 768; the IP headers and checksums are
//! [`crate::net`]'s.

use std::fmt;

use crate::net::checksum::{self, checksum};
use crate::net::ip::{self, IPPROTO_TCP, IPPROTO_UDP, IpError, IpHeader, IpPacket, Version};

/// Length of the `virtio_net_hdr` (without `num_buffers`) that prefixes each TUN packet.
pub const VIRTIO_NET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the L4 checksum at `csum_start + csum_offset` holds only the
/// pseudo-header sum; the sum from `csum_start` to the end of the packet must be folded in.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum has been validated already.
pub const VIRTIO_NET_HDR_F_DATA_VALID: u8 = 2;

/// `VIRTIO_NET_HDR_GSO_NONE`: not a super-packet.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`: TCP over IPv4 super-packet.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_UDP`: UDP fragmentation offload (UFO, IP fragments). Not supported.
pub const VIRTIO_NET_HDR_GSO_UDP: u8 = 3;
/// `VIRTIO_NET_HDR_GSO_TCPV6`: TCP over IPv6 super-packet.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_UDP_L4`: UDP segmentation offload (USO), IPv4 or IPv6.
pub const VIRTIO_NET_HDR_GSO_UDP_L4: u8 = 5;
/// `VIRTIO_NET_HDR_GSO_ECN`: flag bit in `gso_type`, the TCP super-packet has CWR set.
pub const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// Largest IP packet (IPv4 total length, IPv6 header + payload length) we build or accept.
pub const MAX_IP_PACKET: usize = ip::MAX_PACKET_LEN;

const PROTO_TCP: u8 = IPPROTO_TCP;
const PROTO_UDP: u8 = IPPROTO_UDP;

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_ACK: u8 = 0x10;
const TCP_CWR: u8 = 0x80;
/// Offset of the flags byte in the TCP header.
const TCP_FLAGS_AT: usize = 13;
/// Offset of the checksum in the TCP header.
const TCP_CSUM_AT: usize = 16;
/// Offset of the checksum in the UDP header.
const UDP_CSUM_AT: usize = 6;
const UDP_HDR_LEN: usize = 8;

/// Why a packet could not be split or coalesced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// The buffer is shorter than a header needs, or than a length field claims.
    Truncated,
    /// A header field is inconsistent (the text says which).
    Malformed(&'static str),
    /// A `gso_type` we do not handle (UFO, or an unknown value).
    UnsupportedGso(u8),
    /// A destination buffer is too small, or there are fewer buffers than segments.
    BufferTooSmall,
}

impl fmt::Display for OffloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Truncated => f.write_str("packet truncated"),
            Self::Malformed(what) => write!(f, "malformed packet: {what}"),
            Self::UnsupportedGso(t) => write!(f, "unsupported virtio gso_type {t:#x}"),
            Self::BufferTooSmall => f.write_str("destination buffer too small"),
        }
    }
}

impl std::error::Error for OffloadError {}

// ---------------------------------------------------------------------------------------------
// virtio_net_hdr
// ---------------------------------------------------------------------------------------------

/// `struct virtio_net_hdr` (virtio 1.0, little-endian fields; the TUN uses this layout on
/// little-endian hosts, and `sys/tun.rs` asks for it explicitly on big-endian ones).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*`.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*`, possibly with [`VIRTIO_NET_HDR_GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (IP + L4) repeated in every segment. Not trusted on input.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (the L4 header).
    pub csum_start: u16,
    /// Where, counted from `csum_start`, the checksum is stored.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// Encoded length.
    pub const LEN: usize = VIRTIO_NET_HDR_LEN;

    /// Decodes the first [`Self::LEN`] bytes of `buf`.
    pub fn parse(buf: &[u8]) -> Result<Self, OffloadError> {
        let b: &[u8; VIRTIO_NET_HDR_LEN] = buf
            .get(..VIRTIO_NET_HDR_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(OffloadError::Truncated)?;
        Ok(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        })
    }

    /// Encodes into the first [`Self::LEN`] bytes of `buf`.
    pub fn emit(&self, buf: &mut [u8]) -> Result<(), OffloadError> {
        buf.get_mut(..VIRTIO_NET_HDR_LEN)
            .ok_or(OffloadError::BufferTooSmall)?
            .copy_from_slice(&self.to_bytes());
        Ok(())
    }

    /// The encoded header.
    pub fn to_bytes(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        let mut b = [0u8; VIRTIO_NET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// True for a GSO super-packet (any `gso_type` other than NONE).
    pub fn is_gso(&self) -> bool {
        self.gso_type & !VIRTIO_NET_HDR_GSO_ECN != VIRTIO_NET_HDR_GSO_NONE
    }
}

// ---------------------------------------------------------------------------------------------
// Small big-endian helpers (callers have bounds-checked)
// ---------------------------------------------------------------------------------------------

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// The IP header of `pkt` (the header length field is trusted, the length field not: the
/// offloads set it). Fragments are reported as malformed for offload purposes; IPv6
/// extension headers show as a protocol that is neither TCP nor UDP.
#[inline]
fn parse_ip(pkt: &[u8]) -> Result<IpPacket<&[u8]>, OffloadError> {
    let ip = IpPacket::new_checked(pkt).map_err(|e| match e {
        IpError::Truncated => OffloadError::Truncated,
        IpError::BadHeaderLen => OffloadError::Malformed("IPv4 IHL < 5"),
        IpError::BadVersion(_) | IpError::BadLength => OffloadError::Malformed("not IPv4 or IPv6"),
    })?;
    if ip.is_fragment() {
        return Err(OffloadError::Malformed("IPv4 fragment"));
    }
    Ok(ip)
}

/// A view of a packet's IP header, checked.
#[inline]
fn ip_view<T: AsRef<[u8]>>(pkt: T) -> Option<IpPacket<T>> {
    IpPacket::new_checked(pkt).ok()
}

/// The header `classify` saw in a mergeable TCP segment (IPv4 without options, or IPv6), for
/// [`IpPacket::with_header`].
#[inline(always)]
fn tcp_header(v6: bool, l3: usize) -> IpHeader {
    IpHeader {
        version: if v6 { Version::V6 } else { Version::V4 },
        header_len: l3,
        protocol: PROTO_TCP,
    }
}

// ---------------------------------------------------------------------------------------------
// GSO split
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SplitKind {
    /// Copy as is.
    Verbatim,
    /// Copy, then complete the partial checksum at `start + offset`.
    CompleteCsum { start: usize, offset: usize },
    /// TCP segmentation.
    Tcp,
    /// UDP segmentation.
    Udp,
}

/// A validated plan for cutting one packet read from the TUN (after its virtio header) into
/// wire-ready packets. Construction checks every header; [`GsoSplit::write_segment`] then only
/// copies and patches, so segments can be written straight into the caller's own buffers
/// (e.g. at the payload offset of an ESP packet) without an intermediate copy.
#[derive(Debug, Clone, Copy)]
pub struct GsoSplit<'a> {
    pkt: &'a [u8],
    kind: SplitKind,
    /// The IP header as checked (segmentation only): every segment's copy of it is viewed
    /// with [`IpPacket::with_header`], not parsed again.
    ip: Option<IpHeader>,
    /// IP header length (== csum_start for segmentation).
    l3_len: usize,
    /// IP + L4 header length, repeated in every segment.
    hdr_len: usize,
    /// Payload per segment.
    gso_size: usize,
    segments: usize,
    /// CWR is only kept on the first TCP segment.
    clear_cwr_after_first: bool,
}

impl<'a> GsoSplit<'a> {
    /// Validates `hdr` against the IP packet `pkt` (the bytes after the virtio header).
    pub fn new(hdr: &VirtioNetHdr, pkt: &'a [u8]) -> Result<Self, OffloadError> {
        if pkt.len() > MAX_IP_PACKET {
            return Err(OffloadError::Malformed("packet longer than 65535 bytes"));
        }
        if usize::from(hdr.hdr_len) > pkt.len() {
            return Err(OffloadError::Malformed("hdr_len beyond packet"));
        }
        let needs_csum = hdr.flags & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0;
        let gso = hdr.gso_type & !VIRTIO_NET_HDR_GSO_ECN;
        let mut plan = Self {
            pkt,
            kind: SplitKind::Verbatim,
            ip: None,
            l3_len: 0,
            hdr_len: pkt.len(),
            gso_size: 0,
            segments: 1,
            clear_cwr_after_first: false,
        };
        let proto = match gso {
            VIRTIO_NET_HDR_GSO_NONE => {
                if needs_csum {
                    let start = usize::from(hdr.csum_start);
                    let offset = usize::from(hdr.csum_offset);
                    if start + offset + 2 > pkt.len() {
                        return Err(OffloadError::Malformed("csum_start/offset beyond packet"));
                    }
                    plan.kind = SplitKind::CompleteCsum { start, offset };
                }
                return Ok(plan);
            }
            VIRTIO_NET_HDR_GSO_TCPV4 | VIRTIO_NET_HDR_GSO_TCPV6 => PROTO_TCP,
            VIRTIO_NET_HDR_GSO_UDP_L4 => PROTO_UDP,
            other => return Err(OffloadError::UnsupportedGso(other)),
        };
        if hdr.gso_size == 0 {
            return Err(OffloadError::Malformed("gso_size 0"));
        }
        let ip = parse_ip(pkt)?;
        let (v6, l3_len, ip_proto) = (ip.is_ipv6(), ip.header_len(), ip.protocol());
        match gso {
            VIRTIO_NET_HDR_GSO_TCPV4 if v6 => {
                return Err(OffloadError::Malformed("GSO_TCPV4 on an IPv6 packet"));
            }
            VIRTIO_NET_HDR_GSO_TCPV6 if !v6 => {
                return Err(OffloadError::Malformed("GSO_TCPV6 on an IPv4 packet"));
            }
            _ => {}
        }
        if ip_proto != proto {
            return Err(OffloadError::Malformed(
                "IP protocol does not match gso_type",
            ));
        }
        let l4_hdr_len = if proto == PROTO_TCP {
            if pkt.len() < l3_len + 20 {
                return Err(OffloadError::Truncated);
            }
            let doff = usize::from(pkt[l3_len + 12] >> 4) * 4;
            if doff < 20 {
                return Err(OffloadError::Malformed("TCP data offset < 5"));
            }
            doff
        } else {
            UDP_HDR_LEN
        };
        // The kernel's hdr_len may cover part of the payload (it is the linear head length),
        // so it only has to be sane; the real header length comes from parsing.
        let hdr_len = l3_len + l4_hdr_len;
        if hdr_len > pkt.len() {
            return Err(OffloadError::Truncated);
        }
        if needs_csum {
            let want_off = if proto == PROTO_TCP {
                TCP_CSUM_AT
            } else {
                UDP_CSUM_AT
            };
            if usize::from(hdr.csum_start) != l3_len || usize::from(hdr.csum_offset) != want_off {
                return Err(OffloadError::Malformed(
                    "csum_start/offset not at the L4 checksum",
                ));
            }
        }
        let payload = pkt.len() - hdr_len;
        let gso_size = usize::from(hdr.gso_size);
        if hdr_len + gso_size > MAX_IP_PACKET {
            return Err(OffloadError::Malformed("gso_size too large"));
        }
        plan.kind = if proto == PROTO_TCP {
            SplitKind::Tcp
        } else {
            SplitKind::Udp
        };
        plan.ip = Some(ip.header());
        plan.l3_len = l3_len;
        plan.hdr_len = hdr_len;
        plan.gso_size = gso_size;
        plan.segments = payload.div_ceil(gso_size).max(1);
        plan.clear_cwr_after_first = proto == PROTO_TCP;
        Ok(plan)
    }

    /// Number of packets this plan produces (at least 1).
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// Length of segment `i` (0 if out of range).
    pub fn segment_len(&self, i: usize) -> usize {
        if i >= self.segments {
            return 0;
        }
        match self.kind {
            SplitKind::Verbatim | SplitKind::CompleteCsum { .. } => self.pkt.len(),
            SplitKind::Tcp | SplitKind::Udp => {
                let start = self.hdr_len + i * self.gso_size;
                let end = (start + self.gso_size).min(self.pkt.len());
                self.hdr_len + (end - start)
            }
        }
    }

    /// The largest segment: a destination buffer of this size fits any segment.
    pub fn max_segment_len(&self) -> usize {
        self.segment_len(0)
    }

    /// Writes segment `i` to the front of `dst`, returning its length.
    pub fn write_segment(&self, i: usize, dst: &mut [u8]) -> Result<usize, OffloadError> {
        if i >= self.segments {
            return Err(OffloadError::BufferTooSmall);
        }
        let len = self.segment_len(i);
        let dst = dst.get_mut(..len).ok_or(OffloadError::BufferTooSmall)?;
        match self.kind {
            SplitKind::Verbatim => dst.copy_from_slice(self.pkt),
            SplitKind::CompleteCsum { start, offset } => {
                dst.copy_from_slice(self.pkt);
                // The field already holds the pseudo-header sum: fold in everything after
                // csum_start. A result of 0 is sent as 0xffff (mandatory for UDP, equivalent
                // for TCP), as the kernel's skb_checksum_help does.
                let c = checksum(&dst[start..], 0);
                put16(dst, start + offset, if c == 0 { 0xffff } else { c });
            }
            SplitKind::Tcp | SplitKind::Udp => self.write_l4_segment(i, dst),
        }
        Ok(len)
    }

    fn write_l4_segment(&self, i: usize, dst: &mut [u8]) {
        let (l3, hl) = (self.l3_len, self.hdr_len);
        let len = dst.len();
        let data_at = hl + i * self.gso_size;
        dst[..hl].copy_from_slice(&self.pkt[..hl]);
        dst[hl..].copy_from_slice(&self.pkt[data_at..data_at + (len - hl)]);
        let proto = if self.kind == SplitKind::Tcp {
            PROTO_TCP
        } else {
            PROTO_UDP
        };
        let l4_len = len - l3;
        // L3 fix-ups. len <= 65535 was checked in new(), and so was the header copied.
        let pseudo = {
            let Some(mut ip) = self.ip.and_then(|h| IpPacket::with_header(&mut *dst, h)) else {
                return;
            };
            ip.set_total_len(len);
            ip.set_ident(ip.ident().wrapping_add(i as u16));
            ip.fill_checksum();
            ip.pseudo_header_sum(proto, l4_len)
        };
        let csum_at = if self.kind == SplitKind::Tcp {
            let seq = be32(self.pkt, l3 + 4).wrapping_add((i * self.gso_size) as u32);
            put32(dst, l3 + 4, seq);
            let mut flags = dst[l3 + TCP_FLAGS_AT];
            if i + 1 != self.segments {
                flags &= !(TCP_FIN | TCP_PSH);
            }
            if i != 0 && self.clear_cwr_after_first {
                flags &= !TCP_CWR;
            }
            dst[l3 + TCP_FLAGS_AT] = flags;
            l3 + TCP_CSUM_AT
        } else {
            put16(dst, l3 + 4, l4_len as u16);
            l3 + UDP_CSUM_AT
        };
        put16(dst, csum_at, 0);
        let c = checksum(&dst[l3..], pseudo);
        put16(
            dst,
            csum_at,
            if c == 0 && proto == PROTO_UDP {
                0xffff
            } else {
                c
            },
        );
    }

    /// Writes every segment into `out[k][offset..]`, storing its length in `sizes[k]`; returns
    /// the number of segments. Checks that all fit before writing anything.
    pub fn write_all<B: AsMut<[u8]>>(
        &self,
        out: &mut [B],
        offset: usize,
        sizes: &mut [usize],
    ) -> Result<usize, OffloadError> {
        let n = self.segments;
        if out.len() < n || sizes.len() < n {
            return Err(OffloadError::BufferTooSmall);
        }
        let need = offset + self.max_segment_len();
        if out[..n].iter_mut().any(|b| b.as_mut().len() < need) {
            return Err(OffloadError::BufferTooSmall);
        }
        for (i, (buf, size)) in out.iter_mut().zip(sizes.iter_mut()).take(n).enumerate() {
            *size = self.write_segment(i, &mut buf.as_mut()[offset..])?;
        }
        Ok(n)
    }
}

/// Splits `pkt` as described by `hdr`, building each segment in `scratch` and handing it to
/// `emit`. Returns the number of segments. Nothing is emitted on error: all checks (including
/// that `scratch` can hold the largest segment) happen first.
pub fn gso_split(
    hdr: &VirtioNetHdr,
    pkt: &[u8],
    scratch: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let plan = GsoSplit::new(hdr, pkt)?;
    if scratch.len() < plan.max_segment_len() {
        return Err(OffloadError::BufferTooSmall);
    }
    for i in 0..plan.segments() {
        let n = plan.write_segment(i, scratch)?;
        emit(&scratch[..n]);
    }
    Ok(plan.segments())
}

// ---------------------------------------------------------------------------------------------
// TCP GRO
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FlowKey {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
}

#[derive(Debug, Clone, Copy)]
struct Seg {
    key: FlowKey,
    l3_len: usize,
    tcph_len: usize,
    payload: usize,
    seq: u32,
    ack: u32,
    psh: bool,
}

enum Class {
    /// Not TCP, or not parseable: pass through.
    Other,
    /// TCP of a flow, but not mergeable (SYN/FIN/RST/URG/ECE/CWR, no payload, options in the
    /// IP header, fragments...): pass through and stop merging that flow so nothing is
    /// reordered around it.
    Barrier(FlowKey),
    /// A data segment that may merge.
    Candidate(Seg),
}

/// The flow of a TCP packet whose TCP header's first 20 bytes are present.
#[inline]
fn flow_key(ip: &IpPacket<&[u8]>) -> FlowKey {
    let (s, d) = (ip.src_bytes(), ip.dst_bytes());
    let (pkt, l3) = (ip.as_bytes(), ip.header_len());
    let v6 = ip.is_ipv6();
    let mut key = FlowKey {
        v6,
        src: [0; 16],
        dst: [0; 16],
        sport: be16(pkt, l3),
        dport: be16(pkt, l3 + 2),
    };
    // Fixed-size copies: 16 or 4 bytes.
    if v6 {
        key.src.copy_from_slice(s);
        key.dst.copy_from_slice(d);
    } else {
        key.src[..4].copy_from_slice(s);
        key.dst[..4].copy_from_slice(d);
    }
    key
}

fn classify(pkt: &[u8]) -> Class {
    if pkt.len() > MAX_IP_PACKET {
        return Class::Other;
    }
    let Some(ip) = ip_view(pkt).filter(|ip| ip.protocol() == PROTO_TCP) else {
        return Class::Other;
    };
    let (v6, l3) = (ip.is_ipv6(), ip.header_len());
    if pkt.len() < l3 + 20 {
        return Class::Other;
    }
    let key = flow_key(&ip);
    let tcph_len = usize::from(pkt[l3 + 12] >> 4) * 4;
    if tcph_len < 20 || pkt.len() < l3 + tcph_len {
        return Class::Barrier(key);
    }
    let len_ok = ip.total_len() == pkt.len() && (v6 || (l3 == 20 && !ip.is_fragment()));
    let flags = pkt[l3 + TCP_FLAGS_AT];
    let payload = pkt.len() - l3 - tcph_len;
    if !len_ok || (flags != TCP_ACK && flags != TCP_ACK | TCP_PSH) || payload == 0 {
        return Class::Barrier(key);
    }
    Class::Candidate(Seg {
        key,
        l3_len: l3,
        tcph_len,
        payload,
        seq: be32(pkt, l3 + 4),
        ack: be32(pkt, l3 + 8),
        psh: flags & TCP_PSH != 0,
    })
}

/// Full TCP checksum check of a whole packet.
fn tcp_csum_ok(ip: &IpPacket<&[u8]>) -> bool {
    let l4 = ip.payload();
    let pseudo = ip.pseudo_header_sum(PROTO_TCP, l4.len());
    checksum::fold(checksum::add(l4, pseudo)) == 0xffff
}

#[derive(Debug, Clone, Copy)]
struct Flow {
    key: FlowKey,
    /// Index into the batch of the packet everything is appended to.
    head: usize,
    ack: u32,
    l3_len: usize,
    tcph_len: usize,
    gso_size: usize,
    next_seq: u32,
    /// Packets merged into `head`, including itself.
    segs: usize,
    /// Length of the head packet (IP header included).
    len: usize,
    /// No more appends: a short segment or a PSH ended the super-packet.
    closed: bool,
    /// Head's checksum, checked lazily on the first merge.
    head_csum: Option<bool>,
}

/// Coalesces in-order TCP segments of one flow into GSO super-packets before they are written
/// to the TUN (GRO). Keep one per writer thread and reuse it: after the first batches it does
/// not allocate.
///
/// Rules (those of wireguard-go and the kernel's GRO): same addresses, ports and ACK number;
/// contiguous sequence numbers (appending only, no reordering); flags exactly ACK or ACK|PSH
/// and a non-empty payload; identical TCP options; IPv4 without options or fragments and with
/// equal TOS, DF and TTL; IPv6 without extension headers and with equal traffic class and hop
/// limit; no segment larger than the first (`gso_size`), and nothing after a shorter one or
/// one with PSH; the result fits in 65535 bytes; every merged segment's TCP checksum verified
/// (the kernel trusts a `NEEDS_CSUM` packet). Any other TCP packet of a flow ends that flow's
/// current super-packet, so per-flow order is kept.
///
/// [`TcpCoalescer::trusting`] skips the checksum verification, for packets whose integrity
/// something stronger already vouches for (an AEAD tag): it merges without reading the
/// payload, and marks the packets it passes through unmerged `VIRTIO_NET_HDR_F_DATA_VALID`,
/// so that the kernel does not verify them either (as the kernel's WireGuard marks decrypted
/// packets `CHECKSUM_UNNECESSARY`).
#[derive(Debug)]
pub struct TcpCoalescer {
    flows: Vec<Flow>,
    out: Vec<usize>,
    /// Verify TCP checksums before merging (false: the caller vouches for them).
    verify: bool,
    /// Buffers filled by [`TcpCoalescer::push`] since the last [`TcpCoalescer::finish`].
    used: usize,
}

impl Default for TcpCoalescer {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl TcpCoalescer {
    /// An empty coalescer.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty coalescer with room for batches of `batch` packets.
    pub fn with_capacity(batch: usize) -> Self {
        Self {
            flows: Vec::with_capacity(batch),
            out: Vec::with_capacity(batch),
            verify: true,
            used: 0,
        }
    }

    /// The virtio header of a packet written as it is.
    fn plain_header(&self) -> [u8; VIRTIO_NET_HDR_LEN] {
        VirtioNetHdr {
            flags: if self.verify {
                0
            } else {
                VIRTIO_NET_HDR_F_DATA_VALID
            },
            ..VirtioNetHdr::default()
        }
        .to_bytes()
    }

    /// Buffers in use since the last [`Self::finish`]: when it reaches the number of buffers,
    /// [`Self::push`] refuses until [`Self::finish`] (and the caller's writes) free them.
    pub fn used(&self) -> usize {
        self.used
    }

    /// The streaming form of [`Self::coalesce`], which copies each packet once: `pkt` (one IP
    /// packet) is appended to the super-packet of its flow if it merges (payload only), and
    /// otherwise copied to `bufs[used][offset..]` behind its virtio header. The same rules and
    /// results as [`Self::coalesce`] over the packets pushed since the last
    /// [`Self::finish`], which returns the buffers to write. Buffers should have a capacity of
    /// `offset + 65535` (a merge never reallocates; a packet that does not fit starts a new
    /// super-packet). Errors, changing nothing, if `offset` < 10 or every buffer is in use.
    pub fn push(
        &mut self,
        bufs: &mut [Vec<u8>],
        offset: usize,
        pkt: &[u8],
    ) -> Result<(), OffloadError> {
        if offset < VIRTIO_NET_HDR_LEN || self.used >= bufs.len() {
            return Err(OffloadError::BufferTooSmall);
        }
        if self.used == 0 {
            // A new batch: the last one's indices were read.
            self.out.clear();
            self.flows.clear();
        }
        let class = classify(pkt);
        if let Class::Candidate(seg) = &class
            && let Some(pos) = self.flows.iter().rposition(|f| f.key == seg.key)
        {
            let head = self.flows[pos].head;
            if merge_into(
                &mut self.flows[pos],
                seg,
                &mut bufs[head],
                pkt,
                offset,
                self.verify,
            ) {
                return Ok(());
            }
        }
        let idx = self.used;
        let hdr = self.plain_header();
        let b = &mut bufs[idx];
        b.clear();
        b.resize(offset, 0);
        b[offset - VIRTIO_NET_HDR_LEN..].copy_from_slice(&hdr);
        b.extend_from_slice(pkt);
        self.used += 1;
        self.out.push(idx);
        match class {
            Class::Other => {}
            Class::Barrier(key) => {
                if let Some(pos) = self.flows.iter().rposition(|f| f.key == key) {
                    let f = self.flows.swap_remove(pos);
                    finalize(&f, bufs, offset);
                }
            }
            Class::Candidate(seg) => {
                let flow = Flow::start(&seg, idx, pkt.len());
                if let Some(pos) = self.flows.iter().rposition(|f| f.key == seg.key) {
                    let old = std::mem::replace(&mut self.flows[pos], flow);
                    finalize(&old, bufs, offset);
                } else {
                    self.flows.push(flow);
                }
            }
        }
        Ok(())
    }

    /// Ends the batch of [`Self::push`]: finishes every super-packet and returns the indices
    /// of the buffers to write to the TUN, in order. The next push starts a new batch.
    pub fn finish(&mut self, bufs: &mut [Vec<u8>], offset: usize) -> &[usize] {
        for f in &self.flows {
            finalize(f, bufs, offset);
        }
        self.flows.clear();
        self.used = 0;
        &self.out
    }

    /// Like [`Self::with_capacity`], for authenticated packets: no checksum is verified, and
    /// unmerged packets go out marked `VIRTIO_NET_HDR_F_DATA_VALID`.
    pub fn trusting(batch: usize) -> Self {
        Self {
            verify: false,
            ..Self::with_capacity(batch)
        }
    }

    /// Coalesces a batch in place.
    ///
    /// Each `bufs[i][offset..]` holds one IP packet; `bufs[i][offset - 10..offset]` is headroom
    /// where its virtio header is written. Merged payload is appended to the flow's first
    /// packet within that buffer's spare capacity (never reallocating: give buffers a capacity
    /// of `offset + 65535` to coalesce fully). Returns the indices of the buffers to write to
    /// the TUN, in order; the other buffers were merged and must be skipped. Packets that
    /// cannot be merged are returned untouched with a zero virtio header (a trusting
    /// coalescer's: `VIRTIO_NET_HDR_F_DATA_VALID`).
    ///
    /// Errors (before touching anything) if `offset` < 10 or a buffer is shorter than
    /// `offset`. Flow lookup is a linear scan of the flows seen in the batch.
    pub fn coalesce(
        &mut self,
        bufs: &mut [Vec<u8>],
        offset: usize,
    ) -> Result<&[usize], OffloadError> {
        if offset < VIRTIO_NET_HDR_LEN {
            return Err(OffloadError::BufferTooSmall);
        }
        if bufs.iter().any(|b| b.len() < offset) {
            return Err(OffloadError::Truncated);
        }
        self.flows.clear();
        self.out.clear();
        self.used = 0;
        let zero = self.plain_header();
        let verify = self.verify;
        for i in 0..bufs.len() {
            bufs[i][offset - VIRTIO_NET_HDR_LEN..offset].copy_from_slice(&zero);
            let seg = match classify(&bufs[i][offset..]) {
                Class::Other => {
                    self.out.push(i);
                    continue;
                }
                Class::Barrier(key) => {
                    if let Some(pos) = self.flows.iter().rposition(|f| f.key == key) {
                        let f = self.flows.swap_remove(pos);
                        finalize(&f, bufs, offset);
                    }
                    self.out.push(i);
                    continue;
                }
                Class::Candidate(seg) => seg,
            };
            let pos = self.flows.iter().rposition(|f| f.key == seg.key);
            if let Some(pos) = pos {
                if try_merge(&mut self.flows[pos], &seg, bufs, offset, i, verify) {
                    continue;
                }
                let old = self.flows[pos];
                finalize(&old, bufs, offset);
                self.flows[pos] = Flow::start(&seg, i, bufs[i].len() - offset);
            } else {
                self.flows
                    .push(Flow::start(&seg, i, bufs[i].len() - offset));
            }
            self.out.push(i);
        }
        for f in &self.flows {
            finalize(f, bufs, offset);
        }
        self.flows.clear();
        Ok(&self.out)
    }
}

impl Flow {
    fn start(seg: &Seg, head: usize, len: usize) -> Self {
        Self {
            key: seg.key,
            head,
            ack: seg.ack,
            l3_len: seg.l3_len,
            tcph_len: seg.tcph_len,
            gso_size: seg.payload,
            next_seq: seg.seq.wrapping_add(seg.payload as u32),
            segs: 1,
            len,
            closed: seg.psh,
            head_csum: None,
        }
    }
}

/// Appends `bufs[i]` to the flow's head if allowed. `i` is always after `flow.head`.
fn try_merge(
    flow: &mut Flow,
    seg: &Seg,
    bufs: &mut [Vec<u8>],
    offset: usize,
    i: usize,
    verify: bool,
) -> bool {
    let (before, rest) = bufs.split_at_mut(i);
    merge_into(
        flow,
        seg,
        &mut before[flow.head],
        &rest[0][offset..],
        offset,
        verify,
    )
}

/// Appends the IP packet `pkt` (its payload) to the flow's head packet `head[offset..]` if
/// allowed.
fn merge_into(
    flow: &mut Flow,
    seg: &Seg,
    head: &mut Vec<u8>,
    pkt: &[u8],
    offset: usize,
    verify: bool,
) -> bool {
    if flow.closed
        || seg.ack != flow.ack
        || seg.seq != flow.next_seq
        || seg.payload > flow.gso_size
        || seg.tcph_len != flow.tcph_len
        || seg.l3_len != flow.l3_len
        || flow.len + seg.payload > MAX_IP_PACKET
    {
        return false;
    }
    let h = &head[offset..];
    let (l3, hl) = (flow.l3_len, flow.l3_len + flow.tcph_len);
    // Both passed `classify` with this header (the flow key's version, the same length).
    let hdr = tcp_header(flow.key.v6, l3);
    let (Some(hv), Some(pv)) = (
        IpPacket::with_header(h, hdr),
        IpPacket::with_header(pkt, hdr),
    ) else {
        return false;
    };
    // Traffic class / TOS (an IPv6 flow label may differ), hop limit / TTL, IPv4's
    // DF/reserved bits.
    if !hv.same_service(&pv) || h[l3 + 20..hl] != pkt[l3 + 20..hl] {
        return false;
    }
    if verify {
        if flow.head_csum.is_none() {
            flow.head_csum = Some(tcp_csum_ok(&hv));
        }
        if flow.head_csum != Some(true) || !tcp_csum_ok(&pv) {
            return false;
        }
    }
    if head.capacity() - head.len() < seg.payload {
        // Never reallocate: the caller sized the buffers, and a packet that does not fit just
        // starts a new super-packet.
        return false;
    }
    head.extend_from_slice(&pkt[hl..]);
    if seg.psh {
        head[offset + l3 + TCP_FLAGS_AT] |= TCP_PSH;
        flow.closed = true;
    }
    if seg.payload < flow.gso_size {
        flow.closed = true;
    }
    flow.len += seg.payload;
    flow.next_seq = flow.next_seq.wrapping_add(seg.payload as u32);
    flow.segs += 1;
    true
}

/// Writes the GSO virtio header and fixes the IP/TCP headers of a merged super-packet. A head
/// that merged nothing keeps the zero header written on arrival.
fn finalize(flow: &Flow, bufs: &mut [Vec<u8>], offset: usize) {
    if flow.segs < 2 {
        return;
    }
    let buf = &mut bufs[flow.head];
    let l3 = flow.l3_len;
    let gso_type = {
        let pkt = &mut buf[offset..];
        let len = pkt.len();
        // The head passed `classify` with this header.
        let Some(mut ip) = IpPacket::with_header(&mut *pkt, tcp_header(flow.key.v6, l3)) else {
            return;
        };
        ip.set_total_len(len);
        ip.fill_checksum();
        let gso_type = if flow.key.v6 {
            VIRTIO_NET_HDR_GSO_TCPV6
        } else {
            VIRTIO_NET_HDR_GSO_TCPV4
        };
        // Partial checksum: the folded pseudo-header sum, not complemented; the kernel adds
        // the sum over the TCP header and payload (CHECKSUM_PARTIAL).
        let pseudo = ip.pseudo_header_sum(PROTO_TCP, len - l3);
        put16(pkt, l3 + TCP_CSUM_AT, checksum::fold(pseudo));
        gso_type
    };
    let hdr = VirtioNetHdr {
        flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
        gso_type,
        hdr_len: (l3 + flow.tcph_len) as u16,
        gso_size: flow.gso_size as u16,
        csum_start: l3 as u16,
        csum_offset: TCP_CSUM_AT as u16,
    };
    buf[offset - VIRTIO_NET_HDR_LEN..offset].copy_from_slice(&hdr.to_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::checksum::{add as csum_add, fold as csum_fold};
    use proptest::prelude::*;

    /// Rewrites the IPv4 header checksum of `hdr` (the whole IPv4 header).
    fn fix_ipv4_csum(hdr: &mut [u8]) {
        ip_view(hdr).unwrap().fill_checksum();
    }

    /// The pseudo-header sum of the test packet `p` for `proto` and `l4_len` bytes.
    fn pseudo_of(p: &[u8], proto: u8, l4_len: usize) -> u64 {
        ip_view(p).unwrap().pseudo_header_sum(proto, l4_len)
    }

    // ---- independent reference implementations -------------------------------------------

    /// Naive RFC 1071: 16-bit words, end-around carry on every step.
    fn naive_sum(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        let mut i = 0;
        while i < data.len() {
            let hi = u32::from(data[i]) << 8;
            let lo = data.get(i + 1).map_or(0, |&b| u32::from(b));
            s += hi | lo;
            s = (s & 0xffff) + (s >> 16);
            i += 2;
        }
        s as u16
    }

    fn naive_ones_add(a: u16, b: u16) -> u16 {
        let s = u32::from(a) + u32::from(b);
        ((s & 0xffff) + (s >> 16)) as u16
    }

    /// True if the L4 checksum of `pkt` verifies (pseudo-header included), computed naively.
    fn l4_csum_valid(pkt: &[u8]) -> bool {
        let v6 = pkt[0] >> 4 == 6;
        let (l3, proto, src, dst) = if v6 {
            (40, pkt[6], &pkt[8..24], &pkt[24..40])
        } else {
            (
                usize::from(pkt[0] & 0xf) * 4,
                pkt[9],
                &pkt[12..16],
                &pkt[16..20],
            )
        };
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(src);
        pseudo.extend_from_slice(dst);
        pseudo.extend_from_slice(&((pkt.len() - l3) as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, proto]);
        naive_ones_add(naive_sum(&pseudo), naive_sum(&pkt[l3..])) == 0xffff
    }

    fn ipv4_hdr_valid(pkt: &[u8]) -> bool {
        naive_sum(&pkt[..usize::from(pkt[0] & 0xf) * 4]) == 0xffff
    }

    // ---- packet builders ------------------------------------------------------------------

    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    fn payload(n: usize, seed: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn ip_header(v6: bool, proto: u8, total: usize, id: u16) -> Vec<u8> {
        if v6 {
            let mut h = vec![0u8; 40];
            h[0] = 0x60;
            h[1] = 0x0a; // traffic class bits / flow label
            h[3] = 0x42;
            put16(&mut h, 4, (total - 40) as u16);
            h[6] = proto;
            h[7] = 64;
            h[8..24].copy_from_slice(&SRC6);
            h[24..40].copy_from_slice(&DST6);
            h
        } else {
            let mut h = vec![0u8; 20];
            h[0] = 0x45;
            put16(&mut h, 2, total as u16);
            put16(&mut h, 4, id);
            h[6] = 0x40; // DF
            h[8] = 64;
            h[9] = proto;
            h[12..16].copy_from_slice(&SRC4);
            h[16..20].copy_from_slice(&DST4);
            fix_ipv4_csum(&mut h);
            h
        }
    }

    /// TCP packet with `opts` option bytes (multiple of 4). `partial`: the checksum field holds
    /// the folded pseudo-header sum (as the kernel hands out with NEEDS_CSUM); otherwise the
    /// full checksum.
    fn tcp_packet(
        v6: bool,
        seq: u32,
        flags: u8,
        opts: &[u8],
        data: &[u8],
        partial: bool,
    ) -> Vec<u8> {
        let l3 = if v6 { 40 } else { 20 };
        let tcph = 20 + opts.len();
        let total = l3 + tcph + data.len();
        let mut p = ip_header(v6, PROTO_TCP, total, 0x1234);
        let mut t = vec![0u8; 20];
        put16(&mut t, 0, 40000);
        put16(&mut t, 2, 443);
        put32(&mut t, 4, seq);
        put32(&mut t, 8, 0xdead_beef);
        t[12] = ((tcph / 4) as u8) << 4;
        t[13] = flags;
        put16(&mut t, 14, 0xffff);
        p.extend_from_slice(&t);
        p.extend_from_slice(opts);
        p.extend_from_slice(data);
        let pseudo = pseudo_of(&p, PROTO_TCP, total - l3);
        let c = if partial {
            csum_fold(pseudo)
        } else {
            checksum(&p[l3..], pseudo)
        };
        put16(&mut p, l3 + TCP_CSUM_AT, c);
        p
    }

    fn udp_packet(v6: bool, data: &[u8]) -> Vec<u8> {
        let l3 = if v6 { 40 } else { 20 };
        let total = l3 + 8 + data.len();
        let mut p = ip_header(v6, PROTO_UDP, total, 7);
        let mut u = vec![0u8; 8];
        put16(&mut u, 0, 5000);
        put16(&mut u, 2, 4500);
        put16(&mut u, 4, (total - l3) as u16);
        p.extend_from_slice(&u);
        p.extend_from_slice(data);
        let pseudo = pseudo_of(&p, PROTO_UDP, total - l3);
        put16(&mut p, l3 + UDP_CSUM_AT, csum_fold(pseudo));
        p
    }

    fn tso_hdr(v6: bool, hdr_len: usize, mss: u16) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: if v6 {
                VIRTIO_NET_HDR_GSO_TCPV6
            } else {
                VIRTIO_NET_HDR_GSO_TCPV4
            },
            hdr_len: hdr_len as u16,
            gso_size: mss,
            csum_start: if v6 { 40 } else { 20 },
            csum_offset: 16,
        }
    }

    fn split_all(hdr: &VirtioNetHdr, pkt: &[u8]) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut scratch = vec![0u8; MAX_IP_PACKET];
        let mut segs = Vec::new();
        gso_split(hdr, pkt, &mut scratch, |s| segs.push(s.to_vec()))?;
        Ok(segs)
    }

    /// Checks every TCP segment of a split against the super-packet; returns nothing, panics
    /// with detail on mismatch.
    fn check_tcp_segments(sup: &[u8], segs: &[Vec<u8>], mss: usize) {
        let v6 = sup[0] >> 4 == 6;
        let l3 = if v6 { 40 } else { 20 };
        let hl = l3 + usize::from(sup[l3 + 12] >> 4) * 4;
        let data = &sup[hl..];
        let want = data.len().div_ceil(mss).max(1);
        assert_eq!(segs.len(), want, "segment count");
        let seq0 = be32(sup, l3 + 4);
        let flags0 = sup[l3 + 13];
        let mut off = 0;
        for (i, s) in segs.iter().enumerate() {
            let dl = (data.len() - off).min(mss);
            assert_eq!(s.len(), hl + dl, "seg {i} length");
            if v6 {
                assert_eq!(
                    usize::from(be16(s, 4)),
                    s.len() - 40,
                    "seg {i} v6 payload len"
                );
                assert_eq!(s[..4], sup[..4]);
            } else {
                assert_eq!(usize::from(be16(s, 2)), s.len(), "seg {i} v4 total len");
                assert_eq!(
                    be16(s, 4),
                    be16(sup, 4).wrapping_add(i as u16),
                    "seg {i} id"
                );
                assert!(ipv4_hdr_valid(s), "seg {i} IPv4 header checksum");
            }
            assert_eq!(
                be32(s, l3 + 4),
                seq0.wrapping_add(off as u32),
                "seg {i} seq"
            );
            let last = i + 1 == segs.len();
            let mut want_flags = flags0;
            if !last {
                want_flags &= !(TCP_FIN | TCP_PSH);
            }
            assert_eq!(s[l3 + 13], want_flags, "seg {i} flags");
            // Options are copied verbatim.
            assert_eq!(s[l3 + 20..hl], sup[l3 + 20..hl]);
            assert_eq!(&s[hl..], &data[off..off + dl], "seg {i} payload");
            assert!(l4_csum_valid(s), "seg {i} TCP checksum");
            off += dl;
        }
        assert_eq!(off, data.len());
    }

    /// Puts packets into buffers with VIRTIO_NET_HDR_LEN headroom and coalesces them.
    fn coalesce_all(pkts: &[Vec<u8>]) -> Vec<(VirtioNetHdr, Vec<u8>)> {
        let off = VIRTIO_NET_HDR_LEN;
        let mut bufs: Vec<Vec<u8>> = pkts
            .iter()
            .map(|p| {
                let mut b = Vec::with_capacity(off + MAX_IP_PACKET);
                b.extend_from_slice(&[0xaa; VIRTIO_NET_HDR_LEN]);
                b.extend_from_slice(p);
                b
            })
            .collect();
        let caps: Vec<usize> = bufs.iter().map(|b| b.capacity()).collect();
        let mut gro = TcpCoalescer::new();
        let idx = gro.coalesce(&mut bufs, off).unwrap().to_vec();
        // No reallocation happened.
        for (b, c) in bufs.iter().zip(caps) {
            assert_eq!(b.capacity(), c);
        }
        idx.iter()
            .map(|&i| {
                (
                    VirtioNetHdr::parse(&bufs[i]).unwrap(),
                    bufs[i][off..].to_vec(),
                )
            })
            .collect()
    }

    // ---- checksum -------------------------------------------------------------------------

    #[test]
    fn checksum_matches_naive_on_known_vector() {
        // RFC 1071 §3 example: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(csum_fold(csum_add(&d, 0)), 0xddf2);
        assert_eq!(naive_sum(&d), 0xddf2);
        assert_eq!(checksum(&d, 0), !0xddf2);
        // A real IPv4 header whose checksum is b861.
        let mut h = hex::decode("450000730000400040110000c0a80001c0a800c7").unwrap();
        fix_ipv4_csum(&mut h);
        assert_eq!(be16(&h, 10), 0xb861);
    }

    proptest! {
        #[test]
        fn checksum_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..3000),
                                  init in any::<u16>()) {
            let fast = csum_fold(csum_add(&data, u64::from(init)));
            let slow = naive_ones_add(naive_sum(&data), init);
            // 0x0000 and 0xffff are both zero in ones' complement.
            prop_assert!(fast == slow || (fast % 0xffff == 0 && slow % 0xffff == 0),
                "fast {fast:#x} slow {slow:#x}");
        }
    }

    // ---- virtio header --------------------------------------------------------------------

    #[test]
    fn virtio_hdr_round_trip_and_layout() {
        let h = VirtioNetHdr {
            flags: 1,
            gso_type: 4,
            hdr_len: 0x0102,
            gso_size: 0x0304,
            csum_start: 0x0506,
            csum_offset: 0x0708,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 4, 2, 1, 4, 3, 6, 5, 8, 7]);
        assert_eq!(VirtioNetHdr::parse(&b).unwrap(), h);
        assert_eq!(VirtioNetHdr::parse(&b[..9]), Err(OffloadError::Truncated));
        assert_eq!(h.emit(&mut [0u8; 9]), Err(OffloadError::BufferTooSmall));
        assert!(h.is_gso());
        assert!(!VirtioNetHdr::default().is_gso());
    }

    // ---- TSO split ------------------------------------------------------------------------

    /// Timestamp option padded to 12 bytes.
    const TS_OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];

    #[test]
    fn split_64k_tcpv4() {
        let hl = 20 + 20 + TS_OPTS.len();
        let data = payload(MAX_IP_PACKET - hl, 3);
        let sup = tcp_packet(
            false,
            0xffff_f000,
            TCP_ACK | TCP_PSH | TCP_FIN,
            &TS_OPTS,
            &data,
            true,
        );
        assert_eq!(sup.len(), MAX_IP_PACKET);
        let segs = split_all(&tso_hdr(false, hl, 1448), &sup).unwrap();
        assert_eq!(segs.len(), 46);
        check_tcp_segments(&sup, &segs, 1448);
        // seq wrapped past 2^32 somewhere in the middle.
        assert!(be32(&segs[45], 24) < 0x1000_0000);
    }

    #[test]
    fn split_64k_tcpv6() {
        let hl = 40 + 20;
        let data = payload(MAX_IP_PACKET - hl, 9);
        let sup = tcp_packet(true, 1, TCP_ACK | TCP_PSH, &[], &data, true);
        // The kernel's hdr_len may be larger than the headers: it must be ignored.
        let segs = split_all(&tso_hdr(true, 200, 1428), &sup).unwrap();
        check_tcp_segments(&sup, &segs, 1428);
    }

    #[test]
    fn split_clears_cwr_after_first_and_single_segment() {
        let hl = 40;
        let data = payload(3000, 1);
        let sup = tcp_packet(false, 5, TCP_ACK | TCP_CWR, &[], &data, true);
        let mut h = tso_hdr(false, hl, 1000);
        h.gso_type |= VIRTIO_NET_HDR_GSO_ECN;
        let segs = split_all(&h, &sup).unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[0][33], TCP_ACK | TCP_CWR);
        assert_eq!(segs[1][33], TCP_ACK);
        assert_eq!(segs[2][33], TCP_ACK);
        assert!(segs.iter().all(|s| l4_csum_valid(s)));
        // payload smaller than gso_size → one segment, same bytes but full checksum.
        let small = tcp_packet(false, 5, TCP_ACK, &[], &data[..10], true);
        let segs = split_all(&tso_hdr(false, hl, 1000), &small).unwrap();
        assert_eq!(segs.len(), 1);
        assert!(l4_csum_valid(&segs[0]));
        assert_eq!(
            segs[0],
            tcp_packet(false, 5, TCP_ACK, &[], &data[..10], false)
        );
    }

    #[test]
    fn write_all_into_caller_buffers() {
        let data = payload(5000, 2);
        let sup = tcp_packet(false, 77, TCP_ACK, &[], &data, true);
        let plan = GsoSplit::new(&tso_hdr(false, 40, 1400), &sup).unwrap();
        assert_eq!(plan.segments(), 4);
        assert_eq!(plan.max_segment_len(), 1440);
        assert_eq!(plan.segment_len(3), 40 + 800);
        assert_eq!(plan.segment_len(4), 0);
        let mut out = vec![vec![0u8; 16 + 1440]; 4];
        let mut sizes = [0usize; 4];
        assert_eq!(plan.write_all(&mut out, 16, &mut sizes).unwrap(), 4);
        assert_eq!(sizes, [1440, 1440, 1440, 840]);
        let segs: Vec<Vec<u8>> = out
            .iter()
            .zip(sizes)
            .map(|(b, n)| b[16..16 + n].to_vec())
            .collect();
        check_tcp_segments(&sup, &segs, 1400);
        // Too few or too small buffers: error, nothing written.
        let mut few = vec![vec![0u8; 2000]; 3];
        assert_eq!(
            plan.write_all(&mut few, 0, &mut sizes),
            Err(OffloadError::BufferTooSmall)
        );
        assert!(few.iter().all(|b| b.iter().all(|&x| x == 0)));
        let mut small = vec![vec![0u8; 1000]; 4];
        assert_eq!(
            plan.write_all(&mut small, 0, &mut sizes),
            Err(OffloadError::BufferTooSmall)
        );
        assert_eq!(
            plan.write_segment(4, &mut [0u8; 2000]),
            Err(OffloadError::BufferTooSmall)
        );
    }

    // ---- USO / NEEDS_CSUM / passthrough -----------------------------------------------------

    #[test]
    fn uso_split_v4_and_v6() {
        for v6 in [false, true] {
            let l3 = if v6 { 40 } else { 20 };
            let data = payload(3000, 5);
            let sup = udp_packet(v6, &data);
            let h = VirtioNetHdr {
                flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
                gso_type: VIRTIO_NET_HDR_GSO_UDP_L4,
                hdr_len: (l3 + 8) as u16,
                gso_size: 1200,
                csum_start: l3 as u16,
                csum_offset: 6,
            };
            let segs = split_all(&h, &sup).unwrap();
            assert_eq!(segs.len(), 3);
            for (i, s) in segs.iter().enumerate() {
                let dl = if i == 2 { 600 } else { 1200 };
                assert_eq!(s.len(), l3 + 8 + dl);
                assert_eq!(usize::from(be16(s, l3 + 4)), 8 + dl, "udp length");
                assert_eq!(&s[l3 + 8..], &data[i * 1200..i * 1200 + dl]);
                assert!(l4_csum_valid(s), "udp checksum v6={v6} seg {i}");
                assert_ne!(be16(s, l3 + 6), 0);
                if v6 {
                    assert_eq!(usize::from(be16(s, 4)), s.len() - 40);
                } else {
                    assert_eq!(usize::from(be16(s, 2)), s.len());
                    assert_eq!(be16(s, 4), 7 + i as u16);
                    assert!(ipv4_hdr_valid(s));
                }
            }
        }
    }

    #[test]
    fn gso_none_completes_partial_checksum() {
        let data = payload(333, 4);
        let partial = udp_packet(false, &data);
        let h = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_NONE,
            hdr_len: 28,
            gso_size: 0,
            csum_start: 20,
            csum_offset: 6,
        };
        let segs = split_all(&h, &partial).unwrap();
        assert_eq!(segs.len(), 1);
        assert!(l4_csum_valid(&segs[0]));
        assert_eq!(segs[0][..26], partial[..26]);
        assert_eq!(segs[0][28..], partial[28..]);
        let tcp = tcp_packet(true, 9, TCP_ACK | TCP_PSH, &TS_OPTS, &data, true);
        let h = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 40,
            csum_offset: 16,
            ..VirtioNetHdr::default()
        };
        let segs = split_all(&h, &tcp).unwrap();
        assert_eq!(
            segs,
            vec![tcp_packet(
                true,
                9,
                TCP_ACK | TCP_PSH,
                &TS_OPTS,
                &data,
                false
            )]
        );
    }

    #[test]
    fn non_gso_passes_through() {
        // An ICMP echo request and arbitrary bytes: copied verbatim.
        let mut icmp = ip_header(false, 1, 28, 1);
        icmp.extend_from_slice(&[8, 0, 0xf7, 0xff, 0, 0, 0, 0]);
        for pkt in [icmp.clone(), vec![1, 2, 3]] {
            let segs = split_all(&VirtioNetHdr::default(), &pkt).unwrap();
            assert_eq!(segs, vec![pkt]);
        }
        // And the coalescer leaves non-TCP alone with a zero header.
        let udp = udp_packet(false, &[1; 100]);
        let out = coalesce_all(&[icmp.clone(), udp.clone(), udp.clone()]);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|(h, _)| *h == VirtioNetHdr::default()));
        assert_eq!(out[0].1, icmp);
        assert_eq!(out[1].1, udp);
    }

    #[test]
    fn malformed_input_is_an_error() {
        let data = payload(3000, 0);
        let good = tcp_packet(false, 1, TCP_ACK, &[], &data, true);
        let h = tso_hdr(false, 40, 1000);
        assert!(GsoSplit::new(&h, &good).is_ok());
        let err = |hdr: &VirtioNetHdr, pkt: &[u8]| GsoSplit::new(hdr, pkt).unwrap_err();

        assert_eq!(
            err(&VirtioNetHdr { gso_size: 0, ..h }, &good),
            OffloadError::Malformed("gso_size 0")
        );
        assert_eq!(
            err(&VirtioNetHdr { hdr_len: 3041, ..h }, &good),
            OffloadError::Malformed("hdr_len beyond packet")
        );
        let h0 = VirtioNetHdr { hdr_len: 0, ..h };
        assert_eq!(err(&h0, &good[..10]), OffloadError::Truncated); // short IP header
        assert_eq!(
            err(&VirtioNetHdr { hdr_len: 0, ..h }, &good[..30]),
            OffloadError::Truncated
        ); // short TCP header
        assert_eq!(err(&h0, &[]), OffloadError::Truncated);
        assert_eq!(
            err(&h, &good[..10]),
            OffloadError::Malformed("hdr_len beyond packet")
        );
        let mut bad = good.clone();
        bad[32] = 0x40; // TCP data offset 4

        assert!(matches!(err(&h, &bad), OffloadError::Malformed(_)));
        let mut bad = good.clone();
        bad[0] = 0x44; // IHL 4
        assert!(matches!(err(&h, &bad), OffloadError::Malformed(_)));
        let mut bad = good.clone();
        bad[0] = 0x4f; // IHL 60: csum_start no longer points at the TCP header
        assert!(matches!(err(&h, &bad), OffloadError::Malformed(_)));
        let mut bad = good.clone();
        bad[9] = PROTO_UDP;
        assert!(matches!(err(&h, &bad), OffloadError::Malformed(_)));
        assert!(matches!(
            err(
                &VirtioNetHdr {
                    gso_type: VIRTIO_NET_HDR_GSO_TCPV6,
                    ..h
                },
                &good
            ),
            OffloadError::Malformed(_)
        ));
        assert_eq!(
            err(
                &VirtioNetHdr {
                    gso_type: VIRTIO_NET_HDR_GSO_UDP,
                    ..h
                },
                &good
            ),
            OffloadError::UnsupportedGso(VIRTIO_NET_HDR_GSO_UDP)
        );
        assert_eq!(
            err(&VirtioNetHdr { gso_type: 9, ..h }, &good),
            OffloadError::UnsupportedGso(9)
        );
        assert!(matches!(
            err(
                &VirtioNetHdr {
                    csum_start: 24,
                    ..h
                },
                &good
            ),
            OffloadError::Malformed(_)
        ));
        let none_csum = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            csum_start: 3030,
            csum_offset: 16,
            ..VirtioNetHdr::default()
        };
        assert!(matches!(err(&none_csum, &good), OffloadError::Malformed(_)));
        let mut frag = good.clone();
        frag[6] = 0x20; // MF
        assert_eq!(err(&h, &frag), OffloadError::Malformed("IPv4 fragment"));
        let mut v6 = tcp_packet(true, 1, TCP_ACK, &[], &data, true);
        v6[6] = 0; // hop-by-hop extension header
        assert!(matches!(
            err(&tso_hdr(true, 60, 1000), &v6),
            OffloadError::Malformed(_)
        ));
        let big = vec![0x45; MAX_IP_PACKET + 1];
        assert!(matches!(err(&h, &big), OffloadError::Malformed(_)));
        // gso_split with a too-small scratch buffer emits nothing.
        let mut called = false;
        assert_eq!(
            gso_split(&h, &good, &mut [0u8; 100], |_| called = true),
            Err(OffloadError::BufferTooSmall)
        );
        assert!(!called);
        // Coalescer: bad offset is an error; garbage packets pass through.
        let mut gro = TcpCoalescer::new();
        assert_eq!(
            gro.coalesce(&mut [vec![0u8; 20]], 4).unwrap_err(),
            OffloadError::BufferTooSmall
        );
        assert_eq!(
            gro.coalesce(&mut [vec![0u8; 5]], 10).unwrap_err(),
            OffloadError::Truncated
        );
        let mut bufs = vec![
            vec![0u8; 10],
            vec![0u8; 11],
            vec![0x45u8; 60],
            vec![0x60u8; 60],
        ];
        assert_eq!(gro.coalesce(&mut bufs, 10).unwrap(), &[0, 1, 2, 3]);
    }

    // ---- GRO ------------------------------------------------------------------------------

    #[test]
    fn split_then_coalesce_round_trip_v4_and_v6() {
        for v6 in [false, true] {
            let l3 = if v6 { 40 } else { 20 };
            let hl = l3 + 20 + TS_OPTS.len();
            let data = payload(MAX_IP_PACKET - hl, 11);
            let sup = tcp_packet(v6, 1000, TCP_ACK | TCP_PSH, &TS_OPTS, &data, true);
            let segs = split_all(&tso_hdr(v6, hl, 1400), &sup).unwrap();
            let out = coalesce_all(&segs);
            assert_eq!(out.len(), 1, "v6={v6}");
            let (h, pkt) = &out[0];
            assert_eq!(*h, tso_hdr(v6, hl, 1400), "v6={v6}");
            assert_eq!(
                pkt, &sup,
                "v6={v6}: coalesced packet differs from the original"
            );
            // And splitting again gives the same segments.
            assert_eq!(split_all(h, pkt).unwrap(), segs);
        }
    }

    /// Recomputes the full TCP checksum of a test packet after a header edit.
    fn refresh_tcp_csum(p: &mut [u8]) {
        let v6 = p[0] >> 4 == 6;
        let l3 = if v6 { 40 } else { 20 };
        if !v6 {
            fix_ipv4_csum(&mut p[..20]);
        }
        put16(p, l3 + TCP_CSUM_AT, 0);
        let pseudo = pseudo_of(p, PROTO_TCP, p.len() - l3);
        let c = checksum(&p[l3..], pseudo);
        put16(p, l3 + TCP_CSUM_AT, c);
    }

    const TCP_SYN: u8 = 0x02;

    #[test]
    fn coalesce_respects_flow_boundaries() {
        let d = payload(1000, 1);
        let seg =
            |seq: u32, flags: u8, n: usize| tcp_packet(false, seq, flags, &[], &d[..n], false);
        let with_ttl = |mut p: Vec<u8>, ttl: u8| {
            p[8] = ttl;
            refresh_tcp_csum(&mut p);
            p
        };
        let mut other_flow = seg(1000, TCP_ACK, 1000);
        other_flow[21] = 0x99; // different source port
        refresh_tcp_csum(&mut other_flow);
        let mut bad_csum = seg(4000, TCP_ACK, 1000);
        bad_csum[100] ^= 1;
        let pkts = vec![
            seg(0, TCP_ACK, 1000),                           // 0: head A
            other_flow,                                      // 1: other flow
            seg(1000, TCP_ACK, 1000),                        // 2: → A
            seg(2000, TCP_ACK | TCP_FIN, 1000),              // 3: FIN: ends A, passes
            seg(3000, TCP_ACK, 1000),                        // 4: head B
            bad_csum.clone(),                                // 5: bad csum: head C
            seg(5000, TCP_ACK, 1000),                        // 6: C is bad: head D
            seg(6000, TCP_ACK, 500),                         // 7: → D, short: closes D
            seg(6500, TCP_ACK, 500),                         // 8: head E (gso 500)
            with_ttl(seg(7000, TCP_ACK, 500), 63),           // 9: TTL differs: head F
            with_ttl(seg(7500, TCP_ACK | TCP_PSH, 100), 63), // 10: → F with PSH, closes F
            seg(7600, TCP_ACK, 100),                         // 11: head G
            seg(7700, TCP_ACK | TCP_SYN, 100),               // 12: SYN: ends G, passes
            seg(7800, TCP_ACK, 0),                           // 13: bare ACK: passes
        ];
        let out = coalesce_all(&pkts);
        let nsegs = |o: &(VirtioNetHdr, Vec<u8>)| {
            if o.0.is_gso() {
                (o.1.len() - 40).div_ceil(usize::from(o.0.gso_size))
            } else {
                1
            }
        };
        let counts: Vec<usize> = out.iter().map(nsegs).collect();
        assert_eq!(counts, vec![2, 1, 1, 1, 1, 2, 1, 2, 1, 1, 1]);
        assert_eq!(out[1].1, pkts[1]);
        assert_eq!(out[4].1, bad_csum);
        // A: seq 0, 2000 bytes, ACK only.
        assert_eq!(be32(&out[0].1, 24), 0);
        assert_eq!(out[0].1.len(), 40 + 2000);
        assert_eq!(out[0].1[33], TCP_ACK);
        assert_eq!(out[0].0.gso_size, 1000);
        // F: TTL 63, PSH propagated from the merged segment.
        assert_eq!(be32(&out[7].1, 24), 7000);
        assert_eq!(out[7].1[8], 63);
        assert_eq!(out[7].1[33], TCP_ACK | TCP_PSH);
        assert_eq!(out[7].0.gso_size, 500);
        assert_eq!(out[7].1.len(), 40 + 600);
        // Every packet, split again, is valid (except the corrupted one, passed as is).
        for (k, (h, p)) in out.iter().enumerate() {
            assert!(k == 4 || h.is_gso() || l4_csum_valid(p), "out {k}");
            for s in split_all(h, p).unwrap() {
                assert!(k == 4 || l4_csum_valid(&s), "out {k}");
                assert!(ipv4_hdr_valid(&s));
            }
        }
    }

    /// The trusting coalescer (after the AEAD): segments merge without their checksums being
    /// read, a wrong one included, and what passes unmerged is marked DATA_VALID; the
    /// verifying one keeps the segment with the wrong checksum apart.
    #[test]
    fn trusting_coalescer_merges_without_reading_checksums() {
        let d = payload(1000, 3);
        let mut pkts: Vec<Vec<u8>> = (0..3u32)
            .map(|i| tcp_packet(false, i * 1000, TCP_ACK, &[], &d, false))
            .collect();
        pkts[1][40] ^= 0xff; // payload corrupted after the checksum was computed
        pkts.push(tcp_packet(false, 3000, TCP_ACK | TCP_FIN, &[], &[], false));
        let run = |mut gro: TcpCoalescer| {
            let mut bufs: Vec<Vec<u8>> = pkts
                .iter()
                .map(|p| {
                    let mut b = Vec::with_capacity(10 + MAX_IP_PACKET);
                    b.resize(10, 0xaa);
                    b.extend_from_slice(p);
                    b
                })
                .collect();
            let out = gro.coalesce(&mut bufs, 10).unwrap().to_vec();
            out.iter()
                .map(|&i| (VirtioNetHdr::parse(&bufs[i]).unwrap(), bufs[i].len() - 10))
                .collect::<Vec<_>>()
        };
        let trusted = run(TcpCoalescer::trusting(4));
        assert_eq!(trusted.len(), 2, "{trusted:?}");
        assert_eq!(trusted[0].0.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!(trusted[0].1, 40 + 3000);
        assert_eq!(trusted[1].0.flags, VIRTIO_NET_HDR_F_DATA_VALID);
        assert_eq!(trusted[1].0.gso_type, VIRTIO_NET_HDR_GSO_NONE);
        let verified = run(TcpCoalescer::new());
        // The wrong checksum stops both merges it would take part in.
        assert_eq!(verified.len(), 4, "{verified:?}");
        assert!(
            verified
                .iter()
                .all(|(h, _)| h.flags != VIRTIO_NET_HDR_F_DATA_VALID)
        );
    }

    #[test]
    fn coalesce_stops_at_buffer_capacity() {
        let d = payload(1000, 1);
        let mut bufs: Vec<Vec<u8>> = (0..3u32)
            .map(|i| {
                let p = tcp_packet(false, i * 1000, TCP_ACK, &[], &d, false);
                // Room for exactly one more segment in the first buffer, none in the others.
                let mut b = Vec::with_capacity(10 + p.len() + if i == 0 { 1000 } else { 0 });
                b.resize(10, 0);
                b.extend_from_slice(&p);
                b
            })
            .collect();
        let caps: Vec<usize> = bufs.iter().map(Vec::capacity).collect();
        let out = TcpCoalescer::new()
            .coalesce(&mut bufs, 10)
            .unwrap()
            .to_vec();
        assert_eq!(out, [0, 2]);
        assert_eq!(bufs[0].len(), 10 + 40 + 2000);
        assert_eq!(VirtioNetHdr::parse(&bufs[0]).unwrap().gso_size, 1000);
        assert_eq!(
            VirtioNetHdr::parse(&bufs[2]).unwrap(),
            VirtioNetHdr::default()
        );
        assert_eq!(caps, bufs.iter().map(Vec::capacity).collect::<Vec<_>>());
    }

    #[test]
    fn coalesce_does_not_allocate_in_steady_state() {
        let d = payload(1400, 1);
        let pkts: Vec<Vec<u8>> = (0..64)
            .map(|i| tcp_packet(i % 2 == 0, (i / 2) as u32 * 1400, TCP_ACK, &[], &d, false))
            .collect();
        let mut gro = TcpCoalescer::with_capacity(64);
        let mut bufs: Vec<Vec<u8>> = Vec::new();
        for round in 0..3 {
            bufs.clear();
            for p in &pkts {
                let mut b = Vec::with_capacity(10 + MAX_IP_PACKET);
                b.resize(10, 0);
                b.extend_from_slice(p);
                bufs.push(b);
            }
            let (fc, oc) = (gro.flows.capacity(), gro.out.capacity());
            let n = gro.coalesce(&mut bufs, 10).unwrap().len();
            assert_eq!(n, 2, "round {round}");
            assert_eq!((gro.flows.capacity(), gro.out.capacity()), (fc, oc));
        }
    }

    // ---- property tests -------------------------------------------------------------------

    /// What the batch coalescer writes for `pkts`, as (virtio header, packet) per TUN write.
    fn by_batch(pkts: &[Vec<u8>], trusting: bool) -> Vec<(VirtioNetHdr, Vec<u8>)> {
        let mut bufs: Vec<Vec<u8>> = pkts
            .iter()
            .map(|p| {
                let mut b = Vec::with_capacity(16 + MAX_IP_PACKET);
                b.resize(16, 0xaa);
                b.extend_from_slice(p);
                b
            })
            .collect();
        let mut gro = if trusting {
            TcpCoalescer::trusting(8)
        } else {
            TcpCoalescer::new()
        };
        let out = gro.coalesce(&mut bufs, 16).unwrap().to_vec();
        out.iter()
            .map(|&i| {
                (
                    VirtioNetHdr::parse(&bufs[i][6..]).unwrap(),
                    bufs[i][16..].to_vec(),
                )
            })
            .collect()
    }

    /// The same through `push` and `finish`, in batches of at most `batch` buffers (the
    /// stream is cut where the buffers run out, as the engine flushes).
    fn by_push(
        pkts: &[Vec<u8>],
        trusting: bool,
        batch: usize,
    ) -> Vec<Vec<(VirtioNetHdr, Vec<u8>)>> {
        let mut bufs: Vec<Vec<u8>> = (0..batch)
            .map(|_| Vec::with_capacity(16 + MAX_IP_PACKET))
            .collect();
        let mut gro = if trusting {
            TcpCoalescer::trusting(8)
        } else {
            TcpCoalescer::new()
        };
        let mut batches = Vec::new();
        let take = |gro: &mut TcpCoalescer, bufs: &mut Vec<Vec<u8>>| {
            let out = gro.finish(bufs, 16).to_vec();
            out.iter()
                .map(|&i| {
                    (
                        VirtioNetHdr::parse(&bufs[i][6..]).unwrap(),
                        bufs[i][16..].to_vec(),
                    )
                })
                .collect::<Vec<_>>()
        };
        for p in pkts {
            if gro.used() == batch {
                batches.push(take(&mut gro, &mut bufs));
            }
            gro.push(&mut bufs, 16, p).unwrap();
        }
        batches.push(take(&mut gro, &mut bufs));
        batches
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Streaming (`push`, one copy per packet) gives exactly what the batch coalescer gives
        /// over the same packets: two flows, in-order and out-of-order segments, short ones,
        /// PSH, FIN, bare ACKs, wrong checksums, both modes.
        #[test]
        fn prop_push_matches_coalesce(steps in proptest::collection::vec(
                (any::<bool>(), 0u8..6, 0usize..3, any::<bool>(), any::<bool>()), 1..40),
                trusting in any::<bool>()) {
            let mut next = [0u32; 2];
            let pkts: Vec<Vec<u8>> = steps.iter().map(|&(flow_b, kind, size, jump, bad)| {
                let f = usize::from(flow_b);
                let len = [0usize, 500, 1000][size];
                if jump { next[f] = next[f].wrapping_add(7); }
                let flags = match kind { 0 => TCP_ACK | TCP_PSH, 1 => TCP_ACK | TCP_FIN, _ => TCP_ACK };
                let mut p = tcp_packet(flow_b, next[f], flags, &[], &payload(len, kind), false);
                next[f] = next[f].wrapping_add(len as u32);
                if bad && len > 0 {
                    let n = p.len();
                    p[n - 1] ^= 0x5a;
                }
                p
            }).collect();
            let batch = by_batch(&pkts, trusting);
            let pushed = by_push(&pkts, trusting, pkts.len());
            prop_assert_eq!(pushed.len(), 1);
            prop_assert_eq!(&pushed[0], &batch);
            // Cut into small batches, every packet still comes out once, in order.
            let small: Vec<_> = by_push(&pkts, trusting, 3).into_iter().flatten().collect();
            let bytes = |v: &[(VirtioNetHdr, Vec<u8>)]| v.iter().map(|(_, p)| p.len()).sum::<usize>();
            prop_assert!(small.len() >= batch.len());
            prop_assert!(bytes(&small) >= bytes(&batch));
        }

        #[test]
        fn prop_split_then_coalesce(v6 in any::<bool>(),
                                    opts in any::<bool>(),
                                    len in 0usize..20_000,
                                    mss in 1u16..3000,
                                    seq in any::<u32>(),
                                    psh in any::<bool>()) {
            let l3 = if v6 { 40 } else { 20 };
            let o: &[u8] = if opts { &TS_OPTS } else { &[] };
            let hl = l3 + 20 + o.len();
            let mss = mss.max((len / 64) as u16 + 1); // at most 64 segments
            let flags = if psh { TCP_ACK | TCP_PSH } else { TCP_ACK };
            let data = payload(len, seq as u8);
            let sup = tcp_packet(v6, seq, flags, o, &data, true);
            let segs = split_all(&tso_hdr(v6, hl, mss), &sup).unwrap();
            check_tcp_segments(&sup, &segs, usize::from(mss));
            let out = coalesce_all(&segs);
            if len == 0 {
                // A bare ACK is not coalescable: passes through with a zero header.
                prop_assert_eq!(out.len(), 1);
                prop_assert_eq!(out[0].0, VirtioNetHdr::default());
            } else {
                prop_assert_eq!(out.len(), 1);
                let (h, p) = &out[0];
                if segs.len() == 1 {
                    prop_assert_eq!(*h, VirtioNetHdr::default());
                    prop_assert_eq!(p, &segs[0]);
                } else {
                    prop_assert_eq!(*h, tso_hdr(v6, hl, mss));
                    prop_assert_eq!(p, &sup);
                }
            }
        }

        #[test]
        fn prop_garbage_never_panics(pkt in proptest::collection::vec(any::<u8>(), 0..200),
                                     flags in 0u8..4, gso_type in 0u8..8,
                                     hdr_len in 0u16..300, gso_size in 0u16..300,
                                     csum_start in 0u16..300, csum_offset in 0u16..40,
                                     v in 0u8..3) {
            let mut pkt = pkt;
            if let Some(b) = pkt.first_mut() {
                // Bias towards plausible IP headers.
                *b = match v { 0 => 0x45, 1 => 0x60, _ => *b };
            }
            if pkt.len() > 9 && v == 0 { pkt[9] = if flags & 1 == 0 { 6 } else { 17 }; }
            if pkt.len() > 6 && v == 1 { pkt[6] = if flags & 1 == 0 { 6 } else { 17 }; }
            let h = VirtioNetHdr { flags, gso_type, hdr_len, gso_size, csum_start, csum_offset };
            let mut scratch = vec![0u8; 70_000];
            let _ = gso_split(&h, &pkt, &mut scratch, |_| {});
            let mut bufs = vec![[vec![0u8; 10], pkt.clone()].concat(), [vec![0u8; 10], pkt].concat()];
            let _ = TcpCoalescer::new().coalesce(&mut bufs, 10);
        }
    }
}
