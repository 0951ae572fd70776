//! The client side of the control socket: one request, one answer.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::{IO_TIMEOUT, MAX_RESPONSE, Request, Response};

/// Why a client call failed.
#[derive(Debug)]
pub enum ClientError {
    /// No daemon could be reached at the socket.
    Connect(PathBuf, io::Error),
    /// The connection broke or timed out.
    Io(io::Error),
    /// The daemon answered something that is not a response.
    BadResponse(String),
    /// The daemon refused the request; its message.
    Refused(String),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(p, e) if e.kind() == io::ErrorKind::PermissionDenied => write!(
                f,
                "cannot connect to {}: {e} (the control socket admits root and the members of \
                 [dataplane] control_group)",
                p.display()
            ),
            ClientError::Connect(p, e) => write!(
                f,
                "cannot connect to {}: {e} (is `mifsec run` running, and is this its control_socket?)",
                p.display()
            ),
            ClientError::Io(e) => write!(f, "control socket: {e}"),
            ClientError::BadResponse(s) => write!(f, "bad response from the daemon: {s}"),
            ClientError::Refused(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for ClientError {}

/// Connects to the daemon at `socket` (reads and writes with [`IO_TIMEOUT`]) and writes
/// `req` as one line. A daemon that turns the connection away (too many clients) writes
/// why and closes it, possibly before the request is written: a broken pipe or reset is
/// then returned beside the stream rather than as the error, since the answer is still
/// there to read; any other write error is the error.
fn send(socket: &Path, req: &Request) -> Result<(UnixStream, io::Result<()>), ClientError> {
    let stream =
        UnixStream::connect(socket).map_err(|e| ClientError::Connect(socket.to_owned(), e))?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(ClientError::Io)?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(ClientError::Io)?;
    let mut line =
        serde_json::to_string(req).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    line.push('\n');
    let wrote = (&stream).write_all(line.as_bytes());
    if let Err(e) = &wrote {
        if !matches!(
            e.kind(),
            io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
        ) {
            return Err(ClientError::Io(wrote.unwrap_err()));
        }
    }
    Ok((stream, wrote))
}

/// Sends `req` to the daemon at `socket` and returns the result of a successful response.
pub fn call(socket: &Path, req: &Request) -> Result<Value, ClientError> {
    let (stream, wrote) = send(socket, req)?;
    let mut answer = Vec::new();
    let read = BufReader::with_capacity(1 << 16, &stream)
        .take(MAX_RESPONSE as u64 + 1)
        .read_until(b'\n', &mut answer);
    if answer.is_empty() {
        wrote.map_err(ClientError::Io)?;
    }
    read.map_err(ClientError::Io)?;
    if answer.is_empty() {
        return Err(ClientError::BadResponse(
            "the daemon closed the connection".into(),
        ));
    }
    if answer.len() > MAX_RESPONSE {
        return Err(ClientError::BadResponse(format!(
            "answer longer than {MAX_RESPONSE} bytes"
        )));
    }
    let resp: Response =
        serde_json::from_slice(&answer).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    resp.into_result().map_err(ClientError::Refused)
}

/// Sends subscription `req` to the daemon at `socket` and hands each record (one JSON
/// object per line, as the bytes that came, without the newline: the caller parses what it
/// must) to `each` until it returns `false` (`Ok`) or the daemon closes the connection
/// (`ClientError::Io` of kind `UnexpectedEof`); an error `each` returns ends it too. The
/// daemon's refusal is `ClientError::Refused`. Records may be minutes apart: no read
/// timeout once subscribed.
pub fn subscribe(
    socket: &Path,
    req: &Request,
    mut each: impl FnMut(&[u8]) -> Result<bool, ClientError>,
) -> Result<(), ClientError> {
    let (stream, wrote) = send(socket, req)?;
    let mut reader = BufReader::with_capacity(1 << 16, &stream);
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        buf.clear();
        let read = (&mut reader)
            .take(MAX_RESPONSE as u64 + 1)
            .read_until(b'\n', &mut buf);
        if first && buf.is_empty() {
            wrote
                .as_ref()
                .map_err(|e| ClientError::Io(io::Error::new(e.kind(), e.to_string())))?;
        }
        read.map_err(ClientError::Io)?;
        if buf.is_empty() {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the daemon closed the connection",
            )));
        }
        if buf.len() > MAX_RESPONSE {
            return Err(ClientError::BadResponse(format!(
                "record longer than {MAX_RESPONSE} bytes"
            )));
        }
        if first {
            first = false;
            let resp: Response = serde_json::from_slice(&buf)
                .map_err(|e| ClientError::BadResponse(e.to_string()))?;
            resp.into_result().map_err(ClientError::Refused)?;
            stream.set_read_timeout(None).map_err(ClientError::Io)?;
            continue;
        }
        let record = buf.strip_suffix(b"\n").unwrap_or(&buf);
        if !each(record)? {
            return Ok(());
        }
    }
}
