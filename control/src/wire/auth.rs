//! Identity and authentication payloads: Identification (IDi/IDr, RFC 7296 section 3.5),
//! Certificate and Certificate Request (3.6, 3.7) and Authentication (3.8).
//!
//! ```text
//! ID body:      ID Type | RESERVED (3) | Identification Data
//! CERT body:    Cert Encoding | Certificate Data
//! CERTREQ body: Cert Encoding | Certification Authority
//! AUTH body:    Auth Method | RESERVED (3) | Authentication Data
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use super::WireError;
use super::codec::Reader;

open_enum! {
    /// Identification types (IANA "IKEv2 Identification Payload ID Types").
    pub enum IdType: u8 {
        /// `ID_IPV4_ADDR` (1): four octets.
        Ipv4Addr = 1,
        /// `ID_FQDN` (2): a domain name, no terminator.
        Fqdn = 2,
        /// `ID_RFC822_ADDR` (3): an email address, no terminator.
        Rfc822Addr = 3,
        /// `ID_IPV6_ADDR` (5): sixteen octets.
        Ipv6Addr = 5,
        /// `ID_DER_ASN1_DN` (9): a DER-encoded X.500 distinguished name.
        DerAsn1Dn = 9,
        /// `ID_DER_ASN1_GN` (10): a DER-encoded X.509 GeneralName.
        DerAsn1Gn = 10,
        /// `ID_KEY_ID` (11): opaque octets.
        KeyId = 11,
        /// `ID_NULL` (13), RFC 7619.
        Null = 13,
    }
}

/// The body of an IDi or IDr payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdPayload {
    /// The identification type.
    pub id_type: IdType,
    /// The identification data, as received.
    pub data: Vec<u8>,
}

impl IdPayload {
    /// An `ID_IPV4_ADDR` identity.
    pub fn ipv4(addr: Ipv4Addr) -> Self {
        IdPayload {
            id_type: IdType::Ipv4Addr,
            data: addr.octets().to_vec(),
        }
    }

    /// An `ID_IPV6_ADDR` identity.
    pub fn ipv6(addr: Ipv6Addr) -> Self {
        IdPayload {
            id_type: IdType::Ipv6Addr,
            data: addr.octets().to_vec(),
        }
    }

    /// An `ID_FQDN` identity.
    pub fn fqdn(name: &str) -> Self {
        IdPayload {
            id_type: IdType::Fqdn,
            data: name.as_bytes().to_vec(),
        }
    }

    /// An `ID_RFC822_ADDR` identity.
    pub fn rfc822(addr: &str) -> Self {
        IdPayload {
            id_type: IdType::Rfc822Addr,
            data: addr.as_bytes().to_vec(),
        }
    }

    /// An `ID_KEY_ID` identity.
    pub fn key_id(id: &[u8]) -> Self {
        IdPayload {
            id_type: IdType::KeyId,
            data: id.to_vec(),
        }
    }

    /// The address of an `ID_IPV4_ADDR` identity of the right size.
    pub fn as_ipv4(&self) -> Option<Ipv4Addr> {
        match self.id_type {
            IdType::Ipv4Addr => <[u8; 4]>::try_from(self.data.as_slice())
                .ok()
                .map(Ipv4Addr::from),
            _ => None,
        }
    }

    /// The address of an `ID_IPV6_ADDR` identity of the right size.
    pub fn as_ipv6(&self) -> Option<Ipv6Addr> {
        match self.id_type {
            IdType::Ipv6Addr => <[u8; 16]>::try_from(self.data.as_slice())
                .ok()
                .map(Ipv6Addr::from),
            _ => None,
        }
    }

    /// The name of an `ID_FQDN` or `ID_RFC822_ADDR` identity that is valid UTF-8.
    pub fn as_str(&self) -> Option<&str> {
        match self.id_type {
            IdType::Fqdn | IdType::Rfc822Addr => core::str::from_utf8(&self.data).ok(),
            _ => None,
        }
    }

    /// Parses an ID payload body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let id_type = IdType::from(r.u8("ID payload")?);
        r.take(3, "ID payload")?;
        Ok(IdPayload {
            id_type,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[self.id_type.into(), 0, 0, 0]);
        buf.extend_from_slice(&self.data);
    }

    /// The body's length.
    pub fn buffer_len(&self) -> usize {
        4 + self.data.len()
    }
}

