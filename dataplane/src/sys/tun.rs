//! Linux multi-queue TUN device with optional virtio-net offloads (TSO/USO/checksum).
//!
//! All TUN syscall code of the project lives in this file, inside the private `ffi` module:
//! everything else works on [`Tun`] and [`TunQueue`]. With offloads on, each read returns (and
//! each write takes) a 10-byte `virtio_net_hdr` before the IP packet; see
//! [`crate::offload`] to split what is read and coalesce what is written.
//!
//! Opening follows wireguard-go's `tun/tun_linux.go`: `IFF_TUN | IFF_NO_PI | IFF_MULTI_QUEUE`
//! (+ `IFF_VNET_HDR`), then `TUNSETVNETHDRSZ` and `TUNSETOFFLOAD`, trying checksum + TSO + USO,
//! then checksum + TSO, and else reopening the device without `IFF_VNET_HDR`.
#![cfg(target_os = "linux")]

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::offload::VIRTIO_NET_HDR_LEN;

/// How to create the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunConfig {
    /// Interface name, at most 15 bytes; may be empty or a template such as `"mif%d"`, in
    /// which case the kernel picks the name ([`Tun::name`] tells which).
    pub name: String,
    /// Number of queues (file descriptors), at least 1.
    pub queues: usize,
    /// MTU to set; 0 keeps the kernel's default (1500).
    pub mtu: u32,
    /// Ask for `IFF_VNET_HDR` and TSO/USO/checksum offloads (falls back silently, see
    /// [`Tun::offloads`]).
    pub offloads: bool,
}

impl Default for TunConfig {
    fn default() -> Self {
        Self {
            name: String::from("mifsec%d"),
            queues: 1,
            mtu: 1400,
            offloads: true,
        }
    }
}

/// Which offloads the open device ended up with.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offloads {
    /// Packets carry a `virtio_net_hdr` (`IFF_VNET_HDR`).
    pub vnet_hdr: bool,
    /// `TUN_F_CSUM`: the kernel may hand out packets with a partial L4 checksum.
    pub csum: bool,
    /// `TUN_F_TSO4`: TCP/IPv4 super-packets.
    pub tso4: bool,
    /// `TUN_F_TSO6`: TCP/IPv6 super-packets.
    pub tso6: bool,
    /// `TUN_F_USO4`: UDP/IPv4 super-packets.
    pub uso4: bool,
    /// `TUN_F_USO6`: UDP/IPv6 super-packets.
    pub uso6: bool,
}

