"""An mq9 credential in the client (issue #53): where it comes from, what it never shows, and
the prefixed form it switches to when the broker says so.

The wire tests run a real nats-server holding the contract's permissions (an agent ``alice`` may
publish only ``$mq9.U.alice.>`` and ``$mq9.AI.>`` and subscribe only ``_INBOX.alice.>``) and a
small responder playing the enforcing broker's gate: a plain request gets the marked refusal, a
prefixed one whose reply is not the principal's own inbox is dropped, the rest reach a real
``BrokerEngine``. The last tests run on the enforcing broker itself (``mq9-dev-broker
--credentials``): revocation, an agent with the toolkit, consumer groups with dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets

import nats
import pytest
from langchain.agents import create_agent
from langchain_core.messages import ToolMessage

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.serving import serve_agent
from langchain_mq9.testing import ScriptedChatModel, call
from mq9_broker import BrokerEngine, serve_on_nats
from mq9_broker.identities.gate import PLAIN_REFUSAL
from mq9_platform import Mq9Client
from mq9_platform.client.auth import (
    CREDENTIAL_ENV,
    CREDENTIAL_FILE_ENV,
    Login,
    login_for,
)
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.client.transport import NatsTransport, open_transport
from mq9_platform.groups.leases import is_reserved
from mq9_platform.groups.reader import GroupReader
from mq9_wire import protocol as p
from mq9_wire.nats_floor.guard import flush_in_order
from mq9_wire.protocol.errors import InvalidArgument, MailboxNotFound, Mq9Error, NotAllowed
from mq9_wire.protocol.subjects import PRINCIPAL_PREFIX
from testbed.nats_server import start_nats_server
from testbed.support.a2a_support import text_graph, text_io
from testbed.support.credentials_support import EnforcingBroker, issue, revoke
from testbed.support.waiting import until

SECRET = secrets.token_urlsafe(32)  # what must never show
ALICE = f"alice:{SECRET}"
BOB_SECRET = secrets.token_urlsafe(32)
BROKER_PASSWORD = secrets.token_urlsafe(16)


def _login(servers=("nats://h:4222",), environ=None, **given) -> Login:
    options = {"user": None, "password": None, "token": None, "creds": None, "credential": None}
    return login_for(list(servers), **{**options, **given}, environ=environ or {})


# -- where a credential comes from ----------------------------------------------------------


def test_a_credential_is_read_from_each_place_it_may_be_given(tmp_path):
    file = tmp_path / "alice.cred"
    file.write_text(ALICE + "\n")
    for login in (
        _login(credential=ALICE),
        _login([f"nats://{ALICE}@h:4222"]),
        _login(user="alice", password=SECRET),
        _login(environ={CREDENTIAL_ENV: ALICE}),
        _login(environ={CREDENTIAL_FILE_ENV: str(file)}),
    ):
        assert login.principal == "alice" and login.inbox_prefix == "_INBOX.alice", login
        assert SECRET not in repr(login)
    # from the URL nats-py reads user and password itself: the options stay unset
    assert _login([f"nats://{ALICE}@h:4222"]).password is None
    assert _login(environ={CREDENTIAL_ENV: ALICE}).password == SECRET


def test_what_the_caller_gives_wins_over_the_environment():
    environ = {CREDENTIAL_ENV: ALICE}
    assert _login([f"nats://bob:{BOB_SECRET}@h:1"], environ).principal == "bob"
    assert _login(environ=environ, user="bob", password=BOB_SECRET).principal == "bob"
    token = _login(environ=environ, token="t0ken")
    assert token.principal is None and token.password is None  # a token names no agent
    assert _login(environ={}).principal is None  # nothing anywhere: no login


def test_a_login_that_is_no_mq9_credential_sends_no_prefix_and_no_inbox_of_its_own():
    # RobustMQ's and nats-server's own users: a name no subject token can hold
    assert _login(["nats://team.a:pw@h:1"]).inbox_prefix is None
    assert _login(["nats://t0ken@h:1"]).principal is None
    assert _login(creds="/x.creds").principal is None


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ({"credential": "alice"}, "must be <id>:<secret>"),
        ({"credential": "al.ice:" + SECRET}, "must be <id>:<secret>"),
        ({"credential": "alice:" + SECRET + " x"}, "holds a space"),
        ({"credential": ALICE, "user": "bob"}, "whole login"),
        ({"environ": {CREDENTIAL_ENV: "a" * 65 + ":" + SECRET}}, CREDENTIAL_ENV),
        ({"environ": {CREDENTIAL_ENV: ALICE, CREDENTIAL_FILE_ENV: "/f"}}, "set one of them"),
        ({"environ": {CREDENTIAL_FILE_ENV: "/no/such/file"}}, "No such file"),
        ({"servers": [f"nats://{ALICE}@h:1", f"nats://bob:{BOB_SECRET}@h:2"]}, "different users"),
    ],
)
def test_a_credential_that_cannot_be_used_is_refused_in_words_without_its_secret(given, says):
    with pytest.raises(InvalidArgument) as refused:
        _login(**given)
    assert says in refused.value.message
    assert SECRET not in refused.value.message and BOB_SECRET not in refused.value.message


def test_a_credential_file_holds_one_line(tmp_path):
    file = tmp_path / "two.cred"
    file.write_text(f"{ALICE}\nbob:{BOB_SECRET}\n")
    with pytest.raises(InvalidArgument, match="one line") as refused:
        _login(environ={CREDENTIAL_FILE_ENV: str(file)})
    assert SECRET not in str(refused.value) and str(file) in str(refused.value)


def test_memory_brokers_take_no_credential_but_ignore_the_environments(monkeypatch):
    with pytest.raises(InvalidArgument, match="no credentials"):
        open_transport("memory://", credential=ALICE)
    monkeypatch.setenv(CREDENTIAL_ENV, ALICE)
    open_transport("memory://")  # an agent's environment does not break its tests in process


def test_the_environment_is_read_when_the_client_is_made(monkeypatch):
    monkeypatch.setenv(CREDENTIAL_ENV, "not a credential")
    with pytest.raises(InvalidArgument, match=CREDENTIAL_ENV):
        Mq9Client("nats://127.0.0.1:4222")
    with pytest.raises(InvalidArgument, match=CREDENTIAL_ENV):  # a toolkit: at construction
        Mq9Toolkit(server="nats://127.0.0.1:4222")


def test_no_repr_of_a_public_object_shows_the_credential(monkeypatch):
    url = "nats://127.0.0.1:4222"
    shown: list[object] = []
    kit = Mq9Toolkit(server=url, client_options={"credential": ALICE})
    shown += [kit, *kit.get_tools(), Mq9Connection(url, credential=ALICE)]
    client = Mq9Client(url, credential=ALICE)
    transport = client._transport
    assert isinstance(transport, NatsTransport)
    shown += [client, transport.login]
    monkeypatch.setenv(CREDENTIAL_ENV, ALICE)
    shown += [Mq9Client(url), Mq9Toolkit(server=url)]
    for thing in shown:
        for text in (repr(thing), str(thing)):
            assert SECRET not in text, text
    assert "alice:***" in repr(kit)  # the id still says which agent it is


# -- on the wire -----------------------------------------------------------------------------


def _agent(name: str, secret: str) -> str:
    return (
        f'{{user: {name}, password: "{secret}", permissions: {{'
        f'publish: {{allow: ["{PRINCIPAL_PREFIX}{name}.>", "$mq9.AI.>"]}}, '
        f'subscribe: {{allow: ["_INBOX.{name}.>"]}}}}}}'
    )


@pytest.fixture(scope="module")
def permissions_nats(tmp_path_factory):
    """A nats-server holding the contract's permissions for alice and bob, and a trusted broker."""
    config = tmp_path_factory.mktemp("nats") / "agents.conf"
    config.write_text(
        "authorization { users = [\n"
        f"  {_agent('alice', SECRET)}\n  {_agent('bob', BOB_SECRET)}\n"
        f'  {{user: broker, password: "{BROKER_PASSWORD}"}}\n'
        "] }\n"
    )
    with start_nats_server(extra_args=["-c", str(config)]) as server:
        yield server


