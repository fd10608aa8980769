"""One JetStream client (issue #92): the NATS floor's (``nats_floor/jetstream/requests.py``), with
nats-py's ``nats.js`` behind it only where a stream must be followed, in one module
(``nats_floor/jetstream/consumers.py``); no room of the broker reaches into the cluster store for
it.

Every use counts, wherever it stands (inside a function, under ``TYPE_CHECKING``): an import
of ``nats.js``, or a ``.jetstream(`` context made from a connection.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "wire" / "mq9_wire", ROOT / "broker" / "mq9_broker"]
SOURCES += [ROOT / "platform" / "mq9_platform", ROOT / "langchain_mq9"]
SOURCES += [ROOT / "mcp_server" / "mq9_mcp", ROOT / "faces" / "cli" / "mq9_cli"]

THE_ONE = "wire/mq9_wire/nats_floor/jetstream/consumers.py"
# The cluster store's delayed messages take them from a durable pull consumer, and its thread's
# loop names nats-py's JetStream context: storage/'s, until it moves to the floor too
NOT_YET = {
    "broker/mq9_broker/storage/jetstream/staged.py",
    "broker/mq9_broker/storage/loop_thread.py",
}
_CONTEXT = re.compile(r"\.jetstream\(")


def _uses(path: Path) -> list[str]:
    """What of nats.js ``path`` uses: its imports of it, its JetStream contexts made."""
    text = path.read_text()
    found = [
        f"line {text.count(chr(10), 0, m.start()) + 1}: .jetstream("
        for m in _CONTEXT.finditer(text)
    ]
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nats.js"):
            found.append(f"line {node.lineno}: from {node.module} import")
        elif isinstance(node, ast.Import):
            found += [
                f"line {node.lineno}: import {alias.name}"
                for alias in node.names
                if alias.name.startswith("nats.js")
            ]
    return found


def _users() -> dict[str, list[str]]:
    users = {}
    assert all(folder.is_dir() for folder in SOURCES), "a source folder moved: name it anew"
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            uses = _uses(path)
            if uses:
                users[path.relative_to(ROOT).as_posix()] = uses
    return users


def test_nats_js_is_used_in_one_module_of_the_floor() -> None:
    users = _users()
    assert THE_ONE in users  # (the test reads what it means to)
    strays = {path: uses for path, uses in users.items() if path not in {THE_ONE, *NOT_YET}}
    assert not strays, f"nats.js used outside {THE_ONE}: {strays}"


def test_the_cluster_store_requests_are_its_own() -> None:
    """``storage/jetstream/requests.py`` binds the floor's client to the store's errors; no
    other room imports it (the identities' bucket takes the floor's)."""
    strays = []
    for folder in SOURCES:
        for path in folder.rglob("*.py"):
            inside = "storage/jetstream" in path.relative_to(ROOT).as_posix()
            if not inside and "storage.jetstream.requests" in path.read_text():
                strays.append(path.relative_to(ROOT).as_posix())
    assert not strays
