//! The multi-interface lab (issue 11): two mifsec peers, two links on each side, every
//! (client address, gateway address) pair reachable through a middle router, so that the
//! m x n = 4 paths of a child SA exist; optional per-link shaping (tbf), silent blackholes
//! of a link in the middle, address deletion; and the configurations of N child SAs on one
//! IKE SA ([`client_config`], [`gateway_config`]).
//!
//! ```text
//!  client                                  mid                                  gateway
//!  c1 198.18.33.2/24 ── 198.18.33.1 m1 ┐         ┌ n1 198.18.41.1 ── 198.18.41.2/24 g1
//!                                      ├─ fwd ───┤
//!  c2 198.18.34.2/24 ── 198.18.34.1 m2 ┘         └ n2 198.18.42.1 ── 198.18.42.2/24 g2
//!  10.50.i.1/32 on lo (child i's inner address)           10.60.i.1/32 on lo
//! ```
//!
//! Each end routes the other side's networks (client: 198.18.40.0/21, gateway:
//! 198.18.32.0/21) through both of its links (link 1 with metric 100, link 2 with 200), and
//! a packet from a link's address always leaves on that link (a rule per address, tables
//! 101 and 102), so every pair (c_i, g_j) is a path of its own: the link it leaves on is the
//! one its source address is on, the link it arrives on is the one its destination is on.
//! A failure in the middle ([`MifLab::blackhole`]: a blackhole route to the address and a
//! blackhole rule for packets from it) sends no link or address event to either end.
//!
//! [`MifLab`] derefs to the interop [`Lab`] (namespaces, daemons, logs, status), so
//! everything of `swan` works here; the sides are `"cl"` and `"gw"`.

use std::ops::{Deref, DerefMut};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::cmd::{ip, run, text};
use crate::netns::{Netns, addr_up, veth};
use crate::swan::{Lab, PSK};
use crate::template::{MIFSEC_MIF_CLIENT, MIFSEC_MIF_GATEWAY};
use crate::wait::{WAIT, poll};

/// One link of one side.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// The end's device (also its `[interfaces.NAME]` in the configurations).
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

/// The client's links.
pub const CLIENT_LINKS: [Link; 2] = [
    Link {
        dev: "c1",
        addr: "198.18.33.2",
        mid_dev: "m1",
        mid_addr: "198.18.33.1",
        metric: "100",
        table: "101",
    },
    Link {
        dev: "c2",
        addr: "198.18.34.2",
        mid_dev: "m2",
        mid_addr: "198.18.34.1",
        metric: "200",
        table: "102",
    },
];

/// The gateway's links.
pub const GATEWAY_LINKS: [Link; 2] = [
    Link {
        dev: "g1",
        addr: "198.18.41.2",
        mid_dev: "n1",
        mid_addr: "198.18.41.1",
        metric: "100",
        table: "101",
    },
    Link {
        dev: "g2",
        addr: "198.18.42.2",
        mid_dev: "n2",
        mid_addr: "198.18.42.1",
        metric: "200",
        table: "102",
    },
];

/// The prefix length of every link address.
pub const PREFIX: &str = "24";
/// What the client routes through its links (both gateway networks).
pub const CLIENT_ROUTES: &str = "198.18.40.0/21";
/// What the gateway routes through its links (both client networks).
pub const GATEWAY_ROUTES: &str = "198.18.32.0/21";
/// The most child SAs [`client_config`] makes (child i's inner addresses use octet i).
pub const MAX_CHILDREN: usize = 250;

/// One side of the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Gateway,
}

impl Side {
    /// Its links.
    pub fn links(self) -> &'static [Link; 2] {
        match self {
            Side::Client => &CLIENT_LINKS,
            Side::Gateway => &GATEWAY_LINKS,
        }
    }

    /// The name of its daemon in the [`Lab`] (`"cl"`, `"gw"`).
    pub fn name(self) -> &'static str {
        match self {
            Side::Client => "cl",
            Side::Gateway => "gw",
        }
    }

    fn routes(self) -> &'static str {
        match self {
            Side::Client => CLIENT_ROUTES,
            Side::Gateway => GATEWAY_ROUTES,
        }
    }
}

