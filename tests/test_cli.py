"""The console scripts explain themselves and fail fast.

- `--help` of every script in setup.cfg's console_scripts, run exactly as pip's wrapper runs it
  (a `__main__` with no docstring and no flags), prints its usage line and its own key flags
  (and the subcommands, where it has them);
- a config error on the command line is one line naming the key and the closest match;
- eval and transcribe reject bad flags before any weights load (the loader is replaced by one
  that fails the test if it is ever called);
- progress bars are drawn only on a terminal and never with --quiet; third-party INFO logs are
  filtered unless --verbose.
"""

from __future__ import annotations

import configparser
import logging as std_logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mdm_asr_jax import progress
from mdm_asr_jax.cli import common

ROOT = Path(__file__).resolve().parents[1]

# Flags each script must list under --help (its own key flags), and its subcommands.
KEY_FLAGS = {
    "mdm-asr-train": ["config", "workdir", "quiet", "verbose"],
    "mdm-asr-eval": [
        "checkpoint", "manifest", "dataset", "sampler", "nfe", "normalizer", "batch_size",
        "output", "hyps", "quiet", "verbose",
    ],
    "mdm-asr-prepare": [
        "out_dir", "text_file", "generate", "num_sentences", "fsdd_dir", "manifests",
        "vocab_size", "name", "data_dir", "source", "manifest", "quiet",
    ],
    "mdm-asr-convert": ["src", "out", "decoders", "language", "full_window", "quiet"],
    "mdm-asr-transcribe": [
        "checkpoint", "sampler", "nfe", "batch_size", "window_seconds", "jsonl", "output",
        "quiet",
    ],
}  # fmt: skip
SUBCOMMANDS = {
    "mdm-asr-prepare": ["synth", "fsdd", "spm", "tfds", "index", "check"],
    "mdm-asr-convert": ["whisper", "nemo"],
}


def console_scripts() -> dict[str, str]:
    """{script name: "module:function"} from setup.cfg."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    lines = parser["options.entry_points"]["console_scripts"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)


def run_script(name: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Runs console script `name` the way pip's generated wrapper does."""
    module, function = console_scripts()[name].split(":")
    code = (
        f"import sys; sys.argv[0] = {name!r}; from {module} import {function}; "
        f"sys.exit({function}())"
    )
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_every_console_script_has_key_flags_listed_here():
    assert set(console_scripts()) == set(KEY_FLAGS)


@pytest.mark.parametrize("name", sorted(KEY_FLAGS))
def test_help_shows_usage_example_and_the_scripts_own_flags(name):
    result = run_script(name, "--help")
    assert result.returncode in (0, 1), result.stderr[-2000:]  # absl's --help exits with 1
    text = result.stdout
    usage, _, flag_list = text.partition("\nflags:\n")
    assert "Usage:" in usage and f"  {name} " in usage, usage[:500]
    examples = [line for line in usage.splitlines() if line.strip().startswith(f"{name} ")]
    assert any("=" in line for line in examples), f"{name} --help shows no example command"
    listed = {
        line.split(":")[0].strip().removeprefix("--").removeprefix("[no]")
        for line in flag_list.splitlines()
        if line.startswith("  --")
    }
    missing = [flag for flag in KEY_FLAGS[name] if flag not in listed]
    assert not missing, f"{name} --help does not list {missing}:\n{text[-3000:]}"
    for command in SUBCOMMANDS.get(name, []):
        assert f"\n  {command} " in usage, f"{name} --help does not name subcommand {command}"


def test_misspelt_config_key_ends_as_one_line_naming_the_closest_key(tmp_path):
    result = run_script(
        "mdm-asr-train",
        f"--config={ROOT / 'configs' / 'demo.py'}",
        f"--workdir={tmp_path / 'w'}",
        "--config.train.stepz=5",
    )
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr[-2000:]
    assert "train.stepz" in lines[0] and "--config.train.num_steps" in lines[0]
    assert not (tmp_path / "w").exists()  # nothing was built


