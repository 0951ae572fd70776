//! The IKE control thread of the daemon: it owns the IKE SAs of the configured
//! connections and drives them (the sans-IO [`IkeSa`]) with real sockets and a real clock.
//!
//! * Input: IKE messages that arrive on the engine's port-4500 sockets behind the non-ESP
//!   marker (`Engine::take_ike_receiver`), and on the thread's own UDP sockets bound to port
//!   500 of every interface address; `initiate` / `terminate` commands from the control
//!   socket.
//! * Routing: by the IKE SPIs in the header. The I flag tells whether the sender is the
//!   original initiator: then we are the responder and look the SA up by the initiator's
//!   SPI and the peer's address; otherwise by our own initiator SPI. An IKE_SA_INIT request
//!   that fits no SA creates a responder SA for the first connection whose addresses match,
//!   unless limits say no ([`InitLimiter`]: `[ike] init_limit_half_open` half-open SAs in
//!   all, `block_threshold` per source address, `init_rate`/`init_burst` IKE_SA_INIT
//!   requests per second and source; a refusal is a counted drop), and from `[ike]
//!   cookie_threshold` half-open SAs on it must first return a COOKIE ([`CookieGate`]).
//! * Bounded input: the port-500 readers hand datagrams over on a bounded channel
//!   ([`INPUT_QUEUE`], `try_send`: a full queue is a counted drop, `queue_dropped_500`);
//!   the thread reads the engine's own bounded port-4500 channel directly (its drops are
//!   the engine's `ike_unclaimed`, also shown as `queue_dropped_4500`). Messages longer
//!   than [`MAX_MESSAGE`] are dropped and counted. A message that is dropped or refused
//!   costs a header parse, the SA lookup and the limiter: no status is rebuilt for it
//!   (the status strings are rebuilt when something changed, at most every
//!   [`PUBLISH_MIN`], and every [`PUBLISH_EVERY`]), and the thread never waits for a
//!   subprocess (`ip` for routes and virtual IPs runs on a helper thread, in order).
//! * Output: messages from port 4500 go through `Engine::send_ike` (which adds the
//!   marker), others through the port-500 socket. An initiator starts on 500 and floats to
//!   4500 once NAT detection (or forced encapsulation) says so (RFC 7296 section 2.23).
//! * Rekeys (make-before-break): a rekeyed child's new pair is installed next to the old
//!   one at once; the old pair is removed when the Delete exchange for it completes (either
//!   side's). An IKE SA rekey changes the SPIs the SA is routed by ([`IkeSa::owns`] also
//!   knows the old ones until their Delete is over). `rekey` commands and the lifetimes of
//!   the connection (`rekey_time`, `life_time`, `rand_time`; by volume `rekey_bytes` and
//!   friends, fed from the engine's counters) start rekeys; `dpd_delay` and
//!   `dpd_action` govern liveness checks (`restart` initiates again after a failure).
//! * Child SAs: installed with `Engine::install_sa` as `<conn>-<child>-<spi_in hex>`, one
//!   path on the interface of the IKE SA's local address to the peer's port 4500. A client
//!   puts its virtual IP on the TUN and routes the child's remote selectors into it; a
//!   gateway routes the peer's selectors (its virtual IP) into the TUN. Deleting the IKE SA
//!   (either side) removes them again.
//!
//! No log line contains key material.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::config::{Connection, IkeSettings};
use crate::daemon::log;
use crate::dataplane::aead::Cipher;
use crate::dataplane::engine::{
    ControlError, Engine, IkeDatagram, InterfaceConfig, PathSpec, SaSpec,
};
use crate::dataplane::esp;
use crate::dataplane::event::Event as SaEvent;
use crate::dataplane::sa_table::{Policy, Prefix, Role};
use crate::ike::cookie::{Admission, CookieGate, CookieStats};
use crate::ike::limits::{InitLimiter, LimitStats, Refusal};
use crate::ike::{
    ChildSa, DpdAction, Event, FailReason, IkeSa, IkeSaInfo, Mode, Prf, SeqLimitAction,
};
use crate::wire::{DhGroup, ExchangeType, HeaderPacket, IdPayload, IdType, TrafficSelector};

/// How long a rekeyed child SA keeps accepting inbound packets after its Delete completed.
const LINGER: Duration = Duration::from_secs(2);

/// How often the engine's SA counters are read for child SAs with byte or packet limits.
const USAGE_INTERVAL: Duration = Duration::from_millis(250);

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
/// How many `ip` invocations may wait for the helper thread (the IKE thread waits when
/// it is full; one IKE SA needs a few).
const IP_QUEUE: usize = 1024;
/// The longest IKE message accepted (strongSwan's default `max_packet`); longer ones are
/// dropped and counted (`oversize`). An IKE_SA_INIT request cannot be fragmented, so this
/// also bounds the copy of it that a half-open responder SA keeps for its AUTH.
pub const MAX_MESSAGE: usize = crate::dataplane::engine::MAX_IKE_MESSAGE;
/// The status (IKE SA list) is rebuilt at least this often (ages, timers, counters).
pub const PUBLISH_EVERY: Duration = Duration::from_secs(1);
/// ... and, when something changed, at most this often.
pub const PUBLISH_MIN: Duration = Duration::from_millis(20);

/// One IKE SA as `mifsec status` shows it (in the manner of `swanctl --list-sas`).
#[derive(Debug, Clone, Serialize)]
pub struct IkeSaStatus {
    /// The connection's name.
    pub name: String,
    /// A unique number, as swanctl's `#N`.
    pub id: u64,
    /// `CONNECTING`, `ESTABLISHED` or `DELETING`.
    pub state: String,
    /// Whether we initiated it.
    pub initiator: bool,
    /// Our address and port.
    pub local: String,
    /// The peer's address and port.
    pub remote: String,
    /// Our identity.
    pub local_id: String,
    /// The peer's identity (once authenticated).
    pub remote_id: String,
    /// The initiator's SPI, hex.
    pub spi_i: String,
    /// The responder's SPI, hex (zeros while unknown).
    pub spi_r: String,
    /// `AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519` once established.
    pub algorithms: String,
    /// NAT detection: `none`, `local`, `remote` or `both` (a forced encapsulation shows as
    /// `local`).
    pub nat: String,
    /// The (first) virtual IP assigned to us.
    pub vip: Option<String>,
    /// The (first) virtual IP leased to the peer.
    pub peer_vip: Option<String>,
    /// Every virtual IP assigned to us (IPv4 and IPv6).
    pub vips: Vec<String>,
    /// Every virtual IP leased to the peer.
    pub peer_vips: Vec<String>,
    /// DNS servers received from the gateway (client) or sent to the peer (gateway).
    pub dns: Vec<String>,
    /// Seconds since it was established.
    pub established_s: Option<u64>,
    /// Seconds until its rekey by lifetime (`rekey_time` minus jitter), if scheduled.
    pub rekey_in_s: Option<u64>,
    /// Whether IKE fragmentation (RFC 7383) was negotiated.
    pub fragmentation: bool,
    /// IKE fragments sent (retransmissions included).
    pub fragments_sent: u64,
    /// IKE fragments received (authenticated).
    pub fragments_received: u64,
    /// IKE fragments refused: forged, stale, duplicate, over the limits, or unnegotiated.
    pub fragments_dropped: u64,
    /// Its child SAs.
    pub children: Vec<IkeChildStatus>,
}

