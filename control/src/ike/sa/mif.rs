//! The multi-interface extension's state on one IKE SA (docs/PROTOCOL.md sections 2 to 4):
//! [`MifState`], our interface table (IDs assigned stably per (name, address), never
//! reused), the peer's table from its lists, the negotiated limits and whether MIF is in
//! use; [`MifChildState`], the two interface sets of one child SA; and [`paths`], the pure
//! path computation of PROTOCOL 4.2 both peers run.
//!
//! Nothing here sends anything: the IKE_AUTH and CREATE_CHILD_SA code put the notifies
//! [`MifState`] builds in their messages, and the INFORMATIONAL exchange
//! (`exchange/mif.rs`) calls [`MifState::apply_peer_list`] and the [`MifChildState`]
//! helpers.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use mifsec_dataplane::sa_table::{Policy, Role};

use std::time::Instant;

use crate::ike::sa::child::Child;
use crate::ike::sa::ctx::Ctx;
use crate::ike::sa::{ChildSa, Event, MifChildPaths, MifPath};
use crate::wire::mif::{MIF_MAX_INTERFACES, MIF_MAX_PATHS, MIF_VERSION};
use crate::wire::{
    MifChild, MifInterface, MifInterfaceList, MifNotifies, MifRefusal, MifRole, MifSupported,
    Payload,
};

/// One of our interfaces, as the daemon gives it ([`crate::ike::Endpoint::set_local_interfaces`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LocalInterface {
    /// The `[interfaces.NAME]` name (a label; at most 32 octets go on the wire).
    pub name: String,
    /// Its address.
    pub addr: IpAddr,
    /// The UDP port ESP-in-UDP and IKE reach us on there (4500).
    pub port: u16,
    /// Lower is preferred (PROTOCOL 4.2's order).
    pub priority: u8,
    /// Announced for use only as an alternate.
    pub alternate: bool,
}

/// One side's interface set of a child SA: (interface ID, role), in preference order.
pub(crate) type MifSet = Vec<(u16, MifRole)>;

/// How many withdrawn IDs of the peer are remembered to refuse their reuse.
const WITHDRAWN_MEMORY: usize = 1024;

/// The extension's state on one IKE SA; moves to the IKE SA that replaces it by a rekey
/// and is cloned into a clone (RFC 7791).
#[derive(Debug, Clone)]
pub(crate) struct MifState {
    /// Our configuration has `mif = true`.
    pub(crate) enabled: bool,
    /// Both sides sent MIF_SUPPORTED version 1 in IKE_AUTH.
    pub(crate) in_use: bool,
    /// Our `mif_max_interfaces`: how many of the peer's interfaces we keep.
    pub(crate) our_max_interfaces: u16,
    /// Our `mif_max_paths`.
    pub(crate) our_max_paths: u16,
    /// The peer's MIF_SUPPORTED figures (once received).
    pub(crate) peer_max_interfaces: u16,
    pub(crate) peer_max_paths: u16,
    /// Our interfaces as announced (or to be announced), in the order given.
    pub(crate) ours: Vec<MifInterface>,
    /// The next ID to give a new (name, address) of ours; IDs are never reused.
    next_id: u16,
    /// The generation of `ours` (1 for the list in IKE_AUTH).
    pub(crate) our_generation: u32,
    /// Our table changed since the list was last sent and MIF is in use: the
    /// INFORMATIONAL exchange (mifops) sends the list and clears this.
    pub(crate) list_pending: bool,
    /// Our IDs withdrawn since the list was last sent (for the REMOVE sent with it).
    pub(crate) withdrawn_pending: Vec<u16>,
    /// The peer's interfaces, from the last list accepted.
    pub(crate) peer: Vec<MifInterface>,
    /// The generation of the peer's last accepted list (0: none yet).
    pub(crate) peer_generation: u32,
    /// The peer's IDs withdrawn so far (the last [`WITHDRAWN_MEMORY`]), never to return.
    peer_withdrawn: BTreeSet<u16>,
    /// The list our IKE_AUTH message carried (generation 1), to tell whether our table
    /// changed before the extension was in use.
    sent_in_auth: Option<Vec<MifInterface>>,
}

