//! Interfaces that follow their device's addresses (`[interfaces.NAME]` with a `device` and
//! no `address`; issue 10).
//!
//! The rtnetlink [`Monitor`] (dataplane `sys/netlink.rs`) runs on its own thread,
//! `mifsec-netlink`, in a mio loop on the monitor's event socket; a change opens a
//! [`Debounce`] window of [`DEBOUNCE`] (100 ms, as strongSwan waits), and when the window
//! closes with a net change the followed interfaces are reconciled with the monitor's
//! snapshot: the snapshot says *what* is there, the window only *when* to look, so a flap
//! (an address removed and added back, a link down and up) within the window changes
//! nothing and a burst of changes costs one reconciliation. One exception: the deletion of
//! an address that has a socket is acted on at once (nothing can be sent from it any more,
//! and an IKE SA on it should move now, not 100 ms later); if it comes back within the
//! window it is opened again when the window closes. The thread is the daemon's, not
//! the engine's or the IKE thread's: it maps configuration names to devices, opens and
//! closes the engine's sockets (`Engine::add_interface` / `remove_interface`, which touch no
//! other socket), and tells the IKE thread the new interface list ([`InterfaceSink`]); it
//! runs with or without IKE.
//!
//! The usable addresses of a followed device: those the monitor keeps (no tentative or
//! DAD-failed IPv6 address), not IPv6 link-local ones, none while the link is not up
//! (administratively up and with carrier), none that a fixed `[interfaces.*]` binds on the
//! same port, at most [`MAX_ADDRS`]. Each gets its own engine interface (one socket): the
//! first is named as the section (`wan`), further ones `wan.2`, `wan.3`, ... (a `.` is never
//! in a configured name); an address keeps its name when it goes and comes back, and a name
//! is not given to another address while it is remembered (the last 64 assignments), so
//! that an engine path on `wan` resumes on the same address after a link down and up, and
//! never silently sends from another. A socket that cannot be opened is logged, counted and tried again
//! every [`RETRY`] while its address stays.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;
use tracing::{debug, info, warn};

use super::ike_thread::InterfaceSink;
use crate::config::FollowedInterface;
use crate::dataplane::engine::{Engine, EngineError, EngineStatus, InterfaceConfig};
use crate::dataplane::netlink::{Change, Debounce, Link, Monitor, MonitorCounters, Snapshot};

/// The debounce window of interface changes (strongSwan waits 100 ms too).
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// A socket that could not be opened is tried again after this long.
pub const RETRY: Duration = Duration::from_secs(1);
/// Most addresses (sockets) one followed interface uses.
pub const MAX_ADDRS: usize = 16;

/// What opens and closes sockets: the engine (a stand-in in the unit tests).
pub trait Sockets {
    /// See [`Engine::add_interface`].
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, EngineError>;
    /// See [`Engine::remove_interface`].
    fn remove_interface(&self, name: &str) -> Result<String, EngineError>;
}

impl Sockets for Engine {
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, EngineError> {
        Engine::add_interface(self, iface)
    }
    fn remove_interface(&self, name: &str) -> Result<String, EngineError> {
        Engine::remove_interface(self, name)
    }
}

/// Whether a socket is open on an address (`mifsec status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketState {
    /// Open: the engine sends and receives on it.
    Open,
    /// Not open: the engine refused (see `error`; tried again every [`RETRY`]), or a fixed
    /// interface's socket was closed by `mifsec ctl remove-interface`.
    Closed,
}

/// One address of a configured interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AddressStatus {
    /// The address.
    pub address: String,
    /// The socket's local port.
    pub port: u16,
    /// Whether the socket is open.
    pub socket: SocketState,
    /// The engine's interface (what paths name) when open.
    pub engine_interface: Option<String>,
    /// Why it is not open, when the engine refused.
    pub error: Option<String>,
}

