"""Named data recipes that build a corpus into a workdir before training (cached).

- `demo`: synthesised connected digits and short commands (pip-only eSpeak NG), with held-out
  voices and held-out sentences for the test set. Nothing is downloaded.
- `digits`: real Free Spoken Digit Dataset recordings (Jakobovski/free-spoken-digit-dataset,
  CC BY-SA 4.0) concatenated into connected digits, plus synthesised digits; one FSDD speaker
  is held out as the test set.

`prepare(name, out_dir, config)` returns {"train": path, "dev": path, "test": path}. A stamp file
records the options; a second call with the same options reuses the corpus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from absl import logging

from mdm_asr_jax.data import fsdd, synth
from mdm_asr_jax.data.manifest import read_manifest, write_manifest

RECIPES = ("demo", "digits")
DEMO_COMMANDS = 120


class RecipeError(ValueError):
    """A recipe that cannot run (unknown name, missing FSDD folder)."""


def default_fsdd_dir() -> str:
    """`../shared/data/fsdd` relative to the repository, if it exists (development checkouts)."""
    candidate = Path(__file__).resolve().parents[3] / "shared" / "data" / "fsdd"
    return str(candidate) if candidate.is_dir() else ""


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
        }
        for e in entries
    ]


def prepare(name: str, out_dir: str | Path, config: Any) -> dict[str, str]:
    """Build (or reuse) the corpus of recipe `name` under `out_dir`."""
    if name not in RECIPES:
        raise RecipeError(f"unknown data recipe {name!r}; choose one of {RECIPES}")
    opts = config.recipe_options
    out_dir = Path(out_dir) / name
    stamp = {"recipe": name, "seed": int(config.seed), **{k: opts[k] for k in sorted(opts.keys())}}
    splits = {s: out_dir / f"{s}.jsonl" for s in ("train", "dev", "test")}
    if _stamp_matches(out_dir, stamp) and all(p.exists() for p in splits.values()):
        logging.info("recipe %s: reusing %s", name, out_dir)
        return {s: str(p) for s, p in splits.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    print(f"recipe {name}: building the corpus in {out_dir} (cached for later runs)", flush=True)
    if name == "demo":
        manifests = _demo(out_dir, opts, int(config.seed))
    else:
        manifests = _digits(out_dir, opts, int(config.seed))
    (out_dir / "recipe.json").write_text(json.dumps(stamp, sort_keys=True))
    return manifests


def _demo(out_dir: Path, opts: Any, seed: int) -> dict[str, str]:
    total = opts.num_train + opts.num_dev + opts.num_test
    # The built-in command grammar has a little over a hundred distinct phrases: take up to
    # DEMO_COMMANDS of them and fill the rest with connected digits.
    commands = min(DEMO_COMMANDS, total // 4)
    sentences = synth.generate_sentences("commands", commands, seed=seed)
    sentences += synth.generate_sentences("digits", total - commands, seed=seed + 1)
    manifests, problems = synth.build_synth_corpus(
        sentences,
        str(out_dir / "synth"),
        test_voices=2,
        dev_fraction=opts.num_dev / total,
        test_fraction=opts.num_test / total,
        snr_db_range=(15.0, 40.0),
        seed=seed,
        num_workers=opts.num_workers,
    )
    if problems:
        print(
            f"recipe demo: {len(problems)} sentences could not be synthesised (see "
            f"{out_dir / 'synth'}/*_problems.jsonl)",
            flush=True,
        )
    out = {}
    for split in ("train", "dev", "test"):
        path = out_dir / f"{split}.jsonl"
        write_manifest(path, _absolute_records(manifests[split]))
        out[split] = str(path)
    return out


def _digits(out_dir: Path, opts: Any, seed: int) -> dict[str, str]:
    fsdd_dir = opts.fsdd_dir or default_fsdd_dir()
    if not fsdd_dir or not Path(fsdd_dir).is_dir():
        raise RecipeError(
            "the digits recipe needs Free Spoken Digit Dataset recordings: set "
            "--config.recipe_options.fsdd_dir=/path/to/free-spoken-digit-dataset/recordings"
        )
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
        snr_db_range=(15.0, 40.0),
        num_workers=opts.num_workers,
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
