//! `mifsec run`: the foreground daemon.
//!
//! It parses the configuration, blocks SIGINT and SIGTERM (before any thread exists, so every
//! thread inherits the mask), binds the control socket, starts the [`Engine`], serves the
//! socket on its own thread, starts the IKE thread ([`ike_thread`], held by its
//! [`IkeHandle`]) when the file has `[connections.*]`, logs one line per notable event to
//! stderr, and then waits for a signal with `sigwait` on the main thread. On SIGINT or SIGTERM it shuts the engine down, removes the
//! socket and exits 0. No log line ever contains key material.
//!
//! A panic in any thread (the IKE thread, the control-socket thread, a packet worker, the
//! monitor, the main thread) ends the process: the panic hook installed first logs the
//! thread's name, the message and where, removes the control socket and exits with
//! [`EXIT_PANIC`], so that a supervisor restarts the daemon instead of leaving it half dead.
//!
//! The parts: [`ike_thread`] (the IKE thread and its handle), [`install`] (child SAs into
//! the engine: paths, routes, virtual IPs), [`status`] (what `mifsec status` shows of IKE),
//! [`interfaces`] (interfaces that follow their device's addresses: the `mifsec-netlink`
//! thread),
//! `privileges` (dropping root), and here the start, the signals and the [`ctl::Target`]
//! the control socket drives.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use crate::config::{self, Config};
use crate::ctl::{self, Response};
use crate::dataplane::engine::{Engine, EngineError, EngineStatus, InterfaceConfig, PathSpec};
use crate::dataplane::sa_table::Policy;
use tracing::{error, info, warn};

mod clone;
pub mod counters;
pub mod ike_thread;
pub mod install;
pub mod interfaces;
mod mif;
mod privileges;
mod reload;
pub mod status;

use ike_thread::{CommandError, IkeHandle, IkePorts, bind_ike_ports};
use interfaces::{Follower, FollowerHandle};
use privileges::Plan;

/// Exit status for a configuration that does not parse (and for usage errors).
pub const EXIT_CONFIG: i32 = 2;

/// Exit status for a daemon that could not start.
pub const EXIT_FAILURE: i32 = 1;

/// Exit status after a panic in any thread (EX_SOFTWARE of sysexits.h).
pub const EXIT_PANIC: i32 = 70;

/// The control socket this daemon bound, for the panic hook to remove.
static SOCKET: OnceLock<PathBuf> = OnceLock::new();

/// Makes a panic in any thread end the process: the default hook's report (with a
/// backtrace under `RUST_BACKTRACE`), one log line naming the thread, then exit
/// [`EXIT_PANIC`]. Nothing is unwound further and no thread goes on without the others.
fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        let thread = std::thread::current();
        let name = thread.name().unwrap_or("unnamed");
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let line = format!("thread {name} panicked{at}: {msg}; exiting with status {EXIT_PANIC}");
        if crate::logging::installed() {
            // Outside whatever span the thread was in: the line reads the same everywhere.
            tracing::error!(parent: None, "{line}");
        } else {
            eprintln!("mifsec: {line}");
        }
        if let Some(p) = SOCKET.get() {
            let _ = std::fs::remove_file(p);
        }
        std::process::exit(EXIT_PANIC);
    }));
}

/// Runs the daemon with the configuration file at `path` until SIGINT or SIGTERM; returns
/// the process exit status (0 after a clean stop).
pub fn run(path: &Path) -> i32 {
    run_with_socket(path, None)
}

