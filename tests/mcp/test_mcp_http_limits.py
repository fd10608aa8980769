"""Bounds on mq9-mcp's HTTP sessions (--max-sessions, --session-idle-timeout): a flood of empty
sessions from one process neither grows the server without limit nor locks honest clients out;
idle sessions are closed and their state freed. Real MCP clients against a real server on
127.0.0.1; idle time comes from an injected clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
import pytest
import uvicorn
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mq9_mcp.cli import build_parser
from mq9_mcp.http import create_http_app, uvicorn_config
from mq9_mcp.http.auth import PRINCIPAL
from mq9_mcp.http.sessions import SessionLimits
from mq9_mcp.server import create_server
from mq9_platform.client.connection import Mq9Connection
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import ACCEPT, INITIALIZE, REQUEST_TIMEOUT, http_server, ok
from testbed.support.waiting import until

pytestmark = pytest.mark.slow


@asynccontextmanager
async def sdk_session(url: str) -> AsyncIterator[ClientSession]:
    """The official MCP client, initialized (it also holds a GET event stream open)."""
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(20, read=60)) as http,
        streamable_http_client(url, http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session,
    ):
        await session.initialize()
        yield session


class RawSession:
    """A session driven request by request (no event stream held open, as a flood does)."""

    def __init__(self, http: httpx.AsyncClient, url: str) -> None:
        self.http, self.url, self.id = http, url, ""

    async def open(self) -> httpx.Response:
        response = await self.http.post(self.url, json=INITIALIZE, headers=ACCEPT)
        self.id = response.headers.get("mcp-session-id", "")
        return response

    async def post(self, message: dict[str, Any]) -> httpx.Response:
        headers = {**ACCEPT, "mcp-session-id": self.id, "mcp-protocol-version": "2025-06-18"}
        return await self.http.post(self.url, json=message, headers=headers)

    async def start(self) -> None:
        assert (await self.open()).status_code == 200
        initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        assert (await self.post(initialized)).status_code == 202

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        message = {"jsonrpc": "2.0", "id": 2, "method": "tools/call"}
        response = await self.post({**message, "params": {"name": tool, "arguments": arguments}})
        assert response.status_code == 200, response.text
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        result = json.loads(data[-1])["result"]
        assert not result.get("isError"), result
        return result["structuredContent"]

    async def status(self) -> int:
        """The HTTP status a request of this session gets now (a ping)."""
        return (await self.post({"jsonrpc": "2.0", "id": 3, "method": "ping"})).status_code


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Served:
    url: str
    limits: SessionLimits
    clock: Clock

    async def sdk_forgets(self, session_id: str) -> None:
        """Until the SDK's task for a closed session has ended (it ends at once)."""
        instances = self.limits.manager._server_instances
        # it holds within moments (no time passes in the test's clock)
        await until(
            lambda: session_id not in instances, timeout=5, what=f"the SDK to drop {session_id}"
        )

    async def settled(self, *sessions: RawSession) -> None:
        """Until the server has finished its side of these sessions' requests (a client can
        have the whole answer a moment before), so moving the clock cannot race them."""
        table = self.limits.sessions

        def done() -> bool:
            return all(s.id not in table or not table[s.id].in_flight for s in sessions)

        await until(done, timeout=5, what="every request served")


