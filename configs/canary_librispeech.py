"""The paper's recipe: MDM-ASR initialised from Canary (NeMo), fine-tuned on LibriSpeech 960 h.

MDM-ASR (Yen et al., Interspeech 2026) takes canary-1b-flash's FastConformer encoder and
Transformer decoder, swaps the decoder's causal mask for a full one, and fine-tunes with
Iterative Self-Correction Training (ISCT, two steps) on LibriSpeech 960 h: Adam at 5e-4,
batch 32, canvas 256; decoding with position-biased entropy-bounded (PBEB) sampling,
lambda = 0.2, gamma = 0.05, at most 32 NFEs.

1. Convert the NeMo checkpoint (no PyTorch needed; a machine with internet for the download):
     huggingface-cli download nvidia/canary-1b-flash canary-1b-flash.nemo --local-dir .
     mdm-asr-convert nemo --src=canary-1b-flash.nemo --out=$CKPT --decoders=ar --language=en
   (optionally check it against NeMo first: docs/canary.md "Parity with NeMo", tests/nemo/parity.py)
2. Prepare LibriSpeech 960 h as TFDS (`mdm-asr-prepare`, docs/data.md "TFDS"), then on every host
   of a TPU v4-32 / v5e-32 slice (launch/README.md):
     mdm-asr-train --config=configs/canary_librispeech.py:ckpt=$CKPT \\
         --workdir=/mnt/BUCKET/mdm_canary1b --config.data.tfds_data_dir=/mnt/BUCKET/tfds
   The 180M variant: `:ckpt=$CKPT_180M,variant=180m` (convert canary-180m-flash.nemo the same way).
3. Evaluate (the config's named evals score dev-clean beside dev-other during training and
   test-clean / test-other at the end, PBEB at 32 NFE; any other set or decoder:
     mdm-asr-eval --checkpoint=/mnt/BUCKET/mdm_canary1b --dataset=tfds:librispeech/test_other \\
         --sampler='pbeb(lam=0.2,gamma=0.05)' --nfe=32

Target (the paper, canary-1b-flash init, PBEB at 32 NFE): LibriSpeech test-clean 1.8 %,
test-other 3.6 % WER (Whisper English normaliser). Not reproduced yet (no Canary weights or
LibriSpeech were available offline); the 180M variant's paper numbers are not recorded in this repo.
The number of steps is ours (the paper's schedule is not given in our notes): 90k steps of 32
utterances is ~10 epochs of the 281k training utterances.

Arguments (comma-separated after the colon): `ckpt=DIR` converted Canary checkpoint directory
(required), `variant=1b|180m` (only changes the default workdir naming and
memory layout), `runlocal` (shrinks everything to a minutes-long smoke run on FSDD digits; pair it with a
converted tiny model, e.g. `python tests/nemo/tiny_canary.py /tmp/tiny` then
`mdm-asr-convert nemo --src=/tmp/tiny/tiny_canary.nemo --out=/tmp/tiny_ckpt`).

Trainer note: the model architecture, tokenizer (Canary's aggregate SentencePiece models, 8-
rounded vocabulary + [MASK]), prompt (canary2 ASR prompt: English, punctuation on) and feature
settings come from the converted checkpoint (`model.base_checkpoint`), not from size tables.
"""

from __future__ import annotations

import sys
from pathlib import Path

import ml_collections

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # config files are loaded by path
from configs.common import parse_arg  # noqa: E402
from mdm_asr_jax.diffusion.samplers import DEFAULT_NFE, PAPER_SAMPLER  # noqa: E402
from mdm_asr_jax.train.defaults import base_config  # noqa: E402
from mdm_asr_jax.train.evals import named_eval  # noqa: E402


