"""Tests of the audio front end: loading, Whisper / NeMo log-mel, SpecAugment."""

from __future__ import annotations

import os

import jax
import numpy as np
import pytest
import soundfile

from mdm_asr_jax import audio

FSDD_FILE = os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data", "fsdd", "3_george_0.wav"
)
needs_fsdd = pytest.mark.skipif(not os.path.exists(FSDD_FILE), reason="FSDD recording not found")

# Three utterances for batch tests; the batch is padded to BATCH_SAMPLES.
BATCH_SAMPLES = 16000


def _chirp(num_samples: int, seed: int) -> np.ndarray:
    """A 100 Hz -> 6 kHz chirp plus a little noise: energy in every mel band."""
    rng = np.random.default_rng(seed)
    time = np.arange(num_samples) / audio.SAMPLE_RATE
    sweep = 0.3 * np.sin(2 * np.pi * (100 * time + 0.5 * (5900 / time[-1]) * time**2))
    return (sweep + 0.01 * rng.standard_normal(num_samples)).astype(np.float32)


@pytest.fixture(scope="module")
def fsdd_audio() -> np.ndarray:
    if not os.path.exists(FSDD_FILE):
        pytest.skip("FSDD recording not found")
    return audio.load_audio(FSDD_FILE)


@pytest.fixture(scope="module")
def utterances(fsdd_audio: np.ndarray) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(5000)).astype(np.float32)
    return [fsdd_audio, noise, _chirp(12345, seed=1)]


def _padded_batch(signals: list[np.ndarray], pad_values: np.ndarray | None = None):
    batch = np.zeros((len(signals), BATCH_SAMPLES), np.float32)
    if pad_values is not None:
        batch[:] = pad_values
    for row, signal in enumerate(signals):
        batch[row, : len(signal)] = signal
    lengths = np.array([len(signal) for signal in signals], np.int32)
    return batch, lengths


# --- Whisper parity with the faster-whisper reference -------------------------------------------


@pytest.mark.parametrize("num_mels", [80, 128])
def test_whisper_log_mel_matches_faster_whisper_reference(fsdd_audio, num_mels):
    feature_extractor_module = pytest.importorskip("faster_whisper.feature_extractor")
    reference = feature_extractor_module.FeatureExtractor(feature_size=num_mels)
    config = audio.FeatureConfig(kind="whisper", num_mels=num_mels)
    for signal in (fsdd_audio, _chirp(24000, seed=2), _chirp(16000, seed=3)):
        ours = audio.log_mel_numpy(signal, config)  # [T, M]
        # padding=0: no extra samples, so the reference sees exactly our signal.
        expected = reference(signal, padding=0).T  # [T, M]
        assert ours.shape == expected.shape == (config.num_frames(len(signal)), num_mels)
        np.testing.assert_allclose(ours, expected, atol=1e-4, rtol=0)


def test_one_second_gives_one_hundred_whisper_frames():
    config = audio.FeatureConfig(kind="whisper")
    assert audio.log_mel_numpy(_chirp(16000, seed=0), config).shape == (100, 80)


@pytest.mark.parametrize("num_mels", [80, 128])
def test_mel_filterbank_matches_reference_filters(num_mels):
    feature_extractor_module = pytest.importorskip("faster_whisper.feature_extractor")
    expected = feature_extractor_module.FeatureExtractor.get_mel_filters(16000, 400, num_mels)
    ours = audio.mel_filterbank(audio.FeatureConfig(kind="whisper", num_mels=num_mels))
    np.testing.assert_allclose(ours, expected, atol=1e-7, rtol=1e-5)


# --- numpy vs jnp, padding invariance -----------------------------------------------------------


# NeMo's per-feature normalisation divides by each bin's std, and nothing clamps the dynamic range
# (Whisper clamps at max - 8): in bins 80+ dB below the frame's loudest bin (above 4 kHz in the
# 8 kHz FSDD recording, low bins of the chirp) float32 FFT rounding is a sizeable relative error
# that the division amplifies. Measured max |numpy - jnp| 2.3e-4 there; elsewhere ~1e-5.
_NUMPY_JAX_MAX_ATOL = {"whisper": 1e-4, "nemo": 5e-4}