class Gate:
    """The enforcing broker's gate, as the contract has it: what it was asked, and how."""

    def __init__(self) -> None:
        self.engine = BrokerEngine()
        self.plain: list[str] = []  # subjects refused for being plain
        self.prefixed: list[tuple[str, str]] = []  # (subject, reply) answered
        self.dropped: list[str] = []

    async def refuse_plain(self, msg) -> None:
        self.plain.append(msg.subject)
        await msg.respond(PLAIN_REFUSAL)  # the enforcing broker's words

    async def answer(self, msg) -> None:
        principal, _, rest = msg.subject[len(PRINCIPAL_PREFIX) :].partition(".")
        if not msg.reply.startswith(f"_INBOX.{principal}."):
            self.dropped.append(msg.subject)
            return
        self.prefixed.append((msg.subject, msg.reply))
        await msg.respond(await self.engine.handle("$mq9." + rest, msg.headers, msg.data))


@pytest.fixture
async def gate(permissions_nats):
    """The gate, serving on the permissions server as the broker user."""
    gate = Gate()
    connection = await nats.connect(permissions_nats.url, user="broker", password=BROKER_PASSWORD)
    await connection.subscribe(p.SUBJECT_WILDCARD, cb=gate.refuse_plain)
    await connection.subscribe(PRINCIPAL_PREFIX + "*.>", cb=gate.answer)
    await flush_in_order(connection)  # the SUBs on the server before a request
    gate.url = permissions_nats.url  # type: ignore[attr-defined]
    yield gate
    await connection.close()


