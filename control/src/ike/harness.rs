//! A deterministic two-peer harness: an initiator and a responder [`IkeSa`] on simulated
//! time, joined by a pipe that can drop, duplicate or delay chosen datagrams and put a
//! NAT in the path (after quinn-proto's `tests/util.rs` and neqo's simulator).
//!
//! Datagrams are numbered in the order they enter the pipe, from 0, both directions
//! together: in a clean handshake 0 is the IKE_SA_INIT request, 1 its response, 2 the
//! IKE_AUTH request, 3 its response.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mifsec_dataplane::aead::Cipher;
use proptest::prelude::*;
use zeroize::Zeroizing;

use super::config::{
    EsnPolicy, EspProposal, IkeConfig, IkeProposal, Mode, RetransmitConfig, ts_prefix,
};
use super::crypto::Prf;
use super::sa::{ChildSa, Event, FailReason, IkeSa, IkeSaInfo, Transmit};
use crate::wire::{DhGroup, IdPayload, NotifyType};

const A: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 500);
const B: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 500);
/// The public address a NAT in front of A maps it to.
const NAT_IP: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

/// What the pipe does to chosen datagrams.
#[derive(Debug, Default)]
struct Faults {
    drop: BTreeSet<usize>,
    drop_all: bool,
    duplicate: BTreeSet<usize>,
    /// Held back until the next timer fires, so later datagrams overtake them.
    delay: BTreeSet<usize>,
    /// Datagrams from this number on never reach the responder (they still reach the
    /// initiator).
    responder_deaf_from: Option<usize>,
    /// Translate A's source addresses (ip, port) to (NAT_IP, port + 1000).
    nat: bool,
    /// The multi-address pipe: the initiator has moved to a second link with this address.
    /// Its datagrams reach the responder from it (port kept), the responder's to it reach
    /// the initiator, and the responder's to A's old address are lost (the old link is
    /// gone).
    roamed: Option<IpAddr>,
    /// The multi-address network: links that are down and NATs, by address.
    links: Links,
}

/// The multi-address network of the pipe: each peer may use several addresses (the
/// initiator's Transmit says which); a link is down when its address is in `down`
/// (datagrams from or to it are lost: an address deleted or a silent blackhole alike);
/// `nat` translates an initiator's (address, port) to the public one the responder sees,
/// and back.
#[derive(Debug, Default)]
struct Links {
    down: BTreeSet<IpAddr>,
    nat: BTreeMap<SocketAddr, SocketAddr>,
}

#[derive(Debug)]
struct Harness {
    now: Instant,
    start: Instant,
    init: IkeSa,
    resp: IkeSa,
    faults: Faults,
    sent: usize,
    /// (to responder?, datagram) in delivery order.
    in_flight: VecDeque<(bool, Transmit)>,
    held: Vec<(bool, Transmit)>,
    /// Every datagram that entered the pipe, with its direction.
    log: Vec<(bool, Vec<u8>)>,
    /// Where each of the responder's datagrams was sent, in order.
    resp_dests: Vec<SocketAddr>,
    init_events: Vec<Event>,
    resp_events: Vec<Event>,
}

fn nat_out(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(NAT_IP), a.port() + 1000)
}

fn nat_in(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(A.ip(), a.port() - 1000)
}

impl Harness {
    fn new(init_cfg: IkeConfig, resp_cfg: IkeConfig, faults: Faults) -> Harness {
        // The one clock read: the origin of simulated time.
        let start = Instant::now();
        let init = IkeSa::initiate(init_cfg, start, A, B).expect("initiate");
        Harness {
            now: start,
            start,
            init,
            resp: IkeSa::respond(resp_cfg),
            faults,
            sent: 0,
            in_flight: VecDeque::new(),
            held: Vec::new(),
            log: Vec::new(),
            resp_dests: Vec::new(),
            init_events: Vec::new(),
            resp_events: Vec::new(),
        }
    }