@pytest.mark.parametrize("kind", ["whisper", "nemo"])
def test_numpy_and_jax_log_mel_agree(utterances, kind):
    config = audio.FeatureConfig(kind=kind, num_mels=80)
    batch, lengths = _padded_batch(utterances)
    features = np.asarray(audio.log_mel_jax(batch, lengths, config))  # [B, T, M]
    assert features.shape == (3, config.num_frames(BATCH_SAMPLES), 80)
    for row, signal in enumerate(utterances):
        expected = audio.log_mel_numpy(signal, config)
        num_frames = expected.shape[0]
        np.testing.assert_allclose(
            features[row, :num_frames], expected, atol=_NUMPY_JAX_MAX_ATOL[kind], rtol=0
        )
        assert np.abs(features[row, :num_frames] - expected).mean() < 1e-5
        assert np.all(features[row, num_frames:] == 0.0)


@pytest.mark.parametrize("kind", ["whisper", "nemo"])
def test_padding_a_batch_row_does_not_change_its_valid_frames(utterances, kind):
    config = audio.FeatureConfig(kind=kind, num_mels=80)
    # Garbage (not zeros) in the padding region, to show it is never read.
    garbage = np.random.default_rng(5).uniform(-1, 1, (3, BATCH_SAMPLES)).astype(np.float32)
    batch, lengths = _padded_batch(utterances, pad_values=garbage)
    batched = np.asarray(audio.log_mel_jax(batch, lengths, config))
    shortest = utterances[1]
    alone = np.asarray(audio.log_mel_jax(shortest[None, :], None, config))[0]
    num_frames = config.num_frames(len(shortest))
    assert alone.shape[0] == num_frames
    np.testing.assert_allclose(batched[1, :num_frames], alone, atol=1e-5, rtol=0)
    assert np.all(batched[1, num_frames:] == 0.0)


@pytest.mark.parametrize("kind, num_mels", [("whisper", 80), ("whisper", 128), ("nemo", 80)])
def test_host_log_mel_equals_the_float64_reference_to_1e4(utterances, kind, num_mels):
    # Lengths around the reflect-padding edge (200 samples) and past one frame block (> 256
    # frames); the FSDD recording (8 kHz upsampled: empty upper bins) and a chirp.
    config = audio.FeatureConfig(kind=kind, num_mels=num_mels)
    rng = np.random.default_rng(7)
    signals = list(utterances) + [_chirp(48000, seed=8)]
    signals += [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in (1, 2, 150, 201, 401)]
    for signal in signals:
        fast = audio.log_mel_numpy(signal, config)
        reference = audio.log_mel_reference(signal, config)
        assert fast.dtype == np.float32 and fast.shape == reference.shape
        np.testing.assert_allclose(fast, reference, atol=1e-4, rtol=0)


def test_host_nemo_dither_draws_the_same_noise_as_the_reference():
    config = audio.FeatureConfig(kind="nemo", dither=1e-3)
    signal = _chirp(8000, seed=9)
    fast = audio.log_mel_numpy(signal, config, rng=np.random.default_rng(3))
    reference = audio.log_mel_reference(signal, config, rng=np.random.default_rng(3))
    np.testing.assert_allclose(fast, reference, atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["whisper", "nemo"])
def test_num_frames_matches_feature_length(kind):
    config = audio.FeatureConfig(kind=kind)
    for num_samples in (0, 1, 159, 160, 161, 399, 400, 401, 4000, 16000, 16001):
        signal = _chirp(max(num_samples, 2), seed=num_samples)[:num_samples]
        features = audio.log_mel_numpy(signal, config)
        assert features.shape == (config.num_frames(num_samples), config.num_mels)
        assert np.all(np.isfinite(features))


def test_nemo_features_are_normalised_per_mel_bin():
    config = audio.FeatureConfig(kind="nemo", num_mels=80)
    features = audio.log_mel_numpy(_chirp(20000, seed=4), config).astype(np.float64)
    np.testing.assert_allclose(features.mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(features.std(axis=0, ddof=1), 1.0, atol=1e-3)


def test_nemo_dither_needs_a_generator_and_changes_features():
    config = audio.FeatureConfig(kind="nemo", dither=1e-3)
    signal = _chirp(8000, seed=6)
    without = audio.log_mel_numpy(signal, config)
    np.testing.assert_array_equal(without, audio.log_mel_numpy(signal, config))
    with_dither = audio.log_mel_numpy(signal, config, rng=np.random.default_rng(0))
    assert np.abs(with_dither - without).max() > 1e-3


# --- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"kind": "mfcc"}, "kind"),
        ({"kind": "whisper", "num_mels": 64}, "num_mels"),
        ({"kind": "whisper", "sample_rate": 8000}, "sample_rate"),
        ({"kind": "nemo", "num_mels": 4}, "num_mels"),
        ({"kind": "nemo", "preemphasis": 1.5}, "preemphasis"),
    ],
)
def test_unsupported_feature_config_raises_clear_error(kwargs, field):
    with pytest.raises(ValueError, match=field):
        audio.FeatureConfig(**kwargs)


