#!/usr/bin/env bash
# shellcheck disable=SC2317 # the case functions are called indirectly, through run_case
# End-to-end lab benchmark of mifsec against its comparison peers, in one go:
#
#   1. anchors (scripts/anchors.sh): plain veth, strongSwan kernel-libipsec, wireguard-go,
#      boringtun; one unshaped veth between two namespaces, one TCP flow forward and reverse;
#   2. mifsec on the same one-link topology (forward and reverse);
#   3. mifsec multipath (scripts/lab.sh two-link lab, both links through a middle namespace):
#      - aggregation: links shaped 200+100 and 300+30 Mbit/s, policy aggregate (weights =
#        link rates), one TCP flow forward and reverse;
#      - failover: policy failover (p1 active, p2 standby), link 1 silently blackholed under a
#        1000 pps udpseq stream: longest gap and loss;
#      - soft handover: `mifsec ctl handover tunnel p2` under a 10,000 pps udpseq stream: loss;
#      - hard handover: link 1 blackholed, 50 ms later `mifsec ctl handover tunnel p2 --hard`
#        under a 1000 pps udpseq stream: longest gap and loss (how soon traffic resumes);
#      - the daemons' RSS (VmRSS every second) over each case: first/last/max.
#
#   scripts/bench-e2e.sh                  everything (iperf3 -t 10)
#   scripts/bench-e2e.sh --anchors-only   only step 1
#   scripts/bench-e2e.sh --mifsec-only    only steps 2 and 3 (no ratios then)
#   E2E_CASES="soak" scripts/bench-e2e.sh --mifsec-only   only the named mifsec cases
#   E2E_OUT=FILE   write the JSON there instead of bench/results/latest.json
#   IPERF_SECONDS=5 scripts/bench-e2e.sh  shorter iperf runs
#   MIFSEC_BIN=/path/mifsec scripts/bench-e2e.sh   use that binary, do not build
#
# Prints a table and writes bench/results/latest.json with every figure and the ratios
# (mifsec / best anchor, mifsec / plain). Needs root. Exits non-zero if any part failed (the
# figures that were measured are still written). Namespaces: ${E2E_PREFIX:-mfe}{cl,mid,gw}.
set -euo pipefail
# Command substitutions ($(...)) keep errexit, so a failing step inside one fails its case.
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
BUILD=1
[ -n "${MIFSEC_BIN:-}" ] && BUILD=0
# shellcheck source=scripts/lab.sh
source scripts/lab.sh

ANCHORS_ONLY=0
MIFSEC_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --anchors-only) ANCHORS_ONLY=1 ;;
    --mifsec-only) MIFSEC_ONLY=1 ;;
    -h | --help)
      sed -n '2,25p' "$0"
      exit 0
      ;;
    *)
      echo "usage: $0 [--anchors-only | --mifsec-only]" >&2
      exit 2
      ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }

T=${IPERF_SECONDS:-10}
P=${E2E_PREFIX:-mfe}
WORK=$(mktemp -d /tmp/mifsec-e2e.XXXXXX)
chmod 711 "$WORK" # the daemons drop root and must reach their state directories inside
RES=$WORK/results
mkdir -p "$RES" bench/results
failed=0

step() { printf '\n==> %s\n' "$*" >&2; }
log() { printf '[e2e] %s\n' "$*" >&2; }

