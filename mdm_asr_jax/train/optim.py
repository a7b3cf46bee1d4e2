"""Optimiser: AdamW with warmup + decay, clipping, accumulation, per-group LR and freezing.

Parameter groups are regular expressions over the '/'-joined parameter path
(e.g. `encoder/.*` or `mdm_decoder/layer_\\d+/cross_attn/.*`): `freeze` sets their updates to
zero, `lr_multipliers` scales their learning rate. The first matching rule wins; freezing
beats multipliers.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import optax
from flax import traverse_util


class OptimError(ValueError):
    """An optimiser configuration that cannot be used."""


def learning_rate_schedule(
    peak: float, num_steps: int, warmup_steps: int, decay: str, end_factor: float = 0.0
) -> optax.Schedule:
    """Linear warmup to `peak`, then cosine / linear decay to peak * end_factor, or constant."""
    if peak <= 0:
        raise OptimError(f"learning_rate={peak} must be > 0")
    warmup_steps = max(0, min(warmup_steps, num_steps))
    decay_steps = max(1, num_steps - warmup_steps)
    if decay == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps, alpha=end_factor)
    elif decay == "linear":
        after = optax.linear_schedule(peak, peak * end_factor, decay_steps)
    elif decay == "constant":
        after = optax.constant_schedule(peak)
    elif decay == "rsqrt":
        after = lambda step: peak * jax.lax.rsqrt(1.0 + step / max(warmup_steps, 1))  # noqa: E731
    else:
        raise OptimError(f"lr decay={decay!r}; choose cosine, linear, constant or rsqrt")
    if warmup_steps == 0:
        return after
    return optax.join_schedules(
        [optax.linear_schedule(0.0, peak, warmup_steps), after], [warmup_steps]
    )


def param_paths(params: Any) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(params)


def group_labels(
    params: Any, freeze: Sequence[str], lr_multipliers: Sequence[tuple[str, float]]
) -> Any:
    """A tree of labels: 'frozen', 'group{i}' (lr multiplier i) or 'default'."""
    frozen = [re.compile(p) for p in freeze]
    scaled = [(re.compile(p), i) for i, (p, _) in enumerate(lr_multipliers)]
    flat = param_paths(params)
    labels = {}
    for path in flat:
        name = "/".join(str(p) for p in path)
        if any(r.fullmatch(name) for r in frozen):
            labels[path] = "frozen"
            continue
        labels[path] = next((f"group{i}" for r, i in scaled if r.fullmatch(name)), "default")
    return traverse_util.unflatten_dict(labels)


def _decay_mask(params: Any) -> Any:
    """Weight decay on matrices only (not biases, norm scales)."""
    return jax.tree.map(lambda p: getattr(p, "ndim", 0) >= 2, params)


def make_optimizer(
    config: Any, num_steps: int, params: Any
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Build the optimiser from `config.optim` (a ConfigDict) for `params` (unboxed tree).

    Returns (transformation, learning-rate schedule of the default group).
    """
    freeze = list(config.freeze)
    multipliers = [(str(p), float(m)) for p, m in config.lr_multipliers]
    labels = group_labels(params, freeze, multipliers)
    used = set(jax.tree.leaves(labels))
    for pattern in freeze:
        if not any(re.fullmatch(pattern, "/".join(map(str, path))) for path in param_paths(params)):
            raise OptimError(f"optim.freeze pattern {pattern!r} matches no parameter")

    def adamw(scale: float) -> optax.GradientTransformation:
        schedule = learning_rate_schedule(
            config.learning_rate * scale,
            num_steps,
            config.warmup_steps,
            config.decay,
            config.end_factor,
        )
        return optax.adamw(
            schedule,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=_decay_mask,
        )

    transforms = {"default": adamw(1.0), "frozen": optax.set_to_zero()}
    for i, (_, scale) in enumerate(multipliers):
        transforms[f"group{i}"] = adamw(scale)
    transforms = {k: v for k, v in transforms.items() if k in used or k == "default"}
    tx = optax.multi_transform(transforms, labels)
    chain = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm > 0 else []
    tx = optax.chain(*chain, tx)
    if config.grad_accum_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=config.grad_accum_steps)
    schedule = learning_rate_schedule(
        config.learning_rate, num_steps, config.warmup_steps, config.decay, config.end_factor
    )
    return tx, schedule
