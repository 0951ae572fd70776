//! `mifsec top` as an operator sees it, in a real terminal: tmux runs it in a detached
//! session of fixed size (its own server, `tmux -L`), `capture-pane` reads the screen and
//! `send-keys` types. Against two mifsec daemons of the multi-interface lab
//! (`mifsec_testkit::mif`: one IKE SA, one child SA with the 2 x 2 paths):
//!
//! * started before any daemon: "daemon unreachable", and it keeps trying;
//! * the daemons come: the IKE SA, its child, the child's engine SA and its four paths on
//!   screen, and under a ping stream a path with a non-zero rate;
//! * the client daemon stops: "daemon unreachable" again, `top` still running;
//! * `q`: it exits with 0, the terminal restored (main screen, line discipline back in
//!   canonical mode with echo, cursor shown), nothing of the view left on the main screen.
//!
//! Needs root (namespaces, TUN) and tmux.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use mifsec_testkit::mif::{MifLab, client_inner, gateway_inner};
use mifsec_testkit::{WAIT, poll, require_root, run};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mifsec");
const CONN: &str = "mif = true";
const GW_CONN: &str = "mif = true";
const WIDTH: u16 = 132;
const HEIGHT: u16 = 30;

/// A tmux server of our own (`-L`), killed on drop, with one session running `cmd`.
struct Tmux {
    server: String,
}

impl Tmux {
    fn start(cmd: &str) -> Tmux {
        let t = Tmux {
            server: format!("mifsec-top-{}", std::process::id()),
        };
        let out = t.tmux(&[
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "top",
            "-x",
            &WIDTH.to_string(),
            "-y",
            &HEIGHT.to_string(),
            cmd,
            ";",
            "set-option",
            "-t",
            "top",
            "remain-on-exit",
            "on",
        ]);
        assert!(out.0, "tmux new-session: {}", out.1);
        t
    }

