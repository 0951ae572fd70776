//! `mifsec metrics` and `[metrics] listen` against a running daemon (issue 13, items 4 and
//! 5): two mifsec daemons in the multi-interface lab (`mifsec_testkit::mif`), one child SA
//! over the extension's 2 x 2 paths; the client serves its metrics on 127.0.0.1 in its
//! namespace. Every scrape, over HTTP and from the binary over the control socket, is parsed
//! by the Prometheus client's own text parser (Python `prometheus_client.parser`), and the
//! figures asserted are ones that could be wrong: the IKE SA count, bytes that grow with
//! traffic and keep growing across a rekey (the removed child's totals kept), the IKE
//! messages of a child rekey and of an IKE rekey counted per exchange and direction, the
//! failovers of the paths of a link blackholed in the middle, and their loss decaying
//! once the link is back. Needs root.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use mifsec_testkit::mif::{MifLab, Side};
use mifsec_testkit::{WAIT, in_ns, poll, require_root, text};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
const CONN: &str = "mif = true\npath_check_delay = \"0\"";
const LISTEN: &str = "127.0.0.1:9469";

/// One sample: its labels and value.
type Samples = Vec<(BTreeMap<String, String>, f64)>;

/// The exposition parsed by `prometheus_client.parser`: samples by name (`_total` included).
fn parse(exposition: &str) -> BTreeMap<String, Samples> {
    let script = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        out.setdefault(s.name, []).append([s.labels, s.value])
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 (scripts/test.sh installs prometheus-client)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the exposition: {}\n{exposition}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

/// The value of `name` with exactly these labels among others.
fn value(m: &BTreeMap<String, Samples>, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    m.get(name)?
        .iter()
        .find(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| *v)
}

fn must(m: &BTreeMap<String, Samples>, name: &str, labels: &[(&str, &str)]) -> f64 {
    value(m, name, labels).unwrap_or_else(|| panic!("no {name}{labels:?} in {:#?}", m.get(name)))
}

/// Every sample of `name` whose labels include these.
fn all<'a>(
    m: &'a BTreeMap<String, Samples>,
    name: &str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a (BTreeMap<String, String>, f64)> + 'a {
    m.get(name).into_iter().flatten().filter(move |(l, _)| {
        labels
            .iter()
            .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
    })
}

/// One HTTP request to the client's metrics address, from inside its namespace: the status
/// line and the body.
fn http(ns: &str, request: &str) -> (String, String) {
    let request = request.to_owned();
    in_ns(ns, move || {
        let mut s = TcpStream::connect(LISTEN).expect("connecting to the metrics address");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        let (head, body) = all.split_once("\r\n\r\n").unwrap_or((&all, ""));
        (
            head.lines().next().unwrap_or("").to_owned(),
            body.to_owned(),
        )
    })
}

struct Scraper<'a> {
    lab: &'a MifLab,
}

impl Scraper<'_> {
    /// `mifsec metrics` of the client, parsed.
    fn cli(&self) -> BTreeMap<String, Samples> {
        let out = self.lab.mifsec("cl", &["metrics"]);
        assert!(out.status.success(), "mifsec metrics: {}", text(&out));
        parse(&String::from_utf8(out.stdout).expect("UTF-8"))
    }

    /// `GET /metrics` of the client, parsed.
    fn http(&self) -> BTreeMap<String, Samples> {
        let (status, body) = http(&self.lab.cl_ns, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
        parse(&body)
    }

    /// Polls `mifsec metrics` until `cond` holds; returns that scrape.
    fn until(
        &self,
        what: &str,
        cond: impl Fn(&BTreeMap<String, Samples>) -> bool,
    ) -> BTreeMap<String, Samples> {
        poll(
            WAIT,
            Duration::from_millis(100),
            || {
                let m = self.cli();
                if cond(&m) { Ok(m) } else { Err(m) }
            },
            |m| format!("{what}: last scrape {m:#?}\n{}", self.lab.dump()),
        )
    }
}

const BYTES: &str = "mifsec_child_sa_bytes_total";
const MSGS: &str = "mifsec_ike_messages_total";

fn child_bytes(m: &BTreeMap<String, Samples>, dir: &str) -> f64 {
    must(
        m,
        BYTES,
        &[("conn", "mif"), ("child", "c0"), ("direction", dir)],
    )
}

