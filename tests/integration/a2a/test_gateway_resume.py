"""Resume with replay (#101), over each binding (JSON-RPC, HTTP+JSON, gRPC), with real a2a-sdk
clients on loopback: a client subscribed to a long task is cut 10 times at random moments (its
connection dropped) and resubscribes with its last cursor each time, alternately at two
gateways on one broker: it gets every event of the task from its first, each once, in order.
A cursor older than what is kept is answered with the task and a said gap; a bad cursor, or one
past the task's newest event, is refused; SSE events carry their number as ``id``; the card
declares the extension."""

from __future__ import annotations

import asyncio
import contextlib

import grpc.aio
import httpx
import pytest
from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.client.client import ClientCallContext
from a2a.types.a2a_pb2 import (
    GetTaskRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SubscribeToTaskRequest,
)
from a2a.utils.errors import A2AError

from mq9_platform.a2a import mail as w
from mq9_platform.a2a.gateway import GATEWAY, reply_mailbox
from mq9_platform.a2a.sdk.executor import ExecutorServer
from testbed.support.waiting import until
from tests.integration.a2a.test_gateway_grpc import _StreamBearer, _UnaryBearer, grpc_gateway
from tests.langchain.a2a.test_gateway import AGENT, ALICE, BOB, until_stopped
from tests.platform.a2a.resume_support import Reader, Steps, cut_moments, place

pytestmark = pytest.mark.slow  # serves HTTP and gRPC in process

BINDINGS = ["JSONRPC", "HTTP+JSON", "GRPC"]
CUTS = 10


@contextlib.asynccontextmanager
async def a2a_client(agent_url: str, token: str, binding: str):
    """An a2a-sdk streaming client that speaks ``binding`` only."""
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=30) as http:
        card = await A2ACardResolver(http, agent_url).get_agent_card()

        def channel(url: str):
            return grpc.aio.insecure_channel(
                url, interceptors=[_UnaryBearer(token), _StreamBearer(token)]
            )

        config = ClientConfig(
            httpx_client=http,
            streaming=True,
            supported_protocol_bindings=[binding],
            grpc_channel_factory=channel,
        )
        yield ClientFactory(config).create(card)


def request(text: str) -> SendMessageRequest:
    msg = Message(message_id=w.new_id(), role=Role.ROLE_USER, parts=[Part(text=text)])
    req = SendMessageRequest(message=msg)
    req.configuration.return_immediately = True
    return req


async def started(a2a, executor: Steps) -> str:
    """A long task sent, once the agent runs it: its id."""
    async for event in a2a.send_message(request("go")):  # a stream: its first event
        task_id = event.task.id
        break
    await until(lambda: executor.started.is_set(), timeout=20, what="the task started")
    return task_id


@pytest.mark.parametrize("binding", BINDINGS)
async def test_a_client_cut_ten_times_gets_every_event_once_in_order(client, binding):
    executor = Steps()
    async with (
        ExecutorServer(executor, name=AGENT, client=client, worker="w1"),
        grpc_gateway(client) as one,
        grpc_gateway(client) as other,
        a2a_client(one, ALICE, binding) as at_one,
        a2a_client(other, ALICE, binding) as at_other,
    ):
        reader = Reader(await started(at_one, executor))
        for i, (read_for, pause) in enumerate(cut_moments(101, CUTS)):
            await reader.read(at_one if i % 2 == 0 else at_other, cut_after=read_for)
            assert not reader.ended, f"the task ended before cut {i + 1}"
            await asyncio.sleep(pause)  # events go on meanwhile
        executor.finish.set()
        await reader.read(at_other, cut_after=30)  # to the end
        print(f"#101 cut run, {binding}: {reader.summary()}")
        reader.check()
        assert reader.streams == CUTS + 1
        # Each resubscribe began with the task as it stands (A2A 9.4): a snapshot, no event
        assert all("snapshot" in p for p in reader.first_events[1:]), reader.first_events
        assert len(reader.got) > 2 * CUTS


