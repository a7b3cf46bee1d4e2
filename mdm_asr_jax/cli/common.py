"""What the console scripts share: help text, config errors, logging and progress settings.

`run_app` starts a CLI so that
- `--help` prints the CLI's module docstring (its usage line and a worked example) and its own
  flags. absl lists under `--help` only the "key flags" of the module named `sys.argv[0]`; a
  console script's `__main__` is pip's wrapper, which has no docstring and defines no flags, so
  both are registered for it here (`--helpfull` still lists every flag of every library);
- a config error on the command line (a missing config file, a config argument or key that does
  not exist, e.g. `--config.train.stepz=5`) ends as one line naming the key and the closest
  match, exit status 2, before anything is loaded or built;
- third-party INFO logs (orbax, absl, TensorFlow, JAX) are off unless `--verbose`, and the
  progress bars (`mdm_asr_jax.progress`) are off with `--quiet`.
"""

from __future__ import annotations

import difflib
import importlib.util
import logging as std_logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import ml_collections
from absl import app, flags, logging

from mdm_asr_jax import progress

# Flags every console script has; `run_app` adds them to absl's global flags.
COMMON_FLAGS = flags.FlagValues()
flags.DEFINE_bool(
    "quiet",
    False,
    "No progress bars (they are drawn only on a terminal anyway).",
    flag_values=COMMON_FLAGS,
)
flags.DEFINE_bool(
    "verbose",
    False,
    "Show INFO logs, the libraries' too (orbax, absl, TensorFlow); default: warnings only.",
    flag_values=COMMON_FLAGS,
)

# Loggers of libraries whose warnings are about their own internals, not the user's input.
_CHATTY = ("/orbax/",)


class _ThirdPartyFilter(std_logging.Filter):
    """Drops INFO records of other libraries, and orbax's below ERROR."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        path = record.pathname.replace(os.sep, "/")
        if any(part in path for part in _CHATTY):
            return record.levelno >= std_logging.ERROR
        return True


def configure_logs(verbose: bool, quiet: bool) -> None:
    """Log level and progress bars for a CLI run (see the module docstring)."""
    if quiet:
        progress.set_quiet(True)
    if verbose:
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.INFO)
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ INFO / WARNING lines
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    handler = logging.get_absl_handler()
    if not any(isinstance(f, _ThirdPartyFilter) for f in handler.filters):
        handler.addFilter(_ThirdPartyFilter())


def _config_paths(config: Any, prefix: str = "") -> Iterator[str]:
    """Every dotted key path of a ConfigDict (inner nodes and leaves)."""
    for key, value in config.items():
        path = f"{prefix}{key}"
        yield path
        if isinstance(value, ml_collections.ConfigDict):
            yield from _config_paths(value, path + ".")


def _load_config(value: str) -> Any:
    """`get_config(arg)` of `--config=PATH[:ARG]`, loaded as ml_collections' config_flags does."""
    path, _, arg = value.partition(":")
    if not path:
        raise ValueError("--config is empty; give a config file, e.g. --config=configs/demo.py")
    if not Path(path).is_file():
        here = sorted(p.name for p in Path(path).parent.glob("*.py")) if path else []
        close = difflib.get_close_matches(Path(path).name, here, n=1)
        hint = f"; did you mean {Path(path).parent / close[0]}?" if close else ""
        raise ValueError(f"--config={value}: no such config file {path!r}{hint}")
    spec = importlib.util.spec_from_file_location("mdm_asr_cli_config", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ValueError(f"{path} defines no get_config(arg)")
        return module.get_config(arg) if arg else module.get_config()
    except Exception as err:  # a config's own check (unknown argument, ...): one line
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"--config={value}: {message}") from None


def _flag_items(argv: Sequence[str], name: str) -> list[tuple[str, str | None]]:
    """(flag, value) pairs of `--NAME...` arguments in `argv`, `--x=v` and `--x v` forms."""
    items: list[tuple[str, str | None]] = []
    for number, arg in enumerate(argv):
        if arg == "--":
            break
        if not arg.startswith(f"--{name}"):
            continue
        flag, eq, value = arg[2:].partition("=")
        if flag != name and not flag.startswith(name + "."):
            continue
        if not eq:
            following = argv[number + 1] if number + 1 < len(argv) else None
            value = following if following and not following.startswith("--") else None
        items.append((flag, value))
    return items


