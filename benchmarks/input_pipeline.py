"""Input pipeline throughput: utterances/s and audio-seconds/s per grain worker count.

Synthesises a small corpus (sentences from `../shared/data/text/gutenberg_en.txt`, eSpeak NG
voices) unless --manifest is given, then for each --workers value builds the training pipeline
(decode -> 16 kHz -> log-mel in numpy -> pad into buckets -> batch), skips the first batches
(worker start-up) and times the next ones. Prints one JSON line per (output, worker count):
`output=features` computes log-mel in the workers (numpy), `output=audio` only decodes and
leaves log-mel to the device (`data.pipeline.device_features`). A first line `single_thread`
splits the per-utterance cost: decoding, log-mel in numpy, and log-mel with `log_mel_jax` on the
default JAX device; these numbers decide where features are computed (module docstring of
`mdm_asr_jax/data/pipeline.py`).

  python benchmarks/input_pipeline.py                       # ~2 min on 2 CPU cores
  python benchmarks/input_pipeline.py --manifest=train.jsonl --workers=0,4,8,16
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("manifest", None, "Manifest to read (default: synthesise --num sentences).")
flags.DEFINE_integer("num", 160, "Sentences to synthesise when no --manifest is given.")
flags.DEFINE_list("workers", ["0", "1", "2"], "Grain worker process counts to measure.")
flags.DEFINE_integer("batch_size", 8, "Batch size.")
flags.DEFINE_integer("batches", 12, "Batches timed per worker count (after --warmup).")
flags.DEFINE_integer("warmup", 2, "Batches skipped before timing (worker start-up).")
flags.DEFINE_integer("read_threads", 1, "Threads per worker (or in the main process).")
flags.DEFINE_enum("features", "whisper", ["whisper", "nemo"], "Log-mel kind.")
flags.DEFINE_list("outputs", ["features", "audio"], "Pipeline outputs to measure (data.output).")


class _CharTokenizer:
    """Tokenization happens once at plan time, outside the timed loop; any tokenizer will do."""

    pad_id = 0

    def encode(self, text: str) -> list[int]:
        return [4 + (ord(c) % 250) for c in text]


def _synthesise(out_dir: str, num: int) -> str:
    from mdm_asr_jax.data import synth

    text = Path(__file__).resolve().parents[2] / "shared" / "data" / "text" / "gutenberg_en.txt"
    sentences, lines, _ = synth.read_sentences(str(text), max_sentences=num)
    manifests, _ = synth.build_synth_corpus(
        sentences, out_dir, source_lines=lines, seed=0, num_workers=os.cpu_count() or 1
    )
    return manifests["train"]


def _stages(manifest: str, feature_config, limit: int = 40) -> dict:
    from mdm_asr_jax.audio import load_audio, log_mel_numpy
    from mdm_asr_jax.data.manifest import read_manifest

    entries, _ = read_manifest(manifest)
    entries = entries[:limit]
    start = time.perf_counter()
    audios = [load_audio(e.audio) for e in entries]
    decode = time.perf_counter() - start
    start = time.perf_counter()
    for audio in audios:
        log_mel_numpy(audio, feature_config)
    features = time.perf_counter() - start
    seconds = sum(a.size for a in audios) / 16000
    import jax

    from mdm_asr_jax.audio import log_mel_jax

    batch = np.zeros((8, 10 * 16000), np.float32)  # [B, N]: 8 x 10 s
    log_mel_jax(batch, None, feature_config).block_until_ready()  # compile
    start = time.perf_counter()
    for _ in range(5):
        log_mel_jax(batch, None, feature_config).block_until_ready()
    jax_rate = 5 * 80 / (time.perf_counter() - start)
    return {
        "benchmark": "input_pipeline",
        "stage": "single_thread",
        "utterances": len(audios),
        "audio_seconds": round(seconds, 2),
        "decode_audio_seconds_per_s": round(seconds / decode, 1),
        "log_mel_numpy_audio_seconds_per_s": round(seconds / features, 1),
        "log_mel_jax_audio_seconds_per_s": round(jax_rate, 1),
        "jax_device": jax.devices()[0].device_kind,
    }


def _measure(manifest: str, workers: int, output: str, feature_config) -> dict:
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
    pipeline = make_pipeline(
        config,
        tokenizer=_CharTokenizer(),
        feature_config=feature_config,
        train=True,
        process_index=0,
        process_count=1,
    )
    iterator = iter(pipeline)
    for _ in range(FLAGS.warmup):
        next(iterator)
    utterances, seconds = 0, 0.0
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
        batch = next(iterator)
        utterances += int(batch["example_mask"].sum())
        seconds += float(batch["seconds"].sum())
    elapsed = time.perf_counter() - start
    if hasattr(iterator, "close"):
        iterator.close()
    return {
        "benchmark": "input_pipeline",
        "output": output,
        "num_workers": workers,
        "read_threads": FLAGS.read_threads,
        "batch_size": FLAGS.batch_size,
        "features": feature_config.kind,
        "utterances_per_s": round(utterances / elapsed, 1),
        "audio_seconds_per_s": round(seconds / elapsed, 1),
        "mean_utterance_s": round(seconds / max(utterances, 1), 2),
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str]) -> None:
    del argv
    from mdm_asr_jax.audio import FeatureConfig

    feature_config = FeatureConfig(kind=FLAGS.features)
    with tempfile.TemporaryDirectory() as tmp:
        manifest = FLAGS.manifest or _synthesise(tmp, FLAGS.num)
        print(json.dumps(_stages(manifest, feature_config)), flush=True)
        for output in FLAGS.outputs:
            for workers in FLAGS.workers:
                line = _measure(manifest, int(workers), output, feature_config)
                print(json.dumps(line), flush=True)


if __name__ == "__main__":
    app.run(main)
