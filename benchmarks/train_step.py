"""Train-step cost of each objective at the same batch: AR, plain MDM, ISCT with K = 2, 3, ...

For each objective a model of the named size is built with only the head that objective trains
(AR: encoder + causal decoder; MDM/ISCT: encoder + bidirectional decoder of the same size), the
trainer's own pieces are used (`create_train_state`, `make_train_step`, the AdamW optimiser from
`train.defaults.base_config`), and one jitted, state-donating step is timed on a fixed synthetic
batch (random log-mel, random transcripts). Every objective is compiled and run once first;
then --repeats rounds time one step of each objective in turn (starting one further along each
round), so load changes on a shared machine touch all objectives alike; medians are reported.
One JSON line per objective:

  objective, isct_steps, step_seconds, compile_seconds, tokens_per_s (transcript tokens of the
  batch / step time), canvas_tokens_per_s (decoder positions per decoder pass), ratio_vs_ar,
  peak_memory_bytes + peak_memory_source (after the objective's first step: device allocator
  peak if the backend reports one, else this process's RSS high-water mark, which only grows
  over the run, so objectives later in --objectives include the earlier ones), compiled_memory
  (XLA's static plan for the step: argument / output / temp bytes, comparable across objectives),
  batch_size, seconds (audio per utterance), model_size, device, dtype.

ISCT K runs the decoder K times on one encoder pass, so its cost over plain MDM is the extra
decoder forward + backward passes.

`--study=layers` instead compiles (never runs) the MDM train step of Canary-shaped models
(`--variants`, rows of nn.fastconformer.CANARY_VARIANTS: FastConformer encoder + bidirectional
Canary decoder) in every combination of `--layouts` (loop: Python loop over blocks; scan:
`model.scan_layers`) and `--remats` (`model.remat` policies). The step is lowered on abstract
inputs (jax.ShapeDtypeStruct for parameters, optimiser state and batch), so no 1B parameters are
materialised. One JSON line per combination: lower_seconds (trace + lowering), compile_seconds
(XLA compile), compiled_memory (temp_bytes = activations and other temporaries of XLA's static
plan), and, measured in the same run, scan_compile_speedup on loop lines (this loop compile /
the scan compile, same variant and remat) and temp_reduction_vs_no_remat (temp bytes without
remat / with, same variant and layout). Scan combinations run first (short compiles), and each
line is printed as soon as it is measured.

  python benchmarks/train_step.py --model_size=tiny --batch_size=8 --seconds=4
  python benchmarks/train_step.py --model_size=test --repeats=2        # smoke (tests)
  python benchmarks/train_step.py --study=layers --batch_size=8 --seconds=20 \
      --canvas_length=256 --tokens=64 --vocab_size=16385
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    compiled_memory,
    cpu_note,
    device_description,
    emit,
    named_model_config,
    peak_memory,
    synthetic_batch,
)

FLAGS = flags.FLAGS
flags.DEFINE_string("model_size", "tiny", "Row of nn.config ENCODER_SIZES / DECODER_SIZES.")
flags.DEFINE_integer("batch_size", 8, "Utterances per step.")
flags.DEFINE_float("seconds", 4.0, "Audio seconds per utterance (synthetic features).")
flags.DEFINE_integer("tokens", 24, "Transcript tokens per utterance.")
flags.DEFINE_integer("canvas_length", 64, "MDM canvas length (transcript + EOS padding).")
flags.DEFINE_integer("vocab_size", 256, "Vocabulary size (with [MASK]).")
flags.DEFINE_list("objectives", ["ar", "mdm", "isct2", "isct3"], "ar | mdm | isctK (K >= 2).")
flags.DEFINE_integer("repeats", 5, "Timed steps per objective (median reported).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Compute dtype.")
flags.DEFINE_bool("spec_augment", False, "SpecAugment inside the step (as in training).")
flags.DEFINE_enum("study", "objectives", ["objectives", "layers"], "What to measure (docstring).")
flags.DEFINE_list(
    "variants", ["canary-180m-flash", "canary-1b-flash"], "--study=layers: CANARY_VARIANTS rows."
)
flags.DEFINE_list("layouts", ["loop", "scan"], "--study=layers: loop | scan.")
flags.DEFINE_list("remats", ["none", "full"], "--study=layers: model.remat policies.")


def parse_objective(name: str) -> tuple[str, int]:
    """("ar" | "mdm", isct_steps K) from "ar", "mdm" (K = 1) or "isctK"."""
    if name == "ar":
        return "ar", 0
    if name == "mdm":
        return "mdm", 1
    if name.startswith("isct") and name[4:].isdigit() and int(name[4:]) >= 1:
        return "mdm", int(name[4:])
    raise app.UsageError(f"--objectives: unknown objective {name!r}; use ar, mdm or isctK")


class Prepared:
    """One objective's compiled step with its own train state (timed by `main` in rounds)."""

    def __init__(self, name: str, batch: dict[str, np.ndarray]):
        import flax.linen as nn

        from mdm_asr_jax.diffusion.process import ProcessConfig
        from mdm_asr_jax.nn.model import ASRModel, init_params
        from mdm_asr_jax.train import sharding
        from mdm_asr_jax.train.defaults import base_config
        from mdm_asr_jax.train.objective import ObjectiveConfig
        from mdm_asr_jax.train.optim import make_optimizer
        from mdm_asr_jax.train.trainer import create_train_state, make_train_step

        self.name = name
        self.head, self.isct_steps = parse_objective(name)
        model_config = named_model_config(
            FLAGS.model_size,
            vocab_size=FLAGS.vocab_size,
            canvas_length=FLAGS.canvas_length,
            mdm=self.head == "mdm",
            ar=self.head == "ar",
            dtype=FLAGS.dtype,
        )
        objective = ObjectiveConfig(
            mdm_weight=1.0 if self.head == "mdm" else 0.0,
            ar_weight=1.0 if self.head == "ar" else 0.0,
            canvas_length=FLAGS.canvas_length,
            process=ProcessConfig(isct_steps=max(self.isct_steps, 1)),
            spec_augment=FLAGS.spec_augment,
        ).validate(model_config)
        model = ASRModel(model_config)
        self.mesh = sharding.make_mesh((1, 1, 1), jax.local_devices()[:1])
        self.rules = sharding.DEFAULT_RULES
        self.key = jax.random.key(0)
        abstract = nn.meta.unbox(
            jax.eval_shape(lambda k: init_params(model, k)["params"], self.key)
        )
        tx, _ = make_optimizer(base_config().optim, 1000, abstract)
        self.state, _ = create_train_state(model, tx, self.key, self.mesh, self.rules, ema=False)
        self.step_fn = jax.jit(make_train_step(model, tx, objective, 0.0), donate_argnums=(0,))
        self.batch = jax.device_put(batch, jax.local_devices()[0])
        start = time.perf_counter()
        with self._context():
            compiled = self.step_fn.lower(self.state, self.batch, self.key).compile()
        self.compile_seconds = time.perf_counter() - start
        self.compiled_memory = compiled_memory(compiled)
        self.num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(self.state.params))
        jax.block_until_ready(self.step())  # warm-up
        self.peak_memory = peak_memory()  # after this objective's first step
        self.times: list[float] = []

    def _context(self):
        import contextlib

        import flax.linen as nn

        stack = contextlib.ExitStack()
        stack.enter_context(jax.set_mesh(self.mesh))
        stack.enter_context(nn.logical_axis_rules(self.rules))
        return stack

    def step(self) -> jax.Array:
        with self._context():
            self.state, metrics = self.step_fn(self.state, self.batch, self.key)
        return metrics["loss"]

    def time_once(self) -> None:
        start = time.perf_counter()
        jax.block_until_ready(self.step())
        self.times.append(time.perf_counter() - start)

    def record(self, batch: dict[str, np.ndarray]) -> dict:
        step_seconds = statistics.median(self.times)
        tokens = float(np.sum(batch["token_lengths"]))
        peak, source = self.peak_memory
        return {
            "benchmark": "train_step",
            "objective": self.name,
            "isct_steps": self.isct_steps,
            "step_seconds": step_seconds,
            "step_seconds_best": min(self.times),  # least disturbed on a shared machine
            "compile_seconds": self.compile_seconds,
            "tokens_per_s": tokens / step_seconds,
            "canvas_tokens_per_s": batch["tokens"].shape[0] * FLAGS.canvas_length / step_seconds
            if self.head == "mdm"
            else None,
            "peak_memory_bytes": peak,
            "peak_memory_source": source,
            "compiled_memory": self.compiled_memory,
            "num_params": self.num_params,
            "batch_size": int(batch["tokens"].shape[0]),
            "seconds": FLAGS.seconds,
            "tokens": FLAGS.tokens,
            "canvas_length": FLAGS.canvas_length,
            "model_size": FLAGS.model_size,
            "timed": (
                "one jitted train step (forward, backward, AdamW update), state donated; "
                "median over interleaved rounds"
            ),
            "repeats": FLAGS.repeats,
            "device": device_description(),
            "dtype": FLAGS.dtype,
        }


