#!/usr/bin/env bash
# Keep one command running on a spot (or queued-resource) TPU VM until it finishes, through
# preemptions:
#   SPOT=1 ./launch/tpu_vm_spot.sh mdm-asr-train --config=configs/demo.py \
#       --workdir=gs://BUCKET/runs/demo --config.mesh.multihost=True
# Loop: if the TPU VM is missing, PREEMPTED, TERMINATED or STOPPED, delete it (if present),
# create it again (tpu_vm_create.sh) and set it up (tpu_vm_setup.sh); then run the command on
# every worker (tpu_vm_run.sh). The command is run again when
#   - it exits 75 (mdm-asr-train after SIGTERM: it finished the step and saved), or
#   - the SSH session breaks (exit 255) or the VM is no longer READY afterwards (preempted);
# any other failure stops the loop with that exit code (a config error would fail every time).
# Rerunning mdm-asr-train with the same arguments resumes from the workdir, so the workdir must
# outlive the VM: a gs:// path (or a bucket every worker mounts), never the VM's disk.
# MAX_RESTARTS (default 50) bounds the reruns; RETRY_SECONDS (default 60) is the wait before
# each; the VM is left running at the end (tpu_vm_delete.sh deletes it).
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [[ $# -eq 0 ]]; then
  echo "usage: $0 COMMAND [ARGS...]   (SPOT=1 for a spot VM; see the header)" >&2
  exit 2
fi
: "${MAX_RESTARTS:=50}"
: "${RETRY_SECONDS:=60}"
here="$(dirname "$0")"
PREEMPTED_EXIT_CODE=75

tpu_state() {
  gcloud compute tpus tpu-vm describe "${TPU_NAME}" --project="${PROJECT}" --zone="${ZONE}" \
    --format="value(state)" 2>/dev/null || echo MISSING
}

ensure_ready() {
  local state
  while true; do
    state="$(tpu_state)"
    case "${state}" in
      READY) return 0 ;;
      PREEMPTED | TERMINATED | STOPPED)
        echo "tpu_vm_spot: ${TPU_NAME} is ${state}: deleting and creating it again" >&2
        gcloud compute tpus tpu-vm delete "${TPU_NAME}" --project="${PROJECT}" \
          --zone="${ZONE}" --quiet
        "${here}/tpu_vm_create.sh" && "${here}/tpu_vm_setup.sh" && return 0 ;;
      MISSING | "")
        echo "tpu_vm_spot: ${TPU_NAME} does not exist: creating it" >&2
        "${here}/tpu_vm_create.sh" && "${here}/tpu_vm_setup.sh" && return 0 ;;
      *) echo "tpu_vm_spot: ${TPU_NAME} is ${state}; waiting" >&2 ;;
    esac
    sleep "${RETRY_SECONDS}"
  done
}

restarts=0
while true; do
  ensure_ready
  rc=0
  "${here}/tpu_vm_run.sh" "$@" || rc=$?
  if [[ ${rc} -eq 0 ]]; then
    echo "tpu_vm_spot: the command finished after ${restarts} restart(s)" >&2
    exit 0
  fi
  state="$(tpu_state)"
  if [[ ${rc} -ne ${PREEMPTED_EXIT_CODE} && ${rc} -ne 255 && "${state}" == "READY" ]]; then
    echo "tpu_vm_spot: the command failed (exit ${rc}) on a READY VM: not a preemption, stopping" >&2
    exit "${rc}"
  fi
  restarts=$((restarts + 1))
  if [[ ${restarts} -gt ${MAX_RESTARTS} ]]; then
    echo "tpu_vm_spot: ${MAX_RESTARTS} restarts used up (last exit ${rc}), stopping" >&2
    exit "${rc}"
  fi
  echo "tpu_vm_spot: exit ${rc}, VM ${state}: restart ${restarts} in ${RETRY_SECONDS}s" >&2
  sleep "${RETRY_SECONDS}"
done
