"""Tokenizers and text normalisers.

  tokenizer      the `Tokenizer` protocol every kind implements (see there), shared helpers
  sentencepiece  `SentencePieceTokenizer`, trained here
  whisper        `WhisperTokenizer`, OpenAI Whisper's byte-level BPE
  canary         `AggregateTokenizer` (Canary's per-language SentencePiece models), prompts
  normalize      `get_normalizer`: "english" (Whisper's), "whisper_basic", "basic", "none"
  orthography    per-language spelling of synthesised text (modernize, unspeakable_reason)
This module holds the loader (`load_tokenizer`: a checkpoint's tokenizer spec -> the tokenizer)
and re-exports the public names, so callers import from `mdm_asr_jax.text`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mdm_asr_jax.text.canary import (
    AggregateTokenizer,
    build_special_tokens_model,
    canary_prompt_tokens,
)
from mdm_asr_jax.text.normalize import NormalizerError, basic_normalize, get_normalizer
from mdm_asr_jax.text.sentencepiece import SentencePieceTokenizer
from mdm_asr_jax.text.tokenizer import MASK_TOKEN, Tokenizer, TokenizerError
from mdm_asr_jax.text.whisper import WhisperTokenizer

__all__ = [
    "MASK_TOKEN",
    "AggregateTokenizer",
    "NormalizerError",
    "SentencePieceTokenizer",
    "Tokenizer",
    "TokenizerError",
    "WhisperTokenizer",
    "basic_normalize",
    "build_special_tokens_model",
    "canary_prompt_tokens",
    "get_normalizer",
    "load_tokenizer",
]


def load_tokenizer(directory: str | os.PathLike, spec: Mapping[str, Any]) -> Tokenizer:
    """Rebuilds a tokenizer from the ``spec`` its ``save(directory)`` returned.

    Checks the rebuilt ``vocab_size`` against the spec's, so a checkpoint never pairs a model
    with the wrong vocabulary silently.
    """
    directory = Path(directory)
    kind = spec.get("kind")
    if kind == SentencePieceTokenizer.kind:
        tokenizer: Tokenizer = SentencePieceTokenizer(directory / spec["model"])
    elif kind == WhisperTokenizer.kind:
        tokenizer = WhisperTokenizer(
            directory / spec["tokenizer"],
            n_vocab=spec["n_vocab"],
            multilingual=spec["multilingual"],
            language=spec.get("language", "en"),
            task=spec.get("task", "transcribe"),
            timestamps=spec.get("timestamps", False),
            prefix_space=spec.get("prefix_space", True),
        )
    elif kind == AggregateTokenizer.kind:
        tokenizer = AggregateTokenizer(
            {lang: directory / name for lang, name in spec["models"]},
            prompt_tokens=spec.get("prompt_tokens"),
            default_lang=spec.get("default_lang"),
            vocab_multiple=spec.get("vocab_multiple", 1),
        )
    else:
        raise TokenizerError(
            f"Tokenizer spec kind={kind!r} is unknown; expected 'sentencepiece', 'whisper' or "
            "'aggregate'. Is the checkpoint's config from a compatible version?"
        )
    expected = spec.get("vocab_size")
    if expected is not None and expected != tokenizer.vocab_size:
        raise TokenizerError(
            f"Tokenizer files in {str(directory)!r} give vocab_size={tokenizer.vocab_size} but "
            f"the spec says {expected}; the files and the config do not belong together."
        )
    return tokenizer
