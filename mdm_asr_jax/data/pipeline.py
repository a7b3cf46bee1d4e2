"""The grain input pipeline: utterances -> bucketed, padded, sharded batches of log-mel features.

Steps (`make_pipeline`):

1. **Plan (main process, once).** Open the source (JSONL manifest or TFDS split), tokenize every
   transcript and take every duration (manifest `seconds` or the audio header). Drop, count and
   report utterances with an empty transcript (training only: eval scores them), too many
   tokens, or audio too long or too short
   (`DataReport`, with manifest line numbers; `strict=True` fails on the first). Each remaining
   utterance gets a bucket: the smallest (frames, tokens) shape of `frame_buckets` x
   `token_buckets` that holds it. Every batch has one of these shapes, so the train step compiles
   once per bucket and never again.
2. **Batches (grain).** A batch plan is a pure function of (seed, epoch): shuffle utterances,
   group by bucket, cut groups into global batches of `batch_size`, shuffle the batch order
   (train); or keep manifest order per bucket and pad the last batch (eval). Grain iterates a
   `MapDataset` over global batch numbers, so the iterator state is one counter: checkpoint and
   restore give exactly the next batch. Each process takes its slice of every global batch
   (`process_index`, `process_count`): disjoint shards, the same bucket shape at each step on
   every host.
3. **Load (grain workers).** For each utterance in the slice: decode, mono, 16 kHz, log-mel
   (host numpy, `audio.log_mel_numpy`), pad into the bucket. Audio that cannot be decoded leaves
   its slot empty (`example_mask` False, also in training: weight losses by `example_mask`) and is
   reported with its manifest line by the main process.

Batch (dict of numpy arrays; B = local batch size, T frames, M mel bins, L tokens):
  features [B, T, M] float32 (0 on padded frames), feature_mask [B, T] bool,
  tokens [B, L] int32 (no BOS/EOS, pad_id after the transcript), token_lengths [B] int32,
  example_mask [B] bool, seconds [B] float32, index [B] int32 (0-based manifest line, -1 pad);
  with a tokenizer whose prompt names the language (`tokenizer.language_prompts`, e.g. a
  multilingual Whisper) also prompt [B, P] int32: each utterance's decoder prompt,
  `tokenizer.prompt_for(lang)` from the manifest's `lang` key (the tokenizer's own language when
  the line has none; an unknown code drops the utterance, reported as "unknown language").

Where log-mel is computed (`DataConfig.output`): host log-mel (`audio.log_mel_numpy`, float32 for
whisper features) costs more than decoding the audio, so it can starve an accelerator
(`benchmarks/input_pipeline.py` measures both side by side; numbers in docs/performance.md). So:
- `output="features"` (default, the batch contract above): workers compute log-mel on the host.
  Simple and device-agnostic, and features are half the bytes of float32 audio.
- `output="audio"`: workers only decode; batches carry `audio` [B, N] float32 and
  `audio_lengths` [B] instead of `features`, and the jitted step calls
  `device_features(batch, feature_config)` (a no-op for feature batches) to get the contract
  back. Use it when the host CPUs cannot keep up with the accelerator.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grain
import numpy as np
from absl import flags, logging

from mdm_asr_jax.audio import FeatureConfig, NonFiniteAudioError, log_mel_numpy
from mdm_asr_jax.data.manifest import DataReport, ManifestError, Problem
from mdm_asr_jax.data.sources import open_source

_OK, _UNREADABLE, _LONGER_THAN_BUCKET, _NON_FINITE = 0, 1, 2, 3
_FAILURE_REASONS = {
    _UNREADABLE: "unreadable audio",
    _LONGER_THAN_BUCKET: "too long",
    _NON_FINITE: "non-finite audio",
}
_DETAIL_CHARS = 240  # load-failure messages ride in the batch as fixed-width strings
_FOREVER = 2**40  # "infinite" epoch count for training: MapDataset needs a length.


class DataConfigError(ValueError):
    """Bad data configuration; the message names the field and the fix."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What the pipeline reads and how it batches.

    Attributes:
      source: a JSONL manifest path, or `tfds:NAME/SPLIT` (e.g. `tfds:librispeech/dev_clean`).
      batch_size: GLOBAL batch size (all processes together); each process gets
        batch_size / process_count examples per step.
      frame_buckets: allowed feature lengths T (frames, 100 per second); an utterance goes to the
        smallest that holds it, longer ones are dropped and reported. (3000,) for Whisper.
      token_buckets: allowed token lengths L; () means one bucket of `max_tokens`.
      max_tokens: transcripts with more tokens are dropped and reported.
      max_seconds / min_seconds: duration limits (dropped and reported outside).
      seed: shuffling seed (batch plans are a pure function of seed and epoch).
      shuffle: shuffle in training (eval never shuffles).
      num_epochs: training epochs; None repeats forever. Eval always reads one epoch.
      num_workers: grain worker processes (0: load in the main process with threads).
      worker_buffer: batches each worker prepares ahead.
      read_threads: threads per worker (or in the main process) loading batches.
      strict: fail on the first bad utterance instead of reporting and skipping it.
      output: "features" (log-mel computed by the workers in numpy: the batch contract) or
        "audio" (workers only decode; batches carry `audio` [B, N] float32 and `audio_lengths`
        [B] instead of `features`, and the train step calls `device_features` under jit). See
        the module docstring for when each wins.
      tfds_data_dir: TFDS data_dir for `tfds:` sources.
      index_cache_dir: where TFDS sources cache their one-time scan (texts, durations).
    """

    source: str = ""
    batch_size: int = 8
    frame_buckets: tuple[int, ...] = (500, 1000, 2000, 3000)
    token_buckets: tuple[int, ...] = ()
    max_tokens: int = 256
    max_seconds: float = 30.0
    min_seconds: float = 0.0
    seed: int = 0
    shuffle: bool = True
    num_epochs: int | None = None
    num_workers: int = 0
    worker_buffer: int = 2
    read_threads: int = 2
    strict: bool = False
    output: str = "features"
    tfds_data_dir: str | None = None
    index_cache_dir: str | None = None

    @classmethod
    def from_any(cls, config: DataConfig | Mapping[str, Any] | Any) -> DataConfig:
        """Accepts a DataConfig, a dict, or an ml_collections ConfigDict (`config.data`)."""
        if isinstance(config, DataConfig):
            return config
        values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise DataConfigError(f"Unknown data config keys {unknown}; known: {sorted(known)}.")
        for key in ("frame_buckets", "token_buckets"):
            if key in values and values[key] is not None:
                values[key] = tuple(int(v) for v in values[key])
        return cls(**values)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise DataConfigError(f"data.batch_size must be >= 1, got {self.batch_size}.")
        for key in ("frame_buckets", "token_buckets"):
            buckets = getattr(self, key)
            if any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
                raise DataConfigError(
                    f"data.{key} must be increasing positive integers, got {buckets}."
                )
        if not self.frame_buckets:
            raise DataConfigError("data.frame_buckets is empty; give at least one length.")
        if self.max_tokens < 1:
            raise DataConfigError(f"data.max_tokens must be >= 1, got {self.max_tokens}.")
        if self.output not in ("features", "audio"):
            raise DataConfigError(
                f"data.output must be 'features' or 'audio', got {self.output!r}."
            )
        if self.num_workers < 0 or self.read_threads < 1:
            raise DataConfigError("data.num_workers must be >= 0 and data.read_threads >= 1.")

    @property
    def token_lengths(self) -> tuple[int, ...]:
        """The token bucket lengths actually used (capped at max_tokens)."""
        kept = tuple(b for b in self.token_buckets if b < self.max_tokens)
        return kept + (self.max_tokens,)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything a worker needs to build batch number `step` (picklable, plain numpy)."""

    positions: np.ndarray  # [U] source positions of usable utterances
    buckets: np.ndarray  # [U] bucket id of each
    shapes: tuple[tuple[int, int], ...]  # bucket id -> (frames, tokens)
    token_ids: np.ndarray  # [sum of token lengths] int32, concatenated
    token_starts: np.ndarray  # [U + 1] offsets into token_ids
    prompts: np.ndarray | None  # [U, P] int32 per-utterance decoder prompts, or None
    default_prompt: np.ndarray | None  # [P] int32 prompt of padding rows
    global_batch: int
    local_batch: int
    process_index: int
    seed: int
    shuffle: bool
    train: bool
    output: str


