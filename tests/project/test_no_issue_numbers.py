"""The product code speaks of the code, not of its tracker (issue #118): no ``.py`` file or
pyproject.toml of the six distributions holds an issue number (``#106``, ``(issue #112)``,
``#98 item 3``). A number tells where a line came from, which ``git blame`` holds; a comment says
what the line guards. A regression test may still name its issue, so tests/ is not read.

The pattern is the one a reviewer greps for, ``#[0-9]{2,3}\\b``, so a string literal counts too:
a CSS colour is written in six digits (``#888888``), which the pattern does not take for one.
Each finding is one line: the file, the line number and the line.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The distributions' folders: mq9-wire, mq9-broker, mq9-platform, mq9-mcp (mcp_server/), mq9-cli (faces/),
# and langchain-mq9's package (its pyproject.toml is the root's)
FOLDERS = ("wire", "broker", "platform", "mcp_server", "faces", "langchain_mq9")
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


def issue_numbers(text: str) -> list[tuple[int, str]]:
    """(line number, line) for each line of ``text`` holding an issue number."""
    return [(n, line) for n, line in enumerate(text.splitlines(), 1) if ISSUE_NUMBER.search(line)]


def test_the_scan_reads_every_distribution():
    # a folder renamed or moved fails here, rather than leaving its files unread
    missing = [folder for folder in FOLDERS if not (ROOT / folder).is_dir()]
    assert not missing, f"no such distribution folder: {missing} (FOLDERS lists them)"
    files = product_files()
    for folder in FOLDERS:
        assert any(p.is_relative_to(ROOT / folder) for p in files), f"no .py file in {folder}/"


def test_the_pattern_is_the_reviewers():
    assert issue_numbers("x = 1  # #106: the keys are counted per caller") == [
        (1, "x = 1  # #106: the keys are counted per caller")
    ]
    assert [n for n, _ in issue_numbers('"""(issue #108)\n\n#98 item 3\n"""')] == [1, 3]
    # six-digit colours, an issue of four digits and an anchor are no finding
    assert issue_numbers('stroke="#888888" fill="#2563eb" #1234 [a](#the-http-edge)') == []


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
