"""#70, the broker's part: a sender the broker vouches for, and names made for one agent.

On a ``--credentials`` broker every stored message carries ``mq9-sender: <the agent whose
credential sent it>``, written by the broker from the subject the request came on; a header of
that name written by the client (in any case or spacing) is replaced. An open broker removes a
client's, so on the bundled broker the header always means vouched. Names derived from an
agent's own name (a waker's failed wakes, reply mailboxes) are made by that agent alone.

In process first (``Identities.handle`` on a real engine, as serve.py hands requests on after
the gate) on each store (the JetStream one an ``Engine`` on a layout of its own, as
``--store jetstream`` serves), the stored header read back after a restart; then over a real
nats-server with real clients: a second credentialed agent and a raw NATS client writing the
header themselves, and a dead letter another agent planted, which replay does not send back.
"""

from __future__ import annotations

import asyncio
import inspect
import json

import nats
import pytest
from nats.aio.msg import Msg

from mq9_broker import Broker, BrokerConfig, BrokerEngine
from mq9_broker.engine.engine import Engine
from mq9_broker.identities.gate import Identities
from mq9_broker.identities.ownership import WAKE_FAILED, digest
from mq9_broker.identities.store import IdentityStore
from mq9_broker.storage import SqliteStorage
from mq9_broker.storage.jetstream import ClusterStore
from mq9_platform import Mq9Client
from mq9_platform.a2a import mail as wire
from mq9_platform.groups import dead_letters, replay
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import Mq9Error
from testbed.support.raw_nats import socket_request
from testbed.support.store_lane import STATE_SERVER, ClusterLayout

pytest.importorskip("nkeys")  # the credentials extra

SENDER = p.HEADER_SENDER
# What a client may write to pass for alice: the header's name as nats-py reads it off the
# wire (names stripped), in other cases, and beside other headers
FORGERIES = [
    {SENDER: "alice"},
    {"MQ9-Sender": "alice"},
    {"Mq9-SENDER": "alice", "x-trace": "t1"},
    {SENDER: "alice", "mq9-key": "k1", "mq9-tags": "a,b"},
]


def senders(header: list[int] | None) -> list[str]:
    """Every value a message's ``header`` (on the wire, the block's bytes as a list of
    numbers) gives a name reading as ``mq9-sender``, in any case."""
    if not header:
        return []
    block = p.parse_header_block(bytes(header))
    return [value for name, value in block.items() if name.strip().lower() == SENDER]


# -- in process, on each store -------------------------------------------------------------------


class Place:
    """Where an engine keeps its state, opened again as a restarted broker opens it."""

    def __init__(self, kind: str, tmp_path) -> None:
        self.kind, self.path = kind, tmp_path / "state.sqlite3"
        self.layout: ClusterLayout | None = None

    async def open(self) -> BrokerEngine | Engine:
        if self.kind == "sqlite":
            return BrokerEngine(storage=SqliteStorage(self.path))
        if self.kind == "memory":
            return BrokerEngine()  # the engine's own memory
        if self.layout is None:
            self.layout = await STATE_SERVER.layout()
        else:  # the same stream and buckets, on a connection and a store of its own
            connection = await nats.connect(STATE_SERVER.urls)
            store = ClusterStore(connection, name=self.layout.store.layout.name, timeout=20.0)
            await store.open()
            self.layout = ClusterLayout(connection, store)
        return self.layout.engine()

    async def stop(self, engine: BrokerEngine | Engine) -> None:
        """The broker of ``engine`` stops: what it keeps stays."""
        if isinstance(engine, BrokerEngine):
            engine.storage.close()
        elif self.layout is not None:
            await self.layout.store.close()
            await self.layout.connection.close()

    async def drop(self) -> None:
        """Delete what the test kept in JetStream (a layout's stream and buckets)."""
        if self.layout is not None:
            await STATE_SERVER.drop(self.layout)


