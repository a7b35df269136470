#!/usr/bin/env bash
# Two builds of `farm` side by side over verbs, in one boot of the
# soft-RoCE VM, runs interleaved and the order turned each round (old then
# new, new then old, ...: in two boots comparing builds with the same engine,
# the one that ran first in its pair came out ahead in 7 pairs of 8): TATP
# with three
# nodes in one process (`farm bench --fabric verbs`) and with three
# `farm node` processes on rxe0 driven by `farm bench --cluster`. Both
# binaries must be built with `--features verbs`; the cluster file is the
# one `cluster-file.sh` writes, so an old build must read it.
#
#   soft-roce-setup/vm/compare-builds.sh OLD_FARM NEW_FARM [--runs N] [farm bench options]
#
# Default bench options: --workload tatp --scale 0.2 --warmup 1 --duration 5.
# Writes every run's report (JSON, and the printed table) to
# target/softroce/compare-builds and prints each run's summary line.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
if [ $# -lt 2 ]; then
    echo "usage: compare-builds.sh OLD_FARM NEW_FARM [--runs N] [farm bench options]" >&2
    exit 2
fi
old=$(realpath "$1")
new=$(realpath "$2")
shift 2
runs=2
if [ "${1:-}" = --runs ]; then
    runs=$2
    shift 2
fi
for binary in "$old" "$new"; do
    if [ ! -x "$binary" ]; then
        echo "compare-builds.sh: $binary is not an executable" >&2
        exit 2
    fi
done
if [ $# -eq 0 ]; then
    set -- --workload tatp --scale 0.2 --warmup 1 --duration 5
fi
out=$repo/target/softroce/compare-builds
rm -rf "$out"
mkdir -p "$out"
"$here/run.sh" bash -c '
set -uo pipefail
out=$1 here=$2 old=$3 new=$4 runs=$5
shift 5
summary() {
    grep -m1 -o "^throughput [0-9]* tx/s" "$1" | tr "\n" " "
    awk "/^all /{print \"p50 \" \$5 \" us, p90 \" \$6 \" us, p99 \" \$7 \" us\"}" "$1"
}
for ((i = 1; i <= runs; i++)); do
    order="old new"; [ $((i % 2)) = 0 ] && order="new old"
    for tag in $order; do
        farm=$old; [ "$tag" = new ] && farm=$new
        "$farm" bench --fabric verbs --json "$out/process-$tag-$i.json" "$@" \
            >"$out/process-$tag-$i.txt" 2>"$out/process-$tag-$i.err"
        echo "one process, $tag, run $i (exit $?): $(summary "$out/process-$tag-$i.txt")"
    done
done
for ((i = 1; i <= runs; i++)); do
    order="old new"; [ $((i % 2)) = 0 ] && order="new old"
    for tag in $order; do
        farm=$old; [ "$tag" = new ] && farm=$new
        data=$(mktemp -d /tmp/farm-compare.XXXXXX)   # the VM'"'"'s own tmpfs
        "$here/cluster-file.sh" "$data" 33554432 >"$out/cluster-$tag-$i.toml"
        pids=()
        for id in 0 1 2; do
            "$farm" node --config "$out/cluster-$tag-$i.toml" --id "$id" \
                >"$out/node-$tag-$i-$id.log" 2>&1 &
            pids+=($!)
        done
        "$farm" bench --cluster "$out/cluster-$tag-$i.toml" --stop-nodes \
            --json "$out/cluster-$tag-$i.json" "$@" \
            >"$out/cluster-$tag-$i.txt" 2>"$out/cluster-$tag-$i.err"
        status=$?
        kill "${pids[@]}" 2>/dev/null
        wait "${pids[@]}" 2>/dev/null
        rm -rf "$data"
        echo "node processes, $tag, run $i (exit $status): $(summary "$out/cluster-$tag-$i.txt")"
    done
done
' compare-builds "$out" "$here" "$old" "$new" "$runs" "$@"
echo "wrote $out"
