//! The daemon's log: one line per notable event on stderr, and how peer-supplied text is
//! made safe to put in a line. No line ever contains key material.

/// Logs one line at level info (see [`crate::logging`]); before the subscriber is
/// installed, and in processes that install none, writes it to stderr as it is. Its
/// target is the daemon's (`mifsec_control::daemon`), where this function used to be.
pub fn log(msg: impl std::fmt::Display) {
    if crate::logging::installed() {
        tracing::info!(target: "mifsec_control::daemon", "{msg}");
    } else {
        eprintln!("mifsec: {msg}");
    }
}

/// The most characters of a peer-supplied string shown in the log or the status.
pub const MAX_SHOWN: usize = 256;

/// A peer-supplied string made safe for a log line or a terminal: anything but printable
/// ASCII (control characters, escape sequences, line breaks, bidirectional overrides and
/// every other non-ASCII character) and the backslash are escaped as `\u{..}` / `\\`,
/// and the result is cut after [`MAX_SHOWN`] characters of the original.
pub fn printable(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == MAX_SHOWN {
            out += &format!("...({} bytes)", s.len());
            break;
        }
        match c {
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            c => out += &format!("\\u{{{:x}}}", u32::from(c)),
        }
    }
    out
}