class Agents:
    """Requests as each principal sends them, through ``Identities.handle``."""

    def __init__(self, identities: Identities) -> None:
        self.identities = identities
        self.engine = identities.ownership.engine

    async def __call__(self, who: str, subject: str, body=b"", headers=None) -> dict:
        if isinstance(body, dict):
            body = p.encode(body)
        msg = Msg(None, subject=subject, reply=f"_INBOX.{who}.r.1", data=body, headers=headers)  # type: ignore[arg-type]
        return json.loads(await self.identities.handle(self.engine, msg))

    async def ok(self, who: str, subject: str, body=b"", headers=None) -> dict:
        answer = await self(who, subject, body, headers)
        assert answer["error"] == "", answer
        return answer


@pytest.fixture(params=["memory", "sqlite", pytest.param("jetstream", marks=pytest.mark.slow)])
async def place(request, tmp_path):
    made = Place(request.param, tmp_path)
    yield made
    await made.drop()


@pytest.fixture
def identity_store(tmp_path):
    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    for name in ("alice", "bob", "carol"):
        store.issue(name)
    yield store
    store.close()


def enforcing(store: IdentityStore, engine: BrokerEngine | Engine | None = None) -> Agents:
    return Agents(Identities(store, engine or BrokerEngine()))


async def test_the_sender_is_the_agent_that_sent_whatever_it_wrote(place, identity_store):
    """bob writes ``mq9-sender: alice`` himself (every spelling): each message says bob, once;
    alice's own says alice; FETCH and QUERY hand it back, and so does the store after a
    restart. The other headers are stored as sent."""
    agents = enforcing(identity_store, await place.open())
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    for forged in FORGERIES:
        await agents.ok("bob", p.MSG_SEND + "agent.alice", b"from bob", forged)
    await agents.ok("bob", p.MSG_SEND + "agent.alice", b"bare")  # no headers at all
    await agents.ok("alice", p.MSG_SEND + "agent.alice", b"mine", {SENDER: "bob"})

    def check(messages: list[dict]) -> None:
        assert [senders(m["header"]) for m in messages] == [["bob"]] * 5 + [["alice"]]
        forged_with_more = p.parse_header_block(bytes(messages[2]["header"]))
        assert forged_with_more["x-trace"] == "t1"
        assert p.parse_header_block(bytes(messages[3]["header"]))["mq9-tags"] == "a,b"

    check((await agents.ok("alice", p.MSG_QUERY + "agent.alice", {}))["messages"])
    fetched = await agents.ok(
        "alice", p.MSG_FETCH + "agent.alice", {"deliver": "earliest", "config": {"num_msgs": 10}}
    )
    check(fetched["messages"])
    assert (await agents.ok("alice", p.MSG_QUERY + "agent.alice", {"key": "k1"}))["messages"]
    await place.stop(agents.engine)
    if place.kind == "memory":
        return
    # a restarted broker, its state read back
    again = enforcing(identity_store, await place.open())
    try:
        check((await again.ok("alice", p.MSG_QUERY + "agent.alice", {}))["messages"])
    finally:
        await place.stop(again.engine)


async def test_a_delayed_message_carries_its_sender_too(identity_store):
    from mq9_broker import ManualClock

    clock = ManualClock()
    agents = Agents(Identities(identity_store, BrokerEngine(clock=clock)))
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    await agents.ok("bob", p.MSG_SEND + "agent.alice", b"later", {"mq9-delay": "1", SENDER: "x"})
    clock.advance(2)
    for _ in range(200):  # the delay queue delivers on the engine's next turn
        found = (await agents.ok("alice", p.MSG_QUERY + "agent.alice", {}))["messages"]
        if found:
            break
        await asyncio.sleep(0.01)
    assert [senders(m["header"]) for m in found] == [["bob"]]


