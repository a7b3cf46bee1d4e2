"""mdm-asr-eval: WER and RTFx of a checkpoint on a manifest, for one or several samplers / NFEs.

Usage:
  mdm-asr-eval --checkpoint=DIR (--manifest=M.jsonl | --dataset=tfds:NAME/SPLIT) [--flags]

Example:
    mdm-asr-eval --checkpoint=DIR --manifest=test.jsonl \\
        --sampler='pbeb(lam=0.2,gamma=0.05)' --sampler=ar_greedy --nfe=8,16,32 \\
        --batch_size=16 --output=results.jsonl --hyps=hyps.jsonl

DIR is an exported checkpoint directory or a training workdir (best by eval WER, else latest;
--step=N evaluates another saved step).
Samplers may be repeated or comma-separated (commas inside parentheses belong to the spec);
every MDM sampler runs at every NFE, AR / CTC samplers once. One JSON line per run is printed
and written to --output. Paths, sampler specs, NFEs, the normaliser and the batch size are
checked before the weights load. The library behind it is `mdm_asr_jax.eval.evaluate`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
from absl import app, flags, logging
from etils import epath

from mdm_asr_jax.audio import AudioError
from mdm_asr_jax.checkpoint import CheckpointError, load_checkpoint
from mdm_asr_jax.cli.common import run_app
from mdm_asr_jax.data.manifest import ManifestError
from mdm_asr_jax.decode import checkpoint_with_dtype
from mdm_asr_jax.diffusion.samplers import (
    PAPER_SAMPLER,
    SamplerSpecError,
    parse_sampler,
    sampler_spec_summary,
)
from mdm_asr_jax.eval.evaluate import EvalError, as_checkpoint, evaluate_sweep
from mdm_asr_jax.nn.config import ConfigError
from mdm_asr_jax.text import NormalizerError, TokenizerError, get_normalizer

# Own FlagValues, so the CLIs can be imported side by side (tests, notebooks); `run()` adds
# them to absl's global flags for the console script.
FLAGS = flags.FlagValues()

flags.DEFINE_string(
    "checkpoint", None, "Checkpoint directory or training workdir.", flag_values=FLAGS
)
flags.DEFINE_integer(
    "step",
    None,
    "Of a training workdir, evaluate this saved step (e.g. one point of a WER-vs-steps curve). "
    "Default: the step with the best eval WER, else the latest.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "manifest", None, "JSONL manifest ({'audio': path, 'text': ...} per line).", flag_values=FLAGS
)
flags.DEFINE_string(
    "dataset",
    None,
    "Instead of --manifest: a prepared TFDS split, tfds:NAME/SPLIT.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "tfds_data_dir", None, "TFDS data_dir for --dataset (default: TFDS's own).", flag_values=FLAGS
)
flags.DEFINE_multi_string(
    "sampler",
    None,
    f"Sampler spec(s): {sampler_spec_summary()}. Repeat the flag or separate with commas. "
    f"Default: the checkpoint's decoding.sampler, else {PAPER_SAMPLER}.",
    flag_values=FLAGS,
)
flags.DEFINE_multi_string(
    "nfe",
    None,
    "NFE cap(s) for MDM samplers; comma-separated or repeated. Default: the checkpoint's "
    "decoding.nfe, else 32.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "canvas_length",
    None,
    "MDM canvas length L. Default: the checkpoint's decoding.canvas_length, else the decoder's "
    "max_length minus the prompt.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "adaptive_canvas",
    False,
    "Size each batch's MDM canvas from a length estimate (--canvas_from), bucketed, instead.",
    flag_values=FLAGS,
)
flags.DEFINE_enum(
    "canvas_from",
    "seconds",
    ["seconds", "ctc"],
    "With --adaptive_canvas: the length estimate, seconds (audio length x 10 tokens/s) or ctc "
    "(the checkpoint's CTC head: its greedy transcript's length + 25% + 2).",
    flag_values=FLAGS,
)
flags.DEFINE_integer("batch_size", 16, "Utterances per batch (per process).", flag_values=FLAGS)
flags.DEFINE_enum(
    "dtype",
    None,
    ["float32", "bfloat16"],
    "Decode with weights and activations in this dtype (softmax, confidence and entropy stay "
    "float32); reported as the result's dtype. Default: the checkpoint's.",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "output", None, "Write the result JSON lines here (one per sampler x NFE).", flag_values=FLAGS
)
flags.DEFINE_string(
    "hyps",
    None,
    "Write per-utterance {audio, ref, hyp} JSONL here (HYPS.<run>.jsonl in sweeps).",
    flag_values=FLAGS,
)
flags.DEFINE_string(
    "normalizer",
    None,
    "Text normaliser for scoring: english (Whisper's), whisper_basic, basic, none. Default: the "
    "one the checkpoint records (its decoding.normalizer, else its training config's "
    "eval.normalizer), else english with a warning. The result's normalizer_source says which.",
    flag_values=FLAGS,
)
flags.DEFINE_bool(
    "strict",
    False,
    "Stop at the first bad manifest line instead of skipping it.",
    flag_values=FLAGS,
)
flags.DEFINE_integer(
    "max_utterances", None, "Evaluate only the first N manifest lines.", flag_values=FLAGS
)
flags.DEFINE_integer("seed", 0, "Seed for samplers that draw random numbers.", flag_values=FLAGS)
flags.DEFINE_bool(
    "multihost",
    False,
    "Call jax.distributed.initialize() first (TPU pods, multi-node GPU).",
    flag_values=FLAGS,
)


def split_specs(values: Sequence[str]) -> list[str]:
    """Splits comma-separated spec lists at top-level commas: 'a(x=1,y=2),b' -> ['a(...)', 'b']."""
    specs: list[str] = []
    for value in values:
        depth, current = 0, []
        for char in value:
            if char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
            if char == "," and depth == 0:
                specs.append("".join(current).strip())
                current = []
            else:
                current.append(char)
        specs.append("".join(current).strip())
    return [s for s in specs if s]


def parse_nfes(values: Sequence[str]) -> list[int]:
    """'8,16' and repeated flags -> [8, 16]; a clear error for anything but positive integers."""
    out = []
    for item in split_specs(values):
        try:
            nfe = int(item)
        except ValueError:
            nfe = 0
        if nfe < 1:
            raise EvalError(f"--nfe={item!r}: give positive integers, e.g. --nfe=8,16,32")
        out.append(nfe)
    return out


def check_path(flag: str, value: str, what: str) -> None:
    """Raises EvalError naming `--flag` when the file or directory `value` does not exist."""
    if not epath.Path(value).exists():
        raise EvalError(f"--{flag}={value} does not exist (give a {what})")


def validate_flags() -> None:
    """Everything cheap, before any weights load or audio is read: the checkpoint and manifest
    exist, sampler specs parse, NFEs and sizes are positive, the normaliser is known."""
    if not FLAGS.checkpoint:
        raise EvalError("--checkpoint is required: a checkpoint directory or training workdir")
    if (FLAGS.manifest is None) == (FLAGS.dataset is None):
        raise EvalError("give exactly one of --manifest=M.jsonl or --dataset=tfds:NAME/SPLIT")
    if FLAGS.step is not None and FLAGS.step < 0:
        raise EvalError(f"--step={FLAGS.step}: give a saved step of the workdir (0 or more)")
    for name in ("batch_size", "max_utterances", "canvas_length"):
        value = getattr(FLAGS, name)
        if value is not None and value < 1:
            raise EvalError(f"--{name}={value}: must be a positive integer")
    parse_nfes(FLAGS.nfe or [])
    for spec in split_specs(FLAGS.sampler or []):
        parse_sampler(spec)  # SamplerSpecError names the spec and the samplers there are
    if FLAGS.normalizer is not None:
        get_normalizer(FLAGS.normalizer)  # NormalizerError lists the known ones
    check_path("checkpoint", FLAGS.checkpoint, "checkpoint directory or training workdir")
    if FLAGS.manifest is not None:
        check_path("manifest", FLAGS.manifest, "JSONL manifest file")
    if FLAGS.tfds_data_dir is not None:
        check_path("tfds_data_dir", FLAGS.tfds_data_dir, "TFDS data_dir")


def run_from_flags() -> list[dict[str, Any]]:
    """Runs the evaluation the parsed flags describe; returns the result dicts."""
    validate_flags()
    if FLAGS.multihost:
        jax.distributed.initialize()
    is_main = jax.process_index() == 0
    output = None
    if FLAGS.output and is_main:
        Path(FLAGS.output).parent.mkdir(parents=True, exist_ok=True)
        output = open(FLAGS.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below

    def emit(result: dict[str, Any]) -> None:
        if not is_main:
            return
        line = json.dumps(result, sort_keys=True)
        print(line, flush=True)
        if output is not None:
            output.write(line + "\n")
            output.flush()

    decode_kwargs: dict[str, Any] = {}
    if FLAGS.canvas_length is not None:
        decode_kwargs["canvas_length"] = FLAGS.canvas_length
    if FLAGS.adaptive_canvas:
        decode_kwargs["adaptive_canvas"] = FLAGS.canvas_from
    try:
        dataset = FLAGS.dataset
        if dataset is not None and dataset.startswith("tfds:"):
            dataset = dataset[len("tfds:") :]
        checkpoint = FLAGS.checkpoint
        if FLAGS.step is not None:
            checkpoint = load_checkpoint(checkpoint, step=FLAGS.step)
        if FLAGS.dtype is not None:
            checkpoint = checkpoint_with_dtype(as_checkpoint(checkpoint), FLAGS.dtype)
        return evaluate_sweep(
            checkpoint,
            manifest=FLAGS.manifest,
            dataset=dataset,
            samplers=split_specs(FLAGS.sampler or []),
            nfes=parse_nfes(FLAGS.nfe or []),
            decode_kwargs=decode_kwargs,
            batch_size=FLAGS.batch_size,
            normalizer=FLAGS.normalizer,
            hyps=FLAGS.hyps,
            strict=FLAGS.strict,
            max_utterances=FLAGS.max_utterances,
            seed=FLAGS.seed,
            tfds_data_dir=FLAGS.tfds_data_dir,
            on_result=emit,
        )
    finally:
        if output is not None:
            output.close()


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad user input (reported as one line, exit status 2)."""
    return (
        AudioError,
        CheckpointError,
        ConfigError,
        EvalError,
        ManifestError,
        NormalizerError,
        SamplerSpecError,
        TokenizerError,
    )


def main(argv: Sequence[str]) -> None:
    FLAGS.mark_as_parsed()  # the values were parsed through absl's global FLAGS (see run())
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {list(argv[1:])}; every option is a --flag")
    try:
        results = run_from_flags()
    except user_errors() as err:
        print(f"mdm-asr-eval: error: {err}", file=sys.stderr)
        sys.exit(2)
    for result in results:
        if result["skipped"]["count"]:
            logging.warning(
                "%d input(s) skipped: %s",
                result["skipped"]["count"],
                result["skipped"]["by_reason"],
            )
            break


def run() -> None:
    """Console script entry point (mdm-asr-eval)."""
    run_app(main, FLAGS, doc=__doc__)


if __name__ == "__main__":
    run()