def get_config(arg: str = "") -> ml_collections.ConfigDict:
    args = parse_arg(arg, name=__file__, ckpt="", variant="1b", runlocal=False)
    variant = args.variant
    if variant not in ("1b", "180m"):
        raise ValueError(f"variant={variant!r}; choose 1b or 180m")
    runlocal = args.runlocal
    if not args.ckpt:
        raise ValueError(
            "configs/canary_librispeech.py needs ckpt=DIR (a checkpoint written by "
            "`mdm-asr-convert nemo`), e.g. --config=configs/canary_librispeech.py:ckpt=/data/canary"
        )

    c = base_config()
    c.seed = 0
    # Architecture, tokenizer, prompt and features from the converted Canary checkpoint; the
    # weights too (its "ar_decoder" initialises our bidirectional "mdm_decoder").
    c.model.base_checkpoint = args.ckpt
    c.model.encoder_kind = "fastconformer"
    c.model.init_from = args.ckpt
    c.model.init_map = (("encoder", "encoder"), ("mdm_decoder", "ar_decoder"))
    c.model.mdm = True
    c.model.ar = False
    c.model.ctc = False
    c.model.dropout = 0.1
    c.model.max_length = 0  # prompt (9 canary2 tokens) + canvas
    c.model.dtype = "bfloat16"
    c.model.param_dtype = "float32"

    c.features.kind = "nemo"
    c.features.num_mels = 128

    c.data.train_tfds = "librispeech/train_clean100+train_clean360+train_other500"
    c.data.dev_tfds = "librispeech/dev_other"
    c.data.batch_size = 32
    c.data.eval_batch_size = 64
    c.data.frame_buckets = (800, 1200, 1600, 2400, 3500)  # 10 ms frames: up to 35 s
    c.data.max_seconds = 35.0
    c.data.num_workers = 8

    c.objective.mdm_weight = 1.0
    c.objective.ar_weight = 0.0
    c.objective.canvas_length = 256
    c.objective.schedule = "linear"
    c.objective.isct_steps = 2
    c.objective.prediction = "argmax"
    c.objective.spec_augment = True

    c.optim.learning_rate = 5e-4
    c.optim.warmup_steps = 1000
    c.optim.decay = "constant"
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0  # Adam, not AdamW
    c.optim.clip_norm = 1.0

    c.train.num_steps = 90_000
    c.train.log_every = 100
    c.train.eval_every = 5000
    c.train.checkpoint_every = 5000

    # TPU v4-32 / v5e-32 (or any slice): batch over data x fsdp; parameters, gradients and Adam
    # state sharded over fsdp (1B params + Adam in float32 is ~12 GB, too much for one v5e chip).
    c.mesh.shape = (-1, 8 if variant == "1b" else 1, 1)
    c.mesh.multihost = True

    c.eval.sampler = PAPER_SAMPLER
    c.eval.nfe = DEFAULT_NFE
    c.eval.normalizer = "english"
    c.eval.max_utterances = 0
    c.eval.final_samplers = (PAPER_SAMPLER,)
    # dev-other is the periodic dev set (data.dev_tfds, the best checkpoint's metric); dev-clean is
    # scored beside it; the test sets at the end (named evals: train/evals.py).
    c.evals.dev_clean = named_eval("tfds:librispeech/dev_clean", every=5000, final=False)
    c.evals.test_clean = named_eval("tfds:librispeech/test_clean")
    c.evals.test_other = named_eval("tfds:librispeech/test_other")

    if runlocal:
        c.evals = ml_collections.ConfigDict()  # the smoke run has only the digits recipe's sets
        c.recipe = "digits"
        c.data.train_tfds = ""
        c.data.dev_tfds = ""
        c.data.batch_size = 4
        c.data.eval_batch_size = 4
        c.data.frame_buckets = (200, 400)
        c.data.max_seconds = 4.0
        c.data.num_workers = 0
        c.objective.canvas_length = 16
        c.model.dtype = "float32"
        c.train.num_steps = 4
        c.train.log_every = 2
        c.train.eval_every = 4
        c.train.checkpoint_every = 2
        c.mesh.shape = (-1, 1, 1)
        c.mesh.multihost = False
        c.eval.nfe = 4
        c.eval.max_utterances = 8
    return c
