"""mq9-mcp through the frameworks whose MCP clients need the MCP SDK 1.x:
smolagents (``ToolCollection.from_mcp``, on mcpadapt) and crewai-tools (``MCPServerAdapter``, on
mcpadapt too). They cannot share a virtualenv with mq9-mcp's ``mcp>=2.3``, so each runs from
one of its own, as a user runs them, and this script drives them there (it imports nothing of
this repository, only the framework):

    python3 -m venv /tmp/smol && /tmp/smol/bin/pip install "smolagents[mcp]" "mcp[ws]<2"
    /tmp/smol/bin/python testbed/neighbours_old_mcp.py smolagents .venv/bin/mq9-mcp
    python3 -m venv /tmp/crew && /tmp/crew/bin/pip install "crewai-tools[mcp]" "mcp[ws]<2"
    /tmp/crew/bin/python testbed/neighbours_old_mcp.py crewai .venv/bin/mq9-mcp

(``mcp[ws]<2`` because pip otherwise takes the MCP SDK 2.x, on which mcpadapt fails to import.)
Over stdio the framework starts ``MQ9_MCP --server memory://``; over HTTP this script starts it
with ``--transport http`` on a free port. Each tool is called as the framework's agent calls it
(smolagents: ``tool(**arguments)`` as a CodeAgent's code does, and after
``validate_tool_arguments`` as a ToolCallingAgent does; crewai: ``tool.run(**arguments)``), no
model and no network. One line per check; the exit status is 1 when one failed. docs/mcp.md
("From your framework") records what it found.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

Tools = dict[str, Callable[..., Any]]
TOOLS = {
    "ack_messages", "agent_discover", "agent_register", "agent_report", "agent_unregister",
    "create_mailbox", "delete_message", "fetch_messages", "query_messages", "send_message",
    "wake_rule",
}  # fmt: skip


def answer(result: Any) -> dict[str, Any]:
    """The server's JSON object from what a framework's tool returned (text or a dict)."""
    if isinstance(result, dict):
        return result
    try:
        data = json.loads(str(result))
    except json.JSONDecodeError:
        raise AssertionError(f"not the server's answer: {str(result)[:300]}") from None
    if not isinstance(data, dict):
        raise AssertionError(f"not the server's answer: {str(result)[:300]}")
    return data


def checks(tools: Tools, who: str) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(what, check) in order: each check raises AssertionError with what went wrong."""
    box = f"nb.{who}"

    def call(name: str, /, **arguments: Any) -> dict[str, Any]:
        return answer(tools[name](**arguments))

    state: dict[str, Any] = {}

    def fetched() -> None:
        got = call("fetch_messages", mail_address=box)
        state["ids"] = [m["msg_id"] for m in got["messages"]]
        assert [m["payload"] for m in got["messages"]] == [{"n": 1}, "two", "three"], got

    def acked() -> None:
        first, *rest = state["ids"]
        done = call("ack_messages", mail_address=box, msg_id=first)
        assert done["confirmed"] == [first] and done["still_unacked"] == rest, done

    def discovered() -> None:
        call("agent_register", name=f"agent.{who}", capabilities="translates sea shanties")
        found = call("agent_discover", query="sea shanties")
        assert found["agents"][0]["mailbox"] == f"agent.{who}", found

    def long_wait() -> None:
        call("create_mailbox", name=f"{box}.empty")
        got = call("fetch_messages", mail_address=f"{box}.empty", max_wait_ms=30_000)
        assert got["count"] == 0 and "call again" in got["next_step"], got

    yield "lists the 11 tools", lambda: _same(set(tools), TOOLS)
    yield "create_mailbox", lambda: call("create_mailbox", name=box)
    yield (
        "send_message, priority given",
        lambda: call("send_message", mail_address=box, payload='{"n": 1}', priority="urgent"),
    )
    yield (
        "send_message, optional arguments left out",
        lambda: call("send_message", mail_address=box, payload="two"),
    )
    nulls = {"priority": None, "key": None, "tags": None, "delay": None, "ttl": None}
    yield (
        "send_message, optional arguments as null",
        lambda: call("send_message", mail_address=box, payload="three", **nulls),
    )
    yield "fetch_messages", fetched
    yield "ack_messages lists what stays unacked", acked
    yield "query_messages", lambda: call("query_messages", mail_address=box)
    yield "agent_register and agent_discover", discovered
    yield "fetch_messages asked to wait 30 s answers", long_wait


def _same(got: set[str], want: set[str]) -> None:
    assert got == want, f"missing {sorted(want - got)}, more {sorted(got - want)}"


def run(tools: Tools, who: str) -> int:
    failed = 0
    for what, check in checks(tools, who):
        began = time.monotonic()
        try:
            check()
        except Exception as error:  # a framework's own exception types too: each is a finding
            failed += 1
            print(f"FAILED {who}: {what}: {type(error).__name__}: {str(error)[:400]}")
        else:
            print(f"ok     {who}: {what} ({time.monotonic() - began:.1f} s)")
    return failed


@contextlib.contextmanager
def http_mq9_mcp(mq9_mcp: str) -> Iterator[str]:
    """``mq9-mcp --transport http`` on memory://, on a free loopback port; yields its URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [mq9_mcp, "--transport", "http", "--port", str(port), "--server", "memory://"]
    server = subprocess.Popen(argv, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port)):
                break
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.terminate()
        server.wait(timeout=15)


def smolagents_tools(target: Any) -> contextlib.AbstractContextManager[Any]:
    from smolagents import ToolCollection

    return ToolCollection.from_mcp(target, trust_remote_code=True, structured_output=True)


def smolagents_call(tool: Any) -> Callable[..., Any]:
    """A smolagents tool as its agent calls it: the arguments checked against the tool's
    inputs first (``validate_tool_arguments``, where mcpadapt's every-input-required shows)."""
    from smolagents.tools import validate_tool_arguments

    def call(**arguments: Any) -> Any:
        validate_tool_arguments(tool, arguments)
        return tool(**arguments)

    return call


def crewai_tools(target: Any) -> contextlib.AbstractContextManager[Any]:
    from crewai_tools import MCPServerAdapter

    return MCPServerAdapter(target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("framework", choices=["smolagents", "crewai"])
    parser.add_argument("mq9_mcp", help="the mq9-mcp command, e.g. .venv/bin/mq9-mcp")
    arguments = parser.parse_args()
    from mcp import StdioServerParameters

    failed = 0
    for transport in ("stdio", "http"):
        with contextlib.ExitStack() as stack:
            if transport == "stdio":
                target: Any = StdioServerParameters(
                    command=arguments.mq9_mcp, args=["--server", "memory://"]
                )
            else:
                url = stack.enter_context(http_mq9_mcp(arguments.mq9_mcp))
                target = {"url": url, "transport": "streamable-http"}
            if arguments.framework == "smolagents":
                collection = stack.enter_context(smolagents_tools(target))
                # a CodeAgent's code calls the tool; a ToolCallingAgent checks the arguments first
                tools: Tools = {tool.name: tool for tool in collection.tools}
                failed += run(tools, f"smolagents.code.{transport}")
                tools = {tool.name: smolagents_call(tool) for tool in collection.tools}
                failed += run(tools, f"smolagents.toolcalling.{transport}")
            else:
                adapted = stack.enter_context(crewai_tools(target))
                tools = {tool.name: tool.run for tool in adapted}
                failed += run(tools, f"crewai.{transport}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
