//! The configuration file of docs/CONFIG.md: TOML in, a validated [`Config`] (an
//! [`EngineConfig`] plus what only the daemon needs) out.
//!
//! Parsing is two steps. Serde reads the file into raw structs whose leaves are
//! [`toml::Spanned`], so that every value knows where it was written; unknown keys, missing
//! keys and wrong types are caught there (`deny_unknown_fields`, with `serde_path_to_error`
//! naming the key). Then [`parse`] checks what serde cannot (addresses, selectors, key
//! lengths, SPIs, references between sections) and builds the engine's types. Every error is
//! a [`ConfigError`] that names the file, the line and the key path, e.g.
//! `gw.toml:14: sa.tunnel.paths[1].remote: "198.18.1.2" is not an address:port`.
//!
//! Key material goes straight into [`Zeroizing`] buffers; no error message and no `Debug`
//! output ever contains it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use toml::Spanned;
use zeroize::{Zeroize, Zeroizing};

use crate::dataplane::aead::{Backend, Cipher};
use crate::dataplane::engine::{EngineConfig, InterfaceConfig, PathSpec, SaSpec};
use crate::dataplane::esp::Mode;
use crate::dataplane::sa_table::{Policy, Prefix, Role};
use crate::dataplane::tun::TunConfig;
use crate::logging::LogConfig;

/// Where the control socket is when the configuration (or `--socket`) says nothing.
pub const DEFAULT_SOCKET: &str = "/run/mifsec/mifsec.sock";

/// How long a subscriber may take nothing before it is closed, unless `[dataplane]
/// subscriber_timeout_s` says otherwise.
pub const DEFAULT_SUBSCRIBER_TIMEOUT: Duration = Duration::from_secs(30);

/// Where manual SAs keep their sequence marks unless `[dataplane] state_dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/mifsec";

/// The TUN device name when the configuration says nothing.
pub const DEFAULT_TUN: &str = "mifsec0";

/// Longest Unix socket path (`sun_path` holds 108 bytes with the terminating NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Longest interface name (`IFNAMSIZ` less the NUL).
const MAX_IFNAME: usize = 15;

/// Most paths one SA may have (the scheduler indexes paths with a byte).
const MAX_PATHS: usize = 255;

/// A parsed and validated configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    /// What the packet engine is started with.
    pub engine: EngineConfig,
    /// The Unix socket `mifsec status` and `mifsec ctl` talk to.
    pub control_socket: PathBuf,
    /// `[dataplane] subscriber_timeout_s`: how long a subscriber of the control socket
    /// (`log`, `events`, `status --watch`) may take nothing before it is closed.
    pub subscriber_timeout: Duration,
    /// `[dataplane] control_group`: the group (name or number) whose members may use the
    /// control socket for `status` and `ctl` (never `keys`); `None`: root only.
    pub control_group: Option<String>,
    /// IKE connections (`[connections.*]`, `[secrets.*]`, `[pools.*]`).
    pub ike: IkeSettings,
    /// What is accepted but unwise (a short PSK, a file with keys that others can read),
    /// each a line for the operator that never contains key material. `mifsec run` logs
    /// them at start and `mifsec check` prints them.
    pub warnings: Vec<String>,
    /// `[dataplane] user`: whom the daemon runs as once it has opened what needs root
    /// (`None`: the default, `mifsec` if that user exists, else `nobody`; `root` keeps
    /// root).
    pub user: Option<String>,
    /// `[log]`: the level (and per-target levels) of the daemon's log.
    pub log: LogConfig,
    /// `[interfaces.*]` with a `device` and no `address`: the daemon learns the device's
    /// addresses from the kernel and opens a socket on each (`daemon::interfaces`). The
    /// ones with a fixed address are in `engine.interfaces`.
    pub followed: Vec<FollowedInterface>,
    /// `[interfaces.NAME] priority` and `alternate` of every section, by section name: what
    /// the daemon announces of the interface to a peer of the multi-interface extension
    /// (docs/PROTOCOL.md section 3.1).
    pub interface_prefs: BTreeMap<String, InterfacePrefs>,
    /// `[metrics] listen`: where the daemon serves the Prometheus exposition over HTTP
    /// (`GET /metrics`); `None`: only `mifsec metrics` on the control socket.
    pub metrics_listen: Option<SocketAddr>,
}

/// How an interface is announced to a mifsec peer (`[interfaces.NAME] priority`,
/// `alternate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InterfacePrefs {
    /// 0 to 255, lower preferred (the path order of docs/PROTOCOL.md section 4.2).
    pub priority: u8,
    /// Announced for use only as an alternate (standby paths).
    pub alternate: bool,
}

impl Config {
    /// The preferences of the engine interface `engine_name`: its section's (a followed
    /// interface's further addresses are `NAME.2`, `NAME.3`, ...), else the defaults.
    pub fn prefs_of(prefs: &BTreeMap<String, InterfacePrefs>, engine_name: &str) -> InterfacePrefs {
        let section = engine_name.split_once('.').map_or(engine_name, |(s, _)| s);
        prefs.get(section).copied().unwrap_or_default()
    }
}

