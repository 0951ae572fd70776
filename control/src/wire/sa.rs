//! The Security Association payload (RFC 7296 section 3.3) with its proposals, transforms
//! and transform attributes, the registries of transform IDs, and the Key Exchange
//! payload (section 3.4), which shares the Diffie-Hellman group registry.
//!
//! ```text
//! SA body:        Proposal, Proposal, ...
//! Proposal:       Last Substruc(0|2) | RESERVED | Proposal Length (2)
//!                 Proposal Num | Protocol ID | SPI Size | Num Transforms
//!                 SPI (SPI Size octets) | Transforms
//! Transform:      Last Substruc(0|3) | RESERVED | Transform Length (2)
//!                 Transform Type | RESERVED | Transform ID (2) | Attributes
//! Attribute:      AF(1 bit) Attribute Type (15 bits) | Length or Value (2) | [Value]
//! KE body:        DH Group Num (2) | RESERVED (2) | Key Exchange Data
//! ```

use super::WireError;
use super::codec::{LengthSlot, Reader, put_u16};

/// "Last Substruc" value of the last proposal or transform.
const LAST: u8 = 0;
/// "Last Substruc" value of a proposal followed by another.
const MORE_PROPOSALS: u8 = 2;
/// "Last Substruc" value of a transform followed by another.
const MORE_TRANSFORMS: u8 = 3;
/// Attribute Format bit: set for the 4-byte TV format.
const AF_TV: u16 = 0x8000;

open_enum! {
    /// Security protocol identifiers (IANA "IKEv2 Security Protocol Identifiers"), used in
    /// proposals, Notify and Delete payloads.
    pub enum ProtocolId: u8 {
        /// 0: no SA concerned (Notify and Delete payloads without an SPI).
        None = 0,
        /// `IKE` (1).
        Ike = 1,
        /// `AH` (2).
        Ah = 2,
        /// `ESP` (3).
        Esp = 3,
    }
}

open_enum! {
    /// Transform types (IANA "Transform Type Values").
    pub enum TransformType: u8 {
        /// Encryption algorithm, `ENCR` (1).
        Encr = 1,
        /// Pseudorandom function, `PRF` (2).
        Prf = 2,
        /// Integrity algorithm, `INTEG` (3).
        Integ = 3,
        /// Key exchange method, formerly Diffie-Hellman group, `D-H`/`KE` (4).
        Dh = 4,
        /// Extended sequence numbers, `ESN` (5).
        Esn = 5,
    }
}

open_enum! {
    /// Transform type 1: encryption algorithm IDs.
    pub enum EncrId: u16 {
        /// `ENCR_3DES` (3).
        TripleDes = 3,
        /// `ENCR_NULL` (11).
        Null = 11,
        /// `ENCR_AES_CBC` (12); needs a Key Length attribute.
        AesCbc = 12,
        /// `ENCR_AES_CTR` (13), RFC 5930.
        AesCtr = 13,
        /// `ENCR_AES_CCM_8` (14), RFC 4309.
        AesCcm8 = 14,
        /// `ENCR_AES_CCM_12` (15), RFC 4309.
        AesCcm12 = 15,
        /// `ENCR_AES_CCM_16` (16), RFC 4309.
        AesCcm16 = 16,
        /// `ENCR_AES_GCM_8` (18), RFC 4106.
        AesGcm8 = 18,
        /// `ENCR_AES_GCM_12` (19), RFC 4106.
        AesGcm12 = 19,
        /// `ENCR_AES_GCM_16` (20), RFC 4106; needs a Key Length attribute.
        AesGcm16 = 20,
        /// `ENCR_NULL_AUTH_AES_GMAC` (21), RFC 4543.
        NullAuthAesGmac = 21,
        /// `ENCR_CHACHA20_POLY1305` (28), RFC 7634.
        Chacha20Poly1305 = 28,
    }
}

open_enum! {
    /// Transform type 2: pseudorandom function IDs.
    pub enum PrfId: u16 {
        /// `PRF_HMAC_MD5` (1).
        HmacMd5 = 1,
        /// `PRF_HMAC_SHA1` (2).
        HmacSha1 = 2,
        /// `PRF_AES128_XCBC` (4), RFC 4434.
        Aes128Xcbc = 4,
        /// `PRF_HMAC_SHA2_256` (5), RFC 4868.
        HmacSha2_256 = 5,
        /// `PRF_HMAC_SHA2_384` (6), RFC 4868.
        HmacSha2_384 = 6,
        /// `PRF_HMAC_SHA2_512` (7), RFC 4868.
        HmacSha2_512 = 7,
        /// `PRF_AES128_CMAC` (8), RFC 4615.
        Aes128Cmac = 8,
    }
}

