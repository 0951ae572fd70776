#!/usr/bin/env bash
# The comparison peers ("anchors") for mifsec's lab benchmarks, each between two network
# namespaces on one unshaped veth (the LAB-FACTS.md shape, scripts/lab.sh lab_up_one_link):
#
#   plain         no tunnel: iperf3 straight over the veth (198.18.1.2 -> 198.18.1.1)
#   strongswan    strongSwan charon, kernel-libipsec (userspace ESP on a TUN), IKEv2 PSK,
#                 aes128gcm16; client virtual IP 10.1.0.1 -> gateway 10.2.0.1
#   wireguard-go  Debian's wireguard-go, 10.1.0.1 -> 10.2.0.1
#   wireguard-go-current  the current wireguard-go (TUN TSO/USO/GRO and UDP GSO/GRO, the
#                 reference of the packet path), the build in ../shared/anchors/bin or
#                 $WIREGUARD_GO_CURRENT (scripts/lab.sh lab_find_wggo_current); exits 3
#                 saying so when there is none
#   boringtun     boringtun-cli (cargo install), 10.1.0.1 -> 10.2.0.1
#
#   scripts/anchors.sh NAME                 iperf3 -t 10
#   SECONDS=5 scripts/anchors.sh NAME       iperf3 -t 5 (IPERF_SECONDS=5 works too)
#   ANCHOR_TEST=udp_small scripts/anchors.sh NAME   instead of the TCP flows: iperf3 UDP,
#                 forward, at unlimited rate (-b 0; ANCHOR_UDP_RATE to set one) with the
#                 datagram payloads of ANCHOR_UDP_SIZES (default "64 512"): per size S
#                 udpS_pps (delivered, the receiver's figure), udpS_sent_pps,
#                 udpS_lost_percent, udpS_cpu_s_per_mpkt (daemons' CPU s per million delivered)
#   ANCHOR_TEST=parallel4 scripts/anchors.sh NAME   iperf3 -P 4 (four TCP flows) each way
#   ANCHOR_PROFILE=1 scripts/anchors.sh NAME   (TCP only) also a sampled profile of both
#                 daemons during the flows, as bench-e2e takes mifsec's (perf record -g,
#                 cpu-clock, 499 Hz), and its buckets by kind of work as breakdown_* in the
#                 JSON (scripts/perf_breakdown.py); nothing when perf is missing
#
# Runs one TCP flow forward (client -> gateway) and one reverse (-R), checks that the bytes
# really crossed the tunnel device, and prints ONE JSON line on stdout:
#   {"name": "...", "forward_mbps": F, "reverse_mbps": R, "seconds": T,
#    "forward_cpu_s_per_gb": C, "reverse_cpu_s_per_gb": C, ...}
# where the CPU figures are the tunnel daemons' utime + stime (both ends, from /proc) per GB
# that iperf3's receiver got (none for plain, which has no daemon).
# Everything else goes to stderr. Installs what it needs (apt; boringtun via cargo, once).
# Namespaces ${ANCHOR_PREFIX:-mfa}cl / ...gw; all processes and namespaces are removed on
# exit, failure or Ctrl-C. The work folder (configs, logs) is kept only on failure or with
# KEEP_WORK=1.

# SECONDS is bash's own "seconds since start" counter: read it before anything else. If the
# caller exported SECONDS=N it starts at N; otherwise it is 0 here and the default applies.
_t=$SECONDS
IPERF_SECONDS=${IPERF_SECONDS:-$_t}
((IPERF_SECONDS > 0)) || IPERF_SECONDS=10

set -euo pipefail
# shellcheck source=scripts/lab.sh
source "$(dirname "$0")/lab.sh"
SCRIPTS=$(cd "$(dirname "$0")" && pwd)

usage() {
  echo "usage: $0 plain|strongswan|wireguard-go|wireguard-go-current|boringtun" >&2
  exit 2
}
(($# == 1)) || usage
NAME=$1
case "$NAME" in plain | strongswan | wireguard-go | wireguard-go-current | boringtun) ;; *) usage ;; esac
[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces)" >&2; exit 1; }

