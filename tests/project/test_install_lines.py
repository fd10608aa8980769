"""Every ``pip install`` a user reads (README, docs/, examples/README.md, the notebooks) names
each of this project's distributions it brings by its folder, wheel or git URL (issues #112
and #113).

The six pin each other by name (``mq9-platform==0.5.0``, ...), names no registry holds for this
project. pip resolves a name given by path or URL from that path alone; a name reached only
through a pin (``".[mcp]"`` asks for ``mq9-mcp==0.5.0``) it looks up on the package index: from a
clone that fails ("No matching distribution found for mq9-mcp==0.5.0"), and where someone has
registered the name (``mq9-mcp 0.5.0`` with a build tag sorts above ours) it installs theirs and
runs their code (tests/project/test_install_sources.py plays that on loopback). So the rule read
here: the closure of a line's requirements over the pins (extras included) is named on the line.

Reads the files only (fast); test_install_sources.py runs the lines.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {
    "wire": "mq9-wire",
    "broker": "mq9-broker",
    "platform": "mq9-platform",
    "mcp_server": "mq9-mcp",
    "faces/cli": "mq9-cli",
    ".": "langchain-mq9",
}
OURS = set(FOLDERS.values())
# docs/protocol*.md are the wire's specification (no install lines of ours); CHANGELOG.md is history
DOC_PAGES = sorted(p for p in (ROOT / "docs").glob("*.md") if not p.name.startswith("protocol"))
# each distribution's own README (its pyproject's readme: the page a wheel carries)
OWN_READMES = [ROOT / folder / "README.md" for folder in FOLDERS if folder != "."]
PAGES = [ROOT / "README.md", *DOC_PAGES, ROOT / "examples" / "README.md", *OWN_READMES]
DOCS = [*PAGES, *sorted((ROOT / "notebooks").glob("*.ipynb"))]
# What a requirement by path, wheel or URL is: a folder, this project's wheel, "<the wheel>"
WHEEL = re.compile(
    r"(?:^|/)(mq9_wire|mq9_broker|mq9_platform|mq9_mcp|mq9_cli|langchain_mq9)-[^/]*\.whl$"
)
EXTRAS = re.compile(r"^(?P<base>.*?)(?:\[(?P<extras>[^\]]*)\])?$")


@dataclass(frozen=True)
class Line:
    where: str
    text: str
    before: str = ""  # the words before it on its line
    after: str = ""  # and after it

    @property
    def quoted_as_wrong(self) -> bool:
        """A line shown as what not to type: "not with `pip install langchain-mq9`", or
        "`pip install ".[mcp]"` alone fails" / its error."""
        return bool(re.search(r"\bnot\b", self.before, re.I)) or bool(
            re.match(r"`?(?: alone)?\W{0,3}(?:fails|\W*\"No matching)", self.after)
        )


def _text(doc: Path) -> str:
    if doc.suffix != ".ipynb":
        return doc.read_text()
    cells = json.loads(doc.read_text())["cells"]
    return "\n".join("".join(cell["source"]) for cell in cells)


def install_lines() -> list[Line]:
    """Each ``pip install ...`` up to its line's end (a ``\\`` continues it) or its closing
    backtick, with where it is."""
    found = []
    for doc in DOCS:
        text = _text(doc).replace("\\\n", " ")
        for m in re.finditer(r"pip install ([^\n`]*)", text):
            line = text.count("\n", 0, m.start()) + 1
            before = text[text.rfind("\n", 0, m.start()) + 1 : m.start()]
            after = text[m.end() : m.end() + 40].replace("\n> ", " ").replace("\n", " ")
            found.append(Line(f"{doc.relative_to(ROOT)}:{line}", m.group(1), before, after))
    return found


@cache
def _pins(name: str, extras: frozenset[str]) -> set[tuple[str, frozenset[str]]]:
    """Ours that ``name[extras]`` pins, each with the extras it asks of it."""
    folder = next(f for f, n in FOLDERS.items() if n == name)
    project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
    wanted = list(project.get("dependencies", []))
    for extra in extras:
        wanted += project.get("optional-dependencies", {}).get(extra, [])
    pinned = set()
    for text in wanted:
        requirement = Requirement(text)
        if canonicalize_name(requirement.name) in OURS:
            pinned.add((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return pinned


def brought(named: set[tuple[str, frozenset[str]]]) -> set[str]:
    """Every distribution of ours the requirements bring, through the pins."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = list(named)
    while todo:
        item = todo.pop()
        if item not in seen:
            seen.add(item)
            todo += _pins(*item)
    return {name for name, _ in seen}


def _ours(token: str) -> tuple[str, frozenset[str]] | None:
    """The distribution of ours a requirement names by path, wheel or URL (None: another's,
    by name, or not a requirement)."""
    if " @ " in token:  # a direct reference: "mq9-platform[a2a] @ git+URL#subdirectory=DIR"
        name = Requirement(token)
        canonical = canonicalize_name(name.name)
        return (canonical, frozenset(name.extras)) if canonical in OURS else None
    parts = EXTRAS.match(token)
    assert parts is not None
    base, extras = parts["base"], frozenset(filter(None, (parts["extras"] or "").split(",")))
    wheel = WHEEL.search(base)
    if wheel:
        return canonicalize_name(wheel[1]), extras
    if re.fullmatch(r"<[^>]*wheel[^>]*>", base):  # "<the wheel>": langchain-mq9's, the README's
        return "langchain-mq9", extras
    folder = base.removeprefix("./").rstrip("/") or "."
    return (FOLDERS[folder], extras) if folder in FOLDERS and base.startswith(".") else None


