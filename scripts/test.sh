#!/usr/bin/env bash
# Runs every test of mifsec: formatting, clippy, unit and integration tests (the ones that
# need root and network namespaces included), loom model tests of the replay window, a single
# pass of every criterion benchmark, the cargo deny checks, and a smoke run of every fuzz
# target.
#
# On a fresh Debian 12 machine it installs what it needs first. Run it as root: the TUN and
# namespace tests need it (they fail, loudly, without it; with MIFSEC_SKIP_ROOT_TESTS=1 they
# are built ignored and the test summaries count them as ignored).
#
#   scripts/test.sh            everything
#   FUZZ_SECONDS=60 scripts/test.sh   longer fuzz runs
#   MIFSEC_SKIP_ROOT_TESTS=1 scripts/test.sh   without root: the root tests show as ignored
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-10}
# A CI machine builds once: incremental caches would only fill its disk.
[ -n "${CI:-}" ] && export CARGO_INCREMENTAL=0
step() { printf '\n==> %s\n' "$*"; }

step "installing what the tests need"
need_apt=()
command -v ip >/dev/null || need_apt+=(iproute2)
command -v tc >/dev/null || need_apt+=(iproute2)
command -v ping >/dev/null || need_apt+=(iputils-ping)
command -v tcpdump >/dev/null || need_apt+=(tcpdump)
command -v tshark >/dev/null || need_apt+=(tshark)
command -v iperf3 >/dev/null || need_apt+=(iperf3)
command -v tmux >/dev/null || need_apt+=(tmux)
command -v python3 >/dev/null || need_apt+=(python3)
command -v cc >/dev/null || need_apt+=(build-essential)
# The CLI's man page test (groff -ww, man -l) and the package check (systemd-analyze verify).
command -v groff >/dev/null || need_apt+=(groff-base)
command -v man >/dev/null || need_apt+=(man-db)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
# The package's install check on a fresh Debian 12 root (scripts/package.sh --install-check).
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
# strongSwan is the reference peer of the IKEv2 interop tests (charon with kernel-libipsec).
[ -x /usr/lib/ipsec/charon ] && command -v swanctl >/dev/null && command -v pki >/dev/null ||
  need_apt+=(strongswan-charon strongswan-swanctl strongswan-pki libcharon-extra-plugins
    libstrongswan-standard-plugins libstrongswan-extra-plugins)
