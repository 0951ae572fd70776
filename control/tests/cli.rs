//! The `mifsec` binary as an operator runs it: `check`, `--help`, usage errors, and clients
//! with no daemon. (The daemon itself is exercised by `daemon_netns.rs`, which needs root.)

use std::path::PathBuf;
use std::process::{Command, Output};

fn mifsec(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mifsec"))
        .args(args)
        .output()
        .expect("running mifsec")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory for this test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("mifsec-cli-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
    fn file(&self, name: &str, text: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The example of docs/CONFIG.md.
fn doc_example() -> String {
    let doc = include_str!("../../docs/CONFIG.md");
    let start = doc.find("```toml\n").unwrap() + "```toml\n".len();
    let len = doc[start..].find("```").unwrap();
    doc[start..start + len].to_owned()
}

#[test]
fn check_accepts_the_documented_example() {
    let dir = Scratch::new("good");
    let f = dir.file("client.toml", &doc_example());
    let o = mifsec(&["check", "--config", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(
            "sa tunnel: tunnel, aes128gcm16, esn, policy aggregate, out 00001001, in 00002001"
        ),
        "{out}"
    );
    assert!(
        out.contains("path fast: link1 -> 198.18.1.1:4500, active, weight 300"),
        "{out}"
    );
    assert!(
        out.contains("interface link2: 198.18.2.2:4500 on veth-c2"),
        "{out}"
    );
    assert!(out.ends_with(&format!("{f}: OK\n")), "{out}");
    // No key material, in any form.
    assert!(
        !out.contains("0001020304") && !out.contains("1011121314"),
        "{out}"
    );
    // The file holds keys: readable by others, a warning (on stderr; still OK); private,
    // none.
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = mifsec(&["check", "--config", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "warning: {f}: holds keys or secrets but is readable by group and others (mode \
             0644); chmod 600 it\n"
        )
    );
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = mifsec(&["check", "--config", &f]);
    assert!(
        o.status.success() && stderr(&o).is_empty(),
        "{}",
        stderr(&o)
    );
}

#[test]
fn check_warns_about_a_short_psk_without_showing_it() {
    let dir = Scratch::new("psk");
    let text = "[connections.c]\nremote_addrs = [\"192.0.2.1\"]\n[connections.c.local]\n\
                id = \"a\"\n[connections.c.children.n]\n[secrets.s]\nid = [\"a\"]\n\
                secret = \"hunter2\"\n";
    let f = dir.file("ike.toml", text);
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = mifsec(&["check", "--config", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        stderr(&o),
        format!(
            "warning: {f}:8: secrets.s.secret: a PSK of 7 bytes is short; use at least 20 \
             random bytes\n"
        )
    );
    assert!(!stdout(&o).contains("hunter2"));
    // A wrong type: the error names the key, never the value.
    let f = dir.file("bad.toml", &text.replace("\"hunter2\"", "20242025"));
    let o = mifsec(&["check", "--config", &f]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!("{f}:8: secrets.s.secret: invalid type: integer, expected a string\n")
    );
}

#[test]
fn check_names_file_line_and_key_of_an_error() {
    let dir = Scratch::new("bad");
    let text = doc_example().replace("remote = \"198.18.2.1:4500\"", "remote = \"198.18.2.1\"");
    let f = dir.file("gw.toml", &text);
    let line = text
        .lines()
        .position(|l| l == "remote = \"198.18.2.1\"")
        .unwrap()
        + 1;
    let o = mifsec(&["check", "--config", &f]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!("{f}:{line}: sa.tunnel.paths[1].remote: \"198.18.2.1\" is not an address:port\n")
    );
    assert!(stdout(&o).is_empty());

    let text = doc_example().replace("policy = ", "polcy = ");
    let line = text
        .lines()
        .position(|l| l.starts_with("polcy = "))
        .unwrap()
        + 1;
    let f = dir.file("typo.toml", &text);
    let o = mifsec(&["check", "--config", &f]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).starts_with(&format!("{f}:{line}: sa.tunnel.polcy: unknown key")),
        "{}",
        stderr(&o)
    );

    let o = mifsec(&[
        "check",
        "--config",
        &dir.0.join("missing.toml").display().to_string(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("missing.toml: cannot read: "),
        "{}",
        stderr(&o)
    );
}

#[test]
fn run_refuses_a_bad_config_with_exit_2() {
    let dir = Scratch::new("run");
    let f = dir.file("gw.toml", "[dataplane]\nworkers = 0\n");
    let o = mifsec(&["run", "--config", &f]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        format!("{f}:2: dataplane.workers: must be 1 to 1024, got 0\n")
    );
}

#[test]
fn help() {
    for args in [&["--help"][..], &["help"], &["-h"]] {
        let o = mifsec(args);
        assert!(o.status.success(), "{args:?}");
        let out = stdout(&o);
        assert!(out.contains("Usage: mifsec <COMMAND>"), "{out}");
        for cmd in ["run", "check", "status", "keys", "ctl"] {
            assert!(
                out.lines()
                    .any(|l| l.trim_start().starts_with(&format!("{cmd} "))),
                "{cmd} missing from\n{out}"
            );
        }
        // The exit codes are documented.
        for code in [
            "0   success",
            "1   the daemon refused the request",
            "2   usage error",
            "3   the daemon cannot be reached",
        ] {
            assert!(out.contains(code), "{code} missing from\n{out}");
        }
    }
    // Per-command help, with its options.
    for (args, want) in [
        (
            &["status", "--help"][..],
            &["Usage: mifsec status", "--json", "--socket <PATH>"][..],
        ),
        (
            &["help", "keys"],
            &["Usage: mifsec keys [OPTIONS] --wireshark"],
        ),
        (
            &["run", "-h"],
            &[
                "Usage: mifsec run [OPTIONS] --config <FILE>",
                "--socket <PATH>",
            ],
        ),
        (
            &["ctl", "--help"],
            &[
                "handover",
                "add-interface",
                "remove-interface",
                "policy",
                "add-path",
                "remove-path",
                "initiate",
                "terminate",
                "rekey",
                "move",
                "mif",
                "clone",
            ],
        ),
        (
            &["ctl", "add-path", "--help"],
            &["Usage: mifsec ctl add-path [OPTIONS] --interface <I> --remote <A:P> <SA> <NAME>"],
        ),
        (
            &["ctl", "mif", "--help"],
            &[
                "Usage: mifsec ctl mif [OPTIONS] <CONN> <OP> [IFACE]...",
                "soft-handover",
                "--spi",
            ],
        ),
    ] {
        let o = mifsec(args);
        assert!(o.status.success(), "{args:?}");
        let out = stdout(&o);
        for w in want {
            assert!(out.contains(w), "{args:?}: {w} missing from\n{out}");
        }
    }
}

#[test]
fn usage_errors_exit_2_with_usage_on_stderr() {
    for (args, msg) in [
        (
            &["frobnicate"][..],
            "error: unrecognized subcommand 'frobnicate'",
        ),
        (&[], "A userspace IPsec VPN"),
        (
            &["status", "--bogus"],
            "error: unexpected argument '--bogus' found",
        ),
        (
            &["ctl", "handover", "tunnel"],
            "error: the following required arguments were not provided:\n  <PATH>",
        ),
        (
            &["keys"],
            "error: the following required arguments were not provided:\n  --wireshark",
        ),
        (
            &["run"],
            "error: the following required arguments were not provided:\n  --config <FILE>",
        ),
        (
            &["ctl", "mif", "home", "remove"],
            "error: mif remove takes IFACE, got []",
        ),
    ] {
        let o = mifsec(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert!(err.starts_with(msg), "{args:?}: {err}");
        assert!(err.contains("Usage: mifsec"), "{err}");
        assert!(stdout(&o).is_empty());
    }
}

#[test]
fn clients_without_a_daemon_fail_clearly_with_exit_3() {
    let dir = Scratch::new("nosock");
    let sock = dir.0.join("none.sock").display().to_string();
    for args in [
        &["status", "--socket", &sock][..],
        &["status", "--json", "--socket", &sock],
        &["keys", "--wireshark", "--socket", &sock],
        &["ctl", "handover", "tunnel", "fast", "--socket", &sock],
        &["ctl", "--socket", &sock, "initiate", "home"],
        &["log", "--socket", &sock],
        &["events", "--json", "--socket", &sock],
        &["status", "--watch", "--socket", &sock],
    ] {
        let o = mifsec(args);
        assert_eq!(o.status.code(), Some(3), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!(
                "mifsec: cannot connect to {sock}: No such file or directory"
            )),
            "{args:?}: {err}"
        );
        assert!(err.contains("is `mifsec run` running"), "{err}");
        assert!(stdout(&o).is_empty());
    }
}

/// A daemon that answers with a refusal: exit 1, its message on stderr. (A listener in the
/// test stands in for the daemon: one request, one refusal.)
#[test]
fn a_refused_request_exits_1() {
    use std::io::{BufRead as _, BufReader, Write as _};
    let dir = Scratch::new("refuse");
    let sock = dir.0.join("ctl.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut line = String::new();
        BufReader::new(&conn).read_line(&mut line).unwrap();
        (&conn)
            .write_all(b"{\"ok\":false,\"error\":\"no SA named tunnel\"}\n")
            .unwrap();
        line
    });
    let s = sock.display().to_string();
    let o = mifsec(&["ctl", "policy", "tunnel", "redundant", "--socket", &s]);
    let request = server.join().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o), "mifsec: no SA named tunnel\n");
    assert!(stdout(&o).is_empty());
    let v: serde_json::Value = serde_json::from_str(&request).unwrap();
    assert_eq!(v["cmd"], "policy", "{request}");
    assert_eq!(v["policy"], "redundant", "{request}");
}

#[test]
fn version() {
    let o = mifsec(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        stdout(&o),
        format!("mifsec {}\n", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_accepts_log_levels_and_refuses_an_unknown_one() {
    let dir = Scratch::new("loglevel");
    let f = dir.file(
        "gw.toml",
        "[log]\nlevel = \"warn,mifsec_control::ctl=debug\"\n",
    );
    let o = mifsec(&["check", "--config", &f]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("  log level warn,mifsec_control::ctl=debug\n"),
        "{}",
        stdout(&o)
    );
    for (text, line, err) in [
        (
            "[log]\nlevel = \"verbose\"\n",
            2,
            "log.level: \"verbose\" is not a level (off, error, warn, info, debug, trace)",
        ),
        (
            "# the daemon's log\n[log]\n\nlevel = \"info,mifsec_control::ctl=loud\"\n",
            4,
            "log.level: \"loud\" in \"mifsec_control::ctl=loud\" is not a level (off, error, \
             warn, info, debug, trace)",
        ),
        ("[log]\nlevle = \"info\"\n", 2, "log.levle: unknown key"),
    ] {
        let f = dir.file("bad.toml", text);
        let o = mifsec(&["check", "--config", &f]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(
            stderr(&o).starts_with(&format!("{f}:{line}: {err}")),
            "{text}: {}",
            stderr(&o)
        );
        assert!(stdout(&o).is_empty());
        // `run` refuses it the same way, before it logs anything.
        let o = mifsec(&["run", "--config", &f]);
        assert_eq!(o.status.code(), Some(2), "{text}");
        assert!(
            stderr(&o).starts_with(&format!("{f}:{line}: {err}")),
            "{text}: {}",
            stderr(&o)
        );
    }
}

/// Runs `mifsec run` on a configuration whose control socket cannot be bound (its directory
/// would be under a regular file), so that the daemon logs its start and then fails with
/// exit 1, without root and without touching the network. `journal`: JOURNAL_STREAM is set
/// to the device and inode of the file stderr goes to (`Some(true)`), of another file
/// (`Some(false)`), or not at all. Returns the daemon's stderr.
fn run_failing(dir: &Scratch, level: Option<&str>, journal: Option<bool>) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let blocker = dir.file("not-a-dir", "");
    let mut text =
        format!("[dataplane]\nuser = \"root\"\ncontrol_socket = \"{blocker}/mifsec.sock\"\n");
    if let Some(l) = level {
        text.push_str(&format!("[log]\nlevel = \"{l}\"\n"));
    }
    let f = dir.file("run.toml", &text);
    let log_path = dir.0.join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mifsec"));
    cmd.args(["run", "--config", &f])
        .stdout(std::process::Stdio::null())
        .stderr(log.try_clone().unwrap())
        .env_remove("JOURNAL_STREAM");
    if let Some(own) = journal {
        let m = if own {
            log.metadata().unwrap()
        } else {
            std::fs::metadata(&blocker).unwrap()
        };
        cmd.env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
    }
    let status = cmd.status().unwrap();
    let err = std::fs::read_to_string(&log_path).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    err
}

/// Whether `line` starts with an RFC 3339 UTC timestamp (`2026-12-01T12:03:04.123456Z `).
fn stamped(line: &str) -> bool {
    let Some((ts, _)) = line.split_once(' ') else {
        return false;
    };
    let b = ts.as_bytes();
    ts.len() >= 21
        && ts.ends_with('Z')
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'.'
        && ts[..4].bytes().all(|c| c.is_ascii_digit())
}

#[test]
fn run_logs_at_the_configured_level_with_timestamps() {
    let dir = Scratch::new("runlevel");
    let starting = format!(" INFO mifsec: {} starting: ", env!("CARGO_PKG_VERSION"));
    for level in [None, Some("info")] {
        let err = run_failing(&dir, level, None);
        let lines: Vec<&str> = err.lines().collect();
        assert!(!lines.is_empty(), "{level:?}: nothing logged");
        assert!(lines.iter().all(|l| stamped(l)), "{level:?}:\n{err}");
        assert!(
            lines.iter().any(|l| l.contains(&starting)),
            "{level:?}:\n{err}"
        );
        assert!(
            err.contains("mifsec: control socket: ") && err.contains("Not a directory"),
            "{level:?}:\n{err}"
        );
    }
    // warn: no info line at all, the error still there; a target's own level lets that
    // target's info through.
    let err = run_failing(&dir, Some("warn"), None);
    assert!(!err.contains(" INFO "), "{err}");
    assert!(!err.contains("starting"), "{err}");
    let error = err
        .lines()
        .find(|l| l.contains(" ERROR mifsec: control socket: "))
        .unwrap_or_else(|| panic!("no error line in\n{err}"));
    assert!(stamped(error) && error.contains("Not a directory"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let err = run_failing(&dir, Some("off"), None);
    assert!(err.is_empty(), "{err}");
    let err = run_failing(&dir, Some("warn,mifsec_control::daemon=info"), None);
    assert!(err.contains(&starting), "{err}");
}

#[test]
fn run_writes_priority_prefixes_when_stderr_is_the_journal() {
    let dir = Scratch::new("journal");
    let err = run_failing(&dir, None, Some(true));
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty(), "nothing logged");
    for l in &lines {
        let prio = l
            .strip_prefix('<')
            .and_then(|r| r.split_once('>'))
            .map(|(p, _)| p);
        assert!(
            matches!(prio, Some("3" | "4" | "5" | "6" | "7")),
            "no priority prefix: {l:?} in\n{err}"
        );
        assert!(!stamped(&l[3..]), "a timestamp in the journal: {l:?}");
    }
    let starting = format!("<6>{} starting: ", env!("CARGO_PKG_VERSION"));
    assert!(lines.iter().any(|l| l.starts_with(&starting)), "{err}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<3>control socket: ") && l.contains("Not a directory")),
        "{err}"
    );
    // JOURNAL_STREAM naming another file: stderr is not the journal.
    let err = run_failing(&dir, None, Some(false));
    assert!(err.lines().all(stamped), "{err}");
}

/// Every command's path below `mifsec` (`["ctl", "mif"]`, ...), from the definition itself,
/// so that a command added later is held to the same checks; the commands of today must be
/// among them.
fn every_command() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd.get_subcommands() {
            if sub.is_hide_set() || sub.get_name() == "help" {
                continue;
            }
            let mut p = path.to_vec();
            p.push(sub.get_name().to_owned());
            out.push(p.clone());
            walk(sub, &p, out);
        }
    }
    let mut out = Vec::new();
    walk(&mifsec_control::cli::definition(), &[], &mut out);
    let names: Vec<String> = out.iter().map(|p| p.join(" ")).collect();
    for want in [
        "run",
        "check",
        "status",
        "keys",
        "ctl",
        "completions",
        "man",
        "ctl handover",
        "ctl add-interface",
        "ctl remove-interface",
        "ctl policy",
        "ctl add-path",
        "ctl remove-path",
        "ctl initiate",
        "ctl terminate",
        "ctl rekey",
        "ctl move",
        "ctl mif",
        "ctl clone",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    out
}

/// bash: the generated script, sourced into a real bash, completes every command and the
/// options of one; zsh and fish (not installed here): every command is in the script.
#[test]
fn completions_complete_every_command() {
    let dir = Scratch::new("compl");
    let o = mifsec(&["completions", "bash"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = dir.file("mifsec.bash", &stdout(&o));
    // COMPREPLY for the words typed so far (the last one being completed).
    let complete = |words: &[&str]| -> Vec<String> {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let cur = words.last().unwrap();
        let prev = words[words.len() - 2];
        let o = Command::new("bash")
            .arg("-c")
            .arg(format!(
                "set -e; source '{script}'; COMP_WORDS=({}); COMP_CWORD={}; \
                 _mifsec mifsec '{cur}' '{prev}'; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
                quoted.join(" "),
                words.len() - 1
            ))
            .output()
            .expect("bash");
        assert!(o.status.success(), "{words:?}: {}", stderr(&o));
        stdout(&o).lines().map(str::to_owned).collect()
    };
    for path in every_command() {
        // All but the last word typed, the last one to be completed from its first letter.
        let mut words = vec!["mifsec"];
        words.extend(path[..path.len() - 1].iter().map(String::as_str));
        let last = &path[path.len() - 1];
        let offered = complete(&[&words[..], &[""]].concat());
        assert!(offered.contains(last), "{path:?}: {offered:?}");
        let offered = complete(&[&words[..], &[&last[..2]]].concat());
        assert!(
            offered.contains(last),
            "{path:?} from {:?}: {offered:?}",
            &last[..2]
        );
    }
    let offered = complete(&["mifsec", "ctl", "mif", "home", "--s"]);
    for opt in ["--standby", "--spi", "--socket"] {
        assert!(offered.iter().any(|o| o == opt), "{opt}: {offered:?}");
    }
    for shell in ["zsh", "fish"] {
        let o = mifsec(&["completions", shell]);
        assert!(o.status.success(), "{shell}: {}", stderr(&o));
        let text = stdout(&o);
        for path in every_command() {
            assert!(
                text.contains(path.last().unwrap().as_str()),
                "{shell}: {path:?} missing"
            );
        }
    }
    let o = mifsec(&["completions", "tcsh"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("invalid value 'tcsh'"),
        "{}",
        stderr(&o)
    );
}

/// The man pages: `mifsec man` is mifsec(1), `man --dir` writes one page per command; each
/// formats without a warning (groff -ww) and `man -l` shows its synopsis and options.
#[test]
fn man_pages_cover_every_command() {
    let dir = Scratch::new("man");
    let o = mifsec(&["man"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let top = stdout(&o);
    assert!(top.starts_with(".ie \\n(.g .ds Aq"), "{top}");
    assert!(top.contains(".TH mifsec 1"), "{top}");
    let mandir = dir.0.join("man1");
    std::fs::create_dir_all(&mandir).unwrap();
    let o = mifsec(&["man", "--dir", &mandir.display().to_string()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(
        std::fs::read_to_string(mandir.join("mifsec.1")).unwrap(),
        top,
        "mifsec man and mifsec man --dir differ"
    );
    let render = |page: &std::path::Path| -> String {
        // groff itself: no warnings at all.
        let o = Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(page)
            .output()
            .expect("groff (apt-get install groff-base)");
        assert!(
            o.status.success() && o.stderr.is_empty(),
            "{}: {}",
            page.display(),
            stderr(&o)
        );
        // man as a user runs it, on the file.
        let o = Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANWIDTH", "100")
            .env("MANPAGER", "cat")
            .env("PAGER", "cat")
            .output()
            .expect("man (apt-get install man-db)");
        assert!(o.status.success(), "{}: {}", page.display(), stderr(&o));
        stdout(&o)
    };
    let text = render(&mandir.join("mifsec.1"));
    for w in [
        "NAME",
        "SYNOPSIS",
        "Exit codes:",
        "3   the daemon cannot be reached",
    ] {
        assert!(text.contains(w), "{w} missing from mifsec(1):\n{text}");
    }
    for path in every_command() {
        let name = format!("mifsec-{}", path.join("-"));
        let page = mandir.join(format!("{name}.1"));
        assert!(
            listed.contains(&page.display().to_string()),
            "{name} not written: {listed:?}"
        );
        // (man justifies lines: compare with single spaces)
        let text = render(&page)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        assert!(
            text.contains(&format!("SYNOPSIS mifsec {}", path.join(" "))),
            "{name}: no synopsis:\n{text}"
        );
        // The parent's page names it.
        let parent = if path.len() == 1 {
            "mifsec".to_owned()
        } else {
            format!("mifsec-{}", path[..path.len() - 1].join("-"))
        };
        let parent_text = std::fs::read_to_string(mandir.join(format!("{parent}.1"))).unwrap();
        assert!(
            parent_text.contains(&format!("{name}(1)").replace('-', "\\-")),
            "{parent}(1) does not name {name}(1)"
        );
    }
    let text = render(&mandir.join("mifsec-ctl-mif.1"));
    for w in ["--spi", "soft-handover", "--socket"] {
        assert!(
            text.contains(w),
            "{w} missing from mifsec-ctl-mif(1):\n{text}"
        );
    }
}
