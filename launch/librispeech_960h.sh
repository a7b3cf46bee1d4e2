#!/usr/bin/env bash
# Worked example: LibriSpeech 960 h, from the TFDS build to test-clean / test-other WER.
#
#   ./launch/librispeech_960h.sh build           # once, on a CPU machine with ~300 GB disk
#   ./launch/librispeech_960h.sh train-tpu       # on a TPU VM made by tpu_vm_create.sh
#   ./launch/librispeech_960h.sh train-gpu       # or on the GPUs of this host
#   ./launch/librispeech_960h.sh eval-tpu        # WER + RTFx, PBEB and AR greedy, both test sets
#   ./launch/librispeech_960h.sh eval-gpu
#
# Settings (environment): DATA_DIR (TFDS data_dir), WORKDIR (checkpoints + logs), CONFIG
# (default configs/librispeech.py), NFE (default 8,16,32), EVAL_BATCH (per process, default 32).
# On a TPU pod every host must see the same DATA_DIR and WORKDIR: mount a bucket on all workers
# first (BUCKET=... ./launch/tpu_vm_mount_bucket.sh) and point both below /mnt/BUCKET.
# Throughput and WER of this recipe: to be measured (none are claimed here).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

: "${DATA_DIR:=${HOME}/tensorflow_datasets}"
: "${WORKDIR:=${HOME}/runs/librispeech_960h}"
: "${CONFIG:=configs/librispeech.py}"
: "${NFE:=8,16,32}"
: "${EVAL_BATCH:=32}"
TRAIN_SPLIT="librispeech/train_clean100+train_clean360+train_other500"
SAMPLERS="pbeb(lam=0.2,gamma=0.05),ar_greedy"

train_flags=(
  --config="${CONFIG}"
  --workdir="${WORKDIR}"
  --config.data.train_tfds="${TRAIN_SPLIT}"
  --config.data.dev_tfds="librispeech/dev_clean"
  --config.data.tfds_data_dir="${DATA_DIR}"
)

# Evaluate both test sets with PBEB at every NFE and AR greedy; $@ = how to run a command
# (nothing for this host, or tpu_vm_run.sh to run it on every TPU worker).
run_eval() {
  local split
  for split in test_clean test_other; do
    "$@" mdm-asr-eval --checkpoint="${WORKDIR}" --dataset="tfds:librispeech/${split}" \
      --tfds_data_dir="${DATA_DIR}" --sampler="${SAMPLERS}" --nfe="${NFE}" \
      --batch_size="${EVAL_BATCH}" --output="${WORKDIR}/eval_${split}.jsonl" \
      --hyps="${WORKDIR}/hyps_${split}.jsonl" ${MULTIHOST_FLAG:-}
  done
}

case "${1:-}" in
  build)
    # Downloads ~60 GB from openslr.org and writes array_record files for tfds.data_source.
    # The TFDS LibriSpeech builder runs on Apache Beam (DirectRunner, local processes here).
    pip install -q 'tensorflow-datasets>=4.9.6' tensorflow-cpu apache-beam array-record
    tfds build librispeech --data_dir="${DATA_DIR}" --file_format=array_record \
      --beam_pipeline_options="runner=DirectRunner,direct_num_workers=$(nproc),direct_running_mode=multi_processing"
    ;;
  train-tpu)
    "${HERE}/tpu_vm_run.sh" mdm-asr-train "${train_flags[@]}" --config.mesh.multihost=True
    ;;
  train-gpu)
    "${HERE}/gpu_multi.sh" "${CONFIG}" "${WORKDIR}" "${train_flags[@]:2}"
    ;;
  eval-tpu)
    MULTIHOST_FLAG=--multihost run_eval "${HERE}/tpu_vm_run.sh"
    ;;
  eval-gpu)
    run_eval
    ;;
  *)
    echo "usage: $0 build | train-tpu | train-gpu | eval-tpu | eval-gpu" >&2
    exit 2
    ;;
esac
