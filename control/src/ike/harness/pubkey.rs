//! Signature authentication in the two-peer harness: certificates made here with rcgen
//! (RSA keys by openssl, which ring cannot generate), both sides or one, every key type,
//! chains with an intermediate, raw public keys, CERTREQ; and every bad input refused with
//! AUTHENTICATION_FAILED and a reason that says why (the daemon logs the reason's text).

use std::process::Command;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    SignatureAlgorithm,
};
use zeroize::Zeroizing;

use super::{Faults, Harness, LIMIT, client, gateway};
use crate::ike::auth::cert::key_hash;
use crate::ike::auth::{AuthError, KeyKind, LocalAuth, PrivateKey, RemoteAuth, TrustStore};
use crate::ike::config::IkeConfig;
use crate::ike::sa::FailReason;
use crate::wire::{CertEncoding, CertPayload, Message, NotifyType, Payload};

/// A CA: its key and self-signed certificate.
struct Ca {
    key: KeyPair,
    cert: rcgen::Certificate,
}

fn key_for(alg: &'static SignatureAlgorithm) -> KeyPair {
    if alg == &rcgen::PKCS_RSA_SHA256 {
        let out = Command::new("openssl")
            .args([
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ])
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl genpkey failed");
        let pem = String::from_utf8(out.stdout).unwrap();
        return KeyPair::from_pkcs8_pem_and_sign_algo(&pem, alg).unwrap();
    }
    KeyPair::generate_for(alg).unwrap()
}

fn ca(name: &str) -> Ca {
    ca_signed_by(name, None)
}

fn ca_signed_by(name: &str, parent: Option<&Ca>) -> Ca {
    let key = key_for(&rcgen::PKCS_ECDSA_P256_SHA256);
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2090, 1, 1);
    let cert = match parent {
        None => params.self_signed(&key).unwrap(),
        Some(p) => params.signed_by(&key, &p.cert, &p.key).unwrap(),
    };
    Ca { key, cert }
}

/// How a test end-entity certificate differs from a good one.
struct Leaf {
    alg: &'static SignatureAlgorithm,
    sans: Vec<SanType>,
    from: (i32, u8, u8),
    until: (i32, u8, u8),
    eku: Vec<ExtendedKeyUsagePurpose>,
}

impl Leaf {
    fn new(alg: &'static SignatureAlgorithm, san: SanType) -> Leaf {
        Leaf {
            alg,
            sans: vec![san],
            from: (2020, 1, 1),
            until: (2089, 1, 1),
            eku: Vec::new(),
        }
    }

    /// (certificate DER, PKCS#8 key DER).
    fn issue(&self, ca: &Ca, cn: &str) -> (Vec<u8>, Vec<u8>) {
        let key = key_for(self.alg);
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = self.sans.clone();
        p.distinguished_name.push(DnType::CommonName, cn);
        p.not_before = rcgen::date_time_ymd(self.from.0, self.from.1, self.from.2);
        p.not_after = rcgen::date_time_ymd(self.until.0, self.until.1, self.until.2);
        p.extended_key_usages = self.eku.clone();
        let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
        (cert.der().to_vec(), key.serialize_der())
    }
}

fn dns(n: &str) -> SanType {
    SanType::DnsName(n.try_into().unwrap())
}

fn email(n: &str) -> SanType {
    SanType::Rfc822Name(n.try_into().unwrap())
}

fn local(cfg: &mut IkeConfig, (cert, key): (Vec<u8>, Vec<u8>), chain: &[&Ca]) {
    let mut certs = vec![cert];
    certs.extend(chain.iter().map(|c| c.cert.der().to_vec()));
    cfg.local_auth = LocalAuth::Pubkey {
        key: Arc::new(PrivateKey::from_pem_or_der(&key).unwrap()),
        certs,
        rsa_pss: false,
    };
}

fn trust(cfg: &mut IkeConfig, cas: &[&Ca]) {
    let ders: Vec<Vec<u8>> = cas.iter().map(|c| c.cert.der().to_vec()).collect();
    cfg.remote_auth = RemoteAuth::Pubkey(Arc::new(TrustStore::new(&ders, &[], &[]).unwrap()));
}

