//! placeholder, replaced by the replay window
