"""A cluster store's mailboxes spread over several message streams (#81, ``Layout.streams``):
each stream's leader takes its share of the writes. On a real JetStream nats-server, but for
the layout's names and the leaders' choice, read as data.

What is checked: a layout of one stream has today's names and subjects to the letter; the
streams' subjects never overlap; a mailbox's stream is its token's; a store of 4 streams keeps
each mailbox's messages in its own stream, numbers every mailbox from 0 with no gap through
SENDs of many mailboxes at once (each atomic batch one stream's), and serves FETCH, ACK,
QUERY by tags, DELETE and a delayed SEND through brokers; a broker given no count adopts the
recorded one, one given another is refused in one line; the leaders' moves spread them.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace

import nats
import pytest

from mq9_broker import Broker, BrokerConfig, StartupError
from mq9_broker.state.mailbox import StoredMessage
from mq9_broker.storage.jetstream import ClusterStore, Layout, StreamCount, token
from mq9_broker.storage.jetstream.batches import Batches
from mq9_broker.storage.jetstream.leaders import moves, spread_leaders
from mq9_broker.storage.jetstream.mapping import NO_KEY
from mq9_broker.storage.jetstream.opening import message_config
from mq9_broker.storage.jetstream.staged import consumer_name
from mq9_broker.storage.jetstream.survey_state import StoreSurvey
from mq9_broker.storage.mailbox_store import Mark
from mq9_platform import Mq9Client
from mq9_wire.protocol import Priority
from testbed.support.jetstream_servers import (
    JetStreamCluster,
    close_store,
    open_replicated_store,
)
from testbed.support.waiting import until

BOX = "0123456789abcdef0123456789abcdef"


def _now() -> int:
    return int(time.time())


def _matches(pattern: str, subject: str) -> bool:
    """NATS's subject matching (``*`` one token, ``>`` the rest)."""
    wanted, given = pattern.split("."), subject.split(".")
    for at, token_ in enumerate(wanted):
        if token_ == ">":
            return len(given) > at
        if at >= len(given) or token_ not in ("*", given[at]):
            return False
    return len(wanted) == len(given)


# -- the layout, read as data ------------------------------------------------------------


def test_one_stream_is_the_layout_as_before() -> None:
    one = Layout("S", 1)
    assert one == Layout("S") and one.message_streams == ("S_MSGS",)
    assert one.subjects_of(0) == [
        "mq9.S.m.>",
        "mq9.S.d.>",
        "mq9.S.s.>",
        "mq9.S.t.>",
        "mq9.S.h.>",
        "mq9.S.i.>",  # (#90: a SEND's idempotency key; opening adds it to a layout before)
    ]
    assert one.message_subject(BOX, Priority.URGENT, NO_KEY, 7) == f"mq9.S.m.{BOX}.urgent.-.7"
    assert one.head_subject(BOX) == f"mq9.S.h.{BOX}"
    assert one.box_filter(BOX) == f"mq9.S.m.{BOX}.>"
    assert one.box_key_filter(BOX, "k") == f"mq9.S.m.{BOX}.*.k.*"
    assert one.tag_subject(BOX, "a") == f"mq9.S.t.{BOX}.{token('a')}._"
    box = token("x")
    assert one.lane_filter("x", Priority.NORMAL) == f"mq9.S.m.{box}.normal.*.*"
    assert one.id_filter("x", 3) == f"mq9.S.m.{box}.*.*.3"
    assert one.schedule_subject("x", "id") == f"mq9.S.d.{box}.id"
    assert one.staged_subject("x", Priority.CRITICAL) == f"mq9.S.s.{box}.critical"
    assert one.tag_filter("x", "a/b") == f"mq9.S.t.{box}.{token('a')}.{token('b')}.>"
    assert one.staged_filter == "mq9.S.s.>" and consumer_name(one) == "S_STAGED"
    assert one.mailbox_stream("x") == "S_MSGS"
    assert message_config(one) == message_config(Layout("S"))
    assert message_config(one)["republish"]["src"] == "mq9.S.m.*.*.*.*"


