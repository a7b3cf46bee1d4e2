"""mdm-asr-transcribe: audio files, directories or list files -> one line of text per file.

Usage:
  mdm-asr-transcribe --checkpoint=DIR [--flags] AUDIO_OR_DIR_OR_@LIST ...

Examples:
    mdm-asr-transcribe --checkpoint=DIR talk.flac recordings/ @more_files.txt
    mdm-asr-transcribe --checkpoint=DIR --format=jsonl --output=out.jsonl --sampler=ar_greedy a.wav
    mdm-asr-transcribe --checkpoint=DIR --format=srt --word_times --output_dir=subs/ a.wav b.wav

--format=txt (default): one line of text per file, in input order. jsonl (or --jsonl): one JSON
object per file ({audio, text, seconds, decode_seconds, segments [{start, end, text}]}, plus
words [{start, end, word}] with --word_times). srt / vtt: subtitles, one file per input in
--output_dir (NAME.srt / NAME.vtt), or to --output / stdout for a single input. --word_times
(checkpoints with a CTC head) aligns the hypothesis to the CTC head for word times; subtitle
cues are then cut at words (at most 6 s), else each piece is a cue. Audio longer than
--window_seconds is cut at pauses and the pieces' texts joined (see `mdm_asr_jax.transcribe`).
A run summary (audio seconds, decode and compile seconds, RTFx) goes to stderr. Inputs, the
sampler spec, NFE and sizes are checked before the weights load.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from absl import flags
from etils import epath

from mdm_asr_jax.cli.common import run_app
from mdm_asr_jax.cli.evaluate import user_errors
from mdm_asr_jax.decode import checkpoint_with_dtype
from mdm_asr_jax.diffusion.samplers import PAPER_SAMPLER, parse_sampler
from mdm_asr_jax.eval.evaluate import as_checkpoint
from mdm_asr_jax.progress import progress
from mdm_asr_jax.subtitles import to_srt, to_vtt, transcript_cues
from mdm_asr_jax.transcribe import TranscribeError, Transcriber, collect_inputs, summary_line

# Own FlagValues, so the CLIs can be imported side by side (tests, notebooks); `run()` adds
# them to absl's global flags for the console script.
FLAGS = flags.FlagValues()

flags.DEFINE_string(
    "checkpoint", None, "Checkpoint directory or training workdir.", flag_values=FLAGS
)
flags.DEFINE_string(
    "sampler",
    None,
    "Sampler spec (see mdm-asr-eval). Default: the checkpoint's decoding.sampler, else "
    f"{PAPER_SAMPLER}.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "nfe", None, "NFE cap for MDM samplers. Default: the checkpoint's, else 32.", flag_values=FLAGS
)
flags.DEFINE_integer("batch_size", 8, "Pieces decoded per batch.", flag_values=FLAGS)
flags.DEFINE_float(
    "window_seconds",
    None,
    "Longest piece the model sees; longer audio is split at pauses. Default: 30 for Whisper "
    "encoders, 20 otherwise.",
    flag_values=FLAGS,
)
flags.DEFINE_float(
    "search_seconds",
    5.0,
    "Look for the quietest cut point in the window's last N s.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "jsonl", False, "Write JSON lines with segments and timings instead of text.", flag_values=FLAGS
)
flags.DEFINE_enum(
    "format",
    None,
    ["txt", "jsonl", "srt", "vtt"],
    "Output format: txt (one line per file), jsonl (segments, timings), srt or vtt (subtitles). "
    "Default: txt, or jsonl with --jsonl.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "word_times",
    False,
    "Word start/end times from the checkpoint's CTC head (forced alignment of the hypothesis): "
    "a words field in jsonl, word-level subtitle cues in srt/vtt.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "output_dir",
    None,
    "srt/vtt: write NAME.srt / NAME.vtt here, one per input (needed for several inputs).",
    flag_values=FLAGS,
)
flags.DEFINE_string("output", None, "Write here instead of stdout.", flag_values=FLAGS)
flags.DEFINE_bool(
    "skip_bad",
    False,
    "Report unreadable files (empty line / error field) and go on.",
    flag_values=FLAGS,
)
flags.DEFINE_integer("seed", 0, "Seed for samplers that draw random numbers.", flag_values=FLAGS)
flags.DEFINE_enum(
    "dtype",
    None,
    ["float32", "bfloat16"],
    "Decode with weights and activations in this dtype (softmax, confidence and entropy stay "
    "float32). Default: the checkpoint's.",
    flag_values=FLAGS,
)


def validate_flags() -> None:
    """Everything cheap, before the weights load: the checkpoint exists, the sampler spec
    parses, NFE, batch size and window lengths are positive."""
    if not FLAGS.checkpoint:
        raise TranscribeError(
            "--checkpoint is required: a checkpoint directory or training workdir"
        )
    for name in ("nfe", "batch_size", "window_seconds", "search_seconds"):
        value = getattr(FLAGS, name)
        if value is not None and value <= 0:
            raise TranscribeError(f"--{name}={value}: must be positive")
    if FLAGS.sampler is not None:
        parse_sampler(FLAGS.sampler)  # SamplerSpecError names the spec and the samplers there are
    if not epath.Path(FLAGS.checkpoint).exists():
        raise TranscribeError(
            f"--checkpoint={FLAGS.checkpoint} does not exist (give a checkpoint directory or "
            "training workdir)"
        )


def output_format(num_inputs: int) -> str:
    """--format (or --jsonl), checked against --output_dir and the number of inputs."""
    fmt = FLAGS.format or ("jsonl" if FLAGS.jsonl else "txt")
    subtitles = fmt in ("srt", "vtt")
    if FLAGS.jsonl and fmt != "jsonl":
        raise TranscribeError(f"--jsonl and --format={fmt} disagree; pass only --format")
    if FLAGS.output_dir and not subtitles:
        raise TranscribeError("--output_dir is for --format=srt or vtt; use --output otherwise")
    if subtitles and num_inputs > 1 and not FLAGS.output_dir:
        raise TranscribeError(
            f"{num_inputs} inputs make {num_inputs} subtitle files: pass --output_dir=DIR"
        )
    return fmt


def run_from_flags(inputs: Sequence[str]) -> int:
    """Transcribes `inputs` as the parsed flags say; returns the number of files written."""
    validate_flags()
    paths = collect_inputs(inputs)  # every input exists, before anything loads
    fmt = output_format(len(paths))
    subtitles = fmt in ("srt", "vtt")
    checkpoint = FLAGS.checkpoint
    if FLAGS.dtype is not None:
        checkpoint = checkpoint_with_dtype(as_checkpoint(checkpoint), FLAGS.dtype)
    transcriber = Transcriber(
        checkpoint,
        sampler=FLAGS.sampler,
        nfe=FLAGS.nfe,
        batch_size=FLAGS.batch_size,
        window_seconds=FLAGS.window_seconds,
        search_seconds=FLAGS.search_seconds,
        seed=FLAGS.seed,
        word_times=FLAGS.word_times,
    )
    if FLAGS.output_dir:
        Path(FLAGS.output_dir).mkdir(parents=True, exist_ok=True)
    writing_files = subtitles and FLAGS.output_dir
    out = (
        open(FLAGS.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        if FLAGS.output and not writing_files
        else sys.stdout
    )
    count, used = 0, {}
    bar = progress(total=len(paths), desc="transcribe", unit="file")
    try:
        for result in transcriber.transcribe(paths, skip_bad=FLAGS.skip_bad):
            bar.update(1)
            if result.error is not None:
                print(f"mdm-asr-transcribe: skipped: {result.error}", file=sys.stderr)
            if subtitles:
                cues = transcript_cues(result)
                text = to_srt(cues) if fmt == "srt" else to_vtt(cues)
                if writing_files:
                    stem = Path(result.audio).stem  # a.wav -> a.srt; a second a.wav -> a.2.srt
                    used[stem] = used.get(stem, 0) + 1
                    name = stem if used[stem] == 1 else f"{stem}.{used[stem]}"
                    target = Path(FLAGS.output_dir) / f"{name}.{fmt}"
                    target.write_text(text, encoding="utf-8")
                else:
                    out.write(text)
            elif fmt == "jsonl":
                out.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
            else:
                out.write(result.text + "\n")
            out.flush()
            count += 1
    finally:
        bar.close()
        if out is not sys.stdout:
            out.close()
    print(summary_line(transcriber, count), file=sys.stderr)
    return count


def main(argv: Sequence[str]) -> None:
    FLAGS.mark_as_parsed()  # the values were parsed through absl's global FLAGS (see run())
    try:
        run_from_flags(list(argv[1:]))
    except (TranscribeError, *user_errors()) as err:
        print(f"mdm-asr-transcribe: error: {err}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """Console script entry point (mdm-asr-transcribe)."""
    run_app(main, FLAGS, doc=__doc__)


if __name__ == "__main__":
    run()
