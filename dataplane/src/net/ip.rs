//! IPv4 (RFC 791) and IPv6 (RFC 8200) headers: the one place in the dataplane that knows
//! their layout.
//!
//! [`IpPacket`] is a checked view in the manner of [`crate::esp::wire`]: once
//! [`IpPacket::new_checked`] has accepted a buffer (a version of 4 or 6 and the whole fixed
//! header present, for IPv4 an IHL of at least 5 that fits the buffer), no accessor or setter
//! can panic. [`IpPacket::new_exact`] also wants the length field to match the buffer.
//! [`IpHeader`] is what a checked header says without its buffer, to rewrite it once the
//! bytes have moved (ESP transport mode); [`IpRepr`] builds a header from addresses.
//!
//! The protocol numbers are IANA's "Assigned Internet Protocol Numbers": the same values are
//! an IPv4 protocol, an IPv6 next header and an ESP next header.
//!
//! ```text
//!  IPv4                                   IPv6
//!  0      version|IHL  TOS  total length  0      version|TC|flow label
//!  4      identification  flags|offset    4      payload length  next header  hop limit
//!  8      TTL  protocol  header checksum  8..24  source address
//!  12     source address                  24..40 destination address
//!  16     destination address
//!  20..   options (IHL > 5)
//! ```

use std::fmt;
use std::net::IpAddr;
use std::ops::Range;

use super::checksum;

/// IPv6 hop-by-hop options.
pub const IPPROTO_HOPOPTS: u8 = 0;
/// IPv4 in IP (the ESP next header of a tunnelled IPv4 packet).
pub const IPPROTO_IPIP: u8 = 4;
/// TCP.
pub const IPPROTO_TCP: u8 = 6;
/// UDP.
pub const IPPROTO_UDP: u8 = 17;
/// IPv6 in IP (the ESP next header of a tunnelled IPv6 packet).
pub const IPPROTO_IPV6: u8 = 41;
/// IPv6 routing header.
pub const IPPROTO_ROUTING: u8 = 43;
/// IPv6 fragment header.
pub const IPPROTO_FRAGMENT: u8 = 44;
/// ESP.
pub const IPPROTO_ESP: u8 = 50;
/// IPv6 "no next header" (an ESP dummy packet, RFC 4303 section 2.6).
pub const IPPROTO_NONE: u8 = 59;

/// An IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// The IPv6 fixed header.
pub const IPV6_HEADER_LEN: usize = 40;
/// The largest IP packet (IPv4 total length, IPv6 header + payload length) we build or accept.
pub const MAX_PACKET_LEN: usize = 65_535;
/// TTL / hop limit of the headers mifsec builds.
pub const DEFAULT_HOP_LIMIT: u8 = 64;

/// Why bytes are not an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IpError {
    /// Shorter than the fixed header, or than the IPv4 IHL says.
    Truncated,
    /// The version nibble is neither 4 nor 6.
    BadVersion(u8),
    /// An IPv4 IHL below 5.
    BadHeaderLen,
    /// The length field does not match the bytes (only [`IpPacket::new_exact`]).
    BadLength,
}

impl fmt::Display for IpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IpError::Truncated => f.write_str("IP packet truncated"),
            IpError::BadVersion(v) => write!(f, "IP version {v} is not 4 or 6"),
            IpError::BadHeaderLen => f.write_str("IPv4 IHL < 5"),
            IpError::BadLength => f.write_str("IP length field does not match the packet"),
        }
    }
}

impl std::error::Error for IpError {}

/// The IP version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Version {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

/// The version nibble of the packet in `pkt`, if it has a first byte.
#[inline]
pub fn version(pkt: &[u8]) -> Option<u8> {
    pkt.first().map(|b| b >> 4)
}

/// Source and destination of the packet in `pkt`, if it has a checked header
/// ([`IpPacket::new_checked`]).
#[inline]
pub fn addrs(pkt: &[u8]) -> Option<(IpAddr, IpAddr)> {
    IpPacket::new_checked(pkt).ok().map(|p| p.addrs())
}

/// Whether a packet of `total` bytes fits the length field of a header of this version (IPv4:
/// total length; IPv6: payload length, the 40 bytes of header not counted).
#[inline]
fn len_fits(v: Version, total: usize) -> bool {
    match v {
        Version::V4 => total <= usize::from(u16::MAX),
        Version::V6 => total <= IPV6_HEADER_LEN + usize::from(u16::MAX),
    }
}

