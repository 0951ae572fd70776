//! Harness tests of what an authenticated peer can make us do: how many child SAs it can
//! create or rekey into existence without deleting any, and how many virtual IPs and DNS
//! servers it can push.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Faults, Harness, LIMIT, client, gateway};
use crate::ike::config::EspProposal;
use crate::ike::proposal::esp_sa_payload_pfs;
use crate::ike::sa::{Event, MAX_CHILDREN, MAX_CP_ATTRIBUTES, MAX_DNS, MAX_TRACKED_CHILDREN};
use crate::wire::{
    CfgAttribute, CfgAttributeType, DeletePayload, ExchangeType, NotifyPayload, NotifyType,
    Payload, ProtocolId, TrafficSelector, TsPayload,
};

/// What the responder answered a crafted CREATE_CHILD_SA request with.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// A child SA (an SA payload).
    Child,
    /// This error notify.
    Refused(NotifyType),
}

impl Harness {
    /// Sends `payloads` as the initiator's next request in `exchange` straight to the
    /// responder and returns the responder's answer, opened.
    fn ask_responder(&mut self, exchange: ExchangeType, payloads: &[Payload]) -> Vec<Payload> {
        let req = self.init.seal_test_request(exchange, payloads).unwrap();
        let (local, remote) = self.init.addresses();
        self.resp.handle_datagram(self.now, remote, local, &req);
        let resp = self.resp.poll_transmit().expect("an answer");
        assert!(self.resp.poll_transmit().is_none());
        self.init
            .open_test_message(&resp.bytes)
            .expect("a sealed answer")
    }

    /// A CREATE_CHILD_SA request for a child whose inbound SPI (at the initiator) is
    /// `spi`, rekeying the responder's child with outbound SPI `rekey` if given.
    fn create_child(&mut self, spi: u32, rekey: Option<u32>) -> Answer {
        let mut payloads = Vec::new();
        if let Some(old) = rekey {
            payloads.push(Payload::Notify(NotifyPayload {
                protocol: ProtocolId::Esp,
                spi: old.to_be_bytes().to_vec(),
                notify_type: NotifyType::RekeySa,
                data: Vec::new(),
            }));
        }
        payloads.extend([
            Payload::Sa(esp_sa_payload_pfs(&[EspProposal::all()], spi, false)),
            Payload::Nonce(spi.to_be_bytes().repeat(8)),
            Payload::TsI(TsPayload {
                selectors: vec![TrafficSelector::ipv4_any()],
            }),
            Payload::TsR(TsPayload {
                selectors: vec![TrafficSelector::ipv4_any()],
            }),
        ]);
        let inner = self.ask_responder(ExchangeType::CreateChildSa, &payloads);
        if inner.iter().any(|p| matches!(p, Payload::Sa(_))) {
            return Answer::Child;
        }
        match inner.iter().find_map(|p| match p {
            Payload::Notify(n) => Some(n.notify_type),
            _ => None,
        }) {
            Some(t) => Answer::Refused(t),
            None => panic!("neither a child nor an error: {inner:?}"),
        }
    }

    fn resp_events_of(&mut self, f: impl Fn(&Event) -> bool) -> usize {
        self.collect();
        self.resp_events.iter().filter(|e| f(e)).count()
    }
}

fn established() -> Harness {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    h.run(LIMIT);
    h.assert_established();
    h
}

/// The first child's outbound SPI at the responder (its inbound SPI at the initiator).
fn first_child(h: &Harness) -> u32 {
    let spis = h.resp.child_spis();
    assert_eq!(spis.len(), 1, "{spis:?}");
    spis[0].1
}

