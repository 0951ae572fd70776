//! The fixed 28-byte IKE header (RFC 7296 section 3.1): a checked in-place view
//! ([`HeaderPacket`]) and a high-level representation ([`Header`]).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Initiator's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                       IKE SA Responder's SPI                  |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |  Next Payload | MjVer | MnVer | Exchange Type |     Flags     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                          Message ID                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                            Length                             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use core::ops::BitOr;

use super::codec::{put_u32, put_u64};
use super::{IKE_MAJOR_VERSION, PayloadType, WireError};

/// Length of the IKE header in bytes.
pub const HEADER_LEN: usize = 28;

open_enum! {
    /// IKEv2 exchange types (IANA "IKEv2 Exchange Types").
    pub enum ExchangeType: u8 {
        /// `IKE_SA_INIT` (34), RFC 7296.
        IkeSaInit = 34,
        /// `IKE_AUTH` (35), RFC 7296.
        IkeAuth = 35,
        /// `CREATE_CHILD_SA` (36), RFC 7296.
        CreateChildSa = 36,
        /// `INFORMATIONAL` (37), RFC 7296.
        Informational = 37,
        /// `IKE_SESSION_RESUME` (38), RFC 5723.
        IkeSessionResume = 38,
        /// `IKE_INTERMEDIATE` (43), RFC 9242.
        IkeIntermediate = 43,
        /// `IKE_FOLLOWUP_KE` (44), RFC 9370.
        IkeFollowupKe = 44,
    }
}

/// The header's flags octet, kept raw so reserved bits survive a round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u8);

impl Flags {
    /// No flag set.
    pub const NONE: Flags = Flags(0);
    /// Initiator (bit 3, 0x08): set by the original initiator of the IKE SA.
    pub const INITIATOR: Flags = Flags(0x08);
    /// Version (bit 4, 0x10): the sender could speak a higher major version.
    pub const VERSION: Flags = Flags(0x10);
    /// Response (bit 5, 0x20): this message answers one with the same message ID.
    pub const RESPONSE: Flags = Flags(0x20);

    /// Whether every bit of `other` is set here.
    pub const fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The Initiator flag.
    pub const fn initiator(self) -> bool {
        self.contains(Flags::INITIATOR)
    }

    /// The Response flag.
    pub const fn response(self) -> bool {
        self.contains(Flags::RESPONSE)
    }

    /// The Version flag.
    pub const fn version(self) -> bool {
        self.contains(Flags::VERSION)
    }
}

impl BitOr for Flags {
    type Output = Flags;

    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

mod field {
    use core::ops::Range;

    pub const SPI_I: Range<usize> = 0..8;
    pub const SPI_R: Range<usize> = 8..16;
    pub const NEXT_PAYLOAD: usize = 16;
    pub const VERSION: usize = 17;
    pub const EXCHANGE_TYPE: usize = 18;
    pub const FLAGS: usize = 19;
    pub const MESSAGE_ID: Range<usize> = 20..24;
    pub const LENGTH: Range<usize> = 24..28;
}

/// A read/write view of an IKE header at the start of a buffer.
///
/// Built with [`HeaderPacket::new_checked`], no accessor can panic.
#[derive(Debug, Clone)]
pub struct HeaderPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> HeaderPacket<T> {
    /// Wraps `buffer` without any check; accessors may panic on a short buffer.
    /// Prefer [`HeaderPacket::new_checked`].
    pub const fn new_unchecked(buffer: T) -> Self {
        HeaderPacket { buffer }
    }

    /// Wraps `buffer` after [`HeaderPacket::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        packet.check_len()?;
        Ok(packet)
    }

    /// Checks that the buffer holds a whole header, that the Length field is at least the
    /// header's length, and that the buffer holds `Length` bytes. Bytes past `Length` are
    /// allowed here (see [`super::Message::parse`] for the strict check).
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < HEADER_LEN {
            return Err(WireError::Truncated { what: "IKE header" });
        }
        let declared = self.length() as usize;
        if declared < HEADER_LEN {
            Err(WireError::BadLength { what: "IKE header" })
        } else if declared > len {
            Err(WireError::Truncated {
                what: "IKE message",
            })
        } else {
            Ok(())
        }
    }

    /// Consumes the view, returning the buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn byte(&self, at: usize) -> u8 {
        self.buffer.as_ref()[at]
    }

    /// The IKE SA initiator's SPI.
    pub fn spi_i(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::SPI_I]);
        u64::from_be_bytes(b)
    }

    /// The IKE SA responder's SPI (zero in a first IKE_SA_INIT request).
    pub fn spi_r(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.buffer.as_ref()[field::SPI_R]);
        u64::from_be_bytes(b)
    }

    /// The type of the first payload.
    pub fn next_payload(&self) -> PayloadType {
        PayloadType::from(self.byte(field::NEXT_PAYLOAD))
    }

    /// The major version (upper nibble of the version octet).
    pub fn major_version(&self) -> u8 {
        self.byte(field::VERSION) >> 4
    }

    /// The minor version (lower nibble of the version octet).
    pub fn minor_version(&self) -> u8 {
        self.byte(field::VERSION) & 0x0f
    }

    /// The exchange type.
    pub fn exchange_type(&self) -> ExchangeType {
        ExchangeType::from(self.byte(field::EXCHANGE_TYPE))
    }

    /// The flags octet.
    pub fn flags(&self) -> Flags {
        Flags(self.byte(field::FLAGS))
    }

    /// The message ID.
    pub fn message_id(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buffer.as_ref()[field::MESSAGE_ID]);
        u32::from_be_bytes(b)
    }

    /// The Length field: header plus payloads, in bytes.
    pub fn length(&self) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buffer.as_ref()[field::LENGTH]);
        u32::from_be_bytes(b)
    }

    /// The payload bytes: from the end of the header to `Length`.
    pub fn payload(&self) -> &[u8] {
        let end = self.length() as usize;
        &self.buffer.as_ref()[HEADER_LEN..end]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> HeaderPacket<T> {
    /// Sets the Next Payload field.
    pub fn set_next_payload(&mut self, value: PayloadType) {
        self.buffer.as_mut()[field::NEXT_PAYLOAD] = value.into();
    }

    /// Sets the Flags octet.
    pub fn set_flags(&mut self, value: Flags) {
        self.buffer.as_mut()[field::FLAGS] = value.0;
    }

    /// Sets the Message ID field.
    pub fn set_message_id(&mut self, value: u32) {
        self.buffer.as_mut()[field::MESSAGE_ID].copy_from_slice(&value.to_be_bytes());
    }

    /// Sets the Length field.
    pub fn set_length(&mut self, value: u32) {
        self.buffer.as_mut()[field::LENGTH].copy_from_slice(&value.to_be_bytes());
    }
}

/// The IKE header's fields, less the two a message derives when it is emitted:
/// Next Payload (from its first payload) and Length (from its size).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The IKE SA initiator's SPI.
    pub spi_i: u64,
    /// The IKE SA responder's SPI.
    pub spi_r: u64,
    /// Minor version; must be sent as 0 and ignored on receipt, kept for round trips
    /// (only its low 4 bits are emitted).
    pub minor_version: u8,
    /// The exchange type.
    pub exchange_type: ExchangeType,
    /// The flags octet.
    pub flags: Flags,
    /// The message ID.
    pub message_id: u32,
}

