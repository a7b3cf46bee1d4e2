"""The masked-diffusion forward process and objectives: schedules, masking, MDM loss, ISCT.

Model-independent: everything here works on token arrays and a `logits_fn`; the network lives
in `nn/`. The algorithm:

  targets   = transcript tokens, then EOS up to the canvas length L (the model learns the end)
  t         ~ U(eps, 1], low-discrepancy across the batch (one uniform offset, stratified)
  canvas    = targets with each position replaced by [MASK] w.p. 1 - alpha_t, independently
  loss      = sum over masked positions of  w(t) * CE(logits, target),  w(t) = -alpha'_t/(1-alpha_t)
              (= 1/t for the linear schedule alpha_t = 1 - t); unmasked positions cost nothing.
              Normalised once by the number of *real* target tokens (transcript + its first EOS),
              so the MDM loss is per token like the AR and CTC losses beside it, however many
              EOS padding slots the canvas has.
  options   w(t): "elbo" (1/t, the paper), "capped" (min(w(t), cap): less gradient noise from
              tiny t), "masked_mean" (per utterance: counted tokens / masked tokens, i.e. the
              mean CE over the masked slots scaled to the utterance; 1/t in expectation).
              forbidden ids (mask, pad, prompt, special tokens) get no probability in the
              training softmax and never enter an ISCT canvas.
              tail masking: with probability p an utterance's whole EOS tail (from the first
              EOS on) is masked, so training also sees canvases whose length is unknown, as
              the samplers do at test time.
  ISCT, K steps (under lax.scan; the encoder ran once, outside):
      x_0 = targets
      step k: t_k drawn; canvas_k = mask(x_{k-1}, t_k); logits_k = f(canvas_k)
              loss_k = weighted CE(logits_k, targets) on the masked positions of canvas_k
              x_k = stop_gradient(argmax or sample of logits_k) at masked slots, canvas_k elsewhere
      total = sum_k step_weight_k * loss_k.   K = 1 is exactly the plain MDM loss.
      Optionally step 1 runs without dropout (a clean prediction to correct).

Legend: B batch, L canvas length, V vocabulary.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from mdm_asr_jax.diffusion.samplers import NEG_LOGIT

Array = jax.Array
# logits_fn(canvas [B, L] int32, key) -> logits [B, L, V]; the key feeds dropout.
LogitsFn = Callable[[Array, Array], Array]

SCHEDULES = ("linear", "cosine")
LATER_TIMES = ("independent", "same", "lower")
PREDICTIONS = ("argmax", "sample")
TIME_WEIGHTS = ("elbo", "capped", "masked_mean")
NORMALIZATIONS = ("real_tokens", "canvas")


class ProcessError(ValueError):
    """Invalid arguments to the diffusion process (names the argument and the fix)."""


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------
def alpha(t: Array, schedule: str = "linear") -> Array:
    """Probability that a token is still unmasked at time t in [0, 1]."""
    t = jnp.asarray(t, jnp.float32)
    if schedule == "linear":
        return 1.0 - t
    if schedule == "cosine":
        return jnp.cos(0.5 * math.pi * t)
    raise ProcessError(f"schedule={schedule!r}; choose one of {SCHEDULES}")


def loss_weight(t: Array, schedule: str = "linear") -> Array:
    """-alpha'(t) / (1 - alpha(t)): the ELBO weight of a masked position at time t."""
    t = jnp.asarray(t, jnp.float32)
    if schedule == "linear":
        return 1.0 / t
    if schedule == "cosine":
        half_pi = 0.5 * math.pi
        return half_pi * jnp.sin(half_pi * t) / (1.0 - jnp.cos(half_pi * t))
    raise ProcessError(f"schedule={schedule!r}; choose one of {SCHEDULES}")


def sample_times(
    key: Array, batch_size: int, *, eps: float = 1e-3, low_discrepancy: bool = True
) -> Array:
    """t [B] in [eps, 1]. Low-discrepancy: t_i = (u + i / B) mod 1 with one shared u."""
    if not 0.0 <= eps < 1.0:
        raise ProcessError(f"eps={eps} must be in [0, 1)")
    if low_discrepancy:
        u = jax.random.uniform(key, ())
        t = jnp.mod(u + jnp.arange(batch_size, dtype=jnp.float32) / batch_size, 1.0)
    else:
        t = jax.random.uniform(key, (batch_size,))
    return eps + (1.0 - eps) * t