def canary_model_config(variant: str, scan: bool, remat: str):
    """A Canary-shaped MDM model (FastConformer + bidirectional Canary decoder) for the study."""
    from mdm_asr_jax.nn.config import ModelConfig
    from mdm_asr_jax.nn.fastconformer import canary_decoder_config, canary_encoder_config

    return ModelConfig(
        vocab_size=FLAGS.vocab_size,
        encoder=canary_encoder_config(variant),
        mdm_decoder=canary_decoder_config(
            variant, bidirectional=True, max_length=FLAGS.canvas_length + 1
        ),
        prompt_ids=(2,),
        pad_id=0,
        eos_id=3,
        dtype=FLAGS.dtype,
        scan_layers=scan,
        remat=remat,
    ).validate()


def compile_study_step(variant: str, layout: str, remat: str) -> dict:
    """Lower and compile one MDM train step on abstract inputs; returns its JSON record."""
    import flax.linen as nn

    from mdm_asr_jax.nn.model import ASRModel, init_params
    from mdm_asr_jax.train.defaults import base_config
    from mdm_asr_jax.train.objective import ObjectiveConfig
    from mdm_asr_jax.train.optim import make_optimizer
    from mdm_asr_jax.train.trainer import TrainState, make_train_step

    config = canary_model_config(variant, layout == "scan", remat)
    model = ASRModel(config)
    key = jax.random.key(0)
    params = nn.meta.unbox(jax.eval_shape(lambda k: init_params(model, k)["params"], key))
    tx, _ = make_optimizer(base_config().optim, 1000, params)
    state = TrainState(
        step=jax.ShapeDtypeStruct((), np.int32),
        params=params,
        opt_state=jax.eval_shape(tx.init, params),
        ema_params=None,
    )
    batch = synthetic_batch(
        FLAGS.batch_size,
        FLAGS.seconds,
        num_mels=config.encoder.num_mels,
        num_tokens=FLAGS.tokens,
        vocab_size=FLAGS.vocab_size,
    )
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    objective = ObjectiveConfig(
        canvas_length=FLAGS.canvas_length, spec_augment=FLAGS.spec_augment
    ).validate(config)
    step_fn = jax.jit(make_train_step(model, tx, objective, 0.0), donate_argnums=(0,))
    start = time.perf_counter()
    lowered = step_fn.lower(state, batch, key)
    lower_seconds = time.perf_counter() - start
    start = time.perf_counter()
    compiled = lowered.compile()
    compile_seconds = time.perf_counter() - start
    return {
        "benchmark": "train_step_compile",
        "variant": variant,
        "layout": layout,
        "remat": remat,
        "lower_seconds": lower_seconds,
        "compile_seconds": compile_seconds,
        "compiled_memory": compiled_memory(compiled),
        "num_params": sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params)),
        "encoder_layers": config.encoder.num_layers,
        "decoder_layers": config.mdm_decoder.num_layers,
        "batch_size": FLAGS.batch_size,
        "seconds": FLAGS.seconds,
        "tokens": FLAGS.tokens,
        "canvas_length": FLAGS.canvas_length,
        "vocab_size": FLAGS.vocab_size,
        "timed": (
            "jax.jit(MDM train step: forward, backward, AdamW update).lower(abstract inputs) "
            "and .compile(), once each"
        ),
        "device": device_description(),
        "dtype": FLAGS.dtype,
    }


