#!/usr/bin/env bash
# shellcheck disable=SC2317 # the case functions are called indirectly, through run_case
# End-to-end lab benchmark of mifsec against its comparison peers, in one go:
#
#   1. anchors (scripts/anchors.sh): plain veth, strongSwan kernel-libipsec, wireguard-go
#      (Debian's), boringtun; one unshaped veth between two namespaces, one TCP flow forward
#      and reverse;
#   2. the reference and mifsec on the same one-link topology (forward and reverse),
#      alternately, E2E_ROUNDS times (default 2): the current wireguard-go (TUN and UDP
#      offloads; the build in ../shared/anchors/bin or $WIREGUARD_GO_CURRENT; without one,
#      as in CI, the output and the JSON say it is absent), then mifsec, then again. Every
#      tunnel's figures: Mbit/s both ways and CPU seconds (utime + stime of both daemons,
#      from /proc/PID/stat before and after) per GB carried; for mifsec also a sampled
#      profile of the same transfer (perf record -g, software clock cpu-clock at 499 Hz,
#      both daemons) and the AEAD's share of its samples (ring's AES-GCM / ChaCha20-Poly1305
#      code: skipped, and said so, when perf is not installed) and, for mifsec and the
#      current wireguard-go alike, where every other sample
#      went, by kind of work (scripts/perf_breakdown.py: kernel copies, waking, the kernel's
#      work under each data syscall, other user code, the marks thread; breakdown_* in the
#      JSON, a "samples by work" line in the table). The figures of a tunnel are
#      the medians of its rounds; the ratios compare medians of the same run. In every
#      round also mifsec in transport mode (case transport: the manual SA between the hosts'
#      link addresses, TCP routed into the TUN by a rule; transport_vs_tunnel in the ratios)
#      and an IKE-negotiated child (case ike: both daemons negotiate IKEv2 with a PSK, one
#      child with the manual SA's selectors and cipher, the same dataplane settings;
#      ike_vs_manual and ike_cpu_per_gb_vs_manual in the ratios). one_link and ike also record
#      fast_path: the engine SA's kind, workers, offloads and how far the offload counters
#      (TUN super-packets, UDP GSO sends, GRO trains) grew; ike_fast_path_differs lists what
#      differs between the two (empty: the same batched path);
#   3. mifsec multipath (scripts/lab.sh two-link lab, both links through a middle namespace):
#      - aggregation: links shaped 200+100 and 300+30 Mbit/s, policy aggregate (weights =
#        link rates), one TCP flow forward and reverse;
#      - failover: policy failover (p1 active, p2 standby), link 1 silently blackholed under a
#        1000 pps udpseq stream: longest gap and loss;
#      - soft handover: `mifsec ctl handover tunnel p2` under a 10,000 pps udpseq stream: loss;
#      - hard handover: link 1 blackholed, 50 ms later `mifsec ctl handover tunnel p2 --hard`
#        under a 1000 pps udpseq stream: longest gap and loss (how soon traffic resumes);
#      - the daemons' RSS (VmRSS every second) over each case: first/last/max;
#      - every mifsec case's "drops": what each daemon counted (per SA and reason, and outside
#        SAs, non-zero only) and, per namespace, the kernel's TUN queue drops (tx_dropped of
#        mifsec0) and UDP receive-buffer errors, read at the end of the case, so that a loss
#        is explained by them or by the links.
#   4. in the same rounds as step 2, on the same one-link lab (cases of their own, so
#      E2E_CASES can pick them; with --reference too):
#      - udp_small: iperf3 UDP forward at unlimited rate (-b 0; E2E_UDP_RATE to fix one),
#        64- and 512-byte datagrams (E2E_UDP_SIZES), IPERF_SECONDS each, through the plain
#        veth, the current wireguard-go and mifsec: packets per second delivered (the
#        receiver's figure), sent, lost, and the daemons' CPU seconds per million packets
#        delivered; JSON "small_packets", ratio mifsec / the current wireguard-go;
#      - parallel4: iperf3 -P 4 (four TCP flows) each way through the current wireguard-go
#        and through mifsec's one SA; sas4: four manual SA pairs (10.1.K.0/24 <-> 10.2.K.0/24,
#        K = 0..3) on the same link, one TCP flow through each at once, each way; Mbit/s and
#        CPU seconds per GB: how the packet workers scale; JSON "several_flows";
#        sas100 / sas100_watched: 100 SA pairs, one TCP flow through the first, without and
#        with `mifsec status --watch --json --interval 0.05` on both daemons, in the order
#        ABBA over the rounds (samples per second each watcher got; watched_vs_unwatched:
#        the ratio of the medians of Mbit/s and CPU per GB, beside the unwatched rounds'
#        own spread, unwatched_min_over_max and unwatched_cpu_per_gb_max_over_min, and
#        whether the ratio is within it; JSON "watch": every round in the order run).
#        The watch cases alone, as the lead's quiet run:
#          E2E_CASES="sas100 sas100_watched" E2E_ROUNDS=4 IPERF_SECONDS=5 \
#            E2E_OUT=bench/results/e2e-watch-DATE.json scripts/bench-e2e.sh --mifsec-only
#
#   scripts/bench-e2e.sh                  everything (iperf3 -t 10)
#   scripts/bench-e2e.sh --anchors-only   only step 1
#   scripts/bench-e2e.sh --mifsec-only    only steps 2 and 3 (no ratios then)
#   scripts/bench-e2e.sh --reference      only steps 2 and 4 (current wireguard-go and mifsec, alternately)
#   E2E_ROUNDS=3   rounds of step 2
#   E2E_VARIANTS="old=/path/mifsec ..."   also run these builds on one link in every round
#                  (cases one_link_old, ...): an A/B of a change in the same run
#   E2E_CASES="soak" scripts/bench-e2e.sh --mifsec-only   only the named mifsec cases
#   E2E_CASES="udp_small parallel4 sas4" scripts/bench-e2e.sh --reference   only step 4
#                  (the peers' runs of a case go with it: one_link, udp_small, parallel4)
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
REFERENCE_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --anchors-only) ANCHORS_ONLY=1 ;;
    --mifsec-only) MIFSEC_ONLY=1 ;;
    --reference) REFERENCE_ONLY=1 ;;
    -h | --help)
      sed -n '3,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
      exit 0
      ;;
    *)
      echo "usage: $0 [--anchors-only | --mifsec-only | --reference]" >&2
      exit 2
      ;;
  esac
done
[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }

T=${IPERF_SECONDS:-10}
UDP_SIZES=${E2E_UDP_SIZES:-64 512}
UDP_RATE=${E2E_UDP_RATE:-0}
ROUNDS=${E2E_ROUNDS:-2}
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
((MIFSEC_ONLY || REFERENCE_ONLY)) && ANCHORS=()
# With the mifsec cases, the current wireguard-go runs between them (below).
((ANCHORS_ONLY)) && ANCHORS+=(wireguard-go-current)
# run_anchor NAME [FILE] [TEST]: one anchor into $RES/anchor-FILE.json (FILE defaults to
# NAME); TEST is scripts/anchors.sh's ANCHOR_TEST (tcp, the default, udp_small, parallel4).
run_anchor() {
  local a=$1 f=${2:-$1} t=${3:-tcp} rc=0
  step "anchor $a (iperf3 -t $T, $t)"
  local profile=0
  # The reference is profiled as mifsec is, so that both profiles come from the same run.
  [ "$a" = wireguard-go-current ] && [ "$t" = tcp ] && profile=1
  IPERF_SECONDS=$T ANCHOR_PREFIX="${P}a" ANCHOR_TEST=$t ANCHOR_PROFILE=$profile ANCHOR_UDP_SIZES="$UDP_SIZES" ANCHOR_UDP_RATE="$UDP_RATE" \
    scripts/anchors.sh "$a" >"$RES/anchor-$f.json" 2>"$WORK/anchor-$f.log" || rc=$?
  if ((rc == 0)); then
    cat "$RES/anchor-$f.json" >&2
  elif ((rc == 3)); then
    # No build of this peer here (CI): not a failure, but said in the output and the JSON.
    local why
    why=$(tail -n 1 "$WORK/anchor-$f.log" | sed 's/^\[anchors [^]]*\] //')
    log "anchor $a ABSENT: $why"
    python3 -c 'import json, sys; print(json.dumps({"name": sys.argv[1], "absent": sys.argv[2]}))' "$a" "$why" >"$RES/anchor-$f.json"
  else
    failed=1
    log "anchor $a FAILED; last lines of $WORK/anchor-$f.log:"
    tail -n 5 "$WORK/anchor-$f.log" | sed 's/^/    /' >&2
    printf '{"name": "%s", "error": "failed, see %s"}\n' "$a" "$WORK/anchor-$f.log" >"$RES/anchor-$f.json"
  fi
}
for a in "${ANCHORS[@]}"; do
  run_anchor "$a"
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
  local dir=$1 rss status gstatus kernel side ns
  status=$(mifsec_status "$dir" client --json 2>/dev/null) || status='{}'
  gstatus=$(mifsec_status "$dir" gateway --json 2>/dev/null) || gstatus='{}'
  # Where a lost packet can have gone outside the daemons: the TUN's queue (tx_dropped: the
  # kernel's queue towards the daemon was full) and the UDP sockets' receive buffers.
  kernel=""
  for side in client gateway; do
    ns="${P}cl"
    [ $side = gateway ] && ns="${P}gw"
    kernel+="$side $(ip netns exec "$ns" cat /sys/class/net/mifsec0/statistics/tx_dropped 2>/dev/null || echo -) "
    kernel+="$(ip netns exec "$ns" awk '/^Udp:/ { if (n) { for (i = 1; i <= NF; i++) if (h[i] == "RcvbufErrors") print $i; exit } else n = split($0, h) }' /proc/net/snmp 2>/dev/null | head -1 || echo -)"$'\n'
  done
  rss=$(mifsec_rss_stop "$dir")
  mifsec_stop "$dir"
  lab_down "$P"
  python3 - "$2" "$rss" "$status" "$gstatus" "$kernel" >"$dir/result.json" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
r["rss"] = json.loads(sys.argv[2])
try:
    status = json.loads(sys.argv[3])
except ValueError:
    status = {}
try:
    gstatus = json.loads(sys.argv[4])
except ValueError:
    gstatus = {}
# Every drop the daemons counted, by side, SA and reason (non-zero only), and the kernel's
# TUN queue and UDP receive-buffer drops in each namespace: a loss in a case is explained
# by these or by the links, not guessed.
drops = {}
for side, st in (("client", status), ("gateway", gstatus)):
    if not isinstance(st, dict):
        continue
    d = {}
    for sa in st.get("sas", []):
        if isinstance(sa, dict) and isinstance(sa.get("drops"), dict):
            nz = {k: v for k, v in sa["drops"].items() if isinstance(v, int) and v}
            if nz:
                d[sa.get("name", "?")] = nz
    if isinstance(st.get("drops"), dict):
        nz = {k: v for k, v in st["drops"].items() if isinstance(v, int) and v}
        if nz:
            d["outside SAs"] = nz
    drops[side] = d
for line in sys.argv[5].splitlines():
    f = line.split()
    if len(f) == 3:
        k = {}
        for name, v in (("tun_tx_dropped", f[1]), ("udp_rcvbuf_errors", f[2])):
            if v.isdigit():
                k[name] = int(v)
        drops.setdefault(f[0], {})["kernel"] = k
r["drops"] = drops
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

# iperf_case DIR: one TCP flow through the tunnel, forward and reverse -> JSON fragment with
# the rates and the daemons' CPU seconds per GB.
iperf_case() {
  local rates fwd rev cpu
  rates=$(LAB_IPERF_PIDS="$(cat "$1/client.pid" "$1/gateway.pid" | tr '\n' ' ')" LAB_IPERF_PING=1 \
    lab_iperf "${P}gw" 10.2.0.1 "${P}cl" "$T" "$1/iperf" 10.1.0.1)
  read -r fwd rev <<<"$rates"
  cpu=$(lab_iperf_cpu_json "$1/iperf")
  log "forward $fwd Mbit/s, reverse $rev Mbit/s; daemons' CPU: $cpu"
  python3 -c 'import json, sys; r = {"forward_mbps": float(sys.argv[1]), "reverse_mbps": float(sys.argv[2])}; r.update(json.loads(sys.argv[3])); print(json.dumps(r))' \
    "$fwd" "$rev" "$cpu"
}

# profile_start DIR: perf record -g of both daemons (software clock: the VM has no hardware
# counters) into DIR/perf.data, in the background; nothing when perf is missing.
profile_start() {
  local dir=$1
  command -v perf >/dev/null || return 0
  perf record -q -g -e cpu-clock -F 499 -o "$dir/perf.data" \
    -p "$(cat "$dir/client.pid"),$(cat "$dir/gateway.pid")" >"$dir/perf.log" 2>&1 &
  echo $! >"$dir/perf.pid"
  sleep 0.5 # perf attaches before the transfer starts
}

# profile_stop DIR FRAGMENT: stops perf and adds the profile's figures to the JSON fragment:
# aead_share (the samples in ring's AEAD code, of all the daemons' samples, kernel included),
# kernel_share, and the top symbols. Without perf: aead_share null and why.
profile_stop() {
  local dir=$1 frag=$2 report=""
  if [ -f "$dir/perf.pid" ]; then
    local pid
    pid=$(cat "$dir/perf.pid")
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$dir/perf.pid"
    perf report -i "$dir/perf.data" --stdio --no-children -g none --sort sym --percent-limit 0 \
      >"$dir/perf.txt" 2>"$dir/perf-report.log" && report="$dir/perf.txt"
  fi
  frag=$(python3 - "$frag" "$report" <<'PY'
import json, re, shutil, sys
r = json.loads(sys.argv[1])
if not sys.argv[2]:
    r["aead_share"] = None
    r["aead_share_skipped"] = ("perf is not installed" if shutil.which("perf") is None
                               else "perf record/report failed (see perf.log in the case folder)")
    print(json.dumps(r)); sys.exit(0)
# ring's AES-GCM and ChaCha20-Poly1305: its assembly (aes_hw_*, aesni_gcm_*, gcm_*,
# *_ghash_*, chacha20_*, poly1305_*) and its Rust glue (ring::aead::aes_gcm::...).
aead = re.compile(r"aes|gcm|ghash|chacha|poly1305", re.I)
rows, total = [], 0.0
for line in open(sys.argv[2]):
    m = re.match(r"\s*([\d.]+)%\s+\[(.)\]\s+(.+?)\s*$", line)
    if m:
        rows.append((float(m[1]), m[2], m[3]))
user = [x for x in rows if x[1] != "k"]
unresolved = sum(p for p, _, s in user if s.startswith("0x"))
if unresolved > 0.2 * sum(p for p, _, _ in user):
    # perf found no symbols for the binary (e.g. one under /tmp/perf-*, which perf takes for
    # a JIT map): no share rather than a wrong one.
    r["aead_share"] = None
    r["aead_share_skipped"] = f"perf could not resolve {unresolved:.0f}% of the samples to symbols"
else:
    r["aead_share"] = round(sum(p for p, _, s in user if aead.search(s)) / 100, 3)
r["kernel_share"] = round(sum(p for p, k, _ in rows if k == "k") / 100, 3)
r["profile_top"] = [{"pct": p, "sym": s[:80], "kernel": k == "k"} for p, k, s in rows[:15]]
print(json.dumps(r))
PY
  )
  # Every sample in one bucket by kind of work (scripts/perf_breakdown.py says which), as
  # breakdown_<bucket> shares, so that rounds take medians of them like the other figures.
  if [ -n "$report" ]; then
    local with
    if with=$(python3 scripts/perf_breakdown.py "$dir/perf.data" "$frag" 2>"$dir/perf-breakdown.log"); then
      frag=$with
    fi
  fi
  printf '%s\n' "$frag"
}

