"""Input pipeline throughput: does computing log-mel on the host keep up with decoding audio?

Synthesises a small corpus (sentences from `../shared/data/text/gutenberg_en.txt`, eSpeak NG
voices, 22.05 kHz) unless --manifest is given, then prints one JSON line per measurement:

* `stage=single_thread`: per utterance, in the main thread, decoding + resampling to 16 kHz
  (`load_audio`), host log-mel (`log_mel_numpy`, the pipeline's path) and the float64 reference
  (`log_mel_reference`), interleaved utterance by utterance for --rounds rounds so that any
  change in machine load hits all three alike. Rates in audio-seconds per second and the ratios
  `log_mel_over_decode` (>= 1: featurising is cheaper than decoding) and
  `log_mel_speedup_over_reference`. Also `log_mel_jax` on the default JAX device (8 x 10 s
  batches, after compiling).
* `stage=pipeline`, one per --workers value: the grain training pipeline twice, with
  `output=features` (decode -> 16 kHz -> log-mel in the workers -> pad into buckets -> batch)
  and `output=audio` (the same without log-mel), both warmed up, then timed in alternating
  chunks of --chunk batches. `features_over_audio` is the ratio of their audio-seconds/s: the
  cost of host features relative to decoding alone (1.0 = free).

  python benchmarks/input_pipeline.py                       # ~2 min on 2 CPU cores
  python benchmarks/input_pipeline.py --manifest=train.jsonl --workers=0,4,8,16
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("manifest", None, "Manifest to read (default: synthesise --num sentences).")
flags.DEFINE_integer("num", 160, "Sentences to synthesise when no --manifest is given.")
flags.DEFINE_list("workers", ["0"], "Grain worker process counts to measure.")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("batches", 24, "Batches timed per pipeline and worker count (after warmup).")
flags.DEFINE_integer("chunk", 4, "Batches per timed chunk; the two pipelines alternate chunks.")
flags.DEFINE_integer("warmup", 2, "Batches skipped before timing (worker start-up).")
flags.DEFINE_integer("read_threads", 1, "Threads per worker (or in the main process).")
flags.DEFINE_enum("features", "whisper", ["whisper", "nemo"], "Log-mel kind.")
flags.DEFINE_integer("utterances", 40, "Utterances timed by the single_thread stage.")
flags.DEFINE_integer("rounds", 3, "Rounds over those utterances in the single_thread stage.")


class _CharTokenizer:
    """Tokenization happens once at plan time, outside the timed loop; any tokenizer will do."""

    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return [4 + (ord(c) % 250) for c in text]


def _host_description() -> str:
    """The host CPU, e.g. "AMD EPYC 7B13 (2 cores)": host work is what this benchmark times."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores)"


def _host_features_dtype(kind: str) -> str:
    return "float32" if kind == "whisper" else "float64"  # see audio.log_mel_numpy


def _synthesise(out_dir: str, num: int) -> str:
    from mdm_asr_jax.data import synth

    text = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "gutenberg_en.txt"
    if not text.exists():
        raise SystemExit(f"no sentence file at {text}; pass --manifest=M.jsonl instead")
    sentences, lines, _ = synth.read_sentences(str(text), max_sentences=num)
    manifests, _ = synth.build_synth_corpus(
        sentences, out_dir, source_lines=lines, seed=0, num_workers=os.cpu_count() or 1
    )
    return manifests["train"]


