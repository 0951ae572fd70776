//! An IKE_SA_INIT flooder for the lab: one UDP socket, one source address, genuine
//! IKE_SA_INIT requests (from mifsec's own initiator, so a responder would create a
//! half-open SA for each) each with a new initiator SPI, paced at a given rate for a given
//! time (both bounded). With `answer_cookies`, every COOKIE notify that comes back is
//! answered at once with the request again, the COOKIE first, under the SPI the cookie
//! was made for (as a real initiator would; RFC 7296 section 2.6).
//!
//! Shared by the `ike_flood` test and the `ike_flood` example that `scripts/bench_flood.py`
//! runs.
#![allow(dead_code)]

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mifsec_control::ike::{IkeSa, sample};
use mifsec_control::wire::{
    ExchangeType, HeaderPacket, Message, NotifyPayload, NotifyType, Payload,
};

/// What to send.
#[derive(Debug, Clone)]
pub struct Flood {
    /// The local address (and port) to send from.
    pub from: SocketAddr,
    /// The responder (its port 500).
    pub to: SocketAddr,
    /// New requests per second.
    pub rate: u32,
    /// For how long.
    pub duration: Duration,
    /// Whether COOKIE notifies are answered.
    pub answer_cookies: bool,
}

/// What happened, from the flooder's side.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// New requests sent (each with a new SPI).
    pub sent: u64,
    /// Requests sent again with a COOKIE.
    pub cookie_retries: u64,
    /// Responses carrying a COOKIE notify.
    pub cookies: u64,
    /// Other IKE_SA_INIT responses (a half-open SA was created for us, or an error).
    pub init_responses: u64,
    /// Send errors (a full socket buffer, say).
    pub send_errors: u64,
    /// Seconds spent sending.
    pub seconds: f64,
}

impl Report {
    /// The report as one JSON object.
    pub fn json(&self) -> String {
        format!(
            "{{\"sent\": {}, \"cookie_retries\": {}, \"cookies\": {}, \"init_responses\": {}, \"send_errors\": {}, \"seconds\": {:.3}}}",
            self.sent,
            self.cookie_retries,
            self.cookies,
            self.init_responses,
            self.send_errors,
            self.seconds
        )
    }
}

/// Runs the flood on the calling thread (which must be in the sender's namespace).
pub fn run(f: &Flood) -> std::io::Result<Report> {
    let sock = UdpSocket::bind(f.from)?;
    sock.set_nonblocking(true)?;
    let now = Instant::now();
    let mut init = IkeSa::initiate(sample::client(), now, f.from, f.to)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let template = init
        .poll_transmit()
        .ok_or_else(|| std::io::Error::other("the initiator sent nothing"))?
        .bytes;
    let parsed = Message::parse(&template).map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut req = template.clone();
    let mut report = Report::default();
    let mut buf = vec![0u8; 65_536];
    let start = Instant::now();
    let total = u64::from(f.rate) * f.duration.as_millis() as u64 / 1000;
    // Distinct, non-zero SPIs: a counter mixed with a random-ish base from the clock.
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    let base =
        (clock | 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (u64::from(std::process::id()) << 32);
    let deadline = start + f.duration + Duration::from_secs(1);
    while report.sent < total && Instant::now() < deadline {
        let due = (start.elapsed().as_secs_f64() * f64::from(f.rate)) as u64;
        while report.sent < due.min(total) {
            let spi = (base ^ report.sent.wrapping_mul(0x2545_f491_4f6c_dd1d)).max(1);
            req[..8].copy_from_slice(&spi.to_be_bytes());
            match sock.send_to(&req, f.to) {
                Ok(_) => {}
                Err(_) => report.send_errors += 1,
            }
            report.sent += 1;
        }
        // Whatever came back.
        while let Ok((n, _)) = sock.recv_from(&mut buf) {
            let Ok(h) = HeaderPacket::new_checked(&buf[..n]) else {
                continue;
            };
            if h.exchange_type() != ExchangeType::IkeSaInit || !h.flags().response() {
                continue;
            }
            let Ok(msg) = Message::parse(&buf[..n]) else {
                continue;
            };
            let Some(cookie) = msg.notify(NotifyType::Cookie) else {
                report.init_responses += 1;
                continue;
            };
            report.cookies += 1;
            if !f.answer_cookies {
                continue;
            }
            let mut retry = parsed.clone();
            retry.header.spi_i = msg.header.spi_i;
            retry.payloads.insert(
                0,
                Payload::Notify(NotifyPayload::new(NotifyType::Cookie, cookie.data.clone())),
            );
            match sock.send_to(&retry.to_bytes(), f.to) {
                Ok(_) => report.cookie_retries += 1,
                Err(_) => report.send_errors += 1,
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}
