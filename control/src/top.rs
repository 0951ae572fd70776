//! `mifsec top`: a live terminal view of a running daemon (ratatui on crossterm), in the
//! manner of glorytun's `path` view and `top` itself.
//!
//! ```text
//! mifsec top  /run/mifsec/mifsec.sock  every 1.0 s  engine up 5m03s, 2 SAs, 1 IKE SA
//! updated 0.2 s ago                          q quit  tab pane  up/down select
//! ┌IKE SAs─────────────────────────────────────────────────────────────────────┐
//! │ name      state        role       local / ts         remote / ts   ...     │
//! │ mif #1    ESTABLISHED  initiator  198.18.33.2:4500   198.18.41.2:4500      │
//! │   c0      INSTALLED    child      10.50.0.1/32       10.60.0.1/32          │
//! └────────────────────────────────────────────────────────────────────────────┘
//! ┌SAs: policy, rates, packets, drops──────────────────────────────────────────┐
//! ┌paths of mif-c0-c1a2b3c4────────────────────────────────────────────────────┐
//! │ path  iface  local -> remote   role  state  rtt  loss  tx  rx              │
//! ```
//!
//! A poller thread asks the daemon for `status` over the control socket every `--interval`
//! and hands each answer (or the error) to the drawing loop; rates are the byte counters'
//! differences between two successive answers (inner bytes per SA, ESP bytes per path). A
//! daemon that cannot be reached (not started yet, stopped, restarted) is shown as "daemon
//! unreachable" with the last figures it gave, and asked again at the next interval.
//!
//! The terminal is put back (raw mode off, main screen, cursor shown) on every way out:
//! `q`, Esc or Ctrl-C, SIGTERM / SIGINT / SIGHUP, an I/O error of the terminal, and a panic
//! (a hook restores it before the message is printed).
//!
//! The pure part ([`View::build`] from two samples, [`render`] into any ratatui backend) is
//! unit-tested with ratatui's `TestBackend`; the whole command under tmux in
//! control/tests/top_tmux.rs.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use crossterm::{cursor, execute, terminal};
use ratatui::backend::{Backend, CrosstermBackend};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Table, TableState};
use ratatui::{Frame, Terminal};
use serde_json::Value;

use crate::ctl::{self, Request};
use crate::render::uptime;

/// The shortest `--interval` accepted (the daemon's status is cheap, but not free).
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// The default `--interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The longest `--interval` accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(3600);

/// `--interval SECONDS` (a decimal number, `0.2`), within [`MIN_INTERVAL`] and
/// [`MAX_INTERVAL`].
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    let (lo, hi) = (MIN_INTERVAL.as_secs_f64(), MAX_INTERVAL.as_secs_f64());
    if !(lo..=hi).contains(&secs) {
        return Err(format!(
            "the interval must be between {lo} and {hi} seconds"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// One answer of the daemon, with when it came.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the answer arrived.
    pub at: Instant,
    /// The `status` result, as served.
    pub status: Value,
}

/// A rate in bits per second, or `None` when it cannot be known yet (first sample, a
/// counter that went back: a new SA under the same name, a restarted daemon).
pub type Rate = Option<f64>;

/// One path of an SA as `top` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct PathRow {
    /// Path name.
    pub name: String,
    /// Engine interface.
    pub interface: String,
    /// Our address.
    pub local: String,
    /// The peer's.
    pub remote: String,
    /// `active`, `standby`, `alternate`.
    pub role: String,
    /// `up`, `down`, `unknown`, `unverified`, `no-socket`.
    pub state: String,
    /// Smoothed probe RTT.
    pub rtt_ms: Option<f64>,
    /// Recent probe loss.
    pub loss_pct: f64,
    /// ESP bits per second sent on it.
    pub tx: Rate,
    /// ... and received.
    pub rx: Rate,
}

/// One engine SA (a manual SA or an IKE child).
#[derive(Debug, Clone, PartialEq)]
pub struct SaRow {
    /// The engine's name.
    pub name: String,
    /// `conn/child` for an IKE child, `manual` otherwise.
    pub owner: String,
    /// Scheduling policy.
    pub policy: String,
    /// `tunnel` or `transport`.
    pub mode: String,
    /// Inner bits per second sent.
    pub out_rate: Rate,
    /// ... and received.
    pub in_rate: Rate,
    /// Packets sealed.
    pub out_packets: u64,
    /// Packets accepted.
    pub in_packets: u64,
    /// Inbound drops, all reasons.
    pub drops: u64,
    /// Its paths.
    pub paths: Vec<PathRow>,
}

/// One line of the IKE pane.
#[derive(Debug, Clone, PartialEq)]
pub enum IkeRow {
    /// An IKE SA.
    Sa {
        /// Connection name.
        name: String,
        /// Its `#N`.
        id: u64,
        /// `ESTABLISHED`, ...
        state: String,
        /// `initiator` or `responder`.
        role: String,
        /// Our address.
        local: String,
        /// The peer's.
        remote: String,
        /// `up 5m03s, MIF, MOBIKE, moves 2`.
        info: String,
        /// Its children's inner bits per second sent, summed.
        out_rate: Rate,
        /// ... received.
        in_rate: Rate,
    },
    /// One of its child SAs.
    Child {
        /// Child configuration name.
        name: String,
        /// `INSTALLED` or `REKEYED`.
        state: String,
        /// The engine SA it is.
        sa: String,
        /// Our selectors.
        local_ts: String,
        /// The peer's.
        remote_ts: String,
        /// `esp c1a2b3c4/0d0e0f10 tunnel`.
        info: String,
        /// Inner bits per second sent.
        out_rate: Rate,
        /// ... received.
        in_rate: Rate,
    },
}

/// Everything one screen shows, from the last two samples.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct View {
    /// The IKE pane's lines.
    pub ike: Vec<IkeRow>,
    /// The engine's SAs.
    pub sas: Vec<SaRow>,
    /// `engine up 5m03s, 2 SAs, 1 IKE SA`.
    pub summary: String,
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("-").to_owned()
}

