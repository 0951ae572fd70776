//! Events from the packet path to the control plane, over a bounded lock-free channel.
//!
//! The packet path never blocks on the control thread: when the channel is full an event is
//! dropped and counted, and the condition that raised it raises it again later.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Something the control plane must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
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
