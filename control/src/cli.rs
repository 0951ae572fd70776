//! The `mifsec` command line: a small hand-written parser (a dozen options do not justify a
//! dependency) that turns the arguments into a [`Command`].
//!
//! Options may come anywhere after the subcommand, as `--name value` or `--name=value`;
//! `--` ends the options. `-h`/`--help` anywhere asks for the usage text.

use std::path::PathBuf;

use crate::config::DEFAULT_SOCKET;
use crate::ctl::Request;

/// The usage text of `mifsec --help`.
pub const USAGE: &str = "\
usage: mifsec COMMAND [OPTIONS]

  run --config FILE                     run the daemon in the foreground
  check --config FILE                   parse and validate FILE, print a summary
  status [--json]                       SAs, paths, interfaces and counters
  keys --wireshark                      the keys as Wireshark esp_sa and ikev2 lines
  ctl handover SA PATH [--hard]         make PATH the only active path of SA
  ctl add-interface NAME --address A [--device D] [--port P]
  ctl remove-interface NAME
  ctl policy SA POLICY                  failover, aggregate, redundant or pinned
  ctl add-path SA NAME --interface I --remote A:P [--role R] [--weight W]
  ctl remove-path SA NAME
  ctl initiate CONN                     start an IKE SA for a [connections.CONN]
  ctl terminate CONN                    delete CONN's IKE SAs and their child SAs
  ctl rekey CONN [--ike]                rekey CONN's child SAs (or, with --ike, its IKE SA)
  ctl move CONN --local A [--remote A]  move CONN's IKE SA and child SAs to our address A
                                        (MOBIKE; only an IKE SA we initiated)
  ctl mif CONN add IFACE [--standby]    multi-interface operations with a mifsec peer, each
  ctl mif CONN remove IFACE             one exchange for every child SA selected; IFACE is
  ctl mif CONN soft-handover FROM TO    an [interfaces.*] name; selection --all (default),
  ctl mif CONN hard-handover FROM TO    --spi SPI[,SPI...] (our inbound SPIs) or
  ctl mif CONN alternates [IFACE...]    --ts LOCAL_CIDR[,..][:REMOTE_CIDR,..]; --check asks
  ctl mif CONN check IFACE              and changes nothing. Prints the peer's answer per
                                        child SA (waits up to 5 s)
  ctl clone CONN [--local A] [--remote A] [--child NAME]
                                        clone CONN's IKE SA (RFC 7791), move the clone to
                                        A (MOBIKE), negotiate child NAME on it
  help                                  this text

status, keys and ctl take --socket PATH (default /run/mifsec/mifsec.sock).
The configuration file is described in docs/CONFIG.md.
";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print the usage text.
    Help,
    /// Print the version.
    Version,
    /// Run the daemon with this configuration file.
    Run {
        /// The configuration file.
        config: PathBuf,
    },
    /// Parse and validate a configuration file.
    Check {
        /// The configuration file.
        config: PathBuf,
    },
    /// Show the daemon's status.
    Status {
        /// Print the JSON as served instead of text.
        json: bool,
        /// The control socket.
        socket: PathBuf,
    },
    /// Print the keys as Wireshark `esp_sa` lines.
    Keys {
        /// The control socket.
        socket: PathBuf,
    },
    /// Send one control request.
    Ctl {
        /// The control socket.
        socket: PathBuf,
        /// The request.
        request: Request,
    },
}

/// Options and positional arguments of one subcommand.
struct Args {
    positional: Vec<String>,
    options: Vec<(&'static str, Option<String>)>,
}

impl Args {
    /// Splits `args` given the flags (no value) and valued options this subcommand takes.
    fn split(
        args: &[String],
        flags: &[&'static str],
        valued: &[&'static str],
    ) -> Result<Args, String> {
        let mut out = Args {
            positional: Vec::new(),
            options: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            if arg == "--" {
                out.positional.extend(it.by_ref().cloned());
                break;
            }
            let Some(body) = arg.strip_prefix("--") else {
                if arg.starts_with('-') && arg.len() > 1 {
                    return Err(format!("unknown option {arg}"));
                }
                out.positional.push(arg.clone());
                continue;
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (body, None),
            };
            let (name, value) = if let Some(&n) = flags.iter().find(|&&f| f == name) {
                if inline.is_some() {
                    return Err(format!("--{n} takes no value"));
                }
                (n, None)
            } else if let Some(&n) = valued.iter().find(|&&f| f == name) {
                let v = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| format!("--{n} needs a value"))?,
                };
                (n, Some(v))
            } else {
                return Err(format!("unknown option --{name}"));
            };
            if out.options.iter().any(|(o, _)| *o == name) {
                return Err(format!("--{name} given twice"));
            }
            out.options.push((name, value));
        }
        Ok(out)
    }

