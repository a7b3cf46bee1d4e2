#!/usr/bin/env bash
# Worked example: LibriSpeech 960 h, the paper's recipe (configs/canary_librispeech.py: MDM-ASR
# initialised from canary-1b-flash, ISCT K=2, PBEB decoding), from data to test WER.
#
#   ./launch/librispeech_960h.sh convert         # once: canary-1b-flash.nemo -> CANARY_CKPT
#   ./launch/librispeech_960h.sh build           # once, on a CPU machine with ~300 GB disk
#   ./launch/librispeech_960h.sh train-tpu       # on a TPU VM made by tpu_vm_create.sh
#   ./launch/librispeech_960h.sh train-gpu       # or on the GPUs of this host
#   ./launch/librispeech_960h.sh eval-tpu        # WER + RTFx of PBEB at each NFE, both test sets
#   ./launch/librispeech_960h.sh eval-gpu
#
# Settings (environment): DATA_DIR (TFDS data_dir), WORKDIR (checkpoints + logs), CANARY_CKPT
# (the converted Canary checkpoint), CONFIG (default configs/canary_librispeech.py with
# ckpt=CANARY_CKPT), NFE (default 8,16,32), EVAL_BATCH (per process, default 32).
# On a TPU pod every host must see the same DATA_DIR and WORKDIR: mount a bucket on all workers
# first (BUCKET=... ./launch/tpu_vm_mount_bucket.sh) and point both below /mnt/BUCKET.
# Throughput and WER of this recipe: to be measured (none are claimed here).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

: "${DATA_DIR:=${HOME}/tensorflow_datasets}"
: "${WORKDIR:=${HOME}/runs/librispeech_960h}"
: "${CANARY_CKPT:=${HOME}/checkpoints/canary-1b-flash}"
: "${CONFIG:=configs/canary_librispeech.py:ckpt=${CANARY_CKPT}}"
: "${NFE:=8,16,32}"
: "${EVAL_BATCH:=32}"
# The config trains on train_clean100+train_clean360+train_other500 and picks dev_other for
# the periodic eval; its model has only the MDM head, so only MDM samplers apply.
: "${SAMPLERS:=pbeb(lam=0.2,gamma=0.05)}"

train_flags=(
  --config="${CONFIG}"
  --workdir="${WORKDIR}"
  --config.data.tfds_data_dir="${DATA_DIR}"
)

# Evaluate both test sets with every sampler at every NFE; $@ = how to run a command
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
  convert)
    # canary-1b-flash from the Hugging Face Hub (CC-BY-4.0), converted without PyTorch.
    pip install -q huggingface_hub
    huggingface-cli download nvidia/canary-1b-flash canary-1b-flash.nemo --local-dir "${HOME}/nemo"
    mdm-asr-convert nemo --src="${HOME}/nemo/canary-1b-flash.nemo" --out="${CANARY_CKPT}" \
      --decoders=ar --language=en
    ;;
  build)
    # Downloads ~60 GB from openslr.org and writes array_record files for tfds.data_source.
    # The TFDS LibriSpeech builder runs on Apache Beam (DirectRunner, local processes here).
    pip install -q 'tensorflow-datasets>=4.9.6' tensorflow-cpu apache-beam array-record
    tfds build librispeech --data_dir="${DATA_DIR}" --file_format=array_record \
      --beam_pipeline_options="runner=DirectRunner,direct_num_workers=$(nproc),direct_running_mode=multi_processing"
    ;;
  train-tpu)
    # On a pod every host needs CANARY_CKPT, DATA_DIR and WORKDIR at the same paths.
    NOHUP="${NOHUP:-1}" "${HERE}/tpu_vm_run.sh" mdm-asr-train "${train_flags[@]}"
    ;;
  train-gpu)
    # One host: no jax.distributed (the config turns multihost on for TPU pods).
    "${HERE}/gpu_multi.sh" "${CONFIG}" "${WORKDIR}" "${train_flags[@]:2}" \
      --config.mesh.multihost=False
    ;;
  eval-tpu)
    MULTIHOST_FLAG=--multihost run_eval "${HERE}/tpu_vm_run.sh"
    ;;
  eval-gpu)
    run_eval
    ;;
  *)
    echo "usage: $0 convert | build | train-tpu | train-gpu | eval-tpu | eval-gpu" >&2
    exit 2
    ;;
esac