async def test_an_open_broker_stores_no_senders_header(broker):
    """On an open broker nothing vouches: a client's ``mq9-sender`` is removed, so on the
    bundled broker the header's presence always means a --credentials broker wrote it."""
    async with broker.client() as client:
        await client.mailbox_create(name="open.box")
        await client.send("open.box", "forged", headers={SENDER: "alice", "x-a": "1"})
        await client.send("open.box", "plain", headers={"x-a": "2"})
        kept = await client.query("open.box")
    if broker.transport == "robustmq":  # stores the header block as the client wrote it
        assert kept[0].header == {SENDER: "alice", "x-a": "1"}
        return
    assert [m.header for m in kept] == [{"x-a": "1"}, {"x-a": "2"}]
    for spelling in ("MQ9-SENDER", " mq9-sender"):
        answer = await broker.engine.handle(p.MSG_SEND + "open.box", {spelling: "alice"}, b"raw")
        assert json.loads(answer)["error"] == ""
    raw = await broker.engine.handle(p.MSG_QUERY + "open.box", None, b"{}")
    assert [senders(m["header"]) for m in json.loads(raw)["messages"]] == [[]] * 4


async def test_a_header_holding_a_line_break_is_refused_in_process():
    """NATS splits a header block at each CRLF, so only an in-process caller can give one
    inside a value: stored, it would read back as a header of its choosing."""
    engine = BrokerEngine()
    await engine.handle(p.MAILBOX_CREATE, None, p.encode({"name": "box"}))
    answer = json.loads(
        await engine.handle(p.MSG_SEND + "box", {"x": "1\r\nmq9-sender: alice"}, b"forged")
    )
    assert answer["error"].startswith("SEND refused: header 'x' holds a line break"), answer
    listed = json.loads(await engine.handle(p.MSG_QUERY + "box", None, b"{}"))
    assert listed["messages"] == []
    async with Mq9Client(transport=engine) as client:  # the client refuses it first
        with pytest.raises(Mq9Error, match="single-line"):
            await client.send("box", "x", headers={"x": "1\r\nmq9-sender: alice"})


# -- names made for one agent --------------------------------------------------------------------


def test_the_toolkits_caller_is_named_as_the_broker_derives_it():
    """The toolkit's caller is named ``<mailbox>.calls`` by ``names.caller_name``, the rule
    the broker gives its reply mailbox to the mailbox's owner by (the names themselves:
    tests/platform/protocol/test_derived_names.py)."""
    from mq9_platform.operations import calls

    assert "caller_name(policy.agent_mailbox)" in inspect.getsource(calls._caller)


def _refused(answer: dict, *words: str) -> None:
    assert answer["error"], answer
    assert all(word in answer["error"] for word in words), answer


async def test_a_wakers_failed_wakes_are_made_by_that_agent_alone(identity_store):
    agents = enforcing(identity_store)
    alices = f"{WAKE_FAILED}.{digest('alice')}"
    for name in (alices, WAKE_FAILED, f"{WAKE_FAILED}.{digest('nobody')}", WAKE_FAILED + ".x"):
        _refused(await agents("bob", p.MAILBOX_CREATE, {"name": name}), "CREATE refused")
    _refused(await agents("alice", p.MAILBOX_CREATE, {"name": WAKE_FAILED}), "per agent")
    # the legitimate use: alice's waker sets a wake aside and lists it; bob may do neither
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": alices})
    await agents.ok("alice", p.MSG_SEND + alices, b"a wake that failed")
    _refused(await agents("bob", p.MSG_SEND + alices, b"forged"), "SEND refused")
    _refused(await agents("bob", p.MSG_QUERY + alices, {}), "QUERY refused")
    kept = await agents.ok("alice", p.MSG_QUERY + alices, {})
    assert [m["payload"] for m in kept["messages"]] == ["a wake that failed"]
    bobs = f"{WAKE_FAILED}.{digest('bob')}"
    await agents.ok("bob", p.MAILBOX_CREATE, {"name": bobs})


