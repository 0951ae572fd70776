//! The README's tutorial, run as written: mifsec as a client of a strongSwan 5.9 gateway
//! with a PSK, from exactly the two files the README quotes (examples/tutorial/swanctl.conf
//! and examples/tutorial/client.toml), in two namespaces whose devices are both `eth0`
//! (198.18.9.1, the gateway, and 198.18.9.2, the laptop), 10.88.0.1 behind the gateway.
//!
//! It checks that the README quotes both files byte for byte, runs the tutorial's commands
//! (`mifsec check`, `mifsec run`, `mifsec status`, a ping, `swanctl --list-sas`) and that
//! the `mifsec status` the README shows has the lines this run printed (numbers, SPIs and
//! units aside).
//!
//! Needs root (namespaces, TUN, strongSwan); see swan_interop.rs.

mod swan;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mifsec_testkit::{Netns, addr_up, veth};
use swan::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The body of the README's fenced block that follows the line `marker` (the first fence
/// after it).
fn block_after(readme: &str, marker: &str) -> String {
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("the README has no {marker:?}"));
    let rest = &readme[at..];
    let open = rest.find("\n```").expect("a fenced block after the marker") + 1;
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    let close = body.find("\n```").expect("the block's closing fence");
    body[..=close].to_owned()
}

/// A status line with what changes from run to run made uniform: every run of hex digits
/// and dots that holds a digit (numbers, SPIs, addresses' last parts) becomes `#`, unit
/// prefixes go, and runs of spaces become one.
fn shape(line: &str) -> String {
    let mut out = String::new();
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.chars().any(|c| c.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in line.chars() {
        if c.is_ascii_hexdigit() || c == '.' {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    let out = out
        .replace("Mbit/s", "bit/s")
        .replace("kbit/s", "bit/s")
        .replace("Gbit/s", "bit/s")
        .replace("# kB", "# B")
        .replace("# MB", "# B")
        .replace("# GB", "# B")
        .replace("µs", "ms");
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn the_readme_tutorial_connects_mifsec_to_a_strongswan_gateway() {
    require_root();
    let readme = read("README.md");
    let swanctl_conf = read("examples/tutorial/swanctl.conf");
    let client_toml = read("examples/tutorial/client.toml");
    // The README quotes both files as they are.
    assert_eq!(
        block_after(&readme, "examples/tutorial/swanctl.conf"),
        swanctl_conf,
        "README.md's swanctl.conf differs from examples/tutorial/swanctl.conf"
    );
    assert_eq!(
        block_after(&readme, "examples/tutorial/client.toml"),
        client_toml,
        "README.md's client.toml differs from examples/tutorial/client.toml"
    );

    // The tutorial's two machines: eth0 on each, the gateway 198.18.9.1 with 10.88.0.1
    // behind it, the laptop 198.18.9.2.
    let pid = std::process::id();
    let (cl_ns, gw_ns) = (format!("mfsw-tu-c{pid}"), format!("mfsw-tu-g{pid}"));
    let ns = vec![Netns::new(&cl_ns), Netns::new(&gw_ns)];
    veth(&cl_ns, "eth0", &gw_ns, "eth0");
    addr_up(&cl_ns, "eth0", "198.18.9.2/24");
    addr_up(&gw_ns, "eth0", "198.18.9.1/24");
    for n in &ns {
        n.lo_up();
    }
    ip(&["-n", &gw_ns, "addr", "add", "10.88.0.1/32", "dev", "lo"]);
    let mut lab = Lab::assemble("tu", BIN, cl_ns.clone(), gw_ns.clone(), "eth0", "eth0", ns);

    // The gateway: `swanctl --load-all` of the tutorial's swanctl.conf.
    lab.start_swan(&gw_ns, &swanctl_conf);

    // The laptop: `install -m 600 client.toml /etc/mifsec/`, `mifsec check`, `mifsec run`
    // (here with the lab's own control socket).
    let cfg = lab.dir.join("client.toml");
    std::fs::write(&cfg, &client_toml).unwrap();
    std::fs::set_permissions(&cfg, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let check = run(Command::new(BIN).arg("check").arg("--config").arg(&cfg));
    assert!(check.status.success(), "mifsec check: {}", text(&check));
    eprintln!("--- mifsec check --config client.toml:\n{}", text(&check));

    let sock = lab.sock("cl");
    let log = lab.dir.join("cl.log");
    let mut daemon = Command::new("ip")
        .args(["netns", "exec", &cl_ns])
        .arg(BIN)
        .args(["run", "--config"])
        .arg(&cfg)
        .arg("--socket")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("mifsec run");
    wait_until(WAIT, "the daemon's control socket", || {
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "mifsec run exited: {}",
            lab.log("cl")
        );
        sock.exists()
    });
    lab.daemons.push(daemon);

    // `start_action = "start"`: it connects by itself.
    lab.wait_established("cl");
    lab.ping_ok("cl", &cl_ns, "10.88.0.1");
    let sas = lab.swan_has_one_child(&gw_ns);
    eprintln!("--- swanctl --list-sas (gateway):\n{sas}");
    assert!(sas.contains("laptop.example"), "{sas}");
    assert!(sas.contains("10.77.0.1/32"), "{sas}");

    let st = lab.status_json("cl");
    eprintln!("--- mifsec status --json:\n{st:#}");
    let ike = &st["ike_sas"][0];
    assert_eq!(ike["name"], "home", "{ike:#}");
    assert_eq!(ike["vips"][0], "10.77.0.1", "{ike:#}");
    assert_eq!(ike["children"][0]["name"], "net", "{ike:#}");
    let (inp, outp) = counters(&st);
    assert!(inp >= 3 && outp >= 3, "SA counters in {inp} out {outp}");

    // What the README says you see.
    let out = lab.mifsec("cl", &["status"]);
    assert!(out.status.success(), "mifsec status: {}", text(&out));
    let human = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("--- mifsec status:\n{human}");
    let shown = block_after(&readme, "<!-- tutorial: mifsec status -->");
    // Packets outside every SA (the kernel's own IPv6 router solicitations into the TUN)
    // come or not; that line is shown only when there are some.
    let lines = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with("outside SAs:"))
            .map(shape)
            .collect()
    };
    let (got, want) = (lines(&human), lines(&shown));
    assert_eq!(
        got, want,
        "the README's tutorial status and this run's differ in more than figures:\n--- run:\n{human}\n--- README:\n{shown}"
    );
}
