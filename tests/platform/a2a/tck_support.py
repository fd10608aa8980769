"""The A2A conformance kit (the A2A project's TCK, kept in ``../shared/a2a-tck`` beside the
checkout) run against the gateway, and against a plain a2a-sdk server for comparison.

The System Under Test is the TCK's own reference executor (``sut/a2a-python/sut_agent.py``,
unchanged) served over mq9 (``serve_executor``) behind ``mq9-a2a-gateway``'s app; the TCK sends
no credential, so the app it reaches adds one tenant's bearer token (what a loopback proxy in
front of the gateway would do). By hand:

    .venv/bin/python tests/platform/a2a/tck_support.py gateway   # or: plain
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import types
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TCK_DIR = Path(os.environ.get("MQ9_A2A_TCK", HERE.parents[3] / "shared" / "a2a-tck"))
TOKEN = "tck-tenant-token-0123456789abcdef"
AGENT = "agent.tck"
# How long one whole TCK run may take before it is stopped (a guard against a hang only).
RUN_DEADLINE = 900
# The kit's tests that wait a fixed time of their own: two SubscribeToTask streams on an
# input-required task nobody answers, each collected until it closes or 10 s pass (a server
# that keeps such a stream open to a final state, as STREAM-SUB-002 asks, runs the 10 s)
FIXED_WAITS = "core_operations/test_multi_stream.py::"


def load_executor_class(tck_dir: Path = TCK_DIR) -> type:
    """``TckAgentExecutor`` from the TCK's reference SUT, its file unchanged. The file also
    builds the SUT's own servers from ``a2a.server.apps`` and ``DefaultRequestHandler``, which
    a2a-sdk 1.3 no longer has: stand-ins let the file import (the executor uses neither)."""
    from a2a.server.request_handlers import default_request_handler

    if not hasattr(default_request_handler, "DefaultRequestHandler"):
        default_request_handler.DefaultRequestHandler = object  # type: ignore[attr-defined]
    if "a2a.server.apps" not in sys.modules:
        stand_in = types.ModuleType("a2a.server.apps")
        stand_in.A2ARESTFastAPIApplication = stand_in.A2AStarletteApplication = object  # type: ignore[attr-defined]
        sys.modules["a2a.server.apps"] = stand_in
    path = tck_dir / "sut" / "a2a-python" / "sut_agent.py"
    spec = importlib.util.spec_from_file_location("tck_sut_agent", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TckAgentExecutor


def _loopback_resolver(resolve: Any) -> Any:
    from mq9_platform._http.ssrf import Address

    async def resolved(host: str, port: int) -> list[Address]:
        if host == "example.com":
            return await resolve("127.0.0.1", port)
        found: list[Address] = await resolve(host, port)
        return found

    return resolved


def token_context(tenants: Any, token: str = TOKEN) -> Any:
    """The gRPC binding's ``TenantContext``, each call given the tenant's bearer token (the
    TCK sends none), as a proxy in front of the gateway's gRPC port would add it."""
    from starlette.datastructures import Headers

    from mq9_platform.a2a.gateway.grpc import TenantContext

    class WithToken(TenantContext):
        def headers(self, context: Any) -> Headers:
            given = super().headers(context)
            if "authorization" in given:
                return given
            return Headers({**dict(given), "authorization": f"Bearer {token}"})

    return WithToken(tenants)


