"""Train-step cost of each objective at the same batch: AR, plain MDM, ISCT with K = 2, 3, ...

For each objective a model of the named size is built with only the head that objective trains
(AR: encoder + causal decoder; MDM/ISCT: encoder + bidirectional decoder of the same size), the
trainer's own pieces are used (`create_train_state`, `make_train_step`, the AdamW optimiser from
`train.defaults.base_config`), and one jitted, state-donating step is timed on a fixed synthetic
batch (random log-mel, random transcripts) after a warm-up (compile) call; the median of
--repeats steps is reported. One JSON line per objective:

  objective, isct_steps, step_seconds, compile_seconds, tokens_per_s (transcript tokens of the
  batch / step time), canvas_tokens_per_s (decoder positions per decoder pass), ratio_vs_ar,
  peak_memory_bytes + peak_memory_source (device allocator peak if the backend reports one,
  else this process's RSS high-water mark, which only grows over the run), compiled_memory
  (XLA's static plan for the step: argument / output / temp bytes, comparable across objectives),
  batch_size, seconds (audio per utterance), model_size, device, dtype.

ISCT K runs the decoder K times on one encoder pass, so its cost over plain MDM is the extra
decoder forward + backward passes.

  python benchmarks/train_step.py --model_size=tiny --batch_size=8 --seconds=4
  python benchmarks/train_step.py --model_size=test --repeats=2        # smoke (tests)
"""

from __future__ import annotations

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
    time_call,
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


def parse_objective(name: str) -> tuple[str, int]:
    """("ar" | "mdm", isct_steps K) from "ar", "mdm" (K = 1) or "isctK"."""
    if name == "ar":
        return "ar", 0
    if name == "mdm":
        return "mdm", 1
    if name.startswith("isct") and name[4:].isdigit() and int(name[4:]) >= 1:
        return "mdm", int(name[4:])
    raise app.UsageError(f"--objectives: unknown objective {name!r}; use ar, mdm or isctK")


def measure(name: str, batch: dict[str, np.ndarray]) -> dict:
    """Builds the model and trainer step for one objective and times it."""
    import flax.linen as nn

    from mdm_asr_jax.diffusion.process import ProcessConfig
    from mdm_asr_jax.nn.model import ASRModel, init_params
    from mdm_asr_jax.train import sharding
    from mdm_asr_jax.train.defaults import base_config
    from mdm_asr_jax.train.objective import ObjectiveConfig
    from mdm_asr_jax.train.optim import make_optimizer
    from mdm_asr_jax.train.trainer import create_train_state, make_train_step

    head, isct_steps = parse_objective(name)
    model_config = named_model_config(
        FLAGS.model_size,
        vocab_size=FLAGS.vocab_size,
        canvas_length=FLAGS.canvas_length,
        mdm=head == "mdm",
        ar=head == "ar",
        dtype=FLAGS.dtype,
    )
    objective = ObjectiveConfig(
        mdm_weight=1.0 if head == "mdm" else 0.0,
        ar_weight=1.0 if head == "ar" else 0.0,
        canvas_length=FLAGS.canvas_length,
        process=ProcessConfig(isct_steps=max(isct_steps, 1)),
        spec_augment=FLAGS.spec_augment,
    ).validate(model_config)
    model = ASRModel(model_config)
    optim = base_config().optim
    mesh = sharding.make_mesh((1, 1, 1), jax.local_devices()[:1])
    rules = sharding.DEFAULT_RULES
    key = jax.random.key(0)
    abstract = nn.meta.unbox(jax.eval_shape(lambda k: init_params(model, k)["params"], key))
    tx, _ = make_optimizer(optim, 1000, abstract)
    state, state_shardings = create_train_state(model, tx, key, mesh, rules, ema=False)
    step_fn = jax.jit(make_train_step(model, tx, objective, 0.0), donate_argnums=(0,))
    device_batch = jax.device_put(batch, jax.local_devices()[0])
    start = time.perf_counter()
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        compiled = step_fn.lower(state, device_batch, key).compile()
    compile_seconds = time.perf_counter() - start
    holder = {"state": state}

    def one_step():
        holder["state"], metrics = step_fn(holder["state"], device_batch, key)
        return metrics["loss"]

    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        step_seconds, _ = time_call(one_step, FLAGS.repeats)
    peak, source = peak_memory()
    tokens = float(np.sum(batch["token_lengths"]))
    num_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(holder["state"].params))
    return {
        "benchmark": "train_step",
        "objective": name,
        "isct_steps": isct_steps,
        "step_seconds": step_seconds,
        "compile_seconds": compile_seconds,
        "tokens_per_s": tokens / step_seconds,
        "canvas_tokens_per_s": batch["tokens"].shape[0] * FLAGS.canvas_length / step_seconds
        if head == "mdm"
        else None,
        "peak_memory_bytes": peak,
        "peak_memory_source": source,
        "compiled_memory": compiled_memory(compiled),
        "num_params": num_params,
        "batch_size": int(batch["tokens"].shape[0]),
        "seconds": FLAGS.seconds,
        "tokens": FLAGS.tokens,
        "canvas_length": FLAGS.canvas_length,
        "model_size": FLAGS.model_size,
        "timed": "one jitted train step (forward, backward, AdamW update), state donated",
        "repeats": FLAGS.repeats,
        "device": device_description(),
        "dtype": FLAGS.dtype,
    }


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
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
    ar_seconds = None
    for name in FLAGS.objectives:
        record = measure(name, batch)
        if name == "ar":
            ar_seconds = record["step_seconds"]
        record["ratio_vs_ar"] = record["step_seconds"] / ar_seconds if ar_seconds else None
        if note:
            record["note"] = note
        emit(record)


if __name__ == "__main__":
    app.run(main)
