//! EAP in the two-peer harness (RFC 7296 section 2.16): the mifsec client with
//! EAP-MSCHAPv2 against the mifsec gateway, with and without EAP-Identity, a gateway with
//! a certificate, the loss of every message; and every bad input refused with
//! AUTHENTICATION_FAILED and a reason that says why (the daemon logs the reason's text):
//! wrong password, unknown user, garbage EAP packets either way, an unexpected EAP type, a
//! client whose gateway leaves its AUTH out for a method that is not mutual. EAP-TLS with
//! both sides mifsec: established (the TLS certificates and version both sides report), a
//! client certificate of an unknown CA or one that does not name the identity checked,
//! refused by the gateway with a TLS alert, then EAP-Failure and AUTHENTICATION_FAILED.

use std::collections::BTreeSet;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use zeroize::Zeroizing;

use super::{Faults, Harness, LIMIT};
use crate::ike::auth::eap::{EapError, EapMethod, TYPE_MD5};
use crate::ike::auth::{AuthError, EapUsers, LocalAuth, PrivateKey, RemoteAuth, TrustStore};
use crate::ike::sa::FailReason;
use crate::ike::sample::{EAP_USER, eap_client, eap_gateway};
use crate::wire::{ExchangeType, IdPayload, NotifyType, Payload};

fn auth_failed(e: AuthError) -> Option<FailReason> {
    Some(FailReason::AuthenticationFailed(e))
}

/// The inner payloads of every IKE_AUTH message the sides opened, in order.
fn opened_auth() -> Vec<Vec<Payload>> {
    crate::ike::sa::OPENED.with(|o| {
        o.borrow()
            .iter()
            .filter(|(t, _)| *t == ExchangeType::IkeAuth)
            .map(|(_, p)| p.clone())
            .collect()
    })
}

#[test]
fn mschapv2_client_and_gateway() {
    crate::ike::sa::OPENED.with(|o| o.borrow_mut().clear());
    let mut h = Harness::new(eap_client(), eap_gateway(), Faults::default());
    h.run(LIMIT);
    h.assert_established();
    let ii = Harness::info(&h.init_events).unwrap();
    let ri = Harness::info(&h.resp_events).unwrap();
    assert_eq!(
        (ii.local_auth, ii.local_eap_id.as_deref()),
        ("eap-mschapv2", Some("carol"))
    );
    assert_eq!(ii.remote_auth.method, "psk");
    assert_eq!(ri.remote_auth.method, "eap-mschapv2");
    assert_eq!(ri.remote_auth.eap_identity.as_deref(), Some("carol"));
    assert_eq!(ri.remote_id, IdPayload::rfc822("alice@example.org"));
    // IKE_SA_INIT, then IKE_AUTH: no AUTH; IDr AUTH EAP(Identity); EAP; EAP(challenge);
    // EAP; EAP(success request); EAP; EAP-Success; AUTH; AUTH + child.
    let auth = opened_auth();
    assert_eq!(auth.len(), 10, "{auth:#?}");
    assert!(!auth[0].iter().any(|p| matches!(p, Payload::Auth(_))));
    assert!(auth[0].iter().any(
        |p| matches!(p, Payload::Notify(n) if n.notify_type == NotifyType::EapOnlyAuthentication)
    ));
    assert!(auth[1].iter().any(|p| matches!(p, Payload::Auth(_))));
    assert!(
        auth[1]
            .iter()
            .any(|p| matches!(p, Payload::Eap(e) if e[0] == 1 && e[4] == 1))
    );
    assert!(matches!(&auth[7][..], [Payload::Eap(e)] if e.len() == 4 && e[0] == 3));
    assert!(matches!(&auth[8][..], [Payload::Auth(_)]));
    assert!(auth[9].iter().any(|p| matches!(p, Payload::Auth(_))));
    assert!(auth[9].iter().any(|p| matches!(p, Payload::Sa(_))));
    // Established with the next Message IDs: a rekey works on both sides afterwards.
    assert!(h.init.rekey_ike(h.now));
    h.run(LIMIT);
    assert!(h.init.is_established() && h.resp.is_established());
}

