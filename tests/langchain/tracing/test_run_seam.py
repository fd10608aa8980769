"""The platform's tracing imports no framework; a tracer of runs plugs in through its seam
(issue #108, docs/tracing.md). LangSmith's is the LangChain face's: importing ``langchain_mq9``
registers it, and a platform-only program gets OpenTelemetry's spans only."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import pytest
from langsmith import Client, traceable, tracing_context

from langchain_mq9.langsmith_runs import LANGSMITH_TRACE, RUNS
from mq9_platform.tracing import RunTracing, register_run_tracing, run_tracing

ROOT = Path(__file__).resolve().parents[3]
TRACING = ROOT / "platform" / "mq9_platform" / "tracing"
FRAMEWORKS = ("langchain", "langchain_core", "langgraph", "langsmith")
INBOX = "agent.worker"


def imported(path: Path) -> Iterator[str]:
    """Every module an import statement of ``path`` names, lazy ones inside functions too."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def test_the_platforms_tracing_imports_no_framework():
    files = sorted(TRACING.glob("*.py"))
    assert files
    found = [
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in imported(path)
        if name.split(".")[0] in FRAMEWORKS
    ]
    assert found == []


class FakeRuns:
    """A tracer of runs of the test's own: a run is a name, carried in ``x-run``."""

    current: ContextVar[str | None] = ContextVar("current", default=None)

    def current_run(self) -> object | None:
        return self.current.get()

    def run_headers(self, run: object) -> Mapping[str, str]:
        return {"x-run": str(run)}

    def peer_run(self, header: Mapping[str, str]) -> object | None:
        return header.get("x-run")

    @contextmanager
    def under_peer_run(self, run: object) -> Iterator[None]:
        token = self.current.set(f"child of {run}")
        try:
            yield
        finally:
            self.current.reset(token)


@pytest.fixture
def runs_of(request) -> Iterator[None]:
    """The tracer of runs the test asks for (``indirect``), LangSmith's put back after it."""
    before = register_run_tracing(request.param)
    try:
        yield
    finally:
        register_run_tracing(before)


async def handled_in(client, headers: dict[str, str] | None = None) -> str | None:
    """A message sent (in the caller's run, if any) and handled: the run its handler ran in."""
    await client.mailbox_create(name=INBOX)
    await client.send(INBOX, "job", headers=headers)
    seen: asyncio.Queue = asyncio.Queue()

    async def handler(message) -> None:
        await seen.put(FakeRuns.current.get())

    consumer = await client.consume(INBOX, handler, group_name="workers", deliver="earliest")
    try:
        return await asyncio.wait_for(seen.get(), 10)
    finally:
        await consumer.stop()


def test_langchain_mq9_registers_langsmiths_runs():
    registered: RunTracing | None = run_tracing()
    assert registered is RUNS
    assert RUNS.run_headers(type("Run", (), {"dotted_order": "x"})()) == {LANGSMITH_TRACE: "x"}


@pytest.mark.parametrize("runs_of", [FakeRuns()], indirect=True)
async def test_a_registered_tracer_of_runs_goes_with_the_message(client, runs_of):
    token = FakeRuns.current.set("plan")
    try:
        handling = await handled_in(client)
    finally:
        FakeRuns.current.reset(token)
    [held] = await client.query(INBOX)
    assert held.header["x-run"] == "plan"
    assert handling == "child of plan"  # the handler ran under the sender's run


@pytest.mark.parametrize("runs_of", [FakeRuns()], indirect=True)
async def test_outside_a_run_nothing_is_carried(client, runs_of):
    assert await handled_in(client) is None
    [held] = await client.query(INBOX)
    assert "x-run" not in held.header


@pytest.mark.parametrize("runs_of", [RUNS, None], indirect=True, ids=["langchain_mq9", "none"])
async def test_a_send_in_a_langsmith_run_carries_it_with_langsmiths_runs_registered(
    client, runs_of
):
    """With ``langchain_mq9``'s tracer of runs, a send inside a LangSmith run carries the run's
    place; without one (a platform-only program) it carries nothing of LangSmith's."""

    @traceable(name="plan")
    async def plan() -> str:
        await client.send(INBOX, "job")
        return RUNS.current_run().dotted_order

    await client.mailbox_create(name=INBOX)
    # "local": the runs are kept in process, posted nowhere (the client is never asked)
    nowhere = Client(api_url="http://127.0.0.1:9", api_key="unused", auto_batch_tracing=False)
    with tracing_context(enabled="local", client=nowhere):
        run = await plan()
    [held] = await client.query(INBOX)
    assert held.header.get(LANGSMITH_TRACE) == (run if run_tracing() is RUNS else None)


PLATFORM_ONLY = """
import sys
import mq9_platform.client.client, mq9_platform.a2a.server
from mq9_platform.tracing import run_tracing
assert run_tracing() is None, run_tracing()
assert "langchain_mq9.langsmith_runs" not in sys.modules
import langchain_mq9
from langchain_mq9.langsmith_runs import RUNS
assert run_tracing() is RUNS
"""


@pytest.mark.slow
def test_a_platform_only_program_has_no_tracer_of_runs():
    done = subprocess.run(
        [sys.executable, "-c", PLATFORM_ONLY], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
