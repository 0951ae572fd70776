//! EAP inside IKE_AUTH (RFC 7296 section 2.16): the packet codec (RFC 3748), the peer
//! (our side as a client) and the authenticator (our side as a gateway) of the methods
//! mifsec implements: Identity and MS-CHAPv2 (draft-kamath-pppext-eap-mschapv2, as
//! strongSwan's eap-mschapv2 speaks it), and EAP-TLS as the peer ([`super::eap_tls`]).
//!
//! Both sides are small state machines over whole EAP packets, sans-IO: the IKE SA hands
//! each received EAP payload in and sends what comes out. Every packet is checked (lengths,
//! codes, identifiers, the method's own fields) before anything is computed; every refusal
//! is an [`EapError`], which the IKE SA answers with AUTHENTICATION_FAILED and logs.
//! Secrets (passwords, NT hashes, the MSK) live in `Zeroizing` buffers and are never part
//! of an error or a `Debug` output.

use core::fmt;
use std::sync::Arc;

use ring::rand::SecureRandom;
use zeroize::Zeroizing;

use super::eap_tls::{EapTlsCreds, EapTlsPeer, EapTlsServer, MAX_TLS_ROUNDS, ServerTls};
use super::mschapv2;
use crate::wire::IdPayload;

/// EAP codes (RFC 3748 section 4).
pub const CODE_REQUEST: u8 = 1;
/// Response.
pub const CODE_RESPONSE: u8 = 2;
/// Success.
pub const CODE_SUCCESS: u8 = 3;
/// Failure.
pub const CODE_FAILURE: u8 = 4;

/// EAP method types.
pub const TYPE_IDENTITY: u8 = 1;
/// Notification (RFC 3748 section 5.2).
pub const TYPE_NOTIFICATION: u8 = 2;
/// Legacy Nak.
pub const TYPE_NAK: u8 = 3;
/// MD5-Challenge.
pub const TYPE_MD5: u8 = 4;
/// EAP-TLS (RFC 5216).
pub const TYPE_TLS: u8 = 13;
/// EAP-MSCHAPv2.
pub const TYPE_MSCHAPV2: u8 = 26;

/// The longest EAP packet taken (the Length field is 16 bits; nothing mifsec speaks comes
/// near this).
pub const MAX_EAP_LEN: usize = 4096;
/// The most EAP round trips of one authentication, either role: Identity, a Nak,
/// MS-CHAPv2's challenge and success, with room to spare. More is refused
/// ([`EapError::TooManyRounds`]).
pub const MAX_ROUNDS: u8 = 8;
/// The longest identity kept (EAP-Identity, an MS-CHAPv2 name).
pub const MAX_IDENTITY: usize = 255;

const MS_CHALLENGE: u8 = 1;
const MS_RESPONSE: u8 = 2;
const MS_SUCCESS: u8 = 3;
const MS_FAILURE: u8 = 4;
/// MS-CHAPv2 Response value size: peer challenge 16, reserved 8, NT-Response 24, flags 1.
const MS_RESPONSE_VALUE: usize = 49;
/// The name we send as authenticator in a Challenge.
const HOST_NAME: &[u8] = b"mifsec";

/// The EAP method of one side (`local.auth` or `remote.auth` = `eap-mschapv2 | eap-tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EapMethod {
    /// EAP-MSCHAPv2.
    Mschapv2,
    /// EAP-TLS (RFC 5216, RFC 9190), either role.
    Tls,
}

impl EapMethod {
    /// As swanctl.conf names it.
    pub fn name(self) -> &'static str {
        match self {
            EapMethod::Mschapv2 => "eap-mschapv2",
            EapMethod::Tls => "eap-tls",
        }
    }

    /// The EAP type number.
    pub fn eap_type(self) -> u8 {
        match self {
            EapMethod::Mschapv2 => TYPE_MSCHAPV2,
            EapMethod::Tls => TYPE_TLS,
        }
    }

    /// Whether the method authenticates both sides so that EAP-only authentication (RFC
    /// 5998) may do without the gateway's AUTH: not MS-CHAPv2 (strongSwan's `is_mutual`
    /// says no for it too, and RFC 5998 section 4 does not list it); EAP-TLS is (the
    /// gateway's TLS certificate is checked as its IKE certificate would be).
    pub fn mutual(self) -> bool {
        self == EapMethod::Tls
    }
}

