//! The exchanges after IKE_AUTH, each a type implementing [`Exchange`], in the manner of
//! strongSwan's tasks: as initiator it builds the request and processes the response; as
//! responder it processes the request and builds the response. One file each:
//!
//! * `child_create.rs`: CREATE_CHILD_SA for a new child SA (RFC 7296 section 1.3.1);
//! * `child_rekey.rs`: CREATE_CHILD_SA with REKEY_SA, optional PFS (section 1.3.3);
//! * `ike_rekey.rs`: CREATE_CHILD_SA rekeying the IKE SA (sections 1.3.2, 2.18), and
//!   with CLONE_IKE_SA the clone of RFC 7791;
//! * `delete.rs`: INFORMATIONAL with Delete payloads, of child SAs or the IKE SA (1.4.1);
//! * `liveness.rs`: the empty INFORMATIONAL (section 2.4);
//! * `mobike_update.rs`: MOBIKE's UPDATE_SA_ADDRESSES and address list updates, as
//!   responder (RFC 4555 sections 3.5, 3.6);
//! * `route_check.rs`: our return-routability check of the peer's new address (COOKIE2,
//!   RFC 4555 sections 3.8, 5.2.2) before the child SAs follow it.
//! * `mobike_initiator.rs`: ours: UPDATE_SA_ADDRESSES and our address list (sections 3.5,
//!   3.6);
//! * `mobike_probe.rs`: our path checks and probes, liveness checks with NAT_DETECTION_*
//!   and COOKIE2 (sections 3.8, 3.10).
//! * `mif.rs`: the multi-interface extension's INFORMATIONAL, both roles: interface lists
//!   and operations (docs/PROTOCOL.md sections 3.2, 5 and 6).
//!
//! The established state (`established.rs`) owns the queue of our requests, dispatches
//! the peer's requests to the first exchange in [`responders`] that claims them, and
//! applies the [`Effect`]s an exchange reports, where the collision rules (RFC 7296
//! sections 2.8.1 and 2.8.2) live. Adding an exchange: one file implementing the trait,
//! one `mod` line here and, if the peer may start it, one line in [`responders`].

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mifsec_dataplane::aead::Cipher;

use super::core::Core;
use super::ctx::Ctx;
use super::{FailReason, Firsts, NONCE_RANGE, notify};
use crate::ike::config::EspProposal;
use crate::ike::crypto::{ChildKeys, KeyExchange, Secret};
use crate::ike::proposal::{EspRefusal, is_subset};
use crate::wire::{
    DhGroup, ExchangeType, KePayload, NotifyPayload, NotifyType, Payload, SaPayload,
    TrafficSelector, TsPayload,
};

pub(in crate::ike::sa) mod child_create;
pub(in crate::ike::sa) mod child_rekey;
pub(in crate::ike::sa) mod delete;
pub(in crate::ike::sa) mod ike_rekey;
pub(in crate::ike::sa) mod liveness;
pub(in crate::ike::sa) mod mif;
pub(in crate::ike::sa) mod mobike_initiator;
pub(in crate::ike::sa) mod mobike_probe;
pub(in crate::ike::sa) mod mobike_update;
pub(in crate::ike::sa) mod route_check;

pub(in crate::ike::sa) use child_create::ChildCreate;
pub(in crate::ike::sa) use child_rekey::ChildRekey;
pub(in crate::ike::sa) use delete::Delete;
pub(in crate::ike::sa) use ike_rekey::IkeRekey;
pub(in crate::ike::sa) use liveness::Liveness;
pub(in crate::ike::sa) use mif::MifRequest;
pub(in crate::ike::sa) use mobike_initiator::{AddressUpdate, PathUpdate};
pub(in crate::ike::sa) use mobike_probe::PathCheck;
pub(in crate::ike::sa) use mobike_update::MobikeUpdate;
pub(in crate::ike::sa) use route_check::RouteCheck;

/// How long after a TEMPORARY_FAILURE answer a rekey is tried again.
pub(in crate::ike::sa) const RETRY_AFTER: Duration = Duration::from_secs(2);

/// The exchanges a peer's request may be, asked in this order whether it is theirs; the
/// first that claims it answers it. A request nobody claims is answered with
/// NO_ADDITIONAL_SAS.
pub(in crate::ike::sa) fn responders() -> Vec<Responder> {
    vec![
        Responder::of::<ChildRekey>(),
        Responder::of::<IkeRekey>(),
        Responder::of::<ChildCreate>(),
        Responder::of::<Delete>(),
        Responder::of::<MobikeUpdate>(),
        Responder::of::<MifRequest>(),
        Responder::of::<Liveness>(),
    ]
}

