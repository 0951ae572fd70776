//! Outer UDP socket tests against the real kernel: two fresh network namespaces A and B joined
//! by two veth pairs (198.18.101.0/24 and 198.18.102.0/24), one device-bound socket per veth
//! on each side.
//!
//! Needs root (CAP_NET_ADMIN, `ip netns`). Without root these tests FAIL on purpose;
//! `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` reports them as ignored.
#![cfg(target_os = "linux")]

use mifsec_testkit::{Netns, addr_up, ip, require_root, unique_suffix, veth};

use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use mifsec_dataplane::udp::{
    MAX_RECV_LEN, OuterSocket, RecvBuf, RecvScratch, SendScratch, SocketConfig, Transmit,
};

/// A failure timeout only (generous for a loaded machine): nothing waits for it to pass.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long to watch for datagrams that must not arrive.
const QUIET: Duration = Duration::from_millis(300);
const A1: Ipv4Addr = Ipv4Addr::new(198, 18, 101, 1);
const B1: Ipv4Addr = Ipv4Addr::new(198, 18, 101, 2);
const A2: Ipv4Addr = Ipv4Addr::new(198, 18, 102, 1);
const B2: Ipv4Addr = Ipv4Addr::new(198, 18, 102, 2);

// ---- namespace plumbing ------------------------------------------------------------------

/// Side `side` of lab number `seq`: a namespace (deleted on drop, its veth ends with it)
/// without IPv6 on its veths: no router solicitations or MLD reports to blur the packet
/// counters that test (b) reads.
fn side_ns(seq: &str, side: &str) -> Netns {
    let ns = Netns::new(format!("mifsec-udp-{seq}-{side}"));
    for key in [
        "net.ipv6.conf.all.disable_ipv6=1",
        "net.ipv6.conf.default.disable_ipv6=1",
    ] {
        ns.exec(&["sysctl", "-qw", key]);
    }
    ns
}

fn tx_packets(ns: &Netns, dev: &str) -> u64 {
    let path = format!("/sys/class/net/{dev}/statistics/tx_packets");
    ns.exec(&["cat", &path]).trim().parse().expect("tx_packets")
}

/// Two namespaces joined by veth pair 1 (`a1` in A, `b1` in B, 198.18.101.0/24) and veth
/// pair 2 (`a2`/`b2`, 198.18.102.0/24).
struct Lab {
    a: Netns,
    b: Netns,
    a1: String,
    a2: String,
    b1: String,
    b2: String,
}

impl Lab {
    fn new() -> Self {
        let seq = unique_suffix();
        let a = side_ns(&seq, "a");
        let b = side_ns(&seq, "b");
        // Unique, at most 15 bytes: "mu" + 5 digits of the pid + seq + side + link.
        let dev = |side: &str, link: u8| format!("mu{seq}{side}{link}");
        let (a1, a2, b1, b2) = (dev("a", 1), dev("a", 2), dev("b", 1), dev("b", 2));
        for (ad, bd, aip, bip) in [(&a1, &b1, A1, B1), (&a2, &b2, A2, B2)] {
            veth(&a.name, ad, &b.name, bd);
            addr_up(&a.name, ad, &format!("{aip}/24"));
            addr_up(&b.name, bd, &format!("{bip}/24"));
        }
        Lab {
            a,
            b,
            a1,
            a2,
            b1,
            b2,
        }
    }
}

impl Lab {
    /// One socket on each veth end, bound to its address (any port): A1, A2, B1, B2.
    fn sockets(&self) -> [OuterSocket; 4] {
        [
            bind(&self.a, &self.a1, A1, 0),
            bind(&self.a, &self.a2, A2, 0),
            bind(&self.b, &self.b1, B1, 0),
            bind(&self.b, &self.b2, B2, 0),
        ]
    }
}

/// Binds an `OuterSocket` to `addr` (port 0: any) on `device`, inside `ns`.
fn bind(ns: &Netns, device: &str, addr: Ipv4Addr, port: u16) -> OuterSocket {
    ns.run(|| {
        OuterSocket::bind(&SocketConfig {
            device: Some(device.into()),
            ..SocketConfig::new(SocketAddr::from((addr, port)))
        })
        .unwrap_or_else(|e| panic!("bind {addr}:{port} on {device}: {e}"))
    })
}

