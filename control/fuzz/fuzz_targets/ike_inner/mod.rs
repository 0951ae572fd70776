//! Shared by `ike_inner_initiator`, `ike_inner_responder` and the seed generator
//! (`examples/seeds.rs`): a genuine handshake between two in-memory peers, then a script of
//! operations read from the fuzz input. The peer of the side under test (the "victim")
//! seals the input's inner payload bytes with the established IKE SA's own keys
//! (`IkeSa::fuzz_seal`, built only with `--cfg fuzzing`), so mutated CREATE_CHILD_SA,
//! INFORMATIONAL, Delete, CP and fragment contents pass the ICV and reach the exchange
//! code; whatever the victim answers goes back to the peer.
//!
//! Input: a sequence of operations, each a tag byte and its fields (see [`Op`]); byte
//! strings are a little-endian u16 length and the bytes. In inner payload bytes, the four
//! bytes `5b 5b 5b k` are replaced by a live child SPI of the victim (k & 0x7f picks the
//! child, k & 0x80 its inbound SPI, else its outbound one, i.e. the peer's inbound), so
//! Deletes and rekeys can name real SAs although SPIs are random in every run.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mifsec_control::ike::{IkeSa, sample};
use mifsec_control::wire::{ExchangeType, HeaderPacket, PayloadType};

/// The SPI placeholder's first three bytes.
pub const MARK: [u8; 3] = [0x5b, 0x5b, 0x5b];
/// Most operations taken from one input.
const MAX_OPS: usize = 16;
/// Most datagrams exchanged while settling; more would be a livelock.
const SETTLE_LIMIT: usize = 256;

/// One step of the script.
#[derive(Debug, Clone)]
pub enum Op {
    /// The peer sends a request: exchange type, message ID offset from the peer's next
    /// one (as i8; 0 uses that ID up), flags XOR, first inner payload type, inner bytes.
    Request {
        exchange: u8,
        id_offset: u8,
        flags_xor: u8,
        first: u8,
        plain: Vec<u8>,
    },
    /// The peer sends a request as `1 + count % 8` SKF fragments of `plain`. `mode`: bits
    /// 0-1 added to Total Fragments (an incomplete message), bit 2 reverses the order,
    /// bit 3 sends fragment 1 twice, bit 4 marks it a response.
    Fragments {
        exchange: u8,
        id_offset: u8,
        count: u8,
        mode: u8,
        first: u8,
        plain: Vec<u8>,
    },
    /// The victim starts an exchange (`trigger % 5`: 0 child rekey, 1 IKE rekey, 2 a
    /// liveness check after idling, 3 whatever is outstanding, 4 a multi-interface CHECK
    /// of its interface 2 for all child SAs); if `deliver & 1` the peer
    /// sees the request too. The peer's answer is replaced by one sealed from the input
    /// (exchange type 0: the request's).
    Response {
        trigger: u8,
        deliver: u8,
        exchange: u8,
        flags_xor: u8,
        first: u8,
        plain: Vec<u8>,
    },
    /// A genuine exchange (`which % 6`: the peer rekeys a child, the peer rekeys the IKE
    /// SA, the victim does either, the peer deletes the IKE SA, the victim does).
    Genuine { which: u8 },
    /// `secs` seconds pass; timers run.
    Wait { secs: u16 },
    /// A raw datagram to the victim.
    Raw { bytes: Vec<u8> },
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }
    fn bytes(&mut self) -> Vec<u8> {
        let n = usize::from(self.u16()).min(self.0.len());
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        head.to_vec()
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    let n = u16::try_from(b.len()).expect("seed bytes fit a u16 length");
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(b);
}

