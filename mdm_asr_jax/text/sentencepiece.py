"""SentencePiece tokenizer (``kind="sentencepiece"``), trained here.

pad=0, unk=1, bos=2, eos=3, pieces..., ``[MASK]`` = piece count. Prompt = ``(bos_id,)``.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from mdm_asr_jax.text.tokenizer import (
    MASK_TOKEN,
    TokenizerError,
    as_int_list,
    copy_into,
    require_file,
    require_text,
)

_SPM_NORMALIZATIONS = ("nmt_nfkc", "nfkc", "identity")
_SPM_MODEL_TYPES = ("unigram", "bpe", "char", "word")


class SentencePieceTokenizer:
    """A SentencePiece model with pad=0, unk=1, bos=2, eos=3 and ``[MASK]`` appended.

    Build one with :meth:`train` or load a ``.model`` file with the constructor. A model trained
    elsewhere must use the same reserved ids (pad 0, unk 1, bos 2, eos 3); the constructor checks.
    """

    kind = "sentencepiece"

    def __init__(self, model_path: str | os.PathLike):
        self.model_path = require_file(model_path, "SentencePiece model file")
        self._sp = spm.SentencePieceProcessor(model_file=str(self.model_path))
        reserved = {
            "pad": (self._sp.pad_id(), 0),
            "unk": (self._sp.unk_id(), 1),
            "bos": (self._sp.bos_id(), 2),
            "eos": (self._sp.eos_id(), 3),
        }
        wrong = {k: got for k, (got, want) in reserved.items() if got != want}
        if wrong:
            raise TokenizerError(
                f"SentencePiece model {str(self.model_path)!r} has reserved ids {wrong}; this "
                "project needs pad=0, unk=1, bos=2, eos=3. Retrain it with "
                "SentencePieceTokenizer.train (or pass pad_id=0 unk_id=1 bos_id=2 eos_id=3 to "
                "the SentencePiece trainer), or use AggregateTokenizer for NeMo models."
            )
        self.piece_count = self._sp.get_piece_size()
        control = {i for i in range(self.piece_count) if self._sp.is_control(i)}
        self.pad_id, self.unk_id, self.bos_id, self.eos_id = 0, 1, 2, 3
        self.mask_id = self.piece_count
        self.vocab_size = self.piece_count + 1
        self.prompt_ids: tuple[int, ...] = (self.bos_id,)
        self.special_ids = frozenset(control | {0, 1, 2, 3, self.mask_id})

    @classmethod
    def train(
        cls,
        texts: Iterable[str] | str | os.PathLike,
        out_dir: str | os.PathLike,
        vocab_size: int,
        model_type: str = "unigram",
        *,
        lowercase: bool = False,
        normalization: str = "nmt_nfkc",
        character_coverage: float = 1.0,
        byte_fallback: bool = False,
        user_defined_symbols: Sequence[str] = (),
        hard_vocab_limit: bool = True,
        max_sentences: int = 0,
        name: str = "tokenizer",
        num_threads: int = 1,
    ) -> SentencePieceTokenizer:
        """Trains a SentencePiece model and returns it, written to ``out_dir/{name}.model``.

        Args:
          texts: an iterable of sentences, or the path of a text file with one sentence a line.
          out_dir: folder for ``{name}.model`` and ``{name}.vocab`` (created if missing).
          vocab_size: SentencePiece pieces INCLUDING the 4 reserved ids; the model vocabulary
            is one larger (``[MASK]``).
          model_type: "unigram" (default) or "bpe" (also "char", "word").
          lowercase: case-fold text at train and encode time (stored in the model).
          normalization: "nmt_nfkc" (default), "nfkc" or "identity" (no normalisation;
            cannot be combined with lowercase).
          character_coverage: fraction of characters covered; rarer ones map to unk (or bytes
            with ``byte_fallback``).
          hard_vocab_limit: if False, ``vocab_size`` is a soft limit (useful on tiny corpora).
          max_sentences: train on at most this many sentences (0: all).
          num_threads: trainer threads (1 keeps training deterministic).
        """
        if model_type not in _SPM_MODEL_TYPES:
            raise TokenizerError(
                f"model_type={model_type!r} is not supported; use one of {_SPM_MODEL_TYPES}."
            )
        if normalization not in _SPM_NORMALIZATIONS:
            raise TokenizerError(
                f"normalization={normalization!r} is not supported; use one of "
                f"{_SPM_NORMALIZATIONS}."
            )
        if lowercase and normalization == "identity":
            raise TokenizerError(
                "lowercase=True needs a normalisation rule; use normalization='nmt_nfkc' or 'nfkc'."
            )
        if int(vocab_size) < 5:
            raise TokenizerError(f"vocab_size={vocab_size} is too small; use at least 5.")
        rule = normalization + ("_cf" if lowercase else "")
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        prefix = out_dir / name
        source: dict[str, Any]
        if isinstance(texts, (str, os.PathLike)):
            source = {"input": str(require_file(texts, "Training text file"))}
        else:
            sentences = [s for s in (str(t).strip() for t in texts) if s]
            if not sentences:
                raise TokenizerError("texts is empty; pass at least one non-empty sentence.")
            source = {"sentence_iterator": iter(sentences)}
        model = io.BytesIO()
        try:
            spm.SentencePieceTrainer.train(
                **source,
                model_writer=model,
                vocab_size=int(vocab_size),
                model_type=model_type,
                pad_id=0,
                unk_id=1,
                bos_id=2,
                eos_id=3,
                normalization_rule_name=rule,
                character_coverage=float(character_coverage),
                byte_fallback=bool(byte_fallback),
                user_defined_symbols=list(user_defined_symbols),
                hard_vocab_limit=bool(hard_vocab_limit),
                input_sentence_size=int(max_sentences),
                shuffle_input_sentence=False,
                num_threads=int(num_threads),
                minloglevel=2,
            )
        except RuntimeError as err:
            message = str(err)
            limit = re.search(r"value <= (\d+)", message)
            if "Vocabulary size" in message or limit:
                hint = f"vocab_size <= {limit.group(1)}" if limit else "a smaller vocab_size"
                raise TokenizerError(
                    f"vocab_size={vocab_size} is too large for this training text. Use "
                    f"{hint}, more text, or hard_vocab_limit=False. "
                    f"(SentencePiece: {message.splitlines()[-1]})"
                ) from None
            raise TokenizerError(f"SentencePiece training failed: {message}") from None
        model_path = prefix.with_suffix(".model")
        model_path.write_bytes(model.getvalue())
        sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
        with open(prefix.with_suffix(".vocab"), "w", encoding="utf-8") as f:
            for i in range(sp.get_piece_size()):
                f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i)}\n")
        return cls(model_path)

    def encode(self, text: str) -> list[int]:
        """Text -> piece ids (no BOS/EOS). Never returns ``mask_id``."""
        return list(self._sp.encode(require_text(text), out_type=int))

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; special ids (pad, unk, bos, eos, [MASK]) and out-of-range ids dropped."""
        kept = [i for i in as_int_list(ids) if 0 <= i < self.piece_count]
        kept = [i for i in kept if i not in self.special_ids]
        return self._sp.decode(kept)

    def id_to_piece(self, token_id: int) -> str:
        """The piece string of an id (``[MASK]`` for ``mask_id``)."""
        return MASK_TOKEN if token_id == self.mask_id else self._sp.id_to_piece(int(token_id))

    def save(self, directory: str | os.PathLike) -> dict[str, Any]:
        """Copies the model file into ``directory``; returns the spec for :func:`load_tokenizer`."""
        name = copy_into(self.model_path, Path(directory), "sentencepiece.model")
        return {"kind": self.kind, "model": name, "vocab_size": self.vocab_size}