def write_config(directory: Path) -> Path:
    path = directory / "small.py"
    path.write_text(
        "import ml_collections\n\n\n"
        "def get_config(arg=''):\n"
        "    if arg not in ('', 'fast'):\n"
        "        raise ValueError(f'unknown argument {arg!r}; it takes fast')\n"
        "    c = ml_collections.ConfigDict()\n"
        "    c.train = ml_collections.ConfigDict({'num_steps': 10, 'log_every': 2})\n"
        "    c.model = ml_collections.ConfigDict({'width': 32, 'mesh': {'shape': (1, 1)}})\n"
        "    return c\n"
    )
    return path


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--config.train.stepz=5"], ["--config.train.stepz", "--config.train.num_steps"]),
        (["--config.trian.num_steps=5"], ["'trian'", "--config.train.num_steps"]),
        (["--config.model.mesh.shap", "2,2"], ["'shap'", "--config.model.mesh.shape"]),
        (["--config.train.num_steps.x=1"], ["is a value, not a group"]),
    ],
)
def test_config_error_names_the_key_and_the_closest_match(tmp_path, args, expected):
    config = write_config(tmp_path)
    error = common.config_error([f"--config={config}", *args])
    assert error is not None and "\n" not in error
    for part in expected:
        assert part in error, error


def test_config_error_for_missing_files_and_bad_arguments_and_none_for_good_ones(tmp_path):
    config = write_config(tmp_path)
    missing = common.config_error([f"--config={tmp_path / 'smal.py'}"])
    assert "no such config file" in missing and "small.py" in missing  # the closest file
    assert "unknown argument 'slow'" in common.config_error([f"--config={config}:slow"])
    good = [f"--config={config}:fast", "--config.train.num_steps=3", "--config.model.width", "8"]
    assert common.config_error(good) is None
    assert common.config_error(["--workdir=x"]) is None  # no --config: absl reports it


# ---------------------------------------------------------------------------------------------
# Fail fast: bad flags are rejected before any weights load.


@pytest.fixture
def no_weights(monkeypatch):
    """Makes every checkpoint loader fail the test if it is called."""

    def loader(*args, **kwargs):
        raise AssertionError("the checkpoint was loaded before the flags were validated")

    import mdm_asr_jax.checkpoint
    import mdm_asr_jax.eval.evaluate
    import mdm_asr_jax.transcribe

    for module in (mdm_asr_jax.checkpoint, mdm_asr_jax.eval.evaluate, mdm_asr_jax.transcribe):
        monkeypatch.setattr(module, "load_checkpoint", loader)


def _main(cli, argv: list[str]) -> None:
    cli.FLAGS.unparse_flags()
    cli.FLAGS(["prog", *argv])
    try:
        cli.main(["prog"])
    finally:
        cli.FLAGS.unparse_flags()


