"""docs/architecture.md is drawn from the code, and stays so (issue #74).

A page that names a module which moved, or misses a room that was added, misleads the very
readers it is for (contributors), and nobody notices: the code runs either way. So this test
reads the page as the code's picture and checks four things against the tree:

- every path it names exists (a backticked ``name.py`` or ``folder/`` in the prose, any such
  name in a ``text`` drawing), matched by its last parts, since the page writes ``serving/``
  for ``broker/mq9_broker/serving/`` where the drawing makes the place clear;
- every room of the packages (``mq9_wire``, ``mq9_broker``, ``mq9_platform``,
  ``langchain_mq9``, ``mq9_mcp``, ``mq9_cli`` and each folder with an ``__init__.py`` under
  them, the old paths kept for a release aside) is named there as a folder;
- the "May import" column of its rooms' table is the layout rules: ``MAY_IMPORT`` of
  tests/project/test_layout.py, and for ``mq9_cli`` (which that test does not read) the one of
  tests/integration/cli/test_cli_layout.py;
- the "Uses" column of the bundled broker's table is what each broker room imports, read from
  the code (the imports test_layout.py's graph counts, lazy ones too).

Each failure is one line saying what differs, so the page is mended where it is wrong.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import re
from collections import defaultdict
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "architecture.md"
PACKAGES = (
    "wire/mq9_wire",
    "broker/mq9_broker",
    "platform/mq9_platform",
    "langchain_mq9",
    "mcp_server/mq9_mcp",
    "faces/cli/mq9_cli",
)
# old paths, kept for a release (langchain_mq9/_moved.py): the platform's parts, once
# langchain_mq9's
SHIMS = tuple(
    f"langchain_mq9/{old}" for old in ("client", "groups", "operations", "a2a", "wake", "tracing")
)
SHIMS = (*SHIMS, "mq9_wire/_nats", "wire/mq9_wire/_nats")
BROKER = ROOT / "broker" / "mq9_broker"
# How the page names the LangChain face (test_layout.py's "face"): the files at the top of
# langchain_mq9; the wire's top files ("wire"), the platform's ("platform") and the broker as a
# whole ("broker")
FACE = "langchain_mq9/*.py"
WHOLE = {
    FACE: "face",
    "mq9_wire/*.py": "wire",
    "mq9_platform/*.py": "platform",
    "mq9_broker/": "broker",
}
# The folders whose subfolders are rooms of test_layout.py
ROOM_HOMES = (
    ROOT / "wire" / "mq9_wire",
    ROOT / "platform" / "mq9_platform",
    ROOT / "langchain_mq9",
)
# Rooms the table names by their folder alone (the faces outside langchain_mq9)
TOP_ROOMS = ("mq9_mcp", "mq9_cli")
# A package's face and ``python -m``: they hand names on, so their imports are no room's arrows
PACKAGE_FACES = ("__init__.py", "__main__.py")

BACKTICKED = re.compile(r"`([^`\n]+)`")
PATH = re.compile(r"[\w.*-]+(?:/[\w.*-]+)*(?:\.py|/)")
# In a drawing nothing is backticked: a word ending in .py or / (not a URL's ``://``)
IN_DRAWING = re.compile(r"(?<![\w./:*$<-])[\w*][\w.*-]*(?:/[\w.*-]+)*(?:\.py|/)(?![\w/])")
DRAWING = re.compile(r"^```text\n(.*?)^```", re.S | re.M)
ANY_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)


def _load(path: Path) -> ModuleType:
    """Another test module, by its path (tests/cli is not on sys.path when only this runs)."""
    spec = importlib.util.spec_from_file_location(f"architecture_doc_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@cache
def layout() -> ModuleType:
    return _load(ROOT / "tests" / "project" / "test_layout.py")


@cache
def cli_layout() -> ModuleType:
    return _load(ROOT / "tests" / "integration" / "cli" / "test_cli_layout.py")


@cache
def page() -> str:
    return DOC.read_text("utf-8")


def named_paths() -> set[str]:
    text = page()
    found = {m for block in DRAWING.findall(text) for m in IN_DRAWING.findall(block)}
    prose = ANY_BLOCK.sub("", text)
    found |= {t for t in BACKTICKED.findall(prose) if PATH.fullmatch(t)}
    return found


@cache
def tree() -> tuple[tuple[tuple[str, ...], bool], ...]:
    """Every file and folder of the work tree (hidden and cache folders aside), as its parts
    and whether it is a folder."""
    found: list[tuple[tuple[str, ...], bool]] = []

    def walk(folder: Path, parts: tuple[str, ...]) -> None:
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith(".") or entry.name == "__pycache__":
                continue
            here = (*parts, entry.name)
            found.append((here, entry.is_dir()))
            if entry.is_dir():
                walk(entry, here)

    walk(ROOT, ())
    return tuple(found)


def resolve(name: str) -> list[tuple[str, ...]]:
    """What ``name`` may stand for: each path whose last parts it is (a ``*`` matches within a
    part; a name ending in ``/`` is a folder)."""
    want = tuple(name.rstrip("/").split("/"))
    folder = name.endswith("/")
    return [
        parts
        for parts, is_dir in tree()
        if (is_dir or not folder)
        and len(parts) >= len(want)
        and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts[-len(want) :], want, strict=True))
    ]


def rooms() -> set[tuple[str, ...]]:
    found = set()
    for package in PACKAGES:
        found.add(tuple(package.split("/")))
        for init in (ROOT / package).rglob("__init__.py"):
            found.add(init.parent.relative_to(ROOT).parts)
    return {room for room in found if not "/".join(room).startswith(SHIMS)}


def table(last_header: str) -> list[tuple[list[str], list[str]]]:
    """The rows of the page's table whose last column is ``last_header``: for each, the names
    backticked in its first and in its last cell, outside parentheses (a remark in brackets
    may name files without making them rooms)."""
    lines = page().splitlines()
    for at, line in enumerate(lines):
        cells = _cells(line)
        if cells and cells[-1] == last_header:
            rows = []
            for row in lines[at + 2 :]:
                if not row.startswith("|"):
                    break
                cells = _cells(row)
                rows.append((_names(cells[0]), _names(cells[-1])))
            return rows
    pytest.fail(f"docs/architecture.md has no table whose last column is {last_header!r}")


def _cells(line: str) -> list[str]:
    if not line.startswith("|"):
        return []
    # a | inside backticks is text, not a cell's end
    parts = re.split(r"\|(?=(?:[^`]*`[^`]*`)*[^`]*$)", line.strip())
    return [part.strip() for part in parts[1:-1]]


def _names(cell: str) -> list[str]:
    while True:
        bare = re.sub(r"\([^()]*\)", "", cell)
        if bare == cell:
            return BACKTICKED.findall(bare)
        cell = bare


def _differs(what: str, missing: set[str], extra: set[str], against: str) -> list[str]:
    """One problem saying how ``what`` differs from ``against`` (none when it does not)."""
    words = [f"leaves out {', '.join(sorted(missing))}"] * bool(missing)
    words += [f"adds {', '.join(sorted(extra))}"] * bool(extra)
    return [f"{what} {' and '.join(words)} ({against})"] if words else []


def _fail(problems: list[str]) -> None:
    if problems:
        pytest.fail("docs/architecture.md: " + "; ".join(problems), pytrace=False)


def test_every_path_it_names_exists():
    gone = sorted(name for name in named_paths() if not resolve(name))
    if gone:
        _fail([f"names {', '.join(gone)}, which no path of the tree ends with"])


def test_every_room_of_the_package_is_named():
    named = {parts for name in named_paths() if name.endswith("/") for parts in resolve(name)}
    unnamed = sorted("/".join(parts) + "/" for parts in rooms() - named)
    if unnamed:
        _fail([f"names no {', '.join(unnamed)}: name each room where its parent is drawn"])


def _room_key(name: str) -> str | None:
    """test_layout.py's name of a room the table writes as ``name``."""
    if name in WHOLE:
        return WHOLE[name]
    bare = name.removesuffix("/")
    if not name.endswith("/") or "/" in bare:
        return None
    if bare in TOP_ROOMS:
        return bare
    homes = [home for home in ROOM_HOMES if (home / bare / "__init__.py").exists()]
    if any(f"{home.name}/{bare}" not in SHIMS for home in homes):
        return bare
    return None


