//! Why an engine operation failed: [`EngineError`], one variant per thing that can go wrong,
//! so that a caller can tell a missing SA from a socket that would not bind without reading
//! the message. Its `Display` text is for the operator (the control socket sends it as
//! `error`).

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use crate::esp::sa::SaError;
use crate::iproute::IpError;
use crate::marks::{Direction, MarkError};

/// Why an engine operation failed.
#[derive(Debug)]
#[non_exhaustive]
pub enum EngineError {
    /// The TUN device could not be opened.
    OpenTun {
        /// The name asked for.
        name: String,
        /// Why.
        source: io::Error,
    },
    /// Putting an address or a route on the TUN failed.
    Ip(IpError),
    /// An interface's UDP socket could not be bound.
    Bind {
        /// The `[interfaces.*]` name.
        interface: String,
        /// Its local address.
        address: IpAddr,
        /// Its local port.
        port: u16,
        /// Why.
        source: io::Error,
    },
    /// A manual SA's static key is used twice: by both of its directions (`other == sa`),
    /// or by another SA. Both uses would count sequence numbers (AEAD nonces) from the
    /// same start.
    KeyReused {
        /// The SA that uses the key a second time.
        sa: String,
        /// The SA that used it first.
        other: String,
    },
    /// The state directory of manual SAs could not be created or written.
    StateDir(MarkError),
    /// A manual SA's sequence marks could not be read or stored at start.
    Marks {
        /// The SA.
        sa: String,
        /// Why.
        source: MarkError,
    },
    /// A manual SA's sequence marks are not writable by the user the engine runs as now.
    MarksNotWritable(MarkError),
    /// One direction of an SA could not be built (bad key, reserved SPI, replay window).
    BadSa {
        /// The SA.
        sa: String,
        /// Which direction.
        direction: Direction,
        /// Why.
        source: SaError,
    },
    /// No SA has this name.
    NoSa {
        /// The name asked for.
        name: String,
    },
    /// An SA of this name is installed already.
    SaExists {
        /// The name.
        name: String,
    },
    /// An installed SA has this inbound SPI already.
    SpiInUse {
        /// The SPI.
        spi: u32,
    },
    /// The SA has no path of this name.
    NoPath {
        /// The SA.
        sa: String,
        /// The path asked for.
        path: String,
    },
    /// The SA has a path of this name already.
    PathExists {
        /// The SA.
        sa: String,
        /// The path.
        path: String,
    },
    /// No interface has this name.
    NoInterface {
        /// The name asked for.
        name: String,
    },
    /// An interface of this name is open already.
    InterfaceExists {
        /// The name.
        name: String,
    },
    /// An IKE message could not be sent.
    SendIke {
        /// Where it was going.
        remote: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// A change of a batch ([`Engine::apply`](super::Engine::apply)) failed; nothing of the
    /// batch was applied.
    InBatch {
        /// Which change (from 0).
        index: usize,
        /// Why it failed.
        source: Box<EngineError>,
    },
    /// A path order names a path twice.
    PathNamedTwice {
        /// The SA.
        sa: String,
        /// The path.
        path: String,
    },
    /// A [`TableOp::RemoveWhenUp`](super::TableOp::RemoveWhenUp) that cannot be: nothing to
    /// remove, nothing to wait for, or a path in both lists.
    BadWait {
        /// The SA.
        sa: String,
        /// Which of the three.
        why: &'static str,
    },
    /// One of the engine's threads could not be started.
    Spawn {
        /// Which: "worker", "monitor", "the mark keeper".
        thread: &'static str,
        /// Why.
        source: io::Error,
    },
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::OpenTun { name, source } => write!(f, "opening TUN {name:?}: {source}"),
            EngineError::Ip(e) => e.fmt(f),
            EngineError::Bind {
                interface,
                address,
                port,
                source,
            } => write!(
                f,
                "interface {interface}: binding {address}:{port}: {source}"
            ),
            EngineError::KeyReused { sa, other } if sa == other => write!(
                f,
                "sa {sa}: key_out and key_in are the same key; each direction needs its own"
            ),
            EngineError::KeyReused { sa, other } => write!(
                f,
                "sa {sa}: uses a key of sa {other}; every manual SA needs keys of its own"
            ),
            EngineError::StateDir(e) => {
                write!(f, "{e} (manual SAs keep their sequence marks there)")
            }
            EngineError::Marks { sa, source } => write!(
                f,
                "sa {sa}: {source} (a manual SA starts only with its sequence marks readable \
                 and writable)"
            ),
            EngineError::MarksNotWritable(e) => {
                write!(f, "{e}; manual SAs need their sequence marks")
            }
            EngineError::BadSa {
                sa,
                direction,
                source,
            } => {
                let d = match direction {
                    Direction::Out => "outbound",
                    Direction::In => "inbound",
                };
                write!(f, "sa {sa}: {d}: {source}")
            }
            EngineError::NoSa { name } => write!(f, "no SA named {name:?}"),
            EngineError::SaExists { name } => write!(f, "an SA named {name:?} exists"),
            EngineError::SpiInUse { spi } => write!(f, "inbound SPI {spi:08x} is in use"),
            EngineError::NoPath { sa, path } => write!(f, "SA {sa} has no path named {path:?}"),
            EngineError::PathExists { sa, path } => {
                write!(f, "SA {sa} already has a path named {path:?}")
            }
            EngineError::NoInterface { name } => write!(f, "no interface named {name:?}"),
            EngineError::InterfaceExists { name } => write!(f, "interface {name} exists"),
            EngineError::SendIke { remote, source } => {
                write!(f, "sending IKE to {remote}: {source}")
            }
            EngineError::InBatch { index, source } => write!(
                f,
                "change {} of the batch: {source}; nothing of the batch was applied",
                index + 1
            ),
            EngineError::PathNamedTwice { sa, path } => {
                write!(f, "SA {sa}: path {path:?} is named twice in the path order")
            }
            EngineError::BadWait { sa, why } => write!(f, "SA {sa}: soft move's wait: {why}"),
            EngineError::Spawn { thread, source } => write!(f, "spawning {thread}: {source}"),
        }
    }
}