fn n(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn list<'a>(v: &'a Value, k: &str) -> &'a [Value] {
    v.get(k)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn joined(v: &Value, k: &str) -> String {
    let items: Vec<&str> = list(v, k).iter().filter_map(Value::as_str).collect();
    if items.is_empty() {
        "-".into()
    } else {
        items.join(" ")
    }
}

/// Bits per second from two byte counters `dt` seconds apart; `None` if the counter went
/// back or no time passed.
fn rate(before: u64, now: u64, dt: f64) -> Rate {
    (dt > 0.0)
        .then(|| now.checked_sub(before))
        .flatten()
        .map(|d| d as f64 * 8.0 / dt)
}

fn sum(rates: impl IntoIterator<Item = Rate>) -> Rate {
    rates.into_iter().flatten().reduce(|a, b| a + b)
}

/// The engine SA of `prev` that `sa` continues: the same name and the same SPIs (a rekey
/// or a re-created SA starts its counters again).
fn same_sa<'a>(prev: &'a Value, sa: &Value) -> Option<&'a Value> {
    list(prev, "sas").iter().find(|p| {
        p.get("name") == sa.get("name")
            && p.get("spi_in") == sa.get("spi_in")
            && p.get("spi_out") == sa.get("spi_out")
    })
}

impl View {
    /// The view of sample `cur`, with rates against `prev` (the sample before it, if any).
    pub fn build(prev: Option<&Sample>, cur: &Sample) -> View {
        let st = &cur.status;
        let dt = prev.map_or(0.0, |p| {
            cur.at.saturating_duration_since(p.at).as_secs_f64()
        });
        let prev_st = prev.map(|p| &p.status);
        // Which IKE child each engine SA is.
        let mut owners: HashMap<String, String> = HashMap::new();
        for ike in list(st, "ike_sas") {
            for c in list(ike, "children") {
                owners.insert(s(c, "sa"), format!("{}/{}", s(ike, "name"), s(c, "name")));
            }
        }
        let sas: Vec<SaRow> = list(st, "sas")
            .iter()
            .map(|sa| {
                let before = prev_st.and_then(|p| same_sa(p, sa));
                let r = |k: &str| before.and_then(|b| rate(n(b, k), n(sa, k), dt));
                let paths = list(sa, "paths")
                    .iter()
                    .map(|p| {
                        let pb = before.and_then(|b| {
                            list(b, "paths")
                                .iter()
                                .find(|q| q.get("name") == p.get("name"))
                        });
                        let pr = |k: &str| pb.and_then(|b| rate(n(b, k), n(p, k), dt));
                        PathRow {
                            name: s(p, "name"),
                            interface: s(p, "interface"),
                            local: s(p, "local"),
                            remote: s(p, "remote"),
                            role: s(p, "role"),
                            state: s(p, "state"),
                            rtt_ms: p.get("rtt_ms").and_then(Value::as_f64),
                            loss_pct: p.get("loss_pct").and_then(Value::as_f64).unwrap_or(0.0),
                            tx: pr("tx_bytes"),
                            rx: pr("rx_bytes"),
                        }
                    })
                    .collect();
                let name = s(sa, "name");
                SaRow {
                    owner: owners
                        .get(&name)
                        .cloned()
                        .unwrap_or_else(|| "manual".into()),
                    name,
                    policy: s(sa, "policy"),
                    mode: s(sa, "mode"),
                    out_rate: r("out_bytes"),
                    in_rate: r("in_bytes"),
                    out_packets: n(sa, "out_packets"),
                    in_packets: n(sa, "in_packets"),
                    drops: sa
                        .get("drops")
                        .and_then(Value::as_object)
                        .map_or(0, |d| d.values().filter_map(Value::as_u64).sum()),
                    paths,
                }
            })
            .collect();
        let sa_rates = |name: &str| {
            sas.iter()
                .find(|r| r.name == name)
                .map_or((None, None), |r| (r.out_rate, r.in_rate))
        };
        let mut ike = Vec::new();
        for i in list(st, "ike_sas") {
            let children: Vec<IkeRow> = list(i, "children")
                .iter()
                .map(|c| {
                    let (out_rate, in_rate) = sa_rates(&s(c, "sa"));
                    IkeRow::Child {
                        name: s(c, "name"),
                        state: s(c, "state"),
                        sa: s(c, "sa"),
                        local_ts: joined(c, "local_ts"),
                        remote_ts: joined(c, "remote_ts"),
                        info: format!(
                            "esp {}/{} {}",
                            s(c, "spi_in"),
                            s(c, "spi_out"),
                            s(c, "mode")
                        ),
                        out_rate,
                        in_rate,
                    }
                })
                .collect();
            let mut info = Vec::new();
            if let Some(t) = i.get("established_s").and_then(Value::as_u64) {
                info.push(format!("up {}", uptime(t as f64)));
            }
            if i.get("mif")
                .and_then(|m| m.get("in_use"))
                .and_then(Value::as_bool)
                == Some(true)
            {
                info.push("MIF".into());
            }
            if i.get("mobike").and_then(Value::as_bool) == Some(true) {
                info.push("MOBIKE".into());
            }
            if n(i, "moves") > 0 {
                info.push(format!("moves {}", n(i, "moves")));
            }
            if let Some(from) = i.get("cloned_from").and_then(Value::as_u64) {
                info.push(format!("clone of #{from}"));
            }
            let rates = |pick: fn(&IkeRow) -> Rate| sum(children.iter().map(pick));
            let child_out = |r: &IkeRow| match r {
                IkeRow::Child { out_rate, .. } => *out_rate,
                IkeRow::Sa { .. } => None,
            };
            let child_in = |r: &IkeRow| match r {
                IkeRow::Child { in_rate, .. } => *in_rate,
                IkeRow::Sa { .. } => None,
            };
            ike.push(IkeRow::Sa {
                name: s(i, "name"),
                id: n(i, "id"),
                state: s(i, "state"),
                role: if i.get("initiator").and_then(Value::as_bool) == Some(true) {
                    "initiator".into()
                } else {
                    "responder".into()
                },
                local: s(i, "local"),
                remote: s(i, "remote"),
                info: info.join(", "),
                out_rate: rates(child_out),
                in_rate: rates(child_in),
            });
            ike.extend(children);
        }
        let ike_count = list(st, "ike_sas").len();
        let summary = format!(
            "engine up {}, {} SA{}, {} IKE SA{}",
            uptime(st.get("uptime_s").and_then(Value::as_f64).unwrap_or(0.0)),
            sas.len(),
            if sas.len() == 1 { "" } else { "s" },
            ike_count,
            if ike_count == 1 { "" } else { "s" },
        );
        View { ike, sas, summary }
    }
}