/// [`run`], with the control socket at `socket` instead of `[dataplane] control_socket`
/// when given (`mifsec run --socket`, as the systemd unit runs it).
pub fn run_with_socket(path: &Path, socket: Option<&Path>) -> i32 {
    install_panic_hook();
    let (mut cfg, doc) = match reload::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return EXIT_CONFIG;
        }
    };
    if let Some(s) = socket {
        cfg.control_socket = s.to_path_buf();
    }
    let running = reload::Running::new(path.to_path_buf(), cfg.clone(), doc);
    crate::logging::init(&cfg.log, crate::logging::Style::detect());
    for w in &cfg.warnings {
        warn!("{w}");
    }
    let signals = match signals::block(&[libc::SIGINT, libc::SIGTERM, libc::SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            error!("blocking signals: {e}");
            return EXIT_FAILURE;
        }
    };
    info!(
        "{} starting: {}, {} interfaces, {} SAs, {} connections",
        env!("CARGO_PKG_VERSION"),
        path.display(),
        cfg.engine.interfaces.len(),
        cfg.engine.sas.len(),
        cfg.ike.connections.len()
    );
    let Config {
        engine: engine_cfg,
        control_socket,
        subscriber_timeout,
        control_group,
        ike: ike_cfg,
        warnings: _,
        user,
        log: _,
        followed,
        interface_prefs,
        metrics_listen,
    } = cfg;
    let plan = match privileges::plan(user.as_deref()) {
        Ok(p) => p,
        Err(e) => {
            error!("cannot drop privileges: {e}");
            return EXIT_FAILURE;
        }
    };
    let interfaces = engine_cfg.interfaces.clone();
    // The socket first: a second daemon on the same socket fails here, before it touches the
    // network. Clients that connect before the engine is up wait in the backlog.
    let socket_dir = control_socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .map(Path::to_path_buf);
    // Created now, or the default /run/mifsec: the daemon's own, given to the user it
    // becomes so that it can remove the socket at the end. Never a directory that existed
    // for other uses.
    let created_dir = socket_dir.clone().filter(|d| !d.exists());
    let own_dir = created_dir.is_some()
        || socket_dir
            .as_deref()
            .is_some_and(|d| Some(d) == Path::new(config::DEFAULT_SOCKET).parent());
    let access = match ctl::Access::new(control_group.as_deref()) {
        Ok(a) => a,
        Err(e) => {
            error!("control socket: {e}");
            return EXIT_FAILURE;
        }
    };
    ctl::set_subscriber_timeout(subscriber_timeout);
    let key_access = access.clone();
    let listener = match ctl::Listener::bind(&control_socket, access) {
        Ok(l) => l,
        Err(e) => {
            error!("control socket: {e}");
            return EXIT_FAILURE;
        }
    };
    let _ = SOCKET.set(control_socket.clone());
    let fail = |what: &str, e: &dyn std::fmt::Display, listener: ctl::Listener| {
        error!("{what}: {e}");
        drop(listener);
        let _ = std::fs::remove_file(&control_socket);
        if let Some(d) = &created_dir {
            let _ = std::fs::remove_dir(d);
        }
        EXIT_FAILURE
    };
    // The interface monitor, when some interface follows its device's addresses: it
    // subscribes and dumps now, so that the addresses there at start are known.
    let follower = if followed.is_empty() {
        None
    } else {
        match Follower::open(interfaces.clone(), &followed) {
            Ok(f) => Some(f),
            Err(e) => return fail("cannot start the interface monitor", &e, listener),
        }
    };
    // Everything that needs root, and no thread yet.
    let opened = match Engine::open(engine_cfg) {
        Ok(e) => e,
        Err(e) => return fail("cannot start the engine", &e, listener),
    };
    // The metrics' TCP socket, while the daemon may still bind any port.
    let metrics_listener = match metrics_listen.map(crate::metrics::http::bind).transpose() {
        Ok(l) => l,
        Err(e) => {
            drop(opened);
            return fail("cannot serve the metrics", &e, listener);
        }
    };
    let ports = if ike_cfg.connections.is_empty() {
        IkePorts::default()
    } else {
        // Port 500 on the addresses learned at start too (it needs root); an address
        // learned later gets port 4500 only.
        bind_ike_ports(
            &follower
                .as_ref()
                .map_or_else(|| interfaces.clone(), Follower::would_open),
        )
    };
    match &plan {
        Plan::Drop(u) => {
            // What the daemon writes after the drop: the socket's directory, when it is the
            // daemon's own, so that the socket can be removed at the end, and the state
            // directory of manual SAs, whose marks are rewritten while the daemon runs.
            let mut chown: Vec<PathBuf> = socket_dir.filter(|_| own_dir).into_iter().collect();
            chown.extend(opened.state_dirs());
            if let Err(e) = privileges::drop_to(u, &chown) {
                drop(opened);
                return fail("cannot drop privileges", &e, listener);
            }
            info!(
                "running as {} (uid {}, gid {}) with {}; no_new_privs",
                u.name,
                u.uid,
                u.gid,
                privileges::KEPT.map(|c| c.to_string()).join(", ")
            );
        }
        Plan::Keep(why) => info!("{why}"),
    }
    let engine = match opened.start() {
        Ok(e) => e,
        Err(e) => return fail("cannot start the engine", &e, listener),
    };
    log_started(&engine.status());
    let engine = Arc::new(engine);
    let mut follower = follower;
    // The sockets of the addresses there now, before IKE starts (and initiates from them).
    let live = match &mut follower {
        Some(f) => f.start(&engine),
        None => interfaces.clone(),
    };
    let ike = if ike_cfg.connections.is_empty() {
        log_manual_seq_events(&engine);
        None
    } else {
        match IkeHandle::start(Arc::clone(&engine), ike_cfg, interface_prefs, &live, ports) {
            Ok(i) => Some(i),
            Err(e) => {
                error!("cannot start the IKE thread: {e}");
                stop_node(Node {
                    engine,
                    ike: None,
                    follower: None,
                    fixed: interfaces,
                    running,
                });
                drop(listener);
                let _ = std::fs::remove_file(&control_socket);
                return EXIT_FAILURE;
            }
        }
    };
    let follower = match follower {
        None => None,
        Some(f) => match f.spawn(
            Arc::clone(&engine),
            ike.as_ref().map(IkeHandle::interface_sink),
        ) {
            Ok(h) => Some(h),
            Err(e) => {
                error!("cannot start the interface monitor's thread: {e}");
                stop_node(Node {
                    engine,
                    ike,
                    follower: None,
                    fixed: interfaces,
                    running,
                });
                drop(listener);
                let _ = std::fs::remove_file(&control_socket);
                return EXIT_FAILURE;
            }
        },
    };

    let slot = Arc::new(Mutex::new(Some(Node {
        engine,
        ike,
        follower,
        fixed: interfaces,
        running,
    })));
    let handler_slot = Arc::clone(&slot);
    // The watch samples' text, straight from the structs (ctl::status_json): the same
    // object as `status`, without a JSON tree per sample.
    let status_slot = Arc::clone(&slot);
    let listener = listener.with_status(move |out| {
        crate::dataplane::debug::panic_point("control");
        let guard = status_slot.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(node) => ctl::status_json(node, out),
            None => Err("the daemon is stopping".into()),
        }
    });
    let server = listener.serve(move |peer, req| {
        crate::dataplane::debug::panic_point("control");
        let mut guard = handler_slot.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(node) = guard.as_mut() else {
            return Response::err("the daemon is stopping");
        };
        let resp = match &req {
            ctl::Request::Reload {} => match reload::reload(node) {
                Ok(lines) => Response::ok(serde_json::json!(lines)),
                Err(e) => Response::err(format!("reload: {e}")),
            },
            ctl::Request::Showconf {} => {
                // Key material goes to the clients that may read keys (as `keys`).
                let secrets = key_access.check(peer, ctl::Class::Keys).is_ok();
                Response::ok(serde_json::Value::String(node.running.doc.render(secrets)))
            }
            ctl::Request::ListConns {} => Response::ok(reload::list_conns(&node.running)),
            _ => {
                let resp = ctl::dispatch(&*node, req.clone());
                if resp.ok {
                    reload::note_ctl(&mut node.running.doc, &req);
                }
                if let (ctl::Request::Handover { sa, path, hard }, true) = (&req, resp.ok) {
                    crate::events::publish(
                        "handover",
                        || serde_json::json!({ "sa": sa, "path": path, "hard": hard, "by": "ctl" }),
                    );
                }
                resp
            }
        };
        if req.changes_state() {
            match &resp.error {
                None => info!(
                    uid = peer.uid,
                    pid = peer.pid,
                    "ctl {}: {}",
                    req.describe(),
                    resp.result
                        .as_ref()
                        .and_then(|r| r.as_str())
                        .unwrap_or("done")
                ),
                Some(e) => warn!(
                    uid = peer.uid,
                    pid = peer.pid,
                    "ctl {}: refused: {e}",
                    req.describe()
                ),
            }
        }
        resp
    });
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            error!("control socket: starting its thread: {e}");
            if let Some(node) = take(&slot) {
                stop_node(node);
            }
            let _ = std::fs::remove_file(&control_socket);
            return EXIT_FAILURE;
        }
    };
    info!("control socket {}", server.path().display());
    let metrics = match metrics_listener {
        None => None,
        Some(l) => {
            let metrics_slot = Arc::clone(&slot);
            let render: crate::metrics::http::Render = Arc::new(move || {
                let guard = metrics_slot.lock().unwrap_or_else(PoisonError::into_inner);
                guard.as_ref().map(ctl::Target::metrics).unwrap_or_default()
            });
            match crate::metrics::http::MetricsServer::start(
                l,
                render,
                crate::metrics::http::DEADLINE,
            ) {
                Ok(m) => {
                    info!("metrics on http://{}/metrics", m.local_addr());
                    Some(m)
                }
                Err(e) => {
                    error!("metrics: starting its threads: {e}");
                    if let Some(node) = take(&slot) {
                        stop_node(node);
                    }
                    server.close();
                    return EXIT_FAILURE;
                }
            }
        }
    };
    info!("running; SIGINT or SIGTERM stops");
    // Type=notify: the engine, IKE and the control socket are up.
    notify(&[sd_notify::NotifyState::Ready]);

    let sig = loop {
        match signals.wait() {
            Ok(libc::SIGHUP) => {
                // As `ctl reload`: read the file again and apply the difference.
                let mut guard = slot.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(node) = guard.as_mut() {
                    info!("SIGHUP received: reloading {}", node.running.path.display());
                    match reload::reload(node) {
                        Ok(lines) if lines.is_empty() => {}
                        Ok(_) => {}
                        Err(e) => warn!("reload: {e}"),
                    }
                }
                continue;
            }
            Ok(s) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                error!("waiting for signals: {e}; stopping");
                break 0;
            }
        }
    };
    info!("{} received: stopping", signals::name(sig));
    notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(m) = metrics {
        m.stop();
    }
    if let Some(node) = take(&slot) {
        stop_node(node);
    }
    server.close();
    info!("stopped");
    0
}

