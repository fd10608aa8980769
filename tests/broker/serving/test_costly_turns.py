"""Costly requests take turns by requester (the dev broker's serve.py; issue #35's hostile
client, publishing without waiting): a REGISTER, a DISCOVER or a QUERY of many tags of one
requester runs at most ``at_once`` at a time, the rest wait unread, and beyond what may wait
each is answered at once with an error; another requester's run meanwhile. What runs is bounded
in all too (``running_in_all``), so a client making up a reply inbox per request (issue #52)
gets no more than that. A FETCH's wait and a small QUERY (a group reader's claim lookup) are
never held back.

The engine underneath is the real one; it holds the requests it is given until the test lets
them go, so that what runs at once can be counted."""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from mq9_broker import BrokerEngine
from mq9_broker.identities.gate import Identities
from mq9_broker.identities.store import IdentityStore
from mq9_broker.serving.serve import NatsService
from mq9_wire import protocol as p
from testbed.nats_server import start_nats_server
from testbed.support.credentials_support import as_principal, ask, ok

BOX = "turns.box"
QUERY = p.encode({"tags": [f"tag{i}" for i in range(1_000)]})  # above LARGE_BODY: costly
SMALL_QUERY = p.encode({"key": "claim.1"})  # a group reader's claim lookup


class HeldEngine(BrokerEngine):
    """A broker engine that holds QUERYs and FETCHes until ``go`` is set, counting them."""

    def __init__(self) -> None:
        super().__init__()
        self.go = asyncio.Event()
        self.running = {p.MSG_QUERY: 0, p.MSG_FETCH: 0}
        self.most = dict(self.running)

    async def handle(self, subject, headers, body, requester=None):
        kind = next((k for k in self.running if subject.startswith(k)), None)
        if kind is None:
            return await super().handle(subject, headers, body, requester)
        self.running[kind] += 1
        self.most[kind] = max(self.most[kind], self.running[kind])
        try:
            await self.go.wait()
            return await super().handle(subject, headers, body, requester)
        finally:
            self.running[kind] -= 1


async def _until(condition) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the broker never got there")


class Requester:
    """A client with its own inbox, publishing requests without waiting for their answers."""

    def __init__(self, connection) -> None:
        self.connection = connection
        self.inbox = connection.new_inbox()
        self.answers: asyncio.Queue = asyncio.Queue()
        self.sent = 0

    async def start(self) -> Requester:
        await self.connection.subscribe(f"{self.inbox}.*", cb=self.answers.put)
        return self

    async def publish(self, subject: str, body: bytes, times: int = 1) -> None:
        for _ in range(times):
            await self.connection.publish(subject, body, reply=f"{self.inbox}.{self.sent}")
            self.sent += 1
        await self.connection.flush()

    async def answers_now(self, count: int) -> list[dict]:
        return [
            json.loads((await asyncio.wait_for(self.answers.get(), 5)).data) for _ in range(count)
        ]


async def _service(nats_server, engine, at_once, waiting, in_all, running_in_all=8):
    main = await nats.connect(nats_server.url)
    service = NatsService(engine, main)
    service.at_once, service.waiting, service.waiting_in_all = at_once, waiting, in_all
    service.running_in_all = running_in_all
    await service.start()
    setup = await nats.connect(nats_server.url)
    await setup.request(p.MAILBOX_CREATE, p.encode({"name": BOX}), timeout=5)
    await setup.close()
    return service, main


@pytest.mark.slow
async def test_a_requester_s_costly_requests_take_turns_and_the_rest_are_refused(nats_server):
    engine = HeldEngine()
    service, main = await _service(nats_server, engine, at_once=2, waiting=4, in_all=100)
    hog_connection, other_connection = [await nats.connect(nats_server.url) for _ in range(2)]
    try:
        hog = await Requester(hog_connection).start()
        other = await Requester(other_connection).start()
        await hog.publish(p.query_subject(BOX), QUERY, times=10)
        # two run, four wait their turn, four are answered at once
        refused = await hog.answers_now(4)
        assert all("4 of your requests" in r["error"] for r in refused), refused
        assert "ask again once your earlier ones are answered" in refused[0]["error"]
        await _until(lambda: engine.running[p.MSG_QUERY] == 2)
        # another requester's runs while the first's wait
        await other.publish(p.query_subject(BOX), QUERY)
        await _until(lambda: engine.running[p.MSG_QUERY] == 3)
        engine.go.set()
        answered = await hog.answers_now(6) + await other.answers_now(1)
        assert [a["error"] for a in answered] == [""] * 7
        assert engine.most[p.MSG_QUERY] == 3
        assert hog.answers.empty() and other.answers.empty()
    finally:
        await service.stop()
        for connection in (hog_connection, other_connection, main):
            await connection.close()


