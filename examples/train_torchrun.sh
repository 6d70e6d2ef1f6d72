#!/usr/bin/env bash
# Multi-process training on one machine with torchrun: the same `flow-omni train` entry point.
# Lightning reads torchrun's environment (RANK, WORLD_SIZE, …) and uses DDP; data.batch_size is the
# *global* batch, split evenly over the processes (it must be divisible by their number).
# On CPU, every process uses the gloo backend; keep threads x processes <= cores.
set -euo pipefail
NPROC=${NPROC:-2}
torchrun --standalone --nproc_per_node "$NPROC" --no-python \
  flow-omni train --config quickstart --set devices="$NPROC" strategy=ddp threads=1 "$@"