/// Tells the service manager about `state` (sd_notify(3), over `NOTIFY_SOCKET`; nothing
/// when that is not set). A failure is logged, never fatal.
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, state) {
        warn!("NOTIFY_SOCKET: {e}");
    }
}

/// Without IKE, nobody can rekey: the sequence-number events of the (manual) SAs are only
/// logged, by a thread that ends when the engine does.
fn log_manual_seq_events(engine: &Engine) {
    use crate::dataplane::event::Event;
    let Some(rx) = engine.take_event_receiver() else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("mifsec-events".into())
        .spawn(move || {
            for ev in rx.iter() {
                match ev {
                    Event::SeqSoftLimit { spi } => warn!(
                        "outbound SA {spi:08x}: 7/8 of its sequence numbers used; a manual SA is not rekeyed: give it new keys and SPIs"
                    ),
                    Event::SeqExhausted { spi } => error!(
                        "outbound SA {spi:08x}: out of sequence numbers, it sends nothing more; give it new keys and SPIs"
                    ),
                    // Manual SAs are installed without `report_usage`.
                    Event::Usage { .. } => {}
                    Event::PathState {
                        sa, spi_in, path, up, verified, ..
                    } => {
                        tracing::debug!(sa, path, up, verified, "engine: path state");
                        crate::events::publish(if up { "path-up" } else { "path-down" }, || {
                            serde_json::json!({ "sa": sa, "spi_in": format!("{spi_in:08x}"),
                                                "path": path, "verified": verified })
                        });
                    }
                    // Only IKE children make soft moves wait in the engine.
                    Event::SoftMoveEnded { .. } => {}
                }
            }
        });
    if let Err(e) = spawned {
        error!("spawning the event thread: {e}");
    }
}

