//! rtnetlink: every netlink socket of the crate, through `netlink-sys` (which holds the
//! `unsafe`), with the messages built and read by `netlink-packet-route`.
//!
//! - [`monitor`]: the interface monitor (issue 10, item 1): link, address and route events,
//!   typed [`Change`]s, resync on `ENOBUFS`, [`Debounce`].
//! - [`request`]: changes of the kernel's state: addresses, routes, link up and MTU
//!   ([`Requests`]), each acknowledged (`NLM_F_ACK`) and a refusal returned as a typed
//!   [`RequestError`] that names the operation and the object; and a dump of the routes.
//!   (The daemon used to run the `ip` program for these; it no longer runs any program.)
//!
//! Every netlink message is untrusted input: a message that fails to parse is counted or
//! refused with an error, never a panic. Receive buffers are bounded, answers are matched
//! by sequence number and sender (the kernel), and every wait has a deadline.

mod monitor;
mod request;

pub use monitor::*;
pub use request::*;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;

/// The length of a netlink message header.
const HEADER_LEN: usize = 16;
/// Receive buffer for one datagram (the kernel's dump chunks fit in 32 KiB).
const RECV_LEN: usize = 64 * 1024;

/// One rtnetlink message as the kernel sends it (for tests and fuzz seeds).
pub fn encode(msg: RouteNetlinkMessage) -> Vec<u8> {
    encode_with(NetlinkHeader::default(), msg)
}

/// One rtnetlink message with the given header (its length filled in).
fn encode_with(header: NetlinkHeader, msg: RouteNetlinkMessage) -> Vec<u8> {
    let mut m = NetlinkMessage::new(header, NetlinkPayload::from(msg));
    m.finalize();
    let mut b = vec![0; m.buffer_len()];
    m.serialize(&mut b);
    b
}

/// Calls `f` with each netlink message of one datagram (its whole bytes, header included,
/// the length checked). Returns false when a malformed header ends the datagram (its length
/// cannot be trusted to find the next message).
fn for_each_message(data: &[u8], mut f: impl FnMut(&[u8])) -> bool {
    let mut off = 0;
    while off < data.len() {
        let rest = &data[off..];
        if rest.len() < HEADER_LEN {
            return false;
        }
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < HEADER_LEN || len > rest.len() {
            return false;
        }
        f(&rest[..len]);
        off = off.saturating_add((len + 3) & !3);
    }
    true
}

/// The type of a message [`for_each_message`] handed out.
fn message_type(msg: &[u8]) -> u16 {
    u16::from_ne_bytes([msg[4], msg[5]])
}

/// The sequence number of a message [`for_each_message`] handed out.
fn message_seq(msg: &[u8]) -> u32 {
    u32::from_ne_bytes([msg[8], msg[9], msg[10], msg[11]])
}

/// Parses the netlink messages of one datagram, calling `f` for each; a malformed message is
/// counted and skipped, a malformed header ends the datagram.
fn parse_datagram(
    data: &[u8],
    counters: &mut MonitorCounters,
    mut f: impl FnMut(NetlinkMessage<RouteNetlinkMessage>),
) {
    let whole = for_each_message(data, |msg| {
        if let Some(m) = parse_message(msg, counters) {
            f(m);
        }
    });
    if !whole {
        counters.parse_errors += 1;
    }
}

/// One message through `netlink-packet-route`, or `None` (counted): route messages are
/// counted, not parsed (see [`request::parse_route`] for the dump's own reading).
fn parse_message(
    msg: &[u8],
    counters: &mut MonitorCounters,
) -> Option<NetlinkMessage<RouteNetlinkMessage>> {
    let kind = message_type(msg);
    if kind == libc::RTM_NEWROUTE || kind == libc::RTM_DELROUTE {
        // Only "a route changed" is used: the route is not parsed (netlink-packet-route
        // 0.21 panics on some multipath attributes, found by the fuzz target).
        counters.route_events += 1;
        return None;
    }
    /// The first rtnetlink message type; those below are netlink's own (NOOP, ERROR, DONE).
    const RTM_BASE: u16 = 16;
    // Only link and address messages (and netlink's own control messages) are used; any
    // other type is counted, not parsed: netlink-packet-route 0.21 panics on some of them (a
    // short PREFIX_CACHEINFO in RTM_NEWPREFIX, found by the fuzz target).
    let used = kind < RTM_BASE
        || matches!(
            kind,
            libc::RTM_NEWLINK | libc::RTM_DELLINK | libc::RTM_NEWADDR | libc::RTM_DELADDR
        );
    if !used {
        counters.ignored += 1;
        return None;
    }
    if !attrs_safe_to_parse(msg) {
        counters.parse_errors += 1;
        return None;
    }
    match NetlinkMessage::<RouteNetlinkMessage>::deserialize(msg) {
        Ok(m) => {
            counters.messages += 1;
            Some(m)
        }
        Err(_) => {
            counters.parse_errors += 1;
            None
        }
    }
}

/// False for a message the crate would panic on rather than refuse: netlink-packet-route
/// 0.21 slices an address's `IFA_CACHEINFO` as 16 bytes whatever its length (found by the
/// `netlink_parse` fuzz target). Such a message is counted as malformed instead.
fn attrs_safe_to_parse(msg: &[u8]) -> bool {
    const IFA_CACHEINFO: u16 = 6;
    let kind = message_type(msg);
    if kind != libc::RTM_NEWADDR && kind != libc::RTM_DELADDR {
        return true;
    }
    // netlink header (16), ifaddrmsg (8), then the attributes.
    let Some(attrs) = msg.get(HEADER_LEN + 8..) else {
        return true; // the crate refuses it
    };
    // The walk stops at a malformed attribute: the crate refuses that one.
    let mut ok = true;
    for_each_attr(attrs, |kind, value| {
        if kind == IFA_CACHEINFO && value.len() != 16 {
            ok = false;
        }
    });
    ok
}

/// Calls `f` with the type (flags masked off) and value of each netlink attribute in
/// `data`; returns false when a malformed length ends the walk.
fn for_each_attr(data: &[u8], mut f: impl FnMut(u16, &[u8])) -> bool {
    let mut off = 0;
    while off < data.len() {
        let rest = &data[off..];
        if rest.len() < 4 {
            return false;
        }
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        if len < 4 || len > rest.len() {
            return false;
        }
        let kind = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        f(kind, &rest[4..len]);
        off += (len + 3) & !3;
    }
    true
}
