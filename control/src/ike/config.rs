//! The configuration one IKE SA is built from: identities, the pre-shared key, the IKE and
//! ESP proposals, the first child SA's selectors and mode, and retransmission timing.
//!
//! These are plain structs; the daemon maps its TOML (swanctl.conf-like connections,
//! children, secrets, pools) onto them.

use core::fmt;
use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mifsec_dataplane::aead::Cipher;

use super::auth::{LocalAuth, RemoteAuth};
use super::crypto::Prf;
use crate::wire::{DhGroup, IdPayload, TrafficSelector};

/// One IKE SA proposal: every listed transform is acceptable in any combination.
/// Lists are in order of preference. An AEAD needs no integrity transform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IkeProposal {
    /// Encryption (AEAD) algorithms.
    pub ciphers: Vec<Cipher>,
    /// Pseudorandom functions.
    pub prfs: Vec<Prf>,
    /// Diffie-Hellman groups (31, 19, 20); an initiator sends its KE in the first group
    /// of its first proposal.
    pub groups: Vec<DhGroup>,
}

impl IkeProposal {
    /// Everything we implement: AES-256-GCM, AES-128-GCM, ChaCha20-Poly1305;
    /// HMAC-SHA2-256/384/512; X25519, P-256, P-384.
    pub fn all() -> Self {
        IkeProposal {
            ciphers: vec![
                Cipher::Aes256Gcm,
                Cipher::Aes128Gcm,
                Cipher::ChaCha20Poly1305,
            ],
            prfs: Prf::ALL.to_vec(),
            groups: vec![DhGroup::Curve25519, DhGroup::Ecp256, DhGroup::Ecp384],
        }
    }
}

/// Extended sequence numbers: what a side proposes or accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EsnPolicy {
    /// Only 32-bit sequence numbers.
    #[default]
    No,
    /// Only extended (64-bit) sequence numbers.
    Yes,
    /// Either; the initiator proposes ESN first.
    Either,
}

impl EsnPolicy {
    /// The ESN values acceptable, in order of preference.
    pub fn options(self) -> &'static [bool] {
        match self {
            EsnPolicy::No => &[false],
            EsnPolicy::Yes => &[true],
            EsnPolicy::Either => &[true, false],
        }
    }
}

/// One ESP proposal for a child SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EspProposal {
    /// AEAD algorithms, in order of preference.
    pub ciphers: Vec<Cipher>,
    /// Extended sequence numbers.
    pub esn: EsnPolicy,
    /// Diffie-Hellman groups for perfect forward secrecy in CREATE_CHILD_SA (a KE payload
    /// in the group chosen); empty: no PFS. Never used in IKE_AUTH, which has no KE.
    pub groups: Vec<DhGroup>,
}

impl EspProposal {
    /// Every AEAD we implement, with or without ESN, without PFS.
    pub fn all() -> Self {
        EspProposal {
            ciphers: Cipher::ALL.to_vec(),
            esn: EsnPolicy::Either,
            groups: Vec::new(),
        }
    }
}

/// The IPsec mode of a child SA (transport mode is requested with USE_TRANSPORT_MODE): the
/// engine's own, so that a negotiated child is installed as it was agreed.
pub use mifsec_dataplane::esp::Mode;

/// A traffic selector for `prefix/len`, any protocol and port.
pub fn ts_prefix(addr: IpAddr, len: u8) -> TrafficSelector {
    match addr {
        IpAddr::V4(a) => {
            let len = u32::from(len.min(32));
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            let start = u32::from(a) & mask;
            TrafficSelector::Ipv4 {
                ip_protocol: 0,
                start_port: 0,
                end_port: u16::MAX,
                start: Ipv4Addr::from(start),
                end: Ipv4Addr::from(start | !mask),
            }
        }
        IpAddr::V6(a) => {
            let len = u32::from(len.min(128));
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            let start = u128::from(a) & mask;
            TrafficSelector::Ipv6 {
                ip_protocol: 0,
                start_port: 0,
                end_port: u16::MAX,
                start: Ipv6Addr::from(start),
                end: Ipv6Addr::from(start | !mask),
            }
        }
    }
}

