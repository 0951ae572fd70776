//! The interface monitor: rtnetlink link, address and route events (issue 10, item 1).
//!
//! [`Monitor::open`] subscribes an event socket to `RTMGRP_LINK`, the IPv4 and IPv6 address
//! groups and the IPv4 and IPv6 route groups (route messages are counted, reported as
//! [`Change::RoutesChanged`], not parsed), *then* dumps links and addresses on a second
//! (request) socket, then replays whatever events queued meanwhile: events are applied in
//! order and idempotently, so the [`Snapshot`] converges to the kernel's state. After that,
//! [`Monitor::poll`] reads the (non-blocking) event socket and reports typed [`Change`]s,
//! found by diffing the snapshot before and after each message. When the kernel drops events
//! (`ENOBUFS`), the monitor dumps afresh and reports the difference ([`Monitor::resync`]).
//!
//! IPv6 addresses that are tentative (DAD in progress) or DAD-failed are not in the snapshot:
//! the address appears when DAD succeeds. [`Debounce`] collapses flaps within a window
//! (strongSwan waits 100 ms) as a pure function of timestamps.
//!
//! Every netlink message is untrusted input: a message that fails to parse is counted in
//! [`MonitorCounters::parse_errors`] and skipped, never a panic.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{RECV_LEN, Requests, parse_datagram, parse_message};

/// The multicast groups the event socket joins.
const GROUPS: u32 = (libc::RTMGRP_LINK
    | libc::RTMGRP_IPV4_IFADDR
    | libc::RTMGRP_IPV6_IFADDR
    | libc::RTMGRP_IPV4_ROUTE
    | libc::RTMGRP_IPV6_ROUTE) as u32;
/// At most this many datagrams discarded before a resync's dump.
const MAX_DISCARD_DATAGRAMS: usize = 10_000;
/// At most this many datagrams read in one [`Monitor::poll`] (the rest wait for the next).
const MAX_POLL_DATAGRAMS: usize = 256;
/// At most this many interfaces, and addresses per interface, in a snapshot.
const MAX_LINKS: usize = 4096;
const MAX_ADDRS_PER_LINK: usize = 256;

/// One address of an interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IfAddr {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

/// One interface as the kernel last told it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// Administratively up (`IFF_UP`) and with carrier (`IFF_LOWER_UP`).
    pub up: bool,
    /// Its usable addresses (no tentative or DAD-failed IPv6 address).
    pub addrs: BTreeSet<IfAddr>,
}

/// The interfaces by index, with their state and addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub links: BTreeMap<u32, Link>,
}

impl Snapshot {
    /// The interface named `name`.
    pub fn by_name(&self, name: &str) -> Option<&Link> {
        self.links.values().find(|l| l.name == name)
    }

    /// Applies one rtnetlink message (idempotent: a new address already known, or a deletion
    /// of one unknown, changes nothing). Messages it does not follow are ignored.
    pub fn apply(&mut self, msg: &RouteNetlinkMessage) {
        match msg {
            RouteNetlinkMessage::NewLink(m) => self.new_link(m),
            RouteNetlinkMessage::DelLink(m) => {
                self.links.remove(&m.header.index);
            }
            RouteNetlinkMessage::NewAddress(m) => {
                if let Some((index, a)) = parse_addr(m) {
                    if let Some(link) = self.links.get_mut(&index) {
                        if usable(m) {
                            if link.addrs.len() < MAX_ADDRS_PER_LINK {
                                link.addrs.insert(a);
                            }
                        } else {
                            // Tentative (or DAD failed since): not usable.
                            link.addrs.remove(&a);
                        }
                    }
                }
            }
            RouteNetlinkMessage::DelAddress(m) => {
                if let Some((index, a)) = parse_addr(m) {
                    if let Some(link) = self.links.get_mut(&index) {
                        link.addrs.remove(&a);
                    }
                }
            }
            _ => {}
        }
    }