@pytest.mark.slow
async def test_what_waits_in_all_is_bounded_too(nats_server):
    engine = HeldEngine()
    service, main = await _service(nats_server, engine, at_once=1, waiting=10, in_all=2)
    connections = [await nats.connect(nats_server.url) for _ in range(2)]
    try:
        first, second = [await Requester(c).start() for c in connections]
        await first.publish(p.query_subject(BOX), QUERY, times=3)  # one runs, two wait
        await _until(lambda: engine.running[p.MSG_QUERY] == 1)
        await second.publish(p.query_subject(BOX), QUERY, times=2)  # one runs, one refused
        [refused] = await second.answers_now(1)
        assert refused["error"].startswith("2 requests that search, register or query wait")
        assert first.answers.empty()
        engine.go.set()
        answered = await first.answers_now(3) + await second.answers_now(1)
        assert [a["error"] for a in answered] == [""] * 4
    finally:
        await service.stop()
        for connection in (*connections, main):
            await connection.close()


@pytest.mark.slow
async def test_fetches_and_claim_lookups_run_together_whatever_the_turns(nats_server):
    """Long-poll readers (a group's many workers on one connection) cost nothing waiting, nor
    do their claim lookups: twenty FETCHes and twenty small QUERYs of one requester all run at
    once though only one costly request may."""
    engine = HeldEngine()
    service, main = await _service(nats_server, engine, at_once=1, waiting=1, in_all=1)
    connection = await nats.connect(nats_server.url)
    try:
        reader = await Requester(connection).start()
        fetch = p.encode({"group_name": "g", "config": {"max_wait_ms": 0}})
        await reader.publish(p.fetch_subject(BOX), fetch, times=20)
        await reader.publish(p.query_subject(BOX), SMALL_QUERY, times=20)
        await _until(lambda: engine.running == {p.MSG_FETCH: 20, p.MSG_QUERY: 20})
        engine.go.set()
        assert [a["error"] for a in await reader.answers_now(40)] == [""] * 40
    finally:
        await service.stop()
        for c in (connection, main):
            await c.close()


@pytest.mark.slow
async def test_stopping_starts_nothing_that_waits(nats_server):
    engine = HeldEngine()
    service, main = await _service(nats_server, engine, at_once=1, waiting=5, in_all=5)
    connection = await nats.connect(nats_server.url)
    try:
        hog = await Requester(connection).start()
        await hog.publish(p.query_subject(BOX), QUERY, times=4)  # one runs, three wait
        await _until(lambda: engine.running[p.MSG_QUERY] == 1)
        await asyncio.wait_for(service.stop(), 5)
        assert engine.running[p.MSG_QUERY] == 0 and engine.most[p.MSG_QUERY] == 1
    finally:
        await connection.close()
        await main.close()


@pytest.mark.slow
async def test_a_new_reply_inbox_per_request_buys_no_more_running_or_waiting(nats_server):
    """Issue #52's flood: one connection publishes costly QUERYs, each under a reply inbox of
    its own (a requester of its own). Before the bound in all, every one of them ran at once
    (0 of 1,000 refused, +227-305 MB held); now running_in_all run, waiting_in_all wait and the
    rest are refused at once, while another client's SEND is answered meanwhile."""
    engine = HeldEngine()
    service, main = await _service(
        nats_server, engine, at_once=2, waiting=4, in_all=10, running_in_all=3
    )
    flooder_connection, other = [await nats.connect(nats_server.url) for _ in range(2)]
    try:
        answers: asyncio.Queue = asyncio.Queue()
        await flooder_connection.subscribe("flood.>", cb=answers.put)
        for i in range(50):
            await flooder_connection.publish(p.query_subject(BOX), QUERY, reply=f"flood.{i}.0")
        await flooder_connection.flush()
        refused = [json.loads((await asyncio.wait_for(answers.get(), 5)).data) for _ in range(37)]
        assert all(r["error"].startswith("10 requests that search") for r in refused), refused
        await _until(lambda: engine.running[p.MSG_QUERY] == 3)
        sent = await other.request(p.send_subject(BOX), b"meanwhile", timeout=5)
        assert json.loads(sent.data)["error"] == ""
        assert answers.empty() and engine.most[p.MSG_QUERY] == 3
        engine.go.set()
        answered = [json.loads((await asyncio.wait_for(answers.get(), 5)).data) for _ in range(13)]
        assert [a["error"] for a in answered] == [""] * 13
        assert engine.most[p.MSG_QUERY] == 3
    finally:
        await service.stop()
        for connection in (flooder_connection, other, main):
            await connection.close()


