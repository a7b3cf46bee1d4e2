"""Launch scripts: every shell script in launch/ parses (`bash -n`) and is executable."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parents[1] / "launch"
SCRIPTS = sorted(LAUNCH.glob("*.sh"))


def test_launch_folder_has_tpu_and_gpu_scripts():
    names = {p.name for p in SCRIPTS}
    assert {"tpu_vm_create.sh", "tpu_vm_setup.sh", "tpu_vm_run.sh", "gpu_single.sh"} <= names
    assert {"gpu_multi.sh", "librispeech_960h.sh"} <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_valid_bash_and_executable(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert os.access(script, os.X_OK), f"{script.name} is not executable (chmod +x)"


def test_run_scripts_print_usage_without_arguments():
    for name in ("gpu_single.sh", "librispeech_960h.sh"):
        result = subprocess.run(["bash", str(LAUNCH / name)], capture_output=True, text=True)
        assert result.returncode == 2 and "usage" in result.stderr