# ---------------------------------------------------------------------------------------------
# Targets and masking
# ---------------------------------------------------------------------------------------------
class CanvasTargets(NamedTuple):
    targets: Array  # [B, L] int32: transcript then EOS
    weight: Array  # [B, L] float32: 1 where the position counts as a target token
    real: Array  # [B, L] float32: 1 on the transcript and its first EOS (the real tokens)


def canvas_targets(
    tokens: Array,
    token_lengths: Array,
    canvas_length: int,
    eos_id: int,
    *,
    count_padding_eos: bool = True,
) -> CanvasTargets:
    """Pad each transcript with EOS to `canvas_length`.

    tokens [B, Lt] (any padding beyond token_lengths), token_lengths [B]. The first EOS always
    counts as a target; the EOS padding after it counts if `count_padding_eos`.
    Transcripts longer than the canvas are an error when lengths are concrete; the data pipeline
    filters them (`max_tokens`) so traced calls never see them.
    """
    if not isinstance(token_lengths, jax.core.Tracer):
        longest = int(jnp.max(token_lengths)) if token_lengths.size else 0
        if longest >= canvas_length:
            raise ProcessError(
                f"a transcript has {longest} tokens but the canvas holds {canvas_length} "
                "(transcript + at least one EOS): raise the canvas length or filter long "
                "transcripts (data max_tokens)"
            )
    batch, width = tokens.shape
    if width < canvas_length:
        tokens = jnp.pad(tokens, ((0, 0), (0, canvas_length - width)))
    tokens = tokens[:, :canvas_length]
    position = jnp.arange(canvas_length)[None, :]
    lengths = jnp.asarray(token_lengths)[:, None]
    targets = jnp.where(position < lengths, tokens, eos_id).astype(jnp.int32)
    real = (position <= lengths).astype(jnp.float32)
    weight = jnp.ones((batch, canvas_length), jnp.float32) if count_padding_eos else real
    return CanvasTargets(targets, weight, real)


class Corruption(NamedTuple):
    canvas: Array  # [B, L] int32, masked positions hold mask_id
    masked: Array  # [B, L] bool, positions replaced by [MASK]
    loss_mask: Array  # [B, L] bool, positions whose cross-entropy counts (masked and maskable)
    t: Array  # [B] float32
    weight: Array  # [B] float32, w(t)


def corrupt(
    key: Array,
    tokens: Array,
    t: Array,
    mask_id: int,
    *,
    schedule: str = "linear",
    maskable: Array | None = None,
    force: Array | None = None,
    instead: tuple[Array, Array] | None = None,
) -> Corruption:
    """Absorbing-state masking: each maskable position -> [MASK] w.p. 1 - alpha(t), independently.

    tokens [B, L] int, t [B] in (0, 1], maskable [B, L] bool (default all), force [B, L] bool:
    positions masked whatever the draw (e.g. a whole EOS tail). instead = (rows [B] bool,
    masks [B, L] bool): those rows take these masks in place of the independent draw.
    """
    if tokens.ndim != 2:
        raise ProcessError(f"tokens must be [batch, length], got shape {tokens.shape}")
    if t.shape != tokens.shape[:1]:
        raise ProcessError(f"t must have shape [{tokens.shape[0]}], got {t.shape}")
    if schedule not in SCHEDULES:
        raise ProcessError(f"schedule={schedule!r}; choose one of {SCHEDULES}")
    if maskable is None:
        maskable = jnp.ones(tokens.shape, bool)
    keep = alpha(t, schedule)[:, None]
    masked = (jax.random.uniform(key, tokens.shape) >= keep) & maskable
    if instead is not None:
        rows, masks = instead
        masked = jnp.where(rows[:, None], masks & maskable, masked)
    if force is not None:
        masked = masked | (force & maskable)
    canvas = jnp.where(masked, mask_id, tokens).astype(jnp.int32)
    return Corruption(canvas, masked, masked, t, loss_weight(t, schedule))


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def forbid(logits: Array, forbidden_ids: tuple[int, ...]) -> Array:
    """logits [..., V] in float32 with the forbidden ids set to NEG_LOGIT (zero probability)."""
    logits = jnp.asarray(logits, jnp.float32)
    if not forbidden_ids:
        return logits
    return logits.at[..., jnp.asarray(forbidden_ids, jnp.int32)].set(NEG_LOGIT)