impl Op {
    fn decode(r: &mut Reader<'_>) -> Op {
        match r.u8() % 6 {
            0 => Op::Request {
                exchange: r.u8(),
                id_offset: r.u8(),
                flags_xor: r.u8(),
                first: r.u8(),
                plain: r.bytes(),
            },
            1 => Op::Fragments {
                exchange: r.u8(),
                id_offset: r.u8(),
                count: r.u8(),
                mode: r.u8(),
                first: r.u8(),
                plain: r.bytes(),
            },
            2 => Op::Response {
                trigger: r.u8(),
                deliver: r.u8(),
                exchange: r.u8(),
                flags_xor: r.u8(),
                first: r.u8(),
                plain: r.bytes(),
            },
            3 => Op::Genuine { which: r.u8() },
            4 => Op::Wait { secs: r.u16() },
            _ => Op::Raw { bytes: r.bytes() },
        }
    }

    /// The encoding [`run`] reads (for the seed generator).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Op::Request {
                exchange,
                id_offset,
                flags_xor,
                first,
                plain,
            } => {
                out.extend_from_slice(&[0, *exchange, *id_offset, *flags_xor, *first]);
                put_bytes(out, plain);
            }
            Op::Fragments {
                exchange,
                id_offset,
                count,
                mode,
                first,
                plain,
            } => {
                out.extend_from_slice(&[1, *exchange, *id_offset, *count, *mode, *first]);
                put_bytes(out, plain);
            }
            Op::Response {
                trigger,
                deliver,
                exchange,
                flags_xor,
                first,
                plain,
            } => {
                out.extend_from_slice(&[2, *trigger, *deliver, *exchange, *flags_xor, *first]);
                put_bytes(out, plain);
            }
            Op::Genuine { which } => out.extend_from_slice(&[3, *which]),
            Op::Wait { secs } => {
                out.push(4);
                out.extend_from_slice(&secs.to_le_bytes());
            }
            Op::Raw { bytes } => {
                out.push(5);
                put_bytes(out, bytes);
            }
        }
    }
}

/// Whether to print every event (`IKE_INNER_TRACE=1`, to check what a seed reaches).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("IKE_INNER_TRACE").is_some())
}

/// Two peers with an established IKE SA and first child SA, and the simulated clock.
pub struct Pair {
    pub now: Instant,
    /// The side under test.
    pub victim: IkeSa,
    /// Its peer, which seals the input's payloads.
    pub peer: IkeSa,
    pub victim_is_initiator: bool,
}

/// The sample configurations with liveness checks on (so idling makes one).
fn configs() -> (
    mifsec_control::ike::IkeConfig,
    mifsec_control::ike::IkeConfig,
) {
    let mut c = sample::client();
    let mut g = sample::gateway();
    c.dpd.delay = Some(Duration::from_secs(30));
    g.dpd.delay = Some(Duration::from_secs(30));
    (c, g)
}

/// Two interfaces (names `l1`, `l2`, priorities 0 and 10) on `addrs`.
pub fn interfaces(addrs: [std::net::IpAddr; 2]) -> Vec<mifsec_control::ike::LocalInterface> {
    addrs
        .iter()
        .enumerate()
        .map(|(n, a)| mifsec_control::ike::LocalInterface {
            name: format!("l{}", n + 1),
            addr: *a,
            port: 4500,
            priority: 10 * n as u8,
            alternate: false,
        })
        .collect()
}

impl Pair {
    /// A completed handshake, or `None` if it did not complete (it always should).
    pub fn new(victim_is_initiator: bool) -> Option<Pair> {
        let now = Instant::now();
        let a: SocketAddr = "198.18.0.1:500".parse().ok()?;
        let b: SocketAddr = "198.18.0.2:500".parse().ok()?;
        let (c, g) = configs();
        let mut init = IkeSa::initiate(c, now, a, b).ok()?;
        let mut resp = IkeSa::respond(g);
        // The multi-interface extension is negotiated in IKE_AUTH (both samples have
        // `mif = true`): two interfaces a side, so MIF notifies reach a full state.
        init.set_local_interfaces(now, &interfaces([a.ip(), "198.18.1.1".parse().ok()?]));
        resp.set_local_interfaces(now, &interfaces([b.ip(), "198.18.1.2".parse().ok()?]));
        let (victim, peer) = if victim_is_initiator {
            (init, resp)
        } else {
            (resp, init)
        };
        let mut p = Pair {
            now,
            victim,
            peer,
            victim_is_initiator,
        };
        p.settle();
        (p.victim.is_established() && p.peer.is_established()).then_some(p)
    }

