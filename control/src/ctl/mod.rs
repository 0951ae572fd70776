//! The control socket: how `mifsec status`, `mifsec ctl` and `mifsec keys` talk to a running
//! daemon.
//!
//! A Unix stream socket (`control_socket` in the configuration). The protocol is one JSON
//! object per line each way: a [`Request`] such as `{"cmd":"status"}` or
//! `{"cmd":"handover","sa":"tunnel","path":"fast","hard":false}`, answered by a [`Response`],
//! `{"ok":true,"result":...}` or `{"ok":false,"error":"..."}`. A connection may carry several
//! requests; a malformed one gets an error response, never a crash.
//!
//! Subscriptions (`{"cmd":"log"}`, `{"cmd":"events"}`, `{"cmd":"watch","interval_ms":N}`,
//! [`Request::is_subscription`]) are answered once and then carry records, one JSON object
//! per line, until either side closes the connection; they are served by the socket server
//! itself (`stream`, with [`crate::events`]): at most
//! [`MAX_SUBSCRIBERS`](crate::events::MAX_SUBSCRIBERS) at once, a bounded queue each, a
//! slow reader losing records and told how many. docs/ARCHITECTURE.md, "Subscriptions on
//! the control socket", has the wire and the events.
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
//! The protocol (requests, responses, [`dispatch`]) is here; serving the socket (binding,
//! credentials, access rules, the connection threads) is in `server`, and the client's
//! [`call`] in `client`. The server side talks to anything that implements [`Target`] (the
//! [`Engine`], the daemon, or `stand_in` in tests), through [`dispatch`] (or [`handle_line`],
//! which also parses).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config;
use crate::daemon::ike_thread::CommandError;
use crate::dataplane::engine::{Engine, EngineError, EngineStatus, InterfaceConfig, PathSpec};
use crate::dataplane::sa_table::{Policy, Prefix, Role};

mod client;
pub mod mif;
mod server;
#[cfg(any(test, feature = "stand-in"))]
pub mod stand_in;
mod stream;
pub mod subscribe;

pub use client::{ClientError, call, subscribe};
pub use server::{Access, Listener, Peer, Server, peer_of};
pub use stream::set_write_deadline as set_subscriber_timeout;

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
    /// The Prometheus text exposition (a string), as `[metrics] listen` serves it.
    Metrics {},
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
    /// Move a connection's IKE SA (and its child SAs) to another path by hand (MOBIKE;
    /// only as its initiator).
    Move {
        /// Connection name.
        conn: String,
        /// Our address to move to.
        local: String,
        /// The peer's address to move to (default: its current one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
    },
    /// One operation of the multi-interface extension on a connection's child SAs
    /// (`ctl mif`), answered once the peer answered.
    Mif(mif::MifRequest),
    /// RFC 7791: clone a connection's IKE SA, move the clone (MOBIKE) to another path and
    /// negotiate a child of the connection on it.
    Clone {
        /// Connection name.
        conn: String,
        /// Our address to move the clone to (none: it stays on the original's path).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        local: Option<String>,
        /// The peer's address to move it to (default: its current one).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
        /// The child configuration to negotiate on the clone.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        child: Option<String>,
    },
    /// A subscription (`mifsec log`): the daemon's log records at `level` (as `[log]
    /// level` is written; default `info`), one JSON object per line, until the client
    /// closes the connection. See [`Request::is_subscription`].
    Log {
        /// Levels, `LEVEL` or `LEVEL,TARGET=LEVEL,...`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        level: Option<String>,
    },
    /// A subscription (`mifsec events`): IKE SA and child SA up and down, rekeys, moves,
    /// multi-interface operations, handovers and path states, one JSON object per line.
    Events {},
    /// A subscription (`mifsec status --watch`): `status` every `interval_ms`
    /// milliseconds ([`WATCH_MIN`] to [`WATCH_MAX`]), each a line of its own with `t`
    /// (Unix time in seconds) added.
    Watch {
        /// The interval, in milliseconds.
        interval_ms: u64,
    },
    /// Read the configuration file again and apply the difference (`ctl reload`, as
    /// SIGHUP); answered with what changed, a line each. Only the daemon does it.
    Reload {},
    /// The running configuration in the file's syntax, `ctl` changes included; key
    /// material only for the clients that may read keys. Only the daemon answers it.
    Showconf {},
    /// The loaded connections (as `swanctl --list-conns`). Only the daemon answers it.
    ListConns {},
}

