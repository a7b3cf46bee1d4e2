"""Splitting long audio at pauses: what transcribe and eval share.

The model sees at most a window of audio at once (30 s for Whisper encoders, whose positions
stop there; 20 s by default for the others, about the longest LibriSpeech training
utterances). Longer audio is cut into consecutive, non-overlapping pieces: each cut is placed at
the quietest point (lowest RMS energy over 50 ms, hop 10 ms) inside the last `search_seconds`
of the window, so it falls in a pause between words whenever there is one. The pieces'
transcripts are joined with spaces. Why energy cuts rather than overlapping windows:
overlapping windows need the two transcripts of the overlap reconciled (word alignment and a
tie-break), which a non-autoregressive decoder with no timestamps makes guesswork; a cut in a
pause loses nothing and the merge is exact. Continuous speech with no pause inside the search
span is still cut (at its quietest frame), and a word straddling that cut may be misrecognised.

`mdm_asr_jax.transcribe` cuts every input longer than its window; `inference.eval_set` cuts
the manifest utterances longer than the largest eval frame bucket and eval scores the joined
hypothesis against the whole reference.
"""

from __future__ import annotations

import numpy as np

from mdm_asr_jax.audio import FRAME_SECONDS
from mdm_asr_jax.inference.batching import max_frames
from mdm_asr_jax.nn.config import ModelConfig
from mdm_asr_jax.nn.encoders import encoder_kind


def default_window_seconds(
    model_config: ModelConfig, frame_rate: float = 1.0 / FRAME_SECONDS
) -> float:
    """The encoder kind's window (Whisper 30 s, else 20 s), never more than its positions allow."""
    window = encoder_kind(model_config.encoder).window_seconds
    limit = max_frames(model_config)
    if limit is not None:
        window = min(window, limit / frame_rate)
    return window


def split_points(
    audio: np.ndarray,
    sample_rate: int,
    window_seconds: float,
    search_seconds: float = 5.0,
    energy_seconds: float = 0.05,
) -> list[tuple[int, int]]:
    """Cuts audio [N] into consecutive pieces of at most `window_seconds` at quiet points.

    Returns [(start, end)] sample ranges that cover [0, N) exactly, without overlap. For each
    cut, the RMS energy over `energy_seconds` (hop 10 ms) is computed in the last
    `search_seconds` of the current window and the cut goes at the centre of the quietest
    frame (the latest one on ties, to keep pieces long). The last piece is at least 1 s long
    (or a quarter window), so no sliver of audio is decoded on its own.
    """
    if window_seconds <= 0:
        raise ValueError(f"window_seconds={window_seconds} must be > 0")
    window = int(window_seconds * sample_rate)
    search = max(1, min(int(search_seconds * sample_rate), window // 2))
    frame = max(1, int(energy_seconds * sample_rate))
    hop = max(1, int(FRAME_SECONDS * sample_rate))
    min_last = min(sample_rate, window // 4)  # never leave a sliver (< 1 s) as the last piece
    num = audio.shape[0]
    pieces, start = [], 0
    while num - start > window:
        hi = min(start + window, num - min_last)
        lo = max(start + 1, hi - search)
        region = audio[max(lo - frame // 2, 0) : hi + frame // 2].astype(np.float64)
        power = np.convolve(region**2, np.ones(frame) / frame, mode="valid")
        offsets = np.arange(0, power.shape[0], hop)
        if offsets.size == 0:
            cut = hi
        else:
            quiet = power[offsets]
            best = offsets[np.flatnonzero(quiet <= quiet.min())[-1]]
            cut = int(np.clip(max(lo - frame // 2, 0) + best + frame // 2, lo, hi))
        pieces.append((start, cut))
        start = cut
    pieces.append((start, num))
    return pieces
