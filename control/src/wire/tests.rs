//! Whole-message tests of the wire layer: a hand-encoded IKE_SA_INIT, round trips of
//! every payload kind, malformed input, and property tests. Messages from other
//! implementations were not added: the project commits no bytes taken from other repositories.

use std::net::{Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

pub(super) fn unhex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    hex::decode(s).expect("valid hex literal")
}

/// The IKE_SA_INIT request of [`hand_hex`], as a representation.
fn hand_ike_sa_init() -> Message {
    Message {
        header: Header {
            spi_i: 0x0102_0304_0506_0708,
            spi_r: 0,
            minor_version: 0,
            exchange_type: ExchangeType::IkeSaInit,
            flags: Flags::INITIATOR,
            message_id: 0,
        },
        payloads: vec![
            Payload::Sa(SaPayload {
                proposals: vec![
                    Proposal {
                        number: 1,
                        protocol: ProtocolId::Ike,
                        spi: vec![],
                        transforms: vec![
                            Transform::with_key_length(TransformId::Encr(EncrId::AesGcm16), 256),
                            Transform::new(TransformId::Prf(PrfId::HmacSha2_256)),
                            Transform::new(TransformId::Dh(DhGroup::Curve25519)),
                        ],
                    },
                    Proposal {
                        number: 2,
                        protocol: ProtocolId::Ike,
                        spi: vec![],
                        transforms: vec![
                            Transform::new(TransformId::Encr(EncrId::Chacha20Poly1305)),
                            Transform::new(TransformId::Prf(PrfId::HmacSha2_512)),
                            Transform::new(TransformId::Dh(DhGroup::Ecp256)),
                        ],
                    },
                ],
            }),
            Payload::Ke(KePayload {
                group: DhGroup::Curve25519,
                data: vec![0xab; 32],
            }),
            Payload::Nonce(vec![0x22; 32]),
            Payload::Notify(NotifyPayload::new(
                NotifyType::NatDetectionSourceIp,
                vec![0x33; 20],
            )),
            Payload::Notify(NotifyPayload::new(
                NotifyType::NatDetectionDestinationIp,
                vec![0x44; 20],
            )),
        ],
    }
}

/// [`hand_ike_sa_init`] encoded by hand from the RFC 7296 figures (offsets in brackets).
fn hand_hex() -> String {
    [
        // [0] IKE header: SPIi, SPIr, next SA(33), version 2.0, IKE_SA_INIT(34),
        // flags I, message ID 0, length 232.
        "0102030405060708 0000000000000000 21 20 22 08 00000000 000000e8",
        // [28] SA: next KE(34), length 72.
        "22 00 0048",
        // [32] proposal 1 (more follow: 2), length 36, #1, IKE, SPI size 0, 3 transforms.
        "02 00 0024 01 01 00 03",
        // [40] ENCR(1) AES_GCM_16(20), Key Length (AF|14) 256.
        "03 00 000c 01 00 0014 800e 0100",
        // [52] PRF(2) HMAC_SHA2_256(5).
        "03 00 0008 02 00 0005",
        // [60] D-H(4) group 31, last transform.
        "00 00 0008 04 00 001f",
        // [68] proposal 2 (last), length 32, #2, IKE, SPI size 0, 3 transforms.
        "00 00 0020 02 01 00 03",
        // [76] ENCR CHACHA20_POLY1305(28); PRF HMAC_SHA2_512(7); D-H group 19.
        "03 00 0008 01 00 001c",
        "03 00 0008 02 00 0007",
        "00 00 0008 04 00 0013",
        // [100] KE: next Nonce(40), length 40, group 31, reserved, 32 bytes.
        "28 00 0028 001f 0000",
        &"ab".repeat(32),
        // [140] Nonce: next Notify(41), length 36.
        "29 00 0024",
        &"22".repeat(32),
        // [176] Notify: next Notify, length 28, protocol 0, SPI size 0, type 16388.
        "29 00 001c 00 00 4004",
        &"33".repeat(20),
        // [204] Notify: last, length 28, type 16389.
        "00 00 001c 00 00 4005",
        &"44".repeat(20),
    ]
    .join(" ")
}