#[test]
fn mschapv2_without_eap_identity() {
    // The gateway takes the IKE identity as the EAP identity (no remote.eap_id); the
    // client's user is its IKE identity (no local.eap_id).
    let mut c = eap_client();
    if let LocalAuth::Eap { identity, .. } = &mut c.local_auth {
        *identity = None;
    }
    let mut g = eap_gateway();
    let mut users = EapUsers::default();
    users.add(
        vec![b"alice@example.org".to_vec()],
        Zeroizing::new(b"alice's password".to_vec()),
    );
    g.remote_auth = RemoteAuth::Eap {
        method: EapMethod::Mschapv2,
        users: Arc::new(users),
        ask_identity: false,
        tls: None,
        tls13_indication: false,
    };
    if let LocalAuth::Eap { secret, .. } = &mut c.local_auth {
        *secret = Zeroizing::new(b"alice's password".to_vec());
    }
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    h.assert_established();
    let ri = Harness::info(&h.resp_events).unwrap();
    assert_eq!(
        ri.remote_auth.eap_identity.as_deref(),
        Some("alice@example.org")
    );
}

#[test]
fn loss_of_each_eap_message_is_recovered() {
    // Datagrams 2..=11 are the ten IKE_AUTH messages.
    for lost in 2..12 {
        let faults = Faults {
            drop: BTreeSet::from([lost]),
            ..Faults::default()
        };
        let mut h = Harness::new(eap_client(), eap_gateway(), faults);
        h.run(LIMIT);
        h.assert_established();
        assert_eq!(h.init.stats().retransmitted, 1, "lost {lost}");
        let cached = u64::from(lost % 2 == 1);
        assert_eq!(h.resp.stats().answered_from_cache, cached, "lost {lost}");
    }
}

#[test]
fn gateway_with_certificate() {
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "eap CA");
    let ca = p.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::DnsName("gw.example.org".try_into().unwrap())];
    p.distinguished_name.push(DnType::CommonName, "gw");
    let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
    let mut g = eap_gateway();
    g.local_auth = LocalAuth::Pubkey {
        key: Arc::new(PrivateKey::from_pem_or_der(&key.serialize_der()).unwrap()),
        certs: vec![cert.der().to_vec()],
        rsa_pss: false,
    };
    let mut c = eap_client();
    let store = TrustStore::new(&[ca.der().to_vec()], &[], &[]).unwrap();
    c.remote_auth = RemoteAuth::Pubkey(Arc::new(store));
    let mut h = Harness::new(c.clone(), g.clone(), Faults::default());
    h.run(LIMIT);
    h.assert_established();
    let ii = Harness::info(&h.init_events).unwrap();
    assert_eq!(ii.remote_auth.method, "pubkey");
    assert_eq!(ii.remote_auth.subject.as_deref(), Some("CN=gw"));
    assert_eq!(ii.local_auth, "eap-mschapv2");

    // A gateway certificate of an unknown CA: refused before any EAP is answered.
    c.remote_auth = RemoteAuth::Pubkey(Arc::new(
        TrustStore::new(&[cert.der().to_vec()], &[], &[]).unwrap(),
    ));
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    assert_eq!(
        Harness::failure(&h.init_events),
        auth_failed(AuthError::UnknownCa)
    );
    assert!(h.init.is_dead());
}

type Rewrite = fn(u32, Vec<u8>) -> Vec<u8>;

/// Runs a handshake that must fail: (the gateway's reason, the client's reason).
fn refused(
    c: crate::ike::config::IkeConfig,
    g: crate::ike::config::IkeConfig,
    client_out: Option<Rewrite>,
    gateway_out: Option<Rewrite>,
) -> (Option<FailReason>, Option<FailReason>) {
    let pool = g.pools[0].clone();
    let mut h = Harness::new(c, g, Faults::default());
    if let Some(f) = client_out {
        h.init.set_test_eap_out(f);
    }
    if let Some(f) = gateway_out {
        h.resp.set_test_eap_out(f);
    }
    h.run(LIMIT);
    assert!(Harness::child(&h.init_events).is_none());
    assert!(Harness::child(&h.resp_events).is_none());
    assert!(h.init.is_dead(), "{:?}", h.init_events);
    assert!(h.resp.is_dead(), "{:?}", h.resp_events);
    assert_eq!(pool.leased(), 0);
    (
        Harness::failure(&h.resp_events),
        Harness::failure(&h.init_events),
    )
}

#[test]
fn wrong_password_and_unknown_user() {
    let peer_told = Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed));
    let mut c = eap_client();
    if let LocalAuth::Eap { secret, .. } = &mut c.local_auth {
        *secret = Zeroizing::new(b"not carol's password".to_vec());
    }
    let (g, i) = refused(c, eap_gateway(), None, None);
    assert_eq!(g, auth_failed(AuthError::Eap(EapError::WrongPassword)));
    assert_eq!(
        g.unwrap().to_string(),
        "peer authentication failed: EAP-MSCHAPv2 wrong password or unknown user"
    );
    assert_eq!(i, peer_told);

    let mut c = eap_client();
    if let LocalAuth::Eap { identity, .. } = &mut c.local_auth {
        *identity = Some(b"mallory".to_vec());
    }
    let (g, i) = refused(c, eap_gateway(), None, None);
    assert_eq!(g, auth_failed(AuthError::Eap(EapError::WrongPassword)));
    assert_eq!(i, peer_told);
    assert_eq!(EAP_USER, "carol");
}

