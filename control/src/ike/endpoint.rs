//! The IKE endpoint: every IKE SA of a node and the datagrams between them and the network,
//! without sockets and without a clock of its own (in the manner of quinn-proto's
//! `Endpoint`). The I/O shell (the daemon's IKE thread) hands it what arrives, with the
//! time, and sends what it returns.
//!
//! * Routing: by the IKE SPIs in the header. The I flag tells whether the sender is the
//!   original initiator: then we are the responder and look the SA up by the initiator's
//!   SPI and the peer's address; otherwise by our own initiator SPI. Once the responder's
//!   SPI is known, [`IkeSa::owns`] decides (it also knows the SPIs of an IKE SA being
//!   rekeyed, until their Delete is over).
//! * Responders: an IKE_SA_INIT request that fits no SA creates a responder SA for the
//!   first connection whose addresses match, unless the limits say no ([`InitLimiter`]:
//!   half-open SAs in all and per source, the rate per source; a refusal is a counted
//!   drop), and from `cookie_threshold` half-open SAs on it must first return a COOKIE
//!   ([`CookieGate`], RFC 7296 section 2.6). A request the new responder refuses (no SA
//!   created) is answered and nothing is kept.
//! * Bookkeeping: each SA has a [`SaHandle`] (a number that is never reused, the `#N` of
//!   the status) and the index of its connection; a responder counts as half-open until it
//!   is established or dead, and a dead SA is forgotten once its last events and
//!   datagrams have been taken.
//! * Output: [`Endpoint::poll`] returns, in order, the endpoint's own datagrams and notices
//!   (a COOKIE, the answer of a refused request), then for each SA that was touched its
//!   events before its datagrams (so that a child SA is installed before the message
//!   that lets the peer use it leaves: make-before-break), and finally its removal.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::config::IkeConfig;
use super::cookie::{Admission, CookieGate, CookieStats};
use super::limits::{InitLimiter, InitLimits, LimitStats, Refusal};
use super::sa::{
    CloneError, Event, FailReason, IkeSa, LocalInterface, MifError, MoveError, Transmit,
};
use crate::wire::{ExchangeType, HeaderPacket};

/// Names one IKE SA of an [`Endpoint`]: a number given in order of creation, from 1, never
/// reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SaHandle(pub u64);

impl std::fmt::Display for SaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the endpoint knows of one configured connection: where it may come from and go
/// to, and its IKE configuration.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Our addresses it may use (empty: any).
    pub local_addrs: Vec<IpAddr>,
    /// The peer's addresses it accepts (empty: any).
    pub remote_addrs: Vec<IpAddr>,
    /// The IKE SA configuration.
    pub ike: IkeConfig,
}

/// The endpoint's settings.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    /// The connections, in the order in which a new IKE_SA_INIT request is matched.
    pub connections: Vec<Connection>,
    /// Demand COOKIEs from this many half-open responder SAs on (0: always).
    pub cookie_threshold: usize,
    /// The limits on new responder SAs.
    pub limits: InitLimits,
    /// The longest IKE message accepted; longer ones are dropped and counted.
    pub max_message: usize,
}

/// Something the I/O shell should know but that belongs to no SA (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// New IKE_SA_INIT requests are being dropped because `half_open` responder SAs are
    /// half-open (once, until one is admitted again).
    HalfOpenFull {
        /// Responder SAs half-open.
        half_open: usize,
    },
    /// An IKE_SA_INIT request from `remote` to `local` fits no connection.
    NoConnection {
        /// Where it came from.
        remote: SocketAddr,
        /// Where it arrived.
        local: SocketAddr,
    },
}