P=${ANCHOR_PREFIX:-mfa}
CL="${P}cl"
GW="${P}gw"
# WireGuard UAPI sockets live in /var/run/wireguard, shared by all namespaces: the interface
# names must be unique on the host, hence the prefix.
WGC="${P}-wgc"
WGG="${P}-wgg"
WORK=$(mktemp -d "/tmp/mifsec-anchor-$NAME.XXXXXX")
ok=0
# The tunnel's daemons (both ends), whose CPU time the figures count.
DAEMONS=()

log() { printf '[anchors %s] %s\n' "$NAME" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  lab_down "$P"
  rm -f "/var/run/wireguard/$WGC.sock" "/var/run/wireguard/$WGG.sock"
  if ((ok)) && [ "${KEEP_WORK:-0}" != 1 ]; then
    rm -rf "$WORK"
  else
    log "logs and configs kept in $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- installation -----------------------------------------------------------------------

need_strongswan() {
  [ -x /usr/lib/ipsec/charon ] && command -v swanctl >/dev/null && return 0
  lab_apt_install strongswan-charon strongswan-swanctl libcharon-extra-plugins \
    libstrongswan-standard-plugins libstrongswan-extra-plugins
}

need_wireguard() {
  command -v wireguard-go >/dev/null && command -v wg >/dev/null && return 0
  lab_apt_install wireguard-go wireguard-tools
}

BORINGTUN=""
need_boringtun() {
  need_wireguard # for `wg`
  BORINGTUN=$(command -v boringtun-cli || true)
  [ -z "$BORINGTUN" ] && [ -x "$HOME/.cargo/bin/boringtun-cli" ] && BORINGTUN=$HOME/.cargo/bin/boringtun-cli
  if [ -z "$BORINGTUN" ]; then
    log "installing boringtun-cli with cargo (a few minutes, once)"
    cargo install boringtun-cli --locked >"$WORK/cargo-install.log" 2>&1 ||
      die "cargo install boringtun-cli failed, see $WORK/cargo-install.log"
    BORINGTUN=$HOME/.cargo/bin/boringtun-cli
  fi
}

# --- helpers ------------------------------------------------------------------------------

# dev_bytes NS DEV: rx + tx bytes of DEV in NS.
dev_bytes() {
  local s=/sys/class/net/$2/statistics
  ip netns exec "$1" sh -c "echo \$((\$(cat $s/rx_bytes) + \$(cat $s/tx_bytes)))"
}

# wait_for WHAT SECONDS CMD...: polls CMD every 0.1 s.
wait_for() {
  local what=$1 limit=$2
  shift 2
  for _ in $(seq $((limit * 10))); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  die "timed out after ${limit}s waiting for $what"
}

# run_iperf SERVER_ADDR [BIND] [TUNNEL_DEV]: sets FWD and REV (Mbit/s) and RESULT (the JSON
# fields of the test); with TUNNEL_DEV, checks that at least 90% of iperf's bytes went through
# that device in the client namespace. ANCHOR_TEST (tcp, udp_small, parallel4) says what runs.
FWD="" REV="" RESULT='{}'
run_iperf() {
  local saddr=$1 bind=${2:-} dev=${3:-} before=0 after
  [ -n "$dev" ] && before=$(dev_bytes "$CL" "$dev")
  case "${ANCHOR_TEST:-tcp}" in
    tcp)
      local rates perf_pid=""
      if [ "${ANCHOR_PROFILE:-0}" = 1 ] && command -v perf >/dev/null && ((${#DAEMONS[@]})); then
        # As bench-e2e profiles mifsec: both daemons, software clock, call chains.
        perf record -q -g -e cpu-clock -F 499 -o "$WORK/perf.data" \
          -p "$(IFS=,; echo "${DAEMONS[*]}")" >"$WORK/perf.log" 2>&1 &
        perf_pid=$!
        sleep 0.5 # perf attaches before the transfer starts
      fi
      rates=$(LAB_IPERF_PIDS="${DAEMONS[*]}" LAB_IPERF_PING=1 lab_iperf "$GW" "$saddr" "$CL" "$IPERF_SECONDS" "$WORK/iperf" "$bind") ||
        die "iperf3 failed"
      read -r FWD REV <<<"$rates"
      RESULT=$(lab_iperf_cpu_json "$WORK/iperf")
      if [ -n "$perf_pid" ]; then
        kill -INT "$perf_pid" 2>/dev/null || true
        wait "$perf_pid" 2>/dev/null || true
        local with
        # The same buckets as mifsec's profile (aead: Go's chacha20/poly1305 code here).
        if with=$(python3 "$SCRIPTS/perf_breakdown.py" "$WORK/perf.data" "$RESULT" 2>"$WORK/perf-breakdown.log"); then
          RESULT=$with
        else
          log "perf_breakdown.py failed, see $WORK/perf-breakdown.log"
        fi
      fi
      python3 -c 'import json, sys; r = {"forward_mbps": float(sys.argv[1]), "reverse_mbps": float(sys.argv[2])}; r.update(json.loads(sys.argv[3])); print(json.dumps(r))' \
        "$FWD" "$REV" "$RESULT" >"$WORK/result.json"
      ;;
    udp_small)
      local size rate=${ANCHOR_UDP_RATE:-0} frag
      echo '{}' >"$WORK/result.json"
      for size in ${ANCHOR_UDP_SIZES:-64 512}; do
        LAB_IPERF_PIDS="${DAEMONS[*]}" LAB_IPERF_ARGS="-u -l $size -b $rate" \
          lab_iperf "$GW" "$saddr" "$CL" "$IPERF_SECONDS" "$WORK/udp$size" "$bind" fwd >/dev/null || die "iperf3 UDP -l $size failed"
        frag=$(lab_iperf_cpu_json "$WORK/udp$size")
        lab_udp_fields "$size" "$frag" "$WORK/result.json" "$rate"
      done
      ;;
    parallel4)
      local rates
      rates=$(LAB_IPERF_PIDS="${DAEMONS[*]}" LAB_IPERF_ARGS="-P 4" lab_iperf "$GW" "$saddr" "$CL" "$IPERF_SECONDS" "$WORK/iperf" "$bind") ||
        die "iperf3 -P 4 failed"
      read -r FWD REV <<<"$rates"
      RESULT=$(lab_iperf_cpu_json "$WORK/iperf")
      python3 -c 'import json, sys; r = {"flows": 4, "forward_mbps": float(sys.argv[1]), "reverse_mbps": float(sys.argv[2])}; r.update(json.loads(sys.argv[3])); print(json.dumps(r))' \
        "$FWD" "$REV" "$RESULT" >"$WORK/result.json"
      ;;
    *) die "ANCHOR_TEST=$ANCHOR_TEST: not tcp, udp_small or parallel4" ;;
  esac
  RESULT=$(cat "$WORK/result.json")
  if [ -n "$dev" ]; then
    after=$(dev_bytes "$CL" "$dev")
    python3 - "$((after - before))" "$dev" "$WORK"/iperf.fwd.json "$WORK"/iperf.rev.json "$WORK"/udp*.fwd.json <<'PY' || die "traffic did not cross the tunnel"
import json, os, sys
moved = sum(json.load(open(f))["end"]["sum_received"]["bytes"] for f in sys.argv[3:] if os.path.exists(f))
seen = int(sys.argv[1])
print(f"[anchors] {sys.argv[2]} carried {seen / 1e6:.0f} MB for iperf's {moved / 1e6:.0f} MB", file=sys.stderr)
sys.exit(0 if seen >= 0.9 * moved else 1)
PY
  fi
}