def test_several_streams_never_share_a_subject_and_a_mailbox_keeps_its_own() -> None:
    layout = Layout("S", 4)
    assert layout.message_streams == ("S_MSGS", "S_MSGS_1", "S_MSGS_2", "S_MSGS_3")
    assert layout.subjects_of(0) == Layout("S").subjects_of(0)  # (stream 0 as before)
    assert [consumer_name(layout, i) for i in range(4)] == [
        "S_STAGED",
        "S_STAGED_1",
        "S_STAGED_2",
        "S_STAGED_3",
    ]
    names = [f"box{n}" for n in range(64)]
    for name in names:
        box, index = token(name), layout.stream_of(token(name))
        assert index == int(box[:8], 16) % 4 == Layout("S", 4).stream_of(box)  # (pure)
        own = layout.subjects_of(index)
        subjects = [
            layout.message_subject(box, Priority.NORMAL, NO_KEY, 0),
            layout.head_subject(box),
            layout.schedule_subject(name, "id"),
            layout.staged_subject(name, Priority.NORMAL),
            layout.tag_subject(box, "a/b"),
        ]
        for subject in subjects:
            assert any(_matches(pattern, subject) for pattern in own), subject
            for other in range(4):
                if other != index:
                    assert not any(_matches(p, subject) for p in layout.subjects_of(other))
        assert layout.mailbox_stream(name) == layout.stream_name(index)
        assert _matches(message_config(layout, index)["republish"]["src"], subjects[0])
    assert {layout.stream_of(token(name)) for name in names} == {0, 1, 2, 3}


@pytest.mark.parametrize("count", [0, 65, -1])
def test_a_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(ValueError, match="streams must be 1 to 64"):
        Layout("S", count)
    with pytest.raises(StartupError, match="streams must be 1 to 64"):
        BrokerConfig(nats="nats://127.0.0.1:4222", store="jetstream", streams=count)


def test_leaders_crowding_one_server_are_moved_to_the_peers_holding_fewest() -> None:
    peers = ["n1", "n2", "n3"]
    crowded = {f"S{i}": ("n1", peers) for i in range(4)}
    chosen = moves(crowded)
    assert chosen == {"S0": "n2", "S1": "n3"}  # then 2, 1, 1: no move undoes another
    spread = {"S0": ("n1", peers), "S1": ("n2", peers), "S2": ("n3", peers), "S3": ("n1", peers)}
    assert moves(spread) == {}
    assert moves({"S0": ("n1", []), "S1": ("n1", [])}) == {}  # (R1: nowhere to go)


# -- on a server -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def servers() -> Iterator[list[str]]:
    with JetStreamCluster(1) as cluster:
        yield cluster.urls


async def _store(servers: list[str], name: str, streams: int | None) -> ClusterStore:
    connection = await nats.connect(servers)
    store = ClusterStore(connection, name=name, timeout=20.0, streams=streams)
    await store.open()
    return store


async def _held(connection: nats.NATS, stream: str) -> int:
    reply = await connection.request(f"$JS.API.STREAM.INFO.{stream}", b"", timeout=10)
    return int(json.loads(reply.data)["state"]["messages"])


@pytest.mark.slow
async def test_each_mailbox_numbers_from_zero_in_its_stream_through_batches_per_stream(
    servers: list[str],
) -> None:
    name = f"N{uuid.uuid4().hex[:10]}"
    store = await _store(servers, name, 4)
    layout = store.layout
    assert layout.streams == 4
    batches: list[set[str]] = []
    publish_batch = store.requests.publish_batch

    async def seen(entries: list, *args: object, **kwargs: object) -> int:
        batches.append({layout.stream_name(_stream_of(layout, e[0])) for e in entries})
        return await publish_batch(entries, *args, **kwargs)

    store.requests.publish_batch = seen  # type: ignore[method-assign]
    try:
        names = [f"box{n}" for n in range(32)]
        for mailbox in names:
            await store.create_mailbox(mailbox, ttl=0, desc="", now=_now())
        rounds = 6
        ids: dict[str, list[int]] = {mailbox: [] for mailbox in names}
        for number in range(rounds):  # every mailbox's SEND in one turn, 6 times
            sent = await asyncio.gather(
                *(
                    store.append(m, _message(b"%s %d" % (m.encode(), number)), now=_now())
                    for m in names
                )
            )
            for mailbox, msg_id in zip(names, sent, strict=True):
                ids[mailbox].append(msg_id)
        assert all(got == list(range(rounds)) for got in ids.values()), ids
        # each atomic batch one stream's, and the SENDs of one turn gathered (fewer batches
        # than SENDs)
        assert all(len(streams) == 1 for streams in batches)
        assert len(batches) < rounds * len(names)
        # each stream holds its mailboxes' messages and heads, and no other's
        connection = store.requests.connection
        for index, stream in enumerate(layout.message_streams):
            own = [m for m in names if layout.stream_of(token(m)) == index]
            assert own  # (32 mailboxes over 4 streams: each has some)
            assert await _held(connection, stream) == len(own) * (rounds + 1)  # + the head
        held = await StoreSurvey(store).held()  # (the metrics: summed over the streams)
        assert held is not None and (held.messages, held.mailboxes) == (len(names) * rounds, 32)
        for mailbox in names:
            last = await store.last(mailbox)
            assert last is not None and last.msg_id == rounds - 1
            read = await store.read(mailbox, Mark(0, 0), 10, upto=last, now=_now())
            assert [m.payload for m in read] == [
                b"%s %d" % (mailbox.encode(), n) for n in range(rounds)
            ]
    finally:
        await close_store(store)


