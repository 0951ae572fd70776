//! Serving the control socket: binding it safely, the client's credentials, who may do
//! what ([`Access`]), and a thread per connection with deadlines.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use socket2::{Domain, SockAddr, Socket, Type};

use super::{Class, MAX_CLIENTS, MAX_REQUEST, REQUEST_DEADLINE, Request, Response, stream};
use tracing::{error, info, warn};

/// Who is on the other end of a connection, as the kernel saw it at `connect()`
/// (`SO_PEERCRED` and `SO_PEERGROUPS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The client's process ID.
    pub pid: i32,
    /// Its effective user ID.
    pub uid: u32,
    /// Its effective group ID.
    pub gid: u32,
    /// Its supplementary groups.
    pub groups: Vec<u32>,
}

impl Peer {
    /// Whether the peer has `gid` as its group or as a supplementary group.
    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// Who may do what on the control socket. The owners (root and the user the daemon was
/// started as) may do everything; members of the control group (`[dataplane] control_group`) may
/// read `status` and make changes (`ctl`), but never read keys; nobody else gets an answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// The control group: its name (for messages) and ID.
    pub group: Option<(String, u32)>,
    /// The user the daemon was started as (besides root), when it is not root.
    pub owner: Option<u32>,
}

impl Access {
    /// Root, the user the daemon runs as now (if not root) and, with `group`, the members
    /// of that group (a name or a number), looked up in the group database.
    pub fn new(group: Option<&str>) -> io::Result<Access> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        Ok(Access {
            group: match group {
                Some(g) => Some((g.to_owned(), lookup_group(g)?)),
                None => None,
            },
            owner: (euid != 0).then_some(euid),
        })
    }

    /// Whether `peer` may make a request of `class`; the refusal says why.
    pub fn check(&self, peer: &Peer, class: Class) -> Result<(), String> {
        if peer.uid == 0 || Some(peer.uid) == self.owner {
            return Ok(());
        }
        let member = self.group.as_ref().is_some_and(|(_, g)| peer.in_group(*g));
        match (member, class) {
            (true, Class::Read | Class::Change) => Ok(()),
            (true, Class::Keys) => Err(format!(
                "permission denied: `keys` hands out session keys and needs root (uid {} is only in the control group)",
                peer.uid
            )),
            (false, _) => Err(match &self.group {
                Some((name, gid)) => format!(
                    "permission denied: uid {} is neither root nor in the control group {name} (gid {gid})",
                    peer.uid
                ),
                None => format!(
                    "permission denied: uid {} is not root (no [dataplane] control_group is configured)",
                    peer.uid
                ),
            }),
        }
    }
}

/// The group ID of `name`, or `name` itself if it is a number.
pub(super) fn lookup_group(name: &str) -> io::Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let not_found = || {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("control group {name:?}: no such group"),
        )
    };
    let cname = std::ffi::CString::new(name).map_err(|_| not_found())?;
    let mut buf = vec![0 as libc::c_char; 4096];
    loop {
        let mut grp = std::mem::MaybeUninit::<libc::group>::uninit();
        let mut out: *mut libc::group = std::ptr::null_mut();
        // SAFETY: `cname` is NUL-terminated; `grp` and `buf` are writable for their sizes
        // and outlive the call; `out` is a valid out-pointer.
        let rc = unsafe {
            libc::getgrnam_r(
                cname.as_ptr(),
                grp.as_mut_ptr(),
                buf.as_mut_ptr(),
                buf.len(),
                &mut out,
            )
        };
        if rc == libc::ERANGE && buf.len() < 1 << 20 {
            buf.resize(buf.len() * 4, 0);
            continue;
        }
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if out.is_null() {
            return Err(not_found());
        }
        // SAFETY: getgrnam_r succeeded and found the group, so `grp` is initialised.
        return Ok(unsafe { grp.assume_init() }.gr_gid);
    }
}