# --- anchors --------------------------------------------------------------------------------

run_plain() {
  lab_up_one_link "$P"
  run_iperf 198.18.1.1
}

# swan_conf SIDE: strongswan.conf for one charon, everything inside $WORK/SIDE.
swan_conf() {
  local d=$WORK/$1
  mkdir -p "$d"/swanctl/{x509,x509ca,x509ocsp,x509aa,x509ac,x509crl,pubkey,private,rsa,ecdsa,bliss,pkcs8,pkcs12}
  # kernel-libipsec: userspace ESP on a TUN (ipsec0), as the kernel has no ESP here;
  # kernel-netlink installs routes and the virtual IP.
  cat >"$d/strongswan.conf" <<EOF
charon {
  load = random nonce aes aesni gcm sha1 sha2 hmac curve25519 x509 pubkey pem pkcs1 kdf openssl kernel-libipsec kernel-netlink socket-default vici attr updown
  filelog {
    lab {
      path = $d/charon.log
      default = 1
      time_format = %T
    }
  }
  plugins {
    vici {
      socket = unix://$d/charon.vici
    }
    kernel-libipsec {
      allow_peer_ts = yes
    }
  }
  install_routes = yes
}
EOF
}

run_strongswan() {
  need_strongswan
  lab_up_one_link "$P"
  # The gateway's inner address; the client gets 10.1.0.1 from the pool.
  ip netns exec "$GW" ip addr add 10.2.0.1/32 dev lo
  swan_conf gw
  swan_conf cl
  local secrets
  secrets=$(
    cat <<EOF
secrets {
  ike-1 {
    id-1 = gw
    id-2 = cl
    secret = "$(lab_hex_secret)"
  }
}
EOF
  )
  # swanctl.conf wants one `key = value` per line.
  cat >"$WORK/gw/swanctl/swanctl.conf" <<EOF
connections {
  rw {
    local_addrs = 198.18.1.1
    pools = inner
    version = 2
    proposals = aes128gcm16-prfsha256-x25519
    local {
      auth = psk
      id = gw
    }
    remote {
      auth = psk
      id = cl
    }
    children {
      net {
        local_ts = 10.2.0.0/24
        esp_proposals = aes128gcm16
      }
    }
  }
}
pools {
  inner {
    addrs = 10.1.0.0/24
  }
}
$secrets
EOF
  cat >"$WORK/cl/swanctl/swanctl.conf" <<EOF
connections {
  home {
    remote_addrs = 198.18.1.1
    vips = 0.0.0.0
    version = 2
    proposals = aes128gcm16-prfsha256-x25519
    local {
      auth = psk
      id = cl
    }
    remote {
      auth = psk
      id = gw
    }
    children {
      net {
        remote_ts = 10.2.0.0/24
        esp_proposals = aes128gcm16
      }
    }
  }
}
$secrets
EOF
  chmod 600 "$WORK"/{gw,cl}/swanctl/swanctl.conf
  local side ns
  for side in gw cl; do
    ns=$GW
    [ $side = cl ] && ns=$CL
    # Two charons on one host clash on /run/charon.pid: give each a private /run.
    ip netns exec "$ns" unshare -m sh -c "mount -t tmpfs tmpfs /run && STRONGSWAN_CONF=$WORK/$side/strongswan.conf exec /usr/lib/ipsec/charon" \
      >"$WORK/$side/stdout" 2>&1 &
    # unshare and sh exec (no fork): this pid becomes charon's.
    DAEMONS+=($!)
  done
  for side in gw cl; do
    wait_for "charon ($side) vici socket" 10 test -S "$WORK/$side/charon.vici"
    ip netns exec "${P}${side}" swanctl --load-all --file "$WORK/$side/swanctl/swanctl.conf" \
      -u "unix://$WORK/$side/charon.vici" >"$WORK/$side/load.log" 2>&1 || die "swanctl --load-all ($side) failed, see $WORK/$side/load.log"
  done
  timeout 20 ip netns exec "$CL" swanctl --initiate --child net --timeout 15 -u "unix://$WORK/cl/charon.vici" \
    >"$WORK/cl/initiate.log" 2>&1 || die "IKE_SA did not come up, see $WORK/cl/initiate.log and charon.log"
  wait_for "the virtual IP 10.1.0.1 in the client" 10 \
    sh -c "ip netns exec $CL ip -o addr show | grep -q 'inet 10.1.0.1/'"
  wait_for "a ping through the tunnel" 10 ip netns exec "$CL" ping -c 1 -W 1 10.2.0.1
  run_iperf 10.2.0.1 10.1.0.1 ipsec0
}