/// A rate as `0`, `812 bit/s`, `81.2 kbit/s`, `3.47 Mbit/s`, `1.21 Gbit/s`; `-` unknown.
pub fn format_rate(r: Rate) -> String {
    let Some(b) = r else {
        return "-".into();
    };
    if b < 0.5 {
        return "0".into();
    }
    if b < 1e3 {
        return format!("{b:.0} bit/s");
    }
    let (x, unit) = if b < 1e6 {
        (b / 1e3, "kbit/s")
    } else if b < 1e9 {
        (b / 1e6, "Mbit/s")
    } else {
        (b / 1e9, "Gbit/s")
    };
    if x < 100.0 {
        format!("{x:.2} {unit}")
    } else {
        format!("{x:.1} {unit}")
    }
}

/// Which pane the arrows move in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pane {
    /// IKE SAs and their children.
    Ike,
    /// The engine's SAs (the paths pane shows the selected one's paths).
    Sas,
}

/// What the screen shows besides the view: where, how often, how fresh, what is selected.
#[derive(Debug)]
pub struct App {
    /// The control socket.
    pub socket: PathBuf,
    /// How often the daemon is asked.
    pub interval: Duration,
    /// The last view built, if the daemon ever answered.
    pub view: Option<View>,
    /// The last answer.
    pub last: Option<Sample>,
    /// The last error, while the daemon does not answer.
    pub error: Option<String>,
    /// The pane with the focus.
    pub focus: Pane,
    /// Selection in the IKE pane.
    pub ike_state: TableState,
    /// Selection in the SA pane.
    pub sa_state: TableState,
}

