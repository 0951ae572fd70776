#!/usr/bin/env python3
"""Multi-interface benchmark (issue 11, the first bar): moving 50 child SAs of one IKE SA
from the client's link 1 to its link 2 under a 10,000 packets/s UDP stream spread over the
children, done with standard means (MOBIKE) and with the extension's SOFT_HANDOVER.

    sudo scripts/bench_mif.py [--cases C,...] [--children N] [--rate PPS] [--seconds S]
                              [--move-at S] [--smoke] [--out FILE] [--bin PATH]
                              [--stream-bin PATH]

The lab is the test kit's multi-interface lab (testkit/src/mif.rs, MifLab in
testkit/python/mifsec_testkit.py): two mifsec peers, client links c1 (198.18.33.2) and c2
(198.18.34.2), gateway links g1 (198.18.41.2) and g2 (198.18.42.2), every address pair a
path through a middle router. The client has N children (child i: 10.50.i.1/32 <->
10.60.i.1/32), the gateway one child they are all narrowed from.

Cases, each on a fresh lab, in this order:
  mobike   standard means (`mif = false` on both peers): `mifsec ctl move mif --local
           198.18.34.2` (MOBIKE's UPDATE_SA_ADDRESSES: the whole IKE SA and every child,
           hard, onto one path)
  soft     the extension (`mif = true`): every child first on c1 only (`ctl mif mif remove
           c2 --all`, before the stream), then SOFT_HANDOVER of every child from c1 to c2 in
           one INFORMATIONAL (`soft_handover_cmd`: `ctl mif mif soft-handover c1 c2 --all`);
           reported as "not available" by a binary without it

For each case: the stream (testkit's mif-stream binary: sequence numbers per child, paced on
a 1 ms tick) runs --seconds (8); --move-at (3) seconds into it, once link 1 carries it, the
move command runs (t0). Reported: the IKE messages on the wire from t0 to the end of the
stream, counted from a tcpdump capture in the client's namespace by tshark (exchange type and
direction; not from our logs); the time from t0 to traffic on the new path, by the engine's
per-path counters (`status --json`, tx_packets of paths from c2, polled every 5 ms: includes
the poll's own time) and on the wire (the first ESP packet from c2 in the capture); the
stream's sent, received, lost, duplicated, reordered packets and longest gap; the load
average at the start and end of each case (figures under load are worthless: above 8 the
result says so). The client's `path_check_delay` is 0 in every case: the stream is one way,
and the liveness checks it would cause (an INFORMATIONAL every 400 ms) are not the move.

Writes bench/results/mif-<date>.json (--out) and a summary under "mif" in
bench/results/latest.json (the rest of the file is kept); beside the JSON, per case, the
client's status sampled at 10 Hz during the stream (mif-<date>-CASE.jsonl.gz, testkit's
StatusSampler) and scripts/plot.py's PNGs of it (mif-<date>-CASE-throughput.png and -rtt.png:
per-path throughput and RTT, the move marked; none without matplotlib). --smoke: 4 children, 1,000
packets/s for 3 s, writes nothing, fails only if a case could not be set up or measured (the
pass scripts/test.sh gives it, with debug binaries; the soft case's error is printed, not
fatal there, while the extension is being built; the plots go to the work folder). Needs
root, tcpdump and tshark. Only the Python standard library is used (matplotlib for the
plots, if installed).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "testkit" / "python"))
sys.path.insert(0, str(ROOT / "scripts"))  # plot.py
import mifsec_testkit as kit  # noqa: E402
from mifsec_testkit import MIF_CLIENT_LINKS, Capture, MifLab, in_ns, sh  # noqa: E402

CASES = ["mobike", "soft"]
PATH_CHECK_OFF = 'path_check_delay = "0"'
C1, C2 = MIF_CLIENT_LINKS[0][1], MIF_CLIENT_LINKS[1][1]


def log(msg: str) -> None:
    print(f"[mif] {msg}", file=sys.stderr, flush=True)


def mif_available(binary: Path, work: Path, a) -> bool:
    """Whether this mifsec has the extension: `ctl mif ... soft-handover` among its commands
    and `mif = true` accepted in a connection (`mifsec check` of the soft case's configs)."""
    r = sh(str(binary), "help", check=False)
    if "soft-handover" not in r.stdout + r.stderr:
        return False
    cfg = case_config("soft", a)
    for name, text in (
        ("cl", kit.render("mifsec-mif-client.toml", PSK=kit.PSK, SOCK=str(work / "x.sock"),
                          CONN=cfg["conn"], CHILDREN=kit.mif_children(1))),
        ("gw", kit.render("mifsec-mif-gateway.toml", PSK=kit.PSK, SOCK=str(work / "y.sock"),
                          CONN=cfg["gw_conn"])),
    ):
        p = work / f"check-{name}.toml"
        p.write_text(text)
        if sh(str(binary), "check", "--config", str(p), check=False).returncode != 0:
            return False
    return True


def soft_handover_cmd(a) -> list[str]:
    """The extension's soft handover of every child of `mif` from c1 to c2: the hook the
    soft case runs (the ctl syntax of the mifd work; --soft-cmd overrides it)."""
    if a.soft_cmd:
        return a.soft_cmd.split()
    return ["ctl", "mif", "mif", "soft-handover", "c1", "c2", "--all"]


def case_config(case: str, a) -> dict:
    """The connection lines of each side for a case."""
    conn = PATH_CHECK_OFF
    if case == "soft":
        conn += "\nmif = true"
        gw = "mif = true"
    else:
        # Standard means only: without the extension MOBIKE moves the children too.
        conn += "\nmif = false"
        gw = "mif = false"
    return {"conn": conn + ("\n" + a.client_conn if a.client_conn else ""), "gw_conn": gw}


def move_cmd(case: str, a) -> list[str]:
    if case == "mobike":
        return ["ctl", "move", "mif", "--local", C2]
    return soft_handover_cmd(a)


def run_case(binary: Path, stream_bin: Path, work: Path, case: str, a) -> dict:
    d = work / case
    d.mkdir()
    os.chmod(d, 0o711)
    lab = MifLab(d, binary)
    res: dict = {"case": case, "load_average_start": os.getloadavg()}
    cap = None
    sampler = None
    procs: list[subprocess.Popen] = []
    if case == "soft" and not a.soft_cmd and not mif_available(binary, work, a):
        res["skipped"] = ("not available: this mifsec lacks `ctl mif CONN soft-handover` "
                          "or refuses `mif = true`")
        return res
    try:
        lab.up(a.children)
        cfg = case_config(case, a)
        res["config"] = cfg
        lab.start_pair(a.children, conn=cfg["conn"], gw_conn=cfg["gw_conn"])
        for side in ("cl", "gw"):
            kit.wait_until(lambda s=side: kit.installed_children(lab.status(s)) == a.children,
                           60, lambda s=side: f"{s}: not {a.children} children: "
                           f"{kit.installed_children(lab.status(s))}\n{lab.log(s)[-3000:]}")
        if case == "soft":
            # Every child on c1 only first (one REMOVE_INTERFACE), as MOBIKE's starting point.
            r = lab.mifsec("cl", "ctl", "mif", "mif", "remove", "c2", "--all", check=False)
            res["setup_command_output"] = (r.stdout + r.stderr).strip()[-2000:]
            if r.returncode != 0:
                raise RuntimeError(f"ctl mif mif remove c2 --all: {res['setup_command_output']}")
        cap = Capture(lab.cl, d / "move.pcap")
        # The client's paths at 10 Hz for plot.py (slim samples: a few kB per child).
        sampler = kit.StatusSampler(binary, lab.sock("cl"), d / "samples.jsonl", hz=10,
                                    limit=a.seconds * 2 + 30, slim=True).start()
        common = ["--children", str(a.children), "--rate", str(a.rate),
                  "--seconds", str(a.seconds)]
        recv = subprocess.Popen(in_ns(lab.gw, str(stream_bin), "recv", *common,
                                      "--json", str(d / "recv.json")),
                                stdout=subprocess.PIPE, stderr=open(d / "recv.err", "w"),
                                text=True)
        procs.append(recv)
        if recv.stdout.readline().strip() != "ready":
            raise RuntimeError(f"mif-stream recv: {(d / 'recv.err').read_text()}")
        send = subprocess.Popen(in_ns(lab.cl, str(stream_bin), "send", *common,
                                      "--json", str(d / "send.json")),
                                stdout=subprocess.DEVNULL, stderr=open(d / "send.err", "w"))
        procs.append(send)
        t_start = time.time()
        # Link 1 carries the stream before the move.
        kit.wait_until(lambda: lab.tx_packets("cl", 0) > 0, 10, "nothing on link 1")
        time.sleep(max(0.0, a.move_at - (time.time() - t_start)))  # the planned instant
        before = lab.status("cl")
        base = kit.tx_from(before, C2)
        cmd = move_cmd(case, a)
        t0 = time.time()
        r = lab.mifsec("cl", *cmd, check=False)
        t_cmd = time.time()
        res["command"] = " ".join(["mifsec", *cmd])
        res["command_output"] = (r.stdout + r.stderr).strip()[-2000:]
        res["command_ms"] = round((t_cmd - t0) * 1000, 1)
        if r.returncode != 0:
            raise RuntimeError(f"{res['command']}: {res['command_output']}")
        moved = None
        end = time.monotonic() + a.seconds + 5
        while time.monotonic() < end:
            if kit.tx_from(lab.status("cl"), C2) > base + 10:
                moved = time.time()
                break
            time.sleep(0.005)
        send.wait(timeout=a.seconds * 1.5 + 10)
        recv.wait(timeout=a.seconds * 1.5 + 15)
        t1 = time.time()
        res["samples_local"] = str(sampler.stop())
        sampler = None
        msgs = cap.stop()
        cap = None
        stream = json.loads((d / "recv.json").read_text())
        sender = json.loads((d / "send.json").read_text())
        wire = kit.first_esp_from(d / "move.pcap", C2, t0)
        after = lab.status("cl")
        res.update({
            "exchanges_on_wire": kit.tally(msgs, t0, t1),
            "ike_messages": [m for m in msgs if t0 <= m["at"] <= t1],
            "traffic_on_new_path_ms_status": None if moved is None else round((moved - t0) * 1000, 1),
            "traffic_on_new_path_ms_wire": None if wire is None else round((wire - t0) * 1000, 1),
            "stream": {k: stream[k] for k in ("sent", "received", "lost", "duplicates",
                                              "reordered", "longest_gap_ms",
                                              "longest_gap_per_dest_ms", "dests_with_loss",
                                              "no_end_marker", "loss_runs")},
            "sender": {k: sender[k] for k in ("sent", "errors", "max_lag_ms")},
            "ike_local_after": (after.get("ike_sas") or [{}])[0].get("local"),
            "children_after": kit.installed_children(after),
            "drops_client": kit.drops(after),
            "drops_gateway": kit.drops(lab.status("gw")),
        })
    except Exception as e:  # noqa: BLE001  (a case that fails is a result)
        res["error"] = str(e)
        log(f"{case}: error: {e}")
    finally:
        if sampler is not None:
            sampler.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if cap is not None:
            cap.stop()
        for name in ("cl", "gw"):
            if name in lab.daemons:
                res[f"mifsec_{name}_log_tail"] = lab.log(name).splitlines()[-30:]
        lab.down()
        res["load_average_end"] = os.getloadavg()
        if max(res["load_average_start"][0], res["load_average_end"][0]) > 8:
            res["warning"] = "load average above 8: timing figures are not meaningful"
    return res


def summary_line(r: dict) -> str:
    if r.get("skipped"):
        return f"skipped: {r['skipped']}"
    if r.get("error"):
        return f"error: {r['error']}"
    s = r["stream"]
    return (f"on the wire {r['exchanges_on_wire']}; traffic on c2 after "
            f"{r['traffic_on_new_path_ms_status']} ms (status) / "
            f"{r['traffic_on_new_path_ms_wire']} ms (wire); lost {s['lost']} of {s['sent']}, "
            f"longest gap {s['longest_gap_ms']:.1f} ms; load {r['load_average_start'][0]:.2f}"
            f"-{r['load_average_end'][0]:.2f}")


def summary(result: dict) -> dict:
    out = {"date": result["date"], "file": result.get("file"), "children": result["children"],
           "rate_pps": result["rate_pps"], "cases": {}}
    for r in result["cases"]:
        if r.get("skipped") or r.get("error"):
            out["cases"][r["case"]] = {k: r[k] for k in ("skipped", "error") if k in r}
            continue
        out["cases"][r["case"]] = {
            "exchanges_on_wire": r["exchanges_on_wire"],
            "traffic_on_new_path_ms_status": r["traffic_on_new_path_ms_status"],
            "traffic_on_new_path_ms_wire": r["traffic_on_new_path_ms_wire"],
            "lost": r["stream"]["lost"], "sent": r["stream"]["sent"],
            "longest_gap_ms": round(r["stream"]["longest_gap_ms"], 1),
            "load_average": [r["load_average_start"][0], r["load_average_end"][0]],
        }
    return out


def plots(result: dict, folder: Path, stem: str, keep_samples: bool = True) -> None:
    """Each case's samples (gzipped) and plot.py's PNGs beside the results:
    STEM-CASE.jsonl.gz, STEM-CASE-throughput.png, STEM-CASE-rtt.png. Without matplotlib,
    plot.py's note and no PNGs."""
    import plot  # scripts/plot.py, beside this file

    for r in result["cases"]:
        src = r.pop("samples_local", None)
        if not src or not Path(src).exists():
            continue
        rel = lambda p: str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)  # noqa: E731
        if keep_samples:
            r["samples"] = rel(kit.gzip_to(Path(src), folder / f"{stem}-{r['case']}.jsonl.gz"))
        try:
            pngs = plot.plot_if_possible(Path(src), folder, f"{stem}-{r['case']}",
                                         title=f"bench_mif {r['case']}: {result['children']} "
                                         f"children, {result['rate_pps']} packets/s, move at "
                                         f"{result['move_at_s']} s")
        except Exception as e:  # noqa: BLE001  (a plot is not a result)
            log(f"{r['case']}: plot failed: {e}")
            pngs = []
        r["plots"] = [rel(p) for p in pngs]
        for p in pngs:
            log(f"{r['case']}: wrote {p}")


