//! Private keys (ours) and public keys (the peer's), and the signatures of IKEv2's
//! signature-based AUTH methods, all with ring: RFC 7427 Digital Signature (method 14) with
//! its ASN.1 AlgorithmIdentifier, and the legacy methods 1 (RSA, SHA-1; verified only, ring
//! does not sign with SHA-1) and 9 / 10 (ECDSA P-256 / P-384, RFC 4754, `r | s`).
//!
//! Keys load from PEM or DER: PKCS#8 (any type), SEC1 (`EC PRIVATE KEY`) and PKCS#1
//! (`RSA PRIVATE KEY`). Private key bytes only pass through [`Zeroizing`] buffers; ring's
//! key pairs hold them afterwards.

use core::fmt;

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo};
use zeroize::Zeroizing;

use super::AuthError;
use crate::wire::AuthMethod;

/// The hash algorithms of SIGNATURE_HASH_ALGORITHMS (RFC 7427 section 4, RFC 8420): SHA2-256
/// (2), SHA2-384 (3), SHA2-512 (4), Identity (5, for Ed25519).
pub const HASH_SHA256: u16 = 2;
/// SHA2-384.
pub const HASH_SHA384: u16 = 3;
/// SHA2-512.
pub const HASH_SHA512: u16 = 4;
/// Identity (the signature algorithm hashes itself: Ed25519).
pub const HASH_IDENTITY: u16 = 5;

/// The kind of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA on P-256.
    EcdsaP256,
    /// ECDSA on P-384.
    EcdsaP384,
    /// Ed25519.
    Ed25519,
    /// RSA (2048 to 8192 bits for verification).
    Rsa,
}

impl fmt::Display for KeyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyKind::EcdsaP256 => "ECDSA P-256",
            KeyKind::EcdsaP384 => "ECDSA P-384",
            KeyKind::Ed25519 => "Ed25519",
            KeyKind::Rsa => "RSA",
        })
    }
}

/// A signature scheme of RFC 7427 (the AlgorithmIdentifier in a method 14 AUTH).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// ecdsa-with-SHA256.
    EcdsaSha256,
    /// ecdsa-with-SHA384.
    EcdsaSha384,
    /// ecdsa-with-SHA512 (recognised; ring verifies it on no curve we have).
    EcdsaSha512,
    /// Ed25519 (RFC 8420).
    Ed25519,
    /// sha256WithRSAEncryption (PKCS#1 v1.5).
    RsaSha256,
    /// sha384WithRSAEncryption.
    RsaSha384,
    /// sha512WithRSAEncryption.
    RsaSha512,
    /// RSASSA-PSS with SHA-256, MGF1-SHA-256, salt of 32 octets.
    RsaPssSha256,
    /// RSASSA-PSS with SHA-384, MGF1-SHA-384, salt of 48 octets.
    RsaPssSha384,
    /// RSASSA-PSS with SHA-512, MGF1-SHA-512, salt of 64 octets.
    RsaPssSha512,
}

const OID_SHA256: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01];
const OID_SHA384: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02];
const OID_SHA512: &[u8] = &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03];
const OID_PKCS1: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
const OID_ECDSA_SIG: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];
const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

/// A DER TLV.
pub(crate) fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else if n < 0x100 {
        out.extend_from_slice(&[0x81, n as u8]);
    } else if n < 0x10000 {
        out.extend_from_slice(&[0x82, (n >> 8) as u8, n as u8]);
    } else {
        out.extend_from_slice(&[0x83, (n >> 16) as u8, (n >> 8) as u8, n as u8]);
    }
    out.extend_from_slice(content);
    out
}

fn seq(parts: &[&[u8]]) -> Vec<u8> {
    der(0x30, &parts.concat())
}

fn oid(o: &[u8]) -> Vec<u8> {
    der(0x06, o)
}

const NULL: &[u8] = &[0x05, 0x00];

fn hash_alg_id(h: &[u8]) -> Vec<u8> {
    seq(&[&oid(h), NULL])
}

impl Scheme {
    /// The SIGNATURE_HASH_ALGORITHMS value this scheme needs.
    pub fn hash(self) -> u16 {
        match self {
            Scheme::EcdsaSha256 | Scheme::RsaSha256 | Scheme::RsaPssSha256 => HASH_SHA256,
            Scheme::EcdsaSha384 | Scheme::RsaSha384 | Scheme::RsaPssSha384 => HASH_SHA384,
            Scheme::EcdsaSha512 | Scheme::RsaSha512 | Scheme::RsaPssSha512 => HASH_SHA512,
            Scheme::Ed25519 => HASH_IDENTITY,
        }
    }

