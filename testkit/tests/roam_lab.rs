//! The roaming lab's own parts, without a tunnel: plain pings from the client to the
//! gateway follow the routing table (link 1, then link 2 once link 1's address is deleted),
//! a blackhole in the middle stops them silently and is undone, and the ping stream counts
//! what it lost. Needs root (namespaces).

use std::time::Duration;

use mifsec_testkit::roam::{GW_ADDRS, PingStream, RoamLab, unix_now};
use mifsec_testkit::{WAIT, require_root};

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn routes_address_loss_and_blackholes() {
    require_root();
    // No daemon runs: the binary is never started.
    let lab = RoamLab::new("lab", "/nonexistent/mifsec");
    let ping = PingStream::start(
        &lab.cl_ns,
        GW_ADDRS[0],
        &lab.dir.join("plain.ping"),
        Duration::from_secs(120),
    );
    ping.wait_replies(3, WAIT);
    lab.wait_link_carries(0, 10, "cl", "pings on link 1 first");

    // The address goes: the kernel's route through link 1 goes with it, link 2 carries on.
    let t = unix_now();
    lab.delete_address(0);
    lab.wait_link_carries(1, 10, "cl", "pings on link 2 after link 1's address went");
    assert!(ping.wait_answered_after(t, WAIT).is_some());

    // Back: link 1 again (lower metric).
    lab.restore_address(0);
    lab.wait_link_carries(0, 10, "cl", "pings on link 1 once its address is back");

    // A silent blackhole: requests still leave on link 1, no reply comes.
    lab.blackhole_link(0);
    let t = unix_now();
    // Lets 300 ms of the stream pass on purpose: no reply may come in that time.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ping.answered_after(t), None, "{}", ping.output());
    lab.wait_link_carries(0, 10, "cl", "pings still leave on link 1");
    lab.unblackhole_link(0);
    assert!(ping.wait_answered_after(unix_now(), WAIT).is_some());

    // The gateway's first address blackholed, its second still answers.
    lab.blackhole_gateway(0);
    let second = PingStream::start(
        &lab.cl_ns,
        GW_ADDRS[1],
        &lab.dir.join("second.ping"),
        Duration::from_secs(60),
    );
    second.wait_replies(3, WAIT);
    let t = unix_now();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(ping.answered_after(t), None, "{}", ping.output());
    lab.unblackhole_gateway(0);
    assert!(ping.wait_answered_after(unix_now(), WAIT).is_some());

    let r = ping.stop();
    eprintln!(
        "{} sent, {} replies, {} lost, longest gap {:?}",
        r.transmitted,
        r.replies.len(),
        r.lost,
        r.longest_gap
    );
    assert!(r.lost >= 20, "the blackholes cost pings: {r:?}");
    assert!(r.longest_gap >= Duration::from_millis(300), "{r:?}");
    let r2 = second.stop();
    assert_eq!(r2.lost, 0, "the second address kept answering: {r2:?}");
}
