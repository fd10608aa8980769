"""The JetStream store (issue #55): the broker's state in a replicated JetStream stream.

The restart tests of test_durability.py run here unchanged on a ``JetStreamStorage`` (their
``durable`` fixture is replaced by one over a stream of the test's own on a JetStream
nats-server): mailboxes, messages and msg_ids (none reused), group offsets, the registry and
its search index, delayed messages and TTLs on the injected clock. Then what only this store
has: an answer only after JetStream acknowledged the change, and a 3-server cluster losing the
server of the stream's leader (SIGKILL) with nothing acknowledged lost.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable

import nats
import nats.errors
import pytest
import test_durability
from devbroker_helpers import DevBroker, request_ok
from jetstream_servers import JetStreamCluster, wait_serving
from test_durability import T0, Restartable, engine_state

from langchain_mq9 import protocol as p
from langchain_mq9._nats.guard import flush_in_order
from langchain_mq9.broker import BrokerEngine, ManualClock, serve_on_nats
from langchain_mq9.broker.standby.leader import LEASE_ENDED, NOT_SERVING
from langchain_mq9.broker.storage import JetStreamStorage, StorageError

pytestmark = pytest.mark.slow  # nats-server processes

# The same tests, on this store (pytest collects what the module holds)
RESTART_TESTS = (
    "test_a_dropped_group_stays_dropped_and_groups_go_with_their_log",
    "test_an_expired_mailbox_log_survives_restart",
    "test_committed_offsets_survive_and_a_fetch_commits_nothing",
    "test_delayed_messages_wait_across_a_restart",
    "test_mailbox_ttls_survive_restart",
    "test_messages_keep_every_field_and_msg_ids_are_never_reused",
    "test_offsets_by_group_name_and_huge_offsets_survive",
    "test_retention_and_the_earliest_offset_survive_restart",
    "test_the_registry_and_its_search_index_survive",
)
globals().update({name: getattr(test_durability, name) for name in RESTART_TESTS})


class OnJetStream(Restartable):
    """An engine over a JetStream stream; ``restart()`` rebuilds it from the stream."""

    def __init__(self, servers: list[str], stream: str, **options: float) -> None:
        self.servers, self.stream, self.options = servers, stream, options
        super().__init__(None, ManualClock(T0))  # type: ignore[arg-type]  # no file

    def _start(self) -> BrokerEngine:
        storage = JetStreamStorage(self.servers, stream=self.stream, **self.options)
        try:
            return BrokerEngine(clock=self.clock, storage=storage)
        except StorageError:
            storage.close()
            raise


@pytest.fixture(scope="module")
def lone_jetstream():
    with JetStreamCluster(1) as cluster:
        yield cluster


@pytest.fixture
def durable(lone_jetstream):
    broker = OnJetStream(lone_jetstream.urls, f"T{uuid.uuid4().hex[:12]}")
    yield broker
    broker.stop()


async def test_a_restored_engine_holds_exactly_the_state_written(durable):
    await durable.create("box", ttl=600)
    for i in range(20):
        await durable.send(
            "box", f"m{i}", {"mq9-priority": ("normal", "urgent", "critical")[i % 3]}
        )
    await durable.send("box", "later", {"mq9-delay": "30"})
    await durable.ack("box", "g", 4)
    await durable.ok(p.delete_subject("box", 7))
    before = engine_state(durable.engine)
    durable.restart()
    assert engine_state(durable.engine) == before
    assert durable.engine.storage.restored["messages"] == 19


async def test_a_send_is_answered_only_once_jetstream_acknowledged_it():
    """JetStream gone: the SEND is an error and nothing of it is applied; what was answered
    before is all there once JetStream is back, and its msg_id is not reused."""
    with JetStreamCluster(1) as cluster:
        broker = OnJetStream(cluster.urls, "MQ9_STATE", commit_timeout=1.0)
        try:
            await broker.create("box")
            acked = [await broker.send("box", f"kept {i}") for i in range(3)]
            cluster.servers[0].stop()
            reply = await broker.call(p.send_subject("box"), b"not acknowledged")
            assert "could not save the change" in reply["error"], reply
            assert "did not acknowledge" in reply["error"], reply
            # the memory, ahead of the stream, could not be restored: nothing is served from it
            again = await broker.call(p.query_subject("box"), {})
            assert again["error"] and "messages" not in again, again
            cluster.servers[0].start()
            broker.restart()
            assert [m["payload"] for m in await broker.query("box")] == [f"kept {i}" for i in acked]
            assert await broker.send("box", "next") == acked[-1] + 1
        finally:
            broker.stop()


def test_no_jetstream_on_the_server_is_a_clear_error(nats_server):
    with pytest.raises(StorageError, match="JetStream is not available"):
        JetStreamStorage([nats_server.url])


def test_a_record_of_another_version_is_refused_with_its_place(durable):
    durable.stop()

    async def publish() -> None:
        nc = await nats.connect(durable.servers)
        await nc.jetstream().publish(f"mq9state.{durable.stream.lower()}", b'{"v":99,"ops":[]}\n')
        await nc.close()

    asyncio.run(publish())
    with pytest.raises(StorageError, match="message 1 is not a broker record"):
        durable._start()


# -- a 3-server cluster: the stream leader's server killed -------------------------------------


async def stream_leader(servers: list[str], stream: str) -> str:
    nc = await nats.connect(servers)
    try:
        info = await nc.jetstream().stream_info(stream)
        assert info.cluster is not None
        return info.cluster.leader or ""
    finally:
        await nc.close()


async def test_the_stream_leaders_server_killed_loses_no_acknowledged_message():
    with JetStreamCluster(3) as cluster:
        broker = OnJetStream(cluster.urls, "MQ9_STATE", commit_timeout=60.0)
        try:
            assert broker.engine.storage.replicas == 3  # the default on 3 servers
            await broker.create("box")
            acked = {await broker.send("box", f"before {i}"): f"before {i}" for i in range(50)}
            leader = await stream_leader(cluster.urls, "MQ9_STATE")
            cluster.by_name(leader).kill()
            started = time.monotonic()
            first = await broker.send("box", "during the election")  # waits for the new leader
            gap = time.monotonic() - started
            acked[first] = "during the election"
            for i in range(49):
                acked[await broker.send("box", f"after {i}")] = f"after {i}"
            assert len(acked) == 100  # no msg_id handed out twice
            survivors = [s.url for s in cluster.servers if s.name != leader]
            broker.servers = survivors
            broker.restart()
            messages = broker.engine.topics["box"].messages.values()
            stored = {m.msg_id: m.payload.decode() for m in messages}
            assert stored == acked
            assert await stream_leader(survivors, "MQ9_STATE") != leader
            print(f"first SEND after the leader's server was killed answered in {gap:.2f} s")
        finally:
            broker.stop()


# -- the command line --------------------------------------------------------------------------


async def test_the_cli_keeps_its_state_in_jetstream_through_a_kill_9(lone_jetstream):
    """``--nats URL,URL --store jetstream``: answered SENDs and ACKs are in the stream, so the
    broker started again after kill -9 serves them; no msg_id is reused."""
    stream = f"CLI{uuid.uuid4().hex[:8]}"
    url = ",".join(lone_jetstream.urls * 2)  # a list, as for a cluster
    args = ("--nats", url, "--store", "jetstream", "--stream", stream, "--no-search")
    with DevBroker(*args) as broker:
        assert f"JetStream stream {stream} (1 replicas" in broker.output()
        nc = await nats.connect(lone_jetstream.urls)
        try:
            await request_ok(nc, p.MAILBOX_CREATE, {"name": "cli.box"})
            ids = [
                (await request_ok(nc, p.send_subject("cli.box"), f"m{i}".encode()))["msg_id"]
                for i in range(5)
            ]
            ack = {"group_name": "g", "mail_address": "cli.box", "msg_id": 2}
            await request_ok(nc, p.ack_subject("cli.box"), ack)
            broker.kill()
            with DevBroker(*args) as again:
                wait_serving(again)  # once the killed one's leader lock expired
                assert "restored 1 mailboxes, 5 messages" in again.output()
                fetch = {"group_name": "g", "deliver": "earliest", "config": {"max_wait_ms": 0}}
                reply = await request_ok(nc, p.fetch_subject("cli.box"), fetch)
                assert [m["msg_id"] for m in reply["messages"]] == ids[3:]
                sent = await request_ok(nc, p.send_subject("cli.box"), b"after")
                assert sent["msg_id"] == ids[-1] + 1
        finally:
            await nc.close()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--store", "jetstream"), "pass --nats"),
        (("--store", "jetstream", "--nats", "nats://127.0.0.1:1", "--data", "x"), "--data"),
        (("--store", "sqlite"), "needs --data"),
        (("--replicas", "3"), "--replicas is for --store jetstream"),
    ],
)
def test_contradicting_store_options_are_refused_in_words(args, words):
    broker = DevBroker(*args, wait=False)
    assert broker.wait_exit() == 1
    assert words in broker.output()


async def test_a_message_too_large_for_a_jetstream_record_is_refused_at_once(durable):
    """The lone server's max_payload is 1 MiB, as the SEND's limit: a message near it does not
    fit in its record; the SEND says so at once (not after the retries) and nothing changes."""
    await durable.create("box")
    started = time.monotonic()
    reply = await durable.call(p.send_subject("box"), b"x" * 1_048_440)
    assert "more than the NATS server's max_payload" in reply["error"], reply
    assert time.monotonic() - started < durable.engine.storage.commit_timeout
    assert await durable.query("box") == []
    assert await durable.send("box", "small") == 0


async def send_through_reconnect(nc, address: str, payload: str) -> dict:
    """A SEND, sent again while nothing listens (the broker's own connection was on the killed
    server and reconnects) or while the broker stands by (its leader lock's bucket had its
    leader there: broker/standby/): such a request was not stored. Answered within the broker's
    15 s of retries, or its error says why: LEASE_ENDED when the broker's lease ended while it
    answered (stored or not); ``no answer`` when none came: a request published as the killed
    server's routes closed can be forwarded to it and lost (core NATS, docs/deploy.md)."""
    deadline = time.monotonic() + 30
    while True:
        try:
            reply = await nc.request(p.send_subject(address), payload.encode(), timeout=20)
        except nats.errors.NoRespondersError:
            assert time.monotonic() < deadline, "the broker did not come back in 30 s"
            await asyncio.sleep(0.1)
            continue
        except nats.errors.TimeoutError:  # longer than the broker's 15 s of retries
            return {"error": "no answer"}
        answer = json.loads(reply.data)
        if answer["error"] == LEASE_ENDED:
            return answer
        if answer["error"] != NOT_SERVING:
            assert answer["error"] == "", answer
            return answer
        await asyncio.sleep(0.1)


