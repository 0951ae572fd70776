//! Events from the engine to the control plane, over a bounded lock-free channel: the
//! sequence-number limits of outbound SAs (raised once each, by the packet path) and the
//! usage of SAs that asked for it (pushed by the monitor while it moves, for lifetimes by
//! bytes and packets and for liveness checks) and the liveness of paths (pushed by the
//! monitor when it changes), and the end of a soft move's wait (pushed by the monitor, or by
//! the batch that found a path answering already). Every event names its SA by SPI.
//!
//! Nobody in the engine ever blocks on the control thread: when the channel is full an
//! event is dropped and counted ([`EventSender::lost`]). Usage reports are sent only while
//! at most half of the channel is in use ([`EventSender::send_spare`]; the next report
//! carries the totals again), so that the events raised once always find room.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Something the control plane must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// What an SA pair has carried since it was installed. Pushed about every
    /// [`USAGE_INTERVAL`](crate::engine::USAGE_INTERVAL) while its counters move, for SAs
    /// installed with [`SaSpec::report_usage`](crate::engine::SaSpec::report_usage).
    Usage {
        /// SPI of the inbound SA.
        spi_in: u32,
        /// SPI of the outbound SA.
        spi_out: u32,
        /// The totals.
        usage: Usage,
    },
    /// The outbound SA has used most of its sequence space: rekey it soon.
    SeqSoftLimit {
        /// SPI of the outbound SA.
        spi: u32,
    },
    /// The outbound SA has used all of its sequence space and refuses to send: rekey it now.
    SeqExhausted {
        /// SPI of the outbound SA.
        spi: u32,
    },
    /// A path of an SA that sends probes changed: it went up or down (or its state is known
    /// for the first time), or, added with `verify`, it answered a probe on itself for the
    /// first time (`verified` turns true). Pushed by the monitor with the spare half of the
    /// channel, as [`Event::Usage`]; a refused one is sent at the next tick.
    PathState {
        /// The SA's name.
        sa: String,
        /// SPI of the inbound SA.
        spi_in: u32,
        /// SPI of the outbound SA.
        spi_out: u32,
        /// The path's name.
        path: String,
        /// The path's engine-wide id (the one its probes carry).
        path_id: u32,
        /// Answering probes (and verified): it may carry traffic.
        up: bool,
        /// Return routability shown (always true for paths added without `verify`).
        verified: bool,
    },
    /// A soft move's wait ([`TableOp::RemoveWhenUp`](crate::engine::TableOp::RemoveWhenUp))
    /// ended: `up` came up and `paths` left the SA, or (`up` is `None`) none of the paths it
    /// waited for answered in time and `paths` stayed. Pushed once per wait, after the table
    /// that shows it is published; not for a wait that was replaced or ended by the control
    /// plane's own changes.
    SoftMoveEnded {
        /// The SA's name.
        sa: String,
        /// SPI of the inbound SA.
        spi_in: u32,
        /// The path waited for that answered; `None`: the wait timed out.
        up: Option<String>,
        /// The wait's paths to remove: removed with `up`, kept without.
        paths: Vec<String>,
    },
}

/// The traffic of one SA pair since it was installed, as `status` counts it: inner bytes;
/// outbound, the dummy packets that carry path probes and their answers are included,
/// inbound they are not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Packets accepted by the inbound SA.
    pub in_packets: u64,
    /// Their bytes.
    pub in_bytes: u64,
    /// Packets sealed by the outbound SA.
    pub out_packets: u64,
    /// Their bytes.
    pub out_bytes: u64,
}

impl Usage {
    /// The larger of the inbound and outbound byte counts: lifetimes limit each SA of a
    /// pair (each direction) on its own, as strongSwan's do.
    pub fn bytes(&self) -> u64 {
        self.in_bytes.max(self.out_bytes)
    }

    /// The larger of the inbound and outbound packet counts.
    pub fn packets(&self) -> u64 {
        self.in_packets.max(self.out_packets)
    }
}

/// The sending half, cloned into every SA that raises events.
#[derive(Debug, Clone)]
pub struct EventSender {
    tx: crossbeam_channel::Sender<Event>,
    lost: Arc<AtomicU64>,
}

impl EventSender {
    /// Sends without blocking; a full or closed channel drops the event and counts it.
    pub fn send(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends only while at most half of the channel is in use, so that the events that are
    /// raised once find room; returns whether it was sent. A refusal is not counted as lost:
    /// the caller reports again later (usage reports carry totals).
    pub fn send_spare(&self, event: Event) -> bool {
        let half = self.tx.capacity().map_or(usize::MAX, |c| c / 2);
        self.tx.len() < half && self.tx.try_send(event).is_ok()
    }

    /// Events dropped because the channel was full or closed.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

/// A bounded event channel holding at most `capacity` events.
pub fn channel(capacity: usize) -> (EventSender, crossbeam_channel::Receiver<Event>) {
    let (tx, rx) = crossbeam_channel::bounded(capacity);
    (
        EventSender {
            tx,
            lost: Arc::new(AtomicU64::new(0)),
        },
        rx,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_sends_keep_half_the_channel_free() {
        let (tx, rx) = channel(8);
        let usage = Event::Usage {
            spi_in: 1,
            spi_out: 2,
            usage: Usage::default(),
        };
        let sent = (0..8).filter(|_| tx.send_spare(usage.clone())).count();
        assert_eq!(sent, 4);
        assert_eq!(tx.lost(), 0, "a refused usage report is not lost");
        // The events raised once still fit.
        for spi in 0..4 {
            tx.send(Event::SeqSoftLimit { spi });
        }
        assert_eq!(tx.lost(), 0);
        tx.send(Event::SeqExhausted { spi: 9 });
        assert_eq!(tx.lost(), 1);
        assert_eq!(rx.try_iter().count(), 8);
    }
}
