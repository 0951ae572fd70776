//! Responder COOKIEs (RFC 7296 section 2.6), sans-IO.
//!
//! A responder under a flood of half-open IKE SAs answers an IKE_SA_INIT request that has
//! no valid COOKIE with an unencrypted response carrying only a COOKIE notify, and keeps
//! no state. An initiator that can receive at its address sends the request again with
//! the COOKIE as the first payload; that one proceeds.
//!
//! `Cookie = <VersionIDofSecret> | HMAC-SHA2-256(<secret>, Ni | IPi | SPIi)`: a 4-byte
//! version followed by the 32-byte MAC (36 bytes, within the 64 the RFC allows). The
//! secret is random and replaced every [`ROTATE_EVERY`]; cookies made with the previous
//! secret stay valid until the next replacement, so a cookie is accepted for between one
//! and two periods. Checking a cookie is one HMAC and a constant-time compare (ring's
//! `hmac::verify`). Secrets are zeroized; ring's key schedules are short-lived locals.
//!
//! [`CookieGate`] is the daemon's decision: below the threshold of half-open SAs every
//! request proceeds; at or above it, only those with a valid COOKIE do.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::wire::{ExchangeType, Flags, Header, Message, NotifyPayload, NotifyType, Payload};

/// How often the secret is replaced.
pub const ROTATE_EVERY: Duration = Duration::from_secs(60);

/// The length of our cookies: version (4) and HMAC-SHA2-256 (32).
pub const COOKIE_LEN: usize = 4 + 32;

/// strongSwan's default `cookie_threshold`.
pub const DEFAULT_THRESHOLD: usize = 30;

struct Secret {
    version: u32,
    key: Zeroizing<[u8; 32]>,
}

/// The cookie secrets: the current one and the one before it.
pub struct CookieJar {
    rng: SystemRandom,
    current: Secret,
    previous: Option<Secret>,
    next_rotation: Instant,
    every: Duration,
}

impl core::fmt::Debug for CookieJar {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("CookieJar")
            .field("version", &self.current.version)
            .field("previous", &self.previous.as_ref().map(|p| p.version))
            .finish_non_exhaustive()
    }
}

fn fresh(rng: &SystemRandom, version: u32) -> Option<Secret> {
    let mut key = Zeroizing::new([0u8; 32]);
    rng.fill(key.as_mut()).ok()?;
    Some(Secret { version, key })
}

fn mac_input(ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(ni.len() + 16 + 8);
    data.extend_from_slice(ni);
    match ip {
        IpAddr::V4(a) => data.extend_from_slice(&a.octets()),
        IpAddr::V6(a) => data.extend_from_slice(&a.octets()),
    }
    data.extend_from_slice(&spi_i.to_be_bytes());
    data
}

impl CookieJar {
    /// A jar with a fresh random secret, replaced every `every` from `now` on. `None` when
    /// the system random number generator fails.
    pub fn new(now: Instant, every: Duration) -> Option<CookieJar> {
        let rng = SystemRandom::new();
        let mut v = [0u8; 4];
        rng.fill(&mut v).ok()?;
        let current = fresh(&rng, u32::from_be_bytes(v))?;
        Some(CookieJar {
            rng,
            current,
            previous: None,
            next_rotation: now + every,
            every,
        })
    }

    /// Replaces the secret if its period is over (twice if two periods are over, so that
    /// no secret older than two periods survives). A failing random number generator
    /// keeps the old secret.
    pub fn rotate_if_due(&mut self, now: Instant) {
        for _ in 0..2 {
            if now < self.next_rotation {
                return;
            }
            self.rotate();
            self.next_rotation += self.every;
        }
        if now >= self.next_rotation {
            self.next_rotation = now + self.every;
        }
    }

    /// Replaces the secret now; the current one becomes the previous one.
    pub fn rotate(&mut self) {
        if let Some(s) = fresh(&self.rng, self.current.version.wrapping_add(1)) {
            self.previous = Some(std::mem::replace(&mut self.current, s));
        }
    }