/// Child `i`'s inner address on the client (`10.50.i.1`).
pub fn client_inner(i: usize) -> String {
    format!("10.50.{i}.1")
}

/// Child `i`'s inner address on the gateway (`10.60.i.1`).
pub fn gateway_inner(i: usize) -> String {
    format!("10.60.{i}.1")
}

/// The lab: client, middle and gateway namespaces; removed on drop with the daemons of the
/// [`Lab`] it holds.
#[derive(Debug)]
pub struct MifLab {
    pub lab: Lab,
    pub mid_ns: String,
}

impl Deref for MifLab {
    type Target = Lab;
    fn deref(&self) -> &Lab {
        &self.lab
    }
}

impl DerefMut for MifLab {
    fn deref_mut(&mut self) -> &mut Lab {
        &mut self.lab
    }
}

impl MifLab {
    /// The lab for test `tag` (a few letters, unique among the tests), with daemons running
    /// `bin`, and the inner addresses of `children` child SAs on each end's loopback.
    pub fn new(tag: &str, bin: &str, children: usize) -> MifLab {
        assert!(children <= MAX_CHILDREN, "at most {MAX_CHILDREN} children");
        let pid = std::process::id();
        let names = ["c", "m", "g"].map(|s| format!("mfmi-{tag}-{s}{pid}"));
        let ns: Vec<Netns> = names.iter().map(|n| Netns::new(n.as_str())).collect();
        for n in &ns {
            n.lo_up();
        }
        let [cl, mid, gw] = names;
        for (end, side) in [(&cl, Side::Client), (&gw, Side::Gateway)] {
            for l in side.links() {
                veth(end, l.dev, &mid, l.mid_dev);
                addr_up(end, l.dev, &format!("{}/{PREFIX}", l.addr));
                addr_up(&mid, l.mid_dev, &format!("{}/{PREFIX}", l.mid_addr));
            }
        }
        let out = run(Command::new("ip").args([
            "netns",
            "exec",
            &mid,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]));
        assert!(out.status.success(), "ip_forward: {}", text(&out));
        // Inner addresses, many at once (`ip -batch`).
        for (end, inner) in [
            (&cl, client_inner as fn(usize) -> String),
            (&gw, gateway_inner),
        ] {
            if children == 0 {
                continue;
            }
            let batch: String = (0..children)
                .map(|i| format!("addr add {}/32 dev lo\n", inner(i)))
                .collect();
            let path = std::env::temp_dir().join(format!("mifsec-mif-{tag}-{pid}.batch"));
            std::fs::write(&path, batch).unwrap();
            ip(&["-n", end, "-batch", &path.display().to_string()]);
            let _ = std::fs::remove_file(&path);
        }
        let lab = Lab::assemble(
            &format!("mif-{tag}"),
            bin,
            cl,
            gw,
            CLIENT_LINKS[0].dev,
            GATEWAY_LINKS[0].dev,
            ns,
        );
        let mif = MifLab { lab, mid_ns: mid };
        for side in [Side::Client, Side::Gateway] {
            for (i, l) in side.links().iter().enumerate() {
                ip(&[
                    "-n",
                    mif.ns(side),
                    "rule",
                    "add",
                    "from",
                    l.addr,
                    "table",
                    l.table,
                    "priority",
                    l.table,
                ]);
                mif.route_across(side, i);
            }
        }
        mif
    }

    /// The namespace of `side`.
    pub fn ns(&self, side: Side) -> &str {
        match side {
            Side::Client => &self.cl_ns,
            Side::Gateway => &self.gw_ns,
        }
    }

