"""Named data recipes that build a corpus into a workdir before training (cached).

- `demo`: synthesised connected digits and commands from a compositional grammar (pip-only
  eSpeak NG), spoken in six English accents at 120-220 words per minute, with silence around
  the speech, random gain and noise; the test set has held-out sentences *and* held-out voices,
  and `test_accent` the same sentences in two accents never trained on. Nothing is downloaded.
- `digits`: real Free Spoken Digit Dataset recordings (Jakobovski/free-spoken-digit-dataset,
  CC BY-SA 4.0) concatenated into connected digits, plus synthesised digits; one FSDD speaker
  is held out as the test set.
- `whisper_synth`: English sentences from a text file (default `../shared/data/text/
  gutenberg_en.txt`, one sentence per line, 4-16 words) synthesised with eSpeak NG, test set on
  held-out sentences *and* held-out voices; plus FSDD connected digits with one speaker held out
  as a second test set (`test_fsdd`). Written in Whisper's style (case and punctuation kept).
- `whisper_multilingual`: sentences in each of `languages` (default en, fr, de, es) from
  `text/gutenberg_{lang}.txt`, made speakable first (`text.orthography`: modern spelling, no
  digits, German historical spellings left out), synthesised with that language's eSpeak voices;
  per language, the test set has held-out sentences *and* two held-out voice variants (drawn per
  language). `num_train`/`num_dev`/`num_test` are per language. Splits: train, dev and test mix
  the languages (every line carries its `lang`); `test_<lang>` is each language's test set alone
  (scored with its own normaliser in docs/multilingual.md).

`prepare(name, out_dir, config)` returns {"train": path, "dev": path, "test": path, ...} (plus
extra test sets such as `test_accent`). A stamp file records the options and the recipe's
version; a second call with the same options and version reuses the corpus.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from absl import logging

from mdm_asr_jax.data import fsdd, synth
from mdm_asr_jax.data.manifest import read_manifest, write_manifest

RECIPES = ("demo", "digits", "whisper_synth", "whisper_multilingual")
# Options only some recipes read; they join the cache stamp of those recipes alone (so adding
# one never invalidates another recipe's cached corpus).
EXTRA_OPTIONS = {
    "whisper_synth": ("text_file", "fsdd_train", "fsdd_test", "min_words", "max_words"),
    "whisper_multilingual": ("text_dir", "languages", "min_words", "max_words"),
}
# Bumped when a recipe's corpus changes, so a cached corpus of an older version is rebuilt.
VERSIONS = {"demo": 2, "digits": 2, "whisper_synth": 1, "whisper_multilingual": 1}
# What a user's audio varies (demo and the synthesised part of digits): every bundled English
# accent but the held-out ones, speaking rate, silence around the speech, level and noise.
HELD_OUT_ACCENTS = ("en-029", "en-gb-scotland")
VARIED = dict(
    accents=synth.ACCENTS["en"],
    rate_range=(120, 220),
    silence_range=(0.0, 0.3),
    gain_db_range=(-20.0, 0.0),
    snr_db_range=(10.0, 40.0),
)


class RecipeError(ValueError):
    """A recipe that cannot run (unknown name, missing FSDD folder)."""


DATA_DIR_VARIABLE = "MDM_ASR_DATA_DIR"


def data_dirs() -> list[Path]:
    """Where recipes look for their inputs when no option names them, in order: the folder in
    $MDM_ASR_DATA_DIR (holding `fsdd/` and `text/`), then `shared/data` beside the repository
    (the development layout)."""
    dirs = [Path(os.environ[DATA_DIR_VARIABLE])] if os.environ.get(DATA_DIR_VARIABLE) else []
    return dirs + [Path(__file__).resolve().parents[3] / "shared" / "data"]


def default_text_file() -> str:
    """`text/gutenberg_en.txt` in the first of `data_dirs()` that has it, else ""."""
    found = [d / "text" / "gutenberg_en.txt" for d in data_dirs()]
    return next((str(p) for p in found if p.is_file()), "")


def default_fsdd_dir() -> str:
    """`fsdd/` (FSDD's recordings) in the first of `data_dirs()` that has it, else ""."""
    found = [d / "fsdd" for d in data_dirs()]
    return next((str(p) for p in found if p.is_dir()), "")


def _stamp_matches(out_dir: Path, stamp: dict[str, Any]) -> bool:
    path = out_dir / "recipe.json"
    if not path.exists():
        return False
    try:
        return json.loads(path.read_text()) == stamp
    except json.JSONDecodeError:
        return False


def _absolute_records(manifest: str) -> list[dict[str, Any]]:
    entries, problems = read_manifest(manifest)
    if problems:
        logging.warning("%s: %d problem lines skipped", manifest, len(problems))
    return [
        {
            "audio": str(Path(e.audio).absolute()),
            "text": e.text,
            **({"seconds": e.seconds} if e.seconds else {}),
            **({"lang": e.lang} if e.lang else {}),
        }
        for e in entries
    ]


def prepare(
    name: str, out_dir: str | Path, config: Any, reuse: tuple[str | Path, ...] = ()
) -> dict[str, str]:
    """Build (or reuse) the corpus of recipe `name` under `out_dir`. `reuse`: other data folders
    (e.g. the workdir of the AR run an MDM run starts from) whose corpus is taken as it is when
    it was built with the same options, instead of building it again."""
    if name not in RECIPES:
        raise RecipeError(f"unknown data recipe {name!r}; choose one of {RECIPES}")
    opts = config.recipe_options
    out_dir = Path(out_dir) / name
    extra = {k for keys in EXTRA_OPTIONS.values() for k in keys} - set(EXTRA_OPTIONS.get(name, ()))
    stamp = {
        "recipe": name,
        "version": VERSIONS[name],
        "seed": int(config.seed),
        **{k: opts[k] for k in sorted(opts.keys()) if k not in extra},
    }
    names = ("train", "dev", "test") + {
        "whisper_synth": ("test_fsdd",),
        "demo": ("test_accent",),
        "whisper_multilingual": tuple(f"test_{lang}" for lang in _languages(opts)),
    }.get(name, ())
    for folder in (out_dir, *(Path(r) / name for r in reuse)):
        found = {s: folder / f"{s}.jsonl" for s in names}
        if _stamp_matches(folder, stamp) and all(p.exists() for p in found.values()):
            logging.info("recipe %s: reusing %s", name, folder)
            return {s: str(p) for s, p in found.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"recipe {name}: building the corpus in {out_dir} (cached for later runs)", flush=True)
    if name == "demo":
        manifests = _demo(out_dir, opts, int(config.seed))
    elif name == "whisper_synth":
        manifests = _whisper_synth(out_dir, opts, int(config.seed))
    elif name == "whisper_multilingual":
        manifests = _whisper_multilingual(out_dir, opts, int(config.seed))
    else:
        manifests = _digits(out_dir, opts, int(config.seed))
    (out_dir / "recipe.json").write_text(json.dumps(stamp, sort_keys=True))
    return manifests


def _held_out_synth(
    name: str, sentences: list[str], out_dir: Path, opts: Any, seed: int, **extra: Any
) -> dict[str, str]:
    """Synthesise `sentences` into train/dev/test (sizes from `opts`), two voices held out for
    the test set, white noise at 15-40 dB SNR unless `extra` says otherwise; say how many
    sentences could not be spoken."""
    total = opts.num_train + opts.num_dev + opts.num_test
    extra = {"snr_db_range": (15.0, 40.0), **extra}
    manifests, problems = synth.build_synth_corpus(
        sentences,
        str(out_dir / "synth"),
        test_voices=2,
        dev_fraction=opts.num_dev / total,
        test_fraction=opts.num_test / total,
        seed=seed,
        num_workers=opts.num_workers,
        **extra,
    )
    if problems:
        print(
            f"recipe {name}: {len(problems)} sentences could not be synthesised (see "
            f"{out_dir / 'synth'}/*_problems.jsonl)",
            flush=True,
        )
    return manifests


def _demo(out_dir: Path, opts: Any, seed: int) -> dict[str, str]:
    total = opts.num_train + opts.num_dev + opts.num_test
    # Half commands (a grammar of thousands of combinations), half connected digits.
    commands = total // 2
    sentences = synth.generate_sentences("commands", commands, seed=seed)
    sentences += synth.generate_sentences("digits", total - commands, seed=seed + 1)
    manifests = _held_out_synth(
        "demo",
        sentences,
        out_dir,
        opts,
        seed,
        test_accents=HELD_OUT_ACCENTS,
        max_seconds=10.0,
        **VARIED,
    )
    out = {}
    for split in ("train", "dev", "test", "test_accent"):
        path = out_dir / f"{split}.jsonl"
        write_manifest(path, _absolute_records(manifests[split]))
        out[split] = str(path)
    return out


def _digits(out_dir: Path, opts: Any, seed: int) -> dict[str, str]:
    fsdd_dir = _fsdd_dir(opts)
    real = fsdd.build_fsdd_corpus(
        fsdd_dir,
        str(out_dir / "fsdd"),
        num_utterances={"train": opts.num_train, "dev": opts.num_dev, "test": opts.num_test},
        test_speakers=(opts.test_speaker,),
        seed=seed,
    )
    sentences = synth.generate_sentences("digits", opts.num_train, seed=seed + 1)
    synthetic, _ = synth.build_synth_corpus(
        sentences,
        str(out_dir / "synth"),
        seed=seed,
        num_workers=opts.num_workers,
        max_seconds=10.0,
        **VARIED,
    )
    out = {}
    train = _absolute_records(real["train"]) + _absolute_records(synthetic["train"])
    write_manifest(out_dir / "train.jsonl", train)
    out["train"] = str(out_dir / "train.jsonl")
    for split in ("dev", "test"):
        path = out_dir / f"{split}.jsonl"
        write_manifest(path, _absolute_records(real[split]))
        out[split] = str(path)
    return out


def _fsdd_dir(opts: Any) -> str:
    fsdd_dir = opts.fsdd_dir or default_fsdd_dir()
    if not fsdd_dir or not Path(fsdd_dir).is_dir():
        raise RecipeError(
            "this recipe needs Free Spoken Digit Dataset recordings: set "
            "--config.recipe_options.fsdd_dir=/path/to/free-spoken-digit-dataset/recordings "
            f"(or ${DATA_DIR_VARIABLE} to a folder holding fsdd/)"
        )
    return fsdd_dir


def select_sentences(
    path: str, count: int, *, min_words: int, max_words: int, seed: int
) -> tuple[list[str], list[int]]:
    """`count` distinct sentences of `min_words`..`max_words` words from a one-sentence-per-line
    file, drawn at random (seeded) -> (sentences, their line numbers)."""
    sentences, lines, _ = synth.read_sentences(path)
    keep = [
        (s, n)
        for s, n in zip(sentences, lines, strict=True)
        if min_words <= len(s.split()) <= max_words and s.isascii()
    ]
    unique = list({s: (s, n) for s, n in reversed(keep)}.values())[::-1]
    if len(unique) < count:
        raise RecipeError(
            f"{path} has only {len(unique)} distinct sentences of {min_words}-{max_words} words; "
            f"ask for fewer (recipe_options.num_train + num_dev + num_test = {count})"
        )
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(unique), size=count, replace=False).tolist())
    return [unique[i][0] for i in chosen], [unique[i][1] for i in chosen]


