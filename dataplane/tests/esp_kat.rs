//! Known-answer tests: the ESP cases of draft-mcgrew-gcm-test-01 and RFC 7634 Appendix A, run
//! against every AEAD backend, at the AEAD level and as whole ESP packets.

mod common;

use common::vectors::{ESP_AEAD_VECTORS, EspAeadVector, RFC7634_IKEV2_VECTOR, VectorCipher};
use mifsec_dataplane::aead::{AeadKey, Backend, Cipher, CryptoError};
use mifsec_dataplane::counters::DropReason;
use mifsec_dataplane::esp::{InboundSa, Mode, Opened, SaConfig};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn cipher_of(v: &EspAeadVector) -> Cipher {
    match (v.cipher, h(v.key).len()) {
        (VectorCipher::AesGcm, 16) => Cipher::Aes128Gcm,
        (VectorCipher::AesGcm, 32) => Cipher::Aes256Gcm,
        (VectorCipher::ChaCha20Poly1305, 32) => Cipher::ChaCha20Poly1305,
        other => panic!("{}: unexpected cipher {other:?}", v.name),
    }
}

fn keymat(v: &EspAeadVector) -> Vec<u8> {
    [h(v.key), h(v.salt)].concat()
}

#[test]
fn aead_seal_and_open_match_every_vector_on_every_backend() {
    assert!(ESP_AEAD_VECTORS.len() >= 16);
    for backend in Backend::ALL {
        for v in ESP_AEAD_VECTORS {
            let key = AeadKey::new(cipher_of(v), backend, &keymat(v)).unwrap();
            let iv: [u8; 8] = h(v.iv).try_into().unwrap();
            let expected = h(v.ciphertext_and_tag);
            let (exp_ct, exp_tag) = expected.split_at(expected.len() - 16);

            let mut buf = h(v.plaintext);
            let tag = key.seal(&iv, &h(v.aad), &mut buf).unwrap();
            assert_eq!(buf, exp_ct, "{} {backend:?}: ciphertext", v.name);
            assert_eq!(tag.as_slice(), exp_tag, "{} {backend:?}: tag", v.name);

            let exp_tag: [u8; 16] = exp_tag.try_into().unwrap();
            key.open(&iv, &h(v.aad), &mut buf, &exp_tag).unwrap();
            assert_eq!(buf, h(v.plaintext), "{} {backend:?}: open", v.name);

            // Any flipped bit of ciphertext, tag or AAD fails to open.
            let mut ct = exp_ct.to_vec();
            if !ct.is_empty() {
                ct[0] ^= 0x80;
                assert_eq!(
                    key.open(&iv, &h(v.aad), &mut ct, &exp_tag),
                    Err(CryptoError::Integrity)
                );
            }
            let mut bad_tag = exp_tag;
            bad_tag[15] ^= 1;
            let mut ct = exp_ct.to_vec();
            assert_eq!(
                key.open(&iv, &h(v.aad), &mut ct, &bad_tag),
                Err(CryptoError::Integrity)
            );
            let mut aad = h(v.aad);
            aad[0] ^= 1;
            let mut ct = exp_ct.to_vec();
            assert_eq!(
                key.open(&iv, &aad, &mut ct, &exp_tag),
                Err(CryptoError::Integrity)
            );
        }
    }
}

/// The published AAD is what mifsec builds from SPI and sequence number.
#[test]
fn aad_layout_matches_every_vector() {
    for v in ESP_AEAD_VECTORS {
        let hdr = mifsec_dataplane::esp::wire::EspHeader {
            spi: v.spi,
            seq: v.seq,
        };
        let (aad, n) = hdr.aad(v.esn);
        assert_eq!(&aad[..n], h(v.aad).as_slice(), "{}", v.name);
    }
}