/// One output of [`Endpoint::poll`].
#[derive(Debug)]
pub enum Output {
    /// An event of an IKE SA.
    Event(SaHandle, Event),
    /// A datagram to send.
    Transmit(Transmit),
    /// The IKE SA is dead, its last events and datagrams have been taken, and the endpoint
    /// has forgotten it; `conn` is the index of its connection.
    Removed {
        /// The SA.
        sa: SaHandle,
        /// Its connection.
        conn: usize,
    },
    /// A notice for the log.
    Notice(Notice),
}

/// Why [`Endpoint::connect`] could not start an IKE SA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// No connection with that index.
    NoConnection(usize),
    /// The IKE SA could not start.
    Failed(FailReason),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::NoConnection(c) => write!(f, "no connection {c}"),
            ConnectError::Failed(r) => write!(f, "{r}"),
        }
    }
}

impl std::error::Error for ConnectError {}

/// The endpoint's counters (`mifsec status` shows them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EndpointStats {
    /// Responder IKE SAs still negotiating.
    pub half_open: usize,
    /// Sources (addresses, IPv6 /64s) with half-open SAs.
    pub half_open_sources: usize,
    /// The COOKIE counters.
    pub cookies: CookieStats,
    /// New IKE_SA_INIT requests refused by the limits, by reason.
    pub limits: LimitStats,
    /// Datagrams dropped for being longer than the longest message accepted.
    pub oversize: u64,
}

/// One IKE SA and what the endpoint keeps about it.
#[derive(Debug)]
struct Slot {
    handle: SaHandle,
    conn: usize,
    sa: IkeSa,
    /// A responder counted as half-open by the limiter, from this address.
    half_open: Option<IpAddr>,
    /// It had input, a timeout or a call since it was last polled empty.
    touched: bool,
    /// RFC 7791: the IKE SA it was cloned from.
    cloned_from: Option<SaHandle>,
}

/// Every IKE SA of a node, routed to by SPI; see the module documentation.
#[derive(Debug)]
pub struct Endpoint {
    conns: Vec<Connection>,
    /// Connections removed by a reload ([`Endpoint::retire_connection`]): their index
    /// stays (IKE SAs name their connection by it), but no new IKE SA is made for them.
    retired: Vec<bool>,
    /// In order of creation (so by handle).
    slots: Vec<Slot>,
    next: u64,
    /// Decides when new initiators must return a COOKIE first. `None` only if the system
    /// random number generator failed at start; then no responder SAs are created.
    cookies: Option<CookieGate>,
    limiter: InitLimiter,
    /// The endpoint's own datagrams and notices, before any SA's.
    queue: VecDeque<Output>,
    /// No slot before this index is touched.
    cursor: usize,
    max_message: usize,
    oversize: u64,
    /// Requests retransmitted by the IKE SAs that are gone.
    retired_retransmitted: u64,
    half_open_noticed: bool,
    /// Our usable local addresses as last given to [`Endpoint::set_local_addresses`]
    /// (`None`: never given); every new IKE SA gets them too.
    local: Option<Vec<IpAddr>>,
    /// Our interfaces as last given to [`Endpoint::set_local_interfaces`]; every new IKE
    /// SA gets them too.
    interfaces: Vec<LocalInterface>,
}

impl Endpoint {
    /// An endpoint with no IKE SAs yet; `now` starts the COOKIE secrets' clock.
    pub fn new(now: Instant, cfg: EndpointConfig) -> Endpoint {
        Endpoint {
            retired: vec![false; cfg.connections.len()],
            conns: cfg.connections,
            slots: Vec::new(),
            next: 1,
            cookies: CookieGate::new(now, cfg.cookie_threshold),
            limiter: InitLimiter::new(cfg.limits),
            queue: VecDeque::new(),
            cursor: 0,
            max_message: cfg.max_message,
            oversize: 0,
            retired_retransmitted: 0,
            half_open_noticed: false,
            local: None,
            interfaces: Vec::new(),
        }
    }

    /// The connections, as configured.
    pub fn connections(&self) -> &[Connection] {
        &self.conns
    }

