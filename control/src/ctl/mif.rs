//! `mifsec ctl mif CONN ...`: one operation of the multi-interface extension
//! (docs/PROTOCOL.md section 5) on a selection of a connection's child SAs, checked here
//! (names, SPIs, selectors, limits) before the IKE thread gets it.
//!
//! On the socket it is `{"cmd":"mif","conn":"home","op":"soft-handover","interfaces":
//! ["link1","link3"],"spi":"c1000001,c1000002","check":true}`; the answer, once the peer's
//! response came (or [`MIF_ANSWER`] passed), is a [`MifAnswer`] per IKE SA of the
//! connection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config;
use crate::dataplane::sa_table::Prefix;

/// How long `ctl mif` waits for the peer's answer.
pub const MIF_ANSWER: Duration = Duration::from_secs(5);

/// Most SPIs in a selection (docs/PROTOCOL.md section 6.6).
pub const MAX_SPIS: usize = 256;
/// Most selectors of each side in a selection.
pub const MAX_SELECTORS: usize = 16;
/// Most interfaces `alternates` names.
pub const MAX_ALTERNATES: usize = 64;

/// What the operation does, with our `[interfaces.*]` names (the IKE thread resolves them to
/// the interface IDs we announced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MifAction {
    /// ADD_INTERFACE (active, or standby).
    Add {
        /// Our interface.
        iface: String,
        /// Added as standby rather than active.
        standby: bool,
    },
    /// REMOVE_INTERFACE.
    Remove {
        /// Our interface.
        iface: String,
    },
    /// SOFT_HANDOVER (make-before-break).
    SoftHandover {
        /// From this interface of ours...
        from: String,
        /// ... to this one.
        to: String,
    },
    /// HARD_HANDOVER (at once).
    HardHandover {
        /// From this interface of ours...
        from: String,
        /// ... to this one.
        to: String,
    },
    /// SET_ALTERNATES: exactly these, in this order (none: no alternates).
    Alternates {
        /// Our interfaces.
        ifaces: Vec<String>,
    },
    /// CHECK: would the peer accept paths over this interface?
    Check {
        /// Our interface.
        iface: String,
    },
}

impl MifAction {
    /// The name `ctl mif` takes and the log shows.
    pub fn name(&self) -> &'static str {
        match self {
            MifAction::Add { .. } => "add",
            MifAction::Remove { .. } => "remove",
            MifAction::SoftHandover { .. } => "soft-handover",
            MifAction::HardHandover { .. } => "hard-handover",
            MifAction::Alternates { .. } => "alternates",
            MifAction::Check { .. } => "check",
        }
    }

    /// Every interface it names.
    pub fn interfaces(&self) -> Vec<&str> {
        match self {
            MifAction::Add { iface, .. }
            | MifAction::Remove { iface }
            | MifAction::Check { iface } => vec![iface],
            MifAction::SoftHandover { from, to } | MifAction::HardHandover { from, to } => {
                vec![from, to]
            }
            MifAction::Alternates { ifaces } => ifaces.iter().map(String::as_str).collect(),
        }
    }
}

/// Which child SAs of the IKE SA the operation is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MifSelect {
    /// Every child SA (`--all`, the default).
    All,
    /// These, by our inbound SPI (as `status` prints them).
    Spis(Vec<u32>),
    /// Every child whose selectors lie inside these: ours, the peer's (empty: any).
    Ts {
        /// Our side.
        local: Vec<Prefix>,
        /// The peer's side.
        remote: Vec<Prefix>,
    },
}

/// One checked `ctl mif` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MifCommand {
    /// What to do.
    pub action: MifAction,
    /// For which child SAs.
    pub select: MifSelect,
    /// `--check`: ask, change nothing (DRY_RUN).
    pub dry_run: bool,
}

/// The request as it travels on the socket (the `mif` variant of
/// [`Request`](super::Request) carries these fields).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MifRequest {
    /// Connection name.
    pub conn: String,
    /// `add`, `remove`, `soft-handover`, `hard-handover`, `alternates` or `check`.
    pub op: String,
    /// The interfaces it names, our `[interfaces.*]` names.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// `add`: as standby.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub standby: bool,
    /// Selection by SPIs: `SPI[,SPI...]`, hex, our inbound SPIs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spi: Option<String>,
    /// Selection by selectors: `LOCAL_CIDR[,..][:REMOTE_CIDR,..]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ts: Option<String>,
    /// Dry run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub check: bool,
}

