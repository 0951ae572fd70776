//! X.509 for IKE: the peer's chain (CERT payloads) checked against the configured CA
//! certificates by rustls-webpki (signatures, validity dates, basic constraints, path
//! length, extended key usage as IKE peers use it, CRLs), the identity the peer sent
//! checked against the end-entity certificate's subject DN or subjectAltNames (x509-parser),
//! as strongSwan does, and the CERTREQ data: SHA-1 hashes of the CAs' SubjectPublicKeyInfo
//! (RFC 7296 section 3.7).

use core::fmt;
use std::time::SystemTime;

use ring::digest;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, TrustAnchor, UnixTime};
use webpki::{
    EndEntityCert, ExtendedKeyUsageValidator, KeyPurposeId, KeyPurposeIdIter,
    OwnedCertRevocationList,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::AuthError;
use super::keys::PublicKey;
use crate::wire::{IdPayload, IdType};

/// The most CERT payloads taken from one message (end entity and intermediates); more is
/// refused as a chain that is too long.
pub const MAX_CHAIN: usize = 5;

/// The largest certificate accepted (CERT payload data or file).
pub const MAX_CERT_LEN: usize = 16 * 1024;

/// Loads every certificate of a PEM file, or the one of a DER file.
pub fn certs_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let pem: Vec<_> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("bad PEM: {e:?}"))?;
    let ders: Vec<Vec<u8>> = if pem.is_empty() {
        vec![bytes.to_vec()]
    } else {
        pem.into_iter().map(|c| c.to_vec()).collect()
    };
    for d in &ders {
        if d.len() > MAX_CERT_LEN {
            return Err(format!("a certificate longer than {MAX_CERT_LEN} bytes"));
        }
        match X509Certificate::from_der(d) {
            Ok((&[], _)) => {}
            _ => return Err("not an X.509 certificate (PEM or DER)".into()),
        }
    }
    Ok(ders)
}

/// The subject DN of a certificate as text (`C=CH, O=Lab, CN=gw`).
pub fn subject_of(der: &[u8]) -> Option<String> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    Some(c.subject().to_string())
}

/// The raw subject DN (DER) of a certificate, the `ID_DER_ASN1_DN` identity it implies.
pub fn subject_id(der: &[u8]) -> Option<IdPayload> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    Some(IdPayload {
        id_type: IdType::DerAsn1Dn,
        data: c.subject().as_raw().to_vec(),
    })
}

/// The raw public key of a certificate (the BIT STRING of its SubjectPublicKeyInfo).
pub fn public_key_bits(der: &[u8]) -> Option<Vec<u8>> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    Some(c.public_key().subject_public_key.data.to_vec())
}

/// Whether a certificate is a CA's (basicConstraints cA).
pub fn is_ca(der: &[u8]) -> bool {
    X509Certificate::from_der(der).is_ok_and(|(_, c)| {
        c.basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|b| b.value.ca)
    })
}

/// The raw (DER) issuer and subject DNs of a certificate.
pub fn issuer_and_subject(der: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    Some((c.issuer().as_raw().to_vec(), c.subject().as_raw().to_vec()))
}

/// Whether the identity names the certificate (DER), as [`cert_names`].
pub fn der_names(der: &[u8], id: &IdPayload) -> bool {
    X509Certificate::from_der(der).is_ok_and(|(_, c)| cert_names(&c, id))
}

/// SHA-1 of a certificate's DER SubjectPublicKeyInfo: its CERTREQ hash.
pub fn key_hash(der: &[u8]) -> Option<[u8; 20]> {
    let (_, c) = X509Certificate::from_der(der).ok()?;
    let d = digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, c.public_key().raw);
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    Some(out)
}

/// The CA certificates (trust anchors) and CRLs a connection checks its peer against,
/// plus raw public keys trusted as they are (RFC 7670).
pub struct TrustStore {
    anchors: Vec<TrustAnchor<'static>>,
    /// (subject, CERTREQ hash) of each CA.
    cas: Vec<(String, [u8; 20])>,
    crls: Vec<webpki::CertRevocationList<'static>>,
    /// The CRLs as loaded (DER), for rustls's client certificate verifier (EAP-TLS).
    crl_ders: Vec<Vec<u8>>,
    raw_keys: Vec<PublicKey>,
}