async def test_the_cli_broker_serves_on_through_the_loss_of_the_stream_leaders_server():
    """``mq9-dev-broker --nats A,B,C --store jetstream`` on 3 servers: SIGKILL of the server
    holding the stream's leader; the broker answers again once a new leader is elected, and
    every SEND it answered with a msg_id is stored, none twice."""
    with JetStreamCluster(3) as cluster:
        args = ("--nats", ",".join(cluster.urls), "--store", "jetstream", "--no-search")
        with DevBroker(*args) as broker:
            assert "JetStream stream MQ9_STATE (3 replicas" in broker.output()
            leader = await stream_leader(cluster.urls, "MQ9_STATE")
            survivors = [s.url for s in cluster.servers if s.name != leader]
            nc = await nats.connect(survivors, max_reconnect_attempts=-1)
            try:
                await request_ok(nc, p.MAILBOX_CREATE, {"name": "ha.box"})
                acked: dict[int, str] = {}
                maybe: dict[str, str] = {}  # "may or may not have been carried out", unanswered
                for i in range(60):
                    if i == 20:
                        cluster.by_name(leader).kill()
                    payload = f"m{i}"
                    sent = await send_through_reconnect(nc, "ha.box", payload)
                    if sent["error"]:
                        maybe[payload] = sent["error"]
                        unanswered = [e for e in maybe.values() if e == "no answer"]
                        assert len(unanswered) <= 1, maybe  # one lost as the routes closed
                    else:
                        acked[sent["msg_id"]] = payload
                assert len(acked) + len(maybe) == 60
                assert any(payload in acked.values() for payload in ("m58", "m59")), maybe
                reply = await request_ok(nc, p.query_subject("ha.box"), {"limit": 100})
                stored = {m["msg_id"]: m["payload"] for m in reply["messages"]}
                assert stored.items() >= acked.items()
                assert set(stored.values()) - set(acked.values()) <= set(maybe)
            finally:
                await nc.close()


