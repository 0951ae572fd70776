//! The strongSwan interop lab shared by the interop test files: two namespaces joined by a
//! veth, charon (kernel-libipsec, driven by scripts/swan.sh) on one side, `mifsec run` on
//! the other, and the configurations both sides start from.
//!
//! Each test binary uses part of it.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
pub const PSK: &str = "interop-secret-0123456789";

/// Panics unless the test runs as root: a root test never passes without doing its work.
///
/// Every test that calls this carries
/// `#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]`.
/// `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` builds the tests with `--cfg skip_root_tests`,
/// so libtest reports them as ignored, never as passed.
pub fn require_root() {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return;
    }
    if std::env::var("MIFSEC_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        panic!(
            "this test needs root (network namespaces, TUN, strongSwan). MIFSEC_SKIP_ROOT_TESTS=1 takes effect at build time: run \
             `MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh` (it builds with RUSTFLAGS=\"--cfg \
             skip_root_tests\"), and give the test \
             #[cfg_attr(skip_root_tests, ignore = \"needs root (MIFSEC_SKIP_ROOT_TESTS=1)\")]."
        );
    }
    panic!(
        "this test needs root (network namespaces, TUN, strongSwan). Run it as root, or skip it with MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh."
    );
}

/// How long a test waits for a state before it fails: generous, since it only bounds a
/// failure on a loaded machine; a passing test waits only as long as the state takes.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `cond` (every 50 ms) until it holds; panics naming `what` once `timeout` has passed.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until a TCP socket listens on `port` in namespace `ns` (an iperf3 server).
pub fn wait_listening(ns: &str, port: u16) {
    let filter = format!("sport = :{port}");
    wait_until(WAIT, &format!("a listener on port {port} in {ns}"), || {
        let out = run(Command::new("ip").args(["netns", "exec", ns, "ss", "-Hltn", &filter]));
        out.status.success() && !out.stdout.is_empty()
    });
}

pub fn swan_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/swan.sh")
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("running a command")
}

