#!/usr/bin/env python3
"""IKE lab benchmark: mifsec against strongSwan 5.9 (kernel-libipsec), with strongSwan's own
figures from the same run as the reference.

    sudo scripts/bench_ike.py [--rounds N] [--rekey-seconds S] [--rate MBIT] [--only ttfp|rekey]
                              [--out FILE] [--bin PATH]

1. Time to first packet. A strongSwan gateway in one namespace; in the other, a client that
   initiates. A prober in the client namespace sends a UDP datagram to 10.88.0.1 (behind
   the gateway) every millisecond, ignoring send errors while there is no route yet; an echo
   server behind the gateway answers. The figure is the time from just before the
   initiate command is started (`mifsec ctl initiate home` or `swanctl --initiate --child net`)
   to the first echo (CLOCK_MONOTONIC is shared by all namespaces). Rounds alternate between
   the two initiators against the same responder; medians and every sample are reported.

2. Rekeys under iperf3. Child SA rekeyed every 10 s and IKE SA every 30 s (rand_time 0) for
   --rekey-seconds (120), under an iperf3 UDP stream of --rate Mbit/s (50; 1200-byte datagrams, 2 MB socket buffers
   so that iperf3's own receiver keeps up with bursts)
   from the client to 10.88.0.1: datagrams lost (iperf3's count, per second), ICV failures
   (mifsec's drop counters by reason; strongSwan's log), how many rekeys happened and when
   (new SPIs seen by polling each side every 100 ms), and how many of the lost datagrams fell
   in a second that had a rekey in it or just before it; and the UDP receive-buffer drops of
   each namespace's kernel (/proc/net/snmp RcvbufErrors: a full socket buffer, e.g. the
   receiving peer's port-4500 socket or iperf3's, not the tunnel, lost those).
   Three pairs: mifsec client rekeying against a strongSwan gateway, a strongSwan client
   rekeying against the same gateway (the reference), and mifsec against mifsec.

Writes JSON (default bench/results/ike-e2e-<date>.json) and prints a summary. Needs root,
strongSwan (scripts/swan.sh install), iperf3. Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testkit" / "python"))
import mifsec_testkit as kit  # noqa: E402  (the lab, the templates: testkit/)
from mifsec_testkit import SWAN, drops, in_ns, sh, udp_errors  # noqa: E402

CL, GW = "mfik-cl", "mfik-gw"
CL_IF, GW_IF = "mfikc", "mfikg"
ECHO_PORT = 9009


# ---------------------------------------------------------------------------------------
# The prober and the echo server run as `bench_ike.py _probe` / `_echo` inside a namespace.


def echo_main() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("10.88.0.1", ECHO_PORT))
    while True:
        data, addr = s.recvfrom(2048)
        s.sendto(data, addr)


def probe_main(timeout: float) -> None:
    """Sends every 1 ms until the first echo; prints its CLOCK_MONOTONIC time."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    print("ready", flush=True)
    end = time.monotonic() + timeout
    n = 0
    while time.monotonic() < end:
        try:
            s.sendto(n.to_bytes(8, "big"), ("10.88.0.1", ECHO_PORT))
        except OSError:
            pass  # no route to 10.88.0.0/16 before the tunnel is up
        n += 1
        r, _, _ = select.select([s], [], [], 0.001)
        if r:
            try:
                s.recvfrom(64)
            except OSError:
                continue
            print(f"{time.monotonic():.6f}", flush=True)
            return
    print("timeout", flush=True)


# ---------------------------------------------------------------------------------------
# The lab.


class Lab(kit.Lab):
    """Two namespaces joined by a veth (198.18.9.2 and .1), 10.88.0.1 behind the gateway with
    an echo server on it."""

    def __init__(self, work: Path, binary: Path):
        super().__init__(work, binary)
        self.echo: subprocess.Popen | None = None

    def up(self) -> None:
        kit.netns_add(CL, GW)
        kit.veth(CL, CL_IF, GW, GW_IF)
        kit.addr_up(CL, CL_IF, "198.18.9.2/24")
        kit.addr_up(GW, GW_IF, "198.18.9.1/24")
        sh("ip", "-n", GW, "addr", "add", "10.88.0.1/32", "dev", "lo")
        self.echo = subprocess.Popen(
            in_ns(GW, sys.executable, __file__, "_echo"), stdout=subprocess.DEVNULL
        )

    def close(self) -> None:
        super().close()
        if self.echo:
            self.echo.kill()
            self.echo.wait()
        kit.netns_del(CL, GW)


# ---------------------------------------------------------------------------------------
# Configurations: testkit/templates/, the ones the interop tests start from (mifsec with
# as many workers as it chooses here).

