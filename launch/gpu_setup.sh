#!/usr/bin/env bash
# Install the package with JAX for NVIDIA GPUs (CUDA 12 wheels from PyPI) into ./venv.
#   ./launch/gpu_setup.sh            # or EXTRAS=tfds ./launch/gpu_setup.sh
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
: "${VENV:=${REPO_ROOT}/venv}"
: "${EXTRAS:=}"
python3 -m venv "${VENV}"
"${VENV}/bin/pip" install -q --upgrade pip
"${VENV}/bin/pip" install -q 'jax[cuda12]'
spec="${REPO_ROOT}"
if [[ -n "${EXTRAS}" ]]; then
  spec="${REPO_ROOT}[${EXTRAS}]"
fi
"${VENV}/bin/pip" install -q -e "${spec}"
"${VENV}/bin/python" -c 'import jax; print(jax.devices())'
