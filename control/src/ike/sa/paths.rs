//! An IKE SA's addresses: the paths (a local and a remote socket address) it knows, each
//! with what NAT detection found on it. Today an IKE SA has one path, the one IKE_SA_INIT
//! ran on (after any float to the NAT-T port); MOBIKE and the multi-interface extension
//! will add and switch paths here.

use std::net::SocketAddr;

use super::NatStatus;

/// The UDP port ESP travels on (RFC 3948), whatever port IKE uses: a child SA is
/// installed on its IKE SA's addresses with this port.
pub const ESP_IN_UDP_PORT: u16 = 4500;

/// One path of an IKE SA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Path {
    /// Our address.
    pub local: SocketAddr,
    /// The peer's address.
    pub remote: SocketAddr,
    /// What NAT detection found on this path.
    pub nat: NatStatus,
}

/// The paths of an IKE SA; the first is the one IKE messages go on.
#[derive(Debug, Clone)]
pub(in crate::ike::sa) struct PathSet {
    paths: Vec<Path>,
}

impl PathSet {
    /// One path from `local` to `remote`, no NAT known yet.
    pub(in crate::ike::sa) fn new(local: SocketAddr, remote: SocketAddr) -> PathSet {
        PathSet {
            paths: vec![Path {
                local,
                remote,
                nat: NatStatus::default(),
            }],
        }
    }

    /// The path IKE messages go on.
    pub(in crate::ike::sa) fn current(&self) -> &Path {
        &self.paths[0]
    }

    fn current_mut(&mut self) -> &mut Path {
        &mut self.paths[0]
    }

    /// Our address on the current path.
    pub(in crate::ike::sa) fn local(&self) -> SocketAddr {
        self.current().local
    }

    /// The peer's address on the current path.
    pub(in crate::ike::sa) fn remote(&self) -> SocketAddr {
        self.current().remote
    }

    /// Both addresses of the current path.
    pub(in crate::ike::sa) fn pair(&self) -> (SocketAddr, SocketAddr) {
        (self.local(), self.remote())
    }

    /// The current path's addresses are these (a responder learns them from the request;
    /// the initiator may have floated).
    pub(in crate::ike::sa) fn set_addresses(&mut self, local: SocketAddr, remote: SocketAddr) {
        let p = self.current_mut();
        p.local = local;
        p.remote = remote;
    }

    /// Both ends of the current path move to `port` (the float to the NAT-T port, RFC 7296
    /// section 2.23).
    pub(in crate::ike::sa) fn float_to(&mut self, port: u16) {
        let p = self.current_mut();
        p.local.set_port(port);
        p.remote.set_port(port);
    }

    /// NAT detection's outcome on the current path.
    pub(in crate::ike::sa) fn nat(&self) -> NatStatus {
        self.current().nat
    }

    /// Records NAT detection's outcome on the current path.
    pub(in crate::ike::sa) fn set_nat(&mut self, nat: NatStatus) {
        self.current_mut().nat = nat;
    }

    /// Every path.
    pub(in crate::ike::sa) fn all(&self) -> &[Path] {
        &self.paths
    }

    /// The (local, remote) pairs a child SA is installed on: each path's addresses with
    /// the ESP-in-UDP port. Today the current path only.
    pub(in crate::ike::sa) fn child_paths(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let p = self.current();
        vec![(
            SocketAddr::new(p.local.ip(), ESP_IN_UDP_PORT),
            SocketAddr::new(p.remote.ip(), ESP_IN_UDP_PORT),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::{ESP_IN_UDP_PORT, PathSet};
    use crate::ike::sa::NatStatus;
    use std::net::SocketAddr;

    #[test]
    fn current_path_floats_and_children_go_on_the_esp_port() {
        let a: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let b: SocketAddr = "198.51.100.1:500".parse().unwrap();
        let mut p = PathSet::new(a, b);
        assert_eq!(p.pair(), (a, b));
        let nat = NatStatus {
            local_behind_nat: true,
            remote_behind_nat: false,
        };
        p.set_nat(nat);
        p.float_to(4500);
        assert_eq!(p.local().port(), 4500);
        assert_eq!(p.remote().port(), 4500);
        assert_eq!(p.nat(), nat);
        let c = p.child_paths();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, SocketAddr::new(a.ip(), ESP_IN_UDP_PORT));
        assert_eq!(c[0].1, SocketAddr::new(b.ip(), ESP_IN_UDP_PORT));
        assert_eq!(p.all().len(), 1);
    }
}