def _as(gate: Gate, credential: str) -> str:
    return gate.url.replace("nats://", f"nats://{credential}@")  # type: ignore[attr-defined]


@pytest.mark.slow  # a nats-server (permissions_nats)
async def test_a_credentialed_client_switches_once_on_the_marked_refusal_and_everything_works(
    gate, caplog
):
    caplog.set_level(logging.DEBUG)
    async with Mq9Client(_as(gate, ALICE)) as alice:
        box = await alice.mailbox_create(name="alice.inbox")
        assert gate.plain == [p.MAILBOX_CREATE]  # refused once, sent again on her prefix
        first = await alice.send(box, "one", priority="urgent")
        await alice.send(box, {"n": 2}, key="k", tags=["t"])
        reader = GroupReader(alice, box, "workers")
        fetched = await reader.fetch(num_msgs=10)
        assert [m.payload for m in fetched][:1] == [b"one"]
        for message in fetched:
            await reader.done(message.msg_id)
        assert [m.msg_id for m in await alice.query(box, tags=["t"])] == [first + 1]
        await alice.delete(box, first)
        await alice.agent_register({"name": "alice", "mailbox": box, "payload": "reads mail"})
        await alice.agent_report({"name": "alice", "report_info": "busy"})
        assert [a["name"] for a in await alice.agent_discover()] == ["alice"]
        await alice.agent_unregister("alice")
        handled: list[bytes] = []
        consumer = await alice.consume(box, lambda m: handled.append(m.payload), group_name="g")
        await alice.send(box, "three")
        await until(lambda: b"three" in handled, timeout=20, what="three handled", every=0.05)
        await consumer.stop()
        assert b"three" in handled
    assert gate.plain == [p.MAILBOX_CREATE]  # never again on this connection
    assert gate.dropped == []
    assert {reply.split(".")[1] for _, reply in gate.prefixed} == {"alice"}
    assert all(subject.startswith("$mq9.U.alice.AI.") for subject, _ in gate.prefixed)
    assert "sending as 'alice'" in caplog.text and SECRET not in caplog.text
    # the refused CREATE did nothing; the one sent again made the mailbox (and the group its lease)
    assert [m for m in gate.engine.mailboxes if not is_reserved(m)] == [box]


