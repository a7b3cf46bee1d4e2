"""Masked-diffusion samplers: one compiled decode loop, six selection rules.

Dimension letters: B batch, L canvas tokens, V vocabulary (tokenizer ids + [MASK]),
S steps (= the NFE cap, one function evaluation a step).

The loop (`mdm_sample`) is a pure function over `logits_fn(canvas [B,L] int32) -> [B,L,V]`; the
caller closes `logits_fn` over the encoder output and the cross-attention K/V, computed once per
utterance outside the loop. For steps s = 0, 1, ..., S-1:

  0. Start: canvas[b, i] = [MASK] for i < lengths[b], EOS beyond (frozen). A position is *live*
     while it holds [MASK]; a row is *finished* when it has no live position.
  1. logits = logits_fn(canvas), cast to float32. Forbidden ids ([MASK], pad, other specials) get
     a huge negative logit, so they are never emitted. With `masked_logits=True` (and a
     `SplitLogitsFn`: the decoder's last-block outputs, then the vocabulary projection) only the
     live positions are projected: they are gathered (in position order) into the smallest of a
     few power-of-two buckets K >= the batch's largest live count (`masked_logit_buckets`;
     `lax.switch` runs that bucket's branch), so steps 1-2 cost K instead of L positions. Every
     position is projected on its own, so the live positions get the same logits and the rule
     the same decisions; positions not projected get confidence / entropy / margin 0 (rules
     read only live positions).
  2. Per position, all in float32: the candidate token x (argmax; a sample from
     softmax(logits / temperature) when temperature > 0), its confidence p(x), the entropy H of
     the distribution (nats), and (for eb's margin proxy) the margin p1 - p2 of the top two.
  3. The rule picks which live positions commit this step (table below); at s = S-1 every live
     position commits, so the NFE cap is never exceeded.
  4. canvas[commit] = x[commit]. If the first EOS of a row now sits at j, every position > j
     becomes EOS and stops being live (nothing at or after the first committed EOS stays live).
  5. nfe_used[b] += 1 for every row that was live at the start of the step. The while loop stops
     when every row is finished (early exit) or after S steps; `fixed_steps=True` always runs S
     steps (finished rows are carried through unchanged) for benchmarks.
Output: the canvas [B,L]; the transcript is the tokens before the first EOS (`tokens_to_ids`).

Selection rules (n = live count of the row, S - s = steps left including this one):
  random  mode=count: k = ceil(n / (S - s)) live positions chosen uniformly at random (LLaDA's
          fixed count per step, recomputed from the live count so EOS truncation is absorbed).
          mode=bernoulli: each live position commits independently with probability 1/(S - s)
          (MDLM's reverse step under the linear schedule alpha_t = 1 - t).
  dfm     Euler step of discrete flow matching with a mask source and the linear scheduler
          kappa_t = t: a masked slot jumps with probability h * kappa'/(1 - kappa) = 1/(S - s),
          to a token drawn from the model's posterior (temperature 1 by default, as in DFM).
          Decoded tokens never change: under the mask-source path the exact posterior of an
          unmasked slot is a point mass on its current token, so its velocity is zero (and the
          model is never trained on unmasked slots). `random(mode=bernoulli)` is the same
          position rule with greedy tokens.
  topk    confidence top-k (MaskGIT / LLaDA "low confidence"): k = n - floor(n * g(r')/g(r)),
          r = s/S, r' = (s+1)/S, g(r) = 1 - r (linear: k = ceil(n/(S - s))) or cos(pi r / 2)
          (cosine: few tokens first, many last); at least one.
  eb      entropy-bounded (Ben-Hamu et al. 2025): sort live positions by the proxy (confidence
          descending by default, as in the MDM-ASR paper; entropy ascending or margin
          descending as options) and commit the longest prefix whose
          entropies satisfy sum(H) - max(H) <= gamma; at least one. sum - max is non-decreasing
          along the prefix, so the prefix is well defined.
  pbeb    position-biased EB (MDM-ASR): sort key confidence * exp(-lam * i), i = canvas position
          (computed as log(confidence) - lam * i, which orders identically and is invariant to
          shifting i), then eb's entropy budget.
  pbeb_apart  pbeb, but no two neighbouring slots commit in the same step: of each run of
          adjacent positions pbeb would commit together, only the leftmost does (at least one
          always commits: a run's leftmost position). With the shifted layout
          (`model.mdm_shift`: slot i is read from the output at slot i - 1), a slot committed
          beside its still-masked left neighbour is predicted without knowing that neighbour,
          and both tend to take the same word ("the the"); here the right one waits a step.
Ties in every sort break towards the earlier position. Randomness comes from one key per row
(split from `key`, or given as [B] keys), folded with the step, so a row's result never depends
on the other rows of the batch.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
LogitsFn = Callable[[Array], Array]

NEG_LOGIT = -1e9  # logit given to forbidden ids: exp underflows to exactly 0 in float32
DEFAULT_CANVAS_LENGTH = 256  # the paper's fixed canvas
DEFAULT_NFE = 32  # the paper's NFE cap
PAPER_SAMPLER = "pbeb(lam=0.2,gamma=0.05)"  # the paper's sampler and settings
DEFAULT_CANVAS_BUCKETS = (16, 32, 64, 128, 256)


class SamplerSpecError(ValueError):
    """A sampler spec string that cannot be parsed (names the valid samplers / parameters)."""


# ---------------------------------------------------------------------------------------------
# Spec strings and the registry.


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """A parsed sampler spec (hashable, so it can key jit caches). Build with `parse_sampler`.

    `values` holds the sampler's own parameters, in its registry row's order; read them as
    attributes (`config.gamma`, `config.temperature`, ...).
    """

    name: str
    values: tuple[tuple[str, Any], ...] = ()

    def __getattr__(self, key: str) -> Any:
        if key.startswith("__"):
            raise AttributeError(key)
        for name, value in self.values:
            if name == key:
                return value
        raise AttributeError(f"sampler {self.name!r} has no parameter {key!r}")

    @property
    def rule(self) -> SamplerRule:
        """This sampler's registry row."""
        return SAMPLERS[self.name]

    @property
    def family(self) -> str:
        """ "mdm" (masked diffusion), "ar" (autoregressive baseline) or "ctc"."""
        return self.rule.family

    @property
    def params(self) -> dict[str, Any]:
        """The parameters this sampler takes, with their values."""
        return dict(self.values)

    @property
    def spec(self) -> str:
        """Canonical spec string, with every parameter written out."""
        if not self.values:
            return self.name
        body = ",".join(
            f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.values
        )
        return f"{self.name}({body})"

    def __str__(self) -> str:
        return self.spec


