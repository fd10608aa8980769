"""How users get mq9-mcp: no doc line tells them to ``pip install`` the bare PyPI name
``langchain-mq9`` (that installs the unrelated 0.3.5), and the one-step installs are documented."""

from __future__ import annotations

import re
from pathlib import Path

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


def test_the_one_step_install_is_documented():
    mcp = (ROOT / "docs" / "mcp.md").read_text()
    assert f'uvx --from "langchain-mq9[mcp] @ git+{REPOSITORY}" mq9-mcp' in mcp