def token_cross_entropy(logits: Array, targets: Array) -> Array:
    """Per-position cross-entropy in float32. logits [B, L, V], targets [B, L] -> [B, L]."""
    log_probs = jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]


def time_weights(
    corruption: Corruption, target_weight: Array, kind: str = "elbo", cap: float = 10.0
) -> Array:
    """The per-utterance weight [B] of a masked position's cross-entropy (see TIME_WEIGHTS)."""
    if kind == "elbo":
        return corruption.weight
    if kind == "capped":
        return jnp.minimum(corruption.weight, cap)
    if kind == "masked_mean":
        counted = jnp.sum(target_weight, axis=-1)
        masked = jnp.sum(corruption.loss_mask.astype(jnp.float32) * target_weight, axis=-1)
        return counted / jnp.maximum(masked, 1.0)
    raise ProcessError(f"time_weight={kind!r}; choose one of {TIME_WEIGHTS}")


def masked_diffusion_terms(
    logits: Array,
    targets: Array,
    target_weight: Array,
    corruption: Corruption,
    *,
    time_weight: str = "elbo",
    time_weight_cap: float = 10.0,
) -> dict[str, Array]:
    """Summed terms of the MDM loss for one corruption.

    Returns loss_sum (sum of w(t) * CE over counted masked positions), masked_tokens, correct
    (argmax hits on those positions), ce_sum (unweighted CE on them). Normalise once (by the
    number of real target tokens) to report the loss per token.
    """
    ce = token_cross_entropy(logits, targets)
    counted = corruption.loss_mask.astype(jnp.float32) * target_weight
    hits = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
    weight = time_weights(corruption, target_weight, time_weight, time_weight_cap)
    return {
        "loss_sum": jnp.sum(ce * counted * weight[:, None]),
        "ce_sum": jnp.sum(ce * counted),
        "masked_tokens": jnp.sum(counted),
        "correct": jnp.sum(hits * counted),
    }


@dataclasses.dataclass(frozen=True)
class ProcessConfig:
    """How training corrupts and scores. Paper defaults: linear schedule, ISCT with 2 steps."""

    schedule: str = "linear"
    eps: float = 1e-3
    low_discrepancy: bool = True
    count_padding_eos: bool = True
    isct_steps: int = 1  # K; 1 = plain MDM
    later_times: str = "independent"  # how t_k (k >= 2) is drawn: independent | same | lower
    prediction: str = "argmax"  # how x_k is formed from logits_k: argmax | sample
    step_weights: tuple[float, ...] = ()  # per-step loss weights; () = all 1.0
    time_weight: str = "elbo"  # w(t): elbo (1/t, paper) | capped | masked_mean
    time_weight_cap: float = 10.0  # the cap of time_weight="capped"
    normalize: str = "real_tokens"  # loss divided by: real_tokens (transcript + EOS) | canvas
    forbidden_ids: tuple[int, ...] = ()  # never predicted: zero training probability, not in x_k
    deterministic_first: bool = False  # ISCT step 1 without dropout
    tail_mask_prob: float = 0.0  # P(an utterance's whole EOS tail is masked) at every step
    # P(an utterance's canvas is masked as a suffix instead of independently): every slot from
    # round((1 - t) x real tokens) on, the canvases left-to-right decoding meets
    suffix_mask_prob: float = 0.0

    def validate(self) -> ProcessConfig:
        if self.schedule not in SCHEDULES:
            raise ProcessError(f"schedule={self.schedule!r}; choose one of {SCHEDULES}")
        if self.isct_steps < 1:
            raise ProcessError(f"isct_steps={self.isct_steps} must be >= 1 (1 = plain MDM)")
        if self.later_times not in LATER_TIMES:
            raise ProcessError(f"later_times={self.later_times!r}; choose one of {LATER_TIMES}")
        if self.prediction not in PREDICTIONS:
            raise ProcessError(f"prediction={self.prediction!r}; choose one of {PREDICTIONS}")
        if self.step_weights and len(self.step_weights) != self.isct_steps:
            raise ProcessError(
                f"step_weights has {len(self.step_weights)} entries for isct_steps={self.isct_steps}"
            )
        if self.time_weight not in TIME_WEIGHTS:
            raise ProcessError(f"time_weight={self.time_weight!r}; choose one of {TIME_WEIGHTS}")
        if self.time_weight_cap <= 0:
            raise ProcessError(f"time_weight_cap={self.time_weight_cap} must be > 0")
        if self.normalize not in NORMALIZATIONS:
            raise ProcessError(f"normalize={self.normalize!r}; choose one of {NORMALIZATIONS}")
        if not 0.0 <= self.tail_mask_prob <= 1.0:
            raise ProcessError(f"tail_mask_prob={self.tail_mask_prob} must be in [0, 1]")
        if not 0.0 <= self.suffix_mask_prob <= 1.0:
            raise ProcessError(f"suffix_mask_prob={self.suffix_mask_prob} must be in [0, 1]")
        return self

    @property
    def weights(self) -> tuple[float, ...]:
        return tuple(self.step_weights) or (1.0,) * self.isct_steps