impl MifRequest {
    /// The request as `ctl mif` would have been typed (for the log).
    pub fn describe(&self) -> String {
        let mut s = format!("mif {} {}", self.conn, self.op);
        for i in &self.interfaces {
            s += " ";
            s += i;
        }
        if self.standby {
            s += " --standby";
        }
        if let Some(spi) = &self.spi {
            s += &format!(" --spi {spi}");
        }
        if let Some(ts) = &self.ts {
            s += &format!(" --ts {ts}");
        }
        if self.check {
            s += " --check";
        }
        s
    }

    /// Checks the request: the operation and its interfaces, the selection, the limits.
    pub fn command(&self) -> Result<MifCommand, String> {
        for i in &self.interfaces {
            if !config::valid_name(i) {
                return Err(format!(
                    "{i:?}: interface names are 1 to 32 letters, digits, '-' or '_'"
                ));
            }
        }
        let n = self.interfaces.len();
        let arity = |want: usize, names: &str| {
            if n == want {
                Ok(())
            } else {
                Err(format!(
                    "mif {} takes {names}, got {:?}",
                    self.op, self.interfaces
                ))
            }
        };
        let ifs = &self.interfaces;
        let action = match self.op.as_str() {
            "add" => {
                arity(1, "IFACE")?;
                MifAction::Add {
                    iface: ifs[0].clone(),
                    standby: self.standby,
                }
            }
            "remove" => {
                arity(1, "IFACE")?;
                MifAction::Remove {
                    iface: ifs[0].clone(),
                }
            }
            "soft-handover" | "hard-handover" => {
                arity(2, "FROM TO")?;
                if ifs[0] == ifs[1] {
                    return Err(format!("mif {}: FROM and TO are the same", self.op));
                }
                let (from, to) = (ifs[0].clone(), ifs[1].clone());
                if self.op == "soft-handover" {
                    MifAction::SoftHandover { from, to }
                } else {
                    MifAction::HardHandover { from, to }
                }
            }
            "alternates" => {
                if n > MAX_ALTERNATES {
                    return Err(format!(
                        "mif alternates takes at most {MAX_ALTERNATES} interfaces"
                    ));
                }
                for (k, i) in ifs.iter().enumerate() {
                    if ifs[..k].contains(i) {
                        return Err(format!("mif alternates: {i} named twice"));
                    }
                }
                MifAction::Alternates {
                    ifaces: ifs.clone(),
                }
            }
            "check" => {
                arity(1, "IFACE")?;
                MifAction::Check {
                    iface: ifs[0].clone(),
                }
            }
            other => {
                return Err(format!(
                    "unknown mif operation {other:?} (add, remove, soft-handover, \
                     hard-handover, alternates, check)"
                ));
            }
        };
        if self.standby && !matches!(action, MifAction::Add { .. }) {
            return Err("--standby goes with mif add only".into());
        }
        let select = match (&self.spi, &self.ts) {
            (Some(_), Some(_)) => return Err("--spi and --ts exclude each other".into()),
            (Some(s), None) => MifSelect::Spis(parse_spis(s)?),
            (None, Some(t)) => parse_ts(t)?,
            (None, None) => MifSelect::All,
        };
        Ok(MifCommand {
            action,
            select,
            dry_run: self.check,
        })
    }
}

/// `SPI[,SPI...]`: hex (an optional `0x`), as `status` prints them.
pub fn parse_spis(s: &str) -> Result<Vec<u32>, String> {
    let mut out: Vec<u32> = Vec::new();
    for part in s.split(',') {
        let p = part.trim();
        let digits = p
            .strip_prefix("0x")
            .or_else(|| p.strip_prefix("0X"))
            .unwrap_or(p);
        let spi = (!digits.is_empty() && digits.len() <= 8)
            .then(|| u32::from_str_radix(digits, 16).ok())
            .flatten()
            .ok_or_else(|| format!("--spi: {p:?} is not an SPI (hex, as status prints it)"))?;
        if !out.contains(&spi) {
            out.push(spi);
        }
    }
    if out.len() > MAX_SPIS {
        return Err(format!("--spi: at most {MAX_SPIS} SPIs"));
    }
    Ok(out)
}

