//! What `mifsec status` shows of the IKE thread: the IKE SAs and their children
//! ([`IkeSaStatus`], [`IkeChildStatus`]), the thread's counters ([`IkeStats`]), how they
//! are published, and how identities and algorithms are written.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::PoisonError;
use std::time::Instant;

use serde::Serialize;

use super::ike_thread::{Entry, IkeThread};
use super::install::Installed;
use super::mif::MifTrack;
use crate::dataplane::aead::Cipher;
use crate::dataplane::engine::EngineStatus;
use crate::ike::cookie::CookieStats;
use crate::ike::limits::LimitStats;
use crate::ike::{IkeSaInfo, Prf};
use crate::log::{MAX_SHOWN, printable};
use crate::wire::{DhGroup, IdPayload, IdType, MifInterface};

/// One IKE SA as `mifsec status` shows it (in the manner of `swanctl --list-sas`).
#[derive(Debug, Clone, Serialize)]
pub struct IkeSaStatus {
    /// The connection's name.
    pub name: String,
    /// A unique number, as swanctl's `#N`.
    pub id: u64,
    /// `CONNECTING`, `ESTABLISHED` or `DELETING`.
    pub state: IkeState,
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
    /// How we authenticated: `psk`, `pubkey` or `eap-mschapv2` (empty until established).
    pub local_auth: String,
    /// The EAP identity we authenticated with (EAP only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub local_eap_id: Option<String>,
    /// EAP-TLS: the subject of the peer's TLS certificate (the gateway's, we the client;
    /// the client's, we the gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_tls_cert: Option<String>,
    /// EAP-TLS: the TLS version (`TLS 1.2`, `TLS 1.3`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_version: Option<String>,
    /// How the peer authenticated: `psk`, or `pubkey` with its key type (`pubkey ECDSA
    /// P-256`).
    pub remote_auth: String,
    /// The EAP identity the peer authenticated with (we the EAP gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote_eap_id: Option<String>,
    /// The subject of the peer's certificate, when it showed one.
    pub remote_cert: Option<String>,
    /// The CA that issued it.
    pub remote_ca: Option<String>,
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
    /// Whether MOBIKE (RFC 4555) is in use on it.
    pub mobike: bool,
    /// RFC 7791: the `id` of the IKE SA it was cloned from (`ctl clone`, the peer's clone,
    /// `clone_per_interface`), if it was.
    pub cloned_from: Option<u64>,
    /// RFC 7791: whether the peer announced CLONE_IKE_SA_SUPPORTED.
    pub peer_clone: bool,
    /// Our other addresses it could move to: the connection's `local_addrs` (else every
    /// interface's address) of the current local address's family, that one left out.
    pub local_addrs: Vec<String>,
    /// The peer's additional addresses (its last ADDITIONAL_IP*_ADDRESS list).
    pub peer_addrs: Vec<String>,
    /// MOBIKE responder: the peer address a return-routability check is under way for
    /// (the child SAs are still on the previous path).
    pub route_check: Option<String>,
    /// Moves of its child SAs to a new path (MOBIKE, either role).
    pub moves: u64,
    /// ... by reason (`peer-update`, `peer-update-verified`, `local-address-gone`, ...).
    pub moves_by_reason: BTreeMap<String, u64>,
    /// The reason of the last move.
    pub last_move: Option<String>,
    /// Seconds since the last move.
    pub last_move_s: Option<u64>,
    /// Return-routability checks answered with our COOKIE2.
    pub route_checks_passed: u64,
    /// Return-routability checks answered without our COOKIE2 (the children stayed).
    pub route_checks_failed: u64,
    /// The peer's UPDATE_SA_ADDRESSES refused (UNEXPECTED_NAT_DETECTED,
    /// UNACCEPTABLE_ADDRESSES).
    pub updates_refused: u64,
    /// The peer's UPDATE_SA_ADDRESSES older than one processed (nothing moved).
    pub updates_stale: u64,
    /// The multi-interface extension (docs/PROTOCOL.md): `null` when it was not negotiated.
    pub mif: Option<MifSaStatus>,
    /// Its child SAs.
    pub children: Vec<IkeChildStatus>,
}