    /// A reload: a new connection, last in the matching order; returns its index.
    pub fn add_connection(&mut self, c: Connection) -> usize {
        self.conns.push(c);
        self.retired.push(false);
        self.conns.len() - 1
    }

    /// A reload: connection `conn` has a new configuration. New IKE SAs (initiated or
    /// answered) get it; the IKE SAs made before keep the copy they were made with.
    pub fn set_connection(&mut self, conn: usize, c: Connection) {
        if let Some(slot) = self.conns.get_mut(conn) {
            *slot = c;
        }
    }

    /// A reload removed connection `conn`: no new IKE SA for it, in either role (its IKE
    /// SAs are the caller's to delete).
    pub fn retire_connection(&mut self, conn: usize) {
        if let Some(r) = self.retired.get_mut(conn) {
            *r = true;
        }
    }

    /// Starts an IKE SA as initiator for connection `conn` from `local` to `remote`; its
    /// IKE_SA_INIT request comes out of [`Endpoint::poll`].
    pub fn connect(
        &mut self,
        now: Instant,
        conn: usize,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Result<SaHandle, ConnectError> {
        let c = self
            .conns
            .get(conn)
            .filter(|_| !self.retired.get(conn).copied().unwrap_or(false))
            .ok_or(ConnectError::NoConnection(conn))?;
        let sa =
            IkeSa::initiate(c.ike.clone(), now, local, remote).map_err(ConnectError::Failed)?;
        Ok(self.add(now, conn, sa))
    }

    /// Processes one datagram (an IKE message, non-ESP marker removed) that arrived on
    /// `local` from `remote`. Returns the SA it went to (a new responder, perhaps); `None`
    /// when it was dropped, refused, or answered without state (a COOKIE).
    pub fn handle(
        &mut self,
        now: Instant,
        local: SocketAddr,
        remote: SocketAddr,
        bytes: &[u8],
    ) -> Option<SaHandle> {
        if bytes.len() > self.max_message {
            self.oversize += 1;
            return None;
        }
        let h = HeaderPacket::new_checked(bytes).ok()?;
        let (spi_i, spi_r, flags) = (h.spi_i(), h.spi_r(), h.flags());
        let by_spis = if spi_r != 0 {
            self.slots.iter().position(|s| s.sa.owns(spi_i, spi_r))
        } else {
            None
        };
        let found = if by_spis.is_some() {
            by_spis
        } else if flags.initiator() {
            self.slots.iter().position(|s| {
                !s.sa.is_initiator()
                    && s.sa.spi_i() == Some(spi_i)
                    && s.sa.addresses().1.ip() == remote.ip()
            })
        } else {
            self.slots
                .iter()
                .position(|s| s.sa.is_initiator() && s.sa.spi_i() == Some(spi_i))
        };
        if let Some(i) = found {
            self.slots[i].sa.handle_datagram(now, local, remote, bytes);
            self.touch(i);
            return Some(self.slots[i].handle);
        }
        let new_request = flags.initiator()
            && !flags.response()
            && spi_r == 0
            && h.exchange_type() == ExchangeType::IkeSaInit
            && h.message_id() == 0;
        if !new_request {
            return None;
        }
        self.new_responder(now, (local, remote), bytes)
    }

    /// An IKE_SA_INIT request that fits no SA: the limits, the connection, the COOKIE,
    /// then a responder SA.
    fn new_responder(
        &mut self,
        now: Instant,
        (local, remote): (SocketAddr, SocketAddr),
        bytes: &[u8],
    ) -> Option<SaHandle> {
        let half_open = self.limiter.half_open();
        match self.limiter.check(now, remote.ip()) {
            Ok(()) => self.half_open_noticed = false,
            Err(r) => {
                if r == Refusal::HalfOpen && !self.half_open_noticed {
                    self.queue
                        .push_back(Output::Notice(Notice::HalfOpenFull { half_open }));
                    self.half_open_noticed = true;
                }
                return None;
            }
        }
        let retired = &self.retired;
        let Some(conn) = self.conns.iter().enumerate().position(|(i, c)| {
            !retired.get(i).copied().unwrap_or(false)
                && (c.local_addrs.is_empty() || c.local_addrs.contains(&local.ip()))
                && (c.remote_addrs.is_empty() || c.remote_addrs.contains(&remote.ip()))
        }) else {
            self.queue
                .push_back(Output::Notice(Notice::NoConnection { remote, local }));
            return None;
        };
        // Under load, a COOKIE round trip first: no state until the initiator shows that
        // it receives at its address.
        let gate = self.cookies.as_mut()?;
        if let Admission::Cookie(cookie) = gate.admit(now, half_open, remote.ip(), bytes) {
            self.queue.push_back(Output::Transmit(Transmit {
                local,
                remote,
                bytes: cookie,
            }));
            return None;
        }
        let mut sa = IkeSa::respond(self.conns[conn].ike.clone());
        sa.handle_datagram(now, local, remote, bytes);
        // A responder that refused the request (no SA created) is not kept; its answer is.
        if sa.spi_i().is_none() {
            while let Some(t) = sa.poll_transmit() {
                self.queue.push_back(Output::Transmit(t));
            }
            return None;
        }
        self.limiter.opened(remote.ip());
        let handle = self.add(now, conn, sa);
        if let Some(s) = self.slots.last_mut() {
            s.half_open = Some(remote.ip());
        }
        Some(handle)
    }

    fn add(&mut self, now: Instant, conn: usize, mut sa: IkeSa) -> SaHandle {
        if let Some(addrs) = &self.local {
            let list = self.local_list(conn, addrs);
            sa.set_local_addresses(now, &list);
        }
        if !self.interfaces.is_empty() {
            sa.set_local_interfaces(now, &self.interface_list(conn));
        }
        let handle = SaHandle(self.next);
        self.next += 1;
        self.slots.push(Slot {
            handle,
            conn,
            sa,
            half_open: None,
            touched: false,
            cloned_from: None,
        });
        self.touch(self.slots.len() - 1);
        handle
    }

    /// Adds a cloned IKE SA (it has our addresses already).
    fn add_slot(&mut self, conn: usize, sa: IkeSa) -> SaHandle {
        let handle = SaHandle(self.next);
        self.next += 1;
        self.slots.push(Slot {
            handle,
            conn,
            sa,
            half_open: None,
            touched: true,
            cloned_from: None,
        });
        handle
    }

    /// Clones IKE SA `h` (RFC 7791, [`IkeSa::clone_ike`]); the new IKE SA comes out of
    /// [`Endpoint::poll`] as an SA of its own, with [`Event::IkeSaCloned`] first.
    pub fn clone_sa(&mut self, now: Instant, h: SaHandle) -> Result<(), CloneError> {
        let sa = self.sa_mut(h).ok_or(CloneError::NoSuchSa)?;
        sa.clone_ike(now)
    }

    /// The IKE SA `h` was cloned from (RFC 7791), if it was.
    pub fn cloned_from(&self, h: SaHandle) -> Option<SaHandle> {
        self.index(h).and_then(|i| self.slots[i].cloned_from)
    }

    fn touch(&mut self, i: usize) {
        self.slots[i].touched = true;
        self.cursor = self.cursor.min(i);
    }

    fn index(&self, h: SaHandle) -> Option<usize> {
        self.slots.binary_search_by_key(&h, |s| s.handle).ok()
    }

    /// The earliest timer of any IKE SA.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.slots.iter().filter_map(|s| s.sa.poll_timeout()).min()
    }