/// A client (alice@example.org) and gateway (gw.example.org) with certificates of `alg`
/// from one CA, each trusting it.
fn pair(ca: &Ca, alg: &'static SignatureAlgorithm) -> (IkeConfig, IkeConfig) {
    let (mut c, mut g) = (client(), gateway());
    local(
        &mut c,
        Leaf::new(alg, email("alice@example.org")).issue(ca, "alice"),
        &[],
    );
    local(
        &mut g,
        Leaf::new(alg, dns("gw.example.org")).issue(ca, "gw"),
        &[],
    );
    trust(&mut c, &[ca]);
    trust(&mut g, &[ca]);
    (c, g)
}

impl Harness {
    /// The initiator's IKE_AUTH request, opened (sent whole: the tests that look at it
    /// turn fragmentation off).
    fn init_auth_request(&self) -> Vec<Payload> {
        self.resp
            .open_test_message(&self.log[2].1)
            .expect("IKE_AUTH request, unfragmented")
    }
}

/// The pair without IKE fragmentation, so that IKE_AUTH is one datagram.
fn whole((mut c, mut g): (IkeConfig, IkeConfig)) -> (IkeConfig, IkeConfig) {
    c.fragmentation = false;
    g.fragmentation = false;
    (c, g)
}

fn run(c: IkeConfig, g: IkeConfig) -> Harness {
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    h
}

/// The responder refused the initiator with `why`, and told it AUTHENTICATION_FAILED;
/// the text the daemon logs names the reason.
fn assert_refused_by_responder(h: &Harness, why: AuthError, text: &str) {
    let r = Harness::failure(&h.resp_events);
    assert_eq!(
        r,
        Some(FailReason::AuthenticationFailed(why)),
        "{:?}",
        h.resp_events
    );
    assert_eq!(
        r.unwrap().to_string(),
        format!("peer authentication failed: {text}")
    );
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed))
    );
    assert!(Harness::child(&h.resp_events).is_none());
    assert!(h.init.is_dead() && h.resp.is_dead());
}

#[test]
fn certificates_on_both_sides_every_key_type() {
    let ca = ca("mifsec test CA");
    for (alg, kind) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, KeyKind::EcdsaP256),
        (&rcgen::PKCS_ECDSA_P384_SHA384, KeyKind::EcdsaP384),
        (&rcgen::PKCS_ED25519, KeyKind::Ed25519),
        (&rcgen::PKCS_RSA_SHA256, KeyKind::Rsa),
    ] {
        let (c, g) = whole(pair(&ca, alg));
        let h = run(c, g);
        h.assert_established();
        let ii = Harness::info(&h.init_events).unwrap();
        let ri = Harness::info(&h.resp_events).unwrap();
        assert_eq!((ii.local_auth, ri.local_auth), ("pubkey", "pubkey"));
        assert_eq!(ii.remote_auth.method, "pubkey");
        assert_eq!(
            ii.remote_auth.key.as_deref(),
            Some(kind.to_string().as_str())
        );
        assert_eq!(ii.remote_auth.subject.as_deref(), Some("CN=gw"));
        assert_eq!(ii.remote_auth.ca.as_deref(), Some("CN=mifsec test CA"));
        assert_eq!(ri.remote_auth.subject.as_deref(), Some("CN=alice"));
        // The IKE_AUTH request carried the client's CERT and an RFC 7427 AUTH.
        let auth = h.init_auth_request();
        assert!(
            auth.iter().any(
                |p| matches!(p, Payload::Cert(c) if c.encoding == CertEncoding::X509Signature)
            )
        );
        assert!(auth.iter().any(|p| matches!(p, Payload::Auth(a) if a.method == crate::wire::AuthMethod::DigitalSignature)));
    }
}

#[test]
fn rsa_pss_signatures() {
    let ca = ca("mifsec test CA");
    let (mut c, mut g) = whole(pair(&ca, &rcgen::PKCS_RSA_SHA256));
    for cfg in [&mut c, &mut g] {
        if let LocalAuth::Pubkey { rsa_pss, .. } = &mut cfg.local_auth {
            *rsa_pss = true;
        }
    }
    let h = run(c, g);
    h.assert_established();
    let auth = h.init_auth_request();
    let data = auth
        .iter()
        .find_map(|p| match p {
            Payload::Auth(a) => Some(a.data.clone()),
            _ => None,
        })
        .unwrap();
    let n = usize::from(data[0]);
    assert_eq!(
        crate::ike::auth::Scheme::from_algorithm_identifier(&data[1..1 + n]),
        Ok(crate::ike::auth::Scheme::RsaPssSha256)
    );
}