/// Offsets of every length field in [`hand_hex`], with its width.
const HAND_LENGTH_FIELDS: &[(usize, usize)] = &[
    (24, 4),  // IKE header
    (30, 2),  // SA payload
    (34, 2),  // proposal 1
    (42, 2),  // transforms of proposal 1
    (54, 2),  //
    (62, 2),  //
    (70, 2),  // proposal 2
    (78, 2),  // transforms of proposal 2
    (86, 2),  //
    (94, 2),  //
    (102, 2), // KE
    (142, 2), // Nonce
    (178, 2), // Notify
    (206, 2), // Notify
];

#[test]
fn hand_encoded_ike_sa_init_matches_byte_for_byte() {
    let expected = unhex(&hand_hex());
    assert_eq!(expected.len(), 232);
    let msg = hand_ike_sa_init();
    assert_eq!(msg.buffer_len(), 232);
    assert_eq!(hex::encode(msg.to_bytes()), hex::encode(&expected));
    assert_eq!(Message::parse(&expected).unwrap(), msg);
}

#[test]
fn emit_appends_after_existing_bytes() {
    let msg = hand_ike_sa_init();
    let mut buf = vec![0, 0, 0, 0]; // e.g. a non-ESP marker
    msg.emit(&mut buf);
    assert_eq!(&buf[..4], &[0, 0, 0, 0]);
    assert_eq!(&buf[4..], msg.to_bytes().as_slice());
}

/// Self-made valid messages, as bytes.
pub(super) fn corpus() -> Vec<Vec<u8>> {
    vec![
        unhex(&hand_hex()),
        every_payload_message().to_bytes(),
        sk_message().to_bytes(),
    ]
}

#[test]
fn corpus_reencodes_byte_for_byte() {
    for bytes in corpus() {
        let msg = Message::parse(&bytes).unwrap();
        assert_eq!(msg.buffer_len(), bytes.len());
        assert_eq!(hex::encode(msg.to_bytes()), hex::encode(&bytes));
    }
}

#[test]
fn truncation_at_every_offset_is_an_error() {
    for bytes in corpus() {
        for n in 0..bytes.len() {
            assert!(Message::parse(&bytes[..n]).is_err(), "cut at {n}");
            // Also with a Length field that agrees, so the payload chain is cut instead.
            if n >= HEADER_LEN {
                let mut cut = bytes[..n].to_vec();
                cut[24..28].copy_from_slice(&(n as u32).to_be_bytes());
                assert!(Message::parse(&cut).is_err(), "chain cut at {n}");
            }
        }
    }
}

#[test]
fn altered_length_fields_are_errors() {
    let good = unhex(&hand_hex());
    for &(at, width) in HAND_LENGTH_FIELDS {
        let read = |b: &[u8]| {
            b[at..at + width]
                .iter()
                .fold(0u32, |acc, &x| (acc << 8) | u32::from(x))
        };
        let original = read(&good);
        for value in [
            original + 1,
            original - 1,
            original ^ 0x80,
            original ^ (0x80 << (8 * (width - 1))),
            0,
        ] {
            let mut bad = good.clone();
            let be = value.to_be_bytes();
            bad[at..at + width].copy_from_slice(&be[4 - width..]);
            assert!(
                Message::parse(&bad).is_err(),
                "length at {at} set to {value} was accepted"
            );
        }
    }
}

#[test]
fn trailing_bytes_after_message_are_an_error() {
    let mut bytes = unhex(&hand_hex());
    bytes.push(0);
    assert_eq!(
        Message::parse(&bytes),
        Err(WireError::TrailingData {
            what: "IKE message"
        })
    );
}

#[test]
fn unknown_critical_payload_is_reported() {
    let mut msg = hand_ike_sa_init();
    msg.payloads.insert(
        2,
        Payload::Unknown(UnknownPayload {
            payload_type: 200,
            critical: true,
            body: vec![1, 2, 3],
        }),
    );
    let bytes = msg.to_bytes();
    let err = Message::parse(&bytes).unwrap_err();
    assert_eq!(err, WireError::UnsupportedCriticalPayload(200));
    assert_eq!(
        err.notify_type(),
        Some(NotifyType::UnsupportedCriticalPayload)
    );
    let notify = err.notify().unwrap();
    assert_eq!(notify.data, [200]);
    assert_eq!(notify.protocol, ProtocolId::None);
    // The header is still readable to address the answer.
    let header = HeaderPacket::new_checked(&bytes[..]).unwrap();
    assert_eq!(header.spi_i(), msg.header.spi_i);
    assert_eq!(header.message_id(), 0);

    // Non-critical, the same payload is kept.
    let Payload::Unknown(u) = &mut msg.payloads[2] else {
        unreachable!()
    };
    u.critical = false;
    assert_eq!(Message::parse(&msg.to_bytes()).unwrap(), msg);
}