class StepInputs(NamedTuple):
    """What a selection rule sees at one step of the loop."""

    stats: TokenStats  # candidate tokens, confidence, entropy, margin ([B,L] each)
    live: Array  # [B,L] bool positions still [MASK]
    step: Array  # [] int32 this step, 0-based
    num_steps: int  # S, the NFE cap
    uniform: Array | None  # [B,L] in [0, 1) for rules that need randomness, else None


# select(config, inputs) -> commit [B,L] bool (the loop adds the last-step fill)
SelectFn = Callable[["SamplerConfig", StepInputs], Array]


@dataclasses.dataclass(frozen=True)
class SamplerRule:
    """One row of the sampler registry.

    name: the spec name. family: "mdm", "ar" or "ctc". params: parameter -> default (a tuple
    lists the allowed choices, the first is the default); every MDM rule also takes
    `temperature`. select: MDM rules only, which live positions commit this step (the loop
    adds the last-step fill and the EOS truncation). needs_random: the rule draws uniforms
    every step (temperature > 0 always does). needs_margin: the rule reads `stats.margin`.
    """

    name: str
    family: str
    params: dict[str, Any]
    select: SelectFn | None = None
    needs_random: Callable[[SamplerConfig], bool] = lambda config: False
    needs_margin: Callable[[SamplerConfig], bool] = lambda config: False


SAMPLERS: dict[str, SamplerRule] = {}


def register_sampler(rule: SamplerRule) -> SamplerRule:
    """Adds a row to the registry (an MDM rule gets `temperature` if it does not list it)."""
    if rule.family not in ("mdm", "ar", "ctc"):
        raise ValueError(f"sampler family {rule.family!r}; choose mdm, ar or ctc")
    if rule.family == "mdm":
        if rule.select is None:
            raise ValueError(f"masked-diffusion sampler {rule.name!r} needs a select function")
        if "temperature" not in rule.params:
            rule = dataclasses.replace(rule, params={**rule.params, "temperature": 0.0})
    SAMPLERS[rule.name] = rule
    return rule


def mdm_sampler_names() -> tuple[str, ...]:
    """Names of the registered masked-diffusion samplers."""
    return tuple(n for n, rule in SAMPLERS.items() if rule.family == "mdm")


def _describe_registry() -> str:
    parts = []
    for name, rule in SAMPLERS.items():
        if not rule.params:
            parts.append(name)
            continue
        inner = ", ".join(
            f"{k}={'|'.join(v)}" if isinstance(v, tuple) else f"{k}={v}"
            for k, v in rule.params.items()
        )
        parts.append(f"{name}({inner})")
    return "; ".join(parts)


