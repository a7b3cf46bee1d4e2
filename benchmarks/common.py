"""Shared helpers for the benchmarks: timing, device description, peak memory, tiny models.

Every benchmark prints one JSON line per measurement (`emit`) naming the device and dtype, so
lines from different machines can be pooled. Timing is always after a warm-up call (which
compiles), with `jax.block_until_ready`, repeated, and the median taken (`time_call`).

Legend: B batch, T frames, M mel bins, L tokens, V vocabulary.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from mdm_asr_jax.nn.config import ModelConfig, decoder_config, encoder_config

FRAME_RATE = 100.0  # log-mel frames per second (10 ms hop) for whisper/nemo features


def device_description() -> str:
    """e.g. "cpu x1" or "NVIDIA H100 80GB HBM3 x1": the kind of the device that runs the code."""
    device = jax.local_devices()[0]
    return f"{device.device_kind} x1"


def emit(record: dict[str, Any], stream=None) -> None:
    """Prints one measurement as a JSON line (flushed, so partial runs still leave results)."""
    stream = stream or sys.stdout
    stream.write(json.dumps(record, sort_keys=False) + "\n")
    stream.flush()


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> tuple[float, float]:
    """(median seconds of `repeats` timed calls, seconds of the first warm-up call).

    The first warm-up call includes tracing and compilation; its time is returned apart so the
    caller can report compile time separately. Each call is waited for with
    `jax.block_until_ready`.
    """
    first = 0.0
    for i in range(max(warmup, 1)):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        if i == 0:
            first = time.perf_counter() - start
    times = []
    for _ in range(max(repeats, 1)):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


def peak_memory() -> tuple[int | None, str]:
    """(peak bytes, where it comes from): device allocator stats if the backend has them, else
    this process's resident-set high-water mark (`resource.getrusage`, monotonic over the
    process: it includes everything run before)."""
    stats = None
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001 - backends without allocator stats raise or return None
        stats = None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device memory_stats peak_bytes_in_use"
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(rss_kib) * 1024, "process RSS high-water (getrusage ru_maxrss)"


def compiled_memory(compiled: Any) -> dict[str, int] | None:
    """XLA's static memory plan of a compiled function (bytes): arguments, outputs, temporaries.

    Available on CPU, GPU and TPU; independent of what else ran in the process, so it compares
    objectives fairly where RSS cannot.
    """
    try:
        analysis = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend implements it
        return None
    if analysis is None:
        return None
    return {
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "alias_bytes": int(getattr(analysis, "alias_size_in_bytes", 0)),
    }


def named_model_config(
    size: str,
    *,
    vocab_size: int = 256,
    canvas_length: int = 64,
    mdm: bool = True,
    ar: bool = True,
    prompt_ids: tuple[int, ...] = (2,),
    num_mels: int = 80,
    subsampling: int = 4,
    dtype: str = "float32",
) -> ModelConfig:
    """A Conformer + Transformer-decoder config from the size tables in `nn/config.py`.

    The MDM and AR decoders (when both are on) have the same size, so their speeds compare.
    Dropout is off: benchmarks time inference-mode graphs (training keeps the config's own).
    """
    max_length = canvas_length + len(prompt_ids)
    common = dict(max_length=max_length, dropout=0.0)
    return ModelConfig(
        vocab_size=vocab_size,
        encoder=encoder_config(size, num_mels=num_mels, subsampling=subsampling, dropout=0.0),
        mdm_decoder=decoder_config(size, bidirectional=True, **common) if mdm else None,
        ar_decoder=decoder_config(size, bidirectional=False, **common) if ar else None,
        prompt_ids=prompt_ids,
        pad_id=0,
        eos_id=3,
        dtype=dtype,
    ).validate()


def synthetic_batch(
    batch_size: int,
    seconds: float,
    *,
    num_mels: int = 80,
    num_tokens: int = 16,
    vocab_size: int = 256,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """A batch in the data-pipeline layout with random log-mel features and transcripts.

    features [B,T,M] (T = seconds * 100), every frame valid; tokens [B,L] drawn from ids
    4..V-2 (never pad / bos / eos / mask), all rows `num_tokens` long.
    """
    rng = np.random.default_rng(seed)
    frames = int(round(seconds * FRAME_RATE))
    features = rng.normal(size=(batch_size, frames, num_mels)).astype(np.float32)
    tokens = rng.integers(4, vocab_size - 1, size=(batch_size, num_tokens)).astype(np.int32)
    return dict(
        features=features,
        feature_mask=np.ones((batch_size, frames), bool),
        tokens=tokens,
        token_lengths=np.full((batch_size,), num_tokens, np.int32),
        example_mask=np.ones((batch_size,), bool),
        seconds=np.full((batch_size,), seconds, np.float32),
        index=np.arange(batch_size, dtype=np.int32),
    )


def cpu_note() -> str:
    """A note for CPU runs: how many cores the process may use."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores"


def table_row(
    benchmark: str, model: str, result: dict[str, Any], checkpoint: Any, **keys: Any
) -> dict[str, Any]:
    """One JSON line of a model-comparison table from an eval result: the model's label, the
    extra `keys` (test set, language, normaliser), WER / RTFx rounded, the NFE cap of MDM samplers (None for AR), and
    what the measurement ran on."""
    return {
        "benchmark": benchmark,
        "model": model,
        **keys,
        "sampler": result["sampler"],
        "nfe": None if str(result["sampler"]).startswith("ar_") else result.get("nfe"),
        "wer": round(result["wer"], 2),
        "rtfx": round(result["rtfx"], 2),
        "mean_nfe": result.get("mean_nfe"),
        "n": result["n"],
        "audio_seconds": result["audio_seconds"],
        "compile_seconds": round(result["compile_seconds"], 1),
        "device": result["device"],
        "dtype": result["dtype"],
        "batch_size": result["batch_size"],
        "checkpoint": str(checkpoint),
        "step": result.get("step"),
    }


# faster-whisper's transcribe options for greedy decoding comparable to ours: one beam, no
# timestamps, English, no temperature fallback, no conditioning on earlier text, no VAD.
FASTER_WHISPER_GREEDY = dict(
    beam_size=1,
    without_timestamps=True,
    language="en",
    temperature=0.0,
    condition_on_previous_text=False,
    vad_filter=False,
)