# -- the group commit ---------------------------------------------------------------------------


async def stream_records(servers: list[str], stream: str) -> int:
    nc = await nats.connect(servers)
    try:
        return (await nc.jetstream().stream_info(stream)).state.messages
    finally:
        await nc.close()


async def test_concurrent_requests_share_one_record_and_each_is_answered_after_its_ack(durable):
    """50 SENDs made while one record is under way go together in the next: far fewer
    records than requests, every SEND answered with its own msg_id, all of them replayed."""
    await durable.create("box")
    before = await stream_records(durable.servers, durable.stream)
    payloads = [f"m{i}".encode() for i in range(50)]
    replies = await asyncio.gather(
        *(durable.call(p.send_subject("box"), payload) for payload in payloads)
    )
    assert sorted(reply["msg_id"] for reply in replies) == list(range(50)), replies
    records = await stream_records(durable.servers, durable.stream) - before
    assert 1 <= records <= 5, records  # the first alone, the rest in a record or a few
    durable.restart()
    stored = {m["msg_id"]: m["payload"] for m in await durable.query("box", {"limit": 100})}
    assert stored == {reply["msg_id"]: f"m{i}" for i, reply in enumerate(replies)}


async def test_a_failed_record_answers_every_request_in_it_with_an_error_and_keeps_nothing():
    """JetStream gone while 10 SENDs and a QUERY that saw them wait: all 11 are errors (the
    QUERY shows no message that was then lost); once back, the broker serves what was
    acknowledged before, and the failed SENDs' msg_ids are handed out again (never shown)."""
    with JetStreamCluster(1) as cluster:
        broker = OnJetStream(cluster.urls, "MQ9_STATE", commit_timeout=1.0)
        try:
            await broker.create("box")
            kept = await broker.send("box", "kept")
            cluster.servers[0].stop()
            sends = [broker.call(p.send_subject("box"), f"lost {i}".encode()) for i in range(10)]
            replies = await asyncio.gather(*sends, broker.call(p.query_subject("box"), {}))
            for reply in replies:
                assert "could not save the change" in reply["error"], reply
                assert "messages" not in reply and "msg_id" not in reply, reply
            cluster.servers[0].start()
            broker.restart()
            assert [m["payload"] for m in await broker.query("box")] == ["kept"]
            assert await broker.send("box", "next") == kept + 1
        finally:
            broker.stop()