/// The multi-interface extension on one IKE SA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MifSaStatus {
    /// Both sides sent MIF_SUPPORTED: the child SAs have paths over the interfaces of both.
    pub in_use: bool,
    /// The interfaces we announced (our last list).
    pub local_interfaces: Vec<MifInterfaceStatus>,
    /// The interfaces the peer announced (its last list we took).
    pub peer_interfaces: Vec<MifInterfaceStatus>,
    /// The generation of our last list.
    pub local_generation: u32,
    /// The generation of the peer's last list.
    pub peer_generation: u32,
    /// Operations we started and the peer answered, refused included.
    pub operations: u64,
    /// Operations the peer refused as a whole.
    pub refused: u64,
}

/// One announced interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MifInterfaceStatus {
    /// Its identifier (the announcer's).
    pub id: u16,
    /// Its name (the announcer's `[interfaces.*]` label; a peer's is escaped).
    pub name: String,
    /// Address and port.
    pub address: String,
    /// Lower is preferred.
    pub priority: u8,
    /// `active` or `alternate`.
    pub role: &'static str,
}

/// One child SA's paths over the extension.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MifChildStatus {
    /// Our scheduling policy of its outbound packets.
    pub policy: String,
    /// Whether its inbound packets go through a reorder buffer (the peer aggregates).
    pub reorder: bool,
    /// Its paths in the order both peers computed (`i1r2`: the initiator's interface 1,
    /// the responder's 2), with the engine's figures.
    pub paths: Vec<MifPathStatus>,
    /// A soft handover waits for a new path to answer before the old ones leave.
    pub handover_pending: bool,
    /// Path state changes the engine reported (up, down, verified).
    pub path_events: u64,
}

/// One path of a child SA.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MifPathStatus {
    /// `i<ID>r<ID>`.
    pub name: String,
    /// Our interface ID and the peer's.
    pub local_if: u16,
    /// The peer's interface ID.
    pub remote_if: u16,
    /// The engine interface it sends from.
    pub interface: String,
    /// Our address and port.
    pub local: String,
    /// The peer's.
    pub remote: String,
    /// `active` or `standby` (as computed), the engine's role if it differs meanwhile.
    pub role: String,
    /// The engine's: `unverified` (no probe answered on it yet: it carries nothing), `up`,
    /// `down`, `unknown` or `no-socket`.
    pub state: String,
    /// Figures from the engine.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Smoothed probe RTT, ms.
    pub rtt_ms: Option<f64>,
    /// Recent probe loss, percent.
    pub loss_pct: f64,
}

impl MifPathStatus {
    /// Fills the engine's figures of the path from its status (the SA's paths).
    pub fn fill(&mut self, engine: &crate::dataplane::engine::PathStatus) {
        self.interface.clone_from(&engine.interface);
        self.role.clone_from(&engine.role);
        self.state.clone_from(&engine.state);
        self.rx_packets = engine.rx_packets;
        self.tx_packets = engine.tx_packets;
        self.rtt_ms = engine.rtt_ms;
        self.loss_pct = engine.loss_pct;
    }
}

/// Where an IKE SA stands (shown as swanctl spells it: `ESTABLISHED`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum IkeState {
    /// IKE_SA_INIT and IKE_AUTH under way.
    Connecting,
    /// Authenticated, its first child SA negotiated.
    Established,
    /// Deleted or failed, about to be removed.
    Deleting,
}

/// Where a child SA stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ChildState {
    /// Installed in the engine, carrying traffic.
    Installed,
    /// Replaced by a rekey: its successor is installed, and it waits for its Delete
    /// (still accepting inbound packets).
    Rekeyed,
}

/// One child SA of an IKE SA.
#[derive(Debug, Clone, Serialize)]
pub struct IkeChildStatus {
    /// The child configuration's name.
    pub name: String,
    /// The engine's SA name (whose counters `status` shows).
    pub sa: String,
    /// `INSTALLED`, or `REKEYED` while a rekeyed pair waits for its Delete.
    pub state: ChildState,
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
    /// Its paths over the multi-interface extension (`null`: the single path of the IKE SA,
    /// as with a standard peer).
    pub mif: Option<MifChildStatus>,
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
    /// IKE messages dropped for being longer than [`MAX_MESSAGE`](super::ike_thread::MAX_MESSAGE).
    pub oversize: u64,
}

