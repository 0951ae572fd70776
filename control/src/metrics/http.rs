//! `[metrics] listen`: the exposition over HTTP, as a minimal HTTP/1.1 responder.
//!
//! `GET /metrics` (a query string is ignored) is answered `200` with the exposition; any
//! other request line `404`, a malformed one `400`, a request head longer than
//! [`MAX_REQUEST`] `431`. One request per connection (`Connection: close`). Each connection
//! has [`DEADLINE`] from the moment a worker takes it to send its request and read the
//! answer; a client that trickles or reads slowly holds one worker for that long and is then
//! closed.
//!
//! Threads: one accepts, [`WORKERS`] answer, fed through a queue of [`QUEUE`] connections;
//! a connection that finds the queue full is answered `503` at once by the acceptor (with a
//! short write deadline) and closed. So no client, however many connect, makes a thread or
//! memory beyond these bounds. A web framework or an HTTP crate was not worth it for one
//! fixed resource: tiny_http spawns threads on demand without a bound, and a full HTTP
//! stack would bring an async runtime for a few lines of request parsing.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};

/// Longest request head read (request line and headers), in bytes.
pub const MAX_REQUEST: usize = 8 << 10;
/// How long one connection may take, from a worker taking it to the last byte of the
/// answer.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// Threads that answer requests.
pub const WORKERS: usize = 2;
/// Accepted connections waiting for a worker.
pub const QUEUE: usize = 16;

/// What renders the exposition for each request.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// The running responder; dropping it (or [`MetricsServer::stop`]) ends its threads.
pub struct MetricsServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for MetricsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Binds `addr` (before the daemon drops its privileges; the threads start later).
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::bind(addr)
        .map_err(|e| io::Error::new(e.kind(), format!("metrics: binding {addr}: {e}")))
}

impl MetricsServer {
    /// Serves `listener` with `render`, each connection within `deadline`.
    pub fn start(
        listener: TcpListener,
        render: Render,
        deadline: Duration,
    ) -> io::Result<MetricsServer> {
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = crossbeam_channel::bounded::<TcpStream>(QUEUE);
        let mut threads = Vec::new();
        for _ in 0..WORKERS {
            let (rx, render): (Receiver<_>, Render) = (rx.clone(), Arc::clone(&render));
            threads.push(
                std::thread::Builder::new()
                    .name("mifsec-metrics".into())
                    .spawn(move || {
                        for stream in rx.iter() {
                            answer(stream, Instant::now() + deadline, &render);
                        }
                    })?,
            );
        }
        let flag = Arc::clone(&stop);
        threads.push(
            std::thread::Builder::new()
                .name("mifsec-metrics-accept".into())
                .spawn(move || {
                    for conn in listener.incoming() {
                        if flag.load(Ordering::Relaxed) {
                            break;
                        }
                        let Ok(stream) = conn else { continue };
                        match tx.try_send(stream) {
                            Ok(()) => {}
                            Err(TrySendError::Full(mut s)) => {
                                let _ = s.set_write_timeout(Some(Duration::from_millis(100)));
                                let _ =
                                    s.write_all(&head("503 Service Unavailable", "text/plain", 0));
                            }
                            Err(TrySendError::Disconnected(_)) => break,
                        }
                    }
                })?,
        );
        Ok(MetricsServer {
            addr,
            stop,
            threads,
        })
    }

    /// The address served.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends the threads (the acceptor is woken by a connection of its own).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.stop.store(true, Ordering::Relaxed);
        let wake = match self.addr.ip() {
            IpAddr::V4(a) if a.is_unspecified() => {
                SocketAddr::new(Ipv4Addr::LOCALHOST.into(), self.addr.port())
            }
            IpAddr::V6(a) if a.is_unspecified() => {
                SocketAddr::new(Ipv6Addr::LOCALHOST.into(), self.addr.port())
            }
            _ => self.addr,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        // The acceptor ends, dropping the queue's sender: the workers end after their
        // connection (each within its deadline).
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn head(status: &str, content_type: &str, len: usize) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes()
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics,
    NotFound,
    Bad,
}

/// Parses a request head (`GET /metrics HTTP/1.1`, headers ignored).
fn parse(head: &[u8]) -> Asked {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else {
        return Asked::Bad;
    };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Asked::Bad;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Asked::Bad;
    }
    let path = target.split_once('?').map_or(target, |(p, _)| p);
    if method == "GET" && path == "/metrics" {
        Asked::Metrics
    } else {
        Asked::NotFound
    }
}