def test_feature_config_round_trips_through_dict():
    config = audio.FeatureConfig(kind="nemo", num_mels=128, dither=1e-5)
    assert audio.FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown keys"):
        audio.FeatureConfig.from_dict({"kind": "nemo", "window": "hann"})


# --- loading ------------------------------------------------------------------------------------


@needs_fsdd
def test_load_audio_resamples_8k_fsdd_to_16k_length():
    info = soundfile.info(FSDD_FILE)
    assert info.samplerate == 8000
    loaded = audio.load_audio(FSDD_FILE)
    assert loaded.dtype == np.float32 and loaded.ndim == 1
    assert loaded.shape[0] == round(info.frames * 16000 / 8000)


def test_load_audio_resampling_keeps_the_tone_frequency(tmp_path):
    rate, tone_hz = 8000, 440.0
    tone = 0.5 * np.sin(2 * np.pi * tone_hz * np.arange(rate) / rate)
    path = tmp_path / "tone_8k.wav"
    audio.write_wav(path, tone, rate)
    loaded = audio.load_audio(path)
    assert loaded.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(loaded[2000:-2000]))
    peak_hz = np.argmax(spectrum) * 16000 / len(loaded[2000:-2000])
    assert abs(peak_hz - tone_hz) < 2.0
    assert abs(np.abs(loaded[2000:-2000]).max() - 0.5) < 0.01


def test_load_audio_mixes_stereo_to_mono(tmp_path):
    rate = 16000
    left = _chirp(rate, seed=7)
    right = 0.5 * _chirp(rate, seed=8)
    path = tmp_path / "stereo.flac"
    soundfile.write(path, np.stack([left, right], axis=1), rate, subtype="PCM_24")
    loaded = audio.load_audio(path)
    np.testing.assert_allclose(loaded, (left + right) / 2, atol=1e-5)


