//! The IKE sections of the configuration file: `[connections.*]` (with `local`, `remote`
//! and `children.*`), `[secrets.*]` and `[pools.*]`, named and shaped like swanctl.conf.
//!
//! Each connection becomes a [`Connection`]: the addresses and start action the daemon's
//! IKE thread needs, plus a ready [`IkeConfig`] (identities, the PSK from the matching
//! secret, proposals, the child SA, the pool). The PSK goes straight into a [`Zeroizing`]
//! buffer and is never part of an error message or a `Debug` output.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::{ConfigError, Cx, Ordered, S};
use crate::dataplane::aead::Cipher;
use crate::dataplane::engine::EngineConfig;
use crate::ike::auth::{EapUsers, LocalAuth, PrivateKey, RemoteAuth};
use crate::ike::config::ts_prefix;
use crate::ike::fragment::{DEFAULT_FRAGMENT_SIZE, MIN_FRAGMENT_SIZE};
use crate::ike::limits::InitLimits;
use crate::ike::{
    AddressPool, ChildConfig, ChildLifetimes, DpdAction, DpdConfig, EsnPolicy, EspProposal,
    IkeConfig, IkeProposal, Lifetimes, MifOnNew, Mode, Prf, RetransmitConfig, RoamConfig,
};
use crate::wire::{DhGroup, IdPayload, TrafficSelector};

/// The IKE part of a configuration.
#[derive(Debug, Clone)]
pub struct IkeSettings {
    /// The connections, in file order.
    pub connections: Vec<Connection>,
    /// `[ike] cookie_threshold`: demand COOKIEs (RFC 7296 section 2.6) from new
    /// initiators while at least this many responder IKE SAs are half-open; 0: always.
    pub cookie_threshold: usize,
    /// Whether the file has `[secrets.*]` (used by a connection or not).
    pub has_secrets: bool,
    /// `[ike] init_limit_half_open`, `block_threshold`, `init_rate`, `init_burst`: limits
    /// on new responder IKE SAs in all and per source address.
    pub limits: InitLimits,
}

impl Default for IkeSettings {
    fn default() -> Self {
        IkeSettings {
            connections: Vec::new(),
            cookie_threshold: crate::ike::cookie::DEFAULT_THRESHOLD,
            has_secrets: false,
            limits: InitLimits::default(),
        }
    }
}

/// `[ike]`: settings of the daemon's IKE thread (strongSwan's `charon.*` settings).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawIkeDaemon {
    cookie_threshold: Option<S<i64>>,
    fragment_size: Option<S<i64>>,
    init_limit_half_open: Option<S<i64>>,
    block_threshold: Option<S<i64>>,
    init_rate: Option<S<i64>>,
    init_burst: Option<S<i64>>,
}

/// One `[connections.NAME]`: what the IKE thread needs to initiate or answer it.
#[derive(Debug, Clone)]
pub struct Connection {
    /// The connection's name.
    pub name: String,
    /// Local addresses IKE may use (each is an `[interfaces.*]` address); empty: any.
    pub local_addrs: Vec<IpAddr>,
    /// The peer's addresses; empty: any (a responder-only connection).
    pub remote_addrs: Vec<IpAddr>,
    /// `start_action = "start"`: initiate when the daemon starts.
    pub start: bool,
    /// The children's names, in file order (the first is negotiated in IKE_AUTH).
    pub children: Vec<String>,
    /// Whether a virtual IP is requested (`vips = ["0.0.0.0", "::"]`).
    pub vips: bool,
    /// The pools leased from, by name (`pools = ["p4", "p6"]`).
    pub pools: Vec<String>,
    /// `clone_per_interface = true`: once the first IKE SA is up, one clone of it (RFC
    /// 7791) per other usable local address, each moved there with MOBIKE.
    pub clone_per_interface: bool,
    /// The IKE SA configuration (PSK included).
    pub ike: IkeConfig,
}

type Strings = Option<Vec<S<String>>>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConnection {
    version: Option<S<i64>>,
    local_addrs: Strings,
    remote_addrs: Strings,
    proposals: Strings,
    vips: Strings,
    pools: Strings,
    encap: Option<bool>,
    mobike: Option<bool>,
    clone: Option<bool>,
    clone_per_interface: Option<bool>,
    clone_children: Strings,
    fragmentation: Option<S<String>>,
    fragment_size: Option<S<i64>>,
    start_action: Option<S<String>>,
    rekey_time: Option<S<RawDuration>>,
    over_time: Option<S<RawDuration>>,
    life_time: Option<S<RawDuration>>,
    rand_time: Option<S<RawDuration>>,
    dpd_delay: Option<S<RawDuration>>,
    dpd_action: Option<S<String>>,
    path_check_delay: Option<S<RawDuration>>,
    path_check_interval: Option<S<RawDuration>>,
    path_check_tries: Option<S<i64>>,
    prefer_best_path: Option<bool>,
    mif_on_new: Option<S<String>>,
    mif_prefer: Option<bool>,
    mif: Option<bool>,
    mif_max_interfaces: Option<S<i64>>,
    mif_max_paths: Option<S<i64>>,
    local: Option<RawEnd>,
    remote: Option<RawEnd>,
    #[serde(default)]
    children: Ordered<RawChild>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnd {
    auth: Option<S<String>>,
    id: Option<S<String>>,
    /// The EAP identity: ours (local; default the IKE identity), or `%any` (remote: ask
    /// the peer with EAP-Identity).
    eap_id: Option<S<String>>,
    /// Our certificate files (local), end entity first.
    certs: Strings,
    /// The CA certificate files the peer's chain must end at (remote).
    cacerts: Strings,
    /// Raw public keys (PEM `PUBLIC KEY` or DER SubjectPublicKeyInfo): ours (local) or
    /// the peer's trusted ones (remote).
    pubkeys: Strings,
    /// CRL files (remote).
    crls: Strings,
    /// EAP-TLS gateway (remote) with TLS 1.3: send RFC 9190's protected success
    /// indication (default false: the draft strongSwan 5.9.8 speaks).
    tls13_indication: Option<S<bool>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChild {
    local_ts: Strings,
    remote_ts: Strings,
    esp_proposals: Strings,
    mode: Option<S<String>>,
    rekey_time: Option<S<RawDuration>>,
    life_time: Option<S<RawDuration>>,
    rand_time: Option<S<RawDuration>>,
    rekey_bytes: Option<S<RawDuration>>,
    life_bytes: Option<S<RawDuration>>,
    rand_bytes: Option<S<RawDuration>>,
    rekey_packets: Option<S<RawDuration>>,
    life_packets: Option<S<RawDuration>>,
    rand_packets: Option<S<RawDuration>>,
    mif_accept: Option<bool>,
    policy: Option<S<String>>,
    interfaces: Strings,
}

/// A byte or packet count as swanctl.conf writes it: a number, or a number with `K`, `M`
/// or `G` (binary multiples, as strongSwan's vici parser); `0` disables (None).
pub fn parse_amount(s: &str) -> Result<Option<u64>, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, ""),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a count is a number, or N with K, M or G"))?;
    let mult: u64 = match unit {
        "" => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (K, M, G)")),
    };
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?}: too large"))?;
    Ok((v > 0).then_some(v))
}

/// A time as swanctl.conf writes it: seconds, or a number with `s`, `m`, `h` or `d`.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Secs(i64),
    Text(String),
}

/// Parses `30`, `30s`, `10m`, `4h`, `1d` (and `400ms`) into a duration; `0` disables
/// (None).
pub fn parse_duration(s: &str) -> Result<Option<Duration>, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?}: a time is a number of seconds or N with s, m, h or d"))?;
    if unit == "ms" {
        return Ok((n > 0).then(|| Duration::from_millis(n)));
    }
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(format!(
                "{s:?}: unknown time unit {unit:?} (ms, s, m, h, d)"
            ));
        }
    };
    Ok((secs > 0).then(|| Duration::from_secs(secs)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    id: Option<S<Vec<S<String>>>>,
    secret: Option<S<String>>,
    /// `[secrets.private-NAME] file`: a private key file.
    file: Option<S<String>>,
}

impl Drop for RawSecret {
    fn drop(&mut self) {
        if let Some(s) = &mut self.secret {
            s.get_mut().zeroize();
        }
    }
}

/// `[authorities.NAME]`: a CA certificate trusted by every `remote.auth = "pubkey"`
/// connection without `remote.cacerts` of its own, with its CRL files.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuthority {
    cacert: S<String>,
    crls: Strings,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    addrs: S<String>,
    dns: Strings,
}

/// What `local.auth` / `remote.auth` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    /// `psk`.
    Psk,
    /// `pubkey` (`rsa`, `ecdsa`, `ed25519`); `rsa/pss` for RSASSA-PSS.
    Pubkey {
        /// RSASSA-PSS.
        rsa_pss: bool,
    },
    /// `eap-mschapv2`.
    Eap(crate::ike::auth::EapMethod),
}

/// Parses `local.auth` / `remote.auth`: `psk`, `pubkey` (also `rsa`, `ecdsa`,
/// `ed25519`, and `rsa/pss` for RSASSA-PSS), or `eap-mschapv2`, as swanctl.conf.
pub fn parse_auth(s: &str) -> Result<AuthKind, String> {
    match s {
        "psk" => Ok(AuthKind::Psk),
        "pubkey" | "rsa" | "ecdsa" | "ed25519" => Ok(AuthKind::Pubkey { rsa_pss: false }),
        "rsa/pss" => Ok(AuthKind::Pubkey { rsa_pss: true }),
        "eap-mschapv2" => Ok(AuthKind::Eap(crate::ike::auth::EapMethod::Mschapv2)),
        "eap-tls" => Ok(AuthKind::Eap(crate::ike::auth::EapMethod::Tls)),
        "eap-md5" | "eap" => Err(format!(
            "{s:?}: of EAP methods only eap-mschapv2 and eap-tls are supported"
        )),
        _ => Err(format!(
            "{s:?}: auth is psk, pubkey (rsa, ecdsa, ed25519, rsa/pss), eap-mschapv2 or eap-tls"
        )),
    }
}