/// A traffic selector for the address range `start..=end`, any protocol and port.
/// `None` when the two addresses are of different families.
pub fn ts_range(start: IpAddr, end: IpAddr) -> Option<TrafficSelector> {
    match (start, end) {
        (IpAddr::V4(start), IpAddr::V4(end)) => Some(TrafficSelector::Ipv4 {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start,
            end,
        }),
        (IpAddr::V6(start), IpAddr::V6(end)) => Some(TrafficSelector::Ipv6 {
            ip_protocol: 0,
            start_port: 0,
            end_port: u16::MAX,
            start,
            end,
        }),
        _ => None,
    }
}

/// One child SA configuration (swanctl's `children.NAME`). An initiator negotiates the
/// first one inside IKE_AUTH and the others with CREATE_CHILD_SA; a responder picks the one
/// whose selectors fit a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildConfig {
    /// The child's name (swanctl's children section name), reported in events.
    pub name: String,
    /// ESP proposals, in order of preference.
    pub proposals: Vec<EspProposal>,
    /// Our side's selectors. An initiator sends them as TSi; a responder narrows the
    /// peer's TSr to them.
    pub local_ts: Vec<TrafficSelector>,
    /// The peer's side's selectors. An initiator sends them as TSr; a responder narrows
    /// the peer's TSi to them (and, when it assigns a virtual IP, to that address).
    pub remote_ts: Vec<TrafficSelector>,
    /// Tunnel or transport mode. A responder accepts transport mode only when its own
    /// configuration says transport.
    pub mode: Mode,
    /// This child's own rekey and expiry times; `None` uses the `child_*` times of
    /// [`IkeConfig::lifetimes`].
    pub lifetimes: Option<ChildLifetimes>,
    /// MIF (docs/PROTOCOL.md section 5): whether the peer's operations may change this
    /// child's paths over its interfaces (`mif_accept`, default true; false: NOT_ALLOWED,
    /// except the removal of an interface).
    pub mif_accept: bool,
    /// With the multi-interface extension in use: how we schedule the child's outbound
    /// packets over its paths (`policy`; sent in MIF_CHILD, docs/PROTOCOL.md 4.1).
    pub policy: mifsec_dataplane::sa_table::Policy,
    /// With the extension in use: the names of our interfaces (`[interfaces.NAME]`) the
    /// child may use, in preference order (`interfaces`); empty: all.
    pub interfaces: Vec<String>,
}

/// What a new local interface becomes on the IKE SAs with MIF in use (`mif_on_new`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MifOnNew {
    /// ADD_INTERFACE for every child, active (standby if it is an alternate interface).
    #[default]
    Add,
    /// ADD_INTERFACE for every child as a standby (an alternate).
    Alternate,
    /// Only announced (the interface list), no operation.
    Ignore,
}

/// A child SA's rekey and expiry times (as the `child_*` fields of [`Lifetimes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildLifetimes {
    /// When the child SA is rekeyed, after it was installed.
    pub rekey: Option<Duration>,
    /// When it is deleted if not rekeyed by then.
    pub life: Option<Duration>,
    /// The largest random amount subtracted from `rekey`.
    pub rand: Duration,
    /// Rekey after this many bytes (`rekey_bytes`), less up to `rand_bytes`.
    pub rekey_bytes: Option<u64>,
    /// Delete after this many bytes (`life_bytes`).
    pub life_bytes: Option<u64>,
    /// The largest random amount subtracted from `rekey_bytes`.
    pub rand_bytes: u64,
    /// Rekey after this many packets (`rekey_packets`), less up to `rand_packets`.
    pub rekey_packets: Option<u64>,
    /// Delete after this many packets (`life_packets`).
    pub life_packets: Option<u64>,
    /// The largest random amount subtracted from `rekey_packets`.
    pub rand_packets: u64,
}

impl ChildLifetimes {
    /// Whether the child SA has byte or packet limits (the caller must then report usage).
    pub fn volume_limits(&self) -> bool {
        self.rekey_bytes.is_some()
            || self.life_bytes.is_some()
            || self.rekey_packets.is_some()
            || self.life_packets.is_some()
    }
}