    /// Runs the timers of every IKE SA that are due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        for i in 0..self.slots.len() {
            if self.slots[i].sa.poll_timeout().is_some_and(|t| t <= now) {
                self.slots[i].sa.handle_timeout(now);
                self.touch(i);
            }
        }
    }

    /// The next output: the endpoint's own datagrams and notices first, then for each
    /// touched SA its events, its datagrams and, once dead, its removal. `None` when
    /// nothing is left.
    pub fn poll(&mut self) -> Option<Output> {
        if let Some(o) = self.queue.pop_front() {
            return Some(o);
        }
        while self.cursor < self.slots.len() {
            let i = self.cursor;
            let s = &mut self.slots[i];
            if !s.touched {
                self.cursor += 1;
                continue;
            }
            // RFC 7791: IKE SAs cloned from this one become SAs of their own (their events
            // come when the cursor reaches them, after this one's).
            let clones = s.sa.take_clones();
            if !clones.is_empty() {
                let (from, conn) = (s.handle, s.conn);
                for c in clones {
                    let h = self.add_slot(conn, c);
                    if let Some(slot) = self.slots.last_mut().filter(|x| x.handle == h) {
                        slot.cloned_from = Some(from);
                    }
                }
            }
            let s = &mut self.slots[i];
            if let Some(ev) = s.sa.poll_event() {
                return Some(Output::Event(s.handle, ev));
            }
            if let Some(t) = s.sa.poll_transmit() {
                return Some(Output::Transmit(t));
            }
            s.touched = false;
            if s.sa.is_established() || s.sa.is_dead() {
                if let Some(src) = s.half_open.take() {
                    self.limiter.closed(src);
                }
            }
            if self.slots[i].sa.is_dead() {
                let s = self.slots.remove(i);
                self.retired_retransmitted += s.sa.stats().retransmitted;
                return Some(Output::Removed {
                    sa: s.handle,
                    conn: s.conn,
                });
            }
            self.cursor += 1;
        }
        None
    }

    /// The IKE SA `h`, if the endpoint still has it.
    pub fn sa(&self, h: SaHandle) -> Option<&IkeSa> {
        self.index(h).map(|i| &self.slots[i].sa)
    }

    /// The IKE SA `h`, to drive it (a command, a usage report): it is polled again.
    pub fn sa_mut(&mut self, h: SaHandle) -> Option<&mut IkeSa> {
        let i = self.index(h)?;
        self.touch(i);
        Some(&mut self.slots[i].sa)
    }

    /// Our usable local addresses are now `addrs` (the daemon's monitor calls this whenever
    /// the set changes): each IKE SA gets those its connection may use, in the order of
    /// its `local_addrs` (its preference; empty: any, in the order given), through
    /// [`IkeSa::set_local_addresses`].
    ///
    /// IKE SAs created later (initiated or responding) get them when they are created.
    pub fn set_local_addresses(&mut self, now: Instant, addrs: &[IpAddr]) {
        self.local = Some(addrs.to_vec());
        for i in 0..self.slots.len() {
            let list = self.local_list(self.slots[i].conn, addrs);
            self.slots[i].sa.set_local_addresses(now, &list);
            self.touch(i);
        }
    }

    /// Our interfaces are now `list` (the daemon's `[interfaces.*]` with an address, with
    /// priorities and alternate flags, for the multi-interface extension): each IKE SA gets
    /// those its connection may use (`local_addrs`; empty: all) through
    /// [`IkeSa::set_local_interfaces`], and their addresses, ordered by (not alternate,
    /// priority, order given), go to [`Endpoint::set_local_addresses`]. IKE SAs created
    /// later get them when they are created.
    pub fn set_local_interfaces(&mut self, now: Instant, list: &[LocalInterface]) {
        self.interfaces = list.to_vec();
        let mut ordered: Vec<&LocalInterface> = list.iter().collect();
        ordered.sort_by_key(|i| (i.alternate, i.priority));
        let mut addrs: Vec<IpAddr> = Vec::new();
        for i in ordered {
            if !addrs.contains(&i.addr) {
                addrs.push(i.addr);
            }
        }
        for i in 0..self.slots.len() {
            let l = self.interface_list(self.slots[i].conn);
            self.slots[i].sa.set_local_interfaces(now, &l);
        }
        self.set_local_addresses(now, &addrs);
    }

    /// Those of our interfaces connection `conn` may use.
    fn interface_list(&self, conn: usize) -> Vec<LocalInterface> {
        let allowed = &self.conns[conn].local_addrs;
        self.interfaces
            .iter()
            .filter(|i| allowed.is_empty() || allowed.contains(&i.addr))
            .cloned()
            .collect()
    }

    /// Those of `addrs` connection `conn` may use, in its preference order.
    fn local_list(&self, conn: usize, addrs: &[IpAddr]) -> Vec<IpAddr> {
        let conn = &self.conns[conn];
        if conn.local_addrs.is_empty() {
            addrs.to_vec()
        } else {
            conn.local_addrs
                .iter()
                .filter(|a| addrs.contains(a))
                .copied()
                .collect()
        }
    }

    /// Moves IKE SA `h` by hand ([`IkeSa::request_move`], `mifsec ctl move`).
    pub fn request_move(
        &mut self,
        now: Instant,
        h: SaHandle,
        local: IpAddr,
        remote: Option<IpAddr>,
    ) -> Result<bool, MoveError> {
        let sa = self.sa_mut(h).ok_or(MoveError::NoSuchSa)?;
        sa.request_move(now, local, remote)
    }

    /// Queues a MIF operation on IKE SA `h` ([`IkeSa::mif_request`], `mifsec ctl mif ...`).
    pub fn mif_request(
        &mut self,
        now: Instant,
        h: SaHandle,
        op: crate::wire::MifOperation,
    ) -> Result<(), MifError> {
        let sa = self.sa_mut(h).ok_or(MifError::NoSuchSa)?;
        sa.mif_request(now, op)
    }

    /// Reports the traffic of IKE SA `h`'s children ([`IkeSa::note_traffic`]).
    pub fn note_traffic(&mut self, now: Instant, h: SaHandle, sent: bool, received: bool) {
        if let Some(sa) = self.sa_mut(h) {
            sa.note_traffic(now, sent, received);
        }
    }

    /// The connection (index) of IKE SA `h`.
    pub fn connection_of(&self, h: SaHandle) -> Option<usize> {
        self.index(h).map(|i| self.slots[i].conn)
    }

    /// Every IKE SA, in order of creation, with its connection.
    pub fn iter(&self) -> impl Iterator<Item = (SaHandle, usize, &IkeSa)> {
        self.slots.iter().map(|s| (s.handle, s.conn, &s.sa))
    }

    /// The handles of every IKE SA, in order of creation.
    pub fn handles(&self) -> Vec<SaHandle> {
        self.slots.iter().map(|s| s.handle).collect()
    }

    /// How many IKE SAs there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether connection `conn` has an IKE SA that is not dead (up or connecting).
    pub fn has_live(&self, conn: usize) -> bool {
        self.slots.iter().any(|s| s.conn == conn && !s.sa.is_dead())
    }

    /// Requests retransmitted by every IKE SA since the endpoint started, the removed ones
    /// included (a walk over the live SAs).
    pub fn retransmitted_total(&self) -> u64 {
        self.retired_retransmitted
            + self
                .slots
                .iter()
                .map(|s| s.sa.stats().retransmitted)
                .sum::<u64>()
    }

    /// The counters.
    pub fn stats(&self) -> EndpointStats {
        EndpointStats {
            half_open: self.limiter.half_open(),
            half_open_sources: self.limiter.sources(),
            cookies: self
                .cookies
                .as_ref()
                .map(CookieGate::stats)
                .unwrap_or_default(),
            limits: self.limiter.stats(),
            oversize: self.oversize,
        }
    }
}

#[cfg(test)]
mod tests;
