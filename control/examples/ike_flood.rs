//! The IKE_SA_INIT flooder of `scripts/bench_flood.py` (the same code as the `ike_flood`
//! test's): run it inside the sender's namespace.
//!
//! Usage: ike_flood FROM_IP TO_IP:PORT RATE SECONDS [cookies]
//!
//! Sends RATE genuine IKE_SA_INIT requests per second (each with a new SPI) from FROM_IP
//! for SECONDS (at most RATE * SECONDS requests); with `cookies`, answers every COOKIE
//! notify at once. Prints one JSON object: what it sent and what came back.

#[path = "../tests/flood/mod.rs"]
mod flood;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: ike_flood FROM_IP TO_IP:PORT RATE SECONDS [cookies]");
        std::process::exit(2)
    };
    if args.len() < 5 {
        usage();
    }
    let from: IpAddr = args[1].parse().unwrap_or_else(|_| usage());
    let to: SocketAddr = args[2].parse().unwrap_or_else(|_| usage());
    let rate: u32 = args[3].parse().unwrap_or_else(|_| usage());
    let seconds: f64 = args[4].parse().unwrap_or_else(|_| usage());
    if !(0.0..=600.0).contains(&seconds) || rate > 1_000_000 {
        usage();
    }
    let f = flood::Flood {
        from: SocketAddr::new(from, 0),
        to,
        rate,
        duration: Duration::from_secs_f64(seconds),
        answer_cookies: args.get(5).is_some_and(|a| a == "cookies"),
    };
    match flood::run(&f) {
        Ok(r) => println!("{}", r.json()),
        Err(e) => {
            eprintln!("ike_flood: {e}");
            std::process::exit(1);
        }
    }
}