async def test_a_cursor_older_than_what_is_kept_is_answered_with_a_gap(client):
    executor = Steps()
    async with (
        ExecutorServer(executor, name=AGENT, client=client, worker="w1"),
        grpc_gateway(client) as url,
        a2a_client(url, ALICE, "JSONRPC") as a2a,
    ):
        reader = Reader(await started(a2a, executor))
        await reader.read(a2a, cut_after=0.3)
        cursor = reader.cursor
        assert cursor is not None
        # The events after the cursor are no longer kept (expired, or deleted by a program)
        replies = w.caller_address(reply_mailbox(GATEWAY, "alice"))
        for seq in range(cursor + 1, cursor + 3):
            key = w.event_key(reader.task_id, seq)
            await until(lambda key=key: _kept(client, replies, key), timeout=20, what=f"{key} kept")
            for msg in await client.query(replies, key=key):
                await client.delete(replies, msg.msg_id)
        executor.finish.set()
        await reader.read(a2a, cut_after=30)
        [gap] = reader.gaps
        assert gap["after"] == cursor
        first = reader.first_events[-1]
        assert first["seq"] == gap["resumedAt"] > cursor  # the task as it stands, numbered
        after = reader.got[reader.got.index(int(first["seq"])) :]
        assert after == list(range(after[0], after[0] + len(after)))  # then every new event
        assert reader.ended


async def _kept(client, mailbox: str, key: str) -> bool:
    return bool(await client.query(mailbox, key=key))


async def test_a_replay_of_an_ended_task_goes_to_its_end_and_bad_cursors_are_refused(client):
    executor = Steps()
    async with (
        ExecutorServer(executor, name=AGENT, client=client, worker="w1"),
        grpc_gateway(client) as url,
        a2a_client(url, ALICE, "HTTP+JSON") as a2a,
        a2a_client(url, BOB, "HTTP+JSON") as bob,
    ):
        reader = Reader(await started(a2a, executor))
        await reader.read(a2a, cut_after=0.2)
        executor.finish.set()
        await until_stopped(a2a, reader.task_id)  # the task ends while the client is away
        await reader.read(a2a, cut_after=30)
        reader.check()
        newest = reader.cursor
        # Another tenant's subscription, cursor or not, finds no such task
        with pytest.raises(A2AError, match="not found"):
            await _first(bob, reader.task_id, "0")
        for bad, said in (("x1", "the number of an event"), (str(newest + 5), "past task")):
            with pytest.raises(A2AError, match=said):
                await _first(a2a, reader.task_id, bad)
        # Without a cursor an ended task is refused as before; with its newest, the task alone
        with pytest.raises(A2AError):
            await _first(a2a, reader.task_id, None)
        assert "snapshot" in place(await _first(a2a, reader.task_id, str(newest)))


async def _first(a2a, task_id: str, cursor: str | None):
    params = {"Last-Event-ID": cursor} if cursor is not None else None
    context = ClientCallContext(service_parameters=params) if params else None
    async for event in a2a.subscribe(SubscribeToTaskRequest(id=task_id), context=context):
        return event.task
    raise AssertionError("no event")


async def test_sse_events_carry_their_number_as_id_and_the_card_says_so(client):
    executor = Steps()
    async with (
        ExecutorServer(executor, name=AGENT, client=client, worker="w1"),
        grpc_gateway(client) as url,
        a2a_client(url, ALICE, "JSONRPC") as a2a,
        httpx.AsyncClient(headers={"Authorization": f"Bearer {ALICE}"}, timeout=30) as http,
    ):
        card = (await http.get(url + "/.well-known/agent-card.json")).json()
        [ext] = [e for e in card["capabilities"]["extensions"] if e["uri"] == w.RESUME_EXTENSION]
        assert ext["params"]["cursorHeader"] == "Last-Event-ID"
        task_id = await started(a2a, executor)
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SubscribeToTask",
            "params": {"id": task_id},
        }
        ids: list[int] = []
        async with http.stream(
            "POST", url, json=body, headers={"Last-Event-ID": "1", "A2A-Version": "1.0"}
        ) as stream:
            async for line in stream.aiter_lines():
                if line.startswith("id:"):
                    ids.append(int(line[3:]))
                if len(ids) >= 5:
                    break
        assert ids == list(range(2, 7))  # the snapshot first, without an id; then 2, 3, ...
        executor.finish.set()


