"""Transcribe audio files of any length: split long audio at pauses, batch the pieces, merge.

Inputs (`collect_inputs`): audio files, directories (every audio file below them, sorted), and
list files (`*.txt` / `*.list`, or any path prefixed with `@`: one audio path per line,
relative to the list's folder). Missing inputs fail before anything is decoded, naming the path.

Long audio (`inference.splitting.split_points`): the model sees at most `window_seconds` at
once (30 s for Whisper encoders, 20 s by default for the others); longer audio is cut into
consecutive pieces at the quietest point near each window's end (a pause between words whenever
there is one) and the pieces' transcripts are joined with spaces (why: see that module).

Batching: pieces of a group of files are sorted by length, padded to a few frame buckets
(`inference.batching.frame_bucket`) and decoded `batch_size` at a time with `mdm_asr_jax.decode`.
Each file's result carries its text, duration, segments (start, end, text) and its share of
the batched decode time (proportional to its audio seconds in each batch).

Word times (`word_times=True`, checkpoints with a CTC head): after decoding a batch, the encoder
and CTC head run once more on it and each piece's hypothesis tokens (whatever sampler produced
them) are force-aligned to the CTC log-probabilities (`ctc.ctc_forced_align`, Viterbi over the
CTC topology). A token's time is its aligned encoder frames converted with the encoder frame
rate (feature frames per encoder frame / feature frame rate: 40 ms for 4x subsampling, 20 ms
for Whisper); a word starts at the first frame of its first token and ends one encoder frame
after the last frame of its last token. CTC posteriors are peaky (a token often holds one frame
and blanks fill the rest), so starts are good to about a frame or two but ends are early: a
word's trailing sound sits in the blanks that follow it. A piece whose hypothesis cannot be
aligned (more tokens than encoder frames) gets no word times. This pass is not timed as decode.
Subtitle output (srt / vtt) lives in `mdm_asr_jax.subtitles`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mdm_asr_jax.audio import AudioError, load_audio, log_mel_numpy
from mdm_asr_jax.checkpoint import LoadedCheckpoint, load_checkpoint
from mdm_asr_jax.ctc import ctc_forced_align
from mdm_asr_jax.decode import DecodeOutput, decode
from mdm_asr_jax.eval.metrics import CompileWatcher
from mdm_asr_jax.inference import InferenceError
from mdm_asr_jax.inference.batching import make_batch
from mdm_asr_jax.inference.heads import check_sampler
from mdm_asr_jax.inference.placement import (
    inner_params,
    local_data_mesh,
    place_batch,
    place_params,
)
from mdm_asr_jax.inference.splitting import default_window_seconds, split_points
from mdm_asr_jax.nn.model import ASRModel
from mdm_asr_jax.text import Tokenizer

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au")
LIST_SUFFIXES = (".txt", ".list", ".lst")
__all__ = [
    "Transcriber",
    "Transcript",
    "TranscribeError",
    "collect_inputs",
    "default_window_seconds",
    "split_points",
    "summary_line",
]


class TranscribeError(ValueError):
    """An input that cannot be transcribed (names the file and the fix)."""


# ---------------------------------------------------------------------------------------------
# Inputs.


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Expands files, directories and list files into audio file paths (in the given order).

    Raises TranscribeError naming the first input that does not exist, a directory without
    audio files, or a list file line that names a missing file.
    """
    if not inputs:
        raise TranscribeError("no input given: pass audio files, directories or a list file")
    paths: list[str] = []
    for item in inputs:
        text = os.fspath(item)
        is_list = text.startswith("@")
        path = Path(text[1:] if is_list else text)
        if not path.exists():
            raise TranscribeError(f"input {text!r} does not exist; check the path")
        if path.is_dir():
            found = sorted(
                str(p)
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
            )
            if not found:
                raise TranscribeError(
                    f"directory {text!r} holds no audio file ({', '.join(AUDIO_SUFFIXES)})"
                )
            paths.extend(found)
        elif is_list or path.suffix.lower() in LIST_SUFFIXES:
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                entry = Path(line) if os.path.isabs(line) else path.parent / line
                if not entry.is_file():
                    raise TranscribeError(
                        f"{text}:{number}: audio file {str(entry)!r} does not exist (paths in a "
                        "list file are relative to the list's folder)"
                    )
                paths.append(str(entry))
        else:
            paths.append(str(path))
    return paths


