//! Harness tests of the exchanges after IKE_AUTH: child and IKE SA rekeys (either side,
//! simultaneous, with loss, with PFS), Delete, liveness checks and lifetimes.
//!
//! After a clean handshake four datagrams have entered the pipe, so the first request of
//! a rekey is datagram 4, its response 5, the Delete of the old SA 6 and its response 7.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Faults, Harness, LIMIT, client, gateway};
use crate::ike::config::{DpdConfig, IkeConfig, Lifetimes};
use crate::ike::sa::{Event, FailReason};
use crate::wire::DhGroup;

/// A child pair as installed by one side: inbound SPI -> (outbound SPI, key in, key out).
type Installed = BTreeMap<u32, (u32, Vec<u8>, Vec<u8>)>;

/// What a caller that installs and removes as told would have installed.
fn installed(events: &[Event]) -> Installed {
    let mut m = Installed::new();
    for e in events {
        match e {
            Event::ChildSaEstablished(c) | Event::ChildSaRekeyed { new: c, .. } => {
                assert!(
                    m.insert(
                        c.spi_in,
                        (c.spi_out, c.keymat_in.to_vec(), c.keymat_out.to_vec())
                    )
                    .is_none(),
                    "SPI installed twice"
                );
            }
            Event::ChildSaDeleted { spis_out } => m.retain(|_, v| !spis_out.contains(&v.0)),
            _ => {}
        }
    }
    m
}

