"""Audio front end: load and resample audio, log-mel features, SpecAugment.

Three things live here, shared by the input pipeline (numpy, on the host) and the model
(jnp, on device):

* **Loading.** `load_audio` reads any file libsndfile understands (wav, flac, ogg, ...), at any
  sample rate, integer or float PCM, mixes channels to mono and resamples to 16 kHz with soxr.
  Bad input (missing, unreadable, empty, non-finite) raises `AudioError` naming the file.
* **Log-mel features** in two flavours, selected by `FeatureConfig.kind`:

  - ``"whisper"``: what OpenAI Whisper feeds its encoder. Periodic Hann window of 400 samples,
    n_fft 400, hop 160, centred STFT with reflect padding (the last frame is dropped, so 1 s ->
    100 frames), power spectrum, Slaney mel filterbank 0-8000 Hz (80 or 128 bins),
    ``log10(max(mel, 1e-10))``, clamped to (utterance max - 8), then ``(x + 4) / 4``.
  - ``"nemo"``: what NeMo's ``AudioToMelSpectrogramPreprocessor`` feeds Canary / FastConformer.
    Optional dither, pre-emphasis 0.97, symmetric Hann window of 25 ms (400 samples) inside an
    n_fft of 512, hop 10 ms, centred STFT with zero padding (1 + N // hop frames), power
    spectrum, Slaney mel filterbank, ``log(mel + 2**-24)``, then per-feature normalisation
    (mean and unbiased std per mel bin over the utterance's valid frames, std + 1e-5).

  Three implementations: `log_mel_reference` computes one utterance in float64 with the same
  code as `log_mel_jax`, which computes a padded batch in float32 and is jittable;
  `log_mel_numpy` is the input pipeline's fast host path for one utterance (strided frames,
  float32 for whisper, banded filterbank matmuls), equal to the reference to 1e-4. Every
  statistic (the Whisper clamp maximum, the NeMo mean and std) is taken over each row's valid
  frames only, and the STFT of a row reads only that row's samples, so padding a batch never
  changes a row's features on its valid frames. Frames past a row's valid length are set to 0
  (`fill_whisper_padding` gives them the value Whisper's own 30 s zero padding would, for
  pretrained Whisper encoders).
* **SpecAugment** (`spec_augment`): frequency and time masks drawn per example from an explicit
  key, applied to valid frames only.

Dimension letters: B batch, N samples, T frames, M mel bins, F FFT bins (n_fft // 2 + 1),
K samples per analysis window.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.fft
import soundfile
import soxr

from mdm_asr_jax import paths

SAMPLE_RATE = 16000
FRAME_SECONDS = 0.01  # the 10 ms hop of every log-mel flavour here (Whisper's and NeMo's)
"""The sample rate every model in this package consumes (Hz)."""

FEATURE_KINDS = ("whisper", "nemo")
_WHISPER_NUM_MELS = (80, 128)
_NEMO_LOG_GUARD = 2.0**-24
_NEMO_STD_EPS = 1e-5
_WHISPER_LOG_FLOOR = 1e-10


class AudioError(ValueError):
    """An audio input cannot be used (missing, unreadable, empty or non-finite)."""


class NonFiniteAudioError(AudioError):
    """Audio whose samples include NaN or infinity (reported apart: the file decodes, but its
    content is broken)."""


# ---------------------------------------------------------------------------------------------
# Loading and writing audio
# ---------------------------------------------------------------------------------------------


def _check_sample_rate(sample_rate: Any, name: str = "sample_rate") -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise ValueError(f"{name} must be a positive integer in Hz, got {sample_rate!r}")
    if sample_rate <= 0:
        raise ValueError(f"{name} must be a positive integer in Hz, got {sample_rate}")
    return int(sample_rate)


def _to_mono_resampled(
    data: np.ndarray, file_rate: int, sample_rate: int, source: str
) -> np.ndarray:
    """[N, C] float -> [N'] float32 mono at `sample_rate`; AudioError for empty / non-finite."""
    if data.shape[0] == 0:
        raise AudioError(
            f"audio {source} contains no samples (0 frames); remove it from the manifest or "
            "replace it with a non-empty recording"
        )
    if not np.all(np.isfinite(data)):
        raise NonFiniteAudioError(
            f"audio {source} contains NaN or infinite samples; re-encode it (e.g. as 16-bit PCM wav)"
        )
    mono = data.mean(axis=1, dtype=np.float64).astype(np.float32)  # [N]
    if file_rate != sample_rate:
        mono = soxr.resample(mono, file_rate, sample_rate, quality="VHQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_audio(path: str | os.PathLike, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read an audio file as float32 mono at `sample_rate` Hz.

    Any format libsndfile reads (wav, flac, ogg, ...), any sample rate, integer PCM (scaled to
    [-1, 1)) or float PCM (kept as stored). Channels are averaged; the result is resampled with
    soxr at its "VHQ" quality setting when the file's rate differs.

    Args:
      path: the audio file.
      sample_rate: output rate in Hz (default 16 kHz, what the models expect).

    Returns:
      np.ndarray float32 [N].

    Raises:
      AudioError: the file is missing, unreadable or corrupt, has no samples, or holds NaN/inf.
    """
    sample_rate = _check_sample_rate(sample_rate)
    path_str = os.fspath(path)
    if paths.is_remote(path_str):  # gs://: read the object, decode it in memory
        remote = paths.resolve(path_str, "audio")
        if not remote.is_file():
            raise AudioError(f"audio file not found: {path_str!r}; check the path")
        return decode_audio_bytes(remote.read_bytes(), sample_rate, repr(path_str))
    if not os.path.exists(path_str):
        raise AudioError(
            f"audio file not found: {path_str!r}; check the path (manifest paths are relative to "
            "the manifest's folder)"
        )
    if os.path.isdir(path_str):
        raise AudioError(f"audio path {path_str!r} is a directory; give the path of an audio file")
    try:
        data, file_rate = soundfile.read(path_str, dtype="float32", always_2d=True)  # [N, C]
    except (soundfile.SoundFileError, RuntimeError, OSError) as error:
        raise AudioError(
            f"cannot read audio file {path_str!r} ({error}); it is corrupt or not in a format "
            "libsndfile reads (wav, flac, ogg): re-encode it, e.g. as 16-bit PCM wav"
        ) from error
    return _to_mono_resampled(data, int(file_rate), sample_rate, repr(path_str))


def decode_audio_bytes(
    data: bytes, sample_rate: int = SAMPLE_RATE, name: str = "<bytes>"
) -> np.ndarray:
    """Decode an encoded audio file held in memory (e.g. a TFDS record) like `load_audio`.

    Args:
      data: the bytes of a wav / flac / ogg file.
      sample_rate: output rate in Hz.
      name: how to name this input in error messages (e.g. the record id).

    Returns:
      np.ndarray float32 [N] mono at `sample_rate`.
    """
    sample_rate = _check_sample_rate(sample_rate)
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise AudioError(f"audio {name}: expected encoded bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise AudioError(f"audio {name} is empty (0 bytes); the record holds no audio file")
    try:
        decoded, file_rate = soundfile.read(
            io.BytesIO(bytes(data)), dtype="float32", always_2d=True
        )
    except (soundfile.SoundFileError, RuntimeError, OSError) as error:
        raise AudioError(
            f"cannot decode audio {name} ({error}); the bytes are corrupt or not a wav/flac/ogg file"
        ) from error
    return _to_mono_resampled(decoded, int(file_rate), sample_rate, name)


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write float audio [N] (mono) or [N, C] as a 16-bit PCM wav, clipping to [-1, 1]."""
    sample_rate = _check_sample_rate(sample_rate)
    audio = np.asarray(audio)
    if audio.ndim not in (1, 2):
        raise ValueError(f"audio must be [N] or [N, channels], got shape {audio.shape}")
    if not np.all(np.isfinite(audio)):
        raise ValueError("audio contains NaN or infinite samples; cannot write it as PCM")
    clipped = np.clip(audio.astype(np.float32), -1.0, 1.0)
    soundfile.write(os.fspath(path), clipped, sample_rate, subtype="PCM_16", format="WAV")


# ---------------------------------------------------------------------------------------------
# Feature configuration and mel filterbank
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Which log-mel features to compute; window, hop and n_fft follow from `kind`.

    Attributes:
      kind: "whisper" (Whisper-compatible) or "nemo" (NeMo / Canary-style); see module doc.
      num_mels: mel bins M; 80 or 128 for whisper (128 for large-v3), 8..256 for nemo.
      sample_rate: input sample rate; whisper needs 16000, nemo derives 25 ms / 10 ms from it.
      dither: nemo only. Std of Gaussian noise added to the waveform (NeMo trains with 1e-5).
        Applied only when a random generator / key is passed to the feature function, so
        inference stays deterministic.
      preemphasis: nemo only. Pre-emphasis coefficient (y[n] = x[n] - p x[n-1]); 0 disables it.
    """

    kind: str = "whisper"
    num_mels: int = 80
    sample_rate: int = SAMPLE_RATE
    dither: float = 0.0
    preemphasis: float = 0.97

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field and the supported values if the config is unusable."""
        if self.kind not in FEATURE_KINDS:
            raise ValueError(
                f"FeatureConfig.kind must be one of {FEATURE_KINDS}, got {self.kind!r}"
            )
        if isinstance(self.num_mels, bool) or not isinstance(self.num_mels, (int, np.integer)):
            raise ValueError(f"FeatureConfig.num_mels must be an integer, got {self.num_mels!r}")
        _check_sample_rate(self.sample_rate, "FeatureConfig.sample_rate")
        if self.kind == "whisper":
            if self.num_mels not in _WHISPER_NUM_MELS:
                raise ValueError(
                    f"FeatureConfig.num_mels for kind='whisper' must be 80 or 128 (the Whisper "
                    f"checkpoints' front ends), got {self.num_mels}"
                )
            if self.sample_rate != SAMPLE_RATE:
                raise ValueError(
                    f"FeatureConfig.sample_rate for kind='whisper' must be {SAMPLE_RATE} (Whisper's "
                    f"filterbank is defined at 16 kHz), got {self.sample_rate}; resample the audio"
                )
        else:
            if not 8 <= self.num_mels <= 256:
                raise ValueError(
                    f"FeatureConfig.num_mels for kind='nemo' must be in [8, 256] (commonly 80 or "
                    f"128), got {self.num_mels}"
                )
            if not 8000 <= self.sample_rate <= 48000:
                raise ValueError(
                    f"FeatureConfig.sample_rate for kind='nemo' must be in [8000, 48000] Hz, got "
                    f"{self.sample_rate}"
                )
            if not (math.isfinite(self.dither) and self.dither >= 0.0):
                raise ValueError(f"FeatureConfig.dither must be >= 0, got {self.dither}")
            if not (math.isfinite(self.preemphasis) and 0.0 <= self.preemphasis < 1.0):
                raise ValueError(
                    f"FeatureConfig.preemphasis must be in [0, 1), got {self.preemphasis}"
                )
            empty = ~np.any(
                _mel_filterbank(self.sample_rate, self.n_fft, self.num_mels) > 0, axis=1
            )
            if np.any(empty):
                raise ValueError(
                    f"FeatureConfig.num_mels={self.num_mels} is too many for n_fft={self.n_fft}: "
                    f"{int(empty.sum())} mel filters cover no FFT bin; use fewer mel bins"
                )

    @property
    def win_length(self) -> int:
        """Analysis window length K in samples (400 at 16 kHz for both kinds)."""
        if self.kind == "whisper":
            return 400
        return int(round(0.025 * self.sample_rate))

    @property
    def hop_length(self) -> int:
        """Frame shift in samples (10 ms)."""
        if self.kind == "whisper":
            return 160
        return int(round(FRAME_SECONDS * self.sample_rate))

    @property
    def n_fft(self) -> int:
        """FFT size: 400 for whisper, the next power of two above the window for nemo (512)."""
        if self.kind == "whisper":
            return 400
        return 2 ** math.ceil(math.log2(self.win_length))

    @property
    def frame_rate(self) -> float:
        """Frames per second (100 at 10 ms hop)."""
        return self.sample_rate / self.hop_length

    def num_frames(self, num_samples: Any) -> Any:
        """Frames T produced from `num_samples` samples (int, or an integer array elementwise).

        whisper: N // hop (the centred STFT gives 1 + N // hop; Whisper drops the last frame).
        nemo: N // hop. NeMo's centred STFT computes 1 + N // hop frames but its
        `get_seq_len` keeps N // hop of them: the last one is treated as padding (zeroed and left
        out of the per-feature normalisation statistics), checked against NeMo in tests/nemo.
        """
        return num_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for JSON (round-trips through `from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureConfig:
        """Build from `to_dict` output; unknown keys are an error (a config from another version)."""
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"FeatureConfig got unknown keys {unknown}; known keys are {sorted(known)}"
            )
        return cls(**values)


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / (200.0 / 3.0)
    log_step = math.log(6.4) / 27.0
    logarithmic = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / log_step
    return np.where(hz >= 1000.0, logarithmic, linear)


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel_slaney`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * (200.0 / 3.0)
    log_step = math.log(6.4) / 27.0
    logarithmic = 1000.0 * np.exp(log_step * (mel - 15.0))
    return np.where(mel >= 15.0, logarithmic, linear)


@functools.lru_cache(maxsize=32)
def _mel_filterbank(sample_rate: int, n_fft: int, num_mels: int) -> np.ndarray:
    """Slaney-scale, Slaney-normalised triangular filters, 0 Hz .. sample_rate / 2.

    Returns float64 [M, F], F = n_fft // 2 + 1 (read-only; cached). Filter m rises from mel point
    m to m + 1 and falls to m + 2 (M + 2 points evenly spaced in mel), scaled by
    2 / (width in Hz) so every filter has roughly the same energy.
    """
    fft_hz = np.arange(n_fft // 2 + 1, dtype=np.float64) * sample_rate / n_fft  # [F]
    mel_points = np.linspace(
        _hz_to_mel_slaney(0.0), _hz_to_mel_slaney(sample_rate / 2.0), num_mels + 2
    )
    hz_points = _mel_to_hz_slaney(mel_points)  # [M + 2]
    lower, center, upper = hz_points[:-2, None], hz_points[1:-1, None], hz_points[2:, None]
    rising = (fft_hz[None, :] - lower) / (center - lower)  # [M, F]
    falling = (upper - fft_hz[None, :]) / (upper - center)  # [M, F]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= 2.0 / (upper - lower)
    weights.setflags(write=False)
    return weights


def mel_filterbank(config: FeatureConfig) -> np.ndarray:
    """The config's mel filterbank as float32 [M, F] (F = n_fft // 2 + 1)."""
    return _mel_filterbank(config.sample_rate, config.n_fft, config.num_mels).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _window(kind: str, win_length: int) -> np.ndarray:
    """Hann window [K]: periodic for whisper (torch.hann_window default), symmetric for nemo."""
    denominator = win_length if kind == "whisper" else win_length - 1
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(win_length) / denominator)
    window.setflags(write=False)
    return window


# ---------------------------------------------------------------------------------------------
# Log-mel features: one implementation over an array module (numpy or jax.numpy)
# ---------------------------------------------------------------------------------------------


def _frame_sample_indices(num_frames: int, config: FeatureConfig) -> np.ndarray:
    """Sample index (relative to the unpadded signal) of each window tap: int64 [T, K].

    The centred STFT puts frame t's n_fft-long segment at t * hop - n_fft // 2; the window sits
    in the middle of that segment, so only its K samples matter (zero-padding a frame to n_fft
    and where the zeros go change the FFT phase, not its magnitude).
    """
    start = -(config.n_fft // 2) + (config.n_fft - config.win_length) // 2
    frames = np.arange(num_frames, dtype=np.int64)[:, None] * config.hop_length
    return frames + start + np.arange(config.win_length, dtype=np.int64)[None, :]


def _log_mel_batch(
    xp: Any,
    audio: Any,  # [B, N] float
    lengths: Any,  # [B] int
    config: FeatureConfig,
    noise: Any | None,  # [B, N] standard normal or None
) -> Any:
    """Shared numpy / jnp implementation of both flavours; returns [B, T, M] in audio's dtype."""
    batch, total = audio.shape
    num_frames = int(config.num_frames(total))
    dtype = audio.dtype
    if num_frames == 0:
        return xp.zeros((batch, 0, config.num_mels), dtype)
    if total == 0:  # gathers need one sample to index; every tap is masked out below anyway
        audio = xp.zeros((batch, 1), dtype)
        total = 1
    sample_ids = xp.arange(total)[None, :]  # [1, N]
    in_row = sample_ids < lengths[:, None]  # [B, N]

    if config.kind == "nemo":
        if noise is not None and config.dither > 0.0:
            audio = audio + xp.asarray(config.dither, dtype) * noise
        if config.preemphasis > 0.0:
            previous = xp.concatenate([audio[:, :1] * 0, audio[:, :-1]], axis=1)
            shifted = audio - xp.asarray(config.preemphasis, dtype) * previous
            audio = xp.concatenate([audio[:, :1], shifted[:, 1:]], axis=1)
        audio = xp.where(in_row, audio, xp.zeros((), dtype))

    taps = xp.asarray(_frame_sample_indices(num_frames, config))  # [T, K]
    taps = xp.broadcast_to(taps[None], (batch, *taps.shape))  # [B, T, K]
    row_length = lengths[:, None, None]  # [B, 1, 1]
    if config.kind == "whisper":
        # Reflect padding at both ends of each row's own samples (period 2 * (length - 1)).
        period = xp.maximum(2 * (row_length - 1), 1)
        folded = xp.mod(taps, period)
        source = xp.where(folded < row_length, folded, period - folded)
        tap_valid = xp.broadcast_to(row_length > 0, taps.shape)
    else:
        # Zero padding: taps outside [0, length) read zeros.
        source = taps
        tap_valid = (taps >= 0) & (taps < row_length)
    source = xp.clip(source, 0, total - 1)
    gathered = xp.take_along_axis(audio, source.reshape(batch, -1), axis=1)
    frames = xp.where(tap_valid, gathered.reshape(taps.shape), xp.zeros((), dtype))  # [B,T,K]

    window = xp.asarray(_window(config.kind, config.win_length), dtype)  # [K]
    spectrum = xp.fft.rfft(frames * window, n=config.n_fft, axis=-1)  # [B, T, F]
    power = xp.real(spectrum) ** 2 + xp.imag(spectrum) ** 2
    filters = xp.asarray(
        _mel_filterbank(config.sample_rate, config.n_fft, config.num_mels).T, dtype
    )
    if xp is jnp:
        mel = jnp.matmul(power, filters, precision=jax.lax.Precision.HIGHEST)  # [B, T, M]
    else:
        mel = power @ filters  # [B, T, M]

    frame_valid = xp.arange(num_frames)[None, :] < config.num_frames(lengths)[:, None]  # [B, T]
    frame_valid_3d = frame_valid[:, :, None]
    zero = xp.zeros((), dtype)
    if config.kind == "whisper":
        log_mel = xp.log10(xp.maximum(mel, xp.asarray(_WHISPER_LOG_FLOOR, dtype)))
        masked_log_mel = xp.where(frame_valid_3d, log_mel, xp.asarray(-xp.inf, dtype))
        row_max = xp.max(masked_log_mel, axis=(1, 2), keepdims=True)  # [B, 1, 1]
        log_mel = xp.maximum(log_mel, row_max - 8.0)
        features = (log_mel + 4.0) / 4.0
    else:
        log_mel = xp.log(mel + xp.asarray(_NEMO_LOG_GUARD, dtype))
        count = xp.sum(frame_valid, axis=1).astype(dtype)[:, None, None]  # [B, 1, 1]
        mean = xp.sum(xp.where(frame_valid_3d, log_mel, zero), axis=1, keepdims=True) / xp.maximum(
            count, 1.0
        )
        centred = xp.where(frame_valid_3d, log_mel - mean, zero)
        variance = xp.sum(centred**2, axis=1, keepdims=True) / xp.maximum(count - 1.0, 1.0)
        features = centred / (xp.sqrt(variance) + xp.asarray(_NEMO_STD_EPS, dtype))
    return xp.where(frame_valid_3d, features, zero)


def _check_host_audio(audio: Any) -> np.ndarray:
    audio = np.asarray(audio)
    if audio.ndim != 1:
        raise ValueError(f"audio must be 1-D [N] mono samples, got shape {audio.shape}")
    if not np.issubdtype(audio.dtype, np.floating):
        raise ValueError(f"audio must be floating point in [-1, 1], got dtype {audio.dtype}")
    return audio


def _dither_noise(
    rng: np.random.Generator | None, config: FeatureConfig, num_samples: int
) -> np.ndarray | None:
    """Standard normal noise [1, N] for nemo dither (the same draws on both host paths)."""
    if rng is None or config.kind != "nemo" or config.dither <= 0.0:
        return None
    return rng.standard_normal((1, num_samples))


def log_mel_reference(
    audio: np.ndarray, config: FeatureConfig, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Log-mel of one utterance by the shared numpy / jnp implementation, in float64.

    The reference the fast host path (`log_mel_numpy`) and the device path (`log_mel_jax`) are
    checked against: the same code as `log_mel_jax` (index gathers, masks), run by numpy in
    float64. About 5x slower than `log_mel_numpy`; use it in tests and parity checks.

    Args:
      audio: float [N] mono at `config.sample_rate`.
      config: which features.
      rng: only for nemo with `config.dither > 0`: source of the dither noise (training).

    Returns:
      np.ndarray float32 [T, M], T = config.num_frames(N).
    """
    audio = _check_host_audio(audio)
    batch_audio = audio.astype(np.float64)[None, :]  # [1, N]
    noise = _dither_noise(rng, config, audio.shape[0])
    lengths = np.array([audio.shape[0]], dtype=np.int64)
    features = _log_mel_batch(np, batch_audio, lengths, config, noise)
    return features[0].astype(np.float32)


_MELS_PER_BAND = 16
"""Mel filters per matmul of `_mel_of_frames` (8..16 measured alike for 80 mels; 40 slower)."""
_FRAMES_PER_BLOCK = 256
"""Frames per block of `_mel_of_frames` (128..256 measured alike; 64 loses to call overhead)."""
_GEMM_SINGLE_THREAD_MACS = 1 << 18
"""Multiply-adds per matmul call kept at or below this: OpenBLAS runs such a gemm on one thread.
Above it, it starts threads that contend with the pipeline's other workers (measured: the
host features ran ~10x slower as one 400 x 201 x 80 matmul than as these small ones)."""


@dataclasses.dataclass(frozen=True)
class _MelBand:
    """Consecutive mel filters [first_mel, end_mel) and the spectrum columns they read."""

    first_mel: int
    end_mel: int
    first_column: int  # in the interleaved (re^2, im^2) layout: 2 * FFT bin
    end_column: int
    weights: np.ndarray  # [end_column - first_column, end_mel - first_mel]


@functools.lru_cache(maxsize=8)
def _host_constants(config: FeatureConfig, dtype: str) -> tuple[np.ndarray, tuple[_MelBand, ...]]:
    """Window [K] and the banded filterbank in `dtype` for `log_mel_numpy` (cached).

    A mel filter is nonzero on a short run of FFT bins, so the [F, M] filterbank matmul is cut
    into bands of `_MELS_PER_BAND` filters, each reading only the columns its filters cover
    (whisper 80 mels: 6 624 multiply-adds per frame instead of 16 080). Each filter row is
    repeated for the real and the imaginary part, so the bands read the squared spectrum as
    stored (complex values viewed as interleaved floats): sum of re^2 and im^2 is the power.
    """
    window = _window(config.kind, config.win_length).astype(dtype)
    window.setflags(write=False)
    filters = _mel_filterbank(config.sample_rate, config.n_fft, config.num_mels)  # [M, F]
    bands = []
    for first in range(0, config.num_mels, _MELS_PER_BAND):
        end = min(first + _MELS_PER_BAND, config.num_mels)
        bins = np.flatnonzero(np.any(filters[first:end] > 0, axis=0))
        low, high = (int(bins[0]), int(bins[-1]) + 1) if bins.size else (0, 1)
        weights = np.repeat(filters[first:end, low:high].T, 2, axis=0)  # [2 (high - low), m]
        weights = np.ascontiguousarray(weights, dtype=dtype)
        weights.setflags(write=False)
        bands.append(_MelBand(first, end, 2 * low, 2 * high, weights))
    return window, tuple(bands)


def _mel_of_frames(
    frames: np.ndarray, window: np.ndarray, bands: tuple[_MelBand, ...], config: FeatureConfig
) -> np.ndarray:
    """Mel energies [T, M] of the frames [T, K], `_FRAMES_PER_BLOCK` frames at a time.

    Per block: window, FFT, square (the complex spectrum viewed as interleaved floats), then the
    banded filterbank matmuls. Blocks keep the intermediates in cache (measured ~1.4x faster
    than whole-utterance passes on 4 s utterances).
    """
    num_frames = frames.shape[0]
    dtype = window.dtype
    rfft = scipy.fft.rfft if dtype == np.float32 else np.fft.rfft  # the faster one per dtype
    mel = np.empty((num_frames, config.num_mels), dtype)
    for start in range(0, num_frames, _FRAMES_PER_BLOCK):
        block = slice(start, start + _FRAMES_PER_BLOCK)
        spectrum = rfft(frames[block] * window, n=config.n_fft, axis=-1)  # [b, F] complex
        squared = np.square(spectrum.view(dtype))  # [b, 2F]: re^2, im^2 interleaved
        block_mel = mel[block]  # [b, M] view
        for band in bands:
            columns = squared[:, band.first_column : band.end_column]
            rows = max(1, _GEMM_SINGLE_THREAD_MACS // band.weights.size)
            for first in range(0, columns.shape[0], rows):
                block_mel[first : first + rows, band.first_mel : band.end_mel] = (
                    columns[first : first + rows] @ band.weights
                )
    return mel


def _padded_signal(signal: np.ndarray, half: int, reflect: bool) -> np.ndarray:
    """[N] -> [N + 2 half]: reflect padding (whisper) or zeros (nemo) at both ends."""
    size = signal.shape[0]
    if not reflect:
        padded = np.zeros(size + 2 * half, signal.dtype)
        padded[half : half + size] = signal
        return padded
    if size <= half:
        # np.pad reflects again and again when the signal is shorter than the pad, as the
        # reference's periodic fold does; a 1-sample signal reflects to a constant.
        return np.pad(signal, half, mode="reflect" if size > 1 else "edge")
    padded = np.empty(size + 2 * half, signal.dtype)
    padded[half : half + size] = signal
    padded[:half] = signal[half:0:-1]
    padded[half + size :] = signal[-2 : -half - 2 : -1]
    return padded


def log_mel_numpy(
    audio: np.ndarray, config: FeatureConfig, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Log-mel features of one utterance on the host (the input pipeline's path).

    Same features as `log_mel_reference` to 1e-4 (tests/test_audio.py), several times faster, so
    that featurising costs about what decoding and resampling the audio costs
    (`benchmarks/input_pipeline.py`). Where the reference spends its time, and what this does
    instead: index arithmetic and gathers over [T, K] int64 tap indices (here: a strided view of
    the padded signal), float64 FFTs (here: float32 for whisper), a separate power pass and a
    dense, multi-threaded [F, M] filterbank matmul (here: small single-threaded matmuls over the
    filters' bands, reading the squared spectrum in place; see `_host_constants`), all in
    whole-utterance passes (here: blocks of frames that stay in cache).

    Precision: whisper computes in float32 (FFT by `scipy.fft`, a dependency of jax; numpy's
    float32 FFT is several times slower, its float64 one faster than scipy's): its clamp at
    (max - 8) bounds the dynamic range to 80 dB, above float32 rounding. nemo stays in float64:
    nothing clamps its range and the per-bin normalisation divides by each bin's std, which for
    near-stationary or near-silent bins is small enough to magnify float32 rounding of the FFT
    and the log past 1e-4 (measured up to ~1e-3 on short utterances and on 8 kHz recordings'
    empty upper bins).

    Args:
      audio: float [N] mono at `config.sample_rate`.
      config: which features.
      rng: only for nemo with `config.dither > 0`: source of the dither noise (training).

    Returns:
      np.ndarray float32 [T, M], T = config.num_frames(N).
    """
    audio = _check_host_audio(audio)
    num_samples = audio.shape[0]
    num_frames = int(config.num_frames(num_samples))
    if num_frames == 0:
        return np.zeros((0, config.num_mels), np.float32)
    dtype = np.float32 if config.kind == "whisper" else np.float64
    window, bands = _host_constants(config, np.dtype(dtype).name)
    signal = audio.astype(dtype, copy=False)
    if config.kind == "nemo":
        noise = _dither_noise(rng, config, num_samples)
        if noise is not None:
            signal = signal + config.dither * noise[0]
        if config.preemphasis > 0.0:
            signal = np.concatenate([signal[:1], signal[1:] - config.preemphasis * signal[:-1]])
    padded = _padded_signal(signal, config.n_fft // 2, reflect=config.kind == "whisper")
    # Frame t reads padded[t * hop + offset : ... + K]: the window sits mid-segment (see
    # _frame_sample_indices); the segment's zeros change the FFT phase, not its magnitude.
    offset = (config.n_fft - config.win_length) // 2
    frames = np.lib.stride_tricks.sliding_window_view(padded[offset:], config.win_length)
    frames = frames[:: config.hop_length][:num_frames]  # [T, K] view, no copy
    mel = _mel_of_frames(frames, window, bands, config)  # [T, M]
    if config.kind == "whisper":
        log_mel = np.log(np.maximum(mel, dtype(_WHISPER_LOG_FLOOR))) * dtype(1.0 / math.log(10.0))
        log_mel = np.maximum(log_mel, log_mel.max() - dtype(8.0))
        return (log_mel + dtype(4.0)) / dtype(4.0)
    log_mel = np.log(mel + _NEMO_LOG_GUARD)
    centred = log_mel - log_mel.mean(axis=0, keepdims=True)
    variance = np.square(centred).sum(axis=0, keepdims=True) / max(num_frames - 1, 1)
    return (centred / (np.sqrt(variance) + _NEMO_STD_EPS)).astype(np.float32)


@functools.partial(jax.jit, static_argnames=("config",))
def _log_mel_jax_jit(
    audio: jax.Array, lengths: jax.Array, config: FeatureConfig, key: jax.Array | None
) -> jax.Array:
    noise = None
    if key is not None and config.kind == "nemo" and config.dither > 0.0:
        noise = jax.random.normal(key, audio.shape, audio.dtype)
    return _log_mel_batch(jnp, audio, lengths, config, noise)


def log_mel_jax(
    audio: jax.Array | np.ndarray,
    lengths: jax.Array | np.ndarray | None,
    config: FeatureConfig,
    key: jax.Array | None = None,
) -> jax.Array:
    """Log-mel features of a padded batch on device (float32, jitted; agrees with log_mel_numpy).

    Args:
      audio: [B, N] float samples, each row zero-padded (any padding value works) after its
        `lengths[b]` valid samples.
      lengths: [B] int valid samples per row, or None when every row is N samples long.
      config: which features (static under jit; a new config compiles a new function).
      key: only for nemo with `config.dither > 0`: PRNG key for the dither noise (training).

    Returns:
      [B, T, M] float32, T = config.num_frames(N); frames at or after
      config.num_frames(lengths[b]) are 0.
    """
    audio = jnp.asarray(audio, jnp.float32)
    if audio.ndim != 2:
        raise ValueError(f"audio must be [B, N] (a batch of mono rows), got shape {audio.shape}")
    if lengths is None:
        lengths = jnp.full((audio.shape[0],), audio.shape[1], jnp.int32)
    lengths = jnp.asarray(lengths)
    if lengths.shape != (audio.shape[0],):
        raise ValueError(
            f"lengths must be [B] = [{audio.shape[0]}] valid sample counts, got shape {lengths.shape}"
        )
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise ValueError(f"lengths must be integers, got dtype {lengths.dtype}")
    if not isinstance(lengths, jax.core.Tracer):
        concrete = np.asarray(lengths)
        if concrete.size and (concrete.min() < 0 or concrete.max() > audio.shape[1]):
            raise ValueError(
                f"lengths must lie in [0, N={audio.shape[1]}] (valid samples per row), got "
                f"min {concrete.min()} max {concrete.max()}"
            )
    return _log_mel_jax_jit(audio, lengths.astype(jnp.int32), config, key)


def fill_whisper_padding(features: Any, feature_mask: Any) -> jax.Array:
    """Give padded frames of Whisper features the value Whisper's own padding would have.

    OpenAI Whisper zero-pads audio to 30 s before its STFT; a silent frame's log-mel sits at the
    clamp floor, log max - 8, i.e. (row max feature) - 2 after the (x + 4) / 4 scaling. Our
    features put 0 on padded frames instead. Use this before a pretrained Whisper encoder that
    reads the padded frames (fixed 3000-frame inputs); the frames next to the end of the speech
    still differ slightly (ours reflect the speech, Whisper's read zeros).

    Args:
      features: [B, T, M] whisper-kind features (numpy or jax).
      feature_mask: [B, T] bool, True on valid frames.

    Returns:
      [B, T, M] jax array: valid frames unchanged, padded frames at each row's floor.
    """
    features = jnp.asarray(features)
    valid = jnp.asarray(feature_mask, bool)[:, :, None]  # [B, T, 1]
    row_max = jnp.max(jnp.where(valid, features, -jnp.inf), axis=(1, 2), keepdims=True)
    floor = jnp.where(jnp.isfinite(row_max), row_max - 2.0, (-10.0 + 4.0) / 4.0)  # [B, 1, 1]
    return jnp.where(valid, features, floor.astype(features.dtype))


# ---------------------------------------------------------------------------------------------
# SpecAugment
# ---------------------------------------------------------------------------------------------


def _span_mask(
    key: jax.Array, num_spans: int, max_width: jax.Array, extent: jax.Array, size: int
) -> jax.Array:
    """Union of `num_spans` random spans per row: bool [B, size].

    Each span's width is uniform in [0, max_width[b]] and its start uniform in
    [0, extent[b] - width], so spans stay inside the first extent[b] positions.
    """
    batch = extent.shape[0]
    width_key, start_key = jax.random.split(key)
    unit_width = jax.random.uniform(width_key, (batch, num_spans))
    width = jnp.floor(unit_width * (max_width[:, None] + 1)).astype(jnp.int32)  # [B, S]
    width = jnp.minimum(width, jnp.maximum(extent[:, None], 0))
    unit_start = jax.random.uniform(start_key, (batch, num_spans))
    room = jnp.maximum(extent[:, None] - width + 1, 1)
    start = jnp.floor(unit_start * room).astype(jnp.int32)  # [B, S]
    position = jnp.arange(size)[None, None, :]  # [1, 1, size]
    inside = (position >= start[..., None]) & (position < (start + width)[..., None])
    return jnp.any(inside, axis=1)  # [B, size]


@functools.partial(
    jax.jit,
    static_argnames=(
        "num_freq_masks",
        "freq_width",
        "num_time_masks",
        "time_width_ratio",
        "max_time_width",
    ),
)
def _spec_augment_jit(
    key: jax.Array,
    features: jax.Array,
    feature_mask: jax.Array,
    mask_value: jax.Array,
    num_freq_masks: int,
    freq_width: int,
    num_time_masks: int,
    time_width_ratio: float,
    max_time_width: int | None,
) -> jax.Array:
    batch, num_frames, num_mels = features.shape
    freq_key, time_key = jax.random.split(key)
    valid = feature_mask.astype(bool)  # [B, T]
    masked = jnp.zeros((batch, num_frames, num_mels), bool)
    if num_freq_masks > 0 and freq_width > 0:
        freq = _span_mask(
            freq_key,
            num_freq_masks,
            jnp.full((batch,), freq_width, jnp.int32),
            jnp.full((batch,), num_mels, jnp.int32),
            num_mels,
        )  # [B, M]
        masked = masked | freq[:, None, :]
    if num_time_masks > 0 and time_width_ratio > 0.0:
        valid_frames = jnp.sum(valid, axis=1).astype(jnp.int32)  # [B]
        widest = jnp.maximum(
            jnp.floor(time_width_ratio * valid_frames.astype(jnp.float32)).astype(jnp.int32), 1
        )
        if max_time_width is not None:
            widest = jnp.minimum(widest, max_time_width)
        time = _span_mask(time_key, num_time_masks, widest, valid_frames, num_frames)  # [B, T]
        masked = masked | time[:, :, None]
    masked = masked & valid[:, :, None]
    return jnp.where(masked, mask_value.astype(features.dtype), features)


def spec_augment(
    key: jax.Array,
    features: jax.Array,
    feature_mask: jax.Array,
    num_freq_masks: int = 2,
    freq_width: int = 27,
    num_time_masks: int = 10,
    time_width_ratio: float = 0.05,
    max_time_width: int | None = None,
    mask_value: float = 0.0,
) -> jax.Array:
    """SpecAugment frequency and time masking (Park et al. 2019; NeMo / Canary defaults).

    For every example independently: `num_freq_masks` bands of width ~ U{0..freq_width} mel bins
    and `num_time_masks` spans of width ~ U{0..max(1, floor(time_width_ratio * valid frames))}
    frames (capped at `max_time_width` when given) are set to `mask_value`. Time spans lie inside
    the example's valid frames; padding frames (feature_mask False) are never changed. Jittable;
    the integer / ratio arguments are static.

    Args:
      key: PRNG key; the same key gives the same masks.
      features: [B, T, M] float features (normalised, so 0 is the mean).
      feature_mask: [B, T] bool, True on valid frames (valid frames first in each row).
      mask_value: the value written into masked cells.

    Returns:
      [B, T, M] features with the masks applied.
    """
    features = jnp.asarray(features)
    feature_mask = jnp.asarray(feature_mask)
    if features.ndim != 3:
        raise ValueError(f"features must be [B, T, M], got shape {features.shape}")
    if feature_mask.shape != features.shape[:2]:
        raise ValueError(
            f"feature_mask must be [B, T] = {features.shape[:2]}, got shape {feature_mask.shape}"
        )
    for name, value in (
        ("num_freq_masks", num_freq_masks),
        ("freq_width", freq_width),
        ("num_time_masks", num_time_masks),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"spec_augment {name} must be a non-negative integer, got {value!r}")
    if not 0.0 <= float(time_width_ratio) <= 1.0:
        raise ValueError(f"spec_augment time_width_ratio must be in [0, 1], got {time_width_ratio}")
    if max_time_width is not None and (not isinstance(max_time_width, int) or max_time_width < 0):
        raise ValueError(
            f"spec_augment max_time_width must be None or a non-negative int, got {max_time_width!r}"
        )
    return _spec_augment_jit(
        key,
        features,
        feature_mask,
        jnp.asarray(mask_value, jnp.float32),
        num_freq_masks=int(num_freq_masks),
        freq_width=int(freq_width),
        num_time_masks=int(num_time_masks),
        time_width_ratio=float(time_width_ratio),
        max_time_width=max_time_width,
    )
