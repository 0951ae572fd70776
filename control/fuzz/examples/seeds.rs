//! Writes the committed seed corpus of every control-plane fuzz target into
//! `corpus/TARGET/` (run by `scripts/fuzz-seeds.sh`, which builds it with `--cfg fuzzing`).
//! The IKE seeds are genuine messages of live SAs, opened by their receiver: their inner
//! payloads, with the child SPIs replaced by the placeholders `ike_inner` patches back in.

use std::fs;
use std::path::Path;

use mifsec_control::ctl::Request;
use mifsec_control::ike::{IkeSa, LocalInterface, sample};
use mifsec_control::wire::{
    CfgAttribute, CfgAttributeType, CfgType, CpPayload, DeletePayload, ExchangeType, HeaderPacket,
    MifChild, MifOp, MifOperation, MifSelection, NotifyPayload, NotifyType, Payload, PayloadType,
    encode_inner_payloads,
};

#[path = "../fuzz_targets/ike_inner/mod.rs"]
mod ike_inner;

use ike_inner::{MARK, Op, Pair};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target);
    fs::create_dir_all(&dir).expect("create the corpus directory");
    fs::write(dir.join(name), bytes).expect("write a seed");
}

/// Inner payload bytes with the victim's child SPIs replaced by placeholders.
fn mark(pair: &Pair, payloads: &[Payload]) -> (u8, Vec<u8>) {
    let (first, mut plain) = encode_inner_payloads(payloads);
    for (j, (spi_in, spi_out)) in pair.victim.child_spis().into_iter().enumerate() {
        for (spi, k) in [(spi_out, j as u8), (spi_in, j as u8 | 0x80)] {
            let needle = spi.to_be_bytes();
            let mut i = 0;
            while i + 4 <= plain.len() {
                if plain[i..i + 4] == needle {
                    plain[i..i + 3].copy_from_slice(&MARK);
                    plain[i + 3] = k;
                    i += 4;
                } else {
                    i += 1;
                }
            }
        }
    }
    (first.to_raw(), plain)
}

/// The first request `from_peer` (else the victim) sends after `start`, opened by the
/// other side: exchange type and inner payloads.
fn capture(
    victim_is_initiator: bool,
    from_peer: bool,
    start: impl FnOnce(&mut Pair),
) -> Option<(Pair, u8, Vec<Payload>)> {
    let mut pair = Pair::new(victim_is_initiator)?;
    start(&mut pair);
    let (sender, receiver) = if from_peer {
        (&mut pair.peer, &pair.victim)
    } else {
        (&mut pair.victim, &pair.peer)
    };
    let t = sender.poll_transmit()?;
    let exchange = HeaderPacket::new_checked(&t.bytes[..])
        .ok()?
        .exchange_type();
    let payloads = receiver.fuzz_open(&t.bytes)?;
    Some((pair, exchange.to_raw(), payloads))
}

/// The peer's genuine answer to the victim's first request after `start`.
fn capture_response(
    victim_is_initiator: bool,
    start: impl FnOnce(&mut Pair),
) -> Option<(u8, Vec<u8>)> {
    let mut pair = Pair::new(victim_is_initiator)?;
    start(&mut pair);
    let t = pair.victim.poll_transmit()?;
    let now = pair.now;
    pair.peer.handle_datagram(now, t.remote, t.local, &t.bytes);
    let answer = pair.peer.poll_transmit()?;
    let payloads = pair.victim.fuzz_open(&answer.bytes)?;
    Some(mark(&pair, &payloads))
}

fn script(ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    for op in ops {
        op.encode(&mut out);
    }
    out
}

fn request(exchange: u8, (first, plain): (u8, Vec<u8>)) -> Op {
    Op::Request {
        exchange,
        id_offset: 0,
        flags_xor: 0,
        first,
        plain,
    }
}

