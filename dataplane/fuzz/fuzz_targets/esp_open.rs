//! open() with a fixed key, in both modes, with and without ESN: arbitrary bytes must be a
//! counted drop or a valid packet, never a panic. The first byte picks the configuration.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use mifsec_dataplane::aead::{Backend, Cipher};
use mifsec_dataplane::esp::{InboundSa, Mode, Opened, OutboundSa, SaConfig};

const KEYMAT: [u8; 20] = [7; 20];

fn cfg(esn: bool, mode: Mode) -> SaConfig<'static> {
    SaConfig {
        spi: 0x1234,
        cipher: Cipher::Aes128Gcm,
        backend: Backend::Ring,
        keymat: &KEYMAT,
        esn,
        mode,
        replay_window: 64,
    }
}

static SAS: LazyLock<Vec<(OutboundSa, InboundSa)>> = LazyLock::new(|| {
    let mut v = Vec::new();
    for esn in [false, true] {
        for mode in [Mode::Tunnel, Mode::Transport] {
            v.push((
                OutboundSa::new(&cfg(esn, mode), None).unwrap(),
                InboundSa::new(&cfg(esn, mode)).unwrap(),
            ));
        }
    }
    v
});

fuzz_target!(|data: &[u8]| {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (out, inb) = &SAS[usize::from(sel) % SAS.len()];
    if sel & 0x80 != 0 {
        // Seal the bytes as a payload, then open: a valid packet must come back unchanged.
        let mut buf = vec![0u8; 64 + rest.len() + OutboundSa::TAILROOM];
        buf[64..64 + rest.len()].copy_from_slice(rest);
        if let Ok(s) = out.seal(&mut buf, 64..64 + rest.len()) {
            match inb.open(&mut buf, s.range) {
                Ok(Opened::Packet { range, .. }) => {
                    let got = &buf[range];
                    if inb.mode() == Mode::Transport && rest[0] >> 4 == 4 {
                        // The IPv4 header checksum is recomputed; everything else is kept.
                        assert_eq!((&got[..10], &got[12..]), (&rest[..10], &rest[12..]));
                    } else {
                        assert_eq!(got, rest);
                    }
                }
                other => panic!("sealed packet did not open: {other:?}"),
            }
        }
    } else {
        let mut buf = rest.to_vec();
        let _ = inb.open(&mut buf, 0..rest.len());
    }
});
