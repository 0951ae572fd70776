//! Harness tests of several child SAs per IKE SA (the first in IKE_AUTH, each further one
//! created with CREATE_CHILD_SA) and of the configuration payload with IPv4 and IPv6
//! virtual IPs and DNS servers.
//!
//! After a clean handshake four datagrams have entered the pipe, so the CREATE_CHILD_SA
//! request for the second child is datagram 4 and its response 5.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use super::{Faults, Harness, LIMIT, client, gateway, v4};
use crate::ike::config::{
    AddressPool, ChildConfig, ChildLifetimes, EspProposal, IkeConfig, ts_prefix,
};
use crate::ike::proposal::esp_sa_payload_pfs;
use crate::ike::sa::{ChildSa, Event, FailReason};
use crate::wire::{
    CfgAttributeType, CfgType, DhGroup, ExchangeType, NotifyType, Payload, TrafficSelector,
    TsPayload,
};

fn net(s: &str, len: u8) -> TrafficSelector {
    ts_prefix(s.parse().unwrap(), len)
}

/// A second child on both sides: the client sends everything to 10.2.0.0/16, the gateway
/// protects that network with a child of the same name.
fn with_second_child(pfs: bool) -> (IkeConfig, IkeConfig) {
    let mut c = client();
    let mut g = gateway();
    let mut proposal = EspProposal::all();
    if pfs {
        proposal.groups = vec![DhGroup::Curve25519];
    }
    let mut cb = c.child.clone();
    cb.name = "b".into();
    cb.remote_ts = vec![net("10.2.0.0", 16)];
    cb.proposals = vec![proposal.clone()];
    c.more_children.push(cb);
    let mut gb = g.child.clone();
    gb.name = "b".into();
    gb.local_ts = vec![net("10.2.0.0", 16)];
    gb.proposals = vec![proposal];
    g.more_children.push(gb);
    (c, g)
}

/// The child SAs each side established (not rekeyed), by name.
fn established(events: &[Event]) -> BTreeMap<String, &ChildSa> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaEstablished(c) => Some((c.name.clone(), c)),
            _ => None,
        })
        .collect()
}

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

impl Harness {
    /// Both children up on both sides, each pair with SPIs and keys crossed and selectors
    /// mirrored, no failures; returns the initiator's children by name.
    fn two_children(&self) -> BTreeMap<String, &ChildSa> {
        assert!(self.init.is_established() && self.resp.is_established());
        let i = established(&self.init_events);
        let r = established(&self.resp_events);
        assert_eq!(
            i.keys().collect::<Vec<_>>(),
            vec!["b", "net"],
            "{:?}",
            self.init_events
        );
        assert_eq!(
            r.keys().collect::<Vec<_>>(),
            vec!["b", "net"],
            "{:?}",
            self.resp_events
        );
        for (name, ic) in &i {
            let rc = r[name];
            assert_eq!((ic.spi_in, ic.spi_out), (rc.spi_out, rc.spi_in), "{name}");
            assert_eq!(&ic.keymat_in[..], &rc.keymat_out[..], "{name}");
            assert_eq!(&ic.keymat_out[..], &rc.keymat_in[..], "{name}");
            assert_eq!((&ic.local_ts, &ic.remote_ts), (&rc.remote_ts, &rc.local_ts));
        }
        // Different keys for the two children.
        assert_ne!(&i["net"].keymat_in[..], &i["b"].keymat_in[..]);
        assert_eq!(self.init.child_spis().len(), 2);
        assert_eq!(self.resp.child_spis().len(), 2);
        for ev in [&self.init_events, &self.resp_events] {
            assert_eq!(
                count(ev, |e| matches!(
                    e,
                    Event::Failed(_) | Event::Closed | Event::ChildSaFailed { .. }
                )),
                0,
                "{ev:?}"
            );
        }
        i
    }

    /// The payloads of datagram `n`, a request from the initiator, as the responder reads
    /// them.
    fn request_payloads(&self, n: usize) -> Vec<Payload> {
        let (to_resp, bytes) = &self.log[n];
        assert!(*to_resp, "datagram {n} goes to the responder");
        self.resp
            .open_test_message(bytes)
            .expect("a sealed request")
    }
}