    /// Delivers datagrams both ways until both sides are quiet.
    pub fn settle(&mut self) {
        for _ in 0..SETTLE_LIMIT {
            let mut moved = false;
            while let Some(t) = self.victim.poll_transmit() {
                self.peer
                    .handle_datagram(self.now, t.remote, t.local, &t.bytes);
                moved = true;
            }
            while let Some(t) = self.peer.poll_transmit() {
                self.victim
                    .handle_datagram(self.now, t.remote, t.local, &t.bytes);
                moved = true;
            }
            while let Some(e) = self.victim.poll_event() {
                if trace() {
                    eprintln!("victim: {e:?}");
                }
            }
            while let Some(e) = self.peer.poll_event() {
                if trace() {
                    eprintln!("peer: {e:?}");
                }
            }
            if !moved {
                return;
            }
        }
        panic!("the peers did not settle: an endless exchange");
    }

    /// Delivers one datagram from the peer to the victim; bounded output expected.
    pub fn to_victim(&mut self, bytes: &[u8]) {
        let (local, remote) = self.victim.addresses();
        self.victim.handle_datagram(self.now, local, remote, bytes);
        // One datagram may be answered by a (fragmented) response, never by a flood.
        let mut out = Vec::new();
        while let Some(t) = self.victim.poll_transmit() {
            out.push(t);
            assert!(out.len() <= 160, "one datagram gets a flood of answers");
        }
        for t in out {
            self.peer
                .handle_datagram(self.now, t.remote, t.local, &t.bytes);
        }
    }

    /// Puts live child SPIs where the input has placeholders.
    pub fn patch(&self, plain: &mut [u8]) {
        let spis = self.victim.child_spis();
        if spis.is_empty() {
            return;
        }
        let mut i = 0;
        while i + 4 <= plain.len() {
            if plain[i..i + 3] == MARK {
                let k = plain[i + 3];
                let (spi_in, spi_out) = spis[usize::from(k & 0x7f) % spis.len()];
                let spi = if k & 0x80 != 0 { spi_in } else { spi_out };
                plain[i..i + 4].copy_from_slice(&spi.to_be_bytes());
                i += 4;
            } else {
                i += 1;
            }
        }
    }

    /// The message ID of the peer's request: its next one plus `offset` (as i8).
    fn peer_request_id(&mut self, offset: u8) -> Option<u32> {
        let delta = offset as i8;
        let next = self.peer.fuzz_next_id(delta == 0)?;
        Some(next.wrapping_add(delta as i32 as u32))
    }

    fn wait(&mut self, d: Duration) {
        self.now += d;
        self.victim.handle_timeout(self.now);
        self.peer.handle_timeout(self.now);
    }

