//! The multi-interface extension's INFORMATIONAL (docs/PROTOCOL.md sections 3.2, 5 and 6),
//! both roles: the sender's interface list (processed first; an interface missing from a
//! newer list leaves every child SA) and at most one MIF_OPERATION (ADD_INTERFACE,
//! REMOVE_INTERFACE, SOFT_HANDOVER, HARD_HANDOVER, SET_ALTERNATES, CHECK; DRY_RUN;
//! MOVE_IKE) over a selection of child SAs (ALL, SPIS, TS), answered with one MIF_RESULT
//! per child SA concerned or one MIF_REFUSED for the whole request.
//!
//! Each side's operations change only its own interface set of each child SA (PROTOCOL
//! 6.3): as responder we change the *peer's* set of each selected child, as initiator our
//! own, with the same pure function ([`apply_op`]), so both sides end with the same sets
//! and so the same paths (PROTOCOL 4.2). The responder applies the APPLIED and NO_CHANGE
//! children before it answers, the initiator those the answer says APPLIED or NO_CHANGE
//! (an op applied to a set that is so already changes nothing); each side reports one
//! [`Event::MifApplied`] per exchange, so that the daemon makes one engine table swap.
//!
//! Rekeys (PROTOCOL 6.4): a selected child's successor (a rekey of either side) is
//! selected too, on both sides; a successor made later starts from its predecessor's sets
//! (`child_rekey.rs`). A request outstanding on an IKE SA that is deleted before it
//! answered is sent again on the current one ([`Exchange::requeue`]).

use std::net::{IpAddr, SocketAddr};

use super::{Ex, Exchange, Key, Kind};
use crate::ike::config::Mode;
use crate::ike::proposal::is_subset;
use crate::ike::sa::mif::{MifChildState, MifState};
use crate::ike::sa::{Event, MifChildChange, MifTransition};
use crate::wire::{
    ExchangeType, MifInterface, MifInterfaceList, MifNotifies, MifOp, MifOperation, MifRefusal,
    MifResult, MifRole, MifSelection, MifStatus, NotifyType, Payload, TrafficSelector,
};

/// How many of our MIF requests may wait behind the outstanding one (PROTOCOL 6.2).
pub(crate) const MAX_QUEUED: usize = 16;
/// The most SPIs in a selection (PROTOCOL 6.6).
pub(crate) const MAX_SPIS: usize = 256;
/// The most selectors on each side of a TS selection (PROTOCOL 5.2).
pub(crate) const MAX_SELECTORS: usize = 16;

/// The notifies that make an INFORMATIONAL request this exchange's: any MIF notify.
const MIF_TYPES: [NotifyType; 7] = [
    NotifyType::MifSupported,
    NotifyType::MifInterface,
    NotifyType::MifInterfaceList,
    NotifyType::MifOperation,
    NotifyType::MifResult,
    NotifyType::MifRefused,
    NotifyType::MifChild,
];

fn datas(p: &[Payload], t: NotifyType) -> impl Iterator<Item = &[u8]> {
    p.iter().filter_map(move |q| match q {
        Payload::Notify(n) if n.notify_type == t => Some(n.data.as_slice()),
        _ => None,
    })
}

/// One element of a child's interface set: (interface ID, role).
pub(crate) type Set = Vec<(u16, MifRole)>;

/// What an operation does to one child's set of the sender's interfaces, before the
/// receiver's checks: the new set, or `None` when it is so already (NO_CHANGE). Pure: the
/// responder runs it on its copy of the peer's set, the initiator on its own, so both get
/// the same set (PROTOCOL 6.3). `withdrawn`: interfaces the request's list withdrew.
pub(crate) fn apply_op(set: &[(u16, MifRole)], op: &MifOp) -> Option<Set> {
    let pos = |id: u16| set.iter().position(|&(i, _)| i == id);
    let mut out: Set = set.to_vec();
    match op {
        MifOp::AddInterface { id, role } => match pos(*id) {
            Some(k) if out[k].1 == *role => return None,
            Some(k) => out[k].1 = *role,
            None => out.push((*id, *role)),
        },
        MifOp::RemoveInterface { id } => {
            let k = pos(*id)?;
            out.remove(k);
        }
        MifOp::SoftHandover { from, to } | MifOp::HardHandover { from, to } => {
            let Some(k) = pos(*from) else {
                // Nothing to hand over on this child (it does not use `from`).
                return None;
            };
            let role = match op {
                MifOp::SoftHandover { .. } => MifRole::Active,
                _ => out[k].1,
            };
            out[k] = (*to, role);
            // `to` was in the set already: it keeps the position of `from`.
            let mut seen = false;
            out.retain(|&(i, _)| {
                let dup = i == *to && seen;
                seen |= i == *to;
                !dup
            });
        }
        MifOp::SetAlternates { ids } => {
            out.retain(|&(i, r)| r == MifRole::Active && !ids.contains(&i));
            let mut added: Vec<u16> = Vec::new();
            for &i in ids {
                if !added.contains(&i) {
                    added.push(i);
                    out.push((i, MifRole::Standby));
                }
            }
        }
        MifOp::Check { .. } => return None,
    }
    (out != set).then_some(out)
}