#[test]
fn versions_and_error_notifies() {
    let mut bytes = unhex(&hand_hex());
    bytes[17] = 0x30;
    let err = Message::parse(&bytes).unwrap_err();
    assert_eq!(err, WireError::UnsupportedVersion(3));
    assert_eq!(err.notify_type(), Some(NotifyType::InvalidMajorVersion));
    bytes[17] = 0x10;
    let err = Message::parse(&bytes).unwrap_err();
    assert_eq!(err, WireError::UnsupportedVersion(1));
    assert_eq!(err.notify_type(), None);
    assert!(err.notify().is_none());
    // The minor version is carried, not checked.
    bytes[17] = 0x25;
    assert_eq!(Message::parse(&bytes).unwrap().header.minor_version, 5);

    for err in [
        WireError::Truncated { what: "x" },
        WireError::BadLength { what: "x" },
        WireError::TrailingData { what: "x" },
        WireError::CountMismatch {
            what: "x",
            declared: 1,
            found: 2,
        },
        WireError::InvalidValue { what: "x" },
        WireError::BadFragmentNumber {
            number: 0,
            total: 1,
        },
    ] {
        assert_eq!(err.notify_type(), Some(NotifyType::InvalidSyntax));
        assert!(err.notify().unwrap().data.is_empty());
        assert!(!err.to_string().is_empty());
    }
    assert_eq!(
        WireError::UnsupportedCriticalPayload(99).to_string(),
        "unsupported critical payload type 99"
    );
}

/// A message holding every payload kind, with unknown registry values sprinkled in.
fn every_payload_message() -> Message {
    Message {
        header: Header {
            spi_i: 0x1111_2222_3333_4444,
            spi_r: 0x5555_6666_7777_8888,
            minor_version: 0,
            exchange_type: ExchangeType::Unknown(240),
            flags: Flags::RESPONSE | Flags::VERSION,
            message_id: 0xdead_beef,
        },
        payloads: vec![
            Payload::Sa(SaPayload {
                proposals: vec![Proposal {
                    number: 1,
                    protocol: ProtocolId::Esp,
                    spi: vec![9, 8, 7, 6],
                    transforms: vec![
                        Transform::with_key_length(TransformId::Encr(EncrId::AesGcm16), 128),
                        Transform::new(TransformId::Integ(IntegId::None)),
                        Transform::new(TransformId::Esn(EsnId::Esn)),
                        Transform::new(TransformId::Dh(DhGroup::Unknown(1234))),
                    ],
                }],
            }),
            Payload::Ke(KePayload {
                group: DhGroup::Ecp384,
                data: vec![5; 96],
            }),
            Payload::IdI(IdPayload::fqdn("initiator.example")),
            Payload::IdR(IdPayload::ipv6(Ipv6Addr::LOCALHOST)),
            Payload::Cert(CertPayload {
                encoding: CertEncoding::X509Signature,
                data: vec![0x30, 0x82, 0, 0],
            }),
            Payload::CertReq(CertPayload {
                encoding: CertEncoding::Unknown(77),
                data: vec![1; 20],
            }),
            Payload::Auth(AuthPayload {
                method: AuthMethod::DigitalSignature,
                data: vec![2; 40],
            }),
            Payload::Nonce(vec![3; 16]),
            Payload::Notify(NotifyPayload::new(NotifyType::Unknown(40001), vec![4])),
            Payload::Notify(NotifyPayload {
                protocol: ProtocolId::Esp,
                spi: vec![1, 2, 3, 4],
                notify_type: NotifyType::ChildSaNotFound,
                data: vec![],
            }),
            Payload::Delete(DeletePayload::esp(&[0x0102_0304, 0x0506_0708])),
            Payload::VendorId(b"mifsec".to_vec()),
            Payload::TsI(TsPayload {
                selectors: vec![TrafficSelector::ipv4_any()],
            }),
            Payload::TsR(TsPayload {
                selectors: vec![
                    TrafficSelector::Ipv4 {
                        ip_protocol: 6,
                        start_port: 443,
                        end_port: 443,
                        start: Ipv4Addr::new(192, 0, 2, 0),
                        end: Ipv4Addr::new(192, 0, 2, 255),
                    },
                    TrafficSelector::ipv6_any(),
                ],
            }),
            Payload::Cp(CpPayload {
                cfg_type: CfgType::Request,
                attributes: vec![
                    CfgAttribute::request(CfgAttributeType::InternalIp4Address),
                    CfgAttribute::request(CfgAttributeType::InternalIp6Address),
                    CfgAttribute::request(CfgAttributeType::Unknown(25)),
                ],
            }),
            Payload::Eap(vec![1, 0, 0, 5, 1]),
            Payload::Unknown(UnknownPayload {
                payload_type: 49, // GSPM: named, not decoded
                critical: false,
                body: vec![],
            }),
            Payload::Unknown(UnknownPayload {
                payload_type: 250,
                critical: false,
                body: vec![6; 7],
            }),
        ],
    }
}

