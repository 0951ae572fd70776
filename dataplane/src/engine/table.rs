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

use super::{EngineConfig, EngineError, InterfaceConfig, PathSpec, SaSpec, Shared};
use crate::aead::{Backend, Cipher};
use crate::esp::{InboundSa, OutboundSa, SaConfig};
use crate::event::{EventSender, Usage};
use crate::marks::{self, Direction, Tracked};
use crate::path::PathState;
use crate::reorder::Reorder;
use crate::sa_table::{
    InboundEntry, OutboundEntry, PathEntry, Policy, Prefix, Role, SaTable, smooth_schedule,
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
#[derive(Debug)]
struct PathRt {
    spec: PathSpec,
    role: Role,
    state: Arc<PathState>,
    /// The aggregate weight in force: the configured one, then the monitor's estimate.
    weight: u32,
}

/// One SA pair as configured now.
#[derive(Debug)]
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
#[derive(Debug)]
struct Pending {
    sa: String,
    path: String,
    deadline_ns: u64,
}

/// The engine's configuration as it stands, changed by the engine's methods (the caller's
/// thread) and by the monitor (handovers, weights), under [`Shared::table`].
#[derive(Debug)]
pub(crate) struct TableState {
    interfaces: Vec<(InterfaceConfig, Arc<OuterSocket>)>,
    sas: Vec<SaRt>,
    next_path_id: u32,
    pending: Vec<Pending>,
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
        let state = Arc::new(PathState::new(
            id,
            &spec.name,
            &spec.interface,
            spec.remote,
            now_ns,
        ));
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
            let weights: Vec<u32> = paths
                .iter()
                .map(|p| {
                    if p.role == Role::Alternate {
                        0
                    } else {
                        p.weight
                    }
                })
                .collect();
            let schedule = smooth_schedule(&weights)
                .into_iter()
                .filter(|&i| weights[usize::from(i)] > 0)
                .collect();
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

fn with_state<T>(
    shared: &Shared,
    f: impl FnOnce(&mut TableState, u64) -> Result<T, EngineError>,
) -> Result<T, EngineError> {
    let mut st = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    let r = f(&mut st, shared.now_ns())?;
    shared.tables.publish(st.build());
    Ok(r)
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

pub(crate) fn handover(
    shared: &Shared,
    sa: &str,
    path: &str,
    hard: bool,
) -> Result<String, EngineError> {
    let timeout_ns = (shared.dead_after.as_nanos() as u64).max(1_000_000_000);
    with_state(shared, |st, now| {
        let s = st.sa_mut(sa)?;
        let target = s
            .paths
            .iter_mut()
            .find(|p| p.spec.name == path)
            .ok_or_else(|| no_path(sa, path))?;
        let up = target.state.liveness() == crate::path::Liveness::Up;
        if hard || up || shared.probe_interval.is_zero() {
            promote(s, path);
            return Ok(format!(
                "{sa}: {} handover to {path} done",
                if hard { "hard" } else { "soft" }
            ));
        }
        // Make before break: the target stays out of the schedule (alternate) but is probed;
        // the monitor promotes it when it answers.
        if target.role == Role::Standby {
            target.role = Role::Alternate;
        }
        st.pending.retain(|p| p.sa != sa);
        st.pending.push(Pending {
            sa: sa.into(),
            path: path.into(),
            deadline_ns: now + timeout_ns,
        });
        Ok(format!(
            "{sa}: soft handover to {path} started; it completes when {path} answers a probe"
        ))
    })
}

/// Called by the monitor: completes soft handovers whose target is up, abandons those past
/// their deadline. Returns messages for the log (logged by the caller, outside the lock),
/// each with whether it is a warning.
pub(crate) fn advance_pending(shared: &Shared) -> Vec<(bool, String)> {
    let now = shared.now_ns();
    let mut st = shared.table.lock().unwrap_or_else(|p| p.into_inner());
    if st.pending.is_empty() {
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
        if target.state.liveness() == crate::path::Liveness::Up {
            promote(sa, &p.path);
            changed = true;
            log.push((false, format!("{}: soft handover to {} done", p.sa, p.path)));
        } else if now > p.deadline_ns {
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
    if changed {
        shared.tables.publish(st.build());
    }
    log
}

pub(crate) fn install_sa(shared: &Shared, sa: SaSpec) -> Result<String, EngineError> {
    with_state(shared, |st, now| {
        if st.sas.iter().any(|s| s.spec.name == sa.name) {
            return Err(EngineError::SaExists { name: sa.name });
        }
        if st.sas.iter().any(|s| s.spec.spi_in == sa.spi_in) {
            return Err(EngineError::SpiInUse { spi: sa.spi_in });
        }
        let name = sa.name.clone();
        st.add_sa(sa, now)?;
        Ok(format!("SA {name} installed"))
    })
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
    with_state(shared, |st, _| {
        st.sa_mut(sa)?.policy = policy;
        Ok(format!("{sa}: policy {}", policy.name()))
    })
}

pub(crate) fn add_path(shared: &Shared, sa: &str, path: PathSpec) -> Result<String, EngineError> {
    with_state(shared, |st, now| {
        if !st.interfaces.iter().any(|(c, _)| c.name == path.interface) {
            return Err(EngineError::NoInterface {
                name: path.interface,
            });
        }
        if st
            .sa_mut(sa)?
            .paths
            .iter()
            .any(|p| p.spec.name == path.name)
        {
            return Err(EngineError::PathExists {
                sa: sa.to_owned(),
                path: path.name,
            });
        }
        let name = path.name.clone();
        let rt = st.new_path(path, now);
        st.sa_mut(sa)?.paths.push(rt);
        Ok(format!("{sa}: path {name} added"))
    })
}

pub(crate) fn remove_path(shared: &Shared, sa: &str, path: &str) -> Result<String, EngineError> {
    with_state(shared, |st, _| {
        let s = st.sa_mut(sa)?;
        let before = s.paths.len();
        s.paths.retain(|p| p.spec.name != path);
        if s.paths.len() == before {
            return Err(no_path(sa, path));
        }
        Ok(format!("{sa}: path {path} removed"))
    })
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
