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
use super::mif::MifTrack;
use super::status::{ChildState, IkeChildStatus};
use crate::dataplane::engine::{Engine, EngineError, PathSpec, SaSpec, TableOp};
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
    /// `m<N>p1`, ... after the IKE SA's N-th move; `i1r2`, ... over MIF paths).
    pub(super) paths: Vec<String>,
    /// Over MIF paths (a mifsec peer with the extension): what the daemon tracks of them.
    pub(super) mif: Option<MifTrack>,
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
        // Between mifsec peers: every MIF path at once, verified before use, with the
        // child's policy; else the IKE SA's path, as with any peer.
        let mif_specs = c
            .mif
            .as_ref()
            .map(|m| self.mif_specs(&m.paths))
            .filter(|s| !s.is_empty());
        if c.mif.is_some() && mif_specs.is_none() {
            warn!("no MIF path has a local interface; installed on the IKE SA's path");
        }
        let mif = c.mif.as_ref().filter(|_| mif_specs.is_some());
        let (first, mut paths, policy, reorder) = match (&mif_specs, mif) {
            (Some(specs), Some(m)) => (
                None,
                specs.clone().into_iter(),
                m.policy,
                if m.reorder {
                    super::mif::MIF_REORDER
                } else {
                    Duration::ZERO
                },
            ),
            _ => {
                let mut paths = self.engine_paths(&c.paths)?.into_iter();
                let first = paths.next().ok_or(InstallError::NoPath)?;
                (Some(first), paths, Policy::Failover, Duration::ZERO)
            }
        };
        let mut path_names: Vec<String> = match (&first, &mif_specs) {
            (Some(f), _) => vec![f.name.clone()],
            (None, Some(specs)) => specs.iter().map(|p| p.name.clone()).collect(),
            (None, None) => Vec::new(),
        };
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
            policy,
            paths: match &first {
                Some(f) => vec![f.clone()],
                None => paths.by_ref().collect(),
            },
            reorder,
            // A standard peer discards mifsec's probes: keep NAT bindings alive instead. A
            // mifsec peer answers them: they verify and watch the MIF paths.
            probes: mif.is_some(),
            // The engine pushes the pair's usage for lifetimes by volume, liveness checks
            // and MOBIKE path checks (outbound traffic without answer).
            report_usage: conn.ike.child_volume_limits()
                || conn.ike.dpd.delay.is_some()
                || (conn.ike.mobike && conn.ike.roam.check_delay.is_some()),
        };
        self.engine
            .install_sa(spec.clone())
            .map_err(InstallError::Engine)?;
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .children
            .insert(sa_name.clone(), (conn.name.clone(), c.name.clone()));
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
            mif: None,
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
        crate::events::publish("child-up", || {
            serde_json::json!({
                "conn": conn.name, "ike_id": h.0, "child": status.name, "sa": sa_name,
                "spi_in": status.spi_in, "spi_out": status.spi_out, "mode": status.mode,
                "cipher": status.cipher, "local_ts": status.local_ts,
                "remote_ts": status.remote_ts, "paths": path_names,
            })
        });
        self.entry(h).children.push(Installed {
            status,
            spi_out: c.spi_out,
            spec,
            behind: false,
            last_in: 0,
            last_out: 0,
            routes,
            paths: path_names,
            mif: mif.map(|m| MifTrack {
                policy: m.policy,
                reorder: m.reorder,
                paths: m.paths.clone(),
                soft: None,
                path_events: 0,
            }),
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
            if c.mif.is_some() {
                // With the extension MOBIKE moves the IKE SA only (PROTOCOL 6.4).
                continue;
            }
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
        // Its counters join the removed ones' under the same lock as the removal, so that
        // the metrics never count them twice or not at all.
        let mut book = self
            .book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let last = self.engine.sa_counters(&c.status.sa);
        match self.engine.remove_sa(&c.status.sa) {
            Ok(_) => info!("child SA {} removed", c.status.sa),
            Err(e) => warn!("removing child SA {}: {e}", c.status.sa),
        }
        if let Some(key) = book.children.remove(&c.status.sa) {
            if let Some((out, inbound)) = last {
                book.retired.entry(key).or_default().add(&out, &inbound);
            }
        }
        crate::events::publish("child-down", || {
            serde_json::json!({
                "child": c.status.name, "sa": c.status.sa, "spi_in": c.status.spi_in,
                "spi_out": c.status.spi_out,
            })
        });
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

    fn ps(name: &str, role: Role) -> PathSpec {
        // i<i>r<r>: our interface i (link<i>), the peer's r (198.18.10<r>.1).
        let (i, r) = name[1..].split_once('r').unwrap();
        PathSpec {
            name: name.into(),
            interface: format!("link{i}"),
            remote: format!("198.18.10{r}.1:4500").parse().unwrap(),
            role,
            weight: 1,
            pin: Vec::new(),
            verify: true,
        }
    }

    fn active(names: &[&str]) -> Vec<PathSpec> {
        names.iter().map(|n| ps(n, Role::Active)).collect()
    }

    fn add(name: &str, verify: bool) -> TableOp {
        TableOp::AddPath {
            sa: "sa".into(),
            path: PathSpec {
                verify,
                ..ps(name, Role::Active)
            },
        }
    }

    fn remove(name: &str) -> TableOp {
        TableOp::RemovePath {
            sa: "sa".into(),
            path: name.into(),
        }
    }

    fn order(names: &[&str]) -> TableOp {
        TableOp::SetPathOrder {
            sa: "sa".into(),
            order: names.iter().map(|n| (*n).to_owned()).collect(),
        }
    }

    #[test]
    fn add_and_remove_an_interface() {
        let two = active(&["i1r1", "i1r2"]);
        let four = active(&["i1r1", "i1r2", "i3r1", "i3r2"]);
        let p = plan_paths("sa", &two, &four, PathMove::Set);
        assert_eq!(p.ops, vec![add("i3r1", true), add("i3r2", true)]);
        assert_eq!((p.soft, p.result), (None, four.clone()));
        let p = plan_paths("sa", &four, &two, PathMove::Set);
        assert_eq!(p.ops, vec![remove("i3r1"), remove("i3r2")]);
        assert_eq!(p.soft, None);
        // Nothing to do.
        assert!(plan_paths("sa", &four, &four, PathMove::Set).ops.is_empty());
        assert!(
            plan_paths("sa", &four, &four, PathMove::Soft)
                .soft
                .is_none()
        );
    }

    #[test]
    fn soft_handover_makes_before_it_breaks() {
        let from = active(&["i1r1", "i1r2"]);
        let to = active(&["i3r1", "i3r2"]);
        let p = plan_paths("sa", &from, &to, PathMove::Soft);
        // The new paths first (each used once it answered), the old ones still there.
        assert_eq!(
            p.ops,
            vec![
                add("i3r1", true),
                add("i3r2", true),
                order(&["i3r1", "i3r2"])
            ]
        );
        assert_eq!(
            p.soft,
            Some(SoftWait {
                wait_for: vec!["i3r1".into(), "i3r2".into()],
                remove: vec!["i1r1".into(), "i1r2".into()],
            })
        );
        assert_eq!(p.result, to);
        // To's paths were there already (standby): they become active, From's wait.
        let both = vec![ps("i1r1", Role::Active), ps("i3r1", Role::Standby)];
        let p = plan_paths("sa", &both, &active(&["i3r1"]), PathMove::Soft);
        assert_eq!(
            p.ops,
            vec![
                TableOp::SetRole {
                    sa: "sa".into(),
                    path: "i3r1".into(),
                    role: Role::Active
                },
                order(&["i3r1"])
            ]
        );
        assert_eq!(
            p.soft,
            Some(SoftWait {
                wait_for: vec!["i3r1".into()],
                remove: vec!["i1r1".into()],
            })
        );
    }

    #[test]
    fn hard_handover_replaces_at_once_unverified() {
        let from = active(&["i1r1", "i1r2"]);
        let to = active(&["i3r1", "i3r2"]);
        let p = plan_paths("sa", &from, &to, PathMove::Hard);
        assert_eq!(
            p.ops,
            vec![
                remove("i1r1"),
                remove("i1r2"),
                add("i3r1", false),
                add("i3r2", false)
            ]
        );
        assert_eq!(p.soft, None);
    }

    #[test]
    fn roles_and_order_follow_the_list() {
        let now = active(&["i1r1", "i2r1"]);
        let alt = vec![ps("i1r1", Role::Active), ps("i2r1", Role::Standby)];
        let p = plan_paths("sa", &now, &alt, PathMove::Set);
        assert_eq!(
            p.ops,
            vec![TableOp::SetRole {
                sa: "sa".into(),
                path: "i2r1".into(),
                role: Role::Standby
            }]
        );
        let swapped = active(&["i2r1", "i1r1"]);
        let p = plan_paths("sa", &now, &swapped, PathMove::Set);
        assert_eq!(p.ops, vec![order(&["i2r1", "i1r1"])]);
        // A path listed again with another address is replaced, even in a soft move.
        let mut moved = now.clone();
        moved[1].remote = "198.18.109.1:4500".parse().unwrap();
        let p = plan_paths("sa", &now, &moved, PathMove::Soft);
        assert_eq!(
            p.ops,
            vec![
                remove("i2r1"),
                TableOp::AddPath {
                    sa: "sa".into(),
                    path: moved[1].clone()
                }
            ]
        );
        assert_eq!(p.soft, None);
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

/// How a child SA's engine paths go from what is installed to a new list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PathMove {
    /// Make the list so at once; new paths carry traffic once a probe was answered on them
    /// (installation, ADD_INTERFACE, REMOVE_INTERFACE, SET_ALTERNATES, a withdrawn
    /// interface).
    Set,
    /// Make before break (SOFT_HANDOVER): the new paths are added (verified before use),
    /// the paths that leave stay until one of the new ones answered.
    Soft,
    /// At once (HARD_HANDOVER): the new paths carry traffic without waiting for a probe,
    /// the old ones leave in the same swap.
    Hard,
}

/// The table changes that make SA `sa`'s `installed` paths the `new` list, and for a soft
/// move the paths to remove once one of the added ones answered ([`SoftWait`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PathPlan {
    /// For this swap.
    pub ops: Vec<TableOp>,
    /// Soft: what waits.
    pub soft: Option<SoftWait>,
    /// The paths installed once `ops` (and, soft, the wait) are done: the new list.
    pub result: Vec<PathSpec>,
}

/// The second half of a soft move: once one of `wait_for` answered a probe, `remove` leave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SoftWait {
    /// The paths added by the move.
    pub wait_for: Vec<String>,
    /// The paths that leave.
    pub remove: Vec<String>,
}

