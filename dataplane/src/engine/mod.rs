//! The packet engine: worker threads that move packets between a multi-queue TUN device and
//! the outer UDP sockets (`worker.rs`, the loop; `outbound.rs` and `inbound.rs`), a monitor
//! thread that probes paths and reports SA usage (`monitor.rs`), and the operations that
//! change the SA table as it stands and publish a new snapshot of it (`table.rs`). Failures
//! are [`EngineError`]s; what the control plane must act on arrives as [`Event`]s.
//!
//! ```text
//!  TUN queue i ──read──▶ split TSO ─▶ lookup SA by selector ─▶ seal train ─▶ schedule ─▶ sendmmsg/GSO
//!  UDP socket  ──recvmmsg/GRO──▶ classify ─▶ lookup SA by SPI ─▶ open ─▶ selectors ─▶ GRO ─▶ TUN write
//! ```
//!
//! Worker `i` owns TUN queue `i` and polls every outer socket (the sockets are shared; whoever
//! is woken drains them). The control side ([`Engine`]'s methods, called from the daemon's
//! control-socket and IKE threads) never touches packets: it builds a new
//! [`SaTable`](crate::sa_table::SaTable) and publishes it with one pointer swap; workers pick
//! it up at their next batch.

mod error;
mod inbound;
mod monitor;
mod outbound;
mod status;
mod table;
mod worker;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::aead::{Backend, Cipher};
use crate::esp::Mode;
use crate::event::{self, Event, EventSender};
use crate::sa_table::{Policy, Prefix, Role, SaTables};
use crate::tun::{Offloads, Tun, TunConfig};

pub use error::EngineError;
pub use status::{EngineStatus, InterfaceStatus, MarkStatus, OffloadStatus, PathStatus, SaStatus};

/// Everything the engine needs to start.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Worker threads; one TUN queue each. At least 1.
    pub workers: usize,
    /// TUN name, MTU and whether to ask for offloads (`queues` is set to `workers`).
    pub tun: TunConfig,
    /// Inner addresses to put on the TUN.
    pub addresses: Vec<Prefix>,
    /// Prefixes to route into the TUN (empty: every SA's `remote_ts`).
    pub routes: Vec<Prefix>,
    /// Outer interfaces, one UDP socket each.
    pub interfaces: Vec<InterfaceConfig>,
    /// Manually keyed SAs.
    pub sas: Vec<SaSpec>,
    /// Where manual SAs keep their sequence marks, so that no sequence number is used twice
    /// and no packet accepted twice across restarts ([`crate::marks`]). `None`: no marks, for
    /// tests and embedders that never restart with the same keys; the daemon always sets it.
    pub state_dir: Option<std::path::PathBuf>,
    /// Replay window size in packets.
    pub replay_window: u64,
    /// AEAD backend.
    pub backend: Backend,
    /// Probe interval per path; zero disables probes (then NAT keepalives are sent instead).
    pub probe_interval: Duration,
    /// A path with no probe answer for this long is down.
    pub dead_after: Duration,
    /// NAT keepalive interval on idle paths when probes are off.
    pub keepalive: Duration,
    /// Lowers the last usable outbound sequence number of every SA to this (the soft
    /// limit, where a rekey is asked for, at 7/8 of it). For tests only: `None` keeps the
    /// natural limits, 2^32-1 and with ESN 2^64-1.
    pub seq_limit: Option<u64>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            workers: std::thread::available_parallelism().map_or(1, |n| n.get()),
            tun: TunConfig::default(),
            addresses: Vec::new(),
            routes: Vec::new(),
            interfaces: Vec::new(),
            sas: Vec::new(),
            state_dir: None,
            replay_window: 65_536,
            backend: Backend::Ring,
            probe_interval: Duration::from_millis(50),
            dead_after: Duration::from_millis(200),
            keepalive: Duration::from_secs(20),
            seq_limit: None,
        }
    }
}

/// One outer interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceConfig {
    /// The name paths use.
    pub name: String,
    /// OS device to bind to (SO_BINDTODEVICE).
    pub device: Option<String>,
    /// Local address.
    pub address: IpAddr,
    /// Local UDP port.
    pub port: u16,
}

