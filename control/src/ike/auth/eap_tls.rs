//! EAP-TLS as the peer (RFC 5216; RFC 9190 for TLS 1.3): a rustls client (ring provider)
//! driven sans-IO by the EAP requests of the gateway.
//!
//! * Framing (RFC 5216 section 3.1): a Flags octet (L: a four-octet TLS Message Length
//!   follows; M: more fragments follow; S: EAP-TLS start), then TLS records. Our messages
//!   are cut into fragments of [`FRAGMENT_SIZE`] octets, the first with L; each fragment
//!   of ours waits for the gateway's empty request (its acknowledgement), each fragment of
//!   the gateway's is acknowledged with an empty response. Reassembly is bounded by
//!   [`MAX_TLS_MESSAGE`] and by the announced length.
//! * Our certificate and key (`local.certs`, `[secrets.private-*]`) sign through our own
//!   [`PrivateKey`] (ring); the gateway's certificate is checked by the same
//!   [`TrustStore`] as IKE certificates (`remote.cacerts`: chain, dates, EKU, CRLs) and must
//!   name the gateway's identity (`remote.id`, else the IDr it authenticated with).
//! * The MSK (RFC 5216 section 2.3, RFC 9190 section 2.3): the first 64 octets of the TLS
//!   exporter's 128, with the label "client EAP encryption" and no context for TLS 1.2,
//!   "EXPORTER_EAP_TLS_Key_Material" with the context 0x0D for TLS 1.3. A TLS 1.3 server
//!   that sent no protected success indication (RFC 9190 section 2.5: one octet 0x00 of
//!   application data) speaks the draft that came before the RFC, as strongSwan 5.9 does:
//!   its MSK is the exporter with "client EAP encryption" and no context (what strongSwan
//!   derives), and we take that one.
//!
//! Every refusal is an [`EapError`] whose text says why; rustls's own error is logged.

use core::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, ProtocolVersion, SignatureAlgorithm,
    SignatureScheme,
};
use zeroize::Zeroizing;

use super::eap::{EapError, TYPE_TLS};
use super::{AuthError, KeyKind, PrivateKey, Scheme, TrustStore};
use crate::wire::IdPayload;

/// Flags: the TLS Message Length is included.
pub const FLAG_LENGTH: u8 = 0x80;
/// Flags: more fragments follow.
pub const FLAG_MORE: u8 = 0x40;
/// Flags: EAP-TLS start.
pub const FLAG_START: u8 = 0x20;
/// The TLS data we put in one EAP-TLS packet (strongSwan's default fragment size).
pub const FRAGMENT_SIZE: usize = 1024;
/// The longest TLS message (the reassembled data of one flight) taken from the gateway.
pub const MAX_TLS_MESSAGE: usize = 64 * 1024;
/// The most EAP round trips of one EAP-TLS authentication (strongSwan's
/// `max_message_count` is 32 packets each way).
pub const MAX_TLS_ROUNDS: u8 = 40;

/// What EAP-TLS needs as the peer: our certificate chain and key, and what the gateway's
/// TLS certificate is checked against.
pub struct EapTlsCreds {
    /// Our private key.
    pub key: Arc<PrivateKey>,
    /// Our certificate and intermediates, DER, end entity first.
    pub certs: Vec<Vec<u8>>,
    /// The CAs (and CRLs) of `remote.cacerts`.
    pub trust: Arc<TrustStore>,
}

impl fmt::Debug for EapTlsCreds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EapTlsCreds")
            .field("key", &self.key.kind())
            .field(
                "certs",
                &self
                    .certs
                    .iter()
                    .map(|c| super::cert::subject_of(c).unwrap_or_default())
                    .collect::<Vec<_>>(),
            )
            .field("trust", &self.trust)
            .finish()
    }
}

/// What our verifier saw of the gateway's TLS certificate.
#[derive(Default)]
struct Seen {
    /// The identity it must name.
    server_id: Option<IdPayload>,
    /// Its subject once verified, or why it was refused.
    result: Option<Result<String, AuthError>>,
}

/// The gateway's certificate checked by our trust store.
struct Verifier {
    trust: Arc<TrustStore>,
    provider: Arc<CryptoProvider>,
    seen: Mutex<Seen>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("trust", &self.trust)
            .finish_non_exhaustive()
    }
}

fn cert_error(e: AuthError) -> rustls::CertificateError {
    use rustls::CertificateError as C;
    match e {
        AuthError::CertExpired => C::Expired,
        AuthError::CertNotYetValid => C::NotValidYet,
        AuthError::UnknownCa => C::UnknownIssuer,
        AuthError::CertRevoked => C::Revoked,
        AuthError::BadCertSignature => C::BadSignature,
        AuthError::IdNotInCertificate | AuthError::WrongId => C::NotValidForName,
        AuthError::MalformedCert => C::BadEncoding,
        _ => C::ApplicationVerificationFailure,
    }
}

