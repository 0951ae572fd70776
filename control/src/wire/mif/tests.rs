//! The MIF codec: round trips, PROTOCOL.md section 7's worked examples, malformations.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use mifsec_dataplane::sa_table::Policy;
use proptest::prelude::*;

use super::*;

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn v4(a: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(a), port))
}

fn ts_10_1() -> TrafficSelector {
    TrafficSelector::Ipv4 {
        ip_protocol: 0,
        start_port: 0,
        end_port: 65535,
        start: Ipv4Addr::new(10, 1, 0, 0),
        end: Ipv4Addr::new(10, 1, 255, 255),
    }
}

fn sample_ops() -> Vec<MifOperation> {
    let ops = [
        MifOp::AddInterface {
            id: 3,
            role: MifRole::Active,
        },
        MifOp::AddInterface {
            id: 65535,
            role: MifRole::Standby,
        },
        MifOp::RemoveInterface { id: 2 },
        MifOp::SoftHandover { from: 1, to: 3 },
        MifOp::HardHandover { from: 1, to: 3 },
        MifOp::SetAlternates { ids: vec![] },
        MifOp::SetAlternates { ids: vec![2, 9, 4] },
        MifOp::Check { id: 3 },
    ];
    let sels = [
        MifSelection::All,
        MifSelection::Spis(vec![0xc100_0001]),
        MifSelection::Spis(vec![1, 2, 3]),
        MifSelection::Ts {
            sender: vec![ts_10_1()],
            receiver: vec![],
        },
        MifSelection::Ts {
            sender: vec![],
            receiver: vec![TrafficSelector::ipv6_any(), TrafficSelector::ipv4_any()],
        },
    ];
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        for (j, sel) in sels.iter().enumerate() {
            out.push(MifOperation {
                op: op.clone(),
                dry_run: (i + j) % 2 == 0,
                move_ike: (i + j) % 3 == 0,
                selection: sel.clone(),
            });
        }
    }
    out
}

#[test]
fn every_type_round_trips() {
    for s in [
        MifSupported {
            version: 1,
            max_interfaces: 16,
            max_paths: 16,
        },
        MifSupported {
            version: 7,
            max_interfaces: 0,
            max_paths: 65535,
        },
    ] {
        assert_eq!(MifSupported::parse(&s.emit()).unwrap(), s);
    }
    for i in [
        MifInterface {
            id: 1,
            alternate: false,
            priority: 0,
            addr: v4([198, 18, 1, 2], 4500),
            name: "l1".into(),
        },
        MifInterface {
            id: 65535,
            alternate: true,
            priority: 255,
            addr: SocketAddr::from((Ipv6Addr::LOCALHOST, 1)),
            name: String::new(),
        },
        MifInterface {
            id: 7,
            alternate: false,
            priority: 3,
            addr: v4([10, 0, 0, 1], 4500),
            name: "x".repeat(32),
        },
    ] {
        assert_eq!(MifInterface::parse(&i.emit()).unwrap(), i);
    }
    for g in [0, 1, u32::MAX] {
        let l = MifInterfaceList { generation: g };
        assert_eq!(MifInterfaceList::parse(&l.emit()).unwrap(), l);
    }
    for op in sample_ops() {
        assert_eq!(MifOperation::parse(&op.emit()).unwrap(), op, "{op:?}");
        assert_eq!(MifOperation::refusal(&op.emit()).unwrap(), op);
    }
    for code in 0..=7 {
        let r = MifResult {
            spi: 0xc100_0001,
            status: MifStatus::from_code(code).unwrap(),
            paths: code * 3,
        };
        assert_eq!(r.status.code(), code);
        assert_eq!(MifResult::parse(&r.emit()).unwrap(), r);
    }
    for r in [
        MifRefusal::Malformed,
        MifRefusal::UnknownOperation,
        MifRefusal::UnknownInterface,
        MifRefusal::Limit,
        MifRefusal::NotNegotiated,
    ] {
        assert_eq!(MifRefusal::parse(&r.emit()).unwrap(), r);
    }
    for p in [
        Policy::Failover,
        Policy::Aggregate,
        Policy::Redundant,
        Policy::Pinned,
    ] {
        for c in [
            MifChild {
                policy: p,
                reorder: true,
                interfaces: vec![],
            },
            MifChild {
                policy: p,
                reorder: false,
                interfaces: vec![2, 1, 64],
            },
        ] {
            assert_eq!(MifChild::parse(&c.emit()).unwrap(), c);
        }
    }
}

