//! The daemon's subscriptions: the records that `mifsec log` and `mifsec events` follow,
//! handed from whichever thread makes them to the control-socket threads that stream them.
//!
//! Untrusted clients subscribe (root and the control group, as for `status`), so every part
//! is bounded and nothing ever waits for a client:
//!
//! - at most [`MAX_SUBSCRIBERS`] subscriptions at once (`log`, `events` and `status
//!   --watch` together: a [`Slot`] each); one more is refused with an error that says so;
//! - each subscription has a queue of [`QUEUE`] records. A record is offered with
//!   `try_send`: when the queue is full (the client reads too slowly, or not at all) the
//!   record is dropped and counted, and the count goes to the client in the place of the
//!   records it stands for: as an [`Item::Dropped`] before the next record that finds
//!   room, or taken by the reader once it has emptied the queue
//!   ([`Subscription::take_dropped`]). The IKE thread, a packet worker or anything else that logs never blocks and
//!   never allocates more than one record for all subscribers;
//! - a log record's message is cut at [`MAX_MESSAGE`] bytes, so a queue holds at most about
//!   `QUEUE * MAX_MESSAGE` bytes;
//! - a [`Subscription`] that is dropped (its client went away, or stopped reading for
//!   longer than the write deadline) is taken off the list at once, and its slot is free.
//!
//! Log records come from the `tracing` layer of [`crate::logging`]; events from
//! [`publish`], called where the daemon acts on what IKE and the engine report (an IKE SA or
//! child SA up or down, a rekey, a move, a multi-interface operation, a handover, a path up
//! or down). Neither ever carries key material: a log record is the line stderr gets, and
//! the events' fields are names, SPIs, addresses and counts.

use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde_json::{Map, Value};
use tracing::Metadata;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;

use crate::logging::LogConfig;

/// Most subscriptions (`log`, `events`, `status --watch`) served at once.
pub const MAX_SUBSCRIBERS: usize = 8;

/// Records queued per subscription before further ones are dropped (and counted).
pub const QUEUE: usize = 512;

/// Longest message of a log record, in bytes; a longer one is cut (at a character
/// boundary) and ends in `...`.
pub const MAX_MESSAGE: usize = 4096;

/// What a subscription's queue holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// One record, as the line of JSON the client gets.
    Line(String),
    /// This many records were dropped here because the queue was full.
    Dropped(u64),
}

/// One subscriber, as the publishers see it.
struct Sub {
    id: u64,
    tx: Sender<Item>,
    /// Records dropped since the last [`Item::Dropped`] went in (or the reader took the
    /// count, [`Subscription::take_dropped`]).
    pending: Arc<AtomicU64>,
    /// A log subscriber's levels.
    filter: Option<Targets>,
}