/// Where the source and destination addresses lie in a header of this version.
#[inline(always)]
fn addr_ranges(v: Version) -> (Range<usize>, Range<usize>) {
    match v {
        Version::V4 => (12..16, 16..20),
        Version::V6 => (8..24, 24..40),
    }
}

/// What a checked header says, without its buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    /// 4 or 6.
    pub version: Version,
    /// Bytes of header before the payload (IPv4 with options: IHL * 4; IPv6: 40, extension
    /// headers being payload here).
    pub header_len: usize,
    /// The protocol (IPv4) or next header (IPv6) field.
    pub protocol: u8,
}

impl IpHeader {
    /// The header at the start of `pkt`, its length field matching `pkt` exactly
    /// ([`IpPacket::new_exact`]).
    #[inline(always)]
    pub fn parse(pkt: &[u8]) -> Result<IpHeader, IpError> {
        IpPacket::new_exact(pkt).map(|p| p.header())
    }

    /// Whether this is IPv6.
    #[inline(always)]
    pub fn is_ipv6(&self) -> bool {
        self.version == Version::V6
    }

    /// Rewrites the header at the start of `pkt` (its bytes as they were checked; `pkt`'s
    /// length is the new packet length) with a new protocol, fixing the length field and,
    /// for IPv4, the checksum. `None` (nothing written) if `pkt` is shorter than the header
    /// or longer than the length field can say.
    #[inline(always)]
    pub fn rewrite(&self, pkt: &mut [u8], protocol: u8) -> Option<()> {
        let len = pkt.len();
        if !len_fits(self.version, len) {
            return None;
        }
        let mut p = IpPacket::with_header(pkt, *self)?;
        p.set_total_len(len);
        p.set_protocol(protocol);
        p.fill_checksum();
        Some(())
    }
}

/// A view of an IPv4 or IPv6 packet whose fixed header is present.
#[derive(Debug, Clone, Copy)]
pub struct IpPacket<T> {
    buf: T,
    hdr: IpHeader,
}

impl<T: AsRef<[u8]>> IpPacket<T> {
    /// Wraps `buf` after checking the version and that the fixed header (IPv4: the IHL's
    /// worth, at least 20 bytes) is present. The length field is not checked: a TSO
    /// super-packet's or a truncated packet's may not match.
    #[inline(always)]
    pub fn new_checked(buf: T) -> Result<Self, IpError> {
        let b = buf.as_ref();
        let first = *b.first().ok_or(IpError::Truncated)?;
        let hdr = match first >> 4 {
            4 => {
                if b.len() < IPV4_HEADER_LEN {
                    return Err(IpError::Truncated);
                }
                let header_len = usize::from(first & 0x0f) * 4;
                if header_len < IPV4_HEADER_LEN {
                    return Err(IpError::BadHeaderLen);
                }
                if b.len() < header_len {
                    return Err(IpError::Truncated);
                }
                IpHeader {
                    version: Version::V4,
                    header_len,
                    protocol: b[9],
                }
            }
            6 => {
                if b.len() < IPV6_HEADER_LEN {
                    return Err(IpError::Truncated);
                }
                IpHeader {
                    version: Version::V6,
                    header_len: IPV6_HEADER_LEN,
                    protocol: b[6],
                }
            }
            v => return Err(IpError::BadVersion(v)),
        };
        Ok(IpPacket { buf, hdr })
    }

    /// A view of `buf` whose header was checked before as `hdr` (a copy of that header at
    /// its start, the same bytes moved, a segment cut from the packet): two comparisons
    /// instead of a parse, so that a header is parsed once per packet, not once per segment.
    /// `None` if `hdr`'s length is not one a check gives (IPv4: at least 20; IPv6: 40) or
    /// `buf` is shorter.
    #[inline(always)]
    pub fn with_header(buf: T, hdr: IpHeader) -> Option<Self> {
        let ok = match hdr.version {
            Version::V4 => hdr.header_len >= IPV4_HEADER_LEN,
            Version::V6 => hdr.header_len == IPV6_HEADER_LEN,
        };
        (ok && buf.as_ref().len() >= hdr.header_len).then_some(IpPacket { buf, hdr })
    }

