//! Sealing and opening ESP packets in place.
//!
//! The caller reads a packet into a buffer at an offset that leaves [`OutboundSa::HEADROOM`]
//! bytes in front and [`OutboundSa::TAILROOM`] bytes behind; sealing writes the ESP header
//! into the headroom, the padding, trailer and ICV into the tailroom, and encrypts the payload
//! where it lies. Opening decrypts where the packet lies and returns the range of the inner
//! packet. Nothing allocates per packet.
//!
//! Tunnel mode protects a whole inner IP packet (next header 4 or 41). Transport mode takes
//! an IP packet, keeps its header in front of ESP (protocol 50) and protects the rest; opening
//! puts the header back in front of the payload with the inner protocol.
//!
//! Order on the receive path follows RFC 4303 section 3.4.3: a cheap replay check, then the
//! ICV, then the replay mark, then the trailer.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::wire::{
    EspHeader, EspPacket, NEXT_HEADER_IPV4, NEXT_HEADER_IPV6, NEXT_HEADER_NONE, OVERHEAD_FRONT,
};
use crate::aead::{AeadKey, Backend, Cipher, CryptoError, TAG_LEN};
use crate::counters::{DropReason, SaCounters};
use crate::event::{Event, EventSender};
use crate::net::ip::{
    self, IPPROTO_ESP, IPPROTO_FRAGMENT, IPPROTO_HOPOPTS, IPPROTO_NONE, IPPROTO_ROUTING, IpHeader,
};
use crate::replay::{ReplayError, ReplayWindow};
use crate::seq::{Renewal, SeqCounter, SeqError, SeqNotice};

/// ESP mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The whole inner IP packet is protected.
    #[default]
    Tunnel,
    /// The IP header stays in clear in front of ESP; its payload is protected.
    Transport,
}

impl Mode {
    /// `tunnel` or `transport`, as the configuration and `status` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Tunnel => "tunnel",
            Mode::Transport => "transport",
        }
    }
}

/// Everything needed to build one direction of an SA.
#[derive(Clone)]
pub struct SaConfig<'k> {
    /// The SPI (chosen by the receiver of this direction).
    pub spi: u32,
    /// The AEAD.
    pub cipher: Cipher,
    /// The AEAD implementation.
    pub backend: Backend,
    /// `key || salt`.
    pub keymat: &'k [u8],
    /// Extended (64-bit) sequence numbers.
    pub esn: bool,
    /// Tunnel or transport.
    pub mode: Mode,
    /// Replay window size in packets (inbound only): a power of two, 64 to 2^20.
    pub replay_window: u64,
}

impl std::fmt::Debug for SaConfig<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaConfig")
            .field("spi", &format_args!("{:08x}", self.spi))
            .field("cipher", &self.cipher)
            .field("backend", &self.backend)
            .field("esn", &self.esn)
            .field("mode", &self.mode)
            .field("replay_window", &self.replay_window)
            .finish_non_exhaustive()
    }
}

/// Why an SA could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaError {
    /// The key material does not fit the cipher.
    Key(CryptoError),
    /// The SPI is reserved (0 to 255, RFC 4303 section 2.1).
    ReservedSpi(u32),
    /// The replay window size is not a power of two in range.
    ReplayWindow(u64),
}

impl std::fmt::Display for SaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SaError::Key(e) => write!(f, "bad key: {e}"),
            SaError::ReservedSpi(s) => write!(f, "SPI {s} is reserved (0-255)"),
            SaError::ReplayWindow(w) => {
                write!(
                    f,
                    "replay window {w} is not a power of two between 64 and 2^20"
                )
            }
        }
    }
}

impl std::error::Error for SaError {}

/// Why a packet could not be sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealError {
    /// Fewer than [`OutboundSa::HEADROOM`] bytes in front of the packet.
    NoHeadroom,
    /// Not enough room behind the packet for padding, trailer and ICV.
    NoTailroom,
    /// The packet is not an IP packet this mode can protect.
    BadIpPacket,
    /// The sequence space is used up; the SA needs a rekey.
    SeqExhausted,
    /// The next numbers are above the mark stored on disk (manual SAs): not usable yet.
    SeqUnreserved,
    /// The AEAD refused.
    Crypto(CryptoError),
}

