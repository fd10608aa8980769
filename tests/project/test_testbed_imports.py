"""The servers that tests/ and bench/ both start live in testbed/ (issue #89): bench/ imports
nothing of tests/, the tests' shared helpers (testbed/support) nothing of bench/, and testbed/
neither of them. The distributions stand below all three (docs/architecture.md):
no package of wire/, broker/, platform/, faces/ or langchain_mq9/ imports bench, testbed or
tests, so each installs without them. Read from the source: no import runs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# (folder, the top-level packages its modules may not import)
RULES = [("bench", {"tests"}), ("testbed/support", {"bench"}), ("testbed", {"tests", "bench"})]
# The distributions' folders: nothing above them
DISTRIBUTIONS = ("wire", "broker", "platform", "faces", "langchain_mq9")


def _imported(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.append((node.lineno, node.module))
    return found


def _crossing(folder: str, forbidden: set[str], hint: str) -> list[str]:
    assert (ROOT / folder).is_dir(), f"no folder {folder}: name where it moved"
    return [
        f"{path.relative_to(ROOT)}:{line}: imports {name}; {hint}"
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line, name in _imported(path)
        if name.split(".")[0] in forbidden
    ]


def test_bench_tests_support_and_testbed_import_neither_of_the_others():
    crossing = [
        c for f, forbidden in RULES for c in _crossing(f, forbidden, "start it from testbed/")
    ]
    assert not crossing, "\n".join(crossing)


def test_no_distribution_imports_bench_testbed_or_tests():
    hint = "a floor above it: the package installs without it"
    above = {"bench", "testbed", "tests"}
    crossing = [c for folder in DISTRIBUTIONS for c in _crossing(folder, above, hint)]
    assert not crossing, "\n".join(crossing)
