"""No request holds the bundled broker's event loop (issue #35).

Observed: the first REGISTER loaded the embedding model on the broker's loop (another
client's SEND waited 1.3-3.9 s behind it), every REGISTER embedded its card there, and one
semantic DISCOVER with a 12 MB query took 36.6 s there while six of another client's SENDs
timed out. Now that work runs on the engine's worker thread, and every parsed request body
has a bound fitting its command.

No timing here: the worker is held on a gate (a stand-in model that waits for it), and the
other client's SEND must be answered while the heavy request is still waiting. Before the fix
the loop itself waited on the gate, so the SEND came after (a timer opens the gate in any case:
nothing hangs). bench/hostile_loop.py measures the latencies.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mq9_wire import protocol as p
from mq9_wire import semantic
from mq9_wire.semantic.ranking import _UNSET

np = pytest.importorskip("numpy")

GATE_SECONDS = 20  # the gate opens by itself after this: a test before the fix ends too


class GatedModel:
    """A stand-in embedder: each embedding waits for the gate (on whichever thread runs it)."""

    name = "gated stand-in"

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def _vector(self, text: str):
        self.gate.wait(GATE_SECONDS)
        vector = np.zeros(semantic.DIMENSIONS, dtype=np.float32)
        vector[len(text) % semantic.DIMENSIONS] = 1.0
        return vector

    embed = embed_query = _vector


@pytest.fixture
def gate():
    opened = threading.Event()
    timer = threading.Timer(GATE_SECONDS, opened.set)
    timer.start()
    yield opened
    opened.set()
    timer.cancel()


def _card(name: str) -> dict:
    return {"name": name, "mailbox": name, "description": f"{name} translates contracts"}


async def _heavy(kind: str, broker, client, gate: threading.Event, monkeypatch):
    """Start the request of ``kind`` that waits on ``gate``; its task."""
    registry = broker.engine.search_index.ranker
    if kind == "first REGISTER loads the model":
        registry.embedder = _UNSET  # looked up on first use, as a new broker does

        def load():
            gate.wait(GATE_SECONDS)
            return GatedModel(gate)

        monkeypatch.setattr(semantic, "embedder", load)
        return asyncio.create_task(client.agent_register(_card("agent.first")))
    registry.embedder = GatedModel(gate)
    if kind == "REGISTER embeds the card":
        return asyncio.create_task(client.agent_register(_card("agent.card")))
    gate.set()
    await client.agent_register(_card("agent.indexed"))  # embedded at once: the gate is open
    gate.clear()
    return asyncio.create_task(client.agent_discover(semantic="translate a contract"))


@pytest.mark.parametrize(
    "kind",
    ["first REGISTER loads the model", "REGISTER embeds the card", "semantic DISCOVER"],
)
async def test_another_clients_send_is_answered_while_a_heavy_request_works(
    broker, gate, monkeypatch, kind
):
    async with broker.client() as heavy_client, broker.client() as other:
        await other.mailbox_create(name="other.box")
        heavy = await _heavy(kind, broker, heavy_client, gate, monkeypatch)
        await asyncio.sleep(0.05)  # the heavy request reaches the broker first
        msg_id = await other.send("other.box", "still served")
        assert not heavy.done(), "the SEND waited for the heavy request"
        gate.set()
        await asyncio.wait_for(heavy, GATE_SECONDS)
        assert msg_id == 0


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        (p.AGENT_DISCOVER, p.encode({"semantic": "translate " * 8_000})),
        (p.AGENT_DISCOVER, p.encode({"text": "translate " * 8_000})),
        (p.MAILBOX_CREATE, p.encode({"name": "desc.box", "desc": "d" * 70_000})),
        (p.AGENT_REPORT, p.encode({"name": "agent.a", "report_info": "r" * 70_000})),
        (p.query_subject("some.box"), p.encode({"tags": ["t"] * 20_000})),
    ],
    ids=["semantic query", "text query", "create", "report", "query"],
)
async def test_a_body_larger_than_its_command_needs_is_refused_unread(broker, subject, body):
    """Issue #35: a semantic DISCOVER query could be 64 MiB (what NATS carries) and was
    tokenized whole; a body above 64 KiB of a command that carries names, numbers and a query
    is refused before it is parsed, in words naming its size and the bound."""
    bound = broker.engine.limits.max_request  # the bundled broker's (RobustMQ reads any)
    reply = await broker.raw(subject, body)
    assert reply["error"] == (
        f"request body of {len(body)} bytes refused unread: this broker takes at most "
        f"{bound} bytes for {subject}"
    )


async def test_a_register_body_may_hold_a_whole_card_escaped(broker):
    """A REGISTER body takes a card of max_card_bytes with every byte escaped (``\\u00XX``)."""
    assert broker.engine.limits.max_request == 64 * 1024  # the bundled broker's bounds
    card = p.encode(p.agent_card("agent.escaped", description="A" * 60_000))
    body = card.replace(b"A" * 60_000, b"\\u0041" * 60_000)  # 360 KB, the card 60 KB
    assert len(body) > 6 * 60_000
    assert (await broker.raw(p.AGENT_REGISTER, body))["error"] == ""
    limit = 64 * 1024 + 6 * 64 * 1024
    reply = await broker.raw(p.AGENT_REGISTER, b" " * (limit + 1))
    assert reply["error"].startswith(f"request body of {limit + 1} bytes refused unread")


# -- QUERY by tags: what a request costs is what it can return ------------------------------------


class IteratedDict(dict):
    """A mailbox's tag index, counting the times a read walks all of its tags."""

    walks = 0

    def __iter__(self):
        self.walks += 1
        return super().__iter__()