def _shown(key: str) -> str:
    return {v: k for k, v in WHOLE.items()}.get(key, f"{key}/")


def rules() -> dict[str, set[str]]:
    """Which rooms each room may import, as the layout tests hold the code to it."""
    found = {part: set(allowed) for part, allowed in layout().MAY_IMPORT.items()}
    # test_cli_layout.py names the platform's one top file mq9_cli may use: _version.py
    found["mq9_cli"] = {
        "platform" if name == "_version" else name for name in cli_layout().MAY_IMPORT
    }
    return found


def test_may_import_is_the_layout_rules():
    problems, said = [], {}
    for names, allowed in table("May import"):
        keys = [_room_key(name) for name in names]
        if len(keys) != 1 or keys[0] is None:
            problems.append(f"a row of the rooms' table names {names} where one room goes")
            continue
        targets = {name: _room_key(name) for name in allowed}
        problems += [
            f"{_shown(keys[0])} may import `{t}`, no room" for t, k in targets.items() if not k
        ]
        said[keys[0]] = {k for k in targets.values() if k}
    expected = rules()
    problems += [
        f"the rooms' table has no row {_shown(k)}" for k in sorted(expected.keys() - said.keys())
    ]
    problems += [
        f"the rooms' table has a row {_shown(k)}, a room the layout tests do not know"
        for k in sorted(said.keys() - expected.keys())
    ]
    for key in sorted(said.keys() & expected.keys()):
        problems += _differs(
            f"the row of {_shown(key)}, May import,",
            {_shown(k) for k in expected[key] - said[key]},
            {_shown(k) for k in said[key] - expected[key]},
            "against the layout tests' MAY_IMPORT",
        )
    _fail(problems)


