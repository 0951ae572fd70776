"""The Python side of mifsec's test kit (testkit/): what the lab scripts share.

scripts/bench_ike.py and scripts/bench_flood.py import it (`sys.path` gets testkit/python).
It renders the configuration templates of testkit/templates/ by the same rules as the Rust
kit (`mifsec_testkit::template`), runs commands in namespaces, and drives mifsec daemons and
charon (through scripts/swan.sh) in a lab of namespaces. Only the standard library is used.

    python3 testkit/python/mifsec_testkit.py render TEMPLATE [NAME=VALUE ...]

prints a rendered template (the Rust kit's tests compare it with their own rendering);

    python3 testkit/python/mifsec_testkit.py ping DST INTERVAL LIMIT

is the roaming lab's pinger (see `pinger`), which the Rust kit's roam::PingStream runs too.
"""

from __future__ import annotations

import json
import os
import re
import signal
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TEMPLATES = ROOT / "testkit" / "templates"
SWAN = ROOT / "scripts" / "swan.sh"
# The pre-shared key of every configuration of the lab (mifsec_testkit::swan::PSK).
PSK = "interop-secret-0123456789"

_SLOT = re.compile(r"@([A-Z0-9_]+)(?:=([^@\n]*))?@")


def render(name: str, **values: str) -> str:
    """Template `name` of testkit/templates/ with `values` put in. A placeholder is `@NAME@`
    (a value must be given) or `@NAME=default@`; a name the template lacks, or a placeholder
    left without a value, is an error; a line holding only a placeholder that renders empty
    is left out."""
    text = (TEMPLATES / name).read_text()
    names = {m.group(1) for m in _SLOT.finditer(text)}
    unknown = set(values) - names
    if unknown:
        raise KeyError(f"{name}: no placeholder {sorted(unknown)} (it has {sorted(names)})")

    def value(m: re.Match) -> str:
        key, default = m.group(1), m.group(2)
        if key in values:
            return str(values[key])
        if default is None:
            raise KeyError(f"{name}: no value for @{key}@")
        return default

    out = []
    for line in text.splitlines(keepends=True):
        slots = list(_SLOT.finditer(line))
        done = _SLOT.sub(value, line)
        alone = len(slots) == 1 and line.strip() == slots[0].group(0)
        if alone and not done.strip():
            continue
        out.append(done)
    return "".join(out)


def wait_until(cond, seconds: float, what, every: float = 0.1) -> float:
    """Polls `cond` every `every` seconds until it holds; returns the seconds that took.
    After `seconds`, raises RuntimeError with `what` (a string, or a function giving one:
    the state seen, the logs)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > seconds:
            raise RuntimeError(what() if callable(what) else what)
        time.sleep(every)
    return time.monotonic() - t0


def sh(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), check=check, text=True, capture_output=True, **kw)


def in_ns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


def veth(a_ns: str, a_dev: str, b_ns: str, b_dev: str) -> None:
    """A veth pair: `a_dev` in namespace `a_ns`, its peer `b_dev` in `b_ns`."""
    sh("ip", "link", "add", a_dev, "netns", a_ns, "type", "veth", "peer", "name", b_dev,
       "netns", b_ns)


def addr_up(ns: str, dev: str, cidr: str) -> None:
    sh("ip", "-n", ns, "addr", "add", cidr, "dev", dev)
    sh("ip", "-n", ns, "link", "set", dev, "up")


def netns_add(*names: str) -> None:
    """Creates the namespaces (deleting any left from an earlier run), loopback up."""
    netns_del(*names)
    for ns in names:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")


def netns_del(*names: str) -> None:
    for ns in names:
        sh("ip", "netns", "del", ns, check=False)


def udp_errors(ns: str) -> dict[str, int]:
    """The namespace's UDP error counters (/proc/net/snmp): datagrams the kernel dropped
    because a receiving socket's buffer was full, and all receive errors."""
    lines = [l.split() for l in sh(*in_ns(ns, "cat", "/proc/net/snmp")).stdout.splitlines()]
    udp = [l for l in lines if l and l[0] == "Udp:"]
    table = dict(zip(udp[0][1:], map(int, udp[1][1:])))
    return {"rcvbuf_errors": table["RcvbufErrors"], "in_errors": table["InErrors"]}


