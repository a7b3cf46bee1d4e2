"""Evaluate a checkpoint on a manifest (or TFDS split): corpus WER, RTFx, NFE, skipped inputs.

One function does the work for both callers: `mdm-asr-eval` (a checkpoint directory) and the
trainer's periodic eval (in-memory params). Both build a `LoadedCheckpoint` (model config,
feature config, tokenizer, params) and an `EvalSet` (host batches + references), then

    evaluator = Evaluator(checkpoint, eval_set)
    for spec, nfe in sweep: results.append(evaluator.run(spec, nfe))

Features are computed once and reused by every (sampler, NFE) of a sweep; the model is jitted
once per shape inside `decode`. For each run:

  1. Warm-up + timing: every batch is decoded while a `CompileWatcher` listens. A call during
     which JAX traced or compiled something is a warm-up call (its time goes to
     `compile_seconds`) and is run again; the second (or only) call is the timed one. So RTFx =
     audio seconds / timed decode seconds never includes compile time, however many shapes
     the samplers compile (canvas buckets, frame buckets). Timed = the model's encoder and
     decoder on device + fetching the ids; feature extraction and text detokenisation are not
     timed (they happen once per sweep / after timing).
  2. Hypotheses: ids -> text with the tokenizer; padding examples (example_mask False) dropped.
  3. Scoring: both sides normalised (Whisper English normaliser by default), edit counts and
     reference words summed over the corpus and over JAX processes, divided once.

Multi-host: each process decodes its own shard of the utterances (every process runs the same
number of batches, padding with empty ones, so collectives inside `decode` stay in step) and
the counts and seconds are gathered before division.

Result (the eval-output contract of docs/design.md, one dict per (sampler, nfe)): wer, cer,
rtfx, compile_seconds, decode_seconds, audio_seconds, n, mean_nfe, sampler, nfe, batch_size,
device, dtype, normalizer, skipped {count, by_reason, items [{line, reason, detail}]},
checkpoint, step.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from mdm_asr_jax.data.manifest import DataReport, ManifestError
from mdm_asr_jax.eval.metrics import (
    CompileWatcher,
    DecodeTimer,
    count_errors,
    gather_counts,
    rtfx_from,
    sum_across_processes,
)
from mdm_asr_jax.nn.config import ModelConfig
from mdm_asr_jax.train.checkpoint import LoadedCheckpoint, load_checkpoint

Batch = dict[str, np.ndarray]
DEFAULT_SAMPLER = "pbeb(lam=0.2,gamma=0.05)"  # the paper's sampler and settings
DEFAULT_NFE = 32
DecodeFn = Callable[..., Any]


class EvalError(ValueError):
    """Evaluation cannot run as asked (names the input and the fix)."""


# ---------------------------------------------------------------------------------------------
# Batching: host features padded to a few frame buckets (few compiled shapes).


def frame_bucket(num_frames: int, model_config: ModelConfig) -> int:
    """Padded frame count for a batch whose longest utterance has `num_frames` frames.

    Whisper encoders: 5 / 10 / 20 / 30 s windows (`nn.whisper.WHISPER_BUCKETS`). Other encoders:
    a ladder growing by sqrt(2) from 1 s (100, 144, 208, 288, 400, ... frames, multiples of 16),
    so padding wastes at most ~30 % and a corpus compiles a handful of shapes.
    """
    if model_config.encoder.kind == "whisper":
        from mdm_asr_jax.nn.whisper import whisper_window_frames

        return whisper_window_frames(num_frames)
    bucket = 100.0
    while True:
        frames = int(math.ceil(bucket / 16.0)) * 16
        if frames >= num_frames:
            return frames
        bucket *= math.sqrt(2.0)


def max_frames(model_config: ModelConfig) -> int | None:
    """Longest input (log-mel frames) the encoder accepts, or None when unbounded."""
    if model_config.encoder.kind == "whisper":
        from mdm_asr_jax.nn.whisper import WHISPER_FRAMES

        return WHISPER_FRAMES
    if model_config.encoder.positions == "learned":
        return model_config.encoder.max_frames * model_config.encoder.subsampling
    return None


def pad_features(
    features: Sequence[np.ndarray], batch_size: int, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stack [T_i, M] features into features [B, T, M] float32 and feature_mask [B, T] bool.

    Rows past len(features) are all padding (mask False); frames past T_i are 0.
    """
    if not features:
        raise ValueError("pad_features needs at least one utterance")
    num_mels = features[0].shape[1]
    out = np.zeros((batch_size, num_frames, num_mels), np.float32)
    mask = np.zeros((batch_size, num_frames), bool)
    for row, feats in enumerate(features):
        length = min(feats.shape[0], num_frames)
        out[row, :length] = feats[:length]
        mask[row, :length] = True
    return out, mask


