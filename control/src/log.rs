//! How peer-supplied text is made safe to put in a log line or the status. (The log
//! itself: [`crate::logging`]; every module logs with `tracing`'s macros.)

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
