"""`decode`: the one entry point from a batch of features to token ids, for every sampler.

Every caller (eval, transcribe, the notebook, benchmarks) goes through `decode(model, params,
batch, spec, nfe, key)`. Inside one jit-compiled function (cached per sampler config, NFE,
canvas / length settings, and by jax per input shapes):
  1. encode the features once: (encoded [B,S,D], enc_mask [B,S]);
  2. compute every decoder layer's cross-attention K/V once (`mdm_cross_kv` / `ar_cross_kv`);
  3. run the sampler the spec names:
     MDM (`random`, `dfm`, `topk`, `eb`, `pbeb`): `diffusion.samplers.mdm_sample` over
       logits_fn(canvas) = model.mdm_logits(canvas, cross K/V), canvas [B,L], computed in two
       parts (`model.mdm_hidden`, then `model.mdm_project`) so that `masked_logits=True` can
       project only the still-masked slots; `adaptive_canvas="ctc"` sizes the canvas from
       `model.ctc_logits` first (one compiled branch per canvas bucket);
     `ar_greedy` / `ar_beam(size=K)`: `ar.ar_greedy` / `ar.ar_beam` over `model.ar_step` with an
       explicit KV cache (encoder rows repeated K times for beam search);
     `ctc_greedy`: `ctc.ctc_greedy_tokens` on `model.ctc_logits`.
Ids never emitted: [MASK], pad, the prompt ids (BOS, Whisper's task tokens) and any
`forbidden_ids` given (e.g. a tokenizer's other special ids; EOS is always allowed except in
CTC output, which has none). Padding examples (`example_mask` False) get an empty canvas and
cost no step. Each row's random key is `fold_in(key, batch["index"][row])`, so a row decodes
the same whatever batch it lands in.

Precision: `decode(..., dtype="bfloat16")` (or `with_decoding_dtype` / `checkpoint_with_dtype`
once, as eval and transcribe do) runs weights and activations in bfloat16; attention softmax and
layer norms (nn/layers.py), AR log-probabilities and the samplers' confidence and entropy stay
float32.

Legend: B batch, T frames, M mel bins, S encoder frames, L canvas / output tokens, K beams.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from mdm_asr_jax import ar, ctc
from mdm_asr_jax.audio import FRAME_SECONDS
from mdm_asr_jax.diffusion import samplers
from mdm_asr_jax.diffusion.samplers import NEG_LOGIT
from mdm_asr_jax.text import Tokenizer

Array = jax.Array


class DecodeOutput(NamedTuple):
    """What `decode` returns (host values)."""

    ids: list[list[int]]  # per row: the transcript ids (before EOS; no special ids)
    nfe_used: np.ndarray  # [B] int32 decoder evaluations a row used (MDM steps; AR tokens
    #   incl. EOS; CTC 1)
    tokens: np.ndarray  # [B,L] int32 raw output (MDM canvas / AR tokens / packed CTC tokens)
    spec: str  # canonical sampler spec
    texts: list[str] | None  # tokenizer.decode(ids) per row when a tokenizer was given
    trajectory: samplers.Trajectory | None  # MDM with record=True (numpy arrays)


def _variables(params: Any) -> dict[str, Any]:
    if isinstance(params, Mapping) and set(params) == {"params"}:
        variables = dict(params)
    elif isinstance(params, Mapping) and "params" in params:
        variables = dict(params)  # e.g. {"params", "batch_stats"}
    else:
        variables = {"params": params}
    return nn.meta.unbox(variables)


DECODING_DTYPES = ("float32", "bfloat16")


def _check_dtype(dtype: Any) -> str:
    name = jnp.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in DECODING_DTYPES:
        raise ValueError(f"decoding dtype {dtype!r}: choose one of {DECODING_DTYPES}")
    return name


def cast_params(params: Any, dtype: str) -> Any:
    """Every floating leaf of the parameters in `dtype` (a {"params": ...} dict: that part only,
    so e.g. batch statistics keep their precision); integer leaves unchanged."""
    target = jnp.dtype(_check_dtype(dtype))
    if isinstance(params, Mapping) and "params" in params:
        return {**params, "params": cast_params(params["params"], dtype)}

    def cast(leaf: Any) -> Any:
        if not jnp.issubdtype(leaf.dtype, jnp.floating) or leaf.dtype == target:
            return leaf
        return leaf.astype(target)  # numpy leaves cast through ml_dtypes, jax leaves on device

    return jax.tree.map(cast, nn.meta.unbox(params))


def with_decoding_dtype(model_config: Any, params: Any, dtype: str) -> tuple[Any, Any]:
    """(model config computing in `dtype`, parameters cast to `dtype`): bf16 decoding.

    Weights and activations in `dtype`; softmax, layer norms, log-probabilities, confidence and
    entropy stay float32 (the layers and samplers compute them so). Cast once, decode many.
    """
    dtype = _check_dtype(dtype)
    return dataclasses.replace(model_config, dtype=dtype), cast_params(params, dtype)


def checkpoint_with_dtype(checkpoint: Any, dtype: str) -> Any:
    """A loaded checkpoint (`model_config`, `params` fields) that decodes in `dtype`; the config's
    `dtype` then says so wherever it is reported (e.g. the eval JSON)."""
    if _check_dtype(dtype) == checkpoint.model_config.dtype:
        return checkpoint
    model_config, params = with_decoding_dtype(checkpoint.model_config, checkpoint.params, dtype)
    return checkpoint._replace(model_config=model_config, params=params)


_CAST_CACHE: dict[str, tuple[Any, Any]] = {}  # dtype -> (the params given, their cast)


def _params_in(params: Any, dtype: str) -> Any:
    """`cast_params`, remembering the last tree per dtype so repeated decode() calls with the
    same parameters cast them once (the reference to the given tree keeps its id valid)."""
    cached = _CAST_CACHE.get(dtype)
    if cached is not None and cached[0] is params:
        return cached[1]
    cast = cast_params(params, dtype)
    _CAST_CACHE[dtype] = (params, cast)
    return cast


def _forbidden(config: Any, extra: Sequence[int], family: str) -> tuple[int, ...]:
    ids = {config.pad_id, config.mask_id, *config.prompt_ids, *extra}
    if family == "ctc":
        ids |= {config.eos_id}
        ids.discard(config.pad_id)  # the blank is handled by the collapse
    else:
        ids.discard(config.eos_id)
    return tuple(sorted(int(i) for i in ids))


def _check_heads(model_config: Any, sampler: samplers.SamplerConfig) -> None:
    need = {"mdm": "mdm_decoder", "ar": "ar_decoder", "ctc": "ctc"}[sampler.family]
    if not getattr(model_config, need):
        raise ValueError(
            f"sampler {sampler.spec!r} needs the model's {need}, which this model does not have"
        )


@functools.lru_cache(maxsize=64)
def _compiled(
    model: nn.Module,
    sampler: samplers.SamplerConfig,
    nfe: int,
    length: int,
    forbidden: tuple[int, ...],
    record: bool,
    fixed_steps: bool,
    begin_forbidden: tuple[int, ...] = (),
    forced_lengths: bool = False,
    masked_logits: bool = False,
    ctc_buckets: tuple[int, ...] = (),
) -> Any:
    """The jitted decode for one (model, sampler, NFE, canvas/max length, flags)."""
    config = model.config
    eos_id = config.eos_id

    def encode(variables, features, feature_mask):
        return model.apply(variables, features, feature_mask, method=model.encode)

    def run_mdm(variables, features, feature_mask, row_keys, row_lengths, prompt):
        encoded, enc_mask = encode(variables, features, feature_mask)
        cross_kv = model.apply(variables, encoded, method=model.mdm_cross_kv)

        def hidden(canvas):  # [B,L] -> [B,L,D]
            return model.apply(
                variables, canvas, None, enc_mask, cross_kv, prompt, method=model.mdm_hidden
            )

        def project(hidden, positions):  # [B,K,D], [B,K] -> [B,K,V]
            logits = model.apply(variables, hidden, method=model.mdm_project)
            if forced_lengths:  # EOS never wins inside a row's target length
                inside = positions < row_lengths[:, None]  # [B,K]
                eos = jnp.where(inside, jnp.asarray(NEG_LOGIT, logits.dtype), logits[..., eos_id])
                logits = logits.at[..., eos_id].set(eos)
            return logits

        def sample(canvas_length, lengths):
            return samplers.mdm_sample(
                samplers.SplitLogitsFn(hidden, project),
                features.shape[0],
                canvas_length,
                spec=sampler,
                nfe=nfe,
                key=row_keys,
                mask_id=config.mask_id,
                eos_id=config.eos_id,
                forbidden_ids=forbidden,
                lengths=lengths,
                record=record,
                fixed_steps=fixed_steps,
                masked_logits=masked_logits,
            )

        if not ctc_buckets:
            out = sample(length, row_lengths)
            return out.tokens, out.nfe_used, out.trajectory
        # Canvas from the CTC head's transcript length: each row's canvas holds its CTC length
        # plus slack and EOS; the batch runs in the smallest bucket holding its longest row.
        ctc_logits = model.apply(variables, encoded, method=model.ctc_logits)
        _, ctc_lengths = ctc.ctc_greedy_tokens(ctc_logits, enc_mask, config.pad_id, forbidden)
        need = ctc_canvas_lengths(ctc_lengths)
        need = jnp.where(row_lengths > 0, jnp.minimum(need, length), 0)  # padding rows: none
        sizes = jnp.asarray(ctc_buckets, jnp.int32)
        branch = jnp.minimum(jnp.searchsorted(sizes, jnp.max(need)), len(ctc_buckets) - 1)

        def bucket(size):
            def run(need):
                out = sample(size, jnp.minimum(need, size))
                tokens = jnp.pad(out.tokens, ((0, 0), (0, length - size)), constant_values=eos_id)
                return tokens, out.nfe_used

            return run

        tokens, nfe_used = lax.switch(branch, [bucket(int(k)) for k in ctc_buckets], need)
        return tokens, nfe_used, None

    def run_ar(variables, features, feature_mask, row_keys, row_lengths, prompt):
        del row_keys  # AR decoding is deterministic and runs to EOS
        encoded, enc_mask = encode(variables, features, feature_mask)
        batch = features.shape[0]
        beams = sampler.size if sampler.name == "ar_beam" else 1
        cross_kv = model.apply(variables, encoded, method=model.ar_cross_kv)
        if beams > 1:  # row b * K + k is beam k of example b
            repeat = functools.partial(jnp.repeat, repeats=beams, axis=0)
            cross_kv, enc_mask = jax.tree.map(repeat, cross_kv), repeat(enc_mask)
        cache = model.apply(
            variables, batch * beams, len(config.prompt_ids) + length, method=model.ar_init_cache
        )

        def step_fn(tokens, position, cache):
            logits, cache = model.apply(
                variables, tokens, position, cache, cross_kv, enc_mask, method=model.ar_step
            )
            if forced_lengths:  # row b: EOS blocked before output row_lengths[b], then forced
                # The last logits predict output index position + (tokens fed) - prompt.
                index = position + tokens.shape[1] - len(config.prompt_ids)
                before = jnp.repeat(index < row_lengths, beams)[:, None]  # [B*K, 1]
                is_eos = jnp.arange(logits.shape[-1]) == eos_id  # [V]
                blocked = jnp.where(before, is_eos[None, :], ~is_eos[None, :])  # [B*K, V]
                last = jnp.where(blocked, jnp.asarray(NEG_LOGIT, logits.dtype), logits[:, -1])
                logits = logits.at[:, -1].set(last)
            return logits, cache

        common = dict(
            prompt_ids=config.prompt_ids if prompt is None else prompt,
            batch_size=batch,
            max_len=length,
            eos_id=config.eos_id,
            forbidden_ids=forbidden,
            begin_forbidden_ids=begin_forbidden,
        )
        if beams > 1:
            out = ar.ar_beam(
                step_fn, cache, beam_size=beams, length_penalty=sampler.length_penalty, **common
            )
        else:
            out = ar.ar_greedy(step_fn, cache, **common)
        return out.tokens, jnp.minimum(out.lengths + 1, length), None

    def run_ctc(variables, features, feature_mask, row_keys, row_lengths, prompt):
        del row_keys, row_lengths, prompt
        encoded, enc_mask = encode(variables, features, feature_mask)
        logits = model.apply(variables, encoded, method=model.ctc_logits)
        tokens, lengths = ctc.ctc_greedy_tokens(logits, enc_mask, config.pad_id, forbidden)
        # Mark the end with EOS so the output reads like the other samplers'.
        ended = jnp.arange(tokens.shape[1])[None] >= lengths[:, None]
        tokens = jnp.where(ended, config.eos_id, tokens)
        return tokens, jnp.ones_like(lengths), None

    run = {"mdm": run_mdm, "ar": run_ar, "ctc": run_ctc}[sampler.family]
    return jax.jit(run)


CTC_CANVAS_SLACK = (0.25, 2)  # canvas = CTC tokens * (1 + 0.25) + 2, then EOS


def ctc_canvas_lengths(ctc_lengths: Array) -> Array:
    """Per-row canvas [B] for `adaptive_canvas="ctc"`: the CTC greedy transcript's length
    n plus slack for what CTC drops (ceil(0.25 n) + 2 tokens), plus one slot for EOS."""
    rate, extra = CTC_CANVAS_SLACK
    n = ctc_lengths.astype(jnp.int32)
    return n + jnp.ceil(rate * n).astype(jnp.int32) + extra + 1


def _row_keys(key: Array | int | None, batch: Mapping[str, Any], batch_size: int) -> Array:
    if key is None:
        key = 0
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    if "index" in batch:
        index = jnp.asarray(batch["index"], jnp.int32)
        return jax.vmap(lambda i: jax.random.fold_in(key, i))(index)
    return jax.random.split(key, batch_size)


def decode(
    model: nn.Module,
    params: Any,
    batch: Mapping[str, Any],
    spec: str | samplers.SamplerConfig,
    nfe: int | None = samplers.DEFAULT_NFE,
    key: Array | int | None = None,
    *,
    canvas_length: int | None = None,
    adaptive_canvas: bool | str = False,
    tokens_per_second: float = 10.0,
    canvas_buckets: Sequence[int] = samplers.DEFAULT_CANVAS_BUCKETS,
    max_len: int | None = None,
    forbidden_ids: Sequence[int] = (),
    tokenizer: Tokenizer | None = None,
    record: bool = False,
    fixed_steps: bool = False,
    begin_forbidden_ids: Sequence[int] = (),
    target_lengths: Sequence[int] | np.ndarray | None = None,
    dtype: str | None = None,
    masked_logits: bool = False,
) -> DecodeOutput:
    """Decodes a batch with any sampler spec; see the module docstring.

    Args:
      model: an `ASRModel`; params: its parameters ({"params": ...} or the inner tree).
      batch: `features` [B,T,M], `feature_mask` [B,T]; optional `example_mask` [B] (padding rows
        are not decoded), `index` [B] (per-row random keys), `seconds` [B] (adaptive canvas),
        `prompt` [B, P] (each row's decoder prompt, e.g. a multilingual Whisper's language per
        utterance, as the data pipeline gives it; default the model's `prompt_ids`).
      spec: sampler spec string ("pbeb(lam=0.2,gamma=0.05)", "ar_beam(size=4)", ...).
      nfe: NFE cap for MDM samplers (ignored by AR / CTC).
      key: PRNG key or int seed for the random samplers (random, dfm, temperature > 0).
      canvas_length: MDM canvas L; default = the decoder's max_length minus the prompt (the
        canvas the model was trained with; the paper uses 256).
      adaptive_canvas: True or "seconds": pick L from the audio length instead
        (ceil(seconds * tokens_per_second) + 1 rounded up to `canvas_buckets`, at most
        `canvas_length`), and give each row its own length (positions beyond are EOS from the
        start). "ctc": from the model's CTC head instead, inside the compiled decode: row
        length = CTC greedy tokens + ceil(0.25 x that) + 2 + EOS (`ctc_canvas_lengths`), the
        batch's canvas = the smallest of `canvas_buckets` (up to `canvas_length`) holding its
        longest row, one compiled branch per bucket (`lax.switch`); record=True is not
        supported with it.
      max_len: AR output tokens at most; default = the AR decoder's max_length minus the prompt.
      forbidden_ids: more ids never to emit (e.g. `tokenizer.special_ids`; EOS is ignored here).
      begin_forbidden_ids: AR only: ids blocked at the first generated token (Whisper's
        `suppress_begin_ids`: " " and end-of-text), allowed afterwards.
      tokenizer: if given, `texts` holds tokenizer.decode(ids) per row.
      record: MDM only: return the per-step trajectory.
      fixed_steps: MDM only: always run `nfe` steps (no early exit), for benchmarks.
      target_lengths: [B] ints, for benchmarks at real transcript lengths with random weights:
        every row outputs exactly this many tokens. AR: EOS is ruled out before output index
        target and forced at it (the loop then stops as it would at a real EOS). MDM: the canvas
        is the smallest of `canvas_buckets` holding max(target) + 1 (capped at the canvas
        length), each row's positions from its target on are EOS from the start (as with
        `adaptive_canvas`), and EOS is ruled out before them. CTC: not supported.
      dtype: "bfloat16" or "float32": decode with weights and activations in this dtype (see the
        module docstring); None = the model's. The cast parameters are remembered for the next
        call with the same `params` object; to decode many batches, cast once with
        `with_decoding_dtype` instead.
      masked_logits: MDM only: each step projects only the still-masked canvas slots onto the
        vocabulary (gathered into power-of-two buckets inside the loop; same decisions as the
        full projection). Pays where the vocabulary is large (Whisper); see docs/performance.md.
    Returns:
      DecodeOutput(ids, nfe_used, tokens, spec, texts, trajectory).
    """
    sampler = samplers.parse_sampler(spec)
    if dtype is not None and _check_dtype(dtype) != model.config.dtype:
        model = type(model)(dataclasses.replace(model.config, dtype=_check_dtype(dtype)))
        params = _params_in(params, _check_dtype(dtype))
    config = model.config
    _check_heads(config, sampler)
    features = batch["features"]
    feature_mask = batch["feature_mask"]
    batch_size = int(features.shape[0])
    example_mask = np.asarray(batch.get("example_mask", np.ones((batch_size,), bool)), bool)
    prompt_len = len(config.prompt_ids)
    forbidden = _forbidden(config, forbidden_ids, sampler.family)
    row_lengths = None
    length = 0
    targets = None
    ctc_buckets: tuple[int, ...] = ()
    if target_lengths is not None:
        targets = np.asarray(target_lengths)
        if sampler.family == "ctc":
            raise ValueError("target_lengths applies to MDM and AR samplers, not CTC")
        if adaptive_canvas:
            raise ValueError("give target_lengths or adaptive_canvas, not both")
        if (
            targets.shape != (batch_size,)
            or not np.issubdtype(targets.dtype, np.integer)
            or (targets.size and targets.min() < 0)
        ):
            raise ValueError(
                f"target_lengths must be [B] = [{batch_size}] non-negative ints, got "
                f"{targets.dtype} {targets.shape}"
            )
        targets = np.where(example_mask, targets, 0).astype(np.int32)
    if sampler.family == "mdm":
        if nfe is None or int(nfe) < 1:
            raise ValueError(f"sampler {sampler.spec!r} needs nfe >= 1, got {nfe!r}")
        limit = config.mdm_decoder.max_length - prompt_len
        length = limit if canvas_length is None else int(canvas_length)
        if not 1 <= length <= limit:
            raise ValueError(
                f"canvas_length={length} does not fit the MDM decoder (max_length "
                f"{config.mdm_decoder.max_length} minus {prompt_len} prompt tokens = {limit})"
            )
        per_row = np.full((batch_size,), length, np.int32)
        if targets is not None:
            if targets.max(initial=0) > length:
                raise ValueError(
                    f"target_lengths up to {targets.max()} do not fit the canvas of {length}"
                )
            need = int(targets.max(initial=0)) + 1  # the transcript and its EOS
            length = min([b for b in canvas_buckets if need <= b <= length] or [length])
            per_row = targets
        if adaptive_canvas not in (False, True, "seconds", "ctc"):
            raise ValueError(
                f"adaptive_canvas={adaptive_canvas!r}: give False, True / 'seconds' (from the "
                "audio length) or 'ctc' (from the CTC head)"
            )
        if adaptive_canvas == "ctc":
            if not config.ctc:
                raise ValueError(
                    "adaptive_canvas='ctc' needs the model's CTC head, which this model does not "
                    "have; use adaptive_canvas='seconds'"
                )
            if record:
                raise ValueError("adaptive_canvas='ctc' does not record trajectories")
            ctc_buckets = tuple(sorted({int(b) for b in canvas_buckets if 1 <= b < length}))
            ctc_buckets += (length,)
        elif adaptive_canvas:
            if "seconds" in batch:
                seconds = np.asarray(batch["seconds"], np.float64)
            else:
                seconds = np.asarray(feature_mask).sum(-1) * FRAME_SECONDS
            seconds = np.where(example_mask, seconds, 0.0)
            buckets = [b for b in canvas_buckets if b <= length] or [length]
            length = samplers.adaptive_canvas_length(
                seconds, tokens_per_second=tokens_per_second, buckets=buckets
            )
            per_row = samplers.adaptive_row_lengths(
                seconds, length, tokens_per_second=tokens_per_second
            )
        row_lengths = jnp.asarray(np.where(example_mask, per_row, 0), jnp.int32)
        nfe = int(nfe)
    elif sampler.family == "ar":
        limit = config.ar_decoder.max_length - prompt_len
        length = limit if max_len is None else int(max_len)
        if not 1 <= length <= limit:
            raise ValueError(
                f"max_len={length} does not fit the AR decoder (max_length "
                f"{config.ar_decoder.max_length} minus {prompt_len} prompt tokens = {limit})"
            )
        if targets is not None:
            if targets.max(initial=0) > length:
                raise ValueError(f"target_lengths up to {targets.max()} exceed max_len={length}")
            row_lengths = jnp.asarray(targets, jnp.int32)
        nfe = 0
    else:
        nfe = 0
    if sampler.family != "mdm" and (record or fixed_steps):
        raise ValueError("record and fixed_steps apply to MDM samplers only")

    begin = tuple(sorted({int(i) for i in begin_forbidden_ids})) if sampler.family == "ar" else ()
    run = _compiled(
        model,
        sampler,
        nfe,
        length,
        forbidden,
        bool(record),
        bool(fixed_steps),
        begin,
        targets is not None,
        bool(masked_logits) and sampler.family == "mdm",
        ctc_buckets,
    )
    row_keys = _row_keys(key, batch, batch_size)
    if row_lengths is None:
        row_lengths = jnp.zeros((batch_size,), jnp.int32)
    prompt = batch.get("prompt")
    if prompt is not None and tuple(np.shape(prompt)) != (batch_size, prompt_len):
        raise ValueError(
            f"batch['prompt'] has shape {tuple(np.shape(prompt))}; expected [B, P] = "
            f"[{batch_size}, {prompt_len}] (the model's prompt length)"
        )
    tokens, nfe_used, trajectory = run(
        _variables(params), features, feature_mask, row_keys, row_lengths, prompt
    )
    tokens = np.asarray(tokens)
    nfe_used = np.where(example_mask, np.asarray(nfe_used), 0).astype(np.int32)
    ids = samplers.tokens_to_ids(tokens, config.eos_id)
    ids = [row if keep else [] for row, keep in zip(ids, example_mask, strict=True)]
    texts = None if tokenizer is None else [tokenizer.decode(row) for row in ids]
    if trajectory is not None:
        trajectory = samplers.Trajectory(*(np.asarray(x) for x in trajectory))
    return DecodeOutput(ids, nfe_used, tokens, sampler.spec, texts, trajectory)
