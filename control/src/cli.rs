//! The `mifsec` command line, declared with clap's derive API: [`Cli`] holds a [`Command`],
//! and `ctl`'s subcommands are the [`Ctl`] enum. The help of every command, the shell
//! completions and the man page come from these declarations (each variant's doc comment is
//! its help).
//!
//! # Adding a command
//! - A top-level command (`mifsec NAME ...`): add one variant to [`Command`] (its doc comment
//!   is the help; a client of the control socket takes the same `socket` field as
//!   [`Command::Status`]) and one match arm in `execute` in main.rs.
//! - A `ctl` subcommand (`mifsec ctl NAME ...`): add one variant to [`Ctl`] and one match
//!   arm in [`Ctl::request`] that builds its [`Request`]; main.rs sends it and prints the
//!   answer as it does for every other `ctl` request. `--socket` is already there.
//!
//! Exit codes ([`EXIT_CODES`]): 0 success, 1 the daemon refused the request or failed, 2 a
//! usage error or an invalid configuration, 3 the daemon cannot be reached.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{CommandFactory as _, Parser, Subcommand};

use crate::config::DEFAULT_SOCKET;
use crate::ctl::Request;

/// Success.
pub const EXIT_OK: i32 = 0;
/// The daemon refused the request, or failed (`run`).
pub const EXIT_FAILED: i32 = crate::daemon::EXIT_FAILURE;
/// A usage error, or an invalid configuration file (`run`, `check`).
pub const EXIT_USAGE: i32 = crate::daemon::EXIT_CONFIG;
/// The daemon cannot be reached on its control socket (not running, another socket, or no
/// permission).
pub const EXIT_UNREACHABLE: i32 = 3;

/// The exit codes as `mifsec --help` shows them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   the daemon refused the request, or failed (run)
  2   usage error, or an invalid configuration file (run, check)
  3   the daemon cannot be reached on its control socket
  70  the daemon stopped on an internal error (run)

The configuration file is described in docs/CONFIG.md.";

