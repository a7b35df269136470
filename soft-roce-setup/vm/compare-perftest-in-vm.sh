#!/usr/bin/env bash
# The inside half of compare-perftest.sh: runs in the soft-RoCE VM (started
# by run.sh), measures 8-byte READ and WRITE latency over rxe0 with perftest
# and with `farm rdma-bench`, each as a server and a client process, and
# leaves the raw outputs in $out for the host half to parse.
#
#   compare-perftest-in-vm.sh OUT_DIR ITERATIONS RUNS
#
# Every run measures, in this order: ib_read_lat, farm READ, ib_write_lat,
# farm WRITE, so that a slow stretch of the emulated machine is less likely
# to hit one side only. farm runs with --latency-only: like perftest's
# latency tools, no throughput phase after the latency rounds.
set -euo pipefail

out=$1
iterations=$2
runs=$3
device=${FARM_RXE_DEVICE:-rxe0}
gid_index=${FARM_RXE_GID_INDEX:?run this inside soft-roce-setup/vm/run.sh}
server_address=127.0.0.1
mkdir -p "$out"

# run_pair NAME SERVER_CMD... -- CLIENT_CMD...: the server in the
# background, the client once the server had a moment to listen (perftest's
# client does not retry), then the server's exit status.
run_pair() {
    local name=$1
    shift
    local server=() client=()
    while [ "$1" != -- ]; do
        server+=("$1")
        shift
    done
    shift
    client=("$@")
    "${server[@]}" >"$out/$name.server.log" 2>&1 &
    local server_pid=$!
    sleep 1
    local status=0
    "${client[@]}" >"$out/$name.client.log" 2>"$out/$name.client.err" || status=$?
    wait "$server_pid" || status=$?
    if [ "$status" -ne 0 ]; then
        echo "compare-perftest: $name failed (status $status)" >&2
        tail -n 20 "$out/$name.server.log" "$out/$name.client.log" "$out/$name.client.err" >&2
        return "$status"
    fi
}

farm_port=18600
for run in $(seq 1 "$runs"); do
    for op in read write; do
        echo "compare-perftest: run $run: ib_${op}_lat" >&2
        run_pair "perftest-$op-$run" \
            "ib_${op}_lat" -d "$device" -x "$gid_index" -s 8 -n "$iterations" -- \
            "ib_${op}_lat" -d "$device" -x "$gid_index" -s 8 -n "$iterations" "$server_address"
        echo "compare-perftest: run $run: farm rdma-bench $op" >&2
        farm_port=$((farm_port + 1))
        run_pair "farm-$op-$run" \
            farm rdma-bench --fabric verbs --server --listen "127.0.0.1:$farm_port" \
            --device "$device" --gid-index "$gid_index" --quiet -- \
            farm rdma-bench --fabric verbs --connect "$server_address:$farm_port" \
            --device "$device" --gid-index "$gid_index" --quiet \
            --ops "$op" --sizes 8 --iters "$iterations" --latency-only \
            --json "$out/farm-$op-$run.json"
    done
done