def config_error(argv: Sequence[str], name: str = "config") -> str | None:
    """One line describing what is wrong with the `--NAME=FILE[:ARG]` and `--NAME.key=value`
    arguments of `argv` (a missing file, a config argument or key path that does not exist,
    with the closest match), or None when they are fine or absent."""
    items = _flag_items(argv, name)
    files = [value for flag, value in items if flag == name]
    if not files or files[-1] is None:
        return None  # absl reports a missing --config itself
    try:
        config = _load_config(files[-1])
    except ValueError as err:
        return str(err)
    if not isinstance(config, ml_collections.ConfigDict):
        return None
    paths = list(_config_paths(config))
    for flag, _ in items:
        if flag == name:
            continue
        key = flag[len(name) + 1 :].split("[", 1)[0]  # --config.a.b[0] -> a.b
        node: Any = config
        parts = key.split(".")
        for depth, part in enumerate(parts):
            if isinstance(node, ml_collections.ConfigDict) and part in node:
                node = node[part]
                continue
            parent = ".".join(parts[:depth])
            siblings = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, siblings, n=1, cutoff=0.5)
            if close:
                guess = ".".join([*parts[:depth], close[0]])
                rest = ".".join([guess, *parts[depth + 1 :]])
                guess = rest if rest in paths else guess  # trian.num_steps -> train.num_steps
            else:  # the key may sit in another group: compare whole paths
                whole = difflib.get_close_matches(key, paths, n=1, cutoff=0.6)
                guess = whole[0] if whole else None
            if not isinstance(node, ml_collections.ConfigDict):
                where = f"{parent!r} is a value, not a group"
            else:
                where = f"no key {part!r} in {parent or 'the config'}"
            hint = f"; did you mean --{name}.{guess}?" if guess else ""
            return f"--{flag}: {where} ({files[-1]}){hint}"
    return None


def _show_flags_under_help(module_names: Sequence[str], flag_values: Sequence[flags.FlagValues]):
    """Registers the CLI's own flags as key flags of `sys.argv[0]`, the module `--help` lists."""
    main = sys.argv[0]
    for values in flag_values:
        for name in values:
            flags.FLAGS.register_key_flag_for_module(main, flags.FLAGS[name])
    for module in module_names:
        for flag in flags.FLAGS.get_flags_for_module(module):
            flags.FLAGS.register_key_flag_for_module(main, flag)


def run_app(
    main: Callable[[Sequence[str]], None],
    flag_values: flags.FlagValues | None = None,
    *,
    doc: str,
    module: str | None = None,
    config_flag: str | None = None,
) -> None:
    """Runs `main` as a console script.

    `flag_values`: the CLI's own FlagValues (added to absl's global flags); `module`: the name
    of a module that defined its flags in absl's global FLAGS instead (`__name__`); `doc`: the
    usage text `--help` prints (the CLI module's docstring); `config_flag`: the name of a
    config-file flag whose file and `--NAME.key` overrides are checked first (`config_error`).
    """
    own = [COMMON_FLAGS] if flag_values is None else [flag_values, COMMON_FLAGS]
    for values in own:
        flags.FLAGS.append_flag_values(values)
    _show_flags_under_help([module] if module else [], own)
    # absl prints __main__'s docstring as the usage text; pip's wrapper script has none.
    sys.modules["__main__"].__doc__ = doc.replace("%", "%%")
    if config_flag is not None and not any(a in ("--help", "--helpfull") for a in sys.argv):
        error = config_error(sys.argv[1:], config_flag)
        if error is not None:
            print(f"{Path(sys.argv[0]).name}: error: {error}", file=sys.stderr)
            sys.exit(2)

    def configured_main(argv: Sequence[str]) -> None:
        for values in own:
            values.mark_as_parsed()  # their values were parsed through absl's global FLAGS
        configure_logs(verbose=COMMON_FLAGS.verbose, quiet=COMMON_FLAGS.quiet)
        main(argv)

    if "--verbose" not in sys.argv:  # before anything imports TensorFlow
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    app.run(configured_main)