def requirements(line: Line) -> tuple[set[tuple[str, frozenset[str]]], list[str]]:
    """Ours named on the line, and any of ours it asks for by bare name."""
    text = line.text.split(" #", 1)[0].split("&&", 1)[0].split(";", 1)[0]
    try:
        tokens = shlex.split(text)
    except ValueError:  # an inline mention cut at its backtick: its words as they are
        tokens = text.replace('"', "").replace("'", "").split()
    named, by_name = set(), []
    skip = False
    for token in tokens:
        if skip or token.startswith("-"):
            skip = token in ("-r", "-c", "--find-links", "-f", "--index-url", "-i")
            continue
        ours = _ours(token)
        if ours:
            named.add(ours)
        elif canonicalize_name(EXTRAS.match(token)["base"]) in OURS:
            by_name.append(token)
    return named, by_name


LINES = install_lines()


def test_the_docs_have_install_lines_to_read():
    assert len(LINES) > 30
    assert any(line.where.startswith("notebooks/") for line in LINES)


@pytest.mark.parametrize("line", [pytest.param(x, id=x.where) for x in LINES])
def test_each_install_line_names_every_distribution_of_ours_it_brings(line: Line):
    if line.quoted_as_wrong:
        return
    named, by_name = requirements(line)
    if by_name:
        raise AssertionError(f"{line.where}: `pip install {line.text}` asks an index for {by_name}")
    missing = sorted(brought(named) - {name for name, _ in named})
    folders = [next(f"./{f}" if f != "." else "." for f, n in FOLDERS.items() if n == m)
               for m in missing]  # fmt: skip
    assert not missing, (
        f"{line.where}: `pip install {line.text}` brings {missing} by their pins alone, which "
        f"pip looks up on a package index (no registry holds them): name them too, {folders}"
    )


def _noted_needs() -> list[tuple[str, list[str], str]]:
    """Each block whose note (an HTML comment: tests/project/test_docs.py installs what it says)
    needs another project's packages, with the visible lines right above it."""
    found = []
    for doc in PAGES:
        text = doc.read_text()
        for m in re.finditer(r"^<!--\s*needs:((?:(?!-->)[^;])*)", text, re.M):
            others = [p for p in m.group(1).split() if not p.startswith("[")]
            above = text[: m.start()].splitlines()[-6:]
            shown = " ".join(x for x in above if not x.lstrip().startswith("<!--"))
            where = f"{doc.relative_to(ROOT)}:{text.count(chr(10), 0, m.start()) + 1}"
            if others:
                found.append((where, others, shown))
    return found


@pytest.mark.parametrize(
    ("where", "others", "shown"), [pytest.param(*n, id=n[0]) for n in _noted_needs()]
)
def test_what_a_block_needs_is_said_where_a_reader_sees_it(where, others, shown):
    """(#112) An HTML comment is invisible on the rendered page: a block needing another
    project's package says how to install it in the text above it."""
    assert "pip install" in shown, f"{where}: say `.venv/bin/pip install {' '.join(others)}`"
    for package in others:
        assert package in shown, f"{where}: the text above the block does not name {package}"


CODE = ["wire/mq9_wire", "broker/mq9_broker", "platform/mq9_platform", "mcp_server",
        "faces/cli/mq9_cli", "langchain_mq9"]  # fmt: skip


def _said(node: ast.expr) -> str:
    """A string literal's text, an f-string's values as ``X``."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    assert isinstance(node, ast.JoinedStr)
    return "".join(_said(v) if isinstance(v, ast.Constant) else "X" for v in node.values)


def code_hints() -> list[Line]:
    """Each ``pip install ...`` a command or library of ours says (up to `` (``, ``)``, ``;``)."""
    found = []
    for folder in CODE:
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            parts = {
                id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values
            }
            for node in ast.walk(tree):
                if not isinstance(node, (ast.Constant, ast.JoinedStr)) or id(node) in parts:
                    continue
                if isinstance(node, ast.Constant) and not isinstance(node.value, str):
                    continue
                text = _said(node)
                for m in re.finditer(r"pip install (.+?)(?= \(|\)|;|$)", text, re.M):
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found.append(Line(where, m.group(1), text[: m.start()]))
    return found


HINTS = code_hints()


def test_the_code_has_install_hints_to_read():
    assert len(HINTS) >= 8, HINTS


@pytest.mark.parametrize("line", [pytest.param(x, id=x.where) for x in HINTS])
def test_each_install_hint_names_folders_not_registry_names(line: Line):
    """(#112) What a command says to install where something is missing works from a clone: no
    registry holds mq9-platform or mq9-cli (``pip install 'mq9-cli[console]'`` failed, or took
    a stranger's), and ``./broker[credentials]`` alone looks its mq9-wire up on the index."""
    test_each_install_line_names_every_distribution_of_ours_it_brings(line)


@pytest.mark.parametrize("folder", [f for f in FOLDERS if f != "."])
def test_each_distribution_has_a_readme_with_its_install_line(folder):
    """(#112) A README in each distribution's folder, the one its wheel carries: what it is and
    the line that installs it from a clone (held to the rule above with the docs)."""
    readme = ROOT / folder / "README.md"
    assert readme.exists(), f"{folder}/ has no README.md"
    project = tomllib.loads((ROOT / folder / "pyproject.toml").read_text())["project"]
    assert project.get("readme") == "README.md"
    text = readme.read_text()
    assert text.startswith(f"# {project['name']}\n")
    assert "pip install ./wire" in text and (folder == "wire" or f"./{folder}" in text), text