class OrderedEngine(HeldEngine):
    """A held engine that notes whose QUERY starts, in order (the first tag names whose)."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[str] = []

    async def handle(self, subject, headers, body):
        if subject.startswith(p.MSG_QUERY):
            self.started.append(json.loads(body)["tags"][0])
        return await super().handle(subject, headers, body)


@pytest.mark.slow
async def test_requesters_with_requests_waiting_take_turns(nats_server):
    """When a place frees, the requester that just ran goes behind the others waiting."""
    engine = OrderedEngine()
    service, main = await _service(
        nats_server, engine, at_once=1, waiting=10, in_all=10, running_in_all=1
    )
    connections = [await nats.connect(nats_server.url) for _ in range(2)]
    try:
        first, second = [await Requester(c).start() for c in connections]
        tagged = {
            name: p.encode({"tags": [name] + [f"tag{i}" for i in range(1_000)]})
            for name in ("first", "second")
        }
        await first.publish(p.query_subject(BOX), tagged["first"], times=3)
        await _until(lambda: engine.started == ["first"])
        await second.publish(p.query_subject(BOX), tagged["second"], times=3)
        # the broker reads a connection's requests in order: once this SEND is answered, the
        # three QUERYs before it are waiting their turn
        await connections[1].request(p.send_subject(BOX), b"after", timeout=5)
        engine.go.set()
        answered = await first.answers_now(3) + await second.answers_now(3)
        assert [a["error"] for a in answered] == [""] * 6
        # first's first ran alone; then first (queued first), second, first, second, second
        assert engine.started == ["first", "first", "second", "first", "second", "second"]
    finally:
        await service.stop()
        for c in (*connections, main):
            await c.close()


@pytest.mark.slow
async def test_a_stopped_service_answers_what_runs_and_what_waits(nats_server):
    """Stopping (SIGTERM, or ``Broker.stop()``) leaves no requester to its
    timeout: what runs is told it may or may not have been carried out, what waits its turn
    that nothing of it was done, in the words the caller gives."""
    engine = HeldEngine()
    service, main = await _service(nats_server, engine, at_once=1, waiting=10, in_all=10)
    connection = await nats.connect(nats_server.url)
    try:
        requester = await Requester(connection).start()
        await requester.publish(p.query_subject(BOX), QUERY, times=3)  # one runs, two wait
        await _until(lambda: engine.running[p.MSG_QUERY] == 1)
        await service.stop(unfinished="cut while answering", unread="never read")
        told = sorted(answer["error"] for answer in await requester.answers_now(3))
        assert told == ["cut while answering", "never read", "never read"]
        assert requester.answers.empty()
    finally:
        await service.stop()
        for opened in (connection, main):
            await opened.close()


@pytest.mark.slow  # a nats-server process
async def test_an_agent_making_up_inboxes_takes_its_own_turns_only(tmp_path):
    """#53's broker knows who asks: alice, logged in, may make up any reply inbox under her
    own (``_INBOX.alice.<anything>``), and floods costly QUERYs each under a new one; they are
    all hers: `waiting` of them wait, the rest are refused in her words, and bob's QUERY still
    waits its turn and is answered (keyed by inbox, alice's flood filled what waits in all and
    bob was refused)."""
    pytest.importorskip("nkeys")  # the credentials extra
    store = IdentityStore(tmp_path / "ids.sqlite3")
    secrets = {name: store.issue(name) for name in ("alice", "bob")}
    engine = HeldEngine()
    identities = Identities(store, engine)
    server = start_nats_server(config_text=identities.issuer.server_config())
    connections = []
    try:
        await identities.start(server.url)
        main = await nats.connect(server.url, **identities.broker_login())
        connections.append(main)
        service = NatsService(engine, main, identities=identities)
        service.at_once, service.waiting, service.waiting_in_all = 1, 4, 10
        service.running_in_all = 1
        await service.start()
        agents = {}
        for name, secret in secrets.items():
            agents[name] = await nats.connect(
                server.url.replace("nats://", f"nats://{name}:{secret}@"),
                inbox_prefix=f"_INBOX.{name}".encode(),
            )
            connections.append(agents[name])
            await ok(agents[name], name, p.MAILBOX_CREATE, {"name": f"{name}.box"})
        alice, bob = agents["alice"], agents["bob"]
        answers: asyncio.Queue = asyncio.Queue()
        await alice.subscribe("_INBOX.alice.flood.>", cb=answers.put)
        subject = as_principal("alice", p.query_subject("alice.box"))
        for i in range(30):  # 1 runs, 4 wait, 25 refused
            await alice.publish(subject, QUERY, reply=f"_INBOX.alice.flood.{i}.0")
        await alice.flush()
        refused = [json.loads((await asyncio.wait_for(answers.get(), 5)).data) for _ in range(25)]
        assert all(r["error"].startswith("4 of your requests") for r in refused), refused
        bobs = asyncio.ensure_future(ask(bob, "bob", p.query_subject("bob.box"), QUERY))
        await _until(lambda: service._queued_in_all == 5)  # bob's waits its turn
        engine.go.set()
        assert (await bobs)["error"] == ""
        answered = [json.loads((await asyncio.wait_for(answers.get(), 5)).data) for _ in range(5)]
        assert [a["error"] for a in answered] == [""] * 5
        await service.stop()
    finally:
        for connection in connections:
            await connection.close()
        await identities.stop()
        server.stop()
