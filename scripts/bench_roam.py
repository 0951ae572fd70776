#!/usr/bin/env python3
"""Roaming benchmark (issue 10, MOBIKE): how much a client's traffic loses when its active
link goes away, with strongSwan's own client and gateway as the reference of the same run.

    sudo scripts/bench_roam.py [--pairs P,...] [--give-up S] [--pause S] [--smoke]
                               [--client-conn LINES] [--client-child LINES] [--fixed-addresses]
                               [--out FILE] [--bin PATH]

The lab is the roaming lab of the test kit (testkit/src/roam.rs, RoamLab in
testkit/python/mifsec_testkit.py): a client with two links (rl1 198.18.21.2, rl2
198.18.22.2) through a middle router to a gateway with two addresses (198.18.20.10 and .11);
the client routes to the gateway through link 1 (metric 100) and link 2 (metric 200).

Pairs (client -> gateway), each on a fresh lab, in this order:
  strongswan-strongswan   the reference: charon (kernel-libipsec, MOBIKE on) on both ends
  mifsec-strongswan       mifsec client (interfaces link1 and link2 naming only their
                          devices: the addresses are followed), the same strongSwan gateway
  mifsec-mifsec           mifsec client, mifsec gateway

For each pair, under a ping stream of 100 requests/s from the client to 10.88.0.1 (behind
the gateway, through the tunnel):
  1. address: the client's address on the active link (the one whose tx counter grows) is
     deleted (an explicit event; the kernel also drops the route through it);
  2. then the address is given back, the tunnel must carry pings again, a pause (--pause,
     5 s), and blackhole: the middle namespace silently discards everything to the client's
     address on the link that is active now (no link or address event).
Each event is given --give-up seconds (30) to recover: recovered means a ping request sent
after the event was answered; `recovered_after_ms` is from the event to that reply. The
stream then runs one more second and stops. Reported per event: requests sent, lost (those
before the last answered request that got no reply; if never recovered, every request
after the event), the longest gap between two consecutive replies (if never recovered:
none, "not recovered"), which link was active before and after, and for mifsec its inbound
drop counters (integrity, replayed, ...) and the moves in its log. A pair that fails to set
up or to recover is a result, not a crash: its error is recorded and the next pair runs.

Writes bench/results/roam-<date>.json (--out) and puts a summary under "roam" in
bench/results/latest.json (the rest of that file, bench-e2e.sh's, is kept). --smoke runs
only the address event of each pair with a 5 s give-up, writes nothing and fails only if a
pair could not be set up or measured (the one pass scripts/test.sh gives it, with the debug
binary: about 40 s). Needs root, strongSwan (scripts/swan.sh install). Only the Python
standard library is used.

The ping stream is the kit's pinger (`testkit/python/mifsec_testkit.py ping`): a raw ICMP
socket sending an echo request every 10 ms on a fixed schedule and timing each reply;
iputils' `ping -i 0.01` sends only about 60 a second on these machines.
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
import mifsec_testkit as kit  # noqa: E402  (the lab, the templates: testkit/)
from mifsec_testkit import (  # noqa: E402
    ROAM_GW_ADDRS, ROAM_GW_DEV, ROAM_INNER, ROAM_LINKS, SWAN, PingStream, RoamLab, drops,
    in_ns, sh,
)

PAIRS = ["strongswan-strongswan", "mifsec-strongswan", "mifsec-mifsec"]
SETUP_SECONDS = 30


def log(msg: str) -> None:
    print(f"[roam] {msg}", file=sys.stderr, flush=True)


def tunnel_pings(lab: RoamLab, seconds: float) -> bool:
    """Whether a ping through the tunnel gets an answer within `seconds`."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        r = sh(*in_ns(lab.cl, "ping", "-c", "1", "-W", "1", ROAM_INNER), check=False)
        if r.returncode == 0:
            return True
        time.sleep(0.2)
    return False


def start_pair(lab: RoamLab, pair: str, a) -> None:
    client, gateway = pair.split("-")
    local = ", ".join(ROAM_GW_ADDRS)
    if gateway == "strongswan":
        lab.start_swan("gw", lab.gw, "swanctl-gateway.conf", LOCAL_ADDRS=local)
    else:
        second = f'[interfaces.wan2]\ndevice = "{ROAM_GW_DEV}"\naddress = "{ROAM_GW_ADDRS[1]}"'
        lab.start_mifsec("gw", lab.gw, "mifsec-gateway.toml", DEV=ROAM_GW_DEV,
                         ADDR=ROAM_GW_ADDRS[0], INTERFACES=second,
                         LOCAL_ADDRS=", ".join(f'"{x}"' for x in ROAM_GW_ADDRS),
                         CONN=a.gateway_conn)
    if client == "strongswan":
        lab.start_swan("cl", lab.cl, "swanctl-client.conf", GATEWAY=ROAM_GW_ADDRS[0])
        lab.swanctl("cl", lab.cl, "--initiate", "--child", "net")
    else:
        links = {} if a.fixed_addresses else {"LINK1": "", "LINK2": ""}
        lab.start_mifsec("cl", lab.cl, "mifsec-roam-client.toml", CONN=a.client_conn,
                         CHILD=a.client_child, **links)
    if not tunnel_pings(lab, SETUP_SECONDS):
        raise RuntimeError(f"no ping through the tunnel within {SETUP_SECONDS} s of the start")


