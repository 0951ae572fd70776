//! IKEv2 (RFC 7296) as a sans-IO state machine: the initial exchanges IKE_SA_INIT and
//! IKE_AUTH with PSK authentication and the first child SA, in either role; then
//! CREATE_CHILD_SA (child and IKE SA rekeys with optional PFS and the collision rules) and
//! INFORMATIONAL (Deletes, liveness checks), driven by lifetimes with jitter.
//!
//! * [`crypto`]: PRFs and prf+, Diffie-Hellman, key derivation, PSK AUTH, the SK payload.
//! * [`config`]: the configuration one IKE SA is built from.
//! * [`cookie`]: responder COOKIEs (RFC 7296 section 2.6) and the decision to demand them.
//! * [`endpoint`]: every IKE SA of a node: routing datagrams by SPI, new responders, the
//!   COOKIE gate and the half-open limits (sans-IO; the daemon's IKE thread drives it).
//! * [`fragment`]: IKE fragmentation (RFC 7383): message size budget and reassembly.
//! * [`limits`]: limits on new responder SAs: half-open SAs in all and per source, and
//!   an IKE_SA_INIT rate per source.
//! * [`proposal`]: SA payloads, proposal selection, traffic-selector narrowing.
//! * [`sample`]: sample client and gateway configurations (harness, fuzz targets, benchmark).
//! * [`sa`]: the state machine, [`IkeSa`] (the exchanges after IKE_AUTH in
//!   `sa/exchange/`, one type each).
//!
//! The deterministic two-peer harness that tests the exchanges lives in `harness`
//! (tests only).

pub mod auth;
pub mod config;
pub mod cookie;
pub mod crypto;
pub mod endpoint;
pub mod fragment;
pub mod limits;
pub mod proposal;
pub mod sa;
pub mod sample;

#[cfg(test)]
mod harness;

pub use config::{
    AddressPool, ChildConfig, ChildLifetimes, DpdAction, DpdConfig, EsnPolicy, EspProposal,
    IkeConfig, IkeProposal, Lifetimes, MifOnNew, Mode, RetransmitConfig, RoamConfig,
};
pub use crypto::Prf;
pub use sa::{
    ChildMove, ChildSa, Event, FailReason, IkeSa, IkeSaInfo, LocalInterface, MifChildChange,
    MifChildPaths, MifError, MifPath, MifTransition, MoveError, MoveReason, NatStatus,
    SeqLimitAction, Stats, Transmit,
};