/// One `[interfaces.*]` section as `mifsec status` shows it (`configured_interfaces`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfiguredInterface {
    /// The section's name.
    pub name: String,
    /// Its device, if any.
    pub device: Option<String>,
    /// `fixed` (an `address`) or `followed` (the device's addresses).
    pub kind: &'static str,
    /// A followed device: whether it exists now.
    pub device_present: Option<bool>,
    /// A followed device: whether it is up (administratively and with carrier).
    pub device_up: Option<bool>,
    /// Its current addresses (learned or fixed) and their sockets.
    pub addresses: Vec<AddressStatus>,
}

/// What the follower counted (`netlink` in `mifsec status --json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct FollowCounters {
    /// Netlink messages the monitor parsed.
    pub messages: u64,
    /// Netlink messages that failed to parse (skipped).
    pub parse_errors: u64,
    /// Fresh dumps after the kernel dropped events.
    pub resyncs: u64,
    /// Debounce windows that closed with a net change (each one reconciliation).
    pub windows: u64,
    /// Debounce windows whose changes undid each other (a flap): nothing done.
    pub flaps_absorbed: u64,
    /// Deletions of an address with a socket, acted on at once (not after the window).
    pub removals_at_once: u64,
    /// Sockets opened on learned addresses.
    pub sockets_opened: u64,
    /// Sockets closed because their address or link went away.
    pub sockets_closed: u64,
    /// Sockets the engine refused to open (tried again).
    pub open_failures: u64,
}

/// What the follower publishes for `status`.
#[derive(Debug, Clone, Default)]
pub struct Published {
    /// The followed interfaces, in configuration order.
    pub followed: Vec<ConfiguredInterface>,
    /// The counters.
    pub counters: FollowCounters,
}

/// One followed interface and its sockets.
#[derive(Debug)]
struct Followed {
    cfg: FollowedInterface,
    present: bool,
    up: bool,
    /// Open sockets: address -> engine interface name.
    open: BTreeMap<IpAddr, String>,
    /// Addresses whose socket the engine refused, with why.
    failed: BTreeMap<IpAddr, String>,
    /// The engine interface name each address had, oldest first (at most [`MAX_NAMES`]):
    /// an address that comes back gets its name again, and a name is not given to another
    /// address while it is remembered, so that an engine path on `wan` never silently
    /// sends from a different address.
    names: Vec<(IpAddr, String)>,
}

/// Most address-to-name assignments remembered per followed interface.
const MAX_NAMES: usize = 64;

impl Followed {
    /// The engine interface name for a socket on `addr`: the one it had, else `NAME`,
    /// `NAME.2`, ... the first that no remembered address has.
    fn name_for(&mut self, addr: IpAddr) -> String {
        if let Some((_, n)) = self.names.iter().find(|(a, _)| *a == addr) {
            return n.clone();
        }
        if self.names.len() >= MAX_NAMES {
            // Forget the oldest assignment whose address has no socket.
            if let Some(i) = self
                .names
                .iter()
                .position(|(a, _)| !self.open.contains_key(a))
            {
                self.names.remove(i);
            }
        }
        let base = &self.cfg.name;
        let name = (1..=MAX_NAMES + 1)
            .map(|n| {
                if n == 1 {
                    base.clone()
                } else {
                    format!("{base}.{n}")
                }
            })
            .find(|c| !self.names.iter().any(|(_, n)| n == c))
            .unwrap_or_else(|| format!("{base}.{}", MAX_NAMES + 2));
        self.names.push((addr, name.clone()));
        name
    }
}

/// The followed interfaces against the monitor's snapshot: the part of the follower without
/// I/O of its own (the sockets are opened and closed through [`Sockets`]).
#[derive(Debug)]
pub struct Followers {
    fixed: Vec<InterfaceConfig>,
    followed: Vec<Followed>,
    counters: FollowCounters,
}

/// Whether `a` may carry IKE and ESP: IPv6 link-local addresses are not used.
fn usable_address(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => !v.is_unspecified() && !v.is_multicast(),
        IpAddr::V6(v) => {
            !v.is_unspecified() && !v.is_multicast() && (v.segments()[0] & 0xffc0) != 0xfe80
        }
    }
}

