"""The documentation stays a front door plus pages that resolve, and names no one machine.

- README.md is short (at most 200 lines) and opens with the two commands that work on a fresh
  machine: install + run the demo, install + run the tests.
- Every relative link in README.md and docs/*.md points at a file that exists, and an anchor
  (`page.md#section`) at a heading of that page.
- No file of the documentation, the package, the configs or the benchmarks contains a path of
  one machine (a home directory, /root, /work, a pyenv install).
- docs/multilingual.md's per-language table is the render of docs/data/multilingual.jsonl.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"

MAX_README_LINES = 200
FIRST_LINES = 30

# Inline links `[text](target)` and images `![alt](target)`; the target ends at whitespace or `)`.
LINK = re.compile(r"!?\[[^\]\n]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"`[^`\n]*`")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...

MACHINE_PATH = re.compile(r"/work/|/root/|/home/[A-Za-z0-9_.-]+/|\.pyenv")
SCANNED = ("README.md", "docs", "mdm_asr_jax", "configs", "benchmarks")
TEXT_SUFFIXES = {".py", ".md", ".sh", ".txt", ".cfg", ".toml", ".json", ".yaml", ".yml", ".ipynb"}


def doc_pages() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def strip_code(markdown: str) -> str:
    """Markdown without fenced blocks and inline code, where `[x](y)` is not a link."""
    return INLINE_CODE.sub("", FENCE.sub("", markdown))


def github_anchor(heading: str) -> str:
    """The id GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    for match in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = github_anchor(match.group(2))
        seen = counts.get(base, 0)
        counts[base] = seen + 1
        found.add(base if seen == 0 else f"{base}-{seen}")
    return found


def relative_links(page: Path) -> list[str]:
    targets = LINK.findall(strip_code(page.read_text(encoding="utf-8")))
    return [t for t in targets if not EXTERNAL.match(t)]


def scanned_files() -> list[Path]:
    files: list[Path] = []
    for name in SCANNED:
        path = REPO / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [
                f
                for f in sorted(path.rglob("*"))
                if f.is_file() and f.suffix in TEXT_SUFFIXES and "__pycache__" not in f.parts
            ]
    return files


def test_readme_is_at_most_200_lines():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines; keep it a front door of at most {MAX_README_LINES} "
        "and move details into a docs/ page"
    )


def test_readme_begins_with_the_demo_and_test_commands():
    head = README.read_text(encoding="utf-8").splitlines()[:FIRST_LINES]
    demo = [
        line
        for line in head
        if 'pip install -e ".[synth]"' in line and "mdm-asr-train --config=configs/demo.py" in line
    ]
    tests = [line for line in head if 'pip install -e ".[dev]"' in line and "pytest" in line]
    assert demo, (
        f"the demo command (install + mdm-asr-train demo) is not in the first {FIRST_LINES} lines"
    )
    assert tests, (
        f"the test command (install .[dev] + pytest) is not in the first {FIRST_LINES} lines"
    )


def test_readme_has_one_headline_results_block():
    text = README.read_text(encoding="utf-8")
    start, end = "<!-- headline-results:start -->", "<!-- headline-results:end -->"
    assert text.count(start) == 1 and text.count(end) == 1
    block = text[text.index(start) : text.index(end)]
    assert "docs/results.md" in block, "the headline table must link to docs/results.md"
    assert "|" in block, "the headline block holds a table"


@pytest.mark.parametrize("page", doc_pages(), ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_resolves(page):
    broken = []
    for target in relative_links(page):
        path_part, _, anchor = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            broken.append(f"{target}: no file {destination.relative_to(REPO)}")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{page.relative_to(REPO)}: broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_listed_in_the_docs_index_and_the_index_in_the_readme():
    index = {(DOCS / t.partition("#")[0]).resolve() for t in relative_links(DOCS / "README.md")}
    pages = [p for p in sorted(DOCS.rglob("*.md")) if p != DOCS / "README.md"]
    missing = [str(p.relative_to(DOCS)) for p in pages if p.resolve() not in index]
    assert not missing, f"docs/README.md does not list: {missing}"
    assert "docs/README.md" in relative_links(README)


def test_no_machine_specific_paths():
    files = scanned_files()
    assert any(f.suffix == ".py" for f in files) and README in files  # the listing found the tree
    hits = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if MACHINE_PATH.search(line):
                hits.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not hits, (
        "paths of one machine (write a relative path, a placeholder such as DIR, or an option "
        "the user sets):\n" + "\n".join(hits)
    )


def test_the_link_checker_sees_links_and_anchors():
    """Guards the guards: the regexes find a plain link, skip code and slug headings like GitHub."""
    sample = "See [a](x.md#b-c) and `[no](code.md)`.\n```\n[no](fenced.md)\n```\n"
    assert LINK.findall(strip_code(sample)) == ["x.md#b-c"]
    assert github_anchor("Text: tokenizers, WER (`mdm_asr_jax/text`)") == (
        "text-tokenizers-wer-mdm_asr_jaxtext"
    )
    assert github_anchor("Whisper tiny.en: MDM-ASR vs AR") == "whisper-tinyen-mdm-asr-vs-ar"
    assert MACHINE_PATH.search("data at /home/alice/fsdd") and not MACHINE_PATH.search("work/x")


def test_the_multilingual_table_is_the_render_of_its_recorded_lines():
    """docs/multilingual.md's per-language table is what `whisper_multilingual_table.py --render`
    makes of docs/data/multilingual.jsonl, so the page and the recorded lines cannot drift."""
    import os
    import subprocess
    import sys

    page = (DOCS / "multilingual.md").read_text()
    start, end = "<!-- multilingual-table:start -->\n", "<!-- multilingual-table:end -->"
    assert page.count(start) == 1 and page.count(end) == 1
    shown = page[page.index(start) + len(start) : page.index(end)]
    rendered = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "whisper_multilingual_table.py"),
         f"--render={DOCS / 'data' / 'multilingual.jsonl'}"],
        capture_output=True, text=True, check=True, cwd=REPO, env={**os.environ, "JAX_PLATFORMS": "cpu"},
    )  # fmt: skip
    assert shown == rendered.stdout