impl fmt::Display for Offloads {
    /// Space-separated names of what is on, e.g. `"vnet_hdr csum tso4 tso6 uso4 uso6"`, or
    /// `"none"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = [
            (self.vnet_hdr, "vnet_hdr"),
            (self.csum, "csum"),
            (self.tso4, "tso4"),
            (self.tso6, "tso6"),
            (self.uso4, "uso4"),
            (self.uso6, "uso6"),
        ];
        let mut first = true;
        for (_, name) in names.iter().filter(|(on, _)| *on) {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(name)?;
            first = false;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

impl Offloads {
    fn from_tun_flags(bits: libc::c_uint) -> Self {
        Self {
            vnet_hdr: true,
            csum: bits & libc::TUN_F_CSUM != 0,
            tso4: bits & libc::TUN_F_TSO4 != 0,
            tso6: bits & libc::TUN_F_TSO6 != 0,
            uso4: bits & libc::TUN_F_USO4 != 0,
            uso6: bits & libc::TUN_F_USO6 != 0,
        }
    }
}

/// An open TUN device: its queues and what was negotiated. The device disappears when the
/// last queue is closed.
#[derive(Debug)]
pub struct Tun {
    name: String,
    queues: Vec<TunQueue>,
    offloads: Offloads,
    mtu: u32,
}

/// One queue of the device: a non-blocking file descriptor. Reads return one packet each
/// (`WouldBlock` when none is waiting); writes take one packet each. When
/// [`TunQueue::vnet_hdr`] is true both carry the 10-byte virtio header first.
#[derive(Debug)]
pub struct TunQueue {
    fd: OwnedFd,
    vnet_hdr: bool,
}

/// What [`Tun::open_queues`] produced.
struct Opened {
    name: String,
    fds: Vec<OwnedFd>,
    offloads: Offloads,
}

/// Offload sets tried in order, with `IFF_VNET_HDR`.
const OFFLOAD_ATTEMPTS: [libc::c_uint; 2] = [
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_USO4 | libc::TUN_F_USO6,
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
];

impl Tun {
    /// Creates (or attaches to) the device, opens `cfg.queues` queues, negotiates offloads,
    /// sets the MTU and brings the link up.
    pub fn open(cfg: &TunConfig) -> io::Result<Tun> {
        if cfg.queues == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TUN needs at least one queue",
            ));
        }
        if cfg.name.len() >= libc::IFNAMSIZ || cfg.name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {:?}", cfg.name),
            ));
        }
        if cfg.mtu > i32::MAX as u32 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "MTU too large"));
        }
        let opened = if cfg.offloads {
            Self::open_queues(cfg, true)?
        } else {
            None
        };
        let Opened {
            name,
            fds,
            offloads,
        } = match opened {
            Some(o) => o,
            // No offloads wanted, or none accepted: the vnet device (if any) was closed, so
            // this creates it anew without IFF_VNET_HDR.
            None => Self::open_queues(cfg, false)?
                .ok_or_else(|| io::Error::other("TUN open without offloads failed"))?,
        };
        if cfg.mtu != 0 {
            ffi::set_mtu(&name, cfg.mtu).map_err(|e| ctx(e, "SIOCSIFMTU", &name))?;
        }
        ffi::set_up(&name).map_err(|e| ctx(e, "SIOCSIFFLAGS", &name))?;
        let queues = fds
            .into_iter()
            .map(|fd| TunQueue {
                fd,
                vnet_hdr: offloads.vnet_hdr,
            })
            .collect();
        let mtu = if cfg.mtu == 0 {
            ffi::get_mtu(&name).map_err(|e| ctx(e, "SIOCGIFMTU", &name))?
        } else {
            cfg.mtu
        };
        Ok(Tun {
            name,
            queues,
            offloads,
            mtu,
        })
    }

    /// Opens all queues. With `vnet`, returns `Ok(None)` (device closed again) when the
    /// kernel accepts none of our offload sets.
    fn open_queues(cfg: &TunConfig, vnet: bool) -> io::Result<Option<Opened>> {
        let mut flags = libc::IFF_TUN | libc::IFF_NO_PI | libc::IFF_MULTI_QUEUE;
        if vnet {
            flags |= libc::IFF_VNET_HDR;
        }
        let (first, name) =
            ffi::open_queue(&cfg.name, flags).map_err(|e| ctx(e, "TUNSETIFF", &cfg.name))?;
        let mut offloads = Offloads::default();
        if vnet {
            let hdr_sz = VIRTIO_NET_HDR_LEN as libc::c_int;
            ffi::set_vnet_hdr_sz(&first, hdr_sz).map_err(|e| ctx(e, "TUNSETVNETHDRSZ", &name))?;
            #[cfg(target_endian = "big")]
            ffi::set_vnet_le(&first).map_err(|e| ctx(e, "TUNSETVNETLE", &name))?;
            let Some(bits) = OFFLOAD_ATTEMPTS
                .into_iter()
                .find(|&bits| ffi::set_offload(&first, bits).is_ok())
            else {
                return Ok(None);
            };
            offloads = Offloads::from_tun_flags(bits);
        }
        let mut fds = Vec::with_capacity(cfg.queues);
        fds.push(first);
        for _ in 1..cfg.queues {
            let (fd, _) = ffi::open_queue(&name, flags).map_err(|e| ctx(e, "TUNSETIFF", &name))?;
            fds.push(fd);
        }
        Ok(Some(Opened {
            name,
            fds,
            offloads,
        }))
    }

    /// The interface name the kernel gave the device.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The negotiated offloads.
    pub fn offloads(&self) -> Offloads {
        self.offloads
    }

    /// The device MTU.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// The queues.
    pub fn queues(&self) -> &[TunQueue] {
        &self.queues
    }

    /// Takes the queues out, e.g. to hand one to each worker thread. The device lives as long
    /// as any of them is open.
    pub fn into_queues(self) -> Vec<TunQueue> {
        self.queues
    }
}

