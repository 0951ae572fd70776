//! The generic payload header and chain (RFC 7296 section 3.2), the [`Payload`] enum of
//! every payload kind, the payloads that are plain byte strings (Nonce, Vendor ID, EAP),
//! and the encrypted payloads SK (section 3.14) and SKF (RFC 7383 section 2.5).
//!
//! ```text
//! Generic payload header:
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Next Payload  |C|  RESERVED   |         Payload Length        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! SKF body: Fragment Number (2) | Total Fragments (2) | encrypted data
//! ```
//!
//! Each payload's Next Payload field names the type of the payload after it; the IKE
//! header names the first. The SK and SKF payloads end the chain: their Next Payload field
//! names the first payload *inside* the encrypted data instead.

use super::WireError;
use super::auth::{AuthPayload, CertPayload, IdPayload};
use super::codec::{LengthSlot, Reader, put_u16};
use super::cp::CpPayload;
use super::notify::{DeletePayload, NotifyPayload};
use super::sa::{KePayload, SaPayload};
use super::ts::TsPayload;

/// Length of the generic payload header.
pub const GENERIC_HEADER_LEN: usize = 4;
/// The critical bit in the generic payload header's second octet.
const CRITICAL: u8 = 0x80;

open_enum! {
    /// Payload types (IANA "IKEv2 Payload Types").
    pub enum PayloadType: u8 {
        /// No Next Payload (0): ends the chain.
        NoNextPayload = 0,
        /// Security Association, `SA` (33).
        Sa = 33,
        /// Key Exchange, `KE` (34).
        Ke = 34,
        /// Identification - Initiator, `IDi` (35).
        IdI = 35,
        /// Identification - Responder, `IDr` (36).
        IdR = 36,
        /// Certificate, `CERT` (37).
        Cert = 37,
        /// Certificate Request, `CERTREQ` (38).
        CertReq = 38,
        /// Authentication, `AUTH` (39).
        Auth = 39,
        /// Nonce, `Ni`/`Nr` (40).
        Nonce = 40,
        /// Notify, `N` (41).
        Notify = 41,
        /// Delete, `D` (42).
        Delete = 42,
        /// Vendor ID, `V` (43).
        VendorId = 43,
        /// Traffic Selector - Initiator, `TSi` (44).
        TsI = 44,
        /// Traffic Selector - Responder, `TSr` (45).
        TsR = 45,
        /// Encrypted and Authenticated, `SK` (46).
        Sk = 46,
        /// Configuration, `CP` (47).
        Cp = 47,
        /// Extensible Authentication, `EAP` (48).
        Eap = 48,
        /// Generic Secure Password Methods, `GSPM` (49), RFC 6467; not decoded here.
        Gspm = 49,
        /// Encrypted and Authenticated Fragment, `SKF` (53), RFC 7383.
        Skf = 53,
    }
}

/// A read-only view of one generic payload header and its body at the start of a buffer.
///
/// Built with [`GenericPayloadPacket::new_checked`], no accessor can panic.
#[derive(Debug, Clone)]
pub struct GenericPayloadPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GenericPayloadPacket<T> {
    /// Wraps `buffer` without any check; accessors may panic on a short buffer.
    pub const fn new_unchecked(buffer: T) -> Self {
        GenericPayloadPacket { buffer }
    }

    /// Wraps `buffer` after checking that it holds a generic header whose Payload Length
    /// is at least 4 and fits in the buffer.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let packet = Self::new_unchecked(buffer);
        let len = packet.buffer.as_ref().len();
        if len < GENERIC_HEADER_LEN {
            return Err(WireError::Truncated {
                what: "generic payload header",
            });
        }
        let declared = usize::from(packet.payload_length());
        if declared < GENERIC_HEADER_LEN {
            Err(WireError::BadLength { what: "payload" })
        } else if declared > len {
            Err(WireError::Truncated { what: "payload" })
        } else {
            Ok(packet)
        }
    }

    /// The Next Payload field (raw, since for SK/SKF it names an inner payload).
    pub fn next_payload(&self) -> u8 {
        self.buffer.as_ref()[0]
    }

    /// The critical bit.
    pub fn critical(&self) -> bool {
        self.buffer.as_ref()[1] & CRITICAL != 0
    }

    /// The Payload Length field, generic header included.
    pub fn payload_length(&self) -> u16 {
        let b = self.buffer.as_ref();
        u16::from_be_bytes([b[2], b[3]])
    }

    /// The payload body: after the generic header, up to Payload Length.
    pub fn body(&self) -> &[u8] {
        &self.buffer.as_ref()[GENERIC_HEADER_LEN..usize::from(self.payload_length())]
    }
}

