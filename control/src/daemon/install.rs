//! Child SAs into the engine: a negotiated [`ChildSa`] becomes an engine SA
//! (`Engine::install_sa`, named `<conn>-<child>-<spi_in hex>`) with one engine path per
//! pair of addresses the event lists (today one: the IKE SA's, at port 4500), the first
//! with the SA and the others by `Engine::add_path`. A client puts its
//! virtual IP on the TUN and routes the child's remote selectors into it; a gateway routes
//! the peer's selectors (its virtual IP) into the TUN. Deleting the IKE SA (either side)
//! removes them again. A rekeyed pair stays installed behind its successor until its
//! Delete completes (make-before-break). When the IKE SA moves (MOBIKE,
//! [`Event::IkeSaMoved`](crate::ike::Event::IkeSaMoved)) every child's engine paths move
//! make-before-break: new paths added, the first made active, then the old ones removed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use zeroize::Zeroizing;

use super::ike_thread::{Entry, IkeThread};
use super::status::{ChildState, IkeChildStatus};
use crate::dataplane::engine::{Engine, EngineError, PathSpec, SaSpec};
use crate::dataplane::iproute::Change;
use crate::dataplane::sa_table::{Policy, Prefix, Role};
use crate::ike::endpoint::SaHandle;
use crate::ike::{ChildMove, ChildSa, Mode};
use crate::wire::TrafficSelector;
use tracing::{error, info, warn};

/// A child SA installed in the engine.
pub(super) struct Installed {
    pub(super) status: IkeChildStatus,
    pub(super) spi_out: u32,
    /// What was installed (keys in zeroized memory), to move it behind a newer pair.
    pub(super) spec: SaSpec,
    /// Installed again behind its successor (which then carries the outbound traffic).
    pub(super) behind: bool,
    /// Inbound packets in the engine's last usage report of the pair.
    pub(super) last_in: u64,
    /// Outbound packets in that report (MOBIKE path checks: sent without answer).
    pub(super) last_out: u64,
    /// Routes we added into the TUN.
    pub(super) routes: Vec<Prefix>,
    /// The names of its engine paths, the active one first (`p1`, ... as installed;
    /// `m<N>p1`, ... after the IKE SA's N-th move).
    pub(super) paths: Vec<String>,
}

/// Why a negotiated child SA could not be installed.
#[derive(Debug)]
pub enum InstallError {
    /// The IKE SA it belongs to is gone.
    NoIkeSa(SaHandle),
    /// No `[interfaces.*]` has the local address of one of its paths.
    NoInterface(IpAddr),
    /// It came with no path.
    NoPath,
    /// The engine refused it.
    Engine(EngineError),
}

impl std::fmt::Display for InstallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InstallError::NoIkeSa(h) => write!(f, "no IKE SA {h}"),
            InstallError::NoInterface(a) => write!(f, "no interface with address {a}"),
            InstallError::NoPath => f.write_str("no path to install the child SA on"),
            InstallError::Engine(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for InstallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            InstallError::Engine(e) => Some(e),
            _ => None,
        }
    }
}

