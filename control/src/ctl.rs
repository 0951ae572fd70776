//! The control socket: how `mifsec status`, `mifsec ctl` and `mifsec keys` talk to a running
//! daemon.
//!
//! A Unix stream socket (`control_socket` in the configuration). The protocol is one JSON
//! object per line each way: a [`Request`] such as `{"cmd":"status"}` or
//! `{"cmd":"handover","sa":"tunnel","path":"fast","hard":false}`, answered by a [`Response`],
//! `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`. A connection may carry several
//! requests; a malformed one gets an error response, never a crash.
//!
//! Who may connect: the socket file is 0600 (0660 and owned by the control group when
//! `[dataplane] control_group` is set), and is given that mode before it listens, so nobody
//! else can ever connect. Each request is then checked against the client's credentials
//! (`SO_PEERCRED`, `SO_PEERGROUPS`) by [`Access`]: root and the daemon's own user may do
//! everything, control group members may read `status` and make changes but not read
//! `keys`. Every `keys` request and every refusal is logged with the client's uid and pid.
//!
//! Serving: a thread per connection, at most [`MAX_CLIENTS`] at once; each request must
//! arrive and its answer leave within [`REQUEST_DEADLINE`], so a client that trickles bytes
//! or reads slowly holds only its own thread. Requests are at most [`MAX_REQUEST`] bytes;
//! answers (the status of thousands of SAs) may be up to [`MAX_RESPONSE`].
//!
//! The server side talks to anything that implements [`Control`] (the [`Engine`], or a test
//! double), through [`dispatch`] (or [`handle_line`], which also parses).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use socket2::{Domain, SockAddr, Socket, Type};

use crate::config;
use crate::dataplane::engine::{ControlError, Engine, EngineStatus, InterfaceConfig, PathSpec};
use crate::dataplane::sa_table::{Policy, Prefix, Role};

/// Longest request line the server accepts, in bytes (requests are small).
pub const MAX_REQUEST: usize = 64 << 10;

/// Longest response line a client accepts, in bytes.
pub const MAX_RESPONSE: usize = 256 << 20;

/// How long the server gives a client for one request: waiting for it, reading it,
/// carrying it out and writing the answer.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// How long a client waits for each read or write of its call.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Most connections served at once.
pub const MAX_CLIENTS: usize = 16;

/// One request, as sent on the socket (the `cmd` field names the variant).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// The engine's status ([`EngineStatus`] as JSON).
    Status {},
    /// Make `path` the only active path of `sa`.
    Handover {
        /// SA name.
        sa: String,
        /// Path name.
        path: String,
        /// Switch at once instead of make-before-break.
        #[serde(default)]
        hard: bool,
    },
    /// Open a socket on a new interface.
    AddInterface {
        /// Interface name (what paths refer to).
        name: String,
        /// Local address to bind.
        address: String,
        /// OS device to bind to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        /// Local UDP port (default 4500).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        port: Option<u16>,
    },
    /// Close an interface's socket.
    RemoveInterface {
        /// Interface name.
        name: String,
    },
    /// Change an SA's scheduling policy.
    Policy {
        /// SA name.
        sa: String,
        /// `failover`, `aggregate`, `redundant` or `pinned`.
        policy: String,
    },
    /// Add a path to an SA.
    AddPath {
        /// SA name.
        sa: String,
        /// Path name.
        name: String,
        /// Interface name.
        interface: String,
        /// Peer `address:port`.
        remote: String,
        /// `active` (default), `standby` or `alternate`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Aggregate weight (default 1).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        weight: Option<u32>,
        /// Pinned destination prefixes.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        pin: Vec<String>,
    },
    /// Remove a path from an SA.
    RemovePath {
        /// SA name.
        sa: String,
        /// Path name.
        name: String,
    },
    /// The SAs' keys as Wireshark `esp_sa` lines.
    Keys {},
    /// Start an IKE SA for a configured connection.
    Initiate {
        /// Connection name.
        conn: String,
    },
    /// Delete a connection's IKE SAs and their child SAs.
    Terminate {
        /// Connection name.
        conn: String,
    },
    /// Rekey a connection's child SAs, or its IKE SA.
    Rekey {
        /// Connection name.
        conn: String,
        /// Rekey the IKE SA rather than the child SAs.
        #[serde(default)]
        ike: bool,
    },
}

