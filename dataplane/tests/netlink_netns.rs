//! rtnetlink against the real kernel. The interface monitor: two fresh network namespaces A
//! and B joined by a veth pair (`nla` in A, 198.18.103.0/24 and fd00:103::/64), the monitor in
//! A, addresses added and deleted and the link set down and up with `ip`. The requests
//! (`netlink::Requests`, `iproute::Change` and `Queue`): a veth device in a fresh namespace,
//! each kind of change made and undone, and verified by netlink dumps (the monitor's for links
//! and addresses, the route dump for routes), never by `ip`'s output; and the errors named.
//!
//! Needs root (CAP_NET_ADMIN, `ip netns`). Without root these tests FAIL on purpose;
//! `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` reports them as ignored.
#![cfg(target_os = "linux")]

use mifsec_testkit::{Netns, ip, require_root, unique_suffix, veth, wait_until};

use std::net::IpAddr;
use std::time::Duration;

use mifsec_dataplane::iproute::{self, IpError};
use mifsec_dataplane::netlink::{Change, IfAddr, Monitor, RequestError, Requests, Route};
use mifsec_dataplane::sa_table::Prefix;

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

/// A fresh namespace with a device `nlr0` (down, no address) and a request socket in it.
struct ReqLab {
    ns: Netns,
    req: Requests,
    index: u32,
}

impl ReqLab {
    fn new() -> ReqLab {
        require_root();
        let ns = Netns::new(format!("mifsec-nlr-{}", unique_suffix()));
        // A veth pair in the one namespace (no dummy module here): nlr0 has carrier once
        // both ends are up.
        ip(&[
            "-n", &ns.name, "link", "add", "nlr0", "type", "veth", "peer", "name", "nlr1",
        ]);
        ip(&["-n", &ns.name, "link", "set", "nlr1", "up"]);
        let mut req = ns.run(|| Requests::open().expect("open a request socket"));
        let link = req.link("nlr0").expect("nlr0 exists");
        assert!(!link.up, "{link:?}");
        ReqLab {
            index: link.index,
            ns,
            req,
        }
    }

    /// The device as a fresh monitor's dump lists it.
    fn dumped(&self) -> mifsec_dataplane::netlink::Link {
        let mon = self.ns.run(|| Monitor::open().expect("open the monitor"));
        mon.snapshot()
            .links
            .get(&self.index)
            .expect("the dump lists nlr0")
            .clone()
    }

    /// The routes into the device, as the route dump lists them.
    fn routes(&mut self) -> Vec<Route> {
        let index = self.index;
        let mut r = self.req.routes().expect("dump routes");
        r.retain(|r| r.oif == Some(index) && r.table == 254);
        r
    }

    fn apply(&mut self, c: iproute::Change) -> Result<(), RequestError> {
        c.apply_with(&mut self.req)
    }
}

fn prefix(s: &str) -> Prefix {
    s.parse().unwrap()
}

