//! The little of IPv4 and IPv6 that ESP needs: the version of an inner packet, and for
//! transport mode the header length, the protocol field, the length fields and the IPv4
//! header checksum.

/// An IP header found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpHeader {
    /// 4 or 6.
    pub version: u8,
    /// Bytes of header before the payload (IPv4 with options: IHL * 4; IPv6: 40).
    pub header_len: usize,
    /// The protocol (IPv4) or next header (IPv6) field.
    pub protocol: u8,
}

/// IPv6 extension headers that must stay in front of ESP (RFC 4303 section 3.1.1). mifsec's
/// transport mode does not walk them; such packets are refused rather than misprotected.
const IPV6_EXT_BEFORE_ESP: [u8; 3] = [0, 43, 44];

impl IpHeader {
    /// Parses the header at the start of `pkt`, checking that its length fields fit `pkt`
    /// exactly. Returns `None` for anything that is not a well-formed IPv4/IPv6 header.
    pub fn parse(pkt: &[u8]) -> Option<IpHeader> {
        match pkt.first()? >> 4 {
            4 => {
                let header_len = usize::from(pkt.first()? & 0x0f) * 4;
                let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
                if header_len < 20 || total != pkt.len() || header_len > total {
                    return None;
                }
                Some(IpHeader {
                    version: 4,
                    header_len,
                    protocol: pkt[9],
                })
            }
            6 => {
                let payload = usize::from(u16::from_be_bytes([*pkt.get(4)?, *pkt.get(5)?]));
                if pkt.len() < 40 || payload + 40 != pkt.len() {
                    return None;
                }
                Some(IpHeader {
                    version: 6,
                    header_len: 40,
                    protocol: pkt[6],
                })
            }
            _ => None,
        }
    }

    /// Whether transport mode can insert ESP right after this header. Protocol 59 is
    /// refused too: as ESP's next header it marks a dummy packet, which the peer discards.
    pub fn transport_ok(&self) -> bool {
        self.protocol != 59 && (self.version == 4 || !IPV6_EXT_BEFORE_ESP.contains(&self.protocol))
    }

    /// Rewrites the header at the start of `pkt` (whose length is the new packet length) with
    /// a new protocol, fixing the length field and, for IPv4, the checksum.
    pub fn rewrite(&self, pkt: &mut [u8], protocol: u8) {
        let len = pkt.len();
        if self.version == 4 {
            pkt[2..4].copy_from_slice(&(len as u16).to_be_bytes());
            pkt[9] = protocol;
            pkt[10..12].copy_from_slice(&[0, 0]);
            let c = ipv4_checksum(&pkt[..self.header_len]);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            pkt[4..6].copy_from_slice(&((len - 40) as u16).to_be_bytes());
            pkt[6] = protocol;
        }
    }
}

/// The version nibble of an inner packet, if it has one.
#[inline]
pub fn version(pkt: &[u8]) -> Option<u8> {
    pkt.first().map(|b| b >> 4)
}

/// The IPv4 header checksum (RFC 791) over `header` with its checksum field as it is.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for pair in header.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_header() {
        // RFC 1071 style example: a real IPv4 header with its checksum 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(ipv4_checksum(&h), 0xb861);
    }

    #[test]
    fn parse_rejects_bad_lengths() {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[3] = 28;
        assert!(IpHeader::parse(&p).is_some());
        p[3] = 29;
        assert!(IpHeader::parse(&p).is_none());
        p[3] = 28;
        p[0] = 0x44;
        assert!(IpHeader::parse(&p).is_none());
        assert!(IpHeader::parse(&[]).is_none());
        assert!(IpHeader::parse(&[0x60]).is_none());
    }
}