#[test]
fn a_peer_that_rekeys_and_never_deletes_is_capped() {
    let mut h = established();
    let mut newest = first_child(&h);
    let mut answers = Vec::new();
    // Each request rekeys the child the previous one created; none deletes anything.
    for i in 0..3 * MAX_TRACKED_CHILDREN as u32 {
        let spi = 0x4000_0000 + i;
        let a = h.create_child(spi, Some(newest));
        if a == Answer::Child {
            newest = spi;
        }
        answers.push(a);
    }
    let accepted = MAX_TRACKED_CHILDREN - 1;
    assert!(
        answers[..accepted].iter().all(|a| *a == Answer::Child),
        "{answers:?}"
    );
    assert!(
        answers[accepted..]
            .iter()
            .all(|a| *a == Answer::Refused(NotifyType::TemporaryFailure)),
        "{answers:?}"
    );
    assert_eq!(h.resp.child_spis().len(), MAX_TRACKED_CHILDREN);
    assert_eq!(
        h.resp_events_of(|e| matches!(e, Event::ChildSaRekeyed { .. })),
        accepted
    );
    assert!(h.resp.is_established());

    // A peer that deletes what it replaced gets room again: the rekey goes through.
    let replaced: Vec<u32> = h
        .resp
        .child_spis()
        .iter()
        .map(|&(_, out)| out)
        .filter(|&out| out != newest)
        .collect();
    h.ask_responder(
        ExchangeType::Informational,
        &[Payload::Delete(DeletePayload::esp(&replaced))],
    );
    assert_eq!(h.resp.child_spis().len(), 1);
    assert_eq!(h.create_child(0x5000_0000, Some(newest)), Answer::Child);
    assert_eq!(h.resp.child_spis().len(), 2);
}

#[test]
fn new_children_stop_at_the_cap_and_each_can_still_be_rekeyed() {
    let mut h = established();
    let mut answers = Vec::new();
    for i in 0..2 * MAX_CHILDREN as u32 {
        answers.push(h.create_child(0x4000_0000 + i, None));
    }
    // The first child came with IKE_AUTH.
    let created = MAX_CHILDREN - 1;
    assert!(
        answers[..created].iter().all(|a| *a == Answer::Child),
        "{answers:?}"
    );
    assert!(
        answers[created..]
            .iter()
            .all(|a| *a == Answer::Refused(NotifyType::NoAdditionalSas)),
        "{answers:?}"
    );
    assert_eq!(h.resp.child_spis().len(), MAX_CHILDREN);
    // A full house still rekeys every child once (the replaced ones await their Delete),
    // and no more than that.
    let outs: Vec<u32> = h.resp.child_spis().iter().map(|&(_, o)| o).collect();
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(
            h.create_child(0x6000_0000 + i as u32, Some(*out)),
            Answer::Child,
            "rekey {i}"
        );
    }
    assert_eq!(h.resp.child_spis().len(), MAX_TRACKED_CHILDREN);
    assert_eq!(
        h.create_child(0x7000_0000, Some(0x6000_0000)),
        Answer::Refused(NotifyType::TemporaryFailure)
    );
    assert_eq!(
        h.create_child(0x7000_0001, None),
        Answer::Refused(NotifyType::NoAdditionalSas)
    );
}

#[test]
fn a_peer_pushing_many_virtual_ips_and_dns_servers_is_capped() {
    let mut h = Harness::new(client(), gateway(), Faults::default());
    // After the gateway's own lease: a thousand more addresses and DNS servers of both
    // families.
    let mut extra = Vec::new();
    for i in 0..1000u32 {
        let b = (i + 2).to_be_bytes();
        let v4 = Ipv4Addr::new(10, 200, b[2], b[3]);
        extra.push(CfgAttribute::ipv4(CfgAttributeType::InternalIp4Address, v4));
        extra.push(CfgAttribute::ipv4(CfgAttributeType::InternalIp4Dns, v4));
        let v6 = Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(i));
        extra.push(CfgAttribute::ipv6_prefix(
            CfgAttributeType::InternalIp6Address,
            v6,
            128,
        ));
    }
    h.resp.push_test_cp_attributes(extra);
    h.run(LIMIT);
    h.assert_established();
    let info = Harness::info(&h.init_events).unwrap();
    // One address (the lease; the client asked for IPv4 only), and a bounded DNS list
    // from the first attributes.
    assert_eq!(info.vips, vec![IpAddr::V4(Ipv4Addr::new(10, 99, 0, 1))]);
    assert!(
        !info.dns.is_empty() && info.dns.len() <= MAX_DNS,
        "{:?}",
        info.dns
    );
    assert!(info.dns.len() <= MAX_CP_ATTRIBUTES);
}
