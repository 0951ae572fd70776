//! RFC 7791, cloning the IKE SA, between two endpoints (a client with two local
//! addresses and a gateway) on simulated time: the clone is one CREATE_CHILD_SA exchange
//! with N(CLONE_IKE_SA), both IKE SAs live on, the new one is an SA of its own in each
//! endpoint (routed by its SPIs, with its own rekeys, Delete and MOBIKE moves), and a peer
//! that did not announce CLONE_IKE_SA_SUPPORTED is never asked.

use super::*;
use crate::ike::endpoint::{Connection, Endpoint, EndpointConfig, Output, SaHandle};
use crate::ike::limits::InitLimits;
use crate::ike::sa::{CloneError, MAX_CLONE_FAMILY, MoveReason};
use crate::wire::{ExchangeType, Message, Payload};

type Spis = (u64, u64);

const A2: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 77));

fn at(ip: IpAddr) -> SocketAddr {
    SocketAddr::new(ip, A.port())
}

fn ep_config(ike: IkeConfig) -> EndpointConfig {
    EndpointConfig {
        connections: vec![Connection {
            local_addrs: Vec::new(),
            remote_addrs: Vec::new(),
            ike,
        }],
        cookie_threshold: 1000,
        limits: InitLimits {
            init_rate: 0,
            ..InitLimits::default()
        },
        max_message: 10_000,
    }
}

/// The client endpoint (addresses A and A2) and the gateway endpoint (B), with a pipe
/// that numbers datagrams from 0 in the order they enter it and drops chosen ones.
struct Net {
    now: Instant,
    start: Instant,
    cl: Endpoint,
    gw: Endpoint,
    sent: usize,
    drop: BTreeSet<usize>,
    /// Datagrams the client sends from A2 are lost (the second link is down).
    a2_down: bool,
    /// (to the gateway?, datagram) for every datagram that entered the pipe.
    log: Vec<(bool, Vec<u8>)>,
    in_flight: VecDeque<(bool, Transmit)>,
    cl_events: Vec<(SaHandle, Event)>,
    gw_events: Vec<(SaHandle, Event)>,
    cl_removed: Vec<SaHandle>,
    gw_removed: Vec<SaHandle>,
}

impl Net {
    fn new(c: IkeConfig, g: IkeConfig) -> Net {
        let start = Instant::now();
        let mut cl = Endpoint::new(start, ep_config(c));
        cl.set_local_addresses(start, &[A.ip(), A2]);
        Net {
            now: start,
            start,
            cl,
            gw: Endpoint::new(start, ep_config(g)),
            sent: 0,
            drop: BTreeSet::new(),
            a2_down: false,
            log: Vec::new(),
            in_flight: VecDeque::new(),
            cl_events: Vec::new(),
            gw_events: Vec::new(),
            cl_removed: Vec::new(),
            gw_removed: Vec::new(),
        }
    }

    /// Both up: the client's first IKE SA (handle #1 on both sides) and its child.
    fn up(c: IkeConfig, g: IkeConfig) -> Net {
        let mut n = Net::new(c, g);
        let now = n.now;
        n.cl.connect(now, 0, A, B).unwrap();
        n.settle();
        assert!(n.cl.sa(SaHandle(1)).unwrap().is_established());
        assert!(n.gw.sa(SaHandle(1)).unwrap().is_established());
        assert_eq!(n.children(true, SaHandle(1)).len(), 1);
        n
    }

    fn collect(&mut self) {
        while let Some(o) = self.cl.poll() {
            match o {
                Output::Transmit(t) => self.enqueue(true, t),
                Output::Event(h, e) => self.cl_events.push((h, e)),
                Output::Removed { sa, .. } => self.cl_removed.push(sa),
                Output::Notice(_) => {}
            }
        }
        while let Some(o) = self.gw.poll() {
            match o {
                Output::Transmit(t) => self.enqueue(false, t),
                Output::Event(h, e) => self.gw_events.push((h, e)),
                Output::Removed { sa, .. } => self.gw_removed.push(sa),
                Output::Notice(_) => {}
            }
        }
    }

