//! MOBIKE (RFC 4555) as responder: the peer's INFORMATIONAL requests about addresses.
//!
//! * UPDATE_SA_ADDRESSES (section 3.5): the IKE SA's current path moves at once to the
//!   addresses the request arrived on and came from (its answer and our further requests,
//!   retransmissions included, go there), NAT detection runs again on that path from the
//!   request's NAT_DETECTION_* notifies, and the answer carries ours. The child SAs follow
//!   ([`Event::IkeSaMoved`], the daemon moves them make-before-break) at once when the
//!   peer's new address is known to be reachable (the children were there before, or it
//!   answered a check), else once our return-routability check (COOKIE2, sections 3.8
//!   and 5.2.2, `route_check.rs`) is answered from it.
//! * Refusals, after which nothing moves: with NO_NATS_ALLOWED (section 3.9) and a NAT
//!   found, UNEXPECTED_NAT_DETECTED; an address local policy refuses
//!   (`IkeConfig::mobike_peers`, or no unicast host), UNACCEPTABLE_ADDRESSES. An update
//!   older than one processed already (a lower Message ID, or one on an IKE SA being
//!   replaced after one on its successor) is answered but moves nothing (section 3.5).
//! * ADDITIONAL_IP4_ADDRESS / ADDITIONAL_IP6_ADDRESS / NO_ADDITIONAL_ADDRESSES (section
//!   3.6): the peer's whole list of additional addresses, replacing the one before,
//!   bounded by `MAX_PEER_ADDRESSES` (drops counted).
//! * COOKIE2 (sections 3.5, 3.8) is echoed in the answer, whatever else the request is.
//!
//! Only when MOBIKE_SUPPORTED went both ways in IKE_AUTH; otherwise such a request is
//! answered empty, as a liveness check, and changes nothing.
//!
//! The initiator's half (our own UPDATE_SA_ADDRESSES) is not in this file.

use std::net::{IpAddr, SocketAddr};

use ring::rand::SecureRandom;

use super::route_check::{COOKIE2_SENT, children_follow};
use super::{Effect, Ex, Exchange, Key, Kind, RouteCheck};
use crate::ike::sa::core::nat_detection_hash;
use crate::ike::sa::handshake::our_nat_notifies;
use crate::ike::sa::paths::{AddressList, RouteCheck as PendingCheck};
use crate::ike::sa::{MoveReason, NatStatus, notify};
use crate::wire::{ExchangeType, NotifyPayload, NotifyType, Payload};

/// The lengths a COOKIE2 may have (RFC 4555 section 3.8: 8 to 64 octets).
const COOKIE2_LEN: std::ops::RangeInclusive<usize> = 8..=64;

/// The notifies that make an INFORMATIONAL request this exchange's.
const CLAIMED: [NotifyType; 6] = [
    NotifyType::UpdateSaAddresses,
    NotifyType::AdditionalIp4Address,
    NotifyType::AdditionalIp6Address,
    NotifyType::NoAdditionalAddresses,
    NotifyType::Cookie2,
    NotifyType::NatDetectionSourceIp,
];

fn notifies(p: &[Payload], t: NotifyType) -> impl Iterator<Item = &NotifyPayload> {
    p.iter().filter_map(move |q| match q {
        Payload::Notify(n) if n.notify_type == t => Some(n),
        _ => None,
    })
}

/// NAT detection on a request of IKE SA `spis` received on `local` from `remote`, from
/// its NAT_DETECTION_* notifies (RFC 7296 section 2.23); none: no NAT assumed.
fn detect_nat(
    (spi_i, spi_r): (u64, u64),
    p: &[Payload],
    local: SocketAddr,
    remote: SocketAddr,
) -> NatStatus {
    let src = nat_detection_hash(spi_i, spi_r, remote);
    let dst = nat_detection_hash(spi_i, spi_r, local);
    let mut srcs = notifies(p, NotifyType::NatDetectionSourceIp).peekable();
    let remote_behind_nat = srcs.peek().is_some() && !srcs.any(|n| n.data == src);
    let local_behind_nat = notifies(p, NotifyType::NatDetectionDestinationIp)
        .next()
        .is_some_and(|n| n.data != dst);
    NatStatus {
        local_behind_nat,
        remote_behind_nat,
    }
}

/// Whether local policy lets the peer move the IKE SA to `remote`: a unicast host address
/// with a port, and one of `allowed` if any are configured.
fn acceptable(remote: SocketAddr, allowed: &[IpAddr]) -> bool {
    let ip = remote.ip();
    let host = match ip {
        IpAddr::V4(a) => !a.is_unspecified() && !a.is_multicast() && !a.is_broadcast(),
        IpAddr::V6(a) => !a.is_unspecified() && !a.is_multicast(),
    };
    host && remote.port() != 0 && (allowed.is_empty() || allowed.contains(&ip))
}

/// The peer's MOBIKE requests, as responder.
#[derive(Debug)]
pub(in crate::ike::sa) struct MobikeUpdate;