impl MifState {
    /// The state of a new IKE SA of a connection with `mif = enabled` and those limits.
    pub(crate) fn new(enabled: bool, max_interfaces: u16, max_paths: u16) -> MifState {
        MifState {
            enabled,
            in_use: false,
            our_max_interfaces: max_interfaces.clamp(1, MIF_MAX_INTERFACES),
            our_max_paths: max_paths.clamp(1, MIF_MAX_PATHS),
            peer_max_interfaces: 0,
            peer_max_paths: 0,
            ours: Vec::new(),
            next_id: 1,
            our_generation: 1,
            list_pending: false,
            withdrawn_pending: Vec::new(),
            peer: Vec::new(),
            peer_generation: 0,
            peer_withdrawn: BTreeSet::new(),
            sent_in_auth: None,
        }
    }

    /// Our MIF_SUPPORTED.
    pub(crate) fn supported(&self) -> MifSupported {
        MifSupported {
            version: MIF_VERSION,
            max_interfaces: self.our_max_interfaces,
            max_paths: self.our_max_paths,
        }
    }

    /// How many of our interfaces we may announce: the smaller of our and the peer's
    /// figure (ours alone before the peer's is known).
    pub(crate) fn max_announced(&self) -> usize {
        let peer = if self.peer_max_interfaces == 0 && !self.in_use {
            self.our_max_interfaces
        } else {
            self.peer_max_interfaces
        };
        usize::from(self.our_max_interfaces.min(peer))
    }

    /// Paths per child SA: the smaller of both figures.
    pub(crate) fn max_paths(&self) -> usize {
        let peer = if self.in_use {
            self.peer_max_paths
        } else {
            self.our_max_paths
        };
        usize::from(self.our_max_paths.min(peer))
    }

    /// Takes the peer's MIF_SUPPORTED (`None`: it sent none); returns whether MIF is now in
    /// use (both sent version 1 and ours is enabled).
    pub(crate) fn negotiate(&mut self, peer: Option<MifSupported>) -> bool {
        self.in_use = false;
        if let Some(p) = peer.filter(|p| self.enabled && p.version == MIF_VERSION) {
            self.peer_max_interfaces = p.max_interfaces.min(MIF_MAX_INTERFACES);
            self.peer_max_paths = p.max_paths.min(MIF_MAX_PATHS);
            self.in_use = true;
        }
        if !self.in_use {
            self.peer.clear();
        } else if let Some(sent) = self.sent_in_auth.take()
            && self.announced() != sent.as_slice()
        {
            // Our table changed after the IKE_AUTH list went out: the next list is due.
            self.our_generation = self.our_generation.wrapping_add(1).max(1);
            self.list_pending = true;
            for old in &sent {
                if !self.ours.iter().any(|n| n.id == old.id) {
                    self.withdrawn_pending.push(old.id);
                }
            }
        }
        self.in_use
    }

    /// Our interfaces are now `list` (the daemon's, in its order): a (name, address, port)
    /// already in the table keeps its ID (priority and flag updated), a new one gets the
    /// next ID, a missing one is withdrawn; duplicates are dropped. Returns whether the
    /// table changed; if it did and MIF is in use, the generation counts up and the list
    /// is due ([`Self::list_pending`]).
    pub(crate) fn set_local(&mut self, list: &[LocalInterface]) -> bool {
        let mut next: Vec<MifInterface> = Vec::new();
        for l in list {
            let addr = SocketAddr::new(l.addr, l.port);
            if next.iter().any(|i| i.addr == addr && i.name == l.name) {
                continue;
            }
            if next.len() >= usize::from(MIF_MAX_INTERFACES) {
                break;
            }
            let id = match self
                .ours
                .iter()
                .find(|i| i.addr == addr && i.name == l.name)
            {
                Some(i) => i.id,
                None if self.next_id == 0 => continue, // 65535 IDs used up
                None => {
                    let id = self.next_id;
                    self.next_id = self.next_id.wrapping_add(1);
                    id
                }
            };
            next.push(MifInterface {
                id,
                alternate: l.alternate,
                priority: l.priority,
                addr,
                name: l.name.clone(),
            });
        }
        if next == self.ours {
            return false;
        }
        for old in &self.ours {
            if !next.iter().any(|n| n.id == old.id) && !self.withdrawn_pending.contains(&old.id) {
                self.withdrawn_pending.push(old.id);
            }
        }
        self.ours = next;
        if self.in_use {
            self.our_generation = self.our_generation.wrapping_add(1).max(1);
            self.list_pending = true;
        } else {
            self.withdrawn_pending.clear();
        }
        true
    }