impl IkeThread {
    /// Installs a negotiated child SA in the engine, with its VIP and routes.
    pub(super) fn install(&mut self, h: SaHandle, c: ChildSa) -> Result<(), InstallError> {
        let (Some(ci), Some(sa)) = (self.ep.connection_of(h), self.ep.sa(h)) else {
            return Err(InstallError::NoIkeSa(h));
        };
        let conn = &self.conns[ci];
        let initiator = sa.is_initiator();
        let empty = Entry::default();
        let e = self.entries.get(&h).unwrap_or(&empty);
        let mut paths = self.engine_paths(&c.paths)?.into_iter();
        let first = paths.next().ok_or(InstallError::NoPath)?;
        let mut path_names = vec![first.name.clone()];
        if !c.udp_encap {
            warn!(
                "no NAT and no forced encapsulation; mifsec sends ESP in UDP anyway (set encap = true)"
            );
        }
        let sa_name = format!("{}-{}-{:08x}", conn.name, c.name, c.spi_in);
        let local_ts: Vec<Prefix> = c.local_ts.iter().flat_map(ts_prefixes).collect();
        let remote_ts: Vec<Prefix> = c.remote_ts.iter().flat_map(ts_prefixes).collect();
        let spec = SaSpec {
            name: sa_name.clone(),
            mode: c.mode,
            cipher: c.cipher,
            esn: c.esn,
            spi_out: c.spi_out,
            key_out: Zeroizing::new(c.keymat_out.to_vec()),
            spi_in: c.spi_in,
            key_in: Zeroizing::new(c.keymat_in.to_vec()),
            local_ts: local_ts.clone(),
            remote_ts: remote_ts.clone(),
            policy: Policy::Failover,
            paths: vec![first],
            reorder: Duration::ZERO,
            // A standard peer discards mifsec's probes: keep NAT bindings alive instead.
            probes: false,
            // The engine pushes the pair's usage for lifetimes by volume, liveness checks
            // and MOBIKE path checks (outbound traffic without answer).
            report_usage: conn.ike.child_volume_limits()
                || conn.ike.dpd.delay.is_some()
                || (conn.ike.mobike && conn.ike.roam.check_delay.is_some()),
        };
        self.engine
            .install_sa(spec.clone())
            .map_err(InstallError::Engine)?;
        // Further paths through the engine's multi-path API, as a later one would be.
        for p in paths {
            let name = p.name.clone();
            match self.engine.add_path(&sa_name, p) {
                Ok(_) => path_names.push(name),
                Err(err) => warn!("child SA {sa_name}: adding path {name}: {err}"),
            }
        }
        let mut routes = Vec::new();
        let vips: &[IpAddr] = if initiator { &e.vips } else { &[] };
        if c.mode == Mode::Tunnel {
            for p in &remote_ts {
                // A rekeyed child's successor needs no new route: the route is the same.
                let have = e.children.iter().any(|c| c.routes.contains(p));
                // Traffic into the tunnel leaves from our virtual IP of its family.
                let src = vips
                    .iter()
                    .find(|v| v.is_ipv4() == p.addr.is_ipv4())
                    .copied();
                if !have {
                    self.ip_change(Change::AddRoute {
                        prefix: *p,
                        dev: self.tun.clone(),
                        src,
                    });
                }
                routes.push(*p);
            }
        }
        let status = IkeChildStatus {
            name: c.name.clone(),
            sa: sa_name.clone(),
            state: ChildState::Installed,
            spi_in: format!("{:08x}", c.spi_in),
            spi_out: format!("{:08x}", c.spi_out),
            cipher: c.cipher.name().into(),
            mode: c.mode.name().into(),
            udp_encap: c.udp_encap,
            esn: c.esn,
            local_ts: local_ts.iter().map(ToString::to_string).collect(),
            remote_ts: remote_ts.iter().map(ToString::to_string).collect(),
        };
        info!(
            "installed as {sa_name}: in {} out {}, {}, {} === {}{}",
            status.spi_in,
            status.spi_out,
            status.cipher,
            status.local_ts.join(" "),
            status.remote_ts.join(" "),
            if vips.is_empty() {
                String::new()
            } else {
                let v: Vec<String> = vips.iter().map(ToString::to_string).collect();
                format!(", vips {}", v.join(" "))
            }
        );
        self.entry(h).children.push(Installed {
            status,
            spi_out: c.spi_out,
            spec,
            behind: false,
            last_in: 0,
            last_out: 0,
            routes,
            paths: path_names,
        });
        Ok(())
    }