def _broker_member(path: Path) -> str | None:
    """The name the broker's table gives the room of ``path``: its folder under broker/, or
    the file itself at broker/'s top (its package face and ``__main__`` are no room's)."""
    inside = path.relative_to(BROKER).parts
    if len(inside) > 1:
        return f"{inside[0]}/"
    return None if inside[0] in PACKAGE_FACES else inside[0]


def broker_uses() -> dict[str, set[str]]:
    """Broker member -> the members it imports (the top files one by one)."""
    files = layout().module_files()
    found: dict[str, set[str]] = defaultdict(set)
    for module, targets in layout().graph().items():
        if not files[module].is_relative_to(BROKER) or not (here := _broker_member(files[module])):
            continue
        found.setdefault(here, set())  # a room that imports no other still is one
        for target in targets:
            if files[target].is_relative_to(BROKER):
                there = _broker_member(files[target])
                if there and there != here:
                    found[here].add(there)
    return found


@pytest.mark.slow  # over a second on a quiet machine
def test_the_broker_rooms_uses_are_their_imports():
    rows = table("Uses")
    row_of = {member: names[0] for names, _ in rows for member in names}
    problems = []
    code: dict[str, set[str]] = defaultdict(set)
    for member, used in broker_uses().items():
        if member not in row_of:
            problems.append(f"the broker's table has no row for `{member}`")
            continue
        code[row_of[member]] |= {row_of.get(u, u) for u in used} - {row_of[member]}
    for names, used in rows:
        row = names[0]
        unknown = [u for u in used if u not in row_of]
        problems += [f"broker room `{row}` uses `{u}`, no row of its table" for u in unknown]
        said = {row_of[u] for u in used if u in row_of}
        problems += _differs(
            f"the broker's row of {row}, Uses,",
            code[row] - said,
            said - code[row],
            "against its imports in the code",
        )
    _fail(problems)