    fn new_link(&mut self, m: &LinkMessage) {
        let index = m.header.index;
        let flags = m.header.flags;
        let up = flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp);
        let name = m.attributes.iter().find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        });
        if let Some(link) = self.links.get_mut(&index) {
            link.up = up;
            if let Some(n) = name {
                link.name = n;
            }
        } else if self.links.len() < MAX_LINKS {
            self.links.insert(
                index,
                Link {
                    index,
                    name: name.unwrap_or_default(),
                    up,
                    addrs: BTreeSet::new(),
                },
            );
        }
    }
}

/// The index and address a new/del address message names (`IFA_LOCAL` first: on a
/// point-to-point link `IFA_ADDRESS` is the peer's).
fn parse_addr(m: &AddressMessage) -> Option<(u32, IfAddr)> {
    let mut address = None;
    let mut local = None;
    for a in &m.attributes {
        match a {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let addr = local.or(address)?;
    Some((
        m.header.index,
        IfAddr {
            addr,
            prefix_len: m.header.prefix_len,
        },
    ))
}

/// False for a tentative or DAD-failed address (in the header's flags or `IFA_FLAGS`).
fn usable(m: &AddressMessage) -> bool {
    let hdr = m.header.flags;
    if hdr.contains(AddressHeaderFlags::Tentative) || hdr.contains(AddressHeaderFlags::Dadfailed) {
        return false;
    }
    !m.attributes.iter().any(|a| {
        matches!(a, AddressAttribute::Flags(f)
            if f.contains(AddressFlags::Tentative) || f.contains(AddressFlags::Dadfailed))
    })
}

/// One change the monitor reports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// A new interface (its addresses follow as [`Change::AddrAdded`]).
    LinkAdded {
        index: u32,
        name: String,
        up: bool,
    },
    /// An interface went away (its addresses were reported removed first).
    LinkRemoved {
        index: u32,
        name: String,
    },
    LinkUp {
        index: u32,
        name: String,
    },
    LinkDown {
        index: u32,
        name: String,
    },
    AddrAdded {
        index: u32,
        addr: IfAddr,
    },
    AddrRemoved {
        index: u32,
        addr: IfAddr,
    },
    /// A route was added or removed (paths may need re-evaluating).
    RoutesChanged,
}

/// The changes that turn `old` into `new`, in a fixed order: per interface (by index),
/// removed addresses, link state, added addresses.
pub fn diff(old: &Snapshot, new: &Snapshot, out: &mut Vec<Change>) {
    let empty = BTreeSet::new();
    for (index, o) in &old.links {
        if !new.links.contains_key(index) {
            for a in &o.addrs {
                out.push(Change::AddrRemoved {
                    index: *index,
                    addr: *a,
                });
            }
            out.push(Change::LinkRemoved {
                index: *index,
                name: o.name.clone(),
            });
        }
    }
    for (index, n) in &new.links {
        let o = old.links.get(index);
        let old_addrs = o.map_or(&empty, |o| &o.addrs);
        for a in old_addrs.difference(&n.addrs) {
            out.push(Change::AddrRemoved {
                index: *index,
                addr: *a,
            });
        }
        match o {
            None => out.push(Change::LinkAdded {
                index: *index,
                name: n.name.clone(),
                up: n.up,
            }),
            Some(o) if o.up != n.up => out.push(if n.up {
                Change::LinkUp {
                    index: *index,
                    name: n.name.clone(),
                }
            } else {
                Change::LinkDown {
                    index: *index,
                    name: n.name.clone(),
                }
            }),
            Some(_) => {}
        }
        for a in n.addrs.difference(old_addrs) {
            out.push(Change::AddrAdded {
                index: *index,
                addr: *a,
            });
        }
    }
}

/// What the monitor counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MonitorCounters {
    /// Netlink messages parsed and applied.
    pub messages: u64,
    /// Messages (or datagrams) that failed to parse: skipped.
    pub parse_errors: u64,
    /// Fresh dumps after the kernel dropped events (`ENOBUFS`).
    pub resyncs: u64,
    /// Route added or removed messages (counted, not parsed).
    pub route_events: u64,
    /// Messages of a type the monitor does not use (prefixes, neighbours, rules, ...):
    /// counted, not parsed.
    pub ignored: u64,
}

