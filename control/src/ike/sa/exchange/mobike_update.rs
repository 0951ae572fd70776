//! MOBIKE (RFC 4555) as responder: the peer's INFORMATIONAL requests about addresses.
//!
//! * UPDATE_SA_ADDRESSES (section 3.5): the IKE SA's current path moves to the addresses
//!   the request arrived on and came from, NAT detection runs again on that path from the
//!   request's NAT_DETECTION_* notifies, and the answer carries ours; the children move
//!   with it ([`Event::IkeSaMoved`], the daemon moves them make-before-break). With
//!   NO_NATS_ALLOWED (section 3.9) and a NAT found, the answer is UNEXPECTED_NAT_DETECTED
//!   and nothing moves.
//! * ADDITIONAL_IP4_ADDRESS / ADDITIONAL_IP6_ADDRESS / NO_ADDITIONAL_ADDRESSES (section
//!   3.6): the peer's whole list of additional addresses, replacing the one before,
//!   bounded by `MAX_PEER_ADDRESSES` (drops counted).
//! * COOKIE2 (sections 3.5, 3.8) is echoed in the answer, whatever else the request is.
//!
//! Only when MOBIKE_SUPPORTED went both ways in IKE_AUTH; otherwise such a request is
//! answered empty, as a liveness check, and changes nothing.
//!
//! Not here yet: the return-routability check of section 5 before traffic moves to an
//! unverified address, UNACCEPTABLE_ADDRESSES, and the initiator's half.

use std::net::SocketAddr;

use super::{Ex, Exchange, Key, Kind};
use crate::ike::sa::core::{nat_detection_hash, nat_notifies};
use crate::ike::sa::paths::AddressList;
use crate::ike::sa::{ChildMove, Event, NatStatus, notify};
use crate::wire::{ExchangeType, NotifyPayload, NotifyType, Payload};

/// The lengths a COOKIE2 may have (RFC 4555 section 3.8: 8 to 64 octets).
const COOKIE2_LEN: std::ops::RangeInclusive<usize> = 8..=64;

/// The notifies that make an INFORMATIONAL request this exchange's.
const CLAIMED: [NotifyType; 5] = [
    NotifyType::UpdateSaAddresses,
    NotifyType::AdditionalIp4Address,
    NotifyType::AdditionalIp6Address,
    NotifyType::NoAdditionalAddresses,
    NotifyType::Cookie2,
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

/// The peer's MOBIKE requests, as responder (no initiator's half yet).
#[derive(Debug)]
pub(in crate::ike::sa) struct MobikeUpdate;

impl MobikeUpdate {
    /// The UPDATE_SA_ADDRESSES part: moves the current path; the answer's notifies, or the
    /// error notify to answer with.
    fn update(x: &mut Ex<'_>, p: &[Payload]) -> Result<Vec<Payload>, NotifyType> {
        let Some((local, remote)) = x.from else {
            return Ok(Vec::new());
        };
        let spis = (x.core.spi_i, x.core.spi_r);
        let nat = detect_nat(spis, p, local, remote);
        if nat.any() && notifies(p, NotifyType::NoNatsAllowed).next().is_some() {
            return Err(NotifyType::UnexpectedNatDetected);
        }
        let ctx = &mut *x.ctx;
        if ctx.paths.move_to(local, remote, nat) {
            ctx.stats.moves += 1;
            let paths = ctx.paths.child_paths();
            let children = ctx
                .children
                .iter()
                .map(|c| ChildMove {
                    spi_in: c.spi_in,
                    spi_out: c.spi_out,
                    paths: paths.clone(),
                    udp_encap: nat.any(),
                })
                .collect();
            ctx.events.push_back(Event::IkeSaMoved {
                spis,
                local,
                remote,
                nat,
                children,
            });
        }
        let asked_nat = notifies(p, NotifyType::NatDetectionSourceIp)
            .next()
            .is_some();
        Ok(if asked_nat {
            nat_notifies(spis.0, spis.1, local, remote).to_vec()
        } else {
            Vec::new()
        })
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
                Err(t) => return vec![notify(t)],
            }
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

    /// No initiator's half yet: nothing is sent.
    fn build_request(&mut self, _: &mut Ex<'_>) -> Option<Vec<Payload>> {
        None
    }

    fn process_response(self: Box<Self>, _: &mut Ex<'_>, _: &[Payload]) {}
}
