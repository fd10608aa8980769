"""How users get mq9-mcp: no doc line tells them to ``pip install`` the bare PyPI name
``langchain-mq9`` (that installs the unrelated 0.3.5), and the one-step installs are documented."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import mq9_mcp

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "https://github.com/mq9-agents/langchain-mq9"

# A pip install command (up to the end of its code span or line), and in it the project's bare
# name as a requirement: PyPI's, unless the command takes it "@ git+..." (or from a wheel).
PIP_INSTALL = re.compile(r"pip install[^`\n]*")
BARE_NAME = re.compile(r"""(?:^|\s)['"]?langchain-mq9(\[[^\]]*\])?['"]?(?=\s|$)""")
# The README's warnings name the command to say it is the wrong one.
WARNING = re.compile(r"\bnot\b|no longer", re.I)


def installs_bare_name(line: str) -> bool:
    return any(
        BARE_NAME.search(command) and "@" not in command for command in PIP_INSTALL.findall(line)
    )


def documents() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return found + sorted((ROOT / "examples").glob("*.py")) + sorted(ROOT.glob("notebooks/*"))


def test_no_doc_line_installs_the_bare_pypi_name():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in documents()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if installs_bare_name(line) and not WARNING.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_check_finds_the_bare_name_and_passes_the_repository():
    assert installs_bare_name("`pip install 'langchain-mq9[a2a]'` (a2a-sdk 1.x)")
    assert installs_bare_name("run pip install -U langchain-mq9")
    assert not installs_bare_name(f'pip install "langchain-mq9[a2a] @ git+{REPOSITORY}"')
    assert not installs_bare_name(f'.venv/bin/pip install "langchain-mq9 @ git+{REPOSITORY}"')
    assert not installs_bare_name("pip install langchain-mq9-other langchain")


def ours_below() -> dict[str, str]:
    """The repository's distributions that langchain-mq9 depends on: name -> its folder."""
    found = {}
    for folder in sorted(p.parent for p in ROOT.glob("*/pyproject.toml")):
        name = tomllib.loads((folder / "pyproject.toml").read_text())["project"]["name"]
        found[name] = folder.name
    needs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    named = {re.split(r"[\s\[=<>!~;@]", need, maxsplit=1)[0] for need in needs}
    return {name: folder for name, folder in found.items() if name in named}


def one_step_words() -> list[str]:
    """docs/mcp.md's one-step command, split as a shell does."""
    mcp = (ROOT / "docs" / "mcp.md").read_text()
    (line,) = re.findall(r"^uvx .*$", mcp, re.M)
    return shlex.split(line)


def test_the_one_step_install_is_documented_with_every_distribution_it_needs():
    """mq9-wire and mq9-broker are served by no package registry: uvx is given each from the
    repository (``--with``), or it stops on "mq9-wire was not found in the package registry"
    (tests/mcp/test_mcp_uvx.py runs the command)."""
    below = ours_below()
    assert set(below) == {"mq9-wire", "mq9-broker"}, below
    wanted = ["uvx", "--from", f"langchain-mq9[mcp] @ git+{REPOSITORY}"]
    for name, folder in below.items():
        wanted += ["--with", f"{name} @ git+{REPOSITORY}#subdirectory={folder}"]
    words = one_step_words()
    assert sorted(words[: len(wanted)]) == sorted(wanted), words
    assert words[len(wanted)] == "mq9-mcp", words
    # the client configuration the page gives is the same command
    mcp = (ROOT / "docs" / "mcp.md").read_text()
    config = re.search(r'`(\{"command": "uvx".*?\})`', mcp, re.S)
    assert config is not None
    parsed = json.loads(config.group(1).replace("\n", " "))
    assert ["uvx", *parsed["args"]] == words, parsed
    # and so is what mq9-mcp itself tells a virtualenv whose MCP SDK is too old
    assert shlex.split(mq9_mcp.APART) == words[: len(wanted) + 1]


def test_mq9_mcp_without_the_sdk_names_the_three_distributions():
    command, clone = mq9_mcp.INSTALL.split(" (in a clone: ")
    words = shlex.split(command)
    below = ours_below()
    assert words[:2] == ["pip", "install"]
    assert sorted(words[2:]) == sorted(
        [f"langchain-mq9[mcp] @ git+{REPOSITORY}"]
        + [f"{name} @ git+{REPOSITORY}#subdirectory={folder}" for name, folder in below.items()]
    ), words
    assert all(f"-e ./{folder}" in clone for folder in below.values()), clone