#[test]
fn chain_with_an_intermediate_ca() {
    let root = ca("root");
    let mid = ca_signed_by("intermediate", Some(&root));
    let (mut c, mut g) = (client(), gateway());
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    local(
        &mut c,
        Leaf::new(alg, email("alice@example.org")).issue(&mid, "alice"),
        &[&mid],
    );
    local(
        &mut g,
        Leaf::new(alg, dns("gw.example.org")).issue(&mid, "gw"),
        &[&mid],
    );
    trust(&mut c, &[&root]);
    trust(&mut g, &[&root]);
    let h = run(c, g);
    h.assert_established();
    let ii = Harness::info(&h.init_events).unwrap();
    assert_eq!(ii.remote_auth.ca.as_deref(), Some("CN=root"));
}

#[test]
fn gateway_certificate_client_psk() {
    let ca = ca("mifsec test CA");
    let (mut c, mut g) = (client(), gateway());
    local(
        &mut g,
        Leaf::new(&rcgen::PKCS_ECDSA_P256_SHA256, dns("gw.example.org")).issue(&ca, "gw"),
        &[],
    );
    trust(&mut c, &[&ca]);
    let h = run(c, g);
    h.assert_established();
    assert_eq!(
        Harness::info(&h.init_events).unwrap().remote_auth.method,
        "pubkey"
    );
    assert_eq!(
        Harness::info(&h.resp_events).unwrap().remote_auth.method,
        "psk"
    );
}

#[test]
fn certreq_names_our_ca_key() {
    let ca = ca("mifsec test CA");
    let (c, g) = whole(pair(&ca, &rcgen::PKCS_ECDSA_P256_SHA256));
    let h = run(c, g);
    h.assert_established();
    let hash = key_hash(ca.cert.der()).unwrap().to_vec();
    // In the responder's IKE_SA_INIT response, in the clear.
    let resp = Message::parse(&h.log[1].1).unwrap();
    let want = Payload::CertReq(CertPayload {
        encoding: CertEncoding::X509Signature,
        data: hash.clone(),
    });
    assert!(resp.payloads.contains(&want), "{:?}", resp.payloads);
    // And in the initiator's IKE_AUTH request.
    assert!(h.init_auth_request().contains(&want));
}

#[test]
fn raw_public_keys_without_a_ca() {
    let ca = ca("unused");
    let (mut c, mut g) = (client(), gateway());
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let (_, ck) = Leaf::new(alg, email("alice@example.org")).issue(&ca, "alice");
    let (_, gk) = Leaf::new(alg, dns("gw.example.org")).issue(&ca, "gw");
    let ck = Arc::new(PrivateKey::from_pem_or_der(&ck).unwrap());
    let gk = Arc::new(PrivateKey::from_pem_or_der(&gk).unwrap());
    c.local_auth = LocalAuth::Pubkey {
        key: ck.clone(),
        certs: Vec::new(),
        rsa_pss: false,
    };
    g.local_auth = LocalAuth::Pubkey {
        key: gk.clone(),
        certs: Vec::new(),
        rsa_pss: false,
    };
    c.remote_auth = RemoteAuth::Pubkey(Arc::new(TrustStore::new(&[], &[], &[gk.spki()]).unwrap()));
    g.remote_auth = RemoteAuth::Pubkey(Arc::new(TrustStore::new(&[], &[], &[ck.spki()]).unwrap()));
    let h = run(c, g);
    h.assert_established();
    let ri = Harness::info(&h.resp_events).unwrap();
    assert_eq!(
        (ri.remote_auth.method, ri.remote_auth.subject.clone()),
        ("pubkey", None)
    );

    // A key that is not the configured one.
    let (mut c, mut g) = (client(), gateway());
    let (_, other) = Leaf::new(alg, email("x@example.org")).issue(&ca, "x");
    let other = Arc::new(PrivateKey::from_pem_or_der(&other).unwrap());
    c.local_auth = LocalAuth::Pubkey {
        key: other,
        certs: Vec::new(),
        rsa_pss: false,
    };
    g.remote_auth = RemoteAuth::Pubkey(Arc::new(TrustStore::new(&[], &[], &[ck.spki()]).unwrap()));
    let h = run(c, g);
    assert_refused_by_responder(
        &h,
        AuthError::NoRawKeySigned,
        "signature made by none of the trusted raw public keys (remote.pubkeys)",
    );
}

