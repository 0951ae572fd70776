//! The inbound path: UDP -> open -> TUN.
//!
//! A receive batch (UDP GRO trains included) is classified (RFC 3948: keepalive, IKE behind
//! the non-ESP marker, ESP), opened in place, checked against the SA's selectors, coalesced
//! (TCP GRO) and written to the TUN. Transport mode opens where the datagram lies too, behind
//! an IP header built from the datagram's addresses in the bytes in front of it (the receive
//! buffer's headroom, or the tail of the datagram before it in a GRO train, already handled).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{GlobalCounters, Shared};
use crate::counters::DropReason;
use crate::esp::wire::{UdpPayload, classify_udp_payload};
use crate::esp::{Mode, Opened, OutboundSa};
use crate::net::ip::{self, DEFAULT_HOP_LIMIT, IPPROTO_ESP, IpRepr};
use crate::offload::{TcpCoalescer, VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_LEN};
use crate::path::{Probe, ProbeKind};
use crate::sa_table::{InboundEntry, SaTable};
use crate::sys::tun::TunQueue;
use crate::sys::udp::{OuterSocket, RecvBuf, RecvScratch};

/// Datagrams per receive batch.
const RECV_BATCH: usize = 32;
/// Inner packets gathered before a TUN write flush.
pub(super) const WRITE_BATCH: usize = 64;
/// Room in front of an inner packet in a TUN write buffer (the virtio header goes there).
const WRITE_OFF: usize = 16;
/// Largest datagram a receive buffer holds (a UDP GRO train is at most 64 KiB).
const RECV_CAP: usize = 65_535;
/// Room in front of a received datagram: transport mode writes an IP header there.
const RECV_HEAD: usize = ip::IPV6_HEADER_LEN;

/// Inbound buffers, one set per worker.
pub(super) struct InState {
    pub(super) bufs: Vec<RecvBuf>,
    pub(super) scratch: RecvScratch,
    writes: Vec<Vec<u8>>,
    pub(super) nwrites: usize,
    coalescer: TcpCoalescer,
    reply: Vec<u8>,
    pub(super) reorder_out: Vec<u8>,
}

impl InState {
    pub(super) fn new() -> Self {
        InState {
            bufs: (0..RECV_BATCH)
                .map(|_| RecvBuf::new(RECV_HEAD, RECV_CAP))
                .collect(),
            scratch: RecvScratch::new(RECV_BATCH),
            writes: (0..WRITE_BATCH)
                .map(|_| Vec::with_capacity(WRITE_OFF + 65_535))
                .collect(),
            nwrites: 0,
            // Every packet written was opened: the AEAD tag vouches for its checksums.
            coalescer: TcpCoalescer::trusting(WRITE_BATCH),
            reply: vec![0; 256],
            reorder_out: Vec::with_capacity(65_535 + VIRTIO_NET_HDR_LEN),
        }
    }
}

/// Handles one received datagram: buffer `b`, bytes `r`.
#[allow(clippy::too_many_arguments)]
pub(super) fn receive(
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
    let data = &mut inb.bufs[b].data;
    let opened = if entry.sa.mode() == Mode::Transport {
        let local = dst_ip.unwrap_or_else(|| local_ip(sock));
        open_transport(entry, data, r, src, local)
    } else {
        entry.sa.open(data, r).ok()
    };
    let Some(opened) = opened else {
        return;
    };
    let path = entry.path_of(sock, src);
    if let Some(p) = path {
        p.state.count_rx(wire_len, now);
    }
    let data = &inb.bufs[b].data;
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
            } else if allowed && vnet {
                // One copy: merged into its flow's super-packet, or into a write buffer.
                if inb
                    .coalescer
                    .push(&mut inb.writes, WRITE_OFF, inner)
                    .is_err()
                {
                    GlobalCounters::bump(&c.tun_errors);
                }
                inb.nwrites = inb.coalescer.used();
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
                        // Return routability: the answer came back on the path itself (its
                        // socket, from its remote address), inside the SA.
                        if p.state.remote == src
                            && p.socket.as_ref().is_some_and(|s| Arc::ptr_eq(s, sock))
                        {
                            p.state.verify();
                        }
                    }
                }
            }
        }
    }
}