/// The Encrypted and Authenticated payload, its encrypted data kept opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkPayload {
    /// The type of the first payload inside the encrypted data (the SK payload's Next
    /// Payload field).
    pub first_inner: PayloadType,
    /// IV || encrypted (payloads || padding || pad length) || ICV, as on the wire.
    pub data: Vec<u8>,
}

impl SkPayload {
    /// An SK payload around already-encrypted data whose plaintext starts with a payload
    /// of type `first_inner` (see [`encode_inner_payloads`]).
    pub fn new(first_inner: PayloadType, data: Vec<u8>) -> Self {
        SkPayload { first_inner, data }
    }

    /// Parses the payload chain of the decrypted inner payloads (the plaintext with IV,
    /// padding, pad length and ICV already removed by the caller).
    pub fn parse_inner(&self, plaintext: &[u8]) -> Result<Vec<Payload>, WireError> {
        parse_payloads(self.first_inner, plaintext)
    }
}

/// The Encrypted and Authenticated Fragment payload (RFC 7383), its data kept opaque.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkfPayload {
    /// The type of the first inner payload; only set in fragment 1, 0 in the others.
    pub first_inner: PayloadType,
    /// This fragment's number, from 1.
    pub fragment_number: u16,
    /// The number of fragments of the message (at least `fragment_number`).
    pub total_fragments: u16,
    /// IV || encrypted fragment || padding || pad length || ICV, as on the wire.
    pub data: Vec<u8>,
}

impl SkfPayload {
    /// Parses an SKF body given the payload's Next Payload field, checking that
    /// `1 <= fragment_number <= total_fragments`.
    pub fn parse(first_inner: PayloadType, body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let fragment_number = r.u16("SKF payload")?;
        let total_fragments = r.u16("SKF payload")?;
        if fragment_number == 0 || fragment_number > total_fragments {
            return Err(WireError::BadFragmentNumber {
                number: fragment_number,
                total: total_fragments,
            });
        }
        Ok(SkfPayload {
            first_inner,
            fragment_number,
            total_fragments,
            data: r.rest().to_vec(),
        })
    }
}

/// A payload of a type not decoded here, kept as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownPayload {
    /// The payload type; one without a [`Payload`] variant (not 0 nor a decoded type).
    pub payload_type: u8,
    /// The critical bit. The parser never yields a critical unknown payload (it fails
    /// with [`WireError::UnsupportedCriticalPayload`]), but one can be emitted.
    pub critical: bool,
    /// The payload body.
    pub body: Vec<u8>,
}

/// One IKEv2 payload, decoded by type.
///
/// The critical bit is ignored on receipt and sent as 0 for every decoded type, as
/// RFC 7296 section 3.2 requires; only [`Payload::Unknown`] carries one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// Security Association.
    Sa(SaPayload),
    /// Key Exchange.
    Ke(KePayload),
    /// Identification of the initiator.
    IdI(IdPayload),
    /// Identification of the responder.
    IdR(IdPayload),
    /// Certificate.
    Cert(CertPayload),
    /// Certificate Request.
    CertReq(CertPayload),
    /// Authentication.
    Auth(AuthPayload),
    /// Nonce (Ni or Nr): the nonce data, 16 to 256 bytes by RFC 7296 section 3.9 (not
    /// enforced here).
    Nonce(Vec<u8>),
    /// Notify.
    Notify(NotifyPayload),
    /// Delete.
    Delete(DeletePayload),
    /// Vendor ID: the opaque vendor identifier.
    VendorId(Vec<u8>),
    /// Traffic selectors of the initiator.
    TsI(TsPayload),
    /// Traffic selectors of the responder.
    TsR(TsPayload),
    /// Encrypted and Authenticated; must be the last payload of a chain.
    Sk(SkPayload),
    /// Configuration.
    Cp(CpPayload),
    /// Extensible Authentication: the raw EAP message.
    Eap(Vec<u8>),
    /// Encrypted and Authenticated Fragment; must be the last payload of a chain.
    Skf(SkfPayload),
    /// A payload type not decoded here.
    Unknown(UnknownPayload),
}

