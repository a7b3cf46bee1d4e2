"""benchmarks/ablations.py and benchmarks/ablation_report.py.

The report is driven by hand-written JSON lines (two seeds, two splits) and must regenerate the
same tables and plots from them; the sweep runs on a tiny random checkpoint (slow: it compiles
a handful of decoders).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


report = _load("ablation_report")
ablations = _load("ablations")

PBEB = "pbeb(lam=0.2,gamma=0.05,temperature=0)"
TOPK = "topk(schedule=linear,temperature=0)"
COMMON = dict(
    commit="abc1234567",
    machine="x86_64 CPU (cpu, 1 device), 2 cores",
    command="python benchmarks/ablations.py --workdir=/somewhere/runs/e2 --out=/x/ablations.jsonl",
    recipe="demo v2",
    dtype="float32",
    normalizer="basic",
)


def _line(ablation: str, seed: int, split: str, **fields) -> dict:
    return {
        **COMMON,
        "ablation": ablation,
        "seed": seed,
        "workdir": f"w{seed}",
        "split": split,
        **fields,
    }


def fixture_lines() -> list[dict]:
    lines = []
    for seed, shift in ((0, 0.0), (1, 2.0)):
        for split in ("test", "test_accent"):
            for nfe in (4, 8):
                lines.append(
                    _line(
                        "samplers", seed, split, sampler=PBEB, nfe=nfe, wer=70 + shift, mean_nfe=5.0
                    )
                )
                lines.append(
                    _line(
                        "samplers", seed, split, sampler=TOPK, nfe=nfe, wer=80 + shift, mean_nfe=nfe
                    )
                )
            lines.append(
                _line(
                    "samplers", seed, split, sampler="ar_greedy", nfe=None, wer=75.0, mean_nfe=6.0
                )
            )
            for lam in (0.0, 0.2):
                for gamma in (0.05, 0.5):
                    wer = 60 + 10 * lam + gamma + shift
                    lines.append(
                        _line(
                            "pbeb_grid",
                            seed,
                            split,
                            sampler=PBEB,
                            nfe=32,
                            lam=lam,
                            gamma=gamma,
                            wer=wer,
                            mean_nfe=4.0,
                        )
                    )
            lines.append(
                _line(
                    "canvas",
                    seed,
                    split,
                    variant="paper_256",
                    canvas=256,
                    skipped_reason="canvas 256 does not fit",
                )
            )
            lines.append(
                _line(
                    "canvas",
                    seed,
                    split,
                    variant="recipe",
                    canvas=32,
                    nfe=16,
                    sampler=PBEB,
                    wer=70.0,
                    mean_nfe=5.0,
                    rtfx=50.0,
                )
            )
        for b, tokens in ((0, 3.0), (1, 9.0)):
            for sampler, rtfx, passes in (
                (PBEB, 40.0 + b, 4.0),
                (TOPK, 10.0, 32.0),
                ("ar_greedy", 60.0 - 20 * b, tokens + 1),
            ):
                lines.append(
                    _line(
                        "length_bins",
                        seed,
                        "test",
                        sampler=sampler,
                        nfe=32,
                        bin=b,
                        bins=2,
                        tokens_min=int(tokens) - 1,
                        tokens_max=int(tokens) + 1,
                        tokens_mean=tokens,
                        rtfx=rtfx,
                        mean_nfe=passes,
                        wer=50.0,
                        repeats=2,
                    )
                )
    return lines


def _write(path: Path, lines: list[dict]) -> Path:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def test_report_tables_hold_seed_means_spreads_and_provenance(tmp_path):
    data = _write(tmp_path / "ablations.jsonl", fixture_lines())
    page = tmp_path / "ablations.md"
    page.write_text("# Ablations\n\nWritten reading stays.\n")
    assert report.main([str(data), f"--page={page}", f"--img={tmp_path / 'img'}"]) == 0
    text = page.read_text()
    assert "Written reading stays." in text
    # PBEB at 70 (seed 0) and 72 (seed 1): mean 71.0, half spread 1.0, best sampler in bold.
    assert "| PBEB | **71.0 ± 1.0** | **71.0 ± 1.0** | 5.0 ± 0.0 |" in text
    assert "| top-K linear | 81.0 ± 1.0 | 81.0 ± 1.0 |" in text
    assert "| AR greedy | 75.0 ± 0.0 | 75.0 ± 0.0 | 6.0 ± 0.0 |" in text
    assert "NFE 4: PBEB < top-K linear" in text
    # Grid: best cell (lam 0, gamma 0.05) -> mean 61.05 over the seeds.
    assert "| 0.0 | **61.0 ± 1.0** |" in text or "| 0.0 | **61.1 ± 1.0** |" in text
    assert "Not run: canvas 256 does not fit." in text
    # Length bins: PBEB / AR RTFx ratio 40/60 in bin 0, 41/40 in bin 1.
    assert "| 0 (2-4) | 3.0 |" in text and "0.67 ± 0.00" in text and "1.02 ± 0.00" in text
    # Provenance: workdirs shown as RUNS/<name>, the commit, the machine, the seeds.
    assert "--workdir=RUNS/e2" in text and "/somewhere" not in text
    assert "`abc1234567`" in text and "2 cores" in text and "0 (`w0`), 1 (`w1`)" in text
    for name in ("ablation_samplers.png", "ablation_pbeb_grid.png", "ablation_length.png"):
        png = tmp_path / "img" / name
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size < 100_000


def test_report_is_regenerated_identically_from_the_same_lines(tmp_path):
    data = _write(tmp_path / "ablations.jsonl", fixture_lines())
    page = tmp_path / "ablations.md"
    args = [str(data), f"--page={page}", f"--img={tmp_path / 'img'}"]
    report.main(args)
    first_page = page.read_text()
    first_png = (tmp_path / "img" / "ablation_samplers.png").read_bytes()
    page.write_text(first_page.replace("71.0 ± 1.0", "stale"))
    report.main(args)
    assert page.read_text() == first_page
    assert first_page.count(report.BEGIN) == 1
    assert (tmp_path / "img" / "ablation_samplers.png").read_bytes() == first_png


def test_report_keeps_each_scale_in_its_own_sections_and_plots(tmp_path):
    whisper = dict(
        recipe="whisper_synth v1, 600 steps, ISCT K=2",
        normalizer="english",
        command=(
            "python benchmarks/ablations.py --workdir=/somewhere/runs/isct_k2_s0 "
            "--ar_workdir=/somewhere/runs/ws_ar --out=/x/ablations_whisper.jsonl"
        ),
    )
    lines = fixture_lines() + [
        {**_line("samplers", 0, "test", sampler=PBEB, nfe=4, wer=30.0, mean_nfe=9.0), **whisper},
        {
            **_line("samplers", 0, "test", sampler="ar_greedy", nfe=None, wer=28.0, mean_nfe=12.0),
            **whisper,
            "ar_workdir": "ws_ar",
        },
    ]
    data = _write(tmp_path / "ablations.jsonl", lines)
    page = tmp_path / "ablations.md"
    assert report.main([str(data), f"--page={page}", f"--img={tmp_path / 'img'}"]) == 0
    text = page.read_text()
    demo, rest = text.split("## Samplers × NFE (Whisper tiny.en, whisper_synth)")
    # The demo's sections come first under their plain headings, without the whisper lines.
    assert "## Samplers × NFE\n" in demo and "30.0" not in demo
    assert "| PBEB | **71.0 ± 1.0** | **71.0 ± 1.0** | 5.0 ± 0.0 |" in demo
    # The whisper scale: its own table, plot and provenance (AR run's path shortened too).
    assert "| PBEB | **30.0** | 9.0 |" in rest and "| AR greedy | 28.0 | 12.0 |" in rest
    assert "img/ablation_samplers_whisper_synth.png" in rest
    assert "--ar_workdir=RUNS/ws_ar" in rest and "/somewhere" not in text
    assert "normaliser `english`" in rest and "PBEB WER over" not in rest
    png = tmp_path / "img" / "ablation_samplers_whisper_synth.png"
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_report_names_the_bad_line(tmp_path, capsys):
    data = tmp_path / "bad.jsonl"
    data.write_text(
        json.dumps(_line("samplers", 0, "test", sampler=PBEB, nfe=4, wer=1.0)) + "\n{oops\n"
    )
    assert report.main([str(data), f"--page={tmp_path / 'p.md'}"]) == 2
    assert "bad.jsonl:2" in capsys.readouterr().err


def test_sweep_arguments_fail_fast_with_the_fix(capsys):
    with pytest.raises(SystemExit):
        ablations.parse_args(["--parts=a,z", "--workdir=x"])
    assert "not in" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablations.parse_args(["--parts=a"])
    assert "--workdir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablations.parse_args(["--workdir=x", "--canvases=recipe,huge"])
    assert "--canvases" in capsys.readouterr().err
    assert ablations.parse_args(["--workdir=x", "--canvases=recipe"]).canvases_list == ["recipe"]
    with pytest.raises(ablations.AblationError, match="config.json"):
        ablations.open_run(REPO / "docs", ["test"])


def test_training_variants_override_real_config_keys():
    from mdm_asr_jax.train.defaults import base_config

    objective = base_config().objective
    for variant, overrides in ablations.TRAIN_VARIANTS.items():
        for override in overrides:
            key, value = override.removeprefix("--config.").split("=")
            section, name = key.split(".")
            assert section == "objective" and name in objective, (variant, override)
    command = ablations.train_command("configs/demo.py", Path("w"), "plain_mdm", 1, 300)
    assert (
        "--config.objective.isct_steps=1" in command and "--config.train.num_steps=300" in command
    )
    assert "--config.seed=1" in command
    with pytest.raises(ablations.AblationError, match="one of"):
        ablations.train_command("configs/demo.py", Path("w"), "k9", 0, None)


def test_two_run_arguments_pair_each_mdm_run_with_one_ar_run(capsys):
    with pytest.raises(SystemExit):
        ablations.parse_args(["--workdir=a", "--workdir=b", "--ar_workdir=x"])
    assert "one AR run per MDM run" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ablations.parse_args(["--train", "--train_root=r", "--ar_workdir=x", "--ar_workdir=y"])
    assert "one --ar_workdir" in capsys.readouterr().err
    args = ablations.parse_args(["--workdir=a", "--ar_workdir=x"])
    assert args.ar_workdir == ["x"]


def test_a_run_without_a_data_folder_finds_its_manifests_through_its_config(tmp_path):
    manifest = tmp_path / "ar_run" / "test.jsonl"
    manifest.parent.mkdir()
    manifest.write_text("")
    info = {"config": {"data": {"test_manifest": str(manifest), "dev_manifest": "/gone.jsonl"}}}
    assert ablations.find_manifest(tmp_path / "mdm_run", "test", info) == manifest
    # A recorded manifest that no longer exists, or none at all, is named with the fix.
    with pytest.raises(ablations.AblationError, match="data.dev_manifest"):
        ablations.find_manifest(tmp_path / "mdm_run", "dev", info)
    with pytest.raises(ablations.AblationError, match="choose --splits"):
        ablations.find_manifest(tmp_path / "mdm_run", "test_accent", info)


def test_training_overrides_follow_the_variant_flags():
    command = ablations.train_command(
        "configs/whisper_synth.py:mdm,from_ar=AR",
        Path("w"),
        "plain_mdm",
        0,
        600,
        ["--config.recipe_options.num_train=3000"],
    )
    assert command[-1] == "--config.recipe_options.num_train=3000"
    assert "--config=configs/whisper_synth.py:mdm,from_ar=AR" in command
    args = ablations.parse_args(
        ["--train", "--train_root=r", "--train_override=--config.a=1", "--train_override=--b=2"]
    )
    assert args.train_override == ["--config.a=1", "--b=2"]


# The sweep's options in the tiny-checkpoint tests: PBEB at NFE 2 on every second utterance.
TINY_SWEEP = dict(
    normalizer="basic",
    max_utterances=None,
    num_bins=2,
    repeats=1,
    every=2,
    samplers_a=["pbeb(lam=0.2,gamma=0.05)"],
    nfes_a=[2],
)


def _tiny_corpus(tmp_path: Path, count: int = 6):
    """(tokenizer, manifest rows) of `count` tones with digit-word transcripts."""
    import numpy as np

    from mdm_asr_jax.audio import write_wav
    from mdm_asr_jax.text import SentencePieceTokenizer

    words = "zero one two three four five six seven eight nine".split()
    text = [" ".join(words[(i + j) % 10] for j in range(1 + i % 4)) for i in range(60)]
    tokenizer = SentencePieceTokenizer.train(
        text, tmp_path / "spm", vocab_size=24, model_type="word", hard_vocab_limit=False
    )
    audio = tmp_path / "audio"
    audio.mkdir()
    rows = []
    for i in range(count):
        t = np.arange(int(16000 * (0.3 + 0.1 * i))) / 16000
        write_wav(
            audio / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32)
        )
        rows.append({"audio": str(audio / f"{i}.wav"), "text": text[i]})
    return tokenizer, rows


@pytest.mark.slow
def test_sweep_of_a_two_run_recipe_takes_ar_lines_from_the_ar_run(tmp_path):
    import dataclasses

    from mdm_asr_jax.audio import FeatureConfig
    from mdm_asr_jax.checkpoint import DecodingDefaults, export_checkpoint

    sys.path.insert(0, str(REPO / "tests"))
    from test_eval import random_params
    from tiny import tiny_model_config

    tokenizer, rows = _tiny_corpus(tmp_path)
    manifest = tmp_path / "ar" / "data" / "tiny" / "test.jsonl"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # Phase 2 of the paper's recipe: an MDM-only model (positions for 259 tokens, trained on a
    # canvas of 8) whose workdir has no data/ folder; phase 1: an AR-only model.
    mdm_config = tiny_model_config(vocab_size=tokenizer.vocab_size, ar=False, ctc=False)
    mdm_config = dataclasses.replace(
        mdm_config, mdm_decoder=dataclasses.replace(mdm_config.mdm_decoder, max_length=260)
    ).validate()
    info = {"config": {"seed": 5, "recipe": "tiny", "data": {"test_manifest": str(manifest)}}}
    mdm = export_checkpoint(
        tmp_path / "mdm",
        mdm_config,
        random_params(mdm_config),
        FeatureConfig(),
        tokenizer,
        decoding=DecodingDefaults(canvas_length=8),
        info=info,
    )
    full = tiny_model_config(vocab_size=tokenizer.vocab_size, ctc=False)
    ar_config = dataclasses.replace(full, mdm_decoder=None).validate()
    ar = export_checkpoint(
        tmp_path / "ar", ar_config, random_params(ar_config), FeatureConfig(), tokenizer
    )
    other = export_checkpoint(
        tmp_path / "other",
        ar_config,
        random_params(ar_config),
        FeatureConfig(num_mels=128),
        tokenizer,
    )
    with pytest.raises(ablations.AblationError, match="no MDM decoder"):
        ablations.open_run(ar, ["test"])
    with pytest.raises(ablations.AblationError, match="features differ"):
        ablations.open_run(mdm, ["test"], other)
    out = tmp_path / "lines.jsonl"
    record = ablations.Recorder(out, {"commit": "c", "machine": "m", "command": "x"})
    alone = ablations.open_run(mdm, ["test"])
    assert alone.manifests["test"] == manifest and alone.seed == 5
    with pytest.raises(ablations.AblationError, match="--ar_workdir"):  # before any decoding
        ablations.sweep(
            [alone],
            ["test"],
            ["a"],
            record,
            normalizer="basic",
            max_utterances=None,
            num_bins=2,
            repeats=1,
        )
    assert not out.exists() or out.read_text() == ""
    run = ablations.open_run(mdm, ["test"], ar)
    written = ablations.sweep(
        [run],
        ["test"],
        ["a", "c"],
        record,
        **TINY_SWEEP,
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert written == len(lines) == 8
    greedy = [x for x in lines if x["sampler"] == "ar_greedy"]
    assert len(greedy) == 1 and greedy[0]["ar_workdir"] == "ar"
    assert greedy[0]["workdir"] == "mdm" and greedy[0]["seed"] == 5 and greedy[0]["n"] == 3
    # The canvas part: the recipe's canvas is the decoding default (8), and the paper's 256 fits
    # the decoder's 259 positions, so it is decoded, not skipped.
    canvas = [x for x in lines if x["ablation"] == "canvas"]
    assert not any(x.get("skipped_reason") for x in canvas)
    assert sorted({(x["variant"], x["canvas"]) for x in canvas}) == [
        ("adaptive", 8),
        ("paper_256", 256),
        ("recipe", 8),
    ]
    assert all(x["recipe_canvas"] == 8 for x in lines)


@pytest.mark.slow
def test_sweep_records_every_part_on_a_tiny_checkpoint(tmp_path):
    from mdm_asr_jax.audio import FeatureConfig
    from mdm_asr_jax.checkpoint import export_checkpoint

    sys.path.insert(0, str(REPO / "tests"))
    from test_eval import random_params
    from tiny import tiny_model_config

    tokenizer, rows = _tiny_corpus(tmp_path)
    config = tiny_model_config(vocab_size=tokenizer.vocab_size)
    workdir = export_checkpoint(
        tmp_path / "run",
        config,
        random_params(config),
        FeatureConfig(),
        tokenizer,
        info={"config": {"seed": 3, "recipe": "tiny"}},
    )
    data = workdir / "data" / "tiny"
    data.mkdir(parents=True)
    for split in ("test", "test_accent"):
        (data / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    splits = ["test", "test_accent"]
    run = ablations.open_run(workdir, splits)
    assert run.seed == 3 and run.recipe.startswith("tiny")
    out = tmp_path / "lines.jsonl"
    record = ablations.Recorder(out, {"commit": "c", "machine": "m", "command": "x"})
    written = ablations.sweep(
        [run],
        splits,
        ["a", "b", "c", "d"],
        record,
        **TINY_SWEEP,
        lams=[0.0],
        gammas=[0.5],
    )
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert written == len(lines)
    # Per split: a: PBEB at NFE 2 + AR greedy; b: one grid cell; c: 256 skipped, recipe and
    # adaptive at NFE 16 and 32; d: 2 bins x 3 decoders. Every part runs for both splits.
    for split in splits:
        kinds = [x["ablation"] for x in lines if x["split"] == split]
        assert kinds.count("samplers") == 2 and kinds.count("pbeb_grid") == 1, split
        assert kinds.count("canvas") == 5 and kinds.count("length_bins") == 6, split
    skipped = [x for x in lines if x.get("skipped_reason")]
    assert len(skipped) == 2 and "canvas_length=256" in skipped[0]["skipped_reason"]
    for x in lines:
        assert x["seed"] == 3 and x["commit"] == "c"
        if not x.get("skipped_reason"):
            assert x["n"] in (1, 2, 3) and x["wer"] >= 0  # every=2 keeps indices 0, 2, 4
    bins = [x for x in lines if x["ablation"] == "length_bins"]
    assert sum(x["n"] for x in bins if x["sampler"] == "ar_greedy") == 6
