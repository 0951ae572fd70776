//! IKE fragmentation (RFC 7383): the reassembly of Encrypted Fragment (SKF) messages, and
//! the size a message may have before it is sent in fragments.
//!
//! Sending is [`super::crypto::SkCrypter::seal_fragments`]. Receiving: each fragment is
//! authenticated on its own (the caller opens it with
//! [`super::crypto::SkCrypter::open_fragment`] first: nothing unauthenticated is stored)
//! and handed to a [`Reassembler`], which keeps one message being reassembled per
//! direction (requests from the peer, responses to ours: two message ID spaces) and
//! returns the inner payloads' bytes once every fragment is in. The rules of RFC 7383
//! section 2.6: a fragment of a newer message ID, or of the same one with a higher Total
//! Fragments, discards what was gathered; one of an older message ID or with a lower Total
//! Fragments is dropped; duplicates are dropped. Limits on the number of fragments and on
//! the bytes gathered bound the memory a peer can make us hold.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use zeroize::Zeroizing;

use crate::wire::{PayloadType, SkfPayload};

/// Most fragments one message may have.
pub const MAX_FRAGMENTS: u16 = 128;
/// Most plaintext bytes one reassembled message may have.
pub const MAX_REASSEMBLED: usize = 64 * 1024;
/// The smallest `fragment_size` accepted (room for some data in each fragment).
pub const MIN_FRAGMENT_SIZE: u16 = 200;
/// The default `fragment_size`, as strongSwan's.
pub const DEFAULT_FRAGMENT_SIZE: u16 = 1280;

/// The largest IKE message (UDP payload, non-ESP marker excluded) that fits an IP datagram
/// of `fragment_size` bytes sent to `remote`: less the IPv4 or IPv6 header, the UDP
/// header and the four-byte non-ESP marker of port 4500 (always reserved: IKE may float to
/// 4500 at any time).
pub fn max_message_len(fragment_size: u16, remote: SocketAddr) -> usize {
    let ip = if remote.is_ipv4() { 20 } else { 40 };
    usize::from(fragment_size).saturating_sub(ip + 8 + 4)
}

/// Bounds on reassembly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most fragments per message.
    pub max_fragments: u16,
    /// Most plaintext bytes per message.
    pub max_bytes: usize,
}

/// The limits while a responder IKE SA is half-open (the peer not yet authenticated): an
/// IKE_AUTH request with PSK is well under 1 kB; 16 kB leave room for certificates.
pub const HALF_OPEN_LIMITS: Limits = Limits {
    max_fragments: 16,
    max_bytes: 16 * 1024,
};

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_fragments: MAX_FRAGMENTS,
            max_bytes: MAX_REASSEMBLED,
        }
    }
}

/// Why an authenticated fragment was not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragDrop {
    /// Already have this fragment number.
    Duplicate,
    /// Of an older message ID than the one being reassembled, or with fewer Total
    /// Fragments.
    Stale,
    /// Total Fragments above the limit.
    TooManyFragments,
    /// The message would exceed the byte limit.
    TooBig,
}

/// What became of a fragment.
#[derive(Debug)]
pub enum Outcome {
    /// The message is complete: its first inner payload type and the inner payloads'
    /// bytes.
    Complete(PayloadType, Zeroizing<Vec<u8>>),
    /// Stored; more fragments are needed.
    Stored,
    /// Not used.
    Dropped(FragDrop),
}

/// One message being reassembled.
#[derive(Debug)]
struct Partial {
    message_id: u32,
    total: u16,
    /// From fragment 1.
    first_inner: Option<PayloadType>,
    parts: BTreeMap<u16, Zeroizing<Vec<u8>>>,
    bytes: usize,
}

/// Reassembly state of one IKE SA: one message per direction.
#[derive(Debug, Default)]
pub struct Reassembler {
    limits: Limits,
    /// Index 0: requests from the peer; 1: responses from the peer.
    slots: [Option<Partial>; 2],
}

impl Reassembler {
    /// A reassembler with the given limits.
    pub fn new(limits: Limits) -> Self {
        Reassembler {
            limits,
            slots: [None, None],
        }
    }

    /// Whether a message is being reassembled in either direction.
    pub fn is_idle(&self) -> bool {
        self.slots.iter().all(Option::is_none)
    }

