//! MOBIKE as initiator (RFC 4555): our INFORMATIONAL requests about addresses.
//!
//! * [`PathUpdate`], UPDATE_SA_ADDRESSES (section 3.5): the IKE SA already uses the new
//!   path (`pending_update`); the request goes on it with NAT_DETECTION_* of that path,
//!   COOKIE2 and our address list. The answer must echo the COOKIE2 (else counted, no
//!   move) and its NAT_DETECTION_* give the new path's NAT state; then the children move
//!   ([`Event::IkeSaMoved`]). If the path changed again meanwhile, another update follows
//!   instead. UNACCEPTABLE_ADDRESSES and UNEXPECTED_NAT_DETECTED (sections 3.5, 3.9):
//!   no move, the pair is not tried again, and the other pairs are probed.
//! * [`AddressUpdate`], our address list alone (section 3.6): ADDITIONAL_IP4_ADDRESS /
//!   ADDITIONAL_IP6_ADDRESS for each of our usable addresses but the current path's, or
//!   NO_ADDITIONAL_ADDRESSES; sent in either role whenever the set changes.

use std::net::IpAddr;

use super::mobike_probe::{OUR_COOKIE2_LEN, cookie2_ok};
use super::{Effect, Ex, Exchange, Key, Kind};
use crate::ike::sa::ctx::Ctx;
use crate::ike::sa::handshake::our_nat_notifies;
use crate::ike::sa::paths::Path;
use crate::ike::sa::roam::{Pair, nat_of_answer};
use crate::ike::sa::{ChildMove, Event, MoveReason, first_error_notify, notify};
use crate::wire::{ExchangeType, NotifyPayload, NotifyType, Payload};

/// The notifies of an address list (RFC 4555 section 3.6).
pub(in crate::ike::sa) fn address_list(addrs: &[IpAddr]) -> Vec<Payload> {
    if addrs.is_empty() {
        return vec![notify(NotifyType::NoAdditionalAddresses)];
    }
    addrs
        .iter()
        .map(|a| match a {
            IpAddr::V4(v) => {
                NotifyPayload::new(NotifyType::AdditionalIp4Address, v.octets().to_vec())
            }
            IpAddr::V6(v) => {
                NotifyPayload::new(NotifyType::AdditionalIp6Address, v.octets().to_vec())
            }
        })
        .map(Payload::Notify)
        .collect()
}

/// Our address list for a message now, recorded as announced; `None` while our addresses
/// are unknown (never told: nothing to announce).
pub(in crate::ike::sa) fn announce(ctx: &mut Ctx) -> Option<Vec<Payload>> {
    let list = ctx.roam.additional(&ctx.paths)?;
    let out = address_list(&list);
    ctx.roam.announced = Some(list);
    Some(out)
}

/// Pushes [`Event::IkeSaMoved`] for the current path and counts the move.
pub(in crate::ike::sa) fn moved(ctx: &mut Ctx, reason: MoveReason, spis: (u64, u64)) {
    ctx.stats.moves += 1;
    let p = *ctx.paths.current();
    let paths = ctx.paths.child_paths();
    let children = ctx
        .children
        .iter()
        // With the multi-interface extension a child keeps its own paths (PROTOCOL 6.4).
        .filter(|c| !ctx.child_on_mif(c))
        .map(|c| ChildMove {
            spi_in: c.spi_in,
            spi_out: c.spi_out,
            paths: paths.clone(),
            udp_encap: p.nat.any(),
        })
        .collect();
    ctx.events.push_back(Event::IkeSaMoved {
        reason,
        spis,
        local: p.local,
        remote: p.remote,
        nat: p.nat,
        children,
    });
}

/// Our UPDATE_SA_ADDRESSES; see the module documentation.
#[derive(Debug)]
pub(in crate::ike::sa) struct PathUpdate {
    reason: MoveReason,
    /// The path before the move (to go back to if the peer refuses).
    before: Path,
    /// The pair the request was built for.
    sent_for: Option<Pair>,
    cookie: Vec<u8>,
}

impl PathUpdate {
    /// An update of the peer to the current path, moved there from `before` for `reason`.
    pub(in crate::ike::sa) fn new(reason: MoveReason, before: Path) -> PathUpdate {
        PathUpdate {
            reason,
            before,
            sent_for: None,
            cookie: Vec::new(),
        }
    }
}

impl Exchange for PathUpdate {
    fn kind() -> Kind {
        Kind::MobikeUpdate
    }

    fn key(&self) -> Key {
        Key::Other("mobike-path-update")
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    fn build_request(&mut self, x: &mut Ex<'_>) -> Option<Vec<Payload>> {
        self.cookie = x.ctx.random::<OUR_COOKIE2_LEN>().ok()?.to_vec();
        let (local, remote) = x.ctx.paths.pair();
        self.sent_for = Some((local, remote));
        let mut p = vec![notify(NotifyType::UpdateSaAddresses)];
        p.extend(our_nat_notifies(
            x.ctx,
            x.core.spi_i,
            x.core.spi_r,
            local,
            remote,
        ));
        p.push(Payload::Notify(NotifyPayload::new(
            NotifyType::Cookie2,
            self.cookie.clone(),
        )));
        p.extend(announce(x.ctx).unwrap_or_default());
        Some(p)
    }

    fn process_response(self: Box<Self>, x: &mut Ex<'_>, p: &[Payload]) {
        let Some(pair) = self.sent_for else { return };
        let refuse = |x: &mut Ex<'_>, refused: bool, probe: bool| {
            x.ctx.stats.our_updates_refused += 1;
            x.effects.push(Effect::PathRefused {
                pair,
                before: self.before,
                refused,
                probe: probe.then_some(self.reason),
            });
        };
        match first_error_notify(p) {
            Some(NotifyType::UnacceptableAddresses | NotifyType::UnexpectedNatDetected) => {
                return refuse(x, true, true);
            }
            Some(_) => return refuse(x, false, false),
            None => {}
        }
        if p.is_empty() || !cookie2_ok(p, &self.cookie) {
            // Malformed, or not an answer to this request's COOKIE2: no move.
            x.ctx.stats.cookie2_mismatch += u64::from(!p.is_empty());
            return refuse(x, false, false);
        }
        let spis = (x.core.spi_i, x.core.spi_r);
        let ctx = &mut *x.ctx;
        if ctx.paths.pair() != pair {
            // Moved again while this was outstanding (`pending_update`): the next update
            // (queued by that move) tells the peer; nothing moves yet.
            return;
        }
        let (nat, seen) = nat_of_answer(spis, p, pair, ctx.cfg.force_encap);
        ctx.roam.peer_saw = seen;
        ctx.paths.set_nat(nat);
        moved(ctx, self.reason, spis);
    }
}

/// Our address list alone; see the module documentation.
#[derive(Debug, Default)]
pub(in crate::ike::sa) struct AddressUpdate;

impl Exchange for AddressUpdate {
    fn kind() -> Kind {
        Kind::MobikeUpdate
    }

    fn key(&self) -> Key {
        Key::Other("mobike-addresses")
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    /// Built when sent: the list of that moment; nothing if it is what the peer has.
    fn build_request(&mut self, x: &mut Ex<'_>) -> Option<Vec<Payload>> {
        let now = x.ctx.roam.additional(&x.ctx.paths)?;
        if x.ctx.roam.announced.as_ref() == Some(&now) {
            return None;
        }
        announce(x.ctx)
    }

    fn process_response(self: Box<Self>, _: &mut Ex<'_>, _: &[Payload]) {}
}