/// A manually keyed SA pair.
#[derive(Clone)]
pub struct SaSpec {
    /// Name.
    pub name: String,
    /// Tunnel or transport.
    pub mode: Mode,
    /// AEAD.
    pub cipher: Cipher,
    /// Extended sequence numbers.
    pub esn: bool,
    /// SPI of the outbound SA (the peer's inbound).
    pub spi_out: u32,
    /// `key || salt` of the outbound SA.
    pub key_out: Zeroizing<Vec<u8>>,
    /// SPI of the inbound SA.
    pub spi_in: u32,
    /// `key || salt` of the inbound SA.
    pub key_in: Zeroizing<Vec<u8>>,
    /// Our inner addresses.
    pub local_ts: Vec<Prefix>,
    /// The peer's inner addresses.
    pub remote_ts: Vec<Prefix>,
    /// Scheduling policy.
    pub policy: Policy,
    /// Paths, in preference order.
    pub paths: Vec<PathSpec>,
    /// Hold out-of-order packets up to this long before delivering (zero: no reorder
    /// buffer). For SAs whose peer uses the aggregate policy.
    pub reorder: Duration,
    /// Send liveness probes on this SA's paths. Only a mifsec peer answers them; with any
    /// other peer turn them off: paths then never go down for want of answers, and idle
    /// paths get NAT keepalives instead.
    pub probes: bool,
    /// Push [`Event::Usage`] for this SA pair about every [`USAGE_INTERVAL`] while its
    /// counters move (the control plane's lifetimes by bytes and packets, liveness checks).
    pub report_usage: bool,
}

impl std::fmt::Debug for SaSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaSpec")
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("cipher", &self.cipher)
            .field("esn", &self.esn)
            .field("spi_out", &format_args!("{:08x}", self.spi_out))
            .field("spi_in", &format_args!("{:08x}", self.spi_in))
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("policy", &self.policy)
            .field("paths", &self.paths)
            .field("reorder", &self.reorder)
            .field("probes", &self.probes)
            .field("report_usage", &self.report_usage)
            .finish_non_exhaustive()
    }
}

/// One path of an SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSpec {
    /// Name.
    pub name: String,
    /// The `[interfaces.*]` name.
    pub interface: String,
    /// Peer address and port.
    pub remote: SocketAddr,
    /// Role.
    pub role: Role,
    /// Aggregate weight.
    pub weight: u32,
    /// Pinned destination prefixes.
    pub pin: Vec<Prefix>,
    /// Return routability: the path carries no data, for any policy, until a probe sent on
    /// it was answered on it (from `remote`, on the interface's socket). It is probed from
    /// the moment it is added (the first probe at once), so it carries traffic within one
    /// round trip, plus one probe interval when that probe is lost. Needs probes (the SA's
    /// `probes` and a non-zero probe interval): without them it never carries anything.
    /// `false` (manual SAs): usable at once.
    pub verify: bool,
}