impl fmt::Debug for TrustStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustStore")
            .field(
                "cas",
                &self.cas.iter().map(|c| c.0.as_str()).collect::<Vec<_>>(),
            )
            .field("crls", &self.crls.len())
            .field("raw_keys", &self.raw_keys.len())
            .finish()
    }
}

/// What a verified peer certificate tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCert {
    /// The end-entity certificate's subject DN, as text.
    pub subject: String,
    /// The issuing trust anchor's subject.
    pub ca: String,
    /// Its public key.
    pub key: PublicKey,
}

/// The extended key usages an IKE peer's certificate may carry (any one of them, or
/// none): serverAuth, clientAuth, ipsecIKE (RFC 4945 section 5.1.3.12).
struct IkeEku;

const EKU_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
const EKU_IPSEC_IKE: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x11];

impl ExtendedKeyUsageValidator for IkeEku {
    fn validate(&self, iter: KeyPurposeIdIter<'_, '_>) -> Result<(), webpki::Error> {
        let mut empty = true;
        for id in iter {
            empty = false;
            let id = id?;
            if [EKU_SERVER_AUTH, EKU_CLIENT_AUTH, EKU_IPSEC_IKE]
                .iter()
                .any(|o| KeyPurposeId::new(o) == id)
            {
                return Ok(());
            }
        }
        if empty {
            Ok(())
        } else {
            #[allow(deprecated)]
            Err(webpki::Error::RequiredEkuNotFound)
        }
    }
}

impl TrustStore {
    /// A store of CA certificates (DER), CRLs (DER) and raw public keys (DER
    /// SubjectPublicKeyInfo).
    pub fn new(
        ca_ders: &[Vec<u8>],
        crl_ders: &[Vec<u8>],
        raw_key_ders: &[Vec<u8>],
    ) -> Result<TrustStore, String> {
        let mut anchors = Vec::new();
        let mut cas = Vec::new();
        for d in ca_ders {
            let der = CertificateDer::from(d.as_slice());
            let a = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| format!("CA certificate not usable: {e}"))?;
            anchors.push(a.to_owned());
            let subject = subject_of(d).unwrap_or_default();
            let hash = key_hash(d).ok_or("CA certificate not parsable")?;
            cas.push((subject, hash));
        }
        let mut crls = Vec::new();
        for d in crl_ders {
            let c = OwnedCertRevocationList::from_der(d).map_err(|e| format!("bad CRL: {e}"))?;
            crls.push(webpki::CertRevocationList::Owned(c));
        }
        let raw_keys = raw_key_ders
            .iter()
            .map(|d| PublicKey::from_spki(d).map_err(|e| format!("bad public key: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(TrustStore {
            anchors,
            cas,
            crls,
            crl_ders: crl_ders.to_vec(),
            raw_keys,
        })
    }

