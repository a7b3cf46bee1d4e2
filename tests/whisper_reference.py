"""Reference harness for Whisper parity: faster-whisper's greedy transcripts and ours.

faster-whisper (CTranslate2) is the reference: `WhisperModel(dir, device="cpu",
compute_type="float32").transcribe(audio, beam_size=1, without_timestamps=True, language="en",
temperature=0, condition_on_previous_text=False, vad_filter=False, no_speech_threshold=None,
log_prob_threshold=None, compression_ratio_threshold=None)`. What its greedy decoding does, and
what `JaxWhisper` reproduces:

* log-mel of the audio (160 zero samples appended, last frame dropped), padded with zeros
  (log-mel value 0) to 3000 frames; encoder over all 1500 frames (no mask);
* prompt `<|startoftranscript|><|notimestamps|>` (English-only models), argmax each step, stop at
  `<|endoftext|>` or after 224 generated tokens (half the 448 text positions, openai-whisper's
  `sample_len` default, which CTranslate2 applies too: repetition loops end there);
* `suppress_tokens=[-1]`: CTranslate2's `config.json` `suppress_ids` (non-speech symbols) plus
  the task / start tokens, masked at every step; `suppress_blank`: " " and `<|endoftext|>` also
  masked at the first step (`suppress_ids_begin`); timestamps are not suppressed;
* turned off in the reference, because they are heuristics around the decoder, not decoding:
  faster-whisper's no-speech skip (by default it drops the whole window, text "", when
  no_speech_prob > 0.6 and the average log-prob < -1: 7 of 400 eSpeak sentences in the
  multilingual parity run) and its compression-ratio / log-prob quality checks (with a single
  temperature they only matter to the skip).

The greedy loop below is a minimal, self-contained reference for parity checks; production
decoding lives in `mdm_asr_jax.ar` / `mdm_asr_jax.decode`, which should apply the checkpoint's
`decoding.forbidden_ids` / `decoding.begin_forbidden_ids` the same way.

Legend: B batch (1 here), T frames, M mel bins, S encoder frames, V vocabulary, P prompt length.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mdm_asr_jax.checkpoint import DecodingDefaults


def faster_whisper_transcripts(
    model_dir: str, audios: list[np.ndarray], languages: list[str] | None = None
) -> tuple[list[dict], float]:
    """faster-whisper greedy transcripts (`languages`: one code per audio, default all "en");
    returns per-item results and decode seconds."""
    from faster_whisper import WhisperModel

    model = WhisperModel(model_dir, device="cpu", compute_type="float32")
    # Plain greedy decoding: faster-whisper's no-speech skip (drop a window whose no-speech
    # probability is over 0.6 and mean log-probability under -1) and its quality thresholds
    # are heuristics on top of the decoder, so they are turned off.
    options = dict(beam_size=1, without_timestamps=True, temperature=0,
                   condition_on_previous_text=False, vad_filter=False,
                   no_speech_threshold=None, log_prob_threshold=None,
                   compression_ratio_threshold=None)  # fmt: skip
    languages = languages or ["en"] * len(audios)
    list(model.transcribe(audios[0], language=languages[0], **options)[0])  # warm-up
    results, seconds = [], 0.0
    for audio, language in zip(audios, languages, strict=True):
        start = time.perf_counter()
        segments = list(model.transcribe(audio, language=language, **options)[0])
        seconds += time.perf_counter() - start
        tokens = [t for s in segments for t in s.tokens]
        results.append({"tokens": tokens, "text": "".join(s.text for s in segments).strip()})
    return results, seconds


@functools.lru_cache(maxsize=2)
def _fw_extractor(num_mels: int):
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=num_mels)


def fw_features(audio: np.ndarray, num_mels: int = 80) -> np.ndarray:
    """faster-whisper's own log-mel of `audio`, [T, M], content frames only (last dropped)."""
    return _fw_extractor(num_mels)(audio)[:, :-1].T.astype(np.float32)


