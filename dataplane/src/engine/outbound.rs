//! The outbound path: TUN -> seal -> UDP.
//!
//! A packet read from the TUN (with offloads, a TCP super-packet of up to 64 KiB) is cut into
//! segments written straight into a *train* buffer at a fixed stride, each at the offset where
//! its ESP payload belongs; the train takes its sequence numbers with one atomic operation,
//! every segment is sealed in place, and the scheduler's runs leave with one UDP GSO send
//! each. Both modes share this path: in transport mode a segment's IP header is written in
//! front of its ESP payload, in the tail of the datagram before it, and sealing moves it
//! further back out of the way (only ESP goes into the datagram, RFC 3948); the segments are
//! therefore sealed from the last to the first, so that no header lands on a sealed datagram.

use std::io;
use std::sync::atomic::Ordering;

use super::{GlobalCounters, Shared};
use crate::esp::{Mode, OutboundSa};
use crate::net::ip;
use crate::offload::{GsoSplit, VIRTIO_NET_HDR_LEN, VirtioNetHdr};
use crate::sa_table::{OutboundEntry, SaTable};
use crate::scheduler::{self, Run};
use crate::sys::udp::{OuterSocket, SendScratch, Transmit};

/// The train: enough for a 64 KiB super-packet cut into small segments.
const TRAIN_CAP: usize = 512 * 1024;
/// At most this many segments per UDP GSO send (the kernel's limit).
const GSO_MAX_SEGMENTS: usize = 64;
/// At most this many bytes per UDP GSO send.
const GSO_MAX_BYTES: usize = 65_000;
/// Transport mode: bytes in front of the first datagram of a train, where the first segment's
/// IP header goes (an IPv4 header with options is at most 60 bytes, IPv6's 40).
const TRANSPORT_HEAD: usize = 64;

/// Where the segments of one super-packet go in the train: sealed datagram `i` starts at
/// `base + i * stride`; a segment keeps `kept` bytes of IP header out of its ESP payload
/// (transport mode) or none (tunnel mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TrainLayout {
    base: usize,
    stride: usize,
    kept: usize,
}

impl TrainLayout {
    /// The layout for `split` in `mode`; `None` if the packet has no IP header transport mode
    /// could keep, or if the train cannot hold it.
    fn new(sa: &OutboundSa, split: &GsoSplit<'_>, pkt: &[u8], cap: usize) -> Option<Self> {
        let max = split.max_segment_len();
        let layout = match sa.mode() {
            Mode::Tunnel => TrainLayout {
                base: 0,
                stride: sa.esp_len(max),
                kept: 0,
            },
            Mode::Transport => {
                // Every segment repeats the packet's IP header, so its length is the packet's.
                let kept = ip::IpPacket::new_checked(pkt).ok()?.header().header_len;
                TrainLayout {
                    base: TRANSPORT_HEAD.max(kept),
                    stride: sa.esp_len(max.checked_sub(kept)?),
                    kept,
                }
            }
        };
        let need = layout.base + split.segments() * layout.stride + OutboundSa::TAILROOM;
        (need <= cap).then_some(layout)
    }

    /// Where segment `i` is written: its ESP payload starts `HEADROOM` bytes after where its
    /// datagram starts, its kept IP header (if any) right in front of that.
    #[inline]
    fn segment_at(&self, i: usize) -> usize {
        self.base + i * self.stride + OutboundSa::HEADROOM - self.kept
    }
}

/// Outbound buffers, one set per worker.
pub(super) struct OutState {
    /// What the TUN read: virtio header (with offloads) and IP packet.
    pub(super) read: Vec<u8>,
    train: Vec<u8>,
    /// (start, len) of each sealed datagram in the train.
    datagrams: Vec<(usize, usize)>,
    runs: Vec<Run>,
    scratch: SendScratch,
}

impl OutState {
    pub(super) fn new() -> Self {
        OutState {
            read: vec![0; VIRTIO_NET_HDR_LEN + 65_535],
            train: vec![0; TRAIN_CAP],
            datagrams: Vec::with_capacity(1024),
            runs: Vec::with_capacity(64),
            scratch: SendScratch::new(64),
        }
    }
}

