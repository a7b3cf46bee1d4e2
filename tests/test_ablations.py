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


@pytest.mark.slow
def test_sweep_records_every_part_on_a_tiny_checkpoint(tmp_path):
    import numpy as np

    from mdm_asr_jax.audio import FeatureConfig, write_wav
    from mdm_asr_jax.checkpoint import export_checkpoint
    from mdm_asr_jax.text import SentencePieceTokenizer

    sys.path.insert(0, str(REPO / "tests"))
    from test_eval import random_params
    from tiny import tiny_model_config

    words = "zero one two three four five six seven eight nine".split()
    text = [" ".join(words[(i + j) % 10] for j in range(1 + i % 4)) for i in range(60)]
    tokenizer = SentencePieceTokenizer.train(
        text, tmp_path / "spm", vocab_size=24, model_type="word", hard_vocab_limit=False
    )
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
    rows = []
    for i in range(6):
        t = np.arange(int(16000 * (0.3 + 0.1 * i))) / 16000
        write_wav(
            data / f"{i}.wav", (0.3 * np.sin(2 * np.pi * (200 + 40 * i) * t)).astype(np.float32)
        )
        rows.append({"audio": str(data / f"{i}.wav"), "text": text[i]})
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
        normalizer="basic",
        max_utterances=None,
        num_bins=2,
        repeats=1,
        every=2,
        samplers_a=["pbeb(lam=0.2,gamma=0.05)"],
        nfes_a=[2],
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