impl std::fmt::Display for SealError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SealError::NoHeadroom => f.write_str("no headroom for the ESP header"),
            SealError::NoTailroom => f.write_str("no tailroom for the ESP trailer and ICV"),
            SealError::BadIpPacket => f.write_str("not an IP packet this SA can protect"),
            SealError::SeqExhausted => SeqError::Exhausted.fmt(f),
            SealError::SeqUnreserved => SeqError::Unreserved.fmt(f),
            SealError::Crypto(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SealError {}

/// A sealed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Where the protected packet lies in the buffer: the ESP packet in tunnel mode, the
    /// rewritten IP header followed by ESP in transport mode.
    pub range: Range<usize>,
    /// Where ESP starts within the buffer (what goes into a UDP datagram).
    pub esp_start: usize,
    /// The sequence number used.
    pub seq: u64,
}

/// How a checked packet is to be sealed.
#[derive(Debug, Clone, Copy)]
enum Plan {
    /// Protect the whole packet with this next header.
    Tunnel(u8),
    /// Keep this header in front of ESP.
    Transport(IpHeader),
}

/// Whether transport mode can insert ESP right after this header. IPv6 extension headers
/// that must stay in front of ESP (RFC 4303 section 3.1.1) are not walked: such packets are
/// refused rather than misprotected. Protocol 59 is refused too: as ESP's next header it
/// marks a dummy packet, which the peer discards.
#[inline]
fn transport_ok(hdr: &IpHeader) -> bool {
    hdr.protocol != IPPROTO_NONE
        && !(hdr.is_ipv6()
            && matches!(
                hdr.protocol,
                IPPROTO_HOPOPTS | IPPROTO_ROUTING | IPPROTO_FRAGMENT
            ))
}

/// The outbound half of an SA.
#[derive(Debug)]
pub struct OutboundSa {
    spi: u32,
    esn: bool,
    mode: Mode,
    key: AeadKey,
    /// [`pad_align`] minus one: a mask, so that rounding up costs no division per packet.
    align_mask: usize,
    seq: SeqCounter,
    counters: SaCounters,
    events: Option<EventSender>,
    /// `SeqExhausted` was raised already (it is raised once, not for every refused packet).
    exhausted_reported: AtomicBool,
}

/// What the encrypted part of an outbound packet is padded to a multiple of (RFC 4303 section
/// 2.4 allows any padding up to 255 bytes beyond the required four-byte alignment).
///
/// AES-GCM: whole 16-byte blocks. ring seals whole blocks in one pass and a partial last block
/// on its own (one more AES call and GHASH update, with copies in and out); in criterion at 64
/// and 512 bytes (ring, thread CPU time) 68 or 516 bytes cost about 40 ns more than 64 or 512,
/// while 80 or 528 bytes, whole blocks, cost a few ns more. The price is up to 12 bytes more on
/// the wire than four-byte padding (68 -> 80 bytes at 64, 1404 -> 1408 at 1400).
///
/// ChaCha20-Poly1305: four bytes. ChaCha20 works in 64-byte blocks and Poly1305 pads to 16
/// on its own, so whole 16-byte blocks would only add wire bytes (measured: no gain).
/// Always a power of two, at most 16.
#[inline]
pub fn pad_align(cipher: Cipher) -> usize {
    match cipher {
        Cipher::Aes128Gcm | Cipher::Aes256Gcm => 16,
        Cipher::ChaCha20Poly1305 => 4,
    }
}

/// The 1, 2, 3, ... pad bytes of RFC 4303 section 2.4, written whole behind every payload
/// (a fixed-size copy, no call); pad length, next header and ICV then overwrite what is not
/// padding.
const PAD_BYTES: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];

fn check_spi(spi: u32) -> Result<(), SaError> {
    if spi < 256 {
        Err(SaError::ReservedSpi(spi))
    } else {
        Ok(())
    }
}

impl OutboundSa {
    /// Bytes needed in front of the packet.
    pub const HEADROOM: usize = OVERHEAD_FRONT;
    /// Bytes needed behind the packet: up to 15 pad bytes (see [`pad_align`]), pad length,
    /// next header, ICV.
    pub const TAILROOM: usize = 15 + 2 + TAG_LEN;

    /// Builds the SA. `events` receives rekey requests when the sequence space runs low.
    pub fn new(cfg: &SaConfig<'_>, events: Option<EventSender>) -> Result<Self, SaError> {
        Self::with_seq(cfg, events, SeqCounter::new(cfg.esn))
    }

