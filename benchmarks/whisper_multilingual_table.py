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
"""

from __future__ import annotations

import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, table_row  # noqa: E402

from mdm_asr_jax.diffusion.samplers import PAPER_SAMPLER  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data", None, "Corpus folder holding test_{lang}.jsonl.", required=True)
flags.DEFINE_list("langs", ["en", "fr", "de", "es"], "Languages (test_{lang}.jsonl each).")
flags.DEFINE_string("zero_shot", "", "Converted Whisper base checkpoint ('' = leave out).")
flags.DEFINE_string("ar", "", "Workdir of the :ar run ('' = leave out).")
flags.DEFINE_string("mdm", "", "Workdir of the :mdm run ('' = leave out).")
flags.DEFINE_list("nfes", ["8", "32"], "NFE caps for the MDM sampler.")
flags.DEFINE_string("sampler", PAPER_SAMPLER, "MDM sampler spec.")
flags.DEFINE_integer("batch_size", 16, "Eval batch size (the same for every model).")
flags.DEFINE_integer("max_utterances", 0, "Per language; 0 = all.")
flags.DEFINE_bool("markdown", False, "Also print a markdown table on stderr.")


def normalizer_for(lang: str) -> str:
    """The scoring normaliser of a language (the paper's convention for Whisper)."""
    return "english" if lang == "en" else "whisper_basic"


def main(argv: list[str]) -> None:
    del argv
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
        out = sys.stderr
        out.write("| model | decoder | " + " | ".join(f"{x} WER %" for x in FLAGS.langs) + " |\n")
        out.write("|---|---|" + "---|" * len(FLAGS.langs) + "\n")
        keys = list(dict.fromkeys((r["model"], r["nfe"]) for r in rows))
        for model, nfe in keys:
            cells = {r["lang"]: r for r in rows if (r["model"], r["nfe"]) == (model, nfe)}
            decoder = "greedy" if nfe is None else f"pbeb NFE {nfe}"
            wers = " | ".join(f"{cells[x]['wer']:.2f}" for x in FLAGS.langs)
            out.write(f"| {model} | {decoder} | {wers} |\n")


if __name__ == "__main__":
    app.run(main)