@pytest.mark.slow  # a nats-server (permissions_nats)
async def test_concurrent_requests_refused_at_the_switch_are_each_sent_again_once(gate):
    async with Mq9Client(_as(gate, ALICE)) as alice:
        box = await alice.mailbox_create(name="alice.burst")
        await alice.close()
        await alice.connect()  # a new connection: the broker must say so again
        sent = await asyncio.gather(*(alice.send(box, f"m{i}") for i in range(20)))
        stored = await alice.query(box)
    assert len(set(sent)) == 20 and sorted(m.payload for m in stored) == sorted(
        f"m{i}".encode() for i in range(20)
    )
    # the CREATE, then each send of the new connection that went out before the first answer
    assert 2 <= len(gate.plain) <= 21


@pytest.mark.slow  # a nats-server (permissions_nats)
async def test_a_broker_without_the_marker_is_never_sent_the_prefixed_form(permissions_nats):
    """RobustMQ checks a login and serves plain subjects only: a credentialed client sends as
    any other there, its replies still on its own inbox."""
    seen: list[tuple[str, str]] = []
    engine = BrokerEngine()
    broker = await nats.connect(permissions_nats.url, user="broker", password=BROKER_PASSWORD)

    async def observed(msg) -> None:
        seen.append((msg.subject, msg.reply))
        await msg.respond(await engine.handle(msg.subject, msg.headers, msg.data))

    await broker.subscribe(p.SUBJECT_WILDCARD, cb=observed)
    try:
        async with Mq9Client(permissions_nats.url, user="alice", password=SECRET) as alice:
            box = await alice.mailbox_create(name="plain.box")
            await alice.send(box, "x")
            assert [m.payload for m in await alice.fetch(box, deliver="earliest")] == [b"x"]
    finally:
        await broker.close()
    assert [s.split(".")[2] for s, _ in seen] == ["MAILBOX", "MSG", "MSG"]
    assert all(reply.startswith("_INBOX.alice.") for _, reply in seen)


@pytest.mark.slow  # a nats-server (permissions_nats)
async def test_an_agent_cannot_take_replies_meant_for_another(gate):
    """Its inbox prefix is what nats-server lets it subscribe to: bob's client under alice's
    id is refused the subscription (it would never hear an answer)."""
    async with Mq9Client(_as(gate, ALICE)) as alice:
        await alice.mailbox_create(name="alice.only")
    bob = await nats.connect(_as(gate, f"bob:{BOB_SECRET}"), inbox_prefix="_INBOX.alice")
    try:
        with pytest.raises(nats.errors.Error):
            await bob.request(PRINCIPAL_PREFIX + "bob.AI.MAILBOX.CREATE", b"{}", timeout=1)
    finally:
        await bob.close()
    assert not any("bob" in subject for subject, _ in gate.prefixed)


@pytest.mark.slow  # a nats-server (permissions_nats)
async def test_a_wrong_or_missing_credential_says_what_to_do_and_not_the_secret(
    permissions_nats, monkeypatch
):
    wrong = f"alice:{secrets.token_urlsafe(32)}"
    for client in (
        Mq9Client(permissions_nats.url, credential=wrong, request_timeout=2),
        Mq9Client(permissions_nats.url.replace("nats://", f"nats://{wrong}@"), request_timeout=2),
        Mq9Client(permissions_nats.url, request_timeout=2),  # none at all
    ):
        with pytest.raises(NotAllowed) as refused:
            await asyncio.wait_for(client.connect(), 10)
        said = refused.value.message
        assert "refused the credentials" in said and refused.value.retryable is False
        for what in (CREDENTIAL_ENV, CREDENTIAL_FILE_ENV, "credentials issue"):
            assert what in said, said
        assert wrong.partition(":")[2] not in said and SECRET not in said
    monkeypatch.setenv(CREDENTIAL_ENV, wrong)
    with pytest.raises(NotAllowed, match=f"'alice' \\(from {CREDENTIAL_ENV}\\)"):
        await asyncio.wait_for(Mq9Client(permissions_nats.url, request_timeout=2).connect(), 10)