async def test_reply_mailboxes_derived_from_an_agent_are_its_own(identity_store):
    agents = enforcing(identity_store)
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    # named after alice's credential, her mailbox, or her mailbox's toolkit caller
    derived = [
        wire.caller_address("alice"),
        wire.caller_address("agent.alice"),
        wire.caller_address("agent.alice.calls"),
    ]
    tenants = [f"{wire.CALLS_ROOT}{digest('alice')}.{t}" for t in ("t1", "gateway.bob")]
    for name in derived + tenants:
        _refused(await agents("bob", p.MAILBOX_CREATE, {"name": name}), "CREATE refused")
    # a credential issued while the broker runs: its names are its own at once
    identity_store.issue("dave")
    _refused(
        await agents("bob", p.MAILBOX_CREATE, {"name": wire.caller_address("dave")}),
        "another agent",
    )
    await agents.ok("dave", p.MAILBOX_CREATE, {"name": wire.caller_address("dave")})
    # a mailbox made later makes the names derived from it its owner's from then on
    await agents.ok("carol", p.MAILBOX_CREATE, {"name": "agent.carol"})
    _refused(
        await agents("bob", p.MAILBOX_CREATE, {"name": wire.caller_address("agent.carol.calls")}),
        "CREATE refused",
    )
    # the legitimate use: alice makes each of them, and calls with one
    for name in derived + tenants:
        await agents.ok("alice", p.MAILBOX_CREATE, {"name": name})
    await agents.ok("bob", p.MAILBOX_CREATE, {"name": "agent.bob"})
    reply = derived[2]
    await agents.ok("alice", p.MSG_SEND + "agent.bob", b"do it", {wire.HEADER_REPLY_TO: reply})
    await agents.ok("bob", p.MSG_SEND + reply, b"done")
    _refused(await agents("carol", p.MSG_SEND + reply, b"forged"), "SEND refused")
    # carol naming alice's reply mailbox in a call to herself grants herself nothing
    await agents.ok("carol", p.MSG_SEND + "agent.carol", b"x", {wire.HEADER_REPLY_TO: reply})
    _refused(await agents("carol", p.MSG_SEND + reply, b"forged"), "SEND refused")
    got = await agents.ok("alice", p.MSG_QUERY + reply, {})
    assert [(m["payload"], senders(m["header"])) for m in got["messages"]] == [("done", ["bob"])]


REPLY_REFUSED = "SEND refused: mq9-reply-to "


