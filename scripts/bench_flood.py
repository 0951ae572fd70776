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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PSK = "bench-secret-0123456789"
CL, GW, X = "mffl-cl", "mffl-gw", "mffl-x"
CL_IF, GW_IF, X_IF, GW_IF2 = "mfflc", "mfflg", "mfflx", "mfflg2"
IKE = "aes128gcm16-prfsha256-x25519"
ESP = "aes128gcm16-x25519"
TICKS = os.sysconf("SC_CLK_TCK")


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, text=True, capture_output=True, **kw)


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def client_conf(name: str, dev: str, addr: str, gw: str, extra_conn: str, extra_child: str) -> str:
    return f"""[dataplane]
workers = 1
control_socket = "@SOCK@"

[interfaces.wan]
device = "{dev}"
address = "{addr}"

[connections.home]
remote_addrs = ["{gw}"]
vips = ["0.0.0.0"]
proposals = ["{IKE}"]
encap = true
{extra_conn}

[connections.home.local]
auth = "psk"
id = "{name}"

[connections.home.remote]
auth = "psk"
id = "gw"

[connections.home.children.net]
remote_ts = ["10.88.0.0/16"]
esp_proposals = ["{ESP}"]
{extra_child}

[secrets.ike-1]
id = ["{name}", "gw"]
secret = "{PSK}"
"""


GATEWAY = f"""[dataplane]
workers = 1
control_socket = "@SOCK@"

[ike]
cookie_threshold = 2

[interfaces.wan]
device = "{GW_IF}"
address = "198.18.9.1"

[interfaces.wan2]
device = "{GW_IF2}"
address = "198.18.10.1"

[connections.rw]
local_addrs = ["198.18.9.1", "198.18.10.1"]
pools = ["p4"]
proposals = ["{IKE}"]

[connections.rw.local]
auth = "psk"
id = "gw"

[connections.rw.remote]
auth = "psk"
id = "cl"

[connections.rw.children.net]
local_ts = ["10.88.0.0/16"]
esp_proposals = ["{ESP}"]

[pools.p4]
addrs = "10.77.0.0/24"

[secrets.ike-1]
id = ["gw", "cl"]
secret = "{PSK}"
"""


