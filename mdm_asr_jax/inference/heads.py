"""Which sampler families a model can run, and sampler spec checks against a model."""

from __future__ import annotations

from mdm_asr_jax.diffusion.samplers import SamplerConfig, SamplerSpecError, parse_sampler
from mdm_asr_jax.inference import InferenceError
from mdm_asr_jax.nn.config import ModelConfig

_HEADS = {
    "mdm": ("mdm_decoder", "an MDM decoder"),
    "ar": ("ar_decoder", "an AR decoder"),
    "ctc": ("ctc", "a CTC head"),
}


def available_heads(model_config: ModelConfig) -> list[str]:
    """Families of samplers this model can run: subset of ["mdm", "ar", "ctc"]."""
    return [fam for fam, (field, _) in _HEADS.items() if getattr(model_config, field)]


def check_sampler(
    spec: str, model_config: ModelConfig, where: str = "the checkpoint"
) -> SamplerConfig:
    """Parses `spec` and checks the model has the head it needs (InferenceError otherwise)."""
    try:
        config = parse_sampler(spec)
    except SamplerSpecError as err:
        raise InferenceError(str(err)) from None
    field, label = _HEADS[config.family]
    if not getattr(model_config, field):
        have = ", ".join(available_heads(model_config)) or "none"
        raise InferenceError(
            f"sampler {config.spec!r} needs {label} ({field}), but {where} has none (it has: "
            f"{have}); pick a sampler for one of those heads"
        )
    return config
