#!/usr/bin/env bash
# The GPU measurements of docs/performance.md, in one run on one machine.
#
#   bash benchmarks/gpu_suite.sh CHECKPOINT MANIFEST OUT_DIR
#
# CHECKPOINT: the demo checkpoint (configs/demo.py workdir or an exported copy); MANIFEST: its
# test set. Writes one JSON line per measurement to OUT_DIR/*.jsonl:
#   decode_demo.jsonl   trained demo model: PBEB at NFE 4/8/16/32 vs AR greedy on 100 test utterances, batch 1 and 50,
#                       float32 (the checkpoint's dtype)
#   decode_large.jsonl  random-init `large` Conformer + decoders (512 wide), bfloat16, 10 s
#                       utterances, batch 1 and 32: cost at the NFE cap vs AR to its length cap
#   decode_lengths.jsonl  random-init models of the paper's shapes (canary_180m, canary_1b, Whisper
#                       tiny / base), bfloat16, transcripts forced to 10/20/40/60 tokens, batch 1 and
#                       32: PBEB at NFE 8 and 32 vs AR greedy at the lengths users decode
#   train_large.jsonl   train step of the `large` model, bfloat16, batch 32 x 10 s: AR vs MDM vs
#                       ISCT K=2 (time per step, tokens/s, memory)
set -euo pipefail
ckpt=$1 manifest=$2 out=$3
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
python3 -c "import jax; print(jax.devices())"
python3 "$here/decode_speed.py" --checkpoint="$ckpt" --manifest="$manifest" --max_utterances=100 \
  --batch_size=50 --samplers=pbeb --nfes=4,8,16,32 \
  --parts=sampler,ar --repeats=5 | tee "$out/decode_demo.jsonl"
python3 "$here/decode_speed.py" --model_size=large --dtype=bfloat16 --seconds=10 \
  --num_utterances=32 --batch_size=32 --samplers=pbeb --nfes=8,32 \
  --parts=sampler,ar --canvas_length=128 --repeats=3 | tee "$out/decode_large.jsonl"
python3 "$here/decode_speed.py" --shapes=canary_180m,canary_1b,whisper_tiny,whisper_base \
  --lengths=10,20,40,60 --nfes=8,32 --batch_size=32 --dtype=bfloat16 --repeats=3 \
  | tee "$out/decode_lengths.jsonl"
python3 "$here/train_step.py" --model_size=large --dtype=bfloat16 --batch_size=32 --seconds=10 \
  --tokens=48 --canvas_length=128 --objectives=ar,mdm,isct2 --repeats=5 \
  | tee "$out/train_large.jsonl"
