"""A task's events, resumable (issue #101; the draft SEP-2694, ``tasks/stream``): a client of
mq9-mcp over streamable HTTP (2026-07-28) follows a long task's events and is cut off 10 times
at random moments, the connection dropped or mq9-mcp SIGKILLed and started again on the same
port and broker, each time asking again ``after`` the last ``seq`` it handled: it gets every
event once, in order, the task's last status last. Then what the SEP asks at the edges: a
cursor older than what is kept (``events_gone``), a cursor that is no sequence number, another
client's task, a task that ended, a second stream of one task on one connection, and a real
tool's task (a waiting ``fetch_messages``) telling its status and result.

The long task is ``test_event_ticker`` (``task_stream_server.py``): mq9-mcp's own tasks and
timelines, with a tool that ticks."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx2 as httpx
import pytest
from mcp import types

from langchain_mq9.serving import AgentServer
from mq9_mcp import task_events
from mq9_platform import Mq9Client
from testbed.ports import unclaimed_port
from testbed.support.a2a_support import text_graph, text_io
from testbed.support.mcp_support import (
    ACCEPT,
    EXTENSION,
    LEGACY,
    MODERN,
    ROOT,
    Peer,
    served_engine,
    server_env,
)
from testbed.support.waiting import until, until_sync
from tests.mcp.task_stream_server import TICK, TICKER, serve_in_thread

pytestmark = pytest.mark.slow

CUTS = 10
TICKS = 240  # more than 10 cuts of at most 12 events each take
INTERVAL_MS = 25


def meta(worker: str) -> dict[str, Any]:
    return {
        types.PROTOCOL_VERSION_META_KEY: MODERN,
        types.CLIENT_INFO_META_KEY: {"name": worker, "version": "1"},
        types.CLIENT_CAPABILITIES_META_KEY: {"extensions": {EXTENSION: {}}},
    }


class Follower:
    """A client following one task's events with ``tasks/stream``, keeping the last seq it
    handled (as the SEP says: persisted only once the event is handled)."""

    def __init__(
        self, http: httpx.AsyncClient, url: str, task_id: str, worker: str, era: str = MODERN
    ) -> None:
        self.http, self.url, self.task_id, self.worker, self.era = http, url, task_id, worker, era
        self.seen: list[dict[str, Any]] = []
        self.done = False

    @property
    def last(self) -> int | None:
        return self.seen[-1]["seq"] if self.seen else None

    def request(self, after: Any = None, *, with_after: bool | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"taskId": self.task_id}
        if self.era == MODERN:
            params["_meta"] = meta(self.worker)
        if with_after if with_after is not None else after is not None:
            params["after"] = after
        return {"jsonrpc": "2.0", "id": 1, "method": "tasks/stream", "params": params}

    def headers(self) -> dict[str, str]:
        return {**ACCEPT, "mcp-protocol-version": MODERN, "mq9-worker": self.worker,
                "mcp-method": "tasks/stream"}  # fmt: skip

    async def follow(self, stop_after: int | None = None) -> str:
        """One ``tasks/stream`` after the last seq handled: until the request answers
        ("done"), ``stop_after`` events were handled ("cut": the connection dropped here) or
        the server went away ("gone")."""
        handled = 0
        try:
            async with self.http.stream(
                "POST", self.url, json=self.request(self.last), headers=self.headers()
            ) as response:
                assert response.status_code == 200, await response.aread()
                if response.headers.get("content-type", "").startswith("application/json"):
                    lines = [f"data:{(await response.aread()).decode()}"]  # answered at once
                else:
                    lines = response.aiter_lines()
                async for line in _each(lines):
                    if not line.startswith("data:") or not line[5:].strip():
                        continue
                    message = json.loads(line[5:])
                    if "id" in message:  # the answer: the stream ended, an empty result
                        # (2026-07-28 stamps every result with its resultType and serverInfo)
                        result = message.get("result")
                        assert isinstance(result, dict), message
                        assert set(result) <= {"resultType", "_meta"}, message
                        self.done = True
                        return "done"
                    if message.get("method") != task_events.NOTIFICATION:
                        continue
                    self.seen.append(message["params"])
                    handled += 1
                    if stop_after is not None and handled >= stop_after:
                        return "cut"  # leaving the block closes the connection
        except (httpx.TransportError, httpx.RemoteProtocolError):
            return "gone"
        return "gone"  # the server ended the response without an answer


async def _each(lines: Any) -> AsyncIterator[str]:
    if isinstance(lines, list):
        for line in lines:
            yield line
    else:
        async for line in lines:
            yield line


def check_timeline(seen: list[dict[str, Any]], task_id: str, ticks: int) -> None:
    """Every event once, in order: seq 0, 1, 2, ..., the ticks in order between the task's
    first status and its last."""
    seqs = [event["seq"] for event in seen]
    assert seqs == list(range(len(seen))), f"missed or twice: {seqs}"
    assert all(e["taskId"] == task_id for e in seen)
    assert all(e["_meta"][task_events.RELATED_TASK] == {"taskId": task_id} for e in seen)
    ticked = [e["payload"]["n"] for e in seen if e["type"] == TICK]
    assert ticked == list(range(ticks)), ticked
    assert seen[0]["type"] == task_events.STATUS and seen[0]["payload"]["status"] == "working"
    assert seen[-1]["type"] == task_events.STATUS
    assert seen[-1]["payload"]["status"] == "completed"
    assert seen[-1]["payload"]["result"]["content"][0]["text"] == str(ticks)


async def start_ticker(peer: Peer, ticks: int = TICKS, interval_ms: int = INTERVAL_MS) -> str:
    answer = await peer.call(TICKER, count=ticks, interval_ms=interval_ms)
    assert answer["result"]["resultType"] == "task", answer
    return answer["result"]["taskId"]


@contextmanager
def ticker_process(broker: str, port: int, *options: str) -> Any:
    """The ticker server as a process of its own (so it can be SIGKILLed): yields a function
    that kills it and starts it again on the same port."""
    state: dict[str, subprocess.Popen] = {}

    def start() -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "tests.mcp.task_stream_server", "--server", broker,
             "--port", str(port), "--log-level", "warning", *options],
            cwd=ROOT, env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        state["process"] = process

        def listening() -> bool:
            if process.poll() is not None:
                raise RuntimeError("the ticker server exited while starting")
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True

        until_sync(listening, timeout=60, what=f"the ticker server on {port}", every=0.05,
                   ignoring=(OSError,))  # fmt: skip

    def kill_and_start() -> None:
        state["process"].send_signal(signal.SIGKILL)
        state["process"].wait()
        start()

    start()
    try:
        yield kill_and_start
    finally:
        state["process"].kill()
        state["process"].wait()


@asynccontextmanager
async def client(url: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(60, connect=10)) as http:
        yield http


@pytest.mark.parametrize("cut", ["connection-dropped", "server-killed"])
async def test_a_task_followed_through_ten_cuts_gets_every_event_once_in_order(nats_server, cut):
    rng = random.Random(101)  # random moments, the same ones every run
    port = unclaimed_port()
    async with served_engine(nats_server.url):
        with ticker_process(nats_server.url, port) as kill_and_start:
            url = f"http://127.0.0.1:{port}/mcp"
            async with client(url) as http:
                peer = await Peer(http, url, MODERN, "follower").open()
                task_id = await start_ticker(peer)
                follower = Follower(http, url, task_id, "follower")
                cuts, outcomes = 0, []
                while not follower.done:
                    if cuts < CUTS:
                        moment = rng.randint(1, 12)
                        if cut == "connection-dropped":
                            outcome = await follower.follow(stop_after=moment)
                        else:  # the server SIGKILLed while the client reads
                            wanted = len(follower.seen) + moment
                            reading = asyncio.ensure_future(follower.follow())

                            def read_enough(r: Any = reading, n: int = wanted) -> bool:
                                return len(follower.seen) >= n or r.done()

                            await until(read_enough, timeout=60, what=f"{moment} events more")
                            await asyncio.to_thread(kill_and_start)
                            outcome = await reading
                        outcomes.append(outcome)
                        cuts += 1
                    else:
                        await follower.follow()
                # each cut came in the middle of the task, where it was meant to
                expected = "cut" if cut == "connection-dropped" else "gone"
                assert outcomes == [expected] * CUTS, outcomes
                check_timeline(follower.seen, task_id, TICKS)
                assert len(follower.seen) == TICKS + 2  # working, the ticks, completed
                # and tasks/get agrees: the task completed, with the ticker's result
                got = (await peer.rpc("tasks/get", taskId=task_id))["result"]
                assert got["status"] == "completed", got
                if cut == "server-killed":  # a server started again knows it from the store:
                    await asyncio.to_thread(kill_and_start)
                    async with client(url) as fresh:
                        thief = await Peer(fresh, url, MODERN, "thief").open()
                        error = await rpc_error(thief, "tasks/get", taskId=task_id)
                        assert "no task" in error["message"], error  # its owner's only
                        owner = await Peer(fresh, url, MODERN, "follower").open()
                        got = (await owner.rpc("tasks/get", taskId=task_id))["result"]
                        assert got["status"] == "completed", got
                        assert got["result"]["content"][0]["text"] == str(TICKS)
                        again = Follower(fresh, url, task_id, "follower")
                        again.seen = follower.seen[-3:]
                        assert await again.follow() == "done"  # nothing after the last
                        assert again.seen == follower.seen[-3:]
                        replay = Follower(fresh, url, task_id, "follower")
                        assert await replay.follow() == "done"  # from the first, once more
                        assert replay.seen == follower.seen


async def rpc_error(peer: Peer, method: str, **params: Any) -> dict[str, Any]:
    answer = await peer.rpc(method, **params)
    assert "error" in answer, answer
    return answer["error"]


async def test_the_edges_of_a_stream(monkeypatch):
    monkeypatch.setattr(task_events, "MAX_EVENTS", 5)  # in this process: the server's too
    with serve_in_thread("--server", "memory://") as url:
        async with client(url) as http:
            peer = await Peer(http, url, MODERN, "alice").open()
            task_id = await start_ticker(peer, ticks=12, interval_ms=100)  # past a poll: a task

            async def ended() -> bool:
                got = (await peer.rpc("tasks/get", taskId=task_id))["result"]
                return got["status"] == "completed"

            await until(ended, timeout=30, what="the ticker's task completed")
            # 14 events (working, 12 ticks, completed), the last 5 kept: no cursor, from them
            follower = Follower(http, url, task_id, "alice")
            assert await follower.follow() == "done"
            assert [e["seq"] for e in follower.seen] == [9, 10, 11, 12, 13]

            error = await rpc_error(peer, "tasks/stream", taskId=task_id, after=2)
            assert error["code"] == task_events.EVENTS_GONE, error
            assert error["data"] == {"reason": "events_gone", "taskId": task_id,
                                     "earliestSeq": 9}  # fmt: skip
            # after the last event of a task that ended: {} at once, no event
            tail = Follower(http, url, task_id, "alice")
            tail.seen = [{"seq": 13}]
            assert await tail.follow() == "done" and tail.seen == [{"seq": 13}]
            # a cursor that is no sequence number
            for bad in (-1, 1.5, "3", True):
                error = await rpc_error(peer, "tasks/stream", taskId=task_id, after=bad)
                assert error["code"] == types.INVALID_PARAMS, (bad, error)
            # another client's task answers as one that never was
            bob = await Peer(http, url, MODERN, "bob").open()
            error = await rpc_error(bob, "tasks/stream", taskId=task_id)
            assert error["code"] == types.INVALID_PARAMS and "no task" in error["message"]
            error = await rpc_error(peer, "tasks/stream", taskId="0" * 32)
            assert error["code"] == types.INVALID_PARAMS


async def test_a_waiting_fetch_run_as_a_task_tells_its_status_and_result():
    with serve_in_thread("--server", "memory://") as url:
        async with client(url) as http:
            peer = await Peer(http, url, MODERN, "carol").open()
            box = (await peer.data("create_mailbox", name="carol.inbox"))["mail_address"]
            answer = await peer.call("fetch_messages", mail_address=box, max_wait_ms=20000)
            task_id = answer["result"]["taskId"]
            follower = Follower(http, url, task_id, "carol")
            following = asyncio.ensure_future(follower.follow())
            await until(lambda: follower.seen, timeout=30, what="the task's first status")
            await peer.data("send_message", mail_address=box, payload="hello")
            assert await following == "done"
            statuses = [e["payload"]["status"] for e in follower.seen]
            assert statuses == ["working", "completed"], follower.seen
            fetched = follower.seen[-1]["payload"]["result"]["structuredContent"]
            assert [m["payload"] for m in fetched["messages"]] == ["hello"]


async def test_one_stream_of_a_task_per_connection_and_2025_clients_stream_too():
    with serve_in_thread("--server", "memory://") as url:
        async with client(url) as http:
            peer = await Peer(http, url, LEGACY, "dave").open()  # a session: one connection
            answer = await peer.call(TICKER, task=True, count=40, interval_ms=50)
            task_id = answer["result"]["task"]["taskId"]
            follower = Follower(http, url, task_id, "dave", LEGACY)
            follower.headers = peer.headers  # type: ignore[method-assign]  # its session
            following = asyncio.ensure_future(follower.follow())
            await until(lambda: follower.seen, timeout=30, what="the first event")
            error = await rpc_error(peer, "tasks/stream", taskId=task_id)
            assert error["code"] == types.INVALID_PARAMS and "open on this connection" in (
                error["message"]
            ), error
            assert await following == "done"
            check_timeline(follower.seen, task_id, 40)


async def test_a_waiting_fetch_is_taken_up_by_a_server_started_again(nats_server):
    port = unclaimed_port()
    async with served_engine(nats_server.url):
        with ticker_process(nats_server.url, port) as kill_and_start:
            url = f"http://127.0.0.1:{port}/mcp"
            async with client(url) as http:
                peer = await Peer(http, url, MODERN, "erin").open()
                box = (await peer.data("create_mailbox", name="erin.inbox"))["mail_address"]
                answer = await peer.call("fetch_messages", mail_address=box, max_wait_ms=30000)
                task_id = answer["result"]["taskId"]
                follower = Follower(http, url, task_id, "erin")
                reading = asyncio.ensure_future(follower.follow())
                await until(lambda: follower.seen, timeout=30, what="the task's first status")
            await asyncio.to_thread(kill_and_start)  # while the fetch waits
            assert await reading == "gone"
            async with client(url) as http:
                follower.http = http
                peer = await Peer(http, url, MODERN, "erin").open()
                following = asyncio.ensure_future(follower.follow())  # takes the task up
                await peer.data("send_message", mail_address=box, payload="after the restart")
                assert await following == "done"
    assert [e["seq"] for e in follower.seen] == [0, 1]
    assert [e["payload"]["status"] for e in follower.seen] == ["working", "completed"]
    fetched = follower.seen[-1]["payload"]["result"]["structuredContent"]["messages"]
    assert [m["payload"] for m in fetched] == ["after the restart"]


async def test_a_waiting_agent_call_is_taken_up_as_a_check_of_the_call(nats_server):
    """The call was sent and its task_id told (an io.mq9.call.state event) before mq9-mcp was
    SIGKILLed: the server started again follows the same call (check_call), never calls the
    agent a second time, and the task completes with the agent's answer."""
    release = asyncio.Event()
    ran: list[str] = []

    async def upper(text: str) -> str:
        ran.append(text)
        await asyncio.wait_for(release.wait(), 60)
        return text.upper()

    port = unclaimed_port()
    calls = ("--calls", "--agent-mailbox", "agent.me")  # its calls kept in agent.me.calls
    async with (
        served_engine(nats_server.url),
        Mq9Client(nats_server.url) as agent_client,
        AgentServer(text_graph(upper), name="agent.upper", client=agent_client, **text_io()),
    ):
        with ticker_process(nats_server.url, port, *calls) as kill_and_start:
            url = f"http://127.0.0.1:{port}/mcp"
            async with client(url) as http:
                peer = await Peer(http, url, MODERN, "frank").open()
                arguments = {"agent": "agent.upper", "task": "hello", "wait_seconds": 60}
                answer = await peer.rpc("tools/call", name="call_agent", arguments=arguments)
                assert answer["result"].get("resultType") == "task", answer
                task_id = answer["result"]["taskId"]
                follower = Follower(http, url, task_id, "frank")
                reading = asyncio.ensure_future(follower.follow())

                def told_the_call() -> bool:
                    return any(e["type"] == task_events.CALL_STATE for e in follower.seen)

                await until(told_the_call, timeout=60, what="the call's first state")
            await asyncio.to_thread(kill_and_start)
            assert await reading == "gone"
            release.set()
            async with client(url) as http:
                follower.http = http
                while not follower.done:
                    await follower.follow()
    assert ran == ["hello"]  # the agent was called once
    seqs = [e["seq"] for e in follower.seen]
    assert seqs == list(range(len(seqs))), seqs
    last = follower.seen[-1]["payload"]
    assert last["status"] == "completed", last
    assert last["result"]["structuredContent"]["result"] == "HELLO", last
    states = [e["payload"]["state"] for e in follower.seen if e["type"] == task_events.CALL_STATE]
    assert states[-1] == "completed", states