def _stream_of(layout: Layout, subject: str) -> int:
    """The stream a subject of ``layout`` is in: its mailbox token's (the first token of 32
    digits: a key's or a tag part's come after it)."""
    return layout.stream_of(next(part for part in subject.split(".") if len(part) == 32))


def _message(payload: bytes, tags: tuple[str, ...] = ()) -> StoredMessage:
    return StoredMessage(-1, payload, Priority.NORMAL, _now(), tags=tags)


@pytest.mark.slow
async def test_brokers_serve_every_command_adopt_the_count_and_refuse_another(
    servers: list[str],
) -> None:
    """A broker given --streams 4 makes the layout; one given none adopts 4 (its banner
    names the streams); one given 2 is refused in one line naming both counts. Through both
    brokers: FETCH, ACK, QUERY by tags, DELETE and a delayed SEND, on mailboxes of every
    stream."""
    url, stream = servers[0], f"B{uuid.uuid4().hex[:8]}"
    config = BrokerConfig(nats=url, store="jetstream", stream=stream, search=False, port=0)
    said: list[str] = []
    first = Broker(replace(config, streams=4), say=lambda _: None)
    second = Broker(config, say=said.append)
    await first.start()
    try:
        await second.start()
        banner = "\n".join(said)
        assert all(f"{stream}_MSGS{tail}" in banner for tail in ("", "_1", "_2", "_3")), banner
        with pytest.raises(StartupError) as refused:
            await Broker(replace(config, streams=2), say=lambda _: None).start()
        text = str(refused.value)
        assert "\n" not in text and "4 streams" in text and "--streams 2" in text, text
        layout = Layout(stream, 4)
        names = _one_of_each_stream(layout)
        async with Mq9Client(url) as client:
            for name in names:
                await client.mailbox_create(name=name)
                for n in range(3):
                    await client.send(name, f"{name} {n}", tags=["t/a"] if n == 1 else None)
            for name in names:
                fetched = await client.fetch(name, group_name="g", deliver="earliest", num_msgs=10)
                assert [m.msg_id for m in fetched] == [0, 1, 2]
                await client.ack(name, "g", 1)
                after = await client.fetch(name, group_name="g", num_msgs=10)
                assert [m.text() for m in after] == [f"{name} 2"]
                tagged = await client.query(name, tags=["t"])
                assert [m.text() for m in tagged] == [f"{name} 1"]
                await client.delete(name, 0)
                await client.send(name, f"{name} later", delay=1)
            for name in names:

                async def due(name: str = name) -> bool:
                    return f"{name} later" in [m.text() for m in await client.query(name)]

                await until(due, timeout=60, what=f"{name}'s delayed message numbered")
                texts = [(m.msg_id, m.text()) for m in await client.query(name)]
                assert texts == [(1, f"{name} 1"), (2, f"{name} 2"), (3, f"{name} later")]
    finally:
        await second.stop()
        await first.stop()