fn count(events: &[Event], f: impl Fn(&Event) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

impl Harness {
    fn established(c: IkeConfig, g: IkeConfig, faults: Faults) -> Harness {
        let mut h = Harness::new(c, g, faults);
        h.run(LIMIT);
        h.assert_established();
        h
    }

    /// Exactly one child pair on each side, SPIs and keys crossed, the IkeSas agreeing
    /// with what their events installed; returns the initiator's (spi_in, spi_out, key_in).
    fn one_pair(&self) -> (u32, u32, Vec<u8>) {
        let i = installed(&self.init_events);
        let r = installed(&self.resp_events);
        assert_eq!(i.len(), 1, "initiator: {:?}", self.init_events);
        assert_eq!(r.len(), 1, "responder: {:?}", self.resp_events);
        let (&i_in, (i_out, i_kin, i_kout)) = i.iter().next().unwrap();
        let (&r_in, (r_out, r_kin, r_kout)) = r.iter().next().unwrap();
        assert_eq!((i_in, *i_out), (*r_out, r_in));
        assert_eq!((i_kin, i_kout), (r_kout, r_kin));
        assert_eq!(self.init.child_spis(), vec![(i_in, *i_out)]);
        assert_eq!(self.resp.child_spis(), vec![(r_in, *r_out)]);
        assert!(self.init.is_established() && self.resp.is_established());
        assert_eq!(self.init.spis(), self.resp.spis());
        (i_in, *i_out, i_kin.clone())
    }

    fn no_failure(&self) {
        for ev in [&self.init_events, &self.resp_events] {
            assert_eq!(
                count(ev, |e| matches!(e, Event::Failed(_) | Event::Closed)),
                0,
                "{ev:?}"
            );
        }
    }
}

fn rekey_child(by_initiator: bool, faults: Faults) {
    let mut h = Harness::established(client(), gateway(), faults);
    let before = h.one_pair();
    if by_initiator {
        assert!(h.init.rekey_children(h.now));
    } else {
        assert!(h.resp.rekey_children(h.now));
    }
    h.run_for(LIMIT);
    h.no_failure();
    let after = h.one_pair();
    assert_ne!(after.0, before.0);
    assert_ne!(after.1, before.1);
    assert_ne!(after.2, before.2);
    for ev in [&h.init_events, &h.resp_events] {
        assert_eq!(
            count(ev, |e| matches!(e, Event::ChildSaRekeyed { old_spi_in, .. }
                if *old_spi_in == before.0 || *old_spi_in == before.1)),
            1
        );
        assert_eq!(count(ev, |e| matches!(e, Event::ChildSaDeleted { .. })), 1);
    }
    // The rekey's initiator may send on the new pair at once, the responder not yet.
    let (ours, theirs) = if by_initiator {
        (&h.init_events, &h.resp_events)
    } else {
        (&h.resp_events, &h.init_events)
    };
    assert!(ours.iter().any(|e| matches!(
        e,
        Event::ChildSaRekeyed {
            initiated: true,
            ..
        }
    )));
    assert!(theirs.iter().any(|e| matches!(
        e,
        Event::ChildSaRekeyed {
            initiated: false,
            ..
        }
    )));
    // The old pair went only after the new one was installed (make-before-break).
    let pos = |ev: &[Event], f: &dyn Fn(&Event) -> bool| ev.iter().position(f).unwrap();
    for ev in [&h.init_events, &h.resp_events] {
        let rekeyed = pos(ev, &|e| matches!(e, Event::ChildSaRekeyed { .. }));
        let deleted = pos(ev, &|e| matches!(e, Event::ChildSaDeleted { .. }));
        assert!(rekeyed < deleted);
    }
}

#[test]
fn child_rekey_by_initiator() {
    rekey_child(true, Faults::default());
}

#[test]
fn child_rekey_by_responder() {
    rekey_child(false, Faults::default());
}

#[test]
fn child_rekey_survives_loss_of_any_message() {
    for k in 4..8 {
        for by_initiator in [true, false] {
            let faults = Faults {
                drop: [k].into(),
                ..Faults::default()
            };
            rekey_child(by_initiator, faults);
        }
    }
}

#[test]
fn child_rekey_with_pfs_in_every_group() {
    for g in [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Ecp384] {
        let mut c = client();
        let mut gw = gateway();
        c.child.proposals[0].groups = vec![g];
        gw.child.proposals[0].groups = vec![DhGroup::Ecp384, DhGroup::Ecp256, DhGroup::Curve25519];
        let mut h = Harness::established(c, gw, Faults::default());
        let before = h.one_pair();
        h.init.rekey_children(h.now);
        h.run_for(LIMIT);
        h.no_failure();
        let after = h.one_pair();
        assert_ne!(after.2, before.2);
        // The request carried a KE payload: longer than one without.
        let mut plain = Harness::established(client(), gateway(), Faults::default());
        plain.init.rekey_children(plain.now);
        plain.run_for(LIMIT);
        assert!(h.log[4].1.len() > plain.log[4].1.len() + 30, "{g:?}");
    }
}

#[test]
fn child_rekey_pfs_group_mismatch_retries_with_invalid_ke() {
    let mut c = client();
    let mut gw = gateway();
    c.child.proposals[0].groups = vec![DhGroup::Curve25519, DhGroup::Ecp256];
    gw.child.proposals[0].groups = vec![DhGroup::Ecp256];
    let mut h = Harness::established(c, gw, Faults::default());
    let before = h.one_pair();
    h.init.rekey_children(h.now);
    h.run_for(LIMIT);
    h.no_failure();
    let after = h.one_pair();
    assert_ne!(after.0, before.0);
    // INVALID_KE_PAYLOAD round trip, then the rekey and the Delete.
    assert_eq!(h.sent, 4 + 6);
}

fn rekey_ike(by_initiator: bool, faults: Faults) {
    let mut h = Harness::established(client(), gateway(), faults);
    let child = h.one_pair();
    let spis = h.init.spis().unwrap();
    if by_initiator {
        assert!(h.init.rekey_ike(h.now));
    } else {
        assert!(h.resp.rekey_ike(h.now));
    }
    h.run_for(LIMIT);
    h.no_failure();
    // The rekey and the Delete of the old IKE SA, each answered.
    assert!(h.sent >= 8, "{}", h.sent);
    let new_spis = h.init.spis().unwrap();
    assert_ne!(new_spis.0, spis.0);
    assert_ne!(new_spis.1, spis.1);
    // Children survive with their SPIs and keys.
    assert_eq!(h.one_pair(), child);
    for ev in [&h.init_events, &h.resp_events] {
        assert_eq!(
            count(ev, |e| matches!(e, Event::IkeSaRekeyed(i)
            if (i.spi_i, i.spi_r) == new_spis)),
            1
        );
    }
    // The old IKE SA is gone: its SPIs are no longer accepted once deleted... but old
    // retransmissions are still answered. And a child rekey works on the new IKE SA.
    h.init.rekey_children(h.now);
    h.run_for(LIMIT);
    h.no_failure();
    let after = h.one_pair();
    assert_ne!(after.0, child.0);
    assert_eq!(h.init.spis(), Some(new_spis));
    // Rekeying the IKE SA again works too.
    h.resp.rekey_ike(h.now);
    h.run_for(LIMIT);
    h.no_failure();
    assert_ne!(h.init.spis(), Some(new_spis));
    assert_eq!(h.one_pair(), after);
}

#[test]
fn ike_rekey_by_initiator() {
    rekey_ike(true, Faults::default());
}

#[test]
fn ike_rekey_by_responder() {
    rekey_ike(false, Faults::default());
}

#[test]
fn ike_rekey_survives_loss_of_any_message() {
    for k in 4..8 {
        for by_initiator in [true, false] {
            let faults = Faults {
                drop: [k].into(),
                ..Faults::default()
            };
            rekey_ike(by_initiator, faults);
        }
    }
}

#[test]
fn simultaneous_child_rekeys_end_with_one_pair() {
    // Which exchange survives depends on the nonces: over some runs both must win.
    let (mut ours, mut theirs) = (0, 0);
    for _ in 0..24 {
        let mut h = Harness::established(client(), gateway(), Faults::default());
        let before = h.one_pair();
        h.init.rekey_children(h.now);
        h.resp.rekey_children(h.now);
        h.run_for(LIMIT);
        h.no_failure();
        let after = h.one_pair();
        assert_ne!(after.0, before.0);
        // Each side installed two new pairs; the requests crossed, so each side's first
        // ChildSaRekeyed answered the peer's request and the second was its own.
        let news: Vec<u32> = h
            .init_events
            .iter()
            .filter_map(|e| match e {
                Event::ChildSaRekeyed { new, .. } => Some(new.spi_in),
                _ => None,
            })
            .collect();
        assert_eq!(news.len(), 2);
        // The nonce rule: the survivor's exchange had the higher lowest nonce.
        let log = h.init.rekey_log();
        assert_eq!(log.len(), 2);
        let (win, lose) = if log[0].1 == after.0 {
            (&log[0], &log[1])
        } else {
            (&log[1], &log[0])
        };
        assert_eq!(win.1, after.0);
        assert!(win.0 > lose.0, "the SA with the lowest nonce survived");
        if after.0 == news[1] {
            ours += 1;
        } else {
            assert_eq!(after.0, news[0]);
            theirs += 1;
        }
    }
    assert!(ours > 0 && theirs > 0, "{ours} {theirs}");
}

#[test]
fn simultaneous_ike_rekeys_end_with_one_ike_sa() {
    let (mut ours, mut theirs) = (0, 0);
    for _ in 0..24 {
        let mut h = Harness::established(client(), gateway(), Faults::default());
        let child = h.one_pair();
        let spis = h.init.spis().unwrap();
        h.init.rekey_ike(h.now);
        h.resp.rekey_ike(h.now);
        h.run_for(LIMIT);
        h.no_failure();
        let new = h.init.spis().unwrap();
        assert_ne!(new, spis);
        assert_eq!(h.one_pair(), child);
        // The survivor was initiated by the client when it is the IKE initiator now.
        let info = h
            .init_events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::IkeSaRekeyed(i) => Some(i.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!((info.spi_i, info.spi_r), new);
        if info.initiator {
            ours += 1;
        } else {
            theirs += 1;
        }
        // The survivor works.
        h.resp.rekey_children(h.now);
        h.run_for(LIMIT);
        h.no_failure();
        assert_ne!(h.one_pair().0, child.0);
    }
    assert!(ours > 0 && theirs > 0, "{ours} {theirs}");
}

#[test]
fn dpd_peer_gone_fails_after_give_up() {
    let mut c = client();
    c.dpd = DpdConfig {
        delay: Some(Duration::from_secs(10)),
        ..DpdConfig::default()
    };
    let mut h = Harness::established(c, gateway(), Faults::default());
    let t0 = h.now;
    h.faults.drop_all = true;
    h.run_for(Duration::from_secs(120));
    assert_eq!(Harness::failure(&h.init_events), Some(FailReason::Timeout));
    assert!(h.init.is_dead());
    // Failed at the DPD delay plus the give-up time (30 s), not before.
    let failed_at = h.now.duration_since(t0);
    assert!(failed_at >= Duration::from_secs(40), "{failed_at:?}");
}

#[test]
fn dpd_with_peer_present_keeps_the_sa() {
    let mut c = client();
    c.dpd = DpdConfig {
        delay: Some(Duration::from_secs(10)),
        ..DpdConfig::default()
    };
    let mut h = Harness::established(c, gateway(), Faults::default());
    let child = h.one_pair();
    h.run_for(Duration::from_secs(100));
    h.no_failure();
    assert_eq!(h.one_pair(), child);
    // Liveness checks went out and were answered: about one per 10 s.
    assert!(h.sent >= 4 + 2 * 9, "{}", h.sent);
    assert_eq!(h.init.stats().retransmitted, 0);
    // Reported ESP activity postpones them.
    let sent = h.sent;
    for _ in 0..5 {
        let now = h.now + Duration::from_secs(5);
        h.init.note_activity(now);
        h.run_for(Duration::from_secs(5));
    }
    assert!(h.sent <= sent + 2, "{} {}", h.sent, sent);
}

#[test]
fn child_lifetime_rekeys_within_jitter_and_hard_limit_deletes() {
    let mut c = client();
    c.lifetimes = Lifetimes {
        child_rekey: Some(Duration::from_secs(100)),
        child_rand: Duration::from_secs(10),
        child_life: Some(Duration::from_secs(120)),
        ..Lifetimes::default()
    };
    let mut h = Harness::established(c.clone(), gateway(), Faults::default());
    let before = h.one_pair();
    h.run_for(Duration::from_secs(89));
    assert_eq!(h.one_pair(), before);
    h.run_for(Duration::from_secs(12));
    h.no_failure();
    let after = h.one_pair();
    assert_ne!(after.0, before.0);
    // The new child is rekeyed in turn.
    h.run_for(Duration::from_secs(100));
    assert_ne!(h.one_pair().0, after.0);

    // A rekey that never completes: the hard limit deletes the child, the IKE SA stays.
    c.retransmit.give_up = Duration::from_secs(100);
    let mut h = Harness::established(c, gateway(), Faults::default());
    let (_, spi_out, _) = h.one_pair();
    h.faults.responder_deaf_from = Some(4);
    h.run_for(Duration::from_secs(119));
    assert_eq!(h.init.child_spis().len(), 1);
    h.run_for(Duration::from_secs(2));
    assert!(h.init.child_spis().is_empty());
    assert!(
        h.init_events
            .iter()
            .any(|e| matches!(e, Event::ChildSaDeleted { spis_out } if spis_out == &vec![spi_out]))
    );
    assert!(h.init.is_established());
}

#[test]
fn ike_lifetime_rekeys_and_hard_limit_expires() {
    let mut c = client();
    c.lifetimes = Lifetimes {
        ike_rekey: Some(Duration::from_secs(100)),
        ike_rand: Duration::from_secs(10),
        ike_life: Some(Duration::from_secs(120)),
        ..Lifetimes::default()
    };
    let mut h = Harness::established(c.clone(), gateway(), Faults::default());
    let spis = h.init.spis();
    h.run_for(Duration::from_secs(89));
    assert_eq!(h.init.spis(), spis);
    h.run_for(Duration::from_secs(12));
    h.no_failure();
    assert_ne!(h.init.spis(), spis);
    h.one_pair();

    c.retransmit.give_up = Duration::from_secs(100);
    let mut h = Harness::established(c, gateway(), Faults::default());
    h.faults.responder_deaf_from = Some(4);
    h.run_for(Duration::from_secs(121));
    assert_eq!(Harness::failure(&h.init_events), Some(FailReason::Expired));
    assert!(h.init.is_dead());
}

#[test]
fn malformed_create_child_sa_keeps_the_sa() {
    let mut h = Harness::established(client(), gateway(), Faults::default());
    let child = h.one_pair();
    // A truncated CREATE_CHILD_SA request and garbage: counted drops, the SA stays; the
    // real request then succeeds.
    h.init.rekey_children(h.now);
    let req = h.init.poll_transmit().unwrap();
    h.resp.handle_datagram(
        h.now,
        req.remote,
        req.local,
        &req.bytes[..req.bytes.len() / 2],
    );
    h.resp
        .handle_datagram(h.now, req.remote, req.local, &[0u8; 3]);
    assert!(h.resp.is_established());
    h.enqueue(true, req);
    h.run_for(LIMIT);
    h.no_failure();
    assert_ne!(h.one_pair().0, child.0);
    assert!(h.resp.stats().malformed >= 1);
}

#[test]
fn child_rekey_crossing_an_ike_rekey() {
    // One side rekeys the child while the other rekeys the IKE SA: the child's keys come
    // from the SK_d of the IKE SA its exchange ran on, both sides agree.
    for child_by_initiator in [true, false] {
        let mut h = Harness::established(client(), gateway(), Faults::default());
        let before = h.one_pair();
        let spis = h.init.spis();
        if child_by_initiator {
            h.init.rekey_children(h.now);
            h.resp.rekey_ike(h.now);
        } else {
            h.resp.rekey_children(h.now);
            h.init.rekey_ike(h.now);
        }
        h.run_for(LIMIT);
        h.no_failure();
        let after = h.one_pair();
        assert_ne!(after.0, before.0);
        assert_ne!(h.init.spis(), spis);
        // And everything still works afterwards.
        h.init.rekey_children(h.now);
        h.run_for(LIMIT);
        h.no_failure();
        assert_ne!(h.one_pair().0, after.0);
    }
}

#[test]
fn ike_sa_delete_by_responder_closes_the_initiator() {
    let mut h = Harness::established(client(), gateway(), Faults::default());
    h.one_pair();
    // An IKE SA delete by the responder: the initiator reports Closed.
    assert!(h.resp.delete(h.now));
    h.run_for(LIMIT);
    assert!(h.init.is_dead());
    assert_eq!(
        count(&h.init_events, |e| matches!(e, Event::Closed)),
        1,
        "{:?}",
        h.init_events
    );
}

#[test]
fn simultaneous_child_rekeys_survive_loss_of_any_message() {
    // Datagrams 4 and 5 are the two requests, then responses and Deletes in some order.
    for k in 4..12 {
        let faults = Faults {
            drop: [k].into(),
            ..Faults::default()
        };
        let mut h = Harness::established(client(), gateway(), faults);
        let before = h.one_pair();
        h.init.rekey_children(h.now);
        h.resp.rekey_children(h.now);
        h.run_for(LIMIT);
        h.no_failure();
        assert_ne!(h.one_pair().0, before.0, "dropping {k}");
    }
}

#[test]
fn simultaneous_ike_rekeys_survive_loss_of_any_message() {
    for k in 4..12 {
        let faults = Faults {
            drop: [k].into(),
            ..Faults::default()
        };
        let mut h = Harness::established(client(), gateway(), faults);
        let child = h.one_pair();
        let spis = h.init.spis();
        h.init.rekey_ike(h.now);
        h.resp.rekey_ike(h.now);
        h.run_for(LIMIT);
        h.no_failure();
        assert_ne!(h.init.spis(), spis, "dropping {k}");
        assert_eq!(h.one_pair(), child, "dropping {k}");
        h.init.rekey_children(h.now);
        h.run_for(LIMIT);
        h.no_failure();
        assert_ne!(h.one_pair().0, child.0, "dropping {k}");
    }
}

#[test]
fn malformed_create_child_sa_requests_get_the_rfc_answer() {
    use crate::ike::config::EspProposal;
    use crate::ike::proposal::{esp_sa_payload_pfs, ike_rekey_sa_payload};
    use crate::wire::{
        ExchangeType, KePayload, NotifyPayload, NotifyType, Payload, ProtocolId, TrafficSelector,
        TsPayload,
    };

    let mut h = Harness::established(client(), gateway(), Faults::default());
    let (spi_in, _, _) = h.one_pair();
    let rekey_sa = |spi: Vec<u8>| {
        Payload::Notify(NotifyPayload {
            protocol: ProtocolId::Esp,
            spi,
            notify_type: NotifyType::RekeySa,
            data: Vec::new(),
        })
    };
    let ts = || {
        [
            Payload::TsI(TsPayload {
                selectors: vec![TrafficSelector::ipv4_any()],
            }),
            Payload::TsR(TsPayload {
                selectors: vec![TrafficSelector::ipv4_any()],
            }),
        ]
    };
    let sa = |p: &[EspProposal], pfs| Payload::Sa(esp_sa_payload_pfs(p, 0x1234_5678, pfs));
    let nonce = Payload::Nonce(vec![7; 32]);
    let spi = spi_in.to_be_bytes().to_vec();
    // An AH proposal: nothing we take.
    let mut ah = esp_sa_payload_pfs(&[EspProposal::all()], 0x1234_5678, false);
    ah.proposals[0].protocol = ProtocolId::Ah;
    let mut pfs = EspProposal::all();
    pfs.groups = vec![DhGroup::Ecp256];
    let cases: Vec<(Vec<Payload>, NotifyType)> = vec![
        // A new child without payloads.
        (vec![], NotifyType::InvalidSyntax),
        // Rekeying an SA that does not exist.
        (
            [
                vec![
                    rekey_sa(vec![0, 0, 1, 0]),
                    sa(&[EspProposal::all()], false),
                    nonce.clone(),
                ],
                ts().to_vec(),
            ]
            .concat(),
            NotifyType::ChildSaNotFound,
        ),
        // REKEY_SA alone, or with a bad SPI size, or a short nonce.
        (vec![rekey_sa(spi.clone())], NotifyType::InvalidSyntax),
        (vec![rekey_sa(vec![1, 2, 3])], NotifyType::InvalidSyntax),
        (
            [
                vec![
                    rekey_sa(spi.clone()),
                    sa(&[EspProposal::all()], false),
                    Payload::Nonce(vec![1; 8]),
                ],
                ts().to_vec(),
            ]
            .concat(),
            NotifyType::InvalidSyntax,
        ),
        // Nothing acceptable.
        (
            [
                vec![rekey_sa(spi.clone()), Payload::Sa(ah), nonce.clone()],
                ts().to_vec(),
            ]
            .concat(),
            NotifyType::NoProposalChosen,
        ),
        // PFS offered, the gateway has no PFS configured.
        (
            [
                vec![
                    rekey_sa(spi.clone()),
                    sa(&[pfs], true),
                    nonce.clone(),
                    Payload::Ke(KePayload {
                        group: DhGroup::Ecp256,
                        data: vec![4; 65],
                    }),
                ],
                ts().to_vec(),
            ]
            .concat(),
            NotifyType::NoProposalChosen,
        ),
        // An IKE SA rekey without KE.
        (
            vec![
                Payload::Sa(ike_rekey_sa_payload(&client().proposals, 42)),
                nonce.clone(),
            ],
            NotifyType::InvalidSyntax,
        ),
    ];
    for (payloads, want) in cases {
        let req = h
            .init
            .seal_test_request(ExchangeType::CreateChildSa, &payloads)
            .unwrap();
        let (local, remote) = h.init.addresses();
        h.resp.handle_datagram(h.now, remote, local, &req);
        let resp = h.resp.poll_transmit().expect("an answer");
        let inner = h
            .init
            .open_test_message(&resp.bytes)
            .expect("sealed answer");
        assert!(
            inner
                .iter()
                .any(|p| matches!(p, Payload::Notify(n) if n.notify_type == want)),
            "{payloads:?} -> {inner:?}, want {want:?}"
        );
        assert!(h.resp.is_established());
    }
    // The SA and its child are intact, and a real rekey still works (the initiator's
    // message IDs moved on with the crafted requests).
    assert_eq!(h.resp.child_spis().len(), 1);
    h.init.rekey_children(h.now);
    h.run_for(LIMIT);
    h.no_failure();
    assert_ne!(h.one_pair().0, spi_in);
}

#[test]
fn random_create_child_sa_and_informational_requests_never_hurt() {
    use crate::ike::config::EspProposal;
    use crate::ike::proposal::{esp_sa_payload_pfs, ike_rekey_sa_payload};
    use crate::wire::{
        DeletePayload, ExchangeType, KePayload, NotifyPayload, NotifyType, Payload, ProtocolId,
        TrafficSelector, TsPayload,
    };

    let mut h = Harness::established(client(), gateway(), Faults::default());
    let (spi_in, _, _) = h.one_pair();
    // A small deterministic generator (xorshift).
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for round in 0..400 {
        let mut payloads = Vec::new();
        for _ in 0..next(6) {
            let len = usize::try_from(next(70)).unwrap();
            let p = match next(9) {
                0 => Payload::Notify(NotifyPayload {
                    protocol: [ProtocolId::Esp, ProtocolId::Ike, ProtocolId::Ah][next(3) as usize],
                    // Never the real SPI with a complete request: a valid rekey is no fuzz.
                    spi: (0..next(6)).map(|b| b as u8 ^ 0x5a).collect(),
                    notify_type: NotifyType::RekeySa,
                    data: vec![0; len % 4],
                }),
                1 => Payload::Sa(esp_sa_payload_pfs(
                    &[EspProposal::all()],
                    0x1000,
                    next(2) == 0,
                )),
                2 => Payload::Sa(ike_rekey_sa_payload(
                    &client().proposals,
                    next(u64::MAX) | 1,
                )),
                3 => Payload::Nonce(vec![3; len]),
                // KE payloads of the wrong length for their group.
                4 => Payload::Ke(KePayload {
                    group: [DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Ecp384]
                        [next(3) as usize],
                    data: vec![9; len % 31],
                }),
                5 => Payload::TsI(TsPayload {
                    selectors: vec![TrafficSelector::ipv4_any(); len % 3],
                }),
                6 => Payload::TsR(TsPayload {
                    selectors: vec![TrafficSelector::ipv4_any(); len % 3],
                }),
                7 => Payload::Delete(DeletePayload {
                    protocol: ProtocolId::Esp,
                    spi_size: 4,
                    spis: vec![vec![1, 2, 3, 4]; len % 3],
                }),
                _ => Payload::Notify(NotifyPayload::new(
                    NotifyType::from(next(65535) as u16),
                    vec![1; len],
                )),
            };
            payloads.push(p);
        }
        let exchange = if next(3) == 0 {
            ExchangeType::Informational
        } else {
            ExchangeType::CreateChildSa
        };
        // Informational with a Delete of the IKE SA or AUTHENTICATION_FAILED ends it: skip.
        if payloads.iter().any(|p| {
            matches!(p, Payload::Notify(n) if n.notify_type == NotifyType::AuthenticationFailed)
        }) {
            continue;
        }
        let req = h.init.seal_test_request(exchange, &payloads).unwrap();
        let (local, remote) = h.init.addresses();
        h.resp.handle_datagram(h.now, remote, local, &req);
        assert!(h.resp.poll_transmit().is_some(), "round {round}: no answer");
        assert!(h.resp.is_established(), "round {round}: {payloads:?}");
        assert_eq!(h.resp.child_spis().len(), 1, "round {round}: {payloads:?}");
    }
    h.init.rekey_children(h.now);
    h.run_for(LIMIT);
    h.no_failure();
    assert_ne!(h.one_pair().0, spi_in);
}

#[test]
fn child_volume_limits_rekey_once_and_hard_limit_deletes() {
    let mut c = client();
    c.lifetimes = Lifetimes {
        child_rekey_bytes: Some(500_000),
        child_rand_bytes: 50_000,
        child_life_bytes: Some(1_000_000),
        child_rekey_packets: Some(10_000),
        child_life_packets: Some(20_000),
        ..Lifetimes::default()
    };
    let mut h = Harness::established(c.clone(), gateway(), Faults::default());
    let before = h.one_pair();
    // Below the soft limit (less the largest jitter): nothing.
    h.init.child_usage(h.now, before.0, 449_999, 100);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.one_pair(), before);
    assert_eq!(h.sent, 4);
    // Past it: one rekey, and only one however often the usage is reported.
    for used in [500_000, 600_000, 700_000] {
        h.init.child_usage(h.now, before.0, used, 200);
        h.run_for(Duration::from_secs(1));
    }
    h.no_failure();
    let after = h.one_pair();
    assert_ne!(after.0, before.0);
    assert_eq!(
        count(&h.init_events, |e| matches!(
            e,
            Event::ChildSaRekeyed { .. }
        )),
        1
    );
    // Exchanges: the rekey and the Delete of the old pair.
    assert_eq!(h.sent, 8);
    // Usage of the replaced pair no longer counts; the new one starts afresh.
    h.init.child_usage(h.now, before.0, 5_000_000, 50_000);
    h.init.child_usage(h.now, after.0, 1000, 10);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.one_pair(), after);
    // The packet limit rekeys too.
    h.init.child_usage(h.now, after.0, 1000, 10_000);
    h.run_for(Duration::from_secs(1));
    let third = h.one_pair();
    assert_ne!(third.0, after.0);

    // The responder's limits work the same way (the pair as the gateway sees it).
    let mut g = gateway();
    g.lifetimes = c.lifetimes;
    let mut h = Harness::established(client(), g, Faults::default());
    let (spi_in, spi_out, _) = h.one_pair();
    // The responder's inbound SPI is the initiator's outbound one; the initiator's SPI
    // means nothing to it.
    h.resp.child_usage(h.now, spi_in, 2_000_000, 100);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.one_pair().0, spi_in);
    h.resp.child_usage(h.now, spi_out, 10, 15_000);
    h.run_for(Duration::from_secs(1));
    h.no_failure();
    assert_ne!(h.one_pair().0, spi_in);

    // A rekey that never completes: the hard limit deletes the child, the IKE SA stays.
    let mut h = Harness::established(c, gateway(), Faults::default());
    let (spi_in, spi_out, _) = h.one_pair();
    h.faults.responder_deaf_from = Some(4);
    h.init.child_usage(h.now, spi_in, 600_000, 100);
    h.run_for(Duration::from_secs(1));
    assert_eq!(h.init.child_spis().len(), 1);
    h.init.child_usage(h.now, spi_in, 1_000_000, 100);
    assert!(h.init.child_spis().is_empty());
    assert!(
        h.init_events
            .iter()
            .chain(
                std::iter::from_fn(|| h.init.poll_event())
                    .collect::<Vec<_>>()
                    .iter()
            )
            .any(|e| matches!(e, Event::ChildSaDeleted { spis_out } if spis_out == &vec![spi_out]))
    );
    assert!(h.init.is_established());
}