SWAN_GATEWAY = "swanctl-gateway.conf"
SWAN_CLIENT = "swanctl-client.conf"


def start_mifsec_client(lab: Lab, conn: str = "", child: str = "") -> None:
    lab.start_mifsec("cl", CL, "mifsec-client.toml", DATAPLANE="", DEV=CL_IF, CONN=conn,
                     CHILD=child)


def start_mifsec_gateway(lab: Lab) -> None:
    lab.start_mifsec("gw", GW, "mifsec-gateway.toml", DATAPLANE="", DEV=GW_IF)


# ---------------------------------------------------------------------------------------
# 1. Time to first packet.


def first_packet_ms(initiate: list[str]) -> float:
    probe = subprocess.Popen(
        in_ns(CL, sys.executable, __file__, "_probe", "15"),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert probe.stdout is not None
    if probe.stdout.readline().strip() != "ready":
        raise RuntimeError("prober did not start")
    t0 = time.monotonic()
    cmd = subprocess.run(initiate, text=True, capture_output=True)
    line = probe.stdout.readline().strip()
    probe.wait()
    if cmd.returncode != 0:
        raise RuntimeError(f"{' '.join(initiate)}: {cmd.stdout}{cmd.stderr}")
    if line == "timeout" or not line:
        raise RuntimeError(f"no packet through the tunnel after {' '.join(initiate)}")
    return (float(line) - t0) * 1000.0


def wait_gone(check, what: str, seconds: float = 10) -> None:
    kit.wait_until(check, seconds, f"{what} did not go away")


def bench_ttfp(lab: Lab, rounds: int) -> dict:
    """Rounds alternate: a strongSwan client, then a mifsec client (one at a time: both
    would bind ports 500 and 4500 in the client namespace); the gateway stays up."""
    lab.start_swan("gw", GW, SWAN_GATEWAY)
    swan_ms: list[float] = []
    mifsec_ms: list[float] = []
    gw_clear = lambda: "ESTABLISHED" not in lab.swanctl("gw", GW, "--list-sas").stdout  # noqa: E731
    for r in range(rounds):
        # strongSwan initiator.
        lab.start_swan("cl", CL, SWAN_CLIENT)
        ms = first_packet_ms(
            [str(SWAN), "swanctl", CL, str(lab.swans["cl"]), "--initiate", "--child", "net"]
        )
        swan_ms.append(ms)
        lab.swanctl("cl", CL, "--terminate", "--ike", "home")
        wait_gone(gw_clear, "strongSwan's IKE SA")
        lab.stop_swan("cl")
        # mifsec initiator.
        start_mifsec_client(lab)
        ms = first_packet_ms(
            [str(lab.bin), "ctl", "initiate", "home", "--socket", str(lab.sock("cl"))]
        )
        mifsec_ms.append(ms)
        lab.mifsec("cl", "ctl", "terminate", "home")
        wait_gone(gw_clear, "mifsec's IKE SA")
        lab.stop_mifsec("cl")
        print(f"  round {r + 1}: strongSwan {swan_ms[-1]:.1f} ms, mifsec {mifsec_ms[-1]:.1f} ms")
    lab.stop_swan("gw")
    return {
        "what": "ms from the initiate command to the first UDP echo through the tunnel",
        "responder": "strongSwan 5.9 kernel-libipsec",
        "strongswan_initiator_ms": swan_ms,
        "mifsec_initiator_ms": mifsec_ms,
        "strongswan_median_ms": statistics.median(swan_ms),
        "mifsec_median_ms": statistics.median(mifsec_ms),
        "mifsec_over_strongswan": statistics.median(mifsec_ms) / statistics.median(swan_ms),
    }


# ---------------------------------------------------------------------------------------
# 2. Rekeys under iperf3.

REKEY_CONN_SWAN = "    rekey_time = 30s\n    rand_time = 0\n    over_time = 10s"
REKEY_CHILD_SWAN = "        rekey_time = 10s\n        rand_time = 0\n        life_time = 20s"
REKEY_CONN_MIFSEC = 'rekey_time = "30s"\nrand_time = 0\nlife_time = "60s"'
REKEY_CHILD_MIFSEC = 'rekey_time = "10s"\nrand_time = 0\nlife_time = "20s"'


def iperf_udp(seconds: int, rate: int) -> dict:
    before = {ns: udp_errors(ns) for ns in (CL, GW)}
    server = subprocess.Popen(
        in_ns(GW, "iperf3", "-s", "-1", "-B", "10.88.0.1", "-J"),
        stdout=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.5)
    client = sh(
        *in_ns(CL, "iperf3", "-c", "10.88.0.1", "-u", "-b", f"{rate}M", "-l", "1200", "-w", "2M",
               "-t", str(seconds), "-J"),
        check=False,
    )
    out, _ = server.communicate(timeout=30)
    if client.returncode != 0:
        raise RuntimeError(f"iperf3: {client.stdout}{client.stderr}")
    rep = json.loads(out)  # the receiver's view
    s = rep["end"]["sum"]
    lost, lossy = kit.iperf_udp_loss(rep)
    after = {ns: udp_errors(ns) for ns in (CL, GW)}
    errors = {
        side: {k: after[ns][k] - before[ns][k] for k in after[ns]}
        for side, ns in (("client_ns", CL), ("gateway_ns", GW))
    }
    return {
        "udp_socket_drops": errors,
        "datagrams": s["packets"],
        "lost": lost,
        "out_of_order": s.get("out_of_order", 0),
        "seconds_with_loss": lossy,
    }


def swan_icv_failures(log: str) -> int:
    return len(re.findall(r"ICV verification failed|decryption failed", log, re.I))


class SpiWatch:
    """Polls one side's SA list every 100 ms in a thread and records when new IKE and
    child SPIs appear (a rekey), in seconds since start()."""

    def __init__(self, list_spis):
        self.list_spis = list_spis
        self.events: list[tuple[float, str]] = []
        self.stop_flag = False

    def start(self) -> None:
        import threading

        self.t0 = time.monotonic()
        self.seen_ike, self.seen_child = self.list_spis()
        self.th = threading.Thread(target=self.run, daemon=True)
        self.th.start()

    def run(self) -> None:
        while not self.stop_flag:
            try:
                ike, child = self.list_spis()
            except Exception:
                ike, child = set(), set()
            now = round(time.monotonic() - self.t0, 1)
            for spi in ike - self.seen_ike:
                self.events.append((now, "ike"))
            for spi in child - self.seen_child:
                self.events.append((now, "child"))
            self.seen_ike |= ike
            self.seen_child |= child
            time.sleep(0.1)

    def stop(self) -> dict:
        self.stop_flag = True
        self.th.join()
        return {
            "child_rekeys": sum(1 for _, k in self.events if k == "child"),
            "ike_rekeys": sum(1 for _, k in self.events if k == "ike"),
            "rekey_times_s": self.events,
        }


def mifsec_spis(lab: Lab, name: str):
    def f():
        st = lab.status(name)
        ike = {s["spi_i"] for s in st["ike_sas"]}
        child = {c["spi_in"] for s in st["ike_sas"] for c in s["children"]}
        return ike, child

    return f


def swan_spis(lab: Lab, name: str, ns: str):
    def f():
        out = lab.swanctl(name, ns, "--list-sas", check=False).stdout
        ike = set(re.findall(r"([0-9a-f]{16})_i", out))
        child = set(re.findall(r"^\s+in  ([0-9a-f]{8})", out, re.M))
        return ike, child

    return f


def near_rekey(traffic: dict, watch: dict) -> int:
    """Datagrams lost in the iperf3 seconds that contain a rekey or follow one."""
    times = [t for t, _ in watch["rekey_times_s"]]
    lost = 0
    for sec in traffic["seconds_with_loss"]:
        if any(sec["t"] - 1 <= t < sec["t"] + 1 for t in times):
            lost += sec["lost"]
    return lost


def wait_up_swan(lab: Lab, name: str, ns: str) -> None:
    kit.wait_until(
        lambda: "INSTALLED" in lab.swanctl(name, ns, "--list-sas").stdout,
        20,
        lambda: f"strongSwan {name} has no child SA:\n{lab.swan_log(name)}",
        every=0.2,
    )


def wait_up_mifsec(lab: Lab, name: str) -> None:
    kit.wait_until(
        lambda: kit.established(lab.status(name)),
        20,
        lambda: f"mifsec {name} not established:\n{lab.log(name)}",
        every=0.2,
    )


def measured(traffic: dict, watch: dict, **extra) -> dict:
    r = {**traffic, **watch, "lost_near_rekey": near_rekey(traffic, watch), **extra}
    print(
        f"    {r['lost']} of {r['datagrams']} datagrams lost ({r['lost_near_rekey']} within 1 s "
        f"of a rekey), {r['child_rekeys']} child and {r['ike_rekeys']} IKE rekeys; UDP "
        f"receive-buffer drops in the gateway namespace: "
        f"{r['udp_socket_drops']['gateway_ns']['rcvbuf_errors']}"
    )
    return r


def under_rekeys(list_spis, seconds: int, rate: int) -> tuple[dict, dict]:
    """The iperf3 stream while the rekeys are watched: what it measured, and the rekeys."""
    w = SpiWatch(list_spis)
    w.start()
    traffic = iperf_udp(seconds, rate)
    return traffic, w.stop()


def bench_rekey(lab: Lab, seconds: int, rate: int) -> dict:
    out: dict = {
        "child_rekey_s": 10,
        "ike_rekey_s": 30,
        "seconds": seconds,
        "rate_mbit_s": rate,
    }
    rekeying = (REKEY_CONN_MIFSEC + '\nstart_action = "start"', REKEY_CHILD_MIFSEC)

    # a) mifsec client rekeying against a strongSwan gateway (long lifetimes there).
    print("  mifsec client -> strongSwan gateway")
    lab.start_swan("gw", GW, SWAN_GATEWAY)
    start_mifsec_client(lab, *rekeying)
    wait_up_mifsec(lab, "cl")
    out["mifsec_client_vs_strongswan"] = measured(
        *under_rekeys(mifsec_spis(lab, "cl"), seconds, rate),
        mifsec_drops=drops(lab.status("cl")),
        strongswan_icv_failures=swan_icv_failures(lab.swan_log("gw")),
    )
    lab.stop_mifsec("cl")
    lab.stop_swan("gw")

    # b) strongSwan client rekeying against the same strongSwan gateway (the reference).
    print("  strongSwan client -> strongSwan gateway")
    lab.start_swan("gw", GW, SWAN_GATEWAY)
    lab.start_swan("cl", CL, SWAN_CLIENT, CHILD=REKEY_CHILD_SWAN, CONN=REKEY_CONN_SWAN)
    lab.swanctl("cl", CL, "--initiate", "--child", "net")
    wait_up_swan(lab, "cl", CL)
    out["strongswan_client_vs_strongswan"] = measured(
        *under_rekeys(swan_spis(lab, "cl", CL), seconds, rate),
        strongswan_icv_failures=swan_icv_failures(lab.swan_log("gw"))
        + swan_icv_failures(lab.swan_log("cl")),
    )
    lab.stop_swan("cl")
    lab.stop_swan("gw")

    # c) mifsec against mifsec, the client rekeying.
    print("  mifsec client -> mifsec gateway")
    start_mifsec_gateway(lab)
    start_mifsec_client(lab, *rekeying)
    wait_up_mifsec(lab, "cl")
    out["mifsec_client_vs_mifsec"] = measured(
        *under_rekeys(mifsec_spis(lab, "cl"), seconds, rate),
        mifsec_drops={"client": drops(lab.status("cl")), "gateway": drops(lab.status("gw"))},
    )
    lab.stop_mifsec("cl")
    lab.stop_mifsec("gw")
    return out


# ---------------------------------------------------------------------------------------


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_echo":
        echo_main()
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_probe":
        probe_main(float(sys.argv[2]))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--rekey-seconds", type=int, default=120)
    ap.add_argument("--rate", type=int, default=50, help="iperf3 UDP rate, Mbit/s")
    ap.add_argument("--only", choices=["ttfp", "rekey"])
    ap.add_argument("--out")
    ap.add_argument("--bin", help="the mifsec binary (default: cargo build --release)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_ike.py: needs root (network namespaces)", file=sys.stderr)
        return 1
    sh(str(SWAN), "install")
    if a.bin:
        binary = Path(a.bin)
    else:
        subprocess.run(
            ["cargo", "build", "--release", "--locked", "-p", "mifsec-control", "--bin", "mifsec"],
            cwd=ROOT,
            check=True,
        )
        target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
        binary = target / "release" / "mifsec"
    work = Path(tempfile.mkdtemp(prefix="mifsec-bench-ike."))
    lab = Lab(work, binary)
    result: dict = {
        "date": datetime.date.today().isoformat(),
        "load_average_start": os.getloadavg(),
    }
    try:
        lab.up()
        if a.only in (None, "ttfp"):
            print("time to first packet (strongSwan responder):")
            result["ttfp"] = bench_ttfp(lab, a.rounds)
        if a.only in (None, "rekey"):
            print(f"rekeys under iperf3 ({a.rekey_seconds} s each, three pairs):")
            result["rekey"] = bench_rekey(lab, a.rekey_seconds, a.rate)
    except Exception as e:  # report what was measured, then fail
        result["error"] = str(e)
        print(f"bench_ike.py: {e}", file=sys.stderr)
    finally:
        lab.close()
        result["load_average_end"] = os.getloadavg()
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"ike-e2e-{result['date']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    if "error" not in result:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"logs kept in {work}", file=sys.stderr)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main())
