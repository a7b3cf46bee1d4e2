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
