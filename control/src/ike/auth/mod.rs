//! Authentication of IKE SAs beyond the PSK of RFC 7296 section 2.15: signatures
//! (RFC 7427 Digital Signature and the legacy RSA / ECDSA methods) made and checked with
//! ring, X.509 certificate chains checked by rustls-webpki, identities checked against the
//! certificate, raw public keys (RFC 7670).
//!
//! * [`keys`]: private keys (PEM / DER: PKCS#8, SEC1, PKCS#1), public keys, AUTH data.
//! * [`eap`]: EAP inside IKE_AUTH (RFC 7296 section 2.16): the codec, our peer and our
//!   authenticator (Identity, MS-CHAPv2); [`mschapv2`] its computations and MSK.
//! * [`cert`]: the trust store (CA certificates, CRLs, raw public keys), chain and identity
//!   checks, CERTREQ hashes.
//!
//! [`LocalAuth`] says how we authenticate, [`RemoteAuth`] how the peer must; both are part
//! of [`IkeConfig`](super::IkeConfig).

pub mod cert;
pub mod eap;
pub mod eap_tls;
pub mod keys;
pub mod mschapv2;

use core::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

pub use cert::{PeerCert, TrustStore};
pub use eap::{EapError, EapMethod, EapUsers};
pub use keys::{KeyKind, PrivateKey, PublicKey, Scheme};

/// How we authenticate ourselves (`local.auth`).
#[derive(Clone)]
pub enum LocalAuth {
    /// A pre-shared key (`psk`).
    Psk(Zeroizing<Vec<u8>>),
    /// A signature with our private key (`pubkey`), sent with our certificate chain
    /// (end entity first) when there is one, else with no CERT at all (the peer knows our
    /// raw public key) or, with `send_raw_key`, a raw public key CERT (RFC 7670).
    Pubkey {
        /// The private key.
        key: Arc<PrivateKey>,
        /// Our certificate and intermediates, DER, end entity first.
        certs: Vec<Vec<u8>>,
        /// RSASSA-PSS rather than PKCS#1 v1.5 for an RSA key (`rsa/pss`).
        rsa_pss: bool,
    },
    /// EAP as the peer (`eap-mschapv2`): no AUTH in the first IKE_AUTH request, the
    /// gateway's EAP requests answered, then AUTH from the MSK (RFC 7296 section 2.16).
    Eap {
        /// The method.
        method: EapMethod,
        /// `local.eap_id`: the EAP identity (EAP-Identity and the MS-CHAPv2 name); `None`:
        /// the IKE identity's data, as strongSwan.
        identity: Option<Vec<u8>>,
        /// The password (`[secrets.eap-NAME]`; empty for EAP-TLS).
        secret: Zeroizing<Vec<u8>>,
        /// EAP-TLS: our certificate and key, the CAs of the gateway's TLS certificate.
        tls: Option<Arc<eap_tls::EapTlsCreds>>,
    },
}

impl LocalAuth {
    /// The method's name as in swanctl.conf.
    pub fn name(&self) -> &'static str {
        match self {
            LocalAuth::Psk(_) => "psk",
            LocalAuth::Pubkey { .. } => "pubkey",
            LocalAuth::Eap { method, .. } => method.name(),
        }
    }
}

impl fmt::Debug for LocalAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LocalAuth::Psk(_) => f.write_str("Psk(<redacted>)"),
            LocalAuth::Pubkey {
                key,
                certs,
                rsa_pss,
            } => f
                .debug_struct("Pubkey")
                .field("key", &key.kind())
                .field(
                    "certs",
                    &certs
                        .iter()
                        .map(|c| cert::subject_of(c).unwrap_or_default())
                        .collect::<Vec<_>>(),
                )
                .field("rsa_pss", rsa_pss)
                .finish(),
            LocalAuth::Eap {
                method,
                identity,
                tls,
                ..
            } => f
                .debug_struct("Eap")
                .field("method", method)
                .field("tls", tls)
                .field(
                    "identity",
                    &identity
                        .as_ref()
                        .map(|i| String::from_utf8_lossy(i).into_owned()),
                )
                .field("secret", &"<redacted>")
                .finish(),
        }
    }
}

