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
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, DistinguishedName, ProtocolVersion,
    RootCertStore, ServerConfig, ServerConnection, SignatureAlgorithm, SignatureScheme,
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

/// The MSK of a completed handshake, either role (RFC 5216 section 2.3, RFC 9190 section
/// 2.3): the first 64 octets of the exporter's 128. `indicated`: TLS 1.3 with RFC 9190's
/// protected success indication, "EXPORTER_EAP_TLS_Key_Material" with the context 0x0D;
/// otherwise (TLS 1.2, or TLS 1.3 of the pre-RFC draft that strongSwan 5.9.8 speaks)
/// "client EAP encryption" and no context.
fn export_msk<D>(
    conn: &rustls::ConnectionCommon<D>,
    indicated: bool,
) -> Option<Zeroizing<Vec<u8>>> {
    let tls13 = conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
    let (label, context): (&[u8], Option<&[u8]>) = if tls13 && indicated {
        (b"EXPORTER_EAP_TLS_Key_Material", Some(&[TYPE_TLS]))
    } else {
        (b"client EAP encryption", None)
    };
    let mut km = Zeroizing::new(vec![0u8; 128]);
    conn.export_keying_material(&mut km[..], label, context)
        .ok()?;
    Some(Zeroizing::new(km[..64].to_vec()))
}

fn version_name(v: Option<ProtocolVersion>) -> Option<&'static str> {
    match v? {
        ProtocolVersion::TLSv1_2 => Some("TLS 1.2"),
        ProtocolVersion::TLSv1_3 => Some("TLS 1.3"),
        _ => None,
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

/// Our certificate chain and key as rustls takes them, either role.
fn certified_key(creds: &EapTlsCreds) -> Arc<CertifiedKey> {
    let chain = creds
        .certs
        .iter()
        .map(|c| CertificateDer::from(c.clone()))
        .collect();
    Arc::new(CertifiedKey::new(
        chain,
        Arc::new(TlsKey(Arc::clone(&creds.key))),
    ))
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
    /// The gateway's fragments and ours.
    frames: Framing,
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
            .field("frames", &self.frames)
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
        let key = certified_key(creds);
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|_| EapError::TlsHandshake)?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_client_cert_resolver(Arc::new(ClientCert(key)));
        config.enable_sni = false;
        config.resumption = Resumption::disabled();
        Ok(EapTlsPeer {
            config: Arc::new(config),
            verifier,
            conn: None,
            frames: Framing::default(),
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
        version_name(self.conn.as_ref()?.protocol_version())
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
        if self.frames.sending() || !self.done {
            return None;
        }
        let msk = export_msk(self.conn.as_ref()?, self.committed)?;
        self.done = false;
        Some(msk)
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
            conn.write_tls(&mut self.frames.tx)
                .map_err(|_| EapError::TlsHandshake)?;
            self.conn = Some(conn);
            return Ok(self.frames.next_fragment());
        }
        if let Some(why) = self.refused {
            // We sent our alert; the gateway goes on instead of failing.
            return Err(why);
        }
        if self.conn.is_none() || self.alert.is_some() {
            return Err(EapError::BadTlsData);
        }
        if self.frames.sending() {
            // We are sending fragments: this must be the acknowledgement of the last.
            return self.frames.ack(flags, rest);
        }
        let message = match self.frames.receive(flags, rest)? {
            Rx::More => return Ok(vec![0]),
            Rx::Empty => return Err(EapError::BadTlsData),
            Rx::Message(m) => m,
        };
        self.feed(&message)?;
        if self.alert.is_some() && self.refused.is_none() {
            // Acknowledged; the gateway's EAP-Failure follows.
            return Ok(vec![0]);
        }
        Ok(self.frames.next_fragment())
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
                    self.frames.tx.clear();
                    self.frames.tx_off = 0;
                    while conn.wants_write() {
                        if conn.write_tls(&mut self.frames.tx).is_err() {
                            break;
                        }
                    }
                    if self.frames.tx.is_empty() {
                        return Err(why);
                    }
                    self.refused = Some(why);
                    return Ok(());
                }
            }
        }
        while conn.wants_write() {
            conn.write_tls(&mut self.frames.tx)
                .map_err(|_| EapError::TlsHandshake)?;
        }
        if !conn.is_handshaking() {
            self.done = true;
        }
        Ok(())
    }
}