// ---- traffic --------------------------------------------------------------------------------

/// One datagram as received.
struct Got {
    data: Vec<u8>,
    src: SocketAddr,
    dst_ip: Option<IpAddr>,
}

/// A tagged datagram: `[tag, i_hi, i_lo, ...]` padded to `len`.
fn datagram(tag: u8, i: usize, len: usize) -> Vec<u8> {
    let mut d = vec![tag, (i >> 8) as u8, i as u8];
    d.extend((3..len).map(|j| (i + j) as u8));
    d
}

/// Sends `msgs` completely (retrying a partial send), or returns the first error.
fn send_all(sock: &OuterSocket, msgs: &[Transmit<'_>]) -> io::Result<()> {
    let mut scratch = SendScratch::default();
    let deadline = Instant::now() + TIMEOUT;
    let mut done = 0;
    while done < msgs.len() {
        match sock.send_batch(&mut scratch, &msgs[done..]) {
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                assert!(Instant::now() < deadline, "send timed out");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `n` tagged datagrams of `len` bytes to `dst`, in one batch.
fn send_tagged(
    sock: &OuterSocket,
    dst: SocketAddr,
    tag: u8,
    n: usize,
    len: usize,
) -> io::Result<()> {
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| datagram(tag, i, len)).collect();
    let msgs: Vec<Transmit<'_>> = bodies
        .iter()
        .map(|b| Transmit {
            dst,
            contents: b,
            segment_size: None,
        })
        .collect();
    send_all(sock, &msgs)
}

/// Receives datagrams (GRO trains split) until `want` have arrived, or until `until` when
/// `want` is None; panics if `want` is not reached in time.
fn receive(sock: &OuterSocket, want: Option<usize>, until: Duration) -> Vec<Got> {
    let mut scratch = RecvScratch::new(32);
    let mut bufs: Vec<RecvBuf> = (0..32).map(|_| RecvBuf::new(0, MAX_RECV_LEN)).collect();
    let mut out = Vec::new();
    let deadline = Instant::now() + until;
    while want.is_none_or(|w| out.len() < w) {
        match sock.recv_batch(&mut scratch, &mut bufs) {
            Ok(n) => {
                for b in &bufs[..n] {
                    for r in b.datagrams() {
                        out.push(Got {
                            data: b.data[r].to_vec(),
                            src: b.src,
                            dst_ip: b.dst_ip,
                        });
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    assert!(
                        want.is_none(),
                        "timed out with {} of {want:?} datagrams",
                        out.len()
                    );
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("recv_batch: {e}"),
        }
    }
    out
}

/// Checks that `got` is exactly datagrams 0..n of `tag`, in order, from `src` to `dst_ip`.
fn check_tagged(got: &[Got], tag: u8, n: usize, len: usize, src: SocketAddr, dst_ip: Ipv4Addr) {
    assert_eq!(got.len(), n);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g.data, datagram(tag, i, len), "datagram {i} of tag {tag}");
        assert_eq!(g.src, src);
        assert_eq!(g.dst_ip, Some(IpAddr::V4(dst_ip)));
    }
}

// ---- tests ------------------------------------------------------------------------------

/// (a) Each device-bound socket carries its own link, and receives report the local address
/// the datagram was sent to.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn device_bound_sockets_carry_their_link_and_report_dst_ip() {
    require_root();
    let lab = Lab::new();
    let [sa1, sa2, sb1, sb2] = lab.sockets();
    assert_eq!(sa1.device(), Some(lab.a1.as_str()));
    let _ = writeln!(
        io::stderr(),
        "outer socket offloads on veth: {}",
        sa1.offloads()
    );

    send_tagged(&sa1, sb1.local_addr(), 1, 16, 300).unwrap();
    send_tagged(&sa2, sb2.local_addr(), 2, 16, 300).unwrap();
    check_tagged(
        &receive(&sb1, Some(16), TIMEOUT),
        1,
        16,
        300,
        sa1.local_addr(),
        B1,
    );
    check_tagged(
        &receive(&sb2, Some(16), TIMEOUT),
        2,
        16,
        300,
        sa2.local_addr(),
        B2,
    );
    // And back, one datagram at a time.
    sb1.send_to(b"reply 1", sa1.local_addr()).unwrap();
    sb2.send_to(b"reply 2", sa2.local_addr()).unwrap();
    let r1 = receive(&sa1, Some(1), TIMEOUT);
    let r2 = receive(&sa2, Some(1), TIMEOUT);
    assert_eq!(
        (r1[0].data.as_slice(), r1[0].dst_ip),
        (&b"reply 1"[..], Some(A1.into()))
    );
    assert_eq!(
        (r2[0].data.as_slice(), r2[0].dst_ip),
        (&b"reply 2"[..], Some(A2.into()))
    );
    // Nothing crossed over.
    assert!(receive(&sb1, None, QUIET).is_empty());
    assert!(receive(&sb2, None, QUIET).is_empty());

    // Two sockets on the wildcard address and the same port, one per device: each receives
    // only what arrives on its device, and dst_ip tells which local address was used.
    let wa1 = bind(&lab.a, &lab.a1, Ipv4Addr::UNSPECIFIED, 0);
    let port = wa1.local_addr().port();
    let wa2 = bind(&lab.a, &lab.a2, Ipv4Addr::UNSPECIFIED, port);
    sb1.send_to(b"to a1", SocketAddr::from((A1, port))).unwrap();
    sb2.send_to(b"to a2", SocketAddr::from((A2, port))).unwrap();
    let w1 = receive(&wa1, Some(1), TIMEOUT);
    let w2 = receive(&wa2, Some(1), TIMEOUT);
    assert_eq!(
        (w1[0].data.as_slice(), w1[0].dst_ip),
        (&b"to a1"[..], Some(A1.into()))
    );
    assert_eq!(
        (w2[0].data.as_slice(), w2[0].dst_ip),
        (&b"to a2"[..], Some(A2.into()))
    );
    assert_eq!(w1[0].src, sb1.local_addr());
    assert!(receive(&wa1, None, QUIET).is_empty());
}

/// (b) A socket bound to veth1 sending to B's veth2 address does not leave by veth2.
///
/// Observed on Linux 6.x: the send succeeds. With the device as output constraint the
/// route lookup finds no route through veth1 for 198.18.102.0/24 and the kernel assumes the
/// destination is on-link on veth1: it ARPs there, and B (arp_ignore=0, the weak host model)
/// answers for its veth2 address, so the datagrams reach B *through veth1*: a socket in B
/// bound to B's veth1 device gets them, the one bound to veth2 gets nothing, and veth2 in A
/// sends no packet at all. (With arp_ignore=1 on B they would go nowhere.)
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn bound_device_is_never_left_for_another_link() {
    require_root();
    let lab = Lab::new();
    let sa1 = bind(&lab.a, &lab.a1, A1, 0);
    let sb2 = bind(&lab.b, &lab.b2, B2, 0);
    // B2's address and port, but on B's veth1 device: catches whatever comes in by veth1.
    let probe = bind(&lab.b, &lab.b1, B2, sb2.local_addr().port());
    let tx_before = tx_packets(&lab.a, &lab.a2);

    let sent = send_tagged(&sa1, sb2.local_addr(), 3, 20, 200);
    let on_veth2 = receive(&sb2, None, QUIET);
    let on_veth1 = receive(&probe, None, Duration::ZERO);
    let tx_after = tx_packets(&lab.a, &lab.a2);
    let _ = writeln!(
        io::stderr(),
        "socket bound to {} sending to B's veth2 address: send {:?}, {} datagram(s) arrived \
         by veth1, {} by veth2, veth2 tx packets {tx_before} -> {tx_after}",
        lab.a1,
        sent.as_ref().map(|_| "ok").map_err(|e| e.to_string()),
        on_veth1.len(),
        on_veth2.len(),
    );
    assert!(on_veth2.is_empty(), "datagrams left by veth2");
    assert_eq!(tx_after, tx_before, "veth2 in A transmitted");
    if sent.is_ok() && !on_veth1.is_empty() {
        check_tagged(&on_veth1, 3, 20, 200, sa1.local_addr(), B2);
    }
}

/// (c) Taking veth2 down leaves veth1's socket alone, and veth2's socket works again once
/// the link is back, without being reopened.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn link_down_on_one_veth_leaves_the_other_alone() {
    require_root();
    let lab = Lab::new();
    let [sa1, sa2, sb1, sb2] = lab.sockets();

    ip(&["-n", &lab.a.name, "link", "set", &lab.a2, "down"]);
    let mut down_results = Vec::new();
    for round in 0..4u8 {
        send_tagged(&sa1, sb1.local_addr(), 10 + round, 32, 500).expect("veth1 send");
        let r = send_tagged(&sa2, sb2.local_addr(), 20 + round, 8, 500);
        down_results.push(r.map_err(|e| e.to_string()));
        let got = receive(&sb1, Some(32), TIMEOUT);
        check_tagged(&got, 10 + round, 32, 500, sa1.local_addr(), B1);
    }
    assert!(
        receive(&sb2, None, QUIET).is_empty(),
        "traffic over a down link"
    );
    let _ = writeln!(
        io::stderr(),
        "sending on the socket of a down veth: {:?}",
        down_results[0]
    );

    ip(&["-n", &lab.a.name, "link", "set", &lab.a2, "up"]);
    // The prefix route comes back with the link; allow a moment for the carrier.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match send_tagged(&sa2, sb2.local_addr(), 30, 8, 500) {
            Ok(()) => {
                let got = receive(&sb2, None, Duration::from_millis(200));
                if !got.is_empty() {
                    assert_eq!(got[0].src, sa2.local_addr());
                    assert_eq!(got[0].dst_ip, Some(B2.into()));
                    break;
                }
            }
            Err(e) => assert!(Instant::now() < deadline, "veth2 never came back: {e}"),
        }
        assert!(Instant::now() < deadline, "veth2 never came back");
        std::thread::sleep(Duration::from_millis(20));
    }
    send_tagged(&sa1, sb1.local_addr(), 40, 8, 500).unwrap();
    check_tagged(
        &receive(&sb1, Some(8), TIMEOUT),
        40,
        8,
        500,
        sa1.local_addr(),
        B1,
    );
}