#[test]
fn requests_change_links_addresses_and_routes_and_undo_them() {
    use iproute::Change as C;
    let mut lab = ReqLab::new();
    let dev = || "nlr0".to_owned();

    // The link: up, with an MTU.
    lab.apply(C::SetLinkUp {
        dev: dev(),
        mtu: Some(1400),
    })
    .expect("set nlr0 up");
    let link = lab.req.link("nlr0").unwrap();
    assert!(link.up && link.lower_up, "{link:?}");
    assert_eq!(link.mtu, Some(1400));
    assert!(lab.dumped().up, "the monitor's dump has nlr0 up");

    // Addresses: one with its prefix (and the kernel's prefix route), host ones (IPv6
    // without DAD: usable at once, so the monitor lists it), each added twice (replace).
    let net = ifaddr("10.0.0.1", 24);
    let v4 = ifaddr("10.1.0.2", 32);
    let v6 = ifaddr("fd00:1::2", 128);
    for _ in 0..2 {
        lab.apply(C::AddPrefixAddress {
            addr: prefix("10.0.0.1/24"),
            dev: dev(),
        })
        .expect("add 10.0.0.1/24");
        for a in [v4, v6] {
            lab.apply(C::AddAddress {
                addr: a.addr,
                dev: dev(),
            })
            .expect("add a host address");
        }
    }
    let addrs = lab.dumped().addrs;
    for a in [net, v4, v6] {
        assert!(addrs.contains(&a), "{a:?} in {addrs:?}");
    }
    assert!(
        lab.routes().iter().any(|r| r.dst == prefix("10.0.0.0/24")),
        "the prefix route: {:?}",
        lab.routes()
    );

    // Routes, IPv4 from a source and IPv6; replaced by one without a source.
    lab.apply(C::AddRoute {
        prefix: prefix("10.88.0.0/16"),
        dev: dev(),
        src: Some(v4.addr),
    })
    .expect("add route 10.88.0.0/16");
    lab.apply(C::AddRoute {
        prefix: prefix("fd00:88::/32"),
        dev: dev(),
        src: None,
    })
    .expect("add route fd00:88::/32");
    let routes = lab.routes();
    let r88 = routes
        .iter()
        .find(|r| r.dst == prefix("10.88.0.0/16"))
        .unwrap_or_else(|| panic!("10.88.0.0/16 in {routes:?}"));
    assert_eq!((r88.prefsrc, r88.kind), (Some(v4.addr), 1));
    assert!(
        routes.iter().any(|r| r.dst == prefix("fd00:88::/32")),
        "{routes:?}"
    );
    lab.apply(C::AddRoute {
        prefix: prefix("10.88.0.0/16"),
        dev: dev(),
        src: None,
    })
    .expect("replace route 10.88.0.0/16");
    let r88: Vec<Route> = lab
        .routes()
        .into_iter()
        .filter(|r| r.dst == prefix("10.88.0.0/16"))
        .collect();
    assert_eq!(r88.len(), 1, "replaced, not added: {r88:?}");
    assert_eq!(r88[0].prefsrc, None);

    // Undone: routes, then addresses.
    for p in ["10.88.0.0/16", "fd00:88::/32"] {
        lab.apply(C::DelRoute {
            prefix: prefix(p),
            dev: dev(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    let routes = lab.routes();
    assert!(
        !routes
            .iter()
            .any(|r| r.dst == prefix("10.88.0.0/16") || r.dst == prefix("fd00:88::/32")),
        "{routes:?}"
    );
    for a in [v4, v6] {
        lab.apply(C::DelAddress {
            addr: a.addr,
            dev: dev(),
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    lab.req
        .del_address(prefix("10.0.0.1/24"), "nlr0")
        .expect("delete 10.0.0.1/24");
    let addrs = lab.dumped().addrs;
    for a in [net, v4, v6] {
        assert!(!addrs.contains(&a), "{a:?} gone from {addrs:?}");
    }
    assert!(
        !lab.routes().iter().any(|r| r.dst == prefix("10.0.0.0/24")),
        "the prefix route went with its address"
    );

    // Undone twice: what is not there is an error, named.
    let e = lab
        .apply(C::DelRoute {
            prefix: prefix("10.88.0.0/16"),
            dev: dev(),
        })
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::ESRCH), "{e}");
    assert!(
        e.to_string()
            .starts_with("delete route 10.88.0.0/16 dev nlr0: No such process"),
        "{e}"
    );
    let e = lab
        .apply(C::DelAddress {
            addr: v4.addr,
            dev: dev(),
        })
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::EADDRNOTAVAIL), "{e}");
    assert!(
        e.to_string()
            .starts_with("delete address 10.1.0.2/32 on nlr0: Cannot assign requested address"),
        "{e}"
    );

    // And the link down again.
    lab.req
        .set_link("nlr0", Some(false), None)
        .expect("set down");
    assert!(!lab.req.link("nlr0").unwrap().up);
    assert!(!lab.dumped().up);
}

#[test]
fn request_errors_name_the_operation_the_object_and_the_kernels_reason() {
    use iproute::Change as C;
    let mut lab = ReqLab::new();
    let no = || "nosuch0".to_owned();
    let cases = [
        (
            C::AddAddress {
                addr: "10.1.0.2".parse().unwrap(),
                dev: no(),
            },
            "add address 10.1.0.2/32 on nosuch0: no device named nosuch0",
        ),
        (
            C::AddRoute {
                prefix: prefix("10.88.0.0/16"),
                dev: no(),
                src: None,
            },
            "add route 10.88.0.0/16 dev nosuch0: no device named nosuch0",
        ),
        (
            C::SetLinkUp {
                dev: no(),
                mtu: Some(1400),
            },
            "set nosuch0 up mtu 1400: no device named nosuch0",
        ),
    ];
    for (c, want) in cases {
        let e = lab.apply(c).unwrap_err();
        assert!(matches!(e, RequestError::NoDevice { .. }), "{e:?}");
        assert_eq!(e.errno(), Some(libc::ENODEV));
        assert_eq!(e.to_string(), want);
    }
    // The same through `Change::apply` (its own socket, in the namespace of the thread).
    let e = lab.ns.run(|| {
        C::DelAddress {
            addr: "10.1.0.2".parse().unwrap(),
            dev: no(),
        }
        .apply()
        .unwrap_err()
    });
    assert_eq!(
        e.to_string(),
        "delete address 10.1.0.2/32 on nosuch0: no device named nosuch0"
    );

    // The kernel's own reason (its extended ack) when it gives one: host bits in a route.
    let e = lab
        .apply(C::AddRoute {
            prefix: prefix("10.88.0.1/16"),
            dev: "nlr0".into(),
            src: None,
        })
        .unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    match &e {
        RequestError::Refused {
            message: Some(m), ..
        } => assert!(m.contains("prefix"), "{e}"),
        e => panic!("the kernel explains: {e:?}"),
    }
    assert!(
        e.to_string()
            .starts_with("add route 10.88.0.1/16 dev nlr0: Invalid argument: "),
        "{e}"
    );
    // An MTU the device refuses.
    let e = lab.req.set_link("nlr0", None, Some(10)).unwrap_err();
    assert_eq!(e.errno(), Some(libc::EINVAL), "{e}");
    assert!(e.to_string().starts_with("set nlr0 mtu 10: "), "{e}");
}

#[test]
fn a_queue_started_in_a_namespace_makes_its_changes_there_in_order() {
    use iproute::Change as C;
    let mut lab = ReqLab::new();
    lab.req.set_link("nlr0", Some(true), None).unwrap();
    let (tx, rx) = crossbeam_channel::unbounded();
    let q = lab.ns.run(|| {
        iproute::Queue::start("test-nl-queue", 2, move |e: IpError| {
            let _ = tx.send(e.to_string());
        })
        .expect("start the queue")
    });
    let dev = || "nlr0".to_owned();
    let vip: IpAddr = "10.1.0.9".parse().unwrap();
    // The route's source needs the address first: the order is kept.
    q.push(C::AddAddress {
        addr: vip,
        dev: dev(),
    })
    .unwrap();
    q.push(C::AddRoute {
        prefix: prefix("10.99.0.0/16"),
        dev: dev(),
        src: Some(vip),
    })
    .unwrap();
    q.push(C::DelRoute {
        prefix: prefix("10.98.0.0/16"),
        dev: dev(),
    })
    .unwrap();
    drop(q); // drains
    let errs: Vec<String> = rx.try_iter().collect();
    assert_eq!(
        errs,
        vec!["delete route 10.98.0.0/16 dev nlr0: No such process"]
    );
    assert!(lab.dumped().addrs.contains(&ifaddr("10.1.0.9", 32)));
    let routes = lab.routes();
    assert!(
        routes
            .iter()
            .any(|r| r.dst == prefix("10.99.0.0/16") && r.prefsrc == Some(vip)),
        "{routes:?}"
    );
}