fn prefixes(s: &str) -> Result<Vec<Prefix>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',').map(|p| p.trim().parse::<Prefix>()).collect()
}

/// `LOCAL_CIDR[,..][:REMOTE_CIDR,..]`. IPv6 prefixes hold colons too: the split is at the
/// first colon with a list of prefixes on both sides.
pub fn parse_ts(s: &str) -> Result<MifSelect, String> {
    let whole = prefixes(s);
    let (local, remote) = match whole {
        Ok(l) => (l, Vec::new()),
        Err(first) => s
            .match_indices(':')
            .find_map(|(i, _)| Some((prefixes(&s[..i]).ok()?, prefixes(&s[i + 1..]).ok()?)))
            .ok_or_else(|| format!("--ts: {first}"))?,
    };
    if local.is_empty() && remote.is_empty() {
        return Err("--ts needs at least one prefix".into());
    }
    if local.len() > MAX_SELECTORS || remote.len() > MAX_SELECTORS {
        return Err(format!(
            "--ts: at most {MAX_SELECTORS} prefixes on each side"
        ));
    }
    Ok(MifSelect::Ts { local, remote })
}

/// What the peer answered for one child SA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MifChildAnswer {
    /// Our inbound SPI, hex.
    pub spi: String,
    /// `applied`, `not-allowed`, `outside-spd`, `unknown-sa`, `address-family`, `limit`,
    /// `no-change` or `last-path`.
    pub status: String,
    /// The paths the child SA has (or would have, with `--check`) at the peer.
    pub paths: u8,
}

/// The outcome of a `ctl mif` on one IKE SA of the connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MifAnswer {
    /// The IKE SA's number (as `status` shows it).
    pub ike_sa: u64,
    /// The operation.
    pub op: String,
    /// A dry run.
    pub dry_run: bool,
    /// Whether the peer answered within [`MIF_ANSWER`].
    pub answered: bool,
    /// The whole operation refused (`malformed`, `unknown-operation`, `unknown-interface`,
    /// `limit`, `not-negotiated`), or refused here before it was sent (why).
    pub refused: Option<String>,
    /// Per child SA, what the peer answered.
    pub children: Vec<MifChildAnswer>,
}

