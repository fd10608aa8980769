"""The A2A gateway: an HTTP A2A call through ``mq9-a2a-gateway`` to an mq9 agent,
against the same call made directly to an HTTP A2A agent, both on loopback.

The agent is one a2a-sdk ``AgentExecutor`` (it answers the text in capitals) served two ways:
by a2a-sdk's own HTTP server (the baseline), and over mq9 (``serve_executor``) behind the
gateway, with the dev broker's engine on a real nats-server, announcing arrivals (as
``mq9-dev-broker --announce``: the agent's reader and the gateway wake at each). The client is
the same a2a-sdk client, a blocking SendMessage each round, rounds interleaved. 16a has the
agent answer at once (the gateway's whole cost); 16b gives it 1 s of work, as an agent that
calls a model takes. 16c is the spread of 16a's calls with the agent in a process of its own
(as deployed): their p99 against their p50 over 200 calls (the gateway listens from before
each send: else an answer announced while its send had not returned would be heard by no one,
and that call would wait the 1 s sweep). A figure gives 16a without announcements (both
sides poll: RobustMQ's way).
"""

from __future__ import annotations

import asyncio
import secrets
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .config import Config
from .results import Check, Section

TITLE = "The A2A gateway: an HTTP A2A call through mq9 vs direct (target 16)"


def _executor(pause: float) -> Any:
    from a2a.helpers.proto_helpers import new_task
    from a2a.server.agent_execution import AgentExecutor
    from a2a.server.tasks import TaskUpdater
    from a2a.types.a2a_pb2 import Part, TaskState

    class Upper(AgentExecutor):
        async def execute(self, context, event_queue) -> None:  # type: ignore[no-untyped-def]
            if context.current_task is None:
                submitted = TaskState.TASK_STATE_SUBMITTED
                await event_queue.enqueue_event(
                    new_task(context.task_id, context.context_id, submitted)
                )
            updater = TaskUpdater(event_queue, context.task_id, context.context_id)
            if pause:
                await asyncio.sleep(pause)
            await updater.add_artifact([Part(text=context.get_user_input().upper())])
            await updater.complete()

        async def cancel(self, context, event_queue) -> None:  # type: ignore[no-untyped-def]
            pass

    return Upper()


async def _serve(app: Any, port: int) -> Any:
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    return server, task


class Timings:
    """Seconds per blocking SendMessage (through the gateway, direct: interleaved rounds), the
    seconds of one broker round trip each round (a QUERY from the same process), and how many
    broker requests the agent and the gateway made for the calls through the gateway."""

    def __init__(self) -> None:
        self.through: list[float] = []
        self.direct: list[float] = []
        self.round_trip: list[float] = []
        self.requests = 0


def _counted(client: Any, timings: Timings) -> None:
    """Count each request ``client`` sends to the broker while a call is timed."""
    transport = client._transport
    request = transport.request

    async def counted(*args: Any, **kwargs: Any) -> Any:
        timings.requests += 1
        return await request(*args, **kwargs)

    transport.request = counted


async def _agent_apart(url: str, name: str, pause: float) -> None:
    """The agent served in this process until stdin ends: ``python -m bench.a2a_gateway``."""
    from langchain_mq9 import Mq9Client
    from mq9_platform.a2a.sdk.executor import serve_executor

    async with Mq9Client(url) as client:
        agent = await serve_executor(_executor(pause), name=name, client=client, worker="w")
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        await agent.stop()


def _start_agent_apart(url: str, name: str, pause: float) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.a2a_gateway", url, name, str(pause)],
        cwd=Path(__file__).resolve().parents[1],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        raise RuntimeError("the agent's process did not start")
    return process


