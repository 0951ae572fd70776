//! Full IKE_SA_INIT + IKE_AUTH handshakes per second on one core, responder side: PSK, the
//! sample configurations (the client offers X25519 first; the responder picks the first
//! AES-GCM proposal it accepts). Only the responder's work is timed: parsing, DH, key
//! derivation, AUTH, the child SA's keys and both answers. The initiator's messages are
//! produced outside the measured sections.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mifsec_control::ike::{Event, IkeSa, sample};

fn handshakes(c: &mut Criterion) {
    let (cl, gw): (SocketAddr, SocketAddr) = (
        "198.18.0.2:500".parse().unwrap(),
        "198.18.0.1:500".parse().unwrap(),
    );
    let mut g = c.benchmark_group("ike");
    g.throughput(Throughput::Elements(1));
    g.bench_function("responder_handshake_psk", |b| {
        b.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            for _ in 0..iters {
                let now = Instant::now();
                let mut init = IkeSa::initiate(sample::client(), now, cl, gw).unwrap();
                let mut resp = IkeSa::respond(sample::gateway());
                let mut established = false;
                // Four messages: request, answer, request, answer.
                for _ in 0..2 {
                    let req = init.poll_transmit().expect("a request").bytes;
                    let t = Instant::now();
                    resp.handle_datagram(now, gw, cl, &req);
                    let answer = resp.poll_transmit().expect("an answer").bytes;
                    while let Some(e) = resp.poll_event() {
                        established |= matches!(e, Event::ChildSaEstablished(_));
                        black_box(e);
                    }
                    timed += t.elapsed();
                    init.handle_datagram(now, cl, gw, &answer);
                    while init.poll_event().is_some() {}
                }
                assert!(established, "the responder did not establish the child SA");
            }
            timed
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = handshakes
}
criterion_main!(benches);