def sampler_spec_summary() -> str:
    """The registered samplers as a CLI help writes them: "pbeb(lam=..,gamma=..), dfm, ...",
    parameters named without values (`temperature`, which every MDM rule takes, left out)."""
    parts = []
    for name, rule in SAMPLERS.items():
        params = [k for k in rule.params if k != "temperature"]
        parts.append(f"{name}({','.join(f'{k}=..' for k in params)})" if params else name)
    return ", ".join(parts)


_SPEC_RE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$")


def parse_sampler(spec: str | SamplerConfig) -> SamplerConfig:
    """Parses a spec string such as "pbeb(lam=0.2, gamma=0.05)" into a `SamplerConfig`.

    Unknown names, unknown parameters, bad values or choices raise `SamplerSpecError` listing
    what is valid. A `SamplerConfig` passes through unchanged.
    """
    if isinstance(spec, SamplerConfig):
        return spec
    if not isinstance(spec, str):
        raise SamplerSpecError(f"sampler spec must be a string, got {type(spec).__name__}")
    match = _SPEC_RE.match(spec)
    if match is None:
        raise SamplerSpecError(
            f"cannot parse sampler spec {spec!r}; write NAME or NAME(key=value, ...), one of: "
            f"{_describe_registry()}"
        )
    name, body = match.group(1), match.group(2)
    if name not in SAMPLERS:
        raise SamplerSpecError(
            f"unknown sampler {name!r} in spec {spec!r}; valid samplers: {_describe_registry()}"
        )
    allowed = SAMPLERS[name].params
    values: dict[str, Any] = {k: (v[0] if isinstance(v, tuple) else v) for k, v in allowed.items()}
    for item in (body or "").split(","):
        if not item.strip():
            continue
        if "=" not in item:
            raise SamplerSpecError(f"sampler spec {spec!r}: {item.strip()!r} is not key=value")
        key, raw = (s.strip() for s in item.split("=", 1))
        if key not in allowed:
            valid = ", ".join(allowed) or "none"
            raise SamplerSpecError(
                f"sampler {name!r} has no parameter {key!r} (spec {spec!r}); valid parameters: {valid}"
            )
        default = allowed[key]
        try:
            if isinstance(default, tuple):
                if raw not in default:
                    raise ValueError
                value: Any = raw
            elif isinstance(default, int) and not isinstance(default, bool):
                value = int(raw)
            else:
                value = float(raw)
        except ValueError:
            expect = (
                "one of " + "|".join(default)
                if isinstance(default, tuple)
                else type(default).__name__
            )
            raise SamplerSpecError(
                f"sampler spec {spec!r}: {key}={raw!r} is invalid; expected {expect}"
            ) from None
        values[key] = value
    config = SamplerConfig(name=name, values=tuple(values.items()))
    _validate_values(config, spec)
    return config


# Bounds of the parameters shared by several rules: name -> (check, what it must be).
_PARAM_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "gamma": (lambda v: v >= 0, "a finite number >= 0"),
    "lam": (lambda v: v >= 0, "a finite number >= 0"),
    "temperature": (lambda v: v >= 0 and math.isfinite(v), "a finite number >= 0"),
    "size": (lambda v: v >= 1, ">= 1"),
    "length_penalty": (lambda v: v >= 0, "a finite number >= 0"),
}


def _validate_values(config: SamplerConfig, spec: str) -> None:
    for key, value in config.values:
        check, bound = _PARAM_CHECKS.get(key, (lambda v: True, ""))
        if not check(value):
            raise SamplerSpecError(f"sampler spec {spec!r}: {key}={value} must be {bound}")


# ---------------------------------------------------------------------------------------------
# Loop state and outputs.


class Trajectory(NamedTuple):
    """Per-step record of a decode (`record=True`); only the first `steps` entries are valid."""

    canvas: Array  # [S,B,L] int32 canvas after the step
    committed: Array  # [S,B,L] bool positions the rule committed at the step
    confidence: Array  # [S,B,L] float32 confidence of the candidate token
    entropy: Array  # [S,B,L] float32 entropy of the predictive distribution (nats)
    steps: Array  # [] int32 number of steps run


class DecodeState(NamedTuple):
    """The while-loop carry."""

    canvas: Array  # [B,L] int32
    step: Array  # [] int32 steps done so far
    nfe_used: Array  # [B] int32 steps each row was live for
    trajectory: Trajectory | None


class SampleOutput(NamedTuple):
    tokens: Array  # [B,L] int32 final canvas (EOS from the first EOS on)
    nfe_used: Array  # [B] int32
    trajectory: Trajectory | None


# ---------------------------------------------------------------------------------------------
# Building blocks (public for tests and the notebook).


