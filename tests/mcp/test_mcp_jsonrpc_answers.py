"""mq9-mcp answers every JSON-RPC request that carries an id, even one the MCP SDK cannot read
(issue #22, item 1): over stdio a client waited for ever for an answer that never came; over
HTTP a body that is not UTF-8 or nested too deeply was a server error (500).

The server runs as a real subprocess; the lines are written raw, as a client's bugs (or a
Python client's ``json.dumps`` of half an emoji) write them.
"""

from __future__ import annotations

import http.client as http_client
import json
import urllib.error
import urllib.parse
import urllib.request

import pytest

from mq9_mcp.http.limits import MAX_BODY_BYTES
from testbed.support.mcp_support import ACCEPT, INITIALIZE, RawStdio, http_server

pytestmark = pytest.mark.slow

DEEP = 400  # past the MCP SDK's own nesting limit, within Python's json


@pytest.fixture
def stdio():
    raw = RawStdio.initialized()
    yield raw
    raw.close()


def call(request_id: int, arguments: object) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "create_mailbox", "arguments": arguments},
    }


def deep(levels: int) -> object:
    value: object = "leaf"
    for _ in range(levels):
        value = {"x": value}
    return value


CASES = [
    ("a lone surrogate", json.dumps(call(7, {"name": "half \ud83d"})), -32602, "surrogate"),
    ("deep arguments", json.dumps(call(7, deep(DEEP))), -32602, "invalid params"),
    ("params not an object", '{"jsonrpc":"2.0","id":7,"method":"tools/list","params":"x"}',
     -32602, "params must be an object"),
    ("no method", '{"jsonrpc":"2.0","id":7}', -32600, "no method"),
    ("another version", '{"jsonrpc":"1.0","id":7,"method":"tools/list"}', -32600, '"2.0"'),
    ("nested past Python's limit", '{"jsonrpc":"2.0","id":7,"method":"x","params":'
     + "[" * 5000 + "]" * 5000 + "}", -32600, "nested too deeply"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("line", "code", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_a_request_the_sdk_cannot_read_is_answered_with_its_id(stdio, line, code, words):
    stdio.send(line)
    answer = stdio.answer()
    assert answer["id"] == 7 and answer["error"]["code"] == code, answer
    assert words in answer["error"]["message"]
    # and the session goes on
    stdio.send(json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}))
    assert {t["name"] for t in stdio.answer()["result"]["tools"]} >= {"create_mailbox"}


@pytest.mark.parametrize("request_id", [12.5, None, {"a": 1}, [1]], ids=repr)
def test_a_request_whose_id_is_no_string_or_integer_is_answered_with_id_null(stdio, request_id):
    """#35: the SDK read such a request as a notification, so its client waited for ever.
    JSON-RPC 2.0 answers a request whose id cannot be used with id null."""
    stdio.send(json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}))
    answer = stdio.answer()
    assert answer["id"] is None and answer["error"]["code"] == -32600, answer
    assert "id must be a string or an integer" in answer["error"]["message"]
    stdio.send(json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tools/list"}))
    assert stdio.answer()["id"] == 8


def test_a_batch_gets_an_answer_for_each_request_in_it(stdio):
    batch = [
        {"jsonrpc": "2.0", "id": 21, "method": "tools/list"},
        {"jsonrpc": "2.0", "method": "notifications/progress"},  # no id: no answer
        {"jsonrpc": "2.0", "id": "b", "method": "tools/list"},
    ]
    stdio.send(json.dumps(batch))
    answers = [stdio.answer(), stdio.answer()]
    assert [a["id"] for a in answers] == [21, "b"]
    assert all("batches are not supported" in a["error"]["message"] for a in answers)


def test_a_line_with_no_id_to_answer_is_only_logged(stdio):
    stdio.send("this is not JSON-RPC")
    stdio.send('{"jsonrpc":"2.0","method":"notifications/x","params":"bad"}')
    stdio.send(json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tools/list"}))
    assert stdio.answer()["id"] == 9  # nothing was answered before it


def post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, data=body, method="POST",
        headers={**ACCEPT, "Content-Type": "application/json", **(headers or {})},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=20) as response:
            return response.status, {"headers": dict(response.headers)}
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b'{"jsonrpc":"2.0","id":5,"method":"tools/list","params":{"x":"\xff"}}', "not UTF-8"),
        (b'{"jsonrpc":"2.0","id":5,"method":"tools/call","params":'
         + b"[" * 1000 + b"]" * 1000 + b"}", "nested too deeply"),
    ],
)  # fmt: skip
def test_over_http_an_unreadable_body_is_a_client_error_with_its_id(body, words):
    with http_server("--server", "memory://") as url:
        status, opened = post(url, json.dumps(INITIALIZE).encode())
        assert status == 200
        session = {"mcp-session-id": opened["headers"]["mcp-session-id"]}
        status, answer = post(url, body, session)
    assert status == 400, answer
    assert answer["id"] == 5 and answer["error"]["code"] == -32700
    assert words in answer["error"]["message"]