impl Followers {
    /// The followed interfaces of the configuration, none of them open yet; `fixed` are the
    /// interfaces with a fixed address (their address and port is never bound twice).
    pub fn new(fixed: Vec<InterfaceConfig>, followed: &[FollowedInterface]) -> Followers {
        Followers {
            fixed,
            followed: followed
                .iter()
                .map(|f| Followed {
                    cfg: f.clone(),
                    present: false,
                    up: false,
                    open: BTreeMap::new(),
                    failed: BTreeMap::new(),
                    names: Vec::new(),
                })
                .collect(),
            counters: FollowCounters::default(),
        }
    }

    /// The addresses of `f`'s device that it should have a socket on now.
    fn wanted(&self, f: &Followed, link: Option<&Link>) -> BTreeSet<IpAddr> {
        let Some(link) = link.filter(|l| l.up) else {
            return BTreeSet::new();
        };
        link.addrs
            .iter()
            .map(|a| a.addr)
            .filter(|&a| usable_address(a))
            .filter(|&a| {
                !self
                    .fixed
                    .iter()
                    .any(|i| i.address == a && i.port == f.cfg.port)
            })
            .take(MAX_ADDRS)
            .collect()
    }

    /// Logs, at start, the followed devices that do not exist (yet) or are down.
    pub fn log_initial(&self, snap: &Snapshot) {
        for f in &self.followed {
            match snap.by_name(&f.cfg.device) {
                None => warn!(
                    "interface {}: device {} does not exist (yet); its addresses are followed once it appears",
                    f.cfg.name, f.cfg.device
                ),
                Some(l) if !l.up => info!(
                    "interface {}: device {} is down; its addresses are used once it is up",
                    f.cfg.name, f.cfg.device
                ),
                Some(_) => {}
            }
        }
    }

    /// Opens and closes sockets so that every followed interface has one on each of its
    /// usable addresses in `snap` (closing first). Returns whether any socket was opened
    /// or closed (the interface list changed).
    pub fn reconcile(&mut self, snap: &Snapshot, sockets: &dyn Sockets) -> bool {
        let mut changed = false;
        for i in 0..self.followed.len() {
            let link = snap.by_name(&self.followed[i].cfg.device);
            let want = self.wanted(&self.followed[i], link);
            let f = &mut self.followed[i];
            let (name, device) = (f.cfg.name.clone(), f.cfg.device.clone());
            let (present, up) = (link.is_some(), link.is_some_and(|l| l.up));
            if present != f.present {
                if present {
                    info!("interface {name}: device {device} appeared");
                } else {
                    info!("interface {name}: device {device} went away");
                }
            } else if present && up != f.up {
                info!(
                    "interface {name}: device {device} is {}",
                    if up { "up" } else { "down" }
                );
            }
            f.present = present;
            f.up = up;
            let gone: Vec<(IpAddr, String)> = f
                .open
                .iter()
                .filter(|(a, _)| !want.contains(a))
                .map(|(a, n)| (*a, n.clone()))
                .collect();
            for (addr, engine_name) in gone {
                f.open.remove(&addr);
                changed = true;
                self.counters.sockets_closed += 1;
                match sockets.remove_interface(&engine_name) {
                    Ok(_) => info!(
                        "interface {name}: {addr} is no longer usable on {device}: socket {engine_name} closed"
                    ),
                    Err(e) => warn!(
                        "interface {name}: {addr} is no longer usable on {device}: closing socket {engine_name}: {e}"
                    ),
                }
            }
            f.failed.retain(|a, _| want.contains(a));
            for addr in want {
                if f.open.contains_key(&addr) {
                    continue;
                }
                let engine_name = f.name_for(addr);
                let iface = InterfaceConfig {
                    name: engine_name.clone(),
                    device: Some(device.clone()),
                    address: addr,
                    port: f.cfg.port,
                };
                match sockets.add_interface(iface) {
                    Ok(msg) => {
                        info!("interface {name}: {addr} on {device}: {msg}");
                        f.failed.remove(&addr);
                        f.open.insert(addr, engine_name);
                        self.counters.sockets_opened += 1;
                        changed = true;
                    }
                    Err(e) => {
                        self.counters.open_failures += 1;
                        let e = e.to_string();
                        if f.failed.get(&addr) != Some(&e) {
                            warn!(
                                "interface {name}: {addr} on {device}: cannot open a socket: {e}; trying again every {} s",
                                RETRY.as_secs()
                            );
                        }
                        f.failed.insert(addr, e);
                    }
                }
            }
        }
        changed
    }