async def test_a_read_waits_for_the_writes_it_saw(durable):
    """A QUERY made while a SEND's record is under way answers only once that record is
    acknowledged: it never comes back before the SEND it shows."""
    await durable.create("box")
    finished: list[str] = []

    async def tracked(name: str, call: Awaitable[dict]) -> dict:
        reply = await call
        finished.append(name)
        return reply

    sent, seen = await asyncio.gather(
        tracked("send", durable.call(p.send_subject("box"), b"fresh")),
        tracked("query", durable.call(p.query_subject("box"), {})),
    )
    assert [m["payload"] for m in seen["messages"]] == ["fresh"]
    assert finished == ["send", "query"]
    assert sent["msg_id"] == 0


async def test_concurrent_writers_through_the_loss_of_the_stream_leaders_server():
    """4 writers SEND at once while the server holding the stream's leader is SIGKILLed:
    every SEND answered with a msg_id is stored after the election, none twice; a SEND that
    failed said so."""
    with JetStreamCluster(3) as cluster:
        broker = OnJetStream(cluster.urls, "MQ9_STATE", commit_timeout=60.0)
        try:
            await broker.create("box")
            leader = await stream_leader(cluster.urls, "MQ9_STATE")
            acked: dict[int, str] = {}
            failed: list[str] = []

            async def writer(w: int) -> None:
                for i in range(40):
                    payload = f"w{w}-{i}"
                    reply = await broker.call(p.send_subject("box"), payload.encode())
                    if reply["error"]:
                        failed.append(reply["error"])
                    else:
                        assert reply["msg_id"] not in acked, reply  # no msg_id twice
                        acked[reply["msg_id"]] = payload
                    if w == 0 and i == 10:
                        cluster.by_name(leader).kill()

            await asyncio.gather(*(writer(w) for w in range(4)))
            assert len(acked) + len(failed) == 160
            assert all("could not save the change" in error for error in failed), failed
            broker.servers = [s.url for s in cluster.servers if s.name != leader]
            broker.restart()
            messages = broker.engine.topics["box"].messages.values()
            assert {m.msg_id: m.payload.decode() for m in messages} == acked
        finally:
            broker.stop()