/// Why an EAP authentication failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EapError {
    /// A packet shorter than its header, with a Length that is not its size, or longer
    /// than [`MAX_EAP_LEN`].
    Malformed,
    /// A code that does not belong here (a Response sent to the peer, a Request to the
    /// authenticator, an unknown code).
    UnexpectedCode(u8),
    /// A response whose identifier is not the request's.
    WrongIdentifier,
    /// A method we did not configure or do not speak.
    UnexpectedType(u8),
    /// A method packet whose fields are wrong (sizes, opcodes, the Success string).
    BadMethodData,
    /// The authenticator's response (MS-CHAPv2 `S=`) did not verify: it does not know
    /// our password.
    ServerNotAuthenticated,
    /// The peer's response did not verify (wrong password), or its user is unknown.
    WrongPassword,
    /// The gateway sent EAP-Failure (or an MS-CHAPv2 Failure, with its error code).
    Failure(u16),
    /// EAP-Success before the method finished.
    EarlySuccess,
    /// More than [`MAX_ROUNDS`] round trips.
    TooManyRounds,
    /// The peer answered with a Nak: it does not speak our method.
    Nak,
    /// No random numbers.
    Rng,
    /// A malformed EAP-TLS packet: flags, lengths, fragments out of order, a message
    /// longer than its announced length or than the reassembly bound.
    BadTlsData,
    /// The gateway's TLS certificate was refused, and why.
    TlsServerCert(&'static str),
    /// The gateway refused us with this TLS alert (then EAP-Failure).
    TlsAlert(u8),
    /// The TLS handshake failed otherwise (rustls's error is logged).
    TlsHandshake,
    /// We the gateway refused the client's TLS certificate, and why.
    TlsClientCert(&'static str),
    /// The client gave up the handshake with this TLS alert.
    TlsClientAlert(u8),
}

impl fmt::Display for EapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EapError::Malformed => f.write_str("malformed EAP packet"),
            EapError::UnexpectedCode(c) => write!(f, "unexpected EAP code {c}"),
            EapError::WrongIdentifier => f.write_str("EAP response with the wrong identifier"),
            EapError::UnexpectedType(t) => write!(f, "unexpected EAP type {t}"),
            EapError::BadMethodData => f.write_str("malformed EAP-MSCHAPv2 data"),
            EapError::ServerNotAuthenticated => {
                f.write_str("EAP-MSCHAPv2 authenticator response did not verify")
            }
            EapError::WrongPassword => f.write_str("EAP-MSCHAPv2 wrong password or unknown user"),
            EapError::Failure(0) => f.write_str("EAP-Failure from the gateway"),
            EapError::Failure(e) => write!(f, "EAP-MSCHAPv2 failure E={e} from the gateway"),
            EapError::EarlySuccess => f.write_str("EAP-Success before the method completed"),
            EapError::TooManyRounds => {
                write!(
                    f,
                    "too many EAP rounds (more than {MAX_ROUNDS}, {MAX_TLS_ROUNDS} with EAP-TLS)"
                )
            }
            EapError::Nak => f.write_str("peer refused the EAP method (Nak)"),
            EapError::Rng => f.write_str("random number generator failed"),
            EapError::BadTlsData => f.write_str("malformed EAP-TLS packet"),
            EapError::TlsServerCert(why) => {
                write!(f, "EAP-TLS: gateway's TLS certificate refused: {why}")
            }
            EapError::TlsAlert(a) => write!(
                f,
                "EAP-TLS refused by the gateway: TLS alert {:?}, then EAP-Failure",
                rustls::AlertDescription::from(*a)
            ),
            EapError::TlsHandshake => f.write_str("EAP-TLS handshake failed"),
            EapError::TlsClientCert(why) => {
                write!(f, "EAP-TLS: client's TLS certificate refused: {why}")
            }
            EapError::TlsClientAlert(a) => write!(
                f,
                "EAP-TLS: the client sent TLS alert {:?}",
                rustls::AlertDescription::from(*a)
            ),
        }
    }
}

/// One EAP packet, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EapPacket<'a> {
    /// Request, Response, Success, Failure.
    pub code: u8,
    /// The identifier.
    pub id: u8,
    /// The method type (Request and Response only; 0 otherwise).
    pub typ: u8,
    /// The type data.
    pub data: &'a [u8],
}

impl<'a> EapPacket<'a> {
    /// Parses an EAP payload's body: the Length field must be exactly its size, a Request
    /// or Response must have a type, Success and Failure nothing after the header.
    pub fn parse(b: &'a [u8]) -> Result<Self, EapError> {
        if b.len() < 4 || b.len() > MAX_EAP_LEN {
            return Err(EapError::Malformed);
        }
        let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
        if len != b.len() {
            return Err(EapError::Malformed);
        }
        let (code, id) = (b[0], b[1]);
        match code {
            CODE_REQUEST | CODE_RESPONSE => {
                if len < 5 {
                    return Err(EapError::Malformed);
                }
                Ok(EapPacket {
                    code,
                    id,
                    typ: b[4],
                    data: &b[5..],
                })
            }
            CODE_SUCCESS | CODE_FAILURE if len == 4 => Ok(EapPacket {
                code,
                id,
                typ: 0,
                data: &[],
            }),
            CODE_SUCCESS | CODE_FAILURE => Err(EapError::Malformed),
            c => Err(EapError::UnexpectedCode(c)),
        }
    }
}

/// An EAP packet's bytes.
pub fn build(code: u8, id: u8, typ: Option<u8>, data: &[u8]) -> Vec<u8> {
    let len = 4 + usize::from(typ.is_some()) + data.len();
    let mut out = Vec::with_capacity(len);
    out.push(code);
    out.push(id);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend(typ);
    out.extend_from_slice(data);
    out
}

/// An MS-CHAPv2 packet's type data: opcode, MS-CHAPv2-ID, MS-Length (the EAP length less
/// 5), data.
fn ms_data(opcode: u8, ms_id: u8, data: &[u8]) -> Vec<u8> {
    let ms_len = (4 + data.len()) as u16;
    let mut out = Vec::with_capacity(4 + data.len());
    out.push(opcode);
    out.push(ms_id);
    out.extend_from_slice(&ms_len.to_be_bytes());
    out.extend_from_slice(data);
    out
}

