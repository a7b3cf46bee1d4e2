"""Canary's aggregate tokenizer (``kind="aggregate"``) and prompt tokens.

Canary's per-language SentencePiece models concatenated into one id space in a given language
order, as NeMo's ``AggregateTokenizer`` does: ``id = offset[lang] + local_id`` with ``offset``
the summed sizes of earlier models.
"""

from __future__ import annotations

import bisect
import io
import os
import re
from collections.abc import Iterable, Mapping, Sequence
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
from mdm_asr_jax.text.whisper import WHISPER_TASKS

SPECIAL_TOKENS_LANG = "spl_tokens"  # NeMo's key for Canary's special-token model
_CANARY_BOS = "<|startoftranscript|>"
_CANARY_EOS = "<|endoftext|>"
_CANARY_PAD = "<pad>"


def build_special_tokens_model(
    tokens: Sequence[str], out_dir: str | os.PathLike, name: str = "spl_tokens"
) -> Path:
    """Trains a Canary-style special-token SentencePiece model; returns its ``.model`` path.

    Like NeMo's ``CanaryTokenizer.build_special_tokenizer``: the default tokens
    ``<|nospeech|> <pad> <|endoftext|> <|startoftranscript|> <|pnc|> <|nopnc|>`` come first,
    then ``tokens`` (bare names are wrapped as ``<|name|>``; duplicates dropped), all as
    user-defined symbols after ``<unk>`` = 0, no bos/eos/pad ids, a unigram model trained on the
    token list itself with ``vocab_size = len(tokens) + 2``.
    """
    defaults = ["<|nospeech|>", _CANARY_PAD, _CANARY_EOS, _CANARY_BOS, "<|pnc|>", "<|nopnc|>"]
    wrapped = [t if re.fullmatch(r"<\|.+\|>", t) else f"<|{t}|>" for t in tokens]
    symbols = list(dict.fromkeys(defaults + wrapped))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(symbols),
        model_writer=model,
        vocab_size=len(symbols) + 2,
        hard_vocab_limit=False,
        model_type="unigram",
        character_coverage=1.0,
        bos_id=-1,
        eos_id=-1,
        user_defined_symbols=symbols,
        num_threads=1,
        minloglevel=2,
    )
    path = out_dir / f"{name}.model"
    path.write_bytes(model.getvalue())
    return path


def canary_prompt_tokens(
    source_lang: str = "en",
    target_lang: str | None = None,
    *,
    prompt_format: str = "canary",
    task: str = "transcribe",
    pnc: bool = True,
    itn: bool = False,
    timestamp: bool = False,
    diarize: bool = False,
    emotion: str = "<|emo:undefined|>",
) -> tuple[str, ...]:
    """The special-token strings of a Canary decoder prompt (an empty decoder context).

    ``prompt_format="canary"`` (Canary-1B):
    ``<|startoftranscript|><|src|><|transcribe|or|translate|><|tgt|><|pnc|or|nopnc|>``.
    ``prompt_format="canary2"`` (Canary-1B-flash, -180M-flash, -1B-v2):
    ``<|startofcontext|><|startoftranscript|><|emo:...|><|src|><|tgt|><|pnc|><|itn|>
    <|timestamp|><|diarize|>`` (each with its ``no`` form when false).
    """
    target_lang = source_lang if target_lang is None else target_lang

    def flag(name: str, value: bool) -> str:
        return f"<|{name}|>" if value else f"<|no{name}|>"

    if prompt_format == "canary":
        if task not in WHISPER_TASKS:
            raise TokenizerError(f"task={task!r} is not a Canary task; use one of {WHISPER_TASKS}.")
        return (
            _CANARY_BOS,
            f"<|{source_lang}|>",
            f"<|{task}|>",
            f"<|{target_lang}|>",
            flag("pnc", pnc),
        )
    if prompt_format == "canary2":
        return (
            "<|startofcontext|>",
            _CANARY_BOS,
            emotion,
            f"<|{source_lang}|>",
            f"<|{target_lang}|>",
            flag("pnc", pnc),
            flag("itn", itn),
            flag("timestamp", timestamp),
            flag("diarize", diarize),
        )
    raise TokenizerError(f"prompt_format={prompt_format!r} is unknown; use 'canary' or 'canary2'.")