    fn tmux(&self, args: &[&str]) -> (bool, String) {
        let out = run(Command::new("tmux").arg("-L").arg(&self.server).args(args));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// The visible screen, as text.
    fn screen(&self) -> String {
        let (ok, s) = self.tmux(&["capture-pane", "-p", "-t", "top"]);
        assert!(ok, "capture-pane");
        s
    }

    /// A pane variable (`#{alternate_on}`, `#{pane_dead}`, ...).
    fn var(&self, name: &str) -> String {
        let (ok, s) = self.tmux(&[
            "display-message",
            "-p",
            "-t",
            "top",
            &format!("#{{{name}}}"),
        ]);
        assert!(ok, "display-message {name}");
        s.trim().to_owned()
    }

    fn keys(&self, keys: &str) {
        let (ok, _) = self.tmux(&["send-keys", "-t", "top", keys]);
        assert!(ok, "send-keys {keys}");
    }

    /// Waits until the screen satisfies `want` (which says what is missing, if anything).
    fn wait_screen(&self, what: &str, want: impl Fn(&str) -> Result<(), String>) -> String {
        poll(
            WAIT,
            Duration::from_millis(100),
            || {
                let s = self.screen();
                match want(&s) {
                    Ok(()) => Ok(s),
                    Err(e) => Err((e, s)),
                }
            },
            |(e, s)| format!("{what}: {e}; the screen:\n{s}"),
        )
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// Whether `line` shows a rate above zero: a number followed by `bit/s`, `kbit/s`, ...
fn nonzero_rate(line: &str) -> bool {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .any(|w| w[1].ends_with("bit/s") && w[0].parse::<f64>().is_ok_and(|x| x > 0.0))
}

/// The names of the child's paths in the client's status.
fn path_names(st: &Value) -> Vec<String> {
    st["ike_sas"][0]["children"][0]["mif"]["paths"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect()
}

/// A ping stream through the child SA (at most 60 s), stopped on drop.
struct Ping(Child);

impl Ping {
    fn start(ns: &str) -> Ping {
        let child = Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-q", "-i", "0.02", "-c", "3000", "-s", "1000",
            ])
            .args(["-I", &client_inner(0), &gateway_inner(0)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting ping");
        Ping(child)
    }
}

impl Drop for Ping {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[cfg_attr(skip_root_tests, ignore = "needs root (MIFSEC_SKIP_ROOT_TESTS=1)")]
fn top_shows_sas_paths_and_rates_and_restores_the_terminal() {
    require_root();
    assert!(
        run(Command::new("tmux").arg("-V")).status.success(),
        "this test needs tmux (scripts/test.sh installs it)"
    );
    let mut lab = MifLab::new("top", BIN, 1);
    let sock = lab.sock("cl");
    let script = lab.dir.join("top.sh");
    // After top: its exit status, and whether the line discipline is canonical with echo
    // again (raw mode clears both).
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n{BIN} top --socket {} --interval 0.2\necho \"TOP-EXIT=$?\"\n\
             echo \"TTY:$(stty -a | tr ' ;' '\\n\\n' | grep -E -x -- '-?(icanon|echo)' | tr '\\n' ' ')\"\n\
             echo READY\nread line\necho \"READ:$line\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let tmux = Tmux::start(&format!("sh {}", script.display()));

    // No daemon yet: said so, and top keeps running.
    tmux.wait_screen("no daemon yet", |s| {
        if s.contains("daemon unreachable") && s.contains("mifsec top") {
            Ok(())
        } else {
            Err("no 'daemon unreachable'".into())
        }
    });
    assert_eq!(
        tmux.var("alternate_on"),
        "1",
        "top draws on the alternate screen"
    );

    // The daemons come up; top finds the client's socket by itself.
    let st = lab.start_pair(1, CONN, "", GW_CONN);
    let child_sa = st["ike_sas"][0]["children"][0]["sa"]
        .as_str()
        .expect("the child's engine SA")
        .to_owned();
    let paths = poll(
        WAIT,
        Duration::from_millis(100),
        || {
            let p = path_names(&lab.status_json("cl"));
            if p.len() == 4 { Ok(p) } else { Err(p) }
        },
        |p| format!("the child's 2 x 2 paths: {p:?}\n{}", lab.dump()),
    );
    let _ping = Ping::start(&lab.cl_ns);
    let screen = tmux.wait_screen("the SA, its child, its paths and a rate", |s| {
        let mut missing: Vec<String> = ["mif #1", "ESTABLISHED", "initiator", "  c0", "INSTALLED"]
            .iter()
            .map(|w| (*w).to_owned())
            .chain([child_sa.clone(), format!("paths of {child_sa}")])
            .chain(paths.iter().cloned())
            .filter(|w| !s.contains(w.as_str()))
            .collect();
        if !s.lines().any(|l| {
            l.contains("->") && paths.iter().any(|p| l.contains(p.as_str())) && nonzero_rate(l)
        }) {
            missing.push("a path line with a non-zero rate".into());
        }
        if s.contains("daemon unreachable") {
            missing.push("(still unreachable)".into());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("missing {missing:?}"))
        }
    });
    eprintln!("mifsec top under traffic:\n{screen}");

    // The client's daemon goes away: top says so and stays.
    let cl = lab.daemons.len() - 1;
    mifsec_testkit::stop(&mut lab.daemons[cl]);
    tmux.wait_screen("the daemon gone", |s| {
        if s.contains("daemon unreachable") {
            Ok(())
        } else {
            Err("no 'daemon unreachable'".into())
        }
    });
    assert_eq!(tmux.var("pane_dead"), "0", "top is still running");

    // q: top exits, and the terminal is as it was: the shell's next lines on the main
    // screen, the cursor shown, and a line typed is echoed and read whole (canonical mode).
    tmux.keys("q");
    let after = tmux.wait_screen("top's exit", |s| {
        if s.contains("READY") {
            Ok(())
        } else {
            Err("no READY".into())
        }
    });
    assert!(after.contains("TOP-EXIT=0"), "{after}");
    assert!(
        after.contains("TTY:icanon echo") || after.contains("TTY:echo icanon"),
        "the line discipline is not back to canonical with echo:\n{after}"
    );
    assert!(
        !after.contains("paths of"),
        "the view is left on the main screen:\n{after}"
    );
    assert_eq!(
        tmux.var("alternate_on"),
        "0",
        "back on the main screen:\n{after}"
    );
    assert_eq!(
        tmux.var("cursor_flag"),
        "1",
        "the cursor is shown:\n{after}"
    );
    tmux.keys("typed");
    tmux.wait_screen("the typed word echoed", |s| {
        if s.lines().any(|l| l.trim() == "typed") {
            Ok(())
        } else {
            Err("not echoed".into())
        }
    });
    tmux.keys("Enter");
    tmux.wait_screen("the line read", |s| {
        if s.contains("READ:typed") {
            Ok(())
        } else {
            Err("no READ:typed".into())
        }
    });
}
