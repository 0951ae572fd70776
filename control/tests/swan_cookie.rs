//! COOKIEs (RFC 7296 section 2.6) against strongSwan 5.9, both ways: a mifsec gateway that
//! always demands them (`[ike] cookie_threshold = 0`) with a strongSwan initiator, and a
//! strongSwan gateway that demands them with mifsec initiating.
//!
//! Needs root (namespaces, TUN, strongSwan); see swan_interop.rs.

mod swan;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use mifsec_control::ike::{IkeSa, sample};
use swan::*;

/// charon's file log is buffered; these tests read it while charon runs.
const FLUSH_LOG: &str = "filelog {\n  swan {\n    flush_line = yes\n  }\n}";

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn strongswan_initiator_returns_mifsec_cookie() {
    require_root();
    let mut lab = Lab::new("ck", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    let config = format!(
        "[ike]\ncookie_threshold = 0\n\n{}",
        mifsec_gateway_config(&lab, "", "")
    );
    lab.start_mifsec("gw", &gw_ns, &config);
    lab.start_swan_with(&cl_ns, &swan_client_conf(), FLUSH_LOG);
    lab.swan_initiate(&cl_ns, "net");
    lab.wait_established("gw");
    let ping = lab.ping(&cl_ns, "10.88.0.1");
    assert!(
        ping.status.success(),
        "ping through the tunnel: {}\n--- mifsec log:\n{}\n--- charon log:\n{}",
        text(&ping),
        lab.log("gw"),
        lab.swan_log()
    );
    // strongSwan got the COOKIE and retried with it.
    let log = lab.swan_log();
    assert!(
        log.contains("parsed IKE_SA_INIT response 0 [ N(COOKIE) ]"),
        "no COOKIE response in charon's log:\n{log}"
    );
    assert!(
        log.contains("generating IKE_SA_INIT request 0 [ N(COOKIE) SA KE No"),
        "no retry with the COOKIE first in charon's log:\n{log}"
    );
    let s = lab.settled("gw", None);
    lab.swan_agrees(&cl_ns, &s);
    let st = lab.status_json("gw");
    let ike = &st["ike"];
    assert_eq!(ike["cookie_threshold"], 0, "{st:#}");
    assert_eq!(ike["cookies_sent"], 1, "{st:#}");
    assert_eq!(ike["cookies_accepted"], 1, "{st:#}");
    assert_eq!(ike["cookies_rejected"], 0, "{st:#}");
    assert_eq!(ike["half_open"], 0, "{st:#}");
    let human = text(&lab.mifsec("gw", &["status"]));
    eprintln!("--- mifsec status (gateway):\n{human}");
    assert!(
        human
            .contains("IKE: 0 half-open, cookies from 0 half-open: 1 sent, 1 accepted, 0 rejected"),
        "{human}"
    );
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn mifsec_initiator_returns_strongswan_cookie() {
    require_root();
    let mut lab = Lab::new("cs", BIN);
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    // charon 5.9 reads `cookie_threshold = 0` as "never" (it demands cookies while
    // `threshold && half_open >= threshold`), so: threshold 1, and one half-open IKE SA
    // made first by an IKE_SA_INIT request that is never continued.
    lab.start_swan_with(
        &gw_ns,
        &swan_gateway_conf(),
        &format!("cookie_threshold = 1\n{FLUSH_LOG}"),
    );
    half_open_at_swan(&lab, &cl_ns);
    let config = mifsec_client_config(&lab, "", "");
    lab.start_mifsec("cl", &cl_ns, &config);
    lab.wait_established("cl");
    let ping = lab.ping(&cl_ns, "10.88.0.1");
    assert!(
        ping.status.success(),
        "ping through the tunnel: {}\n--- mifsec log:\n{}\n--- charon log:\n{}",
        text(&ping),
        lab.log("cl"),
        lab.swan_log()
    );
    let log = lab.swan_log();
    assert!(
        log.contains("generating IKE_SA_INIT response 0 [ N(COOKIE) ]"),
        "strongSwan demanded no COOKIE:\n{log}"
    );
    assert!(
        log.contains("parsed IKE_SA_INIT request 0 [ N(COOKIE) SA KE No"),
        "mifsec did not retry with the COOKIE first:\n{log}"
    );
    let s = lab.settled("cl", None);
    lab.swan_agrees(&gw_ns, &s);
}

/// Sends strongSwan at 198.18.9.1 one IKE_SA_INIT request from 198.18.9.2:5000 (in `ns`)
/// and waits until charon has answered it: charon then holds one half-open IKE SA.
fn half_open_at_swan(lab: &Lab, ns: &str) {
    let local: SocketAddr = "198.18.9.2:5000".parse().unwrap();
    let remote: SocketAddr = "198.18.9.1:500".parse().unwrap();
    let mut sa = IkeSa::initiate(sample::client(), Instant::now(), local, remote).unwrap();
    let t = sa.poll_transmit().expect("an IKE_SA_INIT request");
    let out = run(Command::new("ip").args([
        "netns",
        "exec",
        ns,
        "python3",
        "-c",
        "import socket,sys\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
         s.bind(('198.18.9.2',5000))\n\
         s.sendto(bytes.fromhex(sys.argv[1]),('198.18.9.1',500))\n\
         s.settimeout(5)\n\
         s.recv(4096)",
        &hex(&t.bytes),
    ]));
    assert!(
        out.status.success(),
        "sending a bare IKE_SA_INIT: {}",
        text(&out)
    );
    let deadline = Instant::now() + WAIT;
    while !lab
        .swan_log()
        .contains("198.18.9.2 is initiating an IKE_SA")
    {
        assert!(Instant::now() < deadline, "charon: {}", lab.swan_log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