async def _tagged_engine(tags_per_message: list[str]):
    from mq9_broker import BrokerEngine

    engine = BrokerEngine()
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"box","ttl":0}')
    for tags in tags_per_message:
        await engine.handle(p.MSG_SEND + "box", {p.HEADER_TAGS: tags}, b"m")
    return engine


async def _query_ids(engine, tags: list[str]) -> list[int]:
    reply = json.loads(await engine.handle(p.MSG_QUERY + "box", None, p.encode({"tags": tags})))
    assert reply["error"] == "", reply
    return [m["msg_id"] for m in reply["messages"]]


async def test_a_tag_query_finds_its_tags_without_walking_every_tag_the_mailbox_holds():
    """Issue #35 (each kind's heaviest request): a QUERY of 6,000 tags on a mailbox holding
    2,000 tags took 1.5 s on the loop, each tag comparing every tag the mailbox holds."""
    engine = await _tagged_engine([f"t{i % 50},x/y{i}" for i in range(2_000)])
    mailbox = engine.topics["box"]
    mailbox.tagged = IteratedDict(mailbox.tagged)
    assert await _query_ids(engine, [f"missing{i}" for i in range(500)]) == []
    assert (await _query_ids(engine, ["x/y7", "t3"]))[:3] == [7, 3, 53]
    assert mailbox.tagged.walks == 0


async def test_a_tag_given_again_is_read_once(monkeypatch):
    """Issue #35: ``["x"] * 6000`` read the tag (and its 2,000 sub-tags) 6,000 times: 107 s on
    the loop. The answer is the same as for the tag given once."""
    from mq9_broker.state.mailbox import Mailbox

    engine = await _tagged_engine([f"x/y{i}" for i in range(300)])
    reads: list[str] = []
    read_tag = Mailbox.read_tag
    monkeypatch.setattr(
        Mailbox, "read_tag", lambda self, tag, *a: reads.append(tag) or read_tag(self, tag, *a)
    )
    once = await _query_ids(engine, ["x"])
    assert await _query_ids(engine, ["x"] * 6_000) == once
    assert reads == ["x", "x"]


