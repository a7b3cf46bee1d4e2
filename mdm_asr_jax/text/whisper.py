"""Whisper tokenizer (``kind="whisper"``): OpenAI Whisper's byte-level BPE.

Read from a Hugging Face ``tokenizer.json``; ``[MASK]`` is appended after the model's
``n_vocab`` rows (text, special and timestamp tokens), so ``mask_id == n_vocab``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mdm_asr_jax.text.tokenizer import (
    TokenizerError,
    as_int_list,
    copy_into,
    require_file,
    require_text,
)

WHISPER_TASKS = ("transcribe", "translate")
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
    ``timestamps=True`` the ``<|notimestamps|>`` token is left out. ``prompt_ids`` is the prompt
    of ``language``; ``prompt_for(lang)`` gives any other language's (same length), which the data
    pipeline uses per utterance from the manifest's ``lang`` key.

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

        self.tokenizer_path = require_file(tokenizer_json, "Whisper tokenizer.json")
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
        if task not in WHISPER_TASKS:
            raise TokenizerError(
                f"task={task!r} is not a Whisper task; use one of {WHISPER_TASKS}."
            )
        if not self.multilingual and (language != "en" or task != "transcribe"):
            raise TokenizerError(
                f"language={language!r}, task={task!r} on an English-only Whisper vocabulary; "
                "English-only models transcribe English: use language='en', task='transcribe'."
            )
        self.language, self.task = language, task
        self.timestamps, self.prefix_space = bool(timestamps), bool(prefix_space)

        self._task_id = special(f"<|{task}|>") if self.multilingual else None
        self.prompt_ids: tuple[int, ...] = self.prompt_for(language)

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

    @property
    def language_prompts(self) -> bool:
        """True when the prompt names the language (multilingual vocabularies): the data
        pipeline then gives every utterance its own prompt from the manifest's ``lang``."""
        return self.multilingual

    def language_id(self, language: str) -> int:
        """The id of ``<|{language}|>``; an error naming the code if Whisper has no such token."""
        token_id = self._tok.token_to_id(f"<|{language}|>") if isinstance(language, str) else None
        if token_id is None or not (self.sot_id < token_id < self.no_timestamps_id):
            raise TokenizerError(
                f"language={language!r} is not a Whisper language code (e.g. 'en', 'fr', "
                "'de', 'es')."
            )
        return token_id

    def prompt_for(self, language: str | None) -> tuple[int, ...]:
        """The decoder prompt for one utterance in ``language`` (None: the tokenizer's own).

        Multilingual: ``(<|startoftranscript|>, <|{language}|>, <|{task}|>, <|notimestamps|>)``;
        every language gives a prompt of the same length, so a batch stacks them [B, P].
        English-only vocabularies accept only "en" (or None)."""
        language = self.language if language is None else language
        prompt = [self.sot_id]
        if self.multilingual:
            prompt += [self.language_id(language), self._task_id]
        elif language != "en":
            raise TokenizerError(
                f"language={language!r} on an English-only Whisper vocabulary; English-only "
                "models transcribe English: convert a multilingual Whisper (e.g. base) instead."
            )
        if not self.timestamps:
            prompt.append(self.no_timestamps_id)
        return tuple(prompt)

    def encode(self, text: str) -> list[int]:
        """Text -> BPE ids (no prompt, no EOS); a leading space is added if ``prefix_space``."""
        text = require_text(text)
        if self.prefix_space and text and not text[0].isspace():
            text = " " + text
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; every id >= eot (specials, timestamps, [MASK]) dropped; stripped."""
        kept = [i for i in as_int_list(ids) if 0 <= i < self.eot_id]
        return self._tok.decode(kept).strip()

    def save(self, directory: str | os.PathLike) -> dict[str, Any]:
        """Copies ``tokenizer.json`` into ``directory``; returns the spec for load_tokenizer."""
        name = copy_into(self.tokenizer_path, Path(directory), "tokenizer.json")
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
