"""Recipe pieces that need no synthesis: sentence selection and the cache stamp."""

from __future__ import annotations

import pytest

from mdm_asr_jax.data import recipes


def _text(tmp_path, lines):
    path = tmp_path / "sentences.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_select_sentences_keeps_distinct_in_range_sentences_deterministically(tmp_path):
    lines = [f"sentence number {i} has five" for i in range(20)]
    lines += ["too short", "this one is far too long to keep here at all", "café is not ascii ok"]
    lines += [lines[0]]  # a duplicate
    path = _text(tmp_path, lines)
    chosen, numbers = recipes.select_sentences(path, 10, min_words=3, max_words=6, seed=1)
    assert len(chosen) == len(set(chosen)) == 10
    assert all(3 <= len(s.split()) <= 6 and s.isascii() for s in chosen)
    assert all(lines[n - 1] == s for s, n in zip(chosen, numbers, strict=True))
    again, _ = recipes.select_sentences(path, 10, min_words=3, max_words=6, seed=1)
    other, _ = recipes.select_sentences(path, 10, min_words=3, max_words=6, seed=2)
    assert again == chosen and other != chosen


def test_select_sentences_says_how_many_qualify_when_too_few(tmp_path):
    path = _text(tmp_path, ["one two three four", "five six seven eight"])
    with pytest.raises(recipes.RecipeError, match="only 2 distinct sentences"):
        recipes.select_sentences(path, 3, min_words=4, max_words=16, seed=0)


def test_unknown_recipe_is_an_error(tmp_path):
    from mdm_asr_jax.train.defaults import base_config

    with pytest.raises(recipes.RecipeError, match="whisper_synth"):
        recipes.prepare("librispeech", tmp_path, base_config())


def test_demo_corpus_holds_out_accents_and_is_reused_from_an_ar_workdir(tmp_path):
    """The demo's held-out accents are heard only in `test_accent`; an MDM run that starts from
    an AR run's workdir takes that run's corpus instead of synthesising it again."""
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "demo", Path(__file__).resolve().parents[1] / "configs" / "demo.py"
    )
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    config = demo.get_config("runlocal")
    with config.unlocked():
        config.recipe_options.num_train = 24
    first = recipes.prepare("demo", tmp_path / "ar" / "data", config)
    assert set(first) == {"train", "dev", "test", "test_accent"}
    accents = {
        split: {
            json.loads(line)["accent"]
            for line in open(path.replace(f"demo/{split}", f"demo/synth/{split}"))
        }
        for split, path in first.items()
    }
    held_out = set(recipes.HELD_OUT_ACCENTS)
    assert accents["test_accent"] <= held_out
    assert not (accents["train"] | accents["dev"] | accents["test"]) & held_out
    again = recipes.prepare(
        "demo", tmp_path / "mdm" / "data", config, reuse=(tmp_path / "ar" / "data",)
    )
    assert again == first
    assert not (tmp_path / "mdm" / "data" / "demo").exists()
    with config.unlocked():
        config.seed = 1  # another corpus: not reused
    other = recipes.prepare(
        "demo", tmp_path / "mdm" / "data", config, reuse=(tmp_path / "ar" / "data",)
    )
    assert other["train"].startswith(str(tmp_path / "mdm"))


def test_data_dir_variable_locates_fsdd_and_text_before_the_development_layout(
    tmp_path, monkeypatch
):
    (tmp_path / "fsdd").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "gutenberg_en.txt").write_text("one sentence here\n")
    monkeypatch.setenv(recipes.DATA_DIR_VARIABLE, str(tmp_path))
    assert recipes.default_fsdd_dir() == str(tmp_path / "fsdd")
    assert recipes.default_text_file() == str(tmp_path / "text" / "gutenberg_en.txt")
    monkeypatch.setenv(recipes.DATA_DIR_VARIABLE, str(tmp_path / "empty"))
    assert recipes.default_fsdd_dir() != str(tmp_path / "fsdd")  # falls through to the next
