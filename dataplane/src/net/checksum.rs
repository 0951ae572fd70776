//! The Internet checksum (RFC 1071): the IPv4 header checksum and, with the pseudo-header of
//! [`super::ip::IpPacket::pseudo_header_sum`], the TCP and UDP checksums.

/// Adds `data` to the running ones'-complement sum `initial` without folding. Words are
/// big-endian; an odd trailing byte is padded with a zero low byte.
///
/// The bulk is summed as native-endian 64-bit words into 128-bit accumulators (an add and an
/// add-with-carry per 8 bytes, two chains), folded to 16 bits and byte-swapped into the
/// big-endian sum: the ones'-complement sum does not depend on byte order (RFC 1071 section
/// 2(B)), and folding is exact because 2^16 ≡ 1 (mod 2^16 - 1). The tail of fewer than 8
/// bytes, which starts at an even offset, is summed as before. Good for anything under
/// ~16 GiB.
#[inline]
pub fn add(data: &[u8], initial: u64) -> u64 {
    let mut chunks = data.chunks_exact(32);
    let (mut a, mut b) = (0u128, 0u128);
    let word = |c: &[u8], k: usize| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&c[8 * k..8 * k + 8]);
        u128::from(u64::from_ne_bytes(w))
    };
    for c in &mut chunks {
        a += word(c, 0) + word(c, 1);
        b += word(c, 2) + word(c, 3);
    }
    let mut rest = chunks.remainder().chunks_exact(8);
    for c in &mut rest {
        a += word(c, 0);
    }
    let mut s = a + b;
    while s >> 64 != 0 {
        s = u128::from(s as u64) + (s >> 64);
    }
    let s = s as u64;
    let native = fold((s & 0xffff_ffff) + (s >> 32));
    let be = if cfg!(target_endian = "little") {
        native.swap_bytes()
    } else {
        native
    };
    add_words(rest.remainder(), initial + u64::from(be))
}

/// [`add`] for short data: big-endian 32-bit words into a u64.
#[inline]
fn add_words(data: &[u8], initial: u64) -> u64 {
    let mut acc = initial;
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        acc += u64::from(u32::from_be_bytes([w[0], w[1], w[2], w[3]]));
    }
    let rest = words.remainder();
    let mut i = 0;
    if rest.len() >= 2 {
        acc += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        i = 2;
    }
    if rest.len() > i {
        acc += u64::from(rest[i]) << 8;
    }
    acc
}

/// Folds a running sum to 16 bits (not complemented).
#[inline]
pub fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum of `data` on top of `initial`: the complement of the folded sum.
#[inline]
pub fn checksum(data: &[u8], initial: u64) -> u16 {
    !fold(add(data, initial))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Naive RFC 1071: 16-bit words, end-around carry on every step.
    fn naive(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for pair in data.chunks(2) {
            s += u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]));
            s = (s & 0xffff) + (s >> 16);
        }
        !(s as u16)
    }

    #[test]
    fn checksum_of_a_known_header() {
        // A real IPv4 header whose checksum is 0xb861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(checksum(&h, 0), 0xb861);
    }

    proptest! {
        #[test]
        fn prop_matches_naive(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            prop_assert_eq!(checksum(&data, 0), naive(&data));
        }

        /// The wide sum agrees with 32-bit big-endian words over any length, start and
        /// initial sum, all-ones data (the most carries) included.
        #[test]
        fn prop_wide_sum_matches_words(data in proptest::collection::vec(any::<u8>(), 0..3000),
                                       ones in any::<bool>(),
                                       start in 0usize..64,
                                       initial in 0u64..(1 << 40)) {
            let data = if ones { vec![0xff; data.len()] } else { data };
            let d = &data[start.min(data.len())..];
            prop_assert_eq!(fold(add(d, initial)), fold(add_words(d, initial)));
        }
    }
}