/// Reads the request head within `deadline`: `Ok(None)` when it is too long.
fn read_head(stream: &mut TcpStream, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        stream.set_read_timeout(Some(left))?;
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_REQUEST {
            return Ok(None);
        }
    }
}

fn answer(mut stream: TcpStream, deadline: Instant, render: &Render) {
    let reply = match read_head(&mut stream, deadline) {
        Ok(Some(h)) => match parse(&h) {
            Asked::Metrics => {
                let body = render();
                let mut r = head("200 OK", super::CONTENT_TYPE, body.len());
                r.extend_from_slice(body.as_bytes());
                r
            }
            Asked::NotFound => {
                let body = b"not found: GET /metrics\n";
                let mut r = head("404 Not Found", "text/plain", body.len());
                r.extend_from_slice(body);
                r
            }
            Asked::Bad => head("400 Bad Request", "text/plain", 0),
        },
        Ok(None) => head("431 Request Header Fields Too Large", "text/plain", 0),
        Err(e) => {
            tracing::debug!("metrics: a client gave no request: {e}");
            return;
        }
    };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || stream.set_write_timeout(Some(left)).is_err() {
        return;
    }
    if let Err(e) = stream.write_all(&reply) {
        tracing::debug!("metrics: writing the answer: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(deadline: Duration) -> MetricsServer {
        let l = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        MetricsServer::start(l, Arc::new(|| "mifsec_up 1\n".to_owned()), deadline).unwrap()
    }

    fn ask(addr: SocketAddr, req: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(req).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn request_lines() {
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Asked::Metrics
        );
        assert_eq!(
            parse(b"GET /metrics?name[]=x HTTP/1.0\r\n\r\n"),
            Asked::Metrics
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Asked::NotFound);
        assert_eq!(parse(b"POST /metrics HTTP/1.1\r\n\r\n"), Asked::NotFound);
        assert_eq!(parse(b"GET /metricsx HTTP/1.1\r\n\r\n"), Asked::NotFound);
        assert_eq!(parse(b"GET /metrics\r\n\r\n"), Asked::Bad);
        assert_eq!(parse(b"GET metrics HTTP/1.1\r\n\r\n"), Asked::Bad);
        assert_eq!(parse(b"GET /metrics SMTP/1.1\r\n\r\n"), Asked::Bad);
        assert_eq!(parse(b"\xff\xfe /metrics HTTP/1.1\r\n\r\n"), Asked::Bad);
    }

    #[test]
    fn serves_metrics_and_nothing_else() {
        let srv = server(DEADLINE);
        let a = srv.local_addr();
        let ok = ask(a, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.contains("Content-Type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("Content-Length: 12\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nmifsec_up 1\n"), "{ok}");
        let nf = ask(a, b"GET /other HTTP/1.1\r\n\r\n");
        assert!(nf.starts_with("HTTP/1.1 404 Not Found\r\n"), "{nf}");
        let nf = ask(a, b"DELETE /metrics HTTP/1.1\r\n\r\n");
        assert!(nf.starts_with("HTTP/1.1 404 Not Found\r\n"), "{nf}");
        let bad = ask(a, b"hello\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{bad}");
        let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', MAX_REQUEST + 10));
        let big = ask(a, &long);
        assert!(big.starts_with("HTTP/1.1 431 "), "{big}");
        srv.stop();
    }

    #[test]
    fn a_silent_client_is_closed_at_the_deadline_and_others_are_served() {
        let srv = server(Duration::from_millis(300));
        let a = srv.local_addr();
        // More silent clients than workers: each is closed at its deadline.
        let silent: Vec<TcpStream> = (0..WORKERS + 1)
            .map(|_| TcpStream::connect(a).unwrap())
            .collect();
        let ok = ask(a, b"GET /metrics HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        for mut s in silent {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut b = Vec::new();
            // Closed without an answer (EOF), not left open.
            assert_eq!(s.read_to_end(&mut b).unwrap(), 0);
        }
        srv.stop();
    }
}
