//! Serving the subscriptions (`log`, `events`, `watch`) on a connection of the control
//! socket, once the server has checked the client's access.
//!
//! The connection's thread streams: it takes one of the
//! [`MAX_SUBSCRIBERS`](crate::events::MAX_SUBSCRIBERS) slots (or answers the error and
//! closes), subscribes, answers `{"ok":true,"result":"..."}`, and from then on writes one
//! JSON object per line. Records reach it through the subscription's bounded queue
//! ([`crate::events`]): whoever makes them never waits for this thread, and a client that
//! reads too slowly loses records and is told how many. A client that takes nothing for
//! [`write_deadline`] (`[dataplane] subscriber_timeout_s`, 30 s by default) is closed,
//! without holding up anything but its own thread; one that closes its end is noticed within
//! [`ALIVE_EVERY`] and unsubscribed. Whatever a subscriber sends after its request is read
//! and ignored.

use std::io::{self, Read};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::{info, warn};

use super::server::{StatusText, write_by};
use super::{Peer, Request, Response, WATCH_MAX, WATCH_MIN, add_key};
use crate::events::{self, Item, Slot, Subscription};
use crate::logging::LogConfig;

/// How long a subscriber may take to accept a write before it is closed, in milliseconds
/// (its records are dropped and counted meanwhile; it holds only its own thread and queue).
static WRITE_DEADLINE_MS: AtomicU64 =
    AtomicU64::new(crate::config::DEFAULT_SUBSCRIBER_TIMEOUT.as_millis() as u64);

/// Sets how long a subscriber may take to accept a write before it is closed
/// (`[dataplane] subscriber_timeout_s`); for the subscriptions that start after the call.
pub fn set_write_deadline(d: Duration) {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    WRITE_DEADLINE_MS.store(ms, Ordering::Relaxed);
}

/// How long a subscriber may take to accept a write before it is closed.
pub fn write_deadline() -> Duration {
    Duration::from_millis(WRITE_DEADLINE_MS.load(Ordering::Relaxed))
}

/// How often an idle subscription looks whether its client is still there.
pub const ALIVE_EVERY: Duration = Duration::from_millis(500);

/// Records written in one go when several are queued.
const BATCH: usize = 64;

/// Why a subscription ended.
enum End {
    /// The client closed its end.
    Closed,
    /// The client accepted nothing for [`write_deadline`].
    Stuck,
    /// The daemon is stopping (or the status could not be made).
    Daemon,
}

/// The watch samples of one server. Each is made once per tick and shared by every
/// subscriber that wants that tick: the ticks of an interval are its multiples since the
/// server started, so watchers with the same interval (or one a multiple of the other) wake
/// for the same instants and one status serves them all. A sample is the status object's
/// text with `t` added; the subscribers copy it, and add `missed` each for itself.
pub(super) struct Samples {
    /// Where the ticks count from.
    epoch: Instant,
    /// The status text ([`super::Listener::with_status`]); without it, the handler's answer
    /// to `status`.
    text: Option<StatusText>,
    /// The last sample made for a tick.
    last: Mutex<Option<Sample>>,
}

/// A sample and the tick it was made for.
struct Sample {
    due: Instant,
    text: Arc<Vec<u8>>,
}

impl Samples {
    pub(super) fn new(text: Option<StatusText>) -> Samples {
        Samples {
            epoch: Instant::now(),
            text,
            last: Mutex::new(None),
        }
    }

    /// The first tick of `interval` at or after `at`.
    fn tick_from(&self, at: Instant, interval: Duration) -> Instant {
        let since = at.saturating_duration_since(self.epoch).as_nanos();
        let step = interval.as_nanos().max(1);
        let ticks = since.div_ceil(step);
        let off = u64::try_from(ticks.saturating_mul(step)).unwrap_or(u64::MAX);
        self.epoch + Duration::from_nanos(off)
    }

