//! Waiting on conditions with deadlines.

use std::time::{Duration, Instant};

/// How long a test waits for a state before it fails: generous, since it only bounds a
/// failure on a loaded machine; a passing test waits only as long as the state takes.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `cond` (every 10 ms) until it holds; panics naming `what` once `timeout` has passed.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    poll(
        timeout,
        Duration::from_millis(10),
        || if cond() { Ok(()) } else { Err(()) },
        |()| format!("timed out after {timeout:?} waiting for {what}"),
    );
}

/// Calls `probe` every `every` until it returns `Ok`, and returns what it found; once
/// `timeout` has passed, panics with `fail` of the last `Err` (the state it saw, so that the
/// message can say what was there instead).
pub fn poll<T, E>(
    timeout: Duration,
    every: Duration,
    mut probe: impl FnMut() -> Result<T, E>,
    fail: impl FnOnce(E) -> String,
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        match probe() {
            Ok(t) => return t,
            Err(e) if Instant::now() >= deadline => panic!("{}", fail(e)),
            Err(_) => std::thread::sleep(every),
        }
    }
}