    /// The DER AlgorithmIdentifier (RFC 7427 appendix A).
    pub fn algorithm_identifier(self) -> Vec<u8> {
        let ecdsa = |n: u8| seq(&[&oid(&[OID_ECDSA_SIG, &[n]].concat())]);
        let rsa = |n: u8| seq(&[&oid(&[OID_PKCS1, &[n]].concat()), NULL]);
        let pss = |h: &[u8], salt: u8| {
            let hash = hash_alg_id(h);
            let mgf = seq(&[&oid(&[OID_PKCS1, &[8]].concat()), &hash]);
            let params = seq(&[
                &der(0xa0, &hash),
                &der(0xa1, &mgf),
                &der(0xa2, &der(0x02, &[salt])),
            ]);
            seq(&[&oid(&[OID_PKCS1, &[10]].concat()), &params])
        };
        match self {
            Scheme::EcdsaSha256 => ecdsa(2),
            Scheme::EcdsaSha384 => ecdsa(3),
            Scheme::EcdsaSha512 => ecdsa(4),
            Scheme::Ed25519 => seq(&[&oid(OID_ED25519)]),
            Scheme::RsaSha256 => rsa(11),
            Scheme::RsaSha384 => rsa(12),
            Scheme::RsaSha512 => rsa(13),
            Scheme::RsaPssSha256 => pss(OID_SHA256, 32),
            Scheme::RsaPssSha384 => pss(OID_SHA384, 48),
            Scheme::RsaPssSha512 => pss(OID_SHA512, 64),
        }
    }

    /// The scheme of a DER AlgorithmIdentifier; RSASSA-PSS only with MGF1 of the same hash
    /// and a salt as long as the hash (what ring verifies).
    pub fn from_algorithm_identifier(der: &[u8]) -> Result<Scheme, AuthError> {
        let (rest, alg) =
            AlgorithmIdentifier::from_der(der).map_err(|_| AuthError::MalformedAuth)?;
        if !rest.is_empty() {
            return Err(AuthError::MalformedAuth);
        }
        let o = alg.algorithm.as_bytes();
        let ecdsa = |n| [OID_ECDSA_SIG, &[n]].concat();
        let pkcs1 = |n| [OID_PKCS1, &[n]].concat();
        Ok(match o {
            _ if o == ecdsa(2) => Scheme::EcdsaSha256,
            _ if o == ecdsa(3) => Scheme::EcdsaSha384,
            _ if o == ecdsa(4) => Scheme::EcdsaSha512,
            _ if o == OID_ED25519 => Scheme::Ed25519,
            _ if o == pkcs1(11) => Scheme::RsaSha256,
            _ if o == pkcs1(12) => Scheme::RsaSha384,
            _ if o == pkcs1(13) => Scheme::RsaSha512,
            _ if o == pkcs1(10) => {
                let params = alg.parameters.as_ref().ok_or(AuthError::MalformedAuth)?;
                let p = x509_parser::signature_algorithm::RsaSsaPssParams::try_from(params)
                    .map_err(|_| AuthError::MalformedAuth)?;
                let hash = p.hash_algorithm_oid().as_bytes();
                let mgf_hash = p
                    .mask_gen_algorithm()
                    .map_err(|_| AuthError::MalformedAuth)?
                    .hash;
                let (scheme, len) = match hash {
                    _ if hash == OID_SHA256 => (Scheme::RsaPssSha256, 32),
                    _ if hash == OID_SHA384 => (Scheme::RsaPssSha384, 48),
                    _ if hash == OID_SHA512 => (Scheme::RsaPssSha512, 64),
                    _ => return Err(AuthError::UnsupportedSignature),
                };
                if mgf_hash.as_bytes() != hash || p.salt_length() != len {
                    return Err(AuthError::UnsupportedSignature);
                }
                scheme
            }
            _ => return Err(AuthError::UnsupportedSignature),
        })
    }
}

/// Our private key.
pub struct PrivateKey {
    inner: Inner,
    /// The raw public key: the EC point, the Ed25519 key, or the PKCS#1 RSAPublicKey.
    public: Vec<u8>,
}