    /// As [`OutboundSa::new`], with the last usable sequence number lowered to `limit` if
    /// that is below the natural one (2^32-1, with ESN 2^64-1); the soft limit, where
    /// [`Event::SeqSoftLimit`] is raised, sits at 7/8 of it. For tests of what happens when
    /// an SA runs out.
    pub fn with_seq_limit(
        cfg: &SaConfig<'_>,
        events: Option<EventSender>,
        limit: u64,
    ) -> Result<Self, SaError> {
        let natural = if cfg.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        };
        let limit = limit.clamp(1, natural);
        Self::with_seq(
            cfg,
            events,
            SeqCounter::with_limits(limit, limit - limit / 8),
        )
    }

    fn with_seq(
        cfg: &SaConfig<'_>,
        events: Option<EventSender>,
        seq: SeqCounter,
    ) -> Result<Self, SaError> {
        check_spi(cfg.spi)?;
        Ok(OutboundSa {
            spi: cfg.spi,
            esn: cfg.esn,
            mode: cfg.mode,
            key: AeadKey::new(cfg.cipher, cfg.backend, cfg.keymat).map_err(SaError::Key)?,
            align_mask: pad_align(cfg.cipher) - 1,
            seq,
            counters: SaCounters::default(),
            events,
            exhausted_reported: AtomicBool::new(false),
        })
    }

    /// The SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether extended sequence numbers are on.
    pub fn esn(&self) -> bool {
        self.esn
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.key.cipher()
    }

    /// Bytes the AEAD encrypts for a payload of `len` bytes: payload, padding (to
    /// [`pad_align`]), pad length and next header.
    #[inline]
    pub fn encrypted_len(&self, len: usize) -> usize {
        (len + 2 + self.align_mask) & !self.align_mask
    }

    /// Bytes of the ESP packet for a payload of `len` bytes (tunnel mode: the whole inner
    /// packet): header, IV, [`OutboundSa::encrypted_len`], ICV.
    #[inline]
    pub fn esp_len(&self, len: usize) -> usize {
        OVERHEAD_FRONT + self.encrypted_len(len) + TAG_LEN
    }

    /// The sequence counter (read it for status; tests move it near its end).
    pub fn seq(&self) -> &SeqCounter {
        &self.seq
    }

    /// Packets and bytes sealed.
    pub fn counters(&self) -> &SaCounters {
        &self.counters
    }

    /// Takes `n` sequence numbers for a batch, raising the rekey events as needed.
    #[inline]
    pub fn reserve_seq(&self, n: u64) -> Result<u64, SealError> {
        match self.seq.reserve(n) {
            Ok((first, SeqNotice::None)) => Ok(first),
            Ok((first, SeqNotice::SoftLimit)) => {
                self.raise(Event::SeqSoftLimit { spi: self.spi });
                Ok(first)
            }
            Err(SeqError::Exhausted) => {
                if !self.exhausted_reported.swap(true, Ordering::Relaxed) {
                    self.raise(Event::SeqExhausted { spi: self.spi });
                }
                Err(SealError::SeqExhausted)
            }
            Err(SeqError::Unreserved) => Err(SealError::SeqUnreserved),
        }
    }

    fn raise(&self, event: Event) {
        if let Some(tx) = &self.events {
            tx.send(event);
        }
    }

    /// Seals the IP packet at `buf[packet]` with the next sequence number. A packet that is
    /// refused spends no sequence number.
    #[inline]
    pub fn seal(&self, buf: &mut [u8], packet: Range<usize>) -> Result<Sealed, SealError> {
        let plan = self.plan(buf, &packet)?;
        let seq = self.reserve_seq(1)?;
        self.seal_planned(seq, buf, packet, plan)
    }

    /// Seals with a sequence number taken by [`OutboundSa::reserve_seq`]. A number must never
    /// be used twice; this is the caller's promise.
    pub fn seal_with_seq(
        &self,
        seq: u64,
        buf: &mut [u8],
        packet: Range<usize>,
    ) -> Result<Sealed, SealError> {
        let plan = self.plan(buf, &packet)?;
        self.seal_planned(seq, buf, packet, plan)
    }

    /// Checks room and the inner packet, and decides how to seal it.
    #[inline]
    fn plan(&self, buf: &[u8], packet: &Range<usize>) -> Result<Plan, SealError> {
        if packet.start < Self::HEADROOM || packet.start > packet.end {
            return Err(SealError::NoHeadroom);
        }
        if packet.end.saturating_add(Self::TAILROOM) > buf.len() {
            return Err(SealError::NoTailroom);
        }
        let inner = &buf[packet.clone()];
        match self.mode {
            Mode::Tunnel => match ip::version(inner) {
                Some(4) => Ok(Plan::Tunnel(NEXT_HEADER_IPV4)),
                Some(6) => Ok(Plan::Tunnel(NEXT_HEADER_IPV6)),
                _ => Err(SealError::BadIpPacket),
            },
            Mode::Transport => IpHeader::parse(inner)
                .ok()
                .filter(transport_ok)
                .map(Plan::Transport)
                .ok_or(SealError::BadIpPacket),
        }
    }

    #[inline]
    fn seal_planned(
        &self,
        seq: u64,
        buf: &mut [u8],
        packet: Range<usize>,
        plan: Plan,
    ) -> Result<Sealed, SealError> {
        match plan {
            Plan::Tunnel(next_header) => {
                let range = self.seal_payload(seq, buf, packet, next_header)?;
                Ok(Sealed {
                    esp_start: range.start,
                    range,
                    seq,
                })
            }
            Plan::Transport(hdr) => {
                // Move the IP header back to open a gap for the ESP header behind it.
                let ip_start = packet.start - Self::HEADROOM;
                buf.copy_within(packet.start..packet.start + hdr.header_len, ip_start);
                let payload = packet.start + hdr.header_len..packet.end;
                let esp = self.seal_payload(seq, buf, payload, hdr.protocol)?;
                hdr.rewrite(&mut buf[ip_start..esp.end], IPPROTO_ESP)
                    .ok_or(SealError::BadIpPacket)?;
                Ok(Sealed {
                    range: ip_start..esp.end,
                    esp_start: esp.start,
                    seq,
                })
            }
        }
    }

    /// Seals the payload at `buf[payload]` with the given next header (59 makes a dummy
    /// packet). Room is already checked. Returns the ESP packet's range.
    #[inline]
    fn seal_payload(
        &self,
        seq: u64,
        buf: &mut [u8],
        payload: Range<usize>,
        next_header: u8,
    ) -> Result<Range<usize>, SealError> {
        let len = payload.len();
        let enc_end = payload.start + self.encrypted_len(len);
        let pad = enc_end - 2 - payload.end;
        let end = enc_end + TAG_LEN;
        let start = payload.start - OVERHEAD_FRONT;
        // 16 bytes from the payload's end lie within the packet (at least pad length, next
        // header and the 16-byte ICV follow the payload), and within the buffer: TAILROOM.
        buf[payload.end..payload.end + PAD_BYTES.len()].copy_from_slice(&PAD_BYTES);
        buf[enc_end - 2] = pad as u8;
        buf[enc_end - 1] = next_header;
        let header = EspHeader { spi: self.spi, seq };
        header
            .emit(&mut buf[start..])
            .ok_or(SealError::NoHeadroom)?;
        let (aad, aad_len) = header.aad(self.esn);
        let iv = seq.to_be_bytes();
        let tag = self
            .key
            .seal(&iv, &aad[..aad_len], &mut buf[payload.start..enc_end])
            .map_err(SealError::Crypto)?;
        buf[enc_end..end].copy_from_slice(&tag);
        self.counters.count_packet(len);
        Ok(start..end)
    }

    /// Seals a dummy packet (next header 59) carrying `buf[payload]` as filler.
    pub fn seal_dummy(&self, buf: &mut [u8], payload: Range<usize>) -> Result<Sealed, SealError> {
        if payload.start < Self::HEADROOM || payload.start > payload.end {
            return Err(SealError::NoHeadroom);
        }
        if payload.end.saturating_add(Self::TAILROOM) > buf.len() {
            return Err(SealError::NoTailroom);
        }
        let seq = self.reserve_seq(1)?;
        let range = self.seal_payload(seq, buf, payload, NEXT_HEADER_NONE)?;
        Ok(Sealed {
            esp_start: range.start,
            range,
            seq,
        })
    }
}

