"""mdm-asr-prepare: build corpora, manifests, tokenizers and TFDS datasets; check manifests.

Usage:
  mdm-asr-prepare {synth|fsdd|spm|tfds|index|check} --flags

Subcommands (each prints one JSON line: what it wrote and what it dropped):
  synth  eSpeak NG speech from a text file (--text_file) or a built-in generator
         (--generate=digits|commands|mixed), with held-out sentences and voices:
           mdm-asr-prepare synth --generate=mixed --num_sentences=3000 --out_dir=data/synth \\
             --dev_fraction=0.05 --test_fraction=0.05 --test_voices=3 --snr_db=15,40
  fsdd   connected digits from Free Spoken Digit Dataset recordings, one speaker held out:
           mdm-asr-prepare fsdd --fsdd_dir=../shared/data/fsdd --out_dir=data/fsdd \\
             --test_speaker=george
  spm    a SentencePiece model from manifest transcripts (and/or a text file):
           mdm-asr-prepare spm --manifests=data/synth/train.jsonl --vocab_size=256 \\
             --out_dir=data/spm
  tfds   a TFDS dataset (array_record) from manifests, read back with source=tfds:NAME/SPLIT:
           mdm-asr-prepare tfds --name=synth_digits --data_dir=data/tfds \\
             --manifests=train=data/synth/train.jsonl,test=data/synth/test.jsonl
  index  scan a TFDS split once (texts, durations for bucketing) and cache the result next to
         the dataset, so the hosts of a multi-host job don't each scan it:
           mdm-asr-prepare index --source=tfds:librispeech/train_clean100 --data_dir=/data/tfds
  check  validate a manifest (lines, files, audio headers) and list its problems:
           mdm-asr-prepare check --manifest=data/synth/train.jsonl
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable

from absl import app, flags

from mdm_asr_jax.cli.common import run_app
from mdm_asr_jax.data import synth
from mdm_asr_jax.data.fsdd import build_fsdd_corpus
from mdm_asr_jax.data.manifest import read_manifest
from mdm_asr_jax.data.sources import ManifestSource, SourceError, TFDSSource
from mdm_asr_jax.data.tfds_builder import manifests_to_tfds
from mdm_asr_jax.text import SentencePieceTokenizer

FLAGS = flags.FLAGS
# Shared.
flags.DEFINE_string("out_dir", None, "synth/fsdd/spm: output folder (created).")
flags.DEFINE_integer("seed", 0, "synth/fsdd: random seed (same seed, same corpus).")
flags.DEFINE_bool("strict", False, "spm/tfds/check: fail on the first bad manifest line.")
# synth.
flags.DEFINE_string("text_file", None, "synth: sentences, one per line; spm: extra text.")
flags.DEFINE_enum("generate", None, ["digits", "commands", "mixed"], "synth: built-in text.")
flags.DEFINE_integer("num_sentences", 1000, "synth --generate: number of distinct sentences.")
flags.DEFINE_integer("max_sentences", None, "synth --text_file: read at most this many.")
flags.DEFINE_enum("lang", "en", ["en", "fr", "de", "es"], "synth: language.")
flags.DEFINE_list("voices", None, "synth: voice variants (default: 20 human-like ones).")
flags.DEFINE_list("test_voices", ["0"], "synth: held-out voices for test: a count or names.")
flags.DEFINE_float("dev_fraction", 0.0, "synth: fraction of sentences for the dev split.")
flags.DEFINE_float("test_fraction", 0.0, "synth: fraction of sentences for the test split.")
flags.DEFINE_integer("renditions", 1, "synth: renditions (voice/rate/pitch draws) per sentence.")
flags.DEFINE_list("rate", ["140", "200"], "synth: speaking rate range, words per minute.")
flags.DEFINE_list("pitch", ["35", "65"], "synth: pitch range (0-100).")
flags.DEFINE_list("snr_db", [], "synth: additive white noise SNR range in dB (empty: none).")
flags.DEFINE_float("max_seconds", 30.0, "synth: utterances longer than this are reported.")
flags.DEFINE_integer("num_workers", 1, "synth: processes.")
# fsdd.
flags.DEFINE_string("fsdd_dir", None, "fsdd: folder of {digit}_{speaker}_{index}.wav files.")
flags.DEFINE_list("test_speaker", [], "fsdd: speakers held out for the test split.")
flags.DEFINE_integer("num_train", 2000, "fsdd: train utterances.")
flags.DEFINE_integer("num_dev", 200, "fsdd: dev utterances (seen speakers, unseen recordings).")
flags.DEFINE_integer("num_test", 200, "fsdd: test utterances (held-out speakers).")
flags.DEFINE_integer("dev_recordings", 5, "fsdd: recording indices below this go to dev.")
flags.DEFINE_integer("min_digits", 2, "fsdd: fewest digits per utterance.")
flags.DEFINE_integer("max_digits", 7, "fsdd: most digits per utterance.")
# spm.
flags.DEFINE_list("manifests", [], "spm: manifest paths; tfds: split=manifest pairs.")
flags.DEFINE_integer("vocab_size", 256, "spm: pieces including pad/unk/bos/eos ([MASK] is +1).")
flags.DEFINE_enum("model_type", "unigram", ["unigram", "bpe", "char", "word"], "spm: algorithm.")
flags.DEFINE_bool("lowercase", False, "spm: case-fold the text.")
flags.DEFINE_string("spm_name", "tokenizer", "spm: model file name (NAME.model).")
# tfds.
flags.DEFINE_string("name", None, "tfds: dataset name (lower_snake_case).")
flags.DEFINE_string("data_dir", None, "tfds: TFDS data_dir to write into; index: to read.")
flags.DEFINE_string("version", "1.0.0", "tfds: dataset version.")
# check / index.
flags.DEFINE_string("manifest", None, "check: the manifest to validate.")
flags.DEFINE_string("source", None, "index: tfds:NAME/SPLIT to scan (with --data_dir).")
flags.DEFINE_string("index_cache_dir", None, "index: where to cache (default: next to the data).")


def _require(*names: str) -> None:
    for name in names:
        if getattr(FLAGS, name) in (None, "", []):
            raise app.UsageError(f"--{name} is required for this subcommand")


def _range(values: list[str], name: str, cast: Callable = float) -> tuple:
    if len(values) != 2:
        raise app.UsageError(f"--{name} takes two comma-separated numbers (low,high)")
    low, high = (cast(v) for v in values)
    if high < low:
        raise app.UsageError(f"--{name}: low must be <= high")
    return low, high


def _problems(problems: list) -> list[str]:
    return [str(p) for p in problems]


def synth_command() -> dict:
    _require("out_dir")
    if bool(FLAGS.text_file) == bool(FLAGS.generate):
        raise app.UsageError("synth needs exactly one of --text_file or --generate")
    read_problems: list = []
    if FLAGS.text_file:
        sentences, lines, read_problems = synth.read_sentences(FLAGS.text_file, FLAGS.max_sentences)
        where = FLAGS.text_file
    else:
        sentences = synth.generate_sentences(
            FLAGS.generate, FLAGS.num_sentences, FLAGS.lang, FLAGS.seed
        )
        lines, where = None, f"generated {FLAGS.generate}"
    test_voices: int | list[str]
    if len(FLAGS.test_voices) == 1 and FLAGS.test_voices[0].isdigit():
        test_voices = int(FLAGS.test_voices[0])
    else:
        test_voices = list(FLAGS.test_voices)
    manifests, problems = synth.build_synth_corpus(
        sentences,
        FLAGS.out_dir,
        lang=FLAGS.lang,
        variants=tuple(FLAGS.voices) if FLAGS.voices else synth.DEFAULT_VARIANTS,
        test_voices=test_voices,
        dev_fraction=FLAGS.dev_fraction,
        test_fraction=FLAGS.test_fraction,
        renditions=FLAGS.renditions,
        rate_range=_range(FLAGS.rate, "rate", int),
        pitch_range=_range(FLAGS.pitch, "pitch", int),
        snr_db_range=_range(FLAGS.snr_db, "snr_db") if FLAGS.snr_db else None,
        max_seconds=FLAGS.max_seconds,
        seed=FLAGS.seed,
        num_workers=FLAGS.num_workers,
        source_lines=lines,
        where=where,
    )
    counts = {}
    for split, path in manifests.items():
        with open(path, encoding="utf-8") as f:
            counts[split] = sum(1 for _ in f)
    return {
        "manifests": manifests,
        "utterances": counts,
        "not_synthesised": _problems(read_problems + problems),
    }


def fsdd_command() -> dict:
    _require("fsdd_dir", "out_dir")
    manifests = build_fsdd_corpus(
        FLAGS.fsdd_dir,
        FLAGS.out_dir,
        num_utterances={"train": FLAGS.num_train, "dev": FLAGS.num_dev, "test": FLAGS.num_test},
        test_speakers=list(FLAGS.test_speaker),
        dev_recordings=FLAGS.dev_recordings,
        min_digits=FLAGS.min_digits,
        max_digits=FLAGS.max_digits,
        seed=FLAGS.seed,
    )
    return {"manifests": manifests}


def spm_command() -> dict:
    _require("out_dir")
    if not FLAGS.manifests and not FLAGS.text_file:
        raise app.UsageError("spm needs --manifests and/or --text_file")
    texts: list[str] = []
    problems: list = []
    for path in FLAGS.manifests:
        entries, bad = read_manifest(path, strict=FLAGS.strict, check_files=False)
        texts.extend(e.text for e in entries)
        problems.extend(bad)
    if FLAGS.text_file:
        with open(FLAGS.text_file, encoding="utf-8") as f:
            texts.extend(line.strip() for line in f if line.strip())
    tokenizer = SentencePieceTokenizer.train(
        texts,
        FLAGS.out_dir,
        FLAGS.vocab_size,
        FLAGS.model_type,
        lowercase=FLAGS.lowercase,
        name=FLAGS.spm_name,
    )
    return {
        "model": str(tokenizer.model_path),
        "vocab_size": tokenizer.vocab_size,
        "sentences": len(texts),
        "skipped_lines": _problems(problems),
    }


def tfds_command() -> dict:
    _require("name", "data_dir", "manifests")
    splits = {}
    for item in FLAGS.manifests:
        split, sep, path = item.partition("=")
        if not sep or not split or not path:
            raise app.UsageError(f"--manifests items must be split=path.jsonl, got {item!r}")
        splits[split] = path
    report = manifests_to_tfds(
        FLAGS.name, splits, FLAGS.data_dir, version=FLAGS.version, strict=FLAGS.strict
    )
    return {
        "dataset": os.path.join(FLAGS.data_dir, FLAGS.name, FLAGS.version),
        "sources": {split: f"tfds:{FLAGS.name}/{split}" for split in splits},
        "dropped": report.to_dict(),
    }


def check_command() -> dict:
    _require("manifest")
    source = ManifestSource(FLAGS.manifest, strict=FLAGS.strict)
    hours = sum(source.seconds(i) for i in range(len(source))) / 3600
    return {
        "manifest": FLAGS.manifest,
        "utterances": len(source),
        "hours": round(hours, 4),
        "problems": [dataclasses.asdict(p) for p in source.problems],
    }


def index_command() -> dict:
    _require("source")
    if not FLAGS.source.startswith("tfds:"):
        raise SourceError(f"--source={FLAGS.source!r}: index is for TFDS splits (tfds:NAME/SPLIT).")
    source = TFDSSource(
        FLAGS.source, data_dir=FLAGS.data_dir, index_cache_dir=FLAGS.index_cache_dir
    )
    hours = sum(source.seconds(i) for i in range(len(source))) / 3600
    return {
        "source": FLAGS.source,
        "utterances": len(source),
        "hours": round(hours, 4),
        "index": source.index_path,
    }


# Subcommand name -> function run after flag parsing (returns a JSON-able summary).
SUBCOMMANDS: dict[str, Callable[[], dict]] = {
    "synth": synth_command,
    "fsdd": fsdd_command,
    "spm": spm_command,
    "tfds": tfds_command,
    "index": index_command,
    "check": check_command,
}


def main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in SUBCOMMANDS:
        raise app.UsageError(f"usage: mdm-asr-prepare {{{'|'.join(SUBCOMMANDS)}}} --flags")
    try:
        summary = SUBCOMMANDS[argv[1]]()
    except (ValueError, ImportError) as error:  # Our input errors carry the fix in the message.
        print(f"mdm-asr-prepare {argv[1]}: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary, ensure_ascii=False))


def run() -> None:
    """Console-script entry point (mdm-asr-prepare)."""
    run_app(main, doc=__doc__, module=__name__)


if __name__ == "__main__":
    run()
