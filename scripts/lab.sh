# shellcheck shell=bash
# The mifsec network lab: network namespaces, veth links, tbf shaping, silent link failure,
# and helpers that configure, start and stop a pair of mifsec daemons in it.
#
# Source it; it only defines functions and a few defaults (no side effects):
#
#   source scripts/lab.sh
#   lab_need_tools
#   lab_up_two_links mf 300 100      # mfcl, mfmid, mfgw; link1 300 Mbit/s, link2 100 Mbit/s
#   lab_blackhole_link1; lab_restore_link1
#   lab_down mf
#
# Needs root. Only addresses inside the lab's own namespaces are used: 198.18.0.0/15 on the
# outer links, 10.x inside the tunnel.
#
# Two-link topology (lab_up_two_links P R1 R2). BOTH links go through a middle namespace, so
# either can be blackholed and both pay the same forwarding cost (a fair aggregation test):
#
#   P"cl" (client)                 P"mid" (router)                   P"gw" (gateway)
#   veth-c1 198.18.1.2/24 --- veth-mc1 | veth-mg1 --- veth-g1 198.18.1.1/24    link 1
#   veth-c2 198.18.2.2/24 --- veth-mc2 | veth-mg2 --- veth-g2 198.18.2.1/24    link 2
#
# The middle namespace has no addresses: it forwards on /32 host routes, and every neighbour
# entry (client, gateway and middle) is static ("nud permanent"). So no ARP is needed anywhere
# and a blackhole route in the middle (`ip route replace blackhole 198.18.1.x/32`) drops the
# link's packets silently in both directions: no ICMP, no carrier loss, no neighbour failure
# that an endpoint could notice. Only missing answers tell that the path is dead, as on a real
# WAN. Shaping (tbf) sits on the middle's egress towards each end, i.e. the bottleneck is in
# the network, not in the sender's own qdisc (which would push back on its socket).
#
# One-link topology (lab_up_one_link P): P"cl" veth-c1 198.18.1.2/24 <-> P"gw" veth-g1
# 198.18.1.1/24, one unshaped veth, no middle (the LAB-FACTS.md comparison shape).
#
# Tunnel inner addresses: client 10.1.0.1, gateway 10.2.0.1 (mifsec puts them on its TUN).

LAB_SCRIPTS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
LAB_REPO_DIR=$(cd "$LAB_SCRIPTS_DIR/.." && pwd)
# tbf queue length, as time at the shaped rate: long enough for one TCP flow to fill the
# link, short enough not to be a bufferbloat test.
LAB_TBF_LATENCY=${LAB_TBF_LATENCY:-20ms}
# The prefix of the last lab brought up; lab_blackhole_link1 and friends default to it.
LAB_P=${LAB_P:-}

lab_log() { printf '[lab] %s\n' "$*" >&2; }
lab_die() {
  printf '[lab] ERROR: %s\n' "$*" >&2
  return 1
}

# lab_need_tools: installs iperf3, iproute2, python3, tcpdump, tshark (and ping) when missing.
lab_need_tools() {
  local -a pkgs=()
  command -v ip >/dev/null || pkgs+=(iproute2)
  command -v tc >/dev/null || pkgs+=(iproute2)
  command -v iperf3 >/dev/null || pkgs+=(iperf3)
  command -v python3 >/dev/null || pkgs+=(python3)
  command -v tcpdump >/dev/null || pkgs+=(tcpdump)
  command -v tshark >/dev/null || pkgs+=(tshark)
  command -v ping >/dev/null || pkgs+=(iputils-ping)
  command -v od >/dev/null || pkgs+=(coreutils)
  ((${#pkgs[@]})) || return 0
  lab_apt_install "${pkgs[@]}"
}

# lab_apt_install PKG...: non-interactive install; runs `apt-get update` only when the first
# attempt fails (a fresh machine has no package lists).
lab_apt_install() {
  [ "$(id -u)" = 0 ] || lab_die "installing $* needs root" || return 1
  # tshark asks whether non-root users may capture; answer no instead of hanging on a dialog.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  lab_log "installing $*"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null 2>&1; then
    apt-get update -qq >/dev/null 2>&1 || true
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null ||
      lab_die "apt-get install $* failed" || return 1
  fi
}

lab_ns_exists() { ip netns list 2>/dev/null | awk '{print $1}' | grep -qx "$1"; }

# lab_mac NS DEV: the MAC address of DEV inside NS.
lab_mac() { ip netns exec "$1" cat "/sys/class/net/$2/address"; }

# lab_tbf_args RATE: the tbf parameters for RATE, or nothing for "0"/"none"/"" (unshaped).
# RATE is a number of Mbit/s ("300") or a tc rate with a unit ("300mbit", "1gbit", "500kbit").
lab_tbf_args() {
  local rate=${1:-none} bits
  case "$rate" in
    0 | none | "") return 0 ;;
    *[0-9]kbit) bits=$((${rate%kbit} * 1000)) ;;
    *[0-9]mbit) bits=$((${rate%mbit} * 1000000)) ;;
    *[0-9]gbit) bits=$((${rate%gbit} * 1000000000)) ;;
    *[!0-9]*) lab_die "rate '$rate' is neither a number of Mbit/s nor N{kbit,mbit,gbit}" || return 1 ;;
    *) bits=$((rate * 1000000)) ;;
  esac
  # burst: one millisecond at the rate (37.5 kB at 300 Mbit/s), at least ten full-size
  # frames, so tbf's timer granularity does not cap the rate and MTU-size packets always pass.
  local burst=$((bits / 8 / 1000))
  ((burst >= 15140)) || burst=15140
  echo "rate ${bits}bit burst ${burst} latency ${LAB_TBF_LATENCY}"
}