@settings(max_examples=200, deadline=None)
@given(
    carried=st.lists(st.lists(st.text("ab/0.é", min_size=1, max_size=4), max_size=3), max_size=30),
    asked=st.text("ab/0.é", min_size=1, max_size=4),
    limit=st.integers(1, 40),
)
def test_a_tag_read_finds_the_tag_and_those_below_it_in_key_order(carried, asked, limit):
    """The tags below ``asked`` are a range of the sorted tag names (from ``asked/`` to
    ``asked0``): the same messages, in the same order, as comparing every tag."""
    from mq9_broker.state.mailbox import Mailbox, StoredMessage
    from mq9_wire.protocol import Priority

    mailbox = Mailbox("box", create_time=0, ttl=0)
    for tags in carried:
        mailbox.append(StoredMessage(-1, b"", Priority.NORMAL, 0, tags=tuple(tags)))
    keys = sorted(
        (f"{tag}/{message.msg_id:020}", message.msg_id)
        for message in mailbox.messages.values()
        for tag in dict.fromkeys(message.tags)
        if tag == asked or tag.startswith(asked + "/")
    )
    expected = [msg_id for _, msg_id in keys][:limit]
    assert [m.msg_id for m in mailbox.read_tag(asked, limit, 0)] == expected


async def test_a_query_of_many_tags_lets_other_requests_through_between_its_reads():
    """Issue #35: a QUERY of thousands of tags read them all in one go on the loop (each tag up
    to 100 messages). It reads a few at a time, and a SEND that arrives meanwhile is answered
    before it ends, with the same answer as before."""
    from mq9_broker.engine.engine import QUERY_TAGS_AT_ONCE

    engine = await _tagged_engine([f"t{i % 50},x/y{i}" for i in range(500)])
    tags = [f"x/y{i}" for i in range(4 * QUERY_TAGS_AT_ONCE)]
    finished: list[str] = []
    query = asyncio.create_task(engine.handle(p.MSG_QUERY + "box", None, p.encode({"tags": tags})))
    send = asyncio.create_task(engine.handle(p.MSG_SEND + "box", None, b"meanwhile"))
    query.add_done_callback(lambda _: finished.append("query"))
    send.add_done_callback(lambda _: finished.append("send"))
    answered, _ = await asyncio.gather(query, send)
    assert finished == ["send", "query"]
    assert [m["msg_id"] for m in json.loads(answered)["messages"]] == list(range(len(tags)))


# -- bench 9d: the heaviest request of each kind, and another client's SEND -----------------------


@settings(max_examples=300, deadline=None)
@given(text=st.text("aZ0 \t\n.é\u212aİΣ-", max_size=60), piece=st.integers(1, 8))
def test_a_text_query_read_a_piece_at_a_time_has_the_words_of_the_whole(text, piece):
    """Bench 9d: a 64 KiB text query is read 4 KiB at a time (one call on all of it held
    Python's lock, and so the loop, for half a millisecond); the words are those of the whole
    text, whatever the cuts (a Kelvin sign lowers to ``k``, a dotted I to ``i``)."""
    from mq9_wire.semantic.ranking import words

    assert words(text, piece) == set(re.findall("[a-z0-9]+", text.lower()))


async def test_a_query_of_a_large_body_is_read_while_the_loop_answers_others(monkeypatch):
    """Bench 9d: a QUERY of 64 KiB of tags was parsed on the loop (1 ms; the heavy client sends
    them back to back). Its body is parsed on the worker: the stand-in parser waits for a gate,
    and a SEND that arrives meanwhile is answered before the QUERY, which then answers as
    before. Before the fix the loop itself waited on the gate, and the SEND came after."""
    import dataclasses

    import mq9_broker.engine.rules as rules_module
    from mq9_broker.engine.engine import COMMANDS

    engine = await _tagged_engine([f"x/y{i}" for i in range(300)])
    gate = threading.Event()
    query_command = COMMANDS[p.MSG_QUERY]
    parse = query_command.read

    def gated(body: bytes, limits):
        gate.wait(GATE_SECONDS)
        return parse(body, limits)

    # the QUERY's entry in the engine's table, its body read by the stand-in
    monkeypatch.setitem(COMMANDS, p.MSG_QUERY, dataclasses.replace(query_command, read=gated))
    tags = [f"x/y{i}" for i in range(20)] + ["long" * 2_000]  # read in one go
    body = p.encode({"tags": tags})
    assert len(body) > rules_module.LARGE_BODY
    finished: list[str] = []
    query = asyncio.create_task(engine.handle(p.MSG_QUERY + "box", None, body))
    query.add_done_callback(lambda _: finished.append("query"))
    await asyncio.sleep(0.05)  # the QUERY reaches its parse first
    sent = json.loads(await engine.handle(p.MSG_SEND + "box", None, b"meanwhile"))
    finished.append("send")
    gate.set()
    answered = json.loads(await asyncio.wait_for(query, GATE_SECONDS))
    assert finished == ["send", "query"]
    assert sent == {"error": "", "msg_id": 300}
    assert [m["msg_id"] for m in answered["messages"]] == list(range(20))


