#!/usr/bin/env bash
# An idle verbs cluster must not burn the CPU. In one boot of the soft-RoCE
# VM: starts three `farm node` processes on rxe0 from a cluster file, gives
# them a short TATP run (so that queue pairs, rings and contexts exist),
# then measures the CPU time (user + system, from /proc/PID/stat) each node
# process uses over an idle window, prints a table and one JSON line, and
# fails when any node used more than the allowed share of one CPU.
#
#   soft-roce-setup/vm/idle-cluster.sh [--seconds S] [--max-share F]
#
# Defaults: --seconds 10, --max-share 0.06 (6% of one CPU per node). Writes
# the cluster file, the nodes' logs and idle.json to
# target/softroce/idle-cluster.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
seconds=10
max_share=0.06
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --max-share) max_share=$2; shift 2 ;;
        *) echo "idle-cluster.sh: unknown option $1 (see the script's header)" >&2; exit 2 ;;
    esac
done
cd "$repo"
cargo build --release -p farm-cli --features verbs

out=$repo/target/softroce/idle-cluster
rm -rf "$out"
mkdir -p "$out"
"$here/run.sh" bash -c '
set -euo pipefail
out=$1 seconds=$2 max_share=$3 here=$4
data=$(mktemp -d /tmp/farm-idle-cluster.XXXXXX)   # the VM'"'"'s own tmpfs
"$here/cluster-file.sh" "$data" 8388608 >"$out/cluster.toml"
pids=()
for id in 0 1 2; do
    farm node --config "$out/cluster.toml" --id "$id" >"$out/node-$id.log" 2>&1 &
    pids+=($!)
done
trap "kill ${pids[*]} 2>/dev/null || true" EXIT
# Some work first: every node connects, loads and commits.
farm bench --cluster "$out/cluster.toml" --workload tatp --scale 0.02 --warmup 0 --duration 0.5 --quiet >"$out/bench.log"
ticks=$(getconf CLK_TCK)
cpu() { awk "{ print \$14 + \$15 }" "/proc/$1/stat"; }
threads() {   # "name ticks" per thread of process $1
    for task in /proc/$1/task/*; do
        echo "$(cat "$task/comm") $(awk "{ print \$14 + \$15 }" "$task/stat")"
    done
}
before=()
for pid in "${pids[@]}"; do before+=("$(cpu "$pid")"); done
threads "${pids[0]}" >"$out/threads-before"
echo "idle-cluster: measuring ${seconds} s of idleness on three verbs nodes" >&2
sleep "$seconds"
threads "${pids[0]}" >"$out/threads-after"
echo "idle-cluster: node 0 CPU ticks by thread (name before after):" >&2
paste -d" " "$out/threads-before" "$out/threads-after" | awk "{ print \$1, \$2, \$4 }" >&2
printf "%6s %12s %10s\n" node "cpu_ms" "share" 
json="{\"seconds\":$seconds,\"max_share\":$max_share,\"nodes\":["
status=0
for id in 0 1 2; do
    used=$(( $(cpu "${pids[$id]}") - ${before[$id]} ))
    ms=$(( used * 1000 / ticks ))
    share=$(awk "BEGIN { printf \"%.4f\", $ms / 1000 / $seconds }")
    printf "%6s %12s %10s\n" "$id" "$ms" "$share"
    [ "$id" = 0 ] || json+=","
    json+="{\"node\":$id,\"cpu_ms\":$ms,\"share\":$share}"
    if awk "BEGIN { exit !($share > $max_share) }"; then
        echo "idle-cluster: node $id used $ms ms of CPU in $seconds s idle (share $share > $max_share)" >&2
        status=1
    fi
done
json+="]}"
echo "$json" | tee "$out/idle.json"
exit "$status"
' idle-cluster "$out" "$seconds" "$max_share" "$here"
