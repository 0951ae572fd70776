//! Outer UDP sockets: the sockets ESP-in-UDP (RFC 3948) packets leave and arrive on.
//!
//! All outer-socket syscall code of the project lives in this file, inside the private `ffi`
//! module: everything else works on [`OuterSocket`]. One socket per configured interface
//! (`[interfaces.NAME]` in the configuration), optionally pinned to an OS device with
//! `SO_BINDTODEVICE`, shared by every worker thread through an `Arc`.
//!
//! The packet path is batched, as in quinn-udp and wireguard-go's `conn/bind_std.go`:
//! [`OuterSocket::send_batch`] is one `sendmmsg(2)` and [`OuterSocket::recv_batch`] one
//! `recvmmsg(2)`. The `mmsghdr`/`iovec`/address/control arrays live in a [`SendScratch`] or
//! [`RecvScratch`] that each worker owns and passes by `&mut`: no lock and, once the scratch
//! has grown to the batch size, no allocation per call.
//!
//! Offloads and their fallbacks:
//! - GSO (`UDP_SEGMENT`, Linux 4.18+): probed at bind time with `getsockopt(UDP_SEGMENT)`,
//!   which fails with `ENOPROTOOPT` where the kernel lacks it. A [`Transmit`] with a
//!   `segment_size` carries a `UDP_SEGMENT` control message and is cut into datagrams by the
//!   kernel (or the NIC). If the kernel answers `EIO` (older kernels when the device cannot
//!   offload checksums, or when an xfrm policy matches the outer packets), GSO is switched off
//!   for the socket and the error is returned: the caller resends without `segment_size`.
//! - GRO (`UDP_GRO`, Linux 5.0+): switched on at bind time if asked for and accepted; else
//!   every datagram arrives on its own. With GRO, one [`RecvBuf`] may hold a train of
//!   datagrams of [`RecvBuf::segment_size`] bytes each; [`RecvBuf::datagrams`] splits it.
//! - Buffer sizes: `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE` (need `CAP_NET_ADMIN`), else
//!   `SO_RCVBUF`/`SO_SNDBUF`, which the kernel caps at `net.core.rmem_max`/`wmem_max`.
//!
//! Path MTU: the socket keeps the kernel's default `IP_MTU_DISCOVER` (`IP_PMTUDISC_WANT`,
//! likewise for IPv6): DF is set on datagrams that fit the cached path MTU and larger ones are
//! fragmented locally. ESP of a 1400-byte inner packet is about 1450 bytes and fits a 1500
//! link, so nothing is fragmented normally; on a path with a smaller MTU the engine, which does
//! no path MTU discovery of its own, keeps working (fragmented) instead of black-holing, which
//! is what `IP_PMTUDISC_PROBE` (quinn's choice, as QUIC probes the MTU itself) would do. With
//! GSO the kernel does not fragment: a segment size above the path MTU is refused with
//! `EMSGSIZE` (`EINVAL` on older kernels), and the caller resends without GSO.
#![cfg(target_os = "linux")]

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use socket2::{Domain, Protocol, Socket, Type};

/// Default receive and send buffer size: 4 MiB.
pub const DEFAULT_BUFFER_SIZE: usize = 4 << 20;

/// Most datagrams one GSO [`Transmit`] may carry. The kernel's `UDP_MAX_SEGMENTS` is 64 on
/// older kernels (128 on recent ones); we keep to the portable limit.
pub const MAX_GSO_SEGMENTS: usize = 64;

/// Most payload bytes one GSO [`Transmit`] may carry: the largest UDP payload over IPv4
/// (65535 - 20 - 8), used for IPv6 as well.
pub const MAX_GSO_BYTES: usize = 65_507;

/// Most messages one `sendmmsg`/`recvmmsg` call handles (the kernel's `UIO_MAXIOV`); longer
/// slices are cut to this length.
pub const MAX_BATCH: usize = 1024;

/// Receive room (after the headroom) that holds any datagram and any GRO train (at most
/// 65535 bytes). A smaller [`RecvBuf`] loses what does not fit; see
/// [`OuterSocket::recv_batch`].
pub const MAX_RECV_LEN: usize = 65_535;

/// How to open an outer socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketConfig {
    /// OS interface to bind to with `SO_BINDTODEVICE` (at most 15 bytes). Packets then leave
    /// by this device whatever the routing table says, and only packets that arrived on it
    /// are received.
    pub device: Option<String>,
    /// Local address and port; IPv4 or IPv6 (an IPv6 socket is `IPV6_V6ONLY`). Port 0 picks
    /// one ([`OuterSocket::local_addr`] tells which).
    pub local: SocketAddr,
    /// Receive buffer size in bytes; 0 keeps the kernel's default.
    pub recv_buffer: usize,
    /// Send buffer size in bytes; 0 keeps the kernel's default.
    pub send_buffer: usize,
    /// Use UDP GSO on send when the kernel has it.
    pub gso: bool,
    /// Ask for UDP GRO on receive.
    pub gro: bool,
}

impl SocketConfig {
    /// A configuration for `local` with the defaults: no device, 4 MiB buffers, GSO and GRO.
    pub fn new(local: SocketAddr) -> Self {
        Self {
            device: None,
            local,
            recv_buffer: DEFAULT_BUFFER_SIZE,
            send_buffer: DEFAULT_BUFFER_SIZE,
            gso: true,
            gro: true,
        }
    }
}

impl Default for SocketConfig {
    /// `0.0.0.0:4500` with the defaults of [`SocketConfig::new`].
    fn default() -> Self {
        Self::new(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 4500)))
    }
}

/// Which offloads a socket uses (now: GSO may be switched off after the socket was opened).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SocketOffloads {
    /// Sends may carry `segment_size` (UDP GSO).
    pub gso: bool,
    /// Receives may return GRO trains (UDP GRO).
    pub gro: bool,
}

impl fmt::Display for SocketOffloads {
    /// `"gso gro"`, `"gso"`, `"gro"` or `"none"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match (self.gso, self.gro) {
            (true, true) => "gso gro",
            (true, false) => "gso",
            (false, true) => "gro",
            (false, false) => "none",
        })
    }
}

/// One message of a [`OuterSocket::send_batch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Destination; same address family as the socket.
    pub dst: SocketAddr,
    /// One datagram, or with `segment_size` several back to back.
    pub contents: &'a [u8],
    /// GSO: `contents` is a run of datagrams of this many bytes each, the last one possibly
    /// shorter. At most [`MAX_GSO_SEGMENTS`] datagrams and [`MAX_GSO_BYTES`] bytes in all, and
    /// only on a socket whose [`SocketOffloads::gso`] is on.
    pub segment_size: Option<usize>,
}

