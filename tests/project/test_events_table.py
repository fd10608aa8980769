"""docs/mcp-events.md's MCP Events table (issue #117) cannot rot: every row, a point of SEP-3415
held
against mq9-mcp, names in its last column the tests that hold it (``tests/x/test_y.py::name``),
and each named test exists, as a test function of that file; the count the text above the table
gives is the rows'. Read from the text and the source (``ast``), as the rule is about what is
written."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "mcp-events.md"
HEADING = "## MCP Events: mail arrivals polled, streamed or POSTed"
HEADER = ["Point", "SEP-3415", "mq9-mcp", "", "Test"]
TEST = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)`")
COUNT = re.compile(r"Counts: (\d+) points")


def _section() -> str:
    text = DOCS.read_text(encoding="utf-8")
    assert HEADING in text, f"docs/mcp-events.md has no section {HEADING!r}"
    return text.split(HEADING, 1)[1].split("\n## ", 1)[0]


def _rows() -> list[list[str]]:
    """The Events table's rows (the first table of the section whose header is ``HEADER``)."""
    lines = _section().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| Point | SEP-3415"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


@cache
def _tests_of(path: str) -> frozenset[str]:
    file = ROOT / path
    if not file.is_file():
        return frozenset()
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return frozenset(n.name for n in tree.body if isinstance(n, kinds))


def test_every_row_of_the_events_table_names_tests_that_exist():
    header, _rule, *rows = _rows()
    assert header == HEADER, header
    problems = []
    for row in rows:
        named = TEST.findall(row[-1])
        if len(row) != len(HEADER) or not named:
            problems.append(f"row {row[0]!r}: no test named in its last column")
        problems += [
            f"row {row[0]!r}: {path}::{name} is no test function there"
            for path, name in named
            if name not in _tests_of(path)
        ]
    assert not problems, "\n".join(problems)


def test_the_count_above_the_table_is_its_rows():
    _header, _rule, *rows = _rows()
    [said] = COUNT.findall(_section())
    assert int(said) == len(rows), f"the text says {said} points, the table has {len(rows)}"
