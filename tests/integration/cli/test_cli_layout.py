"""``mq9_cli`` is a face (docs/architecture.md): it imports the catalog, the client and what
they stand on (the platform's rooms and the wire's), never the broker, the MCP server or the
LangChain face (mq9-cli installs on mq9-platform alone, issue #108), and nothing of the
packages imports it (``mq9-dev-broker --console`` starts it as a process of its own)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
FOLDER = ROOT / "faces" / "cli" / "mq9_cli"
# What the person's face may use of mq9_platform and mq9_wire (tests/project/test_layout.py's
# parts; ``_version`` the platform's, the version ``mq9`` prints)
MAY_IMPORT = {"nats_floor", "protocol", "client", "groups", "a2a", "operations", "_version",
"metrics"}
# The packages whose rooms MAY_IMPORT names; of the others, none
BELOW = ("mq9_platform", "mq9_wire")


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            found.add(node.module or "")
    return found


def test_the_face_imports_only_the_parts_below_it():
    assert (FOLDER / "app.py").is_file()  # (the test reads what it means to)
    wrong = []
    for path in sorted(FOLDER.rglob("*.py")):
        for name in _imports(path):
            top, _, rest = name.partition(".")
            if top in ("mq9_mcp", "mq9_mcp", "mq9_broker", "langchain_mq9") or (
                top in BELOW and rest.split(".")[0] not in MAY_IMPORT
            ):
                wrong.append(f"{path.relative_to(ROOT)}: {name}")
    assert wrong == []


@pytest.mark.slow  # parses the package: over a second of CPU (#89)
def test_nothing_of_the_package_imports_it():
    importers = [
        str(path.relative_to(ROOT))
        for package in (
            "wire/mq9_wire",
            "broker/mq9_broker",
            "platform/mq9_platform",
            "langchain_mq9",
            "mcp_server",
        )
        for path in sorted((ROOT / package).rglob("*.py"))
        if any(name.split(".")[0] == "mq9_cli" for name in _imports(path))
    ]
    assert importers == []