    /// The cookie for an initiator with nonce `ni` at address `ip` and SPI `spi_i`.
    pub fn make(&self, ni: &[u8], ip: IpAddr, spi_i: u64) -> Vec<u8> {
        let key = hmac::Key::new(hmac::HMAC_SHA256, self.current.key.as_ref());
        let tag = hmac::sign(&key, &mac_input(ni, ip, spi_i));
        let mut out = Vec::with_capacity(COOKIE_LEN);
        out.extend_from_slice(&self.current.version.to_be_bytes());
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// Whether `cookie` was made by [`make`](Self::make) with the current or the previous
    /// secret for these values (constant-time compare of the MAC).
    pub fn verify(&self, cookie: &[u8], ni: &[u8], ip: IpAddr, spi_i: u64) -> bool {
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let (v, tag) = cookie.split_at(4);
        let version = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
        let secret = if version == self.current.version {
            &self.current
        } else {
            match &self.previous {
                Some(p) if p.version == version => p,
                _ => return false,
            }
        };
        let key = hmac::Key::new(hmac::HMAC_SHA256, secret.key.as_ref());
        hmac::verify(&key, &mac_input(ni, ip, spi_i), tag).is_ok()
    }
}

/// What the gate counted, shown by `mifsec status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CookieStats {
    /// IKE_SA_INIT requests answered with a COOKIE notify (no state created); includes
    /// those whose cookie was rejected.
    pub cookies_sent: u64,
    /// Requests whose COOKIE was valid (they proceeded while cookies were demanded).
    pub cookies_accepted: u64,
    /// Requests whose COOKIE was invalid (wrong, stale, or not the first payload); each
    /// got a fresh cookie.
    pub cookies_rejected: u64,
}

/// The gate's verdict on one new IKE_SA_INIT request.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Create a responder SA for it.
    Proceed,
    /// Send these bytes back (the COOKIE response) and keep nothing.
    Cookie(Vec<u8>),
}

/// Decides whether a new IKE_SA_INIT request needs a COOKIE first.
#[derive(Debug)]
pub struct CookieGate {
    jar: CookieJar,
    /// Demand cookies when at least this many responder SAs are half-open (0: always).
    threshold: usize,
    stats: CookieStats,
}

