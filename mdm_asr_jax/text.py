"""Tokenizers, text normalisers and word-error counts.

Every tokenizer here shares one interface, so the model, the data pipeline and the samplers
never need to know which one they hold:

- ``encode(text) -> list[int]``: transcript ids, no BOS/EOS, no prompt.
- ``decode(ids) -> str``: drops every id in ``special_ids`` (EOS, pad, prompt tokens, [MASK]).
- ``vocab_size``: the model vocabulary INCLUDING the appended ``[MASK]`` id.
- ``pad_id``, ``eos_id``, ``bos_id``, ``mask_id`` (always ``vocab_size - 1``).
- ``prompt_ids``: the fixed decoder prefix the model is conditioned on (never predicted).
- ``special_ids``: ids that are never text (EOS included: samplers that suppress special ids
  must keep EOS allowed).
- ``save(directory) -> spec``: copies the tokenizer files into ``directory`` and returns a small
  JSON-able dict with a ``"kind"`` key and file names relative to ``directory``;
  ``load_tokenizer(directory, spec)`` rebuilds the same tokenizer. The checkpoint config carries
  the spec.

Three kinds:

- :class:`SentencePieceTokenizer` (``kind="sentencepiece"``): trained here; pad=0, unk=1,
  bos=2, eos=3, pieces..., ``[MASK]`` = piece count. Prompt = ``(bos_id,)``.
- :class:`WhisperTokenizer` (``kind="whisper"``): OpenAI Whisper's byte-level BPE from a
  Hugging Face ``tokenizer.json``; ``[MASK]`` is appended after the model's ``n_vocab`` rows
  (text, special and timestamp tokens), so ``mask_id == n_vocab``.
- :class:`AggregateTokenizer` (``kind="aggregate"``): Canary's per-language SentencePiece models
  concatenated into one id space in a given language order, as NeMo's ``AggregateTokenizer``
  does: ``id = offset[lang] + local_id`` with ``offset`` the summed sizes of earlier models.

Normalisers (:func:`get_normalizer`): ``"english"`` (Whisper's English normaliser, the default
for scoring), ``"basic"`` (language-agnostic, digits spelled as words) and ``"none"``.
:func:`wer_counts` returns corpus counts ``(errors, reference_words)`` so WER can be summed
across batches and hosts before dividing.
"""

from __future__ import annotations

import bisect
import io
import json
import os
import re
import shutil
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import sentencepiece as spm

__all__ = [
    "AggregateTokenizer",
    "NormalizerError",
    "SentencePieceTokenizer",
    "Tokenizer",
    "TokenizerError",
    "WhisperTokenizer",
    "build_special_tokens_model",
    "canary_prompt_tokens",
    "get_normalizer",
    "load_tokenizer",
    "wer_counts",
]

MASK_TOKEN = "[MASK]"


class TokenizerError(ValueError):
    """Bad tokenizer input: missing file, impossible vocabulary size, unknown token or kind."""


class NormalizerError(ValueError):
    """Unknown normaliser name or language."""


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


def _as_int_list(ids: Iterable[int]) -> list[int]:
    """Accepts lists, tuples and numpy / jax arrays of ids."""
    if hasattr(ids, "tolist"):
        ids = ids.tolist()
    return [int(i) for i in ids]


def _require_text(text: Any) -> str:
    if not isinstance(text, str):
        raise TokenizerError(f"encode expects a str, got {type(text).__name__}; pass the text.")
    return text