/// A userspace IPsec VPN: ESP over UDP over TUN, IKEv2, MOBIKE, multiple interfaces.
#[derive(Debug, Parser)]
#[command(
    name = "mifsec",
    version,
    arg_required_else_help = true,
    after_help = EXIT_CODES,
    max_term_width = 100
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground.
    ///
    /// Under systemd (Type=notify) it sends READY=1 once the engine, IKE and the control
    /// socket are up, and STOPPING=1 when it stops.
    Run {
        /// The configuration file (docs/CONFIG.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// The control socket, instead of [dataplane] control_socket.
        #[arg(long, value_name = "PATH")]
        socket: Option<PathBuf>,
    },
    /// Parse and validate a configuration file, print a summary.
    Check {
        /// The configuration file (docs/CONFIG.md).
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// SAs, paths, interfaces and counters of the running daemon.
    Status {
        /// Print the JSON as served instead of text (with --watch: one complete status
        /// object per line, with "t" added, the Unix time in seconds).
        #[arg(long)]
        json: bool,
        /// Repeat the status every --interval until interrupted.
        #[arg(long)]
        watch: bool,
        /// Seconds between two samples of --watch, 0.05 (20 a second) to 3600 [default: 1].
        #[arg(long, value_name = "SECONDS", requires = "watch",
              value_parser = crate::ctl::subscribe::interval_ms)]
        interval: Option<u64>,
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Follow the daemon's log live, at its own level, whatever [log] level is.
    Log {
        /// The least severe level shown: error, warn, info, debug or trace, or as
        /// [log] level is written (LEVEL,TARGET=LEVEL,...) [default: info].
        #[arg(long, value_name = "L")]
        level: Option<String>,
        /// Print each record as the JSON object served.
        #[arg(long)]
        json: bool,
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Follow the events: IKE SA and child SA up and down, rekeys, moves, multi-interface
    /// operations, handovers, paths up and down.
    Events {
        /// One JSON object per line: "time" (Unix seconds), "event" and its fields.
        #[arg(long)]
        json: bool,
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// A live view of the IKE SAs, child SAs and paths (q quits; see the README).
    Top {
        /// Seconds between two questions to the daemon (0.05 to 3600).
        #[arg(long, value_name = "SECONDS", default_value = "1",
              value_parser = crate::top::parse_interval)]
        interval: std::time::Duration,
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The Prometheus text exposition of the running daemon (docs/CONFIG.md, [metrics]).
    Metrics {
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The keys as Wireshark esp_sa and ikev2 lines (needs root).
    Keys {
        /// Wireshark's format (the only one, and required).
        #[arg(long, required = true)]
        wireshark: bool,
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Send one control request to the running daemon.
    Ctl {
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, global = true)]
        socket: PathBuf,
        /// The request.
        #[command(subcommand)]
        command: Ctl,
    },
    /// The running configuration in the configuration file's syntax, `ctl` changes
    /// included (as `wg showconf`); keys and secrets only for root (others get
    /// "<redacted>").
    Showconf {
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// The loaded IKE connections (as `swanctl --list-conns`).
    ListConns {
        /// Print the JSON as served instead of text.
        #[arg(long)]
        json: bool,
        /// The daemon's control socket.
        #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
        socket: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    ///
    /// bash: `mifsec completions bash > /etc/bash_completion.d/mifsec` (or
    /// `source <(mifsec completions bash)`); zsh: into a directory of $fpath as `_mifsec`;
    /// fish: `~/.config/fish/completions/mifsec.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page mifsec(1) as roff (`mifsec man | man -l -`), or with --dir
    /// write it and one page per command (mifsec-ctl(1), mifsec-ctl-handover(1), ...) there.
    Man {
        /// Write mifsec.1 and every command's page into this directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Print the version.
    #[command(hide = true)]
    Version,
}

/// The requests of `mifsec ctl`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Ctl {
    /// Read the configuration file again and apply the difference (as SIGHUP); prints
    /// what changed. A file with an error changes nothing.
    Reload,
    /// Make PATH the only active path of SA (make-before-break unless --hard).
    Handover {
        /// The SA ([sa.NAME]).
        sa: String,
        /// The path to make active.
        path: String,
        /// Switch at once instead of make-before-break.
        #[arg(long)]
        hard: bool,
    },
    /// Open a socket on a new interface.
    AddInterface {
        /// The interface's name (what paths refer to).
        name: String,
        /// The local address to bind.
        #[arg(long, value_name = "A")]
        address: String,
        /// The OS device to bind to.
        #[arg(long, value_name = "D")]
        device: Option<String>,
        /// The local UDP port (default 4500).
        #[arg(long, value_name = "P")]
        port: Option<u16>,
    },
    /// Close an interface's socket.
    RemoveInterface {
        /// The interface's name.
        name: String,
    },
    /// Change an SA's scheduling policy: failover, aggregate, redundant or pinned.
    Policy {
        /// The SA.
        sa: String,
        /// failover, aggregate, redundant or pinned.
        policy: String,
    },
    /// Add a path to an SA.
    AddPath {
        /// The SA.
        sa: String,
        /// The new path's name.
        name: String,
        /// The interface it sends on.
        #[arg(long, value_name = "I")]
        interface: String,
        /// The peer's address:port.
        #[arg(long, value_name = "A:P")]
        remote: String,
        /// active (default), standby or alternate.
        #[arg(long, value_name = "R")]
        role: Option<String>,
        /// The aggregate weight, 1 to 1000000 (default 1).
        #[arg(long, value_name = "W", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        weight: Option<u32>,
    },
    /// Remove a path from an SA.
    RemovePath {
        /// The SA.
        sa: String,
        /// The path's name.
        name: String,
    },
    /// Start an IKE SA for a [connections.CONN].
    Initiate {
        /// The connection.
        conn: String,
    },
    /// Delete CONN's IKE SAs and their child SAs.
    Terminate {
        /// The connection.
        conn: String,
    },
    /// Rekey CONN's child SAs (or, with --ike, its IKE SA).
    Rekey {
        /// The connection.
        conn: String,
        /// Rekey the IKE SA rather than the child SAs.
        #[arg(long)]
        ike: bool,
    },
    /// Move CONN's IKE SA and child SAs to our address A (MOBIKE; only an IKE SA we
    /// initiated).
    Move {
        /// The connection.
        conn: String,
        /// Our address to move to.
        #[arg(long, value_name = "A")]
        local: String,
        /// The peer's address to move to (default: its current one).
        #[arg(long, value_name = "A")]
        remote: Option<String>,
    },
    /// Multi-interface operations with a mifsec peer, one exchange for every child SA
    /// selected.
    ///
    /// add IFACE [--standby], remove IFACE, soft-handover FROM TO, hard-handover FROM TO,
    /// alternates [IFACE...], check IFACE. IFACE is an [interfaces.*] name. The selection
    /// is --all (the default), --spi SPI[,SPI...] (our inbound SPIs) or
    /// --ts LOCAL_CIDR[,..][:REMOTE_CIDR,..]; --check asks and changes nothing. Prints the
    /// peer's answer per child SA (waits up to 5 s).
    Mif {
        /// The connection.
        conn: String,
        /// The operation.
        #[arg(value_parser = ["add", "remove", "soft-handover", "hard-handover", "alternates", "check"])]
        op: String,
        /// The interfaces the operation names.
        #[arg(value_name = "IFACE")]
        interfaces: Vec<String>,
        /// add: as a standby interface.
        #[arg(long)]
        standby: bool,
        /// Every child SA (the default).
        #[arg(long, conflicts_with_all = ["spi", "ts"])]
        all: bool,
        /// These child SAs, by our inbound SPI (hex, as status prints them).
        #[arg(long, value_name = "SPI[,SPI...]")]
        spi: Option<String>,
        /// The child SAs whose selectors lie inside these.
        #[arg(long, value_name = "LOCAL_CIDR[,..][:REMOTE_CIDR,..]")]
        ts: Option<String>,
        /// Ask the peer, change nothing (dry run).
        #[arg(long)]
        check: bool,
    },
    /// Clone CONN's IKE SA (RFC 7791), move the clone to A (MOBIKE), negotiate child NAME
    /// on it.
    Clone {
        /// The connection.
        conn: String,
        /// Our address to move the clone to (default: it stays on the original's path).
        #[arg(long, value_name = "A")]
        local: Option<String>,
        /// The peer's address to move it to (default: its current one).
        #[arg(long, value_name = "A")]
        remote: Option<String>,
        /// The child configuration to negotiate on the clone.
        #[arg(long, value_name = "NAME")]
        child: Option<String>,
    },
}

impl Ctl {
    /// The request this subcommand sends. An error is a usage error (the same checks as the
    /// daemon's, so that a typo is caught here).
    pub fn request(&self) -> Result<Request, String> {
        let c = self.clone();
        Ok(match c {
            Ctl::Reload => Request::Reload {},
            Ctl::Handover { sa, path, hard } => Request::Handover { sa, path, hard },
            Ctl::AddInterface {
                name,
                address,
                device,
                port,
            } => Request::AddInterface {
                name,
                address,
                device,
                port,
            },
            Ctl::RemoveInterface { name } => Request::RemoveInterface { name },
            Ctl::Policy { sa, policy } => Request::Policy { sa, policy },
            Ctl::AddPath {
                sa,
                name,
                interface,
                remote,
                role,
                weight,
            } => Request::AddPath {
                sa,
                name,
                interface,
                remote,
                role,
                weight,
                pin: Vec::new(),
            },
            Ctl::RemovePath { sa, name } => Request::RemovePath { sa, name },
            Ctl::Initiate { conn } => Request::Initiate { conn },
            Ctl::Terminate { conn } => Request::Terminate { conn },
            Ctl::Rekey { conn, ike } => Request::Rekey { conn, ike },
            Ctl::Move {
                conn,
                local,
                remote,
            } => Request::Move {
                conn,
                local,
                remote,
            },
            Ctl::Mif {
                conn,
                op,
                interfaces,
                standby,
                all: _,
                spi,
                ts,
                check,
            } => {
                let m = crate::ctl::mif::MifRequest {
                    conn,
                    op,
                    interfaces,
                    standby,
                    spi,
                    ts,
                    check,
                };
                m.command()?;
                Request::Mif(m)
            }
            Ctl::Clone {
                conn,
                local,
                remote,
                child,
            } => Request::Clone {
                conn,
                local,
                remote,
                child,
            },
        })
    }
}

/// The clap definition of the whole command line (for completions, the man page and
/// errors).
pub fn definition() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd
}

/// Writes the completion script for `shell` to `out`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut definition(), "mifsec", out);
}

