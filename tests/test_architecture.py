"""The layering of docs/architecture.md, enforced by parsing every module's imports (ast).

Every `import` / `from ... import` of every module under mdm_asr_jax/ counts, at module top or
inside a function. Never: nn/ -> diffusion/, train/, eval/; diffusion/ -> nn/, train/;
train/ -> convert/, cli/; inference/ -> eval/, train/, cli/; any library module -> cli/; any
module -> another module's private (_underscore) name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "mdm_asr_jax"

# (importing package, imported packages it must never import)
NEVER = [
    ("nn", ("diffusion", "train", "eval", "inference", "decode", "cli")),
    ("diffusion", ("nn", "train", "eval", "inference", "cli")),
    ("train", ("convert", "cli")),
    ("inference", ("eval", "train", "transcribe", "cli")),
    ("text", ("nn", "diffusion", "train", "eval", "inference", "cli")),
    ("data", ("nn", "diffusion", "train", "eval", "inference", "cli")),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, imported names, line) for every import statement in the file."""
    tree = ast.parse(path.read_text(), filename=str(path))
    inside = path.is_relative_to(PACKAGE)
    me = module_name(path) if inside else "mdm_asr_jax"
    package = me.rsplit(".", 1)[0] if inside and path.name != "__init__.py" else me
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, [alias.name for alias in node.names], node.lineno))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


def layer(module: str) -> str:
    """The top-level part of mdm_asr_jax a module belongs to ("nn", "decode", "cli", ...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_package_has_modules_to_check():
    assert len(MODULES) > 40 and all(module_name(p).startswith("mdm_asr_jax") for p in MODULES)


def arrow_violations(me: str, found: list[tuple[str, list[str], int]]) -> list[str]:
    """Messages for every import of module `me` that crosses a never-arrow or takes a private
    name of another module."""
    here, problems = layer(me), []
    for target, names, line in found:
        if not target.startswith("mdm_asr_jax"):
            continue
        if target != me:
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private or target.rsplit(".", 1)[-1].startswith("_"):
                problems.append(f"{me}:{line} imports private {private or target} from {target}")
        # `from mdm_asr_jax import cli`: the names are the modules
        for full in [target] if layer(target) else [f"{target}.{n}" for n in names]:
            there = layer(full)
            if not there or there == here:
                continue
            if here != "cli" and there == "cli":
                problems.append(f"{me}:{line} imports {full}: cli/ is the top layer")
            for source, banned in NEVER:
                if here == source and there in banned:
                    problems.append(
                        f"{me}:{line} imports {full}: {source}/ must never import {there}/"
                    )
    return problems


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_module_crosses_a_never_arrow_or_takes_a_private_name(path):
    assert arrow_violations(module_name(path), imports(path)) == []


def test_the_checker_finds_violations_inside_functions(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "from mdm_asr_jax.nn.config import ModelConfig\n"
        "def f():\n"
        "    from mdm_asr_jax.train import trainer\n"
        "    from mdm_asr_jax.eval.evaluate import _private\n"
    )
    problems = arrow_violations("mdm_asr_jax.nn.bad", imports(bad))
    assert len(problems) == 3, problems  # train/, eval/ (never from nn/), and the private name
