#!/usr/bin/env bash
# Delete the TPU VM (stops billing). Checkpoints on gs:// stay; the VM's local disk does not.
set -euo pipefail
source "$(dirname "$0")/common.sh"
gcloud compute tpus tpu-vm delete "${TPU_NAME}" --project="${PROJECT}" --zone="${ZONE}" --quiet