def _epoch_batches(plan: _Plan, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """Global batches of one epoch: ([S, G] rows of plan rows or -1, [S] bucket ids)."""
    rows = np.arange(plan.positions.size)
    rng = np.random.default_rng([plan.seed, epoch])
    if plan.train and plan.shuffle:
        rows = rng.permutation(rows)
    batches, bucket_ids = [], []
    g = plan.global_batch
    for bucket in range(len(plan.shapes)):
        members = rows[plan.buckets[rows] == bucket]
        full = members.size // g if plan.train else -(-members.size // g)
        padded = np.full(full * g, -1, np.int64)
        usable = min(members.size, full * g)
        padded[:usable] = members[:usable]
        batches.append(padded.reshape(full, g))
        bucket_ids.append(np.full(full, bucket, np.int64))
    table = np.concatenate(batches) if batches else np.zeros((0, g), np.int64)
    ids = np.concatenate(bucket_ids) if bucket_ids else np.zeros(0, np.int64)
    if plan.train and plan.shuffle:
        order = rng.permutation(ids.size)
        table, ids = table[order], ids[order]
    return table, ids


def num_batches_per_epoch(plan: _Plan) -> int:
    counts = np.bincount(plan.buckets, minlength=len(plan.shapes))
    if plan.train:
        return int(np.sum(counts // plan.global_batch))
    return int(np.sum(-(-counts // plan.global_batch)))


class _BatchLoader:
    """Grain map: global batch number -> this process's batch (runs in grain workers)."""

    def __init__(self, plan: _Plan, source: Any, feature_config: FeatureConfig, pad_id: int):
        self._plan = plan
        self._source = source
        self._features = feature_config
        self._pad_id = int(pad_id)
        self._steps = num_batches_per_epoch(plan)
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"], state["_lock"] = {}, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        with self._lock:
            if epoch not in self._cache:
                if len(self._cache) >= 2:
                    self._cache.pop(min(self._cache))
                self._cache[epoch] = _epoch_batches(self._plan, epoch)
            return self._cache[epoch]

    def __call__(self, step: int) -> dict[str, np.ndarray]:
        plan = self._plan
        table, bucket_ids = self._epoch(int(step) // self._steps)
        within = int(step) % self._steps
        start = plan.process_index * plan.local_batch
        rows = table[within, start : start + plan.local_batch]  # [B] plan rows or -1
        frames, max_tokens = plan.shapes[int(bucket_ids[within])]
        b, config = plan.local_batch, self._features
        batch = {
            "feature_mask": np.zeros((b, frames), bool),
            "tokens": np.full((b, max_tokens), self._pad_id, np.int32),
            "token_lengths": np.zeros(b, np.int32),
            "example_mask": np.zeros(b, bool),
            "seconds": np.zeros(b, np.float32),
            "index": np.full(b, -1, np.int32),
            "_failure": np.zeros(b, np.int8),
            "_failure_detail": np.zeros(b, f"U{_DETAIL_CHARS}"),
        }
        if plan.prompts is not None:
            batch["prompt"] = np.tile(plan.default_prompt, (b, 1))  # [B, P]
        if plan.output == "audio":
            samples = samples_for_frames(frames, config)
            batch["audio"] = np.zeros((b, samples), np.float32)  # [B, N]
            batch["audio_lengths"] = np.zeros(b, np.int32)
        else:
            batch["features"] = np.zeros((b, frames, config.num_mels), np.float32)
        for slot, row in enumerate(rows):
            if row < 0:
                continue
            position = int(plan.positions[row])
            batch["index"][slot] = self._source.index(position)
            if plan.prompts is not None:
                batch["prompt"][slot] = plan.prompts[row]
            try:
                audio = self._source.load(position)
            except ValueError as err:  # AudioError is a ValueError
                logging.warning("Cannot load %s: %s", self._source.where, err)
                non_finite = isinstance(err, NonFiniteAudioError)
                batch["_failure"][slot] = _NON_FINITE if non_finite else _UNREADABLE
                batch["_failure_detail"][slot] = str(err)[:_DETAIL_CHARS]
                continue
            num_frames = int(config.num_frames(audio.size))
            if num_frames > frames + 2:  # More than rounding of the manifest's `seconds`.
                batch["_failure"][slot] = _LONGER_THAN_BUCKET
                batch["_failure_detail"][slot] = f"{num_frames} frames > {frames} when decoded"
                continue
            if plan.output == "audio":
                kept = min(audio.size, batch["audio"].shape[1])
                batch["audio"][slot, :kept] = audio[:kept]
                batch["audio_lengths"][slot] = kept
                num_frames = min(int(config.num_frames(kept)), frames)
            else:
                features = log_mel_numpy(audio, config)  # [T, M]
                num_frames = min(features.shape[0], frames)
                batch["features"][slot, :num_frames] = features[:num_frames]
            ids = plan.token_ids[plan.token_starts[row] : plan.token_starts[row + 1]]
            batch["feature_mask"][slot, :num_frames] = True
            batch["tokens"][slot, : ids.size] = ids
            batch["token_lengths"][slot] = ids.size
            batch["example_mask"][slot] = True
            batch["seconds"][slot] = audio.size / config.sample_rate
        return batch


def samples_for_frames(frames: int, config: FeatureConfig) -> int:
    """Largest sample count N with config.num_frames(N) == frames (the audio bucket length)."""
    samples = (frames + 1) * config.hop_length
    while config.num_frames(samples) > frames:
        samples -= 1
    return samples


def device_features(batch: Mapping[str, Any], feature_config: FeatureConfig) -> dict[str, Any]:
    """For `output="audio"` batches: log-mel on device (jnp, jittable), the batch contract back
    (feature batches pass through unchanged, so a train step can always call it).

    Returns a new dict with `features` [B, T, M] (== what the workers would compute, to float32
    precision) and without `audio` / `audio_lengths`; T is the bucket's frame count.
    """
    from mdm_asr_jax.audio import log_mel_jax

    if "features" in batch:  # output="features": already there.
        return dict(batch)
    out = {k: v for k, v in batch.items() if k not in ("audio", "audio_lengths")}
    frames = batch["feature_mask"].shape[1]
    features = log_mel_jax(batch["audio"], batch["audio_lengths"], feature_config)  # [B, T', M]
    out["features"] = features[:, :frames]
    return out


class _ReportFailures:
    """Main-process map after the workers: moves load failures into the DataReport."""

    def __init__(self, report: DataReport, source: Any, strict: bool):
        self._report, self._source, self._strict = report, source, strict
        self._by_index: dict[int, int] | None = None

    def _audio(self, index: int) -> str:
        if self._by_index is None:
            self._by_index = {self._source.index(i): i for i in range(len(self._source))}
        position = self._by_index.get(index)
        return "" if position is None else str(self._source.describe(position).get("audio", ""))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        failure = batch.pop("_failure")
        details = batch.pop("_failure_detail")
        for slot in np.flatnonzero(failure):
            index = int(batch["index"][slot])
            problem = Problem(
                self._source.where,
                index + 1,
                _FAILURE_REASONS[int(failure[slot])],
                str(details[slot]),
                self._audio(index),
            )
            if self._strict:
                raise ManifestError(f"{problem} (fix it, or run without --strict to skip it)")
            self._report.add(problem)
        return batch


def _bucket_of(values: np.ndarray, edges: Sequence[int]) -> np.ndarray:
    """Index of the smallest edge >= value (len(edges) when none holds it)."""
    return np.searchsorted(np.asarray(edges), values, side="left")


class Pipeline:
    """A configured input pipeline: iterate it for batches.

    `iter(pipeline)` returns a grain `DatasetIterator` with `get_state()` / `set_state()`
    (JSON-able; `grain.checkpoint.CheckpointSave(iterator)` stores it in an orbax checkpoint).
    Attributes: `report` (dropped utterances), `source`, `batch_shapes` ((T, L) of every
    possible batch), `steps_per_epoch`, `local_batch_size`.
    """

    def __init__(
        self,
        config: DataConfig,
        source: Any,
        dataset: grain.IterDataset,
        plan: _Plan,
        report: DataReport,
    ):
        self.config = config
        self.source = source
        self.dataset = dataset
        self.report = report
        self._plan = plan
        counts = np.bincount(plan.buckets, minlength=len(plan.shapes))
        used = counts >= plan.global_batch if plan.train else counts > 0
        self.batch_shapes: tuple[tuple[int, int], ...] = tuple(
            shape for shape, ok in zip(plan.shapes, used, strict=True) if ok
        )
        self.steps_per_epoch = num_batches_per_epoch(plan)
        self.local_batch_size = plan.local_batch
        self.num_utterances = int(plan.positions.size)

    def __iter__(self) -> grain.DatasetIterator:
        return iter(self.dataset)

    def describe(self, index: int) -> dict[str, Any]:
        """For eval output: {"audio": as written in the manifest, "text", "id"} of a batch
        `index` value (0-based manifest line or TFDS record)."""
        lookup = getattr(self, "_by_index", None)
        if lookup is None:
            lookup = {self.source.index(i): i for i in range(len(self.source))}
            self._by_index = lookup
        return self.source.describe(lookup[int(index)])


def make_pipeline(
    config: DataConfig | Mapping[str, Any] | Any,
    *,
    tokenizer: Any,
    feature_config: FeatureConfig,
    train: bool,
    process_index: int | None = None,
    process_count: int | None = None,
    source: Any = None,
) -> Pipeline:
    """Builds the input pipeline (see the module docstring).

    Args:
      config: a DataConfig or the trainer's `config.data` (dict / ConfigDict).
      tokenizer: any tokenizer of `mdm_asr_jax.text` (`encode`, `pad_id`).
      feature_config: the model's log-mel front end.
      train: True: shuffle (if config.shuffle), drop incomplete batches, `num_epochs`.
        False (eval): manifest order per bucket, one epoch, the last batch of each bucket padded
        (example_mask False, index -1); nothing dropped except reported bad utterances.
      process_index, process_count: this host's shard (default: jax.process_index/count()).
      source: an already opened source (default: `open_source(config.source)`).
    """
    config = DataConfig.from_any(config)
    config.validate()
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    if not 0 <= process_index < process_count:
        raise DataConfigError(f"process_index={process_index} not in [0, {process_count}).")
    if config.batch_size % process_count:
        raise DataConfigError(
            f"data.batch_size={config.batch_size} (global) must be divisible by the "
            f"{process_count} processes."
        )
    if source is None:
        source = open_source(
            config.source,
            strict=config.strict,
            tfds_data_dir=config.tfds_data_dir,
            index_cache_dir=config.index_cache_dir,
        )
    report = DataReport(source.problems)
    plan = _plan(config, source, tokenizer, feature_config, train, process_index, process_count, report)  # fmt: skip
    steps = num_batches_per_epoch(plan)
    if steps == 0:
        raise DataConfigError(
            f"{source.where}: {plan.positions.size} usable utterances make no full batch of "
            f"{config.batch_size} in any bucket; lower data.batch_size or use fewer buckets."
        )
    epochs = 1 if not train else (config.num_epochs or _FOREVER // steps)
    loader = _BatchLoader(plan, source, feature_config, tokenizer.pad_id)
    dataset = grain.MapDataset.range(steps * epochs).map(loader)
    iter_dataset = dataset.to_iter_dataset(
        grain.ReadOptions(
            num_threads=config.read_threads, prefetch_buffer_size=2 * config.read_threads
        )  # fmt: skip
    )
    if config.num_workers > 0:
        if not flags.FLAGS.is_parsed():  # Grain reads absl flags; outside absl.app (tests, Colab)
            flags.FLAGS.mark_as_parsed()  # they are still unparsed: use their defaults.
        iter_dataset = iter_dataset.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=config.num_workers, per_worker_buffer_size=config.worker_buffer
            )
        )
    iter_dataset = iter_dataset.map(_ReportFailures(report, source, config.strict))
    report.log_summary()
    pipeline = Pipeline(config, source, iter_dataset, plan, report)
    logging.info(
        "Data %s: %d utterances, %d steps/epoch, batch %d (local %d), shapes (T, L) %s",
        source.where, pipeline.num_utterances, steps, config.batch_size, plan.local_batch,
        list(pipeline.batch_shapes),
    )  # fmt: skip
    return pipeline


def _plan(
    config: DataConfig,
    source: Any,
    tokenizer: Any,
    feature_config: FeatureConfig,
    train: bool,
    process_index: int,
    process_count: int,
    report: DataReport,
) -> _Plan:
    frame_edges, token_edges = config.frame_buckets, config.token_lengths
    positions, buckets, token_rows, prompt_rows = [], [], [], []
    per_language = bool(getattr(tokenizer, "language_prompts", False))
    lang_of = getattr(source, "lang", None)
    prompts_by_lang: dict[str | None, tuple[int, ...] | str] = {}

    def prompt_of(i: int) -> tuple[int, ...] | str:
        """The utterance's prompt, or the reason it has none (an unknown language code)."""
        lang = lang_of(i) if lang_of is not None else None
        if lang not in prompts_by_lang:
            try:
                prompts_by_lang[lang] = tuple(tokenizer.prompt_for(lang))
            except ValueError as err:  # TokenizerError
                prompts_by_lang[lang] = str(err)
        return prompts_by_lang[lang]

    def drop(i: int, reason: str, detail: str) -> None:
        audio = str(source.describe(i).get("audio", "")) if hasattr(source, "describe") else ""
        problem = Problem(source.where, source.index(i) + 1, reason, detail, audio)
        if config.strict:
            raise ManifestError(f"{problem} (fix it, or run without --strict to skip it)")
        report.add(problem)

    for i in range(len(source)):
        text = source.text(i)
        seconds = source.seconds(i)
        ids = tokenizer.encode(text) if text.strip() else []
        frames = int(feature_config.num_frames(int(round(seconds * feature_config.sample_rate))))
        prompt = prompt_of(i) if per_language else ()
        if isinstance(prompt, str):
            drop(i, "unknown language", prompt)
        elif not ids and train:  # eval keeps them: hypothesis words score as insertions
            drop(i, "empty transcript", "no tokens")
        elif len(ids) > config.max_tokens:
            drop(i, "too many tokens", f"{len(ids)} > max_tokens={config.max_tokens}")
        elif seconds > config.max_seconds or frames > frame_edges[-1]:
            drop(i, "too long", f"{seconds:.2f}s, {frames} frames > {frame_edges[-1]}")
        elif seconds <= config.min_seconds or frames < 1:
            drop(i, "too short", f"{seconds:.3f}s")
        else:
            f_bucket = int(_bucket_of(np.array([frames]), frame_edges)[0])
            t_bucket = int(_bucket_of(np.array([len(ids)]), token_edges)[0])
            positions.append(i)
            buckets.append(f_bucket * len(token_edges) + t_bucket)
            token_rows.append(np.asarray(ids, np.int32))
            prompt_rows.append(prompt)
    shapes = tuple((f, t) for f in frame_edges for t in token_edges)
    lengths = np.array([r.size for r in token_rows], np.int64)
    default_prompt = np.asarray(tokenizer.prompt_ids if per_language else (), np.int32)
    return _Plan(
        positions=np.asarray(positions, np.int64),
        buckets=np.asarray(buckets, np.int64),
        shapes=shapes,
        token_ids=np.concatenate(token_rows) if token_rows else np.zeros(0, np.int32),
        token_starts=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        prompts=(
            np.asarray(prompt_rows, np.int32).reshape(len(prompt_rows), default_prompt.size)
            if per_language
            else None
        ),
        default_prompt=default_prompt if per_language else None,
        global_batch=config.batch_size,
        local_batch=config.batch_size // process_count,
        process_index=process_index,
        seed=config.seed,
        shuffle=config.shuffle,
        train=train,
        output=config.output,
    )


def batch_spec(
    config: DataConfig | Mapping[str, Any] | Any, feature_config: FeatureConfig, local: int
) -> dict[str, tuple[tuple[int, ...], str]]:
    """Shapes and dtypes of a batch for the largest bucket (for `jax.eval_shape` / init)."""
    config = DataConfig.from_any(config)
    frames, tokens = config.frame_buckets[-1], config.token_lengths[-1]
    return {
        "features": ((local, frames, feature_config.num_mels), "float32"),
        "feature_mask": ((local, frames), "bool"),
        "tokens": ((local, tokens), "int32"),
        "token_lengths": ((local,), "int32"),
        "example_mask": ((local,), "bool"),
        "seconds": ((local,), "float32"),
        "index": ((local,), "int32"),
    }


__all__ = [
    "DataConfig",
    "DataConfigError",
    "Pipeline",
    "batch_spec",
    "device_features",
    "make_pipeline",
    "num_batches_per_epoch",
]