fn ike_seeds(victim_is_initiator: bool) {
    let target = if victim_is_initiator {
        "ike_inner_initiator"
    } else {
        "ike_inner_responder"
    };
    let cc = ExchangeType::CreateChildSa.to_raw();
    let info = ExchangeType::Informational.to_raw();
    let mut seeds: Vec<(&str, Vec<u8>)> = Vec::new();

    let rekey = capture(victim_is_initiator, true, |p| {
        p.peer.rekey_children(p.now);
    })
    .expect("a child rekey request");
    let (pair, exch, payloads) = rekey;
    let child = mark(&pair, &payloads);
    seeds.push(("child-rekey", script(&[request(exch, child.clone())])));
    // Without REKEY_SA it asks for a new child SA.
    let fresh: Vec<Payload> = payloads
        .iter()
        .filter(|p| !matches!(p, Payload::Notify(n) if n.notify_type == NotifyType::RekeySa))
        .cloned()
        .collect();
    seeds.push(("new-child", script(&[request(exch, mark(&pair, &fresh))])));
    seeds.push((
        "child-rekey-fragments",
        script(&[Op::Fragments {
            exchange: exch,
            id_offset: 0,
            count: 3,
            mode: 4,
            first: child.0,
            plain: child.1.clone(),
        }]),
    ));
    // The peer's inbound SPI of child 0 and the victim's own, as placeholders.
    let delete = |spi_k: u8| {
        let mut d = DeletePayload::esp(&[0]);
        d.spis = vec![[MARK[0], MARK[1], MARK[2], spi_k].to_vec()];
        mark(&pair, &[Payload::Delete(d)])
    };
    seeds.push(("delete-child", script(&[request(info, delete(0))])));
    seeds.push(("delete-own-child", script(&[request(info, delete(0x80))])));
    seeds.push((
        "delete-ike",
        script(&[request(
            info,
            mark(&pair, &[Payload::Delete(DeletePayload::ike())]),
        )]),
    ));
    seeds.push(("liveness", script(&[request(info, (0, Vec::new()))])));
    let update = [
        Payload::Notify(NotifyPayload::new(
            NotifyType::UpdateSaAddresses,
            Vec::new(),
        )),
        Payload::Notify(NotifyPayload::new(
            NotifyType::NatDetectionSourceIp,
            vec![1; 20],
        )),
        Payload::Notify(NotifyPayload::new(
            NotifyType::NatDetectionDestinationIp,
            vec![2; 20],
        )),
    ];
    seeds.push((
        "mobike-update",
        script(&[request(info, mark(&pair, &update))]),
    ));
    let cp = CpPayload {
        cfg_type: CfgType::Request,
        attributes: vec![CfgAttribute::request(CfgAttributeType::InternalIp4Address)],
    };
    seeds.push((
        "cp-request",
        script(&[request(info, mark(&pair, &[Payload::Cp(cp)]))]),
    ));
    // The multi-interface extension (negotiated by the pair): a new child with MIF_CHILD,
    // the peer's new interface list with its automatic operation, an operation of the
    // peer's, and the peer's answer to one of the victim's.
    let mut mif_child = fresh.clone();
    mif_child.push(
        MifChild {
            policy: mifsec_control::dataplane::sa_table::Policy::Aggregate,
            reorder: true,
            interfaces: vec![2, 1],
        }
        .notify(),
    );
    seeds.push((
        "new-child-mif",
        script(&[request(exch, mark(&pair, &mif_child))]),
    ));
    let three = |sa: &IkeSa| {
        let mut l: Vec<LocalInterface> = sa
            .mif_local_interfaces()
            .iter()
            .map(|i| LocalInterface {
                name: i.name.clone(),
                addr: i.addr.ip(),
                port: i.addr.port(),
                priority: i.priority,
                alternate: i.alternate,
            })
            .collect();
        l.push(LocalInterface {
            name: "l3".into(),
            addr: "198.18.2.9".parse().expect("an address"),
            port: 4500,
            priority: 5,
            alternate: true,
        });
        l
    };
    if let Some((pair, exch, payloads)) = capture(victim_is_initiator, true, |p| {
        let l = three(&p.peer);
        p.peer.set_local_interfaces(p.now, &l);
    }) {
        seeds.push(("mif-list", script(&[request(exch, mark(&pair, &payloads))])));
    }
    let soft = MifOperation {
        op: MifOp::SoftHandover { from: 1, to: 2 },
        dry_run: false,
        move_ike: false,
        selection: MifSelection::All,
    };
    if let Some((pair, exch, payloads)) = capture(victim_is_initiator, true, |p| {
        let _ = p.peer.mif_request(p.now, soft.clone());
    }) {
        seeds.push((
            "mif-operation",
            script(&[request(exch, mark(&pair, &payloads))]),
        ));
    }
    // The same CHECK as trigger 4 of `Op::Response`.
    if let Some((first, plain)) = capture_response(victim_is_initiator, |p| {
        let check = MifOperation {
            op: MifOp::Check { id: 2 },
            dry_run: true,
            move_ike: false,
            selection: MifSelection::All,
        };
        let _ = p.victim.mif_request(p.now, check);
    }) {
        seeds.push((
            "answer-mif",
            script(&[Op::Response {
                trigger: 4,
                deliver: 1,
                exchange: 0,
                flags_xor: 0,
                first,
                plain,
            }]),
        ));
    }

    let (pair, exch, payloads) = capture(victim_is_initiator, true, |p| {
        p.peer.rekey_ike(p.now);
    })
    .expect("an IKE rekey request");
    seeds.push((
        "ike-rekey",
        script(&[request(exch, mark(&pair, &payloads))]),
    ));

    for (name, trigger, start) in [("answer-child-rekey", 0u8, 0u8), ("answer-ike-rekey", 1, 1)] {
        let Some((first, plain)) = capture_response(victim_is_initiator, |p| {
            if start == 0 {
                p.victim.rekey_children(p.now);
            } else {
                p.victim.rekey_ike(p.now);
            }
        }) else {
            continue;
        };
        for deliver in [0u8, 1] {
            let op = Op::Response {
                trigger,
                deliver,
                exchange: 0,
                flags_xor: 0,
                first,
                plain: plain.clone(),
            };
            let name = format!("{name}-{deliver}");
            seeds.push((Box::leak(name.into_boxed_str()), script(&[op])));
        }
    }
    seeds.push((
        "answer-liveness",
        script(&[Op::Response {
            trigger: 2,
            deliver: 1,
            exchange: 0,
            flags_xor: 0,
            first: 0,
            plain: Vec::new(),
        }]),
    ));
    seeds.push((
        "lifetimes",
        script(&[
            Op::Genuine { which: 0 },
            Op::Wait { secs: 100 },
            request(info, delete(0)),
            Op::Genuine { which: 3 },
            Op::Wait { secs: 20_000 },
            Op::Genuine { which: 2 },
        ]),
    ));
    seeds.push((
        "raw-and-peer-delete",
        script(&[Op::Raw { bytes: vec![0; 28] }, Op::Genuine { which: 4 }]),
    ));
    for (name, bytes) in seeds {
        write(target, name, &bytes);
    }
}