impl IkeThread {
    /// Rebuilds the IKE SA list that `status` shows.
    pub(super) fn publish(&mut self, now: Instant) {
        self.dirty = false;
        self.published = now;
        let empty = Entry::default();
        let list = self
            .ep
            .iter()
            .map(|(h, c, sa)| {
                let e = self.entries.get(&h).unwrap_or(&empty);
                let conn = &self.conns[c];
                let (local, remote) = sa.addresses();
                let (spi_i, spi_r) = sa.spis().unwrap_or((sa.spi_i().unwrap_or(0), 0));
                let state = if sa.is_established() {
                    IkeState::Established
                } else if sa.is_dead() {
                    IkeState::Deleting
                } else {
                    IkeState::Connecting
                };
                IkeSaStatus {
                    name: conn.name.clone(),
                    id: h.0,
                    state,
                    initiator: sa.is_initiator(),
                    local: local.to_string(),
                    remote: remote.to_string(),
                    local_id: id_string(&conn.ike.local_id),
                    remote_id: e
                        .info
                        .as_ref()
                        .map(|i| id_string(&i.remote_id))
                        .unwrap_or_else(|| "%any".into()),
                    local_auth: e
                        .info
                        .as_ref()
                        .map(|i| i.local_auth.to_string())
                        .unwrap_or_default(),
                    remote_auth: e
                        .info
                        .as_ref()
                        .map(|i| match &i.remote_auth.key {
                            Some(k) => format!("{} {k}", i.remote_auth.method),
                            None => i.remote_auth.method.to_string(),
                        })
                        .unwrap_or_default(),
                    local_eap_id: e.info.as_ref().and_then(|i| i.local_eap_id.clone()),
                    remote_tls_cert: e
                        .info
                        .as_ref()
                        .and_then(|i| i.remote_auth.tls_subject.as_ref())
                        .map(|t| t.0.clone()),
                    tls_version: e
                        .info
                        .as_ref()
                        .and_then(|i| i.remote_auth.tls_subject.as_ref())
                        .map(|t| t.1.to_string()),
                    remote_eap_id: e
                        .info
                        .as_ref()
                        .and_then(|i| i.remote_auth.eap_identity.clone()),
                    remote_cert: e.info.as_ref().and_then(|i| i.remote_auth.subject.clone()),
                    remote_ca: e.info.as_ref().and_then(|i| i.remote_auth.ca.clone()),
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
                    rekey_in_s: sa
                        .next_rekey()
                        .map(|t| t.saturating_duration_since(now).as_secs()),
                    fragmentation: e.info.as_ref().is_some_and(|i| i.fragmentation),
                    fragments_sent: sa.stats().fragments_sent,
                    fragments_received: sa.stats().fragments_received,
                    fragments_dropped: sa.stats().fragments_dropped,
                    mobike: sa.mobike(),
                    cloned_from: self.ep.cloned_from(h).map(|f| f.0),
                    peer_clone: sa.peer_supports_clone(),
                    local_addrs: self.other_local_addrs(c, local),
                    peer_addrs: sa
                        .peer_addresses()
                        .iter()
                        .map(ToString::to_string)
                        .collect(),
                    route_check: sa.route_check().map(|a| a.to_string()),
                    moves: e.moves,
                    moves_by_reason: e
                        .moves_by_reason
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), *v))
                        .collect(),
                    last_move: e.last_move.map(|(_, r)| r.name().to_owned()),
                    last_move_s: e.last_move.map(|(t, _)| now.duration_since(t).as_secs()),
                    route_checks_passed: sa.stats().route_checks_passed,
                    route_checks_failed: sa.stats().route_checks_failed,
                    updates_refused: sa.stats().updates_refused,
                    updates_stale: sa.stats().updates_stale,
                    mif: sa.mif_info().map(|i| MifSaStatus {
                        in_use: i.in_use,
                        local_interfaces: i.ours.iter().map(mif_interface).collect(),
                        peer_interfaces: i.peer.iter().map(mif_interface).collect(),
                        local_generation: i.our_generation,
                        peer_generation: i.peer_generation,
                        operations: e.mif_operations,
                        refused: e.mif_refused,
                    }),
                    children: e
                        .children
                        .iter()
                        .map(|c| {
                            let mut st = c.status.clone();
                            st.mif = c.mif.as_ref().map(|m| mif_child(c, m));
                            st
                        })
                        .collect(),
                }
            })
            .collect();
        *self.status.lock().unwrap_or_else(PoisonError::into_inner) = list;
        self.book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retransmissions = self.ep.retransmitted_total();
        self.publish_stats();
        self.mif_send_ready();
    }

    /// Our addresses connection `c` could use besides `local`'s: its `local_addrs`, else
    /// every interface's, of `local`'s family.
    fn other_local_addrs(&self, c: usize, local: SocketAddr) -> Vec<String> {
        let conn = &self.conns[c];
        let mut out: Vec<IpAddr> = Vec::new();
        let all: Vec<IpAddr> = if conn.local_addrs.is_empty() {
            self.ifaces.iter().map(|i| i.address).collect()
        } else {
            conn.local_addrs.clone()
        };
        for a in all {
            if a != local.ip() && a.is_ipv4() == local.is_ipv4() && !out.contains(&a) {
                out.push(a);
            }
        }
        out.iter().map(ToString::to_string).collect()
    }

    /// Copies the counters that `status` shows (a few integers).
    pub(super) fn publish_stats(&self) {
        let mut st = self
            .cookie_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let ep = self.ep.stats();
        st.half_open = ep.half_open;
        st.half_open_sources = ep.half_open_sources;
        st.limits = ep.limits;
        st.cookies = ep.cookies;
        st.oversize = ep.oversize;
        drop(st);
        self.book
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .messages = self.messages;
    }
}