/// The interfaces an operation brings into a child's set (checked by the receiver for
/// address family, transport-mode selectors and path limits).
fn joining(op: &MifOp) -> Vec<u16> {
    match op {
        MifOp::AddInterface { id, .. } | MifOp::Check { id } => vec![*id],
        MifOp::SoftHandover { to, .. } | MifOp::HardHandover { to, .. } => vec![*to],
        MifOp::SetAlternates { ids } => ids.clone(),
        MifOp::RemoveInterface { .. } => Vec::new(),
    }
}

/// The interfaces an operation takes out of a child's set (they may be gone already).
fn leaving(op: &MifOp) -> Vec<u16> {
    match op {
        MifOp::RemoveInterface { id } => vec![*id],
        MifOp::SoftHandover { from, .. } | MifOp::HardHandover { from, .. } => vec![*from],
        _ => Vec::new(),
    }
}

/// Every interface ID an operation names.
fn named(op: &MifOp) -> Vec<u16> {
    match op {
        MifOp::AddInterface { id, .. } | MifOp::Check { id } | MifOp::RemoveInterface { id } => {
            vec![*id]
        }
        MifOp::SoftHandover { from, to } | MifOp::HardHandover { from, to } => vec![*from, *to],
        MifOp::SetAlternates { ids } => ids.clone(),
    }
}

/// The host selector of `addr` in the manner of `like` (its protocol and ports).
fn host_ts(addr: IpAddr, like: Option<&TrafficSelector>) -> TrafficSelector {
    let (proto, sp, ep) = match like {
        Some(TrafficSelector::Ipv4 {
            ip_protocol,
            start_port,
            end_port,
            ..
        })
        | Some(TrafficSelector::Ipv6 {
            ip_protocol,
            start_port,
            end_port,
            ..
        }) => (*ip_protocol, *start_port, *end_port),
        _ => (0, 0, u16::MAX),
    };
    match addr {
        IpAddr::V4(a) => TrafficSelector::Ipv4 {
            ip_protocol: proto,
            start_port: sp,
            end_port: ep,
            start: a,
            end: a,
        },
        IpAddr::V6(a) => TrafficSelector::Ipv6 {
            ip_protocol: proto,
            start_port: sp,
            end_port: ep,
            start: a,
            end: a,
        },
    }
}

fn ts_host(ts: &TrafficSelector) -> Option<IpAddr> {
    match ts {
        TrafficSelector::Ipv4 { start, end, .. } if start == end => Some(IpAddr::V4(*start)),
        TrafficSelector::Ipv6 { start, end, .. } if start == end => Some(IpAddr::V6(*start)),
        _ => None,
    }
}

/// Transport mode (PROTOCOL 6.5): the sender's selectors of a child after its set went
/// from `old` to `new`: the host selectors of the addresses that left are removed, those
/// of the addresses that joined added. `addr` finds an interface's address.
pub(crate) fn moved_selectors(
    ts: &[TrafficSelector],
    (old, new): (&Set, &Set),
    addr: impl Fn(u16) -> Option<IpAddr>,
) -> Vec<TrafficSelector> {
    let addrs = |s: &Set| -> Vec<IpAddr> { s.iter().filter_map(|&(i, _)| addr(i)).collect() };
    let (before, after) = (addrs(old), addrs(new));
    let like = ts.first().cloned();
    let mut out: Vec<TrafficSelector> = ts
        .iter()
        .filter(|t| ts_host(t).is_none_or(|a| after.contains(&a) || !before.contains(&a)))
        .cloned()
        .collect();
    for a in after.iter().filter(|a| !before.contains(a)) {
        if !out.iter().any(|t| ts_host(t) == Some(*a)) {
            out.push(host_ts(*a, like.as_ref()));
        }
    }
    if out.is_empty() {
        // Never without a selector: keep what there was.
        return ts.to_vec();
    }
    out
}

/// The number of pairs (i, r) of the same address family (PROTOCOL 4.2, before the cut
/// at max paths).
fn pair_count(
    s: &[(u16, MifRole)],
    r: &[(u16, MifRole)],
    s_addr: impl Fn(u16) -> Option<IpAddr>,
    r_addr: impl Fn(u16) -> Option<IpAddr>,
) -> usize {
    let rs: Vec<IpAddr> = r.iter().filter_map(|&(i, _)| r_addr(i)).collect();
    s.iter()
        .filter_map(|&(i, _)| s_addr(i))
        .map(|a| rs.iter().filter(|b| b.is_ipv4() == a.is_ipv4()).count())
        .sum()
}

/// Which side of the child's sets the sender of a request owns: `true` the original
/// initiator's (I), `false` the responder's (R).
fn sender_is_i(ctx_original_initiator: bool, we_send: bool) -> bool {
    ctx_original_initiator == we_send
}

/// The set of one side of a child.
fn side(c: &MifChildState, i: bool) -> &Set {
    if i {
        &c.initiator_set
    } else {
        &c.responder_set
    }
}

fn side_mut(c: &mut MifChildState, i: bool) -> &mut Set {
    if i {
        &mut c.initiator_set
    } else {
        &mut c.responder_set
    }
}

/// Our side of the exchange that outlives a request.
#[derive(Debug, Default, Clone)]
pub(crate) struct MifOpsState {
    /// Our table as the peer holds it, while it differs from our own (`None`: the same):
    /// both peers compute a child's paths over it until the peer took a newer list, so a
    /// lost interface's paths leave, and a new priority orders them, on both sides at
    /// once. At most the announced interfaces.
    known: Option<Vec<MifInterface>>,
}

