#!/usr/bin/env bash
# Run the same command on every worker of the TPU VM, from the code folder, in the venv.
#   ./launch/tpu_vm_run.sh mdm-asr-train --config=configs/demo.py --workdir=/mnt/BUCKET/demo \
#       --config.mesh.multihost=True
#   ./launch/tpu_vm_run.sh mdm-asr-eval --multihost --checkpoint=/mnt/BUCKET/demo \
#       --manifest=/mnt/BUCKET/demo/data/demo/test.jsonl --output=/tmp/test.jsonl
# (/mnt/BUCKET: a bucket mounted on every worker by tpu_vm_mount_bucket.sh.)
# On a pod every host runs the command; jax.distributed.initialize() (multihost=True /
# --multihost) connects them; only process 0 prints eval results and writes --output.
# Output of each worker is prefixed by gcloud; the run stops if the SSH session ends, so for
# long runs use NOHUP=1 (logs to ~/run.log on each worker; follow with tpu_vm_logs.sh).
# Before the command, on every worker (common.sh, remote_prelude): JAX_COMPILATION_CACHE_DIR is
# set to COMPILATION_CACHE_DIR (default ~/.cache/mdm_asr_jax/jax_cache), and a stale
# /tmp/libtpu_lockfile (left by a killed run) is removed if no process holds the TPU; if one
# does, the run stops and names it.
set -euo pipefail
source "$(dirname "$0")/common.sh"

if [[ $# -eq 0 ]]; then
  echo "usage: $0 COMMAND [ARGS...]" >&2
  exit 2
fi
command_line="$(printf '%q ' "$@")"
prelude="$(remote_prelude)"
if [[ "${NOHUP:-0}" == "1" ]]; then
  tpu_ssh_all "${prelude}
nohup ${command_line} > ~/run.log 2>&1 &"
else
  tpu_ssh_all "${prelude}
${command_line}"
fi