fn second_child(pfs: bool) {
    let (c, g) = with_second_child(pfs);
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    let i = h.two_children();
    // IKE_SA_INIT, IKE_AUTH, then one CREATE_CHILD_SA exchange.
    assert_eq!(h.sent, 6);
    let vip = ts_prefix(v4("10.99.0.1"), 32);
    assert_eq!(i["b"].local_ts, vec![vip.clone()]);
    assert_eq!(i["b"].remote_ts, vec![net("10.2.0.0", 16)]);
    assert_eq!(i["net"].remote_ts, vec![net("10.1.0.0", 16)]);
    // A new child, not a rekey: no REKEY_SA; our side is the virtual IP; a KE with PFS.
    let req = h.request_payloads(4);
    assert!(
        !req.iter()
            .any(|p| matches!(p, Payload::Notify(n) if n.notify_type == NotifyType::RekeySa))
    );
    assert!(req.iter().any(|p| matches!(p, Payload::Nonce(_))));
    assert!(
        req.iter()
            .any(|p| matches!(p, Payload::TsI(t) if t.selectors == vec![vip.clone()]))
    );
    assert_eq!(
        req.iter()
            .any(|p| matches!(p, Payload::Ke(k) if k.group == DhGroup::Curve25519)),
        pfs
    );
    // Each child has its own inbound SPI.
    assert_ne!(i["net"].spi_in, i["b"].spi_in);
    assert_eq!(h.init.stats(), Default::default());
    assert_eq!(h.resp.stats(), Default::default());
}

#[test]
fn second_child_by_create_child_sa() {
    second_child(false);
}

#[test]
fn second_child_by_create_child_sa_with_pfs() {
    second_child(true);
}

#[test]
fn responder_picks_the_child_whose_selectors_fit() {
    // The gateway lists the children the other way round: IKE_AUTH's request for
    // 10.1.0.0/16 must skip "b", the CREATE_CHILD_SA for 10.2.0.0/16 must skip "net".
    let (mut c, mut g) = with_second_child(false);
    c.child.remote_ts = vec![net("10.1.0.0", 16)];
    std::mem::swap(&mut g.child, &mut g.more_children[0]);
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    let r = established(&h.resp_events);
    assert_eq!(r["net"].local_ts, vec![net("10.1.0.0", 16)]);
    assert_eq!(r["b"].local_ts, vec![net("10.2.0.0", 16)]);
    h.two_children();
}

#[test]
fn unacceptable_selectors_leave_the_ike_sa_and_first_child() {
    for (remote, proposal, want) in [
        (
            net("10.3.0.0", 16),
            EspProposal::all(),
            NotifyType::TsUnacceptable,
        ),
        (
            net("10.2.0.0", 16),
            EspProposal {
                ciphers: vec![mifsec_dataplane::aead::Cipher::Aes128Gcm],
                ..EspProposal::all()
            },
            NotifyType::NoProposalChosen,
        ),
    ] {
        let (mut c, mut g) = with_second_child(false);
        c.more_children[0].remote_ts = vec![remote];
        c.more_children[0].proposals = vec![proposal];
        g.more_children[0].proposals = vec![EspProposal {
            ciphers: vec![mifsec_dataplane::aead::Cipher::ChaCha20Poly1305],
            ..EspProposal::all()
        }];
        let mut h = Harness::new(c, g, Faults::default());
        h.run(LIMIT);
        assert!(h.init.is_established() && h.resp.is_established());
        let failed: Vec<_> = h
            .init_events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaFailed { name, reason } => Some((name.as_str(), *reason)),
                _ => None,
            })
            .collect();
        assert_eq!(failed, vec![("b", want)]);
        // Only the first child, on both sides; nothing failed, nothing was closed.
        assert_eq!(established(&h.init_events).len(), 1);
        assert_eq!(established(&h.resp_events).len(), 1);
        assert_eq!(h.init.child_spis().len(), 1);
        assert_eq!(h.resp.child_spis().len(), 1);
        for ev in [&h.init_events, &h.resp_events] {
            assert_eq!(
                count(ev, |e| matches!(e, Event::Failed(_) | Event::Closed)),
                0
            );
        }
        // The IKE SA still works: a rekey of the first child goes through.
        h.init.rekey_children(h.now);
        h.run_for(LIMIT);
        assert_eq!(
            count(&h.init_events, |e| matches!(
                e,
                Event::ChildSaRekeyed { .. }
            )),
            1
        );
        assert!(h.init.is_established() && h.resp.is_established());
    }
}

#[test]
fn create_child_sa_request_or_response_lost() {
    for n in [4, 5] {
        let (c, g) = with_second_child(true);
        let faults = Faults {
            drop: [n].into(),
            ..Faults::default()
        };
        let mut h = Harness::new(c, g, faults);
        h.run(LIMIT);
        h.two_children();
        assert_eq!(h.init.stats().retransmitted, 1, "drop {n}");
        // A lost response: the retransmitted request is answered from the cache, so the
        // responder created the child once.
        assert_eq!(
            h.resp.stats().answered_from_cache,
            u64::from(n == 5),
            "drop {n}"
        );
    }
}

