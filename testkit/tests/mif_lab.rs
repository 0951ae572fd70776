//! The multi-interface lab's own parts, without daemons: every (client address, gateway
//! address) pair is a path that leaves and arrives on its own links, a blackhole in the
//! middle silently stops one link's pairs (both ways) and is undone, a deleted address takes
//! its link's pairs with it. Needs root (namespaces).

use mifsec_testkit::mif::{CLIENT_LINKS, GATEWAY_LINKS, MifLab, Side};
use mifsec_testkit::{exec_in, require_root};

fn ping(lab: &MifLab, from: &str, to: &str) -> bool {
    exec_in(&lab.cl_ns, &["ping", "-c", "1", "-W", "1", "-I", from, to]).0
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn every_pair_is_a_path_and_failures_are_silent() {
    require_root();
    let lab = MifLab::new("lab", "/nonexistent/mifsec", 3);
    for (i, c) in CLIENT_LINKS.iter().enumerate() {
        for (j, g) in GATEWAY_LINKS.iter().enumerate() {
            let (tx_c, rx_g) = (
                lab.tx_packets(Side::Client, i),
                lab.rx_packets(Side::Gateway, j),
            );
            assert!(ping(&lab, c.addr, g.addr), "{} -> {}", c.addr, g.addr);
            assert!(lab.tx_packets(Side::Client, i) > tx_c, "left on {}", c.dev);
            assert!(
                lab.rx_packets(Side::Gateway, j) > rx_g,
                "arrived on {}",
                g.dev
            );
        }
    }
    // The inner addresses of the children are on the loopbacks.
    let (ok, out) = exec_in(&lab.cl_ns, &["ip", "-br", "addr", "show", "dev", "lo"]);
    assert!(ok && out.contains("10.50.2.1/32"), "{out}");
    let (ok, out) = exec_in(&lab.gw_ns, &["ip", "-br", "addr", "show", "dev", "lo"]);
    assert!(ok && out.contains("10.60.2.1/32"), "{out}");

    // Client link 1 blackholed: its pairs fail silently, link 2's still work.
    lab.blackhole(Side::Client, 0);
    for g in &GATEWAY_LINKS {
        assert!(!ping(&lab, CLIENT_LINKS[0].addr, g.addr));
        assert!(ping(&lab, CLIENT_LINKS[1].addr, g.addr));
    }
    let (ok, out) = exec_in(&lab.cl_ns, &["ip", "-br", "link", "show", "dev", "c1"]);
    assert!(ok && out.contains("UP"), "no link event: {out}");
    lab.unblackhole(Side::Client, 0);
    assert!(ping(&lab, CLIENT_LINKS[0].addr, GATEWAY_LINKS[0].addr));

    // Gateway link 2 blackholed: pairs to it fail, pairs to g1 work.
    lab.blackhole(Side::Gateway, 1);
    assert!(!ping(&lab, CLIENT_LINKS[0].addr, GATEWAY_LINKS[1].addr));
    assert!(ping(&lab, CLIENT_LINKS[0].addr, GATEWAY_LINKS[0].addr));
    lab.unblackhole(Side::Gateway, 1);
    assert!(ping(&lab, CLIENT_LINKS[1].addr, GATEWAY_LINKS[1].addr));

    // An address deleted and given back.
    lab.delete_address(Side::Gateway, 0);
    assert!(!ping(&lab, CLIENT_LINKS[0].addr, GATEWAY_LINKS[0].addr));
    lab.restore_address(Side::Gateway, 0);
    assert!(ping(&lab, CLIENT_LINKS[0].addr, GATEWAY_LINKS[0].addr));

    // Shaping is accepted on every link.
    lab.shape(Side::Client, 0, 200);
    lab.shape(Side::Client, 1, 100);
    assert!(ping(&lab, CLIENT_LINKS[1].addr, GATEWAY_LINKS[1].addr));
}