open_enum! {
    /// Transform type 3: integrity algorithm IDs.
    pub enum IntegId: u16 {
        /// `NONE` (0): no separate integrity (combined-mode ciphers).
        None = 0,
        /// `AUTH_HMAC_MD5_96` (1).
        HmacMd5_96 = 1,
        /// `AUTH_HMAC_SHA1_96` (2).
        HmacSha1_96 = 2,
        /// `AUTH_AES_XCBC_96` (5).
        AesXcbc96 = 5,
        /// `AUTH_AES_CMAC_96` (8).
        AesCmac96 = 8,
        /// `AUTH_AES_128_GMAC` (9).
        Aes128Gmac = 9,
        /// `AUTH_AES_192_GMAC` (10).
        Aes192Gmac = 10,
        /// `AUTH_AES_256_GMAC` (11).
        Aes256Gmac = 11,
        /// `AUTH_HMAC_SHA2_256_128` (12), RFC 4868.
        HmacSha2_256_128 = 12,
        /// `AUTH_HMAC_SHA2_384_192` (13), RFC 4868.
        HmacSha2_384_192 = 13,
        /// `AUTH_HMAC_SHA2_512_256` (14), RFC 4868.
        HmacSha2_512_256 = 14,
    }
}

open_enum! {
    /// Transform type 4: Diffie-Hellman groups / key exchange methods; also the group
    /// field of the KE payload.
    pub enum DhGroup: u16 {
        /// `NONE` (0).
        None = 0,
        /// 768-bit MODP group (1).
        Modp768 = 1,
        /// 1024-bit MODP group (2).
        Modp1024 = 2,
        /// 1536-bit MODP group (5), RFC 3526.
        Modp1536 = 5,
        /// 2048-bit MODP group (14), RFC 3526.
        Modp2048 = 14,
        /// 3072-bit MODP group (15), RFC 3526.
        Modp3072 = 15,
        /// 4096-bit MODP group (16), RFC 3526.
        Modp4096 = 16,
        /// 6144-bit MODP group (17), RFC 3526.
        Modp6144 = 17,
        /// 8192-bit MODP group (18), RFC 3526.
        Modp8192 = 18,
        /// 256-bit random ECP group, NIST P-256 (19), RFC 5903.
        Ecp256 = 19,
        /// 384-bit random ECP group, NIST P-384 (20), RFC 5903.
        Ecp384 = 20,
        /// 521-bit random ECP group, NIST P-521 (21), RFC 5903.
        Ecp521 = 21,
        /// brainpoolP256r1 (28), RFC 6954.
        Brainpool256 = 28,
        /// brainpoolP384r1 (29), RFC 6954.
        Brainpool384 = 29,
        /// brainpoolP512r1 (30), RFC 6954.
        Brainpool512 = 30,
        /// Curve25519 (31), RFC 8031.
        Curve25519 = 31,
        /// Curve448 (32), RFC 8031.
        Curve448 = 32,
    }
}

open_enum! {
    /// Transform type 5: extended sequence numbers.
    pub enum EsnId: u16 {
        /// No extended sequence numbers (0).
        NoEsn = 0,
        /// Extended sequence numbers (1).
        Esn = 1,
    }
}

open_enum! {
    /// Transform attribute types (IANA "Transform Attribute Types"); 15 bits on the wire.
    pub enum AttributeType: u16 {
        /// `Key Length` in bits (14), a TV attribute.
        KeyLength = 14,
    }
}

/// A transform's type and ID together, the ID typed by the transform type.
#[derive(Debug, Clone, Copy)]
pub enum TransformId {
    /// An encryption algorithm.
    Encr(EncrId),
    /// A pseudorandom function.
    Prf(PrfId),
    /// An integrity algorithm.
    Integ(IntegId),
    /// A Diffie-Hellman group / key exchange method.
    Dh(DhGroup),
    /// Extended sequence numbers or not.
    Esn(EsnId),
    /// A transform type without a name here (types 1 to 5 have their own variants).
    Unknown {
        /// The transform type.
        transform_type: u8,
        /// The transform ID.
        id: u16,
    },
}

impl TransformId {
    /// The transform type and ID as written on the wire.
    pub fn to_raw(self) -> (u8, u16) {
        match self {
            TransformId::Encr(id) => (TransformType::Encr.into(), id.into()),
            TransformId::Prf(id) => (TransformType::Prf.into(), id.into()),
            TransformId::Integ(id) => (TransformType::Integ.into(), id.into()),
            TransformId::Dh(id) => (TransformType::Dh.into(), id.into()),
            TransformId::Esn(id) => (TransformType::Esn.into(), id.into()),
            TransformId::Unknown { transform_type, id } => (transform_type, id),
        }
    }

