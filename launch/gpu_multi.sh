#!/usr/bin/env bash
# Train on every GPU of one host: one process drives all local GPUs; the mesh's data axis
# (config.mesh.shape = (-1, 1, 1)) spreads each global batch over them. Same code as one GPU.
#   ./launch/gpu_multi.sh configs/demo.py /tmp/demo [--config.key=value ...]
# The global batch (config.data.batch_size) must divide by the number of GPUs.
# Several hosts: start one process per host through SLURM (srun) or Open MPI (mpirun) and add
# --config.mesh.multihost=True; jax.distributed.initialize() reads the launcher's settings.
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
num_gpus="$(nvidia-smi --list-gpus | wc -l)"
echo "training on ${num_gpus} GPU(s): ${CUDA_VISIBLE_DEVICES:-all visible}" >&2
exec mdm-asr-train --config="${config}" --workdir="${workdir}" "$@"