    /// Whether `c` can change what the followed interfaces use: a change of a followed
    /// device (`followed`: their indexes) or of a usable address on one. Routes, other
    /// devices and IPv6 link-local addresses do not; they open no debounce window.
    pub fn relevant(&self, c: &Change, followed: &BTreeSet<u32>) -> bool {
        match c {
            Change::LinkAdded { name, .. } | Change::LinkRemoved { name, .. } => {
                self.followed.iter().any(|f| f.cfg.device == *name)
            }
            Change::LinkUp { index, .. } | Change::LinkDown { index, .. } => {
                followed.contains(index)
            }
            Change::AddrAdded { index, addr } | Change::AddrRemoved { index, addr } => {
                followed.contains(index) && usable_address(addr.addr)
            }
            Change::RoutesChanged => false,
        }
    }

    /// Whether `c` deletes an address that has a socket (acted on at once, not after the
    /// debounce window).
    pub fn takes_an_open_address(&self, c: &Change) -> bool {
        match c {
            Change::AddrRemoved { addr, .. } => self
                .followed
                .iter()
                .any(|f| f.open.contains_key(&addr.addr)),
            _ => false,
        }
    }

    /// Whether some socket could not be opened (to be tried again).
    pub fn has_failures(&self) -> bool {
        self.followed.iter().any(|f| !f.failed.is_empty())
    }

    /// The interfaces with a socket now: the fixed ones, then the learned ones.
    pub fn interfaces(&self) -> Vec<InterfaceConfig> {
        let mut v = self.fixed.clone();
        for f in &self.followed {
            for (addr, name) in &f.open {
                v.push(InterfaceConfig {
                    name: name.clone(),
                    device: Some(f.cfg.device.clone()),
                    address: *addr,
                    port: f.cfg.port,
                });
            }
        }
        v
    }

    /// The followed interfaces as `status` shows them.
    pub fn published(&self) -> Published {
        let followed = self
            .followed
            .iter()
            .map(|f| {
                let mut addrs: Vec<AddressStatus> = f
                    .open
                    .iter()
                    .map(|(a, n)| AddressStatus {
                        address: a.to_string(),
                        port: f.cfg.port,
                        socket: SocketState::Open,
                        engine_interface: Some(n.clone()),
                        error: None,
                    })
                    .collect();
                addrs.extend(f.failed.iter().map(|(a, e)| AddressStatus {
                    address: a.to_string(),
                    port: f.cfg.port,
                    socket: SocketState::Closed,
                    engine_interface: None,
                    error: Some(e.clone()),
                }));
                ConfiguredInterface {
                    name: f.cfg.name.clone(),
                    device: Some(f.cfg.device.clone()),
                    kind: "followed",
                    device_present: Some(f.present),
                    device_up: Some(f.up),
                    addresses: addrs,
                }
            })
            .collect();
        Published {
            followed,
            counters: self.counters,
        }
    }
}

/// The fixed interfaces as `status` shows them: the configured address, and whether the
/// engine still has the socket (an operator may have closed it).
pub fn fixed_status(fixed: &[InterfaceConfig], engine: &EngineStatus) -> Vec<ConfiguredInterface> {
    fixed
        .iter()
        .map(|i| {
            let local = std::net::SocketAddr::new(i.address, i.port);
            let open = engine
                .interfaces
                .iter()
                .find(|e| e.name == i.name)
                .filter(|e| i.port == 0 || e.local == local.to_string());
            ConfiguredInterface {
                name: i.name.clone(),
                device: i.device.clone(),
                kind: "fixed",
                device_present: None,
                device_up: None,
                addresses: vec![AddressStatus {
                    address: i.address.to_string(),
                    port: i.port,
                    socket: if open.is_some() {
                        SocketState::Open
                    } else {
                        SocketState::Closed
                    },
                    engine_interface: open.map(|e| e.name.clone()),
                    error: None,
                }],
            }
        })
        .collect()
}

