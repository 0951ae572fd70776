//! An IKE SA's addresses: the paths (a local and a remote socket address) it knows, each
//! with what NAT detection found on it. Today an IKE SA has one path, the one IKE_SA_INIT
//! ran on (after any float to the NAT-T port), which the peer's MOBIKE UPDATE_SA_ADDRESSES
//! moves (`move_to`); the set also keeps whether MOBIKE is in use and the peer's list of
//! additional addresses (bounded). MOBIKE as initiator and the multi-interface extension
//! will add and switch paths here.

use std::net::{IpAddr, SocketAddr};

use super::{NatStatus, Stats};
use crate::wire::{NotifyType, Payload};

/// The most additional addresses of the peer's (RFC 4555 ADDITIONAL_IP4_ADDRESS /
/// ADDITIONAL_IP6_ADDRESS) an IKE SA keeps; further ones are dropped and counted.
pub const MAX_PEER_ADDRESSES: usize = 16;

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
    /// MOBIKE (RFC 4555) is in use: both sides sent MOBIKE_SUPPORTED in IKE_AUTH.
    mobike: bool,
    /// The peer's additional addresses (its list from IKE_AUTH or its last INFORMATIONAL
    /// update), at most [`MAX_PEER_ADDRESSES`].
    peer_addresses: Vec<IpAddr>,
    /// The path the child SAs are on while it differs from the current one: the peer moved
    /// the IKE SA to an address not yet known to be reachable, and our return-routability
    /// check ([`RouteCheck`]) is under way.
    children: Option<Path>,
    /// The peer's addresses (with port) known to be reachable: those the child SAs were on
    /// before, and those that answered a check; the last [`MAX_VERIFIED`].
    verified: Vec<SocketAddr>,
    /// The return-routability check under way, if any.
    check: Option<RouteCheck>,
    /// The IKE SA (SPIs) and Message ID of the last UPDATE_SA_ADDRESSES that moved it.
    last_update: Option<((u64, u64), u32)>,
}

/// How many verified peer addresses an IKE SA remembers.
pub const MAX_VERIFIED: usize = 16;

/// A return-routability check (RFC 4555 sections 3.8 and 5.2.2): our INFORMATIONAL with
/// COOKIE2 to the path the peer moved to; the child SAs follow when the answer echoes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::ike::sa) struct RouteCheck {
    /// The COOKIE2 sent.
    pub(in crate::ike::sa) cookie: Vec<u8>,
    /// The path checked.
    pub(in crate::ike::sa) path: Path,
}

/// The peer's address list as one message carries it (RFC 4555 section 3.6).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(in crate::ike::sa) struct AddressList {
    /// The addresses, deduplicated, at most [`MAX_PEER_ADDRESSES`].
    pub(in crate::ike::sa) addresses: Vec<IpAddr>,
    /// Notifies not used: over the cap, of a wrong length, or duplicates.
    pub(in crate::ike::sa) dropped: u64,
}