#[test]
fn long_names_are_cut_at_a_character_boundary() {
    // 31 ASCII octets then a 2-octet character: 33 octets, cut to 31.
    let i = MifInterface {
        id: 1,
        alternate: false,
        priority: 0,
        addr: v4([198, 18, 1, 2], 4500),
        name: format!("{}é", "a".repeat(31)),
    };
    assert_eq!(i.wire_name().len(), 31);
    let back = MifInterface::parse(&i.emit()).unwrap();
    assert_eq!(back.name, "a".repeat(31));
    // Invalid UTF-8 on receipt is shown lossily, still bounded.
    let mut d = hex("0001 0000 1194 0402 c6120102");
    d[7] = 2;
    d.extend_from_slice(&[0xff, 0xfe]);
    let i = MifInterface::parse(&d).unwrap();
    assert_eq!(i.name, "\u{fffd}\u{fffd}");
}

#[test]
fn the_notify_carries_the_data() {
    let s = MifSupported {
        version: 1,
        max_interfaces: 16,
        max_paths: 16,
    };
    let Payload::Notify(n) = s.notify() else {
        panic!("not a notify")
    };
    assert_eq!(n.notify_type.to_raw(), 52992);
    assert!(n.spi.is_empty());
    assert_eq!(n.protocol, crate::wire::ProtocolId::None);
    assert_eq!(n.data, s.emit());
    for (p, t) in [
        (
            MifInterfaceList { generation: 1 }.notify(),
            NotifyType::MifInterfaceList,
        ),
        (MifRefusal::Limit.notify(), NotifyType::MifRefused),
        (
            MifChild {
                policy: Policy::Failover,
                reorder: false,
                interfaces: vec![],
            }
            .notify(),
            NotifyType::MifChild,
        ),
        (sample_ops()[0].notify(), NotifyType::MifOperation),
        (
            MifResult {
                spi: 1,
                status: MifStatus::Applied,
                paths: 1,
            }
            .notify(),
            NotifyType::MifResult,
        ),
    ] {
        let Payload::Notify(n) = p else { panic!() };
        assert_eq!(n.notify_type, t);
        assert!(is_mif_notify(n.notify_type));
    }
    assert!(!is_mif_notify(NotifyType::Unknown(52999)));
    assert!(!is_mif_notify(NotifyType::MobikeSupported));
}