/// An `[interfaces.NAME]` that names only a `device`: its addresses are followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowedInterface {
    /// The section's name.
    pub name: String,
    /// The OS device whose addresses are followed.
    pub device: String,
    /// The local UDP port of each socket.
    pub port: u16,
}

/// PSKs shorter than this many bytes get a warning.
pub const MIN_PSK_LEN: usize = 20;

/// Why a configuration file was refused: where, which key, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as it was named to [`load`] or [`parse`].
    pub file: String,
    /// 1-based line of the offending key or value, when the error has a place.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `sa.tunnel.paths[1].remote`, when the error concerns a key.
    pub key: Option<String>,
    /// What is wrong. Never contains key material.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        if let Some(key) = &self.key {
            write!(f, "{key}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Reads and parses the file at `path`. Errors name the file as `path` is written.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_running(path).map(|(c, _)| c)
}

/// [`load`], and the file as a [`running::RunningDoc`] (what `mifsec showconf` shows and
/// a reload compares with), from the same read.
pub fn load_running(path: &Path) -> Result<(Config, running::RunningDoc), ConfigError> {
    let file = path.display().to_string();
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| ConfigError {
        file: file.clone(),
        line: None,
        key: None,
        message: format!("cannot read: {e}"),
    })?);
    let text = std::str::from_utf8(&bytes).map_err(|e| {
        let line = line_of(&bytes, e.valid_up_to());
        ConfigError {
            file: file.clone(),
            line: Some(line),
            key: None,
            message: "not UTF-8".into(),
        }
    })?;
    let mut cfg = parse(&file, text)?;
    if cfg.holds_keys() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o044 != 0 {
                cfg.warnings.push(format!(
                    "{file}: holds keys or secrets but is readable by {} (mode {mode:04o}); \
                     chmod 600 it",
                    match (mode & 0o040 != 0, mode & 0o004 != 0) {
                        (true, true) => "group and others",
                        (true, false) => "its group",
                        _ => "others",
                    }
                ));
            }
        }
    }
    let doc = running::RunningDoc::from_text(text).map_err(|message| ConfigError {
        file: file.clone(),
        line: None,
        key: None,
        message,
    })?;
    Ok((cfg, doc))
}

impl Config {
    /// Whether the configuration holds key material: manual SA keys or IKE secrets.
    pub fn holds_keys(&self) -> bool {
        !self.engine.sas.is_empty() || self.ike.has_secrets
    }
}

/// Whether the value at dotted key path `key` is key material (a manual SA's key or an IKE
/// secret): an error about it must not quote it.
fn is_secret_key(key: &str) -> bool {
    let first = key.split('.').next().unwrap_or("");
    let last = key.rsplit('.').next().unwrap_or("");
    matches!(
        (first, last),
        ("sa", "key_out" | "key_in") | ("secrets", "secret")
    )
}

/// `message` without the values serde quotes in backticks (``invalid type: integer `123`,
/// expected a string`` becomes `invalid type: integer, expected a string`).
fn without_quoted_values(message: &str) -> String {
    let mut out = String::new();
    for (i, part) in message.split('`').enumerate() {
        if i % 2 == 0 {
            if i > 0 && out.ends_with(' ') && part.starts_with([',', ';', ')', ' ']) {
                out.pop();
            }
            out.push_str(part);
        }
    }
    out.trim().to_owned()
}

/// Parses configuration `text`; `file` is the name errors give.
pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
    let cx = Cx { file, text };
    let raw: RawFile = serde_path_to_error::deserialize(toml::Deserializer::new(text))
        .map_err(|e| cx.serde_error(&e))?;
    cx.build(raw)
}