class TokenStats(NamedTuple):
    candidate: Array  # [B,L] int32
    confidence: Array  # [B,L] float32 p(candidate)
    entropy: Array  # [B,L] float32 >= 0
    margin: Array | None  # [B,L] float32 p1 - p2


def _inverse_cdf_sample(probs: Array, uniform: Array) -> Array:
    """One token per position from probs [...,V] and one uniform [...] in [0, 1) each.

    Takes the first token whose cumulative probability reaches u * total; a zero-probability
    (forbidden) pick, possible only through float rounding at the ends, falls back to argmax.
    One uniform per position keeps the random draws O(B*L) instead of O(B*L*V).
    """
    cdf = jnp.cumsum(probs, axis=-1)
    threshold = jnp.maximum(uniform, 1e-7)[..., None] * cdf[..., -1:]
    index = jnp.sum(cdf < threshold, axis=-1)
    index = jnp.minimum(index, probs.shape[-1] - 1)
    picked = jnp.take_along_axis(probs, index[..., None], axis=-1)[..., 0]
    return jnp.where(picked > 0, index, jnp.argmax(probs, axis=-1))


def token_stats(
    logits: Array, *, temperature: float, uniform: Array | None = None, with_margin: bool = False
) -> TokenStats:
    """Candidate tokens and float32 confidence / entropy / margin from (masked) logits [B,L,V].

    temperature 0: argmax tokens, statistics of softmax(logits). temperature T > 0: tokens drawn
    from softmax(logits / T) by inverse CDF with `uniform` [B,L] in [0, 1); statistics of that
    tempered distribution.
    """
    logits = logits.astype(jnp.float32)
    if temperature > 0:
        logits = logits / temperature
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    probs = jnp.exp(log_probs)
    entropy = -jnp.sum(jnp.where(probs > 0, probs * log_probs, 0.0), axis=-1)
    entropy = jnp.maximum(entropy, 0.0)
    if temperature > 0:
        candidate = _inverse_cdf_sample(probs, uniform)
    else:
        candidate = jnp.argmax(logits, axis=-1)
    candidate = candidate.astype(jnp.int32)
    confidence = jnp.take_along_axis(probs, candidate[..., None], axis=-1)[..., 0]
    margin = None
    if with_margin:
        top2 = lax.top_k(probs, 2)[0]
        margin = top2[..., 0] - top2[..., 1]
    return TokenStats(candidate, confidence, entropy, margin)


def pbeb_scores(confidence: Array, positions: Array, lam: float) -> Array:
    """PBEB sort key, log(confidence * exp(-lam * i)) = log(confidence) - lam * i (higher first).

    A shift of the position origin adds the same constant to every key, so the order is
    unchanged.
    """
    log_conf = jnp.log(jnp.maximum(confidence.astype(jnp.float32), 1e-30))
    return log_conf - lam * positions.astype(jnp.float32)


def entropy_budget_excess(sorted_entropy: Array) -> Array:
    """sum(H) - max(H) over each prefix of entropies in commit order [..., L] (non-decreasing)."""
    return jnp.cumsum(sorted_entropy, axis=-1) - lax.cummax(
        sorted_entropy, axis=sorted_entropy.ndim - 1
    )


def _order_and_rank(score: Array, live: Array) -> tuple[Array, Array]:
    """Sort live positions by score (descending, ties to the earlier position), dead ones last."""
    score = jnp.where(live, jnp.maximum(score, -1e30), -jnp.inf)
    order = jnp.argsort(-score, axis=-1, stable=True)  # [B,L] position at each rank
    rank = jnp.argsort(order, axis=-1, stable=True)  # [B,L] rank of each position
    return order, rank


def _budget_count(entropy: Array, live: Array, order: Array, gamma: float) -> Array:
    """Length of the longest prefix (in `order`) with sum(H) - max(H) <= gamma; at least 1."""
    sorted_entropy = jnp.take_along_axis(jnp.where(live, entropy, 0.0), order, axis=-1)
    sorted_live = jnp.take_along_axis(live, order, axis=-1)
    ok = (entropy_budget_excess(sorted_entropy) <= gamma) & sorted_live
    count = jnp.sum(jnp.cumprod(ok.astype(jnp.int32), axis=-1), axis=-1)
    return jnp.maximum(count, 1)


def schedule_count(n_live: Array, step: Array, num_steps: int, schedule: str) -> Array:
    """How many of n_live [B] positions commit at `step` (of num_steps) under a schedule; >= 1."""
    steps_left = num_steps - step
    if schedule == "linear":
        k = (n_live + steps_left - 1) // steps_left  # ceil(n / (S - s)), exact in integers
    elif schedule == "cosine":
        g = lambda r: jnp.cos(0.5 * jnp.pi * r)
        ratio = g((step + 1) / num_steps) / jnp.maximum(g(step / num_steps), 1e-12)
        ratio = jnp.clip(ratio, 0.0, 1.0)
        k = n_live - jnp.floor(n_live * ratio).astype(jnp.int32)
    else:
        raise SamplerSpecError(f"unknown schedule {schedule!r}; choose linear or cosine")
    return jnp.clip(k, 1, jnp.maximum(n_live, 1)).astype(jnp.int32)