async def test_a_listing_shows_an_agent_registered_again_with_another_card(broker, client):
    """A listing takes each agent's item encoded once (re-encoding 1,000 cards on every
    listing held the worker 9 ms): one registered again under the same name after an
    UNREGISTER is listed with its new card, never the item encoded for the old one."""
    await client.agent_register(_card("agent.again"))
    first = await broker.raw(p.AGENT_DISCOVER, b"{}")
    await broker.raw(p.AGENT_UNREGISTER, p.encode({"name": "agent.again"}))
    again = {**_card("agent.again"), "description": "agent.again now reviews invoices"}
    await client.agent_register(again)
    listed = (await broker.raw(p.AGENT_DISCOVER, b"{}"))["agents"]
    assert [json.loads(a["agent_info"])["description"] for a in first["agents"]] == [
        "agent.again translates contracts"
    ]
    assert [json.loads(a["agent_info"])["description"] for a in listed] == [
        "agent.again now reviews invoices"
    ]


async def test_a_listing_kept_for_the_next_one_follows_every_registry_change(broker, client):
    """The listing is kept until the registry changes (a client listing back to back had the
    worker join 2 MB each time): each REGISTER and UNREGISTER shows in the next listing."""

    async def listed() -> list[str]:
        return [a["name"] for a in (await broker.raw(p.AGENT_DISCOVER, b"{}"))["agents"]]

    await client.agent_register(_card("agent.a"))
    assert await listed() == ["agent.a"]
    await client.agent_register(_card("agent.b"))
    assert await listed() == ["agent.a", "agent.b"]
    await broker.raw(p.AGENT_UNREGISTER, p.encode({"name": "agent.a"}))
    assert await listed() == ["agent.b"]
    await broker.raw(p.AGENT_UNREGISTER, p.encode({"name": "agent.b"}))
    assert await listed() == []


@pytest.mark.slow
async def test_a_large_answer_goes_out_on_its_own_connection(nats_server):
    """Bench 9d: nats-server reads a connection's bytes in order, so a SEND's answer published
    behind a 2 MB listing on the broker's one connection waited for nats-server to read and
    deliver the listing. Answers above ``BULK_ANSWER`` go out on a second connection; a SEND's
    stays on the first. The answers are those the engine gives."""
    import nats

    from mq9_broker import BrokerEngine, serve_on_nats
    from mq9_broker.serving.serve import BULK_ANSWER

    engine = BrokerEngine()
    engine.search_index.ranker.embedder = None  # the lexical ranking: no model to load
    main, bulk, requester = [await nats.connect(nats_server.url) for _ in range(3)]
    service = await serve_on_nats(engine, main, bulk)
    try:
        for i in range(40):
            card = p.agent_card(f"agent.{i}", description=f"agent {i} translates " * 200)
            registered = await requester.request(p.AGENT_REGISTER, p.encode(card), timeout=5)
            assert json.loads(registered.data) == {"error": ""}
        await requester.request(p.MAILBOX_CREATE, p.encode({"name": "small.box"}), timeout=5)
        published = (main.stats["out_msgs"], bulk.stats["out_msgs"])
        listing = await requester.request(p.AGENT_DISCOVER, b"{}", timeout=5)
        assert len(listing.data) > BULK_ANSWER
        assert listing.data == await engine.handle(p.AGENT_DISCOVER, None, b"{}")
        assert (main.stats["out_msgs"], bulk.stats["out_msgs"]) == (published[0], published[1] + 1)
        sent = await requester.request(p.send_subject("small.box"), b"small", timeout=5)
        assert json.loads(sent.data) == {"error": "", "msg_id": 0}
        assert main.stats["out_msgs"] == published[0] + 1
        assert bulk.stats["out_msgs"] == published[1] + 1
    finally:
        await service.stop()
        for connection in (requester, bulk, main):
            await connection.close()
