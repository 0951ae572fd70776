//! The daemon's log: `tracing` events, filtered by `[log] level`, one line each on stderr.
//!
//! Every part of mifsec (the dataplane crate included) emits `tracing` events and spans;
//! only `mifsec run` installs a subscriber ([`init`]), so the library, its tests, the fuzz
//! targets and the benchmarks log nothing. Two line formats, chosen by where stderr goes:
//!
//! - a terminal, a file or a pipe: `2026-12-01T12:03:04.123456Z  INFO mifsec: ike{conn=home
//!   id=1}: established ...`: a UTC timestamp, the level, `mifsec:`, the spans the event is
//!   in (outermost first, with their fields), the message and the event's other fields;
//! - the journal (systemd sets `JOURNAL_STREAM` to the device and inode of the stream it
//!   connected; [`stderr_is_journal`] compares them with stderr's): `<6>ike{conn=home id=1}:
//!   established ...`, a syslog priority prefix as sd-daemon(3) describes and no timestamp
//!   or program name (the journal records both); a message of several lines carries the
//!   prefix on every line.
//!
//! No event carries key material: keys, PSKs and SK payloads are never a field or part of
//! a message (the types that hold them print no bytes in `Debug`).
//!
//! Besides stderr, every event goes to the clients that follow the log (`mifsec log
//! [--level L]`, [`crate::events`]) at their own levels, whatever `[log] level` is: each
//! layer has its own filter (stderr's from `[log] level`, the followers' from their
//! levels, looked at only while somebody follows), and the record a follower gets is the
//! line stderr would get, as JSON (`{"time":T,"level":"INFO","target":"...","message":
//! "ike{conn=home id=1}: established ..."}`).

use std::fmt::{self, Write as _};

use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::{Context, Filter, Layer, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;

/// `[log]`: what the daemon logs. `level` is a level for every target, optionally followed
/// by `target=level` directives for module paths (`"warn,mifsec_control::ctl=debug"`), as
/// `RUST_LOG` is written for a `tracing` filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The level of every target that no directive names.
    pub level: LevelFilter,
    /// `target=level` directives in the order written; the longest matching target wins.
    pub targets: Vec<(String, LevelFilter)>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: LevelFilter::INFO,
            targets: Vec::new(),
        }
    }
}

/// The level names `[log] level` accepts, in increasing verbosity.
pub const LEVELS: &str = "off, error, warn, info, debug, trace";

fn level(s: &str) -> Option<LevelFilter> {
    Some(match s.to_ascii_lowercase().as_str() {
        "off" => LevelFilter::OFF,
        "error" => LevelFilter::ERROR,
        "warn" => LevelFilter::WARN,
        "info" => LevelFilter::INFO,
        "debug" => LevelFilter::DEBUG,
        "trace" => LevelFilter::TRACE,
        _ => return None,
    })
}

impl LogConfig {
    /// Parses `[log] level`: `LEVEL` or `LEVEL,TARGET=LEVEL,...` (the default level may also
    /// be left out: `mifsec_control=debug` keeps `info` for the rest). The error says which
    /// part is wrong and what was expected.
    pub fn parse(spec: &str) -> Result<LogConfig, String> {
        let mut cfg = LogConfig::default();
        let mut default_seen = false;
        for part in spec.split(',').map(str::trim) {
            match part.split_once('=') {
                None if part.is_empty() => {
                    return Err(format!(
                        "{spec:?} has an empty directive (write LEVEL or LEVEL,TARGET=LEVEL,...)"
                    ));
                }
                None => {
                    let Some(l) = level(part) else {
                        return Err(format!("{part:?} is not a level ({LEVELS})"));
                    };
                    if default_seen {
                        return Err(format!(
                            "{spec:?} names two default levels (write LEVEL,TARGET=LEVEL,...)"
                        ));
                    }
                    default_seen = true;
                    cfg.level = l;
                }
                Some((target, l)) => {
                    let target = target.trim();
                    let l = l.trim();
                    let valid = !target.is_empty()
                        && target
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':');
                    if !valid {
                        return Err(format!(
                            "{target:?} in {part:?} is not a target (a module path such as \
                             mifsec_control::ctl or mifsec_dataplane)"
                        ));
                    }
                    let Some(l) = level(l) else {
                        return Err(format!("{l:?} in {part:?} is not a level ({LEVELS})"));
                    };
                    cfg.targets.push((target.to_owned(), l));
                }
            }
        }
        Ok(cfg)
    }

    /// The filter the subscriber applies.
    pub fn filter(&self) -> Targets {
        self.targets
            .iter()
            .fold(Targets::new().with_default(self.level), |t, (target, l)| {
                t.with_target(target.clone(), *l)
            })
    }
}

impl fmt::Display for LogConfig {
    /// As `[log] level` would be written: `info`, `warn,mifsec_control::ctl=debug`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = |l: &LevelFilter| l.to_string().to_ascii_lowercase();
        f.write_str(&name(&self.level))?;
        for (t, l) in &self.targets {
            write!(f, ",{t}={}", name(l))?;
        }
        Ok(())
    }
}