/// PROTOCOL.md section 7, every hex string.
#[test]
fn worked_examples_decode_as_the_doc_says() {
    assert_eq!(
        MifSupported::parse(&hex("01 00 00 10 00 10")).unwrap(),
        MifSupported {
            version: 1,
            max_interfaces: 16,
            max_paths: 16
        }
    );
    let l1 = MifInterface::parse(&hex("00 01 00 00 11 94 04 02 c6 12 01 02 6c 31")).unwrap();
    assert_eq!(
        l1,
        MifInterface {
            id: 1,
            alternate: false,
            priority: 0,
            addr: v4([198, 18, 1, 2], 4500),
            name: "l1".into()
        }
    );
    let l2 = MifInterface::parse(&hex("00 02 00 0a 11 94 04 02 c6 12 02 02 6c 32")).unwrap();
    assert_eq!(
        l2,
        MifInterface {
            id: 2,
            alternate: false,
            priority: 10,
            addr: v4([198, 18, 2, 2], 4500),
            name: "l2".into()
        }
    );
    assert_eq!(l2.emit(), hex("00 02 00 0a 11 94 04 02 c6 12 02 02 6c 32"));
    assert_eq!(
        MifInterfaceList::parse(&hex("00 00 00 01"))
            .unwrap()
            .generation,
        1
    );
    assert_eq!(
        MifChild::parse(&hex("01 00 00 00")).unwrap(),
        MifChild {
            policy: Policy::Aggregate,
            reorder: false,
            interfaces: vec![]
        }
    );
    // ADD_INTERFACE id 3 active, ALL.
    let add = hex("01 00 00 00 | 00 03 00 00 | 00 00 00 00");
    assert_eq!(
        MifOperation::parse(&add).unwrap(),
        MifOperation {
            op: MifOp::AddInterface {
                id: 3,
                role: MifRole::Active
            },
            dry_run: false,
            move_ike: false,
            selection: MifSelection::All
        }
    );
    assert_eq!(
        MifInterfaceList::parse(&hex("00 00 00 02"))
            .unwrap()
            .generation,
        2
    );
    let applied6 = MifResult::parse(&hex("c1 00 00 01 00 06 00 00")).unwrap();
    assert_eq!((applied6.status, applied6.paths), (MifStatus::Applied, 6));
    // REMOVE_INTERFACE 2, ALL.
    assert_eq!(
        MifOperation::parse(&hex("02 00 00 00 | 00 02 00 00 | 00 00 00 00"))
            .unwrap()
            .op,
        MifOp::RemoveInterface { id: 2 }
    );
    // SOFT_HANDOVER 1 -> 3 of two SPIs.
    let soft = hex("03 00 00 00 | 00 01 00 03 | 01 00 00 02 | c1 00 00 01 | c1 00 00 02");
    let op = MifOperation {
        op: MifOp::SoftHandover { from: 1, to: 3 },
        dry_run: false,
        move_ike: false,
        selection: MifSelection::Spis(vec![0xc100_0001, 0xc100_0002]),
    };
    assert_eq!(MifOperation::parse(&soft).unwrap(), op);
    assert_eq!(op.emit(), soft);
    for spi in ["c1000001", "c1000002"] {
        let r = MifResult::parse(&hex(&format!("{spi} 00 02 00 00"))).unwrap();
        assert_eq!((r.status, r.paths), (MifStatus::Applied, 2));
    }
    // HARD_HANDOVER 1 -> 3 with MOVE_IKE, ALL.
    let hard = MifOperation::parse(&hex("04 02 00 00 | 00 01 00 03 | 00 00 00 00")).unwrap();
    assert_eq!(
        hard,
        MifOperation {
            op: MifOp::HardHandover { from: 1, to: 3 },
            dry_run: false,
            move_ike: true,
            selection: MifSelection::All
        }
    );
    // SET_ALTERNATES [2] for children inside 10.1.0.0/16 on C's side.
    let mut alt = hex("05 00 00 00 | 01 00 00 02 | 02 00 01 00");
    alt.extend(hex("07 00 00 10 0000 ffff 0a010000 0a01ffff"));
    let op = MifOperation {
        op: MifOp::SetAlternates { ids: vec![2] },
        dry_run: false,
        move_ike: false,
        selection: MifSelection::Ts {
            sender: vec![ts_10_1()],
            receiver: vec![],
        },
    };
    assert_eq!(MifOperation::parse(&alt).unwrap(), op);
    assert_eq!(op.emit(), alt);
    // CHECK of interface 3 for one SPI, answered OUTSIDE_SPD with 2 paths.
    let check = hex("06 00 00 00 | 00 03 00 00 | 01 00 00 01 | c1 00 00 01");
    assert_eq!(
        MifOperation::parse(&check).unwrap(),
        MifOperation {
            op: MifOp::Check { id: 3 },
            dry_run: false,
            move_ike: false,
            selection: MifSelection::Spis(vec![0xc100_0001])
        }
    );
    assert_eq!(
        MifResult::parse(&hex("c1000001 02 02 00 00")).unwrap(),
        MifResult {
            spi: 0xc100_0001,
            status: MifStatus::OutsideSpd,
            paths: 2
        }
    );
}

#[test]
fn malformed_supported_list_result_refused() {
    for d in ["", "01 00 00 10 00", "01 00 00 10 00 10 00"] {
        assert!(MifSupported::parse(&hex(d)).is_err(), "{d}");
    }
    for d in ["", "00 00 01", "00 00 00 01 00"] {
        assert!(MifInterfaceList::parse(&hex(d)).is_err(), "{d}");
    }
    for d in [
        "c1000001 00 02 00",
        "c1000001 00 02 00 00 00",
        "c1000001 08 02 00 00",
        "c1000001 ff 02 00 00",
    ] {
        assert!(MifResult::parse(&hex(d)).is_err(), "{d}");
    }
    for d in [
        "",
        "01 00 00",
        "01 00 00 00 00",
        "00 00 00 00",
        "06 00 00 00",
    ] {
        assert!(MifRefusal::parse(&hex(d)).is_err(), "{d}");
    }
}

