#!/usr/bin/env bash
# Install the package with JAX for NVIDIA GPUs (CUDA 12 wheels from PyPI) into ./venv.
#   ./launch/gpu_setup.sh            # or EXTRAS=tfds ./launch/gpu_setup.sh
#   PYTHON=python3.12 ./launch/gpu_setup.sh   # the interpreter the venv is made from (>= 3.11)
# jax[cuda12] is pinned to JAX_VERSION, setup.cfg's jax floor (the version the tests run with).
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
: "${VENV:=${REPO_ROOT}/venv}"
: "${EXTRAS:=}"
: "${PYTHON:=python3}"
: "${JAX_VERSION:=0.10.2}"
if ! "${PYTHON}" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "${PYTHON} is $("${PYTHON}" --version 2>&1); the package needs Python >= 3.11:" \
    "set PYTHON=python3.11 (e.g. apt install python3.11 python3.11-venv, or uv python install 3.11)" >&2
  exit 2
fi
"${PYTHON}" -m venv "${VENV}"
"${VENV}/bin/pip" install -q --upgrade pip
spec="${REPO_ROOT}"
if [[ -n "${EXTRAS}" ]]; then
  spec="${REPO_ROOT}[${EXTRAS}]"
fi
"${VENV}/bin/pip" install -q "jax[cuda12]==${JAX_VERSION}" -e "${spec}"
"${VENV}/bin/python" -c 'import jax; print(jax.__version__, jax.devices())'