/// Which line format [`init`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A timestamp, the level and `mifsec:` before each line (a terminal, a file, a pipe).
    Stamped,
    /// A `<N>` syslog priority before each line, nothing else (stderr is the journal).
    Journal,
}

impl Style {
    /// [`Style::Journal`] when stderr is the stream `JOURNAL_STREAM` names, else
    /// [`Style::Stamped`].
    pub fn detect() -> Style {
        if stderr_is_journal() {
            Style::Journal
        } else {
            Style::Stamped
        }
    }
}

/// Whether stderr is the journal's stream: `JOURNAL_STREAM` (set by systemd for services
/// whose output goes to the journal, and inherited by whatever they start) is
/// `DEVICE:INODE`, which must be stderr's own, as systemd.exec(5) says to check.
pub fn stderr_is_journal() -> bool {
    let Some(v) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = v.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    stderr_dev_ino() == Some((dev, ino))
}

fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd as _;
    use std::os::unix::fs::MetadataExt as _;
    let fd = std::io::stderr().as_fd().try_clone_to_owned().ok()?;
    let meta = std::fs::File::from(fd).metadata().ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Installs the daemon's subscriber: `cfg`'s filter, one line per event on stderr in the
/// format `style` says. Does nothing if a subscriber is installed already (a second call).
pub fn init(cfg: &LogConfig, style: Style) {
    let _ = subscriber(cfg, style, std::io::stderr).try_init();
}

/// The subscriber [`init`] installs, writing to `out`.
fn subscriber<W>(cfg: &LogConfig, style: Style, out: W) -> impl Subscriber + Send + Sync
where
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + Send + Sync + 'static,
{
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(false)
        .with_writer(out)
        .event_format(LineFormat { style });
    tracing_subscriber::registry()
        .with(fmt.with_filter(cfg.filter()))
        .with(Followers.with_filter(FollowersFilter))
}

/// The layer that hands events to the clients following the log ([`crate::events`]).
struct Followers;

/// A span's fields as [`Followers`] formatted them (as stderr's layer does its own).
struct FollowerFields(String);

impl<S> Layer<S> for Followers
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        // A span made while nobody follows is named without its fields.
        if !crate::events::log_listening() {
            return;
        }
        let mut fields = String::new();
        if DefaultFields::new()
            .format_fields(Writer::new(&mut fields), attrs)
            .is_ok()
            && let Some(span) = ctx.span(id)
        {
            span.extensions_mut().insert(FollowerFields(fields));
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        crate::events::publish_log(meta, || {
            let mut body = String::new();
            if let Some(scope) = ctx.event_scope(event) {
                for span in scope.from_root() {
                    body.push_str(span.name());
                    if let Some(f) = span.extensions().get::<FollowerFields>()
                        && !f.0.is_empty()
                    {
                        let _ = write!(body, "{{{}}}", f.0);
                    }
                    body.push_str(": ");
                }
            }
            let _ = DefaultFields::new().format_fields(Writer::new(&mut body), event);
            serde_json::json!({
                "time": crate::events::now(),
                "level": meta.level().as_str(),
                "target": meta.target(),
                "message": crate::events::cut(body),
            })
            .to_string()
        });
    }
}

/// [`Followers`]' filter: the events some follower's levels take (spans always, for the
/// context), decided per event (the followers come and go), and no more verbose than the
/// most verbose follower, so that nobody following costs nothing.
struct FollowersFilter;

impl<S> Filter<S> for FollowersFilter {
    fn enabled(&self, meta: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        meta.is_span() || crate::events::log_wanted(meta)
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(crate::events::log_max_level())
    }
}

/// Whether a subscriber is installed (the panic hook writes to stderr itself otherwise).
pub fn installed() -> bool {
    tracing::dispatcher::has_been_set()
}

/// The span of the IKE thread's work on one IKE SA: `ike{conn=NAME id=N}`, `id` being the
/// unique number `mifsec status` shows (`#N`). The SPIs are not in it, since an IKE rekey
/// changes them: the lines that set them (initiating, established, rekeyed) say them.
/// At level error, so that it frames every event that passes the filter, whatever the
/// level: a warning about an IKE SA must say which one.
pub fn ike_span(conn: &str, id: u64) -> tracing::Span {
    tracing::error_span!("ike", conn = %conn, id)
}

/// The span of work on one child SA of the IKE SA whose span is current:
/// `child{name=NAME spi_in=c0ffee01}` (the child configuration's name and our inbound
/// SPI, which names it in the engine and in `mifsec status`).
pub fn child_span(name: &str, spi_in: u32) -> tracing::Span {
    tracing::error_span!("child", name = %name, spi_in = %format_args!("{spi_in:08x}"))
}

