"""The Python side of mifsec's test kit (testkit/): what the lab scripts share.

scripts/bench_ike.py and scripts/bench_flood.py import it (`sys.path` gets testkit/python).
It renders the configuration templates of testkit/templates/ by the same rules as the Rust
kit (`mifsec_testkit::template`), runs commands in namespaces, and drives mifsec daemons and
charon (through scripts/swan.sh) in a lab of namespaces. Only the standard library is used.

    python3 testkit/python/mifsec_testkit.py render TEMPLATE [NAME=VALUE ...]

prints a rendered template (the Rust kit's tests compare it with their own rendering).
"""

from __future__ import annotations

import json
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


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[1] != "render":
        sys.exit(__doc__)
    pairs = dict(a.split("=", 1) for a in sys.argv[3:])
    sys.stdout.write(render(sys.argv[2], **pairs))
