//! rtnetlink requests: addresses, routes, link up and MTU ([`Requests`]), and the dumps of
//! the monitor and of the routes.
//!
//! Each request carries a sequence number of its socket and `NLM_F_ACK`; its answer is the
//! messages from the kernel (port 0) with that number, up to the acknowledgement (or
//! `NLMSG_DONE` for a dump). Answers to an earlier request that timed out are skipped. The
//! wait has a deadline ([`ANSWER_TIMEOUT`]), the receive buffer is bounded ([`RECV_LEN`]
//! bytes a datagram, at most [`MAX_ANSWER_DATAGRAMS`] of them). A refusal is returned as a
//! [`RequestError`] naming the operation and the object, with the kernel's errno and its
//! extended-ack text when it sends one (`NETLINK_EXT_ACK`): "add route 10.88.0.1/16 dev
//! mifsec0: Invalid argument: Invalid prefix for given prefix length", "add address
//! 10.1.0.2/32 on mifsec1: no device named mifsec1".
//!
//! Idempotence is the old `ip` semantics: an address or route is added as `ip ... replace`
//! did (`NLM_F_CREATE | NLM_F_REPLACE`: adding one that exists succeeds), a deletion of
//! something absent is an error (`EADDRNOTAVAIL`, `ESRCH`), reported like any other.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use netlink_packet_core::{
    ErrorBuffer, NLM_F_ACK, NLM_F_ACK_TLVS, NLM_F_CAPPED, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REPLACE,
    NLM_F_REQUEST, NetlinkHeader, NetlinkPayload,
};
use netlink_packet_route::address::{
    AddressAttribute, AddressFlags, AddressHeaderFlags, AddressMessage, AddressScope,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteMessageBuffer, RouteProtocol,
    RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use super::{
    HEADER_LEN, MonitorCounters, RECV_LEN, encode_with, for_each_attr, for_each_message,
    message_seq, message_type, parse_message,
};
use crate::sa_table::Prefix;

/// How long the kernel has to answer a request (it answers at once; rtnl_lock may delay).
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many datagrams read for one answer: a bound on time whatever arrives.
pub const MAX_ANSWER_DATAGRAMS: usize = 10_000;
/// The request socket's `SO_RCVBUF` (the kernel doubles it).
const SOCKET_RCVBUF: usize = 256 * 1024;
/// At most this many routes kept from one dump.
const MAX_ROUTES: usize = 65_536;
/// At most this many bytes of the kernel's extended-ack text.
const MAX_EXT_ACK: usize = 256;
/// `NLMSGERR_ATTR_MSG`: the extended ack's text.
const NLMSGERR_ATTR_MSG: u16 = 1;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;

/// Why an answer did not say "done" (before the operation's name is known).
#[derive(Debug)]
pub(super) enum Failure {
    /// Sending or receiving failed.
    Io(io::Error),
    /// The kernel refused: its errno (positive) and extended-ack text.
    Refused { errno: i32, message: Option<String> },
    /// No answer in time.
    Timeout(Duration),
    /// The answer could not be read.
    Malformed(&'static str),
}

impl From<Failure> for io::Error {
    fn from(f: Failure) -> io::Error {
        match f {
            Failure::Io(e) => e,
            Failure::Refused { errno, .. } => io::Error::from_raw_os_error(errno),
            Failure::Timeout(t) => io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no netlink answer within {t:?}"),
            ),
            Failure::Malformed(why) => io::Error::new(io::ErrorKind::InvalidData, why),
        }
    }
}

/// One request socket: numbered requests, each answer matched by number and sender.
#[derive(Debug)]
pub(super) struct Conn {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    timeout: Duration,
}

impl Conn {
    /// A socket in the network namespace of the calling thread.
    pub(super) fn open() -> io::Result<Conn> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        sock.set_rx_buf_sz(SOCKET_RCVBUF)?;
        // The kernel's text for a refusal, and its copy of our request cut to the header.
        // Kernels without them answer as before: the errno alone.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Conn {
            sock,
            seq: 0,
            buf: vec![0; RECV_LEN],
            timeout: ANSWER_TIMEOUT,
        })
    }

    /// Sends `msg` with `flags` (`NLM_F_REQUEST` added) and reads its answer, each data
    /// message of it (whole, header included) to `on_data`. Done at the acknowledgement, or
    /// at `NLMSG_DONE` for a dump.
    pub(super) fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<(), Failure> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let bytes = encode_with(header, msg);
        loop {
            match self.sock.send(&bytes, 0) {
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        let deadline = Instant::now() + self.timeout;
        let sock = socket2::SockRef::from(&self.sock);
        for _ in 0..MAX_ANSWER_DATAGRAMS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Failure::Timeout(self.timeout));
            }
            sock.set_read_timeout(Some(left)).map_err(Failure::Io)?;
            let (n, from) = match self.sock.recv_from(&mut &mut self.buf[..], 0) {
                Ok(r) => r,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        || e.kind() == io::ErrorKind::TimedOut =>
                {
                    return Err(Failure::Timeout(self.timeout));
                }
                Err(e) => return Err(Failure::Io(e)),
            };
            if from.port_number() != 0 {
                continue; // not the kernel's
            }
            let n = n.min(self.buf.len());
            if let Some(end) = answer(&self.buf[..n], seq, &mut on_data) {
                return end;
            }
        }
        Err(Failure::Malformed("the answer did not end"))
    }
}