def test_over_http_a_lone_surrogate_payload_is_a_clean_error_with_its_id():
    """#22, item 2: it was "internal error in the mq9 MCP server" with a traceback. The SDK 2.x
    cannot read such a request at all (as over stdio): it is refused, saying why, with its id."""
    with http_server("--server", "memory://") as url:
        status, opened = post(url, json.dumps(INITIALIZE).encode())
        assert status == 200
        session = {"mcp-session-id": opened["headers"]["mcp-session-id"],
                   "mcp-protocol-version": "2025-06-18"}  # fmt: skip
        arguments = {"mail_address": "texts", "payload": "half \ud83d"}
        call = {"jsonrpc": "2.0", "id": 11, "method": "tools/call",
                "params": {"name": "send_message", "arguments": arguments}}  # fmt: skip
        status, answer = post(url, json.dumps(call).encode(), session)
    assert status == 400, answer
    assert answer["id"] == 11 and answer["error"]["code"] == -32602, answer
    assert "text holds a lone surrogate" in answer["error"]["message"]


@pytest.mark.parametrize("request_id", [12.5, None, {"a": 1}, [1]])
def test_over_http_a_request_whose_id_is_no_string_or_integer_is_refused(request_id):
    """#35: the SDK reads such a request as a notification and never answers it."""
    with http_server("--server", "memory://") as url:
        status, opened = post(url, json.dumps(INITIALIZE).encode())
        session = {"mcp-session-id": opened["headers"]["mcp-session-id"],
                   "mcp-protocol-version": "2025-06-18"}  # fmt: skip
        ping = {"jsonrpc": "2.0", "id": request_id, "method": "ping"}
        status, answer = post(url, json.dumps(ping).encode(), session)
    assert status == 400, answer
    assert answer["id"] is None and answer["error"]["code"] == -32600
    assert "id must be a string or an integer" in answer["error"]["message"]


def test_over_http_one_body_limit_answered_as_json_rpc():
    """Bodies up to MAX_BODY_BYTES reach the server (the SDK's own limit is the same: no plain
    text 413 of its own at 4 MiB); past it, the server's JSON-RPC refusal."""
    padding = {**INITIALIZE["params"]["clientInfo"], "padding": "x" * (5 * 1024 * 1024)}
    opening = {**INITIALIZE, "params": {**INITIALIZE["params"], "clientInfo": padding}}
    with http_server("--server", "memory://") as url:
        status, answer = post(url, json.dumps(opening).encode())
        assert status == 200, answer  # 5 MiB: read and answered by the server
        # past it: refused by its declared length, before any of it is sent
        where = urllib.parse.urlsplit(url)
        http = http_client.HTTPConnection(where.hostname, where.port, timeout=20)
        http.putrequest("POST", where.path)
        for name, value in {**ACCEPT, "Content-Type": "application/json"}.items():
            http.putheader(name, value)
        http.putheader("Content-Length", str(MAX_BODY_BYTES + 1))
        http.endheaders()
        response = http.getresponse()
        status, answer = response.status, json.loads(response.read())
        http.close()
        assert status == 413 and answer["error"]["code"] == -32600, answer
        assert f"over {MAX_BODY_BYTES} bytes" in answer["error"]["message"]
