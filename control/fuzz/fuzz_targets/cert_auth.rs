//! Fuzzes what a peer's CERT and AUTH payloads reach: certificate chains checked against a
//! CA (the trust anchor parsed from the input too), the identity matched against the end
//! entity, public keys from SubjectPublicKeyInfo, RFC 7427 AUTH data and AlgorithmIdentifiers
//! verified against them, and the PEM / DER readers of keys and certificates. Nothing may
//! panic; every refusal is an `AuthError`.
//!
//! Input: a mode byte, then pieces, each a 2-byte big-endian length and its bytes.

#![no_main]

use std::time::{Duration, SystemTime};

use libfuzzer_sys::fuzz_target;
use mifsec_control::ike::auth::cert::{certs_from_pem_or_der, key_hash, subject_id};
use mifsec_control::ike::auth::{PrivateKey, PublicKey, Scheme, TrustStore};
use mifsec_control::wire::{AuthMethod, IdPayload, IdType};

fn pieces(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 8 {
        let n = usize::from(u16::from_be_bytes([data[0], data[1]])).min(data.len() - 2);
        out.push(&data[2..2 + n]);
        data = &data[2 + n..];
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let p = pieces(rest);
    match mode % 4 {
        // A chain: CA, then end entity and intermediates; the ID from the last piece.
        0 => {
            let [ca, chain @ ..] = p.as_slice() else {
                return;
            };
            let _ = key_hash(ca);
            let _ = subject_id(ca);
            let Ok(store) = TrustStore::new(&[ca.to_vec()], &[], &[]) else {
                return;
            };
            let chain: Vec<Vec<u8>> = chain.iter().map(|c| c.to_vec()).collect();
            let id = IdPayload {
                id_type: IdType::from(mode >> 4),
                data: chain.last().cloned().unwrap_or_default(),
            };
            let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
            let _ = store.verify(&chain, &IdPayload::fqdn("gw"), now);
            let _ = store.verify(&chain, &id, now);
        }
        // An AUTH: SPKI, AUTH data; method from the mode byte.
        1 => {
            let [spki, auth, ..] = p.as_slice() else {
                return;
            };
            if let Ok(k) = PublicKey::from_spki(spki) {
                let method = AuthMethod::from(mode >> 4 | 1);
                for m in [method, AuthMethod::DigitalSignature] {
                    let _ = k.verify_auth(m, auth, &[2, 3, 4, 5], b"octets");
                }
            }
            let _ = TrustStore::new(&[], &[], &[spki.to_vec()]);
        }
        2 => {
            for x in &p {
                let _ = Scheme::from_algorithm_identifier(x);
            }
        }
        _ => {
            for x in &p {
                let _ = certs_from_pem_or_der(x);
                if let Ok(k) = PrivateKey::from_pem_or_der(x) {
                    let _ = k.sign_auth(&[2], false, b"octets");
                }
            }
        }
    }
});