/// One of our MIF requests: our list if it changed since the peer last took one, and an
/// operation, if any.
#[derive(Debug)]
pub(crate) struct MifRequest {
    op: Option<MifOperation>,
    /// The list sent in the request last built: its generation and interfaces.
    sent: Option<(u32, Vec<MifInterface>)>,
}

impl MifRequest {
    /// A request carrying `op` (and our list, if it changed).
    pub(crate) fn new(op: Option<MifOperation>) -> MifRequest {
        MifRequest { op, sent: None }
    }
}

/// The result of one child SA at the responder, and its new sender set if it changes.
struct Verdict {
    status: MifStatus,
    set: Option<Set>,
    paths: u8,
}

/// Responder: a MIF_REFUSED answer.
fn refused(r: MifRefusal) -> Vec<Payload> {
    vec![r.notify()]
}

/// The address of interface `id` in `table`.
fn addr_in(table: &[MifInterface], id: u16) -> Option<IpAddr> {
    table.iter().find(|i| i.id == id).map(|i| i.addr.ip())
}

/// The children an operation selects, in selection order: for each, the result's SPI
/// (the exchange initiator's inbound SPI) and the index of the tracked child, `None` for
/// an unknown SPI. `we_send`: we are the exchange's initiator. A selected child's
/// successor (a rekey of either side) is selected too (PROTOCOL 6.4).
fn select(
    children: &[crate::ike::sa::child::Child],
    sel: &MifSelection,
    we_send: bool,
) -> Vec<(u32, Option<usize>)> {
    // The initiator's inbound SPI of a child: ours as initiator, the peer's as responder.
    let key = |c: &crate::ike::sa::child::Child| if we_send { c.spi_in } else { c.spi_out };
    let mut out: Vec<(u32, Option<usize>)> = Vec::new();
    let push = |out: &mut Vec<(u32, Option<usize>)>, i: usize| {
        let k = key(&children[i]);
        if !out.iter().any(|&(s, _)| s == k) {
            out.push((k, Some(i)));
        }
    };
    match sel {
        MifSelection::All => {
            for i in 0..children.len() {
                push(&mut out, i);
            }
        }
        MifSelection::Spis(spis) => {
            for &s in spis.iter().take(MAX_SPIS) {
                match children.iter().position(|c| key(c) == s) {
                    Some(i) => push(&mut out, i),
                    None if !out.iter().any(|&(k, _)| k == s) => out.push((s, None)),
                    None => {}
                }
            }
        }
        MifSelection::Ts { sender, receiver } => {
            for (i, c) in children.iter().enumerate() {
                // The sender's side of the child: ours if we send, the peer's otherwise.
                let (s_ts, r_ts) = if we_send {
                    (&c.local_ts, &c.remote_ts)
                } else {
                    (&c.remote_ts, &c.local_ts)
                };
                let within = |ts: &[TrafficSelector], of: &[TrafficSelector]| {
                    of.is_empty() || ts.iter().all(|t| is_subset(t, of))
                };
                if within(s_ts, sender) && within(r_ts, receiver) {
                    push(&mut out, i);
                }
            }
        }
    }
    // Successors, transitively (bounded by the number of children).
    let mut k = 0;
    while k < out.len() {
        if let Some(i) = out[k].1 {
            let next = children[i]
                .successor
                .or_else(|| children[i].peer_rekey.as_ref().map(|(_, s)| *s));
            if let Some(j) = next.and_then(|s| children.iter().position(|c| c.spi_in == s)) {
                push(&mut out, j);
            }
        }
        k += 1;
    }
    out
}