#[test]
fn garbage_and_unexpected_eap_packets() {
    let peer_told = Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed));
    // The client's EAP responses cut short, with a Length that lies, of another type.
    let cut: fn(u32, Vec<u8>) -> Vec<u8> = |_, mut p| {
        p.truncate(3);
        p
    };
    let (g, i) = refused(eap_client(), eap_gateway(), Some(cut), None);
    assert_eq!(g, auth_failed(AuthError::Eap(EapError::Malformed)));
    assert_eq!(
        g.unwrap().to_string(),
        "peer authentication failed: malformed EAP packet"
    );
    assert_eq!(i, peer_told);
    let lie: fn(u32, Vec<u8>) -> Vec<u8> = |_, mut p| {
        p[3] = p[3].wrapping_add(1);
        p
    };
    let (g, _) = refused(eap_client(), eap_gateway(), Some(lie), None);
    assert_eq!(g, auth_failed(AuthError::Eap(EapError::Malformed)));
    let md5: fn(u32, Vec<u8>) -> Vec<u8> = |_, mut p| {
        p[4] = TYPE_MD5;
        p
    };
    let (g, i) = refused(eap_client(), eap_gateway(), Some(md5), None);
    assert_eq!(
        g,
        auth_failed(AuthError::Eap(EapError::UnexpectedType(TYPE_MD5)))
    );
    assert_eq!(
        g.unwrap().to_string(),
        "peer authentication failed: unexpected EAP type 4"
    );
    assert_eq!(i, peer_told);
    // The MS-CHAPv2 response's fields damaged (its MS-Length).
    let ms: fn(u32, Vec<u8>) -> Vec<u8> = |round, mut p| {
        if round == 2 {
            p[8] ^= 0x40;
        }
        p
    };
    let (g, _) = refused(eap_client(), eap_gateway(), Some(ms), None);
    assert_eq!(g, auth_failed(AuthError::Eap(EapError::BadMethodData)));

    // The gateway's: garbage first request; a forged authenticator response (S=); an
    // MD5 challenge after the Nak.
    let (_, i) = refused(eap_client(), eap_gateway(), None, Some(cut));
    assert_eq!(i, auth_failed(AuthError::Eap(EapError::Malformed)));
    let forged: fn(u32, Vec<u8>) -> Vec<u8> = |round, mut p| {
        if round == 3 {
            // "S=" + 40 hex digits starts at 9; flip one digit.
            p[11] = if p[11] == b'0' { b'1' } else { b'0' };
        }
        p
    };
    let (_, i) = refused(eap_client(), eap_gateway(), None, Some(forged));
    assert_eq!(
        i,
        auth_failed(AuthError::Eap(EapError::ServerNotAuthenticated))
    );
    assert_eq!(
        i.unwrap().to_string(),
        "peer authentication failed: EAP-MSCHAPv2 authenticator response did not verify"
    );
    let md5_req: fn(u32, Vec<u8>) -> Vec<u8> =
        |_, p| crate::ike::auth::eap::build(1, p[1], Some(TYPE_MD5), &[16; 17]);
    let (g, i) = refused(eap_client(), eap_gateway(), None, Some(md5_req));
    // The client answers with a Nak (it speaks MS-CHAPv2 only), which ends it at the
    // gateway.
    assert_eq!(g, auth_failed(AuthError::Eap(EapError::Nak)));
    assert_eq!(i, peer_told);
}

#[test]
fn eap_refused_where_not_configured() {
    // A PSK gateway gets an IKE_AUTH without AUTH.
    let (g, i) = refused(eap_client(), crate::ike::sample::gateway(), None, None);
    assert_eq!(g, auth_failed(AuthError::EapNotConfigured));
    assert_eq!(
        i,
        Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed))
    );
    // An EAP gateway gets a PSK AUTH.
    let (g, _) = refused(crate::ike::sample::client(), eap_gateway(), None, None);
    assert_eq!(g, auth_failed(AuthError::MethodNotAllowed));
    // An EAP gateway with remote.id that the client's IKE identity is not.
    let mut gw = eap_gateway();
    gw.remote_id = Some(IdPayload::rfc822("bob@example.org"));
    let (g, _) = refused(eap_client(), gw, None, None);
    assert_eq!(g, auth_failed(AuthError::WrongId));
}