/// A receive buffer for [`OuterSocket::recv_batch`], with its result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecvBuf {
    /// Storage. The datagram is received into `data[offset..]`: its *length* (not its
    /// capacity) is the room, so allocate it filled, e.g. with [`RecvBuf::new`].
    pub data: Vec<u8>,
    /// Headroom kept free in front of the datagram.
    pub offset: usize,
    /// Bytes received at `data[offset..offset + len]`.
    pub len: usize,
    /// Sender.
    pub src: SocketAddr,
    /// Local address the datagram was sent to (from `IP_PKTINFO`/`IPV6_PKTINFO`).
    pub dst_ip: Option<IpAddr>,
    /// GRO: `data[offset..offset + len]` is a train of datagrams of this size, the last one
    /// possibly shorter. `None`: one datagram.
    pub segment_size: Option<usize>,
}

impl RecvBuf {
    /// A zeroed buffer with `headroom` bytes in front of `room` bytes of receive room (use
    /// [`MAX_RECV_LEN`] with GRO on).
    pub fn new(headroom: usize, room: usize) -> Self {
        Self {
            data: vec![0; headroom + room],
            offset: headroom,
            len: 0,
            src: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            dst_ip: None,
            segment_size: None,
        }
    }

    /// What was received: `data[offset..offset + len]` (a GRO train counts as one).
    pub fn payload(&self) -> &[u8] {
        &self.data[self.offset..self.offset + self.len]
    }

    /// The datagrams received, as ranges of indices into `data`: one range without
    /// `segment_size` (or when `len` is not above it), else `segment_size`-byte ranges with a
    /// possibly shorter last one.
    pub fn datagrams(&self) -> Datagrams {
        let count = match self.segment_size {
            Some(seg) if seg > 0 && self.len > seg => self.len.div_ceil(seg),
            _ => 1,
        };
        Datagrams {
            pos: self.offset,
            end: self.offset + self.len,
            step: self.segment_size.unwrap_or(0),
            remaining: count,
        }
    }
}

/// Iterator over the datagrams of a [`RecvBuf`], from [`RecvBuf::datagrams`].
#[derive(Debug, Clone)]
pub struct Datagrams {
    pos: usize,
    end: usize,
    step: usize,
    remaining: usize,
}

impl Iterator for Datagrams {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let start = self.pos;
        let stop = if self.remaining == 0 {
            self.end
        } else {
            start + self.step
        };
        self.pos = stop;
        Some(start..stop)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for Datagrams {}

/// Control buffer for one sent message: room for `UDP_SEGMENT` (a `u16`). Aligned for a
/// `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct SendCmsg([u8; SEND_CMSG_LEN]);

/// Control buffer for one received message: room for `IP_PKTINFO` or `IPV6_PKTINFO` plus
/// `UDP_GRO`, with spare. Aligned for a `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct RecvCmsg([u8; RECV_CMSG_LEN]);

/// `CMSG_SPACE(sizeof(u16))` is 24 on 64-bit Linux.
const SEND_CMSG_LEN: usize = 32;
/// `CMSG_SPACE(in6_pktinfo) + CMSG_SPACE(int)` is 64 on 64-bit Linux.
const RECV_CMSG_LEN: usize = 128;

/// Per-worker scratch arrays for [`OuterSocket::send_batch`]. Grows to the largest batch seen
/// (capped at [`MAX_BATCH`]) and then stays put.
pub struct SendScratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<SendCmsg>,
}

// SAFETY: the raw pointers inside `hdrs` and `iovs` are written right before each syscall, only
// point into this struct or into the caller's borrowed messages for the duration of that call,
// and are never dereferenced by Rust code afterwards. Moving the scratch to another thread is
// therefore moving plain data.
unsafe impl Send for SendScratch {}

impl SendScratch {
    /// Scratch for batches of up to `batch` messages (it grows if a batch is larger).
    pub fn new(batch: usize) -> Self {
        let mut s = Self {
            hdrs: Vec::new(),
            iovs: Vec::new(),
            addrs: Vec::new(),
            cmsgs: Vec::new(),
        };
        s.reserve(batch.min(MAX_BATCH));
        s
    }

    fn reserve(&mut self, n: usize) {
        if self.hdrs.len() < n {
            self.hdrs.resize(n, ffi::zeroed_mmsghdr());
            self.iovs.resize(n, ffi::EMPTY_IOVEC);
            self.addrs.resize(n, ffi::zeroed_storage());
            self.cmsgs.resize(n, SendCmsg([0; SEND_CMSG_LEN]));
        }
    }
}

impl Default for SendScratch {
    /// Room for 64 messages.
    fn default() -> Self {
        Self::new(64)
    }
}

impl fmt::Debug for SendScratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendScratch")
            .field("capacity", &self.hdrs.len())
            .finish()
    }
}

/// Per-worker scratch arrays for [`OuterSocket::recv_batch`]. Grows to the largest batch seen
/// (capped at [`MAX_BATCH`]) and then stays put.
pub struct RecvScratch {
    hdrs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    addrs: Vec<libc::sockaddr_storage>,
    cmsgs: Vec<RecvCmsg>,
}

// SAFETY: as for `SendScratch`: the raw pointers are rewritten before each syscall, point into
// this struct or the caller's `RecvBuf`s only for that call, and are not dereferenced later
// except through the freshly written `msg_control` pointer while `self` is still exclusively
// borrowed by the same call.
unsafe impl Send for RecvScratch {}

impl RecvScratch {
    /// Scratch for batches of up to `batch` buffers (it grows if a batch is larger).
    pub fn new(batch: usize) -> Self {
        let mut s = Self {
            hdrs: Vec::new(),
            iovs: Vec::new(),
            addrs: Vec::new(),
            cmsgs: Vec::new(),
        };
        s.reserve(batch.min(MAX_BATCH));
        s
    }

    fn reserve(&mut self, n: usize) {
        if self.hdrs.len() < n {
            self.hdrs.resize(n, ffi::zeroed_mmsghdr());
            self.iovs.resize(n, ffi::EMPTY_IOVEC);
            self.addrs.resize(n, ffi::zeroed_storage());
            self.cmsgs.resize(n, RecvCmsg([0; RECV_CMSG_LEN]));
        }
    }
}

impl Default for RecvScratch {
    /// Room for 64 messages.
    fn default() -> Self {
        Self::new(64)
    }
}

impl fmt::Debug for RecvScratch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvScratch")
            .field("capacity", &self.hdrs.len())
            .finish()
    }
}

/// An open outer UDP socket: non-blocking, `Send + Sync`, meant to be shared by the workers
/// through an `Arc` (each with its own [`SendScratch`] and [`RecvScratch`]). Register it with
/// mio through [`AsRawFd`] (`SourceFd`).
#[derive(Debug)]
pub struct OuterSocket {
    sock: Socket,
    local: SocketAddr,
    device: Option<String>,
    gso: AtomicBool,
    gro: bool,
    truncated: AtomicU64,
}