/// The rtnetlink interface monitor. See the module documentation.
#[derive(Debug)]
pub struct Monitor {
    events: Socket,
    requests: Requests,
    snapshot: Snapshot,
    counters: MonitorCounters,
    buf: Vec<u8>,
}

impl Monitor {
    /// Subscribes, dumps links and addresses, and replays the events that queued meanwhile.
    /// The monitor follows the network namespace of the calling thread.
    pub fn open() -> io::Result<Monitor> {
        let mut events = Socket::new(NETLINK_ROUTE)?;
        events.bind(&SocketAddr::new(0, GROUPS))?;
        events.set_rx_buf_sz(1 << 20)?;
        events.set_non_blocking(true)?;
        let requests = Requests::open()?;
        let mut m = Monitor {
            events,
            requests,
            snapshot: Snapshot::default(),
            counters: MonitorCounters::default(),
            buf: vec![0; RECV_LEN],
        };
        m.snapshot = m.dump()?;
        // The events queued during the dump: applied in order they converge.
        let mut ignored = Vec::new();
        m.poll(&mut ignored)?;
        Ok(m)
    }

    /// Sets the event socket's receive buffer (`SO_RCVBUF`, 1 MiB by default; the kernel
    /// doubles it). Smaller overflows sooner: the tests use it to provoke `ENOBUFS`.
    pub fn set_event_buffer(&self, bytes: usize) -> io::Result<()> {
        self.events.set_rx_buf_sz(bytes)
    }

    /// The current state.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub fn counters(&self) -> MonitorCounters {
        self.counters
    }

    /// Reads every event waiting (up to a bound per call) and appends the changes to `out`.
    /// Returns at once when none is waiting. `ENOBUFS` triggers a [`Monitor::resync`].
    pub fn poll(&mut self, out: &mut Vec<Change>) -> io::Result<()> {
        for _ in 0..MAX_POLL_DATAGRAMS {
            let n = match self.events.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n.min(self.buf.len()),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.resync(out)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut msgs = Vec::new();
            let route_events = self.counters.route_events;
            parse_datagram(&self.buf[..n], &mut self.counters, |m| {
                if let NetlinkPayload::InnerMessage(inner) = m.payload {
                    msgs.push(inner);
                }
            });
            let routes = self.counters.route_events != route_events;
            if !msgs.is_empty() {
                let before = self.snapshot.clone();
                for m in &msgs {
                    self.snapshot.apply(m);
                }
                diff(&before, &self.snapshot, out);
            }
            if routes {
                out.push(Change::RoutesChanged);
            }
        }
        Ok(())
    }

    /// Discards the events queued, dumps links and addresses afresh and reports the difference
    /// from the snapshot held.
    pub fn resync(&mut self, out: &mut Vec<Change>) -> io::Result<()> {
        self.counters.resyncs += 1;
        // What is still queued is older than the events the kernel dropped: replayed after
        // the dump it could bring back a state those lost events undid (an address added,
        // its deletion dropped). The dump supersedes it all.
        for _ in 0..MAX_DISCARD_DATAGRAMS {
            match self.events.recv(&mut &mut self.buf[..], 0) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
                Err(e) => return Err(e),
            }
        }
        let fresh = self.dump()?;
        diff(&self.snapshot, &fresh, out);
        self.snapshot = fresh;
        out.push(Change::RoutesChanged);
        Ok(())
    }

    /// A fresh snapshot: links first (addresses need their link), then addresses.
    fn dump(&mut self) -> io::Result<Snapshot> {
        let mut snap = Snapshot::default();
        for req in [
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        ] {
            self.dump_one(req, &mut snap)?;
        }
        Ok(snap)
    }

    fn dump_one(&mut self, req: RouteNetlinkMessage, snap: &mut Snapshot) -> io::Result<()> {
        let counters = &mut self.counters;
        self.requests.dump(req, |msg| {
            if let Some(m) = parse_message(msg, counters) {
                if let NetlinkPayload::InnerMessage(inner) = m.payload {
                    snap.apply(&inner);
                }
            }
        })
    }
}

