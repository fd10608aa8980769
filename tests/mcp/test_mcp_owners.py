"""mq9-mcp shared by several clients (#51): every task, question, stream and reader belongs to
the client that made it. A second client (another ``Mq9-Worker``) plays the attacker against the
first in both eras (2025-11-25 with a session, 2026-07-28 stateless with the Tasks extension),
on ``memory://`` and on the dev broker: each attempt on the first client's work is answered as
for an id that never existed, and nothing of the first client's changes. The bounds are checked
on the stores themselves, with owners named directly and the clock injected."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest
from mcp import Client, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from mq9_mcp import owners, tasks, watch
from mq9_platform.operations.catalog import OperationError, ToolPolicy
from testbed.support.mcp_support import LEGACY, MODERN, Peer, Updates, http_server, served_engine

ERAS = (LEGACY, MODERN)


def task_id_of(answer: dict) -> str:
    result = answer["result"]
    return result["task"]["taskId"] if "task" in result else result["taskId"]


def as_unknown(answer: dict, task_id: str) -> dict:
    """An error answer with the task id it names made neutral: equal for equal refusals."""
    error = dict(answer["error"])
    error["message"] = error["message"].replace(task_id[:64], "ID")
    return error


@contextlib.asynccontextmanager
async def shared_server(where: str, nats_url: str) -> AsyncIterator[str]:
    """One mq9-mcp over HTTP on ``memory://`` or the dev broker (an engine on nats-server); a
    mailbox a client creates is its own (``--allowed-mailboxes``)."""
    rules = ("--allowed-mailboxes", "team")
    if where == "memory":
        with http_server("--server", "memory://", *rules) as url:
            yield url
    else:
        async with served_engine(nats_url):
            with http_server("--server", nats_url, *rules) as url:
                yield url


@contextlib.asynccontextmanager
async def two_clients(where: str, nats_url: str, era: str) -> AsyncIterator[tuple[Peer, Peer]]:
    async with (
        shared_server(where, nats_url) as url,
        httpx.AsyncClient(timeout=httpx.Timeout(20, read=60)) as http,
    ):
        yield (
            await Peer(http, url, era, "alice").open(),
            await Peer(http, url, era, "mallory").open(),
        )


@pytest.mark.slow
@pytest.mark.parametrize("where", ["memory", "nats"])
@pytest.mark.parametrize("era", ERAS)
async def test_another_clients_tasks_answer_as_ids_that_never_existed(nats_server, era, where):
    async with two_clients(where, nats_server.url, era) as (alice, mallory):
        inbox = (await alice.data("create_mailbox"))["mail_address"]
        await alice.data("send_message", mail_address=inbox, payload="alice's secret")
        assert (await mallory.call("query_messages", mail_address=inbox))["result"]["isError"]
        # a fetch task holding alice's message, unread, and one still waiting
        done = task_id_of(await alice.call("fetch_messages", task=True, mail_address=inbox,
                                           max_wait_ms=5000))  # fmt: skip
        empty = (await alice.data("create_mailbox"))["mail_address"]
        waiting = task_id_of(await alice.call("fetch_messages", task=True, mail_address=empty,
                                              max_wait_ms=30_000))  # fmt: skip

        attempts = [("tasks/get", {}), ("tasks/cancel", {})]
        attempts += [("tasks/result", {}), ("tasks/list", {})] if era == LEGACY else []
        attempts += [("tasks/update", {"inputResponses": {"mq9-answer:1:x": {}}})] * (era == MODERN)
        for method, extra in attempts:
            if method == "tasks/list":
                assert (await mallory.rpc(method))["result"]["tasks"] == []
                continue
            for task_id in (done, waiting):
                stolen = await mallory.rpc(method, taskId=task_id, **extra)
                never = await mallory.rpc(method, taskId="never-existed-1234", **extra)
                assert "error" in stolen, (method, stolen)
                assert as_unknown(stolen, task_id) == as_unknown(never, "never-existed-1234")

        # nothing of alice's changed: her waiting fetch still waits, her message is hers to read
        state = await alice.rpc("tasks/get", taskId=waiting)
        assert state["result"]["status"] == "working", state
        if era == LEGACY:
            listed = (await alice.rpc("tasks/list"))["result"]["tasks"]
            assert {t["taskId"] for t in listed} == {done, waiting}
            result = (await alice.rpc("tasks/result", taskId=done))["result"]
        else:
            async with asyncio.timeout(20):
                while "result" not in (
                    view := (await alice.rpc("tasks/get", taskId=done))["result"]
                ):
                    await asyncio.sleep(0.1)
            result = view["result"]
        [message] = result["structuredContent"]["messages"]
        assert message["payload"] == "alice's secret"
        await alice.rpc("tasks/cancel", taskId=waiting)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["memory", "nats"])
@pytest.mark.parametrize("era", ERAS)
async def test_made_up_worker_names_never_rotate_another_clients_reader_away(
    nats_server, era, where
):
    async with two_clients(where, nats_server.url, era) as (alice, mallory):
        await alice.data("create_mailbox", name="team.jobs")
        await alice.data("send_message", mail_address="team.jobs", payload="job 1")
        [handed] = (await alice.data("fetch_messages", mail_address="team.jobs"))["messages"]
        for n in range(owners.MAX_WORKERS + 1):  # each a new client the server must remember
            await mallory.rpc("tools/call", worker=f"made-up-{n}", name="query_messages",
                              arguments={"mail_address": "team.jobs"})  # fmt: skip
        # alice's reader still knows what it handed her: her ack confirms it
        acked = await alice.data("ack_messages", mail_address="team.jobs", msg_id=handed["msg_id"])
        assert acked["confirmed"] == [handed["msg_id"]], acked
        # and mallory never got it
        assert (await mallory.data("fetch_messages", mail_address="team.jobs"))["messages"] == []


@pytest.mark.slow
@pytest.mark.parametrize("where", ["memory", "nats"])
async def test_another_clients_load_never_evicts_an_unread_fetch_task(nats_server, where):
    """2025-11-25 (the era where any call may ask for a task): a flood of quick tasks from a
    second client leaves the first's finished, unread fetch task and the message it holds."""
    async with two_clients(where, nats_server.url, LEGACY) as (alice, mallory):
        inbox = (await alice.data("create_mailbox"))["mail_address"]
        await alice.data("send_message", mail_address=inbox, payload="alice's job")
        held = task_id_of(await alice.call("fetch_messages", task=True, mail_address=inbox))
        own = (await mallory.data("create_mailbox"))["mail_address"]
        for _ in range(tasks.MAX_TASKS + 1):  # each finished at once, none ever read
            await mallory.call("fetch_messages", task=True, mail_address=own, max_wait_ms=0)
        answer = await alice.rpc("tasks/result", taskId=held)
        assert "result" in answer, answer
        result = answer["result"]
        [message] = result["structuredContent"]["messages"]
        assert message["payload"] == "alice's job"
        acked = await alice.data("ack_messages", mail_address=inbox, msg_id=message["msg_id"])
        assert acked["confirmed"] == [message["msg_id"]]


