"""MCP Tasks (#37, item 3): at 2025-11-25 a client that asks for a task gets it at once while a
waiting call runs on (a long ``fetch_messages`` no longer holds its tool call), reads its state
and its result (``tasks/get``, ``tasks/result``), lists and cancels tasks; a client that does
not ask gets today's answer, and tools that do not wait are not offered as tasks. The server
runs as a real process; the JSON-RPC lines are written raw (the SDK's client has no Tasks)."""

from __future__ import annotations

import asyncio
import json

import pytest
from mcp import types

from langchain_mq9.serving import AgentServer
from mq9_mcp import tasks
from mq9_platform import Mq9Client
from testbed.support.a2a_support import text_graph, text_io
from testbed.support.mcp_support import RawStdio, served_engine

pytestmark = pytest.mark.slow

TASKS = "2025-11-25"


def opened(*args: str) -> RawStdio:
    """mq9-mcp with ARGS, initialized at the Tasks revision."""
    raw = RawStdio(*args)
    raw.send(json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": TASKS, "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}},
    }))  # fmt: skip
    opened = raw.answer()
    assert opened["result"]["protocolVersion"] == TASKS
    assert opened["result"]["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
    raw.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
    return raw


@pytest.fixture
def stdio():
    raw = opened()
    yield raw
    raw.close()


def request(raw: RawStdio, request_id: int, method: str, **params: object) -> dict:
    raw.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}))
    answer = raw.answer()
    assert answer["id"] == request_id, answer
    return answer


def tool(tool_name: str, task: bool = False, /, **arguments: object) -> dict:
    """tools/call params; with ``task`` asking for a task."""
    asked = {"task": {"ttl": 60000}} if task else {}
    return {"name": tool_name, "arguments": arguments, **asked}


def test_a_waiting_fetch_runs_as_a_task_and_other_calls_go_on_meanwhile(stdio):
    listed = request(stdio, 2, "tools/list")["result"]["tools"]
    offered = {t["name"] for t in listed if t.get("execution", {}).get("taskSupport")}
    assert offered == {"fetch_messages"}  # call_agent and check_call need mq9-mcp --calls
    request(stdio, 3, "tools/call", **tool("create_mailbox", name="inbox"))

    waiting = tool("fetch_messages", True, mail_address="inbox", max_wait_ms=20000)
    started = request(stdio, 4, "tools/call", **waiting)
    task = started["result"]["task"]
    assert task["status"] == "working" and task["ttl"] == 60000
    # the fetch waits for mail; the client is not held meanwhile
    sent = request(
        stdio, 5, "tools/call", **tool("send_message", mail_address="inbox", payload="hi")
    )
    assert not sent["result"]["isError"]

    result = request(stdio, 6, "tasks/result", taskId=task["taskId"])["result"]
    assert [m["payload"] for m in result["structuredContent"]["messages"]] == ["hi"]
    state = request(stdio, 7, "tasks/get", taskId=task["taskId"])["result"]
    assert state["status"] == "completed"
    listed_tasks = request(stdio, 8, "tasks/list")["result"]["tasks"]
    assert [t["taskId"] for t in listed_tasks] == [task["taskId"]]


def test_a_task_is_cancelled_and_a_call_without_one_answers_as_before(stdio):
    request(stdio, 2, "tools/call", **tool("create_mailbox", name="quiet"))
    waiting = tool("fetch_messages", True, mail_address="quiet", max_wait_ms=60000)
    started = request(stdio, 3, "tools/call", **waiting)
    task_id = started["result"]["task"]["taskId"]
    cancelled = request(stdio, 4, "tasks/cancel", taskId=task_id)["result"]
    assert cancelled["status"] == "cancelled"
    again = request(stdio, 5, "tasks/cancel", taskId=task_id)
    assert "already cancelled" in again["error"]["message"]
    assert "no task" in request(stdio, 6, "tasks/get", taskId="nope")["error"]["message"]
    # no task asked: the call's own answer
    plain = request(stdio, 7, "tools/call", **tool("fetch_messages", mail_address="quiet"))
    assert plain["result"]["structuredContent"]["messages"] == []
    # a tool that does not wait: answered at once even when a task is asked for
    created = request(stdio, 8, "tools/call", **tool("create_mailbox", True, name="more"))
    assert created["result"]["structuredContent"]["mail_address"] == "more"


async def test_an_agent_call_with_a_wait_gives_its_result_through_the_task(nats_server):
    """The call answers once the agent has: a client reads it from the task, not from a tool
    call held open for the whole wait."""
    release = asyncio.Event()

    async def slow(text: str) -> str:
        await asyncio.wait_for(release.wait(), 20)
        return text.upper()

    async with (
        served_engine(nats_server.url),
        Mq9Client(nats_server.url) as client,
        AgentServer(text_graph(slow), name="agent.upper", client=client, **text_io()),
    ):
        raw = opened("--server", nats_server.url, "--calls", "--agent-mailbox", "agent.me")
        try:
            ask = tool("call_agent", True, agent="agent.upper", task="hello", wait_seconds=30)
            started = await asyncio.to_thread(request, raw, 2, "tools/call", **ask)
            task_id = started["result"]["task"]["taskId"]
            state = await asyncio.to_thread(request, raw, 3, "tasks/get", taskId=task_id)
            assert state["result"]["status"] == "working"  # the agent has not answered yet
            release.set()
            done = await asyncio.to_thread(request, raw, 4, "tasks/result", taskId=task_id)
            result = done["result"]["structuredContent"]
            assert (result["state"], result["result"]) == ("completed", "HELLO")
        finally:
            await asyncio.to_thread(raw.close)


def test_a_malformed_call_asking_for_a_task_gets_the_sdks_invalid_params(stdio):
    for params in ({"arguments": {}, "task": {"ttl": 1000}}, {"name": 7, "task": {"ttl": 1000}}):
        answer = request(stdio, 2, "tools/call", **params)
        assert answer["error"]["code"] == -32602, answer


class Ctx:
    protocol_version, method = TASKS, "tasks/result"


async def test_past_the_limit_of_running_tasks_a_call_answers_without_one(monkeypatch):
    monkeypatch.setattr(tasks, "MAX_TASKS", 2)
    store, release = tasks.TaskStore(), asyncio.Event()

    async def blocked(_ask: object) -> types.CallToolResult:
        await release.wait()
        return types.CallToolResult(content=[])

    first = await store.start("", blocked, None)
    assert first is not None and await store.start("", blocked, None) is not None
    assert await store.start("", blocked, None) is None  # two running: no third
    release.set()
    await asyncio.wait({first.runner})
    assert await store.start("", blocked, None) is None  # finished, but its result is unread
    await store.result(Ctx(), types.GetTaskPayloadRequestParams(task_id=first.task_id))
    assert await store.start("", blocked, None) is not None  # a read one makes room (forgotten)
    assert first.task_id not in store.tasks