/// One response: `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result (a status object, a message string, or a list of lines) when `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why the request failed when not `ok`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success carrying `result`.
    pub fn ok(result: Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure with `error` for the operator.
    pub fn err(error: impl Into<String>) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(error.into()),
        }
    }

    /// The response as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"response not serialisable"}"#.into())
    }

    /// The result, or the error message.
    pub fn into_result(self) -> Result<Value, String> {
        if self.ok {
            Ok(self.result.unwrap_or(Value::Null))
        } else {
            Err(self
                .error
                .unwrap_or_else(|| "the daemon gave no reason".into()))
        }
    }
}

/// What the control socket drives: the engine's control operations. Implemented by
/// [`Engine`]; tests implement it with a double.
pub trait Control {
    /// See [`Engine::status`].
    fn status(&self) -> EngineStatus;
    /// See [`Engine::handover`].
    fn handover(&self, sa: &str, path: &str, hard: bool) -> Result<String, ControlError>;
    /// See [`Engine::add_interface`].
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, ControlError>;
    /// See [`Engine::remove_interface`].
    fn remove_interface(&self, name: &str) -> Result<String, ControlError>;
    /// See [`Engine::set_policy`].
    fn set_policy(&self, sa: &str, policy: Policy) -> Result<String, ControlError>;
    /// See [`Engine::add_path`].
    fn add_path(&self, sa: &str, path: PathSpec) -> Result<String, ControlError>;
    /// See [`Engine::remove_path`].
    fn remove_path(&self, sa: &str, path: &str) -> Result<String, ControlError>;
    /// See [`Engine::wireshark_keys`].
    fn wireshark_keys(&self) -> Vec<String>;
    /// Starts an IKE SA for connection `conn`. Without an IKE control thread: an error.
    fn initiate(&self, conn: &str) -> Result<String, ControlError> {
        Err(ControlError(format!(
            "no connection named {conn:?} (no IKE connections configured)"
        )))
    }
    /// Deletes connection `conn`'s IKE SAs. Without an IKE control thread: an error.
    fn terminate(&self, conn: &str) -> Result<String, ControlError> {
        Err(ControlError(format!(
            "no connection named {conn:?} (no IKE connections configured)"
        )))
    }
    /// Rekeys connection `conn`'s child SAs (or its IKE SA). Without IKE: an error.
    fn rekey(&self, conn: &str, ike: bool) -> Result<String, ControlError> {
        let _ = ike;
        Err(ControlError(format!(
            "no connection named {conn:?} (no IKE connections configured)"
        )))
    }
    /// The IKE SAs as JSON (a list), added to `status` as `ike_sas`; `None` without IKE.
    fn ike_sas(&self) -> Option<Value> {
        None
    }
    /// The IKE thread's counters (half-open SAs, COOKIEs) as JSON, added to `status` as
    /// `ike`; `None` without IKE.
    fn ike_stats(&self) -> Option<Value> {
        None
    }
}

impl Control for Engine {
    fn status(&self) -> EngineStatus {
        Engine::status(self)
    }
    fn handover(&self, sa: &str, path: &str, hard: bool) -> Result<String, ControlError> {
        Engine::handover(self, sa, path, hard)
    }
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, ControlError> {
        Engine::add_interface(self, iface)
    }
    fn remove_interface(&self, name: &str) -> Result<String, ControlError> {
        Engine::remove_interface(self, name)
    }
    fn set_policy(&self, sa: &str, policy: Policy) -> Result<String, ControlError> {
        Engine::set_policy(self, sa, policy)
    }
    fn add_path(&self, sa: &str, path: PathSpec) -> Result<String, ControlError> {
        Engine::add_path(self, sa, path)
    }
    fn remove_path(&self, sa: &str, path: &str) -> Result<String, ControlError> {
        Engine::remove_path(self, sa, path)
    }
    fn wireshark_keys(&self) -> Vec<String> {
        Engine::wireshark_keys(self)
    }
}