/// The credentials of the process at the other end of `stream`.
pub fn peer_of(stream: &UnixStream) -> io::Result<Peer> {
    let fd = stream.as_raw_fd();
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `fd` is an open socket owned by `stream`; `cred` and `len` are valid for
    // writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&raw mut cred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<libc::ucred>() {
        return Err(io::Error::other("SO_PEERCRED: short answer"));
    }
    // Supplementary groups (Linux 4.13): ERANGE tells how much room they need.
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: as above; `groups` is writable for `len` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            break;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::ERANGE) if n > groups.len() && n <= 65_536 => groups.resize(n, 0),
            // A kernel before 4.13: the primary group is all we know.
            Some(libc::ENOPROTOOPT) => {
                groups.clear();
                break;
            }
            _ => return Err(e),
        }
    }
    Ok(Peer {
        pid: cred.pid,
        uid: cred.uid,
        gid: cred.gid,
        groups,
    })
}

/// Writes the text of one `status` object into the buffer given (cleared first): the watch
/// samples' source ([`Listener::with_status`]; [`super::status_json`] of the daemon's target).
pub type StatusText = Box<dyn Fn(&mut Vec<u8>) -> Result<(), String> + Send + Sync>;

/// A bound control socket, not yet served.
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    access: Access,
    deadline: Duration,
    status: Option<StatusText>,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("path", &self.path)
            .field("access", &self.access)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// Binds the socket at `path` for the clients `access` admits: creates the parent
    /// directory if missing (mode 0700, or 0750 and the control group's), replaces a stale
    /// socket file (one nobody answers on), refuses if a daemon answers there or if the path
    /// is something other than a socket. The socket file gets mode 0600 (0660 and the
    /// control group's with a group) before `listen()`: until then a `connect()` is refused,
    /// so there is no moment at which anybody else can connect.
    pub fn bind(path: &Path, access: Access) -> io::Result<Listener> {
        let ctx = |what: &str, e: io::Error| {
            io::Error::new(e.kind(), format!("{what} {}: {e}", path.display()))
        };
        let gid = access.group.as_ref().map(|(_, g)| *g);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if let (Ok(meta), Some((name, g))) = (std::fs::metadata(dir), &access.group) {
                use std::os::unix::fs::MetadataExt;
                let m = meta.mode();
                let group_can = (meta.gid() == *g && m & 0o010 != 0) || m & 0o001 != 0;
                if !group_can {
                    warn!(
                        "control group {name} cannot reach {}: its directory {} \
                         (mode {:04o}, gid {}) lets neither the group nor others through",
                        path.display(),
                        dir.display(),
                        m & 0o7777,
                        meta.gid()
                    );
                }
            }
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(if gid.is_some() { 0o750 } else { 0o700 })
                    .create(dir)
                    .map_err(|e| ctx("creating the directory of", e))?;
                if gid.is_some() {
                    std::os::unix::fs::chown(dir, None, gid)
                        .map_err(|e| ctx("giving the control group the directory of", e))?;
                }
            }
        }
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!(
                            "{}: another mifsec daemon is serving this socket",
                            path.display()
                        ),
                    ));
                }
                std::fs::remove_file(path).map_err(|e| ctx("removing the stale socket", e))?;
            }
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; not touching it",
                        path.display()
                    ),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(ctx("checking", e)),
        }
        let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(|e| ctx("opening", e))?;
        let addr = SockAddr::unix(path).map_err(|e| ctx("naming", e))?;
        sock.bind(&addr).map_err(|e| ctx("binding", e))?;
        // Bound but not listening: connect() gets ECONNREFUSED until listen().
        let secure = || -> io::Result<()> {
            let mode = if gid.is_some() { 0o660 } else { 0o600 };
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| ctx("setting the mode of", e))?;
            if gid.is_some() {
                std::os::unix::fs::chown(path, None, gid)
                    .map_err(|e| ctx("giving the control group", e))?;
            }
            sock.listen(128).map_err(|e| ctx("listening on", e))
        };
        if let Err(e) = secure() {
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        Ok(Listener {
            listener: UnixListener::from(OwnedFd::from(sock)),
            path: path.to_owned(),
            access,
            deadline: REQUEST_DEADLINE,
            status: None,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sets the deadline of each request (default [`REQUEST_DEADLINE`]).
    pub fn with_deadline(mut self, deadline: Duration) -> Listener {
        self.deadline = deadline.max(Duration::from_millis(1));
        self
    }

    /// Gives the watch samples (`status --watch`) their text from `status` (the daemon's
    /// [`super::status_json`]) instead of from the handler's answer to `status` (a
    /// [`Value`] tree per sample). Both must make the same object.
    pub fn with_status(
        mut self,
        status: impl Fn(&mut Vec<u8>) -> Result<(), String> + Send + Sync + 'static,
    ) -> Listener {
        self.status = Some(Box::new(status));
        self
    }

    /// Serves connections on a thread named `mifsec-ctl` that accepts them and starts a
    /// thread per connection (at most [`MAX_CLIENTS`] at once; beyond, a client gets an
    /// error and is closed). Each request is parsed and checked against the [`Access`]
    /// rules here; `handler` carries out the ones allowed (every `keys` request and every
    /// refusal is logged with the client's uid and pid). The returned [`Server`] removes the
    /// socket file when closed or dropped.
    pub fn serve<F>(self, handler: F) -> io::Result<Server>
    where
        F: Fn(&Peer, Request) -> Response + Send + Sync + 'static,
    {
        let Listener {
            listener,
            path,
            access,
            deadline,
            status,
        } = self;
        let shared = Arc::new(Shared {
            handler,
            access,
            deadline,
            clients: AtomicUsize::new(0),
            samples: stream::Samples::new(status),
        });
        let thread = std::thread::Builder::new()
            .name("mifsec-ctl".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => accept(&shared, stream),
                        Err(e) => {
                            error!("control socket: accept: {e}");
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                }
            })?;
        Ok(Server {
            path,
            _thread: thread,
        })
    }
}

/// What the connection threads share.
struct Shared<F> {
    handler: F,
    access: Access,
    deadline: Duration,
    /// Connections being served.
    clients: AtomicUsize,
    /// The watch samples, shared by the subscribers that want the same tick.
    samples: stream::Samples,
}

/// Decrements the client count when a connection thread ends, however it ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Refuses a connection at once with `error` (a short line: it fits the socket buffer).
fn turn_away(stream: &UnixStream, error: &str) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
    let _ = (&*stream).write_all(format!("{}\n", Response::err(error).to_line()).as_bytes());
}

