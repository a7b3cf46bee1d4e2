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

# Run a command on every worker of the TPU VM (all hosts of a pod at once).
tpu_ssh_all() {
  gcloud compute tpus tpu-vm ssh "${TPU_NAME}" --project="${PROJECT}" --zone="${ZONE}" \
    --worker=all --command="$1"
}
