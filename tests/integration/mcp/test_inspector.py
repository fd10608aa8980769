"""The MCP Inspector 2.12, run as docs/mcp.md says, against our ``mq9-mcp`` (issues #15, #26,
#37): in both protocol eras (``--protocol-era legacy``, which initializes at 2025-11-25, and
``modern``, the stateless 2026-07-28, which fails unless the server offers it) it lists and
calls every tool.

The docs' line is ``npx -y @modelcontextprotocol/inspector -e MQ9_SERVER=memory://
.venv/bin/mq9-mcp`` (``mq9_mcp.client_lines.inspector``); the Inspector's CLI mode (``--cli
... --method tools/list``, also in the docs) runs the same command without a browser. The
Inspector 2.x needs Node 22.19 or later: npx installs the ``node`` package at 22 (a real Node
22 binary, from the npm registry) beside it, and the Inspector runs under that Node whatever
the machine's own. Skipped, with the reason, when npx is missing, the npm registry does not
answer in time or that Node cannot be had. npx caches both in ``~/.npm``, so only the first run
downloads them. Every subprocess is bounded and its whole process group killed afterwards (the
Inspector starts mq9-mcp over stdio).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from langchain_mq9.serving import AgentServer
from mq9_mcp import client_lines
from mq9_platform import Mq9Client
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from testbed.support.a2a_support import asking, text_graph, text_io
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.mcp_support import http_server, served_engine

pytestmark = pytest.mark.slow

INSPECTOR = "@modelcontextprotocol/inspector"
INSPECTOR_VERSION = "2.12"  # the newest 2.12.x: the first release with --protocol-era modern
NODE = "node@22"  # the npm package whose bin is a Node 22 binary
NODE_NEEDED = (22, 19)  # the Inspector 2.12's engines.node
ERAS = ("legacy", "modern")
REGISTRY_TIMEOUT = 30  # npm view: is the registry there at all?
FIRST_RUN_TIMEOUT = 240  # the first npx run downloads the Inspector and Node 22
CALL_TIMEOUT = 60
TOOL_ERROR = 5  # the CLI's exit status for a tool result with isError (it prints the result)
BIN = Path(sys.executable).parent  # the venv's bin, where pip put mq9-mcp
MQ9_MCP = str(BIN / "mq9-mcp")
MCP_DOC = (Path(__file__).resolve().parents[3] / "docs" / "mcp.md").read_text()


def _run(
    command: list[str], cwd: Path, timeout: float, path: str = ""
) -> subprocess.CompletedProcess[str]:
    """``command`` in a session of its own, with ``path`` and the venv's bin first on PATH; on
    a timeout, or after it, its group is killed."""
    search = [path, str(BIN), os.environ.get("PATH", "")]
    env = dict(os.environ, PATH=os.pathsep.join(filter(None, search)))
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


class Inspector:
    """The Inspector's CLI (``mcp-inspector --cli``) under Node 22, both installed by npx."""

    def __init__(self, executable: str, cwd: Path) -> None:
        self.executable = executable
        self.node_bin = str(Path(executable).parent)  # its node: the Node 22 npx installed
        self.cwd = cwd

    def run(self, *words: str) -> dict[str, Any]:
        """One CLI run (one request, and the connection it needs); its printed answer."""
        command = [self.executable, "--cli", *words]
        run = _run(command, self.cwd, CALL_TIMEOUT, path=self.node_bin)
        assert run.returncode in (0, TOOL_ERROR), f"{' '.join(command)}: {run.stderr[-2000:]}"
        answer = json.loads(run.stdout)
        assert (run.returncode == TOOL_ERROR) is (answer.get("isError") is True), answer
        return answer

    def stdio(self, server: str, *method: str) -> dict[str, Any]:
        """A run on this venv's ``mq9-mcp`` over stdio, on the broker at ``server``."""
        return self.run("-e", f"MQ9_SERVER={server}", MQ9_MCP, *method)