fn accept<F>(shared: &Arc<Shared<F>>, stream: UnixStream)
where
    F: Fn(&Peer, Request) -> Response + Send + Sync + 'static,
{
    let peer = match peer_of(&stream) {
        Ok(p) => p,
        Err(e) => {
            warn!("control socket: peer credentials: {e}");
            return;
        }
    };
    if shared.clients.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
        shared.clients.fetch_sub(1, Ordering::AcqRel);
        turn_away(
            &stream,
            &format!("the daemon is serving {MAX_CLIENTS} clients already; try again"),
        );
        return;
    }
    let sh = Arc::clone(shared);
    let spawned = std::thread::Builder::new()
        .name("mifsec-ctl-conn".into())
        .spawn(move || {
            let slot = Slot(&sh.clients);
            serve_connection(&sh, &peer, &stream, slot);
        });
    if let Err(e) = spawned {
        // The closure (and its slot) never ran.
        shared.clients.fetch_sub(1, Ordering::AcqRel);
        error!("control socket: starting a client thread: {e}");
    }
}

/// A control socket being served. Dropping it (or [`Server::close`]) removes the socket file;
/// the serving thread ends with the process.
#[derive(Debug)]
pub struct Server {
    path: PathBuf,
    _thread: JoinHandle<()>,
}

impl Server {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file: no new client can connect.
    pub fn close(self) {}
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Why no request line could be read.
enum NoLine {
    /// The client closed the connection (or it broke).
    Closed,
    /// The deadline passed.
    Late,
    /// More than [`MAX_REQUEST`] bytes without a newline.
    TooLong,
}

/// Reads request lines from a stream, each by a deadline.
struct Lines<'a> {
    stream: &'a UnixStream,
    buf: Vec<u8>,
    eof: bool,
}