# lab_shape NS DEV RATE: (re)sets the root qdisc of DEV; unshaped removes it.
lab_shape() {
  local ns=$1 dev=$2 args
  args=$(lab_tbf_args "$3") || return 1
  ip netns exec "$ns" tc qdisc del dev "$dev" root 2>/dev/null || true
  [ -z "$args" ] && return 0
  # shellcheck disable=SC2086 # args is a word list on purpose
  ip netns exec "$ns" tc qdisc add dev "$dev" root tbf $args
}

# lab_set_rates [P] R1 R2: reshapes a running two-link lab (both directions of each link).
lab_set_rates() {
  local p=$LAB_P
  (($# == 3)) && { p=$1; shift; }
  local i rates=("$1" "$2")
  for i in 1 2; do
    lab_shape "${p}mid" "veth-mg$i" "${rates[i - 1]}" || return 1 # client -> gateway
    lab_shape "${p}mid" "veth-mc$i" "${rates[i - 1]}" || return 1 # gateway -> client
  done
}

_lab_add_ns() {
  ip netns add "$1" && ip netns exec "$1" ip link set lo up
}

# lab_up_two_links P RATE1 RATE2: the two-link lab described at the top.
lab_up_two_links() {
  local p=${1:?prefix} r1=${2:-none} r2=${3:-none}
  local cl="${p}cl" mid="${p}mid" gw="${p}gw" i
  # Check the rates before creating anything.
  lab_tbf_args "$r1" >/dev/null && lab_tbf_args "$r2" >/dev/null || return 1
  lab_down "$p"
  _lab_add_ns "$cl" && _lab_add_ns "$mid" && _lab_add_ns "$gw" || return 1
  ip netns exec "$mid" sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
    net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.all.send_redirects=0 || return 1
  for i in 1 2; do
    ip link add "veth-c$i" netns "$cl" type veth peer name "veth-mc$i" netns "$mid" || return 1
    ip link add "veth-g$i" netns "$gw" type veth peer name "veth-mg$i" netns "$mid" || return 1
    ip netns exec "$cl" ip addr add "198.18.$i.2/24" dev "veth-c$i" || return 1
    ip netns exec "$gw" ip addr add "198.18.$i.1/24" dev "veth-g$i" || return 1
    ip netns exec "$cl" ip link set "veth-c$i" up || return 1
    ip netns exec "$gw" ip link set "veth-g$i" up || return 1
    ip netns exec "$mid" ip link set "veth-mc$i" up || return 1
    ip netns exec "$mid" ip link set "veth-mg$i" up || return 1
    ip netns exec "$mid" sysctl -qw "net.ipv4.conf.veth-mc$i.rp_filter=0" "net.ipv4.conf.veth-mg$i.rp_filter=0" || return 1
    ip netns exec "$mid" ip route add "198.18.$i.2/32" dev "veth-mc$i" || return 1
    ip netns exec "$mid" ip route add "198.18.$i.1/32" dev "veth-mg$i" || return 1
    # Static neighbours everywhere: see the header (silent failure, no ARP through the router).
    ip netns exec "$cl" ip neigh replace "198.18.$i.1" lladdr "$(lab_mac "$mid" "veth-mc$i")" dev "veth-c$i" nud permanent || return 1
    ip netns exec "$gw" ip neigh replace "198.18.$i.2" lladdr "$(lab_mac "$mid" "veth-mg$i")" dev "veth-g$i" nud permanent || return 1
    ip netns exec "$mid" ip neigh replace "198.18.$i.2" lladdr "$(lab_mac "$cl" "veth-c$i")" dev "veth-mc$i" nud permanent || return 1
    ip netns exec "$mid" ip neigh replace "198.18.$i.1" lladdr "$(lab_mac "$gw" "veth-g$i")" dev "veth-mg$i" nud permanent || return 1
  done
  LAB_P=$p
  lab_set_rates "$p" "$r1" "$r2" || return 1
  lab_log "two-link lab $p up: link1 ${r1} Mbit/s, link2 ${r2} Mbit/s (namespaces $cl $mid $gw)"
}

# lab_up_one_link P: client and gateway namespaces joined by one unshaped veth.
lab_up_one_link() {
  local p=${1:?prefix} cl="${1}cl" gw="${1}gw"
  lab_down "$p"
  _lab_add_ns "$cl" && _lab_add_ns "$gw" || return 1
  ip link add veth-c1 netns "$cl" type veth peer name veth-g1 netns "$gw" || return 1
  ip netns exec "$cl" ip addr add 198.18.1.2/24 dev veth-c1 || return 1
  ip netns exec "$gw" ip addr add 198.18.1.1/24 dev veth-g1 || return 1
  ip netns exec "$cl" ip link set veth-c1 up || return 1
  ip netns exec "$gw" ip link set veth-g1 up || return 1
  LAB_P=$p
  lab_log "one-link lab $p up (namespaces $cl $gw)"
}

# lab_blackhole_link N [P]: silently drops everything on link N, both directions.
lab_blackhole_link() {
  local i=${1:?link} p=${2:-$LAB_P}
  lab_ns_exists "${p}mid" || lab_die "lab '$p' has no middle namespace: blackholing needs lab_up_two_links" || return 1
  ip netns exec "${p}mid" ip route replace blackhole "198.18.$i.1/32" &&
    ip netns exec "${p}mid" ip route replace blackhole "198.18.$i.2/32"
}

# lab_restore_link N [P]: undoes lab_blackhole_link.
lab_restore_link() {
  local i=${1:?link} p=${2:-$LAB_P}
  ip netns exec "${p}mid" ip route replace "198.18.$i.1/32" dev "veth-mg$i" &&
    ip netns exec "${p}mid" ip route replace "198.18.$i.2/32" dev "veth-mc$i"
}

lab_blackhole_link1() { lab_blackhole_link 1 "${1:-$LAB_P}"; }
lab_restore_link1() { lab_restore_link 1 "${1:-$LAB_P}"; }

# lab_kill_pids PID...: TERM, up to 3 s grace, then KILL. Only ever given our own children.
lab_kill_pids() {
  local pid
  (($#)) || return 0
  kill "$@" 2>/dev/null || true
  for _ in $(seq 30); do
    local alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || return 0
    sleep 0.1
  done
  kill -9 "$@" 2>/dev/null || true
}

# lab_down P: stops every process left in the lab's namespaces (all started by the lab's
# user) and deletes them; the veths go with them. Safe to call when nothing is up.
lab_down() {
  local p=${1:-$LAB_P} ns
  [ -n "$p" ] || return 0
  local -a pids=()
  for ns in "${p}cl" "${p}mid" "${p}gw"; do
    lab_ns_exists "$ns" || continue
    # shellcheck disable=SC2207
    pids+=($(ip netns pids "$ns" 2>/dev/null))
  done
  lab_kill_pids "${pids[@]}"
  for ns in "${p}cl" "${p}mid" "${p}gw"; do
    lab_ns_exists "$ns" && ip netns del "$ns"
  done
  return 0
}

# ---------------------------------------------------------------------------------------
# iperf3 between the namespaces

# lab_cpu_ticks PID...: the CPU time (utime + stime, all threads, in clock ticks) the processes
# have used so far, summed; fields 14 and 15 of /proc/PID/stat, counted after the ")" that
# ends the command name. A process that is gone counts 0.
lab_cpu_ticks() {
  local pid total=0 rest
  for pid in "$@"; do
    rest=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${rest##*) }
    # After the name: state is field 3, utime 14 and stime 15, i.e. words 12 and 13 here.
    # shellcheck disable=SC2086
    set -- $rest
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}

# lab_iperf_cpu_json OUT_PREFIX: after a lab_iperf run with LAB_IPERF_PIDS set, the CPU the
# listed processes (the tunnel's daemons) spent per direction, as JSON fields
# {"forward_cpu_s", "forward_gb", "forward_cpu_s_per_gb", "reverse_..."}: CPU seconds
# (utime + stime) per 10^9 bytes that iperf3's receiver got; with LAB_IPERF_PING=1 also the
# ping RTT under that load, {"forward_rtt_ms_p50", "forward_rtt_ms_p99", "forward_pings",
# ...}. Directions not run are left out. For a UDP run (LAB_IPERF_ARGS="-u -l N ...") also
# the packets: {"forward_pps" (delivered: what iperf3's receiver got, per second),
# "forward_sent_pps", "forward_lost_percent", "forward_packets", "forward_cpu_s_per_mpkt"
# (CPU seconds per million packets delivered)}. After lab_iperf_pairs (several iperf3 runs at
# once: OUT_PREFIX.DIR.K.json) the figures are their sums.
lab_iperf_cpu_json() {
  python3 - "$1" "$(getconf CLK_TCK)" <<'PY'
import glob, json, os, re, sys
out, hz = sys.argv[1], int(sys.argv[2])
r = {}
def results(d):
    one = f"{out}.{d}.json"
    files = [one] if os.path.exists(one) else sorted(glob.glob(f"{out}.{d}.[0-9]*.json"))
    return [json.load(open(f)) for f in files]
for d, name in (("fwd", "forward"), ("rev", "reverse")):
    ping = f"{out}.{d}.ping"
    if os.path.exists(ping):
        rtt = sorted(float(m[1]) for m in re.finditer(r"time=([\d.]+) ms", open(ping).read()))
        if rtt:
            r[f"{name}_pings"] = len(rtt)
            r[f"{name}_rtt_ms_p50"] = rtt[len(rtt) // 2]
            r[f"{name}_rtt_ms_p99"] = rtt[min(len(rtt) - 1, int(len(rtt) * 0.99))]
    cpu, res = f"{out}.{d}.cpu", results(d)
    if not res:
        continue
    ticks = [int(x) for x in open(cpu).read().split()] if os.path.exists(cpu) else []
    # No daemons (the plain veth): no CPU figures, the packet figures all the same.
    secs = (ticks[1] - ticks[0]) / hz if len(ticks) == 2 else None
    gb = sum(x["end"]["sum_received"]["bytes"] for x in res) / 1e9
    if secs is not None:
        r[f"{name}_cpu_s"] = round(secs, 2)
        r[f"{name}_gb"] = round(gb, 3)
        r[f"{name}_cpu_s_per_gb"] = round(secs / gb, 3) if gb > 0 else None
    if all(x["start"]["test_start"]["protocol"] == "UDP" for x in res):
        # Delivered = the receiver's bytes over the datagram size (iperf3's "packets" on the
        # receiving side counts the highest sequence number seen, lost ones included).
        got = sum(x["end"]["sum_received"]["bytes"] // x["start"]["test_start"]["blksize"] for x in res)
        sent = sum(x["end"]["sum_sent"]["packets"] for x in res)
        dur = max(x["end"]["sum_received"]["seconds"] for x in res)
        r[f"{name}_datagram_bytes"] = res[0]["start"]["test_start"]["blksize"]
        r[f"{name}_packets"] = got
        r[f"{name}_pps"] = round(got / dur) if dur > 0 else None
        r[f"{name}_sent_pps"] = round(sent / dur) if dur > 0 else None
        r[f"{name}_lost_percent"] = round(100 * (1 - got / sent), 2) if sent else None
        if secs is not None:
            r[f"{name}_cpu_s_per_mpkt"] = round(secs / (got / 1e6), 3) if got else None
print(json.dumps(r))
PY
}

# lab_iperf SERVER_NS SERVER_ADDR CLIENT_NS SECONDS OUT_PREFIX [BIND] [DIRECTIONS]: one TCP
# flow per direction, "fwd" (client -> server) and/or "rev" (-R), default "fwd rev"; writes
# OUT_PREFIX.DIR.json and prints the receiver-side rates in Mbit/s, one decimal, in the order
# asked ("FWD REV"). Bounded by `timeout`. With LAB_IPERF_PIDS="PID..." (the tunnel's daemons)
# it also writes OUT_PREFIX.DIR.cpu, their CPU ticks before and after each direction, for
# lab_iperf_cpu_json. LAB_IPERF_ARGS adds iperf3 client options: "-P 4" (four TCP flows),
# "-u -l 64 -b 0" (UDP, 64-byte datagrams, unlimited rate).
lab_iperf() {
  local sns=$1 saddr=$2 cns=$3 secs=$4 out=$5 bind=${6:-} dirs=${7:-fwd rev} spid rc=0 port=5201 d
  local -a bindarg=() files=() extra=()
  [ -n "$bind" ] && bindarg=(-B "$bind")
  # shellcheck disable=SC2206 # a word list of options on purpose
  extra=(${LAB_IPERF_ARGS:-})
  ip netns exec "$sns" iperf3 -s -B "$saddr" -p "$port" >"$out.server.log" 2>&1 &
  spid=$!
  # Wait for the server's socket rather than sleeping a fixed time.
  for _ in $(seq 50); do
    ip netns exec "$sns" ss -ltnH "sport = :$port" 2>/dev/null | grep -q . && break
    sleep 0.1
  done
  for d in $dirs; do
    local -a rev=()
    [ "$d" = rev ] && rev=(-R)
    files+=("$out.$d.json")
    # shellcheck disable=SC2086 # LAB_IPERF_PIDS is a list of pids on purpose
    [ -n "${LAB_IPERF_PIDS:-}" ] && lab_cpu_ticks $LAB_IPERF_PIDS >"$out.$d.cpu"
    local ppid=""
    if [ "${LAB_IPERF_PING:-0}" = 1 ]; then
      # Latency under load: 100 pings a second beside the flow, from the client's address.
      local -a pingbind=()
      [ -n "$bind" ] && pingbind=(-I "$bind")
      # It starts half a second after the flow (past the handshake) and is stopped with it.
      (sleep 0.5 && exec ip netns exec "$cns" ping -n -i 0.01 -w "$secs" "${pingbind[@]}" "$saddr") \
        >"$out.$d.ping" 2>&1 &
      ppid=$!
    fi
    timeout $((secs + 30)) ip netns exec "$cns" iperf3 -c "$saddr" -p "$port" "${bindarg[@]}" \
      -t "$secs" --connect-timeout 5000 "${rev[@]}" "${extra[@]}" -J >"$out.$d.json" 2>&1 || { rc=1; break; }
    # shellcheck disable=SC2086
    [ -n "${LAB_IPERF_PIDS:-}" ] && lab_cpu_ticks $LAB_IPERF_PIDS >>"$out.$d.cpu"
    if [ -n "$ppid" ]; then
      lab_kill_pids "$ppid"
      wait "$ppid" 2>/dev/null || true
    fi
  done
  lab_kill_pids "$spid"
  wait "$spid" 2>/dev/null || true
  ((rc == 0)) || { lab_log "iperf3 failed, see $out.*"; tail -n 5 "${files[@]}" >&2 2>/dev/null; return 1; }
  python3 - "${files[@]}" <<'PY'
import json, sys
rates = []
for f in sys.argv[1:]:
    d = json.load(open(f))
    if "error" in d:
        sys.exit(f"{f}: {d['error']}")
    rates.append(d["end"]["sum_received"]["bits_per_second"] / 1e6)
print(" ".join(f"{r:.1f}" for r in rates))
PY
}

# lab_udp_fields SIZE FRAGMENT FILE [RATE]: merges the forward UDP figures of FRAGMENT (from
# lab_iperf_cpu_json after a UDP run with SIZE-byte datagrams) into the JSON object in FILE as
# udpSIZE_pps, udpSIZE_sent_pps, udpSIZE_lost_percent, udpSIZE_cpu_s_per_mpkt, ... and
# udp_rate (iperf3's -b: 0 is unlimited).
lab_udp_fields() {
  python3 - "$1" "$2" "$3" "${4:-0}" <<'PY'
import json, sys
size, frag, path, rate = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
r = json.load(open(path))
for k, v in frag.items():
    if k.startswith("forward_") and not k.endswith(("_gb", "_cpu_s_per_gb")):
        r[f"udp{size}_{k[len('forward_'):]}"] = v
r["udp_rate"] = rate
r["udp_direction"] = "forward"
json.dump(r, open(path, "w"))
PY
}

# lab_iperf_pairs SERVER_NS CLIENT_NS SECONDS OUT_PREFIX DIRECTIONS SADDR,BIND...: one TCP
# flow per pair at the same time (server SADDR on port 5201 + K for pair K, the client bound to
# BIND), per direction of DIRECTIONS ("fwd rev"); writes OUT_PREFIX.DIR.K.json and, with
# LAB_IPERF_PIDS, OUT_PREFIX.DIR.cpu (for lab_iperf_cpu_json, which sums the pairs). Prints the
# summed receiver-side rates in Mbit/s in the order asked. Bounded by `timeout`.
lab_iperf_pairs() {
  local sns=$1 cns=$2 secs=$3 out=$4 dirs=$5 d k rc=0 pair
  shift 5
  local -a spids=() cpids=() pairs=("$@")
  for k in "${!pairs[@]}"; do
    ip netns exec "$sns" iperf3 -s -B "${pairs[k]%%,*}" -p $((5201 + k)) >"$out.server.$k.log" 2>&1 &
    spids+=($!)
  done
  for k in "${!pairs[@]}"; do
    for _ in $(seq 50); do
      ip netns exec "$sns" ss -ltnH "sport = :$((5201 + k))" 2>/dev/null | grep -q . && break
      sleep 0.1
    done
  done
  for d in $dirs; do
    local -a rev=()
    [ "$d" = rev ] && rev=(-R)
    # shellcheck disable=SC2086 # LAB_IPERF_PIDS is a list of pids on purpose
    [ -n "${LAB_IPERF_PIDS:-}" ] && lab_cpu_ticks $LAB_IPERF_PIDS >"$out.$d.cpu"
    cpids=()
    for k in "${!pairs[@]}"; do
      pair=${pairs[k]}
      timeout $((secs + 30)) ip netns exec "$cns" iperf3 -c "${pair%%,*}" -p $((5201 + k)) -B "${pair#*,}" \
        -t "$secs" --connect-timeout 5000 "${rev[@]}" -J >"$out.$d.$k.json" 2>&1 &
      cpids+=($!)
    done
    for k in "${!cpids[@]}"; do
      wait "${cpids[k]}" || rc=1
    done
    # shellcheck disable=SC2086
    [ -n "${LAB_IPERF_PIDS:-}" ] && lab_cpu_ticks $LAB_IPERF_PIDS >>"$out.$d.cpu"
    ((rc == 0)) || break
  done
  lab_kill_pids "${spids[@]}"
  for k in "${!spids[@]}"; do wait "${spids[k]}" 2>/dev/null || true; done
  ((rc == 0)) || { lab_log "iperf3 failed, see $out.*"; tail -n 5 "$out".*.json >&2 2>/dev/null; return 1; }
  python3 - "$out" "$dirs" <<'PY'
import glob, json, sys
out, dirs = sys.argv[1], sys.argv[2].split()
rates = []
for d in dirs:
    total = 0.0
    for f in sorted(glob.glob(f"{out}.{d}.[0-9]*.json")):
        r = json.load(open(f))
        if "error" in r:
            sys.exit(f"{f}: {r['error']}")
        total += r["end"]["sum_received"]["bits_per_second"] / 1e6
    rates.append(total)
print(" ".join(f"{r:.1f}" for r in rates))
PY
}

# lab_find_wggo_current: prints the path of the current wireguard-go build (the peer with
# TUN and UDP offloads), or fails: $WIREGUARD_GO_CURRENT if set, else the newest
# wireguard-go-* in ../shared/anchors/bin beside the repository (how it was built: the
# README there). CI has none; the benchmark then says so and leaves that peer out.
lab_find_wggo_current() {
  local i
  if [ -n "${WIREGUARD_GO_CURRENT:-}" ]; then
    [ -x "$WIREGUARD_GO_CURRENT" ] && { echo "$WIREGUARD_GO_CURRENT"; return 0; }
    return 1
  fi
  local dir
  dir=$(cd "$LAB_REPO_DIR/../shared/anchors/bin" 2>/dev/null && pwd) || return 1
  local -a found=("$dir"/wireguard-go-*)
  # The glob sorts by name, so the newest version comes last.
  for ((i = ${#found[@]} - 1; i >= 0; i--)); do
    [ -x "${found[i]}" ] && { echo "${found[i]}"; return 0; }
  done
  return 1
}

# ---------------------------------------------------------------------------------------
# mifsec in the lab

MIFSEC_BIN=${MIFSEC_BIN:-$LAB_REPO_DIR/target/release/mifsec}

mifsec_build() {
  (cd "$LAB_REPO_DIR" && cargo build --release -p mifsec-control) || lab_die "cargo build --release -p mifsec-control failed"
}

_mifsec_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }
# A random SPI in [0x1000, 0x7fffffff]: >= 256 as CONFIG.md needs, positive in any integer type.
_mifsec_spi() { echo $((($(od -An -tu4 -N4 /dev/urandom | tr -d ' ') & 0x7fffffff) | 0x1000)); }

# mifsec_configs DIR POLICY [W1] [W2]: writes DIR/client.toml and DIR/gateway.toml per
# docs/CONFIG.md: one manually keyed SA "tunnel" (aes128gcm16, random keys and SPIs; the
# gateway swaps in/out), path "p1" on link 1 and "p2" on link 2 with weights W1 and W2
# (default 1 and 1). W2 = "none" writes p1 only (for lab_up_one_link). With policy failover,
# p1 is active and p2 standby. Control sockets: DIR/client.sock, DIR/gateway.sock.
# LAB_MIFSEC_SAS=N (default 1) writes N such SA pairs: "tunnel" for 10.1.0.0/24 <-> 10.2.0.0/24
# and "tunnelK" (K = 2..N) for 10.1.(K-1).0/24 <-> 10.2.(K-1).0/24, each with its own SPIs and
# keys and the same paths; the client has 10.1.(K-1).1 on its TUN, the gateway 10.2.(K-1).1.
mifsec_configs() {
  local dir=${1:?dir} policy=${2:?policy} w1=${3:-1} w2=${4:-1} nsas=${LAB_MIFSEC_SAS:-1} k s
  mkdir -p "$dir" || return 1
  # The daemons drop root: they must reach their state directories (made inside) as nobody.
  chmod 711 "$dir" || return 1
  # Per SA pair K: SPIs (all distinct) and keys (aes128gcm16: 16-byte key || 4-byte salt).
  local -a spis=() key_c2g=() key_g2c=()
  while ((${#spis[@]} < 2 * nsas)); do
    s=$(_mifsec_spi)
    [[ " ${spis[*]} " == *" $s "* ]] || spis+=("$s")
  done
  for ((k = 0; k < nsas; k++)); do
    key_c2g+=("$(_mifsec_hex 20)")
    key_g2c+=("$(_mifsec_hex 20)")
  done
  local p2role=active
  [ "$policy" = failover ] && p2role=standby
  # side: name, own inner prefix (10.1 or 10.2), peer's, device prefix, own last octet on
  # the links, peer's, "c2g" if this side's outbound is client -> gateway
  _mifsec_side_toml() {
    local name=$1 own=$2 peer_net=$3 dev=$4 me=$5 peer=$6 out=$7 addrs="" sa so ko si ki
    for ((k = 0; k < nsas; k++)); do
      addrs+="${addrs:+, }\"$own.$k.1/32\""
    done
    cat <<EOF
# Generated by scripts/lab.sh mifsec_configs for the lab ($name side).
[dataplane]
tun = "mifsec0"
addresses = [$addrs]
control_socket = "$dir/$name.sock"
state_dir = "$dir/$name-state"

[interfaces.link1]
device = "${dev}1"
address = "198.18.1.$me"
EOF
    [ "$w2" = none ] || cat <<EOF

[interfaces.link2]
device = "${dev}2"
address = "198.18.2.$me"
EOF
    for ((k = 0; k < nsas; k++)); do
      sa=tunnel
      ((k == 0)) || sa="tunnel$((k + 1))"
      if [ "$out" = c2g ]; then
        so=${spis[2 * k]} ko=${key_c2g[k]} si=${spis[2 * k + 1]} ki=${key_g2c[k]}
      else
        so=${spis[2 * k + 1]} ko=${key_g2c[k]} si=${spis[2 * k]} ki=${key_c2g[k]}
      fi
      cat <<EOF

[sa.$sa]
spi_out = $so
key_out = "$ko"
spi_in = $si
key_in = "$ki"
local_ts = ["$own.$k.0/24"]
remote_ts = ["$peer_net.$k.0/24"]
policy = "$policy"

[[sa.$sa.paths]]
name = "p1"
interface = "link1"
remote = "198.18.1.$peer:4500"
role = "active"
weight = $w1
EOF
      [ "$w2" = none ] || cat <<EOF

[[sa.$sa.paths]]
name = "p2"
interface = "link2"
remote = "198.18.2.$peer:4500"
role = "$p2role"
weight = $w2
EOF
    done
  }
  _mifsec_side_toml client 10.1 10.2 veth-c 2 1 c2g >"$dir/client.toml" &&
    _mifsec_side_toml gateway 10.2 10.1 veth-g 1 2 g2c >"$dir/gateway.toml" || return 1
  # Keys are secrets even in a lab: keep them readable by root only.
  chmod 600 "$dir/client.toml" "$dir/gateway.toml"
}

# mifsec_ike_configs DIR: writes DIR/client.toml and DIR/gateway.toml for the one-link lab
# (lab_up_one_link) with an IKEv2 connection "lab" instead of mifsec_configs' manual SA: PSK
# (random, 32 bytes), IKE aes128gcm16-prfsha256-x25519, one child "net" with the manual SA's
# selectors (10.1.0.0/24 <-> 10.2.0.0/24) and cipher (esp_proposals aes128gcm16-esn: AES-128-
# GCM with ESN, as the manual SA's defaults); the client initiates at start. Everything else
# (workers, MTU, offloads, the TUN and its address, the socket) as mifsec_configs writes it:
# the defaults. The child is installed in the engine as "lab-net-<spi_in>".
mifsec_ike_configs() {
  local dir=${1:?dir} psk
  mkdir -p "$dir" || return 1
  chmod 711 "$dir" || return 1
  psk=$(_mifsec_hex 32)
  # side: name, own inner prefix, peer's, device prefix, own last octet, peer's, peer's name
  _mifsec_ike_toml() {
    local name=$1 own=$2 peer_net=$3 dev=$4 me=$5 peer=$6 peer_name=$7
    cat <<EOF
# Generated by scripts/lab.sh mifsec_ike_configs for the lab ($name side).
[dataplane]
tun = "mifsec0"
addresses = ["$own.0.1/32"]
control_socket = "$dir/$name.sock"

[interfaces.link1]
device = "${dev}1"
address = "198.18.1.$me"

[connections.lab]
local_addrs = ["198.18.1.$me"]
remote_addrs = ["198.18.1.$peer"]
proposals = ["aes128gcm16-prfsha256-x25519"]
EOF
    if [ "$name" = client ]; then echo 'start_action = "start"'; fi
    cat <<EOF

[connections.lab.local]
auth = "psk"
id = "$name.lab"

[connections.lab.remote]
auth = "psk"
id = "$peer_name.lab"

[connections.lab.children.net]
local_ts = ["$own.0.0/24"]
remote_ts = ["$peer_net.0.0/24"]
esp_proposals = ["aes128gcm16-esn"]

[secrets.ike-lab]
id = ["client.lab", "gateway.lab"]
secret = "0x$psk"
EOF
  }
  _mifsec_ike_toml client 10.1 10.2 veth-c 2 1 gateway >"$dir/client.toml" &&
    _mifsec_ike_toml gateway 10.2 10.1 veth-g 1 2 client >"$dir/gateway.toml" || return 1
  # The PSK is a secret even in a lab: readable by root only.
  chmod 600 "$dir/client.toml" "$dir/gateway.toml"
}

# mifsec_wait_child DIR [TIMEOUT_S]: waits (default 20 s) until both daemons' `status --json`
# list an ESTABLISHED IKE SA with an INSTALLED child; fails with the logs' last lines if not.
mifsec_wait_child() {
  local dir=${1:?dir} limit=${2:-20} side ok
  for side in client gateway; do
    ok=0
    for _ in $(seq $((limit * 5))); do
      if mifsec_status "$dir" "$side" --json 2>/dev/null | python3 -c '
import json, sys
st = json.load(sys.stdin)
sys.exit(0 if any(i.get("state") == "ESTABLISHED"
                  and any(c.get("state") == "INSTALLED" for c in i.get("children", []))
                  for i in st.get("ike_sas", [])) else 1)' 2>/dev/null; then
        ok=1
        break
      fi
      sleep 0.2
    done
    if ((!ok)); then
      tail -n 5 "$dir/client.log" "$dir/gateway.log" | sed 's/^/    /' >&2
      lab_die "no IKE child installed on the $side within ${limit}s"
      return 1
    fi
  done
  lab_log "IKE child installed on both ends"
}

# mifsec_status DIR SIDE [ARGS...]: `mifsec status` of SIDE (client|gateway).
mifsec_status() {
  local dir=$1 side=$2
  shift 2
  "$MIFSEC_BIN" status --socket "$dir/$side.sock" "$@"
}

# mifsec_ctl DIR SIDE CMD...: `mifsec ctl CMD... --socket DIR/SIDE.sock`.
mifsec_ctl() {
  local dir=$1 side=$2
  shift 2
  "$MIFSEC_BIN" ctl "$@" --socket "$dir/$side.sock"
}

# mifsec_ctl_both DIR CMD...: the same ctl command on the client, then the gateway (manual SAs
# have no IKE to tell the peer, so both ends are driven, as with `ip xfrm`).
mifsec_ctl_both() {
  local dir=$1
  shift
  mifsec_ctl "$dir" client "$@" && mifsec_ctl "$dir" gateway "$@"
}

# mifsec_start DIR P [TIMEOUT_S]: starts `mifsec run` for client.toml in P"cl" and gateway.toml
# in P"gw", in the background (logs DIR/client.log, DIR/gateway.log, pids DIR/*.pid), and
# waits until `mifsec status --json` answers on both sockets. Fails with a clear message if a
# daemon exits or does not answer in time.
mifsec_start() {
  local dir=${1:?dir} p=${2:?prefix} limit=${3:-15} side ns pid
  [ -x "$MIFSEC_BIN" ] || lab_die "$MIFSEC_BIN is missing: build it with 'cargo build --release -p mifsec-control'" || return 1
  for side in client gateway; do
    ns="${p}cl"
    [ $side = gateway ] && ns="${p}gw"
    rm -f "$dir/$side.sock"
    # `ip netns exec` execs the command, so $! is the daemon itself.
    ip netns exec "$ns" "$MIFSEC_BIN" run --config "$dir/$side.toml" >"$dir/$side.log" 2>&1 &
    echo $! >"$dir/$side.pid"
  done
  for side in client gateway; do
    pid=$(cat "$dir/$side.pid")
    for _ in $(seq $((limit * 5))); do
      if ! kill -0 "$pid" 2>/dev/null; then
        local rc=0
        wait "$pid" 2>/dev/null || rc=$?
        lab_log "mifsec ($side) exited with status $rc before answering; last lines of $dir/$side.log:"
        tail -n 5 "$dir/$side.log" | sed 's/^/    /' >&2
        lab_die "the mifsec daemon did not start (the packet engine and daemon may not be built yet: see README 'State')"
        return 1
      fi
      mifsec_status "$dir" "$side" --json >/dev/null 2>&1 && continue 2
      sleep 0.2
    done
    tail -n 5 "$dir/$side.log" | sed 's/^/    /' >&2
    lab_die "mifsec ($side, pid $pid) runs but 'mifsec status --socket $dir/$side.sock --json' did not answer in ${limit}s"
    return 1
  done
  lab_log "mifsec up on both ends (client pid $(cat "$dir/client.pid"), gateway pid $(cat "$dir/gateway.pid"))"
}

# mifsec_stop DIR: stops both daemons started by mifsec_start (by pid).
mifsec_stop() {
  local dir=${1:?dir} side
  local -a pids=()
  for side in client gateway; do
    [ -f "$dir/$side.pid" ] && pids+=("$(cat "$dir/$side.pid")")
    rm -f "$dir/$side.pid"
  done
  lab_kill_pids "${pids[@]}"
}

# mifsec_rss_start DIR [MAX_SAMPLES]: samples VmRSS (kB) of both daemons once a second into
# DIR/rss-SIDE.txt, until the daemon exits or MAX_SAMPLES (default 3600) are taken.
mifsec_rss_start() {
  local dir=${1:?dir} max=${2:-3600} side pid
  for side in client gateway; do
    pid=$(cat "$dir/$side.pid" 2>/dev/null) || continue
    (
      for _ in $(seq "$max"); do
        awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || break
        sleep 1
      done
    ) >"$dir/rss-$side.txt" 2>/dev/null &
    echo $! >"$dir/rss-$side.pid"
  done
}

# mifsec_rss_stop DIR: stops the samplers and prints {"client":{first,last,max},...} in kB.
mifsec_rss_stop() {
  local dir=${1:?dir} side
  for side in client gateway; do
    [ -f "$dir/rss-$side.pid" ] || continue
    lab_kill_pids "$(cat "$dir/rss-$side.pid")"
    rm -f "$dir/rss-$side.pid"
  done
  python3 - "$dir" <<'PY'
import json, os, sys
out = {}
for side in ("client", "gateway"):
    f = os.path.join(sys.argv[1], f"rss-{side}.txt")
    v = [int(x) for x in open(f).read().split()] if os.path.exists(f) else []
    out[side] = {"first_kb": v[0], "last_kb": v[-1], "max_kb": max(v), "samples": len(v)} if v else None
print(json.dumps(out))
PY
}

# mifsec_wait_tunnel [P]: waits (10 s at most) until a ping crosses the tunnel from the
# client's 10.1.0.1 to the gateway's 10.2.0.1.
mifsec_wait_tunnel() {
  local p=${1:-$LAB_P}
  for _ in $(seq 20); do
    ip netns exec "${p}cl" ping -c 1 -W 0.5 -I 10.1.0.1 10.2.0.1 >/dev/null 2>&1 && return 0
    sleep 0.3
  done
  lab_die "no ping crosses the tunnel 10.1.0.1 -> 10.2.0.1 within 10 s"
}

# mifsec_udpseq DIR PPS SECONDS AT_S ACTION...: a udpseq stream from the client (10.1.0.1)
# to the gateway (10.2.0.1:9000) through the tunnel of lab $LAB_P; ACTION... runs AT_S seconds
# after the stream starts (its output goes to stderr). Prints the receiver's JSON report
# (scripts/udpseq.py); files DIR/udpseq.*.
mifsec_udpseq() {
  local dir=$1 pps=$2 secs=$3 at=$4 rpid spid p=$LAB_P
  shift 4
  ip netns exec "${p}gw" python3 "$LAB_SCRIPTS_DIR/udpseq.py" recv --bind 10.2.0.1:9000 \
    --seconds "$(awk -v s="$secs" 'BEGIN { print s + 10 }')" --json "$dir/udpseq.recv.json" 2>"$dir/udpseq.recv.log" &
  rpid=$!
  sleep 0.5 # the receiver binds before the first packet is sent
  ip netns exec "${p}cl" python3 "$LAB_SCRIPTS_DIR/udpseq.py" send --to 10.2.0.1:9000 \
    --rate "$pps" --seconds "$secs" --json "$dir/udpseq.send.json" &
  spid=$!
  sleep "$at"
  if ! "$@" >&2; then
    wait "$spid" "$rpid" 2>/dev/null || true
    lab_die "'$*' failed during the udpseq stream"
    return 1
  fi
  wait "$spid" && wait "$rpid" || lab_die "udpseq failed, see $dir/udpseq.*" || return 1
  cat "$dir/udpseq.recv.json"
}
