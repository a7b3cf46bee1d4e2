"""Synthetic speech corpora from text with eSpeak NG, installed from PyPI only.

The `espeakng-loader` package ships libespeak-ng (1.52) and its voice data; we drive it through
ctypes (synchronous output + a callback that collects 22.05 kHz int16 samples), resample to
16 kHz with soxr, optionally add white noise at a chosen SNR, and write wav files plus JSONL
manifests (the manifest contract of docs/design.md, with `seconds`, `id`, `lang`, `voice`,
`rate`, `pitch`, `snr_db`).

Variation per utterance: accent (eSpeak's language voices: `en-us`, `en-gb-scotland`, ...),
voice variant (eSpeak's `+m3`, `+f2`, ... files), speaking rate (words per minute), pitch
(0-100), leading and trailing silence, gain and noise SNR, all drawn from one numpy Generator
seeded by `seed`, so the same arguments give the same corpus byte for byte, whatever the worker count.
Each worker process initialises its own eSpeak engine (the library holds global state), and
renders every utterance in a forked child of that clean state: eSpeak otherwise carries state
from one utterance into the next, which would make the output depend on the worker count.

Splits hold out what a test set should not have seen: sentences are split into train/dev/test
by fraction, `test_voices` variants are used only in the test split, and `test_accents` are
heard only in a `test_accent` split (the test sentences again, in accents never trained on). Text eSpeak cannot
speak (no audible output) or that comes out longer than `max_seconds` is reported as a
`Problem` (and in `<split>_problems.jsonl`), never silently dropped.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import dataclasses
import json
import multiprocessing
import os
import pickle
from collections.abc import Iterable, Sequence

import numpy as np
import soundfile
import soxr
from absl import logging

from mdm_asr_jax.data.manifest import Problem, write_manifest
from mdm_asr_jax.progress import progress

SAMPLE_RATE = 16000
ESPEAK_RATE = 22050

# eSpeak voice used for each supported language code.
LANGUAGES = {"en": "en-us", "fr": "fr", "de": "de", "es": "es"}
# Every accent (eSpeak language voice) bundled for a language; the first is LANGUAGES[lang].
ACCENTS = {
    "en": (
        "en-us", "en", "en-gb-x-rp", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
        "en-us-nyc", "en-029",
    ),
    "fr": ("fr", "fr-be", "fr-ch"),
    "de": ("de",),
    "es": ("es", "es-419"),
}  # fmt: skip

# Voice variants that sound like (synthetic) people; the rest of espeak-ng-data/voices/!v is
# novelty voices (robots, whisper, ...). Any variant file name is accepted by `variants=`.
DEFAULT_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "croak", "david", "steph", "robert", "linda",
)  # fmt: skip

# espeak_AUDIO_OUTPUT / espeak_PARAMETER / espeak_POSITION_TYPE values from speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_SILENCE_PEAK = 200  # int16 peak below which an output counts as "no speech"

DIGIT_WORDS = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "de": ("null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
}

# Short command templates: {n} is a number word (2..9), {thing}/{room} from the lists.
_COMMANDS = {
    # A compositional grammar: every word recurs in many combinations, so a held-out sentence
    # is a new combination of known words (a small fixed phrase list would teach the model
    # its sentences, not its words).
    "en": {
        "templates": (
            "turn on the {thing}",
            "turn off the {thing}",
            "turn on the {thing} in the {room}",
            "turn off the {thing} in the {room}",
            "switch on the {thing} in the {room}",
            "switch off the {thing} in the {room}",
            "is the {thing} in the {room} still on",
            "dim the lights in the {room}",
            "set a timer for {n} minutes",
            "set an alarm for {n} o'clock {when}",
            "set the temperature to {n} degrees",
            "set the {room} to {n} degrees",
            "open the {opening} in the {room}",
            "close the {opening} in the {room}",
            "lock the {room} door",
            "play {genre} in the {room}",
            "stop the music in the {room}",
            "turn the volume {updown}",
            "turn the {thing} {updown}",
            "what is the weather {when}",
            "call {name}",
            "call {name} {when}",
            "send a message to {name}",
            "remind me to call {name} {when}",
            "remind me in {n} hours",
            "add {item} to the shopping list",
            "do we need {item}",
            "order {n} bags of {item}",
            "turn on the {thing} in the {room} {when}",
            "remind me to turn off the {thing} {when}",
            "move the {thing} to the {room}",
            "play {genre} in the {room} {when}",
            "send a message to {name} {when}",
            "tell {name} the {thing} in the {room} is on",
        ),
        "thing": (
            "light",
            "lights",
            "lamp",
            "heater",
            "fan",
            "radio",
            "television",
            "oven",
            "kettle",
            "dishwasher",
            "washing machine",
            "speaker",
            "computer",
            "printer",
            "coffee machine",
            "air conditioner",
        ),
        "room": (
            "kitchen",
            "bedroom",
            "living room",
            "bathroom",
            "garage",
            "office",
            "hallway",
            "garden",
            "basement",
            "attic",
            "dining room",
            "nursery",
        ),
        "name": (
            "alice",
            "bob",
            "mum",
            "dad",
            "grandma",
            "grandpa",
            "peter",
            "sarah",
            "the doctor",
            "the office",
            "my sister",
            "my brother",
        ),
        "when": (
            "today",
            "tomorrow",
            "tonight",
            "this morning",
            "this evening",
            "at noon",
            "next week",
            "on monday",
            "on friday",
        ),
        "item": (
            "milk",
            "bread",
            "eggs",
            "apples",
            "coffee",
            "rice",
            "butter",
            "cheese",
            "tea",
            "sugar",
            "oranges",
            "flour",
        ),
        "genre": (
            "music",
            "jazz",
            "the news",
            "the radio",
            "classical music",
            "rock music",
            "some podcasts",
        ),
        "updown": ("up", "down"),
        "opening": ("door", "window", "curtains", "blinds"),
    },
    "fr": {
        "templates": (
            "allume la {thing}",
            "éteins la {thing}",
            "allume la {thing} de la {room}",
            "règle le minuteur sur {n} minutes",
            "ouvre la porte de la {room}",
            "ferme la porte de la {room}",
            "monte le volume",
            "baisse le volume",
            "quelle heure est il",
            "appelle {name}",
        ),
        "thing": ("lumière", "lampe", "radio", "télévision", "radiateur"),
        "room": ("cuisine", "chambre", "salle de bain", "salle à manger"),
        "name": ("alice", "paul", "maman", "papa"),
    },
    "de": {
        "templates": (
            "schalte das {thing} ein",
            "schalte das {thing} aus",
            "stelle einen timer auf {n} minuten",
            "öffne die tür der {room}",
            "schließe die tür der {room}",
            "mach die musik lauter",
            "mach die musik leiser",
            "wie spät ist es",
            "rufe {name} an",
        ),
        "thing": ("licht", "radio", "fernsehgerät", "gebläse"),
        "room": ("küche", "garage", "werkstatt"),
        "name": ("anna", "peter", "mama", "papa"),
    },
    "es": {
        "templates": (
            "enciende la {thing}",
            "apaga la {thing}",
            "enciende la {thing} de la {room}",
            "pon un temporizador de {n} minutos",
            "abre la puerta de la {room}",
            "cierra la puerta de la {room}",
            "sube el volumen",
            "baja el volumen",
            "qué hora es",
            "llama a {name}",
        ),
        "thing": ("luz", "lámpara", "radio", "televisión", "calefacción"),
        "room": ("cocina", "habitación", "sala", "oficina"),
        "name": ("ana", "pedro", "mamá", "papá"),
    },
}


class SynthError(ValueError):
    """Bad synthesis arguments (unknown language or voice, empty input...)."""


def _check_language(lang: str) -> None:
    if lang not in LANGUAGES:
        raise SynthError(f"Unknown language {lang!r}: use one of {sorted(LANGUAGES)}.")


def available_variants() -> list[str]:
    """Names of the voice variant files bundled with espeakng-loader (usable as `+name`)."""
    import espeakng_loader

    folder = os.path.join(espeakng_loader.get_data_path(), "voices", "!v")
    return sorted(name for name in os.listdir(folder) if " " not in name)


class EspeakEngine:
    """One eSpeak NG instance in this process (the library is a process-wide singleton).

    eSpeak carries state from one utterance to the next (the same text twice in a row comes
    out different), so `synthesize_isolated` renders every utterance in a forked child of a
    process that has initialised the library but never synthesised: each output depends only
    on (text, voice, rate, pitch, seed).
    """

    _instance: EspeakEngine | None = None

    def __init__(self):
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
            ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 500, espeakng_loader.get_data_path().encode(), 0
        )
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"espeak_Initialize failed (returned {rate}).")
        self._lib = lib
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(
            ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
        )
        # Keep a reference: the C library calls it for the life of the process.
        self._callback = callback_type(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self._variants = set(available_variants())

    @classmethod
    def get(cls) -> EspeakEngine:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    def _collect(self, wav, num_samples, events) -> int:
        del events
        if num_samples > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        return 0

    def check_voice(self, voice: str) -> None:
        if "+" in voice and voice.split("+", 1)[1] not in self._variants:
            raise SynthError(f"Unknown voice variant in {voice!r}: see available_variants().")

    def synthesize(
        self, text: str, voice: str, rate: int = 175, pitch: int = 50, seed: int = 0
    ) -> np.ndarray:
        """Speaks `text` with `voice` ("en-us+m3") in this process (output depends on what this
        process said before; see `synthesize_isolated`). Returns int16 samples at 22.05 kHz."""
        self.check_voice(voice)
        self._lib.espeak_ng_SetRandSeed(int(seed))  # breathy variants draw noise
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise SynthError(f"eSpeak does not know voice {voice!r}.")
        self._lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
        self._lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
        self._lib.espeak_SetParameter(_PARAM_RANGE, 50, 0)
        self._lib.espeak_SetParameter(_PARAM_VOLUME, 100, 0)
        self._chunks = []
        data = text.encode("utf-8")
        error = self._lib.espeak_Synth(
            data, len(data) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        if error != 0:
            raise RuntimeError(f"espeak_Synth failed with code {error} on {text!r}.")
        samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        self._chunks = []
        return samples


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        chunk = os.read(fd, 1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def synthesize_isolated(
    text: str, voice: str, rate: int = 175, pitch: int = 50, seed: int = 0
) -> np.ndarray:
    """`EspeakEngine.synthesize` in a forked child, so the result never depends on earlier
    utterances (POSIX only). Returns int16 samples at 22.05 kHz."""
    engine = EspeakEngine.get()  # Initialised here, but this process never synthesises.
    engine.check_voice(voice)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # Child: synthesise, send ("ok", samples) or ("error", message), exit.
        status = 1
        try:
            os.close(read_end)
            try:
                payload = ("ok", engine.synthesize(text, voice, rate, pitch, seed))
            except Exception as err:  # Reported by the parent.
                payload = ("error", f"{type(err).__name__}: {err}")
            data = pickle.dumps(payload)
            view = memoryview(data)
            while view:
                view = view[os.write(write_end, view) :]
            os.close(write_end)
            status = 0
        finally:
            os._exit(status)
    os.close(write_end)
    try:
        data = _read_all(read_end)
    finally:
        os.close(read_end)
        os.waitpid(pid, 0)
    if not data:
        raise RuntimeError(f"eSpeak child process died on {text!r}.")
    kind, value = pickle.loads(data)
    if kind == "error":
        raise RuntimeError(value)
    return value


def _speak_here(
    text: str,
    lang: str,
    variant: str | None,
    rate: int,
    pitch: int,
    seed: int,
    accent: str | None = None,
) -> np.ndarray:
    _check_language(lang)
    voice = (accent or LANGUAGES[lang]) + (f"+{variant}" if variant else "")
    return _to_16k(synthesize_isolated(text, voice, rate, pitch, seed))


_EXECUTOR: concurrent.futures.ProcessPoolExecutor | None = None


def _synthesis_process() -> concurrent.futures.ProcessPoolExecutor:
    """One spawned helper process (started on first use, kept for the life of this one).

    Forking is only safe from a single-threaded process; the caller may be multithreaded (JAX,
    grain), so synthesis always runs in a freshly spawned process that forks per utterance.
    """
    global _EXECUTOR
    if _EXECUTOR is None:
        _EXECUTOR = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")
        )
    return _EXECUTOR


def speak(
    text: str,
    lang: str = "en",
    variant: str | None = None,
    rate: int = 175,
    pitch: int = 50,
    seed: int = 0,
    accent: str | None = None,
) -> np.ndarray:
    """Synthesises one sentence; returns float32 mono audio at 16 kHz in [-1, 1].

    `accent`: an eSpeak language voice of `lang` (see ACCENTS; default LANGUAGES[lang]).
    The same arguments always give the same samples (see `synthesize_isolated`)."""
    _check_language(lang)
    future = _synthesis_process().submit(
        _speak_here, text, lang, variant, rate, pitch, seed, accent
    )
    return future.result()


def _to_16k(samples: np.ndarray) -> np.ndarray:
    audio = samples.astype(np.float32) / 32768.0
    if audio.size == 0:
        return audio
    return soxr.resample(audio, ESPEAK_RATE, SAMPLE_RATE).astype(np.float32)


def add_noise(audio: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Adds white Gaussian noise so that signal power / noise power = 10^(snr_db / 10)."""
    power = float(np.mean(audio.astype(np.float64) ** 2))
    if power == 0.0:
        return audio
    noise = rng.standard_normal(audio.shape) * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(audio + noise, -1.0, 1.0).astype(np.float32)


