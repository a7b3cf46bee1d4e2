#!/usr/bin/env bash
# Shared settings for the TPU VM scripts. Override any of them in the environment, e.g.
#   TPU_NAME=asr-pod ACCELERATOR=v5litepod-32 ZONE=us-west4-a ./tpu_vm_create.sh
# Runtime versions per TPU generation (Cloud TPU docs, "TPU software versions"):
#   v4: tpu-ubuntu2204-base   v5e: v2-alpha-tpuv5-lite   v5p: v2-alpha-tpuv5   v6e: v2-alpha-tpuv6e

: "${PROJECT:=$(gcloud config get-value project 2>/dev/null)}"
: "${ZONE:=us-west4-a}"
: "${TPU_NAME:=mdm-asr}"
: "${ACCELERATOR:=v5litepod-8}"        # v5litepod-8 = one host with 8 chips; -16/-32/... = a pod
: "${RUNTIME_VERSION:=v2-alpha-tpuv5-lite}"
: "${REMOTE_DIR:=mdm_asr_jax}"          # code folder on every worker, relative to the home folder
: "${REPO_ROOT:=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
# The TPU VM images run Ubuntu 22.04, whose python3 is 3.10; the stack needs Python >= 3.11.
# PYTHON_SOURCE=uv (default): uv's standalone CPython ${PYTHON_VERSION} under ~/.local (no sudo,
# no apt, the same build on every worker); PYTHON_SOURCE=deadsnakes: python${PYTHON_VERSION} and
# python${PYTHON_VERSION}-venv from the deadsnakes PPA (apt, sudo).
: "${PYTHON_VERSION:=3.11}"
: "${PYTHON_SOURCE:=uv}"
# jax[tpu] pinned to the jax floor in setup.cfg (the version the tests run with); libtpu comes
# with it. tests/test_launch.py checks that the two agree.
: "${JAX_VERSION:=0.10.2}"
# Persistent XLA compilation cache on every worker: a rerun (after a preemption, or the same
# config again) loads compiled programs instead of compiling them. Local path or gs://BUCKET/...
# Lock file libtpu leaves behind when a process holding the TPU is killed.
: "${LIBTPU_LOCKFILE:=/tmp/libtpu_lockfile}"
if [[ -z "${COMPILATION_CACHE_DIR:-}" ]]; then
  COMPILATION_CACHE_DIR='$HOME/.cache/mdm_asr_jax/jax_cache' # expanded on the worker
fi

# Run a command on every worker of the TPU VM (all hosts of a pod at once).
tpu_ssh_all() {
  gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --project="${PROJECT}" --zone="${ZONE}" \
    --worker=all --command="$1"
}

# Shell lines that start every run on a worker: code folder, venv, compilation cache, and
# removal of a libtpu lock left behind by a killed run (only when no process holds the TPU).
remote_prelude() {
  cat <<EOF
cd ~/${REMOTE_DIR} && source ~/venv/bin/activate
export JAX_COMPILATION_CACHE_DIR="${COMPILATION_CACHE_DIR}"
case "\${JAX_COMPILATION_CACHE_DIR}" in gs://*) ;; *) mkdir -p "\${JAX_COMPILATION_CACHE_DIR}" ;; esac
if [ -e "${LIBTPU_LOCKFILE}" ]; then
  holders="\$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u | tr '\n' ' ')"
  if [ -n "\${holders}" ]; then
    echo "TPU in use on \$(hostname) by process(es) \${holders}: stop them (sudo kill PID) and rerun" >&2
    exit 1
  fi
  echo "removing a stale ${LIBTPU_LOCKFILE} on \$(hostname)" >&2
  sudo rm -f "${LIBTPU_LOCKFILE}"
fi
EOF
}