/// An IKE_AUTH-like message ending in an SK payload.
fn sk_message() -> Message {
    let (first, _plaintext) = encode_inner_payloads(&[Payload::IdI(IdPayload::key_id(b"k"))]);
    Message {
        header: Header {
            spi_i: 1,
            spi_r: 2,
            minor_version: 0,
            exchange_type: ExchangeType::IkeAuth,
            flags: Flags::INITIATOR,
            message_id: 1,
        },
        payloads: vec![
            Payload::VendorId(vec![1, 2, 3]),
            Payload::Sk(SkPayload::new(first, vec![0xee; 48])),
        ],
    }
}

#[test]
fn every_payload_kind_roundtrips() {
    let msg = every_payload_message();
    let bytes = msg.to_bytes();
    assert_eq!(bytes.len(), msg.buffer_len());
    let back = Message::parse(&bytes).unwrap();
    assert_eq!(back, msg);
    assert_eq!(back.notifies().count(), 2);
    // Open enums keep unknown values.
    assert_eq!(back.header.exchange_type, ExchangeType::Unknown(240));
    assert_eq!(u8::from(back.header.exchange_type), 240);
}

#[test]
fn sk_and_skf_framing() {
    let msg = sk_message();
    let bytes = msg.to_bytes();
    assert_eq!(Message::parse(&bytes).unwrap(), msg);
    // SK's Next Payload names the first inner payload.
    assert_eq!(bytes[HEADER_LEN + 7], u8::from(PayloadType::IdI));
    let offset = msg.encrypted_data_offset().unwrap();
    assert_eq!(offset, HEADER_LEN + 7 + 4);
    assert_eq!(&bytes[offset..], &[0xee; 48]);
    assert_eq!(every_payload_message().encrypted_data_offset(), None);

    let frag = Message {
        header: msg.header,
        payloads: vec![Payload::Skf(SkfPayload {
            first_inner: PayloadType::NoNextPayload,
            fragment_number: 2,
            total_fragments: 3,
            data: vec![0x5a; 20],
        })],
    };
    let bytes = frag.to_bytes();
    assert_eq!(
        &bytes[HEADER_LEN..HEADER_LEN + 8],
        &[0, 0, 0, 28, 0, 2, 0, 3]
    );
    assert_eq!(frag.encrypted_data_offset(), Some(HEADER_LEN + 8));
    assert_eq!(Message::parse(&bytes).unwrap(), frag);

    // A payload after SK is not part of the chain.
    let mut bad = msg.clone();
    bad.payloads.push(Payload::Nonce(vec![1; 16]));
    assert_eq!(
        Message::parse(&bad.to_bytes()),
        Err(WireError::TrailingData {
            what: "payload chain"
        })
    );
}

// ---------------------------------------------------------------------------------------
// Property tests.

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

fn arb_attribute() -> impl Strategy<Value = TransformAttribute> {
    (
        0u16..0x8000,
        prop_oneof![
            any::<u16>().prop_map(AttributeValue::Short),
            bytes(8).prop_map(AttributeValue::Long),
        ],
    )
        .prop_map(|(ty, value)| TransformAttribute {
            attr_type: ty.into(),
            value,
        })
}

