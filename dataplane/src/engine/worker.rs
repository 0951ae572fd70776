//! A packet worker: one TUN queue, every outer socket, one mio poll.
//!
//! Outbound, a packet read from the TUN (with offloads, a TCP super-packet of up to 64 KiB)
//! is cut into segments written straight into a *train* buffer at a fixed stride, each at the
//! offset where its ESP payload belongs; the train takes its sequence numbers with one atomic
//! operation, every segment is sealed in place, and the scheduler's runs leave with one UDP
//! GSO send each. Inbound, a receive batch (UDP GRO trains included) is classified, opened in
//! place, checked against the SA's selectors, coalesced (TCP GRO) and written to the TUN.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::{GlobalCounters, Shared};
use crate::counters::DropReason;
use crate::esp::wire::{UdpPayload, classify_udp_payload};
use crate::esp::{Mode, Opened, OutboundSa};
use crate::net::ip::{self, DEFAULT_HOP_LIMIT, IPPROTO_ESP, IpRepr};
use crate::offload::{GsoSplit, TcpCoalescer, VIRTIO_NET_HDR_LEN, VirtioNetHdr};
use crate::path::{Probe, ProbeKind};
use crate::sa_table::{InboundEntry, OutboundEntry, SaTable};
use crate::scheduler::{self, Run};
use crate::tun::TunQueue;
use crate::udp::{OuterSocket, RecvBuf, RecvScratch, SendScratch, Transmit};

const TUN_TOKEN: Token = Token(usize::MAX);
/// TUN reads per wake-up before the sockets get a turn.
const TUN_BUDGET: usize = 32;
/// Receive batches per wake-up before the TUN gets a turn.
const SOCK_BUDGET: usize = 8;
/// Datagrams per receive batch.
const RECV_BATCH: usize = 32;
/// Inner packets gathered before a TUN write flush.
const WRITE_BATCH: usize = 64;
/// Room in front of an inner packet in a TUN write buffer (the virtio header goes there).
const WRITE_OFF: usize = 16;
/// Largest datagram a receive buffer holds (a UDP GRO train is at most 64 KiB).
const RECV_CAP: usize = 65_535;
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

pub(super) fn run(shared: &Shared, tun: TunQueue) {
    crate::debug::panic_point("worker");
    match Worker::new(shared, tun) {
        Ok(mut w) => w.run(),
        Err(e) => tracing::error!("worker failed to start: {e}"),
    }
}

struct Worker<'a> {
    shared: &'a Shared,
    tun: TunQueue,
    vnet: bool,
    poll: Poll,
    sockets: Vec<Option<Arc<OuterSocket>>>,
    pending_socks: Vec<bool>,
    generation: u64,
    out: OutState,
    inb: InState,
}

/// Outbound buffers.
struct OutState {
    read: Vec<u8>,
    train: Vec<u8>,
    /// (start, len) of each sealed datagram in the train.
    datagrams: Vec<(usize, usize)>,
    runs: Vec<Run>,
    scratch: SendScratch,
    single: Vec<u8>,
}

/// Inbound buffers.
struct InState {
    bufs: Vec<RecvBuf>,
    scratch: RecvScratch,
    writes: Vec<Vec<u8>>,
    nwrites: usize,
    coalescer: TcpCoalescer,
    reply: Vec<u8>,
    transport: Vec<u8>,
    reorder_out: Vec<u8>,
}