def _whisper_synth(out_dir: Path, opts: Any, seed: int) -> dict[str, str]:
    text_file = opts.text_file or default_text_file()
    if not text_file or not Path(text_file).is_file():
        raise RecipeError(
            "the whisper_synth recipe needs English text, one sentence per line: set "
            "--config.recipe_options.text_file=/path/to/sentences.txt "
            f"(or ${DATA_DIR_VARIABLE} to a folder holding text/gutenberg_en.txt)"
        )
    total = opts.num_train + opts.num_dev + opts.num_test
    sentences, lines = select_sentences(
        text_file, total, min_words=opts.min_words, max_words=opts.max_words, seed=seed
    )
    synthetic = _held_out_synth(
        "whisper_synth",
        sentences,
        out_dir,
        opts,
        seed,
        max_seconds=10.0,
        source_lines=lines,
        where=text_file,
    )
    real = fsdd.build_fsdd_corpus(
        _fsdd_dir(opts),
        str(out_dir / "fsdd"),
        num_utterances={"train": opts.fsdd_train, "dev": 0, "test": opts.fsdd_test},
        test_speakers=(opts.test_speaker,),
        seed=seed,
    )
    out = {}
    train = _absolute_records(synthetic["train"]) + _absolute_records(real["train"])
    write_manifest(out_dir / "train.jsonl", train)
    out["train"] = str(out_dir / "train.jsonl")
    for split, source in (
        ("dev", synthetic["dev"]),
        ("test", synthetic["test"]),
        ("test_fsdd", real["test"]),
    ):
        path = out_dir / f"{split}.jsonl"
        write_manifest(path, _absolute_records(source))
        out[split] = str(path)
    return out


