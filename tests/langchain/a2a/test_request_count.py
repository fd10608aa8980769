"""What a call costs the broker, counted where the broker receives it: a raw NATS client
subscribed to every mq9 subject (``$mq9.AI.>``) and to the replies (``_INBOX.>``) on the real
nats-server sees each request the bundled broker is sent, and each answer, in the order the
server routed them. docs/a2a.md's table ("What a call costs, in broker requests") is this
count; a look at a call's state asks its three reads at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.msg import Msg

from mq9_broker import BrokerEngine, serve_on_nats
from mq9_platform import Mq9Client
from mq9_platform.a2a import mail as w
from mq9_platform.a2a import server as server_module
from mq9_platform.a2a.caller import AgentCaller
from mq9_wire import protocol as p
from tests.langchain.a2a.test_gateway import AGENT, gateway
from tests.langchain.a2a.test_gateway import request as a2a_request
from tests.langchain.a2a.test_gateway_arrivals import blocking_client, no_polls, served_upper  # noqa: F401

pytestmark = pytest.mark.slow  # a nats-server

GUARD = 60.0  # seconds: a guard against a hang, never a measure


@dataclass
class Seen:
    """One message the spy saw: a request to the broker, or an answer to one."""

    subject: str
    reply: str  # a request's reply subject ("" for an answer)

    @property
    def command(self) -> str:
        """``QUERY``, ``SEND``...: the command word of a request's subject."""
        return self.subject.removeprefix(p.PREFIX + ".").split(".")[1]

    @property
    def mailbox(self) -> str:
        """The mailbox a request names (after its command; none for a few, e.g. REGISTER)."""
        return ".".join(self.subject.removeprefix(p.PREFIX + ".").split(".")[2:])


@dataclass
class Spy:
    """Every request to the broker and every answer, as the nats-server routed them."""

    connection: nats.NATS
    seen: list[Seen] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def _on(self, msg: Msg) -> None:
        self.seen.append(Seen(msg.subject, msg.reply or ""))
        self.arrived.set()

    def mark(self) -> int:
        return len(self.seen)

    async def since(self, mark: int) -> list[Seen]:
        """What was seen after ``mark``, once the server has routed all it had (a flush)."""
        await self.connection.flush()
        return self.seen[mark:]

    async def requests_since(self, mark: int) -> list[Seen]:
        return [s for s in await self.since(mark) if s.reply]

    async def until(self, command: str, mark: int) -> None:
        """Until a request of ``command`` was seen after ``mark`` (a hang guard only)."""
        async with asyncio.timeout(GUARD):
            while not any(s.command == command for s in await self.requests_since(mark)):
                self.arrived.clear()
                await self.arrived.wait()


@contextlib.asynccontextmanager
async def spying(url: str) -> AsyncIterator[Spy]:
    connection = await nats.connect(url)
    spy = Spy(connection)
    try:
        await connection.subscribe(p.SUBJECT_WILDCARD, cb=spy._on)
        await connection.subscribe("_INBOX.>", cb=spy._on)
        await connection.flush()
        yield spy
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def broker_on(url: str) -> AsyncIterator[None]:
    """The bundled broker in this process, served on the nats-server (announcing arrivals),
    its embedding model loaded first as ``Broker`` loads it (#54)."""
    engine = BrokerEngine()
    await asyncio.wrap_future(engine.load_model_soon())
    connection = await nats.connect(url)
    service = await serve_on_nats(engine, connection, announce=True)
    try:
        yield
    finally:
        await service.stop()
        await connection.close()