/// Responder: the verdict on one child SA (index `i`) of operation `op` of the peer, whose
/// set is side `s_i` of the child's, before the request's list withdraws anything (a
/// REMOVE of an interface the list withdrew is APPLIED if the child had it, else
/// NO_CHANGE).
fn evaluate(
    ctx: &crate::ike::sa::Ctx,
    i: usize,
    op: &MifOp,
    s_i: bool,
    withdrawn: &[u16],
) -> Verdict {
    let c = &ctx.children[i];
    let mif = &ctx.mif;
    let (max_paths, max_if) = (mif_max_paths(mif), mif_max_interfaces(mif));
    let peer = mif_peer_table(mif);
    let ours = mif_our_table(mif);
    let Some(m) = c.mif.as_ref() else {
        return Verdict {
            status: MifStatus::NotAllowed,
            set: None,
            paths: 1,
        };
    };
    let (s, r) = (side(m, s_i), side(m, !s_i));
    let count =
        |set: &[(u16, MifRole)]| pair_count(set, r, |id| addr_in(peer, id), |id| addr_in(ours, id));
    let capped = |n: usize| u8::try_from(n.min(max_paths)).unwrap_or(u8::MAX);
    let now = capped(count(s));
    let verdict = |status, set| Verdict {
        status,
        set,
        paths: now,
    };
    if let MifOp::RemoveInterface { id } = op {
        if withdrawn.contains(id) {
            // Gone already (the list took it out): say whether the child had it.
            let had = s.iter().any(|&(x, _)| x == *id);
            let status = if had {
                MifStatus::Applied
            } else {
                MifStatus::NoChange
            };
            return verdict(status, None);
        }
    } else if !mif_accepts(ctx, &c.name) {
        return verdict(MifStatus::NotAllowed, None);
    }
    let probe = match op {
        MifOp::Check { id } => MifOp::AddInterface {
            id: *id,
            role: MifRole::Active,
        },
        other => other.clone(),
    };
    let Some(new) = apply_op(s, &probe) else {
        return verdict(MifStatus::NoChange, None);
    };
    for j in joining(op)
        .into_iter()
        .filter(|j| !s.iter().any(|&(x, _)| x == *j))
    {
        let Some(a) = addr_in(peer, j) else {
            return verdict(MifStatus::NotAllowed, None);
        };
        let family = r
            .iter()
            .filter_map(|&(x, _)| addr_in(ours, x))
            .any(|b| b.is_ipv4() == a.is_ipv4());
        if !family {
            return verdict(MifStatus::AddressFamily, None);
        }
    }
    let n = count(&new);
    if new.len() > max_if || n > max_paths {
        return verdict(MifStatus::Limit, None);
    }
    if n == 0 {
        return verdict(MifStatus::LastPath, None);
    }
    if c.mode == Mode::Transport {
        // PROTOCOL 6.5: the peer's selectors follow its outer addresses.
        let ts = moved_selectors(&c.remote_ts, (s, &new), |id| addr_in(peer, id));
        let allowed = &ctx.cfg.child_named(&c.name).remote_ts;
        if !ts.iter().all(|t| is_subset(t, allowed)) {
            return verdict(MifStatus::OutsideSpd, None);
        }
    }
    let set = (!matches!(op, MifOp::Check { .. })).then_some(new);
    Verdict {
        status: MifStatus::Applied,
        set,
        paths: capped(n),
    }
}

/// Every child's side `s_i` keeps only the interfaces `keep` holds for (`local`: the
/// side is ours; `addr` finds that side's interface addresses).
fn withdraw(
    ctx: &mut crate::ike::sa::Ctx,
    s_i: bool,
    local: bool,
    keep: impl Fn(u16) -> bool,
    addr: impl Fn(u16) -> Option<IpAddr> + Copy,
) {
    for i in 0..ctx.children.len() {
        let Some(s) = ctx.children[i].mif.as_ref().map(|m| side(m, s_i).clone()) else {
            continue;
        };
        let kept: Set = s.iter().copied().filter(|&(id, _)| keep(id)).collect();
        if kept != s {
            set_side(ctx, i, s_i, kept, local, addr);
        }
    }
}

/// The full path lists of every child with MIF state, by inbound SPI.
fn all_paths(ctx: &crate::ike::sa::Ctx) -> Vec<(u32, Vec<crate::ike::sa::MifPath>)> {
    ctx.children
        .iter()
        .filter_map(|c| Some((c.spi_in, mif_child_paths(ctx, c)?)))
        .collect()
}

/// The children whose paths (or transport-mode selectors) changed from `before`, with
/// their new lists; `hard`/`soft` say how the new paths take over.
fn changes(
    ctx: &crate::ike::sa::Ctx,
    before: &[(u32, Vec<crate::ike::sa::MifPath>)],
    ts_before: &[(u32, Vec<TrafficSelector>, Vec<TrafficSelector>)],
    op: Option<&MifOp>,
) -> Vec<MifChildChange> {
    let mut out = Vec::new();
    for (spi, paths) in all_paths(ctx) {
        let old = before
            .iter()
            .find(|(s, _)| *s == spi)
            .map(|(_, p)| p.as_slice())
            .unwrap_or(&[]);
        let Some(c) = ctx.children.iter().find(|c| c.spi_in == spi) else {
            continue;
        };
        let ts_changed = ts_before
            .iter()
            .find(|(s, _, _)| *s == spi)
            .is_some_and(|(_, l, r)| *l != c.local_ts || *r != c.remote_ts);
        if old == paths.as_slice() && !ts_changed {
            continue;
        }
        let names = |a: &[crate::ike::sa::MifPath], b: &[crate::ike::sa::MifPath]| -> Vec<String> {
            a.iter()
                .filter(|p| !b.iter().any(|q| q.name == p.name))
                .map(|p| p.name.clone())
                .collect()
        };
        let (from, to) = (names(old, &paths), names(&paths, old));
        let transition = match op {
            Some(MifOp::SoftHandover { .. }) if !to.is_empty() => MifTransition::Soft { from, to },
            Some(MifOp::HardHandover { .. }) if !to.is_empty() => MifTransition::Hard { from, to },
            _ => MifTransition::Set,
        };
        let selectors = (c.mode == Mode::Transport && ts_changed)
            .then(|| (c.local_ts.clone(), c.remote_ts.clone()));
        out.push(MifChildChange {
            spi_in: spi,
            paths,
            transition,
            selectors,
        });
    }
    out
}

fn ts_snapshot(
    ctx: &crate::ike::sa::Ctx,
) -> Vec<(u32, Vec<TrafficSelector>, Vec<TrafficSelector>)> {
    ctx.children
        .iter()
        .map(|c| (c.spi_in, c.local_ts.clone(), c.remote_ts.clone()))
        .collect()
}