# Stops whatever a case left behind: RSS samplers and daemons (by pid files), the lab.
case_cleanup() {
  local d
  for d in "$WORK"/case-*; do
    [ -d "$d" ] || continue
    mifsec_rss_stop "$d" >/dev/null 2>&1 || true
    mifsec_stop "$d" 2>/dev/null || true
  done
  lab_down "$P"
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  case_cleanup
  log "work folder (logs, configs, raw results): $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. anchors -------------------------------------------------------------------------

lab_need_tools
ANCHORS=(plain strongswan wireguard-go boringtun)
((MIFSEC_ONLY)) && ANCHORS=()
for a in "${ANCHORS[@]}"; do
  step "anchor $a (iperf3 -t $T, forward and reverse)"
  if IPERF_SECONDS=$T ANCHOR_PREFIX="${P}a" scripts/anchors.sh "$a" >"$RES/anchor-$a.json" 2>"$WORK/anchor-$a.log"; then
    cat "$RES/anchor-$a.json" >&2
  else
    failed=1
    log "anchor $a FAILED; last lines of $WORK/anchor-$a.log:"
    tail -n 5 "$WORK/anchor-$a.log" | sed 's/^/    /' >&2
    printf '{"name": "%s", "error": "failed, see %s"}\n' "$a" "$WORK/anchor-$a.log" >"$RES/anchor-$a.json"
  fi
done

# --- 2./3. mifsec -----------------------------------------------------------------------

# start_mifsec DIR POLICY W1 W2: configs, daemons, RSS sampling, a working tunnel.
start_mifsec() {
  mifsec_configs "$1" "$2" "${3:-1}" "${4:-1}"
  mifsec_start "$1" "$P"
  mifsec_rss_start "$1"
  mifsec_wait_tunnel "$P"
}

# finish_case DIR JSON_FRAGMENT: stops the daemons and writes the case's result with RSS and
# the client's per-path counters (how the traffic was split), from `mifsec status --json`.
finish_case() {
  local dir=$1 rss status
  status=$(mifsec_status "$dir" client --json 2>/dev/null) || status='{}'
  rss=$(mifsec_rss_stop "$dir")
  mifsec_stop "$dir"
  lab_down "$P"
  python3 - "$2" "$rss" "$status" >"$dir/result.json" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
r["rss"] = json.loads(sys.argv[2])
try:
    status = json.loads(sys.argv[3])
except ValueError:
    status = {}
# The status schema belongs to the daemon: take what is there, keep the case result if not.
paths = {}
for sa in status.get("sas", []) if isinstance(status, dict) else []:
    for p in sa.get("paths", []) if isinstance(sa, dict) else []:
        if isinstance(p, dict) and "name" in p:
            paths[p["name"]] = {k: p[k] for k in ("state", "role", "tx_bytes", "rx_bytes", "tx_packets", "rx_packets") if k in p}
if paths:
    r["client_paths"] = paths
print(json.dumps(r))
PY
}

# iperf_case DIR: one TCP flow through the tunnel, forward and reverse -> JSON fragment.
iperf_case() {
  local rates fwd rev
  rates=$(lab_iperf "${P}gw" 10.2.0.1 "${P}cl" "$T" "$1/iperf" 10.1.0.1)
  read -r fwd rev <<<"$rates"
  log "forward $fwd Mbit/s, reverse $rev Mbit/s"
  echo "{\"forward_mbps\": $fwd, \"reverse_mbps\": $rev}"
}

case_one_link() {
  local dir=$1 frag
  lab_up_one_link "$P"
  start_mifsec "$dir" failover 1 none
  frag=$(iperf_case "$dir")
  finish_case "$dir" "$frag"
}

case_aggregate() { # DIR R1 R2
  local dir=$1 r1=$2 r2=$3 frag
  lab_up_two_links "$P" "$r1" "$r2"
  start_mifsec "$dir" aggregate "$r1" "$r2"
  frag=$(iperf_case "$dir")
  frag=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1]); a, b = int(sys.argv[2]), int(sys.argv[3])
r["links_mbit"] = [a, b]
for d in ("forward", "reverse"):
    r[d + "_vs_sum_of_links"] = round(r[d + "_mbps"] / (a + b), 3)
    r[d + "_vs_fastest_link"] = round(r[d + "_mbps"] / max(a, b), 3)
print(json.dumps(r))' "$frag" "$r1" "$r2")
  finish_case "$dir" "$frag"
}

# case_single DIR R1 R2: the same shaped lab, policy failover, everything on link 1 alone:
# the same-run reference an aggregate must beat.
case_single() {
  local dir=$1 r1=$2 r2=$3 frag
  lab_up_two_links "$P" "$r1" "$r2"
  start_mifsec "$dir" failover "$r1" "$r2"
  frag=$(iperf_case "$dir")
  frag=$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["link_mbit"]=int(sys.argv[2]); print(json.dumps(r))' "$frag" "$r1")
  finish_case "$dir" "$frag"
}