/// One child SA of an IKE SA.
#[derive(Debug, Clone, Serialize)]
pub struct IkeChildStatus {
    /// The child configuration's name.
    pub name: String,
    /// The engine's SA name (whose counters `status` shows).
    pub sa: String,
    /// `INSTALLED`, or `REKEYED` while a rekeyed pair waits for its Delete.
    pub state: String,
    /// Inbound SPI, hex.
    pub spi_in: String,
    /// Outbound SPI, hex.
    pub spi_out: String,
    /// The AEAD.
    pub cipher: String,
    /// `tunnel` or `transport`.
    pub mode: String,
    /// Whether ESP goes in UDP.
    pub udp_encap: bool,
    /// Whether extended (64-bit) sequence numbers were negotiated.
    pub esn: bool,
    /// Our selectors.
    pub local_ts: Vec<String>,
    /// The peer's selectors.
    pub remote_ts: Vec<String>,
}

/// The IKE thread's own counters (`ike` in `mifsec status --json`).
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct IkeStats {
    /// Responder IKE SAs still negotiating.
    pub half_open: usize,
    /// Sources (addresses, IPv6 /64s) with half-open SAs.
    pub half_open_sources: usize,
    /// Most half-open responder SAs in all (`init_limit_half_open`).
    pub max_half_open: usize,
    /// Most half-open responder SAs per source (`block_threshold`; 0: no limit).
    pub block_threshold: usize,
    /// New IKE_SA_INIT requests per second per source (`init_rate`; 0: no limit).
    pub init_rate: u32,
    /// Their burst (`init_burst`).
    pub init_burst: u32,
    /// Cookies are demanded from this many half-open SAs on (0: always).
    pub cookie_threshold: usize,
    /// The COOKIE counters.
    #[serde(flatten)]
    pub cookies: CookieStats,
    /// New IKE_SA_INIT requests refused by the limits, by reason.
    #[serde(flatten)]
    pub limits: LimitStats,
    /// Datagrams from the port-500 sockets dropped because the IKE thread's queue was full.
    pub queue_dropped_500: u64,
    /// IKE messages on port 4500 dropped because the engine's queue to the IKE thread was
    /// full (the engine's `ike_unclaimed`).
    pub queue_dropped_4500: u64,
    /// IKE messages dropped for being longer than [`MAX_MESSAGE`].
    pub oversize: u64,
}

/// Counters the reader threads bump.
#[derive(Debug, Default)]
struct InputCounters {
    queue_dropped: AtomicU64,
    oversize: AtomicU64,
}

enum Msg {
    Initiate(String),
    Terminate(String),
    Rekey(String, bool),
    Stop,
}

