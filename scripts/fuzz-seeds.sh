#!/usr/bin/env bash
# Regenerates the committed seed corpora of the fuzz targets, control/fuzz/seeds/TARGET and
# dataplane/fuzz/seeds/TARGET, from the generators in each fuzz crate's examples/seeds.rs
# (genuine IKE messages of live SAs, packets with valid checksums, the documentation's
# configuration examples). Needs no nightly: the generators only need `--cfg fuzzing`.
set -euo pipefail
cd "$(dirname "$0")/.."
for dir in dataplane/fuzz control/fuzz; do
  rm -rf "$dir/seeds"
  (cd "$dir" && RUSTFLAGS="--cfg fuzzing" CARGO_TARGET_DIR="$PWD/../../target/fuzz-seeds" \
    cargo run --release --example seeds)
done