/// Why the gateway's TLS certificate was refused, as [`EapError::TlsServerCert`] says it.
fn cert_reason(e: AuthError) -> &'static str {
    match e {
        AuthError::CertExpired => "certificate expired",
        AuthError::CertNotYetValid => "certificate not yet valid",
        AuthError::UnknownCa => "unknown CA",
        AuthError::ChainTooLong => "certificate chain too long",
        AuthError::CertRevoked => "certificate revoked",
        AuthError::BadCertSignature => "bad signature in certificate chain",
        AuthError::WrongKeyUsage => "extended key usage does not allow it",
        AuthError::IdNotInCertificate => "the gateway's identity is not in the certificate",
        AuthError::WrongId => "no gateway identity to check",
        AuthError::MalformedCert => "garbage certificate",
        AuthError::UnsupportedKey => "unsupported public key type",
        _ => "certificate path rejected",
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let chain: Vec<Vec<u8>> = std::iter::once(end_entity)
            .chain(intermediates)
            .map(|c| c.as_ref().to_vec())
            .collect();
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let result = match &seen.server_id {
            Some(id) => self.trust.verify(&chain, id, time).map(|p| p.subject),
            None => Err(AuthError::WrongId),
        };
        seen.result = Some(result.clone());
        match result {
            Ok(_) => Ok(ServerCertVerified::assertion()),
            Err(e) => Err(rustls::Error::InvalidCertificate(cert_error(e))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Our key as rustls signs with it: through [`PrivateKey::sign_with`] (ring).
#[derive(Debug)]
struct TlsKey(Arc<PrivateKey>);

#[derive(Debug)]
struct TlsSigner {
    key: Arc<PrivateKey>,
    tls: SignatureScheme,
    ours: Scheme,
}

impl SigningKey for TlsKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        use SignatureScheme as S;
        let options: &[(S, Scheme)] = match self.0.kind() {
            KeyKind::EcdsaP256 => &[(S::ECDSA_NISTP256_SHA256, Scheme::EcdsaSha256)],
            KeyKind::EcdsaP384 => &[(S::ECDSA_NISTP384_SHA384, Scheme::EcdsaSha384)],
            KeyKind::Ed25519 => &[(S::ED25519, Scheme::Ed25519)],
            KeyKind::Rsa => &[
                (S::RSA_PSS_SHA256, Scheme::RsaPssSha256),
                (S::RSA_PSS_SHA384, Scheme::RsaPssSha384),
                (S::RSA_PKCS1_SHA256, Scheme::RsaSha256),
                (S::RSA_PKCS1_SHA384, Scheme::RsaSha384),
            ],
        };
        let &(tls, ours) = options.iter().find(|(s, _)| offered.contains(s))?;
        Some(Box::new(TlsSigner {
            key: Arc::clone(&self.0),
            tls,
            ours,
        }))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.0.kind() {
            KeyKind::EcdsaP256 | KeyKind::EcdsaP384 => SignatureAlgorithm::ECDSA,
            KeyKind::Ed25519 => SignatureAlgorithm::ED25519,
            KeyKind::Rsa => SignatureAlgorithm::RSA,
        }
    }
}

impl Signer for TlsSigner {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        self.key
            .sign_with(self.ours, message)
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn scheme(&self) -> SignatureScheme {
        self.tls
    }
}

/// Our certificate, whatever CAs the gateway hints at (it knows which it trusts).
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// One EAP-TLS authentication as the peer.
pub struct EapTlsPeer {
    config: Arc<ClientConfig>,
    verifier: Arc<Verifier>,
    conn: Option<ClientConnection>,
    /// The gateway's message being reassembled, and its announced length.
    rx: Vec<u8>,
    rx_total: Option<usize>,
    /// Our message being sent, and how much of it went out.
    tx: Vec<u8>,
    tx_off: usize,
    /// The TLS alert the gateway sent (its refusal); EAP-Failure follows.
    alert: Option<u8>,
    /// Our refusal of the gateway (its certificate, or the handshake), sent to it as the
    /// TLS alert rustls queued (RFC 5216 section 2.1.3); its EAP-Failure follows.
    refused: Option<EapError>,
    /// The handshake is complete.
    done: bool,
    /// TLS 1.3: the server sent RFC 9190's protected success indication.
    committed: bool,
}

impl fmt::Debug for EapTlsPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EapTlsPeer")
            .field("started", &self.conn.is_some())
            .field("rx", &self.rx.len())
            .field("tx", &(self.tx.len() - self.tx_off))
            .field("alert", &self.alert)
            .field("refused", &self.refused)
            .field("done", &self.done)
            .finish()
    }
}

