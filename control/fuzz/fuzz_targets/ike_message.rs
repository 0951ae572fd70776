//! Fuzzes the IKEv2 message parser: arbitrary bytes must never panic it, and whatever it
//! accepts must re-encode to a message that parses back to the same representation.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_control::wire::{HeaderPacket, Message};

fuzz_target!(|data: &[u8]| {
    // The checked header view must not panic either.
    if let Ok(header) = HeaderPacket::new_checked(data) {
        let _ = (
            header.spi_i(),
            header.next_payload(),
            header.payload().len(),
        );
    }
    let Ok(msg) = Message::parse(data) else {
        return;
    };
    let bytes = msg.to_bytes();
    assert_eq!(bytes.len(), msg.buffer_len());
    let again = Message::parse(&bytes).expect("a re-encoded message parses");
    assert_eq!(again, msg);
    // Re-encoding is canonical: a second round gives the same bytes.
    assert_eq!(again.to_bytes(), bytes);
    if let Some(offset) = msg.encrypted_data_offset() {
        assert!(offset <= bytes.len());
    }
});
