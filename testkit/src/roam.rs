//! The roaming lab (issue 10, MOBIKE): a client with two links through a middle router to a
//! gateway with two addresses, the failures a roaming client meets (an address deleted, a
//! link or a gateway address blackholed silently in the middle), and a ping stream at
//! 100 packets/s through the tunnel ([`PingStream`]) that reports what it lost and its
//! longest gap.
//!
//! ```text
//!            link 1: rl1 198.18.21.2/24 ── 198.18.21.1 m1 ┐
//!  client                                                  mid  mg 198.18.20.1 ── rg 198.18.20.10/24  gateway
//!            link 2: rl2 198.18.22.2/24 ── 198.18.22.1 m2 ┘                          198.18.20.11/24
//!                                                                                    10.88.0.1 on lo
//! ```
//!
//! The client reaches 198.18.20.0/24 through link 1 (route metric 100) and through link 2
//! (metric 200): a program that follows the routing table uses link 1 while it has its
//! address, one that binds a socket to a device (SO_BINDTODEVICE) can use either. A packet
//! from a link's address always leaves on that link (a rule per address, tables 101 and
//! 102), so the link a tunnel uses is the one its outer source address is on. The
//! gateway's default route is the middle namespace, which forwards. A failure in the middle
//! (`ip route add blackhole ADDR/32` there) sends no link or address event to either end.
//!
//! [`RoamLab`] derefs to the strongSwan interop [`Lab`](crate::swan::Lab) (client and
//! gateway namespace, charon, mifsec daemons, logs), so everything of `swan` works here.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::cmd::ip;
pub use crate::link::{Link, PREFIX};
use crate::link::{blackhole_route, forward, wait_carries};
use crate::netns::{Netns, addr_up, veth};
use crate::swan::{Lab, PSK};
use crate::template::MIFSEC_ROAM_CLIENT;
use crate::wait::{WAIT, poll};

/// The client's links: link 1 (index 0) preferred by the routing table, link 2 (index 1).
pub const LINKS: [Link; 2] = [
    Link {
        dev: "rl1",
        addr: "198.18.21.2",
        mid_dev: "m1",
        mid_addr: "198.18.21.1",
        metric: "100",
        table: "101",
    },
    Link {
        dev: "rl2",
        addr: "198.18.22.2",
        mid_dev: "m2",
        mid_addr: "198.18.22.1",
        metric: "200",
        table: "102",
    },
];
/// The gateway's device.
pub const GW_DEV: &str = "rg";
/// The gateway's two addresses (both on [`GW_DEV`]); the first is the one clients dial.
pub const GW_ADDRS: [&str; 2] = ["198.18.20.10", "198.18.20.11"];
/// The gateway-side network, as the client routes it.
pub const GW_NET: &str = "198.18.20.0/24";
/// The middle namespace's device towards the gateway, and its address there.
pub const MID_GW_DEV: &str = "mg";
pub const MID_GW_ADDR: &str = "198.18.20.1";
/// The address behind the gateway (on its loopback) that the ping stream goes to.
pub const INNER: &str = "10.88.0.1";

/// The roaming lab: client, middle and gateway namespaces; removed on drop with the daemons
/// and charon of the [`Lab`] it holds.
#[derive(Debug)]
pub struct RoamLab {
    pub lab: Lab,
    pub mid_ns: String,
}

impl Deref for RoamLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl DerefMut for RoamLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

