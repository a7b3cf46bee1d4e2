"""The demo: synthesised digits + commands in many voices and accents, a small Conformer shared
by a CTC head, an AR decoder and an MDM decoder (ISCT, K=2) that starts as a copy of the AR
decoder at step 500 (the paper's AR -> MDM recipe inside one run); then PBEB vs AR greedy on
held-out sentences spoken by held-out voices (`test`) and in held-out accents (`test_accent`).

Run (fresh machine, nothing downloaded):
  mdm-asr-train --config=configs/demo.py --workdir=/tmp/mdm_demo

Time, measured on a 2-core x86_64 CPU: building the 3 500-utterance corpus 4-5 min; the
1 200-step training loop (dev evaluations included) 23.5 min while a second training run shared
the CPU (0.9-1.3 steps/s; a run alone reaches ~2 steps/s).

Arguments (comma separated): runlocal (a ~1 minute smoke run, used by tests), ar (phase 1 of the
paper's recipe as its own run: AR + CTC only), from_ar=WORKDIR (phase 2: the MDM decoder starts
from that run's AR decoder; its corpus and tokenizer are reused).

Expected result: four JSON lines (PBEB and AR greedy on `test` and `test_accent`). Measured,
seeds 0 / 1: PBEB 76.0 / 78.0 % WER on `test` and 76.9 / 76.3 % on `test_accent`, AR greedy
79.4 / 79.2 % and 78.3 / 79.2 % (docs/results.md, with the other recipes tried and the dev
curves): both far from converged on this varied corpus, MDM not behind.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # config files are loaded by path
from configs.common import ar_then_mdm, parse_arg, runlocal  # noqa: E402
from mdm_asr_jax.diffusion.samplers import PAPER_SAMPLER  # noqa: E402
from mdm_asr_jax.train.defaults import base_config  # noqa: E402


def get_config(arg: str = ""):
    args = parse_arg(arg, name=__file__, runlocal=False, ar=False, from_ar="")
    c = base_config()
    c.recipe = "demo"
    c.recipe_options.num_train = 3000
    c.recipe_options.num_dev = 100
    c.recipe_options.num_test = 200
    c.data.batch_size = 16
    c.data.eval_batch_size = 50
    # Demo utterances last 1-5 s (99 % under 3.6 s): two frame buckets, nothing dropped.
    c.data.frame_buckets = (300, 500)
    c.data.max_seconds = 5.0
    c.tokenizer.vocab_size = 128
    c.model.encoder_size = "tiny"
    c.model.decoder_size = "tiny"
    c.model.subsampling = 8
    c.model.subsampling_channels = 32  # the conv front end dominates CPU time at width 96
    c.model.mdm = True
    c.model.ar = True
    # A CTC head on the encoder: without it the encoder takes ~800 steps to align with the
    # audio (both decoders' losses sit on a plateau until then); with it, ~300.
    c.model.ctc = True
    c.model.dropout = 0.1
    c.objective.mdm_weight = 1.0
    c.objective.ar_weight = 1.0
    c.objective.ctc_weight = 0.5
    c.objective.canvas_length = 32
    c.objective.isct_steps = 2
    # The paper's recipe inside one run: AR decoder (+ CTC) alone for 500 steps, then the MDM
    # decoder starts as a copy of it and both train on (the AR decoder keeps training).
    c.objective.mdm_start_step = 500
    c.objective.mdm_from_ar = True
    c.objective.mdm_warmup_steps = 100
    c.objective.tail_mask_prob = 0.2
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 100
    c.train.num_steps = 1200
    c.train.log_every = 50
    c.train.eval_every = 400
    c.train.checkpoint_every = 400
    c.eval.sampler = PAPER_SAMPLER
    c.eval.nfe = 16
    c.eval.normalizer = "basic"
    c.eval.final_samplers = (PAPER_SAMPLER, "ar_greedy")
    c.eval.curve_samplers = ("ar_greedy",)  # dev WER of both decoders at every eval
    ar_then_mdm(c, ar=args.ar, from_ar=args.from_ar)
    if args.runlocal:
        runlocal(c)
    return c