fn init_request() -> Vec<u8> {
    let now = std::time::Instant::now();
    let mut i = IkeSa::initiate(
        sample::client(),
        now,
        "198.18.0.2:500".parse().unwrap(),
        "198.18.0.1:500".parse().unwrap(),
    )
    .expect("initiate");
    i.poll_transmit().expect("IKE_SA_INIT request").bytes
}

/// The ```toml blocks of a Markdown file.
fn toml_blocks(md: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in md.lines() {
        match (&mut cur, line.trim_start()) {
            (None, l) if l.starts_with("```toml") => cur = Some(String::new()),
            (Some(_), l) if l.starts_with("```") => out.extend(cur.take()),
            (Some(c), _) => {
                c.push_str(line);
                c.push('\n');
            }
            _ => {}
        }
    }
    out
}

/// A `cert_auth` input: the mode byte, then each piece with its 2-byte length.
fn cert_input(mode: u8, pieces: &[&[u8]]) -> Vec<u8> {
    let mut out = vec![mode];
    for p in pieces {
        out.extend_from_slice(&(p.len() as u16).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// `cert_auth` seeds: a CA and an end entity for `gw` (rcgen), an intermediate chain, an
/// RFC 7427 AUTH with its key, the AlgorithmIdentifiers, PEM and DER keys and certificates.
fn cert_seeds() {
    use mifsec_control::ike::auth::{PrivateKey, Scheme};
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
    let ca_params = |cn: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, cn);
        p
    };
    let ca_key = KeyPair::generate_for(alg).unwrap();
    let ca = ca_params("seed CA").self_signed(&ca_key).unwrap();
    let mid_key = KeyPair::generate_for(alg).unwrap();
    let mid = ca_params("seed intermediate")
        .signed_by(&mid_key, &ca, &ca_key)
        .unwrap();
    let leaf = |issuer: &rcgen::Certificate, issuer_key: &KeyPair| {
        let key = KeyPair::generate_for(alg).unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.subject_alt_names = vec![SanType::DnsName("gw".try_into().unwrap())];
        p.distinguished_name.push(DnType::CommonName, "gw");
        (p.signed_by(&key, issuer, issuer_key).unwrap(), key)
    };
    let (ee, ee_key) = leaf(&ca, &ca_key);
    let (ee2, _) = leaf(&mid, &mid_key);
    write("cert_auth", "chain", &cert_input(0, &[ca.der(), ee.der()]));
    write(
        "cert_auth",
        "chain-dn",
        &cert_input(0x90, &[ca.der(), ee.der()]),
    );
    write(
        "cert_auth",
        "chain-intermediate",
        &cert_input(0, &[ca.der(), ee2.der(), mid.der()]),
    );
    let k = PrivateKey::from_pem_or_der(&ee_key.serialize_der()).unwrap();
    let (_, auth) = k.sign_auth(&[2], false, b"octets").unwrap();
    write("cert_auth", "auth", &cert_input(0xe1, &[&k.spki(), &auth]));
    let (_, legacy) = k.sign_auth(&[], false, b"octets").unwrap();
    write(
        "cert_auth",
        "auth-legacy",
        &cert_input(0x91, &[&k.spki(), &legacy]),
    );
    let ids: Vec<Vec<u8>> = [
        Scheme::EcdsaSha256,
        Scheme::Ed25519,
        Scheme::RsaSha256,
        Scheme::RsaPssSha256,
    ]
    .iter()
    .map(|s| s.algorithm_identifier())
    .collect();
    let refs: Vec<&[u8]> = ids.iter().map(Vec::as_slice).collect();
    write("cert_auth", "algorithm-identifiers", &cert_input(2, &refs));
    write(
        "cert_auth",
        "files",
        &cert_input(
            3,
            &[
                ee_key.serialize_pem().as_bytes(),
                &ee_key.serialize_der(),
                ee.pem().as_bytes(),
                ee.der(),
            ],
        ),
    );
}

/// `mif_parse`: PROTOCOL.md section 7's Notification Data (selector byte first) and one
/// message's worth of MIF notifies (selector 7).
fn mif_seeds() {
    let hex = |s: &str| -> Vec<u8> {
        let s: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let examples = [
        ("supported", 0, "01 00 00 10 00 10"),
        ("interface", 1, "00 01 00 00 11 94 04 02 c6 12 01 02 6c 31"),
        ("list", 2, "00 00 00 01"),
        ("add", 3, "01 00 00 00 00 03 00 00 00 00 00 00"),
        (
            "soft",
            3,
            "03 00 00 00 00 01 00 03 01 00 00 02 c1 00 00 01 c1 00 00 02",
        ),
        ("hard", 3, "04 02 00 00 00 01 00 03 00 00 00 00"),
        (
            "alternates",
            3,
            "05 00 00 00 01 00 00 02 02 00 01 00 07 00 00 10 0000 ffff 0a010000 0a01ffff",
        ),
        (
            "check",
            3,
            "06 00 00 00 00 03 00 00 01 00 00 01 c1 00 00 01",
        ),
        ("result", 4, "c1 00 00 01 02 02 00 00"),
        ("refused", 5, "03 00 00 00"),
        ("child", 6, "01 01 00 02 00 02 00 01"),
        (
            "message",
            7,
            "00 06 01 00 00 10 00 10 \
             01 0e 00 01 00 00 11 94 04 02 c6 12 01 02 6c 31 \
             01 0e 00 02 01 0a 11 94 04 02 c6 12 02 02 6c 32 \
             01 18 00 03 00 00 11 94 06 00 fd000000000000000000000000000001 \
             02 04 00 00 00 01 \
             06 04 01 00 00 00",
        ),
    ];
    for (name, sel, data) in examples {
        let mut b = vec![sel];
        b.extend(hex(data));
        write("mif_parse", &format!("{name}.bin"), &b);
    }
}

fn main() {
    ike_seeds(true);
    ike_seeds(false);
    mif_seeds();
    cert_seeds();

    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut n = 0;
    for doc in ["docs/CONFIG.md", "README.md"] {
        let md = fs::read_to_string(root.join(doc)).expect("read the documentation");
        for block in toml_blocks(&md) {
            write("config_parse", &format!("doc-{n}.toml"), block.as_bytes());
            n += 1;
        }
    }
    write("config_parse", "empty.toml", b"");

    let requests = [
        Request::Status {},
        Request::Keys {},
        Request::Handover {
            sa: "t".into(),
            path: "fast".into(),
            hard: true,
        },
        Request::AddInterface {
            name: "l3".into(),
            address: "198.18.3.2".into(),
            device: Some("v3".into()),
            port: Some(4501),
        },
        Request::RemoveInterface { name: "l3".into() },
        Request::Policy {
            sa: "t".into(),
            policy: "aggregate".into(),
        },
        Request::AddPath {
            sa: "t".into(),
            name: "p2".into(),
            interface: "l3".into(),
            remote: "198.18.3.1:4500".into(),
            role: Some("backup".into()),
            weight: Some(3),
            pin: vec!["10.0.0.0/8".into()],
        },
        Request::RemovePath {
            sa: "t".into(),
            name: "p2".into(),
        },
        Request::Initiate { conn: "c".into() },
        Request::Terminate { conn: "c".into() },
        Request::Rekey {
            conn: "c".into(),
            ike: true,
        },
    ];
    for (i, r) in requests.iter().enumerate() {
        let line = serde_json::to_string(r).expect("a request encodes");
        write("ctl_request", &format!("request-{i}.json"), line.as_bytes());
    }

    let init = init_request();
    for (name, head) in [("always", [0u8, 0, 1, 0]), ("threshold", [2, 5, 9, 61])] {
        let mut seed = head.to_vec();
        seed.extend_from_slice(&init);
        write("cookie_gate", name, &seed);
    }

    // Fragment records: response, id, number, total, first, len, data.
    let mut frags = vec![4u8, 16];
    for (number, data) in [(2u8, &b"world"[..]), (1, b"hello "), (3, b"!")] {
        frags.extend_from_slice(&[0, 5, number, 3, PayloadType::Notify.to_raw()]);
        frags.push(data.len() as u8);
        frags.extend_from_slice(data);
    }
    write("fragment_reassembly", "three-out-of-order", &frags);
    let mut whole = vec![8u8, 255, 0, 42, 0, 5, PayloadType::Sa.to_raw(), 0];
    whole.extend_from_slice(&init);
    write("fragment_reassembly", "shuffled-whole", &whole);

    write("ike_message", "ike-sa-init", &init);
    write("ike_responder", "flip-init", &[0, 1, 2, 3]);
    write("ike_responder", "flip-auth", &[2, 9, 9, 9, 9]);
    eprintln!("control fuzz seeds written");
}