async def _timings(url: str, rounds: int, pause: float, *, apart: bool = False) -> Timings:
    """The figures of ``rounds`` rounds (``Timings``); ``apart``: the agent in a process of
    its own (as deployed: an announcement may then come while the gateway's send has not
    returned), the direct rounds and round trips still taken."""
    import httpx
    from a2a.client import ClientConfig, ClientFactory
    from a2a.client.card_resolver import A2ACardResolver
    from a2a.server.request_handlers import DefaultRequestHandlerV2
    from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
    from a2a.server.tasks import InMemoryTaskStore
    from a2a.types.a2a_pb2 import AgentCard, Message, Part, Role, SendMessageRequest
    from starlette.applications import Starlette

    from langchain_mq9 import Mq9Client
    from mq9_platform.a2a.gateway import Tenants, gateway_app
    from mq9_platform.a2a.sdk.executor import serve_executor
    from mq9_platform.a2a.sdk.protojson import to_proto
    from testbed.ports import unclaimed_port

    token = secrets.token_hex(16)
    name = f"bench.upper.{time.time_ns()}"
    direct_port, gateway_port = unclaimed_port(), unclaimed_port()
    direct_base = f"http://127.0.0.1:{direct_port}"
    card = to_proto(
        {
            "name": "upper",
            "description": "answers the text in capitals",
            "version": "1.0.0",
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": [
                {"id": "upper", "name": "upper", "description": "capitals", "tags": ["upper"]}
            ],
            "supportedInterfaces": [
                {
                    "url": direct_base + "/rpc",
                    "protocolBinding": "JSONRPC",
                    "protocolVersion": "1.0",
                }
            ],
            "capabilities": {"streaming": True},
        },
        AgentCard,
    )
    handler = DefaultRequestHandlerV2(_executor(pause), InMemoryTaskStore(), card)
    direct_app = Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/rpc")]
    )
    async with Mq9Client(url) as agent_client, Mq9Client(url) as gateway_client:
        if apart:
            process = await asyncio.to_thread(_start_agent_apart, url, name, pause)
        else:
            agent = await serve_executor(
                _executor(pause), name=name, client=agent_client, worker="w"
            )
        app = await gateway_app(
            gateway_client,
            [name],
            tenants=Tenants({"bench": token}),
            public_url=f"http://127.0.0.1:{gateway_port}",
        )
        servers = [await _serve(direct_app, direct_port), await _serve(app, gateway_port)]
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(headers=headers, timeout=60) as http:
            clients = []
            for base in (f"http://127.0.0.1:{gateway_port}/a2a/{name}", direct_base):
                found = await A2ACardResolver(http, base).get_agent_card()
                config = ClientConfig(httpx_client=http, streaming=False)
                clients.append(ClientFactory(config).create(found))

            async def one(client: Any, i: int) -> float:
                msg = Message(message_id=str(i), role=Role.ROLE_USER, parts=[Part(text=f"r{i}")])
                began = time.perf_counter()
                events = [e async for e in client.send_message(SendMessageRequest(message=msg))]
                took = time.perf_counter() - began
                if events[-1].task.artifacts[0].parts[0].text != f"R{i}":
                    raise RuntimeError(f"round {i} ended {events[-1]}")
                return took

            await one(clients[0], -1)  # warm both paths up
            await one(clients[1], -1)
            timings = Timings()
            for client in (agent_client, gateway_client):
                _counted(client, timings)
            for i in range(rounds):
                timings.through.append(await one(clients[0], i))
                timings.direct.append(await one(clients[1], i))
                began = time.perf_counter()
                await gateway_client.query(name, key="none")
                timings.round_trip.append(time.perf_counter() - began)
            await asyncio.sleep(0.5)  # the last call's own ends (the request marked done)
            timings.requests -= rounds  # the round trips timed
        for server, task in servers:
            server.should_exit = True
            await task
        if apart:
            assert process.stdin is not None
            process.stdin.close()
            await asyncio.to_thread(process.wait, 30)
        else:
            await agent.stop()
    return timings


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _check(key: str, what: str, through: list[float], direct: list[float]) -> Check:
    ours, base = statistics.median(through), statistics.median(direct)
    return Check(
        key=key,
        title=f"a blocking SendMessage, {what}, on loopback: through mq9-a2a-gateway to the "
        "agent served over mq9 (dev broker on nats-server) vs direct to a2a-sdk's HTTP server",
        ours_label="through the gateway",
        ours=_ms(ours),
        baseline_label="direct HTTP A2A",
        baseline=_ms(base),
        ratio=ours / base,
        op="<=",
        limit=1.5,
    )


def _p90(values: list[float]) -> str:
    return _ms(statistics.quantiles(values, n=10)[-1])