def layer_study() -> None:
    """Every (variant, layout, remat) compiled in turn; ratios filled in per variant."""
    from mdm_asr_jax.nn.fastconformer import CANARY_VARIANTS
    from mdm_asr_jax.nn.stack import REMAT_POLICIES

    for variant in FLAGS.variants:
        if variant not in CANARY_VARIANTS:
            raise app.UsageError(f"--variants: {variant!r}; choose from {sorted(CANARY_VARIANTS)}")
    for layout in FLAGS.layouts:
        if layout not in ("loop", "scan"):
            raise app.UsageError(f"--layouts: {layout!r}; choose loop or scan")
    for remat in FLAGS.remats:
        if remat not in REMAT_POLICIES:
            raise app.UsageError(f"--remats: {remat!r}; choose from {REMAT_POLICIES}")
    note = cpu_note() if jax.default_backend() == "cpu" else None

    # Scan before loop (its compiles are the short ones), no remat before remat; each line is
    # printed as soon as it is measured (the 1B loop compile can take many minutes) and carries
    # the ratios to the combinations measured before it.
    def order(combo: tuple[str, str]) -> tuple[bool, bool]:
        layout, remat = combo
        return layout != "scan", remat != "none"

    combos = sorted(
        ((layout, remat) for remat in FLAGS.remats for layout in FLAGS.layouts), key=order
    )
    for variant in FLAGS.variants:
        done: dict[tuple[str, str], dict] = {}
        for layout, remat in combos:
            record = compile_study_step(variant, layout, remat)
            done[(layout, remat)] = record
            scan = done.get(("scan", remat))
            if layout == "loop":  # how much faster the scanned step (same remat) compiled
                record["scan_compile_speedup"] = (
                    record["compile_seconds"] / scan["compile_seconds"] if scan else None
                )
            plain = done.get((layout, "none"))
            temp = (record["compiled_memory"] or {}).get("temp_bytes")
            plain_temp = ((plain or {}).get("compiled_memory") or {}).get("temp_bytes")
            record["temp_reduction_vs_no_remat"] = (
                plain_temp / temp if plain_temp and temp else None
            )
            if note:
                record["note"] = note
            emit(record)


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if FLAGS.study == "layers":
        layer_study()
        return
    for name in FLAGS.objectives:
        parse_objective(name)  # fail before any compile
    if FLAGS.tokens >= FLAGS.canvas_length:
        raise app.UsageError(
            f"--tokens={FLAGS.tokens} must be < --canvas_length={FLAGS.canvas_length} "
            "(room for EOS)"
        )
    batch = synthetic_batch(
        FLAGS.batch_size,
        FLAGS.seconds,
        num_tokens=FLAGS.tokens,
        vocab_size=FLAGS.vocab_size,
    )
    note = cpu_note() if jax.default_backend() == "cpu" else None
    prepared = [Prepared(name, batch) for name in FLAGS.objectives]
    # Interleaved rounds: every objective once per round, starting one further along, so a
    # change in machine load touches all of them alike.
    for round_number in range(max(FLAGS.repeats, 1)):
        for offset in range(len(prepared)):
            prepared[(round_number + offset) % len(prepared)].time_once()
    records = [p.record(batch) for p in prepared]
    ar_seconds = next((r["step_seconds"] for r in records if r["objective"] == "ar"), None)
    for record in records:
        record["ratio_vs_ar"] = record["step_seconds"] / ar_seconds if ar_seconds else None
        if note:
            record["note"] = note
        emit(record)


if __name__ == "__main__":
    app.run(main)
