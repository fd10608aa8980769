"""The header block of a traced SEND, written by ``GuardedClient`` instead of nats-py (a
traceparent on every SEND under a trace: docs/tracing.md, "What it costs"): the very bytes
nats-py writes, and for headers nats-py would change or refuse, nats-py's own way."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.errors import BadHeaderError

from mq9_wire.nats_floor.guard import GuardedClient, plain_header_block

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

PLAIN = [
    {"traceparent": TRACEPARENT},
    {"traceparent": TRACEPARENT, "tracestate": "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"},
    {"mq9-priority": "urgent", "mq9-tags": "a,b", "langsmith-trace": "x.y"},
    {"empty": ""},
    {"x-note": "café ☕ ok"},
]
# What nats-py strips, replaces or refuses (a line break would start a header of its own).
ODD = [
    {"a": " padded "},
    {"a": "x\r\nforged: yes"},
    {"a": "x\ny"},
    {"a": "x\u2028"},
    {"a: b\r\nforged": "yes"},
    {" a": "x"},
    {"": "x"},
]


async def written(connection: Client, headers: dict[str, str]) -> bytes:
    """What ``connection`` queues for a publish with ``headers`` (unconnected: nothing is
    sent, the command waits in its pending buffer)."""
    await connection._send_publish("mq9.subject", "_INBOX.reply", b"payload", 7, headers)
    return connection._pending[-1]


async def outcome(connection: Client, headers: dict[str, str]) -> bytes | str:
    try:
        return await written(connection, headers)
    except BadHeaderError as exc:
        return f"refused: {exc}"


@pytest.mark.parametrize("headers", PLAIN + ODD)
async def test_the_block_is_the_one_nats_py_writes(headers):
    assert await outcome(GuardedClient(), headers) == await outcome(Client(), headers)


@pytest.mark.parametrize("headers", PLAIN)
async def test_plain_headers_are_written_at_once(headers):
    block = plain_header_block(headers)
    assert block is not None and (await written(Client(), headers)).count(block) == 1


@pytest.mark.parametrize("headers", ODD)
async def test_other_headers_are_left_to_nats_py(headers):
    assert plain_header_block(headers) is None


async def test_a_name_nats_py_refuses_is_still_refused():
    with pytest.raises(BadHeaderError):
        await written(GuardedClient(), {"a/b": "x"})
    assert (await outcome(Client(), ODD[4])).startswith("refused")  # the forged name too
