#!/usr/bin/env bash
# The protocol's floor: in one boot of the soft-RoCE VM, measures 8-byte
# READ and WRITE latency with perftest (ib_read_lat, ib_write_lat) and the
# 1-read-1-write commit latency over verbs with 3 copies (farm commit-lat),
# then prices the commit's round trips with perftest's figures and prints
# the commit's p50 next to that floor, as a ratio.
#
#   soft-roce-setup/vm/commit-floor.sh
#
# The transaction reads object R and writes object W, both on other nodes.
# A write needs the object's version for its LOCK, so W is read too (as in
# FaRM, where objects are read before they are written). Its floor:
#   execution: READ R, READ W          2 READ round trips
#   LOCK record + the primary's answer 2 one-way WRITEs
#   VALIDATE of the object read        1 READ round trip
#   COMMIT-BACKUP (to both backups, in parallel, until the NIC's ack)
#                                      2 one-way WRITEs (a WRITE round trip)
#   COMMIT-PRIMARY until the NIC's ack 2 one-way WRITEs
# = 3 × t_read + 6 × t_write, where t_read is ib_read_lat's typical (a round
# trip) and t_write ib_write_lat's typical (half a ping-pong: one way).
# (Until 2026-11-27 this counted 2 reads, missing the read of W.) Then each
# phase's median is printed next to its own floor. Under qemu's TCG the
# commit path's own instructions cost many times what they cost natively
# (perftest's loop is tiny), so the same commit over shm in the same VM is
# measured too, and a second ratio adds it to the floor: p50 / (floor +
# shm p50). The goal is about the first.
# Writes target/softroce/commit-floor.json. Environment: FARM_FLOOR_ITERS
# (perftest iterations, default 5000), FARM_FLOOR_COMMITS (default 2000).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
iterations=${FARM_FLOOR_ITERS:-5000}
commits=${FARM_FLOOR_COMMITS:-2000}
cd "$repo"

cargo build --release -p farm-cli --features verbs

out=target/softroce/commit-floor
rm -rf "$out"
mkdir -p "$out"
# Inside the VM: perftest pairs (server in the background, then the
# client), then farm commit-lat.
"$here/run.sh" bash -c '
set -euo pipefail
out=$1 iterations=$2 commits=$3
for op in read write; do
    ib_${op}_lat -d "$FARM_RXE_DEVICE" -x "$FARM_RXE_GID_INDEX" -s 8 -n "$iterations" >"$out/$op.server.log" 2>&1 &
    server=$!
    sleep 1
    ib_${op}_lat -d "$FARM_RXE_DEVICE" -x "$FARM_RXE_GID_INDEX" -s 8 -n "$iterations" 127.0.0.1 >"$out/$op.log" 2>&1
    wait "$server"
done
farm commit-lat --fabric verbs --device "$FARM_RXE_DEVICE" --gid-index "$FARM_RXE_GID_INDEX" \
    --iterations "$commits" --warmup 200 --json "$out/commit.json" >"$out/commit.log" 2>&1
# The same commit over shm in this VM: no network at all, only the commit
# path'"'"'s own instructions, which TCG emulation slows down many times
# more than perftest'"'"'s tight loop.
farm commit-lat --fabric shm --iterations "$commits" --warmup 200 \
    --json "$out/commit-shm.json" >"$out/commit-shm.log" 2>&1
' commit-floor "$out" "$iterations" "$commits"

typical() {
    awk '$1 == "8" && NF >= 9 { print $5; found = 1 } END { exit !found }' "$1" ||
        { echo "commit-floor: no result line in $1" >&2; exit 1; }
}
t_read=$(typical "$out/read.log")
t_write=$(typical "$out/write.log")
p50=$(jq -er .p50_us "$out/commit.json")
p99=$(jq -er .p99_us "$out/commit.json")
floor=$(awk -v r="$t_read" -v w="$t_write" 'BEGIN { printf "%.3f", 3 * r + 6 * w }')
ratio=$(awk -v p="$p50" -v f="$floor" 'BEGIN { printf "%.3f", p / f }')

printf '%-34s %12s\n' "soft-RoCE VM, 8 B, rxe0" "usec"
printf '%-34s %12s\n' "ib_read_lat typical (round trip)" "$t_read"
printf '%-34s %12s\n' "ib_write_lat typical (one way)" "$t_write"
printf '%-34s %12s\n' "floor = 3 x read + 6 x write" "$floor"
printf '%-34s %12s\n' "farm commit p50 (1 read, 1 write)" "$p50"
printf '%-34s %12s\n' "farm commit p99" "$p99"
printf '%-34s %12s   (goal <= 1.3)\n' "ratio p50 / floor" "$ratio"
cpu=$(jq -er .p50_us "$out/commit-shm.json")
adjusted=$(awk -v p="$p50" -v f="$floor" -v c="$cpu" 'BEGIN { printf "%.3f", p / (f + c) }')
printf '%-34s %12s   (shm in this VM: no network)\n' "commit path alone, p50" "$cpu"
printf '%-34s %12s\n' "ratio p50 / (floor + path alone)" "$adjusted"
# Where the time goes: each commit phase's median next to its own floor.
echo
printf '%-34s %12s %12s %8s\n' "commit phase (median)" "usec" "floor" "ratio"
phase() {
    local name=$1 measured=$2 floor=$3
    printf '%-34s %12.1f %12.1f %8.2f\n' "$name" "$measured" "$floor" \
        "$(awk -v m="$measured" -v f="$floor" 'BEGIN { print m / f }')"
}
phase "execution (2 READs) and the rest" "$(jq -er .rest_p50_us "$out/commit.json")" "$(awk -v r="$t_read" 'BEGIN { print 2 * r }')"
phase "lock (record + answer)" "$(jq -er .lock_p50_us "$out/commit.json")" "$(awk -v w="$t_write" 'BEGIN { print 2 * w }')"
phase "validate (one READ)" "$(jq -er .validate_p50_us "$out/commit.json")" "$t_read"
phase "commit-backup (WRITE + ack)" "$(jq -er .commit_backup_p50_us "$out/commit.json")" "$(awk -v w="$t_write" 'BEGIN { print 2 * w }')"
phase "commit-primary (WRITE + ack)" "$(jq -er .commit_primary_p50_us "$out/commit.json")" "$(awk -v w="$t_write" 'BEGIN { print 2 * w }')"
jq -nc --argjson r "$t_read" --argjson w "$t_write" --argjson f "$floor" --argjson p "$p50" \
    --argjson q "$p99" --argjson x "$ratio" --argjson c "$cpu" --argjson a "$adjusted" \
    '{read_8b_us:$r, write_8b_us:$w, floor_us:$f, commit_p50_us:$p, commit_p99_us:$q, ratio:$x, shm_commit_p50_us:$c, ratio_with_path:$a}' \
    >target/softroce/commit-floor.json
echo "wrote target/softroce/commit-floor.json"
