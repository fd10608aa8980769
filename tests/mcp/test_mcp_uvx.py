"""docs/mcp.md's one-step install, run as written by the real ``uvx``: the repository's URL
put to a git repository made here of this tree (tracked files and new ones git does not
ignore), so nothing is fetched from the repository's host and what is tested is this tree. uv
clones it, builds the four distributions mq9-mcp needs (mq9-mcp, the platform, the wire and the
broker, each by ``#subdirectory``), takes the rest from the package registry, and the ``mq9-mcp``
it runs answers an MCP client on a ``memory://`` broker. The same command without its ``--with``
lines stops, saying that ``mq9-platform`` (mq9-mcp's own requirement) is in no registry: what
the page tells the reader.

Skipped without uv (``pip install uv``), or when the package registry cannot be reached."""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
REPOSITORY = "https://github.com/mq9-agents/langchain-mq9"
UNREACHABLE = ("Failed to fetch", "Could not connect", "dns error", "Network is unreachable")


def uvx() -> str:
    found = shutil.which("uvx", path=str(Path(sys.executable).parent)) or shutil.which("uvx")
    if found is None:
        pytest.skip("uv is not installed (pip install uv)")
    return found


def git(*args: str, cwd: Path) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@localhost"]
    subprocess.run(["git", *identity, *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """A git repository of this tree as it is now, committed: what uv clones for git+file://."""
    copy = tmp_path_factory.mktemp("repository")
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, text=True,
    ).stdout.split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the tree is left out, as it is
            (copy / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy / name)
    git("init", "-q", cwd=copy)
    git("add", ".", cwd=copy)
    git("commit", "-q", "-m", "this tree", cwd=copy)
    return copy


def documented(repository: Path) -> list[str]:
    """The page's command up to ``mq9-mcp``, its URL put to ``repository``."""
    (line,) = re.findall(r"^uvx .*$", (ROOT / "docs" / "mcp.md").read_text(), re.M)
    words = shlex.split(line.replace(REPOSITORY, repository.as_uri()))
    return words[: words.index("mq9-mcp") + 1]


def environment(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "UV_PYTHON": sys.executable,  # this Python, never one fetched
        "UV_PYTHON_DOWNLOADS": "never",
        "UV_TOOL_DIR": str(tmp_path / "tools"),
        "UV_NO_PROGRESS": "1",
    }


def test_the_documented_uvx_line_installs_and_serves(repository, tmp_path):
    words = documented(repository)
    words[0] = uvx()
    env = environment(tmp_path)
    # the first run resolves and builds (its output is uv's); a registry out of reach is a skip
    helped = subprocess.run(
        [*words, "--help"], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    if helped.returncode != 0 and any(w in helped.stderr for w in UNREACHABLE):
        pytest.skip(f"uv cannot reach the package registry: {helped.stderr[-300:]}")
    assert helped.returncode == 0, helped.stderr[-3000:]
    assert "--server" in helped.stdout

    server = StdioServerParameters(
        command=words[0], args=[*words[1:], "--server", "memory://"], env=env
    )
    asyncio.run(_creates_a_mailbox(server))


async def _creates_a_mailbox(server: StdioServerParameters) -> None:
    async with Client(server, mode="legacy", read_timeout_seconds=120) as client:
        listed = [tool.name for tool in (await client.list_tools()).tools]
        assert "create_mailbox" in listed and "fetch_messages" in listed
        created = await client.call_tool("create_mailbox", {"name": "uvx.inbox"})
        assert not created.is_error, created.content  # the broker (mq9-broker) is in there


def test_without_its_with_lines_uvx_stops_on_the_platform(repository, tmp_path):
    words = documented(repository)
    words[0] = uvx()
    while "--with" in words:  # the line as it was before the splits (#92, #108)
        at = words.index("--with")
        del words[at : at + 2]
    done = subprocess.run(
        [*words, "--help"], env=environment(tmp_path), capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    if any(w in done.stderr for w in UNREACHABLE):
        pytest.skip(f"uv cannot reach the package registry: {done.stderr[-300:]}")
    assert done.returncode != 0
    assert "mq9-platform" in done.stderr and "not found in the package registry" in done.stderr
