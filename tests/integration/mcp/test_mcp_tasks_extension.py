"""The MCP Tasks extension of 2026-07-28 (``io.modelcontextprotocol/tasks``, SEP-2663; #37):
a client that declares it gets a waiting call as a task (``resultType: "task"``), polls
``tasks/get`` until the result is in it, and may cancel it; a call that does not wait, and a
client that does not declare the extension, get today's answer. Over HTTP and over stdio, with
the SDK's own ``Client`` in its 2026-07-28 mode: the extension's client side (a claim on the
``task`` result and the ``tasks/*`` requests) is written here, in a few lines, as the SDK's
extension interface asks."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import httpx2 as httpx
import pytest
from mcp import Client, types
from mcp.client.extension import ClaimContext, ClientExtension, ResultClaim
from mcp.shared.exceptions import MCPError

from langchain_mq9.serving import AgentServer
from mq9_platform import Mq9Client
from testbed.support.a2a_support import asking, text_graph, text_io
from testbed.support.mcp_support import (
    Peer,
    http_server,
    result_data,
    served_engine,
    stdio_parameters,
)
from testbed.support.waiting import until

pytestmark = pytest.mark.slow  # starts mq9-mcp

MODERN = "2026-07-28"
EXTENSION = "io.modelcontextprotocol/tasks"


class CreatedTask(types.Result):
    """``CreateTaskResult``: the task instead of the call's result."""

    result_type: Literal["task"]
    task_id: str
    status: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class DetailedTask(types.Result):
    """``tasks/get``'s answer: the task, with the call's result once it completed, or the
    questions it waits on."""

    task_id: str
    status: str
    result: dict[str, Any] | None = None
    input_requests: dict[str, Any] | None = None


User = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class Tasks(ClientExtension):
    """The client side of the extension: declares it, and turns a task into the call's result
    by polling ``tasks/get`` (``Client.call_tool`` then returns that result), answering each
    question in the task's ``inputRequests`` with ``user``'s answer (``tasks/update``)."""

    identifier = EXTENSION

    def __init__(self, user: User | None = None) -> None:
        self.created: list[CreatedTask] = []
        self.user = user
        self.asked: list[dict[str, Any]] = []
        self.keys: list[str] = []  # SEP-2663: a client skips a key it has seen, not a request

    def claims(self) -> list[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreatedTask, resolve=self.settle)]

    async def settle(self, created: CreatedTask, ctx: ClaimContext) -> types.CallToolResult:
        self.created.append(created)

        async def completed() -> DetailedTask | None:
            task = await get(ctx.session, created.task_id)
            if task.status == "completed":
                return task
            assert task.status in ("working", "input_required"), task
            await self.answer(ctx.session, task)
            return None

        # polled faster than pollIntervalMs: a test
        what = f"task {created.task_id} completed"
        task = await until(completed, timeout=20, what=what, every=0.05)
        assert task.result is not None, task
        return types.CallToolResult.model_validate(task.result)

    async def answer(self, session: Any, task: DetailedTask) -> None:
        """Each question of ``task`` not answered yet, put to the user, answered."""
        for key, asked in (task.input_requests or {}).items():
            if self.user is not None and key not in self.keys:
                self.keys.append(key)
                self.asked.append(asked)
                answers = {key: await self.user(asked)}
                await request(session, "tasks/update", types.Result, taskId=task.task_id,
                              inputResponses=answers)  # fmt: skip


async def request(session: Any, method: str, result: type[types.Result], **params: Any) -> Any:
    return await session.send_request(types.Request[Any, Any](method=method, params=params), result)


async def get(session: Any, task_id: str) -> DetailedTask:
    return await request(session, "tasks/get", DetailedTask, taskId=task_id)


@contextlib.asynccontextmanager
async def connected(transport: str, tasks: Tasks | None) -> AsyncIterator[Client]:
    """A 2026-07-28 client of a fresh mq9-mcp on ``memory://``, declaring the extension when
    given ``tasks``."""
    options: dict[str, Any] = {"mode": "auto", "read_timeout_seconds": 20}
    options["extensions"] = [tasks] if tasks else None
    if transport == "http":
        with http_server("--server", "memory://") as url:
            async with Client(url, **options) as client:
                yield client
    else:
        async with Client(stdio_parameters("--server", "memory://"), **options) as client:
            yield client