@pytest.mark.parametrize(
    "flag, message",
    [
        ("--normalizer=englsh", "normalizer 'englsh' is unknown"),
        ("--sampler=pbeb(lam=0.2,gama=0.05)", "gama"),
        ("--sampler=beam_search", "beam_search"),
        ("--nfe=0", "--nfe='0'"),
        ("--batch_size=0", "--batch_size=0"),
        ("--manifest=missing.jsonl", "missing.jsonl does not exist"),
    ],
)
def test_eval_rejects_bad_flags_before_loading_weights(tmp_path, capsys, no_weights, flag, message):
    from mdm_asr_jax.cli import evaluate as cli

    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"audio": "a.wav", "text": "one"}\n')
    argv = [f"--checkpoint={tmp_path}", f"--manifest={manifest}", flag]
    if flag.startswith("--manifest="):
        argv = [f"--checkpoint={tmp_path}", f"--manifest={tmp_path / 'missing.jsonl'}"]
    with pytest.raises(SystemExit) as exit_info:
        _main(cli, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mdm-asr-eval: error:") and message in err, err
    assert err.count("\n") == 1


def test_eval_sampler_help_names_every_registered_sampler_and_its_parameters():
    from mdm_asr_jax.cli import evaluate as cli
    from mdm_asr_jax.diffusion.samplers import SAMPLERS

    help_text = cli.FLAGS["sampler"].help
    for name, rule in SAMPLERS.items():
        assert name in help_text, name
        for param in rule.params:
            if param != "temperature":
                assert f"{param}=.." in help_text, (name, param)


@pytest.mark.parametrize(
    "flags_and_inputs, message",
    [
        (["--sampler=pbeb(lamda=0.2)", "a.wav"], "lamda"),
        (["--nfe=0", "a.wav"], "--nfe=0"),
        (["--batch_size=-1", "a.wav"], "--batch_size=-1"),
        (["missing.wav"], "'missing.wav' does not exist"),
    ],
)
def test_transcribe_rejects_bad_flags_and_inputs_before_loading_weights(
    tmp_path, capsys, monkeypatch, no_weights, flags_and_inputs, message
):
    import numpy as np

    from mdm_asr_jax.audio import write_wav
    from mdm_asr_jax.cli import transcribe as cli

    monkeypatch.chdir(tmp_path)
    write_wav(tmp_path / "a.wav", np.zeros(1600, np.float32))
    options = [a for a in flags_and_inputs if a.startswith("--")]
    inputs = [a for a in flags_and_inputs if not a.startswith("--")]
    cli.FLAGS.unparse_flags()
    cli.FLAGS(["prog", f"--checkpoint={tmp_path}", *options])
    try:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["prog", *inputs])
    finally:
        cli.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("mdm-asr-transcribe: error:") and message in err, err


# ---------------------------------------------------------------------------------------------
# Progress bars and logs.


@pytest.fixture
def auto_bars(monkeypatch):
    monkeypatch.delenv("MDM_ASR_QUIET", raising=False)
    yield
    progress.set_quiet(None)


def test_progress_bar_shows_count_and_rate_when_enabled(capsys, auto_bars):
    progress.set_quiet(False)
    assert list(progress.progress(range(5), desc="featurise", unit="utt")) == list(range(5))
    err = capsys.readouterr().err
    assert "featurise" in err and "5/5" in err and "utt/s" in err


def test_progress_bar_is_silent_off_a_terminal_with_quiet_and_with_the_env_var(
    capsys, monkeypatch, auto_bars
):
    progress.set_quiet(None)  # capsys's stderr is not a terminal
    assert list(progress.progress(range(3), desc="scan")) == [0, 1, 2]
    progress.set_quiet(True)
    bar = progress.progress(total=3, desc="scan")
    bar.update(3)
    bar.close()
    assert capsys.readouterr().err == ""

    class Terminal:
        def isatty(self) -> bool:
            return True

        def write(self, text: str) -> int:
            return len(text)

        def flush(self) -> None:
            pass

    monkeypatch.setattr(sys, "stderr", Terminal())
    progress.set_quiet(None)
    assert progress.bars_enabled()
    monkeypatch.setenv("MDM_ASR_QUIET", "1")
    assert not progress.bars_enabled()


def _record(path: str, level: int) -> std_logging.LogRecord:
    return std_logging.LogRecord("absl", level, path, 1, "message", None, None)


def test_third_party_info_logs_are_filtered_unless_verbose(monkeypatch, auto_bars):
    from absl import logging

    handler = logging.get_absl_handler()
    monkeypatch.setattr(handler, "filters", list(handler.filters))  # restored afterwards
    before = logging.get_verbosity()
    try:
        common.configure_logs(verbose=False, quiet=True)
        assert logging.get_verbosity() == logging.WARNING
        assert not progress.bars_enabled()
        orbax = "/site-packages/orbax/checkpoint/_src/checkpointer.py"
        ours = "/site-packages/mdm_asr_jax/eval/evaluate.py"
        assert not handler.filter(_record(orbax, std_logging.INFO))
        assert not handler.filter(_record(orbax, std_logging.WARNING))
        assert handler.filter(_record(orbax, std_logging.ERROR))
        assert handler.filter(_record(ours, std_logging.WARNING))
        common.configure_logs(verbose=True, quiet=False)
        assert logging.get_verbosity() == logging.INFO
    finally:
        logging.set_verbosity(before)