async def test_served_on_nats_the_requests_behind_a_send_are_read_while_it_waits(durable):
    """On the wire: 40 SENDs sent at once are all answered, in far fewer records than
    requests (the service reads the requests behind one SEND while it waits for its ack)."""
    await durable.create("box")
    connection = await nats.connect(durable.servers)
    client = await nats.connect(durable.servers)
    service = await serve_on_nats(durable.engine, connection)
    try:
        before = await stream_records(durable.servers, durable.stream)
        replies = await asyncio.gather(
            *(request_ok(client, p.send_subject("box"), b"m%d" % i, timeout=30) for i in range(40))
        )
        assert sorted(reply["msg_id"] for reply in replies) == list(range(40))
        records = await stream_records(durable.servers, durable.stream) - before
        assert records <= 20, records
    finally:
        await service.stop()
        await client.close()
        await connection.close()


async def test_a_stopped_service_tells_each_request_waiting_for_its_record(durable):
    """The requests answered together once their record is stored (one task a record) are
    each told, when the service stops before the record is acknowledged, that it may or may
    not have been carried out: none is left to its timeout, none told twice."""
    await durable.create("box")
    storage = durable.engine.storage
    publish, under_way, released = storage._publish, asyncio.Event(), asyncio.Event()

    async def held_publish(js, data, msg_id):  # the record's write, held until released
        under_way.set()
        await released.wait()
        return await publish(js, data, msg_id)

    storage._publish = held_publish
    connection = await nats.connect(durable.servers)
    client = await nats.connect(durable.servers)
    service = await serve_on_nats(durable.engine, connection)
    answers: asyncio.Queue = asyncio.Queue()
    try:
        await client.subscribe("answers.>", cb=answers.put)
        for i in range(8):
            await client.publish(p.send_subject("box"), b"m%d" % i, reply=f"answers.{i}")
        await client.flush()
        await asyncio.wait_for(under_way.wait(), 10)
        await _until(lambda: sum(map(len, service._waiting_for_store.values())) == 8)
        await service.stop(unfinished="cut while storing")
        told = {}
        for _ in range(8):
            answer = await asyncio.wait_for(answers.get(), 5)
            told[answer.subject] = json.loads(answer.data)["error"]
        assert told == {f"answers.{i}": "cut while storing" for i in range(8)}
        await client.flush()
        assert answers.empty()
    finally:
        released.set()
        storage._publish = publish
        settling = storage.settled()
        if settling is not None:  # the held record goes on, on this loop: until it is done
            await asyncio.wait_for(asyncio.shield(settling), 30)
        await service.stop()
        await client.close()
        await connection.close()