    /// IKE SA `h` moved (MOBIKE, its `n`-th move): every child of `moves` goes to its new
    /// pairs, make-before-break and without a rekey. For each child SA the new engine paths
    /// (`m<n>p1`, ...) are added first (standby), the first is made the active one, and only
    /// then are the old paths removed: at no moment has the SA no path, and its keys,
    /// sequence counter and replay window stay as they are. ESP goes in UDP on port 4500 on
    /// the new pair whatever the NAT state (the engine speaks only ESP in UDP). Returns how
    /// many child SAs moved.
    pub(super) fn move_children(&mut self, h: SaHandle, moves: &[ChildMove], n: u64) -> usize {
        let mut moved = 0;
        for m in moves {
            let specs = match self.engine_paths(&m.paths) {
                Ok(s) if !s.is_empty() => s,
                Ok(_) => continue,
                Err(e) => {
                    warn!("child SA {:08x} cannot move: {e}", m.spi_in);
                    continue;
                }
            };
            let Some(c) = self
                .entries
                .get_mut(&h)
                .and_then(|e| e.children.iter_mut().find(|c| c.spec.spi_in == m.spi_in))
            else {
                continue;
            };
            c.status.udp_encap = m.udp_encap;
            let same =
                |a: &PathSpec, b: &PathSpec| (&a.interface, a.remote) == (&b.interface, b.remote);
            if specs.len() == c.spec.paths.len()
                && specs.iter().zip(&c.spec.paths).all(|(a, b)| same(a, b))
            {
                continue;
            }
            let sa = c.spec.name.clone();
            let mut added = Vec::new();
            let mut installed = Vec::new();
            for (i, mut p) in specs.into_iter().enumerate() {
                p.name = format!("m{n}p{}", i + 1);
                p.role = Role::Standby;
                match self.engine.add_path(&sa, p.clone()) {
                    Ok(_) => {
                        added.push(p.name.clone());
                        p.role = if i == 0 { Role::Active } else { Role::Standby };
                        installed.push(p);
                    }
                    Err(e) => warn!("child SA {sa}: adding path {}: {e}", p.name),
                }
            }
            let Some(first) = added.first() else {
                continue;
            };
            if let Err(e) = self.engine.handover(&sa, first, true) {
                warn!("child SA {sa}: making {first} active: {e}");
                continue;
            }
            for old in std::mem::replace(&mut c.paths, added) {
                if let Err(e) = self.engine.remove_path(&sa, &old) {
                    warn!("child SA {sa}: removing path {old}: {e}");
                }
            }
            let to: Vec<String> = installed.iter().map(|p| p.remote.to_string()).collect();
            info!(
                "child SA {sa} moved to {} on {} (make-before-break)",
                to.join(" "),
                installed[0].interface
            );
            c.spec.paths = installed;
            moved += 1;
        }
        moved
    }

    /// One engine path per pair of addresses (ours, the peer's) a child SA is to be
    /// installed on (`ChildSa::paths`): `p1`, `p2`, ... on the interface that has our
    /// address (the one with our port first), to the peer's address. The first is active,
    /// the others stand by (the SA's policy is failover).
    fn engine_paths(
        &self,
        pairs: &[(SocketAddr, SocketAddr)],
    ) -> Result<Vec<PathSpec>, InstallError> {
        pairs
            .iter()
            .enumerate()
            .map(|(n, (local, remote))| {
                let iface = self
                    .ifaces
                    .iter()
                    .find(|f| f.address == local.ip() && f.port == local.port())
                    .or_else(|| self.ifaces.iter().find(|f| f.address == local.ip()))
                    .ok_or(InstallError::NoInterface(local.ip()))?;
                Ok(PathSpec {
                    name: format!("p{}", n + 1),
                    interface: iface.name.clone(),
                    remote: *remote,
                    role: if n == 0 { Role::Active } else { Role::Standby },
                    weight: 1,
                    pin: Vec::new(),
                    verify: false,
                })
            })
            .collect()
    }

    /// We initiated a rekey: the peer has the new pair already, so our outbound traffic
    /// moves to it at once (otherwise it would stay on the old pair until the Delete
    /// exchange completes, and packets in flight when the peer removes the old pair would
    /// be lost). The engine sends on the first SA whose selectors match, so the old pair is
    /// moved behind the new one; it keeps its state (replay window included) and keeps
    /// accepting inbound packets until its Delete completes.
    pub(super) fn outbound_to_newest(&mut self, h: SaHandle, old_spi_in: u32) {
        let Some(old) = self
            .entries
            .get_mut(&h)
            .and_then(|e| e.children.iter_mut().find(|c| c.spec.spi_in == old_spi_in))
        else {
            return;
        };
        Self::move_behind(&self.engine, old);
    }

    pub(super) fn move_behind(engine: &Engine, old: &mut Installed) {
        if old.behind {
            return;
        }
        let name = &old.spec.name;
        if let Err(e) = engine.demote_sa(name) {
            warn!("moving {name} behind its successor: {e}");
            return;
        }
        old.behind = true;
    }

    pub(super) fn uninstall(&self, c: Installed) {
        for p in &c.routes {
            self.ip_change(Change::DelRoute {
                prefix: *p,
                dev: self.tun.clone(),
            });
        }
        match self.engine.remove_sa(&c.status.sa) {
            Ok(_) => info!("child SA {} removed", c.status.sa),
            Err(e) => warn!("removing child SA {}: {e}", c.status.sa),
        }
    }

