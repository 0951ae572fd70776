//! The SA table: an immutable snapshot of every child SA and its paths, published with one
//! atomic pointer swap.
//!
//! Workers load the current snapshot once per batch ([`SaTables::load`], no lock) and look
//! SAs up in it: inbound by SPI alone (packets of one SA arrive from several peer addresses),
//! outbound by traffic selector. The control side builds a whole new [`SaTable`] and
//! [`SaTables::publish`]es it. Everything that must survive a swap (sequence counters, replay
//! windows, counters, path figures) lives in `Arc` cells that both the old and the new
//! snapshot point to, so a swap never resets a sequence number or a replay window; that is
//! what makes a soft handover lossless.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::{ArcSwap, Guard};

use crate::esp::{InboundSa, OutboundSa};
use crate::path::PathState;
use crate::sys::udp::OuterSocket;

/// An address prefix: a traffic selector of the simple kind (any protocol, any port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Prefix {
    /// The network address.
    pub addr: IpAddr,
    /// Prefix length in bits.
    pub len: u8,
}

impl Prefix {
    /// Whether `ip` lies inside.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for Prefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, l) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an address or prefix"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match l {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| format!("{s:?}: prefix length must be 0 to {max}"))?,
        };
        Ok(Prefix { addr, len })
    }
}

/// How an SA spreads packets over its paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// The first live active path; else the first live standby.
    Failover,
    /// Spread over live paths in proportion to their weights.
    Aggregate,
    /// Every packet on every live path; the receiver's replay window drops later copies.
    Redundant,
    /// Per destination prefix (`pin`), else as failover.
    Pinned,
}

impl Policy {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Failover => "failover",
            Policy::Aggregate => "aggregate",
            Policy::Redundant => "redundant",
            Policy::Pinned => "pinned",
        }
    }
}

impl FromStr for Policy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "failover" => Policy::Failover,
            "aggregate" => Policy::Aggregate,
            "redundant" => Policy::Redundant,
            "pinned" => Policy::Pinned,
            _ => {
                return Err(format!(
                    "{s:?}: policy is failover, aggregate, redundant or pinned"
                ));
            }
        })
    }
}

/// A path's role in its SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Carries traffic.
    Active,
    /// Carries traffic when no active path is live.
    Standby,
    /// Known and probed, used only when named (alternate address, handover target).
    Alternate,
}

impl Role {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
            Role::Alternate => "alternate",
        }
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "active" => Role::Active,
            "standby" => Role::Standby,
            "alternate" => Role::Alternate,
            _ => return Err(format!("{s:?}: role is active, standby or alternate")),
        })
    }
}

/// One path of an SA in a snapshot.
#[derive(Debug, Clone)]
pub struct PathEntry {
    /// Live state, shared across snapshots.
    pub state: Arc<PathState>,
    /// The socket of the path's interface; `None` while that interface is gone.
    pub socket: Option<Arc<OuterSocket>>,
    /// Role.
    pub role: Role,
    /// Weight for the aggregate policy.
    pub weight: u32,
    /// Destination prefixes pinned to this path.
    pub pin: Vec<Prefix>,
}

impl PathEntry {
    /// Whether packets can go out on this path now.
    #[inline]
    pub fn sendable(&self) -> bool {
        self.socket.is_some() && self.state.usable()
    }
}

/// An outbound SA in a snapshot.
#[derive(Debug)]
pub struct OutboundEntry {
    /// The SA's name (configuration, status).
    pub name: String,
    /// The SA, shared across snapshots.
    pub sa: Arc<OutboundSa>,
    /// The inbound SPI of the same pair (events name SA pairs by both SPIs).
    pub spi_in: u32,
    /// Our side's selectors: inner source addresses.
    pub local_ts: Vec<Prefix>,
    /// The peer's side: inner destination addresses.
    pub remote_ts: Vec<Prefix>,
    /// Paths, in preference order.
    pub paths: Vec<PathEntry>,
    /// Scheduling policy.
    pub policy: Policy,
    /// Aggregate: a smooth weighted round-robin sequence of path indices.
    pub schedule: Vec<u8>,
    /// Aggregate: position in `schedule`, shared across snapshots and workers.
    pub cursor: Arc<AtomicU64>,
    /// Whether the monitor probes this SA's paths (a mifsec peer) or only keeps them alive.
    pub probes: bool,
}

impl OutboundEntry {
    /// Whether this SA carries `src -> dst`.
    #[inline]
    pub fn matches(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.remote_ts.iter().any(|p| p.contains(dst))
            && self.local_ts.iter().any(|p| p.contains(src))
    }

    /// Takes `n` consecutive schedule positions (aggregate).
    #[inline]
    pub fn take_schedule(&self, n: u64) -> u64 {
        self.cursor.fetch_add(n, Ordering::Relaxed)
    }
}

/// An inbound SA in a snapshot.
#[derive(Debug)]
pub struct InboundEntry {
    /// The SA's name.
    pub name: String,
    /// The SA, shared across snapshots.
    pub sa: Arc<InboundSa>,
    /// Inner destinations we accept (our side).
    pub local_ts: Vec<Prefix>,
    /// Inner sources we accept (the peer's side).
    pub remote_ts: Vec<Prefix>,
    /// The outbound SA of the same pair: probe replies go out on it.
    pub reply: Option<Arc<OutboundSa>>,
    /// The pair's paths, to credit received packets and probe answers.
    pub paths: Vec<PathEntry>,
    /// Reorder buffer, when the peer spreads this SA over paths of different delay.
    pub reorder: Option<Arc<crate::reorder::Reorder>>,
}

