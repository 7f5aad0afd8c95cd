#!/usr/bin/env bash
# Start one node's share of a multi-node `modal-core train` run with torchrun.
#
# Run it once on every node, with the same recipe and overrides and that node's NODE_RANK:
#
#   NNODES=2 NODE_RANK=0 NPROC_PER_NODE=8 MASTER_ADDR=node0.cluster \
#     examples/multi-node/torchrun.sh recipes/janus/stage2-8gpu.yaml
#
# Environment (defaults in brackets): NNODES [1], NODE_RANK [0], NPROC_PER_NODE [1],
# MASTER_ADDR [127.0.0.1] (the host of node 0), MASTER_PORT [29500], PYTHON [python3]
# (the interpreter modal-core is installed in). The recipe's trainer.num_nodes and
# trainer.devices are set from NNODES and NPROC_PER_NODE, so they always agree with
# torchrun's; Lightning reads torchrun's environment and starts no processes itself.
set -euo pipefail

if [[ $# -lt 1 ]]; then
  echo "usage: $0 RECIPE [key=value ...]" >&2
  exit 2
fi
recipe=$1
shift
nnodes=${NNODES:-1}
nproc=${NPROC_PER_NODE:-1}

exec "${PYTHON:-python3}" -m torch.distributed.run \
  --nnodes "$nnodes" --nproc-per-node "$nproc" --node-rank "${NODE_RANK:-0}" \
  --master-addr "${MASTER_ADDR:-127.0.0.1}" --master-port "${MASTER_PORT:-29500}" \
  -m modal_core train "$recipe" "trainer.num_nodes=$nnodes" "trainer.devices=$nproc" "$@"