/// The sd-daemon(3) priority of a level: error 3, warning 4, info 6, debug (and trace) 7.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// The line format of [`Style`].
struct LineFormat {
    style: Style,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = event.metadata().level();
        // The spans and the event into one string first, so that a message of several lines
        // can be given the journal's prefix on each.
        let mut body = String::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                body.push_str(span.name());
                let ext = span.extensions();
                if let Some(fields) = ext.get::<FormattedFields<N>>()
                    && !fields.is_empty()
                {
                    write!(body, "{{{fields}}}")?;
                }
                body.push_str(": ");
            }
        }
        ctx.field_format()
            .format_fields(Writer::new(&mut body), event)?;
        match self.style {
            Style::Stamped => {
                SystemTime.format_time(&mut writer)?;
                writeln!(writer, " {level:>5} mifsec: {body}")
            }
            Style::Journal => {
                let p = priority(level);
                for line in body.split('\n') {
                    writeln!(writer, "<{p}>{line}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_directives_parse() {
        assert_eq!(LogConfig::parse("info").unwrap(), LogConfig::default());
        let c = LogConfig::parse("WARN").unwrap();
        assert_eq!(c.level, LevelFilter::WARN);
        let c = LogConfig::parse("warn, mifsec_control::ctl=debug,mifsec_dataplane=off").unwrap();
        assert_eq!(c.level, LevelFilter::WARN);
        assert_eq!(
            c.targets,
            vec![
                ("mifsec_control::ctl".to_owned(), LevelFilter::DEBUG),
                ("mifsec_dataplane".to_owned(), LevelFilter::OFF)
            ]
        );
        assert_eq!(
            c.to_string(),
            "warn,mifsec_control::ctl=debug,mifsec_dataplane=off"
        );
        // Only directives: the default stays info.
        let c = LogConfig::parse("mifsec_control=trace").unwrap();
        assert_eq!(c.level, LevelFilter::INFO);
    }

    #[test]
    fn bad_levels_say_what_is_wrong() {
        for (spec, want) in [
            (
                "verbose",
                "\"verbose\" is not a level (off, error, warn, info, debug, trace)",
            ),
            ("", "\"\" has an empty directive"),
            ("info,", "\"info,\" has an empty directive"),
            ("info,warn", "names two default levels"),
            (
                "mifsec_control=loud",
                "\"loud\" in \"mifsec_control=loud\" is not a level",
            ),
            (
                "mifsec-control=debug",
                "\"mifsec-control\" in \"mifsec-control=debug\" is not a target",
            ),
            ("=debug", "\"\" in \"=debug\" is not a target"),
        ] {
            let e = LogConfig::parse(spec).unwrap_err();
            assert!(e.contains(want), "{spec:?}: {e}");
        }
    }

    /// What a subscriber of `cfg` and `style` writes while `f` runs (on this thread only).
    fn captured(cfg: &str, style: Style, f: impl FnOnce()) -> String {
        use std::sync::{Arc, Mutex};
        #[derive(Clone)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf(Arc::default());
        let out = buf.clone();
        let sub = subscriber(&LogConfig::parse(cfg).unwrap(), style, move || out.clone());
        tracing::subscriber::with_default(sub, f);
        let bytes = buf.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn lines_carry_spans_fields_and_the_style() {
        let events = || {
            let ike = ike_span("home", 3);
            let _ike = ike.enter();
            tracing::info!("established");
            let child = child_span("net", 0xabcd);
            let _child = child.enter();
            tracing::warn!(spi_out = %"c0ffee01", "out of sequence numbers");
            tracing::debug!("not shown at info");
            tracing::error!(parent: None, "two\nlines");
        };
        let out = captured("info", Style::Stamped, events);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 4, "{out}");
        let rest = |l: &str| l.split_once(' ').unwrap().1.to_owned();
        for l in &lines[..3] {
            let ts = l.split_once(' ').unwrap().0;
            assert!(
                ts.len() == 27 && ts.ends_with('Z') && &ts[10..11] == "T",
                "{out}"
            );
        }
        assert_eq!(
            rest(lines[0]),
            " INFO mifsec: ike{conn=home id=3}: established"
        );
        assert_eq!(
            rest(lines[1]),
            " WARN mifsec: ike{conn=home id=3}: child{name=net spi_in=0000abcd}: out of \
             sequence numbers spi_out=c0ffee01"
        );
        // No parent: no span, whichever is current.
        assert_eq!(rest(lines[2]), "ERROR mifsec: two");
        assert_eq!(lines[3], "lines");

        let out = captured("warn", Style::Journal, events);
        assert_eq!(
            out,
            "<4>ike{conn=home id=3}: child{name=net spi_in=0000abcd}: out of sequence numbers \
             spi_out=c0ffee01\n<3>two\n<3>lines\n"
        );
        // A target's own level.
        let out = captured("warn,mifsec_control::logging=debug", Style::Journal, events);
        assert!(
            out.contains(
                "<7>ike{conn=home id=3}: child{name=net spi_in=0000abcd}: not shown at info\n"
            ),
            "{out}"
        );
        assert!(captured("off", Style::Journal, events).is_empty());
    }

    #[test]
    fn priorities_follow_sd_daemon() {
        assert_eq!(priority(&Level::ERROR), 3);
        assert_eq!(priority(&Level::WARN), 4);
        assert_eq!(priority(&Level::INFO), 6);
        assert_eq!(priority(&Level::DEBUG), 7);
        assert_eq!(priority(&Level::TRACE), 7);
    }
}
