"""The decoding explorer notebook runs top to bottom (nbclient) and is committed without outputs.

Two runs, both `slow`:
- on a tiny random checkpoint (2 layers, width 32; exported with `export_checkpoint`) and a
  6-utterance FSDD manifest, with MDM_NOTEBOOK_FAST=1 (fewer samplers and NFE values); it
  compiles a dozen decode functions, a few minutes on a 2-core CPU;
- the path a fresh Colab runtime takes: no checkpoint, so the notebook trains the demo inline
  (`configs/demo.py:runlocal`, synthesised corpus included), from a fresh kernel whose working
  directory is not the checkout; the install cell's clone + pip is replaced by
  MDM_ASR_NOTEBOOK_LOCAL=<this checkout>, and COLAB_GPU=1 on a CPU-only jax must print the
  backend warning. One run: 41 minutes on a 2-core x86_64 CPU.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import flax.linen
import jax
import nbformat
import numpy as np
import pytest
from tiny import tiny_model_config

from mdm_asr_jax.audio import FeatureConfig, load_audio, write_wav
from mdm_asr_jax.checkpoint import DecodingDefaults, export_checkpoint
from mdm_asr_jax.nn.model import ASRModel, init_params
from mdm_asr_jax.text import SentencePieceTokenizer

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "decoding_explorer.ipynb"
FSDD = REPO.parent / "shared" / "data" / "fsdd"
DIGITS = "zero one two three four five six seven eight nine".split()


def make_tiny_checkpoint(directory: Path) -> Path:
    """A random-weight checkpoint with MDM + AR heads and a digit-word tokenizer."""
    text = [" ".join(DIGITS[(i + j) % 10] for j in range(1 + i % 4)) for i in range(60)]
    tokenizer = SentencePieceTokenizer.train(
        text, directory / "spm", vocab_size=24, model_type="word", hard_vocab_limit=False
    )
    config = tiny_model_config(vocab_size=tokenizer.vocab_size, ctc=False)
    shapes = jax.eval_shape(lambda k: init_params(ASRModel(config), k), jax.random.key(0))
    rng = np.random.default_rng(0)
    params = jax.tree.map(
        lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype),
        flax.linen.meta.unbox(shapes)["params"],
    )
    return export_checkpoint(
        directory / "ckpt",
        config,
        params,
        FeatureConfig(),
        tokenizer,
        decoding=DecodingDefaults(canvas_length=8),
    )


def make_manifest(directory: Path) -> Path:
    """Six FSDD recordings (16 kHz copies, relative paths), or tones when FSDD is absent."""
    (directory / "wav").mkdir(parents=True, exist_ok=True)
    lines = []
    for digit, speaker in enumerate(["george", "jackson", "lucas", "nicolas", "theo", "yweweler"]):
        source = FSDD / f"{digit}_{speaker}_0.wav"
        if source.exists():
            audio = load_audio(source)
        else:
            t = np.arange(int(16000 * 0.4)) / 16000
            audio = (0.3 * np.sin(2 * np.pi * (200 + 40 * digit) * t)).astype(np.float32)
        write_wav(directory / "wav" / f"{digit}.wav", audio)
        lines.append({"audio": f"wav/{digit}.wav", "text": DIGITS[digit]})
    path = directory / "test.jsonl"
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_notebook_is_committed_without_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code, "the notebook has no code cells"
    for cell in code:
        assert cell.outputs == [], f"cell with outputs committed: {cell.source[:60]!r}"
        assert cell.execution_count is None


@pytest.mark.slow
def test_notebook_runs_top_to_bottom_on_a_tiny_checkpoint(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    checkpoint = make_tiny_checkpoint(tmp_path)
    manifest = make_manifest(tmp_path / "data")
    monkeypatch.setenv("MDM_NOTEBOOK_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("MDM_NOTEBOOK_MANIFEST", str(manifest))
    monkeypatch.setenv("MDM_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.delenv("XLA_FLAGS", raising=False)  # one CPU device, as a user has
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    text, html, images = notebook_outputs(notebook)
    check_figures_and_sweep(text, html, images, utterances=6)


def notebook_outputs(notebook) -> tuple[str, str, int]:
    """(printed text, HTML, number of PNG images) of an executed notebook."""
    text = "\n".join(
        output.get("text", "") or json.dumps(output.get("data", {}).get("text/plain", ""))
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    html = "\n".join(
        output.get("data", {}).get("text/html", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    images = sum(
        "image/png" in output.get("data", {})
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
    )
    return text, html, images


def check_figures_and_sweep(text: str, html: str, images: int, utterances: int) -> None:
    """The comparison table, the trajectory grid, the plots and the WER-vs-NFE lines."""
    # Side-by-side table: pbeb, topk and AR greedy (FAST mode), each with its NFE used.
    for spec in ("pbeb(lam=0.2,gamma=0.05", "topk(schedule=linear", "ar_greedy"):
        assert spec in html, f"sampler {spec} missing from the comparison table"
    # The trajectory grid and the confidence / entropy / WER plots.
    assert "steps (NFE cap 16)" in text
    assert images >= 2, f"expected the trajectory and WER plots, got {images} images"
    # WER vs NFE: one JSON line per (sampler, nfe) with the contract keys.
    rows = [json.loads(line) for line in text.splitlines() if line.startswith('{"sampler"')]
    nfes = sorted(r["nfe"] for r in rows if r["nfe"] is not None)
    assert nfes == [2, 4], rows
    assert all(r["n"] == utterances for r in rows), rows


@pytest.mark.slow
def test_notebook_trains_the_demo_inline_from_a_fresh_kernel_as_colab_would(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    workdir = tmp_path / "content"  # Colab's working directory: not a checkout
    workdir.mkdir()
    copy = workdir / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    for name in ("MDM_NOTEBOOK_CHECKPOINT", "MDM_NOTEBOOK_MANIFEST", "MDM_NOTEBOOK_AUDIO"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PYTHONPATH", raising=False)  # the install cell puts the checkout first
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.setenv("MDM_ASR_NOTEBOOK_LOCAL", str(REPO))
    monkeypatch.setenv("MDM_NOTEBOOK_WORKDIR", str(tmp_path / "demo"))
    monkeypatch.setenv("MDM_NOTEBOOK_DEMO_ARG", "runlocal")
    monkeypatch.setenv("MDM_NOTEBOOK_DEMO_STEPS", "0")  # runlocal's own 4 steps
    monkeypatch.setenv("MDM_NOTEBOOK_DEMO_UTTERANCES", "0")
    monkeypatch.setenv("MDM_NOTEBOOK_FAST", "1")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("COLAB_GPU", "1")  # a GPU runtime whose jax ended up on the CPU
    notebook = nbformat.read(copy, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=3600,
        kernel_name="python3",
        resources={"metadata": {"path": str(workdir)}},
    )
    client.execute()
    text, html, images = notebook_outputs(notebook)
    assert f"mdm_asr_jax from {REPO / 'mdm_asr_jax' / '__init__.py'}" in text, text[:2000]
    assert "backend cpu" in text
    assert "WARNING: this runtime has a GPU but jax runs on the CPU" in text
    assert "training configs/demo.py:runlocal for 4 steps" in text
    assert "trained the demo in" in text
    assert (tmp_path / "demo" / "data" / "demo" / "test.jsonl").exists()
    check_figures_and_sweep(text, html, images, utterances=8)