/// An MS-CHAPv2 packet's (opcode, MS-CHAPv2-ID, data); the MS-Length must agree.
fn ms_parse(data: &[u8]) -> Result<(u8, u8, &[u8]), EapError> {
    if data.len() < 4 {
        // A peer's Success or Failure response is the opcode alone.
        return match data {
            [op] => Ok((*op, 0, &[])),
            _ => Err(EapError::BadMethodData),
        };
    }
    let ms_len = usize::from(u16::from_be_bytes([data[2], data[3]]));
    if ms_len != data.len() {
        return Err(EapError::BadMethodData);
    }
    Ok((data[0], data[1], &data[4..]))
}

/// Equal, in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random<const N: usize>(rng: &dyn SecureRandom) -> Result<[u8; N], EapError> {
    let mut b = [0u8; N];
    rng.fill(&mut b).map_err(|_| EapError::Rng)?;
    Ok(b)
}

/// What the peer does with a request.
#[derive(Debug)]
pub enum PeerStep {
    /// Send this EAP response.
    Respond(Vec<u8>),
    /// EAP-Success: authenticated; the MSK (for AUTH, RFC 7296 section 2.16) when the
    /// method made one.
    Success(Option<Zeroizing<Vec<u8>>>),
}

enum PeerState {
    /// No method packet yet.
    Start,
    /// MS-CHAPv2 Response sent; what its Success must prove, and the MSK.
    Responded {
        auth_response: [u8; 20],
        msk: Zeroizing<Vec<u8>>,
    },
    /// The authenticator proved itself; EAP-Success comes next.
    Verified(Zeroizing<Vec<u8>>),
}

/// Our side as an EAP peer (`local.auth = eap-mschapv2`).
pub struct EapPeer {
    method: EapMethod,
    identity: Vec<u8>,
    secret: Zeroizing<Vec<u8>>,
    state: PeerState,
    rounds: u8,
    naks: u8,
    /// EAP-TLS's state, for [`EapMethod::Tls`].
    tls: Option<Box<EapTlsPeer>>,
}

impl fmt::Debug for EapPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EapPeer")
            .field("method", &self.method)
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("rounds", &self.rounds)
            .finish_non_exhaustive()
    }
}

impl EapPeer {
    /// A peer of `method` with its EAP identity (`local.eap_id`, else the IKE identity's
    /// data) and secret.
    pub fn new(method: EapMethod, identity: Vec<u8>, secret: Zeroizing<Vec<u8>>) -> Self {
        EapPeer {
            method,
            identity,
            secret,
            state: PeerState::Start,
            rounds: 0,
            naks: 0,
            tls: None,
        }
    }

    /// An EAP-TLS peer with its EAP identity and certificate.
    pub fn tls(identity: Vec<u8>, creds: &EapTlsCreds) -> Result<Self, EapError> {
        let mut p = Self::new(EapMethod::Tls, identity, Zeroizing::default());
        p.tls = Some(Box::new(EapTlsPeer::new(creds)?));
        Ok(p)
    }

    /// The identity the gateway's EAP-TLS certificate must name.
    pub fn set_server_id(&mut self, id: &IdPayload) {
        if let Some(t) = &mut self.tls {
            t.set_server_id(id);
        }
    }

    /// The subject of the gateway's EAP-TLS certificate and the TLS version, once verified.
    pub fn tls_server(&self) -> Option<(String, &'static str)> {
        let t = self.tls.as_ref()?;
        Some((t.server_subject()?, t.version().unwrap_or("TLS")))
    }

    /// The EAP identity we use.
    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    /// Processes one EAP packet from the gateway.
    pub fn process(&mut self, bytes: &[u8], rng: &dyn SecureRandom) -> Result<PeerStep, EapError> {
        self.rounds = self.rounds.saturating_add(1);
        let max = if self.tls.is_some() {
            MAX_TLS_ROUNDS
        } else {
            MAX_ROUNDS
        };
        if self.rounds > max {
            return Err(EapError::TooManyRounds);
        }
        let p = EapPacket::parse(bytes)?;
        if let Some(t) = &mut self.tls {
            if let (Some(why), CODE_SUCCESS | CODE_FAILURE) = (t.refused(), p.code) {
                // We refused the gateway and told it so; its answer ends it either way.
                return Err(why);
            }
            match p.code {
                CODE_SUCCESS => {
                    return t
                        .take_msk()
                        .map(|m| PeerStep::Success(Some(m)))
                        .ok_or(EapError::EarlySuccess);
                }
                CODE_FAILURE => {
                    return Err(t.alert().map_or(EapError::Failure(0), EapError::TlsAlert));
                }
                CODE_REQUEST if p.typ == TYPE_TLS => {
                    let d = t.process(p.data)?;
                    return Ok(PeerStep::Respond(build(
                        CODE_RESPONSE,
                        p.id,
                        Some(TYPE_TLS),
                        &d,
                    )));
                }
                _ => {}
            }
        }
        match p.code {
            CODE_SUCCESS => {
                return match std::mem::replace(&mut self.state, PeerState::Start) {
                    PeerState::Verified(msk) => Ok(PeerStep::Success(Some(msk))),
                    _ => Err(EapError::EarlySuccess),
                };
            }
            CODE_FAILURE => return Err(EapError::Failure(0)),
            CODE_REQUEST => {}
            c => return Err(EapError::UnexpectedCode(c)),
        }
        let respond = |typ: u8, data: &[u8]| {
            Ok(PeerStep::Respond(build(
                CODE_RESPONSE,
                p.id,
                Some(typ),
                data,
            )))
        };
        match p.typ {
            TYPE_IDENTITY => respond(TYPE_IDENTITY, &self.identity),
            // A Notification is acknowledged with an empty one (RFC 3748 section 5.2).
            TYPE_NOTIFICATION => respond(TYPE_NOTIFICATION, &[]),
            t if t == self.method.eap_type() => self.mschapv2(p.id, p.data, rng),
            t => {
                // A method we do not speak: one Legacy Nak with ours (RFC 3748 5.3.1);
                // a second unexpected method ends it.
                self.naks += 1;
                if self.naks > 1 || t < TYPE_MD5 {
                    return Err(EapError::UnexpectedType(t));
                }
                respond(TYPE_NAK, &[self.method.eap_type()])
            }
        }
    }

