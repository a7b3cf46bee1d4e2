"""Evaluation: corpus WER from summed counts, the eval CLI's contract JSON, skipped inputs.

The model is a tiny random checkpoint (2 layers, width 32) exported with `export_checkpoint`;
decoding goes through `mdm_asr_jax.decode.decode` when it exists (the real path), and the
sampler-independent checks use a thin stand-in decode that runs the jitted encoder and returns
chosen ids, so the hypotheses (and hence the WER) are known exactly.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import flax.linen
import jax
import jiwer
import numpy as np
import pytest
from tiny import tiny_model_config

from mdm_asr_jax.audio import FeatureConfig, load_audio, write_wav
from mdm_asr_jax.checkpoint import (
    CheckpointError,
    DecodingDefaults,
    LoadedCheckpoint,
    export_checkpoint,
    load_checkpoint,
)
from mdm_asr_jax.decode import DecodeOutput
from mdm_asr_jax.diffusion.samplers import parse_sampler, tokens_to_ids
from mdm_asr_jax.eval import evaluate as ev
from mdm_asr_jax.eval.metrics import ErrorCounts, count_errors, error_breakdown
from mdm_asr_jax.inference import eval_set as inference_eval_set
from mdm_asr_jax.inference.batching import frame_bucket
from mdm_asr_jax.inference.eval_set import load_eval_set
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.text import SentencePieceTokenizer

FSDD = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd"
DIGITS = "zero one two three four five six seven eight nine".split()


# ---------------------------------------------------------------------------------------------
# Fixtures: a tiny checkpoint and a small manifest with two bad lines.


def _make_checkpoint(directory: Path, *, ar: bool, ctc: bool) -> Path:
    text = [" ".join(DIGITS[(i + j) % 10] for j in range(1 + i % 4)) for i in range(60)]
    tokenizer = SentencePieceTokenizer.train(
        text, directory / "spm", vocab_size=24, model_type="word", hard_vocab_limit=False
    )
    config = tiny_model_config(vocab_size=tokenizer.vocab_size, ar=ar, ctc=ctc)
    params = random_params(config)
    return export_checkpoint(
        directory / "ckpt", config, params, FeatureConfig(), tokenizer, info={"note": "test"}
    )


def random_params(config, seed: int = 0):
    """Random parameters of the right shapes without compiling init (eval_shape + numpy)."""
    shapes = jax.eval_shape(lambda k: init_params(ASRModel(config), k), jax.random.key(0))
    rng = np.random.default_rng(seed)
    return jax.tree.map(
        lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype),
        flax.linen.meta.unbox(shapes)["params"],
    )


@pytest.fixture(scope="module")
def checkpoint_dir(tmp_path_factory) -> Path:
    return _make_checkpoint(tmp_path_factory.mktemp("eval_ckpt"), ar=True, ctc=True)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """6 good FSDD lines (written relative), one missing file (line 4), one corrupt file (line 7)."""
    folder = tmp_path_factory.mktemp("eval_data")
    (folder / "wav").mkdir()
    names = ["0_george_0", "1_jackson_0", "2_lucas_1", "3_nicolas_2", "4_george_3", "5_yweweler_4"]
    lines = []
    for name in names:
        audio = _speech_like(name)
        write_wav(folder / "wav" / f"{name}.wav", audio)
        lines.append({"audio": f"wav/{name}.wav", "text": DIGITS[int(name[0])]})
    (folder / "wav" / "corrupt.wav").write_bytes(b"RIFF\x00\x00not really a wav file")
    lines.insert(3, {"audio": "wav/missing.wav", "text": "three"})
    lines.insert(6, {"audio": "wav/corrupt.wav", "text": "five"})
    path = folder / "test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def _speech_like(name: str) -> np.ndarray:
    """The FSDD recording `name` at 16 kHz, or a sine burst when FSDD is not next to the repo."""
    if (FSDD / f"{name}.wav").exists():
        return load_audio(FSDD / f"{name}.wav")
    digit = int(name[0])
    t = np.arange(int(16000 * (0.3 + 0.05 * digit))) / 16000
    return (0.3 * np.sin(2 * np.pi * (200 + 50 * digit) * t)).astype(np.float32)


@functools.partial(jax.jit, static_argnums=0)
def _encode(model, params, features, feature_mask):
    return model.apply({"params": params}, features, feature_mask, method="encode")


def make_stand_in(hyp_by_index: dict[int, list[int]], eos_id: int):
    """decode(model, params, batch, spec, nfe, key) -> DecodeOutput.

    Runs the real jitted encoder (so the first call of a shape compiles) and returns the ids
    `hyp_by_index[index]` for each row (EOS-terminated), nfe_used = 1 + index % 3, at most nfe.
    """

    def decode(model, params, batch, spec, nfe, key, **decode_kwargs):
        encoded, _ = _encode(model, params, batch["features"], batch["feature_mask"])
        jax.block_until_ready(encoded)
        index = np.asarray(batch["index"])
        tokens = np.full((index.shape[0], 8), eos_id, np.int32)
        for row, i in enumerate(index):
            ids = hyp_by_index.get(int(i), [])
            tokens[row, : len(ids)] = ids
        nfe_used = np.minimum(1 + np.maximum(index, 0) % 3, nfe or 3)
        return DecodeOutput(tokens_to_ids(tokens, eos_id), nfe_used, tokens, spec, None, None)

    return decode


# ---------------------------------------------------------------------------------------------
# Metrics.


def test_corpus_wer_equals_jiwer_and_not_the_mean_of_batch_wers():
    refs = ["one two three four five six", "seven", "eight nine", "zero one two three"]
    hyps = ["one two three four five six", "eleven", "eight", "zero one two three"]
    # A short utterance alone in its batch (100 % WER) next to a long, mostly right batch.
    batches = [(refs[1:2], hyps[1:2]), (refs[:1] + refs[2:], hyps[:1] + hyps[2:])]
    total = ErrorCounts()
    for r, h in batches:
        total = total + count_errors(r, h, "none")
    expected = 100.0 * jiwer.wer(refs, hyps)
    assert total.wer == pytest.approx(expected)
    assert total.words == 13 and total.word_errors == 2
    mean_of_batches = np.mean([100.0 * jiwer.wer(r, h) for r, h in batches])
    assert mean_of_batches > 50.0 > 20.0 > total.wer
    assert total.cer == pytest.approx(100.0 * jiwer.cer(refs, hyps))


def test_normaliser_is_applied_to_both_sides_before_counting():
    counts = count_errors(["Hello, World!"], ["hello world"], "english")
    assert counts.word_errors == 0 and counts.words == 2
    raw = count_errors(["Hello, World!"], ["hello world"], "none")
    assert raw.word_errors == 2


def test_counts_equal_jiwer_on_known_pair():
    refs = ["the cat sat on the mat", "a b c d"]
    hyps = ["the cat sat on mat today", "a x c d e"]
    counts = count_errors(refs, hyps, "none")
    out = jiwer.process_words(refs, hyps)
    assert counts.word_errors == out.substitutions + out.deletions + out.insertions == 4
    assert counts.words == 10
    assert counts.word_errors / counts.words == pytest.approx(jiwer.wer(refs, hyps))


def test_counts_sum_across_batches_to_corpus_counts():
    refs = ["one two three", "four five", "six"]
    hyps = ["one too three", "four", "six seven"]
    whole = count_errors(refs, hyps, "basic")
    parts = count_errors(refs[:2], hyps[:2], "basic") + count_errors(refs[2:], hyps[2:], "basic")
    assert whole == parts and (whole.word_errors, whole.words) == (3, 6)


def test_digit_vs_word_is_no_error():
    counts = count_errors(["seven"], ["7"], "english")
    assert (counts.word_errors, counts.words) == (0, 1)
    counts = count_errors(["seven three"], ["7 3"], "basic")
    assert (counts.word_errors, counts.words) == (0, 2)


def test_empty_reference_counts_hypothesis_words_as_insertions():
    counts = count_errors(["", "a b"], ["x y", "a b"], "none")
    assert (counts.word_errors, counts.words) == (2, 2)


def test_error_breakdown_adds_up_to_the_counted_errors_and_places_them_by_position():
    refs = ["the cat sat on the mat", "a b c d", "", "one two three"]
    hyps = ["the cat sat on mat today", "a x c d e", "oh", "one one two three"]
    breakdown = error_breakdown(refs, hyps, "none", parts=2)
    counts = count_errors(refs, hyps, "none")
    assert breakdown.word_errors == counts.word_errors and breakdown.words == counts.words
    assert (breakdown.substitutions, breakdown.deletions, breakdown.insertions) == (3, 0, 3)
    # "mat today" for "the mat" (words 4-5 of 6): the second half; "x" for "b" (word 1 of 4):
    # the first half, "e" after the end: the second; "oh" (empty reference): the first; the
    # extra "one" at the start: the first half.
    assert breakdown.errors_by_part == (3, 3)
    assert breakdown.words_by_part == (3 + 2 + 2, 3 + 2 + 1)
    assert sum(breakdown.errors_by_part) == breakdown.word_errors
    assert breakdown.as_dict()["wer_by_part"] == [pytest.approx(300 / 7), pytest.approx(50.0)]
    assert (breakdown.exact, breakdown.utterances) == (0, 4)
    assert (breakdown.repeats, breakdown.ref_repeats) == (1, 0)
    assert breakdown.hyp_words == counts.words + 3
    dropped = error_breakdown(["a b c", "d e f"], ["a c", "d e f"], "none", parts=3)
    assert (dropped.deletions, dropped.errors_by_part, dropped.exact) == (1, (0, 1, 0), 1)


def test_frame_buckets_hold_the_input_and_are_few():
    config = tiny_model_config()
    sizes = {frame_bucket(n, config) for n in range(1, 3001)}
    assert all(frame_bucket(n, config) >= n for n in range(1, 3001, 7))
    assert len(sizes) <= 12


def test_sampler_specs_split_at_top_level_commas():
    from mdm_asr_jax.cli.evaluate import split_specs

    got = split_specs(["pbeb(lam=0.2,gamma=0.05),ar_greedy", "eb(gamma=0.1)"])
    assert got == ["pbeb(lam=0.2,gamma=0.05)", "ar_greedy", "eb(gamma=0.1)"]


# ---------------------------------------------------------------------------------------------
# The evaluator on a tiny checkpoint.


def test_evaluator_wer_is_corpus_level_and_bad_lines_are_skipped(checkpoint_dir, manifest):
    checkpoint = load_checkpoint(checkpoint_dir)
    tok = checkpoint.tokenizer
    eval_set = load_eval_set(checkpoint, manifest=manifest, batch_size=4)
    # Lines 4 (missing file) and 7 (corrupt wav) are skipped with their line and reason.
    skipped = ev.skipped_summary(eval_set.report)
    assert skipped["count"] == 2
    assert {(i["line"], i["reason"]) for i in skipped["items"]} == {
        (4, "missing audio file"),
        (7, "unreadable audio"),
    }
    assert eval_set.num_utterances == 6
    hyp_text = {i: ref for i, ref in eval_set.refs.items()}
    hyp_text[0] = "zero one"  # one insertion
    hyp_text[2] = "seven"  # one substitution
    hyp_by_index = {i: tok.encode(t) for i, t in hyp_text.items()}
    decode = make_stand_in(hyp_by_index, checkpoint.model_config.eos_id)
    evaluator = ev.Evaluator(checkpoint, eval_set, normalizer="none", decode_fn=decode)
    result = evaluator.run("ar_greedy")
    scored = sorted(eval_set.refs)
    expected = 100.0 * jiwer.wer(
        [eval_set.refs[i] for i in scored], [tok.decode(hyp_by_index[i]) for i in scored]
    )
    assert result["wer"] == pytest.approx(expected)
    assert result["wer"] == pytest.approx(100.0 * 2 / 6)
    assert result["n"] == 6 and result["nfe"] is None
    assert result["mean_nfe"] == pytest.approx(np.mean([1 + i % 3 for i in (0, 1, 2, 4, 5, 7)]))
    # Every batch compiled on its first call, so warm-up time was recorded and RTFx is finite.
    assert result["compile_seconds"] > 0 and np.isfinite(result["rtfx"])


def test_missing_head_error_names_the_head(tmp_path, manifest):
    checkpoint_dir = _make_checkpoint(tmp_path, ar=False, ctc=False)
    with pytest.raises(ev.EvalError, match="ar_decoder"):
        ev.evaluate(checkpoint_dir, manifest=manifest, sampler="ar_greedy")
    with pytest.raises(ev.EvalError, match="CTC head"):
        ev.evaluate(checkpoint_dir, manifest=manifest, sampler="ctc_greedy")


def test_unknown_sampler_and_missing_manifest_give_clear_errors(checkpoint_dir, tmp_path):
    with pytest.raises(ev.EvalError, match="unknown sampler 'bogus'"):
        ev.evaluate(checkpoint_dir, manifest=tmp_path / "x.jsonl", sampler="bogus")
    with pytest.raises(ev.EvalError, match="does not exist"):
        ev.evaluate(checkpoint_dir, manifest=tmp_path / "x.jsonl", sampler="ar_greedy")


# ---------------------------------------------------------------------------------------------
# The CLI, in process.

CONTRACT_KEYS = {
    "wer",
    "rtfx",
    "compile_seconds",
    "n",
    "mean_nfe",
    "sampler",
    "nfe",
    "batch_size",
    "device",
    "dtype",
    "skipped",
}


def _run_cli(argv: list[str]):
    from mdm_asr_jax.cli import evaluate as cli

    cli.FLAGS.unparse_flags()
    cli.FLAGS(["mdm-asr-eval", *argv])
    try:
        cli.main(["mdm-asr-eval"])
    finally:
        cli.FLAGS.unparse_flags()


def test_eval_cli_writes_the_contract_json_for_a_sweep(checkpoint_dir, manifest, tmp_path, capsys):
    output, hyps = tmp_path / "out.jsonl", tmp_path / "hyps.jsonl"
    argv = [
        f"--checkpoint={checkpoint_dir}",
        f"--manifest={manifest}",
        "--sampler=pbeb(lam=0.2,gamma=0.05),ctc_greedy",
        "--nfe=2",
        "--batch_size=4",
        f"--output={output}",
        f"--hyps={hyps}",
    ]
    _run_cli(argv)
    lines = [json.loads(x) for x in output.read_text().splitlines()]
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert lines == printed
    pbeb = parse_sampler("pbeb(lam=0.2,gamma=0.05)").spec
    assert [x["sampler"] for x in lines] == [pbeb, "ctc_greedy"]
    assert [x["nfe"] for x in lines] == [2, None]
    for result in lines:
        assert CONTRACT_KEYS <= set(result)
        assert result["n"] == 6 and result["batch_size"] == 4
        assert result["skipped"]["count"] == 2
        assert 0.0 <= result["wer"] and result["dtype"] == "float32"
    assert lines[0]["mean_nfe"] is not None and lines[0]["mean_nfe"] <= 2
    rows = [json.loads(x) for x in (tmp_path / "hyps.0.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and rows[0]["audio"] == "wav/0_george_0.wav"
    assert {"audio", "ref", "hyp"} <= set(rows[0]) and rows[0]["ref"] == "zero"


def test_eval_cli_dtype_flag_decodes_in_bfloat16_and_reports_it(checkpoint_dir, manifest, tmp_path):

    output = tmp_path / "out.jsonl"
    argv = [
        f"--checkpoint={checkpoint_dir}",
        f"--manifest={manifest}",
        "--sampler=ctc_greedy",
        "--batch_size=4",
        "--dtype=bfloat16",
        f"--output={output}",
    ]
    _run_cli(argv)
    (result,) = [json.loads(x) for x in output.read_text().splitlines()]
    assert result["dtype"] == "bfloat16" and result["n"] == 6


def test_eval_cli_bad_checkpoint_path_exits_with_a_message(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _run_cli([f"--checkpoint={tmp_path / 'nope'}", "--manifest=m.jsonl"])
    assert exit_info.value.code == 2
    assert "does not exist" in capsys.readouterr().err


def test_a_chosen_step_of_a_workdir_loads_that_step_and_an_unsaved_one_is_named(
    checkpoint_dir, tmp_path, capsys
):
    """A workdir laid out as the trainer saves it: the config files, then checkpoints/STEP/params
    for steps 4 (best dev WER) and 8 (other weights)."""
    workdir = tmp_path / "work"
    shutil.copytree(checkpoint_dir, workdir, ignore=shutil.ignore_patterns("params"))
    exported = load_checkpoint(checkpoint_dir)
    other = export_checkpoint(
        tmp_path / "other", exported.model_config, random_params(exported.model_config, seed=1),
        exported.feature_config, exported.tokenizer,
    )  # fmt: skip
    for step, source in ((4, checkpoint_dir), (8, other)):
        (workdir / "checkpoints" / str(step)).mkdir(parents=True)
        shutil.copytree(source / "params", workdir / "checkpoints" / str(step) / "params")
    (workdir / "best.json").write_text(json.dumps({"step": 4, "wer": 10.0}))

    def leaves(params):
        return [np.asarray(x) for x in jax.tree.leaves(params)]

    best, last = load_checkpoint(workdir), load_checkpoint(workdir, step=8)
    assert (best.info["step"], last.info["step"]) == (4, 8)
    for a, b in zip(leaves(best.params), leaves(exported.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(leaves(last.params), leaves(best.params), strict=True)
    )
    with pytest.raises(CheckpointError, match="step 5 is not saved .* 4, 8"):
        load_checkpoint(workdir, step=5)
    with pytest.raises(CheckpointError, match="exported checkpoint"):
        load_checkpoint(checkpoint_dir, step=4)
    with pytest.raises(SystemExit) as exit_info:
        _run_cli([f"--checkpoint={workdir}", "--manifest=m.jsonl", "--step=-1"])
    assert exit_info.value.code == 2 and "--step=-1" in capsys.readouterr().err


def test_in_memory_params_evaluate_like_a_checkpoint_and_pass_canvas_length(
    checkpoint_dir, manifest, monkeypatch
):
    loaded = load_checkpoint(checkpoint_dir)
    seen = {}
    stand_in = make_stand_in({}, loaded.model_config.eos_id)

    def decode(model, params, batch, spec, nfe, key, canvas_length, **decode_kwargs):
        seen["canvas_length"] = canvas_length
        seen.update(decode_kwargs)
        return stand_in(model, params, batch, spec, nfe, key)

    in_memory = LoadedCheckpoint(
        loaded.model_config,
        loaded.feature_config,
        loaded.tokenizer,
        loaded.params,
        DecodingDefaults(canvas_length=24),
        {"step": 7},
        Path(""),
    )
    result = ev.evaluate_params(
        in_memory,
        manifest=manifest,
        sampler="eb(gamma=0.1)",
        nfe=4,
        batch_size=4,
        key=jax.random.key(3),
        decode_fn=decode,
    )
    assert seen["canvas_length"] == 24
    # The tokenizer's special ids (not EOS) are never to be emitted.
    assert 1 in seen["forbidden_ids"] and loaded.model_config.eos_id not in seen["forbidden_ids"]
    assert result["n"] == 6 and result["step"] == 7 and result["nfe"] == 4
    assert result["wer"] == pytest.approx(100.0)  # empty hypotheses: every word deleted
    # A second periodic eval reuses the featurised dev set (no second read of the manifest).
    monkeypatch.setattr(
        inference_eval_set, "load_eval_set", lambda *a, **k: pytest.fail("dev set read twice")
    )
    again = ev.evaluate_params(
        in_memory, manifest=manifest, sampler="eb(gamma=0.1)", nfe=4, batch_size=4, decode_fn=decode
    )
    assert again["n"] == 6
