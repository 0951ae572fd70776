//! The IKE thread of the daemon: the I/O shell of the sans-IO [`Endpoint`], which owns
//! the IKE SAs of the configured connections, routes datagrams to them, creates
//! responders and applies the COOKIE gate and the half-open limits (see
//! [`crate::ike::endpoint`]). The thread gives it real datagrams and the real time and
//! acts on what it returns, in the manner of quinn's endpoint driver.
//!
//! * Input: IKE messages that arrive on the engine's port-4500 sockets behind the non-ESP
//!   marker (`Engine::take_ike_receiver`), and on the thread's own UDP sockets bound to port
//!   500 of every interface address; `initiate` / `terminate` / `rekey` commands from the
//!   control socket; the engine's sequence-number events; the interface list from the
//!   interface follower ([`InterfaceSink`], when an interface follows a device).
//! * Bounded input: the port-500 readers hand datagrams over on a bounded channel
//!   ([`INPUT_QUEUE`], `try_send`: a full queue is a counted drop, `queue_dropped_500`);
//!   the thread reads the engine's own bounded port-4500 channel directly (its drops are
//!   the engine's `ike_unclaimed`, also shown as `queue_dropped_4500`). Messages longer
//!   than [`MAX_MESSAGE`] are dropped and counted. A message that is dropped or refused
//!   costs what [`Endpoint::handle`] checks (header, SA lookup, limiter): no status is
//!   rebuilt for it
//!   (the status strings are rebuilt when something changed, at most every
//!   [`PUBLISH_MIN`], and every [`PUBLISH_EVERY`]), and the thread never waits for a
//!   netlink answer (routes and virtual IPs are made on a helper thread, in order).
//! * Output: messages from port 4500 go through `Engine::send_ike` (which adds the
//!   marker), others through the port-500 socket. An initiator starts on 500 and floats to
//!   4500 once NAT detection (or forced encapsulation) says so (RFC 7296 section 2.23).
//! * Rekeys (make-before-break): a rekeyed child's new pair is installed next to the old
//!   one at once; the old pair is removed when the Delete exchange for it completes (either
//!   side's). An IKE SA rekey changes the SPIs the SA is routed by ([`IkeSa::owns`](crate::ike::IkeSa::owns) also
//!   knows the old ones until their Delete is over). `rekey` commands and the lifetimes of
//!   the connection (`rekey_time`, `life_time`, `rand_time`; by volume `rekey_bytes` and
//!   friends, from the usage the engine pushes: [`SaEvent::Usage`]) start rekeys; `dpd_delay` and
//!   `dpd_action` govern liveness checks (`restart` initiates again after a failure).
//! * Child SAs: installed in the engine by [`super::install`]; the status that `mifsec
//!   status` shows is built by [`super::status`].
//!
//! [`IkeHandle`] is what the rest of the daemon holds: commands in, status out.
//!
//! No log line contains key material.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::json;
use tracing::{debug, error, info, warn};

use super::counters::{Book, Messages};
use super::install::{Installed, PathMove};
use super::status::{ChildState, IkeSaStatus, IkeStats, algorithms, id_string, nat_name};
use crate::config::{Connection, IkeSettings, InterfacePrefs};
use crate::ctl::mif::{MIF_ANSWER, MifAnswer, MifCommand};
use crate::dataplane::engine::{Engine, IkeDatagram, InterfaceConfig};
use crate::dataplane::event::{Event as SaEvent, Usage};
use crate::dataplane::iproute;
use crate::dataplane::sa_table::Prefix;
use crate::events;
use crate::ike::endpoint::{self, Endpoint, EndpointConfig, Notice, Output, SaHandle};
use crate::ike::sa::LocalInterface;
use crate::ike::{DpdAction, Event, FailReason, IkeSaInfo, MoveReason, SeqLimitAction};
use crate::logging::{child_span, ike_span};
use crate::wire::HeaderPacket;

/// How long a rekeyed child SA keeps accepting inbound packets after its Delete completed.
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// The IKE port before NAT detection.
pub const IKE_PORT: u16 = 500;
/// The NAT-T port, where the engine's sockets are.
pub const NAT_T_PORT: u16 = 4500;
/// How many datagrams from the port-500 sockets may wait for the IKE thread; more are
/// dropped and counted (`queue_dropped_500`). The engine's port-4500 queue has the same
/// bound.
pub const INPUT_QUEUE: usize = 1024;
/// How many operator commands may wait for the IKE thread (a full queue refuses more).
const COMMAND_QUEUE: usize = 64;
/// How many route and address changes may wait for the helper thread (the IKE thread waits when
/// it is full; one IKE SA needs a few).
pub(super) const IP_QUEUE: usize = 1024;
/// The longest IKE message accepted (strongSwan's default `max_packet`); longer ones are
/// dropped and counted (`oversize`). An IKE_SA_INIT request cannot be fragmented, so this
/// also bounds the copy of it that a half-open responder SA keeps for its AUTH.
pub const MAX_MESSAGE: usize = crate::dataplane::engine::MAX_IKE_MESSAGE;
/// The status (IKE SA list) is rebuilt at least this often (ages, timers, counters).
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// ... and, when something changed, at most this often.
pub const PUBLISH_MIN: Duration = Duration::from_millis(20);

/// Counters the reader threads bump.
#[derive(Debug, Default)]
pub(super) struct InputCounters {
    pub(super) queue_dropped: AtomicU64,
    pub(super) oversize: AtomicU64,
}

/// Why an operator's command for the IKE thread was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The configuration has no connection of this name.
    NoConnection {
        /// The name asked for.
        name: String,
    },
    /// The daemon runs without IKE (no connections configured).
    NoIke {
        /// The connection asked for.
        name: String,
    },
    /// The IKE thread's command queue is full.
    Busy,
    /// The IKE thread has ended.
    Gone,
    /// The IKE thread refused or could not carry out the command (why, for the operator).
    Refused(String),
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CommandError::NoConnection { name } => write!(f, "no connection named {name:?}"),
            CommandError::NoIke { name } => write!(
                f,
                "no connection named {name:?} (no IKE connections configured)"
            ),
            CommandError::Busy => f.write_str("the IKE thread is busy; try again"),
            CommandError::Gone => f.write_str("the IKE thread is gone"),
            CommandError::Refused(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for CommandError {}

/// A thread of the IKE side could not be started.
#[derive(Debug)]
pub struct SpawnError {
    /// Its name.
    pub thread: &'static str,
    /// Why.
    pub source: std::io::Error,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spawning {}: {}", self.thread, self.source)
    }
}

impl std::error::Error for SpawnError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Where the interface follower ([`super::interfaces`]) leaves the current interface list
/// for the IKE thread: the latest list in a slot, and a wake-up on a channel of one (a
/// wake-up already waiting covers the newer list too, so nothing is ever lost or queued).
#[derive(Debug, Clone)]
pub struct InterfaceSink {
    slot: Arc<Mutex<Option<Vec<InterfaceConfig>>>>,
    wake: Sender<()>,
}

