//! The engine's SA table as it stands now ([`TableState`]: interfaces, SA pairs, paths,
//! pending soft handovers), changed by [`Engine`](super::Engine)'s methods and turned into a
//! new [`SaTable`] that is published with one swap after every change.
//!
//! Live objects (the SAs with their counters and replay windows, the path states, the
//! sockets) are created once and shared by every snapshot, so rebuilding the table is cheap
//! and never resets anything.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::{EngineConfig, EngineError, InterfaceConfig, PathSpec, SaSpec, Shared, TableOp};
use crate::aead::{Backend, Cipher};
use crate::esp::{InboundSa, OutboundSa, SaConfig};
use crate::event::{Event, EventSender, Usage};
use crate::marks::{self, Direction, Tracked};
use crate::path::PathState;
use crate::reorder::Reorder;
use crate::sa_table::{
    InboundEntry, OutboundEntry, PathEntry, Policy, Prefix, Role, SaTable, aggregate_schedule,
};
use crate::udp::{OuterSocket, SocketConfig};

fn no_sa(name: &str) -> EngineError {
    EngineError::NoSa {
        name: name.to_owned(),
    }
}

fn no_path(sa: &str, path: &str) -> EngineError {
    EngineError::NoPath {
        sa: sa.to_owned(),
        path: path.to_owned(),
    }
}

/// One path of an SA as configured now.
#[derive(Debug, Clone)]
struct PathRt {
    spec: PathSpec,
    role: Role,
    state: Arc<PathState>,
    /// The aggregate weight in force: the configured one, then the monitor's estimate.
    weight: u32,
}

/// One SA pair as configured now.
#[derive(Debug, Clone)]
struct SaRt {
    spec: SaSpec,
    policy: Policy,
    out: Arc<OutboundSa>,
    inb: Arc<InboundSa>,
    paths: Vec<PathRt>,
    cursor: Arc<AtomicU64>,
    reorder: Option<Arc<Reorder>>,
    /// Demoted by `demote_sa`: it comes after every SA that is not.
    demoted: bool,
}

/// A soft handover waiting for its target path to answer a probe.
#[derive(Debug, Clone)]
struct Pending {
    sa: String,
    path: String,
    deadline_ns: u64,
    /// The target's role before the handover made it an alternate (restored when the
    /// handover is abandoned or replaced).
    prev_role: Role,
}

/// A soft move's second half waiting for one of its new paths ([`TableOp::RemoveWhenUp`]).
#[derive(Debug, Clone)]
struct PendingRemoval {
    sa: String,
    remove: Vec<String>,
    wait_for: Vec<String>,
    deadline_ns: u64,
}

/// What a batch does once its table is published: probe new paths at once, tell the
/// control plane about waits that ended.
#[derive(Debug, Default)]
struct After {
    probe: Vec<u32>,
    events: Vec<Event>,
}

impl After {
    fn run(self, shared: &Shared) {
        super::monitor::probe_now(shared, &self.probe);
        for e in self.events {
            shared.events.send(e);
        }
    }
}

/// The engine's configuration as it stands, changed by the engine's methods (the caller's
/// thread) and by the monitor (handovers, weights), under [`Shared::table`]. A batch
/// ([`apply`]) works on a clone and replaces the state only when all of it succeeded.
#[derive(Debug, Clone)]
pub(crate) struct TableState {
    interfaces: Vec<(InterfaceConfig, Arc<OuterSocket>)>,
    sas: Vec<SaRt>,
    next_path_id: u32,
    pending: Vec<Pending>,
    removals: Vec<PendingRemoval>,
    backend: Backend,
    replay_window: u64,
    offloads: bool,
    /// Given to every outbound SA: its sequence-number events.
    events: EventSender,
    /// `EngineConfig::seq_limit` (tests).
    seq_limit: Option<u64>,
}

/// A static key used twice (by two SAs, or by both directions of one) repeats AEAD nonces:
/// both uses count their sequence numbers from the same start.
fn distinct_keys(sas: &[SaSpec]) -> Result<(), EngineError> {
    let mut seen: Vec<(&[u8], &str)> = Vec::new();
    for sa in sas {
        for key in [&sa.key_out[..], &sa.key_in[..]] {
            if let Some((_, other)) = seen.iter().find(|(k, _)| *k == key) {
                return Err(EngineError::KeyReused {
                    sa: sa.name.clone(),
                    other: (*other).to_owned(),
                });
            }
            seen.push((key, &sa.name));
        }
    }
    Ok(())
}

fn bind(iface: &InterfaceConfig, offloads: bool) -> Result<Arc<OuterSocket>, EngineError> {
    let cfg = SocketConfig {
        device: iface.device.clone(),
        local: SocketAddr::new(iface.address, iface.port),
        recv_buffer: 4 << 20,
        send_buffer: 4 << 20,
        gso: offloads,
        gro: offloads,
    };
    OuterSocket::bind(&cfg)
        .map(Arc::new)
        .map_err(|source| EngineError::Bind {
            interface: iface.name.clone(),
            address: iface.address,
            port: iface.port,
            source,
        })
}

impl TableState {
    /// The configuration's interfaces and manual SAs. With a state directory, every manual
    /// SA resumes above its stored marks and is returned for the mark keeper as well.
    pub fn new(
        cfg: &EngineConfig,
        events: EventSender,
    ) -> Result<(Self, Vec<Tracked>), EngineError> {
        let mut st = TableState {
            interfaces: Vec::new(),
            sas: Vec::new(),
            next_path_id: 1,
            pending: Vec::new(),
            removals: Vec::new(),
            backend: cfg.backend,
            replay_window: cfg.replay_window,
            offloads: cfg.tun.offloads,
            events,
            seq_limit: cfg.seq_limit,
        };
        for iface in &cfg.interfaces {
            st.interfaces
                .push((iface.clone(), bind(iface, st.offloads)?));
        }
        distinct_keys(&cfg.sas)?;
        if let Some(dir) = &cfg.state_dir {
            if !cfg.sas.is_empty() {
                marks::prepare_dir(dir).map_err(EngineError::StateDir)?;
            }
        }
        let mut tracked = Vec::new();
        for sa in &cfg.sas {
            let (out, inb) = st.build_pair(sa)?;
            let (out, inb) = match &cfg.state_dir {
                Some(dir) => {
                    let t = Tracked::resume(dir, &sa.name, out, &sa.key_out, inb, &sa.key_in)
                        .map_err(|source| EngineError::Marks {
                            sa: sa.name.clone(),
                            source,
                        })?;
                    let pair = (Arc::clone(t.outbound()), Arc::clone(t.inbound()));
                    tracked.push(t);
                    pair
                }
                None => (Arc::new(out), Arc::new(inb)),
            };
            st.insert_sa(sa.clone(), out, inb, 0);
        }
        Ok((st, tracked))
    }