def _bernoulli_commits(live: Array, step: Array, num_steps: int, uniform: Array) -> Array:
    """Each live position commits with probability 1/(S - s) (MDLM / DFM under alpha_t = 1 - t)."""
    probability = 1.0 / (num_steps - step).astype(jnp.float32)
    return live & (uniform < probability)


def _top_count(score: Array, live: Array, count: Array) -> Array:
    """The `count` [B] best-scored live positions of each row."""
    _, rank = _order_and_rank(score, live)
    return live & (rank < count[:, None])


def _budget_commits(score: Array, stats: TokenStats, live: Array, gamma: float) -> Array:
    """The longest prefix in score order within the entropy budget gamma (at least one)."""
    order, rank = _order_and_rank(score, live)
    count = _budget_count(stats.entropy, live, order, gamma)
    return live & (rank < count[:, None])


def _n_live(live: Array) -> Array:
    return jnp.sum(live, axis=-1).astype(jnp.int32)  # [B]


def select_random(config: SamplerConfig, x: StepInputs) -> Array:
    """random: ceil(n / (S - s)) live positions drawn uniformly, or (mode=bernoulli) each
    live position with probability 1/(S - s)."""
    if config.mode == "bernoulli":
        return _bernoulli_commits(x.live, x.step, x.num_steps, x.uniform)
    count = schedule_count(_n_live(x.live), x.step, x.num_steps, "linear")
    return _top_count(x.uniform, x.live, count)


def select_dfm(config: SamplerConfig, x: StepInputs) -> Array:
    """dfm: each live position with probability 1/(S - s) (DFM's Euler step, mask source)."""
    return _bernoulli_commits(x.live, x.step, x.num_steps, x.uniform)


def select_topk(config: SamplerConfig, x: StepInputs) -> Array:
    """topk: the k most confident live positions, k from the linear or cosine schedule."""
    count = schedule_count(_n_live(x.live), x.step, x.num_steps, config.schedule)
    return _top_count(x.stats.confidence, x.live, count)


def select_eb(config: SamplerConfig, x: StepInputs) -> Array:
    """eb: the longest prefix in proxy order within the entropy budget gamma."""
    score = {
        "entropy": lambda: -x.stats.entropy,
        "confidence": lambda: x.stats.confidence,
        "margin": lambda: x.stats.margin,
    }[config.proxy]()
    return _budget_commits(score, x.stats, x.live, config.gamma)


def select_pbeb(config: SamplerConfig, x: StepInputs) -> Array:
    """pbeb: eb's budget over the sort key confidence * exp(-lam * i)."""
    positions = jnp.broadcast_to(jnp.arange(x.live.shape[-1])[None, :], x.live.shape)
    score = pbeb_scores(x.stats.confidence, positions, config.lam)
    return _budget_commits(score, x.stats, x.live, config.gamma)


def select_pbeb_apart(config: SamplerConfig, x: StepInputs) -> Array:
    """pbeb_apart: pbeb's commits, but of a run of neighbouring slots it would commit together
    only the leftmost commits; the others wait for the next step and see it."""
    commit = select_pbeb(config, x)
    left_commits = jnp.pad(commit[:, :-1], ((0, 0), (1, 0)))  # slot i-1 commits this step
    return commit & ~left_commits


# The registry: one row per sampler (see `SamplerRule`). A new selection rule is one select
# function and one `register_sampler` row, here or in any module imported before decoding.
for _rule in (
    SamplerRule("random", "mdm", {"mode": ("count", "bernoulli")}, select_random,
                needs_random=lambda c: True),
    SamplerRule("dfm", "mdm", {"temperature": 1.0}, select_dfm, needs_random=lambda c: True),
    SamplerRule("topk", "mdm", {"schedule": ("linear", "cosine")}, select_topk),
    SamplerRule("eb", "mdm", {"gamma": 0.05, "proxy": ("confidence", "entropy", "margin")},
                select_eb, needs_margin=lambda c: c.proxy == "margin"),
    SamplerRule("pbeb", "mdm", {"lam": 0.2, "gamma": 0.05}, select_pbeb),
    SamplerRule("pbeb_apart", "mdm", {"lam": 0.2, "gamma": 0.05}, select_pbeb_apart),
    SamplerRule("ar_greedy", "ar", {}),
    SamplerRule("ar_beam", "ar", {"size": 4, "length_penalty": 1.0}),
    SamplerRule("ctc_greedy", "ctc", {}),
):  # fmt: skip
    register_sampler(_rule)