    fn mschapv2(
        &mut self,
        id: u8,
        data: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<PeerStep, EapError> {
        let (op, ms_id, body) = ms_parse(data)?;
        let respond = |d: Vec<u8>| {
            Ok(PeerStep::Respond(build(
                CODE_RESPONSE,
                id,
                Some(TYPE_MSCHAPV2),
                &d,
            )))
        };
        match (op, &self.state) {
            (MS_CHALLENGE, PeerState::Start) => {
                // value size 16, the challenge, the authenticator's name (at least one octet).
                if body.len() < 1 + mschapv2::CHALLENGE_LEN + 1
                    || usize::from(body[0]) != mschapv2::CHALLENGE_LEN
                {
                    return Err(EapError::BadMethodData);
                }
                let auth: [u8; 16] = body[1..17]
                    .try_into()
                    .map_err(|_| EapError::BadMethodData)?;
                let peer: [u8; 16] = random(rng)?;
                let hash = mschapv2::nt_password_hash(&self.secret);
                let nt = mschapv2::nt_response(&auth, &peer, &self.identity, &hash);
                let auth_response =
                    mschapv2::authenticator_response(&hash, &nt, &peer, &auth, &self.identity);
                let msk = mschapv2::msk(&hash, &nt);
                let mut value = Vec::with_capacity(1 + MS_RESPONSE_VALUE + self.identity.len());
                value.push(MS_RESPONSE_VALUE as u8);
                value.extend_from_slice(&peer);
                value.extend_from_slice(&[0u8; 8]);
                value.extend_from_slice(&nt);
                value.push(0);
                value.extend_from_slice(&self.identity);
                self.state = PeerState::Responded { auth_response, msk };
                respond(ms_data(MS_RESPONSE, ms_id, &value))
            }
            (MS_SUCCESS, PeerState::Responded { auth_response, .. }) => {
                // "S=<40 hex digits> M=<message>"
                let text = std::str::from_utf8(body).map_err(|_| EapError::BadMethodData)?;
                let s = text
                    .split(' ')
                    .find_map(|t| t.strip_prefix("S="))
                    .ok_or(EapError::BadMethodData)?;
                let got = hex::decode(s).map_err(|_| EapError::BadMethodData)?;
                if got.len() != 20 {
                    return Err(EapError::BadMethodData);
                }
                if !ct_eq(&got, auth_response) {
                    return Err(EapError::ServerNotAuthenticated);
                }
                let PeerState::Responded { msk, .. } =
                    std::mem::replace(&mut self.state, PeerState::Start)
                else {
                    unreachable!("matched above")
                };
                self.state = PeerState::Verified(msk);
                respond(vec![MS_SUCCESS])
            }
            (MS_FAILURE, _) => {
                let text = String::from_utf8_lossy(body);
                let e = text
                    .split(' ')
                    .find_map(|t| t.strip_prefix("E="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(691);
                Err(EapError::Failure(e))
            }
            _ => Err(EapError::BadMethodData),
        }
    }
}

/// The identity an EAP identity names, as strongSwan makes it
/// (`identification_create_from_data`): printable text parsed as an identity string (an
/// FQDN, `user@host`, a DN, an address), anything else a key ID.
fn eap_identity_id(data: &[u8]) -> IdPayload {
    std::str::from_utf8(data)
        .ok()
        .filter(|t| t.bytes().all(|b| (0x20..0x7f).contains(&b)))
        .and_then(|t| crate::config::parse_id(t).ok())
        .unwrap_or_else(|| IdPayload::key_id(data))
}

/// One `[secrets.eap-NAME]`: the identities and their password.
type EapUser = (Vec<Vec<u8>>, Zeroizing<Vec<u8>>);

/// The EAP users of a gateway (`[secrets.eap-NAME]`): identities and their passwords.
#[derive(Default)]
pub struct EapUsers {
    users: Vec<EapUser>,
}

impl fmt::Debug for EapUsers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EapUsers")
            .field("users", &self.users.len())
            .finish()
    }
}

impl EapUsers {
    /// Adds a secret for the identities `ids`.
    pub fn add(&mut self, ids: Vec<Vec<u8>>, secret: Zeroizing<Vec<u8>>) {
        self.users.push((ids, secret));
    }