    fn build_pair(&self, spec: &SaSpec) -> Result<(OutboundSa, InboundSa), EngineError> {
        fn cfg<'k>(st: &TableState, spec: &SaSpec, spi: u32, keymat: &'k [u8]) -> SaConfig<'k> {
            SaConfig {
                spi,
                cipher: spec.cipher,
                backend: st.backend,
                keymat,
                esn: spec.esn,
                mode: spec.mode,
                replay_window: st.replay_window,
            }
        }
        let out_cfg = cfg(self, spec, spec.spi_out, &spec.key_out);
        let events = Some(self.events.clone());
        let out = match self.seq_limit {
            Some(l) => OutboundSa::with_seq_limit(&out_cfg, events, l),
            None => OutboundSa::new(&out_cfg, events),
        }
        .map_err(|source| EngineError::BadSa {
            sa: spec.name.clone(),
            direction: Direction::Out,
            source,
        })?;
        let inb =
            InboundSa::new(&cfg(self, spec, spec.spi_in, &spec.key_in)).map_err(|source| {
                EngineError::BadSa {
                    sa: spec.name.clone(),
                    direction: Direction::In,
                    source,
                }
            })?;
        Ok((out, inb))
    }

    fn add_sa(&mut self, spec: SaSpec, now_ns: u64) -> Result<(), EngineError> {
        let (out, inb) = self.build_pair(&spec)?;
        self.insert_sa(spec, Arc::new(out), Arc::new(inb), now_ns);
        Ok(())
    }

    fn insert_sa(&mut self, spec: SaSpec, out: Arc<OutboundSa>, inb: Arc<InboundSa>, now_ns: u64) {
        let mut rt = SaRt {
            policy: spec.policy,
            out,
            inb,
            paths: Vec::new(),
            cursor: Arc::new(AtomicU64::new(0)),
            reorder: (!spec.reorder.is_zero()).then(|| Arc::new(Reorder::new(spec.reorder))),
            demoted: false,
            spec: SaSpec {
                paths: Vec::new(),
                ..spec.clone()
            },
        };
        for p in &spec.paths {
            rt.paths.push(self.new_path(p.clone(), now_ns));
        }
        // Ahead of every demoted SA: a rekey's successor must win the outbound lookup even
        // when older pairs of the same selectors are still lingering.
        let at = self.first_demoted();
        self.sas.insert(at, rt);
    }

    /// Where the demoted SAs begin (they follow all others).
    fn first_demoted(&self) -> usize {
        self.sas
            .iter()
            .position(|s| s.demoted)
            .unwrap_or(self.sas.len())
    }

    fn new_path(&mut self, spec: PathSpec, now_ns: u64) -> PathRt {
        let id = self.next_path_id;
        self.next_path_id += 1;
        let make = if spec.verify {
            PathState::unverified
        } else {
            PathState::new
        };
        let state = Arc::new(make(id, &spec.name, &spec.interface, spec.remote, now_ns));
        PathRt {
            role: spec.role,
            weight: spec.weight.max(1),
            state,
            spec,
        }
    }

    fn socket(&self, interface: &str) -> Option<Arc<OuterSocket>> {
        self.interfaces
            .iter()
            .find(|(c, _)| c.name == interface)
            .map(|(_, s)| Arc::clone(s))
    }

    fn sa_mut(&mut self, name: &str) -> Result<&mut SaRt, EngineError> {
        self.sas
            .iter_mut()
            .find(|s| s.spec.name == name)
            .ok_or_else(|| no_sa(name))
    }

    /// The snapshot of the configuration as it stands.
    fn build(&self) -> SaTable {
        let mut table = SaTable {
            sockets: self
                .interfaces
                .iter()
                .map(|(c, s)| (c.name.clone(), Arc::clone(s)))
                .collect(),
            ..SaTable::default()
        };
        for sa in &self.sas {
            let paths: Vec<PathEntry> = sa
                .paths
                .iter()
                .map(|p| PathEntry {
                    state: Arc::clone(&p.state),
                    socket: self.socket(&p.spec.interface),
                    role: p.role,
                    weight: p.weight,
                    pin: p.spec.pin.clone(),
                })
                .collect();
            let schedule = aggregate_schedule(&paths);
            table.inbound.insert(
                sa.spec.spi_in,
                InboundEntry {
                    name: sa.spec.name.clone(),
                    sa: Arc::clone(&sa.inb),
                    local_ts: sa.spec.local_ts.clone(),
                    remote_ts: sa.spec.remote_ts.clone(),
                    reply: Some(Arc::clone(&sa.out)),
                    paths: paths.clone(),
                    reorder: sa.reorder.clone(),
                },
            );
            table.outbound.push(OutboundEntry {
                name: sa.spec.name.clone(),
                sa: Arc::clone(&sa.out),
                spi_in: sa.spec.spi_in,
                local_ts: sa.spec.local_ts.clone(),
                remote_ts: sa.spec.remote_ts.clone(),
                paths,
                policy: sa.policy,
                schedule,
                cursor: Arc::clone(&sa.cursor),
                probes: sa.spec.probes,
            });
        }
        table
    }
}

/// One SA pair whose usage the monitor reports.
#[derive(Debug)]
pub(crate) struct Watched {
    pub spi_in: u32,
    pub spi_out: u32,
    out: Arc<OutboundSa>,
    inb: Arc<InboundSa>,
}

impl Watched {
    /// Its totals now.
    pub fn usage(&self) -> Usage {
        let (o, i) = (
            self.out.counters().snapshot(),
            self.inb.counters().snapshot(),
        );
        Usage {
            in_packets: i.packets,
            in_bytes: i.bytes,
            out_packets: o.packets,
            out_bytes: o.bytes,
        }
    }
}

/// The SAs installed with [`SaSpec::report_usage`].
pub(crate) fn watched(shared: &Shared) -> Vec<Watched> {
    let st = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    st.sas
        .iter()
        .filter(|s| s.spec.report_usage)
        .map(|s| Watched {
            spi_in: s.spec.spi_in,
            spi_out: s.spec.spi_out,
            out: Arc::clone(&s.out),
            inb: Arc::clone(&s.inb),
        })
        .collect()
}

/// Builds a table from the current state and publishes it.
pub(crate) fn publish(shared: &Shared) {
    let st = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    shared.tables.publish(st.build());
}

/// What a change needs besides the state: the clock and the engine's probe settings.
#[derive(Debug, Clone, Copy)]
struct Ctx {
    now_ns: u64,
    /// How long a soft handover waits for its target: max(1 s, dead_after).
    handover_timeout_ns: u64,
    /// Probes are off engine-wide: a soft handover cannot wait for an answer.
    no_probes: bool,
}

impl Ctx {
    fn of(shared: &Shared) -> Ctx {
        Ctx {
            now_ns: shared.now_ns(),
            handover_timeout_ns: (shared.dead_after.as_nanos() as u64).max(1_000_000_000),
            no_probes: shared.probe_interval.is_zero(),
        }
    }
}

/// Makes `path` the first active path and turns every other active path into standby.
fn promote(sa: &mut SaRt, path: &str) {
    for p in &mut sa.paths {
        if p.spec.name == path {
            p.role = Role::Active;
        } else if p.role == Role::Active {
            p.role = Role::Standby;
        }
    }
    if let Some(i) = sa.paths.iter().position(|p| p.spec.name == path) {
        let p = sa.paths.remove(i);
        sa.paths.insert(0, p);
    }
}