impl RoamLab {
    /// The lab for test `tag` (a few letters, unique among the tests), with daemons running
    /// `bin`. `lab.cl_if` is link 1's device, `lab.gw_if` the gateway's.
    pub fn new(tag: &str, bin: &str) -> RoamLab {
        let pid = std::process::id();
        let names = ["c", "m", "g"].map(|s| format!("mfro-{tag}-{s}{pid}"));
        let ns: Vec<Netns> = names.iter().map(|n| Netns::new(n.as_str())).collect();
        for n in &ns {
            n.lo_up();
        }
        let [cl, mid, gw] = names;
        for l in &LINKS {
            l.attach(&cl, &mid);
        }
        veth(&mid, MID_GW_DEV, &gw, GW_DEV);
        addr_up(&mid, MID_GW_DEV, &format!("{MID_GW_ADDR}/{PREFIX}"));
        for a in GW_ADDRS {
            addr_up(&gw, GW_DEV, &format!("{a}/{PREFIX}"));
        }
        ip(&["-n", &gw, "route", "add", "default", "via", MID_GW_ADDR]);
        ip(&[
            "-n",
            &gw,
            "addr",
            "add",
            &format!("{INNER}/32"),
            "dev",
            "lo",
        ]);
        forward(&mid);
        let lab = Lab::assemble(tag, bin, cl, gw, LINKS[0].dev, GW_DEV, ns);
        let roam = RoamLab { lab, mid_ns: mid };
        for l in &LINKS {
            l.source_route(&roam.cl_ns, GW_NET);
        }
        roam
    }

    /// Deletes the client's address on link `i` (an explicit event: the kernel also drops
    /// the routes through that link).
    pub fn delete_address(&self, i: usize) {
        LINKS[i].delete_address(&self.cl_ns);
    }

    /// Gives the client's address on link `i` back, with its route to the gateway.
    pub fn restore_address(&self, i: usize) {
        LINKS[i].restore_address(&self.cl_ns, GW_NET);
    }

    /// Silently breaks link `i`: the middle namespace discards everything to the client's
    /// address there (a blackhole route; neither end sees a link or address event).
    pub fn blackhole_link(&self, i: usize) {
        self.blackhole(LINKS[i].addr, true);
    }

    /// Undoes [`RoamLab::blackhole_link`].
    pub fn unblackhole_link(&self, i: usize) {
        self.blackhole(LINKS[i].addr, false);
    }

    /// Silently makes the gateway's address `i` unreachable from the client: the middle
    /// namespace discards everything to it.
    pub fn blackhole_gateway(&self, i: usize) {
        self.blackhole(GW_ADDRS[i], true);
    }

    /// Undoes [`RoamLab::blackhole_gateway`].
    pub fn unblackhole_gateway(&self, i: usize) {
        self.blackhole(GW_ADDRS[i], false);
    }

    fn blackhole(&self, addr: &str, on: bool) {
        blackhole_route(&self.mid_ns, addr, on);
    }

    /// Packets the client has sent on link `i` (its device's tx counter).
    pub fn tx_packets(&self, i: usize) -> u64 {
        LINKS[i].packets(&self.cl_ns, "tx")
    }

    /// Waits until the client's traffic goes out on link `i`: at least `n` packets on it
    /// within 200 ms (the ping stream sends 20 in that time), while the other link sends
    /// fewer. Panics with `what` and the status of `side` after [`WAIT`].
    pub fn wait_link_carries(&self, i: usize, n: u64, side: &str, what: &str) {
        wait_carries(&self.cl_ns, &LINKS, i, n, what, || {
            format!(
                "--- status:\n{:#}\n--- log:\n{}\n--- charon log:\n{}",
                self.status_json(side),
                self.log(side),
                self.swan_log()
            )
        });
    }

    /// mifsec as the client of the roaming lab (testkit/templates/mifsec-roam-client.toml)
    /// with `vars` put in (`LINK1`/`LINK2`: each interface's `address = ...` line, `""` for
    /// a device-only interface; `GATEWAYS`, `CONN`, `CHILD`, ...).
    pub fn mifsec_client(&self, vars: &[(&str, &str)]) -> String {
        let sock = self.sock("cl").display().to_string();
        MIFSEC_ROAM_CLIENT.render(&[vars, &[("PSK", PSK), ("SOCK", sock.as_str())]].concat())
    }

