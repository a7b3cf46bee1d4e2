"""Config translation: the training config (ml_collections) -> the dataclasses modules take.

`train.defaults.base_config` declares every key; these functions are the only place that
reads them into `ProcessConfig`, `ObjectiveConfig`, `FeatureConfig` and `ModelConfig`.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from mdm_asr_jax.audio import FeatureConfig
from mdm_asr_jax.diffusion.process import ProcessConfig
from mdm_asr_jax.nn.config import ConfigError, ModelConfig, decoder_config, encoder_config
from mdm_asr_jax.nn.encoders import finetune_config
from mdm_asr_jax.text import Tokenizer
from mdm_asr_jax.train.objective import ObjectiveConfig


class TrainError(RuntimeError):
    """Training cannot continue (non-finite loss, bad configuration, missing data)."""


def process_config(config: ml_collections.ConfigDict) -> ProcessConfig:
    """`config.objective`'s forward-process keys."""
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
        time_weight=obj.time_weight,
        time_weight_cap=obj.time_weight_cap,
        normalize=obj.normalize,
        deterministic_first=obj.isct_deterministic_first,
        tail_mask_prob=obj.tail_mask_prob,
        suffix_mask_prob=obj.suffix_mask_prob,
    ).validate()


def objective_config(config: ml_collections.ConfigDict) -> ObjectiveConfig:
    """`config.objective`: loss weights, canvas, SpecAugment and the forward process."""
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
        exclude_special=obj.exclude_special,
        mdm_warmup_steps=obj.mdm_warmup_steps,
        mdm_start_step=obj.mdm_start_step,
    )


def training_special_ids(tokenizer: Tokenizer) -> tuple[int, ...]:
    """The tokenizer's special ids that no transcript contains (EOS and unk stay predictable)."""
    keep = {getattr(tokenizer, "eos_id", None), getattr(tokenizer, "unk_id", None)}
    return tuple(sorted(int(i) for i in getattr(tokenizer, "special_ids", ()) if i not in keep))


def feature_config(config: ml_collections.ConfigDict) -> FeatureConfig:
    """`config.features`: the log-mel front end."""
    return FeatureConfig(kind=config.features.kind, num_mels=config.features.num_mels)


def finetune_model_config(config: ml_collections.ConfigDict, base: ModelConfig) -> ModelConfig:
    """ModelConfig for fine-tuning a converted checkpoint: its architecture, vocabulary and
    prompt, with the heads, dropout, decoder length, dtype and layer stacking (scan, remat) of
    the training config."""
    m = config.model
    try:
        tuned = finetune_config(
            base,
            mdm=m.mdm,
            ar=m.ar,
            ctc=m.ctc,
            dropout=m.dropout,
            max_length=m.max_length or (config.objective.canvas_length + len(base.prompt_ids)),
            dtype=m.dtype,
            min_frames=None if m.encoder_min_frames < 0 else m.encoder_min_frames,
        )
    except ConfigError as err:
        raise TrainError(f"model.base_checkpoint={m.base_checkpoint}: {err}") from None
    return dataclasses.replace(
        tuned,
        scan_layers=bool(m.scan_layers),
        remat=m.remat,
        mdm_shift=bool(m.mdm_shift) or base.mdm_shift,
    ).validate()


def build_model_config(config: ml_collections.ConfigDict, tokenizer: Tokenizer) -> ModelConfig:
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
        mdm_shift=bool(m.mdm_shift),
    ).validate()