impl Payload {
    /// The payload's type.
    pub fn payload_type(&self) -> PayloadType {
        match self {
            Payload::Sa(_) => PayloadType::Sa,
            Payload::Ke(_) => PayloadType::Ke,
            Payload::IdI(_) => PayloadType::IdI,
            Payload::IdR(_) => PayloadType::IdR,
            Payload::Cert(_) => PayloadType::Cert,
            Payload::CertReq(_) => PayloadType::CertReq,
            Payload::Auth(_) => PayloadType::Auth,
            Payload::Nonce(_) => PayloadType::Nonce,
            Payload::Notify(_) => PayloadType::Notify,
            Payload::Delete(_) => PayloadType::Delete,
            Payload::VendorId(_) => PayloadType::VendorId,
            Payload::TsI(_) => PayloadType::TsI,
            Payload::TsR(_) => PayloadType::TsR,
            Payload::Sk(_) => PayloadType::Sk,
            Payload::Cp(_) => PayloadType::Cp,
            Payload::Eap(_) => PayloadType::Eap,
            Payload::Skf(_) => PayloadType::Skf,
            Payload::Unknown(u) => PayloadType::from(u.payload_type),
        }
    }

    /// Whether this payload ends a chain because its Next Payload field points inside it
    /// (SK and SKF).
    pub fn is_encrypted(&self) -> bool {
        matches!(self, Payload::Sk(_) | Payload::Skf(_))
    }

    /// Decodes one payload body of type `payload_type`. `next_payload` is the raw Next
    /// Payload field (used by SK and SKF); `critical` the critical bit.
    ///
    /// Fails with [`WireError::UnsupportedCriticalPayload`] for a critical payload of a
    /// type without a decoder.
    pub fn parse(
        payload_type: PayloadType,
        next_payload: u8,
        critical: bool,
        body: &[u8],
    ) -> Result<Payload, WireError> {
        Ok(match payload_type {
            PayloadType::Sa => Payload::Sa(SaPayload::parse(body)?),
            PayloadType::Ke => Payload::Ke(KePayload::parse(body)?),
            PayloadType::IdI => Payload::IdI(IdPayload::parse(body)?),
            PayloadType::IdR => Payload::IdR(IdPayload::parse(body)?),
            PayloadType::Cert => Payload::Cert(CertPayload::parse(body)?),
            PayloadType::CertReq => Payload::CertReq(CertPayload::parse(body)?),
            PayloadType::Auth => Payload::Auth(AuthPayload::parse(body)?),
            PayloadType::Nonce => Payload::Nonce(body.to_vec()),
            PayloadType::Notify => Payload::Notify(NotifyPayload::parse(body)?),
            PayloadType::Delete => Payload::Delete(DeletePayload::parse(body)?),
            PayloadType::VendorId => Payload::VendorId(body.to_vec()),
            PayloadType::TsI => Payload::TsI(TsPayload::parse(body)?),
            PayloadType::TsR => Payload::TsR(TsPayload::parse(body)?),
            PayloadType::Sk => Payload::Sk(SkPayload {
                first_inner: PayloadType::from(next_payload),
                data: body.to_vec(),
            }),
            PayloadType::Cp => Payload::Cp(CpPayload::parse(body)?),
            PayloadType::Eap => Payload::Eap(body.to_vec()),
            PayloadType::Skf => {
                Payload::Skf(SkfPayload::parse(PayloadType::from(next_payload), body)?)
            }
            other => {
                let payload_type = other.to_raw();
                if critical {
                    return Err(WireError::UnsupportedCriticalPayload(payload_type));
                }
                Payload::Unknown(UnknownPayload {
                    payload_type,
                    critical,
                    body: body.to_vec(),
                })
            }
        })
    }

    /// Appends the payload, generic header included, with `next` in its Next Payload
    /// field (ignored for SK and SKF, which write their inner first payload type).
    pub fn emit(&self, next: PayloadType, buf: &mut Vec<u8>) {
        let start = buf.len();
        let (next, critical) = match self {
            Payload::Sk(sk) => (sk.first_inner, false),
            Payload::Skf(skf) => (skf.first_inner, false),
            Payload::Unknown(u) => (next, u.critical),
            _ => (next, false),
        };
        buf.push(next.into());
        buf.push(if critical { CRITICAL } else { 0 });
        let slot = LengthSlot::u16(buf, start);
        self.emit_body(buf);
        slot.fill(buf);
    }

