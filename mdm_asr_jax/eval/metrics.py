"""Evaluation metrics: corpus WER / CER from summed counts, and real-time factor (RTFx).

WER is a corpus statistic: sum the edit operations (substitutions + deletions + insertions) and
the reference words over every utterance, on every host, and divide once. The mean of per-batch
(or per-utterance) WERs weights short utterances too much and is not what papers report.
`ErrorCounts` holds the sums; they add with `+`, and `sum_across_processes` gathers them from
all JAX processes (a no-op on one host) before the division.

RTFx = seconds of audio / seconds spent decoding it (higher is faster; 100 means a minute of
audio takes 0.6 s). `DecodeTimer` measures the decode time of the timed pass only; the first
call of each compiled shape (compile + one run) is timed separately as warm-up, so compile time
never leaks into RTFx.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import jax
import jiwer
import numpy as np
from jax.experimental import multihost_utils

from mdm_asr_jax.inference.placement import sum_across_processes
from mdm_asr_jax.text import get_normalizer


@dataclasses.dataclass(frozen=True)
class ErrorCounts:
    """Corpus sums: word edits / reference words, character edits / reference characters.

    `utterances` counts the scored utterances. Add two with `+`; WER = word_errors / words.
    """

    word_errors: int = 0
    words: int = 0
    char_errors: int = 0
    chars: int = 0
    utterances: int = 0

    def __add__(self, other: ErrorCounts) -> ErrorCounts:
        return ErrorCounts(*(a + b for a, b in zip(self.as_tuple(), other.as_tuple(), strict=True)))

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.word_errors, self.words, self.char_errors, self.chars, self.utterances)

    @property
    def wer(self) -> float:
        """Corpus word error rate in percent (nan when there are no reference words)."""
        return 100.0 * self.word_errors / self.words if self.words else float("nan")

    @property
    def cer(self) -> float:
        """Corpus character error rate in percent (spaces included, after normalisation)."""
        return 100.0 * self.char_errors / self.chars if self.chars else float("nan")


def count_errors(
    refs: Sequence[str],
    hyps: Sequence[str],
    normalizer: str | Callable[[str], str] = "english",
    *,
    with_chars: bool = True,
) -> ErrorCounts:
    """Edit counts of `hyps` against `refs` after normalising both sides.

    Word counts follow jiwer's alignment (errors = S + D + I, words = S + D + hits). A reference
    that normalises to nothing adds its hypothesis words (characters) as insertions.
    `with_chars=False` skips the character alignment (CER) when it is not wanted.
    """
    if isinstance(refs, str) or isinstance(hyps, str):
        raise ValueError("refs and hyps must be sequences of strings, not single strings")
    if len(refs) != len(hyps):
        raise ValueError(f"refs has {len(refs)} items but hyps has {len(hyps)}; pair them 1:1")
    norm = get_normalizer(normalizer) if isinstance(normalizer, str) else normalizer
    word_errors = words = char_errors = chars = 0
    kept_refs, kept_hyps = [], []
    for ref, hyp in zip(refs, hyps, strict=True):
        ref_n, hyp_n = " ".join(norm(ref).split()), " ".join(norm(hyp).split())
        if ref_n:
            kept_refs.append(ref_n)
            kept_hyps.append(hyp_n)
        else:
            word_errors += len(hyp_n.split())
            char_errors += len(hyp_n)
    if kept_refs:
        out = jiwer.process_words(kept_refs, kept_hyps)
        word_errors += out.substitutions + out.deletions + out.insertions
        words += out.substitutions + out.deletions + out.hits
        if with_chars:
            out = jiwer.process_characters(kept_refs, kept_hyps)
            char_errors += out.substitutions + out.deletions + out.insertions
            chars += out.substitutions + out.deletions + out.hits
    return ErrorCounts(int(word_errors), int(words), int(char_errors), int(chars), len(refs))


@dataclasses.dataclass(frozen=True)
class ErrorBreakdown:
    """Where and of what kind a system's word errors are (one host's sums).

    `substitutions + deletions + insertions` is `count_errors`'s word error count for the same
    pairs. `errors_by_part[k]` holds the errors whose reference position falls in the k-th of
    `len(errors_by_part)` equal parts of its utterance (an insertion counts at the reference word
    after it, at the last word when it ends the utterance); `words_by_part[k]` the reference words
    there, so their ratio is a WER per part. `hyp_words` against `words` says whether a system
    drops or adds words; `repeats` counts hypothesis words equal to the word before them,
    `ref_repeats` the same in the references.
    """

    substitutions: int
    deletions: int
    insertions: int
    words: int
    hyp_words: int
    errors_by_part: tuple[int, ...]
    words_by_part: tuple[int, ...]
    exact: int
    utterances: int
    repeats: int
    ref_repeats: int

    @property
    def word_errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        return 100.0 * self.word_errors / self.words if self.words else float("nan")

    def as_dict(self) -> dict[str, object]:
        """JSON-ready: the counts, WER and the WER of each part of the utterances (percent)."""
        out: dict[str, object] = dataclasses.asdict(self)
        out["errors_by_part"] = list(self.errors_by_part)
        out["words_by_part"] = list(self.words_by_part)
        out["word_errors"] = self.word_errors
        out["wer"] = self.wer
        out["wer_by_part"] = [
            100.0 * e / w if w else float("nan")
            for e, w in zip(self.errors_by_part, self.words_by_part, strict=True)
        ]
        return out


def _adjacent_repeats(words: Sequence[str]) -> int:
    return sum(a == b for a, b in zip(words[:-1], words[1:], strict=True))


def error_breakdown(
    refs: Sequence[str],
    hyps: Sequence[str],
    normalizer: str | Callable[[str], str] = "english",
    *,
    parts: int = 3,
) -> ErrorBreakdown:
    """Substitutions, deletions and insertions of `hyps` against `refs` (normalised as in
    `count_errors`, same alignment), with the errors placed in `parts` equal parts of each
    reference: e.g. whether a decoder that commits left to right errs more at the end."""
    if isinstance(refs, str) or isinstance(hyps, str):
        raise ValueError("refs and hyps must be sequences of strings, not single strings")
    if len(refs) != len(hyps):
        raise ValueError(f"refs has {len(refs)} items but hyps has {len(hyps)}; pair them 1:1")
    if parts < 1:
        raise ValueError(f"parts={parts}; use 1 or more")
    norm = get_normalizer(normalizer) if isinstance(normalizer, str) else normalizer
    sub = dele = ins = words = hyp_words = exact = repeats = ref_repeats = 0
    by_part, words_by_part = [0] * parts, [0] * parts
    for ref, hyp in zip(refs, hyps, strict=True):
        ref_w, hyp_w = norm(ref).split(), norm(hyp).split()
        words += len(ref_w)
        hyp_words += len(hyp_w)
        repeats += _adjacent_repeats(hyp_w)
        ref_repeats += _adjacent_repeats(ref_w)
        if not ref_w:  # nothing to align against: every hypothesis word is inserted
            ins += len(hyp_w)
            by_part[0] += len(hyp_w)
            exact += not hyp_w
            continue
        n = len(ref_w)
        for k in range(n):
            words_by_part[k * parts // n] += 1
        errors = 0
        for chunk in jiwer.process_words(" ".join(ref_w), " ".join(hyp_w)).alignments[0]:
            if chunk.type == "equal":
                continue
            if chunk.type == "insert":
                count = chunk.hyp_end_idx - chunk.hyp_start_idx
                ins += count
                by_part[min(chunk.ref_start_idx, n - 1) * parts // n] += count
                errors += count
                continue
            if chunk.type == "substitute":
                sub += chunk.ref_end_idx - chunk.ref_start_idx
            else:
                dele += chunk.ref_end_idx - chunk.ref_start_idx
            for k in range(chunk.ref_start_idx, chunk.ref_end_idx):
                by_part[k * parts // n] += 1
                errors += 1
        exact += errors == 0
    return ErrorBreakdown(
        substitutions=sub,
        deletions=dele,
        insertions=ins,
        words=words,
        hyp_words=hyp_words,
        errors_by_part=tuple(by_part),
        words_by_part=tuple(words_by_part),
        exact=exact,
        utterances=len(refs),
        repeats=repeats,
        ref_repeats=ref_repeats,
    )


def gather_counts(counts: ErrorCounts) -> ErrorCounts:
    """`counts` summed over every JAX process (WER across hosts = one division of the sums)."""
    total = sum_across_processes(np.asarray(counts.as_tuple(), np.int32))
    return ErrorCounts(*(int(v) for v in total))


class DecodeTimer:
    """Accumulates audio seconds and decode wall time of timed calls, and warm-up time.

    `add_timed(audio_seconds, seconds)` for a call that compiled nothing, `add_warmup(seconds)`
    for a call that traced or compiled (see `CompileWatcher`). `rtfx` = audio / decode.
    """

    def __init__(self) -> None:
        self.audio_seconds = 0.0
        self.decode_seconds = 0.0
        self.warmup_seconds = 0.0

    def add_timed(self, audio_seconds: float, seconds: float) -> None:
        self.audio_seconds += float(audio_seconds)
        self.decode_seconds += float(seconds)

    def add_warmup(self, seconds: float) -> None:
        self.warmup_seconds += float(seconds)

    def totals(self) -> tuple[float, float, float]:
        """(audio seconds, decode seconds, warm-up seconds), summed over processes.

        Decode seconds across hosts: the hosts run in parallel, so the slowest host's time is
        the wall time; it is taken as the max (audio seconds are summed).
        """
        local = np.asarray([self.audio_seconds, self.decode_seconds, self.warmup_seconds])
        if jax.process_count() == 1:
            return float(local[0]), float(local[1]), float(local[2])

        gathered = np.asarray(multihost_utils.process_allgather(local.astype(np.float32)))
        return (
            float(gathered[:, 0].sum()),
            float(gathered[:, 1].max()),
            float(gathered[:, 2].max()),
        )

    @property
    def rtfx(self) -> float:
        """Local audio seconds / local decode seconds (use `rtfx_from` for the global value)."""
        return rtfx_from(self.audio_seconds, self.decode_seconds)


def rtfx_from(audio_seconds: float, decode_seconds: float) -> float:
    """Inverse real-time factor: audio seconds / decode seconds (nan if nothing was timed)."""
    return audio_seconds / decode_seconds if decode_seconds > 0 else float("nan")


class CompileWatcher:
    """Notices JAX tracing / compilation while active (`with watcher:`; then `.compiled`).

    Listens to jax.monitoring's duration events under "/jax/core/compile/" (trace, lowering and
    backend compile of a jit cache miss). The evaluator uses it to tell a warm-up call (something
    compiled: the time goes to `compile_seconds` and the batch is run again) from a timed call.
    """

    PREFIXES = ("/jax/core/compile/", "/jax/compilation_cache/")

    def __init__(self) -> None:
        self.events = 0
        self.seconds = 0.0

    def _listener(self, event: str, duration: float, **kwargs: object) -> None:
        if event.startswith(self.PREFIXES):
            self.events += 1
            self.seconds += float(duration)

    def __enter__(self) -> CompileWatcher:
        self.events, self.seconds = 0, 0.0
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        return self

    def __exit__(self, *exc: object) -> None:
        jax.monitoring.unregister_event_duration_listener(self._listener)

    @property
    def compiled(self) -> bool:
        return self.events > 0