/// A short human summary of a configuration, without keys: what `mifsec check` prints.
pub fn summary(cfg: &Config) -> String {
    use std::fmt::Write as _;
    let e = &cfg.engine;
    let mut s = String::new();
    let list = |v: &[Prefix]| {
        if v.is_empty() {
            "-".to_owned()
        } else {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        }
    };
    let _ = writeln!(
        s,
        "dataplane: tun {}, mtu {}, {} workers, offloads {}, backend {}, replay window {}",
        e.tun.name,
        e.tun.mtu,
        e.workers,
        if e.tun.offloads { "on" } else { "off" },
        backend_name(e.backend),
        e.replay_window,
    );
    let _ = writeln!(
        s,
        "  addresses {}, routes {}, probes every {} ms, dead after {} ms, keepalive {} s",
        list(&e.addresses),
        if e.routes.is_empty() {
            "remote selectors".to_owned()
        } else {
            list(&e.routes)
        },
        e.probe_interval.as_millis(),
        e.dead_after.as_millis(),
        e.keepalive.as_secs(),
    );
    let _ = writeln!(
        s,
        "  control socket {}{}",
        cfg.control_socket.display(),
        match &cfg.control_group {
            Some(g) => format!(", group {g}"),
            None => String::new(),
        }
    );
    let _ = writeln!(s, "  log level {}", cfg.log);
    if let Some(a) = cfg.metrics_listen {
        let _ = writeln!(s, "  metrics on http://{a}/metrics");
    }
    if let (Some(dir), false) = (&e.state_dir, e.sas.is_empty()) {
        let _ = writeln!(s, "  sequence marks of manual SAs in {}", dir.display());
    }
    for i in &e.interfaces {
        let _ = write!(
            s,
            "interface {}: {}",
            i.name,
            SocketAddr::new(i.address, i.port)
        );
        if let Some(d) = &i.device {
            let _ = write!(s, " on {d}");
        }
        s.push('\n');
    }
    for f in &cfg.followed {
        let _ = writeln!(
            s,
            "interface {}: the addresses of {}, port {} (learned and followed)",
            f.name, f.device, f.port
        );
    }
    for sa in &e.sas {
        let _ = writeln!(
            s,
            "sa {}: {}, {}, {}, policy {}, out {:08x}, in {:08x}, {} === {}",
            sa.name,
            mode_name(sa.mode),
            sa.cipher.name(),
            if sa.esn { "esn" } else { "no esn" },
            sa.policy.name(),
            sa.spi_out,
            sa.spi_in,
            list(&sa.local_ts),
            list(&sa.remote_ts),
        );
        if !sa.reorder.is_zero() {
            let _ = writeln!(s, "  reorder buffer {} ms", sa.reorder.as_millis());
        }
        for p in &sa.paths {
            let _ = write!(
                s,
                "  path {}: {} -> {}, {}, weight {}",
                p.name,
                p.interface,
                p.remote,
                p.role.name(),
                p.weight
            );
            if !p.pin.is_empty() {
                let _ = write!(s, ", pin {}", list(&p.pin));
            }
            s.push('\n');
        }
    }
    for c in &cfg.ike.connections {
        let addrs = |v: &[IpAddr]| {
            if v.is_empty() {
                "%any".to_owned()
            } else {
                v.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            }
        };
        let _ = writeln!(
            s,
            "connection {}: {} === {}, {}{}{}{}, child {} ({})",
            c.name,
            addrs(&c.local_addrs),
            addrs(&c.remote_addrs),
            if c.start { "start" } else { "on demand" },
            if c.vips { ", vip requested" } else { "" },
            if c.pools.is_empty() {
                String::new()
            } else {
                format!(", pools {}", c.pools.join(","))
            },
            if c.ike.force_encap { ", encap" } else { "" },
            c.children.join(","),
            match c.ike.child.mode {
                crate::ike::Mode::Tunnel => "tunnel",
                crate::ike::Mode::Transport => "transport",
            }
        );
        use crate::ike::auth::{LocalAuth, RemoteAuth, cert::subject_of};
        if let LocalAuth::Pubkey { key, certs, .. } = &c.ike.local_auth {
            let _ = writeln!(
                s,
                "  local auth pubkey ({}{})",
                key.kind(),
                certs
                    .first()
                    .and_then(|c| subject_of(c))
                    .map(|n| format!(", certificate '{n}'"))
                    .unwrap_or_default()
            );
        }
        if let LocalAuth::Eap {
            method, identity, ..
        } = &c.ike.local_auth
        {
            let id = identity.as_deref().unwrap_or(&c.ike.local_id.data);
            let id = crate::log::printable(&String::from_utf8_lossy(id));
            let _ = writeln!(s, "  local auth {} (EAP identity '{id}')", method.name());
        }
        match &c.ike.remote_auth {
            RemoteAuth::Pubkey(t) => {
                let _ = writeln!(s, "  remote auth pubkey ({})", t.describe());
            }
            RemoteAuth::Eap {
                method,
                users,
                ask_identity,
                tls,
                tls13_indication,
            } => {
                let asked = if *ask_identity {
                    ", EAP-Identity asked"
                } else {
                    ""
                };
                let _ = match tls {
                    Some(t) => writeln!(
                        s,
                        "  remote auth {} (client certificates of {}{asked}, TLS 1.3 {})",
                        method.name(),
                        t.trust.describe(),
                        if *tls13_indication {
                            "with RFC 9190's success indication"
                        } else {
                            "as strongSwan 5.9.8 (no success indication)"
                        }
                    ),
                    None => writeln!(
                        s,
                        "  remote auth {} ({} users{asked})",
                        method.name(),
                        users.len(),
                    ),
                };
            }
            RemoteAuth::Psk(_) => {}
        }
    }
    s
}

/// Whether `name` is a valid interface, SA or path name: 1 to 32 ASCII letters, digits, `-`
/// or `_` (so that names need no quoting in key paths, logs and command lines).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Configuration name of a backend.
pub fn backend_name(b: Backend) -> &'static str {
    match b {
        Backend::Ring => "ring",
        Backend::RustCrypto => "rustcrypto",
    }
}

/// Configuration name of a mode.
pub fn mode_name(m: Mode) -> &'static str {
    match m {
        Mode::Tunnel => "tunnel",
        Mode::Transport => "transport",
    }
}