    fn enqueue(&mut self, to_gw: bool, t: Transmit) {
        let n = self.sent;
        self.sent += 1;
        self.log.push((to_gw, t.bytes.clone()));
        if self.drop.contains(&n) {
            return;
        }
        self.in_flight.push_back((to_gw, t));
    }

    fn deliver(&mut self, to_gw: bool, t: Transmit) {
        if self.a2_down && (t.local.ip() == A2 || t.remote.ip() == A2) {
            return;
        }
        if to_gw {
            self.gw.handle(self.now, t.remote, t.local, &t.bytes);
        } else {
            self.cl.handle(self.now, t.remote, t.local, &t.bytes);
        }
    }

    /// Delivers and fires timers until both are quiet or `limit` of simulated time passed.
    fn run(&mut self, limit: Duration) {
        for _ in 0..20_000 {
            self.collect();
            if let Some((to_gw, t)) = self.in_flight.pop_front() {
                self.deliver(to_gw, t);
                continue;
            }
            let next = [self.cl.poll_timeout(), self.gw.poll_timeout()]
                .into_iter()
                .flatten()
                .min();
            match next {
                Some(at) if at <= self.start + limit => {
                    self.now = self.now.max(at);
                    self.cl.handle_timeout(self.now);
                    self.gw.handle_timeout(self.now);
                }
                _ => return,
            }
        }
        panic!("the clone net did not settle");
    }

    /// Runs until no datagram is in flight (timers of the next seconds only).
    fn settle(&mut self) {
        let limit = self.now.duration_since(self.start) + Duration::from_secs(5);
        self.run(limit);
    }

    fn run_for(&mut self, d: Duration) {
        let limit = self.now.duration_since(self.start) + d;
        self.run(limit);
        self.now = self.now.max(self.start + limit);
    }

    fn ep(&self, client: bool) -> &Endpoint {
        if client { &self.cl } else { &self.gw }
    }

    fn ep_mut(&mut self, client: bool) -> &mut Endpoint {
        if client { &mut self.cl } else { &mut self.gw }
    }

    fn sa(&self, client: bool, h: SaHandle) -> &IkeSa {
        self.ep(client).sa(h).unwrap()
    }

    fn children(&self, client: bool, h: SaHandle) -> Vec<(u32, u32)> {
        self.sa(client, h).child_spis()
    }

    /// The live IKE SAs of a side, by handle.
    fn live(&self, client: bool) -> Vec<SaHandle> {
        self.ep(client)
            .iter()
            .filter(|(_, _, s)| s.is_established())
            .map(|(h, _, _)| h)
            .collect()
    }

    fn events(&self, client: bool) -> &[(SaHandle, Event)] {
        if client {
            &self.cl_events
        } else {
            &self.gw_events
        }
    }

    /// The IkeSaCloned events of a side: (new SA, SPIs of the original).
    fn clones(&self, client: bool) -> Vec<(SaHandle, Spis, Spis)> {
        self.events(client)
            .iter()
            .filter_map(|(h, e)| match e {
                Event::IkeSaCloned { info, from } => Some((*h, (info.spi_i, info.spi_r), *from)),
                _ => None,
            })
            .collect()
    }

    fn count(&self, client: bool, h: SaHandle, f: impl Fn(&Event) -> bool) -> usize {
        self.events(client)
            .iter()
            .filter(|(x, e)| *x == h && f(e))
            .count()
    }

    /// The inner payloads of datagram `i` of the log, opened by the side that received it
    /// with IKE SA `h`'s keys (the sender's SA with the same SPIs).
    fn open(&self, i: usize, h: SaHandle) -> Vec<Payload> {
        let (to_gw, bytes) = &self.log[i];
        self.sa(!*to_gw, h)
            .open_test_message(bytes)
            .unwrap_or_else(|| panic!("datagram {i} does not open with {h}"))
    }