/// What our client certificate verifier saw: the identity the certificate must name, and
/// the certificate's subject once verified, or why it was refused.
struct ClientSeen {
    client_id: IdPayload,
    result: Option<Result<String, &'static str>>,
}

/// The client's certificate: its chain checked by rustls's [`WebPkiClientVerifier`]
/// against `remote.cacerts` (and their CRLs), then its identity as strongSwan checks it
/// ([`cert::der_names`](super::cert::der_names), as for IKE certificates).
struct ClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    seen: Mutex<ClientSeen>,
}

impl fmt::Debug for ClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientVerifier").finish_non_exhaustive()
    }
}

/// Why rustls's verifier refused the client's certificate, as the log says it.
fn client_cert_reason(e: &rustls::Error) -> &'static str {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            C::Expired | C::ExpiredContext { .. } => "certificate expired",
            C::NotValidYet | C::NotValidYetContext { .. } => "certificate not yet valid",
            C::UnknownIssuer => "unknown CA",
            C::Revoked => "certificate revoked",
            C::BadSignature => "bad signature in certificate chain",
            C::InvalidPurpose | C::InvalidPurposeContext { .. } => {
                "extended key usage does not allow TLS client authentication"
            }
            C::BadEncoding => "garbage certificate",
            _ => "certificate path rejected",
        },
        rustls::Error::NoCertificatesPresented => "no client certificate",
        _ => "certificate path rejected",
    }
}

impl ClientCertVerifier for ClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if intermediates.len() >= super::cert::MAX_CHAIN {
            seen.result = Some(Err("certificate chain too long"));
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ));
        }
        if let Err(e) = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)
        {
            seen.result = Some(Err(client_cert_reason(&e)));
            return Err(e);
        }
        if !super::cert::der_names(end_entity.as_ref(), &seen.client_id) {
            seen.result = Some(Err(
                "the client's identity is not in the certificate (subject or subjectAltName)",
            ));
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        seen.result = Some(Ok(
            super::cert::subject_of(end_entity.as_ref()).unwrap_or_default()
        ));
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Our certificate, whatever the client hello says.
#[derive(Debug)]
struct ServerCert(Arc<CertifiedKey>);

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }
}

/// What [`EapTlsServer::process`] asks for.
#[derive(Debug)]
pub enum ServerTls {
    /// Send an EAP-TLS request with this type data.
    Send(Vec<u8>),
    /// The handshake is complete and acknowledged: EAP-Success, with this MSK.
    Done(Zeroizing<Vec<u8>>),
}

/// The TLS server of one EAP-TLS authentication (we the gateway, `remote.auth =
/// "eap-tls"`): our certificate (`local.certs`) and key, the client's certificate
/// required and checked against `remote.cacerts`, and it must name the client's identity
/// (its EAP identity, else its IKE identity).
///
/// TLS 1.3 goes as strongSwan 5.9.8's server does it (the draft before RFC 9190): no
/// protected success indication, EAP-Success right after the client's Finished, the MSK
/// with "client EAP encryption" (what strongSwan 5.9.8's client derives, and what our
/// peer derives from a server that sent no indication). With `indication` the server
/// follows RFC 9190 instead (one octet 0x00 of application data, the client's empty
/// response, then EAP-Success; the MSK from "EXPORTER_EAP_TLS_Key_Material").
pub struct EapTlsServer {
    conn: ServerConnection,
    verifier: Arc<ClientVerifier>,
    frames: Framing,
    /// RFC 9190's protected success indication with TLS 1.3.
    indication: bool,
    /// The refusal: our alert went out, the client's acknowledgement ends it.
    failed: Option<EapError>,
    /// The handshake is complete (and the indication, if any, queued).
    done: bool,
}

