"""The neighbours lane's common part (issue #107): mq9-mcp as another framework's own MCP client
meets it, and the calls each framework makes through its own tool path.

A framework's test lists the tools through that framework, converts them as it does for a model
(OpenAI strict mode, Gemini declarations where it builds them) and hands ``make_the_calls`` a
``call(tool, arguments)`` that goes the way a model's pick goes in that framework; no model and
no network. The server is started as tests/mcp starts it: a subprocess on the test's nats-server,
over stdio (the framework starts it) or streamable HTTP (one per module: each framework's module
has one HTTP test).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from testbed.support.mcp_support import ROOT, http_server, served_engine, server_env

# What a framework's call answers, as the server's structured content
Call = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]

# The tools mq9-mcp lists by default (the agent-call tools need --calls)
TOOLS = sorted(name for name, op in OPERATIONS.items() if op.allowed(ToolPolicy()))
TRANSPORTS = ["stdio", "http"]
# Past the 5 s a client of openai-agents or google-adk waits by default (issue #107)
LONG_WAIT_MS = 30_000


def stdio_command(nats_url: str) -> tuple[str, list[str]]:
    """The command and arguments a framework starts mq9-mcp with, over stdio."""
    return sys.executable, ["-m", "mq9_mcp", "--server", nats_url]


def stdio_env() -> dict[str, str]:
    return server_env()


STDIO_CWD = str(ROOT)


@asynccontextmanager
async def mq9_mcp(transport: str, nats_url: str) -> AsyncIterator[str | None]:
    """A broker engine on ``nats_url`` and, for ``http``, the URL of mq9-mcp serving it (for
    stdio, None: the framework starts the server itself, with ``stdio_command``)."""
    async with served_engine(nats_url):
        if transport == "http":
            with http_server("--server", nats_url) as url:
                yield url
        else:
            yield None


def optional(tool: str) -> list[str]:
    """The arguments ``tool`` takes that a call may leave out."""
    schema = OPERATIONS[tool].input_schema()
    return sorted(set(schema["properties"]) - set(schema.get("required", [])))


def answer_of(text: str) -> dict[str, Any]:
    """A tool's answer from the text a framework hands the model: the server's JSON object (a
    tool error, or the framework's own error line, fails here with its words)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        raise AssertionError(f"not the server's answer: {text[:500]}") from None
    assert isinstance(data, dict), text[:500]
    return data


async def make_the_calls(call: Call, who: str) -> None:
    """create / send / fetch / ack / query / register / discover through ``call``, with every
    optional argument of a send and a fetch given as null (crewai and llama-index send that)."""
    box = f"nb.{who}"
    assert (await call("create_mailbox", {"name": box}))["mail_address"] == box
    await call("send_message", {"mail_address": box, "payload": '{"n": 1}', "priority": "urgent"})
    nulls = dict.fromkeys(optional("send_message"))
    assert (await call("send_message", {**nulls, "mail_address": box, "payload": "two"}))["sent"]
    nulls = dict.fromkeys(optional("fetch_messages"))
    got = await call("fetch_messages", {**nulls, "mail_address": box})
    assert [m["payload"] for m in got["messages"]] == [{"n": 1}, "two"], got
    first, second = (m["msg_id"] for m in got["messages"])
    acked = await call("ack_messages", {"mail_address": box, "msg_id": first})
    assert acked["confirmed"] == [first] and acked["still_unacked"] == [second], acked
    stored = await call("query_messages", {"mail_address": box})
    assert [m["msg_id"] for m in stored["messages"]] == [first, second], stored
    agent = f"agent.{who}"
    registered = {"name": agent, "capabilities": "translates sea shanties into haiku"}
    assert (await call("agent_register", registered))["registered"]
    found = await call("agent_discover", {"query": "sea shanties"})
    assert found["agents"][0]["mailbox"] == agent, found


async def a_long_wait_answers(call: Call, who: str) -> None:
    """A fetch asked to wait 30 s on an empty mailbox answers before a 5 s client gives up, and
    says to call again."""
    box = f"nb.{who}.empty"
    await call("create_mailbox", {"name": box})
    got = await call("fetch_messages", {"mail_address": box, "max_wait_ms": LONG_WAIT_MS})
    assert got["count"] == 0 and "call again" in got["next_step"], got


def refused_enums(schema: Any, where: str = "") -> list[str]:
    """Where a schema (JSON, or a converter's declaration dumped) holds an enum value Gemini's
    function declarations refuse: empty, or not a string."""
    found = []
    if isinstance(schema, dict):
        for key, value in schema.items():
            if key == "enum" and isinstance(value, list):
                found += [f"{where}.enum: {v!r}" for v in value if not isinstance(v, str) or not v]
            else:
                found += refused_enums(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            found += refused_enums(value, f"{where}[{index}]")
    return found
