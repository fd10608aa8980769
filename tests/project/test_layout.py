"""The packages' shape (issues #36, #92; docs/architecture.md): the import graph has no circle,
the protocol imports nothing above it, and each part imports only the parts below it, across the
three distributions too (mq9-wire at the bottom, mq9-broker on it, langchain-mq9 on both:
tests/project/test_distributions.py holds the distributions one-way).

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
# Each package the graph reads, and its folder: the wire's and the broker's are their
# distributions' (wire/, broker/), the client side's at the repository's top
PACKAGES = {
    "mq9_wire": ROOT / "wire" / "mq9_wire",
    "mq9_broker": ROOT / "broker" / "mq9_broker",
    "langchain_mq9": ROOT / "langchain_mq9",
    "mcp_server": ROOT / "mcp_server",
}
# Old import paths kept for a release (langchain_mq9/_moved.py): no part of the graph, and
# nothing imports them (tests/project/test_distributions.py)
SHIMS = ("langchain_mq9.broker", "langchain_mq9.protocol", "langchain_mq9._moved")

# Which parts each part may import (besides itself). A part is a folder of mq9_wire or
# langchain_mq9; "wire" for the files at mq9_wire's top (the leaves the command lines share:
# _cli.py); "broker" for the whole of mq9_broker (its own rooms: docs/architecture.md's
# broker table, test_architecture_doc.py); "face" for the files at langchain_mq9's top (the
# LangChain integration and the package's face); mcp_server. The order is the one
# docs/architecture.md draws, bottom up.
MAY_IMPORT = {
    # the ground floors: NATS plumbing (nats-py's internals behind their version checks, URLs,
    # redaction) and HTTP (the SSRF guard, the host allow-list); they stand on nothing of ours
    "_nats": set(),
    "_http": set(),
    "protocol": set(),
    "semantic": {"protocol"},
    "groups": {"protocol"},
    "tracing": {"protocol"},
    # what a server tells its operator (#73): the /metrics and health endpoint, the probe
    "metrics": {"protocol"},
    # the command lines' argparse types and logging (redaction: _nats)
    "wire": {"_nats"},
    # the bundled broker, a distribution of its own: the wire alone below it
    "broker": {"_nats", "protocol", "semantic", "metrics", "wire"},
    # memory:// finds its engine through a registration (the face registers the broker's)
    "client": {"_nats", "protocol", "semantic", "groups", "tracing"},
    "a2a": {"_nats", "_http", "protocol", "groups", "client", "tracing", "wake", "metrics"},
    "operations": {
        "_nats",
        "_http",
        "protocol",
        "semantic",
        "groups",
        "client",
        "a2a",
        "tracing",
        "wake",
    },
    # the broker only for memory://, imported at its first use (__init__.py)
    "face": {
        "_nats",
        "_http",
        "protocol",
        "semantic",
        "groups",
        "client",
        "a2a",
        "operations",
        "broker",
        "tracing",
        "wake",
    },
    # groups: the dead-letter naming its Events extension watches (events.py)
    "mcp_server": {
        "_nats",
        "_http",
        "protocol",
        "groups",
        "client",
        "operations",
        "face",
        "wake",
        "metrics",
        "wire",
    },
    # wake rules and the waker (#62): the client and its memory:// engine's announcements
    "wake": {"_nats", "_http", "protocol", "client", "metrics", "wire"},
}
# What mcp_server may use of the face: the version it prints
FACE_MAY_USE = {"langchain_mq9/_version.py"}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the packages (the shims aside)."""
    found = {}
    for package, folder in PACKAGES.items():
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
    if top in ("mcp_server", "mq9_broker"):
        return {"mcp_server": "mcp_server", "mq9_broker": "broker"}[top]
    head = rest.partition(".")[0]
    if head and (PACKAGES[top] / head).is_dir():
        return head
    return "wire" if top == "mq9_wire" else "face"


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


@pytest.mark.slow  # parses every module: about a second of CPU (#89)
def test_the_import_graph_has_no_circle():
    assert circles() == []


def test_each_part_imports_only_the_parts_below_it():
    wrong = []
    files = module_files()
    for module, targets in graph().items():
        part = part_of(module)
        for target in targets:
            other = part_of(target)
            if other == part:
                continue
            limited = part == "mcp_server" and other == "face"
            if other not in MAY_IMPORT[part] or (
                limited and str(files[target].relative_to(ROOT)) not in FACE_MAY_USE
            ):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


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
        for package in ("mq9_wire", "langchain_mq9")
        for p in PACKAGES[package].iterdir()
        if (p / "__init__.py").exists() and f"{package}.{p.name}" not in SHIMS
    }
    assert folders == set(MAY_IMPORT) - {"face", "wire", "broker", "mcp_server"}


if __name__ == "__main__":
    print(f"{len(graph())} modules, depth {depth()}, {arrows()} arrows, circles: {circles()}")