fn arb_transform() -> impl Strategy<Value = Transform> {
    (
        any::<u8>(),
        any::<u16>(),
        prop::collection::vec(arb_attribute(), 0..3),
    )
        .prop_map(|(ty, id, attributes)| Transform {
            id: TransformId::from_raw(ty, id),
            attributes,
        })
}

fn arb_sa() -> impl Strategy<Value = SaPayload> {
    let proposal = (
        any::<u8>(),
        any::<u8>(),
        bytes(9),
        prop::collection::vec(arb_transform(), 0..5),
    )
        .prop_map(|(number, protocol, spi, transforms)| Proposal {
            number,
            protocol: protocol.into(),
            spi,
            transforms,
        });
    prop::collection::vec(proposal, 1..4).prop_map(|proposals| SaPayload { proposals })
}

fn arb_delete() -> impl Strategy<Value = DeletePayload> {
    (any::<u8>(), 0u8..9, 0usize..4).prop_flat_map(|(protocol, spi_size, n)| {
        let n = if spi_size == 0 { 0 } else { n };
        prop::collection::vec(prop::collection::vec(any::<u8>(), usize::from(spi_size)), n)
            .prop_map(move |spis| DeletePayload {
                protocol: protocol.into(),
                spi_size,
                spis,
            })
    })
}

fn arb_ts() -> impl Strategy<Value = TsPayload> {
    let selector = prop_oneof![
        (
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(ip_protocol, start_port, end_port, start, end)| {
                TrafficSelector::Ipv4 {
                    ip_protocol,
                    start_port,
                    end_port,
                    start: start.into(),
                    end: end.into(),
                }
            }),
        (
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u128>(),
            any::<u128>()
        )
            .prop_map(|(ip_protocol, start_port, end_port, start, end)| {
                TrafficSelector::Ipv6 {
                    ip_protocol,
                    start_port,
                    end_port,
                    start: start.into(),
                    end: end.into(),
                }
            }),
        (
            any::<u8>().prop_filter("not a decoded TS type", |t| *t != 7 && *t != 8),
            any::<u8>(),
            bytes(12)
        )
            .prop_map(|(ts_type, octet1, data)| TrafficSelector::Unknown {
                ts_type,
                octet1,
                data,
            }),
    ];
    prop::collection::vec(selector, 0..4).prop_map(|selectors| TsPayload { selectors })
}

fn arb_cp() -> impl Strategy<Value = CpPayload> {
    (
        any::<u8>(),
        prop::collection::vec((0u16..0x8000, bytes(18)), 0..4),
    )
        .prop_map(|(cfg_type, attrs)| CpPayload {
            cfg_type: cfg_type.into(),
            attributes: attrs
                .into_iter()
                .map(|(t, value)| CfgAttribute {
                    attr_type: t.into(),
                    value,
                })
                .collect(),
        })
}

/// A payload type that has no decoder (so a parsed one stays `Unknown`).
fn undecoded_type(t: u8) -> bool {
    t != 0 && !(33..=48).contains(&t) && t != 53
}

fn arb_plain_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        arb_sa().prop_map(Payload::Sa),
        (any::<u16>(), bytes(40)).prop_map(|(g, data)| Payload::Ke(KePayload {
            group: g.into(),
            data
        })),
        (any::<u8>(), bytes(24)).prop_map(|(t, data)| Payload::IdI(IdPayload {
            id_type: t.into(),
            data
        })),
        (any::<u8>(), bytes(24)).prop_map(|(t, data)| Payload::IdR(IdPayload {
            id_type: t.into(),
            data
        })),
        (any::<u8>(), bytes(24)).prop_map(|(e, data)| Payload::Cert(CertPayload {
            encoding: e.into(),
            data
        })),
        (any::<u8>(), bytes(24)).prop_map(|(e, data)| Payload::CertReq(CertPayload {
            encoding: e.into(),
            data
        })),
        (any::<u8>(), bytes(24)).prop_map(|(m, data)| Payload::Auth(AuthPayload {
            method: m.into(),
            data
        })),
        bytes(40).prop_map(Payload::Nonce),
        (any::<u8>(), bytes(9), any::<u16>(), bytes(24)).prop_map(|(p, spi, t, data)| {
            Payload::Notify(NotifyPayload {
                protocol: p.into(),
                spi,
                notify_type: t.into(),
                data,
            })
        }),
        arb_delete().prop_map(Payload::Delete),
        bytes(24).prop_map(Payload::VendorId),
        arb_ts().prop_map(Payload::TsI),
        arb_ts().prop_map(Payload::TsR),
        arb_cp().prop_map(Payload::Cp),
        bytes(24).prop_map(Payload::Eap),
        (
            any::<u8>().prop_filter("undecoded", |t| undecoded_type(*t)),
            bytes(24)
        )
            .prop_map(|(payload_type, body)| Payload::Unknown(UnknownPayload {
                payload_type,
                critical: false,
                body,
            })),
    ]
}