def _single_thread(manifest: str, feature_config) -> dict:
    import jax

    from mdm_asr_jax.audio import load_audio, log_mel_jax, log_mel_numpy, log_mel_reference
    from mdm_asr_jax.data.manifest import read_manifest

    entries, _ = read_manifest(manifest)
    entries = entries[: FLAGS.utterances]
    spent = {"decode": 0.0, "log_mel_numpy": 0.0, "log_mel_reference": 0.0}
    seconds = 0.0
    for _ in range(FLAGS.rounds):
        for entry in entries:
            start = time.perf_counter()
            audio = load_audio(entry.audio)
            spent["decode"] += time.perf_counter() - start
            start = time.perf_counter()
            log_mel_numpy(audio, feature_config)
            spent["log_mel_numpy"] += time.perf_counter() - start
            start = time.perf_counter()
            log_mel_reference(audio, feature_config)
            spent["log_mel_reference"] += time.perf_counter() - start
            seconds += audio.size / feature_config.sample_rate
    rates = {name: seconds / max(value, 1e-9) for name, value in spent.items()}

    batch = np.zeros((8, 10 * 16000), np.float32)  # [B, N]: 8 x 10 s
    log_mel_jax(batch, None, feature_config).block_until_ready()  # compile
    start = time.perf_counter()
    for _ in range(5):
        log_mel_jax(batch, None, feature_config).block_until_ready()
    jax_rate = 5 * 80 / (time.perf_counter() - start)
    return {
        "benchmark": "input_pipeline",
        "stage": "single_thread",
        "timed": "per utterance, interleaved: load_audio (decode + resample to 16 kHz), "
        "log_mel_numpy, log_mel_reference",
        "device": f"host {_host_description()}",
        "features": feature_config.kind,
        "host_features_dtype": _host_features_dtype(feature_config.kind),
        "utterances": len(entries),
        "rounds": FLAGS.rounds,
        "audio_seconds": round(seconds, 2),
        "decode_audio_seconds_per_s": round(rates["decode"], 1),
        "log_mel_numpy_audio_seconds_per_s": round(rates["log_mel_numpy"], 1),
        "log_mel_reference_audio_seconds_per_s": round(rates["log_mel_reference"], 1),
        "log_mel_over_decode": round(rates["log_mel_numpy"] / rates["decode"], 2),
        "log_mel_speedup_over_reference": round(
            rates["log_mel_numpy"] / rates["log_mel_reference"], 2
        ),
        "log_mel_jax_audio_seconds_per_s": round(jax_rate, 1),
        "jax_device": jax.devices()[0].device_kind,
    }


def _pipeline(manifest: str, workers: int, output: str, feature_config):
    from mdm_asr_jax.data.pipeline import DataConfig, make_pipeline

    config = DataConfig(
        source=manifest,
        batch_size=FLAGS.batch_size,
        frame_buckets=(500, 1000, 2000, 3000),
        max_tokens=1024,
        num_workers=workers,
        read_threads=FLAGS.read_threads,
        output=output,
        seed=0,
    )
    return make_pipeline(
        config,
        tokenizer=_CharTokenizer(),
        feature_config=feature_config,
        train=True,
        process_index=0,
        process_count=1,
    )


def _paired(manifest: str, workers: int, feature_config) -> dict:
    outputs = ("features", "audio")
    iterators = {o: iter(_pipeline(manifest, workers, o, feature_config)) for o in outputs}
    for iterator in iterators.values():
        for _ in range(FLAGS.warmup):
            next(iterator)
    spent = dict.fromkeys(outputs, 0.0)
    seconds = dict.fromkeys(outputs, 0.0)
    utterances = dict.fromkeys(outputs, 0)
    chunk = max(FLAGS.chunk, 1)
    for _ in range(max(FLAGS.batches // chunk, 1)):
        for output in outputs:
            start = time.perf_counter()
            for _ in range(chunk):
                batch = next(iterators[output])
                utterances[output] += int(batch["example_mask"].sum())
                seconds[output] += float(batch["seconds"].sum())
            spent[output] += time.perf_counter() - start
    for iterator in iterators.values():
        if hasattr(iterator, "close"):
            iterator.close()
    rates = {o: seconds[o] / max(spent[o], 1e-9) for o in outputs}
    return {
        "benchmark": "input_pipeline",
        "stage": "pipeline",
        "timed": "grain training pipeline, output=features vs output=audio, alternating chunks "
        f"of {chunk} batches",
        "device": f"host {_host_description()}",
        "features": feature_config.kind,
        "host_features_dtype": _host_features_dtype(feature_config.kind),
        "num_workers": workers,
        "read_threads": FLAGS.read_threads,
        "batch_size": FLAGS.batch_size,
        "batches_each": max(FLAGS.batches // chunk, 1) * chunk,
        "features_audio_seconds_per_s": round(rates["features"], 1),
        "audio_only_audio_seconds_per_s": round(rates["audio"], 1),
        "features_over_audio": round(rates["features"] / rates["audio"], 2),
        "features_utterances_per_s": round(utterances["features"] / spent["features"], 1),
        "mean_utterance_s": round(seconds["features"] / max(utterances["features"], 1), 2),
    }


def main(argv: list[str]) -> None:
    del argv
    from mdm_asr_jax.audio import FeatureConfig

    if FLAGS.manifest is not None and not os.path.exists(FLAGS.manifest):
        raise SystemExit(f"--manifest={FLAGS.manifest!r} does not exist; give a JSONL manifest")
    feature_config = FeatureConfig(kind=FLAGS.features)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = FLAGS.manifest or _synthesise(tmp, FLAGS.num)
        print(json.dumps(_single_thread(manifest, feature_config)), flush=True)
        for workers in FLAGS.workers:
            print(json.dumps(_paired(manifest, int(workers), feature_config)), flush=True)


if __name__ == "__main__":
    app.run(main)