/// What the control socket drives: the engine and, with IKE connections, the IKE thread;
/// with followed interfaces, the interface follower.
struct Node {
    engine: Arc<Engine>,
    ike: Option<IkeHandle>,
    follower: Option<FollowerHandle>,
    /// The `[interfaces.*]` with a fixed address.
    fixed: Vec<InterfaceConfig>,
    /// What was loaded from the file, with the `ctl` changes since (reload, showconf,
    /// list-conns).
    running: reload::Running,
}

impl ctl::Target for Node {
    fn status(&self) -> EngineStatus {
        self.engine.status()
    }
    fn handover(&self, sa: &str, path: &str, hard: bool) -> Result<String, EngineError> {
        self.engine.handover(sa, path, hard)
    }
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, EngineError> {
        self.engine.add_interface(iface)
    }
    fn remove_interface(&self, name: &str) -> Result<String, EngineError> {
        self.engine.remove_interface(name)
    }
    fn set_policy(&self, sa: &str, policy: Policy) -> Result<String, EngineError> {
        self.engine.set_policy(sa, policy)
    }
    fn add_path(&self, sa: &str, path: PathSpec) -> Result<String, EngineError> {
        self.engine.add_path(sa, path)
    }
    fn remove_path(&self, sa: &str, path: &str) -> Result<String, EngineError> {
        self.engine.remove_path(sa, path)
    }
    fn wireshark_keys(&self) -> Vec<String> {
        self.engine.wireshark_keys()
    }
    fn initiate(&self, conn: &str) -> Result<String, CommandError> {
        match &self.ike {
            Some(i) => i.initiate(conn),
            None => Err(CommandError::NoIke {
                name: conn.to_owned(),
            }),
        }
    }
    fn terminate(&self, conn: &str) -> Result<String, CommandError> {
        match &self.ike {
            Some(i) => i.terminate(conn),
            None => Err(CommandError::NoIke {
                name: conn.to_owned(),
            }),
        }
    }
    fn rekey(&self, conn: &str, ike: bool) -> Result<String, CommandError> {
        match &self.ike {
            Some(i) => i.rekey(conn, ike),
            None => Err(CommandError::NoIke {
                name: conn.to_owned(),
            }),
        }
    }

