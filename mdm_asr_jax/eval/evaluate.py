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
  3. Scoring: both sides normalised (by default with the normaliser the checkpoint records;
     see `resolve_normalizer`), edit counts and reference words summed over the corpus and
     over JAX processes, divided once. Pieces of an utterance that was split at pauses (longer
     than the encoder takes) are joined first; empty references count hypothesis words as
     insertions.

Multi-host: each process decodes its own shard of the utterances (every process runs the same
number of batches, padding with empty ones, so collectives inside `decode` stay in step) and
the counts and seconds are gathered before division.

Result (the eval-output contract of docs/design.md, one dict per (sampler, nfe)): wer, cer,
rtfx, compile_seconds, decode_seconds, audio_seconds, n, mean_nfe, sampler, nfe, batch_size,
device, dtype, normalizer, normalizer_source, skipped {count, by_reason, items [{source, line,
audio, reason, detail}]}, checkpoint, step. `n` counts utterances: an over-long utterance that
eval split into pieces (`EvalSet.pieces`) is one, scored on its joined hypothesis.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import logging

from mdm_asr_jax.checkpoint import LoadedCheckpoint, load_checkpoint
from mdm_asr_jax.data.manifest import DataReport
from mdm_asr_jax.decode import DecodeOutput, decode
from mdm_asr_jax.diffusion.samplers import PAPER_SAMPLER, SamplerSpecError, parse_sampler
from mdm_asr_jax.eval.metrics import (
    CompileWatcher,
    DecodeTimer,
    count_errors,
    gather_counts,
    rtfx_from,
    sum_across_processes,
)
from mdm_asr_jax.inference import InferenceError
from mdm_asr_jax.inference.eval_set import EvalSet, cached_eval_set, load_eval_set
from mdm_asr_jax.inference.heads import check_sampler
from mdm_asr_jax.inference.placement import (
    device_name,
    inner_params,
    local_data_mesh,
    place_batch,
    place_params,
)
from mdm_asr_jax.nn.model import ASRModel
from mdm_asr_jax.progress import progress

# decode(model, params, batch, spec, nfe, key, **decode_kwargs) -> DecodeOutput; tests pass a
# stand-in with the same signature.
DecodeFn = Callable[..., DecodeOutput]
EvalError = InferenceError  # one error type for the whole read-decode-score path
DEFAULT_NORMALIZER = "english"  # for checkpoints that record none (older than the field)


def resolve_normalizer(
    normalizer: str | Callable[[str], str] | None, checkpoint: LoadedCheckpoint
) -> tuple[str | Callable[[str], str], str]:
    """(normaliser, where it came from) for scoring `checkpoint`.

    In order: `normalizer` when given ("flag"); the checkpoint's `decoding.normalizer`
    ("checkpoint"); the `eval.normalizer` of the training config a workdir records in its
    config.json `info` ("training config", for workdirs written before the decoding field);
    else `DEFAULT_NORMALIZER` ("default", with a one-line warning: the WER of a checkpoint
    trained on digits or another language may then be meaningless).
    """
    if normalizer is not None:
        return normalizer, "flag"
    recorded = getattr(checkpoint.decoding, "normalizer", None)
    if recorded:
        return recorded, "checkpoint"
    info = checkpoint.info if isinstance(checkpoint.info, dict) else {}
    training = ((info.get("config") or {}).get("eval") or {}).get("normalizer")
    if isinstance(training, str) and training:
        return training, "training config"
    logging.warning(
        "%s records no normaliser; scoring with %r (pass --normalizer to choose)",
        checkpoint.path,
        DEFAULT_NORMALIZER,
    )
    return DEFAULT_NORMALIZER, "default"


