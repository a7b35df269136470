#!/usr/bin/env bash
# `farm bench --cluster` over verbs: in one boot of the soft-RoCE VM, starts
# three `farm node` processes on rxe0 from a cluster file (as you would on
# three RDMA hosts), drives them with `farm bench --cluster`, and stops them.
#
#   soft-roce-setup/vm/bench-cluster.sh [farm bench options]
#
# Default options: --workload tatp --scale 0.2 --warmup 1 --duration 5 (the
# VM emulates its CPUs: keep populations small). Writes the cluster file,
# the nodes' logs and the report (bench.json) to target/softroce/bench-cluster.
# Environment: FARM_BENCH_REGION_BYTES (default 33554432, 32 MiB per region).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
region_bytes=${FARM_BENCH_REGION_BYTES:-33554432}
cd "$repo"
if [ $# -eq 0 ]; then
    set -- --workload tatp --scale 0.2 --warmup 1 --duration 5
fi

cargo build --release -p farm-cli --features verbs

out=$repo/target/softroce/bench-cluster
rm -rf "$out"
mkdir -p "$out"
"$here/run.sh" bash -c '
set -euo pipefail
out=$1 region_bytes=$2 here=$3
shift 3
data=$(mktemp -d /tmp/farm-bench-cluster.XXXXXX)   # the VM'"'"'s own tmpfs
"$here/cluster-file.sh" "$data" "$region_bytes" >"$out/cluster.toml"
pids=()
for id in 0 1 2; do
    farm node --config "$out/cluster.toml" --id "$id" >"$out/node-$id.log" 2>&1 &
    pids+=($!)
done
status=0
farm bench --cluster "$out/cluster.toml" --stop-nodes --json "$out/bench.json" "$@" || status=$?
# --stop-nodes ends them; after a failure some may still run.
kill "${pids[@]}" 2>/dev/null || true
wait "${pids[@]}" 2>/dev/null || true
if [ "$status" != 0 ]; then
    for id in 0 1 2; do
        echo "--- node $id:" >&2
        tail -n 20 "$out/node-$id.log" >&2
    done
fi
exit "$status"
' bench-cluster "$out" "$region_bytes" "$here" "$@"
echo "wrote $out/bench.json"