def select_commits(
    config: SamplerConfig,
    stats: TokenStats,
    live: Array,
    step: Array,
    num_steps: int,
    uniform: Array | None = None,
) -> Array:
    """The positions [B,L] bool that `config`'s rule commits at `step` (before the last-step fill).

    `uniform` [B,L] in [0, 1) drives the random rules (random, dfm); others ignore it.
    """
    rule = config.rule
    if rule.select is None:
        raise SamplerSpecError(
            f"{config.name!r} is not a masked-diffusion sampler ({mdm_sampler_names()})"
        )
    return live & rule.select(config, StepInputs(stats, live, step, num_steps, uniform))


def truncate_after_eos(canvas: Array, eos_id: int) -> Array:
    """Every position after a row's first EOS becomes EOS. canvas [B,L] -> [B,L]."""
    is_eos = canvas == eos_id
    length = canvas.shape[-1]
    first = jnp.where(jnp.any(is_eos, axis=-1), jnp.argmax(is_eos, axis=-1), length)
    return jnp.where(jnp.arange(length)[None, :] > first[:, None], eos_id, canvas)


def _row_keys(key: Array, batch_size: int) -> Array:
    """One key per row: `key` split B ways, or `key` itself when it already holds B keys."""
    key = jnp.asarray(key)
    typed = jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
    per_row = key.ndim == (1 if typed else 2)
    if per_row:
        if key.shape[0] != batch_size:
            raise ValueError(f"key holds {key.shape[0]} row keys but batch_size={batch_size}")
        return key
    return jax.random.split(key, batch_size)


class SplitLogitsFn(NamedTuple):
    """A `logits_fn` in two parts, so the loop can project only the live positions.

    hidden: canvas [B,L] int32 -> the decoder's last-block outputs [B,L,D].
    project: (hidden [B,K,D] gathered at `positions`, positions [B,K] int32) -> logits [B,K,V];
      every position on its own (layer norm + output layer), so it gives those positions' logits
      of the full computation. `positions` lets a caller apply per-position logit rules.
    Called with a canvas it is a plain `logits_fn` (every position projected).
    """

    hidden: Callable[[Array], Array]
    project: Callable[[Array, Array], Array]

    def __call__(self, canvas: Array) -> Array:
        positions = jnp.broadcast_to(jnp.arange(canvas.shape[1], dtype=jnp.int32), canvas.shape)
        return self.project(self.hidden(canvas), positions)


def masked_logit_buckets(canvas_length: int, smallest: int = 8) -> tuple[int, ...]:
    """Gather sizes for `masked_logits`: powers of two from `smallest` below L, then L itself.

    A few sizes keep the compiled branches few (one projection each); a power of two wastes at
    most half of the gathered slots.
    """
    if canvas_length < 1:
        raise ValueError(f"canvas_length={canvas_length} must be >= 1")
    sizes = []
    size = max(1, int(smallest))
    while size < canvas_length:
        sizes.append(size)
        size *= 2
    return (*sizes, int(canvas_length))


def _masked_token_stats(
    logits_fn: SplitLogitsFn,
    canvas: Array,
    live: Array,
    forbidden: Array,
    buckets: Sequence[int],
    *,
    temperature: float,
    uniform: Array | None,
    with_margin: bool,
) -> TokenStats:
    """`token_stats` of the live positions only (the rest: candidate = canvas, stats 0).

    The live positions of each row, in position order, are gathered into the smallest bucket
    K >= the batch's largest live count; `lax.switch` runs only that bucket's projection.
    """
    batch_size, length = canvas.shape
    hidden = logits_fn.hidden(canvas)  # [B,L,D]
    order = jnp.argsort(~live, axis=-1, stable=True).astype(jnp.int32)  # live positions first
    most_live = jnp.max(jnp.sum(live, axis=-1))
    sizes = jnp.asarray(buckets, jnp.int32)
    branch = jnp.minimum(jnp.searchsorted(sizes, most_live), len(buckets) - 1)
    rows = jnp.arange(batch_size)[:, None]

    def gathered(size: int) -> Callable[..., TokenStats]:
        def run(hidden: Array, order: Array, canvas: Array, uniform: Array | None) -> TokenStats:
            positions = order[:, :size]  # [B,K]
            picked = jnp.take_along_axis(hidden, positions[..., None], axis=1)  # [B,K,D]
            logits = logits_fn.project(picked, positions).astype(jnp.float32)  # [B,K,V]
            logits = logits.at[..., forbidden].set(NEG_LOGIT)
            stats = token_stats(
                logits,
                temperature=temperature,
                uniform=None if uniform is None else jnp.take_along_axis(uniform, positions, 1),
                with_margin=with_margin,
            )
            zeros = jnp.zeros((batch_size, length), jnp.float32)
            scatter = lambda full, part: full.at[rows, positions].set(part)
            return TokenStats(
                scatter(canvas, stats.candidate),
                scatter(zeros, stats.confidence),
                scatter(zeros, stats.entropy),
                None if stats.margin is None else scatter(zeros, stats.margin),
            )

        return run

    return lax.switch(branch, [gathered(int(k)) for k in buckets], hidden, order, canvas, uniform)