impl AsRawFd for Monitor {
    /// The event socket, to register with the event loop (readable when events wait).
    fn as_raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }
}

/// Applies the messages of one datagram to `snapshot` (malformed ones counted in
/// `counters`): the monitor's parsing, for the fuzz target.
pub fn apply_datagram(data: &[u8], snapshot: &mut Snapshot, counters: &mut MonitorCounters) {
    parse_datagram(data, counters, |m| {
        if let NetlinkPayload::InnerMessage(inner) = m.payload {
            snapshot.apply(&inner);
        }
    });
}

/// Collapses flaps: the first change opens a window of `window` (strongSwan: 100 ms); the
/// changes of the window are released together when it closes, each interface address or
/// link state counted once, and a change undone within the window (an address removed and
/// added back, a link down and up) not at all. Pure: time is passed in.
#[derive(Debug, Clone)]
pub struct Debounce {
    window: Duration,
    opened: Option<Instant>,
    /// Per key: the first change of the window and the last.
    pending: Vec<(Key, Change, Change)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Link(u32),
    Addr(u32, IfAddr),
    Routes,
}

fn key_of(c: &Change) -> Key {
    match c {
        Change::LinkAdded { index, .. }
        | Change::LinkRemoved { index, .. }
        | Change::LinkUp { index, .. }
        | Change::LinkDown { index, .. } => Key::Link(*index),
        Change::AddrAdded { index, addr } | Change::AddrRemoved { index, addr } => {
            Key::Addr(*index, *addr)
        }
        Change::RoutesChanged => Key::Routes,
    }
}

/// True when `last` undoes `first` (the state is as before the window).
fn undoes(first: &Change, last: &Change) -> bool {
    matches!(
        (first, last),
        (Change::AddrAdded { .. }, Change::AddrRemoved { .. })
            | (Change::AddrRemoved { .. }, Change::AddrAdded { .. })
            | (Change::LinkUp { .. }, Change::LinkDown { .. })
            | (Change::LinkDown { .. }, Change::LinkUp { .. })
            | (Change::LinkAdded { .. }, Change::LinkRemoved { .. })
    )
}

impl Debounce {
    pub fn new(window: Duration) -> Debounce {
        Debounce {
            window,
            opened: None,
            pending: Vec::new(),
        }
    }

    /// Records `change`, seen at `now`.
    pub fn push(&mut self, now: Instant, change: Change) {
        self.opened.get_or_insert(now);
        let key = key_of(&change);
        if let Some(p) = self.pending.iter_mut().find(|p| p.0 == key) {
            p.2 = change;
        } else {
            self.pending.push((key, change.clone(), change));
        }
    }

    /// When the window closes, if one is open (the time to wake the event loop).
    pub fn deadline(&self) -> Option<Instant> {
        self.opened.map(|t| t + self.window)
    }

