"""The NATS floor's one JetStream client (issue #92) on real nats-servers: a bucket made by
``open_bucket`` is the bucket nats-py's ``create_key_value`` makes (an identities' bucket an
earlier version made is found as it is, and one made now reads as nats-py's), a stream of the
name that is no bucket refused, JetStream off told apart from a slow one (``no_responders``),
and what must follow a stream (``consumers.py``, nats-py's consumers behind it): a watch from
the current values on, an ordered read up to the end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.js.api import KeyValueConfig, StorageType

from mq9_wire.nats_floor.jetstream.bucket import kv_config, open_bucket
from mq9_wire.nats_floor.jetstream.consumers import Change, read_ordered, watch
from mq9_wire.nats_floor.jetstream.requests import NoAnswer, Requests
from testbed.support.waiting import until

pytestmark = pytest.mark.slow  # a nats-server process

@pytest.fixture
async def requests(shared_jetstream: list[str]) -> AsyncIterator[Requests]:
    connection = await nats.connect(shared_jetstream)
    try:
        yield Requests(connection, timeout=10.0)
    finally:
        await connection.close()


def _name() -> str:
    return f"T{uuid.uuid4().hex[:12]}"


def _settings(info: dict[str, Any], bucket: str) -> dict[str, Any]:
    """A bucket's stream config as the server keeps it, its own names left out."""
    config = dict(info["config"])
    assert config.pop("subjects") == [f"$KV.{bucket}.>"]
    for own in ("name", "description"):
        config.pop(own, None)
    return config


async def test_a_bucket_made_is_the_one_nats_py_makes(requests: Requests) -> None:
    ours, theirs = _name(), _name()
    await open_bucket(requests, ours, replicas=1, description="ours")
    js = requests.connection.jetstream(timeout=10)
    await js.create_key_value(
        KeyValueConfig(
            bucket=theirs, history=1, replicas=1, storage=StorageType.FILE, description="x"
        )
    )
    made = await requests.stream_info(f"KV_{ours}")
    earlier = await requests.stream_info(f"KV_{theirs}")
    assert made is not None and earlier is not None
    assert _settings(made, ours) == _settings(earlier, theirs)
    # and read and written both ways: the earlier bucket found as it is, its values there
    kv = await js.key_value(theirs)
    await kv.put("cred.a", b"1")
    found = await open_bucket(requests, theirs, replicas=3, description="not applied")
    entry = await found.get("cred.a")
    assert entry is not None and entry.data == b"1"
    await found.put("cred.b", b"2")
    assert (await kv.get("cred.b")).value == b"2"


async def test_a_bucket_is_made_once_however_often_it_is_opened(requests: Requests) -> None:
    name = _name()
    first = await open_bucket(requests, name, replicas=1, description="d")
    await first.put("k", b"v")
    again = await open_bucket(requests, name, replicas=1, description="d")
    entry = await again.get("k")
    assert entry is not None and entry.data == b"v"


async def test_a_stream_of_the_name_that_is_no_bucket_is_refused(requests: Requests) -> None:
    name = _name()
    config = {**kv_config(name, replicas=1, description="d"), "max_msgs_per_subject": -1}
    await requests.api(f"STREAM.CREATE.KV_{name}", config)
    with pytest.raises(ValueError, match="not a key-value bucket"):
        await open_bucket(requests, name, replicas=1, description="d")


async def test_jetstream_off_is_told_apart_from_a_slow_one(nats_server: Any) -> None:
    connection = await nats.connect(nats_server.url)  # (a server without -js)
    try:
        with pytest.raises(NoAnswer) as off:
            await Requests(connection, timeout=5.0).account_info()
        assert off.value.no_responders
    finally:
        await connection.close()


async def test_a_watch_brings_the_current_values_then_each_change(requests: Requests) -> None:
    name = _name()
    bucket = await open_bucket(requests, name, replicas=1, description="d")
    await bucket.put("cred.a", b"1")
    await bucket.put("other.x", b"-")
    following = await watch(requests.connection, name, "cred.>", timeout=10.0)
    seen: list[Change] = []

    async def follow() -> None:
        async for change in following.changes():
            seen.append(change)

    task = asyncio.ensure_future(follow())
    try:
        first = [Change("cred.a", b"1", False)]
        await until(lambda: seen == first, timeout=30, what="the current value", show=lambda: seen)
        await bucket.put("cred.b", b"2")
        await bucket.delete("cred.a")
        await until(lambda: len(seen) == 3, timeout=30, what="two changes", show=lambda: seen)
        assert seen[1:] == [Change("cred.b", b"2", False), Change("cred.a", b"", True)]
    finally:
        task.cancel()
        await following.stop()


async def test_an_ordered_read_ends_at_the_last_message(requests: Requests) -> None:
    name = _name()
    bucket = await open_bucket(requests, name, replicas=1, description="d")
    nothing = read_ordered(
        requests.connection, bucket.stream, bucket.subject("a.>"), timeout=10.0
    )
    assert [read async for read in nothing] == []
    for key, value in (("a.1", b"x"), ("a.2", b"y"), ("a.1", b"z"), ("b.1", b"-")):
        await bucket.put(key, value)
    last = read_ordered(
        requests.connection,
        bucket.stream,
        bucket.subject("a.>"),
        timeout=10.0,
        last_per_subject=True,
    )
    assert [(bucket.key_of(r.subject), r.data) async for r in last] == [
        ("a.2", b"y"),
        ("a.1", b"z"),
    ]