def build(release: bool) -> tuple[Path, Path]:
    prof = ["--release"] if release else []
    subprocess.run(["cargo", "build", *prof, "--locked", "-p", "mifsec-control", "--bin",
                    "mifsec"], cwd=ROOT, check=True)
    subprocess.run(["cargo", "build", *prof, "--locked", "-p", "mifsec-testkit", "--bin",
                    "mif-stream"], cwd=ROOT, check=True)
    t = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / \
        ("release" if release else "debug")
    return t / "mifsec", t / "mif-stream"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--children", type=int, default=50)
    ap.add_argument("--rate", type=int, default=10_000)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--move-at", type=float, default=3.0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--client-conn", default="", help="lines added to the client's connection")
    ap.add_argument("--soft-cmd", default="",
                    help="the soft case's command after `mifsec` (default: soft_handover_cmd)")
    ap.add_argument("--out")
    ap.add_argument("--bin", help="the mifsec binary (default: cargo build --release)")
    ap.add_argument("--stream-bin", help="the mif-stream binary (default: built with --bin)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_mif.py: needs root (network namespaces)", file=sys.stderr)
        return 1
    if a.smoke:
        a.children, a.rate, a.seconds, a.move_at = 4, 1000, 3.0, 1.0
    if not (1 <= a.children <= 250 and 1 <= a.rate <= 100_000 and 1 <= a.seconds <= 120
            and 0 < a.move_at < a.seconds):
        print("bench_mif.py: 1-250 children, 1-100000 pps, 1-120 s, move within the stream",
              file=sys.stderr)
        return 2
    cases = [c.strip() for c in a.cases.split(",") if c.strip()]
    for c in cases:
        if c not in CASES:
            print(f"bench_mif.py: unknown case {c} (one of {CASES})", file=sys.stderr)
            return 2
    for tool in ("tcpdump", "tshark"):
        if not shutil.which(tool):
            print(f"bench_mif.py: {tool} is missing (apt-get install -y {tool})", file=sys.stderr)
            return 1
    if a.bin:
        binary = Path(a.bin)
        stream_bin = Path(a.stream_bin) if a.stream_bin else binary.parent / "mif-stream"
        if not stream_bin.exists():
            _, stream_bin = build("release" in str(binary.parent))
    else:
        binary, stream_bin = build(True)
    work = Path(tempfile.mkdtemp(prefix="mifsec-bench-mif."))
    os.chmod(work, 0o711)  # the daemons drop root and must reach their sockets inside
    now = datetime.datetime.now(datetime.timezone.utc)
    result: dict = {
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "children": a.children,
        "rate_pps": a.rate,
        "seconds": a.seconds,
        "move_at_s": a.move_at,
        "stream": "mif-stream: UDP, 200-byte payloads, round robin over the children, "
                  "10.50.i.1 -> 10.60.i.1:5599",
        "binary": str(binary),
        "git": sh("git", "-C", str(ROOT), "describe", "--always", "--dirty",
                  check=False).stdout.strip(),
        "cases": [],
    }
    for case in cases:
        log(f"case {case}")
        r = run_case(binary, stream_bin, work, case, a)
        result["cases"].append(r)
        log(f"{case}: {summary_line(r)}")
    print(f"\nmoving {a.children} children from c1 to c2 under {a.rate} packets/s:")
    for r in result["cases"]:
        print(f"  {r['case']:8} {summary_line(r)}")
    if a.smoke:
        plots(result, work, "smoke", keep_samples=False)
        # The standard case must run; the extension's is reported (it is being built).
        errors = [r["case"] for r in result["cases"] if r.get("error") and r["case"] == "mobike"]
        if errors:
            print(f"bench_mif.py --smoke: failed to run {errors}; logs in {work}", file=sys.stderr)
            return 1
        shutil.rmtree(work, ignore_errors=True)
        return 0
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"mif-{now.date()}.json"
    result["file"] = str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plots(result, out.parent, out.stem)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if not a.out:
        latest = ROOT / "bench" / "results" / "latest.json"
        doc = json.loads(latest.read_text()) if latest.exists() else {}
        doc["mif"] = summary(result)
        latest.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}" + ("" if a.out else " and the summary in bench/results/latest.json"))
    print(f"work folder (logs, captures): {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