impl TableState {
    /// Drops the pending soft handovers of SA `sa` that `which` selects, giving their
    /// targets (still alternates because of them) their roles back.
    fn drop_pending(&mut self, sa: &str, which: impl Fn(&Pending) -> bool) {
        let (gone, keep): (Vec<Pending>, Vec<Pending>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.sa == sa && which(p));
        self.pending = keep;
        for p in gone {
            self.restore_role(&p);
        }
    }

    fn restore_role(&mut self, p: &Pending) {
        if let Ok(s) = self.sa_mut(&p.sa)
            && let Some(t) = s.paths.iter_mut().find(|x| x.spec.name == p.path)
            && t.role == Role::Alternate
        {
            t.role = p.prev_role;
        }
    }

    /// Removes the paths `remove` of SA `sa` (all of them there) for a soft move whose wait
    /// ended with `up` answering: with any handover waiting for one of them.
    fn complete_removal(&mut self, sa: &str, remove: &[String]) -> Result<(), EngineError> {
        self.sa_mut(sa)?
            .paths
            .retain(|p| !remove.contains(&p.spec.name));
        self.pending
            .retain(|p| !(p.sa == sa && remove.contains(&p.path)));
        Ok(())
    }

    /// Applies one change. `after` collects the ids of paths to probe at once once the
    /// result is published (new paths that must show return routability) and the events to
    /// send then.
    fn apply_op(&mut self, op: TableOp, cx: Ctx, after: &mut After) -> Result<String, EngineError> {
        match op {
            TableOp::AddPath { sa, path } => {
                if !self
                    .interfaces
                    .iter()
                    .any(|(c, _)| c.name == path.interface)
                {
                    return Err(EngineError::NoInterface {
                        name: path.interface,
                    });
                }
                if self
                    .sa_mut(&sa)?
                    .paths
                    .iter()
                    .any(|p| p.spec.name == path.name)
                {
                    return Err(EngineError::PathExists {
                        sa,
                        path: path.name,
                    });
                }
                let name = path.name.clone();
                let verify = path.verify;
                let rt = self.new_path(path, cx.now_ns);
                if verify {
                    after.probe.push(rt.state.id);
                }
                self.sa_mut(&sa)?.paths.push(rt);
                Ok(format!(
                    "{sa}: path {name} added{}",
                    if verify {
                        "; it carries traffic once it answers a probe"
                    } else {
                        ""
                    }
                ))
            }
            TableOp::RemovePath { sa, path } => {
                let s = self.sa_mut(&sa)?;
                let before = s.paths.len();
                s.paths.retain(|p| p.spec.name != path);
                if s.paths.len() == before {
                    return Err(no_path(&sa, &path));
                }
                self.pending.retain(|p| !(p.sa == sa && p.path == path));
                for r in self.removals.iter_mut().filter(|r| r.sa == sa) {
                    r.remove.retain(|p| *p != path);
                    r.wait_for.retain(|p| *p != path);
                }
                self.removals
                    .retain(|r| !r.remove.is_empty() && !r.wait_for.is_empty());
                Ok(format!("{sa}: path {path} removed"))
            }
            TableOp::SetRole { sa, path, role } => {
                // An explicit role ends a soft handover waiting for this path.
                if self.sa_mut(&sa)?.paths.iter().any(|p| p.spec.name == path) {
                    self.pending.retain(|p| !(p.sa == sa && p.path == path));
                }
                let s = self.sa_mut(&sa)?;
                let p = s
                    .paths
                    .iter_mut()
                    .find(|p| p.spec.name == path)
                    .ok_or_else(|| no_path(&sa, &path))?;
                p.role = role;
                Ok(format!("{sa}: path {path} is {}", role.name()))
            }
            TableOp::Handover { sa, path, hard } => {
                if !self.sa_mut(&sa)?.paths.iter().any(|p| p.spec.name == path) {
                    return Err(no_path(&sa, &path));
                }
                // Whatever waited for this SA is replaced by this handover.
                self.drop_pending(&sa, |_| true);
                let s = self.sa_mut(&sa)?;
                let (answering, prev_role) = s
                    .paths
                    .iter()
                    .find(|p| p.spec.name == path)
                    .map(|t| (t.state.answering(), t.role))
                    .ok_or_else(|| no_path(&sa, &path))?;
                if hard || answering || cx.no_probes {
                    promote(s, &path);
                    return Ok(format!(
                        "{sa}: {} handover to {path} done",
                        if hard { "hard" } else { "soft" }
                    ));
                }
                // Make before break: the target stays out of the schedule (alternate) but is
                // probed; the monitor promotes it when it answers.
                if let Some(t) = s.paths.iter_mut().find(|p| p.spec.name == path)
                    && t.role == Role::Standby
                {
                    t.role = Role::Alternate;
                }
                self.pending.push(Pending {
                    sa: sa.clone(),
                    path: path.clone(),
                    deadline_ns: cx.now_ns + cx.handover_timeout_ns,
                    prev_role,
                });
                Ok(format!(
                    "{sa}: soft handover to {path} started; it completes when {path} answers a probe"
                ))
            }
            TableOp::SetPolicy { sa, policy } => {
                self.sa_mut(&sa)?.policy = policy;
                Ok(format!("{sa}: policy {}", policy.name()))
            }
            TableOp::SetSelectors {
                sa,
                local_ts,
                remote_ts,
            } => {
                let s = self.sa_mut(&sa)?;
                s.spec.local_ts = local_ts;
                s.spec.remote_ts = remote_ts;
                Ok(format!("{sa}: selectors changed"))
            }
            TableOp::RemoveWhenUp {
                sa,
                remove,
                wait_for,
                within,
            } => {
                let s = self.sa_mut(&sa)?;
                let bad = |why| EngineError::BadWait {
                    sa: sa.clone(),
                    why,
                };
                if remove.is_empty() {
                    return Err(bad("nothing to remove"));
                }
                if wait_for.is_empty() {
                    return Err(bad("nothing to wait for"));
                }
                if remove.iter().any(|r| wait_for.contains(r)) {
                    return Err(bad("a path both waited for and removed"));
                }
                if let Some(n) = remove
                    .iter()
                    .chain(&wait_for)
                    .find(|n| !s.paths.iter().any(|p| p.spec.name == **n))
                {
                    return Err(no_path(&sa, n));
                }
                let up = s
                    .paths
                    .iter()
                    .find(|p| wait_for.contains(&p.spec.name) && p.state.answering())
                    .map(|p| p.spec.name.clone());
                let spi_in = s.spec.spi_in;
                // Whatever waited for this SA is replaced.
                self.removals.retain(|r| r.sa != sa);
                if let Some(up) = up {
                    self.complete_removal(&sa, &remove)?;
                    let msg = format!("{sa}: {up} answers: [{}] removed", remove.join(" "));
                    after.events.push(Event::SoftMoveEnded {
                        sa,
                        spi_in,
                        up: Some(up),
                        paths: remove,
                    });
                    return Ok(msg);
                }
                let msg = format!(
                    "{sa}: [{}] leave once one of [{}] answers (within {} ms)",
                    remove.join(" "),
                    wait_for.join(" "),
                    within.as_millis()
                );
                self.removals.push(PendingRemoval {
                    sa,
                    remove,
                    wait_for,
                    deadline_ns: cx
                        .now_ns
                        .saturating_add(u64::try_from(within.as_nanos()).unwrap_or(u64::MAX)),
                });
                Ok(msg)
            }
            TableOp::SetPathOrder { sa, order } => {
                let s = self.sa_mut(&sa)?;
                for (i, name) in order.iter().enumerate() {
                    if !s.paths.iter().any(|p| &p.spec.name == name) {
                        return Err(no_path(&sa, name));
                    }
                    if order[..i].contains(name) {
                        return Err(EngineError::PathNamedTwice {
                            sa,
                            path: name.clone(),
                        });
                    }
                }
                let mut rest = std::mem::take(&mut s.paths);
                for name in &order {
                    if let Some(i) = rest.iter().position(|p| &p.spec.name == name) {
                        s.paths.push(rest.remove(i));
                    }
                }
                s.paths.append(&mut rest);
                let now: Vec<&str> = s.paths.iter().map(|p| p.spec.name.as_str()).collect();
                Ok(format!("{sa}: paths in order {}", now.join(", ")))
            }
        }
    }
}

