//! Round trips, differential tests between backends, and every kind of bad packet.

use mifsec_dataplane::aead::{AeadKey, Backend, Cipher, TAG_LEN};
use mifsec_dataplane::counters::DropReason;
use mifsec_dataplane::esp::wire::EspHeader;
use mifsec_dataplane::esp::{InboundSa, Mode, Opened, OutboundSa, SaConfig, SealError};
use mifsec_dataplane::event::{self, Event};
use proptest::prelude::*;

const HEAD: usize = 64;
const SPI: u32 = 0xC0DE_0001;

fn keymat(cipher: Cipher, seed: u8) -> Vec<u8> {
    (0..cipher.keymat_len())
        .map(|i| seed.wrapping_mul(31).wrapping_add(i as u8))
        .collect()
}

fn cfg(cipher: Cipher, backend: Backend, km: &[u8], esn: bool, mode: Mode) -> SaConfig<'_> {
    SaConfig {
        spi: SPI,
        cipher,
        backend,
        keymat: km,
        esn,
        mode,
        replay_window: 1024,
    }
}

fn ipv4(payload_len: usize, proto: u8) -> Vec<u8> {
    let total = 20 + payload_len;
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        7,
        0,
        0,
        64,
        proto,
        0,
        0,
        10,
        0,
        0,
        1,
        10,
        0,
        0,
        2,
    ];
    let c = mifsec_dataplane::net::checksum::checksum(&p, 0);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend((0..payload_len).map(|i| (i * 7) as u8));
    p
}

fn ipv6(payload_len: usize, next: u8) -> Vec<u8> {
    let mut p = vec![
        0x60,
        0,
        0,
        0,
        (payload_len >> 8) as u8,
        payload_len as u8,
        next,
        64,
    ];
    p.extend([0xfd; 16]);
    p.extend([0xfe; 16]);
    p.extend((0..payload_len).map(|i| (i * 3) as u8));
    p
}

/// Puts `pkt` in a buffer with headroom and tailroom, as the engine's read does.
fn framed(pkt: &[u8]) -> (Vec<u8>, std::ops::Range<usize>) {
    let mut buf = vec![0u8; HEAD + pkt.len() + OutboundSa::TAILROOM];
    buf[HEAD..HEAD + pkt.len()].copy_from_slice(pkt);
    (buf, HEAD..HEAD + pkt.len())
}

fn seal(out: &OutboundSa, pkt: &[u8]) -> Vec<u8> {
    let (mut buf, r) = framed(pkt);
    let s = out.seal(&mut buf, r).unwrap();
    buf[s.range].to_vec()
}

fn open(inb: &InboundSa, wire: &[u8]) -> Result<(Opened, Vec<u8>), DropReason> {
    let mut buf = wire.to_vec();
    let o = inb.open(&mut buf, 0..wire.len())?;
    let bytes = match &o {
        Opened::Packet { range, .. } => buf[range.clone()].to_vec(),
        Opened::Dummy { .. } => Vec::new(),
    };
    Ok((o, bytes))
}

fn pair(
    cipher: Cipher,
    tx: Backend,
    rx: Backend,
    esn: bool,
    mode: Mode,
) -> (OutboundSa, InboundSa) {
    let km = keymat(cipher, 1);
    (
        OutboundSa::new(&cfg(cipher, tx, &km, esn, mode), None).unwrap(),
        InboundSa::new(&cfg(cipher, rx, &km, esn, mode)).unwrap(),
    )
}