    fn move_sa(
        &self,
        conn: &str,
        local: std::net::IpAddr,
        remote: Option<std::net::IpAddr>,
    ) -> Result<String, CommandError> {
        match &self.ike {
            Some(i) => i.move_sa(conn, local, remote),
            None => Err(CommandError::NoIke {
                name: conn.to_owned(),
            }),
        }
    }
    fn mif(
        &self,
        conn: &str,
        cmd: ctl::mif::MifCommand,
    ) -> Result<Vec<ctl::mif::MifAnswer>, CommandError> {
        match &self.ike {
            Some(i) => i.mif(conn, cmd),
            None => Err(CommandError::NoIke {
                name: conn.to_owned(),
            }),
        }
    }
    fn clone_sa(
        &self,
        conn: &str,
        local: Option<std::net::IpAddr>,
        remote: Option<std::net::IpAddr>,
        child: Option<String>,
    ) -> Result<String, CommandError> {
        match &self.ike {
            Some(i) => i.clone_sa(conn, local, remote, child),
            None => Err(CommandError::NoIke {
                name: conn.to_owned(),
            }),
        }
    }
    fn ike_keys(&self) -> Option<Vec<String>> {
        self.ike.as_ref().map(|i| i.ike_keys())
    }
    fn ike_sas(&self, engine: &EngineStatus) -> Option<String> {
        let ike = self.ike.as_ref()?;
        let mut list = ike.status();
        if list
            .iter()
            .any(|s| s.children.iter().any(|c| c.mif.is_some()))
        {
            status::fill_mif_paths(&mut list, engine);
        }
        serde_json::to_string(&list).ok()
    }
    fn ike_stats(&self) -> Option<serde_json::Value> {
        let ike = self.ike.as_ref()?;
        let mut v = serde_json::to_value(ike.stats()).ok()?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert("counters".into(), ike.book().to_json());
        }
        Some(v)
    }
    fn metrics(&self) -> String {
        let Some(ike) = &self.ike else {
            return crate::metrics::render(&self.engine.status(), None);
        };
        let (sas, stats) = (ike.status(), ike.stats());
        // The engine's figures under the book's lock: no child SA leaves the engine (and
        // joins the removed ones' totals) meanwhile.
        ike.with_book(|book| {
            crate::metrics::render(
                &self.engine.status(),
                Some(crate::metrics::IkeInputs {
                    connections: ike.connections(),
                    sas: &sas,
                    stats: &stats,
                    book,
                }),
            )
        })
    }
    fn interface_details(
        &self,
        engine: &EngineStatus,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        let mut list = interfaces::fixed_status(&self.fixed, engine);
        let mut m = serde_json::Map::new();
        if let Some(f) = &self.follower {
            let p = f.published();
            list.extend(p.followed);
            m.insert("netlink".into(), serde_json::to_value(p.counters).ok()?);
        }
        m.insert(
            "configured_interfaces".into(),
            serde_json::to_value(list).ok()?,
        );
        Some(m)
    }
}