/// Sets child `i`'s side `s_i` to `new`; transport mode: that side's selectors follow
/// (`local`: the side is ours). `addr` finds that side's interface addresses.
fn set_side(
    ctx: &mut crate::ike::sa::Ctx,
    i: usize,
    s_i: bool,
    new: Set,
    local: bool,
    addr: impl Fn(u16) -> Option<IpAddr>,
) {
    let c = &mut ctx.children[i];
    let Some(m) = c.mif.as_mut() else {
        return;
    };
    let old = std::mem::replace(side_mut(m, s_i), new);
    if c.mode == Mode::Transport {
        let new = side(m, s_i).clone();
        let ts = if local {
            &mut c.local_ts
        } else {
            &mut c.remote_ts
        };
        *ts = moved_selectors(ts, (&old, &new), addr);
    }
}

/// The responder's half and the helpers of both.
struct Mif;

impl Mif {
    /// The responder's answer, or the reason to refuse the whole request (nothing changes).
    fn answer(x: &mut Ex<'_>, p: &[Payload]) -> Result<Vec<Payload>, MifRefusal> {
        let max_if = mif_max_interfaces(&x.ctx.mif);
        if datas(p, NotifyType::MifInterface).count() > max_if {
            return Err(MifRefusal::Limit);
        }
        let m = MifNotifies::collect(p).map_err(|_| MifRefusal::Malformed)?;
        if !m.interfaces.is_empty() && m.list.is_none() {
            return Err(MifRefusal::Malformed);
        }
        let op = match &m.operation {
            Some(d) => Some(MifOperation::refusal(d)?),
            None => None,
        };
        // The sender's table after its list (PROTOCOL 3.2: only a newer one is taken),
        // tried on a copy: a refusal changes nothing.
        let old: Vec<MifInterface> = mif_peer_table(&x.ctx.mif).to_vec();
        let mut trial = x.ctx.mif.clone();
        let withdrawn = match m.list {
            Some(l) => trial
                .apply_peer_list(l.generation, &m.interfaces)?
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let table: Vec<MifInterface> = mif_peer_table(&trial).to_vec();
        if let Some(o) = &op {
            let leaving = leaving(&o.op);
            for id in named(&o.op) {
                let gone = leaving.contains(&id) && withdrawn.contains(&id);
                if !table.iter().any(|t| t.id == id) && !gone {
                    return Err(MifRefusal::UnknownInterface);
                }
            }
        }
        // Accepted: from here on the request is applied.
        let ctx = &mut *x.ctx;
        let before = all_paths(ctx);
        let ts_before = ts_snapshot(ctx);
        let s_i = sender_is_i(ctx.original_initiator, false);
        ctx.mif = trial;
        let mut out = Vec::new();
        if m.list.is_some() {
            out.push(
                MifInterfaceList {
                    generation: mif_peer_generation(&ctx.mif),
                }
                .notify(),
            );
        }
        // Either table knows the address of an interface (a withdrawn one: the old).
        let addr = |id: u16| addr_in(&table, id).or_else(|| addr_in(&old, id));
        let mut results = Vec::new();
        if let Some(o) = &op {
            let apply = !o.dry_run && !matches!(o.op, MifOp::Check { .. });
            let selected = select(&ctx.children, &o.selection, false);
            let mut verdicts = Vec::new();
            for (spi, idx) in selected {
                let Some(i) = idx else {
                    results.push(MifResult {
                        spi,
                        status: MifStatus::UnknownSa,
                        paths: 0,
                    });
                    continue;
                };
                let v = evaluate(ctx, i, &o.op, s_i, &withdrawn);
                results.push(MifResult {
                    spi,
                    status: v.status,
                    paths: v.paths,
                });
                verdicts.push((i, v));
            }
            if apply {
                for (i, v) in verdicts {
                    if let Some(set) = v.set.filter(|_| v.status == MifStatus::Applied) {
                        set_side(ctx, i, s_i, set, false, addr);
                    }
                }
                if o.move_ike {
                    Self::move_ike(ctx, x.from);
                }
            }
            ctx.stats.mif_operations += 1;
        }
        // What the list withdrew leaves every child, after the operation (which may name
        // it: PROTOCOL 3.2, 5.1).
        withdraw(ctx, s_i, false, |id| !withdrawn.contains(&id), addr);
        let children = changes(ctx, &before, &ts_before, op.as_ref().map(|o| &o.op));
        if op.is_some() || !children.is_empty() {
            ctx.events.push_back(Event::MifApplied {
                spis: (x.core.spi_i, x.core.spi_r),
                initiated: false,
                op: op.as_ref().map(|o| o.op.clone()),
                dry_run: op
                    .as_ref()
                    .is_some_and(|o| o.dry_run || matches!(o.op, MifOp::Check { .. })),
                results: results.clone(),
                children,
            });
        }
        out.extend(results.iter().map(MifResult::notify));
        Ok(out)
    }

    /// MOVE_IKE as responder: the IKE SA goes to the pair the request came on, if the
    /// peer's address there is one it announced.
    fn move_ike(ctx: &mut crate::ike::sa::Ctx, from: Option<(SocketAddr, SocketAddr)>) {
        let Some((local, remote)) = from else {
            return;
        };
        let announced = mif_peer_table(&ctx.mif)
            .iter()
            .any(|i| i.addr.ip() == remote.ip());
        if announced && ctx.paths.pair() != (local, remote) {
            let nat = ctx.paths.current().nat;
            ctx.paths.move_to(local, remote, nat);
        }
    }

    /// MOVE_IKE as initiator: the pair our request goes on, from our interface `via` (one
    /// of our announced ones) to the peer's address on the current path.
    fn our_move(ctx: &mut crate::ike::sa::Ctx, via: u16) {
        let Some(a) = addr_in(mif_our_table(&ctx.mif), via) else {
            return;
        };
        let (l, r) = ctx.paths.pair();
        if a.is_ipv4() != r.ip().is_ipv4() || a == l.ip() {
            return;
        }
        let nat = ctx.paths.current().nat;
        ctx.paths.move_to(SocketAddr::new(a, l.port()), r, nat);
    }
}

impl MifRequest {
    /// The request's payloads: our list if the peer holds an older one, the operation.
    fn payloads(&mut self, ctx: &mut crate::ike::sa::Ctx) -> Option<Vec<Payload>> {
        let mif = &ctx.mif;
        let generation = mif_our_generation(mif);
        let mut p = Vec::new();
        self.sent = None;
        // A dry run carries no list: it changes nothing.
        let dry = self
            .op
            .as_ref()
            .is_some_and(|o| o.dry_run || matches!(o.op, MifOp::Check { .. }));
        if mif.list_pending && !dry {
            let table = mif_our_table(mif);
            p.extend(table.iter().map(MifInterface::notify));
            p.push(MifInterfaceList { generation }.notify());
            self.sent = Some((generation, table.to_vec()));
        }
        if let Some(o) = &self.op {
            p.push(o.notify());
        }
        (!p.is_empty()).then_some(p)
    }

