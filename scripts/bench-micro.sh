#!/usr/bin/env bash
# Runs the criterion micro-benchmarks (ESP seal/open against the bare AEAD, the replay window,
# IKE handshakes per second as responder, SA table swaps per second, the IP header work of the
# packet path: GSO split, TCP GRO, transport against tunnel mode)
# and prints Mpps, GB/s and the ESP/bare ratio per cipher, backend and size. Writes
# bench/results/micro.json. Extra arguments go to criterion (e.g. a filter: 1400).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench -p mifsec-bench --bench esp --bench replay --bench ike --bench sa_table --bench packet_path -- "$@"
python3 scripts/bench_summary.py target/criterion bench/results/micro.json