@contextlib.asynccontextmanager
async def sdk_client(
    url: str, era: str, worker: str, updates: Updates, address: str | None = None
) -> AsyncIterator[Client]:
    """The SDK's own client in ``era`` (``legacy``: 2025-11-25), as worker ``worker``, its
    connections from ``address`` (a loopback address: another peer)."""
    headers = {"mq9-worker": worker}
    transport = httpx.AsyncHTTPTransport(local_address=address) if address else None
    timeout = httpx.Timeout(20, read=60)
    async with (
        httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport) as http,
        Client(streamable_http_client(url, http_client=http), mode=era, message_handler=updates,
               read_timeout_seconds=20) as client,
    ):  # fmt: skip
        yield client


@pytest.mark.slow
@pytest.mark.parametrize("where", ["memory", "nats"])
@pytest.mark.parametrize("era", ["legacy", MODERN])
async def test_another_client_can_neither_end_nor_crowd_out_a_subscription(nats_server, era, where):
    uri = "mq9://mailbox/team.watched"
    alices, mallorys = Updates(), Updates()
    async with (
        shared_server(where, nats_server.url) as url,
        sdk_client(url, era, "alice", alices, "127.0.0.2") as alice,  # another peer
        sdk_client(url, era, "mallory", mallorys) as mallory,
    ):
        await alice.call_tool("create_mailbox", {"name": "team.watched"})
        if era == "legacy":
            with warnings.catch_warnings():  # removed at 2026-07-28, which these are not
                warnings.simplefilter("ignore")
                await alice.subscribe_resource(uri)
                await mallory.unsubscribe_resource(uri)  # answered, and it acts on her own only
            await mallory.call_tool(
                "send_message", {"mail_address": "team.watched", "payload": "1"}
            )
            assert await alices.next() == uri
            return
        async with contextlib.AsyncExitStack() as held:  # mallory takes all her streams
            for _ in range(watch.MAX_STREAMS_PER_OWNER):
                await held.enter_async_context(mallory.listen(resource_subscriptions=[uri]))
            with pytest.raises(MCPError, match="listen streams"):
                async with mallory.listen(resource_subscriptions=[uri]):
                    pass
            async with alice.listen(resource_subscriptions=[uri]) as stream:  # alice still may
                await mallory.call_tool("send_message", {"mail_address": "team.watched",
                                                         "payload": "1"})  # fmt: skip
                event = await asyncio.wait_for(anext(aiter(stream)), 20)
                assert event.uri == uri


