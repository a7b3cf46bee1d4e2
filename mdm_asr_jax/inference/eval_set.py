"""Eval sets: a manifest or TFDS split read once into host batches plus references.

`load_eval_set` runs the grain pipeline in eval mode (manifest order within frame buckets,
every process its slice of each global batch); `cached_eval_set` keeps the last two sets in
host memory, so the trainer's periodic dev eval reads and featurises its dev set once per run.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from mdm_asr_jax.checkpoint import LoadedCheckpoint
from mdm_asr_jax.data.manifest import DataReport, ManifestError
from mdm_asr_jax.data.pipeline import DataConfig, DataConfigError, make_pipeline
from mdm_asr_jax.data.sources import SourceError, open_source
from mdm_asr_jax.inference import InferenceError
from mdm_asr_jax.inference.batching import Batch, empty_batch_like, eval_frame_buckets
from mdm_asr_jax.inference.placement import sum_across_processes
from mdm_asr_jax.progress import progress

EVAL_MAX_TOKENS = 512  # one token bucket in eval (tokens are not decoded from, only shaped)


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


class FirstN:
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
    if (manifest is None) == (dataset is None):
        raise InferenceError("give exactly one of a manifest (--manifest) or a dataset (--dataset)")
    if batch_size < 1:
        raise InferenceError(f"batch_size={batch_size} must be >= 1")
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
            source = FirstN(source, max_utterances)
        pipeline = make_pipeline(
            config,
            tokenizer=checkpoint.tokenizer,
            feature_config=checkpoint.feature_config,
            train=False,
            source=source,
        )
        bar = progress(
            total=len(source) if jax.process_count() == 1 else None,
            desc=f"featurise {spec}",
            unit="utt",
            leave=False,
        )
        batches = []
        for batch in pipeline:
            batches.append(batch)
            bar.update(int(batch["example_mask"].sum()))
        bar.close()
    except (ManifestError, SourceError, DataConfigError) as err:
        raise InferenceError(str(err)) from None
    refs, audio = {}, {}
    for batch in batches:
        for index in batch["index"][batch["example_mask"]]:
            described = pipeline.describe(int(index))
            refs[int(index)] = described["text"]
            audio[int(index)] = described["audio"]
    return EvalSet(batches, refs, audio, pipeline.report, spec)


def balance_batches(batches: list[Batch]) -> list[Batch]:
    """Pads this process's batch list to the longest over processes with empty batches."""
    if jax.process_count() == 1:
        return batches
    counts = np.zeros((jax.process_count(),), np.int32)
    counts[jax.process_index()] = len(batches)
    counts = sum_across_processes(counts)
    if not batches:
        raise InferenceError(
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
            raise InferenceError(f"eval batches need keys {sorted(missing)}")
    audio = audio if audio is not None else {i: str(i) for i in refs}
    return EvalSet(balance_batches(batches), refs, audio, report or DataReport(), source)


_EVAL_SET_CACHE: dict[tuple, EvalSet] = {}


_EVAL_SET_CACHE_SIZE = 2


def cached_eval_set(
    checkpoint: LoadedCheckpoint,
    *,
    batch_size: int,
    manifest: str | os.PathLike | None = None,
    dataset: str | None = None,
    strict: bool | None = False,
    max_utterances: int | None = None,
    tfds_data_dir: str | None = None,
) -> EvalSet:
    """`load_eval_set` memoised on everything that shapes the batches (kept: the last two)."""
    options = dict(
        manifest=manifest,
        dataset=dataset,
        strict=strict,
        max_utterances=max_utterances,
        tfds_data_dir=tfds_data_dir,
    )
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
            manifest=manifest,
            dataset=dataset,
            batch_size=batch_size,
            strict=bool(strict),
            max_utterances=max_utterances,
            tfds_data_dir=tfds_data_dir,
        )
        while len(_EVAL_SET_CACHE) >= _EVAL_SET_CACHE_SIZE:
            _EVAL_SET_CACHE.pop(next(iter(_EVAL_SET_CACHE)))
        _EVAL_SET_CACHE[key] = eval_set
    return _EVAL_SET_CACHE[key]
