"""`mdm-asr-prepare` end to end in subprocesses: synth -> spm -> check, and clear usage errors."""

from __future__ import annotations

import json
import subprocess
import sys


def _prepare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mdm_asr_jax.cli.prepare", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prepare_synth_spm_check_chain(tmp_path):
    synth = _prepare(
        "synth", "--generate=digits", "--num_sentences=6", "--test_fraction=0.34",
        "--test_voices=1", "--voices=m1,f1,m3", f"--out_dir={tmp_path / 'synth'}",
    )  # fmt: skip
    assert synth.returncode == 0, synth.stderr
    summary = json.loads(synth.stdout.strip().splitlines()[-1])
    assert summary["utterances"] == {"test": 2, "train": 4}
    assert summary["not_synthesised"] == []

    spm = _prepare(
        "spm", f"--manifests={summary['manifests']['train']}", "--vocab_size=24",
        f"--out_dir={tmp_path / 'spm'}",
    )  # fmt: skip
    assert spm.returncode == 0, spm.stderr
    assert json.loads(spm.stdout.strip().splitlines()[-1])["vocab_size"] == 25  # + [MASK]

    check = _prepare("check", f"--manifest={summary['manifests']['test']}")
    assert check.returncode == 0, check.stderr
    checked = json.loads(check.stdout.strip().splitlines()[-1])
    assert checked["utterances"] == 2 and checked["problems"] == []


def test_prepare_reports_bad_input_without_traceback(tmp_path):
    missing = _prepare("synth", f"--text_file={tmp_path / 'nope.txt'}", f"--out_dir={tmp_path}")
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    usage = _prepare("synth", f"--out_dir={tmp_path}")
    assert usage.returncode != 0 and "--text_file or --generate" in usage.stderr
