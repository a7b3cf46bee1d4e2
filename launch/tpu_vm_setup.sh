#!/usr/bin/env bash
# Copy this repository to every worker of the TPU VM and install it with JAX for TPU.
#   ./launch/tpu_vm_setup.sh            # code + install
#   EXTRAS=tfds ./launch/tpu_vm_setup.sh  # also TensorFlow Datasets (to build / read TFDS data)
# Rerun after changing the code: it copies the working tree again (a tarball, no .git).
set -euo pipefail
source "$(dirname "$0")/common.sh"

: "${EXTRAS:=}"
archive="$(mktemp -d)/mdm_asr_jax.tar.gz"
tar -C "${REPO_ROOT}" --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ \
  --exclude=.pytest_cache --exclude=.ruff_cache -czf "${archive}" .

gcloud compute tpus tpu-vm scp "${archive}" "${TPU_NAME}:~/mdm_asr_jax.tar.gz" \
  --project="${PROJECT}" --zone="${ZONE}" --worker=all

spec="."
if [[ -n "${EXTRAS}" ]]; then
  spec=".[${EXTRAS}]"
fi
tpu_ssh_all "set -e
  mkdir -p ~/${REMOTE_DIR} && tar -C ~/${REMOTE_DIR} -xzf ~/mdm_asr_jax.tar.gz
  python3 -m venv ~/venv
  ~/venv/bin/pip install -q --upgrade pip
  ~/venv/bin/pip install -q 'jax[tpu]'
  cd ~/${REMOTE_DIR} && ~/venv/bin/pip install -q -e '${spec}'
  ~/venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.device_count())'"