/// A pool of addresses of one family a responder leases to initiators as virtual IPs
/// (INTERNAL_IP4_ADDRESS or INTERNAL_IP6_ADDRESS), with the DNS servers handed out with
/// them (INTERNAL_IP4_DNS, INTERNAL_IP6_DNS). Shared between IKE SAs; leases are released
/// explicitly (an IKE SA releases its own when it dies).
pub struct AddressPool {
    first: IpAddr,
    size: u32,
    dns: Vec<IpAddr>,
    leased: Mutex<BTreeSet<u32>>,
}

impl AddressPool {
    /// An IPv4 pool of `size` addresses starting at `first`, without DNS servers.
    pub fn new(first: Ipv4Addr, size: u32) -> Arc<Self> {
        Self::with_dns(IpAddr::V4(first), size, Vec::new())
    }

    /// A pool of `size` addresses starting at `first` (either family), handing out `dns`.
    pub fn with_dns(first: IpAddr, size: u32, dns: Vec<IpAddr>) -> Arc<Self> {
        Arc::new(AddressPool {
            first,
            size,
            dns,
            leased: Mutex::new(BTreeSet::new()),
        })
    }

    /// Whether `other` hands out the same addresses and DNS servers (leases aside): a
    /// configuration reload keeps the pool, and its leases, then.
    pub fn same_range(&self, other: &AddressPool) -> bool {
        self.first == other.first && self.size == other.size && self.dns == other.dns
    }

    /// Whether the pool's addresses are IPv6.
    pub fn is_ipv6(&self) -> bool {
        self.first.is_ipv6()
    }

    /// The DNS servers handed out with this pool's addresses.
    pub fn dns(&self) -> &[IpAddr] {
        &self.dns
    }

    fn addr_at(&self, offset: u32) -> IpAddr {
        match self.first {
            IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a).wrapping_add(offset))),
            IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(
                u128::from(a).wrapping_add(u128::from(offset)),
            )),
        }
    }

    fn offset_of(&self, addr: IpAddr) -> Option<u32> {
        let off = match (self.first, addr) {
            (IpAddr::V4(f), IpAddr::V4(a)) => u128::from(u32::from(a).wrapping_sub(u32::from(f))),
            (IpAddr::V6(f), IpAddr::V6(a)) => u128::from(a).wrapping_sub(u128::from(f)),
            _ => return None,
        };
        u32::try_from(off).ok().filter(|&o| o < self.size)
    }

    /// Leases the lowest free address, if any.
    pub fn lease(&self) -> Option<IpAddr> {
        let mut leased = self.leased.lock().unwrap_or_else(|e| e.into_inner());
        let offset = (0..self.size).find(|o| !leased.contains(o))?;
        leased.insert(offset);
        Some(self.addr_at(offset))
    }

    /// Returns an address to the pool (one not from this pool is ignored).
    pub fn release(&self, addr: IpAddr) {
        let Some(offset) = self.offset_of(addr) else {
            return;
        };
        let mut leased = self.leased.lock().unwrap_or_else(|e| e.into_inner());
        leased.remove(&offset);
    }

    /// The number of addresses leased.
    pub fn leased(&self) -> usize {
        self.leased.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl fmt::Debug for AddressPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddressPool")
            .field("first", &self.first)
            .field("size", &self.size)
            .field("dns", &self.dns)
            .field("leased", &self.leased())
            .finish()
    }
}

/// Retransmission of requests (RFC 7296 section 2.1): the first retransmission after
/// `initial`, each next after twice the previous interval, and the exchange abandoned
/// when `give_up` has passed since the request was first sent. A responder drops a
/// half-open IKE SA after `give_up` too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetransmitConfig {
    /// The first retransmission interval.
    pub initial: Duration,
    /// The total time after which an unanswered request fails the IKE SA.
    pub give_up: Duration,
}

impl Default for RetransmitConfig {
    /// 0.5 s doubling, giving up after 30 s.
    fn default() -> Self {
        RetransmitConfig {
            initial: Duration::from_millis(500),
            give_up: Duration::from_secs(30),
        }
    }
}

