#!/usr/bin/env bash
# Every test of farm-rs, as CI runs them (`.ci/run` calls this script):
#   1. system packages (Debian; needs root or sudo; quiet when installed),
#   2. cargo fmt --check and clippy -D warnings, every feature on,
#   3. the whole test suite on the shm fabric (host),
#   4. the verbs suites inside a soft-RoCE VM (qemu + Debian's kernel with
#      rdma_rxe), because this host's kernel may have no RDMA at all.
# FARM_SKIP_VM=1 skips step 4 (say so when you report results).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

step() { printf '\n==> %s\n' "$*" >&2; }

step "system packages"
if [ "$(id -u)" -eq 0 ]; then
    soft-roce-setup/install-deps.sh
else
    sudo soft-roce-setup/install-deps.sh
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features) -D warnings"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "tests on the shm fabric"
cargo test --workspace --locked

if [ "${FARM_SKIP_VM:-0}" = 1 ]; then
    step "SKIPPED: verbs tests in the soft-RoCE VM (FARM_SKIP_VM=1)"
    exit 0
fi

step "build the verbs test binaries"
# The executables cargo built, found in its JSON messages (no jq needed).
executables=$(cargo test -p rdma-transport --features verbs --locked --no-run --message-format=json \
    | grep -o '"executable":"[^"]*"' | sed 's/"executable":"\(.*\)"/\1/')
conformance=$(printf '%s\n' "$executables" | grep '/conformance-' | head -n 1)
[ -n "$conformance" ] || { echo "conformance test binary not found" >&2; exit 1; }

step "verbs conformance suite on rxe0 inside the soft-RoCE VM"
soft-roce-setup/vm/run.sh "$conformance" verbs --test-threads=1

step "farm check over verbs: three node processes on rxe0 inside the soft-RoCE VM"
cargo build --release -p farm-cli --features verbs --locked
soft-roce-setup/vm/run.sh "$repo/target/release/farm" check --fabric verbs --nodes 3 --txns 20000

step "farm check over verbs on workers: each node's clients as three tasks on one thread, pausing at completion-queue waits"
soft-roce-setup/vm/run.sh "$repo/target/release/farm" check --fabric verbs --nodes 3 --txns 10000 --threads-per-node 1 --in-flight 3

step "farm bench --cluster over verbs: TATP on three farm node processes on rxe0 inside the soft-RoCE VM"
soft-roce-setup/vm/bench-cluster.sh --workload tatp --scale 0.1 --warmup 0.5 --duration 2 --quiet

step "farm check --nemesis kill over verbs: four node processes on rxe0, two of them killed (the configuration manager among them)"
soft-roce-setup/vm/run.sh "$repo/target/release/farm" check --fabric verbs --nodes 4 --txns 20000 --nemesis kill --lease-ms 1000

step "an idle verbs cluster sleeps: three farm node processes on rxe0 use little CPU when idle"
soft-roce-setup/vm/idle-cluster.sh
