//! Our return-routability check of the peer's new address (RFC 4555 sections 3.8 and
//! 5.2.2): after the peer's UPDATE_SA_ADDRESSES from an address it has not used before,
//! the IKE SA answers there at once, but the child SAs' traffic (much more of it, and
//! nothing to throttle it) goes there only once an INFORMATIONAL of ours with a fresh
//! COOKIE2 has been answered from it with the same COOKIE2. Without that an authenticated
//! peer could make us flood a third party by claiming its address (section 5.2.2).
//!
//! The check runs in the IKE SA's request window like any request of ours: a lost message
//! is retransmitted, and an unanswered check fails the IKE SA as an unanswered liveness
//! check does. A check superseded by a newer update (or a move back to an address known to
//! be reachable) is dropped unsent, or its answer ignored.

use super::{Ex, Exchange, Key, Kind};
use crate::ike::sa::paths::RouteCheck as Pending;
use crate::ike::sa::{ChildMove, Ctx, Event, MoveReason};
use crate::wire::{ExchangeType, NotifyPayload, NotifyType, Payload};

/// The length of the COOKIE2 we send (RFC 4555 section 3.8: 8 to 64 octets).
pub(in crate::ike::sa) const COOKIE2_SENT: usize = 16;

/// One check: the COOKIE2 it carries.
#[derive(Debug)]
pub(in crate::ike::sa) struct RouteCheck {
    cookie: Vec<u8>,
}

impl RouteCheck {
    /// A check with `cookie`, the one recorded in the IKE SA's paths.
    pub(in crate::ike::sa) fn new(cookie: Vec<u8>) -> RouteCheck {
        RouteCheck { cookie }
    }

    /// Whether this check is the one under way, for the current path.
    fn live<'a>(&self, ctx: &'a Ctx) -> Option<&'a Pending> {
        ctx.paths
            .check()
            .filter(|c| c.cookie == self.cookie && c.path == *ctx.paths.current())
    }
}

/// The child SAs join the IKE SA's current path; if their addresses (or NAT state)
/// changed, [`Event::IkeSaMoved`] tells the caller to move them, for `reason`.
pub(in crate::ike::sa) fn children_follow(ctx: &mut Ctx, spis: (u64, u64), reason: MoveReason) {
    if !ctx.paths.children_follow() {
        return;
    }
    let path = *ctx.paths.current();
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
            udp_encap: path.nat.any(),
        })
        .collect();
    ctx.events.push_back(Event::IkeSaMoved {
        spis,
        local: path.local,
        remote: path.remote,
        nat: path.nat,
        children,
        reason,
    });
}

impl Exchange for RouteCheck {
    fn kind() -> Kind {
        Kind::Other
    }

    fn key(&self) -> Key {
        Key::RouteCheck
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    /// COOKIE2 alone; nothing if a newer update superseded the check.
    fn build_request(&mut self, x: &mut Ex<'_>) -> Option<Vec<Payload>> {
        self.live(x.ctx)?;
        Some(vec![Payload::Notify(NotifyPayload::new(
            NotifyType::Cookie2,
            self.cookie.clone(),
        ))])
    }

    /// The same COOKIE2 back, on the path checked: the child SAs follow. Another (or none,
    /// or an unusable answer): the check failed, counted; they stay where they are.
    fn process_response(self: Box<Self>, x: &mut Ex<'_>, p: &[Payload]) {
        if self.live(x.ctx).is_none() {
            // Superseded while under way: a newer check (or none) decides.
            return;
        }
        let echoed = p.iter().any(|q| {
            matches!(q, Payload::Notify(n)
                if n.notify_type == NotifyType::Cookie2 && n.data == self.cookie)
        });
        if echoed {
            x.ctx.stats.route_checks_passed += 1;
            children_follow(
                x.ctx,
                (x.core.spi_i, x.core.spi_r),
                MoveReason::PeerUpdateVerified,
            );
        } else {
            x.ctx.stats.route_checks_failed += 1;
            x.ctx.paths.end_check();
        }
    }

    /// The IKE SA it went on was deleted: send it again on the current one.
    fn requeue(self: Box<Self>) -> Option<Box<dyn Exchange>> {
        Some(self)
    }
}