async def test_a_send_names_only_a_reply_mailbox_of_its_senders(identity_store):
    """#70's two attacks left open: carol (her own credential) naming bob's reply mailbox in
    requests to alice's agent, which would leave the states of carol's tasks there, under ids
    of her choosing. Each such SEND is refused in one line and stores nothing, in every
    spelling of the header's name; bob's call, carol's with her own reply mailbox and a SEND
    into one's own mailbox carrying another's (a dead letter) still go."""
    agents = enforcing(identity_store)
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    await agents.ok("bob", p.MAILBOX_CREATE, {"name": "agent.bob"})
    bobs = wire.caller_address("bob")
    await agents.ok("bob", p.MAILBOX_CREATE, {"name": bobs})
    carols = wire.caller_address("carol")  # hers to make, not made yet
    for named in (
        {wire.HEADER_REPLY_TO: bobs},
        {"MQ9-Reply-To": bobs},
        {" mq9-reply-to ": bobs, "x-trace": "t"},  # a reader strips names (parse_header_block)
        {"Mq9-reply-to": bobs, wire.HEADER_REPLY_TO: bobs.upper()},
        {wire.HEADER_REPLY_TO: "agent.bob"},  # an ordinary mailbox of bob's
        {wire.HEADER_REPLY_TO: wire.caller_address("nobody.made")},  # a mailbox nobody made
        {wire.HEADER_REPLY_TO: carols},  # derived from her id, but she has not made it
        {wire.HEADER_REPLY_TO: "x" * 5000},  # no mailbox at all: the same one line
    ):
        said = await agents("carol", p.MSG_SEND + "agent.alice", b"carol's task", named)
        _refused(said, REPLY_REFUSED, "is not a mailbox of yours")
        assert "\n" not in said["error"] and len(said["error"]) < 400, said
    # one of her own beside bob's: refused all the same
    both = {wire.HEADER_REPLY_TO: bobs, "MQ9-REPLY-TO": carols}
    await agents.ok("carol", p.MAILBOX_CREATE, {"name": carols})
    _refused(await agents("carol", p.MSG_SEND + "agent.alice", b"x", both), REPLY_REFUSED)
    assert (await agents.ok("alice", p.MSG_QUERY + "agent.alice", {}))["messages"] == []
    # the legitimate uses: carol's own reply mailbox, an empty header (none), bob's call
    await agents.ok("carol", p.MSG_SEND + "agent.alice", b"mine", {wire.HEADER_REPLY_TO: carols})
    await agents.ok("carol", p.MSG_SEND + "agent.alice", b"none", {wire.HEADER_REPLY_TO: ""})
    await agents.ok("bob", p.MSG_SEND + "agent.alice", b"bob's", {wire.HEADER_REPLY_TO: bobs})
    await agents.ok("alice", p.MSG_SEND + bobs, b"answered")  # granted by bob's call
    # alice, granted bob's reply mailbox, still may not hand it on to another agent
    _refused(
        await agents("alice", p.MSG_SEND + "agent.bob", b"x", {wire.HEADER_REPLY_TO: bobs}),
        REPLY_REFUSED,
    )
    # into one's own mailbox (its dead letters, a replay) any reply-to goes, and grants nothing
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": "agent.alice.dlq"})
    for own in ("agent.alice", dead_letters.dead_letter_address("agent.alice")):
        await agents.ok("alice", p.MSG_SEND + own, b"bob's again", {wire.HEADER_REPLY_TO: bobs})
    await agents.ok("carol", p.MAILBOX_CREATE, {"name": "agent.carol"})
    await agents.ok("carol", p.MSG_SEND + "agent.carol", b"x", {wire.HEADER_REPLY_TO: bobs})
    _refused(await agents("carol", p.MSG_SEND + bobs, b"forged"), "SEND refused")
    kept = await agents.ok("alice", p.MSG_QUERY + "agent.alice", {})
    assert [(m["payload"], senders(m["header"])) for m in kept["messages"]] == [
        ("mine", ["carol"]),
        ("none", ["carol"]),
        ("bob's", ["bob"]),
        ("bob's again", ["alice"]),
    ]


async def test_a_tenants_reply_mailbox_is_its_gateways_to_name(identity_store):
    """The gateway (alice's credential) makes and names mq9.calls.<digest of alice>.<...>;
    bob, who may not make it, may not name it either."""
    agents = enforcing(identity_store)
    await agents.ok("carol", p.MAILBOX_CREATE, {"name": "agent.carol"})
    tenant = f"{wire.CALLS_ROOT}{digest('alice')}.gateway.t1"
    _refused(
        await agents("alice", p.MSG_SEND + "agent.carol", b"x", {wire.HEADER_REPLY_TO: tenant}),
        REPLY_REFUSED,  # not made yet
    )
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": tenant})
    await agents.ok("alice", p.MSG_SEND + "agent.carol", b"x", {wire.HEADER_REPLY_TO: tenant})
    _refused(
        await agents("bob", p.MSG_SEND + "agent.carol", b"y", {wire.HEADER_REPLY_TO: tenant}),
        REPLY_REFUSED,
    )