def generate_sentences(kind: str, count: int, lang: str = "en", seed: int = 0) -> list[str]:
    """Built-in sentence generator: `count` distinct sentences of kind `digits` (2-7 digit
    words), `commands` (short smart-home style commands) or `mixed` (alternating).
    Deterministic from `seed`."""
    _check_language(lang)
    if kind not in ("digits", "commands", "mixed"):
        raise SynthError(f"Unknown generator {kind!r}: use digits, commands or mixed.")
    rng = np.random.default_rng(seed)
    words = DIGIT_WORDS[lang]
    table = _COMMANDS[lang]
    sentences: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(sentences) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise SynthError(f"Cannot generate {count} distinct {kind} sentences; ask for fewer.")
        use_digits = kind == "digits" or (kind == "mixed" and len(sentences) % 2 == 0)
        if use_digits:
            length = int(rng.integers(2, 8))
            sentence = " ".join(words[int(d)] for d in rng.integers(0, 10, size=length))
        else:
            template = table["templates"][int(rng.integers(len(table["templates"])))]
            fill = {key: values[int(rng.integers(len(values)))] for key, values in table.items()}
            fill["n"] = words[int(rng.integers(2, 10))]
            sentence = template.format(**fill)
        if sentence not in seen:  # Distinct, so held-out test sentences never leak into train.
            seen.add(sentence)
            sentences.append(sentence)
    return sentences