# Splitting long audio: `inference.splitting` (shared with eval, which splits over-long
# utterances the same way); `split_points` and `default_window_seconds` are re-exported here.


# ---------------------------------------------------------------------------------------------
# The transcriber.


@dataclasses.dataclass
class Transcript:
    """One input file's result. segments: [(start s, end s, text)] of its pieces; words:
    [(start s, end s, word)] from the CTC alignment, or None when not asked for."""

    audio: str
    text: str
    seconds: float
    segments: list[tuple[float, float, str]]
    decode_seconds: float = 0.0
    error: str | None = None
    words: list[tuple[float, float, str]] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "audio": self.audio,
            "text": self.text,
            "seconds": round(self.seconds, 3),
            "decode_seconds": round(self.decode_seconds, 4),
            "segments": [
                {"start": round(s, 3), "end": round(e, 3), "text": t} for s, e, t in self.segments
            ],
        }
        if self.words is not None:
            out["words"] = [
                {"start": round(s, 3), "end": round(e, 3), "word": w} for s, e, w in self.words
            ]
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclasses.dataclass
class _Piece:
    file: int
    start: int
    end: int
    features: np.ndarray
    text: str = ""
    words: list[tuple[float, float, str]] | None = None  # times relative to the piece start


@functools.partial(jax.jit, static_argnums=0)
def _ctc_log_probs(
    model: ASRModel, params: Any, features: jax.Array, feature_mask: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(log-softmax of the CTC head [B,S,V] float32, encoder frame mask [B,S])."""
    variables = params if isinstance(params, dict) and "params" in params else {"params": params}
    encoded, enc_mask = model.apply(variables, features, feature_mask, method=model.encode)
    logits = model.apply(variables, encoded, method=model.ctc_logits)
    return jax.nn.log_softmax(logits.astype(np.float32), axis=-1), enc_mask


def word_spans(
    tokenizer: Tokenizer, ids: Sequence[int], spans: np.ndarray
) -> list[tuple[int, int, str]] | None:
    """Words of `tokenizer.decode(ids)` with (first frame, last frame) from token `spans` [U, 2].

    A token belongs to the word its text reaches: token i is in word k when the prefix
    ids[: i + 1] decodes to k + 1 words. None when the word counts do not add up (a tokenizer
    whose decoding rewrites text across token boundaries).
    """
    words = tokenizer.decode(list(ids)).split()
    counts = [len(tokenizer.decode(list(ids[: i + 1])).split()) for i in range(len(ids))]
    if not words:
        return []
    if not counts or counts[-1] != len(words):
        return None
    out = []
    for k, word in enumerate(words):
        members = [i for i, c in enumerate(counts) if c == k + 1]
        if not members:  # a token that completed several words at once
            members = [next(i for i, c in enumerate(counts) if c > k)]
        out.append((int(spans[members[0], 0]), int(spans[members[-1], 1]), word))
    return out


class Transcriber:
    """Loads a checkpoint once and transcribes any number of files with one sampler.

    `sampler` / `nfe` default to the checkpoint's decoding defaults, else PBEB at 32 NFEs.

    `stats` after a run: audio_seconds, decode_seconds (batches that compiled nothing),
    compile_seconds (batches during which JAX compiled), rtfx over the former.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike | LoadedCheckpoint,
        *,
        sampler: str | None = None,
        nfe: int | None = None,
        batch_size: int = 8,
        window_seconds: float | None = None,
        search_seconds: float = 5.0,
        seed: int = 0,
        decode_fn: Callable[..., DecodeOutput] = decode,
        decode_kwargs: dict[str, Any] | None = None,
        word_times: bool = False,
    ):
        if not isinstance(checkpoint, LoadedCheckpoint):
            checkpoint = load_checkpoint(checkpoint)
        self.checkpoint = checkpoint
        config = checkpoint.model_config
        if word_times and not config.ctc:
            raise TranscribeError(
                f"word times come from a CTC head, and {checkpoint.path} has none; drop "
                "--word_times (segment times are still written)"
            )
        self.word_times = bool(word_times)
        sampler = sampler or checkpoint.decoding.sampler_or_default
        nfe = int(nfe) if nfe is not None else checkpoint.decoding.nfe_or_default
        try:
            self.sampler = check_sampler(sampler, config, str(checkpoint.path)).spec
        except InferenceError as err:
            raise TranscribeError(str(err)) from None
        if batch_size < 1 or nfe < 1:
            raise TranscribeError(f"batch_size={batch_size} and nfe={nfe} must be >= 1")
        frame_rate = self.checkpoint.feature_config.frame_rate
        limit = default_window_seconds(config, frame_rate)
        if window_seconds is None:
            window_seconds = limit
        elif window_seconds <= 0 or window_seconds > limit + 1e-9:
            raise TranscribeError(
                f"window_seconds={window_seconds} must be in (0, {limit:g}] for this encoder"
            )
        self.window_seconds = float(window_seconds)
        self.search_seconds = min(search_seconds, self.window_seconds / 2)
        self.nfe, self.batch_size, self.seed = int(nfe), int(batch_size), int(seed)
        self.model = ASRModel(config)
        self.mesh = local_data_mesh(self.batch_size)
        self.params = place_params(inner_params(checkpoint.params), self.mesh)
        self.decode_fn = decode_fn
        defaults = checkpoint.decoding.decode_kwargs(checkpoint.tokenizer, config.eos_id)
        self.decode_kwargs = {**defaults, **(decode_kwargs or {})}
        self.stats = {"audio_seconds": 0.0, "decode_seconds": 0.0, "compile_seconds": 0.0}
        self._batches = 0

    @property
    def rtfx(self) -> float:
        s = self.stats
        return s["audio_seconds"] / s["decode_seconds"] if s["decode_seconds"] else float("nan")

    def _decode_pieces(self, pieces: list[_Piece], shares: np.ndarray) -> None:
        """Decodes pieces in batches (sorted by length); fills .text and adds time shares."""
        config = self.checkpoint.model_config
        rate = self.checkpoint.feature_config.sample_rate
        tokenizer = self.checkpoint.tokenizer
        # Pieces without a single feature frame (a few ms of audio) have no text to find.
        decodable = [i for i in range(len(pieces)) if pieces[i].features.shape[0] > 0]
        order = sorted(decodable, key=lambda i: pieces[i].features.shape[0])
        for first in range(0, len(order), self.batch_size):
            chunk = order[first : first + self.batch_size]
            items = [
                (i, pieces[i].features, (pieces[i].end - pieces[i].start) / rate, []) for i in chunk
            ]
            batch = make_batch(items, self.batch_size, config, tokenizer.pad_id)
            # decode folds each row's index (here: the piece number) into the key.
            key = jax.random.fold_in(jax.random.key(self.seed), self._batches)
            self._batches += 1
            with CompileWatcher() as watcher:
                start = time.perf_counter()
                device_batch = place_batch(batch, self.mesh)
                result = self.decode_fn(
                    self.model,
                    self.params,
                    device_batch,
                    self.sampler,
                    self.nfe,
                    key,
                    **self.decode_kwargs,
                )
                result = jax.block_until_ready(jax.device_get(result))
                elapsed = time.perf_counter() - start
            seconds = batch["seconds"][: len(chunk)]
            if watcher.compiled:
                self.stats["compile_seconds"] += elapsed
            else:
                self.stats["decode_seconds"] += elapsed
                self.stats["audio_seconds"] += float(seconds.sum())
            ids = result.ids
            total = float(seconds.sum()) or 1.0
            for row, i in enumerate(chunk):
                pieces[i].text = tokenizer.decode(ids[row]).strip()
                shares[pieces[i].file] += elapsed * float(seconds[row]) / total
            if self.word_times:
                self._align(device_batch, [(pieces[i], ids[row]) for row, i in enumerate(chunk)])

    def _align(self, device_batch: dict[str, Any], rows: list[tuple[_Piece, list[int]]]) -> None:
        """Word times of each piece from the CTC alignment of its hypothesis ids."""
        log_probs, enc_mask = _ctc_log_probs(
            self.model, self.params, device_batch["features"], device_batch["feature_mask"]
        )
        log_probs, enc_mask = np.asarray(log_probs), np.asarray(enc_mask)
        feature_frames = device_batch["features"].shape[1]
        frame_seconds = (
            feature_frames / log_probs.shape[1] / self.checkpoint.feature_config.frame_rate
        )
        blank = self.checkpoint.model_config.pad_id
        for row, (piece, ids) in enumerate(rows):
            valid = int(enc_mask[row].sum())
            spans = ctc_forced_align(log_probs[row, :valid], ids, blank)
            found = None if spans is None else word_spans(self.checkpoint.tokenizer, ids, spans)
            if found is None:
                continue
            piece.words = [(a * frame_seconds, (b + 1) * frame_seconds, w) for a, b, w in found]

    def transcribe(
        self, paths: Sequence[str], *, skip_bad: bool = False, group_files: int = 64
    ) -> Iterator[Transcript]:
        """Yields one `Transcript` per path, in order, decoding `group_files` files at a time.

        An unreadable file raises TranscribeError naming it, or with `skip_bad` yields a
        Transcript with empty text and `error` set.
        """
        for first in range(0, len(paths), group_files):
            yield from self._transcribe_group(list(paths[first : first + group_files]), skip_bad)

    def _transcribe_group(self, paths: list[str], skip_bad: bool) -> list[Transcript]:
        features_config = self.checkpoint.feature_config
        rate = features_config.sample_rate
        results: list[Transcript] = []
        pieces: list[_Piece] = []
        for number, path in enumerate(paths):
            try:
                audio = load_audio(path, rate)
            except AudioError as err:
                if not skip_bad:
                    raise TranscribeError(
                        f"{err} (or pass --skip_bad to report it and go on)"
                    ) from None
                results.append(Transcript(path, "", 0.0, [], error=str(err)))
                continue
            words = [] if self.word_times else None
            results.append(Transcript(path, "", audio.shape[0] / rate, [], words=words))
            for start, end in split_points(audio, rate, self.window_seconds, self.search_seconds):
                feats = log_mel_numpy(audio[start:end], features_config)
                pieces.append(_Piece(number, start, end, feats))
        shares = np.zeros((len(paths),), np.float64)
        if pieces:
            self._decode_pieces(pieces, shares)
        for piece in pieces:  # pieces are in file order, then time order
            result = results[piece.file]
            start, end = piece.start / rate, piece.end / rate
            result.segments.append((start, end, piece.text))
            if result.words is not None:
                result.words.extend(
                    (start + a, min(start + b, end), w) for a, b, w in (piece.words or [])
                )
        for number, result in enumerate(results):
            result.text = " ".join(t for _, _, t in result.segments if t)
            result.decode_seconds = float(shares[number])
        return results


def summary_line(transcriber: Transcriber, files: int) -> str:
    """A one-line run summary (stderr): files, audio seconds, decode / compile seconds, RTFx."""
    s = transcriber.stats
    rtfx = transcriber.rtfx
    return (
        f"{files} file(s), {s['audio_seconds']:.1f} s of audio timed, decode "
        f"{s['decode_seconds']:.2f} s, compile {s['compile_seconds']:.2f} s, RTFx "
        f"{'n/a (every batch compiled)' if math.isnan(rtfx) else f'{rtfx:.1f}'}"
    )