/// What one datagram says of the answer to request `seq`: `None` while the answer goes on,
/// else how it ended. Its data messages go to `on_data`; messages of other numbers (answers
/// to an abandoned request) are skipped.
fn answer(data: &[u8], seq: u32, on_data: &mut impl FnMut(&[u8])) -> Option<Result<(), Failure>> {
    let mut end = None;
    let whole = for_each_message(data, |msg| {
        if end.is_some() || message_seq(msg) != seq {
            return;
        }
        match message_type(msg) {
            NLMSG_NOOP => {}
            NLMSG_ERROR => end = Some(acknowledged(msg)),
            NLMSG_DONE => end = Some(dump_done(msg)),
            NLMSG_OVERRUN => end = Some(Err(Failure::Malformed("the kernel sent an overrun"))),
            _ => on_data(msg),
        }
    });
    if end.is_none() && !whole {
        return Some(Err(Failure::Malformed("a truncated netlink message")));
    }
    end
}

/// An `NLMSG_ERROR` message: code 0 is the acknowledgement, a negative one the errno.
fn acknowledged(msg: &[u8]) -> Result<(), Failure> {
    let payload = &msg[HEADER_LEN..];
    let code = ErrorBuffer::new_checked(payload)
        .map_err(|_| Failure::Malformed("a short netlink error message"))?
        .code();
    match code.map(|c| c.get()) {
        None => Ok(()),
        Some(c) if (-4095..0).contains(&c) => Err(Failure::Refused {
            errno: -c,
            message: ext_ack_text(msg),
        }),
        Some(_) => Err(Failure::Malformed("an error code out of range")),
    }
}

/// `NLMSG_DONE`: the end of a dump, with the dump's error code when it failed.
fn dump_done(msg: &[u8]) -> Result<(), Failure> {
    let payload = &msg[HEADER_LEN..];
    match payload.get(..4) {
        Some(c) => {
            let c = i32::from_ne_bytes([c[0], c[1], c[2], c[3]]);
            if (-4095..0).contains(&c) {
                Err(Failure::Refused {
                    errno: -c,
                    message: None,
                })
            } else {
                Ok(())
            }
        }
        None => Ok(()),
    }
}

/// The extended ack's text (`NLMSGERR_ATTR_MSG`) of an error message, if any: after the
/// code and the request's copy (its header alone when `NLM_F_CAPPED`). Cut to
/// [`MAX_EXT_ACK`] bytes, control characters replaced: it is logged.
fn ext_ack_text(msg: &[u8]) -> Option<String> {
    let flags = u16::from_ne_bytes([msg[6], msg[7]]);
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    let copy = msg.get(HEADER_LEN + 4..)?;
    let copied = if flags & NLM_F_CAPPED != 0 {
        HEADER_LEN
    } else {
        let len = copy.get(..4)?;
        (u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize).max(HEADER_LEN)
    };
    // The attributes start at the next 4-byte boundary (the code is 4 bytes).
    let tlvs = copy.get(copied.checked_add(3)? & !3..)?;
    let mut text = None;
    for_each_attr(tlvs, |kind, value| {
        if kind == NLMSGERR_ATTR_MSG && text.is_none() {
            let v = &value[..value.len().min(MAX_EXT_ACK)];
            let v = v.split(|b| *b == 0).next().unwrap_or_default();
            let s: String = String::from_utf8_lossy(v)
                .chars()
                .map(|c| if c.is_control() { '?' } else { c })
                .collect();
            text = Some(s.trim().to_owned());
        }
    });
    text.filter(|t| !t.is_empty())
}