/// Every pad length: AES-GCM fills whole 16-byte blocks, ChaCha20-Poly1305 four bytes, with
/// the fewest pad bytes that do (RFC 4303: 1, 2, 3, ...), and the other backend opens each.
/// The trailer is read by decrypting with the other backend's bare AEAD.
#[test]
fn padding_fills_the_ciphers_alignment_and_every_length_opens() {
    for cipher in Cipher::ALL {
        let align = mifsec_dataplane::esp::sa::pad_align(cipher);
        assert_eq!(
            align,
            if cipher == Cipher::ChaCha20Poly1305 {
                4
            } else {
                16
            }
        );
        let km = keymat(cipher, 1);
        let other = AeadKey::new(cipher, Backend::RustCrypto, &km).unwrap();
        let (out, inb) = pair(
            cipher,
            Backend::Ring,
            Backend::RustCrypto,
            false,
            Mode::Tunnel,
        );
        for payload in 0..=40 {
            let pkt = ipv4(payload, 17);
            let wire = seal(&out, &pkt);
            let enc = wire.len() - 16 - 16;
            assert_eq!(enc % align, 0, "{cipher} {}", pkt.len());
            assert!(enc >= pkt.len() + 2 && enc < pkt.len() + 2 + align);
            assert_eq!(out.esp_len(pkt.len()), wire.len());
            // Decrypt a copy with the bare AEAD of the other backend and read the trailer.
            let mut plain = wire[16..16 + enc].to_vec();
            let (aad, n) = EspHeader {
                spi: SPI,
                seq: u64::from(u32::from_be_bytes(wire[4..8].try_into().unwrap())),
            }
            .aad(false);
            let iv: [u8; 8] = wire[8..16].try_into().unwrap();
            let tag: [u8; 16] = wire[wire.len() - 16..].try_into().unwrap();
            other.open(&iv, &aad[..n], &mut plain, &tag).unwrap();
            let pad = enc - 2 - pkt.len();
            assert_eq!(&plain[..pkt.len()], &pkt[..]);
            let want: Vec<u8> = (1..=pad as u8).collect();
            assert_eq!(&plain[pkt.len()..pkt.len() + pad], &want[..]);
            assert_eq!(usize::from(plain[enc - 2]), pad);
            assert_eq!(plain[enc - 1], 4, "next header IPv4");
            let (o, bytes) = open(&inb, &wire).unwrap();
            assert!(matches!(o, Opened::Packet { .. }));
            assert_eq!(bytes, pkt);
        }
    }
}

#[test]
fn every_mode_cipher_backend_and_esn_round_trips() {
    for cipher in Cipher::ALL {
        for (tx, rx) in [
            (Backend::Ring, Backend::RustCrypto),
            (Backend::RustCrypto, Backend::Ring),
        ] {
            for esn in [false, true] {
                for mode in [Mode::Tunnel, Mode::Transport] {
                    let (out, inb) = pair(cipher, tx, rx, esn, mode);
                    for pkt in [
                        ipv4(0, 17),
                        ipv4(1, 6),
                        ipv4(1380, 6),
                        ipv6(3, 17),
                        ipv6(1400, 6),
                    ] {
                        let wire = seal(&out, &pkt);
                        if mode == Mode::Transport {
                            let v4 = pkt[0] >> 4 == 4;
                            let hl = if v4 { 20 } else { 40 };
                            let (proto_at, len_at) = if v4 { (9, 2) } else { (6, 4) };
                            assert_eq!(wire[proto_at], 50, "protocol is ESP");
                            let len =
                                usize::from(u16::from_be_bytes([wire[len_at], wire[len_at + 1]]));
                            assert_eq!(len, if v4 { wire.len() } else { wire.len() - 40 });
                            assert_eq!(&wire[12..hl], &pkt[12..hl], "addresses kept");
                            assert_eq!(&wire[hl..hl + 4], &SPI.to_be_bytes());
                            assert_eq!((wire.len() - hl - 16 - 16) % 4, 0);
                        } else {
                            assert_eq!(&wire[..4], &SPI.to_be_bytes());
                            assert_eq!((wire.len() - 32) % 4, 0);
                        }
                        let (o, bytes) = open(&inb, &wire).unwrap();
                        assert!(matches!(o, Opened::Packet { .. }));
                        assert_eq!(bytes, pkt, "{cipher} {tx:?}->{rx:?} esn={esn} {mode:?}");
                    }
                }
            }
        }
    }
}

#[test]
fn esn_high_bits_cross_the_32_bit_boundary() {
    let (out, inb) = pair(
        Cipher::Aes128Gcm,
        Backend::Ring,
        Backend::Ring,
        true,
        Mode::Tunnel,
    );
    out.seq().set_last((1 << 32) - 3);
    inb.replay().mark((1 << 32) - 4).unwrap();
    let mut seqs = Vec::new();
    for _ in 0..6 {
        let wire = seal(&out, &ipv4(40, 17));
        let (Opened::Packet { seq, .. }, _) = open(&inb, &wire).unwrap() else {
            panic!()
        };
        seqs.push(seq);
    }
    assert_eq!(
        seqs,
        (((1u64 << 32) - 2)..((1u64 << 32) + 4)).collect::<Vec<_>>()
    );
}