#[test]
fn rekey_of_second_child_leaves_first_untouched() {
    let (mut c, g) = with_second_child(true);
    // Only "b" has a lifetime.
    c.more_children[0].lifetimes = Some(ChildLifetimes {
        rekey: Some(Duration::from_secs(20)),
        life: Some(Duration::from_secs(30)),
        rand: Duration::ZERO,
        ..ChildLifetimes::default()
    });
    let mut h = Harness::new(c, g, Faults::default());
    h.run(Duration::from_secs(5));
    let (net_i, b_old) = {
        let i = h.two_children();
        ((i["net"].spi_in, i["net"].spi_out), i["b"].spi_in)
    };
    // One rekey of "b" (at 20 s), none of "net".
    h.run_for(Duration::from_secs(20));
    for ev in [&h.init_events, &h.resp_events] {
        let rekeyed: Vec<&str> = ev
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaRekeyed { new, .. } => Some(new.name.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(rekeyed, vec!["b"]);
        assert_eq!(count(ev, |e| matches!(e, Event::Failed(_))), 0);
    }
    // "net" is still there with its SPIs; "b" has a new pair, its old one deleted.
    let spis = h.init.child_spis();
    assert_eq!(spis.len(), 2, "{spis:?}");
    assert!(spis.contains(&net_i));
    assert!(!spis.iter().any(|&(i, _)| i == b_old));
    assert!(h.resp.child_spis().contains(&(net_i.1, net_i.0)));
    let deleted: Vec<u32> = h
        .init_events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaDeleted { spis_out } => Some(spis_out.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(!deleted.contains(&net_i.1));
}

#[test]
fn rekey_children_rekeys_every_child() {
    let (c, g) = with_second_child(false);
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    h.two_children();
    assert!(h.init.rekey_children(h.now));
    h.run_for(LIMIT);
    let mut names: Vec<&str> = h
        .init_events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaRekeyed { new, .. } => Some(new.name.as_str()),
            _ => None,
        })
        .collect();
    names.sort_unstable();
    assert_eq!(names, vec!["b", "net"]);
    assert_eq!(h.init.child_spis().len(), 2);
    assert_eq!(h.resp.child_spis().len(), 2);
}

/// A dual-stack client and gateway: pools of both families with DNS servers.
fn dual_stack() -> (IkeConfig, IkeConfig) {
    let mut c = client();
    c.request_vip6 = true;
    c.child.local_ts = vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()];
    c.child.remote_ts = vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()];
    let mut g = gateway();
    g.pools = vec![
        AddressPool::with_dns(v4("10.99.0.1"), 16, vec![v4("10.1.0.53")]),
        AddressPool::with_dns(
            "fd99::1".parse().unwrap(),
            16,
            vec!["fd01::53".parse().unwrap()],
        ),
    ];
    g.child = ChildConfig {
        local_ts: vec![net("10.1.0.0", 16), net("fd01::", 64)],
        remote_ts: vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()],
        ..g.child
    };
    (c, g)
}

fn ips(s: &[&str]) -> Vec<IpAddr> {
    s.iter().map(|a| a.parse().unwrap()).collect()
}

#[test]
fn ipv4_and_ipv6_virtual_ips_and_dns() {
    let (c, g) = dual_stack();
    let pools = g.pools.clone();
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    let (i, r) = h.assert_established();
    let vips = ips(&["10.99.0.1", "fd99::1"]);
    let dns = ips(&["10.1.0.53", "fd01::53"]);
    for ev in [&h.init_events, &h.resp_events] {
        let info = Harness::info(ev).unwrap();
        assert_eq!(info.vips, vips);
        assert_eq!(info.dns, dns);
    }
    let hosts = vec![net("10.99.0.1", 32), net("fd99::1", 128)];
    assert_eq!(i.local_ts, hosts);
    assert_eq!(r.remote_ts, hosts);
    assert_eq!(i.remote_ts, vec![net("10.1.0.0", 16), net("fd01::", 64)]);
    // The request asked for both families and DNS; the IPv6 address went as 17 octets.
    let req = h.request_payloads(2);
    let cp = req
        .iter()
        .find_map(|p| match p {
            Payload::Cp(c) => Some(c),
            _ => None,
        })
        .unwrap();
    assert_eq!(cp.cfg_type, CfgType::Request);
    let asked: Vec<_> = cp.attributes.iter().map(|a| a.attr_type).collect();
    for t in [
        CfgAttributeType::InternalIp4Address,
        CfgAttributeType::InternalIp4Dns,
        CfgAttributeType::InternalIp6Address,
        CfgAttributeType::InternalIp6Dns,
    ] {
        assert!(asked.contains(&t), "{asked:?}");
    }
    let resp = h
        .init
        .open_test_message(&h.log[3].1)
        .expect("the IKE_AUTH response");
    let reply = resp
        .iter()
        .find_map(|p| match p {
            Payload::Cp(c) if c.cfg_type == CfgType::Reply => Some(c),
            _ => None,
        })
        .unwrap();
    let v6 = reply
        .attributes
        .iter()
        .find(|a| a.attr_type == CfgAttributeType::InternalIp6Address)
        .unwrap();
    assert_eq!(v6.value.len(), 17);
    assert_eq!(v6.as_ipv6_prefix(), Some(("fd99::1".parse().unwrap(), 128)));
    assert_eq!((pools[0].leased(), pools[1].leased()), (1, 1));
    // The leases go back when the IKE SA goes.
    assert!(h.init.delete(h.now));
    h.run_for(LIMIT);
    assert!(h.resp.is_dead());
    assert_eq!((pools[0].leased(), pools[1].leased()), (0, 0));
}

