"""Subtitle files from transcripts: SubRip (.srt) and WebVTT (.vtt).

A cue is (start s, end s, text). `transcript_cues` makes them from a `transcribe.Transcript`:
with word times (CTC alignment, `--word_times`) consecutive words are grouped into cues of at
most `max_seconds` and `max_words`, cut at word boundaries; without, each piece the splitter cut
(at most the encoder's window: 20-30 s) is one cue with the piece's span. Cue times are
clipped to [0, audio duration] and made non-decreasing, so players and parsers accept them.

Formats (what `to_srt` / `to_vtt` write, UTF-8):
  SRT:    "N\\nHH:MM:SS,mmm --> HH:MM:SS,mmm\\ntext\\n\\n" per cue, N from 1.
  WebVTT: "WEBVTT\\n\\n" then "HH:MM:SS.mmm --> HH:MM:SS.mmm\\ntext\\n\\n" per cue.
Cue text never contains a blank line or "-->" (either would end or break a cue): newlines
become spaces and "-->" becomes "->".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Cue = tuple[float, float, str]


def _clean(text: str) -> str:
    return " ".join(str(text).split()).replace("-->", "->")


def _clip(cues: Sequence[Cue], duration: float) -> list[Cue]:
    out: list[Cue] = []
    floor = 0.0
    for start, end, text in cues:
        text = _clean(text)
        if not text:
            continue
        start = min(max(float(start), floor), duration)
        end = min(max(float(end), start), duration)
        out.append((start, end, text))
        floor = start
    return out


def word_cues(words: Sequence[Cue], max_seconds: float = 6.0, max_words: int = 14) -> list[Cue]:
    """Groups (start, end, word) into cues of at most `max_seconds` and `max_words` words."""
    cues: list[Cue] = []
    group: list[Cue] = []
    for word in words:
        if group and (len(group) >= max_words or word[1] - group[0][0] > max_seconds):
            cues.append((group[0][0], group[-1][1], " ".join(w for _, _, w in group)))
            group = []
        group.append(word)
    if group:
        cues.append((group[0][0], group[-1][1], " ".join(w for _, _, w in group)))
    return cues


def transcript_cues(transcript: Any, max_seconds: float = 6.0, max_words: int = 14) -> list[Cue]:
    """Cues of a `Transcript` (words when it has word times, else its segments)."""
    if transcript.words:
        cues = word_cues(transcript.words, max_seconds, max_words)
    else:
        cues = list(transcript.segments)
    return _clip(cues, float(transcript.seconds))


def _timestamp(seconds: float, separator: str) -> str:
    millis = int(round(max(seconds, 0.0) * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(cues: Sequence[Cue]) -> str:
    """SubRip text of `cues` (numbered from 1; empty string for no cue)."""
    blocks = [
        f"{n}\n{_timestamp(s, ',')} --> {_timestamp(e, ',')}\n{_clean(t)}\n"
        for n, (s, e, t) in enumerate(cues, 1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT text of `cues` (the header alone for no cue)."""
    blocks = [f"{_timestamp(s, '.')} --> {_timestamp(e, '.')}\n{_clean(t)}\n" for s, e, t in cues]
    return "\n".join(["WEBVTT\n", *blocks])
