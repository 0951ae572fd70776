//! Two workers seal into one outbound SA, every packet travels on two "paths" of different
//! delay (the redundant policy's worst case), and two workers open from one inbound SA.
//! Every packet must arrive exactly once; every second copy is dropped as a replay; nothing
//! fails its ICV. This is the shared-SA, many-worker, reordering shape of the real engine,
//! in memory.

use std::collections::HashSet;
use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender, bounded};
use mifsec_dataplane::aead::{Backend, Cipher};
use mifsec_dataplane::counters::DropReason;
use mifsec_dataplane::esp::{InboundSa, Mode, Opened, OutboundSa, SaConfig};

const PACKETS_PER_WORKER: u32 = 20_000;
const HEAD: usize = 64;

fn packet(worker: u8, n: u32) -> Vec<u8> {
    let mut p = vec![
        0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    p.extend_from_slice(&[worker, 0, 0, 0]);
    p.extend_from_slice(&n.to_be_bytes());
    p.extend_from_slice(&[0xEE; 4]);
    p
}

#[test]
fn redundant_paths_deliver_each_packet_exactly_once() {
    for cipher in Cipher::ALL {
        let keymat: Vec<u8> = (0..cipher.keymat_len() as u8).map(|b| b ^ 0x3c).collect();
        let cfg = SaConfig {
            spi: 0xABCD_0001,
            cipher,
            backend: Backend::Ring,
            keymat: &keymat,
            esn: true,
            mode: Mode::Tunnel,
            replay_window: 65_536,
        };
        let out = OutboundSa::new(&cfg, None).unwrap();
        let inb = InboundSa::new(&cfg).unwrap();
        // Path A delivers at once; path B holds packets back by a batch (a slower link).
        let (a_tx, a_rx) = bounded::<Vec<u8>>(1024);
        let (b_tx, b_rx) = bounded::<Vec<u8>>(1024);
        let seen = Mutex::new(HashSet::new());

        std::thread::scope(|s| {
            for w in 0..2u8 {
                let (out, a_tx, b_tx) = (&out, a_tx.clone(), b_tx.clone());
                s.spawn(move || sender(out, w, a_tx, b_tx));
            }
            drop((a_tx, b_tx));
            for rx in [a_rx, b_rx] {
                let (inb, seen) = (&inb, &seen);
                s.spawn(move || receiver(inb, rx, seen));
            }
        });

        let total = 2 * PACKETS_PER_WORKER as u64;
        let c = inb.counters().snapshot();
        assert_eq!(
            seen.lock().unwrap().len() as u64,
            total,
            "{cipher}: every packet arrived"
        );
        assert_eq!(c.packets, total, "{cipher}: each exactly once");
        assert_eq!(
            c.drops(DropReason::Replayed),
            total,
            "{cipher}: every second copy dropped"
        );
        assert_eq!(c.drops(DropReason::Integrity), 0);
        assert_eq!(c.drops(DropReason::TooOld), 0);
        assert_eq!(out.counters().snapshot().packets, total);
    }
}

fn sender(out: &OutboundSa, worker: u8, a: Sender<Vec<u8>>, b: Sender<Vec<u8>>) {
    let mut held = Vec::new();
    for n in 0..PACKETS_PER_WORKER {
        let p = packet(worker, n);
        let mut buf = vec![0u8; HEAD + p.len() + OutboundSa::TAILROOM];
        buf[HEAD..HEAD + p.len()].copy_from_slice(&p);
        let s = out.seal(&mut buf, HEAD..HEAD + p.len()).unwrap();
        let wire = buf[s.range].to_vec();
        a.send(wire.clone()).unwrap();
        held.push(wire);
        if held.len() == 256 {
            for w in held.drain(..).rev() {
                b.send(w).unwrap();
            }
        }
    }
    for w in held.drain(..).rev() {
        b.send(w).unwrap();
    }
}

fn receiver(inb: &InboundSa, rx: Receiver<Vec<u8>>, seen: &Mutex<HashSet<(u8, u32)>>) {
    for mut wire in rx {
        let len = wire.len();
        match inb.open(&mut wire, 0..len) {
            Ok(Opened::Packet { range, .. }) => {
                let p = &wire[range];
                let id = (p[20], u32::from_be_bytes([p[24], p[25], p[26], p[27]]));
                assert!(
                    seen.lock().unwrap().insert(id),
                    "packet {id:?} delivered twice"
                );
            }
            Ok(Opened::Dummy { .. }) => panic!("no dummies were sent"),
            Err(DropReason::Replayed) => {}
            Err(e) => panic!("unexpected drop: {e}"),
        }
    }
}
