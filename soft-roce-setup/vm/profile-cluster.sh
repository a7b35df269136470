#!/usr/bin/env bash
# Where the time goes over verbs with node processes: in one boot of the
# soft-RoCE VM, starts three `farm node` processes on rxe0, drives them with
# `farm bench --cluster`, and records a system-wide profile (`perf record -a
# -g -e cpu-clock`: the emulated CPUs have no hardware counters) over
# PERF_SECONDS of the measured run, kernel (soft-RoCE) and idle time included.
#
#   soft-roce-setup/vm/profile-cluster.sh [FARM] [farm bench options]
#
# FARM: a `farm` binary built with `--features verbs` (default: builds this
# tree's). Default bench options: --workload tatp --scale 0.2 --warmup 1
# --duration 10. Needs perf on the host (Debian: `apt-get install
# linux-perf`); the VM runs the host's. Writes to target/softroce/profile-cluster:
# the bench report (bench.json, bench.txt), CPU samples by symbol
# (symbols.txt) and by thread (threads.txt; "swapper" is idle CPU), and
# the samples of threads just switched back in, by the call chain they
# had been switched out from (switches.txt), and /proc/stat's idle share
# over the same window (cpu.txt).
# Environment: PERF_SECONDS (default 5), FARM_BENCH_REGION_BYTES (default
# 33554432).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
region_bytes=${FARM_BENCH_REGION_BYTES:-33554432}
seconds=${PERF_SECONDS:-5}
cd "$repo"
if ! command -v perf >/dev/null; then
    echo "profile-cluster.sh: perf is not installed (Debian: apt-get install linux-perf)" >&2
    exit 2
fi
if [ $# -gt 0 ] && [ -x "$1" ] && [ -f "$1" ]; then
    farm=$(realpath "$1")
    shift
else
    cargo build --release -p farm-cli --features verbs
    farm=$repo/target/release/farm
fi
if [ $# -eq 0 ]; then
    set -- --workload tatp --scale 0.2 --warmup 1 --duration 10
fi

out=$repo/target/softroce/profile-cluster
rm -rf "$out"
mkdir -p "$out"
"$here/run.sh" bash -c '
set -euo pipefail
out=$1 region_bytes=$2 here=$3 farm=$4 seconds=$5
shift 5
data=$(mktemp -d /tmp/farm-profile-cluster.XXXXXX)   # the VM'"'"'s own tmpfs
"$here/cluster-file.sh" "$data" "$region_bytes" >"$out/cluster.toml"
pids=()
for id in 0 1 2; do
    "$farm" node --config "$out/cluster.toml" --id "$id" >"$out/node-$id.log" 2>&1 &
    pids+=($!)
done
"$farm" bench --cluster "$out/cluster.toml" --stop-nodes --json "$out/bench.json" "$@" \
    >"$out/bench.txt" 2>"$out/bench.err" &
driver=$!
# The progress bar shows once the measured run has begun (after loading).
until grep -q "tx/s" "$out/bench.err" 2>/dev/null; do
    if ! kill -0 "$driver" 2>/dev/null; then
        echo "profile-cluster.sh: the bench ended before its measured run" >&2
        cat "$out/bench.err" >&2
        exit 1
    fi
    sleep 0.2
done
read -r -a before < /proc/stat
perf record -a -g -e cpu-clock -F 999 -o "$data/perf.data" -- sleep "$seconds" >"$out/perf.log" 2>&1
read -r -a after < /proc/stat
# The kernel'"'"'s own count over the same window: user, nice, system, idle,
# iowait, irq, softirq (jiffies, all CPUs).
{
    total=0
    for i in 1 2 3 4 5 6 7; do total=$((total + after[i] - before[i])); done
    idle=$((after[4] - before[4]))
    echo "cpu jiffies over the profile: $total, idle $idle ($((100 * idle / (total > 0 ? total : 1)))%)"
} >"$out/cpu.txt"
status=0
wait "$driver" || status=$?
kill "${pids[@]}" 2>/dev/null || true
wait "${pids[@]}" 2>/dev/null || true
report() { perf report -i "$data/perf.data" --no-children --stdio "$@" 2>/dev/null; }
report --sort symbol -g none | grep "%" >"$out/symbols.txt" || true
# (perf'"'"'s "pid" key is the thread id.)
report --sort comm,pid -g none | grep "%" >"$out/threads.txt" || true
# Threads resumed after a switch, by where they had been switched out.
report --symbols=finish_task_switch.isra.0,finish_task_switch -G >"$out/switches.txt" || true
exit "$status"
' profile-cluster "$out" "$region_bytes" "$here" "$farm" "$seconds" "$@"
echo "wrote $out (symbols.txt, threads.txt, switches.txt, bench.json)"
head -n 25 "$out/symbols.txt"
