#!/usr/bin/env bash
# Show the last lines of ~/run.log on every worker (runs started with NOHUP=1 tpu_vm_run.sh).
set -euo pipefail
source "$(dirname "$0")/common.sh"
tpu_ssh_all "tail -n ${LINES:-20} ~/run.log"