async def _until(condition, within: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "not within the time allowed"
        await asyncio.sleep(0.01)


async def test_beyond_the_store_backlog_the_next_request_is_answered_before_another_is_read(
    durable,
):
    """A service whose backlog of requests waiting for the store is full reads no more (they
    wait in NATS): with no room at all every SEND is its own record, all still answered."""
    await durable.create("box")
    connection = await nats.connect(durable.servers)
    client = await nats.connect(durable.servers)
    service = await serve_on_nats(durable.engine, connection)
    service.store_backlog = 0
    try:
        before = await stream_records(durable.servers, durable.stream)
        replies = await asyncio.gather(
            *(request_ok(client, p.send_subject("box"), b"m%d" % i, timeout=30) for i in range(20))
        )
        assert sorted(reply["msg_id"] for reply in replies) == list(range(20))
        assert await stream_records(durable.servers, durable.stream) - before == 20
    finally:
        await service.stop()
        await client.close()
        await connection.close()


async def test_a_records_writer_answers_as_nats_pys_jetstream_publish(lone_jetstream, monkeypatch):
    """The writer's own publish (its acknowledgement taken in the read loop) against what
    ``JetStreamContext.publish`` answers on the same stream: the sequence, JetStream's error
    (a wrong expected last sequence: code 400, never retried), nothing that answers, and a
    timeout when something takes the write and never answers."""
    from nats.js.errors import APIError, NoStreamResponseError

    from langchain_mq9.broker.storage.jetstream import writer as record_writer

    url = lone_jetstream.urls[0]
    stream = f"W{uuid.uuid4().hex[:10]}"
    setup = await nats.connect(url)
    silent = await nats.connect(url)
    writer = await record_writer.RecordWriter(await nats.connect(url)).start()
    try:
        js = setup.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream}.>"])
        assert writer._inline  # on a connection nats_guard takes
        first = await js.publish(f"{stream}.x", b"by nats-py")
        ack = await writer.publish(f"{stream}.x", b"by the writer", {"Nats-Msg-Id": "w1"})
        assert ack.seq == first.seq + 1
        again = await writer.publish(f"{stream}.x", b"by the writer", {"Nats-Msg-Id": "w1"})
        assert again.seq == ack.seq  # a duplicate, answered with the record's own sequence
        with pytest.raises(APIError) as refused:
            await writer.publish(
                f"{stream}.x", b"late", {"Nats-Expected-Last-Sequence": str(first.seq)}
            )
        assert refused.value.code == 400
        with pytest.raises(NoStreamResponseError):
            await writer.publish("no.stream.here", b"", {})
        await silent.subscribe("swallowed.>")  # takes every write, answers none
        await flush_in_order(silent)
        monkeypatch.setattr(record_writer, "ATTEMPT_TIMEOUT", 0.2)
        with pytest.raises(TimeoutError):
            await writer.publish("swallowed.x", b"", {})
        assert not writer._waiting  # nothing left behind by any of them
        info = await js.stream_info(stream)
        assert info.state.messages == 2
    finally:
        await writer.close()
        await silent.close()
        await setup.close()


def test_a_stream_whose_search_index_holds_no_card_is_refused_in_words():
    """The index restore both stores share (storage/base.py ``restore_agents``): an index op
    whose agent_info reads as no A2A card fails the restore with a ``StorageError`` naming it,
    the engine filled from the stream's records as a restore fills it."""
    from langchain_mq9.broker.storage.jetstream.replay import State

    state = State()
    ops = [["as", "weather", "not a card", 1], ["is", "weather", "weather", "not a card", 1]]
    state.apply_record({"v": 2, "blobs": [0], "changes": [ops]}, b"")
    with pytest.raises(StorageError, match="'weather', which is no A2A card"):
        state.load_into(BrokerEngine())
