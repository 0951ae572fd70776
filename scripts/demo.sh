#!/usr/bin/env bash
# The mifsec demo: one client, one gateway, two links, one tunnel.
#
#   scripts/demo.sh                          builds, then runs every step below
#   MIFSEC_BIN=/path/mifsec scripts/demo.sh  uses that binary (no build)
#
#  1. build target/release/mifsec; install iperf3 & co. when missing
#  2. lab: namespaces mfdcl (client), mfdmid (router), mfdgw (gateway); link 1 shaped to
#     300 Mbit/s, link 2 to 100 Mbit/s (see scripts/lab.sh for the topology)
#  3. configs (policy aggregate, weights 300:100, random manual keys) and both daemons
#  4. ping and iperf3 -t 5 through the tunnel (10.1.0.1 -> 10.2.0.1)
#  5. `mifsec status` of both ends
#  6. soft handover to p2 under a 10,000 pps udpseq stream: loss
#  7. hand back to p1, switch to policy failover, blackhole link 1 silently under a 1000 pps
#     stream: how long until traffic flows again (on p2)
#  8. a short report with per-path figures from `mifsec status --json`
#
# Needs root. Everything (processes, namespaces) is torn down on exit, Ctrl-C or failure; the
# exit status is non-zero if any step fails. KEEP_WORK=1 keeps the work folder.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
BUILD=1
[ -n "${MIFSEC_BIN:-}" ] && BUILD=0
# shellcheck source=scripts/lab.sh
source scripts/lab.sh

[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces, TUN)" >&2; exit 1; }
P=${DEMO_PREFIX:-mfd}
WORK=$(mktemp -d /tmp/mifsec-demo.XXXXXX)
chmod 711 "$WORK" # the daemons drop root and must reach their state directories inside
STEP=0
CURRENT="starting"
ok=0