def mifsec_state(lab: RoamLab) -> dict:
    """The mifsec client's inbound drops and its IKE SA's path, if it runs."""
    if "cl" not in lab.daemons:
        return {}
    try:
        st = lab.status("cl")
    except Exception as e:  # noqa: BLE001  (a status that fails is part of the result)
        return {"status_error": str(e)}
    ike = (st.get("ike_sas") or [{}])[0]
    return {"drops": drops(st), "ike_local": ike.get("local"), "ike_remote": ike.get("remote"),
            "moves": ike.get("moves"),
            "child_spis": sorted(c.get("spi_in", "") for c in ike.get("children", []))}


def swan_view(lab: RoamLab, side: str, ns: str) -> str:
    if side not in lab.swans:
        return ""
    r = lab.swanctl(side, ns, "--list-sas", check=False)
    return r.stdout


def event(lab: RoamLab, pair: str, kind: str, a, tag: str) -> dict:
    """One event under a fresh ping stream; returns its figures."""
    ping = PingStream(lab.cl, ROAM_INNER, lab.work / f"{tag}.ping")
    res: dict = {"event": kind}
    try:
        kit.wait_until(lambda: len(ping.replies()) >= 3, 10, "no ping replies before the event")
        time.sleep(2)  # two seconds of the stream before the event, on purpose
        active = lab.active_link()
        if active is None:
            raise RuntimeError("the client sends on neither link")
        res["active_before"] = active + 1
        before = mifsec_state(lab)
        t0 = time.time()
        if kind == "address":
            lab.delete_address(active)
        else:
            lab.blackhole(ROAM_LINKS[active][1])
        # The event is in force once `ip` has returned: times count from then.
        t_event = time.time()
        res["event_took_ms"] = round((t_event - t0) * 1000, 1)
        res["link_hit"] = active + 1
        end = time.monotonic() + a.give_up
        back = None
        while time.monotonic() < end:
            back = ping.answered_after(t_event)
            if back:
                break
            time.sleep(0.01)
        if back:
            time.sleep(1)  # one more second of the stream, on purpose
            after = lab.active_link()
            res["active_after"] = None if after is None else after + 1
    finally:
        out = ping.stop()
    replies, sent = out["replies"], out["transmitted"]
    res["sent"] = sent
    res["received"] = len(replies)
    if back:
        last = max(r[0] for r in replies)
        res["recovered"] = True
        res["recovered_after_ms"] = round((back[1] - t_event) * 1000, 1)
        res["lost"] = last - len(replies)
        gaps = [b[1] - a_[1] for a_, b in zip(replies, replies[1:])]
        res["longest_gap_ms"] = round(max(gaps) * 1000, 1)
    else:
        res["recovered"] = False
        res["lost"] = sent - len([r for r in replies if r[2] <= t_event])
        res["longest_gap_ms"] = None
        res["given_up_after_s"] = a.give_up
    if "cl" in lab.daemons:
        after = mifsec_state(lab)
        res["mifsec_client"] = after
        d0, d1 = before.get("drops", {}), after.get("drops", {})
        res["mifsec_client_new_drops"] = {k: v - d0.get(k, 0) for k, v in d1.items()
                                          if v - d0.get(k, 0)}
        # A child rekey shows as new inbound SPIs (strongSwan's kernel-libipsec rekeys
        # after every address update; between two mifsec peers nothing should).
        res["mifsec_client_child_rekeyed"] = before.get("child_spis") != after.get("child_spis")
    res["swan_gateway_sas"] = swan_view(lab, "gw", lab.gw)
    res["swan_client_sas"] = swan_view(lab, "cl", lab.cl)
    return res


def run_pair(binary: Path, work: Path, pair: str, a) -> dict:
    d = work / pair
    d.mkdir()
    lab = RoamLab(d, binary)
    res: dict = {"pair": pair, "events": []}
    try:
        lab.up()
        start_pair(lab, pair, a)
        kinds = ["address"] if a.smoke else ["address", "blackhole"]
        for i, kind in enumerate(kinds):
            if kind == "blackhole":
                # Undo the address event, then the tunnel must carry pings again; a pause.
                lab.restore_address(res["events"][0]["link_hit"] - 1)
                if not tunnel_pings(lab, a.give_up):
                    res["events"].append({"event": kind, "skipped":
                                          "no ping through the tunnel after the address came back"})
                    break
                time.sleep(a.pause)  # the pause between the events, on purpose
            log(f"{pair}: {kind}")
            r = event(lab, pair, kind, a, f"{i}-{kind}")
            res["events"].append(r)
            log(f"{pair}: {kind}: {summary_line(r)}")
    except Exception as e:  # noqa: BLE001  (a pair that fails is a result)
        res["error"] = str(e)
        log(f"{pair}: error: {e}")
    finally:
        for name in ("cl", "gw"):
            if name in lab.daemons:
                res[f"mifsec_{name}_log_moves"] = [
                    l for l in lab.log(name).splitlines()
                    if any(w in l.lower() for w in ("move", "mobike", "path", "address"))][-40:]
            if name in lab.swans:
                res[f"charon_{name}_log_tail"] = lab.swan_log(name).splitlines()[-60:]
        lab.down()
    return res