impl CookieGate {
    /// A gate demanding cookies from `threshold` half-open SAs on. `None` when the system
    /// random number generator fails.
    pub fn new(now: Instant, threshold: usize) -> Option<CookieGate> {
        Some(CookieGate {
            jar: CookieJar::new(now, ROTATE_EVERY)?,
            threshold,
            stats: CookieStats::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> CookieStats {
        self.stats
    }

    /// The secrets (tests).
    #[cfg(test)]
    pub(crate) fn jar_mut(&mut self) -> &mut CookieJar {
        &mut self.jar
    }

    /// The verdict on `bytes`, an IKE_SA_INIT request (message ID 0, no responder SPI)
    /// from `remote` that fits no SA, while `half_open` responder SAs are half-open.
    /// A request that does not parse, or has no nonce, proceeds: the responder SA refuses
    /// it without creating state (or answers as RFC 7296 says for unparseable ones).
    pub fn admit(
        &mut self,
        now: Instant,
        half_open: usize,
        remote: IpAddr,
        bytes: &[u8],
    ) -> Admission {
        if half_open < self.threshold {
            return Admission::Proceed;
        }
        self.jar.rotate_if_due(now);
        let Ok(msg) = Message::parse(bytes) else {
            return Admission::Proceed;
        };
        let Some(ni) = msg.payloads.iter().find_map(|p| match p {
            Payload::Nonce(n) => Some(n.as_slice()),
            _ => None,
        }) else {
            return Admission::Proceed;
        };
        let spi_i = msg.header.spi_i;
        let first = msg.payloads.first().and_then(|p| match p {
            Payload::Notify(n) if n.notify_type == NotifyType::Cookie => Some(n.data.as_slice()),
            _ => None,
        });
        let has_any = msg
            .payloads
            .iter()
            .any(|p| matches!(p, Payload::Notify(n) if n.notify_type == NotifyType::Cookie));
        match first {
            Some(c) if self.jar.verify(c, ni, remote, spi_i) => {
                self.stats.cookies_accepted += 1;
                return Admission::Proceed;
            }
            _ if has_any => self.stats.cookies_rejected += 1,
            _ => {}
        }
        self.stats.cookies_sent += 1;
        let cookie = self.jar.make(ni, remote, spi_i);
        let response = Message {
            header: Header {
                spi_i,
                spi_r: 0,
                minor_version: 0,
                exchange_type: ExchangeType::IkeSaInit,
                flags: Flags::RESPONSE,
                message_id: msg.header.message_id,
            },
            payloads: vec![Payload::Notify(NotifyPayload::new(
                NotifyType::Cookie,
                cookie,
            ))],
        };
        Admission::Cookie(response.to_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NI: &[u8] = &[7u8; 32];

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn valid_cookie_verifies_and_others_do_not() {
        let now = Instant::now();
        let jar = CookieJar::new(now, ROTATE_EVERY).unwrap();
        let a = ip("198.18.0.2");
        let c = jar.make(NI, a, 0x1122_3344_5566_7788);
        assert_eq!(c.len(), COOKIE_LEN);
        assert!(jar.verify(&c, NI, a, 0x1122_3344_5566_7788));
        // Wrong address, SPI, nonce.
        assert!(!jar.verify(&c, NI, ip("198.18.0.3"), 0x1122_3344_5566_7788));
        assert!(!jar.verify(&c, NI, ip("::ffff:198.18.0.2"), 0x1122_3344_5566_7788));
        assert!(!jar.verify(&c, NI, a, 0x1122_3344_5566_7789));
        let mut ni2 = NI.to_vec();
        ni2[31] ^= 1;
        assert!(!jar.verify(&c, &ni2, a, 0x1122_3344_5566_7788));
        // A flipped MAC bit, a wrong version, a truncated or empty cookie.
        let mut bad = c.clone();
        bad[35] ^= 0x80;
        assert!(!jar.verify(&bad, NI, a, 0x1122_3344_5566_7788));
        let mut bad = c.clone();
        bad[0] ^= 1;
        assert!(!jar.verify(&bad, NI, a, 0x1122_3344_5566_7788));
        assert!(!jar.verify(&c[..35], NI, a, 0x1122_3344_5566_7788));
        assert!(!jar.verify(&[], NI, a, 0x1122_3344_5566_7788));
        // Another jar (another secret) does not accept it.
        let other = CookieJar::new(now, ROTATE_EVERY).unwrap();
        assert!(!other.verify(&c, NI, a, 0x1122_3344_5566_7788));
    }

    #[test]
    fn previous_secret_stays_valid_for_one_rotation() {
        let t0 = Instant::now();
        let mut jar = CookieJar::new(t0, Duration::from_secs(60)).unwrap();
        let a = ip("2001:db8::1");
        let c = jar.make(NI, a, 42);
        jar.rotate_if_due(t0 + Duration::from_secs(59));
        assert!(jar.verify(&c, NI, a, 42));
        assert_eq!(jar.make(NI, a, 42), c, "not rotated before its time");
        jar.rotate_if_due(t0 + Duration::from_secs(60));
        assert_ne!(jar.make(NI, a, 42), c, "rotated");
        assert!(
            jar.verify(&c, NI, a, 42),
            "the previous secret is still valid"
        );
        let c2 = jar.make(NI, a, 42);
        jar.rotate_if_due(t0 + Duration::from_secs(120));
        assert!(!jar.verify(&c, NI, a, 42), "twice rotated: invalid");
        assert!(jar.verify(&c2, NI, a, 42));
        // A long pause rotates twice at once: nothing from before it survives.
        let c3 = jar.make(NI, a, 42);
        jar.rotate_if_due(t0 + Duration::from_secs(1000));
        assert!(!jar.verify(&c3, NI, a, 42));
        assert!(!jar.verify(&c2, NI, a, 42));
    }

    /// An IKE_SA_INIT request with `cookie` (if any) first, a nonce, SPI `spi`.
    fn request(spi: u64, cookie: Option<&[u8]>, cookie_last: bool) -> Vec<u8> {
        let mut payloads = vec![Payload::Nonce(NI.to_vec())];
        if let Some(c) = cookie {
            let n = Payload::Notify(NotifyPayload::new(NotifyType::Cookie, c.to_vec()));
            if cookie_last {
                payloads.push(n);
            } else {
                payloads.insert(0, n);
            }
        }
        Message {
            header: Header::ike_sa_init(spi, 0, Flags::INITIATOR),
            payloads,
        }
        .to_bytes()
    }

    fn cookie_of(a: Admission) -> Vec<u8> {
        let Admission::Cookie(bytes) = a else {
            panic!("expected a COOKIE response, got {a:?}");
        };
        let m = Message::parse(&bytes).unwrap();
        assert!(m.header.flags.response());
        assert_eq!(m.header.exchange_type, ExchangeType::IkeSaInit);
        assert_eq!(m.header.spi_r, 0);
        assert_eq!(m.payloads.len(), 1);
        m.notify(NotifyType::Cookie).unwrap().data.clone()
    }

    #[test]
    fn gate_demands_cookies_from_the_threshold_on() {
        let now = Instant::now();
        let a = ip("198.18.0.2");
        let mut g = CookieGate::new(now, 2).unwrap();
        assert_eq!(
            g.admit(now, 0, a, &request(5, None, false)),
            Admission::Proceed
        );
        assert_eq!(
            g.admit(now, 1, a, &request(5, None, false)),
            Admission::Proceed
        );
        assert_eq!(g.stats(), CookieStats::default());
        let c = cookie_of(g.admit(now, 2, a, &request(5, None, false)));
        assert_eq!(g.stats().cookies_sent, 1);
        // The retry with the cookie first proceeds.
        assert_eq!(
            g.admit(now, 2, a, &request(5, Some(&c), false)),
            Admission::Proceed
        );
        assert_eq!(g.stats().cookies_accepted, 1);
        // From another address, with another SPI, or with the cookie not first: a new
        // cookie, and counted as rejected.
        cookie_of(g.admit(now, 2, ip("198.18.0.9"), &request(5, Some(&c), false)));
        cookie_of(g.admit(now, 2, a, &request(6, Some(&c), false)));
        cookie_of(g.admit(now, 2, a, &request(5, Some(&c), true)));
        assert_eq!(
            g.stats(),
            CookieStats {
                cookies_sent: 4,
                cookies_accepted: 1,
                cookies_rejected: 3
            }
        );
        // After two rotations the old cookie is refused.
        g.jar_mut().rotate();
        assert_eq!(
            g.admit(now, 2, a, &request(5, Some(&c), false)),
            Admission::Proceed
        );
        g.jar_mut().rotate();
        cookie_of(g.admit(now, 2, a, &request(5, Some(&c), false)));
        // Garbage proceeds (the responder SA answers it without creating state).
        assert_eq!(g.admit(now, 2, a, &[1, 2, 3]), Admission::Proceed);
    }

    #[test]
    fn threshold_zero_always_demands() {
        let now = Instant::now();
        let mut g = CookieGate::new(now, 0).unwrap();
        cookie_of(g.admit(now, 0, ip("198.18.0.2"), &request(9, None, false)));
        assert_eq!(g.stats().cookies_sent, 1);
    }
}
