#!/usr/bin/env python3
"""Plots of a mifsec run: per-path throughput and RTT over time, from status samples.

    scripts/plot.py SAMPLES.jsonl [--out-dir DIR] [--prefix NAME] [--title TEXT]
                    [--group auto|sa|path] [--window S]

SAMPLES.jsonl holds one `mifsec status --json` object per line with a top-level field "t"
(Unix time, float seconds): what `mifsec status --watch --json` writes, and what
`mifsec_testkit.StatusSampler` (testkit/python) writes by polling `status --json`.

Writes two PNGs into --out-dir (default: beside the samples), named after --prefix (default:
the samples' file name without its extension):
  PREFIX-throughput.png   ESP Mbit/s sent (top) and received (bottom) on every path, from the
                          differences of the paths' byte counters over --window seconds
                          (0.25), so the figure does not depend on the sampling rate
  PREFIX-rtt.png          every path's smoothed probe RTT (ms) as the engine reports it
Both carry markers at the events derived from successive samples: a path's role changed
(handover: active <-> standby / alternate), paths of an SA replaced by others between two
samples (handover: a move between interfaces renames the paths), a path gone from an SA
that is still there (removal), a path added to one, a path that went from up to down or lost its socket
(failure) and one that came back up. Events at the same instant on many SAs (one operation
on 50 children) are one marker with a count.

Paths are the lines: `SA/PATH` for up to four SAs (--group sa), else one line per path name
summed over every SA (the MIF lab's i1r1 .. i2r2 of 50 children; --group path). An IKE child
is named by its connection and child (`mif/c0`), so that a rekey (a new engine SA with a new
name) continues its line.

matplotlib is optional: without it this prints a note and exits 0 (scripts/test.sh
installs it). The derivation (load_samples, rates, events) needs only the standard library.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import defaultdict
from pathlib import Path

# Marker colour and legend name of each kind of event.
EVENT_STYLE = {
    "handover": ("tab:purple", "handover"),
    "removed": ("tab:red", "path removed"),
    "added": ("tab:green", "path added"),
    "failure": ("black", "path down"),
    "recovered": ("tab:olive", "path up again"),
}


def load_samples(path: Path) -> list[dict]:
    """The samples of a JSON-lines file (gzipped if its name ends in .gz), in time order;
    lines that are not a status object
    with a numeric "t" (a torn last line of a killed sampler) are skipped."""
    out = []
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                s = json.loads(line)
            except ValueError:
                continue
            if isinstance(s, dict) and isinstance(s.get("t"), (int, float)):
                out.append(s)
    out.sort(key=lambda s: s["t"])
    return out


def owners(sample: dict) -> dict[str, str]:
    """Engine SA name -> `conn/child` for the IKE children of a sample."""
    m = {}
    for ike in sample.get("ike_sas") or []:
        for c in ike.get("children") or []:
            if isinstance(c, dict) and c.get("sa"):
                m[c["sa"]] = f"{ike.get('name', '?')}/{c.get('name', '?')}"
    return m


def paths_of(sample: dict) -> dict[tuple[str, str], dict]:
    """(SA label, path name) -> the path's status, plus "_sa": the engine SA's name."""
    own = owners(sample)
    out = {}
    for sa in sample.get("sas") or []:
        if not isinstance(sa, dict):
            continue
        name = sa.get("name", "?")
        label = own.get(name, name)
        for p in sa.get("paths") or []:
            if isinstance(p, dict):
                out[(label, p.get("name", "?"))] = dict(p, _sa=name)
    return out


def sa_labels(sample: dict) -> set[str]:
    own = owners(sample)
    return {own.get(sa.get("name"), sa.get("name")) for sa in sample.get("sas") or []
            if isinstance(sa, dict)}


def choose_group(samples: list[dict], group: str) -> str:
    if group != "auto":
        return group
    labels = set()
    for s in samples:
        labels |= sa_labels(s)
    return "sa" if len(labels) <= 4 else "path"


def line_key(label: str, path: str, group: str) -> str:
    return f"{label}/{path}" if group == "sa" else path


def rates(samples: list[dict], group: str, window: float = 0.25) -> dict[str, dict]:
    """Per line: times, tx and rx Mbit/s (ESP bytes over `window` seconds or more) and RTT
    (ms, the mean over the SAs of the line). A counter that went back (a re-created SA of
    the same name) gives no figure for that interval."""
    series: dict[str, dict] = defaultdict(lambda: {"t": [], "tx": [], "rx": [],
                                                   "rtt_t": [], "rtt": []})
    parsed = [(s["t"], paths_of(s)) for s in samples]
    j = 0
    for i, (t, now) in enumerate(parsed):
        while j < i and t - parsed[j + 1][0] >= window:
            j += 1
        t0, before = parsed[j]
        dt = t - t0
        sums: dict[str, list[float]] = {}
        rtts: dict[str, list[float]] = defaultdict(list)
        for (label, path), p in now.items():
            key = line_key(label, path, group)
            rtt = p.get("rtt_ms")
            if isinstance(rtt, (int, float)):
                rtts[key].append(float(rtt))
            if j == i or dt <= 0:
                continue
            b = before.get((label, path))
            if b is None or b.get("_sa") != p.get("_sa"):
                continue
            dtx = (p.get("tx_bytes") or 0) - (b.get("tx_bytes") or 0)
            drx = (p.get("rx_bytes") or 0) - (b.get("rx_bytes") or 0)
            if dtx < 0 or drx < 0:
                continue
            acc = sums.setdefault(key, [0.0, 0.0])
            acc[0] += dtx * 8 / dt / 1e6
            acc[1] += drx * 8 / dt / 1e6
        for key, (tx, rx) in sums.items():
            series[key]["t"].append(t)
            series[key]["tx"].append(tx)
            series[key]["rx"].append(rx)
        for key, vals in rtts.items():
            series[key]["rtt_t"].append(t)
            series[key]["rtt"].append(sum(vals) / len(vals))
    return dict(series)


def events(samples: list[dict]) -> list[dict]:
    """Role and state changes, removals and additions of paths between successive samples:
    {"t", "kind", "sa", "path", "text"}, in time order."""
    out = []
    for prev, cur in zip(samples, samples[1:]):
        a, b = paths_of(prev), paths_of(cur)
        live = sa_labels(prev) & sa_labels(cur)
        t = cur["t"]
        gone: dict[str, list[str]] = defaultdict(list)
        new: dict[str, list[str]] = defaultdict(list)
        for key in sorted(set(a) | set(b)):
            label, path = key
            pa, pb = a.get(key), b.get(key)
            if label not in live:
                continue  # the SA itself came or went (started, rekeyed away, deleted)
            if pa is not None and pb is None:
                gone[label].append(path)
            elif pa is None and pb is not None:
                new[label].append(path)
            else:
                ra, rb = pa.get("role"), pb.get("role")
                if ra != rb:
                    out.append({"t": t, "kind": "handover", "sa": label, "path": path,
                                "text": f"{label} {path} {ra} -> {rb}"})
                sa_, sb = pa.get("state"), pb.get("state")
                if sa_ == "up" and sb in ("down", "no-socket"):
                    out.append({"t": t, "kind": "failure", "sa": label, "path": path,
                                "text": f"{label} {path} {sa_} -> {sb}"})
                elif sa_ in ("down", "no-socket") and sb == "up":
                    out.append({"t": t, "kind": "recovered", "sa": label, "path": path,
                                "text": f"{label} {path} {sa_} -> {sb}"})
        # Paths replaced by others between two samples (a soft or hard handover between
        # interfaces renames the paths): one handover of the SA; else removals, additions.
        for label in sorted(set(gone) | set(new)):
            g, n = gone.get(label, []), new.get(label, [])
            if g and n:
                moved = f"{','.join(g)} -> {','.join(n)}"
                out.append({"t": t, "kind": "handover", "sa": label, "path": moved,
                            "text": f"{label} {moved}"})
                continue
            for path in g:
                out.append({"t": t, "kind": "removed", "sa": label, "path": path,
                            "text": f"{label} {path} removed"})
            for path in n:
                out.append({"t": t, "kind": "added", "sa": label, "path": path,
                            "text": f"{label} {path} added"})
    out.sort(key=lambda e: e["t"])
    return out


def markers(evs: list[dict], merge: float = 0.3) -> list[dict]:
    """Events of one kind within `merge` seconds of each other as one marker:
    {"t", "kind", "count", "paths"}."""
    out: list[dict] = []
    last: dict[str, dict] = {}
    for e in evs:
        m = last.get(e["kind"])
        if m is not None and e["t"] - m["t_last"] <= merge:
            m["count"] += 1
            m["t_last"] = e["t"]
            m["paths"].add(e["path"])
            continue
        m = {"t": e["t"], "t_last": e["t"], "kind": e["kind"], "count": 1, "paths": {e["path"]}}
        last[e["kind"]] = m
        out.append(m)
    return out


def plot(samples: list[dict], out_dir: Path, prefix: str, title: str = "",
         group: str = "auto", window: float = 0.25) -> list[Path]:
    """Writes PREFIX-throughput.png and PREFIX-rtt.png; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        raise ValueError("no samples")
    group = choose_group(samples, group)
    t0 = samples[0]["t"]
    series = rates(samples, group, window)
    marks = markers(events(samples))
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    span = max(samples[-1]["t"] - t0, 1e-9)

    def draw_marks(axes, label_once: bool) -> None:
        seen = set()
        level, last_x = 0, None
        for m in marks:
            # Labels of markers close together are stacked, not drawn over each other.
            x = m["t"] - t0
            level = level + 1 if last_x is not None and x - last_x < span * 0.04 else 0
            last_x = x
            color, name = EVENT_STYLE[m["kind"]]
            for ax in axes:
                ax.axvline(m["t"] - t0, color=color, linestyle="--", linewidth=1, alpha=0.8,
                           label=name if label_once and m["kind"] not in seen and ax is axes[0]
                           else None)
            seen.add(m["kind"])
            text = m["kind"] if m["count"] == 1 else f"{m['kind']} x{m['count']}"
            axes[0].annotate(text, (x, 1.0 - 0.3 * (level % 3)),
                             xycoords=("data", "axes fraction"), rotation=90, va="top",
                             ha="right", fontsize=7, color=color)

    keys = sorted(series)
    fig, (ax_tx, ax_rx) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    for k in keys:
        s = series[k]
        if s["t"]:
            x = [t - t0 for t in s["t"]]
            ax_tx.plot(x, s["tx"], label=k, linewidth=1.2)
            ax_rx.plot(x, s["rx"], label=k, linewidth=1.2)
    ax_tx.set_ylabel("sent, Mbit/s (ESP)")
    ax_rx.set_ylabel("received, Mbit/s (ESP)")
    ax_rx.set_xlabel("seconds")
    draw_marks([ax_tx, ax_rx], True)
    for ax in (ax_tx, ax_rx):
        ax.grid(True, alpha=0.3)
        ax.set_ylim(bottom=0)
    ax_tx.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title or f"{prefix}: throughput per path")
    fig.tight_layout()
    p = out_dir / f"{prefix}-throughput.png"
    fig.savefig(p, dpi=90, bbox_inches="tight")
    plt.close(fig)
    written.append(p)

    fig, ax = plt.subplots(1, 1, figsize=(10, 4))
    for k in keys:
        s = series[k]
        if s["rtt_t"]:
            ax.plot([t - t0 for t in s["rtt_t"]], s["rtt"], label=k, linewidth=1.2)
    ax.set_ylabel("probe RTT, ms")
    ax.set_xlabel("seconds")
    ax.grid(True, alpha=0.3)
    ax.set_ylim(bottom=0)
    draw_marks([ax], True)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.suptitle(title or f"{prefix}: RTT per path")
    fig.tight_layout()
    p = out_dir / f"{prefix}-rtt.png"
    fig.savefig(p, dpi=90, bbox_inches="tight")
    plt.close(fig)
    written.append(p)
    return written


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_if_possible(samples_file: Path, out_dir: Path | None = None, prefix: str | None = None,
                     title: str = "") -> list[Path]:
    """For the demo and the benchmarks: the PNGs of a samples file, or [] with a note on
    stderr when matplotlib is missing or there is nothing to plot."""
    if not have_matplotlib():
        print("plot.py: matplotlib is not installed (pip install matplotlib): no plots",
              file=sys.stderr)
        return []
    samples = load_samples(samples_file)
    if len(samples) < 2:
        print(f"plot.py: {samples_file}: fewer than two samples, no plots", file=sys.stderr)
        return []
    stem = samples_file.name.removesuffix(".gz").removesuffix(".jsonl")
    return plot(samples, out_dir or samples_file.parent, prefix or stem, title)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("samples", type=Path)
    ap.add_argument("--out-dir", type=Path)
    ap.add_argument("--prefix")
    ap.add_argument("--title", default="")
    ap.add_argument("--group", choices=["auto", "sa", "path"], default="auto")
    ap.add_argument("--window", type=float, default=0.25)
    a = ap.parse_args()
    if not have_matplotlib():
        print("plot.py: matplotlib is not installed (pip install matplotlib); nothing plotted")
        return 0
    samples = load_samples(a.samples)
    if len(samples) < 2:
        print(f"plot.py: {a.samples}: fewer than two samples", file=sys.stderr)
        return 1
    stem = a.samples.name.removesuffix(".gz").removesuffix(".jsonl")
    out = plot(samples, a.out_dir or a.samples.parent, a.prefix or stem, a.title,
               a.group, a.window)
    for e in markers(events(samples)):
        print(f"  {e['t'] - samples[0]['t']:7.2f} s  {e['kind']} x{e['count']} "
              f"({', '.join(sorted(e['paths']))})")
    for p in out:
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