impl MifAnswer {
    /// The answer as text for the operator, one line per child SA.
    pub fn text(&self, conn: &str) -> String {
        let mut s = format!(
            "{conn} #{}: {}{}: ",
            self.ike_sa,
            self.op,
            if self.dry_run { " (check)" } else { "" }
        );
        if let Some(r) = &self.refused {
            s += &format!("refused: {r}");
        } else if !self.answered {
            s += &format!("no answer within {} s", MIF_ANSWER.as_secs());
        } else {
            s += &format!("answered for {} child SAs", self.children.len());
        }
        for c in &self.children {
            s += &format!("\n  child SA {}: {}, {} paths", c.spi, c.status, c.paths);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(op: &str, ifs: &[&str]) -> MifRequest {
        MifRequest {
            conn: "home".into(),
            op: op.into(),
            interfaces: ifs.iter().map(|s| (*s).to_owned()).collect(),
            standby: false,
            spi: None,
            ts: None,
            check: false,
        }
    }

    fn p(s: &str) -> Prefix {
        s.parse().unwrap()
    }

    #[test]
    fn operations_and_selections() {
        let c = req("soft-handover", &["link1", "link3"]).command().unwrap();
        assert_eq!(
            c,
            MifCommand {
                action: MifAction::SoftHandover {
                    from: "link1".into(),
                    to: "link3".into()
                },
                select: MifSelect::All,
                dry_run: false
            }
        );
        let mut r = req("add", &["link3"]);
        r.standby = true;
        r.spi = Some("c1000001,0xC1000002,c1000001".into());
        r.check = true;
        let c = r.command().unwrap();
        assert_eq!(
            c.action,
            MifAction::Add {
                iface: "link3".into(),
                standby: true
            }
        );
        assert_eq!(c.select, MifSelect::Spis(vec![0xc100_0001, 0xc100_0002]));
        assert!(c.dry_run);
        let mut r = req("alternates", &[]);
        r.ts = Some("10.1.0.0/16,10.3.0.0/24:10.2.0.0/16".into());
        let c = r.command().unwrap();
        assert_eq!(c.action, MifAction::Alternates { ifaces: vec![] });
        assert_eq!(
            c.select,
            MifSelect::Ts {
                local: vec![p("10.1.0.0/16"), p("10.3.0.0/24")],
                remote: vec![p("10.2.0.0/16")]
            }
        );
        assert_eq!(
            parse_ts("fd00::/64:fd01::/64").unwrap(),
            MifSelect::Ts {
                local: vec![p("fd00::/64")],
                remote: vec![p("fd01::/64")]
            }
        );
        assert_eq!(
            parse_ts("fd00::/64").unwrap(),
            MifSelect::Ts {
                local: vec![p("fd00::/64")],
                remote: vec![]
            }
        );
        assert_eq!(
            parse_ts(":10.2.0.0/16").unwrap(),
            MifSelect::Ts {
                local: vec![],
                remote: vec![p("10.2.0.0/16")]
            }
        );
        for (op, ifs) in [
            ("remove", &["l"][..]),
            ("hard-handover", &["a", "b"]),
            ("check", &["l"]),
            ("alternates", &["a", "b", "c"]),
        ] {
            assert_eq!(req(op, ifs).command().unwrap().action.name(), op);
        }
    }

    #[test]
    fn refusals() {
        let e = |r: MifRequest| r.command().unwrap_err();
        assert_eq!(e(req("add", &[])), "mif add takes IFACE, got []");
        assert_eq!(
            e(req("soft-handover", &["a"])),
            "mif soft-handover takes FROM TO, got [\"a\"]"
        );
        assert_eq!(
            e(req("hard-handover", &["a", "a"])),
            "mif hard-handover: FROM and TO are the same"
        );
        assert_eq!(
            e(req("alternates", &["a", "a"])),
            "mif alternates: a named twice"
        );
        assert!(e(req("frob", &["a"])).starts_with("unknown mif operation \"frob\""));
        assert!(e(req("add", &["a\nb"])).contains("interface names are"));
        let mut r = req("remove", &["a"]);
        r.standby = true;
        assert_eq!(e(r), "--standby goes with mif add only");
        let mut r = req("remove", &["a"]);
        r.spi = Some("1".into());
        r.ts = Some("10.0.0.0/8".into());
        assert_eq!(e(r), "--spi and --ts exclude each other");
        let mut r = req("remove", &["a"]);
        r.spi = Some("xyz".into());
        assert_eq!(
            e(r),
            "--spi: \"xyz\" is not an SPI (hex, as status prints it)"
        );
        let mut r = req("remove", &["a"]);
        r.spi = Some("123456789".into());
        assert!(e(r).starts_with("--spi: \"123456789\""));
        let many: Vec<String> = (0..300).map(|i| format!("{i:x}")).collect();
        assert_eq!(
            parse_spis(&many.join(",")).unwrap_err(),
            "--spi: at most 256 SPIs"
        );
        assert!(parse_ts("10.0.0.0/33").is_err());
        assert!(parse_ts(":").is_err());
        let many: Vec<String> = (0..17).map(|i| format!("10.{i}.0.0/16")).collect();
        assert_eq!(
            parse_ts(&many.join(",")).unwrap_err(),
            "--ts: at most 16 prefixes on each side"
        );
    }

    #[test]
    fn answers_as_text() {
        let a = MifAnswer {
            ike_sa: 1,
            op: "soft-handover".into(),
            dry_run: true,
            answered: true,
            refused: None,
            children: vec![MifChildAnswer {
                spi: "c1000001".into(),
                status: "applied".into(),
                paths: 2,
            }],
        };
        assert_eq!(
            a.text("home"),
            "home #1: soft-handover (check): answered for 1 child SAs\n  child SA c1000001: applied, 2 paths"
        );
        let none = MifAnswer {
            answered: false,
            children: vec![],
            dry_run: false,
            ..a
        };
        assert_eq!(
            none.text("home"),
            "home #1: soft-handover: no answer within 5 s"
        );
    }
}
