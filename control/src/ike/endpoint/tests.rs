//! The endpoint between real IKE SAs: two (or three) endpoints exchange what they return,
//! in simulated time, with no sockets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use super::*;
use crate::dataplane::aead::Cipher;
use crate::ike::config::IkeProposal;
use crate::ike::sample;

const GW: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 0, 1)), 500);

fn client_addr(n: u8) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(198, 18, 1, n)), 500)
}

fn config(ike: IkeConfig, remote_addrs: Vec<IpAddr>) -> EndpointConfig {
    EndpointConfig {
        connections: vec![Connection {
            local_addrs: Vec::new(),
            remote_addrs,
            ike,
        }],
        // Far above what the tests open, unless a test lowers it.
        cookie_threshold: 1000,
        limits: InitLimits {
            init_rate: 0,
            ..InitLimits::default()
        },
        max_message: 10_000,
    }
}

/// A gateway endpoint and client endpoints, each at its own address, with what each
/// polled.
struct Net {
    now: Instant,
    gw: Endpoint,
    clients: Vec<(SocketAddr, Endpoint)>,
    gw_out: Vec<Output>,
    client_out: Vec<Vec<Output>>,
    /// Datagrams that reached the gateway and the SA each went to.
    gw_routed: Vec<Option<SaHandle>>,
}

impl Net {
    fn new(gw: EndpointConfig, clients: usize) -> Net {
        let now = Instant::now();
        Net {
            now,
            gw: Endpoint::new(now, gw),
            clients: (0..clients)
                .map(|i| {
                    let a = client_addr(u8::try_from(i).unwrap() + 2);
                    (
                        a,
                        Endpoint::new(now, config(sample::client(), vec![GW.ip()])),
                    )
                })
                .collect(),
            gw_out: Vec::new(),
            client_out: (0..clients).map(|_| Vec::new()).collect(),
            gw_routed: Vec::new(),
        }
    }

    fn connect(&mut self, i: usize) -> SaHandle {
        let local = self.clients[i].0;
        self.clients[i].1.connect(self.now, 0, local, GW).unwrap()
    }

    /// Delivers datagrams both ways until nothing moves (at most `rounds` times).
    fn run(&mut self, rounds: usize) {
        for _ in 0..rounds {
            let mut moved = false;
            for i in 0..self.clients.len() {
                while let Some(o) = self.clients[i].1.poll() {
                    if let Output::Transmit(t) = &o {
                        assert_eq!(t.remote, GW);
                        let h = self.gw.handle(self.now, t.remote, t.local, &t.bytes);
                        self.gw_routed.push(h);
                        moved = true;
                    }
                    self.client_out[i].push(o);
                }
            }
            while let Some(o) = self.gw.poll() {
                if let Output::Transmit(t) = &o {
                    let i = self
                        .clients
                        .iter()
                        .position(|(a, _)| *a == t.remote)
                        .expect("to a client");
                    let (a, ep) = &mut self.clients[i];
                    ep.handle(self.now, *a, t.local, &t.bytes);
                    moved = true;
                }
                self.gw_out.push(o);
            }
            if !moved {
                return;
            }
            self.now += Duration::from_millis(1);
        }
    }
}

fn established(out: &[Output]) -> Vec<SaHandle> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(h, Event::IkeSaEstablished(_)) => Some(*h),
            _ => None,
        })
        .collect()
}