    /// The number of secrets.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    fn secret(&self, id: &[u8]) -> Option<&Zeroizing<Vec<u8>>> {
        self.users
            .iter()
            .find(|(ids, _)| ids.iter().any(|i| i == id))
            .map(|(_, s)| s)
    }
}

/// What the authenticator does with a response.
#[derive(Debug)]
pub enum ServerStep {
    /// Send this EAP request.
    Request(Vec<u8>),
    /// Authenticated: send this EAP-Success; the MSK and the EAP identity the peer
    /// authenticated as.
    Success {
        /// The EAP-Success packet.
        packet: Vec<u8>,
        /// The MSK.
        msk: Zeroizing<Vec<u8>>,
        /// The identity.
        identity: Vec<u8>,
    },
}

enum ServerState {
    AwaitIdentity,
    AwaitResponse {
        challenge: [u8; 16],
    },
    AwaitSuccessAck {
        msk: Zeroizing<Vec<u8>>,
        identity: Vec<u8>,
    },
    /// EAP-TLS, from Start to the handshake's end.
    Tls(Box<EapTlsServer>),
    Done,
}

/// Our side as an EAP authenticator (`remote.auth = eap-mschapv2 | eap-tls`).
pub struct EapServer {
    method: EapMethod,
    users: Arc<EapUsers>,
    identity: Vec<u8>,
    id: u8,
    ms_id: u8,
    state: ServerState,
    rounds: u8,
    /// EAP-TLS: our certificate and key, the client's CAs; the client's IKE identity
    /// (what its certificate must name when no EAP identity was asked for); RFC 9190's
    /// protected success indication with TLS 1.3.
    tls: Option<(Arc<EapTlsCreds>, IdPayload, bool)>,
    /// EAP-TLS: the client's certificate subject and the TLS version, once verified.
    tls_client: Option<(String, &'static str)>,
}

impl fmt::Debug for EapServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EapServer")
            .field("method", &self.method)
            .field("identity", &String::from_utf8_lossy(&self.identity))
            .field("rounds", &self.rounds)
            .finish_non_exhaustive()
    }
}

