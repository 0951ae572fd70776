//! The clients of the subscriptions: `mifsec log`, `mifsec events` and `mifsec status
//! --watch`, and how their records read as text.
//!
//! Each runs until the daemon closes the connection (exit status 1, with a message) or
//! stdout is closed (a reader such as `head` went away: exit status 0); a refusal exits
//! 1, no daemon to talk to 3, as every client of the control socket. Records come as the
//! daemon sends them (see `docs/ARCHITECTURE.md`, "Subscriptions on the control socket");
//! `--json` prints them as they are, one object per line, flushed line by line: the bytes
//! that came, checked but not parsed into a tree and written again ([`json_record`]).

use std::borrow::Cow;
use std::io::Write;
use std::path::Path;

use serde_json::Value;

use super::{ClientError, Request, WATCH_MAX, WATCH_MIN, subscribe};

/// `t` (seconds since the Unix epoch) as the daemon's log stamps its lines, in UTC:
/// `2026-12-01T12:03:04.123456Z`.
pub fn utc(t: f64) -> String {
    let nanos = (t * 1e9) as i128;
    match time::OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute(),
            d.second(),
            d.microsecond()
        ),
        Err(_) => format!("{t}"),
    }
}

/// The daemon's text for a terminal: as it is (its log lines are made safe where they
/// hold what a peer sent), but with no control character other than a line break or a tab.
fn terminal_safe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() && c != '\n' && c != '\t' {
            out += &format!("\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    out
}

fn time_of(v: &Value) -> String {
    v.get("time")
        .and_then(Value::as_f64)
        .map_or_else(|| "-".into(), utc)
}

/// A log record as the daemon's stderr has it: `TIME LEVEL mifsec: MESSAGE`.
pub fn log_line(v: &Value) -> String {
    let level = v.get("level").and_then(Value::as_str).unwrap_or("?");
    let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
    format!(
        "{} {:>5} mifsec: {}",
        time_of(v),
        terminal_safe(level),
        terminal_safe(msg)
    )
}

/// An event as text: `TIME EVENT key=value ...` (the fields in name order; strings as they
/// are, other values as JSON).
pub fn event_line(v: &Value) -> String {
    let event = v.get("event").and_then(Value::as_str).unwrap_or("?");
    let mut s = format!("{} {}", time_of(v), terminal_safe(event));
    if let Some(obj) = v.as_object() {
        for (k, val) in obj {
            if k == "time" || k == "event" {
                continue;
            }
            let text = match val {
                Value::String(t) => t.clone(),
                Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            s.push_str(&format!(" {}={}", terminal_safe(k), terminal_safe(&text)));
        }
    }
    s
}

/// `--interval SECONDS` in milliseconds, within what the daemon serves (0.05 to 3600 s).
pub fn interval_ms(s: &str) -> Result<u64, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("--interval: {s:?} is not a number of seconds"))?;
    let lo = WATCH_MIN.as_secs_f64();
    let hi = WATCH_MAX.as_secs_f64();
    if !(lo..=hi).contains(&secs) {
        return Err(format!("--interval must be {lo} to {hi} seconds, got {s}"));
    }
    Ok((secs * 1000.0).round() as u64)
}

/// A record as `--json` prints it. The daemon's bytes as they came when they are JSON
/// with no control character in them (as the daemon writes them: checked with
/// `serde::de::IgnoredAny`, which builds nothing); otherwise parsed and written again,
/// which escapes every control character (a terminal gets none), or refused when they are
/// not JSON at all.
pub fn json_record(record: &[u8]) -> Result<Cow<'_, [u8]>, ClientError> {
    let bad = |e: serde_json::Error| ClientError::BadResponse(e.to_string());
    if !record.iter().any(|&b| b < 0x20) {
        serde_json::from_slice::<serde::de::IgnoredAny>(record).map_err(bad)?;
        return Ok(Cow::Borrowed(record));
    }
    let v: Value = serde_json::from_slice(record).map_err(bad)?;
    Ok(Cow::Owned(v.to_string().into_bytes()))
}