class Lab:
    def __init__(self, work: Path, bindir: Path):
        self.work = work
        self.bin = bindir / "mifsec"
        self.flooder = bindir / "examples" / "ike_flood"
        self.daemons: dict[str, subprocess.Popen] = {}

    def up(self) -> None:
        self.down()
        for ns in (CL, GW, X):
            sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", CL_IF, "type", "veth", "peer", "name", GW_IF)
        sh("ip", "link", "add", X_IF, "type", "veth", "peer", "name", GW_IF2)
        for ns, dev, addr in (
            (CL, CL_IF, "198.18.9.2/24"),
            (GW, GW_IF, "198.18.9.1/24"),
            (X, X_IF, "198.18.10.2/24"),
            (GW, GW_IF2, "198.18.10.1/24"),
        ):
            sh("ip", "link", "set", dev, "netns", ns)
            sh("ip", "-n", ns, "addr", "add", addr, "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", CL, "addr", "add", "198.18.9.3/24", "dev", CL_IF)
        sh("ip", "-n", GW, "addr", "add", "10.88.0.1/32", "dev", "lo")

    def down(self) -> None:
        for name in list(self.daemons):
            self.stop(name)
        for ns in (CL, GW, X):
            sh("ip", "netns", "del", ns, check=False)

    def start(self, name: str, ns: str, conf: str) -> subprocess.Popen:
        cfg = self.work / f"{name}.toml"
        sock = self.work / f"{name}.sock"
        cfg.write_text(conf.replace("@SOCK@", str(sock)))
        # A daemon that dropped root may leave its socket behind in our directory.
        sock.unlink(missing_ok=True)
        log = open(self.work / f"{name}.log", "w")
        p = subprocess.Popen(
            in_ns(ns, str(self.bin), "run", "--config", str(cfg)),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        self.daemons[name] = p
        deadline = time.monotonic() + 15
        while not sock.exists():
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mifsec {name} did not start:\n{self.log(name)}")
            time.sleep(0.05)
        return p

    def log(self, name: str) -> str:
        p = self.work / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def mifsec(self, name: str, *args: str) -> subprocess.CompletedProcess:
        return sh(str(self.bin), *args, "--socket", str(self.work / f"{name}.sock"))

    def status(self, name: str) -> dict:
        return json.loads(self.mifsec(name, "status", "--json").stdout)

    def stop(self, name: str) -> None:
        p = self.daemons.pop(name)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def udp_errors(ns: str) -> dict[str, int]:
    """The namespace's UDP counters (/proc/net/snmp): datagrams the kernel dropped because a
    receiving socket's buffer was full, and all receive errors."""
    lines = [l.split() for l in sh(*in_ns(ns, "cat", "/proc/net/snmp")).stdout.splitlines()]
    udp = [l for l in lines if l and l[0] == "Udp:"]
    table = dict(zip(udp[0][1:], map(int, udp[1][1:])))
    return {"rcvbuf_errors": table["RcvbufErrors"], "in_errors": table["InErrors"]}


def softnet_dropped() -> int:
    """Packets the kernel dropped because a CPU's input backlog was full (netdev_max_backlog;
    veth delivers through it), summed over CPUs: /proc/net/softnet_stat, second column. The
    file is not per namespace: other work on the machine counts too."""
    return sum(int(l.split()[1], 16) for l in Path("/proc/net/softnet_stat").read_text().splitlines())


def drops(st: dict) -> dict[str, int]:
    """mifsec's drop counters by reason, over the engine and every SA."""
    out: dict[str, int] = {}
    for src in [st] + st.get("sas", []):
        for k, v in src.get("drops", {}).items():
            out[k] = out.get(k, 0) + v
    return {k: v for k, v in out.items() if v}


def established(st: dict) -> bool:
    return any(
        s.get("state") == "ESTABLISHED" and s.get("children") for s in st.get("ike_sas", [])
    )


def wait_established(lab: Lab, name: str, seconds: float) -> float:
    t0 = time.monotonic()
    while not established(lab.status(name)):
        if time.monotonic() - t0 > seconds:
            raise RuntimeError(f"{name} not established after {seconds} s:\n{lab.log(name)}")
        time.sleep(0.01)
    return time.monotonic() - t0


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
        gw = lab.start("gw", GW, GATEWAY)
        rekey_conn = 'rekey_time = "7s"\nrand_time = 0\nlife_time = "60s"\nstart_action = "start"'
        rekey_child = 'rekey_time = "3s"\nrand_time = 0\nlife_time = "20s"'
        lab.start("cl1", CL, client_conf("cl", CL_IF, "198.18.9.2", "198.18.9.1", rekey_conn, rekey_child))
        wait_established(lab, "cl1", 20)
        lab.start("cl2", X, client_conf("cl", X_IF, "198.18.10.2", "198.18.10.1", "", ""))
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
        # iperf3 counts a datagram that arrives after a later one as lost in its interval and
        # takes it back (a negative count, printed as an unsigned 64-bit number) later.
        signed = lambda v: v - (1 << 64) if v >= (1 << 63) else v  # noqa: E731
        lossy = [
            {"t": round(i["sum"]["start"]), "lost": signed(i["sum"]["lost_packets"])}
            for i in report["intervals"]
            if signed(i["sum"]["lost_packets"]) != 0
        ]
        return {
            "mode": mode,
            "flooder": json.loads(fl_out),
            "iperf3": {
                "mbit": args.mbit,
                "seconds": length,
                "packets": s["packets"],
                "lost": signed(s["lost_packets"]),
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