impl<'a> Worker<'a> {
    fn new(shared: &'a Shared, tun: TunQueue) -> io::Result<Self> {
        let poll = Poll::new()?;
        let fd = tun.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&fd), TUN_TOKEN, Interest::READABLE)?;
        let vnet = tun.vnet_hdr();
        Ok(Worker {
            shared,
            tun,
            vnet,
            poll,
            sockets: Vec::new(),
            pending_socks: Vec::new(),
            generation: 0,
            out: OutState {
                read: vec![0; VIRTIO_NET_HDR_LEN + 65_535],
                train: vec![0; TRAIN_CAP],
                datagrams: Vec::with_capacity(1024),
                runs: Vec::with_capacity(64),
                scratch: SendScratch::new(64),
                single: vec![0; 65_535 + 256],
            },
            inb: InState {
                bufs: (0..RECV_BATCH).map(|_| RecvBuf::new(0, RECV_CAP)).collect(),
                scratch: RecvScratch::new(RECV_BATCH),
                writes: (0..WRITE_BATCH)
                    .map(|_| Vec::with_capacity(WRITE_OFF + 65_535))
                    .collect(),
                nwrites: 0,
                coalescer: TcpCoalescer::with_capacity(WRITE_BATCH),
                reply: vec![0; 256],
                transport: vec![0; 65_535 + 128],
                reorder_out: Vec::with_capacity(65_535 + VIRTIO_NET_HDR_LEN),
            },
        })
    }

    fn run(&mut self) {
        let mut events = Events::with_capacity(64);
        let mut pending_tun = true;
        let mut reordering = false;
        while !self.shared.stop.load(Ordering::Relaxed) {
            let busy = pending_tun || self.pending_socks.iter().any(|&p| p);
            let timeout = if busy {
                Duration::ZERO
            } else if reordering {
                Duration::from_millis(2)
            } else {
                Duration::from_millis(20)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != io::ErrorKind::Interrupted
            {
                tracing::error!("poll: {e}");
                std::thread::sleep(Duration::from_millis(10));
            }
            // The snapshot is loaded after the wait, never before: once a swap has returned
            // to the control side, no packet that arrives later is handled with the old table.
            let table = self.shared.tables.load_full();
            if table.generation != self.generation {
                self.sync_sockets(&table);
                self.generation = table.generation;
            }
            reordering = table.inbound.values().any(|e| e.reorder.is_some());
            for ev in &events {
                if ev.token() == TUN_TOKEN {
                    pending_tun = true;
                } else if let Some(p) = self.pending_socks.get_mut(ev.token().0) {
                    *p = true;
                }
            }
            if pending_tun {
                pending_tun = self.tun_readable(&table);
            }
            for i in 0..self.sockets.len() {
                if self.pending_socks[i] {
                    self.pending_socks[i] = self.sock_readable(&table, i);
                }
            }
            if reordering {
                let now = self.shared.now_ns();
                for e in table.inbound.values() {
                    if let Some(r) = &e.reorder {
                        let (shared, tun, vnet) = (self.shared, &self.tun, self.vnet);
                        let scratch = &mut self.inb.reorder_out;
                        r.expire(now, &mut |p| write_one(shared, tun, vnet, scratch, p));
                    }
                }
            }
        }
    }

    /// Registers the table's sockets that are new to this worker and drops the ones gone.
    fn sync_sockets(&mut self, table: &SaTable) {
        for slot in &mut self.sockets {
            if let Some(s) = slot
                && !table.sockets.iter().any(|(_, t)| Arc::ptr_eq(t, s))
            {
                let fd = s.as_raw_fd();
                let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                *slot = None;
            }
        }
        for (_, t) in &table.sockets {
            if self.sockets.iter().flatten().any(|s| Arc::ptr_eq(s, t)) {
                continue;
            }
            let idx = match self.sockets.iter().position(Option::is_none) {
                Some(i) => i,
                None => {
                    self.sockets.push(None);
                    self.pending_socks.push(false);
                    self.sockets.len() - 1
                }
            };
            let fd = t.as_raw_fd();
            match self
                .poll
                .registry()
                .register(&mut SourceFd(&fd), Token(idx), Interest::READABLE)
            {
                Ok(()) => {
                    self.sockets[idx] = Some(Arc::clone(t));
                    self.pending_socks[idx] = true;
                }
                Err(e) => tracing::error!("registering a socket: {e}"),
            }
        }
    }

    /// Drains up to a budget of TUN reads. Returns whether more may be waiting.
    fn tun_readable(&mut self, table: &SaTable) -> bool {
        for _ in 0..TUN_BUDGET {
            let n = match self.tun.read(&mut self.out.read) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    GlobalCounters::bump(&self.shared.counters.tun_errors);
                    return false;
                }
            };
            let (hdr, off) = if self.vnet {
                match VirtioNetHdr::parse(&self.out.read[..n]) {
                    Ok(h) => (h, VIRTIO_NET_HDR_LEN),
                    Err(_) => {
                        GlobalCounters::bump(&self.shared.counters.malformed);
                        continue;
                    }
                }
            } else {
                (VirtioNetHdr::default(), 0)
            };
            send_packet(self.shared, table, &mut self.out, &hdr, off..n);
        }
        true
    }

    /// Drains up to a budget of receive batches from socket `idx`.
    fn sock_readable(&mut self, table: &SaTable, idx: usize) -> bool {
        let Some(sock) = self.sockets[idx].clone() else {
            return false;
        };
        let mut more = true;
        for _ in 0..SOCK_BUDGET {
            let n = match sock.recv_batch(&mut self.inb.scratch, &mut self.inb.bufs) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    more = false;
                    break;
                }
            };
            let now = self.shared.now_ns();
            for b in 0..n {
                let ranges: arrayvec::ArrayVec<std::ops::Range<usize>, 64> =
                    self.inb.bufs[b].datagrams().take(64).collect();
                for r in ranges {
                    receive(
                        self.shared,
                        table,
                        &sock,
                        &mut self.inb,
                        &self.tun,
                        self.vnet,
                        now,
                        b,
                        r,
                    );
                    if self.inb.nwrites == WRITE_BATCH {
                        flush_tun(self.shared, &self.tun, self.vnet, &mut self.inb);
                    }
                }
            }
            flush_tun(self.shared, &self.tun, self.vnet, &mut self.inb);
        }
        flush_tun(self.shared, &self.tun, self.vnet, &mut self.inb);
        more
    }
}