def make_batch(
    items: Sequence[tuple[int, np.ndarray, float, list[int]]],
    batch_size: int,
    model_config: ModelConfig,
    pad_id: int,
) -> Batch:
    """A batch dict in the data-pipeline layout from (index, features [T,M], seconds, token ids).

    Keys: features [B,T,M], feature_mask [B,T], tokens [B,L], token_lengths [B],
    example_mask [B], seconds [B], index [B] (-1 on padding rows).
    """
    longest = max(feats.shape[0] for _, feats, _, _ in items)
    features, feature_mask = pad_features(
        [f for _, f, _, _ in items], batch_size, frame_bucket(longest, model_config)
    )
    token_len = max(1, max(len(t) for *_, t in items))
    token_len = 1 << (token_len - 1).bit_length()  # power of two: few shapes
    tokens = np.full((batch_size, token_len), pad_id, np.int32)
    token_lengths = np.zeros((batch_size,), np.int32)
    example_mask = np.zeros((batch_size,), bool)
    seconds = np.zeros((batch_size,), np.float32)
    index = np.full((batch_size,), -1, np.int32)
    for row, (idx, _, secs, ids) in enumerate(items):
        tokens[row, : len(ids)] = ids
        token_lengths[row] = len(ids)
        example_mask[row] = True
        seconds[row] = secs
        index[row] = idx
    return dict(
        features=features,
        feature_mask=feature_mask,
        tokens=tokens,
        token_lengths=token_lengths,
        example_mask=example_mask,
        seconds=seconds,
        index=index,
    )


def empty_batch_like(batch: Batch) -> Batch:
    """A batch of the same shapes with every row padding (keeps hosts' batch counts equal)."""
    out = {k: np.zeros_like(v) for k, v in batch.items()}
    out["index"] = np.full_like(batch["index"], -1)
    return out


# ---------------------------------------------------------------------------------------------
# The evaluation set: host batches plus references, built once per sweep.


@dataclasses.dataclass
class EvalSet:
    """Everything a run needs besides the model.

    batches: host batches of this process (pipeline layout; `index` keys refs/audio).
    refs: index -> reference transcript (as written). audio: index -> audio as written.
    report: the bad inputs skipped (manifest line + reason). source: what was read.
    """

    batches: list[Batch]
    refs: dict[int, str]
    audio: dict[int, str]
    report: DataReport
    source: str

    @property
    def num_utterances(self) -> int:
        return int(sum(int(b["example_mask"].sum()) for b in self.batches))


UNBOUNDED_MAX_FRAMES = 6000  # 60 s: the longest eval utterance for encoders without a limit
EVAL_MAX_TOKENS = 512  # one token bucket in eval (tokens are not decoded from, only shaped)


def eval_frame_buckets(model_config: ModelConfig) -> tuple[int, ...]:
    """The frame buckets eval batches are padded to (`frame_bucket` values up to the limit)."""
    limit = max_frames(model_config) or UNBOUNDED_MAX_FRAMES
    buckets, frames = [], 1
    while True:
        bucket = frame_bucket(frames, model_config)
        if bucket >= limit:
            buckets.append(limit)
            return tuple(sorted(set(buckets)))
        buckets.append(bucket)
        frames = bucket + 1


class _FirstN:
    """The first `n` utterances of a data source (for --max_utterances)."""

    def __init__(self, source: Any, n: int):
        self._source, self._n = source, min(n, len(source))
        self.where, self.problems = source.where, list(getattr(source, "problems", []))

    def __len__(self) -> int:
        return self._n

    def __getattr__(self, name: str) -> Any:  # text, seconds, index, load, describe
        return getattr(self._source, name)


