"""Per-language orthography for synthesised speech: what eSpeak reads == what the transcript says.

The public-domain books behind the sentence files predate today's spelling: the German ones
keep the spelling before the 1901 and 1996 reforms ("daß", "muß", "Thür", "thun", "Theil"), the
Spanish ones the accentuation before 1952 ("á" as the preposition, "ó", "fué", "dió"). eSpeak
pronounces both spellings alike, while a modern recogniser (Whisper) writes the modern form, so
a transcript in historical spelling would count correct recognitions as errors, and training on
it would teach the model the old spelling. Two tools, applied once, to the *text* before it is
spoken, so that the training targets, the references and the audio all agree:

- `modernize(text, lang)`: deterministic rewrites that are certain (a modern form exists and
  the old one is never correct today): Spanish accented monosyllables that lost their accent
  (á/é/ó/ú as words, fué, fuí, dió, vió); German "daß" -> "dass" (the most frequent word of the
  1996 reform); stray punctuation at the start of a line (", Eh! non", a dialogue dash left by
  the sentence splitter) removed in every language.
- `unspeakable_reason(text, lang)`: why a sentence is left out (None: keep it), for what cannot
  be rewritten without a dictionary: German words with "th" (Thür, thun, Theil, Noth; the few
  modern loanwords with "th" go too) and "ß" after a single vowel letter (muß, Fluß, but also
  modern groß, Fuß: vowel length is not in the spelling, so every such word is left out; "ß"
  after ie/ei/ai/au/eu/äu, as in weiß, ließ, draußen, is kept); any digit (eSpeak says the
  number in words, a recogniser may write digits); characters outside the language's letters and
  common punctuation (quotes of other scripts, brackets, footnote marks).

`speakable_sentences` applies both to a list and reports what was left out and why.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

LANGUAGES = ("en", "fr", "de", "es")

# Letters beyond a-z each language's sentences may use.
_EXTRA_LETTERS = {
    "en": "",
    "fr": "àâæçéèêëîïôœùûüÿ",
    "de": "äöüß",
    "es": "áéíñóúü",
}
_PUNCTUATION = " ,.;:!?'-\u2019\u00ab\u00bb\u00a1\u00bf"  # ' ’ « » ¡ ¿ included
_ES_REWRITES = {
    "á": "a",
    "é": "e",
    "ó": "o",
    "ú": "u",
    "fué": "fue",
    "fuí": "fui",
    "dió": "dio",
    "vió": "vio",
}
_DE_REWRITES = {"daß": "dass"}
_WORD = re.compile(r"\w+", re.UNICODE)
_LEADING_PUNCT = re.compile(r"^[\s,.;:!?\-\u2013\u2014]+")
_DE_TH = re.compile(r"th", re.IGNORECASE)
_DE_LONG_BEFORE_SZ = re.compile(r"(ie|ei|ai|au|eu|äu)ß", re.IGNORECASE)


class OrthographyError(ValueError):
    """A language this module has no rules for."""


def _check(lang: str) -> None:
    if lang not in LANGUAGES:
        raise OrthographyError(f"lang={lang!r} has no orthography rules; use one of {LANGUAGES}.")


def _rewrite_words(text: str, table: dict[str, str]) -> str:
    def swap(match: re.Match) -> str:
        word = match.group(0)
        new = table.get(word.lower())
        if new is None:
            return word
        return new.capitalize() if word[0].isupper() else new

    return _WORD.sub(swap, text)


def modernize(text: str, lang: str) -> str:
    """The certain rewrites of the module docstring; whitespace collapsed."""
    _check(lang)
    text = _LEADING_PUNCT.sub("", " ".join(str(text).split()))
    if lang == "es":
        text = _rewrite_words(text, _ES_REWRITES)
    elif lang == "de":
        text = _rewrite_words(text, _DE_REWRITES)
    return text


def _short_vowel_sz(word: str) -> bool:
    """True if some "ß" in `word` follows a single vowel letter (ie/ei/ai/au/eu/äu excepted)."""
    for index, char in enumerate(word):
        if char != "ß":
            continue
        before = word[max(0, index - 2) : index].lower()
        if len(before) == 2 and _DE_LONG_BEFORE_SZ.fullmatch(before + "ß"):
            continue
        return True
    return False


def unspeakable_reason(text: str, lang: str) -> str | None:
    """Why `text` should not be synthesised as a `lang` transcript; None when it is fine."""
    _check(lang)
    if not text.strip():
        return "empty"
    if any(c.isdigit() for c in text):
        return "digits"
    allowed = _EXTRA_LETTERS[lang]
    for char in text:
        low = char.lower()
        if not (("a" <= low <= "z") or low in allowed or char in _PUNCTUATION):
            return f"character {char!r}"
    if lang == "de":
        for word in _WORD.findall(text):
            if _DE_TH.search(word):
                return "historical spelling (th)"
            if "ß" in word and _short_vowel_sz(word):
                return "historical spelling (ß after a single vowel)"
    return None


def speakable_sentences(
    sentences: Iterable[str], lang: str
) -> tuple[list[str], list[int], Counter]:
    """`modernize` every sentence and keep those with no `unspeakable_reason`.

    Returns (kept sentences, their positions in `sentences`, Counter of reasons left out)."""
    _check(lang)
    kept, positions, reasons = [], [], Counter()
    for position, sentence in enumerate(sentences):
        text = modernize(sentence, lang)
        reason = unspeakable_reason(text, lang)
        if reason is None:
            kept.append(text)
            positions.append(position)
        else:
            reasons["other characters" if reason.startswith("character") else reason] += 1
    return kept, positions, reasons