impl TunQueue {
    /// Reads one packet (virtio header first when [`Self::vnet_hdr`]). Non-blocking.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        ffi::read(self.fd.as_fd(), buf)
    }

    /// Writes one packet (virtio header first when [`Self::vnet_hdr`]). Non-blocking.
    pub fn write(&self, buf: &[u8]) -> io::Result<usize> {
        ffi::write(self.fd.as_fd(), buf)
    }

    /// True when packets on this queue carry a `virtio_net_hdr`.
    pub fn vnet_hdr(&self) -> bool {
        self.vnet_hdr
    }
}

impl AsRawFd for TunQueue {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for TunQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn ctx(e: io::Error, what: &str, name: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what} on TUN {name:?}: {e}"))
}

/// The only place with `unsafe` for the TUN: ioctls, read and write.
mod ffi {
    use std::fs::OpenOptions;
    use std::io;
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::OpenOptionsExt;

    /// An all-zero `ifreq` carrying `name`.
    fn ifreq(name: &str) -> io::Result<libc::ifreq> {
        // SAFETY: `ifreq` is a C struct of a char array and a union of integers, arrays,
        // sockaddrs and a raw pointer; all-zero bytes are a valid value for every member.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        let bytes = name.as_bytes();
        if bytes.len() >= req.ifr_name.len() || bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "bad interface name",
            ));
        }
        for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = src as libc::c_char;
        }
        Ok(req)
    }

    fn ifreq_name(req: &libc::ifreq) -> String {
        let bytes: Vec<u8> = req
            .ifr_name
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }

    /// Opens /dev/net/tun (O_NONBLOCK, O_CLOEXEC) and attaches it to `name` with TUNSETIFF.
    /// Returns the fd and the actual interface name.
    pub(super) fn open_queue(name: &str, flags: libc::c_int) -> io::Result<(OwnedFd, String)> {
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_flags = flags as libc::c_short;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/net/tun")?;
        let fd = OwnedFd::from(file);
        // SAFETY: `fd` is an open /dev/net/tun descriptor; TUNSETIFF reads and writes a
        // `struct ifreq`, and `req` is a properly initialised, exclusively borrowed ifreq that
        // outlives the call.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETIFF as _, &mut req) })?;
        Ok((fd, ifreq_name(&req)))
    }

    /// TUNSETVNETHDRSZ: the size of the virtio header on reads and writes.
    pub(super) fn set_vnet_hdr_sz(fd: &OwnedFd, size: libc::c_int) -> io::Result<()> {
        // SAFETY: TUNSETVNETHDRSZ reads one `int` through the pointer; `size` is a live local.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETHDRSZ as _, &size) })?;
        Ok(())
    }

    /// TUNSETVNETLE: little-endian virtio header fields (needed on big-endian hosts only).
    #[cfg(target_endian = "big")]
    pub(super) fn set_vnet_le(fd: &OwnedFd) -> io::Result<()> {
        let on: libc::c_int = 1;
        // SAFETY: TUNSETVNETLE reads one `int` through the pointer; `on` is a live local.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETVNETLE as _, &on) })?;
        Ok(())
    }

    /// TUNSETOFFLOAD with `TUN_F_*` bits (passed by value, not by pointer).
    pub(super) fn set_offload(fd: &OwnedFd, bits: libc::c_uint) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument as an unsigned long value; no memory is
        // accessed through it.
        cvt(unsafe {
            libc::ioctl(
                fd.as_raw_fd(),
                libc::TUNSETOFFLOAD as _,
                libc::c_ulong::from(bits),
            )
        })?;
        Ok(())
    }

    /// An AF_INET datagram socket for the SIOC*IF* ioctls (in this thread's network
    /// namespace, which is where the TUN was created).
    fn ctl_socket() -> io::Result<OwnedFd> {
        // SAFETY: plain socket(2) call with constant arguments.
        let fd =
            cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
        // SAFETY: `fd` was just returned by socket(2), is open and owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Runs a SIOC*IF* ioctl on `req`.
    fn if_ioctl(sock: &OwnedFd, request: libc::c_ulong, req: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: the SIOC[GS]IF{MTU,FLAGS} requests read/write a `struct ifreq`; `req` is a
        // valid, exclusively borrowed ifreq for the whole call.
        cvt(unsafe { libc::ioctl(sock.as_raw_fd(), request as _, req as *mut libc::ifreq) })?;
        Ok(())
    }

    pub(super) fn set_mtu(name: &str, mtu: u32) -> io::Result<()> {
        let sock = ctl_socket()?;
        let mut req = ifreq(name)?;
        req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
        if_ioctl(&sock, libc::SIOCSIFMTU, &mut req)
    }

    pub(super) fn get_mtu(name: &str) -> io::Result<u32> {
        let sock = ctl_socket()?;
        let mut req = ifreq(name)?;
        if_ioctl(&sock, libc::SIOCGIFMTU, &mut req)?;
        // SAFETY: SIOCGIFMTU succeeded, so the kernel stored the MTU in `ifru_mtu`; every bit
        // pattern is a valid c_int anyway.
        let mtu = unsafe { req.ifr_ifru.ifru_mtu };
        Ok(mtu as u32)
    }

    /// Sets IFF_UP, keeping the other flags.
    pub(super) fn set_up(name: &str) -> io::Result<()> {
        let sock = ctl_socket()?;
        let mut req = ifreq(name)?;
        if_ioctl(&sock, libc::SIOCGIFFLAGS, &mut req)?;
        // SAFETY: SIOCGIFFLAGS succeeded, so `ifru_flags` holds the flags; every bit pattern
        // is a valid c_short anyway.
        let flags = unsafe { req.ifr_ifru.ifru_flags };
        req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
        if_ioctl(&sock, libc::SIOCSIFFLAGS, &mut req)
    }

    pub(super) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call
        // and `fd` is open (borrowed from an OwnedFd).
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    pub(super) fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call
        // and `fd` is open (borrowed from an OwnedFd).
        let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offloads_display() {
        assert_eq!(Offloads::default().to_string(), "none");
        let all = Offloads::from_tun_flags(OFFLOAD_ATTEMPTS[0]);
        assert_eq!(all.to_string(), "vnet_hdr csum tso4 tso6 uso4 uso6");
        let tso = Offloads::from_tun_flags(OFFLOAD_ATTEMPTS[1]);
        assert_eq!(tso.to_string(), "vnet_hdr csum tso4 tso6");
    }

    #[test]
    fn config_is_validated_before_any_syscall() {
        let bad = |cfg: TunConfig| Tun::open(&cfg).unwrap_err().kind();
        let base = TunConfig::default();
        assert_eq!(
            bad(TunConfig {
                queues: 0,
                ..base.clone()
            }),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            bad(TunConfig {
                name: "x".repeat(16),
                ..base.clone()
            }),
            io::ErrorKind::InvalidInput
        );
        assert_eq!(
            bad(TunConfig {
                name: "a\0b".into(),
                ..base
            }),
            io::ErrorKind::InvalidInput
        );
    }
}