async def test_other_reply_mailboxes_are_the_first_makers_and_nothing_else_is_made(
    identity_store,
):
    agents = enforcing(identity_store)
    # names no agent's: a pinned caller name, a random one (the first to make it owns it)
    for name in (wire.caller_address("billing-caller"), wire.CALLS_ROOT + wire.new_id()):
        await agents.ok("bob", p.MAILBOX_CREATE, {"name": name})
        _refused(await agents("alice", p.MAILBOX_CREATE, {"name": name}), "another agent")
    await agents.ok("bob", p.MAILBOX_CREATE, {"name": "mq9.wake.index"})
    await agents.ok("alice", p.MSG_SEND + "mq9.wake.index", b"a digest")
    # what the library never derives under its reserved root is made by nobody
    for name in ("mq9", "mq9.mine", "mq9.wake.other", "mq9.calls"):
        _refused(await agents("alice", p.MAILBOX_CREATE, {"name": name}), "CREATE refused")


# -- over a real nats-server, real clients -------------------------------------------------------


@pytest.fixture(params=["memory", "sqlite"])
async def credentialed(request, tmp_path):
    """``mq9-dev-broker --credentials`` started from Python on a nats-server of its own, on
    the store named; alice, mallory and bob's credentials."""
    data = tmp_path / "state.sqlite3" if request.param == "sqlite" else None
    config = BrokerConfig(port=0, credentials=tmp_path, data=data, search=False)
    async with Broker(config, say=lambda _: None) as broker:
        issued = {name: await broker.issue(name) for name in ("alice", "mallory", "bob")}
        yield broker, issued


@pytest.mark.slow
async def test_a_second_agent_and_a_raw_client_cannot_pass_for_alice(credentialed):
    broker, issued = credentialed
    url = broker.url
    async with (
        Mq9Client(url, credential=issued["alice"]) as alice,
        Mq9Client(url, credential=issued["mallory"]) as mallory,
    ):
        await alice.mailbox_create(name="agent.alice")
        await mallory.send("agent.alice", "client", headers={SENDER: "alice"})
        # a raw nats-py client with mallory's credential, the header in two spellings
        raw = await nats.connect(
            url.replace("nats://", f"nats://{issued['mallory']}@", 1),
            inbox_prefix=b"_INBOX.mallory",
        )
        try:
            answer = await raw.request(
                "$mq9.U.mallory.AI.MSG.SEND.agent.alice",
                b"raw",
                timeout=10,
                headers={SENDER: "alice", "MQ9-SENDER": "alice"},
            )
            assert json.loads(answer.data)["error"] == ""
        finally:
            await raw.close()
        # bytes nats-py would not write: the name spaced out, the header twice
        block = b"NATS/1.0\r\n  mq9-sender  :alice\r\nmq9-sender: alice\r\n\r\n"
        data = await asyncio.to_thread(
            socket_request,
            url,
            b"$mq9.U.mallory.AI.MSG.SEND.agent.alice",
            b"socket",
            block,
            login=issued["mallory"],
        )
        assert data is not None and json.loads(data)["error"] == ""
        await alice.send("agent.alice", "mine", headers={SENDER: "mallory"})
        kept = await alice.query("agent.alice")
        assert [(m.payload, m.header) for m in kept] == [
            (b"client", {SENDER: "mallory"}),
            (b"raw", {SENDER: "mallory"}),
            (b"socket", {SENDER: "mallory"}),
            (b"mine", {SENDER: "alice"}),
        ]
        fetched = await alice.fetch(
            "agent.alice", group_name="readers", deliver="earliest", num_msgs=10
        )
        assert [m.header[SENDER] for m in fetched] == ["mallory"] * 3 + ["alice"]