impl EapTlsPeer {
    /// A peer with our certificate and key, checking the gateway against `creds.trust`.
    pub fn new(creds: &EapTlsCreds) -> Result<EapTlsPeer, EapError> {
        if creds.certs.is_empty() {
            return Err(EapError::TlsHandshake);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(Verifier {
            trust: Arc::clone(&creds.trust),
            provider: Arc::clone(&provider),
            seen: Mutex::new(Seen::default()),
        });
        let chain = creds
            .certs
            .iter()
            .map(|c| CertificateDer::from(c.clone()))
            .collect();
        let key = CertifiedKey::new(chain, Arc::new(TlsKey(Arc::clone(&creds.key))));
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|_| EapError::TlsHandshake)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(Arc::new(ClientCert(Arc::new(key))));
        config.enable_sni = false;
        config.resumption = Resumption::disabled();
        Ok(EapTlsPeer {
            config: Arc::new(config),
            verifier,
            conn: None,
            rx: Vec::new(),
            rx_total: None,
            tx: Vec::new(),
            tx_off: 0,
            alert: None,
            refused: None,
            done: false,
            committed: false,
        })
    }

    /// The identity the gateway's TLS certificate must name (set before the first request).
    pub fn set_server_id(&mut self, id: &IdPayload) {
        let mut seen = self.verifier.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.server_id = Some(id.clone());
    }

    /// The subject of the gateway's TLS certificate, once verified.
    pub fn server_subject(&self) -> Option<String> {
        let seen = self.verifier.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.result.clone().and_then(Result::ok)
    }

