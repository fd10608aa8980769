"""Whether a test file marks every one of its tests slow, read from its ``pytestmark`` lines.

The quick lane (``-m "not slow"``) would import such a file only to deselect all it holds: a
worker spends on it the file's imports and pytest's assertion rewriting (with
PYTHONDONTWRITEBYTECODE set, redone in every worker on every run). tests/conftest.py's
``pytest_ignore_collect`` asks this instead. Only the top-level ``pytestmark = ...`` statements
are parsed, not the file: this runs for every test file a quick run would collect.
tests/project/test_slow_marks.py holds it to the same answer as its full reading of each file.
"""

from __future__ import annotations

import ast
from pathlib import Path

SLOW = "pytest.mark.slow"
# A ``pytestmark = [...]`` statement spanning more lines than this is not looked for
_MOST_LINES = 40


def _marks_slow(node: ast.expr) -> bool:
    """``pytest.mark.slow``, alone or in a list or tuple of marks."""
    if isinstance(node, ast.List | ast.Tuple):
        return any(_marks_slow(element) for element in node.elts)
    return ast.unparse(node) == SLOW


def _statement(lines: list[str], start: int) -> ast.stmt | None:
    """The statement that begins on ``lines[start]``: the fewest lines that parse."""
    for end in range(start + 1, min(start + _MOST_LINES, len(lines)) + 1):
        try:
            body = ast.parse("\n".join(lines[start:end])).body
        except SyntaxError:
            continue
        return body[0] if body else None
    return None


def file_marked_slow(path: Path) -> bool:
    """True when the module sets ``pytestmark`` to the slow mark (alone or in a list)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if SLOW not in text:
        return False
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if not line.startswith("pytestmark"):
            continue
        statement = _statement(lines, number)
        if (
            isinstance(statement, ast.Assign)
            and any(isinstance(t, ast.Name) and t.id == "pytestmark" for t in statement.targets)
            and _marks_slow(statement.value)
        ):
            return True
    return False
