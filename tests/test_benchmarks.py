"""The benchmarks run from a clean checkout and print one valid JSON line per measurement.

Smoke runs only (tiny 2-layer width-32 models, one NFE, one repeat): the lines must parse and
carry the keys the docs/performance.md tables are built from. No timing is asserted. Each
benchmark runs as a subprocess (as a user would), with one CPU device.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DECODE_KEYS = {"benchmark", "part", "sampler", "nfe", "batch_size", "rtfx", "device", "dtype"}
TRAIN_KEYS = {
    "objective",
    "isct_steps",
    "step_seconds",
    "tokens_per_s",
    "peak_memory_bytes",
    "peak_memory_source",
    "batch_size",
    "device",
    "dtype",
}


def run_benchmark(script: str, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def json_lines(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every stdout line must be JSON


TINY_DECODE = (
    "--model_size=test",
    "--nfes=2",
    "--samplers=pbeb",
    "--batch_size=1",
    "--num_utterances=1",
    "--seconds=1",
    "--canvas_length=8",
    "--repeats=1",
)


def test_decode_speed_prints_a_json_line_per_sampler_and_nfe():
    result = run_benchmark("decode_speed.py", *TINY_DECODE, "--parts=sampler")
    assert result.returncode == 0, result.stderr[-3000:]
    records = json_lines(result.stdout)
    assert len(records) == 1, records
    record = records[0]
    assert DECODE_KEYS <= set(record), set(record)
    assert record["sampler"] == "pbeb(lam=0.2,gamma=0.05)"
    assert (record["nfe"], record["batch_size"], record["part"]) == (2, 1, "sampler")
    assert record["rtfx"] > 0 and record["device"].startswith("cpu")
    assert 1 <= record["mean_nfe"] <= 2
    assert record["audio_seconds"] == pytest.approx(1.0)


def test_decode_speed_rejects_a_non_mdm_sampler_with_a_clear_message():
    result = run_benchmark("decode_speed.py", "--model_size=test", "--samplers=ar_greedy")
    assert result.returncode != 0
    assert "masked-diffusion" in result.stderr and "part=ar" in result.stderr


def test_decode_speed_needs_a_manifest_with_a_checkpoint(tmp_path):
    result = run_benchmark("decode_speed.py", f"--checkpoint={tmp_path}", "--parts=sampler")
    assert result.returncode != 0
    assert "--manifest" in result.stderr


def test_multilingual_parity_recheck_names_a_bad_details_file_before_any_work(tmp_path):
    missing = run_benchmark("whisper_multilingual_parity.py", f"--recheck={tmp_path / 'no.jsonl'}")
    assert missing.returncode != 0 and "no such file" in missing.stderr
    bad = tmp_path / "details.jsonl"
    bad.write_text('{"lang": "fr", "text": "Oui.", "voice": "m3", "rate": 150, "same_tokens": false}\n'
                   '{"lang": "de"}\n')  # fmt: skip
    result = run_benchmark("whisper_multilingual_parity.py", f"--recheck={bad}")
    assert result.returncode != 0
    assert "line 2" in result.stderr and "details" in result.stderr
    assert "faster-whisper" not in result.stderr  # stopped before the reference ran


def test_error_breakdown_prints_a_line_per_file_and_names_a_bad_file(tmp_path):
    rows = [("a.wav", "one two three"), ("b.wav", "four five")]
    first, second = tmp_path / "ar.jsonl", tmp_path / "mdm.jsonl"
    first.write_text("".join(json.dumps({"audio": a, "ref": r, "hyp": r}) + "\n" for a, r in rows))
    second.write_text(  # the other order, one word dropped
        json.dumps({"audio": "b.wav", "ref": "four five", "hyp": "four"}) + "\n"
        + json.dumps({"audio": "a.wav", "ref": "one two three", "hyp": "one two three"}) + "\n"
    )  # fmt: skip
    result = run_benchmark(
        "error_breakdown.py", f"--hyps=ar={first},mdm={second}", "--normalizer=basic"
    )
    assert result.returncode == 0, result.stderr
    ar, mdm = json_lines(result.stdout)
    assert (ar["label"], ar["word_errors"], ar["exact"]) == ("ar", 0, 2)
    assert (mdm["label"], mdm["deletions"], mdm["words"], mdm["hyp_words"]) == ("mdm", 1, 5, 4)
    assert (mdm["exact_only_ar"], mdm["exact_only_mdm"]) == (1, 0)
    second.write_text('{"audio": "b.wav", "text": "four five"}\n')
    bad = run_benchmark("error_breakdown.py", f"--hyps=ar={first},mdm={second}")
    assert bad.returncode != 0 and "line 1" in bad.stderr and "mdm.jsonl" in bad.stderr


def test_train_step_rejects_an_unknown_objective():
    result = run_benchmark("train_step.py", "--objectives=mdm,bogus")
    assert result.returncode != 0
    assert "bogus" in result.stderr and "isctK" in result.stderr


@pytest.mark.slow
def test_decode_speed_every_part_on_a_random_model():
    result = run_benchmark("decode_speed.py", *TINY_DECODE, "--batch_size=2", "--nfes=2,3")
    assert result.returncode == 0, result.stderr[-3000:]
    records = json_lines(result.stdout)
    for record in records:
        assert DECODE_KEYS <= set(record), record
    parts = {(r["part"], r["batch_size"]) for r in records}
    for part in ("sampler", "ar", "overhead", "canvas"):
        assert {(part, 1), (part, 2)} <= parts, (part, parts)
    (whisper,) = [r for r in records if r["part"] == "faster_whisper"]
    assert whisper["rtfx"] is None and "not Whisper" in whisper["skipped"]
    overhead = [r for r in records if r["part"] == "overhead"]
    assert all(r["forward_seconds"] > 0 and r["encoder_seconds"] > 0 for r in overhead)
    canvas = {r["canvas"] for r in records if r["part"] == "canvas"}
    assert canvas == {"fixed", "adaptive"}


@pytest.mark.slow
def test_decode_speed_logits_part_prints_full_and_masked_in_one_line():
    result = run_benchmark("decode_speed.py", *TINY_DECODE, "--parts=logits")
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = json_lines(result.stdout)
    assert DECODE_KEYS - {"rtfx"} <= set(record), record
    assert record["part"] == "logits" and record["same_ids"] is True
    assert record["rtfx_full"] > 0 and record["rtfx_masked"] > 0
    assert record["masked_over_full"] == pytest.approx(record["rtfx_masked"] / record["rtfx_full"])


def _tiny_checkpoint_and_manifest(folder: Path) -> tuple[Path, Path]:
    """A random tiny checkpoint (MDM, AR and CTC heads) and a 2-line manifest of tones."""
    import flax
    import jax
    import numpy as np
    from tiny import tiny_model_config

    from mdm_asr_jax.audio import FeatureConfig, write_wav
    from mdm_asr_jax.checkpoint import export_checkpoint
    from mdm_asr_jax.nn.model import ASRModel, init_params
    from mdm_asr_jax.text import SentencePieceTokenizer

    words = "zero one two three four five six seven eight nine".split()
    text = [" ".join(words[(i + j) % 10] for j in range(1 + i % 4)) for i in range(60)]
    tokenizer = SentencePieceTokenizer.train(
        text, folder / "spm", vocab_size=24, model_type="word", hard_vocab_limit=False
    )
    config = tiny_model_config(vocab_size=tokenizer.vocab_size)
    shapes = jax.eval_shape(lambda k: init_params(ASRModel(config), k), jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda x: (0.1 * rng.standard_normal(x.shape)).astype(x.dtype),
        flax.linen.meta.unbox(shapes)["params"],
    )
    checkpoint = export_checkpoint(folder / "ckpt", config, params, FeatureConfig(), tokenizer)
    lines = []
    for i in range(2):
        tone = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * np.arange(8000) / 16000)
        write_wav(folder / f"u{i}.wav", tone.astype(np.float32))
        lines.append(json.dumps({"audio": f"u{i}.wav", "text": words[i]}) + "\n")
    manifest = folder / "test.jsonl"
    manifest.write_text("".join(lines))
    return checkpoint, manifest


@pytest.mark.slow
def test_cpu_batch1_prints_one_line_with_every_system_and_the_goal_ratios(tmp_path):
    checkpoint, manifest = _tiny_checkpoint_and_manifest(tmp_path)
    result = run_benchmark(
        "cpu_batch1.py",
        f"--checkpoint={checkpoint}",
        f"--ar_checkpoint={checkpoint}",  # AR greedy from a second load (an AR-only run's path)
        f"--manifest={manifest}",
        "--nfe=2",
        "--repeats=1",
        "--faster_whisper=none",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (record,) = json_lines(result.stdout)
    assert record["ar_checkpoint"] == str(checkpoint)
    assert record["benchmark"] == "cpu_batch1" and record["batch_size"] == 1
    assert record["utterances"] == 2 and record["device"].startswith("cpu")
    assert set(record["systems"]) == {"pbeb:fixed", "pbeb:ctc+masked", "ar_greedy"}
    for name, system in record["systems"].items():
        assert system["rtfx"] > 0 and 0 <= system["wer"], (name, system)
        assert 1 <= system["mean_passes"], (name, system)
    ratios = record["pbeb:fixed_ratios"]
    assert {"rtfx_over_ar", "wer_minus_ar", "passes_over_ar"} <= set(ratios)


@pytest.mark.slow
def test_train_step_prints_each_objective():
    result = run_benchmark(
        "train_step.py",
        "--model_size=test",
        "--objectives=ar,mdm,isct2",
        "--batch_size=2",
        "--seconds=1",
        "--tokens=6",
        "--canvas_length=8",
        "--repeats=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = json_lines(result.stdout)
    assert [r["objective"] for r in records] == ["ar", "mdm", "isct2"]
    assert [r["isct_steps"] for r in records] == [0, 1, 2]
    for record in records:
        assert TRAIN_KEYS <= set(record), record
        assert record["step_seconds"] > 0 and record["peak_memory_bytes"] > 0
    # ISCT K=2 runs the decoder twice: XLA plans more temporary memory than for plain MDM.
    mdm, isct = records[1]["compiled_memory"], records[2]["compiled_memory"]
    if mdm and isct:
        assert isct["temp_bytes"] > mdm["temp_bytes"]


@pytest.mark.slow
def test_whisper_synth_table_prints_a_line_per_model_decoder_and_test_set(tmp_path):
    import dataclasses

    import whisper_fixtures as fx
    from train_fixtures import write_corpus

    from mdm_asr_jax.convert import whisper as cw

    dims = dataclasses.replace(fx.TINY_DIMS, encoder_positions=250)  # eval's 5 s bucket
    src = fx.write_hf_dir(tmp_path / "hf", fx.random_hf_tensors(dims), dims)
    fx.write_tiny_tokenizer(src)
    mdm = cw.convert_whisper(src, tmp_path / "mdm", decoders=("mdm",), full_window=False)
    ar = cw.convert_whisper(src, tmp_path / "ar", decoders=("ar",), full_window=False)
    data = tmp_path / "mdm" / "data" / "whisper_synth"
    manifest = write_corpus(data / "audio", count=2)
    for name in ("test", "test_fsdd"):
        lines = [json.loads(line) for line in manifest.read_text().splitlines()]
        for line in lines:
            line["audio"] = str(manifest.parent / line["audio"])
        (data / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    # The table scores the test sets the MDM run recorded (its config: `test` + named eval `fsdd`).
    spec = importlib.util.spec_from_file_location("ws", REPO / "configs" / "whisper_synth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run_config = module.get_config("mdm")
    run_config.data.test_manifest = str(data / "test.jsonl")
    run_config.data.test_fsdd_manifest = str(data / "test_fsdd.jsonl")
    recorded = json.loads((mdm / "config.json").read_text())
    recorded.setdefault("info", {})["config"] = json.loads(run_config.to_json_best_effort())
    (mdm / "config.json").write_text(json.dumps(recorded))
    result = run_benchmark(
        "whisper_synth_table.py",
        f"--mdm={mdm},{mdm}",
        "--mdm_labels=mdm,mdm_b",
        f"--ar={ar}",
        "--zero_shot=none",
        "--nfes=2,4",
        "--batch_size=2",
        "--markdown",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = json_lines(result.stdout)
    got = sorted((r["model"], r["nfe"] or 0, r["test"]) for r in lines)
    want = sorted(
        (m, n, t)
        for m, n in (("ar", 0), ("mdm", 2), ("mdm", 4), ("mdm_b", 2), ("mdm_b", 4))
        for t in ("test", "fsdd")
    )
    assert got == want
    assert all({"wer", "rtfx", "device", "dtype", "batch_size"} <= set(r) for r in lines)
    assert {(r["test"], r["normalizer"]) for r in lines} == {("test", "english"), ("fsdd", "basic")}
    assert "| mdm_b | pbeb NFE 4 |" in result.stderr


def test_input_pipeline_prints_the_feature_over_decode_ratios(tmp_path):
    from train_fixtures import write_corpus

    manifest = write_corpus(tmp_path / "corpus", count=8)
    result = run_benchmark(
        "input_pipeline.py",
        f"--manifest={manifest}",
        "--workers=0",
        "--utterances=4",
        "--rounds=1",
        "--batch_size=2",
        "--batches=2",
        "--chunk=1",
        "--warmup=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    single, pipeline = json_lines(result.stdout)
    assert single["stage"] == "single_thread" and pipeline["stage"] == "pipeline"
    for record in (single, pipeline):
        assert record["device"].startswith("host ") and record["host_features_dtype"] == "float32"
        assert record["timed"]
    assert single["log_mel_over_decode"] > 0 and single["log_mel_speedup_over_reference"] > 0
    assert pipeline["features_over_audio"] > 0 and pipeline["batches_each"] == 2


def test_decode_speed_lengths_rejects_an_unknown_shape_before_any_work():
    result = run_benchmark("decode_speed.py", "--shapes=whisper_tiny,canary_2b")
    assert result.returncode != 0
    assert "canary_2b" in result.stderr and "canary_180m" in result.stderr


@pytest.mark.slow
def test_decode_speed_lengths_forces_every_decoder_to_the_target_length():
    result = run_benchmark(
        "decode_speed.py",
        "--shapes=whisper_tiny",
        "--lengths=3,5",
        "--nfes=2",
        "--batch_size=1",
        "--repeats=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = json_lines(result.stdout)
    got = sorted((r["sampler"], r["target_length"]) for r in records)
    assert got == [("ar_greedy", 3), ("ar_greedy", 5), ("pbeb(lam=0.2,gamma=0.05)", 3),
                   ("pbeb(lam=0.2,gamma=0.05)", 5)]  # fmt: skip
    for record in records:
        assert DECODE_KEYS <= set(record) and record["part"] == "lengths"
        assert record["mean_output_tokens"] == record["target_length"]
        assert record["audio_seconds"] == pytest.approx(record["target_length"] / 3.0, abs=0.01)
        if record["sampler"] == "ar_greedy":
            assert record["mean_nfe"] == record["target_length"] + 1
        else:
            assert record["canvas_length"] == 16 and record["rtfx_over_ar"] > 0


def test_train_step_layer_study_rejects_an_unknown_variant():
    result = run_benchmark("train_step.py", "--study=layers", "--variants=canary-9b")
    assert result.returncode != 0
    assert "canary-9b" in result.stderr and "canary-1b-flash" in result.stderr


@pytest.mark.slow
def test_train_step_layer_study_prints_each_layout_and_remat():
    result = run_benchmark(
        "train_step.py",
        "--study=layers",
        "--variants=test",
        "--batch_size=1",
        "--seconds=1",
        "--tokens=4",
        "--canvas_length=8",
        "--vocab_size=64",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = json_lines(result.stdout)
    assert [(r["layout"], r["remat"]) for r in records] == [
        ("scan", "none"),
        ("scan", "full"),
        ("loop", "none"),
        ("loop", "full"),
    ]
    for record in records:
        assert record["compile_seconds"] > 0 and record["compiled_memory"]["temp_bytes"] > 0
        assert record["temp_reduction_vs_no_remat"] > 0
        if record["layout"] == "loop":
            assert record["scan_compile_speedup"] > 0
        assert {"device", "dtype", "batch_size", "timed"} <= set(record)


def _multilingual_line(model, lang, wer, nfe=None, passes=None, sampler="ar_greedy"):
    return {"benchmark": "whisper_multilingual_table", "model": model, "lang": lang,
            "sampler": sampler, "nfe": nfe, "wer": wer, "mean_nfe": passes}  # fmt: skip


def test_whisper_multilingual_table_renders_recorded_lines_of_several_files(tmp_path):
    """--render: lines recorded by separate runs make one table, models in the order zero-shot,
    AR, MDM (by NFE), a WER column per language, their mean, and the mean passes; a language no
    line gives is '-'. A file that is not the benchmark's is named with its line."""
    pbeb = "pbeb:lam=0.2,gamma=0.05"
    first = [_multilingual_line("mdm", x, w, 32, p, pbeb) for x, w, p in
             (("en", 10.0, 9.0), ("fr", 20.0, 11.0))]  # fmt: skip
    second = [_multilingual_line("ar", "en", 12.5, passes=10.0),
              _multilingual_line("ar", "fr", 30.0, passes=12.0),
              _multilingual_line("mdm", "en", 14.0, 8, 7.0, pbeb),
              _multilingual_line("zero-shot", "en", 50.0)]  # fmt: skip
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps(x) + "\n" for x in first))
    b.write_text("".join(json.dumps(x) + "\n" for x in second) + "\n")
    result = run_benchmark("whisper_multilingual_table.py", f"--render={a},{b}", "--langs=en,fr")
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.splitlines()
    assert table[0] == "| model | decoder | en WER % | fr WER % | mean WER % | passes |"
    assert table[2:] == [
        "| zero-shot | greedy | 50.00 | - | - | - |",
        "| ar | greedy | 12.50 | 30.00 | 21.25 | 11.0 |",
        f"| mdm | {pbeb} NFE 8 | 14.00 | - | - | 7.0 |",
        f"| mdm | {pbeb} NFE 32 | 10.00 | 20.00 | 15.00 | 10.0 |",
    ]
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(first[0]) + "\n" + json.dumps({"benchmark": "decode_speed"}) + "\n")
    bad = run_benchmark("whisper_multilingual_table.py", f"--render={other}")
    assert bad.returncode != 0
    assert f"{other} line 2 is not a whisper_multilingual_table line" in bad.stderr


def test_whisper_multilingual_table_names_missing_test_sets_before_loading_models(tmp_path):
    result = run_benchmark(
        "whisper_multilingual_table.py", f"--data={tmp_path}", f"--ar={tmp_path / 'none'}"
    )
    assert result.returncode != 0
    assert "missing test sets" in result.stderr and "test_fr.jsonl" in result.stderr
