"""ListTasks through the gateway (#71, the TCK's run time): a tenant's tasks of the agent asked
about, none of another agent's it called from the same reply mailbox, none of another tenant's;
and the broker requests one ListTasks makes do not grow with the tasks listed (it read each
call's state, three queries a task one after the other, before reading the tasks again)."""

from __future__ import annotations

import contextlib
import secrets
import uuid

import httpx

from mq9_broker import BrokerEngine, drop_memory_broker, install_memory_broker
from mq9_platform import Mq9Client
from mq9_platform.a2a.gateway import Tenants, gateway_app
from mq9_platform.a2a.server import AgentServer
from mq9_wire.protocol.subjects import MSG_QUERY
from testbed.ports import unclaimed_port
from testbed.support.a2a_support import text_graph, text_io
from tests.platform.a2a.http_agents import serve_http

ONE, TWO = "agent.one", "agent.two"
ALICE, BOB = secrets.token_hex(16), secrets.token_hex(16)


class CountingEngine(BrokerEngine):
    """The bundled broker, counting the QUERY requests it answers."""

    queries = 0

    async def handle(self, subject, headers, body):
        if subject.startswith(MSG_QUERY):
            self.queries += 1
        return await super().handle(subject, headers, body)


@contextlib.asynccontextmanager
async def two_agents():
    """Both agents served, one gateway in front of them; yields (engine, base URL)."""
    name = f"list{uuid.uuid4().hex}"
    engine = install_memory_broker(name, CountingEngine())
    try:
        async with Mq9Client(f"memory://{name}") as client:
            servers = [
                AgentServer(text_graph(str.upper), name=n, client=client, worker="w", **text_io())
                for n in (ONE, TWO)
            ]
            for server in servers:
                await server.start()
            try:
                port = unclaimed_port()
                base = f"http://127.0.0.1:{port}"
                tenants = Tenants({"alice": ALICE, "bob": BOB})
                app = await gateway_app(client, [ONE, TWO], tenants=tenants, public_url=base)
                async with serve_http(app, port):
                    yield engine, base
            finally:
                for server in servers:
                    await server.stop()
    finally:
        drop_memory_broker(name)


async def rpc(http, base, agent, token, method, params):
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    headers = {"Authorization": f"Bearer {token}", "A2A-Version": "1.0"}
    answer = (await http.post(f"{base}/a2a/{agent}", json=body, headers=headers)).json()
    assert "result" in answer, answer
    return answer["result"]


async def send(http, base, agent, token, text):
    message = {"messageId": secrets.token_hex(4), "role": "ROLE_USER", "parts": [{"text": text}]}
    task = (await rpc(http, base, agent, token, "SendMessage", {"message": message}))["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED", task
    return task["id"]


async def listed(http, base, agent, token):
    found = await rpc(http, base, agent, token, "ListTasks", {})
    return {t["id"] for t in found.get("tasks", [])}


async def test_list_tasks_shows_the_agents_tasks_in_requests_that_do_not_grow(tmp_path):
    async with two_agents() as (engine, base), httpx.AsyncClient(timeout=60) as http:
        ones = {await send(http, base, ONE, ALICE, f"one {i}") for i in range(2)}
        two = await send(http, base, TWO, ALICE, "two")
        await send(http, base, ONE, BOB, "bob's")

        before = engine.queries
        assert await listed(http, base, ONE, ALICE) == ones
        few = engine.queries - before

        ones |= {await send(http, base, ONE, ALICE, f"more {i}") for i in range(10)}
        before = engine.queries
        assert await listed(http, base, ONE, ALICE) == ones
        assert engine.queries - before == few  # 12 tasks listed in as many queries as 2

        # Another agent called from the same reply mailbox, another tenant: theirs alone
        assert await listed(http, base, TWO, ALICE) == {two}
        assert await listed(http, base, TWO, BOB) == set()
        assert len(await listed(http, base, ONE, BOB)) == 1