impl fmt::Debug for EapTlsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EapTlsServer")
            .field("frames", &self.frames)
            .field("failed", &self.failed)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl EapTlsServer {
    /// A server with our certificate and key (`creds.certs`, `creds.key`), the client's
    /// certificate checked against `creds.trust` and required to name `client_id`.
    pub fn new(
        creds: &EapTlsCreds,
        client_id: &IdPayload,
        indication: bool,
    ) -> Result<EapTlsServer, EapError> {
        if creds.certs.is_empty() {
            return Err(EapError::TlsHandshake);
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        roots.extend(creds.trust.anchors().iter().cloned());
        let crls = creds
            .trust
            .crl_ders()
            .iter()
            .map(|d| CertificateRevocationListDer::from(d.clone()));
        let inner =
            WebPkiClientVerifier::builder_with_provider(Arc::new(roots), Arc::clone(&provider))
                .with_crls(crls)
                .allow_unknown_revocation_status()
                .build()
                .map_err(|e| {
                    tracing::warn!(error = %e, "EAP-TLS: no client certificate verifier");
                    EapError::TlsHandshake
                })?;
        let verifier = Arc::new(ClientVerifier {
            inner,
            seen: Mutex::new(ClientSeen {
                client_id: client_id.clone(),
                result: None,
            }),
        });
        let key = certified_key(creds);
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|_| EapError::TlsHandshake)?
            .with_client_cert_verifier(verifier.clone())
            .with_cert_resolver(Arc::new(ServerCert(key)));
        // No resumption: no session cache, no tickets (one handshake per IKE SA).
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
        let conn = ServerConnection::new(Arc::new(config)).map_err(|_| EapError::TlsHandshake)?;
        Ok(EapTlsServer {
            conn,
            verifier,
            frames: Framing::default(),
            indication,
            failed: None,
            done: false,
        })
    }

    /// The EAP-TLS Start request's type data.
    pub fn start() -> Vec<u8> {
        vec![FLAG_START]
    }

    /// The subject of the client's TLS certificate, once verified, and the TLS version.
    pub fn client(&self) -> Option<(String, &'static str)> {
        let seen = self.verifier.seen.lock().unwrap_or_else(|p| p.into_inner());
        let subject = seen.result.clone()?.ok()?;
        Some((
            subject,
            version_name(self.conn.protocol_version()).unwrap_or("TLS"),
        ))
    }

    /// Our refusal, once its alert is out.
    pub fn refusal(&self) -> Option<EapError> {
        self.failed
    }

    /// Processes the type data of one EAP-TLS response.
    pub fn process(&mut self, data: &[u8]) -> Result<ServerTls, EapError> {
        let (&flags, rest) = data.split_first().ok_or(EapError::BadTlsData)?;
        if let Some(e) = self.failed {
            // The client acknowledged our alert: EAP-Failure.
            return Err(e);
        }
        if flags & FLAG_START != 0 {
            return Err(EapError::BadTlsData);
        }
        if self.frames.sending() {
            return self.frames.ack(flags, rest).map(ServerTls::Send);
        }
        let message = match self.frames.receive(flags, rest)? {
            Rx::More => return Ok(ServerTls::Send(vec![0])),
            Rx::Empty if self.done => {
                // The acknowledgement of our last flight (TLS 1.2: our Finished; RFC
                // 9190: the indication).
                let msk = export_msk(&self.conn, self.indication).ok_or(EapError::TlsHandshake)?;
                return Ok(ServerTls::Done(msk));
            }
            Rx::Empty => return Err(EapError::BadTlsData),
            Rx::Message(_) if self.done => return Err(EapError::BadTlsData),
            Rx::Message(m) => m,
        };
        if let Err(e) = self.feed(&message) {
            // rustls queued its alert: send it, and refuse once it is acknowledged.
            let _ = self.conn.write_tls(&mut self.frames.tx);
            if self.frames.sending() {
                self.failed = Some(e);
                return Ok(ServerTls::Send(self.frames.next_fragment()));
            }
            return Err(e);
        }
        if self.done && !self.frames.sending() {
            // TLS 1.3 without the indication: complete with the client's Finished.
            let msk = export_msk(&self.conn, false).ok_or(EapError::TlsHandshake)?;
            return Ok(ServerTls::Done(msk));
        }
        // Our flight, or an acknowledgement if rustls waits for more records.
        Ok(ServerTls::Send(self.frames.next_fragment()))
    }

    /// Hands the client's TLS records to rustls and collects our answer.
    fn feed(&mut self, mut message: &[u8]) -> Result<(), EapError> {
        while !message.is_empty() {
            match self.conn.read_tls(&mut message) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return Err(EapError::BadTlsData),
            }
            match self.conn.process_new_packets() {
                Ok(io) => {
                    if io.plaintext_bytes_to_read() > 0 {
                        // EAP-TLS carries no application data from the client.
                        tracing::warn!("EAP-TLS: the client sent application data");
                        return Err(EapError::BadTlsData);
                    }
                }
                Err(rustls::Error::AlertReceived(a)) => {
                    tracing::warn!(alert = ?a, "EAP-TLS: the client sent a TLS alert");
                    return Err(EapError::TlsClientAlert(u8::from(a)));
                }
                Err(e) => {
                    let seen = self.verifier.seen.lock().unwrap_or_else(|p| p.into_inner());
                    if let Some(Err(why)) = seen.result {
                        tracing::warn!(
                            reason = why,
                            "EAP-TLS: the client's TLS certificate is refused"
                        );
                        return Err(EapError::TlsClientCert(why));
                    }
                    tracing::warn!(error = %e, "EAP-TLS: handshake failed");
                    return Err(EapError::TlsHandshake);
                }
            }
        }
        if !self.conn.is_handshaking() && !self.done {
            self.done = true;
            let tls13 = self.conn.protocol_version() == Some(ProtocolVersion::TLSv1_3);
            if !tls13 {
                // TLS 1.2: the client acknowledges our Finished, then EAP-Success.
            } else if self.indication {
                // RFC 9190 section 2.5: the protected success indication.
                std::io::Write::write_all(&mut self.conn.writer(), &[0])
                    .map_err(|_| EapError::TlsHandshake)?;
            }
        }
        while self.conn.wants_write() {
            self.conn
                .write_tls(&mut self.frames.tx)
                .map_err(|_| EapError::TlsHandshake)?;
        }
        Ok(())
    }
}

