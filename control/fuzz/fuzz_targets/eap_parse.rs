//! EAP past the integrity check: the EAP packets of one side of a genuine in-memory
//! handshake replaced by the input's and sealed with the live IKE keys, so that they reach
//! the other side's EAP code (MS-CHAPv2 both roles, the EAP-TLS client), and the EAP-TLS
//! client and MS-CHAPv2 authenticator fed directly for many rounds. See `eap/mod.rs`.
#![no_main]

mod eap;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eap::run(data));
