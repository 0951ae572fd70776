//! The `mifsec` command: the daemon (`run`), configuration checks (`check`), and the
//! control-socket clients (`status`, `keys`, `ctl`). See `mifsec --help` and docs/CONFIG.md.

use std::process::ExitCode;

use mifsec_control::cli::{self, Command, USAGE};
use mifsec_control::ctl::{self, Request};
use mifsec_control::{config, daemon, render};

fn main() -> ExitCode {
    let mut args = Vec::new();
    for a in std::env::args_os().skip(1) {
        match a.into_string() {
            Ok(s) => args.push(s),
            Err(a) => {
                eprintln!("mifsec: argument {a:?} is not UTF-8");
                return ExitCode::from(2);
            }
        }
    }
    let code = match cli::parse(&args) {
        Ok(cmd) => execute(cmd),
        Err(msg) => {
            eprintln!("mifsec: {msg}\n");
            eprint!("{USAGE}");
            daemon::EXIT_CONFIG
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn execute(cmd: Command) -> i32 {
    match cmd {
        Command::Help => {
            print!("{USAGE}");
            0
        }
        Command::Version => {
            println!("mifsec {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Command::Run { config } => daemon::run(&config),
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                print!("{}", config::summary(&cfg));
                for w in &cfg.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: OK", config.display());
                0
            }
            Err(e) => {
                eprintln!("{e}");
                daemon::EXIT_CONFIG
            }
        },
        Command::Status { json, socket } => client(&socket, &Request::Status {}, |v| {
            if json {
                println!("{v}");
            } else {
                print!("{}", render::status(&v));
            }
        }),
        Command::Keys { socket } => client(&socket, &Request::Keys {}, |v| {
            for line in v.as_array().into_iter().flatten() {
                match line.as_str() {
                    Some(s) => println!("{s}"),
                    None => println!("{line}"),
                }
            }
        }),
        Command::Ctl { socket, request } => client(&socket, &request, |v| {
            match v
                .as_str()
                .or_else(|| v.get("text").and_then(|t| t.as_str()))
            {
                Some(s) => println!("{s}"),
                None => println!("{v}"),
            }
        }),
    }
}

/// Sends `req` and hands a successful result to `show`. Errors (the daemon's refusal, or
/// no daemon) go to stderr with exit status 1.
fn client(socket: &std::path::Path, req: &Request, show: impl FnOnce(serde_json::Value)) -> i32 {
    match ctl::call(socket, req) {
        Ok(v) => {
            show(v);
            0
        }
        Err(e) => {
            eprintln!("mifsec: {e}");
            1
        }
    }
}