/// Stops the IKE thread (deleting its IKE SAs at the peers, through the learned sockets
/// too), then the interface follower, then the engine.
fn stop_node(node: Node) {
    if let Some(ike) = node.ike {
        ike.stop();
    }
    if let Some(f) = node.follower {
        f.stop();
    }
    match Arc::try_unwrap(node.engine) {
        Ok(engine) => engine.shutdown(),
        // Someone still holds it: the last holder's drop stops the threads.
        Err(engine) => drop(engine),
    }
}

fn take(slot: &Mutex<Option<Node>>) -> Option<Node> {
    slot.lock().unwrap_or_else(PoisonError::into_inner).take()
}

/// Logs what the engine started with: TUN, interfaces, SAs and paths (never keys).
fn log_started(st: &EngineStatus) {
    info!(
        "started: tun {} ({}), {} worker{}",
        st.tun,
        st.tun_offloads,
        st.workers,
        if st.workers == 1 { "" } else { "s" }
    );
    for i in &st.interfaces {
        match &i.device {
            Some(d) => info!(
                "interface {} on {} ({d}, offloads {})",
                i.name, i.local, i.offloads
            ),
            None => info!(
                "interface {} on {} (offloads {})",
                i.name, i.local, i.offloads
            ),
        }
    }
    for sa in &st.sas {
        let paths: Vec<String> = sa
            .paths
            .iter()
            .map(|p| format!("{} ({} -> {}, {})", p.name, p.interface, p.remote, p.role))
            .collect();
        info!(
            "sa {}: {}, {}, out {} in {}, {} === {}, policy {}, paths {}",
            sa.name,
            sa.mode,
            sa.cipher,
            sa.spi_out,
            sa.spi_in,
            sa.local_ts.join(" "),
            sa.remote_ts.join(" "),
            sa.policy,
            if paths.is_empty() {
                "none".into()
            } else {
                paths.join(", ")
            }
        );
    }
}

/// Blocking and waiting for signals with `pthread_sigmask` and `sigwait`: no handler runs,
/// so nothing async-signal-unsafe can happen, and the main thread simply waits.
mod signals {
    use std::io;
    use std::mem::MaybeUninit;

    /// A set of signals blocked in the calling thread (and every thread it spawns later).
    pub struct Blocked(libc::sigset_t);

    /// Blocks `sigs` in the calling thread.
    pub fn block(sigs: &[libc::c_int]) -> io::Result<Blocked> {
        let mut set = MaybeUninit::<libc::sigset_t>::uninit();
        // SAFETY: `set` points to writable memory for one sigset_t; sigemptyset initialises it.
        if unsafe { libc::sigemptyset(set.as_mut_ptr()) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: sigemptyset succeeded, so `set` is initialised.
        let mut set = unsafe { set.assume_init() };
        for &s in sigs {
            // SAFETY: `set` is an initialised sigset_t we own.
            if unsafe { libc::sigaddset(&mut set, s) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is initialised; a null old-set pointer is allowed.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Blocked(set))
    }

    impl Blocked {
        /// Waits until one of the signals is pending and takes it; returns its number.
        pub fn wait(&self) -> io::Result<libc::c_int> {
            let mut sig: libc::c_int = 0;
            // SAFETY: `self.0` is an initialised sigset_t and `sig` a valid out-pointer.
            let rc = unsafe { libc::sigwait(&self.0, &mut sig) };
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(sig)
        }
    }

    /// The signal's name for the log.
    pub fn name(sig: libc::c_int) -> String {
        match sig {
            libc::SIGINT => "SIGINT".into(),
            libc::SIGTERM => "SIGTERM".into(),
            libc::SIGHUP => "SIGHUP".into(),
            n => format!("signal {n}"),
        }
    }
}