#[test]
fn malformed_interfaces_refused() {
    let good = "00 01 00 00 11 94 04 02 c6 12 01 02 6c 31";
    assert!(MifInterface::parse(&hex(good)).is_ok());
    for d in [
        // ID 0.
        "00 00 00 00 11 94 04 02 c6 12 01 02 6c 31",
        // Family 5, family 0.
        "00 01 00 00 11 94 05 02 c6 12 01 02 6c 31",
        "00 01 00 00 11 94 00 02 c6 12 01 02 6c 31",
        // Family 6 with a 4-octet address.
        "00 01 00 00 11 94 06 02 c6 12 01 02 6c 31",
        // Name longer than the data, shorter than the data (a trailing octet).
        "00 01 00 00 11 94 04 03 c6 12 01 02 6c 31",
        "00 01 00 00 11 94 04 01 c6 12 01 02 6c 31",
        "00 01 00 00 11 94 04 02 c6 12 01 02 6c 31 00",
        // Truncated header, address.
        "00 01 00 00 11 94 04",
        "00 01 00 00 11 94 04 00 c6 12 01",
        "",
    ] {
        assert!(MifInterface::parse(&hex(d)).is_err(), "{d}");
    }
    // A name of 33 octets.
    let mut d = hex("00 01 00 00 11 94 04 21 c6 12 01 02");
    d.extend(std::iter::repeat_n(b'a', 33));
    assert!(MifInterface::parse(&d).is_err());
    let mut d = hex("00 01 00 00 11 94 04 20 c6 12 01 02");
    d.extend(std::iter::repeat_n(b'a', 32));
    assert!(MifInterface::parse(&d).is_ok());
    // IPv6 exact length only.
    let mut d = hex("00 01 01 05 11 94 06 00");
    d.extend([0u8; 16]);
    let i = MifInterface::parse(&d).unwrap();
    assert!(i.alternate && i.addr.is_ipv6() && i.priority == 5);
    d.push(0);
    assert!(MifInterface::parse(&d).is_err());
}

#[test]
fn malformed_children_refused() {
    assert!(MifChild::parse(&hex("03 01 00 02 00 01 00 02")).is_ok());
    for d in [
        "",
        "01 00 00",
        // Policy 4.
        "04 00 00 00",
        // Count beyond the data, below it.
        "01 00 00 02 00 01",
        "01 00 00 01 00 01 00 02",
        // Trailing odd octet.
        "01 00 00 01 00 01 00",
        // ID 0; an ID twice.
        "01 00 00 01 00 00",
        "01 00 00 02 00 01 00 01",
    ] {
        assert!(MifChild::parse(&hex(d)).is_err(), "{d}");
    }
    // More than 64 IDs.
    let mut d = hex("00 00 00 41");
    for id in 1..=65u16 {
        d.extend(id.to_be_bytes());
    }
    assert!(MifChild::parse(&d).is_err());
}