    fn header(&self, i: usize) -> crate::wire::Header {
        Message::parse(&self.log[i].1).unwrap().header
    }
}

fn has(p: &[Payload], t: NotifyType) -> bool {
    p.iter()
        .any(|x| matches!(x, Payload::Notify(n) if n.notify_type == t))
}

const FIRST: SaHandle = SaHandle(1);
const SECOND: SaHandle = SaHandle(2);

/// The clone as the client starts it: one CREATE_CHILD_SA request with N(CLONE_IKE_SA) and
/// one response, no AUTH; each endpoint has a second IKE SA routed by its own SPIs,
/// cloned from the first, without children; the first and its child untouched.
#[test]
fn client_clones_in_one_exchange() {
    let mut n = Net::up(client(), gateway());
    // Both announced support in IKE_AUTH (request 2, response 3).
    assert!(has(&n.open(2, FIRST), NotifyType::CloneIkeSaSupported));
    assert!(has(&n.open(3, FIRST), NotifyType::CloneIkeSaSupported));
    assert!(n.sa(true, FIRST).peer_supports_clone());
    assert!(n.sa(false, FIRST).peer_supports_clone());
    let first_spis = n.sa(true, FIRST).spis();
    let first_children = n.children(true, FIRST);
    let gw_children = n.children(false, FIRST);
    let before = n.log.len();
    let now = n.now;
    n.cl.clone_sa(now, FIRST).unwrap();
    n.settle();
    // On the wire: one request, one response, on the first IKE SA.
    assert_eq!(n.log.len() - before, 2, "one exchange");
    let (req, resp) = (n.header(before), n.header(before + 1));
    assert_eq!(req.exchange_type, ExchangeType::CreateChildSa);
    assert_eq!(resp.exchange_type, ExchangeType::CreateChildSa);
    assert_eq!(Some((req.spi_i, req.spi_r)), first_spis);
    let p = n.open(before, FIRST);
    assert!(
        matches!(p.first(), Some(Payload::Notify(x)) if x.notify_type == NotifyType::CloneIkeSa)
    );
    assert!(
        !p.iter()
            .any(|x| matches!(x, Payload::Auth(_) | Payload::IdI(_)))
    );
    let r = n.open(before + 1, FIRST);
    assert!(r.iter().any(|x| matches!(x, Payload::Sa(_))));
    assert!(!r.iter().any(|x| matches!(x, Payload::Auth(_))));
    // Each side: the clone is SA #2, cloned from #1, same SPIs on both sides.
    for client in [true, false] {
        assert_eq!(n.live(client), vec![FIRST, SECOND]);
        assert_eq!(n.ep(client).cloned_from(SECOND), Some(FIRST));
        assert_eq!(n.sa(client, SECOND).cloned_from(), first_spis);
        assert!(n.children(client, SECOND).is_empty());
        assert_ne!(n.sa(client, SECOND).spis(), first_spis);
        // The first IKE SA: same SPIs, not rekeyed, no Delete, no child event.
        assert_eq!(n.sa(client, FIRST).spis(), first_spis);
        assert_eq!(
            n.count(client, FIRST, |e| matches!(
                e,
                Event::IkeSaRekeyed(_) | Event::ChildSaDeleted { .. } | Event::Closed
            )),
            0
        );
    }
    assert_eq!(n.sa(true, SECOND).spis(), n.sa(false, SECOND).spis());
    assert_eq!(n.children(true, FIRST), first_children);
    assert_eq!(n.children(false, FIRST), gw_children);
    let c = n.clones(true);
    assert_eq!(c.len(), 1);
    assert_eq!(Some(c[0].2), first_spis);
    assert_eq!(n.clones(false).len(), 1);
    // The clone keeps the original's roles and MOBIKE state.
    assert!(n.sa(true, SECOND).is_initiator());
    assert!(!n.sa(false, SECOND).is_initiator());
    assert!(n.sa(true, SECOND).mobike() && n.sa(false, SECOND).mobike());
    assert_eq!(
        n.sa(true, SECOND).addresses(),
        n.sa(true, FIRST).addresses()
    );
    assert_eq!(n.sa(false, SECOND).peer_addresses(), &[A2]);
    // Both answer liveness checks on their own, hours later (DPD is per IKE SA).
    n.run_for(Duration::from_secs(600));
    assert_eq!(n.live(true), vec![FIRST, SECOND]);
    assert_eq!(n.live(false), vec![FIRST, SECOND]);
}