    /// The interface our request goes out on with MOVE_IKE: the one handed over to, else
    /// our first active interface the operation leaves in place.
    fn move_via(&self, ctx: &crate::ike::sa::Ctx) -> Option<u16> {
        let o = self.op.as_ref().filter(|o| o.move_ike && !o.dry_run)?;
        match &o.op {
            MifOp::SoftHandover { to, .. } | MifOp::HardHandover { to, .. } => Some(*to),
            MifOp::AddInterface { id, .. } => Some(*id),
            MifOp::RemoveInterface { id } => mif_our_table(&ctx.mif)
                .iter()
                .find(|i| i.id != *id && !i.alternate)
                .map(|i| i.id),
            _ => None,
        }
    }

    /// The response was a refusal (or unusable): reported, nothing changes.
    fn refused(&self, x: &mut Ex<'_>, reason: MifRefusal) {
        x.ctx.stats.mif_refused += 1;
        x.ctx.events.push_back(Event::MifRefused {
            spis: (x.core.spi_i, x.core.spi_r),
            op: self.op.as_ref().map(|o| o.op.clone()),
            reason,
        });
    }
}

impl Exchange for MifRequest {
    fn kind() -> Kind {
        Kind::Other
    }

    /// INFORMATIONAL requests with any MIF notify.
    fn claims(exchange: ExchangeType, p: &[Payload]) -> bool {
        exchange == ExchangeType::Informational
            && MIF_TYPES.iter().any(|t| datas(p, *t).next().is_some())
    }

    fn respond(x: &mut Ex<'_>, p: &[Payload]) -> Vec<Payload> {
        if !mif_in_use(&x.ctx.mif) {
            x.ctx.stats.mif_refused += 1;
            return refused(MifRefusal::NotNegotiated);
        }
        match Mif::answer(x, p) {
            Ok(out) => out,
            Err(r) => {
                x.ctx.stats.mif_refused += 1;
                refused(r)
            }
        }
    }

    fn key(&self) -> Key {
        Key::Other("mif")
    }

    fn exchange_type(&self) -> ExchangeType {
        ExchangeType::Informational
    }

    /// Nothing to send (MIF not in use, or nothing changed): dropped.
    fn build_request(&mut self, x: &mut Ex<'_>) -> Option<Vec<Payload>> {
        if !mif_in_use(&x.ctx.mif) {
            return None;
        }
        let p = self.payloads(x.ctx)?;
        if let Some(via) = self.move_via(x.ctx) {
            Mif::our_move(x.ctx, via);
        }
        Some(p)
    }