/// Shortest interval of `status --watch` (20 samples a second).
pub const WATCH_MIN: Duration = Duration::from_millis(50);

/// Longest interval of `status --watch`.
pub const WATCH_MAX: Duration = Duration::from_secs(3600);

/// The line of `mifsec keys --wireshark` before the IKE SAs' `ikev2_decryption_table`
/// lines (the `esp_sa` lines come before it).
pub const IKE_KEYS_HEADER: &str = "# ikev2_decryption_table";

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
pub trait Target {
    /// See [`Engine::status`].
    fn status(&self) -> EngineStatus;
    /// See [`Engine::handover`].
    fn handover(&self, sa: &str, path: &str, hard: bool) -> Result<String, EngineError>;
    /// See [`Engine::add_interface`].
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, EngineError>;
    /// See [`Engine::remove_interface`].
    fn remove_interface(&self, name: &str) -> Result<String, EngineError>;
    /// See [`Engine::set_policy`].
    fn set_policy(&self, sa: &str, policy: Policy) -> Result<String, EngineError>;
    /// See [`Engine::add_path`].
    fn add_path(&self, sa: &str, path: PathSpec) -> Result<String, EngineError>;
    /// See [`Engine::remove_path`].
    fn remove_path(&self, sa: &str, path: &str) -> Result<String, EngineError>;
    /// See [`Engine::wireshark_keys`].
    fn wireshark_keys(&self) -> Vec<String>;
    /// Starts an IKE SA for connection `conn`. Without an IKE control thread: an error.
    fn initiate(&self, conn: &str) -> Result<String, CommandError> {
        Err(CommandError::NoIke {
            name: conn.to_owned(),
        })
    }
    /// Deletes connection `conn`'s IKE SAs. Without an IKE control thread: an error.
    fn terminate(&self, conn: &str) -> Result<String, CommandError> {
        Err(CommandError::NoIke {
            name: conn.to_owned(),
        })
    }
    /// Rekeys connection `conn`'s child SAs (or its IKE SA). Without IKE: an error.
    fn rekey(&self, conn: &str, ike: bool) -> Result<String, CommandError> {
        let _ = ike;
        Err(CommandError::NoIke {
            name: conn.to_owned(),
        })
    }
    /// Moves connection `conn`'s IKE SA to our address `local` (and the peer's `remote`)
    /// by hand (MOBIKE, as its initiator only). Without IKE: an error.
    fn move_sa(
        &self,
        conn: &str,
        local: IpAddr,
        remote: Option<IpAddr>,
    ) -> Result<String, CommandError> {
        let _ = (local, remote);
        Err(CommandError::NoIke {
            name: conn.to_owned(),
        })
    }
    /// One multi-interface operation on connection `conn`'s IKE SAs (each established one
    /// with the extension in use): the peer's answers, one per IKE SA, waited for up to
    /// [`mif::MIF_ANSWER`]. Without IKE: an error.
    fn mif(&self, conn: &str, cmd: mif::MifCommand) -> Result<Vec<mif::MifAnswer>, CommandError> {
        let _ = cmd;
        Err(CommandError::NoIke {
            name: conn.to_owned(),
        })
    }
    /// Clones connection `conn`'s IKE SA (RFC 7791), moves the clone to `local` /
    /// `remote` and negotiates child `child` on it. Without IKE: an error.
    fn clone_sa(
        &self,
        conn: &str,
        local: Option<IpAddr>,
        remote: Option<IpAddr>,
        child: Option<String>,
    ) -> Result<String, CommandError> {
        let _ = (local, remote, child);
        Err(CommandError::NoIke {
            name: conn.to_owned(),
        })
    }
    /// The IKE SAs' keys as Wireshark `ikev2_decryption_table` lines; `None` without IKE.
    fn ike_keys(&self) -> Option<Vec<String>> {
        None
    }
    /// The IKE SAs as JSON text (a list, as `serde_json` writes it), added to `status` as
    /// `ike_sas`; `None` without IKE. Text rather than a [`Value`]: a watch sample with many
    /// child SAs is written without building a tree of them first.
    /// `engine` is the engine's status just taken (for the paths of multi-interface
    /// child SAs).
    fn ike_sas(&self, engine: &EngineStatus) -> Option<String> {
        let _ = engine;
        None
    }
    /// The IKE thread's counters (half-open SAs, COOKIEs) as JSON, added to `status` as
    /// `ike`; `None` without IKE.
    fn ike_stats(&self) -> Option<Value> {
        None
    }
    /// The Prometheus text exposition of the node ([`crate::metrics::render`]); without
    /// IKE, the engine's series alone.
    fn metrics(&self) -> String {
        crate::metrics::render(&self.status(), None)
    }
    /// More keys of `status` about the interfaces (the daemon's `configured_interfaces`
    /// and `netlink`), given the engine's status just taken; `None`: nothing more.
    fn interface_details(&self, engine: &EngineStatus) -> Option<serde_json::Map<String, Value>> {
        let _ = engine;
        None
    }
}

