#!/usr/bin/env bash
# Mount a Cloud Storage bucket at the same path on every worker (gcsfuse), so a pod's hosts
# share one workdir (orbax checkpoints, best.json, the exported checkpoint) and one TFDS
# data_dir through ordinary file paths.
#   BUCKET=my-bucket ./launch/tpu_vm_mount_bucket.sh     # -> /mnt/my-bucket on every worker
set -euo pipefail
source "$(dirname "$0")/common.sh"
: "${BUCKET:?set BUCKET=name-of-your-bucket (without gs://)}"
: "${MOUNT_POINT:=/mnt/${BUCKET}}"

tpu_ssh_all "set -e
  if ! command -v gcsfuse >/dev/null; then
    curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null
    echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list >/dev/null
    sudo apt-get update -q && sudo apt-get install -y -q gcsfuse
  fi
  sudo mkdir -p ${MOUNT_POINT} && sudo chown \$(id -u):\$(id -g) ${MOUNT_POINT}
  mountpoint -q ${MOUNT_POINT} || gcsfuse --implicit-dirs ${BUCKET} ${MOUNT_POINT}
  ls ${MOUNT_POINT} | head -3"