/// One change of a batch given to [`Engine::apply`]. SAs and paths are named as in
/// [`SaSpec::name`] and [`PathSpec::name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TableOp {
    /// Adds a path to an SA (its interface must be open, its name new in the SA).
    AddPath {
        /// The SA.
        sa: String,
        /// The path.
        path: PathSpec,
    },
    /// Removes a path from an SA; a soft handover waiting for it is abandoned.
    RemovePath {
        /// The SA.
        sa: String,
        /// The path's name.
        path: String,
    },
    /// Gives a path another role.
    SetRole {
        /// The SA.
        sa: String,
        /// The path's name.
        path: String,
        /// Its new role.
        role: Role,
    },
    /// Moves the SA's traffic to `path`, as [`Engine::handover`] does. Soft and the target not
    /// yet answering: the handover waits in the engine (the monitor completes every soft
    /// handover that is ready in one table swap), replacing one of the same SA that waited.
    Handover {
        /// The SA.
        sa: String,
        /// The target path.
        path: String,
        /// Hard (at once) or soft (make before break).
        hard: bool,
    },
    /// Changes an SA's scheduling policy.
    SetPolicy {
        /// The SA.
        sa: String,
        /// The policy.
        policy: Policy,
    },
    /// Replaces an SA's selectors, both directions (a transport-mode SA whose outer
    /// addresses, and so its selectors, moved: docs/PROTOCOL.md section 6.5).
    SetSelectors {
        /// The SA.
        sa: String,
        /// Our inner addresses.
        local_ts: Vec<Prefix>,
        /// The peer's.
        remote_ts: Vec<Prefix>,
    },
    /// The second half of a soft move (make before break), done by the engine: once one of
    /// `wait_for` answers probes on itself (verified and up, as a soft [`TableOp::Handover`]
    /// waits for), the paths `remove` leave the SA, in one table swap with every other SA
    /// whose wait ended at that monitor tick; at once, in this batch's swap, when one of them
    /// answers already. If none of them answers within `within`, nothing is removed: the old
    /// paths stay (and carry traffic as the policy says), the wait ends. Either way, once,
    /// [`Event::SoftMoveEnded`] tells the control plane (after the table that shows it is
    /// published). Replaces a wait of the same SA; removing a path of the wait (RemovePath)
    /// takes it out of the wait's lists, and a wait left with nothing to remove or nothing to
    /// wait for ends silently, as does removing the SA. Every name must be a path of the SA,
    /// both lists non-empty and apart. Without probes (the SA's or the engine's) nothing is
    /// ever verified, so the wait always ends at `within`, removing nothing.
    RemoveWhenUp {
        /// The SA.
        sa: String,
        /// The paths that leave.
        remove: Vec<String>,
        /// The paths of which one must answer first.
        wait_for: Vec<String>,
        /// How long to wait at most.
        within: Duration,
    },
    /// Puts the named paths first, in this order; the others follow in their order. Standby
    /// paths take over in this order (alternates), and failover's first live active path is
    /// the first in it. Every name must be a path of the SA, at most once.
    SetPathOrder {
        /// The SA.
        sa: String,
        /// Path names.
        order: Vec<String>,
    },
}

impl TableOp {
    /// The SA the change is for.
    pub fn sa(&self) -> &str {
        match self {
            TableOp::AddPath { sa, .. }
            | TableOp::RemovePath { sa, .. }
            | TableOp::SetRole { sa, .. }
            | TableOp::Handover { sa, .. }
            | TableOp::SetPolicy { sa, .. }
            | TableOp::SetPathOrder { sa, .. }
            | TableOp::SetSelectors { sa, .. }
            | TableOp::RemoveWhenUp { sa, .. } => sa,
        }
    }
}

/// An IKE message received on an outer socket behind the non-ESP marker (RFC 3948), handed
/// to the control thread. The marker is already removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeDatagram {
    /// The `[interfaces.*]` name of the socket it arrived on.
    pub interface: String,
    /// The local address it was sent to.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The IKE message.
    pub bytes: Vec<u8>,
}

/// How many IKE messages may wait for the control thread before more are dropped (counted).
const IKE_QUEUE: usize = 1024;

/// Longer IKE messages are dropped (counted as `ike_oversize`) instead of queued for the
/// control thread (strongSwan's default `max_packet`): the queue then holds at most
/// `IKE_QUEUE` times this many bytes.
pub const MAX_IKE_MESSAGE: usize = 10_000;

/// How many SA events may wait for the control thread before more are dropped (counted).
/// Each SA raises at most two sequence-number events (soft limit, exhaustion); usage reports
/// use at most half of the queue ([`EventSender::send_spare`]).
const EVENT_QUEUE: usize = 1024;

/// How often the monitor looks at the counters of SAs with
/// [`report_usage`](SaSpec::report_usage), and pushes [`Event::Usage`] for those that moved.
pub const USAGE_INTERVAL: Duration = Duration::from_millis(250);