#[test]
fn expired_and_not_yet_valid_certificates_are_refused() {
    let ca = ca("mifsec test CA");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let mut leaf = Leaf::new(alg, email("alice@example.org"));
    leaf.until = (2021, 1, 1);
    let (mut c, g) = pair(&ca, alg);
    local(&mut c, leaf.issue(&ca, "alice"), &[]);
    assert_refused_by_responder(&run(c, g), AuthError::CertExpired, "certificate expired");

    let mut leaf = Leaf::new(alg, email("alice@example.org"));
    leaf.from = (2080, 1, 1);
    let (mut c, g) = pair(&ca, alg);
    local(&mut c, leaf.issue(&ca, "alice"), &[]);
    assert_refused_by_responder(
        &run(c, g),
        AuthError::CertNotYetValid,
        "certificate not yet valid",
    );
}

#[test]
fn unknown_ca_is_refused() {
    let ca1 = ca("mifsec test CA");
    let other = ca("someone else's CA");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let (mut c, g) = pair(&ca1, alg);
    local(
        &mut c,
        Leaf::new(alg, email("alice@example.org")).issue(&other, "alice"),
        &[],
    );
    assert_refused_by_responder(&run(c, g), AuthError::UnknownCa, "unknown CA");
}

#[test]
fn identity_not_in_certificate_is_refused() {
    let ca = ca("mifsec test CA");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let (mut c, g) = pair(&ca, alg);
    local(
        &mut c,
        Leaf::new(alg, email("mallory@example.org")).issue(&ca, "alice"),
        &[],
    );
    assert_refused_by_responder(
        &run(c, g),
        AuthError::IdNotInCertificate,
        "identity not in certificate (subject or subjectAltName)",
    );
    // The initiator refuses a gateway whose certificate names another host.
    let (c, mut g) = pair(&ca, alg);
    local(
        &mut g,
        Leaf::new(alg, dns("evil.example.org")).issue(&ca, "gw"),
        &[],
    );
    let h = run(c, g);
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::AuthenticationFailed(
            AuthError::IdNotInCertificate
        ))
    );
    assert!(Harness::child(&h.init_events).is_none());
}

