//! The `mifsec` command: the daemon (`run`), configuration checks (`check`), and the
//! control-socket clients (`status`, `keys`, `ctl`). See `mifsec --help` and docs/CONFIG.md.

use std::process::ExitCode;

use mifsec_control::cli::{self, Command, EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE};
use mifsec_control::ctl::{self, ClientError, Request};
use mifsec_control::{config, daemon, render};

fn main() -> ExitCode {
    let code = match cli::parse(std::env::args_os()) {
        Ok(cmd) => execute(cmd),
        // Usage errors (exit 2) and --help / --version (exit 0), printed as clap formats them.
        Err(e) => {
            let _ = e.print();
            e.exit_code()
        }
    };
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// Runs one command; returns the exit code (see [`cli::EXIT_CODES`]).
fn execute(cmd: Command) -> i32 {
    match cmd {
        Command::Completions { shell } => {
            cli::completions(shell, &mut std::io::stdout());
            EXIT_OK
        }
        Command::Man { dir: None } => match cli::man_page(&mut std::io::stdout()) {
            Ok(()) => EXIT_OK,
            Err(e) => {
                eprintln!("mifsec: {e}");
                EXIT_FAILED
            }
        },
        Command::Man { dir: Some(dir) } => match cli::man_pages(&dir) {
            Ok(files) => {
                for f in files {
                    println!("{}", f.display());
                }
                EXIT_OK
            }
            Err(e) => {
                eprintln!("mifsec: {}: {e}", dir.display());
                EXIT_FAILED
            }
        },
        Command::Version => {
            println!("mifsec {}", env!("CARGO_PKG_VERSION"));
            EXIT_OK
        }
        Command::Run { config, socket } => daemon::run_with_socket(&config, socket.as_deref()),
        Command::Check { config } => match config::load(&config) {
            Ok(cfg) => {
                print!("{}", config::summary(&cfg));
                for w in &cfg.warnings {
                    eprintln!("warning: {w}");
                }
                println!("{}: OK", config.display());
                EXIT_OK
            }
            Err(e) => {
                eprintln!("{e}");
                EXIT_USAGE
            }
        },
        Command::Status {
            json,
            watch: true,
            interval,
            socket,
        } => ctl::subscribe::watch(&socket, interval.unwrap_or(1000), json),
        Command::Log {
            level,
            json,
            socket,
        } => ctl::subscribe::log(&socket, level, json),
        Command::Events { json, socket } => ctl::subscribe::events(&socket, json),
        Command::Status { json, socket, .. } => client(&socket, &Request::Status {}, |v| {
            if json {
                println!("{v}");
            } else {
                print!("{}", render::status(&v));
            }
        }),
        Command::Top { interval, socket } => mifsec_control::top::run(&socket, interval),
        Command::Metrics { socket } => client(&socket, &Request::Metrics {}, |v| {
            print!("{}", v.as_str().unwrap_or_default());
        }),
        Command::Keys { socket, .. } => client(&socket, &Request::Keys {}, |v| {
            for line in v.as_array().into_iter().flatten() {
                match line.as_str() {
                    Some(s) => println!("{s}"),
                    None => println!("{line}"),
                }
            }
        }),
        Command::Showconf { socket } => client(&socket, &Request::Showconf {}, |v| {
            print!("{}", v.as_str().unwrap_or_default());
        }),
        Command::ListConns { json, socket } => client(&socket, &Request::ListConns {}, |v| {
            if json {
                println!("{v}");
            } else {
                print!("{}", render::list_conns(&v));
            }
        }),
        Command::Ctl {
            socket,
            command: cli::Ctl::Reload,
        } => client(&socket, &Request::Reload {}, |v| {
            let lines: Vec<&str> = v
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str())
                .collect();
            if lines.is_empty() {
                println!("no changes");
            }
            for l in lines {
                println!("{l}");
            }
        }),
        Command::Ctl { socket, command } => {
            let request = match command.request() {
                Ok(r) => r,
                // cli::parse checked it already.
                Err(msg) => {
                    eprintln!("mifsec: {msg}");
                    return EXIT_USAGE;
                }
            };
            client(&socket, &request, |v| {
                match v
                    .as_str()
                    .or_else(|| v.get("text").and_then(|t| t.as_str()))
                {
                    Some(s) => println!("{s}"),
                    None => println!("{v}"),
                }
            })
        }
    }
}

/// Sends `req` and hands a successful result to `show`. Errors go to stderr: the daemon's
/// refusal (or a broken answer) with exit status 1, no daemon to talk to with 3.
fn client(socket: &std::path::Path, req: &Request, show: impl FnOnce(serde_json::Value)) -> i32 {
    match ctl::call(socket, req) {
        Ok(v) => {
            show(v);
            EXIT_OK
        }
        Err(e) => {
            eprintln!("mifsec: {e}");
            match e {
                ClientError::Connect(..) => EXIT_UNREACHABLE,
                _ => EXIT_FAILED,
            }
        }
    }
}