/// Runs subscription `req`, printing each record as it came (`json`, see
/// [`json_record`]) or as `text` makes it; the exit status.
fn follow(socket: &Path, req: &Request, json: bool, text: impl Fn(&Value) -> String) -> i32 {
    let mut out = std::io::stdout().lock();
    let mut closed = false;
    let mut line = Vec::new();
    let r = subscribe(socket, req, |record| {
        line.clear();
        if json {
            line.extend_from_slice(&json_record(record)?);
        } else {
            let v: Value = serde_json::from_slice(record)
                .map_err(|e| ClientError::BadResponse(e.to_string()))?;
            line.extend_from_slice(text(&v).as_bytes());
        }
        line.push(b'\n');
        if out.write_all(&line).and_then(|()| out.flush()).is_err() {
            closed = true;
            return Ok(false);
        }
        Ok(true)
    });
    match r {
        Ok(()) => 0,
        Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            eprintln!("mifsec: the daemon closed the connection (it stopped?)");
            1
        }
        Err(e) => {
            if closed {
                return 0;
            }
            eprintln!("mifsec: {e}");
            match e {
                ClientError::Connect(..) => crate::cli::EXIT_UNREACHABLE,
                _ => 1,
            }
        }
    }
}

/// `mifsec log [--level L] [--json]`.
pub fn log(socket: &Path, level: Option<String>, json: bool) -> i32 {
    follow(socket, &Request::Log { level }, json, log_line)
}

/// `mifsec events [--json]`.
pub fn events(socket: &Path, json: bool) -> i32 {
    follow(socket, &Request::Events {}, json, event_line)
}

/// `mifsec status --watch [--interval S] [--json]`: with `--json` each line one complete
/// `status --json` object with `t` added; as text a line `--- TIME` before each status.
pub fn watch(socket: &Path, interval_ms: u64, json: bool) -> i32 {
    follow(socket, &Request::Watch { interval_ms }, json, |v| {
        let t = v
            .get("t")
            .and_then(Value::as_f64)
            .map_or_else(|| "-".into(), utc);
        let body = crate::render::status(v);
        format!("--- {t}\n{}", body.trim_end_matches('\n'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_read_as_text() {
        assert_eq!(utc(1_764_590_584.123_456_5), "2025-12-01T12:03:04.123456Z");
        let v = serde_json::json!({
            "time": 1_764_590_584.5, "level": "INFO", "target": "mifsec_control",
            "message": "ike{conn=home id=1}: established\n\u{1b}[2J"
        });
        assert_eq!(
            log_line(&v),
            "2025-12-01T12:03:04.500000Z  INFO mifsec: ike{conn=home id=1}: established\n\\u{1b}[2J"
        );
        let v = serde_json::json!({
            "time": 1_764_590_584.5, "event": "child-up", "conn": "home", "child": "net",
            "spi_in": "c0ffee01", "local_ts": ["10.0.0.0/24", "10.1.0.0/24"], "ike_id": 3
        });
        assert_eq!(
            event_line(&v),
            "2025-12-01T12:03:04.500000Z child-up child=net conn=home ike_id=3 \
             local_ts=10.0.0.0/24,10.1.0.0/24 spi_in=c0ffee01"
        );
    }

    #[test]
    fn json_records_pass_as_they_came_unless_they_must_be_escaped() {
        let rec = br#"{"sas":[{"name":"s0","out_packets":7}],"t":1764590584.5}"#;
        assert!(matches!(json_record(rec).unwrap(), Cow::Borrowed(b) if b == rec));
        // Whitespace the daemon never writes, or a control character: written again, with
        // the control character escaped.
        let rec = b"{\"a\":\t\"x\"}";
        assert_eq!(&*json_record(rec).unwrap(), br#"{"a":"x"}"#);
        let rec = b"{\"a\":\"\x1b[2J\"}";
        assert!(
            json_record(rec).is_err(),
            "a raw control character is not JSON"
        );
        for junk in [&br#"{"a":"#[..], b"{} {}", b"not json", b""] {
            assert!(
                matches!(json_record(junk), Err(ClientError::BadResponse(_))),
                "{junk:?}"
            );
        }
    }

    #[test]
    fn intervals() {
        assert_eq!(interval_ms("0.05"), Ok(50));
        assert_eq!(interval_ms("1"), Ok(1000));
        assert_eq!(interval_ms("2.5"), Ok(2500));
        assert!(interval_ms("0.01").unwrap_err().contains("0.05 to 3600"));
        assert!(interval_ms("soon").unwrap_err().contains("not a number"));
        assert!(interval_ms("NaN").is_err());
    }
}