    /// Loads CRLs from PEM or DER.
    pub fn crls_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
        let pem: Vec<_> = CertificateRevocationListDer::pem_slice_iter(bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("bad PEM: {e:?}"))?;
        Ok(if pem.is_empty() {
            vec![bytes.to_vec()]
        } else {
            pem.into_iter().map(|c| c.as_ref().to_vec()).collect()
        })
    }

    /// `CAs 'CN=a', 'CN=b', 1 CRL, 1 raw public key` for `mifsec check`.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.cas.is_empty() {
            let names: Vec<String> = self.cas.iter().map(|c| format!("'{}'", c.0)).collect();
            parts.push(format!("CAs {}", names.join(", ")));
        }
        if !self.crls.is_empty() {
            parts.push(format!("{} CRLs", self.crls.len()));
        }
        if !self.raw_keys.is_empty() {
            parts.push(format!("{} raw public keys", self.raw_keys.len()));
        }
        parts.join(", ")
    }

    /// The CERTREQ data: the concatenated SHA-1 hashes of the CAs' public keys.
    pub fn certreq_data(&self) -> Vec<u8> {
        self.cas.iter().flat_map(|c| c.1).collect()
    }

    /// Whether some CA is configured.
    pub fn has_cas(&self) -> bool {
        !self.cas.is_empty()
    }

    /// The subject of the CA whose CERTREQ hash is `hash`, if ours.
    pub fn ca_with_hash(&self, hash: &[u8]) -> Option<&str> {
        self.cas
            .iter()
            .find(|c| c.1[..] == *hash)
            .map(|c| c.0.as_str())
    }

    /// The CA certificates as trust anchors.
    pub fn anchors(&self) -> &[TrustAnchor<'static>] {
        &self.anchors
    }

    /// The CRLs, DER.
    pub fn crl_ders(&self) -> &[Vec<u8>] {
        &self.crl_ders
    }

    /// The trusted raw public keys.
    pub fn raw_keys(&self) -> &[PublicKey] {
        &self.raw_keys
    }

    /// Verifies a chain (end entity first, then intermediates in any order) at `now`, and
    /// that `id` names the end entity.
    pub fn verify(
        &self,
        chain: &[Vec<u8>],
        id: &IdPayload,
        now: SystemTime,
    ) -> Result<PeerCert, AuthError> {
        let (leaf, intermediates) = chain.split_first().ok_or(AuthError::NoCertificate)?;
        if chain.len() > MAX_CHAIN {
            return Err(AuthError::ChainTooLong);
        }
        if self.anchors.is_empty() {
            return Err(AuthError::UnknownCa);
        }
        let leaf_der = CertificateDer::from(leaf.as_slice());
        let ee = EndEntityCert::try_from(&leaf_der).map_err(|_| AuthError::MalformedCert)?;
        let inter: Vec<CertificateDer<'_>> = intermediates
            .iter()
            .map(|c| CertificateDer::from(c.as_slice()))
            .collect();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let crl_refs: Vec<&webpki::CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = if crl_refs.is_empty() {
            None
        } else {
            webpki::RevocationOptionsBuilder::new(&crl_refs)
                .ok()
                .map(|b| {
                    b.with_status_policy(webpki::UnknownStatusPolicy::Allow)
                        .build()
                })
        };
        let path = ee
            .verify_for_usage(
                webpki::ALL_VERIFICATION_ALGS,
                &self.anchors,
                &inter,
                UnixTime::since_unix_epoch(secs),
                IkeEku,
                revocation,
                None,
            )
            .map_err(map_webpki)?;
        let anchor_subject = path.anchor().subject.as_ref().to_vec();
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| AuthError::MalformedCert)?;
        if !cert_names(&cert, id) {
            return Err(AuthError::IdNotInCertificate);
        }
        let key = PublicKey::from_parsed(cert.public_key())?;
        let ca = x509_parser::x509::X509Name::from_der(&der_seq(&anchor_subject))
            .map(|(_, n)| n.to_string())
            .unwrap_or_default();
        Ok(PeerCert {
            subject: cert.subject().to_string(),
            ca,
            key,
        })
    }
}

/// webpki's trust anchor subject is the DN's content, without its SEQUENCE header.
fn der_seq(content: &[u8]) -> Vec<u8> {
    super::keys::der(0x30, content)
}

fn map_webpki(e: webpki::Error) -> AuthError {
    use webpki::Error as E;
    match e {
        E::CertExpired { .. } => AuthError::CertExpired,
        E::CertNotValidYet { .. } => AuthError::CertNotYetValid,
        E::UnknownIssuer => AuthError::UnknownCa,
        E::MaximumPathDepthExceeded
        | E::MaximumPathBuildCallsExceeded
        | E::MaximumSignatureChecksExceeded => AuthError::ChainTooLong,
        E::CertRevoked => AuthError::CertRevoked,
        E::InvalidSignatureForPublicKey => AuthError::BadCertSignature,
        #[allow(deprecated)]
        E::RequiredEkuNotFound => AuthError::WrongKeyUsage,
        E::RequiredEkuNotFoundContext(_) => AuthError::WrongKeyUsage,
        E::BadDer | E::BadDerTime | E::TrailingData(_) => AuthError::MalformedCert,
        _ => AuthError::CertRejected,
    }
}