/// Tests only: the MOBIKE responder's answer (for test responders that wrap it).
#[cfg(test)]
pub(crate) fn respond_mobike(x: &mut Ex<'_>, p: &[Payload]) -> Vec<Payload> {
    MobikeUpdate::respond(x, p)
}

/// Which exchange a responder is, for the established state's collision rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A new child SA.
    ChildCreate,
    /// A child SA rekey.
    ChildRekey,
    /// An IKE SA rekey.
    IkeRekey,
    /// A Delete.
    Delete,
    /// A liveness check.
    Liveness,
    /// A MOBIKE address update (UPDATE_SA_ADDRESSES or the peer's address list).
    MobikeUpdate,
    /// Any other (an extension's, a test's).
    #[cfg_attr(not(test), allow(dead_code))]
    Other,
}

/// What a request of ours is, for the queue: a request is not queued twice, and the
/// collision rules look for some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// A new child SA of this configuration (with a KE in this group).
    ChildCreate(String, Option<DhGroup>),
    /// A rekey of the child SA with this inbound SPI (whatever the group).
    ChildRekey(u32),
    /// A rekey of the IKE SA (whatever the group).
    IkeRekey,
    /// A clone of the IKE SA (RFC 7791): never a rekey for the collision rules.
    IkeClone,
    /// A Delete of the child SAs with these inbound SPIs.
    DeleteChildren(Vec<u32>),
    /// A Delete of the IKE SA with these SPIs.
    DeleteIke((u64, u64)),
    /// A liveness check.
    Liveness,
    /// A return-routability check (COOKIE2) of the peer's new address.
    RouteCheck,
    /// Any other exchange, by name.
    #[cfg_attr(not(test), allow(dead_code))]
    Other(&'static str),
}

/// What an exchange asks the established state to do once it has run.
pub(in crate::ike::sa) enum Effect {
    /// Queue this request (a follow-up: a Delete, a retry with another group).
    Queue(Box<dyn Exchange>),
    /// The peer deleted the IKE SA the request came on.
    Close,
    /// The IKE SA fails.
    Fail(FailReason),
    /// Our rekey of child `old_spi_in` made child `spi_in`; `lowest` is the lowest nonce
    /// of the exchange (RFC 7296 section 2.8.1 decides which SA goes).
    ChildRekeyed {
        /// The inbound SPI of the child replaced.
        old_spi_in: u32,
        /// The inbound SPI of the new child.
        spi_in: u32,
        /// The lowest nonce of the exchange.
        lowest: Vec<u8>,
    },
    /// Our rekey of the IKE SA made this IKE SA (section 2.8.2 decides which one stays).
    IkeRekeyed(Core, Vec<u8>),
    /// MOBIKE: the peer refused our UPDATE_SA_ADDRESSES for the pair we moved to (or it
    /// did not verify): the IKE SA goes back to `before`, the pair is not tried again
    /// if `refused`, and, if `probe`, the other pairs are probed.
    PathRefused {
        /// The pair the update was for.
        pair: (SocketAddr, SocketAddr),
        /// The path before the move.
        before: super::paths::Path,
        /// Whether the peer refused the pair itself (UNACCEPTABLE_ADDRESSES,
        /// UNEXPECTED_NAT_DETECTED).
        refused: bool,
        /// Probe the other pairs, for this reason.
        probe: Option<super::MoveReason>,
    },
    /// Our rekey of the IKE SA failed; retry as told, unless a rekey of the peer's stands.
    IkeRekeyFailed(Option<IkeRetry>),
    /// We answered the peer's rekey of the IKE SA: this is the new one, with the lowest
    /// nonce of that exchange.
    PeerRekeyedIke(Core, Vec<u8>),
    /// RFC 7791: our clone of the IKE SA made this new IKE SA; the old one stays as it is.
    Cloned(Core),
    /// RFC 7791: we answered the peer's clone: this is the new IKE SA.
    PeerCloned(Core),
}

/// How a failed IKE SA rekey of ours is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IkeRetry {
    /// At once, with a KE in this group (the peer's INVALID_KE_PAYLOAD).
    Group(DhGroup),
    /// After [`RETRY_AFTER`] (the peer's TEMPORARY_FAILURE).
    Later,
}