/// One of several certificates we may authenticate with (`local.certs` with more than
/// one end-entity certificate): the one whose CA the peer's CERTREQ names is sent.
#[derive(Clone)]
pub struct CertChoice {
    /// Its private key.
    pub key: Arc<PrivateKey>,
    /// The certificate and its intermediates, DER, end entity first.
    pub certs: Vec<Vec<u8>>,
    /// The CERTREQ hashes that select it: the SHA-1 of the SubjectPublicKeyInfo of each
    /// CA on its path (the intermediates, and the CA certificate of its issuer when one
    /// is configured).
    pub ca_hashes: Vec<[u8; 20]>,
    /// The certificate's subject (for the log).
    pub subject: String,
}

impl fmt::Debug for CertChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertChoice")
            .field("key", &self.key.kind())
            .field("subject", &self.subject)
            .field("ca_hashes", &self.ca_hashes.len())
            .finish()
    }
}

/// How the peer must authenticate (`remote.auth`).
#[derive(Clone)]
pub enum RemoteAuth {
    /// With the pre-shared key.
    Psk(Zeroizing<Vec<u8>>),
    /// With a signature by a key certified by one of the store's CAs, or one of its raw
    /// public keys.
    Pubkey(Arc<TrustStore>),
    /// With EAP, we the authenticator (a gateway): `remote.auth = eap-mschapv2` against
    /// the users of `[secrets.eap-*]`, `eap-tls` with a client certificate issued by one of
    /// `remote.cacerts`.
    Eap {
        /// The method.
        method: EapMethod,
        /// The users and their passwords (EAP-MSCHAPv2).
        users: Arc<EapUsers>,
        /// `remote.eap_id = "%any"`: ask the peer for its EAP identity (EAP-Identity)
        /// rather than take its IKE identity.
        ask_identity: bool,
        /// EAP-TLS: our TLS certificate and key (`local.certs`), the CAs of the client's
        /// certificate (`remote.cacerts`).
        tls: Option<Arc<eap_tls::EapTlsCreds>>,
        /// EAP-TLS with TLS 1.3: send RFC 9190's protected success indication
        /// (`remote.tls13_indication`); without it, the draft strongSwan 5.9.8 speaks.
        tls13_indication: bool,
    },
}

impl RemoteAuth {
    /// The method's name as in swanctl.conf.
    pub fn name(&self) -> &'static str {
        match self {
            RemoteAuth::Psk(_) => "psk",
            RemoteAuth::Pubkey(_) => "pubkey",
            RemoteAuth::Eap { method, .. } => method.name(),
        }
    }
}

impl fmt::Debug for RemoteAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RemoteAuth::Psk(_) => f.write_str("Psk(<redacted>)"),
            RemoteAuth::Pubkey(t) => f.debug_tuple("Pubkey").field(t).finish(),
            RemoteAuth::Eap {
                method,
                users,
                ask_identity,
                tls,
                tls13_indication,
            } => f
                .debug_struct("Eap")
                .field("method", method)
                .field("users", users)
                .field("ask_identity", ask_identity)
                .field("tls", tls)
                .field("tls13_indication", tls13_indication)
                .finish(),
        }
    }
}

/// How the peer authenticated, for status.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerAuthInfo {
    /// `psk`, `pubkey` or the EAP method (`eap-mschapv2`).
    pub method: &'static str,
    /// The signature's key kind and scheme (`ECDSA P-256`), for pubkey.
    pub key: Option<String>,
    /// The certificate subject, when the peer used one.
    pub subject: Option<String>,
    /// The CA that issued it.
    pub ca: Option<String>,
    /// The EAP identity the peer authenticated with (printable), for EAP.
    pub eap_identity: Option<String>,
    /// The subject of the peer's EAP-TLS certificate and the TLS version: the gateway's
    /// (we the EAP-TLS peer) or the client's (we the EAP-TLS gateway).
    pub tls_subject: Option<(String, &'static str)>,
}