/// Whole ESP packets: SPI, low sequence number, IV, ciphertext and ICV, opened by an inbound
/// SA (transport mode behind an IPv4 header for the draft's next-header-1 cases, tunnel mode
/// for RFC 7634's IPv4 packet), with ESN high bits inferred from the replay window.
#[test]
fn whole_packets_open_on_every_backend() {
    let mut opened = 0;
    for backend in Backend::ALL {
        for v in ESP_AEAD_VECTORS.iter().filter(|v| v.spi >= 256) {
            let plain = h(v.plaintext);
            let next_header = *plain.last().unwrap();
            let pad = usize::from(plain[plain.len() - 2]);
            let inner = &plain[..plain.len() - 2 - pad];
            let mode = if next_header == 4 {
                Mode::Tunnel
            } else {
                Mode::Transport
            };
            let km = keymat(v);
            let sa = InboundSa::new(&SaConfig {
                spi: v.spi,
                cipher: cipher_of(v),
                backend,
                keymat: &km,
                esn: v.esn,
                mode,
                replay_window: 1024,
            })
            .unwrap();
            if v.seq > 1 {
                sa.replay().mark(v.seq - 1).unwrap();
            }
            let mut esp = Vec::new();
            esp.extend_from_slice(&v.spi.to_be_bytes());
            esp.extend_from_slice(&(v.seq as u32).to_be_bytes());
            esp.extend_from_slice(&h(v.iv));
            esp.extend_from_slice(&h(v.ciphertext_and_tag));
            let mut buf = Vec::new();
            if mode == Mode::Transport {
                let total = (20 + esp.len()) as u16;
                let mut ip = vec![
                    0x45, 0, 0, 0, 0, 1, 0, 0, 64, 50, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2,
                ];
                ip[2..4].copy_from_slice(&total.to_be_bytes());
                buf.extend_from_slice(&ip);
            }
            buf.extend_from_slice(&esp);
            let len = buf.len();
            let got = sa
                .open(&mut buf, 0..len)
                .unwrap_or_else(|e| panic!("{} {backend:?}: {e}", v.name));
            let Opened::Packet {
                range,
                next_header: nh,
                seq,
            } = got
            else {
                panic!("dummy?")
            };
            assert_eq!(seq, v.seq, "{}", v.name);
            assert_eq!(nh, next_header);
            let out = &buf[range];
            match mode {
                Mode::Tunnel => assert_eq!(out, inner, "{}", v.name),
                Mode::Transport => {
                    assert_eq!(&out[20..], inner, "{}", v.name);
                    assert_eq!(out[9], next_header);
                    assert_eq!(usize::from(u16::from_be_bytes([out[2], out[3]])), out.len());
                    assert_eq!(mifsec_dataplane::net::checksum::checksum(&out[..20], 0), 0);
                }
            }
            opened += 1;
        }
    }
    assert!(opened >= 2 * 14, "opened only {opened} vectors");
}

#[test]
fn replayed_vector_is_dropped_and_counted() {
    let v = ESP_AEAD_VECTORS
        .iter()
        .find(|v| v.name.contains("RFC 7634"))
        .unwrap();
    let km = keymat(v);
    let sa = InboundSa::new(&SaConfig {
        spi: v.spi,
        cipher: cipher_of(v),
        backend: Backend::Ring,
        keymat: &km,
        esn: v.esn,
        mode: Mode::Tunnel,
        replay_window: 64,
    })
    .unwrap();
    let packet = [
        v.spi.to_be_bytes().to_vec(),
        (v.seq as u32).to_be_bytes().to_vec(),
        h(v.iv),
        h(v.ciphertext_and_tag),
    ]
    .concat();
    let mut buf = packet.clone();
    assert!(matches!(
        sa.open(&mut buf, 0..packet.len()),
        Ok(Opened::Packet { .. })
    ));
    let mut buf = packet.clone();
    assert_eq!(
        sa.open(&mut buf, 0..packet.len()),
        Err(DropReason::Replayed)
    );
    let c = sa.counters().snapshot();
    assert_eq!((c.packets, c.drops(DropReason::Replayed)), (1, 1));
}

#[test]
fn rfc7634_ikev2_example_on_every_backend() {
    let v = &RFC7634_IKEV2_VECTOR;
    for backend in Backend::ALL {
        let km = [h(v.key), h(v.salt)].concat();
        let key = AeadKey::new(Cipher::ChaCha20Poly1305, backend, &km).unwrap();
        let iv: [u8; 8] = h(v.iv).try_into().unwrap();
        let mut buf = h(v.plaintext);
        let tag = key.seal(&iv, &h(v.aad), &mut buf).unwrap();
        assert_eq!(
            [buf, tag.to_vec()].concat(),
            h(v.ciphertext_and_tag),
            "{backend:?}"
        );
    }
}