/// (d) GSO over a veth: one message of the maximum 64 segments, and a batch of four
/// 16-segment messages of ESP-sized datagrams, arrive complete and in order.
#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn gso_batch_of_64_arrives_complete() {
    require_root();
    let lab = Lab::new();
    let sa1 = bind(&lab.a, &lab.a1, A1, 0);
    let sb1 = bind(&lab.b, &lab.b1, B1, 0);
    assert!(sa1.offloads().gso, "GSO: {}", sa1.offloads());
    let dst = sb1.local_addr();

    // 64 x 1000 bytes in one message.
    let train: Vec<u8> = (0..64).flat_map(|i| datagram(50, i, 1000)).collect();
    send_all(
        &sa1,
        &[Transmit {
            dst,
            contents: &train,
            segment_size: Some(1000),
        }],
    )
    .expect("64-segment GSO send");
    check_tagged(
        &receive(&sb1, Some(64), TIMEOUT),
        50,
        64,
        1000,
        sa1.local_addr(),
        B1,
    );

    // Four messages of 16 x 1400 bytes (the last one short) in one sendmmsg.
    let trains: Vec<Vec<u8>> = (0..4)
        .map(|m| {
            let mut t: Vec<u8> = (0..16).flat_map(|i| datagram(60 + m, i, 1400)).collect();
            if m == 3 {
                t.truncate(15 * 1400 + 100);
            }
            t
        })
        .collect();
    let msgs: Vec<Transmit<'_>> = trains
        .iter()
        .map(|t| Transmit {
            dst,
            contents: t,
            segment_size: Some(1400),
        })
        .collect();
    send_all(&sa1, &msgs).expect("batched GSO send");
    let got = receive(&sb1, Some(64), TIMEOUT);
    for (m, chunk) in got.chunks(16).enumerate() {
        let tag = 60 + m as u8;
        for (i, g) in chunk.iter().enumerate() {
            let mut want = datagram(tag, i, 1400);
            if m == 3 && i == 15 {
                want.truncate(100);
            }
            assert_eq!(g.data, want, "message {m} datagram {i}");
            assert_eq!(g.src, sa1.local_addr());
            assert_eq!(g.dst_ip, Some(B1.into()));
        }
    }
    assert_eq!(sb1.truncated(), 0);
    assert!(receive(&sb1, None, QUIET).is_empty());
}
