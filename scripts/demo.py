#!/usr/bin/env python3
"""The mifsec demo (run by scripts/demo.sh, which builds first): two mifsec peers with IKEv2
over two links per side, and what the multi-interface extension does with them.

    sudo scripts/demo.py --bin target/release/mifsec --stream-bin target/release/mif-stream
                         [--children N] [--seconds S] [--keep]

The lab is the test kit's multi-interface lab (testkit/src/mif.rs; MifLab in
testkit/python/mifsec_testkit.py): client links c1 (198.18.33.2, shaped to 200 Mbit/s) and
c2 (198.18.34.2, 100 Mbit/s), gateway links g1 (198.18.41.2) and g2 (198.18.42.2), every
address pair a path through a middle router. Steps:

  1. the manually keyed reference: one SA, policy aggregate over (c1, g1) and (c2, g2),
     weights 200:100; iperf3 -t S, one TCP flow, client -> gateway
  2. IKEv2 between the two mifsec peers (PSK), N child SAs (child i: 10.50.i.1 <-> 10.60.i.1),
     the extension negotiated (`mif = true`): each child over the m x n = 4 paths; the same
     iperf3 over child 0, policy aggregate; its rate against step 1's (the bar: 95%)
  3. SOFT_HANDOVER of every child from c1 to c2 in one exchange under a 10,000 packets/s
     stream spread over the children: IKE messages counted from a capture, packets lost
  4. interface c2 removed from every child (one exchange), then added back
  5. c1 silently blackholed in the middle (no link event): the traffic goes on c2; c1 back
  6. a clone of the IKE SA (RFC 7791) moved to the second link, carrying its own child
  7. the report: every figure above, `mifsec status` of both ends; the report as JSON
     (bench/results/demo-DATE.json, --results), the client's status sampled at 10 Hz during
     steps 3 to 5 beside it (.jsonl.gz) and scripts/plot.py's PNGs of them
     (demo-DATE-throughput.png, -rtt.png: per-path throughput and RTT with the handover,
     the removal, the addition and the failure marked; none without matplotlib)

A step whose feature this binary lacks says "not available in this build" and the demo goes
on; any other failure stops it (exit status 1) with the logs kept. Needs root, iperf3,
tcpdump, tshark. Only the Python standard library is used.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
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
from mifsec_testkit import (  # noqa: E402
    MIF_CLIENT_LINKS, MIF_GATEWAY_LINKS, Capture, MifLab, in_ns, sh,
)

C1, C2 = MIF_CLIENT_LINKS[0][1], MIF_CLIENT_LINKS[1][1]
G1, G2 = MIF_GATEWAY_LINKS[0][1], MIF_GATEWAY_LINKS[1][1]
RATES = (200, 100)
REPORT: list[str] = []
STEP = [0]


def step(title: str) -> None:
    STEP[0] += 1
    print(f"\n\033[1m== {STEP[0]}. {title}\033[0m", flush=True)


def say(msg: str) -> None:
    print(f"   {msg}", flush=True)


def report(line: str) -> None:
    REPORT.append(line)
    say(line)


def has(binary: Path, word: str) -> bool:
    """Whether this build's help mentions `word` (a command it has): `mifsec help`, and, since
    the command line is clap's (each command's help on its own), `mifsec ctl --help` and
    `mifsec ctl mif --help`."""
    text = ""
    for args in (("help",), ("ctl", "--help"), ("ctl", "mif", "--help")):
        r = sh(str(binary), *args, check=False)
        text += r.stdout + r.stderr
    return word in text


def accepts(binary: Path, work: Path, text: str) -> bool:
    """Whether `mifsec check` accepts the configuration `text`."""
    p = work / f"probe-{secrets.token_hex(4)}.toml"
    p.write_text(text)
    ok = sh(str(binary), "check", "--config", str(p), check=False).returncode == 0
    p.unlink()
    return ok


def manual_configs(lab: MifLab) -> tuple[str, str]:
    """The manually keyed reference SA of both ends (random keys): aggregate over (c1, g1)
    and (c2, g2), weights as the links' rates."""
    spi_c, spi_g = 0x1000 + secrets.randbelow(1 << 20), 0x200000 + secrets.randbelow(1 << 20)
    key_c, key_g = secrets.token_hex(20), secrets.token_hex(20)

    def side(name, links, peer_links, lts, rts, so, ko, si, ki):
        ifaces = "".join(f'[interfaces.{d}]\ndevice = "{d}"\naddress = "{a}"\n\n'
                         for d, a, *_ in links)
        paths = "".join(
            f'[[sa.tunnel.paths]]\nname = "p{i + 1}"\ninterface = "{links[i][0]}"\n'
            f'remote = "{peer_links[i][1]}:4500"\nweight = {RATES[i]}\n\n' for i in range(2))
        return (f'[dataplane]\nworkers = 1\ncontrol_socket = "{lab.sock(name)}"\n'
                f'state_dir = "{lab.work}/{name}-state"\n\n{ifaces}'
                f'[sa.tunnel]\nspi_out = {so}\nkey_out = "{ko}"\nspi_in = {si}\n'
                f'key_in = "{ki}"\nlocal_ts = ["{lts}"]\nremote_ts = ["{rts}"]\n'
                f'policy = "aggregate"\n\n{paths}')

    cl = side("cl", MIF_CLIENT_LINKS, MIF_GATEWAY_LINKS, "10.50.0.1/32", "10.60.0.1/32",
              spi_c, key_c, spi_g, key_g)
    gw = side("gw", MIF_GATEWAY_LINKS, MIF_CLIENT_LINKS, "10.60.0.1/32", "10.50.0.1/32",
              spi_g, key_g, spi_c, key_c)
    return cl, gw


