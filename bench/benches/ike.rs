//! Full IKE_SA_INIT + IKE_AUTH handshakes per second on one core, responder side, from the
//! sample configurations (the client offers X25519 first; the responder picks the first
//! AES-GCM proposal it accepts): with the PSK, and with ECDSA P-256 certificates on both
//! sides (made here with rcgen, one CA; the responder checks the client's chain and
//! signature and signs its own AUTH, RFC 7427). Only the responder's work is timed:
//! parsing, DH, key derivation, AUTH (signatures and path validation for certificates), the
//! child SA's keys and both answers. The initiator's messages are produced outside the
//! measured sections.

use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mifsec_control::ike::auth::{LocalAuth, PrivateKey, RemoteAuth, TrustStore};
use mifsec_control::ike::{Event, IkeConfig, IkeSa, sample};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

/// The sample client and gateway with ECDSA P-256 certificates of one CA.
fn with_certificates() -> (IkeConfig, IkeConfig) {
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let ca_key = KeyPair::generate_for(alg).unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "bench CA");
    let ca = p.self_signed(&ca_key).unwrap();
    let store = Arc::new(TrustStore::new(&[ca.der().to_vec()], &[], &[]).unwrap());
    let issue = |san: SanType| {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![san];
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        LocalAuth::Pubkey {
            key: Arc::new(PrivateKey::from_pem_or_der(&key.serialize_der()).unwrap()),
            certs: vec![cert.der().to_vec()],
            rsa_pss: false,
        }
    };
    let (mut c, mut g) = (sample::client(), sample::gateway());
    c.local_auth = issue(SanType::Rfc822Name("alice@example.org".try_into().unwrap()));
    g.local_auth = issue(SanType::DnsName("gw.example.org".try_into().unwrap()));
    c.remote_auth = RemoteAuth::Pubkey(store.clone());
    g.remote_auth = RemoteAuth::Pubkey(store);
    (c, g)
}

fn handshakes(c: &mut Criterion) {
    let (cl, gw): (SocketAddr, SocketAddr) = (
        "198.18.0.2:500".parse().unwrap(),
        "198.18.0.1:500".parse().unwrap(),
    );
    let mut g = c.benchmark_group("ike");
    g.throughput(Throughput::Elements(1));
    let certs = with_certificates();
    for (name, (ccfg, gcfg)) in [
        (
            "responder_handshake_psk",
            (sample::client(), sample::gateway()),
        ),
        ("responder_handshake_ecdsa_p256_certs", certs),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    let now = Instant::now();
                    let mut init = IkeSa::initiate(ccfg.clone(), now, cl, gw).unwrap();
                    let mut resp = IkeSa::respond(gcfg.clone());
                    let mut established = false;
                    // Two exchanges: request(s), answer(s) (fragments, if any, in turn).
                    for _ in 0..2 {
                        let mut reqs = Vec::new();
                        while let Some(t) = init.poll_transmit() {
                            reqs.push(t.bytes);
                        }
                        let t = Instant::now();
                        let mut answers = Vec::new();
                        for req in &reqs {
                            resp.handle_datagram(now, gw, cl, req);
                        }
                        while let Some(a) = resp.poll_transmit() {
                            answers.push(a.bytes);
                        }
                        while let Some(e) = resp.poll_event() {
                            established |= matches!(e, Event::ChildSaEstablished(_));
                            black_box(e);
                        }
                        timed += t.elapsed();
                        for a in &answers {
                            init.handle_datagram(now, cl, gw, a);
                        }
                        while init.poll_event().is_some() {}
                    }
                    assert!(established, "the responder did not establish the child SA");
                    assert!(init.is_established(), "the initiator did not establish");
                }
                timed
            })
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = handshakes
}
criterion_main!(benches);