#[test]
fn wrong_remote_id_is_refused() {
    let ca = ca("mifsec test CA");
    let (c, mut g) = pair(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
    g.remote_id = Some(crate::wire::IdPayload::rfc822("bob@example.org"));
    assert_refused_by_responder(
        &run(c, g),
        AuthError::WrongId,
        "identity is not the configured remote.id",
    );
}

#[test]
fn bad_signature_is_refused() {
    // The certificate is good but the AUTH is made with another key.
    let ca = ca("mifsec test CA");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let (mut c, g) = pair(&ca, alg);
    let (cert, _) = Leaf::new(alg, email("alice@example.org")).issue(&ca, "alice");
    let (_, other_key) = Leaf::new(alg, email("alice@example.org")).issue(&ca, "alice");
    local(&mut c, (cert, other_key), &[]);
    assert_refused_by_responder(&run(c, g), AuthError::BadSignature, "bad signature");
}

#[test]
fn wrong_extended_key_usage_is_refused_ipsec_ike_accepted() {
    let ca = ca("mifsec test CA");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let mut leaf = Leaf::new(alg, email("alice@example.org"));
    leaf.eku = vec![ExtendedKeyUsagePurpose::CodeSigning];
    let (mut c, g) = pair(&ca, alg);
    local(&mut c, leaf.issue(&ca, "alice"), &[]);
    assert_refused_by_responder(
        &run(c, g),
        AuthError::WrongKeyUsage,
        "extended key usage does not allow IKE",
    );

    for eku in [
        ExtendedKeyUsagePurpose::Other(vec![1, 3, 6, 1, 5, 5, 7, 3, 17]),
        ExtendedKeyUsagePurpose::ClientAuth,
        ExtendedKeyUsagePurpose::ServerAuth,
    ] {
        let mut leaf = Leaf::new(alg, email("alice@example.org"));
        leaf.eku = vec![ExtendedKeyUsagePurpose::CodeSigning, eku];
        let (mut c, g) = pair(&ca, alg);
        local(&mut c, leaf.issue(&ca, "alice"), &[]);
        run(c, g).assert_established();
    }
}

#[test]
fn chain_too_long_is_refused() {
    let ca = ca("mifsec test CA");
    let (c, g) = pair(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
    let mut h = Harness::new(c, g, Faults::default());
    let extra = Payload::Cert(CertPayload {
        encoding: CertEncoding::X509Signature,
        data: ca.cert.der().to_vec(),
    });
    h.init.push_test_auth_payloads(vec![extra; 5]);
    h.run(LIMIT);
    assert_refused_by_responder(&h, AuthError::ChainTooLong, "certificate chain too long");
}

#[test]
fn truncated_or_garbage_cert_payloads_are_refused() {
    let ca = ca("mifsec test CA");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let (cert, key) = Leaf::new(alg, email("alice@example.org")).issue(&ca, "alice");
    for bad in [
        cert[..cert.len() / 2].to_vec(),
        b"garbage".to_vec(),
        Vec::new(),
    ] {
        let (mut c, g) = pair(&ca, alg);
        c.local_auth = LocalAuth::Pubkey {
            key: Arc::new(PrivateKey::from_pem_or_der(&key).unwrap()),
            certs: vec![bad],
            rsa_pss: false,
        };
        assert_refused_by_responder(
            &run(c, g),
            AuthError::MalformedCert,
            "truncated or garbage CERT payload",
        );
    }
}

#[test]
fn psk_where_a_signature_is_required_is_refused() {
    let ca = ca("mifsec test CA");
    let (_, mut g) = pair(&ca, &rcgen::PKCS_ECDSA_P256_SHA256);
    g.local_auth = LocalAuth::Psk(Zeroizing::new(crate::ike::sample::PSK.to_vec()));
    let mut c = client();
    c.remote_auth = RemoteAuth::Psk(Zeroizing::new(crate::ike::sample::PSK.to_vec()));
    assert_refused_by_responder(
        &run(c, g),
        AuthError::MethodNotAllowed,
        "AUTH method not allowed by remote.auth",
    );
}

#[test]
fn revoked_certificate_is_refused() {
    use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
    let ca = ca("mifsec test CA");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let key = key_for(alg);
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![email("alice@example.org")];
    p.serial_number = Some(SerialNumber::from(42u64));
    p.not_before = rcgen::date_time_ymd(2020, 1, 1);
    p.not_after = rcgen::date_time_ymd(2089, 1, 1);
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    let crl = CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2021, 1, 1),
        next_update: rcgen::date_time_ymd(2088, 1, 1),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![RevokedCertParams {
            serial_number: SerialNumber::from(42u64),
            revocation_time: rcgen::date_time_ymd(2021, 1, 1),
            reason_code: None,
            invalidity_date: None,
        }],
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&ca.cert, &ca.key)
    .unwrap();
    let (mut c, mut g) = pair(&ca, alg);
    local(&mut c, (cert.der().to_vec(), key.serialize_der()), &[]);
    let store = TrustStore::new(&[ca.cert.der().to_vec()], &[crl.der().to_vec()], &[]).unwrap();
    g.remote_auth = RemoteAuth::Pubkey(Arc::new(store));
    assert_refused_by_responder(&run(c, g), AuthError::CertRevoked, "certificate revoked");
}