    /// Carries out one operation.
    pub fn apply(&mut self, op: Op) {
        match op {
            Op::Request {
                exchange,
                id_offset,
                flags_xor,
                first,
                mut plain,
            } => {
                self.patch(&mut plain);
                let Some(id) = self.peer_request_id(id_offset) else {
                    return;
                };
                let sealed = self.peer.fuzz_seal(
                    ExchangeType::from_raw(exchange),
                    false,
                    id,
                    flags_xor,
                    PayloadType::from_raw(first),
                    &plain,
                    None,
                );
                if let Some(bytes) = sealed {
                    self.to_victim(&bytes);
                }
            }
            Op::Fragments {
                exchange,
                id_offset,
                count,
                mode,
                first,
                mut plain,
            } => {
                self.patch(&mut plain);
                let Some(id) = self.peer_request_id(id_offset) else {
                    return;
                };
                let n = usize::from(count % 8) + 1;
                let total = n as u16 + u16::from(mode & 3);
                let chunk = plain.len().div_ceil(n).max(1);
                let mut parts: Vec<(u16, &[u8])> = (0..n)
                    .map(|i| {
                        let lo = (i * chunk).min(plain.len());
                        let hi = ((i + 1) * chunk).min(plain.len());
                        (i as u16 + 1, &plain[lo..hi])
                    })
                    .collect();
                if mode & 4 != 0 {
                    parts.reverse();
                }
                if mode & 8 != 0 {
                    parts.push(parts[parts.len() - 1]);
                }
                let mut sealed = Vec::new();
                for (number, data) in parts {
                    let inner = if number == 1 {
                        PayloadType::from_raw(first)
                    } else {
                        PayloadType::NoNextPayload
                    };
                    sealed.extend(self.peer.fuzz_seal(
                        ExchangeType::from_raw(exchange),
                        mode & 16 != 0,
                        id,
                        0,
                        inner,
                        data,
                        Some((number, total)),
                    ));
                }
                for bytes in sealed {
                    self.to_victim(&bytes);
                }
            }
            Op::Response {
                trigger,
                deliver,
                exchange,
                flags_xor,
                first,
                mut plain,
            } => {
                match trigger % 5 {
                    0 => {
                        self.victim.rekey_children(self.now);
                    }
                    4 => {
                        let check = mifsec_control::wire::MifOperation {
                            op: mifsec_control::wire::MifOp::Check { id: 2 },
                            dry_run: true,
                            move_ike: false,
                            selection: mifsec_control::wire::MifSelection::All,
                        };
                        let _ = self.victim.mif_request(self.now, check);
                    }
                    1 => {
                        self.victim.rekey_ike(self.now);
                    }
                    2 => {
                        self.wait(Duration::from_secs(31));
                        // The peer idles too; its own liveness check goes through.
                        while let Some(t) = self.peer.poll_transmit() {
                            self.victim
                                .handle_datagram(self.now, t.remote, t.local, &t.bytes);
                        }
                    }
                    _ => {}
                }
                let mut request = None;
                while let Some(t) = self.victim.poll_transmit() {
                    if let Ok(h) = HeaderPacket::new_checked(&t.bytes[..])
                        && !h.flags().response()
                    {
                        request = Some((h.message_id(), h.exchange_type()));
                    }
                    if deliver & 1 != 0 {
                        self.peer
                            .handle_datagram(self.now, t.remote, t.local, &t.bytes);
                    }
                }
                // The peer's genuine answer is lost.
                while self.peer.poll_transmit().is_some() {}
                let Some((id, exch)) = request else {
                    return;
                };
                let exch = if exchange == 0 {
                    exch
                } else {
                    ExchangeType::from_raw(exchange)
                };
                self.patch(&mut plain);
                let sealed = self.peer.fuzz_seal(
                    exch,
                    true,
                    id,
                    flags_xor,
                    PayloadType::from_raw(first),
                    &plain,
                    None,
                );
                if let Some(bytes) = sealed {
                    self.to_victim(&bytes);
                }
            }
            Op::Genuine { which } => {
                let now = self.now;
                match which % 6 {
                    0 => self.peer.rekey_children(now),
                    1 => self.peer.rekey_ike(now),
                    2 => self.victim.rekey_children(now),
                    3 => self.victim.rekey_ike(now),
                    4 => self.peer.delete(now),
                    _ => self.victim.delete(now),
                };
            }
            Op::Wait { secs } => self.wait(Duration::from_secs(u64::from(secs))),
            Op::Raw { bytes } => self.to_victim(&bytes),
        }
        self.settle();
    }
}

/// Runs the script `data` against the side `victim_is_initiator` names.
pub fn run(data: &[u8], victim_is_initiator: bool) {
    let Some(mut pair) = Pair::new(victim_is_initiator) else {
        return;
    };
    let mut r = Reader(data);
    for _ in 0..MAX_OPS {
        if r.0.is_empty() {
            break;
        }
        let op = Op::decode(&mut r);
        if trace() {
            eprintln!("op: {op:?}");
        }
        pair.apply(op);
    }
    // Whatever happened: time runs out, both sides reach a verdict without panicking.
    pair.wait(Duration::from_secs(600));
    pair.settle();
}