TRANSPORTS = ("http", "stdio")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_waiting_fetch_is_a_task_whose_result_comes_by_polling(transport):
    tasks = Tasks()
    async with connected(transport, tasks) as client:
        assert client.protocol_version == MODERN
        # the Tasks extension, its settings empty as SEP-2663 defines them (a strict client,
        # the Inspector's, sees any other as the extension not offered: test_inspector.py;
        # tasks/stream is served all the same: test_mcp_task_stream.py), beside MCP Events'
        # (test_mcp_events.py)
        assert client.server_capabilities.extensions == {
            EXTENSION: {},
            "io.modelcontextprotocol/events": {},
        }
        assert client.server_capabilities.tasks is None  # 2025-11-25's form is not offered
        box = result_data(await client.call_tool("create_mailbox", {}))["mail_address"]

        # the server answers at once with the task; the fetch waits on, not holding a request
        waiting = {"mail_address": box, "max_wait_ms": 20000}
        created = await client.session.call_tool("fetch_messages", waiting, allow_claimed=True)
        assert isinstance(created, CreatedTask) and created.status == "working"
        assert created.ttl_ms and created.poll_interval_ms
        assert (await get(client.session, created.task_id)).status == "working"
        sent = await client.call_tool("send_message", {"mail_address": box, "payload": "hi"})
        assert not sent.is_error

        async with asyncio.timeout(20):
            while (task := await get(client.session, created.task_id)).status == "working":
                await asyncio.sleep(0.05)
        assert task.status == "completed"
        fetched = types.CallToolResult.model_validate(task.result)
        assert [m["payload"] for m in result_data(fetched)["messages"]] == ["hi"]

        # Client.call_tool settles a task through the extension: the caller sees the result
        await client.call_tool("send_message", {"mail_address": box, "payload": "again"})
        again = await client.call_tool("fetch_messages", waiting)
        assert [m["payload"] for m in result_data(again)["messages"]] == ["again"]
        assert len(tasks.created) == 1


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_call_that_does_not_wait_is_answered_at_once(transport):
    tasks = Tasks()
    async with connected(transport, tasks) as client:
        box = result_data(await client.call_tool("create_mailbox", {}))["mail_address"]
        at_once = await client.session.call_tool(
            "fetch_messages", {"mail_address": box}, allow_claimed=True
        )
        assert isinstance(at_once, types.CallToolResult)
        assert result_data(at_once)["messages"] == []
        wrong = await client.session.call_tool(
            "fetch_messages", {"mail_address": box, "max_wait_ms": "soon"}, allow_claimed=True
        )
        assert isinstance(wrong, types.CallToolResult) and wrong.is_error
        assert tasks.created == []