    /// The routes of `side` to the other side through its link `i`: in the main table (with
    /// the link's metric) and in the link's own table (source routing).
    fn route_across(&self, side: Side, i: usize) {
        let l = &side.links()[i];
        for (key, value) in [("metric", l.metric), ("table", l.table)] {
            ip(&[
                "-n",
                self.ns(side),
                "route",
                "replace",
                side.routes(),
                "via",
                l.mid_addr,
                "dev",
                l.dev,
                key,
                value,
            ]);
        }
    }

    /// Shapes link `i` of `side` to `mbit` Mbit/s both ways, in the middle namespace (the
    /// bottleneck is in the network, not in the sender's own qdisc, which would push back on
    /// its socket): a tbf on the middle's device towards the end, and one on an IFB device
    /// that the middle's ingress from the end is redirected to.
    pub fn shape(&self, side: Side, i: usize, mbit: u32) {
        let l = &side.links()[i];
        let mid = self.mid_ns.as_str();
        let ifb = format!("ifb{}", l.mid_dev);
        // Burst: 10 ms of the rate, at least 32 KiB; up to 20 ms queued.
        let burst = (u64::from(mbit) * 1_000_000 / 8 / 100).max(32 * 1024);
        let tc = |args: &[&str]| {
            let out = run(Command::new("tc").args(["-n", mid]).args(args));
            assert!(
                out.status.success(),
                "tc {}: {}",
                args.join(" "),
                text(&out)
            );
        };
        if !run(Command::new("ip").args(["-n", mid, "link", "show", &ifb]))
            .status
            .success()
        {
            ip(&["-n", mid, "link", "add", &ifb, "type", "ifb"]);
            ip(&["-n", mid, "link", "set", &ifb, "up"]);
            tc(&[
                "qdisc", "add", "dev", l.mid_dev, "handle", "ffff:", "ingress",
            ]);
            tc(&[
                "filter", "add", "dev", l.mid_dev, "parent", "ffff:", "protocol", "all", "u32",
                "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", &ifb,
            ]);
        }
        let rate = format!("{mbit}mbit");
        let burst = burst.to_string();
        for dev in [l.mid_dev, ifb.as_str()] {
            tc(&[
                "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst,
                "latency", "20ms",
            ]);
        }
    }

    /// Deletes the address of link `i` of `side` (an explicit event: the kernel drops the
    /// routes through that link too).
    pub fn delete_address(&self, side: Side, i: usize) {
        let l = &side.links()[i];
        ip(&[
            "-n",
            self.ns(side),
            "addr",
            "del",
            &format!("{}/{PREFIX}", l.addr),
            "dev",
            l.dev,
        ]);
    }

    /// Gives the address of link `i` of `side` back, with its routes.
    pub fn restore_address(&self, side: Side, i: usize) {
        let l = &side.links()[i];
        ip(&[
            "-n",
            self.ns(side),
            "addr",
            "add",
            &format!("{}/{PREFIX}", l.addr),
            "dev",
            l.dev,
        ]);
        self.route_across(side, i);
    }

    /// Silently breaks link `i` of `side` in the middle: everything to its address and
    /// everything from it is discarded there (neither end sees a link or address event).
    pub fn blackhole(&self, side: Side, i: usize) {
        self.set_blackhole(side.links()[i].addr, true);
    }

    /// Undoes [`MifLab::blackhole`].
    pub fn unblackhole(&self, side: Side, i: usize) {
        self.set_blackhole(side.links()[i].addr, false);
    }

    fn set_blackhole(&self, addr: &str, on: bool) {
        let verb = if on { "add" } else { "del" };
        let host = format!("{addr}/32");
        ip(&["-n", &self.mid_ns, "route", verb, "blackhole", &host]);
        ip(&[
            "-n",
            &self.mid_ns,
            "rule",
            verb,
            "from",
            &host,
            "blackhole",
            "priority",
            "10",
        ]);
    }

