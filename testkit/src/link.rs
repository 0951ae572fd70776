//! Links through a middle router, as the roaming lab ([`crate::roam`]) and the
//! multi-interface lab ([`crate::mif`]) build them: an end's device, a veth to the middle
//! namespace, a route to the far side through it with a metric, and a rule that makes
//! packets from the link's address leave on that link (source routing, one table per
//! link); the link's packet counters; a silent blackhole in the middle; waiting until one
//! of two links carries the traffic.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cmd::{ip, run, text};
use crate::netns::{addr_up, veth};
use crate::wait::{WAIT, poll};

/// The prefix length of every link address of the labs.
pub const PREFIX: &str = "24";

/// One link of one end.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The end's device.
    pub dev: &'static str,
    /// The end's address on it (prefix [`PREFIX`]).
    pub addr: &'static str,
    /// The middle namespace's device at its other end.
    pub mid_dev: &'static str,
    /// The middle namespace's address there: the end's next hop.
    pub mid_addr: &'static str,
    /// The metric of the end's route to the other side through this link.
    pub metric: &'static str,
    /// The routing table (and rule priority) for packets from `addr`.
    pub table: &'static str,
}

impl Link {
    /// The veth pair between `end` and `mid`, both addresses on it, both sides up.
    pub fn attach(&self, end: &str, mid: &str) {
        veth(end, self.dev, mid, self.mid_dev);
        addr_up(end, self.dev, &format!("{}/{PREFIX}", self.addr));
        addr_up(mid, self.mid_dev, &format!("{}/{PREFIX}", self.mid_addr));
    }

    /// In `end`: the rule that sends packets from the link's address to its own table, and
    /// the routes to `far` ([`Link::route`]).
    pub fn source_route(&self, end: &str, far: &str) {
        ip(&[
            "-n", end, "rule", "add", "from", self.addr, "table", self.table, "priority",
            self.table,
        ]);
        self.route(end, far);
    }

    /// In `end`: the routes to `far` through this link, in the main table (with the
    /// link's metric) and in the link's own table.
    pub fn route(&self, end: &str, far: &str) {
        for (key, value) in [("metric", self.metric), ("table", self.table)] {
            ip(&[
                "-n",
                end,
                "route",
                "replace",
                far,
                "via",
                self.mid_addr,
                "dev",
                self.dev,
                key,
                value,
            ]);
        }
    }

    /// Deletes the end's address (an explicit event: the kernel drops the routes through
    /// the link too).
    pub fn delete_address(&self, end: &str) {
        let cidr = format!("{}/{PREFIX}", self.addr);
        ip(&["-n", end, "addr", "del", &cidr, "dev", self.dev]);
    }

    /// Gives the end's address back, with its routes to `far`.
    pub fn restore_address(&self, end: &str, far: &str) {
        let cidr = format!("{}/{PREFIX}", self.addr);
        ip(&["-n", end, "addr", "add", &cidr, "dev", self.dev]);
        self.route(end, far);
    }

    /// Packets of the end's device in `end`, `dir` `"tx"` or `"rx"`.
    pub fn packets(&self, end: &str, dir: &str) -> u64 {
        let out =
            run(Command::new("ip").args(["-n", end, "-j", "-s", "link", "show", "dev", self.dev]));
        assert!(out.status.success(), "ip -s link: {}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j is JSON");
        v[0]["stats64"][dir]["packets"]
            .as_u64()
            .expect("packet counter")
    }
}

/// Turns on forwarding in the middle namespace `mid`.
pub fn forward(mid: &str) {
    let out = run(Command::new("ip").args([
        "netns",
        "exec",
        mid,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ]));
    assert!(out.status.success(), "ip_forward: {}", text(&out));
}

/// In `mid`, a blackhole route to `addr` (`on`) or its removal.
pub fn blackhole_route(mid: &str, addr: &str, on: bool) {
    let verb = if on { "add" } else { "del" };
    ip(&["-n", mid, "route", verb, "blackhole", &format!("{addr}/32")]);
}

/// Waits until link `i` of `links` (in `end`) sends at least `n` packets within 200 ms
/// while the other link sends fewer; panics after [`WAIT`] with `what`, the last counts and
/// `dump()`.
pub fn wait_carries(
    end: &str,
    links: &[Link; 2],
    i: usize,
    n: u64,
    what: &str,
    dump: impl Fn() -> String,
) {
    let other = 1 - i;
    let tx = |k: usize| links[k].packets(end, "tx");
    poll(
        WAIT,
        Duration::from_millis(1),
        || {
            let (a0, b0) = (tx(i), tx(other));
            // Lets 200 ms of traffic pass on purpose: the counters' growth is the state.
            std::thread::sleep(Duration::from_millis(200));
            let (a, b) = (tx(i) - a0, tx(other) - b0);
            if a >= n && b < a { Ok(()) } else { Err((a, b)) }
        },
        |(a, b)| {
            format!(
                "{what}: in the last 200 ms link {} sent {a}, link {} sent {b}\n{}",
                i + 1,
                other + 1,
                dump()
            )
        },
    );
}