enum Inner {
    Ecdsa {
        p384: bool,
        asn1: Box<EcdsaKeyPair>,
        fixed: Box<EcdsaKeyPair>,
    },
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey")
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl PrivateKey {
    /// Loads a key from PEM (`PRIVATE KEY`, `EC PRIVATE KEY`, `RSA PRIVATE KEY`) or DER
    /// (PKCS#8, SEC1, PKCS#1, tried in that order).
    pub fn from_pem_or_der(bytes: &[u8]) -> Result<PrivateKey, String> {
        let rng = SystemRandom::new();
        if let Ok(k) = PrivateKeyDer::from_pem_slice(bytes) {
            return match &k {
                PrivateKeyDer::Pkcs8(d) => Self::from_pkcs8(d.secret_pkcs8_der(), &rng),
                PrivateKeyDer::Sec1(d) => Self::from_sec1(d.secret_sec1_der(), &rng),
                PrivateKeyDer::Pkcs1(d) => Self::from_pkcs1(d.secret_pkcs1_der()),
                _ => Err("unsupported PEM key type".into()),
            };
        }
        if bytes.first() != Some(&0x30) {
            return Err("neither a PEM private key nor DER".into());
        }
        Self::from_pkcs8(bytes, &rng)
            .or_else(|_| Self::from_sec1(bytes, &rng))
            .or_else(|_| Self::from_pkcs1(bytes))
            .map_err(|_| "DER that is no PKCS#8, SEC1 or PKCS#1 key ring accepts".into())
    }

    /// Whether a key file is an encrypted PKCS#8 key (PEM `ENCRYPTED PRIVATE KEY`, or DER
    /// EncryptedPrivateKeyInfo).
    pub fn is_encrypted(bytes: &[u8]) -> bool {
        Self::encrypted_info(bytes).is_ok()
    }

    /// The DER EncryptedPrivateKeyInfo of a PEM or DER file.
    fn encrypted_info(bytes: &[u8]) -> Result<pkcs8::Document, String> {
        use pkcs8::der::Decode;
        let doc = match std::str::from_utf8(bytes) {
            Ok(text) if text.contains("-----BEGIN") => {
                let (label, doc) =
                    pkcs8::Document::from_pem(text).map_err(|e| format!("bad PEM: {e}"))?;
                if label != "ENCRYPTED PRIVATE KEY" {
                    return Err(format!("a PEM {label}, not an ENCRYPTED PRIVATE KEY"));
                }
                doc
            }
            _ => pkcs8::Document::from_der(bytes).map_err(|e| format!("not DER: {e}"))?,
        };
        pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("not a PKCS#8 EncryptedPrivateKeyInfo: {e}"))?;
        Ok(doc)
    }

    /// Loads an encrypted PKCS#8 key (EncryptedPrivateKeyInfo, PEM `ENCRYPTED PRIVATE
    /// KEY` or DER) with its passphrase: PBES2 (PBKDF2 with HMAC-SHA-1/224/256/384/512, or
    /// scrypt) and AES-128/192/256-CBC, as `openssl pkcs8 -topk8 -v2 aes256` writes it,
    /// decrypted by the RustCrypto `pkcs8` crate (ring cannot). The decrypted key lives in a
    /// buffer wiped on drop until ring has taken it.
    pub fn from_encrypted(bytes: &[u8], passphrase: &[u8]) -> Result<PrivateKey, String> {
        let doc = Self::encrypted_info(bytes)?;
        let info = pkcs8::EncryptedPrivateKeyInfo::try_from(doc.as_bytes())
            .map_err(|e| format!("not a PKCS#8 EncryptedPrivateKeyInfo: {e}"))?;
        let wrong = "wrong passphrase (secret) for this encrypted key";
        let plain = info.decrypt(passphrase).map_err(|e| match e {
            // pkcs5 0.7 reports bad padding after a wrong key as EncryptFailed.
            pkcs8::Error::EncryptedPrivateKey(
                pkcs8::pkcs5::Error::DecryptFailed | pkcs8::pkcs5::Error::EncryptFailed,
            )
            | pkcs8::Error::Asn1(_) => wrong.to_owned(),
            e => format!("cannot decrypt: {e} (PBES2 with PBKDF2 or scrypt and AES-CBC only)"),
        })?;
        // A wrong passphrase that happened to leave valid padding decrypts to garbage.
        Self::from_pkcs8(plain.as_bytes(), &SystemRandom::new()).map_err(|_| wrong.to_owned())
    }