/// What [`Framing::receive`] made of one EAP-TLS packet.
#[derive(Debug)]
enum Rx {
    /// A fragment with M: acknowledge it.
    More,
    /// No data and no M: an acknowledgement (or, from the server, nothing).
    Empty,
    /// The last fragment: the whole TLS message.
    Message(Vec<u8>),
}

/// EAP-TLS fragmentation (RFC 5216 sections 2.1.5 and 3.1), either role: the peer's
/// message being reassembled, bounded by [`MAX_TLS_MESSAGE`] and by its announced
/// length, and ours being cut into [`FRAGMENT_SIZE`] pieces.
#[derive(Debug, Default)]
struct Framing {
    /// The peer's message being reassembled, and its announced length.
    rx: Vec<u8>,
    rx_total: Option<usize>,
    /// Our message being sent, and how much of it went out.
    tx: Vec<u8>,
    tx_off: usize,
}

impl Framing {
    /// Whether fragments of ours are still to go out (the peer must acknowledge).
    fn sending(&self) -> bool {
        !self.tx.is_empty()
    }

    /// The peer's acknowledgement of our last fragment (no flags, no data): the next.
    fn ack(&mut self, flags: u8, rest: &[u8]) -> Result<Vec<u8>, EapError> {
        if flags != 0 || !rest.is_empty() {
            return Err(EapError::BadTlsData);
        }
        Ok(self.next_fragment())
    }