class AggregateTokenizer:
    """Several SentencePiece models in one id space, in the given language order (NeMo-style).

    ``models`` maps language -> ``.model`` path, in order. Model ``k`` owns ids
    ``[offset_k, offset_k + size_k)`` with ``offset_k`` the summed piece counts of the models
    before it; ``encode(text, lang)`` = ``offset[lang] + local ids``. Decoding routes each id to
    the model whose range holds it. ``[MASK]`` is appended after all models.

    With Canary's special-token model (key ``"spl_tokens"``), EOS / BOS / pad are its
    ``<|endoftext|>``, ``<|startoftranscript|>`` and ``<pad>``, and every id in its range is a
    special id. Without it they come from the first model that defines them (SentencePiece's
    own eos/bos/pad).

    Args:
      models: ordered mapping language -> SentencePiece ``.model`` file.
      prompt_tokens: special-token strings of the fixed decoder prompt, looked up in the
        ``spl_tokens`` model (see :func:`canary_prompt_tokens`); default ``(bos,)``.
      default_lang: language used by ``encode(text)`` without ``lang`` (default: the first
        language that is not ``spl_tokens``).
      vocab_multiple: round the id space before ``[MASK]`` up to a multiple of this (NeMo's
        ``EncDecMultiTaskModel`` sizes its decoder vocabulary to a multiple of 8, so imported
        Canary weights keep every row); the filler ids are special and never emitted.
    """

    kind = "aggregate"

    def __init__(
        self,
        models: Mapping[str, str | os.PathLike],
        *,
        prompt_tokens: Sequence[str] | None = None,
        default_lang: str | None = None,
        vocab_multiple: int = 1,
    ):
        if not models:
            raise TokenizerError("models is empty; pass an ordered mapping language -> .model.")
        self.langs: tuple[str, ...] = tuple(models)
        self.model_paths = {
            lang: require_file(path, f"SentencePiece model for language {lang!r}")
            for lang, path in models.items()
        }
        self._sp = {
            lang: spm.SentencePieceProcessor(model_file=str(p))
            for lang, p in self.model_paths.items()
        }
        self.offsets: dict[str, int] = {}
        offset = 0
        for lang in self.langs:
            self.offsets[lang] = offset
            offset += self._sp[lang].get_piece_size()
        self.piece_count = offset  # NeMo's aggregate vocab_size
        if int(vocab_multiple) < 1:
            raise TokenizerError(f"vocab_multiple={vocab_multiple} must be >= 1.")
        self.vocab_multiple = int(vocab_multiple)
        self.mask_id = -(-self.piece_count // self.vocab_multiple) * self.vocab_multiple
        self.vocab_size = self.mask_id + 1
        self._starts = [self.offsets[lang] for lang in self.langs]

        text_langs = [lang for lang in self.langs if lang != SPECIAL_TOKENS_LANG]
        if default_lang is None:
            default_lang = text_langs[0] if text_langs else self.langs[0]
        if default_lang not in self.offsets:
            raise TokenizerError(f"default_lang={default_lang!r} is not one of {self.langs}.")
        self.default_lang = default_lang

        special = set(range(self.piece_count, self.mask_id + 1))  # fillers and [MASK]
        for lang in self.langs:
            sp, base = self._sp[lang], self.offsets[lang]
            if lang == SPECIAL_TOKENS_LANG:
                special.update(range(base, base + sp.get_piece_size()))
            else:
                special.update(base + i for i in range(sp.get_piece_size()) if sp.is_control(i))
        self.special_ids = frozenset(special)

        if SPECIAL_TOKENS_LANG in self.offsets:
            self.eos_id = self.token_to_id(_CANARY_EOS, SPECIAL_TOKENS_LANG)
            self.bos_id = self.token_to_id(_CANARY_BOS, SPECIAL_TOKENS_LANG)
            self.pad_id = self.token_to_id(_CANARY_PAD, SPECIAL_TOKENS_LANG)
        else:
            self.eos_id = self._first_reserved("eos_id")
            self.bos_id = self._first_reserved("bos_id")
            self.pad_id = self._first_reserved("pad_id")
        if prompt_tokens is None:
            self.prompt_tokens: tuple[str, ...] = ()
            self.prompt_ids: tuple[int, ...] = (self.bos_id,)
        else:
            if SPECIAL_TOKENS_LANG not in self.offsets:
                raise TokenizerError(
                    f"prompt_tokens needs a {SPECIAL_TOKENS_LANG!r} model among the languages."
                )
            self.prompt_tokens = tuple(prompt_tokens)
            self.prompt_ids = tuple(self.token_to_id(t, SPECIAL_TOKENS_LANG) for t in prompt_tokens)

    def _first_reserved(self, name: str) -> int:
        for lang in self.langs:
            local = getattr(self._sp[lang], name)()
            if local >= 0:
                return self.offsets[lang] + local
        raise TokenizerError(
            f"No model defines {name.removesuffix('_id')}; add a {SPECIAL_TOKENS_LANG!r} model "
            "with <|endoftext|>, <|startoftranscript|> and <pad>."
        )

    def _check_lang(self, lang: str) -> None:
        if lang not in self.offsets:
            raise TokenizerError(f"lang={lang!r} has no tokenizer; use one of {self.langs}.")

    def token_to_id(self, token: str, lang: str) -> int:
        """Global id of a piece of ``lang``'s model; error if the model lacks it."""
        self._check_lang(lang)
        sp = self._sp[lang]
        local = sp.piece_to_id(token)
        if local == sp.unk_id() and token != sp.id_to_piece(sp.unk_id()):
            raise TokenizerError(f"Token {token!r} is not in the {lang!r} tokenizer.")
        return self.offsets[lang] + local

    def lang_of(self, token_id: int) -> str:
        """The language whose id range holds ``token_id``."""
        token_id = int(token_id)
        if not 0 <= token_id < self.piece_count:
            raise TokenizerError(f"id {token_id} is outside [0, {self.piece_count}).")
        # The last model whose offset is <= token_id (models of size 0 own no ids).
        return self.langs[bisect.bisect_right(self._starts, token_id) - 1]

    def id_to_token(self, token_id: int) -> str:
        """The piece string of a global id (``[MASK]`` for ``mask_id``)."""
        if int(token_id) == self.mask_id:
            return MASK_TOKEN
        lang = self.lang_of(token_id)
        return self._sp[lang].id_to_piece(int(token_id) - self.offsets[lang])

    def encode(self, text: str, lang: str | None = None) -> list[int]:
        """Text -> global ids with ``lang``'s model (default ``default_lang``)."""
        lang = self.default_lang if lang is None else lang
        self._check_lang(lang)
        offset = self.offsets[lang]
        return [offset + i for i in self._sp[lang].encode(require_text(text), out_type=int)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Special ids dropped; each run of ids from one language is decoded by
        that language's model, runs joined with a space where the run's first piece starts a
        word (NeMo joins pieces and turns ``▁`` into spaces; this also undoes byte pieces)."""
        runs: list[tuple[str, list[int]]] = []
        for token_id in as_int_list(ids):
            if token_id in self.special_ids or not 0 <= token_id < self.piece_count:
                continue
            lang = self.lang_of(token_id)
            if runs and runs[-1][0] == lang:
                runs[-1][1].append(token_id - self.offsets[lang])
            else:
                runs.append((lang, [token_id - self.offsets[lang]]))
        text = ""
        for lang, local in runs:
            piece = self._sp[lang].id_to_piece(local[0])
            part = self._sp[lang].decode(local)
            if text and piece.startswith("\u2581"):
                text += " "
            text += part
        return text.strip()

    def nemo_ids_to_text(self, ids: Iterable[int]) -> str:
        """NeMo's ``AggregateTokenizer.ids_to_text`` reproduced for parity checks: every id's
        piece (specials included, ``[MASK]`` not allowed) joined, ``▁`` -> space, no strip."""
        return "".join(self.id_to_token(i) for i in as_int_list(ids)).replace("\u2581", " ")

    def save(self, directory: str | os.PathLike) -> dict[str, Any]:
        """Copies every model into ``directory`` as ``aggregate_{k}_{lang}.model``; returns the
        spec (ordered ``langs`` with relative file names) for :func:`load_tokenizer`."""
        directory = Path(directory)
        files = []
        for k, lang in enumerate(self.langs):
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", lang)
            name = copy_into(self.model_paths[lang], directory, f"aggregate_{k}_{safe}.model")
            files.append([lang, name])
        return {
            "kind": self.kind,
            "models": files,
            "prompt_tokens": list(self.prompt_tokens) if self.prompt_tokens else None,
            "default_lang": self.default_lang,
            "vocab_multiple": self.vocab_multiple,
            "vocab_size": self.vocab_size,
        }
