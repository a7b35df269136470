#!/bin/bash
# The failover figures of the README's "Failures": false positives at
# several lease times, then kills of node 2 and node 3 (the configuration
# manager of configuration 1), alternately, 2 s into a 4 s TATP run on 4
# shm node processes. Usage: benches/scripts/failover.sh [FARM] [KILLS] [LEASES]
# (defaults: target/release/farm, 20, "20 50 200"). Writes JSON reports and
# a summary line per run into ./failover-results/.
set -u
farm=$(realpath "${1:-target/release/farm}")
kills=${2:-20}
leases=${3:-"20 50 200"}
mkdir -p failover-results && cd failover-results || exit 1
for lease in 5 10 20 50 100 200; do
  timeout 120 "$farm" bench --processes --nodes 4 --duration 10 --warmup 1 \
    --lease-ms "$lease" --quiet --json "fp-$lease.json" > "fp-$lease.out" 2>&1
  rc=$?
  echo "false-positives lease=$lease rc=$rc $(python3 -c "
import json
r = json.load(open('fp-$lease.json'))
print('suspicions', sum(e['what'] == 'suspected' for e in r['events']), 'consistency', r['consistency'][:2])
" 2>/dev/null || echo 'no report')"
done
for lease in $leases; do
  for i in $(seq 1 "$kills"); do
    node=$(( (i % 2) + 2 ))
    timeout 120 "$farm" bench --processes --nodes 4 --duration 4 --warmup 1 \
      --lease-ms "$lease" --kill "$node@2" --quiet --json "kill-$lease-$i.json" > "kill-$lease-$i.out" 2>&1
    rc=$?
    echo "kill lease=$lease i=$i node=$node rc=$rc $(python3 -c "
import json
r = json.load(open('kill-$lease-$i.json'))
print(json.dumps(r['recovery']), r['consistency'][:2])
" 2>/dev/null || echo 'no report')"
  done
done