class _Uvicorn(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:  # the test runner keeps its own handlers
        yield


@asynccontextmanager
async def served(
    max_sessions: int, idle_timeout: float = 60.0, auth_token: str | None = None
) -> AsyncIterator[Served]:
    """The HTTP app in this process on 127.0.0.1, with a clock the test moves."""
    connection = Mq9Connection("memory://")
    server = create_server(connection, sessions_compete=True)
    clock = Clock()
    app = create_http_app(
        server,
        connection,
        auth_token=auth_token,
        max_sessions=max_sessions,
        session_idle_timeout=idle_timeout,
        clock=clock,
    )
    port = unclaimed_port()
    inner = app
    while not hasattr(inner, "state"):  # the Starlette app, under the middleware around it
        inner = inner.app
    limits = inner.state.session_limits
    result = Served(f"http://127.0.0.1:{port}/mcp", limits, clock)
    uv = _Uvicorn(uvicorn_config(app, "127.0.0.1", port))
    task = asyncio.create_task(uv.serve())
    try:

        def started() -> bool:
            assert not task.done(), "uvicorn stopped while starting"
            return uv.started

        await until(started, timeout=30, what="uvicorn started", every=0.01)
        yield result
    finally:
        uv.should_exit = True
        await task


async def test_a_flood_of_empty_sessions_evicts_only_its_own_and_honest_clients_keep_working():
    # The real command line: a local process opens sessions by the dozen and never calls a tool.
    with http_server("--server", "memory://", "--max-sessions", "4") as url:
        async with (
            httpx.AsyncClient(timeout=20) as http,
            sdk_session(url) as honest,
        ):
            mailbox = (await ok(honest, "create_mailbox"))["mail_address"]
            flood = [RawSession(http, url) for _ in range(40)]
            opened = await asyncio.gather(*(s.open() for s in flood))
            # Every one got in (each replaced an older empty one)...
            assert [r.status_code for r in opened] == [200] * 40
            # ...so all but the 3 last to get in (of 4 slots, the honest session holds one) are
            # closed (404); which 3 depends on the order the 40 concurrent opens finished in
            statuses = [await s.status() for s in flood]
            assert statuses.count(200) == 3 and statuses.count(404) == 37
            # the honest session that did work was never touched,
            await ok(honest, "send_message", mail_address=mailbox, payload="still here")
            # and a newcomer gets in during the flood and works.
            async with sdk_session(url) as newcomer:
                found = await ok(newcomer, "query_messages", mail_address=mailbox)
                assert [m["payload"] for m in found["messages"]] == ["still here"]


async def test_with_every_session_in_use_a_new_one_gets_503_saying_when_to_retry():
    async with served(max_sessions=2, idle_timeout=60) as srv, httpx.AsyncClient() as http:
        workers = [RawSession(http, srv.url) for _ in range(2)]
        for worker in workers:
            await worker.start()
            await worker.call("create_mailbox")
        await srv.settled(*workers)
        srv.clock.now += 20  # the older worker has 40 s left before it counts as idle

        refused = await RawSession(http, srv.url).open()
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "40"
        error = refused.json()["error"]
        assert error["code"] == -32603
        assert error["message"].startswith(
            "mq9-mcp is at its limit of 2 open sessions, all in use: retry in 40 s"
        )
        assert "--max-sessions" in error["message"]
        assert "mcp-session-id" not in refused.headers
        # The sessions in use were not disturbed.
        assert [await w.status() for w in workers] == [200, 200]
        assert srv.limits.refused == 1
        await srv.settled(*workers)

        # Once one has been idle for the timeout, a newcomer gets its place.
        srv.clock.now += 60
        assert (await RawSession(http, srv.url).open()).status_code == 200
        assert [await w.status() for w in workers] == [404, 404]


async def test_an_idle_session_is_closed_and_its_id_gets_404():
    async with served(max_sessions=10, idle_timeout=60) as srv, httpx.AsyncClient() as http:
        worked, empty, busy = (RawSession(http, srv.url) for _ in range(3))
        for session in (worked, empty, busy):
            await session.start()
        created = (await worked.call("create_mailbox"))["mail_address"]
        async with sdk_session(srv.url) as connected:
            (connected_id,) = set(srv.limits.sessions) - {worked.id, empty.id, busy.id}
            await srv.settled(worked, empty, busy)
            srv.clock.now += 59
            assert await busy.status() == 200  # a request restarts its idle time
            await srv.settled(busy)
            srv.clock.now += 1
            await srv.limits.expire_idle()

            # Closed: the SDK forgets them, their ids get 404.
            for session in (worked, empty):
                await srv.sdk_forgets(session.id)
                assert await session.status() == 404
            # The others stay: one was active 1 s ago, one holds its event stream open.
            assert await busy.status() == 200
            # What the tools remember belongs to the client, not to a session (MCP 2026-07-28
            # has none): the mailbox created in a closed session is still this client's.
            await ok(connected, "query_messages", mail_address=created)
            assert set(srv.limits.sessions) == {busy.id, connected_id}

        # A client that ends its session (DELETE) frees it at once.
        await srv.sdk_forgets(connected_id)
        assert list(srv.limits.sessions) == [busy.id]


@pytest.mark.parametrize(
    ("option", "value", "text"),
    [("--max-sessions", "0", "must be at least 1"),
     ("--session-idle-timeout", "-5", "must be above 0"),
     ("--session-idle-timeout", "soon", "not a number")],
)  # fmt: skip
def test_bad_limits_are_refused_with_the_option_named(option, value, text, capsys):
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["--transport", "http", option, value])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert f"argument {option}: invalid number" in error and text in error