/// The interface follower before its thread runs: the monitor is open (subscribed and
/// dumped), nothing is open in the engine yet.
#[derive(Debug)]
pub struct Follower {
    monitor: Monitor,
    debounce: Debounce,
    followers: Followers,
    published: Arc<Mutex<Published>>,
}

impl Follower {
    /// Opens the monitor (in the calling thread's network namespace) and logs the followed
    /// devices that are missing or down.
    pub fn open(
        fixed: Vec<InterfaceConfig>,
        followed: &[FollowedInterface],
    ) -> io::Result<Follower> {
        let monitor = Monitor::open()?;
        let followers = Followers::new(fixed, followed);
        followers.log_initial(monitor.snapshot());
        let published = Arc::new(Mutex::new(followers.published()));
        Ok(Follower {
            monitor,
            debounce: Debounce::new(DEBOUNCE),
            followers,
            published,
        })
    }

    /// Opens the sockets of the addresses there now (before the IKE thread starts, so that
    /// it starts with them). Returns the interface list, fixed ones first.
    pub fn start(&mut self, engine: &Engine) -> Vec<InterfaceConfig> {
        self.followers.reconcile(self.monitor.snapshot(), engine);
        self.publish();
        self.followers.interfaces()
    }

    /// The interfaces that [`Follower::start`] would open now, fixed ones first (for the
    /// port-500 sockets, bound before the daemon drops root).
    pub fn would_open(&self) -> Vec<InterfaceConfig> {
        let mut v = self.followers.fixed.clone();
        for f in &self.followers.followed {
            let link = self.monitor.snapshot().by_name(&f.cfg.device);
            for addr in self.followers.wanted(f, link) {
                v.push(InterfaceConfig {
                    name: f.cfg.name.clone(),
                    device: Some(f.cfg.device.clone()),
                    address: addr,
                    port: f.cfg.port,
                });
            }
        }
        v
    }

    fn publish(&self) {
        let mut p = self.followers.published();
        let m: MonitorCounters = self.monitor.counters();
        p.counters.messages = m.messages;
        p.counters.parse_errors = m.parse_errors;
        p.counters.resyncs = m.resyncs;
        *self
            .published
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = p;
    }

    /// Starts the `mifsec-netlink` thread. `sink` gets the interface list whenever it
    /// changes (with IKE).
    pub fn spawn(
        self,
        engine: Arc<Engine>,
        sink: Option<InterfaceSink>,
    ) -> io::Result<FollowerHandle> {
        let poll = mio::Poll::new()?;
        let waker = Arc::new(mio::Waker::new(poll.registry(), WAKE)?);
        let stop = Arc::new(AtomicBool::new(false));
        let published = Arc::clone(&self.published);
        let (st, wk) = (Arc::clone(&stop), Arc::clone(&waker));
        let thread = std::thread::Builder::new()
            .name("mifsec-netlink".into())
            .spawn(move || {
                crate::dataplane::debug::panic_point("netlink");
                let _waker = wk;
                let mut me = self;
                // The sockets stay as they are when it ends (the engine closes them at the
                // end of the daemon).
                if let Err(e) = me.run(poll, &engine, sink.as_ref(), &st) {
                    warn!(
                        "interface monitor: {e}; the sockets on learned addresses stay as they are, no longer followed"
                    );
                }
            })?;
        Ok(FollowerHandle {
            stop,
            waker,
            thread: Some(thread),
            published,
        })
    }