/// Applies a batch of changes, all or nothing, and publishes the result with one swap
/// (none for an empty batch). The changes are applied in order to a clone of the state, so
/// each sees the ones before it; the clone replaces the state only if every change
/// succeeded. The error carries the index of the change that failed. Paths added with
/// `verify` are probed at once, after the swap.
pub(crate) fn apply(
    shared: &Shared,
    ops: Vec<TableOp>,
) -> Result<Vec<String>, (usize, EngineError)> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let cx = Ctx::of(shared);
    let mut after = After::default();
    let mut st = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    let mut work = st.clone();
    let mut msgs = Vec::with_capacity(ops.len());
    for (i, op) in ops.into_iter().enumerate() {
        msgs.push(work.apply_op(op, cx, &mut after).map_err(|e| (i, e))?);
    }
    *st = work;
    shared.tables.publish(st.build());
    drop(st);
    after.run(shared);
    Ok(msgs)
}

/// One change alone: a batch of one, its error as it is.
fn apply_one(shared: &Shared, op: TableOp) -> Result<String, EngineError> {
    apply(shared, vec![op])
        .map(|mut m| m.pop().unwrap_or_default())
        .map_err(|(_, e)| e)
}

fn with_state<T>(
    shared: &Shared,
    f: impl FnOnce(&mut TableState, u64) -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    let mut st = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    let r = f(&mut st, shared.now_ns())?;
    shared.tables.publish(st.build());
    Ok(r)
}

pub(crate) fn handover(
    shared: &Shared,
    sa: &str,
    path: &str,
    hard: bool,
) -> Result<String, EngineError> {
    apply_one(
        shared,
        TableOp::Handover {
            sa: sa.into(),
            path: path.into(),
            hard,
        },
    )
}

/// Called by the monitor: completes soft handovers whose target answers probes, abandons
/// those past their deadline (the target gets its role back), and ends the waits of soft
/// moves ([`TableOp::RemoveWhenUp`]: the old paths leave once a new one answers; past the
/// deadline they stay), all in one table swap, then tells the control plane about the
/// waits that ended. Returns messages for the log (logged by the caller, outside the lock),
/// each with whether it is a warning.
pub(crate) fn advance_pending(shared: &Shared) -> Vec<(bool, String)> {
    let now = shared.now_ns();
    let mut st = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    if st.pending.is_empty() && st.removals.is_empty() {
        return Vec::new();
    }
    let mut log = Vec::new();
    let pending = std::mem::take(&mut st.pending);
    let mut changed = false;
    for p in pending {
        let Ok(sa) = st.sa_mut(&p.sa) else { continue };
        let Some(target) = sa.paths.iter().find(|x| x.spec.name == p.path) else {
            continue;
        };
        if target.state.answering() {
            promote(sa, &p.path);
            changed = true;
            log.push((false, format!("{}: soft handover to {} done", p.sa, p.path)));
        } else if now > p.deadline_ns {
            st.restore_role(&p);
            changed = true;
            log.push((
                true,
                format!(
                    "{}: soft handover to {} abandoned: the path never answered",
                    p.sa, p.path
                ),
            ));
        } else {
            st.pending.push(p);
        }
    }
    let mut events = Vec::new();
    for r in std::mem::take(&mut st.removals) {
        let Ok(sa) = st.sa_mut(&r.sa) else { continue };
        let spi_in = sa.spec.spi_in;
        let up = sa
            .paths
            .iter()
            .find(|p| r.wait_for.contains(&p.spec.name) && p.state.answering())
            .map(|p| p.spec.name.clone());
        if let Some(up) = up {
            if st.complete_removal(&r.sa, &r.remove).is_err() {
                continue;
            }
            changed = true;
            log.push((
                false,
                format!(
                    "{}: soft move done: {up} answers, [{}] removed",
                    r.sa,
                    r.remove.join(" ")
                ),
            ));
            events.push(Event::SoftMoveEnded {
                sa: r.sa,
                spi_in,
                up: Some(up),
                paths: r.remove,
            });
        } else if now > r.deadline_ns {
            log.push((
                true,
                format!(
                    "{}: soft move: none of [{}] answered in time; [{}] stay",
                    r.sa,
                    r.wait_for.join(" "),
                    r.remove.join(" ")
                ),
            ));
            events.push(Event::SoftMoveEnded {
                sa: r.sa,
                spi_in,
                up: None,
                paths: r.remove,
            });
        } else {
            st.removals.push(r);
        }
    }
    if changed {
        shared.tables.publish(st.build());
    }
    drop(st);
    for e in events {
        shared.events.send(e);
    }
    log
}

pub(crate) fn install_sa(shared: &Shared, sa: SaSpec) -> Result<String, EngineError> {
    let mut probe = Vec::new();
    let r = with_state(shared, |st, now| {
        if st.sas.iter().any(|s| s.spec.name == sa.name) {
            return Err(EngineError::SaExists { name: sa.name });
        }
        if st.sas.iter().any(|s| s.spec.spi_in == sa.spi_in) {
            return Err(EngineError::SpiInUse { spi: sa.spi_in });
        }
        let name = sa.name.clone();
        st.add_sa(sa, now)?;
        if let Some(s) = st.sas.iter().find(|s| s.spec.name == name) {
            probe.extend(s.paths.iter().filter(|p| p.spec.verify).map(|p| p.state.id));
        }
        Ok(format!("SA {name} installed"))
    })?;
    super::monitor::probe_now(shared, &probe);
    Ok(r)
}

