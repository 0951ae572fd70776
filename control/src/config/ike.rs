//! The IKE sections of the configuration file: `[connections.*]` (with `local`, `remote`
//! and `children.*`), `[secrets.*]` and `[pools.*]`, named and shaped like swanctl.conf.
//!
//! Each connection becomes a [`Connection`]: the addresses and start action the daemon's
//! IKE thread needs, plus a ready [`IkeConfig`] (identities, the PSK from the matching
//! secret, proposals, the child SA, the pool). The PSK goes straight into a [`Zeroizing`]
//! buffer and is never part of an error message or a `Debug` output.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
use std::sync::Arc;

use serde::Deserialize;
use zeroize::{Zeroize, Zeroizing};

use super::{ConfigError, Cx, Ordered, S};
use crate::dataplane::aead::Cipher;
use crate::dataplane::engine::EngineConfig;
use crate::ike::config::ts_prefix;
use crate::ike::{
    AddressPool, ChildConfig, EsnPolicy, EspProposal, IkeConfig, IkeProposal, Mode, Prf,
    RetransmitConfig,
};
use crate::wire::{DhGroup, IdPayload, TrafficSelector};

/// The IKE part of a configuration.
#[derive(Debug, Clone, Default)]
pub struct IkeSettings {
    /// The connections, in file order.
    pub connections: Vec<Connection>,
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
    /// The first (only) child's name.
    pub child: String,
    /// Whether a virtual IP is requested (`vips = ["0.0.0.0"]`).
    pub vips: bool,
    /// The pool leased from, by name (`pools = ["p4"]`).
    pub pool: Option<String>,
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
    start_action: Option<S<String>>,
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
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChild {
    local_ts: Strings,
    remote_ts: Strings,
    esp_proposals: Strings,
    mode: Option<S<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSecret {
    id: S<Vec<S<String>>>,
    secret: S<String>,
}

impl Drop for RawSecret {
    fn drop(&mut self) {
        self.secret.get_mut().zeroize();
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    addrs: S<String>,
}

/// Parses an identity as strongSwan does: an IP address, `@name` (FQDN), `@#hex` (key ID),
/// `user@host` (email), anything else an FQDN.
pub fn parse_id(s: &str) -> Result<IdPayload, String> {
    if s.is_empty() {
        return Err("an identity cannot be empty".into());
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

/// Parses an ESP proposal such as `aes128gcm16` or `aes256gcm16-esn`, or `default`.
pub fn parse_esp_proposal(s: &str) -> Result<EspProposal, String> {
    if s == "default" {
        return Ok(EspProposal {
            ciphers: Cipher::ALL.to_vec(),
            esn: EsnPolicy::No,
        });
    }
    let mut ciphers = Vec::new();
    let (mut esn, mut noesn) = (false, false);
    for t in s.split('-') {
        if let Some(c) = cipher_token(t) {
            push(&mut ciphers, c);
            continue;
        }
        match t {
            "esn" => esn = true,
            "noesn" => noesn = true,
            _ => {
                return Err(format!(
                    "{s:?}: unknown algorithm {t:?} (aes128gcm16, aes256gcm16, chacha20poly1305; esn, noesn; PFS groups are not supported yet)"
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
    Ok(EspProposal { ciphers, esn })
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

    /// Builds the IKE sections; `engine` has the interfaces already.
    pub(super) fn build_ike(
        &self,
        connections: &Ordered<RawConnection>,
        secrets: &Ordered<RawSecret>,
        pools: &Ordered<RawPool>,
        engine: &EngineConfig,
    ) -> Result<IkeSettings, ConfigError> {
        // Pools.
        let mut pool_map: HashMap<&str, Arc<AddressPool>> = HashMap::new();
        for (name, rp) in &pools.0 {
            let key = format!("pools.{name}.addrs");
            let pool = self.parse_str(&rp.addrs, &key, |s| {
                let ts = parse_ts(s)?;
                let TrafficSelector::Ipv4 { start, end, .. } = ts else {
                    return Err(format!("{s:?}: only IPv4 pools are supported"));
                };
                let (first, last) = (u32::from(start), u32::from(end));
                // Skip the network and broadcast addresses of ordinary subnets.
                let (first, last) = if last - first >= 3 {
                    (first + 1, last - 1)
                } else {
                    (first, last)
                };
                Ok(AddressPool::new(Ipv4Addr::from(first), last - first + 1))
            })?;
            pool_map.insert(name.as_str(), pool);
        }
        let mut out = IkeSettings::default();
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
            let vips = match &rc.vips {
                Some(v) => {
                    self.strings(v, &k("vips"), |t| match t {
                        "0.0.0.0" => Ok(()),
                        _ => Err(format!(
                            "{t:?}: only 0.0.0.0 (any IPv4 address from the gateway) is supported"
                        )),
                    })?;
                    !v.is_empty()
                }
                None => false,
            };
            let (pool_name, pool) = match &rc.pools {
                Some(v) if v.len() > 1 => {
                    return Err(self.err(v[1].span(), k("pools"), "one pool per connection"));
                }
                Some(v) if v.len() == 1 => {
                    let n = v[0].get_ref();
                    let Some(p) = pool_map.get(n.as_str()) else {
                        return Err(self.err(
                            v[0].span(),
                            format!("{}[0]", k("pools")),
                            format!("no pool named {n:?} (no [pools.{n}])"),
                        ));
                    };
                    (Some(n.clone()), Some(Arc::clone(p)))
                }
                _ => (None, None),
            };
            let end_id = |end: &Option<RawEnd>, which: &str| -> Result<_, ConfigError> {
                let Some(e) = end else {
                    return Ok(None);
                };
                if let Some(a) = &e.auth {
                    if a.get_ref() != "psk" {
                        return Err(self.err(
                            a.span(),
                            k(&format!("{which}.auth")),
                            format!("{:?}: only psk is supported", a.get_ref()),
                        ));
                    }
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
            let psk = self.find_secret(secrets, &local_id.0, remote_id.as_ref().map(|r| &r.0));
            let Some(psk) = psk? else {
                return Err(self.err(
                    here(),
                    key.clone(),
                    format!(
                        "no [secrets.*] with id {:?}{} (PSK authentication needs one)",
                        local_id.0,
                        remote_id
                            .as_ref()
                            .map(|r| format!(" or {:?}", r.0))
                            .unwrap_or_default()
                    ),
                ));
            };
            if rc.children.0.len() != 1 {
                return Err(self.err(
                    here(),
                    k("children"),
                    format!(
                        "exactly one child per connection is supported, got {}",
                        rc.children.0.len()
                    ),
                ));
            }
            let (child_name, ch) = &rc.children.0[0];
            let ck = |f: &str| k(&format!("children.{child_name}.{f}"));
            self.name(child_name, here, &k("children"), "child")?;
            let ts = |v: &Strings, f: &str| -> Result<Vec<TrafficSelector>, ConfigError> {
                match v {
                    Some(v) if !v.is_empty() => self.strings(v, &ck(f), parse_ts),
                    _ => Ok(vec![TrafficSelector::ipv4_any()]),
                }
            };
            let local_ts = ts(&ch.local_ts, "local_ts")?;
            let remote_ts = ts(&ch.remote_ts, "remote_ts")?;
            let esp = match &ch.esp_proposals {
                Some(v) if !v.is_empty() => {
                    self.strings(v, &ck("esp_proposals"), parse_esp_proposal)?
                }
                _ => vec![
                    parse_esp_proposal("default").map_err(|m| self.err(here(), key.clone(), m))?,
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
            out.connections.push(Connection {
                name: name.clone(),
                local_addrs,
                remote_addrs,
                start,
                child: child_name.clone(),
                vips,
                pool: pool_name,
                ike: IkeConfig {
                    local_id: local_id.1,
                    remote_id: remote_id.map(|r| r.1),
                    psk,
                    proposals,
                    child: ChildConfig {
                        name: child_name.clone(),
                        proposals: esp,
                        local_ts,
                        remote_ts,
                        mode,
                    },
                    request_vip: vips,
                    pool,
                    mobike: rc.mobike.unwrap_or(true),
                    nat_t_port: Some(4500),
                    force_encap: rc.encap.unwrap_or(true),
                    retransmit: RetransmitConfig::default(),
                },
            });
        }
        Ok(out)
    }

    /// The PSK of the secret that names the most of `local` and `remote` among its ids.
    fn find_secret(
        &self,
        secrets: &Ordered<RawSecret>,
        local: &str,
        remote: Option<&String>,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ConfigError> {
        let mut best: Option<(usize, &RawSecret, &str)> = None;
        for (name, s) in &secrets.0 {
            let ids = s.id.get_ref();
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
        let text = s.secret.get_ref();
        let key = format!("secrets.{name}.secret");
        let bytes = if let Some(h) = text.strip_prefix("0x") {
            Zeroizing::new(
                hex::decode(h)
                    .map_err(|_| self.err(s.secret.span(), &key, "0x... must be hex digits"))?,
            )
        } else {
            Zeroizing::new(text.as_bytes().to_vec())
        };
        if bytes.is_empty() {
            return Err(self.err(s.secret.span(), key, "a secret cannot be empty"));
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
        assert!(parse_esp_proposal("aes128gcm16-x25519").is_err());
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