    fn run(
        &mut self,
        mut poll: mio::Poll,
        engine: &Engine,
        sink: Option<&InterfaceSink>,
        stop: &AtomicBool,
    ) -> io::Result<()> {
        let fd = self.monitor.as_raw_fd();
        poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            NETLINK,
            mio::Interest::READABLE,
        )?;
        let mut events = mio::Events::with_capacity(8);
        let mut changes = Vec::new();
        let mut retry_at: Option<Instant> = None;
        // Events may have queued between the dump and the registration.
        let mut readable = true;
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            if readable {
                readable = false;
                // The followed devices' indexes before and after (a change may name a link
                // that has just gone, or just come).
                let mut followed = self.followed_indexes();
                self.drain(&mut changes)?;
                followed.extend(self.followed_indexes());
                let now = Instant::now();
                let mut urgent = false;
                for c in changes.drain(..) {
                    if self.followers.relevant(&c, &followed) {
                        debug!("netlink: {c:?}");
                        urgent |= self.followers.takes_an_open_address(&c);
                        self.debounce.push(now, c);
                    }
                }
                if urgent {
                    // An address with a socket was deleted: nothing can be sent from it
                    // any more, so waiting would only lengthen the gap (an IKE SA on it
                    // moves now). The window still closes as usual; should the address
                    // come back within it, it is opened again then.
                    self.followers.counters.removals_at_once += 1;
                    self.apply(engine, sink, now, &mut retry_at);
                }
            }
            let now = Instant::now();
            let closing = self.debounce.deadline().is_some_and(|d| now >= d);
            let due = self.debounce.take_due(now);
            let retry = retry_at.is_some_and(|t| now >= t);
            if closing && due.is_empty() {
                self.followers.counters.flaps_absorbed += 1;
                debug!(
                    "netlink: changes within {} ms undid each other",
                    DEBOUNCE.as_millis()
                );
            }
            // At every window's close, even one whose changes undid each other: the
            // snapshot is then as before, so nothing is done, unless a deletion acted on at
            // once within the window was undone (its address is back: reopened now).
            if closing || retry {
                if !due.is_empty() {
                    self.followers.counters.windows += 1;
                }
                self.apply(engine, sink, now, &mut retry_at);
            }
            self.publish();
            let wake = [self.debounce.deadline(), retry_at]
                .into_iter()
                .flatten()
                .min();
            let timeout = wake.map(|t| t.saturating_duration_since(Instant::now()));
            match poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            readable = events.iter().any(|e| e.token() == NETLINK);
        }
    }

    /// Reconciles the followed interfaces with the snapshot, tells the IKE thread when the
    /// interface list changed, and schedules a retry while a socket could not be opened.
    fn apply(
        &mut self,
        engine: &Engine,
        sink: Option<&InterfaceSink>,
        now: Instant,
        retry_at: &mut Option<Instant>,
    ) {
        *retry_at = None;
        if self.followers.reconcile(self.monitor.snapshot(), engine) {
            if let Some(s) = sink {
                s.publish(self.followers.interfaces());
            }
        }
        if self.followers.has_failures() {
            *retry_at = Some(now + RETRY);
        }
    }

    /// The indexes of the followed devices that exist now.
    fn followed_indexes(&self) -> BTreeSet<u32> {
        let snap = self.monitor.snapshot();
        self.followers
            .followed
            .iter()
            .filter_map(|f| snap.by_name(&f.cfg.device).map(|l| l.index))
            .collect()
    }

    /// Reads every event waiting: the monitor reads a bounded number per call, and mio
    /// reports readiness only on an edge, so it is called again while it read a full batch.
    fn drain(&mut self, out: &mut Vec<Change>) -> io::Result<()> {
        let total = |c: MonitorCounters| c.messages + c.parse_errors + c.route_events + c.ignored;
        for _ in 0..1024 {
            let before = total(self.monitor.counters());
            self.monitor.poll(out)?;
            if total(self.monitor.counters()) - before < 256 {
                break;
            }
        }
        Ok(())
    }
}

const NETLINK: mio::Token = mio::Token(0);
const WAKE: mio::Token = mio::Token(1);

/// The running follower thread.
#[derive(Debug)]
pub struct FollowerHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<mio::Waker>,
    thread: Option<JoinHandle<()>>,
    published: Arc<Mutex<Published>>,
}