    fn emit_body(&self, buf: &mut Vec<u8>) {
        match self {
            Payload::Sa(p) => p.emit(buf),
            Payload::Ke(p) => p.emit(buf),
            Payload::IdI(p) | Payload::IdR(p) => p.emit(buf),
            Payload::Cert(p) | Payload::CertReq(p) => p.emit(buf),
            Payload::Auth(p) => p.emit(buf),
            Payload::Notify(p) => p.emit(buf),
            Payload::Delete(p) => p.emit(buf),
            Payload::TsI(p) | Payload::TsR(p) => p.emit(buf),
            Payload::Cp(p) => p.emit(buf),
            Payload::Nonce(b) | Payload::VendorId(b) | Payload::Eap(b) => {
                buf.extend_from_slice(b);
            }
            Payload::Sk(sk) => buf.extend_from_slice(&sk.data),
            Payload::Skf(skf) => {
                put_u16(buf, skf.fragment_number);
                put_u16(buf, skf.total_fragments);
                buf.extend_from_slice(&skf.data);
            }
            Payload::Unknown(u) => buf.extend_from_slice(&u.body),
        }
    }

    /// The body's length, generic header excluded.
    pub fn body_len(&self) -> usize {
        match self {
            Payload::Sa(p) => p.buffer_len(),
            Payload::Ke(p) => p.buffer_len(),
            Payload::IdI(p) | Payload::IdR(p) => p.buffer_len(),
            Payload::Cert(p) | Payload::CertReq(p) => p.buffer_len(),
            Payload::Auth(p) => p.buffer_len(),
            Payload::Notify(p) => p.buffer_len(),
            Payload::Delete(p) => p.buffer_len(),
            Payload::TsI(p) | Payload::TsR(p) => p.buffer_len(),
            Payload::Cp(p) => p.buffer_len(),
            Payload::Nonce(b) | Payload::VendorId(b) | Payload::Eap(b) => b.len(),
            Payload::Sk(sk) => sk.data.len(),
            Payload::Skf(skf) => 4 + skf.data.len(),
            Payload::Unknown(u) => u.body.len(),
        }
    }

    /// The payload's length on the wire, generic header included (must not exceed
    /// 65535).
    pub fn buffer_len(&self) -> usize {
        GENERIC_HEADER_LEN + self.body_len()
    }

    /// Offset of the opaque encrypted data from the payload's first byte: 4 for SK, 8 for
    /// SKF, `None` for other payloads.
    pub fn encrypted_data_offset(&self) -> Option<usize> {
        match self {
            Payload::Sk(_) => Some(GENERIC_HEADER_LEN),
            Payload::Skf(_) => Some(GENERIC_HEADER_LEN + 4),
            _ => None,
        }
    }
}

/// Parses a payload chain whose first payload has type `first`, requiring it to fill
/// `bytes` exactly. The chain ends at a payload whose Next Payload is 0, or at an SK or
/// SKF payload.
pub fn parse_payloads(first: PayloadType, bytes: &[u8]) -> Result<Vec<Payload>, WireError> {
    let mut payloads = Vec::new();
    let mut rest = bytes;
    let mut this = first;
    while this != PayloadType::NoNextPayload {
        let packet = GenericPayloadPacket::new_checked(rest)?;
        let payload = Payload::parse(
            this,
            packet.next_payload(),
            packet.critical(),
            packet.body(),
        )?;
        this = PayloadType::from(packet.next_payload());
        rest = rest
            .get(usize::from(packet.payload_length())..)
            .unwrap_or_default();
        let encrypted = payload.is_encrypted();
        payloads.push(payload);
        if encrypted {
            break;
        }
    }
    if rest.is_empty() {
        Ok(payloads)
    } else {
        Err(WireError::TrailingData {
            what: "payload chain",
        })
    }
}

/// Appends a payload chain, chaining the Next Payload fields, and returns the type of its
/// first payload (0 for an empty chain) for the IKE header or the enclosing SK payload.
///
/// SK or SKF, if present, must be last: a parser stops there.
pub fn emit_payloads(payloads: &[Payload], buf: &mut Vec<u8>) -> PayloadType {
    for (i, p) in payloads.iter().enumerate() {
        let next = payloads
            .get(i + 1)
            .map_or(PayloadType::NoNextPayload, Payload::payload_type);
        p.emit(next, buf);
    }
    first_payload_type(payloads)
}

/// The type of the first payload of a chain, 0 for an empty chain.
pub fn first_payload_type(payloads: &[Payload]) -> PayloadType {
    payloads
        .first()
        .map_or(PayloadType::NoNextPayload, Payload::payload_type)
}