/// Seals one packet read from the TUN (a super-packet with offloads) and sends it.
pub(super) fn send_packet(
    shared: &Shared,
    table: &SaTable,
    out: &mut OutState,
    hdr: &VirtioNetHdr,
    pkt: std::ops::Range<usize>,
) {
    let c = &shared.counters;
    let OutState {
        read,
        train,
        datagrams,
        runs,
        scratch,
    } = out;
    let Some((src, dst)) = ip::addrs(&read[pkt.clone()]) else {
        GlobalCounters::bump(&c.malformed);
        return;
    };
    let Some(entry) = table.outbound_for(src, dst) else {
        GlobalCounters::bump(&c.no_sa);
        return;
    };
    let Ok(split) = GsoSplit::new(hdr, &read[pkt.clone()]) else {
        GlobalCounters::bump(&c.malformed);
        return;
    };
    let n = split.segments();
    scheduler::assign(entry, dst, n, runs);
    if runs.is_empty() {
        GlobalCounters::bump(&c.no_path);
        return;
    }
    let Some(layout) = TrainLayout::new(&entry.sa, &split, &read[pkt], train.len()) else {
        GlobalCounters::bump(&c.malformed);
        return;
    };
    let Ok(seq0) = entry.sa.reserve_seq(n as u64) else {
        return;
    };
    let refused = seal_train(&entry.sa, &split, layout, seq0, train, datagrams);
    if refused > 0 {
        c.malformed.fetch_add(refused as u64, Ordering::Relaxed);
    }
    for run in runs.iter() {
        send_run(
            shared,
            entry,
            train,
            &datagrams[run.start..run.start + run.len],
            scratch,
            run,
            layout.stride,
        );
    }
}

/// Sends the datagrams of one run on its path, in GSO trains where the sizes allow.
fn send_run(
    shared: &Shared,
    entry: &OutboundEntry,
    train: &[u8],
    dgs: &[(usize, usize)],
    scratch: &mut SendScratch,
    run: &Run,
    stride: usize,
) {
    let path = &entry.paths[run.path];
    let Some(sock) = &path.socket else { return };
    let gso = sock.offloads().gso;
    let dst = path.state.remote;
    let mut msgs: arrayvec::ArrayVec<Transmit<'_>, 64> = arrayvec::ArrayVec::new();
    let mut bytes = 0u64;
    let mut sent_pkts = 0u64;
    let mut i = 0;
    while i < dgs.len() {
        let (start, len) = dgs[i];
        if len == 0 {
            i += 1;
            continue;
        }
        // A GSO train: consecutive full-stride datagrams, the last may be shorter.
        let mut j = i + 1;
        if gso {
            let max = GSO_MAX_SEGMENTS.min(GSO_MAX_BYTES / stride.max(1)).max(1);
            while j < dgs.len()
                && j - i < max
                && dgs[j - 1].1 == stride
                && dgs[j].1 != 0
                && dgs[j].0 == dgs[j - 1].0 + stride
            {
                j += 1;
            }
        }
        let end = dgs[j - 1].0 + dgs[j - 1].1;
        msgs.push(Transmit {
            dst,
            contents: &train[start..end],
            segment_size: (j - i > 1).then_some(stride),
        });
        bytes += (end - start) as u64;
        sent_pkts += (j - i) as u64;
        if j - i > 1 {
            GlobalCounters::bump(&shared.counters.gso_sends);
            shared
                .counters
                .gso_datagrams
                .fetch_add((j - i) as u64, Ordering::Relaxed);
        }
        i = j;
        if msgs.is_full() {
            flush_msgs(shared, sock, scratch, &mut msgs);
        }
    }
    flush_msgs(shared, sock, scratch, &mut msgs);
    path.state.count_tx(sent_pkts, bytes);
}

fn flush_msgs(
    shared: &Shared,
    sock: &OuterSocket,
    scratch: &mut SendScratch,
    msgs: &mut arrayvec::ArrayVec<Transmit<'_>, 64>,
) {
    let mut done = 0;
    let mut spins = 0;
    while done < msgs.len() {
        match sock.send_batch(scratch, &msgs[done..]) {
            Ok(n) => done += n.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && spins < 64 => {
                // The socket buffer is full: give the kernel a moment rather than drop.
                spins += 1;
                std::thread::yield_now();
            }
            Err(e) if e.raw_os_error() == Some(libc::EIO) && spins < 64 => {
                // GSO refused by the device: the socket has turned it off; send one by one.
                spins += 1;
                let one: Vec<Transmit<'_>> = split_gso(&msgs[done]);
                for t in &one {
                    if sock.send_to(t.contents, t.dst).is_err() {
                        GlobalCounters::bump(&shared.counters.send_errors);
                    }
                }
                done += 1;
            }
            Err(_) => {
                GlobalCounters::bump(&shared.counters.send_errors);
                done += 1;
            }
        }
    }
    msgs.clear();
}

