"""The packages' shape (issues #36, #92, #108; docs/architecture.md): the import graph has no
circle, the protocol imports nothing above it, and each part imports only the parts below it,
across the distributions too (mq9-wire at the bottom; mq9-broker and mq9-platform on it; the
faces, langchain-mq9 and mq9-mcp, on the platform: tests/project/test_distributions.py holds
the distributions one-way). mq9-cli's ``mq9_cli`` is held by
tests/integration/cli/test_cli_layout.py.

Every import counts, wherever it stands (inside a function, under ``TYPE_CHECKING``): a lazy
import is still a dependency a reader must follow. ``python tests/project/test_layout.py``
prints the graph's depth and arrow count.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Each package the graph reads, and its folder: each its distribution's (wire/, broker/,
# platform/, mcp_server/), the LangChain face's at the repository's top
PACKAGES = {
    "mq9_wire": ROOT / "wire" / "mq9_wire",
    "mq9_broker": ROOT / "broker" / "mq9_broker",
    "mq9_platform": ROOT / "platform" / "mq9_platform",
    "langchain_mq9": ROOT / "langchain_mq9",
    "mq9_mcp": ROOT / "mcp_server" / "mq9_mcp",
}
# Old import paths kept for a release (langchain_mq9/_moved.py: the platform's parts, which
# were langchain_mq9's in 0.4): no part of the graph, and nothing imports them
# (tests/project/test_distributions.py)
SHIMS = tuple(
    f"langchain_mq9.{old}"
    for old in ("client", "groups", "operations", "a2a", "wake", "tracing", "_moved")
)
SHIMS = (*SHIMS, "mq9_wire._nats", "mq9_wire._cli", "mq9_platform.a2a._moved")
# The one module outside the broker that imports it: the platform's __init__.py, at the first
# memory:// client (_bundled_broker)
BROKER_DOOR = "mq9_platform"

# Which parts each part may import (besides itself). A part is a folder of mq9_wire or
# mq9_platform; "wire" for the files at mq9_wire's top (the leaves the command lines share:
# command_line.py); "broker" for the whole of mq9_broker (its own rooms: docs/architecture.md's
# broker table, test_architecture_doc.py); "platform" for the files at mq9_platform's top (the
# platform's names and version); "face" for the files at langchain_mq9's top (the LangChain
# face); mq9_mcp. The order is the one docs/architecture.md draws, bottom up. No part of
# the wire, the broker or the platform names "face" or "mq9_mcp": the faces stand on the
# platform, never under it.
MAY_IMPORT = {
    # the ground floors: NATS plumbing (nats-py's internals behind their version checks, URLs,
    # redaction) and HTTP (the SSRF guard, the host allow-list); they stand on nothing of ours
    "nats_floor": set(),
    "_http": set(),
    "protocol": set(),
    "semantic": {"protocol"},
    "groups": {"protocol"},
    "tracing": {"protocol"},
    # what a server tells its operator: the /metrics and health endpoint, the probe
    "metrics": {"protocol"},
    # the command lines' argparse types and logging (redaction: nats_floor)
    "wire": {"nats_floor"},
    # the bundled broker, a distribution of its own: the wire alone below it
    "broker": {"nats_floor", "protocol", "semantic", "metrics", "wire"},
    # memory:// finds its engine through a registration (the platform's __init__.py registers
    # the broker's)
    "client": {"nats_floor", "protocol", "semantic", "groups", "tracing"},
    "a2a": {"nats_floor", "_http", "protocol", "groups", "client", "tracing", "wake", "metrics"},
    "operations": {
        "nats_floor",
        "_http",
        "protocol",
        "semantic",
        "groups",
        "client",
        "a2a",
        "tracing",
        "wake",
    },
    # wake rules and the waker: the client and its memory:// engine's announcements
    "wake": {"nats_floor", "_http", "protocol", "client", "metrics", "wire"},
    # the platform's names; the broker only for memory://, imported at its first use
    # (__init__.py, BROKER_DOOR)
    "platform": {
        "protocol",
        "groups",
        "tracing",
        "client",
        "a2a",
        "operations",
        "wake",
        "broker",
    },
    # the LangChain face: the platform's parts, and nothing of the broker (the platform
    # registers it)
    "face": {
        "nats_floor",
        "_http",
        "protocol",
        "semantic",
        "groups",
        "client",
        "a2a",
        "operations",
        "tracing",
        "wake",
        "platform",
    },
    # groups: the dead-letter naming its Events extension watches (events.py); the platform's
    # top: the version it prints (mq9-mcp installs without langchain-mq9, so nothing of "face")
    "mq9_mcp": {
        "nats_floor",
        "_http",
        "protocol",
        "groups",
        "client",
        "operations",
        "wake",
        "metrics",
        "wire",
        "platform",
    },
}
# Each package's top files, as a part (the others' top files are no part: mq9_mcp is one
# room, the broker one whole)
TOP_PART = {"mq9_wire": "wire", "mq9_platform": "platform", "langchain_mq9": "face"}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (the shims aside)."""
    found = {}
    for package, folder in PACKAGES.items():
        assert folder.is_dir(), f"{package} is not at {folder}: name where it moved"
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            name = ".".join(parts)
            if not name.startswith(SHIMS):
                found[name] = path
    return found


