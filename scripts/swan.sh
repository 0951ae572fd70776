#!/usr/bin/env bash
# strongSwan 5.9 (charon + kernel-libipsec: userspace ESP over a TUN, no kernel XFRM needed)
# as a peer for mifsec's interop tests. One charon per network namespace, each in its own
# mount namespace with a private /run (two charons would clash on /run/charon.pid), its vici
# socket and log in DIR.
#
# usage:
#   swan.sh install                 install strongSwan (and its pki tool) from Debian if
#                                   missing (root)
#   swan.sh start NS DIR            write DIR/strongswan.conf, start charon in NS; the
#                                   lines of $SWAN_CHARON_EXTRA (if set) go into its
#                                   charon { } section (e.g. "fragment_size = 400")
#   swan.sh load NS DIR             swanctl --load-all from DIR/swanctl/swanctl.conf
#   swan.sh swanctl NS DIR ARGS...  any swanctl command against this charon
#   swan.sh stop DIR                stop the charon started with DIR
#
# The caller writes DIR/swanctl/swanctl.conf (one key = value per line).
set -euo pipefail

cmd=${1:-}
shift || true

case "$cmd" in
install)
  if [ -x /usr/lib/ipsec/charon ] && command -v swanctl >/dev/null && command -v pki >/dev/null; then
    exit 0
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y strongswan-charon strongswan-swanctl strongswan-pki \
    libcharon-extra-plugins libstrongswan-standard-plugins libstrongswan-extra-plugins >/dev/null
  ;;
start)
  ns=$1 dir=$2
  mkdir -p "$dir"/swanctl/{x509,x509ca,x509ocsp,x509aa,x509ac,x509crl,pubkey,private,rsa,ecdsa,bliss,pkcs8,pkcs12}
  cat >"$dir/strongswan.conf" <<EOF
charon {
  load = random nonce aes aesni gcm sha1 sha2 hmac curve25519 x509 pubkey pem pkcs1 kdf openssl gcrypt eap-identity eap-mschapv2 eap-tls kernel-libipsec kernel-netlink socket-default vici attr updown
  filelog {
    swan {
      path = $dir/charon.log
      # Tests poll this log for events: every line reaches the file at once.
      flush_line = yes
      default = 1
      ike = 2
      time_format = %T
    }
  }
  plugins {
    vici {
      socket = unix://$dir/charon.vici
    }
    kernel-libipsec {
      allow_peer_ts = yes
    }
  }
  install_routes = yes
${SWAN_CHARON_EXTRA:-}
}
EOF
  ip netns exec "$ns" unshare -m sh -c \
    "mount -t tmpfs tmpfs /run && STRONGSWAN_CONF=$dir/strongswan.conf exec /usr/lib/ipsec/charon" \
    >"$dir/stdout" 2>&1 &
  echo $! >"$dir/charon.pid"
  for _ in $(seq 300); do # up to 30 s on a loaded machine
    [ -S "$dir/charon.vici" ] && exit 0
    sleep 0.1
  done
  echo "charon did not open $dir/charon.vici; see $dir/stdout and $dir/charon.log" >&2
  exit 1
  ;;
load)
  ns=$1 dir=$2
  ip netns exec "$ns" swanctl --load-all --file "$dir/swanctl/swanctl.conf" -u "unix://$dir/charon.vici"
  ;;
swanctl)
  ns=$1 dir=$2
  shift 2
  ip netns exec "$ns" swanctl "$@" -u "unix://$dir/charon.vici"
  ;;
stop)
  dir=$1
  if [ -f "$dir/charon.pid" ]; then
    pid=$(cat "$dir/charon.pid")
    # The pid is ip-netns-exec's, which exec'd unshare, which exec'd sh -c ... exec charon.
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/charon.pid"
  fi
  ;;
*)
  sed -n '2,15p' "$0" >&2
  exit 2
  ;;
esac
