"""MCP Tasks (#37, item 3): at 2025-11-25 a client that asks for a task gets it at once while a
waiting call runs on (a long ``fetch_messages`` no longer holds its tool call), reads its state
and its result (``tasks/get``, ``tasks/result``), lists and cancels tasks; a client that does
not ask gets today's answer, and tools that do not wait are not offered as tasks. The server
runs as a real process; the JSON-RPC lines are written raw (the SDK's client has no Tasks)."""

from __future__ import annotations

import json

import pytest
from mcp_support import RawStdio

TASKS = "2025-11-25"


@pytest.fixture
def stdio():
    raw = RawStdio()
    raw.send(json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": TASKS, "capabilities": {},
                   "clientInfo": {"name": "raw", "version": "1"}},
    }))  # fmt: skip
    opened = raw.answer()
    assert opened["result"]["protocolVersion"] == TASKS
    assert opened["result"]["capabilities"]["tasks"]["requests"] == {"tools": {"call": {}}}
    raw.send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
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
