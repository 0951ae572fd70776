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
    for args in [&["--help"][..], &["help"], &["-h"], &["status", "--help"]] {
        let o = mifsec(args);
        assert!(o.status.success(), "{args:?}");
        let out = stdout(&o);
        assert!(out.starts_with("usage: mifsec COMMAND"), "{out}");
        for cmd in [
            "run --config",
            "check --config",
            "status",
            "keys --wireshark",
            "ctl handover",
            "ctl add-path",
        ] {
            assert!(out.contains(cmd), "{cmd} missing from\n{out}");
        }
    }
}

#[test]
fn usage_errors_exit_2_with_usage_on_stderr() {
    for (args, msg) in [
        (
            &["frobnicate"][..],
            "mifsec: unknown command \"frobnicate\"",
        ),
        (&[], "mifsec: no command given"),
        (&["status", "--bogus"], "mifsec: unknown option --bogus"),
        (
            &["ctl", "handover", "tunnel"],
            "mifsec: ctl handover takes SA PATH",
        ),
        (&["keys"], "mifsec: keys needs --wireshark"),
        (&["run"], "mifsec: run needs --config"),
    ] {
        let o = mifsec(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert!(err.starts_with(msg), "{args:?}: {err}");
        assert!(err.contains("usage: mifsec COMMAND"), "{err}");
        assert!(stdout(&o).is_empty());
    }
}

#[test]
fn clients_without_a_daemon_fail_clearly_with_exit_1() {
    let dir = Scratch::new("nosock");
    let sock = dir.0.join("none.sock").display().to_string();
    for args in [
        &["status", "--socket", &sock][..],
        &["status", "--json", "--socket", &sock],
        &["keys", "--wireshark", "--socket", &sock],
        &["ctl", "handover", "tunnel", "fast", "--socket", &sock],
    ] {
        let o = mifsec(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert!(
            err.starts_with(&format!(
                "mifsec: cannot connect to {sock}: No such file or directory"
            )),
            "{args:?}: {err}"
        );
        assert!(err.contains("is `mifsec run` running"), "{err}");
    }
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
