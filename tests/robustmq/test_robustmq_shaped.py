"""RobustMQ's NATS listener, as the client meets it (issue #20; docs/protocol.md §1).

The first group checks, with raw protocol bytes, that the RobustMQ-shaped listener of
testbed/support/robustmq_shaped.py behaves as RobustMQ 8bd49dc's does: when ``MQ9_ROBUSTMQ_URL``
names a running RobustMQ the same checks run against it, so the imitation is held to the real thing.
The second group runs our client on those behaviours: the listener in CI, RobustMQ when named.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from urllib.parse import urlparse

import nats
import pytest
from langchain_core.messages import ToolMessage

from langchain_mq9 import Mq9Toolkit
from mq9_broker import BrokerEngine
from mq9_platform import Mq9Client
from mq9_platform.operations.mailbox import NO_KEYS_KEPT
from mq9_wire import protocol as p
from mq9_wire.nats_floor.guard import GuardedClient, protect
from mq9_wire.protocol.errors import MailboxExists, StorageMissing
from testbed.support.mcp_support import fails, ok, stdio_session
from testbed.support.robustmq_shaped import RobustMQShapedListener
from testbed.support.shared_broker import INDEX_SETTLES
from testbed.support.waiting import until

pytestmark = pytest.mark.slow

REAL = os.environ.get("MQ9_ROBUSTMQ_URL")
TARGETS = [
    "shaped",
    pytest.param(
        "robustmq",
        marks=pytest.mark.skipif(
            not REAL, reason="set MQ9_ROBUSTMQ_URL to a running RobustMQ 8bd49dc to check it too"
        ),
    ),
]


@pytest.fixture(params=TARGETS)
async def listener_url(request):
    """The URL of a RobustMQ-shaped listener, or of the real RobustMQ."""
    if request.param == "robustmq":
        yield REAL
        return
    async with RobustMQShapedListener(BrokerEngine()) as listener:
        yield listener.url


@pytest.fixture(params=TARGETS)
async def crossing_url(request):
    """As ``listener_url``, the listener's CREATEs under way 0.5 s each (point 10): a CREATE
    sent with another of its name crosses it, as on RobustMQ."""
    if request.param == "robustmq":
        yield REAL
        return
    async with RobustMQShapedListener(BrokerEngine(), create_takes=0.5) as listener:
        yield listener.url


def unique(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


class Raw:
    """A bare TCP connection that writes protocol bytes exactly as given and reads frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str, *, connect: bool = True) -> Raw:
        where = urlparse(url)
        raw = cls(*await asyncio.open_connection(where.hostname, where.port))
        assert (await raw.line()).startswith(b"INFO ")
        if connect:
            raw.write(b"CONNECT " + json.dumps({"verbose": False, "headers": True}).encode())
            await raw.writer.drain()
            await raw.sync()
        return raw

    def write(self, line: bytes) -> None:
        self.writer.write(line + b"\r\n")

    async def line(self, timeout: float = 10) -> bytes:
        return (await asyncio.wait_for(self.reader.readline(), timeout)).rstrip(b"\r\n")

    async def sync(self) -> None:
        """PING until a PONG (RobustMQ may hold the first), answering the broker's PINGs."""
        for _ in range(50):
            self.write(b"PING")
            await self.writer.drain()
            try:
                while (line := await self.line(0.2)) != b"PONG":
                    if line == b"PING":
                        self.write(b"PONG")
            except TimeoutError:
                continue
            return
        raise AssertionError("no PONG")

    def request(self, subject: str, reply: str, body: bytes = b"{}") -> None:
        self.write(f"PUB {subject} {reply} {len(body)}".encode() + b"\r\n" + body)

    async def reply(self) -> tuple[str, str, dict]:
        """The next MSG: its subject, sid and decoded body (PINGs answered on the way)."""
        while True:
            line = await self.line()
            if line == b"PING":
                self.write(b"PONG")
                continue
            if line == b"PONG":
                continue
            op, subject, sid, size = line.decode().split(" ")
            assert op == "MSG", line
            body = await self.reader.readexactly(int(size) + 2)
            return subject, sid, json.loads(body[:-2])

    async def close(self) -> None:
        self.writer.close()


async def create(raw: Raw, name: str) -> None:
    body = json.dumps({"name": name, "ttl": 600}).encode()
    raw.request(p.MAILBOX_CREATE, "_INBOX.create." + uuid.uuid4().hex, body)
    assert (await raw.reply())[2]["error"] == ""


# -- the listener's behaviours, checked against RobustMQ when one is named ----------------------


