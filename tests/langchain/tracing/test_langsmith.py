"""LangSmith across agents (issue #44): a run that sends a task is the parent of the run that
handles it in another agent, as LangSmith records them (a local fake of its endpoint, no
network); the receiver's runs go to its own project, whatever the message says. LangSmith's
runs are the LangChain face's: importing ``langchain_mq9`` registers them (issue #108)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from langsmith import Client, traceable, tracing_context
from langsmith.run_helpers import get_current_run_tree

from langchain_mq9.langsmith_runs import LANGSMITH_TRACE, RUNS
from langchain_mq9.serving import AgentServer
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.tracing import run_tracing
from testbed.support.a2a_support import text_graph, text_io

INBOX = "agent.worker"
pytestmark = pytest.mark.slow  # a fake LangSmith endpoint served in process, over HTTP


class FakeLangSmith(ThreadingHTTPServer):
    """LangSmith's run endpoints on loopback: every run created or updated, by id."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Endpoint)
        self.runs: dict[str, dict] = {}
        self.changed = threading.Condition()
        # LangSmith's own client, pointed here (posting each run as it starts and ends)
        self.client = Client(api_url=self.url, api_key="fake-key", auto_batch_tracing=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def wait_for(self, names: set[str]) -> dict[str, dict]:
        """The runs by name, once LangSmith's client has posted each one ended."""
        with self.changed:
            assert self.changed.wait_for(lambda: names <= self._ended(), timeout=10), self.runs
            return {run["name"]: run for run in self.runs.values() if run.get("name") in names}

    def _ended(self) -> set[str]:
        return {r.get("name") for r in self.runs.values() if r.get("end_time")}


class _Endpoint(BaseHTTPRequestHandler):
    server: FakeLangSmith

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        with self.server.changed:
            self.server.runs.setdefault(body["id"], {}).update(body)
            self.server.changed.notify_all()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_PATCH = do_POST

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def langsmith() -> Iterator[FakeLangSmith]:
    fake = FakeLangSmith()
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        fake.shutdown()
        fake.server_close()
        thread.join()


async def handle_one(broker, langsmith: FakeLangSmith) -> dict:
    """The receiver: its own project, its handler a traced run. What that run saw."""
    seen: asyncio.Queue = asyncio.Queue()

    @traceable(name="handle task")
    async def handle(message) -> None:
        run = get_current_run_tree()
        await seen.put({"parent": str(run.parent_run_id), "trace": str(run.trace_id)})

    async with broker.client() as receiver:
        own = {"client": langsmith.client, "project_name": "receiver-project"}
        with tracing_context(enabled=True, **own):
            consumer = await receiver.consume(INBOX, handle, group_name="w", deliver="earliest")
        try:
            return await asyncio.wait_for(seen.get(), 10)
        finally:
            await consumer.stop()


async def test_the_handling_run_is_a_child_of_the_sending_run(broker, langsmith):
    @traceable(name="plan")
    async def plan(client) -> str:
        await client.send(INBOX, "summarize the report")
        return str(get_current_run_tree().id)

    async with broker.client() as sender:
        await sender.mailbox_create(name=INBOX)
        with tracing_context(client=langsmith.client, enabled=True, project_name="sender-project"):
            sender_run = await plan(sender)
        [held] = await sender.query(INBOX)
    assert "baggage" not in held.header  # the sender's project and replicas stay its own
    seen = await handle_one(broker, langsmith)

    runs = langsmith.wait_for({"plan", "handle task"})
    assert seen["parent"] == sender_run == runs["handle task"]["parent_run_id"]
    assert runs["handle task"]["trace_id"] == runs["plan"]["trace_id"] == seen["trace"]
    assert runs["plan"]["session_name"] == "sender-project"
    assert runs["handle task"]["session_name"] == "receiver-project"


async def test_a_message_cannot_choose_the_receivers_project(broker, langsmith):
    sender_run = "019a0000-0000-7000-8000-000000000001"
    async with broker.client() as sender:
        await sender.mailbox_create(name=INBOX)
        headers = {
            "langsmith-trace": f"20261124T012350649740Z{sender_run}",
            "baggage": "langsmith-project=theirs,langsmith-replicas=%5B%22http%3A//evil%22%5D",
        }
        await sender.send(INBOX, "job", headers=headers)
    seen = await handle_one(broker, langsmith)
    runs = langsmith.wait_for({"handle task"})
    assert seen["parent"] == sender_run  # a link to the sender's run, and nothing more
    assert runs["handle task"]["session_name"] == "receiver-project"


async def test_a_served_graph_runs_under_the_callers_run(client, langsmith):
    """call_agent -> serve_agent -> result in LangSmith: the served graph's run (LangChain's
    own tracer) is a child of the caller's run."""
    own = {"client": langsmith.client, "enabled": True}
    server = AgentServer(
        text_graph(str.upper), name="agent.upper", client=client, worker="w1", **text_io()
    )
    with tracing_context(project_name="agent-project", **own):
        await server.start()
    try:
        caller = await AgentCaller(client, "agent.boss.calls").open()

        @traceable(name="delegate")
        async def delegate() -> str:
            done = await caller.call("agent.upper", "summarize", wait=10)
            assert done.state == "TASK_STATE_COMPLETED", done
            return str(get_current_run_tree().id)

        with tracing_context(project_name="boss-project", **own):
            delegating = await delegate()
    finally:
        await server.stop()
    graph = langsmith.wait_for({"LangGraph"})["LangGraph"]
    assert graph["parent_run_id"] == delegating
    assert graph["session_name"] == "agent-project"


@pytest.mark.parametrize(
    "value",
    [
        "99991399T999999999999Z019a0000-0000-7000-8000-000000000001",  # LangSmith would raise
        "not a dotted order",
        "20261124T012350649740Z019a0000-0000-7000-8000-000000000001" * 200,
    ],
)
async def test_a_hostile_run_header_is_ignored_and_the_message_handled(broker, langsmith, value):
    async with broker.client() as sender:
        await sender.mailbox_create(name=INBOX)
        await sender.send(INBOX, "job", headers={"langsmith-trace": value})
    seen = await handle_one(broker, langsmith)
    assert seen["parent"] == "None"  # a run of its own: no parent of the sender's choosing


async def test_a_run_with_tracing_switched_off_is_not_carried(broker, langsmith):
    """Inside a run, ``tracing_context(enabled=False)`` switches LangSmith off for a branch:
    the run tree is still current, so the SEND must also ask whether tracing is on."""

    @traceable(name="plan")
    async def plan(client) -> None:
        assert get_current_run_tree() is not None
        with tracing_context(enabled=False):
            await client.send(INBOX, "quiet")
        await client.send(INBOX, "traced")

    assert run_tracing() is RUNS  # registered by importing langchain_mq9
    async with broker.client() as sender:
        await sender.mailbox_create(name=INBOX)
        with tracing_context(client=langsmith.client, enabled=True):
            await plan(sender)
        quiet, traced = await sender.query(INBOX)
    assert LANGSMITH_TRACE == "langsmith-trace"  # the wire's name: peers of every version
    assert LANGSMITH_TRACE not in quiet.header
    assert LANGSMITH_TRACE in traced.header
