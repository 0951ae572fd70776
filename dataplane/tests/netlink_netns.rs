//! The rtnetlink interface monitor against the real kernel: two fresh network namespaces A
//! and B joined by a veth pair (`nla` in A, 198.18.103.0/24 and fd00:103::/64), the monitor in
//! A, addresses added and deleted and the link set down and up with `ip`.
//!
//! Needs root (CAP_NET_ADMIN, `ip netns`). Without root these tests FAIL on purpose;
//! `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` reports them as ignored.
#![cfg(target_os = "linux")]

use mifsec_testkit::{Netns, ip, require_root, unique_suffix, veth, wait_until};

use std::net::IpAddr;
use std::time::Duration;

use mifsec_dataplane::netlink::{Change, IfAddr, Monitor};

/// A failure timeout only (generous for a loaded machine): nothing waits for it to pass.
const TIMEOUT: Duration = Duration::from_secs(10);

struct Lab {
    a: Netns,
    _b: Netns,
    mon: Monitor,
    seen: Vec<Change>,
    index: u32,
}

fn ifaddr(s: &str, prefix_len: u8) -> IfAddr {
    IfAddr {
        addr: s.parse::<IpAddr>().unwrap(),
        prefix_len,
    }
}

impl Lab {
    /// A and B joined by veth `nla`/`nlb` (B's end up, A's end down, no address), and a monitor
    /// opened in A.
    fn new() -> Lab {
        require_root();
        let seq = unique_suffix();
        let a = Netns::new(format!("mifsec-nl-{seq}-a"));
        let b = Netns::new(format!("mifsec-nl-{seq}-b"));
        veth(&a.name, "nla", &b.name, "nlb");
        ip(&["-n", &b.name, "link", "set", "nlb", "up"]);
        let mon = a.run(|| Monitor::open().expect("open the monitor"));
        let link = mon
            .snapshot()
            .by_name("nla")
            .expect("the dump lists veth a")
            .clone();
        assert!(!link.up, "a is down before it is set up: {link:?}");
        assert!(link.addrs.is_empty(), "{link:?}");
        let index = link.index;
        Lab {
            a,
            _b: b,
            mon,
            seen: Vec::new(),
            index,
        }
    }

    /// Polls the monitor until it has reported `want` (among others).
    fn expect(&mut self, want: Change) {
        let Lab { mon, seen, .. } = self;
        wait_until(TIMEOUT, &format!("the monitor to report {want:?}"), || {
            mon.poll(seen).expect("poll the monitor");
            seen.contains(&want)
        });
        assert_eq!(mon.counters().parse_errors, 0);
        self.seen.clear();
    }

    fn ip_a(&self, args: &[&str]) {
        let mut all = vec!["-n", &self.a.name];
        all.extend_from_slice(args);
        ip(&all);
    }
}

#[test]
fn monitor_reports_address_and_link_changes() {
    let mut lab = Lab::new();
    let index = lab.index;
    let v4 = ifaddr("198.18.103.1", 24);

    lab.ip_a(&["addr", "add", "198.18.103.1/24", "dev", "nla"]);
    lab.expect(Change::AddrAdded { index, addr: v4 });
    assert!(lab.mon.snapshot().links[&index].addrs.contains(&v4));

    lab.ip_a(&["link", "set", "nla", "up"]);
    lab.expect(Change::LinkUp {
        index,
        name: "nla".into(),
    });

    lab.ip_a(&["route", "add", "198.18.105.0/24", "dev", "nla"]);
    lab.expect(Change::RoutesChanged);
    assert!(lab.mon.counters().route_events >= 1);

    lab.ip_a(&["link", "set", "nla", "down"]);
    lab.expect(Change::LinkDown {
        index,
        name: "nla".into(),
    });
    lab.ip_a(&["link", "set", "nla", "up"]);
    lab.expect(Change::LinkUp {
        index,
        name: "nla".into(),
    });

    lab.ip_a(&["addr", "del", "198.18.103.1/24", "dev", "nla"]);
    lab.expect(Change::AddrRemoved { index, addr: v4 });
    assert!(!lab.mon.snapshot().links[&index].addrs.contains(&v4));

    // A fresh dump agrees with what the events built: no address or link change.
    let before = lab.mon.snapshot().clone();
    let mut out = Vec::new();
    lab.mon.resync(&mut out).expect("resync");
    let resynced = lab.mon.snapshot();
    assert_eq!(
        before.links[&index].addrs, resynced.links[&index].addrs,
        "events and dump agree on a's addresses"
    );
    assert!(resynced.links[&index].up);
    assert_eq!(lab.mon.counters().resyncs, 1);
}