    /// The interfaces we announce (at most [`Self::max_announced`] of `ours`).
    pub(crate) fn announced(&self) -> &[MifInterface] {
        &self.ours[..self.ours.len().min(self.max_announced())]
    }

    /// Our list as notifies: MIF_INTERFACE per announced interface, then
    /// MIF_INTERFACE_LIST with our generation.
    pub(crate) fn list_notifies(&self) -> Vec<Payload> {
        let mut v: Vec<Payload> = self.announced().iter().map(MifInterface::notify).collect();
        v.push(
            MifInterfaceList {
                generation: self.our_generation,
            }
            .notify(),
        );
        v
    }

    /// The peer's list of generation `generation`: `Ok(None)` when not newer than the
    /// last accepted one (ignored, PROTOCOL 3.2), `Ok(Some(withdrawn))` with the peer's IDs
    /// it no longer lists once taken. Refused (nothing changed) with LIMIT beyond our
    /// `mif_max_interfaces`, MALFORMED when an ID appears twice, an ID of the table comes
    /// with another address, or a withdrawn ID comes back.
    pub(crate) fn apply_peer_list(
        &mut self,
        generation: u32,
        list: &[MifInterface],
    ) -> Result<Option<Vec<u16>>, MifRefusal> {
        if list.len() > usize::from(self.our_max_interfaces) {
            return Err(MifRefusal::Limit);
        }
        for (n, i) in list.iter().enumerate() {
            if i.id == 0 || list[..n].iter().any(|o| o.id == i.id) {
                return Err(MifRefusal::Malformed);
            }
            if self.peer_withdrawn.contains(&i.id) {
                return Err(MifRefusal::Malformed);
            }
            if self.peer.iter().any(|o| o.id == i.id && o.addr != i.addr) {
                return Err(MifRefusal::Malformed);
            }
        }
        if generation <= self.peer_generation {
            return Ok(None);
        }
        let withdrawn: Vec<u16> = self
            .peer
            .iter()
            .map(|i| i.id)
            .filter(|id| !list.iter().any(|n| n.id == *id))
            .collect();
        for id in &withdrawn {
            if self.peer_withdrawn.len() >= WITHDRAWN_MEMORY
                && let Some(first) = self.peer_withdrawn.first().copied()
            {
                self.peer_withdrawn.remove(&first);
            }
            self.peer_withdrawn.insert(*id);
        }
        self.peer = list.to_vec();
        self.peer_generation = generation;
        Ok(Some(withdrawn))
    }

    /// Our interface `id`.
    #[allow(dead_code, reason = "for the INFORMATIONAL exchange, exchange/mif.rs")]
    pub(crate) fn our(&self, id: u16) -> Option<&MifInterface> {
        self.ours.iter().find(|i| i.id == id)
    }

    /// The peer's interface `id`.
    #[allow(dead_code, reason = "for the INFORMATIONAL exchange, exchange/mif.rs")]
    pub(crate) fn peer_iface(&self, id: u16) -> Option<&MifInterface> {
        self.peer.iter().find(|i| i.id == id)
    }

    /// The MIF_CHILD we send for a child of policy `policy` that may use our interfaces
    /// named `names` (empty: all; none of them up: all as well).
    pub(crate) fn our_child(&self, policy: Policy, names: &[String]) -> MifChild {
        let announced = self.announced();
        let mut interfaces = Vec::new();
        for n in names {
            for i in announced.iter().filter(|i| &i.name == n) {
                if !interfaces.contains(&i.id) {
                    interfaces.push(i.id);
                }
            }
        }
        MifChild {
            policy,
            reorder: policy == Policy::Aggregate,
            interfaces,
        }
    }

