//! Counting IKE messages on the wire: tcpdump in a namespace writes a pcap of UDP ports 500
//! and 4500, tshark lists the IKE messages in it (on port 4500 only those after the non-ESP
//! marker: ESP in UDP and keepalives are not IKE), and [`count`] says how many requests and
//! responses of an exchange type went between two instants.
//!
//! The figures come from the packets, not from our logs: a bar such as "one INFORMATIONAL
//! request and one response" is checked against what tcpdump saw.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cmd::{run, text};
use crate::wait::{WAIT, poll};

/// IKEv2 exchange types (RFC 7296 section 3.1).
pub const IKE_SA_INIT: u8 = 34;
pub const IKE_AUTH: u8 = 35;
pub const CREATE_CHILD_SA: u8 = 36;
pub const INFORMATIONAL: u8 = 37;

/// The name of an exchange type.
pub fn exchange_name(t: u8) -> String {
    match t {
        IKE_SA_INIT => "IKE_SA_INIT".into(),
        IKE_AUTH => "IKE_AUTH".into(),
        CREATE_CHILD_SA => "CREATE_CHILD_SA".into(),
        INFORMATIONAL => "INFORMATIONAL".into(),
        n => format!("exchange {n}"),
    }
}

/// One IKE message (or fragment of one) seen on the wire.
#[derive(Debug, Clone, PartialEq)]
pub struct IkeMessage {
    /// When it was captured (seconds since the epoch, the clock of `roam::unix_now`).
    pub at: f64,
    pub src: String,
    pub dst: String,
    pub sport: u16,
    pub dport: u16,
    pub exchange: u8,
    /// The Response flag.
    pub response: bool,
    /// The Initiator flag (set by the original initiator of the IKE SA).
    pub initiator: bool,
    pub message_id: u32,
    /// Initiator and responder SPIs, in hex.
    pub spi_i: String,
    pub spi_r: String,
    /// The first payload's type (53 is an encrypted fragment, SKF).
    pub next_payload: u8,
    /// Port 4500 with the non-ESP marker (else port 500).
    pub natt: bool,
}

