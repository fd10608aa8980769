"""``Any`` stays rare where replies have known shapes (issue #92, "Typed replies"): in the
platform's ``a2a/`` and ``operations/`` and in ``mq9_mcp/`` the A2A JSON, the operations'
answers and the MCP answers are ``TypedDict``s (``a2a/shapes.py``, ``operations/views.py``,
``mq9_mcp/events.py``). The ceilings follow the folders where they moved.

Counted from the syntax tree: each use of the name ``Any`` (``Any``, ``typing.Any``) per
1,000 lines of the folder's files (nats-jetstream, whose replies are typed, is the
yardstick). A second count adds the uses of the JSON aliases that are
``Any`` underneath (``JsonValue``, ``JsonObject``, ``CardJson``, ``JsonSchema``: a payload, a
card, a schema whose shape its writer chose), so renaming ``Any`` cannot pass for typing it.
Each ceiling is the count when the bullet was done, rounded up: lower it as more is typed.
``python tests/project/test_any_density.py`` prints the counts.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = (
    "platform/mq9_platform/a2a",
    "platform/mq9_platform/operations",
    "mcp_server/mq9_mcp",
)
ALIASES = frozenset({"JsonValue", "JsonObject", "CardJson", "JsonSchema"})

# Per folder: (Any per 1,000 lines, Any and its aliases per 1,000 lines)
CEILINGS = {
    "platform/mq9_platform/a2a": (13.0, 21.5),
    "platform/mq9_platform/operations": (7.5, 26.5),
    "mcp_server/mq9_mcp": (10.5, 17.0),
}


def _uses(tree: ast.AST) -> tuple[int, int]:
    """How often ``Any`` is named in ``tree``, and how often one of ``ALIASES`` is (imports
    and the aliases' own definitions are no use of them: they are no ``Name`` nodes, or the
    target of an assignment)."""
    anys = aliases = 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            anys += node.id == "Any"
            aliases += node.id in ALIASES
        elif isinstance(node, ast.Attribute) and node.attr == "Any":
            anys += isinstance(node.value, ast.Name) and node.value.id == "typing"
    return anys, aliases


def densities(folder: str) -> tuple[float, float]:
    """``Any`` per 1,000 lines of ``folder``'s Python files, and ``Any`` with its aliases."""
    lines = anys = aliases = 0
    for path in sorted((ROOT / folder).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        lines += len(text.splitlines())
        found = _uses(ast.parse(text, str(path)))
        anys += found[0]
        aliases += found[1]
    assert lines, f"no Python file under {folder}"
    return 1000 * anys / lines, 1000 * (anys + aliases) / lines


def test_the_count_sees_any_and_its_aliases():
    code = "from typing import Any\nx: dict[str, Any] = {}\ny: typing.Any\nz: JsonObject\n"
    assert _uses(ast.parse(code)) == (2, 1)


def test_any_stays_within_each_folders_ceiling():
    over = []
    for folder, (most, most_with_aliases) in CEILINGS.items():
        anys, with_aliases = densities(folder)
        if anys > most or with_aliases > most_with_aliases:
            over.append(
                f"{folder}: Any {anys:.1f} per 1,000 lines (ceiling {most}), with its JSON "
                f"aliases {with_aliases:.1f} (ceiling {most_with_aliases}): type what has a "
                "known shape (a TypedDict, a dataclass) instead"
            )
    assert over == []


if __name__ == "__main__":
    for folder in FOLDERS:
        anys, with_aliases = densities(folder)
        print(f"{folder}: Any {anys:.1f} per 1,000 lines, with its JSON aliases {with_aliases:.1f}")