    /// A side's set from its MIF_CHILD against that side's `table`: the listed IDs it
    /// announced, in order (unknown ones ignored), or all of them for an empty list;
    /// alternates as standby.
    pub(crate) fn resolve_set(child: &MifChild, table: &[MifInterface]) -> Vec<(u16, MifRole)> {
        let role = |i: &MifInterface| {
            if i.alternate {
                MifRole::Standby
            } else {
                MifRole::Active
            }
        };
        if child.interfaces.is_empty() {
            return table.iter().map(|i| (i.id, role(i))).collect();
        }
        child
            .interfaces
            .iter()
            .filter_map(|id| table.iter().find(|i| i.id == *id))
            .map(|i| (i.id, role(i)))
            .collect()
    }

    /// The child state of a new child SA from our MIF_CHILD and the peer's
    /// (`original_initiator`: we are PROTOCOL 4.2's initiator).
    pub(crate) fn child_state(
        &self,
        original_initiator: bool,
        ours: &MifChild,
        theirs: &MifChild,
    ) -> MifChildState {
        let our_set = Self::resolve_set(ours, self.announced());
        let peer_set = Self::resolve_set(theirs, &self.peer);
        let (initiator_set, responder_set) = if original_initiator {
            (our_set, peer_set)
        } else {
            (peer_set, our_set)
        };
        MifChildState {
            initiator_set,
            responder_set,
            our_policy: ours.policy,
            peer_policy: theirs.policy,
            peer_reorder: theirs.reorder,
        }
    }

    /// A child's paths as the daemon installs them (`None`: no pair of the same family,
    /// so the child has the IKE SA's single path, as without MIF; PROTOCOL 4.2).
    pub(crate) fn child_paths(
        &self,
        original_initiator: bool,
        st: &MifChildState,
    ) -> Option<MifChildPaths> {
        let (i_table, r_table) = if original_initiator {
            (&self.ours[..], &self.peer[..])
        } else {
            (&self.peer[..], &self.ours[..])
        };
        let list = paths(
            &st.initiator_set,
            &st.responder_set,
            i_table,
            r_table,
            original_initiator,
            self.max_paths(),
        );
        if list.is_empty() {
            return None;
        }
        Some(MifChildPaths {
            policy: st.our_policy,
            reorder: st.peer_policy == Policy::Aggregate,
            paths: list,
        })
    }
}

/// The two interface sets of one child SA and both sides' policies (PROTOCOL 4.1, 4.2);
/// kept with each tracked child, and inherited by its rekeyed successor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MifChildState {
    /// PROTOCOL 4.2's I: the original initiator's interfaces, in its preference order.
    pub initiator_set: Vec<(u16, MifRole)>,
    /// R: the original responder's.
    pub responder_set: Vec<(u16, MifRole)>,
    /// Our outbound scheduling.
    pub our_policy: Policy,
    /// The peer's (its MIF_CHILD).
    pub peer_policy: Policy,
    /// The peer's REORDER flag.
    pub peer_reorder: bool,
}

impl MifChildState {
    /// Our set (`original_initiator`: we are the initiator) and the peer's, mutably.
    pub(crate) fn sets_mut(&mut self, original_initiator: bool) -> (&mut MifSet, &mut MifSet) {
        if original_initiator {
            (&mut self.initiator_set, &mut self.responder_set)
        } else {
            (&mut self.responder_set, &mut self.initiator_set)
        }
    }

    /// Removes interfaces `ids` from one side's set (`ours`: our side); returns whether
    /// the set changed. A withdrawal by a list is this for every child SA.
    #[allow(dead_code, reason = "for the INFORMATIONAL exchange, exchange/mif.rs")]
    pub(crate) fn withdraw(&mut self, original_initiator: bool, ours: bool, ids: &[u16]) -> bool {
        let (o, p) = self.sets_mut(original_initiator);
        let set = if ours { o } else { p };
        let before = set.len();
        set.retain(|(id, _)| !ids.contains(id));
        set.len() != before
    }

    /// A peer's new MIF_CHILD in a rekey replaces its set (resolved against its table);
    /// ours likewise. Without one, the sets stay (PROTOCOL 4.1).
    pub(crate) fn take_rekey(
        &mut self,
        mif: &MifState,
        original_initiator: bool,
        ours: Option<&MifChild>,
        theirs: Option<&MifChild>,
    ) {
        let (o, p) = self.sets_mut(original_initiator);
        if let Some(c) = ours {
            *o = MifState::resolve_set(c, mif.announced());
        }
        if let Some(c) = theirs {
            *p = MifState::resolve_set(c, &mif.peer);
        }
        if let Some(c) = ours {
            self.our_policy = c.policy;
        }
        if let Some(c) = theirs {
            self.peer_policy = c.policy;
            self.peer_reorder = c.reorder;
        }
    }
}