/// Lifetimes of the IKE SA and its child SAs, as swanctl.conf's `rekey_time`,
/// `over_time`/`life_time` and `rand_time`. A soft limit (`*_rekey`) starts a rekey at a
/// time drawn from `[rekey - rand, rekey]`; the hard limit (`*_life`) deletes the SA if the
/// rekey never completed. `None` disables a limit. The default disables all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetimes {
    /// When the IKE SA is rekeyed, after it was established.
    pub ike_rekey: Option<Duration>,
    /// When the IKE SA is deleted if not rekeyed by then.
    pub ike_life: Option<Duration>,
    /// The largest random amount subtracted from `ike_rekey`.
    pub ike_rand: Duration,
    /// When a child SA is rekeyed, after it was installed.
    pub child_rekey: Option<Duration>,
    /// When a child SA is deleted if not rekeyed by then.
    pub child_life: Option<Duration>,
    /// The largest random amount subtracted from `child_rekey`.
    pub child_rand: Duration,
    /// Rekey a child SA when this many bytes went through it (swanctl's `rekey_bytes`),
    /// less a random amount of at most `child_rand_bytes`. Usage is reported by the caller
    /// with `IkeSa::child_usage`.
    pub child_rekey_bytes: Option<u64>,
    /// Delete a child SA when this many bytes went through it (`life_bytes`).
    pub child_life_bytes: Option<u64>,
    /// The largest random amount subtracted from `child_rekey_bytes`.
    pub child_rand_bytes: u64,
    /// Rekey a child SA after this many packets (`rekey_packets`), less up to
    /// `child_rand_packets`.
    pub child_rekey_packets: Option<u64>,
    /// Delete a child SA after this many packets (`life_packets`).
    pub child_life_packets: Option<u64>,
    /// The largest random amount subtracted from `child_rekey_packets`.
    pub child_rand_packets: u64,
}

impl Lifetimes {
    /// Whether child SAs have byte or packet limits (the caller must then report usage).
    pub fn child_volume_limits(&self) -> bool {
        self.child_lifetimes().volume_limits()
    }

    /// The `child_*` fields, for a child configuration without lifetimes of its own.
    pub fn child_lifetimes(&self) -> ChildLifetimes {
        ChildLifetimes {
            rekey: self.child_rekey,
            life: self.child_life,
            rand: self.child_rand,
            rekey_bytes: self.child_rekey_bytes,
            life_bytes: self.child_life_bytes,
            rand_bytes: self.child_rand_bytes,
            rekey_packets: self.child_rekey_packets,
            life_packets: self.child_life_packets,
            rand_packets: self.child_rand_packets,
        }
    }
}

/// Liveness checks (RFC 7296 section 2.4): after `delay` without any inbound IKE message
/// (or ESP activity reported with `IkeSa::note_activity`) an empty INFORMATIONAL request
/// is sent; when it goes unanswered for the retransmission give-up time the IKE SA fails
/// with `FailReason::Timeout`. What happens then (`clear` or `restart`) is the caller's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DpdConfig {
    /// Idle time before a liveness check; `None` disables them.
    pub delay: Option<Duration>,
    /// What the daemon does when the peer is found gone.
    pub action: DpdAction,
}

/// MOBIKE as initiator (RFC 4555): how a dead path is found and which path is preferred.
///
/// The defaults find a silently dead path in about a second: outbound traffic with nothing
/// inbound for 400 ms (two of the engine's 250 ms usage reports, so one quiet report is not
/// enough) starts a liveness check on the current path, sent 3 times 200 ms apart (a
/// round trip of up to 200 ms answers the first try; the second and third cover the loss
/// of one or two datagrams), so 1.0 s after the last inbound packet the path counts as
/// dead and the other paths are probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoamConfig {
    /// Outbound ESP with nothing inbound for this long starts a liveness check on the
    /// current path (`path_check_delay`); `None`: only address loss and the
    /// retransmissions of our own requests find a dead path.
    pub check_delay: Option<Duration>,
    /// The interval of the check's retransmissions, and of a probe's first ones
    /// (`path_check_interval`).
    pub check_interval: Duration,
    /// How many times the check is sent before the path counts as dead
    /// (`path_check_tries`, at least 1).
    pub check_tries: u32,
    /// Move back to a more preferred local address (earlier in the list given to
    /// `IkeSa::set_local_addresses`, that is in `local_addrs`) once it answers a probe
    /// (`prefer_best_path`, as strongSwan's).
    pub prefer_best_path: bool,
}