open_enum! {
    /// Certificate encodings (IANA "IKEv2 Certificate Encodings").
    pub enum CertEncoding: u8 {
        /// PKCS #7 wrapped X.509 certificate (1).
        Pkcs7X509 = 1,
        /// X.509 certificate - signature (4).
        X509Signature = 4,
        /// Certificate revocation list (7).
        Crl = 7,
        /// Raw RSA key (11).
        RawRsaKey = 11,
        /// Hash and URL of X.509 certificate (12).
        HashUrlX509 = 12,
        /// Hash and URL of X.509 bundle (13).
        HashUrlBundle = 13,
        /// Raw public key (15), RFC 7670.
        RawPublicKey = 15,
    }
}

/// The body of a CERT or CERTREQ payload: an encoding octet and opaque data (the
/// certificate, or for CERTREQ the concatenated SHA-1 hashes of trusted CA keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPayload {
    /// The certificate encoding.
    pub encoding: CertEncoding,
    /// The certificate data or certification authority data.
    pub data: Vec<u8>,
}

impl CertPayload {
    /// Parses a CERT or CERTREQ payload body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let encoding = CertEncoding::from(r.u8("CERT payload")?);
        Ok(CertPayload {
            encoding,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.push(self.encoding.into());
        buf.extend_from_slice(&self.data);
    }

    /// The body's length.
    pub fn buffer_len(&self) -> usize {
        1 + self.data.len()
    }
}

open_enum! {
    /// Authentication methods (IANA "IKEv2 Authentication Method").
    pub enum AuthMethod: u8 {
        /// RSA digital signature (1).
        RsaSig = 1,
        /// Shared key message integrity code (2).
        SharedKeyMic = 2,
        /// DSS digital signature (3).
        DssSig = 3,
        /// ECDSA with SHA-256 on P-256 (9), RFC 4754.
        EcdsaP256 = 9,
        /// ECDSA with SHA-384 on P-384 (10), RFC 4754.
        EcdsaP384 = 10,
        /// ECDSA with SHA-512 on P-521 (11), RFC 4754.
        EcdsaP521 = 11,
        /// Generic Secure Password Authentication Method (12), RFC 6467.
        Gspam = 12,
        /// NULL authentication (13), RFC 7619.
        Null = 13,
        /// Digital signature (14), RFC 7427.
        DigitalSignature = 14,
    }
}

/// The body of an AUTH payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthPayload {
    /// The authentication method.
    pub method: AuthMethod,
    /// The authentication data (a MAC or a signature).
    pub data: Vec<u8>,
}

impl AuthPayload {
    /// Parses an AUTH payload body.
    pub fn parse(body: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader::new(body);
        let method = AuthMethod::from(r.u8("AUTH payload")?);
        r.take(3, "AUTH payload")?;
        Ok(AuthPayload {
            method,
            data: r.rest().to_vec(),
        })
    }

    /// Appends the body.
    pub fn emit(&self, buf: &mut Vec<u8>) {
        buf.extend_from_slice(&[self.method.into(), 0, 0, 0]);
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

    #[test]
    fn id_helpers() {
        let v4 = IdPayload::ipv4(Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(v4.as_ipv4(), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(v4.as_ipv6(), None);
        let v6 = IdPayload::ipv6(Ipv6Addr::LOCALHOST);
        assert_eq!(v6.as_ipv6(), Some(Ipv6Addr::LOCALHOST));
        assert_eq!(IdPayload::fqdn("vpn.example").as_str(), Some("vpn.example"));
        assert_eq!(
            IdPayload::rfc822("a@b.example").as_str(),
            Some("a@b.example")
        );
        assert_eq!(IdPayload::key_id(b"k").as_str(), None);
        let short = IdPayload {
            id_type: IdType::Ipv4Addr,
            data: vec![1, 2],
        };
        assert_eq!(short.as_ipv4(), None);
    }

    #[test]
    fn roundtrips() {
        let id = IdPayload {
            id_type: IdType::Unknown(99),
            data: vec![1, 2, 3],
        };
        let mut buf = Vec::new();
        id.emit(&mut buf);
        assert_eq!(buf, [99, 0, 0, 0, 1, 2, 3]);
        assert_eq!(IdPayload::parse(&buf).unwrap(), id);

        let auth = AuthPayload {
            method: AuthMethod::SharedKeyMic,
            data: vec![7; 32],
        };
        let mut buf = Vec::new();
        auth.emit(&mut buf);
        assert_eq!(buf.len(), auth.buffer_len());
        assert_eq!(AuthPayload::parse(&buf).unwrap(), auth);

        let cert = CertPayload {
            encoding: CertEncoding::Unknown(200),
            data: vec![],
        };
        let mut buf = Vec::new();
        cert.emit(&mut buf);
        assert_eq!(CertPayload::parse(&buf).unwrap(), cert);

        assert!(IdPayload::parse(&[1, 0, 0]).is_err());
        assert!(AuthPayload::parse(&[2]).is_err());
        assert!(CertPayload::parse(&[]).is_err());
    }
}