/// Installs a manually keyed SA pair while the engine runs, as [`TableState::new`] does at
/// start: it resumes above its marks in `dir` (its first blocks stored before it can carry
/// a packet); one table swap. The marks go to the keeper.
pub(crate) fn install_manual_sa(
    shared: &Shared,
    sa: SaSpec,
    dir: &std::path::Path,
) -> Result<(String, Tracked), EngineError> {
    let mut probe = Vec::new();
    let r = with_state(shared, |st, now| {
        if st.sas.iter().any(|s| s.spec.name == sa.name) {
            return Err(EngineError::SaExists { name: sa.name });
        }
        if st.sas.iter().any(|s| s.spec.spi_in == sa.spi_in) {
            return Err(EngineError::SpiInUse { spi: sa.spi_in });
        }
        marks::prepare_dir(dir).map_err(EngineError::StateDir)?;
        let (out, inb) = st.build_pair(&sa)?;
        let t = Tracked::resume(dir, &sa.name, out, &sa.key_out, inb, &sa.key_in).map_err(
            |source| EngineError::Marks {
                sa: sa.name.clone(),
                source,
            },
        )?;
        let name = sa.name.clone();
        st.insert_sa(sa, Arc::clone(t.outbound()), Arc::clone(t.inbound()), now);
        if let Some(s) = st.sas.iter().find(|s| s.spec.name == name) {
            probe.extend(s.paths.iter().filter(|p| p.spec.verify).map(|p| p.state.id));
        }
        Ok((format!("SA {name} installed"), t))
    })?;
    super::monitor::probe_now(shared, &probe);
    Ok(r)
}

pub(crate) fn demote_sa(shared: &Shared, name: &str) -> Result<String, EngineError> {
    with_state(shared, |st, _| {
        let i = st
            .sas
            .iter()
            .position(|s| s.spec.name == name)
            .ok_or_else(|| no_sa(name))?;
        let mut sa = st.sas.remove(i);
        sa.demoted = true;
        // Behind every SA that is not demoted, ahead of those demoted before it.
        let at = st.first_demoted();
        st.sas.insert(at, sa);
        Ok(format!(
            "SA {name} no longer carries outbound traffic first"
        ))
    })
}

pub(crate) fn remove_sa(shared: &Shared, name: &str) -> Result<String, EngineError> {
    with_state(shared, |st, _| {
        let before = st.sas.len();
        st.sas.retain(|s| s.spec.name != name);
        if st.sas.len() == before {
            return Err(no_sa(name));
        }
        st.pending.retain(|p| p.sa != name);
        st.removals.retain(|r| r.sa != name);
        Ok(format!("SA {name} removed"))
    })
}

/// The monitor's new aggregate weights for SA `sa`, by path id. Publishes a table only when
/// a weight moved by more than 2 %.
pub(crate) fn set_weights(shared: &Shared, sa: &str, weights: &[(u32, u32)]) {
    let mut st = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    let Ok(s) = st.sa_mut(sa) else { return };
    let mut changed = false;
    for p in &mut s.paths {
        if let Some(&(_, w)) = weights.iter().find(|(id, _)| *id == p.state.id) {
            let w = w.max(1);
            if w.abs_diff(p.weight) * 50 > p.weight {
                changed = true;
            }
            p.weight = w;
        }
    }
    if changed {
        shared.tables.publish(st.build());
    }
}

pub(crate) fn add_interface(
    shared: &Shared,
    iface: InterfaceConfig,
) -> Result<String, EngineError> {
    with_state(shared, |st, _| {
        if st.interfaces.iter().any(|(c, _)| c.name == iface.name) {
            return Err(EngineError::InterfaceExists { name: iface.name });
        }
        let sock = bind(&iface, st.offloads)?;
        let msg = format!("interface {} open on {}", iface.name, sock.local_addr());
        st.interfaces.push((iface, sock));
        Ok(msg)
    })
}

pub(crate) fn remove_interface(shared: &Shared, name: &str) -> Result<String, EngineError> {
    with_state(shared, |st, _| {
        let before = st.interfaces.len();
        st.interfaces.retain(|(c, _)| c.name != name);
        if st.interfaces.len() == before {
            return Err(EngineError::NoInterface {
                name: name.to_owned(),
            });
        }
        Ok(format!("interface {name} closed"))
    })
}

pub(crate) fn set_policy(shared: &Shared, sa: &str, policy: Policy) -> Result<String, EngineError> {
    apply_one(
        shared,
        TableOp::SetPolicy {
            sa: sa.into(),
            policy,
        },
    )
}

pub(crate) fn add_path(shared: &Shared, sa: &str, path: PathSpec) -> Result<String, EngineError> {
    apply_one(
        shared,
        TableOp::AddPath {
            sa: sa.into(),
            path,
        },
    )
}

pub(crate) fn remove_path(shared: &Shared, sa: &str, path: &str) -> Result<String, EngineError> {
    apply_one(
        shared,
        TableOp::RemovePath {
            sa: sa.into(),
            path: path.into(),
        },
    )
}

fn wireshark_cipher(c: Cipher) -> &'static str {
    match c {
        Cipher::Aes128Gcm | Cipher::Aes256Gcm => "AES-GCM with 16 octet ICV [RFC4106]",
        Cipher::ChaCha20Poly1305 => "ChaCha20 with Poly1305 [RFC7634]",
    }
}

pub(crate) fn wireshark_keys(shared: &Shared) -> Vec<String> {
    let st = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    let mut lines = Vec::new();
    for sa in &st.sas {
        let family = match sa.paths.first().map(|p| p.spec.remote) {
            Some(SocketAddr::V6(_)) => "IPv6",
            _ => "IPv4",
        };
        for (spi, key) in [
            (sa.spec.spi_out, &sa.spec.key_out),
            (sa.spec.spi_in, &sa.spec.key_in),
        ] {
            let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
            lines.push(format!(
                "\"{family}\",\"*\",\"*\",\"0x{spi:08x}\",\"{}\",\"0x{hex}\",\"NULL\",\"\"",
                wireshark_cipher(sa.spec.cipher)
            ));
        }
    }
    lines
}

/// Puts the configured addresses on the TUN, sets it up and routes the remote selectors into
/// it: rtnetlink requests (see [`crate::iproute`]).
pub(crate) fn configure_tun(tun: &str, cfg: &EngineConfig) -> Result<(), EngineError> {
    use crate::iproute::Change;
    let dev = || tun.to_owned();
    let mut changes: Vec<Change> = cfg
        .addresses
        .iter()
        .map(|a| Change::AddPrefixAddress {
            addr: *a,
            dev: dev(),
        })
        .collect();
    changes.push(Change::SetLinkUp {
        dev: dev(),
        mtu: None,
    });
    let mut routes: Vec<Prefix> = cfg.routes.clone();
    if routes.is_empty() {
        routes = cfg
            .sas
            .iter()
            .flat_map(|s| s.remote_ts.iter().copied())
            .collect();
    }
    routes.dedup();
    changes.extend(routes.into_iter().map(|prefix| Change::AddRoute {
        prefix,
        dev: dev(),
        src: None,
    }));
    crate::iproute::apply_all(&changes).map_err(EngineError::Ip)
}

/// The shared state of an engine that has no TUN, no workers and no monitor: its table
/// alone (the sockets of `cfg.interfaces` are bound). For [`super::Detached`] and tests.
pub(crate) fn detached(
    cfg: &EngineConfig,
) -> Result<(Shared, crossbeam_channel::Receiver<crate::event::Event>), EngineError> {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicBool;
    use std::time::Instant;

    let (events, rx) = crate::event::channel(16);
    let (state, _) = TableState::new(cfg, events.clone())?;
    let (ike_tx, _) = crossbeam_channel::bounded(1);
    let sh = Shared {
        tables: crate::sa_table::SaTables::default(),
        stop: AtomicBool::new(false),
        epoch: Instant::now(),
        counters: super::GlobalCounters::default(),
        table: Mutex::new(state),
        probe_interval: cfg.probe_interval,
        dead_after: cfg.dead_after,
        keepalive: cfg.keepalive,
        tun_name: String::new(),
        tun_offloads: Default::default(),
        workers: 0,
        ike_tx,
        events,
    };
    publish(&sh);
    Ok((sh, rx))
}