/// A running capture: tcpdump in a namespace writing `path`, stopped on drop.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    /// The pcap file.
    pub path: PathBuf,
    err: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -i any` in `ns` for UDP ports 500 and 4500 (IKE, ESP in UDP), packets
    /// written as they come (`-U`, and `--immediate-mode`: without it the kernel hands packets
    /// over in blocks, and a capture stopped soon after an exchange may hold none of it) into
    /// `path`; returns once tcpdump listens.
    pub fn start(ns: &str, path: &Path) -> Capture {
        Capture::start_filter(ns, path, "udp port 500 or udp port 4500")
    }

    /// As [`Capture::start`] with another filter.
    pub fn start_filter(ns: &str, path: &Path, filter: &str) -> Capture {
        let err = path.with_extension("tcpdump.log");
        let log = std::fs::File::create(&err).expect("tcpdump's log");
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "-i",
                "any",
                "-n",
                "-U",
                "--immediate-mode",
                "-Z",
                "root",
            ])
            .args(["-s", "2048", "-w"])
            .arg(path)
            .arg(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting tcpdump (apt-get install -y tcpdump)");
        let mut cap = Capture {
            child: Some(child),
            path: path.to_owned(),
            err,
        };
        poll(
            WAIT,
            Duration::from_millis(20),
            || {
                let said = std::fs::read_to_string(&cap.err).unwrap_or_default();
                if said.contains("listening on") {
                    return Ok(Ok(()));
                }
                match cap.child.as_mut().map(|c| c.try_wait()) {
                    Some(Ok(Some(st))) => Ok(Err(format!("tcpdump exited with {st}: {said}"))),
                    _ => Err(said),
                }
            },
            |said| format!("tcpdump did not start listening: {said}"),
        )
        .unwrap_or_else(|e: String| panic!("{e}"));
        cap
    }

    /// Stops tcpdump (SIGINT: it flushes the file) and returns the IKE messages captured.
    pub fn stop(&mut self) -> Vec<IkeMessage> {
        if let Some(mut c) = self.child.take() {
            if c.try_wait().expect("tcpdump").is_none() {
                let pid = libc::pid_t::try_from(c.id()).expect("a pid");
                // SAFETY: kill(2) on our own child, not reaped yet (try_wait said it runs);
                // `ip netns exec` execs tcpdump in its place.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
            if crate::terminate(&mut c, Duration::from_secs(5)).is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        ike_messages(&self.path)
    }

    /// The IKE messages captured so far (tcpdump writes each packet as it comes).
    pub fn so_far(&self) -> Vec<IkeMessage> {
        ike_messages(&self.path)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether tshark is there (scripts/test.sh installs it).
pub fn have_tshark() -> bool {
    Command::new("tshark")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The IKE messages of pcap file `path`, in capture order (tshark's `isakmp` dissector; on
/// port 4500 it reads only what follows a non-ESP marker as IKE).
pub fn ike_messages(path: &Path) -> Vec<IkeMessage> {
    assert!(
        have_tshark(),
        "tshark is missing: apt-get install -y tshark (scripts/test.sh does)"
    );
    let out = run(Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-n", "-Y", "isakmp", "-T", "fields", "-E", "separator=|"])
        .args([
            "-e",
            "frame.time_epoch",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "udp.srcport",
            "-e",
            "udp.dstport",
            "-e",
            "isakmp.exchangetype",
            "-e",
            "isakmp.flag_r",
            "-e",
            "isakmp.flag_i",
            "-e",
            "isakmp.messageid",
            "-e",
            "isakmp.ispi",
            "-e",
            "isakmp.rspi",
            "-e",
            "isakmp.nextpayload",
        ])
        .env("HOME", std::env::temp_dir()));
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        path.display(),
        text(&out)
    );
    parse_fields(&String::from_utf8_lossy(&out.stdout))
}

fn flag(s: &str) -> bool {
    matches!(s.trim(), "1" | "True" | "true")
}

/// First value of a field tshark printed (a field that occurs more than once is listed
/// with commas).
fn first(s: &str) -> &str {
    s.split(',').next().unwrap_or("").trim()
}

fn num<T: std::str::FromStr + Default>(s: &str) -> T {
    let s = first(s);
    if let Some(h) = s.strip_prefix("0x") {
        return u64::from_str_radix(h, 16)
            .ok()
            .and_then(|v| v.to_string().parse().ok())
            .unwrap_or_default();
    }
    s.parse().unwrap_or_default()
}

/// tshark's `-T fields -E separator=|` lines, as [`ike_messages`] asks for them.
pub fn parse_fields(out: &str) -> Vec<IkeMessage> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            if f.len() < 12 || first(f[5]).is_empty() {
                return None;
            }
            let sport: u16 = num(f[3]);
            let dport: u16 = num(f[4]);
            Some(IkeMessage {
                at: first(f[0]).parse().ok()?,
                src: first(f[1]).to_owned(),
                dst: first(f[2]).to_owned(),
                sport,
                dport,
                exchange: num(f[5]),
                response: flag(first(f[6])),
                initiator: flag(first(f[7])),
                message_id: num(f[8]),
                spi_i: first(f[9]).to_owned(),
                spi_r: first(f[10]).to_owned(),
                next_payload: num(f[11]),
                natt: sport == 4500 || dport == 4500,
            })
        })
        .collect()
}

/// When the first ESP-in-UDP packet from `src` captured at or after `t` (seconds since the
/// epoch) went, if one did: the instant traffic took a new path, seen on the wire.
pub fn first_esp_from(path: &Path, src: &str, t: f64) -> Option<f64> {
    let filter = format!("esp && ip.src == {src} && frame.time_epoch >= {t:.6}");
    let out = run(Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args([
            "-n",
            "-Y",
            &filter,
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
        ])
        .env("HOME", std::env::temp_dir()));
    assert!(out.status.success(), "tshark: {}", text(&out));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().parse().ok())
}

/// When ESP from `src` first ran at data rate at or after `t` (seconds since the epoch):
/// the start of the first 20 ms in which at least `n` ESP packets left from it (probes are
/// one per child and path every 50 ms, far fewer), if that happened.
pub fn data_from(path: &Path, src: &str, t: f64, n: usize) -> Option<f64> {
    let filter = format!("esp && ip.src == {src} && frame.time_epoch >= {t:.6}");
    let out = run(Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args([
            "-n",
            "-Y",
            &filter,
            "-T",
            "fields",
            "-e",
            "frame.time_epoch",
        ])
        .env("HOME", std::env::temp_dir()));
    assert!(out.status.success(), "tshark: {}", text(&out));
    let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    times
        .iter()
        .enumerate()
        .find(|(i, at)| times[*i..].iter().take_while(|x| **x < **at + 0.02).count() >= n)
        .map(|(_, at)| *at)
}

/// Requests and responses of one exchange type between two instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counted {
    pub requests: usize,
    pub responses: usize,
}

/// How many `exchange` requests and responses `msgs` has between `t0` and `t1` (seconds
/// since the epoch, both included). An encrypted fragment counts as one message each; a
/// retransmission counts again (it went on the wire again).
pub fn count(msgs: &[IkeMessage], exchange: u8, t0: f64, t1: f64) -> Counted {
    msgs.iter()
        .filter(|m| m.exchange == exchange && m.at >= t0 && m.at <= t1)
        .fold(Counted::default(), |mut c, m| {
            if m.response {
                c.responses += 1;
            } else {
                c.requests += 1;
            }
            c
        })
}

/// Every message between `t0` and `t1`, counted by exchange name and direction
/// (`"INFORMATIONAL request"`, ...).
pub fn tally(msgs: &[IkeMessage], t0: f64, t1: f64) -> std::collections::BTreeMap<String, usize> {
    let mut out = std::collections::BTreeMap::new();
    for m in msgs.iter().filter(|m| m.at >= t0 && m.at <= t1) {
        let dir = if m.response { "response" } else { "request" };
        *out.entry(format!("{} {dir}", exchange_name(m.exchange)))
            .or_insert(0) += 1;
    }
    out
}

/// One line per message, for failure messages and reports.
pub fn listing(msgs: &[IkeMessage]) -> String {
    msgs.iter()
        .map(|m| {
            format!(
                "{:.6} {}:{} -> {}:{} {} {} mid {}{}\n",
                m.at,
                m.src,
                m.sport,
                m.dst,
                m.dport,
                exchange_name(m.exchange),
                if m.response { "response" } else { "request" },
                m.message_id,
                if m.next_payload == 53 {
                    " (fragment)"
                } else {
                    ""
                }
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_parsed_and_counted() {
        let out = "1000.5|198.18.33.2|198.18.41.2|500|500|34|0|1|0|0x1122|0x0000|33\n\
            1000.6|198.18.41.2|198.18.33.2|500|500|34|1|0|0|0x1122|0x3344|33\n\
            1001.0|198.18.34.2|198.18.41.2|4500|4500|37|False|True|7|0x1122|0x3344|46\n\
            1001.1|198.18.41.2|198.18.34.2|4500|4500|37|True|False|7|0x1122|0x3344|46\n\
            1002.0|198.18.34.2|198.18.41.2|4500|4500|||||||\n";
        let m = parse_fields(out);
        assert_eq!(m.len(), 4);
        assert_eq!(m[2].message_id, 7);
        assert!(m[2].natt && m[2].initiator && !m[2].response);
        assert_eq!(
            count(&m, INFORMATIONAL, 1000.9, 1001.2),
            Counted {
                requests: 1,
                responses: 1
            }
        );
        assert_eq!(count(&m, INFORMATIONAL, 1001.05, 1001.2).requests, 0);
        assert_eq!(tally(&m, 0.0, 2000.0)["IKE_SA_INIT request"], 1);
    }
}
