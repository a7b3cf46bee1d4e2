"""Connected digits from real speech: FSDD recordings (4 speakers) + synthesised digits for
training; one FSDD speaker never heard in training is the test set.

Run (needs the Free Spoken Digit Dataset recordings; in a development checkout they are found in
../shared/data/fsdd, elsewhere pass --config.recipe_options.fsdd_dir=PATH/recordings):
  mdm-asr-train --config=configs/digits.py --workdir=/tmp/mdm_digits
  mdm-asr-train --config=configs/digits.py:speaker=jackson --workdir=/tmp/mdm_digits_jackson

Time: 40 minutes on a 2-core x86_64 CPU (corpus ~3 min).
Expected result: the final JSON lines give WER of PBEB and AR greedy on the held-out speaker;
measured for george (seed 0): PBEB 36.1 %, AR greedy 30.0 % (docs/results.md: the MDM decoder,
started from the AR decoder at step 500, trails it at this budget).

Arguments (comma separated key=value): speaker=george|jackson|lucas|nicolas|yweweler (held out),
ar (phase 1 of the paper's recipe: AR + CTC only), from_ar=WORKDIR (phase 2: the MDM decoder
starts from that run's AR decoder, and its corpus is reused), runlocal (a ~2 minute smoke run).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # config files are loaded by path
from configs.common import ar_then_mdm, parse_arg, runlocal  # noqa: E402
from mdm_asr_jax.diffusion.samplers import PAPER_SAMPLER  # noqa: E402
from mdm_asr_jax.train.defaults import base_config  # noqa: E402


def get_config(arg: str = ""):
    args = parse_arg(arg, name=__file__, speaker="george", runlocal=False, ar=False, from_ar="")
    c = base_config()
    c.recipe = "digits"
    c.recipe_options.test_speaker = args.speaker
    c.recipe_options.num_train = 3000
    c.recipe_options.num_dev = 100
    c.recipe_options.num_test = 300
    c.data.batch_size = 16
    c.data.eval_batch_size = 50
    c.data.frame_buckets = (300, 500, 800)
    c.data.max_seconds = 8.0
    c.tokenizer.vocab_size = 64
    c.model.encoder_size = "tiny"
    c.model.decoder_size = "tiny"
    c.model.subsampling = 8
    c.model.mdm = True
    c.model.ar = True
    c.model.ctc = True  # aligns the encoder early (see configs/demo.py)
    c.objective.ar_weight = 1.0
    c.objective.ctc_weight = 0.5
    c.objective.canvas_length = 32
    c.objective.isct_steps = 2
    c.optim.learning_rate = 2e-3
    c.optim.warmup_steps = 100
    c.train.num_steps = 1200
    c.train.eval_every = 400
    c.train.checkpoint_every = 400
    c.eval.nfe = 16
    c.eval.normalizer = "basic"
    c.eval.final_samplers = (PAPER_SAMPLER, "ar_greedy")
    c.eval.curve_samplers = ("ar_greedy",)  # dev WER of both decoders at every eval
    # The paper's recipe inside one run (as in configs/demo.py): AR decoder (+ CTC) alone for
    # 500 steps, then the MDM decoder starts as a copy of it and both train on.
    c.objective.mdm_start_step = 500
    c.objective.mdm_from_ar = True
    c.objective.mdm_warmup_steps = 100
    c.objective.tail_mask_prob = 0.2
    ar_then_mdm(c, ar=args.ar, from_ar=args.from_ar)
    if args.runlocal:
        runlocal(c)
    return c