if ((${#need_apt[@]})); then
  if [ "$(id -u)" = 0 ]; then
    # tshark asks whether non-root users may capture; answer before it asks.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "missing ${need_apt[*]}: install them or run as root" >&2
    exit 1
  fi
fi
# matplotlib for scripts/plot.py's test (pip; Debian's package where pip may not install).
python3 -c 'import matplotlib' 2>/dev/null ||
  python3 -m pip install -q --root-user-action=ignore matplotlib ||
  { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-matplotlib >/dev/null; }
# The metrics test parses the exposition with the Prometheus client's own text parser.
python3 -c 'import prometheus_client' 2>/dev/null ||
  python3 -m pip install -q --root-user-action=ignore prometheus-client ||
  { [ "$(id -u)" = 0 ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-prometheus-client >/dev/null; }
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
command -v cargo-deny >/dev/null || cargo install cargo-deny --locked
# The Debian package (scripts/package.sh).
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

if [ "$(id -u)" != 0 ] && [ "${MIFSEC_SKIP_ROOT_TESTS:-}" != 1 ]; then
  echo "scripts/test.sh: the TUN and namespace tests need root (or set MIFSEC_SKIP_ROOT_TESTS=1 to report them as ignored)" >&2
  exit 1
fi

step "rustfmt"
cargo fmt --all --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo deny: licences, duplicate versions, sources (deny.toml)"
# Advisories are not checked here: their database is a git repository this script cannot
# be sure to reach. Where it can, run `cargo deny check advisories` as well.
cargo deny --locked check licenses bans sources

if [ "${MIFSEC_SKIP_ROOT_TESTS:-}" = 1 ]; then
  # The root tests carry #[cfg_attr(skip_root_tests, ignore = ...)]: built with this cfg,
  # libtest lists them as ignored (never as passed). Own target dir: other RUSTFLAGS.
  step "unit and integration tests (MIFSEC_SKIP_ROOT_TESTS=1: root tests ignored)"
  mkdir -p target/skip-root
  RUSTFLAGS="${RUSTFLAGS:-} --cfg skip_root_tests" CARGO_TARGET_DIR=target/skip-root \
    cargo test --workspace --locked 2>&1 | tee target/skip-root/test.log
  echo "*** $(grep -c 'ignored, needs root' target/skip-root/test.log) root tests ignored (MIFSEC_SKIP_ROOT_TESTS=1) ***"
else
  step "unit and integration tests"
  cargo test --workspace --locked
fi

step "Debian package (scripts/package.sh --install-check: dpkg -c, man pages, systemd-analyze verify, installed on a fresh Debian 12)"
# From the debug binary the tests built: the packaging is checked, not the release build.
# The install check (debootstrap, chroot) needs root; its Debian 12 root is cached in
# target/debian-root, so only the first run on a machine downloads it.
if [ "$(id -u)" = 0 ]; then
  PROFILE=dev scripts/package.sh --install-check
else
  PROFILE=dev scripts/package.sh --check
fi

step "loom model tests of the replay window"
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
  cargo test -p mifsec-dataplane --release --locked --test replay_loom

step "every criterion benchmark, one pass each"
cargo bench -p mifsec-bench --locked -- --test >target/bench-smoke.log 2>&1 || { cat target/bench-smoke.log; exit 1; }
echo "$(grep -c '^Success' target/bench-smoke.log) benchmarks ran once"

step "roaming benchmark, one pass (scripts/bench_roam.py --smoke: the address event of each pair)"
python3 scripts/bench_roam.py --smoke --bin target/debug/mifsec >target/bench-roam-smoke.log 2>&1 ||
  { cat target/bench-roam-smoke.log; exit 1; }
grep -A3 '^roaming' target/bench-roam-smoke.log

step "multi-interface benchmark, one pass (scripts/bench_mif.py --smoke: 4 children, 1000 pps)"
python3 scripts/bench_mif.py --smoke --bin target/debug/mifsec >target/bench-mif-smoke.log 2>&1 ||
  { cat target/bench-mif-smoke.log; exit 1; }
grep -A3 '^moving' target/bench-mif-smoke.log

step "plots (scripts/test_plot.py: samples of a short real run -> PNGs)"
python3 scripts/test_plot.py --bin target/debug/mifsec >target/test-plot.log 2>&1 ||
  { cat target/test-plot.log; exit 1; }
tail -n 1 target/test-plot.log

step "profile breakdown (scripts/perf_breakdown.py --self-test: its buckets on made-up samples)"
python3 scripts/perf_breakdown.py --self-test

step "fuzz smoke runs (${FUZZ_SECONDS}s each, from the committed seeds)"
# Each target starts from its committed seeds (FUZZ_DIR/seeds/TARGET, scripts/fuzz-seeds.sh
# makes them); what libFuzzer finds goes to the ignored working corpus FUZZ_DIR/corpus/TARGET.
# Debug assertions and overflow checks are on. The control plane's fuzzed code has no
# `unsafe`, so it runs without AddressSanitizer (about four times the executions); the
# dataplane's (the AEAD key cell) keeps it.
for dir in dataplane/fuzz control/fuzz; do
  [ -d "$dir" ] || continue
  case "$dir" in control/*) san=none ;; *) san=address ;; esac
  fuzz() { (cd "$dir" && RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$PWD/../../target/fuzz" cargo fuzz "$@"); }
  fuzz build -a -s "$san"
  for target in $(fuzz list); do
    echo "-- $dir $target"
    mkdir -p "$dir/corpus/$target"
    log="target/fuzz-smoke-${target}.log"
    fuzz run -a -s "$san" "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$FUZZ_SECONDS" >"$log" 2>&1 || { tail -n 40 "$log"; exit 1; }
    tail -n 1 "$log"
  done
done

step "all tests passed"