    /// Applies what the answer says: our list taken (what it withdrew leaves our sets of
    /// every child), then the operation on each child answered APPLIED or NO_CHANGE (and
    /// its successor); one [`Event::MifApplied`].
    fn process_response(self: Box<Self>, x: &mut Ex<'_>, p: &[Payload]) {
        let m = match MifNotifies::collect(p) {
            Ok(m) if !p.is_empty() => m,
            _ => return self.refused(x, MifRefusal::Malformed),
        };
        if let Some(r) = m.refused {
            return self.refused(x, r);
        }
        let ctx = &mut *x.ctx;
        let before = all_paths(ctx);
        let ts_before = ts_snapshot(ctx);
        let s_i = sender_is_i(ctx.original_initiator, true);
        let ours = mif_our_table(&ctx.mif).to_vec();
        // Our interfaces' addresses: the table, else the paths a gone one had.
        let addr = |id: u16| {
            addr_in(&ours, id).or_else(|| {
                before
                    .iter()
                    .flat_map(|(_, p)| p.iter())
                    .find(|p| p.local_if == id)
                    .map(|p| p.local.ip())
            })
        };
        let taken = match (&self.sent, m.list) {
            (Some((generation, list)), Some(l)) if l.generation >= *generation => {
                Some((*generation, list.clone()))
            }
            _ => None,
        };
        let dry = self
            .op
            .as_ref()
            .is_some_and(|o| o.dry_run || matches!(o.op, MifOp::Check { .. }));
        if let Some(o) = self.op.as_ref().filter(|_| !dry) {
            let mut done: Vec<u32> = Vec::new();
            for r in m.results.iter().filter(|r| r.status.is_applied()) {
                // The child named, and its successor unless the answer names it itself.
                let named = select(&ctx.children, &MifSelection::Spis(vec![r.spi]), true);
                for (spi, idx) in named {
                    let Some(i) = idx else { continue };
                    let own_result = spi != r.spi && m.results.iter().any(|q| q.spi == spi);
                    if own_result || done.contains(&spi) {
                        continue;
                    }
                    done.push(spi);
                    let Some(s) = ctx.children[i].mif.as_ref().map(|m| side(m, s_i).clone()) else {
                        continue;
                    };
                    if let Some(new) = apply_op(&s, &o.op) {
                        set_side(ctx, i, s_i, new, true, addr);
                    }
                }
            }
        }
        // The peer took our list: what it withdrew leaves every child, after the
        // operation, as at the peer.
        if let Some((generation, list)) = taken {
            if generation == ctx.mif.our_generation {
                ctx.mif.list_pending = false;
                ctx.mif.withdrawn_pending.clear();
            }
            let ids: Vec<u16> = list.iter().map(|i| i.id).collect();
            // Changed again since that list was built: the peer holds that one.
            ctx.mif_ops.known = (list != mif_our_table(&ctx.mif)).then_some(list);
            withdraw(ctx, s_i, true, |id| ids.contains(&id), addr);
        }
        let Some(o) = self.op.as_ref() else {
            let children = changes(ctx, &before, &ts_before, None);
            if !children.is_empty() {
                ctx.events.push_back(Event::MifApplied {
                    spis: (x.core.spi_i, x.core.spi_r),
                    initiated: true,
                    op: None,
                    dry_run: false,
                    results: Vec::new(),
                    children,
                });
            }
            return;
        };
        let children = changes(ctx, &before, &ts_before, Some(&o.op));
        ctx.stats.mif_operations += 1;
        ctx.events.push_back(Event::MifApplied {
            spis: (x.core.spi_i, x.core.spi_r),
            initiated: true,
            op: Some(o.op.clone()),
            dry_run: dry,
            results: m.results,
            children,
        });
    }