impl Request {
    /// Whether the request changes the engine (and so deserves a line in the daemon's log).
    pub fn changes_state(&self) -> bool {
        !matches!(self, Request::Status {} | Request::Keys {})
    }

    /// A one-line description for the log (never contains keys: no request carries any).
    /// What the client wrote is escaped ([`printable`](crate::ikectl::printable)): a name
    /// with a line break in it cannot forge a log line.
    pub fn describe(&self) -> String {
        crate::ikectl::printable(&self.describe_raw())
    }

    fn describe_raw(&self) -> String {
        match self {
            Request::Status {} => "status".into(),
            Request::Keys {} => "keys".into(),
            Request::Handover { sa, path, hard } => {
                format!("handover {sa} {path}{}", if *hard { " --hard" } else { "" })
            }
            Request::AddInterface {
                name,
                address,
                device,
                port,
            } => {
                let mut s = format!("add-interface {name} --address {address}");
                if let Some(d) = device {
                    s += &format!(" --device {d}");
                }
                if let Some(p) = port {
                    s += &format!(" --port {p}");
                }
                s
            }
            Request::RemoveInterface { name } => format!("remove-interface {name}"),
            Request::Policy { sa, policy } => format!("policy {sa} {policy}"),
            Request::AddPath {
                sa,
                name,
                interface,
                remote,
                role,
                weight,
                pin,
            } => {
                let mut s =
                    format!("add-path {sa} {name} --interface {interface} --remote {remote}");
                if let Some(r) = role {
                    s += &format!(" --role {r}");
                }
                if let Some(w) = weight {
                    s += &format!(" --weight {w}");
                }
                for p in pin {
                    s += &format!(" --pin {p}");
                }
                s
            }
            Request::RemovePath { sa, name } => format!("remove-path {sa} {name}"),
            Request::Initiate { conn } => format!("initiate {conn}"),
            Request::Terminate { conn } => format!("terminate {conn}"),
            Request::Rekey { conn, ike } => {
                format!("rekey {conn}{}", if *ike { " --ike" } else { "" })
            }
        }
    }
}

fn check_name(name: &str, what: &str) -> Result<(), String> {
    if config::valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?}: {what} names are 1 to 32 letters, digits, '-' or '_'"
        ))
    }
}