    fn from_pkcs8(der: &[u8], rng: &SystemRandom) -> Result<PrivateKey, String> {
        let ec = |alg, alg_fixed, p384| -> Option<PrivateKey> {
            let asn1 = EcdsaKeyPair::from_pkcs8(alg, der, rng).ok()?;
            let fixed = EcdsaKeyPair::from_pkcs8(alg_fixed, der, rng).ok()?;
            let public = asn1.public_key().as_ref().to_vec();
            Some(PrivateKey {
                inner: Inner::Ecdsa {
                    p384,
                    asn1: Box::new(asn1),
                    fixed: Box::new(fixed),
                },
                public,
            })
        };
        if let Some(k) = ec(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            false,
        ) {
            return Ok(k);
        }
        if let Some(k) = ec(
            &signature::ECDSA_P384_SHA384_ASN1_SIGNING,
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            true,
        ) {
            return Ok(k);
        }
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let public = k.public_key().as_ref().to_vec();
            return Ok(PrivateKey {
                inner: Inner::Ed25519(k),
                public,
            });
        }
        match RsaKeyPair::from_pkcs8(der) {
            Ok(k) => Ok(Self::rsa(k)),
            Err(e) => Err(format!("PKCS#8 key not accepted: {e}")),
        }
    }

    /// SEC1 `ECPrivateKey`: wrapped into PKCS#8 with each curve we have until ring takes it
    /// (ring checks the key against the curve; the SEC1 structure must carry its public key).
    fn from_sec1(sec1: &[u8], rng: &SystemRandom) -> Result<PrivateKey, String> {
        for curve in [OID_P256, OID_P384] {
            let alg = seq(&[&oid(OID_EC_PUBLIC_KEY), &oid(curve)]);
            let pkcs8 = Zeroizing::new(seq(&[&[0x02, 0x01, 0x00], &alg, &der(0x04, sec1)]));
            let d = PrivatePkcs8KeyDer::from(&pkcs8[..]);
            if let Ok(k) = Self::from_pkcs8(d.secret_pkcs8_der(), rng) {
                return Ok(k);
            }
        }
        Err("SEC1 EC key not accepted (P-256 and P-384 only, with its public key)".into())
    }

    fn from_pkcs1(der: &[u8]) -> Result<PrivateKey, String> {
        RsaKeyPair::from_der(der)
            .map(Self::rsa)
            .map_err(|e| format!("PKCS#1 RSA key not accepted: {e}"))
    }

    fn rsa(k: RsaKeyPair) -> PrivateKey {
        let public = k.public().as_ref().to_vec();
        PrivateKey {
            inner: Inner::Rsa(k),
            public,
        }
    }

    /// The key's kind.
    pub fn kind(&self) -> KeyKind {
        match &self.inner {
            Inner::Ecdsa { p384: false, .. } => KeyKind::EcdsaP256,
            Inner::Ecdsa { p384: true, .. } => KeyKind::EcdsaP384,
            Inner::Ed25519(_) => KeyKind::Ed25519,
            Inner::Rsa(_) => KeyKind::Rsa,
        }
    }

    /// The raw public key (the BIT STRING of its SubjectPublicKeyInfo).
    pub fn public_key(&self) -> &[u8] {
        &self.public
    }

    /// The DER SubjectPublicKeyInfo of the public key (a raw public key CERT, RFC 7670).
    pub fn spki(&self) -> Vec<u8> {
        let alg = match self.kind() {
            KeyKind::EcdsaP256 => seq(&[&oid(OID_EC_PUBLIC_KEY), &oid(OID_P256)]),
            KeyKind::EcdsaP384 => seq(&[&oid(OID_EC_PUBLIC_KEY), &oid(OID_P384)]),
            KeyKind::Ed25519 => seq(&[&oid(OID_ED25519)]),
            KeyKind::Rsa => seq(&[&oid(&[OID_PKCS1, &[1]].concat()), NULL]),
        };
        let bits = der(0x03, &[&[0u8][..], &self.public].concat());
        seq(&[&alg, &bits])
    }

    /// The AUTH method and data we send: RFC 7427 (method 14) with a hash the peer
    /// announced; without SIGNATURE_HASH_ALGORITHMS from the peer, ECDSA keys use the
    /// RFC 4754 methods 9 / 10, the others method 14 all the same. `rsa_pss` picks
    /// RSASSA-PSS over PKCS#1 v1.5.
    pub fn sign_auth(
        &self,
        peer_hashes: &[u16],
        rsa_pss: bool,
        octets: &[u8],
    ) -> Result<(AuthMethod, Vec<u8>), AuthError> {
        let rng = SystemRandom::new();
        let has = |h| peer_hashes.contains(&h);
        let (scheme, sig) = match &self.inner {
            Inner::Ecdsa { p384, asn1, fixed } => {
                let (scheme, h, legacy) = if *p384 {
                    (Scheme::EcdsaSha384, HASH_SHA384, AuthMethod::EcdsaP384)
                } else {
                    (Scheme::EcdsaSha256, HASH_SHA256, AuthMethod::EcdsaP256)
                };
                if !has(h) {
                    let s = fixed
                        .sign(&rng, octets)
                        .map_err(|_| AuthError::SignFailed)?;
                    return Ok((legacy, s.as_ref().to_vec()));
                }
                let s = asn1.sign(&rng, octets).map_err(|_| AuthError::SignFailed)?;
                (scheme, s.as_ref().to_vec())
            }
            Inner::Ed25519(k) => (Scheme::Ed25519, k.sign(octets).as_ref().to_vec()),
            Inner::Rsa(k) => {
                let pick = |h, a, b| (has(h), if rsa_pss { a } else { b });
                let options = [
                    pick(HASH_SHA256, Scheme::RsaPssSha256, Scheme::RsaSha256),
                    pick(HASH_SHA384, Scheme::RsaPssSha384, Scheme::RsaSha384),
                    pick(HASH_SHA512, Scheme::RsaPssSha512, Scheme::RsaSha512),
                ];
                let scheme = options.iter().find(|o| o.0).map_or(options[0].1, |o| o.1);
                let enc: &'static dyn signature::RsaEncoding = match scheme {
                    Scheme::RsaPssSha256 => &signature::RSA_PSS_SHA256,
                    Scheme::RsaPssSha384 => &signature::RSA_PSS_SHA384,
                    Scheme::RsaPssSha512 => &signature::RSA_PSS_SHA512,
                    Scheme::RsaSha384 => &signature::RSA_PKCS1_SHA384,
                    Scheme::RsaSha512 => &signature::RSA_PKCS1_SHA512,
                    _ => &signature::RSA_PKCS1_SHA256,
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(enc, &rng, octets, &mut sig)
                    .map_err(|_| AuthError::SignFailed)?;
                (scheme, sig)
            }
        };
        let alg = scheme.algorithm_identifier();
        let mut data = Vec::with_capacity(1 + alg.len() + sig.len());
        data.push(alg.len() as u8);
        data.extend_from_slice(&alg);
        data.extend_from_slice(&sig);
        Ok((AuthMethod::DigitalSignature, data))
    }
}