    fn enqueue(&mut self, to_resp: bool, t: Transmit) {
        let n = self.sent;
        self.sent += 1;
        self.log.push((to_resp, t.bytes.clone()));
        if !to_resp {
            self.resp_dests.push(t.remote);
        }
        let deaf = to_resp && self.faults.responder_deaf_from.is_some_and(|k| n >= k);
        if deaf || self.faults.drop_all || self.faults.drop.contains(&n) {
            return;
        }
        let copies = if self.faults.duplicate.contains(&n) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            if self.faults.delay.contains(&n) {
                self.held.push((to_resp, t.clone()));
            } else {
                self.in_flight.push_back((to_resp, t.clone()));
            }
        }
    }

    fn collect(&mut self) {
        while let Some(t) = self.init.poll_transmit() {
            self.enqueue(true, t);
        }
        while let Some(t) = self.resp.poll_transmit() {
            self.enqueue(false, t);
        }
        while let Some(e) = self.init.poll_event() {
            self.init_events.push(e);
        }
        while let Some(e) = self.resp.poll_event() {
            self.resp_events.push(e);
        }
    }

    fn deliver(&mut self, to_resp: bool, t: Transmit) {
        let down = &self.faults.links.down;
        if down.contains(&t.local.ip()) || down.contains(&t.remote.ip()) {
            return;
        }
        if to_resp {
            let from = match self.faults.roamed {
                Some(ip) => SocketAddr::new(ip, t.local.port()),
                None if self.faults.nat => nat_out(t.local),
                None => self
                    .faults
                    .links
                    .nat
                    .get(&t.local)
                    .copied()
                    .unwrap_or(t.local),
            };
            self.resp
                .handle_datagram(self.now, t.remote, from, &t.bytes);
        } else {
            let to = match self.faults.roamed {
                Some(ip) if t.remote.ip() == ip => SocketAddr::new(A.ip(), t.remote.port()),
                Some(_) => return,
                None if self.faults.nat => nat_in(t.remote),
                None => match self.faults.links.nat.iter().find(|(_, p)| **p == t.remote) {
                    Some((inside, _)) => *inside,
                    None if self.faults.links.nat.contains_key(&t.remote) => return,
                    None => t.remote,
                },
            };
            self.init.handle_datagram(self.now, to, t.local, &t.bytes);
        }
    }

    /// Like [`Harness::run`], for `d` more simulated time from now.
    fn run_for(&mut self, d: Duration) {
        let limit = self.now.duration_since(self.start) + d;
        self.run(limit);
        // Time passes even when nothing happens.
        self.now = self.now.max(self.start + limit);
    }

    /// Delivers datagrams and fires timers until both peers are quiet or `limit` of
    /// simulated time has passed.
    fn run(&mut self, limit: Duration) {
        for _ in 0..10_000 {
            self.collect();
            if let Some((to_resp, t)) = self.in_flight.pop_front() {
                self.deliver(to_resp, t);
                continue;
            }
            let next = [self.init.poll_timeout(), self.resp.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= self.start + limit => {
                    self.now = self.now.max(at);
                    self.init.handle_timeout(self.now);
                    self.resp.handle_timeout(self.now);
                    self.collect();
                    self.in_flight.extend(self.held.drain(..));
                }
                _ => {
                    if self.held.is_empty() {
                        return;
                    }
                    self.in_flight.extend(self.held.drain(..));
                }
            }
        }
        panic!("harness did not settle");
    }

    fn child(events: &[Event]) -> Option<&ChildSa> {
        events.iter().find_map(|e| match e {
            Event::ChildSaEstablished(c) => Some(c),
            _ => None,
        })
    }

    fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
        events.iter().filter(|e| f(e)).count()
    }

    fn info(events: &[Event]) -> Option<&IkeSaInfo> {
        events.iter().find_map(|e| match e {
            Event::IkeSaEstablished(i) => Some(i),
            _ => None,
        })
    }

    fn failure(events: &[Event]) -> Option<FailReason> {
        events.iter().find_map(|e| match e {
            Event::Failed(r) => Some(*r),
            _ => None,
        })
    }

    /// Asserts a complete handshake: one IKE SA and one child per side, keys and SPIs
    /// crossed.
    fn assert_established(&self) -> (&ChildSa, &ChildSa) {
        assert!(
            self.init.is_established(),
            "initiator: {:?}",
            self.init_events
        );
        assert!(
            self.resp.is_established(),
            "responder: {:?}",
            self.resp_events
        );
        for events in [&self.init_events, &self.resp_events] {
            assert_eq!(
                Self::count(events, |e| matches!(e, Event::IkeSaEstablished(_))),
                1
            );
            assert_eq!(
                Self::count(events, |e| matches!(e, Event::ChildSaEstablished(_))),
                1,
                "{events:?}"
            );
        }
        let i = Self::child(&self.init_events).unwrap();
        let r = Self::child(&self.resp_events).unwrap();
        assert_eq!(&i.keymat_out[..], &r.keymat_in[..]);
        assert_eq!(&i.keymat_in[..], &r.keymat_out[..]);
        assert_ne!(&i.keymat_in[..], &i.keymat_out[..]);
        assert_eq!(i.keymat_in.len(), i.cipher.keymat_len());
        assert_eq!((i.spi_out, i.spi_in), (r.spi_in, r.spi_out));
        assert_eq!((i.cipher, i.esn, i.mode), (r.cipher, r.esn, r.mode));
        assert_eq!((&i.local_ts, &i.remote_ts), (&r.remote_ts, &r.local_ts));
        assert_eq!(
            Self::info(&self.init_events).map(|x| &x.vips),
            Self::info(&self.resp_events).map(|x| &x.vips)
        );
        assert_eq!(self.init.spis(), self.resp.spis());
        (i, r)
    }
}