impl FollowerHandle {
    /// The followed interfaces and the counters, as of the thread's last turn.
    pub fn published(&self) -> Published {
        self.published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the thread and waits for it (the sockets stay until the engine stops).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for FollowerHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::netlink::IfAddr;
    use std::cell::RefCell;

    /// The engine's socket operations, recorded.
    #[derive(Default)]
    struct Rec {
        open: RefCell<BTreeMap<String, IpAddr>>,
        log: RefCell<Vec<String>>,
        refuse: RefCell<Option<IpAddr>>,
    }

    impl Sockets for Rec {
        fn add_interface(&self, i: InterfaceConfig) -> Result<String, EngineError> {
            if *self.refuse.borrow() == Some(i.address) {
                return Err(EngineError::InterfaceExists { name: i.name });
            }
            self.log
                .borrow_mut()
                .push(format!("open {} {}", i.name, i.address));
            self.open.borrow_mut().insert(i.name.clone(), i.address);
            Ok(format!("interface {} open", i.name))
        }
        fn remove_interface(&self, name: &str) -> Result<String, EngineError> {
            self.log.borrow_mut().push(format!("close {name}"));
            self.open.borrow_mut().remove(name);
            Ok(String::new())
        }
    }

    fn link(index: u32, name: &str, up: bool, addrs: &[&str]) -> Link {
        Link {
            index,
            name: name.into(),
            up,
            addrs: addrs
                .iter()
                .map(|a| IfAddr {
                    addr: a.parse().unwrap(),
                    prefix_len: 24,
                })
                .collect(),
        }
    }

    fn snap(links: Vec<Link>) -> Snapshot {
        Snapshot {
            links: links.into_iter().map(|l| (l.index, l)).collect(),
        }
    }

    fn wan() -> Vec<FollowedInterface> {
        vec![FollowedInterface {
            name: "wan".into(),
            device: "eth1".into(),
            port: 4500,
        }]
    }

    #[test]
    fn sockets_follow_the_usable_addresses_of_the_device() {
        let rec = Rec::default();
        let fixed = InterfaceConfig {
            name: "lan".into(),
            device: Some("eth1".into()),
            address: "198.18.5.1".parse().unwrap(),
            port: 4500,
        };
        let mut f = Followers::new(vec![fixed], &wan());
        // The device does not exist yet: nothing, and not an error.
        assert!(!f.reconcile(&snap(vec![]), &rec));
        assert_eq!(f.published().followed[0].device_present, Some(false));
        // It appears down with an address: still nothing.
        assert!(!f.reconcile(&snap(vec![link(3, "eth1", false, &["198.18.1.2"])]), &rec));
        // Up: the address, but not link-local IPv6, nor the fixed interface's address.
        let s = snap(vec![link(
            3,
            "eth1",
            true,
            &["198.18.1.2", "fe80::1", "198.18.5.1", "2001:db8::2"],
        )]);
        assert!(f.reconcile(&s, &rec));
        assert_eq!(
            *rec.log.borrow(),
            ["open wan 198.18.1.2", "open wan.2 2001:db8::2"]
        );
        assert!(!f.reconcile(&s, &rec), "nothing changed: nothing done");
        // Deleting an address with a socket is urgent; one without, or a link down, is not.
        let del = |a: &str| Change::AddrRemoved {
            index: 3,
            addr: IfAddr {
                addr: a.parse().unwrap(),
                prefix_len: 24,
            },
        };
        assert!(f.takes_an_open_address(&del("198.18.1.2")));
        assert!(!f.takes_an_open_address(&del("198.18.7.7")));
        assert!(!f.takes_an_open_address(&Change::LinkDown {
            index: 3,
            name: "eth1".into()
        }));
        let names: Vec<String> = f.interfaces().iter().map(|i| i.name.clone()).collect();
        assert_eq!(names, ["lan", "wan", "wan.2"]);
        // The first address goes: its socket closes; a new address gets a new name (not
        // `wan`, which a path may name for 198.18.1.2), and the old one gets its own back.
        rec.log.borrow_mut().clear();
        let s = snap(vec![link(3, "eth1", true, &["2001:db8::2", "198.18.3.2"])]);
        assert!(f.reconcile(&s, &rec));
        assert_eq!(*rec.log.borrow(), ["close wan", "open wan.3 198.18.3.2"]);
        rec.log.borrow_mut().clear();
        let s = snap(vec![link(
            3,
            "eth1",
            true,
            &["2001:db8::2", "198.18.3.2", "198.18.1.2"],
        )]);
        assert!(f.reconcile(&s, &rec));
        assert_eq!(*rec.log.borrow(), ["open wan 198.18.1.2"]);
        rec.log.borrow_mut().clear();
        let s = snap(vec![link(3, "eth1", true, &["2001:db8::2", "198.18.3.2"])]);
        assert!(f.reconcile(&s, &rec));
        // Link down: every socket closes; the device going away likewise.
        rec.log.borrow_mut().clear();
        let down = snap(vec![link(3, "eth1", false, &["2001:db8::2", "198.18.3.2"])]);
        assert!(f.reconcile(&down, &rec));
        assert_eq!(rec.log.borrow().len(), 2);
        assert!(rec.open.borrow().is_empty());
        let p = f.published();
        assert_eq!(p.counters.sockets_opened, 4);
        assert_eq!(p.counters.sockets_closed, 4);
        assert_eq!(p.followed[0].device_up, Some(false));
    }

    #[test]
    fn a_refused_socket_is_counted_shown_and_tried_again() {
        let rec = Rec::default();
        let mut f = Followers::new(vec![], &wan());
        *rec.refuse.borrow_mut() = Some("198.18.1.2".parse().unwrap());
        let s = snap(vec![link(3, "eth1", true, &["198.18.1.2"])]);
        assert!(!f.reconcile(&s, &rec));
        assert!(f.has_failures());
        let p = f.published();
        assert_eq!(p.counters.open_failures, 1);
        assert_eq!(p.followed[0].addresses[0].socket, SocketState::Closed);
        assert!(p.followed[0].addresses[0].error.is_some());
        *rec.refuse.borrow_mut() = None;
        assert!(f.reconcile(&s, &rec));
        assert!(!f.has_failures());
        assert_eq!(
            f.published().followed[0].addresses[0].socket,
            SocketState::Open
        );
    }

    #[test]
    fn names_are_remembered_within_a_bound() {
        let rec = Rec::default();
        let mut f = Followers::new(vec![], &wan());
        // 200 addresses one after the other: names stay unique among those remembered.
        for i in 0..200 {
            let a = format!("198.18.{}.{}", i / 100, i % 100 + 1);
            f.reconcile(&snap(vec![link(3, "eth1", true, &[&a])]), &rec);
            assert_eq!(rec.open.borrow().len(), 1);
            assert!(f.followed[0].names.len() <= MAX_NAMES);
        }
    }

    #[test]
    fn addresses_are_bounded() {
        let rec = Rec::default();
        let mut f = Followers::new(vec![], &wan());
        let many: Vec<String> = (0..100).map(|i| format!("198.18.1.{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        f.reconcile(&snap(vec![link(3, "eth1", true, &refs)]), &rec);
        assert_eq!(rec.open.borrow().len(), MAX_ADDRS);
    }

    #[test]
    fn only_changes_of_followed_devices_and_usable_addresses_are_relevant() {
        let f = Followers::new(vec![], &wan());
        let followed: BTreeSet<u32> = [3].into();
        let a = |s: &str| IfAddr {
            addr: s.parse().unwrap(),
            prefix_len: 64,
        };
        let yes = [
            Change::LinkAdded {
                index: 9,
                name: "eth1".into(),
                up: true,
            },
            Change::LinkDown {
                index: 3,
                name: "eth1".into(),
            },
            Change::AddrAdded {
                index: 3,
                addr: a("2001:db8::1"),
            },
        ];
        let no = [
            Change::LinkAdded {
                index: 9,
                name: "eth2".into(),
                up: true,
            },
            Change::LinkDown {
                index: 4,
                name: "eth2".into(),
            },
            Change::AddrAdded {
                index: 4,
                addr: a("198.18.1.2"),
            },
            Change::AddrRemoved {
                index: 3,
                addr: a("fe80::1"),
            },
            Change::RoutesChanged,
        ];
        for c in &yes {
            assert!(f.relevant(c, &followed), "{c:?}");
        }
        for c in &no {
            assert!(!f.relevant(c, &followed), "{c:?}");
        }
    }
}
