//! The strongSwan interop lab of the test kit (`mifsec_testkit::swan`: namespaces, charon,
//! daemons, the shared configurations), with this crate's `mifsec` binary.
//!
//! Each test binary uses part of it.
#![allow(dead_code, unused_imports)]

pub use mifsec_testkit::swan::*;
pub use mifsec_testkit::{
    Follower, WAIT, exec_in, in_ns, ip, poll, require_root, run, terminate, text, wait_until,
};

/// The binary the daemons of the lab run.
pub const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
