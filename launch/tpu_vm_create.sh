#!/usr/bin/env bash
# Create a TPU VM: one host (e.g. v5litepod-8) or a pod slice (v5litepod-32, v4-32, ...).
#   TPU_NAME=mdm-asr ACCELERATOR=v5litepod-8 ZONE=us-west4-a ./launch/tpu_vm_create.sh
# Add SPOT=1 for a spot VM (cheaper, can be preempted: training resumes from its checkpoints).
set -euo pipefail
source "$(dirname "$0")/common.sh"

extra=()
if [[ "${SPOT:-0}" == "1" ]]; then
  extra+=(--spot)
fi

gcloud compute tpus tpu-vm create "${TPU_NAME}" \
  --project="${PROJECT}" \
  --zone="${ZONE}" \
  --accelerator-type="${ACCELERATOR}" \
  --version="${RUNTIME_VERSION}" \
  "${extra[@]}"

gcloud compute tpus tpu-vm describe "${TPU_NAME}" --project="${PROJECT}" --zone="${ZONE}" \
  --format="value(state,acceleratorType,networkEndpoints.len())"
