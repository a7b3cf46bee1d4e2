#!/usr/bin/env bash
# Train (and evaluate) on one GPU.
#   ./launch/gpu_single.sh configs/demo.py /tmp/demo [--config.key=value ...]
# CUDA_VISIBLE_DEVICES picks the GPU (default 0). XLA preallocates 75 % of GPU memory by
# default; XLA_PYTHON_CLIENT_MEM_FRACTION changes that.
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
config="$1"
workdir="$2"
shift 2
# Persistent compilation cache: reruns load compiled programs instead of compiling again.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-${HOME}/.cache/mdm_asr_jax/jax_cache}"
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
exec mdm-asr-train --config="${config}" --workdir="${workdir}" "$@"