@pytest.mark.slow
async def test_replay_sends_back_only_what_its_own_agent_set_aside(credentialed):
    """A dead-letter mailbox named by the reader is an ordinary mailbox any agent may SEND
    to: mallory plants a dead letter of alice's mailbox in it, carrying her reply address.
    Replayed, it would reach alice's agent as sent by alice; it is skipped, and alice's own
    dead letter goes back with her name."""
    broker, issued = credentialed
    url = broker.url
    async with (
        Mq9Client(url, credential=issued["alice"]) as alice,
        Mq9Client(url, credential=issued["mallory"]) as mallory,
        Mq9Client(url, credential=issued["bob"]) as bob,
    ):
        assert alice.principal == "alice"
        await alice.mailbox_create(name="agent.alice")
        await alice.mailbox_create(name="alice.failures")
        await bob.send("agent.alice", "bob's request", headers={"x-trace": "t"})
        [original] = await alice.fetch("agent.alice", group_name="workers", deliver="earliest")
        await dead_letters.store(
            alice, "alice.failures", original, mailbox="agent.alice", group="workers",
            attempts=8, reason="failed",
        )  # fmt: skip
        about = {
            "mailbox": "agent.alice", "group": "workers", "msg_id": 0, "create_time": 0,
            "key": None, "attempts": 8, "reason": "planted",
        }  # fmt: skip
        hers = wire.caller_address("mallory")  # a reply mailbox of her own: the only one
        await mallory.mailbox_create(name=hers)  # a SEND may name (#70)
        await mallory.send(
            "alice.failures",
            "mallory's request",
            headers={
                dead_letters.DEAD_LETTER_HEADER: json.dumps(about),
                wire.HEADER_REPLY_TO: hers,
                SENDER: "alice",
            },
        )
        [mine, planted] = await alice.query("alice.failures")
        letter = dead_letters.DeadLetter.read(mine)
        assert (mine.header[SENDER], letter.sender, letter.header) == (
            "alice",
            "bob",
            {"x-trace": "t"},
        )
        assert planted.header[SENDER] == "mallory"
        done = await replay(alice, "alice.failures", mailbox="agent.alice")
        assert len(done.sent) == 1 and list(done.skipped) == [planted.msg_id], done
        assert "written by the agent 'mallory'" in done.skipped[planted.msg_id]
        back = (await alice.query("agent.alice"))[-1]
        assert (back.payload, back.header) == (b"bob's request", {"x-trace": "t", SENDER: "alice"})


@pytest.mark.slow
async def test_a_dead_letter_keeps_its_callers_reply_to_and_goes_back(credentialed):
    """The SEND that names another's reply mailbox and must go: alice sets bob's call aside
    into her own dead letters, carrying his reply-to, and replays it into her mailbox. Mallory
    naming bob's reply mailbox in a SEND to alice's is refused in one line."""
    broker, issued = credentialed
    url = broker.url
    async with (
        Mq9Client(url, credential=issued["alice"]) as alice,
        Mq9Client(url, credential=issued["bob"]) as bob,
        Mq9Client(url, credential=issued["mallory"]) as mallory,
    ):
        await alice.mailbox_create(name="agent.alice")
        reply = wire.caller_address("bob")
        await bob.mailbox_create(name=reply)
        await bob.send("agent.alice", "bob's call", headers={wire.HEADER_REPLY_TO: reply})
        with pytest.raises(Mq9Error, match=r"^SEND refused: mq9-reply-to .* not a mailbox of"):
            await mallory.send("agent.alice", "hers", headers={wire.HEADER_REPLY_TO: reply})
        [call] = await alice.fetch("agent.alice", group_name="workers", deliver="earliest")
        dlq = dead_letters.dead_letter_address("agent.alice")
        await dead_letters.store(
            alice, dlq, call, mailbox="agent.alice", group="workers", attempts=8, reason="x"
        )
        done = await replay(alice, dlq)
        assert len(done.sent) == 1 and not done.skipped, done
        back = (await alice.query("agent.alice"))[-1]
        assert (back.payload, back.header) == (
            b"bob's call",
            {wire.HEADER_REPLY_TO: reply, SENDER: "alice"},
        )