#[test]
fn tentative_and_dad_failed_ipv6_addresses_are_not_reported() {
    let mut lab = Lab::new();
    let index = lab.index;
    lab.ip_a(&["link", "set", "nla", "up"]);
    lab.expect(Change::LinkUp {
        index,
        name: "nla".into(),
    });

    // DAD (about a second) succeeds: the address is reported only once it is usable.
    let ok = ifaddr("fd00:103::1", 64);
    lab.ip_a(&["-6", "addr", "add", "fd00:103::1/64", "dev", "nla"]);
    lab.mon.poll(&mut lab.seen).expect("poll");
    let listed = lab.a.exec(&["ip", "-6", "addr", "show", "dev", "nla"]);
    // DAD lasts a second: the monitor was polled above while the address was tentative.
    assert!(
        listed.contains("fd00:103::1/64 scope global tentative"),
        "{listed}"
    );
    assert!(
        !lab.mon.snapshot().links[&index].addrs.contains(&ok),
        "a tentative address is not in the snapshot"
    );
    lab.expect(Change::AddrAdded { index, addr: ok });

    // B holds fd00:103::2 already: A's DAD fails, and the monitor never lists it.
    let dup = ifaddr("fd00:103::2", 64);
    ip(&[
        "-n",
        &lab._b.name,
        "-6",
        "addr",
        "add",
        "fd00:103::2/64",
        "dev",
        "nlb",
        "nodad",
    ]);
    lab.ip_a(&["-6", "addr", "add", "fd00:103::2/64", "dev", "nla"]);
    let a = &lab.a;
    wait_until(TIMEOUT, "A's DAD to fail for fd00:103::2", || {
        a.exec(&["ip", "-6", "addr", "show", "dev", "nla"])
            .contains("dadfailed")
    });
    lab.mon.poll(&mut lab.seen).expect("poll");
    assert!(
        !lab.mon.snapshot().links[&index].addrs.contains(&dup),
        "a DAD-failed address is not in the snapshot"
    );
    assert!(
        !lab.seen.contains(&Change::AddrAdded { index, addr: dup }),
        "{:?}",
        lab.seen
    );
    assert!(lab.mon.snapshot().links[&index].addrs.contains(&ok));
    assert_eq!(lab.mon.counters().parse_errors, 0);
}

#[test]
fn events_lost_to_enobufs_are_recovered_by_a_fresh_dump() {
    const N: usize = 200;
    let mut lab = Lab::new();
    let index = lab.index;
    lab.mon
        .set_event_buffer(1)
        .expect("shrink the event buffer");
    // N addresses added while the monitor does not read: the small buffer overflows.
    let batch: String = (0..N)
        .map(|i| {
            format!(
                "addr add 198.18.{}.{}/32 dev nla\n",
                104 + i / 250,
                1 + i % 250
            )
        })
        .collect();
    let path = std::env::temp_dir().join(format!("mifsec-nl-batch-{}", unique_suffix()));
    std::fs::write(&path, batch).expect("write the batch");
    lab.ip_a(&["-batch", path.to_str().unwrap()]);
    let _ = std::fs::remove_file(&path);
    let Lab { mon, seen, .. } = &mut lab;
    wait_until(TIMEOUT, "the monitor to list every address", || {
        mon.poll(seen).expect("poll the monitor");
        mon.snapshot().links[&index].addrs.len() == N
    });
    assert!(
        mon.counters().resyncs >= 1,
        "the events overflowed: {:?}",
        mon.counters()
    );
    let added = seen
        .iter()
        .filter(|c| matches!(c, Change::AddrAdded { .. }))
        .count();
    assert_eq!(
        added, N,
        "each address reported once, by event or by the resync"
    );
    assert_eq!(mon.counters().parse_errors, 0);
}
