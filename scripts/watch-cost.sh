#!/usr/bin/env bash
# What one `mifsec status --watch --json` sample costs, in the daemon and in the client.
#
# The one-link lab (scripts/lab.sh) with 100 manual SA pairs (LAB_MIFSEC_SAS=100), no
# traffic. Over a window of WATCH_SECONDS (default 10) each, alternately ROUNDS times
# (default 2): the client daemon unwatched, then watched by `mifsec status --watch --json
# --interval 0.05` (its output into a file, as scripts/bench-e2e.sh's case sas100_watched).
# CPU time (utime + stime, /proc/PID/stat) of the daemon and of the watcher over each
# window, and the samples the watcher wrote: the daemon's CPU per sample is (watched -
# unwatched) / samples, the client's is its own CPU / samples. With WATCH_PERF=1 the last
# watched window is also profiled (perf record -g, software clock cpu-clock at 999 Hz,
# daemon and watcher), and the top symbols of each are printed.
#
#   scripts/watch-cost.sh                       target/release/mifsec
#   MIFSEC_BIN=/path/mifsec scripts/watch-cost.sh
#   WATCH_PREFIX=w7 WATCH_SECONDS=10 ROUNDS=2 WATCH_PERF=1 scripts/watch-cost.sh
#
# Prints one JSON object (rounds and medians). Needs root. Namespaces ${WATCH_PREFIX:-mfw}{cl,gw}.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lab.sh
source scripts/lab.sh
[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }

P=${WATCH_PREFIX:-mfw}
SECS=${WATCH_SECONDS:-10}
ROUNDS=${ROUNDS:-2}
WORK=$(mktemp -d /tmp/mifsec-watch-cost.XXXXXX)
chmod 711 "$WORK"
HZ=$(getconf CLK_TCK)

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ -f "$WORK/watch.pid" ] && lab_kill_pids "$(cat "$WORK/watch.pid")"
  mifsec_stop "$WORK" 2>/dev/null || true
  lab_down "$P"
  lab_log "work folder: $WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

lab_up_one_link "$P"
LAB_MIFSEC_SAS=100 mifsec_configs "$WORK" failover 1 none
mifsec_start "$WORK" "$P"
mifsec_wait_tunnel "$P"
DPID=$(cat "$WORK/client.pid")
# Let the start settle (the first probes, the TUN's router solicitations).
n=0
until [ "$(mifsec_status "$WORK" client --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["sas"]))')" = 100 ]; do
  n=$((n + 1))
  ((n < 50)) || lab_die "the client daemon does not show 100 SAs"
  sleep 0.2
done

: >"$WORK/rounds.jsonl"
for ((k = 1; k <= ROUNDS; k++)); do
  for mode in unwatched watched; do
    out="$WORK/watch-$k.jsonl"
    wpid="" s0=0 s1=0 w0=0 w1=0
    if [ "$mode" = watched ]; then
      "$MIFSEC_BIN" status --watch --json --interval 0.05 --socket "$WORK/client.sock" >"$out" 2>"$WORK/watch-$k.log" &
      wpid=$!
      echo "$wpid" >"$WORK/watch.pid"
      # The window starts at the first sample.
      for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
      [ -s "$out" ] || lab_die "the watcher wrote no sample in 5 s"
      if ((k == ROUNDS)) && [ "${WATCH_PERF:-0}" = 1 ] && command -v perf >/dev/null; then
        perf record -q -g -e cpu-clock -F 999 -o "$WORK/perf-daemon.data" -p "$DPID" >"$WORK/perf-daemon.log" 2>&1 &
        echo $! >"$WORK/perf-daemon.pid"
        perf record -q -g -e cpu-clock -F 999 -o "$WORK/perf-client.data" -p "$wpid" >"$WORK/perf-client.log" 2>&1 &
        echo $! >"$WORK/perf-client.pid"
      fi
    fi
    d0=$(lab_cpu_ticks "$DPID")
    [ -n "$wpid" ] && w0=$(lab_cpu_ticks "$wpid") && s0=$(wc -l <"$out")
    t0=$(date +%s.%N)
    sleep "$SECS"
    d1=$(lab_cpu_ticks "$DPID")
    t1=$(date +%s.%N)
    [ -n "$wpid" ] && w1=$(lab_cpu_ticks "$wpid") && s1=$(wc -l <"$out")
    for f in "$WORK"/perf-*.pid; do
      [ -f "$f" ] || continue
      kill -INT "$(cat "$f")" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$(cat "$f")" 2>/dev/null || break; sleep 0.1; done
      rm -f "$f"
    done
    if [ -n "$wpid" ]; then
      lab_kill_pids "$wpid"
      wait "$wpid" 2>/dev/null || true
      rm -f "$WORK/watch.pid"
    fi
    python3 -c 'import json, sys
k, mode, hz, d0, d1, w0, w1, s0, s1, t0, t1 = sys.argv[1:]
hz = int(hz)
print(json.dumps({"round": int(k), "mode": mode, "seconds": round(float(t1) - float(t0), 3),
                  "daemon_cpu_s": (int(d1) - int(d0)) / hz, "watcher_cpu_s": (int(w1) - int(w0)) / hz,
                  "samples": int(s1) - int(s0)}))' \
      "$k" "$mode" "$HZ" "$d0" "$d1" "$w0" "$w1" "$s0" "$s1" "$t0" "$t1" >>"$WORK/rounds.jsonl"
    lab_log "round $k $mode: $(tail -n 1 "$WORK/rounds.jsonl")"
  done
done
bytes=$(head -n 1 "$WORK/watch-1.jsonl" | wc -c)

for side in daemon client; do
  [ -f "$WORK/perf-$side.data" ] || continue
  perf report -i "$WORK/perf-$side.data" --stdio --no-children -g none --sort sym --percent-limit 1 \
    2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 25 >"$WORK/perf-$side.txt" || true
  perf report -i "$WORK/perf-$side.data" --stdio --children -g none --sort sym --percent-limit 3 \
    2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 40 >"$WORK/perf-$side-children.txt" || true
  {
    echo "== $side: self time, top symbols (perf record -g -e cpu-clock -F 999)"
    cat "$WORK/perf-$side.txt"
    echo "== $side: with children (callers' share)"
    cat "$WORK/perf-$side-children.txt"
  } >&2
done

python3 - "$WORK/rounds.jsonl" "$bytes" "$SECS" <<'PY'
import json, sys
rs = [json.loads(l) for l in open(sys.argv[1])]
def med(v):
    v = sorted(v); n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2
un = [r for r in rs if r["mode"] == "unwatched"]
wa = [r for r in rs if r["mode"] == "watched"]
d_un = med([r["daemon_cpu_s"] / r["seconds"] for r in un])
d_wa = med([r["daemon_cpu_s"] / r["seconds"] for r in wa])
sps = med([r["samples"] / r["seconds"] for r in wa])
cl = med([r["watcher_cpu_s"] / r["seconds"] for r in wa])
print(json.dumps({
    "window_s": float(sys.argv[3]), "sas": 100, "interval_s": 0.05, "sample_bytes": int(sys.argv[2]),
    "samples_per_s": round(sps, 2),
    "daemon_cpu_share_unwatched": round(d_un, 4), "daemon_cpu_share_watched": round(d_wa, 4),
    "daemon_cpu_ms_per_sample": round(1000 * (d_wa - d_un) / sps, 3) if sps else None,
    "client_cpu_share": round(cl, 4),
    "client_cpu_ms_per_sample": round(1000 * cl / sps, 3) if sps else None,
    "rounds": rs,
}, indent=1))
PY