#[test]
fn sequence_exhaustion_refuses_and_asks_for_rekey() {
    let km = keymat(Cipher::Aes128Gcm, 2);
    let (tx, rx) = event::channel(8);
    let out = OutboundSa::new(
        &cfg(Cipher::Aes128Gcm, Backend::Ring, &km, false, Mode::Tunnel),
        Some(tx),
    )
    .unwrap();
    out.seq().set_last(u64::from(u32::MAX) - 1);
    let (mut buf, r) = framed(&ipv4(10, 17));
    assert_eq!(
        out.seal(&mut buf, r.clone()).unwrap().seq,
        u64::from(u32::MAX)
    );
    let (mut buf, r) = framed(&ipv4(10, 17));
    assert_eq!(out.seal(&mut buf, r), Err(SealError::SeqExhausted));
    let events: Vec<Event> = rx.try_iter().collect();
    assert!(
        events.contains(&Event::SeqSoftLimit { spi: SPI }),
        "{events:?}"
    );
    assert!(
        events.contains(&Event::SeqExhausted { spi: SPI }),
        "{events:?}"
    );
}

#[test]
fn a_lowered_limit_raises_soft_at_seven_eighths_and_exhaustion_once() {
    let km = keymat(Cipher::Aes128Gcm, 2);
    let (tx, rx) = event::channel(64);
    let out = OutboundSa::with_seq_limit(
        &cfg(Cipher::Aes128Gcm, Backend::Ring, &km, false, Mode::Tunnel),
        Some(tx),
        80,
    )
    .unwrap();
    let seal_one = || {
        let (mut buf, r) = framed(&ipv4(10, 17));
        out.seal(&mut buf, r)
    };
    for n in 1..=69 {
        assert_eq!(seal_one().unwrap().seq, n);
    }
    assert_eq!(rx.try_iter().count(), 0, "nothing before the soft limit");
    assert_eq!(seal_one().unwrap().seq, 70);
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        [Event::SeqSoftLimit { spi: SPI }]
    );
    for n in 71..=80 {
        assert_eq!(seal_one().unwrap().seq, n);
    }
    for _ in 0..5 {
        assert_eq!(seal_one(), Err(SealError::SeqExhausted));
    }
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        [Event::SeqExhausted { spi: SPI }]
    );
}

#[test]
fn headroom_tailroom_and_non_ip_are_errors() {
    let (out, _) = pair(
        Cipher::Aes128Gcm,
        Backend::Ring,
        Backend::Ring,
        false,
        Mode::Tunnel,
    );
    let pkt = ipv4(10, 17);
    let mut buf = vec![0u8; 200];
    buf[..pkt.len()].copy_from_slice(&pkt);
    assert_eq!(out.seal(&mut buf, 0..pkt.len()), Err(SealError::NoHeadroom));
    let mut buf = vec![0u8; 16 + pkt.len() + 5];
    assert_eq!(
        out.seal(&mut buf, 16..16 + pkt.len()),
        Err(SealError::NoTailroom)
    );
    let (mut buf, r) = framed(&[0x10, 1, 2, 3]);
    assert_eq!(out.seal(&mut buf, r), Err(SealError::BadIpPacket));
    let (tout, _) = pair(
        Cipher::Aes128Gcm,
        Backend::Ring,
        Backend::Ring,
        false,
        Mode::Transport,
    );
    let (mut buf, r) = framed(&ipv6(8, 0)); // hop-by-hop options must precede ESP
    assert_eq!(tout.seal(&mut buf, r), Err(SealError::BadIpPacket));
    // Protocol 59 would reach the peer as a dummy packet and vanish: refused (found by fuzzing).
    let (mut buf, r) = framed(&ipv4(8, 59));
    assert_eq!(tout.seal(&mut buf, r), Err(SealError::BadIpPacket));
    // Nothing was counted and no sequence number was spent on a refused packet.
    assert_eq!(out.seq().last(), 0);
}

