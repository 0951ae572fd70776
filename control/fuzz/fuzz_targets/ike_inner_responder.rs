//! The IKE responder past the integrity check: after a genuine handshake, its peer seals
//! mutated inner payloads (CREATE_CHILD_SA, INFORMATIONAL, Delete, CP, fragments, answers
//! to the responder's own requests) with the live keys. Nothing may panic, the two sides must
//! settle, and no datagram may be answered by a flood. See `ike_inner/mod.rs`.
#![no_main]

mod ike_inner;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ike_inner::run(data, false));
