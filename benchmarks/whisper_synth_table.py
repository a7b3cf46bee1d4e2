"""docs/results.md's Whisper fine-tuning table: zero-shot tiny.en, AR and MDM-ASR fine-tuned.

Evaluates, in one process on one machine, on both held-out test sets of the `whisper_synth`
recipe (`test`: synthesised sentences with held-out sentences and voices; `test_fsdd`: the
held-out FSDD speaker):

  zero-shot   the converted tiny.en (`WORKDIR/base_whisper_tiny_en` of the MDM run), greedy,
              Whisper's 30 s window, faster-whisper's token suppression
  ar          the `configs/whisper_synth.py:ar` run (best dev checkpoint, else latest), greedy
  mdm         the `configs/whisper_synth.py:mdm` run, PBEB at each NFE cap of --nfes

The test sets and their normalisers are the ones the MDM run scored at the end, read from its
recorded config (`configs/whisper_synth.py`: `test` with Whisper's English normaliser, and the
named eval `fsdd` with `basic`, which spells digits one at a time so "3, 5, 7" and "three five
seven" agree). Prints one JSON line per (model, sampler, NFE, test set): WER, RTFx (audio
seconds / decode seconds: features on device + encoder + decoder, after a warm-up batch;
compile time reported apart), mean NFE, device, dtype, batch. With --markdown, a table follows
on stderr.

  python benchmarks/whisper_synth_table.py --mdm=/tmp/ws_mdm --ar=/tmp/ws_ar --markdown
  python benchmarks/whisper_synth_table.py --mdm=/tmp/ws_mdm,/tmp/ws_mdm2 \
      --mdm_labels=mdm,mdm_from_ar --ar=/tmp/ws_ar --zero_shot=none   # several MDM runs
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import emit, table_row  # noqa: E402

from mdm_asr_jax.checkpoint import load_checkpoint  # noqa: E402
from mdm_asr_jax.diffusion.samplers import PAPER_SAMPLER  # noqa: E402
from mdm_asr_jax.eval.evaluate import evaluate_sweep  # noqa: E402
from mdm_asr_jax.train.evals import recorded_test_sets  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list(
    "mdm",
    None,
    "Workdirs of configs/whisper_synth.py:mdm runs (the first one's test sets are used).",
    required=True,
)
flags.DEFINE_list("mdm_labels", [], "A label per --mdm workdir (default mdm, mdm2, ...).")
flags.DEFINE_string("ar", None, "Workdir of the configs/whisper_synth.py:ar run.", required=True)
flags.DEFINE_string(
    "zero_shot",
    "",
    "Converted Whisper checkpoint ('' = MDM_WORKDIR/base_whisper_tiny_en; none = skip).",
)
flags.DEFINE_list("nfes", ["4", "8", "16", "32"], "NFE caps for the MDM sampler.")
flags.DEFINE_string("sampler", PAPER_SAMPLER, "MDM sampler spec.")
flags.DEFINE_integer("batch_size", 16, "Eval batch size (the same for every model).")
flags.DEFINE_integer("max_utterances", 0, "Per test set; 0 = all.")
flags.DEFINE_bool("markdown", False, "Also print a markdown table on stderr.")


def main(argv: list[str]) -> None:
    del argv
    first = FLAGS.mdm[0]
    labels = FLAGS.mdm_labels or ["mdm" if i == 0 else f"mdm{i + 1}" for i in range(len(FLAGS.mdm))]
    if len(labels) != len(FLAGS.mdm):
        raise SystemExit(
            f"--mdm_labels has {len(labels)} labels for {len(FLAGS.mdm)} --mdm workdirs: "
            "give one per workdir"
        )
    recorded = json.loads((Path(first) / "config.json").read_text())
    if "config" not in recorded.get("info", {}):
        raise SystemExit(
            f"{first} has no recorded training config: give the workdir of a "
            "configs/whisper_synth.py:mdm run (its test sets are read from it)"
        )
    tests = recorded_test_sets(recorded["info"]["config"])
    for name, (source, _) in tests.items():
        if source["manifest"] and not Path(source["manifest"]).exists():
            raise SystemExit(
                f"{source['manifest']} is missing: run configs/whisper_synth.py:mdm first ({name})"
            )
    zero_shot = FLAGS.zero_shot or str(Path(first) / "base_whisper_tiny_en")
    models = [] if zero_shot == "none" else [("zero-shot", zero_shot, ["ar_greedy"], [1])]
    models.append(("ar", FLAGS.ar, ["ar_greedy"], [1]))
    nfes = [int(n) for n in FLAGS.nfes]
    models += [
        (label, path, [FLAGS.sampler], nfes) for label, path in zip(labels, FLAGS.mdm, strict=True)
    ]
    rows = []
    for label, path, samplers, caps in models:
        checkpoint = load_checkpoint(path)
        for test, (source, normalizer) in tests.items():
            results = evaluate_sweep(
                checkpoint,
                **source,
                samplers=samplers,
                nfes=caps,
                batch_size=FLAGS.batch_size,
                normalizer=normalizer,
                max_utterances=FLAGS.max_utterances or None,
            )
            for r in results:
                row = table_row(
                    "whisper_synth_table", label, r, path, test=test, normalizer=normalizer
                )
                rows.append(row)
                emit(row)
    if FLAGS.markdown:
        out = sys.stderr
        out.write(
            "| model | decoder | " + " | ".join(f"{t} WER % | {t} RTFx" for t in tests) + " |\n"
        )
        out.write("|---|---|" + "---|---|" * len(tests) + "\n")
        keys = []
        for row in rows:
            key = (row["model"], row["nfe"])
            if key not in keys:
                keys.append(key)
        for model, nfe in keys:
            cells = {r["test"]: r for r in rows if (r["model"], r["nfe"]) == (model, nfe)}
            decoder = "greedy" if nfe is None else f"pbeb NFE {nfe}"
            row = " | ".join(f"{cells[t]['wer']:.2f} | {cells[t]['rtfx']:.1f}" for t in tests)
            out.write(f"| {model} | {decoder} | {row} |\n")


if __name__ == "__main__":
    app.run(main)
