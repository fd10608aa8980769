"""The package's shape (issue #36, docs/architecture.md): its import graph has no circle, the
protocol imports nothing above it, and each part imports only the parts below it.

Every import counts, wherever it stands (inside a function, under ``TYPE_CHECKING``): a lazy
import is still a dependency a reader must follow. ``python tests/project/test_layout.py``
prints the graph's depth and arrow count.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("langchain_mq9", "mcp_server")

# Which parts each part may import (besides itself). A part is a folder of langchain_mq9, or
# "face" for the files at its top (the LangChain integration and the package's face), or
# mcp_server. The order is the one docs/architecture.md draws, bottom up.
MAY_IMPORT = {
    # the ground floors: NATS plumbing (nats-py's internals behind their version checks, URLs,
    # redaction) and HTTP (the SSRF guard, the host allow-list); they stand on nothing of ours
    "_nats": set(),
    "_http": set(),
    "protocol": set(),
    "semantic": {"protocol"},
    "groups": {"protocol"},
    "tracing": {"protocol"},
    # what a server tells its operator (#73): counters, the /metrics and health endpoint
    "metrics": {"protocol"},
    # memory:// finds its engine through a registration (the face registers the broker's)
    "client": {"_nats", "protocol", "semantic", "groups", "tracing"},
    # the client and the broker are peers on the NATS floor; of the face, only BROKER_MAY_USE
    "broker": {"_nats", "protocol", "semantic", "face", "metrics"},
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
    },
    # wake rules and the waker (#62): the client and its memory:// engine's announcements
    # of the face, only _cli.py (mq9-wake)
    "wake": {"_nats", "_http", "protocol", "client", "broker", "face", "metrics"},
}
# What the broker may use of the face: the private leaves the command lines share.
BROKER_MAY_USE = {
    "langchain_mq9/_cli.py",
    "langchain_mq9/_version.py",
}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the two packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
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
    if top == "mcp_server":
        return "mcp_server"
    head = rest.partition(".")[0]
    return head if head and (ROOT / top / head).is_dir() else "face"


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


def test_the_import_graph_has_no_circle():
    assert circles() == []


def test_each_part_imports_only_the_parts_below_it():
    wrong = []
    for module, targets in graph().items():
        part = part_of(module)
        for target in targets:
            other = part_of(target)
            if other == part:
                continue
            limited = (part == "broker" and other == "face") or (
                part == "wake" and other == "face"  # mq9-wake's command line: _cli.py
            )
            if other not in MAY_IMPORT[part] or (
                limited and str(module_files()[target].relative_to(ROOT)) not in BROKER_MAY_USE
            ):
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_the_protocol_uses_only_the_standard_library():
    allowed = set(sys.stdlib_module_names) | {"langchain_mq9"}
    outside = []
    for path in sorted((ROOT / "langchain_mq9" / "protocol").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            outside += [f"{path.name}: {n}" for n in names if n.split(".")[0] not in allowed]
    assert outside == []


def test_the_folders_are_the_parts():
    folders = {p.name for p in (ROOT / "langchain_mq9").iterdir() if (p / "__init__.py").exists()}
    assert folders == set(MAY_IMPORT) - {"face", "mcp_server"}


if __name__ == "__main__":
    print(f"{len(graph())} modules, depth {depth()}, {arrows()} arrows, circles: {circles()}")