/// What the answer to a request for `seq` in `data` says (the data messages counted into
/// `data_messages`), as text: for the fuzz target, which feeds it arbitrary datagrams.
/// `None` while the answer goes on.
pub fn parse_answer(data: &[u8], seq: u32, data_messages: &mut usize) -> Option<String> {
    let end = answer(data, seq, &mut |_| *data_messages += 1)?;
    Some(match end {
        Ok(()) => "done".into(),
        Err(Failure::Refused { errno, message }) => {
            format!(
                "{} {}",
                io::Error::from_raw_os_error(errno),
                message.unwrap_or_default()
            )
        }
        Err(f) => io::Error::from(f).to_string(),
    })
}

/// One route of the kernel's tables, as a dump lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The destination (`0.0.0.0/0` or `::/0` for a default route).
    pub dst: Prefix,
    /// The table (254 is main, 255 local).
    pub table: u32,
    /// The output device's index.
    pub oif: Option<u32>,
    /// The preferred source address.
    pub prefsrc: Option<IpAddr>,
    /// The gateway.
    pub gateway: Option<IpAddr>,
    /// `rtm_type`: 1 unicast, 2 local, 6 blackhole, ...
    pub kind: u8,
}

/// A route message (whole, header included) read by hand from the route header and the few
/// attributes used, with every length checked: `netlink-packet-route` 0.21 panics on some
/// multipath attributes. `None` for another family or a malformed message.
pub fn parse_route(msg: &[u8]) -> Option<Route> {
    if msg.len() < HEADER_LEN {
        return None;
    }
    const RTA_DST: u16 = 1;
    const RTA_OIF: u16 = 4;
    const RTA_GATEWAY: u16 = 5;
    const RTA_PREFSRC: u16 = 7;
    const RTA_TABLE: u16 = 15;
    let kind = message_type(msg);
    if kind != libc::RTM_NEWROUTE && kind != libc::RTM_DELROUTE {
        return None;
    }
    let rt = RouteMessageBuffer::new_checked(msg.get(HEADER_LEN..)?).ok()?;
    let v4 = match rt.address_family() as i32 {
        libc::AF_INET => true,
        libc::AF_INET6 => false,
        _ => return None,
    };
    let len = rt.destination_prefix_length();
    if len > if v4 { 32 } else { 128 } {
        return None;
    }
    let ip = |v: &[u8]| -> Option<IpAddr> {
        if v4 {
            let b: [u8; 4] = v.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        } else {
            let b: [u8; 16] = v.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
    };
    let mut route = Route {
        dst: Prefix {
            addr: if v4 {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                IpAddr::V6(Ipv6Addr::UNSPECIFIED)
            },
            len,
        },
        table: u32::from(rt.table()),
        oif: None,
        prefsrc: None,
        gateway: None,
        kind: rt.kind(),
    };
    let mut bad = false;
    let whole = for_each_attr(rt.payload(), |kind, v| {
        let u32_of = |v: &[u8]| v.try_into().ok().map(u32::from_ne_bytes);
        match kind {
            RTA_DST => match ip(v) {
                Some(a) => route.dst.addr = a,
                None => bad = true,
            },
            RTA_PREFSRC => {
                route.prefsrc = ip(v).or_else(|| {
                    bad = true;
                    None
                })
            }
            RTA_GATEWAY => {
                route.gateway = ip(v).or_else(|| {
                    bad = true;
                    None
                })
            }
            RTA_OIF => {
                route.oif = u32_of(v).or_else(|| {
                    bad = true;
                    None
                })
            }
            RTA_TABLE => match u32_of(v) {
                Some(t) => route.table = t,
                None => bad = true,
            },
            _ => {}
        }
    });
    (whole && !bad).then_some(route)
}

/// A device as a request for it by name answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// Administratively up (`IFF_UP`).
    pub up: bool,
    /// With carrier (`IFF_LOWER_UP`).
    pub lower_up: bool,
    pub mtu: Option<u32>,
}

