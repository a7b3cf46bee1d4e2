"""Launch scripts: every shell script in launch/ parses (`bash -n`) and is executable."""

from __future__ import annotations

import os
import re
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


# The TPU scripts run everything through `gcloud`; a fake one on PATH records the command a
# worker would get (and, in "run" mode, runs it here as that worker would).
FAKE_GCLOUD = """#!/usr/bin/env bash
if [[ "$1" == "config" ]]; then echo fake-project; exit 0; fi
for arg in "$@"; do
  case "$arg" in
    --command=*) command="${arg#--command=}";;
  esac
done
if [[ -n "${command:-}" ]]; then
  printf '%s\\n' "$command" >> "$FAKE_GCLOUD_LOG"
  if [[ "$FAKE_GCLOUD_MODE" == "run" ]]; then bash -c "$command"; exit $?; fi
fi
"""


def _fake_tools(tmp_path: Path, lsof_output: str = "") -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tools = {
        "gcloud": FAKE_GCLOUD,
        "sudo": '#!/usr/bin/env bash\nexec "$@"\n',
        "lsof": f"#!/usr/bin/env bash\nprintf '{lsof_output}'\n",
    }
    for name, text in tools.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    home = tmp_path / "home"
    (home / "mdm_asr_jax").mkdir(parents=True)
    (home / "venv" / "bin").mkdir(parents=True)
    (home / "venv" / "bin" / "activate").write_text("")
    return {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "HOME": str(home),
        "FAKE_GCLOUD_LOG": str(tmp_path / "gcloud.log"),
        "FAKE_GCLOUD_MODE": "record",
        "LIBTPU_LOCKFILE": str(tmp_path / "libtpu_lockfile"),
    }


def _setup_cfg_jax_floor() -> str:
    text = (LAUNCH.parent / "setup.cfg").read_text()
    return re.search(r"^\s*jax>=([0-9.]+)\s*$", text, re.M).group(1)


def test_jax_pin_of_the_launch_scripts_is_the_setup_cfg_floor():
    floor = _setup_cfg_jax_floor()
    for name in ("common.sh", "gpu_setup.sh"):
        pins = re.findall(r"JAX_VERSION:=([0-9.]+)}", (LAUNCH / name).read_text())
        assert pins == [floor], (name, pins, floor)


@pytest.mark.parametrize("source", ["uv", "deadsnakes"])
def test_tpu_setup_makes_a_python_311_venv_and_installs_the_pinned_jax_tpu(tmp_path, source):
    env = {**_fake_tools(tmp_path), "PYTHON_SOURCE": source}
    result = subprocess.run(
        ["bash", str(LAUNCH / "tpu_vm_setup.sh")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    remote = (tmp_path / "gcloud.log").read_text()
    if source == "uv":
        assert "uv python install 3.11" in remote and "uv venv --seed --python 3.11" in remote
    else:
        assert "ppa:deadsnakes/ppa" in remote
        assert "python3.11 python3.11-venv" in remote and "python3.11 -m venv ~/venv" in remote
    assert "python3 -m venv" not in remote  # Ubuntu 22.04's python3 is 3.10
    assert "sys.version_info >= (3, 11)" in remote
    assert f"'jax[tpu]=={_setup_cfg_jax_floor()}'" in remote


def test_tpu_setup_refuses_an_unknown_python_source(tmp_path):
    env = {**_fake_tools(tmp_path), "PYTHON_SOURCE": "conda"}
    result = subprocess.run(
        ["bash", str(LAUNCH / "tpu_vm_setup.sh")], env=env, capture_output=True, text=True
    )
    assert result.returncode == 2 and "uv or deadsnakes" in result.stderr


def test_tpu_run_clears_a_stale_libtpu_lock_and_sets_the_compilation_cache(tmp_path):
    env = {**_fake_tools(tmp_path), "FAKE_GCLOUD_MODE": "run"}
    lock = Path(env["LIBTPU_LOCKFILE"])
    lock.write_text("")
    result = subprocess.run(
        ["bash", str(LAUNCH / "tpu_vm_run.sh"), "printenv", "JAX_COMPILATION_CACHE_DIR"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    cache = Path(env["HOME"]) / ".cache" / "mdm_asr_jax" / "jax_cache"
    assert result.stdout.strip() == str(cache) and cache.is_dir()
    assert not lock.exists() and "stale" in result.stderr


def test_tpu_run_keeps_the_lock_and_stops_while_a_process_holds_the_tpu(tmp_path):
    env = {**_fake_tools(tmp_path, lsof_output="4242\\n"), "FAKE_GCLOUD_MODE": "run"}
    lock = Path(env["LIBTPU_LOCKFILE"])
    lock.write_text("")
    result = subprocess.run(
        ["bash", str(LAUNCH / "tpu_vm_run.sh"), "echo", "started"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and "4242" in result.stderr
    assert lock.exists() and "started" not in result.stdout


def test_setup_ships_the_project_files_but_never_a_virtual_environment(tmp_path):
    """The archive tpu_vm_setup.sh copies to the workers holds the package and configs, and no
    ignored folder such as the CI's .venv-ci (gigabytes)."""
    import shutil
    import tarfile

    repo = tmp_path / "repo"
    shutil.copytree(LAUNCH.parent / "launch", repo / "launch")
    (repo / "mdm_asr_jax").mkdir()
    (repo / "mdm_asr_jax" / "__init__.py").write_text("")
    (repo / ".venv-ci" / "lib").mkdir(parents=True)
    (repo / ".venv-ci" / "lib" / "big.so").write_text("x" * 1000)
    (repo / ".gitignore").write_text(".venv-ci/\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    script = (
        "source launch/common.sh >/dev/null 2>&1 || true; "
        "archive=$(mktemp -d)/a.tar.gz; REPO_ROOT=.; " + _setup_tar_lines() + ' echo "$archive"'
    )
    result = subprocess.run(["bash", "-c", script], cwd=repo, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    names = tarfile.open(result.stdout.strip().splitlines()[-1]).getnames()
    assert any(n.endswith("mdm_asr_jax/__init__.py") for n in names)
    assert not any(".venv-ci" in n for n in names)


def _setup_tar_lines() -> str:
    """The archive-making block of tpu_vm_setup.sh, as the script runs it."""
    text = (LAUNCH / "tpu_vm_setup.sh").read_text()
    start = text.index("if git -C")
    end = text.index("fi\n", start) + 3
    return text[start:end]