/// A raw public key file: PEM `PUBLIC KEY` or DER SubjectPublicKeyInfo.
fn spki_from_pem_or_der(b: &[u8]) -> Result<Vec<u8>, String> {
    use rustls_pki_types::pem::PemObject;
    let der = match rustls_pki_types::SubjectPublicKeyInfoDer::from_pem_slice(b) {
        Ok(d) => d.to_vec(),
        Err(_) => b.to_vec(),
    };
    crate::ike::auth::PublicKey::from_spki(&der).map_err(|e| e.to_string())?;
    Ok(der)
}

/// Parses an identity as strongSwan does: an IP address, `@name` (FQDN), `@#hex` (key ID),
/// a distinguished name (anything with `=`: `C=CH, O=Lab, CN=gw`), `user@host` (email),
/// anything else an FQDN.
pub fn parse_id(s: &str) -> Result<IdPayload, String> {
    if s.is_empty() {
        return Err("an identity cannot be empty".into());
    }
    if s.contains('=') && !s.starts_with('@') {
        return crate::ike::auth::cert::parse_dn(s).map(|data| IdPayload {
            id_type: crate::wire::IdType::DerAsn1Dn,
            data,
        });
    }
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(match ip {
            IpAddr::V4(a) => IdPayload::ipv4(a),
            IpAddr::V6(a) => IdPayload::ipv6(a),
        });
    }
    if let Some(rest) = s.strip_prefix("@#") {
        return hex::decode(rest)
            .map(|b| IdPayload::key_id(&b))
            .map_err(|_| format!("{s:?}: a key ID is @# and hex digits"));
    }
    if let Some(rest) = s.strip_prefix('@') {
        return Ok(IdPayload::fqdn(rest));
    }
    if s.contains('@') {
        return Ok(IdPayload::rfc822(s));
    }
    Ok(IdPayload::fqdn(s))
}

fn cipher_token(t: &str) -> Option<Cipher> {
    match t {
        "aes128gcm16" | "aes128gcm128" => Some(Cipher::Aes128Gcm),
        "aes256gcm16" | "aes256gcm128" => Some(Cipher::Aes256Gcm),
        "chacha20poly1305" => Some(Cipher::ChaCha20Poly1305),
        _ => None,
    }
}

fn push<T: PartialEq>(v: &mut Vec<T>, x: T) {
    if !v.contains(&x) {
        v.push(x);
    }
}

/// Parses an IKE proposal such as `aes128gcm16-prfsha256-x25519`, or `default`.
pub fn parse_ike_proposal(s: &str) -> Result<IkeProposal, String> {
    if s == "default" {
        return Ok(IkeProposal::all());
    }
    let mut p = IkeProposal {
        ciphers: Vec::new(),
        prfs: Vec::new(),
        groups: Vec::new(),
    };
    for t in s.split('-') {
        if let Some(c) = cipher_token(t) {
            push(&mut p.ciphers, c);
            continue;
        }
        match t {
            "prfsha256" => push(&mut p.prfs, Prf::HmacSha256),
            "prfsha384" => push(&mut p.prfs, Prf::HmacSha384),
            "prfsha512" => push(&mut p.prfs, Prf::HmacSha512),
            "x25519" | "curve25519" => push(&mut p.groups, DhGroup::Curve25519),
            "ecp256" => push(&mut p.groups, DhGroup::Ecp256),
            "ecp384" => push(&mut p.groups, DhGroup::Ecp384),
            _ => {
                return Err(format!(
                    "{s:?}: unknown algorithm {t:?} (aes128gcm16, aes256gcm16, chacha20poly1305; prfsha256, prfsha384, prfsha512; x25519, ecp256, ecp384)"
                ));
            }
        }
    }
    if p.ciphers.is_empty() || p.prfs.is_empty() || p.groups.is_empty() {
        return Err(format!(
            "{s:?}: an IKE proposal needs an AEAD, a PRF and a DH group"
        ));
    }
    Ok(p)
}

/// Parses an ESP proposal such as `aes128gcm16` or `aes256gcm16-esn`, or `default`: every
/// AEAD, extended sequence numbers or not (ESN first: a child SA with them never runs out
/// of sequence numbers; a peer without them, strongSwan's kernel-libipsec or its default
/// proposals, picks 32-bit numbers), no PFS.
pub fn parse_esp_proposal(s: &str) -> Result<EspProposal, String> {
    if s == "default" {
        return Ok(EspProposal {
            ciphers: Cipher::ALL.to_vec(),
            esn: EsnPolicy::Either,
            groups: Vec::new(),
        });
    }
    let mut ciphers = Vec::new();
    let mut groups = Vec::new();
    let (mut esn, mut noesn) = (false, false);
    for t in s.split('-') {
        if let Some(c) = cipher_token(t) {
            push(&mut ciphers, c);
            continue;
        }
        match t {
            "esn" => esn = true,
            "noesn" => noesn = true,
            "x25519" | "curve25519" => push(&mut groups, DhGroup::Curve25519),
            "ecp256" => push(&mut groups, DhGroup::Ecp256),
            "ecp384" => push(&mut groups, DhGroup::Ecp384),
            _ => {
                return Err(format!(
                    "{s:?}: unknown algorithm {t:?} (aes128gcm16, aes256gcm16, chacha20poly1305; x25519, ecp256, ecp384 for PFS; esn, noesn)"
                ));
            }
        }
    }
    if ciphers.is_empty() {
        return Err(format!("{s:?}: an ESP proposal needs an AEAD"));
    }
    let esn = match (esn, noesn) {
        (true, true) => EsnPolicy::Either,
        (true, false) => EsnPolicy::Yes,
        _ => EsnPolicy::No,
    };
    Ok(EspProposal {
        ciphers,
        esn,
        groups,
    })
}

/// The traffic selector of a CIDR string; `dynamic` is taken as `0.0.0.0/0` (a responder
/// narrows it to the virtual IP it assigns).
fn parse_ts(s: &str) -> Result<TrafficSelector, String> {
    if s == "dynamic" {
        return Ok(TrafficSelector::ipv4_any());
    }
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("{s:?} is not a prefix such as 10.1.0.0/16"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|&l| l <= max)
            .ok_or_else(|| format!("{s:?}: bad prefix length"))?,
        None => max,
    };
    Ok(ts_prefix(addr, len))
}