/// An opened packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// An inner packet: the IP packet at `buf[range]` (tunnel), or the reassembled IP packet
    /// with its original protocol (transport).
    Packet {
        /// Where the packet lies in the buffer.
        range: Range<usize>,
        /// The ESP next header (4 or 41 in tunnel mode, the transport protocol otherwise).
        next_header: u8,
        /// The full sequence number.
        seq: u64,
    },
    /// A dummy packet (next header 59): authentic, counted, and to be discarded by anything
    /// but mifsec's path probes, which travel in dummy packets.
    Dummy {
        /// Where the dummy payload lies in the buffer.
        range: Range<usize>,
        /// The full sequence number.
        seq: u64,
    },
}

/// The inbound half of an SA.
#[derive(Debug)]
pub struct InboundSa {
    spi: u32,
    esn: bool,
    mode: Mode,
    key: AeadKey,
    replay: ReplayWindow,
    counters: SaCounters,
    /// Highest number that may be accepted now (`u64::MAX`: no limit); see [`crate::marks`].
    ceiling: AtomicU64,
    /// Highest authentic number refused because of the ceiling: tells the mark keeper how
    /// far to raise it (a peer that restarted jumps ahead).
    wanted: AtomicU64,
    /// Where the keeper wants to raise the ceiling.
    renewal: Renewal,
}