def _languages(opts: Any) -> tuple[str, ...]:
    """`recipe_options.languages` ("en,fr,de,es") as a tuple, checked against eSpeak's."""
    raw = opts.get("languages", "") or ""
    langs = tuple(x.strip() for x in str(raw).split(",") if x.strip())
    unknown = [x for x in langs if x not in synth.LANGUAGES]
    if not langs or unknown:
        raise RecipeError(
            f"recipe_options.languages={raw!r}: give a comma-separated list of "
            f"{sorted(synth.LANGUAGES)}"
        )
    return langs


def default_text_dir() -> str:
    """`text/` in the first of `data_dirs()` that has it, else ""."""
    found = [d / "text" for d in data_dirs()]
    return next((str(p) for p in found if p.is_dir()), "")


def select_speakable(
    path: str, lang: str, count: int, *, min_words: int, max_words: int, seed: int
) -> tuple[list[str], list[int]]:
    """`count` distinct speakable `lang` sentences (`text.orthography`, modern spelling) of
    `min_words`..`max_words` words, drawn at random (seeded) -> (sentences, line numbers)."""
    from mdm_asr_jax.text.orthography import speakable_sentences

    raw, lines, _ = synth.read_sentences(path)
    kept, positions, _ = speakable_sentences(raw, lang)
    pairs = [
        (s, lines[p])
        for s, p in zip(kept, positions, strict=True)
        if min_words <= len(s.split()) <= max_words
    ]
    unique = list({s: (s, n) for s, n in reversed(pairs)}.values())[::-1]
    if len(unique) < count:
        raise RecipeError(
            f"{path} has only {len(unique)} distinct speakable {lang} sentences of "
            f"{min_words}-{max_words} words; ask for fewer (num_train + num_dev + num_test = "
            f"{count} per language)"
        )
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(unique), size=count, replace=False).tolist())
    return [unique[i][0] for i in chosen], [unique[i][1] for i in chosen]