lab_hex_secret() { od -An -tx1 -N24 /dev/urandom | tr -d ' \n'; }

run_wireguard() { # $1 = wireguard-go | wireguard-go-current | boringtun
  local wggo=wireguard-go
  if [ "$1" = boringtun ]; then need_boringtun; else need_wireguard; fi
  if [ "$1" = wireguard-go-current ]; then
    wggo=$WGGO_CURRENT
    log "using $wggo"
  fi
  lab_up_one_link "$P"
  rm -f "/var/run/wireguard/$WGC.sock" "/var/run/wireguard/$WGG.sock"
  local side ns dev
  for side in c g; do
    ns=$CL dev=$WGC
    [ $side = g ] && ns=$GW dev=$WGG
    (umask 077 && wg genkey >"$WORK/$side.key")
    wg pubkey <"$WORK/$side.key" >"$WORK/$side.pub"
    if [ "$1" = boringtun ]; then
      ip netns exec "$ns" env WG_SUDO=1 "$BORINGTUN" -f --disable-drop-privileges "$dev" >"$WORK/$side.log" 2>&1 &
    else
      ip netns exec "$ns" "$wggo" -f "$dev" >"$WORK/$side.log" 2>&1 &
    fi
    DAEMONS+=($!) # `ip netns exec` execs: the daemon itself
  done
  wait_for "$1 UAPI sockets" 10 test -S "/var/run/wireguard/$WGC.sock" -a -S "/var/run/wireguard/$WGG.sock"
  ip netns exec "$CL" wg set "$WGC" private-key "$WORK/c.key" listen-port 51820 \
    peer "$(cat "$WORK/g.pub")" allowed-ips 10.2.0.0/24 endpoint 198.18.1.1:51820
  ip netns exec "$GW" wg set "$WGG" private-key "$WORK/g.key" listen-port 51820 \
    peer "$(cat "$WORK/c.pub")" allowed-ips 10.1.0.0/24 endpoint 198.18.1.2:51820
  ip netns exec "$CL" ip addr add 10.1.0.1/32 dev "$WGC"
  ip netns exec "$GW" ip addr add 10.2.0.1/32 dev "$WGG"
  ip netns exec "$CL" ip link set "$WGC" mtu 1420 up
  ip netns exec "$GW" ip link set "$WGG" mtu 1420 up
  ip netns exec "$CL" ip route add 10.2.0.0/24 dev "$WGC"
  ip netns exec "$GW" ip route add 10.1.0.0/24 dev "$WGG"
  wait_for "a ping through the tunnel" 10 ip netns exec "$CL" ping -c 1 -W 1 10.2.0.1
  run_iperf 10.2.0.1 10.1.0.1 "$WGC"
}