def summary_line(r: dict) -> str:
    if r.get("skipped"):
        return f"skipped: {r['skipped']}"
    if not r.get("recovered"):
        return (f"not recovered within {r.get('given_up_after_s')} s; "
                f"lost {r['lost']} of {r['sent']}")
    return (f"lost {r['lost']} of {r['sent']}, longest gap {r['longest_gap_ms']} ms, "
            f"traffic back after {r['recovered_after_ms']} ms, link {r.get('active_before')} "
            f"-> {r.get('active_after')}")


def summary(result: dict) -> dict:
    out = {"date": result["date"], "file": result.get("file"), "pairs": {}}
    for p in result["pairs"]:
        ev = {}
        for r in p["events"]:
            ev[r["event"]] = {k: r.get(k) for k in
                              ("lost", "sent", "longest_gap_ms", "recovered",
                               "recovered_after_ms", "skipped")
                              if r.get(k) is not None}
        if p.get("error"):
            ev["error"] = p["error"]
        out["pairs"][p["pair"]] = ev
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--pairs", default=",".join(PAIRS))
    ap.add_argument("--give-up", type=float, default=30.0)
    ap.add_argument("--pause", type=float, default=5.0)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--client-conn", default="",
                    help="lines added to the mifsec client's [connections.home]")
    ap.add_argument("--client-child", default="", help="lines added to its child")
    ap.add_argument("--gateway-conn", default="",
                    help="lines added to the mifsec gateway's [connections.rw]")
    ap.add_argument("--fixed-addresses", action="store_true",
                    help="the mifsec client's interfaces have fixed addresses (default: "
                         "device only, addresses followed)")
    ap.add_argument("--out")
    ap.add_argument("--bin", help="the mifsec binary (default: cargo build --release)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_roam.py: needs root (network namespaces)", file=sys.stderr)
        return 1
    pairs = [p.strip() for p in a.pairs.split(",") if p.strip()]
    if a.smoke:
        a.give_up = min(a.give_up, 5.0)
    for p in pairs:
        if p not in PAIRS:
            print(f"bench_roam.py: unknown pair {p} (one of {PAIRS})", file=sys.stderr)
            return 2
    sh(str(SWAN), "install")
    binary = Path(a.bin) if a.bin else None
    if binary is None and any(p.startswith("mifsec") for p in pairs):
        subprocess.run(["cargo", "build", "--release", "--locked", "-p", "mifsec-control",
                        "--bin", "mifsec"], cwd=ROOT, check=True)
        binary = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release" / "mifsec"
    work = Path(tempfile.mkdtemp(prefix="mifsec-bench-roam."))
    os.chmod(work, 0o711)  # the daemons drop root and must reach their sockets inside
    now = datetime.datetime.now(datetime.timezone.utc)
    result: dict = {
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "load_average_start": os.getloadavg(),
        "ping": "echo requests every 10 ms on a fixed schedule (mifsec_testkit.py ping) to 10.88.0.1 through the tunnel",
        "give_up_s": a.give_up,
        "pause_s": a.pause,
        "mifsec_client_extra": {"conn": a.client_conn, "child": a.client_child,
                                "fixed_addresses": a.fixed_addresses},
        "mifsec_gateway_extra": {"conn": a.gateway_conn},
        "git": sh("git", "-C", str(ROOT), "describe", "--always", "--dirty",
                  check=False).stdout.strip(),
        "pairs": [],
    }
    for pair in pairs:
        log(f"pair {pair}")
        result["pairs"].append(run_pair(binary or Path("/nonexistent"), work, pair, a))
    result["load_average_end"] = os.getloadavg()
    print("\nroaming, ping at 100/s through the tunnel:")
    for p in result["pairs"]:
        for r in p["events"]:
            print(f"  {p['pair']:24} {r['event']:9} {summary_line(r)}")
        if p.get("error"):
            print(f"  {p['pair']:24} error: {p['error']}")
    if a.smoke:
        # The smoke pass checks that every pair sets up and measures; not recovering is a
        # result, not a failure.
        errors = [p["pair"] for p in result["pairs"] if p.get("error")]
        if errors:
            print(f"bench_roam.py --smoke: failed to run {errors}; logs in {work}", file=sys.stderr)
            return 1
        shutil.rmtree(work, ignore_errors=True)
        return 0
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"roam-{now.date()}.json"
    result["file"] = str(out.relative_to(ROOT)) if out.is_relative_to(ROOT) else str(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    latest = ROOT / "bench" / "results" / "latest.json"
    if not a.out:
        doc = json.loads(latest.read_text()) if latest.exists() else {}
        doc["roam"] = summary(result)
        latest.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}" + ("" if a.out else f" and the summary in {latest}"))
    print(f"work folder (logs, pings): {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