def bound_to(address: str, **headers: str) -> httpx.AsyncClient:
    """An HTTP client whose connections come from ``address`` (any of 127.0.0.0/8)."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(transport=transport, headers=headers)


async def test_a_client_holding_every_slot_gives_way_to_another_client():
    """#22: one client that filled every slot with sessions that each called a tool locked
    every newcomer out (503, Retry-After 600 s). Now another client gets in, in its place."""
    async with served(max_sessions=3, idle_timeout=600) as srv, bound_to("127.0.0.2") as hog, \
            bound_to("127.0.0.3") as other:  # fmt: skip
        flood = [RawSession(hog, srv.url) for _ in range(3)]
        for session in flood:
            await session.start()
            await session.call("create_mailbox")
            await srv.settled(session)
            srv.clock.now += 1  # the first is the least recently active
        # the client that holds every slot gets no more: nothing of its own is unused
        assert (await RawSession(hog, srv.url).open()).status_code == 503
        newcomer = RawSession(other, srv.url)
        await newcomer.start()
        assert (await newcomer.call("create_mailbox"))["mail_address"]
        await srv.settled(newcomer, *flood)
        assert [await s.status() for s in flood] == [404, 200, 200]
        # a second one of that client would hold as many as the hog: refused, nobody evicted
        assert (await RawSession(other, srv.url).open()).status_code == 503
        for session in flood[1:]:  # both still there; the first of them the less recent
            assert await session.status() == 200
            await srv.settled(*flood)
            srv.clock.now += 1
        # a third client holds none: the hog gives way once more
        async with bound_to("127.0.0.4") as third:
            await RawSession(third, srv.url).start()
        await srv.settled(*flood)
        assert [await s.status() for s in flood[1:]] == [404, 200]


async def test_clients_holding_one_session_each_give_way_to_a_client_holding_none():
    """#116: principals cost nothing where an identity provider lets anyone register, and each
    is a client: a crowd of them each holding one session that called a tool filled every slot,
    and every newcomer was refused (503) for the idle timeout. A client holding none now takes
    the least recently active idle session; one holding a session of its own gets no second."""
    async with served(max_sessions=3, idle_timeout=600) as srv:
        crowd = []
        for n in (2, 3, 4):
            async with bound_to(f"127.0.0.{n}") as http:
                session = RawSession(http, srv.url)
                await session.start()
                await session.call("create_mailbox")
                await srv.settled(session)
            crowd.append(session)
            srv.clock.now += 1  # the first is the least recently active
        async with bound_to("127.0.0.5") as http:
            newcomer = RawSession(http, srv.url)
            await newcomer.start()
            assert (await newcomer.call("create_mailbox"))["mail_address"]
            await srv.settled(newcomer)
            # it holds one now, as every other client does: a second is refused
            assert (await RawSession(http, srv.url).open()).status_code == 503
        assert [s.id in srv.limits.sessions for s in crowd] == [False, True, True]
        assert srv.limits.evicted == 1


async def test_respelling_the_bearer_scheme_does_not_make_another_client():
    """#35: the fair share counted ``Bearer T``, ``bearer T``, ``BEARER T`` and ``Bearer  T`` as
    four clients (the token check reads them alike), so one token holder took every slot."""
    async with served(max_sessions=3, idle_timeout=600, auth_token="T") as srv, \
            bound_to("127.0.0.2", Authorization="Bearer T") as hog:  # fmt: skip
        flood = [RawSession(hog, srv.url) for _ in range(3)]
        for session in flood:
            await session.start()
            await session.call("create_mailbox")
            await srv.settled(session)
        for spelling in ("bearer T", "BEARER T", "Bearer  T"):
            async with bound_to("127.0.0.2", Authorization=spelling) as again:
                assert (await RawSession(again, srv.url).open()).status_code == 503, spelling
        assert [await s.status() for s in flood] == [200, 200, 200]


async def test_a_forwarded_for_header_does_not_make_another_client():
    """uvicorn believed ``X-Forwarded-For`` from 127.0.0.1: one local client naming a new
    address in each session counted as many clients, so a newcomer could evict none of them."""
    async with served(max_sessions=3, idle_timeout=600) as srv, \
            bound_to("127.0.0.3") as other:  # fmt: skip
        for n in range(3):
            async with bound_to("127.0.0.1", **{"X-Forwarded-For": f"10.0.0.{n}"}) as hog:
                session = RawSession(hog, srv.url)
                await session.start()
                await session.call("create_mailbox")
            await srv.settled(session)
        assert {s.client.split()[0] for s in srv.limits.sessions.values()} == {"127.0.0.1"}
        await RawSession(other, srv.url).start()  # the hog gives one of its three way
        assert len(srv.limits.sessions) == 3 and srv.limits.evicted == 1


async def test_the_token_is_checked_by_the_sdks_bearer_auth_which_binds_each_session():
    """The MCP SDK's bearer auth asks ``BearerToken``: a wrong token (or none) is answered 401,
    and the session the right one opens is bound to its principal by the SDK's session manager
    (one token: one principal, whatever its spelling)."""
    async with served(max_sessions=3, auth_token="T") as srv:
        for spelling in ("Bearer T", "bearer  T"):
            async with bound_to("127.0.0.2", Authorization=spelling) as http:
                session = RawSession(http, srv.url)
                await session.start()
                assert await session.status() == 200
        owners = srv.limits.manager._session_owners  # the SDK's binding, no public view of it
        assert [owner["client_id"] for owner in owners.values()] == [PRINCIPAL, PRINCIPAL]
        for refused in ("Bearer t", "Bearer T2", "Basic T", ""):
            async with bound_to("127.0.0.2", Authorization=refused) as http:
                response = await RawSession(http, srv.url).open()
                assert response.status_code == 401, refused
                assert response.headers["www-authenticate"].startswith("Bearer"), refused