/// Engine-wide counters: packets that belong to no SA, and UDP GSO sends.
#[derive(Debug, Default)]
pub(crate) struct GlobalCounters {
    pub no_sa: AtomicU64,
    pub no_path: AtomicU64,
    pub unknown_spi: AtomicU64,
    pub malformed: AtomicU64,
    pub keepalives_rx: AtomicU64,
    pub ike_unclaimed: AtomicU64,
    pub ike_oversize: AtomicU64,
    pub send_errors: AtomicU64,
    pub tun_errors: AtomicU64,
    pub probes_answered_for_peer: AtomicU64,
    /// UDP sends that carried a GSO train of several datagrams, and the datagrams in them.
    pub gso_sends: AtomicU64,
    pub gso_datagrams: AtomicU64,
    /// Received UDP GRO trains of several datagrams, and the datagrams in them.
    pub gro_trains: AtomicU64,
    pub gro_datagrams: AtomicU64,
    /// TUN reads that were super-packets (TSO/USO: a virtio header with a GSO type).
    pub tun_super_reads: AtomicU64,
    /// TUN writes that were coalesced TCP super-packets (a virtio header with a GSO type).
    pub tun_super_writes: AtomicU64,
}

impl GlobalCounters {
    #[inline]
    pub fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared by workers, the monitor and the control side.
#[derive(Debug)]
pub(crate) struct Shared {
    pub tables: SaTables,
    pub stop: AtomicBool,
    pub epoch: Instant,
    pub counters: GlobalCounters,
    /// The SA table as it stands, from which every published snapshot is built.
    pub table: Mutex<table::TableState>,
    pub probe_interval: Duration,
    pub dead_after: Duration,
    pub keepalive: Duration,
    pub tun_name: String,
    pub tun_offloads: Offloads,
    pub workers: usize,
    /// IKE messages that arrived behind the non-ESP marker, for the control thread.
    pub ike_tx: crossbeam_channel::Sender<IkeDatagram>,
    /// The events to the control plane (the monitor's usage reports; outbound SAs hold
    /// clones of it for their sequence-number events).
    pub events: EventSender,
}

impl Shared {
    /// Nanoseconds since the engine started: the clock of probes and liveness.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// A running engine. Dropping it stops the threads.
#[derive(Debug)]
pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    /// Keeps manual SAs' sequence marks on disk; settles them after the workers stopped.
    marks: crate::marks::Keeper,
    ike_rx: Mutex<Option<crossbeam_channel::Receiver<IkeDatagram>>>,
    events_rx: Mutex<Option<crossbeam_channel::Receiver<Event>>>,
    events_lost: EventSender,
}

impl Engine {
    /// Opens the TUN device and the outer sockets, installs the SAs, configures the TUN's
    /// addresses and routes, and starts the workers and the monitor.
    pub fn start(cfg: EngineConfig) -> Result<Engine, EngineError> {
        Engine::open(cfg)?.start()
    }

    /// The first half of [`Engine::start`]: everything that needs privileges (the TUN
    /// queues, the outer sockets, the TUN's addresses and routes) and no thread yet. The
    /// daemon drops its privileges between the halves, so that every thread it starts
    /// inherits the reduced credentials.
    pub fn open(cfg: EngineConfig) -> Result<OpenedEngine, EngineError> {
        let workers = cfg.workers.max(1);
        let tun_cfg = TunConfig {
            queues: workers,
            ..cfg.tun.clone()
        };
        let tun = Tun::open(&tun_cfg).map_err(|source| EngineError::OpenTun {
            name: tun_cfg.name.clone(),
            source,
        })?;
        let tun_name = tun.name().to_owned();
        let tun_offloads = tun.offloads();
        table::configure_tun(&tun_name, &cfg)?;
        let (events, events_rx) = event::channel(EVENT_QUEUE);
        let (state, tracked) = table::TableState::new(&cfg, events.clone())?;
        let (ike_tx, ike_rx) = crossbeam_channel::bounded(IKE_QUEUE);
        let shared = Arc::new(Shared {
            tables: SaTables::default(),
            stop: AtomicBool::new(false),
            epoch: Instant::now(),
            counters: GlobalCounters::default(),
            table: Mutex::new(state),
            probe_interval: cfg.probe_interval,
            dead_after: cfg.dead_after,
            keepalive: cfg.keepalive,
            tun_name,
            tun_offloads,
            workers,
            ike_tx,
            events: events.clone(),
        });
        table::publish(&shared);
        Ok(OpenedEngine {
            shared,
            tun,
            ike_rx,
            events_rx,
            events,
            tracked,
        })
    }

    /// The engine's status: interfaces, SAs, paths, counters.
    pub fn status(&self) -> EngineStatus {
        let mut st = status::collect(&self.shared);
        let errors = self.marks.errors();
        if errors > 0 {
            st.drops.insert("mark_write_errors".into(), errors);
        }
        st
    }