/// The paths of a child SA (PROTOCOL 4.2): every pair of `i_set` x `r_set` whose
/// interfaces are both in their tables and of one address family, named `i<i>r<r>`,
/// ordered by (both active first, priority sum, position in I, position in R), the first
/// `max_paths` kept. `we_initiate` picks which end is local. Pure: both peers get the same
/// list, each from its own side.
pub fn paths(
    i_set: &[(u16, MifRole)],
    r_set: &[(u16, MifRole)],
    i_table: &[MifInterface],
    r_table: &[MifInterface],
    we_initiate: bool,
    max_paths: usize,
) -> Vec<MifPath> {
    let find = |t: &[MifInterface], id: u16| t.iter().find(|i| i.id == id).cloned();
    let mut pairs = Vec::new();
    let mut seen = Vec::new();
    for (pi, (iid, irole)) in i_set.iter().enumerate() {
        let Some(ia) = find(i_table, *iid) else {
            continue;
        };
        for (pr, (rid, rrole)) in r_set.iter().enumerate() {
            let Some(ra) = find(r_table, *rid) else {
                continue;
            };
            if ia.addr.is_ipv4() != ra.addr.is_ipv4() || seen.contains(&(*iid, *rid)) {
                continue;
            }
            seen.push((*iid, *rid));
            let active = *irole == MifRole::Active && *rrole == MifRole::Active;
            let key = (
                !active,
                u16::from(ia.priority) + u16::from(ra.priority),
                pi,
                pr,
            );
            pairs.push((key, ia.clone(), ra, active));
        }
    }
    pairs.sort_by_key(|p| p.0);
    pairs.truncate(max_paths);
    pairs
        .into_iter()
        .map(|(_, i, r, active)| {
            let (l, rm) = if we_initiate { (&i, &r) } else { (&r, &i) };
            MifPath {
                name: format!("i{}r{}", i.id, r.id),
                local: l.addr,
                remote: rm.addr,
                role: if active { Role::Active } else { Role::Standby },
                local_if: l.id,
                remote_if: rm.id,
                local_name: l.name.clone(),
            }
        })
        .collect()
}

/// The IKE SA's side of the extension: what IKE_AUTH and CREATE_CHILD_SA carry.
impl Ctx {
    /// IKE_AUTH (our request; our response to a peer that sent MIF_SUPPORTED, after
    /// [`Ctx::mif_take_auth`]): MIF_SUPPORTED, our list (generation 1) and MIF_CHILD for
    /// the first child (`child`: its configuration's name; `None`: no child). Nothing
    /// with `mif = false`.
    pub(in crate::ike::sa) fn mif_auth_payloads(&mut self, child: Option<&str>) -> Vec<Payload> {
        if !self.cfg.mif {
            return Vec::new();
        }
        let mut v = vec![self.mif.supported().notify()];
        v.extend(self.mif.list_notifies());
        self.mif.sent_in_auth = Some(self.mif.announced().to_vec());
        if let Some(name) = child {
            v.push(self.mif_our_child(name).notify());
        }
        v
    }

    /// Our MIF_CHILD for a child of configuration `name`. On a clone (RFC 7791) a child
    /// whose configuration names no `interfaces` is confined to the interface the clone is
    /// on, the seed's appendix-B layout (one IKE SA per interface, each with its own
    /// children): its MIF_CHILD lists that interface alone.
    pub(in crate::ike::sa) fn mif_our_child(&self, name: &str) -> MifChild {
        let c = self.cfg.child_named(name);
        let mut ours = self.mif.our_child(c.policy, &c.interfaces);
        if self.cloned_from.is_some() && c.interfaces.is_empty() {
            let local = self.paths.pair().0;
            if let Some(i) = self
                .mif
                .announced()
                .iter()
                .find(|i| i.addr.ip() == local.ip())
            {
                ours.interfaces = vec![i.id];
            }
        }
        ours
    }