impl Default for RoamConfig {
    /// 400 ms, 200 ms, 3 tries, no moving back.
    fn default() -> Self {
        RoamConfig {
            check_delay: Some(Duration::from_millis(400)),
            check_interval: Duration::from_millis(200),
            check_tries: 3,
            prefer_best_path: false,
        }
    }
}

impl RoamConfig {
    /// How long a request of ours (or a check) goes unanswered on the current path before
    /// the path counts as dead: the check's tries.
    pub fn dead_after(&self) -> Duration {
        self.check_interval.saturating_mul(self.check_tries.max(1))
    }
}

/// What the daemon does when liveness checks find the peer gone (`dpd_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DpdAction {
    /// Remove the IKE SA and its child SAs (the default).
    #[default]
    Clear,
    /// Remove them and initiate the connection again.
    Restart,
}

/// Everything one IKE SA needs, in either role.
#[derive(Clone)]
pub struct IkeConfig {
    /// Our identity, sent in IDi or IDr.
    pub local_id: IdPayload,
    /// The identity the peer must present; `None` accepts any (the PSK still has to
    /// match). An initiator also sends it as IDr when set.
    pub remote_id: Option<IdPayload>,
    /// How we authenticate (`local.auth`): a PSK or a signature.
    pub local_auth: LocalAuth,
    /// How the peer must authenticate (`remote.auth`): with the PSK, or a signature by a
    /// key its certificate (checked against the CAs) or a raw public key vouches for.
    pub remote_auth: RemoteAuth,
    /// With several end-entity certificates in `local.certs`: each with its key and the
    /// CA hashes a peer's CERTREQ selects it by (the first is `local_auth`'s too); empty
    /// with one.
    pub cert_choices: Vec<crate::ike::auth::CertChoice>,
    /// IKE proposals, in order of preference.
    pub proposals: Vec<IkeProposal>,
    /// The first child SA (negotiated in IKE_AUTH).
    pub child: ChildConfig,
    /// Further child SAs: an initiator creates each with CREATE_CHILD_SA once the IKE SA
    /// is established; a responder matches a peer's CREATE_CHILD_SA against `child` and
    /// these.
    pub more_children: Vec<ChildConfig>,
    /// Initiator only: request a virtual IPv4 address (CP CFG_REQUEST
    /// INTERNAL_IP4_ADDRESS, with INTERNAL_IP4_DNS).
    pub request_vip: bool,
    /// Initiator only: request a virtual IPv6 address (INTERNAL_IP6_ADDRESS, with
    /// INTERNAL_IP6_DNS). The IKE SA fails if none of the requested addresses is assigned.
    pub request_vip6: bool,
    /// Responder only: the pools virtual IPs are leased from (at most one per family is
    /// used: the first that has a free address).
    pub pools: Vec<Arc<AddressPool>>,
    /// Advertise MOBIKE_SUPPORTED in IKE_AUTH.
    pub mobike: bool,
    /// MOBIKE responder: the peer addresses its UPDATE_SA_ADDRESSES may move the IKE SA
    /// to (the daemon gives the connection's `remote_addrs`); empty: any. Others, and
    /// addresses that are no unicast host (unspecified, multicast, broadcast, port 0),
    /// are refused with UNACCEPTABLE_ADDRESSES (RFC 4555 section 3.5).
    pub mobike_peers: Vec<std::net::IpAddr>,
    /// RFC 7791: advertise CLONE_IKE_SA_SUPPORTED in IKE_AUTH and clone the IKE SA on
    /// request (config key `clone`); a peer's CLONE_IKE_SA is only honoured when set.
    pub clone_ike_sa: bool,
    /// RFC 7791: children of `more_children` not created on the first IKE SA, only on its
    /// clones (`clone_children`: `ctl clone --child`, `clone_per_interface`).
    pub clone_children: Vec<String>,
    /// After NAT detection finds a NAT, move IKE to this port on both sides (the float to
    /// 4500, RFC 7296 section 2.23) if we are on another one. `None` never floats.
    pub nat_t_port: Option<u16>,
    /// Force UDP encapsulation of ESP: send a NAT_DETECTION_SOURCE_IP that cannot match
    /// (RFC 7296 section 2.23 allows it; strongSwan's `encap = yes` does the same), so
    /// that the peer believes we are behind a NAT, and act as if we were. mifsec's engine
    /// only speaks ESP in UDP, so the daemon always sets this.
    pub force_encap: bool,
    /// IKE fragmentation (RFC 7383): advertise IKEV2_FRAGMENTATION_SUPPORTED and, when the
    /// peer does too, send encrypted messages longer than `fragment_size` allows in
    /// fragments (swanctl.conf's `fragmentation = yes`). Received fragments are only
    /// accepted when negotiated.
    pub fragmentation: bool,
    /// The largest IP datagram an IKE fragment may make, IP and UDP headers and the
    /// non-ESP marker included (strongSwan's `charon.fragment_size`; default 1280).
    pub fragment_size: u16,
    /// Retransmission timing.
    pub retransmit: RetransmitConfig,
    /// Rekey and expiry times.
    pub lifetimes: Lifetimes,
    /// Liveness checks.
    pub dpd: DpdConfig,
    /// MOBIKE as initiator: path checks and preference.
    pub roam: RoamConfig,
    /// MIF: the operation a new local interface starts (`mif_on_new`).
    pub mif_on_new: MifOnNew,
    /// MIF: when the most preferred interface (lowest priority) comes back, the traffic
    /// moves back to it by SOFT_HANDOVER (`mif_prefer`).
    pub mif_prefer: bool,
    /// The multi-interface extension between mifsec peers (docs/PROTOCOL.md): send
    /// MIF_SUPPORTED in IKE_AUTH (`mif`, default on).
    pub mif: bool,
    /// How many of the peer's interfaces we keep (`mif_max_interfaces`, 1 to 64).
    pub mif_max_interfaces: u16,
    /// How many paths one child SA may have (`mif_max_paths`, 1 to 64).
    pub mif_max_paths: u16,
}

