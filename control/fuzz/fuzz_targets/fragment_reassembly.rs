//! The IKE fragment reassembler (`ike::fragment::Reassembler`, RFC 7383) fed authenticated
//! fragments in any order, numbering and size: never a panic, never more than the byte
//! limit held or returned; and a message whose fragments all arrive, in any order, comes
//! back whole and unchanged.
//!
//! Input: two limit bytes, then records `response | id | number | total | first | len |
//! data`; a record with `number` 0 instead splits the rest of the input into `total`
//! fragments sent in an order taken from `id`, which must reassemble exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mifsec_control::ike::fragment::{Limits, Outcome, Reassembler};
use mifsec_control::wire::{PayloadType, SkfPayload};
use zeroize::Zeroizing;

fn skf(first: u8, number: u16, total: u16) -> SkfPayload {
    SkfPayload {
        first_inner: PayloadType::from_raw(first),
        fragment_number: number,
        total_fragments: total,
        data: Vec::new(),
    }
}

fuzz_target!(|data: &[u8]| {
    let [maxf, maxb, rest @ ..] = data else {
        return;
    };
    let mut rest: &[u8] = rest;
    let limits = Limits {
        max_fragments: u16::from(*maxf).max(1),
        max_bytes: usize::from(*maxb) * 64,
    };
    let mut r = Reassembler::new(limits);
    while let [resp, id, number, total, first, len, tail @ ..] = rest {
        let n = usize::from(*len).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        let (id, total) = (u32::from(*id), u16::from(*total));
        if *number == 0 {
            // Every fragment of one message, in a shuffled order, on a fresh reassembler.
            let whole = rest;
            let total = total.clamp(1, limits.max_fragments);
            let size = whole.len().div_ceil(usize::from(total)).max(1);
            let parts: Vec<&[u8]> = (0..usize::from(total))
                .map(|i| &whole[(i * size).min(whole.len())..((i + 1) * size).min(whole.len())])
                .collect();
            let mut order: Vec<usize> = (0..parts.len()).collect();
            let mut seed = id.wrapping_mul(2_654_435_761) | 1;
            for i in (1..order.len()).rev() {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                order.swap(i, seed as usize % (i + 1));
            }
            let mut fresh = Reassembler::new(limits);
            let mut done = None;
            for (k, &i) in order.iter().enumerate() {
                let f = skf(*first, i as u16 + 1, total);
                let out = fresh.insert(false, 7, &f, Zeroizing::new(parts[i].to_vec()));
                match out {
                    Outcome::Complete(t, bytes) => {
                        assert_eq!(k + 1, order.len(), "complete before the last fragment");
                        done = Some((t, bytes));
                    }
                    Outcome::Stored => assert!(k + 1 < order.len()),
                    Outcome::Dropped(_) => {
                        assert!(
                            whole.len() > limits.max_bytes,
                            "dropped within limits: {out:?}"
                        );
                        return;
                    }
                }
            }
            let (t, bytes) = done.expect("all fragments in, the message is complete");
            assert_eq!(t.to_raw(), *first);
            assert_eq!(&bytes[..], whole);
            assert!(fresh.is_idle());
            break;
        }
        let f = skf(*first, u16::from(*number), total);
        if let Outcome::Complete(_, bytes) =
            r.insert(*resp & 1 != 0, id, &f, Zeroizing::new(chunk.to_vec()))
        {
            assert!(bytes.len() <= limits.max_bytes);
        }
    }
});