@pytest.mark.slow  # a nats-server (permissions_nats)
async def test_the_environment_logs_a_plain_client_in(gate, monkeypatch, tmp_path):
    """What every client of an agent (the toolkit, mq9-mcp, serve_agent, the examples) reads
    when no credential is given in code: MQ9_CREDENTIAL_FILE here."""
    file = tmp_path / "alice.cred"
    file.write_text(ALICE + "\n")
    os.chmod(file, 0o600)
    monkeypatch.setenv(CREDENTIAL_FILE_ENV, str(file))
    async with Mq9Toolkit(server=gate.url, agent_mailbox="alice.kit") as kit:
        tools = {t.name: t for t in kit.get_tools()}
        created = await tools["create_mailbox"].ainvoke({"name": "alice.kit"})
        assert "alice.kit" in created
        sent = await tools["send_message"].ainvoke({"mail_address": "alice.kit", "payload": "hi"})
        assert "msg_id" in sent
    assert {s.split(".")[3] for s, _ in gate.prefixed} == {"AI"}
    assert all(reply.startswith("_INBOX.alice.") for _, reply in gate.prefixed)


@pytest.mark.slow
async def test_an_open_broker_and_a_credentialed_client_on_it_are_unchanged(nats_server):
    """The default broker: no logins, no gate. A client given a credential (its agent's
    environment, say) sends plain subjects there, as before."""
    engine = BrokerEngine()
    connection = await nats.connect(nats_server.url)
    service = await serve_on_nats(engine, connection)
    try:
        async with Mq9Client(nats_server.url, credential=ALICE) as alice:
            box = await alice.mailbox_create(name=f"open.{secrets.token_hex(3)}")
            assert await alice.send(box, "x") == 0
            assert [m.payload for m in await alice.query(box)] == [b"x"]
    finally:
        await service.stop()
        await connection.close()


# -- on the enforcing broker (mq9-dev-broker --credentials) ---------------------------------


@pytest.fixture
def enforcing(tmp_path):
    broker = EnforcingBroker(tmp_path, "alice", "bob")
    yield broker
    broker.stop()


@pytest.mark.slow
async def test_a_revoked_credential_is_refused_at_its_next_request_then_at_login(enforcing):
    credential = enforcing.credentials["alice"]
    secret = credential.partition(":")[2]
    options = {"credential": credential, "reconnect_attempts": 1, "reconnect_delay": 0.1}
    async with Mq9Client(enforcing.url, **options) as alice:
        box = await alice.mailbox_create(name="alice.revoked")
        await alice.send(box, "before")
        revoke(enforcing.data, "alice")  # returns once the broker's next request looks
        said: list[Mq9Error] = []
        for _ in range(200):  # the broker's words, then (kicked) the refused login
            with pytest.raises(Mq9Error) as refused:
                await alice.send(box, "after")
            said.append(refused.value)
            if isinstance(refused.value, NotAllowed):
                break
            await asyncio.sleep(0.05)
    kinds = {type(e).__name__ for e in said}
    assert isinstance(said[-1], NotAllowed) and "'alice'" in said[-1].message, said
    assert kinds <= {"Mq9Error", "ConnectionLost", "NotAllowed"}, said
    assert all(secret not in e.message for e in said)
    if type(said[0]) is Mq9Error:  # the next request, unless the kick came first
        assert said[0].message == "credential revoked: ask the broker's operator for a new one"
    with pytest.raises(NotAllowed, match="revoked credential is refused too"):
        await asyncio.wait_for(Mq9Client(enforcing.url, credential=credential).connect(), 20)
    again = issue(enforcing.data, "alice")["alice"]  # a new secret for the same agent
    async with Mq9Client(enforcing.url, credential=again) as alice:
        assert [m.payload for m in await alice.query(box)] == [b"before"]  # nothing after