/// The running IKE thread: commands in, status out.
pub struct IkeControl {
    tx: Sender<Msg>,
    engine: Arc<Engine>,
    input: Arc<InputCounters>,
    status: Arc<Mutex<Vec<IkeSaStatus>>>,
    stats: Arc<Mutex<IkeStats>>,
    connections: Vec<String>,
    stop: Arc<AtomicBool>,
    main: Option<JoinHandle<()>>,
    helpers: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for IkeControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IkeControl")
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl IkeControl {
    /// Starts the IKE thread for `settings` on `engine` with the port-500 sockets of
    /// [`bind_ike_ports`], takes the engine's IKE receiver, and initiates the connections
    /// with `start_action = "start"`.
    pub fn start(
        engine: Arc<Engine>,
        settings: IkeSettings,
        interfaces: &[InterfaceConfig],
        ports: IkePorts,
    ) -> Result<IkeControl, ControlError> {
        let (tx, rx) = crossbeam_channel::bounded(COMMAND_QUEUE);
        let (in_tx, in_rx) = crossbeam_channel::bounded(INPUT_QUEUE);
        let (ip_tx, ip_rx) = crossbeam_channel::bounded::<Vec<String>>(IP_QUEUE);
        let input = Arc::new(InputCounters::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut helpers = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| ControlError(format!("spawning {name}: {e}")))
        };
        // The engine's bounded port-4500 channel is read by the IKE thread itself.
        let e4500 = engine.take_ike_receiver();
        // So are the engine's sequence-number events of outbound SAs.
        let seq_events = engine.take_event_receiver();
        // `ip` runs here, in order, so that the IKE thread never waits for it. It ends
        // when the IKE thread (the only sender) is gone, after the last command.
        helpers.push(spawn(
            "mifsec-ike-ip",
            Box::new(move || {
                for args in ip_rx {
                    let a: Vec<&str> = args.iter().map(String::as_str).collect();
                    ip(&a);
                }
            }),
        )?);
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
        let tun = engine.status().tun;
        let mut ike = IkeThread {
            engine: Arc::clone(&engine),
            conns: settings.connections,
            ifaces: interfaces.to_vec(),
            sock500,
            sas: Vec::new(),
            next_id: 1,
            status: Arc::clone(&status),
            tun,
            half_open_logged: false,
            cookies: CookieGate::new(Instant::now(), settings.cookie_threshold),
            limiter: InitLimiter::new(limits),
            input: Arc::clone(&input),
            ip_tx,
            pending: true,
            dirty: true,
            published: Instant::now(),
            volume: false,
            next_timer: None,
            cookie_stats: Arc::clone(&stats),
            lingering: Vec::new(),
            exhausted: Vec::new(),
            activity_checked: Instant::now(),
            usage_checked: Instant::now(),
        };
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
                ike.run(&rx, &in_rx, e4500.as_ref(), seq_events.as_ref());
            }),
        )?;
        Ok(IkeControl {
            tx,
            engine,
            input,
            status,
            stats,
            connections,
            stop,
            main: Some(main),
            helpers,
        })
    }

    fn command(&self, m: Msg) -> Result<(), ControlError> {
        self.tx.try_send(m).map_err(|e| match e {
            TrySendError::Full(_) => ControlError("the IKE thread is busy; try again".into()),
            TrySendError::Disconnected(_) => ControlError("the IKE thread is gone".into()),
        })
    }

    fn known(&self, conn: &str) -> Result<(), ControlError> {
        if self.connections.iter().any(|c| c == conn) {
            Ok(())
        } else {
            Err(ControlError(format!("no connection named {conn:?}")))
        }
    }

    /// Starts an IKE SA for connection `conn` (asynchronously; `status` shows progress).
    pub fn initiate(&self, conn: &str) -> Result<String, ControlError> {
        self.known(conn)?;
        self.command(Msg::Initiate(conn.to_owned()))?;
        Ok(format!("initiating {conn}"))
    }

    /// Deletes the IKE SAs of connection `conn` and their child SAs.
    pub fn terminate(&self, conn: &str) -> Result<String, ControlError> {
        self.known(conn)?;
        self.command(Msg::Terminate(conn.to_owned()))?;
        Ok(format!("terminating {conn}"))
    }

    /// Rekeys the child SAs of connection `conn`, or its IKE SA with `ike`
    /// (asynchronously; `status` shows the new SPIs).
    pub fn rekey(&self, conn: &str, ike: bool) -> Result<String, ControlError> {
        self.known(conn)?;
        self.command(Msg::Rekey(conn.to_owned(), ike))?;
        Ok(format!(
            "rekeying {} of {conn}",
            if ike { "the IKE SA" } else { "the child SAs" }
        ))
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
        st.oversize = self.input.oversize.load(Ordering::Relaxed) + self.engine.ike_oversize();
        st.queue_dropped_4500 = self.engine.ike_unclaimed();
        st
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

impl Drop for IkeControl {
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
            Err(e) => log(format_args!(
                "ike: cannot bind {local}: {e}; IKE starts on port {NAT_T_PORT}"
            )),
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
                log(format_args!("ike: receiving on {local}: {e}"));
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// A child SA installed in the engine.
struct Installed {
    status: IkeChildStatus,
    spi_out: u32,
    /// What was installed (keys in zeroized memory), to move it behind a newer pair.
    spec: SaSpec,
    /// Installed again behind its successor (which then carries the outbound traffic).
    behind: bool,
    /// Inbound packets counted by the engine when last looked at.
    last_in: u64,
    /// Routes we added into the TUN.
    routes: Vec<Prefix>,
}

struct Entry {
    id: u64,
    conn: usize,
    sa: IkeSa,
    info: Option<IkeSaInfo>,
    established: Option<Instant>,
    children: Vec<Installed>,
    /// The virtual IPs put on the TUN (client).
    vips: Vec<IpAddr>,
    /// The virtual IPs leased to the peer (gateway).
    peer_vips: Vec<IpAddr>,
    /// DNS servers received (client) or sent (gateway).
    dns: Vec<IpAddr>,
    /// Dead and cleaned up: remove after its last transmits are out.
    done: bool,
    /// Initiate the connection again once cleaned up (`dpd_action = "restart"`).
    restart: bool,
    /// A responder SA counted as half-open by the limiter, from this address.
    half_open: Option<IpAddr>,
}

struct IkeThread {
    engine: Arc<Engine>,
    conns: Vec<Connection>,
    ifaces: Vec<InterfaceConfig>,
    sock500: Vec<(IpAddr, Arc<UdpSocket>)>,
    sas: Vec<Entry>,
    next_id: u64,
    status: Arc<Mutex<Vec<IkeSaStatus>>>,
    tun: String,
    half_open_logged: bool,
    /// Decides when new initiators must return a COOKIE first. `None` only if the system
    /// random number generator failed at start; then no responder SAs are created.
    cookies: Option<CookieGate>,
    /// Limits on new responder SAs (in all, per source, rate per source).
    limiter: InitLimiter,
    /// Counters the readers bump (and the thread, for an oversize message from port 4500
    /// that the engine let through: none, as it drops them itself).
    input: Arc<InputCounters>,
    /// `ip` invocations for the helper thread.
    ip_tx: Sender<Vec<String>>,
    /// An SA had input, a timeout or a command: pump, and look at the timers again.
    pending: bool,
    /// Something the status shows changed since it was last published.
    dirty: bool,
    /// When the status was last published.
    published: Instant,
    /// Whether some SA has byte or packet limits, as of the last time one was touched.
    volume: bool,
    /// The earliest timer of any SA, as of the last time one was touched.
    next_timer: Option<Instant>,
    /// The counters as last published.
    cookie_stats: Arc<Mutex<IkeStats>>,
    /// Rekeyed child SAs whose Delete completed, kept for inbound stragglers until the
    /// instant given (the peer may have sent on them just before it deleted them).
    lingering: Vec<(Instant, Installed)>,
    /// Outbound SPIs of children that ran out of sequence numbers while a rekey was
    /// replacing them, with when to look again: should that rekey fail, the child is
    /// deleted (and re-created) then instead of staying mute until its hard lifetime.
    exhausted: Vec<(Instant, u32)>,
    /// When inbound ESP counters were last looked at for liveness checks.
    activity_checked: Instant,
    /// When the SA counters were last fed to IKE SAs with byte or packet limits.
    usage_checked: Instant,
}

impl IkeThread {
    fn run(
        &mut self,
        cmds: &Receiver<Msg>,
        input: &Receiver<IkeDatagram>,
        e4500: Option<&Receiver<IkeDatagram>>,
        seq_events: Option<&Receiver<SaEvent>>,
    ) {
        // A channel whose senders are all gone (no port-500 socket, say) is replaced by one
        // that never delivers, so that the select below does not spin on it.
        let mut input = input.clone();
        let mut e4500 = e4500.cloned().unwrap_or_else(crossbeam_channel::never);
        let mut seq_events = seq_events.cloned().unwrap_or_else(crossbeam_channel::never);
        self.touched();
        loop {
            let now = Instant::now();
            let mut due = self.published + PUBLISH_EVERY;
            if let Some(t) = self.next_timer {
                due = due.min(t);
            }
            if self.volume {
                due = due.min(self.usage_checked + USAGE_INTERVAL);
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
                        recv(seq_events) -> ev => {
                            match ev {
                                Ok(ev) => {
                                    self.seq_event(Instant::now(), ev);
                                    self.touched();
                                }
                                Err(_) => seq_events = crossbeam_channel::never(),
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
            self.note_esp_activity(now);
            self.feed_usage(now);
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
            if self.next_timer.is_some_and(|t| t <= now) {
                for e in &mut self.sas {
                    if e.sa.poll_timeout().is_some_and(|t| t <= now) {
                        e.sa.handle_timeout(now);
                    }
                }
                self.touched();
            }
            if self.pending {
                // Something happened to an SA (not merely a dropped or refused message).
                self.pending = false;
                self.pump();
                self.next_timer = self.sas.iter().filter_map(|e| e.sa.poll_timeout()).min();
                self.volume = self.volume_limits();
            }
            self.publish_stats();
            if (self.dirty && now >= self.published + PUBLISH_MIN)
                || now >= self.published + PUBLISH_EVERY
            {
                self.publish(now);
            }
        }
    }

    /// An SA was given input, a timeout or a command: its events and datagrams are due,
    /// its timers may have moved, and the status may have changed.
    fn touched(&mut self) {
        self.pending = true;
        self.dirty = true;
    }

    /// Acts on every SA's events, sends its datagrams, and forgets finished SAs.
    fn pump(&mut self) {
        let mut restart = Vec::new();
        for i in 0..self.sas.len() {
            // Events first: a child SA is installed (or moved) before the message that
            // lets the peer use it goes out (make-before-break).
            while let Some(ev) = self.sas[i].sa.poll_event() {
                self.event(i, ev);
            }
            while let Some(t) = self.sas[i].sa.poll_transmit() {
                self.send(t.local, t.remote, &t.bytes);
            }
            let e = &mut self.sas[i];
            if e.sa.is_established() || e.sa.is_dead() {
                if let Some(src) = e.half_open.take() {
                    self.limiter.closed(src);
                }
            }
            if self.sas[i].sa.is_dead() && !self.sas[i].done {
                self.cleanup(i);
                self.sas[i].done = true;
                if self.sas[i].restart {
                    restart.push(self.conns[self.sas[i].conn].name.clone());
                }
            }
        }
        self.sas.retain(|e| !e.done);
        for name in restart {
            log(format_args!(
                "ike {name}: restarting (dpd_action = restart)"
            ));
            self.initiate(Instant::now(), &name);
        }
    }

    /// Tells IKE SAs with liveness checks about inbound ESP on their child SAs (once a
    /// second at most): traffic from the peer postpones the next check.
    fn note_esp_activity(&mut self, now: Instant) {
        if now.duration_since(self.activity_checked) < Duration::from_secs(1)
            || !self
                .sas
                .iter()
                .any(|e| self.conns[e.conn].ike.dpd.delay.is_some())
        {
            return;
        }
        self.activity_checked = now;
        self.touched();
        let st = self.engine.status();
        for e in &mut self.sas {
            let mut active = false;
            for c in &mut e.children {
                if let Some(s) = st.sas.iter().find(|s| s.name == c.spec.name) {
                    active |= s.in_packets != c.last_in;
                    c.last_in = s.in_packets;
                }
            }
            if active {
                e.sa.note_activity(now);
            }
        }
    }

    /// Whether some IKE SA's connection limits its child SAs by bytes or packets.
    fn volume_limits(&self) -> bool {
        self.sas
            .iter()
            .any(|e| self.conns[e.conn].ike.child_volume_limits())
    }

    /// Feeds the engine's per-SA counters to IKE SAs whose child SAs have byte or packet
    /// limits (every [`USAGE_INTERVAL`] at most): the larger of the inbound and outbound
    /// count of each pair (see [`IkeSa::child_usage`]). The IKE SA rekeys or deletes.
    fn feed_usage(&mut self, now: Instant) {
        if now.duration_since(self.usage_checked) < USAGE_INTERVAL || !self.volume_limits() {
            return;
        }
        self.usage_checked = now;
        self.touched();
        let st = self.engine.status();
        for e in &mut self.sas {
            if !self.conns[e.conn].ike.child_volume_limits() || !e.sa.is_established() {
                continue;
            }
            for c in &e.children {
                if let Some(s) = st.sas.iter().find(|s| s.name == c.spec.name) {
                    let bytes = s.in_bytes.max(s.out_bytes);
                    let packets = s.in_packets.max(s.out_packets);
                    e.sa.child_usage(now, c.spec.spi_in, bytes, packets);
                }
            }
        }
    }

    /// An outbound SA crossed its soft sequence-number limit or ran out: the IKE SA that
    /// owns the child rekeys it, or deletes (and, as initiator, re-creates) it.
    fn seq_event(&mut self, now: Instant, ev: SaEvent) {
        let (spi, exhausted) = match ev {
            SaEvent::SeqSoftLimit { spi } => (spi, false),
            SaEvent::SeqExhausted { spi } => (spi, true),
        };
        self.seq_limit(now, spi, exhausted, false);
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
        for e in &mut self.sas {
            let Some(action) = e.sa.child_seq_limit(now, spi, exhausted) else {
                continue;
            };
            found = true;
            if exhausted && action == SeqLimitAction::Replacing {
                self.exhausted.push((now + Duration::from_secs(1), spi));
                if again {
                    continue;
                }
            }
            let sa = e
                .children
                .iter()
                .find(|c| c.spi_out == spi)
                .map_or_else(|| format!("{spi:08x}"), |c| c.status.sa.clone());
            let did = match action {
                SeqLimitAction::Rekey => "rekeying it",
                SeqLimitAction::Replacing => "a rekey is replacing it already",
                SeqLimitAction::Delete { recreate: true } => "deleting it and creating it again",
                SeqLimitAction::Delete { recreate: false } => {
                    "deleting it (the peer initiated the IKE SA and may create it again)"
                }
            };
            log(format_args!(
                "ike {} #{}: child SA {sa} {what}: {did}",
                self.conns[e.conn].name, e.id
            ));
        }
        if !found && !again {
            log(format_args!(
                "ike: outbound SA {spi:08x} {what}, but no IKE SA has it (a rekeyed pair on its way out?)"
            ));
        }
        self.pump();
    }

    /// Starts a rekey of `conn`'s child SAs (or its IKE SA).
    fn rekey(&mut self, now: Instant, conn: &str, ike: bool) {
        for e in &mut self.sas {
            if self.conns[e.conn].name != conn || !e.sa.is_established() {
                continue;
            }
            let started = if ike {
                e.sa.rekey_ike(now)
            } else {
                e.sa.rekey_children(now)
            };
            log(format_args!(
                "ike {conn} #{}: {} rekey {}",
                e.id,
                if ike { "IKE SA" } else { "child SA" },
                if started { "started" } else { "not possible" }
            ));
        }
        self.pump();
    }

    fn send(&self, local: SocketAddr, remote: SocketAddr, bytes: &[u8]) {
        if let Some(i) = self
            .ifaces
            .iter()
            .find(|i| i.address == local.ip() && i.port == local.port())
        {
            if let Err(e) = self.engine.send_ike(&i.name, remote, bytes) {
                log(format_args!("ike: {e}"));
            }
            return;
        }
        match self.sock500.iter().find(|(a, _)| *a == local.ip()) {
            Some((_, s)) => {
                if let Err(e) = s.send_to(bytes, remote) {
                    log(format_args!("ike: sending to {remote}: {e}"));
                }
            }
            None => log(format_args!(
                "ike: no socket for {local}; message to {remote} dropped"
            )),
        }
    }

    fn datagram(&mut self, now: Instant, d: IkeDatagram) {
        if d.bytes.len() > MAX_MESSAGE {
            self.input.oversize.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(h) = HeaderPacket::new_checked(d.bytes.as_slice()) else {
            return;
        };
        let (spi_i, spi_r, flags) = (h.spi_i(), h.spi_r(), h.flags());
        let by_spis = if spi_r != 0 {
            self.sas.iter().position(|e| e.sa.owns(spi_i, spi_r))
        } else {
            None
        };
        let found = if by_spis.is_some() {
            by_spis
        } else if flags.initiator() {
            self.sas.iter().position(|e| {
                !e.sa.is_initiator()
                    && e.sa.spi_i() == Some(spi_i)
                    && e.sa.addresses().1.ip() == d.remote.ip()
            })
        } else {
            self.sas
                .iter()
                .position(|e| e.sa.is_initiator() && e.sa.spi_i() == Some(spi_i))
        };
        let i = match found {
            Some(i) => i,
            None => {
                let new_request = flags.initiator()
                    && !flags.response()
                    && spi_r == 0
                    && h.exchange_type() == ExchangeType::IkeSaInit
                    && h.message_id() == 0;
                if !new_request {
                    return;
                }
                let half_open = self.limiter.half_open();
                match self.limiter.check(now, d.remote.ip()) {
                    Ok(()) => self.half_open_logged = false,
                    Err(r) => {
                        if r == Refusal::HalfOpen && !self.half_open_logged {
                            log(format_args!(
                                "ike: {half_open} half-open IKE SAs; dropping new IKE_SA_INIT requests"
                            ));
                            self.half_open_logged = true;
                        }
                        return;
                    }
                }
                let Some(c) = self.conns.iter().position(|c| {
                    (c.local_addrs.is_empty() || c.local_addrs.contains(&d.local.ip()))
                        && (c.remote_addrs.is_empty() || c.remote_addrs.contains(&d.remote.ip()))
                }) else {
                    log(format_args!(
                        "ike: IKE_SA_INIT from {} to {} fits no connection",
                        d.remote, d.local
                    ));
                    return;
                };
                // Under load, a COOKIE round trip first (RFC 7296 section 2.6): no state
                // until the initiator shows it receives at its address.
                let Some(gate) = self.cookies.as_mut() else {
                    return;
                };
                if let Admission::Cookie(bytes) =
                    gate.admit(now, half_open, d.remote.ip(), &d.bytes)
                {
                    self.send(d.local, d.remote, &bytes);
                    return;
                }
                let sa = IkeSa::respond(self.conns[c].ike.clone());
                self.add(c, sa);
                let i = self.sas.len() - 1;
                self.sas[i]
                    .sa
                    .handle_datagram(now, d.local, d.remote, &d.bytes);
                // A responder that refused the request (no SA created) is not kept.
                if self.sas[i].sa.spi_i().is_none() {
                    while let Some(t) = self.sas[i].sa.poll_transmit() {
                        self.send(t.local, t.remote, &t.bytes);
                    }
                    self.sas.remove(i);
                    return;
                }
                self.limiter.opened(d.remote.ip());
                self.sas[i].half_open = Some(d.remote.ip());
                self.touched();
                return;
            }
        };
        self.sas[i]
            .sa
            .handle_datagram(now, d.local, d.remote, &d.bytes);
        self.touched();
    }

    fn add(&mut self, conn: usize, sa: IkeSa) {
        self.sas.push(Entry {
            id: self.next_id,
            conn,
            sa,
            info: None,
            established: None,
            children: Vec::new(),
            vips: Vec::new(),
            peer_vips: Vec::new(),
            dns: Vec::new(),
            done: false,
            restart: false,
            half_open: None,
        });
        self.next_id += 1;
    }

    fn initiate(&mut self, now: Instant, name: &str) {
        let Some(c) = self.conns.iter().position(|c| c.name == name) else {
            return;
        };
        if self.sas.iter().any(|e| e.conn == c && !e.sa.is_dead()) {
            log(format_args!("ike {name}: already up or connecting"));
            return;
        }
        let conn = &self.conns[c];
        let Some(&remote) = conn.remote_addrs.first() else {
            log(format_args!("ike {name}: no remote_addrs to initiate to"));
            return;
        };
        let local = conn.local_addrs.first().copied().or_else(|| {
            self.ifaces
                .iter()
                .find(|i| i.address.is_ipv4() == remote.is_ipv4())
                .map(|i| i.address)
        });
        let Some(local) = local else {
            log(format_args!(
                "ike {name}: no local address of {remote}'s family"
            ));
            return;
        };
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
        match IkeSa::initiate(conn.ike.clone(), now, l, r) {
            Ok(sa) => {
                log(format_args!("ike {name}: initiating {l} -> {r}"));
                self.add(c, sa);
                self.pump();
            }
            Err(e) => log(format_args!("ike {name}: cannot initiate: {e}")),
        }
    }

    /// Deletes the IKE SAs of `conn` (all with `None`).
    fn terminate(&mut self, now: Instant, conn: Option<&str>) {
        for i in 0..self.sas.len() {
            let e = &mut self.sas[i];
            if conn.is_some_and(|c| self.conns[e.conn].name != c) || e.sa.is_dead() {
                continue;
            }
            let sent = e.sa.delete(now);
            log(format_args!(
                "ike {} #{}: {}",
                self.conns[e.conn].name,
                e.id,
                if sent {
                    "deleting (Delete sent)"
                } else {
                    "abandoned"
                }
            ));
        }
        self.pump();
    }

    fn event(&mut self, i: usize, ev: Event) {
        let name = self.conns[self.sas[i].conn].name.clone();
        let id = self.sas[i].id;
        match ev {
            Event::IkeSaEstablished(info) => {
                log(format_args!(
                    "ike {name} #{id}: established {}[{}] === {}[{}], {}, nat {}, \
                     fragmentation {}, peer signature hashes {:?}",
                    info.local,
                    id_string(&self.conns[self.sas[i].conn].ike.local_id),
                    info.remote,
                    id_string(&info.remote_id),
                    algorithms(info.cipher, info.prf, info.group),
                    nat_name(&info),
                    if info.fragmentation { "on" } else { "off" },
                    info.peer_signature_hashes
                ));
                let st = self.sas[i].sa.stats();
                if st.fragments_sent + st.fragments_received > 0 {
                    log(format_args!(
                        "ike {name} #{id}: IKE fragments sent {}, received {}, dropped {}",
                        st.fragments_sent, st.fragments_received, st.fragments_dropped
                    ));
                }
                let e = &mut self.sas[i];
                if e.sa.is_initiator() {
                    for v in &info.vips {
                        // Queued for the helper thread (a failure is logged there).
                        ip_later(
                            &self.ip_tx,
                            &[
                                "addr",
                                "replace",
                                &host_prefix(*v),
                                "dev",
                                &self.tun,
                                "nodad",
                            ][..if v.is_ipv4() { 5 } else { 6 }],
                        );
                        e.vips.push(*v);
                    }
                } else {
                    e.peer_vips.clone_from(&info.vips);
                }
                e.dns.clone_from(&info.dns);
                if !info.vips.is_empty() || !info.dns.is_empty() {
                    let list = |v: &[IpAddr]| {
                        v.iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" ")
                    };
                    log(format_args!(
                        "ike {name} #{id}: virtual IPs [{}], DNS [{}]",
                        list(&info.vips),
                        list(&info.dns)
                    ));
                }
                e.info = Some(info);
                e.established = Some(Instant::now());
            }
            Event::ChildSaEstablished(c) => {
                if let Err(e) = self.install(i, c) {
                    log(format_args!(
                        "ike {name} #{id}: installing the child SA: {e}"
                    ));
                }
            }
            Event::ChildSaFailed {
                name: child,
                reason,
            } => log(format_args!(
                "ike {name} #{id}: child {child} failed: {reason:?}"
            )),
            Event::ChildSaRekeyed {
                old_spi_in,
                new,
                initiated,
            } => {
                log(format_args!(
                    "ike {name} #{id}: child {} rekeyed: {old_spi_in:08x} -> {:08x}",
                    new.name, new.spi_in
                ));
                // Make-before-break: the old pair stays until its Delete completes.
                let old = format!("{old_spi_in:08x}");
                for c in &mut self.sas[i].children {
                    if c.status.spi_in == old {
                        c.status.state = "REKEYED".into();
                    }
                }
                if let Err(e) = self.install(i, new) {
                    log(format_args!(
                        "ike {name} #{id}: installing the rekeyed child SA: {e}"
                    ));
                } else if initiated {
                    self.outbound_to_newest(i, &old);
                }
            }
            Event::IkeSaRekeyed(info) => {
                log(format_args!(
                    "ike {name} #{id}: IKE SA rekeyed: {:016x}_i {:016x}_r, {}",
                    info.spi_i,
                    info.spi_r,
                    algorithms(info.cipher, info.prf, info.group)
                ));
                self.sas[i].info = Some(info);
                self.sas[i].established = Some(Instant::now());
            }
            Event::ChildSaDeleted { spis_out } => {
                log(format_args!("ike {name} #{id}: child SAs deleted"));
                let e = &mut self.sas[i];
                let (gone, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut e.children)
                    .into_iter()
                    .partition(|c| spis_out.contains(&c.spi_out));
                e.children = keep;
                // Routes a remaining (rekeyed) child still uses stay.
                let kept: Vec<Prefix> = self.sas[i]
                    .children
                    .iter()
                    .flat_map(|c| c.routes.iter().copied())
                    .collect();
                for mut c in gone {
                    c.routes.retain(|r| !kept.contains(r));
                    if c.status.state == "REKEYED" {
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
                log(format_args!("ike {name} #{id}: failed: {r}"));
                let conn = &self.conns[self.sas[i].conn];
                if r == FailReason::Timeout
                    && conn.ike.dpd.action == DpdAction::Restart
                    && !conn.remote_addrs.is_empty()
                {
                    self.sas[i].restart = true;
                }
            }
            Event::Closed => log(format_args!("ike {name} #{id}: deleted by the peer")),
        }
    }

    /// Installs a negotiated child SA in the engine, with its VIP and routes.
    fn install(&mut self, i: usize, c: ChildSa) -> Result<(), String> {
        let e = &self.sas[i];
        let conn = &self.conns[e.conn];
        let (local, remote) = e.sa.addresses();
        let iface = self
            .ifaces
            .iter()
            .find(|f| f.address == local.ip() && f.port == NAT_T_PORT)
            .or_else(|| self.ifaces.iter().find(|f| f.address == local.ip()))
            .ok_or_else(|| format!("no interface with address {}", local.ip()))?;
        if !c.udp_encap {
            log(format_args!(
                "ike {}: no NAT and no forced encapsulation; mifsec sends ESP in UDP anyway (set encap = true)",
                conn.name
            ));
        }
        let sa_name = format!("{}-{}-{:08x}", conn.name, c.name, c.spi_in);
        let local_ts: Vec<Prefix> = c.local_ts.iter().flat_map(ts_prefixes).collect();
        let remote_ts: Vec<Prefix> = c.remote_ts.iter().flat_map(ts_prefixes).collect();
        let spec = SaSpec {
            name: sa_name.clone(),
            mode: match c.mode {
                Mode::Tunnel => esp::Mode::Tunnel,
                Mode::Transport => esp::Mode::Transport,
            },
            cipher: c.cipher,
            esn: c.esn,
            spi_out: c.spi_out,
            key_out: Zeroizing::new(c.keymat_out.to_vec()),
            spi_in: c.spi_in,
            key_in: Zeroizing::new(c.keymat_in.to_vec()),
            local_ts: local_ts.clone(),
            remote_ts: remote_ts.clone(),
            policy: Policy::Failover,
            paths: vec![PathSpec {
                name: "p1".into(),
                interface: iface.name.clone(),
                remote: SocketAddr::new(remote.ip(), NAT_T_PORT),
                role: Role::Active,
                weight: 1,
                pin: Vec::new(),
            }],
            reorder: Duration::ZERO,
            // A standard peer discards mifsec's probes: keep NAT bindings alive instead.
            probes: false,
        };
        self.engine.install_sa(spec.clone()).map_err(|e| e.0)?;
        let initiator = e.sa.is_initiator();
        let mut routes = Vec::new();
        let vips: &[IpAddr] = if initiator { &e.vips } else { &[] };
        if c.mode == Mode::Tunnel {
            for p in &remote_ts {
                // A rekeyed child's successor needs no new route: the route is the same.
                let have = e.children.iter().any(|c| c.routes.contains(p));
                let dst = p.to_string();
                let mut args = vec!["route", "replace", dst.as_str(), "dev", self.tun.as_str()];
                // Traffic into the tunnel leaves from our virtual IP of its family.
                let src = vips
                    .iter()
                    .find(|v| v.is_ipv4() == p.addr.is_ipv4())
                    .map(ToString::to_string);
                if let Some(s) = &src {
                    args.extend(["src", s.as_str()]);
                }
                if !have {
                    ip_later(&self.ip_tx, &args);
                }
                routes.push(*p);
            }
        }
        let status = IkeChildStatus {
            name: c.name.clone(),
            sa: sa_name.clone(),
            state: "INSTALLED".into(),
            spi_in: format!("{:08x}", c.spi_in),
            spi_out: format!("{:08x}", c.spi_out),
            cipher: c.cipher.name().into(),
            mode: match c.mode {
                Mode::Tunnel => "tunnel".into(),
                Mode::Transport => "transport".into(),
            },
            udp_encap: c.udp_encap,
            esn: c.esn,
            local_ts: local_ts.iter().map(ToString::to_string).collect(),
            remote_ts: remote_ts.iter().map(ToString::to_string).collect(),
        };
        log(format_args!(
            "ike {}: child {} installed as {sa_name}: in {} out {}, {}, {} === {}{}",
            conn.name,
            c.name,
            status.spi_in,
            status.spi_out,
            status.cipher,
            status.local_ts.join(" "),
            status.remote_ts.join(" "),
            if vips.is_empty() {
                String::new()
            } else {
                let v: Vec<String> = vips.iter().map(ToString::to_string).collect();
                format!(", vips {}", v.join(" "))
            }
        ));
        let e = &mut self.sas[i];
        e.children.push(Installed {
            status,
            spi_out: c.spi_out,
            spec,
            behind: false,
            last_in: 0,
            routes,
        });
        Ok(())
    }

    /// We initiated a rekey: the peer has the new pair already, so our outbound traffic
    /// moves to it at once (otherwise it would stay on the old pair until the Delete
    /// exchange completes, and packets in flight when the peer removes the old pair would
    /// be lost). The engine sends on the first SA whose selectors match, so the old pair is
    /// moved behind the new one; it keeps its state (replay window included) and keeps
    /// accepting inbound packets until its Delete completes.
    fn outbound_to_newest(&mut self, i: usize, old_spi_in: &str) {
        let Some(old) = self.sas[i]
            .children
            .iter_mut()
            .find(|c| c.status.spi_in == old_spi_in)
        else {
            return;
        };
        Self::move_behind(&self.engine, old);
    }

    fn move_behind(engine: &Engine, old: &mut Installed) {
        if old.behind {
            return;
        }
        let name = &old.spec.name;
        if let Err(e) = engine.demote_sa(name) {
            log(format_args!("ike: moving {name} behind its successor: {e}"));
            return;
        }
        old.behind = true;
    }

    fn uninstall(&self, c: Installed) {
        for p in &c.routes {
            ip_later(
                &self.ip_tx,
                &["route", "del", &p.to_string(), "dev", &self.tun],
            );
        }
        match self.engine.remove_sa(&c.status.sa) {
            Ok(_) => log(format_args!("ike: child SA {} removed", c.status.sa)),
            Err(e) => log(format_args!("ike: removing {}: {e}", c.status.sa)),
        }
    }

    /// Removes what a dead IKE SA installed: child SAs, routes, the virtual IP.
    fn cleanup(&mut self, i: usize) {
        let children = std::mem::take(&mut self.sas[i].children);
        for c in children {
            self.uninstall(c);
        }
        for v in std::mem::take(&mut self.sas[i].vips) {
            ip_later(
                &self.ip_tx,
                &["addr", "del", &host_prefix(v), "dev", &self.tun],
            );
        }
    }

    /// Rebuilds the IKE SA list that `status` shows.
    fn publish(&mut self, now: Instant) {
        self.dirty = false;
        self.published = now;
        let list = self
            .sas
            .iter()
            .map(|e| {
                let conn = &self.conns[e.conn];
                let (local, remote) = e.sa.addresses();
                let (spi_i, spi_r) = e.sa.spis().unwrap_or((e.sa.spi_i().unwrap_or(0), 0));
                let state = if e.sa.is_established() {
                    "ESTABLISHED"
                } else if e.sa.is_dead() {
                    "DELETING"
                } else {
                    "CONNECTING"
                };
                IkeSaStatus {
                    name: conn.name.clone(),
                    id: e.id,
                    state: state.into(),
                    initiator: e.sa.is_initiator(),
                    local: local.to_string(),
                    remote: remote.to_string(),
                    local_id: id_string(&conn.ike.local_id),
                    remote_id: e
                        .info
                        .as_ref()
                        .map(|i| id_string(&i.remote_id))
                        .unwrap_or_else(|| "%any".into()),
                    spi_i: format!("{spi_i:016x}"),
                    spi_r: format!("{spi_r:016x}"),
                    algorithms: e
                        .info
                        .as_ref()
                        .map(|i| algorithms(i.cipher, i.prf, i.group))
                        .unwrap_or_default(),
                    nat: e.info.as_ref().map_or("-", nat_name).into(),
                    vip: e.vips.first().map(ToString::to_string),
                    peer_vip: e.peer_vips.first().map(ToString::to_string),
                    vips: e.vips.iter().map(ToString::to_string).collect(),
                    peer_vips: e.peer_vips.iter().map(ToString::to_string).collect(),
                    dns: e.dns.iter().map(ToString::to_string).collect(),
                    established_s: e.established.map(|t| now.duration_since(t).as_secs()),
                    rekey_in_s: e
                        .sa
                        .next_rekey()
                        .map(|t| t.saturating_duration_since(now).as_secs()),
                    fragmentation: e.info.as_ref().is_some_and(|i| i.fragmentation),
                    fragments_sent: e.sa.stats().fragments_sent,
                    fragments_received: e.sa.stats().fragments_received,
                    fragments_dropped: e.sa.stats().fragments_dropped,
                    children: e.children.iter().map(|c| c.status.clone()).collect(),
                }
            })
            .collect();
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = list;
        self.publish_stats();
    }

    /// Copies the counters that `status` shows (a few integers).
    fn publish_stats(&self) {
        let mut st = self
            .cookie_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        st.half_open = self.limiter.half_open();
        st.half_open_sources = self.limiter.sources();
        st.limits = self.limiter.stats();
        st.cookies = self
            .cookies
            .as_ref()
            .map(CookieGate::stats)
            .unwrap_or_default();
    }
}

/// `a/32` or `a/128`.
fn host_prefix(a: IpAddr) -> String {
    format!("{a}/{}", if a.is_ipv4() { 32 } else { 128 })
}

/// Queues `ip ARGS` for the helper thread, which runs them in order (waits only if
/// [`IP_QUEUE`] invocations are already waiting).
fn ip_later(tx: &Sender<Vec<String>>, args: &[&str]) {
    if tx
        .send(args.iter().map(|a| (*a).to_owned()).collect())
        .is_err()
    {
        log(format_args!(
            "ip {}: the helper thread is gone",
            args.join(" ")
        ));
    }
}

/// Runs `ip ARGS` (by its absolute path, never through PATH); logs and returns false on
/// failure.
fn ip(args: &[&str]) -> bool {
    match crate::dataplane::iproute::run(args) {
        Ok(()) => true,
        Err(e) => {
            log(e);
            false
        }
    }
}

fn nat_name(info: &IkeSaInfo) -> &'static str {
    match (info.nat.local_behind_nat, info.nat.remote_behind_nat) {
        (false, false) => "none",
        (true, false) => "local",
        (false, true) => "remote",
        (true, true) => "both",
    }
}

/// An identity as swanctl prints it, safe to log and show: a peer's identity is its own
/// choice of bytes, so text goes through [`printable`] and long binary IDs are cut.
pub fn id_string(id: &IdPayload) -> String {
    if let Some(a) = id.as_ipv4() {
        return a.to_string();
    }
    if let Some(a) = id.as_ipv6() {
        return a.to_string();
    }
    if let Some(s) = id.as_str() {
        return printable(s);
    }
    let hex_of = |d: &[u8]| {
        let shown = &d[..d.len().min(MAX_SHOWN / 2)];
        let mut h = hex::encode(shown);
        if shown.len() < d.len() {
            h += &format!("...({} bytes)", d.len());
        }
        h
    };
    match id.id_type {
        IdType::KeyId => format!("@#{}", hex_of(&id.data)),
        t => format!("({t:?}) {}", hex_of(&id.data)),
    }
}

/// The most characters of a peer-supplied string shown in the log or the status.
const MAX_SHOWN: usize = 256;

/// A peer-supplied string made safe for a log line or a terminal: anything but printable
/// ASCII (control characters, escape sequences, line breaks, bidirectional overrides and
/// every other non-ASCII character) and the backslash are escaped as `\u{..}` / `\\`,
/// and the result is cut after [`MAX_SHOWN`] characters of the original.
pub fn printable(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == MAX_SHOWN {
            out += &format!("...({} bytes)", s.len());
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => out += &format!("\\u{{{:x}}}", u32::from(c)),
        }
    }
    out
}

/// IKE algorithms as swanctl prints them.
pub fn algorithms(cipher: Cipher, prf: Prf, group: DhGroup) -> String {
    let c = match cipher {
        Cipher::Aes128Gcm => "AES_GCM_16-128",
        Cipher::Aes256Gcm => "AES_GCM_16-256",
        Cipher::ChaCha20Poly1305 => "CHACHA20_POLY1305",
    };
    let p = match prf {
        Prf::HmacSha256 => "PRF_HMAC_SHA2_256",
        Prf::HmacSha384 => "PRF_HMAC_SHA2_384",
        Prf::HmacSha512 => "PRF_HMAC_SHA2_512",
    };
    let g = match group {
        DhGroup::Curve25519 => "CURVE_25519".to_owned(),
        DhGroup::Ecp256 => "ECP_256".to_owned(),
        DhGroup::Ecp384 => "ECP_384".to_owned(),
        other => format!("{other:?}"),
    };
    format!("{c}/{p}/{g}")
}

/// The smallest list of prefixes covering a selector's address range (ports and protocol
/// are not enforced by the engine).
pub fn ts_prefixes(ts: &TrafficSelector) -> Vec<Prefix> {
    let (start, end, bits, v4) = match ts {
        TrafficSelector::Ipv4 { start, end, .. } => (
            u128::from(u32::from(*start)),
            u128::from(u32::from(*end)),
            32u32,
            true,
        ),
        TrafficSelector::Ipv6 { start, end, .. } => {
            (u128::from(*start), u128::from(*end), 128u32, false)
        }
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    if start > end {
        return out;
    }
    let mut cur = start;
    loop {
        // The largest block aligned at `cur` that ends within `end`.
        let fits = |k: u32| {
            if k >= 128 {
                cur == 0 && end == u128::MAX
            } else {
                cur.checked_add((1u128 << k) - 1).is_some_and(|l| l <= end)
            }
        };
        let mut k = cur.trailing_zeros().min(bits);
        while k > 0 && !fits(k) {
            k -= 1;
        }
        let addr = if v4 {
            IpAddr::V4(Ipv4Addr::from(cur as u32))
        } else {
            IpAddr::V6(cur.into())
        };
        out.push(Prefix {
            addr,
            len: (bits - k) as u8,
        });
        if k >= 128 {
            return out;
        }
        let last = cur + ((1u128 << k) - 1);
        if last >= end {
            return out;
        }
        cur = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::config::{ts_prefix, ts_range};

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn selectors_to_prefixes() {
        let any4 = ts_prefix("0.0.0.0".parse().unwrap(), 0);
        assert_eq!(ts_prefixes(&any4), vec![p("0.0.0.0/0")]);
        let any6 = ts_prefix("::".parse().unwrap(), 0);
        assert_eq!(ts_prefixes(&any6), vec![p("::/0")]);
        let net = ts_prefix("10.88.0.0".parse().unwrap(), 16);
        assert_eq!(ts_prefixes(&net), vec![p("10.88.0.0/16")]);
        let host = ts_prefix("10.77.0.1".parse().unwrap(), 32);
        assert_eq!(ts_prefixes(&host), vec![p("10.77.0.1/32")]);
        let r = ts_range("10.0.0.1".parse().unwrap(), "10.0.0.6".parse().unwrap()).unwrap();
        assert_eq!(
            ts_prefixes(&r),
            vec![
                p("10.0.0.1/32"),
                p("10.0.0.2/31"),
                p("10.0.0.4/31"),
                p("10.0.0.6/32")
            ]
        );
        let top = ts_range(
            "255.255.255.254".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(ts_prefixes(&top), vec![p("255.255.255.254/31")]);
    }

    #[test]
    fn peer_identities_are_escaped_and_bounded() {
        assert_eq!(
            id_string(&IdPayload::fqdn("gw.example.org")),
            "gw.example.org"
        );
        assert_eq!(
            id_string(&IdPayload::rfc822("bob@example.org")),
            "bob@example.org"
        );
        // A fake log line, a terminal escape, a bidi override, a backslash, a NUL.
        assert_eq!(
            id_string(&IdPayload::fqdn(
                "gw\nmifsec: ike x: established\x1b[2J\u{202e}\\\0"
            )),
            "gw\\u{a}mifsec: ike x: established\\u{1b}[2J\\u{202e}\\\\\\u{0}"
        );
        assert_eq!(id_string(&IdPayload::fqdn("b\u{fc}ro")), "b\\u{fc}ro");
        let long = "a".repeat(5000);
        let shown = id_string(&IdPayload::fqdn(&long));
        assert_eq!(shown, format!("{}...(5000 bytes)", "a".repeat(256)));
        let shown = id_string(&IdPayload::key_id(&[0xab; 1000]));
        assert_eq!(shown, format!("@#{}...(1000 bytes)", "ab".repeat(128)));
        // Not UTF-8: hex.
        let mut raw = IdPayload::fqdn("x");
        raw.data = vec![0xff, 0x0a];
        assert_eq!(id_string(&raw), "(Fqdn) ff0a");
    }

    #[test]
    fn names() {
        assert_eq!(
            algorithms(Cipher::Aes128Gcm, Prf::HmacSha256, DhGroup::Curve25519),
            "AES_GCM_16-128/PRF_HMAC_SHA2_256/CURVE_25519"
        );
        assert_eq!(id_string(&IdPayload::fqdn("gw")), "gw");
        assert_eq!(id_string(&IdPayload::key_id(&[1, 2])), "@#0102");
    }
}
