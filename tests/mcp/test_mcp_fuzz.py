"""A fuzz of mq9-mcp over stdio (issue #22): malformed JSON-RPC, huge and deep arguments,
unknown tools and methods, batches and floods, from a seeded generator. Every request that
carries an id gets an answer with that id, and the server keeps serving an honest call.

Bounded: ``MQ9_MCP_FUZZ_COUNT`` messages (default 300), each answered within 20 s or failed.
"""

from __future__ import annotations

import json
import os
import random

import pytest

from testbed.support.mcp_support import RawStdio

pytestmark = pytest.mark.slow

COUNT = int(os.environ.get("MQ9_MCP_FUZZ_COUNT", "300"))
SEED = int(os.environ.get("MQ9_MCP_FUZZ_SEED", "20261123"))
TOOLS = ["create_mailbox", "send_message", "fetch_messages", "ack_messages", "query_messages",
         "delete_message", "agent_register", "agent_discover", "no_such_tool"]  # fmt: skip
ODD_VALUES = [None, True, -1, 2**64, 1.5, "", "x" * 5000, "half \ud83d", "A.B", "a..b",
              [], {}, ["x"], {"y": 1}, "\x00", "é" * 100]  # fmt: skip


def message(rng: random.Random, request_id: int) -> tuple[str, bool]:
    """One line to send, and whether it carries ``request_id`` (so must be answered)."""
    kind = rng.randrange(10)
    arguments = {rng.choice(["mail_address", "name", "payload", "msg_id", "query", "tags",
                             "max_wait_ms", "priority", "extra"]): rng.choice(ODD_VALUES)
                 for _ in range(rng.randrange(4))}  # fmt: skip
    request = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
               "params": {"name": rng.choice(TOOLS), "arguments": arguments}}  # fmt: skip
    if kind == 0:  # nested arguments, written out (json.dumps itself stops near 1,000)
        levels = rng.choice([50, 300, 3000])
        request["params"]["arguments"] = {"payload": "NESTED"}
        return json.dumps(request).replace('"NESTED"', "[" * levels + "]" * levels), True
    if kind == 1:
        request["method"] = rng.choice(["tools/list", "nothing/here", "", "initialize"])
    elif kind == 2:
        request["params"] = rng.choice(["x", 5, [], None])
    elif kind == 3:
        del request[rng.choice(["jsonrpc", "method"])]
    elif kind == 4:
        return json.dumps([request, {"jsonrpc": "2.0", "method": "notifications/x"}]), True
    elif kind == 5:  # no id: a notification, never answered
        del request["id"]
        return json.dumps(request), False
    elif kind == 6:  # bytes cut short: no JSON, nothing to answer
        text = json.dumps(request)
        return text[: rng.randrange(1, len(text))], False
    text = json.dumps(request)
    if kind == 7 and len(text) > 30:  # one byte changed: answered only if still a request
        at = rng.randrange(len(text))
        text = text[:at] + rng.choice('{}[]":,x0\\') + text[at + 1 :]
        try:
            value = json.loads(text)
        except ValueError:
            return text, False
        carries = isinstance(value, dict) and value.get("id") == request_id
        return text, carries and "result" not in value and "error" not in value
    return text, True


@pytest.fixture
def stdio():
    raw = RawStdio.initialized()
    yield raw
    raw.close()


def test_every_request_with_an_id_is_answered_and_the_server_keeps_serving(stdio):
    rng = random.Random(SEED)
    answered = 0
    for n in range(COUNT):
        request_id = 1000 + n
        line, expects = message(rng, request_id)
        stdio.send(line)
        if not expects:
            continue
        answer = stdio.answer()
        assert answer.get("id") == request_id, (SEED, n, line[:200], answer)
        answered += 1
        if n % 25 == 0:  # an honest client in between
            stdio.send(json.dumps({"jsonrpc": "2.0", "id": -n - 1, "method": "tools/call",
                                   "params": {"name": "agent_discover",
                                              "arguments": {"query": ""}}}))  # fmt: skip
            honest = stdio.answer()
            assert honest["id"] == -n - 1 and not honest["result"].get("isError"), honest
    assert answered > COUNT // 2


def test_a_ten_megabyte_argument_and_a_flood_are_answered(stdio):
    arguments = {"mail_address": "fuzz.box", "payload": "x" * 10_000_000}
    big = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
           "params": {"name": "send_message", "arguments": arguments}}  # fmt: skip
    stdio.send(json.dumps(big))
    answer = stdio.answer(timeout=60)
    assert answer["id"] == 1 and answer["result"]["isError"]  # no such mailbox: a tool error
    assert len(json.dumps(answer)) < 5_000  # the payload is not echoed back
    for n in range(200):  # a flood, written without waiting
        stdio.send(json.dumps({"jsonrpc": "2.0", "id": 10 + n, "method": "tools/list"}))
    assert sorted(stdio.answer()["id"] for _ in range(200)) == list(range(10, 210))