def _p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _spread_of(timings: Timings) -> str:
    """p99 / p50, the slowest call, and how many took over 3× the median."""
    through = timings.through
    p50 = statistics.median(through)
    over = sum(t > 3 * p50 for t in through)
    return (
        f"{_ms(_p99(through))} / {_ms(p50)} = {_p99(through) / p50:.2f}×; the slowest "
        f"{_ms(max(through))}; over 3× the median: {over} of {len(through)}"
    )


def _spread(through: list[float]) -> Check:
    p50, p99 = statistics.median(through), _p99(through)
    return Check(
        key="16c",
        title=f"the spread of 16a's calls: the p99 of {len(through)} blocking SendMessages "
        "through mq9-a2a-gateway to the agent (answering at once) in a process of its own vs "
        "their p50; a call whose answer's announcement was missed waits the 1 s sweep",
        ours_label="p99",
        ours=_ms(p99),
        baseline_label="p50",
        baseline=_ms(p50),
        ratio=p99 / p50,
        ratio_label="p99 / p50",
        op="<=",
        limit=3.0,
    )


def run(cfg: Config, net: Any) -> Section:
    section = Section("a2a_gateway", TITLE)

    async def timed(
        rounds: int, pause: float, announce: bool = True, apart: bool = False
    ) -> Timings:
        import nats

        connection = await nats.connect(net.url)
        try:
            await net.serve(connection, "engine", announce=announce)
        finally:
            await connection.close()
        return await _timings(net.url, rounds, pause, apart=apart)

    quick = asyncio.run(timed(5 if cfg.quick else 200, 0.0))
    section.checks.append(_check("16a", "the agent answers at once", quick.through, quick.direct))
    slow = asyncio.run(timed(3 if cfg.quick else 10, 1.0))
    section.checks.append(_check("16b", "the agent works 1 s", slow.through, slow.direct))
    apart = asyncio.run(timed(5 if cfg.quick else 200, 0.0, apart=True))
    section.checks.append(_spread(apart.through))
    polled = asyncio.run(timed(5 if cfg.quick else 15, 0.0, announce=False))
    added = statistics.median(quick.through) - statistics.median(quick.direct)
    round_trip = statistics.median(quick.round_trip)
    section.figures += [
        ("through the gateway, p90 (16a)", _p90(quick.through)),
        ("direct, p90 (16a)", _p90(quick.direct)),
        ("through the gateway, p99 / p50 (16a, the agent in this process)", _spread_of(quick)),
        ("the same, the agent in a process of its own (16c)", _spread_of(apart)),
        ("the gateway's added time, median (16a)", _ms(added)),
        ("one broker round trip (a QUERY, same process), median (16a)", _ms(round_trip)),
        (
            "the added time in broker round trips (16a)",
            f"{added / round_trip:.1f} (a call makes {quick.requests / len(quick.through):.0f} "
            "broker requests, agent and gateway)",
        ),
        (
            "16a without announcements (both sides poll every 0.1 s), median",
            f"{_ms(statistics.median(polled.through))} vs "
            f"{_ms(statistics.median(polled.direct))} direct",
        ),
        (
            "rounds (16a, 16b, 16c, unannounced)",
            f"{len(quick.through)}, {len(slow.through)}, {len(apart.through)}, "
            f"{len(polled.through)}",
        ),
    ]
    section.notes.append(
        "Through the gateway a request is a message in the agent's mailbox and its result a "
        "task state in the tenant's reply mailbox. Where the broker announces arrivals (the "
        "bundled broker with --announce, memory://) the agent's reader and the gateway look "
        "as each message arrives; elsewhere (RobustMQ, whose FETCH does not wake on arrival "
        "and must not be asked to wait) each looks every 0.1 s, which is most of the added "
        "time there. What the call buys is the task kept while the agent is offline or "
        "restarting. The direct call makes no broker request; through the gateway a call makes "
        "those counted above, 8 of them one after the other (the request stored, fetched and "
        "leased, the task read, its state stored, then delivered, then read), so the added "
        "time is about that many round trips (docs/a2a-tck.md, the floor)."
    )
    return section


if __name__ == "__main__":  # the agent of 16c, in a process of its own: URL NAME PAUSE
    asyncio.run(_agent_apart(sys.argv[1], sys.argv[2], float(sys.argv[3])))