/// Why a request did not do what it was asked.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// The request socket could not be opened.
    Open {
        /// The operation ("add address 10.1.0.2/32 on mifsec0").
        what: String,
        source: io::Error,
    },
    /// No device has this name.
    NoDevice { what: String, dev: String },
    /// The kernel refused.
    Refused {
        what: String,
        /// Its errno.
        errno: i32,
        /// Its extended-ack text, when it sent one.
        message: Option<String>,
    },
    /// No answer within the timeout.
    Timeout { what: String, after: Duration },
    /// Sending or receiving failed, or the answer could not be read.
    Io { what: String, source: io::Error },
}

impl RequestError {
    /// The operation that failed.
    pub fn what(&self) -> &str {
        match self {
            RequestError::Open { what, .. }
            | RequestError::NoDevice { what, .. }
            | RequestError::Refused { what, .. }
            | RequestError::Timeout { what, .. }
            | RequestError::Io { what, .. } => what,
        }
    }

    /// The kernel's errno, for a refusal (`ENODEV` for a missing device).
    pub fn errno(&self) -> Option<i32> {
        match self {
            RequestError::Refused { errno, .. } => Some(*errno),
            RequestError::NoDevice { .. } => Some(libc::ENODEV),
            _ => None,
        }
    }

    fn from_failure(what: String, dev: Option<&str>, f: Failure) -> RequestError {
        match f {
            Failure::Refused { errno, .. } if errno == libc::ENODEV && dev.is_some() => {
                RequestError::NoDevice {
                    what,
                    dev: dev.unwrap_or_default().to_owned(),
                }
            }
            Failure::Refused { errno, message } => RequestError::Refused {
                what,
                errno,
                message,
            },
            Failure::Timeout(after) => RequestError::Timeout { what, after },
            f => RequestError::Io {
                what,
                source: f.into(),
            },
        }
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::Open { what, source } => {
                write!(f, "{what}: opening an rtnetlink socket: {source}")
            }
            RequestError::NoDevice { what, dev } => write!(f, "{what}: no device named {dev}"),
            RequestError::Refused {
                what,
                errno,
                message,
            } => {
                write!(f, "{what}: {}", strerror(*errno))?;
                match message {
                    Some(m) => write!(f, ": {m}"),
                    None => Ok(()),
                }
            }
            RequestError::Timeout { what, after } => {
                write!(f, "{what}: no answer from the kernel within {after:?}")
            }
            RequestError::Io { what, source } => write!(f, "{what}: {source}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RequestError::Open { source, .. } | RequestError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The text of `errno` ("File exists"), without std's " (os error 17)".
fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_owned(),
        _ => s,
    }
}

fn family(a: IpAddr) -> AddressFamily {
    if a.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

/// Changes of addresses, routes and links, one acknowledged request each, on one socket in
/// the network namespace of the thread that opened it. See the module documentation.
#[derive(Debug)]
pub struct Requests {
    conn: Conn,
}

impl Requests {
    /// A request socket in the network namespace of the calling thread.
    pub fn open() -> io::Result<Requests> {
        Ok(Requests {
            conn: Conn::open()?,
        })
    }

    /// Sets how long the kernel has to answer ([`ANSWER_TIMEOUT`] by default).
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.conn.timeout = timeout;
    }

    /// The device named `dev`.
    pub fn link(&mut self, dev: &str) -> Result<LinkInfo, RequestError> {
        self.link_for(dev, || format!("look up device {dev}"))
    }

    fn link_for(&mut self, dev: &str, what: impl Fn() -> String) -> Result<LinkInfo, RequestError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(dev.to_owned()));
        let mut found = None;
        let mut counters = MonitorCounters::default();
        self.conn
            .exchange(RouteNetlinkMessage::GetLink(m), NLM_F_ACK, |msg| {
                let Some(m) = parse_message(msg, &mut counters) else {
                    return;
                };
                if let NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) = m.payload {
                    let mut info = LinkInfo {
                        index: l.header.index,
                        name: String::new(),
                        up: l.header.flags.contains(LinkFlags::Up),
                        lower_up: l.header.flags.contains(LinkFlags::LowerUp),
                        mtu: None,
                    };
                    for a in l.attributes {
                        match a {
                            LinkAttribute::IfName(n) => info.name = n,
                            LinkAttribute::Mtu(v) => info.mtu = Some(v),
                            _ => {}
                        }
                    }
                    found.get_or_insert(info);
                }
            })
            .map_err(|f| RequestError::from_failure(what(), Some(dev), f))?;
        // (The name answered differs from `dev` when that is an alternative name.)
        found.ok_or_else(|| RequestError::Io {
            what: what(),
            source: io::Error::new(io::ErrorKind::InvalidData, "the kernel answered no link"),
        })
    }

    /// One request that changes something on device `dev` (its index looked up first).
    fn change(
        &mut self,
        what: String,
        dev: &str,
        flags: u16,
        build: impl FnOnce(u32) -> RouteNetlinkMessage,
    ) -> Result<(), RequestError> {
        let index = self.link_for(dev, || what.clone())?.index;
        self.conn
            .exchange(build(index), NLM_F_ACK | flags, |_| {})
            .map_err(|f| RequestError::from_failure(what, Some(dev), f))
    }

    /// Puts `addr` (with its prefix length: the kernel adds the prefix route) on `dev`,
    /// replacing it if it is there (as `ip addr replace`); `nodad`: an IPv6 one without
    /// duplicate address detection.
    pub fn add_address(
        &mut self,
        addr: Prefix,
        dev: &str,
        nodad: bool,
    ) -> Result<(), RequestError> {
        let what = format!("add address {addr} on {dev}");
        self.change(what, dev, NLM_F_CREATE | NLM_F_REPLACE, |index| {
            let mut m = address_message(addr, index);
            if nodad && addr.addr.is_ipv6() {
                m.header.flags = AddressHeaderFlags::Nodad;
                m.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Nodad));
            }
            RouteNetlinkMessage::NewAddress(m)
        })
    }

    /// Takes `addr` (with its prefix length) off `dev`; an error if it is not there.
    pub fn del_address(&mut self, addr: Prefix, dev: &str) -> Result<(), RequestError> {
        let what = format!("delete address {addr} on {dev}");
        self.change(what, dev, 0, |index| {
            RouteNetlinkMessage::DelAddress(address_message(addr, index))
        })
    }

    /// Routes `dst` into `dev` in the main table, from `src` when given, replacing the route
    /// of `dst` there (as `ip route replace DST dev DEV [src SRC]`).
    pub fn add_route(
        &mut self,
        dst: Prefix,
        dev: &str,
        src: Option<IpAddr>,
    ) -> Result<(), RequestError> {
        let what = match src {
            Some(s) => format!("add route {dst} dev {dev} src {s}"),
            None => format!("add route {dst} dev {dev}"),
        };
        self.change(what, dev, NLM_F_CREATE | NLM_F_REPLACE, |index| {
            let mut m = route_message(dst, index);
            m.header.protocol = RouteProtocol::Boot;
            m.header.kind = RouteType::Unicast;
            // A route without a gateway is on the link (IPv6 has one scope).
            m.header.scope = if dst.addr.is_ipv4() {
                RouteScope::Link
            } else {
                RouteScope::Universe
            };
            if let Some(s) = src {
                m.attributes
                    .push(RouteAttribute::PrefSource(RouteAddress::from(s)));
            }
            RouteNetlinkMessage::NewRoute(m)
        })
    }

    /// Removes the route of `dst` into `dev` from the main table; an error if there is none.
    pub fn del_route(&mut self, dst: Prefix, dev: &str) -> Result<(), RequestError> {
        let what = format!("delete route {dst} dev {dev}");
        self.change(what, dev, 0, |index| {
            let mut m = route_message(dst, index);
            // Any protocol, type and (IPv4) scope.
            m.header.scope = if dst.addr.is_ipv4() {
                RouteScope::NoWhere
            } else {
                RouteScope::Universe
            };
            RouteNetlinkMessage::DelRoute(m)
        })
    }

    /// Sets `dev` up or down, and its MTU, as given.
    pub fn set_link(
        &mut self,
        dev: &str,
        up: Option<bool>,
        mtu: Option<u32>,
    ) -> Result<(), RequestError> {
        let mut what = format!("set {dev}");
        if let Some(u) = up {
            what.push_str(if u { " up" } else { " down" });
        }
        if let Some(m) = mtu {
            what.push_str(&format!(" mtu {m}"));
        }
        self.change(what, dev, 0, |index| {
            let mut m = LinkMessage::default();
            m.header.index = index;
            if let Some(u) = up {
                m.header.change_mask = LinkFlags::Up;
                if u {
                    m.header.flags = LinkFlags::Up;
                }
            }
            if let Some(v) = mtu {
                m.attributes.push(LinkAttribute::Mtu(v));
            }
            RouteNetlinkMessage::NewLink(m)
        })
    }

    /// The IPv4 and IPv6 routes of every table (at most [`MAX_ROUTES`]; a route this module
    /// cannot read is left out).
    pub fn routes(&mut self) -> Result<Vec<Route>, RequestError> {
        let mut routes = Vec::new();
        self.conn
            .exchange(
                RouteNetlinkMessage::GetRoute(RouteMessage::default()),
                NLM_F_DUMP,
                |msg| {
                    if routes.len() < MAX_ROUTES {
                        routes.extend(parse_route(msg));
                    }
                },
            )
            .map_err(|f| RequestError::from_failure("dump routes".into(), None, f))?;
        Ok(routes)
    }

    /// A dump for the monitor: each data message to `on_data`.
    pub(super) fn dump(
        &mut self,
        req: RouteNetlinkMessage,
        on_data: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        self.conn
            .exchange(req, NLM_F_DUMP, on_data)
            .map_err(io::Error::from)
    }
}

