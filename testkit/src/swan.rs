//! The strongSwan interop lab: two namespaces joined by a veth, charon (kernel-libipsec,
//! driven by scripts/swan.sh) on one side, `mifsec run` on the other, and the configurations
//! both sides start from (rendered from testkit/templates/, which scripts/bench_ike.py and
//! scripts/bench_flood.py read too).
//!
//! ```text
//!   client namespace  cl_if 198.18.9.2 ─── veth ─── 198.18.9.1 gw_if  gateway namespace
//!                                                    10.88.0.1 on lo (the protected network)
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cmd::{ip, run, text};
use crate::daemon::{mifsec_ctl, mifsec_status, start_daemon, stop};
use crate::netns::{Netns, addr_up, veth};
use crate::template::{MIFSEC_CLIENT, MIFSEC_GATEWAY, SWANCTL_CLIENT, SWANCTL_GATEWAY};
use crate::wait::{WAIT, poll, wait_until};

/// The pre-shared key of every configuration of the lab.
pub const PSK: &str = "interop-secret-0123456789";

/// scripts/swan.sh: installs, starts, loads and stops charon in a namespace.
pub fn swan_sh() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/swan.sh")
}

/// Waits until a TCP socket listens on `port` in namespace `ns` (an iperf3 server).
pub fn wait_listening(ns: &str, port: u16) {
    let filter = format!("sport = :{port}");
    wait_until(WAIT, &format!("a listener on port {port} in {ns}"), || {
        let out = run(Command::new("ip").args(["netns", "exec", ns, "ss", "-Hltn", &filter]));
        out.status.success() && !out.stdout.is_empty()
    });
}

/// Two namespaces (client, gateway) joined by a veth, 198.18.9.2 and .1; a scratch
/// directory; mifsec daemons and one charon. All removed on drop.
#[derive(Debug)]
pub struct Lab {
    pub cl_ns: String,
    pub gw_ns: String,
    pub cl_if: String,
    pub gw_if: String,
    pub dir: PathBuf,
    /// The `mifsec` binary the daemons run.
    pub bin: PathBuf,
    /// The `mifsec run` processes, in the order they were started.
    pub daemons: Vec<Child>,
    pub swan_dir: Option<PathBuf>,
    /// Deleted after the daemons and charon have stopped.
    _ns: Vec<Netns>,
}

impl Lab {
    /// The lab for test `tag` (a few letters, unique among the tests), with daemons running
    /// `bin`.
    pub fn new(tag: &str, bin: &str) -> Lab {
        let pid = std::process::id();
        let (cl_ns, gw_ns) = (format!("mfsw-{tag}-c{pid}"), format!("mfsw-{tag}-g{pid}"));
        let (cl_if, gw_if) = (format!("sw{tag}c{pid}"), format!("sw{tag}g{pid}"));
        let ns = vec![Netns::new(&cl_ns), Netns::new(&gw_ns)];
        veth(&cl_ns, &cl_if, &gw_ns, &gw_if);
        for (ns, dev, addr) in [
            (&ns[0], &cl_if, "198.18.9.2/24"),
            (&ns[1], &gw_if, "198.18.9.1/24"),
        ] {
            addr_up(&ns.name, dev, addr);
            ns.lo_up();
        }
        // The network behind the gateway.
        ip(&["-n", &gw_ns, "addr", "add", "10.88.0.1/32", "dev", "lo"]);
        Lab::assemble(tag, bin, cl_ns, gw_ns, &cl_if, &gw_if, ns)
    }

