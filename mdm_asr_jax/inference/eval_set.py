"""Eval sets: a manifest or TFDS split read once into host batches plus references.

`load_eval_set` runs the grain pipeline in eval mode (manifest order within frame buckets,
every process its slice of each global batch); `cached_eval_set` keeps the last two sets in
host memory, so the trainer's periodic dev eval reads and featurises its dev set once per run.

Utterances longer than the largest eval frame bucket (the encoder's limit: 30 s for Whisper)
are not dropped: they are cut at pauses (`inference.splitting.split_points`, as transcribe
does), each piece is decoded as a row of its own (`EvalSet.pieces` maps the utterance to its
pieces' batch indices, in time order) and eval scores the joined hypothesis against the whole
reference. Utterances with an empty reference are kept too (their hypothesis words are
insertions).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import jax
import numpy as np

from mdm_asr_jax.audio import AudioError, NonFiniteAudioError, log_mel_numpy
from mdm_asr_jax.checkpoint import LoadedCheckpoint
from mdm_asr_jax.data.manifest import DataReport, ManifestError, Problem
from mdm_asr_jax.data.pipeline import (
    DataConfig,
    DataConfigError,
    make_pipeline,
    samples_for_frames,
)
from mdm_asr_jax.data.sources import SourceError, open_source
from mdm_asr_jax.inference import InferenceError
from mdm_asr_jax.inference.batching import (
    Batch,
    empty_batch_like,
    eval_frame_buckets,
    make_batch,
)
from mdm_asr_jax.inference.placement import sum_across_processes
from mdm_asr_jax.inference.splitting import split_points
from mdm_asr_jax.progress import progress

EVAL_MAX_TOKENS = 512  # one token bucket in eval (tokens are not decoded from, only shaped)
PIECE_INDEX_BASE = 1 << 30  # batch `index` of pieces of split utterances: above any line number


@dataclasses.dataclass
class EvalSet:
    """Everything a run needs besides the model.

    batches: host batches of this process (pipeline layout; `index` keys refs/audio).
    refs: index -> reference transcript (as written). audio: index -> audio as written.
    report: the bad inputs skipped (manifest line + reason). source: what was read.
    pieces: index -> batch indices of its pieces in time order, for the utterances longer than
    the encoder's limit that were split (their rows are decoded like any other; eval joins the
    pieces' hypotheses with spaces and scores the result against refs[index]).
    """

    batches: list[Batch]
    refs: dict[int, str]
    audio: dict[int, str]
    report: DataReport
    source: str
    pieces: dict[int, list[int]] = dataclasses.field(default_factory=dict)

    @property
    def num_utterances(self) -> int:
        rows = int(sum(int(b["example_mask"].sum()) for b in self.batches))
        return rows - sum(len(p) for p in self.pieces.values()) + len(self.pieces)


class Subset:
    """The utterances `positions` of a data source, in that order (same interface)."""

    def __init__(self, source: Any, positions: list[int]):
        self._source, self._positions = source, list(positions)
        self.where, self.problems = source.where, list(getattr(source, "problems", []))
        if hasattr(source, "lang"):  # per-utterance language (multilingual prompts)
            self.lang = lambda i: source.lang(self._positions[i])

    def __len__(self) -> int:
        return len(self._positions)

    def text(self, i: int) -> str:
        return self._source.text(self._positions[i])

    def seconds(self, i: int) -> float:
        return self._source.seconds(self._positions[i])

    def index(self, i: int) -> int:
        return self._source.index(self._positions[i])

    def load(self, i: int) -> np.ndarray:
        return self._source.load(self._positions[i])

    def describe(self, i: int) -> dict[str, Any]:
        return self._source.describe(self._positions[i])


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
    `batch_size` is per process. Bad inputs (bad lines, missing / unreadable / non-finite
    audio) are skipped and reported with their line, audio path and reason, or raise with
    `strict`. Utterances longer than the largest frame bucket are split at pauses (see the
    module docstring); empty references are kept.
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
    features = checkpoint.feature_config
    try:
        source = open_source(
            spec, strict=strict, tfds_data_dir=tfds_data_dir, allow_empty_text=True
        )
        if max_utterances is not None:
            source = FirstN(source, max_utterances)
        too_long = [
            i
            for i in range(len(source))
            if source.seconds(i) > config.max_seconds
            or features.num_frames(int(round(source.seconds(i) * features.sample_rate)))
            > buckets[-1]
        ]
        long_set = set(too_long)
        rest = Subset(source, [i for i in range(len(source)) if i not in long_set])
        batches: list[Batch] = []
        report = DataReport(rest.problems)
        if len(rest):
            pipeline = make_pipeline(
                config,
                tokenizer=checkpoint.tokenizer,
                feature_config=features,
                train=False,
                source=rest,
            )
            bar = progress(
                total=len(rest) if jax.process_count() == 1 else None,
                desc=f"featurise {spec}",
                unit="utt",
                leave=False,
            )
            for batch in pipeline:
                batches.append(batch)
                bar.update(int(batch["example_mask"].sum()))
            bar.close()
            report = pipeline.report
    except (ManifestError, SourceError, DataConfigError) as err:
        raise InferenceError(str(err)) from None
    refs, audio = {}, {}
    for batch in batches:
        for index in batch["index"][batch["example_mask"]]:
            described = pipeline.describe(int(index))
            refs[int(index)] = described["text"]
            audio[int(index)] = described["audio"]
    mine = too_long[jax.process_index() :: jax.process_count()]
    piece_batches, pieces = split_long_utterances(
        checkpoint, source, mine, batch_size, report, strict, refs, audio
    )
    if jax.process_count() > 1:
        piece_batches = _pad_to_max_count(piece_batches, batches)
    batches = batches + piece_batches
    if not batches and not report.problems:
        raise InferenceError(f"{spec} holds no utterance to evaluate")
    return EvalSet(batches, refs, audio, report, spec, pieces)


def split_long_utterances(
    checkpoint: LoadedCheckpoint,
    source: Any,
    positions: list[int],
    batch_size: int,
    report: DataReport,
    strict: bool,
    refs: dict[int, str],
    audio: dict[int, str],
) -> tuple[list[Batch], dict[int, list[int]]]:
    """Batches of the pieces of the over-long utterances `positions` of `source`.

    Each utterance is loaded, cut at pauses into pieces the encoder takes (at most the largest
    eval frame bucket; `split_points`, 5 s search span) and featurised; the pieces, sorted by
    length, fill batches of `batch_size`. Fills `refs` / `audio` for each utterance and returns
    (batches, {utterance index: piece indices in time order}). Unreadable audio is reported in
    `report` (or raises with `strict`).
    """
    features = checkpoint.feature_config
    rate = features.sample_rate
    buckets = eval_frame_buckets(checkpoint.model_config)
    limit = buckets[-1]
    window_seconds = (samples_for_frames(limit, features) - 1) / rate
    items: list[tuple[int, np.ndarray, float, list[int]]] = []
    pieces: dict[int, list[int]] = {}
    tokenizer = checkpoint.tokenizer
    per_language = bool(getattr(tokenizer, "language_prompts", False))
    lang_of = getattr(source, "lang", None)
    piece_prompts: dict[int, tuple[int, ...]] = {}  # piece index -> its utterance's prompt
    for position in positions:
        index, described = int(source.index(position)), source.describe(position)
        prompt: tuple[int, ...] = ()
        if per_language:
            lang = lang_of(position) if lang_of is not None else None
            try:
                prompt = tuple(tokenizer.prompt_for(lang))
            except ValueError as err:  # a language the tokenizer does not know
                problem = Problem(
                    source.where, index + 1, "unknown language", str(err), described["audio"]
                )
                if strict:
                    raise InferenceError(f"{problem} (fix it, or run without --strict)") from None
                report.add(problem)
                continue
        try:
            samples = source.load(position)
        except AudioError as err:
            reason = (
                "non-finite audio" if isinstance(err, NonFiniteAudioError) else ("unreadable audio")
            )
            problem = Problem(source.where, index + 1, reason, str(err), described["audio"])
            if strict:
                raise InferenceError(
                    f"{problem} (fix it, or run without --strict to skip it)"
                ) from None
            report.add(problem)
            continue
        refs[index], audio[index] = described["text"], described["audio"]
        pieces[index] = []
        for start, end in split_points(samples, rate, window_seconds):
            feats = log_mel_numpy(samples[start:end], features)[:limit]
            if feats.shape[0] == 0:
                continue
            number = PIECE_INDEX_BASE + len(items)
            pieces[index].append(number)
            if per_language:
                piece_prompts[number] = prompt
            items.append((number, feats, (end - start) / rate, []))
    items.sort(key=lambda item: item[1].shape[0])
    batches = []  # padded to the eval buckets: the shapes the other batches compile anyway
    for first in range(0, len(items), batch_size):
        chunk = items[first : first + batch_size]
        longest = max(item[1].shape[0] for item in chunk)
        frames = min(b for b in buckets if b >= longest)
        pad_id = checkpoint.tokenizer.pad_id
        batch = make_batch(chunk, batch_size, checkpoint.model_config, pad_id, frames)
        if per_language:  # each piece decodes in its utterance's language, as whole ones do
            default = tuple(tokenizer.prompt_ids)
            rows = [piece_prompts[item[0]] for item in chunk]
            rows += [default] * (batch_size - len(rows))
            batch["prompt"] = np.asarray(rows, np.int32)
        batches.append(batch)
    return batches, pieces


def _pad_to_max_count(extra: list[Batch], others: list[Batch]) -> list[Batch]:
    """`extra` padded with empty batches to the longest `extra` over processes (every process
    then runs the same number of batches)."""
    counts = np.zeros((jax.process_count(),), np.int32)
    counts[jax.process_index()] = len(extra)
    most = int(sum_across_processes(counts).max())
    template = (extra or others or [None])[-1]
    if most > len(extra) and template is None:
        raise InferenceError(
            f"process {jax.process_index()} got no batch to decode: use fewer hosts or a "
            "larger eval set"
        )
    return extra + [empty_batch_like(template)] * (most - len(extra))


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
