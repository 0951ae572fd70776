//! Shared by `eap_parse` and the seed generator (`examples/seeds.rs`).
//!
//! Input: a mode byte, then EAP packets, each a little-endian u16 length and its bytes (at
//! most [`MAX_PACKETS`]).
//!
//! * mode & 3 == 0, 1: the IKE route. A mifsec EAP client (mode & 4: EAP-TLS, else
//!   EAP-MSCHAPv2) and a mifsec EAP-MSCHAPv2 gateway run a genuine handshake in memory;
//!   the EAP packets one side sends (mode & 1: the client's, else the gateway's) are
//!   replaced round by round by the input's (`IkeSa::fuzz_eap_replace`) and sealed with
//!   the live keys, so they pass the ICV and reach the other side's EAP code inside
//!   IKE_AUTH. Both sides must reach a verdict without panicking.
//! * mode & 3 == 2: the EAP-TLS peer (rustls client) alone, every packet handed in as a
//!   gateway's request, many rounds deep (fragments, acknowledgements, TLS records).
//! * mode & 3 == 3: an authenticator alone, every packet a peer's response: mode & 4, the
//!   EAP-TLS gateway (rustls server, fragments, acknowledgements, TLS records; it asks for
//!   the EAP identity with mode & 8), else the EAP-MSCHAPv2 one.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use mifsec_control::ike::auth::cert::certs_from_pem_or_der;
use mifsec_control::ike::auth::eap::{EapMethod, EapPeer, EapServer, PeerStep, ServerStep};
use mifsec_control::ike::auth::eap_tls::EapTlsCreds;
use mifsec_control::ike::auth::{EapUsers, LocalAuth, PrivateKey, TrustStore};
use mifsec_control::ike::{IkeSa, sample};
use mifsec_control::wire::IdPayload;
use ring::rand::SystemRandom;
use zeroize::Zeroizing;

/// Most packets taken from one input.
pub const MAX_PACKETS: usize = 48;
const SETTLE_LIMIT: usize = 512;

/// EAP-TLS credentials: a fresh P-256 key (ring) and a stand-in certificate (rustls does
/// not parse our own certificate; the gateway's is what gets checked).
pub fn tls_creds() -> Arc<EapTlsCreds> {
    static C: OnceLock<Arc<EapTlsCreds>> = OnceLock::new();
    C.get_or_init(|| {
        let rng = SystemRandom::new();
        let pkcs8 = ring::signature::EcdsaKeyPair::generate_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            &rng,
        )
        .expect("key");
        let key = PrivateKey::from_pem_or_der(pkcs8.as_ref()).expect("key");
        Arc::new(EapTlsCreds {
            key: Arc::new(key),
            certs: vec![vec![0x30, 0x03, 0x02, 0x01, 0x00]],
            trust: Arc::new(TrustStore::new(&[], &[], &[]).expect("store")),
        })
    })
    .clone()
}

/// A CA certificate (made once by strongSwan's `pki`, good until 2056): the EAP-TLS
/// gateway's client certificate verifier needs a trust anchor to start at all.
const FUZZ_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBbTCCARKgAwIBAgIIY9xukMfrWRUwCgYIKoZIzj0EAwIwGTEXMBUGA1UEAxMO
bWlmc2VjIGZ1enogQ0EwIBcNMjYxMjAyMDUxMjA0WhgPMjA1NjExMjQwNTEyMDRa
MBkxFzAVBgNVBAMTDm1pZnNlYyBmdXp6IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0D
AQcDQgAEu1U7xOcpwI7jqsBsjqwZqnPlnBJnZ5b7Mq/FdODdtIBQr6w35lRYTAdN
kW+BMgVSZAF80HKQobF0kR4xAA/bpKNCMEAwDwYDVR0TAQH/BAUwAwEB/zAOBgNV
HQ8BAf8EBAMCAQYwHQYDVR0OBBYEFJDIxj0o9vgWSEwQBHxHZZime8gBMAoGCCqG
SM49BAMCA0kAMEYCIQDMoiChqgZgfyrYITRFrmHd/BH8AXvHCFOXNQ6/3lblTAIh
AL/gHcaJ13ZTZ/ikggLOZEp6qftdgcuS3QuApLZZ3hAz
-----END CERTIFICATE-----
";

/// The EAP-TLS gateway's credentials: [`tls_creds`]' key and stand-in certificate, the
/// client certificates checked against [`FUZZ_CA`].
pub fn tls_server_creds() -> Arc<EapTlsCreds> {
    static C: OnceLock<Arc<EapTlsCreds>> = OnceLock::new();
    C.get_or_init(|| {
        let base = tls_creds();
        let ca = certs_from_pem_or_der(FUZZ_CA.as_bytes()).expect("CA");
        Arc::new(EapTlsCreds {
            key: Arc::clone(&base.key),
            certs: base.certs.clone(),
            trust: Arc::new(TrustStore::new(&ca, &[], &[]).expect("store")),
        })
    })
    .clone()
}

