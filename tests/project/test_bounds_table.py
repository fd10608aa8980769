"""docs/security-broker.md's table "Whose bound it is" (#106) cannot rot: each row names a bound,
its
unit, who can fill it, what everyone else sees, the test that holds it, and whose it is
across replicas and restarts; every test named
(``tests/x/test_y.py::test_name``, or ``::test_name`` for the file named before it in the row)
exists, as a test function of that file, and every option a row names is one a command of
this project takes.

Read from the text (the table) and the source (``ast``), as the rule is about what is written.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECURITY = ROOT / "docs" / "security-broker.md"
HEADING = "## Whose bound it is"
COLUMNS = ["Bound (default)", "Unit", "Who can fill it",
           "What everyone else sees while it is full", "Held by",
           "Across replicas and restarts"]  # fmt: skip
HELD_BY, ACROSS = COLUMNS.index("Held by"), COLUMNS.index("Across replicas and restarts")
# A test as a row names it: `tests/x/test_y.py::test_name`, or `::test_name` (the same file)
TEST = re.compile(r"`(tests/[\w/]+\.py)?::(test_\w+)`")
OPTION = re.compile(r"`(--[a-z][a-z-]+)`")
# The commands whose options a row may name: the dev broker, mq9-mcp, the gateway, the waker
COMMANDS = [
    "broker/mq9_broker/cli/dev_broker.py",
    "mcp_server/mq9_mcp/cli.py",
    "platform/mq9_platform/a2a/gateway/cli.py",
    "platform/mq9_platform/wake/cli.py",
]


def _rows() -> list[list[str]]:
    """The table's rows under ``HEADING``, each its cells (the header row first)."""
    text = SECURITY.read_text(encoding="utf-8")
    assert HEADING in text, f"docs/security-broker.md has no section {HEADING!r}"
    section = text.split(HEADING, 1)[1].split("\n## ", 1)[0]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip().strip("|").split("|")] for line in lines]


@cache
def _tests_of(path: str) -> frozenset[str]:
    """The test functions defined at the top of ``path`` (none where it is missing)."""
    file = ROOT / path
    if not file.is_file():
        return frozenset()
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    return frozenset(n.name for n in tree.body if isinstance(n, kinds))


def _named(cell: str) -> list[tuple[str, str]]:
    """The tests a cell names, as (file, function): ``::name`` takes the file before it."""
    named, path = [], ""
    for given, name in TEST.findall(cell):
        path = given or path
        named.append((path, name))
    return named


def test_the_table_has_its_columns_and_rows():
    header, separator, *rows = _rows()
    assert header == COLUMNS
    assert set("".join(separator)) <= {"-", ":"}
    assert len(rows) >= 30, "the table lists every bound, not a few"
    wrong = [row[0][:60] for row in rows if len(row) != len(COLUMNS) or not all(row)]
    assert not wrong, f"rows without a cell for each column: {wrong}"


def test_every_row_names_a_test_that_exists():
    missing, without = [], []
    for row in _rows()[2:]:
        named = _named(row[HELD_BY])
        if not named or not named[0][0]:
            without.append(row[0][:60])
        missing += [f"{path}::{name}" for path, name in named if name not in _tests_of(path)]
    assert not without, f"rows naming no test (a path first): {without}"
    assert not missing, f"tests the bounds table names that do not exist: {missing}"


def test_every_option_a_row_names_is_a_commands_option():
    sources = "".join((ROOT / path).read_text(encoding="utf-8") for path in COMMANDS)
    named = {option for row in _rows()[2:] for option in OPTION.findall(row[0])}
    assert named, "the table names the options that set its bounds"
    unknown = sorted(option for option in named if f'"{option}"' not in sources)
    assert not unknown, f"options in the bounds table that no command takes: {unknown}"


def test_every_bound_says_whose_it_is_across_replicas_and_restarts():
    """(#113) A bound a process keeps in its memory is that process's, from its start: each
    row says where its count lives, and what an operator running several replicas sets."""
    rows = _rows()[2:]
    silent = [row[0][:60] for row in rows if len(row) <= ACROSS or row[ACROSS].strip("-– ") == ""]
    assert not silent, f"bounds that do not say whose they are across replicas: {silent}"


def test_a_missing_test_is_found():
    """The check itself: a made-up name and a made-up file are both missing."""
    here = "tests/project/test_bounds_table.py"
    cell = f"`{here}::test_never_written`, `::test_a_missing_test_is_found`"
    named = _named(cell)
    assert named == [
        (here, "test_never_written"),
        (here, "test_a_missing_test_is_found"),
    ]
    assert [name in _tests_of(path) for path, name in named] == [False, True]
    assert _tests_of("tests/nowhere/test_none.py") == frozenset()