/// Seals one packet read from the TUN (a super-packet with offloads) and sends it.
fn send_packet(
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

/// Handles one received datagram: buffer `b`, bytes `r`.
#[allow(clippy::too_many_arguments)]
fn receive(
    shared: &Shared,
    table: &SaTable,
    sock: &Arc<OuterSocket>,
    inb: &mut InState,
    tun: &TunQueue,
    vnet: bool,
    now: u64,
    b: usize,
    r: std::ops::Range<usize>,
) {
    let c = &shared.counters;
    let (src, dst_ip) = (inb.bufs[b].src, inb.bufs[b].dst_ip);
    let spi = match classify_udp_payload(&inb.bufs[b].data[r.clone()]) {
        UdpPayload::Esp(e) => u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
        UdpPayload::Keepalive => return GlobalCounters::bump(&c.keepalives_rx),
        UdpPayload::Ike(ike) if ike.len() > super::MAX_IKE_MESSAGE => {
            return GlobalCounters::bump(&c.ike_oversize);
        }
        UdpPayload::Ike(ike) => {
            let msg = super::IkeDatagram {
                interface: table
                    .sockets
                    .iter()
                    .find(|(_, s)| Arc::ptr_eq(s, sock))
                    .map_or_else(String::new, |(n, _)| n.clone()),
                local: SocketAddr::new(
                    dst_ip.unwrap_or_else(|| local_ip(sock)),
                    sock.local_addr().port(),
                ),
                remote: src,
                bytes: ike.to_vec(),
            };
            if shared.ike_tx.try_send(msg).is_err() {
                GlobalCounters::bump(&c.ike_unclaimed);
            }
            return;
        }
        UdpPayload::Malformed => return GlobalCounters::bump(&c.malformed),
    };
    let Some(entry) = table.inbound(spi) else {
        return GlobalCounters::bump(&c.unknown_spi);
    };
    let wire_len = r.len() as u64;
    let opened = if entry.sa.mode() == Mode::Transport {
        open_transport(
            entry,
            inb,
            b,
            r,
            src,
            dst_ip.unwrap_or_else(|| local_ip(sock)),
        )
    } else {
        entry
            .sa
            .open(&mut inb.bufs[b].data, r)
            .ok()
            .map(|o| (o, false))
    };
    let Some((opened, in_transport_buf)) = opened else {
        return;
    };
    let path = entry.path_of(sock, src);
    if let Some(p) = path {
        p.state.count_rx(wire_len, now);
    }
    let data = if in_transport_buf {
        &inb.transport
    } else {
        &inb.bufs[b].data
    };
    match opened {
        Opened::Packet { range, seq, .. } => {
            let inner = &data[range];
            let allowed = matches!(ip::addrs(inner), Some((s, d)) if entry.allows(s, d));
            if !allowed {
                entry.sa.counters().count_drop(DropReason::OutsideSelectors);
            }
            if let Some(reorder) = &entry.reorder {
                let pkt = allowed.then_some(inner);
                let scratch = &mut inb.reorder_out;
                reorder.push(seq, pkt, now, &mut |p| {
                    write_one(shared, tun, vnet, scratch, p)
                });
            } else if allowed {
                let w = &mut inb.writes[inb.nwrites];
                w.clear();
                w.resize(WRITE_OFF, 0);
                w.extend_from_slice(inner);
                inb.nwrites += 1;
            }
        }
        Opened::Dummy { range, seq } => {
            let probe = Probe::parse(&data[range]);
            if let Some(reorder) = &entry.reorder {
                let scratch = &mut inb.reorder_out;
                reorder.push(seq, None, now, &mut |p| {
                    write_one(shared, tun, vnet, scratch, p)
                });
            }
            let Some(probe) = probe else { return };
            match probe.kind {
                ProbeKind::Request => answer_probe(shared, entry, sock, src, probe, &mut inb.reply),
                ProbeKind::Reply => {
                    if let Some(p) = entry.paths.iter().find(|p| p.state.id == probe.path_id) {
                        p.state.probe_answered(probe.sent_ns, now);
                    }
                }
            }
        }
    }
}

/// Writes one inner packet to the TUN at once (the reorder buffer's path: order matters more
/// than coalescing there).
fn write_one(shared: &Shared, tun: &TunQueue, vnet: bool, scratch: &mut Vec<u8>, pkt: &[u8]) {
    scratch.clear();
    if vnet {
        scratch.extend_from_slice(&[0u8; VIRTIO_NET_HDR_LEN]);
    }
    scratch.extend_from_slice(pkt);
    if tun.write(scratch).is_err() {
        GlobalCounters::bump(&shared.counters.tun_errors);
    }
}

fn local_ip(sock: &OuterSocket) -> IpAddr {
    sock.local_addr().ip()
}

/// Transport mode: puts an IP header (the datagram's own addresses, RFC 3948 section 3.1.2)
/// in front of the ESP datagram in a scratch buffer and opens it there.
fn open_transport(
    entry: &InboundEntry,
    inb: &mut InState,
    b: usize,
    r: std::ops::Range<usize>,
    src: SocketAddr,
    dst: IpAddr,
) -> Option<(Opened, bool)> {
    let esp = &inb.bufs[b].data[r];
    let buf = &mut inb.transport;
    let hl = IpRepr {
        src: src.ip(),
        dst,
        protocol: IPPROTO_ESP,
        payload_len: esp.len(),
        hop_limit: DEFAULT_HOP_LIMIT,
    }
    .emit(buf)?;
    buf.get_mut(hl..hl + esp.len())?.copy_from_slice(esp);
    entry
        .sa
        .open(buf, 0..hl + esp.len())
        .ok()
        .map(|o| (o, true))
}

/// Echoes a probe request on the path it came on, inside the pair's outbound SA.
fn answer_probe(
    shared: &Shared,
    entry: &InboundEntry,
    sock: &OuterSocket,
    to: SocketAddr,
    probe: Probe,
    buf: &mut [u8],
) {
    let Some(reply_sa) = &entry.reply else { return };
    let start = OutboundSa::HEADROOM;
    let reply = Probe {
        kind: ProbeKind::Reply,
        ..probe
    };
    if reply.emit(&mut buf[start..]).is_none() {
        return;
    }
    if let Ok(sealed) = reply_sa.seal_dummy(buf, start..start + Probe::LEN) {
        if sock.send_to(&buf[sealed.range], to).is_err() {
            GlobalCounters::bump(&shared.counters.send_errors);
        } else {
            GlobalCounters::bump(&shared.counters.probes_answered_for_peer);
        }
    }
}

/// Writes the gathered inner packets to the TUN, coalescing TCP segments when the TUN takes
/// virtio headers.
fn flush_tun(shared: &Shared, tun: &TunQueue, vnet: bool, inb: &mut InState) {
    if inb.nwrites == 0 {
        return;
    }
    let n = inb.nwrites;
    inb.nwrites = 0;
    let write = |buf: &[u8]| {
        if tun.write(buf).is_err() {
            GlobalCounters::bump(&shared.counters.tun_errors);
        }
    };
    if vnet {
        match inb.coalescer.coalesce(&mut inb.writes[..n], WRITE_OFF) {
            Ok(out) => {
                for &i in out {
                    write(&inb.writes[i][WRITE_OFF - VIRTIO_NET_HDR_LEN..]);
                }
            }
            Err(_) => GlobalCounters::bump(&shared.counters.tun_errors),
        }
    } else {
        for w in &inb.writes[..n] {
            write(&w[WRITE_OFF..]);
        }
    }
}
