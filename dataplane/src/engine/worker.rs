//! A packet worker: one TUN queue, every outer socket, one mio poll.
//!
//! The loop polls, loads the SA table snapshot once per wake-up, registers the sockets of a
//! new snapshot, and gives the TUN and each readable socket a budget of reads in turn; the
//! packets themselves go through [`super::outbound`] (TUN -> seal -> UDP) and
//! [`super::inbound`] (UDP -> open -> TUN). Reorder buffers are expired here too.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::inbound::{self, InState, WRITE_BATCH};
use super::outbound::{self, OutState};
use super::{GlobalCounters, Shared};
use crate::offload::{VIRTIO_NET_HDR_GSO_NONE, VIRTIO_NET_HDR_LEN, VirtioNetHdr};
use crate::sa_table::SaTable;
use crate::sys::tun::TunQueue;
use crate::sys::udp::OuterSocket;

const TUN_TOKEN: Token = Token(usize::MAX);
/// TUN reads per wake-up before the sockets get a turn.
const TUN_BUDGET: usize = 32;
/// Receive batches per wake-up before the TUN gets a turn.
const SOCK_BUDGET: usize = 8;

pub(super) fn run(shared: &Shared, tun: TunQueue) {
    crate::debug::panic_point("worker");
    // Counts into a lane of its own (beyond LANES workers, the shared one).
    let _lane = crate::counters::claim_lane();
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
            out: OutState::new(),
            inb: InState::new(),
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
                        r.expire(now, &mut |p| {
                            inbound::write_one(shared, tun, vnet, scratch, p)
                        });
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
            // Exclusive: an arrival wakes one waiting worker, not every worker.
            match t.register_exclusive(&self.poll, Token(idx)) {
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
            if hdr.gso_type != VIRTIO_NET_HDR_GSO_NONE {
                GlobalCounters::bump(&self.shared.counters.tun_super_reads);
            }
            outbound::send_packet(self.shared, table, &mut self.out, &hdr, off..n);
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
                if ranges.len() > 1 {
                    let c = &self.shared.counters;
                    GlobalCounters::bump(&c.gro_trains);
                    c.gro_datagrams
                        .fetch_add(ranges.len() as u64, Ordering::Relaxed);
                }
                for r in ranges {
                    inbound::receive(
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
                        inbound::flush_tun(self.shared, &self.tun, self.vnet, &mut self.inb);
                    }
                }
            }
            inbound::flush_tun(self.shared, &self.tun, self.vnet, &mut self.inb);
        }
        inbound::flush_tun(self.shared, &self.tun, self.vnet, &mut self.inb);
        more
    }
}