    /// The sample of tick `due`: the one made for it already if there is one, else a new
    /// one (kept for the others: it replaces the last, whose buffer it reuses when no
    /// subscriber holds that any more). `due` `None`: a sample for this subscriber alone,
    /// now (its first). `fallback` makes the status text without [`Samples::text`].
    fn get(
        &self,
        due: Option<Instant>,
        fallback: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<Arc<Vec<u8>>, String> {
        let Some(due) = due else {
            return self.make(Vec::new(), fallback).map(Arc::new);
        };
        // Held while the sample is made: a subscriber that wants the same tick waits for
        // it instead of making another. Only the watch threads take this lock.
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = last.as_ref().filter(|s| s.due == due) {
            return Ok(Arc::clone(&s.text));
        }
        let buf = last
            .take()
            .and_then(|s| Arc::try_unwrap(s.text).ok())
            .unwrap_or_default();
        let text = Arc::new(self.make(buf, fallback)?);
        *last = Some(Sample {
            due,
            text: Arc::clone(&text),
        });
        Ok(text)
    }

    /// The status text in `buf` with `t` (taken before the status) added.
    fn make(
        &self,
        mut buf: Vec<u8>,
        fallback: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<Vec<u8>, String> {
        let t = events::now();
        buf.clear();
        match &self.text {
            Some(f) => f(&mut buf)?,
            None => fallback(&mut buf)?,
        }
        add_key(&mut buf, "t")?;
        serde_json::to_writer(&mut buf, &t).map_err(|e| e.to_string())?;
        buf.push(b'}');
        Ok(buf)
    }
}

/// A watch sample's line in `line` (cleared first): the sample, `missed` added when some
/// were skipped, and the newline.
fn sample_line(line: &mut Vec<u8>, sample: &[u8], missed: u64) -> Result<(), String> {
    line.clear();
    line.extend_from_slice(sample);
    if missed > 0 {
        add_key(line, "missed")?;
        serde_json::to_writer(&mut *line, &missed).map_err(|e| e.to_string())?;
        line.push(b'}');
    }
    line.push(b'\n');
    Ok(())
}

/// Serves subscription `req` (allowed already) on `stream` until it ends.
pub(super) fn serve<F>(
    handler: &F,
    samples: &Samples,
    peer: &Peer,
    stream: &UnixStream,
    req: Request,
) where
    F: Fn(&Peer, Request) -> Response,
{
    let what = req.describe();
    let refuse = |why: String| {
        let line = format!("{}\n", Response::err(why).to_line());
        let _ = write_by(stream, line.as_bytes(), Instant::now() + write_deadline());
    };
    let slot = match Slot::take() {
        Ok(s) => s,
        Err(why) => {
            warn!(
                "control socket: refused {what} from uid {} pid {}: {why}",
                peer.uid, peer.pid
            );
            return refuse(why);
        }
    };
    let (end, dropped) = match req {
        Request::Log { level } => {
            let levels = match LogConfig::parse(level.as_deref().unwrap_or("info")) {
                Ok(l) => l,
                Err(e) => return refuse(format!("--level: {e}")),
            };
            // Subscribed before the answer: whatever is logged after the client has read
            // it reaches the client.
            let sub = events::subscribe_log(&levels, slot);
            info!(
                "control socket: uid {} pid {} follows the log at {levels}",
                peer.uid, peer.pid
            );
            pump(
                stream,
                &sub,
                &format!("following the log at {levels}"),
                true,
            )
        }
        Request::Events {} => {
            let sub = events::subscribe_events(slot);
            info!(
                "control socket: uid {} pid {} follows the events",
                peer.uid, peer.pid
            );
            pump(stream, &sub, "following the events", false)
        }
        Request::Watch { interval_ms } => {
            let interval = Duration::from_millis(interval_ms);
            if !(WATCH_MIN..=WATCH_MAX).contains(&interval) {
                return refuse(format!(
                    "--interval must be {} to {} seconds, got {}",
                    WATCH_MIN.as_secs_f64(),
                    WATCH_MAX.as_secs(),
                    interval.as_secs_f64()
                ));
            }
            let end = watch(handler, samples, peer, stream, interval);
            drop(slot);
            end
        }
        _ => return refuse("not a subscription".into()),
    };
    let why = match end {
        End::Closed => "the client closed it".to_owned(),
        End::Stuck => format!(
            "the client took nothing for {} s; closed",
            write_deadline().as_secs_f64()
        ),
        End::Daemon => "the daemon is stopping".to_owned(),
    };
    let lost = if dropped > 0 {
        format!(", {dropped} records dropped on the way")
    } else {
        String::new()
    };
    match end {
        End::Stuck => warn!(
            "control socket: {what} of uid {} pid {} ended: {why}{lost}",
            peer.uid, peer.pid
        ),
        _ => info!(
            "control socket: {what} of uid {} pid {} ended: {why}{lost}",
            peer.uid, peer.pid
        ),
    }
}

/// The line that tells a client `n` records were dropped.
fn dropped_line(n: u64, log: bool) -> String {
    let t = events::now();
    if log {
        serde_json::json!({
            "time": t,
            "level": "WARN",
            "target": "mifsec::subscription",
            "message": format!("{n} log records dropped here: this client read too slowly"),
            "dropped": n,
        })
    } else {
        serde_json::json!({ "time": t, "event": "dropped", "count": n })
    }
    .to_string()
}

/// Answers `ok`, then writes the subscription's records until it ends; returns why and how
/// many records were dropped.
fn pump(stream: &UnixStream, sub: &Subscription, ok: &str, log: bool) -> (End, u64) {
    let mut dropped = 0;
    let first = format!("{}\n", Response::ok(Value::from(ok)).to_line());
    if write_by(stream, first.as_bytes(), Instant::now() + write_deadline()).is_err() {
        return (End::Closed, dropped);
    }
    let rx = sub.receiver();
    let mut out = Vec::new();
    loop {
        let item = match rx.recv_timeout(ALIVE_EVERY) {
            Ok(i) => i,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                if closed(stream) {
                    return (End::Closed, dropped);
                }
                let n = sub.take_dropped();
                if n == 0 {
                    continue;
                }
                Item::Dropped(n)
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                return (End::Daemon, dropped);
            }
        };
        out.clear();
        for item in std::iter::once(item).chain(rx.try_iter().take(BATCH - 1)) {
            match item {
                Item::Line(l) => out.extend_from_slice(l.as_bytes()),
                Item::Dropped(n) => {
                    dropped += n;
                    out.extend_from_slice(dropped_line(n, log).as_bytes());
                }
            }
            out.push(b'\n');
        }
        // Drops that no later record has reported: after what was queued before them.
        if rx.is_empty() {
            let n = sub.take_dropped();
            if n > 0 {
                dropped += n;
                out.extend_from_slice(dropped_line(n, log).as_bytes());
                out.push(b'\n');
            }
        }
        match write_by(stream, &out, Instant::now() + write_deadline()) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return (End::Stuck, dropped);
            }
            Err(_) => return (End::Closed, dropped),
        }
    }
}