@pytest.mark.slow
async def test_an_agent_with_the_toolkit_works_with_its_credential(enforcing):
    """create_agent over the toolkit, its model scripted: every default tool with alice's
    credential; bob's model is refused her mailbox by the broker, in words it reads."""
    steps = [
        call("create_mailbox", name="alice.desk"),
        call("agent_register", name="alice.desk", capabilities="books trips"),
        call("send_message", mail_address="alice.desk", payload="book Lisbon"),
        call("fetch_messages", mail_address="alice.desk"),
        call("ack_messages", mail_address="alice.desk", msg_id=0),
        call("query_messages", mail_address="alice.desk"),
        call("agent_discover", query="trips"),
        "Done.",
    ]
    options = {"credential": enforcing.credentials["alice"]}
    async with Mq9Toolkit(server=enforcing.url, client_options=options) as kit:
        agent = create_agent(ScriptedChatModel(steps=steps), kit.get_tools())
        state = await agent.ainvoke({"messages": [("user", "plan my trip")]})
    answers = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert [m.status for m in answers] == ["success"] * 7, [m.content for m in answers]
    assert "book Lisbon" in answers[3].content and "alice.desk" in answers[6].content
    bob_steps = [call("fetch_messages", mail_address="alice.desk"), "Done."]
    options = {"credential": enforcing.credentials["bob"]}
    async with Mq9Toolkit(server=enforcing.url, client_options=options) as kit:
        agent = create_agent(ScriptedChatModel(steps=bob_steps), kit.get_tools())
        state = await agent.ainvoke({"messages": [("user", "read alice's desk")]})
    [refusal] = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert refusal.status == "error"
    assert "FETCH refused: mailbox 'alice.desk' belongs to another agent" in refusal.content


@pytest.mark.slow
async def test_consumer_groups_and_dead_letters_work_with_the_owners_credential(enforcing):
    """Competing workers of one service share its credential; the poison message is set aside
    in the mailbox's dead letters (a name derived from it: its owner's), which bob cannot read."""
    credential = enforcing.credentials["alice"]
    async with (
        Mq9Client(enforcing.url, credential=credential) as one,
        Mq9Client(enforcing.url, credential=credential) as two,
    ):
        box = await one.mailbox_create(name="alice.orders")
        for text in ("o1", "poison", "o2"):
            await one.send(box, text)
        done: list[bytes] = []

        def work(message) -> None:
            if message.payload == b"poison":
                raise ValueError("cannot parse")
            done.append(message.payload)

        options = {"group_name": "orders", "deliver": "earliest", "max_deliveries": 2}
        consumers = [
            await client.consume(box, work, worker=f"w{i}", **options)
            for i, client in enumerate((one, two))
        ]
        letters: list = []
        for _ in range(400):
            with contextlib.suppress(MailboxNotFound):  # made by the first dead letter
                letters = await one.query(f"{box}.dlq")
            if letters and len(done) >= 2:
                break
            await asyncio.sleep(0.05)
        for consumer in consumers:
            await consumer.stop()
        assert sorted(done) == [b"o1", b"o2"] and [m.payload for m in letters] == [b"poison"]
    async with Mq9Client(enforcing.url, credential=enforcing.credentials["bob"]) as bob:
        with pytest.raises(Mq9Error, match="belongs to another agent"):
            await bob.query(f"{box}.dlq")


@pytest.mark.slow  # a nats-server (permissions_nats)
async def test_serve_agent_gives_client_options_to_the_client_it_opens_only(gate):
    async with Mq9Client(_as(gate, ALICE)) as mine:
        with pytest.raises(ValueError, match="client_options are for the client serve_agent"):
            await serve_agent(text_graph(str.upper), name="alice.agent", client=mine,
                              client_options={"credential": ALICE})  # fmt: skip
    served = await serve_agent(text_graph(str.upper), name="alice.agent", server=gate.url,
                               client_options={"credential": ALICE}, **text_io())  # fmt: skip
    await served.stop()
    assert "alice.agent" in gate.engine.mailboxes  # made on alice's prefix, with her inbox
    assert all(reply.startswith("_INBOX.alice.") for _, reply in gate.prefixed)
