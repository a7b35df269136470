#!/usr/bin/env bash
# Prints the cluster file of NODES `farm node` processes on rxe0 inside the
# soft-RoCE VM (run it there: it reads FARM_RXE_DEVICE and
# FARM_RXE_GID_INDEX, which run.sh sets), with their data under DATA_DIR.
# Node N bootstraps on 127.0.0.1:17600+N and listens for verbs on
# 127.0.0.1:17700+N.
#
#   soft-roce-setup/vm/cluster-file.sh DATA_DIR REGION_BYTES [NODES (3)]
set -euo pipefail
data=$1 region_bytes=$2 nodes=${3:-3}
echo "fabric = \"verbs\""
echo "data_dir = \"$data\""
echo "copies = 3"
echo "region_bytes = $region_bytes"
echo "device = \"$FARM_RXE_DEVICE\""
echo "gid_index = $FARM_RXE_GID_INDEX"
for ((id = 0; id < nodes; id++)); do
    echo
    echo "[[node]]"
    echo "id = $id"
    echo "bootstrap = \"127.0.0.1:$((17600 + id))\""
    echo "verbs = \"127.0.0.1:$((17700 + id))\""
done
