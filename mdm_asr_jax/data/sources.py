"""Random-access utterance sources for the input pipeline: JSONL manifests and TFDS splits.

A source is a list of utterances with random access, which is all the grain pipeline needs:

- `len(source)`, `source.text(i)`, `source.seconds(i)` (duration, known up front so the
  pipeline can bucket and filter before decoding any audio), `source.load(i)` (float32 mono
  16 kHz audio; raises `AudioError`), `source.index(i)` (the batch's `index` field: the 0-based
  manifest line, or the TFDS record index) and `source.where` (a name for reports).
- `source.problems`: utterances found unusable while opening the source (bad manifest lines,
  unreadable audio headers), each with its 1-based line number.

`open_source("path/to/manifest.jsonl")` or `open_source("tfds:librispeech/train_clean100")`
picks the kind. Sources are pickled into grain worker processes, so they hold only plain data
(and TFDS's picklable data source).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import soundfile
from absl import logging

from mdm_asr_jax import paths
from mdm_asr_jax.audio import SAMPLE_RATE, AudioError, decode_audio_bytes, load_audio
from mdm_asr_jax.data.manifest import ManifestEntry, ManifestError, Problem, read_manifest
from mdm_asr_jax.progress import progress

TFDS_PREFIX = "tfds:"


class SourceError(ValueError):
    """A data source cannot be opened; the message names it and the fix."""


def _probe_seconds(path: str) -> float | str:
    """Duration from the file header (cheap), or the reason it cannot be read."""
    try:
        source = io.BytesIO(paths.resolve(path).read_bytes()) if paths.is_remote(path) else path
        info = soundfile.info(source)
    except (soundfile.SoundFileError, RuntimeError, OSError) as err:
        return str(err)
    if info.frames <= 0 or info.samplerate <= 0:
        return "no samples"
    return info.frames / info.samplerate


class ManifestSource:
    """Utterances of a JSONL manifest (see `data.manifest` for the format and the checks).

    Durations come from the manifest's `seconds` or, when absent, from the audio file header
    (read once, in threads); files whose header cannot be read are reported as problems here,
    before training starts.
    """

    def __init__(
        self,
        path: str,
        *,
        strict: bool = False,
        probe_threads: int = 16,
        allow_empty_text: bool = False,
    ):
        self.path = os.path.abspath(path)
        self.where = path
        entries, problems = read_manifest(path, strict=strict, allow_empty_text=allow_empty_text)
        missing = [i for i, e in enumerate(entries) if e.seconds is None]
        seconds = [e.seconds for e in entries]
        if missing:
            with concurrent.futures.ThreadPoolExecutor(probe_threads) as pool:
                probed = list(pool.map(_probe_seconds, [entries[i].audio for i in missing]))
            for i, value in zip(missing, probed, strict=True):
                if isinstance(value, str):
                    problem = Problem(
                        path,
                        entries[i].line,
                        "unreadable audio",
                        value,
                        entries[i].audio_as_written,
                    )
                    if strict:
                        raise ManifestError(f"{problem} (fix the file or run without --strict)")
                    problems.append(problem)
                    seconds[i] = None
                else:
                    seconds[i] = value
        keep = [i for i, s in enumerate(seconds) if s is not None]
        self.entries: list[ManifestEntry] = [entries[i] for i in keep]
        self._seconds = np.asarray([seconds[i] for i in keep], np.float64)
        self.problems: list[Problem] = sorted(problems, key=lambda p: p.line)

    def __len__(self) -> int:
        return len(self.entries)

    def text(self, i: int) -> str:
        return self.entries[i].text

    def lang(self, i: int) -> str | None:
        """The manifest's `lang` of utterance i (None when the line has none)."""
        return self.entries[i].lang

    def seconds(self, i: int) -> float:
        return float(self._seconds[i])

    def index(self, i: int) -> int:
        return self.entries[i].index

    def load(self, i: int) -> np.ndarray:
        return load_audio(self.entries[i].audio, SAMPLE_RATE)

    def describe(self, i: int) -> dict[str, Any]:
        """What eval output echoes per utterance: audio as written in the manifest, text, id."""
        entry = self.entries[i]
        return {"audio": entry.audio_as_written, "text": entry.text, "id": entry.id}