# ---------------------------------------------------------------------------------------------
# The loop.


def mdm_sample(
    logits_fn: LogitsFn,
    batch_size: int,
    canvas_length: int,
    *,
    spec: str | SamplerConfig,
    nfe: int,
    key: Array,
    mask_id: int,
    eos_id: int,
    forbidden_ids: Sequence[int] = (),
    lengths: Array | None = None,
    record: bool = False,
    fixed_steps: bool = False,
    masked_logits: bool = False,
    logit_buckets: Sequence[int] | None = None,
) -> SampleOutput:
    """Decodes a batch with a masked-diffusion sampler (see the module docstring).

    Args:
      logits_fn: canvas [B,L] int32 -> logits [B,L,V]; must treat rows independently.
      batch_size, canvas_length: B and L (static).
      spec: sampler spec string or `SamplerConfig` (an MDM sampler).
      nfe: the NFE cap S >= 1 (static); every mask is filled by step S.
      key: a PRNG key, or [B] row keys (then row b's randomness depends on key[b] only).
      mask_id, eos_id: ids of [MASK] and EOS.
      forbidden_ids: ids never to emit besides [MASK] (pad, BOS, other specials; not EOS).
      lengths: [B] per-row canvas lengths (<= L); positions beyond are EOS from the start.
      record: also return the per-step `Trajectory` (buffers [S,B,L]).
      fixed_steps: run exactly S steps (no early exit), for benchmarks; same tokens.
      masked_logits: project only the live positions onto the vocabulary (`logits_fn` must be
        a `SplitLogitsFn`); same decisions, recorded stats 0 at positions not projected.
      logit_buckets: gather sizes for masked_logits (default `masked_logit_buckets(L)`; the
        whole canvas L is always the last).
    Returns:
      SampleOutput(tokens [B,L] int32, nfe_used [B] int32, trajectory or None).
    """
    config = parse_sampler(spec)
    if config.family != "mdm":
        raise SamplerSpecError(
            f"mdm_sample needs a masked-diffusion sampler {mdm_sampler_names()}, got "
            f"{config.spec!r}"
        )
    if not isinstance(nfe, (int, np.integer)) or nfe < 1:
        raise ValueError(f"nfe={nfe!r} must be a positive integer (the maximum number of steps)")
    if canvas_length < 1 or batch_size < 1:
        raise ValueError(f"batch_size={batch_size} and canvas_length={canvas_length} must be >= 1")
    forbidden = sorted({int(i) for i in forbidden_ids} | {int(mask_id)})
    if eos_id in forbidden:
        raise ValueError(f"forbidden_ids contains eos_id={eos_id}; EOS must stay emittable")
    if masked_logits:
        if not isinstance(logits_fn, SplitLogitsFn):
            raise TypeError(
                "masked_logits=True needs logits_fn as a SplitLogitsFn(hidden, project), got "
                f"{type(logits_fn).__name__}"
            )
        buckets = tuple(sorted({int(k) for k in logit_buckets or ()})) or masked_logit_buckets(
            canvas_length
        )
        if buckets[0] < 1:
            raise ValueError(f"logit_buckets={buckets} must be positive gather sizes")
        buckets = tuple(k for k in buckets if k < canvas_length) + (canvas_length,)
    nfe = int(nfe)
    shape = (batch_size, canvas_length)
    position = jnp.arange(canvas_length, dtype=jnp.int32)
    if lengths is None:
        lengths = jnp.full((batch_size,), canvas_length, jnp.int32)
    lengths = jnp.asarray(lengths, jnp.int32)
    canvas = jnp.where(position[None, :] < lengths[:, None], mask_id, eos_id).astype(jnp.int32)
    row_keys = _row_keys(key, batch_size)
    forbidden_arr = jnp.asarray(forbidden, jnp.int32)
    needs_random = config.temperature > 0 or config.rule.needs_random(config)

    trajectory = None
    if record:
        trajectory = Trajectory(
            canvas=jnp.zeros((nfe, *shape), jnp.int32),
            committed=jnp.zeros((nfe, *shape), bool),
            confidence=jnp.zeros((nfe, *shape), jnp.float32),
            entropy=jnp.zeros((nfe, *shape), jnp.float32),
            steps=jnp.zeros((), jnp.int32),
        )
    state = DecodeState(
        canvas, jnp.zeros((), jnp.int32), jnp.zeros((batch_size,), jnp.int32), trajectory
    )

    def cond(state: DecodeState) -> Array:
        running = state.step < nfe
        if fixed_steps:
            return running
        return running & jnp.any(state.canvas == mask_id)

    def body(state: DecodeState) -> DecodeState:
        live = state.canvas == mask_id  # [B,L]
        # One draw per row and step: [..., 0] samples tokens, [..., 1] picks positions.
        uniform = None
        if needs_random:
            uniform = jax.vmap(
                lambda k: jax.random.uniform(jax.random.fold_in(k, state.step), (canvas_length, 2))
            )(row_keys)  # [B,L,2]
        stat_options = dict(
            temperature=config.temperature,
            uniform=None if uniform is None else uniform[..., 0],
            with_margin=config.rule.needs_margin(config),
        )
        if masked_logits:
            stats = _masked_token_stats(
                logits_fn, state.canvas, live, forbidden_arr, buckets, **stat_options
            )
        else:
            logits = logits_fn(state.canvas).astype(jnp.float32)  # [B,L,V]
            logits = logits.at[..., forbidden_arr].set(NEG_LOGIT)
            stats = token_stats(logits, **stat_options)
        commit = select_commits(
            config, stats, live, state.step, nfe, None if uniform is None else uniform[..., 1]
        )
        commit = jnp.where(state.step == nfe - 1, live, commit & live)
        new_canvas = jnp.where(commit, stats.candidate, state.canvas)
        new_canvas = truncate_after_eos(new_canvas, eos_id)
        nfe_used = state.nfe_used + jnp.any(live, axis=-1).astype(jnp.int32)
        traj = state.trajectory
        if traj is not None:
            traj = Trajectory(
                canvas=traj.canvas.at[state.step].set(new_canvas),
                committed=traj.committed.at[state.step].set(commit),
                confidence=traj.confidence.at[state.step].set(stats.confidence),
                entropy=traj.entropy.at[state.step].set(stats.entropy),
                steps=state.step + 1,
            )
        return DecodeState(new_canvas, state.step + 1, nfe_used, traj)

    final = lax.while_loop(cond, body, state)
    return SampleOutput(final.canvas, final.nfe_used, final.trajectory)