    /// The peer's IKE_AUTH message: the extension is in use when it sent MIF_SUPPORTED
    /// version 1 (and ours is on); its list is taken (at most our `mif_max_interfaces`).
    /// Malformed MIF notifies (counted) leave the extension off; they never fail the IKE SA.
    pub(in crate::ike::sa) fn mif_take_auth(&mut self, inner: &[Payload]) -> bool {
        let m = match MifNotifies::collect(inner) {
            Ok(m) => m,
            Err(_) => {
                self.stats.malformed += 1;
                self.mif.negotiate(None);
                return false;
            }
        };
        if !self.mif.negotiate(m.supported) {
            return false;
        }
        if let Some(l) = m.list {
            let n = m
                .interfaces
                .len()
                .min(usize::from(self.mif.our_max_interfaces));
            if self
                .mif
                .apply_peer_list(l.generation, &m.interfaces[..n])
                .is_err()
            {
                self.stats.malformed += 1;
            }
        }
        true
    }

    /// Our MIF_CHILD as a payload for a new child of configuration `name`, when the
    /// extension is in use (never to a peer without it).
    pub(in crate::ike::sa) fn mif_child_payload(&self, name: &str) -> Option<Payload> {
        self.mif.in_use.then(|| self.mif_our_child(name).notify())
    }

    /// A new child SA (not a rekey) is up: with the extension in use its sets come from our
    /// MIF_CHILD and the peer's in `peer` (none, or malformed: all its interfaces), and
    /// `ChildSa::mif` gets its paths. Tracks it and reports it.
    pub(in crate::ike::sa) fn establish_child(
        &mut self,
        now: Instant,
        mut c: ChildSa,
        peer: &[Payload],
    ) {
        let st = self.mif.in_use.then(|| {
            let ours = self.mif_our_child(&c.name);
            let theirs = self.mif_peer_child(peer).unwrap_or(MifChild {
                policy: Policy::Failover,
                reorder: false,
                interfaces: Vec::new(),
            });
            self.mif
                .child_state(self.original_initiator, &ours, &theirs)
        });
        c.mif = st
            .as_ref()
            .and_then(|st| self.mif.child_paths(self.original_initiator, st));
        self.track_child(now, &c);
        if let Some(t) = self.children.last_mut() {
            t.mif = st;
        }
        self.events.push_back(Event::ChildSaEstablished(c));
    }

    /// The peer's MIF_CHILD in `p`, if any and well formed (a malformed one is counted).
    fn mif_peer_child(&mut self, p: &[Payload]) -> Option<MifChild> {
        match MifNotifies::collect(p) {
            Ok(m) => m.child,
            Err(_) => {
                self.stats.malformed += 1;
                None
            }
        }
    }

    /// A rekey's new child SA, replacing tracked child `old` (an index): it inherits the
    /// old child's sets (PROTOCOL 4.1), the peer's MIF_CHILD in `peer` replacing its own;
    /// `ChildSa::mif` gets its paths. Called before `track_child`; returns the state to
    /// keep with it ([`Ctx::set_child_mif`]).
    pub(in crate::ike::sa) fn mif_rekeyed(
        &mut self,
        old: usize,
        new: &mut ChildSa,
        peer: &[Payload],
    ) -> Option<MifChildState> {
        if !self.mif.in_use {
            return None;
        }
        let theirs = self.mif_peer_child(peer);
        let mut st = self.children.get(old)?.mif.clone()?;
        st.take_rekey(&self.mif, self.original_initiator, None, theirs.as_ref());
        new.mif = self.mif.child_paths(self.original_initiator, &st);
        Some(st)
    }

    /// Keeps `st` with tracked child `spi_in`.
    pub(in crate::ike::sa) fn set_child_mif(&mut self, spi_in: u32, st: Option<MifChildState>) {
        if let Some(c) = self.children.iter_mut().find(|c| c.spi_in == spi_in) {
            c.mif = st;
        }
    }

    /// Whether child `c` runs on MIF paths (MOBIKE then moves the IKE SA only, PROTOCOL
    /// 6.4).
    pub(in crate::ike::sa) fn child_on_mif(&self, c: &Child) -> bool {
        self.mif.in_use
            && c.mif
                .as_ref()
                .is_some_and(|st| self.mif.child_paths(self.original_initiator, st).is_some())
    }
}

#[cfg(test)]
mod tests;
