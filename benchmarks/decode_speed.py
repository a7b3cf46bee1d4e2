"""Decoding speed: RTFx of every sampler at each NFE cap, AR greedy, faster-whisper; loop overhead.

Model and audio: a checkpoint directory and a manifest (`--checkpoint=DIR --manifest=M.jsonl`,
features computed once by the eval library's pipeline), or a randomly initialised model of a
named size (`--model_size=NAME`, a row of nn/config.py's size tables, with an MDM and an AR
decoder of the same size) on synthetic log-mel features (`--num_utterances` x `--seconds`).
A random model's output is noise: EB/PBEB then commit about one token a step and AR greedy runs
to its length limit, so its numbers are the cost *at the cap*; `mean_nfe` in every line says
how many decoder passes were really used.

Every call goes through `mdm_asr_jax.decode.decode` (what eval and transcribe run). For each
batch size (1 and --batch_size), every measurement first makes one call per batch (compiles
when the shape is new; the extra time over the median is `compile_seconds`), then all the
measurements are timed in --repeats interleaved rounds (each round times every measurement once,
starting one further along), so a change in the machine's speed during the run touches them alike;
each call is waited for with `jax.block_until_ready` (decode returns host arrays).
`decode_seconds` is the sum over batches of the median time, `rtfx` = audio seconds /
decode_seconds. Timed: encoder + cross-attention K/V + decode loop + fetching the ids; log-mel
features are computed before (once) and not timed. One JSON line per measurement, `part` says which:

  part=sampler   each MDM sampler (--samplers) at each NFE cap (--nfes), fixed canvas
  part=ar        AR greedy with the same encoder and a decoder of the same size (if the model
                 has one); nfe = null, mean_nfe = tokens generated + EOS
  part=faster_whisper  batch 1, when the checkpoint was converted from a CTranslate2 Whisper
                 directory (config info source_format) that still exists; timed: faster-whisper's
                 transcribe (its own features + encoder + greedy decoder, beam 1); otherwise a
                 line with rtfx = null and a `skipped` reason
  part=overhead  per MDM sampler: decoder step cost inside the loop vs one bare decoder forward
                 on the same canvas: step_seconds = (t(nfe_hi) - t(nfe_lo)) / (nfe_hi - nfe_lo)
                 with `fixed_steps=True` (every step runs), forward_seconds = jit(mdm_logits)
                 alone, overhead_ratio = step / forward (1.0 = the loop costs nothing extra);
                 encoder_seconds = encoder + cross K/V once
  part=canvas    fixed canvas (the checkpoint's / --canvas_length) vs adaptive canvas (length
                 from the audio duration, `decode(adaptive_canvas=True)`), per --canvas_samplers
                 at the largest NFE

  part=logits   per --logits_samplers at each NFE cap, fixed canvas: the full vocabulary
                 projection of every canvas slot vs `decode(masked_logits=True)` (only the
                 still-masked slots, gathered into power-of-two buckets), timed in the same
                 interleaved rounds; ONE line per (sampler, NFE, batch) with rtfx_full,
                 rtfx_masked, masked_over_full and same_ids (both gave the same transcripts)

  part=lengths  (with --shapes instead of --checkpoint / --model_size) models of the paper's
                 shapes with random weights at real transcript lengths: for each shape
                 (--shapes: canary_180m, canary_1b, whisper_tiny, whisper_base), batch size and
                 target length L (--lengths, LibriSpeech-like 10-60 tokens; audio of
                 L / --tokens_per_second seconds), AR greedy is forced to emit exactly L tokens
                 then EOS and every MDM sampler (--length_samplers, at each of --nfes) decodes a
                 canvas of the smallest bucket holding L + 1 with EOS from L on
                 (`decode(target_lengths=...)`), so the cost is the one at the lengths users
                 decode, not at the caps. MDM lines carry `rtfx_over_ar`: their RTFx over the
                 AR line of the same (shape, batch, length), timed in the same interleaved
                 rounds. A random MDM model commits about one token a step, so it runs
                 min(nfe, L) steps (`mean_nfe`): read each NFE as the cost of a model that
                 uses that many steps.

Keys in every line: benchmark, part, sampler (spec string), nfe, batch_size, rtfx, device,
dtype, plus what was timed (timed, decode_seconds, audio_seconds, compile_seconds, mean_nfe,
canvas_length, repeats, ...).

  python benchmarks/decode_speed.py --model_size=tiny --batch_size=8           # random model
  python benchmarks/decode_speed.py --checkpoint=/tmp/mdm_demo \\
      --manifest=/tmp/mdm_demo/data/demo/test.jsonl --batch_size=16
  python benchmarks/decode_speed.py --model_size=test --nfes=4 --samplers=pbeb \\
      --batch_size=2 --num_utterances=2 --repeats=1                           # smoke
  python benchmarks/decode_speed.py --shapes=whisper_tiny,canary_180m --lengths=10,20,40,60 \\
      --nfes=8 --batch_size=4                                     # real lengths, CPU-sized
  python benchmarks/decode_speed.py --shapes=canary_1b,canary_180m,whisper_base \\
      --nfes=4,8,16 --batch_size=32                               # the paper-shape table (GPU)
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    FASTER_WHISPER_GREEDY,
    cpu_note,
    device_description,
    emit,
    named_model_config,
    synthetic_batch,
)

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Checkpoint directory (exported or a training workdir).")
flags.DEFINE_string("manifest", None, "JSONL manifest to decode (with --checkpoint).")
flags.DEFINE_string("model_size", None, "Random-init model of this size instead of a checkpoint.")
flags.DEFINE_integer("batch_size", 8, "The larger batch size (batch 1 is always measured).")
flags.DEFINE_list(
    "samplers",
    ["random", "dfm", "topk(schedule=linear)", "eb(gamma=0.05)", "pbeb(lam=0.2,gamma=0.05)"],
    "MDM sampler specs (comma-separated; parameters inside parentheses may not hold commas, "
    "use the defaults or one parameter each).",
)
flags.DEFINE_list("nfes", ["4", "8", "16", "32"], "NFE caps.")
flags.DEFINE_list(
    "parts", ["sampler", "ar", "faster_whisper", "overhead", "canvas"], "What to run."
)
flags.DEFINE_list("overhead_samplers", None, "Samplers for part=overhead (default: --samplers).")
flags.DEFINE_list("canvas_samplers", ["pbeb"], "Samplers for part=canvas.")
flags.DEFINE_list("logits_samplers", ["pbeb"], "Samplers for part=logits.")
flags.DEFINE_bool(
    "length_masked_logits",
    False,
    "part=lengths: time every MDM line also with masked_logits=True (same rounds); the line "
    "gains rtfx_masked and masked_over_full.",
)
flags.DEFINE_integer("repeats", 3, "Timed calls per batch (median).")
flags.DEFINE_integer("max_utterances", 16, "Utterances read from the manifest (0 = all).")
flags.DEFINE_integer("num_utterances", 8, "Synthetic utterances (with --model_size).")
flags.DEFINE_float("seconds", 4.0, "Seconds per synthetic utterance (with --model_size).")
flags.DEFINE_integer(
    "canvas_length", 0, "Fixed MDM canvas; 0 = the checkpoint's (its decoding.canvas_length) / 128."
)
flags.DEFINE_integer("vocab_size", 256, "Vocabulary of the random model (with [MASK]).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Random model compute dtype.")
flags.DEFINE_integer("seed", 0, "Seed of the random model, synthetic audio and sampler keys.")
flags.DEFINE_list(
    "shapes",
    None,
    "part=lengths: random models of these paper shapes (canary_180m, canary_1b, whisper_tiny, "
    "whisper_base) instead of --checkpoint / --model_size.",
)
flags.DEFINE_list("lengths", ["10", "20", "40", "60"], "part=lengths: target transcript tokens.")
flags.DEFINE_float(
    "tokens_per_second", 3.0, "part=lengths: audio seconds per utterance = length / this."
)
flags.DEFINE_list("length_samplers", ["pbeb"], "part=lengths: MDM samplers (at each --nfes).")
flags.DEFINE_integer(
    "canary_vocab",
    5248,
    "part=lengths: Canary vocabulary before [MASK] (4 languages x 1024 + 1152 special tokens).",
)

MDM_DEFAULTS = {
    "random": "random",
    "dfm": "dfm",
    "topk": "topk(schedule=linear)",
    "eb": "eb(gamma=0.05)",
    "pbeb": "pbeb(lam=0.2,gamma=0.05)",
}


class Setup:
    """The model, parameters, batches per batch size and where they came from."""

    def __init__(self) -> None:
        from mdm_asr_jax.nn.model import ASRModel

        if (FLAGS.checkpoint is None) == (FLAGS.model_size is None):
            raise app.UsageError("give --checkpoint (with --manifest) or --model_size, not both")
        self.audio_paths: list[str] = []
        self.info: dict[str, Any] = {}
        if FLAGS.checkpoint is not None:
            from mdm_asr_jax.checkpoint import load_checkpoint

            if FLAGS.manifest is None:
                raise app.UsageError("--checkpoint needs --manifest=M.jsonl (the audio to decode)")
            self.checkpoint = load_checkpoint(FLAGS.checkpoint)
            self.model_config = self.checkpoint.model_config
            params = self.checkpoint.params
            self.info = dict(self.checkpoint.info)
            prompt = len(self.model_config.prompt_ids)
            default = (
                self.model_config.mdm_decoder.max_length - prompt
                if self.model_config.mdm_decoder
                else 0
            )
            self.canvas_length = FLAGS.canvas_length or int(
                self.checkpoint.decoding.canvas_length or default
            )
            self.source = f"checkpoint {FLAGS.checkpoint}, manifest {FLAGS.manifest}"
        else:
            self.checkpoint = None
            self.model_config = named_model_config(
                FLAGS.model_size,
                vocab_size=FLAGS.vocab_size,
                canvas_length=FLAGS.canvas_length or 128,
                dtype=FLAGS.dtype,
            )
            params = random_params(self.model_config, FLAGS.seed)
            self.canvas_length = FLAGS.canvas_length or 128
            self.source = (
                f"random {FLAGS.model_size} model, {FLAGS.num_utterances} synthetic utterances "
                f"of {FLAGS.seconds:g} s"
            )
        self.model = ASRModel(self.model_config)
        if isinstance(params, dict) and set(params) == {"params"}:
            params = params["params"]
        self.params = jax.device_put(params, jax.local_devices()[0])
        self._batches: dict[int, list[dict[str, Any]]] = {}

    def batches(self, batch_size: int) -> list[dict[str, Any]]:
        """Device batches of `batch_size` (features on device once; not part of the timing)."""
        if batch_size not in self._batches:
            if self.checkpoint is not None:
                from mdm_asr_jax.inference.eval_set import load_eval_set

                eval_set = load_eval_set(
                    self.checkpoint,
                    manifest=FLAGS.manifest,
                    batch_size=batch_size,
                    max_utterances=FLAGS.max_utterances or None,
                )
                host = eval_set.batches
                if not self.audio_paths:
                    self.audio_paths = resolve_audio(FLAGS.manifest, eval_set)
            else:
                host = []
                total = FLAGS.num_utterances
                for start in range(0, total, batch_size):
                    batch = synthetic_batch(
                        batch_size,
                        FLAGS.seconds,
                        num_mels=self.model_config.encoder.num_mels,
                        vocab_size=self.model_config.vocab_size,
                        seed=FLAGS.seed + start,
                    )
                    batch["index"] = np.arange(start, start + batch_size, dtype=np.int32)
                    batch["example_mask"] = batch["index"] < total
                    batch["seconds"] = np.where(batch["example_mask"], FLAGS.seconds, 0.0)
                    batch["seconds"] = batch["seconds"].astype(np.float32)
                    host.append(batch)
            device = jax.local_devices()[0]
            self._batches[batch_size] = [
                {k: jax.device_put(v, device) for k, v in b.items()} | {"host": b} for b in host
            ]
        return self._batches[batch_size]


def random_params(model_config: Any, seed: int) -> Any:
    """Parameters of the right shapes without compiling init: N(0, 1/fan_in) kernels, unit
    scales, zero biases (so activations keep a sane range at any depth)."""
    import flax.linen as nn

    from mdm_asr_jax.nn.model import ASRModel, init_params

    model = ASRModel(model_config)
    shapes = nn.meta.unbox(jax.eval_shape(lambda k: init_params(model, k), jax.random.key(seed)))[
        "params"
    ]
    rng = np.random.default_rng(seed)

    def fill(path: Any, leaf: Any) -> np.ndarray:
        name = str(getattr(path[-1], "key", path[-1]))
        if "scale" in name:
            return np.ones(leaf.shape, leaf.dtype)
        if "bias" in name or leaf.ndim < 2:
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = int(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else leaf.shape[0]
        return (rng.standard_normal(leaf.shape) / np.sqrt(max(fan_in, 1))).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def resolve_audio(manifest: str, eval_set: Any) -> list[str]:
    """Absolute audio paths of the decoded utterances (manifest-relative paths resolved)."""
    folder = Path(manifest).resolve().parent
    out = []
    for index in sorted(eval_set.audio):
        path = Path(eval_set.audio[index])
        out.append(str(path if path.is_absolute() else folder / path))
    return out


class Measurement:
    """One JSON line to be: a call per batch, its warm-up (compile) and its timed calls."""

    def __init__(
        self,
        record: dict[str, Any],
        batches: Sequence[dict[str, Any]],
        call: Callable[[dict[str, Any]], Any],
    ):
        self.record, self.batches, self.call = record, list(batches), call
        self.times: list[list[float]] = [[] for _ in self.batches]
        self.first: list[float] = []
        self.compiled: list[bool] = []
        self.outputs: list[Any] = []

    def warm_up(self) -> None:
        """The first call per batch (compiles when the shape is new), timed apart."""
        from mdm_asr_jax.eval.metrics import CompileWatcher

        for batch in self.batches:
            with CompileWatcher() as watcher:
                start = time.perf_counter()
                out = jax.block_until_ready(self.call(batch))
                self.first.append(time.perf_counter() - start)
            self.compiled.append(watcher.compiled)
            self.outputs.append(out)

    def time_once(self) -> None:
        for number, batch in enumerate(self.batches):
            start = time.perf_counter()
            jax.block_until_ready(self.call(batch))
            self.times[number].append(time.perf_counter() - start)

    def medians(self) -> list[float]:
        return [statistics.median(t) for t in self.times]

    def result(self) -> dict[str, Any]:
        """The record with rtfx, decode / audio / compile seconds and mean NFE filled in."""
        medians = self.medians()
        decode_seconds = sum(medians)
        compile_seconds = sum(
            max(first - median, 0.0)
            for first, median, compiled in zip(self.first, medians, self.compiled, strict=True)
            if compiled
        )
        audio_seconds, nfe_sum, rows = 0.0, 0.0, 0
        for batch, out in zip(self.batches, self.outputs, strict=True):
            host = batch["host"]
            mask = np.asarray(host["example_mask"], bool)
            audio_seconds += float(np.asarray(host["seconds"])[mask].sum())
            nfe_used = getattr(out, "nfe_used", None)
            if nfe_used is not None:
                nfe_sum += float(np.asarray(nfe_used)[mask].sum())
                rows += int(mask.sum())
        fastest = sum(min(t) for t in self.times)
        return self.record | {
            "rtfx": audio_seconds / decode_seconds if decode_seconds > 0 else None,
            "decode_seconds": decode_seconds,
            # The fastest round per batch: on a shared machine the least disturbed estimate.
            "rtfx_best": audio_seconds / fastest if fastest > 0 else None,
            "audio_seconds": audio_seconds,
            "compile_seconds": compile_seconds,
            "mean_nfe": nfe_sum / rows if rows else None,
            "batches": len(self.batches),
        }


def run_interleaved(measurements: Sequence[Measurement]) -> None:
    """Warms every measurement up, then times them in rounds (each round visits all of them,
    starting one further along), so a change in the machine's speed during the run touches
    every measurement alike and the ratios between them stay meaningful."""
    for measurement in measurements:
        measurement.warm_up()
    count = len(measurements)
    for round_number in range(max(FLAGS.repeats, 1)):
        for offset in range(count):
            measurements[(round_number + offset) % count].time_once()


def base_record(setup: Setup, part: str, spec: str, nfe: int | None, batch_size: int) -> dict:
    return {
        "benchmark": "decode_speed",
        "part": part,
        "sampler": spec,
        "nfe": nfe,
        "batch_size": batch_size,
        "device": device_description(),
        "dtype": setup.model_config.dtype,
        "source": setup.source,
        "repeats": FLAGS.repeats,
    }


TIMED = "encoder + cross K/V + decode loop + ids to host (features precomputed, not timed)"


def decode_call(setup: Setup, spec: str, nfe: int | None, **kwargs: Any):
    from mdm_asr_jax.decode import decode

    return lambda batch: decode(setup.model, setup.params, batch, spec, nfe, FLAGS.seed, **kwargs)


def sampler_measurements(
    setup: Setup, batch_size: int, specs: Sequence[str], nfes: Sequence[int]
) -> list[Measurement]:
    out = []
    for spec in specs:
        for nfe in nfes:
            record = base_record(setup, "sampler", spec, nfe, batch_size)
            record.update(canvas="fixed", canvas_length=setup.canvas_length, timed=TIMED)
            call = decode_call(setup, spec, nfe, canvas_length=setup.canvas_length)
            out.append(Measurement(record, setup.batches(batch_size), call))
    return out


def ar_measurements(setup: Setup, batch_size: int) -> list[Measurement]:
    record = base_record(setup, "ar", "ar_greedy", None, batch_size)
    if setup.model_config.ar_decoder is None:
        emit(record | {"rtfx": None, "skipped": "the model has no AR decoder"})
        return []
    prompt = len(setup.model_config.prompt_ids)
    record.update(
        max_len=setup.model_config.ar_decoder.max_length - prompt,
        timed=TIMED.replace("decode loop", "greedy loop with KV cache"),
    )
    return [Measurement(record, setup.batches(batch_size), decode_call(setup, "ar_greedy", None))]


def canvas_measurements(
    setup: Setup, batch_size: int, specs: Sequence[str], nfe: int
) -> list[Measurement]:
    out = []
    for spec in specs:
        for mode in ("fixed", "adaptive"):
            record = base_record(setup, "canvas", spec, nfe, batch_size)
            record.update(canvas=mode, timed=TIMED)
            call = decode_call(
                setup,
                spec,
                nfe,
                canvas_length=setup.canvas_length,
                adaptive_canvas=mode == "adaptive",
            )
            out.append(Measurement(record, setup.batches(batch_size), call))
    return out


def logits_measurements(
    setup: Setup, batch_size: int, specs: Sequence[str], nfes: Sequence[int]
) -> list[tuple[Measurement, Measurement]]:
    """(full, masked) pairs: the same decode with every slot projected / only masked slots."""
    out = []
    for spec in specs:
        for nfe in nfes:
            pair = []
            for masked in (False, True):
                record = base_record(setup, "logits", spec, nfe, batch_size)
                record.update(canvas="fixed", canvas_length=setup.canvas_length, timed=TIMED)
                call = decode_call(
                    setup, spec, nfe, canvas_length=setup.canvas_length, masked_logits=masked
                )
                pair.append(Measurement(record, setup.batches(batch_size), call))
            out.append((pair[0], pair[1]))
    return out


def combine_logits(full: Measurement, masked: Measurement) -> dict[str, Any]:
    """One line for a (full, masked) pair: both RTFx, their ratio, and whether ids agree."""
    first, second = full.result(), masked.result()
    same = all(a.ids == b.ids for a, b in zip(full.outputs, masked.outputs, strict=True))
    keep = {k: v for k, v in first.items() if k not in ("rtfx", "rtfx_best", "decode_seconds")}
    return keep | {
        "rtfx_full": first["rtfx"],
        "rtfx_masked": second["rtfx"],
        "masked_over_full": second["rtfx"] / first["rtfx"] if first["rtfx"] else None,
        "rtfx_best_full": first["rtfx_best"],
        "rtfx_best_masked": second["rtfx_best"],
        "decode_seconds_full": first["decode_seconds"],
        "decode_seconds_masked": second["decode_seconds"],
        "compile_seconds_masked": second["compile_seconds"],
        "mean_nfe_masked": second["mean_nfe"],
        "same_ids": same,
    }


def finish_canvas(measurement: Measurement) -> dict[str, Any]:
    lengths = sorted({int(out.tokens.shape[1]) for out in measurement.outputs})
    return measurement.result() | {"canvas_length": max(lengths), "canvas_lengths": lengths}


def overhead_measurements(
    setup: Setup, batch_size: int, specs: Sequence[str], nfes: Sequence[int]
) -> tuple[list[Measurement], Callable[[], list[dict[str, Any]]]]:
    """Encoder alone, one bare decoder forward, and fixed-step decodes at the lowest and highest
    NFE per sampler, all on the first batch; returns the measurements and a function that turns
    their medians into one record per sampler."""
    model, variables = setup.model, {"params": setup.params}
    batch = setup.batches(batch_size)[0]
    length = setup.canvas_length
    mask_id = setup.model_config.mask_id

    @jax.jit
    def encode(variables, features, feature_mask):
        encoded, enc_mask = model.apply(variables, features, feature_mask, method=model.encode)
        return enc_mask, model.apply(variables, encoded, method=model.mdm_cross_kv)

    @jax.jit
    def forward(variables, canvas, enc_mask, cross_kv):
        return model.apply(variables, canvas, None, enc_mask, cross_kv, method=model.mdm_logits)

    enc_mask, cross_kv = encode(variables, batch["features"], batch["feature_mask"])
    canvas = jax.numpy.full((batch_size, length), mask_id, jax.numpy.int32)
    encoder = Measurement(
        {}, [batch], lambda b: encode(variables, b["features"], b["feature_mask"])
    )
    bare = Measurement({}, [batch], lambda b: forward(variables, canvas, enc_mask, cross_kv))
    lo, hi = min(nfes), max(nfes)
    if lo == hi:
        lo = 1
    fixed = {
        (spec, nfe): Measurement(
            {},
            [batch],
            decode_call(setup, spec, nfe, canvas_length=length, fixed_steps=True),
        )
        for spec in specs
        for nfe in (lo, hi)
    }

    def finish() -> list[dict[str, Any]]:
        encoder_seconds = encoder.medians()[0]
        forward_seconds = bare.medians()[0]
        host = batch["host"]
        audio = float(np.asarray(host["seconds"])[np.asarray(host["example_mask"])].sum())
        records = []
        for spec in specs:
            t_lo, t_hi = fixed[spec, lo].medians()[0], fixed[spec, hi].medians()[0]
            step_seconds = (t_hi - t_lo) / (hi - lo)
            record = base_record(setup, "overhead", spec, hi, batch_size)
            record.update(
                rtfx=audio / t_hi,
                step_seconds=step_seconds,
                forward_seconds=forward_seconds,
                overhead_ratio=step_seconds / forward_seconds,
                encoder_seconds=encoder_seconds,
                fixed_steps_seconds={str(lo): t_lo, str(hi): t_hi},
                canvas_length=length,
                timed=(
                    "step_seconds = (decode(fixed_steps, nfe=hi) - decode(fixed_steps, nfe=lo))"
                    " / (hi - lo) on one batch; forward_seconds = jit(mdm_logits) on a "
                    "full-[MASK] canvas with precomputed cross K/V; encoder_seconds = encoder + "
                    "cross K/V; rtfx = fixed-step decode at nfe=hi"
                ),
            )
            records.append(record)
        return records

    return [encoder, bare, *fixed.values()], finish


def run_faster_whisper(setup: Setup) -> None:
    """faster-whisper on the same audio, batch 1, when the checkpoint came from a CT2 dir."""
    record = base_record(setup, "faster_whisper", "faster_whisper(beam=1)", None, 1)
    source = setup.info.get("source")
    reason = None
    if setup.model_config.encoder.kind != "whisper":
        reason = "the model is not Whisper"
    elif setup.info.get("source_format") != "ctranslate2":
        reason = (
            "the checkpoint records no CTranslate2 source directory (convert with "
            "`mdm-asr-convert whisper` from a CTranslate2 dir to compare with faster-whisper)"
        )
    elif not source or not Path(source).exists():
        reason = f"the recorded source directory {source!r} does not exist here"
    if reason:
        emit(record | {"rtfx": None, "skipped": reason})
        return
    from faster_whisper import WhisperModel

    from mdm_asr_jax.audio import load_audio

    setup.batches(1)  # fills audio_paths
    audios = [load_audio(p) for p in setup.audio_paths]
    model = WhisperModel(source, device="cpu", compute_type="float32")
    options = dict(FASTER_WHISPER_GREEDY)
    start = time.perf_counter()
    list(model.transcribe(audios[0], **options)[0])
    warmup = time.perf_counter() - start
    decode_seconds = 0.0
    for audio in audios:
        times = []
        for _ in range(max(FLAGS.repeats, 1)):
            start = time.perf_counter()
            list(model.transcribe(audio, **options)[0])
            times.append(time.perf_counter() - start)
        decode_seconds += statistics.median(times)
    audio_seconds = sum(a.size for a in audios) / 16000.0
    record.update(
        rtfx=audio_seconds / decode_seconds,
        decode_seconds=decode_seconds,
        audio_seconds=audio_seconds,
        compile_seconds=warmup,
        dtype="float32",
        timed="faster-whisper transcribe (its own log-mel + encoder + greedy decoder), CPU",
    )
    emit(record)


# ---------------------------------------------------------------------------------------------
# part=lengths: paper shapes, random weights, real transcript lengths.

PAPER_SHAPES = ("canary_180m", "canary_1b", "whisper_tiny", "whisper_base")
WHISPER_PROMPT = (50258, 50259, 50359, 50363)  # <|startoftranscript|><|en|><|transcribe|>...
WHISPER_EOS = 50257  # <|endoftext|>
CANARY_PROMPT_LENGTH = 5  # Canary-flash's decoder prompt: start, languages, task, punctuation


def paper_shape_config(shape: str, dtype: str) -> Any:
    """ModelConfig of a paper shape with an MDM and an AR decoder of the same size."""
    from mdm_asr_jax.nn.config import ModelConfig
    from mdm_asr_jax.nn.whisper import whisper_model_config

    if shape not in PAPER_SHAPES:
        raise app.UsageError(f"--shapes: unknown {shape!r}; choose from {list(PAPER_SHAPES)}")
    if shape.startswith("whisper_"):
        return whisper_model_config(
            shape.removeprefix("whisper_"),
            WHISPER_PROMPT,
            WHISPER_EOS,
            ar_decoder=True,
            mdm_decoder=True,
            dtype=dtype,
            min_frames=0,  # windows of the audio's length, as fine-tuned models here run
        )
    from mdm_asr_jax.nn.fastconformer import canary_decoder_config, canary_encoder_config

    variant = {"canary_180m": "canary-180m-flash", "canary_1b": "canary-1b-flash"}[shape]
    vocab = FLAGS.canary_vocab
    return ModelConfig(
        vocab_size=vocab + 1,
        encoder=canary_encoder_config(variant),
        mdm_decoder=canary_decoder_config(variant, bidirectional=True),
        ar_decoder=canary_decoder_config(variant, bidirectional=False),
        ctc=False,
        prompt_ids=tuple(range(4, 4 + CANARY_PROMPT_LENGTH)),
        pad_id=0,
        eos_id=3,
        dtype=dtype,
    ).validate()


class ShapeSetup:
    """A random model of a paper shape; what `base_record` and `decode_call` read."""

    def __init__(self, shape: str) -> None:
        from mdm_asr_jax.nn.model import ASRModel

        self.shape = shape
        self.model_config = paper_shape_config(shape, FLAGS.dtype)
        self.model = ASRModel(self.model_config)
        start = time.perf_counter()
        params = random_params(self.model_config, FLAGS.seed)
        self.params = jax.device_put(params, jax.local_devices()[0])
        self.init_seconds = time.perf_counter() - start
        self.num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        self.source = f"random {shape} model ({self.num_params / 1e6:.0f} M parameters)"

    def batch(self, batch_size: int, length: int) -> dict[str, Any]:
        """Synthetic features of length / tokens_per_second seconds, all rows the same."""
        seconds = length / FLAGS.tokens_per_second
        host = synthetic_batch(
            batch_size,
            seconds,
            num_mels=self.model_config.encoder.num_mels,
            vocab_size=self.model_config.vocab_size,
            seed=FLAGS.seed + length,
        )
        host["seconds"] = np.full((batch_size,), round(seconds * 100) / 100, np.float32)
        device = jax.local_devices()[0]
        return {k: jax.device_put(v, device) for k, v in host.items()} | {"host": host}


def length_call(
    setup: ShapeSetup, spec: str, nfe: int | None, targets: np.ndarray, **kwargs: Any
) -> Callable:
    """decode() forced to `targets` tokens per row."""
    from mdm_asr_jax.decode import decode

    return lambda batch: decode(
        setup.model, setup.params, batch, spec, nfe, FLAGS.seed, target_lengths=targets, **kwargs
    )


def run_lengths(specs: Sequence[str], nfes: Sequence[int]) -> None:
    """part=lengths: one JSON line per (decoder, shape, batch size, target length)."""
    try:
        lengths = sorted({int(n) for n in FLAGS.lengths})
    except ValueError:
        raise app.UsageError(f"--lengths must be integers, got {FLAGS.lengths}") from None
    if not lengths or lengths[0] < 1:
        raise app.UsageError("--lengths must hold positive integers")
    for shape in FLAGS.shapes:
        paper_shape_config(shape, FLAGS.dtype)  # unknown shapes fail before any work
    for shape in FLAGS.shapes:
        setup = ShapeSetup(shape)
        if jax.default_backend() == "cpu":
            print(f"# {setup.source}; {cpu_note()}", file=sys.stderr, flush=True)
        for batch_size in sorted({1, FLAGS.batch_size}):
            measurements: list[tuple[int, Measurement]] = []
            masked: dict[int, Measurement] = {}  # id(full MDM measurement) -> its masked twin
            for length in lengths:
                batch = setup.batch(batch_size, length)
                targets = np.full((batch_size,), length, np.int32)
                common = dict(
                    shape=shape,
                    target_length=length,
                    num_params=setup.num_params,
                    vocab_size=setup.model_config.vocab_size,
                    tokens_per_second=FLAGS.tokens_per_second,
                )
                record = base_record(setup, "lengths", "ar_greedy", None, batch_size) | common
                record["timed"] = TIMED.replace("decode loop", "greedy loop with KV cache")
                call = length_call(setup, "ar_greedy", None, targets)
                measurements.append((length, Measurement(record, [batch], call)))
                for spec in specs:
                    for nfe in nfes:
                        record = base_record(setup, "lengths", spec, nfe, batch_size) | common
                        record["timed"] = TIMED
                        call = length_call(setup, spec, nfe, targets)
                        full = Measurement(record, [batch], call)
                        measurements.append((length, full))
                        if FLAGS.length_masked_logits:
                            call = length_call(setup, spec, nfe, targets, masked_logits=True)
                            masked[id(full)] = Measurement(dict(record), [batch], call)
            run_interleaved([m for _, m in measurements] + list(masked.values()))
            ar_rtfx: dict[int, float] = {}
            results = []
            for length, measurement in measurements:
                result = measurement.result()
                out = measurement.outputs[0]
                size = "max_len" if result["sampler"] == "ar_greedy" else "canvas_length"
                result[size] = int(out.tokens.shape[1])
                result["mean_output_tokens"] = float(np.mean([len(row) for row in out.ids]))
                if result["sampler"] == "ar_greedy":
                    ar_rtfx[length] = result["rtfx"]
                twin = masked.get(id(measurement))
                if twin is not None:
                    other = twin.result()
                    result["rtfx_masked"] = other["rtfx"]
                    result["masked_over_full"] = other["rtfx"] / result["rtfx"]
                    result["same_ids"] = twin.outputs[0].ids == out.ids
                results.append((length, result))
            for length, result in results:
                if result["sampler"] != "ar_greedy" and ar_rtfx.get(length):
                    result["rtfx_over_ar"] = result["rtfx"] / ar_rtfx[length]
                emit(result)


def canonical(specs: Sequence[str]) -> list[str]:
    """Spec strings as given, with bare names expanded to the defaults (pbeb -> pbeb(...))."""
    from mdm_asr_jax.diffusion.samplers import SamplerSpecError, parse_sampler

    out = []
    for spec in specs:
        spec = MDM_DEFAULTS.get(spec.strip(), spec.strip())
        try:
            config = parse_sampler(spec)
        except SamplerSpecError as err:
            raise app.UsageError(str(err)) from None
        if config.family != "mdm":
            raise app.UsageError(
                f"--samplers takes masked-diffusion samplers; {spec!r} is {config.family} "
                "(AR greedy is part=ar)"
            )
        out.append(spec)
    return out


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    known = {"sampler", "ar", "faster_whisper", "overhead", "canvas", "logits"}
    unknown = set(FLAGS.parts) - known
    if unknown:
        raise app.UsageError(f"--parts: unknown {sorted(unknown)}; choose from {sorted(known)}")
    try:
        nfes = sorted({int(n) for n in FLAGS.nfes})
    except ValueError:
        raise app.UsageError(f"--nfes must be integers, got {FLAGS.nfes}") from None
    if not nfes or nfes[0] < 1:
        raise app.UsageError("--nfes must hold positive integers")
    if FLAGS.batch_size < 1:
        raise app.UsageError("--batch_size must be >= 1")
    if FLAGS.shapes:
        if FLAGS.checkpoint is not None or FLAGS.model_size is not None:
            raise app.UsageError("--shapes replaces --checkpoint / --model_size; give one of them")
        run_lengths(canonical(FLAGS.length_samplers), nfes)
        return
    specs = canonical(FLAGS.samplers)
    overhead_specs = canonical(FLAGS.overhead_samplers or FLAGS.samplers)
    canvas_specs = canonical(FLAGS.canvas_samplers)
    logits_specs = canonical(FLAGS.logits_samplers)
    setup = Setup()
    if jax.default_backend() == "cpu":
        print(f"# {setup.source}; {cpu_note()}", file=sys.stderr, flush=True)
    has_mdm = setup.model_config.mdm_decoder is not None
    for batch_size in sorted({1, FLAGS.batch_size}):
        plain: list[Measurement] = []
        if "sampler" in FLAGS.parts and has_mdm:
            plain += sampler_measurements(setup, batch_size, specs, nfes)
        if "ar" in FLAGS.parts:
            plain += ar_measurements(setup, batch_size)
        canvas = []
        if "canvas" in FLAGS.parts and has_mdm:
            canvas = canvas_measurements(setup, batch_size, canvas_specs, nfes[-1])
        overhead, finish_overhead = [], None
        if "overhead" in FLAGS.parts and has_mdm:
            overhead, finish_overhead = overhead_measurements(
                setup, batch_size, overhead_specs, nfes
            )
        logits = []
        if "logits" in FLAGS.parts and has_mdm:
            logits = logits_measurements(setup, batch_size, logits_specs, nfes)
        run_interleaved(plain + canvas + overhead + [m for pair in logits for m in pair])
        for measurement in plain:
            emit(measurement.result())
        for full, masked in logits:
            emit(combine_logits(full, masked))
        for measurement in canvas:
            emit(finish_canvas(measurement))
        if finish_overhead is not None:
            for record in finish_overhead():
                emit(record)
    if "faster_whisper" in FLAGS.parts:
        run_faster_whisper(setup)


if __name__ == "__main__":
    app.run(main)