/// Why the peer's authentication was refused. Every one is answered with
/// AUTHENTICATION_FAILED; the text is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    /// The PSK AUTH did not verify.
    PskMismatch,
    /// The peer's identity is not the configured `remote.id`.
    WrongId,
    /// The peer used an AUTH method the configuration does not allow for it.
    MethodNotAllowed,
    /// An AUTH method we do not implement.
    UnsupportedMethod,
    /// A signature algorithm we do not implement (or PSS parameters ring cannot check).
    UnsupportedSignature,
    /// A method 14 signature with a hash we did not announce.
    HashNotAnnounced,
    /// The signature does not fit the key's type.
    KeyMismatch,
    /// The signature did not verify.
    BadSignature,
    /// The AUTH data is malformed.
    MalformedAuth,
    /// No certificate and no configured raw public key.
    NoCertificate,
    /// A CERT payload is truncated or not a certificate.
    MalformedCert,
    /// A certificate encoding we do not take.
    UnsupportedCertEncoding,
    /// A key type we do not implement.
    UnsupportedKey,
    /// The certificate has expired.
    CertExpired,
    /// The certificate is not valid yet.
    CertNotYetValid,
    /// No configured CA issued the chain.
    UnknownCa,
    /// More certificates than a chain may have.
    ChainTooLong,
    /// A certificate of the chain is revoked (CRL).
    CertRevoked,
    /// A certificate's signature in the chain did not verify.
    BadCertSignature,
    /// The extended key usage forbids IKE.
    WrongKeyUsage,
    /// Path validation failed otherwise.
    CertRejected,
    /// The peer's identity is neither the certificate's subject nor a subjectAltName.
    IdNotInCertificate,
    /// A raw public key that is not one configured.
    UnknownRawKey,
    /// No CERT, and the signature verifies with none of the configured raw public keys.
    NoRawKeySigned,
    /// Our own signature failed.
    SignFailed,
    /// EAP failed, and why.
    Eap(EapError),
    /// The peer's AUTH after EAP did not verify with the MSK.
    EapAuthMismatch,
    /// The gateway left its AUTH out (EAP-only, RFC 5998) but the method does not
    /// authenticate it.
    EapOnlyNotMutual,
    /// An IKE_AUTH message of the EAP exchange without the EAP payload it needs.
    EapMissing,
    /// The peer wants EAP (no AUTH payload) but `remote.auth` is not EAP.
    EapNotConfigured,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AuthError::PskMismatch => "PSK mismatch",
            AuthError::WrongId => "identity is not the configured remote.id",
            AuthError::MethodNotAllowed => "AUTH method not allowed by remote.auth",
            AuthError::UnsupportedMethod => "unsupported AUTH method",
            AuthError::UnsupportedSignature => "unsupported signature algorithm",
            AuthError::HashNotAnnounced => "signature hash not among SIGNATURE_HASH_ALGORITHMS",
            AuthError::KeyMismatch => "signature algorithm does not fit the key",
            AuthError::BadSignature => "bad signature",
            AuthError::MalformedAuth => "malformed AUTH payload",
            AuthError::NoCertificate => "no certificate and no trusted raw public key",
            AuthError::MalformedCert => "truncated or garbage CERT payload",
            AuthError::UnsupportedCertEncoding => "unsupported certificate encoding",
            AuthError::UnsupportedKey => "unsupported public key type",
            AuthError::CertExpired => "certificate expired",
            AuthError::CertNotYetValid => "certificate not yet valid",
            AuthError::UnknownCa => "unknown CA",
            AuthError::ChainTooLong => "certificate chain too long",
            AuthError::CertRevoked => "certificate revoked",
            AuthError::BadCertSignature => "bad signature in certificate chain",
            AuthError::WrongKeyUsage => "extended key usage does not allow IKE",
            AuthError::CertRejected => "certificate path rejected",
            AuthError::IdNotInCertificate => {
                "identity not in certificate (subject or subjectAltName)"
            }
            AuthError::UnknownRawKey => "raw public key not trusted",
            AuthError::NoRawKeySigned => {
                "signature made by none of the trusted raw public keys (remote.pubkeys)"
            }
            AuthError::SignFailed => "signing failed",
            AuthError::Eap(e) => return write!(f, "{e}"),
            AuthError::EapAuthMismatch => "AUTH after EAP does not match the MSK",
            AuthError::EapOnlyNotMutual => {
                "gateway sent no AUTH (EAP-only) but the EAP method is not mutual"
            }
            AuthError::EapMissing => "EAP payload missing",
            AuthError::EapNotConfigured => "peer wants EAP but remote.auth is not EAP",
        })
    }
}
