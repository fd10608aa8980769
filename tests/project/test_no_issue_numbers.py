"""The code speaks of the code, not of its tracker (issue #118): no ``.py`` file or
pyproject.toml of the six distributions holds an issue number (``#106``, ``(issue #112)``,
``#98 item 3``), and neither does the code beside them: the benchmarks (and so the report
``python -m bench`` writes), the test bed, the packaging (alert rules, units, the bundle's build),
the examples, the notebooks' cells, CI's script and the ignore list. A number tells where a line
came from, which ``git blame`` holds; a comment says what the line guards. None of that code
tells how or by whom the work was done either ("session 35", "round 3"), the phrases
test_no_diary.py keeps out of the prose. A regression test may still name its issue, so tests/
is not read.

The pattern is the one a reviewer greps for, ``#[0-9]{2,3}\\b``, so a string literal counts too:
a CSS colour is written in six digits (``#888888``), which the pattern does not take for one.
Each finding is one line: the file, the line number and the line.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tests.project.test_no_diary import DIARY

ROOT = Path(__file__).resolve().parents[2]
# The distributions' folders: mq9-wire, mq9-broker, mq9-platform, mq9-mcp (mcp_server/), mq9-cli
# (faces/), and langchain-mq9's package (its pyproject.toml is the root's)
FOLDERS = ("wire", "broker", "platform", "mcp_server", "faces", "langchain_mq9")
# The repository's code beside the distributions, by folder: the files read there
BESIDE = {
    "bench": ("*.py",),
    "testbed": ("*.py", "*.sh", "*.mjs"),
    "packaging": ("*.py", "*.yml", "*.service", "*.conf"),
    "examples": ("*.py", "*.md"),
}
# Single files beside them: CI's script and what git ignores
FILES_BESIDE = (".ci/run", ".gitignore")
# The notebooks: their cells' text only (an output is what a run printed, kept as it came)
NOTEBOOKS = "notebooks"
ISSUE_NUMBER = re.compile(r"#[0-9]{2,3}\b")
# Build outputs and caches beside the sources are no one's code
SKIPPED = {"__pycache__", "build", "dist", "node_modules"}


def _skipped(path: Path) -> bool:
    parts = path.relative_to(ROOT).parts
    return any(p in SKIPPED or p.startswith(".") or p.endswith(".egg-info") for p in parts)


def product_files() -> list[Path]:
    """Every .py file and pyproject.toml of the distributions, the root's pyproject.toml too."""
    found = [ROOT / "pyproject.toml"]
    for folder in FOLDERS:
        for pattern in ("*.py", "pyproject.toml"):
            found += (p for p in (ROOT / folder).rglob(pattern) if not _skipped(p))
    return sorted(found)


def files_beside() -> list[Path]:
    """The code beside the distributions that ``BESIDE`` and ``FILES_BESIDE`` name."""
    found = [ROOT / name for name in FILES_BESIDE]
    for folder, patterns in BESIDE.items():
        for pattern in patterns:
            found += (p for p in (ROOT / folder).rglob(pattern) if not _skipped(p))
    return sorted(found)


def notebooks() -> list[Path]:
    return sorted((ROOT / NOTEBOOKS).glob("*.ipynb"))


def cells_text(notebook: Path) -> str:
    """The notebook's cells' sources, one after another: a line number counts from the first
    cell's first line."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells)


def issue_numbers(text: str) -> list[tuple[int, str]]:
    """(line number, line) for each line of ``text`` holding an issue number."""
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if ISSUE_NUMBER.search(line)]


def diary(text: str) -> list[tuple[int, str]]:
    """(line number, line) for each line of ``text`` telling how the work was done."""
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if DIARY.search(line)]


def _findings(found: list[tuple[Path, str]]) -> list[str]:
    return [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()[:160]}"
        for path, text in found
        for n, line in sorted({*issue_numbers(text), *diary(text)})
    ]


def test_the_scan_reads_every_distribution():
    # a folder renamed or moved fails here, rather than leaving its files unread
    missing = [folder for folder in FOLDERS if not (ROOT / folder).is_dir()]
    assert not missing, f"no such distribution folder: {missing} (FOLDERS lists them)"
    files = product_files()
    for folder in FOLDERS:
        assert any(p.is_relative_to(ROOT / folder) for p in files), f"no .py file in {folder}/"


def test_the_scan_reads_the_code_beside_them():
    missing = [name for name in FILES_BESIDE if not (ROOT / name).is_file()]
    assert not missing, f"no such file: {missing} (FILES_BESIDE lists them)"
    files = files_beside()
    for folder, patterns in BESIDE.items():
        for pattern in patterns:
            assert any(p.is_relative_to(ROOT / folder) and p.match(pattern) for p in files), (
                f"no {pattern} in {folder}/ (BESIDE lists it)"
            )
    assert notebooks(), f"no notebook in {NOTEBOOKS}/"


def test_the_pattern_is_the_reviewers():
    assert issue_numbers("x = 1  # #106: the keys are counted per caller") == [
        (1, "x = 1  # #106: the keys are counted per caller")
    ]
    assert [n for n, _ in issue_numbers('"""(issue #108)\n\n#98 item 3\n"""')] == [1, 3]
    # six-digit colours, an issue of four digits and an anchor are no finding
    assert issue_numbers('stroke="#888888" fill="#2563eb" #1234 [a](#the-http-edge)') == []
    # the work told, not the software: a session or round of it; an HTTP session is the software's
    assert [n for n, _ in diary("# (session 34)\nround 9: x\nits HTTP session\nrounds=3")] == [1, 2]


def test_a_notebook_is_read_by_its_cells_not_its_outputs(tmp_path):
    cell = {"cell_type": "code", "metadata": {}, "source": ["x = 1\n", "# see #106\n"]}
    ran = {**cell, "outputs": [{"output_type": "stream", "name": "stdout", "text": ["#107\n"]}]}
    notebook = tmp_path / "n.ipynb"
    notebook.write_text(json.dumps({"cells": [{"cell_type": "markdown", "source": "a"}, ran]}))
    assert issue_numbers(cells_text(notebook)) == [(3, "# see #106")]


def test_no_issue_numbers_in_product_code():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in product_files()
        for n, line in issue_numbers(path.read_text(encoding="utf-8"))
    ]
    assert not found, (
        f"{len(found)} issue number(s) in product code: say what the line guards, not which "
        "issue it came from (a regression test under tests/ may name its issue)\n"
        + "\n".join(found)
    )


def test_no_issue_numbers_or_work_diary_beside_the_product_code():
    found = _findings(
        [(path, path.read_text(encoding="utf-8")) for path in files_beside()]
        + [(path, cells_text(path)) for path in notebooks()]
    )
    assert not found, (
        f"{len(found)} line(s) of the benchmarks, test bed, packaging, examples, notebooks or "
        "CI's script name an issue or tell how the work was done: say what the line guards "
        "(a figure belongs in bench/RESULTS.md, with its commit)\n" + "\n".join(found)
    )


def test_no_work_diary_in_product_code():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()[:160]}"
        for path in product_files()
        for n, line in diary(path.read_text(encoding="utf-8"))
    ]
    assert not found, (
        f"{len(found)} line(s) of product code tell how the work was done: say what the line "
        "guards\n" + "\n".join(found)
    )