lab_need_tools
if [ "$NAME" = wireguard-go-current ]; then
  WGGO_CURRENT=$(lab_find_wggo_current) || {
    if [ -n "${WIREGUARD_GO_CURRENT:-}" ]; then
      log "no current wireguard-go build: WIREGUARD_GO_CURRENT=$WIREGUARD_GO_CURRENT is not an executable"
    else
      log "no current wireguard-go build: none in $LAB_REPO_DIR/../shared/anchors/bin and WIREGUARD_GO_CURRENT unset"
    fi
    ok=1
    exit 3
  }
fi
log "iperf3 -t $IPERF_SECONDS, ${ANCHOR_TEST:-tcp}"
case "$NAME" in
  plain) run_plain ;;
  strongswan) run_strongswan ;;
  wireguard-go) run_wireguard wireguard-go ;;
  wireguard-go-current) run_wireguard wireguard-go-current ;;
  boringtun) run_wireguard boringtun ;;
esac
log "${ANCHOR_TEST:-tcp}: $RESULT"
python3 - "$NAME" "$IPERF_SECONDS" "$RESULT" "${WGGO_CURRENT:-}" <<'PY'
import json, os, sys
name, secs, result, binary = sys.argv[1:5]
r = {"name": name, "seconds": int(secs)}
r.update(json.loads(result))
if binary:
    r["binary"] = os.path.basename(binary)
print(json.dumps(r))
PY
ok=1