fn v4(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A road-warrior client asking for a virtual IP, all traffic into the tunnel.
fn client() -> IkeConfig {
    super::sample::client()
}

/// A gateway with a pool, protecting 10.1.0.0/16.
fn gateway() -> IkeConfig {
    super::sample::gateway()
}

const LIMIT: Duration = Duration::from_secs(60);

mod children;
mod clone;
mod cookie;
mod eap;
mod exchange;
mod fragments;
mod limits;
mod mif;
mod mif_paths;
mod mobike;
mod mobike_init;
mod pubkey;
mod rekey;

#[test]
fn full_handshake_with_vip_and_narrowing() {
    let gw = gateway();
    let pool = gw.pools[0].clone();
    let mut h = Harness::new(client(), gw, Faults::default());
    h.run(LIMIT);
    let (i, r) = h.assert_established();
    let vip = Ipv4Addr::new(10, 99, 0, 1);
    let vips = vec![IpAddr::V4(vip)];
    assert_eq!(Harness::info(&h.init_events).unwrap().vips, vips);
    assert_eq!(i.local_ts, vec![ts_prefix(IpAddr::V4(vip), 32)]);
    assert_eq!(i.remote_ts, vec![ts_prefix(v4("10.1.0.0"), 16)]);
    assert_eq!(r.remote_ts, vec![ts_prefix(IpAddr::V4(vip), 32)]);
    assert_eq!(i.mode, Mode::Tunnel);
    assert!(!i.udp_encap);
    assert_eq!(pool.leased(), 1);
    // Exactly four datagrams, no retransmission, nothing dropped.
    assert_eq!(h.sent, 4);
    assert_eq!(h.init.stats(), Default::default());
    assert_eq!(h.resp.stats(), Default::default());
    let info = h
        .init_events
        .iter()
        .find_map(|e| match e {
            Event::IkeSaEstablished(i) => Some(i),
            _ => None,
        })
        .unwrap();
    assert_eq!(info.remote_id, IdPayload::fqdn("gw.example.org"));
    assert!(info.peer_mobike && info.initiator);
    assert!(!info.nat.any());
    // No key bytes in Debug output.
    let dbg = format!("{i:?}");
    assert!(!dbg.contains("keymat"), "{dbg}");
    // Both sides idle: no timers left.
    assert_eq!(h.init.poll_timeout(), None);
    assert_eq!(h.resp.poll_timeout(), None);
}

#[test]
fn every_proposal_combination() {
    let mut n = 0usize;
    for cipher in Cipher::ALL {
        for prf in Prf::ALL {
            for group in [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Ecp384] {
                let esp_cipher = Cipher::ALL[n % 3];
                let esn = n % 2 == 0;
                n += 1;
                let ike = IkeProposal {
                    ciphers: vec![cipher],
                    prfs: vec![prf],
                    groups: vec![group],
                };
                let mut c = client();
                c.proposals = vec![ike.clone()];
                c.child.proposals = vec![EspProposal {
                    ciphers: vec![esp_cipher],
                    esn: EsnPolicy::Either,
                    groups: vec![],
                }];
                let mut g = gateway();
                g.child.proposals = vec![EspProposal {
                    ciphers: Cipher::ALL.to_vec(),
                    esn: if esn { EsnPolicy::Yes } else { EsnPolicy::No },
                    groups: vec![],
                }];
                let mut h = Harness::new(c, g, Faults::default());
                h.run(LIMIT);
                let (i, _) = h.assert_established();
                assert_eq!((i.cipher, i.esn), (esp_cipher, esn));
                let info = h
                    .resp_events
                    .iter()
                    .find_map(|e| match e {
                        Event::IkeSaEstablished(i) => Some(i.clone()),
                        _ => None,
                    })
                    .unwrap();
                assert_eq!((info.cipher, info.prf, info.group), (cipher, prf, group));
            }
        }
    }
}

#[test]
fn loss_of_each_message_is_recovered() {
    for lost in 0..4 {
        let faults = Faults {
            drop: BTreeSet::from([lost]),
            ..Faults::default()
        };
        let mut h = Harness::new(client(), gateway(), faults);
        h.run(LIMIT);
        h.assert_established();
        assert_eq!(h.init.stats().retransmitted, 1, "lost {lost}");
        // A lost response means the responder answers the retransmission from its cache.
        let cached = u64::from(lost % 2 == 1);
        assert_eq!(h.resp.stats().answered_from_cache, cached, "lost {lost}");
        // 0.5 s after the first send.
        assert_eq!(h.now - h.start, Duration::from_millis(500), "lost {lost}");
    }
}

#[test]
fn duplicated_requests_are_answered_from_the_cache() {
    for dup in [0, 2] {
        let faults = Faults {
            duplicate: BTreeSet::from([dup]),
            ..Faults::default()
        };
        let gw = gateway();
        let pool = gw.pools[0].clone();
        let mut h = Harness::new(client(), gw, faults);
        h.run(LIMIT);
        h.assert_established();
        assert_eq!(h.resp.stats().answered_from_cache, 1);
        // The second copy of the response is dropped by the initiator.
        assert_eq!(h.init.stats().unexpected, 1);
        assert_eq!(pool.leased(), 1);
    }
}

#[test]
fn delayed_response_overtaken_by_retransmission() {
    let faults = Faults {
        delay: BTreeSet::from([1]),
        ..Faults::default()
    };
    let mut h = Harness::new(client(), gateway(), faults);
    h.run(LIMIT);
    h.assert_established();
    assert_eq!(h.init.stats().retransmitted, 1);
    assert_eq!(h.resp.stats().answered_from_cache, 1);
}

#[test]
fn invalid_ke_payload_retry() {
    let mut c = client();
    c.proposals = vec![IkeProposal {
        groups: vec![DhGroup::Curve25519, DhGroup::Ecp256],
        ..IkeProposal::all()
    }];
    let mut g = gateway();
    g.proposals = vec![IkeProposal {
        groups: vec![DhGroup::Ecp256],
        ..IkeProposal::all()
    }];
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    h.assert_established();
    assert_eq!(h.sent, 6);
    assert_eq!(h.resp.stats().refused_init, 1);
    let info = h
        .init_events
        .iter()
        .find_map(|e| match e {
            Event::IkeSaEstablished(i) => Some(i.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(info.group, DhGroup::Ecp256);

    // A group we never offered ends the attempt.
    let mut c = client();
    c.proposals = vec![IkeProposal {
        groups: vec![DhGroup::Curve25519],
        ..IkeProposal::all()
    }];
    let mut g = gateway();
    g.proposals = vec![IkeProposal {
        groups: vec![DhGroup::Ecp256],
        ..IkeProposal::all()
    }];
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    // The responder proposes nothing we offered: NO_PROPOSAL_CHOSEN, not INVALID_KE.
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::PeerNotify(NotifyType::NoProposalChosen))
    );
}

#[test]
fn wrong_psk_fails_both_sides() {
    let mut c = client();
    c.local_auth = crate::ike::auth::LocalAuth::Psk(Zeroizing::new(b"wrong".to_vec()));
    let gw = gateway();
    let pool = gw.pools[0].clone();
    let mut h = Harness::new(c, gw, Faults::default());
    h.run(LIMIT);
    assert_eq!(
        Harness::failure(&h.resp_events),
        Some(FailReason::AuthenticationFailed(
            crate::ike::auth::AuthError::PskMismatch
        ))
    );
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed))
    );
    assert!(Harness::child(&h.init_events).is_none());
    assert!(Harness::child(&h.resp_events).is_none());
    assert!(h.init.is_dead() && h.resp.is_dead());
    assert_eq!(pool.leased(), 0);

    // The right PSK but an identity the responder does not accept.
    let mut g = gateway();
    g.remote_id = Some(IdPayload::rfc822("bob@example.org"));
    let mut h = Harness::new(client(), g, Faults::default());
    h.run(LIMIT);
    assert_eq!(
        Harness::failure(&h.resp_events),
        Some(FailReason::AuthenticationFailed(
            crate::ike::auth::AuthError::WrongId
        ))
    );
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed))
    );
}