#[test]
fn malformed_operations_refused_with_the_right_reason() {
    use MifRefusal::*;
    let cases: &[(&str, MifRefusal)] = &[
        ("", Malformed),
        ("01 00 00", Malformed),
        // Unknown operation codes.
        ("00 00 00 00 00 03 00 00 00 00 00 00", UnknownOperation),
        ("07 00 00 00 00 03 00 00 00 00 00 00", UnknownOperation),
        ("ff 00 00 00", UnknownOperation),
        // Interface ID 0 in each body.
        ("01 00 00 00 00 00 00 00 00 00 00 00", Malformed),
        ("02 00 00 00 00 00 00 00 00 00 00 00", Malformed),
        ("03 00 00 00 00 01 00 00 00 00 00 00", Malformed),
        ("04 00 00 00 00 00 00 03 00 00 00 00", Malformed),
        ("06 00 00 00 00 00 00 00 00 00 00 00", Malformed),
        ("05 00 00 00 01 00 00 00 00 00 00 00", Malformed),
        // Role 2.
        ("01 00 00 00 00 03 02 00 00 00 00 00", Malformed),
        // Body cut short.
        ("03 00 00 00 00 01", Malformed),
        // Alternates: count beyond the data, an ID twice, more than 64.
        ("05 00 00 00 02 00 00 02 00 00 00 00", Malformed),
        ("05 00 00 00 02 00 00 02 00 02 00 00 00 00", Malformed),
        ("05 00 00 00 41 00", Limit),
        // No selection; kind 0 with a count; unknown kind.
        ("01 00 00 00 00 03 00 00", Malformed),
        ("01 00 00 00 00 03 00 00 00 00 00 01", Malformed),
        ("01 00 00 00 00 03 00 00 03 00 00 00", Malformed),
        // SPIs: count 0, beyond the data, below it, SPI 0, more than 256.
        ("01 00 00 00 00 03 00 00 01 00 00 00", Malformed),
        ("01 00 00 00 00 03 00 00 01 00 00 02 c1 00 00 01", Malformed),
        (
            "01 00 00 00 00 03 00 00 01 00 00 01 c1 00 00 01 c1 00 00 02",
            Malformed,
        ),
        ("01 00 00 00 00 03 00 00 01 00 00 01 00 00 00 00", Malformed),
        ("01 00 00 00 00 03 00 00 01 00 01 01", Limit),
        // Selectors: 17 of the sender's, 17 of the receiver's, fewer than declared, an
        // unknown TS type, a trailing octet.
        ("01 00 00 00 00 03 00 00 02 00 11 00", Limit),
        ("01 00 00 00 00 03 00 00 02 00 00 11", Limit),
        (
            "01 00 00 00 00 03 00 00 02 00 01 01 07 00 00 10 0000 ffff 0a010000 0a01ffff",
            Malformed,
        ),
        (
            "01 00 00 00 00 03 00 00 02 00 01 00 09 00 00 08 0000 ffff",
            Malformed,
        ),
        (
            "01 00 00 00 00 03 00 00 02 00 01 00 07 00 00 10 0000 ffff 0a010000 0a01ffff 00",
            Malformed,
        ),
        // Trailing octets after ALL.
        ("01 00 00 00 00 03 00 00 00 00 00 00 00", Malformed),
    ];
    for (d, reason) in cases {
        let d = hex(d);
        assert!(MifOperation::parse(&d).is_err(), "{d:02x?}");
        assert_eq!(MifOperation::refusal(&d), Err(*reason), "{d:02x?}");
    }
}

#[test]
fn collect_finds_every_mif_notify_and_refuses_doubles() {
    use crate::wire::NotifyPayload;
    let child = MifChild {
        policy: Policy::Redundant,
        reorder: true,
        interfaces: vec![1],
    };
    let i1 = MifInterface {
        id: 1,
        alternate: false,
        priority: 0,
        addr: v4([198, 18, 1, 2], 4500),
        name: "l1".into(),
    };
    let payloads = vec![
        Payload::Nonce(vec![1; 16]),
        Payload::Notify(NotifyPayload::new(NotifyType::MobikeSupported, vec![])),
        Payload::Notify(NotifyPayload::new(NotifyType::Unknown(40990), vec![1, 2])),
        MifSupported {
            version: 1,
            max_interfaces: 16,
            max_paths: 8,
        }
        .notify(),
        i1.notify(),
        MifInterfaceList { generation: 1 }.notify(),
        child.notify(),
    ];
    let m = MifNotifies::collect(&payloads).unwrap();
    assert_eq!(m.supported.unwrap().max_paths, 8);
    assert_eq!(m.interfaces, vec![i1.clone()]);
    assert_eq!(m.list.unwrap().generation, 1);
    assert_eq!(m.child.as_ref(), Some(&child));
    assert!(!m.is_empty());
    assert!(MifNotifies::collect(&payloads[..3]).unwrap().is_empty());

    let mut twice = payloads.clone();
    twice.push(child.notify());
    assert!(MifNotifies::collect(&twice).is_err());
    let mut same_id = payloads.clone();
    same_id.push(i1.notify());
    assert!(MifNotifies::collect(&same_id).is_err());
    let mut bad = payloads.clone();
    bad.push(Payload::Notify(NotifyPayload::new(
        NotifyType::MifResult,
        vec![0; 7],
    )));
    assert!(MifNotifies::collect(&bad).is_err());
    // With an SPI.
    let mut spi = NotifyPayload::new(NotifyType::MifInterfaceList, vec![0, 0, 0, 2]);
    spi.spi = vec![1, 2, 3, 4];
    assert!(MifNotifies::collect(&[Payload::Notify(spi)]).is_err());
    // 65 interfaces.
    let many: Vec<Payload> = (1..=65u16)
        .map(|id| MifInterface { id, ..i1.clone() }.notify())
        .collect();
    assert!(MifNotifies::collect(&many).is_err());
    assert!(MifNotifies::collect(&many[..64]).is_ok());
}