impl IkeConfig {
    /// Every child configuration: `child`, then `more_children`.
    pub fn all_children(&self) -> impl Iterator<Item = &ChildConfig> {
        std::iter::once(&self.child).chain(&self.more_children)
    }

    /// Whether some child configuration has byte or packet limits (the daemon must then
    /// report usage through [`IkeSa::child_usage`](super::IkeSa::child_usage)).
    pub fn child_volume_limits(&self) -> bool {
        self.lifetimes.child_volume_limits()
            || self
                .all_children()
                .any(|c| c.lifetimes.is_some_and(|l| l.volume_limits()))
    }

    /// The child configuration named `name` (the first child if none is).
    pub fn child_named(&self, name: &str) -> &ChildConfig {
        self.all_children()
            .find(|c| c.name == name)
            .unwrap_or(&self.child)
    }
}

impl fmt::Debug for IkeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IkeConfig")
            .field("local_id", &self.local_id)
            .field("remote_id", &self.remote_id)
            .field("local_auth", &self.local_auth)
            .field("remote_auth", &self.remote_auth)
            .field("proposals", &self.proposals)
            .field("child", &self.child)
            .field("more_children", &self.more_children)
            .field("request_vip", &self.request_vip)
            .field("request_vip6", &self.request_vip6)
            .field("pools", &self.pools)
            .field("mobike", &self.mobike)
            .field("clone_ike_sa", &self.clone_ike_sa)
            .field("clone_children", &self.clone_children)
            .field("nat_t_port", &self.nat_t_port)
            .field("force_encap", &self.force_encap)
            .field("fragmentation", &self.fragmentation)
            .field("fragment_size", &self.fragment_size)
            .field("retransmit", &self.retransmit)
            .field("lifetimes", &self.lifetimes)
            .field("dpd", &self.dpd)
            .field("roam", &self.roam)
            .field("mif", &self.mif)
            .field("mif_max_interfaces", &self.mif_max_interfaces)
            .field("mif_max_paths", &self.mif_max_paths)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    #[test]
    fn prefixes_and_ranges() {
        let ts = ts_prefix("10.1.2.3".parse().unwrap(), 24);
        assert_eq!(
            ts,
            ts_range("10.1.2.0".parse().unwrap(), "10.1.2.255".parse().unwrap()).unwrap()
        );
        assert_eq!(
            ts_prefix("1.2.3.4".parse().unwrap(), 0),
            TrafficSelector::ipv4_any()
        );
        assert_eq!(
            ts_prefix("::".parse().unwrap(), 0),
            TrafficSelector::ipv6_any()
        );
        assert_eq!(
            ts_prefix("fd00::1".parse().unwrap(), 128),
            ts_range("fd00::1".parse().unwrap(), "fd00::1".parse().unwrap()).unwrap()
        );
        assert!(ts_range("::".parse().unwrap(), "1.2.3.4".parse().unwrap()).is_none());
    }

    #[test]
    fn pool_leases_and_releases() {
        let pool = AddressPool::new(Ipv4Addr::new(10, 9, 0, 1), 2);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert_eq!(
            (a, b),
            (
                IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)),
                IpAddr::V4(Ipv4Addr::new(10, 9, 0, 2))
            )
        );
        assert!(pool.lease().is_none());
        pool.release(a);
        assert_eq!(pool.lease(), Some(a));
        assert_eq!(pool.leased(), 2);
        // Addresses of another family or outside the pool are ignored.
        pool.release("fd00::1".parse().unwrap());
        pool.release("10.9.0.9".parse().unwrap());
        assert_eq!(pool.leased(), 2);
    }

    #[test]
    fn ipv6_pool_leases_and_releases() {
        let dns: IpAddr = "fd77::53".parse().unwrap();
        let pool = AddressPool::with_dns("fd77::1".parse().unwrap(), 2, vec![dns]);
        assert!(pool.is_ipv6());
        assert_eq!(pool.dns(), &[dns]);
        let a = pool.lease().unwrap();
        assert_eq!(a, "fd77::1".parse::<IpAddr>().unwrap());
        assert_eq!(pool.lease(), Some("fd77::2".parse().unwrap()));
        assert!(pool.lease().is_none());
        pool.release(a);
        assert_eq!(pool.leased(), 1);
        assert_eq!(pool.lease(), Some(a));
    }

    #[test]
    fn debug_hides_psk() {
        let cfg = IkeConfig {
            local_id: IdPayload::fqdn("a"),
            remote_id: None,
            local_auth: LocalAuth::Psk(Zeroizing::new(b"hunter2-secret".to_vec())),
            remote_auth: RemoteAuth::Psk(Zeroizing::new(b"hunter2-secret".to_vec())),
            cert_choices: Vec::new(),
            proposals: vec![IkeProposal::all()],
            child: ChildConfig {
                name: "c".into(),
                proposals: vec![EspProposal::all()],
                local_ts: vec![],
                remote_ts: vec![],
                mode: Mode::Tunnel,
                lifetimes: None,
                mif_accept: true,
                policy: mifsec_dataplane::sa_table::Policy::Failover,
                interfaces: Vec::new(),
            },
            more_children: Vec::new(),
            request_vip: false,
            request_vip6: false,
            pools: Vec::new(),
            mobike: true,
            mobike_peers: Vec::new(),
            clone_ike_sa: true,
            clone_children: Vec::new(),
            nat_t_port: Some(4500),
            force_encap: false,
            fragmentation: true,
            fragment_size: 1280,
            retransmit: RetransmitConfig::default(),
            lifetimes: Lifetimes::default(),
            dpd: DpdConfig::default(),
            roam: RoamConfig::default(),
            mif_on_new: MifOnNew::Add,
            mif_prefer: false,
            mif: true,
            mif_max_interfaces: 16,
            mif_max_paths: 16,
        };
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("hunter2"));
        assert!(!dbg.contains("104, 117"));
    }
}