    /// The outbound and inbound counters of SA `name`, as `status` would show them (for
    /// the metrics of a child SA about to be removed); `None` without such an SA.
    pub fn sa_counters(
        &self,
        name: &str,
    ) -> Option<(
        crate::counters::CounterSnapshot,
        crate::counters::CounterSnapshot,
    )> {
        status::counters_of(&self.shared, name)
    }

    /// Applies a batch of changes over any number of SAs, all or nothing, with one table
    /// swap: the changes are applied in order to a working copy of the table's state (so a
    /// later change sees the earlier ones: a path added then removed in the same batch is
    /// gone, two handovers of one SA leave the later in force), and only when every one of
    /// them succeeded is the copy kept and published. On the first error nothing has changed
    /// and nothing is published; the error says which change failed
    /// ([`EngineError::InBatch`]). An empty batch publishes nothing. Returns one message per
    /// change. Paths added with [`PathSpec::verify`] get their first probe at once, after the
    /// swap.
    pub fn apply(&self, ops: Vec<TableOp>) -> Result<Vec<String>, EngineError> {
        table::apply(&self.shared, ops).map_err(|(index, e)| EngineError::InBatch {
            index,
            source: Box::new(e),
        })
    }

    /// The names of SA `sa`'s paths in the table published now, in order; `None` when it has
    /// no SA of that name. Cheap (no status is built).
    pub fn path_names(&self, sa: &str) -> Option<Vec<String>> {
        let table = self.shared.tables.load();
        table
            .outbound
            .iter()
            .find(|e| e.name == sa)
            .map(|e| e.paths.iter().map(|p| p.state.name.clone()).collect())
    }

    /// Number of SA table swaps so far (`table_swaps` in the status).
    pub fn table_swaps(&self) -> u64 {
        self.shared.tables.swaps()
    }

    /// Moves SA `sa` to path `path`. Soft: make-before-break, the old paths keep carrying
    /// traffic until the new one answers a probe, then they become standby (two table swaps).
    /// Hard: one swap, at once.
    pub fn handover(&self, sa: &str, path: &str, hard: bool) -> Result<String, EngineError> {
        table::handover(&self.shared, sa, path, hard)
    }

    /// Opens a socket on a new interface without touching the others.
    pub fn add_interface(&self, iface: InterfaceConfig) -> Result<String, EngineError> {
        table::add_interface(&self.shared, iface)
    }

    /// Closes an interface's socket; paths on it stop carrying traffic.
    pub fn remove_interface(&self, name: &str) -> Result<String, EngineError> {
        table::remove_interface(&self.shared, name)
    }

    /// Changes an SA's scheduling policy.
    pub fn set_policy(&self, sa: &str, policy: Policy) -> Result<String, EngineError> {
        table::set_policy(&self.shared, sa, policy)
    }

    /// Adds a path to an SA.
    pub fn add_path(&self, sa: &str, path: PathSpec) -> Result<String, EngineError> {
        table::add_path(&self.shared, sa, path)
    }

    /// Removes a path from an SA.
    pub fn remove_path(&self, sa: &str, path: &str) -> Result<String, EngineError> {
        table::remove_path(&self.shared, sa, path)
    }

    /// The SAs in Wireshark's `esp_sa` table format, one line per direction (addresses are
    /// wildcards: an SA's packets travel between several address pairs).
    pub fn wireshark_keys(&self) -> Vec<String> {
        table::wireshark_keys(&self.shared)
    }

    /// Installs an SA pair (an IKE-negotiated child SA, or a manual one) without touching the
    /// others: one table swap. Its name must be new; a rekey installs the new pair under a new
    /// name and removes the old one once the peer uses the new one (make before break).
    pub fn install_sa(&self, sa: SaSpec) -> Result<String, EngineError> {
        table::install_sa(&self.shared, sa)
    }