/// What an exchange sees of its IKE SA while it runs.
pub(crate) struct Ex<'a> {
    /// Configuration, randomness, the tracked children, the event queue, timers.
    pub(in crate::ike::sa) ctx: &'a mut Ctx,
    /// The keys of the IKE SA the exchange runs on.
    pub(in crate::ike::sa) core: &'a Core,
    /// The IKE SA's virtual IPs (ours as initiator, the peer's as responder).
    pub(in crate::ike::sa) vips: &'a [IpAddr],
    /// The time of the message or timer being handled.
    pub(crate) now: Instant,
    /// Responder: the (local, remote) addresses the request arrived on and came from.
    pub(crate) from: Option<(SocketAddr, SocketAddr)>,
    /// Responder: the request's Message ID.
    pub(in crate::ike::sa) message_id: u32,
    /// Whether the exchange runs on the current IKE SA (not on one being replaced).
    pub(in crate::ike::sa) current: bool,
    /// What the established state does once the exchange has run, in order.
    pub(in crate::ike::sa) effects: Vec<Effect>,
}

/// One exchange after IKE_AUTH. The initiator's half is an object (created when the
/// request is wanted, queued, sent, kept until its response); the responder's is a pair of
/// functions, registered in [`responders`] through [`Responder::of`].
pub(crate) trait Exchange: Send {
    /// Which exchange this is, for the collision rules.
    fn kind() -> Kind
    where
        Self: Sized;

    /// Responder: whether a request of type `exchange` with these inner payloads is one of
    /// this exchange (only asked if no exchange before it in [`responders`] claimed it).
    /// The default, for an exchange only we start (MOBIKE's checks and updates): never.
    fn claims(_exchange: ExchangeType, _payloads: &[Payload]) -> bool
    where
        Self: Sized,
    {
        false
    }

