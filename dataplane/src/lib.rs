//! mifsec's packet engine.
//!
//! This crate protects IP packets with ESP (RFC 4303) carried over UDP (RFC 3948) and holds the
//! per-SA state that the packet path needs: AEAD keys behind a small backend trait
//! ([`aead`]), the outbound sequence counter ([`seq`]), the lock-free anti-replay window
//! ([`replay`]) and per-SA counters ([`counters`]). It knows nothing of IKE: the control plane
//! hands it keys and SPIs and gets events ([`event`]) back.

pub mod aead;
pub mod counters;
pub mod debug;
pub mod engine;
pub mod esp;
pub mod event;
pub mod iproute;
pub mod marks;
pub mod net;
pub mod offload;
pub mod path;
pub mod reorder;
pub mod replay;
pub mod sa_table;
pub mod scheduler;
pub mod seq;
pub mod sys;

/// The device modules at their first paths (`mifsec_dataplane::tun`, `::udp`), for the crates
/// that use them.
pub use sys::{netlink, tun, udp};
