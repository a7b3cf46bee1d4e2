"""JSONL manifests: read, validate, and report bad lines; write manifests.

A manifest has one utterance per line (the contract in docs/design.md):

    {"audio": "wav/0001.wav", "text": "turn on the light", "seconds": 1.2, "id": "0001"}

`audio` is absolute or relative to the manifest's folder; `text` is required; `seconds`, `id`
and `lang` are optional (other keys are kept in `ManifestEntry.extra` and otherwise ignored).

Bad lines never stop a run by default: `read_manifest` returns the good entries plus a list of
`Problem`s (1-based line number and reason) for the caller to report. `strict=True` raises a
`ManifestError` on the first problem instead. Problems that only show when the audio is decoded
(unreadable audio, utterances too long for the largest bucket) are added to the same
`DataReport` by the pipeline, so one summary says how many utterances were dropped and why.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from absl import logging
from etils import epath

from mdm_asr_jax import paths

REQUIRED_KEYS = ("audio", "text")


class ManifestError(ValueError):
    """A manifest (or one of its lines) cannot be used; the message names file, line and fix."""


@dataclasses.dataclass(frozen=True)
class Problem:
    """One utterance that was dropped (or would be, in strict mode) and why.

    `where` names the source (manifest path or TFDS split), `line` is the 1-based manifest line
    (record index + 1 for TFDS), `reason` is a short category (e.g. "missing audio file") used
    for the summary counts, `detail` a human readable explanation, `audio` the line's audio
    path as written (empty when the line names none).
    """

    where: str
    line: int
    reason: str
    detail: str = ""
    audio: str = ""

    def __str__(self) -> str:
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.where}:{self.line}: {self.reason}{detail}"


class DataReport:
    """Collects dropped utterances from manifest reading, filtering and audio loading.

    Thread-safe; the pipeline adds load-time problems from its output thread. `summary()` gives
    one line with counts per reason; `problems` the full list (with line numbers).
    """

    def __init__(self, problems: Iterable[Problem] = (), max_logged: int = 20):
        self._lock = threading.Lock()
        self._problems: list[Problem] = []
        self._seen: set[tuple[str, int, str]] = set()
        self._max_logged = max_logged
        self.extend(problems)

    def add(self, problem: Problem) -> None:
        """Records one problem (once: the same line and reason seen again, e.g. next epoch, is
        not counted twice) and logs the first `max_logged` of them."""
        key = (problem.where, problem.line, problem.reason)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
            self._problems.append(problem)
            count = len(self._problems)
        if count <= self._max_logged:
            logging.warning("Dropped utterance: %s", problem)
        elif count == self._max_logged + 1:
            logging.warning("More dropped utterances; see the data report summary.")

    def extend(self, problems: Iterable[Problem]) -> None:
        for problem in problems:
            self.add(problem)

    @property
    def problems(self) -> list[Problem]:
        with self._lock:
            return list(self._problems)

    @property
    def num_dropped(self) -> int:
        with self._lock:
            return len(self._problems)

    def counts(self) -> dict[str, int]:
        """Number of dropped utterances per reason."""
        with self._lock:
            return dict(collections.Counter(p.reason for p in self._problems))

    def summary(self) -> str:
        counts = self.counts()
        if not counts:
            return "no utterances dropped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
        return f"{sum(counts.values())} utterances dropped ({parts})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (for eval output: the bad inputs skipped)."""
        return {
            "num_dropped": self.num_dropped,
            "counts": self.counts(),
            "problems": [dataclasses.asdict(p) for p in self.problems],
        }

    def log_summary(self) -> None:
        logging.info("Data report: %s", self.summary())


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    """One valid manifest line.

    `index` is the 0-based line position in the file (the batch's `index` field), `line` the
    1-based line number (for messages). `audio` is the resolved path, `audio_as_written` the
    manifest's string (eval hypotheses echo it back).
    """

    index: int
    line: int
    audio: str
    audio_as_written: str
    text: str
    seconds: float | None = None
    id: str | None = None
    lang: str | None = None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)