    /// Installs a manually keyed SA pair while the engine runs (a configuration reload):
    /// as at start, it resumes above its sequence marks in `state_dir` (created if missing)
    /// and the mark keeper keeps them from then on. One table swap.
    pub fn install_manual_sa(
        &self,
        sa: SaSpec,
        state_dir: &std::path::Path,
    ) -> Result<String, EngineError> {
        let (msg, tracked) = table::install_manual_sa(&self.shared, sa, state_dir)?;
        if let Err(source) = self.marks.add(tracked) {
            return Err(EngineError::Spawn {
                thread: "the mark keeper",
                source,
            });
        }
        Ok(msg)
    }

    /// Removes a manually keyed SA pair (a configuration reload) and stops keeping its
    /// marks, which stay above every sequence number it used: one table swap.
    pub fn remove_manual_sa(&self, name: &str) -> Result<String, EngineError> {
        let r = table::remove_sa(&self.shared, name)?;
        self.marks.forget(name);
        Ok(r)
    }

    /// Removes an SA pair: one table swap. Packets still in flight for it are dropped as
    /// `unknown_spi`.
    pub fn remove_sa(&self, name: &str) -> Result<String, EngineError> {
        table::remove_sa(&self.shared, name)
    }

    /// Moves an SA behind every SA that is not demoted in the outbound lookup (SAs installed
    /// later go ahead of it too): another SA with matching selectors (its successor after a
    /// rekey) takes the outbound traffic at once, while this one keeps its sequence counter,
    /// replay window and counters and goes on accepting inbound packets until it is removed.
    /// Of several demoted SAs, the one demoted last comes first. One table swap.
    pub fn demote_sa(&self, name: &str) -> Result<String, EngineError> {
        table::demote_sa(&self.shared, name)
    }

    /// IKE messages dropped because the channel to the control thread was full (or never
    /// taken): `ike_unclaimed` in the status, without building the whole status.
    pub fn ike_unclaimed(&self) -> u64 {
        self.shared.counters.ike_unclaimed.load(Ordering::Relaxed)
    }

    /// UDP GSO sends so far: (sends that carried a train of several ESP datagrams, the
    /// datagrams in them). What the rest of the datagrams went out as is single sends.
    pub fn gso_sends(&self) -> (u64, u64) {
        let c = &self.shared.counters;
        (
            c.gso_sends.load(Ordering::Relaxed),
            c.gso_datagrams.load(Ordering::Relaxed),
        )
    }

    /// IKE messages longer than [`MAX_IKE_MESSAGE`] dropped: `ike_oversize` in the status.
    pub fn ike_oversize(&self) -> u64 {
        self.shared.counters.ike_oversize.load(Ordering::Relaxed)
    }