    /// Removes what a dead IKE SA installed (child SAs, routes, the virtual IPs) and
    /// forgets it; returns whether its connection is to be initiated again.
    pub(super) fn cleanup(&mut self, h: SaHandle) -> bool {
        let Some(e) = self.entries.remove(&h) else {
            return false;
        };
        for c in e.children {
            self.uninstall(c);
        }
        for v in e.vips {
            self.ip_change(Change::DelAddress {
                addr: v,
                dev: self.tun.clone(),
            });
        }
        e.restart
    }

    /// Puts the virtual IPs assigned to us (as initiator) on the TUN.
    pub(super) fn put_vips(&mut self, h: SaHandle, vips: &[IpAddr]) {
        for v in vips {
            self.ip_change(Change::AddAddress {
                addr: *v,
                dev: self.tun.clone(),
            });
            self.entry(h).vips.push(*v);
        }
    }

    /// Queues an address or route change for the helper thread (which logs a failure);
    /// waits only when [`IP_QUEUE`](super::ike_thread::IP_QUEUE) changes wait already.
    fn ip_change(&self, change: Change) {
        if let Err(e) = self.ip.push(change) {
            error!("{e}");
        }
    }
}

/// The smallest list of prefixes covering a selector's address range (ports and protocol
/// are not enforced by the engine).
pub fn ts_prefixes(ts: &TrafficSelector) -> Vec<Prefix> {
    let (start, end, bits, v4) = match ts {
        TrafficSelector::Ipv4 { start, end, .. } => (
            u128::from(u32::from(*start)),
            u128::from(u32::from(*end)),
            32u32,
            true,
        ),
        TrafficSelector::Ipv6 { start, end, .. } => {
            (u128::from(*start), u128::from(*end), 128u32, false)
        }
        _ => return Vec::new(),
    };
    let mut out = Vec::new();
    if start > end {
        return out;
    }
    let mut cur = start;
    loop {
        // The largest block aligned at `cur` that ends within `end`.
        let fits = |k: u32| {
            if k >= 128 {
                cur == 0 && end == u128::MAX
            } else {
                cur.checked_add((1u128 << k) - 1).is_some_and(|l| l <= end)
            }
        };
        let mut k = cur.trailing_zeros().min(bits);
        while k > 0 && !fits(k) {
            k -= 1;
        }
        let addr = if v4 {
            IpAddr::V4(Ipv4Addr::from(cur as u32))
        } else {
            IpAddr::V6(cur.into())
        };
        out.push(Prefix {
            addr,
            len: (bits - k) as u8,
        });
        if k >= 128 {
            return out;
        }
        let last = cur + ((1u128 << k) - 1);
        if last >= end {
            return out;
        }
        cur = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::config::{ts_prefix, ts_range};

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn selectors_to_prefixes() {
        let any4 = ts_prefix("0.0.0.0".parse().unwrap(), 0);
        assert_eq!(ts_prefixes(&any4), vec![p("0.0.0.0/0")]);
        let any6 = ts_prefix("::".parse().unwrap(), 0);
        assert_eq!(ts_prefixes(&any6), vec![p("::/0")]);
        let net = ts_prefix("10.88.0.0".parse().unwrap(), 16);
        assert_eq!(ts_prefixes(&net), vec![p("10.88.0.0/16")]);
        let host = ts_prefix("10.77.0.1".parse().unwrap(), 32);
        assert_eq!(ts_prefixes(&host), vec![p("10.77.0.1/32")]);
        let r = ts_range("10.0.0.1".parse().unwrap(), "10.0.0.6".parse().unwrap()).unwrap();
        assert_eq!(
            ts_prefixes(&r),
            vec![
                p("10.0.0.1/32"),
                p("10.0.0.2/31"),
                p("10.0.0.4/31"),
                p("10.0.0.6/32")
            ]
        );
        let top = ts_range(
            "255.255.255.254".parse().unwrap(),
            "255.255.255.255".parse().unwrap(),
        )
        .unwrap();
        assert_eq!(ts_prefixes(&top), vec![p("255.255.255.254/31")]);
    }
}