impl App {
    /// A screen for the daemon at `socket`, asked every `interval`, before any answer.
    pub fn new(socket: &Path, interval: Duration) -> App {
        App {
            socket: socket.to_owned(),
            interval,
            view: None,
            last: None,
            error: None,
            focus: Pane::Sas,
            ike_state: TableState::default().with_selected(Some(0)),
            sa_state: TableState::default().with_selected(Some(0)),
        }
    }

    /// Takes the daemon's answer (or why there was none).
    pub fn update(&mut self, at: Instant, answer: Result<Value, String>) {
        match answer {
            Ok(status) => {
                let cur = Sample { at, status };
                let view = View::build(self.last.as_ref(), &cur);
                // Keep the SA selected by name, though the list changed around it.
                let selected = self.selected_sa().map(|r| r.name.clone());
                self.view = Some(view);
                self.last = Some(cur);
                self.error = None;
                if let Some(name) = selected {
                    self.select_sa_named(&name);
                }
                self.clamp();
            }
            Err(e) => self.error = Some(e),
        }
    }

    fn select_sa_named(&mut self, name: &str) {
        if let Some(i) = self
            .view
            .as_ref()
            .and_then(|v| v.sas.iter().position(|r| r.name == name))
        {
            self.sa_state.select(Some(i));
        }
    }

    fn clamp(&mut self) {
        let (ni, ns) = self
            .view
            .as_ref()
            .map_or((0, 0), |v| (v.ike.len(), v.sas.len()));
        for (st, len) in [(&mut self.ike_state, ni), (&mut self.sa_state, ns)] {
            let i = st.selected().unwrap_or(0).min(len.saturating_sub(1));
            st.select(Some(i));
        }
    }

    /// The SA whose paths the paths pane shows.
    pub fn selected_sa(&self) -> Option<&SaRow> {
        let v = self.view.as_ref()?;
        v.sas.get(self.sa_state.selected().unwrap_or(0))
    }

    /// Handles one key; returns false when it asks to quit.
    pub fn key(&mut self, code: KeyCode, mods: KeyModifiers) -> bool {
        match code {
            KeyCode::Char('q') | KeyCode::Esc => return false,
            KeyCode::Char('c') if mods.contains(KeyModifiers::CONTROL) => return false,
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Pane::Ike => Pane::Sas,
                    Pane::Sas => Pane::Ike,
                };
            }
            KeyCode::Up | KeyCode::Char('k') => self.step(-1),
            KeyCode::Down | KeyCode::Char('j') => self.step(1),
            KeyCode::Home => self.step(i64::MIN / 2),
            KeyCode::End => self.step(i64::MAX / 2),
            _ => {}
        }
        true
    }

    fn step(&mut self, by: i64) {
        let Some(v) = &self.view else { return };
        let (st, len) = match self.focus {
            Pane::Ike => (&mut self.ike_state, v.ike.len()),
            Pane::Sas => (&mut self.sa_state, v.sas.len()),
        };
        if len == 0 {
            return;
        }
        let cur = st.selected().unwrap_or(0) as i64;
        let next = cur.saturating_add(by).clamp(0, len as i64 - 1) as usize;
        st.select(Some(next));
        // A child selected in the IKE pane selects its engine SA (and so its paths).
        if self.focus == Pane::Ike {
            if let Some(IkeRow::Child { sa, .. }) = v.ike.get(next) {
                let sa = sa.clone();
                self.select_sa_named(&sa);
            }
        }
    }
}

const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);

fn pane(title: String, focused: bool) -> Block<'static> {
    let style = if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    };
    Block::default()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title)
}

