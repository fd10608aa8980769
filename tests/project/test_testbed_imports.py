"""The servers that tests/ and bench/ both start live in testbed/ (issue #89): bench/ imports
nothing of tests/, the tests' shared helpers (tests/support) nothing of bench/, and testbed/
neither of them. Read from the source: no import runs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# (folder, the top-level packages its modules may not import)
RULES = [("bench", {"tests"}), ("tests/support", {"bench"}), ("testbed", {"tests", "bench"})]


def _imported(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


def test_bench_tests_support_and_testbed_import_neither_of_the_others():
    crossing = []
    for folder, forbidden in RULES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for line, name in _imported(path):
                if name.split(".")[0] in forbidden:
                    where = path.relative_to(ROOT)
                    crossing.append(f"{where}:{line}: imports {name}; start it from testbed/")
    assert not crossing, "\n".join(crossing)
