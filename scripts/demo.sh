#!/usr/bin/env bash
# The mifsec demo: two mifsec peers with IKEv2 over two links per side, and the
# multi-interface extension between them.
#
#   scripts/demo.sh                          builds, then runs every step below
#   MIFSEC_BIN=/path/mifsec scripts/demo.sh  uses that binary (no build of it; mif-stream
#                                            is taken from beside it, or built)
#
#  1. build target/release/mifsec and target/release/mif-stream (the test kit's UDP stream);
#     install iperf3, tcpdump, tshark & co. when missing
#  2. scripts/demo.py does the rest (its docstring has the details): the test kit's
#     multi-interface lab (client links c1 200 Mbit/s and c2 100 Mbit/s, gateway links g1
#     and g2, every address pair a path through a middle router); the manually keyed SA's
#     aggregate rate as the reference; IKEv2 with 50 child SAs and the extension: the
#     IKE-negotiated child's aggregate rate against the manual one, a soft handover of every
#     child from c1 to c2 in one exchange under 10,000 packets/s (IKE messages counted from a
#     capture, packets lost), c2 removed and added back, c1 silently blackholed and back, a
#     clone of the IKE SA on the second link; a short report
#
# Needs root. Everything (processes, namespaces) is torn down on exit, Ctrl-C or failure; the
# exit status is non-zero if any step fails. KEEP_WORK=1 keeps the work folder.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# The caller's binary, if any: lab.sh gives MIFSEC_BIN a default of its own.
user_bin=${MIFSEC_BIN:-}
# shellcheck source=scripts/lab.sh
source scripts/lab.sh
MIFSEC_BIN=$user_bin

[ "$(id -u)" = 0 ] || { echo "$0: needs root (network namespaces, TUN)" >&2; exit 1; }
printf '\n\033[1m== build\033[0m\n'
if [ -z "${MIFSEC_BIN:-}" ]; then
  cargo build --release --locked -p mifsec-control --bin mifsec
  MIFSEC_BIN=target/release/mifsec
fi
STREAM_BIN=$(dirname "$MIFSEC_BIN")/mif-stream
if [ ! -x "$STREAM_BIN" ]; then
  cargo build --release --locked -p mifsec-testkit --bin mif-stream
  STREAM_BIN=target/release/mif-stream
fi
[ -x "$MIFSEC_BIN" ] || lab_die "$MIFSEC_BIN is missing"
lab_need_tools
keep=()
[ "${KEEP_WORK:-0}" = 1 ] && keep=(--keep)
exec python3 scripts/demo.py --bin "$MIFSEC_BIN" --stream-bin "$STREAM_BIN" "${keep[@]}" \
  ${DEMO_CHILDREN:+--children "$DEMO_CHILDREN"}