/// Carries out one request on `target`.
pub fn dispatch(target: &dyn Control, req: Request) -> Response {
    let done = |r: Result<String, ControlError>| match r {
        Ok(msg) => Response::ok(Value::String(msg)),
        Err(e) => Response::err(e.0),
    };
    let run = || -> Result<Response, String> {
        Ok(match req {
            Request::Status {} => {
                let mut v =
                    serde_json::to_value(target.status()).map_err(|e| format!("status: {e}"))?;
                if let (Some(ike), Some(obj)) = (target.ike_sas(), v.as_object_mut()) {
                    obj.insert("ike_sas".into(), ike);
                }
                if let (Some(ike), Some(obj)) = (target.ike_stats(), v.as_object_mut()) {
                    obj.insert("ike".into(), ike);
                }
                Response::ok(v)
            }
            Request::Keys {} => Response::ok(Value::from(target.wireshark_keys())),
            Request::Handover { sa, path, hard } => done(target.handover(&sa, &path, hard)),
            Request::AddInterface {
                name,
                address,
                device,
                port,
            } => {
                check_name(&name, "interface")?;
                let address: IpAddr = address
                    .parse()
                    .map_err(|_| format!("{address:?} is not an IP address"))?;
                if let Some(d) = &device {
                    if d.is_empty() || d.len() > 15 || d.contains(['/', ' ']) {
                        return Err(format!("{d:?} is not a device name"));
                    }
                }
                done(target.add_interface(InterfaceConfig {
                    name,
                    device,
                    address,
                    port: port.unwrap_or(4500),
                }))
            }
            Request::RemoveInterface { name } => done(target.remove_interface(&name)),
            Request::Policy { sa, policy } => done(target.set_policy(&sa, policy.parse()?)),
            Request::AddPath {
                sa,
                name,
                interface,
                remote,
                role,
                weight,
                pin,
            } => {
                check_name(&name, "path")?;
                let remote: SocketAddr = remote
                    .parse()
                    .map_err(|_| format!("{remote:?} is not an address:port"))?;
                let role: Role = match role {
                    Some(r) => r.parse()?,
                    None => Role::Active,
                };
                let weight = weight.unwrap_or(1);
                if !(1..=1_000_000).contains(&weight) {
                    return Err(format!("weight must be 1 to 1000000, got {weight}"));
                }
                let pin = pin
                    .iter()
                    .map(|p| p.parse::<Prefix>())
                    .collect::<Result<Vec<_>, _>>()?;
                done(target.add_path(
                    &sa,
                    PathSpec {
                        name,
                        interface,
                        remote,
                        role,
                        weight,
                        pin,
                    },
                ))
            }
            Request::RemovePath { sa, name } => done(target.remove_path(&sa, &name)),
            Request::Initiate { conn } => done(target.initiate(&conn)),
            Request::Terminate { conn } => done(target.terminate(&conn)),
            Request::Rekey { conn, ike } => done(target.rekey(&conn, ike)),
        })
    };
    run().unwrap_or_else(Response::err)
}

/// Parses one request line and carries it out. Returns the parsed request too (for the
/// daemon's log; `None` if the line was not a request) and the response.
pub fn handle_line(target: &dyn Control, line: &str) -> (Option<Request>, Response) {
    match serde_json::from_str::<Request>(line) {
        Ok(req) => (Some(req.clone()), dispatch(target, req)),
        Err(e) => (None, Response::err(format!("bad request: {e}"))),
    }
}

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

/// What a request does, for the access check: reads, changes, or hands out keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `status`.
    Read,
    /// Every `ctl` command.
    Change,
    /// `keys`: the session keys of every SA.
    Keys,
}