impl PrivateKey {
    /// A signature of `msg` with `scheme` (ECDSA in ASN.1 DER), as TLS signs (EAP-TLS's
    /// CertificateVerify); a scheme that does not fit the key is refused.
    pub fn sign_with(&self, scheme: Scheme, msg: &[u8]) -> Result<Vec<u8>, AuthError> {
        let rng = SystemRandom::new();
        match (&self.inner, scheme) {
            (
                Inner::Ecdsa {
                    p384: false, asn1, ..
                },
                Scheme::EcdsaSha256,
            )
            | (
                Inner::Ecdsa {
                    p384: true, asn1, ..
                },
                Scheme::EcdsaSha384,
            ) => asn1
                .sign(&rng, msg)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| AuthError::SignFailed),
            (Inner::Ed25519(k), Scheme::Ed25519) => Ok(k.sign(msg).as_ref().to_vec()),
            (Inner::Rsa(k), s) => {
                let enc: &'static dyn signature::RsaEncoding = match s {
                    Scheme::RsaPssSha256 => &signature::RSA_PSS_SHA256,
                    Scheme::RsaPssSha384 => &signature::RSA_PSS_SHA384,
                    Scheme::RsaPssSha512 => &signature::RSA_PSS_SHA512,
                    Scheme::RsaSha256 => &signature::RSA_PKCS1_SHA256,
                    Scheme::RsaSha384 => &signature::RSA_PKCS1_SHA384,
                    Scheme::RsaSha512 => &signature::RSA_PKCS1_SHA512,
                    _ => return Err(AuthError::KeyMismatch),
                };
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(enc, &rng, msg, &mut sig)
                    .map_err(|_| AuthError::SignFailed)?;
                Ok(sig)
            }
            _ => Err(AuthError::KeyMismatch),
        }
    }
}

/// The peer's public key, from a SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Its kind.
    pub kind: KeyKind,
    /// The raw key ring verifies with.
    pub raw: Vec<u8>,
}