/// Whether the identity names the certificate: an `ID_DER_ASN1_DN` equal to its subject,
/// or an FQDN, email address or IP address among its subjectAltNames (names compared
/// without regard to case), as strongSwan's `has_subject`.
pub fn cert_names(cert: &X509Certificate<'_>, id: &IdPayload) -> bool {
    if id.id_type == IdType::DerAsn1Dn {
        return cert.subject().as_raw() == id.data.as_slice() || dn_equal(cert, &id.data);
    }
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return false;
    };
    san.value
        .general_names
        .iter()
        .any(|g| match (g, id.id_type) {
            (GeneralName::DNSName(n), IdType::Fqdn) => n.as_bytes().eq_ignore_ascii_case(&id.data),
            (GeneralName::RFC822Name(n), IdType::Rfc822Addr) => {
                n.as_bytes().eq_ignore_ascii_case(&id.data)
            }
            (GeneralName::IPAddress(a), IdType::Ipv4Addr | IdType::Ipv6Addr) => *a == id.data,
            _ => false,
        })
}

/// A DN compared as strongSwan compares them (its `equals_dn`).
fn dn_equal(cert: &X509Certificate<'_>, other: &[u8]) -> bool {
    dn_compare(cert.subject().as_raw(), other, false)
}

/// The most RDNs a configured DN may have (as strongSwan's parser).
pub const MAX_RDNS: usize = 20;

const OID_EMAIL: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x01];
const TAG_UTF8: u8 = 12;
const TAG_PRINTABLE: u8 = 19;
const TAG_IA5: u8 = 22;

/// The attribute types a DN may be written with, as strongSwan names them (without regard
/// to case): the OID's content bytes and the string type a value is encoded as.
fn attribute_type(name: &str) -> Option<(Vec<u8>, u8)> {
    let x520 = |n: u8| Some((vec![0x55, 0x04, n], TAG_PRINTABLE));
    let pilot = |n: u8| {
        Some((
            vec![0x09, 0x92, 0x26, 0x89, 0x93, 0xf2, 0x2c, 0x64, 0x01, n],
            TAG_PRINTABLE,
        ))
    };
    match name.to_ascii_lowercase().as_str() {
        "cn" => x520(3),
        "s" => x520(4),
        "sn" | "serialnumber" => x520(5),
        "c" => x520(6),
        "l" => x520(7),
        "st" => x520(8),
        "o" => x520(10),
        "ou" => x520(11),
        "t" => x520(12),
        "d" => x520(13),
        "n" => x520(41),
        "g" => x520(42),
        "i" => x520(43),
        "dnqualifier" => x520(46),
        "uid" => pilot(1),
        "dc" => pilot(25),
        "e" | "email" | "emailaddress" => Some((OID_EMAIL.to_vec(), TAG_IA5)),
        _ => None,
    }
}

fn printable_string(v: &str) -> bool {
    v.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b" '()+,-./:=?".contains(&b))
}

