"""gs:// paths: kept as URIs (never made local), other schemes refused, side files atomic, and a
checkpoint directory, a manifest and its audio read and written through a real Cloud Storage API
(the emulator of `gcs_emulator.py`), including a bucket workdir trained, preempted, resumed and
evaluated end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from gcs_emulator import gcs_bucket  # noqa: F401 - the fixture
from tiny import tiny_model_config
from train_fixtures import WORDS, tiny_train_config, write_corpus

from mdm_asr_jax import checkpoint as ckpt
from mdm_asr_jax import paths
from mdm_asr_jax.audio import FeatureConfig, load_audio
from mdm_asr_jax.data.manifest import read_manifest
from mdm_asr_jax.text import SentencePieceTokenizer
from mdm_asr_jax.train.resume import PREEMPTED_EXIT_CODE
from mdm_asr_jax.train.trainer import train_and_evaluate


def test_gs_uri_stays_a_uri_and_local_paths_become_absolute(tmp_path, monkeypatch):
    assert os.fspath(paths.resolve("gs://bucket/run")) == "gs://bucket/run"
    monkeypatch.chdir(tmp_path)
    assert os.fspath(paths.resolve("run")) == str(tmp_path / "run")


@pytest.mark.parametrize("uri", ["s3://bucket/run", "http://host/run", "gcs://bucket/run"])
def test_unknown_scheme_is_refused_naming_the_input_before_any_work(uri, tmp_path):
    with pytest.raises(paths.PathError, match=rf"workdir={uri} uses the scheme .*gs://"):
        train_and_evaluate(tiny_train_config(tmp_path / "missing.jsonl"), uri)


def test_atomic_write_leaves_only_the_final_file(tmp_path):
    target = paths.resolve(tmp_path / "sub" / "best.json")
    paths.write_text_atomic(target, '{"step": 1}')
    paths.write_text_atomic(target, '{"step": 2}')
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["best.json"]
    assert json.loads(target.read_text()) == {"step": 2}


def _tokenizer(tmp_path: Path) -> SentencePieceTokenizer:
    texts = [" ".join(WORDS[(i + j) % 10] for j in range(3)) for i in range(40)]
    return SentencePieceTokenizer.train(texts, tmp_path / "spm", 24, "unigram", lowercase=True,
                                        hard_vocab_limit=False)  # fmt: skip


def test_checkpoint_config_and_tokenizer_round_trip_through_the_bucket(gcs_bucket, tmp_path):  # noqa: F811
    tokenizer = _tokenizer(tmp_path)
    model = tiny_model_config(vocab_size=tokenizer.vocab_size)
    directory = f"{gcs_bucket}/ckpt_roundtrip"
    ckpt.write_config(directory, model, FeatureConfig(), tokenizer, info={"note": "gs"})
    ckpt.write_config(directory, model, FeatureConfig(), tokenizer, info={"note": "again"})
    model2, _, tokenizer2, _, info = ckpt.read_config(directory)
    assert model2 == model and info == {"note": "again"}
    assert tokenizer2.encode("one two three") == tokenizer.encode("one two three")
    assert not (tmp_path / "gs:").exists() and not Path("gs:").exists()  # nothing local


def test_manifest_and_audio_are_read_from_the_bucket(gcs_bucket, tmp_path):  # noqa: F811
    manifest = write_corpus(tmp_path / "data", count=2)
    remote = paths.resolve(f"{gcs_bucket}/corpus")
    paths.copy_tree(manifest.parent, remote)
    entries, problems = read_manifest(f"{gcs_bucket}/corpus/train.jsonl")
    assert not problems and entries[0].audio == f"{gcs_bucket}/corpus/utt0.wav"
    np.testing.assert_array_equal(
        load_audio(entries[0].audio), load_audio(manifest.parent / "utt0.wav")
    )


_BUCKET_RUN = r"""
import json, sys
from pathlib import Path
from train_fixtures import tiny_train_config
from mdm_asr_jax.train.resume import PREEMPTED_EXIT_CODE
from mdm_asr_jax.train.trainer import train_and_evaluate
c = tiny_train_config(Path(sys.argv[1]), num_steps=int(sys.argv[3]))
c.train.checkpoint_every = 1000
results = train_and_evaluate(c, sys.argv[2])
print("RESULT", json.dumps(results.get("history", [])), flush=True)
sys.exit(PREEMPTED_EXIT_CODE if "preempted" in results else 0)
"""


@pytest.mark.slow
def test_bucket_workdir_trains_is_preempted_resumes_and_evaluates(gcs_bucket, tmp_path):  # noqa: F811
    """The 'Done when' line: a gs:// workdir on the emulated bucket; SIGTERM mid-run saves to the
    bucket, the rerun resumes from it, and `mdm-asr-eval --checkpoint=gs://...` scores it."""
    manifest = write_corpus(tmp_path / "data")
    workdir = f"{gcs_bucket}/runs/tiny"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parent) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }

    def command(num_steps: int) -> list[str]:
        return [sys.executable, "-c", _BUCKET_RUN, str(manifest), workdir, str(num_steps)]

    proc = subprocess.Popen(
        command(10_000), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if line.startswith("step 2/"):
            proc.send_signal(signal.SIGTERM)
            break
    lines += proc.stdout.readlines()
    log = "".join(lines)
    assert proc.wait(timeout=600) == PREEMPTED_EXIT_CODE, log[-3000:]
    saved = int(log.split("preempted: saved step ")[1].split()[0])
    steps = [p.name for p in paths.resolve(f"{workdir}/checkpoints").iterdir()]
    assert str(saved) in steps

    rerun = subprocess.run(command(saved + 1), env=env, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert f"resumed from step {saved}" in rerun.stdout
    assert not Path("gs:").exists()

    out = tmp_path / "eval.jsonl"
    evaluated = subprocess.run(
        [sys.executable, "-m", "mdm_asr_jax.cli.evaluate", f"--checkpoint={workdir}",
         f"--manifest={manifest}", "--sampler=ar_greedy", f"--output={out}"],
        env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stdout[-3000:] + evaluated.stderr[-3000:]
    line = json.loads(out.read_text().splitlines()[0])
    assert line["n"] == 16 and 0.0 <= line["wer"]