fn address_message(addr: Prefix, index: u32) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header.family = family(addr.addr);
    m.header.prefix_len = addr.len;
    m.header.index = index;
    m.header.scope = if addr.addr.is_loopback() {
        AddressScope::Host
    } else {
        AddressScope::Universe
    };
    // No peer: the local address is the address (as `ip` sends it).
    m.attributes.push(AddressAttribute::Local(addr.addr));
    m.attributes.push(AddressAttribute::Address(addr.addr));
    m
}

fn route_message(dst: Prefix, oif: u32) -> RouteMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(dst.addr);
    m.header.destination_prefix_length = dst.len;
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(dst.addr)));
    m.attributes.push(RouteAttribute::Oif(oif));
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message of `kind` and `seq` with `payload`, its length filled in.
    fn msg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = (HEADER_LEN + payload.len()) as u32;
        let mut b = Vec::new();
        b.extend(len.to_ne_bytes());
        b.extend(kind.to_ne_bytes());
        b.extend(flags.to_ne_bytes());
        b.extend(seq.to_ne_bytes());
        b.extend(0u32.to_ne_bytes());
        b.extend(payload);
        while b.len() % 4 != 0 {
            b.push(0);
        }
        b
    }

    fn error(seq: u32, code: i32, flags: u16, tail: &[u8]) -> Vec<u8> {
        let mut p = code.to_ne_bytes().to_vec();
        // The request's header, as NLM_F_CAPPED copies it.
        p.extend(msg(libc::RTM_NEWADDR, NLM_F_REQUEST | NLM_F_ACK, seq, &[])[..HEADER_LEN].iter());
        p.extend(tail);
        msg(NLMSG_ERROR, flags, seq, &p)
    }

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut a = ((4 + value.len()) as u16).to_ne_bytes().to_vec();
        a.extend(kind.to_ne_bytes());
        a.extend(value);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn end(data: &[u8], seq: u32) -> Option<Result<(), Failure>> {
        answer(data, seq, &mut |_| {})
    }

    #[test]
    fn acks_refusals_and_their_text_are_read_and_stale_answers_skipped() {
        // An acknowledgement.
        assert!(matches!(end(&error(7, 0, 0, &[]), 7), Some(Ok(()))));
        // One for an earlier request: skipped, the answer goes on.
        assert!(end(&error(6, -libc::EEXIST, 0, &[]), 7).is_none());
        // A refusal, without and with the extended ack's text.
        let r = end(&error(7, -libc::EEXIST, NLM_F_CAPPED, &[]), 7);
        assert!(
            matches!(r, Some(Err(Failure::Refused { errno, message: None })) if errno == libc::EEXIST),
            "{r:?}"
        );
        let text = attr(
            NLMSGERR_ATTR_MSG,
            b"Invalid prefix for given prefix length\0",
        );
        let r = end(
            &error(7, -libc::EINVAL, NLM_F_CAPPED | NLM_F_ACK_TLVS, &text),
            7,
        );
        match r {
            Some(Err(Failure::Refused { errno, message })) => {
                assert_eq!(errno, libc::EINVAL);
                assert_eq!(
                    message.as_deref(),
                    Some("Invalid prefix for given prefix length")
                );
            }
            r => panic!("{r:?}"),
        }
        // Not capped: the whole request is copied, the text follows it.
        let mut copy = msg(libc::RTM_NEWADDR, 0, 7, &[0; 8]);
        copy.extend(attr(NLMSGERR_ATTR_MSG, b"no\x07bell\0"));
        let mut p = (-libc::EINVAL).to_ne_bytes().to_vec();
        p.extend(copy);
        let r = end(&msg(NLMSG_ERROR, NLM_F_ACK_TLVS, 7, &p), 7);
        assert!(
            matches!(&r, Some(Err(Failure::Refused { message: Some(m), .. })) if m == "no?bell"),
            "{r:?}"
        );
        // Data, then the end of a dump (with and without an error code).
        let mut data = msg(libc::RTM_NEWLINK, 0, 9, &[0; 16]);
        data.extend(msg(NLMSG_DONE, 0, 9, &0i32.to_ne_bytes()));
        let mut n = 0;
        assert!(matches!(answer(&data, 9, &mut |_| n += 1), Some(Ok(()))));
        assert_eq!(n, 1);
        let r = end(&msg(NLMSG_DONE, 0, 9, &(-libc::EINTR).to_ne_bytes()), 9);
        assert!(matches!(r, Some(Err(Failure::Refused { errno, .. })) if errno == libc::EINTR));
        // Data without the end: the answer goes on.
        assert!(end(&msg(libc::RTM_NEWLINK, 0, 9, &[0; 16]), 9).is_none());
    }

    #[test]
    fn malformed_answers_are_errors_never_a_panic() {
        // A short error message, a code out of range, a truncated datagram.
        assert!(matches!(
            end(&msg(NLMSG_ERROR, 0, 3, &[1, 2]), 3),
            Some(Err(Failure::Malformed(_)))
        ));
        assert!(matches!(
            end(&msg(NLMSG_ERROR, 0, 3, &5i32.to_ne_bytes()), 3),
            Some(Err(Failure::Malformed(_)))
        ));
        let whole = error(
            3,
            -libc::ENOENT,
            NLM_F_CAPPED | NLM_F_ACK_TLVS,
            &attr(1, b"x\0"),
        );
        for cut in 0..whole.len() {
            let mut n = 0;
            let _ = parse_answer(&whole[..cut], 3, &mut n);
        }
        // Every byte corrupted in turn, and lengths past the end.
        for i in 0..whole.len() {
            for v in [0u8, 0x7f, 0xff] {
                let mut bad = whole.clone();
                bad[i] = v;
                let mut n = 0;
                let _ = parse_answer(&bad, 3, &mut n);
            }
        }
        let e = parse_answer(&whole, 3, &mut 0).unwrap();
        assert!(e.starts_with("No such file or directory"), "{e}");
    }

    #[test]
    fn routes_are_read_by_hand_and_bad_ones_refused() {
        let mut m = route_message("10.88.0.0/16".parse().unwrap(), 5);
        m.header.kind = RouteType::Unicast;
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(
                "10.1.0.2".parse::<IpAddr>().unwrap(),
            )));
        let b = encode_with(NetlinkHeader::default(), RouteNetlinkMessage::NewRoute(m));
        let r = parse_route(&b).expect("a route");
        assert_eq!(r.dst, "10.88.0.0/16".parse().unwrap());
        assert_eq!((r.table, r.oif, r.kind), (254, Some(5), 1));
        assert_eq!(r.prefsrc, Some("10.1.0.2".parse().unwrap()));
        let m = route_message("fd00:88::/32".parse().unwrap(), 6);
        let b6 = encode_with(NetlinkHeader::default(), RouteNetlinkMessage::NewRoute(m));
        assert_eq!(
            parse_route(&b6).unwrap().dst,
            "fd00:88::/32".parse().unwrap()
        );
        // Truncations and a prefix length past the family's.
        for cut in 0..b.len() {
            let mut t = b[..cut].to_vec();
            if t.len() >= 4 {
                let l = t.len() as u32;
                t[..4].copy_from_slice(&l.to_ne_bytes());
            }
            let _ = parse_route(&t);
        }
        let mut long = b.clone();
        long[HEADER_LEN + 1] = 33;
        assert!(parse_route(&long).is_none());
    }
}