impl MobikeUpdate {
    /// The UPDATE_SA_ADDRESSES part (RFC 4555 section 3.5): the IKE SA's current path
    /// moves to where the request came from at once; the child SAs follow at once if that
    /// address is known to be reachable, else once our return-routability check is
    /// answered ([`RouteCheck`](super::RouteCheck)). Returns the answer's notifies, or the
    /// error notify to answer with (nothing moves).
    fn update(x: &mut Ex<'_>, p: &[Payload]) -> Result<Vec<Payload>, NotifyType> {
        let Some((local, remote)) = x.from else {
            return Ok(Vec::new());
        };
        let spis = (x.core.spi_i, x.core.spi_r);
        let mut nat = detect_nat(spis, p, local, remote);
        if nat.any() && notifies(p, NotifyType::NoNatsAllowed).next().is_some() {
            x.ctx.stats.updates_refused += 1;
            return Err(NotifyType::UnexpectedNatDetected);
        }
        if !acceptable(remote, &x.ctx.cfg.mobike_peers) {
            x.ctx.stats.updates_refused += 1;
            return Err(NotifyType::UnacceptableAddresses);
        }
        // As after IKE_SA_INIT: with forced encapsulation we act as if behind a NAT.
        nat.local_behind_nat |= x.ctx.cfg.force_encap;
        let asked_nat = notifies(p, NotifyType::NatDetectionSourceIp)
            .next()
            .is_some();
        let answer = if asked_nat {
            our_nat_notifies(x.ctx, spis.0, spis.1, local, remote).to_vec()
        } else {
            Vec::new()
        };
        // Section 3.5: an update older than one processed must not move the SA back.
        if x.ctx.paths.update_is_stale(spis, x.message_id, x.current) {
            x.ctx.stats.updates_stale += 1;
            return Ok(answer);
        }
        let ctx = &mut *x.ctx;
        let verified = ctx.paths.is_verified(remote);
        // The child SAs stay where they are while the IKE SA moves on, until they follow.
        ctx.paths.hold_children();
        if ctx.paths.move_to(local, remote, nat) {
            ctx.stats.moves += 1;
        }
        if verified {
            children_follow(ctx, spis, MoveReason::PeerUpdate);
        } else if ctx
            .paths
            .check()
            .is_none_or(|c| c.path != *ctx.paths.current())
        {
            let mut cookie = vec![0u8; COOKIE2_SENT];
            if ctx.rng.fill(&mut cookie).is_ok() {
                let path = *ctx.paths.current();
                ctx.paths.start_check(PendingCheck {
                    cookie: cookie.clone(),
                    path,
                });
                x.effects
                    .push(Effect::Queue(Box::new(RouteCheck::new(cookie))));
            }
            // No randomness for a cookie: the children stay until a later update.
        }
        Ok(answer)
    }
}

impl Exchange for MobikeUpdate {
    fn kind() -> Kind {
        Kind::MobikeUpdate
    }

    /// INFORMATIONAL requests with UPDATE_SA_ADDRESSES, an address list or COOKIE2.
    fn claims(exchange: ExchangeType, p: &[Payload]) -> bool {
        exchange == ExchangeType::Informational
            && CLAIMED.iter().any(|t| notifies(p, *t).next().is_some())
    }

    fn respond(x: &mut Ex<'_>, p: &[Payload]) -> Vec<Payload> {
        if !x.ctx.paths.mobike() {
            return Vec::new();
        }
        let cookie2 = notifies(p, NotifyType::Cookie2).next();
        if cookie2.is_some_and(|c| !COOKIE2_LEN.contains(&c.data.len())) {
            x.ctx.stats.malformed += 1;
            return vec![notify(NotifyType::InvalidSyntax)];
        }
        let mut out = Vec::new();
        if notifies(p, NotifyType::UpdateSaAddresses).next().is_some() {
            match Self::update(x, p) {
                Ok(n) => out.extend(n),
                // The refusal carries the COOKIE2 back too (section 3.8: the response
                // copies it; strongSwan closes the IKE SA on a response without it).
                Err(t) => {
                    let mut out = vec![notify(t)];
                    out.extend(cookie2.map(|c| {
                        Payload::Notify(NotifyPayload::new(NotifyType::Cookie2, c.data.clone()))
                    }));
                    return out;
                }
            }
        } else if let Some((local, remote)) = x.from.filter(|_| {
            notifies(p, NotifyType::NatDetectionSourceIp)
                .next()
                .is_some()
        }) {
            // The peer's path check or probe (RFC 4555 sections 3.8, 3.10): our hashes of
            // the path it came on, so that it sees a NAT or a new mapping; nothing moves.
            let (i, r) = (x.core.spi_i, x.core.spi_r);
            out.extend(our_nat_notifies(x.ctx, i, r, local, remote));
        }
        if let Some(list) = AddressList::parse(p) {
            x.ctx.stats.peer_addresses_dropped += x.ctx.paths.set_peer_addresses(list);
        }
        if let Some(c) = cookie2 {
            out.push(Payload::Notify(NotifyPayload::new(
                NotifyType::Cookie2,
                c.data.clone(),
            )));
        }
        out
    }

    fn key(&self) -> Key {
        Key::Other("mobike-update")
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    /// Only the peer's: nothing is sent from here.
    fn build_request(&mut self, _: &mut Ex<'_>) -> Option<Vec<Payload>> {
        None
    }

    fn process_response(self: Box<Self>, _: &mut Ex<'_>, _: &[Payload]) {}
}