/// The input's packets.
pub fn packets(mut b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while b.len() >= 2 && out.len() < MAX_PACKETS {
        let n = usize::from(u16::from_le_bytes([b[0], b[1]])).min(b.len() - 2);
        out.push(b[2..2 + n].to_vec());
        b = &b[2 + n..];
    }
    out
}

/// Encodes packets as [`packets`] reads them.
pub fn encode(mode: u8, list: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![mode];
    for p in list {
        out.extend_from_slice(&(p.len() as u16).to_le_bytes());
        out.extend_from_slice(p);
    }
    out
}

fn settle(a: &mut IkeSa, b: &mut IkeSa, now: Instant) {
    for _ in 0..SETTLE_LIMIT {
        let mut moved = false;
        while let Some(t) = a.poll_transmit() {
            b.handle_datagram(now, t.remote, t.local, &t.bytes);
            moved = true;
        }
        while let Some(t) = b.poll_transmit() {
            a.handle_datagram(now, t.remote, t.local, &t.bytes);
            moved = true;
        }
        while a.poll_event().is_some() {}
        while b.poll_event().is_some() {}
        if !moved {
            return;
        }
    }
    panic!("the peers did not settle: an endless exchange");
}

fn ike_route(mode: u8, list: Vec<Vec<u8>>) {
    let now = Instant::now();
    let (Ok(a), Ok(b)) = (
        "198.18.0.1:500".parse::<SocketAddr>(),
        "198.18.0.2:500".parse::<SocketAddr>(),
    ) else {
        return;
    };
    let mut c = sample::eap_client();
    if mode & 4 != 0 {
        c.local_auth = LocalAuth::Eap {
            method: EapMethod::Tls,
            identity: None,
            secret: Zeroizing::default(),
            tls: Some(tls_creds()),
        };
    }
    let Ok(mut init) = IkeSa::initiate(c, now, a, b) else {
        return;
    };
    let mut resp = IkeSa::respond(sample::eap_gateway());
    // Rounds are the IKE_AUTH message IDs: 1 is the gateway's first EAP request.
    let rounds: Vec<(u32, Vec<u8>)> = list
        .into_iter()
        .enumerate()
        .map(|(i, p)| (i as u32 + 1, p))
        .collect();
    if mode & 1 != 0 {
        init.fuzz_eap_replace(rounds);
    } else {
        resp.fuzz_eap_replace(rounds);
    }
    settle(&mut init, &mut resp, now);
    // Time runs out: both sides reach a verdict.
    for s in [1, 10, 100, 600] {
        let t = now + Duration::from_secs(s);
        init.handle_timeout(t);
        resp.handle_timeout(t);
        settle(&mut init, &mut resp, t);
    }
}

fn tls_peer(list: Vec<Vec<u8>>) {
    let rng = SystemRandom::new();
    let Ok(mut peer) = EapPeer::tls(b"cl".to_vec(), &tls_creds()) else {
        return;
    };
    peer.set_server_id(&IdPayload::fqdn("gw"));
    for p in list {
        match peer.process(&p, &rng) {
            Ok(PeerStep::Respond(r)) => assert!(r.len() <= 4096, "an EAP response too long"),
            Ok(PeerStep::Success(_)) | Err(_) => return,
        }
    }
}

fn mschapv2_server(list: Vec<Vec<u8>>) {
    let rng = SystemRandom::new();
    let mut users = EapUsers::default();
    users.add(
        vec![b"carol".to_vec()],
        Zeroizing::new(b"carol's password".to_vec()),
    );
    let Ok((mut srv, _)) =
        EapServer::start(EapMethod::Mschapv2, Arc::new(users), true, b"cl", &rng)
    else {
        return;
    };
    for p in list {
        match srv.process(&p, &rng) {
            Ok(ServerStep::Request(_)) => {}
            Ok(ServerStep::Success { .. }) | Err(_) => return,
        }
    }
}

fn tls_server(mode: u8, list: Vec<Vec<u8>>) {
    let rng = SystemRandom::new();
    let Ok((mut srv, first)) = EapServer::start_tls(
        tls_server_creds(),
        mode & 8 != 0,
        &IdPayload::fqdn("cl"),
        mode & 16 != 0,
        &rng,
    ) else {
        return;
    };
    // Each packet answers the last request: its identifier is made the request's (it is
    // random), so that the input gets past that check to the EAP-TLS code.
    let mut id = first[1];
    for mut p in list {
        if let Some(b) = p.get_mut(1) {
            *b = id;
        }
        match srv.process(&p, &rng) {
            Ok(ServerStep::Request(r)) => {
                assert!(r.len() <= 4096, "an EAP request too long");
                id = r[1];
            }
            Ok(ServerStep::Success { .. }) | Err(_) => return,
        }
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let list = packets(rest);
    match mode & 3 {
        0 | 1 => ike_route(mode, list),
        2 => tls_peer(list),
        _ if mode & 4 != 0 => tls_server(mode, list),
        _ => mschapv2_server(list),
    }
}