/// The engine's sequence-number events: the soft limit rekeys the child (the peer agrees
/// on the new pair), exhaustion deletes it and, as original initiator, creates it again.
#[test]
fn sequence_limits_rekey_then_delete_and_recreate() {
    use crate::ike::SeqLimitAction;
    let mut h = Harness::established(client(), gateway(), Faults::default());
    let (spi_in, spi_out, _) = h.one_pair();
    assert_eq!(h.init.child_seq_limit(h.now, 0xdead_beef, false), None);
    assert_eq!(
        h.init.child_seq_limit(h.now, spi_out, false),
        Some(SeqLimitAction::Rekey)
    );
    // While the rekey is outstanding, a second report changes nothing.
    assert_eq!(
        h.init.child_seq_limit(h.now, spi_out, true),
        Some(SeqLimitAction::Replacing)
    );
    h.run_for(LIMIT);
    h.no_failure();
    let (new_in, new_out, _) = h.one_pair();
    assert_ne!((new_in, new_out), (spi_in, spi_out));
    assert_eq!(
        count(
            &h.init_events,
            |e| matches!(e, Event::ChildSaRekeyed { old_spi_in, .. } if *old_spi_in == spi_in)
        ),
        1
    );

    // The new pair runs out before any rekey: deleted at once, then created again.
    let deleted_before = count(&h.init_events, |e| {
        matches!(e, Event::ChildSaDeleted { .. })
    });
    assert_eq!(
        h.init.child_seq_limit(h.now, new_out, true),
        Some(SeqLimitAction::Delete { recreate: true })
    );
    h.collect();
    assert!(h.init.child_spis().is_empty());
    assert_eq!(
        count(
            &h.init_events,
            |e| matches!(e, Event::ChildSaDeleted { spis_out } if spis_out == &vec![new_out])
        ),
        1
    );
    h.run_for(LIMIT);
    h.no_failure();
    let (again_in, again_out, _) = h.one_pair();
    assert!(![spi_in, new_in].contains(&again_in) && ![spi_out, new_out].contains(&again_out));
    assert!(
        count(&h.init_events, |e| matches!(
            e,
            Event::ChildSaDeleted { .. }
        )) > deleted_before
    );

    // A responder deletes but leaves re-creating to its peer.
    let (r_in, r_out) = h.resp.child_spis()[0];
    assert_eq!(r_in, again_out);
    assert_eq!(
        h.resp.child_seq_limit(h.now, r_out, true),
        Some(SeqLimitAction::Delete { recreate: false })
    );
    h.run_for(LIMIT);
    h.no_failure();
    assert!(h.resp.child_spis().is_empty() && h.init.child_spis().is_empty());
    assert!(h.init.is_established() && h.resp.is_established());
}

