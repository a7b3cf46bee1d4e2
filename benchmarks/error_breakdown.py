"""Where two decoders' word errors are: substitutions, deletions, insertions, and the WER of each
third of the utterances, from the per-utterance hypotheses `mdm-asr-eval --hyps` writes.

Prints one JSON line per hypotheses file: the counts of `mdm_asr_jax.eval.metrics.ErrorBreakdown`
(WER, S / D / I, the WER of each part of the references, hypothesis vs reference words, exact
utterances, adjacent repeated words), the sampler and NFE recorded in the file, and, for the
second and later files, how many utterances each of the pair gets exactly right that the first
file's system does not.

  mdm-asr-eval --checkpoint=AR_RUN --manifest=TEST --sampler=ar_greedy --hyps=/tmp/ar.jsonl ...
  mdm-asr-eval --checkpoint=MDM_RUN --manifest=TEST --sampler=pbeb --hyps=/tmp/mdm.jsonl ...
  python benchmarks/error_breakdown.py --hyps=ar=/tmp/ar.jsonl,mdm=/tmp/mdm.jsonl \
      --normalizer=english
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit  # noqa: E402

from mdm_asr_jax.eval.metrics import error_breakdown  # noqa: E402
from mdm_asr_jax.text import get_normalizer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "hyps",
    None,
    "LABEL=PATH of `mdm-asr-eval --hyps` files, the first one the reference system; all must "
    "hold the same utterances.",
    required=True,
)
flags.DEFINE_string("normalizer", "english", "Text normaliser (as mdm-asr-eval --normalizer).")
flags.DEFINE_integer("parts", 3, "Equal parts of each reference the errors are placed in.")


def read_hyps(path: Path) -> list[dict]:
    """The rows of a hypotheses file; a clear error for a missing file or a bad line."""
    if not path.is_file():
        raise SystemExit(f"--hyps: {path} does not exist; write it with mdm-asr-eval --hyps=PATH")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise SystemExit(f"--hyps: {path} line {number} is not JSON ({error})") from None
        if not isinstance(row, dict) or "ref" not in row or "hyp" not in row:
            raise SystemExit(
                f"--hyps: {path} line {number} has no 'ref' and 'hyp' keys; it must be a file "
                "written by mdm-asr-eval --hyps"
            )
        rows.append(row)
    if not rows:
        raise SystemExit(f"--hyps: {path} holds no hypotheses")
    return rows


def parse_pairs(items: list[str]) -> list[tuple[str, Path]]:
    pairs = []
    for item in items:
        label, sep, path = item.partition("=")
        if not sep or not label or not path:
            raise SystemExit(f"--hyps: {item!r} is not LABEL=PATH (e.g. ar=/tmp/ar_hyps.jsonl)")
        pairs.append((label, Path(path)))
    return pairs


def main(argv: list[str]) -> None:
    del argv
    norm = get_normalizer(FLAGS.normalizer)  # an unknown name fails here, before any file is read
    pairs = parse_pairs(FLAGS.hyps)
    systems = [(label, path, read_hyps(path)) for label, path in pairs]
    first_label, _, first_rows = systems[0]
    keys = [row.get("audio", i) for i, row in enumerate(first_rows)]
    first_exact = None
    for label, path, rows in systems:
        by_audio = {row.get("audio", i): row for i, row in enumerate(rows)}
        if sorted(map(str, by_audio)) != sorted(map(str, keys)):
            raise SystemExit(
                f"--hyps: {label} holds other utterances than {first_label}; evaluate both on "
                "the same manifest"
            )
        ordered = [by_audio[k] for k in keys]
        refs, hyps = [r["ref"] for r in ordered], [r["hyp"] for r in ordered]
        breakdown = error_breakdown(refs, hyps, norm, parts=FLAGS.parts)
        exact = [norm(r).split() == norm(h).split() for r, h in zip(refs, hyps, strict=True)]
        record = {
            "benchmark": "error_breakdown",
            "label": label,
            "file": path.name,
            "sampler": ordered[0].get("sampler"),
            "nfe": ordered[0].get("nfe"),
            "normalizer": FLAGS.normalizer,
            **breakdown.as_dict(),
        }
        if first_exact is None:
            first_exact = exact
        else:
            record[f"exact_only_{label}"] = sum(
                e and not f for e, f in zip(exact, first_exact, strict=True)
            )
            record[f"exact_only_{first_label}"] = sum(
                f and not e for e, f in zip(exact, first_exact, strict=True)
            )
        emit(record)


if __name__ == "__main__":
    app.run(main)