/// The gateway (the original responder) clones: the clone's IKE initiator is the gateway,
/// but the client stays the MOBIKE initiator (original initiator) of it.
#[test]
fn gateway_clones() {
    let mut n = Net::up(client(), gateway());
    let before = n.log.len();
    let now = n.now;
    n.gw.clone_sa(now, FIRST).unwrap();
    n.settle();
    assert_eq!(n.log.len() - before, 2);
    assert!(!n.log[before].0, "the gateway's request");
    for client in [true, false] {
        assert_eq!(n.live(client), vec![FIRST, SECOND]);
        assert!(n.children(client, SECOND).is_empty());
    }
    assert!(n.sa(true, SECOND).is_initiator());
    // The client moves the gateway's clone to A2; the first stays on A.
    let now = n.now;
    assert_eq!(n.cl.request_move(now, SECOND, A2, None), Ok(true));
    n.settle();
    assert_eq!(n.sa(true, SECOND).addresses(), (at(A2), B));
    assert_eq!(n.sa(false, SECOND).addresses(), (B, at(A2)));
    assert_eq!(n.sa(true, FIRST).addresses(), (A, B));
}

/// A peer that did not announce CLONE_IKE_SA_SUPPORTED is never asked: nothing is sent.
/// With `clone = false` we do not announce it (and cannot clone either).
#[test]
fn without_support_nothing_is_sent() {
    let off = |c: IkeConfig| IkeConfig {
        clone_ike_sa: false,
        ..c
    };
    // The gateway has cloning off: absent from its IKE_AUTH response.
    let mut n = Net::up(client(), off(gateway()));
    assert!(has(&n.open(2, FIRST), NotifyType::CloneIkeSaSupported));
    assert!(!has(&n.open(3, FIRST), NotifyType::CloneIkeSaSupported));
    assert!(!n.sa(true, FIRST).peer_supports_clone());
    let before = n.log.len();
    let now = n.now;
    assert_eq!(n.cl.clone_sa(now, FIRST), Err(CloneError::PeerUnsupported));
    assert_eq!(n.gw.clone_sa(now, FIRST), Err(CloneError::Disabled));
    n.settle();
    assert_eq!(n.log.len(), before, "nothing sent");
    assert_eq!(n.live(true), vec![FIRST]);
    // The client has it off: absent from the request; the gateway does not ask.
    let mut n = Net::up(off(client()), gateway());
    assert!(!has(&n.open(2, FIRST), NotifyType::CloneIkeSaSupported));
    assert!(has(&n.open(3, FIRST), NotifyType::CloneIkeSaSupported));
    let before = n.log.len();
    let now = n.now;
    assert_eq!(n.gw.clone_sa(now, FIRST), Err(CloneError::PeerUnsupported));
    assert_eq!(n.cl.clone_sa(now, FIRST), Err(CloneError::Disabled));
    n.settle();
    assert_eq!(n.log.len(), before);
    assert_eq!(n.live(false), vec![FIRST]);
    assert_eq!(n.cl.clone_sa(now, SaHandle(9)), Err(CloneError::NoSuchSa));
}

