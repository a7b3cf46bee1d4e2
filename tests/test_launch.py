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


# For tpu_vm_spot.sh: `describe` answers the next VM state of FAKE_STATES, `ssh` the next exit
# code of FAKE_RCS; every call is logged.
FAKE_SPOT_GCLOUD = """#!/usr/bin/env bash
if [[ "$1" == "config" ]]; then echo fake-project; exit 0; fi
printf '%s\\n' "$(printf '%s ' "$@" | tr '\\n' ' ')" >> "$FAKE_GCLOUD_LOG"
pop() { head -n1 "$1"; sed -i 1d "$1"; }
case "$4" in
  describe) state="$(pop "$FAKE_STATES")"; [[ "$state" == MISSING ]] && exit 1; echo "$state";;
  ssh) exit "$(pop "$FAKE_RCS")";;
esac
"""


def _spot(
    tmp_path: Path, states: list[str], rcs: list[int], **extra: str
) -> tuple[int, list[str], str]:
    env = _fake_tools(tmp_path)
    (tmp_path / "bin" / "gcloud").write_text(FAKE_SPOT_GCLOUD)
    (tmp_path / "states").write_text("".join(s + "\n" for s in states))
    (tmp_path / "rcs").write_text("".join(f"{rc}\n" for rc in rcs))
    env |= {"FAKE_STATES": str(tmp_path / "states"), "FAKE_RCS": str(tmp_path / "rcs")}
    env |= {"RETRY_SECONDS": "0", "SPOT": "1", **extra}
    result = subprocess.run(
        ["bash", str(LAUNCH / "tpu_vm_spot.sh"), "mdm-asr-train", "--workdir=gs://b/run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    calls = Path(env["FAKE_GCLOUD_LOG"]).read_text().splitlines()
    return result.returncode, calls, result.stderr


def _verbs(calls: list[str]) -> list[str]:
    """The tpu-vm verbs in order, ssh calls that run the training command as 'train'."""
    out = []
    for call in calls:
        verb = call.split()[3]
        if verb == "ssh" and "mdm-asr-train" not in call:
            verb = "ssh-setup"
        out.append("train" if verb == "ssh" else verb)
    return out


def test_spot_loop_reruns_the_command_after_preemption_until_it_finishes(tmp_path):
    # Run 1: SIGTERM save (exit 75). Run 2: the VM is preempted under it (ssh 255, PREEMPTED):
    # delete, create again, set up. Run 3 finishes.
    states = ["READY", "READY", "READY", "PREEMPTED", "PREEMPTED", "READY"]
    rc, calls, stderr = _spot(tmp_path, states, [75, 255, 0, 0, 0, 0, 0])
    assert rc == 0, stderr
    verbs = [v for v in _verbs(calls) if v not in ("ssh-setup", "scp")]
    assert verbs == [
        "describe", "train", "describe",
        "describe", "train", "describe",
        "describe", "delete", "create", "describe", "train",
    ]  # fmt: skip
    create = next(c for c in calls if c.split()[3] == "create")
    assert "--spot" in create
    assert "finished after 2 restart(s)" in stderr


def test_spot_loop_stops_on_a_failure_that_is_not_a_preemption(tmp_path):
    rc, calls, stderr = _spot(tmp_path, ["READY", "READY"], [1])
    assert rc == 1
    assert _verbs(calls) == ["describe", "train", "describe"]
    assert "not a preemption" in stderr


def test_spot_loop_creates_a_missing_vm_and_bounds_the_restarts(tmp_path):
    states = ["MISSING", "READY"] + ["READY"] * 4  # the second: tpu_vm_create.sh's describe
    rc, calls, stderr = _spot(tmp_path, states, [0, 75, 75], MAX_RESTARTS="1")  # 0: setup
    assert rc == 75
    assert "does not exist: creating it" in stderr and "1 restarts used up" in stderr
    verbs = [v for v in _verbs(calls) if v not in ("ssh-setup", "scp")]
    assert verbs == ["describe", "create", "describe", "train", "describe", "describe", "train",
                     "describe"]  # fmt: skip
