#!/usr/bin/env python3
"""IKE_SA_INIT flood benchmark: a mifsec gateway under a flood from one address.

    sudo scripts/bench_flood.py [--rate N] [--seconds S] [--mbit M] [--modes ignore,answer]
                                [--out FILE] [--bin DIR]

Three namespaces: a client namespace (mifsec client 1 at 198.18.9.2, and the flooder at
198.18.9.3 on the same link), the gateway (198.18.9.1 and 198.18.10.1, 10.88.0.1 behind
it) and a third namespace (mifsec client 2 at 198.18.10.2). For each mode (`none`: the
same run without a flood, the baseline; `ignore`: the flooder ignores the COOKIEs it gets;
`answer`: it answers each at once under the SPI it was made for):

1. A fresh gateway (default limits: block_threshold 5, init_rate 10/s, init_burst 20,
   init_limit_half_open 1024; cookie_threshold 2, so that cookies are demanded during the
   flood: with the default 30 a single source never gets one, block_threshold stops it at
   5 half-open SAs first). Client 1 connects; its child SA rekeys every 3 s and its IKE SA
   every 7 s (rand_time 0).
2. An iperf3 UDP stream (--mbit, 50 Mbit/s, 1200-byte datagrams) from client 1 through the
   tunnel to 10.88.0.1, for the flood's length plus 4 s.
3. One second in, the flood: --rate (10,000) genuine IKE_SA_INIT requests per second, each
   with a new SPI, for --seconds (10), by `ike_flood` (control/examples/ike_flood.rs).
4. Three seconds into the flood, `mifsec ctl initiate home` on client 2: the time until its
   status shows an ESTABLISHED IKE SA with an installed child (polled every 10 ms).

Reported per mode: iperf3's lost datagrams of the stream (and the kernel's UDP receive-buffer
drops per namespace and input-backlog drops, to tell where they went), rekeys seen on client 1 (new
child and IKE SPIs, polled every 200 ms), client 2's connect time, the gateway daemon's
CPU seconds during the flood (utime + stime from /proc/PID/stat) and its peak RSS
(VmHWM from /proc/PID/status), the gateway's IKE counters, and the flooder's own counts.
Writes JSON (default bench/results/flood-<date>.json). Needs root and iperf3. Only the
Python standard library is used.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testkit" / "python"))
import mifsec_testkit as kit  # noqa: E402  (the lab, the templates: testkit/)
from mifsec_testkit import drops, in_ns, udp_errors  # noqa: E402

CL, GW, X = "mffl-cl", "mffl-gw", "mffl-x"
CL_IF, GW_IF, X_IF, GW_IF2 = "mfflc", "mfflg", "mfflx", "mfflg2"
TICKS = os.sysconf("SC_CLK_TCK")

# The gateway (testkit/templates/mifsec-gateway.toml) on both links, cookies from two
# half-open SAs on.
GATEWAY = {
    "DEV": GW_IF,
    "LOCAL_ADDRS": '"198.18.9.1", "198.18.10.1"',
    "SECTIONS": "\n[ike]\ncookie_threshold = 2",
    "INTERFACES": f'\n[interfaces.wan2]\ndevice = "{GW_IF2}"\naddress = "198.18.10.1"',
}


class Lab(kit.Lab):
    """Client 1 and the flooder (198.18.9.2, .3) in one namespace, the gateway (198.18.9.1,
    198.18.10.1, 10.88.0.1 behind it), client 2 (198.18.10.2) in a third."""

    def __init__(self, work: Path, bindir: Path):
        super().__init__(work, bindir / "mifsec")
        self.flooder = bindir / "examples" / "ike_flood"

    def up(self) -> None:
        self.down()
        kit.netns_add(CL, GW, X)
        kit.veth(CL, CL_IF, GW, GW_IF)
        kit.veth(X, X_IF, GW, GW_IF2)
        for ns, dev, addr in (
            (CL, CL_IF, "198.18.9.2/24"),
            (GW, GW_IF, "198.18.9.1/24"),
            (X, X_IF, "198.18.10.2/24"),
            (GW, GW_IF2, "198.18.10.1/24"),
        ):
            kit.addr_up(ns, dev, addr)
        kit.sh("ip", "-n", CL, "addr", "add", "198.18.9.3/24", "dev", CL_IF)
        kit.sh("ip", "-n", GW, "addr", "add", "10.88.0.1/32", "dev", "lo")

    def down(self) -> None:
        self.close()
        kit.netns_del(CL, GW, X)


def softnet_dropped() -> int:
    """Packets the kernel dropped because a CPU's input backlog was full (netdev_max_backlog;
    veth delivers through it), summed over CPUs: /proc/net/softnet_stat, second column. The
    file is not per namespace: other work on the machine counts too."""
    return sum(int(l.split()[1], 16) for l in Path("/proc/net/softnet_stat").read_text().splitlines())


def wait_established(lab: Lab, name: str, seconds: float) -> float:
    return kit.wait_until(
        lambda: kit.established(lab.status(name)),
        seconds,
        lambda: f"{name} not established after {seconds} s:\n{lab.log(name)}",
        every=0.01,
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def proc_status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


class Watch(threading.Thread):
    """Polls client 1 every 200 ms; collects the child and IKE SPIs it has seen."""

    def __init__(self, lab: Lab):
        super().__init__(daemon=True)
        self.lab = lab
        self.stop_at = False
        self.child: set[str] = set()
        self.ike: set[str] = set()
        self.events: list[tuple[float, str]] = []

    def run(self) -> None:
        while not self.stop_at:
            try:
                st = self.lab.status("cl1")
            except (subprocess.CalledProcessError, json.JSONDecodeError):
                time.sleep(0.2)
                continue
            now = time.monotonic()
            for s in st.get("ike_sas", []):
                if s.get("state") == "ESTABLISHED":
                    k = s["spi_i"] + s["spi_r"]
                    if k not in self.ike:
                        self.ike.add(k)
                        self.events.append((now, "ike"))
                for c in s.get("children", []):
                    if c["spi_in"] not in self.child:
                        self.child.add(c["spi_in"])
                        self.events.append((now, "child"))
            time.sleep(0.2)


def run_mode(lab: Lab, mode: str, args) -> dict:
    lab.up()
    try:
        gw = lab.start_mifsec("gw", GW, "mifsec-gateway.toml", **GATEWAY)
        rekey_conn = 'rekey_time = "7s"\nrand_time = 0\nlife_time = "60s"\nstart_action = "start"'
        rekey_child = 'rekey_time = "3s"\nrand_time = 0\nlife_time = "20s"'
        lab.start_mifsec("cl1", CL, "mifsec-client.toml", DEV=CL_IF, CONN=rekey_conn,
                         CHILD=rekey_child)
        wait_established(lab, "cl1", 20)
        lab.start_mifsec("cl2", X, "mifsec-client.toml", DEV=X_IF, ADDR="198.18.10.2",
                         GATEWAY="198.18.10.1")
        watch = Watch(lab)
        watch.start()
        server = subprocess.Popen(
            in_ns(GW, "iperf3", "-s", "-1", "-B", "10.88.0.1", "-J"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(0.5)
        length = int(args.seconds) + 4
        before = {ns: udp_errors(ns) for ns in (CL, GW)}
        backlog0 = softnet_dropped()
        t_start = time.monotonic()
        client = subprocess.Popen(
            in_ns(
                CL, "iperf3", "-c", "10.88.0.1", "-u", "-b", f"{args.mbit}M", "-l", "1200",
                "-w", "2M", "-t", str(length), "-J",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        time.sleep(1.0)
        cpu0, t0 = cpu_seconds(gw.pid), time.monotonic()
        flood_start = t0 - t_start
        # Mode "none" is the baseline: the same run without a flood (rate 0).
        rate = 0 if mode == "none" else args.rate
        flood_cmd = in_ns(
            CL, str(lab.flooder), "198.18.9.3", "198.18.9.1:500", str(rate), str(args.seconds)
        )
        if mode == "answer":
            flood_cmd.append("cookies")
        flooder = subprocess.Popen(flood_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(3.0)
        # From just before the initiate command to the established status.
        t_init = time.monotonic()
        lab.mifsec("cl2", "ctl", "initiate", "home")
        wait_established(lab, "cl2", 30)
        connect_s = time.monotonic() - t_init
        fl_out, fl_err = flooder.communicate(timeout=args.seconds + 30)
        while time.monotonic() < t0 + args.seconds:
            time.sleep(0.05)
        cpu1, t1 = cpu_seconds(gw.pid), time.monotonic()
        cl_out, cl_err = client.communicate(timeout=length + 30)
        sv_out, _ = server.communicate(timeout=30)
        after = {ns: udp_errors(ns) for ns in (CL, GW)}
        backlog1 = softnet_dropped()
        watch.stop_at = True
        watch.join()
        gw_status = lab.status("gw")
        hwm = proc_status_kb(gw.pid, "VmHWM")
        rss = proc_status_kb(gw.pid, "VmRSS")
        if flooder.returncode != 0:
            raise RuntimeError(f"ike_flood: {fl_err}")
        if client.returncode != 0:
            raise RuntimeError(f"iperf3: {cl_out}{cl_err}")
        report = json.loads(sv_out)  # the receiver's view
        s = report["end"]["sum"]
        lost, lossy = kit.iperf_udp_loss(report)
        return {
            "mode": mode,
            "flooder": json.loads(fl_out),
            "iperf3": {
                "mbit": args.mbit,
                "seconds": length,
                "packets": s["packets"],
                "lost": lost,
                "seconds_with_loss": lossy,
            },
            "flood_s": [round(flood_start, 2), round(flood_start + t1 - t0, 2)],
            "client1_rekeys_at_s": [(round(t - t_start, 1), k) for t, k in watch.events],
            "udp_socket_drops": {
                side: {k: after[ns][k] - before[ns][k] for k in after[ns]}
                for side, ns in (("client_ns", CL), ("gateway_ns", GW))
            },
            "backlog_drops": backlog1 - backlog0,
            "gateway_drops": drops(gw_status),
            "client1_drops": drops(lab.status("cl1")),
            "client1_rekeys": {
                "child_spis_seen": len(watch.child),
                "ike_sas_seen": len(watch.ike),
            },
            "client2_connect_s": round(connect_s, 4),
            "gateway_cpu_s_during_flood": round(cpu1 - cpu0, 2),
            "flood_window_s": round(t1 - t0, 2),
            "gateway_cpu_s_total": round(cpu1, 2),
            "gateway_vmhwm_kb": hwm,
            "gateway_vmrss_kb": rss,
            "gateway_ike_counters": gw_status.get("ike", {}),
        }
    finally:
        lab.down()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--mbit", type=int, default=50)
    ap.add_argument("--modes", default="none,ignore,answer")
    ap.add_argument("--out")
    ap.add_argument("--bin", help="directory with mifsec and examples/ike_flood (default: build release)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench_flood.py needs root (namespaces, TUN)")
    if args.bin:
        bindir = Path(args.bin)
    else:
        subprocess.run(
            ["cargo", "build", "--release", "--locked", "-p", "mifsec-control", "--bin", "mifsec",
             "--example", "ike_flood"],
            cwd=ROOT,
            check=True,
        )
        bindir = ROOT / "target" / "release"
    work = Path(tempfile.mkdtemp(prefix="mifsec-flood-"))
    lab = Lab(work, bindir)
    results = []
    for mode in args.modes.split(","):
        print(f"mode {mode}: {args.rate}/s for {args.seconds} s ...", flush=True)
        r = run_mode(lab, mode, args)
        results.append(r)
        c = r["gateway_ike_counters"]
        print(
            f"  stream: {r['iperf3']['lost']} of {r['iperf3']['packets']} datagrams lost; "
            f"rekeys seen: {r['client1_rekeys']}; client 2 connected in "
            f"{r['client2_connect_s'] * 1000:.1f} ms; gateway CPU {r['gateway_cpu_s_during_flood']} s "
            f"in {r['flood_window_s']} s, VmHWM {r['gateway_vmhwm_kb']} kB\n"
            f"  flooder: {r['flooder']}\n"
            f"  gateway: dropped rate {c.get('dropped_rate')}, blocked {c.get('dropped_blocked')}, "
            f"half-open cap {c.get('dropped_half_open')}, cookies sent {c.get('cookies_sent')}, "
            f"accepted {c.get('cookies_accepted')}, queue drops {c.get('queue_dropped_500')}/"
            f"{c.get('queue_dropped_4500')}",
            flush=True,
        )
    load = os.getloadavg()
    out = {
        "date": datetime.date.today().isoformat(),
        "what": "IKE_SA_INIT flood from one address at a mifsec gateway, see scripts/bench_flood.py",
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "loadavg": load,
        "results": results,
    }
    path = Path(args.out) if args.out else ROOT / "bench" / "results" / f"flood-{out['date']}.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