impl std::error::Error for EngineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            EngineError::OpenTun { source, .. }
            | EngineError::Bind { source, .. }
            | EngineError::SendIke { source, .. }
            | EngineError::Spawn { source, .. } => Some(source),
            EngineError::Ip(e) => Some(e),
            EngineError::StateDir(e) | EngineError::MarksNotWritable(e) => Some(e),
            EngineError::Marks { source, .. } => Some(source),
            EngineError::BadSa { source, .. } => Some(source),
            EngineError::InBatch { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<IpError> for EngineError {
    fn from(e: IpError) -> Self {
        EngineError::Ip(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts operators and the control socket's clients see (some are asserted by the
    /// control plane's tests) stay what they were when they were plain strings.
    #[test]
    fn messages() {
        let io = || io::Error::from(io::ErrorKind::AddrInUse);
        let cases: Vec<(EngineError, String)> = vec![
            (
                EngineError::NoSa {
                    name: "nope".into(),
                },
                "no SA named \"nope\"".into(),
            ),
            (
                EngineError::SaExists { name: "t".into() },
                "an SA named \"t\" exists".into(),
            ),
            (
                EngineError::SpiInUse { spi: 0x1001 },
                "inbound SPI 00001001 is in use".into(),
            ),
            (
                EngineError::NoPath {
                    sa: "t".into(),
                    path: "p9".into(),
                },
                "SA t has no path named \"p9\"".into(),
            ),
            (
                EngineError::PathExists {
                    sa: "t".into(),
                    path: "p1".into(),
                },
                "SA t already has a path named \"p1\"".into(),
            ),
            (
                EngineError::NoInterface {
                    name: "wifi".into(),
                },
                "no interface named \"wifi\"".into(),
            ),
            (
                EngineError::InterfaceExists {
                    name: "wifi".into(),
                },
                "interface wifi exists".into(),
            ),
            (
                EngineError::KeyReused {
                    sa: "a".into(),
                    other: "a".into(),
                },
                "sa a: key_out and key_in are the same key; each direction needs its own".into(),
            ),
            (
                EngineError::KeyReused {
                    sa: "b".into(),
                    other: "a".into(),
                },
                "sa b: uses a key of sa a; every manual SA needs keys of its own".into(),
            ),
            (
                EngineError::BadSa {
                    sa: "t".into(),
                    direction: Direction::In,
                    source: SaError::ReservedSpi(7),
                },
                "sa t: inbound: SPI 7 is reserved (0-255)".into(),
            ),
            (
                EngineError::Bind {
                    interface: "l1".into(),
                    address: "::1".parse().unwrap(),
                    port: 4500,
                    source: io(),
                },
                format!("interface l1: binding ::1:4500: {}", io()),
            ),
            (
                EngineError::Spawn {
                    thread: "monitor",
                    source: io(),
                },
                format!("spawning monitor: {}", io()),
            ),
            (
                EngineError::InBatch {
                    index: 2,
                    source: Box::new(EngineError::NoSa { name: "c".into() }),
                },
                "change 3 of the batch: no SA named \"c\"; nothing of the batch was applied".into(),
            ),
        ];
        for (e, want) in cases {
            assert_eq!(e.to_string(), want, "{e:?}");
        }
    }
}