/// Encodes the payloads that go inside an SK payload: returns the type of the first one
/// (for [`SkPayload::first_inner`]) and their plaintext encoding, to be padded and
/// encrypted by the caller.
pub fn encode_inner_payloads(payloads: &[Payload]) -> (PayloadType, Vec<u8>) {
    let mut buf = Vec::with_capacity(payloads.iter().map(Payload::buffer_len).sum());
    let first = emit_payloads(payloads, &mut buf);
    (first, buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::notify::NotifyType;

    #[test]
    fn generic_view_checks() {
        assert!(GenericPayloadPacket::new_checked(&[0u8, 0, 0][..]).is_err());
        assert_eq!(
            GenericPayloadPacket::new_checked(&[0u8, 0, 0, 3][..]).err(),
            Some(WireError::BadLength { what: "payload" })
        );
        assert_eq!(
            GenericPayloadPacket::new_checked(&[0u8, 0, 0, 6, 1][..]).err(),
            Some(WireError::Truncated { what: "payload" })
        );
        let p = GenericPayloadPacket::new_checked(&[41u8, 0x80, 0, 5, 9, 9][..]).unwrap();
        assert_eq!(
            (p.next_payload(), p.critical(), p.body()),
            (41, true, &[9u8][..])
        );
    }

    #[test]
    fn chain_roundtrip_with_sk_last() {
        let payloads = vec![
            Payload::Nonce(vec![1; 16]),
            Payload::Unknown(UnknownPayload {
                payload_type: 200,
                critical: false,
                body: vec![1, 2],
            }),
            Payload::Sk(SkPayload::new(PayloadType::IdI, vec![0xaa; 20])),
        ];
        let mut buf = Vec::new();
        let first = emit_payloads(&payloads, &mut buf);
        assert_eq!(first, PayloadType::Nonce);
        assert_eq!(buf[0], 200); // Nonce's Next Payload is the unknown one
        assert_eq!(buf[20], 46); // the unknown one's Next Payload is SK
        assert_eq!(buf[26], 35); // SK's Next Payload is the inner first, IDi
        assert_eq!(parse_payloads(first, &buf).unwrap(), payloads);
    }

    #[test]
    fn critical_unknown_is_reported() {
        let bytes = [0u8, 0x80, 0, 4];
        assert_eq!(
            parse_payloads(PayloadType::from(99), &bytes),
            Err(WireError::UnsupportedCriticalPayload(99))
        );
        let bytes = [0u8, 0x00, 0, 4];
        assert!(parse_payloads(PayloadType::from(99), &bytes).is_ok());
        // The critical bit is ignored on a decoded type.
        let bytes = [0u8, 0x80, 0, 6, 1, 2];
        assert_eq!(
            parse_payloads(PayloadType::VendorId, &bytes).unwrap(),
            vec![Payload::VendorId(vec![1, 2])]
        );
    }

    #[test]
    fn sk_inner_roundtrip() {
        let inner = vec![
            Payload::Notify(NotifyPayload::new(NotifyType::MobikeSupported, vec![])),
            Payload::Delete(DeletePayload::ike()),
        ];
        let (first, plain) = encode_inner_payloads(&inner);
        let sk = SkPayload::new(first, vec![0; 32]);
        assert_eq!(sk.first_inner, PayloadType::Notify);
        assert_eq!(sk.parse_inner(&plain).unwrap(), inner);
        assert!(sk.parse_inner(&plain[..plain.len() - 1]).is_err());
    }

    #[test]
    fn skf_fragment_numbers_checked() {
        assert!(SkfPayload::parse(PayloadType::Sk, &[0, 1, 0, 1]).is_ok());
        assert_eq!(
            SkfPayload::parse(PayloadType::Sk, &[0, 0, 0, 1]),
            Err(WireError::BadFragmentNumber {
                number: 0,
                total: 1
            })
        );
        assert!(SkfPayload::parse(PayloadType::Sk, &[0, 3, 0, 2]).is_err());
        assert!(SkfPayload::parse(PayloadType::Sk, &[0, 1, 0]).is_err());
    }

    #[test]
    fn trailing_after_chain_is_an_error() {
        assert_eq!(
            parse_payloads(PayloadType::NoNextPayload, &[0]),
            Err(WireError::TrailingData {
                what: "payload chain"
            })
        );
    }
}