async def test_a_reply_comes_with_the_sid_of_an_exact_inbox_only(listener_url):
    raw = await Raw.open(listener_url)
    base = "_INBOX." + uuid.uuid4().hex
    raw.write(f"SUB {base}.* 11".encode())  # what nats-py subscribes for its requests
    raw.write(f"SUB {base}.exact 12".encode())
    raw.request(p.AGENT_DISCOVER, f"{base}.token", b"{}")
    assert (await raw.reply())[:2] == (f"{base}.token", "0")
    raw.request(p.AGENT_DISCOVER, f"{base}.exact", b"{}")
    assert (await raw.reply())[:2] == (f"{base}.exact", "12")
    await raw.close()


async def test_unsub_with_a_max_unsubscribes_at_once(listener_url):
    raw = await Raw.open(listener_url)
    inbox = "_INBOX." + uuid.uuid4().hex
    raw.write(f"SUB {inbox} 21".encode())
    raw.write(b"UNSUB 21 1")  # nats-server would keep it for one more message
    raw.request(p.AGENT_DISCOVER, inbox, b"{}")
    assert (await raw.reply())[1] == "0"
    await raw.close()


async def test_unsub_by_another_connection_forgets_every_inbox_with_that_sid(listener_url):
    mine, theirs = await Raw.open(listener_url), await Raw.open(listener_url)
    inbox = "_INBOX." + uuid.uuid4().hex
    mine.write(f"SUB {inbox} 907".encode())
    await mine.sync()  # RobustMQ serves connections on different handlers: this SUB first
    theirs.write(f"SUB _INBOX.{uuid.uuid4().hex} 907".encode())
    theirs.write(b"UNSUB 907")
    # A request of theirs after the UNSUB, answered: their UNSUB was handled (a connection's
    # commands are handled in order, point 5; a PONG is not: RobustMQ answers PING apart,
    # and once answered it before the UNSUB was handled)
    after = "_INBOX." + uuid.uuid4().hex
    theirs.write(f"SUB {after} 908".encode())
    theirs.request(p.AGENT_DISCOVER, after, b"{}")
    assert (await theirs.reply())[0] == after
    mine.request(p.AGENT_DISCOVER, inbox, b"{}")
    assert (await mine.reply())[1] == "0"
    await mine.close()
    await theirs.close()


async def test_info_is_followed_by_a_ping_and_bytes_read_with_connect_are_held(listener_url):
    raw = await Raw.open(listener_url, connect=False)
    assert await raw.line() == b"PING"  # the broker's own, before any CONNECT
    connect = b"CONNECT " + json.dumps({"verbose": False}).encode()
    raw.writer.write(connect + b"\r\nPING\r\n")  # one write, as nats.js sends them
    await raw.writer.drain()
    with pytest.raises(asyncio.TimeoutError):  # nothing answers the PING yet
        await raw.line(1.0)
    raw.write(b"PING")  # more bytes: the held PING is read, then this one
    assert [await raw.line(), await raw.line()] == [b"PONG", b"PONG"]
    await raw.close()


async def test_info_says_robustmq_as_the_client_reads_it(listener_url):
    """How the client knows its search may trail the registry (docs/discovery.md)."""
    where = urlparse(listener_url)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    assert line.startswith(b"INFO ")
    assert json.loads(line[5:])["go"] == "robustmq-rust"


async def test_one_connection_answers_one_request_at_a_time_in_order(listener_url):
    raw = await Raw.open(listener_url)
    mailbox = unique("shaped.order")
    await create(raw, mailbox)
    fetch = json.dumps({"deliver": "earliest", "config": {"num_msgs": 1, "max_wait_ms": 800}})
    raw.request(p.fetch_subject(mailbox), "_INBOX.fetch", fetch.encode())
    raw.request(p.query_subject(mailbox), "_INBOX.query", b"{}")
    # The empty FETCH waits its 800 ms; the QUERY behind it is answered only after it.
    assert [(await raw.reply())[0], (await raw.reply())[0]] == ["_INBOX.fetch", "_INBOX.query"]
    await raw.close()