fn children(out: &[Output]) -> Vec<(SaHandle, u32)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Event(h, Event::ChildSaEstablished(c)) => Some((*h, c.spi_in)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_client_and_a_gateway_establish_through_their_endpoints() {
    let mut net = Net::new(config(sample::gateway(), Vec::new()), 1);
    let h = net.connect(0);
    assert_eq!(h, SaHandle(1));
    net.run(20);
    assert_eq!(established(&net.client_out[0]), vec![h]);
    assert_eq!(established(&net.gw_out), vec![SaHandle(1)]);
    assert_eq!(children(&net.gw_out).len(), 1);
    // Every datagram went to the one responder, the first one creating it.
    assert!(!net.gw_routed.is_empty());
    assert!(net.gw_routed.iter().all(|r| *r == Some(SaHandle(1))));
    assert_eq!(net.gw.len(), 1);
    assert_eq!(net.gw.connection_of(SaHandle(1)), Some(0));
    assert!(net.gw.sa(SaHandle(1)).unwrap().is_established());
    // Established: no longer half-open.
    let st = net.gw.stats();
    assert_eq!((st.half_open, st.half_open_sources), (0, 0));
    assert_eq!(st.cookies, CookieStats::default());
    // A child SA's event comes before the datagram that lets the peer use it.
    let ev = net
        .gw_out
        .iter()
        .position(|o| matches!(o, Output::Event(_, Event::ChildSaEstablished(_))))
        .unwrap();
    let last_tx = net
        .gw_out
        .iter()
        .rposition(|o| matches!(o, Output::Transmit(_)))
        .unwrap();
    assert!(ev < last_tx, "{:?}", net.gw_out);
}

#[test]
fn datagrams_are_routed_by_spi_to_each_of_two_clients() {
    let mut net = Net::new(config(sample::gateway(), Vec::new()), 2);
    net.connect(0);
    net.connect(1);
    net.run(20);
    let mut gw = established(&net.gw_out);
    gw.sort();
    assert_eq!(gw, vec![SaHandle(1), SaHandle(2)]);
    for i in 0..2 {
        assert_eq!(established(&net.client_out[i]).len(), 1);
    }
    // Each gateway SA has the other client's child: the SPIs match pairwise.
    let kids = children(&net.gw_out);
    assert_eq!(kids.len(), 2);
    assert_ne!(kids[0].0, kids[1].0);
    for (h, _) in &kids {
        let sa = net.gw.sa(*h).unwrap();
        let remote = sa.addresses().1;
        let i = net.clients.iter().position(|(a, _)| *a == remote).unwrap();
        let client_spis: Vec<u32> = net.clients[i]
            .1
            .iter()
            .flat_map(|(_, _, sa)| sa.child_spis())
            .map(|(spi_in, _)| spi_in)
            .collect();
        let gw_out: Vec<u32> = sa.child_spis().iter().map(|(_, out)| *out).collect();
        assert_eq!(client_spis, gw_out);
    }
    assert_eq!(net.gw.stats().half_open, 0);
}

#[test]
fn the_cookie_gate_demands_a_round_trip_before_any_state() {
    let mut cfg = config(sample::gateway(), Vec::new());
    cfg.cookie_threshold = 0;
    let mut net = Net::new(cfg, 1);
    let h = net.connect(0);
    // One step: the request reaches the gateway, which keeps nothing and answers.
    let Some(Output::Transmit(t)) = net.clients[0].1.poll() else {
        panic!("no IKE_SA_INIT request");
    };
    assert_eq!(net.gw.handle(net.now, t.remote, t.local, &t.bytes), None);
    assert!(net.gw.is_empty());
    let Some(Output::Transmit(cookie)) = net.gw.poll() else {
        panic!("no COOKIE");
    };
    assert_eq!(cookie.remote, t.local);
    assert!(net.gw.poll().is_none());
    assert_eq!(net.gw.stats().cookies.cookies_sent, 1);
    // The client retries with the cookie; it is then admitted and establishes.
    let (a, ep) = &mut net.clients[0];
    assert_eq!(ep.handle(net.now, *a, GW, &cookie.bytes), Some(h));
    net.run(20);
    assert_eq!(established(&net.client_out[0]), vec![h]);
    let st = net.gw.stats();
    assert_eq!(st.cookies.cookies_sent, 1);
    assert_eq!(st.cookies.cookies_accepted, 1);
    // The first request made no SA: the responder is #1.
    assert_eq!(established(&net.gw_out), vec![SaHandle(1)]);
}

#[test]
fn the_half_open_cap_refuses_new_requests_and_says_so_once() {
    let mut cfg = config(sample::gateway(), Vec::new());
    cfg.limits.max_half_open = 1;
    let mut net = Net::new(cfg, 3);
    let mut inits = Vec::new();
    for i in 0..3 {
        net.connect(i);
        let Some(Output::Transmit(t)) = net.clients[i].1.poll() else {
            panic!("no request");
        };
        inits.push(t);
    }
    let routed: Vec<_> = inits
        .iter()
        .map(|t| net.gw.handle(net.now, t.remote, t.local, &t.bytes))
        .collect();
    assert_eq!(routed, vec![Some(SaHandle(1)), None, None]);
    assert_eq!(net.gw.len(), 1);
    let mut notices = Vec::new();
    while let Some(o) = net.gw.poll() {
        if let Output::Notice(n) = o {
            notices.push(n);
        }
    }
    assert_eq!(notices, vec![Notice::HalfOpenFull { half_open: 1 }]);
    let st = net.gw.stats();
    assert_eq!(st.half_open, 1);
    assert_eq!(st.limits.dropped_half_open, 2);
}

#[test]
fn a_request_that_fits_no_connection_is_noticed_and_dropped() {
    let other: IpAddr = Ipv4Addr::new(198, 18, 9, 9).into();
    let mut net = Net::new(config(sample::gateway(), vec![other]), 1);
    net.connect(0);
    let Some(Output::Transmit(t)) = net.clients[0].1.poll() else {
        panic!("no request");
    };
    assert_eq!(net.gw.handle(net.now, t.remote, t.local, &t.bytes), None);
    assert!(net.gw.is_empty());
    match net.gw.poll() {
        Some(Output::Notice(Notice::NoConnection { remote, local })) => {
            assert_eq!((remote, local), (t.local, GW));
        }
        o => panic!("{o:?}"),
    }
    assert!(net.gw.poll().is_none());
}

#[test]
fn oversize_garbage_and_strays_are_dropped_without_state() {
    let mut ep = Endpoint::new(Instant::now(), config(sample::gateway(), Vec::new()));
    let now = Instant::now();
    let from = client_addr(2);
    assert_eq!(ep.handle(now, GW, from, &[0u8; 10_001]), None);
    assert_eq!(ep.stats().oversize, 1);
    assert_eq!(ep.handle(now, GW, from, &[1, 2, 3]), None);
    // A well-formed header for an SA that does not exist (a response, and a request
    // with a responder SPI): nothing to route to, nothing to create.
    let mut client = Endpoint::new(now, config(sample::client(), Vec::new()));
    client.connect(now, 0, from, GW).unwrap();
    let Some(Output::Transmit(t)) = client.poll() else {
        panic!("no request");
    };
    let mut response = t.bytes.clone();
    response[19] = 0x20; // the R flag, not the I flag
    assert_eq!(ep.handle(now, GW, from, &response), None);
    let mut later = t.bytes.clone();
    later[8..16].copy_from_slice(&7u64.to_be_bytes()); // a responder SPI
    assert_eq!(ep.handle(now, GW, from, &later), None);
    assert!(ep.is_empty());
    assert!(ep.poll().is_none());
    assert_eq!(ep.stats().half_open, 0);
}

#[test]
fn a_refused_request_is_answered_and_nothing_is_kept() {
    let mut gw = sample::gateway();
    // Nothing in common with the client's proposals.
    gw.proposals = vec![IkeProposal {
        ciphers: vec![Cipher::Aes128Gcm],
        ..IkeProposal::all()
    }];
    let mut client = sample::client();
    client.proposals = vec![IkeProposal {
        ciphers: vec![Cipher::ChaCha20Poly1305],
        ..IkeProposal::all()
    }];
    let now = Instant::now();
    let mut g = Endpoint::new(now, config(gw, Vec::new()));
    let mut c = Endpoint::new(now, config(client, Vec::new()));
    let from = client_addr(2);
    c.connect(now, 0, from, GW).unwrap();
    let Some(Output::Transmit(t)) = c.poll() else {
        panic!("no request");
    };
    assert_eq!(g.handle(now, GW, from, &t.bytes), None);
    assert!(g.is_empty());
    assert!(matches!(g.poll(), Some(Output::Transmit(a)) if a.remote == from));
    assert!(g.poll().is_none());
    assert_eq!(g.stats().half_open, 0);
}

#[test]
fn a_deleted_sa_is_removed_after_its_last_datagram() {
    let mut net = Net::new(config(sample::gateway(), Vec::new()), 1);
    let h = net.connect(0);
    net.run(20);
    assert_eq!(established(&net.client_out[0]), vec![h]);
    net.client_out[0].clear();
    net.gw_out.clear();
    let now = net.now;
    assert!(net.clients[0].1.sa_mut(h).unwrap().delete(now));
    assert!(!net.clients[0].1.has_live(0));
    net.run(5);
    // The client: its Delete leaves, then the SA is forgotten.
    let out = &net.client_out[0];
    let tx = out
        .iter()
        .position(|o| matches!(o, Output::Transmit(_)))
        .unwrap();
    let gone = out
        .iter()
        .position(|o| matches!(o, Output::Removed { sa, conn: 0 } if *sa == h))
        .unwrap();
    assert!(tx < gone, "{out:?}");
    assert!(net.clients[0].1.is_empty());
    assert!(net.clients[0].1.sa(h).is_none());
    // The gateway: closed by the peer, then forgotten.
    let closed = net
        .gw_out
        .iter()
        .position(|o| matches!(o, Output::Event(SaHandle(1), Event::Closed)))
        .unwrap();
    let gone = net
        .gw_out
        .iter()
        .position(|o| {
            matches!(
                o,
                Output::Removed {
                    sa: SaHandle(1),
                    ..
                }
            )
        })
        .unwrap();
    assert!(closed < gone);
    assert!(net.gw.is_empty());
    // Handles are never reused.
    let again = net.connect(0);
    assert_eq!(again, SaHandle(2));
}

#[test]
fn timers_run_through_the_endpoint() {
    let mut net = Net::new(config(sample::gateway(), Vec::new()), 1);
    let h = net.connect(0);
    // The request is lost: the client retransmits it when its timer is due.
    assert!(matches!(net.clients[0].1.poll(), Some(Output::Transmit(_))));
    assert!(net.clients[0].1.poll().is_none());
    let due = net.clients[0]
        .1
        .poll_timeout()
        .expect("a retransmission timer");
    net.clients[0]
        .1
        .handle_timeout(due - Duration::from_millis(1));
    assert!(net.clients[0].1.poll().is_none());
    net.clients[0].1.handle_timeout(due);
    let Some(Output::Transmit(t)) = net.clients[0].1.poll() else {
        panic!("no retransmission");
    };
    net.now = due;
    assert_eq!(
        net.gw.handle(net.now, t.remote, t.local, &t.bytes),
        Some(SaHandle(1))
    );
    net.run(20);
    assert_eq!(established(&net.client_out[0]), vec![h]);
}

#[test]
fn an_ike_sa_rekey_keeps_routing_to_the_same_handles() {
    let mut net = Net::new(config(sample::gateway(), Vec::new()), 1);
    let h = net.connect(0);
    net.run(20);
    assert_eq!(established(&net.client_out[0]), vec![h]);
    let before = net.clients[0].1.sa(h).unwrap().spis();
    net.gw_routed.clear();
    let now = net.now;
    assert!(net.clients[0].1.sa_mut(h).unwrap().rekey_ike(now));
    net.run(20);
    let rekeyed = |out: &[Output]| {
        out.iter()
            .filter_map(|o| match o {
                Output::Event(h, Event::IkeSaRekeyed(_)) => Some(*h),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(rekeyed(&net.client_out[0]), vec![h]);
    assert_eq!(rekeyed(&net.gw_out), vec![SaHandle(1)]);
    // New SPIs, the same SA: the rekey, the old SA's Delete and its answer all went to #1.
    assert_ne!(net.clients[0].1.sa(h).unwrap().spis(), before);
    assert!(net.gw_routed.len() >= 2, "{:?}", net.gw_routed);
    assert!(net.gw_routed.iter().all(|r| *r == Some(SaHandle(1))));
    assert_eq!((net.gw.len(), net.clients[0].1.len()), (1, 1));
    // And the new SPIs route: a Delete under them reaches the gateway's SA.
    let now = net.now;
    assert!(net.clients[0].1.sa_mut(h).unwrap().delete(now));
    net.run(5);
    assert!(
        net.gw_out
            .iter()
            .any(|o| matches!(o, Output::Event(SaHandle(1), Event::Closed)))
    );
    assert!(net.gw.is_empty());
}

#[test]
fn ike_sas_created_after_set_local_addresses_get_them_too() {
    let mut net = Net::new(config(sample::gateway(), Vec::new()), 1);
    let a: Vec<IpAddr> = vec![client_addr(2).ip(), "198.18.7.2".parse().unwrap()];
    let now = net.now;
    net.clients[0].1.set_local_addresses(now, &a);
    net.gw.set_local_addresses(now, &[GW.ip()]);
    // Created after the call, as initiator and as responder.
    let h = net.connect(0);
    assert_eq!(
        net.clients[0].1.sa(h).unwrap().local_addresses(),
        Some(&a[..])
    );
    net.run(20);
    assert_eq!(
        net.gw.sa(SaHandle(1)).unwrap().local_addresses(),
        Some(&[GW.ip()][..])
    );
    // And a later change reaches the existing ones.
    net.clients[0].1.set_local_addresses(now, &a[1..]);
    assert_eq!(
        net.clients[0].1.sa(h).unwrap().local_addresses(),
        Some(&a[1..])
    );
}

#[test]
fn set_local_interfaces_reaches_every_ike_sa_with_its_addresses() {
    use crate::ike::sa::LocalInterface;
    let mut net = Net::new(config(sample::gateway(), Vec::new()), 1);
    let second: IpAddr = "198.18.7.2".parse().unwrap();
    let l = |name: &str, addr: IpAddr, priority: u8, alternate: bool| LocalInterface {
        name: name.into(),
        addr,
        port: 4500,
        priority,
        alternate,
    };
    // An alternate first and a lower-preferred one: the addresses go by (not alternate,
    // priority).
    let list = vec![
        l("lte", second, 0, true),
        l("wan", client_addr(2).ip(), 5, false),
    ];
    let now = net.now;
    net.clients[0].1.set_local_interfaces(now, &list);
    let h = net.connect(0);
    let sa = net.clients[0].1.sa(h).unwrap();
    assert_eq!(
        sa.local_addresses(),
        Some(&[client_addr(2).ip(), second][..])
    );
    // Both announced in IKE_AUTH, IDs in the order given.
    let ours: Vec<(u16, &str)> = sa
        .mif_local_interfaces()
        .iter()
        .map(|i| (i.id, i.name.as_str()))
        .collect();
    assert_eq!(ours, [(1, "lte"), (2, "wan")]);
    net.run(20);
    let gw = net.gw.sa(SaHandle(1)).unwrap();
    assert!(gw.mif_in_use());
    assert_eq!(gw.mif_peer_interfaces().0.len(), 2);
    // A later change reaches the existing IKE SA: "wan" keeps its ID.
    let now = net.now;
    net.clients[0].1.set_local_interfaces(now, &list[1..]);
    let sa = net.clients[0].1.sa(h).unwrap();
    assert_eq!(sa.mif_local_interfaces()[0].id, 2);
    assert_eq!(sa.local_addresses(), Some(&[client_addr(2).ip()][..]));
}