impl Target for Engine {
    fn status(&self) -> EngineStatus {
        Engine::status(self)
    }
    fn handover(&self, sa: &str, path: &str, hard: bool) -> Result<String, EngineError> {
        Engine::handover(self, sa, path, hard)
    }
    fn add_interface(&self, iface: InterfaceConfig) -> Result<String, EngineError> {
        Engine::add_interface(self, iface)
    }
    fn remove_interface(&self, name: &str) -> Result<String, EngineError> {
        Engine::remove_interface(self, name)
    }
    fn set_policy(&self, sa: &str, policy: Policy) -> Result<String, EngineError> {
        Engine::set_policy(self, sa, policy)
    }
    fn add_path(&self, sa: &str, path: PathSpec) -> Result<String, EngineError> {
        Engine::add_path(self, sa, path)
    }
    fn remove_path(&self, sa: &str, path: &str) -> Result<String, EngineError> {
        Engine::remove_path(self, sa, path)
    }
    fn wireshark_keys(&self) -> Vec<String> {
        Engine::wireshark_keys(self)
    }
}

impl Request {
    /// Whether the request changes the engine (and so deserves a line in the daemon's log).
    pub fn changes_state(&self) -> bool {
        !matches!(
            self,
            Request::Status {}
                | Request::Metrics {}
                | Request::Keys {}
                | Request::Showconf {}
                | Request::ListConns {}
        ) && !self.is_subscription()
    }

    /// Whether the request is a subscription: answered once with `{"ok":true,...}` (or an
    /// error), after which the connection carries only the records, one JSON object per
    /// line, until either side closes it. Served by the socket server itself (`server`),
    /// never by [`dispatch`].
    pub fn is_subscription(&self) -> bool {
        matches!(
            self,
            Request::Log { .. } | Request::Events {} | Request::Watch { .. }
        )
    }

    /// A one-line description for the log (never contains keys: no request carries any).
    /// What the client wrote is escaped ([`printable`](crate::log::printable)): a name
    /// with a line break in it cannot forge a log line.
    pub fn describe(&self) -> String {
        crate::log::printable(&self.describe_raw())
    }

