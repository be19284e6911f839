#!/usr/bin/env bash
# The Q-Former and stage-1 step benchmarks on one CUDA GPU, in under 8 minutes; the sections they write to
# benchmarks/RESULTS.md name the GPU (benchmarks/common.py: machine()).
#
#   bash benchmarks/gpu.sh              # fp32 and bf16: Q-Former vs transformers, stage-1 step vs LAVIS's passes
#   COMPILE=1 bash benchmarks/gpu.sh    # the stage-1 step under torch.compile as well
#   bash benchmarks/gpu.sh --dry-run    # the same commands at tiny sizes on the CPU, nothing written
#
# SDPA picks its fused kernels (flash / memory-efficient) by itself on CUDA wherever the mask allows.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ "${1:-}" == "--dry-run" ]]; then
  args=(--quick --no-write --device cpu)
else
  if ! python -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "benchmarks/gpu.sh: no CUDA device visible to torch; this script measures on a GPU only" >&2
    exit 1
  fi
  python -c 'import torch; print("GPU:", torch.cuda.get_device_name())'
  args=(--device cuda)
fi

budget() { timeout --foreground "$1" "${@:2}"; }  # each benchmark has its share of the 8 minutes
budget 75 python benchmarks/qformer_vs_hf.py "${args[@]}" --dtype float32 --repeats 20
budget 75 python benchmarks/qformer_vs_hf.py "${args[@]}" --dtype bfloat16 --repeats 20
budget 110 python benchmarks/stage1_step.py "${args[@]}" --precisions fp32,bf16 --repeats 20
if [[ "${COMPILE:-0}" == 1 ]]; then
  budget 180 python benchmarks/stage1_step.py "${args[@]}" --precisions bf16 --repeats 20 --compile
fi
