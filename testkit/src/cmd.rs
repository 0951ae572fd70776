//! Running `ip` and commands inside namespaces.

use std::process::{Command, Output};

/// Runs `cmd` and returns its output; panics only when it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {:?}: {e}", cmd.get_program()))
}

/// A command's stdout and stderr, as text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = run(Command::new("ip").args(args));
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `ip netns exec NS CMD...` and returns whether it succeeded, with its output.
pub fn exec_in(ns: &str, cmd: &[&str]) -> (bool, String) {
    let out = run(Command::new("ip").args(["netns", "exec", ns]).args(cmd));
    (out.status.success(), text(&out))
}
