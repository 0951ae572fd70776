//! Builds the two-namespace lab, starts two engines (release build) and runs iperf3 through
//! the tunnel: a quick throughput probe for engine work. `scripts/bench-e2e.sh` is the real
//! benchmark. Usage: lab_iperf [seconds] [policy] [rate1_mbit] [rate2_mbit]
use std::time::Duration;

use mifsec_dataplane::aead::Cipher;
use mifsec_dataplane::sa_table::{Policy, Role};
use mifsec_tests::{Lab, Side, exec_in, lab_config};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs = args.get(1).map_or("5", String::as_str).to_owned();
    let policy: Policy = args
        .get(2)
        .map_or("failover", String::as_str)
        .parse()
        .unwrap();
    let rate = |i: usize| {
        args.get(i)
            .and_then(|r| r.parse().ok())
            .filter(|&r: &u32| r > 0)
    };
    let lab = Lab::new([rate(3), rate(4)]);
    let cfg = |side| {
        let mut c = lab_config(side, policy, Cipher::Aes128Gcm, Role::Standby);
        if let Some(w) = std::env::var("MIFSEC_WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
        {
            c.workers = w;
        }
        for (i, p) in c.sas[0].paths.iter_mut().enumerate() {
            p.weight = rate(3 + i).unwrap_or(1);
        }
        c
    };
    let gw = lab.start(&lab.gw.clone(), cfg(Side::Gateway));
    let cl = lab.start(&lab.cl.clone(), cfg(Side::Client));
    let mut server = std::process::Command::new("ip")
        .args([
            "netns", "exec", &lab.gw, "iperf3", "-s", "-1", "-B", "10.2.0.1",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    for reverse in [false, true] {
        let mut a = vec!["iperf3", "-c", "10.2.0.1", "-t", &secs, "-f", "m"];
        if reverse {
            a.push("-R");
        }
        let (_, out) = exec_in(&lab.cl, &a);
        let line = out
            .lines()
            .rfind(|l| l.contains("receiver"))
            .unwrap_or(&out)
            .to_owned();
        println!("{} {line}", if reverse { "reverse" } else { "forward" });
        if !reverse {
            let _ = server.wait();
            server = std::process::Command::new("ip")
                .args([
                    "netns", "exec", &lab.gw, "iperf3", "-s", "-1", "-B", "10.2.0.1",
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap();
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    println!("client: {}", serde_json_lite(&cl.status()));
    println!("gateway: {}", serde_json_lite(&gw.status()));
}

fn serde_json_lite(s: &mifsec_dataplane::engine::EngineStatus) -> String {
    let sa = &s.sas[0];
    format!(
        "offloads tun [{}] if [{}], out {} pkts, in {} pkts, reorder held {} gaps {}, drops {:?} global {:?}, paths {:?}",
        s.tun_offloads,
        s.interfaces
            .iter()
            .map(|i| i.offloads.clone())
            .collect::<Vec<_>>()
            .join(","),
        sa.out_packets,
        sa.in_packets,
        sa.reorder_held,
        sa.reorder_gaps,
        sa.drops,
        s.drops.iter().filter(|(_, v)| **v > 0).collect::<Vec<_>>(),
        sa.paths
            .iter()
            .map(|p| (
                p.name.clone(),
                p.state.clone(),
                p.rtt_ms,
                p.tx_packets,
                p.rx_packets
            ))
            .collect::<Vec<_>>()
    )
}