impl PublicKey {
    /// Parses a DER SubjectPublicKeyInfo (P-256, P-384, Ed25519, RSA).
    pub fn from_spki(der: &[u8]) -> Result<PublicKey, AuthError> {
        let (rest, spki) =
            SubjectPublicKeyInfo::from_der(der).map_err(|_| AuthError::MalformedCert)?;
        if !rest.is_empty() {
            return Err(AuthError::MalformedCert);
        }
        Self::from_parsed(&spki)
    }

    /// The key of a parsed SubjectPublicKeyInfo.
    pub fn from_parsed(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, AuthError> {
        let o = spki.algorithm.algorithm.as_bytes();
        let raw = spki.subject_public_key.data.to_vec();
        let kind = if o == OID_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or(AuthError::UnsupportedKey)?;
            match curve.as_bytes() {
                c if c == OID_P256 => KeyKind::EcdsaP256,
                c if c == OID_P384 => KeyKind::EcdsaP384,
                _ => return Err(AuthError::UnsupportedKey),
            }
        } else if o == OID_ED25519 {
            KeyKind::Ed25519
        } else if o == [OID_PKCS1, &[1]].concat() {
            KeyKind::Rsa
        } else {
            return Err(AuthError::UnsupportedKey);
        };
        Ok(PublicKey { kind, raw })
    }