impl InterfaceSink {
    /// Hands the IKE thread the interfaces with a socket now (fixed and learned).
    pub fn publish(&self, list: Vec<InterfaceConfig>) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(list);
        let _ = self.wake.try_send(());
    }

    fn take(&self) -> Option<Vec<InterfaceConfig>> {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

enum Msg {
    Initiate(String),
    Terminate(String),
    Rekey(String, bool),
    /// `ctl move`: connection, our address, the peer's; the outcome goes back on the
    /// channel.
    Move(
        String,
        IpAddr,
        Option<IpAddr>,
        Sender<Result<String, String>>,
    ),
    /// `ctl mif`: connection, the checked command; the answers (one per IKE SA) go back on
    /// the channel once every peer answered.
    Mif(String, MifCommand, Sender<Vec<MifAnswer>>),
    /// `ctl clone`: connection, our address, the peer's, the child; the outcome goes back.
    Clone(
        String,
        Option<IpAddr>,
        Option<IpAddr>,
        Option<String>,
        Sender<Result<String, String>>,
    ),
    /// `keys --wireshark`: the IKE SAs' ikev2_decryption_table lines go back.
    Keys(Sender<Vec<String>>),
    /// `ctl reload`: the connections added, changed and removed; a line per change goes
    /// back.
    Reload(Vec<ConnChange>, Sender<Vec<String>>),
    /// `ctl reload`: the `[interfaces.*]` preferences (priority, alternate) of the file;
    /// the announcement they changed goes back (`None`: nothing changed).
    Prefs(BTreeMap<String, InterfacePrefs>, Sender<Option<String>>),
    Stop,
}

/// One connection's part of a configuration reload (`ctl reload`, SIGHUP), as
/// `swanctl --load-conns` merges connections.
#[derive(Debug)]
pub enum ConnChange {
    /// A connection that was not loaded: added (last in the matching order) and, with
    /// `start_action = "start"`, initiated.
    Add(Connection),
    /// A loaded connection whose configuration changed (its keys, its children, the secret
    /// it takes, its pools): IKE SAs made from now on get the new configuration; the
    /// established ones keep running on what they negotiated. With `start_action = "start"`
    /// its IKE SAs are deleted and it is initiated again with the new configuration (as
    /// strongSwan does with a replaced connection whose start action is `start`).
    Replace(Connection),
    /// A connection no longer in the file: its IKE SAs and their child SAs are deleted (a
    /// Delete to the peer) and no new one is made or answered.
    Remove(String),
}

/// How long `ctl move` waits for the IKE thread's answer.
const MOVE_ANSWER: Duration = Duration::from_secs(5);

/// The running IKE thread: commands in, status out.
pub struct IkeHandle {
    tx: Sender<Msg>,
    engine: Arc<Engine>,
    input: Arc<InputCounters>,
    status: Arc<Mutex<Vec<IkeSaStatus>>>,
    stats: Arc<Mutex<IkeStats>>,
    book: Arc<Mutex<Book>>,
    connections: Vec<String>,
    stop: Arc<AtomicBool>,
    main: Option<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
    sink: InterfaceSink,
}

impl std::fmt::Debug for IkeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeHandle")
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl IkeHandle {
    /// Starts the IKE thread for `settings` on `engine` with the port-500 sockets of
    /// [`bind_ike_ports`], takes the engine's IKE receiver, and initiates the connections
    /// with `start_action = "start"`.
    pub fn start(
        engine: Arc<Engine>,
        settings: IkeSettings,
        prefs: BTreeMap<String, InterfacePrefs>,
        interfaces: &[InterfaceConfig],
        ports: IkePorts,
    ) -> Result<IkeHandle, SpawnError> {
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
        let (in_tx, in_rx) = crossbeam_channel::bounded(INPUT_QUEUE);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let sink = InterfaceSink {
            slot: Arc::new(Mutex::new(None)),
            wake: wake_tx,
        };
        let thread_sink = sink.clone();
        let input = Arc::new(InputCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut helpers = Vec::new();
        let spawn = |thread: &'static str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(thread.into())
                .spawn(f)
                .map_err(|source| SpawnError { thread, source })
        };
        // The engine's bounded port-4500 channel is read by the IKE thread itself.
        let e4500 = engine.take_ike_receiver();
        // So are the engine's events about the child SAs (their usage, their sequence-number
        // limits).
        let sa_events = engine.take_event_receiver();
        // Route and address changes (netlink requests) are made on a helper thread, in
        // order, so that the IKE thread never waits for the kernel. The queue is the IKE thread's: it drains and ends when that thread ends.
        let ip = iproute::Queue::start("mifsec-ike-ip", IP_QUEUE, |e| warn!("{e}")).map_err(
            |source| SpawnError {
                thread: "mifsec-ike-ip",
                source,
            },
        )?;
        let mut sock500 = Vec::new();
        for (name, s) in ports.0 {
            let Ok(local) = s.local_addr() else {
                continue;
            };
            let s = Arc::new(s);
            let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
            let (tx, stop, rs) = (in_tx.clone(), Arc::clone(&stop), Arc::clone(&s));
            let counters = Arc::clone(&input);
            helpers.push(spawn(
                "mifsec-ike-500",
                Box::new(move || read_500(&rs, &name, local, &tx, &counters, &stop)),
            )?);
            sock500.push((local.ip(), s));
        }
        let status = Arc::new(Mutex::new(Vec::new()));
        let limits = settings.limits;
        let stats = Arc::new(Mutex::new(IkeStats {
            cookie_threshold: settings.cookie_threshold,
            max_half_open: limits.max_half_open,
            block_threshold: limits.block_threshold,
            init_rate: limits.init_rate,
            init_burst: limits.init_burst,
            ..IkeStats::default()
        }));
        let connections = settings
            .connections
            .iter()
            .map(|c| c.name.clone())
            .collect();
        let book = Arc::new(Mutex::new(Book::default()));
        let tun = engine.status().tun;
        let mut ep = Endpoint::new(
            Instant::now(),
            EndpointConfig {
                connections: settings
                    .connections
                    .iter()
                    .map(|c| endpoint::Connection {
                        local_addrs: c.local_addrs.clone(),
                        remote_addrs: c.remote_addrs.clone(),
                        ike: c.ike.clone(),
                    })
                    .collect(),
                cookie_threshold: settings.cookie_threshold,
                limits,
                max_message: MAX_MESSAGE,
            },
        );
        ep.set_local_addresses(Instant::now(), &local_addresses(interfaces));
        let mut ike = IkeThread {
            engine: Arc::clone(&engine),
            conns: settings.connections,
            ifaces: interfaces.to_vec(),
            prefs,
            sock500,
            ep,
            entries: HashMap::new(),
            status: Arc::clone(&status),
            tun,
            ip,
            pending: true,
            dirty: true,
            published: Instant::now(),
            next_timer: None,
            cookie_stats: Arc::clone(&stats),
            lingering: Vec::new(),
            exhausted: Vec::new(),
            sink: thread_sink,
            awaiting_address: Vec::new(),
            clone_plans: Vec::new(),
            mif_replies: Vec::new(),
            mif_ready: Vec::new(),
            book: Arc::clone(&book),
            messages: Messages::default(),
        };
        // Our interfaces as a mifsec peer is told of them (multi-interface extension).
        let local = ike.local_interfaces();
        ike.announce_interfaces(Instant::now(), &local);
        let main = spawn(
            "mifsec-ike",
            Box::new(move || {
                crate::dataplane::debug::panic_point("ike");
                let now = Instant::now();
                for i in 0..ike.conns.len() {
                    if ike.conns[i].start {
                        let name = ike.conns[i].name.clone();
                        ike.initiate(now, &name);
                    }
                }
                ike.run(&rx, &in_rx, e4500.as_ref(), sa_events.as_ref(), &wake_rx);
            }),
        )?;
        Ok(IkeHandle {
            tx,
            engine,
            input,
            status,
            stats,
            book,
            connections,
            stop,
            main: Some(main),
            helpers,
            sink,
        })
    }

    /// Where the interface follower tells this thread about the interfaces with a socket.
    pub fn interface_sink(&self) -> InterfaceSink {
        self.sink.clone()
    }

    fn command(&self, m: Msg) -> Result<(), CommandError> {
        self.tx.try_send(m).map_err(|e| match e {
            TrySendError::Full(_) => CommandError::Busy,
            TrySendError::Disconnected(_) => CommandError::Gone,
        })
    }

    fn known(&self, conn: &str) -> Result<(), CommandError> {
        if self.connections.iter().any(|c| c == conn) {
            Ok(())
        } else {
            Err(CommandError::NoConnection {
                name: conn.to_owned(),
            })
        }
    }

    /// Starts an IKE SA for connection `conn` (asynchronously; `status` shows progress).
    pub fn initiate(&self, conn: &str) -> Result<String, CommandError> {
        self.known(conn)?;
        self.command(Msg::Initiate(conn.to_owned()))?;
        Ok(format!("initiating {conn}"))
    }

    /// Deletes the IKE SAs of connection `conn` and their child SAs.
    pub fn terminate(&self, conn: &str) -> Result<String, CommandError> {
        self.known(conn)?;
        self.command(Msg::Terminate(conn.to_owned()))?;
        Ok(format!("terminating {conn}"))
    }

    /// Rekeys the child SAs of connection `conn`, or its IKE SA with `ike`
    /// (asynchronously; `status` shows the new SPIs).
    /// Moves connection `conn`'s IKE SA to our address `local` (and the peer's `remote`)
    /// by hand: refused, with the reason, unless we are its initiator with MOBIKE in use
    /// (RFC 4555: the initiator decides the path). The move itself completes
    /// asynchronously (`status` shows it, the log says why).
    pub fn move_sa(
        &self,
        conn: &str,
        local: IpAddr,
        remote: Option<IpAddr>,
    ) -> Result<String, CommandError> {
        self.known(conn)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.command(Msg::Move(conn.to_owned(), local, remote, tx))?;
        answer(&rx, MOVE_ANSWER)?.map_err(CommandError::Refused)
    }

    /// One multi-interface operation on connection `conn`'s IKE SAs with the extension in
    /// use: the answers, one per IKE SA, once all came or [`MIF_ANSWER`] passed (an IKE SA
    /// whose peer did not answer then is reported so).
    pub fn mif(&self, conn: &str, cmd: MifCommand) -> Result<Vec<MifAnswer>, CommandError> {
        self.known(conn)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.command(Msg::Mif(conn.to_owned(), cmd, tx))?;
        // The thread answers by the deadline itself; a little more for its turn.
        answer(&rx, MIF_ANSWER + Duration::from_millis(500))
    }

    /// RFC 7791 (`ctl clone`): clones connection `conn`'s IKE SA, moves the clone to our
    /// `local` (and the peer's `remote`) with MOBIKE, then negotiates child `child` on it.
    /// Refused, with the reason, when the peer did not announce CLONE_IKE_SA_SUPPORTED
    /// (or `clone = false`); the rest completes asynchronously.
    pub fn clone_sa(
        &self,
        conn: &str,
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
        child: Option<String>,
    ) -> Result<String, CommandError> {
        self.known(conn)?;
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.command(Msg::Clone(conn.to_owned(), local, remote, child, tx))?;
        answer(&rx, MOVE_ANSWER)?.map_err(CommandError::Refused)
    }

    /// The IKE SAs' keys as Wireshark `ikev2_decryption_table` lines (empty if the IKE
    /// thread does not answer in time). The control server hands them out to root only.
    pub fn ike_keys(&self) -> Vec<String> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        if self.command(Msg::Keys(tx)).is_err() {
            return Vec::new();
        }
        rx.recv_timeout(MOVE_ANSWER).unwrap_or_default()
    }

    /// `ctl reload`: hands the IKE thread the connections that changed; returns what it
    /// did, a line per connection.
    pub fn reload(&mut self, changes: Vec<ConnChange>) -> Result<Vec<String>, CommandError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        for c in &changes {
            match c {
                ConnChange::Add(c) => {
                    if !self.connections.contains(&c.name) {
                        self.connections.push(c.name.clone());
                    }
                }
                ConnChange::Replace(_) => {}
                ConnChange::Remove(n) => self.connections.retain(|c| c != n),
            }
        }
        self.ask(|tx| Msg::Reload(changes, tx))
    }

    /// Sends the message `make` builds around a reply channel, waiting for room in the
    /// queue (a reload must not be lost to a busy one), and waits for the answer.
    fn ask<T>(&self, make: impl FnOnce(Sender<T>) -> Msg) -> Result<T, CommandError> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.tx
            .send_timeout(make(tx), MOVE_ANSWER)
            .map_err(|_| CommandError::Busy)?;
        answer(&rx, MOVE_ANSWER)
    }

    /// `ctl reload`: the `[interfaces.*]` preferences of the file. When they change what we
    /// announce, every IKE SA with the multi-interface extension announces the new list to
    /// its peer; returns a line saying so (`None`: nothing to announce).
    pub fn set_prefs(
        &self,
        prefs: BTreeMap<String, InterfacePrefs>,
    ) -> Result<Option<String>, CommandError> {
        self.ask(|tx| Msg::Prefs(prefs, tx))
    }

    pub fn rekey(&self, conn: &str, ike: bool) -> Result<String, CommandError> {
        self.known(conn)?;
        self.command(Msg::Rekey(conn.to_owned(), ike))?;
        Ok(format!(
            "rekeying {} of {conn}",
            if ike { "the IKE SA" } else { "the child SAs" }
        ))
    }

    /// The configured connections' names.
    pub fn connections(&self) -> &[String] {
        &self.connections
    }

    /// The IKE SAs, as of the thread's last turn.
    pub fn status(&self) -> Vec<IkeSaStatus> {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The IKE thread's counters, as of its last turn (the input queues' now).
    pub fn stats(&self) -> IkeStats {
        let mut st = *self.stats.lock().unwrap_or_else(PoisonError::into_inner);
        st.queue_dropped_500 = self.input.queue_dropped.load(Ordering::Relaxed);
        // The endpoint's count (as published) plus the readers' and the engine's.
        st.oversize += self.input.oversize.load(Ordering::Relaxed) + self.engine.ike_oversize();
        st.queue_dropped_4500 = self.engine.ike_unclaimed();
        st
    }

    /// The operator's counters (IKE messages, rekeys, failures, moves, handovers) and the
    /// child SAs' bookkeeping for the metrics, as of the thread's last turn.
    pub fn book(&self) -> Book {
        self.book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Runs `f` on the counters with them locked: the IKE thread removes no child SA from
    /// the engine meanwhile (so that the engine's figures and the removed SAs' totals add
    /// up to what was counted, neither twice nor not at all).
    pub fn with_book<T>(&self, f: impl FnOnce(&Book) -> T) -> T {
        f(&self.book.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Deletes every IKE SA (telling the peers) and stops the threads.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.tx.send(Msg::Stop);
        if let Some(t) = self.main.take() {
            let _ = t.join();
        }
        self.stop.store(true, Ordering::Relaxed);
        for t in self.helpers.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for IkeHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The IKE port-500 sockets, one per interface address (named by the first interface with
/// it), bound before the daemon drops its privileges.
#[derive(Debug, Default)]
pub struct IkePorts(Vec<(String, UdpSocket)>);

/// Binds port 500 on every interface address. A failure is logged; IKE then starts on
/// port 4500 from that address.
pub fn bind_ike_ports(interfaces: &[InterfaceConfig]) -> IkePorts {
    let mut ports: Vec<(String, UdpSocket)> = Vec::new();
    for i in interfaces {
        let local = SocketAddr::new(i.address, IKE_PORT);
        if ports
            .iter()
            .any(|(_, s)| s.local_addr().is_ok_and(|a| a.ip() == i.address))
        {
            continue;
        }
        match UdpSocket::bind(local) {
            Ok(s) => ports.push((i.name.clone(), s)),
            Err(e) => warn!("ike: cannot bind {local}: {e}; IKE starts on port {NAT_T_PORT}"),
        }
    }
    IkePorts(ports)
}

fn read_500(
    sock: &UdpSocket,
    iface: &str,
    local: SocketAddr,
    tx: &Sender<IkeDatagram>,
    counters: &InputCounters,
    stop: &AtomicBool,
) {
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        match sock.recv_from(&mut buf) {
            Ok((n, _)) if n > MAX_MESSAGE => {
                counters.oversize.fetch_add(1, Ordering::Relaxed);
            }
            Ok((n, remote)) => {
                let d = IkeDatagram {
                    interface: iface.to_owned(),
                    local,
                    remote,
                    bytes: buf[..n].to_vec(),
                };
                match tx.try_send(d) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        counters.queue_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                error!("ike: receiving on {local}: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// What the IKE thread keeps about one IKE SA of the endpoint (the SA itself is the
/// endpoint's).
#[derive(Default)]
pub(super) struct Entry {
    pub(super) info: Option<IkeSaInfo>,
    pub(super) established: Option<Instant>,
    pub(super) children: Vec<Installed>,
    /// The virtual IPs put on the TUN (client).
    pub(super) vips: Vec<IpAddr>,
    /// The virtual IPs leased to the peer (gateway).
    pub(super) peer_vips: Vec<IpAddr>,
    /// DNS servers received (client) or sent (gateway).
    pub(super) dns: Vec<IpAddr>,
    /// Initiate the connection again once cleaned up (`dpd_action = "restart"`).
    pub(super) restart: bool,
    /// Its moves to a new path (MOBIKE, either role), in all and by reason.
    pub(super) moves: u64,
    pub(super) moves_by_reason: BTreeMap<&'static str, u64>,
    /// When it last moved, and why.
    pub(super) last_move: Option<(Instant, MoveReason)>,
    /// A clone moved by `ctl clone`: the children to negotiate on it once moved.
    pub(super) after_move: Vec<String>,
    /// Multi-interface operations of ours the peer answered, and those it refused.
    pub(super) mif_operations: u64,
    pub(super) mif_refused: u64,
    /// Why it ended, for the `ike-down` event (none: deleted by us).
    pub(super) down: Option<String>,
}

pub(super) struct IkeThread {
    pub(super) engine: Arc<Engine>,
    pub(super) conns: Vec<Connection>,
    pub(super) ifaces: Vec<InterfaceConfig>,
    /// `[interfaces.*] priority` and `alternate`, by section name.
    pub(super) prefs: BTreeMap<String, InterfacePrefs>,
    pub(super) sock500: Vec<(IpAddr, Arc<UdpSocket>)>,
    /// The IKE SAs: routing, responders, COOKIEs and the half-open limits.
    pub(super) ep: Endpoint,
    /// What the thread keeps about each of them.
    pub(super) entries: HashMap<SaHandle, Entry>,
    pub(super) status: Arc<Mutex<Vec<IkeSaStatus>>>,
    pub(super) tun: String,
    /// Addresses and routes on the TUN, changed in order by a helper thread.
    pub(super) ip: iproute::Queue,
    /// An SA had input, a timeout or a command: pump, and look at the timers again.
    pub(super) pending: bool,
    /// Something the status shows changed since it was last published.
    pub(super) dirty: bool,
    /// When the status was last published.
    pub(super) published: Instant,
    /// The earliest timer of any SA, as of the last time one was touched.
    pub(super) next_timer: Option<Instant>,
    /// The counters as last published.
    pub(super) cookie_stats: Arc<Mutex<IkeStats>>,
    /// Rekeyed child SAs whose Delete completed, kept for inbound stragglers until the
    /// instant given (the peer may have sent on them just before it deleted them).
    pub(super) lingering: Vec<(Instant, Installed)>,
    /// Outbound SPIs of children that ran out of sequence numbers while a rekey was
    /// replacing them, with when to look again: should that rekey fail, the child is
    /// deleted (and re-created) then instead of staying mute until its hard lifetime.
    pub(super) exhausted: Vec<(Instant, u32)>,
    /// Where the interface follower leaves the current interface list.
    pub(super) sink: InterfaceSink,
    /// Connections to initiate (`start`) that had no local address of the peer's family:
    /// initiated once one appears.
    pub(super) awaiting_address: Vec<String>,
    /// RFC 7791: clones asked for, with what follows once each is up.
    pub(super) clone_plans: Vec<super::clone::ClonePlan>,
    /// `ctl mif` requests waiting for the peers' answers.
    pub(super) mif_replies: Vec<super::mif::MifReply>,
    /// `ctl mif` answers complete, sent after the next publication of the status.
    pub(super) mif_ready: Vec<super::mif::MifReply>,
    /// The operator's counters, shared with the handle.
    pub(super) book: Arc<Mutex<Book>>,
    /// IKE messages by exchange and direction, copied into the book at each turn.
    pub(super) messages: Messages,
}

impl IkeThread {
    fn run(
        &mut self,
        cmds: &Receiver<Msg>,
        input: &Receiver<IkeDatagram>,
        e4500: Option<&Receiver<IkeDatagram>>,
        sa_events: Option<&Receiver<SaEvent>>,
        ifaces_changed: &Receiver<()>,
    ) {
        // A channel whose senders are all gone (no port-500 socket, say) is replaced by one
        // that never delivers, so that the select below does not spin on it.
        let mut input = input.clone();
        let mut e4500 = e4500.cloned().unwrap_or_else(crossbeam_channel::never);
        let mut sa_events = sa_events.cloned().unwrap_or_else(crossbeam_channel::never);
        let mut ifaces_changed = ifaces_changed.clone();
        self.touched();
        loop {
            let now = Instant::now();
            let mut due = self.published + PUBLISH_EVERY;
            if let Some(t) = self.next_timer {
                due = due.min(t);
            }
            if self.dirty {
                due = due.min(self.published + PUBLISH_MIN);
            }
            if let Some(t) = self.lingering.iter().map(|(t, _)| *t).min() {
                due = due.min(t);
            }
            if let Some(t) = self.exhausted.iter().map(|(t, _)| *t).min() {
                due = due.min(t);
            }
            if let Some(t) = self.mif_due() {
                due = due.min(t);
            }
            let wait = due.saturating_duration_since(now);
            // Operator commands first: they are few, and a flood must not delay them.
            let cmd: Option<Msg> = match cmds.try_recv() {
                Ok(m) => Some(m),
                Err(_) => {
                    crossbeam_channel::select! {
                        recv(cmds) -> m => match m {
                            Ok(m) => Some(m),
                            Err(_) => Some(Msg::Stop),
                        },
                        recv(input) -> d => {
                            match d {
                                Ok(d) => self.datagram(Instant::now(), d),
                                Err(_) => input = crossbeam_channel::never(),
                            }
                            None
                        },
                        recv(e4500) -> d => {
                            match d {
                                Ok(d) => self.datagram(Instant::now(), d),
                                Err(_) => e4500 = crossbeam_channel::never(),
                            }
                            None
                        },
                        recv(sa_events) -> ev => {
                            match ev {
                                Ok(ev) => self.sa_event(Instant::now(), ev),
                                Err(_) => sa_events = crossbeam_channel::never(),
                            }
                            None
                        },
                        recv(ifaces_changed) -> w => {
                            match w {
                                Ok(()) => self.interfaces_changed(Instant::now()),
                                Err(_) => ifaces_changed = crossbeam_channel::never(),
                            }
                            None
                        },
                        default(wait) => None,
                    }
                }
            };
            let now = Instant::now();
            let had_cmd = cmd.is_some();
            match cmd {
                Some(Msg::Initiate(c)) => self.initiate(now, &c),
                Some(Msg::Terminate(c)) => self.terminate(now, Some(&c)),
                Some(Msg::Rekey(c, ike)) => self.rekey(now, &c, ike),
                Some(Msg::Move(c, local, remote, reply)) => {
                    let r = self.move_sa(now, &c, local, remote);
                    // The operator may have given up waiting: nothing to tell then.
                    let _ = reply.try_send(r);
                }
                Some(Msg::Mif(c, cmd, reply)) => self.mif_command(now, &c, cmd, reply),
                Some(Msg::Clone(c, local, remote, child, reply)) => {
                    let r = self.clone_cmd(now, &c, local, remote, child);
                    let _ = reply.try_send(r);
                }
                Some(Msg::Keys(reply)) => {
                    let lines = self
                        .ep
                        .iter()
                        .flat_map(|(_, _, sa)| sa.wireshark_ike_keys())
                        .collect();
                    let _ = reply.try_send(lines);
                }
                Some(Msg::Reload(changes, reply)) => {
                    let lines = self.reload(now, changes);
                    let _ = reply.try_send(lines);
                }
                Some(Msg::Prefs(prefs, reply)) => {
                    let line = self.set_prefs(now, prefs);
                    let _ = reply.try_send(line);
                }
                Some(Msg::Stop) => {
                    self.terminate(now, None);
                    self.publish(now);
                    return;
                }
                None => {}
            }
            if had_cmd {
                self.touched();
            }
            if self.exhausted.iter().any(|(t, _)| *t <= now) {
                let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.exhausted)
                    .into_iter()
                    .partition(|(t, _)| *t <= now);
                self.exhausted = keep;
                for (_, spi) in due {
                    self.seq_limit(now, spi, true, true);
                }
                self.touched();
            }
            if self.lingering.iter().any(|(t, _)| *t <= now) {
                let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.lingering)
                    .into_iter()
                    .partition(|(t, _)| *t <= now);
                self.lingering = keep;
                for (_, c) in gone {
                    self.uninstall(c);
                }
                self.dirty = true;
            }
            if self.mif_due().is_some_and(|t| t <= now) {
                self.mif_tick(now);
            }
            if self.next_timer.is_some_and(|t| t <= now) {
                self.ep.handle_timeout(now);
                self.touched();
            }
            if self.pending {
                // Something happened to an SA (not merely a dropped or refused message).
                self.pending = false;
                self.pump();
                self.next_timer = self.ep.poll_timeout();
            }
            self.publish_stats();
            if (self.dirty && (now >= self.published + PUBLISH_MIN || !self.mif_ready.is_empty()))
                || now >= self.published + PUBLISH_EVERY
            {
                self.publish(now);
            }
        }
    }

    /// An SA was given input, a timeout or a command: its events and datagrams are due,
    /// its timers may have moved, and the status may have changed.
    pub(super) fn touched(&mut self) {
        self.pending = true;
        self.dirty = true;
    }

    /// Acts on the endpoint's output: every touched SA's events (first: a child SA is
    /// installed or moved before the message that lets the peer use it goes out, which is
    /// make-before-break), its datagrams, and the cleanup of finished SAs.
    pub(super) fn pump(&mut self) {
        while let Some(out) = self.ep.poll() {
            match out {
                Output::Event(h, ev) => {
                    let span = self.span(h);
                    let _span = span.enter();
                    self.event(h, ev);
                }
                Output::Transmit(t) => {
                    self.messages.count_datagram(&t.bytes, true);
                    log_message("sending", &t.bytes, t.local, t.remote);
                    self.send(t.local, t.remote, &t.bytes);
                }
                Output::Removed { sa, conn } => {
                    let name = self.conns[conn].name.clone();
                    let span = ike_span(&name, sa.0);
                    if let Some(e) = self.entries.get(&sa) {
                        events::publish("ike-down", || {
                            let mut v = json!({
                                "conn": name,
                                "ike_id": sa.0,
                                "reason": e.down.as_deref().unwrap_or("deleted"),
                            });
                            if let Some(i) = &e.info {
                                v["spi_i"] = json!(format!("{:016x}", i.spi_i));
                                v["spi_r"] = json!(format!("{:016x}", i.spi_r));
                            }
                            v
                        });
                    }
                    self.forget_clone_plans(sa);
                    let restart = span.in_scope(|| self.cleanup(sa));
                    if restart {
                        span.in_scope(|| info!("restarting (dpd_action = restart)"));
                        self.initiate(Instant::now(), &name);
                    }
                }
                Output::Notice(Notice::HalfOpenFull { half_open }) => {
                    warn!("ike: {half_open} half-open IKE SAs; dropping new IKE_SA_INIT requests")
                }
                Output::Notice(Notice::NoConnection { remote, local }) => {
                    info!("ike: IKE_SA_INIT from {remote} to {local} fits no connection");
                }
            }
        }
    }

    /// What the engine pushes about a child SA. An outbound SA crossed its soft
    /// sequence-number limit or ran out: the IKE SA that owns the child rekeys it, or
    /// deletes (and, as initiator, re-creates) it. A child's usage moved: see
    /// [`IkeThread::usage`].
    fn sa_event(&mut self, now: Instant, ev: SaEvent) {
        let acted = match ev {
            SaEvent::SeqSoftLimit { spi } => {
                self.seq_limit(now, spi, false, false);
                true
            }
            SaEvent::SeqExhausted { spi } => {
                self.seq_limit(now, spi, true, false);
                true
            }
            SaEvent::Usage { spi_in, usage, .. } => self.usage(now, spi_in, usage),
            // Counted per child.
            SaEvent::PathState {
                sa,
                spi_in,
                path,
                up,
                verified,
                ..
            } => {
                tracing::debug!(sa, path, up, verified, "engine: path state");
                events::publish(if up { "path-up" } else { "path-down" }, || {
                    json!({ "sa": sa, "spi_in": format!("{spi_in:08x}"), "path": path,
                            "verified": verified })
                });
                self.mif_path_state(spi_in)
            }
            // A soft handover's wait in the engine ended.
            SaEvent::SoftMoveEnded {
                sa,
                spi_in,
                up,
                paths,
            } => {
                // `removed`: the new path `up` answered and the old `paths` left; else
                // none answered in time and they stay.
                events::publish("soft-move-ended", || {
                    json!({ "sa": sa, "spi_in": format!("{spi_in:08x}"), "up": up,
                            "paths": paths, "removed": up.is_some() })
                });
                self.mif_soft_ended(spi_in, up.as_deref(), &paths)
            }
        };
        if acted {
            self.touched();
        }
    }

    /// The usage of the child SA with inbound SPI `spi_in`, pushed by the engine (about
    /// every [`USAGE_INTERVAL`](crate::dataplane::engine::USAGE_INTERVAL) while it moves;
    /// children are installed with `report_usage` when their connection has byte or
    /// packet limits, liveness checks or MOBIKE path checks). With limits, the IKE SA that
    /// owns the child gets the larger of the pair's inbound and outbound counts
    /// ([`IkeSa::child_usage`]) and rekeys or deletes it; whether packets went out and
    /// whether any came in goes to [`IkeSa::note_traffic`] (inbound postpones the next
    /// liveness check; outbound without inbound starts a MOBIKE path check). Returns
    /// whether the IKE SA was told anything.
    fn usage(&mut self, now: Instant, spi_in: u32, usage: Usage) -> bool {
        // Inbound SPIs are ours and unique: one child at most has it.
        let Some((h, received, sent)) = self.entries.iter_mut().find_map(|(h, e)| {
            let c = e.children.iter_mut().find(|c| c.spec.spi_in == spi_in)?;
            let received = usage.in_packets != c.last_in;
            // A child on MIF paths: its outbound count includes the engine's path probes
            // (their answers are not counted inbound), and its paths are watched by those
            // probes, not by MOBIKE, which moves the IKE SA alone (PROTOCOL 6.4): its
            // outbound packets start no MOBIKE path check (they did, twice a second, on
            // an idle child).
            let sent = usage.out_packets != c.last_out && c.mif.is_none();
            c.last_in = usage.in_packets;
            c.last_out = usage.out_packets;
            Some((*h, received, sent))
        }) else {
            // A rekeyed pair lingering for stragglers, or one just removed.
            return false;
        };
        let Some(conn) = self.ep.connection_of(h) else {
            return false;
        };
        let limits = self.conns[conn].ike.child_volume_limits();
        let Some(sa) = self.ep.sa_mut(h) else {
            return false;
        };
        let limited = limits && sa.is_established();
        if limited {
            sa.child_usage(now, spi_in, usage.bytes(), usage.packets());
        }
        if sent || received {
            sa.note_traffic(now, sent, received);
        }
        limited || sent || received
    }

    /// Acts on a sequence-number limit of outbound SA `spi`; `again` for a second look at
    /// an exhausted child (quiet while the rekey still replaces it).
    fn seq_limit(&mut self, now: Instant, spi: u32, exhausted: bool, again: bool) {
        let what = if exhausted {
            "out of sequence numbers"
        } else {
            "at its sequence-number soft limit"
        };
        let mut found = false;
        // Outbound SPIs are chosen by the peers, so two IKE SAs may (rarely) share one:
        // each that has it acts on its own child.
        for h in self.ep.handles() {
            let Some(action) = self
                .ep
                .sa_mut(h)
                .and_then(|sa| sa.child_seq_limit(now, spi, exhausted))
            else {
                continue;
            };
            found = true;
            if exhausted && action == SeqLimitAction::Replacing {
                self.exhausted.push((now + Duration::from_secs(1), spi));
                if again {
                    continue;
                }
            }
            let sa = self
                .entries
                .get(&h)
                .and_then(|e| e.children.iter().find(|c| c.spi_out == spi))
                .map_or_else(|| format!("{spi:08x}"), |c| c.status.sa.clone());
            let conn = self.ep.connection_of(h).unwrap_or_default();
            let did = match action {
                SeqLimitAction::Rekey => "rekeying it",
                SeqLimitAction::Replacing => "a rekey is replacing it already",
                SeqLimitAction::Delete { recreate: true } => "deleting it and creating it again",
                SeqLimitAction::Delete { recreate: false } => {
                    "deleting it (the peer initiated the IKE SA and may create it again)"
                }
            };
            let _span = ike_span(&self.conns[conn].name, h.0).entered();
            if exhausted {
                warn!(spi_out = %format_args!("{spi:08x}"), "child SA {sa} {what}: {did}");
            } else {
                info!(spi_out = %format_args!("{spi:08x}"), "child SA {sa} {what}: {did}");
            }
        }
        if !found && !again {
            info!(
                "ike: outbound SA {spi:08x} {what}, but no IKE SA has it (a rekeyed pair on its way out?)"
            );
        }
        self.pump();
    }

    /// Starts a rekey of `conn`'s child SAs (or its IKE SA).
    fn rekey(&mut self, now: Instant, conn: &str, ike: bool) {
        for h in self.ep.handles() {
            let Some(c) = self.ep.connection_of(h) else {
                continue;
            };
            if self.conns[c].name != conn {
                continue;
            }
            let Some(sa) = self.ep.sa_mut(h).filter(|sa| sa.is_established()) else {
                continue;
            };
            let started = if ike {
                sa.rekey_ike(now)
            } else {
                sa.rekey_children(now)
            };
            let _span = ike_span(conn, h.0).entered();
            info!(
                "{} rekey {}",
                if ike { "IKE SA" } else { "child SA" },
                if started { "started" } else { "not possible" }
            );
        }
        self.pump();
    }

    /// `ctl move`: asks `conn`'s established IKE SAs to move to our `local` and the peer's
    /// `remote`; the answer for the operator. An IKE SA we are the responder of is not
    /// ours to move (RFC 4555 section 3.1: the initiator decides the addresses).
    fn move_sa(
        &mut self,
        now: Instant,
        conn: &str,
        local: IpAddr,
        remote: Option<IpAddr>,
    ) -> Result<String, String> {
        let mut answers = Vec::new();
        let mut refused = Vec::new();
        for h in self.ep.handles() {
            let Some(c) = self.ep.connection_of(h) else {
                continue;
            };
            if self.conns[c].name != conn {
                continue;
            }
            let Some(sa) = self.ep.sa_mut(h).filter(|sa| sa.is_established()) else {
                continue;
            };
            let _span = ike_span(conn, h.0).entered();
            if !sa.is_initiator() {
                let why = format!(
                    "IKE SA #{} of {conn}: we are its responder, and with MOBIKE only the \
                     initiator (the peer) decides its path (RFC 4555); move the peer instead",
                    h.0
                );
                info!("move to {local} refused: {why}");
                refused.push(why);
                continue;
            }
            let to = remote.map_or_else(String::new, |r| format!(" === {r}"));
            match sa.request_move(now, local, remote) {
                Ok(true) => {
                    info!("moving to {local}{to} (operator request)");
                    answers.push(format!("IKE SA #{}: moving to {local}{to}", h.0));
                }
                Ok(false) => answers.push(format!("IKE SA #{}: already on {local}{to}", h.0)),
                Err(e) => {
                    info!("move to {local}{to} refused: {e}");
                    refused.push(format!("IKE SA #{} of {conn}: {e}", h.0));
                }
            }
        }
        self.pump();
        self.next_timer = self.ep.poll_timeout();
        self.touched();
        match (answers.is_empty(), refused.is_empty()) {
            (true, true) => Err(format!("{conn} has no established IKE SA")),
            (true, false) => Err(refused.join("; ")),
            _ => Ok(answers
                .into_iter()
                .chain(refused)
                .collect::<Vec<_>>()
                .join("; ")),
        }
    }

    fn send(&self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) {
        if let Some(i) = self
            .ifaces
            .iter()
            .find(|i| i.address == local.ip() && i.port == local.port())
        {
            if let Err(e) = self.engine.send_ike(&i.name, remote, bytes) {
                warn!("ike: {e}");
            }
            return;
        }
        match self.sock500.iter().find(|(a, _)| *a == local.ip()) {
            Some((_, s)) => {
                if let Err(e) = s.send_to(bytes, remote) {
                    warn!("ike: sending to {remote}: {e}");
                }
            }
            None => warn!("ike: no socket for {local}; message to {remote} dropped"),
        }
    }

    /// Hands a datagram to the endpoint. One that reached an SA is pumped with the next
    /// turn; one that was dropped or refused costs no more than the endpoint's checks (its
    /// COOKIE or answer, if any, leaves at once).
    fn datagram(&mut self, now: Instant, d: IkeDatagram) {
        self.messages.count_datagram(&d.bytes, false);
        match self.ep.handle(now, d.local, d.remote, &d.bytes) {
            Some(h) => {
                if tracing::enabled!(tracing::Level::DEBUG) {
                    let _span = self.span(h).entered();
                    log_message("received", &d.bytes, d.local, d.remote);
                }
                self.entries.entry(h).or_default();
                self.touched();
            }
            None => self.pump(),
        }
    }

    fn initiate(&mut self, now: Instant, name: &str) {
        let Some(c) = self.conns.iter().position(|c| c.name == name) else {
            return;
        };
        if self.ep.has_live(c) {
            info!("ike {name}: already up or connecting");
            return;
        }
        let conn = &self.conns[c];
        let Some(&remote) = conn.remote_addrs.first() else {
            warn!("ike {name}: no remote_addrs to initiate to");
            return;
        };
        let local = conn.local_addrs.first().copied().or_else(|| {
            self.ifaces
                .iter()
                .find(|i| i.address.is_ipv4() == remote.is_ipv4())
                .map(|i| i.address)
        });
        let Some(local) = local else {
            if !self.awaiting_address.iter().any(|n| n == name) {
                warn!(
                    "ike {name}: no local address of {remote}'s family; initiating once one appears"
                );
                self.awaiting_address.push(name.to_owned());
            }
            return;
        };
        self.awaiting_address.retain(|n| n != name);
        // Port 500 when we have the socket, else straight to 4500.
        let (lport, rport) = if self.sock500.iter().any(|(a, _)| *a == local) {
            (IKE_PORT, IKE_PORT)
        } else {
            (NAT_T_PORT, NAT_T_PORT)
        };
        let (l, r) = (
            SocketAddr::new(local, lport),
            SocketAddr::new(remote, rport),
        );
        match self.ep.connect(now, c, l, r) {
            Ok(h) => {
                let spi_i = self.ep.sa(h).and_then(|sa| sa.spi_i()).unwrap_or(0);
                ike_span(name, h.0).in_scope(|| {
                    info!(spi_i = %format_args!("{spi_i:016x}"), "initiating {l} -> {r}");
                });
                self.entries.insert(h, Entry::default());
                self.pump();
            }
            Err(e) => warn!("ike {name}: cannot initiate: {e}"),
        }
    }

    /// New `[interfaces.*]` preferences (a reload): announced again when our list changed.
    fn set_prefs(
        &mut self,
        now: Instant,
        prefs: BTreeMap<String, InterfacePrefs>,
    ) -> Option<String> {
        let before = self.local_interfaces();
        self.prefs = prefs;
        let after = self.local_interfaces();
        if before == after {
            return None;
        }
        let line = format!(
            "interfaces announced again: {}",
            describe_interfaces(&after)
        );
        info!("ike: {line}");
        self.announce_interfaces(now, &after);
        Some(line)
    }

    /// The interface follower changed the interface list: sends, paths and new IKE SAs use
    /// the new one, every IKE SA is given the new address set
    /// ([`Endpoint::set_local_addresses`]), and the connections that waited for a local
    /// address are initiated.
    fn interfaces_changed(&mut self, now: Instant) {
        let Some(list) = self.sink.take() else {
            return;
        };
        let (old, new) = (local_addresses(&self.ifaces), local_addresses(&list));
        let old_ifs = self.local_interfaces();
        self.ifaces = list;
        let new_ifs = self.local_interfaces();
        if old_ifs != new_ifs {
            info!(
                "ike: local interfaces now {}",
                describe_interfaces(&new_ifs)
            );
            // Every IKE SA with the extension announces them (mifops turns a change into
            // the configured operation).
            self.announce_interfaces(now, &new_ifs);
        }
        if old != new {
            info!(
                "ike: local addresses now [{}]",
                new.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            // Every IKE SA learns them (with MOBIKE: tells the peer, or moves away from an
            // address that is gone); new ones get them from the endpoint.
            self.ep.set_local_addresses(now, &new);
        }
        // Still listed while they wait: initiate() warns only the first time.
        for name in self.awaiting_address.clone() {
            self.initiate(now, &name);
        }
        self.touched();
    }

    /// Deletes the IKE SAs of `conn` (all with `None`).
    /// Applies a reload's connection changes (see [`ConnChange`]); a line per change.
    fn reload(&mut self, now: Instant, changes: Vec<ConnChange>) -> Vec<String> {
        let mut lines = Vec::new();
        let ep_conn = |c: &Connection| endpoint::Connection {
            local_addrs: c.local_addrs.clone(),
            remote_addrs: c.remote_addrs.clone(),
            ike: c.ike.clone(),
        };
        for change in changes {
            match change {
                ConnChange::Add(c) => {
                    let name = c.name.clone();
                    let start = c.start;
                    self.ep.add_connection(ep_conn(&c));
                    self.conns.push(c);
                    info!("ike {name}: connection added (reload)");
                    if start {
                        self.initiate(now, &name);
                        lines.push(format!("connection {name} added and initiated"));
                    } else {
                        lines.push(format!("connection {name} added"));
                    }
                }
                ConnChange::Replace(c) => {
                    let name = c.name.clone();
                    let Some(i) = self.conns.iter().position(|x| x.name == name) else {
                        continue;
                    };
                    let (was_start, start) = (self.conns[i].start, c.start);
                    self.ep.set_connection(i, ep_conn(&c));
                    self.conns[i] = c;
                    let live: Vec<SaHandle> = self
                        .ep
                        .handles()
                        .into_iter()
                        .filter(|h| {
                            self.ep.connection_of(*h) == Some(i)
                                && self.ep.sa(*h).is_some_and(|sa| !sa.is_dead())
                        })
                        .collect();
                    info!("ike {name}: connection replaced (reload)");
                    if (was_start || start) && !live.is_empty() {
                        // Initiated again with the new configuration once they are gone.
                        for h in &live {
                            self.entry(*h).restart = start;
                        }
                        self.terminate(now, Some(&name));
                        lines.push(format!(
                            "connection {name} changed: {} IKE SA{} deleted{}",
                            live.len(),
                            if live.len() == 1 { "" } else { "s" },
                            if start { ", initiated again" } else { "" }
                        ));
                    } else if start {
                        self.initiate(now, &name);
                        lines.push(format!("connection {name} changed and initiated"));
                    } else {
                        lines.push(format!(
                            "connection {name} changed: {} established IKE SA{} keep{} running, new ones use the new configuration",
                            live.len(),
                            if live.len() == 1 { "" } else { "s" },
                            if live.len() == 1 { "s" } else { "" }
                        ));
                    }
                }
                ConnChange::Remove(name) => {
                    let Some(i) = self.conns.iter().position(|x| x.name == name) else {
                        continue;
                    };
                    let live = self
                        .ep
                        .handles()
                        .into_iter()
                        .filter(|h| {
                            self.ep.connection_of(*h) == Some(i)
                                && self.ep.sa(*h).is_some_and(|sa| !sa.is_dead())
                        })
                        .count();
                    for h in self.ep.handles() {
                        if self.ep.connection_of(h) == Some(i) {
                            self.entry(h).restart = false;
                        }
                    }
                    self.terminate(now, Some(&name));
                    self.ep.retire_connection(i);
                    // The index stays for the IKE SAs on their way out; the name is free
                    // for a connection added later (no valid name has a space).
                    self.conns[i].name = format!("{name} (removed)");
                    self.conns[i].start = false;
                    info!("ike {name}: connection removed (reload)");
                    lines.push(format!(
                        "connection {name} removed: {live} IKE SA{} deleted",
                        if live == 1 { "" } else { "s" }
                    ));
                }
            }
        }
        self.touched();
        lines
    }

    fn terminate(&mut self, now: Instant, conn: Option<&str>) {
        match conn {
            Some(n) => self.awaiting_address.retain(|a| a != n),
            None => self.awaiting_address.clear(),
        }
        for h in self.ep.handles() {
            let Some(c) = self.ep.connection_of(h) else {
                continue;
            };
            if conn.is_some_and(|n| self.conns[c].name != n) {
                continue;
            }
            let Some(sa) = self.ep.sa_mut(h).filter(|sa| !sa.is_dead()) else {
                continue;
            };
            let sent = sa.delete(now);
            ike_span(&self.conns[c].name, h.0).in_scope(|| {
                info!(
                    "{}",
                    if sent {
                        "deleting (Delete sent)"
                    } else {
                        "abandoned"
                    }
                );
            });
        }
        self.pump();
    }

    /// The span of the work on IKE SA `h` (see [`ike_span`]).
    fn span(&self, h: SaHandle) -> tracing::Span {
        let conn = self
            .ep
            .connection_of(h)
            .map_or("?", |c| &self.conns[c].name);
        ike_span(conn, h.0)
    }

    /// Acts on an event of IKE SA `h`; the caller has entered the SA's span.
    fn event(&mut self, h: SaHandle, ev: Event) {
        let (Some(c), Some(sa)) = (self.ep.connection_of(h), self.ep.sa(h)) else {
            return;
        };
        let initiator = sa.is_initiator();
        let st = sa.stats();
        let conn = self.conns[c].name.clone();
        match ev {
            Event::IkeSaEstablished(info) => {
                events::publish("ike-up", || {
                    json!({
                        "conn": conn, "ike_id": h.0, "local": info.local.to_string(),
                        "remote": info.remote.to_string(),
                        "spi_i": format!("{:016x}", info.spi_i),
                        "spi_r": format!("{:016x}", info.spi_r), "initiator": initiator,
                    })
                });
                info!(
                    spi_i = %format_args!("{:016x}", info.spi_i),
                    spi_r = %format_args!("{:016x}", info.spi_r),
                    "established {}[{}] === {}[{}], {}, nat {}, \
                     fragmentation {}, peer signature hashes {:?}, auth local {}{} remote {}{}{}{}{}",
                    info.local,
                    id_string(&self.conns[c].ike.local_id),
                    info.remote,
                    id_string(&info.remote_id),
                    algorithms(info.cipher, info.prf, info.group),
                    nat_name(&info),
                    if info.fragmentation { "on" } else { "off" },
                    info.peer_signature_hashes,
                    info.local_auth,
                    info.local_eap_id
                        .as_ref()
                        .map(|i| format!(" (EAP identity '{i}')"))
                        .unwrap_or_default(),
                    info.remote_auth.method,
                    info.remote_auth
                        .eap_identity
                        .as_ref()
                        .map(|i| format!(" (EAP identity '{i}')"))
                        .unwrap_or_default(),
                    info.remote_auth
                        .key
                        .as_ref()
                        .map(|k| format!(" ({k})"))
                        .unwrap_or_default(),
                    info.remote_auth
                        .subject
                        .as_ref()
                        .map(|s| format!(" certificate '{}'", crate::log::printable(s)))
                        .unwrap_or_default(),
                    info.remote_auth
                        .tls_subject
                        .as_ref()
                        .map(|(s, v)| format!(" {v} certificate '{}'", crate::log::printable(s)))
                        .unwrap_or_default()
                );
                if st.fragments_sent + st.fragments_received > 0 {
                    info!(
                        "IKE fragments sent {}, received {}, dropped {}",
                        st.fragments_sent, st.fragments_received, st.fragments_dropped
                    );
                }
                if initiator {
                    self.put_vips(h, &info.vips);
                } else {
                    self.entry(h).peer_vips.clone_from(&info.vips);
                }
                let e = self.entry(h);
                e.dns.clone_from(&info.dns);
                if !info.vips.is_empty() || !info.dns.is_empty() {
                    let list = |v: &[IpAddr]| {
                        v.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    info!(
                        "virtual IPs [{}], DNS [{}]",
                        list(&info.vips),
                        list(&info.dns)
                    );
                }
                e.info = Some(info);
                e.established = Some(Instant::now());
                self.count(c, |k| k.ike_established += 1);
                self.clone_per_interface(h);
            }
            Event::IkeSaCloned { info, from } => {
                info!(
                    spi_i = %format_args!("{:016x}", info.spi_i),
                    spi_r = %format_args!("{:016x}", info.spi_r),
                    "cloned (RFC 7791) from {:016x}_i {:016x}_r: {}[{}] === {}[{}], {}, nat {}",
                    from.0,
                    from.1,
                    info.local,
                    id_string(&self.conns[c].ike.local_id),
                    info.remote,
                    id_string(&info.remote_id),
                    algorithms(info.cipher, info.prf, info.group),
                    nat_name(&info),
                );
                events::publish("ike-up", || {
                    json!({
                        "conn": conn, "ike_id": h.0, "local": info.local.to_string(),
                        "remote": info.remote.to_string(),
                        "spi_i": format!("{:016x}", info.spi_i),
                        "spi_r": format!("{:016x}", info.spi_r), "initiator": initiator,
                        "cloned_from": format!("{:016x}_i {:016x}_r", from.0, from.1),
                    })
                });
                self.on_cloned(h, &info);
                self.count(c, |k| k.ike_established += 1);
                let e = self.entry(h);
                e.dns.clone_from(&info.dns);
                e.info = Some(info);
                e.established = Some(Instant::now());
            }
            Event::CloneFailed(r) => {
                warn!("clone (RFC 7791) failed: {r}");
                if let Some(i) = self.clone_plans.iter().position(|p| p.from == h) {
                    self.clone_plans.remove(i);
                }
            }
            Event::ChildSaEstablished(c) => {
                let span = child_span(&c.name, c.spi_in);
                let _child = span.enter();
                if let Err(e) = self.install(h, c) {
                    error!("installing the child SA: {e}");
                }
            }
            Event::ChildSaFailed {
                name: child,
                reason,
            } => {
                warn!("child {child} failed: {reason:?}");
                events::publish("child-failed", || {
                    json!({ "conn": conn, "ike_id": h.0, "child": child,
                            "reason": format!("{reason:?}") })
                });
            }
            Event::IkeSaMoved {
                local,
                remote,
                nat,
                children,
                reason,
                ..
            } => {
                // IKE messages follow at once (the SA's datagrams carry the new pair); the
                // child SAs' engine paths move make-before-break, with no rekey.
                self.count(c, |k| {
                    *k.moves.entry(reason.name().to_owned()).or_default() += 1
                });
                let e = self.entry(h);
                e.moves += 1;
                *e.moves_by_reason.entry(reason.name()).or_default() += 1;
                e.last_move = Some((Instant::now(), reason));
                if let Some(i) = &mut e.info {
                    i.local = local;
                    i.remote = remote;
                    i.nat = nat;
                }
                let n = e.moves;
                let moved = self.move_children(h, &children, n);
                info!(
                    reason = reason.name(),
                    "moved to {local} === {remote} ({reason}), nat {}, {moved} of {} child \
                     SAs moved, move {n}",
                    self.entries
                        .get(&h)
                        .and_then(|e| e.info.as_ref())
                        .map_or("-", nat_name),
                    children.len()
                );
                events::publish("ike-move", || {
                    json!({
                        "conn": conn, "ike_id": h.0, "local": local.to_string(),
                        "remote": remote.to_string(), "reason": reason.name(),
                        "children_moved": moved, "children": children.len(), "move": n,
                    })
                });
                self.clone_moved(h);
            }
            Event::MifApplied {
                initiated,
                op,
                dry_run,
                results,
                children,
                ..
            } => {
                let applied = results.iter().filter(|r| r.status.is_applied()).count();
                info!(
                    "MIF {} {}{}: {applied} of {} child SAs applied, {} changed",
                    op.as_ref().map_or("interface list", |o| o.name()),
                    if initiated { "answered" } else { "applied" },
                    if dry_run { " (dry run)" } else { "" },
                    results.len(),
                    children.len()
                );
                events::publish("mif", || {
                    json!({
                        "conn": conn, "ike_id": h.0,
                        "op": op.as_ref().map_or("interface list", |o| o.name()),
                        "initiated": initiated, "dry_run": dry_run, "applied": applied,
                        "results": results.len(), "changed": children.len(),
                    })
                });
                if !dry_run && !children.is_empty() {
                    use crate::ike::sa::MifTransition;
                    let soft = children
                        .iter()
                        .filter(|c| matches!(c.transition, MifTransition::Soft { .. }))
                        .count() as u64;
                    let hard = children
                        .iter()
                        .filter(|c| matches!(c.transition, MifTransition::Hard { .. }))
                        .count() as u64;
                    self.count(c, |k| {
                        k.soft_handovers += soft;
                        k.hard_handovers += hard;
                    });
                    let changes: Vec<super::mif::PathsChange> = children
                        .iter()
                        .map(|c| super::mif::PathsChange {
                            spi_in: c.spi_in,
                            paths: c.paths.clone(),
                            how: match c.transition {
                                crate::ike::sa::MifTransition::Set => PathMove::Set,
                                crate::ike::sa::MifTransition::Soft { .. } => PathMove::Soft,
                                crate::ike::sa::MifTransition::Hard { .. } => PathMove::Hard,
                            },
                            selectors: c.selectors.clone(),
                        })
                        .collect();
                    self.mif_apply(h, &changes);
                }
                if initiated {
                    self.entry(h).mif_operations += 1;
                    if let Some(op) = &op {
                        self.mif_answered(h, op, None, &results, None);
                    }
                }
            }
            Event::MifRefused { op, reason, .. } => {
                warn!(
                    "MIF {} refused by the peer: {}",
                    op.as_ref().map_or("interface list", |o| o.name()),
                    reason.name()
                );
                events::publish("mif-refused", || {
                    json!({
                        "conn": conn, "ike_id": h.0,
                        "op": op.as_ref().map_or("interface list", |o| o.name()),
                        "reason": reason.name(),
                    })
                });
                let e = self.entry(h);
                e.mif_operations += 1;
                e.mif_refused += 1;
                if let Some(op) = &op {
                    self.mif_answered(h, op, None, &[], Some(reason));
                }
            }
            Event::ChildSaRekeyed {
                old_spi_in,
                new,
                initiated,
            } => {
                let span = child_span(&new.name, new.spi_in);
                let _child = span.enter();
                // The text tests count ("child NAME rekeyed").
                info!(
                    "child {} rekeyed: {old_spi_in:08x} -> {:08x}",
                    new.name, new.spi_in
                );
                events::publish("child-rekey", || {
                    json!({
                        "conn": conn, "ike_id": h.0, "child": new.name,
                        "old_spi_in": format!("{old_spi_in:08x}"),
                        "spi_in": format!("{:08x}", new.spi_in),
                        "spi_out": format!("{:08x}", new.spi_out), "initiated": initiated,
                    })
                });
                self.count(c, |k| k.child_rekeys += 1);
                // Make-before-break: the old pair stays until its Delete completes.
                for c in &mut self.entry(h).children {
                    if c.spec.spi_in == old_spi_in {
                        c.status.state = ChildState::Rekeyed;
                    }
                }
                if let Err(e) = self.install(h, new) {
                    error!("installing the rekeyed child SA: {e}");
                } else if initiated {
                    self.outbound_to_newest(h, old_spi_in);
                }
            }
            Event::IkeSaRekeyed(info) => {
                info!(
                    "IKE SA rekeyed: {:016x}_i {:016x}_r, {}",
                    info.spi_i,
                    info.spi_r,
                    algorithms(info.cipher, info.prf, info.group)
                );
                events::publish("ike-rekey", || {
                    json!({
                        "conn": conn, "ike_id": h.0,
                        "spi_i": format!("{:016x}", info.spi_i),
                        "spi_r": format!("{:016x}", info.spi_r),
                    })
                });
                self.count(c, |k| k.ike_rekeys += 1);
                let e = self.entry(h);
                e.info = Some(info);
                e.established = Some(Instant::now());
            }
            Event::ChildSaDeleted { spis_out } => {
                let spis: Vec<String> = spis_out.iter().map(|s| format!("{s:08x}")).collect();
                info!(spis_out = %spis.join(","), "child SAs deleted");
                let e = self.entry(h);
                let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut e.children)
                    .into_iter()
                    .partition(|c| spis_out.contains(&c.spi_out));
                e.children = keep;
                // Routes a remaining (rekeyed) child still uses stay.
                let kept: Vec<Prefix> = e
                    .children
                    .iter()
                    .flat_map(|c| c.routes.iter().copied())
                    .collect();
                for mut c in gone {
                    c.routes.retain(|r| !kept.contains(r));
                    if c.status.state == ChildState::Rekeyed {
                        // Replaced by a rekey: outbound moves to the successor now, inbound
                        // stragglers are still accepted for a moment.
                        Self::move_behind(&self.engine, &mut c);
                        self.lingering.push((Instant::now() + LINGER, c));
                    } else {
                        self.uninstall(c);
                    }
                }
            }
            Event::Failed(r) => {
                warn!("failed: {r}");
                self.entry(h).down = Some(format!("failed: {r}"));
                self.count(c, |k| match r {
                    FailReason::AuthenticationFailed(_) => k.auth_failures += 1,
                    FailReason::PeerNotify(crate::wire::NotifyType::AuthenticationFailed) => {
                        k.auth_refused += 1;
                    }
                    r => *k.failures.entry(fail_name(r).to_owned()).or_default() += 1,
                });
                let conn = &self.conns[c];
                // A clone is not restarted: the connection's first IKE SA is.
                if r == FailReason::Timeout
                    && self.ep.cloned_from(h).is_none()
                    && conn.ike.dpd.action == DpdAction::Restart
                    && !conn.remote_addrs.is_empty()
                {
                    self.entry(h).restart = true;
                }
            }
            Event::Closed => {
                info!("deleted by the peer");
                self.entry(h).down = Some("deleted by the peer".into());
            }
        }
    }

    /// Counts something of connection `c` in the operator's counters.
    pub(super) fn count(&self, c: usize, f: impl FnOnce(&mut super::counters::ConnCounters)) {
        let Some(conn) = self.conns.get(c) else {
            return;
        };
        f(self
            .book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .conn(&conn.name));
    }

    /// What the thread keeps about IKE SA `h` (made on first use).
    pub(super) fn entry(&mut self, h: SaHandle) -> &mut Entry {
        self.entries.entry(h).or_default()
    }
}

/// The usable local addresses of `interfaces`, in their order (fixed interfaces in the
/// configuration's order, then the learned ones), each once: what the IKE SAs are given.
fn local_addresses(interfaces: &[InterfaceConfig]) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = Vec::new();
    for i in interfaces {
        if !v.contains(&i.address) && !i.address.is_unspecified() {
            v.push(i.address);
        }
    }
    v
}

/// A short name of a failure for the counters (`failures` by reason).
fn fail_name(r: FailReason) -> &'static str {
    match r {
        FailReason::Timeout => "timeout",
        FailReason::AuthenticationFailed(_) => "authentication",
        FailReason::PeerNotify(_) => "peer-notify",
        FailReason::NoProposalChosen => "no-proposal-chosen",
        FailReason::InvalidKe => "invalid-ke",
        FailReason::InvalidSyntax => "invalid-syntax",
        FailReason::NoVirtualIp => "no-virtual-ip",
        FailReason::Crypto(_) => "crypto",
        FailReason::Expired => "expired",
    }
}

/// Logs an IKE message at level debug from its header alone (exchange, request or
/// response, message ID, length, addresses): nothing of what is encrypted.
fn log_message(what: &str, bytes: &[u8], local: SocketAddr, remote: SocketAddr) {
    if !tracing::enabled!(tracing::Level::DEBUG) {
        return;
    }
    let len = bytes.len();
    match HeaderPacket::new_checked(bytes) {
        Ok(h) => debug!(
            %local,
            %remote,
            len,
            "{what} {:?} {} {}",
            h.exchange_type(),
            if h.flags().response() { "response" } else { "request" },
            h.message_id()
        ),
        Err(_) => debug!(%local, %remote, len, "{what} a datagram without an IKE header"),
    }
}

/// Our interfaces as a log line: `[c1 198.18.1.2:4500 priority 0, c2 ... priority 10 alternate]`.
fn describe_interfaces(list: &[LocalInterface]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|i| {
            format!(
                "{} {}:{} priority {}{}",
                i.name,
                i.addr,
                i.port,
                i.priority,
                if i.alternate { " alternate" } else { "" }
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// The IKE thread's answer on `rx` within `within`: `Busy` when it did not come in time,
/// `Gone` when the thread ended.
fn answer<T>(rx: &Receiver<T>, within: Duration) -> Result<T, CommandError> {
    rx.recv_timeout(within).map_err(|e| match e {
        crossbeam_channel::RecvTimeoutError::Timeout => CommandError::Busy,
        crossbeam_channel::RecvTimeoutError::Disconnected => CommandError::Gone,
    })
}
