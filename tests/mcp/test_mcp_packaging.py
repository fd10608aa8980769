"""How users get mq9-mcp: no doc line tells them to ``pip install`` the bare name of one of this
repository's distributions (``langchain-mq9`` on PyPI is the unrelated 0.3.5; the others are on
no registry), and the one-step installs name mq9-mcp's four distributions (#108)."""

from __future__ import annotations

import json
import re
import shlex
import tomllib
from pathlib import Path

import mq9_mcp

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "https://github.com/mq9-agents/langchain-mq9"

# A pip install command (up to the end of its code span or line), and in it a distribution of
# this repository by its bare name as a requirement: a registry's (PyPI's langchain-mq9 is the
# unrelated 0.3.5; mq9-mcp, mq9-platform, ... are on none), unless the command takes it
# "@ git+..." (or from a wheel or a folder).
OURS = ("langchain-mq9", "mq9-wire", "mq9-broker", "mq9-platform", "mq9-mcp", "mq9-cli")
PIP_INSTALL = re.compile(r"pip install[^`\n]*")
BARE_NAME = re.compile(rf"""(?:^|\s)['"]?(?:{"|".join(OURS)})(\[[^\]]*\])?['"]?(?=\s|$)""")
# The README's warnings name the command to say it is the wrong one.
WARNING = re.compile(r"\bnot\b|no longer", re.I)


def installs_bare_name(line: str) -> bool:
    return any(
        BARE_NAME.search(command) and "@" not in command for command in PIP_INSTALL.findall(line)
    )


def documents() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return found + sorted((ROOT / "examples").glob("*.py")) + sorted(ROOT.glob("notebooks/*"))


def test_no_doc_line_installs_a_bare_name():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in documents()
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if installs_bare_name(line) and not WARNING.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_check_finds_a_bare_name_and_passes_the_repository():
    assert installs_bare_name("`pip install 'langchain-mq9[a2a]'` (a2a-sdk 1.x)")
    assert installs_bare_name("run pip install -U langchain-mq9")
    assert installs_bare_name("pip install mq9-mcp")
    assert installs_bare_name('.venv/bin/pip install "mq9-platform[wake]"')
    assert not installs_bare_name(f'pip install "langchain-mq9[a2a] @ git+{REPOSITORY}"')
    assert not installs_bare_name(f'.venv/bin/pip install "langchain-mq9 @ git+{REPOSITORY}"')
    assert not installs_bare_name(
        f'pip install "mq9-mcp @ git+{REPOSITORY}#subdirectory=mcp_server"'
    )
    assert not installs_bare_name("pip install ./wire ./broker ./platform ./mcp_server")
    assert not installs_bare_name("pip install langchain-mq9-other langchain")


def distributions() -> dict[str, dict]:
    """This repository's distributions: name -> {"folder": its folder, "needs": its names}."""
    found = {}
    for path in sorted([*ROOT.glob("*/pyproject.toml"), *ROOT.glob("faces/*/pyproject.toml")]):
        project = tomllib.loads(path.read_text())["project"]
        needs = {re.split(r"[\s\[=<>!~;@]", n, maxsplit=1)[0] for n in project["dependencies"]}
        found[project["name"]] = {
            "folder": path.parent.relative_to(ROOT).as_posix(),
            "needs": needs,
        }
    return found


def mq9_mcp_stands_on() -> dict[str, str]:
    """The repository's distributions mq9-mcp needs, directly or not: name -> its folder."""
    ours = distributions()
    needed, todo = set(), ["mq9-mcp"]
    while todo:
        for name in ours[todo.pop()]["needs"] & set(ours):
            if name not in needed:
                needed.add(name)
                todo.append(name)
    return {name: ours[name]["folder"] for name in sorted(needed)}


def test_mq9_mcp_stands_on_the_platform_the_wire_and_the_broker_without_langchain():
    below = mq9_mcp_stands_on()
    assert below == {"mq9-broker": "broker", "mq9-platform": "platform", "mq9-wire": "wire"}
    assert "langchain-mq9" not in below


def one_step_words() -> list[str]:
    """docs/mcp.md's one-step command, split as a shell does."""
    mcp = (ROOT / "docs" / "mcp.md").read_text()
    (line,) = re.findall(r"^uvx .*$", mcp, re.M)
    return shlex.split(line)


def test_the_one_step_install_is_documented_with_every_distribution_it_needs():
    """mq9-platform, mq9-wire and mq9-broker are served by no package registry: uvx is given
    each from the repository (``--with``), or it stops on "... was not found in the package
    registry" (tests/mcp/test_mcp_uvx.py runs the command)."""
    wanted = ["uvx", "--from", f"mq9-mcp @ git+{REPOSITORY}#subdirectory=mcp_server"]
    for name, folder in mq9_mcp_stands_on().items():
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
    assert sorted(shlex.split(mq9_mcp.APART)) == sorted(words[: len(wanted) + 1])


def test_mq9_mcp_without_the_sdk_names_its_four_distributions():
    command, clone = mq9_mcp.INSTALL.split(" (in a clone: ")
    words = shlex.split(command)
    stands_on = {**mq9_mcp_stands_on(), "mq9-mcp": "mcp_server"}
    assert words[:2] == ["pip", "install"]
    assert sorted(words[2:]) == sorted(
        f"{name} @ git+{REPOSITORY}#subdirectory={folder}" for name, folder in stands_on.items()
    ), words
    assert sorted(re.findall(r"-e \./(\S+?)\)?(?=\s|$)", clone)) == sorted(stands_on.values())


def test_the_docs_install_mq9_mcp_from_its_four_folders():
    """Every install line of docs/mcp.md and the README that installs mq9-mcp from a clone names
    the folders of its four distributions, and none installs it through langchain-mq9."""
    stands_on = {**mq9_mcp_stands_on(), "mq9-mcp": "mcp_server"}
    folders = [f"./{folder}" for folder in stands_on.values()]
    lines = [
        line
        for doc in (ROOT / "README.md", ROOT / "docs" / "mcp.md")
        for line in doc.read_text().splitlines()
        if "pip install" in line and "./mcp_server" in line
    ]
    assert lines
    for line in lines:
        assert all(folder in line for folder in folders), line
    through_the_toolkit = [
        line
        for doc in (ROOT / "README.md", ROOT / "docs" / "mcp.md")
        for line in doc.read_text().splitlines()
        if "pip install" in line and ".[mcp]" in line
    ]
    assert not through_the_toolkit, through_the_toolkit