    /// mifsec as the gateway of the roaming lab, listening on both addresses (interfaces
    /// `wan` and `wan2`), with `vars` put in.
    pub fn mifsec_gateway(&self, vars: &[(&str, &str)]) -> String {
        let second = format!(
            "[interfaces.wan2]\ndevice = \"{GW_DEV}\"\naddress = \"{}\"",
            GW_ADDRS[1]
        );
        let local = format!("\"{}\", \"{}\"", GW_ADDRS[0], GW_ADDRS[1]);
        crate::swan::mifsec_gateway(
            self,
            &[
                vars,
                &[
                    ("ADDR", GW_ADDRS[0]),
                    ("INTERFACES", second.as_str()),
                    ("LOCAL_ADDRS", local.as_str()),
                ],
            ]
            .concat(),
        )
    }

    /// A strongSwan gateway for this lab (both addresses in `local_addrs`, so that it
    /// announces the other one with ADDITIONAL_IP4_ADDRESS), with `vars` put in.
    pub fn swan_gateway(vars: &[(&str, &str)]) -> String {
        let local = format!("{}, {}", GW_ADDRS[0], GW_ADDRS[1]);
        crate::swan::swan_gateway(&[vars, &[("LOCAL_ADDRS", local.as_str())]].concat())
    }

    /// A strongSwan client for this lab, dialling the gateway's first address.
    pub fn swan_client(vars: &[(&str, &str)]) -> String {
        crate::swan::swan_client(&[vars, &[("GATEWAY", GW_ADDRS[0])]].concat())
    }

    /// Starts a [`PingStream`] from the client to [`INNER`], its output in the lab's folder
    /// as `NAME.ping`, and waits until it gets replies.
    pub fn ping_stream(&self, name: &str) -> PingStream {
        let p = PingStream::start(
            &self.cl_ns,
            INNER,
            &self.dir.join(format!("{name}.ping")),
            Duration::from_secs(300),
        );
        p.wait_replies(3, WAIT);
        p
    }
}

/// mifsec's inbound drop counters by reason, summed over the engine and every SA, zeros
/// left out (`integrity`, `replayed`, ...).
pub fn drops(st: &Value) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let sas = st["sas"].as_array().cloned().unwrap_or_default();
    for src in std::iter::once(st).chain(sas.iter()) {
        if let Some(m) = src["drops"].as_object() {
            for (k, v) in m {
                let v = v.as_u64().unwrap_or(0);
                if v > 0 {
                    *out.entry(k.clone()).or_insert(0) += v;
                }
            }
        }
    }
    out
}

/// The time now, as seconds since the epoch: the clock of `ping -D`'s timestamps.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// One echo reply of a [`PingStream`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reply {
    /// icmp_seq (from 1).
    pub seq: u32,
    /// When it arrived ([`unix_now`]'s clock).
    pub at: f64,
    /// When its request left: `at` less the round-trip time.
    pub sent: f64,
}

/// The lab's pinger (`testkit/python/mifsec_testkit.py ping`, shared with the benchmark):
/// echo requests every 10 ms on a fixed schedule from a namespace, each reply written as it
/// comes into a file that is read while it runs. (iputils' `ping -i 0.01` sends about 60
/// a second here, not 100.)
#[derive(Debug)]
pub struct PingStream {
    child: Child,
    path: PathBuf,
}

/// What a [`PingStream`] saw.
#[derive(Debug, Clone)]
pub struct PingReport {
    /// Requests sent.
    pub transmitted: u32,
    /// Replies, in order of arrival (each seq once).
    pub replies: Vec<Reply>,
    /// Requests before the last one answered that got no reply.
    pub lost: u32,
    /// Requests after the last one answered (in flight when the stream stopped, or lost
    /// for good if the tunnel never came back).
    pub unanswered_tail: u32,
    /// The longest time between two consecutive replies.
    pub longest_gap: Duration,
}