def read_sentences(
    path: str, max_sentences: int | None = None
) -> tuple[list[str], list[int], list[Problem]]:
    """Reads one sentence per line -> (sentences, their 1-based line numbers, problems); blank
    lines are reported (not silently skipped)."""
    if not os.path.isfile(path):
        raise SynthError(f"Text file {path!r} does not exist: pass one sentence per line.")
    sentences, lines, problems = [], [], []
    with open(path, encoding="utf-8") as f:
        for line, raw in enumerate(f, start=1):
            text = " ".join(raw.split())
            if not text:
                problems.append(Problem(path, line, "empty sentence"))
                continue
            sentences.append(text)
            lines.append(line)
            if max_sentences is not None and len(sentences) >= max_sentences:
                break
    if not sentences:
        raise SynthError(f"Text file {path!r} has no sentences.")
    return sentences, lines, problems


@dataclasses.dataclass(frozen=True)
class SynthJob:
    """One utterance to render; everything random is already drawn (so workers don't matter)."""

    split: str
    id: str
    text: str
    lang: str
    variant: str
    rate: int
    pitch: int
    snr_db: float | None
    noise_seed: int
    out_dir: str
    max_seconds: float
    source_line: int
    where: str = "synth"
    accent: str = ""  # eSpeak language voice; "" = LANGUAGES[lang]
    silence: tuple[float, float] = (0.0, 0.0)  # seconds of silence before / after the speech
    gain_db: float = 0.0