#[test]
fn failed_responder_answers_retransmission_from_cache() {
    // Wrong PSK and the AUTHENTICATION_FAILED response lost: the retransmitted IKE_AUTH
    // request gets the same answer from the dead responder's cache.
    let mut c = client();
    c.local_auth = crate::ike::auth::LocalAuth::Psk(Zeroizing::new(b"wrong".to_vec()));
    let faults = Faults {
        drop: BTreeSet::from([3]),
        ..Faults::default()
    };
    let mut h = Harness::new(c, gateway(), faults);
    h.run(LIMIT);
    assert_eq!(h.resp.stats().answered_from_cache, 1);
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed))
    );
}

#[test]
fn initiator_rejects_responder_auth() {
    // Same PSK, but the responder presents an identity the initiator does not expect.
    let mut g = gateway();
    g.local_id = IdPayload::fqdn("evil.example.org");
    let mut h = Harness::new(client(), g, Faults::default());
    h.run(LIMIT);
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::AuthenticationFailed(
            crate::ike::auth::AuthError::WrongId
        ))
    );
    assert!(Harness::child(&h.init_events).is_none());
    // The responder believed the SA was up until the INFORMATIONAL arrived.
    assert_eq!(
        Harness::failure(&h.resp_events),
        Some(FailReason::PeerNotify(NotifyType::AuthenticationFailed))
    );
    assert!(h.resp.is_dead());
}

