"""docs/multilingual.md's per-language table: zero-shot Whisper base, AR and MDM-ASR fine-tuned.

Evaluates, in one process on one machine, on each language's held-out test set of the
`whisper_multilingual` recipe (`test_{lang}.jsonl`: held-out sentences spoken by held-out voice
variants; every line carries `lang`, so each utterance is decoded with its own language prompt):

  zero-shot   the converted Whisper base (`--zero_shot`, default WORKDIR/base_whisper_base of the
              first run given), greedy, Whisper's 30 s window, faster-whisper's suppression
  ar          `--ar`: the configs/whisper_multilingual.py:ar run, greedy
  mdm         `--mdm`: the :mdm run, `--sampler` at each NFE cap of `--nfes`

Scoring: Whisper's English normaliser for en, `whisper_basic` for the others. One JSON line per
(model, sampler, NFE, language): WER, RTFx (audio seconds / decode seconds after a warm-up
batch; compile time apart), n, device, dtype, batch. With --markdown a table follows on stderr.

  python benchmarks/whisper_multilingual_table.py --data=WS_AR/data/whisper_multilingual \\
      --zero_shot=WS_AR/base_whisper_base --ar=WS_AR --mdm=WS_MDM --markdown
Models not given are left out (e.g. only --zero_shot before any training).

  python benchmarks/whisper_multilingual_table.py --render=docs/data/multilingual.jsonl

--render prints the markdown table of recorded lines (one or more files, e.g. one per model,
run at different times) without evaluating anything: docs/multilingual.md's table is made so.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, table_row  # noqa: E402

from mdm_asr_jax.diffusion.samplers import PAPER_SAMPLER  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data", "", "Corpus folder holding test_{lang}.jsonl.")
flags.DEFINE_list("langs", ["en", "fr", "de", "es"], "Languages (test_{lang}.jsonl each).")
flags.DEFINE_string("zero_shot", "", "Converted Whisper base checkpoint ('' = leave out).")
flags.DEFINE_string("ar", "", "Workdir of the :ar run ('' = leave out).")
flags.DEFINE_string("mdm", "", "Workdir of the :mdm run ('' = leave out).")
flags.DEFINE_list("nfes", ["8", "32"], "NFE caps for the MDM sampler.")
flags.DEFINE_string("sampler", PAPER_SAMPLER, "MDM sampler spec.")
flags.DEFINE_integer("batch_size", 16, "Eval batch size (the same for every model).")
flags.DEFINE_integer("max_utterances", 0, "Per language; 0 = all.")
flags.DEFINE_bool("markdown", False, "Also print a markdown table on stderr.")
flags.DEFINE_list(
    "render", [], "Recorded JSON-lines files: print their markdown table (stdout) and stop."
)

MODEL_ORDER = ("zero-shot", "ar", "mdm")


def normalizer_for(lang: str) -> str:
    """The scoring normaliser of a language (the paper's convention for Whisper)."""
    return "english" if lang == "en" else "whisper_basic"


def read_lines(paths: list[str]) -> list[dict]:
    """The table's rows from recorded files; a missing file or a line that is not one of this
    benchmark's rows is an error naming the file and the line."""
    rows = []
    for path in paths:
        if not Path(path).is_file():
            raise SystemExit(f"--render: no file {path}")
        for number, line in enumerate(Path(path).read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise SystemExit(f"--render: {path} line {number} is not JSON ({e})") from None
            if row.get("benchmark") != "whisper_multilingual_table" or "lang" not in row:
                raise SystemExit(
                    f"--render: {path} line {number} is not a whisper_multilingual_table line"
                )
            rows.append(row)
    return rows


def markdown(rows: list[dict], langs: list[str]) -> str:
    """One row per (model, NFE cap), one WER column per language, then the mean over languages
    and the mean decoder passes per utterance (AR: tokens + EOS). A cell no line gives is '-'."""
    head = " | ".join(f"{x} WER %" for x in langs)
    out = [
        f"| model | decoder | {head} | mean WER % | passes |",
        "|---|---|" + "---|" * (len(langs) + 2),
    ]
    keys = sorted(
        dict.fromkeys((r["model"], r["nfe"]) for r in rows),
        key=lambda k: (MODEL_ORDER.index(k[0]) if k[0] in MODEL_ORDER else 99, k[0], k[1] or 0),
    )
    for model, nfe in keys:
        cells = {r["lang"]: r for r in rows if (r["model"], r["nfe"]) == (model, nfe)}
        decoder = "greedy" if nfe is None else f"{next(iter(cells.values()))['sampler']} NFE {nfe}"
        wers = [cells[x]["wer"] if x in cells else None for x in langs]
        shown = " | ".join("-" if w is None else f"{w:.2f}" for w in wers)
        mean = f"{sum(wers) / len(wers):.2f}" if None not in wers else "-"
        passes = [cells[x]["mean_nfe"] for x in langs if x in cells and cells[x].get("mean_nfe")]
        mean_passes = f"{sum(passes) / len(passes):.1f}" if passes else "-"
        out.append(f"| {model} | {decoder} | {shown} | {mean} | {mean_passes} |")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.render:
        sys.stdout.write(markdown(read_lines(FLAGS.render), FLAGS.langs))
        return
    if not FLAGS.data:
        raise SystemExit("give --data=WS_AR/data/whisper_multilingual (or --render=FILES)")
    from mdm_asr_jax.checkpoint import load_checkpoint
    from mdm_asr_jax.eval.evaluate import evaluate_sweep

    data = Path(FLAGS.data)
    tests = {lang: data / f"test_{lang}.jsonl" for lang in FLAGS.langs}
    missing = [str(p) for p in tests.values() if not p.exists()]
    if missing:
        raise SystemExit(f"missing test sets {missing}: build the whisper_multilingual recipe")
    models = [
        (label, path, samplers, nfes)
        for label, path, samplers, nfes in (
            ("zero-shot", FLAGS.zero_shot, ["ar_greedy"], [1]),
            ("ar", FLAGS.ar, ["ar_greedy"], [1]),
            ("mdm", FLAGS.mdm, [FLAGS.sampler], [int(n) for n in FLAGS.nfes]),
        )
        if path
    ]
    if not models:
        raise SystemExit("give at least one of --zero_shot, --ar, --mdm")
    rows = []
    for label, path, samplers, nfes in models:
        checkpoint = load_checkpoint(path)
        for lang, manifest in tests.items():
            for r in evaluate_sweep(
                checkpoint,
                manifest=str(manifest),
                samplers=samplers,
                nfes=nfes,
                batch_size=FLAGS.batch_size,
                normalizer=normalizer_for(lang),
                max_utterances=FLAGS.max_utterances or None,
            ):
                row = table_row(
                    "whisper_multilingual_table",
                    label,
                    r,
                    path,
                    lang=lang,
                    normalizer=normalizer_for(lang),
                )
                rows.append(row)
                emit(row)
    if FLAGS.markdown:
        sys.stderr.write(markdown(rows, FLAGS.langs))


if __name__ == "__main__":
    app.run(main)
