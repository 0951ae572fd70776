//! The UDP-encapsulation classifier and the checked ESP view over arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_dataplane::esp::wire::{EspPacket, UdpPayload, classify_udp_payload};

fuzz_target!(|data: &[u8]| {
    match classify_udp_payload(data) {
        UdpPayload::Esp(esp) => {
            if let Ok(p) = EspPacket::new_checked(esp) {
                let _ = (p.spi(), p.seq_low(), p.iv(), p.icv());
                assert_eq!(p.ciphertext().len() % 4, 0);
                assert_eq!(p.ciphertext().len() + 32, esp.len());
            }
        }
        UdpPayload::Ike(ike) => assert_eq!(ike.len() + 4, data.len()),
        UdpPayload::Keepalive | UdpPayload::Malformed => {}
    }
    let _ = mifsec_dataplane::net::ip::IpHeader::parse(data);
});