    /// The typed ID for a wire transform type and ID.
    pub fn from_raw(transform_type: u8, id: u16) -> Self {
        match TransformType::from(transform_type) {
            TransformType::Encr => TransformId::Encr(id.into()),
            TransformType::Prf => TransformId::Prf(id.into()),
            TransformType::Integ => TransformId::Integ(id.into()),
            TransformType::Dh => TransformId::Dh(id.into()),
            TransformType::Esn => TransformId::Esn(id.into()),
            TransformType::Unknown(_) => TransformId::Unknown { transform_type, id },
        }
    }

    /// The transform type.
    pub fn transform_type(self) -> TransformType {
        TransformType::from(self.to_raw().0)
    }
}

impl PartialEq for TransformId {
    fn eq(&self, other: &Self) -> bool {
        self.to_raw() == other.to_raw()
    }
}

impl Eq for TransformId {}

/// The value of a transform attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttributeValue {
    /// TV format (AF = 1): a 2-byte value in place of the length.
    Short(u16),
    /// TLV format (AF = 0): a length-prefixed value (at most 65535 bytes).
    Long(Vec<u8>),
}

/// A transform attribute (RFC 7296 section 3.3.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransformAttribute {
    /// The attribute type (only its low 15 bits are emitted).
    pub attr_type: AttributeType,
    /// The value, whose variant selects the TV or TLV format.
    pub value: AttributeValue,
}

impl TransformAttribute {
    /// A Key Length attribute of `bits` bits.
    pub fn key_length(bits: u16) -> Self {
        TransformAttribute {
            attr_type: AttributeType::KeyLength,
            value: AttributeValue::Short(bits),
        }
    }

    fn parse(r: &mut Reader<'_>) -> Result<Self, WireError> {
        let raw_type = r.u16("transform attribute")?;
        let attr_type = AttributeType::from(raw_type & !AF_TV);
        let value = if raw_type & AF_TV != 0 {
            AttributeValue::Short(r.u16("transform attribute")?)
        } else {
            let len = r.u16("transform attribute")?;
            AttributeValue::Long(r.take(len.into(), "transform attribute value")?.to_vec())
        };
        Ok(TransformAttribute { attr_type, value })
    }

    fn emit(&self, buf: &mut Vec<u8>) {
        let ty = self.attr_type.to_raw() & !AF_TV;
        match &self.value {
            AttributeValue::Short(v) => {
                put_u16(buf, ty | AF_TV);
                put_u16(buf, *v);
            }
            AttributeValue::Long(v) => {
                put_u16(buf, ty);
                let slot = LengthSlot::u16(buf, buf.len() + 2);
                buf.extend_from_slice(v);
                slot.fill(buf);
            }
        }
    }

    fn buffer_len(&self) -> usize {
        match &self.value {
            AttributeValue::Short(_) => 4,
            AttributeValue::Long(v) => 4 + v.len(),
        }
    }
}

/// A transform substructure (RFC 7296 section 3.3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transform {
    /// The transform type and ID.
    pub id: TransformId,
    /// Its attributes, in wire order.
    pub attributes: Vec<TransformAttribute>,
}

impl Transform {
    /// A transform without attributes.
    pub fn new(id: TransformId) -> Self {
        Transform {
            id,
            attributes: Vec::new(),
        }
    }

    /// A transform with one Key Length attribute of `bits` bits.
    pub fn with_key_length(id: TransformId, bits: u16) -> Self {
        Transform {
            id,
            attributes: vec![TransformAttribute::key_length(bits)],
        }
    }

    /// The value of the first TV Key Length attribute, if any.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            TransformAttribute {
                attr_type: AttributeType::KeyLength,
                value: AttributeValue::Short(bits),
            } => Some(*bits),
            _ => None,
        })
    }

    fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let transform_type = r.u8("transform")?;
        let _reserved = r.u8("transform")?;
        let id = r.u16("transform")?;
        let mut attributes = Vec::new();
        while !r.is_empty() {
            attributes.push(TransformAttribute::parse(&mut r)?);
        }
        Ok(Transform {
            id: TransformId::from_raw(transform_type, id),
            attributes,
        })
    }

    fn emit(&self, last: bool, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.push(if last { LAST } else { MORE_TRANSFORMS });
        buf.push(0);
        let slot = LengthSlot::u16(buf, start);
        let (ty, id) = self.id.to_raw();
        buf.push(ty);
        buf.push(0);
        put_u16(buf, id);
        for a in &self.attributes {
            a.emit(buf);
        }
        slot.fill(buf);
    }

    /// The transform substructure's length on the wire, header included.
    pub fn buffer_len(&self) -> usize {
        8 + self
            .attributes
            .iter()
            .map(TransformAttribute::buffer_len)
            .sum::<usize>()
    }
}