fn state_style(state: &str) -> Style {
    match state {
        "up" | "ESTABLISHED" | "INSTALLED" => Style::new().fg(Color::Green),
        "down" | "no-socket" | "DELETING" => Style::new().fg(Color::Red),
        "unverified" | "unknown" | "CONNECTING" | "REKEYED" => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

/// Draws `app` into one frame.
pub fn render(f: &mut Frame<'_>, app: &mut App) {
    let area = f.area();
    let empty = View::default();
    let view = app.view.clone();
    let view = view.as_ref().unwrap_or(&empty);
    let third = area.height.saturating_sub(2) / 3;
    let want = |rows: usize| {
        u16::try_from(rows + 3)
            .unwrap_or(u16::MAX)
            .min(third.max(4))
    };
    let paths_of = app.selected_sa().map(|r| r.paths.len()).unwrap_or(0);
    let [head, ike_area, sa_area, path_area] = Layout::vertical([
        Constraint::Length(2),
        Constraint::Length(want(view.ike.len().max(1))),
        Constraint::Length(want(view.sas.len().max(1))),
        Constraint::Min(u16::try_from(paths_of + 3).unwrap_or(u16::MAX).min(4)),
    ])
    .areas(area);
    header(f, head, app, view);
    ike_pane(f, ike_area, app, view);
    sa_pane(f, sa_area, app, view);
    path_pane(f, path_area, app);
}

fn header(f: &mut Frame<'_>, area: Rect, app: &App, view: &View) {
    let first = Line::from(vec![
        Span::styled("mifsec top", HEADER),
        Span::raw(format!(
            "  {}  every {:.1} s  {}",
            app.socket.display(),
            app.interval.as_secs_f64(),
            if app.view.is_some() {
                view.summary.as_str()
            } else {
                ""
            }
        )),
    ]);
    let keys = "q quit  tab pane  up/down select";
    let second = match (&app.error, &app.last) {
        (Some(e), last) => Line::from(vec![
            Span::styled(
                "daemon unreachable",
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                ": {e}; retrying every {:.1} s{}  {keys}",
                app.interval.as_secs_f64(),
                match last {
                    Some(l) => format!(", figures of {:.0} s ago", l.at.elapsed().as_secs_f64()),
                    None => String::new(),
                }
            )),
        ]),
        (None, Some(l)) => Line::from(format!(
            "updated {:.1} s ago  {keys}",
            l.at.elapsed().as_secs_f64()
        )),
        (None, None) => Line::from(format!("waiting for the daemon  {keys}")),
    };
    f.render_widget(Paragraph::new(vec![first, second]), area);
}

fn ike_pane(f: &mut Frame<'_>, area: Rect, app: &mut App, view: &View) {
    let rows: Vec<Row<'_>> = view
        .ike
        .iter()
        .map(|r| match r {
            IkeRow::Sa {
                name,
                id,
                state,
                role,
                local,
                remote,
                info,
                out_rate,
                in_rate,
            } => Row::new(vec![
                ratatui::text::Text::from(format!("{name} #{id}")),
                Span::styled(state.clone(), state_style(state)).into(),
                role.clone().into(),
                local.clone().into(),
                remote.clone().into(),
                info.clone().into(),
                format_rate(*out_rate).into(),
                format_rate(*in_rate).into(),
            ]),
            IkeRow::Child {
                name,
                state,
                local_ts,
                remote_ts,
                info,
                out_rate,
                in_rate,
                ..
            } => Row::new(vec![
                ratatui::text::Text::from(format!("  {name}")),
                Span::styled(state.clone(), state_style(state)).into(),
                "child".into(),
                local_ts.clone().into(),
                remote_ts.clone().into(),
                info.clone().into(),
                format_rate(*out_rate).into(),
                format_rate(*in_rate).into(),
            ]),
        })
        .collect();
    let title = if view.ike.is_empty() {
        "IKE SAs: none".to_owned()
    } else {
        "IKE SAs and child SAs".to_owned()
    };
    let table = Table::new(
        rows,
        [
            Constraint::Length(14),
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Min(17),
            Constraint::Min(17),
            Constraint::Min(16),
            Constraint::Length(12),
            Constraint::Length(12),
        ],
    )
    .header(
        Row::new(vec![
            "name",
            "state",
            "role",
            "local / ts",
            "remote / ts",
            "info",
            "out",
            "in",
        ])
        .style(HEADER),
    )
    .block(pane(title, app.focus == Pane::Ike))
    .row_highlight_style(if app.focus == Pane::Ike {
        Style::new().add_modifier(Modifier::REVERSED)
    } else {
        Style::new()
    });
    f.render_stateful_widget(table, area, &mut app.ike_state);
}

fn sa_pane(f: &mut Frame<'_>, area: Rect, app: &mut App, view: &View) {
    let rows: Vec<Row<'_>> = view
        .sas
        .iter()
        .map(|r| {
            let up = r.paths.iter().filter(|p| p.state == "up").count();
            Row::new(vec![
                r.name.clone(),
                r.owner.clone(),
                format!("{} {}", r.mode, r.policy),
                format_rate(r.out_rate),
                format_rate(r.in_rate),
                r.out_packets.to_string(),
                r.in_packets.to_string(),
                r.drops.to_string(),
                format!("{up}/{} up", r.paths.len()),
            ])
        })
        .collect();
    let title = if view.sas.is_empty() {
        "SAs: none".to_owned()
    } else {
        "SAs".to_owned()
    };
    let table = Table::new(
        rows,
        [
            Constraint::Min(18),
            Constraint::Min(10),
            Constraint::Length(19),
            Constraint::Length(12),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(10),
            Constraint::Length(6),
            Constraint::Length(8),
        ],
    )
    .header(
        Row::new(vec![
            "SA",
            "owner",
            "mode policy",
            "out",
            "in",
            "out pkts",
            "in pkts",
            "drops",
            "paths",
        ])
        .style(HEADER),
    )
    .block(pane(title, app.focus == Pane::Sas))
    .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    f.render_stateful_widget(table, area, &mut app.sa_state);
}

fn path_pane(f: &mut Frame<'_>, area: Rect, app: &App) {
    let Some(sa) = app.selected_sa() else {
        f.render_widget(pane("paths".into(), false), area);
        return;
    };
    let rows: Vec<Row<'_>> = sa
        .paths
        .iter()
        .map(|p| {
            Row::new(vec![
                ratatui::text::Text::from(p.name.clone()),
                p.interface.clone().into(),
                format!("{} -> {}", p.local, p.remote).into(),
                p.role.clone().into(),
                Span::styled(p.state.clone(), state_style(&p.state)).into(),
                p.rtt_ms
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2} ms"))
                    .into(),
                format!("{:.1}%", p.loss_pct).into(),
                format_rate(p.tx).into(),
                format_rate(p.rx).into(),
            ])
        })
        .collect();
    let table = Table::new(
        rows,
        [
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Min(30),
            Constraint::Length(9),
            Constraint::Length(10),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(12),
            Constraint::Length(12),
        ],
    )
    .header(
        Row::new(vec![
            "path",
            "iface",
            "local -> remote",
            "role",
            "state",
            "rtt",
            "loss",
            "tx",
            "rx",
        ])
        .style(HEADER),
    )
    .block(pane(format!("paths of {}", sa.name), false));
    f.render_widget(table, area);
}