/// Plans the move of SA `sa` from its `installed` paths to `new` (PathSpecs named as the
/// MIF paths, `i1r2`, in the order both peers computed): paths that are new are added
/// (`verify` unless the move is hard), paths no longer listed leave (soft: later), roles
/// that changed are set, and the order is made the new list's. Pure: unit-tested below.
pub(super) fn plan_paths(
    sa: &str,
    installed: &[PathSpec],
    new: &[PathSpec],
    how: PathMove,
) -> PathPlan {
    let same = |a: &PathSpec, b: &PathSpec| {
        a.name == b.name && a.interface == b.interface && a.remote == b.remote
    };
    let mut ops = Vec::new();
    let mut leaving = Vec::new();
    // An installed path listed again with other addresses (an interface that came back
    // with another engine name) is replaced.
    for p in installed {
        if !new.iter().any(|n| same(n, p)) {
            leaving.push(p.name.clone());
        }
    }
    // A replaced path cannot wait: its name is needed for the new one.
    let (later, now): (Vec<String>, Vec<String>) = leaving
        .iter()
        .cloned()
        .partition(|l| how == PathMove::Soft && !new.iter().any(|n| n.name == *l));
    for l in &now {
        ops.push(TableOp::RemovePath {
            sa: sa.to_owned(),
            path: l.clone(),
        });
    }
    let mut added = Vec::new();
    for n in new {
        match installed.iter().find(|p| same(n, p)) {
            Some(p) => {
                if p.role != n.role {
                    ops.push(TableOp::SetRole {
                        sa: sa.to_owned(),
                        path: n.name.clone(),
                        role: n.role,
                    });
                }
            }
            None => {
                let mut spec = n.clone();
                spec.verify = how != PathMove::Hard;
                added.push(n.name.clone());
                ops.push(TableOp::AddPath {
                    sa: sa.to_owned(),
                    path: spec,
                });
            }
        }
    }
    // The order after this swap: the new list, then (soft) the paths that wait to leave.
    let order: Vec<String> = new.iter().map(|n| n.name.clone()).collect();
    let before: Vec<String> = installed
        .iter()
        .filter(|p| !now.contains(&p.name))
        .map(|p| p.name.clone())
        .chain(added.iter().cloned())
        .collect();
    let mut after_order = order.clone();
    after_order.extend(later.iter().cloned());
    if before != after_order && !order.is_empty() {
        ops.push(TableOp::SetPathOrder {
            sa: sa.to_owned(),
            order,
        });
    }
    let soft = (!later.is_empty()).then(|| SoftWait {
        wait_for: if added.is_empty() {
            new.iter().map(|n| n.name.clone()).collect()
        } else {
            added
        },
        remove: later,
    });
    PathPlan {
        ops,
        soft,
        result: new.to_vec(),
    }
}
