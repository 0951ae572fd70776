//! ESP (RFC 4303) with AEAD ciphers, carried in UDP (RFC 3948).
//!
//! Two layers, as smoltcp does it: [`wire`] reads and writes fields of packets in place and
//! cannot panic once a view is checked; [`sa`] seals and opens whole packets in place in a
//! buffer with headroom and tailroom, with the sequence counter, the replay window and the
//! counters of the SA. The IP headers around and inside ESP are [`crate::net::ip`]'s.

pub mod sa;
pub mod wire;

pub use sa::{InboundSa, Mode, Opened, OutboundSa, SaConfig, SealError, Sealed};
pub use wire::{EspPacket, UdpPayload, classify_udp_payload};