/// Puts the terminal back: raw mode off, main screen, cursor shown. Safe to call twice.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(io::stdout(), terminal::LeaveAlternateScreen, cursor::Show);
}

/// Restores the terminal when dropped (every return and unwinding).
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        restore();
    }
}

/// `mifsec top`: draws the daemon at `socket`, asked every `interval`, until a quit key or
/// signal; returns the exit status (0, or 1 if the terminal could not be used).
pub fn run(socket: &Path, interval: Duration) -> i32 {
    let interval = interval.max(MIN_INTERVAL);
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        if let Err(e) = signal_hook::flag::register(sig, Arc::clone(&stop)) {
            eprintln!("mifsec top: cannot handle signal {sig}: {e}");
            return 1;
        }
    }
    if let Err(e) = terminal::enable_raw_mode() {
        eprintln!("mifsec top: this needs a terminal: {e}");
        return 1;
    }
    let guard = Restore;
    let prev_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        restore();
        prev_hook(info);
    }));
    let result = execute!(io::stdout(), terminal::EnterAlternateScreen, cursor::Hide)
        .and_then(|()| Terminal::new(CrosstermBackend::new(io::stdout())))
        .and_then(|mut t| draw_loop(&mut t, socket, interval, &stop));
    drop(guard);
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mifsec top: terminal: {e}");
            1
        }
    }
}

/// The poller's messages: when, and the answer or why there was none.
type Answer = (Instant, Result<Value, String>);

fn poller(socket: PathBuf, interval: Duration, tx: crossbeam_channel::Sender<Answer>) {
    loop {
        let asked = Instant::now();
        let answer = ctl::call(&socket, &Request::Status {}).map_err(|e| e.to_string());
        if tx.send((Instant::now(), answer)).is_err() {
            return;
        }
        // The next question an interval after this one was asked; the screen has gone
        // when the channel is closed.
        let next = asked + interval;
        let wait = next.saturating_duration_since(Instant::now());
        std::thread::sleep(wait);
    }
}