    /// Responder: processes the peer's request, returns the response's payloads. A refusal
    /// is an error notify in the response. The default goes with `claims`' default and is
    /// never called.
    fn respond(_x: &mut Ex<'_>, _payloads: &[Payload]) -> Vec<Payload>
    where
        Self: Sized,
    {
        Vec::new()
    }

    /// Initiator: what this request is, for the queue.
    fn key(&self) -> Key;

    /// Initiator: the exchange type of the request.
    fn exchange_type(&self) -> ExchangeType;

    /// Initiator: the SPIs of the IKE SA the request must go on; `None`: the current one.
    fn ike_sa(&self) -> Option<(u64, u64)> {
        None
    }

    /// Initiator: builds the request's inner payloads, keeping what it needs for the
    /// response. `None`: nothing to send any more (the request is dropped).
    fn build_request(&mut self, x: &mut Ex<'_>) -> Option<Vec<Payload>>;

    /// Initiator: processes the response's inner payloads (empty when the response was
    /// malformed: the exchange failed, the IKE SA stays).
    fn process_response(self: Box<Self>, x: &mut Ex<'_>, payloads: &[Payload]);

    /// Initiator: the IKE SA the request went on was deleted before it answered; what to
    /// send on the current IKE SA instead, if anything.
    fn requeue(self: Box<Self>) -> Option<Box<dyn Exchange>> {
        None
    }

    /// Initiator, MOBIKE: how the request is sent; see [`Resend`].
    fn resend(&self) -> Resend {
        Resend::Normal
    }
}

/// How a request of ours is sent and retransmitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Resend {
    /// On the current path, the configured schedule.
    Normal,
    /// A path check: on the current path, `path_check_tries` times `path_check_interval`
    /// apart, then the path is dead and the request is probed on the other pairs.
    Check,
    /// A probe: on each of these pairs at once.
    Probe(Vec<(SocketAddr, SocketAddr)>),
    /// An optional probe of these pairs (a preferred path): dropped after the check's
    /// tries, not fatal.
    Optional(Vec<(SocketAddr, SocketAddr)>),
}

/// The responder's half of an exchange, as registered.
#[derive(Clone, Copy)]
pub(crate) struct Responder {
    pub(crate) kind: Kind,
    pub(crate) claims: fn(ExchangeType, &[Payload]) -> bool,
    pub(crate) respond: fn(&mut Ex<'_>, &[Payload]) -> Vec<Payload>,
}

impl Responder {
    /// The responder's half of exchange `T`.
    pub(crate) fn of<T: Exchange>() -> Responder {
        Responder {
            kind: T::kind(),
            claims: T::claims,
            respond: T::respond,
        }
    }
}

impl fmt::Debug for Responder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Responder")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

/// The lower of two nonces (the collision rules compare them).
pub(in crate::ike::sa) fn lowest(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.min(b).to_vec()
}

/// The payloads of a CREATE_CHILD_SA request or response for a child SA, new or rekey (the
/// response's nonce is Nr, its KE the responder's).
pub(in crate::ike::sa) struct ChildPayloads<'a> {
    pub(in crate::ike::sa) sa: &'a SaPayload,
    pub(in crate::ike::sa) nonce: &'a [u8],
    pub(in crate::ike::sa) ke: Option<&'a KePayload>,
    pub(in crate::ike::sa) tsi: &'a TsPayload,
    pub(in crate::ike::sa) tsr: &'a TsPayload,
}

impl<'a> ChildPayloads<'a> {
    /// The first of each payload; `None` when one is missing or the nonce's length is out of
    /// range.
    pub(in crate::ike::sa) fn parse(p: &'a [Payload]) -> Option<Self> {
        let f = Firsts::of(p);
        let (sa, nonce, ke, tsi, tsr) = (f.sa?, f.nonce?, f.ke, f.tsi?, f.tsr?);
        NONCE_RANGE.contains(&nonce.len()).then_some(ChildPayloads {
            sa,
            nonce,
            ke,
            tsi,
            tsr,
        })
    }

    /// Initiator: whether the responder's selectors lie within those we sent (`local` ours,
    /// `remote` the peer's).
    pub(in crate::ike::sa) fn selectors_within(
        &self,
        local: &[TrafficSelector],
        remote: &[TrafficSelector],
    ) -> bool {
        !self.tsi.selectors.is_empty()
            && !self.tsr.selectors.is_empty()
            && self.tsi.selectors.iter().all(|t| is_subset(t, local))
            && self.tsr.selectors.iter().all(|t| is_subset(t, remote))
    }
}

/// Initiator: the new shared secret of a child exchange with PFS, from our key exchange and
/// the responder's KE payload; `Ok(None)` without PFS. `Err` when the groups do not match
/// what was chosen or the agreement fails.
pub(in crate::ike::sa) fn initiator_pfs_secret(
    group: Option<DhGroup>,
    ours: Option<KeyExchange>,
    theirs: Option<&KePayload>,
) -> Result<Option<Secret>, ()> {
    match (group, ours, theirs) {
        (None, None, _) => Ok(None),
        (Some(g), Some(ke), Some(ker)) if ke.group() == g && ker.group == g => {
            ke.agree(&ker.data).map(Some).map_err(|_| ())
        }
        _ => Err(()),
    }
}

/// The group an INVALID_KE_PAYLOAD notify in `p` asks for.
pub(in crate::ike::sa) fn invalid_ke_group(p: &[Payload]) -> Option<DhGroup> {
    p.iter().find_map(|q| match q {
        Payload::Notify(n) if n.notify_type == NotifyType::InvalidKePayload => {
            <[u8; 2]>::try_from(n.data.as_slice())
                .ok()
                .map(|b| DhGroup::from(u16::from_be_bytes(b)))
        }
        _ => None,
    })
}

/// The answer to an ESP proposal we cannot accept.
pub(in crate::ike::sa) fn refusal_notify(r: EspRefusal) -> Vec<Payload> {
    match r {
        EspRefusal::NoProposal => vec![notify(NotifyType::NoProposalChosen)],
        EspRefusal::InvalidKe(g) => vec![Payload::Notify(NotifyPayload::new(
            NotifyType::InvalidKePayload,
            u16::from(g).to_be_bytes().to_vec(),
        ))],
    }
}

/// Our KE payload for a request in `group`, if any, with its key exchange. `Err`: the key
/// exchange could not be generated.
pub(in crate::ike::sa) fn our_ke(
    ctx: &Ctx,
    group: Option<DhGroup>,
) -> Result<Option<KeyExchange>, ()> {
    match group.map(|g| KeyExchange::generate(g, &ctx.rng)) {
        Some(Ok(k)) => Ok(Some(k)),
        Some(Err(_)) => Err(()),
        None => Ok(None),
    }
}

/// The KE payload carrying `ke`'s public value.
pub(in crate::ike::sa) fn ke_payload(ke: &KeyExchange) -> Payload {
    Payload::Ke(KePayload {
        group: ke.group(),
        data: ke.public_value().to_vec(),
    })
}

/// The responder's half of a child SA in CREATE_CHILD_SA (new child or rekey).
pub(in crate::ike::sa) struct Answer {
    /// Our inbound SPI.
    pub(in crate::ike::sa) spi_in: u32,
    /// Our nonce.
    pub(in crate::ike::sa) nr: Vec<u8>,
    /// Our KE payload, with PFS.
    pub(in crate::ike::sa) ke: Option<Payload>,
    /// The KEYMAT.
    pub(in crate::ike::sa) keys: ChildKeys,
}

/// The responder's SPI, nonce and keys for a child SA in CREATE_CHILD_SA (new child or
/// rekey): with PFS (a group chosen and the peer's KE), our KE payload and the new shared
/// secret, then the KEYMAT. An error is the notify to answer with.
pub(in crate::ike::sa) fn answer_child(
    ctx: &Ctx,
    core: &Core,
    group: Option<DhGroup>,
    ke: Option<&KePayload>,
    ni: &[u8],
    cipher: Cipher,
) -> Result<Answer, Vec<Payload>> {
    let (Ok(spi_in), Ok(nr)) = (ctx.esp_spi(), ctx.nonce()) else {
        return Err(vec![notify(NotifyType::TemporaryFailure)]);
    };
    let (ker, gir) = match (group, ke) {
        (Some(g), Some(peer)) => {
            let Ok(ours) = KeyExchange::generate(g, &ctx.rng) else {
                return Err(vec![notify(NotifyType::TemporaryFailure)]);
            };
            let ker = ke_payload(&ours);
            match ours.agree(&peer.data) {
                Ok(s) => (Some(ker), Some(s)),
                Err(_) => return Err(vec![notify(NotifyType::InvalidSyntax)]),
            }
        }
        _ => (None, None),
    };
    let keys = child_keys(core, gir.as_ref(), ni, &nr, cipher)
        .map_err(|_| vec![notify(NotifyType::TemporaryFailure)])?;
    Ok(Answer {
        spi_in,
        nr,
        ke: ker,
        keys,
    })
}

/// The KEYMAT of a child SA from the IKE SA's SK_d, the new shared secret (with PFS) and
/// the nonces.
pub(in crate::ike::sa) fn child_keys(
    core: &Core,
    gir: Option<&Secret>,
    ni: &[u8],
    nr: &[u8],
    cipher: Cipher,
) -> Result<ChildKeys, ()> {
    ChildKeys::derive(core.prf, &core.sk_d, gir.map(|g| &g[..]), ni, nr, cipher).map_err(|_| ())
}

/// The payloads of a child SA's request or response: USE_TRANSPORT_MODE if `transport`,
/// then SA, Nonce, KE (with PFS), TSi and TSr.
pub(in crate::ike::sa) fn child_payloads(
    transport: bool,
    sa: SaPayload,
    nonce: Vec<u8>,
    ke: Option<Payload>,
    (tsi, tsr): (Vec<TrafficSelector>, Vec<TrafficSelector>),
) -> Vec<Payload> {
    let mut p = Vec::new();
    if transport {
        p.push(notify(NotifyType::UseTransportMode));
    }
    p.push(Payload::Sa(sa));
    p.push(Payload::Nonce(nonce));
    p.extend(ke);
    p.push(Payload::TsI(TsPayload { selectors: tsi }));
    p.push(Payload::TsR(TsPayload { selectors: tsr }));
    p
}

/// Initiator: our KE (in `group`, else the first group of `proposals`; none: no PFS),
/// inbound SPI and nonce for a child SA request. `None`: one could not be made.
pub(in crate::ike::sa) fn request_keys(
    ctx: &Ctx,
    group: Option<DhGroup>,
    proposals: &[EspProposal],
) -> Option<(Option<KeyExchange>, u32, Vec<u8>)> {
    let group = group.or_else(|| proposals.iter().find_map(|p| p.groups.first().copied()));
    let ke = our_ke(ctx, group).ok()?;
    let (Ok(spi_in), Ok(ni)) = (ctx.esp_spi(), ctx.nonce()) else {
        return None;
    };
    Some((ke, spi_in, ni))
}

/// Initiator: the group to retry a child SA request in after the peer's INVALID_KE_PAYLOAD
/// in `p`: one of `proposals`' and not the one `tried`.
pub(in crate::ike::sa) fn retry_group(
    p: &[Payload],
    proposals: &[EspProposal],
    tried: Option<&KeyExchange>,
) -> Option<DhGroup> {
    let g = invalid_ke_group(p)?;
    let ours = proposals.iter().any(|q| q.groups.contains(&g));
    (ours && Some(g) != tried.map(KeyExchange::group)).then_some(g)
}

#[cfg(test)]
mod tests {
    use super::lowest;

    #[test]
    fn lowest_nonce_compares_bytes() {
        assert_eq!(lowest(&[1, 2], &[1, 3]), vec![1, 2]);
        assert_eq!(lowest(&[2], &[1, 255]), vec![1, 255]);
    }
}
