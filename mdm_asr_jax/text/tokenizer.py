"""The tokenizer protocol every tokenizer kind implements, and helpers they share.

The model, the data pipeline and the samplers only ever see this interface:

- ``encode(text) -> list[int]``: transcript ids, no BOS/EOS, no prompt.
- ``decode(ids) -> str``: drops every id in ``special_ids`` (EOS, pad, prompt tokens, [MASK]).
- ``vocab_size``: the model vocabulary INCLUDING the appended ``[MASK]`` id.
- ``pad_id``, ``eos_id``, ``bos_id``, ``mask_id`` (always ``vocab_size - 1``).
- ``prompt_ids``: the fixed decoder prefix the model is conditioned on (never predicted).
- ``special_ids``: ids that are never text (EOS included: samplers that suppress special ids
  must keep EOS allowed).
- ``save(directory) -> spec``: copies the tokenizer files into ``directory`` and returns a small
  JSON-able dict with a ``"kind"`` key and file names relative to ``directory``;
  ``text.load_tokenizer(directory, spec)`` rebuilds the same tokenizer. The checkpoint config
  carries the spec.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

MASK_TOKEN = "[MASK]"


class TokenizerError(ValueError):
    """Bad tokenizer input: missing file, impossible vocabulary size, unknown token or kind."""


class Tokenizer(Protocol):
    """The interface every tokenizer in this module implements (see the module docstring)."""

    vocab_size: int
    pad_id: int
    eos_id: int
    bos_id: int
    mask_id: int
    prompt_ids: tuple[int, ...]
    special_ids: frozenset[int]

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, directory: str | os.PathLike) -> dict[str, Any]: ...


def as_int_list(ids: Iterable[int]) -> list[int]:
    """Accepts lists, tuples and numpy / jax arrays of ids."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


def require_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TokenizerError(f"encode expects a str, got {type(text).__name__}; pass the text.")
    return text


def require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{what} not found: {str(path)!r}. Pass the path of an existing file.")
    return path


def copy_into(src: Path, directory: Path, name: str) -> str:
    """Copies ``src`` to ``directory/name`` (unless it is already that file); returns ``name``."""
    directory.mkdir(parents=True, exist_ok=True)
    dst = directory / name
    if not (dst.exists() and os.path.samefile(src, dst)):
        shutil.copyfile(src, dst)
    return name
