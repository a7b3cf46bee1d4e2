"""Text normalisers for scoring (:func:`get_normalizer`).

``"english"`` (Whisper's English normaliser, the default for scoring), ``"whisper_basic"``
(Whisper's language-agnostic normaliser, the one its multilingual results use: the scoring
normaliser for fr/de/es here), ``"basic"`` (language-agnostic, digits spelled as words) and
``"none"``. Word-error counting lives in
`eval.metrics.count_errors`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

from whisper_normalizer.english import EnglishTextNormalizer


class NormalizerError(ValueError):
    """Unknown normaliser name or language."""


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


_BRACKETED = re.compile(r"[<\[][^>\]]*[>\]]")  # <...> or [...] (may mix, as Whisper's)
_PARENTHESISED = re.compile(r"\(([^)]+?)\)")


def whisper_basic_normalize(text: str) -> str:
    """Whisper's basic (language-agnostic) text normaliser, as its paper's multilingual WERs use.

    Lower case; spans in angle or square brackets (``<laugh>``, ``[music]``) and in parentheses
    removed; NFKC; every mark, symbol and punctuation character (Unicode categories M*, S*, P*)
    turned into a space, so letters keep precomposed accents ("é" stays, "l'homme" becomes
    "l homme"); lower case again; whitespace collapsed (and stripped). Digits and number words
    are left as they are.
    """
    text = str(text).lower()
    text = _BRACKETED.sub("", text)
    text = _PARENTHESISED.sub("", text)
    text = "".join(
        " " if unicodedata.category(ch)[0] in "MSP" else ch
        for ch in unicodedata.normalize("NFKC", text)
    ).lower()
    return " ".join(text.split())


def _whitespace_only(text: str) -> str:
    return " ".join(str(text).split())


_ENGLISH: list[Callable[[str], str]] = []


def _english_normalizer() -> Callable[[str], str]:
    if not _ENGLISH:
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
    - ``"whisper_basic"``: Whisper's basic normaliser (:func:`whisper_basic_normalize`):
      lower case, bracketed spans and punctuation/symbols removed, accents kept.
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
    if not suffix and base == "whisper_basic":
        return whisper_basic_normalize
    raise NormalizerError(
        f"normalizer {name!r} is unknown; use 'english', 'whisper_basic', 'basic' (or "
        "'basic:fr', 'basic:de', 'basic:es') or 'none'."
    )