    /// Packets sent on link `i` of `side` (its device's tx counter).
    pub fn tx_packets(&self, side: Side, i: usize) -> u64 {
        self.link_stat(side, i, "tx")
    }

    /// Packets received on link `i` of `side`.
    pub fn rx_packets(&self, side: Side, i: usize) -> u64 {
        self.link_stat(side, i, "rx")
    }

    fn link_stat(&self, side: Side, i: usize, dir: &str) -> u64 {
        let out = run(Command::new("ip").args([
            "-n",
            self.ns(side),
            "-j",
            "-s",
            "link",
            "show",
            "dev",
            side.links()[i].dev,
        ]));
        assert!(out.status.success(), "ip -s link: {}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j is JSON");
        v[0]["stats64"][dir]["packets"]
            .as_u64()
            .expect("packet counter")
    }

    /// Waits until link `i` of `side` sends at least `n` packets within 200 ms while the
    /// other link sends fewer; panics with `what` and both statuses after [`WAIT`].
    pub fn wait_link_carries(&self, side: Side, i: usize, n: u64, what: &str) {
        let other = 1 - i;
        poll(
            WAIT,
            Duration::from_millis(1),
            || {
                let (a0, b0) = (self.tx_packets(side, i), self.tx_packets(side, other));
                // Lets 200 ms of traffic pass on purpose: the counters' growth is the state.
                std::thread::sleep(Duration::from_millis(200));
                let a = self.tx_packets(side, i) - a0;
                let b = self.tx_packets(side, other) - b0;
                if a >= n && b < a { Ok(()) } else { Err((a, b)) }
            },
            |(a, b)| {
                format!(
                    "{what}: in the last 200 ms link {} sent {a}, link {} sent {b}\n{}",
                    i + 1,
                    other + 1,
                    self.dump()
                )
            },
        );
    }

    /// Both statuses and logs, for failure messages.
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for side in ["cl", "gw"] {
            if self.sock(side).exists() {
                let st = crate::mifsec_ctl(&self.bin, &self.sock(side), &["status", "--json"]);
                s.push_str(&format!(
                    "--- {side} status:\n{}\n--- {side} log:\n{}\n",
                    text(&st),
                    self.log(side)
                ));
            }
        }
        s
    }

    /// mifsec as the client: see [`client_config`].
    pub fn client_config(&self, children: usize, conn: &str, child: &str) -> String {
        client_config(
            &self.sock("cl").display().to_string(),
            children,
            conn,
            child,
        )
    }

    /// mifsec as the gateway: see [`gateway_config`].
    pub fn gateway_config(&self, conn: &str, child: &str) -> String {
        gateway_config(&self.sock("gw").display().to_string(), conn, child)
    }

    /// Starts the gateway, then the client (which initiates), and waits until the client
    /// has `children` installed children on one established IKE SA; returns its status.
    pub fn start_pair(&mut self, children: usize, conn: &str, child: &str, gw_conn: &str) -> Value {
        let gw = self.gateway_config(gw_conn, "");
        let cl = self.client_config(children, conn, child);
        let gw_ns = self.gw_ns.clone();
        let cl_ns = self.cl_ns.clone();
        self.start_mifsec("gw", &gw_ns, &gw);
        self.start_mifsec("cl", &cl_ns, &cl);
        self.wait_children("cl", children)
    }

    /// Waits until `side` has one established IKE SA with `n` installed children.
    pub fn wait_children(&self, side: &str, n: usize) -> Value {
        poll(
            WAIT,
            Duration::from_millis(200),
            || {
                let st = self.status_json(side);
                let k = installed_children(&st);
                if k == Some(n) { Ok(st) } else { Err(k) }
            },
            |k| {
                format!(
                    "{side}: {k:?} installed children on one IKE SA, not {n}\n{}",
                    self.dump()
                )
            },
        )
    }
}