async def test_a_task_is_cancelled_and_the_extensions_methods_answer_as_specified():
    async with connected("stdio", Tasks()) as client:
        session = client.session
        box = result_data(await client.call_tool("create_mailbox", {}))["mail_address"]
        waiting = {"mail_address": box, "max_wait_ms": 20000}
        created = await session.call_tool("fetch_messages", waiting, allow_claimed=True)

        # tasks/update: acknowledged (nothing here asks for input, so nothing is outstanding)
        update = {"taskId": created.task_id, "inputResponses": {"k": {"action": "decline"}}}
        assert await request(session, "tasks/update", types.Result, **update) is not None
        assert await request(session, "tasks/cancel", types.Result, taskId=created.task_id)
        assert (await get(session, created.task_id)).status == "cancelled"
        # cancelling again is acknowledged too: cancellation is a request, not a state check
        assert await request(session, "tasks/cancel", types.Result, taskId=created.task_id)

        with pytest.raises(MCPError) as unknown:
            await get(session, "no-such-task")
        assert unknown.value.error.code == types.INVALID_PARAMS
        # 2025-11-25's tasks/result and tasks/list are not part of the extension
        for method in ("tasks/result", "tasks/list"):
            with pytest.raises(MCPError) as missing:
                await request(session, method, types.Result, taskId=created.task_id)
            assert missing.value.error.code == types.METHOD_NOT_FOUND, method


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_client_without_the_extension_gets_results_and_no_tasks(transport):
    async with connected(transport, None) as client:
        assert client.protocol_version == MODERN
        box = result_data(await client.call_tool("create_mailbox", {}))["mail_address"]
        await client.call_tool("send_message", {"mail_address": box, "payload": "hi"})
        waited = await client.session.call_tool(
            "fetch_messages", {"mail_address": box, "max_wait_ms": 20000}, allow_claimed=True
        )
        assert isinstance(waited, types.CallToolResult)
        assert [m["payload"] for m in result_data(waited)["messages"]] == ["hi"]
        # SEP-2663: tasks/* from a client that did not declare the extension: -32021
        with pytest.raises(MCPError) as refused:
            await get(client.session, "anything")
        assert refused.value.error.code == types.MISSING_REQUIRED_CLIENT_CAPABILITY
        required = refused.value.error.data["requiredCapabilities"]
        assert required == {"extensions": {EXTENSION: {}}}


async def french(_asked: dict[str, Any]) -> dict[str, Any]:
    return {"action": "accept", "content": {"answer": "French"}}


async def declines(_asked: dict[str, Any]) -> dict[str, Any]:
    return {"action": "decline"}


class Forgetful:
    """A user whose first answer leaves the input out (``given``), then answers French."""

    def __init__(self, given: dict[str, Any]) -> None:
        self.answers = [given, {"action": "accept", "content": {"answer": "French"}}]

    async def __call__(self, _asked: dict[str, Any]) -> dict[str, Any]:
        return self.answers.pop(0)


async def unused_callback(_context: Any, _params: Any) -> types.ElicitResult:
    raise AssertionError("a task's question comes through tasks/get, not elicitation/create")


@pytest.mark.parametrize("user", [french, declines, None])
async def test_an_agents_question_in_a_task_goes_to_the_user_through_the_task(nats_server, user):
    """A call_agent run as a task whose agent asks: the task says input_required with the
    question as an elicitation, the client's tasks/update answers it, and the task completes
    with the agent's result; declined, or for a client without elicitation (``user`` None), it
    completes with the question for the model."""
    tasks = Tasks(user)
    server = stdio_parameters("--server", nats_server.url, "--calls", "--agent-mailbox", "me")
    options: dict[str, Any] = {"mode": "auto", "extensions": [tasks], "read_timeout_seconds": 30}
    if user is not None:  # the client declares elicitation
        options["elicitation_callback"] = unused_callback
    async with (
        served_engine(nats_server.url),
        Mq9Client(nats_server.url) as mq9,
        AgentServer(text_graph(asking), name="agent.asking", client=mq9, **text_io()),
        Client(server, **options) as client,
    ):
        call = {"agent": "agent.asking", "task": "hello", "wait_seconds": 20}
        done = result_data(await client.call_tool("call_agent", call))
    assert len(tasks.created) == 1
    if user is None:
        assert tasks.asked == []
        assert (done["state"], done["question"]) == ("input-required", "Which language?")
        return
    [asked] = tasks.asked
    assert asked["method"] == "elicitation/create"
    assert asked["params"]["message"].endswith("asks: Which language?")
    if user is french:
        assert (done["state"], done["result"]) == ("completed", "hello in French")
    else:
        assert (done["state"], done["question"]) == ("input-required", "Which language?")


ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z")


def bare(answer: dict[str, Any]) -> dict[str, Any]:
    """A 2026-07-28 result without what every result carries (its type, the server's stamp)."""
    return {k: v for k, v in answer["result"].items() if k not in ("resultType", "_meta")}