def load_eval_set(
    checkpoint: LoadedCheckpoint,
    *,
    manifest: str | os.PathLike | None = None,
    dataset: str | None = None,
    batch_size: int,
    strict: bool = False,
    max_utterances: int | None = None,
    tfds_data_dir: str | None = None,
    read_threads: int = 4,
) -> EvalSet:
    """Host batches of a manifest or TFDS split ("tfds:NAME/SPLIT"), via the grain pipeline.

    Uses `data.pipeline` in eval mode: manifest order within frame buckets, the last batch of
    each bucket padded (example_mask False), every process its slice of each global batch.
    `batch_size` is per process. Bad inputs (bad lines, missing / unreadable audio, too long
    for the encoder) are skipped and reported with their line, or raise with `strict`.
    """
    from mdm_asr_jax.data.pipeline import DataConfig, DataConfigError, make_pipeline
    from mdm_asr_jax.data.sources import SourceError, open_source

    if (manifest is None) == (dataset is None):
        raise EvalError("give exactly one of a manifest (--manifest) or a dataset (--dataset)")
    if batch_size < 1:
        raise EvalError(f"batch_size={batch_size} must be >= 1")
    spec = os.fspath(manifest) if manifest is not None else str(dataset)
    if dataset is not None and not spec.startswith("tfds:"):
        spec = "tfds:" + spec
    model_config = checkpoint.model_config
    buckets = eval_frame_buckets(model_config)
    config = DataConfig(
        source=spec,
        batch_size=batch_size * jax.process_count(),
        frame_buckets=buckets,
        token_buckets=(),
        max_tokens=EVAL_MAX_TOKENS,
        max_seconds=buckets[-1] / checkpoint.feature_config.frame_rate,
        shuffle=False,
        num_workers=0,
        read_threads=read_threads,
        strict=strict,
        tfds_data_dir=tfds_data_dir,
    )
    try:
        source = open_source(spec, strict=strict, tfds_data_dir=tfds_data_dir)
        if max_utterances is not None:
            source = _FirstN(source, max_utterances)
        pipeline = make_pipeline(
            config,
            tokenizer=checkpoint.tokenizer,
            feature_config=checkpoint.feature_config,
            train=False,
            source=source,
        )
        batches = list(pipeline)
    except (ManifestError, SourceError, DataConfigError) as err:
        raise EvalError(str(err)) from None
    refs, audio = {}, {}
    for batch in batches:
        for index in batch["index"][batch["example_mask"]]:
            described = pipeline.describe(int(index))
            refs[int(index)] = described["text"]
            audio[int(index)] = described["audio"]
    return EvalSet(batches, refs, audio, pipeline.report, spec)


def _balance_batches(batches: list[Batch]) -> list[Batch]:
    """Pads this process's batch list to the longest over processes with empty batches."""
    if jax.process_count() == 1:
        return batches
    counts = np.zeros((jax.process_count(),), np.int32)
    counts[jax.process_index()] = len(batches)
    counts = sum_across_processes(counts)
    if not batches:
        raise EvalError(
            f"process {jax.process_index()} got no batch to decode: use fewer hosts or a "
            "larger eval set"
        )
    return batches + [empty_batch_like(batches[-1])] * (int(counts.max()) - len(batches))


def eval_set_from_batches(
    batches: Iterable[Batch],
    refs: dict[int, str],
    audio: dict[int, str] | None = None,
    report: DataReport | None = None,
    source: str = "batches",
) -> EvalSet:
    """An `EvalSet` over batches from elsewhere (e.g. the grain pipeline's eval mode).

    Each batch must carry `index` (keys of `refs`), `example_mask` and `seconds`.
    """
    batches = list(batches)
    for batch in batches:
        missing = {"features", "feature_mask", "example_mask", "seconds", "index"} - set(batch)
        if missing:
            raise EvalError(f"eval batches need keys {sorted(missing)}")
    audio = audio if audio is not None else {i: str(i) for i in refs}
    return EvalSet(_balance_batches(batches), refs, audio, report or DataReport(), source)


# ---------------------------------------------------------------------------------------------
# Decoding adapter and head checks.