impl Header {
    /// The header of an IKE_SA_INIT message (message ID 0, minor version 0).
    pub fn ike_sa_init(spi_i: u64, spi_r: u64, flags: Flags) -> Header {
        Header {
            spi_i,
            spi_r,
            minor_version: 0,
            exchange_type: ExchangeType::IkeSaInit,
            flags,
            message_id: 0,
        }
    }

    /// Reads the header fields of a checked packet, rejecting a major version other than 2.
    pub fn parse<T: AsRef<[u8]>>(packet: &HeaderPacket<T>) -> Result<Header, WireError> {
        if packet.major_version() != IKE_MAJOR_VERSION {
            return Err(WireError::UnsupportedVersion(packet.major_version()));
        }
        Ok(Header {
            spi_i: packet.spi_i(),
            spi_r: packet.spi_r(),
            minor_version: packet.minor_version(),
            exchange_type: packet.exchange_type(),
            flags: packet.flags(),
            message_id: packet.message_id(),
        })
    }

    /// Appends the 28 header bytes with the given Next Payload and Length fields.
    pub fn emit(&self, next_payload: PayloadType, length: u32, buf: &mut Vec<u8>) {
        put_u64(buf, self.spi_i);
        put_u64(buf, self.spi_r);
        buf.push(next_payload.into());
        buf.push((IKE_MAJOR_VERSION << 4) | (self.minor_version & 0x0f));
        buf.push(self.exchange_type.into());
        buf.push(self.flags.0);
        put_u32(buf, self.message_id);
        put_u32(buf, length);
    }

    /// The header's length on the wire (always [`HEADER_LEN`]).
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_reads_fields_in_place() {
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&1u64.to_be_bytes());
        bytes[8..16].copy_from_slice(&2u64.to_be_bytes());
        bytes[16] = 33;
        bytes[17] = 0x21;
        bytes[18] = 34;
        bytes[19] = 0x28;
        bytes[20..24].copy_from_slice(&7u32.to_be_bytes());
        bytes[24..28].copy_from_slice(&30u32.to_be_bytes());
        let p = HeaderPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.spi_i(), 1);
        assert_eq!(p.spi_r(), 2);
        assert_eq!(p.next_payload(), PayloadType::Sa);
        assert_eq!((p.major_version(), p.minor_version()), (2, 1));
        assert_eq!(p.exchange_type(), ExchangeType::IkeSaInit);
        assert!(p.flags().initiator() && p.flags().response() && !p.flags().version());
        assert_eq!(p.message_id(), 7);
        assert_eq!(p.payload(), &[0, 0]);

        let mut owned = bytes;
        let mut p = HeaderPacket::new_checked(&mut owned[..]).unwrap();
        p.set_length(28);
        p.set_message_id(9);
        p.set_flags(Flags::INITIATOR);
        p.set_next_payload(PayloadType::Sk);
        assert_eq!(p.payload(), &[] as &[u8]);
        assert_eq!(p.message_id(), 9);
        assert_eq!(p.next_payload(), PayloadType::Sk);
    }

    #[test]
    fn view_checks_lengths() {
        let mut bytes = [0u8; 28];
        bytes[17] = 0x20;
        assert_eq!(
            HeaderPacket::new_checked(&bytes[..27]).err(),
            Some(WireError::Truncated { what: "IKE header" })
        );
        assert_eq!(
            HeaderPacket::new_checked(&bytes[..]).err(),
            Some(WireError::BadLength { what: "IKE header" })
        );
        bytes[27] = 29;
        assert_eq!(
            HeaderPacket::new_checked(&bytes[..]).err(),
            Some(WireError::Truncated {
                what: "IKE message"
            })
        );
    }

    #[test]
    fn major_version_is_checked() {
        let mut bytes = [0u8; 28];
        bytes[17] = 0x30;
        bytes[27] = 28;
        let p = HeaderPacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(Header::parse(&p), Err(WireError::UnsupportedVersion(3)));
    }
}