class JaxWhisper:
    """A converted Whisper model: window choice, encoder, greedy decode with suppression.

    decoding: the checkpoint's decoding defaults (`forbidden_ids`, `begin_forbidden_ids`).
    """

    def __init__(self, config: Any, params: Any, tokenizer: Any, decoding: DecodingDefaults):
        from mdm_asr_jax.nn.model import ASRModel

        self.config = config
        self.model = ASRModel(config)
        self.params = jax.device_put(params)
        self.tokenizer = tokenizer
        vocab = config.vocab_size
        suppress = np.zeros(vocab, bool)
        suppress[list(decoding.forbidden_ids)] = True
        begin = np.zeros(vocab, bool)
        begin[list(decoding.begin_forbidden_ids)] = True
        self.suppress, self.suppress_begin = jnp.asarray(suppress), jnp.asarray(begin)
        self.max_new_tokens = int(decoding.max_len or config.ar_decoder.max_length // 2)
        self._greedy = jax.jit(self._greedy_impl)
        self._encode = jax.jit(self._encode_impl, static_argnums=(3,))

    @classmethod
    def from_checkpoint(cls, checkpoint_dir: str) -> JaxWhisper:
        from mdm_asr_jax.checkpoint import load_checkpoint

        ckpt = load_checkpoint(checkpoint_dir)
        return cls(ckpt.model_config, ckpt.params, ckpt.tokenizer, ckpt.decoding)

    def encode(self, features: np.ndarray, mask: np.ndarray, attend_padding: bool = True):
        """features [B, T, M], mask [B, T] -> (encoded [B, S, D], enc_mask [B, S])."""
        return self._encode(self.params, features, mask, attend_padding)

    def _encode_impl(self, params, features, mask, attend_padding: bool):
        from mdm_asr_jax.nn.whisper import WhisperEncoder

        # The window is chosen by `transcribe`: run it as given (no padding back to 30 s).
        config = dataclasses.replace(self.config.encoder, min_frames=0)
        encoder = WhisperEncoder(config, attend_padding=attend_padding)
        return encoder.apply({"params": params["encoder"]}, features, mask)

    def _greedy_impl(self, params, encoded, enc_mask):
        """Greedy decoding as CTranslate2 does it for faster-whisper (batch 1, max 448)."""
        model, variables = self.model, {"params": params}
        prompt = jnp.asarray(self.config.prompt_ids, jnp.int32)[None]  # [1, P]
        max_length = self.config.ar_decoder.max_length
        max_new = self.max_new_tokens
        eos = self.config.eos_id
        cross_kv = model.apply(variables, encoded, method=model.ar_cross_kv)
        cache = model.apply(variables, 1, max_length, method=model.ar_init_cache)
        logits, cache = model.apply(
            variables, prompt, 0, cache, cross_kv, enc_mask, method=model.ar_step
        )

        def pick(step_logits, first):  # [1, V] -> [1]
            step_logits = jnp.where(self.suppress, -jnp.inf, step_logits.astype(jnp.float32))
            step_logits = jnp.where(first & self.suppress_begin, -jnp.inf, step_logits)
            return jnp.argmax(step_logits, axis=-1).astype(jnp.int32)

        first = pick(logits[:, -1], True)
        out = jnp.full((1, max_new), eos, jnp.int32).at[:, 0].set(first)
        num_prompt = prompt.shape[1]

        def cond(state):
            i, token, _, _ = state
            return (i < max_new) & (token[0] != eos)

        def body(state):
            i, token, cache, out = state
            step_logits, cache = model.apply(
                variables, token[:, None], num_prompt + i - 1, cache, cross_kv, enc_mask,
                method=model.ar_step,
            )  # fmt: skip
            token = pick(step_logits[:, 0], False)
            return i + 1, token, cache, out.at[:, i].set(token)

        _, _, _, out = jax.lax.while_loop(cond, body, (jnp.int32(1), first, cache, out))
        return out

    def transcribe(self, features: np.ndarray, window: str) -> list[int]:
        """features [T, M] -> token ids (no prompt, no EOS)."""
        from mdm_asr_jax.nn.whisper import WHISPER_FRAMES, whisper_window_frames

        frames = features.shape[0]
        padded = WHISPER_FRAMES if window == "30s" else whisper_window_frames(frames)
        x = np.zeros((1, padded, features.shape[1]), np.float32)
        x[0, :frames] = features[:padded]
        mask = np.zeros((1, padded), bool)
        mask[0, :frames] = True
        encoded, enc_mask = self._encode(self.params, x, mask, window != "bucket_masked")
        ids = [int(t) for t in np.asarray(self._greedy(self.params, encoded, enc_mask))[0]]
        eos = self.config.eos_id
        return ids[: ids.index(eos)] if eos in ids else ids