#[test]
fn no_common_proposal() {
    let mut c = client();
    c.proposals = vec![IkeProposal {
        ciphers: vec![Cipher::ChaCha20Poly1305],
        ..IkeProposal::all()
    }];
    let mut g = gateway();
    g.proposals = vec![IkeProposal {
        ciphers: vec![Cipher::Aes128Gcm],
        ..IkeProposal::all()
    }];
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::PeerNotify(NotifyType::NoProposalChosen))
    );
    assert_eq!(h.resp.stats().refused_init, 1);
    assert_eq!(h.resp.state_name(), "awaiting IKE_SA_INIT");

    // ESP mismatch: the IKE SA comes up, the child is refused.
    let mut c = client();
    c.child.proposals = vec![EspProposal {
        ciphers: vec![Cipher::ChaCha20Poly1305],
        esn: EsnPolicy::No,
        groups: vec![],
    }];
    let mut g = gateway();
    let pool = g.pools[0].clone();
    g.child.proposals = vec![EspProposal {
        ciphers: vec![Cipher::Aes256Gcm],
        esn: EsnPolicy::No,
        groups: vec![],
    }];
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    assert!(h.init.is_established() && h.resp.is_established());
    for events in [&h.init_events, &h.resp_events] {
        assert!(events.iter().any(|e| matches!(
            e,
            Event::ChildSaFailed {
                reason: NotifyType::NoProposalChosen,
                ..
            }
        )));
    }
    assert_eq!(pool.leased(), 0);
}

#[test]
fn ts_unacceptable() {
    let mut c = client();
    c.request_vip = false;
    c.child.local_ts = vec![ts_prefix(v4("172.16.0.0"), 24)];
    c.child.remote_ts = vec![ts_prefix(v4("192.168.0.0"), 24)];
    let mut h = Harness::new(c, gateway(), Faults::default());
    h.run(LIMIT);
    assert!(h.init.is_established());
    for events in [&h.init_events, &h.resp_events] {
        assert!(events.iter().any(|e| matches!(
            e,
            Event::ChildSaFailed {
                reason: NotifyType::TsUnacceptable,
                ..
            }
        )));
    }
}