impl Lines<'_> {
    /// The next line (without its newline), read by `deadline`.
    fn next(&mut self, deadline: Instant) -> Result<Vec<u8>, NoLine> {
        let mut chunk = [0u8; 8192];
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                if i > MAX_REQUEST {
                    return Err(NoLine::TooLong);
                }
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                return Ok(line);
            }
            if self.buf.len() > MAX_REQUEST {
                return Err(NoLine::TooLong);
            }
            if self.eof {
                // A last line without a newline still counts.
                return if self.buf.is_empty() {
                    Err(NoLine::Closed)
                } else {
                    Ok(std::mem::take(&mut self.buf))
                };
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(NoLine::Late);
            }
            let _ = self.stream.set_read_timeout(Some(left));
            match (&*self.stream).read(&mut chunk) {
                Ok(0) => self.eof = true,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(NoLine::Late);
                }
                Err(_) => return Err(NoLine::Closed),
            }
        }
    }
}

/// Writes all of `bytes` by `deadline`.
pub(super) fn write_by(stream: &UnixStream, bytes: &[u8], deadline: Instant) -> io::Result<()> {
    let mut off = 0;
    while off < bytes.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_write_timeout(Some(left))?;
        match (&*stream).write(&bytes[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => off += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Serves one connection: each request, from the wait for its first byte to the last byte
/// of its answer, must be done within the deadline; a late client is closed.
fn serve_connection<F>(shared: &Shared<F>, peer: &Peer, stream: &UnixStream, slot: Slot<'_>)
where
    F: Fn(&Peer, Request) -> Response,
{
    let mut slot = Some(slot);
    let mut lines = Lines {
        stream,
        buf: Vec::new(),
        eof: false,
    };
    loop {
        let deadline = Instant::now() + shared.deadline;
        let line = match lines.next(deadline) {
            Ok(l) => l,
            Err(NoLine::Closed | NoLine::Late) => return,
            Err(NoLine::TooLong) => {
                let r = Response::err(format!("request longer than {MAX_REQUEST} bytes"));
                let _ = write_by(stream, format!("{}\n", r.to_line()).as_bytes(), deadline);
                return;
            }
        };
        let response = match std::str::from_utf8(&line) {
            Ok(text) if text.trim().is_empty() => continue,
            Ok(text) => match serde_json::from_str::<Request>(text.trim()) {
                Ok(req) if req.is_subscription() => {
                    if let Err(why) = allowed(shared, peer, &req) {
                        let r = Response::err(why);
                        let _ = write_by(stream, format!("{}\n", r.to_line()).as_bytes(), deadline);
                        return;
                    }
                    // From here on the connection is a subscriber's: it counts against
                    // the subscriptions' limit instead of the clients'.
                    drop(slot.take());
                    stream::serve(&shared.handler, &shared.samples, peer, stream, req);
                    return;
                }
                Ok(req) => handle_authorized(shared, peer, req),
                Err(e) => Response::err(format!("bad request: {e}")),
            },
            Err(_) => Response::err("bad request: not UTF-8"),
        };
        let mut out = response.to_line().into_bytes();
        out.push(b'\n');
        if write_by(stream, &out, deadline).is_err() {
            return;
        }
    }
}

/// Checks a request against the access rules; a refusal is logged with the client's uid
/// and pid.
fn allowed<F>(shared: &Shared<F>, peer: &Peer, req: &Request) -> Result<(), String> {
    shared.access.check(peer, req.class()).inspect_err(|why| {
        warn!(
            "control socket: refused {} from uid {} pid {}: {why}",
            req.describe(),
            peer.uid,
            peer.pid
        );
    })
}

/// Checks a request against the access rules, logs what must be logged, and hands an
/// allowed one to the handler.
fn handle_authorized<F>(shared: &Shared<F>, peer: &Peer, req: Request) -> Response
where
    F: Fn(&Peer, Request) -> Response,
{
    let class = req.class();
    if let Err(why) = allowed(shared, peer, &req) {
        return Response::err(why);
    }
    let resp = (shared.handler)(peer, req);
    if class == Class::Keys {
        let n = resp
            .result
            .as_ref()
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        info!(
            "control socket: keys requested by uid {} pid {}: answered {n} lines",
            peer.uid, peer.pid
        );
    }
    resp
}