impl Sub {
    /// Offers `line`; a full queue counts it.
    fn offer(&self, line: &str) {
        let p = self.pending.swap(0, Ordering::AcqRel);
        if p > 0 && self.tx.try_send(Item::Dropped(p)).is_err() {
            self.pending.fetch_add(p + 1, Ordering::AcqRel);
            return;
        }
        if let Err(TrySendError::Full(_)) = self.tx.try_send(Item::Line(line.to_owned())) {
            self.pending.fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The subscribers of one kind of record.
struct List {
    subs: Mutex<Vec<Sub>>,
    /// How many there are (read without the lock: nobody listening costs one load).
    count: AtomicUsize,
}

impl List {
    const fn new() -> List {
        List {
            subs: Mutex::new(Vec::new()),
            count: AtomicUsize::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sub>> {
        self.subs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, sub: Sub) {
        let mut subs = self.lock();
        subs.push(sub);
        self.count.store(subs.len(), Ordering::Release);
    }

    fn remove(&self, id: u64) {
        let mut subs = self.lock();
        subs.retain(|s| s.id != id);
        self.count.store(subs.len(), Ordering::Release);
    }

    fn listening(&self) -> bool {
        self.count.load(Ordering::Acquire) > 0
    }
}

static LOGS: List = List::new();
static EVENTS: List = List::new();
/// Slots taken (subscriptions of every kind).
static SLOTS: AtomicUsize = AtomicUsize::new(0);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The most verbose level any log subscriber asked for ([`level_code`]).
static LOG_MAX: AtomicU8 = AtomicU8::new(0);

/// One of the [`MAX_SUBSCRIBERS`] subscriptions; given back when dropped.
#[derive(Debug)]
pub struct Slot(());

impl Slot {
    /// Takes a slot, or says why not.
    pub fn take() -> Result<Slot, String> {
        let taken = SLOTS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < MAX_SUBSCRIBERS).then_some(n + 1)
        });
        match taken {
            Ok(_) => Ok(Slot(())),
            Err(_) => Err(format!(
                "the daemon serves {MAX_SUBSCRIBERS} subscriptions already (log, events, \
                 status --watch), the most it allows; try again when one has ended"
            )),
        }
    }

    /// Slots taken now.
    pub fn taken() -> usize {
        SLOTS.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        SLOTS.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Log,
    Events,
}

/// A subscription: its queue, read by the connection thread that streams it. Dropping it
/// unsubscribes and frees its slot.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    kind: Kind,
    rx: Receiver<Item>,
    pending: Arc<AtomicU64>,
    _slot: Slot,
}

impl Subscription {
    /// The queue.
    pub fn receiver(&self) -> &Receiver<Item> {
        &self.rx
    }

    /// The records dropped that no [`Item::Dropped`] in the queue counts yet (taken: the
    /// next call says only what was dropped after). Called once the queue is empty, so
    /// that the count comes after the records that were queued before the drops, even when
    /// no record follows them.
    pub fn take_dropped(&self) -> u64 {
        self.pending.swap(0, Ordering::AcqRel)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        match self.kind {
            Kind::Log => {
                LOGS.remove(self.id);
                update_log_max();
            }
            Kind::Events => EVENTS.remove(self.id),
        }
    }
}

fn new_sub(filter: Option<Targets>) -> (Sub, Receiver<Item>, Arc<AtomicU64>, u64) {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let pending = Arc::new(AtomicU64::new(0));
    (
        Sub {
            id,
            tx,
            pending: Arc::clone(&pending),
            filter,
        },
        rx,
        pending,
        id,
    )
}

/// Follows the log at `levels` (as `[log] level` is written).
pub fn subscribe_log(levels: &LogConfig, slot: Slot) -> Subscription {
    let (sub, rx, pending, id) = new_sub(Some(levels.filter()));
    LOGS.add(sub);
    update_log_max();
    Subscription {
        id,
        kind: Kind::Log,
        rx,
        pending,
        _slot: slot,
    }
}

/// Follows the events.
pub fn subscribe_events(slot: Slot) -> Subscription {
    let (sub, rx, pending, id) = new_sub(None);
    EVENTS.add(sub);
    Subscription {
        id,
        kind: Kind::Events,
        rx,
        pending,
        _slot: slot,
    }
}

fn level_code(l: LevelFilter) -> u8 {
    match l.into_level() {
        None => 0,
        Some(tracing::Level::ERROR) => 1,
        Some(tracing::Level::WARN) => 2,
        Some(tracing::Level::INFO) => 3,
        Some(tracing::Level::DEBUG) => 4,
        Some(tracing::Level::TRACE) => 5,
    }
}

fn code_level(c: u8) -> LevelFilter {
    match c {
        0 => LevelFilter::OFF,
        1 => LevelFilter::ERROR,
        2 => LevelFilter::WARN,
        3 => LevelFilter::INFO,
        4 => LevelFilter::DEBUG,
        _ => LevelFilter::TRACE,
    }
}

/// Recomputes the most verbose level the log subscribers want, and has `tracing` ask the
/// layers again which callsites are enabled (so a `debug` subscriber gets debug events the
/// daemon's own `[log] level` leaves out, and none are looked at once it has gone). Never
/// called with a lock of ours held.
fn update_log_max() {
    let max = LOGS
        .lock()
        .iter()
        .filter_map(|s| s.filter.as_ref())
        .map(|t| {
            // `Targets` has no public max; the directives' most verbose level.
            t.iter()
                .map(|(_, l)| l)
                .chain(t.default_level())
                .max()
                .unwrap_or(LevelFilter::OFF)
        })
        .max()
        .unwrap_or(LevelFilter::OFF);
    let old = LOG_MAX.swap(level_code(max), Ordering::AcqRel);
    if old != level_code(max) {
        tracing::callsite::rebuild_interest_cache();
    }
}

/// The most verbose level a log subscriber wants (`OFF`: none is there).
pub(crate) fn log_max_level() -> LevelFilter {
    code_level(LOG_MAX.load(Ordering::Acquire))
}

/// Whether anybody follows the log.
pub(crate) fn log_listening() -> bool {
    LOGS.listening()
}

/// Whether some log subscriber wants events of `meta`.
pub(crate) fn log_wanted(meta: &Metadata<'_>) -> bool {
    if !LOGS.listening() {
        return false;
    }
    LOGS.lock().iter().any(|s| {
        s.filter
            .as_ref()
            .is_some_and(|f| f.would_enable(meta.target(), meta.level()))
    })
}

/// Hands a log record of `meta` (made by `record`, once) to the subscribers that want it.
pub(crate) fn publish_log(meta: &Metadata<'_>, record: impl FnOnce() -> String) {
    if !LOGS.listening() {
        return;
    }
    let mut line: Option<String> = None;
    let mut record = Some(record);
    for s in LOGS.lock().iter() {
        let wanted = s
            .filter
            .as_ref()
            .is_some_and(|f| f.would_enable(meta.target(), meta.level()));
        if !wanted {
            continue;
        }
        if line.is_none() {
            line = record.take().map(|r| r());
        }
        if let Some(l) = &line {
            s.offer(l);
        }
    }
}

/// Whether anybody follows the events (callers with costly fields may look first;
/// [`publish`] does).
pub fn events_listening() -> bool {
    EVENTS.listening()
}

/// The time now, as seconds since the Unix epoch (the `time` of every record and the `t`
/// of `status --watch`).
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Publishes event `event` with the fields `fields` makes (an object; called only when
/// somebody listens): one line `{"time":T,"event":EVENT,...fields}` to every events
/// subscriber. Never blocks.
pub fn publish(event: &str, fields: impl FnOnce() -> Value) {
    if !EVENTS.listening() {
        return;
    }
    let mut obj = Map::new();
    obj.insert("time".into(), Value::from(now()));
    obj.insert("event".into(), Value::from(event));
    if let Value::Object(f) = fields() {
        for (k, v) in f {
            if k != "time" && k != "event" {
                obj.insert(k, v);
            }
        }
    }
    let line = Value::Object(obj).to_string();
    for s in EVENTS.lock().iter() {
        s.offer(&line);
    }
}

/// `s` cut to at most [`MAX_MESSAGE`] bytes at a character boundary (with `...`).
pub(crate) fn cut(mut s: String) -> String {
    if s.len() > MAX_MESSAGE {
        let mut end = MAX_MESSAGE - 3;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests of this module share the process-wide lists: one test, in order.
    #[test]
    fn slots_queues_drops_and_cleanup() {
        // The limit.
        let slots: Vec<Slot> = (0..MAX_SUBSCRIBERS)
            .map(|_| Slot::take().unwrap())
            .collect();
        let e = Slot::take().unwrap_err();
        assert!(e.contains("serves 8 subscriptions already"), "{e}");
        drop(slots);
        assert_eq!(Slot::taken(), 0);

        // Nobody listens: nothing is made.
        publish("nobody", || panic!("fields made with nobody listening"));

        // A subscriber that does not read: the queue fills, the rest is counted, and the
        // count comes in its place once there is room.
        let sub = subscribe_events(Slot::take().unwrap());
        let n = QUEUE + 100;
        for i in 0..n {
            publish("test", || serde_json::json!({ "i": i }));
        }
        let rx = sub.receiver();
        assert_eq!(rx.len(), QUEUE);
        let first: Value = match rx.try_recv().unwrap() {
            Item::Line(l) => serde_json::from_str(&l).unwrap(),
            other => panic!("{other:?}"),
        };
        assert_eq!(first["event"], "test");
        assert_eq!(first["i"], 0);
        assert!(first["time"].as_f64().unwrap() > 1.6e9);
        while rx.len() > 1 {
            rx.try_recv().unwrap();
        }
        publish("test", || serde_json::json!({ "i": "after" }));
        rx.try_recv().unwrap(); // the last queued
        assert_eq!(rx.try_recv().unwrap(), Item::Dropped(100));
        match rx.try_recv().unwrap() {
            Item::Line(l) => assert!(l.contains("\"after\""), "{l}"),
            other => panic!("{other:?}"),
        }
        // Dropped with nothing after them: the reader takes the count once the queue is
        // empty.
        for i in 0..QUEUE + 7 {
            publish("test", || serde_json::json!({ "i": i }));
        }
        assert_eq!(rx.len(), QUEUE);
        while rx.try_recv().is_ok() {}
        assert_eq!(sub.take_dropped(), 7);
        assert_eq!(sub.take_dropped(), 0);
        // Gone: off the list, slot free.
        drop(sub);
        assert!(!events_listening());
        assert_eq!(Slot::taken(), 0);

        // Log subscribers by level; the max level follows them.
        assert_eq!(log_max_level(), LevelFilter::OFF);
        let warn = subscribe_log(&LogConfig::parse("warn").unwrap(), Slot::take().unwrap());
        let debug = subscribe_log(
            &LogConfig::parse("error,mifsec_control=debug").unwrap(),
            Slot::take().unwrap(),
        );
        assert_eq!(log_max_level(), LevelFilter::DEBUG);
        drop(debug);
        assert_eq!(log_max_level(), LevelFilter::WARN);
        drop(warn);
        assert_eq!(log_max_level(), LevelFilter::OFF);
        assert!(!log_listening());
    }

    #[test]
    fn long_messages_are_cut_at_a_character_boundary() {
        assert_eq!(cut("short".into()), "short");
        let s = cut("é".repeat(MAX_MESSAGE));
        assert!(s.len() <= MAX_MESSAGE && s.ends_with("..."), "{}", s.len());
    }
}