/// A proposal substructure (RFC 7296 section 3.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The proposal number (the first is 1; alternatives for the same SA share one).
    pub number: u8,
    /// The protocol the SA is for.
    pub protocol: ProtocolId,
    /// The sender's SPI (empty in an initial IKE_SA_INIT, 4 bytes for ESP/AH, 8 for an IKE
    /// rekey); at most 255 bytes.
    pub spi: Vec<u8>,
    /// The transforms, at most 255.
    pub transforms: Vec<Transform>,
}

impl Proposal {
    fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let number = r.u8("proposal")?;
        let protocol = ProtocolId::from(r.u8("proposal")?);
        let spi_size = r.u8("proposal")?;
        let declared = usize::from(r.u8("proposal")?);
        let spi = r.take(spi_size.into(), "proposal SPI")?.to_vec();
        let mut transforms = Vec::new();
        while !r.is_empty() {
            let marker = r.u8("transform")?;
            let _reserved = r.u8("transform")?;
            let len = usize::from(r.u16("transform")?);
            if len < 8 {
                return Err(WireError::BadLength { what: "transform" });
            }
            let tbody = r.take(len - 4, "transform")?;
            transforms.push(Transform::parse(tbody)?);
            match marker {
                LAST => r.finish("last transform")?,
                MORE_TRANSFORMS if r.is_empty() => {
                    return Err(WireError::Truncated { what: "proposal" });
                }
                MORE_TRANSFORMS => {}
                _ => {
                    return Err(WireError::InvalidValue {
                        what: "transform Last Substruc",
                    });
                }
            }
        }
        if transforms.len() != declared {
            return Err(WireError::CountMismatch {
                what: "proposal transforms",
                declared,
                found: transforms.len(),
            });
        }
        Ok(Proposal {
            number,
            protocol,
            spi,
            transforms,
        })
    }

    fn emit(&self, last: bool, buf: &mut Vec<u8>) {
        let start = buf.len();
        buf.push(if last { LAST } else { MORE_PROPOSALS });
        buf.push(0);
        let slot = LengthSlot::u16(buf, start);
        buf.push(self.number);
        buf.push(self.protocol.into());
        buf.push(u8::try_from(self.spi.len()).unwrap_or(u8::MAX));
        buf.push(u8::try_from(self.transforms.len()).unwrap_or(u8::MAX));
        buf.extend_from_slice(&self.spi);
        let n = self.transforms.len();
        for (i, t) in self.transforms.iter().enumerate() {
            t.emit(i + 1 == n, buf);
        }
        slot.fill(buf);
    }

    /// The proposal substructure's length on the wire, header included.
    pub fn buffer_len(&self) -> usize {
        8 + self.spi.len()
            + self
                .transforms
                .iter()
                .map(Transform::buffer_len)
                .sum::<usize>()
    }
}

/// The body of a Security Association payload: one or more proposals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaPayload {
    /// The proposals, in order of preference.
    pub proposals: Vec<Proposal>,
}

impl SaPayload {
    /// Parses an SA payload body (after the generic payload header).
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let mut proposals = Vec::new();
        loop {
            let marker = r.u8("proposal")?;
            let _reserved = r.u8("proposal")?;
            let len = usize::from(r.u16("proposal")?);
            if len < 8 {
                return Err(WireError::BadLength { what: "proposal" });
            }
            let pbody = r.take(len - 4, "proposal")?;
            proposals.push(Proposal::parse(pbody)?);
            match marker {
                LAST => {
                    r.finish("last proposal")?;
                    return Ok(SaPayload { proposals });
                }
                MORE_PROPOSALS => {}
                _ => {
                    return Err(WireError::InvalidValue {
                        what: "proposal Last Substruc",
                    });
                }
            }
        }
    }

    /// Appends the body.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        let n = self.proposals.len();
        for (i, p) in self.proposals.iter().enumerate() {
            p.emit(i + 1 == n, buf);
        }
    }

    /// The body's length.
    pub fn buffer_len(&self) -> usize {
        self.proposals.iter().map(Proposal::buffer_len).sum()
    }
}