/// `remote.id` as a DN: the client sends its subject as an `ID_DER_ASN1_DN` (written as
/// text, PrintableString, while rcgen's certificate has a UTF8String: strongSwan compares
/// such values byte for byte); the gateway matches it with attribute types in any case and
/// a wildcard, refuses another DN, and refuses a DN that is not the certificate's subject.
#[test]
fn remote_id_as_a_distinguished_name() {
    use crate::ike::auth::cert::parse_dn;
    use crate::wire::{IdPayload, IdType};
    let dn = |s: &str| IdPayload {
        id_type: IdType::DerAsn1Dn,
        data: parse_dn(s).unwrap(),
    };
    let ca = ca("mifsec test CA");
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    for want in ["CN=alice", "cn=alice", "CN=*"] {
        let (mut c, mut g) = pair(&ca, alg);
        c.local_id = dn("CN=alice");
        g.remote_id = Some(dn(want));
        let h = run(c, g);
        h.assert_established();
        let ri = Harness::info(&h.resp_events).unwrap();
        assert_eq!(ri.remote_id, dn("CN=alice"), "{want}");
        assert_eq!(ri.remote_auth.subject.as_deref(), Some("CN=alice"));
    }
    let (mut c, mut g) = pair(&ca, alg);
    c.local_id = dn("CN=alice");
    g.remote_id = Some(dn("CN=bob"));
    assert_refused_by_responder(
        &run(c, g),
        AuthError::WrongId,
        "identity is not the configured remote.id",
    );
    // Another DN than the certificate's subject, with no remote.id to stop it first.
    let (mut c, g) = pair(&ca, alg);
    c.local_id = dn("CN=mallory");
    assert_refused_by_responder(
        &run(c, g),
        AuthError::IdNotInCertificate,
        "identity not in certificate (subject or subjectAltName)",
    );
}

/// Several certificates of ours, from two CAs: the one whose CA the peer's CERTREQ names
/// is sent, as responder (CERTREQ in the IKE_AUTH request) and as initiator (in the
/// IKE_SA_INIT response); the peer, trusting only that CA, accepts it.
#[test]
fn certificate_chosen_by_the_peers_certreq() {
    use crate::ike::auth::CertChoice;
    let (ca1, ca2) = (ca("mifsec CA one"), ca("mifsec CA two"));
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let choices = |san: SanType, cn: &str| -> Vec<CertChoice> {
        [&ca1, &ca2]
            .iter()
            .map(|ca| {
                let (cert, key) = Leaf::new(alg, san.clone()).issue(ca, cn);
                CertChoice {
                    key: Arc::new(PrivateKey::from_pem_or_der(&key).unwrap()),
                    certs: vec![cert],
                    ca_hashes: vec![key_hash(ca.cert.der()).unwrap()],
                    subject: format!("CN={cn}"),
                }
            })
            .collect()
    };
    let set = |cfg: &mut IkeConfig, ch: Vec<CertChoice>| {
        cfg.local_auth = LocalAuth::Pubkey {
            key: ch[0].key.clone(),
            certs: ch[0].certs.clone(),
            rsa_pss: false,
        };
        cfg.cert_choices = ch;
    };
    for (n, want) in [(0usize, &ca1), (1, &ca2)] {
        let name = if n == 0 {
            "CN=mifsec CA one"
        } else {
            "CN=mifsec CA two"
        };
        // We the responder: the client trusts only `want`.
        let (mut c, mut g) = pair(&ca1, alg);
        set(&mut g, choices(dns("gw.example.org"), "gw"));
        trust(&mut c, &[want]);
        trust(&mut g, &[&ca1]);
        let h = run(c, g);
        h.assert_established();
        let ii = Harness::info(&h.init_events).unwrap();
        assert_eq!(
            ii.remote_auth.ca.as_deref(),
            Some(name),
            "responder, {name}"
        );
        // We the initiator: the gateway trusts only `want`, and says so in IKE_SA_INIT.
        let (mut c, mut g) = pair(&ca1, alg);
        set(&mut c, choices(email("alice@example.org"), "alice"));
        trust(&mut g, &[want]);
        let h = run(c, g);
        h.assert_established();
        let ri = Harness::info(&h.resp_events).unwrap();
        assert_eq!(
            ri.remote_auth.ca.as_deref(),
            Some(name),
            "initiator, {name}"
        );
    }
    // A CERTREQ for neither CA: the first certificate is sent (and refused here).
    let other = ca("someone else's CA");
    let (mut c, mut g) = pair(&ca1, alg);
    set(&mut g, choices(dns("gw.example.org"), "gw"));
    trust(&mut c, &[&other]);
    let h = run(c, g);
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::AuthenticationFailed(AuthError::UnknownCa))
    );
}
