"""Writes gathered into atomic batches in the cluster store (#72, ``batches.py``): the group
positions ACKs write in one turn go as one batch into the bucket, on a real JetStream
nats-server.

What is checked: positions of many mailboxes committed at once are each read back by another
store, two commits of one position in one turn leave the later; a layout whose bucket was
made before atomic batches takes them when a store opens it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator

import nats
import pytest

from mq9_broker.storage.jetstream import Layout
from mq9_broker.storage.jetstream.batches import Batches
from mq9_broker.storage.jetstream.requests import StorageRequests, StorageWriteRefused
from mq9_wire.nats_floor import fast_path
from mq9_wire.nats_floor.fast_path import engage
from mq9_wire.nats_floor.guard import protect
from testbed.support.jetstream_servers import JetStreamCluster, close_store, open_store

pytestmark = pytest.mark.slow  # a nats-server process

NOW = 1_700_000_000


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    with JetStreamCluster(1) as cluster:
        yield cluster.urls


async def test_positions_committed_at_once_are_each_kept_the_later_of_one(
    servers: list[str],
) -> None:
    name = f"P{uuid.uuid4().hex[:10]}"
    first, second = await open_store(servers, name), await open_store(servers, name)
    try:
        records = []
        for n in range(8):
            made = await first.create_mailbox(f"box{n}", ttl=0, desc="", now=NOW)
            assert made is not None
            records.append(made)
        await first.commit("g", records[0], 1)  # (the group's marker: then one write an ACK)
        commits = [first.commit("g", record, 10 + n, 5) for n, record in enumerate(records)]
        commits.append(first.commit("g", records[0], 99, 7))  # (the same turn, after)
        await asyncio.gather(*commits)
        positions = [await second.position("g", record) for record in records]
        assert [(p.offset, p.seq) for p in positions] == [(99, 7)] + [
            (10 + n, 5) for n in range(1, 8)
        ]
    finally:
        await close_store(first)
        await close_store(second)


async def test_a_bucket_made_before_atomic_batches_takes_them(servers: list[str]) -> None:
    layout = Layout(f"P{uuid.uuid4().hex[:10]}")
    connection = await nats.connect(servers)
    try:
        old = {  # the groups bucket as layouts before batched positions made it
            "name": f"KV_{layout.groups}",
            "subjects": [f"$KV.{layout.groups}.>"],
            "storage": "file",
            "retention": "limits",
            "num_replicas": 1,
            "max_msgs_per_subject": 1,
            "discard": "new",
            "allow_direct": True,
            "allow_rollup_hdrs": True,
            "deny_delete": True,
            "allow_msg_ttl": True,
        }
        reply = await connection.request(
            f"$JS.API.STREAM.CREATE.KV_{layout.groups}", json.dumps(old).encode(), timeout=20
        )
        assert b'"error"' not in reply.data
    finally:
        await connection.close()
    store = await open_store(servers, layout.name)
    try:
        record = await store.create_mailbox("box", ttl=0, desc="", now=NOW)
        assert record is not None
        await store.commit("g", record, 1)
        await asyncio.gather(store.commit("g", record, 2), store.commit("g", record, 3))
        assert (await store.position("g", record)).offset == 3
        info = await store.requests.api(f"STREAM.INFO.KV_{layout.groups}", None)
        assert info["config"].get("allow_atomic") is True
    finally:
        await close_store(store)


async def test_a_part_that_does_not_fit_fails_alone_never_its_batch(servers: list[str]) -> None:
    """A part past the servers' limits (here a subject over nats-server's 4,096-byte control
    line) is refused before it joins a batch: the parts handed in with it in the same turn
    are stored, and the connection stays up (sent, it would have closed it: #77)."""
    stream = f"B{uuid.uuid4().hex[:10]}"
    connection = await nats.connect(servers)
    try:
        config = {"name": stream, "subjects": [f"{stream}.>"], "allow_atomic": True}
        reply = await connection.request(
            f"$JS.API.STREAM.CREATE.{stream}", json.dumps(config).encode(), timeout=20
        )
        assert b'"error"' not in reply.data
        batches = Batches(StorageRequests(connection, timeout=20))
        parts = [[(f"{stream}.good.{n}", b"x", {})] for n in range(3)]
        parts.insert(1, [(f"{stream}." + ".".join(["deep"] * 1000), b"x", {})])
        done = await asyncio.gather(*(batches.write(p) for p in parts), return_exceptions=True)
        assert isinstance(done[1], StorageWriteRefused) and "control line" in str(done[1])
        assert sorted(n for i, n in enumerate(done) if i != 1) == [1, 2, 3]
        assert connection.is_connected
        await batches.stop()
    finally:
        await connection.close()


async def _batch_written(connection: nats.NATS, stream: str, engaged: bool) -> list[tuple]:
    """A batch of three entries written by ``StorageRequests`` on ``connection`` (on the fast path
    or not): what the stream holds of it (subject, data, headers but the batch's id), and
    how many publishes went through nats-py's ``publish``."""
    requests = StorageRequests(connection, timeout=20)
    published = 0
    fenced = connection.publish

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal published
        published += 1
        return await fenced(*args, **kwargs)

    connection.publish = counted  # type: ignore[method-assign]
    entries = [
        (f"{stream}.a", b"one", {"Mq9-Tags": '["x y"]', "Spaced": " v "}),
        (f"{stream}.b", b"", {}),
        (f"{stream}.c", b"three", {"Nats-Rollup": "sub"}),
    ]
    requests.check_batched(entries)
    last = await requests.publish_batch(entries)
    assert published == (1 if engaged else 3)
    stream_api = connection.jetstream()
    stored = []
    for seq in range(last - 2, last + 1):
        got = await stream_api.get_msg(stream, seq)
        headers = {k: v for k, v in (got.headers or {}).items() if k != "Nats-Batch-Id"}
        stored.append((got.subject, got.data, headers))
    return stored


async def test_a_batch_on_the_fast_path_stores_what_nats_py_publishes_store(
    servers: list[str],
) -> None:
    """The entries before a batch's commit are queued on the broker's fast path (one write
    with the commit, no publish each): the stream holds byte for byte what nats-py's
    publishes of them stored (values stripped as nats-py strips them)."""
    written = {}
    for engaged in (False, True):
        stream = f"F{uuid.uuid4().hex[:10]}"
        connection = await nats.connect(servers)
        watchdog = protect(connection)
        try:
            config = {"name": stream, "subjects": [f"{stream}.>"], "allow_atomic": True}
            config["allow_rollup_hdrs"] = True
            reply = await connection.request(
                f"$JS.API.STREAM.CREATE.{stream}", json.dumps(config).encode(), timeout=20
            )
            assert b'"error"' not in reply.data
            if engaged:
                assert engage(connection)
            assert fast_path.engaged(connection) is engaged
            stored = await _batch_written(connection, stream, engaged)
            written[engaged] = [(s.split(".", 1)[1], d, h) for s, d, h in stored]
        finally:
            if watchdog is not None:
                watchdog.cancel()
            await connection.close()
    assert written[True] == written[False]
    assert written[True][0][2]["Spaced"] == "v"