case_one_link() {
  local dir=$1 frag
  lab_up_one_link "$P"
  start_mifsec "$dir" failover 1 none
  fast_path_mark "$dir"
  profile_start "$dir"
  frag=$(iperf_case "$dir")
  frag=$(profile_stop "$dir" "$frag")
  frag=$(fast_path_fields "$dir" "$frag" tunnel)
  log "AEAD share of the daemons' samples: $(python3 -c 'import json, sys; print(json.loads(sys.argv[1]).get("aead_share"))' "$frag")"
  finish_case "$dir" "$frag"
}

# case_transport DIR: issue 14 item 6, transport mode on the fast path. The one-link lab with
# the manual SA in transport mode: its selectors are the hosts' own link addresses
# (198.18.1.2 <-> 198.18.1.1), and a rule on each side routes TCP and ICMP to the other host
# into the TUN (ESP in UDP stays on the link). One TCP flow forward and reverse, as
# case_one_link (no profile); run in the same rounds, so transport_vs_tunnel compares one run.
case_transport() {
  local dir=$1 frag rates fwd rev cpu side ns me peer sa
  lab_up_one_link "$P"
  mifsec_configs "$dir" failover 1 none
  for side in client gateway; do
    me=2 peer=1
    [ $side = gateway ] && me=1 peer=2
    sed -i -e 's|^\[sa.tunnel\]$|&\nmode = "transport"|' \
      -e "s|^local_ts = .*|local_ts = [\"198.18.1.$me/32\"]|" \
      -e "s|^remote_ts = .*|remote_ts = [\"198.18.1.$peer/32\"]|" "$dir/$side.toml"
  done
  mifsec_start "$dir" "$P"
  mifsec_rss_start "$dir"
  for side in client gateway; do
    ns="${P}cl" me=2 peer=1
    [ $side = gateway ] && ns="${P}gw" me=1 peer=2
    ip -n "$ns" rule add to "198.18.1.$peer" ipproto tcp table 200 priority 50
    ip -n "$ns" rule add to "198.18.1.$peer" ipproto icmp table 200 priority 51
    ip -n "$ns" route add default dev mifsec0 src "198.18.1.$me" table 200
  done
  local up=0
  for _ in $(seq 20); do
    ip netns exec "${P}cl" ping -c 1 -W 0.5 198.18.1.1 >/dev/null 2>&1 && { up=1; break; }
    sleep 0.3
  done
  ((up)) || lab_die "no ping crosses the transport SA 198.18.1.2 -> 198.18.1.1 within 10 s"
  rates=$(LAB_IPERF_PIDS="$(cat "$dir/client.pid" "$dir/gateway.pid" | tr '\n' ' ')" LAB_IPERF_PING=1 \
    lab_iperf "${P}gw" 198.18.1.1 "${P}cl" "$T" "$dir/iperf" 198.18.1.2)
  read -r fwd rev <<<"$rates"
  cpu=$(lab_iperf_cpu_json "$dir/iperf")
  # The flow went through the SA, not around it: its sealed bytes cover what iperf3 moved.
  sa=$(mifsec_status "$dir" client --json | python3 -c '
import json, sys
sa = json.load(sys.stdin)["sas"][0]
print(json.dumps({k: sa[k] for k in ("mode", "out_packets", "out_bytes", "in_packets", "in_bytes")}))')
  log "transport: forward $fwd Mbit/s, reverse $rev Mbit/s; daemons' CPU: $cpu; client SA: $sa"
  frag=$(python3 - "$fwd" "$rev" "$cpu" "$sa" <<'PY'
import json, sys
r = {"forward_mbps": float(sys.argv[1]), "reverse_mbps": float(sys.argv[2])}
r.update(json.loads(sys.argv[3]))
sa = json.loads(sys.argv[4])
r["client_sa"] = sa
moved = (r.get("forward_gb") or 0) + (r.get("reverse_gb") or 0)
if sa["mode"] != "transport" or sa["out_bytes"] + sa["in_bytes"] < 0.9 * moved * 1e9:
    sys.exit(f"[lab] ERROR: the flow did not go through the transport SA: {sa}, {moved} GB moved")
print(json.dumps(r))
PY
)
  finish_case "$dir" "$frag"
}

# fast_path_mark DIR: both daemons' `status --json` before a transfer (DIR/fast-SIDE.json).
fast_path_mark() {
  local side
  for side in client gateway; do
    mifsec_status "$1" "$side" --json >"$1/fast-$side.json"
  done
}

# fast_path_fields DIR FRAGMENT [SA_PREFIX]: adds "fast_path" to the JSON fragment: per side
# the engine's workers, TUN offloads, socket offloads, the SA that carried the flow (the one
# named SA_PREFIX*, else the first: mode, cipher, esn, policy, paths, bytes moved) and what
# the offload counters (`status --json` "offload") grew by since fast_path_mark. Whether a
# manual SA and an IKE child take the same batched path is then a comparison of two cases'
# fast_path (ike_fast_path_differs in the ratios).
fast_path_fields() {
  local dir=$1 frag=$2 prefix=${3:-} side
  for side in client gateway; do
    mifsec_status "$dir" "$side" --json >"$dir/fast-$side-after.json"
  done
  python3 - "$frag" "$dir" "$prefix" <<'PY'
import json, os, sys
r, d, prefix = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
fp = {}
for side in ("client", "gateway"):
    before = json.load(open(os.path.join(d, f"fast-{side}.json")))
    after = json.load(open(os.path.join(d, f"fast-{side}-after.json")))
    sas = [s for s in after.get("sas", []) if s.get("name", "").startswith(prefix)] or after.get("sas", [])
    sa = sas[0] if sas else {}
    ob, oa = before.get("offload") or {}, after.get("offload") or {}
    fp[side] = {
        "workers": after.get("workers"),
        "tun_offloads": after.get("tun_offloads"),
        "socket_offloads": sorted({i.get("offloads") for i in after.get("interfaces", [])}),
        "sa": {"name": sa.get("name"), **{k: sa.get(k) for k in ("mode", "cipher", "esn", "policy")},
               "paths": len(sa.get("paths", [])),
               "out_bytes": sa.get("out_bytes"), "in_bytes": sa.get("in_bytes"),
               # Inbound drops by reason since the start (a manual SA's `unreserved`: packets
               # above its stored sequence mark, refused until the mark moves).
               "drops": sa.get("drops")},
        # Without the counters (an older build) null, not zero.
        "offload_grew": {k: oa[k] - ob.get(k, 0) for k in oa} if oa else None,
    }
r["fast_path"] = fp
print(json.dumps(r))
PY
}

# case_ike DIR: issue 14 item 7, an IKE-negotiated child SA as fast as the manual one. The
# one-link lab with mifsec_ike_configs: both daemons negotiate IKEv2 with a PSK (the client
# initiates at start), one child with the manual SA's selectors and cipher (AES-128-GCM,
# ESN) and the same dataplane settings (defaults: workers, MTU, offloads). Once both list
# the child INSTALLED (`status --json`, 20 s at most) and a ping crosses, the same one TCP
# flow each way as case_one_link, profiled as it is, with fast_path (the engine SA and the
# offload counters); ike_vs_manual against one_link of the same rounds in the ratios.
case_ike() {
  local dir=$1 frag
  lab_up_one_link "$P"
  mifsec_ike_configs "$dir"
  mifsec_start "$dir" "$P"
  mifsec_rss_start "$dir"
  mifsec_wait_child "$dir" 20
  mifsec_wait_tunnel "$P"
  fast_path_mark "$dir"
  # Profiled as case_one_link is, so that both run under the same conditions.
  profile_start "$dir"
  frag=$(iperf_case "$dir")
  frag=$(profile_stop "$dir" "$frag")
  frag=$(fast_path_fields "$dir" "$frag" lab-net-)
  # The flow went through the child, not around it.
  python3 -c '
import json, sys
r = json.loads(sys.argv[1])
moved = (r.get("forward_gb") or 0) + (r.get("reverse_gb") or 0)
sa = r["fast_path"]["client"]["sa"]
if not (sa["name"] or "").startswith("lab-net-") or (sa["out_bytes"] or 0) + (sa["in_bytes"] or 0) < 0.9 * moved * 1e9:
    sys.exit(f"[lab] ERROR: the flow did not go through the IKE child: {sa}, {moved} GB moved")' "$frag"
  log "IKE child: fast path $(python3 -c 'import json, sys; print(json.dumps(json.loads(sys.argv[1])["fast_path"]))' "$frag")"
  finish_case "$dir" "$frag"
}

# case_udp_small DIR: iperf3 UDP forward through the one-link tunnel, for each size of
# UDP_SIZES at rate UDP_RATE: packets delivered per second and CPU per million packets.
case_udp_small() {
  local dir=$1 size frag
  lab_up_one_link "$P"
  start_mifsec "$dir" failover 1 none
  echo '{}' >"$dir/udp.json"
  for size in $UDP_SIZES; do
    LAB_IPERF_PIDS="$(cat "$dir/client.pid" "$dir/gateway.pid" | tr '\n' ' ')" LAB_IPERF_ARGS="-u -l $size -b $UDP_RATE" \
      lab_iperf "${P}gw" 10.2.0.1 "${P}cl" "$T" "$dir/udp$size" 10.1.0.1 fwd >/dev/null
    frag=$(lab_iperf_cpu_json "$dir/udp$size")
    log "UDP $size-byte datagrams: $frag"
    lab_udp_fields "$size" "$frag" "$dir/udp.json" "$UDP_RATE"
  done
  finish_case "$dir" "$(cat "$dir/udp.json")"
}

# case_parallel4 DIR: iperf3 -P 4 (four TCP flows) each way through the one SA.
case_parallel4() {
  local dir=$1 rates fwd rev cpu
  lab_up_one_link "$P"
  start_mifsec "$dir" failover 1 none
  rates=$(LAB_IPERF_PIDS="$(cat "$dir/client.pid" "$dir/gateway.pid" | tr '\n' ' ')" LAB_IPERF_ARGS="-P 4" \
    lab_iperf "${P}gw" 10.2.0.1 "${P}cl" "$T" "$dir/iperf" 10.1.0.1)
  read -r fwd rev <<<"$rates"
  cpu=$(lab_iperf_cpu_json "$dir/iperf")
  log "iperf3 -P 4: forward $fwd Mbit/s, reverse $rev Mbit/s; daemons' CPU: $cpu"
  finish_case "$dir" "$(python3 -c 'import json, sys; r = {"flows": 4, "sas": 1, "forward_mbps": float(sys.argv[1]), "reverse_mbps": float(sys.argv[2])}; r.update(json.loads(sys.argv[3])); print(json.dumps(r))' \
    "$fwd" "$rev" "$cpu")"
}

# case_sas4 DIR: four manual SA pairs on one link (LAB_MIFSEC_SAS=4), one TCP flow through
# each at once (10.1.K.1 -> 10.2.K.1), each way.
case_sas4() {
  local dir=$1 rates fwd rev cpu k
  local -a pairs=()
  lab_up_one_link "$P"
  LAB_MIFSEC_SAS=4 start_mifsec "$dir" failover 1 none
  for k in 1 2 3; do
    for _ in $(seq 20); do
      ip netns exec "${P}cl" ping -c 1 -W 0.5 -I "10.1.$k.1" "10.2.$k.1" >/dev/null 2>&1 && continue 2
      sleep 0.3
    done
    lab_die "no ping crosses SA tunnel$((k + 1)) (10.1.$k.1 -> 10.2.$k.1) within 10 s"
  done
  for k in 0 1 2 3; do pairs+=("10.2.$k.1,10.1.$k.1"); done
  rates=$(LAB_IPERF_PIDS="$(cat "$dir/client.pid" "$dir/gateway.pid" | tr '\n' ' ')" \
    lab_iperf_pairs "${P}gw" "${P}cl" "$T" "$dir/iperf" "fwd rev" "${pairs[@]}")
  read -r fwd rev <<<"$rates"
  cpu=$(lab_iperf_cpu_json "$dir/iperf")
  log "4 SAs, one flow each: forward $fwd Mbit/s, reverse $rev Mbit/s; daemons' CPU: $cpu"
  finish_case "$dir" "$(python3 -c 'import json, sys; r = {"flows": 4, "sas": 4, "forward_mbps": float(sys.argv[1]), "reverse_mbps": float(sys.argv[2])}; r.update(json.loads(sys.argv[3])); print(json.dumps(r))' \
    "$fwd" "$rev" "$cpu")"
}

# case_watch DIR [watched]: issue 13's bar "status --watch --json sustains 20 samples per
# second with 100 SAs, and the packet path is not slower while it does". 100 manual SA pairs
# on one link (LAB_MIFSEC_SAS=100), one TCP flow through the first, forward and reverse; with
# "watched", `mifsec status --watch --json --interval 0.05` follows both daemons for the whole
# transfer, and the samples each got per second of its run are recorded. Run in the same
# rounds without and with the watchers, so watched_vs_unwatched compares one run.
case_watch() {
  local dir=$1 mode=${2:-} frag side
  lab_up_one_link "$P"
  LAB_MIFSEC_SAS=100 start_mifsec "$dir" failover 1 none
  if [ "$mode" = watched ]; then
    for side in client gateway; do
      "$MIFSEC_BIN" status --watch --json --interval 0.05 --socket "$dir/$side.sock" \
        >"$dir/watch-$side.jsonl" 2>"$dir/watch-$side.log" &
      echo $! >"$dir/watch-$side.pid"
    done
  fi
  frag=$(iperf_case "$dir")
  if [ "$mode" = watched ]; then
    for side in client gateway; do
      kill "$(cat "$dir/watch-$side.pid")" 2>/dev/null || true
      wait "$(cat "$dir/watch-$side.pid")" 2>/dev/null || true
      # Samples per second from the samples' own clock: (n - 1) over the first to last `t`.
      frag=$(python3 -c 'import json, sys
r = json.loads(sys.argv[1])
ts = []
for line in open(sys.argv[3]):
    v = json.loads(line)
    assert len(v["sas"]) == 100, "a sample without the 100 SAs"
    ts.append(v["t"])
assert len(ts) > 1, "fewer than two samples"
r[sys.argv[2] + "_watch_samples"] = len(ts)
r[sys.argv[2] + "_watch_samples_per_s"] = round((len(ts) - 1) / (ts[-1] - ts[0]), 2)
print(json.dumps(r))' "$frag" "$side" "$dir/watch-$side.jsonl") ||
        lab_die "the samples of the $side watcher are not complete"
    done
    log "watchers: $frag"
  fi
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
# case_wanted NAME: whether E2E_CASES (if set) names NAME.
case_wanted() { [ -z "${E2E_CASES:-}" ] || [[ " $E2E_CASES " == *" $1 "* ]]; }
run_case() {
  local name=$1 dir=$WORK/case-$1 rc=0
  shift
  # NAME@K is round K of case NAME.
  if [ -n "${E2E_CASES:-}" ] && [[ " $E2E_CASES " != *" ${name%@*} "* ]]; then
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
    # The reference and mifsec alternately, so that both see the same machine.
    for ((k = 1; k <= ROUNDS; k++)); do
      ((MIFSEC_ONLY)) || ! case_wanted one_link ||
        run_anchor wireguard-go-current "wireguard-go-current@$k"
      run_case "one_link@$k" case_one_link
      run_case "transport@$k" case_transport
      run_case "ike@$k" case_ike
      # Other builds of mifsec in the same rounds, for an A/B of a change: NAME=PATH ...
      for v in ${E2E_VARIANTS:-}; do
        MIFSEC_BIN=${v#*=} run_case "one_link_${v%%=*}@$k" case_one_link
      done
      # Small packets and several flows / SAs, the peers in the same rounds (step 4).
      if ((!MIFSEC_ONLY)) && case_wanted udp_small; then
        run_anchor plain "plain-udp_small@$k" udp_small
        run_anchor wireguard-go-current "wireguard-go-current-udp_small@$k" udp_small
      fi
      run_case "udp_small@$k" case_udp_small
      ((MIFSEC_ONLY)) || ! case_wanted parallel4 ||
        run_anchor wireguard-go-current "wireguard-go-current-parallel4@$k" parallel4
      run_case "parallel4@$k" case_parallel4
      run_case "sas4@$k" case_sas4
      # Without and with the watchers, in the order ABBA over the rounds (unwatched first
      # in odd rounds, watched first in even ones): the same count of each, and a drift of
      # the machine over the run does not fall on one side only.
      if ((k % 2)); then
        run_case "sas100@$k" case_watch
        run_case "sas100_watched@$k" case_watch watched
      else
        run_case "sas100_watched@$k" case_watch watched
        run_case "sas100@$k" case_watch
      fi
    done
    ((REFERENCE_ONLY)) && E2E_CASES=none
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
MODE=full
((MIFSEC_ONLY)) && MODE=mifsec-only
((ANCHORS_ONLY)) && MODE=anchors-only
((REFERENCE_ONLY)) && MODE=reference
python3 - "$RES" "${E2E_OUT:-bench/results/latest.json}" "$T" "$ANCHORS_ONLY" "$MODE" <<'PY'
import glob, json, os, platform, sys, time

res_dir, out, secs, anchors_only = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
mode = sys.argv[5]
anchors, mifsec, rounds = {}, {}, {}
for f in sorted(glob.glob(os.path.join(res_dir, "*.json"))):
    d = json.load(open(f))
    base = os.path.basename(f)[:-5]
    kind, _, name = base.partition("-")
    if "@" in name:  # round K of a case run several times: NAME@K
        name, _, k = name.partition("@")
        rounds.setdefault((kind, name), []).append((int(k), d))
    elif kind == "anchor":
        anchors[d["name"]] = d
    else:
        mifsec[name] = d

def num(d, k):
    v = d.get(k) if isinstance(d, dict) else None
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2

# A case of several rounds: the median of every number the rounds have, the rest from the
# first round that has it, and every round as it was.
for (kind, name), rs in rounds.items():
    rs = [d for _, d in sorted(rs, key=lambda kv: kv[0])]
    ok = [d for d in rs if "error" not in d and "absent" not in d]
    merged = dict(ok[0] if ok else rs[0])
    for key in {k for d in ok for k in d}:
        vals = [num(d, key) for d in ok if num(d, key) is not None]
        if vals:
            merged[key] = round(median(vals), 3)
    if len(ok) < len(rs) and ok:
        merged["failed_rounds"] = len(rs) - len(ok)
    merged["rounds"] = rs
    (anchors if kind == "anchor" else mifsec)[name] = merged

# Step 4's runs, out of the one-flow TCP tables into their own sections.
REF = "wireguard-go-current"
small_packets, several_flows = {}, {}
for tunnel in ("plain", REF):
    if f"{tunnel}-udp_small" in anchors:
        small_packets[tunnel] = anchors.pop(f"{tunnel}-udp_small")
if "udp_small" in mifsec:
    small_packets["mifsec"] = mifsec.pop("udp_small")
if f"{REF}-parallel4" in anchors:
    several_flows[f"{REF}_p4"] = anchors.pop(f"{REF}-parallel4")
for case, key in (("parallel4", "mifsec_p4"), ("sas4", "mifsec_4sas")):
    if case in mifsec:
        several_flows[key] = mifsec.pop(case)

ratios = {}
peers = {k: v for k, v in anchors.items() if k != "plain" and "error" not in v and "absent" not in v}
one = mifsec.get("one_link", {})
ref = anchors.get(REF, {})
for d in ("forward", "reverse"):
    m = num(one, d + "_mbps")
    best = max(((k, v) for k, v in peers.items() if num(v, d + "_mbps") is not None),
               key=lambda kv: kv[1][d + "_mbps"], default=None)
    if best:
        ratios[f"best_anchor_{d}"] = best[0]
    if m is not None and best:
        ratios[f"mifsec_vs_best_anchor_{d}"] = round(m / best[1][d + "_mbps"], 3)
    plain = num(anchors.get("plain", {}), d + "_mbps")
    if m is not None and plain:
        ratios[f"mifsec_vs_plain_{d}"] = round(m / plain, 4)
    # Against the reference, the current wireguard-go: throughput (higher is better for
    # mifsec) and CPU seconds per GB (lower is better), medians of the same run.
    r = num(ref, d + "_mbps")
    if m is not None and r:
        ratios[f"mifsec_vs_{REF}_{d}"] = round(m / r, 3)
    mc, rc = num(one, d + "_cpu_s_per_gb"), num(ref, d + "_cpu_s_per_gb")
    if mc is not None and rc:
        ratios[f"mifsec_cpu_per_gb_vs_{REF}_{d}"] = round(mc / rc, 3)
    # Ping under the load of that direction: 99th percentile (lower is better).
    mp, rp = num(one, d + "_rtt_ms_p99"), num(ref, d + "_rtt_ms_p99")
    if mp is not None and rp:
        ratios[f"mifsec_rtt_p99_vs_{REF}_{d}"] = round(mp / rp, 3)
if "absent" in ref:
    ratios[f"{REF}_absent"] = ref["absent"]

# Transport mode against tunnel mode (one_link), medians of the same rounds.
tr = mifsec.get("transport", {})
for d in ("forward", "reverse"):
    t, m = num(tr, d + "_mbps"), num(one, d + "_mbps")
    if t is not None and m:
        ratios[f"transport_vs_tunnel_{d}"] = round(t / m, 3)
# The IKE-negotiated child against the manual SA (one_link), medians of the same rounds:
# Mbit/s (higher is better for the child) and CPU seconds per GB (lower is better); and
# whether both took the same batched path (the first round's engine SA kind, workers,
# offloads, and offload counters that grew), the differences named when not.
ike = mifsec.get("ike", {})
for d in ("forward", "reverse"):
    i, m = num(ike, d + "_mbps"), num(one, d + "_mbps")
    if i is not None and m:
        ratios[f"ike_vs_manual_{d}"] = round(i / m, 3)
    i, m = num(ike, d + "_cpu_s_per_gb"), num(one, d + "_cpu_s_per_gb")
    if i is not None and m:
        ratios[f"ike_cpu_per_gb_vs_manual_{d}"] = round(i / m, 3)
fi, fm = ike.get("fast_path"), one.get("fast_path")
if isinstance(fi, dict) and isinstance(fm, dict):
    diffs = []
    for side in ("client", "gateway"):
        a, b = fi.get(side) or {}, fm.get(side) or {}
        for k in ("workers", "tun_offloads", "socket_offloads"):
            if a.get(k) != b.get(k):
                diffs.append(f"{side} {k}: ike {a.get(k)}, manual {b.get(k)}")
        for k in ("mode", "cipher", "esn", "policy", "paths"):
            if (a.get("sa") or {}).get(k) != (b.get("sa") or {}).get(k):
                diffs.append(f"{side} sa {k}: ike {(a.get('sa') or {}).get(k)}, manual {(b.get('sa') or {}).get(k)}")
        for k in ("tun_super_reads", "gso_sends", "gro_trains", "tun_super_writes"):
            ga, gb = (a.get("offload_grew") or {}).get(k), (b.get("offload_grew") or {}).get(k)
            if (ga or 0) > 0 and (gb or 0) > 0:
                continue
            diffs.append(f"{side} offload {k} grew: ike {ga}, manual {gb}")
    ratios["ike_fast_path_differs"] = diffs
# status --watch at 20 Hz with 100 SAs: the packet path with the watchers against without,
# judged against the noise: the ratio of the medians, beside the spread of the unwatched
# rounds themselves (their lowest Mbit/s over their highest; their highest CPU per GB over
# their lowest). "Within the unwatched rounds' own spread": the ratio of the medians is
# no further from 1 than that spread (Mbit/s: ratio >= min/max; CPU per GB: ratio <=
# max/min). Every round's figures are in mifsec.sas100.rounds / sas100_watched.rounds, and
# in "watch" below in the order they ran.
wu, ww = mifsec.get("sas100", {}), mifsec.get("sas100_watched", {})
def ok_rounds(d):
    return [r for r in d.get("rounds", []) if "error" not in r]
for d in ("forward", "reverse"):
    a, b = num(ww, d + "_mbps"), num(wu, d + "_mbps")
    if a is not None and b:
        ratios[f"watched_vs_unwatched_{d}"] = round(a / b, 3)
    un = [num(r, d + "_mbps") for r in ok_rounds(wu) if num(r, d + "_mbps")]
    if un:
        ratios[f"unwatched_min_over_max_{d}"] = round(min(un) / max(un), 3)
        if f"watched_vs_unwatched_{d}" in ratios:
            ratios[f"watched_within_unwatched_spread_{d}"] = (
                ratios[f"watched_vs_unwatched_{d}"] >= ratios[f"unwatched_min_over_max_{d}"])
    a, b = num(ww, d + "_cpu_s_per_gb"), num(wu, d + "_cpu_s_per_gb")
    if a is not None and b:
        ratios[f"watched_vs_unwatched_cpu_per_gb_{d}"] = round(a / b, 3)
    un = [num(r, d + "_cpu_s_per_gb") for r in ok_rounds(wu) if num(r, d + "_cpu_s_per_gb")]
    if un:
        ratios[f"unwatched_cpu_per_gb_max_over_min_{d}"] = round(max(un) / min(un), 3)
        if f"watched_vs_unwatched_cpu_per_gb_{d}" in ratios:
            ratios[f"watched_within_unwatched_cpu_spread_{d}"] = (
                ratios[f"watched_vs_unwatched_cpu_per_gb_{d}"] <= ratios[f"unwatched_cpu_per_gb_max_over_min_{d}"])
watch = None
if (("mifsec", "sas100") in rounds) or (("mifsec", "sas100_watched") in rounds):
    # Every round of both, in the order they ran (ABBA: unwatched first in odd rounds).
    order = []
    for key, watched in (("sas100", False), ("sas100_watched", True)):
        for k, d in rounds.get(("mifsec", key), []):
            order.append((k, watched != (k % 2 == 0), watched, d))
    keep = ("forward_mbps", "reverse_mbps", "forward_cpu_s_per_gb", "reverse_cpu_s_per_gb",
            "client_watch_samples_per_s", "gateway_watch_samples_per_s", "error")
    watch = {
        "rounds_each": {"unwatched": len(rounds.get(("mifsec", "sas100"), [])),
                        "watched": len(rounds.get(("mifsec", "sas100_watched"), []))},
        "order": [{"round": k, "watched": w, **{x: d[x] for x in keep if x in d}}
                  for k, _, w, d in sorted(order, key=lambda o: (o[0], o[1]))],
    }
# Small packets: delivered packets per second (higher is better) and CPU per million packets
# (lower is better), mifsec against the current wireguard-go, medians of the same run.
sm, sr = small_packets.get("mifsec", {}), small_packets.get(REF, {})
for size in sorted({k.split("_")[0][3:] for d in small_packets.values() for k in d
                    if k.startswith("udp") and k.endswith("_pps") and k.split("_")[0][3:].isdigit()}, key=int):
    m, r = num(sm, f"udp{size}_pps"), num(sr, f"udp{size}_pps")
    if m is not None and r:
        ratios[f"mifsec_udp{size}_pps_vs_{REF}"] = round(m / r, 3)
    mc, rc = num(sm, f"udp{size}_cpu_s_per_mpkt"), num(sr, f"udp{size}_cpu_s_per_mpkt")
    if mc is not None and rc:
        ratios[f"mifsec_udp{size}_cpu_per_mpkt_vs_{REF}"] = round(mc / rc, 3)
# Several flows: against the reference's -P 4, and against mifsec's own one flow (scaling).
for key in ("mifsec_p4", "mifsec_4sas"):
    d = several_flows.get(key, {})
    for dr in ("forward", "reverse"):
        m = num(d, dr + "_mbps")
        r, o = num(several_flows.get(f"{REF}_p4", {}), dr + "_mbps"), num(one, dr + "_mbps")
        if m is not None and r:
            ratios[f"{key}_vs_{REF}_p4_{dr}"] = round(m / r, 3)
        if m is not None and o:
            ratios[f"{key}_vs_one_flow_{dr}"] = round(m / o, 3)

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
    "mode": mode,
    "anchors": anchors,
    "mifsec": mifsec if not anchors_only else None,
    "small_packets": small_packets,
    "several_flows": several_flows,
    "watch": watch,
    "ratios": ratios,
    "errors": sorted([f"anchor {k}: {v['error']}" for k, v in anchors.items() if "error" in v]
                     + [f"mifsec {k}: {v['error']}" for k, v in mifsec.items() if "error" in v]
                     + [f"small_packets {k}: {v['error']}" for k, v in small_packets.items() if "error" in v]
                     + [f"several_flows {k}: {v['error']}" for k, v in several_flows.items() if "error" in v]),
}
with open(out, "w") as f:
    json.dump(report, f, indent=2)
    f.write("\n")

def fmt(v, spec=".1f"):
    return format(v, spec) if isinstance(v, (int, float)) else "-"

def err(d):
    return "error: " + d["error"][:50] if "error" in d else None

def breakdown_row(d):
    # scripts/perf_breakdown.py's buckets: where the samples went, by kind of work.
    if d.get("breakdown_samples"):
        parts = [("copies", "kernel_copy"), ("waking", "sched"), ("TUN w", "tun_write"),
                 ("UDP s", "udp_send"), ("TUN r", "tun_read"), ("UDP r", "udp_recv"),
                 ("kernel other", "kernel_other"), ("user other", "user_other"), ("marks", "marks")]
        rows.append(("  samples by work: AEAD " + fmt(d.get("breakdown_aead"), ".3f"), "", "", "", "",
                     ", ".join(f"{n} {fmt(d.get('breakdown_' + k), '.3f')}" for n, k in parts)))

def tunnel_row(label, d):
    if "absent" in d:
        return (label, "ABSENT", d["absent"][:70], "", "")
    if "error" in d:
        return (label, "FAILED", d["error"][:70], "", "")
    rtt = "/".join(fmt(num(d, f"{dr}_rtt_ms_{q}"), ".2f") for dr in ("forward", "reverse") for q in ("p50", "p99"))
    return (label, fmt(num(d, "forward_mbps")), fmt(num(d, "reverse_mbps")),
            fmt(num(d, "forward_cpu_s_per_gb"), ".2f"), fmt(num(d, "reverse_cpu_s_per_gb"), ".2f"),
            rtt if rtt != "-/-/-/-" else "")

rows = [("what", "forward Mbit/s", "reverse Mbit/s", "fwd CPU s/GB", "rev CPU s/GB",
         "ping ms under load: fwd p50/p99, rev p50/p99")]
for name in ("plain", "strongswan", "wireguard-go", "boringtun", REF):
    if name in anchors:
        label = f"{REF} ({anchors[name].get('binary', 'current')})" if name == REF else name
        rows.append(tunnel_row(label, anchors[name]))
        breakdown_row(anchors[name])
if not anchors_only:
    for key in [k for k in ["one_link"] if k in mifsec] + sorted(k for k in mifsec if k.startswith("one_link_")):
        d = mifsec[key] if key in mifsec else one
        rows.append(tunnel_row("mifsec, one link" + (f" ({key[9:]})" if key != "one_link" else ""), d))
        if "aead_share" in d:
            share = d.get("aead_share")
            rows.append(("  AEAD share of the daemons' samples", fmt(share, ".3f") if share is not None
                         else "skipped: " + d.get("aead_share_skipped", "?"),
                         f"kernel {fmt(d.get('kernel_share'), '.3f')}", "", ""))
            breakdown_row(d)
    if "ike" in mifsec:
        rows.append(tunnel_row("mifsec, one link, IKE-negotiated child", mifsec["ike"]))
        if "aead_share" in mifsec["ike"]:
            d = mifsec["ike"]
            share = d.get("aead_share")
            rows.append(("  AEAD share of the daemons' samples", fmt(share, ".3f") if share is not None
                         else "skipped: " + d.get("aead_share_skipped", "?"),
                         f"kernel {fmt(d.get('kernel_share'), '.3f')}", "", ""))
            breakdown_row(d)
        diff = ratios.get("ike_fast_path_differs")
        rows.append(("  IKE child / manual SA", fmt(ratios.get("ike_vs_manual_forward"), ".3f"),
                     fmt(ratios.get("ike_vs_manual_reverse"), ".3f"),
                     fmt(ratios.get("ike_cpu_per_gb_vs_manual_forward"), ".3f"),
                     fmt(ratios.get("ike_cpu_per_gb_vs_manual_reverse"), ".3f"),
                     "same fast path" if diff == [] else
                     ("fast path differs: " + "; ".join(diff))[:120] if diff else ""))
    if "transport" in mifsec:
        rows.append(tunnel_row("mifsec, one link, transport mode", mifsec["transport"]))
        rows.append(("  transport / tunnel", fmt(ratios.get("transport_vs_tunnel_forward"), ".3f"),
                     fmt(ratios.get("transport_vs_tunnel_reverse"), ".3f"), "", ""))
    if REF in anchors:
        rows.append((f"  / {REF}", fmt(ratios.get(f"mifsec_vs_{REF}_forward"), ".2f"),
                     fmt(ratios.get(f"mifsec_vs_{REF}_reverse"), ".2f"),
                     fmt(ratios.get(f"mifsec_cpu_per_gb_vs_{REF}_forward"), ".2f"),
                     fmt(ratios.get(f"mifsec_cpu_per_gb_vs_{REF}_reverse"), ".2f")))
    if any(k in anchors for k in ("plain", "strongswan", "wireguard-go", "boringtun")):
        rows.append(("  / best anchor", fmt(ratios.get("mifsec_vs_best_anchor_forward"), ".2f"),
                     fmt(ratios.get("mifsec_vs_best_anchor_reverse"), ".2f"), "", ""))
        rows.append(("  / plain", fmt(ratios.get("mifsec_vs_plain_forward"), ".3f"),
                     fmt(ratios.get("mifsec_vs_plain_reverse"), ".3f"), "", ""))
    for k, label in (("aggregate_200_100", "aggregate 200+100"), ("single_200_of_200_100", "  the 200 link alone"),
                     ("aggregate_300_30", "aggregate 300+30"), ("single_300_of_300_30", "  the 300 link alone")):
        d = mifsec.get(k)
        if d is not None:
            rows.append(tunnel_row(label, d))
    for key in ("agg_200_100_vs_200_alone", "agg_300_30_vs_300_alone"):
        if key + "_forward" in ratios:
            rows.append((f"  {key}", fmt(ratios.get(key + "_forward"), ".3f"), fmt(ratios.get(key + "_reverse"), ".3f"), "", ""))
    for key, label in ((f"{REF}_p4", f"{REF}, iperf3 -P 4"), ("mifsec_p4", "mifsec, iperf3 -P 4, one SA"),
                       ("mifsec_4sas", "mifsec, 4 SAs, one flow each")):
        if key in several_flows:
            rows.append(tunnel_row(label, several_flows[key]))
    for key, label in (("mifsec_p4", "  mifsec -P 4"), ("mifsec_4sas", "  mifsec 4 SAs")):
        if f"{key}_vs_one_flow_forward" in ratios or f"{key}_vs_{REF}_p4_forward" in ratios:
            rows.append((f"{label} / one flow, / {REF} -P 4",
                         f"{fmt(ratios.get(f'{key}_vs_one_flow_forward'), '.2f')}, {fmt(ratios.get(f'{key}_vs_{REF}_p4_forward'), '.2f')}",
                         f"{fmt(ratios.get(f'{key}_vs_one_flow_reverse'), '.2f')}, {fmt(ratios.get(f'{key}_vs_{REF}_p4_reverse'), '.2f')}", "", ""))
    for key, label in (("sas100", "mifsec, 100 SAs, one flow"), ("sas100_watched", "  the same, status --watch at 20 Hz on both")):
        if key in mifsec:
            rows.append(tunnel_row(label, mifsec[key]))
    if "watched_vs_unwatched_forward" in ratios:
        ww = mifsec.get("sas100_watched", {})
        n = (watch or {}).get("rounds_each", {})
        rows.append((f"  watched / not, ratio of the medians of {n.get('watched', '?')} and {n.get('unwatched', '?')} rounds; samples/s client, gateway",
                     fmt(ratios.get("watched_vs_unwatched_forward"), ".3f"),
                     fmt(ratios.get("watched_vs_unwatched_reverse"), ".3f"),
                     fmt(ratios.get("watched_vs_unwatched_cpu_per_gb_forward"), ".3f"),
                     fmt(ratios.get("watched_vs_unwatched_cpu_per_gb_reverse"), ".3f"),
                     f"{fmt(num(ww, 'client_watch_samples_per_s'), '.1f')}, {fmt(num(ww, 'gateway_watch_samples_per_s'), '.1f')}"))
        def within(key):
            v = ratios.get(key)
            return "-" if v is None else ("within" if v else "OUTSIDE")
        rows.append(("  the unwatched rounds' own spread: Mbit/s min/max, CPU/GB max/min",
                     fmt(ratios.get("unwatched_min_over_max_forward"), ".3f"),
                     fmt(ratios.get("unwatched_min_over_max_reverse"), ".3f"),
                     fmt(ratios.get("unwatched_cpu_per_gb_max_over_min_forward"), ".3f"),
                     fmt(ratios.get("unwatched_cpu_per_gb_max_over_min_reverse"), ".3f"),
                     "watched within it: Mbit/s " + "/".join(within(f"watched_within_unwatched_spread_{d}") for d in ("forward", "reverse"))
                     + ", CPU " + "/".join(within(f"watched_within_unwatched_cpu_spread_{d}") for d in ("forward", "reverse"))))
    d = mifsec.get("soak", {})
    if d:
        rows.append(("soak: Mbit/s / RSS growth after 30 s (client, gateway)", fmt(num(d, "forward_mbps")),
                     err(d) or f"{fmt(num(d, 'client_rss_growth_after_warmup'), '.3f')}, {fmt(num(d, 'gateway_rss_growth_after_warmup'), '.3f')}", "", ""))
    for key, label, a, b, fa, fb in (
            ("failover_blackhole", "failover: longest gap ms / lost", "longest_gap_ms", "lost", ".1f", "d"),
            ("soft_handover", "soft handover: lost / gap ms", "lost", "longest_gap_ms", "d", ".1f"),
            ("hard_handover", "hard handover: longest gap ms / lost", "longest_gap_ms", "lost", ".1f", "d")):
        d = mifsec.get(key)
        if d is not None:
            rows.append((label, fmt(num(d, a), fa), err(d) or fmt(num(d, b), fb), "", ""))
    for k, d in mifsec.items():
        rss = d.get("rss") or {}
        for side in ("client", "gateway"):
            s = rss.get(side)
            if s:
                rows.append((f"RSS kB {k} {side} first/last", f"{s['first_kb']}/{s['last_kb']}", f"max {s['max_kb']}", "", ""))
rows = [tuple(r) + ("",) * (6 - len(r)) for r in rows]
w = [max(len(str(r[i])) for r in rows) for i in range(6)]
for i, r in enumerate(rows):
    print(f"{r[0]:<{w[0]}}  {r[1]:>{w[1]}}  {r[2]:>{w[2]}}  {r[3]:>{w[3]}}  {r[4]:>{w[4]}}  {r[5]}".rstrip())
    if i == 0:
        print("-" * (sum(w) + 8))
# Small packets: a table of its own (packets, not bytes).
sizes = sorted({k.split("_")[0][3:] for d in small_packets.values() for k in d
                if k.startswith("udp") and k.endswith("_pps") and k.split("_")[0][3:].isdigit()}, key=int)
if small_packets:
    rate = next((d.get("udp_rate") for d in small_packets.values() if "udp_rate" in d), "0")
    print(f"\nsmall packets: iperf3 UDP forward, -b {rate}, {secs} s; pps delivered (the receiver's), "
          "sent, lost %, daemons' CPU s per million delivered")
    srows = [("what",) + tuple(f"{s} B: pps / sent / lost % / CPU s/Mpkt" for s in sizes)]
    for tunnel in ("plain", REF, "mifsec"):
        d = small_packets.get(tunnel)
        if d is None:
            continue
        label = f"{REF} ({d.get('binary', 'current')})" if tunnel == REF else tunnel
        if "absent" in d or "error" in d:
            srows.append((label, ("ABSENT: " + d["absent"] if "absent" in d else "FAILED: " + d["error"])[:70]) + ("",) * (len(sizes) - 1))
            continue
        srows.append((label,) + tuple(
            f"{fmt(num(d, f'udp{s}_pps'), '.0f')} / {fmt(num(d, f'udp{s}_sent_pps'), '.0f')} / "
            f"{fmt(num(d, f'udp{s}_lost_percent'), '.1f')} / {fmt(num(d, f'udp{s}_cpu_s_per_mpkt'), '.2f')}" for s in sizes))
    if any(f"mifsec_udp{s}_pps_vs_{REF}" in ratios for s in sizes):
        srows.append((f"  mifsec / {REF}: pps, CPU per packet",) + tuple(
            f"{fmt(ratios.get(f'mifsec_udp{s}_pps_vs_{REF}'), '.2f')}x, {fmt(ratios.get(f'mifsec_udp{s}_cpu_per_mpkt_vs_{REF}'), '.2f')}x" for s in sizes))
    sw = [max(len(str(r[i])) for r in srows) for i in range(len(srows[0]))]
    for i, r in enumerate(srows):
        print("  ".join(f"{c:<{sw[0]}}" if j == 0 else f"{c:>{sw[j]}}" for j, c in enumerate(r)).rstrip())
        if i == 0:
            print("-" * (sum(sw) + 2 * len(sw)))
for (kind, name), rs in sorted(rounds.items()):
    def round_text(d):
        if any(k.startswith("udp") and k.endswith("_pps") for k in d):
            return ", ".join(f"{s} B {fmt(num(d, f'udp{s}_pps'), '.0f')} pps {fmt(num(d, f'udp{s}_cpu_s_per_mpkt'), '.2f')} s/Mpkt"
                             for s in sizes)
        return (f"{fmt(num(d, 'forward_mbps'))}/{fmt(num(d, 'reverse_mbps'))} Mbit/s, "
                f"{fmt(num(d, 'forward_cpu_s_per_gb'), '.2f')}/{fmt(num(d, 'reverse_cpu_s_per_gb'), '.2f')} s/GB")
    print(f"rounds of {name}: " + "; ".join(round_text(d) for _, d in sorted(rs, key=lambda kv: kv[0])))
print(f"\nwritten: {out}")
for e in report["errors"]:
    print("error:", e)
PY

exit "$failed"