fn msgs(m: &BTreeMap<String, Samples>, x: &str, dir: &str) -> f64 {
    must(m, MSGS, &[("exchange", x), ("direction", dir)])
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn metrics_of_a_running_daemon_over_http_and_the_control_socket() {
    require_root();
    let mut lab = MifLab::new("metr", BIN, 1);
    let gw = lab.gateway_config("mif = true", "");
    let cl = format!(
        "{}\n[metrics]\nlisten = \"{LISTEN}\"\n",
        lab.client_config(1, CONN, "")
    );
    let (gw_ns, cl_ns) = (lab.gw_ns.clone(), lab.cl_ns.clone());
    lab.start_mifsec("gw", &gw_ns, &gw);
    lab.start_mifsec("cl", &cl_ns, &cl);
    lab.wait_children("gw", 1);
    lab.wait_children("cl", 1);
    let sc = Scraper { lab: &lab };

    // Both ways, the same series; one IKE SA established; nothing but /metrics served.
    let by_http = sc.http();
    let m = sc.cli();
    for scrape in [&by_http, &m] {
        assert_eq!(
            must(
                scrape,
                "mifsec_ike_sas",
                &[("conn", "mif"), ("state", "established")]
            ),
            1.0
        );
        assert_eq!(
            must(
                scrape,
                "mifsec_child_sas",
                &[("conn", "mif"), ("child", "c0"), ("state", "installed")]
            ),
            1.0
        );
        assert_eq!(
            msgs(scrape, "IKE_SA_INIT", "out"),
            1.0,
            "{:#?}",
            scrape[MSGS]
        );
        assert_eq!(msgs(scrape, "IKE_SA_INIT", "in"), 1.0);
        assert!(msgs(scrape, "IKE_AUTH", "out") >= 1.0);
    }
    let http_names: Vec<&String> = by_http.keys().collect();
    let cli_names: Vec<&String> = m.keys().collect();
    assert_eq!(http_names, cli_names, "the same series both ways");
    for (req, want) in [
        ("GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("POST /metrics HTTP/1.1\r\n\r\n", "HTTP/1.1 404 Not Found"),
        ("nonsense\r\n\r\n", "HTTP/1.1 400 Bad Request"),
    ] {
        assert_eq!(http(&cl_ns, req).0, want, "{req:?}");
    }
    let spi = lab.status_json("cl")["ike_sas"][0]["children"][0]["spi_in"]
        .as_str()
        .unwrap()
        .to_owned();
    let raw = String::from_utf8(lab.mifsec("cl", &["metrics"]).stdout).unwrap();
    assert!(!raw.contains(&spi), "no SPI in any label: {spi}");

    // The paths: 2 x 2, up, with an RTT.
    let sa = [("sa", "mif/c0")];
    let m = sc.until("every path up with an RTT", |m| {
        all(m, "mifsec_path_up", &sa).count() == 4
            && all(m, "mifsec_path_up", &sa).all(|(_, v)| *v == 1.0)
            && all(m, "mifsec_path_rtt_seconds", &sa).count() == 4
    });
    for (l, v) in all(&m, "mifsec_path_rtt_variance_seconds", &sa) {
        assert!(*v >= 0.0, "{l:?} {v}");
    }
    assert_eq!(
        all(&m, "mifsec_path_failovers_total", &sa)
            .map(|(_, v)| *v)
            .sum::<f64>(),
        0.0
    );

    // Traffic: the child's bytes grow, both ways.
    let before = sc.cli();
    let (ok, out) = lab.ping(0);
    assert!(ok, "ping through the child: {out}\n{}", lab.dump());
    let after = sc.cli();
    // Three echo requests of 84 bytes out, three replies in.
    for dir in ["out", "in"] {
        assert!(
            child_bytes(&after, dir) >= child_bytes(&before, dir) + 3.0 * 84.0,
            "{dir}: {} -> {}",
            child_bytes(&before, dir),
            child_bytes(&after, dir)
        );
    }
    assert_eq!(
        must(
            &after,
            "mifsec_sa_bytes_total",
            &[("sa", "mif/c0"), ("direction", "out")]
        ),
        child_bytes(&after, "out")
    );

    // A child rekey: one CREATE_CHILD_SA exchange of ours, the old child's Delete, and the
    // bytes carried on: the removed child's totals stay in the counter.
    let m0 = sc.cli();
    let out = lab.mifsec("cl", &["ctl", "rekey", "mif"]);
    assert!(out.status.success(), "{}", text(&out));
    let m1 = sc.until("the child rekeyed and the old pair removed", |m| {
        value(
            m,
            "mifsec_ike_rekeys_total",
            &[("conn", "mif"), ("kind", "child")],
        ) == Some(1.0)
            && value(
                m,
                "mifsec_child_sas",
                &[("conn", "mif"), ("child", "c0"), ("state", "rekeyed")],
            )
            .unwrap_or(0.0)
                == 0.0
            && lab.status_json("cl")["sas"].as_array().map(Vec::len) == Some(1)
    });
    let retransmitted = must(&m1, "mifsec_ike_retransmissions_total", &[])
        - must(&m0, "mifsec_ike_retransmissions_total", &[]);
    assert_eq!(retransmitted, 0.0, "no retransmission in a quiet lab");
    assert_eq!(
        msgs(&m1, "CREATE_CHILD_SA", "out") - msgs(&m0, "CREATE_CHILD_SA", "out"),
        1.0,
        "our request"
    );
    assert_eq!(
        msgs(&m1, "CREATE_CHILD_SA", "in") - msgs(&m0, "CREATE_CHILD_SA", "in"),
        1.0,
        "its answer"
    );
    assert!(
        msgs(&m1, "INFORMATIONAL", "out") > msgs(&m0, "INFORMATIONAL", "out")
            || msgs(&m1, "INFORMATIONAL", "in") > msgs(&m0, "INFORMATIONAL", "in"),
        "the old child's Delete"
    );
    assert_eq!(msgs(&m1, "IKE_SA_INIT", "out"), 1.0, "no new IKE SA");
    for dir in ["out", "in"] {
        assert!(
            child_bytes(&m1, dir) >= child_bytes(&after, dir),
            "{dir}: the rekey took bytes away: {} -> {}",
            child_bytes(&after, dir),
            child_bytes(&m1, dir)
        );
    }
    let (ok, out) = lab.ping(0);
    assert!(ok, "ping through the new child: {out}\n{}", lab.dump());
    let m2 = sc.cli();
    assert!(child_bytes(&m2, "out") >= child_bytes(&m1, "out") + 3.0 * 84.0);

    // An IKE rekey: one more CREATE_CHILD_SA each way, still one IKE SA.
    let out = lab.mifsec("cl", &["ctl", "rekey", "mif", "--ike"]);
    assert!(out.status.success(), "{}", text(&out));
    let m3 = sc.until("the IKE SA rekeyed", |m| {
        value(
            m,
            "mifsec_ike_rekeys_total",
            &[("conn", "mif"), ("kind", "ike")],
        ) == Some(1.0)
            && value(
                m,
                "mifsec_ike_sas",
                &[("conn", "mif"), ("state", "established")],
            ) == Some(1.0)
    });
    assert_eq!(
        msgs(&m3, "CREATE_CHILD_SA", "out") - msgs(&m2, "CREATE_CHILD_SA", "out"),
        1.0
    );
    // Its answer (a duplicate of the answer, if the gateway ever sent one, counts too).
    assert!(
        msgs(&m3, "CREATE_CHILD_SA", "in") - msgs(&m2, "CREATE_CHILD_SA", "in") >= 1.0,
        "{:#?}",
        m3[MSGS]
    );

    // The client's link c2 silently blackholed in the middle: its two paths go down and
    // count a failover each; c1's stay up and count none.
    lab.blackhole(Side::Client, 1);
    let c2 = [("sa", "mif/c0"), ("interface", "c2")];
    let c1 = [("sa", "mif/c0"), ("interface", "c1")];
    let m4 = sc.until("c2's paths down with a failover each", |m| {
        all(m, "mifsec_path_up", &c2).count() == 2
            && all(m, "mifsec_path_up", &c2).all(|(_, v)| *v == 0.0)
            && all(m, "mifsec_path_failovers_total", &c2).all(|(_, v)| *v >= 1.0)
    });
    for (l, v) in all(&m4, "mifsec_path_failovers_total", &c1) {
        assert_eq!(*v, 0.0, "{l:?}");
    }
    assert!(all(&m4, "mifsec_path_up", &c1).all(|(_, v)| *v == 1.0));
    let st = lab.mifsec("cl", &["status"]);
    let said = text(&st);
    assert!(
        said.contains("failovers 1"),
        "status shows failovers: {said}"
    );
    assert!(said.contains("IKE messages in/out: "), "{said}");

    // The link back: up again, and the loss it shows decays from the outage's towards
    // none (a moving average), instead of staying at the outage's share.
    lab.unblackhole(Side::Client, 1);
    let m5 = sc.until("c2's paths up again", |m| {
        all(m, "mifsec_path_up", &c2).all(|(_, v)| *v == 1.0)
    });
    let peak = all(&m5, "mifsec_path_loss_ratio", &c2)
        .map(|(_, v)| *v)
        .fold(0.0, f64::max);
    eprintln!("loss of c2's paths when they came back: {peak}");
    sc.until("c2's loss decayed below 10 %", |m| {
        all(m, "mifsec_path_loss_ratio", &c2).all(|(_, v)| *v < 0.1)
    });
    let m6 = sc.http();
    assert!(all(&m6, "mifsec_path_failovers_total", &c2).all(|(_, v)| *v >= 1.0));
    let ages: Vec<f64> = all(&m6, "mifsec_path_last_receive_age_seconds", &c2)
        .map(|(_, v)| *v)
        .collect();
    assert!(
        ages.len() == 2 && ages.iter().all(|a| *a < 5.0),
        "c2 receives again: {ages:?}"
    );
    let json = lab.status_json("cl");
    let counters = &json["ike"]["counters"];
    assert_eq!(
        counters["connections"]["mif"]["child_rekeys"], 1,
        "{counters:#}"
    );
    assert_eq!(
        counters["messages"]["IKE_SA_INIT"]["sent"], 1,
        "{counters:#}"
    );
    let p = &json["sas"][0]["paths"][0];
    assert!(
        p.get("rtt_var_ms").is_some() && p.get("failovers").is_some(),
        "{p:#}"
    );
    let _: Value = json;
}
