"""Connected-digit utterances built from the Free Spoken Digit Dataset (real speech).

FSDD (Jakobovski/free-spoken-digit-dataset, CC BY-SA 4.0) holds single spoken digits as 8 kHz
wav files named `{digit}_{speaker}_{index}.wav` (index 0..49 per digit and speaker). We build
utterances of 2-7 digits by concatenating recordings of one speaker, with random silent gaps
between them (and a short lead-in/out), resampled to 16 kHz. The transcript spells the digits
as English words, "zero" for 0 ("three one four"), so text normalisers and SentencePiece models
see ordinary words.

Splits keep evaluation honest:
- `test_speakers` are held out: the test split uses only them (all their recordings);
- the other speakers' recordings with index < `dev_recordings` (FSDD's own test convention is
  indices 0-4) form the dev split (seen speakers, unseen recordings);
- the rest is train.
Everything random comes from one numpy Generator seeded by `seed`.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import re
from collections.abc import Sequence

import numpy as np
import soundfile
from absl import logging

from mdm_asr_jax.audio import SAMPLE_RATE, AudioError, load_audio
from mdm_asr_jax.data.manifest import write_manifest

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_NAME = re.compile(r"^(\d)_([A-Za-z0-9]+)_(\d+)\.wav$")


class FSDDError(ValueError):
    """Bad FSDD folder or arguments; the message names the input and the fix."""


@dataclasses.dataclass(frozen=True)
class Recording:
    path: str
    digit: int
    speaker: str
    index: int


def scan_fsdd(folder: str) -> list[Recording]:
    """Lists `{digit}_{speaker}_{index}.wav` files in `folder` (other files are ignored)."""
    if not os.path.isdir(folder):
        raise FSDDError(
            f"FSDD folder {folder!r} does not exist: pass the folder of "
            "free-spoken-digit-dataset recordings (e.g. ../shared/data/fsdd)."
        )
    recordings = []
    for name in sorted(os.listdir(folder)):
        match = _NAME.match(name)
        if match:
            digit, speaker, index = match.groups()
            recordings.append(
                Recording(os.path.join(folder, name), int(digit), speaker, int(index))
            )
    if not recordings:
        raise FSDDError(f"No '{{digit}}_{{speaker}}_{{index}}.wav' files in {folder!r}.")
    return recordings


def _split_recordings(
    recordings: Sequence[Recording], test_speakers: Sequence[str], dev_recordings: int
) -> dict[str, list[Recording]]:
    speakers = sorted({r.speaker for r in recordings})
    unknown = [s for s in test_speakers if s not in speakers]
    if unknown:
        raise FSDDError(f"test_speakers {unknown} not in the FSDD folder (speakers: {speakers}).")
    if set(test_speakers) == set(speakers):
        raise FSDDError("test_speakers holds out every speaker; leave at least one for training.")
    splits: dict[str, list[Recording]] = {"train": [], "dev": [], "test": []}
    for r in recordings:
        if r.speaker in test_speakers:
            splits["test"].append(r)
        elif r.index < dev_recordings:
            splits["dev"].append(r)
        else:
            splits["train"].append(r)
    return splits


def _compose(
    pool: dict[str, dict[int, list[Recording]]],
    rng: np.random.Generator,
    min_digits: int,
    max_digits: int,
    gap_range: tuple[float, float],
    cache: dict[str, np.ndarray],
) -> tuple[np.ndarray, list[int], str]:
    speakers = sorted(pool)
    speaker = speakers[int(rng.integers(len(speakers)))]
    by_digit = pool[speaker]
    digits = sorted(by_digit)
    length = int(rng.integers(min_digits, max_digits + 1))
    chosen = [digits[int(rng.integers(len(digits)))] for _ in range(length)]
    pieces = [np.zeros(int(rng.uniform(0.05, 0.25) * SAMPLE_RATE), np.float32)]
    for position, digit in enumerate(chosen):
        options = by_digit[digit]
        recording = options[int(rng.integers(len(options)))]
        if recording.path not in cache:
            cache[recording.path] = load_audio(recording.path, SAMPLE_RATE)
        audio = cache[recording.path]
        # Normalise each recording's peak so one speaker's levels don't jump digit to digit.
        pieces.append(audio * (0.5 / max(float(np.max(np.abs(audio))), 1e-4)))
        if position + 1 < length:
            pieces.append(np.zeros(int(rng.uniform(*gap_range) * SAMPLE_RATE), np.float32))
    pieces.append(np.zeros(int(rng.uniform(0.05, 0.25) * SAMPLE_RATE), np.float32))
    return np.concatenate(pieces), chosen, speaker


def build_fsdd_corpus(
    fsdd_dir: str,
    out_dir: str,
    *,
    num_utterances: dict[str, int] | None = None,
    test_speakers: Sequence[str] = (),
    dev_recordings: int = 5,
    min_digits: int = 2,
    max_digits: int = 7,
    gap_range: tuple[float, float] = (0.05, 0.4),
    seed: int = 0,
) -> dict[str, str]:
    """Writes connected-digit wavs to `out_dir/<split>/` and manifests `out_dir/<split>.jsonl`.

    `num_utterances` maps split -> count (default train 2000, dev 200, test 200; splits with no
    recordings, e.g. test without `test_speakers`, are skipped). Returns {split: manifest path}.
    """
    if not 1 <= min_digits <= max_digits:
        raise FSDDError(f"Need 1 <= min_digits <= max_digits, got {min_digits}, {max_digits}.")
    if gap_range[0] < 0 or gap_range[1] < gap_range[0]:
        raise FSDDError(
            f"gap_range must be (low, high) seconds with 0 <= low <= high: {gap_range}."
        )
    counts = num_utterances or {"train": 2000, "dev": 200, "test": 200}
    splits = _split_recordings(scan_fsdd(fsdd_dir), list(test_speakers), dev_recordings)
    rng = np.random.default_rng(seed)
    cache: dict[str, np.ndarray] = {}
    manifests = {}
    for split in ("train", "dev", "test"):
        count = counts.get(split, 0)
        if count <= 0:
            continue
        if not splits[split]:
            logging.info("FSDD: no recordings for split %s; skipped.", split)
            continue
        pool: dict[str, dict[int, list[Recording]]] = collections.defaultdict(
            lambda: collections.defaultdict(list)
        )
        for r in splits[split]:
            pool[r.speaker][r.digit].append(r)
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        records = []
        for i in range(count):
            try:
                audio, digits, speaker = _compose(
                    pool, rng, min_digits, max_digits, gap_range, cache
                )
            except AudioError as err:
                raise FSDDError(f"An FSDD recording cannot be read: {err}") from err
            utt_id = f"{split}_{i:06d}"
            relative = os.path.join(split, f"{utt_id}.wav")
            soundfile.write(os.path.join(out_dir, relative), audio, SAMPLE_RATE, subtype="PCM_16")
            records.append(
                {
                    "audio": relative,
                    "text": " ".join(DIGIT_WORDS[d] for d in digits),
                    "seconds": round(audio.size / SAMPLE_RATE, 4),
                    "id": utt_id,
                    "lang": "en",
                    "speaker": speaker,
                }
            )
        path = os.path.join(out_dir, f"{split}.jsonl")
        write_manifest(path, records)
        manifests[split] = path
        speakers = sorted({r.speaker for r in splits[split]})
        logging.info("FSDD %s: %d utterances from speakers %s -> %s", split, count, speakers, path)
    return manifests
