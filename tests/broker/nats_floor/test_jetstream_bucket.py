"""The key-value bucket of the NATS floor (``nats_floor/jetstream/bucket.py``) on a real JetStream
nats-server: a key created once, taken over once deleted, updated only from the revision
read, purged; deleted keys read as no value everywhere; the same bucket nats-py's
``KeyValue`` made read and written both ways (the identities' bucket is one).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest

from mq9_broker.storage.jetstream.opening import bucket_config
from mq9_wire.nats_floor.jetstream.api import (
    KV_OPERATION,
    KV_PURGE,
    ErrorCode,
    deleted,
    wrong_last_sequence,
)
from mq9_wire.nats_floor.jetstream.bucket import Bucket, live, won
from mq9_wire.nats_floor.jetstream.requests import JetStreamError, Requests
from testbed.support.jetstream_servers import JetStreamCluster

pytestmark = pytest.mark.slow  # a nats-server process


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    with JetStreamCluster(1) as cluster:
        yield cluster.urls


@pytest.fixture
async def requests(servers: list[str]) -> AsyncIterator[Requests]:
    connection = await nats.connect(servers)
    made = Requests(connection, timeout=10.0)
    await made.start()
    try:
        yield made
    finally:
        await made.stop()
        await connection.close()


async def _bucket(requests: Requests) -> Bucket:
    """A new bucket made as the cluster store makes its own."""
    name = f"B{uuid.uuid4().hex[:10]}"
    config = {"name": f"KV_{name}", "storage": "memory", **bucket_config(name)}
    await requests.api(f"STREAM.CREATE.KV_{name}", config)
    return Bucket(requests, name)


async def test_a_key_is_created_once_and_its_value_read_back(requests: Requests) -> None:
    bucket = await _bucket(requests)
    revision = await bucket.create("k", b"one")
    with pytest.raises(JetStreamError) as refused:
        await bucket.create("k", b"two")
    assert wrong_last_sequence(refused.value)
    assert refused.value.err_code == ErrorCode.WRONG_LAST_SEQUENCE
    entry = await bucket.get("k")
    assert entry is not None and entry.data == b"one" and entry.seq == revision
    assert await bucket.revision("k") == revision
    assert await bucket.get("never") is None and await bucket.revision("never") == 0


async def test_a_deleted_key_reads_as_none_and_is_created_again(requests: Requests) -> None:
    bucket = await _bucket(requests)
    first = await bucket.create("k", b"one")
    await bucket.delete("k", first)
    marker = await bucket.last("k")
    assert marker is not None and deleted(marker.headers) and not live(marker)
    assert await bucket.get("k") is None
    assert await bucket.last_values(">") == []
    await bucket.create("k", b"again")  # (the marker's place taken)
    entry = await bucket.get("k")
    assert entry is not None and entry.data == b"again"


async def test_an_update_expects_the_revision_read(requests: Requests) -> None:
    bucket = await _bucket(requests)
    revision = await bucket.create("k", b"one")
    newer = await bucket.update("k", b"two", revision)
    assert not await won(bucket.update("k", b"stale", revision))  # another came first
    assert await won(bucket.update("k", b"three", newer))
    entry = await bucket.get("k")
    assert entry is not None and entry.data == b"three"


async def test_two_creates_at_once_one_wins(requests: Requests) -> None:
    bucket = await _bucket(requests)
    results = await asyncio.gather(*(won(bucket.create("k", str(n).encode())) for n in range(6)))
    assert sorted(results) == [False] * 5 + [True]


async def test_a_purge_leaves_one_marker_and_values_skip_it(requests: Requests) -> None:
    bucket = await _bucket(requests)
    await bucket.put("a.1", b"x")
    await bucket.put("a.2", b"y")
    await bucket.put("a.2", b"z")
    await bucket.purge("a.1")
    marker = await bucket.last("a.1")
    assert marker is not None and marker.headers[KV_OPERATION] == KV_PURGE
    values, complete = await bucket.values("a.>", most=10, page=1)
    assert complete and [(bucket.key_of(e.subject), e.data) for e in values] == [("a.2", b"z")]
    assert [e.data for e in await bucket.last_values("a.*")] == [b"z"]


async def test_nats_py_and_the_bucket_agree_on_one_bucket(
    servers: list[str], requests: Requests
) -> None:
    """A bucket nats-py's ``KeyValue`` made (the identities' bucket is one): its writes read
    here, these read by nats-py, a delete here a deleted key there."""
    from nats.js.api import KeyValueConfig
    from nats.js.errors import KeyNotFoundError

    name = f"N{uuid.uuid4().hex[:10]}"
    js = requests.connection.jetstream()
    kv = await js.create_key_value(KeyValueConfig(bucket=name, history=1))
    bucket = Bucket(requests, name)
    await kv.put("theirs", b"1")
    entry = await bucket.get("theirs")
    assert entry is not None and entry.data == b"1"
    await bucket.create("ours", b"2")
    assert (await kv.get("ours")).value == b"2"
    await bucket.delete("ours")
    with pytest.raises(KeyNotFoundError):
        await kv.get("ours")
    await kv.delete("theirs")
    assert await bucket.get("theirs") is None