/// The manual page mifsec(1), as roff: the top-level page of [`man_pages`].
pub fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    man(man_definition()).render(out)
}

/// Writes mifsec.1 and one page per command (mifsec-ctl.1, mifsec-ctl-handover.1, ...; the
/// hidden `version` has none) into `dir`; returns the files written.
pub fn man_pages(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    fn each(
        cmd: &clap::Command,
        dir: &std::path::Path,
        out: &mut Vec<PathBuf>,
    ) -> std::io::Result<()> {
        out.push(man(cmd.clone()).generate_to(dir)?);
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            each(sub, dir, out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    each(&man_definition(), dir, &mut out)?;
    Ok(out)
}

/// The definition for the man pages: without the `help` subcommands (every page is the
/// help).
fn man_definition() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

fn man(cmd: clap::Command) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd)
        .source(format!("mifsec {}", env!("CARGO_PKG_VERSION")))
        .manual("mifsec manual")
}

/// Parses the command line, the program's name first (as `std::env::args_os()` gives it).
/// `--help` and `--version` come back as errors too: print them with
/// [`clap::Error::print`] and exit with [`clap::Error::exit_code`] (0 for those, 2 for a
/// usage error).
pub fn parse<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    use clap::FromArgMatches as _;
    let mut def = definition();
    let matches = def.try_get_matches_from_mut(args)?;
    let cli = Cli::from_arg_matches(&matches).map_err(|e| e.format(&mut def))?;
    if let Command::Ctl { command, .. } = &cli.command {
        if let Err(msg) = command.request() {
            let name = matches
                .subcommand_matches("ctl")
                .and_then(|m| m.subcommand_name())
                .unwrap_or_default();
            let ctl = def.find_subcommand_mut("ctl").expect("ctl is defined");
            let err = match ctl.find_subcommand_mut(name) {
                Some(sub) => sub.error(clap::error::ErrorKind::ValueValidation, msg),
                None => ctl.error(clap::error::ErrorKind::ValueValidation, msg),
            };
            return Err(err);
        }
    }
    Ok(cli.command)
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn p(line: &str) -> Result<Command, clap::Error> {
        parse(std::iter::once("mifsec").chain(line.split_whitespace()))
    }

    /// The error's kind and its first line.
    fn err(line: &str) -> (ErrorKind, String) {
        let e = p(line).expect_err(line);
        let text = e.render().to_string();
        (e.kind(), text.lines().next().unwrap_or("").to_owned())
    }

    fn sock(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    fn ctl(line: &str) -> Result<(PathBuf, Request), String> {
        match p(line) {
            Ok(Command::Ctl { socket, command }) => Ok((socket, command.request().unwrap())),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.render().to_string()),
        }
    }

    fn req(line: &str) -> Request {
        ctl(line).unwrap_or_else(|e| panic!("{line}: {e}")).1
    }

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn commands() {
        assert_eq!(
            p("run --config gw.toml").unwrap(),
            Command::Run {
                config: "gw.toml".into(),
                socket: None
            }
        );
        assert_eq!(
            p("check --config=gw.toml").unwrap(),
            Command::Check {
                config: "gw.toml".into()
            }
        );
        assert_eq!(
            p("status").unwrap(),
            Command::Status {
                json: false,
                watch: false,
                interval: None,
                socket: sock(DEFAULT_SOCKET)
            }
        );
        assert_eq!(
            p("status --socket /tmp/s --json").unwrap(),
            Command::Status {
                json: true,
                watch: false,
                interval: None,
                socket: sock("/tmp/s")
            }
        );
        assert_eq!(
            p("status --watch --interval 0.05 --json").unwrap(),
            Command::Status {
                json: true,
                watch: true,
                interval: Some(50),
                socket: sock(DEFAULT_SOCKET)
            }
        );
        assert!(p("status --watch --interval 0.01").is_err());
        assert!(
            p("status --interval 1").is_err(),
            "--interval needs --watch"
        );
        assert_eq!(
            p("log --level debug").unwrap(),
            Command::Log {
                level: Some("debug".into()),
                json: false,
                socket: sock(DEFAULT_SOCKET)
            }
        );
        assert_eq!(
            p("events --json --socket /tmp/s").unwrap(),
            Command::Events {
                json: true,
                socket: sock("/tmp/s")
            }
        );
        assert_eq!(
            p("top --interval 0.2 --socket /tmp/s").unwrap(),
            Command::Top {
                interval: std::time::Duration::from_millis(200),
                socket: sock("/tmp/s")
            }
        );
        assert_eq!(err("top --interval 0").0, ErrorKind::ValueValidation);
        assert_eq!(
            p("metrics --socket /tmp/s").unwrap(),
            Command::Metrics {
                socket: sock("/tmp/s")
            }
        );
        assert_eq!(
            p("keys --wireshark --socket=/tmp/s").unwrap(),
            Command::Keys {
                wireshark: true,
                socket: sock("/tmp/s")
            }
        );
        for help in [
            "help",
            "--help",
            "-h",
            "ctl handover t p -h",
            "ctl mif --help",
        ] {
            assert_eq!(err(help).0, ErrorKind::DisplayHelp, "{help}");
        }
        assert_eq!(err("--version").0, ErrorKind::DisplayVersion);
        assert_eq!(err("-V").0, ErrorKind::DisplayVersion);
        assert_eq!(p("version").unwrap(), Command::Version);
        assert_eq!(
            req("ctl initiate home"),
            Request::Initiate {
                conn: "home".into()
            }
        );
        assert_eq!(
            req("ctl move home --local 198.18.22.2 --remote 198.18.20.11"),
            Request::Move {
                conn: "home".into(),
                local: "198.18.22.2".into(),
                remote: Some("198.18.20.11".into())
            }
        );
        assert!(matches!(
            req("ctl move home --local 198.18.22.2"),
            Request::Move { remote: None, .. }
        ));
        assert!(p("ctl move home").is_err());
        assert_eq!(
            req("ctl clone home --local 198.18.22.2 --child net2"),
            Request::Clone {
                conn: "home".into(),
                local: Some("198.18.22.2".into()),
                remote: None,
                child: Some("net2".into())
            }
        );
        assert!(matches!(
            req("ctl clone home"),
            Request::Clone {
                local: None,
                child: None,
                ..
            }
        ));
        assert!(p("ctl clone").is_err());
        assert_eq!(
            req("ctl rekey home --ike"),
            Request::Rekey {
                conn: "home".into(),
                ike: true
            }
        );
        assert_eq!(
            req("ctl rekey home"),
            Request::Rekey {
                conn: "home".into(),
                ike: false
            }
        );
        assert_eq!(
            req("ctl terminate home"),
            Request::Terminate {
                conn: "home".into()
            }
        );
    }

    #[test]
    fn ctl_commands() {
        assert_eq!(
            req("ctl handover tunnel fast --hard"),
            Request::Handover {
                sa: "tunnel".into(),
                path: "fast".into(),
                hard: true
            }
        );
        assert_eq!(
            req("ctl handover tunnel fast"),
            Request::Handover {
                sa: "tunnel".into(),
                path: "fast".into(),
                hard: false
            }
        );
        assert_eq!(
            req("ctl add-interface link3 --address 198.18.3.2 --device veth-c3 --port 4501"),
            Request::AddInterface {
                name: "link3".into(),
                address: "198.18.3.2".into(),
                device: Some("veth-c3".into()),
                port: Some(4501)
            }
        );
        assert_eq!(
            req("ctl add-interface link3 --address ::1"),
            Request::AddInterface {
                name: "link3".into(),
                address: "::1".into(),
                device: None,
                port: None
            }
        );
        assert_eq!(
            req("ctl remove-interface link3"),
            Request::RemoveInterface {
                name: "link3".into()
            }
        );
        assert_eq!(
            req("ctl policy tunnel redundant"),
            Request::Policy {
                sa: "tunnel".into(),
                policy: "redundant".into()
            }
        );
        assert_eq!(
            req(
                "ctl add-path tunnel p3 --interface link3 --remote 198.18.3.1:4500 --role standby --weight 5"
            ),
            Request::AddPath {
                sa: "tunnel".into(),
                name: "p3".into(),
                interface: "link3".into(),
                remote: "198.18.3.1:4500".into(),
                role: Some("standby".into()),
                weight: Some(5),
                pin: vec![],
            }
        );
        // --socket after the request, or between `ctl` and the request.
        let rp = Request::RemovePath {
            sa: "tunnel".into(),
            name: "p3".into(),
        };
        assert_eq!(
            ctl("ctl remove-path tunnel p3 --socket /x"),
            Ok((sock("/x"), rp.clone()))
        );
        assert_eq!(
            ctl("ctl --socket=/y remove-path tunnel p3"),
            Ok((sock("/y"), rp.clone()))
        );
        assert_eq!(
            ctl("ctl remove-path tunnel p3"),
            Ok((sock(DEFAULT_SOCKET), rp))
        );
    }

    #[test]
    fn ctl_mif() {
        use crate::ctl::mif::MifRequest;
        let m = |line: &str| match req(line) {
            Request::Mif(m) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            m("ctl mif home soft-handover link1 link3 --spi c1000001,c1000002 --check"),
            MifRequest {
                conn: "home".into(),
                op: "soft-handover".into(),
                interfaces: vec!["link1".into(), "link3".into()],
                standby: false,
                spi: Some("c1000001,c1000002".into()),
                ts: None,
                check: true,
            }
        );
        let a = m("ctl mif home add link3 --standby --all");
        assert!(a.standby && a.spi.is_none() && a.ts.is_none() && !a.check);
        let a = m("ctl mif home alternates --ts 10.1.0.0/16:10.2.0.0/16");
        assert!(a.interfaces.is_empty());
        assert_eq!(a.ts.as_deref(), Some("10.1.0.0/16:10.2.0.0/16"));
        assert_eq!(err("ctl mif home").0, ErrorKind::MissingRequiredArgument);
        assert_eq!(
            err("ctl mif home remove l1 --all --spi 1").0,
            ErrorKind::ArgumentConflict
        );
        // The daemon's own checks, as a usage error.
        assert_eq!(
            err("ctl mif home remove"),
            (
                ErrorKind::ValueValidation,
                "error: mif remove takes IFACE, got []".to_owned()
            )
        );
        let e = p("ctl mif home remove").unwrap_err().render().to_string();
        assert!(e.contains("Usage: mifsec ctl mif"), "{e}");
        assert_eq!(err("ctl mif home teleport l1").0, ErrorKind::InvalidValue);
    }

    #[test]
    fn usage_errors() {
        for (line, kind, first) in [
            ("", ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand, ""),
            (
                "frobnicate",
                ErrorKind::InvalidSubcommand,
                "error: unrecognized subcommand 'frobnicate'",
            ),
            (
                "run",
                ErrorKind::MissingRequiredArgument,
                "error: the following required arguments were not provided:",
            ),
            (
                "run --config",
                ErrorKind::InvalidValue,
                "error: a value is required for '--config <FILE>' but none was supplied",
            ),
            (
                "run --config a --config b",
                ErrorKind::ArgumentConflict,
                "error: the argument '--config <FILE>' cannot be used multiple times",
            ),
            (
                "run gw.toml",
                ErrorKind::UnknownArgument,
                "error: unexpected argument 'gw.toml' found",
            ),
            (
                "status --verbose",
                ErrorKind::UnknownArgument,
                "error: unexpected argument '--verbose' found",
            ),
            (
                "status -v",
                ErrorKind::UnknownArgument,
                "error: unexpected argument '-v' found",
            ),
            (
                "status --json=yes",
                ErrorKind::TooManyValues,
                "error: unexpected value 'yes' for '--json' found; no more were expected",
            ),
            (
                "keys",
                ErrorKind::MissingRequiredArgument,
                "error: the following required arguments were not provided:",
            ),
            (
                "ctl",
                ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand,
                "",
            ),
            (
                "ctl reboot",
                ErrorKind::InvalidSubcommand,
                "error: unrecognized subcommand 'reboot'",
            ),
            (
                "ctl handover tunnel",
                ErrorKind::MissingRequiredArgument,
                "error: the following required arguments were not provided:",
            ),
            (
                "ctl add-interface l3",
                ErrorKind::MissingRequiredArgument,
                "error: the following required arguments were not provided:",
            ),
            (
                "ctl add-interface l3 --address ::1 --port x",
                ErrorKind::ValueValidation,
                "error: invalid value 'x' for '--port <P>': invalid digit found in string",
            ),
            (
                "ctl add-path t p --interface l",
                ErrorKind::MissingRequiredArgument,
                "error: the following required arguments were not provided:",
            ),
            (
                "ctl add-path t p --interface l --remote 1.2.3.4:5 --weight 0",
                ErrorKind::ValueValidation,
                "error: invalid value '0' for '--weight <W>': 0 is not in 1..=1000000",
            ),
            (
                "ctl policy t",
                ErrorKind::MissingRequiredArgument,
                "error: the following required arguments were not provided:",
            ),
            (
                "ctl remove-path t p --hard",
                ErrorKind::UnknownArgument,
                "error: unexpected argument '--hard' found",
            ),
        ] {
            let (k, f) = err(line);
            assert_eq!(k, kind, "{line}: {f}");
            if !first.is_empty() {
                assert_eq!(f, first, "{line}");
            }
            let e = p(line).unwrap_err();
            assert_eq!(e.exit_code(), EXIT_USAGE, "{line}");
            assert!(e.use_stderr(), "{line}");
        }
        // A missing argument is named.
        let e = p("ctl add-path t p --interface l").unwrap_err().to_string();
        assert!(e.contains("--remote <A:P>"), "{e}");
        let e = p("keys").unwrap_err().to_string();
        assert!(e.contains("--wireshark"), "{e}");
    }

    #[test]
    fn double_dash_ends_options() {
        assert_eq!(
            req("ctl remove-interface -- -odd"),
            Request::RemoveInterface {
                name: "-odd".into()
            }
        );
    }
}