async def test_plain_nats_py_never_finishes_its_handshake_and_gets_no_answer(listener_url):
    """What every NATS client we tried meets: the broker's PING ends nats-py's handshake
    before CONNECTED, and a reply to its wildcard inbox comes with sid 0 and is dropped."""
    connection = await nats.connect(listener_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        assert not connection.is_connected
        with pytest.raises(nats.errors.TimeoutError):
            await connection.request(p.AGENT_DISCOVER, b"{}", timeout=1)
    finally:
        await connection.close()


async def test_the_guarded_client_finishes_its_handshake(listener_url):
    connection = GuardedClient()
    protect(connection).cancel()
    await connection.connect(listener_url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        assert connection.is_connected
        await connection.flush(timeout=5)  # a PING of its own is answered
        reply = await connection.request(p.AGENT_DISCOVER, b"{}", timeout=5)
        assert json.loads(reply.data)["error"] == ""
    finally:
        await connection.close()


# -- our client on those behaviours -------------------------------------------------------------


async def test_every_command_is_answered(listener_url):
    async with Mq9Client(listener_url) as client:
        mailbox = await client.mailbox_create(name=unique("shaped.all"), ttl=600)
        assert [await client.send(mailbox, f"m{i}") for i in range(3)] == [0, 1, 2]
        assert [m.text() for m in await client.fetch(mailbox, deliver="earliest")] == [
            "m0",
            "m1",
            "m2",
        ]
        assert [m.msg_id for m in await client.fetch(mailbox, group_name="g", num_msgs=2)]
        await client.ack(mailbox, "g", 1)
        await client.delete(mailbox, 0)
        assert [m.text() for m in await client.query(mailbox)] == ["m1", "m2"]
        name = unique("shaped.agent")
        await client.agent_register({"name": name, "mailbox": mailbox, "description": "x"})
        assert name in {a["name"] for a in await client.agent_discover()}
        await client.agent_unregister(name)


async def test_a_waiting_fetch_holds_up_no_other_request_of_the_client(listener_url):
    async with Mq9Client(listener_url) as client:
        quiet = await client.mailbox_create(name=unique("shaped.quiet"), ttl=600)
        busy = await client.mailbox_create(name=unique("shaped.busy"), ttl=600)
        waiting = asyncio.create_task(client.fetch(quiet, deliver="earliest", max_wait_ms=4000))
        await asyncio.sleep(0)  # the FETCH is on its way
        for i in range(5):
            await client.send(busy, f"m{i}")
        assert len(await client.query(busy)) == 5
        assert not waiting.done(), "the requests behind the FETCH waited for it"
        assert await waiting == []


async def test_clients_that_unsubscribe_do_not_break_each_others_requests(listener_url):
    """nats-py numbers sids 1, 2, 3... per connection; RobustMQ forgets inboxes by sid number
    for every connection. Ours takes its replies by inbox subject, so it never depends on it."""
    async with Mq9Client(listener_url) as client:
        mailbox = await client.mailbox_create(name=unique("shaped.unsub"), ttl=600)
        other = await Raw.open(listener_url)
        for sid in range(1, 20):
            other.write(f"SUB _INBOX.{uuid.uuid4().hex} {sid}".encode())
            other.write(f"UNSUB {sid}".encode())
        await other.sync()
        assert await client.send(mailbox, "still answered") == 0
        await other.close()


async def test_twenty_clients_times_two_hundred_requests_without_a_timeout(listener_url):
    mailbox = unique("shaped.load")
    async with Mq9Client(listener_url) as setup:
        await setup.mailbox_create(name=mailbox, ttl=600)

    async def one_client(n: int) -> int:
        async with Mq9Client(listener_url, request_timeout=30) as client:
            for i in range(100):
                await client.send(mailbox, f"{n}:{i}")
                await client.query(mailbox, limit=1)
        return 200

    done = await asyncio.gather(*(one_client(n) for n in range(20)))
    assert sum(done) == 4000
    async with Mq9Client(listener_url) as check:
        last = await check.fetch(mailbox, deliver="latest", max_wait_ms=0)
        assert last[0].msg_id == 1999  # every SEND stored once


async def test_a_keyed_send_is_stored_each_time_and_the_send_tool_says_so(listener_url):
    """RobustMQ keeps no idempotency keys (#100): a SEND under one key is stored as often as
    it is sent, the client learns so from the answer (no ``duplicate``), and the send tool
    tells the model that a call run again sends again."""
    async with Mq9Client(listener_url) as client:
        inbox = await client.mailbox_create(name=unique("shaped.keys"), ttl=600)
        first = await client.send(inbox, "once?", idempotency_key="k-1")
        assert await client.send(inbox, "once?", idempotency_key="k-1") == first + 1
        assert client.keys_recognised_for(inbox) is False
        async with Mq9Toolkit(client=client) as kit:
            send = next(t for t in kit.get_tools() if t.name == "send_message")
            args = {"mail_address": inbox, "payload": "keyed by the call"}
            call = {"name": "send_message", "args": args, "id": "call-1", "type": "tool_call"}
            answer = json.loads((await send.ainvoke(call)).content)
        assert answer["note"] == NO_KEYS_KEPT, answer
        assert len(await client.query(inbox)) == 3


async def test_two_creates_of_a_new_name_that_cross_leave_it_without_storage(crossing_url):
    """(#100, point 10) RobustMQ 8bd49dc checks that a name is new, then makes its topic: two
    CREATEs under way together both make it, the later names a shard that is never made, and
    the mailbox has no storage for good. Our client reads its answer as ``StorageMissing``, in
    one line saying why and what to do, and stores nothing."""
    raws = [await Raw.open(crossing_url) for _ in range(2)]
    # On RobustMQ two CREATEs sent together cross now and then (2 of 30 names, twice, on an
    # idle default build): names are tried until one is lost (each try leaves a mailbox)
    for _ in range(150):
        name = unique("shaped.crossed")
        body = json.dumps({"name": name, "ttl": 600}).encode()
        for raw in raws:
            raw.request(p.MAILBOX_CREATE, "_INBOX.cross." + uuid.uuid4().hex, body)
        made = [(await raw.reply())[2] for raw in raws]
        raws[0].request(p.send_subject(name), "_INBOX.cross." + uuid.uuid4().hex, b"lost?")
        if (await raws[0].reply())[2]["error"]:
            break
    for raw in raws:
        await raw.close()
    assert made == [{"error": "", "mail_address": name}] * 2
    async with Mq9Client(crossing_url, request_timeout=2) as client:
        with pytest.raises(StorageMissing) as lost:
            await client.send(name, "lost?")
        with pytest.raises(StorageMissing):
            await client.fetch(name, deliver="earliest", max_wait_ms=0)
    assert lost.value.stored_nothing and lost.value.shard.endswith("-0")
    assert "\n" not in str(lost.value) and "two CREATEs" in str(lost.value)


async def test_creates_of_one_name_from_one_process_never_cross(crossing_url):
    """(#100) Two replicas of an agent started together make its mailboxes at once: our
    clients in one process send CREATEs of one name one after another, so the first makes it,
    the others learn it is there, and it keeps what is sent to it."""
    clients = [Mq9Client(crossing_url) for _ in range(4)]
    for client in clients:
        await client.connect()
    try:
        name = unique("shaped.together")
        made = await asyncio.gather(
            *(c.mailbox_create(name=name, ttl=600) for c in clients), return_exceptions=True
        )
        assert made.count(name) == 1, made
        assert sum(isinstance(m, MailboxExists) for m in made) == 3, made
        await clients[1].send(name, "kept")
        assert [m.payload for m in await clients[2].query(name)] == [b"kept"]
    finally:
        for client in clients:
            await client.close()


async def test_a_toolkit_answers_a_call_while_another_tool_waits(listener_url):
    async with Mq9Toolkit(server=listener_url) as kit:
        tools = {tool.name: tool for tool in kit.get_tools()}

        async def call(tool: str, **args) -> dict:
            message = await tools[tool].ainvoke(
                {"name": tool, "args": args, "id": "call", "type": "tool_call"}
            )
            assert isinstance(message, ToolMessage) and message.status != "error", message
            return json.loads(message.content)

        inbox = (await call("create_mailbox", name=unique("shaped.inbox")))["mail_address"]
        other = (await call("create_mailbox", name=unique("shaped.other")))["mail_address"]
        waiting = asyncio.create_task(call("fetch_messages", mail_address=inbox, max_wait_ms=10000))
        await asyncio.sleep(0)
        await call("send_message", mail_address=other, payload="meanwhile")
        assert not waiting.done(), "send_message waited for the 10 s fetch"
        await call("send_message", mail_address=inbox, payload="the awaited one")
        fetched = await waiting
        assert [m["payload"] for m in fetched["messages"]] == ["the awaited one"]


async def test_mq9_mcp_serves_every_tool(listener_url):
    """The MCP server on the same broker, as Claude Desktop would start it (stdio)."""
    inbox, agent = unique("shaped.mcp"), unique("shaped.mcpagent")
    async with stdio_session("--server", listener_url) as mcp:
        assert (await ok(mcp, "create_mailbox", name=inbox))["mail_address"] == inbox
        sent = await ok(mcp, "send_message", mail_address=inbox, payload="hi", tags=["t"])
        assert sent == {"sent": True, "msg_id": 0}
        fetched = await ok(mcp, "fetch_messages", mail_address=inbox, max_wait_ms=2000)
        assert [m["payload"] for m in fetched["messages"]] == ["hi"]
        assert (await ok(mcp, "ack_messages", mail_address=inbox, msg_id=0))["confirmed"] == [0]
        found = await ok(mcp, "query_messages", mail_address=inbox, tags=["t"])
        assert found["count"] == 1
        assert (await ok(mcp, "delete_message", mail_address=inbox, msg_id=0))["deleted"]
        registered = await ok(mcp, "agent_register", name=agent, capabilities="translation")
        assert registered["registered"]

        async def discovered() -> bool:
            found = await ok(mcp, "agent_discover", query="translation")
            return agent in [a["name"] for a in found["agents"]]

        # (RobustMQ's search index trails its registry, the more so on a busy machine)
        await until(discovered, timeout=INDEX_SETTLES, what=f"a search finding {agent}")
        assert "does not exist" in await fails(
            mcp, "fetch_messages", mail_address=unique("shaped.nobody")
        )