def _render(job: SynthJob) -> dict | Problem:
    accent = job.accent or LANGUAGES[job.lang]
    where, line = job.where, job.source_line
    said = f"{job.text!r} ({job.split}, {accent}+{job.variant})"
    try:
        audio = _speak_here(
            job.text, job.lang, job.variant, job.rate, job.pitch, job.noise_seed, accent
        )
    except (SynthError, RuntimeError) as err:
        return Problem(where, line, "synthesis failed", f"{said}: {err}")
    peak = float(np.max(np.abs(audio))) if audio.size else 0.0
    if peak * 32768.0 < _SILENCE_PEAK:
        return Problem(where, line, "no speech produced", said)
    if job.gain_db:
        audio = np.clip(audio * 10 ** (job.gain_db / 20), -1.0, 1.0).astype(np.float32)
    if any(job.silence):
        before, after = (int(round(s * SAMPLE_RATE)) for s in job.silence)
        audio = np.pad(audio, (before, after))
    seconds = audio.size / SAMPLE_RATE
    if seconds > job.max_seconds:
        return Problem(where, line, "too long", f"{said}: {seconds:.1f}s > max_seconds")
    if job.snr_db is not None:
        audio = add_noise(audio, job.snr_db, np.random.default_rng(job.noise_seed))
    relative = os.path.join(job.split, f"{job.id}.wav")
    path = os.path.join(job.out_dir, relative)
    soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
    record = {
        "audio": relative,
        "text": job.text,
        "seconds": round(seconds, 4),
        "id": job.id,
        "lang": job.lang,
        "voice": f"{accent}+{job.variant}",
        "accent": accent,
        "rate": job.rate,
        "pitch": job.pitch,
    }
    if any(job.silence):
        record["silence"] = [round(s, 3) for s in job.silence]
    if job.gain_db:
        record["gain_db"] = round(job.gain_db, 2)
    if job.snr_db is not None:
        record["snr_db"] = round(job.snr_db, 2)
    return record