    /// The TLS version negotiated (`TLS 1.2`), once known.
    pub fn version(&self) -> Option<&'static str> {
        match self.conn.as_ref()?.protocol_version()? {
            ProtocolVersion::TLSv1_2 => Some("TLS 1.2"),
            ProtocolVersion::TLSv1_3 => Some("TLS 1.3"),
            _ => None,
        }
    }

    /// The alert the gateway refused us with, if it sent one.
    pub fn alert(&self) -> Option<u8> {
        self.alert
    }

    /// Why we refused the gateway, once we have (the alert is then on its way).
    pub fn refused(&self) -> Option<EapError> {
        self.refused
    }

    /// The MSK, once the handshake is complete and our last message is out.
    pub fn take_msk(&mut self) -> Option<Zeroizing<Vec<u8>>> {
        if !self.tx.is_empty() || !self.done {
            return None;
        }
        let conn = self.conn.as_ref()?;
        let tls13 = conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
        let (label, context): (&[u8], Option<&[u8]>) = if tls13 && self.committed {
            (b"EXPORTER_EAP_TLS_Key_Material", Some(&[TYPE_TLS]))
        } else {
            // TLS 1.2 (RFC 5216), or a TLS 1.3 server of the pre-RFC draft (strongSwan).
            (b"client EAP encryption", None)
        };
        let mut km = Zeroizing::new(vec![0u8; 128]);
        conn.export_keying_material(&mut km[..], label, context)
            .ok()?;
        self.done = false;
        Some(Zeroizing::new(km[..64].to_vec()))
    }

    /// Processes the type data of one EAP-TLS request; returns the type data of our
    /// response.
    pub fn process(&mut self, data: &[u8]) -> Result<Vec<u8>, EapError> {
        let (&flags, rest) = data.split_first().ok_or(EapError::BadTlsData)?;
        if flags & FLAG_START != 0 {
            // Start: no data (a TLS 1.3 server may put nothing else either); once only.
            if self.conn.is_some() {
                return Err(EapError::BadTlsData);
            }
            let name =
                ServerName::try_from("eap-tls.invalid").map_err(|_| EapError::TlsHandshake)?;
            let mut conn = ClientConnection::new(Arc::clone(&self.config), name)
                .map_err(|_| EapError::TlsHandshake)?;
            conn.write_tls(&mut self.tx)
                .map_err(|_| EapError::TlsHandshake)?;
            self.conn = Some(conn);
            return Ok(self.next_fragment());
        }
        if let Some(why) = self.refused {
            // We sent our alert; the gateway goes on instead of failing.
            return Err(why);
        }
        if self.conn.is_none() || self.alert.is_some() {
            return Err(EapError::BadTlsData);
        }
        if !self.tx.is_empty() {
            // We are sending fragments: this must be the acknowledgement of the last.
            if flags != 0 || !rest.is_empty() {
                return Err(EapError::BadTlsData);
            }
            return Ok(self.next_fragment());
        }
        let mut body = rest;
        if flags & FLAG_LENGTH != 0 {
            let (len, b) = body.split_first_chunk::<4>().ok_or(EapError::BadTlsData)?;
            let total = u32::from_be_bytes(*len) as usize;
            if total > MAX_TLS_MESSAGE || self.rx_total.is_some_and(|t| t != total) {
                return Err(EapError::BadTlsData);
            }
            self.rx_total = Some(total);
            body = b;
        }
        let limit = self.rx_total.unwrap_or(MAX_TLS_MESSAGE);
        if self.rx.len() + body.len() > limit {
            return Err(EapError::BadTlsData);
        }
        if flags & FLAG_MORE != 0 && body.is_empty() {
            return Err(EapError::BadTlsData);
        }
        self.rx.extend_from_slice(body);
        if flags & FLAG_MORE != 0 {
            return Ok(vec![0]);
        }
        if self.rx_total.is_some_and(|t| t != self.rx.len()) || self.rx.is_empty() {
            return Err(EapError::BadTlsData);
        }
        let message = std::mem::take(&mut self.rx);
        self.rx_total = None;
        self.feed(&message)?;
        if self.alert.is_some() && self.refused.is_none() {
            // Acknowledged; the gateway's EAP-Failure follows.
            return Ok(vec![0]);
        }
        Ok(self.next_fragment())
    }

    /// Hands the gateway's TLS records to rustls and collects our answer.
    fn feed(&mut self, mut message: &[u8]) -> Result<(), EapError> {
        let conn = self.conn.as_mut().ok_or(EapError::BadTlsData)?;
        while !message.is_empty() {
            match conn.read_tls(&mut message) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return Err(EapError::BadTlsData),
            }
            match conn.process_new_packets() {
                Ok(io) => {
                    // Application data (RFC 9190's commitment message, 0x00): read and
                    // dropped; bounded by the reassembly limit.
                    let n = io.plaintext_bytes_to_read();
                    if n > 0 {
                        let mut sink = vec![0u8; n];
                        let got = std::io::Read::read(&mut conn.reader(), &mut sink).unwrap_or(0);
                        if sink[..got] == [0] {
                            self.committed = true;
                        }
                    }
                }
                Err(rustls::Error::AlertReceived(a)) => {
                    tracing::warn!(alert = ?a, "EAP-TLS: the gateway sent a TLS alert");
                    self.alert = Some(u8::from(a));
                    return Ok(());
                }
                Err(e) => {
                    let why = {
                        let seen = self.verifier.seen.lock().unwrap_or_else(|p| p.into_inner());
                        if let Some(Err(a)) = &seen.result {
                            tracing::warn!(reason = %a, "EAP-TLS: the gateway's TLS certificate is refused");
                            EapError::TlsServerCert(cert_reason(*a))
                        } else {
                            tracing::warn!(error = %e, "EAP-TLS: handshake failed");
                            EapError::TlsHandshake
                        }
                    };
                    // rustls queued the alert that says why (unknown CA, bad
                    // certificate, ...): it goes to the gateway as our response, which
                    // answers with EAP-Failure (RFC 5216 section 2.1.3), rather than
                    // leaving it waiting for a peer that has gone.
                    self.tx.clear();
                    self.tx_off = 0;
                    while conn.wants_write() {
                        if conn.write_tls(&mut self.tx).is_err() {
                            break;
                        }
                    }
                    if self.tx.is_empty() {
                        return Err(why);
                    }
                    self.refused = Some(why);
                    return Ok(());
                }
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut self.tx)
                .map_err(|_| EapError::TlsHandshake)?;
        }
        if !conn.is_handshaking() {
            self.done = true;
        }
        Ok(())
    }

    /// The next fragment of our message (the first with L, all but the last with M), or an
    /// empty response (an acknowledgement) when there is nothing to send.
    fn next_fragment(&mut self) -> Vec<u8> {
        let remaining = self.tx.len() - self.tx_off;
        if remaining == 0 {
            self.tx.clear();
            self.tx_off = 0;
            return vec![0];
        }
        let first = self.tx_off == 0;
        let n = remaining.min(FRAGMENT_SIZE);
        let more = n < remaining;
        let mut flags = 0;
        if first {
            flags |= FLAG_LENGTH;
        }
        if more {
            flags |= FLAG_MORE;
        }
        let mut out = Vec::with_capacity(5 + n);
        out.push(flags);
        if first {
            out.extend_from_slice(&(self.tx.len() as u32).to_be_bytes());
        }
        out.extend_from_slice(&self.tx[self.tx_off..self.tx_off + n]);
        self.tx_off += n;
        if self.tx_off == self.tx.len() {
            self.tx.clear();
            self.tx_off = 0;
        }
        out
    }
}