def drops(st: dict) -> dict[str, int]:
    """mifsec's drop counters by reason, over the engine and every SA."""
    out: dict[str, int] = {}
    for src in [st] + st.get("sas", []):
        for k, v in src.get("drops", {}).items():
            out[k] = out.get(k, 0) + v
    return {k: v for k, v in out.items() if v}


def established(st: dict) -> bool:
    """Whether a mifsec status shows an established IKE SA with an installed child."""
    return any(
        s.get("state") == "ESTABLISHED" and s.get("children") for s in st.get("ike_sas", [])
    )


def iperf_udp_loss(report: dict) -> tuple[int, list[dict]]:
    """An iperf3 UDP receiver's report: datagrams lost in all, and the seconds with loss.
    iperf3 counts a datagram that arrives after a later one as lost in its interval, and
    takes it back (a negative count, printed as an unsigned 64-bit number) when it comes."""
    signed = lambda v: v - (1 << 64) if v >= (1 << 63) else v  # noqa: E731
    lossy = [
        {"t": round(i["sum"]["start"]), "lost": signed(i["sum"]["lost_packets"])}
        for i in report["intervals"]
        if signed(i["sum"]["lost_packets"]) != 0
    ]
    return signed(report["end"]["sum"]["lost_packets"]), lossy


class Lab:
    """mifsec daemons and charons in namespaces, with their files in `work`; a script's
    subclass builds the namespaces."""

    def __init__(self, work: Path, binary: Path):
        self.work = work
        self.bin = binary
        self.daemons: dict[str, subprocess.Popen] = {}
        self.swans: dict[str, Path] = {}

    def close(self) -> None:
        for name in list(self.daemons):
            self.stop_mifsec(name)
        for name in list(self.swans):
            self.stop_swan(name)

    # strongSwan -------------------------------------------------------------------------

    def start_swan(self, name: str, ns: str, template: str, **values: str) -> None:
        """charon in `ns` with swanctl.conf rendered from `template`, loaded."""
        d = self.work / f"swan-{name}"
        shutil.rmtree(d, ignore_errors=True)
        (d / "swanctl").mkdir(parents=True)
        (d / "swanctl" / "swanctl.conf").write_text(render(template, PSK=PSK, **values))
        sh(str(SWAN), "start", ns, str(d))
        sh(str(SWAN), "load", ns, str(d))
        self.swans[name] = d

    def swanctl(self, name: str, ns: str, *args: str, check: bool = True):
        return sh(str(SWAN), "swanctl", ns, str(self.swans[name]), *args, check=check)

    def swan_log(self, name: str) -> str:
        p = self.swans[name] / "charon.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop_swan(self, name: str) -> None:
        d = self.swans.pop(name)
        sh(str(SWAN), "stop", str(d), check=False)

    # mifsec -----------------------------------------------------------------------------

    def sock(self, name: str) -> Path:
        return self.work / f"{name}.sock"

    def start_mifsec(self, name: str, ns: str, template: str, **values: str) -> subprocess.Popen:
        """`mifsec run` in `ns` with the configuration rendered from `template` (its control
        socket put in); returns once the socket exists."""
        cfg = self.work / f"{name}.toml"
        sock = self.sock(name)
        # A daemon that dropped root cannot remove its socket from this directory: a stale
        # one must not pass for the new daemon's.
        sock.unlink(missing_ok=True)
        cfg.write_text(render(template, PSK=PSK, SOCK=str(sock), **values))
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

    def mifsec(self, name: str, *args: str, check: bool = True):
        return sh(str(self.bin), *args, "--socket", str(self.sock(name)), check=check)

    def status(self, name: str) -> dict:
        return json.loads(self.mifsec(name, "status", "--json").stdout)

    def log(self, name: str) -> str:
        p = self.work / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def stop_mifsec(self, name: str) -> None:
        p = self.daemons.pop(name)
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()