    fn describe_raw(&self) -> String {
        match self {
            Request::Status {} => "status".into(),
            Request::Metrics {} => "metrics".into(),
            Request::Keys {} => "keys".into(),
            Request::Log { level: None } => "log".into(),
            Request::Log { level: Some(l) } => format!("log --level {l}"),
            Request::Events {} => "events".into(),
            Request::Watch { interval_ms } => format!("status --watch {interval_ms} ms"),
            Request::Reload {} => "reload".into(),
            Request::Showconf {} => "showconf".into(),
            Request::ListConns {} => "list-conns".into(),
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
            Request::Move {
                conn,
                local,
                remote,
            } => {
                let mut s = format!("move {conn} --local {local}");
                if let Some(r) = remote {
                    s += &format!(" --remote {r}");
                }
                s
            }
            Request::Mif(m) => m.describe(),
            Request::Clone {
                conn,
                local,
                remote,
                child,
            } => {
                let mut s = format!("clone {conn}");
                for (k, v) in [("local", local), ("remote", remote), ("child", child)] {
                    if let Some(v) = v {
                        s += &format!(" --{k} {v}");
                    }
                }
                s
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
pub fn dispatch(target: &dyn Target, req: Request) -> Response {
    fn done(r: Result<String, impl std::fmt::Display>) -> Response {
        match r {
            Ok(msg) => Response::ok(Value::String(msg)),
            Err(e) => Response::err(e.to_string()),
        }
    }
    let run = || -> Result<Response, String> {
        Ok(match req {
            Request::Status {} => {
                let mut text = Vec::new();
                status_json(target, &mut text)?;
                Response::ok(serde_json::from_slice(&text).map_err(|e| format!("status: {e}"))?)
            }
            Request::Metrics {} => Response::ok(Value::String(target.metrics())),
            Request::Reload {} | Request::Showconf {} | Request::ListConns {} => {
                return Err("only the daemon answers this (it holds the configuration)".into());
            }
            Request::Keys {} => {
                let mut lines = target.wireshark_keys();
                if let Some(ike) = target.ike_keys().filter(|k| !k.is_empty()) {
                    // Wireshark's UAT files skip '#' lines: the esp_sa lines above, the
                    // ikev2_decryption_table lines below.
                    lines.push(IKE_KEYS_HEADER.into());
                    lines.extend(ike);
                }
                Response::ok(Value::from(lines))
            }
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
                        verify: false,
                    },
                ))
            }
            Request::RemovePath { sa, name } => done(target.remove_path(&sa, &name)),
            Request::Initiate { conn } => done(target.initiate(&conn)),
            Request::Terminate { conn } => done(target.terminate(&conn)),
            Request::Rekey { conn, ike } => done(target.rekey(&conn, ike)),
            Request::Move {
                conn,
                local,
                remote,
            } => {
                let ip = |a: &str| {
                    a.parse::<IpAddr>()
                        .map_err(|_| format!("{a:?} is not an IP address"))
                };
                let local = ip(&local)?;
                let remote = remote.as_deref().map(ip).transpose()?;
                if remote.is_some_and(|r| r.is_ipv4() != local.is_ipv4()) {
                    return Err("--local and --remote are of different families".into());
                }
                done(target.move_sa(&conn, local, remote))
            }
            Request::Mif(m) => {
                let cmd = m.command()?;
                let answers = target.mif(&m.conn, cmd).map_err(|e| e.to_string())?;
                if answers.is_empty() {
                    return Err(format!(
                        "{}: no established IKE SA with the multi-interface extension in use",
                        m.conn
                    ));
                }
                if answers.iter().all(|a| !a.answered && a.refused.is_none()) {
                    return Err(answers
                        .iter()
                        .map(|a| a.text(&m.conn))
                        .collect::<Vec<_>>()
                        .join("\n"));
                }
                let text: Vec<String> = answers.iter().map(|a| a.text(&m.conn)).collect();
                Response::ok(serde_json::json!({
                    "text": text.join("\n"),
                    "answers": answers,
                }))
            }
            Request::Clone {
                conn,
                local,
                remote,
                child,
            } => {
                let ip = |a: &str| {
                    a.parse::<IpAddr>()
                        .map_err(|_| format!("{a:?} is not an IP address"))
                };
                let local = local.as_deref().map(ip).transpose()?;
                let remote = remote.as_deref().map(ip).transpose()?;
                if remote.is_some() && local.is_none() {
                    return Err("--remote needs --local".into());
                }
                if let Some(c) = &child {
                    check_name(c, "child")?;
                }
                done(target.clone_sa(&conn, local, remote, child))
            }
            Request::Log { .. } | Request::Events {} | Request::Watch { .. } => {
                return Err("a subscription is served by the control socket itself".into());
            }
        })
    };
    run().unwrap_or_else(Response::err)
}

