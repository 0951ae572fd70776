//! The ESP packet format and its UDP encapsulation.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |               Security Parameters Index (SPI)                 |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                Sequence Number (low 32 bits)                  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    Explicit IV (8 bytes)                      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |   Payload ... | Padding (0-3) | Pad Length    | Next Header   |  (encrypted)
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                    ICV (16 bytes)                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! On UDP port 4500 (RFC 3948) the same socket carries ESP, IKE behind a four-byte zero
//! "non-ESP marker" (an ESP SPI is never zero), and one-byte 0xFF NAT keepalives.

use crate::aead::{IV_LEN, TAG_LEN};
use crate::net::ip;

/// IP protocol number of ESP.
pub const IPPROTO_ESP: u8 = ip::IPPROTO_ESP;
/// Next header for an IPv4 packet in tunnel mode.
pub const NEXT_HEADER_IPV4: u8 = ip::IPPROTO_IPIP;
/// Next header for an IPv6 packet in tunnel mode.
pub const NEXT_HEADER_IPV6: u8 = ip::IPPROTO_IPV6;
/// Next header of a dummy packet (RFC 4303 section 2.6), discarded by the receiver.
pub const NEXT_HEADER_NONE: u8 = ip::IPPROTO_NONE;
/// SPI and sequence number.
pub const HEADER_LEN: usize = 8;
/// Bytes in front of the payload: SPI, sequence number and explicit IV.
pub const OVERHEAD_FRONT: usize = HEADER_LEN + IV_LEN;
/// The smallest AEAD ESP packet: header, IV, a four-byte aligned empty trailer, ICV.
pub const MIN_LEN: usize = OVERHEAD_FRONT + 4 + TAG_LEN;
/// The non-ESP marker that prefixes IKE messages on port 4500.
pub const NON_ESP_MARKER: [u8; 4] = [0; 4];
/// The one byte of a NAT keepalive (RFC 3948 section 2.3).
pub const NAT_KEEPALIVE: u8 = 0xFF;

/// Why a byte string is not an ESP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireError {
    /// Shorter than [`MIN_LEN`].
    Truncated,
    /// The encrypted part is not a multiple of four bytes long (RFC 4303 section 2.4).
    Misaligned,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Truncated => write!(f, "ESP packet shorter than {MIN_LEN} bytes"),
            WireError::Misaligned => f.write_str("ESP payload not a multiple of 4 bytes"),
        }
    }
}

impl std::error::Error for WireError {}

/// A view of an AEAD ESP packet. After [`EspPacket::new_checked`] no accessor can panic.
#[derive(Debug, Clone, Copy)]
pub struct EspPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Wraps `buf` after checking its length and alignment.
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let len = buf.as_ref().len();
        if len < MIN_LEN {
            return Err(WireError::Truncated);
        }
        if (len - OVERHEAD_FRONT - TAG_LEN) % 4 != 0 {
            return Err(WireError::Misaligned);
        }
        Ok(EspPacket { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// The SPI.
    #[inline]
    pub fn spi(&self) -> u32 {
        u32::from_be_bytes([self.b()[0], self.b()[1], self.b()[2], self.b()[3]])
    }

    /// The low 32 bits of the sequence number.
    #[inline]
    pub fn seq_low(&self) -> u32 {
        u32::from_be_bytes([self.b()[4], self.b()[5], self.b()[6], self.b()[7]])
    }

    /// The explicit IV.
    #[inline]
    pub fn iv(&self) -> [u8; IV_LEN] {
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&self.b()[HEADER_LEN..OVERHEAD_FRONT]);
        iv
    }

    /// The encrypted payload and trailer, between IV and ICV.
    #[inline]
    pub fn ciphertext(&self) -> &[u8] {
        let b = self.b();
        &b[OVERHEAD_FRONT..b.len() - TAG_LEN]
    }

    /// The ICV.
    #[inline]
    pub fn icv(&self) -> [u8; TAG_LEN] {
        let b = self.b();
        let mut t = [0u8; TAG_LEN];
        t.copy_from_slice(&b[b.len() - TAG_LEN..]);
        t
    }

    /// The whole packet.
    pub fn as_bytes(&self) -> &[u8] {
        self.b()
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buf
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    /// The encrypted payload, mutably (for in-place decryption).
    #[inline]
    pub fn ciphertext_mut(&mut self) -> &mut [u8] {
        let b = self.buf.as_mut();
        let len = b.len();
        &mut b[OVERHEAD_FRONT..len - TAG_LEN]
    }
}

/// The fixed ESP header fields, for emitting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EspHeader {
    /// The SPI.
    pub spi: u32,
    /// The full sequence number; the low 32 bits go on the wire, all 64 into the IV.
    pub seq: u64,
}