/// A responder that did not announce support ignores CLONE_IKE_SA (an unknown status
/// notify): the request is a plain rekey of the IKE SA for it, and no second IKE SA is
/// made on its side.
#[test]
fn responder_without_support_ignores_the_notify() {
    let mut n = Net::up(
        client(),
        IkeConfig {
            clone_ike_sa: false,
            ..gateway()
        },
    );
    let now = n.now;
    n.cl.sa_mut(FIRST).unwrap().clone_ike_unchecked(now);
    n.settle();
    assert_eq!(n.live(false), vec![FIRST]);
    assert!(n.clones(false).is_empty());
    assert_eq!(
        n.count(false, FIRST, |e| matches!(e, Event::IkeSaRekeyed(_))),
        1
    );
}

/// Loss of the clone's request, then of its response: retransmitted (answered from the
/// cache the second time), one clone on each side all the same.
#[test]
fn lost_request_or_response_is_retransmitted() {
    for lost in [0, 1] {
        let mut n = Net::up(client(), gateway());
        let before = n.log.len();
        n.drop.insert(before + lost);
        let now = n.now;
        n.cl.clone_sa(now, FIRST).unwrap();
        n.run_for(Duration::from_secs(10));
        for client in [true, false] {
            assert_eq!(n.live(client), vec![FIRST, SECOND], "lost {lost}");
            assert_eq!(n.clones(client).len(), 1);
        }
        assert_eq!(n.sa(true, SECOND).spis(), n.sa(false, SECOND).spis());
        assert_eq!(n.sa(true, FIRST).stats().retransmitted, 1);
        if lost == 1 {
            assert_eq!(n.sa(false, FIRST).stats().answered_from_cache, 1);
        }
    }
}

/// The clone is rekeyed and deleted on its own: the first IKE SA and its child never
/// notice; the first is rekeyed on its own too, and its child stays with it.
#[test]
fn clone_rekeyed_and_deleted_independently() {
    let mut n = Net::up(client(), gateway());
    let now = n.now;
    n.cl.clone_sa(now, FIRST).unwrap();
    n.settle();
    let first = n.sa(true, FIRST).spis();
    let children = n.children(true, FIRST);
    let clone = n.sa(true, SECOND).spis();
    // The clone's rekey (the gateway's): new SPIs for #2 on both sides, #1 unchanged.
    let now = n.now;
    assert!(n.gw.sa_mut(SECOND).unwrap().rekey_ike(now));
    n.settle();
    assert_ne!(n.sa(true, SECOND).spis(), clone);
    assert_eq!(n.sa(true, SECOND).spis(), n.sa(false, SECOND).spis());
    assert_eq!(n.sa(true, FIRST).spis(), first);
    assert_eq!(n.children(true, FIRST), children);
    assert_eq!(
        n.count(true, SECOND, |e| matches!(e, Event::IkeSaRekeyed(_))),
        1
    );
    assert_eq!(
        n.count(true, FIRST, |e| matches!(e, Event::IkeSaRekeyed(_))),
        0
    );
    // A child on the clone, rekeyed on the clone.
    let now = n.now;
    assert!(n.cl.sa_mut(SECOND).unwrap().create_child(now, "net"));
    n.settle();
    assert_eq!(n.children(true, SECOND).len(), 1);
    assert_eq!(n.children(false, SECOND).len(), 1);
    // The first's rekey: its child moves along with it, the clone's does not.
    let now = n.now;
    assert!(n.cl.sa_mut(FIRST).unwrap().rekey_ike(now));
    n.settle();
    assert_ne!(n.sa(true, FIRST).spis(), first);
    assert_eq!(n.children(true, FIRST), children);
    assert_eq!(n.children(true, SECOND).len(), 1);
    // The clone deleted: its own Delete, its child with it; #1 stays, with its child.
    let now = n.now;
    assert!(n.cl.sa_mut(SECOND).unwrap().delete(now));
    n.settle();
    assert!(n.cl_removed.contains(&SECOND));
    assert!(n.gw_removed.contains(&SECOND));
    assert_eq!(n.live(true), vec![FIRST]);
    assert_eq!(n.live(false), vec![FIRST]);
    assert_eq!(n.children(true, FIRST), children);
    assert_eq!(n.count(false, FIRST, |e| matches!(e, Event::Closed)), 0);
    // And the first still answers: a liveness check after the DPD delay, no failure.
    n.run_for(Duration::from_secs(300));
    assert_eq!(n.live(true), vec![FIRST]);
    assert_eq!(n.live(false), vec![FIRST]);
}