def _one_of_each_stream(layout: Layout) -> list[str]:
    """A mailbox name in each of ``layout``'s streams."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < layout.streams:
        name = f"mbox{n}"
        found.setdefault(layout.stream_of(token(name)), name)
        n += 1
    return [found[index] for index in range(layout.streams)]


@pytest.mark.slow
async def test_a_store_given_no_count_adopts_the_layouts_and_a_layout_without_one_has_one(
    servers: list[str],
) -> None:
    name = f"A{uuid.uuid4().hex[:10]}"
    made = await _store(servers, name, 3)
    adopted = await _store(servers, name, None)
    try:
        assert adopted.layout == Layout(name, 3)
        await made.create_mailbox("x", ttl=0, desc="", now=_now())
        assert await made.append("x", _message(b"one"), now=_now()) == 0
        assert await adopted.append("x", _message(b"two"), now=_now()) == 1
    finally:
        await close_store(made)
        await close_store(adopted)
    # a layout made before the count was recorded (no metadata): one stream
    old = Layout(f"O{uuid.uuid4().hex[:10]}")
    connection = await nats.connect(servers)
    try:
        config = {"name": old.messages, "storage": "file", **message_config(old)}
        await connection.request(  # (a bound: nats-py's default is 0.5 s, short at load)
            f"$JS.API.STREAM.CREATE.{old.messages}", json.dumps(config).encode(), timeout=30
        )
        store = ClusterStore(connection, name=old.name)
        await store.open()
        assert store.layout == old
        await store.close()
        refused = ClusterStore(connection, name=old.name, streams=2)
        with pytest.raises(StreamCount, match=r"1 stream .*--streams 2"):
            await refused.open()
        await refused.close()
    finally:
        await connection.close()


@pytest.mark.slow
async def test_a_turns_batches_of_several_streams_are_answered_together(
    servers: list[str],
) -> None:
    """Several streams (#81): the parts handed in during one turn go as one batch a stream,
    and none is answered before every stream's batch is (their writers then send again
    together, so the next turn's batches carry them all)."""
    store = await _store(servers, f"P{uuid.uuid4().hex[:10]}", 2)
    layout = store.layout
    try:
        sent: list[int] = []
        acknowledged: list[int] = []
        second_may_go = asyncio.Event()
        publish_batch = store.requests.publish_batch

        async def seen(entries: list, *args: object, **kwargs: object) -> int:
            stream = 1 if entries[0][0].startswith(layout.stream_prefix(1) + ".") else 0
            sent.append(stream)
            if stream == 1:
                await second_may_go.wait()
            last = await publish_batch(entries, *args, **kwargs)
            acknowledged.append(stream)
            return last

        store.requests.publish_batch = seen  # type: ignore[method-assign]
        batches = Batches(store.requests)
        firsts = [layout.subjects_of(index)[0].replace(">", "x") for index in (0, 1)]
        writes = [
            asyncio.ensure_future(batches.write([(f"{firsts[i]}.{n}", b"", {})], i))
            for n in range(2)
            for i in (0, 1)
        ]
        await until(lambda: acknowledged == [0], timeout=20, what="stream 0's batch answered")
        for _ in range(5):  # (turns enough for an answer given to reach its writer)
            await asyncio.sleep(0)
        assert sorted(sent) == [0, 1] and not any(write.done() for write in writes)
        second_may_go.set()
        seqs = await asyncio.gather(*writes)
        assert seqs[0::2] == [1, 2] and seqs[1::2] == [1, 2]  # each stream's own sequences
        await batches.stop()
    finally:
        await close_store(store)


@pytest.mark.slow
async def test_leaders_gathered_on_one_server_are_spread_by_a_preferred_stepdown() -> None:
    """On 3 servers, R3: the 4 streams' leaders moved onto one server (each asked to step
    down preferring it), ``spread_leaders`` asks two of them to move and the servers do."""
    with JetStreamCluster(3) as cluster:
        store = await open_replicated_store(cluster.urls[0], f"L{uuid.uuid4().hex[:8]}")
        requests, layout = store.requests, store.layout
        try:
            streams = [layout.messages, *(f"{layout.messages}_{i}" for i in range(1, 4))]
            for index, name in enumerate(streams[1:], start=1):  # (a layout of 4, by hand)
                config = {"name": name, "storage": "file", "num_replicas": 3}
                config |= message_config(Layout(layout.name, 4), index)
                await requests.api(f"STREAM.CREATE.{name}", config)

            async def leaders() -> list[str]:
                infos = [await requests.api(f"STREAM.INFO.{n}", None, again=1) for n in streams]
                return [str((info.get("cluster") or {}).get("leader")) for info in infos]

            await until(lambda: _all_led(leaders), timeout=60, what="every stream led")
            crowded = (await leaders())[0]
            for name in streams:
                if (await leaders())[streams.index(name)] != crowded:
                    body = {"placement": {"preferred": crowded}}
                    await requests.api(f"STREAM.LEADER.STEPDOWN.{name}", body)

            async def on(server: str) -> bool:
                return set(await leaders()) == {server}

            await until(lambda: on(crowded), timeout=60, what=f"every leader on {crowded}")
            moved = await spread_leaders(requests, streams)
            assert len(moved) == 2 and crowded not in moved.values()

            async def spread() -> bool:
                placed = await leaders()
                return max(placed.count(server) for server in set(placed)) == 2

            await until(spread, timeout=60, what="the leaders spread: 2, 1, 1")
        finally:
            await store.close()
            await store.requests.connection.close()


async def _all_led(leaders: Callable[[], Awaitable[list[str]]]) -> bool:
    return "None" not in await leaders()