# -- the bounds, on the stores themselves -----------------------------------------------------


class Ctx:
    """What a store reads of a request: its owner (by ``owner_of``) and its era."""

    def __init__(self, owner: str, protocol_version: str = LEGACY) -> None:
        self.owner, self.protocol_version, self.method = owner, protocol_version, "tasks/x"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def store(clock: Clock | None = None) -> tasks.TaskStore:
    return tasks.TaskStore(lambda ctx: ctx.owner, clock or Clock())


async def finished(_ask: object) -> types.CallToolResult:
    return types.CallToolResult(content=[])


async def settled(task: Any) -> Any:
    await asyncio.wait({task.runner})
    return task


async def test_one_owners_load_never_evicts_anothers_unread_or_running_task(monkeypatch):
    monkeypatch.setattr(tasks, "MAX_TASKS", 4)
    monkeypatch.setattr(tasks, "MAX_TASKS_PER_OWNER", 3)
    tasks_ = store()
    release = asyncio.Event()

    async def blocked(_ask: object) -> types.CallToolResult:
        await release.wait()
        return types.CallToolResult(content=[])

    unread = await settled(await tasks_.start("alice", finished, None))
    running = await tasks_.start("alice", blocked, None)
    # mallory fills her share, then the server: nothing of alice's makes room
    mine = [await settled(await tasks_.start("mallory", finished, None)) for _ in range(2)]
    assert await tasks_.start("mallory", finished, None) is None
    assert {unread.task_id, running.task_id} <= set(tasks_.tasks)
    # a result mallory has read makes room for her next one, as may alice's once she read it
    await tasks_.result(Ctx("mallory"), types.GetTaskPayloadRequestParams(task_id=mine[0].task_id))
    assert await tasks_.start("mallory", finished, None) is not None
    assert mine[0].task_id not in tasks_.tasks
    assert {unread.task_id, running.task_id} <= set(tasks_.tasks)
    release.set()


