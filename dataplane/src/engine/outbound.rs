//! The outbound path: TUN -> seal -> UDP.
//!
//! A packet read from the TUN (with offloads, a TCP super-packet of up to 64 KiB) is cut into
//! segments written straight into a *train* buffer at a fixed stride, each at the offset where
//! its ESP payload belongs; the train takes its sequence numbers with one atomic operation,
//! every segment is sealed in place, and the scheduler's runs leave with one UDP GSO send
//! each. Transport mode seals one segment at a time behind its own IP header.

use std::io;

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

/// ESP bytes for an inner packet of `len` bytes in tunnel mode.
#[inline]
fn esp_len(len: usize) -> usize {
    OutboundSa::HEADROOM + (len + 2).div_ceil(4) * 4 + crate::aead::TAG_LEN
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
    single: Vec<u8>,
}

impl OutState {
    pub(super) fn new() -> Self {
        OutState {
            read: vec![0; VIRTIO_NET_HDR_LEN + 65_535],
            train: vec![0; TRAIN_CAP],
            datagrams: Vec::with_capacity(1024),
            runs: Vec::with_capacity(64),
            scratch: SendScratch::new(64),
            single: vec![0; 65_535 + 256],
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
        single,
    } = out;
    let Some((src, dst)) = ip::addrs(&read[pkt.clone()]) else {
        GlobalCounters::bump(&c.malformed);
        return;
    };
    let Some(entry) = table.outbound_for(src, dst) else {
        GlobalCounters::bump(&c.no_sa);
        return;
    };
    let Ok(split) = GsoSplit::new(hdr, &read[pkt]) else {
        GlobalCounters::bump(&c.malformed);
        return;
    };
    let n = split.segments();
    scheduler::assign(entry, dst, n, runs);
    if runs.is_empty() {
        GlobalCounters::bump(&c.no_path);
        return;
    }
    if entry.sa.mode() == Mode::Transport {
        send_transport(shared, entry, runs, single, &split);
        return;
    }
    let stride = esp_len(split.max_segment_len());
    if n * stride + OutboundSa::TAILROOM > train.len() {
        GlobalCounters::bump(&c.malformed);
        return;
    }
    let Ok(seq0) = entry.sa.reserve_seq(n as u64) else {
        return;
    };
    datagrams.clear();
    for i in 0..n {
        let at = i * stride + OutboundSa::HEADROOM;
        let sealed = split
            .write_segment(i, &mut train[at..])
            .ok()
            .and_then(|len| {
                entry
                    .sa
                    .seal_with_seq(seq0 + i as u64, train, at..at + len)
                    .ok()
            });
        match sealed {
            Some(s) => datagrams.push((s.range.start, s.range.len())),
            None => datagrams.push((0, 0)),
        }
    }
    for run in runs.iter() {
        send_run(
            shared,
            entry,
            train,
            &datagrams[run.start..run.start + run.len],
            scratch,
            run,
            stride,
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

/// Transport mode: each segment is sealed with its IP header kept in front; only the ESP part
/// goes into the UDP datagram (RFC 3948), one datagram at a time.
fn send_transport(
    shared: &Shared,
    entry: &OutboundEntry,
    runs: &[Run],
    single: &mut [u8],
    split: &GsoSplit<'_>,
) {
    for i in 0..split.segments() {
        let at = OutboundSa::HEADROOM + 64;
        let Ok(len) = split.write_segment(i, &mut single[at..]) else {
            continue;
        };
        let Ok(sealed) = entry.sa.seal(single, at..at + len) else {
            continue;
        };
        let esp = &single[sealed.esp_start..sealed.range.end];
        for run in runs
            .iter()
            .filter(|r| (r.start..r.start + r.len).contains(&i))
        {
            let path = &entry.paths[run.path];
            if let Some(sock) = &path.socket {
                if sock.send_to(esp, path.state.remote).is_ok() {
                    path.state.count_tx(1, esp.len() as u64);
                } else {
                    GlobalCounters::bump(&shared.counters.send_errors);
                }
            }
        }
    }
}