#[test]
fn site_to_site_transport_mode_and_narrowing() {
    let mut c = client();
    c.request_vip = false;
    c.child.mode = Mode::Transport;
    c.child.local_ts = vec![ts_prefix(v4("192.0.2.1"), 32)];
    c.child.remote_ts = vec![ts_prefix(v4("198.51.100.0"), 24)];
    let mut g = gateway();
    g.pools.clear();
    g.child.mode = Mode::Transport;
    g.child.local_ts = vec![ts_prefix(v4("198.51.100.1"), 32)];
    g.child.remote_ts = vec![ts_prefix(v4("192.0.2.0"), 24)];
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    let (i, _) = h.assert_established();
    assert_eq!(i.mode, Mode::Transport);
    assert!(Harness::info(&h.init_events).unwrap().vips.is_empty());
    assert_eq!(i.local_ts, vec![ts_prefix(v4("192.0.2.1"), 32)]);
    assert_eq!(i.remote_ts, vec![ts_prefix(v4("198.51.100.1"), 32)]);

    // A responder configured for tunnel mode answers in tunnel mode.
    let mut c = client();
    c.child.mode = Mode::Transport;
    let mut h = Harness::new(c, gateway(), Faults::default());
    h.run(LIMIT);
    let (i, _) = h.assert_established();
    assert_eq!(i.mode, Mode::Tunnel);
}