impl InboundSa {
    /// Builds the SA.
    pub fn new(cfg: &SaConfig<'_>) -> Result<Self, SaError> {
        check_spi(cfg.spi)?;
        Ok(InboundSa {
            spi: cfg.spi,
            esn: cfg.esn,
            mode: cfg.mode,
            key: AeadKey::new(cfg.cipher, cfg.backend, cfg.keymat).map_err(SaError::Key)?,
            replay: ReplayWindow::new(cfg.replay_window)
                .map_err(|_| SaError::ReplayWindow(cfg.replay_window))?,
            counters: SaCounters::default(),
            ceiling: AtomicU64::new(u64::MAX),
            wanted: AtomicU64::new(0),
            renewal: Renewal::default(),
        })
    }

    /// Refuses every sequence number up to `floor` from now on (before the SA is shared):
    /// how a manual SA resumes after a restart without accepting a packet again.
    pub fn resume_above(&mut self, floor: u64) {
        self.replay.resume_above(floor);
    }

    /// Accepts numbers only up to `ceiling` (inclusive) from now on. Call it once `ceiling`
    /// is stored durably.
    pub fn set_ceiling(&self, ceiling: u64) {
        self.ceiling.store(ceiling, Ordering::Relaxed);
    }

    /// The ceiling in force (`u64::MAX` when there is none).
    pub fn ceiling(&self) -> u64 {
        self.ceiling.load(Ordering::Relaxed)
    }

    /// Where the ceiling's keeper wants to hear from the packet path.
    pub fn renewal(&self) -> &Renewal {
        &self.renewal
    }

    /// The highest authentic sequence number refused because of the ceiling (0 if none).
    pub fn wanted(&self) -> u64 {
        self.wanted.load(Ordering::Relaxed)
    }

    /// The SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The cipher.
    pub fn cipher(&self) -> Cipher {
        self.key.cipher()
    }

    /// The replay window.
    pub fn replay(&self) -> &ReplayWindow {
        &self.replay
    }

    /// Packets accepted and drops by reason.
    pub fn counters(&self) -> &SaCounters {
        &self.counters
    }

    /// Opens the packet at `buf[packet]`: the ESP packet in tunnel mode, the IP packet
    /// carrying ESP in transport mode. Every failure is counted under its reason.
    #[inline]
    pub fn open(&self, buf: &mut [u8], packet: Range<usize>) -> Result<Opened, DropReason> {
        let r = self.open_uncounted(buf, packet);
        match &r {
            Ok(Opened::Packet { range, .. }) => self.counters.count_packet(range.len()),
            Ok(Opened::Dummy { .. }) => self.counters.count_dummy(),
            Err(reason) => self.counters.count_drop(*reason),
        }
        r
    }