_HEADS = {
    "mdm": ("mdm_decoder", "an MDM decoder"),
    "ar": ("ar_decoder", "an AR decoder"),
    "ctc": ("ctc", "a CTC head"),
}


def available_heads(model_config: ModelConfig) -> list[str]:
    """Families of samplers this model can run: subset of ["mdm", "ar", "ctc"]."""
    return [fam for fam, (field, _) in _HEADS.items() if getattr(model_config, field)]


def check_sampler(spec: str, model_config: ModelConfig, where: str = "the checkpoint") -> Any:
    """Parses `spec` and checks the model has the head it needs (EvalError otherwise)."""
    from mdm_asr_jax.diffusion.samplers import SamplerSpecError, parse_sampler

    try:
        config = parse_sampler(spec)
    except SamplerSpecError as err:
        raise EvalError(str(err)) from None
    field, label = _HEADS[config.family]
    if not getattr(model_config, field):
        have = ", ".join(available_heads(model_config)) or "none"
        raise EvalError(
            f"sampler {config.spec!r} needs {label} ({field}), but {where} has none (it has: "
            f"{have}); pick a sampler for one of those heads"
        )
    return config


def default_decode_fn() -> DecodeFn:
    """`mdm_asr_jax.decode.decode`: decode(model, params, batch, spec, nfe, key)."""
    try:
        from mdm_asr_jax.decode import decode
    except ImportError as err:  # pragma: no cover - only while the package is incomplete
        raise EvalError(f"mdm_asr_jax.decode is not available ({err})") from None
    return decode


def checkpoint_decode_kwargs(checkpoint: LoadedCheckpoint) -> dict[str, Any]:
    """`decode` keyword defaults from a checkpoint: the canvas length it was trained with, the
    ids never to emit (its `suppress_ids` plus the tokenizer's special ids, EOS excepted), the
    ids blocked at the first AR step (`suppress_begin_ids`) and the AR length cap
    (`max_new_tokens`; Whisper: 224, as faster-whisper)."""
    decoding = checkpoint.decoding or {}
    kwargs: dict[str, Any] = {}
    if decoding.get("canvas_length"):
        kwargs["canvas_length"] = int(decoding["canvas_length"])
    forbidden = {int(i) for i in decoding.get("suppress_ids", ())}
    forbidden |= {int(i) for i in getattr(checkpoint.tokenizer, "special_ids", ())}
    forbidden.discard(int(checkpoint.model_config.eos_id))
    if forbidden:
        kwargs["forbidden_ids"] = tuple(sorted(forbidden))
    if decoding.get("suppress_begin_ids"):
        kwargs["begin_forbidden_ids"] = tuple(int(i) for i in decoding["suppress_begin_ids"])
    if decoding.get("max_new_tokens"):
        kwargs["max_len"] = int(decoding["max_new_tokens"])
    return kwargs


def _unpack(result: Any, eos_id: int) -> tuple[list[list[int]], np.ndarray | None]:
    """(per-row id lists, per-row NFE used or None) from a decode result."""
    ids = getattr(result, "ids", None)
    if ids is None:
        from mdm_asr_jax.diffusion.samplers import tokens_to_ids

        tokens = getattr(result, "tokens", result[0] if isinstance(result, tuple) else result)
        ids = tokens_to_ids(np.asarray(tokens), eos_id)
    else:
        ids = [[int(t) for t in row] for row in (ids.tolist() if hasattr(ids, "tolist") else ids)]
    nfe = getattr(result, "nfe_used", getattr(result, "nfe", None))
    if nfe is None and isinstance(result, tuple) and not hasattr(result, "_fields"):
        nfe = result[1] if len(result) > 1 else None
    return ids, None if nfe is None else np.asarray(nfe)


def _inner_params(params: Any) -> Any:
    if isinstance(params, dict) and set(params) == {"params"}:
        return params["params"]
    return params


def device_name(devices_per_process: int = 1) -> str:
    """e.g. "cpu x1", "NVIDIA H100 80GB HBM3 x8": device kind x devices decoding (all hosts)."""
    kind = jax.local_devices()[0].device_kind
    return f"{kind} x{devices_per_process * jax.process_count()}"