impl OuterSocket {
    /// Opens the socket: `SO_REUSEADDR`, `SO_BINDTODEVICE` (if `device`), bind, buffer sizes,
    /// non-blocking, `IP_PKTINFO`/`IPV6_RECVPKTINFO`, then GRO and the GSO probe (see the
    /// module documentation for the fallbacks). Errors name the step, address and device.
    pub fn bind(cfg: &SocketConfig) -> io::Result<OuterSocket> {
        if let Some(dev) = &cfg.device {
            if dev.is_empty() || dev.len() >= libc::IFNAMSIZ || dev.contains('\0') {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("bad interface name {dev:?}"),
                ));
            }
        }
        let ctx = |e: io::Error, what: &str| {
            let on = match &cfg.device {
                Some(dev) => format!("{} on {dev}", cfg.local),
                None => cfg.local.to_string(),
            };
            io::Error::new(e.kind(), format!("{what} for UDP socket {on}: {e}"))
        };
        let v6 = cfg.local.is_ipv6();
        let sock = Socket::new(
            Domain::for_address(cfg.local),
            Type::DGRAM,
            Some(Protocol::UDP),
        )
        .map_err(|e| ctx(e, "socket"))?;
        if v6 {
            sock.set_only_v6(true).map_err(|e| ctx(e, "IPV6_V6ONLY"))?;
        }
        // Lets a replacement socket (`mifsec ctl add-interface` after `remove-interface`)
        // bind while the old one is still being closed.
        sock.set_reuse_address(true)
            .map_err(|e| ctx(e, "SO_REUSEADDR"))?;
        if let Some(dev) = &cfg.device {
            // Before bind, so that the port is reserved for this device only.
            sock.bind_device(Some(dev.as_bytes()))
                .map_err(|e| ctx(e, "SO_BINDTODEVICE"))?;
        }
        sock.bind(&cfg.local.into()).map_err(|e| ctx(e, "bind"))?;
        if cfg.recv_buffer > 0 {
            ffi::set_int(
                &sock,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                clamp(cfg.recv_buffer),
            )
            .or_else(|_| sock.set_recv_buffer_size(cfg.recv_buffer))
            .map_err(|e| ctx(e, "SO_RCVBUF"))?;
        }
        if cfg.send_buffer > 0 {
            ffi::set_int(
                &sock,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                clamp(cfg.send_buffer),
            )
            .or_else(|_| sock.set_send_buffer_size(cfg.send_buffer))
            .map_err(|e| ctx(e, "SO_SNDBUF"))?;
        }
        sock.set_nonblocking(true)
            .map_err(|e| ctx(e, "O_NONBLOCK"))?;
        if v6 {
            ffi::set_int(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)
                .map_err(|e| ctx(e, "IPV6_RECVPKTINFO"))?;
        } else {
            ffi::set_int(&sock, libc::IPPROTO_IP, libc::IP_PKTINFO, 1)
                .map_err(|e| ctx(e, "IP_PKTINFO"))?;
        }
        let gro = cfg.gro && ffi::set_int(&sock, libc::SOL_UDP, libc::UDP_GRO, 1).is_ok();
        // Reading the socket's default segment size (0) costs nothing and fails with
        // ENOPROTOOPT where the kernel has no UDP GSO.
        let gso = cfg.gso && ffi::get_int(&sock, libc::SOL_UDP, libc::UDP_SEGMENT).is_ok();
        let local = sock
            .local_addr()
            .map_err(|e| ctx(e, "getsockname"))?
            .as_socket()
            .ok_or_else(|| ctx(io::Error::other("not an IP address"), "getsockname"))?;
        Ok(OuterSocket {
            sock,
            local,
            device: cfg.device.clone(),
            gso: AtomicBool::new(gso),
            gro,
            truncated: AtomicU64::new(0),
        })
    }

    /// The bound address, with the real port when 0 was asked for.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The device the socket is bound to, if any.
    pub fn device(&self) -> Option<&str> {
        self.device.as_deref()
    }

    /// The offloads in use now (GSO goes off for good after an `EIO`, see
    /// [`Self::send_batch`]).
    pub fn offloads(&self) -> SocketOffloads {
        SocketOffloads {
            gso: self.gso.load(Ordering::Relaxed),
            gro: self.gro,
        }
    }

    /// The receive and send buffer sizes the kernel reports (twice what was set: the kernel
    /// counts its bookkeeping).
    pub fn buffer_sizes(&self) -> io::Result<(usize, usize)> {
        Ok((self.sock.recv_buffer_size()?, self.sock.send_buffer_size()?))
    }

    /// Datagrams dropped so far by [`Self::recv_batch`] because they did not fit their
    /// buffer.
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// Sends `msgs` (at most [`MAX_BATCH`] of them) with one `sendmmsg(2)`, each with a
    /// `UDP_SEGMENT` control message when it has a `segment_size`. Returns how many messages
    /// the kernel took, in order; the rest must be sent again (after waiting for writability
    /// if this returned fewer than asked). Nothing taken is `Err` of kind `WouldBlock` (or the
    /// error of the first message).
    ///
    /// Checked before any syscall, failing the whole batch with `InvalidInput`: the address
    /// family of every `dst`, and for a `segment_size` that GSO is on, the size is 1 to 65535,
    /// and the [`MAX_GSO_SEGMENTS`] and [`MAX_GSO_BYTES`] limits. If the kernel answers `EIO`
    /// to a GSO message, GSO is switched off for this socket ([`Self::offloads`]) and the error
    /// returned: send the message again as separate datagrams.
    pub fn send_batch(
        &self,
        scratch: &mut SendScratch,
        msgs: &[Transmit<'_>],
    ) -> io::Result<usize> {
        let msgs = &msgs[..msgs.len().min(MAX_BATCH)];
        let Some(first) = msgs.first() else {
            return Ok(0);
        };
        let gso = self.gso.load(Ordering::Relaxed);
        for m in msgs {
            self.check(m, gso)?;
        }
        match ffi::sendmmsg(self.sock.as_fd(), scratch, msgs) {
            Err(e) if e.raw_os_error() == Some(libc::EIO) && first.segment_size.is_some() => {
                self.gso.store(false, Ordering::Relaxed);
                Err(e)
            }
            r => r,
        }
    }

    fn check(&self, m: &Transmit<'_>, gso: bool) -> io::Result<()> {
        let invalid = |msg: &'static str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        if m.dst.is_ipv6() != self.local.is_ipv6() {
            return invalid("destination address family differs from the socket's");
        }
        if let Some(seg) = m.segment_size {
            if !gso {
                return invalid("segment_size given but GSO is off on this socket");
            }
            if seg == 0 || seg > usize::from(u16::MAX) {
                return invalid("segment_size out of range");
            }
            if m.contents.len() > MAX_GSO_BYTES {
                return invalid("GSO message longer than 65507 bytes");
            }
            if m.contents.len().div_ceil(seg) > MAX_GSO_SEGMENTS {
                return invalid("GSO message of more than 64 segments");
            }
        }
        Ok(())
    }

    /// Sends one datagram (keepalives, probes). Non-blocking.
    pub fn send_to(&self, buf: &[u8], dst: SocketAddr) -> io::Result<usize> {
        if dst.is_ipv6() != self.local.is_ipv6() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "destination address family differs from the socket's",
            ));
        }
        self.sock.send_to(buf, &dst.into())
    }

    /// Receives up to `bufs.len()` (at most [`MAX_BATCH`]) datagrams or GRO trains with one
    /// `recvmmsg(2)` (`MSG_DONTWAIT`), filling `bufs[..n]` and returning `n`; nothing waiting
    /// is `Err` of kind `WouldBlock`. An empty `bufs` returns `Ok(0)`.
    ///
    /// A datagram longer than its buffer's room (`data.len() - offset`) is dropped and counted
    /// in [`Self::truncated`], not returned: the buffers after it move down (the `RecvBuf`s of
    /// the slice are swapped, never reallocated), so `bufs[..n]` are all good. With GRO on,
    /// give every buffer [`MAX_RECV_LEN`] of room, or whole trains will be lost this way.
    /// An `offset` beyond `data.len()` is `InvalidInput`.
    pub fn recv_batch(&self, scratch: &mut RecvScratch, bufs: &mut [RecvBuf]) -> io::Result<usize> {
        let len = bufs.len().min(MAX_BATCH);
        let bufs = &mut bufs[..len];
        if bufs.is_empty() {
            return Ok(0);
        }
        if bufs.iter().any(|b| b.offset > b.data.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "RecvBuf offset beyond its data",
            ));
        }
        loop {
            let n = ffi::recvmmsg(self.sock.as_fd(), scratch, bufs)?;
            let mut kept = 0;
            for i in 0..n {
                let meta = ffi::recv_meta(scratch, i);
                if meta.truncated {
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                bufs.swap(kept, i);
                let b = &mut bufs[kept];
                b.len = meta.len;
                b.src = meta.src;
                b.dst_ip = meta.dst_ip;
                b.segment_size = meta.segment_size;
                kept += 1;
            }
            if kept > 0 {
                return Ok(kept);
            }
            // Everything read was dropped: read again, so that a caller waiting for
            // readiness (edge-triggered) is not left with data queued.
        }
    }
}

