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

use crate::cmd::{exec_in, ip, run, text};
pub use crate::link::{Link, PREFIX};
use crate::link::{blackhole_route, forward, wait_carries};
use crate::netns::Netns;
use crate::swan::{Lab, PSK};
use crate::template::{MIFSEC_MIF_CLIENT, MIFSEC_MIF_GATEWAY};
use crate::wait::{WAIT, poll};

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
                l.attach(end, &mid);
            }
        }
        forward(&mid);
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
            for l in side.links() {
                l.source_route(mif.ns(side), side.routes());
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
        side.links()[i].delete_address(self.ns(side));
    }

    /// Gives the address of link `i` of `side` back, with its routes.
    pub fn restore_address(&self, side: Side, i: usize) {
        side.links()[i].restore_address(self.ns(side), side.routes());
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
        blackhole_route(&self.mid_ns, addr, on);
        let verb = if on { "add" } else { "del" };
        let host = format!("{addr}/32");
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
        side.links()[i].packets(self.ns(side), dir)
    }

    /// Waits until link `i` of `side` sends at least `n` packets within 200 ms while the
    /// other link sends fewer; panics with `what` and both statuses after [`WAIT`].
    pub fn wait_link_carries(&self, side: Side, i: usize, n: u64, what: &str) {
        wait_carries(self.ns(side), side.links(), i, n, what, || self.dump());
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

    /// Like [`MifLab::start_pair`] with `gw_child` lines added to the gateway's child, and
    /// waits until both sides have `children` installed children; returns the client's
    /// status.
    pub fn start_pair_with(
        &mut self,
        children: usize,
        conn: &str,
        child: &str,
        gw_conn: &str,
        gw_child: &str,
    ) -> Value {
        let gw = self.gateway_config(gw_conn, gw_child);
        let cl = self.client_config(children, conn, child);
        let gw_ns = self.gw_ns.clone();
        let cl_ns = self.cl_ns.clone();
        self.start_mifsec("gw", &gw_ns, &gw);
        self.start_mifsec("cl", &cl_ns, &cl);
        self.wait_children("gw", children);
        self.wait_children("cl", children)
    }

    /// Runs `mifsec ctl mif mif ARGS` on the client (connection `mif` of [`client_config`]);
    /// panics with its output and [`MifLab::dump`] unless it succeeds; returns its output.
    pub fn ctl_mif(&self, args: &[&str]) -> String {
        let mut all = vec!["ctl", "mif", "mif"];
        all.extend_from_slice(args);
        let out = self.mifsec("cl", &all);
        let said = text(&out);
        assert!(
            out.status.success(),
            "mifsec {}: {said}\n{}",
            all.join(" "),
            self.dump()
        );
        said
    }

    /// Three pings from the client through child `i` (from [`client_inner`] to
    /// [`gateway_inner`]): whether they were answered, and ping's output.
    pub fn ping(&self, i: usize) -> (bool, String) {
        let (src, dst) = (client_inner(i), gateway_inner(i));
        exec_in(
            &self.cl_ns,
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "-I", &src, &dst],
        )
    }

    /// Pings through child 0 (panics unless answered) and asserts that the client's engine
    /// sent it from `addr` and nothing from `not` meanwhile.
    pub fn assert_sends_only_from(&self, addr: &str, not: &str, what: &str) {
        let st0 = self.status_json("cl");
        let (ok, out) = self.ping(0);
        assert!(ok, "{what}: ping through child 0: {out}\n{}", self.dump());
        let st1 = self.status_json("cl");
        assert_eq!(
            tx_from(&st1, not),
            tx_from(&st0, not),
            "{what}: nothing from {not} any more\n{}",
            self.dump()
        );
        assert!(
            tx_from(&st1, addr) > tx_from(&st0, addr),
            "{what}: the ping went from {addr}\n{}",
            self.dump()
        );
    }

    /// Waits until `side` has `children` installed children, each with exactly the MIF
    /// paths `want` ([`path_names`]), no soft handover pending and at least one path up;
    /// returns the status.
    pub fn wait_paths(&self, side: &str, children: usize, want: &[String], what: &str) -> Value {
        poll(
            WAIT,
            Duration::from_millis(50),
            || {
                let st = self.status_json(side);
                let names = path_names(&st);
                let settled = installed(&st["ike_sas"][0]).iter().all(|c| {
                    c["mif"]["handover_pending"] == false
                        && c["mif"]["paths"]
                            .as_array()
                            .is_some_and(|ps| ps.iter().any(|p| p["state"] == "up"))
                });
                if names.len() == children && names.iter().all(|n| n == want) && settled {
                    Ok(st)
                } else {
                    Err(names)
                }
            },
            |names| {
                format!(
                    "{what}: {side}'s children have paths {names:?}, not {want:?} (all settled, one up)\n{}",
                    self.dump()
                )
            },
        )
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

/// The IKE SAs of a status.
pub fn ike_sas(st: &Value) -> Vec<Value> {
    st["ike_sas"].as_array().cloned().unwrap_or_default()
}

/// The installed children of an IKE SA's status.
pub fn installed(ike: &Value) -> Vec<Value> {
    ike["children"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["state"] == "INSTALLED")
        .cloned()
        .collect()
}

/// Our interface ID of interface `name` in an IKE SA's status; panics if not announced.
pub fn our_id(ike: &Value, name: &str) -> u64 {
    ike["mif"]["local_interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["name"] == name)
        .and_then(|i| i["id"].as_u64())
        .unwrap_or_else(|| panic!("no announced interface {name}: {ike:#}"))
}

/// The peer's interface IDs in an IKE SA's status, in its order.
pub fn peer_ids(ike: &Value) -> Vec<u64> {
    ike["mif"]["peer_interfaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["id"].as_u64())
        .collect()
}

/// The MIF path names of every installed child of the first IKE SA, child by child.
pub fn path_names(st: &Value) -> Vec<Vec<String>> {
    installed(&st["ike_sas"][0])
        .iter()
        .map(|c| {
            c["mif"]["paths"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str().map(str::to_owned))
                .collect()
        })
        .collect()
}

/// The path names `i<i>r<r>` for every i of `ours` (the initiator's interface IDs) and r
/// of `theirs`, in PROTOCOL 4.2's order.
pub fn pairs(ours: &[u64], theirs: &[u64]) -> Vec<String> {
    ours.iter()
        .flat_map(|i| theirs.iter().map(move |r| format!("i{i}r{r}")))
        .collect()
}

/// Packets the engine sent on paths named `path`, over every SA of a status.
pub fn tx_on_path(st: &Value, path: &str) -> u64 {
    sa_paths(st)
        .filter(|(_, p)| p["name"] == path)
        .map(|(_, p)| p["tx_packets"].as_u64().unwrap_or(0))
        .sum()
}

/// Packets the engine sent for SA `name` on paths whose local address is `addr`.
pub fn tx_from_sa(st: &Value, name: &str, addr: &str) -> u64 {
    sa_paths(st)
        .filter(|(n, p)| *n == name && local_is(p, addr))
        .map(|(_, p)| p["tx_packets"].as_u64().unwrap_or(0))
        .sum()
}

/// /proc/loadavg, for the figures the tests print.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
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
    now["sas"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|sa| sa["name"].as_str())
        .filter(|n| tx_from_sa(now, n, addr) > tx_from_sa(before, n, addr))
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