def parse_tfds_spec(spec: str) -> tuple[str, str]:
    """`tfds:NAME[/CONFIG][:VERSION]/SPLIT` -> (name, split); the split is the last component.

    Examples: `tfds:librispeech/train_clean100`, `tfds:my_corpus:1.0.0/test[:10%]`.
    """
    body = spec[len(TFDS_PREFIX) :] if spec.startswith(TFDS_PREFIX) else spec
    name, _, split = body.rpartition("/")
    if not name or not split:
        raise SourceError(
            f"TFDS source {spec!r} must look like 'tfds:NAME/SPLIT' "
            "(e.g. 'tfds:librispeech/train_clean100')."
        )
    return name, split


def _pick_key(features: Sequence[str], candidates: Sequence[str], what: str, spec: str) -> str:
    for key in candidates:
        if key in features:
            return key
    raise SourceError(
        f"TFDS dataset {spec!r} has no {what} feature (looked for {list(candidates)}, found "
        f"{sorted(features)})."
    )


class TFDSSource:
    """Utterances of a TFDS split read through `tfds.data_source` (array_record files).

    Audio is the `audio` or `speech` feature (int16 at 16 kHz, as LibriSpeech and our manifest
    builder store it, float, or encoded file bytes), text the `text` feature. TFDS records carry
    no duration, so the first use scans the split once (every record, `scan_threads` threads)
    and caches texts and durations as JSON: in `index_cache_dir` if given, else next to the
    dataset (`DATA_DIR/NAME/.../mdm_asr_index/`, shared by all hosts reading one bucket; run
    `mdm-asr-prepare index` once before a multi-host job) or, if that is read-only,
    `~/.cache/mdm_asr_jax/tfds_index`. `index_path` says where it went.
    """

    def __init__(
        self,
        spec: str,
        *,
        data_dir: str | None = None,
        index_cache_dir: str | None = None,
        scan_threads: int = 16,
    ):
        try:
            import tensorflow_datasets as tfds
        except ImportError as err:
            raise SourceError(
                f"Source {spec!r} needs tensorflow-datasets: pip install 'mdm_asr_jax[tfds]'."
            ) from err
        self.where = spec
        self.name, self.split = parse_tfds_spec(spec)
        try:
            builder = tfds.builder(self.name, data_dir=data_dir)
            self._data = builder.as_data_source(split=self.split)
        except Exception as err:  # TFDS raises many kinds; say what to do.
            raise SourceError(
                f"Cannot open TFDS source {spec!r} (data_dir={data_dir!r}): {err}. Build it "
                "first with array_record files, e.g. `tfds build NAME --file_format=array_record`"
                " or `mdm-asr-prepare tfds`."
            ) from err
        features = list(builder.info.features.keys())
        self._audio_key = _pick_key(features, ("audio", "speech"), "audio", spec)
        self._text_key = _pick_key(features, ("text", "transcript"), "text", spec)
        self._id_key = "id" if "id" in features else None
        self.index_path: str | None = None
        texts, seconds, ids = self._load_index(builder, index_cache_dir, scan_threads)
        self._texts = texts
        self._seconds = np.asarray(seconds, np.float64)
        self._ids = ids
        self.problems: list[Problem] = []

    def _index_paths(self, builder: Any, cache_dir: str | None) -> list[Any]:
        """Where the scan result may live, in order: `cache_dir` if given; else next to the
        dataset (shared by every host of a pod reading the same bucket), then ~/.cache."""
        from etils import epath

        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{self.name}_{self.split}")
        digest = hashlib.sha1(json.dumps([self.split, len(self._data)]).encode()).hexdigest()
        if cache_dir:
            return [epath.Path(cache_dir) / f"{safe}_{digest[:12]}.json"]
        home = epath.Path(os.path.expanduser("~")) / ".cache" / "mdm_asr_jax" / "tfds_index"
        local = hashlib.sha1(str(builder.data_dir).encode()).hexdigest()[:8]
        return [
            epath.Path(builder.data_dir) / "mdm_asr_index" / f"{safe}_{digest[:12]}.json",
            home / f"{safe}_{digest[:12]}_{local}.json",
        ]

    def _load_index(
        self, builder: Any, cache_dir: str | None, threads: int
    ) -> tuple[list[str], list[float], list[str | None]]:
        paths = self._index_paths(builder, cache_dir)
        for path in paths:
            if path.exists():
                self.index_path = str(path)
                cached = json.loads(path.read_text())
                return cached["texts"], cached["seconds"], cached["ids"]
        logging.info("Scanning %s (%d records) for texts and durations.", self.where, len(self))

        def scan(i: int) -> tuple[str, float, str | None]:
            record = self._data[i]
            value = record[self._audio_key]
            if isinstance(value, bytes):  # Encoded audio (e.g. a lazy_decode config): header.
                seconds = soundfile.info(io.BytesIO(value)).duration
            else:
                seconds = np.asarray(value).shape[0] / SAMPLE_RATE
            ident = record.get(self._id_key) if self._id_key else None
            return _as_text(record[self._text_key]), seconds, _as_id(ident)

        with concurrent.futures.ThreadPoolExecutor(threads) as pool:
            rows = list(
                progress(
                    pool.map(scan, range(len(self._data)), chunksize=64),
                    total=len(self._data),
                    desc=f"scan {self.where}",
                    unit="record",
                )
            )
        texts = [r[0] for r in rows]
        seconds = [r[1] for r in rows]
        ids = [r[2] for r in rows]
        payload = json.dumps({"source": self.where, "texts": texts, "seconds": seconds, "ids": ids})
        for path in paths:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.parent / f"{path.name}.tmp{os.getpid()}"
                tmp.write_text(payload)
                tmp.rename(path)
                self.index_path = str(path)
                break
            except Exception as err:  # Read-only bucket, permissions...: try the next place.
                logging.info("Cannot cache the TFDS index at %s: %s", path, err)
        return texts, seconds, ids

    def __len__(self) -> int:
        return len(self._data)

    def text(self, i: int) -> str:
        return self._texts[i]

    def seconds(self, i: int) -> float:
        return float(self._seconds[i])

    def index(self, i: int) -> int:
        return i

    def load(self, i: int) -> np.ndarray:
        try:
            value = self._data[i][self._audio_key]
        except Exception as err:
            raise AudioError(f"cannot read record {i} of {self.where}: {err}") from err
        if isinstance(value, bytes):  # Encoded audio file: decode and resample like load_audio.
            return decode_audio_bytes(value, SAMPLE_RATE, name=f"record {i} of {self.where}")
        audio = np.asarray(value)
        if audio.ndim == 2:  # [N, C]
            audio = audio.mean(axis=1)
        if audio.size == 0:
            raise AudioError(f"record {i} of {self.where} holds no samples")
        if np.issubdtype(audio.dtype, np.integer):
            return (audio.astype(np.float32) / 32768.0).astype(np.float32)
        return audio.astype(np.float32)

    def describe(self, i: int) -> dict[str, Any]:
        ident = self._ids[i]
        return {"audio": f"{self.where}#{ident if ident is not None else i}", "text": self._texts[i], "id": ident}  # fmt: skip


def _as_text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return _as_text(value.item())
    return str(value)


def _as_id(value: Any) -> str | None:
    return None if value is None else _as_text(value)


def open_source(
    spec: str,
    *,
    strict: bool = False,
    tfds_data_dir: str | None = None,
    index_cache_dir: str | None = None,
    allow_empty_text: bool = False,
) -> ManifestSource | TFDSSource:
    """A manifest path or `tfds:NAME/SPLIT` -> the matching source (`allow_empty_text`: keep
    manifest lines with an empty transcript, for eval; TFDS records are always kept here)."""
    if not spec:
        raise SourceError("No data source given: set a manifest path or 'tfds:NAME/SPLIT'.")
    if spec.startswith(TFDS_PREFIX):
        return TFDSSource(spec, data_dir=tfds_data_dir, index_cache_dir=index_cache_dir)
    return ManifestSource(spec, strict=strict, allow_empty_text=allow_empty_text)
