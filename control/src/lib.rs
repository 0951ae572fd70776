//! mifsec's control plane: IKEv2, MOBIKE and the MIF extensions as a sans-IO state machine,
//! the configuration, the control thread and the `mifsec` binary.
//!
//! Only the skeleton exists so far; see docs/ARCHITECTURE.md for what lands where.

pub use mifsec_dataplane as dataplane;

pub mod cli;
pub mod config;
pub mod ctl;
pub mod daemon;
pub mod events;
pub mod ike;
pub mod log;
pub mod logging;
pub mod metrics;
pub mod render;
pub mod top;
pub mod wire;