#[test]
fn nat_detected_and_floated_to_4500() {
    let faults = Faults {
        nat: true,
        ..Faults::default()
    };
    let mut h = Harness::new(client(), gateway(), faults);
    h.run(LIMIT);
    let (i, r) = h.assert_established();
    assert!(i.udp_encap && r.udp_encap);
    let info = |events: &[Event]| {
        events
            .iter()
            .find_map(|e| match e {
                Event::IkeSaEstablished(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap()
    };
    let ii = info(&h.init_events);
    let ri = info(&h.resp_events);
    assert!(ii.nat.local_behind_nat && !ii.nat.remote_behind_nat);
    assert!(ri.nat.remote_behind_nat && !ri.nat.local_behind_nat);
    assert_eq!(ii.local.port(), 4500);
    assert_eq!(ii.remote, SocketAddr::new(B.ip(), 4500));
    assert_eq!(ri.remote, SocketAddr::new(IpAddr::V4(NAT_IP), 5500));
}

#[test]
fn forced_encapsulation_without_nat() {
    let mut c = client();
    c.force_encap = true;
    let mut h = Harness::new(c, gateway(), Faults::default());
    h.run(LIMIT);
    let (i, r) = h.assert_established();
    assert!(i.udp_encap && r.udp_encap, "ESP in UDP on both sides");
    let info = |events: &[Event]| {
        events
            .iter()
            .find_map(|e| match e {
                Event::IkeSaEstablished(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap()
    };
    let (ii, ri) = (info(&h.init_events), info(&h.resp_events));
    // The responder saw a source hash that cannot match: it believes we are NATed.
    assert!(ri.nat.remote_behind_nat && !ri.nat.local_behind_nat);
    assert!(ii.nat.local_behind_nat);
    assert_eq!(ii.local.port(), 4500);
    assert_eq!(ii.remote, SocketAddr::new(B.ip(), 4500));
}

#[test]
fn delete_from_either_side() {
    for initiator_deletes in [true, false] {
        let mut h = Harness::new(client(), gateway(), Faults::default());
        h.run(LIMIT);
        h.assert_established();
        let now = h.now;
        let sent = if initiator_deletes {
            h.init.delete(now)
        } else {
            h.resp.delete(now)
        };
        assert!(sent, "an established SA sends a Delete");
        h.run(LIMIT);
        assert!(h.init.is_dead() && h.resp.is_dead());
        let (deleter, peer) = if initiator_deletes {
            (&h.init_events, &h.resp_events)
        } else {
            (&h.resp_events, &h.init_events)
        };
        assert!(matches!(peer.last(), Some(Event::Closed)), "{peer:?}");
        assert!(
            !deleter
                .iter()
                .any(|e| matches!(e, Event::Closed | Event::Failed(_)))
        );
    }
}

#[test]
fn unanswered_initiator_gives_up() {
    let faults = Faults {
        drop_all: true,
        ..Faults::default()
    };
    let mut c = client();
    c.retransmit = RetransmitConfig {
        initial: Duration::from_millis(500),
        give_up: Duration::from_secs(10),
    };
    let mut h = Harness::new(c, gateway(), faults);
    h.run(LIMIT);
    assert_eq!(Harness::failure(&h.init_events), Some(FailReason::Timeout));
    // Sent at 0, 0.5, 1.5, 3.5, 7.5; gave up at 10.
    assert_eq!(h.init.stats().retransmitted, 4);
    assert_eq!(h.now - h.start, Duration::from_secs(10));
    assert_eq!(h.init.poll_timeout(), None);
}

#[test]
fn half_open_responder_expires() {
    // The IKE_AUTH request never arrives.
    let faults = Faults {
        drop: (2..100).collect(),
        ..Faults::default()
    };
    let mut h = Harness::new(client(), gateway(), faults);
    h.run(LIMIT);
    assert_eq!(Harness::failure(&h.resp_events), Some(FailReason::Timeout));
    assert_eq!(Harness::failure(&h.init_events), Some(FailReason::Timeout));
}

/// Runs a handshake in which the responder hears only the first `stage` datagrams
/// (0: it is fresh; 1: it awaits IKE_AUTH; 4: both are established), without firing
/// timers. The harness's log holds the genuine datagrams of this very run, so mutations
/// of them carry the live SPIs and reach the decryption path.
fn staged(stage: usize) -> Harness {
    let faults = Faults {
        responder_deaf_from: Some(stage),
        ..Faults::default()
    };
    let mut h = Harness::new(client(), gateway(), faults);
    for _ in 0..16 {
        h.collect();
        match h.in_flight.pop_front() {
            Some((to_resp, t)) => h.deliver(to_resp, t),
            None => break,
        }
    }
    h.collect();
    h
}

#[test]
fn staged_states() {
    assert_eq!(staged(0).resp.state_name(), "awaiting IKE_SA_INIT");
    let h = staged(1);
    assert_eq!(h.resp.state_name(), "awaiting IKE_AUTH");
    assert_eq!(h.init.state_name(), "IKE_AUTH sent");
    assert_eq!(h.log.len(), 3);
    assert_eq!(staged(3).resp.state_name(), "established");
    let h = staged(4);
    assert!(h.init.is_established() && h.resp.is_established());
    assert_eq!(h.log.len(), 4);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Random bytes and mutated genuine messages, fed to a responder (and an initiator)
    /// in each state: never a panic, never a lost established SA.
    #[test]
    fn fuzz_peers_in_every_state(
        stage in prop::sample::select(vec![0usize, 1, 4]),
        pick in any::<usize>(),
        random in prop::collection::vec(any::<u8>(), 0..600),
        flips in prop::collection::vec((any::<usize>(), any::<u8>()), 0..4),
        truncate in prop::option::of(any::<usize>()),
        use_random in any::<bool>(),
    ) {
        let mut h = staged(stage);
        let log = h.log.clone();
        let mut bytes = if use_random {
            random
        } else {
            let (_, b) = &log[pick % log.len()];
            let mut b = b.clone();
            for (pos, x) in &flips {
                if !b.is_empty() {
                    let i = pos % b.len();
                    b[i] ^= x | 1;
                }
            }
            b
        };
        if let Some(t) = truncate {
            bytes.truncate(t % (bytes.len() + 1));
        }
        let established = h.resp.is_established();
        let now = h.now;
        h.resp.handle_datagram(now, B, A, &bytes);
        h.init.handle_datagram(now, A, B, &bytes);
        h.resp.handle_timeout(now + Duration::from_millis(1));
        h.collect();
        if established {
            prop_assert!(h.resp.is_established());
            prop_assert!(h.init.is_established());
        }
        // Whatever happened, the peers still reach a verdict without panicking.
        h.run(LIMIT);
    }
}

/// A child SA says where to install it: the IKE SA's current pair of addresses with the
/// ESP-in-UDP port, behind a NAT the translated ones the responder sees.
#[test]
fn child_sa_carries_the_paths_to_install_on() {
    for nat in [false, true] {
        let faults = Faults {
            nat,
            ..Faults::default()
        };
        let mut h = Harness::new(client(), gateway(), faults);
        h.run(LIMIT);
        let (i, r) = h.assert_established();
        let esp = |a: SocketAddr| SocketAddr::new(a.ip(), super::sa::ESP_IN_UDP_PORT);
        let (il, ir) = h.init.addresses();
        let (rl, rr) = h.resp.addresses();
        assert_eq!(i.paths, vec![(esp(il), esp(ir))]);
        assert_eq!(r.paths, vec![(esp(rl), esp(rr))]);
        assert_eq!(i.paths[0].0.ip(), A.ip());
        let peer = if nat { IpAddr::V4(NAT_IP) } else { A.ip() };
        assert_eq!(r.paths[0].1.ip(), peer);
    }
}