/// Writes one inner packet to the TUN at once (the reorder buffer's path: order matters more
/// than coalescing there).
pub(super) fn write_one(
    shared: &Shared,
    tun: &TunQueue,
    vnet: bool,
    scratch: &mut Vec<u8>,
    pkt: &[u8],
) {
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
/// in the bytes in front of the ESP datagram at `buf[esp]` and opens the packet there, in
/// place. Those bytes are the receive buffer's headroom or the tail of a datagram already
/// handled. `None` (nothing opened) without room for the header, or for addresses of two
/// families (what the ESP layer refuses is counted by the SA).
fn open_transport(
    entry: &InboundEntry,
    buf: &mut [u8],
    esp: std::ops::Range<usize>,
    src: SocketAddr,
    dst: IpAddr,
) -> Option<Opened> {
    let repr = IpRepr {
        src: src.ip(),
        dst,
        protocol: IPPROTO_ESP,
        payload_len: esp.len(),
        hop_limit: DEFAULT_HOP_LIMIT,
    };
    let start = esp.start.checked_sub(repr.header_len())?;
    repr.emit(buf.get_mut(start..esp.start)?)?;
    entry.sa.open(buf, start..esp.end).ok()
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
pub(super) fn flush_tun(shared: &Shared, tun: &TunQueue, vnet: bool, inb: &mut InState) {
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
        let mut supers = 0;
        for &i in inb.coalescer.finish(&mut inb.writes, WRITE_OFF) {
            let w = &inb.writes[i][WRITE_OFF - VIRTIO_NET_HDR_LEN..];
            // The virtio header's second byte is its GSO type: a merged super-packet.
            supers += u64::from(w[1] != VIRTIO_NET_HDR_GSO_NONE);
            write(w);
        }
        if supers > 0 {
            shared
                .counters
                .tun_super_writes
                .fetch_add(supers, Ordering::Relaxed);
        }
    } else {
        for w in &inb.writes[..n] {
            write(&w[WRITE_OFF..]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aead::{Backend, Cipher};
    use crate::esp::{InboundSa, SaConfig};
    use crate::net::ip::{IPPROTO_UDP, IpPacket};

    /// The transport-mode receive path: the ESP datagram gets an IP header of the datagram's
    /// own addresses (RFC 3948 section 3.1.2), is opened behind it, and comes out as an IP
    /// packet of those addresses with the inner protocol, its header checksum right.
    #[test]
    fn open_transport_rebuilds_the_header_from_the_datagram() {
        let keymat: Vec<u8> = (0..20u8).collect();
        let cfg = SaConfig {
            spi: 0x1234,
            cipher: Cipher::Aes128Gcm,
            backend: Backend::Ring,
            keymat: &keymat,
            esn: false,
            mode: Mode::Transport,
            replay_window: 64,
        };
        let out = OutboundSa::new(&cfg, None).unwrap();
        let entry = InboundEntry {
            name: "t".into(),
            sa: Arc::new(InboundSa::new(&cfg).unwrap()),
            local_ts: Vec::new(),
            remote_ts: Vec::new(),
            reply: None,
            paths: Vec::new(),
            reorder: None,
        };
        let mut inb = InState::new();
        let pairs = [
            ("198.18.1.2:4500", "198.18.4.1"),
            ("[fd00::2]:4500", "fd00::1"),
        ];
        // Where a receive buffer puts a datagram: behind the headroom, or (a later datagram
        // of a GRO train) right behind another one, whose tail the header overwrites.
        for ((src, dst), start) in pairs
            .iter()
            .flat_map(|p| [(*p, RECV_HEAD), (*p, RECV_HEAD + 200)])
        {
            let src: SocketAddr = src.parse().unwrap();
            let dst: IpAddr = dst.parse().unwrap();
            let payload = [7u8; 100];
            let mut buf = vec![0u8; 256];
            let at = OutboundSa::HEADROOM;
            let hl = IpRepr {
                src: src.ip(),
                dst,
                protocol: IPPROTO_UDP,
                payload_len: payload.len(),
                hop_limit: 9,
            }
            .emit(&mut buf[at..])
            .unwrap();
            buf[at + hl..at + hl + payload.len()].copy_from_slice(&payload);
            let sealed = out.seal(&mut buf, at..at + hl + payload.len()).unwrap();
            let esp = &buf[sealed.esp_start..sealed.range.end];
            let data = &mut inb.bufs[0].data;
            data[..start].fill(0xee);
            data[start..start + esp.len()].copy_from_slice(esp);
            let opened = open_transport(&entry, data, start..start + esp.len(), src, dst).unwrap();
            let Opened::Packet { range, .. } = opened else {
                panic!("{opened:?}");
            };
            assert!(range.start >= start - hl && range.end <= start + esp.len());
            let pkt = IpPacket::new_exact(&data[range]).unwrap();
            assert_eq!(pkt.addrs(), (src.ip(), dst));
            assert_eq!(pkt.protocol(), IPPROTO_UDP);
            assert_eq!(pkt.hop_limit(), DEFAULT_HOP_LIMIT);
            assert!(pkt.checksum_ok());
            assert_eq!(pkt.payload(), &payload);
            // The same datagram again: refused by the replay window.
            data[start..start + esp.len()].copy_from_slice(esp);
            assert!(open_transport(&entry, data, start..start + esp.len(), src, dst).is_none());
        }
        let src: SocketAddr = "198.18.1.2:4500".parse().unwrap();
        let data = &mut inb.bufs[0].data;
        // Two families: no header, nothing opened.
        let r = open_transport(&entry, data, 64..128, src, "fd00::1".parse().unwrap());
        assert!(r.is_none());
        // No room in front of the datagram for the header: nothing opened, nothing written.
        data[..64].fill(0xee);
        let r = open_transport(&entry, data, 10..64, src, "198.18.4.1".parse().unwrap());
        assert!(r.is_none());
        assert!(data[..10].iter().all(|&b| b == 0xee));
    }
}