# case_soak DIR: one TCP flow at full rate for SOAK_SECONDS (default 300) on the one-link
# lab; the engine's resident memory after warm-up (30 s in) against the end.
case_soak() {
  local dir=$1 secs=${SOAK_SECONDS:-300} rate frag
  lab_up_one_link "$P"
  start_mifsec "$dir" failover 1 none
  rate=$(lab_iperf "${P}gw" 10.2.0.1 "${P}cl" "$secs" "$dir/iperf" 10.1.0.1 fwd)
  log "soak: $rate Mbit/s for $secs s"
  frag=$(python3 - "$dir" "$rate" "$secs" <<'PY'
import json, os, sys
d, rate, secs = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
r = {"forward_mbps": rate, "seconds": secs}
for side in ("client", "gateway"):
    f = os.path.join(d, f"rss-{side}.txt")
    v = [int(x) for x in open(f).read().split()] if os.path.exists(f) else []
    if len(v) > 40:
        warm, last = v[30], v[-1]
        r[side + "_rss_kb_at_30s"] = warm
        r[side + "_rss_kb_last"] = last
        r[side + "_rss_growth_after_warmup"] = round(last / warm - 1, 4)
print(json.dumps(r))
PY
)
  finish_case "$dir" "$frag"
}

case_failover() {
  local dir=$1 res
  lab_up_two_links "$P" 200 100
  start_mifsec "$dir" failover 200 100
  sleep 1 # let the path probes settle
  res=$(mifsec_udpseq "$dir" 1000 8 2 lab_blackhole_link1 "$P")
  res=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
keep = ("sent", "received", "lost", "longest_gap_ms", "recovered", "duplicates", "reordered", "loss_timeline")
print(json.dumps({"pps": 1000, **{k: r[k] for k in keep}}))' "$res")
  finish_case "$dir" "$res"
}

case_handover() {
  local dir=$1 res
  lab_up_two_links "$P" 200 100
  start_mifsec "$dir" failover 200 100
  sleep 1
  res=$(mifsec_udpseq "$dir" 10000 6 2 mifsec_ctl_both "$dir" handover tunnel p2)
  res=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
keep = ("sent", "received", "lost", "longest_gap_ms", "duplicates", "reordered", "loss_timeline")
print(json.dumps({"pps": 10000, **{k: r[k] for k in keep}}))' "$res")
  finish_case "$dir" "$res"
}

# The hard handover's event: link 1 goes dark silently, 50 ms later both sides move to p2 at
# once (before the probes could declare p1 down).
blackhole_then_hard_handover() {
  local dir=$1
  lab_blackhole_link1 "$P"
  sleep 0.05 # the 50 ms of traffic into the blackhole that the handover must end
  mifsec_ctl_both "$dir" handover tunnel p2 --hard
}