def start_raw(lab: MifLab, name: str, ns: str, text: str) -> None:
    """`mifsec run` in `ns` with configuration `text` (not a template)."""
    cfg = lab.work / f"{name}.toml"
    cfg.write_text(text)
    os.chmod(cfg, 0o600)
    sock = lab.sock(name)
    sock.unlink(missing_ok=True)
    log = open(lab.work / f"{name}.log", "w")
    p = subprocess.Popen(in_ns(ns, str(lab.bin), "run", "--config", str(cfg)),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log)
    lab.daemons[name] = p
    kit.wait_until(lambda: sock.exists() or p.poll() is not None, 15, "no control socket")
    if p.poll() is not None:
        raise RuntimeError(f"mifsec {name} exited:\n{lab.log(name)}")


def iperf(lab: MifLab, seconds: float) -> float:
    """One TCP flow 10.50.0.1 -> 10.60.0.1 for `seconds`: Mbit/s received."""
    srv = subprocess.Popen(in_ns(lab.gw, "iperf3", "-s", "-1", "-B", "10.60.0.1"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        kit.wait_until(lambda: sh(*in_ns(lab.gw, "ss", "-Hltn", "sport = :5201"))
                       .stdout.strip() != "", 10, "iperf3 server", 0.05)
        out = sh(*in_ns(lab.cl, "timeout", str(int(seconds) + 30), "iperf3", "-c",
                        "10.60.0.1", "-B", "10.50.0.1", "-t", str(seconds), "-J"))
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


def tunnel_pings(lab: MifLab, seconds: float = 20) -> None:
    kit.wait_until(lambda: sh(*in_ns(lab.cl, "ping", "-c", "1", "-W", "1", "-I", "10.50.0.1",
                                     "10.60.0.1"), check=False).returncode == 0,
                   seconds, lambda: f"no ping through the tunnel\n{lab.log('cl')[-3000:]}")


class StreamRun:
    """mif-stream over the children: receiver in the gateway, sender in the client."""

    def __init__(self, lab: MifLab, stream_bin: Path, children: int, rate: int, secs: float,
                 tag: str):
        self.d = lab.work
        self.tag = tag
        common = ["--children", str(children), "--rate", str(rate), "--seconds", str(secs)]
        self.recv = subprocess.Popen(
            in_ns(lab.gw, str(stream_bin), "recv", *common, "--json",
                  str(self.d / f"{tag}.recv.json")), stdout=subprocess.PIPE, text=True,
            stderr=subprocess.DEVNULL)
        if self.recv.stdout.readline().strip() != "ready":
            raise RuntimeError("mif-stream recv did not start")
        self.send = subprocess.Popen(
            in_ns(lab.cl, str(stream_bin), "send", *common, "--json",
                  str(self.d / f"{tag}.send.json")), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        self.secs = secs

    def wait(self) -> dict:
        self.send.wait(timeout=self.secs * 1.5 + 10)
        self.recv.wait(timeout=self.secs * 1.5 + 15)
        return json.loads((self.d / f"{self.tag}.recv.json").read_text())


def line(r: dict) -> str:
    return (f"sent {r['sent']}, received {r['received']}, lost {r['lost']}, duplicates "
            f"{r['duplicates']}, longest gap {r['longest_gap_ms']:.1f} ms")


def mif(lab: MifLab, *args: str):
    """`mifsec ctl mif mif ARGS` on the client; raises with its output when it fails."""
    r = lab.mifsec("cl", "ctl", "mif", "mif", *args, check=False)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        raise RuntimeError(f"ctl mif {' '.join(args)}: {out}")
    return out


def results(a, samples: Path) -> list[Path]:
    """The report as JSON (--results PREFIX.json), the samples of steps 3 to 5 gzipped
    beside it (PREFIX.jsonl.gz) and plot.py's PNGs of them (PREFIX-throughput.png,
    PREFIX-rtt.png; none without matplotlib, which plot.py says)."""
    import plot  # scripts/plot.py, beside this file

    prefix = Path(a.results) if a.results else \
        ROOT / "bench" / "results" / f"demo-{time.strftime('%Y-%m-%d')}"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    out = [kit.gzip_to(samples, prefix.with_name(prefix.name + ".jsonl.gz"))]
    try:
        out += plot.plot_if_possible(samples, prefix.parent, prefix.name,
                                     title=f"demo: {a.children} children, soft handover "
                                     "c1 -> c2, c2 removed and added, c1 blackholed 3 s")
    except Exception as e:  # noqa: BLE001  (a plot is not a result)
        say(f"plot failed: {e}")
    doc = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "children": a.children, "report": REPORT,
           "files": [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p)
                     for p in out]}
    j = prefix.with_name(prefix.name + ".json")
    j.write_text(json.dumps(doc, indent=1) + "\n")
    return [j, *out]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--bin", required=True)
    ap.add_argument("--stream-bin", required=True)
    ap.add_argument("--children", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--results", help="prefix of the report, samples and plots (default "
                    "bench/results/demo-DATE)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("demo.py: needs root (network namespaces, TUN)", file=sys.stderr)
        return 1
    binary, stream_bin = Path(a.bin), Path(a.stream_bin)
    work = Path(tempfile.mkdtemp(prefix="mifsec-demo."))
    os.chmod(work, 0o711)  # the daemons drop root and must reach their sockets inside
    lab = MifLab(work, binary, prefix=os.environ.get("DEMO_PREFIX", "mfdm"))
    ok = False
    sampler = None
    try:
        step(f"lab: client c1 {C1} ({RATES[0]} Mbit/s), c2 {C2} ({RATES[1]} Mbit/s); "
             f"gateway g1 {G1}, g2 {G2}; {a.children} children's inner addresses")
        lab.up(a.children + 1)  # the last child is the clone's
        for i, r in enumerate(RATES):
            lab.shape("cl", i, r)
        say(f"load average {os.getloadavg()[0]:.2f}")

        step("the manually keyed reference: one SA, aggregate over (c1, g1) and (c2, g2)")
        cl, gw = manual_configs(lab)
        start_raw(lab, "gw", lab.gw, gw)
        start_raw(lab, "cl", lab.cl, cl)
        tunnel_pings(lab)
        manual = iperf(lab, a.seconds)
        report(f"manual SA, aggregate over {RATES[0]} + {RATES[1]} Mbit/s: {manual:.1f} Mbit/s")
        lab.close()

        mif_cfg = has(binary, "soft-handover") and accepts(
            binary, work, kit.render("mifsec-mif-gateway.toml", PSK=kit.PSK,
                                     SOCK=str(work / "p.sock"), CONN="mif = true"))
        step(f"IKEv2 between the two mifsec peers: {a.children} child SAs on one IKE SA")
        clone_ok = has(binary, "clone")
        conn = 'path_check_delay = "0"' + ("\nmif = true" if mif_cfg else "")
        if clone_ok:
            # Child cN is kept for the clone (not negotiated on the first IKE SA).
            conn += f'\nclone_children = ["c{a.children}"]'
        nconf = a.children + 1 if clone_ok else a.children
        child = 'policy = "aggregate"' if mif_cfg else ""
        lab.start_pair(nconf, conn=conn, child=child,
                       gw_conn="mif = true" if mif_cfg else "",
                       gw_child='policy = "aggregate"' if mif_cfg else "")
        for side in ("cl", "gw"):
            kit.wait_until(lambda s=side: kit.installed_children(lab.status(s)) == a.children,
                           60, lambda s=side: f"{s}: not {a.children} children\n"
                           f"{lab.log(s)[-3000:]}")
        st = lab.status("cl")
        ike = st["ike_sas"][0]
        say(f"IKE SA {ike.get('local')} -> {ike.get('remote')}, {a.children} children installed")
        # In use only if the peers negotiated it: a dry run answers then.
        mif_info = (ike.get("mif") or {}) if mif_cfg else {}
        chk = lab.mifsec("cl", "ctl", "mif", "mif", "check", "c2", "--all", check=False) \
            if mif_cfg else None
        mif_ok = bool(mif_info.get("in_use") and mif_info.get("local_interfaces")
                      and chk is not None and chk.returncode == 0
                      and "refused" not in (chk.stdout + chk.stderr).lower())
        if mif_cfg and not mif_ok:
            say(f"extension negotiated: {bool(mif_info.get('in_use'))}, interfaces announced: "
                f"{mif_info.get('local_interfaces')}; check c2: "
                f"{(chk.stdout + chk.stderr).strip()[:200] if chk else ''}")
        say("the multi-interface extension is in use" if mif_ok else
            "the multi-interface extension is not available in this build: standard IKEv2")
        tunnel_pings(lab)
        ikerate = iperf(lab, a.seconds)
        report(f"IKE-negotiated child 0{' (aggregate, m x n paths)' if mif_ok else ' (one path)'}: "
               f"{ikerate:.1f} Mbit/s = {100 * ikerate / manual:.1f}% of the manual SA")

        # The client's paths at 10 Hz from here to the end of the blackhole, for plot.py.
        sampler = kit.StatusSampler(binary, lab.sock("cl"), work / "samples.jsonl", hz=10,
                                    limit=120, slim=True).start()
        step(f"soft handover of all {a.children} children from c1 to c2, one exchange, "
             "under 10,000 packets/s")
        if not mif_ok:
            report("soft handover: not available in this build")
        else:
            mif(lab, "remove", "c2", "--all")  # start from c1 only
            cap = Capture(lab.cl, work / "soft.pcap")
            s = StreamRun(lab, stream_bin, a.children, 10_000, 4, "soft")
            time.sleep(1.5)  # 1.5 s of the stream before the handover, on purpose
            t0 = time.time()
            out = mif(lab, "soft-handover", "c1", "c2", "--all")
            say(out.splitlines()[0] if out else "")
            r = s.wait()
            t1 = time.time()
            tally = kit.tally(cap.stop(), t0, t1)
            report(f"soft handover: on the wire {tally}; stream {line(r)}")

        step("interface c2 removed from every child, then added back")
        if not mif_ok:
            report("remove / add interface: not available in this build")
        else:
            s = StreamRun(lab, stream_bin, a.children, 1000, 4, "remove")
            time.sleep(1)  # a second of the stream first, on purpose
            mif(lab, "remove", "c2", "--all")
            time.sleep(1)  # a second on c1 alone, on purpose
            mif(lab, "add", "c2", "--all")
            r = s.wait()
            report(f"remove c2 and add it back at 1,000 packets/s: {line(r)}")

        step("c1 silently blackholed in the middle (no link event), then back")
        s = StreamRun(lab, stream_bin, a.children, 1000, 6, "blackhole")
        time.sleep(1.5)  # the stream first, on purpose
        lab.blackhole("cl", 0)
        t_bh = time.time()
        time.sleep(3)  # three seconds of the failure, on purpose
        lab.blackhole("cl", 0, on=False)
        r = s.wait()
        report(f"c1 blackholed for 3 s at 1,000 packets/s: {line(r)} (longest gap from "
               f"{r['longest_gap_from'] - t_bh:+.2f} s after the failure)")
        samples = sampler.stop()
        sampler = None

        step("a clone of the IKE SA on the second link (RFC 7791)")
        if not clone_ok:
            report("clone: not available in this build")
        else:
            cap = Capture(lab.cl, work / "clone.pcap")
            t0 = time.time()
            r = lab.mifsec("cl", "ctl", "clone", "mif", "--local", C2, "--child",
                           f"c{a.children}", check=False)
            say((r.stdout + r.stderr).strip()[:300])
            if r.returncode != 0:
                raise RuntimeError(f"ctl clone: {r.stdout}{r.stderr}")

            def clone_up():
                ikes = lab.status("cl").get("ike_sas", [])
                return next((i for i in ikes if i.get("cloned_from")
                             and str(i.get("local", "")).startswith(f"{C2}:")
                             and i.get("children")), None)
            kit.wait_until(lambda: clone_up() is not None, 30,
                           lambda: f"no clone on c2 with a child\n{lab.log('cl')[-3000:]}")
            n = a.children
            ok_ping = sh(*in_ns(lab.cl, "ping", "-c", "3", "-i", "0.2", "-W", "2", "-I",
                                f"10.50.{n}.1", f"10.60.{n}.1"), check=False).returncode == 0
            tally = kit.tally(cap.stop(), t0, time.time())
            ike = clone_up()
            report(f"clone: a second IKE SA {ike.get('local')} -> {ike.get('remote')} with its "
                   f"own child (10.50.{n}.1 <-> 10.60.{n}.1, ping "
                   f"{'through' if ok_ping else 'FAILED'}); on the wire {tally}")
            if not ok_ping:
                raise RuntimeError("no ping through the clone's child")

        step("report")
        for side, name in (("cl", "client"), ("gw", "gateway")):
            say(f"--- mifsec status ({name})")
            for l in lab.mifsec(side, "status").stdout.splitlines()[:40]:
                say(l)
        print()
        for l in REPORT:
            say(l)
        say(f"load average {os.getloadavg()[0]:.2f}")
        for f in results(a, samples):
            say(f"wrote {f}")
        ok = True
    except Exception as e:  # noqa: BLE001
        print(f"\ndemo FAILED at step {STEP[0]}: {e}\nlogs: {work}", file=sys.stderr)
    finally:
        if sampler is not None:
            sampler.stop()
        lab.down()
        if ok and not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("\ndemo done" if ok else "")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