    /// As [`IpPacket::new_checked`], and the length field must say exactly `buf`'s length
    /// (for IPv4 also at least the header).
    #[inline(always)]
    pub fn new_exact(buf: T) -> Result<Self, IpError> {
        let p = Self::new_checked(buf)?;
        if p.total_len() != p.buf.as_ref().len() {
            return Err(IpError::BadLength);
        }
        Ok(p)
    }

    #[inline(always)]
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    #[inline(always)]
    fn be16(&self, at: usize) -> u16 {
        let b = self.b();
        u16::from_be_bytes([b[at], b[at + 1]])
    }

    /// What the header says, without the buffer.
    #[inline(always)]
    pub fn header(&self) -> IpHeader {
        IpHeader {
            protocol: self.protocol(),
            ..self.hdr
        }
    }

    /// The version.
    #[inline(always)]
    pub fn version(&self) -> Version {
        self.hdr.version
    }

    /// Whether this is IPv6.
    #[inline(always)]
    pub fn is_ipv6(&self) -> bool {
        self.hdr.version == Version::V6
    }

    /// Bytes of header (IPv4: IHL * 4; IPv6: 40).
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        self.hdr.header_len
    }

    /// The protocol (IPv4) or next header (IPv6) field.
    #[inline(always)]
    pub fn protocol(&self) -> u8 {
        match self.hdr.version {
            Version::V4 => self.b()[9],
            Version::V6 => self.b()[6],
        }
    }

    /// The packet length the header claims (IPv4: total length; IPv6: 40 + payload length).
    #[inline(always)]
    pub fn total_len(&self) -> usize {
        match self.hdr.version {
            Version::V4 => usize::from(self.be16(2)),
            Version::V6 => IPV6_HEADER_LEN + usize::from(self.be16(4)),
        }
    }

    /// The IPv4 identification (0 for IPv6, whose fragment header is not read here).
    #[inline(always)]
    pub fn ident(&self) -> u16 {
        match self.hdr.version {
            Version::V4 => self.be16(4),
            Version::V6 => 0,
        }
    }

    /// Whether this is an IPv4 fragment (more fragments, or an offset). IPv6 fragments carry
    /// a fragment header: protocol [`IPPROTO_FRAGMENT`].
    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.hdr.version == Version::V4 && self.be16(6) & 0x3fff != 0
    }

    /// IPv4's three flag bits (reserved, DF, MF); 0 for IPv6.
    #[inline(always)]
    pub fn v4_flags(&self) -> u8 {
        match self.hdr.version {
            Version::V4 => self.b()[6] >> 5,
            Version::V6 => 0,
        }
    }

    /// IPv4's TOS byte or IPv6's traffic class (DSCP and ECN).
    #[inline(always)]
    pub fn traffic_class(&self) -> u8 {
        let b = self.b();
        match self.hdr.version {
            Version::V4 => b[1],
            Version::V6 => (b[0] << 4) | (b[1] >> 4),
        }
    }

    /// Whether `other` has the same version, traffic class / TOS, hop limit / TTL and (IPv4)
    /// flag bits: the header fields that must agree for packets to be one flow's segments
    /// (GRO). The IPv6 flow label and the IPv4 ID are not compared.
    #[inline(always)]
    pub fn same_service<U: AsRef<[u8]>>(&self, other: &IpPacket<U>) -> bool {
        let (a, b) = (self.b(), other.b());
        match (self.hdr.version, other.hdr.version) {
            (Version::V4, Version::V4) => a[1] == b[1] && a[6] >> 5 == b[6] >> 5 && a[8] == b[8],
            (Version::V6, Version::V6) => a[0] == b[0] && a[1] >> 4 == b[1] >> 4 && a[7] == b[7],
            _ => false,
        }
    }

    /// IPv4's TTL or IPv6's hop limit.
    #[inline(always)]
    pub fn hop_limit(&self) -> u8 {
        match self.hdr.version {
            Version::V4 => self.b()[8],
            Version::V6 => self.b()[7],
        }
    }

    /// The source address's bytes (4 or 16).
    #[inline(always)]
    pub fn src_bytes(&self) -> &[u8] {
        &self.b()[addr_ranges(self.hdr.version).0]
    }

    /// The destination address's bytes (4 or 16).
    #[inline(always)]
    pub fn dst_bytes(&self) -> &[u8] {
        &self.b()[addr_ranges(self.hdr.version).1]
    }

    /// Source and destination.
    #[inline(always)]
    pub fn addrs(&self) -> (IpAddr, IpAddr) {
        let b = self.b();
        match self.hdr.version {
            Version::V4 => {
                let s: [u8; 4] = [b[12], b[13], b[14], b[15]];
                let d: [u8; 4] = [b[16], b[17], b[18], b[19]];
                (IpAddr::from(s), IpAddr::from(d))
            }
            Version::V6 => {
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s.copy_from_slice(&b[8..24]);
                d.copy_from_slice(&b[24..40]);
                (IpAddr::from(s), IpAddr::from(d))
            }
        }
    }

    /// The source address.
    #[inline(always)]
    pub fn src(&self) -> IpAddr {
        self.addrs().0
    }

    /// The destination address.
    #[inline(always)]
    pub fn dst(&self) -> IpAddr {
        self.addrs().1
    }

    /// The unfolded sum of the TCP/UDP pseudo-header (RFC 9293 section 3.1, RFC 8200 section
    /// 8.1) of this packet's addresses, `protocol` and an upper-layer length of `l4_len`.
    #[inline(always)]
    pub fn pseudo_header_sum(&self, protocol: u8, l4_len: usize) -> u64 {
        checksum::add(self.dst_bytes(), checksum::add(self.src_bytes(), 0))
            + u64::from(protocol)
            + l4_len as u64
    }

    /// Whether the IPv4 header checksum is right (always true for IPv6, which has none).
    #[inline(always)]
    pub fn checksum_ok(&self) -> bool {
        match self.hdr.version {
            Version::V4 => checksum::checksum(&self.b()[..self.hdr.header_len], 0) == 0,
            Version::V6 => true,
        }
    }

    /// The header's bytes.
    #[inline(always)]
    pub fn header_bytes(&self) -> &[u8] {
        &self.b()[..self.hdr.header_len]
    }

    /// Everything after the header.
    #[inline(always)]
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.hdr.header_len..]
    }

    /// The whole packet.
    #[inline(always)]
    pub fn as_bytes(&self) -> &[u8] {
        self.b()
    }

    /// Gives the buffer back.
    #[inline(always)]
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> IpPacket<T> {
    #[inline(always)]
    fn put16(&mut self, at: usize, v: u16) {
        self.buf.as_mut()[at..at + 2].copy_from_slice(&v.to_be_bytes());
    }

    /// Sets the protocol (IPv4) or next header (IPv6). The IPv4 checksum is not updated:
    /// [`IpPacket::fill_checksum`] once all fields are set.
    #[inline(always)]
    pub fn set_protocol(&mut self, protocol: u8) {
        let at = match self.hdr.version {
            Version::V4 => 9,
            Version::V6 => 6,
        };
        self.buf.as_mut()[at] = protocol;
        self.hdr.protocol = protocol;
    }

    /// Sets the length field so that it says `total` bytes of packet (IPv4: total length;
    /// IPv6: payload length `total - 40`), cut to 16 bits: callers keep `total` within what
    /// the field can say.
    #[inline(always)]
    pub fn set_total_len(&mut self, total: usize) {
        match self.hdr.version {
            Version::V4 => self.put16(2, total as u16),
            Version::V6 => self.put16(4, total.saturating_sub(IPV6_HEADER_LEN) as u16),
        }
    }

    /// Sets the IPv4 identification (nothing for IPv6).
    #[inline(always)]
    pub fn set_ident(&mut self, id: u16) {
        if self.hdr.version == Version::V4 {
            self.put16(4, id);
        }
    }

    /// Recomputes the IPv4 header checksum (nothing for IPv6).
    #[inline(always)]
    pub fn fill_checksum(&mut self) {
        if self.hdr.version == Version::V4 {
            self.put16(10, 0);
            let c = checksum::checksum(&self.buf.as_ref()[..self.hdr.header_len], 0);
            self.put16(10, c);
        }
    }

    /// The packet's bytes, mutably.
    #[inline(always)]
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
}

