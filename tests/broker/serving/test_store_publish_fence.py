"""The last line of defence on the cluster store's publishes (issue #77 item 1): a publish
nats-server cannot take is refused before it is written (``nats_floor/fits.py``, installed by the
store's ``StorageRequests``), on a real nats-server.

Why it matters, shown first: the same publish written by plain nats-py makes the server answer
``-ERR`` and nats-py close the connection for good, the end a broker met when one SEND carried
a 4,000-byte deep tag.
"""

from __future__ import annotations

import asyncio

import nats
import pytest

from mq9_broker.storage.jetstream.requests import StorageRequests, StorageWriteRefused
from mq9_wire.nats_floor.fits import CONTROL_LINE, PublishRefused, fence, publish_problem

pytestmark = pytest.mark.slow  # a nats-server process

LONG_SUBJECT = "mq9.X.t." + ".".join(["a" * 32] * 200) + "._"  # 6,600 bytes


async def _closed(connection: nats.NATS) -> bool:
    """Whether nats-py closed ``connection`` within a few seconds (polled)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while not connection.is_closed and loop.time() < deadline:
        await asyncio.sleep(0.05)
    return connection.is_closed


async def test_unfenced_a_subject_over_the_control_line_closes_the_connection(nats_server):
    connection = await nats.connect(nats_server.url, max_reconnect_attempts=-1)
    try:
        await connection.publish(LONG_SUBJECT, b"x")
        assert await _closed(connection)  # for good, reconnecting for ever or not
        assert "control line" in str(connection.last_error).lower()
    finally:
        await connection.close()


async def test_headers_past_max_payload_pass_nats_py_and_close_the_connection(nats_server):
    # nats-py compares only the data with max_payload; the server counts the headers too
    connection = await nats.connect(nats_server.url, max_reconnect_attempts=-1)
    try:
        room = connection.max_payload
        await connection.publish("a.b", b"x" * (room - 10), headers={"Mq9-Tags": "t" * 100})
        assert await _closed(connection)
    finally:
        await connection.close()


async def test_the_store_refuses_each_publish_the_server_cannot_take_and_stays_connected(
    nats_server,
):
    connection = await nats.connect(nats_server.url, max_reconnect_attempts=-1)
    try:
        requests = StorageRequests(connection, timeout=5)
        room = connection.max_payload
        refused = [
            (LONG_SUBJECT, b"x", None, "control line is"),
            ("a.b", b"x" * (room - 10), {"Mq9-Tags": "t" * 100}, "(max_payload)"),
            ("a..b", b"x", None, "has an empty token"),
            ("a.*", b"x", None, "a token no publish may carry"),
            ("a b", b"x", None, "a token no publish may carry"),
            ("a.b", b"x", {"Mq9-Tags": "a\r\nNats-Rollup: all"}, "holds a line break"),
            ("a.b", b"x", {"bad name": "x"}, "that is no token"),
        ]
        for subject, data, headers, said in refused:
            refused_before = r"refused a write before sending it: "
            with pytest.raises(StorageWriteRefused, match=refused_before) as e:
                await requests.publish(subject, data, headers)
            assert said in str(e.value) and "\n" not in str(e.value)
        # the atomic batches publish on the connection itself: fenced too
        with pytest.raises(StorageWriteRefused, match="control line"):
            await connection.publish(LONG_SUBJECT, b"x", headers={"Nats-Batch-Id": "b"})
        with pytest.raises(StorageWriteRefused, match="control line"):
            await requests.api("STREAM.INFO." + "S" * CONTROL_LINE, None)
        await connection.flush(timeout=5)  # the server still answers it
        assert connection.is_connected
    finally:
        await connection.close()


def test_a_publish_at_the_limits_fits_and_one_byte_more_does_not():
    reply = "_INBOX.abcdefghijklmnopqrstuv.1"
    headers = {"Mq9-Tags": '["a"]'}
    block = len(b'NATS/1.0\r\nMq9-Tags: ["a"]\r\n\r\n')
    assert publish_problem("a.b", reply, 100 - block, headers, 100) is None
    assert "a publish of 101 bytes" in str(publish_problem("a.b", reply, 101 - block, headers, 100))
    # the control line: "HPUB <subject> <reply> <block> <total>\r\n"
    fixed = len(f"HPUB  {reply} {block} {block + 1}\r\n")
    at_most = "s" * (CONTROL_LINE - fixed)
    assert publish_problem(at_most, reply, 1, headers, 10**6) is None
    assert "control line is 4097 bytes" in str(
        publish_problem(at_most + "s", reply, 1, headers, 10**6)
    )


async def test_a_fence_is_put_up_once_and_raises_what_its_owner_names(nats_server):
    connection = await nats.connect(nats_server.url)
    try:
        fence(connection)
        fence(connection, StorageWriteRefused)  # (the first stays)
        with pytest.raises(PublishRefused):
            await connection.publish("a..b", b"x")
        await connection.publish("a.b", b"x")  # what fits goes out
        await connection.flush(timeout=5)
    finally:
        await connection.close()