case_hard_handover() {
  local dir=$1 res
  lab_up_two_links "$P" 200 100
  start_mifsec "$dir" failover 200 100
  sleep 1 # let the path probes settle
  res=$(mifsec_udpseq "$dir" 1000 6 2 blackhole_then_hard_handover "$dir")
  res=$(python3 -c '
import json, sys
r = json.loads(sys.argv[1])
keep = ("sent", "received", "lost", "longest_gap_ms", "duplicates", "reordered", "loss_timeline")
print(json.dumps({"pps": 1000, **{k: r[k] for k in keep}}))' "$res")
  finish_case "$dir" "$res"
}

# run_case NAME FUNCTION ARGS...: runs FUNCTION WORKDIR ARGS... in a subshell with errexit
# (so any failing command ends the case), records an error result if it fails, and always
# cleans up after it.
DAEMON_MISSING=0
run_case() {
  local name=$1 dir=$WORK/case-$1 rc=0
  shift
  if [ -n "${E2E_CASES:-}" ] && [[ " $E2E_CASES " != *" $name "* ]]; then
    return 0
  fi
  mkdir -p "$dir"
  step "mifsec: $name"
  if ((DAEMON_MISSING)); then
    log "skipped: the daemon did not start in an earlier case"
    echo '{"error": "skipped: the mifsec daemon did not start"}' >"$RES/mifsec-$name.json"
    failed=1
    return 0
  fi
  # errexit applies inside the subshell (it is not in a condition), not to the caller.
  set +e
  (
    set -e
    # Clean up from inside too: daemons left running would hold the pipe to tee open.
    trap case_cleanup EXIT
    "$1" "$dir" "${@:2}"
  ) 2>&1 | tee "$dir/case.log" >&2
  rc=${PIPESTATUS[0]}
  set -e
  case_cleanup
  if ((rc == 0)) && [ -s "$dir/result.json" ]; then
    cp "$dir/result.json" "$RES/mifsec-$name.json"
  else
    failed=1
    local msg
    # No ERROR line is normal for a case that failed otherwise: grep's status must not end
    # the script (errexit + pipefail).
    msg=$({ grep -h 'ERROR' "$dir/case.log" 2>/dev/null || true; } | tail -n 1 | sed 's/^\[lab\] ERROR: //')
    [ -n "$msg" ] || msg="failed (exit $rc), see $dir/case.log"
    grep -q 'did not start' "$dir/case.log" 2>/dev/null && DAEMON_MISSING=1
    python3 -c 'import json, sys; print(json.dumps({"error": sys.argv[1]}))' "$msg" >"$RES/mifsec-$name.json"
    log "mifsec $name FAILED: $msg"
  fi
}

if ((!ANCHORS_ONLY)); then
  if ((BUILD)); then
    step "building target/release/mifsec"
  else
    step "using $MIFSEC_BIN (MIFSEC_BIN set: no build)"
  fi
  if ((!BUILD)) || mifsec_build >"$WORK/build.log" 2>&1; then
    run_case one_link case_one_link
    run_case aggregate_200_100 case_aggregate 200 100
    run_case single_200_of_200_100 case_single 200 100
    run_case aggregate_300_30 case_aggregate 300 30
    run_case single_300_of_300_30 case_single 300 30
    run_case failover_blackhole case_failover
    run_case soft_handover case_handover
    run_case hard_handover case_hard_handover
    ((${SOAK_SECONDS:-300} > 0)) && run_case soak case_soak
  else
    failed=1
    log "cargo build --release -p mifsec-control failed; last lines of $WORK/build.log:"
    tail -n 10 "$WORK/build.log" | sed 's/^/    /' >&2
    echo '{"error": "cargo build --release -p mifsec-control failed"}' >"$RES/mifsec-build.json"
  fi
  if ((DAEMON_MISSING)); then
    log "the mifsec daemon did not start: the mifsec figures need the packet engine and daemon (README 'State')"
  fi
fi

# --- report ----------------------------------------------------------------------------

step "results"
python3 - "$RES" "${E2E_OUT:-bench/results/latest.json}" "$T" "$ANCHORS_ONLY" <<'PY'
import glob, json, os, platform, sys, time

res_dir, out, secs, anchors_only = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
anchors, mifsec = {}, {}
for f in sorted(glob.glob(os.path.join(res_dir, "*.json"))):
    d = json.load(open(f))
    base = os.path.basename(f)[:-5]
    if base.startswith("anchor-"):
        anchors[d["name"]] = d
    else:
        mifsec[base[len("mifsec-"):]] = d

def num(d, k):
    v = d.get(k) if isinstance(d, dict) else None
    return v if isinstance(v, (int, float)) else None

ratios = {}
peers = {k: v for k, v in anchors.items() if k != "plain" and "error" not in v}
one = mifsec.get("one_link", {})
for d in ("forward", "reverse"):
    m = num(one, d + "_mbps")
    best = max(peers.items(), key=lambda kv: kv[1][d + "_mbps"], default=None)
    if best:
        ratios[f"best_anchor_{d}"] = best[0]
    if m is not None and best:
        ratios[f"mifsec_vs_best_anchor_{d}"] = round(m / best[1][d + "_mbps"], 3)
    plain = num(anchors.get("plain", {}), d + "_mbps")
    if m is not None and plain:
        ratios[f"mifsec_vs_plain_{d}"] = round(m / plain, 4)

for agg, single, key in (("aggregate_200_100", "single_200_of_200_100", "agg_200_100_vs_200_alone"),
                         ("aggregate_300_30", "single_300_of_300_30", "agg_300_30_vs_300_alone")):
    for d in ("forward", "reverse"):
        a, s = num(mifsec.get(agg, {}), d + "_mbps"), num(mifsec.get(single, {}), d + "_mbps")
        if a is not None and s:
            ratios[f"{key}_{d}"] = round(a / s, 3)

report = {
    "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    "host": {"kernel": platform.release(), "cores": os.cpu_count(), "load_avg": os.getloadavg()},
    "iperf_seconds": secs,
    "mode": "anchors-only" if anchors_only else ("full" if anchors else "mifsec-only"),
    "anchors": anchors,
    "mifsec": mifsec if not anchors_only else None,
    "ratios": ratios,
    "errors": sorted([f"anchor {k}: {v['error']}" for k, v in anchors.items() if "error" in v]
                     + [f"mifsec {k}: {v['error']}" for k, v in mifsec.items() if "error" in v]),
}
with open(out, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")

def fmt(v, spec=".1f"):
    return format(v, spec) if isinstance(v, (int, float)) else "-"

rows = [("what", "forward Mbit/s", "reverse Mbit/s")]
for name in ("plain", "strongswan", "wireguard-go", "boringtun") if anchors else ():
    a = anchors.get(name, {})
    rows.append((name, fmt(num(a, "forward_mbps")), fmt(num(a, "reverse_mbps")) if "error" not in a else "FAILED"))
if not anchors_only:
    def err(d):
        return "error: " + d["error"][:50] if "error" in d else None
    rows.append(("mifsec, one link", fmt(num(one, "forward_mbps")), err(one) or fmt(num(one, "reverse_mbps"))))
    rows.append(("  / best anchor", fmt(ratios.get("mifsec_vs_best_anchor_forward"), ".2f"),
                 fmt(ratios.get("mifsec_vs_best_anchor_reverse"), ".2f")))
    rows.append(("  / plain", fmt(ratios.get("mifsec_vs_plain_forward"), ".3f"),
                 fmt(ratios.get("mifsec_vs_plain_reverse"), ".3f")))
    for k, label in (("aggregate_200_100", "aggregate 200+100"), ("single_200_of_200_100", "  the 200 link alone"),
                     ("aggregate_300_30", "aggregate 300+30"), ("single_300_of_300_30", "  the 300 link alone")):
        d = mifsec.get(k, {})
        rows.append((label, fmt(num(d, "forward_mbps")), err(d) or fmt(num(d, "reverse_mbps"))))
    for key in ("agg_200_100_vs_200_alone", "agg_300_30_vs_300_alone"):
        rows.append((f"  {key}", fmt(ratios.get(key + "_forward"), ".3f"), fmt(ratios.get(key + "_reverse"), ".3f")))
    d = mifsec.get("soak", {})
    if d:
        rows.append(("soak: Mbit/s / RSS growth after 30 s (client, gateway)", fmt(num(d, "forward_mbps")),
                     err(d) or f"{fmt(num(d, 'client_rss_growth_after_warmup'), '.3f')}, {fmt(num(d, 'gateway_rss_growth_after_warmup'), '.3f')}"))
    d = mifsec.get("failover_blackhole", {})
    rows.append(("failover: longest gap ms / lost", fmt(num(d, "longest_gap_ms")), err(d) or fmt(num(d, "lost"), "d")))
    d = mifsec.get("soft_handover", {})
    rows.append(("soft handover: lost / gap ms", fmt(num(d, "lost"), "d"), err(d) or fmt(num(d, "longest_gap_ms"))))
    d = mifsec.get("hard_handover", {})
    rows.append(("hard handover: longest gap ms / lost", fmt(num(d, "longest_gap_ms")), err(d) or fmt(num(d, "lost"), "d")))
    for k, d in mifsec.items():
        rss = d.get("rss") or {}
        for side in ("client", "gateway"):
            s = rss.get(side)
            if s:
                rows.append((f"RSS kB {k} {side} first/last", f"{s['first_kb']}/{s['last_kb']}", f"max {s['max_kb']}"))
w = [max(len(str(r[i])) for r in rows) for i in range(3)]
for i, r in enumerate(rows):
    print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]}")
    if i == 0:
        print("-" * (w[0] + w[1] + min(w[2], 20) + 4))
print(f"\nwritten: {out}")
for e in report["errors"]:
    print("error:", e)
PY

exit "$failed"