/// Each IKE SA has its own message window: right after our IKE SA rekey, the Delete of
/// the old IKE SA is outstanding on the old SA while a child rekey goes out at once on the
/// new one (with a single window it waited for the Delete's answer).
#[test]
fn old_and_new_ike_sa_have_their_own_windows() {
    let mut h = Harness::established(client(), gateway(), Faults::default());
    let old = h.init.spis().unwrap();
    let now = h.now;
    assert!(h.init.rekey_ike(now));
    // The rekey request, its response; then the Delete of the old IKE SA is in flight.
    for _ in 0..2 {
        h.collect();
        let (to_resp, t) = h.in_flight.pop_front().expect("a message in flight");
        h.deliver(to_resp, t);
    }
    h.collect();
    let new = h.init.spis().unwrap();
    assert_ne!(new, old);
    let now = h.now;
    assert!(h.init.rekey_children(now));
    h.collect();
    let spis: Vec<(u64, u64)> = h
        .in_flight
        .iter()
        .filter(|(to_resp, _)| *to_resp)
        .map(|(_, t)| {
            let hdr = crate::wire::HeaderPacket::new_checked(&t.bytes[..]).unwrap();
            (hdr.spi_i(), hdr.spi_r())
        })
        .collect();
    assert_eq!(
        spis,
        vec![old, new],
        "Delete on the old SA, child rekey on the new"
    );
    h.run(LIMIT);
    h.no_failure();
    h.one_pair();
    assert_eq!(h.init.spis(), Some(new));
}