step() {
  STEP=$((STEP + 1))
  CURRENT=$*
  printf '\n\033[1m== %d. %s\033[0m\n' "$STEP" "$*"
}
say() { printf '   %s\n' "$*"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  mifsec_stop "$WORK" 2>/dev/null || true
  lab_down "$P"
  if ((ok)); then
    if [ "${KEEP_WORK:-0}" = 1 ]; then say "work folder kept: $WORK"; else rm -rf "$WORK"; fi
  else
    printf '\ndemo FAILED at step %d (%s); logs and configs: %s\n' "$STEP" "$CURRENT" "$WORK" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# print_paths JSON...: per-path lines from `mifsec status --json` of each end. The status
# schema belongs to the daemon; this finds every list called "paths" and prints each path's
# scalar fields, so it keeps working while the schema grows.
print_paths() {
  python3 - "$@" <<'PY'
import json, sys

def walk(node, trail, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "paths" and isinstance(v, list):
                owner = node.get("name", trail[-1] if trail else "")
                extra = {k2: v2 for k2, v2 in node.items() if k2 in ("policy", "mode", "cipher")}
                out.append((owner, extra, v))
            else:
                walk(v, trail + [k], out)
    elif isinstance(node, list):
        for v in node:
            walk(v, trail, out)

for side, text in zip(("client", "gateway"), sys.argv[1:]):
    try:
        data = json.loads(text)
    except ValueError:
        print(f"   {side}: status is not JSON: {text[:80]!r}")
        continue
    found = []
    walk(data, [], found)
    if not found:
        print(f"   {side}: no paths in status: {json.dumps(data)[:200]}")
    for owner, extra, paths in found:
        head = " ".join(f"{k}={v}" for k, v in extra.items())
        print(f"   {side} SA {owner} {head}".rstrip())
        first = ("state", "role", "rtt_ms", "loss_pct", "tx_packets", "tx_bytes", "rx_packets", "rx_bytes", "weight")
        for p in paths:
            if not isinstance(p, dict):
                continue
            where = f"{p.get('interface', '')} {p.get('local', '')} -> {p.get('remote', '')}"
            keys = [k for k in first if k in p] + [k for k in p if k not in first]
            fields = " ".join(f"{k}={p[k]}" for k in keys if k not in ("name", "interface", "local", "remote")
                              and not k.endswith("_mbps") and isinstance(p[k], (str, int, float, bool)))
            print(f"     {p.get('name', '?'):<4} {where}  {fields}")
PY
}

# summary JSON: one line from a udpseq receiver report.
summary() {
  python3 - "$1" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"sent {r['sent']}, received {r['received']}, lost {r['lost']}, duplicates {r['duplicates']}, "
      f"reordered {r['reordered']}, longest gap {r['longest_gap_ms']:.1f} ms, "
      f"recovered: {'yes' if r['recovered'] else 'NO'}")
PY
}
field() { python3 -c 'import json, sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }

if ((BUILD)); then
  step "build: cargo build --release -p mifsec-control"
  mifsec_build
else
  step "binary: $MIFSEC_BIN (MIFSEC_BIN set, no build)"
fi
[ -x "$MIFSEC_BIN" ] || lab_die "$MIFSEC_BIN is missing"
lab_need_tools

step "lab: client and gateway, link 1 at 300 Mbit/s, link 2 at 100 Mbit/s"
lab_up_two_links "$P" 300 100
ip netns exec "${P}cl" ip -br addr show | sed 's/^/   client  /'
ip netns exec "${P}gw" ip -br addr show | sed 's/^/   gateway /'

step "configs (policy aggregate, p1 on link 1, p2 on link 2) and daemons"
mifsec_configs "$WORK" aggregate 300 100
say "written: $WORK/client.toml, $WORK/gateway.toml"
mifsec_start "$WORK" "$P"
mifsec_wait_tunnel "$P"

step "traffic through the tunnel: ping and iperf3 -t 5 (10.1.0.1 -> 10.2.0.1)"
ip netns exec "${P}cl" ping -c 5 -i 0.2 -I 10.1.0.1 10.2.0.1 | tail -n 2 | sed 's/^/   /'
rate=$(lab_iperf "${P}gw" 10.2.0.1 "${P}cl" 5 "$WORK/iperf" 10.1.0.1 fwd)
say "one TCP flow, client -> gateway: $rate Mbit/s (links: 300 + 100 Mbit/s)"

step "mifsec status"
for side in client gateway; do
  say "--- $side"
  mifsec_status "$WORK" "$side" | sed 's/^/   /'
done

step "soft handover to p2 under a 10,000 pps stream"
res=$(mifsec_udpseq "$WORK" 10000 6 2 mifsec_ctl_both "$WORK" handover tunnel p2)
HANDOVER=$res
line=$(summary "$res")
say "handover to p2: $line"

step "hand back to p1, policy failover, then blackhole link 1 silently"
mifsec_ctl_both "$WORK" handover tunnel p1 | sed 's/^/   /'
mifsec_ctl_both "$WORK" policy tunnel failover | sed 's/^/   /'
sleep 1 # one probe round on every path
say "link 1 is blackholed in ${P}mid 2 s into a 1000 pps stream (no ICMP, no link-down event)"
res=$(mifsec_udpseq "$WORK" 1000 8 2 lab_blackhole_link1 "$P")
FAILOVER=$res
line=$(summary "$res")
say "blackhole of link 1: $line"
recovered=$(field "$res" recovered)
[ "$recovered" = True ] || lab_die "traffic did not recover after link 1 failed"
lab_restore_link1 "$P"
sleep 1 # a few probe rounds, so that the report shows p1 up again
say "link 1 restored"

step "report"
status_c=$(mifsec_status "$WORK" client --json)
status_g=$(mifsec_status "$WORK" gateway --json)
say "iperf3, one flow, aggregate over 300 + 100 Mbit/s: $rate Mbit/s"
h_lost=$(field "$HANDOVER" lost)
f_gap=$(field "$FAILOVER" longest_gap_ms)
f_lost=$(field "$FAILOVER" lost)
say "soft handover p1 -> p2 at 10,000 pps: lost $h_lost packets"
say "silent failure of link 1 at 1000 pps: traffic back after $f_gap ms (lost $f_lost)"
say "per path (mifsec status --json):"
print_paths "$status_c" "$status_g"
ok=1
printf '\ndemo done\n'