impl AddressList {
    /// The list in `payloads`: `None` when they carry none of ADDITIONAL_IP4_ADDRESS,
    /// ADDITIONAL_IP6_ADDRESS, NO_ADDITIONAL_ADDRESSES (no update). NO_ADDITIONAL_ADDRESSES
    /// is the empty list.
    pub(in crate::ike::sa) fn parse(payloads: &[Payload]) -> Option<AddressList> {
        let mut list = AddressList::default();
        let mut any = false;
        for p in payloads {
            let Payload::Notify(n) = p else { continue };
            let ip = match n.notify_type {
                NotifyType::NoAdditionalAddresses => {
                    any = true;
                    continue;
                }
                NotifyType::AdditionalIp4Address => {
                    any = true;
                    <[u8; 4]>::try_from(n.data.as_slice())
                        .ok()
                        .map(IpAddr::from)
                }
                NotifyType::AdditionalIp6Address => {
                    any = true;
                    <[u8; 16]>::try_from(n.data.as_slice())
                        .ok()
                        .map(IpAddr::from)
                }
                _ => continue,
            };
            match ip {
                Some(ip)
                    if list.addresses.len() < MAX_PEER_ADDRESSES
                        && !list.addresses.contains(&ip) =>
                {
                    list.addresses.push(ip)
                }
                _ => list.dropped += 1,
            }
        }
        any.then_some(list)
    }
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
            mobike: false,
            peer_addresses: Vec::new(),
            children: None,
            verified: Vec::new(),
            check: None,
            last_update: None,
        }
    }

    /// Whether MOBIKE is in use (both sides sent MOBIKE_SUPPORTED).
    pub(in crate::ike::sa) fn mobike(&self) -> bool {
        self.mobike
    }

    /// IKE_AUTH is over: MOBIKE is in use if `both` sides sent MOBIKE_SUPPORTED, and then
    /// the peer's address list in its IKE_AUTH message (`inner`) is kept (RFC 4555
    /// section 3.4); drops are counted in `stats`.
    pub(in crate::ike::sa) fn note_mobike(
        &mut self,
        both: bool,
        inner: &[Payload],
        stats: &mut Stats,
    ) {
        self.mobike = both;
        if let Some(list) = both.then(|| AddressList::parse(inner)).flatten() {
            stats.peer_addresses_dropped += self.set_peer_addresses(list);
        }
    }

    /// The peer's additional addresses, as its last list said.
    pub(in crate::ike::sa) fn peer_addresses(&self) -> &[IpAddr] {
        &self.peer_addresses
    }

    /// The peer's address list is now `list` (each list replaces the one before, RFC 4555
    /// section 3.6). Returns how many of its notifies were dropped.
    pub(in crate::ike::sa) fn set_peer_addresses(&mut self, list: AddressList) -> u64 {
        self.peer_addresses = list.addresses;
        list.dropped
    }

    /// The current path moves to `local`, `remote` with NAT state `nat` (MOBIKE's
    /// UPDATE_SA_ADDRESSES, RFC 4555 section 3.5). Returns whether its addresses changed.
    pub(in crate::ike::sa) fn move_to(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        nat: NatStatus,
    ) -> bool {
        let p = self.current_mut();
        let moved = (p.local, p.remote) != (local, remote);
        *p = Path { local, remote, nat };
        moved
    }

    /// The path the child SAs are on: the current one unless a return-routability check
    /// is under way.
    pub(in crate::ike::sa) fn children_path(&self) -> &Path {
        self.children.as_ref().unwrap_or(self.current())
    }

    /// Whether the peer's `remote` is known to be reachable: the child SAs' path goes
    /// there, or it answered a check before.
    pub(in crate::ike::sa) fn is_verified(&self, remote: SocketAddr) -> bool {
        self.children_path().remote == remote || self.verified.contains(&remote)
    }

    /// The child SAs stay on their path while the current one moves on (a check is
    /// starting): keeps their path if they have none of their own yet.
    pub(in crate::ike::sa) fn hold_children(&mut self) {
        if self.children.is_none() {
            self.children = Some(*self.current());
        }
    }

    /// The child SAs join the current path (verified, or needing no check); the path they
    /// leave is remembered as reachable. Returns whether their addresses changed.
    pub(in crate::ike::sa) fn children_follow(&mut self) -> bool {
        let old = *self.children_path();
        self.children = None;
        self.check = None;
        let new = *self.current();
        for r in [old.remote, new.remote] {
            self.verified.retain(|v| *v != r);
            self.verified.push(r);
        }
        while self.verified.len() > MAX_VERIFIED {
            self.verified.remove(0);
        }
        (old.local, old.remote) != (new.local, new.remote) || old.nat != new.nat
    }

    /// The return-routability check under way.
    pub(in crate::ike::sa) fn check(&self) -> Option<&RouteCheck> {
        self.check.as_ref()
    }

    /// The check under way failed: the child SAs stay where they are (a later update from
    /// the same address checks it again).
    pub(in crate::ike::sa) fn end_check(&mut self) {
        self.check = None;
    }

    /// A check starts (replacing any under way).
    pub(in crate::ike::sa) fn start_check(&mut self, check: RouteCheck) {
        self.hold_children();
        self.check = Some(check);
    }

    /// Whether an UPDATE_SA_ADDRESSES with Message ID `id` on IKE SA `spis` (`current`:
    /// the current IKE SA, not one being replaced) is older than the last one processed
    /// (RFC 4555 section 3.5: it must not move the SA back). Records it if not.
    pub(in crate::ike::sa) fn update_is_stale(
        &mut self,
        spis: (u64, u64),
        id: u32,
        current: bool,
    ) -> bool {
        let stale = match self.last_update {
            Some((s, last)) if s == spis => id <= last,
            // One on an old IKE SA after one on its successor.
            Some(_) => !current,
            None => false,
        };
        if !stale {
            self.last_update = Some((spis, id));
        }
        stale
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

    /// A clone's paths (RFC 7791): these, MOBIKE and the peer's addresses included, without
    /// what belongs to an exchange under way (a route check, the last update's ID).
    pub(in crate::ike::sa) fn for_clone(&self) -> PathSet {
        PathSet {
            children: None,
            check: None,
            last_update: None,
            ..self.clone()
        }
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

    /// Records NAT detection's outcome on the current path.
    pub(in crate::ike::sa) fn set_nat(&mut self, nat: NatStatus) {
        self.current_mut().nat = nat;
    }

    /// Every path.
    pub(in crate::ike::sa) fn all(&self) -> &[Path] {
        &self.paths
    }

    /// The (local, remote) pairs a child SA is installed on: each path's addresses with
    /// the ESP-in-UDP port. Today one: the child SAs' path ([`PathSet::children_path`]).
    pub(in crate::ike::sa) fn child_paths(&self) -> Vec<(SocketAddr, SocketAddr)> {
        let p = self.children_path();
        vec![(
            SocketAddr::new(p.local.ip(), ESP_IN_UDP_PORT),
            SocketAddr::new(p.remote.ip(), ESP_IN_UDP_PORT),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::{AddressList, ESP_IN_UDP_PORT, MAX_PEER_ADDRESSES, PathSet};
    use crate::ike::sa::NatStatus;
    use crate::wire::{NotifyPayload, NotifyType, Payload};
    use std::net::{IpAddr, SocketAddr};

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
        assert_eq!(p.current().nat, nat);
        let c = p.child_paths();
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].0, SocketAddr::new(a.ip(), ESP_IN_UDP_PORT));
        assert_eq!(c[0].1, SocketAddr::new(b.ip(), ESP_IN_UDP_PORT));
        assert_eq!(p.all().len(), 1);
    }

    fn addr_notify(t: NotifyType, data: Vec<u8>) -> Payload {
        Payload::Notify(NotifyPayload::new(t, data))
    }

    #[test]
    fn peer_address_list_is_bounded_deduplicated_and_replaced() {
        assert_eq!(AddressList::parse(&[]), None);
        let mut many: Vec<Payload> = (0..40u8)
            .map(|i| addr_notify(NotifyType::AdditionalIp4Address, vec![10, 0, 0, i]))
            .collect();
        many.push(addr_notify(
            NotifyType::AdditionalIp4Address,
            vec![10, 0, 0, 1],
        ));
        many.push(addr_notify(NotifyType::AdditionalIp6Address, vec![1; 15]));
        let list = AddressList::parse(&many).unwrap();
        assert_eq!(list.addresses.len(), MAX_PEER_ADDRESSES);
        assert_eq!(list.dropped, 40 - MAX_PEER_ADDRESSES as u64 + 2);
        let a: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let mut p = PathSet::new(a, a);
        assert_eq!(p.set_peer_addresses(list), 26);
        assert_eq!(p.peer_addresses().len(), MAX_PEER_ADDRESSES);
        let none = AddressList::parse(&[addr_notify(NotifyType::NoAdditionalAddresses, vec![])]);
        assert_eq!(none, Some(AddressList::default()));
        p.set_peer_addresses(none.unwrap());
        assert!(p.peer_addresses().is_empty());
        let v6 = AddressList::parse(&[addr_notify(
            NotifyType::AdditionalIp6Address,
            vec![0x20; 16],
        )]);
        assert_eq!(v6.unwrap().addresses, vec![IpAddr::from([0x20u8; 16])]);
    }

    #[test]
    fn an_older_update_is_stale() {
        let a: SocketAddr = "192.0.2.1:500".parse().unwrap();
        let mut p = PathSet::new(a, a);
        let (old, new) = ((1, 2), (3, 4));
        assert!(!p.update_is_stale(old, 5, true));
        assert!(p.update_is_stale(old, 5, true));
        assert!(p.update_is_stale(old, 4, true));
        assert!(!p.update_is_stale(old, 6, true));
        // The IKE SA was rekeyed: its successor's first update counts; then one on the old
        // IKE SA (no longer current) is older, whatever its Message ID.
        assert!(!p.update_is_stale(new, 2, true));
        assert!(p.update_is_stale(old, 7, false));
        assert!(!p.update_is_stale(new, 3, true));
    }
}