async def test_the_suites_tasks_checks_hold_for_a_waiting_fetch():
    """The conformance suite's tasks-* scenarios call fixture tools of its own (slow_compute,
    failing_job): their checks, played here with mq9's task-capable ``fetch_messages``."""
    with http_server("--server", "memory://") as url:
        async with httpx.AsyncClient(timeout=httpx.Timeout(20, read=60)) as http:
            peer = Peer(http, url, MODERN, "alice")  # the extension in each request's _meta
            box = (await peer.data("create_mailbox"))["mail_address"]
            # tasks-lifecycle / tasks-wire-fields: a flat CreateTaskResult
            created = (await peer.call("fetch_messages", mail_address=box, max_wait_ms=30_000))[
                "result"
            ]
            assert created["resultType"] == "task" and "task" not in created, created
            assert created["status"] == "working" and isinstance(created["ttlMs"], int)
            assert ISO.fullmatch(created["createdAt"]) and ISO.fullmatch(created["lastUpdatedAt"])
            task_id = created["taskId"]
            assert (await peer.rpc("tasks/get", taskId=task_id))["result"]["status"] == "working"
            await peer.data("send_message", mail_address=box, payload="job")
            async with asyncio.timeout(20):
                while (got := (await peer.rpc("tasks/get", taskId=task_id))["result"])[
                    "status"
                ] == "working":
                    await asyncio.sleep(0.1)
            assert got["status"] == "completed", got
            [message] = got["result"]["structuredContent"]["messages"]
            assert message["payload"] == "job"
            related = "io.modelcontextprotocol/related-task"
            assert related not in got["result"].get("_meta", {})  # inlined: no related-task
            # a cancel of a finished task is acknowledged, with an empty result, every time
            for _ in range(2):
                assert bare(await peer.rpc("tasks/cancel", taskId=task_id)) == {}

            # a tool error ends the task "completed", the error in its result ("failed" is
            # kept for JSON-RPC errors)
            failing = await peer.call("fetch_messages", mail_address="no.such.box",
                                      max_wait_ms=30_000)  # fmt: skip
            failing_id = failing["result"]["taskId"]
            async with asyncio.timeout(20):
                while (got := (await peer.rpc("tasks/get", taskId=failing_id))["result"])[
                    "status"
                ] == "working":
                    await asyncio.sleep(0.1)
            assert got["status"] == "completed" and got["result"]["isError"], got

            # a waiting task cancelled: acknowledged at once, then "cancelled"
            waiting = await peer.call("fetch_messages", mail_address=box, max_wait_ms=30_000)
            waiting_id = waiting["result"]["taskId"]
            assert bare(await peer.rpc("tasks/cancel", taskId=waiting_id)) == {}
            state = (await peer.rpc("tasks/get", taskId=waiting_id))["result"]["status"]
            assert state == "cancelled"


@pytest.mark.parametrize(
    "given",
    [{"action": "accept", "content": {}}, {"roots": []}],
    ids=["accepted-without-the-answer", "a-response-of-another-kind"],
)
async def test_an_update_without_the_input_asks_again_in_the_task(nats_server, given):
    """#71: a tasks/update answering the agent's question without the input (SEP-2322) leaves
    the task input_required with the same question under a new key (a client skips keys it
    has seen); the answer to that one completes the task, as in a call."""
    tasks = Tasks(Forgetful(given))
    server = stdio_parameters("--server", nats_server.url, "--calls", "--agent-mailbox", "me")
    options: dict[str, Any] = {"mode": "auto", "extensions": [tasks], "read_timeout_seconds": 30}
    async with (
        served_engine(nats_server.url),
        Mq9Client(nats_server.url) as mq9,
        AgentServer(text_graph(asking), name="agent.asking", client=mq9, **text_io()),
        Client(server, elicitation_callback=unused_callback, **options) as client,
    ):
        call = {"agent": "agent.asking", "task": "hello", "wait_seconds": 20}
        done = result_data(await client.call_tool("call_agent", call))
    assert (done["state"], done["result"]) == ("completed", "hello in French")
    first, again = tasks.asked
    assert first == again and first["params"]["message"].endswith("asks: Which language?")
    assert len(set(tasks.keys)) == 2