/// Builds an ESP packet with an arbitrary (possibly invalid) plaintext trailer, sealed with
/// the right key, so that the ICV verifies and the trailer checks are what is exercised.
fn raw_esp(cipher: Cipher, km: &[u8], seq: u64, plaintext: &[u8]) -> Vec<u8> {
    let key = AeadKey::new(cipher, Backend::RustCrypto, km).unwrap();
    let hdr = EspHeader { spi: SPI, seq };
    let mut pkt = vec![0u8; 16];
    hdr.emit(&mut pkt).unwrap();
    let (aad, n) = hdr.aad(false);
    let mut body = plaintext.to_vec();
    let tag = key.seal(&seq.to_be_bytes(), &aad[..n], &mut body).unwrap();
    pkt.extend(body);
    pkt.extend(tag);
    pkt
}

#[test]
fn every_bad_packet_is_a_counted_drop_and_the_sa_survives() {
    let cipher = Cipher::Aes128Gcm;
    let km = keymat(cipher, 1);
    let (out, inb) = pair(cipher, Backend::Ring, Backend::Ring, false, Mode::Tunnel);
    let good = seal(&out, &ipv4(100, 17));

    let cases: Vec<(&str, Vec<u8>, DropReason)> = vec![
        ("empty", vec![], DropReason::Truncated),
        ("short", good[..20].to_vec(), DropReason::Truncated),
        (
            "misaligned",
            good[..good.len() - 1].to_vec(),
            DropReason::Truncated,
        ),
        (
            "wrong spi",
            {
                let mut p = good.clone();
                p[0] ^= 1;
                p
            },
            DropReason::UnknownSpi,
        ),
        (
            "icv",
            {
                let mut p = good.clone();
                let n = p.len();
                p[n - 1] ^= 1;
                p
            },
            DropReason::Integrity,
        ),
        (
            "ciphertext",
            {
                let mut p = good.clone();
                p[30] ^= 4;
                p
            },
            DropReason::Integrity,
        ),
        (
            "seq zero",
            {
                let mut p = good.clone();
                p[4..8].copy_from_slice(&[0; 4]);
                p
            },
            DropReason::TooOld,
        ),
        (
            "bad padding",
            raw_esp(cipher, &km, 50, &[0x45, 0, 0, 4, 1, 9, 2, 4]),
            DropReason::BadPadding,
        ),
        (
            "bad trailer",
            raw_esp(cipher, &km, 51, &[0x45, 0, 200, 4]),
            DropReason::BadTrailer,
        ),
        (
            "bad next header",
            raw_esp(cipher, &km, 52, &[0x45, 0, 0, 6]),
            DropReason::BadNextHeader,
        ),
        (
            "next header lies",
            raw_esp(cipher, &km, 53, &[0x65, 0, 0, 4]),
            DropReason::BadIpPacket,
        ),
    ];
    for (name, pkt, want) in &cases {
        assert_eq!(open(&inb, pkt).map(|o| o.0), Err(*want), "{name}");
    }
    // The good packet still opens, once.
    assert!(open(&inb, &good).is_ok());
    assert_eq!(open(&inb, &good).map(|o| o.0), Err(DropReason::Replayed));
    // Far ahead, then the old one is too old.
    out.seq().set_last(5000);
    let ahead = seal(&out, &ipv4(10, 17));
    assert!(open(&inb, &ahead).is_ok());
    assert_eq!(open(&inb, &good).map(|o| o.0), Err(DropReason::TooOld));

    let c = inb.counters().snapshot();
    assert_eq!(c.packets, 2);
    assert_eq!(c.total_drops(), cases.len() as u64 + 2);
    assert_eq!(c.drops(DropReason::Truncated), 3);
    assert_eq!(c.drops(DropReason::Integrity), 2);
    assert_eq!(c.drops(DropReason::TooOld), 2);
}

#[test]
fn dummy_packets_are_accepted_discarded_and_counted() {
    let (out, inb) = pair(
        Cipher::ChaCha20Poly1305,
        Backend::Ring,
        Backend::RustCrypto,
        false,
        Mode::Tunnel,
    );
    let (mut buf, r) = framed(&[0xAB; 33]);
    let s = out.seal_dummy(&mut buf, r).unwrap();
    let mut wire = buf[s.range].to_vec();
    let len = wire.len();
    let Opened::Dummy { range, seq } = inb.open(&mut wire, 0..len).unwrap() else {
        panic!("not a dummy")
    };
    assert_eq!((seq, &wire[range]), (1, &[0xAB; 33][..]));
    let c = inb.counters().snapshot();
    assert_eq!((c.dummies, c.packets, c.total_drops()), (1, 0, 0));
}