def test_load_audio_reads_float_pcm_at_odd_rates(tmp_path):
    rate = 22050
    signal = _chirp(rate // 2, seed=9)
    path = tmp_path / "float.wav"
    soundfile.write(path, signal, rate, subtype="FLOAT")
    loaded = audio.load_audio(path)
    assert loaded.shape == (round(len(signal) * 16000 / rate),)


def test_missing_audio_file_error_names_the_path(tmp_path):
    path = tmp_path / "nowhere" / "missing.wav"
    with pytest.raises(audio.AudioError, match="not found") as error:
        audio.load_audio(path)
    assert str(path) in str(error.value)


def test_corrupt_audio_file_error_names_the_path(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(audio.AudioError, match="cannot read") as error:
        audio.load_audio(path)
    assert str(path) in str(error.value)


def test_empty_audio_file_error_names_the_path(tmp_path):
    path = tmp_path / "empty.wav"
    soundfile.write(path, np.zeros((0,), np.float32), 16000, subtype="PCM_16")
    with pytest.raises(audio.AudioError, match="no samples") as error:
        audio.load_audio(path)
    assert str(path) in str(error.value)


def test_audio_error_is_a_value_error():
    assert issubclass(audio.AudioError, ValueError)


def test_decode_audio_bytes_matches_load_audio_and_rejects_garbage(tmp_path):
    path = tmp_path / "tone.wav"
    audio.write_wav(path, _chirp(4000, seed=10), 8000)
    np.testing.assert_array_equal(
        audio.decode_audio_bytes(path.read_bytes()), audio.load_audio(path)
    )
    with pytest.raises(audio.AudioError, match="record-7"):
        audio.decode_audio_bytes(b"not audio at all" * 10, name="record-7")


# --- SpecAugment --------------------------------------------------------------------------------


def _augment_inputs():
    features = np.ones((4, 50, 40), np.float32)
    valid_frames = np.array([50, 30, 12, 0])
    feature_mask = np.arange(50)[None, :] < valid_frames[:, None]
    features[~feature_mask] = 7.0  # padding carries a distinctive value
    return features, feature_mask, valid_frames


def test_spec_augment_leaves_padding_untouched_and_is_deterministic_per_key():
    features, feature_mask, _ = _augment_inputs()
    key = jax.random.key(0)
    augmented = np.asarray(audio.spec_augment(key, features, feature_mask, num_time_masks=5))
    assert np.all(augmented[~feature_mask] == 7.0)
    assert np.any(augmented[feature_mask] == 0.0)
    again = np.asarray(audio.spec_augment(key, features, feature_mask, num_time_masks=5))
    np.testing.assert_array_equal(augmented, again)
    other = np.asarray(
        audio.spec_augment(jax.random.key(1), features, feature_mask, num_time_masks=5)
    )
    assert not np.array_equal(augmented, other)


def test_spec_augment_frequency_mask_is_one_band_within_width():
    features, feature_mask, valid_frames = _augment_inputs()
    freq_width = 9
    bands = []
    for seed in range(8):
        augmented = np.asarray(
            audio.spec_augment(
                jax.random.key(seed),
                features,
                feature_mask,
                num_freq_masks=1,
                freq_width=freq_width,
                num_time_masks=0,
            )
        )
        for row in range(3):  # rows with valid frames
            masked = augmented[row, : valid_frames[row]] == 0.0  # [T, M]
            assert np.all(masked == masked[:1])  # same bins on every valid frame
            bins = np.flatnonzero(masked[0])
            assert len(bins) <= freq_width
            if len(bins):
                assert bins[-1] - bins[0] + 1 == len(bins)  # contiguous
            bands.append(tuple(bins))
    assert len(set(bands)) > 5  # examples and keys draw different bands


def test_spec_augment_time_mask_is_one_span_within_width():
    features, feature_mask, valid_frames = _augment_inputs()
    ratio = 0.2
    masked_any = False
    for seed in range(8):
        augmented = np.asarray(
            audio.spec_augment(
                jax.random.key(seed),
                features,
                feature_mask,
                num_freq_masks=0,
                num_time_masks=1,
                time_width_ratio=ratio,
            )
        )
        for row in range(3):
            masked = augmented[row] == 0.0  # [T, M]
            assert np.all(masked == masked[:, :1])  # whole frames
            frames = np.flatnonzero(masked[:, 0])
            assert len(frames) <= max(1, int(ratio * valid_frames[row]))
            if len(frames):
                masked_any = True
                assert frames[-1] < valid_frames[row]
                assert frames[-1] - frames[0] + 1 == len(frames)
    assert masked_any


def test_spec_augment_rejects_bad_arguments():
    features, feature_mask, _ = _augment_inputs()
    with pytest.raises(ValueError, match="feature_mask"):
        audio.spec_augment(jax.random.key(0), features, feature_mask[:, :10])
    with pytest.raises(ValueError, match="time_width_ratio"):
        audio.spec_augment(jax.random.key(0), features, feature_mask, time_width_ratio=2.0)


def test_log_mel_jax_rejects_lengths_longer_than_the_batch():
    config = audio.FeatureConfig(kind="whisper")
    with pytest.raises(ValueError, match="lengths"):
        audio.log_mel_jax(np.zeros((2, 800), np.float32), np.array([800, 900]), config)


def test_fill_whisper_padding_matches_whisper_on_zero_padded_audio(fsdd_audio):
    feature_extractor_module = pytest.importorskip("faster_whisper.feature_extractor")
    config = audio.FeatureConfig(kind="whisper")
    padded_samples = 16000
    zero_padded = np.pad(fsdd_audio, (0, padded_samples - len(fsdd_audio)))
    expected = feature_extractor_module.FeatureExtractor()(zero_padded, padding=0).T  # [T, M]
    features = audio.log_mel_numpy(fsdd_audio, config)
    valid_frames = features.shape[0]
    batch = np.zeros((1, config.num_frames(padded_samples), 80), np.float32)
    batch[0, :valid_frames] = features
    feature_mask = np.arange(batch.shape[1])[None, :] < valid_frames
    filled = np.asarray(audio.fill_whisper_padding(batch, feature_mask))[0]
    np.testing.assert_array_equal(filled[:valid_frames], features)
    # Frames whose window does not reach the speech/zeros boundary agree with Whisper's padding.
    np.testing.assert_allclose(filled[: valid_frames - 2], expected[: valid_frames - 2], atol=1e-4)
    np.testing.assert_allclose(filled[valid_frames + 2 :], expected[valid_frames + 2 :], atol=1e-4)