    /// Takes the receiving end of the IKE messages that arrive on the outer sockets (port
    /// 4500, behind the non-ESP marker). Only the first call gets it.
    pub fn take_ike_receiver(&self) -> Option<crossbeam_channel::Receiver<IkeDatagram>> {
        self.ike_rx.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// Takes the receiving end of the SA events ([`Event::SeqSoftLimit`] and
    /// [`Event::SeqExhausted`] of every outbound SA, [`Event::Usage`] of the SAs that report
    /// it; by SPI). Only the first call gets it.
    pub fn take_event_receiver(&self) -> Option<crossbeam_channel::Receiver<Event>> {
        self.events_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
    }

    /// SA events dropped because nobody took them in time (the channel was full).
    pub fn events_lost(&self) -> u64 {
        self.events_lost.lost()
    }

    /// Sends an IKE message on interface `interface` to `remote`, behind the non-ESP marker.
    pub fn send_ike(
        &self,
        interface: &str,
        remote: SocketAddr,
        bytes: &[u8],
    ) -> Result<(), EngineError> {
        let table = self.shared.tables.load_full();
        let sock = table
            .sockets
            .iter()
            .find(|(n, _)| n == interface)
            .map(|(_, s)| s)
            .ok_or_else(|| EngineError::NoInterface {
                name: interface.to_owned(),
            })?;
        let mut buf = Vec::with_capacity(bytes.len() + 4);
        buf.extend_from_slice(&crate::esp::wire::NON_ESP_MARKER);
        buf.extend_from_slice(bytes);
        sock.send_to(&buf, remote)
            .map(|_| ())
            .map_err(|source| EngineError::SendIke { remote, source })
    }

    /// Stops the threads and waits for them.
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        // No worker seals or opens any more: the exact numbers can be stored.
        self.marks.settle();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

/// An engine's SA table alone: no TUN, no worker, no monitor (so no probe is ever answered
/// and no soft handover completes), the sockets of the configuration's interfaces bound.
/// For benchmarks of the table's changes ([`Detached::apply`] is [`Engine::apply`]).
#[doc(hidden)]
#[derive(Debug)]
pub struct Detached {
    shared: Shared,
}

#[doc(hidden)]
impl Detached {
    /// The table of `cfg`'s interfaces and SAs (`tun`, `addresses` and `routes` unused).
    pub fn new(cfg: &EngineConfig) -> Result<Detached, EngineError> {
        Ok(Detached {
            shared: table::detached(cfg)?.0,
        })
    }

    /// `n` SAs `s0..`, each with paths `a` (active, interface `l1`) and `b` (standby, `l2`),
    /// two loopback interfaces.
    pub fn sample_config(n: u32) -> EngineConfig {
        table::sample_config(n)
    }

    /// As [`Engine::apply`].
    pub fn apply(&self, ops: Vec<TableOp>) -> Result<Vec<String>, EngineError> {
        table::apply(&self.shared, ops).map_err(|(index, e)| EngineError::InBatch {
            index,
            source: Box::new(e),
        })
    }

    /// As [`Engine::table_swaps`].
    pub fn table_swaps(&self) -> u64 {
        self.shared.tables.swaps()
    }
}

/// An engine with its TUN queues and sockets open and its SA table published, but no
/// thread yet (see [`Engine::open`]). Dropping it closes everything.
#[derive(Debug)]
pub struct OpenedEngine {
    shared: Arc<Shared>,
    tun: Tun,
    ike_rx: crossbeam_channel::Receiver<IkeDatagram>,
    events_rx: crossbeam_channel::Receiver<Event>,
    events: EventSender,
    /// Manual SAs with marks on disk, for the keeper thread.
    tracked: Vec<crate::marks::Tracked>,
}

impl OpenedEngine {
    /// Where the engine still writes once it runs: the state directory of manual SAs (their
    /// mark files inside it are replaced by rename). A daemon that drops privileges hands it
    /// to its user first.
    pub fn state_dirs(&self) -> Vec<std::path::PathBuf> {
        let mut dirs: Vec<std::path::PathBuf> = Vec::new();
        for f in self.tracked.iter().flat_map(|t| t.files()) {
            if let Some(dir) = f.parent().filter(|d| !dirs.iter().any(|p| p == d)) {
                dirs.push(dir.to_owned());
            }
        }
        dirs
    }

    /// The second half of [`Engine::start`]: starts the workers and the monitor.
    pub fn start(self) -> Result<Engine, EngineError> {
        let OpenedEngine {
            shared,
            tun,
            ike_rx,
            events_rx,
            events,
            tracked,
        } = self;
        // The marks must stay writable for as long as the SAs run, by the user the daemon
        // is now: refuse to start rather than stop at the first block's end.
        for t in &tracked {
            t.check_writable().map_err(EngineError::MarksNotWritable)?;
        }
        let marks = crate::marks::Keeper::start(tracked).map_err(|source| EngineError::Spawn {
            thread: "the mark keeper",
            source,
        })?;
        let mut engine = Engine {
            shared: Arc::clone(&shared),
            threads: Vec::new(),
            marks,
            ike_rx: Mutex::new(Some(ike_rx)),
            events_rx: Mutex::new(Some(events_rx)),
            events_lost: events,
        };
        // A failure to spawn drops `engine`, which stops the threads already started.
        for (i, queue) in tun.into_queues().into_iter().enumerate() {
            let shared = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name(format!("mifsec-worker-{i}"))
                .spawn(move || worker::run(&shared, queue))
                .map_err(|source| EngineError::Spawn {
                    thread: "worker",
                    source,
                })?;
            engine.threads.push(t);
        }
        let s = Arc::clone(&shared);
        engine.threads.push(
            std::thread::Builder::new()
                .name("mifsec-monitor".into())
                .spawn(move || monitor::run(&s))
                .map_err(|source| EngineError::Spawn {
                    thread: "monitor",
                    source,
                })?,
        );
        Ok(engine)
    }
}
