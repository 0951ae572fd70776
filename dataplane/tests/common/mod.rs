//! Test data shared by the dataplane integration tests.
pub mod vectors;