/// `status` every `interval`, with `t` added, until the client goes. The first sample at
/// once, the next ones at the ticks of `interval` ([`Samples`]), the second at least an
/// interval after the first. A sample that would be late (the client or the status slower
/// than the interval) is skipped, and the next line says how many were (`missed`).
fn watch<F>(
    handler: &F,
    samples: &Samples,
    peer: &Peer,
    stream: &UnixStream,
    interval: Duration,
) -> (End, u64)
where
    F: Fn(&Peer, Request) -> Response,
{
    let ok = format!(
        "{}\n",
        Response::ok(Value::from(format!(
            "status every {} s",
            interval.as_secs_f64()
        )))
        .to_line()
    );
    if write_by(stream, ok.as_bytes(), Instant::now() + write_deadline()).is_err() {
        return (End::Closed, 0);
    }
    // Without a status text of the server's own: the handler's answer to `status`.
    let fallback = |out: &mut Vec<u8>| match handler(peer, Request::Status {}).into_result() {
        Ok(v @ Value::Object(_)) => serde_json::to_writer(out, &v).map_err(|e| e.to_string()),
        Ok(_) => Err("status: not an object".to_owned()),
        Err(e) => Err(e),
    };
    let start = Instant::now();
    let mut due: Option<Instant> = None;
    let mut line = Vec::new();
    let mut missed: u64 = 0;
    let mut missed_total = 0;
    loop {
        let made = samples
            .get(due, fallback)
            .and_then(|text| sample_line(&mut line, &text, missed));
        if made.is_err() {
            return (End::Daemon, missed_total);
        }
        missed_total += missed;
        missed = 0;
        match write_by(stream, &line, Instant::now() + write_deadline()) {
            Ok(()) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
                ) =>
            {
                return (End::Stuck, missed_total);
            }
            Err(_) => return (End::Closed, missed_total),
        }
        let mut next = match due {
            None => samples.tick_from(start + interval, interval),
            Some(d) => d + interval,
        };
        let now = Instant::now();
        if next <= now {
            let behind = (now - next).as_nanos() / interval.as_nanos() + 1;
            let behind = u32::try_from(behind).unwrap_or(u32::MAX);
            missed += u64::from(behind);
            next += interval * behind;
        }
        due = Some(next);
        if closed_by(stream, next) {
            return (End::Closed, missed_total);
        }
    }
}