async def test_a_look_at_a_call_asks_its_three_reads_at_once(nats_server):
    """check() reads the call's record, its task and its error: three QUERYs, all sent before
    the first is answered (one after the other, each waited for the answer before it)."""
    async with (
        broker_on(nats_server.url),
        Mq9Client(nats_server.url) as client,
        spying(nats_server.url) as spy,
    ):
        await client.mailbox_create(name="agent.offline", ttl=0)
        caller = await AgentCaller(client, "agent.me.calls").open()
        task_id = await caller.submit("agent.offline", w.send_request(w.message("hi")))
        mark = spy.mark()
        state = await caller.check(task_id)
        assert state.state == w.SUBMITTED
        seen = await spy.since(mark)
        requests = [s for s in seen if s.reply]
        assert [r.command for r in requests] == ["QUERY"] * 3, requests
        asked = {r.reply for r in requests}
        # Only these three and their answers: an answer to an earlier request (the submit's)
        # can reach the spy after the mark, on a busy machine (seen once in a CI run).
        ours = [s for s in seen if s.reply or s.subject in asked]
        first_answer = next(i for i, s in enumerate(ours) if s.subject in asked)
        assert all(s.reply for s in ours[:first_answer]) and first_answer == 3, ours


def kind(mailbox: str) -> str:
    """Which of the call's mailboxes a request is about."""
    for prefix in ("mq9.calls.", "mq9.tasks.", "mq9.lease."):
        if mailbox.startswith(prefix):
            return prefix.split(".")[1]
    return "agent" if mailbox == AGENT else mailbox


# What one call through the gateway asks of the broker, by (command, mailbox), besides the
# gateway's looks at its reply mailbox (docs/a2a.md's table, step by step): an agent that
# answers within its ``working_after`` reports no ``working`` state
CALL = Counter(
    {
        # the gateway's record of the call; completed delivered, and kept as its event (#101)
        ("SEND", "calls"): 3,
        ("SEND", "agent"): 1,  # the request
        ("FETCH", "agent"): 1,  # the agent's read, woken by the request's arrival
        ("SEND", "lease"): 2,  # its lease claimed; the lease record at the end
        ("QUERY", "lease"): 1,  # the lease read back
        ("QUERY", "tasks"): 2,  # the task, and whether it was canceled
        # completed kept (before it is delivered); its delivery noted after it (#106: the
        # agent's writes go with no key, so this note keeps a redelivered request from
        # sending a stopped state its caller got)
        ("SEND", "tasks"): 2,
        ("ACK", "agent"): 1,  # the request done
    }
)


@pytest.fixture
def no_cancel_polls(monkeypatch):
    """The served agent's watch for cancels made through another replica is an hour away too:
    it asks once a half second while a run lasts, so a run slowed by a busy machine would
    count one more ``('QUERY', 'tasks')`` than the docs' table, which counts what one call
    asks."""
    monkeypatch.setattr(server_module, "CANCEL_POLL_SECONDS", 3600)


@pytest.mark.usefixtures("no_polls", "no_cancel_polls")
async def test_a_call_through_the_gateway_costs_what_docs_say(nats_server, request):
    """Calls of an a2a-sdk client through the gateway to a served agent that answers at once
    (within its ``working_after``, here a guard's length: no ``working`` state), each counted
    from its SendMessage to the agent's ACK (its last step), after a first call that made the
    mailboxes: 13 requests, and the gateway's looks at its reply mailbox, one at each
    announcement there that finds it waiting (its own record's, ``completed``'s: every poll
    is an hour away), each a QUERY and, when it finds no new state, a second one for a
    refusal."""
    async with (
        spying(nats_server.url) as spy,
        served_upper("nats", request, working_after=GUARD) as (_agent, gateway_client),
        gateway(gateway_client, send_wait=60) as agent_url,
        blocking_client(agent_url) as alice,
    ):
        for text in ("first", "second", "third", "fourth"):
            mark = spy.mark()
            events = [e async for e in alice.send_message(a2a_request(text))]
            assert events[-1].task.artifacts[0].parts[0].text == text.upper()
            await spy.until("ACK", mark)
            requests = await spy.requests_since(mark)
            if text == "first":
                continue
            made = Counter((r.command, kind(r.mailbox)) for r in requests)
            looks = made.pop(("QUERY", "calls"))
            assert made == CALL, made
            assert 1 <= looks <= 4, looks
