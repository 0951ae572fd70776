//! A subscriber of a daemon's control socket: `mifsec log`, `mifsec events --json` or
//! `mifsec status --watch` as a process whose stdout lines are collected as they come.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::wait::{WAIT, poll};

/// A `mifsec` client process whose stdout lines are collected as they come; killed on drop.
#[derive(Debug)]
pub struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    /// The command, for messages.
    pub what: String,
}

impl Follower {
    /// Starts `bin ARGS --socket sock`.
    pub fn spawn(bin: impl AsRef<Path>, sock: &Path, args: &[&str]) -> Follower {
        let mut child = Command::new(bin.as_ref())
            .args(args)
            .arg("--socket")
            .arg(sock)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting mifsec");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let l = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                l.lock().unwrap().push(line);
            }
        });
        Follower {
            child,
            lines,
            what: format!("mifsec {}", args.join(" ")),
        }
    }

    /// Its process id (the daemon logs it when it subscribes).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Waits for a line that `pred` accepts; returns it.
    pub fn wait_line(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.wait_line_after(0, what, pred)
    }

    /// How many lines came so far (for [`Follower::wait_line_after`]).
    pub fn mark(&self) -> usize {
        self.lines.lock().unwrap().len()
    }

    /// Waits for a line after the first `skip` that `pred` accepts; returns it.
    pub fn wait_line_after(&self, skip: usize, what: &str, pred: impl Fn(&str) -> bool) -> String {
        poll(
            WAIT,
            Duration::from_millis(20),
            || {
                let lines = self.lines();
                lines
                    .iter()
                    .skip(skip)
                    .find(|l| pred(l))
                    .cloned()
                    .ok_or(lines)
            },
            |lines| format!("{}: no {what} in:\n{}", self.what, lines.join("\n")),
        )
    }

    /// Waits for an event line (JSON) named `event` whose fields match `fields`.
    pub fn wait_event(&self, event: &str, fields: &[(&str, &str)]) -> Value {
        self.wait_event_after(0, event, fields)
    }

    /// [`Follower::wait_event`] among the lines after the first `skip`.
    pub fn wait_event_after(&self, skip: usize, event: &str, fields: &[(&str, &str)]) -> Value {
        let line = self.wait_line_after(skip, &format!("{event} {fields:?}"), |l| {
            let Ok(v) = serde_json::from_str::<Value>(l) else {
                return false;
            };
            v["event"] == event && fields.iter().all(|(k, want)| v[*k] == *want)
        });
        serde_json::from_str(&line).unwrap()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