    /// A lab on namespaces the caller has built (`ns`, deleted on drop; `cl_ns` and `gw_ns`
    /// among them), with a fresh scratch directory for test `tag`.
    pub fn assemble(
        tag: &str,
        bin: &str,
        cl_ns: String,
        gw_ns: String,
        cl_if: &str,
        gw_if: &str,
        ns: Vec<Netns>,
    ) -> Lab {
        let dir = std::env::temp_dir().join(format!("mifsec-swan-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            cl_ns,
            gw_ns,
            cl_if: cl_if.into(),
            gw_if: gw_if.into(),
            dir,
            bin: bin.into(),
            daemons: Vec::new(),
            swan_dir: None,
            _ns: ns,
        }
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

    /// `swanctl ARGS` against the charon in `ns`.
    pub fn swanctl(&self, ns: &str, args: &[&str]) -> Output {
        let dir = self.swan_dir.as_ref().expect("charon started");
        run(Command::new(swan_sh())
            .arg("swanctl")
            .arg(ns)
            .arg(dir)
            .args(args))
    }

    /// `swanctl --initiate --child CHILD` by the charon in `ns`, the client of the mifsec
    /// gateway (`gw`); asserts that it succeeded (the failure shows both logs) and returns
    /// its output.
    pub fn swan_initiate(&self, ns: &str, child: &str) -> Output {
        let out = self.swanctl(ns, &["--initiate", "--child", child]);
        assert!(
            out.status.success(),
            "swanctl --initiate --child {child} in {ns}: {}\n--- mifsec log:\n{}\n--- charon log:\n{}",
            text(&out),
            self.log("gw"),
            self.swan_log()
        );
        out
    }

    /// Asserts that the charon in `ns` lists one established IKE SA with one installed
    /// child; returns the listing.
    pub fn swan_has_one_child(&self, ns: &str) -> String {
        let sas = text(&self.swanctl(ns, &["--list-sas"]));
        assert_eq!(sas.matches("ESTABLISHED").count(), 1, "{sas}");
        assert_eq!(sas.matches("INSTALLED").count(), 1, "{sas}");
        sas
    }

    /// charon's log so far.
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
        let log = self.dir.join(format!("{side}.log"));
        let sock = self.sock(side);
        let child = start_daemon(&self.bin, ns, &cfg, &log, &sock);
        self.daemons.push(child);
        sock
    }

    /// In a directory of its own that the daemon creates (and gives to the user it drops
    /// to, so that it can remove the socket when it stops).
    pub fn sock(&self, side: &str) -> PathBuf {
        self.dir
            .join(format!("run-{side}"))
            .join(format!("{side}.sock"))
    }

    /// The log of the daemon of `side`.
    pub fn log(&self, side: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{side}.log"))).unwrap_or_default()
    }

    /// `mifsec ARGS --socket` of `side`.
    pub fn mifsec(&self, side: &str, args: &[&str]) -> Output {
        mifsec_ctl(&self.bin, &self.sock(side), args)
    }

    /// `mifsec status --json` of `side`.
    pub fn status_json(&self, side: &str) -> Value {
        mifsec_status(&self.bin, &self.sock(side))
    }

    /// Waits until mifsec reports an established IKE SA with an installed child.
    pub fn wait_established(&self, side: &str) -> Value {
        poll(
            WAIT,
            Duration::from_millis(200),
            || {
                let st = self.status_json(side);
                if established(&st) { Ok(st) } else { Err(st) }
            },
            |st| {
                format!(
                    "no established IKE SA in mifsec ({side}):\n{st:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
                    self.log(side),
                    self.swan_log()
                )
            },
        )
    }

    /// `mifsec ctl terminate conn` on `side`; waits until neither mifsec nor the charon in
    /// `swan_ns` has an SA left.
    pub fn terminate_and_wait(&self, side: &str, conn: &str, swan_ns: &str) {
        let out = self.mifsec(side, &["ctl", "terminate", conn]);
        assert!(out.status.success(), "ctl terminate: {}", text(&out));
        poll(
            WAIT,
            Duration::from_millis(200),
            || {
                let sas = text(&self.swanctl(swan_ns, &["--list-sas"]));
                let st = self.status_json(side);
                let gone_here = st["ike_sas"].as_array().is_some_and(Vec::is_empty)
                    && st["sas"].as_array().is_some_and(Vec::is_empty);
                if !sas.contains("ESTABLISHED") && gone_here {
                    Ok(())
                } else {
                    Err((sas, st))
                }
            },
            |(sas, st)| format!("terminate: strongSwan still has\n{sas}\nmifsec still has {st:#}"),
        );
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

    /// Asserts that a ping of `dst` from `ns` goes through the tunnel of `side`; the
    /// failure shows its status and both logs.
    pub fn ping_ok(&self, side: &str, ns: &str, dst: &str) {
        let ping = self.ping(ns, dst);
        assert!(
            ping.status.success(),
            "ping {dst} through the tunnel: {}\n--- status:\n{:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
            text(&ping),
            self.status_json(side),
            self.log(side),
            self.swan_log()
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // SIGTERM first: the daemon deletes its IKE SAs and stops cleanly.
        for c in &mut self.daemons {
            stop(c);
        }
        if let Some(d) = &self.swan_dir {
            let _ = Command::new(swan_sh()).arg("stop").arg(d).status();
        }
        if std::env::var_os("MIFSEC_KEEP_LAB").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Whether a mifsec status shows an established IKE SA with at least one child.
pub fn established(st: &Value) -> bool {
    st["ike_sas"].as_array().is_some_and(|l| {
        l.iter().any(|s| {
            s["state"] == "ESTABLISHED" && s["children"].as_array().is_some_and(|c| !c.is_empty())
        })
    })
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

/// The strongSwan gateway (testkit/templates/swanctl-gateway.conf) with `vars` put in.
///
/// In this and the other configurations below, `vars` come before (and override) the lab's
/// own values (`PSK`, and for mifsec `SOCK` and `DEV`).
pub fn swan_gateway(vars: &[(&str, &str)]) -> String {
    SWANCTL_GATEWAY.render(&[vars, &[("PSK", PSK)]].concat())
}

/// The strongSwan client (testkit/templates/swanctl-client.conf) with `vars` put in.
pub fn swan_client(vars: &[(&str, &str)]) -> String {
    SWANCTL_CLIENT.render(&[vars, &[("PSK", PSK)]].concat())
}

/// The gateway's swanctl.conf for the rekey tests: PFS with X25519 on child rekeys.
pub fn swan_gateway_conf() -> String {
    swan_gateway(&[])
}

/// The client's swanctl.conf, with PFS.
pub fn swan_client_conf() -> String {
    swan_client(&[])
}

/// mifsec as the client of the lab (testkit/templates/mifsec-client.toml), with `vars` put
/// in; it initiates at start (`start_action = "start"`, before any `CONN` lines).
pub fn mifsec_client(lab: &Lab, vars: &[(&str, &str)]) -> String {
    let sock = lab.sock("cl").display().to_string();
    let conn = vars
        .iter()
        .find(|(k, _)| *k == "CONN")
        .map_or("", |(_, v)| *v);
    let conn = ["start_action = \"start\"", conn]
        .iter()
        .filter(|l| !l.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("\n");
    let mut all: Vec<(&str, &str)> = vars.iter().filter(|(k, _)| *k != "CONN").copied().collect();
    all.extend([
        ("PSK", PSK),
        ("SOCK", sock.as_str()),
        ("DEV", lab.cl_if.as_str()),
        ("CONN", conn.as_str()),
    ]);
    MIFSEC_CLIENT.render(&all)
}

/// mifsec as the gateway of the lab (testkit/templates/mifsec-gateway.toml), with `vars`
/// put in.
pub fn mifsec_gateway(lab: &Lab, vars: &[(&str, &str)]) -> String {
    let sock = lab.sock("gw").display().to_string();
    let all = [
        vars,
        &[
            ("PSK", PSK),
            ("SOCK", sock.as_str()),
            ("DEV", lab.gw_if.as_str()),
        ],
    ]
    .concat();
    MIFSEC_GATEWAY.render(&all)
}

/// mifsec as a client of a strongSwan gateway, with `conn` and `child` lines added to
/// the connection and its child.
pub fn mifsec_client_config(lab: &Lab, conn: &str, child: &str) -> String {
    mifsec_client(lab, &[("CONN", conn), ("CHILD", child)])
}

/// mifsec as a gateway for a strongSwan client, with `conn` and `child` lines added.
pub fn mifsec_gateway_config(lab: &Lab, conn: &str, child: &str) -> String {
    mifsec_gateway(lab, &[("CONN", conn), ("CHILD", child)])
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
        poll(
            WAIT,
            Duration::from_millis(100),
            || {
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
                found.filter(|s| Some(s) != not).ok_or(st)
            },
            |st| {
                format!(
                    "mifsec ({side}) did not settle: {st:#}\n--- mifsec log:\n{}\n--- charon log:\n{}",
                    self.log(side),
                    self.swan_log()
                )
            },
        )
    }

    /// Waits until `side` has settled on a child other than `before`'s under the same IKE SA
    /// (a child rekey): new SPIs both ways, the IKE SPIs kept; strongSwan in `swan_ns` agrees.
    pub fn child_rekeyed(&self, side: &str, before: &Spis, swan_ns: &str) -> Spis {
        let s1 = self.settled(side, Some(before));
        assert_eq!(
            (&s1.spi_i, &s1.spi_r),
            (&before.spi_i, &before.spi_r),
            "same IKE SA"
        );
        assert_ne!(s1.child_in, before.child_in);
        assert_ne!(s1.child_out, before.child_out);
        self.swan_agrees(swan_ns, &s1);
        s1
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

    /// Starts `ping -q -i 0.01 -W 2 -c count 10.88.0.1` in `ns` (output piped) and waits
    /// until `side` counts its replies coming in through the tunnel.
    pub fn ping_stream(&self, side: &str, ns: &str, count: u32) -> Child {
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
        wait_until(WAIT, "ping replies through the tunnel", || {
            counters(&self.status_json(side)).0 >= in0 + 3
        });
        ping
    }

    /// Pings 10.88.0.1 from `ns` `count` times every 10 ms while `during` runs; asserts
    /// that every ping was answered, or else that the kernels dropped at least as many
    /// packets from full queues (see [`Lab::queue_drops`]).
    pub fn flood(&self, side: &str, ns: &str, count: u32, during: impl FnOnce()) {
        let q0 = self.queue_drops();
        // `during` runs once the replies come in through the tunnel.
        let ping = self.ping_stream(side, ns, count);
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

/// Runs `pki ARGS`, returns its output (asserting success).
pub fn pki(args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("pki")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strongSwan's pki tool (strongswan-pki)");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "pki {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// strongSwan's `pki` tool: a CA (DN `C=CH, O=mifsec lab, CN=CA_NAME`) and certificates for `gw` and `cl`, keys of `kind` (`ecdsa` or `rsa`), all PEM.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate.
    pub ca: Vec<u8>,
    /// `gw`'s certificate and key.
    pub gw: (Vec<u8>, Vec<u8>),
    /// `cl`'s certificate and key.
    pub cl: (Vec<u8>, Vec<u8>),
}

pub fn make_pki(dir: &Path, kind: &str, ca_name: &str) -> Pki {
    let size = if kind == "rsa" { "2048" } else { "256" };
    let gen_key = || {
        pki(
            &["--gen", "--type", kind, "--size", size, "--outform", "pem"],
            None,
        )
    };
    let ca_key = gen_key();
    let ca_key_file = dir.join(format!("{kind}-{}-ca.key", ca_name.len()));
    std::fs::write(&ca_key_file, &ca_key).unwrap();
    let dn = format!("C=CH, O=mifsec lab, CN={ca_name}");
    let ca = pki(
        &[
            "--self",
            "--ca",
            "--lifetime",
            "30",
            "--type",
            kind,
            "--dn",
            &dn,
            "--outform",
            "pem",
            "--in",
            ca_key_file.to_str().unwrap(),
        ],
        None,
    );
    let ca_file = dir.join(format!("{kind}-{}-ca.pem", ca_name.len()));
    std::fs::write(&ca_file, &ca).unwrap();
    let issue = |name: &str| {
        let key = gen_key();
        let public = pki(&["--pub", "--type", kind, "--outform", "pem"], Some(&key));
        let dn = format!("C=CH, O=mifsec lab, CN={name}");
        let cert = pki(
            &[
                "--issue",
                "--lifetime",
                "30",
                "--type",
                "pub",
                "--cacert",
                ca_file.to_str().unwrap(),
                "--cakey",
                ca_key_file.to_str().unwrap(),
                "--dn",
                &dn,
                "--san",
                name,
                "--outform",
                "pem",
            ],
            Some(&public),
        );
        (cert, key)
    };
    Pki {
        gw: issue("gw"),
        cl: issue("cl"),
        ca,
    }
}

/// The files strongSwan in `lab` loads: its certificate and key, the CA.
pub fn swan_files(lab: &Lab, who: &str, (cert, key): &(Vec<u8>, Vec<u8>), ca: &[u8]) {
    let d = lab.dir.join("swan/swanctl");
    for sub in ["x509", "x509ca", "private"] {
        std::fs::create_dir_all(d.join(sub)).unwrap();
    }
    std::fs::write(d.join(format!("x509/{who}.pem")), cert).unwrap();
    std::fs::write(d.join(format!("private/{who}.key")), key).unwrap();
    std::fs::write(d.join("x509ca/ca.pem"), ca).unwrap();
}

/// The lab's manual SA key, client to gateway (cipher key and salt, hex).
pub const KEY1: &str = "000102030405060708090a0b0c0d0e0f10111213";
/// The lab's manual SA key, gateway to client.
pub const KEY2: &str = "101112131415161718191a1b1c1d1e1f20212223";

/// A manually keyed SA `tunnel` (aes128gcm16 and ESN, the defaults) with one path on
/// interface wan, appended to a lab configuration.
pub fn with_manual_sa(cfg: String, client: bool) -> String {
    let (spi_out, key_out, spi_in, key_in, local_ts, remote_ts, remote) = if client {
        (
            0x1001,
            KEY1,
            0x2001,
            KEY2,
            "10.1.0.0/24",
            "10.2.0.0/24",
            "198.18.9.1",
        )
    } else {
        (
            0x2001,
            KEY2,
            0x1001,
            KEY1,
            "10.2.0.0/24",
            "10.1.0.0/24",
            "198.18.9.2",
        )
    };
    format!(
        r#"{cfg}
[sa.tunnel]
spi_out = {spi_out}
key_out = "{key_out}"
spi_in = {spi_in}
key_in = "{key_in}"
local_ts = ["{local_ts}"]
remote_ts = ["{remote_ts}"]

[[sa.tunnel.paths]]
name = "fast"
interface = "wan"
remote = "{remote}:4500"
"#
    )
}