/// Packets the engine sent on paths whose local address is `addr`, over every SA of a status.
pub fn tx_from(st: &Value, addr: &str) -> u64 {
    sa_paths(st)
        .filter(|(_, p)| local_is(p, addr))
        .map(|(_, p)| p["tx_packets"].as_u64().unwrap_or(0))
        .sum()
}

/// Every (SA name, path) of a status's engine SAs.
pub fn sa_paths(st: &Value) -> impl Iterator<Item = (&str, &Value)> {
    st["sas"].as_array().into_iter().flatten().flat_map(|sa| {
        let name = sa["name"].as_str().unwrap_or("");
        sa["paths"]
            .as_array()
            .into_iter()
            .flatten()
            .map(move |p| (name, p))
    })
}

/// Whether path `p` of a status has local address `addr` (any port).
pub fn local_is(p: &Value, addr: &str) -> bool {
    p["local"]
        .as_str()
        .is_some_and(|l| l.rsplit_once(':').is_some_and(|(a, _)| a == addr))
}

/// The SAs of `now` whose paths from `addr` sent more than they had in `before`.
pub fn sas_sending_from(before: &Value, now: &Value, addr: &str) -> usize {
    let tx = |st: &Value, name: &str| -> u64 {
        sa_paths(st)
            .filter(|(n, p)| *n == name && local_is(p, addr))
            .map(|(_, p)| p["tx_packets"].as_u64().unwrap_or(0))
            .sum()
    };
    now["sas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sa| sa["name"].as_str())
        .filter(|n| tx(now, n) > tx(before, n))
        .count()
}

/// The number of installed children of the only established IKE SA of a status, if there
/// is exactly one IKE SA.
pub fn installed_children(st: &Value) -> Option<usize> {
    match st["ike_sas"].as_array()?.as_slice() {
        [ike] if ike["state"] == "ESTABLISHED" => Some(
            ike["children"]
                .as_array()?
                .iter()
                .filter(|c| c["state"] == "INSTALLED")
                .count(),
        ),
        _ => None,
    }
}

/// The `[connections.mif.children.cI]` sections of `n` children: child `i` has
/// `local_ts = 10.50.i.1/32`, `remote_ts = 10.60.i.1/32`, with `extra` lines added to each.
pub fn children_sections(n: usize, extra: &str) -> String {
    assert!(n <= MAX_CHILDREN, "at most {MAX_CHILDREN} children");
    (0..n)
        .map(|i| {
            format!(
                "[connections.mif.children.c{i}]\nlocal_ts = [\"{}/32\"]\nremote_ts = [\"{}/32\"]\nesp_proposals = [\"aes128gcm16\"]\n{extra}\n",
                client_inner(i),
                gateway_inner(i)
            )
        })
        .collect()
}

/// mifsec as the client (testkit/templates/mifsec-mif-client.toml): interfaces `c1` and
/// `c2` with fixed addresses, connection `mif` to the gateway's first address, initiated at
/// start, with `children` children ([`children_sections`], `child` lines added to each) and
/// `conn` lines added to the connection.
pub fn client_config(sock: &str, children: usize, conn: &str, child: &str) -> String {
    let sections = children_sections(children, child);
    MIFSEC_MIF_CLIENT.render(&[
        ("PSK", PSK),
        ("SOCK", sock),
        ("CONN", conn),
        ("CHILDREN", sections.as_str()),
    ])
}

/// mifsec as the gateway (testkit/templates/mifsec-mif-gateway.toml): interfaces `g1` and
/// `g2`, connection `mif` on both addresses; one child `net` (10.60.0.0/16 <-> 10.50.0.0/16)
/// that each of the client's children is narrowed from; `conn` and `child` lines added.
pub fn gateway_config(sock: &str, conn: &str, child: &str) -> String {
    MIFSEC_MIF_GATEWAY.render(&[
        ("PSK", PSK),
        ("SOCK", sock),
        ("CONN", conn),
        ("CHILD", child),
    ])
}
