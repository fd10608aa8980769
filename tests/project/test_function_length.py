"""Every function of the package is within 80 lines (DEVELOPERS.md; issue #80): a longer one is
split into named parts a reader can follow. Counted from the ``def`` line to the last line of
its body, its nested functions included; nothing is skipped."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# what the wheels ship and mypy checks ([tool.mypy] in pyproject.toml)
SOURCES = [
    ROOT / "wire" / "mq9_wire",
    ROOT / "broker" / "mq9_broker",
    ROOT / "platform" / "mq9_platform",
    ROOT / "langchain_mq9",
    ROOT / "mcp_server" / "mq9_mcp",
    ROOT / "faces" / "cli" / "mq9_cli",
]
MOST_LINES = 80


def _files() -> list[Path]:
    files: list[Path] = []
    for source in SOURCES:
        files += [source] if source.is_file() else sorted(source.rglob("*.py"))
    return files


def too_long() -> list[str]:
    """Each function over ``MOST_LINES``, as ``path:line name (N lines)``."""
    found = []
    for path in _files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MOST_LINES:
                    where = path.relative_to(ROOT)
                    found.append(f"{where}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_the_sources_are_found():
    files = _files()
    assert ROOT / "mcp_server" / "mq9_mcp" / "__init__.py" in files
    assert ROOT / "platform" / "mq9_platform" / "wake" / "cli.py" in files
    assert ROOT / "faces" / "cli" / "mq9_cli" / "app.py" in files
    assert len(files) > 100, len(files)


@pytest.mark.slow  # over a second on a quiet machine
def test_every_function_is_within_80_lines():
    assert too_long() == []


if __name__ == "__main__":  # python tests/project/test_function_length.py: the list
    print("\n".join(too_long()) or f"every function within {MOST_LINES} lines")