    /// Verifies the peer's AUTH data over `octets`. `ours` are the hashes we announced:
    /// a method 14 signature with another hash is refused.
    pub fn verify_auth(
        &self,
        method: AuthMethod,
        data: &[u8],
        ours: &[u16],
        octets: &[u8],
    ) -> Result<(), AuthError> {
        use signature::VerificationAlgorithm as V;
        let k = self.kind;
        let (alg, sig): (&'static dyn V, &[u8]) = match method {
            AuthMethod::DigitalSignature => {
                let (&n, rest) = data.split_first().ok_or(AuthError::MalformedAuth)?;
                let n = usize::from(n);
                if rest.len() <= n {
                    return Err(AuthError::MalformedAuth);
                }
                let (alg_id, sig) = rest.split_at(n);
                let scheme = Scheme::from_algorithm_identifier(alg_id)?;
                if !ours.contains(&scheme.hash()) {
                    return Err(AuthError::HashNotAnnounced);
                }
                let alg: &'static dyn V = match (scheme, k) {
                    (Scheme::EcdsaSha256, KeyKind::EcdsaP256) => &signature::ECDSA_P256_SHA256_ASN1,
                    (Scheme::EcdsaSha384, KeyKind::EcdsaP256) => &signature::ECDSA_P256_SHA384_ASN1,
                    (Scheme::EcdsaSha256, KeyKind::EcdsaP384) => &signature::ECDSA_P384_SHA256_ASN1,
                    (Scheme::EcdsaSha384, KeyKind::EcdsaP384) => &signature::ECDSA_P384_SHA384_ASN1,
                    (Scheme::Ed25519, KeyKind::Ed25519) => &signature::ED25519,
                    (Scheme::RsaSha256, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA256,
                    (Scheme::RsaSha384, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA384,
                    (Scheme::RsaSha512, KeyKind::Rsa) => &signature::RSA_PKCS1_2048_8192_SHA512,
                    (Scheme::RsaPssSha256, KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA256,
                    (Scheme::RsaPssSha384, KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA384,
                    (Scheme::RsaPssSha512, KeyKind::Rsa) => &signature::RSA_PSS_2048_8192_SHA512,
                    (Scheme::EcdsaSha512, KeyKind::EcdsaP256 | KeyKind::EcdsaP384) => {
                        return Err(AuthError::UnsupportedSignature);
                    }
                    _ => return Err(AuthError::KeyMismatch),
                };
                (alg, sig)
            }
            AuthMethod::RsaSig if k == KeyKind::Rsa => (
                &signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
                data,
            ),
            AuthMethod::EcdsaP256 if k == KeyKind::EcdsaP256 => {
                (&signature::ECDSA_P256_SHA256_FIXED, data)
            }
            AuthMethod::EcdsaP384 if k == KeyKind::EcdsaP384 => {
                (&signature::ECDSA_P384_SHA384_FIXED, data)
            }
            AuthMethod::RsaSig | AuthMethod::EcdsaP256 | AuthMethod::EcdsaP384 => {
                return Err(AuthError::KeyMismatch);
            }
            _ => return Err(AuthError::UnsupportedMethod),
        };
        signature::UnparsedPublicKey::new(alg, &self.raw)
            .verify(octets, sig)
            .map_err(|_| AuthError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        use std::io::Write;
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("openssl runs");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input.unwrap_or_default()).unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "openssl {args:?}");
        out.stdout
    }

    #[test]
    fn every_scheme_round_trips_its_algorithm_identifier() {
        for s in [
            Scheme::EcdsaSha256,
            Scheme::EcdsaSha384,
            Scheme::EcdsaSha512,
            Scheme::Ed25519,
            Scheme::RsaSha256,
            Scheme::RsaSha384,
            Scheme::RsaSha512,
            Scheme::RsaPssSha256,
            Scheme::RsaPssSha384,
            Scheme::RsaPssSha512,
        ] {
            let der = s.algorithm_identifier();
            assert_eq!(Scheme::from_algorithm_identifier(&der), Ok(s), "{s:?}");
        }
        // RFC 7427 appendix A.1.2 (ecdsa-with-SHA256) and A.4.3 (RSASSA-PSS, SHA-256).
        assert_eq!(
            hex::encode(Scheme::EcdsaSha256.algorithm_identifier()),
            "300a06082a8648ce3d040302"
        );
        assert_eq!(Scheme::RsaPssSha256.algorithm_identifier().len(), 67);
        assert_eq!(
            Scheme::from_algorithm_identifier(b"\x30\x03\x06\x01\x00"),
            Err(AuthError::UnsupportedSignature)
        );
        assert_eq!(
            Scheme::from_algorithm_identifier(b"\x30\x09"),
            Err(AuthError::MalformedAuth)
        );
    }

    #[test]
    fn sec1_pkcs1_pkcs8_pem_and_der_keys_load() {
        let sec1 = openssl(
            &["ecparam", "-genkey", "-name", "prime256v1", "-noout"],
            None,
        );
        assert!(sec1.starts_with(b"-----BEGIN EC PRIVATE KEY"));
        let k = PrivateKey::from_pem_or_der(&sec1).unwrap();
        assert_eq!(k.kind(), KeyKind::EcdsaP256);
        let sec1_der = openssl(&["ec", "-outform", "DER"], Some(&sec1));
        assert_eq!(
            PrivateKey::from_pem_or_der(&sec1_der).unwrap().public_key(),
            k.public_key()
        );
        let p384 = openssl(
            &["ecparam", "-genkey", "-name", "secp384r1", "-noout"],
            None,
        );
        assert_eq!(
            PrivateKey::from_pem_or_der(&p384).unwrap().kind(),
            KeyKind::EcdsaP384
        );
        let pkcs1 = openssl(&["genrsa", "-traditional", "2048"], None);
        assert!(pkcs1.starts_with(b"-----BEGIN RSA PRIVATE KEY"));
        assert_eq!(
            PrivateKey::from_pem_or_der(&pkcs1).unwrap().kind(),
            KeyKind::Rsa
        );
        let pkcs1_der = openssl(&["rsa", "-traditional", "-outform", "DER"], Some(&pkcs1));
        assert_eq!(
            PrivateKey::from_pem_or_der(&pkcs1_der).unwrap().kind(),
            KeyKind::Rsa
        );
        let ed = openssl(&["genpkey", "-algorithm", "ED25519"], None);
        assert_eq!(
            PrivateKey::from_pem_or_der(&ed).unwrap().kind(),
            KeyKind::Ed25519
        );
        assert!(PrivateKey::from_pem_or_der(b"garbage").is_err());
        assert!(PrivateKey::from_pem_or_der(b"\x30\x03\x02\x01\x00").is_err());
    }

    #[test]
    fn encrypted_pkcs8_keys_load_with_their_passphrase() {
        let pass = "pass:correct horse battery";
        for args in [
            &["ecparam", "-genkey", "-name", "prime256v1", "-noout"][..],
            &["ecparam", "-genkey", "-name", "secp384r1", "-noout"][..],
            &["genpkey", "-algorithm", "ED25519"][..],
            &["genrsa", "2048"][..],
        ] {
            let plain = openssl(args, None);
            let k = PrivateKey::from_pem_or_der(&plain).unwrap();
            let enc = openssl(
                &["pkcs8", "-topk8", "-v2", "aes256", "-passout", pass],
                Some(&plain),
            );
            assert!(enc.starts_with(b"-----BEGIN ENCRYPTED PRIVATE KEY"));
            assert!(PrivateKey::is_encrypted(&enc));
            assert!(!PrivateKey::is_encrypted(&plain));
            // Not readable without the passphrase.
            assert!(PrivateKey::from_pem_or_der(&enc).is_err());
            let d = PrivateKey::from_encrypted(&enc, b"correct horse battery").unwrap();
            assert_eq!(
                (d.kind(), d.public_key()),
                (k.kind(), k.public_key()),
                "{args:?}"
            );
            assert_eq!(
                PrivateKey::from_encrypted(&enc, b"wrong horse").unwrap_err(),
                "wrong passphrase (secret) for this encrypted key"
            );
            if args[0] != "genpkey" {
                continue;
            }
            // DER, and scrypt as the key derivation (a small cost: debug builds are slow).
            let der = openssl(
                &[
                    "pkcs8",
                    "-topk8",
                    "-v2",
                    "aes128",
                    "-scrypt",
                    "-scrypt_N",
                    "1024",
                    "-outform",
                    "DER",
                    "-passout",
                    pass,
                ],
                Some(&plain),
            );
            assert!(PrivateKey::is_encrypted(&der));
            let d = PrivateKey::from_encrypted(&der, b"correct horse battery").unwrap();
            assert_eq!(d.public_key(), k.public_key());
        }
        assert!(PrivateKey::from_encrypted(b"garbage", b"x").is_err());
    }

    #[test]
    fn signatures_verify_and_legacy_methods_without_the_notify() {
        let ours = [HASH_SHA256, HASH_SHA384, HASH_SHA512, HASH_IDENTITY];
        let octets = b"signed octets";
        for (args, legacy) in [
            (
                &["ecparam", "-genkey", "-name", "prime256v1", "-noout"][..],
                Some(AuthMethod::EcdsaP256),
            ),
            (
                &["ecparam", "-genkey", "-name", "secp384r1", "-noout"][..],
                Some(AuthMethod::EcdsaP384),
            ),
            (&["genpkey", "-algorithm", "ED25519"][..], None),
            (&["genrsa", "2048"][..], None),
        ] {
            let k = PrivateKey::from_pem_or_der(&openssl(args, None)).unwrap();
            let public = PublicKey::from_spki(&k.spki()).unwrap();
            assert_eq!(public.kind, k.kind());
            for pss in [false, true] {
                let (m, data) = k.sign_auth(&ours, pss, octets).unwrap();
                assert_eq!(m, AuthMethod::DigitalSignature);
                assert_eq!(public.verify_auth(m, &data, &ours, octets), Ok(()));
                assert_eq!(
                    public.verify_auth(m, &data, &ours, b"other octets"),
                    Err(AuthError::BadSignature)
                );
                // A hash we did not announce.
                assert_eq!(
                    public.verify_auth(m, &data, &[], octets),
                    Err(AuthError::HashNotAnnounced)
                );
                // Truncated AUTH data.
                assert_eq!(
                    public.verify_auth(m, &data[..3], &ours, octets),
                    Err(AuthError::MalformedAuth)
                );
            }
            // A peer without SIGNATURE_HASH_ALGORITHMS: RFC 4754 for ECDSA.
            let (m, data) = k.sign_auth(&[], false, octets).unwrap();
            if let Some(l) = legacy {
                assert_eq!(m, l);
            }
            assert_eq!(public.verify_auth(m, &data, &ours, octets), Ok(()));
        }
    }

    #[test]
    fn legacy_rsa_method_1_is_verified() {
        let pem = openssl(&["genrsa", "2048"], None);
        let k = PrivateKey::from_pem_or_der(&pem).unwrap();
        let dir = std::env::temp_dir().join(format!("mifsec-rsa1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key_file = dir.join("k.pem");
        std::fs::write(&key_file, &pem).unwrap();
        let octets = b"signed octets";
        let sig = openssl(
            &["dgst", "-sha1", "-sign", key_file.to_str().unwrap()],
            Some(octets),
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let public = PublicKey::from_spki(&k.spki()).unwrap();
        assert_eq!(
            public.verify_auth(AuthMethod::RsaSig, &sig, &[], octets),
            Ok(())
        );
        assert_eq!(
            public.verify_auth(AuthMethod::EcdsaP256, &sig, &[], octets),
            Err(AuthError::KeyMismatch)
        );
        assert_eq!(
            public.verify_auth(AuthMethod::Null, &sig, &[], octets),
            Err(AuthError::UnsupportedMethod)
        );
    }
}