/// `n` SAs `s0..` (failover, probes on), each with paths `a` (active, interface `l1`) and
/// `b` (standby, `l2`), two loopback interfaces: the configuration of the table's tests and
/// of its benchmark.
pub(crate) fn sample_config(n: u32) -> EngineConfig {
    use std::time::Duration;

    use zeroize::Zeroizing;

    use crate::esp::Mode;

    let iface = |name: &str| InterfaceConfig {
        name: name.into(),
        device: None,
        address: [127, 0, 0, 1].into(),
        port: 0,
    };
    let path = |name: &str, interface: &str, role| PathSpec {
        name: name.into(),
        interface: interface.into(),
        remote: SocketAddr::from(([127, 0, 0, 1], 9)),
        role,
        weight: 1,
        pin: Vec::new(),
        verify: false,
    };
    // Distinct keys for every SA and direction, however many SAs (the engine refuses a key
    // used twice): a direction byte, the SA's index, then filler.
    let key = |dir: u8, i: u32| {
        let mut k = vec![dir];
        k.extend_from_slice(&i.to_be_bytes());
        k.resize(20, 0x5a);
        Zeroizing::new(k)
    };
    assert!(
        n <= 253 * 256,
        "the sample's remote selectors are 10.x.y.0/24"
    );
    let sas = (0..n)
        .map(|i| SaSpec {
            name: format!("s{i}"),
            mode: Mode::Tunnel,
            cipher: Cipher::Aes128Gcm,
            esn: true,
            spi_out: 0x1000 + i,
            key_out: key(0x01, i),
            spi_in: 0x8000 + i,
            key_in: key(0x02, i),
            local_ts: vec![Prefix {
                addr: [10, 1, 0, 0].into(),
                len: 16,
            }],
            remote_ts: vec![Prefix {
                addr: [10, 2 + (i / 256) as u8, (i % 256) as u8, 0].into(),
                len: 24,
            }],
            policy: Policy::Failover,
            paths: vec![
                path("a", "l1", Role::Active),
                path("b", "l2", Role::Standby),
            ],
            reorder: Duration::ZERO,
            probes: true,
            report_usage: false,
        })
        .collect();
    EngineConfig {
        interfaces: vec![iface("l1"), iface("l2")],
        sas,
        ..EngineConfig::default()
    }
}

#[cfg(test)]
pub(crate) fn test_shared(n: u32) -> Shared {
    test_shared_events(n).0
}