def with_token(app: Any, token: str = TOKEN) -> Any:
    """The app, each request given the tenant's bearer token (the TCK sends none)."""

    async def authenticated(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
            scope = {**scope, "headers": [*headers, (b"authorization", f"Bearer {token}".encode())]}
        await app(scope, receive, send)

    return authenticated


@contextlib.asynccontextmanager
async def gateway_sut(
    *, push: bool = True, grpc: bool = True, **gateway_options: Any
) -> AsyncIterator[str]:
    """The TCK executor served over mq9 (an in-process bundled broker) behind the gateway:
    the URL the TCK is given (the agent's base, where its card is). ``push``: the gateway
    keeps push configs, POSTing to loopback (where the TCK's webhook receiver listens).
    ``grpc``: the gateway's gRPC binding served too (its card lists it)."""
    from http_agents import serve_http

    from mq9_broker import BrokerEngine, drop_memory_broker, install_memory_broker
    from mq9_platform import Mq9Client
    from mq9_platform.a2a.gateway import Tenants, gateway_app
    from mq9_platform.a2a.gateway.push import GatewayPush
    from mq9_platform.a2a.sdk.executor import serve_executor
    from mq9_platform.wake.deliver import Destinations
    from testbed.ports import unclaimed_port

    name = f"tck{uuid.uuid4().hex}"
    install_memory_broker(name, BrokerEngine())
    try:
        async with Mq9Client(f"memory://{name}") as client:
            card = {"description": "The A2A TCK's reference executor", "skills": ["tck"]}
            agent = await serve_executor(
                load_executor_class()(), name=AGENT, client=client, card=card, worker="w1"
            )
            pushing = None
            if push:
                # The TCK's webhook receiver is on loopback; its config CRUD tests name
                # example.com, read here as loopback too: nothing leaves the machine
                destinations = Destinations(hosts=["localhost", "127.0.0.1", "example.com"])
                destinations.hosts.resolve = _loopback_resolver(destinations.hosts.resolve)
                pushing = GatewayPush(destinations)
            try:
                port, grpc_port = unclaimed_port(), unclaimed_port()
                base = f"http://127.0.0.1:{port}"
                tenants = Tenants({"tck": TOKEN})
                app = await gateway_app(
                    client,
                    [AGENT],
                    tenants=tenants,
                    public_url=base,
                    push=pushing,
                    grpc_url=f"127.0.0.1:{grpc_port}" if grpc else "",
                    **gateway_options,
                )
                server = None
                if grpc:
                    from mq9_platform.a2a.gateway.grpc import serve_grpc

                    server = await serve_grpc(
                        app.handlers,
                        tenants,
                        f"127.0.0.1:{grpc_port}",
                        context=token_context(tenants),
                    )
                try:
                    async with serve_http(with_token(app), port):
                        yield f"{base}/a2a/{AGENT}"
                finally:
                    if server is not None:
                        await server.stop(1)
            finally:
                if pushing is not None:
                    await pushing.close()
                await agent.stop()
    finally:
        drop_memory_broker(name)


@contextlib.asynccontextmanager
async def plain_sut() -> AsyncIterator[str]:
    """The same executor on a plain a2a-sdk server (JSON-RPC and HTTP+JSON), for comparison."""
    from a2a.server.request_handlers import LegacyRequestHandler
    from a2a.server.routes import (
        create_agent_card_routes,
        create_jsonrpc_routes,
        create_rest_routes,
    )
    from a2a.server.tasks import InMemoryTaskStore
    from a2a.types.a2a_pb2 import (
        AgentCapabilities,
        AgentCard,
        AgentInterface,
        AgentSkill,
    )
    from http_agents import serve_http
    from starlette.applications import Starlette

    from testbed.ports import unclaimed_port

    port = unclaimed_port()
    base = f"http://127.0.0.1:{port}"
    card = AgentCard(
        name="plain",
        description="The A2A TCK's reference executor on a2a-sdk's server",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=base, protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(
                url=base + "/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"
            ),
        ],
        capabilities=AgentCapabilities(streaming=True),
        default_input_modes=["text"],
        default_output_modes=["text"],
        skills=[AgentSkill(id="tck", name="tck", description="TCK", tags=["tck"])],
    )
    handler = LegacyRequestHandler(load_executor_class()(), InMemoryTaskStore(), card)
    routes = [
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, "/"),
        *create_rest_routes(handler, path_prefix="/rest"),
    ]
    async with serve_http(Starlette(routes=routes), port):
        yield base