impl PingStream {
    /// Starts pinging `dst` from `ns` every 10 ms for at most `limit`, output into `path`.
    pub fn start(ns: &str, dst: &str, path: &Path, limit: Duration) -> PingStream {
        let file = std::fs::File::create(path).expect("creating the ping output");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("python/mifsec_testkit.py");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "python3"])
            .arg(script)
            .args(["ping", dst, "0.01"])
            .arg(limit.as_secs().max(1).to_string())
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the pinger");
        PingStream {
            child,
            path: path.to_owned(),
        }
    }

    /// Its output so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    /// The replies so far.
    pub fn replies(&self) -> Vec<Reply> {
        parse_replies(&self.output())
    }

    /// Waits until `n` replies have come.
    pub fn wait_replies(&self, n: usize, timeout: Duration) {
        poll(
            timeout,
            Duration::from_millis(10),
            || {
                let r = self.replies().len();
                if r >= n { Ok(()) } else { Err(r) }
            },
            |r| format!("{r} ping replies, not {n}: {}", self.output()),
        );
    }

    /// The first reply to a request sent after `t` ([`unix_now`]), if one has come.
    pub fn answered_after(&self, t: f64) -> Option<Reply> {
        self.replies().into_iter().find(|r| r.sent > t)
    }

    /// Waits up to `timeout` for a reply to a request sent after `t`; returns it.
    pub fn wait_answered_after(&self, t: f64, timeout: Duration) -> Option<Reply> {
        let end = std::time::Instant::now() + timeout;
        loop {
            if let Some(r) = self.answered_after(t) {
                return Some(r);
            }
            if std::time::Instant::now() >= end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops it (SIGINT: the pinger writes how many it sent) and reports what it saw.
    pub fn stop(mut self) -> PingReport {
        if self.child.try_wait().expect("pinger").is_none() {
            let pid = libc::pid_t::try_from(self.child.id()).expect("a pid");
            // SAFETY: kill(2) on our own child, not yet reaped (try_wait said it runs), so
            // the pid is still ours. `ip netns exec` execs python3 in its place.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let _ = self.child.wait();
        report(&self.output())
    }
}

impl Drop for PingStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The replies in a pinger's output (`reply SEQ SENT ARRIVED` lines), in order of arrival.
pub fn parse_replies(out: &str) -> Vec<Reply> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            if f.next()? != "reply" {
                return None;
            }
            let seq = f.next()?.parse().ok()?;
            let sent = f.next()?.parse().ok()?;
            let at = f.next()?.parse().ok()?;
            Some(Reply { seq, at, sent })
        })
        .collect()
}

/// The report of a finished pinger's output.
pub fn report(out: &str) -> PingReport {
    let replies = parse_replies(out);
    let last = replies.iter().map(|r| r.seq).max().unwrap_or(0);
    let transmitted = out
        .lines()
        .find_map(|l| l.strip_prefix("sent ")?.parse().ok())
        .unwrap_or(last);
    let answered = u32::try_from(replies.len()).unwrap_or(u32::MAX);
    let longest_gap = replies
        .windows(2)
        .map(|w| w[1].at - w[0].at)
        .fold(0.0, f64::max);
    PingReport {
        transmitted,
        lost: last.saturating_sub(answered),
        unanswered_tail: transmitted.saturating_sub(last),
        longest_gap: Duration::from_secs_f64(longest_gap.max(0.0)),
        replies,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ping_run_with_a_gap() {
        let out = "reply 1 1000.000000 1000.000100\n\
            reply 2 1000.010000 1000.010100\n\
            reply 6 1000.050000 1000.050500\n\
            reply 7 1000.060000 1000.060100\n\
            sent 8\n";
        let r = report(out);
        assert_eq!(r.transmitted, 8);
        assert_eq!(r.replies.len(), 4);
        assert_eq!(r.lost, 3);
        assert_eq!(r.unanswered_tail, 1);
        assert_eq!(r.longest_gap.as_micros(), 40_400);
        assert!((r.replies[2].sent - 1000.050).abs() < 1e-9);
    }
}