def _check_line(
    raw: str, line: int, manifest_dir: str, where: str, check_files: bool, allow_empty_text: bool
) -> ManifestEntry | Problem | None:
    stripped = raw.strip()
    if not stripped:
        return None  # Blank lines are allowed and skipped silently.
    try:
        record = json.loads(stripped)
    except json.JSONDecodeError as err:
        return Problem(where, line, "bad JSON", f"{err.msg} at column {err.colno}")
    if not isinstance(record, dict):
        return Problem(where, line, "bad JSON", "a line must be a JSON object")
    missing = [key for key in REQUIRED_KEYS if key not in record]
    if missing:
        return Problem(where, line, "missing key", f"needs {', '.join(missing)}")
    audio, text = record["audio"], record["text"]
    if not isinstance(audio, str) or not audio:
        return Problem(where, line, "bad audio path", "'audio' must be a non-empty string")
    if not isinstance(text, str):
        return Problem(where, line, "bad text", "'text' must be a string", audio)
    if not text.strip() and not allow_empty_text:
        return Problem(where, line, "empty transcript", "'text' is empty", audio)
    seconds = record.get("seconds")
    if seconds is not None and (not isinstance(seconds, int | float) or seconds < 0):
        return Problem(
            where, line, "bad seconds", f"'seconds' must be >= 0, got {seconds!r}", audio
        )
    if paths.is_remote(audio) or paths.is_remote(manifest_dir):
        # gs://: one request per file would make reading a large manifest slow; a missing file
        # is reported when it is loaded.
        path = audio if paths.is_remote(audio) else f"{manifest_dir}/{audio}"
    else:
        path = audio if os.path.isabs(audio) else os.path.join(manifest_dir, audio)
        if check_files and not os.path.isfile(path):
            return Problem(where, line, "missing audio file", path, audio)
        path = os.path.normpath(path)
    extra = {k: v for k, v in record.items() if k not in ("audio", "text", "seconds", "id", "lang")}
    return ManifestEntry(
        index=line - 1,
        line=line,
        audio=path,
        audio_as_written=audio,
        text=text.strip(),
        seconds=None if seconds is None else float(seconds),
        id=None if record.get("id") is None else str(record["id"]),
        lang=record.get("lang"),
        extra=extra,
    )


def read_manifest(
    path: str | os.PathLike,
    *,
    strict: bool = False,
    check_files: bool = True,
    allow_empty_text: bool = False,
) -> tuple[list[ManifestEntry], list[Problem]]:
    """Reads and validates a JSONL manifest.

    Returns (entries, problems): the valid lines, and one `Problem` per bad line (bad JSON,
    missing key, empty transcript, missing audio file when `check_files`). With `strict=True` the
    first problem raises `ManifestError` naming the file, the line and the reason.
    `allow_empty_text` keeps lines whose text is empty (eval scores them: every hypothesis word
    is an insertion); training never wants them.
    """
    path = os.fspath(paths.resolve(path, "manifest"))  # local or gs://
    if not epath.Path(path).is_file():
        raise ManifestError(f"Manifest {path!r} does not exist: pass the path of a JSONL file.")
    manifest_dir = path.rsplit("/", 1)[0] if paths.is_remote(path) else os.path.dirname(path)
    entries: list[ManifestEntry] = []
    problems: list[Problem] = []
    with epath.Path(path).open(encoding="utf-8") as f:
        for line, raw in enumerate(f, start=1):
            result = _check_line(raw, line, manifest_dir, path, check_files, allow_empty_text)
            if isinstance(result, Problem):
                if strict:
                    raise ManifestError(
                        f"{result} (fix or remove that line, or run without --strict to skip it)"
                    )
                problems.append(result)
            elif result is not None:
                entries.append(result)
    if not entries and not problems:
        raise ManifestError(f"Manifest {path!r} is empty: it needs one JSON object per line.")
    return entries, problems


def write_manifest(path: str | os.PathLike, records: Sequence[dict[str, Any]]) -> None:
    """Writes records (dicts with at least `audio` and `text`) as JSONL, one per line."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