    /// The IKE SA it went on was deleted before it answered: sent again on the current
    /// one (PROTOCOL 6.4).
    fn requeue(self: Box<Self>) -> Option<Box<dyn Exchange>> {
        Some(self)
    }
}

/// `IkeSa::mif_request`'s checks: the extension in use, every interface named one of ours
/// (a REMOVE may name one already gone that a child still uses), the selection within
/// PROTOCOL 6.6's limits.
pub(crate) fn check_request(
    ctx: &crate::ike::sa::Ctx,
    op: &MifOperation,
) -> Result<(), crate::ike::sa::MifError> {
    use crate::ike::sa::MifError;
    if !mif_in_use(&ctx.mif) {
        return Err(MifError::NotNegotiated);
    }
    let s_i = sender_is_i(ctx.original_initiator, true);
    let ours = mif_our_table(&ctx.mif);
    let in_use = |id: u16| {
        ctx.children
            .iter()
            .filter_map(|c| c.mif.as_ref())
            .any(|m| side(m, s_i).iter().any(|&(x, _)| x == id))
    };
    let leaving = leaving(&op.op);
    for id in named(&op.op) {
        let known = ours.iter().any(|i| i.id == id) || (leaving.contains(&id) && in_use(id));
        if !known {
            return Err(MifError::UnknownInterface);
        }
    }
    if let MifOp::SetAlternates { ids } = &op.op {
        if ids.len() > mif_max_interfaces(&ctx.mif) {
            return Err(MifError::Limit);
        }
    }
    match &op.selection {
        MifSelection::Spis(s) if s.is_empty() || s.len() > MAX_SPIS => Err(MifError::Limit),
        MifSelection::Ts { sender, receiver }
            if sender.len() > MAX_SELECTORS || receiver.len() > MAX_SELECTORS =>
        {
            Err(MifError::Limit)
        }
        _ => Ok(()),
    }
}

// The MIF state of `ike/sa/mif.rs`, as this exchange uses it.

fn mif_in_use(m: &MifState) -> bool {
    m.in_use
}

fn mif_max_paths(m: &MifState) -> usize {
    m.max_paths()
}

/// How many interfaces of the peer we keep (and so in one side's set of a child).
fn mif_max_interfaces(m: &MifState) -> usize {
    usize::from(m.our_max_interfaces)
}

fn mif_peer_table(m: &MifState) -> &[MifInterface] {
    &m.peer
}

fn mif_our_table(m: &MifState) -> &[MifInterface] {
    m.announced()
}

fn mif_peer_generation(m: &MifState) -> u32 {
    m.peer_generation
}

fn mif_our_generation(m: &MifState) -> u32 {
    m.our_generation
}

/// A child's paths over our table as the peer holds it ([`MifOpsState::known`]): what both
/// peers compute.
fn mif_child_paths(
    ctx: &crate::ike::sa::Ctx,
    c: &crate::ike::sa::child::Child,
) -> Option<Vec<crate::ike::sa::MifPath>> {
    let st = c.mif.as_ref()?;
    let ours = ctx
        .mif_ops
        .known
        .as_deref()
        .unwrap_or(mif_our_table(&ctx.mif));
    let peer = mif_peer_table(&ctx.mif);
    let oi = ctx.original_initiator;
    let (it, rt) = if oi { (ours, peer) } else { (peer, ours) };
    Some(crate::ike::sa::mif::paths(
        &st.initiator_set,
        &st.responder_set,
        it,
        rt,
        oi,
        mif_max_paths(&ctx.mif),
    ))
}

/// Whether child configuration `name` lets the peer change its interfaces
/// (`mif_accept`, default true).
fn mif_accepts(ctx: &crate::ike::sa::Ctx, name: &str) -> bool {
    ctx.cfg.child_named(name).mif_accept
}

/// Our interface table went from `before` to the one in the MIF state (the daemon's
/// monitor, `IkeSa::set_local_interfaces`): queues ONE request with the new list and the
/// operation the configuration chooses (`mif_on_new`, `mif_prefer`), and one more per
/// further interface lost or gained at the same time.
///
/// * an interface lost: REMOVE_INTERFACE of it for every child (with MOVE_IKE, from
///   another interface, if the IKE SA's path went over it); lost while one is gained
///   with `mif_on_new = "add"`: HARD_HANDOVER from the lost one to the new one;
/// * an interface gained: ADD_INTERFACE, active (`"add"`, or standby if it is announced
///   as an alternate) or standby (`"alternate"`), or nothing but the list (`"ignore"`);
///   with `mif_prefer`, the most preferred interface (lowest priority) coming back takes
///   the traffic back: SOFT_HANDOVER from the next best active one to it;
/// * anything else (a priority, a name): the list alone.
pub(crate) fn local_changed(
    ctx: &mut crate::ike::sa::Ctx,
    before: &[MifInterface],
) -> Vec<MifRequest> {
    use crate::ike::config::MifOnNew;
    if !mif_in_use(&ctx.mif) {
        return Vec::new();
    }
    let now = mif_our_table(&ctx.mif).to_vec();
    if ctx.mif_ops.known.is_none() {
        ctx.mif_ops.known = Some(before.to_vec());
    }
    let lost: Vec<&MifInterface> = before
        .iter()
        .filter(|b| !now.iter().any(|n| n.id == b.id))
        .collect();
    let gained: Vec<&MifInterface> = now
        .iter()
        .filter(|n| !before.iter().any(|b| b.id == n.id))
        .collect();
    let on_new = ctx.cfg.mif_on_new;
    let all = |op: MifOp, move_ike: bool| MifOperation {
        op,
        dry_run: false,
        move_ike,
        selection: MifSelection::All,
    };
    let ike_local = ctx.paths.pair().0.ip();
    let mut ops: Vec<MifOperation> = Vec::new();
    let mut gained_left: Vec<&MifInterface> = gained.clone();
    for (k, l) in lost.iter().enumerate() {
        let on_ike = l.addr.ip() == ike_local;
        if k == 0 && on_new == MifOnNew::Add {
            if let Some(pos) = gained_left.iter().position(|g| !g.alternate) {
                let g = gained_left.remove(pos);
                ops.push(all(
                    MifOp::HardHandover {
                        from: l.id,
                        to: g.id,
                    },
                    on_ike,
                ));
                continue;
            }
        }
        ops.push(all(MifOp::RemoveInterface { id: l.id }, on_ike));
    }
    let best = now
        .iter()
        .filter(|i| !i.alternate)
        .min_by_key(|i| (i.priority, i.id));
    for g in gained_left {
        let preferred = ctx.cfg.mif_prefer
            && !g.alternate
            && best.is_some_and(|b| b.id == g.id)
            && now
                .iter()
                .all(|i| i.id == g.id || i.alternate || i.priority > g.priority);
        let next = now
            .iter()
            .filter(|i| i.id != g.id && !i.alternate)
            .min_by_key(|i| (i.priority, i.id));
        match (preferred, next) {
            (true, Some(n)) => ops.push(all(
                MifOp::SoftHandover {
                    from: n.id,
                    to: g.id,
                },
                false,
            )),
            _ => {
                let role = match on_new {
                    MifOnNew::Ignore => continue,
                    MifOnNew::Alternate => MifRole::Standby,
                    MifOnNew::Add if g.alternate => MifRole::Standby,
                    MifOnNew::Add => MifRole::Active,
                };
                ops.push(all(MifOp::AddInterface { id: g.id, role }, false));
            }
        }
    }
    if ops.is_empty() {
        return if now != before {
            vec![MifRequest::new(None)]
        } else {
            Vec::new()
        };
    }
    ops.into_iter().map(|o| MifRequest::new(Some(o))).collect()
}

/// Tests only: a child's path names.
#[cfg(test)]
pub(crate) fn test_paths(
    ctx: &crate::ike::sa::Ctx,
    c: &crate::ike::sa::child::Child,
) -> Option<Vec<String>> {
    Some(
        mif_child_paths(ctx, c)?
            .into_iter()
            .map(|p| p.name)
            .collect(),
    )
}