#[test]
fn transport_mode_drops_non_esp_outer_packets() {
    let (_, inb) = pair(
        Cipher::Aes128Gcm,
        Backend::Ring,
        Backend::Ring,
        false,
        Mode::Transport,
    );
    assert_eq!(
        open(&inb, &ipv4(64, 17)).map(|o| o.0),
        Err(DropReason::BadIpPacket)
    );
    assert_eq!(
        open(&inb, &[0x45, 0, 0]).map(|o| o.0),
        Err(DropReason::BadIpPacket)
    );
}

#[test]
fn reserved_spi_and_bad_window_are_refused() {
    let km = keymat(Cipher::Aes128Gcm, 3);
    let mut c = cfg(Cipher::Aes128Gcm, Backend::Ring, &km, false, Mode::Tunnel);
    c.spi = 255;
    assert!(OutboundSa::new(&c, None).is_err());
    c.spi = 256;
    c.replay_window = 100;
    assert!(InboundSa::new(&c).is_err());
}

#[test]
fn debug_output_holds_no_key_material() {
    let km = vec![0x5Au8; 20];
    let c = cfg(Cipher::Aes128Gcm, Backend::Ring, &km, false, Mode::Tunnel);
    let dbg = format!(
        "{:?} {:?} {:?}",
        c,
        OutboundSa::new(&c, None).unwrap(),
        InboundSa::new(&c).unwrap()
    );
    assert!(
        !dbg.to_lowercase().contains("5a5a") && !dbg.contains("90, 90"),
        "{dbg}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// The two backends agree on random keys, nonces, AAD and payloads, and any flipped bit
    /// fails to open.
    #[test]
    fn backends_agree(ci in 0usize..3, key in prop::collection::vec(any::<u8>(), 36),
                      iv in any::<[u8; 8]>(), aad in prop::collection::vec(any::<u8>(), 0..24),
                      payload in prop::collection::vec(any::<u8>(), 0..2000), flip in any::<prop::sample::Index>()) {
        let cipher = Cipher::ALL[ci];
        let km = &key[..cipher.keymat_len()];
        let a = AeadKey::new(cipher, Backend::Ring, km).unwrap();
        let b = AeadKey::new(cipher, Backend::RustCrypto, km).unwrap();
        let (mut x, mut y) = (payload.clone(), payload.clone());
        let ta = a.seal(&iv, &aad, &mut x).unwrap();
        let tb = b.seal(&iv, &aad, &mut y).unwrap();
        prop_assert_eq!(&x, &y);
        prop_assert_eq!(ta, tb);
        let mut whole = [x.clone(), ta.to_vec()].concat();
        let bit = flip.index(whole.len() * 8);
        whole[bit / 8] ^= 1 << (bit % 8);
        let (ct, tag) = whole.split_at_mut(x.len());
        let tag: [u8; TAG_LEN] = (&*tag).try_into().unwrap();
        prop_assert!(a.open(&iv, &aad, ct, &tag).is_err());
        let mut ok = x.clone();
        b.open(&iv, &aad, &mut ok, &ta).unwrap();
        prop_assert_eq!(ok, payload);
    }

    /// Whole ESP packets: any flipped bit is an error, never a panic, never accepted.
    #[test]
    fn esp_bit_flips_never_open(len in 0usize..300, flip in any::<prop::sample::Index>(), esn in any::<bool>(), transport in any::<bool>()) {
        let mode = if transport { Mode::Transport } else { Mode::Tunnel };
        let (out, inb) = pair(Cipher::Aes256Gcm, Backend::Ring, Backend::Ring, esn, mode);
        let wire = seal(&out, &ipv4(len, 17));
        let mut bad = wire.clone();
        // In transport mode the outer IP header is not covered by ESP: flip only ESP bits.
        let skip = if transport { 20 * 8 } else { 0 };
        let bit = skip + flip.index(bad.len() * 8 - skip);
        bad[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(open(&inb, &bad).is_err());
        prop_assert!(open(&inb, &wire).is_ok());
    }

    /// Arbitrary bytes never panic the open path.
    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200), transport in any::<bool>()) {
        let mode = if transport { Mode::Transport } else { Mode::Tunnel };
        let (_, inb) = pair(Cipher::Aes128Gcm, Backend::Ring, Backend::Ring, true, mode);
        prop_assert!(open(&inb, &bytes).is_err());
    }
}
