"""nats_floor/fast_path.py's header_block: the bytes nats-py's own publish writes for a header
dict (the cluster store queues an atomic batch's entries with it, #81), for the headers the
store writes and for what nats-py strips, rewrites or refuses."""

from __future__ import annotations

import pytest
from nats.aio.client import Client
from nats.errors import BadHeaderError

from mq9_wire.nats_floor.fast_path import header_block

pytestmark = pytest.mark.asyncio

CASES = [
    {"Nats-Batch-Id": "0" * 32, "Nats-Batch-Sequence": "2"},
    {"Mq9-Tags": '["a b","c"]', "Mq9-Expire-At": "1700000000", "Nats-Batch-Commit": "1"},
    {"Nats-Rollup": "sub", "Nats-Expected-Last-Subject-Sequence": "0"},
    {" Spaced ": " padded ", "Line": "one\r\ntwo\nthree\r", "": "dropped", "  ": "too"},
    {"Plain": "ünïcode välue"},
]


async def _nats_py_block(headers: dict[str, str]) -> bytes:
    client = Client()  # (never connected: its publish's bytes captured where they would go)
    written: list[bytes] = []

    async def capture(command: bytes, priority: bool = False) -> None:
        written.append(command)

    client._send_command = capture  # type: ignore[method-assign]
    await client._send_publish("s", "", b"payload", 7, headers)
    line, rest = written[0].split(b"\r\n", 1)
    size = int(line.split()[-2])  # HPUB <subject> <reply> <header bytes> <total bytes>
    return rest[:size]


@pytest.mark.parametrize("headers", CASES)
async def test_the_block_is_what_nats_py_writes(headers: dict[str, str]) -> None:
    for _ in range(2):  # (a second time: the names remembered as tokens)
        assert header_block(headers) == await _nats_py_block(headers)


async def test_a_name_that_is_no_token_is_refused_as_nats_py_refuses_it() -> None:
    with pytest.raises(BadHeaderError):
        header_block({"a:b": "x"})
    with pytest.raises(BadHeaderError):
        await _nats_py_block({"a:b": "x"})