fn draw_loop<B: Backend>(
    term: &mut Terminal<B>,
    socket: &Path,
    interval: Duration,
    stop: &AtomicBool,
) -> io::Result<()>
where
    io::Error: From<B::Error>,
{
    let mut app = App::new(socket, interval);
    let (tx, rx) = crossbeam_channel::bounded::<Answer>(4);
    let sock = socket.to_owned();
    std::thread::Builder::new()
        .name("top-poller".into())
        .spawn(move || poller(sock, interval, tx))?;
    let mut dirty = true;
    let mut drawn = Instant::now();
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        while let Ok((at, answer)) = rx.try_recv() {
            app.update(at, answer);
            dirty = true;
        }
        // The "updated N s ago" line moves on by itself.
        if dirty || drawn.elapsed() >= Duration::from_millis(500) {
            term.draw(|f| render(f, &mut app))?;
            drawn = Instant::now();
            dirty = false;
        }
        if event::poll(Duration::from_millis(50))? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    if !app.key(k.code, k.modifiers) {
                        return Ok(());
                    }
                    dirty = true;
                }
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ratatui::backend::TestBackend;
    use serde_json::json;

    fn path(name: &str, tx: u64, rx: u64, state: &str, role: &str) -> Value {
        json!({"name": name, "interface": "c1", "local": "198.18.33.2:4500",
               "remote": "198.18.41.2:4500", "role": role, "state": state,
               "rtt_ms": 0.25, "loss_pct": 0.0, "tx_bytes": tx, "rx_bytes": rx,
               "tx_packets": 1, "rx_packets": 1})
    }

    fn status(out_bytes: u64, path_tx: u64, spi: &str) -> Value {
        json!({
            "uptime_s": 63.0,
            "sas": [{"name": "mif-c0", "mode": "tunnel", "policy": "failover",
                     "spi_in": spi, "spi_out": "0d0e0f10",
                     "out_bytes": out_bytes, "in_bytes": 0, "out_packets": 10, "in_packets": 3,
                     "drops": {"replayed": 2, "auth": 1},
                     "paths": [path("i1r1", path_tx, 0, "up", "active"),
                               path("i2r1", 0, 0, "unverified", "standby")]},
                    {"name": "manual1", "mode": "transport", "policy": "aggregate",
                     "spi_in": "1", "spi_out": "2", "out_bytes": 0, "in_bytes": 0,
                     "paths": []}],
            "ike_sas": [{"name": "mif", "id": 1, "state": "ESTABLISHED", "initiator": true,
                         "local": "198.18.33.2:4500", "remote": "198.18.41.2:4500",
                         "established_s": 12, "mobike": true, "mif": {"in_use": true},
                         "children": [{"name": "c0", "sa": "mif-c0", "state": "INSTALLED",
                                       "spi_in": spi, "spi_out": "0d0e0f10", "mode": "tunnel",
                                       "local_ts": ["10.50.0.1/32"],
                                       "remote_ts": ["10.60.0.1/32"]}]}]
        })
    }

    #[test]
    fn rates_come_from_successive_samples() {
        let t0 = Instant::now();
        let a = Sample {
            at: t0,
            status: status(1000, 5000, "c1a2b3c4"),
        };
        let first = View::build(None, &a);
        assert_eq!(first.sas[0].out_rate, None, "no rate from one sample");
        let b = Sample {
            at: t0 + Duration::from_millis(500),
            status: status(1000 + 125_000, 5000 + 250_000, "c1a2b3c4"),
        };
        let v = View::build(Some(&a), &b);
        assert_eq!(v.sas[0].out_rate, Some(2e6));
        assert_eq!(v.sas[0].in_rate, Some(0.0));
        assert_eq!(v.sas[0].paths[0].tx, Some(4e6));
        assert_eq!(v.sas[0].drops, 3);
        assert_eq!(v.sas[0].owner, "mif/c0");
        assert_eq!(v.sas[1].owner, "manual");
        let IkeRow::Sa {
            out_rate,
            info,
            role,
            ..
        } = &v.ike[0]
        else {
            panic!("{:?}", v.ike)
        };
        assert_eq!((*out_rate, role.as_str()), (Some(2e6), "initiator"));
        assert_eq!(info, "up 12s, MIF, MOBIKE");
        assert!(matches!(&v.ike[1], IkeRow::Child { sa, out_rate: Some(_), .. } if sa == "mif-c0"));
        assert_eq!(v.summary, "engine up 1m03s, 2 SAs, 1 IKE SA");
        // A rekey (new SPI) or a counter that went back: no rate, not a huge one.
        let c = Sample {
            at: t0 + Duration::from_secs(1),
            status: status(10, 10, "feedbeef"),
        };
        let v = View::build(Some(&b), &c);
        assert_eq!((v.sas[0].out_rate, v.sas[0].paths[0].tx), (None, None));
        let d = Sample {
            at: t0 + Duration::from_secs(1),
            status: status(5, 5, "c1a2b3c4"),
        };
        assert_eq!(View::build(Some(&b), &d).sas[0].out_rate, None);
    }

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("0.2"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        for bad in ["0", "0.01", "-1", "NaN", "inf", "1e9", "x", ""] {
            assert!(parse_interval(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(format_rate(None), "-");
        assert_eq!(format_rate(Some(0.0)), "0");
        assert_eq!(format_rate(Some(812.0)), "812 bit/s");
        assert_eq!(format_rate(Some(81_234.0)), "81.23 kbit/s");
        assert_eq!(format_rate(Some(347_000_000.0)), "347.0 Mbit/s");
        assert_eq!(format_rate(Some(1.21e9)), "1.21 Gbit/s");
    }

    fn screen(app: &mut App, w: u16, h: u16) -> String {
        let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
        t.draw(|f| render(f, app)).unwrap();
        let buf = t.backend().buffer().clone();
        (0..h)
            .map(|y| {
                (0..w)
                    .map(|x| buf[(x, y)].symbol().to_owned())
                    .collect::<String>()
                    + "\n"
            })
            .collect()
    }

    #[test]
    fn the_screen_shows_sas_children_paths_and_an_unreachable_daemon() {
        let mut app = App::new(Path::new("/run/x.sock"), Duration::from_secs(1));
        let text = screen(&mut app, 120, 30);
        assert!(text.contains("waiting for the daemon"), "{text}");
        let t0 = Instant::now();
        app.update(t0, Ok(status(0, 0, "c1a2b3c4")));
        app.update(
            t0 + Duration::from_secs(1),
            Ok(status(125_000, 250_000, "c1a2b3c4")),
        );
        let text = screen(&mut app, 120, 30);
        for want in [
            "mif #1",
            "ESTABLISHED",
            "initiator",
            "  c0",
            "10.50.0.1/32",
            "mif-c0",
            "mif/c0",
            "paths of mif-c0",
            "i1r1",
            "i2r1",
            "unverified",
            "198.18.33.2:4500 -> 198.18.41.2:4500",
            "transport aggregate",
            "2.00 Mbit/s",
            "0.25 ms",
            "1/2 up",
        ] {
            assert!(text.contains(want), "{want:?} missing:\n{text}");
        }
        // Down to the manual SA: its (empty) path list.
        assert!(app.key(KeyCode::Down, KeyModifiers::NONE));
        assert_eq!(app.selected_sa().unwrap().name, "manual1");
        let text = screen(&mut app, 120, 30);
        assert!(text.contains("paths of manual1"), "{text}");
        // Tab to the IKE pane, down to the child: its SA is selected again.
        assert!(app.key(KeyCode::Tab, KeyModifiers::NONE));
        assert!(app.key(KeyCode::Down, KeyModifiers::NONE));
        assert_eq!(app.selected_sa().unwrap().name, "mif-c0");
        // The daemon goes away: said so, the last figures kept.
        app.update(Instant::now(), Err("cannot connect to /run/x.sock".into()));
        let text = screen(&mut app, 120, 30);
        assert!(
            text.contains("daemon unreachable: cannot connect"),
            "{text}"
        );
        assert!(text.contains("i1r1"), "{text}");
        // A small terminal does not panic.
        let _ = screen(&mut app, 20, 5);
        let _ = screen(&mut app, 1, 1);
        // q, Esc and Ctrl-C quit.
        assert!(!app.key(KeyCode::Char('q'), KeyModifiers::NONE));
        assert!(!app.key(KeyCode::Esc, KeyModifiers::NONE));
        assert!(!app.key(KeyCode::Char('c'), KeyModifiers::CONTROL));
    }

    #[test]
    fn odd_answers_are_shown_not_trusted() {
        // An older or newer daemon, or garbage: missing fields and wrong types.
        for st in [
            json!(null),
            json!([]),
            json!({"sas": 5}),
            json!({"sas": [{"paths": [{}], "drops": []}], "ike_sas": [{"children": [{}]}]}),
        ] {
            let mut app = App::new(Path::new("s"), Duration::from_secs(1));
            app.update(Instant::now(), Ok(st.clone()));
            app.update(Instant::now(), Ok(st));
            let _ = screen(&mut app, 80, 24);
        }
    }
}