/// [`test_shared`] with the receiving end of its events.
#[cfg(test)]
pub(crate) fn test_shared_events(
    n: u32,
) -> (Shared, crossbeam_channel::Receiver<crate::event::Event>) {
    detached(&sample_config(n)).unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::path::Liveness;

    use super::test_shared as shared;

    fn new_path(name: &str, interface: &str, role: Role, verify: bool) -> PathSpec {
        PathSpec {
            name: name.into(),
            interface: interface.into(),
            remote: "127.0.0.1:9".parse().unwrap(),
            role,
            weight: 1,
            pin: Vec::new(),
            verify,
        }
    }

    /// (path name, role) of SA `sa` in the published table.
    fn paths(sh: &Shared, sa: &str) -> Vec<(String, Role)> {
        let t = sh.tables.load_full();
        let e = t.outbound.iter().find(|e| e.name == sa).unwrap();
        e.paths
            .iter()
            .map(|p| (p.state.name.clone(), p.role))
            .collect()
    }

    fn names(v: &[(String, Role)]) -> Vec<&str> {
        v.iter().map(|(n, _)| n.as_str()).collect()
    }

    #[test]
    fn selectors_change_with_the_paths_in_one_swap() {
        let sh = shared(2);
        let before = sh.tables.swaps();
        let p = |s: &str| s.parse::<Prefix>().unwrap();
        apply(
            &sh,
            vec![
                TableOp::AddPath {
                    sa: "s0".into(),
                    path: new_path("c", "l2", Role::Active, true),
                },
                TableOp::SetSelectors {
                    sa: "s0".into(),
                    local_ts: vec![p("198.18.34.2/32")],
                    remote_ts: vec![p("198.18.41.2/32")],
                },
            ],
        )
        .unwrap();
        assert_eq!(sh.tables.swaps(), before + 1);
        let t = sh.tables.load_full();
        let out = t.outbound.iter().find(|e| e.name == "s0").unwrap();
        assert_eq!(
            (out.local_ts.clone(), out.remote_ts.clone()),
            (vec![p("198.18.34.2/32")], vec![p("198.18.41.2/32")])
        );
        let inb = t.inbound.values().find(|e| e.name == "s0").unwrap();
        assert_eq!(inb.local_ts, vec![p("198.18.34.2/32")]);
        // The other SA is untouched; an unknown SA fails the batch.
        let other = t.outbound.iter().find(|e| e.name == "s1").unwrap();
        assert_ne!(other.local_ts, vec![p("198.18.34.2/32")]);
        assert!(
            apply(
                &sh,
                vec![TableOp::SetSelectors {
                    sa: "nope".into(),
                    local_ts: vec![],
                    remote_ts: vec![],
                }]
            )
            .is_err()
        );
    }

    #[test]
    fn a_batch_over_many_sas_is_one_swap() {
        let sh = shared(50);
        let before = sh.tables.swaps();
        let mut ops = Vec::new();
        for i in 0..50 {
            let sa = format!("s{i}");
            ops.push(TableOp::AddPath {
                sa: sa.clone(),
                path: new_path("c", "l2", Role::Standby, false),
            });
            ops.push(TableOp::Handover {
                sa: sa.clone(),
                path: "c".into(),
                hard: true,
            });
            ops.push(TableOp::RemovePath {
                sa: sa.clone(),
                path: "a".into(),
            });
        }
        let msgs = apply(&sh, ops).unwrap();
        assert_eq!(msgs.len(), 150);
        assert_eq!(
            sh.tables.swaps(),
            before + 1,
            "one swap for the whole batch"
        );
        for i in 0..50 {
            let p = paths(&sh, &format!("s{i}"));
            assert_eq!(
                p,
                [("c".into(), Role::Active), ("b".into(), Role::Standby)],
                "s{i}"
            );
        }
        assert_eq!(apply(&sh, Vec::new()).unwrap().len(), 0);
        assert_eq!(
            sh.tables.swaps(),
            before + 1,
            "an empty batch publishes nothing"
        );
    }

    #[test]
    fn an_invalid_batch_changes_nothing_and_publishes_nothing() {
        let sh = shared(3);
        let before = sh.tables.swaps();
        let generation = sh.tables.load().generation;
        let snapshot: Vec<_> = (0..3).map(|i| paths(&sh, &format!("s{i}"))).collect();
        let bad: Vec<(TableOp, &str)> = vec![
            (
                TableOp::SetPolicy {
                    sa: "nope".into(),
                    policy: Policy::Redundant,
                },
                "no SA",
            ),
            (
                TableOp::RemovePath {
                    sa: "s1".into(),
                    path: "z".into(),
                },
                "no path",
            ),
            (
                TableOp::AddPath {
                    sa: "s1".into(),
                    path: new_path("c", "wifi", Role::Active, false),
                },
                "no interface",
            ),
            (
                TableOp::AddPath {
                    sa: "s1".into(),
                    path: new_path("a", "l1", Role::Active, false),
                },
                "path exists",
            ),
            (
                TableOp::SetPathOrder {
                    sa: "s1".into(),
                    order: vec!["b".into(), "b".into()],
                },
                "named twice",
            ),
            (
                TableOp::Handover {
                    sa: "s2".into(),
                    path: "x".into(),
                    hard: false,
                },
                "no target",
            ),
        ];
        for (op, what) in bad {
            let ops = vec![
                TableOp::SetPolicy {
                    sa: "s0".into(),
                    policy: Policy::Aggregate,
                },
                TableOp::AddPath {
                    sa: "s0".into(),
                    path: new_path("c", "l2", Role::Active, true),
                },
                TableOp::Handover {
                    sa: "s0".into(),
                    path: "b".into(),
                    hard: true,
                },
                TableOp::SetRole {
                    sa: "s2".into(),
                    path: "b".into(),
                    role: Role::Alternate,
                },
                op,
            ];
            let Err((index, e)) = apply(&sh, ops) else {
                panic!("{what}: accepted")
            };
            assert_eq!(index, 4, "{what}: {e}");
            assert_eq!(sh.tables.swaps(), before, "{what}: published");
            assert_eq!(sh.tables.load().generation, generation);
            let now: Vec<_> = (0..3).map(|i| paths(&sh, &format!("s{i}"))).collect();
            assert_eq!(now, snapshot, "{what}");
            let st = sh.table.lock().unwrap();
            assert!(
                st.sas.iter().all(|s| s.policy == Policy::Failover),
                "{what}"
            );
            assert!(st.pending.is_empty(), "{what}");
        }
    }

    #[test]
    fn duplicates_in_a_batch_apply_in_order() {
        let sh = shared(1);
        // Added then removed: gone. Removed then added again: a new path of that name.
        apply(
            &sh,
            vec![
                TableOp::AddPath {
                    sa: "s0".into(),
                    path: new_path("c", "l2", Role::Active, false),
                },
                TableOp::RemovePath {
                    sa: "s0".into(),
                    path: "c".into(),
                },
                TableOp::RemovePath {
                    sa: "s0".into(),
                    path: "b".into(),
                },
                TableOp::AddPath {
                    sa: "s0".into(),
                    path: new_path("b", "l1", Role::Active, false),
                },
            ],
        )
        .unwrap();
        assert_eq!(
            paths(&sh, "s0"),
            [("a".into(), Role::Active), ("b".into(), Role::Active)]
        );
        // Removing twice fails on the second, and nothing of the batch stays.
        let e = apply(
            &sh,
            vec![
                TableOp::RemovePath {
                    sa: "s0".into(),
                    path: "a".into(),
                },
                TableOp::RemovePath {
                    sa: "s0".into(),
                    path: "a".into(),
                },
            ],
        )
        .unwrap_err();
        assert_eq!(e.0, 1);
        assert_eq!(names(&paths(&sh, "s0")), ["a", "b"]);
        // Two handovers of one SA: the later one is in force (the first made `a` standby).
        apply(
            &sh,
            vec![
                TableOp::Handover {
                    sa: "s0".into(),
                    path: "b".into(),
                    hard: true,
                },
                TableOp::Handover {
                    sa: "s0".into(),
                    path: "a".into(),
                    hard: true,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            paths(&sh, "s0"),
            [("a".into(), Role::Active), ("b".into(), Role::Standby)]
        );
    }

    #[test]
    fn soft_handovers_of_several_sas_wait_and_complete_in_one_swap() {
        let sh = shared(3);
        let t = sh.tables.load_full();
        for e in &t.outbound {
            e.paths[1].state.set_liveness(Liveness::Unknown);
        }
        let ops = (0..3)
            .map(|i| TableOp::Handover {
                sa: format!("s{i}"),
                path: "b".into(),
                hard: false,
            })
            .collect();
        let msgs = apply(&sh, ops).unwrap();
        assert!(msgs.iter().all(|m| m.contains("started")), "{msgs:?}");
        // Waiting: the targets are probed alternates, the old paths still carry.
        for i in 0..3 {
            assert_eq!(
                paths(&sh, &format!("s{i}")),
                [("a".into(), Role::Active), ("b".into(), Role::Alternate)]
            );
        }
        let before = sh.tables.swaps();
        assert!(advance_pending(&sh).is_empty(), "nothing answered yet");
        assert_eq!(sh.tables.swaps(), before);
        // Two targets answer: both complete in one swap; the third still waits.
        for e in t.outbound.iter().take(2) {
            e.paths[1].state.probe_answered(0, 1);
        }
        let log = advance_pending(&sh);
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(sh.tables.swaps(), before + 1);
        for i in 0..2 {
            assert_eq!(
                paths(&sh, &format!("s{i}")),
                [("b".into(), Role::Active), ("a".into(), Role::Standby)]
            );
        }
        assert_eq!(sh.table.lock().unwrap().pending.len(), 1);
        // A handover replacing the one that waits gives the target its role back.
        apply(
            &sh,
            vec![TableOp::Handover {
                sa: "s2".into(),
                path: "a".into(),
                hard: true,
            }],
        )
        .unwrap();
        assert_eq!(
            paths(&sh, "s2"),
            [("a".into(), Role::Active), ("b".into(), Role::Standby)]
        );
        assert!(sh.table.lock().unwrap().pending.is_empty());
    }

    #[test]
    fn a_soft_handover_to_an_unverified_path_waits_for_its_verification() {
        let sh = shared(1);
        apply(
            &sh,
            vec![
                TableOp::AddPath {
                    sa: "s0".into(),
                    path: new_path("c", "l2", Role::Standby, true),
                },
                TableOp::Handover {
                    sa: "s0".into(),
                    path: "c".into(),
                    hard: false,
                },
            ],
        )
        .unwrap();
        let t = sh.tables.load_full();
        let c = &t.outbound[0].paths[2];
        assert_eq!(c.state.name, "c");
        assert!(!c.state.verified());
        assert_eq!(c.state.counters().probes_sent, 1, "probed at once");
        // Up by an answer that did not come back on it: still not verified, still waiting.
        c.state.probe_answered(0, 1);
        advance_pending(&sh);
        assert_eq!(names(&paths(&sh, "s0")), ["a", "b", "c"]);
        c.state.verify();
        advance_pending(&sh);
        assert_eq!(
            paths(&sh, "s0"),
            [
                ("c".into(), Role::Active),
                ("a".into(), Role::Standby),
                ("b".into(), Role::Standby)
            ]
        );
    }

    fn wait(sa: &str, remove: &[&str], wait_for: &[&str], within_ms: u64) -> TableOp {
        TableOp::RemoveWhenUp {
            sa: sa.into(),
            remove: remove.iter().map(|n| (*n).to_owned()).collect(),
            wait_for: wait_for.iter().map(|n| (*n).to_owned()).collect(),
            within: std::time::Duration::from_millis(within_ms),
        }
    }

    fn ended(
        rx: &crossbeam_channel::Receiver<Event>,
    ) -> Vec<(String, Option<String>, Vec<String>)> {
        rx.try_iter()
            .filter_map(|e| match e {
                Event::SoftMoveEnded {
                    sa,
                    up,
                    paths,
                    spi_in,
                    ..
                } => {
                    assert_eq!(spi_in, 0x8000 + sa[1..].parse::<u32>().unwrap());
                    Some((sa, up, paths))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_soft_moves_old_paths_leave_once_a_new_one_answers() {
        let (sh, rx) = test_shared_events(2);
        let ops: Vec<TableOp> = (0..2)
            .flat_map(|i| {
                let sa = format!("s{i}");
                [
                    TableOp::AddPath {
                        sa: sa.clone(),
                        path: new_path("c", "l2", Role::Active, true),
                    },
                    wait(&sa, &["a", "b"], &["c"], 60_000),
                ]
            })
            .collect();
        let msgs = apply(&sh, ops).unwrap();
        assert!(msgs[1].contains("leave once"), "{msgs:?}");
        let before = sh.tables.swaps();
        assert!(advance_pending(&sh).is_empty(), "nothing answered yet");
        assert_eq!(sh.tables.swaps(), before);
        assert!(ended(&rx).is_empty());
        let t = sh.tables.load_full();
        let c = |i: usize| &t.outbound[i].paths[2].state;
        // Up, but not on itself: still waiting. Then verified: s0's old paths leave.
        c(0).probe_answered(0, 1);
        assert!(advance_pending(&sh).is_empty());
        c(0).verify();
        let log = advance_pending(&sh);
        assert_eq!(log.len(), 1, "{log:?}");
        assert_eq!(sh.tables.swaps(), before + 1, "one swap");
        assert_eq!(paths(&sh, "s0"), [("c".into(), Role::Active)]);
        assert_eq!(names(&paths(&sh, "s1")), ["a", "b", "c"], "s1 still waits");
        assert_eq!(
            ended(&rx),
            [("s0".into(), Some("c".into()), vec!["a".into(), "b".into()])]
        );
        // Once only.
        advance_pending(&sh);
        assert!(ended(&rx).is_empty());
        assert_eq!(sh.table.lock().unwrap().removals.len(), 1);
        // A target already answering: the old paths leave in the batch's own swap.
        let t = sh.tables.load_full();
        t.outbound[1].paths[1].state.probe_answered(0, 1);
        let before = sh.tables.swaps();
        apply(&sh, vec![wait("s1", &["a"], &["b"], 60_000)]).unwrap();
        assert_eq!(sh.tables.swaps(), before + 1);
        assert_eq!(names(&paths(&sh, "s1")), ["b", "c"]);
        assert_eq!(
            ended(&rx),
            [("s1".into(), Some("b".into()), vec!["a".into()])]
        );
        assert!(
            sh.table.lock().unwrap().removals.is_empty(),
            "it replaced s1's wait"
        );
    }

    #[test]
    fn a_soft_move_that_no_new_path_answers_keeps_the_old_paths() {
        let (sh, rx) = test_shared_events(1);
        apply(
            &sh,
            vec![
                TableOp::AddPath {
                    sa: "s0".into(),
                    path: new_path("c", "l2", Role::Active, true),
                },
                wait("s0", &["a"], &["c"], 0),
            ],
        )
        .unwrap();
        let before = sh.tables.swaps();
        // Past the deadline (0 ms) at the next look: the wait ends, nothing is removed.
        let end = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let log = loop {
            let log = advance_pending(&sh);
            if !log.is_empty() || std::time::Instant::now() > end {
                break log;
            }
            std::thread::yield_now();
        };
        assert!(log[0].0, "a warning: {log:?}");
        assert_eq!(sh.tables.swaps(), before, "no swap");
        assert_eq!(names(&paths(&sh, "s0")), ["a", "b", "c"]);
        assert_eq!(ended(&rx), [("s0".into(), None, vec!["a".into()])]);
        assert!(sh.table.lock().unwrap().removals.is_empty());
        // c answering later removes nothing: the wait is over.
        let t = sh.tables.load_full();
        t.outbound[0].paths[2].state.probe_answered(0, 1);
        t.outbound[0].paths[2].state.verify();
        advance_pending(&sh);
        assert_eq!(names(&paths(&sh, "s0")), ["a", "b", "c"]);
        assert!(ended(&rx).is_empty());
    }

    #[test]
    fn a_soft_moves_wait_is_checked_and_follows_removals() {
        let (sh, rx) = test_shared_events(1);
        for (op, what) in [
            (wait("s0", &[], &["a"], 10), "nothing to remove"),
            (wait("s0", &["a"], &[], 10), "nothing to wait for"),
            (wait("s0", &["a"], &["a", "b"], 10), "both"),
            (wait("s0", &["a"], &["z"], 10), "no path"),
            (wait("nope", &["a"], &["b"], 10), "no SA"),
        ] {
            assert!(apply(&sh, vec![op]).is_err(), "{what}");
        }
        apply(
            &sh,
            vec![
                TableOp::AddPath {
                    sa: "s0".into(),
                    path: new_path("c", "l2", Role::Active, true),
                },
                wait("s0", &["a"], &["c"], 60_000),
            ],
        )
        .unwrap();
        // The path waited for is removed: the wait ends without an event.
        remove_path(&sh, "s0", "c").unwrap();
        assert!(sh.table.lock().unwrap().removals.is_empty());
        advance_pending(&sh);
        assert!(ended(&rx).is_empty());
        assert_eq!(names(&paths(&sh, "s0")), ["a", "b"]);
    }

    #[test]
    fn path_order_and_roles() {
        let sh = shared(1);
        apply(
            &sh,
            vec![
                TableOp::AddPath {
                    sa: "s0".into(),
                    path: new_path("c", "l1", Role::Standby, false),
                },
                TableOp::SetPathOrder {
                    sa: "s0".into(),
                    order: vec!["c".into(), "b".into()],
                },
                TableOp::SetRole {
                    sa: "s0".into(),
                    path: "a".into(),
                    role: Role::Alternate,
                },
                TableOp::SetPolicy {
                    sa: "s0".into(),
                    policy: Policy::Redundant,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            paths(&sh, "s0"),
            [
                ("c".into(), Role::Standby),
                ("b".into(), Role::Standby),
                ("a".into(), Role::Alternate)
            ]
        );
        assert_eq!(sh.tables.load().outbound[0].policy, Policy::Redundant);
        // The single-change methods are batches of one, with their errors as they were.
        assert!(matches!(
            set_policy(&sh, "zz", Policy::Failover),
            Err(EngineError::NoSa { .. })
        ));
        let before = sh.tables.swaps();
        remove_path(&sh, "s0", "c").unwrap();
        assert_eq!(sh.tables.swaps(), before + 1);
    }
}
