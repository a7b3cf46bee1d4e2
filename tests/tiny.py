"""Tiny model configs for tests (2 layers, width 32) so compiles stay fast on CPU."""

from __future__ import annotations

from mdm_asr_jax.nn.config import ModelConfig, decoder_config, encoder_config


def tiny_model_config(
    vocab_size: int = 20,
    *,
    ar: bool = True,
    ctc: bool = True,
    prompt_ids: tuple[int, ...] = (2,),
    max_length: int = 16,
) -> ModelConfig:
    """Encoder + MDM decoder (+ AR decoder, CTC head) at width 32, 2 layers, no dropout."""
    return ModelConfig(
        vocab_size=vocab_size,
        encoder=encoder_config("test", dropout=0.0),
        mdm_decoder=decoder_config("test", max_length=max_length, dropout=0.0),
        ar_decoder=decoder_config("test", max_length=max_length, bidirectional=False, dropout=0.0)
        if ar
        else None,
        ctc=ctc,
        prompt_ids=prompt_ids,
        pad_id=0,
        eos_id=3,
    ).validate()
