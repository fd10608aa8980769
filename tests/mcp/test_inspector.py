"""The MCP Inspector, run as docs/mcp.md says, against our ``mq9-mcp`` (issues #15, #26).

The docs' line is ``npx -y @modelcontextprotocol/inspector -e MQ9_SERVER=memory://
.venv/bin/mq9-mcp`` (``mcp_server.client_lines.inspector``); the Inspector's CLI mode (``--cli
... --method tools/list``, also in the docs) runs the same command without a browser. The server
is this interpreter's venv's ``mq9-mcp``, by its absolute path and on ``PATH``. Skipped when
``npx`` is missing or the npm registry does not answer in time; npx caches the package in
``~/.npm``, so only the first run downloads it. Every subprocess is bounded and its whole
process group killed afterwards (npx starts node, which starts mq9-mcp).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from devbroker_helpers import DevBroker

from langchain_mq9.broker.nats_process import free_port
from mcp_server import client_lines

INSPECTOR = "@modelcontextprotocol/inspector"
REGISTRY_TIMEOUT = 30  # npm view: is the registry there at all?
FIRST_RUN_TIMEOUT = 240  # the first npx run downloads the Inspector
BIN = Path(sys.executable).parent  # the venv's bin, where pip put mq9-mcp
MQ9_MCP = str(BIN / "mq9-mcp")
MCP_DOC = (Path(__file__).resolve().parents[2] / "docs" / "mcp.md").read_text()


def _run(command: list[str], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    """``command`` in a session of its own; on a timeout, or after it, its group is killed."""
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env.pop("MQ9_SERVER", None)
    env.pop("NATS_URL", None)
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        out, err = process.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in {timeout}s: {err[-2000:]}")
    finally:
        _kill_group(process)
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def _kill_group(process: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def inspector(tmp_path_factory) -> list[str]:
    """The Inspector's CLI mode, as a command prefix; skips when it cannot be had."""
    if shutil.which("npx") is None or shutil.which("npm") is None:
        pytest.skip("npx is not installed")
    if shutil.which("mq9-mcp", path=str(BIN)) is None:
        pytest.skip(f"mq9-mcp is not installed in {BIN}")
    cwd = tmp_path_factory.mktemp("inspector")
    try:
        view = subprocess.run(
            ["npm", "view", INSPECTOR, "version"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=REGISTRY_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"the npm registry did not answer in {REGISTRY_TIMEOUT}s")
    if view.returncode != 0 or not view.stdout.strip():
        pytest.skip(f"the npm registry is not reachable: {view.stderr.strip()[-300:]}")
    # the first run fetches the package into npx's cache; later runs start in seconds
    warm = _run(["npx", "-y", INSPECTOR, "--help"], cwd, FIRST_RUN_TIMEOUT)
    assert warm.returncode == 0, warm.stderr[-2000:]
    assert "--cli" in warm.stdout
    return ["npx", "-y", INSPECTOR, "--cli"]


def _call(inspector: list[str], cwd: Path, server: str, *method: str) -> dict:
    run = _run([*inspector, "-e", f"MQ9_SERVER={server}", MQ9_MCP, *method], cwd, 120)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


def test_the_readme_command_lists_our_tools(inspector, tmp_path):
    # the commands the docs give, with .venv/bin/mq9-mcp standing for this venv's
    assert f"{client_lines.inspector('.venv/bin/mq9-mcp')}\n" in MCP_DOC
    cli = client_lines.inspector(".venv/bin/mq9-mcp", cli=True)
    assert f"{cli} \\\n  --method tools/list\n" in MCP_DOC
    assert cli.split()[:4] == inspector  # the prefix this test runs
    listed = _call(inspector, tmp_path, "memory://", "--method", "tools/list")
    names = {tool["name"] for tool in listed["tools"]}
    assert {"send_message", "fetch_messages", "create_mailbox", "agent_discover"} <= names


def _tool(inspector: list[str], cwd: Path, server: str, tool: str, **args: str) -> dict:
    method = ["--method", "tools/call", "--tool-name", tool]
    for key, value in args.items():
        method += ["--tool-arg", f"{key}={value}"]
    return _call(inspector, cwd, server, *method)


def test_memory_is_fresh_per_call_and_the_dev_broker_keeps_state(inspector, tmp_path):
    # what docs/mcp.md says next to the quick start: each CLI call starts its own mq9-mcp, so
    # memory:// forgets the mailbox the call before created ...
    created = _tool(inspector, tmp_path, "memory://", "create_mailbox", name="demo.inbox")
    assert created["isError"] is False
    sent = _tool(
        inspector, tmp_path, "memory://", "send_message", mail_address="demo.inbox", payload="hi"
    )
    assert sent["isError"] is True and "does not exist" in sent["content"][0]["text"]

    # ... while on the dev broker, calls made one after another see each other's work
    with DevBroker("--port", str(free_port())) as broker:
        url = broker.url
        created = _tool(inspector, tmp_path, url, "create_mailbox", name="demo.inbox")
        assert created["isError"] is False
        sent = _tool(
            inspector, tmp_path, url, "send_message", mail_address="demo.inbox", payload="hi"
        )
        assert sent["isError"] is False, sent
        fetched = _tool(inspector, tmp_path, url, "fetch_messages", mail_address="demo.inbox")
        assert [m["payload"] for m in fetched["structuredContent"]["messages"]] == ["hi"]
        assert broker.stop(signal.SIGTERM) == 0, broker.output()
