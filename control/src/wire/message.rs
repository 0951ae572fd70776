//! [`Message`]: a whole IKEv2 message, header plus payload chain.

use super::header::{HEADER_LEN, Header, HeaderPacket};
use super::notify::{NotifyPayload, NotifyType};
use super::payload::{Payload, emit_payloads, first_payload_type, parse_payloads};
use super::{IKE_MAJOR_VERSION, WireError};

/// An IKEv2 message: the header and the payloads in wire order.
///
/// The header's Next Payload and Length fields are not stored: [`Message::emit`] derives
/// them from the payloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The header fields.
    pub header: Header,
    /// The payloads; an SK or SKF payload, if any, is last.
    pub payloads: Vec<Payload>,
}

impl Message {
    /// Parses one IKEv2 message filling `buf` exactly (a UDP datagram on port 500, or on
    /// 4500 after the non-ESP marker).
    ///
    /// Checks, in order: a whole header is present; the major version is 2
    /// ([`WireError::UnsupportedVersion`]); the Length field equals `buf.len()`; every
    /// payload is well formed; no critical payload is of an unknown type
    /// ([`WireError::UnsupportedCriticalPayload`]). Never panics. On error the header can
    /// still be read with [`HeaderPacket::new_checked`] to address an error notify.
    pub fn parse(buf: &[u8]) -> Result<Message, WireError> {
        if buf.len() < HEADER_LEN {
            return Err(WireError::Truncated { what: "IKE header" });
        }
        let packet = HeaderPacket::new_unchecked(buf);
        if packet.major_version() != IKE_MAJOR_VERSION {
            return Err(WireError::UnsupportedVersion(packet.major_version()));
        }
        packet.check_len()?;
        if packet.length() as usize != buf.len() {
            return Err(WireError::TrailingData {
                what: "IKE message",
            });
        }
        let header = Header::parse(&packet)?;
        let payloads = parse_payloads(packet.next_payload(), packet.payload())?;
        Ok(Message { header, payloads })
    }

    /// Appends the message to `buf`, writing the Next Payload chain and every length
    /// field.
    ///
    /// The representation must be encodable: each payload at most 65535 bytes, SPIs and
    /// counted lists at most 255 entries, every Delete SPI `spi_size` long, unknown
    /// types not shadowing decoded ones. Otherwise the output is malformed (a length
    /// field saturates) but emitting never panics.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.reserve(self.buffer_len());
        self.header.emit(first_payload_type(&self.payloads), 0, buf);
        emit_payloads(&self.payloads, buf);
        let len = u32::try_from(buf.len() - start).unwrap_or(u32::MAX);
        if let Some(header) = buf.get_mut(start..start + HEADER_LEN) {
            HeaderPacket::new_unchecked(header).set_length(len);
        }
    }

    /// The message encoded into a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(self.buffer_len());
        self.emit(&mut buf);
        buf
    }

    /// The message's length on the wire.
    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payloads.iter().map(Payload::buffer_len).sum::<usize>()
    }

    /// Offset, from the message's first byte, of the opaque encrypted data of its last
    /// payload if that is SK or SKF (after the SKF fragment fields), else `None`.
    ///
    /// Everything before it is the associated data of an AEAD cipher (RFC 5282 section 5,
    /// RFC 7383 section 2.5). Since parsing accounts for every byte, the offset is the same
    /// in a received datagram and in its re-encoding. A sender can emit the message with a
    /// zeroed placeholder of the right size and encrypt in place from this offset.
    pub fn encrypted_data_offset(&self) -> Option<usize> {
        let (last, before) = self.payloads.split_last()?;
        let inner = last.encrypted_data_offset()?;
        Some(HEADER_LEN + before.iter().map(Payload::buffer_len).sum::<usize>() + inner)
    }

    /// The Notify payloads, in order.
    pub fn notifies(&self) -> impl Iterator<Item = &NotifyPayload> {
        self.payloads.iter().filter_map(|p| match p {
            Payload::Notify(n) => Some(n),
            _ => None,
        })
    }

    /// The first Notify payload of type `notify_type`.
    pub fn notify(&self, notify_type: NotifyType) -> Option<&NotifyPayload> {
        self.notifies().find(|n| n.notify_type == notify_type)
    }
}