class Evaluator:
    """Decodes and scores one `EvalSet` with one model, for any number of (sampler, nfe) runs."""

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        eval_set: EvalSet,
        *,
        normalizer: str | Callable[[str], str] | None = None,
        decode_fn: DecodeFn = decode,
        seed: int | jax.Array = 0,
        with_cer: bool = True,
        decode_kwargs: dict[str, Any] | None = None,
        shard_batches: bool = True,
    ):
        if not eval_set.batches:
            raise EvalError(
                f"no utterance left to evaluate in {eval_set.source} ({eval_set.report.summary()})"
            )
        self.checkpoint = checkpoint
        self.eval_set = eval_set
        self.model = ASRModel(checkpoint.model_config)
        batch_size = int(eval_set.batches[0]["example_mask"].shape[0])
        self.mesh = local_data_mesh(batch_size) if shard_batches else None
        self.params = place_params(inner_params(checkpoint.params), self.mesh)
        self.normalizer, self.normalizer_source = resolve_normalizer(normalizer, checkpoint)
        self.decode_fn = decode_fn
        self.seed = seed  # an int, or a jax PRNG key
        defaults = checkpoint.decoding.decode_kwargs(
            checkpoint.tokenizer, checkpoint.model_config.eos_id
        )
        self.decode_kwargs = {**defaults, **(decode_kwargs or {})}
        self.with_cer = with_cer
        self._device_batches: list[dict[str, Any]] | None = None
        self._warned_recompile = False

    def _device(self) -> list[dict[str, Any]]:
        # Put features on device once for the whole sweep (the transfer is not decode time).
        if self._device_batches is None:
            self._device_batches = [place_batch(b, self.mesh) for b in self.eval_set.batches]
        return self._device_batches

    def _decode(self, batch: dict[str, Any], spec: str, nfe: int, key: jax.Array) -> DecodeOutput:
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
        tokenizer = self.checkpoint.tokenizer
        base_key = jax.random.key(self.seed) if isinstance(self.seed, int) else self.seed
        timer = DecodeTimer()
        hyps: dict[int, str] = {}
        nfe_sum, nfe_count = 0.0, 0
        label = f"decode {config.spec}" + (f" nfe={nfe}" if config.family == "mdm" else "")
        for number, batch in enumerate(
            progress(self._device(), desc=label, unit="batch", leave=False)
        ):
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
            for row, index in enumerate(host["index"]):
                if not host["example_mask"][row]:
                    continue
                hyps[int(index)] = tokenizer.decode(result.ids[row])
                nfe_sum += float(result.nfe_used[row])
                nfe_count += 1
        for index, numbers in self.eval_set.pieces.items():  # split utterances: join in order
            texts = [hyps.pop(n, "").strip() for n in numbers]
            hyps[index] = " ".join(t for t in texts if t)
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
                        **self._pieces_field(i),
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
            "normalizer_source": self.normalizer_source,
            "skipped": skipped_summary(report),
            "source": self.eval_set.source,
            "checkpoint": str(self.checkpoint.path),
            "step": self.checkpoint.info.get("step"),
        }

    def _pieces_field(self, index: int) -> dict[str, int]:
        numbers = self.eval_set.pieces.get(index)
        return {"pieces": len(numbers)} if numbers is not None else {}


def skipped_summary(report: DataReport) -> dict[str, Any]:
    """The contract's `skipped`: count, count per reason, and each skipped line with its
    source, 1-based line number, audio path as written (empty when unknown), reason and
    detail."""
    problems = report.problems
    return {
        "count": len(problems),
        "by_reason": report.counts(),
        "items": [
            {
                "source": p.where,
                "line": p.line,
                "audio": p.audio,
                "reason": p.reason,
                "detail": p.detail,
            }
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
    if not samplers:
        raise EvalError(f"no sampler given: pass --sampler=SPEC (e.g. {PAPER_SAMPLER!r})")
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
    normalizer: str | Callable[[str], str] | None = None,
    hyps: str | os.PathLike | None = None,
    strict: bool = False,
    max_utterances: int | None = None,
    seed: int | jax.Array = 0,
    decode_fn: DecodeFn = decode,
    decode_kwargs: dict[str, Any] | None = None,
    tfds_data_dir: str | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Evaluates every (sampler, nfe) of a sweep on one eval set; one result dict each.

    The checkpoint is loaded and the features computed once. `samplers` / `nfes` default to
    the checkpoint's decoding defaults (its config's `decoding.sampler` / `decoding.nfe`), else
    PBEB (lam 0.2, gamma 0.05) at 32 NFEs. `normalizer` defaults to the one the checkpoint
    records (`resolve_normalizer`; the result's `normalizer_source` says which). With several runs, hypotheses go
    to `hyps` with the run number inserted before the suffix (HYPS.0.jsonl, HYPS.1.jsonl, ...).
    `on_result` is called after each run (the CLI prints one JSON line per run as it goes).
    """
    checkpoint = as_checkpoint(checkpoint)
    if not samplers:
        samplers = [checkpoint.decoding.sampler_or_default]
    if not nfes:
        nfes = [checkpoint.decoding.nfe_or_default]
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


def evaluate_params(
    checkpoint: LoadedCheckpoint,
    *,
    sampler: str | None = None,
    nfe: int | None = None,
    key: jax.Array | None = None,
    cache_eval_set: bool = True,
    **kwargs: Any,
) -> dict[str, Any]:
    """`evaluate` on in-memory params (the trainer's periodic and final eval).

    The trainer builds the `LoadedCheckpoint` itself (its params, its decoding defaults: the
    canvas it trains, the base model's token suppression). With `cache_eval_set` the features
    of the last two eval sets stay in host memory, so a periodic eval reads and featurises its
    dev set once per run, not at every eval.

    kwargs: manifest / dataset / eval_set, batch_size, normalizer, max_utterances, strict,
    tfds_data_dir, decode_fn, decode_kwargs (see `evaluate_sweep`); `key` seeds random samplers.
    """
    if cache_eval_set and kwargs.get("eval_set") is None:
        options = {
            k: kwargs.get(k)
            for k in ("manifest", "dataset", "strict", "max_utterances", "tfds_data_dir")
        }
        kwargs["eval_set"] = cached_eval_set(
            checkpoint, batch_size=int(kwargs.get("batch_size", 16)), **options
        )
    return evaluate(checkpoint, sampler=sampler, nfe=nfe, seed=0 if key is None else key, **kwargs)
