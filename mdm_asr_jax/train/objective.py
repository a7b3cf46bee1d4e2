"""Training objective: a weighted mix of the MDM (with ISCT), AR and CTC losses.

The encoder runs once per batch (or not at all, when the batch carries `encoded`/`enc_mask`:
the trainer's encoder-output cache for a frozen encoder) and is shared by every head and every ISCT step (the MDM
decoder's cross-attention K/V are projected once as well). Each head returns summed terms; they
are normalised once here: MDM per target token (canvas positions that count), AR per target
token, CTC per label token.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mdm_asr_jax import ar, ctc
from mdm_asr_jax.audio import spec_augment
from mdm_asr_jax.diffusion import process
from mdm_asr_jax.nn.model import ASRModel

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    mdm_weight: float = 1.0
    ar_weight: float = 0.0
    ctc_weight: float = 0.0
    canvas_length: int = 64
    process: process.ProcessConfig = process.ProcessConfig()
    spec_augment: bool = True
    freq_masks: int = 2
    freq_width: int = 15
    time_masks: int = 2
    time_width_ratio: float = 0.05
    # The encoder is frozen: no gradient flows into it, so its backward pass is never computed.
    encoder_frozen: bool = False
    # Ids never predicted (no training probability, never in an ISCT canvas): the model's
    # pad / [MASK] / prompt ids are added to these (e.g. a tokenizer's other special ids).
    exclude_special: bool = True
    special_ids: tuple[int, ...] = ()
    # MDM weight ramps linearly from 0 to mdm_weight over the first N optimiser steps (the
    # encoder aligns on the CTC / AR losses first); 0 = full weight from the start.
    mdm_warmup_steps: int = 0
    # The MDM loss starts at this step (weight 0 before it; then the warm-up above).
    mdm_start_step: int = 0

    def forbidden_ids(self, model_config) -> tuple[int, ...]:
        """Ids the MDM loss gives no probability: [MASK], pad, prompt and special ids, never EOS."""
        if not self.exclude_special:
            return ()
        ids = {
            model_config.mask_id,
            model_config.pad_id,
            *model_config.prompt_ids,
            *self.special_ids,
        }
        ids.discard(model_config.eos_id)
        return tuple(sorted(int(i) for i in ids))

    def validate(self, model_config) -> ObjectiveConfig:
        self.process.validate()
        if self.mdm_weight > 0 and model_config.mdm_decoder is None:
            raise ValueError(
                "objective.mdm_weight > 0 but the model has no MDM decoder (model.mdm)"
            )
        if self.ar_weight > 0 and model_config.ar_decoder is None:
            raise ValueError("objective.ar_weight > 0 but the model has no AR decoder (model.ar)")
        if self.ctc_weight > 0 and not model_config.ctc:
            raise ValueError("objective.ctc_weight > 0 but the model has no CTC head (model.ctc)")
        if self.mdm_weight + self.ar_weight + self.ctc_weight <= 0:
            raise ValueError("all objective weights are zero: nothing to train")
        limit = (
            model_config.mdm_decoder.max_length - len(model_config.prompt_ids)
            if model_config.mdm_decoder
            else None
        )
        if limit is not None and self.canvas_length > limit:
            raise ValueError(
                f"objective.canvas_length={self.canvas_length} exceeds the MDM decoder's room "
                f"({limit} positions after the prompt): raise model max_length"
            )
        return self


def compute_loss(
    model: ASRModel,
    params: Any,
    batch: dict[str, Array],
    key: Array,
    config: ObjectiveConfig,
    *,
    train: bool = True,
    extra_variables: dict[str, Any] | None = None,
    step: Array | None = None,
) -> tuple[Array, dict[str, Array]]:
    """(scalar loss, metrics) for one batch. Metrics hold per-token losses and accuracies.

    `step` (the optimiser step) drives the MDM weight warm-up, if the config has one."""
    mcfg = model.config
    variables = {"params": params, **(extra_variables or {})}
    aug_key, enc_key, mdm_key, ar_key = jax.random.split(key, 4)
    if "encoded" in batch:  # Encoder outputs computed (or cached) outside the step.
        encoded, enc_mask = batch["encoded"], batch["enc_mask"]
    else:
        features, feature_mask = batch["features"], batch["feature_mask"]
        if train and config.spec_augment:
            features = spec_augment(
                aug_key,
                features,
                feature_mask,
                num_freq_masks=config.freq_masks,
                freq_width=config.freq_width,
                num_time_masks=config.time_masks,
                time_width_ratio=config.time_width_ratio,
            )
        encoded, enc_mask = model.apply(
            variables,
            features,
            feature_mask,
            train and not config.encoder_frozen,
            method=model.encode,
            rngs={"dropout": enc_key},
        )
    if config.encoder_frozen:
        encoded = jax.lax.stop_gradient(encoded)
    example = batch["example_mask"].astype(jnp.float32)[:, None]
    metrics: dict[str, Array] = {}
    total = jnp.zeros((), jnp.float32)

    if config.mdm_weight > 0:
        targets = process.canvas_targets(
            batch["tokens"],
            batch["token_lengths"],
            config.canvas_length,
            mcfg.eos_id,
            count_padding_eos=config.process.count_padding_eos,
        )
        cross_kv = model.apply(variables, encoded, method=model.mdm_cross_kv)

        def logits_fn(canvas, step_key, dropout=train):
            return model.apply(
                variables,
                canvas,
                None,
                enc_mask,
                cross_kv,
                dropout,
                batch.get("prompt"),  # [B, P] per-utterance prompts (language), else the config's
                method=model.mdm_logits,
                rngs={"dropout": step_key},
            )

        process_config = dataclasses.replace(
            config.process, forbidden_ids=config.forbidden_ids(mcfg)
        )
        terms = process.isct_loss(
            logits_fn,
            mdm_key,
            targets.targets,
            targets.weight * example,
            mcfg.mask_id,
            process_config,
            lengths=batch["token_lengths"],
            first_logits_fn=lambda canvas, step_key: logits_fn(canvas, step_key, False),
        )
        tokens = jnp.maximum(terms["target_tokens"], 1.0)
        mdm = terms["loss_sum"] / tokens
        mdm_weight = jnp.asarray(config.mdm_weight, jnp.float32)
        if (config.mdm_warmup_steps > 0 or config.mdm_start_step > 0) and step is not None:
            since = jnp.asarray(step, jnp.float32) - config.mdm_start_step
            ramp = (since + 1.0) / max(config.mdm_warmup_steps, 1)
            mdm_weight = mdm_weight * jnp.clip(ramp, 0.0, 1.0)
            metrics["mdm_weight"] = mdm_weight
        total = total + mdm_weight * mdm
        metrics["mdm_loss"] = mdm
        metrics["mdm_accuracy"] = terms["correct"] / jnp.maximum(terms["masked_tokens"], 1.0)
        for k in range(config.process.isct_steps):
            metrics[f"mdm_step{k + 1}_loss"] = terms[f"step{k + 1}_loss_sum"] / tokens

    if config.ar_weight > 0:
        decoder_input, ar_targets, ar_weights = ar.ar_inputs_targets(
            batch["tokens"],
            batch["token_lengths"],
            mcfg.prompt_ids if batch.get("prompt") is None else batch["prompt"],
            mcfg.eos_id,
            mcfg.pad_id,
        )
        logits = model.apply(
            variables,
            decoder_input,
            encoded,
            enc_mask,
            train,
            method=model.ar_logits,
            rngs={"dropout": ar_key},
        )
        terms = ar.ar_loss(logits, ar_targets, ar_weights * example)
        ar_value = terms["loss_sum"] / jnp.maximum(terms["weight"], 1.0)
        total = total + config.ar_weight * ar_value
        metrics["ar_loss"] = ar_value

    if config.ctc_weight > 0:
        logits = model.apply(variables, encoded, method=model.ctc_logits)
        label_mask = jnp.arange(batch["tokens"].shape[1])[None] < batch["token_lengths"][:, None]
        ctc_sum, ctc_weight = ctc.ctc_loss(
            logits,
            enc_mask & batch["example_mask"][:, None],
            batch["tokens"],
            label_mask & batch["example_mask"][:, None],
        )
        ctc_value = ctc_sum / jnp.maximum(ctc_weight, 1.0)
        total = total + config.ctc_weight * ctc_value
        metrics["ctc_loss"] = ctc_value

    metrics["loss"] = total
    return total, metrics