// ---------------------------------------------------------------------------------------
// Raw structs: the file as serde reads it.

type S<T> = Spanned<T>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    dataplane: Option<RawDataplane>,
    #[serde(default)]
    interfaces: Ordered<RawInterface>,
    #[serde(default)]
    sa: Ordered<RawSa>,
    #[serde(default)]
    connections: Ordered<ike::RawConnection>,
    #[serde(default)]
    secrets: Ordered<ike::RawSecret>,
    #[serde(default)]
    pools: Ordered<ike::RawPool>,
    #[serde(default)]
    authorities: Ordered<ike::RawAuthority>,
    #[serde(default)]
    ike: Option<ike::RawIkeDaemon>,
    #[serde(default)]
    log: Option<RawLog>,
    #[serde(default)]
    metrics: Option<RawMetrics>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<S<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<S<String>>,
}

/// Where the names of interfaces and SAs are written, read only to place an error about a
/// name. (A separate pass: `Spanned` keys would hide the names from `serde_path_to_error`,
/// and `Spanned` tables fail on implicit tables such as `[[sa.x.paths]]` without `[sa.x]`.)
#[derive(Deserialize, Default)]
struct NameSpans {
    #[serde(default)]
    interfaces: BTreeMap<Spanned<String>, serde::de::IgnoredAny>,
    #[serde(default)]
    sa: BTreeMap<Spanned<String>, serde::de::IgnoredAny>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDataplane {
    workers: Option<S<i64>>,
    tun: Option<S<String>>,
    mtu: Option<S<i64>>,
    offloads: Option<bool>,
    addresses: Option<Vec<S<String>>>,
    routes: Option<Vec<S<String>>>,
    control_socket: Option<S<String>>,
    control_group: Option<S<String>>,
    state_dir: Option<S<String>>,
    replay_window: Option<S<i64>>,
    backend: Option<S<String>>,
    probe_interval_ms: Option<S<i64>>,
    dead_after_ms: Option<S<i64>>,
    keepalive_s: Option<S<i64>>,
    subscriber_timeout_s: Option<S<i64>>,
    test_seq_limit: Option<S<i64>>,
    user: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInterface {
    device: Option<S<String>>,
    address: Option<S<String>>,
    port: Option<S<i64>>,
    priority: Option<S<i64>>,
    alternate: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSa {
    mode: Option<S<String>>,
    cipher: Option<S<String>>,
    esn: Option<bool>,
    spi_out: S<i64>,
    key_out: S<String>,
    spi_in: S<i64>,
    key_in: S<String>,
    local_ts: S<Vec<S<String>>>,
    remote_ts: S<Vec<S<String>>>,
    policy: Option<S<String>>,
    reorder_ms: Option<S<i64>>,
    probes: Option<bool>,
    #[serde(default)]
    paths: Vec<S<RawPath>>,
}

impl Drop for RawSa {
    fn drop(&mut self) {
        self.key_out.get_mut().zeroize();
        self.key_in.get_mut().zeroize();
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    name: Option<S<String>>,
    interface: S<String>,
    remote: S<String>,
    role: Option<S<String>>,
    weight: Option<S<i64>>,
    #[serde(default)]
    pin: Vec<S<String>>,
}

/// A TOML table of named sub-tables, in file order.
struct Ordered<T>(Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Ordered<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table of named tables")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut v = Vec::new();
                while let Some((k, t)) = map.next_entry::<String, T>()? {
                    v.push((k, t));
                }
                Ok(Ordered(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

// ---------------------------------------------------------------------------------------
// Validation.

/// The file being parsed: turns spans into line numbers.
struct Cx<'a> {
    file: &'a str,
    text: &'a str,
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &[u8], offset: usize) -> usize {
    let end = offset.min(text.len());
    text[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

impl Cx<'_> {
    fn err(
        &self,
        span: Range<usize>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: Some(line_of(self.text.as_bytes(), span.start)),
            key: Some(key.into()),
            message: message.into(),
        }
    }

    /// Turns a serde/toml error into a [`ConfigError`] with a readable key path.
    fn serde_error(&self, e: &serde_path_to_error::Error<toml::de::Error>) -> ConfigError {
        let inner = e.inner();
        let mut key = String::new();
        for seg in e.path().iter() {
            use serde_path_to_error::Segment;
            match seg {
                Segment::Seq { index } => key.push_str(&format!("[{index}]")),
                Segment::Map { key: k } | Segment::Enum { variant: k } => {
                    if k.starts_with("$__serde_spanned") {
                        continue;
                    }
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push_str(k);
                }
                Segment::Unknown => {
                    if !key.is_empty() {
                        key.push('.');
                    }
                    key.push('?');
                }
            }
        }
        // Messages are multi-line for syntax errors; keep them on one line.
        let mut message = inner.message().trim().replace('\n', "; ");
        if let Some(field) = between(&message, "missing field `", "`") {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(field);
            message = "is required".into();
        } else if message.starts_with("unknown field `") {
            let expected = message.split_once(", ").map(|(_, rest)| rest.to_owned());
            message = match expected {
                Some(x) => format!("unknown key ({x})"),
                None => "unknown key".into(),
            };
        }
        // A wrong type in a key or secret: say what was expected, never what was written.
        if is_secret_key(&key) {
            message = without_quoted_values(&message);
        }
        ConfigError {
            file: self.file.to_owned(),
            line: inner.span().map(|s| line_of(self.text.as_bytes(), s.start)),
            key: (!key.is_empty()).then_some(key),
            message,
        }
    }

    fn int(&self, v: &S<i64>, key: &str, lo: i64, hi: i64) -> Result<i64, ConfigError> {
        let n = *v.get_ref();
        if n < lo || n > hi {
            return Err(self.err(v.span(), key, format!("must be {lo} to {hi}, got {n}")));
        }
        Ok(n)
    }

    fn parse_str<T>(
        &self,
        v: &S<String>,
        key: &str,
        f: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        f(v.get_ref()).map_err(|m| self.err(v.span(), key, m))
    }

    /// Where table name `name` of section `section` (`interfaces` or `sa`) is written.
    fn name_span(&self, section: &str, name: &str) -> Range<usize> {
        let spans: NameSpans = toml::from_str(self.text).unwrap_or_default();
        let map = if section == "sa" {
            &spans.sa
        } else {
            &spans.interfaces
        };
        map.keys()
            .find(|k| k.get_ref() == name)
            .map_or(0..0, Spanned::span)
    }

    fn name(
        &self,
        v: &str,
        span: impl FnOnce() -> Range<usize>,
        key: &str,
        what: &str,
    ) -> Result<(), ConfigError> {
        if valid_name(v) {
            Ok(())
        } else {
            Err(self.err(
                span(),
                key,
                format!("{v:?}: {what} names are 1 to 32 letters, digits, '-' or '_'"),
            ))
        }
    }

    fn prefixes(
        &self,
        v: &[S<String>],
        key: &str,
        normalise: bool,
    ) -> Result<Vec<Prefix>, ConfigError> {
        v.iter()
            .enumerate()
            .map(|(i, s)| {
                let p: Prefix = self.parse_str(s, &format!("{key}[{i}]"), |t| t.parse())?;
                Ok(if normalise { network(p) } else { p })
            })
            .collect()
    }

    fn build(&self, raw: RawFile) -> Result<Config, ConfigError> {
        let d = raw.dataplane.unwrap_or_default();
        let mut engine = EngineConfig::default();

        if let Some(w) = &d.workers {
            engine.workers = self.int(w, "dataplane.workers", 1, 1024)? as usize;
        }
        let tun_name = match &d.tun {
            Some(t) => self.parse_str(t, "dataplane.tun", |s| {
                if s.is_empty() || s.len() > MAX_IFNAME || s.contains(['/', ' ', '\t']) {
                    Err(format!(
                        "{s:?} is not a device name (1 to {MAX_IFNAME} bytes, no '/' or space)"
                    ))
                } else {
                    Ok(s.to_owned())
                }
            })?,
            None => DEFAULT_TUN.to_owned(),
        };
        let mtu = match &d.mtu {
            Some(m) => self.int(m, "dataplane.mtu", 576, 65_535)? as u32,
            None => 1400,
        };
        engine.tun = TunConfig {
            name: tun_name,
            queues: engine.workers,
            mtu,
            offloads: d.offloads.unwrap_or(true),
        };
        if let Some(a) = &d.addresses {
            engine.addresses = self.prefixes(a, "dataplane.addresses", false)?;
        }
        if let Some(r) = &d.routes {
            engine.routes = self.prefixes(r, "dataplane.routes", true)?;
        }
        let control_socket = match &d.control_socket {
            Some(s) => self.parse_str(s, "dataplane.control_socket", |p| {
                if p.is_empty() || p.len() > MAX_SOCKET_PATH {
                    Err(format!(
                        "{p:?}: a socket path is 1 to {MAX_SOCKET_PATH} bytes"
                    ))
                } else {
                    Ok(PathBuf::from(p))
                }
            })?,
            None => PathBuf::from(DEFAULT_SOCKET),
        };
        let control_group = match &d.control_group {
            Some(g) => Some(self.parse_str(g, "dataplane.control_group", |s| {
                let ok = !s.is_empty()
                    && s.len() <= 32
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
                if ok {
                    Ok(s.to_owned())
                } else {
                    Err(format!(
                        "{s:?} is not a group name or number (1 to 32 letters, digits, '-', '_' or '.')"
                    ))
                }
            })?),
            None => None,
        };
        let user = match &d.user {
            Some(u) => Some(self.parse_str(u, "dataplane.user", |n| {
                let ok = !n.is_empty()
                    && n.len() <= 32
                    && n.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
                    && !n.starts_with('-');
                if ok {
                    Ok(n.to_owned())
                } else {
                    Err(format!("{n:?} is not a user name"))
                }
            })?),
            None => None,
        };
        engine.state_dir = Some(match &d.state_dir {
            Some(s) => self.parse_str(s, "dataplane.state_dir", |p| {
                if p.is_empty() || !p.starts_with('/') {
                    Err(format!("{p:?}: the state directory is an absolute path"))
                } else {
                    Ok(PathBuf::from(p))
                }
            })?,
            None => PathBuf::from(DEFAULT_STATE_DIR),
        });
        if let Some(w) = &d.replay_window {
            let n = *w.get_ref();
            if !(64..=1 << 20).contains(&n) || n.count_ones() != 1 {
                return Err(self.err(
                    w.span(),
                    "dataplane.replay_window",
                    format!("must be a power of two from 64 to 1048576, got {n}"),
                ));
            }
            engine.replay_window = n as u64;
        }
        if let Some(b) = &d.backend {
            engine.backend = self.parse_str(b, "dataplane.backend", |s| match s {
                "ring" => Ok(Backend::Ring),
                "rustcrypto" => Ok(Backend::RustCrypto),
                _ => Err(format!("{s:?}: backend is ring or rustcrypto")),
            })?;
        }
        if let Some(p) = &d.probe_interval_ms {
            engine.probe_interval = Duration::from_millis(self.int(
                p,
                "dataplane.probe_interval_ms",
                0,
                60_000,
            )? as u64);
        }
        if let Some(p) = &d.dead_after_ms {
            engine.dead_after =
                Duration::from_millis(self.int(p, "dataplane.dead_after_ms", 1, 3_600_000)? as u64);
        }
        if let Some(p) = &d.keepalive_s {
            engine.keepalive =
                Duration::from_secs(self.int(p, "dataplane.keepalive_s", 1, 86_400)? as u64);
        }
        let subscriber_timeout = match &d.subscriber_timeout_s {
            Some(p) => {
                Duration::from_secs(self.int(p, "dataplane.subscriber_timeout_s", 1, 3600)? as u64)
            }
            None => DEFAULT_SUBSCRIBER_TIMEOUT,
        };
        if let Some(p) = &d.test_seq_limit {
            engine.seq_limit = Some(self.int(p, "dataplane.test_seq_limit", 8, i64::MAX)? as u64);
        }

        // Interfaces.
        let mut bound: HashMap<SocketAddr, String> = HashMap::new();
        let mut followed: Vec<FollowedInterface> = Vec::new();
        let mut interface_prefs = BTreeMap::new();
        for (name, ri) in &raw.interfaces.0 {
            let key = format!("interfaces.{name}");
            self.name(
                name,
                || self.name_span("interfaces", name),
                &key,
                "interface",
            )?;
            let priority = match &ri.priority {
                Some(p) => self.int(p, &format!("{key}.priority"), 0, 255)? as u8,
                None => 0,
            };
            interface_prefs.insert(
                name.clone(),
                InterfacePrefs {
                    priority,
                    alternate: ri.alternate.unwrap_or(false),
                },
            );
            let port = match &ri.port {
                Some(p) => self.int(p, &format!("{key}.port"), 0, 65_535)? as u16,
                None => 4500,
            };
            let device = match &ri.device {
                Some(dv) => Some(self.parse_str(dv, &format!("{key}.device"), |s| {
                    if s.is_empty() || s.len() > MAX_IFNAME || s.contains(['/', ' ', '\t']) {
                        Err(format!(
                            "{s:?} is not a device name (1 to {MAX_IFNAME} bytes, no '/' or space)"
                        ))
                    } else {
                        Ok(s.to_owned())
                    }
                })?),
                None => None,
            };
            let Some(raw_address) = &ri.address else {
                // Only a device: its addresses are learned from the kernel and followed.
                let Some(device) = device else {
                    return Err(self.err(
                        self.name_span("interfaces", name),
                        format!("{key}.address"),
                        "is required without a device (whose addresses are then followed)",
                    ));
                };
                if port != 0 {
                    if let Some(other) = followed
                        .iter()
                        .find(|f: &&FollowedInterface| f.device == device && f.port == port)
                    {
                        return Err(self.err(
                            ri.device.as_ref().map_or(0..0, |d| d.span()),
                            format!("{key}.device"),
                            format!(
                                "interfaces.{} follows {device}'s addresses on port {port} already",
                                other.name
                            ),
                        ));
                    }
                }
                followed.push(FollowedInterface {
                    name: name.clone(),
                    device,
                    port,
                });
                continue;
            };
            let address: IpAddr = self.parse_str(raw_address, &format!("{key}.address"), |s| {
                s.parse().map_err(|_| format!("{s:?} is not an IP address"))
            })?;
            let local = SocketAddr::new(address, port);
            if port != 0 {
                if let Some(other) = bound.insert(local, name.clone()) {
                    return Err(self.err(
                        raw_address.span(),
                        format!("{key}.address"),
                        format!("{local} is also interfaces.{other}'s address and port"),
                    ));
                }
            }
            engine.interfaces.push(InterfaceConfig {
                name: name.clone(),
                device,
                address,
                port,
            });
        }

        // SAs.
        let mut spis_in: HashMap<u32, String> = HashMap::new();
        let mut spis_out: HashMap<u32, String> = HashMap::new();
        let mut keys: Vec<(Zeroizing<Vec<u8>>, String)> = Vec::new();
        for (name, rs) in &raw.sa.0 {
            let key = format!("sa.{name}");
            self.name(name, || self.name_span("sa", name), &key, "SA")?;
            let k = |field: &str| format!("{key}.{field}");
            let mode = match &rs.mode {
                Some(m) => self.parse_str(m, &k("mode"), |s| match s {
                    "tunnel" => Ok(Mode::Tunnel),
                    "transport" => Ok(Mode::Transport),
                    _ => Err(format!("{s:?}: mode is tunnel or transport")),
                })?,
                None => Mode::Tunnel,
            };
            let cipher = match &rs.cipher {
                Some(c) => self.parse_str(c, &k("cipher"), |s| {
                    Cipher::ALL
                        .into_iter()
                        .find(|c| c.name() == s)
                        .ok_or_else(|| {
                            format!("{s:?}: cipher is aes128gcm16, aes256gcm16 or chacha20poly1305")
                        })
                })?,
                None => Cipher::Aes128Gcm,
            };
            let spi = |v: &S<i64>,
                       field: &str,
                       seen: &mut HashMap<u32, String>|
             -> Result<u32, ConfigError> {
                let n = *v.get_ref();
                if !(256..=i64::from(u32::MAX)).contains(&n) {
                    return Err(self.err(
                        v.span(),
                        k(field),
                        format!("an SPI is 256 to 4294967295 (0x100 to 0xffffffff), got {n}"),
                    ));
                }
                let n = n as u32;
                if let Some(other) = seen.insert(n, k(field)) {
                    return Err(self.err(
                        v.span(),
                        k(field),
                        format!("SPI 0x{n:08x} is also {other}"),
                    ));
                }
                Ok(n)
            };
            let spi_out = spi(&rs.spi_out, "spi_out", &mut spis_out)?;
            let spi_in = spi(&rs.spi_in, "spi_in", &mut spis_in)?;
            let mut keymat =
                |v: &S<String>, field: &str| -> Result<Zeroizing<Vec<u8>>, ConfigError> {
                    let s = v.get_ref().trim();
                    let s = s.strip_prefix("0x").unwrap_or(s);
                    let bytes = Zeroizing::new(hex::decode(s).map_err(|_| {
                        self.err(
                            v.span(),
                            k(field),
                            "is not a string of hex digits (key || salt)",
                        )
                    })?);
                    if bytes.len() != cipher.keymat_len() {
                        return Err(self.err(
                            v.span(),
                            k(field),
                            format!(
                                "{} needs {} bytes ({} hex digits) of key || salt, got {} bytes",
                                cipher.name(),
                                cipher.keymat_len(),
                                2 * cipher.keymat_len(),
                                bytes.len()
                            ),
                        ));
                    }
                    if let Some((_, other)) = keys.iter().find(|(kb, _)| **kb == *bytes) {
                        return Err(self.err(
                            v.span(),
                            k(field),
                            format!(
                                "same key as {other}: a key must never serve two SAs or directions"
                            ),
                        ));
                    }
                    keys.push((bytes.clone(), k(field)));
                    Ok(bytes)
                };
            let key_out = keymat(&rs.key_out, "key_out")?;
            let key_in = keymat(&rs.key_in, "key_in")?;
            let selectors =
                |v: &S<Vec<S<String>>>, field: &str| -> Result<Vec<Prefix>, ConfigError> {
                    if v.get_ref().is_empty() {
                        return Err(self.err(v.span(), k(field), "needs at least one selector"));
                    }
                    self.prefixes(v.get_ref(), &k(field), true)
                };
            let local_ts = selectors(&rs.local_ts, "local_ts")?;
            let remote_ts = selectors(&rs.remote_ts, "remote_ts")?;
            let policy = match &rs.policy {
                Some(p) => self.parse_str(p, &k("policy"), |s| s.parse())?,
                None => Policy::Failover,
            };
            let reorder = match &rs.reorder_ms {
                Some(r) => Duration::from_millis(self.int(r, &k("reorder_ms"), 0, 10_000)? as u64),
                None if policy == Policy::Aggregate => Duration::from_millis(50),
                None => Duration::ZERO,
            };
            if rs.paths.len() > MAX_PATHS {
                let span = rs.paths[MAX_PATHS].span();
                return Err(self.err(
                    span,
                    k("paths"),
                    format!("at most {MAX_PATHS} paths per SA"),
                ));
            }
            let mut paths: Vec<PathSpec> = Vec::new();
            for (i, rp) in rs.paths.iter().enumerate() {
                let pk = |field: &str| format!("{key}.paths[{i}].{field}");
                let rp = rp.get_ref();
                let pname = match &rp.name {
                    Some(n) => {
                        self.name(n.get_ref(), || n.span(), &pk("name"), "path")?;
                        if let Some(j) = paths.iter().position(|p| p.name == *n.get_ref()) {
                            return Err(self.err(
                                n.span(),
                                pk("name"),
                                format!("{:?} is also the name of {key}.paths[{j}]", n.get_ref()),
                            ));
                        }
                        n.get_ref().clone()
                    }
                    None => {
                        let n = format!("p{}", i + 1);
                        if paths.iter().any(|p| p.name == n) {
                            return Err(self.err(
                                rp.interface.span(),
                                pk("name"),
                                format!("the default name {n:?} is taken; name this path"),
                            ));
                        }
                        n
                    }
                };
                let iface = rp.interface.get_ref();
                if followed.iter().any(|f| f.name == *iface) {
                    return Err(self.err(
                        rp.interface.span(),
                        pk("interface"),
                        format!(
                            "interfaces.{iface} follows its device's addresses; a manually keyed \
                             SA's path needs an interface with a fixed address"
                        ),
                    ));
                }
                let Some(ic) = engine.interfaces.iter().find(|c| c.name == *iface) else {
                    return Err(self.err(
                        rp.interface.span(),
                        pk("interface"),
                        format!("no interface named {iface:?} (no [interfaces.{iface}])"),
                    ));
                };
                let remote: SocketAddr = self.parse_str(&rp.remote, &pk("remote"), |s| {
                    s.parse()
                        .map_err(|_| format!("{s:?} is not an address:port"))
                })?;
                if remote.is_ipv4() != ic.address.is_ipv4() {
                    return Err(self.err(
                        rp.remote.span(),
                        pk("remote"),
                        format!(
                            "{remote} is IPv{} but interface {iface} is IPv{}",
                            if remote.is_ipv4() { 4 } else { 6 },
                            if ic.address.is_ipv4() { 4 } else { 6 },
                        ),
                    ));
                }
                let role = match &rp.role {
                    Some(r) => self.parse_str(r, &pk("role"), |s| s.parse())?,
                    None => Role::Active,
                };
                let weight = match &rp.weight {
                    Some(w) => self.int(w, &pk("weight"), 1, 1_000_000)? as u32,
                    None => 1,
                };
                let pin = self.prefixes(&rp.pin, &pk("pin"), true)?;
                paths.push(PathSpec {
                    name: pname,
                    interface: iface.clone(),
                    remote,
                    role,
                    weight,
                    pin,
                    verify: false,
                });
            }
            engine.sas.push(SaSpec {
                name: name.clone(),
                mode,
                cipher,
                esn: rs.esn.unwrap_or(true),
                spi_out,
                key_out,
                spi_in,
                key_in,
                local_ts,
                remote_ts,
                policy,
                paths,
                reorder,
                probes: rs.probes.unwrap_or(true),
                report_usage: false,
            });
        }
        let mut ike = self.build_ike(
            &raw.connections,
            &raw.secrets,
            &raw.pools,
            &raw.authorities,
            raw.ike.as_ref(),
            &engine,
        )?;
        if let Some(d) = &raw.ike {
            self.build_ike_daemon(d, &mut ike)?;
        }
        let log = match raw.log.as_ref().and_then(|l| l.level.as_ref()) {
            Some(l) => self.parse_str(l, "log.level", LogConfig::parse)?,
            None => LogConfig::default(),
        };
        let mut warnings = self.secret_warnings(&raw.secrets);
        let metrics_listen = match raw.metrics.as_ref().and_then(|m| m.listen.as_ref()) {
            Some(l) => {
                let a = self.parse_str(l, "metrics.listen", |t| {
                    let a: SocketAddr = t
                        .parse()
                        .map_err(|_| format!("{t:?} is not an address:port"))?;
                    if a.port() == 0 {
                        return Err(format!("{t:?}: the port must not be 0"));
                    }
                    Ok(a)
                })?;
                if !a.ip().is_loopback() {
                    warnings.push(format!(
                        "metrics.listen {a} is not a loopback address: anybody who reaches it \
                         can read the metrics (connection names, addresses, counters)"
                    ));
                }
                Some(a)
            }
            None => None,
        };
        Ok(Config {
            engine,
            control_socket,
            subscriber_timeout,
            control_group,
            ike,
            warnings,
            user,
            log,
            followed,
            interface_prefs,
            metrics_listen,
        })
    }
}

/// The network of a prefix: host bits cleared (`10.2.0.7/24` is `10.2.0.0/24`).
fn network(p: Prefix) -> Prefix {
    let addr = match p.addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(p.len)).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(p.len)).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    };
    Prefix { addr, len: p.len }
}

/// The text between `start` and the next `end` in `s`, if `s` begins with `start`.
fn between<'a>(s: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = s.strip_prefix(start)?;
    rest.split_once(end).map(|(a, _)| a)
}

mod ike;
pub mod running;
pub use ike::{Connection, IkeSettings, parse_esp_proposal, parse_id, parse_ike_proposal};

#[cfg(test)]
mod tests;