/// Parses a distinguished name written as strongSwan writes them (`C=CH, O=Lab, CN=gw`,
/// or `/C=CH/O=Lab/CN=gw`) into its DER encoding, RDN by RDN in the order written: each
/// value a PrintableString when it can be one, else a UTF8String (emailAddress an
/// IA5String), spaces around types and values dropped, attribute types without regard to
/// case. A value `*` is a wildcard when the DN is matched against a peer's (`remote.id`).
pub fn parse_dn(s: &str) -> Result<Vec<u8>, String> {
    let (sep, body) = match s.trim_start().strip_prefix('/') {
        Some(rest) => ('/', rest),
        None => (',', s),
    };
    let mut rdns = Vec::new();
    for part in body.split(sep) {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: {part:?} is not TYPE=VALUE"))?;
        let (name, value) = (name.trim(), value.trim());
        let (oid_bytes, tag) = attribute_type(name).ok_or_else(|| {
            format!(
                "{s:?}: unknown attribute type {name:?} (C, ST, L, O, OU, CN, SN, S, G, I, T, D, N, DC, UID, E, dnQualifier)"
            )
        })?;
        let tag = if tag == TAG_PRINTABLE && !printable_string(value) {
            TAG_UTF8
        } else {
            tag
        };
        if tag == TAG_IA5 && !value.is_ascii() {
            return Err(format!("{s:?}: an email address is ASCII"));
        }
        let atv = super::keys::der(
            0x30,
            &[
                super::keys::der(0x06, &oid_bytes),
                super::keys::der(tag, value.as_bytes()),
            ]
            .concat(),
        );
        rdns.push(super::keys::der(0x31, &atv));
    }
    if rdns.is_empty() {
        return Err(format!(
            "{s:?}: a distinguished name needs TYPE=VALUE parts"
        ));
    }
    if rdns.len() > MAX_RDNS {
        return Err(format!("{s:?}: more than {MAX_RDNS} RDNs"));
    }
    Ok(super::keys::der(0x30, &rdns.concat()))
}

/// Whether a DER DN has a wildcard value (`*`).
pub fn dn_has_wildcards(dn: &[u8]) -> bool {
    x509_parser::x509::X509Name::from_der(dn)
        .is_ok_and(|(_, n)| n.iter_attributes().any(|a| a.attr_value().data == b"*"))
}

/// Whether the peer's DN `peer` matches the configured `want` (a `remote.id`): the same
/// RDNs in the same order, each of the same attribute type, and each value equal or, in
/// `want`, `*` (any value). As strongSwan's DN match: values of PrintableStrings on both
/// sides (and emailAddress IA5Strings) are compared without regard to case, any others
/// byte for byte; there is no reordering, and a different number of RDNs never matches.
pub fn dn_matches(peer: &[u8], want: &[u8]) -> bool {
    dn_compare(peer, want, true)
}

fn dn_compare(a: &[u8], b: &[u8], wildcards: bool) -> bool {
    if a == b {
        return true;
    }
    let (Ok((ra, na)), Ok((rb, nb))) = (
        x509_parser::x509::X509Name::from_der(a),
        x509_parser::x509::X509Name::from_der(b),
    ) else {
        return false;
    };
    if !ra.is_empty() || !rb.is_empty() {
        return false;
    }
    let x: Vec<_> = na.iter_attributes().collect();
    let y: Vec<_> = nb.iter_attributes().collect();
    x.len() == y.len()
        && x.iter().zip(&y).all(|(p, w)| {
            if p.attr_type() != w.attr_type() {
                return false;
            }
            let (pv, wv) = (p.attr_value(), w.attr_value());
            if wildcards && wv.data == b"*" {
                return true;
            }
            let (pt, wt) = (pv.tag().0, wv.tag().0);
            let caseless = pt == wt
                && (pt == u32::from(TAG_PRINTABLE)
                    || (pt == u32::from(TAG_IA5) && p.attr_type().as_bytes() == OID_EMAIL));
            if caseless {
                pv.data.eq_ignore_ascii_case(wv.data)
            } else {
                pv.data == wv.data
            }
        })
}