impl OuterSocket {
    /// Registers the socket with `poll` for edge-triggered readability under `token`, with
    /// `EPOLLEXCLUSIVE`: when several workers' polls hold the socket, one arrival wakes one
    /// of those waiting in `epoll_wait`, not all of them (each would wake, race for the same
    /// datagrams and all but one find nothing). A poll whose thread is busy still gets the
    /// event on its ready list, so nothing is lost; it is only not woken. Remove it with
    /// `Registry::deregister` as any mio registration (`EPOLL_CTL_DEL`).
    ///
    /// mio (1.x) has no exclusive interest; this adds the socket to mio's epoll instance
    /// directly, with mio's own encoding (the token in `epoll_event.u64`), so the events come
    /// back from `Poll::poll` as usual (`registered_exclusive_wakes_with_its_token` checks it).
    pub fn register_exclusive(&self, poll: &mio::Poll, token: mio::Token) -> io::Result<()> {
        ffi::epoll_add_exclusive(poll.as_raw_fd(), self.sock.as_fd(), token.0 as u64)
    }
}

impl AsRawFd for OuterSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }
}

impl AsFd for OuterSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

fn clamp(size: usize) -> libc::c_int {
    libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX)
}

/// The only place with `unsafe` for the outer sockets: socket options, `sendmmsg`,
/// `recvmmsg`, socket addresses and control messages.
mod ffi {
    use std::io;
    use std::mem;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
    use std::ptr;

    use super::{RECV_CMSG_LEN, RecvBuf, RecvScratch, SEND_CMSG_LEN, SendScratch, Transmit};

    pub(super) const EMPTY_IOVEC: libc::iovec = libc::iovec {
        iov_base: ptr::null_mut(),
        iov_len: 0,
    };

    /// `CMSG_LEN(0)`: the aligned size of a `cmsghdr`, where the data starts.
    // SAFETY: CMSG_LEN is pure arithmetic on its argument.
    const CMSG_HDR: usize = unsafe { libc::CMSG_LEN(0) } as usize;

    /// `CMSG_ALIGN`: Linux aligns control messages to `sizeof(long)`.
    const fn cmsg_align(n: usize) -> usize {
        (n + mem::size_of::<usize>() - 1) & !(mem::size_of::<usize>() - 1)
    }

    pub(super) fn zeroed_mmsghdr() -> libc::mmsghdr {
        // SAFETY: `mmsghdr` is a C struct of integers and raw pointers; all-zero (null
        // pointers, zero lengths) is a valid value.
        unsafe { mem::zeroed() }
    }

    pub(super) fn zeroed_storage() -> libc::sockaddr_storage {
        // SAFETY: `sockaddr_storage` is a C struct of integers; all-zero is a valid value.
        unsafe { mem::zeroed() }
    }

    fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    pub(super) fn set_int(
        fd: &impl AsFd,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
    ) -> io::Result<()> {
        // SAFETY: the option value is a live `c_int` and its exact size is passed; the fd is
        // open (borrowed).
        cvt(unsafe {
            libc::setsockopt(
                fd.as_fd().as_raw_fd(),
                level,
                name,
                ptr::from_ref(&value).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        Ok(())
    }

    pub(super) fn get_int(
        fd: &impl AsFd,
        level: libc::c_int,
        name: libc::c_int,
    ) -> io::Result<libc::c_int> {
        let mut value: libc::c_int = 0;
        let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: `value` and `len` are live locals; the kernel writes at most `len` bytes
        // into `value` and updates `len`.
        cvt(unsafe {
            libc::getsockopt(
                fd.as_fd().as_raw_fd(),
                level,
                name,
                ptr::from_mut(&mut value).cast(),
                &mut len,
            )
        })?;
        Ok(value)
    }

    /// `EPOLL_CTL_ADD` of `fd` to the epoll instance `epfd`: readable, edge-triggered,
    /// exclusive wake-ups, `data` in the event's `u64`.
    pub(super) fn epoll_add_exclusive(
        epfd: libc::c_int,
        fd: BorrowedFd<'_>,
        data: u64,
    ) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET | libc::EPOLLEXCLUSIVE) as u32,
            u64: data,
        };
        // SAFETY: `ev` is a live, initialised `epoll_event` the kernel only reads; `fd` is an
        // open socket (borrowed for the call) and `epfd` the caller's epoll instance (an
        // invalid one is EBADF/EINVAL, not undefined behaviour).
        cvt(unsafe { libc::epoll_ctl(epfd, libc::EPOLL_CTL_ADD, fd.as_raw_fd(), &mut ev) })?;
        Ok(())
    }

