"""Every ```python block of README.md runs as pasted, twice in a row, each run in a fresh
interpreter. Blocks that talk to ``mq9-mcp --transport http`` get the server the README tells
the user to start; a block that cannot run says why in a ``<!-- not-runnable: reason -->``
comment right before it."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from mcp_support import http_server

from langchain_mq9.broker.nats_process import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON if VENV_PYTHON.exists() else Path(sys.executable))
TIMEOUT = 60

# The variables a snippet or the server reads; a developer's own settings must not leak in.
_OWN_ENV = (
    "MQ9_SERVER", "NATS_URL", "MQ9_USER", "NATS_USER", "MQ9_PASSWORD", "NATS_PASSWORD",
    "MQ9_TOKEN", "NATS_TOKEN", "MQ9_CREDS", "NATS_CREDS", "MQ9_MCP_TOKEN", "MQ9_MCP_PORT",
)  # fmt: skip

BLOCK = re.compile(r"(?:<!--\s*(?P<note>[^>]*?)\s*-->\n)?```python\n(?P<code>.*?)^```", re.S | re.M)


def python_blocks() -> list[tuple[int, str, str]]:
    """(line number, code, the HTML comment right before the block or "")."""
    return [
        (README.count("\n", 0, m.start("code")), m.group("code"), m.group("note") or "")
        for m in BLOCK.finditer(README)
    ]


BLOCKS = python_blocks()


def needs_http_server(code: str) -> bool:
    return "MQ9_MCP_TOKEN" in code


def env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in _OWN_ENV}
    return {**clean, "PYTHONUNBUFFERED": "1", **extra}


@contextmanager
def mcp_http_server() -> Iterator[dict[str, str]]:
    """The HTTP server the README tells the user to start (on a free port, with a fresh
    token); yields the environment its snippets read."""
    token, port = secrets.token_urlsafe(16), free_port()
    command = ["--transport", "http", "--port", str(port), "--server", "memory://"]
    assert f"mq9-mcp {' '.join(command).replace(str(port), '8000')}\n" in README
    with http_server("--server", "memory://", port=port, MQ9_MCP_TOKEN=token):
        yield env(MQ9_MCP_TOKEN=token, MQ9_MCP_PORT=str(port))


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3
    for line, _, note in BLOCKS:
        if note.startswith("not-runnable"):
            reason = note.removeprefix("not-runnable").lstrip(":").strip()
            assert reason, f"README.md:{line}: <!-- not-runnable --> needs a reason"


@pytest.mark.parametrize(
    ("code", "note"),
    [pytest.param(code, note, id=f"README.md:{line}") for line, code, note in BLOCKS],
)
def test_python_block_runs_twice_as_pasted(code, note, tmp_path):
    if note.startswith("not-runnable"):
        pytest.skip(note)
    assert "await " not in re.sub(r"async def .*?\n(?=\S)", "", code, flags=re.S), (
        "top-level await: wrap the code in asyncio.run(main())"
    )
    with mcp_http_server() if needs_http_server(code) else _plain() as environment:
        for attempt in ("first", "second"):
            done = subprocess.run(
                [PYTHON, "-c", code],
                cwd=tmp_path,  # not the clone: the installed package, as a user has it
                env=environment,
                capture_output=True,
                text=True,
                timeout=TIMEOUT,
            )
            assert done.returncode == 0, f"{attempt} run:\n{done.stdout}\n{done.stderr[-3000:]}"
            assert done.stdout.strip(), f"{attempt} run printed nothing"
            assert "None" not in done.stdout.splitlines(), done.stdout
            assert "Warning" not in done.stderr, done.stderr


@contextmanager
def _plain() -> Iterator[dict[str, str]]:
    yield env()


@pytest.mark.parametrize(
    "code", [pytest.param(code, id=f"README.md:{line}") for line, code, _ in BLOCKS]
)
def test_python_block_is_ruff_clean(code):
    """The blocks meet the project's own lint rules (pyproject.toml), line length included."""
    ruff = Path(sys.executable).with_name("ruff")
    command = [str(ruff)] if ruff.exists() else [shutil.which("ruff") or "ruff"]
    done = subprocess.run(
        [*command, "check", "--no-cache", "--stdin-filename", "readme_block.py", "-"],
        input=code,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
