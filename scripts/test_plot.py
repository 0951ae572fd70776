#!/usr/bin/env python3
"""The test of scripts/plot.py (scripts/test.sh runs it; needs root and matplotlib):

    sudo scripts/test_plot.py [--bin target/debug/mifsec] [--keep]

1. events and rates from made-up samples: a role change is a handover, a path gone from a
   live SA a removal, up -> down a failure, a rekey (new engine SA of the same child) no
   event and no negative rate;
2. without matplotlib, plot.py prints a note and exits 0;
3. a short real run: two mifsec daemons of the multi-interface lab (one child SA over the
   2 x 2 paths), a ping stream through it, samples of the client's `status --json` at 20 Hz
   (testkit's StatusSampler), `ctl mif mif remove c2` and `ctl mif mif add c2` in between;
   plot.py turns the samples into PREFIX-throughput.png and PREFIX-rtt.png, which must be
   PNG images matplotlib can read back with a plausible size, and the events derived must
   hold the removal and the addition.

Every wait has a deadline. Ends with "plot: N passed, M failed".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testkit" / "python"))
sys.path.insert(0, str(ROOT / "scripts"))
import mifsec_testkit as kit  # noqa: E402
import plot  # noqa: E402


def sample(t: float, paths: list[tuple[str, str, str, int]], sa: str = "mif-c0-aaaa") -> dict:
    return {
        "t": t,
        "sas": [{"name": sa, "paths": [
            {"name": n, "role": r, "state": s, "tx_bytes": b, "rx_bytes": b // 2,
             "rtt_ms": 1.5} for n, r, s, b in paths]}],
        "ike_sas": [{"name": "mif", "children": [{"name": "c0", "sa": sa}]}],
    }


def test_derivation() -> None:
    s = [
        sample(0.0, [("p1", "active", "up", 0), ("p2", "standby", "up", 0)]),
        sample(0.5, [("p1", "active", "up", 125_000), ("p2", "standby", "up", 0)]),
        # handover: p1 -> standby, p2 -> active
        sample(1.0, [("p1", "standby", "up", 125_000), ("p2", "active", "up", 62_500)]),
        # p2 fails
        sample(1.5, [("p1", "standby", "up", 125_000), ("p2", "active", "down", 62_500)]),
        # p1 removed, p2 back up
        sample(2.0, [("p2", "active", "up", 62_500)]),
        # rekey: a new engine SA of the same child, counters from zero: no event, no rate
        sample(2.5, [("p2", "active", "up", 10)], sa="mif-c0-bbbb"),
        sample(3.0, [("p2", "active", "up", 10), ("p3", "active", "up", 0)], sa="mif-c0-bbbb"),
        # p2 and p3 replaced by p4 (a move between interfaces): one handover
        sample(3.5, [("p4", "active", "up", 0)], sa="mif-c0-bbbb"),
    ]
    kinds = [(e["kind"], e["path"], e["t"]) for e in plot.events(s)]
    want = [("handover", "p1", 1.0), ("handover", "p2", 1.0), ("failure", "p2", 1.5),
            ("recovered", "p2", 2.0), ("removed", "p1", 2.0), ("added", "p3", 3.0),
            ("handover", "p2,p3 -> p4", 3.5)]
    assert kinds == want, kinds
    m = plot.markers(plot.events(s))
    assert [(x["kind"], x["count"]) for x in m] == [
        ("handover", 2), ("failure", 1), ("recovered", 1), ("removed", 1), ("added", 1),
        ("handover", 1)], m
    r = plot.rates(s, "sa", window=0.5)
    p1 = r["mif/c0/p1"]
    assert p1["t"][0] == 0.5 and abs(p1["tx"][0] - 2.0) < 1e-9, p1  # 125 kB in 0.5 s
    assert all(x >= 0 for k in r for x in r[k]["tx"]), r
    assert abs(r["mif/c0/p2"]["rtt"][0] - 1.5) < 1e-9
    # A torn last line (a killed sampler) is skipped.
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "s.jsonl"
        f.write_text("".join(json.dumps(x) + "\n" for x in s) + '{"t": 3.5, "sas": [')
        assert len(plot.load_samples(f)) == len(s)


def test_without_matplotlib() -> None:
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "matplotlib.py").write_text("raise ImportError('hidden for the test')\n")
        f = Path(d) / "s.jsonl"
        f.write_text(json.dumps(sample(0, [])) + "\n" + json.dumps(sample(1, [])) + "\n")
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot.py"), str(f)],
                           env=dict(os.environ, PYTHONPATH=d), capture_output=True, text=True)
        assert r.returncode == 0, r
        assert "matplotlib is not installed" in r.stdout, r
        assert not list(Path(d).glob("*.png"))


def paths_over(st: dict, addr: str) -> int:
    return sum(1 for _, p in sa_paths(st) if str(p.get("local", "")).startswith(addr + ":"))


def sa_paths(st: dict):
    for sa in st.get("sas") or []:
        for p in sa.get("paths") or []:
            yield sa.get("name"), p


def test_real_run(binary: Path, keep: bool) -> None:
    import matplotlib.image

    work = Path(tempfile.mkdtemp(prefix="mifsec-plot."))
    os.chmod(work, 0o711)
    lab = kit.MifLab(work, binary, prefix="mfpl")
    ping = None
    sampler = None
    try:
        lab.up(1)
        lab.start_pair(1, conn="mif = true", gw_conn="mif = true")
        c2 = kit.MIF_CLIENT_LINKS[1][1]
        kit.wait_until(lambda: paths_over(lab.status("cl"), c2) == 2, 30,
                       lambda: f"2 paths over c2: {lab.status('cl')}")
        sampler = kit.StatusSampler(binary, lab.sock("cl"), work / "run.jsonl", hz=20,
                                    limit=60).start()
        ping = subprocess.Popen(kit.in_ns(lab.cl, "ping", "-q", "-i", "0.01", "-s", "1000",
                                          "-c", "3000", "-I", "10.50.0.1", "10.60.0.1"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = sum(p.get("tx_bytes", 0) for _, p in sa_paths(lab.status("cl")))
        kit.wait_until(lambda: sum(p.get("tx_bytes", 0) for _, p in sa_paths(lab.status("cl")))
                       > base + 100_000, 20, "100 kB through the child")
        lab.mifsec("cl", "ctl", "mif", "mif", "remove", "c2")
        kit.wait_until(lambda: paths_over(lab.status("cl"), c2) == 0, 20, "c2's paths removed")
        n = sampler.out.read_text().count("\n")
        kit.wait_until(lambda: sampler.out.read_text().count("\n") >= max(30, n + 10), 20,
                       "10 samples after the removal")
        lab.mifsec("cl", "ctl", "mif", "mif", "add", "c2")
        kit.wait_until(lambda: paths_over(lab.status("cl"), c2) == 2, 20, "c2's paths back")
        n = sampler.out.read_text().count("\n")
        kit.wait_until(lambda: sampler.out.read_text().count("\n") >= n + 10, 20,
                       "10 more samples")
        out = sampler.stop()
        sampler = None
        samples = plot.load_samples(out)
        assert len(samples) >= 40, len(samples)
        kinds = {e["kind"] for e in plot.events(samples)}
        assert {"removed", "added"} <= kinds, kinds
        r = subprocess.run([sys.executable, str(ROOT / "scripts" / "plot.py"), str(out),
                            "--out-dir", str(work / "png"), "--prefix", "run"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r
        print(r.stdout, end="")
        for name in ("run-throughput.png", "run-rtt.png"):
            p = work / "png" / name
            assert p.exists(), r.stdout
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
            img = matplotlib.image.imread(p)
            h, w = img.shape[:2]
            assert w >= 600 and h >= 300, (name, img.shape)
        if keep:
            print(f"kept {work}")
    finally:
        if sampler is not None:
            sampler.stop()
        if ping is not None and ping.poll() is None:
            ping.kill()
            ping.wait()
        lab.down()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bin", type=Path, default=ROOT / "target" / "debug" / "mifsec")
    ap.add_argument("--keep", action="store_true", help="keep the work folder and PNGs")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("test_plot.py: needs root (network namespaces)", file=sys.stderr)
        return 1
    if not plot.have_matplotlib():
        print("test_plot.py: needs matplotlib (scripts/test.sh installs it)", file=sys.stderr)
        return 1
    tests = [("derivation", test_derivation), ("without matplotlib", test_without_matplotlib),
             ("real run", lambda: test_real_run(a.bin, a.keep))]
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
            passed += 1
            print(f"plot test {name}: ok")
        except Exception:  # noqa: BLE001
            failed += 1
            print(f"plot test {name}: FAILED")
            traceback.print_exc()
    print(f"plot: {passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