    /// Writes `addr` into `storage`, returning the length to pass to the kernel.
    fn encode(addr: SocketAddr, storage: &mut libc::sockaddr_storage) -> libc::socklen_t {
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(*a.ip()).to_be(),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: `sockaddr_storage` is larger than and aligned at least as strictly
                // as `sockaddr_in` (that is its purpose), and `storage` is exclusively
                // borrowed.
                unsafe { ptr::write(ptr::from_mut(storage).cast::<libc::sockaddr_in>(), sin) };
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo().to_be(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                // SAFETY: as above, for `sockaddr_in6`.
                unsafe { ptr::write(ptr::from_mut(storage).cast::<libc::sockaddr_in6>(), sin6) };
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t
            }
        }
    }

    /// Reads the address the kernel wrote into `storage` (`len` bytes).
    fn decode(storage: &libc::sockaddr_storage, len: libc::socklen_t) -> Option<SocketAddr> {
        let len = len as usize;
        match libc::c_int::from(storage.ss_family) {
            libc::AF_INET if len >= mem::size_of::<libc::sockaddr_in>() => {
                // SAFETY: the family says the kernel wrote a `sockaddr_in`, and the storage is
                // large and aligned enough for one; every bit pattern is a valid value.
                let sin: libc::sockaddr_in = unsafe { ptr::read(ptr::from_ref(storage).cast()) };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                    u16::from_be(sin.sin_port),
                )))
            }
            libc::AF_INET6 if len >= mem::size_of::<libc::sockaddr_in6>() => {
                // SAFETY: as above, for `sockaddr_in6`.
                let sin6: libc::sockaddr_in6 = unsafe { ptr::read(ptr::from_ref(storage).cast()) };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                    u16::from_be(sin6.sin6_port),
                    u32::from_be(sin6.sin6_flowinfo),
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }

    /// Writes a `UDP_SEGMENT` control message carrying `seg` at the start of `buf`; returns
    /// its space.
    fn write_segment_cmsg(buf: &mut [u8; SEND_CMSG_LEN], seg: u16) -> usize {
        const DATA: usize = mem::size_of::<u16>();
        const SPACE: usize = CMSG_HDR + cmsg_align(DATA);
        const _: () = assert!(SPACE <= SEND_CMSG_LEN);
        // SAFETY: `cmsghdr` is a C struct of integers (plus padding fields on some libcs);
        // all-zero is a valid value.
        let mut hdr: libc::cmsghdr = unsafe { mem::zeroed() };
        hdr.cmsg_len = (CMSG_HDR + DATA) as _;
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = libc::UDP_SEGMENT;
        const _: () = assert!(mem::size_of::<libc::cmsghdr>() <= SEND_CMSG_LEN);
        // SAFETY: `buf` has room for a `cmsghdr` (checked at compile time above); the write
        // is unaligned-safe.
        unsafe { ptr::write_unaligned(buf.as_mut_ptr().cast::<libc::cmsghdr>(), hdr) };
        buf[CMSG_HDR..CMSG_HDR + DATA].copy_from_slice(&seg.to_ne_bytes());
        SPACE
    }

    /// One `sendmmsg(2)` for all of `msgs` (already checked and cut to `MAX_BATCH`).
    pub(super) fn sendmmsg(
        fd: BorrowedFd<'_>,
        s: &mut SendScratch,
        msgs: &[Transmit<'_>],
    ) -> io::Result<usize> {
        let n = msgs.len();
        s.reserve(n);
        // First fill the pointed-to arrays, then take their base pointers once (no reference
        // to a whole array is made after that, so the pointers stay valid).
        for (i, m) in msgs.iter().enumerate() {
            s.iovs[i] = libc::iovec {
                // The kernel only reads from a send buffer.
                iov_base: m.contents.as_ptr().cast_mut().cast(),
                iov_len: m.contents.len(),
            };
            let namelen = encode(m.dst, &mut s.addrs[i]);
            let ctl = match m.segment_size {
                // `check` bounded the size to u16.
                Some(seg) => write_segment_cmsg(&mut s.cmsgs[i].0, seg as u16),
                None => 0,
            };
            let h = &mut s.hdrs[i];
            h.msg_hdr.msg_namelen = namelen;
            h.msg_hdr.msg_controllen = ctl as _;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        let iovs = s.iovs.as_mut_ptr();
        let addrs = s.addrs.as_mut_ptr();
        let cmsgs = s.cmsgs.as_mut_ptr();
        for (i, h) in s.hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_iov = iovs.wrapping_add(i);
            h.msg_hdr.msg_name = addrs.wrapping_add(i).cast();
            h.msg_hdr.msg_control = if h.msg_hdr.msg_controllen == 0 {
                ptr::null_mut()
            } else {
                cmsgs.wrapping_add(i).cast()
            };
        }
        // SAFETY: the first `n` headers point at `n` live iovecs, addresses and control
        // buffers of this scratch (exclusively borrowed for the call) with their lengths, and
        // the iovecs at the callers' `contents`, borrowed for the call; the kernel only reads
        // them. `n <= MAX_BATCH` fits a c_uint.
        let ret = unsafe {
            libc::sendmmsg(
                fd.as_raw_fd(),
                s.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        cvt(ret).map(|n| n as usize)
    }

    /// One `recvmmsg(2)` into `bufs` (offsets already checked, cut to `MAX_BATCH`); returns
    /// how many headers the kernel filled (see [`recv_meta`]).
    pub(super) fn recvmmsg(
        fd: BorrowedFd<'_>,
        s: &mut RecvScratch,
        bufs: &mut [RecvBuf],
    ) -> io::Result<usize> {
        let n = bufs.len();
        s.reserve(n);
        for (iov, b) in s.iovs.iter_mut().zip(bufs.iter_mut()) {
            let room = &mut b.data[b.offset..];
            *iov = libc::iovec {
                iov_base: room.as_mut_ptr().cast(),
                iov_len: room.len(),
            };
        }
        let iovs = s.iovs.as_mut_ptr();
        let addrs = s.addrs.as_mut_ptr();
        let cmsgs = s.cmsgs.as_mut_ptr();
        for (i, h) in s.hdrs[..n].iter_mut().enumerate() {
            h.msg_hdr.msg_iov = iovs.wrapping_add(i);
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_name = addrs.wrapping_add(i).cast();
            h.msg_hdr.msg_namelen = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_control = cmsgs.wrapping_add(i).cast();
            h.msg_hdr.msg_controllen = RECV_CMSG_LEN as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: the first `n` headers point at `n` live iovecs, address buffers and control
        // buffers of this scratch with their true sizes, and the iovecs at the callers'
        // buffers `data[offset..]`; all are exclusively borrowed for the call. The timeout
        // may be null. `n <= MAX_BATCH` fits a c_uint.
        let ret = unsafe {
            libc::recvmmsg(
                fd.as_raw_fd(),
                s.hdrs.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
            )
        };
        match cvt(ret)? {
            0 => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n as usize),
        }
    }

    /// What the kernel reported for message `i` of the last [`recvmmsg`].
    pub(super) struct RecvMeta {
        pub(super) len: usize,
        pub(super) truncated: bool,
        pub(super) src: SocketAddr,
        pub(super) dst_ip: Option<IpAddr>,
        pub(super) segment_size: Option<usize>,
    }

    pub(super) fn recv_meta(s: &RecvScratch, i: usize) -> RecvMeta {
        let h = &s.hdrs[i];
        let src = decode(&s.addrs[i], h.msg_hdr.msg_namelen)
            .unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
        // `msg_controllen` is a size_t with glibc but a socklen_t with musl.
        #[allow(clippy::unnecessary_cast)]
        let ctl_len = (h.msg_hdr.msg_controllen as usize).min(RECV_CMSG_LEN);
        let mut meta = RecvMeta {
            len: h.msg_len as usize,
            truncated: h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            src,
            dst_ip: None,
            segment_size: None,
        };
        for (level, kind, data) in Cmsgs(&s.cmsgs[i].0[..ctl_len]) {
            match (level, kind) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) if data.len() >= 12 => {
                    // struct in_pktinfo { int ifindex; in_addr spec_dst; in_addr addr; }:
                    // `addr` is the header's destination address.
                    let a: [u8; 4] = data[8..12].try_into().unwrap_or_default();
                    meta.dst_ip = Some(IpAddr::V4(Ipv4Addr::from(a)));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) if data.len() >= 16 => {
                    // struct in6_pktinfo { in6_addr addr; unsigned ifindex; }
                    let a: [u8; 16] = data[..16].try_into().unwrap_or_default();
                    meta.dst_ip = Some(IpAddr::V6(Ipv6Addr::from(a)));
                }
                (libc::SOL_UDP, libc::UDP_GRO) if data.len() >= 4 => {
                    let a: [u8; 4] = data[..4].try_into().unwrap_or_default();
                    let seg = i32::from_ne_bytes(a);
                    meta.segment_size = usize::try_from(seg).ok().filter(|&s| s > 0);
                }
                _ => {}
            }
        }
        meta
    }

    /// Walks the control messages in a filled control buffer, yielding (level, type, data).
    /// Bounds come from the slice, never from the kernel's lengths alone.
    struct Cmsgs<'a>(&'a [u8]);

    impl<'a> Iterator for Cmsgs<'a> {
        type Item = (libc::c_int, libc::c_int, &'a [u8]);

        fn next(&mut self) -> Option<Self::Item> {
            if self.0.len() < mem::size_of::<libc::cmsghdr>() {
                return None;
            }
            // SAFETY: the slice holds at least a `cmsghdr` (checked above); the read is
            // unaligned-safe and every bit pattern is a valid `cmsghdr`.
            let hdr: libc::cmsghdr = unsafe { ptr::read_unaligned(self.0.as_ptr().cast()) };
            let len = hdr.cmsg_len as usize;
            if len < CMSG_HDR || len > self.0.len() {
                self.0 = &[];
                return None;
            }
            let data = &self.0[CMSG_HDR..len];
            let next = cmsg_align(len).min(self.0.len());
            self.0 = &self.0[next..];
            Some((hdr.cmsg_level, hdr.cmsg_type, data))
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn sockaddr_round_trip() {
            for addr in [
                "198.18.1.2:4500".parse::<SocketAddr>().unwrap(),
                "[2001:db8::1]:4500".parse().unwrap(),
                SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 9, 0, 3)),
            ] {
                let mut st = zeroed_storage();
                let len = encode(addr, &mut st);
                assert_eq!(decode(&st, len), Some(addr));
            }
            assert_eq!(decode(&zeroed_storage(), 128), None);
        }

        #[test]
        fn segment_cmsg_parses_back() {
            let mut buf = [0u8; SEND_CMSG_LEN];
            let space = write_segment_cmsg(&mut buf, 1200);
            let got: Vec<_> = Cmsgs(&buf[..space]).collect();
            assert_eq!(got.len(), 1);
            assert_eq!((got[0].0, got[0].1), (libc::SOL_UDP, libc::UDP_SEGMENT));
            assert_eq!(got[0].2, 1200u16.to_ne_bytes());
            // Garbage lengths end the walk instead of reading out of bounds.
            let mut bad = buf;
            bad[..8].copy_from_slice(&1000usize.to_ne_bytes()[..8]);
            assert_eq!(Cmsgs(&bad[..space]).count(), 0);
            assert_eq!(Cmsgs(&[]).count(), 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    const TIMEOUT: Duration = Duration::from_secs(3);

    fn open(local: &str, gso: bool, gro: bool) -> OuterSocket {
        OuterSocket::bind(&SocketConfig {
            gso,
            gro,
            ..SocketConfig::new(local.parse().unwrap())
        })
        .expect("bind")
    }

    /// One received datagram: payload, src, dst_ip, segment_size of its buffer.
    type Got = (Vec<u8>, SocketAddr, Option<IpAddr>, Option<usize>);

    /// Receives until `want` datagrams (after GRO splitting) have arrived or the deadline
    /// passes; returns (payload, src, dst_ip, segment_size of its buffer).
    fn recv_datagrams(sock: &OuterSocket, want: usize, headroom: usize) -> Vec<Got> {
        let mut scratch = RecvScratch::new(16);
        let mut bufs: Vec<RecvBuf> = (0..16)
            .map(|_| RecvBuf::new(headroom, MAX_RECV_LEN))
            .collect();
        let mut out = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while out.len() < want {
            match sock.recv_batch(&mut scratch, &mut bufs) {
                Ok(n) => {
                    for b in &bufs[..n] {
                        for r in b.datagrams() {
                            out.push((b.data[r].to_vec(), b.src, b.dst_ip, b.segment_size));
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "timed out with {} of {want} datagrams",
                        out.len()
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("recv_batch: {e}"),
            }
        }
        out
    }

    fn payload(i: usize, len: usize) -> Vec<u8> {
        (0..len).map(|j| (i * 31 + j) as u8).collect()
    }

    fn batch_of_32(local: &str) {
        let tx = open(local, true, true);
        let rx = open(local, true, true);
        let datagrams: Vec<Vec<u8>> = (0..32).map(|i| payload(i, 100 + i * 10)).collect();
        let msgs: Vec<Transmit<'_>> = datagrams
            .iter()
            .map(|d| Transmit {
                dst: rx.local_addr(),
                contents: d,
                segment_size: None,
            })
            .collect();
        let mut scratch = SendScratch::new(8); // grows to 32
        assert_eq!(tx.send_batch(&mut scratch, &msgs).unwrap(), 32);
        let got = recv_datagrams(&rx, 32, 0);
        assert_eq!(got.len(), 32);
        for (i, (data, src, dst_ip, _)) in got.into_iter().enumerate() {
            assert_eq!(data, datagrams[i], "datagram {i}");
            assert_eq!(src, tx.local_addr());
            assert_eq!(dst_ip, Some(rx.local_addr().ip()));
        }
    }

    /// A socket registered exclusively in two mio polls (two workers) comes back from
    /// `Poll::poll` with each poll's own token (neither waits while the datagram arrives, so
    /// both have it queued), and after `deregister` that poll no longer reports it.
    #[test]
    fn registered_exclusive_wakes_with_its_token() {
        let rx = open("127.0.0.1:0", false, false);
        let tx = open("127.0.0.1:0", false, false);
        let mut polls: Vec<mio::Poll> = (0..2).map(|_| mio::Poll::new().unwrap()).collect();
        for (i, p) in polls.iter().enumerate() {
            rx.register_exclusive(p, mio::Token(7 + i)).unwrap();
        }
        let tokens = |p: &mut mio::Poll, timeout: Duration| {
            let mut events = mio::Events::with_capacity(4);
            p.poll(&mut events, Some(timeout)).unwrap();
            events.iter().map(|e| e.token()).collect::<Vec<_>>()
        };
        tx.send_to(b"wake", rx.local_addr()).unwrap();
        for (i, p) in polls.iter_mut().enumerate() {
            assert_eq!(tokens(p, TIMEOUT), vec![mio::Token(7 + i)]);
        }
        let fd = rx.as_raw_fd();
        polls[0]
            .registry()
            .deregister(&mut mio::unix::SourceFd(&fd))
            .unwrap();
        tx.send_to(b"again", rx.local_addr()).unwrap();
        assert_eq!(tokens(&mut polls[1], TIMEOUT), vec![mio::Token(8)]);
        assert_eq!(tokens(&mut polls[0], Duration::ZERO), vec![]);
    }

    #[test]
    fn loopback_v4_batch_of_32() {
        batch_of_32("127.0.0.1:0");
    }

    #[test]
    fn loopback_v6_batch_of_32() {
        batch_of_32("[::1]:0");
    }

    #[test]
    fn bind_reports_port_and_offloads() {
        let s = open("127.0.0.1:0", true, true);
        assert_ne!(s.local_addr().port(), 0);
        assert_eq!(s.device(), None);
        let off = s.offloads();
        eprintln!("outer socket offloads on this kernel: {off}");
        assert!(
            off.gso && off.gro,
            "this kernel should have UDP GSO and GRO: {off}"
        );
        let s = open("[::1]:0", false, false);
        assert_eq!(s.offloads(), SocketOffloads::default());
        let (r, w) = s.buffer_sizes().unwrap();
        eprintln!("buffer sizes: recv {r} send {w}");
        assert!(r > 0 && w > 0);
    }

    #[test]
    fn bad_device_name_is_invalid_input() {
        for dev in ["", "0123456789abcdef", "a\0b"] {
            let err = OuterSocket::bind(&SocketConfig {
                device: Some(dev.into()),
                ..SocketConfig::new("127.0.0.1:0".parse().unwrap())
            })
            .unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{dev:?}");
        }
    }

    fn gso_train(rx_gro: bool) {
        let tx = open("127.0.0.1:0", true, false);
        let rx = open("127.0.0.1:0", false, rx_gro);
        assert!(tx.offloads().gso);
        let data: Vec<u8> = (0..10).flat_map(|i| payload(i, 1200)).collect();
        let msg = Transmit {
            dst: rx.local_addr(),
            contents: &data,
            segment_size: Some(1200),
        };
        let mut scratch = SendScratch::default();
        assert_eq!(tx.send_batch(&mut scratch, &[msg]).unwrap(), 1);
        let got = recv_datagrams(&rx, 10, 16);
        assert_eq!(got.len(), 10);
        for (i, (d, src, dst_ip, seg)) in got.iter().enumerate() {
            assert_eq!(*d, payload(i, 1200), "datagram {i}");
            assert_eq!(*src, tx.local_addr());
            assert_eq!(*dst_ip, Some(rx.local_addr().ip()));
            if !rx_gro {
                assert_eq!(*seg, None);
            }
        }
        if rx_gro {
            eprintln!(
                "GSO train to a GRO socket arrived with segment_size {:?}",
                got[0].3
            );
        }
    }

    #[test]
    fn gso_train_to_receiver_without_gro_arrives_as_datagrams() {
        gso_train(false);
    }

    #[test]
    fn gso_train_to_receiver_with_gro_splits_back() {
        gso_train(true);
    }

    #[test]
    fn gso_with_short_last_segment_and_v6() {
        let tx = open("[::1]:0", true, false);
        let rx = open("[::1]:0", false, true);
        let data: Vec<u8> = (0..3 * 1000 + 17).map(|i| i as u8).collect();
        let msg = Transmit {
            dst: rx.local_addr(),
            contents: &data,
            segment_size: Some(1000),
        };
        assert_eq!(
            tx.send_batch(&mut SendScratch::default(), &[msg]).unwrap(),
            1
        );
        let got = recv_datagrams(&rx, 4, 0);
        let lens: Vec<usize> = got.iter().map(|g| g.0.len()).collect();
        assert_eq!(lens, [1000, 1000, 1000, 17]);
        let joined: Vec<u8> = got.into_iter().flat_map(|g| g.0).collect();
        assert_eq!(joined, data);
    }

    #[test]
    fn bad_transmits_are_invalid_input() {
        let plain = open("127.0.0.1:0", false, false);
        let gso = open("127.0.0.1:0", true, false);
        let v6 = "[::1]:9".parse().unwrap();
        let dst = plain.local_addr();
        let data = vec![0u8; 70_000];
        let mut scratch = SendScratch::default();
        let kind = |s: &OuterSocket, m: Transmit<'_>| {
            s.send_batch(&mut SendScratch::default(), &[m])
                .unwrap_err()
                .kind()
        };
        let t = |len: usize, seg: Option<usize>| Transmit {
            dst,
            contents: &data[..len],
            segment_size: seg,
        };
        assert_eq!(
            kind(&plain, t(2400, Some(1200))),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(kind(&gso, t(2400, Some(0))), io::ErrorKind::InvalidInput);
        assert_eq!(
            kind(&gso, t(2400, Some(70_000))),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(&gso, t(65 * 100, Some(100))),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            kind(&gso, t(65_508, Some(1200))),
            io::ErrorKind::InvalidInput
        );
        let wrong_family = Transmit {
            dst: v6,
            ..t(10, None)
        };
        assert_eq!(kind(&gso, wrong_family), io::ErrorKind::InvalidInput);
        assert_eq!(
            gso.send_to(b"x", v6).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // A bad message anywhere fails the whole batch before anything is sent.
        let batch = [t(10, None), t(2400, Some(0))];
        assert_eq!(
            gso.send_batch(&mut scratch, &batch).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        // The limits themselves are fine: 64 segments, 65507 bytes.
        assert_eq!(
            gso.send_batch(&mut scratch, &[t(64 * 1000, Some(1000))])
                .unwrap(),
            1
        );
        assert_eq!(
            gso.send_batch(&mut scratch, &[t(65_507, Some(1024))])
                .unwrap(),
            1
        );
        assert_eq!(gso.send_batch(&mut scratch, &[]).unwrap(), 0);
        let got = recv_datagrams(&plain, 64 + 64, 0);
        assert_eq!(got.len(), 128);
        assert_eq!(got[127].0.len(), 65_507 - 63 * 1024);
    }

    #[test]
    fn truncated_datagram_is_dropped_and_counted() {
        let tx = open("127.0.0.1:0", false, false);
        let rx = open("127.0.0.1:0", false, false);
        let dst = rx.local_addr();
        for len in [50, 200, 60, 300] {
            tx.send_to(&payload(len, len), dst).unwrap();
        }
        let mut scratch = RecvScratch::new(4);
        let mut bufs: Vec<RecvBuf> = (0..4).map(|_| RecvBuf::new(8, 100)).collect();
        let mut got = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while got.len() < 2 {
            match rx.recv_batch(&mut scratch, &mut bufs) {
                Ok(n) => got.extend(bufs[..n].iter().map(|b| b.payload().to_vec())),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "timed out");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(got, [payload(50, 50), payload(60, 60)]);
        assert_eq!(rx.truncated(), 2);
        assert_eq!(
            rx.recv_batch(&mut scratch, &mut bufs).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // Only a datagram that is dropped makes the call read again; a lone one returns.
        tx.send_to(&payload(1, 500), dst).unwrap();
        let deadline = Instant::now() + TIMEOUT;
        while rx.truncated() < 3 {
            let _ = rx.recv_batch(&mut scratch, &mut bufs);
            assert!(Instant::now() < deadline, "timed out");
        }
        bufs[0].offset = 200;
        assert_eq!(
            rx.recv_batch(&mut scratch, &mut bufs).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(rx.recv_batch(&mut scratch, &mut []).unwrap(), 0);
    }

    #[test]
    fn send_to_and_headroom() {
        let tx = open("127.0.0.1:0", true, true);
        let rx = open("127.0.0.1:0", true, true);
        assert_eq!(tx.send_to(&[0xff], rx.local_addr()).unwrap(), 1);
        let got = recv_datagrams(&rx, 1, 64);
        assert_eq!(got[0].0, [0xff]);
        let mut bufs = vec![RecvBuf::new(64, 2048)];
        tx.send_to(b"abc", rx.local_addr()).unwrap();
        let deadline = Instant::now() + TIMEOUT;
        let mut scratch = RecvScratch::default();
        loop {
            match rx.recv_batch(&mut scratch, &mut bufs) {
                Ok(1) => break,
                Ok(n) => panic!("{n}"),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "timed out");
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(&bufs[0].data[64..67], b"abc");
        assert_eq!(bufs[0].datagrams().next(), Some(64..67));
        assert_eq!(bufs[0].datagrams().len(), 1);
    }

    #[test]
    fn datagrams_edge_cases() {
        let mut b = RecvBuf::new(10, 100);
        let ranges = |b: &RecvBuf| b.datagrams().map(|r| (r.start, r.end)).collect::<Vec<_>>();
        // No segment size: one datagram, even an empty one.
        assert_eq!(ranges(&b), [(10, 10)]);
        b.len = 42;
        assert_eq!(ranges(&b), [(10, 52)]);
        // Exact multiple.
        b.len = 90;
        b.segment_size = Some(30);
        assert_eq!(ranges(&b), [(10, 40), (40, 70), (70, 100)]);
        assert_eq!(b.datagrams().len(), 3);
        // Short last.
        b.len = 75;
        assert_eq!(ranges(&b), [(10, 40), (40, 70), (70, 85)]);
        // Length at or below the segment size: one datagram.
        b.len = 30;
        assert_eq!(ranges(&b), [(10, 40)]);
        b.len = 7;
        assert_eq!(ranges(&b), [(10, 17)]);
        // A zero segment size does not loop.
        b.segment_size = Some(0);
        b.len = 50;
        assert_eq!(ranges(&b), [(10, 60)]);
        // Segment size 1.
        b.segment_size = Some(1);
        b.len = 3;
        assert_eq!(ranges(&b), [(10, 11), (11, 12), (12, 13)]);
        assert_eq!(b.payload().len(), 3);
    }

    #[test]
    fn offloads_display() {
        let o = |gso, gro| SocketOffloads { gso, gro }.to_string();
        assert_eq!(o(true, true), "gso gro");
        assert_eq!(o(true, false), "gso");
        assert_eq!(o(false, true), "gro");
        assert_eq!(o(false, false), "none");
    }

    #[test]
    fn shared_socket_with_per_worker_scratch() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<OuterSocket>();
        send::<SendScratch>();
        send::<RecvScratch>();

        let tx = Arc::new(open("127.0.0.1:0", true, true));
        let rx = open("127.0.0.1:0", true, true);
        let dst = rx.local_addr();
        let workers: Vec<_> = (0..2u8)
            .map(|w| {
                let tx = Arc::clone(&tx);
                std::thread::spawn(move || {
                    let mut scratch = SendScratch::new(10);
                    for round in 0..10u8 {
                        let bodies: Vec<[u8; 3]> = (0..10u8).map(|i| [w, round, i]).collect();
                        let msgs: Vec<Transmit<'_>> = bodies
                            .iter()
                            .map(|b| Transmit {
                                dst,
                                contents: b,
                                segment_size: None,
                            })
                            .collect();
                        let mut sent = 0;
                        while sent < msgs.len() {
                            match tx.send_batch(&mut scratch, &msgs[sent..]) {
                                Ok(n) => sent += n,
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                    std::thread::sleep(Duration::from_millis(1));
                                }
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().unwrap();
        }
        let mut got: Vec<Vec<u8>> = recv_datagrams(&rx, 200, 0)
            .into_iter()
            .map(|g| g.0)
            .collect();
        got.sort();
        let mut want: Vec<Vec<u8>> = (0..2u8)
            .flat_map(|w| (0..10u8).flat_map(move |r| (0..10u8).map(move |i| vec![w, r, i])))
            .collect();
        want.sort();
        assert_eq!(got, want);
    }
}
