#!/usr/bin/env bash
# Compares `farm rdma-bench` with perftest over soft-RoCE: 8-byte READ
# latency (ib_read_lat) and 8-byte WRITE ping-pong latency (ib_write_lat),
# each as a server and a client process over rxe0, in one boot of the VM.
#
#   soft-roce-setup/vm/compare-perftest.sh
#
# Builds `farm` (release, --features verbs) on the host first, then boots
# the VM once (run.sh) and runs compare-perftest-in-vm.sh there. Prints
# farm's and perftest's medians (perftest's t_typical column) with their
# ratio, and writes target/softroce/perftest-compare.json:
#
#   {"read_8b_median_us":{"farm":F,"perftest":P},
#    "write_8b_median_us":{"farm":F,"perftest":P}, ...}
#
# where F and P are the medians over the runs of each run's median (TCG is
# noisy: runs of one boot differ by 2x); the per-run medians and ratios are
# there too.
#
# Environment:
#   FARM_COMPARE_ITERS  iterations of every test (default 5000)
#   FARM_COMPARE_RUNS   runs in the boot, to see the emulator's noise (default 3)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
iterations=${FARM_COMPARE_ITERS:-5000}
runs=${FARM_COMPARE_RUNS:-3}
cd "$repo"

cargo build --release -p farm-cli --features verbs

# Under the repository, not /tmp: the VM's /tmp is its own.
out=target/softroce/perftest-compare
rm -rf "$out"
mkdir -p "$out"
"$here/run.sh" bash "$here/compare-perftest-in-vm.sh" "$out" "$iterations" "$runs"

# perftest's result line: #bytes #iterations t_min t_max t_typical ...
perftest_median() {
    awk '$1 == "8" && NF >= 9 { print $5; found = 1 } END { exit !found }' "$1" ||
        { echo "compare-perftest: no result line in $1" >&2; exit 1; }
}
farm_median() {
    jq -er '.rows[0].median_us' "$1"
}
# The median of the runs' medians: one run that the emulator starved (a
# median of milliseconds happens) must not decide the comparison.
median() {
    sort -g | awk '{ v[NR] = $1 } END { printf "%.3f\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

json="{"
printf '%-12s %4s %14s %14s %8s\n' test run "farm[usec]" "perftest[usec]" ratio
for op in read write; do
    farm_all=() perftest_all=() runs_json=""
    for run in $(seq 1 "$runs"); do
        farm=$(farm_median "$out/farm-$op-$run.json")
        perftest=$(perftest_median "$out/perftest-$op-$run.client.log")
        ratio=$(awk -v f="$farm" -v p="$perftest" 'BEGIN { printf "%.3f", f / p }')
        printf '%-12s %4s %14.3f %14.3f %8s\n' "$op 8 B" "$run" "$farm" "$perftest" "$ratio"
        farm_all+=("$farm")
        perftest_all+=("$perftest")
        runs_json+="${runs_json:+,}{\"farm\":$farm,\"perftest\":$perftest,\"ratio\":$ratio}"
    done
    farm=$(printf '%s\n' "${farm_all[@]}" | median)
    perftest=$(printf '%s\n' "${perftest_all[@]}" | median)
    ratio=$(awk -v f="$farm" -v p="$perftest" 'BEGIN { printf "%.3f", f / p }')
    printf '%-12s %4s %14.3f %14.3f %8s\n' "$op 8 B" median "$farm" "$perftest" "$ratio"
    json+="\"${op}_8b_median_us\":{\"farm\":$farm,\"perftest\":$perftest},"
    json+="\"${op}_8b_ratio\":$ratio,\"${op}_8b_runs\":[$runs_json],"
done
json+="\"iterations\":$iterations,\"runs\":$runs}"
echo "$json" | jq -c . >target/softroce/perftest-compare.json
echo "wrote target/softroce/perftest-compare.json (raw outputs in $out/)"