def _step_key(key: Array, step: int) -> Array:
    """Step 0 uses `key` itself (so K = 1 is the plain loss), step k folds k in."""
    return key if step == 0 else jax.random.fold_in(key, step)


def _terms(
    logits: Array, targets: Array, target_weight: Array, corruption: Corruption, config
) -> dict[str, Array]:
    return masked_diffusion_terms(
        logits,
        targets,
        target_weight,
        corruption,
        time_weight=config.time_weight,
        time_weight_cap=config.time_weight_cap,
    )


def _real_and_tail(target_weight: Array, lengths: Array | None) -> tuple[Array, Array | None]:
    """(real-token weight [B, L], EOS tail [B, L] bool or None) from transcript lengths [B]."""
    if lengths is None:
        return target_weight, None
    position = jnp.arange(target_weight.shape[1])[None, :]
    lengths = jnp.asarray(lengths)[:, None]
    return target_weight * (position <= lengths), position >= lengths


def _tail_force(key: Array, tail: Array | None, probability: float) -> Array | None:
    """The EOS tails to mask whole [B, L]: each utterance's w.p. `probability`."""
    if tail is None or probability <= 0.0:
        return None
    chosen = jax.random.uniform(key, tail.shape[:1]) < probability
    return tail & chosen[:, None]


def _suffix_masks(
    key: Array, t: Array, real: Array, probability: float
) -> tuple[Array, Array] | None:
    """(rows [B] bool, masks [B, L] bool) for `corrupt(instead=...)`: each utterance w.p.
    `probability` is masked from slot round((1 - t) x its real tokens) to the canvas end, so
    about a fraction t of its real tokens (and its whole EOS tail) is hidden, as in a canvas
    that left-to-right decoding has filled up to there."""
    if probability <= 0.0:
        return None
    rows = jax.random.uniform(key, t.shape) < probability
    count = jnp.sum(real > 0, axis=1).astype(jnp.float32)
    cut = jnp.round((1.0 - t) * count)
    position = jnp.arange(real.shape[1], dtype=jnp.float32)[None, :]
    return rows, position >= cut[:, None]


def mdm_loss(
    logits_fn: LogitsFn,
    key: Array,
    targets: Array,
    target_weight: Array,
    mask_id: int,
    config: ProcessConfig = ProcessConfig(),
    *,
    lengths: Array | None = None,
) -> dict[str, Array]:
    """Plain masked-diffusion loss (one corruption). Returns summed terms + `target_tokens`
    (the normaliser: real tokens, or every counted canvas slot with normalize="canvas").

    lengths [B]: transcript lengths, for the real-token count and tail masking (None: every
    counted slot is a real token and no tail is masked).
    """
    time_key, mask_key, model_key = jax.random.split(key, 3)
    real, tail = _real_and_tail(target_weight, lengths)
    t = sample_times(
        time_key, targets.shape[0], eps=config.eps, low_discrepancy=config.low_discrepancy
    )
    force = _tail_force(jax.random.fold_in(mask_key, 1), tail, config.tail_mask_prob)
    instead = _suffix_masks(jax.random.fold_in(mask_key, 2), t, real, config.suffix_mask_prob)
    corruption = corrupt(
        mask_key, targets, t, mask_id, schedule=config.schedule, force=force, instead=instead
    )
    logits = forbid(logits_fn(corruption.canvas, model_key), config.forbidden_ids)
    terms = _terms(logits, targets, target_weight, corruption, config)
    terms["target_tokens"] = jnp.sum(real if config.normalize == "real_tokens" else target_weight)
    return terms