/// The body of a Key Exchange payload (RFC 7296 section 3.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KePayload {
    /// The Diffie-Hellman group / key exchange method of `data`.
    pub group: DhGroup,
    /// The public value.
    pub data: Vec<u8>,
}

impl KePayload {
    /// Parses a KE payload body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let group = DhGroup::from(r.u16("KE payload")?);
        let _reserved = r.u16("KE payload")?;
        Ok(KePayload {
            group,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        put_u16(buf, self.group.into());
        put_u16(buf, 0);
        buf.extend_from_slice(&self.data);
    }

    /// The body's length.
    pub fn buffer_len(&self) -> usize {
        4 + self.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(sa: &SaPayload) {
        let mut buf = Vec::new();
        sa.emit(&mut buf);
        assert_eq!(buf.len(), sa.buffer_len());
        assert_eq!(&SaPayload::parse(&buf).unwrap(), sa);
    }

    #[test]
    fn sa_roundtrip_with_unknown_ids_and_attributes() {
        roundtrip(&SaPayload {
            proposals: vec![
                Proposal {
                    number: 1,
                    protocol: ProtocolId::Esp,
                    spi: vec![1, 2, 3, 4],
                    transforms: vec![
                        Transform::with_key_length(TransformId::Encr(EncrId::AesGcm16), 256),
                        Transform::new(TransformId::Esn(EsnId::NoEsn)),
                        Transform {
                            id: TransformId::Encr(EncrId::Unknown(1000)),
                            attributes: vec![
                                TransformAttribute {
                                    attr_type: AttributeType::Unknown(0x1234),
                                    value: AttributeValue::Long(vec![9; 5]),
                                },
                                TransformAttribute {
                                    attr_type: AttributeType::Unknown(3),
                                    value: AttributeValue::Short(7),
                                },
                            ],
                        },
                        Transform::new(TransformId::Unknown {
                            transform_type: 200,
                            id: 0xbeef,
                        }),
                    ],
                },
                Proposal {
                    number: 2,
                    protocol: ProtocolId::Unknown(77),
                    spi: vec![],
                    transforms: vec![],
                },
            ],
        });
    }

    #[test]
    fn transform_id_typed_by_type() {
        assert_eq!(
            TransformId::from_raw(4, 31),
            TransformId::Dh(DhGroup::Curve25519)
        );
        assert_eq!(TransformId::Prf(PrfId::HmacSha2_512).to_raw(), (2, 7));
        assert_eq!(
            TransformId::Unknown {
                transform_type: 1,
                id: 20
            },
            TransformId::Encr(EncrId::AesGcm16)
        );
        assert_eq!(
            Transform::with_key_length(TransformId::Encr(EncrId::AesCbc), 128).key_length(),
            Some(128)
        );
    }

    #[test]
    fn sa_rejects_bad_structure() {
        let good = SaPayload {
            proposals: vec![Proposal {
                number: 1,
                protocol: ProtocolId::Ike,
                spi: vec![],
                transforms: vec![
                    Transform::new(TransformId::Prf(PrfId::HmacSha2_256)),
                    Transform::new(TransformId::Dh(DhGroup::Curve25519)),
                ],
            }],
        };
        let mut buf = Vec::new();
        good.emit(&mut buf);

        let mut b = buf.clone();
        b[0] = 1; // bad proposal Last Substruc
        assert_eq!(
            SaPayload::parse(&b),
            Err(WireError::InvalidValue {
                what: "proposal Last Substruc"
            })
        );
        let mut b = buf.clone();
        b[7] = 3; // wrong transform count
        assert!(matches!(
            SaPayload::parse(&b),
            Err(WireError::CountMismatch { .. })
        ));
        let mut b = buf.clone();
        b[8] = 0; // first transform claims to be last
        assert_eq!(
            SaPayload::parse(&b),
            Err(WireError::TrailingData {
                what: "last transform"
            })
        );
        let mut b = buf.clone();
        b[3] = 4; // proposal length below minimum
        assert_eq!(
            SaPayload::parse(&b),
            Err(WireError::BadLength { what: "proposal" })
        );
        assert!(SaPayload::parse(&[]).is_err());
    }

    #[test]
    fn ke_roundtrip() {
        let ke = KePayload {
            group: DhGroup::Unknown(0x0fff),
            data: vec![1, 2, 3],
        };
        let mut buf = Vec::new();
        ke.emit(&mut buf);
        assert_eq!(buf, [0x0f, 0xff, 0, 0, 1, 2, 3]);
        assert_eq!(KePayload::parse(&buf).unwrap(), ke);
        assert!(KePayload::parse(&buf[..3]).is_err());
    }
}