    fn open_uncounted(&self, buf: &mut [u8], packet: Range<usize>) -> Result<Opened, DropReason> {
        let pkt = buf.get(packet.clone()).ok_or(DropReason::Truncated)?;
        match self.mode {
            Mode::Tunnel => {
                let (payload, next_header, seq) = self.open_esp(buf, packet)?;
                if next_header == NEXT_HEADER_NONE {
                    return Ok(Opened::Dummy {
                        range: payload,
                        seq,
                    });
                }
                let version_ok = match next_header {
                    NEXT_HEADER_IPV4 => ip::version(&buf[payload.clone()]) == Some(4),
                    NEXT_HEADER_IPV6 => ip::version(&buf[payload.clone()]) == Some(6),
                    _ => return Err(DropReason::BadNextHeader),
                };
                if !version_ok {
                    return Err(DropReason::BadIpPacket);
                }
                Ok(Opened::Packet {
                    range: payload,
                    next_header,
                    seq,
                })
            }
            Mode::Transport => {
                let hdr = IpHeader::parse(pkt).map_err(|_| DropReason::BadIpPacket)?;
                if hdr.protocol != IPPROTO_ESP {
                    return Err(DropReason::BadIpPacket);
                }
                let esp = packet.start + hdr.header_len..packet.end;
                let (payload, next_header, seq) = self.open_esp(buf, esp)?;
                if next_header == NEXT_HEADER_NONE {
                    return Ok(Opened::Dummy {
                        range: payload,
                        seq,
                    });
                }
                // Put the IP header right in front of the decrypted payload.
                let ip_start = payload.start - hdr.header_len;
                buf.copy_within(packet.start..packet.start + hdr.header_len, ip_start);
                hdr.rewrite(&mut buf[ip_start..payload.end], next_header)
                    .ok_or(DropReason::BadIpPacket)?;
                Ok(Opened::Packet {
                    range: ip_start..payload.end,
                    next_header,
                    seq,
                })
            }
        }
    }

    /// Checks, decrypts and strips one ESP packet. Returns the payload range (without
    /// padding and trailer), the next header and the full sequence number.
    #[inline]
    fn open_esp(
        &self,
        buf: &mut [u8],
        esp: Range<usize>,
    ) -> Result<(Range<usize>, u8, u64), DropReason> {
        let mut view =
            EspPacket::new_checked(&mut buf[esp.clone()]).map_err(|_| DropReason::Truncated)?;
        if view.spi() != self.spi {
            return Err(DropReason::UnknownSpi);
        }
        let seq_low = view.seq_low();
        let seq = if self.esn {
            self.replay.infer_esn(seq_low)
        } else {
            u64::from(seq_low)
        };
        self.replay.check(seq).map_err(replay_reason)?;
        let (aad, aad_len) = EspHeader { spi: self.spi, seq }.aad(self.esn);
        let iv = view.iv();
        let tag = view.icv();
        self.key
            .open(&iv, &aad[..aad_len], view.ciphertext_mut(), &tag)
            .map_err(|_| self.integrity_or_too_old(seq_low, seq))?;
        // Authentic, but beyond what a restart would remember: refuse it rather than let it
        // be accepted twice, and say how far the mark must move.
        if seq > self.ceiling.load(Ordering::Relaxed) {
            self.wanted.fetch_max(seq, Ordering::Relaxed);
            self.renewal.wake();
            return Err(DropReason::Unreserved);
        }
        self.renewal.reached(seq);
        // Authentic: mark it now, so a packet with a bad trailer cannot be replayed either.
        self.replay.mark(seq).map_err(replay_reason)?;
        let plain = view.ciphertext_mut();
        let n = plain.len();
        let next_header = plain[n - 1];
        let pad = usize::from(plain[n - 2]);
        if pad + 2 > n {
            return Err(DropReason::BadTrailer);
        }
        let pad_bytes = &plain[n - 2 - pad..n - 2];
        if pad_bytes
            .iter()
            .enumerate()
            .any(|(i, &b)| usize::from(b) != i + 1)
        {
            return Err(DropReason::BadPadding);
        }
        let start = esp.start + OVERHEAD_FRONT;
        Ok((start..start + n - 2 - pad, next_header, seq))
    }
}

impl InboundSa {
    /// Why a packet whose ICV failed is dropped. With ESN, a packet far below the window is
    /// taken for one of the next 2^32 subspace (RFC 4303 A2.2), fails the ICV, and would be
    /// counted as forged; a replay of an old packet looks exactly so. When the same low half
    /// in the window's own subspace is too old, count it as too old. Only the count changes:
    /// the packet is dropped either way.
    #[cold]
    fn integrity_or_too_old(&self, seq_low: u32, guessed: u64) -> DropReason {
        let top = self.replay.top();
        let same = (top & !u64::from(u32::MAX)) | u64::from(seq_low);
        if self.esn && guessed > top && same < guessed && self.replay.check(same).is_err() {
            DropReason::TooOld
        } else {
            DropReason::Integrity
        }
    }
}

fn replay_reason(e: ReplayError) -> DropReason {
    match e {
        ReplayError::Replayed => DropReason::Replayed,
        ReplayError::TooOld | ReplayError::Zero => DropReason::TooOld,
    }
}
