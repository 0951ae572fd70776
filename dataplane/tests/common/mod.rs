//! Test data shared by the dataplane integration tests.
// Each test binary uses only part of this module.
#![allow(dead_code)]

pub mod vectors;