_SLIM_PATH = ("name", "interface", "local", "remote", "role", "state", "rtt_ms", "loss_pct",
              "tx_bytes", "rx_bytes", "tx_packets", "rx_packets")


def slim_status(st: dict) -> dict:
    """What scripts/plot.py reads of a status: the engine SAs' names and paths, and which
    IKE child each SA is."""
    return {
        "uptime_s": st.get("uptime_s"),
        "sas": [{"name": sa.get("name"), "spi_in": sa.get("spi_in"),
                 "paths": [{k: p.get(k) for k in _SLIM_PATH} for p in sa.get("paths") or []]}
                for sa in st.get("sas") or []],
        "ike_sas": [{"name": i.get("name"), "id": i.get("id"), "state": i.get("state"),
                     "children": [{"name": c.get("name"), "sa": c.get("sa")}
                                  for c in i.get("children") or []]}
                    for i in st.get("ike_sas") or []],
    }


def gzip_to(src: Path, dst: Path) -> Path:
    """`src` compressed into `dst` (samples beside a benchmark's results)."""
    import gzip

    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as f, gzip.open(dst, "wb", compresslevel=6) as g:
        shutil.copyfileobj(f, g)
    return dst


class StatusSampler:
    """Samples `mifsec status --json` of the daemon at `sock` into `out`, one JSON line per
    sample with a top-level "t" (Unix time, float seconds): the input of scripts/plot.py.

    With a binary whose `status` has `--watch`, one `status --watch --json --interval`
    process writes the lines; otherwise a thread runs `status --json` `hz` times a second.
    Either way it stops by itself after `limit` seconds (every load loop bounded), or at
    `stop()`; a sample the daemon does not answer is left out. `slim` (polling only) keeps
    what plot.py reads and drops the rest ([`slim_status`]): a status of 50 children is
    some 200 kB, its slim form a quarter of it."""

    def __init__(self, binary: Path, sock: Path, out: Path, hz: float = 10.0,
                 limit: float = 600.0, slim: bool = False):
        import threading

        self.slim = slim

        self.bin, self.sock, self.out = Path(binary), Path(sock), Path(out)
        self.interval = 1.0 / max(0.1, min(hz, 50.0))
        self.limit = limit
        self.samples = 0
        self._stop = threading.Event()
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None
        self._file = None
        self._threading = threading

    def _has_watch(self) -> bool:
        if self.slim:
            return False
        r = sh(str(self.bin), "status", "--help", check=False)
        return "--watch" in r.stdout + r.stderr

    def start(self) -> "StatusSampler":
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.out, "w")
        if self._has_watch():
            self._proc = subprocess.Popen(
                [str(self.bin), "status", "--watch", "--json", "--interval",
                 f"{self.interval:.3f}", "--socket", str(self.sock)],
                stdin=subprocess.DEVNULL, stdout=self._file, stderr=subprocess.DEVNULL)
            self._thread = self._threading.Thread(target=self._deadline, daemon=True)
        else:
            self._thread = self._threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _deadline(self) -> None:
        self._stop.wait(self.limit)
        self._end_proc()

    def _end_proc(self) -> None:
        p = self._proc
        if p is not None and p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def _poll(self) -> None:
        end = time.monotonic() + self.limit
        nxt = time.monotonic()
        while not self._stop.is_set() and time.monotonic() < end:
            r = subprocess.run([str(self.bin), "status", "--json", "--socket", str(self.sock)],
                               capture_output=True, text=True)
            t = time.time()
            if r.returncode == 0:
                try:
                    st = json.loads(r.stdout)
                except ValueError:
                    st = None
                if isinstance(st, dict):
                    if self.slim:
                        st = slim_status(st)
                    st["t"] = t
                    self._file.write(json.dumps(st, separators=(",", ":")) + "\n")
                    self._file.flush()
                    self.samples += 1
            nxt += self.interval
            self._stop.wait(max(0.0, nxt - time.monotonic()))

    def stop(self) -> Path:
        """Ends the sampling; returns the samples file."""
        self._stop.set()
        self._end_proc()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._proc is not None:
            self.samples = sum(1 for line in open(self.out) if line.strip())
        return self.out