fn split_gso<'b>(t: &Transmit<'b>) -> Vec<Transmit<'b>> {
    match t.segment_size {
        Some(s) if s > 0 => t
            .contents
            .chunks(s)
            .map(|c| Transmit {
                dst: t.dst,
                contents: c,
                segment_size: None,
            })
            .collect(),
        _ => vec![Transmit {
            dst: t.dst,
            contents: t.contents,
            segment_size: None,
        }],
    }
}

/// Writes every segment of `split` into `train` as `layout` says and seals it there with
/// sequence number `seq0 + i`; `datagrams[i]` becomes the (start, len) of sealed datagram `i`
/// (ESP only), or (0, 0) if the SA refused it. Returns how many were refused.
///
/// Transport mode seals from the last segment to the first: a segment's IP header lies in
/// the tail of the datagram before it (and sealing moves it further back), so that datagram
/// must not be sealed yet. Tunnel mode keeps no header and goes forward.
fn seal_train(
    sa: &OutboundSa,
    split: &GsoSplit<'_>,
    layout: TrainLayout,
    seq0: u64,
    train: &mut [u8],
    datagrams: &mut Vec<(usize, usize)>,
) -> usize {
    let n = split.segments();
    datagrams.clear();
    datagrams.resize(n, (0, 0));
    let backwards = layout.kept > 0;
    let mut refused = 0;
    for k in 0..n {
        let i = if backwards { n - 1 - k } else { k };
        let at = layout.segment_at(i);
        let sealed = split
            .write_segment(i, &mut train[at..])
            .ok()
            .and_then(|len| sa.seal_with_seq(seq0 + i as u64, train, at..at + len).ok());
        match sealed {
            Some(s) => datagrams[i] = (s.esp_start, s.range.end - s.esp_start),
            None => refused += 1,
        }
    }
    refused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aead::{Backend, Cipher};
    use crate::esp::{InboundSa, Opened, SaConfig};
    use crate::net::ip::{DEFAULT_HOP_LIMIT, IPPROTO_ESP, IPPROTO_TCP, IpPacket, IpRepr};
    use crate::offload::{
        VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, VIRTIO_NET_HDR_GSO_TCPV6,
    };
    use std::net::IpAddr;

    /// A TCP super-packet from `src` to `dst` with `data` (as the kernel hands a TSO packet to
    /// the TUN) and its virtio header for `mss`-byte segments.
    fn tso(src: &str, dst: &str, data: &[u8], mss: u16) -> (VirtioNetHdr, Vec<u8>) {
        let (src, dst): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        let repr = IpRepr {
            src,
            dst,
            protocol: IPPROTO_TCP,
            payload_len: 20 + data.len(),
            hop_limit: 64,
        };
        let hl = repr.header_len();
        let mut p = vec![0u8; hl + 20];
        repr.emit(&mut p).unwrap();
        p[hl..hl + 2].copy_from_slice(&40000u16.to_be_bytes());
        p[hl + 2..hl + 4].copy_from_slice(&5201u16.to_be_bytes());
        p[hl + 4..hl + 8].copy_from_slice(&1000u32.to_be_bytes());
        p[hl + 12] = 5 << 4;
        p[hl + 13] = 0x18; // ACK, PSH
        p.extend_from_slice(data);
        let hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: if src.is_ipv4() {
                VIRTIO_NET_HDR_GSO_TCPV4
            } else {
                VIRTIO_NET_HDR_GSO_TCPV6
            },
            hdr_len: (hl + 20) as u16,
            gso_size: mss,
            csum_start: hl as u16,
            csum_offset: 16,
        };
        (hdr, p)
    }

    fn sa_pair(mode: Mode) -> (OutboundSa, InboundSa) {
        let keymat: Vec<u8> = (0..20u8).collect();
        let cfg = SaConfig {
            spi: 0x4321,
            cipher: Cipher::Aes128Gcm,
            backend: Backend::Ring,
            keymat: &keymat,
            esn: true,
            mode,
            replay_window: 1024,
        };
        (
            OutboundSa::new(&cfg, None).unwrap(),
            InboundSa::new(&cfg).unwrap(),
        )
    }

    /// A super-packet cut and sealed into one train, in both modes and both families: the
    /// datagrams lie back to back at the layout's stride (every one but the last full, so
    /// one UDP GSO send carries them), carry consecutive sequence numbers, and each opens
    /// (transport: behind a header of the datagram's addresses, as the receiver builds it) to
    /// exactly the segment `GsoSplit` cuts, its L4 part byte for byte. In transport mode this
    /// shows that no segment's IP header, written into the tail of the datagram before it,
    /// overwrote a sealed datagram.
    #[test]
    fn a_super_packet_seals_into_one_train_of_back_to_back_datagrams() {
        let data: Vec<u8> = (0..30_001u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut train = vec![0u8; TRAIN_CAP];
        let mut datagrams = Vec::new();
        for mode in [Mode::Tunnel, Mode::Transport] {
            for (src, dst) in [("198.18.2.2", "198.18.2.1"), ("fd00::2", "fd00::1")] {
                let (out, inb) = sa_pair(mode);
                let (hdr, pkt) = tso(src, dst, &data, 1360);
                let split = GsoSplit::new(&hdr, &pkt).unwrap();
                let n = split.segments();
                assert_eq!(n, 30_001usize.div_ceil(1360));
                let layout = TrainLayout::new(&out, &split, &pkt, train.len()).unwrap();
                let hl = if src.contains(':') { 40 } else { 20 };
                let want_kept = if mode == Mode::Transport { hl } else { 0 };
                assert_eq!(layout.kept, want_kept, "{mode:?} {src}");
                assert_eq!(
                    layout.stride,
                    out.esp_len(split.max_segment_len() - want_kept),
                    "{mode:?} {src}"
                );
                train.fill(0);
                let seq0 = out.reserve_seq(n as u64).unwrap();
                let refused = seal_train(&out, &split, layout, seq0, &mut train, &mut datagrams);
                assert_eq!(refused, 0);
                assert_eq!(datagrams.len(), n);
                for (i, &(start, len)) in datagrams.iter().enumerate() {
                    assert_eq!(
                        start,
                        layout.base + i * layout.stride,
                        "{mode:?} {src} #{i}"
                    );
                    if i + 1 < n {
                        assert_eq!(len, layout.stride, "{mode:?} {src} #{i}");
                    } else {
                        assert!(len <= layout.stride && len > 0);
                    }
                }
                let mut seg = vec![0u8; 2048];
                for (i, &(start, len)) in datagrams.iter().enumerate() {
                    let esp = train[start..start + len].to_vec();
                    assert_eq!(
                        u32::from_be_bytes(esp[4..8].try_into().unwrap()),
                        (seq0 + i as u64) as u32
                    );
                    let mut buf = vec![0u8; 64 + esp.len()];
                    let at = if mode == Mode::Transport {
                        let repr = IpRepr {
                            src: src.parse().unwrap(),
                            dst: dst.parse().unwrap(),
                            protocol: IPPROTO_ESP,
                            payload_len: esp.len(),
                            hop_limit: DEFAULT_HOP_LIMIT,
                        };
                        repr.emit(&mut buf[64 - hl..]).unwrap();
                        64 - hl
                    } else {
                        64
                    };
                    buf[64..].copy_from_slice(&esp);
                    let opened = inb
                        .open(&mut buf, at..64 + esp.len())
                        .unwrap_or_else(|e| panic!("{mode:?} {src} #{i}: {e:?}"));
                    let Opened::Packet { range, seq, .. } = opened else {
                        panic!("{opened:?}");
                    };
                    assert_eq!(seq, seq0 + i as u64);
                    let want = split.write_segment(i, &mut seg).unwrap();
                    let got = IpPacket::new_exact(&buf[range.clone()]).unwrap();
                    assert_eq!(got.protocol(), IPPROTO_TCP);
                    if mode == Mode::Transport {
                        assert_eq!(got.payload(), &seg[hl..want], "{src} #{i}");
                    } else {
                        assert_eq!(&buf[range], &seg[..want], "{src} #{i}");
                    }
                }
            }
        }
    }

    /// What does not fit the train, or has no IP header to keep, gets no layout (and spends
    /// no sequence number: `send_packet` asks for the layout first).
    #[test]
    fn no_layout_for_what_the_train_cannot_hold() {
        let data = vec![1u8; 20_000];
        let (hdr, pkt) = tso("198.18.2.2", "198.18.2.1", &data, 1000);
        let split = GsoSplit::new(&hdr, &pkt).unwrap();
        for mode in [Mode::Tunnel, Mode::Transport] {
            let (sa, _) = sa_pair(mode);
            let fits = TrainLayout::new(&sa, &split, &pkt, TRAIN_CAP).unwrap();
            let need = fits.base + split.segments() * fits.stride + OutboundSa::TAILROOM;
            assert!(TrainLayout::new(&sa, &split, &pkt, need).is_some());
            assert!(TrainLayout::new(&sa, &split, &pkt, need - 1).is_none());
        }
        let junk = [0x00u8; 60];
        let split = GsoSplit::new(&VirtioNetHdr::default(), &junk).unwrap();
        let (sa, _) = sa_pair(Mode::Transport);
        assert!(TrainLayout::new(&sa, &split, &junk, TRAIN_CAP).is_none());
    }
}