    /// The net changes of the window if it has closed by `now`, in first-seen order (empty
    /// when nothing is due, or when everything was undone).
    pub fn take_due(&mut self, now: Instant) -> Vec<Change> {
        match self.deadline() {
            Some(d) if now >= d => {}
            _ => return Vec::new(),
        }
        self.opened = None;
        let mut seen = HashMap::new();
        let mut out = Vec::new();
        for (key, first, last) in self.pending.drain(..) {
            if seen.insert(key, ()).is_none() && !undoes(&first, &last) {
                // A link added and then changed within the window is still new.
                out.push(match (&first, last) {
                    (Change::LinkAdded { .. }, Change::LinkUp { index, name }) => {
                        Change::LinkAdded {
                            index,
                            name,
                            up: true,
                        }
                    }
                    (Change::LinkAdded { .. }, Change::LinkDown { index, name }) => {
                        Change::LinkAdded {
                            index,
                            name,
                            up: false,
                        }
                    }
                    (_, last) => last,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode;
    use super::*;
    use netlink_packet_route::AddressFamily;
    use std::net::Ipv6Addr;

    fn addr(s: &str, p: u8) -> IfAddr {
        IfAddr {
            addr: s.parse().unwrap(),
            prefix_len: p,
        }
    }

    fn link_msg(index: u32, name: &str, flags: LinkFlags) -> RouteNetlinkMessage {
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.header.flags = flags;
        m.attributes.push(LinkAttribute::IfName(name.into()));
        RouteNetlinkMessage::NewLink(m)
    }

    fn addr_msg(index: u32, a: IfAddr, flags: AddressFlags) -> AddressMessage {
        let mut m = AddressMessage::default();
        m.header.family = if a.addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        m.header.index = index;
        m.header.prefix_len = a.prefix_len;
        m.attributes.push(AddressAttribute::Address(a.addr));
        m.attributes.push(AddressAttribute::Flags(flags));
        m
    }

    fn wire(msg: RouteNetlinkMessage) -> Vec<u8> {
        encode(msg)
    }

    fn up() -> LinkFlags {
        LinkFlags::Up | LinkFlags::LowerUp
    }

    #[test]
    fn snapshot_follows_links_and_addresses_and_diff_reports_them() {
        let mut s = Snapshot::default();
        s.apply(&link_msg(2, "eth0", up()));
        let before = s.clone();
        let a = addr("198.18.0.1", 24);
        s.apply(&RouteNetlinkMessage::NewAddress(addr_msg(
            2,
            a,
            AddressFlags::Permanent,
        )));
        s.apply(&link_msg(2, "eth0", LinkFlags::Up)); // carrier lost
        let mut out = Vec::new();
        diff(&before, &s, &mut out);
        assert_eq!(
            out,
            vec![
                Change::LinkDown {
                    index: 2,
                    name: "eth0".into()
                },
                Change::AddrAdded { index: 2, addr: a },
            ]
        );
        assert_eq!(s.by_name("eth0").unwrap().addrs.len(), 1);
        let before = s.clone();
        s.apply(&RouteNetlinkMessage::DelLink(
            match link_msg(2, "eth0", up()) {
                RouteNetlinkMessage::NewLink(m) => m,
                _ => unreachable!(),
            },
        ));
        out.clear();
        diff(&before, &s, &mut out);
        assert_eq!(
            out,
            vec![
                Change::AddrRemoved { index: 2, addr: a },
                Change::LinkRemoved {
                    index: 2,
                    name: "eth0".into()
                },
            ]
        );
    }

    #[test]
    fn tentative_and_dad_failed_ipv6_addresses_are_skipped() {
        let mut s = Snapshot::default();
        s.apply(&link_msg(3, "wl0", up()));
        let a = IfAddr {
            addr: IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1)),
            prefix_len: 64,
        };
        s.apply(&RouteNetlinkMessage::NewAddress(addr_msg(
            3,
            a,
            AddressFlags::Tentative,
        )));
        assert!(s.links[&3].addrs.is_empty(), "tentative address skipped");
        s.apply(&RouteNetlinkMessage::NewAddress(addr_msg(
            3,
            a,
            AddressFlags::Permanent,
        )));
        assert!(s.links[&3].addrs.contains(&a), "usable once DAD is done");
        s.apply(&RouteNetlinkMessage::NewAddress(addr_msg(
            3,
            a,
            AddressFlags::Dadfailed | AddressFlags::Tentative,
        )));
        assert!(s.links[&3].addrs.is_empty(), "DAD failed: no longer usable");
        // The header's flags byte counts as well.
        let mut m = addr_msg(3, a, AddressFlags::empty());
        m.header.flags = AddressHeaderFlags::Tentative;
        s.apply(&RouteNetlinkMessage::NewAddress(m));
        assert!(s.links[&3].addrs.is_empty());
    }

    #[test]
    fn datagrams_parse_round_trip_and_garbage_is_counted_never_a_panic() {
        let mut c = MonitorCounters::default();
        let mut data = wire(link_msg(7, "x", up()));
        data.extend(wire(RouteNetlinkMessage::NewAddress(addr_msg(
            7,
            addr("10.1.2.3", 8),
            AddressFlags::Permanent,
        ))));
        let mut s = Snapshot::default();
        parse_datagram(&data, &mut c, |m| {
            if let NetlinkPayload::InnerMessage(i) = m.payload {
                s.apply(&i)
            }
        });
        assert_eq!(c.messages, 2);
        assert_eq!(c.parse_errors, 0);
        assert!(s.links[&7].addrs.contains(&addr("10.1.2.3", 8)));

        // Truncations, corrupt lengths and random bytes: counted, never a panic.
        let mut c = MonitorCounters::default();
        for cut in 0..data.len() {
            parse_datagram(&data[..cut], &mut c, |_| {});
        }
        let mut bad = data.clone();
        bad[0] = 0xff; // a length past the datagram
        parse_datagram(&bad, &mut c, |_| {});
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let mut junk = data.clone();
            for _ in 0..4 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let i = x as usize % junk.len();
                junk[i] = (x >> 8) as u8;
            }
            parse_datagram(&junk, &mut c, |m| {
                if let NetlinkPayload::InnerMessage(i) = m.payload {
                    Snapshot::default().apply(&i)
                }
            });
        }
        assert!(c.parse_errors > 0);

        // The fuzz target's find: a 4-byte IFA_CACHEINFO (the crate slices 16) is refused.
        let mut m = addr_msg(2, addr("198.18.0.1", 24), AddressFlags::Permanent);
        m.attributes.clear();
        let mut short = wire(RouteNetlinkMessage::NewAddress(m));
        short.extend_from_slice(&[8, 0, 6, 0, 1, 2, 3, 4]);
        let total = short.len() as u32;
        short[..4].copy_from_slice(&total.to_ne_bytes());
        let mut c = MonitorCounters::default();
        parse_datagram(&short, &mut c, |_| {});
        assert_eq!((c.messages, c.parse_errors), (0, 1));
    }

    #[test]
    fn debounce_releases_after_the_window_and_drops_flaps() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut d = Debounce::new(ms(100));
        let a = addr("198.18.0.1", 24);
        let b = addr("198.18.1.1", 24);
        assert!(d.deadline().is_none());
        assert!(d.take_due(t0).is_empty());

        d.push(t0, Change::AddrRemoved { index: 2, addr: a });
        d.push(t0 + ms(10), Change::AddrAdded { index: 3, addr: b });
        d.push(t0 + ms(20), Change::AddrAdded { index: 2, addr: a }); // a flapped back
        assert_eq!(d.deadline(), Some(t0 + ms(100)));
        assert!(d.take_due(t0 + ms(99)).is_empty(), "window still open");
        assert_eq!(
            d.take_due(t0 + ms(100)),
            vec![Change::AddrAdded { index: 3, addr: b }]
        );
        assert!(d.deadline().is_none());
        assert!(d.take_due(t0 + ms(500)).is_empty(), "released once");

        // A link down and up within the window is nothing; down alone is reported.
        let down = Change::LinkDown {
            index: 2,
            name: "e".into(),
        };
        let upc = Change::LinkUp {
            index: 2,
            name: "e".into(),
        };
        d.push(t0 + ms(600), down.clone());
        d.push(t0 + ms(650), upc);
        assert!(d.take_due(t0 + ms(700)).is_empty());
        d.push(t0 + ms(800), down.clone());
        d.push(t0 + ms(850), Change::RoutesChanged);
        d.push(t0 + ms(860), Change::RoutesChanged);
        assert_eq!(d.take_due(t0 + ms(950)), vec![down, Change::RoutesChanged]);
    }
}