impl InboundEntry {
    /// Whether an inner packet `src -> dst` is inside the SA's selectors.
    #[inline]
    pub fn allows(&self, src: IpAddr, dst: IpAddr) -> bool {
        self.remote_ts.iter().any(|p| p.contains(src))
            && self.local_ts.iter().any(|p| p.contains(dst))
    }

    /// The path a packet from `from` on `socket` arrived on.
    #[inline]
    pub fn path_of(&self, socket: &Arc<OuterSocket>, from: SocketAddr) -> Option<&PathEntry> {
        self.paths.iter().find(|p| {
            p.state.remote == from && p.socket.as_ref().is_some_and(|s| Arc::ptr_eq(s, socket))
        })
    }
}

/// One immutable snapshot.
#[derive(Debug, Default)]
pub struct SaTable {
    /// Monotonic number of this snapshot.
    pub generation: u64,
    /// Outbound SAs, in lookup order.
    pub outbound: Vec<OutboundEntry>,
    /// Inbound SAs by SPI.
    pub inbound: HashMap<u32, InboundEntry>,
    /// The outer sockets, one per interface, by interface name.
    pub sockets: Vec<(String, Arc<OuterSocket>)>,
}

impl SaTable {
    /// The outbound SA for a packet from `src` to `dst`.
    #[inline]
    pub fn outbound_for(&self, src: IpAddr, dst: IpAddr) -> Option<&OutboundEntry> {
        self.outbound.iter().find(|e| e.matches(src, dst))
    }

    /// The inbound SA with this SPI.
    #[inline]
    pub fn inbound(&self, spi: u32) -> Option<&InboundEntry> {
        self.inbound.get(&spi)
    }
}

/// A smooth weighted round-robin sequence (as nginx's) over paths with these weights,
/// normalised to at most 64 slots so that a burst interleaves the paths finely.
pub fn smooth_schedule(weights: &[u32]) -> Vec<u8> {
    if weights.is_empty() {
        return Vec::new();
    }
    let total: u64 = weights.iter().map(|&w| u64::from(w.max(1))).sum();
    let slots = 64u64.min(total.max(1));
    let w: Vec<i64> = weights
        .iter()
        .map(|&x| ((u64::from(x.max(1)) * slots).div_ceil(total)).max(1) as i64)
        .collect();
    let sum: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    (0..sum)
        .map(|_| {
            for (c, wi) in current.iter_mut().zip(&w) {
                *c += wi;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|&(i, c)| (*c, -(i as i64)))
                .unwrap_or((0, &0));
            current[best] -= sum;
            best as u8
        })
        .collect()
}

/// The aggregate schedule of an SA's paths: the active paths by weight (standby and
/// alternate paths have no slot; the scheduler falls back to them only while no active path
/// is live).
pub fn aggregate_schedule(paths: &[PathEntry]) -> Vec<u8> {
    let weights: Vec<u32> = paths
        .iter()
        .map(|p| if p.role == Role::Active { p.weight } else { 0 })
        .collect();
    smooth_schedule(&weights)
        .into_iter()
        .filter(|&i| weights[usize::from(i)] > 0)
        .collect()
}

/// The published table. Cheap to read from any thread; written by the control side.
#[derive(Debug)]
pub struct SaTables {
    current: ArcSwap<SaTable>,
    swaps: AtomicU64,
}

impl Default for SaTables {
    fn default() -> Self {
        SaTables {
            current: ArcSwap::from_pointee(SaTable::default()),
            swaps: AtomicU64::new(0),
        }
    }
}

impl SaTables {
    /// The current snapshot (lock-free; hold it for one batch, not longer).
    #[inline]
    pub fn load(&self) -> Guard<Arc<SaTable>> {
        self.current.load()
    }

    /// The current snapshot as an owned `Arc`.
    pub fn load_full(&self) -> Arc<SaTable> {
        self.current.load_full()
    }

    /// Publishes `table` with one atomic pointer swap, giving it the next generation.
    pub fn publish(&self, mut table: SaTable) {
        table.generation = self.swaps.fetch_add(1, Ordering::Relaxed) + 1;
        self.current.store(Arc::new(table));
    }

    /// Number of swaps so far.
    pub fn swaps(&self) -> u64 {
        self.swaps.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let p: Prefix = "10.1.0.0/24".parse().unwrap();
        assert!(p.contains("10.1.0.77".parse().unwrap()));
        assert!(!p.contains("10.1.1.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let any: Prefix = "0.0.0.0/0".parse().unwrap();
        assert!(any.contains("1.2.3.4".parse().unwrap()));
        let host: Prefix = "fd00::1".parse().unwrap();
        assert_eq!(host.len, 128);
        assert!(host.contains("fd00::1".parse().unwrap()));
        assert!(!host.contains("fd00::2".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Prefix>().is_err());
        assert!("nope".parse::<Prefix>().is_err());
    }

    #[test]
    fn smooth_schedule_follows_weights_and_interleaves() {
        let s = smooth_schedule(&[300, 100]);
        let a = s.iter().filter(|&&i| i == 0).count();
        let b = s.iter().filter(|&&i| i == 1).count();
        assert_eq!(a, 3 * b, "{s:?}");
        // Never more than three of path 0 in a row.
        assert!(!s.windows(4).any(|w| w.iter().all(|&i| i == 0)), "{s:?}");
        assert_eq!(smooth_schedule(&[1]), vec![0]);
        assert_eq!(smooth_schedule(&[]), Vec::<u8>::new());
        let s = smooth_schedule(&[300, 30]);
        assert!(s.contains(&1) && s.iter().filter(|&&i| i == 1).count() * 8 < s.len());
    }
}
