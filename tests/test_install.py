"""setup.cfg declares what the package imports, at versions the tests run with, for Python 3.11+."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _setup() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def _requirements(text: str) -> dict[str, str]:
    """{normalised distribution name: floor version or ""} from a setup.cfg requirement list."""
    out = {}
    for line in text.strip().splitlines():
        line = line.split("#")[0].strip()
        if not line:
            continue
        match = re.match(r"^([A-Za-z0-9_.\-]+)(\[[^\]]*\])?\s*(?:(>=|==)\s*([0-9][^,;\s]*))?", line)
        assert match, f"cannot parse requirement {line!r}"
        out[_normalise(match.group(1))] = match.group(4) or ""
    return out


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> dict[str, str]:
    setup = _setup()
    declared = _requirements(setup["options"]["install_requires"])
    for extra in setup["options.extras_require"].values():
        declared.update(_requirements(extra))
    return declared


def _third_party_imports() -> dict[str, str]:
    """{top-level module: first file importing it} over the package's sources."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "mdm_asr_jax").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("mdm_asr_jax", "__future__"):
                    continue
                found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_python_requires_is_311_or_newer():
    assert _setup()["options"]["python_requires"].strip() == ">=3.11"


def test_every_imported_third_party_package_is_declared():
    declared = _declared()
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module, where in _third_party_imports().items():
        names = {_normalise(d) for d in distributions.get(module, [])}
        if not names & set(declared):
            missing.append(f"{module} (imported in {where}; distributions {sorted(names)})")
    assert not missing, "declare in setup.cfg install_requires or an extra: " + "; ".join(missing)


def test_floors_are_not_above_the_tested_versions():
    """A floor above what is installed would be a version the tests never ran with."""
    too_high = []
    for name, floor in _declared().items():
        if not floor:
            continue
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra not installed in this environment
        if _version_tuple(floor) > _version_tuple(installed):
            too_high.append(f"{name}>={floor} but {installed} is installed")
    assert not too_high, too_high


def test_core_floors_match_the_jax_stack_that_needs_python_311():
    core = _requirements(_setup()["options"]["install_requires"])
    for name, floor in {"jax": "0.10", "flax": "0.12", "orbax-checkpoint": "0.12"}.items():
        assert _version_tuple(core[name]) >= _version_tuple(floor), (name, core[name])
    assert _version_tuple(core["grain"]) >= (0, 2, 18)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])