def local_data_mesh(batch_size: int) -> jax.sharding.Mesh | None:
    """A 1-D ("data",) mesh over as many of this process's devices as divide `batch_size`.

    Eval is data parallel within a host: each process decodes its own utterances, and its batch
    is split over its local devices (the jitted decode runs SPMD over them, no cross-host
    traffic). None when only one device would be used.
    """
    devices = jax.local_devices()
    count = math.gcd(batch_size, len(devices))
    if count <= 1:
        return None
    return jax.sharding.Mesh(np.asarray(devices[:count]), ("data",))


def place_params(params: Any, mesh: jax.sharding.Mesh | None) -> Any:
    """Params for local decoding: gathered if sharded across hosts, replicated over `mesh`."""

    def gather(x: Any) -> Any:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return multihost_utils.process_allgather(x, tiled=True)
        return x

    params = jax.tree.map(gather, params)
    if mesh is None:
        return jax.device_put(params, jax.local_devices()[0])
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    return jax.device_put(params, replicated)


def place_batch(batch: Batch, mesh: jax.sharding.Mesh | None) -> dict[str, Any]:
    """A host batch on device: split along the batch axis over `mesh`, or on one device."""
    if mesh is None:
        return {k: jax.device_put(v, jax.local_devices()[0]) for k, v in batch.items()}
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
    return {k: jax.device_put(v, sharding) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# The evaluator.


class Evaluator:
    """Decodes and scores one `EvalSet` with one model, for any number of (sampler, nfe) runs."""

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        eval_set: EvalSet,
        *,
        normalizer: str | Callable[[str], str] = "english",
        decode_fn: DecodeFn | None = None,
        seed: int | jax.Array = 0,
        with_cer: bool = True,
        decode_kwargs: dict[str, Any] | None = None,
        shard_batches: bool = True,
    ):
        from mdm_asr_jax.nn.model import ASRModel

        if not eval_set.batches:
            raise EvalError(
                f"no utterance left to evaluate in {eval_set.source} ({eval_set.report.summary()})"
            )
        self.checkpoint = checkpoint
        self.eval_set = eval_set
        self.model = ASRModel(checkpoint.model_config)
        batch_size = int(eval_set.batches[0]["example_mask"].shape[0])
        self.mesh = local_data_mesh(batch_size) if shard_batches else None
        self.params = place_params(_inner_params(checkpoint.params), self.mesh)
        self.normalizer = normalizer
        self.decode_fn = decode_fn or default_decode_fn()
        self.seed = seed  # an int, or a jax PRNG key
        self.decode_kwargs = {**checkpoint_decode_kwargs(checkpoint), **(decode_kwargs or {})}
        self.with_cer = with_cer
        self._device_batches: list[dict[str, Any]] | None = None
        self._warned_recompile = False

    def _device(self) -> list[dict[str, Any]]:
        # Put features on device once for the whole sweep (the transfer is not decode time).
        if self._device_batches is None:
            self._device_batches = [place_batch(b, self.mesh) for b in self.eval_set.batches]
        return self._device_batches

    def _decode(self, batch: dict[str, Any], spec: str, nfe: int, key: jax.Array) -> Any:
        result = self.decode_fn(
            self.model, self.params, batch, spec, nfe, key, **self.decode_kwargs
        )
        return jax.block_until_ready(jax.device_get(result))

    def run(
        self, spec: str, nfe: int | None = None, *, hyps_path: str | os.PathLike | None = None
    ) -> dict[str, Any]:
        """Decodes every batch with sampler `spec` (NFE cap `nfe` for MDM samplers) and scores.

        Returns the contract dict; writes per-utterance hypotheses to `hyps_path` if given
        (JSONL, manifest order, `{"audio", "ref", "hyp", "sampler", "nfe"}`; on multi-host
        runs each process writes `hyps_path` suffixed with its index).
        """
        config = check_sampler(spec, self.checkpoint.model_config, str(self.checkpoint.path))
        if config.family == "mdm":
            if nfe is None or int(nfe) < 1:
                raise EvalError(f"sampler {config.spec!r} needs nfe >= 1 (got {nfe!r})")
            nfe = int(nfe)
        eos_id = self.checkpoint.model_config.eos_id
        tokenizer = self.checkpoint.tokenizer
        base_key = jax.random.key(self.seed) if isinstance(self.seed, int) else self.seed
        timer = DecodeTimer()
        hyps: dict[int, str] = {}
        nfe_sum, nfe_count = 0.0, 0
        for number, batch in enumerate(self._device()):
            host = self.eval_set.batches[number]
            audio_seconds = float(host["seconds"][host["example_mask"]].sum())
            key = base_key  # decode folds in each row's manifest index: batch-independent
            with CompileWatcher() as watcher:
                start = time.perf_counter()
                result = self._decode(batch, config.spec, nfe, key)
                elapsed = time.perf_counter() - start
            if watcher.compiled:  # a warm-up call: the same batch again, timed
                timer.add_warmup(elapsed)
                with CompileWatcher() as again:
                    start = time.perf_counter()
                    result = self._decode(batch, config.spec, nfe, key)
                    elapsed = time.perf_counter() - start
                if again.compiled and not self._warned_recompile:
                    self._warned_recompile = True
                    logging.warning(
                        "decode compiled again on a repeated batch (%s): RTFx includes compile "
                        "time; a static argument of decode is probably not hashable/stable",
                        config.spec,
                    )
            timer.add_timed(audio_seconds, elapsed)
            ids, nfe_used = _unpack(result, eos_id)
            for row, index in enumerate(host["index"]):
                if not host["example_mask"][row]:
                    continue
                hyps[int(index)] = tokenizer.decode(ids[row])
                if nfe_used is not None:
                    nfe_sum += float(nfe_used[row])
                    nfe_count += 1
        return self._score(config, nfe, hyps, timer, nfe_sum, nfe_count, hyps_path)

    def _score(
        self,
        config: Any,
        nfe: int | None,
        hyps: dict[int, str],
        timer: DecodeTimer,
        nfe_sum: float,
        nfe_count: int,
        hyps_path: str | os.PathLike | None,
    ) -> dict[str, Any]:
        order = sorted(hyps)
        refs = [self.eval_set.refs[i] for i in order]
        counts = count_errors(
            refs, [hyps[i] for i in order], self.normalizer, with_chars=self.with_cer
        )
        counts = gather_counts(counts)
        nfe_stats = sum_across_processes(np.asarray([nfe_sum, nfe_count], np.float32))
        audio_seconds, decode_seconds, warmup_seconds = timer.totals()
        if hyps_path is not None:
            write_hyps(
                hyps_path,
                [
                    {
                        "audio": self.eval_set.audio[i],
                        "ref": self.eval_set.refs[i],
                        "hyp": hyps[i],
                        "sampler": config.spec,
                        "nfe": nfe if config.family == "mdm" else None,
                    }
                    for i in order
                ],
            )
        report = self.eval_set.report
        normalizer = self.normalizer if isinstance(self.normalizer, str) else "custom"
        return {
            "wer": counts.wer,
            "cer": counts.cer if self.with_cer else None,
            "rtfx": rtfx_from(audio_seconds, decode_seconds),
            "compile_seconds": warmup_seconds,
            "decode_seconds": decode_seconds,
            "audio_seconds": audio_seconds,
            "n": counts.utterances,
            "word_errors": counts.word_errors,
            "words": counts.words,
            "mean_nfe": float(nfe_stats[0] / nfe_stats[1]) if nfe_stats[1] else None,
            "sampler": config.spec,
            "nfe": nfe if config.family == "mdm" else None,
            "batch_size": int(self.eval_set.batches[0]["example_mask"].shape[0]),
            "device": device_name(1 if self.mesh is None else self.mesh.size),
            "dtype": self.checkpoint.model_config.dtype,
            "normalizer": normalizer,
            "skipped": skipped_summary(report),
            "source": self.eval_set.source,
            "checkpoint": str(self.checkpoint.path),
            "step": self.checkpoint.info.get("step"),
        }