# ---------------------------------------------------------------------------------------------
# Outputs and canvas sizing.


def tokens_to_ids(tokens: Array | np.ndarray, eos_id: int) -> list[list[int]]:
    """Per-row id lists: the tokens before each row's first EOS. tokens [B,L] -> B lists."""
    rows = np.asarray(tokens)
    out = []
    for row in rows:
        hits = np.flatnonzero(row == eos_id)
        out.append([int(t) for t in row[: hits[0] if hits.size else row.shape[0]]])
    return out


def adaptive_canvas_length(
    seconds: float | Sequence[float] | np.ndarray,
    *,
    tokens_per_second: float = 10.0,
    buckets: Sequence[int] = DEFAULT_CANVAS_BUCKETS,
) -> int:
    """Canvas length for audio of `seconds` (the batch's longest), from a tokens-per-second bound.

    needed = ceil(max(seconds) * tokens_per_second) + 1 (room for EOS), rounded up to the
    smallest bucket that holds it (the largest bucket if none does: longer transcripts are cut).
    Few buckets keep the number of compiled shapes small. From encoder frames, pass
    seconds = frames * seconds_per_frame.
    """
    if tokens_per_second <= 0:
        raise ValueError(f"tokens_per_second={tokens_per_second} must be > 0")
    if not buckets:
        raise ValueError("buckets must hold at least one canvas length")
    longest = float(np.max(np.asarray(seconds, np.float64))) if np.size(seconds) else 0.0
    needed = math.ceil(max(longest, 0.0) * tokens_per_second) + 1
    ordered = sorted(int(b) for b in buckets)
    for bucket in ordered:
        if bucket >= needed:
            return bucket
    return ordered[-1]


def adaptive_row_lengths(
    seconds: Sequence[float] | np.ndarray, canvas_length: int, *, tokens_per_second: float = 10.0
) -> np.ndarray:
    """Per-row canvas lengths [B] int32: ceil(seconds * tokens_per_second) + 1, at most L."""
    need = np.ceil(np.asarray(seconds, np.float64) * tokens_per_second).astype(np.int64) + 1
    return np.minimum(need, canvas_length).astype(np.int32)