# The roaming lab (mifsec_testkit::roam in the Rust kit: the same names and addresses) ----

# The client's links: (device, address, middle device, middle address, route metric,
# routing table and rule priority for packets from the address).
ROAM_LINKS = [
    ("rl1", "198.18.21.2", "m1", "198.18.21.1", "100", "101"),
    ("rl2", "198.18.22.2", "m2", "198.18.22.1", "200", "102"),
]
ROAM_PREFIX = "24"
ROAM_GW_DEV = "rg"
ROAM_GW_ADDRS = ["198.18.20.10", "198.18.20.11"]
ROAM_GW_NET = "198.18.20.0/24"
ROAM_MID_GW = ("mg", "198.18.20.1")
ROAM_INNER = "10.88.0.1"


class RoamLab(Lab):
    """A client with two links through a middle router to a gateway with two addresses
    (see testkit/src/roam.rs for the picture). Namespaces `PREFIX-cl`, `-mid`, `-gw`."""

    def __init__(self, work: Path, binary: Path, prefix: str = "mfrb"):
        super().__init__(work, binary)
        self.cl, self.mid, self.gw = f"{prefix}-cl", f"{prefix}-mid", f"{prefix}-gw"

    def up(self) -> None:
        netns_add(self.cl, self.mid, self.gw)
        for dev, addr, mdev, maddr, _, _ in ROAM_LINKS:
            veth(self.cl, dev, self.mid, mdev)
            addr_up(self.cl, dev, f"{addr}/{ROAM_PREFIX}")
            addr_up(self.mid, mdev, f"{maddr}/{ROAM_PREFIX}")
        mdev, maddr = ROAM_MID_GW
        veth(self.mid, mdev, self.gw, ROAM_GW_DEV)
        addr_up(self.mid, mdev, f"{maddr}/{ROAM_PREFIX}")
        for a in ROAM_GW_ADDRS:
            addr_up(self.gw, ROAM_GW_DEV, f"{a}/{ROAM_PREFIX}")
        sh("ip", "-n", self.gw, "route", "add", "default", "via", maddr)
        sh("ip", "-n", self.gw, "addr", "add", f"{ROAM_INNER}/32", "dev", "lo")
        sh(*in_ns(self.mid, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        for i, link in enumerate(ROAM_LINKS):
            sh("ip", "-n", self.cl, "rule", "add", "from", link[1], "table", link[5],
               "priority", link[5])
            self.route_to_gateway(i)

    def down(self) -> None:
        self.close()
        netns_del(self.cl, self.mid, self.gw)

    def route_to_gateway(self, i: int) -> None:
        dev, _, _, maddr, metric, table = ROAM_LINKS[i]
        sh("ip", "-n", self.cl, "route", "replace", ROAM_GW_NET, "via", maddr, "dev", dev,
           "metric", metric)
        sh("ip", "-n", self.cl, "route", "replace", ROAM_GW_NET, "via", maddr, "dev", dev,
           "table", table)

    def delete_address(self, i: int) -> None:
        dev, addr = ROAM_LINKS[i][:2]
        sh("ip", "-n", self.cl, "addr", "del", f"{addr}/{ROAM_PREFIX}", "dev", dev)

    def restore_address(self, i: int) -> None:
        dev, addr = ROAM_LINKS[i][:2]
        sh("ip", "-n", self.cl, "addr", "add", f"{addr}/{ROAM_PREFIX}", "dev", dev)
        self.route_to_gateway(i)

    def blackhole(self, addr: str, on: bool = True) -> None:
        """Silently discards everything to `addr` in the middle namespace (or stops)."""
        sh("ip", "-n", self.mid, "route", "add" if on else "del", "blackhole", f"{addr}/32")

    def tx_packets(self, i: int) -> int:
        out = sh("ip", "-n", self.cl, "-j", "-s", "link", "show", "dev", ROAM_LINKS[i][0])
        return json.loads(out.stdout)[0]["stats64"]["tx"]["packets"]

    def active_link(self, window: float = 0.3) -> int | None:
        """The link the client's traffic leaves on (the one whose tx counter grows most over
        `window` seconds), or None if neither sent anything."""
        before = [self.tx_packets(i) for i in range(len(ROAM_LINKS))]
        time.sleep(window)
        grew = [self.tx_packets(i) - b for i, b in enumerate(before)]
        best = max(range(len(grew)), key=lambda i: grew[i])
        return best if grew[best] > 0 else None


# The multi-interface lab (mifsec_testkit::mif in the Rust kit: the same names and
# addresses; the picture is in testkit/src/mif.rs) ----------------------------------------

# (device, address, middle device, middle address, route metric, table and rule priority)
MIF_CLIENT_LINKS = [
    ("c1", "198.18.33.2", "m1", "198.18.33.1", "100", "101"),
    ("c2", "198.18.34.2", "m2", "198.18.34.1", "200", "102"),
]
MIF_GATEWAY_LINKS = [
    ("g1", "198.18.41.2", "n1", "198.18.41.1", "100", "101"),
    ("g2", "198.18.42.2", "n2", "198.18.42.1", "200", "102"),
]
MIF_PREFIX = "24"
MIF_CLIENT_ROUTES = "198.18.40.0/21"
MIF_GATEWAY_ROUTES = "198.18.32.0/21"


def mif_children(n: int, extra: str = "") -> str:
    """The client's child sections (mif::children_sections): child i is 10.50.i.1/32 <->
    10.60.i.1/32."""
    return "".join(
        f'[connections.mif.children.c{i}]\nlocal_ts = ["10.50.{i}.1/32"]\n'
        f'remote_ts = ["10.60.{i}.1/32"]\nesp_proposals = ["aes128gcm16"]\n{extra}\n'
        for i in range(n))


class MifLab(Lab):
    """Two mifsec peers, links c1, c2 (client) and g1, g2 (gateway) through a middle router,
    every address pair a path; namespaces `PREFIX-cl`, `-mid`, `-gw`; daemons "cl", "gw"."""

    def __init__(self, work: Path, binary: Path, prefix: str = "mfmb"):
        super().__init__(work, binary)
        self.cl, self.mid, self.gw = f"{prefix}-cl", f"{prefix}-mid", f"{prefix}-gw"

    def ns(self, side: str) -> str:
        return self.cl if side == "cl" else self.gw

    @staticmethod
    def links(side: str):
        return MIF_CLIENT_LINKS if side == "cl" else MIF_GATEWAY_LINKS

    def up(self, children: int) -> None:
        netns_add(self.cl, self.mid, self.gw)
        for side in ("cl", "gw"):
            for dev, addr, mdev, maddr, _, _ in self.links(side):
                veth(self.ns(side), dev, self.mid, mdev)
                addr_up(self.ns(side), dev, f"{addr}/{MIF_PREFIX}")
                addr_up(self.mid, mdev, f"{maddr}/{MIF_PREFIX}")
        sh(*in_ns(self.mid, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        for side, net in (("cl", "10.50"), ("gw", "10.60")):
            if children:
                batch = self.work / f"addrs-{side}.batch"
                batch.write_text("".join(f"addr add {net}.{i}.1/32 dev lo\n"
                                         for i in range(children)))
                sh("ip", "-n", self.ns(side), "-batch", str(batch))
            for i, link in enumerate(self.links(side)):
                sh("ip", "-n", self.ns(side), "rule", "add", "from", link[1], "table", link[5],
                   "priority", link[5])
                self.route_across(side, i)

    def down(self) -> None:
        self.close()
        netns_del(self.cl, self.mid, self.gw)

    def route_across(self, side: str, i: int) -> None:
        dev, _, _, maddr, metric, table = self.links(side)[i]
        net = MIF_CLIENT_ROUTES if side == "cl" else MIF_GATEWAY_ROUTES
        for key, value in (("metric", metric), ("table", table)):
            sh("ip", "-n", self.ns(side), "route", "replace", net, "via", maddr, "dev", dev,
               key, value)

    def shape(self, side: str, i: int, mbit: int) -> None:
        """tbf at `mbit` Mbit/s both ways on link `i` of `side`, in the middle (as
        MifLab::shape: towards the end on its device, from the end on an IFB device)."""
        mdev = self.links(side)[i][2]
        ifb = f"ifb{mdev}"
        burst = max(mbit * 1_000_000 // 8 // 100, 32 * 1024)
        if sh("ip", "-n", self.mid, "link", "show", ifb, check=False).returncode != 0:
            sh("ip", "-n", self.mid, "link", "add", ifb, "type", "ifb")
            sh("ip", "-n", self.mid, "link", "set", ifb, "up")
            sh("tc", "-n", self.mid, "qdisc", "add", "dev", mdev, "handle", "ffff:", "ingress")
            sh("tc", "-n", self.mid, "filter", "add", "dev", mdev, "parent", "ffff:", "protocol",
               "all", "u32", "match", "u32", "0", "0", "action", "mirred", "egress", "redirect", "dev", ifb)
        for d in (mdev, ifb):
            sh("tc", "-n", self.mid, "qdisc", "replace", "dev", d, "root", "tbf", "rate",
               f"{mbit}mbit", "burst", str(burst), "latency", "20ms")

    def delete_address(self, side: str, i: int) -> None:
        dev, addr = self.links(side)[i][:2]
        sh("ip", "-n", self.ns(side), "addr", "del", f"{addr}/{MIF_PREFIX}", "dev", dev)

    def restore_address(self, side: str, i: int) -> None:
        dev, addr = self.links(side)[i][:2]
        sh("ip", "-n", self.ns(side), "addr", "add", f"{addr}/{MIF_PREFIX}", "dev", dev)
        self.route_across(side, i)

    def blackhole(self, side: str, i: int, on: bool = True) -> None:
        """Silently discards everything to and from link `i`'s address in the middle."""
        host = f"{self.links(side)[i][1]}/32"
        verb = "add" if on else "del"
        sh("ip", "-n", self.mid, "route", verb, "blackhole", host)
        sh("ip", "-n", self.mid, "rule", verb, "from", host, "blackhole", "priority", "10")

    def tx_packets(self, side: str, i: int) -> int:
        out = sh("ip", "-n", self.ns(side), "-j", "-s", "link", "show", "dev",
                 self.links(side)[i][0])
        return json.loads(out.stdout)[0]["stats64"]["tx"]["packets"]

    def start_pair(self, children: int, conn: str = "", child: str = "", gw_conn: str = "",
                   gw_child: str = "") -> None:
        self.start_mifsec("gw", self.gw, "mifsec-mif-gateway.toml", CONN=gw_conn,
                          CHILD=gw_child)
        self.start_mifsec("cl", self.cl, "mifsec-mif-client.toml", CONN=conn,
                          CHILDREN=mif_children(children, child))


def installed_children(st: dict) -> int | None:
    """Installed children of the only established IKE SA (None unless there is one)."""
    ikes = st.get("ike_sas", [])
    if len(ikes) != 1 or ikes[0].get("state") != "ESTABLISHED":
        return None
    return sum(1 for c in ikes[0].get("children", []) if c.get("state") == "INSTALLED")


def tx_from(st: dict, addr: str) -> int:
    """Packets the engine sent on paths whose local address is `addr`, over every SA."""
    return sum(p.get("tx_packets", 0) for sa in st.get("sas", []) for p in sa.get("paths", [])
               if str(p.get("local", "")).startswith(f"{addr}:"))


# Capture counting (mifsec_testkit::capture) ------------------------------------------------

EXCHANGES = {34: "IKE_SA_INIT", 35: "IKE_AUTH", 36: "CREATE_CHILD_SA", 37: "INFORMATIONAL"}


class Capture:
    """tcpdump -i any in `ns` for UDP 500 and 4500 into `path` (packets written as they
    come); returns once it listens."""

    def __init__(self, ns: str, path: Path, filt: str = "udp port 500 or udp port 4500"):
        self.path = path
        self.err = path.with_suffix(".tcpdump.log")
        self.p = subprocess.Popen(
            in_ns(ns, "tcpdump", "-i", "any", "-n", "-U", "--immediate-mode", "-Z", "root", "-s", "2048", "-w",
                  str(path), filt),
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(self.err, "w"))
        wait_until(lambda: "listening on" in self.err.read_text(errors="replace")
                   or self.p.poll() is not None, 30, "tcpdump did not start", 0.02)
        if self.p.poll() is not None:
            raise RuntimeError(f"tcpdump exited: {self.err.read_text()}")

    def stop(self) -> list[dict]:
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        try:
            self.p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        return ike_messages(self.path)


def _tshark(path: Path, filt: str, *fields: str) -> list[list[str]]:
    args = ["tshark", "-r", str(path), "-n", "-Y", filt, "-T", "fields", "-E", "separator=|"]
    for f in fields:
        args += ["-e", f]
    out = sh(*args, env={**os.environ, "HOME": "/tmp"})
    return [l.split("|") for l in out.stdout.splitlines()]


def ike_messages(path: Path) -> list[dict]:
    """The IKE messages of a pcap (as capture::ike_messages): time, addresses, ports,
    exchange type, response and initiator flags, message ID."""
    out = []
    for f in _tshark(path, "isakmp", "frame.time_epoch", "ip.src", "ip.dst", "udp.srcport",
                     "udp.dstport", "isakmp.exchangetype", "isakmp.flag_r", "isakmp.flag_i",
                     "isakmp.messageid", "isakmp.nextpayload"):
        first = [x.split(",")[0].strip() for x in f]
        if len(first) < 10 or not first[5]:
            continue
        flag = lambda v: v in ("1", "True", "true")  # noqa: E731
        out.append({"at": float(first[0]), "src": first[1], "dst": first[2],
                    "sport": int(first[3]), "dport": int(first[4]),
                    "exchange": int(first[5], 0), "response": flag(first[6]),
                    "initiator": flag(first[7]), "message_id": int(first[8], 0),
                    "fragment": first[9] == "53"})
    return out


def tally(msgs: list[dict], t0: float, t1: float) -> dict[str, int]:
    """Messages between t0 and t1 by exchange and direction ("INFORMATIONAL request")."""
    out: dict[str, int] = {}
    for m in msgs:
        if t0 <= m["at"] <= t1:
            k = f"{EXCHANGES.get(m['exchange'], m['exchange'])} " + \
                ("response" if m["response"] else "request")
            out[k] = out.get(k, 0) + 1
    return out


def first_esp_from(path: Path, src: str, t: float) -> float | None:
    """When the first ESP-in-UDP packet from `src` at or after `t` was captured."""
    rows = _tshark(path, f"esp && ip.src == {src} && frame.time_epoch >= {t:.6f}",
                   "frame.time_epoch")
    return float(rows[0][0]) if rows and rows[0][0] else None


def pinger(dst: str, interval: float, limit: float) -> None:
    """Echo requests to `dst` every `interval` seconds on a fixed schedule (a request that
    is late goes at once, the next ones keep the schedule; no burst to catch up) for at most
    `limit` seconds or until SIGINT/SIGTERM. One line per reply as it comes, `reply SEQ
    SENT ARRIVED` (seq from 1, times in seconds since the epoch, time.time()'s clock),
    flushed at once; at the end `sent N`. A raw ICMP socket: needs root (or CAP_NET_RAW)."""
    import select
    import socket
    import struct

    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(1))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.setblocking(False)
    ident = os.getpid() & 0xFFFF
    sent: dict[int, float] = {}
    seen: set[int] = set()
    n = 0

    def csum(b: bytes) -> int:
        if len(b) % 2:
            b += b"\0"
        t = sum(struct.unpack(f"!{len(b) // 2}H", b))
        t = (t >> 16) + (t & 0xFFFF)
        t += t >> 16
        return ~t & 0xFFFF

    start = time.monotonic()
    nxt = start
    while not stop and time.monotonic() - start < limit:
        now = time.monotonic()
        if now >= nxt:
            n += 1
            payload = n.to_bytes(8, "big") + bytes(48)
            hdr = struct.pack("!BBHHH", 8, 0, 0, ident, n & 0xFFFF)
            pkt = struct.pack("!BBHHH", 8, 0, csum(hdr + payload), ident, n & 0xFFFF) + payload
            sent[n] = time.time()
            try:
                s.sendto(pkt, (dst, 0))
            except OSError:
                pass  # no route for now: counted as sent, never answered
            nxt += interval
            if nxt < now:
                nxt = now + interval
        try:
            ready, _, _ = select.select([s], [], [], max(0.0, nxt - time.monotonic()))
        except InterruptedError:
            continue
        while ready:
            try:
                data = s.recv(2048)
            except (BlockingIOError, InterruptedError):
                break
            arrived = time.time()
            ihl = (data[0] & 0x0F) * 4
            icmp = data[ihl:]
            if len(icmp) < 16 or icmp[0] != 0 or struct.unpack("!H", icmp[4:6])[0] != ident:
                continue
            seq = int.from_bytes(icmp[8:16], "big")
            if seq in sent and seq not in seen:
                seen.add(seq)
                print(f"reply {seq} {sent[seq]:.6f} {arrived:.6f}", flush=True)
    print(f"sent {n}", flush=True)


def ping_replies(out: str) -> list[tuple[int, float, float]]:
    """(seq, arrival, departure) of each reply in a pinger's output, in order of arrival."""
    replies = []
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[0] == "reply":
            replies.append((int(f[1]), float(f[3]), float(f[2])))
    return replies


class PingStream:
    """The pinger (`mifsec_testkit.py ping`: 100 echo requests/s on a fixed schedule) in a
    namespace, its output in a file that is read while it runs (the Rust kit's
    roam::PingStream starts the same program)."""

    def __init__(self, ns: str, dst: str, path: Path, limit: int = 300):
        self.path = path
        self.out = open(path, "w")
        self.p = subprocess.Popen(
            in_ns(ns, sys.executable, str(Path(__file__).resolve()), "ping", dst, "0.01",
                  str(limit)),
            stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.DEVNULL)

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def replies(self):
        return ping_replies(self.text())

    def answered_after(self, t: float):
        """The first reply to a request that left after `t`, or None."""
        return next((r for r in self.replies() if r[2] > t), None)

    def stop(self) -> dict:
        """Stops it; returns the requests sent and the replies."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGINT)
        self.p.wait()
        self.out.close()
        text = self.text()
        m = re.search(r"^sent (\d+)$", text, re.M)
        replies = ping_replies(text)
        return {"transmitted": int(m.group(1)) if m else max((r[0] for r in replies), default=0),
                "replies": replies}

if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "ping":
        pinger(sys.argv[2], float(sys.argv[3]), float(sys.argv[4]))
        sys.exit(0)
    if len(sys.argv) < 3 or sys.argv[1] != "render":
        sys.exit(__doc__)
    pairs = dict(a.split("=", 1) for a in sys.argv[3:])
    sys.stdout.write(render(sys.argv[2], **pairs))