#[test]
fn exhausted_pools() {
    // The IPv6 pool is empty: only the IPv4 address is assigned, and that is enough.
    let (c, mut g) = dual_stack();
    g.pools[1] = AddressPool::with_dns("fd99::1".parse().unwrap(), 0, Vec::new());
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    h.assert_established();
    assert_eq!(
        Harness::info(&h.init_events).unwrap().vips,
        ips(&["10.99.0.1"])
    );

    // Both pools empty: INTERNAL_ADDRESS_FAILURE (RFC 7296 section 3.15.4): no child, no
    // address, but the IKE SA is created.
    let (c, mut g) = dual_stack();
    g.pools = vec![
        AddressPool::with_dns(v4("10.99.0.1"), 1, Vec::new()),
        AddressPool::with_dns("fd99::1".parse().unwrap(), 0, Vec::new()),
    ];
    let pool = g.pools[0].clone();
    assert!(pool.lease().is_some());
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    assert!(h.resp_events.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed {
            reason: NotifyType::InternalAddressFailure,
            ..
        }
    )));
    assert!(h.init_events.iter().any(|e| matches!(
        e,
        Event::ChildSaFailed {
            reason: NotifyType::InternalAddressFailure,
            ..
        }
    )));
    assert_eq!(Harness::failure(&h.init_events), None);
    assert!(h.init.is_established() && h.resp.is_established());
    assert!(Harness::info(&h.init_events).unwrap().vips.is_empty());
    assert!(h.init.child_spis().is_empty());
    assert_eq!(pool.leased(), 1, "nothing leased beyond the one taken");

    // A pool answer without any requested address (the gateway has no pools): a client
    // that needs a virtual IP gives up on the IKE SA.
    let (c, mut g) = dual_stack();
    g.pools.clear();
    let mut h = Harness::new(c, g, Faults::default());
    h.run(LIMIT);
    assert_eq!(
        Harness::failure(&h.init_events),
        Some(FailReason::NoVirtualIp)
    );
    assert!(h.init.is_dead());
}

#[test]
fn new_child_requests_are_capped() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    h.run(LIMIT);
    h.assert_established();
    let request = |n: u32| {
        vec![
            Payload::Sa(esp_sa_payload_pfs(&[EspProposal::all()], 0x1000 + n, false)),
            Payload::Nonce(vec![7; 32]),
            Payload::TsI(TsPayload {
                selectors: vec![TrafficSelector::ipv4_any()],
            }),
            Payload::TsR(TsPayload {
                selectors: vec![net("10.1.0.0", 16)],
            }),
        ]
    };
    let mut answers = Vec::new();
    for n in 0..70 {
        let req = h
            .init
            .seal_test_request(ExchangeType::CreateChildSa, &request(n))
            .unwrap();
        let (local, remote) = h.init.addresses();
        h.resp.handle_datagram(h.now, remote, local, &req);
        let resp = h.resp.poll_transmit().expect("an answer");
        let inner = h.init.open_test_message(&resp.bytes).expect("sealed");
        answers.push(inner.iter().any(|p| matches!(p, Payload::Sa(_))));
    }
    // The first child plus 63 new ones; then NO_ADDITIONAL_SAS, the SA intact.
    assert_eq!(answers.iter().filter(|&&ok| ok).count(), 63);
    assert!(answers[..63].iter().all(|&ok| ok));
    assert_eq!(h.resp.child_spis().len(), 64);
    assert!(h.resp.is_established());
    while let Some(e) = h.resp.poll_event() {
        assert!(!matches!(e, Event::Failed(_) | Event::Closed));
    }
}