impl EspHeader {
    /// Writes SPI, low sequence number and the IV (the full 64-bit sequence number, unique per
    /// SA as RFC 4106 section 3.1 requires) into the first [`OVERHEAD_FRONT`] bytes of `out`.
    /// Returns `None` if `out` is too short.
    #[inline]
    pub fn emit(&self, out: &mut [u8]) -> Option<()> {
        let out = out.get_mut(..OVERHEAD_FRONT)?;
        out[..4].copy_from_slice(&self.spi.to_be_bytes());
        out[4..8].copy_from_slice(&(self.seq as u32).to_be_bytes());
        out[8..16].copy_from_slice(&self.seq.to_be_bytes());
        Some(())
    }

    /// The AEAD's additional data: SPI and sequence number, with the high 32 bits in the
    /// middle when ESN is on (RFC 4106 section 5). Returns the buffer and its used length.
    #[inline]
    pub fn aad(&self, esn: bool) -> ([u8; 12], usize) {
        let mut aad = [0u8; 12];
        aad[..4].copy_from_slice(&self.spi.to_be_bytes());
        if esn {
            aad[4..8].copy_from_slice(&((self.seq >> 32) as u32).to_be_bytes());
            aad[8..12].copy_from_slice(&(self.seq as u32).to_be_bytes());
            (aad, 12)
        } else {
            aad[4..8].copy_from_slice(&(self.seq as u32).to_be_bytes());
            (aad, 8)
        }
    }
}

/// What a datagram received on an ESP-in-UDP port holds (RFC 3948 section 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpPayload<'a> {
    /// A NAT keepalive: never ESP, never IKE, just discarded.
    Keepalive,
    /// An IKE message, the non-ESP marker already removed.
    Ike(&'a [u8]),
    /// An ESP packet (SPI non-zero); it still has to pass [`EspPacket::new_checked`].
    Esp(&'a [u8]),
    /// None of the above (shorter than an ESP header, or a marker with nothing behind it).
    Malformed,
}

/// Sorts a UDP payload received on port 4500 into keepalive, IKE or ESP.
#[inline]
pub fn classify_udp_payload(payload: &[u8]) -> UdpPayload<'_> {
    match payload {
        [NAT_KEEPALIVE] => UdpPayload::Keepalive,
        [0, 0, 0, 0, ike @ ..] if !ike.is_empty() => UdpPayload::Ike(ike),
        [0, 0, 0, 0, ..] => UdpPayload::Malformed,
        esp if esp.len() >= HEADER_LEN => UdpPayload::Esp(esp),
        _ => UdpPayload::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify() {
        assert_eq!(classify_udp_payload(&[0xFF]), UdpPayload::Keepalive);
        assert_eq!(
            classify_udp_payload(&[0, 0, 0, 0, 1, 2]),
            UdpPayload::Ike(&[1, 2])
        );
        assert_eq!(classify_udp_payload(&[0, 0, 0, 0]), UdpPayload::Malformed);
        assert_eq!(classify_udp_payload(&[]), UdpPayload::Malformed);
        assert_eq!(classify_udp_payload(&[0xFF, 0xFF]), UdpPayload::Malformed);
        let esp = [0, 0, 1, 0, 0, 0, 0, 1];
        assert_eq!(classify_udp_payload(&esp), UdpPayload::Esp(&esp));
        // An SPI with a zero first byte but not all zero is ESP, not IKE.
        let esp = [0, 0, 0, 1, 0, 0, 0, 1];
        assert_eq!(classify_udp_payload(&esp), UdpPayload::Esp(&esp));
    }

    #[test]
    fn checked_view_rejects_short_and_misaligned() {
        assert_eq!(
            EspPacket::new_checked(&[0u8; MIN_LEN - 1][..]).unwrap_err(),
            WireError::Truncated
        );
        assert_eq!(
            EspPacket::new_checked(&[0u8; MIN_LEN + 1][..]).unwrap_err(),
            WireError::Misaligned
        );
        let mut b = [0u8; MIN_LEN + 4];
        EspHeader {
            spi: 0x0102_0304,
            seq: 0x1_0000_0005,
        }
        .emit(&mut b)
        .unwrap();
        let p = EspPacket::new_checked(&b[..]).unwrap();
        assert_eq!(p.spi(), 0x0102_0304);
        assert_eq!(p.seq_low(), 5);
        assert_eq!(p.iv(), 0x1_0000_0005u64.to_be_bytes());
        assert_eq!(p.ciphertext().len(), 8);
    }

    #[test]
    fn aad_layout() {
        let h = EspHeader {
            spi: 0xAABB_CCDD,
            seq: 0x1122_3344_5566_7788,
        };
        let (a, n) = h.aad(false);
        assert_eq!(&a[..n], &[0xAA, 0xBB, 0xCC, 0xDD, 0x55, 0x66, 0x77, 0x88]);
        let (a, n) = h.aad(true);
        assert_eq!(
            &a[..n],
            &[
                0xAA, 0xBB, 0xCC, 0xDD, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88
            ]
        );
    }
}
