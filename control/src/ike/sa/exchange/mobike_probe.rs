//! MOBIKE as initiator (RFC 4555 sections 3.8, 3.10): our liveness checks that carry
//! NAT_DETECTION_* and COOKIE2, on the current path (a path check, short retransmissions)
//! or on several candidate pairs at once (a probe: the same sealed request on every pair,
//! a retransmission as RFC 7296 section 2.1 has it, so that any responder answers it).
//!
//! The answer's path is the one it came on (`Ex::from`). The established state moves the
//! IKE SA to it first when it is not the current path (the first pair that answers wins,
//! then UPDATE_SA_ADDRESSES); here the answer is checked: COOKIE2 must be ours (else
//! counted, nothing learned), and on the current path the peer's NAT_DETECTION_DESTINATION_IP
//! is compared with what it reported before: a change is a new NAT mapping, followed with
//! an UPDATE_SA_ADDRESSES (section 3.8).

use std::net::SocketAddr;

use super::{Ex, Exchange, Key, Kind, PathUpdate, Resend};
use crate::ike::sa::MoveReason;
use crate::ike::sa::handshake::our_nat_notifies;
use crate::ike::sa::roam::nat_of_answer;
use crate::wire::{ExchangeType, NotifyPayload, NotifyType, Payload};

/// The length of the COOKIE2 we send (RFC 4555 section 3.8 allows 8 to 64 octets).
pub(in crate::ike::sa) const OUR_COOKIE2_LEN: usize = 16;

/// Whether `p` carries COOKIE2 `cookie`.
pub(in crate::ike::sa) fn cookie2_ok(p: &[Payload], cookie: &[u8]) -> bool {
    p.iter().any(|q| {
        matches!(q, Payload::Notify(n) if n.notify_type == NotifyType::Cookie2 && n.data == cookie)
    })
}

/// A liveness check of ours with NAT_DETECTION_* and COOKIE2.
#[derive(Debug)]
pub(in crate::ike::sa) struct PathCheck {
    resend: Resend,
    cookie: Vec<u8>,
}

impl PathCheck {
    /// A check of the current path (short retransmissions, then probe).
    pub(in crate::ike::sa) fn current() -> PathCheck {
        PathCheck {
            resend: Resend::Check,
            cookie: Vec::new(),
        }
    }

    /// A probe of `pairs` at once.
    pub(in crate::ike::sa) fn probe(pairs: Vec<(SocketAddr, SocketAddr)>) -> PathCheck {
        PathCheck {
            resend: Resend::Probe(pairs),
            cookie: Vec::new(),
        }
    }

    /// An optional probe of `pairs` (a preferred path): dropped unanswered.
    pub(in crate::ike::sa) fn optional(pairs: Vec<(SocketAddr, SocketAddr)>) -> PathCheck {
        PathCheck {
            resend: Resend::Optional(pairs),
            cookie: Vec::new(),
        }
    }
}

impl Exchange for PathCheck {
    fn kind() -> Kind {
        Kind::Liveness
    }

    fn key(&self) -> Key {
        Key::Other("mobike-check")
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    fn build_request(&mut self, x: &mut Ex<'_>) -> Option<Vec<Payload>> {
        self.cookie = x.ctx.random::<OUR_COOKIE2_LEN>().ok()?.to_vec();
        let (local, remote) = x.ctx.paths.pair();
        let mut p = our_nat_notifies(x.ctx, x.core.spi_i, x.core.spi_r, local, remote).to_vec();
        p.push(Payload::Notify(NotifyPayload::new(
            NotifyType::Cookie2,
            self.cookie.clone(),
        )));
        Some(p)
    }

    fn resend(&self) -> Resend {
        self.resend.clone()
    }

    fn process_response(self: Box<Self>, x: &mut Ex<'_>, p: &[Payload]) {
        if !cookie2_ok(p, &self.cookie) {
            x.ctx.stats.cookie2_mismatch += 1;
            return;
        }
        let Some(from) = x.from else { return };
        let ctx = &mut *x.ctx;
        if from != ctx.paths.pair() {
            return;
        }
        let spis = (x.core.spi_i, x.core.spi_r);
        let (_, seen) = nat_of_answer(spis, p, from, ctx.cfg.force_encap);
        match (&ctx.roam.peer_saw, seen) {
            (Some(before), Some(now)) if *before != now => {
                // Section 3.8: the NAT in front of us maps us to a new address; tell the
                // peer with an update on the same path.
                x.effects
                    .push(super::Effect::Queue(Box::new(PathUpdate::new(
                        MoveReason::NatChanged,
                        *ctx.paths.current(),
                    ))));
            }
            (_, Some(now)) => ctx.roam.peer_saw = Some(now),
            _ => {}
        }
    }
}