    /// One packet of the peer's (Flags octet `flags`, then `rest`).
    fn receive(&mut self, flags: u8, rest: &[u8]) -> Result<Rx, EapError> {
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
            return Ok(Rx::More);
        }
        if self.rx_total.is_some_and(|t| t != self.rx.len()) {
            return Err(EapError::BadTlsData);
        }
        self.rx_total = None;
        if self.rx.is_empty() {
            return Ok(Rx::Empty);
        }
        Ok(Rx::Message(std::mem::take(&mut self.rx)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        Ca {
            cert: p.self_signed(&key).unwrap(),
            key,
        }
    }

    /// Credentials for `name` (CN and DNS subjectAltName, plus `extra` more names to make
    /// the certificate long), issued by `issuer`, trusting `trusted`.
    fn creds(name: &str, extra: usize, issuer: &Ca, trusted: &Ca) -> EapTlsCreds {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.subject_alt_names = std::iter::once(name.to_string())
            .chain((0..extra).map(|i| format!("alias-{i}.{name}.example.org")))
            .map(|n| SanType::DnsName(n.try_into().unwrap()))
            .collect();
        let cert = p.signed_by(&key, &issuer.cert, &issuer.key).unwrap();
        EapTlsCreds {
            key: Arc::new(PrivateKey::from_pem_or_der(&key.serialize_der()).unwrap()),
            certs: vec![cert.der().to_vec()],
            trust: Arc::new(TrustStore::new(&[trusted.cert.der().to_vec()], &[], &[]).unwrap()),
        }
    }

    /// What one run saw.
    #[derive(Debug, Default)]
    struct Run {
        /// Fragments with M, from the server and from the peer.
        server_more: usize,
        peer_more: usize,
        rounds: usize,
    }

    /// The peer's MSK and the server's.
    type Msks = (Vec<u8>, Vec<u8>);

    /// Runs EAP-TLS between our peer and our server (type data only); returns both MSKs
    /// or the first error, with which side it came from.
    fn run(
        peer: &mut EapTlsPeer,
        server: &mut EapTlsServer,
        seen: &mut Run,
    ) -> Result<Msks, (&'static str, EapError)> {
        let mut req = EapTlsServer::start();
        loop {
            seen.rounds += 1;
            assert!(seen.rounds < 60, "no end");
            if req[0] & FLAG_MORE != 0 {
                seen.server_more += 1;
            }
            let resp = peer.process(&req).map_err(|e| ("peer", e))?;
            if resp[0] & FLAG_MORE != 0 {
                seen.peer_more += 1;
            }
            match server.process(&resp).map_err(|e| ("server", e))? {
                ServerTls::Send(r) => req = r,
                ServerTls::Done(msk) => {
                    let pm = peer.take_msk().ok_or(("peer", EapError::EarlySuccess))?;
                    return Ok((pm.to_vec(), msk.to_vec()));
                }
            }
        }
    }

    fn pair(
        client: &EapTlsCreds,
        gateway: &EapTlsCreds,
        indication: bool,
    ) -> (EapTlsPeer, EapTlsServer) {
        let mut peer = EapTlsPeer::new(client).unwrap();
        peer.set_server_id(&IdPayload::fqdn("gw"));
        let server = EapTlsServer::new(gateway, &IdPayload::fqdn("cl"), indication).unwrap();
        (peer, server)
    }

    #[test]
    fn both_sides_derive_one_msk_with_and_without_the_indication() {
        let lab = ca("lab");
        let (cl, gw) = (creds("cl", 0, &lab, &lab), creds("gw", 0, &lab, &lab));
        for indication in [false, true] {
            let (mut peer, mut server) = pair(&cl, &gw, indication);
            let mut seen = Run::default();
            let (a, b) = run(&mut peer, &mut server, &mut seen).unwrap();
            assert_eq!(a.len(), 64);
            assert_eq!(a, b, "indication {indication}");
            assert_eq!(peer.version(), Some("TLS 1.3"));
            assert_eq!(server.client(), Some(("CN=cl".to_string(), "TLS 1.3")));
            assert_eq!(peer.server_subject().as_deref(), Some("CN=gw"));
            assert_eq!(peer.committed, indication);
            // Start → ClientHello, our flight → the client's Finished; the indication →
            // its acknowledgement.
            assert_eq!(seen.rounds, 2 + usize::from(indication));
        }
    }

    #[test]
    fn long_flights_are_fragmented_both_ways() {
        let lab = ca("lab");
        let (cl, gw) = (creds("cl", 60, &lab, &lab), creds("gw", 60, &lab, &lab));
        let (mut peer, mut server) = pair(&cl, &gw, false);
        let mut seen = Run::default();
        let (a, b) = run(&mut peer, &mut server, &mut seen).unwrap();
        assert_eq!(a, b);
        assert!(seen.server_more >= 1, "{seen:?}");
        assert!(seen.peer_more >= 1, "{seen:?}");
    }

    #[test]
    fn client_of_an_unknown_ca_or_another_name_is_refused() {
        let (lab, other) = (ca("lab"), ca("other"));
        let gw = creds("gw", 0, &lab, &lab);
        // Another CA: our alert, the peer's acknowledgement, then the refusal.
        let cl = creds("cl", 0, &other, &lab);
        let (mut peer, mut server) = pair(&cl, &gw, false);
        let e = run(&mut peer, &mut server, &mut Run::default()).unwrap_err();
        assert_eq!(e, ("server", EapError::TlsClientCert("unknown CA")));
        assert_eq!(
            server.refusal(),
            Some(EapError::TlsClientCert("unknown CA"))
        );
        assert_eq!(
            peer.alert(),
            Some(u8::from(rustls::AlertDescription::UnknownCA))
        );
        assert_eq!(
            AuthError::Eap(e.1).to_string(),
            "EAP-TLS: client's TLS certificate refused: unknown CA"
        );
        assert_eq!(server.client(), None);
        // Our CA, but a certificate that does not name the client's identity.
        let cl = creds("mallory", 0, &lab, &lab);
        let (mut peer, mut server) = pair(&cl, &gw, false);
        let e = run(&mut peer, &mut server, &mut Run::default()).unwrap_err();
        assert_eq!(
            e,
            (
                "server",
                EapError::TlsClientCert(
                    "the client's identity is not in the certificate (subject or subjectAltName)"
                )
            )
        );
    }

    #[test]
    fn bad_fragments_are_refused() {
        let lab = ca("lab");
        let (cl, gw) = (creds("cl", 0, &lab, &lab), creds("gw", 0, &lab, &lab));
        let server = || EapTlsServer::new(&gw, &IdPayload::fqdn("cl"), false).unwrap();
        let bad = Err(EapError::BadTlsData);
        let step = |s: &mut EapTlsServer, d: &[u8]| s.process(d).map(|_| ());
        // Nothing, a Start from the client, an acknowledgement before anything.
        assert_eq!(step(&mut server(), &[]), bad);
        assert_eq!(step(&mut server(), &[FLAG_START]), bad);
        assert_eq!(step(&mut server(), &[0]), bad);
        // M without data; a length beyond the bound; a length cut short.
        assert_eq!(step(&mut server(), &[FLAG_MORE]), bad);
        let mut big = vec![FLAG_LENGTH | FLAG_MORE];
        big.extend_from_slice(&((MAX_TLS_MESSAGE + 1) as u32).to_be_bytes());
        big.push(22);
        assert_eq!(step(&mut server(), &big), bad);
        assert_eq!(step(&mut server(), &[FLAG_LENGTH, 0, 0]), bad);
        // More data than announced; less; another length in a later fragment.
        let mut s = server();
        assert_eq!(
            step(&mut s, &[FLAG_LENGTH | FLAG_MORE, 0, 0, 0, 2, 22]),
            Ok(())
        );
        assert_eq!(step(&mut s, &[0, 3, 1]), bad);
        let mut s = server();
        assert_eq!(step(&mut s, &[FLAG_LENGTH, 0, 0, 0, 3, 22]), bad);
        let mut s = server();
        assert_eq!(
            step(&mut s, &[FLAG_LENGTH | FLAG_MORE, 0, 0, 0, 9, 22]),
            Ok(())
        );
        assert_eq!(step(&mut s, &[FLAG_LENGTH, 0, 0, 0, 8, 3]), bad);
        // Garbage where TLS records belong: rustls refuses it (an alert goes out first).
        let mut s = server();
        let r = s.process(&[0, 0xde, 0xad, 0xbe, 0xef, 0x00]);
        match r {
            Ok(ServerTls::Send(alert)) => {
                assert_eq!(s.process(&[0]).map(|_| ()), Err(EapError::TlsHandshake));
                assert!(alert.len() > 1);
            }
            other => assert_eq!(other.map(|_| ()), Err(EapError::TlsHandshake)),
        }
        // A client that sends fragments without end: refused at the reassembly bound.
        let mut s = server();
        let chunk = vec![0x16u8; FRAGMENT_SIZE];
        let mut sent = 0;
        let refused = loop {
            let mut f = vec![FLAG_MORE];
            f.extend_from_slice(&chunk);
            match s.process(&f) {
                Ok(ServerTls::Send(ack)) => assert_eq!(ack, [0]),
                Ok(ServerTls::Done(_)) => panic!("done"),
                Err(e) => break e,
            }
            sent += chunk.len();
            assert!(sent <= MAX_TLS_MESSAGE);
        };
        assert_eq!(refused, EapError::BadTlsData);
        assert_eq!(sent, MAX_TLS_MESSAGE);
        let _ = cl;
    }
}