def _whisper_multilingual(out_dir: Path, opts: Any, seed: int) -> dict[str, str]:
    text_dir = opts.text_dir or default_text_dir()
    langs = _languages(opts)
    total = opts.num_train + opts.num_dev + opts.num_test
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "dev": [], "test": []}
    out: dict[str, str] = {}
    for number, lang in enumerate(langs):
        text_file = Path(text_dir or ".") / f"gutenberg_{lang}.txt"
        if not text_dir or not text_file.is_file():
            raise RecipeError(
                f"the whisper_multilingual recipe needs {text_file.name} (one sentence per line):"
                " set --config.recipe_options.text_dir=/path/to/folder "
                f"(or ${DATA_DIR_VARIABLE} to a folder holding text/)"
            )
        lang_seed = seed + 1000 * (number + 1)  # its own sentences and held-out voices
        sentences, lines = select_speakable(
            str(text_file), lang, total, min_words=opts.min_words, max_words=opts.max_words,
            seed=lang_seed,
        )  # fmt: skip
        manifests = _held_out_synth(
            "whisper_multilingual",
            sentences,
            out_dir / lang,
            opts,
            lang_seed,
            lang=lang,
            accents=synth.ACCENTS[lang],
            max_seconds=10.0,
            source_lines=lines,
            where=str(text_file),
        )
        for split in splits:
            splits[split] += _absolute_records(manifests[split])
        path = out_dir / f"test_{lang}.jsonl"
        write_manifest(path, _absolute_records(manifests["test"]))
        out[f"test_{lang}"] = str(path)
    for split, records in splits.items():
        path = out_dir / f"{split}.jsonl"
        write_manifest(path, records)
        out[split] = str(path)
    return out