async def test_the_mq9_binding_resumes_after_a_service_parameter_cursor(client):
    """An a2a-sdk client over the mq9 binding (no gateway): the same cursor and key, given as
    its call's service parameters."""
    from mq9_platform.a2a.sdk.transport import mq9_agent_card, register_mq9

    executor = Steps()
    async with ExecutorServer(executor, name=AGENT, client=client, worker="w1"):
        factory = ClientFactory(ClientConfig(supported_protocol_bindings=["mq9"], streaming=True))
        register_mq9(factory, client, reply_mailbox="app.calls")
        a2a = factory.create(await mq9_agent_card(client, AGENT))
        reader = Reader(await started(a2a, executor))
        for read_for, pause in cut_moments(7, 3):
            await reader.read(a2a, cut_after=read_for)
            await asyncio.sleep(pause)
        executor.finish.set()
        await reader.read(a2a, cut_after=30)
        reader.check()
        assert all("snapshot" in p for p in reader.first_events[1:]), reader.first_events


async def test_events_past_their_time_are_a_gap_and_later_ones_replay(broker, client):
    """A task's events stay ``event_ttl`` seconds (here 60, on the broker's hand-moved clock):
    a cursor whose next event expired is answered with the task and a said gap."""
    if broker.clock is None:
        pytest.skip("needs the bundled broker's clock")
    executor = Steps()
    async with (
        ExecutorServer(executor, name=AGENT, client=client, worker="w1", event_ttl=60),
        grpc_gateway(client) as url,
        a2a_client(url, ALICE, "GRPC") as a2a,
    ):
        reader = Reader(await started(a2a, executor))
        await reader.read(a2a, cut_after=0.3)
        cursor = reader.cursor
        assert cursor is not None

        async def two_more() -> bool:  # events the client has not seen, then expired
            task = await a2a.get_task(GetTaskRequest(id=reader.task_id))
            return int(place(task).get("seq", 0)) >= cursor + 2

        await until(two_more, timeout=20, what="two events after the cursor")
        broker.clock.advance(61)  # the events so far expire; the task goes on
        executor.finish.set()
        await reader.read(a2a, cut_after=30)
        [gap] = reader.gaps
        assert gap["after"] == cursor and gap["resumedAt"] > cursor
        assert reader.ended


async def test_a_cursor_too_far_behind_is_a_gap_not_a_thousand_reads(client, monkeypatch):
    """A resubscribe replays at most ``MAX_REPLAY`` events (each a read of the reply mailbox):
    a cursor further behind is answered with the task and a said gap (here the bound is 3)."""
    from mq9_platform.a2a.sdk import transport

    monkeypatch.setattr(transport, "MAX_REPLAY", 3)
    executor = Steps()
    async with (
        ExecutorServer(executor, name=AGENT, client=client, worker="w1"),
        grpc_gateway(client) as url,
        a2a_client(url, ALICE, "HTTP+JSON") as a2a,
    ):
        task_id = await started(a2a, executor)

        async def six() -> bool:
            task = await a2a.get_task(GetTaskRequest(id=task_id))
            return int(place(task).get("seq", 0)) >= 6

        await until(six, timeout=20, what="six events")
        executor.finish.set()
        reader = Reader(task_id, cursor=1)
        await reader.read(a2a, cut_after=30)
        [gap] = reader.gaps
        assert gap["after"] == 1 and gap["resumedAt"] >= 6
        assert reader.ended