impl Cx<'_> {
    /// Where the header `[section.name` is written (for errors about a whole table).
    fn table_span(&self, section: &str, name: &str) -> Range<usize> {
        let needle = format!("[{section}.{name}");
        let at = self.text.find(&needle).unwrap_or(0);
        at..at
    }

    fn strings<T>(
        &self,
        v: &[S<String>],
        key: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        v.iter()
            .enumerate()
            .map(|(i, s)| self.parse_str(s, &format!("{key}[{i}]"), |t| f(t)))
            .collect()
    }

    /// Applies `[ike]` to `out`.
    pub(super) fn build_ike_daemon(
        &self,
        d: &RawIkeDaemon,
        out: &mut IkeSettings,
    ) -> Result<(), ConfigError> {
        if let Some(t) = &d.cookie_threshold {
            out.cookie_threshold = self.int(t, "ike.cookie_threshold", 0, 1_000_000)? as usize;
        }
        let l = &mut out.limits;
        if let Some(t) = &d.init_limit_half_open {
            l.max_half_open = self.int(t, "ike.init_limit_half_open", 1, 1_000_000)? as usize;
        }
        if let Some(t) = &d.block_threshold {
            l.block_threshold = self.int(t, "ike.block_threshold", 0, 1_000_000)? as usize;
        }
        if let Some(t) = &d.init_rate {
            l.init_rate = self.int(t, "ike.init_rate", 0, 1_000_000)? as u32;
        }
        if let Some(t) = &d.init_burst {
            l.init_burst = self.int(t, "ike.init_burst", 1, 1_000_000)? as u32;
        }
        Ok(())
    }

    /// Builds the IKE sections; `engine` has the interfaces already.
    pub(super) fn build_ike(
        &self,
        connections: &Ordered<RawConnection>,
        secrets: &Ordered<RawSecret>,
        pools: &Ordered<RawPool>,
        authorities: &Ordered<RawAuthority>,
        daemon: Option<&RawIkeDaemon>,
        engine: &EngineConfig,
    ) -> Result<IkeSettings, ConfigError> {
        let keys = self.private_keys(secrets)?;
        let frag_range = (i64::from(MIN_FRAGMENT_SIZE), 65_535);
        let default_fragment_size = match daemon.and_then(|d| d.fragment_size.as_ref()) {
            Some(v) => self.int(v, "ike.fragment_size", frag_range.0, frag_range.1)? as u16,
            None => DEFAULT_FRAGMENT_SIZE,
        };
        // Pools.
        let mut pool_map: HashMap<&str, Arc<AddressPool>> = HashMap::new();
        for (name, rp) in &pools.0 {
            let key = format!("pools.{name}.addrs");
            let (first, size) = self.parse_str(&rp.addrs, &key, |s| {
                if s == "dynamic" {
                    return Err(format!("{s:?}: a pool is a prefix such as 10.3.0.0/24"));
                }
                Ok(match parse_ts(s)? {
                    TrafficSelector::Ipv4 { start, end, .. } => {
                        let (first, last) = (u32::from(start), u32::from(end));
                        // Skip the network and broadcast addresses of ordinary subnets.
                        let (first, last) = if last - first >= 3 {
                            (first + 1, last - 1)
                        } else {
                            (first, last)
                        };
                        (IpAddr::V4(Ipv4Addr::from(first)), last - first + 1)
                    }
                    TrafficSelector::Ipv6 { start, end, .. } => {
                        let (first, last) = (u128::from(start), u128::from(end));
                        // Skip the subnet-router anycast address (the prefix itself).
                        let first = if last > first { first + 1 } else { first };
                        let size = u32::try_from(last - first + 1).unwrap_or(u32::MAX);
                        (IpAddr::V6(Ipv6Addr::from(first)), size)
                    }
                    _ => return Err(format!("{s:?}: a pool is an IPv4 or IPv6 prefix")),
                })
            })?;
            let dns = match &rp.dns {
                Some(v) => self.strings(v, &format!("pools.{name}.dns"), |t| {
                    t.parse::<IpAddr>()
                        .map_err(|_| format!("{t:?} is not an IP address"))
                })?,
                None => Vec::new(),
            };
            pool_map.insert(name.as_str(), AddressPool::with_dns(first, size, dns));
        }
        let mut out = IkeSettings {
            has_secrets: !secrets.0.is_empty(),
            ..IkeSettings::default()
        };
        for (name, rc) in &connections.0 {
            let key = format!("connections.{name}");
            let k = |f: &str| format!("{key}.{f}");
            let here = || self.table_span("connections", name);
            self.name(name, here, &key, "connection")?;
            if let Some(v) = &rc.version {
                if *v.get_ref() != 2 {
                    return Err(self.err(v.span(), k("version"), "only IKEv2 (2) is supported"));
                }
            }
            let addr = |t: &str| -> Result<IpAddr, String> {
                t.parse().map_err(|_| format!("{t:?} is not an IP address"))
            };
            let local_addrs = match &rc.local_addrs {
                Some(v) => self.strings(v, &k("local_addrs"), addr)?,
                None => Vec::new(),
            };
            for (i, a) in local_addrs.iter().enumerate() {
                if !engine.interfaces.iter().any(|c| c.address == *a) {
                    let span = rc.local_addrs.as_ref().map_or(0..0, |v| v[i].span());
                    return Err(self.err(
                        span,
                        format!("{}[{i}]", k("local_addrs")),
                        format!("{a} is no [interfaces.*] address"),
                    ));
                }
            }
            let remote_addrs = match &rc.remote_addrs {
                Some(v) => self.strings(v, &k("remote_addrs"), |t| {
                    if t == "%any" {
                        Ok(None)
                    } else {
                        addr(t).map(Some)
                    }
                })?,
                None => Vec::new(),
            };
            let remote_addrs: Vec<IpAddr> = remote_addrs.into_iter().flatten().collect();
            let start = match &rc.start_action {
                Some(s) => self.parse_str(s, &k("start_action"), |t| match t {
                    "start" => Ok(true),
                    "none" => Ok(false),
                    _ => Err(format!("{t:?}: start_action is start or none")),
                })?,
                None => false,
            };
            if start && remote_addrs.is_empty() {
                let span = rc.start_action.as_ref().map_or(0..0, S::span);
                return Err(self.err(
                    span,
                    k("start_action"),
                    "start needs remote_addrs to initiate to",
                ));
            }
            let proposals = match &rc.proposals {
                Some(v) if !v.is_empty() => self.strings(v, &k("proposals"), parse_ike_proposal)?,
                _ => vec![IkeProposal::all()],
            };
            let (vip4, vip6) = match &rc.vips {
                Some(v) => {
                    let fams = self.strings(v, &k("vips"), |t| match t {
                        "0.0.0.0" => Ok(false),
                        "::" => Ok(true),
                        _ => Err(format!(
                            "{t:?}: vips are 0.0.0.0 and/or :: (any address of that family from the gateway)"
                        )),
                    })?;
                    (fams.contains(&false), fams.contains(&true))
                }
                None => (false, false),
            };
            let mut pool_names = Vec::new();
            let mut pool_list = Vec::new();
            for (i, n) in rc.pools.iter().flatten().enumerate() {
                let pk = format!("{}[{i}]", k("pools"));
                let name = n.get_ref();
                let Some(p) = pool_map.get(name.as_str()) else {
                    return Err(self.err(
                        n.span(),
                        pk,
                        format!("no pool named {name:?} (no [pools.{name}])"),
                    ));
                };
                if pool_names.contains(name) {
                    return Err(self.err(n.span(), pk, format!("pool {name:?} listed twice")));
                }
                pool_names.push(name.clone());
                pool_list.push(Arc::clone(p));
            }
            let pool6 = pool_list.iter().any(|p| p.is_ipv6());
            let end_id = |end: &Option<RawEnd>, which: &str| -> Result<_, ConfigError> {
                let Some(e) = end else {
                    return Ok(None);
                };
                if let Some(a) = &e.auth {
                    self.parse_str(a, &k(&format!("{which}.auth")), parse_auth)?;
                }
                match &e.id {
                    Some(id) => Ok(Some((
                        id.get_ref().clone(),
                        self.parse_str(id, &k(&format!("{which}.id")), parse_id)?,
                    ))),
                    None => Ok(None),
                }
            };
            let local_id = end_id(&rc.local, "local")?;
            let remote_id = end_id(&rc.remote, "remote")?;
            // The local identity defaults to the first local address, as in strongSwan.
            let local_id = match local_id {
                Some(x) => x,
                None => {
                    let a = local_addrs
                        .first()
                        .copied()
                        .or_else(|| engine.interfaces.first().map(|i| i.address))
                        .ok_or_else(|| {
                            self.err(here(), k("local.id"), "is required (no local address)")
                        })?;
                    let id = match a {
                        IpAddr::V4(v) => IdPayload::ipv4(v),
                        IpAddr::V6(v) => IdPayload::ipv6(v),
                    };
                    (a.to_string(), id)
                }
            };
            let psk = |lid: &str| -> Result<Zeroizing<Vec<u8>>, ConfigError> {
                let psk = self.find_secret(secrets, lid, remote_id.as_ref().map(|r| &r.0))?;
                psk.ok_or_else(|| {
                    self.err(
                        here(),
                        key.clone(),
                        format!(
                            "no [secrets.*] with id {:?}{} (PSK authentication needs one)",
                            lid,
                            remote_id
                                .as_ref()
                                .map(|r| format!(" or {:?}", r.0))
                                .unwrap_or_default()
                        ),
                    )
                })
            };
            let auth_of = |e: &Option<RawEnd>, which: &str| -> Result<AuthKind, ConfigError> {
                let a = e.as_ref().and_then(|e| e.auth.as_ref());
                match a {
                    Some(a) => self.parse_str(a, &k(&format!("{which}.auth")), parse_auth),
                    None => Ok(AuthKind::Psk),
                }
            };
            let local_kind = auth_of(&rc.local, "local")?;
            let remote_kind = auth_of(&rc.remote, "remote")?;
            fn eap_id(e: &Option<RawEnd>) -> Option<&S<String>> {
                e.as_ref().and_then(|e| e.eap_id.as_ref())
            }
            if let (Some(v), false) = (eap_id(&rc.local), matches!(local_kind, AuthKind::Eap(_))) {
                return Err(self.err(
                    v.span(),
                    k("local.eap_id"),
                    "is for local.auth = \"eap-mschapv2\"",
                ));
            }
            if let (Some(v), false) = (eap_id(&rc.remote), matches!(remote_kind, AuthKind::Eap(_)))
            {
                return Err(self.err(
                    v.span(),
                    k("remote.eap_id"),
                    "is for remote.auth = \"eap-mschapv2\"",
                ));
            }
            let (local_pubkey, rsa_pss) = match local_kind {
                AuthKind::Pubkey { rsa_pss } => (true, rsa_pss),
                _ => (false, false),
            };
            let remote_pubkey = matches!(remote_kind, AuthKind::Pubkey { .. });
            let mut local_id = local_id;
            let mut cert_choices = Vec::new();
            let local_tls = local_kind == AuthKind::Eap(crate::ike::auth::EapMethod::Tls);
            let tls_eap_id = match eap_id(&rc.local) {
                Some(v) if local_tls => {
                    let t = v.get_ref();
                    if t.is_empty() || t.len() > crate::ike::auth::eap::MAX_IDENTITY {
                        return Err(self.err(
                            v.span(),
                            k("local.eap_id"),
                            "an EAP identity is 1 to 255 bytes",
                        ));
                    }
                    Some(t.clone().into_bytes())
                }
                _ => None,
            };
            let local_auth = if let (AuthKind::Eap(method), false) = (local_kind, local_tls) {
                let id_text = match eap_id(&rc.local) {
                    Some(v) => {
                        let t = v.get_ref();
                        if t.is_empty() || t.len() > crate::ike::auth::eap::MAX_IDENTITY {
                            return Err(self.err(
                                v.span(),
                                k("local.eap_id"),
                                "an EAP identity is 1 to 255 bytes",
                            ));
                        }
                        Some(t.clone())
                    }
                    None => None,
                };
                let lookup = id_text.clone().unwrap_or_else(|| local_id.0.clone());
                let auth_span = rc
                    .local
                    .as_ref()
                    .and_then(|e| e.auth.as_ref())
                    .map_or_else(here, S::span);
                let secret = self.find_eap_secret(secrets, &lookup)?.ok_or_else(|| {
                    self.err(
                        auth_span,
                        k("local.auth"),
                        format!("no [secrets.eap-*] with id {lookup:?} (EAP needs the password)"),
                    )
                })?;
                LocalAuth::Eap {
                    method,
                    identity: id_text.map(String::into_bytes),
                    secret,
                    tls: None,
                }
            } else if local_pubkey || local_tls {
                let end = rc.local.as_ref();
                let certs =
                    self.load_files(end.and_then(|e| e.certs.as_ref()), &k("local.certs"), |b| {
                        crate::ike::auth::cert::certs_from_pem_or_der(b)
                    })?;
                let certs: Vec<Vec<u8>> = certs.into_iter().flatten().collect();
                cert_choices = self.cert_choices(&certs, &keys, rc, authorities, &local_id, &k)?;
                let certs = cert_choices.first().map_or(certs, |c| c.certs.clone());
                let pubkeys = self.load_files(
                    end.and_then(|e| e.pubkeys.as_ref()),
                    &k("local.pubkeys"),
                    spki_from_pem_or_der,
                )?;
                let public = match (certs.first(), pubkeys.first()) {
                    (Some(c), _) => crate::ike::auth::cert::public_key_bits(c),
                    (None, Some(p)) => crate::ike::auth::PublicKey::from_spki(p)
                        .ok()
                        .map(|k| k.raw),
                    (None, None) => {
                        return Err(self.err(
                            here(),
                            k("local.certs"),
                            if local_tls {
                                "local.auth = \"eap-tls\" needs local.certs (the client certificate)"
                            } else {
                                "local.auth = \"pubkey\" needs local.certs (or local.pubkeys)"
                            },
                        ));
                    }
                };
                let Some((_, key)) = keys
                    .iter()
                    .find(|(_, key)| Some(key.public_key()) == public.as_deref())
                else {
                    return Err(self.err(
                        here(),
                        k("local.certs"),
                        "no [secrets.private-*] file holds the private key of this certificate or public key",
                    ));
                };
                // A local.id DN that names the certificate's subject is sent in the
                // certificate's own encoding (its string types), so that a peer comparing
                // bytes sees the subject.
                if let Some(c) = certs.first() {
                    if local_id.1.id_type == crate::wire::IdType::DerAsn1Dn {
                        if let Some(subject) = crate::ike::auth::cert::subject_id(c) {
                            if crate::ike::auth::cert::dn_matches(&subject.data, &local_id.1.data)
                                && !crate::ike::auth::cert::dn_has_wildcards(&local_id.1.data)
                            {
                                local_id.1 = subject;
                            }
                        }
                    }
                }
                // With a certificate and no local.id, the identity is its subject DN.
                if rc.local.as_ref().and_then(|e| e.id.as_ref()).is_none() {
                    if let Some(id) = certs
                        .first()
                        .and_then(|c| crate::ike::auth::cert::subject_id(c))
                    {
                        let text =
                            crate::ike::auth::cert::subject_of(&certs[0]).unwrap_or_default();
                        local_id = (text, id);
                    }
                }
                LocalAuth::Pubkey {
                    key: Arc::clone(key),
                    certs,
                    rsa_pss,
                }
            } else {
                LocalAuth::Psk(psk(&local_id.0)?)
            };
            let remote_tls = remote_kind == AuthKind::Eap(crate::ike::auth::EapMethod::Tls);
            let tls13_indication =
                match rc.remote.as_ref().and_then(|e| e.tls13_indication.as_ref()) {
                    Some(v) if !remote_tls => {
                        return Err(self.err(
                            v.span(),
                            k("remote.tls13_indication"),
                            "is for remote.auth = \"eap-tls\"",
                        ));
                    }
                    Some(v) => *v.get_ref(),
                    None => false,
                };
            let ask_identity = match eap_id(&rc.remote) {
                Some(v) if v.get_ref() == "%any" => true,
                Some(v) => {
                    return Err(self.err(
                        v.span(),
                        k("remote.eap_id"),
                        format!("{:?}: remote.eap_id is %any (ask the peer for its EAP identity) or unset (its IKE identity)", v.get_ref()),
                    ));
                }
                None => false,
            };
            let remote_auth = if let (AuthKind::Eap(method), false) = (remote_kind, remote_tls) {
                let users = self.eap_users(secrets)?;
                if users.is_empty() {
                    return Err(self.err(
                        here(),
                        k("remote.auth"),
                        "remote.auth = \"eap-mschapv2\" needs [secrets.eap-*] users (id and secret)",
                    ));
                }
                RemoteAuth::Eap {
                    method,
                    users: Arc::new(users),
                    ask_identity,
                    tls: None,
                    tls13_indication: false,
                }
            } else if remote_pubkey || remote_tls {
                let end = rc.remote.as_ref();
                let mut cas: Vec<Vec<u8>> = self
                    .load_files(
                        end.and_then(|e| e.cacerts.as_ref()),
                        &k("remote.cacerts"),
                        crate::ike::auth::cert::certs_from_pem_or_der,
                    )?
                    .into_iter()
                    .flatten()
                    .collect();
                let mut crls: Vec<Vec<u8>> = self
                    .load_files(
                        end.and_then(|e| e.crls.as_ref()),
                        &k("remote.crls"),
                        crate::ike::auth::TrustStore::crls_from_pem_or_der,
                    )?
                    .into_iter()
                    .flatten()
                    .collect();
                if cas.is_empty() {
                    for (an, a) in &authorities.0 {
                        let ak = format!("authorities.{an}");
                        let c = self.load_files(
                            Some(&vec![a.cacert.clone()]),
                            &format!("{ak}.cacert"),
                            crate::ike::auth::cert::certs_from_pem_or_der,
                        )?;
                        cas.extend(c.into_iter().flatten());
                        let l = self.load_files(
                            a.crls.as_ref(),
                            &format!("{ak}.crls"),
                            crate::ike::auth::TrustStore::crls_from_pem_or_der,
                        )?;
                        crls.extend(l.into_iter().flatten());
                    }
                }
                let pubkeys = self.load_files(
                    end.and_then(|e| e.pubkeys.as_ref()),
                    &k("remote.pubkeys"),
                    spki_from_pem_or_der,
                )?;
                if remote_tls && cas.is_empty() {
                    return Err(self.err(
                        here(),
                        k("remote.cacerts"),
                        "remote.auth = \"eap-tls\" needs remote.cacerts (or [authorities]): the CAs of the client certificates",
                    ));
                }
                if cas.is_empty() && pubkeys.is_empty() {
                    return Err(self.err(
                        here(),
                        k("remote.cacerts"),
                        "remote.auth = \"pubkey\" needs remote.cacerts, an [authorities.*] section or remote.pubkeys",
                    ));
                }
                let store = crate::ike::auth::TrustStore::new(&cas, &crls, &pubkeys)
                    .map_err(|m| self.err(here(), k("remote.cacerts"), m))?;
                RemoteAuth::Pubkey(Arc::new(store))
            } else {
                RemoteAuth::Psk(psk(&local_id.0)?)
            };
            // EAP-TLS: our certificate and key as for pubkey; the gateway's TLS
            // certificate is checked against the CAs that check its IKE certificate.
            let local_auth = match (local_tls, local_auth) {
                (true, LocalAuth::Pubkey { key, certs, .. }) => {
                    let RemoteAuth::Pubkey(trust) = &remote_auth else {
                        return Err(self.err(
                            here(),
                            k("remote.auth"),
                            "local.auth = \"eap-tls\" needs remote.auth = \"pubkey\" with remote.cacerts (or [authorities]): the gateway's TLS certificate is checked against them",
                        ));
                    };
                    if !trust.has_cas() {
                        return Err(self.err(
                            here(),
                            k("remote.cacerts"),
                            "local.auth = \"eap-tls\" needs remote.cacerts (or [authorities]) for the gateway's TLS certificate",
                        ));
                    }
                    LocalAuth::Eap {
                        method: crate::ike::auth::EapMethod::Tls,
                        identity: tls_eap_id,
                        secret: Zeroizing::default(),
                        tls: Some(Arc::new(crate::ike::auth::eap_tls::EapTlsCreds {
                            key,
                            certs,
                            trust: Arc::clone(trust),
                        })),
                    }
                }
                (_, a) => a,
            };
            // EAP-TLS as the gateway: our IKE certificate and key are our TLS server's;
            // the client's certificate is checked against remote.cacerts.
            let remote_auth = match (remote_tls, remote_auth) {
                (true, RemoteAuth::Pubkey(trust)) => {
                    let LocalAuth::Pubkey { key, certs, .. } = &local_auth else {
                        return Err(self.err(
                            here(),
                            k("local.auth"),
                            "remote.auth = \"eap-tls\" needs local.auth = \"pubkey\" with local.certs: the gateway's certificate is its TLS certificate too",
                        ));
                    };
                    if certs.is_empty() {
                        return Err(self.err(
                            here(),
                            k("local.certs"),
                            "remote.auth = \"eap-tls\" needs local.certs (the gateway's TLS certificate), not a raw public key",
                        ));
                    }
                    RemoteAuth::Eap {
                        method: crate::ike::auth::EapMethod::Tls,
                        users: Arc::new(crate::ike::auth::EapUsers::default()),
                        ask_identity,
                        tls: Some(Arc::new(crate::ike::auth::eap_tls::EapTlsCreds {
                            key: Arc::clone(key),
                            certs: certs.clone(),
                            trust,
                        })),
                        tls13_indication,
                    }
                }
                (_, a) => a,
            };
            if rc.children.0.is_empty() {
                return Err(self.err(
                    here(),
                    k("children"),
                    "a connection needs at least one child",
                ));
            }
            let time = |v: &Option<S<RawDuration>>, key: String| -> Result<_, ConfigError> {
                let Some(v) = v else {
                    return Ok((None, false));
                };
                let r = match v.get_ref() {
                    RawDuration::Secs(n) => u64::try_from(*n)
                        .map(|n| (n > 0).then(|| Duration::from_secs(n)))
                        .map_err(|_| format!("{n}: a time cannot be negative")),
                    RawDuration::Text(t) => parse_duration(t),
                };
                r.map(|d| (d, true)).map_err(|m| self.err(v.span(), key, m))
            };
            // `dynamic` (and unset selectors): any address of the families in use; a
            // responder narrows the peer's to the virtual IPs it assigns.
            let dynamic = |v6: bool| {
                let mut v = vec![TrafficSelector::ipv4_any()];
                if v6 {
                    v.push(TrafficSelector::ipv6_any());
                }
                v
            };
            let mut children = Vec::new();
            for (child_name, ch) in &rc.children.0 {
                let ck = |f: &str| k(&format!("children.{child_name}.{f}"));
                self.name(
                    child_name,
                    || self.table_span("connections", &format!("{name}.children.{child_name}")),
                    &k(&format!("children.{child_name}")),
                    "child",
                )?;
                let ts = |v: &Strings, f: &str, v6: bool| -> Result<_, ConfigError> {
                    match v {
                        Some(v) if !v.iter().all(|x| x.get_ref() == "dynamic") => {
                            self.strings(v, &ck(f), parse_ts)
                        }
                        _ => Ok(dynamic(v6)),
                    }
                };
                let local_ts = ts(&ch.local_ts, "local_ts", vip6)?;
                let remote_ts = ts(&ch.remote_ts, "remote_ts", pool6)?;
                let esp = match &ch.esp_proposals {
                    Some(v) if !v.is_empty() => {
                        self.strings(v, &ck("esp_proposals"), parse_esp_proposal)?
                    }
                    _ => vec![
                        parse_esp_proposal("default")
                            .map_err(|m| self.err(here(), key.clone(), m))?,
                    ],
                };
                let mode = match &ch.mode {
                    Some(m) => self.parse_str(m, &ck("mode"), |t| match t {
                        "tunnel" => Ok(Mode::Tunnel),
                        "transport" => Ok(Mode::Transport),
                        _ => Err(format!("{t:?}: mode is tunnel or transport")),
                    })?,
                    None => Mode::Tunnel,
                };
                let policy = match &ch.policy {
                    Some(p) => self.parse_str(p, &ck("policy"), |t| t.parse())?,
                    None => mifsec_dataplane::sa_table::Policy::Failover,
                };
                let interfaces = match &ch.interfaces {
                    Some(v) => self.strings(v, &ck("interfaces"), |t| {
                        if engine.interfaces.iter().any(|i| i.name == t) {
                            Ok(t.to_string())
                        } else {
                            Err(format!("{t:?} is no [interfaces.*] name"))
                        }
                    })?,
                    None => Vec::new(),
                };
                // swanctl.conf defaults: child rekey 1h, hard limit 10% later, rand_time the
                // difference.
                let (rekey, set) = time(&ch.rekey_time, ck("rekey_time"))?;
                let rekey = if set {
                    rekey
                } else {
                    Some(Duration::from_secs(3600))
                };
                let life = time(&ch.life_time, ck("life_time"))?;
                let life = if life.1 {
                    life.0
                } else {
                    rekey.map(|r| r + r / 10)
                };
                let rand = time(&ch.rand_time, ck("rand_time"))?;
                let rand = if rand.1 {
                    rand.0.unwrap_or_default()
                } else {
                    life.zip(rekey)
                        .map(|(l, r)| l.saturating_sub(r))
                        .unwrap_or_default()
                };
                if let (Some(l), Some(r)) = (life, rekey) {
                    if l <= r {
                        let span = ch.life_time.as_ref().map_or_else(here, S::span);
                        return Err(self.err(
                            span,
                            ck("life_time"),
                            "must be later than rekey_time (the hard limit follows the rekey)",
                        ));
                    }
                }
                // Volume limits (swanctl.conf): off unless set; the hard limit defaults to 110%
                // of the soft one, the jitter to their difference.
                let amount = |v: &Option<S<RawDuration>>, key: String| -> Result<_, ConfigError> {
                    let Some(v) = v else {
                        return Ok((None, false));
                    };
                    let r = match v.get_ref() {
                        RawDuration::Secs(n) => u64::try_from(*n)
                            .map(|n| (n > 0).then_some(n))
                            .map_err(|_| format!("{n}: a count cannot be negative")),
                        RawDuration::Text(t) => parse_amount(t),
                    };
                    r.map(|d| (d, true)).map_err(|m| self.err(v.span(), key, m))
                };
                let mut volume = Vec::new();
                for (rekey, life, rand, what) in [
                    (&ch.rekey_bytes, &ch.life_bytes, &ch.rand_bytes, "bytes"),
                    (
                        &ch.rekey_packets,
                        &ch.life_packets,
                        &ch.rand_packets,
                        "packets",
                    ),
                ] {
                    let soft = amount(rekey, ck(&format!("rekey_{what}")))?.0;
                    let (hard, set) = amount(life, ck(&format!("life_{what}")))?;
                    let hard = if set {
                        hard
                    } else {
                        soft.map(|r| r.saturating_add(r / 10))
                    };
                    if let (Some(l), Some(r)) = (hard, soft) {
                        if l <= r {
                            let span = life.as_ref().map_or_else(here, S::span);
                            return Err(self.err(
                                span,
                                ck(&format!("life_{what}")),
                                format!(
                                    "must be more than rekey_{what} (the hard limit follows the rekey)"
                                ),
                            ));
                        }
                    }
                    let (jitter, set) = amount(rand, ck(&format!("rand_{what}")))?;
                    let jitter = if set {
                        jitter.unwrap_or(0)
                    } else {
                        hard.zip(soft).map(|(l, r)| l - r).unwrap_or(0)
                    };
                    volume.push((soft, hard, jitter));
                }
                children.push(ChildConfig {
                    name: child_name.clone(),
                    proposals: esp,
                    local_ts,
                    remote_ts,
                    mode,
                    lifetimes: Some(ChildLifetimes {
                        rekey,
                        life,
                        rand,
                        rekey_bytes: volume[0].0,
                        life_bytes: volume[0].1,
                        rand_bytes: volume[0].2,
                        rekey_packets: volume[1].0,
                        life_packets: volume[1].1,
                        rand_packets: volume[1].2,
                    }),
                    mif_accept: ch.mif_accept.unwrap_or(true),
                    policy,
                    interfaces,
                });
            }
            // swanctl.conf defaults: IKE rekey 4h; hard limit 10% later; rand_time the
            // difference.
            let (ike_rekey, set) = time(&rc.rekey_time, k("rekey_time"))?;
            let ike_rekey = if set {
                ike_rekey
            } else {
                Some(Duration::from_secs(4 * 3600))
            };
            let ike_over = time(&rc.over_time, k("over_time"))?;
            let ike_life = time(&rc.life_time, k("life_time"))?;
            let ike_life = if ike_life.1 {
                ike_life.0
            } else if ike_over.1 {
                ike_rekey.zip(ike_over.0).map(|(r, o)| r + o)
            } else {
                ike_rekey.map(|r| r + r / 10)
            };
            let ike_rand = time(&rc.rand_time, k("rand_time"))?;
            let ike_rand = if ike_rand.1 {
                ike_rand.0.unwrap_or_default()
            } else {
                ike_life
                    .zip(ike_rekey)
                    .map(|(l, r)| l.saturating_sub(r))
                    .unwrap_or_default()
            };
            if let (Some(l), Some(r)) = (ike_life, ike_rekey) {
                if l <= r {
                    return Err(self.err(
                        here(),
                        k("life_time"),
                        "must be later than rekey_time (the hard limit follows the rekey)",
                    ));
                }
            }
            let first = children.remove(0);
            let fl = first.lifetimes.unwrap_or_default();
            let lifetimes = Lifetimes {
                ike_rekey,
                ike_life,
                ike_rand,
                child_rekey: fl.rekey,
                child_life: fl.life,
                child_rand: fl.rand,
                child_rekey_bytes: fl.rekey_bytes,
                child_life_bytes: fl.life_bytes,
                child_rand_bytes: fl.rand_bytes,
                child_rekey_packets: fl.rekey_packets,
                child_life_packets: fl.life_packets,
                child_rand_packets: fl.rand_packets,
            };
            let action = match &rc.dpd_action {
                Some(a) => self.parse_str(a, &k("dpd_action"), |t| match t {
                    "clear" | "none" => Ok(DpdAction::Clear),
                    "restart" => Ok(DpdAction::Restart),
                    _ => Err(format!("{t:?}: dpd_action is clear or restart")),
                })?,
                None => DpdAction::Clear,
            };
            let fragmentation = match &rc.fragmentation {
                Some(f) => self.parse_str(f, &k("fragmentation"), |t| match t {
                    "yes" => Ok(true),
                    "no" => Ok(false),
                    _ => Err(format!("{t:?}: fragmentation is yes or no")),
                })?,
                None => true,
            };
            let fragment_size = match &rc.fragment_size {
                Some(v) => self.int(v, &k("fragment_size"), frag_range.0, frag_range.1)? as u16,
                None => default_fragment_size,
            };
            let dpd = DpdConfig {
                delay: time(&rc.dpd_delay, k("dpd_delay"))?.0,
                action,
            };
            let dr = RoamConfig::default();
            let roam = RoamConfig {
                check_delay: match &rc.path_check_delay {
                    Some(_) => time(&rc.path_check_delay, k("path_check_delay"))?.0,
                    None => dr.check_delay,
                },
                check_interval: time(&rc.path_check_interval, k("path_check_interval"))?
                    .0
                    .unwrap_or(dr.check_interval),
                check_tries: match &rc.path_check_tries {
                    Some(v) => self.int(v, &k("path_check_tries"), 1, 20)? as u32,
                    None => dr.check_tries,
                },
                prefer_best_path: rc.prefer_best_path.unwrap_or(dr.prefer_best_path),
            };
            let mif_on_new = match &rc.mif_on_new {
                Some(a) => self.parse_str(a, &k("mif_on_new"), |t| match t {
                    "add" => Ok(MifOnNew::Add),
                    "alternate" => Ok(MifOnNew::Alternate),
                    "ignore" => Ok(MifOnNew::Ignore),
                    _ => Err(format!("{t:?}: mif_on_new is add, alternate or ignore")),
                })?,
                None => MifOnNew::Add,
            };
            let mif_max_interfaces = match &rc.mif_max_interfaces {
                Some(v) => self.int(v, &k("mif_max_interfaces"), 1, 64)? as u16,
                None => 16,
            };
            let mif_max_paths = match &rc.mif_max_paths {
                Some(v) => self.int(v, &k("mif_max_paths"), 1, 64)? as u16,
                None => 16,
            };
            let mut child_names = vec![first.name.clone()];
            child_names.extend(children.iter().map(|c| c.name.clone()));
            let mut clone_children = Vec::new();
            for v in rc.clone_children.iter().flatten() {
                let n = v.get_ref();
                if !child_names.contains(n) || *n == first.name {
                    return Err(self.err(
                        v.span(),
                        k("clone_children"),
                        format!("{n:?} is not a child of this connection after its first"),
                    ));
                }
                clone_children.push(n.clone());
            }
            out.connections.push(Connection {
                name: name.clone(),
                local_addrs,
                remote_addrs: remote_addrs.clone(),
                start,
                children: child_names,
                vips: vip4 || vip6,
                pools: pool_names,
                clone_per_interface: rc.clone_per_interface.unwrap_or(false),
                ike: IkeConfig {
                    local_id: local_id.1,
                    remote_id: remote_id.map(|r| r.1),
                    local_auth,
                    remote_auth,
                    cert_choices,
                    proposals,
                    child: first,
                    more_children: children,
                    request_vip: vip4,
                    request_vip6: vip6,
                    pools: pool_list,
                    mobike: rc.mobike.unwrap_or(true),
                    mobike_peers: remote_addrs,
                    clone_ike_sa: rc.clone.unwrap_or(true),
                    clone_children,
                    nat_t_port: Some(4500),
                    force_encap: rc.encap.unwrap_or(true),
                    fragmentation,
                    fragment_size,
                    retransmit: RetransmitConfig::default(),
                    lifetimes,
                    dpd,
                    roam,
                    mif_on_new,
                    mif_prefer: rc.mif_prefer.unwrap_or(false),
                    mif: rc.mif.unwrap_or(true),
                    mif_max_interfaces,
                    mif_max_paths,
                },
            });
        }
        Ok(out)
    }

    /// The certificates `local.certs` offers: with one end-entity certificate, none (the
    /// files' certificates are sent as they are); with several, each with the
    /// intermediates (CA certificates of `local.certs`) on its path, its private key, and
    /// the CERTREQ hashes that pick it: those intermediates' and that of the CA
    /// certificate (of `remote.cacerts` and `[authorities]`) that issued the top of its
    /// path. Several need a `local.id` that every one of them names.
    fn cert_choices(
        &self,
        certs: &[Vec<u8>],
        keys: &[(String, Arc<PrivateKey>)],
        rc: &RawConnection,
        authorities: &Ordered<RawAuthority>,
        local_id: &(String, IdPayload),
        k: &dyn Fn(&str) -> String,
    ) -> Result<Vec<crate::ike::auth::CertChoice>, ConfigError> {
        use crate::ike::auth::cert;
        let (ees, cas): (Vec<&Vec<u8>>, Vec<&Vec<u8>>) =
            certs.iter().partition(|c| !cert::is_ca(c));
        if ees.len() < 2 {
            return Ok(Vec::new());
        }
        let end = rc.local.as_ref();
        let span = end
            .and_then(|e| e.certs.as_ref())
            .and_then(|v| v.first())
            .map_or(0..0, S::span);
        if end.and_then(|e| e.id.as_ref()).is_none() {
            return Err(self.err(
                span,
                k("local.id"),
                "local.certs with several end-entity certificates needs a local.id that each of them names",
            ));
        }
        // The CA certificates we know, to find the hash of each path's top issuer.
        let mut known: Vec<Vec<u8>> = cas.iter().map(|c| c.to_vec()).collect();
        let remote_cas = rc.remote.as_ref().and_then(|e| e.cacerts.as_ref());
        for c in self.load_files(
            remote_cas,
            &k("remote.cacerts"),
            cert::certs_from_pem_or_der,
        )? {
            known.extend(c);
        }
        for (an, a) in &authorities.0 {
            let c = self.load_files(
                Some(&vec![a.cacert.clone()]),
                &format!("authorities.{an}.cacert"),
                cert::certs_from_pem_or_der,
            )?;
            known.extend(c.into_iter().flatten());
        }
        let mut out = Vec::new();
        for ee in ees {
            let subject = cert::subject_of(ee).unwrap_or_default();
            if !cert::der_names(ee, &local_id.1) {
                return Err(self.err(
                    span.clone(),
                    k("local.certs"),
                    format!(
                        "certificate '{subject}' does not name local.id {:?}",
                        local_id.0
                    ),
                ));
            }
            let public = cert::public_key_bits(ee);
            let Some((_, key)) = keys
                .iter()
                .find(|(_, key)| Some(key.public_key()) == public.as_deref())
            else {
                return Err(self.err(
                    span.clone(),
                    k("local.certs"),
                    format!("no [secrets.private-*] file holds the private key of certificate '{subject}'"),
                ));
            };
            let mut chain = vec![ee.clone()];
            let mut ca_hashes = Vec::new();
            while chain.len() <= cert::MAX_CHAIN {
                let Some((issuer, subj)) = chain.last().and_then(|c| cert::issuer_and_subject(c))
                else {
                    break;
                };
                if issuer == subj {
                    break; // self-signed: the path ends here
                }
                // The issuer: an intermediate of local.certs goes into the chain.
                if let Some(im) = cas.iter().find(|c| {
                    !chain.contains(c)
                        && cert::issuer_and_subject(c).is_some_and(|(_, s)| s == issuer)
                }) {
                    ca_hashes.extend(cert::key_hash(im));
                    chain.push(im.to_vec());
                    continue;
                }
                ca_hashes.extend(
                    known
                        .iter()
                        .filter(|c| cert::issuer_and_subject(c).is_some_and(|(_, s)| s == issuer))
                        .filter_map(|c| cert::key_hash(c)),
                );
                break;
            }
            out.push(crate::ike::auth::CertChoice {
                key: Arc::clone(key),
                certs: chain,
                ca_hashes,
                subject,
            });
        }
        Ok(out)
    }

    /// The private keys of `[secrets.private-NAME]` (also `rsa-`, `ecdsa-`, `pkcs8-`, as
    /// swanctl names them), each from its `file`.
    fn private_keys(
        &self,
        secrets: &Ordered<RawSecret>,
    ) -> Result<Vec<(String, Arc<PrivateKey>)>, ConfigError> {
        let mut out = Vec::new();
        for (name, s) in &secrets.0 {
            let is_key = ["private-", "rsa-", "ecdsa-", "pkcs8-"]
                .iter()
                .any(|p| name.starts_with(p));
            let key = format!("secrets.{name}");
            match (&s.file, is_key) {
                (Some(f), true) => {
                    // With `secret`: the passphrase of an encrypted PKCS#8 key.
                    let pass = s.secret.as_ref();
                    let span = pass.map_or_else(|| f.span(), S::span);
                    let k = self
                        .load_files(Some(&vec![f.clone()]), &format!("{key}.file"), |b| {
                            // Outer errors are the file's, inner ones the secret's.
                            match (PrivateKey::is_encrypted(b), pass) {
                                (false, None) => PrivateKey::from_pem_or_der(b).map(Ok),
                                (true, None) => Err(
                                    "an encrypted key: its passphrase goes in secret = \"...\""
                                        .to_owned(),
                                ),
                                (false, Some(_)) => Ok(Err(
                                    "secret is the passphrase of an encrypted key, and this key is not encrypted"
                                        .to_owned(),
                                )),
                                (true, Some(p)) => {
                                    match PrivateKey::from_encrypted(b, p.get_ref().as_bytes()) {
                                        Ok(k) => Ok(Ok(k)),
                                        Err(m) if m.starts_with("wrong passphrase") => Ok(Err(m)),
                                        Err(m) => Err(m),
                                    }
                                }
                            }
                        })?
                        .pop()
                        .expect("one file")
                        .map_err(|m| {
                            self.err(span, format!("{key}.secret"), format!("{}: {m}", f.get_ref()))
                        })?;
                    out.push((name.clone(), Arc::new(k)));
                }
                (None, true) => {
                    return Err(self.err(
                        self.table_span("secrets", name),
                        format!("{key}.file"),
                        "a private key secret needs file = \"PATH\"",
                    ));
                }
                (Some(f), false) => {
                    return Err(self.err(
                        f.span(),
                        format!("{key}.file"),
                        "file is for [secrets.private-NAME] (a private key)",
                    ));
                }
                (None, false) => {
                    if s.id.is_none() || s.secret.is_none() {
                        return Err(self.err(
                            self.table_span("secrets", name),
                            key,
                            "a PSK secret needs id and secret",
                        ));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Reads each file (relative paths from the configuration file's folder) and parses
    /// it; an error names the file.
    fn load_files<T>(
        &self,
        files: Option<&Vec<S<String>>>,
        key: &str,
        parse: impl Fn(&[u8]) -> Result<T, String>,
    ) -> Result<Vec<T>, ConfigError> {
        let mut out = Vec::new();
        for (i, f) in files.into_iter().flatten().enumerate() {
            let name = f.get_ref();
            let path = std::path::Path::new(self.file)
                .parent()
                .unwrap_or(std::path::Path::new(""))
                .join(name);
            let k = format!("{key}[{i}]");
            let meta = std::fs::metadata(&path)
                .map_err(|e| self.err(f.span(), &k, format!("{}: {e}", path.display())))?;
            if meta.len() > 1 << 20 {
                return Err(self.err(
                    f.span(),
                    &k,
                    format!("{}: larger than 1 MiB", path.display()),
                ));
            }
            let bytes = Zeroizing::new(
                std::fs::read(&path)
                    .map_err(|e| self.err(f.span(), &k, format!("{}: {e}", path.display())))?,
            );
            out.push(
                parse(&bytes)
                    .map_err(|m| self.err(f.span(), &k, format!("{}: {m}", path.display())))?,
            );
        }
        Ok(out)
    }

    /// A warning for each secret shorter than [`MIN_PSK_LEN`](super::MIN_PSK_LEN) bytes.
    pub(super) fn secret_warnings(&self, secrets: &Ordered<RawSecret>) -> Vec<String> {
        let mut out = Vec::new();
        for (name, s) in &secrets.0 {
            let Some(secret) = s.secret.as_ref().filter(|_| s.file.is_none()) else {
                continue;
            };
            let text = secret.get_ref();
            let len = match text.strip_prefix("0x") {
                Some(h) if h.len() % 2 == 0 && h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    h.len() / 2
                }
                _ => text.len(),
            };
            if len < super::MIN_PSK_LEN {
                let line = super::line_of(self.text.as_bytes(), secret.span().start);
                out.push(format!(
                    "{}:{line}: secrets.{name}.secret: a PSK of {len} bytes is short; use at \
                     least {} random bytes",
                    self.file,
                    super::MIN_PSK_LEN
                ));
            }
        }
        out
    }

    /// The PSK of the secret that names the most of `local` and `remote` among its ids.
    /// A `[secrets.eap-NAME]` secret's bytes (`0x...` hex or the text).
    fn secret_bytes(
        &self,
        name: &str,
        s: &RawSecret,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ConfigError> {
        let Some(secret) = &s.secret else {
            return Ok(None);
        };
        let text = secret.get_ref();
        let key = format!("secrets.{name}.secret");
        let bytes = if let Some(h) = text.strip_prefix("0x") {
            Zeroizing::new(
                hex::decode(h)
                    .map_err(|_| self.err(secret.span(), &key, "0x... must be hex digits"))?,
            )
        } else {
            Zeroizing::new(text.as_bytes().to_vec())
        };
        if bytes.is_empty() {
            return Err(self.err(secret.span(), key, "a secret cannot be empty"));
        }
        Ok(Some(bytes))
    }

    /// The password of EAP identity `id` from `[secrets.eap-*]`.
    fn find_eap_secret(
        &self,
        secrets: &Ordered<RawSecret>,
        id: &str,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ConfigError> {
        for (name, s) in &secrets.0 {
            let hit = name.starts_with("eap-")
                && s.id
                    .as_ref()
                    .is_some_and(|ids| ids.get_ref().iter().any(|i| i.get_ref() == id));
            if hit {
                return self.secret_bytes(name, s);
            }
        }
        Ok(None)
    }

    /// Every `[secrets.eap-*]` as the users of an EAP gateway.
    fn eap_users(&self, secrets: &Ordered<RawSecret>) -> Result<EapUsers, ConfigError> {
        let mut users = EapUsers::default();
        for (name, s) in &secrets.0 {
            if !name.starts_with("eap-") {
                continue;
            }
            let key = format!("secrets.{name}");
            let Some(ids) = &s.id else {
                return Err(self.err(
                    self.table_span("secrets", name),
                    format!("{key}.id"),
                    "an EAP secret needs id = [\"USER\"]",
                ));
            };
            let Some(secret) = self.secret_bytes(name, s)? else {
                return Err(self.err(
                    self.table_span("secrets", name),
                    format!("{key}.secret"),
                    "an EAP secret needs secret = \"PASSWORD\"",
                ));
            };
            users.add(
                ids.get_ref()
                    .iter()
                    .map(|i| i.get_ref().as_bytes().to_vec())
                    .collect(),
                secret,
            );
        }
        Ok(users)
    }

    fn find_secret(
        &self,
        secrets: &Ordered<RawSecret>,
        local: &str,
        remote: Option<&String>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ConfigError> {
        let mut best: Option<(usize, &RawSecret, &str)> = None;
        for (name, s) in &secrets.0 {
            if name.starts_with("eap-") {
                continue;
            }
            let (Some(id), Some(_), None) = (&s.id, &s.secret, &s.file) else {
                continue;
            };
            let ids = id.get_ref();
            let score = ids.iter().filter(|i| i.get_ref() == local).count().min(1)
                + ids
                    .iter()
                    .filter(|i| Some(i.get_ref()) == remote)
                    .count()
                    .min(1);
            if score > 0 && best.is_none_or(|(b, _, _)| score > b) {
                best = Some((score, s, name));
            }
        }
        let Some((_, s, name)) = best else {
            return Ok(None);
        };
        let Some(secret) = &s.secret else {
            return Ok(None);
        };
        let text = secret.get_ref();
        let key = format!("secrets.{name}.secret");
        let bytes = if let Some(h) = text.strip_prefix("0x") {
            Zeroizing::new(
                hex::decode(h)
                    .map_err(|_| self.err(secret.span(), &key, "0x... must be hex digits"))?,
            )
        } else {
            Zeroizing::new(text.as_bytes().to_vec())
        };
        if bytes.is_empty() {
            return Err(self.err(secret.span(), key, "a secret cannot be empty"));
        }
        Ok(Some(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals() {
        let p = parse_ike_proposal("aes128gcm16-prfsha256-x25519").unwrap();
        assert_eq!(p.ciphers, vec![Cipher::Aes128Gcm]);
        assert_eq!(p.prfs, vec![Prf::HmacSha256]);
        assert_eq!(p.groups, vec![DhGroup::Curve25519]);
        assert!(parse_ike_proposal("aes128gcm16-prfsha256").is_err());
        assert!(parse_ike_proposal("aes128-sha1-modp2048").is_err());
        let e = parse_esp_proposal("aes256gcm16-chacha20poly1305-esn").unwrap();
        assert_eq!(e.ciphers, vec![Cipher::Aes256Gcm, Cipher::ChaCha20Poly1305]);
        assert_eq!(e.esn, EsnPolicy::Yes);
        assert_eq!(
            parse_esp_proposal("aes128gcm16").unwrap().esn,
            EsnPolicy::No
        );
        let d = parse_esp_proposal("default").unwrap();
        assert_eq!(
            (d.ciphers, d.esn),
            (Cipher::ALL.to_vec(), EsnPolicy::Either)
        );
        assert!(d.groups.is_empty());
        let pfs = parse_esp_proposal("aes128gcm16-x25519-ecp256").unwrap();
        assert_eq!(pfs.groups, vec![DhGroup::Curve25519, DhGroup::Ecp256]);
        assert!(parse_esp_proposal("aes128gcm16").unwrap().groups.is_empty());
        assert!(parse_esp_proposal("aes128gcm16-modp2048").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse_duration("30s"), Ok(Some(Duration::from_secs(30))));
        assert_eq!(parse_duration("10m"), Ok(Some(Duration::from_secs(600))));
        assert_eq!(parse_duration("4h"), Ok(Some(Duration::from_secs(14_400))));
        assert_eq!(parse_duration("1d"), Ok(Some(Duration::from_secs(86_400))));
        assert_eq!(parse_duration("0"), Ok(None));
        assert!(parse_duration("10x").is_err());
        assert!(parse_duration("m").is_err());
    }

    /// A connection with `extra` lines in `[connections.c]` and `child` lines in its child.
    fn conn(extra: &str, child: &str) -> Result<Connection, String> {
        let text = format!(
            "[connections.c]\nremote_addrs = [\"192.0.2.1\"]\n{extra}\n\
             [connections.c.local]\nid = \"a\"\n[connections.c.remote]\nid = \"b\"\n\
             [connections.c.children.n]\n{child}\n\
             [secrets.s]\nid = [\"a\"]\nsecret = \"0123456789abcdef\"\n"
        );
        let cfg = crate::config::parse("t.toml", &text).map_err(|e| e.to_string())?;
        Ok(cfg.ike.connections.into_iter().next().unwrap())
    }

    #[test]
    fn lifetimes_and_dpd() {
        let c = conn("", "").unwrap();
        let l = c.ike.lifetimes;
        // swanctl.conf's defaults.
        assert_eq!(l.ike_rekey, Some(Duration::from_secs(14_400)));
        assert_eq!(l.ike_life, Some(Duration::from_secs(15_840)));
        assert_eq!(l.ike_rand, Duration::from_secs(1_440));
        assert_eq!(l.child_rekey, Some(Duration::from_secs(3_600)));
        assert_eq!(l.child_life, Some(Duration::from_secs(3_960)));
        assert_eq!(c.ike.dpd.delay, None);
        assert_eq!(c.ike.dpd.action, DpdAction::Clear);

        let c = conn(
            "rekey_time = \"30s\"\nover_time = 10\nrand_time = \"5s\"\ndpd_delay = \"10s\"\ndpd_action = \"restart\"",
            "rekey_time = 10\nlife_time = \"15s\"\nrand_time = 0\nesp_proposals = [\"aes128gcm16-x25519\"]",
        )
        .unwrap();
        let l = c.ike.lifetimes;
        assert_eq!(l.ike_rekey, Some(Duration::from_secs(30)));
        assert_eq!(l.ike_life, Some(Duration::from_secs(40)));
        assert_eq!(l.ike_rand, Duration::from_secs(5));
        assert_eq!(l.child_rekey, Some(Duration::from_secs(10)));
        assert_eq!(l.child_life, Some(Duration::from_secs(15)));
        assert_eq!(l.child_rand, Duration::ZERO);
        assert_eq!(c.ike.dpd.delay, Some(Duration::from_secs(10)));
        assert_eq!(c.ike.dpd.action, DpdAction::Restart);
        assert_eq!(c.ike.child.proposals[0].groups, vec![DhGroup::Curve25519]);

        // Rekeys off.
        let c = conn("rekey_time = 0", "rekey_time = 0").unwrap();
        assert_eq!(c.ike.lifetimes.ike_rekey, None);
        assert_eq!(c.ike.lifetimes.child_rekey, None);

        // MOBIKE path checks: the defaults, then set (milliseconds), then off.
        assert_eq!(c.ike.roam, RoamConfig::default());
        let c = conn(
            "path_check_delay = \"1s\"\npath_check_interval = \"150ms\"\npath_check_tries = 4\nprefer_best_path = true",
            "",
        )
        .unwrap();
        assert_eq!(c.ike.roam.check_delay, Some(Duration::from_secs(1)));
        assert_eq!(c.ike.roam.check_interval, Duration::from_millis(150));
        assert_eq!(c.ike.roam.check_tries, 4);
        assert!(c.ike.roam.prefer_best_path);
        let c = conn("path_check_delay = 0", "").unwrap();
        assert_eq!(c.ike.roam.check_delay, None);
        let e = conn("path_check_tries = 0", "").unwrap_err();
        assert!(e.contains("connections.c.path_check_tries"), "{e}");

        // MIF automatic operation and the child's acceptance.
        assert_eq!(c.ike.mif_on_new, MifOnNew::Add);
        assert!(!c.ike.mif_prefer && c.ike.child.mif_accept);
        let c = conn(
            "mif_on_new = \"alternate\"\nmif_prefer = true",
            "mif_accept = false",
        )
        .unwrap();
        assert_eq!(c.ike.mif_on_new, MifOnNew::Alternate);
        assert!(c.ike.mif_prefer && !c.ike.child.mif_accept);
        let e = conn("mif_on_new = \"drop\"", "").unwrap_err();
        assert!(e.contains("connections.c.mif_on_new"), "{e}");

        let e = conn("dpd_action = \"hold\"", "").unwrap_err();
        assert!(e.contains("connections.c.dpd_action"), "{e}");
        let e = conn("", "rekey_time = \"1y\"").unwrap_err();
        assert!(e.contains("connections.c.children.n.rekey_time"), "{e}");
        let e = conn("", "rekey_time = 20\nlife_time = 10").unwrap_err();
        assert!(e.contains("connections.c.children.n.life_time"), "{e}");
    }

    #[test]
    fn cookie_threshold() {
        let base = "[connections.c]\nremote_addrs = [\"192.0.2.1\"]\n\
             [connections.c.local]\nid = \"a\"\n[connections.c.children.n]\n\
             [secrets.s]\nid = [\"a\"]\nsecret = \"0123456789abcdef\"\n";
        let cfg = crate::config::parse("t.toml", base).unwrap();
        assert_eq!(cfg.ike.cookie_threshold, 30);
        let cfg = crate::config::parse("t.toml", &format!("[ike]\ncookie_threshold = 0\n{base}"))
            .unwrap();
        assert_eq!(cfg.ike.cookie_threshold, 0);
        let e = crate::config::parse("t.toml", &format!("[ike]\ncookie_threshold = -1\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:2: ike.cookie_threshold"), "{e}");
        let e = crate::config::parse("t.toml", &format!("[ike]\ncookie_treshold = 3\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cookie_treshold"), "{e}");
    }

    #[test]
    fn init_limits() {
        let base = "[connections.c]\nremote_addrs = [\"192.0.2.1\"]\n\
             [connections.c.local]\nid = \"a\"\n[connections.c.children.n]\n\
             [secrets.s]\nid = [\"a\"]\nsecret = \"0123456789abcdef\"\n";
        let cfg = crate::config::parse("t.toml", base).unwrap();
        assert_eq!(cfg.ike.limits, InitLimits::default());
        assert_eq!(cfg.ike.limits.block_threshold, 5);
        let cfg = crate::config::parse(
            "t.toml",
            &format!(
                "[ike]\nblock_threshold = 2\ninit_rate = 0\ninit_burst = 3\n\
                 init_limit_half_open = 64\n{base}"
            ),
        )
        .unwrap();
        assert_eq!(
            cfg.ike.limits,
            InitLimits {
                max_half_open: 64,
                block_threshold: 2,
                init_rate: 0,
                init_burst: 3
            }
        );
        let e = crate::config::parse("t.toml", &format!("[ike]\ninit_burst = 0\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:2: ike.init_burst"), "{e}");
        let e = crate::config::parse("t.toml", &format!("[ike]\nblock_threshold = -1\n{base}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.toml:2: ike.block_threshold"), "{e}");
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_amount("1000"), Ok(Some(1000)));
        assert_eq!(parse_amount("500K"), Ok(Some(500 * 1024)));
        assert_eq!(parse_amount("500k"), Ok(Some(500 * 1024)));
        assert_eq!(parse_amount("1M"), Ok(Some(1 << 20)));
        assert_eq!(parse_amount("2G"), Ok(Some(2 << 30)));
        assert_eq!(parse_amount("0"), Ok(None));
        assert!(parse_amount("1T").is_err());
        assert!(parse_amount("M").is_err());
        assert!(parse_amount("-5").is_err());
        assert!(parse_amount("99999999999G").is_err());
    }

    #[test]
    fn volume_lifetimes() {
        // Off by default.
        let l = conn("", "").unwrap().ike.lifetimes;
        assert!(!l.child_volume_limits());
        // Soft limit only: hard 110%, jitter the difference.
        let l = conn("", "rekey_bytes = \"1M\"\nrekey_packets = 1000")
            .unwrap()
            .ike
            .lifetimes;
        assert_eq!(l.child_rekey_bytes, Some(1 << 20));
        assert_eq!(l.child_life_bytes, Some((1 << 20) + (1 << 20) / 10));
        assert_eq!(l.child_rand_bytes, (1 << 20) / 10);
        assert_eq!(l.child_rekey_packets, Some(1000));
        assert_eq!(l.child_life_packets, Some(1100));
        assert_eq!(l.child_rand_packets, 100);
        assert!(l.child_volume_limits());
        // Everything given.
        let l = conn(
            "",
            "rekey_bytes = \"500K\"\nlife_bytes = 1000000\nrand_bytes = 0\n\
             life_packets = \"2K\"",
        )
        .unwrap()
        .ike
        .lifetimes;
        assert_eq!(l.child_rekey_bytes, Some(512_000));
        assert_eq!(l.child_life_bytes, Some(1_000_000));
        assert_eq!(l.child_rand_bytes, 0);
        assert_eq!(l.child_rekey_packets, None);
        assert_eq!(l.child_life_packets, Some(2048));
        // Errors name the file, the line and the key.
        let e = conn("", "rekey_bytes = \"1X\"").unwrap_err();
        assert!(
            e.contains("t.toml:9: connections.c.children.n.rekey_bytes"),
            "{e}"
        );
        let e = conn("", "rekey_bytes = 2000\nlife_bytes = 1000").unwrap_err();
        assert!(
            e.contains("t.toml:10: connections.c.children.n.life_bytes"),
            "{e}"
        );
        let e = conn("", "rekey_packets = -3").unwrap_err();
        assert!(
            e.contains("t.toml:9: connections.c.children.n.rekey_packets"),
            "{e}"
        );
        let e = conn("", "rand_packets = \"x\"").unwrap_err();
        assert!(e.contains("connections.c.children.n.rand_packets"), "{e}");
    }

    #[test]
    fn several_children() {
        let c = conn(
            "",
            "remote_ts = [\"10.88.0.0/16\"]\n\
             [connections.c.children.m]\nremote_ts = [\"10.89.0.0/16\"]\nrekey_time = 20\n\
             esp_proposals = [\"aes256gcm16-ecp256\"]\nmode = \"transport\"",
        )
        .unwrap();
        assert_eq!(c.children, vec!["n".to_owned(), "m".to_owned()]);
        assert_eq!(c.ike.child.name, "n");
        assert_eq!(
            c.ike.child.remote_ts,
            vec![ts_prefix("10.88.0.0".parse().unwrap(), 16)]
        );
        let [m] = c.ike.more_children.as_slice() else {
            panic!("one more child")
        };
        assert_eq!(m.name, "m");
        assert_eq!(
            m.remote_ts,
            vec![ts_prefix("10.89.0.0".parse().unwrap(), 16)]
        );
        assert_eq!(m.mode, Mode::Transport);
        assert_eq!(m.proposals[0].groups, vec![DhGroup::Ecp256]);
        // Each child keeps its own lifetimes; the first's are the IKE SA's defaults.
        let l = m.lifetimes.unwrap();
        assert_eq!(
            (l.rekey, l.life),
            (Some(Duration::from_secs(20)), Some(Duration::from_secs(22)))
        );
        assert_eq!(c.ike.lifetimes.child_rekey, Some(Duration::from_secs(3600)));
        assert_eq!(c.ike.child_named("m").name, "m");
        // Errors name the child.
        let e = conn("", "[connections.c.children.m]\nmode = \"beet\"").unwrap_err();
        assert!(e.contains(":10: connections.c.children.m.mode"), "{e}");
        let e = conn("", "[connections.c.children.n]\nmode = \"tunnel\"").unwrap_err();
        assert!(e.starts_with("t.toml:9:"), "a child twice: {e}");
        assert!(e.contains("duplicate"), "{e}");
        let e = conn("", "[connections.c.children.\"bad name\"]").unwrap_err();
        assert!(e.contains("connections.c.children.bad name"), "{e}");
    }

    #[test]
    fn dual_stack_pools_and_vips() {
        let pools = "[pools.p4]\naddrs = \"10.77.0.0/24\"\ndns = [\"10.88.0.53\"]\n\
                     [pools.p6]\naddrs = \"fd77::/120\"\ndns = [\"fd88::53\"]";
        let c = conn(
            "pools = [\"p4\", \"p6\"]\nvips = [\"0.0.0.0\", \"::\"]",
            &format!("local_ts = [\"10.88.0.0/16\", \"fd88::/64\"]\n{pools}"),
        )
        .unwrap();
        assert_eq!(c.pools, vec!["p4".to_owned(), "p6".to_owned()]);
        assert!(c.vips && c.ike.request_vip && c.ike.request_vip6);
        let [p4, p6] = c.ike.pools.as_slice() else {
            panic!("two pools")
        };
        assert!(!p4.is_ipv6() && p6.is_ipv6());
        assert_eq!(p4.dns(), &["10.88.0.53".parse::<IpAddr>().unwrap()]);
        assert_eq!(p6.dns(), &["fd88::53".parse::<IpAddr>().unwrap()]);
        assert_eq!(p4.lease(), Some("10.77.0.1".parse().unwrap()));
        assert_eq!(p6.lease(), Some("fd77::1".parse().unwrap()));
        // `dynamic` selectors cover both families when IPv6 is in use.
        let both = vec![TrafficSelector::ipv4_any(), TrafficSelector::ipv6_any()];
        assert_eq!(c.ike.child.local_ts.len(), 2);
        assert_eq!(c.ike.child.remote_ts, both);

        let e = conn("pools = [\"p4\", \"p4\"]", pools).unwrap_err();
        assert!(
            e.contains("connections.c.pools[1]: pool \"p4\" listed twice"),
            "{e}"
        );
        let e = conn("vips = [\"::1\"]", "").unwrap_err();
        assert!(e.contains("connections.c.vips[0]"), "{e}");
        let e = conn("", "[pools.p]\naddrs = \"fd77::/120\"\ndns = [\"x\"]").unwrap_err();
        assert!(
            e.contains("pools.p.dns[0]: \"x\" is not an IP address"),
            "{e}"
        );
    }

    #[test]
    fn identities() {
        assert_eq!(parse_id("gw").unwrap(), IdPayload::fqdn("gw"));
        assert_eq!(
            parse_id("@gw.example").unwrap(),
            IdPayload::fqdn("gw.example")
        );
        assert_eq!(parse_id("a@b.c").unwrap(), IdPayload::rfc822("a@b.c"));
        assert_eq!(
            parse_id("198.18.1.1").unwrap(),
            IdPayload::ipv4(Ipv4Addr::new(198, 18, 1, 1))
        );
        assert_eq!(parse_id("@#0102").unwrap(), IdPayload::key_id(&[1, 2]));
        assert!(parse_id("").is_err());
    }
}