def _nearest_module(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:  # a name defined in a module: that module
        name = name.rpartition(".")[0]
    return name or None


def _imported(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The package modules ``module`` imports (``from . import x`` imports module x, not the
    package's ``__init__``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found |= {_nearest_module(alias.name, modules) for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            target = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            for alias in node.names:
                full = f"{target}.{alias.name}"
                found.add(full if full in modules else _nearest_module(target, modules))
    return {m for m in found if m is not None and m != module}


@cache
def graph() -> dict[str, frozenset[str]]:
    modules = module_files()
    return {m: frozenset(_imported(p, m, modules)) for m, p in modules.items()}


def part_of(module: str) -> str:
    top, _, rest = module.partition(".")
    if top in ("mq9_mcp", "mq9_broker"):
        return {"mq9_mcp": "mq9_mcp", "mq9_broker": "broker"}[top]
    head = rest.partition(".")[0]
    if head and (PACKAGES[top] / head).is_dir():
        return head
    return TOP_PART[top]


def circles() -> list[list[str]]:
    """Each circle of the graph once (Tarjan's strongly connected components of size > 1)."""
    edges, index, low, stack, on, found = graph(), {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on.add(node)
        for nxt in edges[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def depth() -> int:
    """Floors: 1 for a module that imports none, else one more than the highest it imports
    (the files of a circle share one floor)."""
    edges = graph()
    home = {member: tuple(group) for group in circles() for member in group}

    @cache
    def floor(node: str) -> int:
        members = home.get(node, (node,))
        below = {n for m in members for n in edges[m]} - set(members)
        return 1 + max((floor(home.get(n, (n,))[0]) for n in below), default=0)

    return max(floor(home.get(n, (n,))[0]) for n in edges)


def arrows() -> int:
    return sum(len(targets) for targets in graph().values())


@pytest.mark.slow  # parses every module: about a second of CPU
def test_the_import_graph_has_no_circle():
    assert circles() == []


def test_each_part_imports_only_the_parts_below_it():
    wrong = []
    for module, targets in graph().items():
        part = part_of(module)
        for target in targets:
            other = part_of(target)
            if other != part and other not in MAY_IMPORT[part]:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_broker_is_imported_in_one_place():
    """#108: the platform takes the broker for memory:// at one door (its ``__init__.py``),
    lazily, so the client and the broker stand beside each other on the wire."""
    importers = {
        module
        for module, targets in graph().items()
        if part_of(module) != "broker" and any(part_of(t) == "broker" for t in targets)
    }
    assert importers == {BROKER_DOOR}


def test_the_protocol_uses_only_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"mq9_wire"}
    outside = []
    for path in sorted((PACKAGES["mq9_wire"] / "protocol").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            outside += [f"{path.name}: {n}" for n in names if n.split(".")[0] not in allowed]
    assert outside == []


def test_the_folders_are_the_parts():
    folders = {
        p.name
        for package in TOP_PART
        for p in PACKAGES[package].iterdir()
        if (p / "__init__.py").exists() and f"{package}.{p.name}" not in SHIMS
    }
    assert folders == set(MAY_IMPORT) - {*TOP_PART.values(), "broker", "mq9_mcp"}


if __name__ == "__main__":
    print(f"{len(graph())} modules, depth {depth()}, {arrows()} arrows, circles: {circles()}")
