//! The multi-interface lab's UDP stream as a program (for scripts/bench_mif.py and the demo):
//!
//! ```text
//! mif-stream recv --children N --rate PPS --seconds S [--json OUT]
//! mif-stream send --children N --rate PPS --seconds S [--json OUT]
//! ```
//!
//! Child i's packets go from 10.50.i.1 to 10.60.i.1 port 5599 (see `mifsec_testkit::stream`);
//! run each half inside its namespace (`ip netns exec`), the receiver first: it prints
//! `ready` once bound. Each half writes its JSON report to OUT (or stdout).

use std::time::Duration;

use mifsec_testkit::stream::{Receiver, mif_plan, send};

fn usage() -> ! {
    eprintln!("usage: mif-stream recv|send --children N --rate PPS --seconds S [--json OUT]");
    std::process::exit(2)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first().cloned() else {
        usage()
    };
    let (mut children, mut rate, mut seconds, mut out) = (0usize, 0u32, 0f64, None);
    let mut it = args[1..].iter();
    while let Some(a) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--children" => children = v.parse().unwrap_or_else(|_| usage()),
            "--rate" => rate = v.parse().unwrap_or_else(|_| usage()),
            "--seconds" => seconds = v.parse().unwrap_or_else(|_| usage()),
            "--json" => out = Some(v.clone()),
            _ => usage(),
        }
    }
    if children == 0 || rate == 0 || !(seconds > 0.0 && seconds <= 3600.0) {
        usage()
    }
    let plan = mif_plan(children, rate, Duration::from_secs_f64(seconds));
    let report = match mode.as_str() {
        "recv" => {
            let r = Receiver::bind(plan.port, children, plan.per_dest());
            println!("ready");
            r.run(plan.duration.mul_f64(1.5) + Duration::from_secs(5))
                .to_json()
        }
        "send" => send(&plan).to_json(),
        _ => usage(),
    };
    let text = serde_json::to_string_pretty(&report).expect("JSON");
    match out {
        Some(p) => std::fs::write(&p, text + "\n").unwrap_or_else(|e| panic!("{p}: {e}")),
        None => println!("{text}"),
    }
}