/// A header to build: the fields mifsec sets, every other one zero (IPv4: no options, DF, ID
/// 0; IPv6: traffic class and flow label 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpRepr {
    /// Source; of the same family as `dst`.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// Protocol / next header.
    pub protocol: u8,
    /// Bytes of payload that will follow the header.
    pub payload_len: usize,
    /// TTL / hop limit.
    pub hop_limit: u8,
}

impl IpRepr {
    /// The header's length: 20 or 40.
    #[inline(always)]
    pub fn header_len(&self) -> usize {
        match self.src {
            IpAddr::V4(_) => IPV4_HEADER_LEN,
            IpAddr::V6(_) => IPV6_HEADER_LEN,
        }
    }

    /// Writes the header to the front of `buf` and returns its length. `None` (nothing
    /// written) if the addresses are of two families, the packet would be longer than the
    /// length field can say, or `buf` is shorter than the header.
    #[inline(always)]
    pub fn emit(&self, buf: &mut [u8]) -> Option<usize> {
        let hl = self.header_len();
        let v = match self.src {
            IpAddr::V4(_) => Version::V4,
            IpAddr::V6(_) => Version::V6,
        };
        if !len_fits(v, hl.saturating_add(self.payload_len)) {
            return None;
        }
        let h = buf.get_mut(..hl)?;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = (hl + self.payload_len) as u16;
                h[0] = 0x45;
                h[1] = 0;
                h[2..4].copy_from_slice(&total.to_be_bytes());
                h[4..8].copy_from_slice(&[0, 0, 0x40, 0]);
                h[8] = self.hop_limit;
                h[9] = self.protocol;
                h[10..12].copy_from_slice(&[0, 0]);
                h[12..16].copy_from_slice(&s.octets());
                h[16..20].copy_from_slice(&d.octets());
                let c = checksum::checksum(h, 0);
                h[10..12].copy_from_slice(&c.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                h[..4].copy_from_slice(&[0x60, 0, 0, 0]);
                h[4..6].copy_from_slice(&(self.payload_len as u16).to_be_bytes());
                h[6] = self.protocol;
                h[7] = self.hop_limit;
                h[8..24].copy_from_slice(&s.octets());
                h[24..40].copy_from_slice(&d.octets());
            }
            _ => return None,
        }
        Some(hl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(len: usize) -> Vec<u8> {
        let mut p = vec![0u8; len];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        p[9] = IPPROTO_UDP;
        p[12..16].copy_from_slice(&[10, 1, 0, 1]);
        p[16..20].copy_from_slice(&[10, 2, 0, 1]);
        p
    }

    #[test]
    fn checked_and_exact_lengths() {
        let mut p = v4(28);
        assert!(IpPacket::new_exact(&p[..]).is_ok());
        assert_eq!(IpHeader::parse(&p).unwrap().header_len, 20);
        p[3] = 29;
        assert_eq!(IpHeader::parse(&p), Err(IpError::BadLength));
        assert!(IpPacket::new_checked(&p[..]).is_ok());
        p[3] = 28;
        p[0] = 0x44;
        assert_eq!(IpHeader::parse(&p), Err(IpError::BadHeaderLen));
        p[0] = 0x4f;
        assert_eq!(IpHeader::parse(&p), Err(IpError::Truncated));
        assert_eq!(IpHeader::parse(&[]), Err(IpError::Truncated));
        assert_eq!(IpHeader::parse(&[0x60]), Err(IpError::Truncated));
        assert_eq!(IpHeader::parse(&[0x70; 60]), Err(IpError::BadVersion(7)));
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[5] = 8;
        v6[6] = IPPROTO_TCP;
        let h = IpHeader::parse(&v6).unwrap();
        assert_eq!((h.version, h.header_len, h.protocol), (Version::V6, 40, 6));
        v6[5] = 9;
        assert_eq!(IpHeader::parse(&v6), Err(IpError::BadLength));
    }

    #[test]
    fn addrs_of_v4_v6_and_garbage() {
        let p = v4(20);
        let v = IpPacket::new_checked(&p[..]).unwrap();
        assert_eq!(
            v.addrs(),
            ("10.1.0.1".parse().unwrap(), "10.2.0.1".parse().unwrap())
        );
        assert_eq!(v.src_bytes(), &[10, 1, 0, 1]);
        assert!(IpPacket::new_checked(&p[..19]).is_err());
        let mut p6 = [0u8; 40];
        p6[0] = 0x60;
        p6[23] = 1;
        p6[39] = 2;
        let v = IpPacket::new_checked(&p6[..]).unwrap();
        assert_eq!(v.addrs(), ("::1".parse().unwrap(), "::2".parse().unwrap()));
        assert!(IpPacket::new_checked(&p6[..39]).is_err());
        assert!(IpPacket::new_checked(&[][..]).is_err());
        assert!(IpPacket::new_checked(&[0x70; 60][..]).is_err());
    }

    #[test]
    fn rewrite_sets_length_protocol_and_checksum() {
        let mut p = v4(40);
        let h = IpHeader::parse(&p[..28]).unwrap_err();
        assert_eq!(h, IpError::BadLength);
        let h = IpHeader::parse(&p).unwrap();
        h.rewrite(&mut p[..36], IPPROTO_ESP).unwrap();
        let v = IpPacket::new_exact(&p[..36]).unwrap();
        assert_eq!(v.protocol(), IPPROTO_ESP);
        assert!(v.checksum_ok());
        assert!(h.rewrite(&mut p[..10], IPPROTO_ESP).is_none());
    }

    #[test]
    fn repr_emits_what_the_view_reads() {
        for (s, d) in [("198.18.0.1", "198.18.0.2"), ("fd00::1", "fd00::2")] {
            let repr = IpRepr {
                src: s.parse().unwrap(),
                dst: d.parse().unwrap(),
                protocol: IPPROTO_ESP,
                payload_len: 100,
                hop_limit: DEFAULT_HOP_LIMIT,
            };
            let mut buf = vec![0xaau8; 40 + 100];
            let hl = repr.emit(&mut buf).unwrap();
            assert_eq!(hl, repr.header_len());
            let v = IpPacket::new_exact(&buf[..hl + 100]).unwrap();
            assert_eq!(v.addrs(), (repr.src, repr.dst));
            assert_eq!(v.protocol(), IPPROTO_ESP);
            assert_eq!(v.hop_limit(), 64);
            assert!(v.checksum_ok());
            assert!(!v.is_fragment());
            assert!(repr.emit(&mut buf[..hl - 1]).is_none());
        }
        let mixed = IpRepr {
            src: "10.0.0.1".parse().unwrap(),
            dst: "::1".parse().unwrap(),
            protocol: 0,
            payload_len: 0,
            hop_limit: 1,
        };
        assert!(mixed.emit(&mut [0u8; 40]).is_none());
    }

    #[test]
    fn with_header_and_same_service() {
        let p = v4(28);
        let h = IpHeader::parse(&p).unwrap();
        assert!(IpPacket::with_header(&p[..20], h).is_some());
        assert!(IpPacket::with_header(&p[..19], h).is_none());
        let bad = IpHeader { header_len: 8, ..h };
        assert!(IpPacket::with_header(&p[..], bad).is_none());
        let a = IpPacket::new_checked(&p[..]).unwrap();
        let mut q = p.clone();
        q[4] = 9; // ID
        assert!(a.same_service(&IpPacket::new_checked(&q[..]).unwrap()));
        q[8] = 1; // TTL
        assert!(!a.same_service(&IpPacket::new_checked(&q[..]).unwrap()));
        let mut v6 = [0u8; 40];
        v6[0] = 0x60;
        let b = IpPacket::new_checked(&v6[..]).unwrap();
        assert!(!a.same_service(&b) && b.same_service(&b));
        let mut w6 = v6;
        w6[3] = 7; // flow label
        assert!(b.same_service(&IpPacket::new_checked(&w6[..]).unwrap()));
        w6[1] = 0x10; // traffic class
        assert!(!b.same_service(&IpPacket::new_checked(&w6[..]).unwrap()));
    }

    #[test]
    fn known_ipv4_header_checksum() {
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        let v = IpPacket::new_checked(&h[..]).unwrap();
        assert!(v.checksum_ok());
        let mut m = h;
        let mut v = IpPacket::new_checked(&mut m[..]).unwrap();
        v.set_ident(0);
        v.fill_checksum();
        assert_eq!(m, h);
    }
}