pub fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Two namespaces (client, gateway) joined by a veth, 198.18.<net>.2 and .1; a scratch
/// directory; mifsec daemons and one charon. All removed on drop.
pub struct Lab {
    pub cl_ns: String,
    pub gw_ns: String,
    pub cl_if: String,
    pub gw_if: String,
    pub dir: PathBuf,
    pub daemons: Vec<Child>,
    pub swan_dir: Option<PathBuf>,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let pid = std::process::id();
        let lab = Lab {
            cl_ns: format!("mfsw-{tag}-c{pid}"),
            gw_ns: format!("mfsw-{tag}-g{pid}"),
            cl_if: format!("sw{tag}c{pid}"),
            gw_if: format!("sw{tag}g{pid}"),
            dir: std::env::temp_dir().join(format!("mifsec-swan-{tag}-{pid}")),
            daemons: Vec::new(),
            swan_dir: None,
        };
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir).unwrap();
        ip(&["netns", "add", &lab.cl_ns]);
        ip(&["netns", "add", &lab.gw_ns]);
        ip(&[
            "link", "add", &lab.cl_if, "type", "veth", "peer", "name", &lab.gw_if,
        ]);
        for (ns, dev, addr) in [
            (&lab.cl_ns, &lab.cl_if, "198.18.9.2/24"),
            (&lab.gw_ns, &lab.gw_if, "198.18.9.1/24"),
        ] {
            ip(&["link", "set", dev, "netns", ns]);
            ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
            ip(&["-n", ns, "link", "set", dev, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // The network behind the gateway.
        ip(&["-n", &lab.gw_ns, "addr", "add", "10.88.0.1/32", "dev", "lo"]);
        lab
    }

    /// Starts charon in `ns` with `swanctl_conf` and loads it.
    pub fn start_swan(&mut self, ns: &str, swanctl_conf: &str) {
        self.start_swan_with(ns, swanctl_conf, "");
    }

    /// As [`Lab::start_swan`], with `charon_extra` (strongswan.conf lines such as
    /// `fragment_size = 400`) added to charon's section.
    pub fn start_swan_with(&mut self, ns: &str, swanctl_conf: &str, charon_extra: &str) {
        let out = run(Command::new(swan_sh()).arg("install"));
        assert!(
            out.status.success(),
            "installing strongSwan: {}",
            text(&out)
        );
        let dir = self.dir.join("swan");
        std::fs::create_dir_all(dir.join("swanctl")).unwrap();
        std::fs::write(dir.join("swanctl/swanctl.conf"), swanctl_conf).unwrap();
        let out = run(Command::new(swan_sh())
            .arg("start")
            .arg(ns)
            .arg(&dir)
            .env("SWAN_CHARON_EXTRA", charon_extra));
        assert!(out.status.success(), "starting charon: {}", text(&out));
        self.swan_dir = Some(dir.clone());
        let out = run(Command::new(swan_sh()).arg("load").arg(ns).arg(&dir));
        assert!(
            out.status.success(),
            "swanctl --load-all: {}\n{}",
            text(&out),
            self.swan_log()
        );
    }

    pub fn swanctl(&self, ns: &str, args: &[&str]) -> Output {
        let dir = self.swan_dir.as_ref().expect("charon started");
        run(Command::new(swan_sh())
            .arg("swanctl")
            .arg(ns)
            .arg(dir)
            .args(args))
    }

    pub fn swan_log(&self) -> String {
        self.swan_dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("charon.log")).ok())
            .unwrap_or_default()
    }

    /// Writes a mifsec configuration and starts `mifsec run` in `ns`; waits for its control
    /// socket. Returns the socket path.
    pub fn start_mifsec(&mut self, side: &str, ns: &str, config: &str) -> PathBuf {
        let cfg = self.dir.join(format!("{side}.toml"));
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(self.dir.join(format!("{side}.log"))).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", ns, BIN, "run", "--config"])
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting mifsec run");
        self.daemons.push(child);
        let sock = self.sock(side);
        let deadline = Instant::now() + WAIT;
        while !sock.exists() {
            if let Some(st) = self.daemons.last_mut().unwrap().try_wait().unwrap() {
                panic!("mifsec run ({side}) exited with {st}:\n{}", self.log(side));
            }
            assert!(
                Instant::now() < deadline,
                "no control socket from {side}:\n{}",
                self.log(side)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        sock
    }

    /// In a directory of its own that the daemon creates (and gives to the user it drops
    /// to, so that it can remove the socket when it stops).
    pub fn sock(&self, side: &str) -> PathBuf {
        self.dir
            .join(format!("run-{side}"))
            .join(format!("{side}.sock"))
    }

    pub fn log(&self, side: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{side}.log"))).unwrap_or_default()
    }

    pub fn mifsec(&self, side: &str, args: &[&str]) -> Output {
        run(Command::new(BIN)
            .args(args)
            .arg("--socket")
            .arg(self.sock(side)))
    }

    pub fn status_json(&self, side: &str) -> Value {
        let out = self.mifsec(side, &["status", "--json"]);
        assert!(out.status.success(), "mifsec status: {}", text(&out));
        serde_json::from_slice(&out.stdout).expect("status JSON")
    }

    /// Waits until mifsec reports an established IKE SA with an installed child.
    pub fn wait_established(&self, side: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = self.status_json(side);
            let up = st["ike_sas"].as_array().is_some_and(|l| {
                l.iter().any(|s| {
                    s["state"] == "ESTABLISHED"
                        && s["children"].as_array().is_some_and(|c| !c.is_empty())
                })
            });
            if up {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "no established IKE SA in mifsec ({side}):\n{st:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
                self.log(side),
                self.swan_log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `mifsec ctl terminate conn` on `side`; waits until neither mifsec nor the charon in
    /// `swan_ns` has an SA left.
    pub fn terminate_and_wait(&self, side: &str, conn: &str, swan_ns: &str) {
        let out = self.mifsec(side, &["ctl", "terminate", conn]);
        assert!(out.status.success(), "ctl terminate: {}", text(&out));
        let deadline = Instant::now() + WAIT;
        loop {
            let sas = text(&self.swanctl(swan_ns, &["--list-sas"]));
            let st = self.status_json(side);
            let gone_here = st["ike_sas"].as_array().is_some_and(Vec::is_empty)
                && st["sas"].as_array().is_some_and(Vec::is_empty);
            if !sas.contains("ESTABLISHED") && gone_here {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "terminate: strongSwan still has\n{sas}\nmifsec still has {st:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Pings `dst` from namespace `ns` (up to a few tries while the tunnel settles).
    pub fn ping(&self, ns: &str, dst: &str) -> Output {
        let mut last = None;
        for _ in 0..5 {
            let out = run(Command::new("ip").args([
                "netns", "exec", ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", dst,
            ]));
            if out.status.success() {
                return out;
            }
            last = Some(out);
            std::thread::sleep(Duration::from_millis(500));
        }
        last.unwrap()
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.daemons {
            if c.try_wait().ok().flatten().is_none() {
                // SIGTERM first: the daemon deletes its IKE SAs and stops cleanly.
                // SAFETY: kill(2) on a pid we spawned; no memory is involved.
                unsafe { libc::kill(c.id() as libc::pid_t, libc::SIGTERM) };
                let deadline = Instant::now() + Duration::from_secs(3);
                while c.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if let Some(d) = &self.swan_dir {
            let _ = Command::new(swan_sh()).arg("stop").arg(d).status();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.cl_ns])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.gw_ns])
            .status();
        if std::env::var_os("MIFSEC_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The SA counters of every engine SA: (in packets, out packets), summed.
pub fn counters(st: &Value) -> (u64, u64) {
    st["sas"].as_array().map_or((0, 0), |l| {
        l.iter().fold((0, 0), |(i, o), s| {
            (
                i + s["in_packets"].as_u64().unwrap_or(0),
                o + s["out_packets"].as_u64().unwrap_or(0),
            )
        })
    })
}

/// The gateway's swanctl.conf for the rekey tests: PFS with X25519 on child rekeys.
pub fn swan_gateway_conf() -> String {
    swan_gateway_conf_esp("aes128gcm16-x25519")
}

/// The gateway's swanctl.conf: PSK, a pool, 10.88.0.0/16 behind it, forced UDP
/// encapsulation, and the child's `esp_proposals` as given.
pub fn swan_gateway_conf_esp(esp: &str) -> String {
    swan_gateway_conf_with("aes128gcm16-prfsha256-x25519", esp)
}

/// The gateway's swanctl.conf with the IKE `proposals` and the child's `esp_proposals`
/// as given.
pub fn swan_gateway_conf_with(ike: &str, esp: &str) -> String {
    format!(
        r#"connections {{
  rw {{
    local_addrs = 198.18.9.1
    pools = p4
    version = 2
    encap = yes
    proposals = {ike}
    local {{
      auth = psk
      id = gw
    }}
    remote {{
      auth = psk
      id = cl
    }}
    children {{
      net {{
        local_ts = 10.88.0.0/16
        esp_proposals = {esp}
      }}
    }}
  }}
}}
pools {{
  p4 {{
    addrs = 10.77.0.0/24
  }}
}}
secrets {{
  ike-1 {{
    id-1 = gw
    id-2 = cl
    secret = "{PSK}"
  }}
}}
"#
    )
}

/// The client's swanctl.conf of [`strongswan_initiator_mifsec_responder`], with PFS.
pub fn swan_client_conf() -> String {
    swan_client_conf_with("aes128gcm16-prfsha256-x25519", "aes128gcm16-x25519")
}

/// The client's swanctl.conf with the IKE `proposals` and the child's `esp_proposals`
/// as given.
pub fn swan_client_conf_with(ike: &str, esp: &str) -> String {
    format!(
        r#"connections {{
  home {{
    remote_addrs = 198.18.9.1
    vips = 0.0.0.0
    version = 2
    encap = yes
    proposals = {ike}
    local {{
      auth = psk
      id = cl
    }}
    remote {{
      auth = psk
      id = gw
    }}
    children {{
      net {{
        remote_ts = 10.88.0.0/16
        esp_proposals = {esp}
      }}
    }}
  }}
}}
secrets {{
  ike-1 {{
    id-1 = gw
    id-2 = cl
    secret = "{PSK}"
  }}
}}
"#
    )
}

/// IKE and child SPIs as one side reports them once settled: exactly one established
/// IKE SA with exactly one installed child (no rekeyed pair waiting for its Delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spis {
    pub spi_i: String,
    pub spi_r: String,
    pub child_in: String,
    pub child_out: String,
}

impl Lab {
    /// Waits until `side` has settled (see [`Spis`]) on SPIs other than `not`.
    pub fn settled(&self, side: &str, not: Option<&Spis>) -> Spis {
        let deadline = Instant::now() + WAIT;
        loop {
            let st = self.status_json(side);
            let found = st["ike_sas"].as_array().and_then(|l| match l.as_slice() {
                [ike] if ike["state"] == "ESTABLISHED" => match ike["children"].as_array() {
                    Some(c) if c.len() == 1 && c[0]["state"] == "INSTALLED" => Some(Spis {
                        spi_i: ike["spi_i"].as_str()?.to_owned(),
                        spi_r: ike["spi_r"].as_str()?.to_owned(),
                        child_in: c[0]["spi_in"].as_str()?.to_owned(),
                        child_out: c[0]["spi_out"].as_str()?.to_owned(),
                    }),
                    _ => None,
                },
                _ => None,
            });
            if let Some(s) = found.filter(|s| Some(s) != not) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "mifsec ({side}) did not settle: {st:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
                self.log(side),
                self.swan_log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Asserts that strongSwan in `ns` reports the same SPIs as mifsec.
    pub fn swan_agrees(&self, ns: &str, s: &Spis) {
        let sas = text(&self.swanctl(ns, &["--list-sas"]));
        for spi in [&s.spi_i, &s.spi_r, &s.child_in, &s.child_out] {
            assert!(
                sas.contains(spi.as_str()),
                "strongSwan lacks {spi}: {sas}\n{s:?}"
            );
        }
    }

    /// Packets the kernels of both namespaces dropped from full queues: devices' `tx_dropped`
    /// (a TUN whose reader was late, a veth whose peer's backlog was full) and UDP datagrams
    /// refused for a full receive buffer. On a loaded machine these are what it lost, not the
    /// tunnel.
    pub fn queue_drops(&self) -> u64 {
        [&self.cl_ns, &self.gw_ns]
            .iter()
            .map(|ns| {
                let out = run(Command::new("ip").args([
                    "netns",
                    "exec",
                    ns.as_str(),
                    "sh",
                    "-c",
                    "cat /sys/class/net/*/statistics/tx_dropped; \
                     awk '/^Udp:/ { if (h) { for (i = 2; i <= NF; i++) if (n[i] == \"RcvbufErrors\") print $i } \
                     else { h = 1; for (i = 2; i <= NF; i++) n[i] = $i } }' /proc/net/snmp",
                ]));
                assert!(out.status.success(), "queue drops in {ns}: {}", text(&out));
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(|v| v.parse::<u64>().unwrap())
                    .sum::<u64>()
            })
            .sum()
    }

    /// Pings 10.88.0.1 from `ns` `count` times every 10 ms while `during` runs; asserts
    /// that every ping was answered, or else that the kernels dropped at least as many
    /// packets from full queues (see [`Lab::queue_drops`]).
    pub fn flood(&self, side: &str, ns: &str, count: u32, during: impl FnOnce()) {
        let q0 = self.queue_drops();
        let (in0, _) = counters(&self.status_json(side));
        let ping = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-q", "-i", "0.01", "-W", "2", "-c",
            ])
            .arg(count.to_string())
            .arg("10.88.0.1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ping");
        // `during` runs once the replies come in through the tunnel.
        wait_until(WAIT, "ping replies through the tunnel", || {
            counters(&self.status_json(side)).0 >= in0 + 3
        });
        during();
        let out = ping.wait_with_output().expect("ping output");
        let t = text(&out);
        let received = t
            .split_once(&format!("{count} packets transmitted, "))
            .and_then(|(_, r)| r.split_once(" received"))
            .and_then(|(n, _)| n.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("ping's summary: {t}"));
        let queued = self.queue_drops().saturating_sub(q0);
        if received < count {
            eprintln!(
                "{} pings lost, {queued} packets dropped from full queues",
                count - received
            );
        }
        assert!(
            u64::from(count - received) <= queued,
            "pings lost during the rekey ({queued} packets dropped from full queues): {t}\n--- mifsec status:\n{:#}",
            self.status_json(side)
        );
    }
}

impl Lab {
    /// An iperf3 transfer through the tunnel: a one-shot server on 10.88.0.1 in `server_ns`
    /// (the gateway's protected network), a client in `client_ns` sending for `seconds` with
    /// `extra` arguments (e.g. `["-u", "-b", "50M"]`). Returns iperf3's JSON report; panics
    /// with both sides' output when either fails.
    pub fn iperf3(&self, server_ns: &str, client_ns: &str, seconds: u32, extra: &[&str]) -> Value {
        let server = Command::new("ip")
            .args([
                "netns",
                "exec",
                server_ns,
                "iperf3",
                "-s",
                "-1",
                "-B",
                "10.88.0.1",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("iperf3 -s");
        wait_listening(server_ns, 5201);
        let out = run(Command::new("ip")
            .args([
                "netns",
                "exec",
                client_ns,
                "iperf3",
                "-c",
                "10.88.0.1",
                "-J",
                "-t",
            ])
            .arg(seconds.to_string())
            .args(extra));
        let server = server.wait_with_output().expect("iperf3 server output");
        assert!(
            out.status.success(),
            "iperf3 through the tunnel: {}\n--- server:\n{}",
            text(&out),
            text(&server)
        );
        serde_json::from_slice(&out.stdout).expect("iperf3 JSON")
    }
}

/// Bits per second received at the end of an iperf3 TCP report.
pub fn iperf3_bps(report: &Value) -> f64 {
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
}

/// mifsec as a client of a strongSwan gateway, with `conn` and `child` lines added to
/// the connection and its child.
pub fn mifsec_client_config(lab: &Lab, conn: &str, child: &str) -> String {
    mifsec_client_config_with(
        lab,
        "aes128gcm16-prfsha256-x25519",
        "aes128gcm16-x25519",
        conn,
        child,
    )
}

/// mifsec as a client with the IKE `proposals` and the child's `esp_proposals` as given.
pub fn mifsec_client_config_with(
    lab: &Lab,
    ike: &str,
    esp: &str,
    conn: &str,
    child: &str,
) -> String {
    format!(
        r#"[dataplane]
workers = 1
control_socket = "{sock}"

[interfaces.wan]
device = "{dev}"
address = "198.18.9.2"

[connections.home]
remote_addrs = ["198.18.9.1"]
vips = ["0.0.0.0"]
proposals = ["{ike}"]
encap = true
start_action = "start"
{conn}

[connections.home.local]
auth = "psk"
id = "cl"

[connections.home.remote]
auth = "psk"
id = "gw"

[connections.home.children.net]
remote_ts = ["10.88.0.0/16"]
esp_proposals = ["{esp}"]
{child}

[secrets.ike-1]
id = ["cl", "gw"]
secret = "{PSK}"
"#,
        sock = lab.sock("cl").display(),
        dev = lab.cl_if,
    )
}

/// mifsec as a gateway for a strongSwan client, with `conn` and `child` lines added.
pub fn mifsec_gateway_config(lab: &Lab, conn: &str, child: &str) -> String {
    mifsec_gateway_config_with(
        lab,
        "aes128gcm16-prfsha256-x25519",
        "aes128gcm16-x25519",
        conn,
        child,
    )
}

/// mifsec as a gateway with the IKE `proposals` and the child's `esp_proposals` as given.
pub fn mifsec_gateway_config_with(
    lab: &Lab,
    ike: &str,
    esp: &str,
    conn: &str,
    child: &str,
) -> String {
    format!(
        r#"[dataplane]
workers = 1
control_socket = "{sock}"

[interfaces.wan]
device = "{dev}"
address = "198.18.9.1"

[connections.rw]
local_addrs = ["198.18.9.1"]
pools = ["p4"]
proposals = ["{ike}"]
{conn}

[connections.rw.local]
auth = "psk"
id = "gw"

[connections.rw.remote]
auth = "psk"
id = "cl"

[connections.rw.children.net]
local_ts = ["10.88.0.0/16"]
esp_proposals = ["{esp}"]
{child}

[pools.p4]
addrs = "10.77.0.0/24"

[secrets.ike-1]
id = ["gw", "cl"]
secret = "{PSK}"
"#,
        sock = lab.sock("gw").display(),
        dev = lab.gw_if,
    )
}