def skipped_summary(report: DataReport) -> dict[str, Any]:
    """The contract's `skipped`: count, count per reason, and each line with its reason."""
    problems = report.problems
    return {
        "count": len(problems),
        "by_reason": report.counts(),
        "items": [
            {"source": p.where, "line": p.line, "reason": p.reason, "detail": p.detail}
            for p in problems
        ],
    }


def write_hyps(path: str | os.PathLike, rows: Sequence[dict[str, Any]]) -> Path:
    """Writes hypotheses as JSONL (one utterance a line). Multi-host: one file per process."""
    path = Path(path)
    if jax.process_count() > 1:
        path = path.with_name(f"{path.name}.process{jax.process_index()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def sweep_runs(samplers: Sequence[str], nfes: Sequence[int]) -> list[tuple[str, int | None]]:
    """(spec, nfe) pairs of a sweep: every MDM sampler x every NFE; AR / CTC samplers once
    (the NFE cap does not apply to them)."""
    from mdm_asr_jax.diffusion.samplers import SamplerSpecError, parse_sampler

    if not samplers:
        raise EvalError("no sampler given: pass --sampler=SPEC (e.g. 'pbeb(lam=0.2,gamma=0.05)')")
    runs: list[tuple[str, int | None]] = []
    for spec in samplers:
        try:
            config = parse_sampler(spec)
        except SamplerSpecError as err:
            raise EvalError(str(err)) from None
        if config.family == "mdm":
            if not nfes:
                raise EvalError(f"sampler {config.spec!r} needs --nfe (e.g. --nfe=32)")
            runs.extend((config.spec, int(n)) for n in nfes)
        else:
            runs.append((config.spec, None))
    return runs


def _hyps_path_for(hyps: str | os.PathLike | None, run: int, total: int) -> Path | None:
    if hyps is None:
        return None
    path = Path(hyps)
    if total == 1:
        return path
    return path.with_name(f"{path.stem}.{run}{path.suffix or '.jsonl'}")


def as_checkpoint(checkpoint: str | os.PathLike | LoadedCheckpoint) -> LoadedCheckpoint:
    """A `LoadedCheckpoint` from a directory (exported or a training workdir) or passed through.

    In-memory callers (the trainer) build one directly:
    `LoadedCheckpoint(model_config, feature_config, tokenizer, params, {}, {}, workdir)`.
    """
    if isinstance(checkpoint, LoadedCheckpoint):
        return checkpoint
    return load_checkpoint(checkpoint)


def evaluate_sweep(
    checkpoint: str | os.PathLike | LoadedCheckpoint,
    *,
    manifest: str | os.PathLike | None = None,
    dataset: str | None = None,
    eval_set: EvalSet | None = None,
    samplers: Sequence[str] | None = None,
    nfes: Sequence[int] | None = None,
    batch_size: int = 16,
    normalizer: str | Callable[[str], str] = "english",
    hyps: str | os.PathLike | None = None,
    strict: bool = False,
    max_utterances: int | None = None,
    seed: int | jax.Array = 0,
    decode_fn: DecodeFn | None = None,
    decode_kwargs: dict[str, Any] | None = None,
    tfds_data_dir: str | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluates every (sampler, nfe) of a sweep on one eval set; one result dict each.

    The checkpoint is loaded and the features computed once. `samplers` / `nfes` default to
    the checkpoint's decoding defaults (its config's `decoding.sampler` / `decoding.nfe`), else
    PBEB (lam 0.2, gamma 0.05) at 32 NFEs. With several runs, hypotheses go
    to `hyps` with the run number inserted before the suffix (HYPS.0.jsonl, HYPS.1.jsonl, ...).
    `on_result` is called after each run (the CLI prints one JSON line per run as it goes).
    """
    checkpoint = as_checkpoint(checkpoint)
    decoding = checkpoint.decoding or {}
    if not samplers:
        samplers = [decoding.get("sampler") or DEFAULT_SAMPLER]
    if not nfes:
        nfes = [int(decoding.get("nfe") or DEFAULT_NFE)]
    runs = sweep_runs(samplers, nfes)
    for spec, _ in runs:  # fail before loading audio when a head is missing
        check_sampler(spec, checkpoint.model_config, str(checkpoint.path))
    if eval_set is None:
        eval_set = load_eval_set(
            checkpoint,
            manifest=manifest,
            dataset=dataset,
            batch_size=batch_size,
            strict=strict,
            max_utterances=max_utterances,
            tfds_data_dir=tfds_data_dir,
        )
    evaluator = Evaluator(
        checkpoint,
        eval_set,
        normalizer=normalizer,
        decode_fn=decode_fn,
        seed=seed,
        decode_kwargs=decode_kwargs,
    )
    results = []
    for number, (spec, nfe) in enumerate(runs):
        result = evaluator.run(spec, nfe, hyps_path=_hyps_path_for(hyps, number, len(runs)))
        if on_result is not None:
            on_result(result)
        results.append(result)
    return results


def evaluate(
    checkpoint: str | os.PathLike | LoadedCheckpoint,
    *,
    sampler: str | None = None,
    nfe: int | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Evaluates one sampler at one NFE cap (defaults: the checkpoint's); see `evaluate_sweep`."""
    samplers = None if sampler is None else [sampler]
    nfes = None if nfe is None else [nfe]
    return evaluate_sweep(checkpoint, samplers=samplers, nfes=nfes, **kwargs)[0]


_EVAL_SET_CACHE: dict[tuple, EvalSet] = {}
_EVAL_SET_CACHE_SIZE = 2


def _cached_eval_set(checkpoint: LoadedCheckpoint, kwargs: dict[str, Any]) -> EvalSet:
    """`load_eval_set` memoised on everything that shapes the batches (kept: the last two)."""
    options = {
        k: kwargs.get(k)
        for k in ("manifest", "dataset", "strict", "max_utterances", "tfds_data_dir")
    }
    batch_size = int(kwargs.get("batch_size", 16))
    key = (
        tuple(sorted((k, str(v)) for k, v in options.items())),
        batch_size,
        checkpoint.feature_config,
        eval_frame_buckets(checkpoint.model_config),
        id(checkpoint.tokenizer),
    )
    if key not in _EVAL_SET_CACHE:
        eval_set = load_eval_set(
            checkpoint,
            manifest=options["manifest"],
            dataset=options["dataset"],
            batch_size=batch_size,
            strict=bool(options["strict"]),
            max_utterances=options["max_utterances"],
            tfds_data_dir=options["tfds_data_dir"],
        )
        while len(_EVAL_SET_CACHE) >= _EVAL_SET_CACHE_SIZE:
            _EVAL_SET_CACHE.pop(next(iter(_EVAL_SET_CACHE)))
        _EVAL_SET_CACHE[key] = eval_set
    return _EVAL_SET_CACHE[key]


def evaluate_params(
    model_config: ModelConfig,
    params: Any,
    tokenizer: Any,
    feature_config: Any,
    *,
    sampler: str = "pbeb(lam=0.2,gamma=0.05)",
    nfe: int = 32,
    canvas_length: int | None = None,
    key: jax.Array | None = None,
    workdir: str | os.PathLike = "",
    step: int | None = None,
    cache_eval_set: bool = True,
    decoding: dict[str, Any] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """`evaluate` on in-memory params (the trainer's periodic and final eval).

    `decoding`: a checkpoint-style decoding section (token suppression, length cap).

    With `cache_eval_set` the features of the last two eval sets stay in host memory, so a
    periodic eval reads and featurises its dev set once per run, not at every eval.

    kwargs: manifest / dataset / eval_set, batch_size, normalizer, max_utterances, strict,
    tfds_data_dir, decode_fn (see `evaluate_sweep`). `canvas_length` is passed to `decode`
    (the MDM canvas the model was trained with), `key` seeds random samplers.
    """
    info = {} if step is None else {"step": int(step)}
    checkpoint = LoadedCheckpoint(
        model_config, feature_config, tokenizer, params, dict(decoding or {}), info, Path(workdir)
    )
    decode_kwargs = dict(kwargs.pop("decode_kwargs", None) or {})
    if canvas_length is not None:
        decode_kwargs["canvas_length"] = int(canvas_length)
    if cache_eval_set and kwargs.get("eval_set") is None:
        kwargs["eval_set"] = _cached_eval_set(checkpoint, kwargs)
    return evaluate(
        checkpoint,
        sampler=sampler,
        nfe=nfe,
        seed=0 if key is None else key,
        decode_kwargs=decode_kwargs,
        **kwargs,
    )