fn mif_interface(i: &MifInterface) -> MifInterfaceStatus {
    MifInterfaceStatus {
        id: i.id,
        name: printable(&i.name),
        address: i.addr.to_string(),
        priority: i.priority,
        role: if i.alternate { "alternate" } else { "active" },
    }
}

/// A child's MIF paths as computed, on the engine interfaces they were installed on; the
/// engine's figures are added when `status` is asked ([`MifPathStatus::fill`]).
fn mif_child(c: &Installed, m: &MifTrack) -> MifChildStatus {
    MifChildStatus {
        policy: m.policy.name().into(),
        reorder: m.reorder,
        paths: m
            .paths
            .iter()
            .map(|p| MifPathStatus {
                name: p.name.clone(),
                local_if: p.local_if,
                remote_if: p.remote_if,
                interface: c
                    .spec
                    .paths
                    .iter()
                    .find(|s| s.name == p.name)
                    .map_or_else(|| "-".into(), |s| s.interface.clone()),
                local: p.local.to_string(),
                remote: p.remote.to_string(),
                role: p.role.name().into(),
                state: if c.spec.paths.iter().any(|s| s.name == p.name) {
                    "installed".into()
                } else {
                    "no-socket".into()
                },
                rx_packets: 0,
                tx_packets: 0,
                rtt_ms: None,
                loss_pct: 0.0,
            })
            .collect(),
        handover_pending: m.soft.is_some(),
        path_events: m.path_events,
    }
}

/// Adds the engine's figures to the MIF paths of every child SA of `ike` (the IKE SA list
/// as published), from the engine's status taken for the same answer.
pub fn fill_mif_paths(ike: &mut [IkeSaStatus], engine: &EngineStatus) {
    for sa in ike {
        for c in &mut sa.children {
            let Some(m) = &mut c.mif else { continue };
            let Some(es) = engine.sas.iter().find(|s| s.name == c.sa) else {
                continue;
            };
            for p in &mut m.paths {
                if let Some(ep) = es.paths.iter().find(|e| e.name == p.name) {
                    p.fill(ep);
                }
            }
        }
    }
}

pub(super) fn nat_name(info: &IkeSaInfo) -> &'static str {
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
    if id.id_type == IdType::DerAsn1Dn {
        use x509_parser::prelude::FromDer;
        if let Ok((_, n)) = x509_parser::x509::X509Name::from_der(&id.data) {
            return printable(&n.to_string());
        }
    }
    match id.id_type {
        IdType::KeyId => format!("@#{}", hex_of(&id.data)),
        t => format!("({t:?}) {}", hex_of(&id.data)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