impl Request {
    /// What the request does, for the access check.
    pub fn class(&self) -> Class {
        match self {
            Request::Status {} => Class::Read,
            Request::Keys {} => Class::Keys,
            _ => Class::Change,
        }
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
fn lookup_group(name: &str) -> io::Result<u32> {
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

/// A bound control socket, not yet served.
#[derive(Debug)]
pub struct Listener {
    listener: UnixListener,
    path: PathBuf,
    access: Access,
    deadline: Duration,
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
                    log(format_args!(
                        "warning: control group {name} cannot reach {}: its directory {} \
                         (mode {:04o}, gid {}) lets neither the group nor others through",
                        path.display(),
                        dir.display(),
                        m & 0o7777,
                        meta.gid()
                    ));
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
        } = self;
        let shared = Arc::new(Shared {
            handler,
            access,
            deadline,
            clients: AtomicUsize::new(0),
        });
        let thread = std::thread::Builder::new()
            .name("mifsec-ctl".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(stream) => accept(&shared, stream),
                        Err(e) => {
                            log(format_args!("control socket: accept: {e}"));
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
}

/// Decrements the client count when a connection thread ends, however it ends.
struct Slot<'a>(&'a AtomicUsize);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn log(msg: impl std::fmt::Display) {
    crate::daemon::log(msg);
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
            log(format_args!("control socket: peer credentials: {e}"));
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
            let _slot = Slot(&sh.clients);
            serve_connection(&sh, &peer, &stream);
        });
    if let Err(e) = spawned {
        // The closure (and its slot) never ran.
        shared.clients.fetch_sub(1, Ordering::AcqRel);
        log(format_args!(
            "control socket: starting a client thread: {e}"
        ));
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
fn write_by(stream: &UnixStream, bytes: &[u8], deadline: Instant) -> io::Result<()> {
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
fn serve_connection<F>(shared: &Shared<F>, peer: &Peer, stream: &UnixStream)
where
    F: Fn(&Peer, Request) -> Response,
{
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
            Ok(text) => handle_authorized(shared, peer, text.trim()),
            Err(_) => Response::err("bad request: not UTF-8"),
        };
        let mut out = response.to_line().into_bytes();
        out.push(b'\n');
        if write_by(stream, &out, deadline).is_err() {
            return;
        }
    }
}

/// Parses a request, checks it against the access rules, logs what must be logged, and
/// hands an allowed one to the handler.
fn handle_authorized<F>(shared: &Shared<F>, peer: &Peer, line: &str) -> Response
where
    F: Fn(&Peer, Request) -> Response,
{
    let req = match serde_json::from_str::<Request>(line) {
        Ok(r) => r,
        Err(e) => return Response::err(format!("bad request: {e}")),
    };
    let class = req.class();
    if let Err(why) = shared.access.check(peer, class) {
        log(format_args!(
            "control socket: refused {} from uid {} pid {}: {why}",
            req.describe(),
            peer.uid,
            peer.pid
        ));
        return Response::err(why);
    }
    let resp = (shared.handler)(peer, req);
    if class == Class::Keys {
        let n = resp
            .result
            .as_ref()
            .and_then(Value::as_array)
            .map_or(0, Vec::len);
        log(format_args!(
            "control socket: keys requested by uid {} pid {}: answered {n} lines",
            peer.uid, peer.pid
        ));
    }
    resp
}

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// No daemon could be reached at the socket.
    Connect(PathBuf, io::Error),
    /// The connection broke or timed out.
    Io(io::Error),
    /// The daemon answered something that is not a response.
    BadResponse(String),
    /// The daemon refused the request; its message.
    Refused(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(p, e) if e.kind() == io::ErrorKind::PermissionDenied => write!(
                f,
                "cannot connect to {}: {e} (the control socket admits root and the members of \
                 [dataplane] control_group)",
                p.display()
            ),
            ClientError::Connect(p, e) => write!(
                f,
                "cannot connect to {}: {e} (is `mifsec run` running, and is this its control_socket?)",
                p.display()
            ),
            ClientError::Io(e) => write!(f, "control socket: {e}"),
            ClientError::BadResponse(s) => write!(f, "bad response from the daemon: {s}"),
            ClientError::Refused(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ClientError {}

/// Sends `req` to the daemon at `socket` and returns the result of a successful response.
pub fn call(socket: &Path, req: &Request) -> Result<Value, ClientError> {
    let stream =
        UnixStream::connect(socket).map_err(|e| ClientError::Connect(socket.to_owned(), e))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(ClientError::Io)?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(ClientError::Io)?;
    let mut line =
        serde_json::to_string(req).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    line.push('\n');
    // A daemon that turns the connection away (too many clients) writes why and closes it,
    // possibly before the request is written: then the answer is still there to read.
    let wrote = (&stream).write_all(line.as_bytes());
    if let Err(e) = &wrote {
        if !matches!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
        ) {
            return Err(ClientError::Io(wrote.unwrap_err()));
        }
    }
    let mut answer = Vec::new();
    let read = BufReader::with_capacity(1 << 16, &stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_until(b'\n', &mut answer);
    if answer.is_empty() {
        wrote.map_err(ClientError::Io)?;
    }
    read.map_err(ClientError::Io)?;
    if answer.is_empty() {
        return Err(ClientError::BadResponse(
            "the daemon closed the connection".into(),
        ));
    }
    if answer.len() > MAX_RESPONSE {
        return Err(ClientError::BadResponse(format!(
            "answer longer than {MAX_RESPONSE} bytes"
        )));
    }
    let resp: Response =
        serde_json::from_slice(&answer).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    resp.into_result().map_err(ClientError::Refused)
}

#[cfg(test)]
mod tests;