fn arb_encrypted_payload() -> impl Strategy<Value = Payload> {
    prop_oneof![
        (any::<u8>(), bytes(64)).prop_map(|(t, data)| Payload::Sk(SkPayload::new(t.into(), data))),
        (
            any::<u8>(),
            (1u16..=u16::MAX).prop_flat_map(|total| (1..=total, Just(total))),
            bytes(64)
        )
            .prop_map(|(t, (fragment_number, total_fragments), data)| {
                Payload::Skf(SkfPayload {
                    first_inner: t.into(),
                    fragment_number,
                    total_fragments,
                    data,
                })
            }),
    ]
}

fn arb_header() -> impl Strategy<Value = Header> {
    (
        any::<u64>(),
        any::<u64>(),
        0u8..16,
        any::<u8>(),
        any::<u8>(),
        any::<u32>(),
    )
        .prop_map(
            |(spi_i, spi_r, minor_version, exchange, flags, message_id)| Header {
                spi_i,
                spi_r,
                minor_version,
                exchange_type: exchange.into(),
                flags: Flags(flags),
                message_id,
            },
        )
}

fn arb_message() -> impl Strategy<Value = Message> {
    (
        arb_header(),
        prop::collection::vec(arb_plain_payload(), 0..6),
        prop::option::of(arb_encrypted_payload()),
    )
        .prop_map(|(header, mut payloads, encrypted)| {
            payloads.extend(encrypted);
            Message { header, payloads }
        })
}

proptest! {
    #[test]
    fn prop_arbitrary_bytes_never_panic(data in bytes(512)) {
        let _ = Message::parse(&data);
    }

    #[test]
    fn prop_header_with_random_payload_bytes_never_panic(
        header in arb_header(),
        first in any::<u8>(),
        body in bytes(300),
    ) {
        let mut buf = Vec::new();
        header.emit(PayloadType::from(first), (HEADER_LEN + body.len()) as u32, &mut buf);
        buf.extend_from_slice(&body);
        if let Ok(msg) = Message::parse(&buf) {
            prop_assert_eq!(Message::parse(&msg.to_bytes()), Ok(msg));
        }
    }

    #[test]
    fn prop_mutated_messages_never_panic(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..5),
    ) {
        let corpus = corpus();
        let mut data = which.get(&corpus).clone();
        for (at, value) in edits {
            let i = at.index(data.len());
            data[i] = value;
        }
        if let Ok(msg) = Message::parse(&data) {
            prop_assert_eq!(Message::parse(&msg.to_bytes()), Ok(msg));
        }
    }

    #[test]
    fn prop_generated_messages_roundtrip(msg in arb_message()) {
        let bytes = msg.to_bytes();
        prop_assert_eq!(bytes.len(), msg.buffer_len());
        prop_assert_eq!(Message::parse(&bytes), Ok(msg.clone()));
        if let Some(offset) = msg.encrypted_data_offset() {
            let data = match msg.payloads.last() {
                Some(Payload::Sk(sk)) => &sk.data,
                Some(Payload::Skf(skf)) => &skf.data,
                _ => unreachable!(),
            };
            prop_assert_eq!(&bytes[offset..], data.as_slice());
        }
    }

    #[test]
    fn prop_inner_chains_roundtrip(payloads in prop::collection::vec(arb_plain_payload(), 0..6)) {
        let (first, plain) = encode_inner_payloads(&payloads);
        let sk = SkPayload::new(first, Vec::new());
        prop_assert_eq!(sk.parse_inner(&plain), Ok(payloads));
    }
}