/// A CA and credentials it issued: (CA DER, the creds of `name` trusting `trusted`).
fn tls_creds(
    issuer: &(rcgen::Certificate, KeyPair),
    name: &str,
    trusted: &[u8],
) -> crate::ike::auth::eap_tls::EapTlsCreds {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::DnsName(name.try_into().unwrap())];
    p.distinguished_name.push(DnType::CommonName, name);
    let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
    crate::ike::auth::eap_tls::EapTlsCreds {
        key: Arc::new(PrivateKey::from_pem_or_der(&key.serialize_der()).unwrap()),
        certs: vec![cert.der().to_vec()],
        trust: Arc::new(TrustStore::new(&[trusted.to_vec()], &[], &[]).unwrap()),
    }
}

fn tls_ca(name: &str) -> (rcgen::Certificate, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    (p.self_signed(&key).unwrap(), key)
}

/// The mifsec client with EAP-TLS (EAP identity `cl`, its certificate of `client_ca`) and
/// the mifsec gateway with its certificate (IKE and TLS), both of `lab`.
fn tls_pair(
    lab: &(rcgen::Certificate, KeyPair),
    client_ca: &(rcgen::Certificate, KeyPair),
    ask_identity: bool,
) -> (crate::ike::config::IkeConfig, crate::ike::config::IkeConfig) {
    let ca = lab.0.der().to_vec();
    let gw = tls_creds(lab, "gw.example.org", &ca);
    let cl = tls_creds(client_ca, "cl", &ca);
    let mut c = eap_client();
    c.local_auth = LocalAuth::Eap {
        method: EapMethod::Tls,
        identity: Some(b"cl".to_vec()),
        secret: Zeroizing::default(),
        tls: Some(Arc::new(cl)),
    };
    c.remote_auth = RemoteAuth::Pubkey(Arc::clone(&gw.trust));
    let mut g = eap_gateway();
    g.local_auth = LocalAuth::Pubkey {
        key: Arc::clone(&gw.key),
        certs: gw.certs.clone(),
        rsa_pss: false,
    };
    g.remote_auth = RemoteAuth::Eap {
        method: EapMethod::Tls,
        users: Arc::new(EapUsers::default()),
        ask_identity,
        tls: Some(Arc::new(gw)),
        tls13_indication: false,
    };
    (c, g)
}

#[test]
fn tls_client_and_gateway() {
    let lab = tls_ca("lab");
    let (c, g) = tls_pair(&lab, &lab, true);
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    h.assert_established();
    let ii = Harness::info(&h.init_events).unwrap();
    let ri = Harness::info(&h.resp_events).unwrap();
    assert_eq!(ii.local_auth, "eap-tls");
    assert_eq!(ii.remote_auth.method, "pubkey");
    assert_eq!(
        ii.remote_auth.tls_subject,
        Some(("CN=gw.example.org".to_string(), "TLS 1.3"))
    );
    assert_eq!(ri.remote_auth.method, "eap-tls");
    assert_eq!(ri.remote_auth.eap_identity.as_deref(), Some("cl"));
    assert_eq!(
        ri.remote_auth.tls_subject,
        Some(("CN=cl".to_string(), "TLS 1.3"))
    );
    // Without EAP-Identity the certificate must name the IKE identity, which it does not.
    let (c, g) = tls_pair(&lab, &lab, false);
    let (g, i) = refused(c, g, None, None);
    assert_eq!(
        g,
        auth_failed(AuthError::Eap(EapError::TlsClientCert(
            "the client's identity is not in the certificate (subject or subjectAltName)"
        )))
    );
    // The client acknowledged our alert; EAP-Failure and AUTHENTICATION_FAILED followed.
    assert_eq!(
        i,
        Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed))
    );
}

#[test]
fn tls_client_of_unknown_ca_is_refused() {
    let (lab, other) = (tls_ca("lab"), tls_ca("other"));
    let (c, g) = tls_pair(&lab, &other, true);
    let (g, i) = refused(c, g, None, None);
    assert_eq!(
        g,
        auth_failed(AuthError::Eap(EapError::TlsClientCert("unknown CA")))
    );
    assert_eq!(
        g.unwrap().to_string(),
        "peer authentication failed: EAP-TLS: client's TLS certificate refused: unknown CA"
    );
    assert_eq!(
        i,
        Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed))
    );
}