def tck_python(cache: Path) -> Path:
    """The TCK's own venv (built once under ``cache``, from the TCK folder): its python."""
    venv = cache / "tck-venv"
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    if not marker.exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        subprocess.run(
            [str(python), "-m", "pip", "install", "-q", str(TCK_DIR)],
            check=True,
            timeout=900,
        )
        marker.write_text("ok")
    return python


@dataclass
class Outcome:
    """One TCK run: per requirement, its level, and pass/fail/skip per transport."""

    requirements: dict[str, dict[str, Any]]
    seconds: float
    output: str = ""

    def fixed_waits(self) -> float:
        """Seconds the run spent in the kit's tests that wait a fixed time (``FIXED_WAITS``),
        from pytest's ``--durations`` list."""
        return sum(
            float(seconds)
            for seconds, test in re.findall(r"^([0-9.]+)s call\s+(\S+)", self.output, re.M)
            if FIXED_WAITS in test
        )

    def failing(self, level: str = "MUST") -> dict[str, Any]:
        """The requirements of ``level`` that failed: id -> (per transport, the errors)."""
        return {
            req_id: (req["transports"], req["errors"][:2])
            for req_id, req in self.requirements.items()
            if req["level"] == level and req["status"] == "FAIL"
        }

    def levels(self) -> dict[str, dict[str, int]]:
        """Per level, how many requirements have each status."""
        table: dict[str, dict[str, int]] = {}
        for req in self.requirements.values():
            row = table.setdefault(req["level"], {})
            row[req["status"]] = row.get(req["status"], 0) + 1
        return table


async def run_tck(python: Path, sut: str, work: Path, *extra: str) -> Outcome:
    """The TCK's compatibility tests against ``sut``, from a copy of its folder under ``work``
    (it writes caches and reports beside its tests)."""
    tree = work / "a2a-tck"
    if not tree.exists():
        shutil.copytree(TCK_DIR, tree, ignore=shutil.ignore_patterns(".venv", "reports"))
    report = work / "compatibility"
    loop = asyncio.get_running_loop()
    started = loop.time()
    process = await asyncio.create_subprocess_exec(
        str(python), "-m", "pytest", "tests/compatibility/", f"--sut-host={sut}",
        "--tb=line", "-q", "-p", "no:cacheprovider", "-rfE", "--webhook-host=127.0.0.1",
        "--durations=0",  # for ``Outcome.fixed_waits``
        f"--compatibility-report={report}", *extra,
        cwd=tree,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    try:
        output, _ = await asyncio.wait_for(process.communicate(), RUN_DEADLINE)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    seconds = loop.time() - started
    found = json.loads((work / "compatibility.json").read_text())
    return Outcome(_requirements(found), seconds, output.decode(errors="replace"))


def _requirements(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each requirement of the TCK's JSON report: its level, its status (``PASS``, ``FAIL``,
    ``SKIPPED``, ``NOT TESTED``), and its status per transport."""
    return {
        req_id: {
            "level": entry.get("level", "MUST"),
            "status": entry.get("status", ""),
            "transports": entry.get("transports", {}),
            "errors": entry.get("errors", []),
        }
        for req_id, entry in report.get("per_requirement", {}).items()
    }


async def _main(which: str) -> None:
    work = Path(os.environ.get("TCK_WORK", "/tmp/tck-work-" + which))
    work.mkdir(parents=True, exist_ok=True)
    given = os.environ.get("TCK_PYTHON")
    python = Path(given) if given else tck_python(work)
    sut = gateway_sut() if which == "gateway" else plain_sut()
    async with sut as url:
        outcome = await run_tck(python, url, work, *sys.argv[2:])
    (work / "output.txt").write_text(outcome.output)
    print(outcome.output[-6000:])
    print(json.dumps(outcome.levels()))
    waits = outcome.fixed_waits()
    print(
        f"{outcome.seconds:.1f} s: {waits:.1f} s in the kit's fixed waits ({FIXED_WAITS}), "
        f"{outcome.seconds - waits:.1f} s the rest"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    asyncio.run(_main(sys.argv[1] if len(sys.argv) > 1 else "gateway"))
