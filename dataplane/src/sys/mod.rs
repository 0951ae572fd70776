//! The devices: every syscall of the packet engine, one module per device type. [`tun`] is
//! the TUN device (multi-queue, `IFF_VNET_HDR`, `TUNSETOFFLOAD`), [`udp`] the outer sockets
//! (`SO_BINDTODEVICE`, `sendmmsg`/`recvmmsg`, UDP GSO/GRO, PKTINFO), [`netlink`]
//! rtnetlink (the interface monitor, and the requests that change addresses, routes and
//! links; its sockets through `netlink-sys`). Each keeps its `unsafe`
//! in a private `ffi` module, every block with its `// SAFETY:` comment; the rest of the
//! crate sees only safe types. (`iproute` makes its changes through [`netlink`].)

pub mod netlink;
pub mod tun;
pub mod udp;