def _require_file(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise TokenizerError(f"{what} not found: {str(path)!r}. Pass the path of an existing file.")
    return path


def _copy_into(src: Path, directory: Path, name: str) -> str:
    """Copies ``src`` to ``directory/name`` (unless it is already that file); returns ``name``."""
    directory.mkdir(parents=True, exist_ok=True)
    dst = directory / name
    if not (dst.exists() and os.path.samefile(src, dst)):
        shutil.copyfile(src, dst)
    return name


# ---------------------------------------------------------------------------------------------
# SentencePiece
# ---------------------------------------------------------------------------------------------

_SPM_NORMALIZATIONS = ("nmt_nfkc", "nfkc", "identity")
_SPM_MODEL_TYPES = ("unigram", "bpe", "char", "word")


class SentencePieceTokenizer:
    """A SentencePiece model with pad=0, unk=1, bos=2, eos=3 and ``[MASK]`` appended.

    Build one with :meth:`train` or load a ``.model`` file with the constructor. A model trained
    elsewhere must use the same reserved ids (pad 0, unk 1, bos 2, eos 3); the constructor checks.
    """

    kind = "sentencepiece"

    def __init__(self, model_path: str | os.PathLike):
        self.model_path = _require_file(model_path, "SentencePiece model file")
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
            source = {"input": str(_require_file(texts, "Training text file"))}
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
        return list(self._sp.encode(_require_text(text), out_type=int))

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; special ids (pad, unk, bos, eos, [MASK]) and out-of-range ids dropped."""
        kept = [i for i in _as_int_list(ids) if 0 <= i < self.piece_count]
        kept = [i for i in kept if i not in self.special_ids]
        return self._sp.decode(kept)

    def id_to_piece(self, token_id: int) -> str:
        """The piece string of an id (``[MASK]`` for ``mask_id``)."""
        return MASK_TOKEN if token_id == self.mask_id else self._sp.id_to_piece(int(token_id))

    def save(self, directory: str | os.PathLike) -> dict[str, Any]:
        """Copies the model file into ``directory``; returns the spec for :func:`load_tokenizer`."""
        name = _copy_into(self.model_path, Path(directory), "sentencepiece.model")
        return {"kind": self.kind, "model": name, "vocab_size": self.vocab_size}


# ---------------------------------------------------------------------------------------------
# Whisper
# ---------------------------------------------------------------------------------------------

_WHISPER_TASKS = ("transcribe", "translate")
_WHISPER_TIMESTAMPS = 1501  # <|0.00|> ... <|30.00|> in 0.02 s steps


class WhisperTokenizer:
    """OpenAI Whisper's byte-level BPE with its special tokens, from a ``tokenizer.json``.

    Ids: text tokens ``[0, eot)``, then ``<|endoftext|>`` (eot, also EOS and pad),
    ``<|startoftranscript|>`` (BOS), language tokens, ``<|translate|>``, ``<|transcribe|>``,
    ..., ``<|notimestamps|>``, 1501 timestamp tokens, ending at ``n_vocab`` (the model's
    embedding rows: 51864 for ``*.en``, 51865 multilingual, 51866 large-v3). ``[MASK]`` is
    ``n_vocab``.

    Prompt: English-only models ``(<|startoftranscript|>, <|notimestamps|>)``; multilingual
    ``(<|startoftranscript|>, <|{language}|>, <|{task}|>, <|notimestamps|>)``. With
    ``timestamps=True`` the ``<|notimestamps|>`` token is left out.

    ``encode`` puts one space before the text (``prefix_space=True``, the default) because
    Whisper emits the first word of a transcript with its leading space (``"ĠHello"``);
    training targets encoded that way match what the pre-trained decoder predicts.
    """

    kind = "whisper"

    def __init__(
        self,
        tokenizer_json: str | os.PathLike,
        *,
        n_vocab: int | None = None,
        multilingual: bool | None = None,
        language: str = "en",
        task: str = "transcribe",
        timestamps: bool = False,
        prefix_space: bool = True,
    ):
        import tokenizers  # optional dependency (extra "whisper")

        self.tokenizer_path = _require_file(tokenizer_json, "Whisper tokenizer.json")
        self._tok = tokenizers.Tokenizer.from_file(str(self.tokenizer_path))

        def special(token: str) -> int:
            token_id = self._tok.token_to_id(token)
            if token_id is None:
                raise TokenizerError(
                    f"{str(self.tokenizer_path)!r} has no {token} token; is it a Whisper "
                    "tokenizer.json?"
                )
            return token_id

        self.eot_id = special("<|endoftext|>")
        self.sot_id = special("<|startoftranscript|>")
        self.no_timestamps_id = special("<|notimestamps|>")
        self.timestamp_begin_id = self.no_timestamps_id + 1
        derived_n_vocab = max(
            self.timestamp_begin_id + _WHISPER_TIMESTAMPS, self._tok.get_vocab_size()
        )
        if n_vocab is None:
            n_vocab = derived_n_vocab
        if n_vocab < self.timestamp_begin_id:
            raise TokenizerError(
                f"n_vocab={n_vocab} is smaller than this tokenizer's special tokens "
                f"({self.timestamp_begin_id}); pass the model's embedding rows."
            )
        self.n_vocab = int(n_vocab)
        if multilingual is None:
            # English-only vocabularies end their text tokens one earlier (eot 50256 vs 50257).
            multilingual = self.n_vocab >= 51865
        self.multilingual = bool(multilingual)
        if task not in _WHISPER_TASKS:
            raise TokenizerError(
                f"task={task!r} is not a Whisper task; use one of {_WHISPER_TASKS}."
            )
        if not self.multilingual and (language != "en" or task != "transcribe"):
            raise TokenizerError(
                f"language={language!r}, task={task!r} on an English-only Whisper vocabulary; "
                "English-only models transcribe English: use language='en', task='transcribe'."
            )
        self.language, self.task = language, task
        self.timestamps, self.prefix_space = bool(timestamps), bool(prefix_space)

        prompt = [self.sot_id]
        if self.multilingual:
            language_id = self._tok.token_to_id(f"<|{language}|>")
            if language_id is None or not (self.sot_id < language_id < self.no_timestamps_id):
                raise TokenizerError(
                    f"language={language!r} is not a Whisper language code (e.g. 'en', 'fr', "
                    "'de', 'es')."
                )
            prompt += [language_id, special(f"<|{task}|>")]
        if not self.timestamps:
            prompt.append(self.no_timestamps_id)
        self.prompt_ids: tuple[int, ...] = tuple(prompt)

        self.pad_id = self.eos_id = self.eot_id
        self.bos_id = self.sot_id
        self.mask_id = self.n_vocab
        self.vocab_size = self.n_vocab + 1
        self.special_ids = frozenset(range(self.eot_id, self.vocab_size))

    @classmethod
    def from_dir(cls, directory: str | os.PathLike, **kwargs: Any) -> WhisperTokenizer:
        """Loads ``directory/tokenizer.json``; takes ``n_vocab`` from a Hugging Face
        ``config.json`` (``vocab_size``) there when present, else derives it."""
        directory = Path(directory)
        config = directory / "config.json"
        if "n_vocab" not in kwargs and config.is_file():
            vocab = json.loads(config.read_text()).get("vocab_size")
            if isinstance(vocab, int):
                kwargs["n_vocab"] = vocab
        return cls(directory / "tokenizer.json", **kwargs)

    def encode(self, text: str) -> list[int]:
        """Text -> BPE ids (no prompt, no EOS); a leading space is added if ``prefix_space``."""
        text = _require_text(text)
        if self.prefix_space and text and not text[0].isspace():
            text = " " + text
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; every id >= eot (specials, timestamps, [MASK]) dropped; stripped."""
        kept = [i for i in _as_int_list(ids) if 0 <= i < self.eot_id]
        return self._tok.decode(kept).strip()

    def save(self, directory: str | os.PathLike) -> dict[str, Any]:
        """Copies ``tokenizer.json`` into ``directory``; returns the spec for load_tokenizer."""
        name = _copy_into(self.tokenizer_path, Path(directory), "tokenizer.json")
        return {
            "kind": self.kind,
            "tokenizer": name,
            "n_vocab": self.n_vocab,
            "multilingual": self.multilingual,
            "language": self.language,
            "task": self.task,
            "timestamps": self.timestamps,
            "prefix_space": self.prefix_space,
            "vocab_size": self.vocab_size,
        }


# ---------------------------------------------------------------------------------------------
# Canary aggregate tokenizer
# ---------------------------------------------------------------------------------------------

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
        if task not in _WHISPER_TASKS:
            raise TokenizerError(
                f"task={task!r} is not a Canary task; use one of {_WHISPER_TASKS}."
            )
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
            lang: _require_file(path, f"SentencePiece model for language {lang!r}")
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
        return [offset + i for i in self._sp[lang].encode(_require_text(text), out_type=int)]

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text. Special ids dropped; each run of ids from one language is decoded by
        that language's model, runs joined with a space where the run's first piece starts a
        word (NeMo joins pieces and turns ``▁`` into spaces; this also undoes byte pieces)."""
        runs: list[tuple[str, list[int]]] = []
        for token_id in _as_int_list(ids):
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
        return "".join(self.id_to_token(i) for i in _as_int_list(ids)).replace("\u2581", " ")

    def save(self, directory: str | os.PathLike) -> dict[str, Any]:
        """Copies every model into ``directory`` as ``aggregate_{k}_{lang}.model``; returns the
        spec (ordered ``langs`` with relative file names) for :func:`load_tokenizer`."""
        directory = Path(directory)
        files = []
        for k, lang in enumerate(self.langs):
            safe = re.sub(r"[^A-Za-z0-9_.-]", "_", lang)
            name = _copy_into(self.model_paths[lang], directory, f"aggregate_{k}_{safe}.model")
            files.append([lang, name])
        return {
            "kind": self.kind,
            "models": files,
            "prompt_tokens": list(self.prompt_tokens) if self.prompt_tokens else None,
            "default_lang": self.default_lang,
            "vocab_multiple": self.vocab_multiple,
            "vocab_size": self.vocab_size,
        }


# ---------------------------------------------------------------------------------------------
# Loading from a spec
# ---------------------------------------------------------------------------------------------


def load_tokenizer(
    directory: str | os.PathLike, spec: Mapping[str, Any]
) -> SentencePieceTokenizer | WhisperTokenizer | AggregateTokenizer:
    """Rebuilds a tokenizer from the ``spec`` its ``save(directory)`` returned.

    Checks the rebuilt ``vocab_size`` against the spec's, so a checkpoint never pairs a model
    with the wrong vocabulary silently.
    """
    directory = Path(directory)
    kind = spec.get("kind")
    if kind == SentencePieceTokenizer.kind:
        tokenizer: Any = SentencePieceTokenizer(directory / spec["model"])
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


# ---------------------------------------------------------------------------------------------
# Normalisers and WER counts
# ---------------------------------------------------------------------------------------------

# Digit words used by the basic normaliser, digit by digit ("73" -> "seven three").
DIGIT_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
}
_APOSTROPHES = "'\u2019\u02bc\u2018`"


def basic_normalize(text: str, language: str = "en") -> str:
    """Language-agnostic normalisation for scoring.

    NFKC, case-fold, every decimal digit spelled as a word of ``language`` one digit at a time
    ("7" -> "seven", "73" -> "seven three", "3.5" -> "three five"), apostrophes removed
    ("don't" -> "dont"), all other punctuation, symbols and control characters turned into
    spaces, whitespace collapsed. Letters keep their accents. Number words are not converted
    ("seventy three" stays as is), so "73" and "seventy three" differ; use the English
    normaliser for English number words.
    """
    words = DIGIT_WORDS.get(language)
    if words is None:
        raise NormalizerError(
            f"language={language!r} has no digit words; use one of {sorted(DIGIT_WORDS)}."
        )
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    out = []
    for ch in text:
        if ch.isdecimal():
            out.append(f" {words[unicodedata.decimal(ch)]} ")
        elif ch in _APOSTROPHES:
            continue
        elif unicodedata.category(ch)[0] in "PSCZ":
            out.append(" ")
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def _whitespace_only(text: str) -> str:
    return " ".join(str(text).split())


_ENGLISH: list[Callable[[str], str]] = []


def _english_normalizer() -> Callable[[str], str]:
    if not _ENGLISH:
        from whisper_normalizer.english import EnglishTextNormalizer

        _ENGLISH.append(EnglishTextNormalizer())
    return _ENGLISH[0]


def get_normalizer(name: str, language: str | None = None) -> Callable[[str], str]:
    """Returns the text normaliser ``name`` as a function ``str -> str``.

    - ``"english"``: Whisper's English normaliser (``whisper_normalizer``): lower case, no
      punctuation, British -> American spelling, number words -> digits ("seven" -> "7").
      Note: consecutive number words merge ("seven three" -> "73") while "7 3" stays two
      words, so digit strings are only equal when written the same way.
    - ``"basic"`` or ``"basic:<lang>"`` (en, fr, de, es; or pass ``language``): see
      :func:`basic_normalize`; "7 3" == "seven three" == "73".
    - ``"none"``: whitespace collapsed only.
    """
    if not isinstance(name, str):
        raise NormalizerError(f"normalizer name must be a string, got {type(name).__name__}.")
    base, _, suffix = name.partition(":")
    if base == "basic":
        lang = suffix or language or "en"
        if lang not in DIGIT_WORDS:
            raise NormalizerError(
                f"normalizer {name!r}: language {lang!r} has no digit words; use one of "
                f"{sorted(DIGIT_WORDS)}."
            )
        return lambda text: basic_normalize(text, lang)
    if not suffix and base == "english":
        return _english_normalizer()
    if not suffix and base == "none":
        return _whitespace_only
    raise NormalizerError(
        f"normalizer {name!r} is unknown; use 'english', 'basic' (or 'basic:fr', 'basic:de', "
        "'basic:es') or 'none'."
    )


def wer_counts(
    refs: Sequence[str],
    hyps: Sequence[str],
    normalizer: Callable[[str], str] | str = "english",
) -> tuple[int, int]:
    """Corpus word-error counts ``(errors, reference_words)`` after normalising both sides.

    errors = substitutions + deletions + insertions (jiwer's alignment), reference_words = the
    number of normalised reference words. Sum both over batches / hosts and divide once:
    WER = sum(errors) / sum(reference_words). A reference that normalises to nothing
    contributes its hypothesis words as insertions.
    """
    import jiwer

    if isinstance(refs, str) or isinstance(hyps, str):
        raise ValueError("refs and hyps must be sequences of strings, not single strings.")
    if len(refs) != len(hyps):
        raise ValueError(f"refs has {len(refs)} items but hyps has {len(hyps)}; pair them 1:1.")
    norm = get_normalizer(normalizer) if isinstance(normalizer, str) else normalizer
    errors = ref_words = 0
    pairs_ref, pairs_hyp = [], []
    for ref, hyp in zip(refs, hyps, strict=True):
        ref_n, hyp_n = _whitespace_only(norm(ref)), _whitespace_only(norm(hyp))
        if not ref_n:
            errors += len(hyp_n.split())
        else:
            pairs_ref.append(ref_n)
            pairs_hyp.append(hyp_n)
    if pairs_ref:
        out = jiwer.process_words(pairs_ref, pairs_hyp)
        errors += out.substitutions + out.deletions + out.insertions
        ref_words += out.substitutions + out.deletions + out.hits
    return int(errors), int(ref_words)