/// Whether the client has closed its end (looks without waiting more than a moment).
fn closed(stream: &UnixStream) -> bool {
    closed_by(stream, Instant::now() + Duration::from_millis(1))
}

/// Waits until `until` for the client to close its end; whether it did. What it sends is
/// read and ignored.
fn closed_by(stream: &UnixStream, until: Instant) -> bool {
    let mut buf = [0u8; 512];
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left < Duration::from_micros(10) {
            return false;
        }
        if stream.set_read_timeout(Some(left)).is_err() {
            return true;
        }
        match (&*stream).read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tick_s_sample_is_made_once_and_its_buffer_reused() {
        let samples = Samples::new(None);
        let mut made = 0;
        let mut make = |out: &mut Vec<u8>| {
            made += 1;
            out.extend_from_slice(b"{\"sas\":[]}");
            Ok(())
        };
        let i = Duration::from_millis(50);
        let d1 = samples.tick_from(Instant::now(), i);
        assert_eq!(
            (d1 - samples.epoch).as_nanos() % i.as_nanos(),
            0,
            "on the grid"
        );
        let a = samples.get(Some(d1), &mut make).unwrap();
        let b = samples.get(Some(d1), &mut make).unwrap();
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second subscriber of a tick shares it"
        );
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["sas"], serde_json::json!([]));
        assert!(v["t"].as_f64().unwrap() > 1.7e9, "{v}");
        let ptr = a.as_ptr();
        drop((a, b));
        let c = samples.get(Some(d1 + i), &mut make).unwrap();
        assert_eq!(
            c.as_ptr(),
            ptr,
            "nobody held the last: its buffer is reused"
        );
        // A subscriber's first sample is its own, and leaves the shared one alone.
        let own = samples.get(None, &mut make).unwrap();
        assert!(!Arc::ptr_eq(&own, &c));
        assert!(Arc::ptr_eq(
            &samples.get(Some(d1 + i), &mut make).unwrap(),
            &c
        ));
        assert_eq!(made, 3);
        // A status that fails is the subscription's end, not a panic.
        assert!(
            samples
                .get(Some(d1 + 2 * i), |_: &mut Vec<u8>| Err("stopping".into()))
                .is_err()
        );
        // The first tick at or after: a tick itself, or the next one.
        assert_eq!(samples.tick_from(d1, i), d1);
        assert_eq!(samples.tick_from(d1 + Duration::from_nanos(1), i), d1 + i);
    }

    #[test]
    fn a_sample_line_says_what_was_missed() {
        let mut line = b"old".to_vec();
        sample_line(&mut line, b"{\"t\":1.5}", 0).unwrap();
        assert_eq!(line, b"{\"t\":1.5}\n");
        sample_line(&mut line, b"{\"t\":1.5}", 3).unwrap();
        assert_eq!(line, b"{\"t\":1.5,\"missed\":3}\n");
        assert!(sample_line(&mut line, b"[]", 3).is_err());
    }
}