/// Whether the peer's identity `got` is the configured `want` (`remote.id`): a DN by
/// [`dn_matches`] (RDN order, wildcards), any other identity exactly.
pub fn id_matches(want: &IdPayload, got: &IdPayload) -> bool {
    if want.id_type == IdType::DerAsn1Dn && got.id_type == IdType::DerAsn1Dn {
        return dn_matches(&got.data, &want.data);
    }
    want == got
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::x509::X509Name;

    fn text(der: &[u8]) -> String {
        let (rest, n) = X509Name::from_der(der).unwrap();
        assert!(rest.is_empty());
        n.to_string()
    }

    fn tags(der: &[u8]) -> Vec<u32> {
        let (_, n) = X509Name::from_der(der).unwrap();
        n.iter_attributes()
            .map(|a| a.attr_value().tag().0)
            .collect()
    }

    #[test]
    fn distinguished_names_parse_as_strongswan_writes_them() {
        let dn = parse_dn("C=CH, O=Lab, CN=gw").unwrap();
        assert_eq!(text(&dn), "C=CH, O=Lab, CN=gw");
        assert_eq!(tags(&dn), [19, 19, 19]);
        // The slash form, attribute types in any case, spaces around parts.
        assert_eq!(parse_dn("/C=CH/O=Lab/CN=gw").unwrap(), dn);
        assert_eq!(parse_dn("c=CH,o = Lab ,  cn=gw").unwrap(), dn);
        // A value that is no PrintableString is a UTF8String; emailAddress an IA5String.
        let dn = parse_dn("C=CH, L=Zürich, E=gw@example.org, CN=gw_1").unwrap();
        assert_eq!(tags(&dn), [19, 12, 22, 12]);
        assert_eq!(text(&dn), "C=CH, L=Zürich, Email=gw@example.org, CN=gw_1");
        for bad in ["C=CH, XY=1", "C=CH, gw", "=", ",,"] {
            assert!(parse_dn(bad).is_err(), "{bad}");
        }
        let many = vec!["OU=x"; MAX_RDNS + 1].join(", ");
        assert!(parse_dn(&many).is_err());
    }

    #[test]
    fn distinguished_names_match_as_strongswan_matches_them() {
        let p = |s: &str| parse_dn(s).unwrap();
        let peer = p("C=CH, O=mifsec lab, CN=gw");
        // PrintableStrings on both sides: values without regard to case.
        assert!(dn_matches(&peer, &p("C=ch, O=MIFSEC LAB, CN=gw")));
        // Wildcards in the configured DN only, one value each.
        assert!(dn_matches(&peer, &p("C=CH, O=*, CN=*")));
        assert!(!dn_matches(&p("C=CH, O=*, CN=gw"), &peer));
        assert!(dn_has_wildcards(&p("C=CH, CN=*")));
        assert!(!dn_has_wildcards(&peer));
        // RDN order, number and attribute types must agree.
        assert!(!dn_matches(&peer, &p("CN=gw, O=mifsec lab, C=CH")));
        assert!(!dn_matches(&peer, &p("C=CH, CN=gw")));
        assert!(!dn_matches(&peer, &p("C=CH, O=mifsec lab, CN=gw, OU=x")));
        assert!(!dn_matches(&peer, &p("C=CH, OU=mifsec lab, CN=gw")));
        assert!(!dn_matches(&peer, &p("C=CH, O=mifsec lab, CN=gw2")));
        // A UTF8String against a PrintableString: byte for byte, so case counts.
        let utf8 = p("C=CH, L=Zürich, CN=gw");
        assert!(dn_matches(&utf8, &p("c=CH, l=Zürich, cn=GW")));
        assert!(!dn_matches(&utf8, &p("C=CH, L=zürich, CN=gw")));
        // emailAddress (IA5String) without regard to case.
        assert!(dn_matches(
            &p("E=Gw@Example.org, CN=gw"),
            &p("E=gw@example.org, CN=gw")
        ));
        assert!(!dn_matches(b"garbage", &peer));
        // Other identities: exactly.
        let dn_id = |s: &str| IdPayload {
            id_type: IdType::DerAsn1Dn,
            data: p(s),
        };
        assert!(id_matches(&dn_id("CN=*"), &dn_id("CN=x")));
        assert!(!id_matches(&dn_id("CN=*"), &IdPayload::fqdn("x")));
        assert!(id_matches(&IdPayload::fqdn("gw"), &IdPayload::fqdn("gw")));
        assert!(!id_matches(&IdPayload::fqdn("gw"), &IdPayload::fqdn("GW")));
    }
}