async def test_an_owner_at_its_share_makes_room_only_from_its_own_read_tasks(monkeypatch):
    monkeypatch.setattr(tasks, "MAX_TASKS_PER_OWNER", 2)
    tasks_ = store()
    first, second = [await settled(await tasks_.start("alice", finished, None)) for _ in range(2)]
    assert await tasks_.start("alice", finished, None) is None  # both unread
    assert await tasks_.start("bob", finished, None) is not None  # another owner's share is his own
    await tasks_.result(Ctx("alice"), types.GetTaskPayloadRequestParams(task_id=second.task_id))
    assert await tasks_.start("alice", finished, None) is not None
    assert set(tasks_.tasks) >= {first.task_id} and second.task_id not in tasks_.tasks


async def test_a_finished_task_is_forgotten_its_ttl_after_it_was_made():
    clock = Clock()
    tasks_ = store(clock)
    task = await settled(await tasks_.start("alice", finished, 5000))
    clock.now += 4.9
    await tasks_.start("alice", finished, None)
    assert task.task_id in tasks_.tasks
    clock.now += 0.2
    await tasks_.start("alice", finished, None)
    assert task.task_id not in tasks_.tasks


async def test_tasks_list_shows_only_the_callers_tasks():
    tasks_ = store()
    mine = await settled(await tasks_.start("alice", finished, None))
    await settled(await tasks_.start("bob", finished, None))
    listed = await tasks_.list(Ctx("alice"), None)
    assert [t["taskId"] for t in listed["tasks"]] == [mine.task_id]
    with pytest.raises(MCPError) as stolen:
        await tasks_.get(Ctx("bob"), types.GetTaskRequestParams(task_id=mine.task_id))
    with pytest.raises(MCPError) as never:
        await tasks_.get(Ctx("bob"), types.GetTaskRequestParams(task_id="x" * 22))
    assert stolen.value.error.code == never.value.error.code
    assert stolen.value.error.message.replace(mine.task_id, "ID") == (
        never.value.error.message.replace("x" * 22, "ID")
    )


class Request:
    """What ``ClientPolicies`` reads of an HTTP request: its scope and headers."""

    def __init__(self, worker: str, peer: str = "127.0.0.1") -> None:
        self.headers = {owners.WORKER_HEADER: worker}
        self.scope = {"type": "http", "client": (peer, 5000), "headers": []}


def test_a_clients_reader_with_work_is_never_forgotten_for_a_newcomer(monkeypatch):
    monkeypatch.setattr(owners, "MAX_WORKERS", 3)
    policies = owners.ClientPolicies(ToolPolicy(), workers_from_header=True)
    alice = policies.of(Request("alice"))
    alice.created.add("alice.private")  # work the server must not drop
    for n in range(10):  # idle made-up names replace each other
        policies.of(Request(f"made-up-{n}"))
    assert policies.of(Request("alice")) is alice
    for n in range(2):  # made-up names that hold work themselves fill the rest
        policies.of(Request(f"busy-{n}")).created.add(f"busy.{n}")
    with pytest.raises(OperationError, match="3 clients"):
        policies.of(Request("one-too-many"))
    assert policies.of(Request("alice")) is alice


def test_the_same_worker_name_from_another_peer_is_another_client():
    policies = owners.ClientPolicies(ToolPolicy(), workers_from_header=True)
    alice = policies.of(Request("alice"))
    assert policies.of(Request("alice", peer="10.0.0.9")) is not alice
    assert policies.of(Request("alice")) is alice


def test_one_client_cannot_hold_every_listen_stream(monkeypatch):
    monkeypatch.setattr(watch, "MAX_STREAMS", 4)
    monkeypatch.setattr(watch, "MAX_STREAMS_PER_OWNER", 2)
    watches = watch.Watches(connection=None, timeout=1)  # type: ignore[arg-type]
    for _ in range(2):
        watches.open_stream(object(), "mallory")
    with pytest.raises(MCPError, match="at most 2 listen streams"):
        watches.open_stream(object(), "mallory")
    watches.open_stream(object(), "alice")  # another client still gets one