def isct_loss(
    logits_fn: LogitsFn,
    key: Array,
    targets: Array,
    target_weight: Array,
    mask_id: int,
    config: ProcessConfig = ProcessConfig(),
    *,
    lengths: Array | None = None,
    first_logits_fn: LogitsFn | None = None,
) -> dict[str, Array]:
    """Iterative Self-Correction Training over K = config.isct_steps steps under lax.scan.

    Returns the summed terms of all steps (loss_sum already weighted per step), per-step
    `step{k}_loss_sum` / `step{k}_correct` / `step{k}_masked_tokens`, and `target_tokens`.
    With K = 1 the result equals `mdm_loss` exactly (same keys, same arithmetic).
    `first_logits_fn` (dropout-free) runs step 1 when config.deterministic_first is set.
    """
    config.validate()
    if config.deterministic_first and first_logits_fn is None:
        raise ProcessError("deterministic_first=True needs first_logits_fn (a dropout-free pass)")
    batch = targets.shape[0]
    num_steps = config.isct_steps
    real, tail = _real_and_tail(target_weight, lengths)
    step_keys = jnp.stack([_step_key(key, k) for k in range(num_steps)])
    step_weights = jnp.asarray(config.weights, jnp.float32)
    forbidden = jnp.asarray(config.forbidden_ids, jnp.int32)

    def predict(canvas, model_key, index):
        if not config.deterministic_first:
            return logits_fn(canvas, model_key)
        return jax.lax.cond(
            index == 0,
            lambda c, k: jnp.asarray(first_logits_fn(c, k), jnp.float32),
            lambda c, k: jnp.asarray(logits_fn(c, k), jnp.float32),
            canvas,
            model_key,
        )

    def step(carry, inputs):
        previous, first_t = carry
        step_key, step_weight, index = inputs
        time_key, mask_key, model_key = jax.random.split(step_key, 3)
        fresh_t = sample_times(
            time_key, batch, eps=config.eps, low_discrepancy=config.low_discrepancy
        )
        if config.later_times == "same":
            t = jnp.where(index == 0, fresh_t, first_t)
        elif config.later_times == "lower":
            t = jnp.where(index == 0, fresh_t, jnp.maximum(first_t * fresh_t, config.eps))
        else:
            t = fresh_t
        force = _tail_force(jax.random.fold_in(mask_key, 1), tail, config.tail_mask_prob)
        instead = _suffix_masks(jax.random.fold_in(mask_key, 2), t, real, config.suffix_mask_prob)
        corruption = corrupt(
            mask_key, previous, t, mask_id, schedule=config.schedule, force=force, instead=instead
        )
        logits = forbid(predict(corruption.canvas, model_key, index), config.forbidden_ids)
        terms = _terms(logits, targets, target_weight, corruption, config)
        if config.prediction == "argmax":
            predicted = jnp.argmax(logits, axis=-1)
        else:
            predicted = jax.random.categorical(jax.random.fold_in(model_key, 1), logits)
        if config.forbidden_ids:  # float rounding can never pick a forbidden id: guard anyway
            bad = jnp.any(predicted[..., None] == forbidden, axis=-1)
            predicted = jnp.where(bad, jnp.argmax(logits, axis=-1), predicted)
        predicted = jnp.where(corruption.masked, predicted, corruption.canvas).astype(jnp.int32)
        predicted = jax.lax.stop_gradient(predicted)
        terms = {**terms, "loss_sum": terms["loss_sum"] * step_weight}
        first_t = jnp.where(index == 0, t, first_t)
        return (predicted, first_t), terms

    init = (targets.astype(jnp.int32), jnp.zeros((batch,), jnp.float32))
    _, per_step = jax.lax.scan(step, init, (step_keys, step_weights, jnp.arange(num_steps)))
    out = {name: jnp.sum(values) for name, values in per_step.items()}
    for k in range(num_steps):
        out[f"step{k + 1}_loss_sum"] = per_step["loss_sum"][k]
        out[f"step{k + 1}_correct"] = per_step["correct"][k]
        out[f"step{k + 1}_masked_tokens"] = per_step["masked_tokens"][k]
    out["target_tokens"] = jnp.sum(real if config.normalize == "real_tokens" else target_weight)
    return out