    /// Adds the authenticated fragment `skf` (its plaintext `data`) of the message with
    /// `message_id`, a response if `response`.
    pub fn insert(
        &mut self,
        response: bool,
        message_id: u32,
        skf: &SkfPayload,
        data: Zeroizing<Vec<u8>>,
    ) -> Outcome {
        let (number, total) = (skf.fragment_number, skf.total_fragments);
        if total > self.limits.max_fragments {
            return Outcome::Dropped(FragDrop::TooManyFragments);
        }
        if number == 0 || number > total {
            // The parser refuses these; kept for callers building SKF payloads by hand.
            return Outcome::Dropped(FragDrop::Stale);
        }
        let slot = &mut self.slots[usize::from(response)];
        if let Some(p) = slot.as_ref() {
            let newer =
                message_id > p.message_id || (message_id == p.message_id && total > p.total);
            let older =
                message_id < p.message_id || (message_id == p.message_id && total < p.total);
            if older {
                return Outcome::Dropped(FragDrop::Stale);
            }
            if newer {
                *slot = None;
            }
        }
        let p = slot.get_or_insert_with(|| Partial {
            message_id,
            total,
            first_inner: None,
            parts: BTreeMap::new(),
            bytes: 0,
        });
        if p.parts.contains_key(&number) {
            return Outcome::Dropped(FragDrop::Duplicate);
        }
        if p.bytes.saturating_add(data.len()) > self.limits.max_bytes {
            *slot = None;
            return Outcome::Dropped(FragDrop::TooBig);
        }
        if number == 1 {
            p.first_inner = Some(skf.first_inner);
        }
        p.bytes += data.len();
        p.parts.insert(number, data);
        if p.parts.len() < usize::from(p.total) {
            return Outcome::Stored;
        }
        let Some(done) = slot.take() else {
            return Outcome::Stored;
        };
        let mut plain = Zeroizing::new(Vec::with_capacity(done.bytes));
        for part in done.parts.values() {
            plain.extend_from_slice(part);
        }
        // Every number 1..=total is present (distinct keys in range, as many as total).
        let first = done.first_inner.unwrap_or(PayloadType::NoNextPayload);
        Outcome::Complete(first, plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::crypto::SkCrypter;
    use crate::wire::{
        ExchangeType, Flags, Header, Message, NotifyPayload, NotifyType, Payload, parse_payloads,
    };
    use mifsec_dataplane::aead::Cipher;
    use proptest::prelude::*;

    const KEY: [u8; 20] = [7; 20];

    fn header(id: u32) -> Header {
        Header {
            spi_i: 1,
            spi_r: 2,
            minor_version: 0,
            exchange_type: ExchangeType::IkeAuth,
            flags: Flags::INITIATOR,
            message_id: id,
        }
    }

    fn big_inner(n: usize) -> Vec<Payload> {
        (0..n)
            .map(|i| {
                Payload::Notify(NotifyPayload::new(
                    NotifyType::from(40000 + i as u16),
                    vec![i as u8; 90],
                ))
            })
            .collect()
    }

    fn crypters() -> (SkCrypter, SkCrypter) {
        (
            SkCrypter::new(Cipher::Aes128Gcm, &KEY).unwrap(),
            SkCrypter::new(Cipher::Aes128Gcm, &KEY).unwrap(),
        )
    }

    fn all(frags: &[Vec<u8>]) -> Vec<usize> {
        (0..frags.len()).collect()
    }

    /// Opens and inserts every datagram in `order`; returns the reassembled payloads.
    fn feed(
        rx: &SkCrypter,
        r: &mut Reassembler,
        frags: &[Vec<u8>],
        order: &[usize],
    ) -> (Option<Vec<Payload>>, Vec<FragDrop>) {
        let mut out = None;
        let mut drops = Vec::new();
        for &i in order {
            let msg = Message::parse(&frags[i]).unwrap();
            let Some(Payload::Skf(skf)) = msg.payloads.last() else {
                panic!("not a fragment");
            };
            let data = rx.open_fragment(&frags[i], &msg).unwrap();
            match r.insert(false, msg.header.message_id, skf, data) {
                Outcome::Complete(first, plain) => {
                    assert!(out.is_none(), "completed twice");
                    out = Some(parse_payloads(first, &plain).unwrap());
                }
                Outcome::Stored => {}
                Outcome::Dropped(d) => drops.push(d),
            }
        }
        (out, drops)
    }

    #[test]
    fn small_messages_stay_whole_large_ones_are_fragmented() {
        let (mut tx, _) = crypters();
        let one = tx.seal_fragments(header(1), &big_inner(1), 300).unwrap();
        assert_eq!(one.len(), 1);
        let m = Message::parse(&one[0]).unwrap();
        assert!(matches!(m.payloads.last(), Some(Payload::Sk(_))));
        let inner = big_inner(10);
        let frags = tx.seal_fragments(header(1), &inner, 300).unwrap();
        // Ten notifies of 98 bytes, in fragments of 300 - SKF_OVERHEAD bytes each.
        let room = 300 - crate::ike::crypto::SKF_OVERHEAD;
        assert_eq!(frags.len(), 980usize.div_ceil(room));
        for (i, f) in frags.iter().enumerate() {
            assert!(f.len() <= 300);
            let m = Message::parse(f).unwrap();
            assert_eq!(m.header, header(1));
            let Some(Payload::Skf(skf)) = m.payloads.last() else {
                panic!("SKF expected");
            };
            assert_eq!(usize::from(skf.fragment_number), i + 1);
            assert_eq!(usize::from(skf.total_fragments), frags.len());
            let expect = if i == 0 {
                crate::wire::PayloadType::Notify
            } else {
                PayloadType::NoNextPayload
            };
            assert_eq!(skf.first_inner, expect);
        }
        // No room for data at all.
        assert!(tx.seal_fragments(header(1), &inner, 60).is_err());
    }

    #[test]
    fn in_order_out_of_order_and_duplicates() {
        let (mut tx, rx) = crypters();
        let inner = big_inner(10);
        let frags = tx.seal_fragments(header(1), &inner, 300).unwrap();
        let n = frags.len();
        let in_order: Vec<usize> = (0..n).collect();
        let reversed: Vec<usize> = (0..n).rev().collect();
        let mut dups = vec![1, 1, 0];
        dups.extend(0..n);
        for order in [in_order, reversed, dups] {
            let mut r = Reassembler::default();
            let (out, drops) = feed(&rx, &mut r, &frags, &order);
            assert_eq!(out.as_deref(), Some(&inner[..]), "{order:?}");
            assert_eq!(drops.len(), order.len() - n);
            assert!(drops.iter().all(|d| *d == FragDrop::Duplicate));
            assert!(r.is_idle());
        }
        // A late duplicate after completion starts a new (never completed) message.
        let mut r = Reassembler::default();
        let mut order = all(&frags);
        order.push(1);
        let (out, _) = feed(&rx, &mut r, &frags, &order);
        assert!(out.is_some());
        assert!(!r.is_idle());
    }

    #[test]
    fn forged_fragment_is_refused_before_storing() {
        let (mut tx, rx) = crypters();
        let frags = tx.seal_fragments(header(1), &big_inner(10), 300).unwrap();
        let mut forged = frags[1].clone();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        let msg = Message::parse(&forged).unwrap();
        assert_eq!(
            rx.open_fragment(&forged, &msg).err(),
            Some(crate::ike::crypto::CryptoError::Integrity)
        );
        // A fragment sealed under another key does not open either.
        let mut other = SkCrypter::new(Cipher::Aes128Gcm, &[9; 20]).unwrap();
        let foreign = other
            .seal_fragments(header(1), &big_inner(10), 300)
            .unwrap();
        let msg = Message::parse(&foreign[0]).unwrap();
        assert!(rx.open_fragment(&foreign[0], &msg).is_err());
        // The genuine fragments still complete the message.
        let mut r = Reassembler::default();
        assert!(feed(&rx, &mut r, &frags, &all(&frags)).0.is_some());
    }

    #[test]
    fn newer_message_or_more_fragments_replace_older() {
        let (mut tx, rx) = crypters();
        let old = tx.seal_fragments(header(1), &big_inner(10), 300).unwrap();
        let new = tx.seal_fragments(header(2), &big_inner(10), 300).unwrap();
        let mut r = Reassembler::default();
        // Half of message 1, then message 2 in full: 2 completes.
        let (out, _) = feed(&rx, &mut r, &old, &[0, 1]);
        assert!(out.is_none());
        let (out, _) = feed(&rx, &mut r, &new, &all(&new));
        assert!(out.is_some());
        // Now message 1's remaining fragments are stale once message 2 is under way.
        let (_, _) = feed(&rx, &mut r, &new, &[0]);
        let (out, drops) = feed(&rx, &mut r, &old, &[2, 3]);
        assert!(out.is_none());
        assert_eq!(drops, vec![FragDrop::Stale, FragDrop::Stale]);
        // The same message re-fragmented smaller (more fragments) replaces the first try.
        let mut r = Reassembler::default();
        let big = tx.seal_fragments(header(3), &big_inner(10), 400).unwrap();
        let small = tx.seal_fragments(header(3), &big_inner(10), 250).unwrap();
        assert!(small.len() > big.len());
        let (out, _) = feed(&rx, &mut r, &big, &[0]);
        assert!(out.is_none());
        let (out, drops) = feed(&rx, &mut r, &small, &all(&small));
        assert!(drops.is_empty());
        assert_eq!(out.as_deref(), Some(&big_inner(10)[..]));
        // And fewer fragments than the message under way: stale.
        let (_, _) = feed(&rx, &mut r, &small, &[0]);
        let (_, drops) = feed(&rx, &mut r, &big, &[1]);
        assert_eq!(drops, vec![FragDrop::Stale]);
    }

    #[test]
    fn limits_on_fragments_and_bytes() {
        let (mut tx, rx) = crypters();
        let frags = tx.seal_fragments(header(1), &big_inner(10), 300).unwrap();
        let mut r = Reassembler::new(Limits {
            max_fragments: 3,
            max_bytes: 10_000,
        });
        let (out, drops) = feed(&rx, &mut r, &frags, &all(&frags));
        assert!(out.is_none());
        assert_eq!(drops, vec![FragDrop::TooManyFragments; frags.len()]);
        let mut r = Reassembler::new(Limits {
            max_fragments: 10,
            max_bytes: 500,
        });
        let (out, drops) = feed(&rx, &mut r, &frags, &all(&frags));
        assert!(out.is_none());
        assert_eq!(drops.first(), Some(&FragDrop::TooBig));
        assert!(!drops.is_empty());
    }

    #[test]
    fn requests_and_responses_reassemble_apart() {
        let (mut tx, rx) = crypters();
        let a = tx.seal_fragments(header(5), &big_inner(6), 300).unwrap();
        let b = tx.seal_fragments(header(1), &big_inner(6), 300).unwrap();
        let mut r = Reassembler::default();
        let mut done = 0;
        for (f, resp) in a
            .iter()
            .map(|f| (f, false))
            .zip(b.iter().map(|f| (f, true)))
        {
            for (bytes, response) in [f, resp] {
                let msg = Message::parse(bytes).unwrap();
                let Some(Payload::Skf(skf)) = msg.payloads.last() else {
                    panic!()
                };
                let data = rx.open_fragment(bytes, &msg).unwrap();
                if let Outcome::Complete(..) = r.insert(response, msg.header.message_id, skf, data)
                {
                    done += 1;
                }
            }
        }
        assert_eq!(done, 2);
    }

    #[test]
    fn budget_accounts_for_ip_udp_and_marker() {
        let v4: SocketAddr = "192.0.2.1:4500".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::1]:4500".parse().unwrap();
        assert_eq!(max_message_len(1280, v4), 1280 - 20 - 8 - 4);
        assert_eq!(max_message_len(1280, v6), 1280 - 40 - 8 - 4);
        assert_eq!(max_message_len(10, v6), 0);
    }

    proptest! {
        /// Arbitrary SKF payloads (valid framing, arbitrary data) neither open nor panic,
        /// and arbitrary fragments inserted never panic and never complete without all
        /// numbers present.
        #[test]
        fn random_fragments_never_panic(
            frags in prop::collection::vec(
                (0u32..4, 1u16..8, 1u16..8, any::<bool>(),
                 prop::collection::vec(any::<u8>(), 0..120)),
                0..40),
        ) {
            let (_, rx) = crypters();
            let mut r = Reassembler::new(Limits { max_fragments: 6, max_bytes: 1000 });
            for (id, a, b, response, data) in frags {
                let (number, total) = (a.min(b), a.max(b));
                let skf = SkfPayload {
                    first_inner: PayloadType::Notify,
                    fragment_number: number,
                    total_fragments: total,
                    data: data.clone(),
                };
                let msg = Message {
                    header: header(id),
                    payloads: vec![Payload::Skf(skf.clone())],
                };
                let bytes = msg.to_bytes();
                let parsed = Message::parse(&bytes).unwrap();
                prop_assert!(rx.open_fragment(&bytes, &parsed).is_err());
                if let Outcome::Complete(first, plain) =
                    r.insert(response, id, &skf, Zeroizing::new(data))
                {
                    let _ = parse_payloads(first, &plain);
                }
            }
        }
    }
}