fn arb_ts() -> impl Strategy<Value = TrafficSelector> {
    prop_oneof![
        (
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(|(p, a, b, s, e)| TrafficSelector::Ipv4 {
                ip_protocol: p,
                start_port: a,
                end_port: b,
                start: s.into(),
                end: e.into()
            }),
        (any::<u8>(), any::<u128>(), any::<u128>()).prop_map(|(p, s, e)| {
            TrafficSelector::Ipv6 {
                ip_protocol: p,
                start_port: 0,
                end_port: 65535,
                start: s.into(),
                end: e.into(),
            }
        }),
    ]
}

fn arb_ids(max: usize) -> impl Strategy<Value = Vec<u16>> {
    proptest::collection::btree_set(1..=u16::MAX, 0..=max).prop_map(|s| s.into_iter().collect())
}

fn arb_op() -> impl Strategy<Value = MifOp> {
    let id = 1..=u16::MAX;
    prop_oneof![
        (id.clone(), any::<bool>()).prop_map(|(id, s)| MifOp::AddInterface {
            id,
            role: if s { MifRole::Standby } else { MifRole::Active }
        }),
        id.clone().prop_map(|id| MifOp::RemoveInterface { id }),
        (id.clone(), id.clone()).prop_map(|(from, to)| MifOp::SoftHandover { from, to }),
        (id.clone(), id.clone()).prop_map(|(from, to)| MifOp::HardHandover { from, to }),
        arb_ids(64).prop_map(|ids| MifOp::SetAlternates { ids }),
        id.prop_map(|id| MifOp::Check { id }),
    ]
}

fn arb_selection() -> impl Strategy<Value = MifSelection> {
    prop_oneof![
        Just(MifSelection::All),
        proptest::collection::vec(1..=u32::MAX, 1..=256).prop_map(MifSelection::Spis),
        (
            proptest::collection::vec(arb_ts(), 0..=16),
            proptest::collection::vec(arb_ts(), 0..=16)
        )
            .prop_map(|(sender, receiver)| MifSelection::Ts { sender, receiver }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn operations_round_trip(op in arb_op(), dry_run: bool, move_ike: bool, selection in arb_selection()) {
        let o = MifOperation { op, dry_run, move_ike, selection };
        prop_assert_eq!(MifOperation::parse(&o.emit()).unwrap(), o);
    }

    #[test]
    fn interfaces_round_trip(id in 1..=u16::MAX, alternate: bool, priority: u8, port: u16,
                             v6: bool, a: u128, name in "[a-z0-9.-]{0,32}") {
        let ip: std::net::IpAddr = if v6 { Ipv6Addr::from(a).into() } else { Ipv4Addr::from(a as u32).into() };
        let i = MifInterface { id, alternate, priority, addr: SocketAddr::new(ip, port), name };
        prop_assert_eq!(MifInterface::parse(&i.emit()).unwrap(), i);
    }

    #[test]
    fn children_round_trip(p in 0u8..4, reorder: bool, interfaces in arb_ids(64)) {
        let c = MifChild { policy: policy_from(p).unwrap(), reorder, interfaces };
        prop_assert_eq!(MifChild::parse(&c.emit()).unwrap(), c);
    }

    #[test]
    fn arbitrary_bytes_never_panic(d in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = MifSupported::parse(&d);
        let _ = MifInterface::parse(&d);
        let _ = MifInterfaceList::parse(&d);
        let _ = MifOperation::refusal(&d);
        let _ = MifResult::parse(&d);
        let _ = MifRefusal::parse(&d);
        let _ = MifChild::parse(&d);
    }
}
