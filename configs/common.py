"""What every config shares: one argument parser and the `runlocal` small-CPU block.

`parse_arg` reads the text after the colon of `--config=configs/NAME.py:ARG` in big_vision's
style: comma-separated items, `key=value` or a bare `key` (a flag, True). Each config states
its arguments and defaults, e.g. `parse_arg(arg, name=__file__, runlocal=False, ckpt="")`;
values take the type of their default; an unknown key fails naming the config and the keys it
takes. Config files are loaded by path, so each one puts the repository root on sys.path to
import this module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections

from mdm_asr_jax.diffusion.samplers import PAPER_SAMPLER

_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _convert(name: str, key: str, raw: str, default: Any) -> Any:
    if isinstance(default, bool):
        if raw.lower() in _TRUE + _FALSE:
            return raw.lower() in _TRUE
        raise ValueError(f"{name}: {key}={raw!r}; write {key} or {key}=true|false")
    try:
        return type(default)(raw)
    except ValueError:
        raise ValueError(f"{name}: {key}={raw!r} is not a {type(default).__name__}") from None


def parse_arg(arg: str, *, name: str, **spec: Any) -> ml_collections.ConfigDict:
    """The config argument `arg` ("runlocal", "mdm", "ckpt=DIR,variant=180m", ...) as a
    ConfigDict of `spec`'s keys, starting from `spec`'s defaults.

    `name`: the config (its `__file__` or a label), for error messages.
    """
    name = f"configs/{Path(name).name}" if name.endswith(".py") else name
    out = dict(spec)
    for item in filter(None, (part.strip() for part in (arg or "").split(","))):
        key, eq, raw = item.partition("=")
        key = key.strip()
        if key not in spec:
            known = ", ".join(f"{k}={v!r}" for k, v in spec.items()) or "no arguments"
            raise ValueError(f"{name}: unknown argument {key!r}; it takes {known}")
        default = spec[key]
        if not eq:
            if not isinstance(default, bool):
                raise ValueError(f"{name}: argument {key!r} needs a value ({key}=...)")
            out[key] = True
        else:
            out[key] = _convert(name, key, raw.strip(), default)
    return ml_collections.ConfigDict(out)


def runlocal(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The `runlocal` variant of a recipe config: a few utterances, test-size model, 4 steps
    (a smoke run of every stage in a couple of minutes on a laptop CPU)."""
    c.recipe_options.num_train = 64
    c.recipe_options.num_dev = 8
    c.recipe_options.num_test = 8
    c.data.batch_size = 8
    c.data.eval_batch_size = 8
    c.model.encoder_size = "test"
    c.model.decoder_size = "test"
    c.train.num_steps = 4
    c.train.log_every = 2
    c.train.eval_every = 4
    c.train.checkpoint_every = 2
    c.optim.warmup_steps = 2
    return c


def ar_then_mdm(
    c: ml_collections.ConfigDict, *, ar: bool, from_ar: str
) -> ml_collections.ConfigDict:
    """The paper's recipe as two runs: `ar` trains the AR decoder (+ CTC) alone; `from_ar=WORKDIR`
    starts the MDM decoder from that run's AR decoder (encoder, CTC head, tokenizer and corpus
    are taken from it too; see train.init_from.default_init_map). Neither: `c` unchanged."""
    if ar and from_ar:
        raise ValueError("give either ar (phase 1) or from_ar=WORKDIR (phase 2), not both")
    if ar or from_ar:  # the phases as separate runs: no switch inside the run
        c.objective.mdm_start_step = 0
        c.objective.mdm_from_ar = False
    if ar:
        c.model.mdm = False
        c.objective.mdm_weight = 0.0
        c.eval.sampler = "ar_greedy"
        c.eval.final_samplers = ("ar_greedy",)
        c.eval.curve_samplers = ()
    if from_ar:
        c.model.base_checkpoint = from_ar
        c.objective.mdm_warmup_steps = 0
        c.optim.warmup_steps = 50
    return c


def whisper_finetune(
    c: ml_collections.ConfigDict, *, which: str, base: str, from_ar: str = ""
) -> ml_collections.ConfigDict:
    """The fine-tuning block every Whisper recipe shares: `which` = "mdm" (the MDM decoder starts
    as a copy of Whisper's decoder, ISCT K = 2, PBEB) or "ar" (Whisper's own decoder, greedy);
    `base` the packaged or converted Whisper; `from_ar=WORKDIR` (with "mdm") starts from a
    fine-tuned `:ar` run instead, the paper's recipe; the MDM decoder keeps the AR head's
    layout (`model.mdm_shift`). Frozen, cached encoder on short windows
    (5 s / 10 s buckets), Adam at 1e-4 without weight decay, batch 16, NFE cap 16. The recipe,
    canvas, step counts and normaliser stay in the config."""
    if which not in ("mdm", "ar"):
        raise ValueError(f"which={which!r}; choose 'mdm' or 'ar'")
    if from_ar and which != "mdm":
        raise ValueError("from_ar=WORKDIR goes with 'mdm' (phase 2 of the paper's recipe)")
    c.model.base_checkpoint = from_ar or base
    c.model.encoder_min_frames = 0  # short windows: the frozen encoder runs 5 s / 10 s inputs
    c.model.mdm = which == "mdm"
    c.model.ar = which == "ar"
    c.model.dropout = 0.1
    if which == "mdm":
        # A converted checkpoint holds Whisper's decoder as ar_decoder: copy it into the MDM
        # decoder. From a fine-tuned `:ar` run, the default map does the same by name.
        c.model.init_map = (
            () if from_ar else (("encoder", "encoder"), ("mdm_decoder", "ar_decoder"))
        )
        # Slot i read from the output at slot i - 1: the copied AR decoder's next-token head
        # stays aligned (whisper_synth dev WER at step 150: 43 % with it, 71-78 % without).
        c.model.mdm_shift = True
        c.objective.mdm_weight = 1.0
        c.objective.ar_weight = 0.0
        c.objective.isct_steps = 2
        c.eval.sampler = PAPER_SAMPLER
        c.eval.final_samplers = (PAPER_SAMPLER,)
    else:
        c.objective.mdm_weight = 0.0
        c.objective.ar_weight = 1.0
        c.eval.sampler = "ar_greedy"
        c.eval.final_samplers = ("ar_greedy",)
    c.objective.spec_augment = False
    c.optim.freeze = ("encoder/.*",)
    c.train.cache_encoder = True
    c.data.batch_size = 16
    c.data.eval_batch_size = 20
    c.data.frame_buckets = (500, 1000)
    c.data.max_seconds = 10.0
    c.optim.learning_rate = 1e-4
    c.optim.warmup_steps = 50
    c.optim.weight_decay = 0.0
    c.train.log_every = 25
    c.eval.nfe = 16
    return c