def _render_all(jobs: Sequence[SynthJob], num_workers: int) -> list[dict | Problem]:
    def bar(rendered: Iterable) -> list[dict | Problem]:
        return list(progress(rendered, total=len(jobs), desc="synthesise", unit="utt"))

    if num_workers <= 1 or len(jobs) < 2 * num_workers:
        return bar(_synthesis_process().map(_render, jobs, chunksize=16))
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_workers) as pool:
        return bar(pool.imap(_render, jobs, chunksize=max(1, len(jobs) // (8 * num_workers))))


def _split_sentences(
    sentences: Sequence[str], dev_fraction: float, test_fraction: float, rng: np.random.Generator
) -> dict[str, list[int]]:
    if not 0 <= dev_fraction < 1 or not 0 <= test_fraction < 1 or dev_fraction + test_fraction >= 1:
        raise SynthError("dev_fraction and test_fraction must be in [0, 1) and sum to < 1.")
    order = rng.permutation(len(sentences))
    num_test = int(round(test_fraction * len(sentences)))
    num_dev = int(round(dev_fraction * len(sentences)))
    if (test_fraction > 0 and num_test == 0) or (dev_fraction > 0 and num_dev == 0):
        raise SynthError(f"Too few sentences ({len(sentences)}) for the dev/test fractions.")
    splits = {
        "test": sorted(order[:num_test].tolist()),
        "dev": sorted(order[num_test : num_test + num_dev].tolist()),
        "train": sorted(order[num_test + num_dev :].tolist()),
    }
    return {name: idx for name, idx in splits.items() if idx}


def build_synth_corpus(
    sentences: Sequence[str],
    out_dir: str,
    *,
    lang: str = "en",
    variants: Sequence[str] = DEFAULT_VARIANTS,
    test_voices: int | Sequence[str] = 0,
    dev_fraction: float = 0.0,
    test_fraction: float = 0.0,
    renditions: int = 1,
    rate_range: tuple[int, int] = (140, 200),
    pitch_range: tuple[int, int] = (35, 65),
    snr_db_range: tuple[float, float] | None = None,
    accents: Sequence[str] | None = None,
    test_accents: Sequence[str] = (),
    silence_range: tuple[float, float] = (0.0, 0.0),
    gain_db_range: tuple[float, float] = (0.0, 0.0),
    max_seconds: float = 30.0,
    seed: int = 0,
    num_workers: int = 1,
    source_lines: Sequence[int] | None = None,
    where: str = "synth",
) -> tuple[dict[str, str], list[Problem]]:
    """Renders `sentences` to `out_dir/<split>/*.wav` and writes `out_dir/<split>.jsonl`.

    Sentences go to train/dev/test by `dev_fraction`/`test_fraction` (with both 0 everything is
    `train`). `test_voices` (a count, or variant names) are held out: used only by the test
    split, which uses only them. Each sentence is rendered `renditions` times, each time with an
    accent (one of `accents`, eSpeak language voices of `lang`; default LANGUAGES[lang]), a
    voice, rate (wpm), pitch, silence before and after (each drawn from `silence_range`
    seconds), gain (`gain_db_range`) and, if `snr_db_range` is set, a noise SNR drawn uniformly.
    `test_accents` are never trained on: the test sentences are rendered again in them into a
    `test_accent` split (any voice variant), next to the held-out-voice `test` split.

    `source_lines` (1-based line numbers of `sentences` in their text file) and `where` (its
    name) make problem reports point at the input line.

    Returns ({split: manifest path}, problems); problems are also written to
    `out_dir/<split>_problems.jsonl` and logged.
    """
    _check_language(lang)
    if not sentences:
        raise SynthError("No sentences to synthesise.")
    known = set(available_variants())
    unknown = [v for v in variants if v not in known]
    if unknown:
        raise SynthError(f"Unknown voice variants {unknown}: see available_variants().")
    if renditions < 1:
        raise SynthError("renditions must be >= 1.")
    # Duplicates would leak held-out test sentences into train: keep the first occurrence.
    lines = list(source_lines) if source_lines is not None else list(range(1, len(sentences) + 1))
    first: dict[str, int] = {}
    for i, sentence in enumerate(sentences):
        first.setdefault(sentence, i)
    if len(first) < len(sentences):
        logging.info("Synthesis: %d duplicate sentences merged.", len(sentences) - len(first))
    lines = [lines[i] for i in first.values()]
    sentences = list(first)
    rng = np.random.default_rng(seed)
    variants = list(variants)
    if isinstance(test_voices, int):
        if test_voices >= len(variants):
            raise SynthError(f"test_voices={test_voices} leaves no voice for training.")
        held_out = [variants[i] for i in rng.permutation(len(variants))[:test_voices]]
    else:
        held_out = list(test_voices)
        missing = [v for v in held_out if v not in variants]
        if missing:
            raise SynthError(f"test_voices {missing} are not among variants={variants}.")
    seen_voices = [v for v in variants if v not in held_out]
    accent_given = bool(accents)
    accents = list(accents) if accents else [LANGUAGES[lang]]
    unknown = [a for a in (*accents, *test_accents) if a not in ACCENTS[lang]]
    if unknown:
        raise SynthError(f"Unknown {lang} accents {unknown}: use some of {ACCENTS[lang]}.")
    if test_accents and not test_fraction:
        raise SynthError("test_accents needs test sentences: set test_fraction > 0.")
    seen_accents = [a for a in accents if a not in test_accents]
    if not seen_accents:
        raise SynthError(f"test_accents={list(test_accents)} leaves no accent for training.")
    if not 0.0 <= silence_range[0] <= silence_range[1]:
        raise SynthError(f"silence_range={silence_range} must be 0 <= low <= high seconds.")
    splits = _split_sentences(sentences, dev_fraction, test_fraction, rng)
    if test_accents:
        splits["test_accent"] = list(splits["test"])

    jobs: list[SynthJob] = []
    for split, indices in splits.items():
        pool = held_out if (split == "test" and held_out) else seen_voices
        if split == "test_accent":
            pool = variants
        accent_pool = list(test_accents) if split == "test_accent" else seen_accents
        os.makedirs(os.path.join(out_dir, split), exist_ok=True)
        for i in indices:
            for _ in range(renditions):
                snr = None if snr_db_range is None else float(rng.uniform(*snr_db_range))
                jobs.append(
                    SynthJob(
                        split=split,
                        id=f"{split}_{len(jobs):06d}",
                        text=sentences[i],
                        lang=lang,
                        variant=pool[int(rng.integers(len(pool)))],
                        rate=int(rng.integers(rate_range[0], rate_range[1] + 1)),
                        pitch=int(rng.integers(pitch_range[0], pitch_range[1] + 1)),
                        snr_db=snr,
                        noise_seed=int(rng.integers(2**31)),
                        out_dir=out_dir,
                        max_seconds=max_seconds,
                        source_line=lines[i],
                        where=where,
                        # Drawn last and only when asked for, so corpora without them stay
                        # byte for byte what they were.
                        accent=accent_pool[int(rng.integers(len(accent_pool)))]
                        if accent_given
                        else "",
                        silence=(
                            (float(rng.uniform(*silence_range)), float(rng.uniform(*silence_range)))
                            if silence_range[1] > 0
                            else (0.0, 0.0)
                        ),
                        gain_db=float(rng.uniform(*gain_db_range))
                        if gain_db_range != (0.0, 0.0)
                        else 0.0,
                    )
                )
    results = _render_all(jobs, num_workers)
    manifests, problems = {}, []
    for split in splits:
        mine = [r for job, r in zip(jobs, results, strict=True) if job.split == split]
        records = [r for r in mine if isinstance(r, dict)]
        split_problems = [r for r in mine if isinstance(r, Problem)]
        path = os.path.join(out_dir, f"{split}.jsonl")
        write_manifest(path, records)
        manifests[split] = path
        problem_path = os.path.join(out_dir, f"{split}_problems.jsonl")
        if split_problems:
            with open(problem_path, "w", encoding="utf-8") as f:
                for p in split_problems:
                    f.write(json.dumps(dataclasses.asdict(p), ensure_ascii=False) + "\n")
        elif os.path.exists(problem_path):
            os.remove(problem_path)
        for p in split_problems:
            logging.warning("Not synthesised: %s", p)
        problems.extend(split_problems)
        hours = sum(r["seconds"] for r in records) / 3600
        logging.info("%s: %d utterances, %.2f h -> %s", split, len(records), hours, path)
    with open(os.path.join(out_dir, "voices.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "lang": lang,
                "train_voices": seen_voices,
                "test_voices": held_out,
                "train_accents": seen_accents,
                "test_accents": list(test_accents),
            },
            f,
        )
    return manifests, problems