/// `status` as the text of one JSON object, written into `out` (cleared first; a caller
/// that keeps `out` from one sample to the next reuses its allocation): the engine's
/// [`EngineStatus`] with the daemon's keys added (`configured_interfaces` and `netlink`
/// from [`Target::interface_details`], `ike_sas`, `ike`), serialised straight from the
/// structs, with no [`Value`] tree between. The keys are those of `status` (the same object:
/// `dispatch` answers `status` with this text parsed); their order is the structs' order.
pub fn status_json(target: &dyn Target, out: &mut Vec<u8>) -> Result<(), String> {
    let err = |e: serde_json::Error| format!("status: {e}");
    out.clear();
    let st = target.status();
    let details = target.interface_details(&st);
    serde_json::to_writer(&mut *out, &st).map_err(err)?;
    for (k, v) in details.iter().flatten() {
        add_key(out, k)?;
        serde_json::to_writer(&mut *out, v).map_err(err)?;
        out.push(b'}');
    }
    if let Some(text) = target.ike_sas(&st) {
        add_key(out, "ike_sas")?;
        out.extend_from_slice(text.as_bytes());
        out.push(b'}');
    }
    if let Some(v) = target.ike_stats() {
        add_key(out, "ike")?;
        serde_json::to_writer(&mut *out, &v).map_err(err)?;
        out.push(b'}');
    }
    Ok(())
}

/// Opens the JSON object at the end of `out` for one more key: its closing `}` becomes
/// `,"KEY":` (or `"KEY":` in an empty object); the caller writes the value and the `}`.
/// Helper of [`status_json`] and the watch samples (`t`, `missed`).
pub(crate) fn add_key(out: &mut Vec<u8>, key: &str) -> Result<(), String> {
    if out.pop() != Some(b'}') {
        return Err("status: not a JSON object".into());
    }
    if out.last() != Some(&b'{') {
        out.push(b',');
    }
    serde_json::to_writer(&mut *out, key).map_err(|e| format!("status: {e}"))?;
    out.push(b':');
    Ok(())
}

/// Parses one request line and carries it out. Returns the parsed request too (for the
/// daemon's log; `None` if the line was not a request) and the response.
pub fn handle_line(target: &dyn Target, line: &str) -> (Option<Request>, Response) {
    match serde_json::from_str::<Request>(line) {
        Ok(req) => (Some(req.clone()), dispatch(target, req)),
        Err(e) => (None, Response::err(format!("bad request: {e}"))),
    }
}

/// What a request does, for the access check: reads, changes, or hands out keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `status` and the subscriptions (`log`, `events`, `status --watch`): nothing in
    /// them is a key or a secret (log lines never hold any, events carry names, SPIs,
    /// addresses and counts).
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
            Request::Status {}
            | Request::Showconf {}
            | Request::ListConns {}
            | Request::Metrics {}
            | Request::Log { .. }
            | Request::Events {}
            | Request::Watch { .. } => Class::Read,
            Request::Keys {} => Class::Keys,
            _ => Class::Change,
        }
    }
}

#[cfg(test)]
mod tests;
