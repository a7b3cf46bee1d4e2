"""Optimiser: AdamW with warmup + decay, clipping, accumulation, per-group LR and freezing.

Parameter groups are regular expressions over the '/'-joined parameter path
(e.g. `encoder/.*` or `mdm_decoder/layer_\\d+/cross_attn/.*`): `freeze` sets their updates to
zero, `lr_multipliers` scales their learning rate. The first matching rule wins; freezing
beats multipliers.

Gradient accumulation (`grad_accum_steps` = k > 1): `optax.MultiSteps` averages the gradients
of k consecutive train steps (micro-batches) and applies one AdamW update on the k-th. Every
step-valued key (train.num_steps, optim.warmup_steps) counts train steps, so the schedule is
the same curve whatever k is; it is evaluated once per optimiser update, at the train step
where that update's window begins (update u uses lr(u * k)), so warm-up and decay are not
stretched k-fold. The EMA moves once per update (`apply_gradients`), and the trainer logs the
learning rate the latest update applied (`applied_learning_rate`). With a loss that is a mean
over examples, k micro-batches of b examples give the parameters one batch of k * b gives.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
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


def accumulation_steps(config: Any) -> int:
    """`config.grad_accum_steps` (k >= 1): train steps whose gradients one update averages."""
    k = int(config.grad_accum_steps)
    if k < 1:
        raise OptimError(f"optim.grad_accum_steps={k} must be >= 1 (1 = no accumulation)")
    return k


def make_optimizer(
    config: Any, num_steps: int, params: Any
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Build the optimiser from `config.optim` (a ConfigDict) for `params` (unboxed tree).

    Returns (transformation, learning-rate schedule of the default group over train steps;
    with accumulation the update u applies schedule(u * grad_accum_steps)).
    """
    accumulate = accumulation_steps(config)
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
        if accumulate > 1:  # the inner count is the number of updates, not of train steps
            schedule = _per_update(schedule, accumulate)
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
    if accumulate > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate)
    schedule = learning_rate_schedule(
        config.learning_rate, num_steps, config.warmup_steps, config.decay, config.end_factor
    )
    return tx, schedule


def _per_update(schedule: optax.Schedule, accumulate: int) -> optax.Schedule:
    return lambda count: schedule(count * accumulate)


def applied_learning_rate(schedule: optax.Schedule, step: int, grad_accum_steps: int = 1) -> float:
    """The learning rate of the latest optimiser update after `step` train steps (that of the
    first update before any has happened): what to log next to the step's loss."""
    updates_done = step // grad_accum_steps
    return float(schedule(max(updates_done - 1, 0) * grad_accum_steps))


def apply_gradients(
    tx: optax.GradientTransformation,
    grads: Any,
    params: Any,
    opt_state: Any,
    ema_params: Any,
    *,
    step: jax.Array,
    ema_decay: float,
    grad_accum_steps: int = 1,
) -> tuple[Any, Any, Any, Any]:
    """One train step's optimiser work: (params, opt_state, ema_params, updates).

    `step` counts the train steps done before this one. With accumulation the parameters change
    only on every `grad_accum_steps`-th step (optax.MultiSteps), and so does the EMA
    (ema = decay * ema + (1 - decay) * params, once per update). ema_params None = no EMA.
    """
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    if ema_params is not None:
        blended = jax.tree.map(
            lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, ema_params, params
        )
        if grad_accum_steps > 1:
            updated = (step + 1) % grad_accum_steps == 0
            blended = jax.tree.map(lambda b, e: jnp.where(updated, b, e), blended, ema_params)
        ema_params = blended
    return params, opt_state, ema_params, updates