    fn flag(&self, name: &str) -> bool {
        self.options.iter().any(|(o, _)| *o == name)
    }

    fn value(&self, name: &str) -> Option<String> {
        self.options
            .iter()
            .find(|(o, _)| *o == name)
            .and_then(|(_, v)| v.clone())
    }

    fn required(&self, name: &str, what: &str) -> Result<String, String> {
        self.value(name)
            .ok_or_else(|| format!("{what} needs --{name}"))
    }

    fn socket(&self) -> PathBuf {
        PathBuf::from(
            self.value("socket")
                .unwrap_or_else(|| DEFAULT_SOCKET.to_owned()),
        )
    }

    /// Exactly `names.len()` positional arguments, named in the error.
    fn positional<const N: usize>(
        &self,
        what: &str,
        names: [&str; N],
    ) -> Result<[String; N], String> {
        if self.positional.len() != N {
            let want = if N == 0 {
                "no arguments".to_owned()
            } else {
                names.join(" ")
            };
            return Err(format!("{what} takes {want}, got {:?}", self.positional));
        }
        Ok(std::array::from_fn(|i| self.positional[i].clone()))
    }
}

fn number<T: std::str::FromStr>(
    v: Option<String>,
    name: &str,
    range: &str,
) -> Result<Option<T>, String> {
    v.map(|s| {
        s.parse()
            .map_err(|_| format!("--{name}: {s:?} is not a number {range}"))
    })
    .transpose()
}

/// Parses the arguments (without the program name). An error is a usage error: the caller
/// prints it with the usage text and exits 2.
pub fn parse(args: &[String]) -> Result<Command, String> {
    if args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help")
    {
        return Ok(Command::Help);
    }
    let Some((cmd, rest)) = args.split_first() else {
        return Err("no command given".into());
    };
    match cmd.as_str() {
        "help" => Ok(Command::Help),
        "version" | "--version" | "-V" => Ok(Command::Version),
        "run" | "check" => {
            let a = Args::split(rest, &[], &["config"])?;
            a.positional::<0>(cmd, [])?;
            let config = PathBuf::from(a.required("config", cmd)?);
            Ok(if cmd == "run" {
                Command::Run { config }
            } else {
                Command::Check { config }
            })
        }
        "status" => {
            let a = Args::split(rest, &["json"], &["socket"])?;
            a.positional::<0>("status", [])?;
            Ok(Command::Status {
                json: a.flag("json"),
                socket: a.socket(),
            })
        }
        "keys" => {
            let a = Args::split(rest, &["wireshark"], &["socket"])?;
            a.positional::<0>("keys", [])?;
            if !a.flag("wireshark") {
                return Err("keys needs --wireshark (the only output format)".into());
            }
            Ok(Command::Keys { socket: a.socket() })
        }
        "ctl" => parse_ctl(rest),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn parse_ctl(args: &[String]) -> Result<Command, String> {
    let Some((sub, rest)) = args.split_first() else {
        return Err("ctl needs a subcommand".into());
    };
    let what = format!("ctl {sub}");
    let (a, request) = match sub.as_str() {
        "handover" => {
            let a = Args::split(rest, &["hard"], &["socket"])?;
            let [sa, path] = a.positional(&what, ["SA", "PATH"])?;
            let hard = a.flag("hard");
            (a, Request::Handover { sa, path, hard })
        }
        "add-interface" => {
            let a = Args::split(rest, &[], &["socket", "address", "device", "port"])?;
            let [name] = a.positional(&what, ["NAME"])?;
            let address = a.required("address", &what)?;
            let port = number(a.value("port"), "port", "0 to 65535")?;
            let device = a.value("device");
            (
                a,
                Request::AddInterface {
                    name,
                    address,
                    device,
                    port,
                },
            )
        }
        "remove-interface" => {
            let a = Args::split(rest, &[], &["socket"])?;
            let [name] = a.positional(&what, ["NAME"])?;
            (a, Request::RemoveInterface { name })
        }
        "policy" => {
            let a = Args::split(rest, &[], &["socket"])?;
            let [sa, policy] = a.positional(&what, ["SA", "POLICY"])?;
            (a, Request::Policy { sa, policy })
        }
        "add-path" => {
            let a = Args::split(
                rest,
                &[],
                &["socket", "interface", "remote", "role", "weight"],
            )?;
            let [sa, name] = a.positional(&what, ["SA", "NAME"])?;
            let interface = a.required("interface", &what)?;
            let remote = a.required("remote", &what)?;
            let role = a.value("role");
            let weight = number(a.value("weight"), "weight", "1 to 1000000")?;
            (
                a,
                Request::AddPath {
                    sa,
                    name,
                    interface,
                    remote,
                    role,
                    weight,
                    pin: Vec::new(),
                },
            )
        }
        "remove-path" => {
            let a = Args::split(rest, &[], &["socket"])?;
            let [sa, name] = a.positional(&what, ["SA", "NAME"])?;
            (a, Request::RemovePath { sa, name })
        }
        "initiate" | "terminate" => {
            let a = Args::split(rest, &[], &["socket"])?;
            let [conn] = a.positional(&what, ["CONN"])?;
            if sub == "initiate" {
                (a, Request::Initiate { conn })
            } else {
                (a, Request::Terminate { conn })
            }
        }
        "rekey" => {
            let a = Args::split(rest, &["ike"], &["socket"])?;
            let [conn] = a.positional(&what, ["CONN"])?;
            let ike = a.flag("ike");
            (a, Request::Rekey { conn, ike })
        }
        "move" => {
            let a = Args::split(rest, &[], &["socket", "local", "remote"])?;
            let [conn] = a.positional(&what, ["CONN"])?;
            let local = a.required("local", &what)?;
            let remote = a.value("remote");
            (
                a,
                Request::Move {
                    conn,
                    local,
                    remote,
                },
            )
        }
        "mif" => {
            let a = Args::split(rest, &["standby", "all", "check"], &["socket", "spi", "ts"])?;
            let Some((conn, after)) = a.positional.split_first() else {
                return Err("ctl mif takes CONN OPERATION [IFACE...]".into());
            };
            let Some((op, interfaces)) = after.split_first() else {
                return Err("ctl mif takes CONN OPERATION [IFACE...]".into());
            };
            let (spi, ts) = (a.value("spi"), a.value("ts"));
            if a.flag("all") && (spi.is_some() || ts.is_some()) {
                return Err("--all excludes --spi and --ts".into());
            }
            let m = crate::ctl::mif::MifRequest {
                conn: conn.clone(),
                op: op.clone(),
                interfaces: interfaces.to_vec(),
                standby: a.flag("standby"),
                spi,
                ts,
                check: a.flag("check"),
            };
            // The same checks as the daemon's, so that a typo is a usage error here.
            m.command()?;
            (a, Request::Mif(m))
        }
        "clone" => {
            let a = Args::split(rest, &[], &["socket", "local", "remote", "child"])?;
            let [conn] = a.positional(&what, ["CONN"])?;
            let (local, remote, child) = (a.value("local"), a.value("remote"), a.value("child"));
            (
                a,
                Request::Clone {
                    conn,
                    local,
                    remote,
                    child,
                },
            )
        }
        other => return Err(format!("unknown ctl subcommand {other:?}")),
    };
    Ok(Command::Ctl {
        socket: a.socket(),
        request,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(line: &str) -> Result<Command, String> {
        let args: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        parse(&args)
    }

    fn sock(s: &str) -> PathBuf {
        PathBuf::from(s)
    }

    #[test]
    fn commands() {
        assert_eq!(
            p("run --config gw.toml"),
            Ok(Command::Run {
                config: "gw.toml".into()
            })
        );
        assert_eq!(
            p("check --config=gw.toml"),
            Ok(Command::Check {
                config: "gw.toml".into()
            })
        );
        assert_eq!(
            p("status"),
            Ok(Command::Status {
                json: false,
                socket: sock(DEFAULT_SOCKET)
            })
        );
        assert_eq!(
            p("status --socket /tmp/s --json"),
            Ok(Command::Status {
                json: true,
                socket: sock("/tmp/s")
            })
        );
        assert_eq!(
            p("keys --wireshark --socket=/tmp/s"),
            Ok(Command::Keys {
                socket: sock("/tmp/s")
            })
        );
        assert_eq!(p("help"), Ok(Command::Help));
        assert_eq!(p("--help"), Ok(Command::Help));
        assert_eq!(p("ctl handover t p -h"), Ok(Command::Help));
        assert!(matches!(
            p("ctl initiate home"),
            Ok(Command::Ctl { request: Request::Initiate { conn }, .. }) if conn == "home"
        ));
        assert!(matches!(
            p("ctl move home --local 198.18.22.2 --remote 198.18.20.11"),
            Ok(Command::Ctl { request: Request::Move { conn, local, remote: Some(r) }, .. })
                if conn == "home" && local == "198.18.22.2" && r == "198.18.20.11"
        ));
        assert!(matches!(
            p("ctl move home --local 198.18.22.2"),
            Ok(Command::Ctl {
                request: Request::Move { remote: None, .. },
                ..
            })
        ));
        assert!(p("ctl move home").is_err());
        assert!(matches!(
            p("ctl clone home --local 198.18.22.2 --child net2"),
            Ok(Command::Ctl {
                request: Request::Clone { conn, local: Some(l), remote: None, child: Some(c) },
                ..
            }) if conn == "home" && l == "198.18.22.2" && c == "net2"
        ));
        assert!(matches!(
            p("ctl clone home"),
            Ok(Command::Ctl {
                request: Request::Clone {
                    local: None,
                    child: None,
                    ..
                },
                ..
            })
        ));
        assert!(p("ctl clone").is_err());
        assert!(matches!(
            p("ctl rekey home --ike"),
            Ok(Command::Ctl { request: Request::Rekey { conn, ike: true }, .. }) if conn == "home"
        ));
        assert!(matches!(
            p("ctl rekey home"),
            Ok(Command::Ctl { request: Request::Rekey { conn, ike: false }, .. }) if conn == "home"
        ));
        assert!(matches!(
            p("ctl terminate home"),
            Ok(Command::Ctl { request: Request::Terminate { conn }, .. }) if conn == "home"
        ));
        assert_eq!(p("--version"), Ok(Command::Version));
    }

    #[test]
    fn ctl_commands() {
        let ctl = |request| {
            Ok(Command::Ctl {
                socket: sock(DEFAULT_SOCKET),
                request,
            })
        };
        assert_eq!(
            p("ctl handover tunnel fast --hard"),
            ctl(Request::Handover {
                sa: "tunnel".into(),
                path: "fast".into(),
                hard: true
            })
        );
        assert_eq!(
            p("ctl handover tunnel fast"),
            ctl(Request::Handover {
                sa: "tunnel".into(),
                path: "fast".into(),
                hard: false
            })
        );
        assert_eq!(
            p("ctl add-interface link3 --address 198.18.3.2 --device veth-c3 --port 4501"),
            ctl(Request::AddInterface {
                name: "link3".into(),
                address: "198.18.3.2".into(),
                device: Some("veth-c3".into()),
                port: Some(4501)
            })
        );
        assert_eq!(
            p("ctl add-interface link3 --address ::1"),
            ctl(Request::AddInterface {
                name: "link3".into(),
                address: "::1".into(),
                device: None,
                port: None
            })
        );
        assert_eq!(
            p("ctl remove-interface link3"),
            ctl(Request::RemoveInterface {
                name: "link3".into()
            })
        );
        assert_eq!(
            p("ctl policy tunnel redundant"),
            ctl(Request::Policy {
                sa: "tunnel".into(),
                policy: "redundant".into()
            })
        );
        assert_eq!(
            p(
                "ctl add-path tunnel p3 --interface link3 --remote 198.18.3.1:4500 --role standby --weight 5"
            ),
            ctl(Request::AddPath {
                sa: "tunnel".into(),
                name: "p3".into(),
                interface: "link3".into(),
                remote: "198.18.3.1:4500".into(),
                role: Some("standby".into()),
                weight: Some(5),
                pin: vec![],
            })
        );
        assert_eq!(
            p("ctl remove-path tunnel p3 --socket /x"),
            Ok(Command::Ctl {
                socket: sock("/x"),
                request: Request::RemovePath {
                    sa: "tunnel".into(),
                    name: "p3".into()
                }
            })
        );
    }

    #[test]
    fn ctl_mif() {
        use crate::ctl::mif::MifRequest;
        let m = |line: &str| match p(line) {
            Ok(Command::Ctl {
                request: Request::Mif(m),
                ..
            }) => Ok(m),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(
            m("ctl mif home soft-handover link1 link3 --spi c1000001,c1000002 --check"),
            Ok(MifRequest {
                conn: "home".into(),
                op: "soft-handover".into(),
                interfaces: vec!["link1".into(), "link3".into()],
                standby: false,
                spi: Some("c1000001,c1000002".into()),
                ts: None,
                check: true,
            })
        );
        let a = m("ctl mif home add link3 --standby --all").unwrap();
        assert!(a.standby && a.spi.is_none() && a.ts.is_none() && !a.check);
        let a = m("ctl mif home alternates --ts 10.1.0.0/16:10.2.0.0/16").unwrap();
        assert!(a.interfaces.is_empty());
        assert_eq!(a.ts.as_deref(), Some("10.1.0.0/16:10.2.0.0/16"));
        assert_eq!(
            m("ctl mif home"),
            Err("ctl mif takes CONN OPERATION [IFACE...]".into())
        );
        assert_eq!(
            m("ctl mif home remove l1 --all --spi 1"),
            Err("--all excludes --spi and --ts".into())
        );
        assert_eq!(
            m("ctl mif home remove"),
            Err("mif remove takes IFACE, got []".into())
        );
        assert!(m("ctl mif home teleport l1").is_err());
    }

    #[test]
    fn usage_errors() {
        for (line, want) in [
            ("", "no command given"),
            ("frobnicate", "unknown command \"frobnicate\""),
            ("run", "run needs --config"),
            ("run --config", "--config needs a value"),
            ("run --config a --config b", "--config given twice"),
            ("run gw.toml", "run takes no arguments, got [\"gw.toml\"]"),
            ("status --verbose", "unknown option --verbose"),
            ("status -v", "unknown option -v"),
            ("status --json=yes", "--json takes no value"),
            ("keys", "keys needs --wireshark (the only output format)"),
            ("ctl", "ctl needs a subcommand"),
            ("ctl reboot", "unknown ctl subcommand \"reboot\""),
            (
                "ctl handover tunnel",
                "ctl handover takes SA PATH, got [\"tunnel\"]",
            ),
            ("ctl add-interface l3", "ctl add-interface needs --address"),
            (
                "ctl add-interface l3 --address ::1 --port x",
                "--port: \"x\" is not a number 0 to 65535",
            ),
            (
                "ctl add-path t p --interface l",
                "ctl add-path needs --remote",
            ),
            (
                "ctl add-path t p --interface l --remote 1.2.3.4:5 --weight -1",
                "--weight: \"-1\" is not a number 1 to 1000000",
            ),
            ("ctl policy t", "ctl policy takes SA POLICY, got [\"t\"]"),
            ("ctl remove-path t p --hard", "unknown option --hard"),
        ] {
            assert_eq!(p(line), Err(want.to_owned()), "{line}");
        }
    }

    #[test]
    fn double_dash_ends_options() {
        assert_eq!(
            p("ctl remove-interface -- -odd"),
            Ok(Command::Ctl {
                socket: sock(DEFAULT_SOCKET),
                request: Request::RemoveInterface {
                    name: "-odd".into()
                }
            })
        );
    }
}