/// The appendix-B flow in the harness: clone, move the clone to A2 with MOBIKE, then a
/// child on the clone: it is installed on A2, the first's child stays on A.
#[test]
fn clone_then_mobike_move_and_own_child() {
    let mut n = Net::up(client(), gateway());
    let now = n.now;
    n.cl.clone_sa(now, FIRST).unwrap();
    n.settle();
    let now = n.now;
    assert_eq!(n.cl.request_move(now, SECOND, A2, None), Ok(true));
    n.settle();
    assert_eq!(n.sa(true, SECOND).addresses(), (at(A2), B));
    assert_eq!(n.sa(false, SECOND).addresses(), (B, at(A2)));
    assert_eq!(n.sa(true, FIRST).addresses(), (A, B));
    let moved: Vec<_> = n
        .gw_events
        .iter()
        .filter_map(|(h, e)| match e {
            Event::IkeSaMoved { reason, remote, .. } => Some((*h, *reason, *remote)),
            _ => None,
        })
        .collect();
    // A2 is new to the gateway: its return-routability check first.
    assert_eq!(
        moved,
        vec![(SECOND, MoveReason::PeerUpdateVerified, at(A2))]
    );
    let now = n.now;
    assert!(n.cl.sa_mut(SECOND).unwrap().create_child(now, "net"));
    n.settle();
    let child = |client: bool, h: SaHandle| {
        n.events(client)
            .iter()
            .filter(|(x, _)| *x == h)
            .filter_map(|(_, e)| match e {
                Event::ChildSaEstablished(c) => Some(c.paths.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    let on = |ip: IpAddr| {
        (
            SocketAddr::new(ip, crate::ike::sa::ESP_IN_UDP_PORT),
            SocketAddr::new(B.ip(), crate::ike::sa::ESP_IN_UDP_PORT),
        )
    };
    assert_eq!(child(true, SECOND), vec![vec![on(A2)]]);
    assert_eq!(child(true, FIRST), vec![vec![on(A.ip())]]);
    assert_eq!(n.children(false, SECOND).len(), 1);
    assert_eq!(n.children(false, FIRST).len(), 1);
    // The second link goes down: the clone probes and stays up (it has A too), the first
    // is not moved.
    n.a2_down = true;
    let now = n.now;
    n.cl.set_local_addresses(now, &[A.ip()]);
    n.run_for(Duration::from_secs(10));
    assert_eq!(n.sa(true, SECOND).addresses(), (A, B));
    assert_eq!(n.sa(true, FIRST).addresses(), (A, B));
    assert_eq!(n.live(true), vec![FIRST, SECOND]);
}

/// A clone racing an IKE rekey of the original, each way: a clone is no rekey of the old
/// SA (RFC 7791), so no collision rule applies: the rekey replaces the original (its
/// child with it), the clone comes up beside it, whichever request arrives first.
#[test]
fn clone_races_an_ike_rekey() {
    for (clone_by_client, rekey_by_client) in
        [(true, false), (false, true), (true, true), (false, false)]
    {
        let mut n = Net::up(client(), gateway());
        let first = n.sa(true, FIRST).spis();
        let children = n.children(true, FIRST);
        let now = n.now;
        n.ep_mut(clone_by_client).clone_sa(now, FIRST).unwrap();
        assert!(
            n.ep_mut(rekey_by_client)
                .sa_mut(FIRST)
                .unwrap()
                .rekey_ike(now)
        );
        n.run_for(Duration::from_secs(30));
        let case = (clone_by_client, rekey_by_client);
        for client in [true, false] {
            assert_eq!(n.live(client), vec![FIRST, SECOND], "{case:?}");
            assert_eq!(n.clones(client).len(), 1, "{case:?}");
            assert_ne!(n.sa(client, FIRST).spis(), first, "{case:?}: rekeyed");
            assert!(n.children(client, SECOND).is_empty(), "{case:?}");
            assert_eq!(n.count(client, FIRST, |e| matches!(e, Event::Failed(_))), 0);
        }
        assert_eq!(n.sa(true, FIRST).spis(), n.sa(false, FIRST).spis());
        assert_eq!(n.sa(true, SECOND).spis(), n.sa(false, SECOND).spis());
        assert_eq!(n.children(true, FIRST), children, "{case:?}");
        // Both still work: a child on each.
        let now = n.now;
        for h in [FIRST, SECOND] {
            assert!(n.cl.sa_mut(h).unwrap().create_child(now, "net"));
        }
        n.settle();
        assert_eq!(n.children(false, FIRST).len(), 2, "{case:?}");
        assert_eq!(n.children(false, SECOND).len(), 1, "{case:?}");
    }
}

/// A clone racing a child rekey of the original, and two clones (one each way) at once:
/// all complete; three IKE SAs, the child rekeyed on the first.
#[test]
fn clone_races_a_child_rekey_and_another_clone() {
    let mut n = Net::up(client(), gateway());
    let old = n.children(true, FIRST);
    let now = n.now;
    n.cl.clone_sa(now, FIRST).unwrap();
    n.gw.clone_sa(now, FIRST).unwrap();
    assert!(n.gw.sa_mut(FIRST).unwrap().rekey_children(now));
    n.run_for(Duration::from_secs(30));
    for client in [true, false] {
        assert_eq!(n.live(client).len(), 3);
        assert_eq!(n.clones(client).len(), 2);
        assert_eq!(n.children(client, FIRST).len(), 1);
    }
    assert_ne!(n.children(true, FIRST), old, "rekeyed");
}

/// The IKE SA and its clones are bounded: the peer's clone beyond the limit is refused
/// (NO_ADDITIONAL_SAS) and ours is refused before anything is sent.
#[test]
fn clones_are_bounded() {
    let mut n = Net::up(client(), gateway());
    for _ in 1..MAX_CLONE_FAMILY {
        let now = n.now;
        n.cl.clone_sa(now, FIRST).unwrap();
        n.settle();
    }
    assert_eq!(n.live(true).len(), MAX_CLONE_FAMILY);
    assert_eq!(n.live(false).len(), MAX_CLONE_FAMILY);
    let now = n.now;
    assert_eq!(n.cl.clone_sa(now, FIRST), Err(CloneError::Limit));
    // A clone of a clone counts too.
    assert_eq!(n.cl.clone_sa(now, SECOND), Err(CloneError::Limit));
    // The peer's, forced: refused.
    n.cl.sa_mut(FIRST).unwrap().clone_ike_unchecked(now);
    n.settle();
    assert_eq!(n.live(false).len(), MAX_CLONE_FAMILY);
    assert_eq!(
        n.count(true, FIRST, |e| matches!(
            e,
            Event::CloneFailed(FailReason::PeerNotify(NotifyType::NoAdditionalSas))
        )),
        1
    );
}

/// With `mif` on both sides, a clone inherits the extension's state (PROTOCOL.md sections
/// 2 to 4): on each side the interface tables and generations are the original's (the
/// client's own two interfaces here), without its children.
#[test]
fn clone_inherits_the_multi_interface_state() {
    let on = |c: IkeConfig| IkeConfig { mif: true, ..c };
    let mut n = Net::up(on(client()), on(gateway()));
    let now = n.now;
    let iface = |name: &str, addr: IpAddr| crate::ike::sa::mif::LocalInterface {
        name: name.into(),
        addr,
        port: 4500,
        priority: 0,
        alternate: false,
    };
    let list = [iface("c1", A.ip()), iface("c2", A2)];
    n.cl.sa_mut(FIRST).unwrap().set_local_interfaces(now, &list);
    n.settle();
    let now = n.now;
    n.cl.clone_sa(now, FIRST).unwrap();
    n.settle();
    for client in [true, false] {
        let orig = n.sa(client, FIRST).test_mif_state();
        let clone = n.sa(client, SECOND).test_mif_state();
        if client {
            assert_eq!(orig.ours.len(), 2, "{orig:?}");
        }
        assert_eq!(
            (
                &clone.ours,
                &clone.peer,
                clone.our_generation,
                clone.peer_generation
            ),
            (
                &orig.ours,
                &orig.peer,
                orig.our_generation,
                orig.peer_generation
            )
        );
        assert!(clone.children.is_empty());
    }
}

/// With `mif` on both sides, a child negotiated on a clone that MOBIKE moved to the second
/// interface runs over that interface alone (its MIF_CHILD lists only it: the appendix-B
/// layout), on both sides, while a child of the first IKE SA gets every pair.
#[test]
fn a_clones_child_is_confined_to_the_clones_interface() {
    let on = |c: IkeConfig| IkeConfig { mif: true, ..c };
    let mut n = Net::up(on(client()), on(gateway()));
    let now = n.now;
    let iface = |name: &str, addr: IpAddr| crate::ike::sa::mif::LocalInterface {
        name: name.into(),
        addr,
        port: 4500,
        priority: 0,
        alternate: false,
    };
    let list = [iface("c1", A.ip()), iface("c2", A2)];
    n.cl.sa_mut(FIRST).unwrap().set_local_interfaces(now, &list);
    n.ep_mut(false)
        .sa_mut(FIRST)
        .unwrap()
        .set_local_interfaces(now, &[iface("g1", B.ip())]);
    n.settle();
    let now = n.now;
    n.cl.clone_sa(now, FIRST).unwrap();
    n.settle();
    let now = n.now;
    assert_eq!(n.cl.request_move(now, SECOND, A2, None), Ok(true));
    n.settle();
    assert_eq!(n.sa(true, SECOND).addresses().0, at(A2));
    let now = n.now;
    assert!(n.cl.sa_mut(SECOND).unwrap().create_child(now, "net"));
    let now = n.now;
    assert!(n.cl.sa_mut(FIRST).unwrap().create_child(now, "net"));
    n.settle();
    let mif_paths = |client: bool, h: SaHandle| -> Vec<Vec<(IpAddr, IpAddr)>> {
        n.events(client)
            .iter()
            .filter(|(x, _)| *x == h)
            .filter_map(|(_, e)| match e {
                Event::ChildSaEstablished(c) => c.mif.as_ref().map(|m| {
                    m.paths
                        .iter()
                        .map(|p| (p.local.ip(), p.remote.ip()))
                        .collect()
                }),
                _ => None,
            })
            .collect()
    };
    let (a, b) = (A.ip(), B.ip());
    // The clone's child: from A2 only, on both sides.
    assert_eq!(mif_paths(true, SECOND), vec![vec![(A2, b)]]);
    assert_eq!(mif_paths(false, SECOND), vec![vec![(b, A2)]]);
    // The first IKE SA's new child: every pair (the IKE_AUTH child came before the list).
    let first = mif_paths(true, FIRST);
    assert_eq!(first.last(), Some(&vec![(a, b), (A2, b)]), "{first:?}");
}