impl EapServer {
    /// Starts an authentication of the peer whose IKE identity's data is `ike_id`: with
    /// `ask_identity` (`remote.eap_id = "%any"`) by an EAP-Identity request, else at once
    /// with the method for that identity. Returns the first request.
    pub fn start(
        method: EapMethod,
        users: Arc<EapUsers>,
        ask_identity: bool,
        ike_id: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<(EapServer, Vec<u8>), EapError> {
        let [id, ms_id] = random::<2>(rng)?;
        let mut s = EapServer {
            method,
            users,
            identity: ike_id[..ike_id.len().min(MAX_IDENTITY)].to_vec(),
            id,
            ms_id,
            state: ServerState::AwaitIdentity,
            rounds: 0,
            tls: None,
            tls_client: None,
        };
        let first = if ask_identity {
            build(CODE_REQUEST, s.id, Some(TYPE_IDENTITY), &[])
        } else {
            s.challenge(rng)?
        };
        Ok((s, first))
    }

    /// Starts an EAP-TLS authentication of the peer whose IKE identity is `ike_id`: with
    /// `ask_identity` by an EAP-Identity request (its client certificate must then name
    /// that EAP identity, as strongSwan parses it), else at once with EAP-TLS Start (the
    /// certificate must name the IKE identity). `indication`: RFC 9190's protected success
    /// indication with TLS 1.3 (see [`EapTlsServer`]). Returns the first request.
    pub fn start_tls(
        creds: Arc<EapTlsCreds>,
        ask_identity: bool,
        ike_id: &IdPayload,
        indication: bool,
        rng: &dyn SecureRandom,
    ) -> Result<(EapServer, Vec<u8>), EapError> {
        let [id] = random::<1>(rng)?;
        let mut s = EapServer {
            method: EapMethod::Tls,
            users: Arc::new(EapUsers::default()),
            identity: ike_id.data[..ike_id.data.len().min(MAX_IDENTITY)].to_vec(),
            id,
            ms_id: 0,
            state: ServerState::AwaitIdentity,
            rounds: 0,
            tls: Some((creds, ike_id.clone(), indication)),
            tls_client: None,
        };
        let first = if ask_identity {
            build(CODE_REQUEST, s.id, Some(TYPE_IDENTITY), &[])
        } else {
            s.tls_start(ike_id.clone())?
        };
        Ok((s, first))
    }

    /// EAP-TLS Start, the client's certificate to name `client_id`.
    fn tls_start(&mut self, client_id: IdPayload) -> Result<Vec<u8>, EapError> {
        let (creds, _, indication) = self.tls.as_ref().ok_or(EapError::TlsHandshake)?;
        let server = EapTlsServer::new(creds, &client_id, *indication)?;
        self.state = ServerState::Tls(Box::new(server));
        Ok(build(
            CODE_REQUEST,
            self.id,
            Some(TYPE_TLS),
            &EapTlsServer::start(),
        ))
    }

    /// EAP-TLS: our refusal whose alert went out, if the handshake failed so.
    pub fn refusal(&self) -> Option<EapError> {
        match &self.state {
            ServerState::Tls(t) => t.refusal(),
            _ => None,
        }
    }

    /// EAP-TLS: the subject of the client's TLS certificate and the TLS version, once the
    /// certificate is verified.
    pub fn tls_client(&self) -> Option<(String, &'static str)> {
        match &self.state {
            ServerState::Tls(t) => t.client(),
            _ => self.tls_client.clone(),
        }
    }

    /// The identity the peer gave (EAP-Identity or its MS-CHAPv2 name), or its IKE one.
    pub fn identity(&self) -> &[u8] {
        &self.identity
    }

    fn challenge(&mut self, rng: &dyn SecureRandom) -> Result<Vec<u8>, EapError> {
        let challenge: [u8; 16] = random(rng)?;
        let mut v = Vec::with_capacity(1 + 16 + HOST_NAME.len());
        v.push(mschapv2::CHALLENGE_LEN as u8);
        v.extend_from_slice(&challenge);
        v.extend_from_slice(HOST_NAME);
        self.state = ServerState::AwaitResponse { challenge };
        Ok(build(
            CODE_REQUEST,
            self.id,
            Some(TYPE_MSCHAPV2),
            &ms_data(MS_CHALLENGE, self.ms_id, &v),
        ))
    }

    /// Processes one EAP response from the peer.
    pub fn process(
        &mut self,
        bytes: &[u8],
        rng: &dyn SecureRandom,
    ) -> Result<ServerStep, EapError> {
        self.rounds = self.rounds.saturating_add(1);
        let max = if self.tls.is_some() {
            MAX_TLS_ROUNDS
        } else {
            MAX_ROUNDS
        };
        if self.rounds > max {
            return Err(EapError::TooManyRounds);
        }
        let p = EapPacket::parse(bytes)?;
        if p.code != CODE_RESPONSE {
            return Err(EapError::UnexpectedCode(p.code));
        }
        if p.id != self.id {
            return Err(EapError::WrongIdentifier);
        }
        self.id = self.id.wrapping_add(1);
        if p.typ == TYPE_NAK {
            return Err(EapError::Nak);
        }
        match (&mut self.state, p.typ) {
            (ServerState::AwaitIdentity, TYPE_IDENTITY) => {
                if p.data.is_empty() || p.data.len() > MAX_IDENTITY {
                    return Err(EapError::BadMethodData);
                }
                self.identity = p.data.to_vec();
                if self.tls.is_some() {
                    return Ok(ServerStep::Request(
                        self.tls_start(eap_identity_id(&self.identity))?,
                    ));
                }
                Ok(ServerStep::Request(self.challenge(rng)?))
            }
            (ServerState::Tls(t), TYPE_TLS) => match t.process(p.data)? {
                ServerTls::Send(d) => Ok(ServerStep::Request(build(
                    CODE_REQUEST,
                    self.id,
                    Some(TYPE_TLS),
                    &d,
                ))),
                ServerTls::Done(msk) => {
                    self.tls_client = t.client();
                    self.state = ServerState::Done;
                    Ok(ServerStep::Success {
                        packet: build(CODE_SUCCESS, self.id, None, &[]),
                        msk,
                        identity: self.identity.clone(),
                    })
                }
            },
            (ServerState::AwaitResponse { challenge }, TYPE_MSCHAPV2) => {
                let challenge = *challenge;
                let (op, _, body) = ms_parse(p.data)?;
                if op != MS_RESPONSE
                    || body.len() < 1 + MS_RESPONSE_VALUE
                    || usize::from(body[0]) != MS_RESPONSE_VALUE
                {
                    return Err(EapError::BadMethodData);
                }
                let peer: [u8; 16] = body[1..17]
                    .try_into()
                    .map_err(|_| EapError::BadMethodData)?;
                let nt: [u8; 24] = body[25..49]
                    .try_into()
                    .map_err(|_| EapError::BadMethodData)?;
                let name = &body[1 + MS_RESPONSE_VALUE..];
                if name.len() > MAX_IDENTITY {
                    return Err(EapError::BadMethodData);
                }
                let Some(secret) = self.users.secret(name) else {
                    return Err(EapError::WrongPassword);
                };
                let hash = mschapv2::nt_password_hash(secret);
                let want = mschapv2::nt_response(&challenge, &peer, name, &hash);
                if !ct_eq(&want, &nt) {
                    return Err(EapError::WrongPassword);
                }
                let a = mschapv2::authenticator_response(&hash, &nt, &peer, &challenge, name);
                let msk = mschapv2::msk(&hash, &nt);
                let text = format!("S={} M=welcome", hex::encode_upper(a));
                let req = build(
                    CODE_REQUEST,
                    self.id,
                    Some(TYPE_MSCHAPV2),
                    &ms_data(MS_SUCCESS, self.ms_id, text.as_bytes()),
                );
                self.state = ServerState::AwaitSuccessAck {
                    msk,
                    identity: name.to_vec(),
                };
                Ok(ServerStep::Request(req))
            }
            (ServerState::AwaitSuccessAck { .. }, TYPE_MSCHAPV2) => {
                let (op, _, _) = ms_parse(p.data)?;
                if op != MS_SUCCESS {
                    return Err(EapError::BadMethodData);
                }
                let ServerState::AwaitSuccessAck { msk, identity } =
                    std::mem::replace(&mut self.state, ServerState::Done)
                else {
                    unreachable!("matched above")
                };
                self.identity = identity.clone();
                Ok(ServerStep::Success {
                    packet: build(CODE_SUCCESS, self.id, None, &[]),
                    msk,
                    identity,
                })
            }
            (_, t) => Err(EapError::UnexpectedType(t)),
        }
    }

    /// The EAP-Failure to send after a refusal.
    pub fn failure(&self) -> Vec<u8> {
        build(CODE_FAILURE, self.id, None, &[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::rand::SystemRandom;

    fn users() -> Arc<EapUsers> {
        let mut u = EapUsers::default();
        u.add(vec![b"carol".to_vec()], Zeroizing::new(b"s3cret".to_vec()));
        Arc::new(u)
    }

    fn run(peer_secret: &[u8], ask: bool) -> Result<(Vec<u8>, Vec<u8>), EapError> {
        let rng = SystemRandom::new();
        let (mut srv, mut req) =
            EapServer::start(EapMethod::Mschapv2, users(), ask, b"198.18.0.2", &rng)?;
        let mut peer = EapPeer::new(
            EapMethod::Mschapv2,
            b"carol".to_vec(),
            Zeroizing::new(peer_secret.to_vec()),
        );
        loop {
            let resp = match peer.process(&req, &rng)? {
                PeerStep::Respond(r) => r,
                PeerStep::Success(_) => unreachable!("success without EAP-Success"),
            };
            match srv.process(&resp, &rng)? {
                ServerStep::Request(r) => req = r,
                ServerStep::Success {
                    packet,
                    msk,
                    identity,
                } => {
                    let PeerStep::Success(Some(pm)) = peer.process(&packet, &rng)? else {
                        panic!("no MSK")
                    };
                    assert_eq!(&pm[..], &msk[..]);
                    return Ok((msk.to_vec(), identity));
                }
            }
        }
    }

    #[test]
    fn mschapv2_both_sides() {
        let (msk, id) = run(b"s3cret", false).unwrap();
        assert_eq!(msk.len(), 64);
        assert_eq!(id, b"carol");
        let (_, id) = run(b"s3cret", true).unwrap();
        assert_eq!(id, b"carol");
        assert_eq!(run(b"wrong", true).unwrap_err(), EapError::WrongPassword);
    }

    #[test]
    fn packets_checked() {
        assert_eq!(EapPacket::parse(&[1, 0, 0]), Err(EapError::Malformed));
        assert_eq!(EapPacket::parse(&[1, 0, 0, 9, 1]), Err(EapError::Malformed));
        assert_eq!(EapPacket::parse(&[3, 0, 0, 5, 1]), Err(EapError::Malformed));
        assert_eq!(
            EapPacket::parse(&[9, 0, 0, 4]),
            Err(EapError::UnexpectedCode(9))
        );
        assert_eq!(EapPacket::parse(&[1, 7, 0, 4]), Err(EapError::Malformed));
        let p = EapPacket::parse(&[1, 7, 0, 6, 1, b'x']).unwrap();
        assert_eq!((p.code, p.id, p.typ, p.data), (1, 7, 1, &b"x"[..]));
        let rng = SystemRandom::new();
        let mut peer = EapPeer::new(
            EapMethod::Mschapv2,
            b"c".to_vec(),
            Zeroizing::new(b"p".to_vec()),
        );
        // Success before anything.
        assert_eq!(
            peer.process(&[3, 1, 0, 4], &rng).unwrap_err(),
            EapError::EarlySuccess
        );
        // A short challenge.
        let bad = build(1, 1, Some(26), &ms_data(1, 1, &[16, 1, 2]));
        assert_eq!(
            peer.process(&bad, &rng).unwrap_err(),
            EapError::BadMethodData
        );
        // MD5: one Nak, then refused.
        let mut peer = EapPeer::new(
            EapMethod::Mschapv2,
            b"c".to_vec(),
            Zeroizing::new(b"p".to_vec()),
        );
        let md5 = build(1, 2, Some(TYPE_MD5), &[16; 17]);
        let PeerStep::Respond(nak) = peer.process(&md5, &rng).unwrap() else {
            panic!()
        };
        assert_eq!(nak, build(2, 2, Some(TYPE_NAK), &[26]));
        assert_eq!(
            peer.process(&md5, &rng).unwrap_err(),
            EapError::UnexpectedType(4)
        );
        // Too many rounds.
        let mut peer = EapPeer::new(
            EapMethod::Mschapv2,
            b"c".to_vec(),
            Zeroizing::new(b"p".to_vec()),
        );
        let ident = build(1, 1, Some(1), &[]);
        for _ in 0..MAX_ROUNDS {
            peer.process(&ident, &rng).unwrap();
        }
        assert_eq!(
            peer.process(&ident, &rng).unwrap_err(),
            EapError::TooManyRounds
        );
        // The server: a wrong identifier, a wrong type.
        let (mut srv, req) =
            EapServer::start(EapMethod::Mschapv2, users(), true, b"x", &rng).unwrap();
        let wrong_id = build(2, req[1].wrapping_add(1), Some(1), b"carol");
        assert_eq!(
            srv.process(&wrong_id, &rng).unwrap_err(),
            EapError::WrongIdentifier
        );
        let (mut srv, req) =
            EapServer::start(EapMethod::Mschapv2, users(), true, b"x", &rng).unwrap();
        let md5 = build(2, req[1], Some(TYPE_MD5), &[1]);
        assert_eq!(
            srv.process(&md5, &rng).unwrap_err(),
            EapError::UnexpectedType(4)
        );
    }

    #[test]
    fn tls_server_refuses_endless_fragments() {
        use crate::ike::auth::eap_tls::{EapTlsCreds, FLAG_MORE};
        use rcgen::{CertificateParams, DnType, KeyPair};
        let rng = SystemRandom::new();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::new(vec!["gw".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, "gw");
        let cert = p.self_signed(&key).unwrap();
        let creds = Arc::new(EapTlsCreds {
            key: Arc::new(
                crate::ike::auth::PrivateKey::from_pem_or_der(&key.serialize_der()).unwrap(),
            ),
            certs: vec![cert.der().to_vec()],
            trust: Arc::new(
                crate::ike::auth::TrustStore::new(&[cert.der().to_vec()], &[], &[]).unwrap(),
            ),
        });
        let ike_id = IdPayload::fqdn("cl");
        let (mut srv, req) = EapServer::start_tls(creds, true, &ike_id, false, &rng).unwrap();
        assert_eq!(req[4], TYPE_IDENTITY);
        let ServerStep::Request(start) = srv
            .process(&build(2, req[1], Some(TYPE_IDENTITY), b"cl"), &rng)
            .unwrap()
        else {
            panic!("no Start")
        };
        assert_eq!((start[4], &start[5..]), (TYPE_TLS, &[0x20][..]));
        assert_eq!(srv.identity(), b"cl");
        // Fragments with M without end: acknowledged until the round limit.
        let mut id = start[1];
        let mut data = vec![FLAG_MORE];
        data.extend_from_slice(&[0x16; 1000]);
        let mut acked = 0;
        let e = loop {
            match srv.process(&build(2, id, Some(TYPE_TLS), &data), &rng) {
                Ok(ServerStep::Request(ack)) => {
                    assert_eq!(&ack[4..], &[TYPE_TLS, 0]);
                    id = ack[1];
                    acked += 1;
                }
                Ok(ServerStep::Success { .. }) => panic!("success"),
                Err(e) => break e,
            }
        };
        assert_eq!(e, EapError::TooManyRounds);
        // The Identity response was round 1: 39 fragments (39,000 octets held) then no more.
        assert_eq!(acked, usize::from(MAX_TLS_ROUNDS) - 1);
        let f = srv.failure();
        assert_eq!((f[0], f.len()), (CODE_FAILURE, 4));
        // A Start from the client, a Nak.
        let (mut srv, req) = EapServer::start_tls(
            Arc::new(EapTlsCreds {
                key: Arc::new(
                    crate::ike::auth::PrivateKey::from_pem_or_der(&key.serialize_der()).unwrap(),
                ),
                certs: vec![cert.der().to_vec()],
                trust: Arc::new(
                    crate::ike::auth::TrustStore::new(&[cert.der().to_vec()], &[], &[]).unwrap(),
                ),
            }),
            false,
            &ike_id,
            false,
            &rng,
        )
        .unwrap();
        assert_eq!((req[4], &req[5..]), (TYPE_TLS, &[0x20][..]));
        assert_eq!(
            srv.process(&build(2, req[1], Some(TYPE_TLS), &[0x20]), &rng)
                .unwrap_err(),
            EapError::BadTlsData
        );
        assert_eq!(
            EapServer::start_tls(
                Arc::new(EapTlsCreds {
                    key: Arc::new(
                        crate::ike::auth::PrivateKey::from_pem_or_der(&key.serialize_der())
                            .unwrap(),
                    ),
                    certs: vec![cert.der().to_vec()],
                    trust: Arc::new(
                        crate::ike::auth::TrustStore::new(&[cert.der().to_vec()], &[], &[])
                            .unwrap(),
                    ),
                }),
                false,
                &ike_id,
                false,
                &rng,
            )
            .map(|(mut s, r)| s.process(&build(2, r[1], Some(TYPE_NAK), &[26]), &rng))
            .unwrap()
            .unwrap_err(),
            EapError::Nak
        );
    }

    #[test]
    fn eap_identities_as_strongswan_parses_them() {
        assert_eq!(eap_identity_id(b"cl"), IdPayload::fqdn("cl"));
        assert_eq!(
            eap_identity_id(b"carol@example.org"),
            IdPayload::rfc822("carol@example.org")
        );
        assert_eq!(
            eap_identity_id(b"10.1.2.3"),
            IdPayload::ipv4("10.1.2.3".parse().unwrap())
        );
        assert_eq!(
            eap_identity_id(b"CN=cl").id_type,
            crate::wire::IdType::DerAsn1Dn
        );
        assert_eq!(eap_identity_id(&[0xff, 0]), IdPayload::key_id(&[0xff, 0]));
    }
}