@pytest.fixture(scope="module")
def inspector(tmp_path_factory) -> Inspector:
    """The Inspector 2.12 under Node 22; skips, saying why, when it cannot be had."""
    if shutil.which("npx") is None or shutil.which("npm") is None:
        pytest.skip("npx is not installed")
    if shutil.which("mq9-mcp", path=str(BIN)) is None:
        pytest.skip(f"mq9-mcp is not installed in {BIN}")
    cwd = tmp_path_factory.mktemp("inspector")
    try:
        view = subprocess.run(
            ["npm", "view", f"{INSPECTOR}@{INSPECTOR_VERSION}", "version"],
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
    # the first run fetches both packages into npx's cache; later runs find them there
    packages = ["-p", NODE, "-p", f"{INSPECTOR}@{INSPECTOR_VERSION}"]
    found = _run(["npx", "-y", *packages, "-c", "command -v mcp-inspector"], cwd, FIRST_RUN_TIMEOUT)
    if found.returncode != 0 or not found.stdout.strip():
        pytest.skip(f"npx could not install {NODE} and the Inspector: {found.stderr[-300:]}")
    executable = found.stdout.strip().splitlines()[-1]
    node = Path(executable).parent / "node"
    version = _run([str(node), "--version"], cwd, 30) if node.exists() else None
    numbers = re.match(r"v(\d+)\.(\d+)", version.stdout) if version else None
    if numbers is None or (int(numbers[1]), int(numbers[2])) < NODE_NEEDED:
        pytest.skip(f"no Node {'.'.join(map(str, NODE_NEEDED))} from npm (the Inspector's need)")
    return Inspector(executable, cwd)


def _names(listed: dict[str, Any]) -> list[str]:
    return [tool["name"] for tool in listed["tools"]]


def _catalog(**settings: Any) -> list[str]:
    """The tools mq9-mcp lists with these settings, in its order."""
    return [name for name, op in OPERATIONS.items() if op.allowed(ToolPolicy(**settings))]


def test_the_readme_command_lists_our_tools(inspector):
    # the commands the docs give, with .venv/bin/mq9-mcp standing for this venv's
    assert f"{client_lines.inspector('.venv/bin/mq9-mcp')}\n" in MCP_DOC
    cli = client_lines.inspector(".venv/bin/mq9-mcp", cli=True)
    assert f"{cli} \\\n  --method tools/list\n" in MCP_DOC
    assert cli.split()[:4] == ["npx", "-y", INSPECTOR, "--cli"]  # the Inspector this test runs
    listed = inspector.stdio("memory://", "--method", "tools/list")
    assert _names(listed) == _catalog()


@pytest.mark.parametrize("era", ERAS)
def test_both_eras_list_the_tools_over_stdio(inspector, era):
    # modern pins 2026-07-28: the Inspector fails unless server/discover offers it
    method = ["--protocol-era", era, "--method", "tools/list"]
    assert _names(inspector.stdio("memory://", *method)) == _catalog()
    created = inspector.stdio(
        "memory://", "--protocol-era", era, *_tool("create_mailbox", name="demo.inbox")
    )
    assert created["isError"] is False
    assert created["structuredContent"]["mail_address"] == "demo.inbox"


def test_the_docs_name_the_modern_era():
    cli = client_lines.inspector(".venv/bin/mq9-mcp", cli=True)
    assert f"{cli} \\\n  --protocol-era modern --method tools/list\n" in MCP_DOC


def _tool(tool: str, **args: Any) -> list[str]:
    method = ["--method", "tools/call", "--tool-name", tool]
    for key, value in args.items():
        method += ["--tool-arg", f"{key}={value}"]
    return method


def test_memory_is_fresh_per_call_and_the_dev_broker_keeps_state(inspector):
    # what docs/mcp.md says next to the quick start: each CLI call starts its own mq9-mcp, so
    # memory:// forgets the mailbox the call before created ...
    created = inspector.stdio("memory://", *_tool("create_mailbox", name="demo.inbox"))
    assert created["isError"] is False
    sent = inspector.stdio(
        "memory://", *_tool("send_message", mail_address="demo.inbox", payload="hi")
    )
    assert sent["isError"] is True and "does not exist" in sent["content"][0]["text"]

    # ... while on the dev broker, calls made one after another see each other's work
    with DevBroker("--port", "0") as broker:
        url = broker.url
        created = inspector.stdio(url, *_tool("create_mailbox", name="demo.inbox"))
        assert created["isError"] is False
        sent = inspector.stdio(url, *_tool("send_message", mail_address="demo.inbox", payload="hi"))
        assert sent["isError"] is False, sent
        fetched = inspector.stdio(url, *_tool("fetch_messages", mail_address="demo.inbox"))
        assert [m["payload"] for m in fetched["structuredContent"]["messages"]] == ["hi"]
        assert broker.stop(signal.SIGTERM) == 0, broker.output()


class Session:
    """One era's Inspector runs on one mq9-mcp over HTTP: each run a connection of its own
    (at ``modern`` no session at all), so what one call leaves the next must find."""

    def __init__(self, inspector: Inspector, url: str, era: str) -> None:
        self.inspector, self.url, self.era = inspector, url, era
        self.called: list[str] = []

    async def list_tools(self) -> list[str]:
        return _names(await self._run("--method", "tools/list"))

    async def ok(self, tool: str, **args: Any) -> dict[str, Any]:
        """Call a tool that must succeed; its structured content (the text says the same)."""
        self.called.append(tool)
        result = await self._run(*_tool(tool, **args))
        assert result["isError"] is False, result
        assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
        return result["structuredContent"]

    async def _run(self, *method: str) -> dict[str, Any]:
        words = [self.url, "--protocol-era", self.era, *method]
        return await asyncio.to_thread(self.inspector.run, *words)


@pytest.mark.parametrize("era", ERAS)
async def test_both_eras_call_every_tool(inspector, nats_server, era):
    """Every tool mq9-mcp --calls lists, called by the Inspector in ``era``: the mailbox tools
    on a message's whole way, the registry tools on an agent, and the call tools on a served
    agent that asks a question before it answers."""
    agent = f"inspector.{era}"
    inbox = f"{agent}.inbox"
    async with (
        served_engine(nats_server.url),
        Mq9Client(nats_server.url) as client,
        AgentServer(text_graph(asking), name="agent.asking", client=client, **text_io()),
    ):
        server = ("--server", nats_server.url, "--calls", "--agent-mailbox", agent)
        with http_server(*server) as url:
            mcp = Session(inspector, url, era)
            listed = await mcp.list_tools()
            assert listed == _catalog(calls=True)

            await _registry_tools(mcp, agent)
            await _mailbox_tools(mcp, inbox)
            await _call_tools(mcp)
            assert (await mcp.ok("agent_unregister", name=agent))["unregistered"] == agent
        assert sorted(set(mcp.called)) == sorted(listed)


async def _registry_tools(mcp: Session, agent: str) -> None:
    registered = await mcp.ok("agent_register", name=agent, capabilities="inspects mq9 tools")
    assert registered["registered"] is True and registered["mail_address"] == agent
    found = await mcp.ok("agent_discover", query="inspects mq9 tools")
    assert agent in [a["name"] for a in found["agents"]]
    assert (await mcp.ok("agent_report", name=agent, status="idle"))["reported"] is True


async def _mailbox_tools(mcp: Session, inbox: str) -> None:
    assert (await mcp.ok("create_mailbox", name=inbox))["mail_address"] == inbox
    first = (await mcp.ok("send_message", mail_address=inbox, payload="hello"))["msg_id"]
    second = (await mcp.ok("send_message", mail_address=inbox, payload="later"))["msg_id"]
    looked = await mcp.ok("query_messages", mail_address=inbox)
    assert [m["payload"] for m in looked["messages"]] == ["hello", "later"]
    deleted = await mcp.ok("delete_message", mail_address=inbox, msg_id=second)
    assert deleted["deleted"] is True
    fetched = await mcp.ok("fetch_messages", mail_address=inbox)
    assert [m["msg_id"] for m in fetched["messages"]] == [first]
    # fetched in one run, acked in the next: nothing depends on a session
    acked = await mcp.ok("ack_messages", mail_address=inbox, msg_id=first)
    assert acked["confirmed"] == [first]
    rules = await mcp.ok("wake_rule", mail_address=inbox)  # list: none kept yet
    assert (rules["action"], rules["rules"]) == ("list", [])


async def _call_tools(mcp: Session) -> None:
    asked = await mcp.ok("call_agent", agent="agent.asking", task="hello", wait_seconds=20)
    assert asked["state"] == "input-required" and asked["question"] == "Which language?"
    task_id = asked["task_id"]
    assert (await mcp.ok("check_call", task_id=task_id))["state"] == "input-required"
    done = await mcp.ok("answer_call", task_id=task_id, answer="French", wait_seconds=20)
    assert (done["state"], done["result"]) == ("completed", "hello in French")

    other = await mcp.ok("call_agent", agent="agent.asking", task="bye", wait_seconds=20)
    assert other["state"] == "input-required"
    canceled = await mcp.ok("cancel_call", task_id=other["task_id"])
    assert canceled["state"] == "canceled"
    calls = (await mcp.ok("list_calls"))["calls"]
    assert sorted((c["task_id"], c["state"]) for c in calls) == sorted(
        [(task_id, "completed"), (other["task_id"], "canceled")]
    )


def test_the_readmes_line_for_node_20_runs_the_inspector_2(inspector):
    """The README's workaround where the machine's Node is older than the Inspector 2.x needs
    (npm on Node 20 picks the Inspector 0.15 unless the version is named), run as written under
    the machine's own npx (Node 20 here), in the CLI mode the same Inspector has."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    found = re.search(r"`(npx -y -p node@22 -p [^`]+)`", readme.replace("\n", " "))
    assert found, "the README gives no Node 20 line"
    words = found[1].split()
    assert f"{INSPECTOR}@{INSPECTOR_VERSION}" in words  # named: else npm on Node 20 picks 0.15
    at = words.index("mcp-inspector") + 1
    words[at:at] = ["--cli"]
    words = [MQ9_MCP if word == ".venv/bin/mq9-mcp" else word for word in words]
    run = _run([*words, "--protocol-era", "modern", "--method", "tools/list"], inspector.cwd,
               FIRST_RUN_TIMEOUT)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert _names(json.loads(run.stdout)) == _catalog()
