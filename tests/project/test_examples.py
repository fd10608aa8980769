"""Every example runs as a script, as a user runs it, and tells the story it promises.

Each example is started with ``sys.executable`` twice: with its default (``--server`` not given,
so the in-process ``memory://`` broker) and with ``--server nats://...`` against the bundled
broker engine served on a nats-server of its own, as ``mq9-dev-broker`` serves it (and a third
time against RobustMQ when ``MQ9_ROBUSTMQ_URL`` names one). The runs go in parallel (the
scripts sleep for TTLs); each test then checks one run: exit code 0, nothing on stderr, and the
lines that show the scenario happened, in order. Most scripts also
check their own outcome and exit non-zero when it is wrong.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import nats
import pytest

from langchain_mq9.testing import ScriptedChatModel
from mq9_broker import BrokerEngine, serve_on_nats
from mq9_broker.state.clock import system_clock
from mq9_wire import semantic
from testbed.nats_server import start_nats_server
from testbed.support.robustmq_shaped import RobustMQShapedListener, lagging_engine

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HELPERS = {"models.py", "support.py"}  # imported by the examples, not scenarios themselves
# With MQ9_ROBUSTMQ_URL naming a running RobustMQ, every example also runs there (conftest.py).
ROBUSTMQ_URL = os.environ.get("MQ9_ROBUSTMQ_URL")
TRANSPORTS = ("memory", "nats") + (("robustmq",) if ROBUSTMQ_URL else ())

# What each run must print, in this order. A str is found in a line; a Pattern searched.
# Names may carry a run suffix on NATS (agent.summarizer.3f9a1c), hence the [.\w]* in patterns.
EXPECTED: dict[str, list[str | re.Pattern]] = {
    "quickstart.py": [
        "[critical] {'cmd': 'emergency_stop'}",
        "[urgent] {'cmd': 'reconfigure'}",
        "[normal] {'cmd': 'run_diagnostic'}",
        "fetching again hands out 0 messages",
        "query by key 'status' (read-only): {'status': 'idle'}",
    ],
    "sub_agent_results.py": [
        "[orchestrator] offline",
        "finished t-1, sends the result while the orchestrator is offline",
        "finished t-2, sends the result while the orchestrator is offline",
        "[orchestrator] result of t-1: 3 papers found",
        "[orchestrator] result of t-2: anomaly rate 2.3%",
        "finished t-3, sends the result while the orchestrator waits",
        "[orchestrator] result of t-3: draft ready",
        "holds results for t-1, t-2, t-3; missing: none",
        "all 3 results delivered",
    ],
    "worker_status.py": [
        "[workers] 3 heartbeats sent",
        re.compile(r"board: worker\.b[.\w]*=idle\(0\.0\), worker\.a[.\w]*=busy\(0\.6\)$"),
        "(crashed: no more heartbeats)",
        re.compile(r"board: worker\.a[.\w]*=busy\(0\.7\)$"),
        "s TTL → offline; stop sending it work",
        re.compile(
            r"look at (worker\.b[.\w]*\.inbox): mailbox '\1' does not exist \(it was "
            r"never created, or its TTL ran out\)$"
        ),
        re.compile(r"send to worker\.a[.\w]*\.inbox: ok$"),
    ],
    "task_queue.py": [
        "[producer] 8 tasks in",
        "[worker-3] took t-03 (reindex search) and crashed before acking",
        "[worker-3] t-03 [critical] reindex search (handed out again)",
        re.compile(r"^\[worker-[123]\] t-05 \[urgent\] send invoices$"),
        re.compile(r"^\[worker-[12]\] t-0[1-8] \[normal\]"),  # the others share the work
        "handed out again (to the restarted worker-3): t-03",
        "each of the 8 tasks completed exactly once",
    ],
    "alert_fanout.py": [
        "[monitor] critical: payment timeout rate at 15%",
        "[monitor] critical: card processor unreachable",
        re.compile(r"^\[pager-[12]\] page on-call: card processor unreachable \[critical\]$"),
        "[audit] record [critical] payment timeout rate at 15%",
        "[audit] record [critical] card processor unreachable",
        "[audit] record [urgent] p99 checkout latency 2.1 s",
        "[audit] record [normal] retry queue growing",
        "[dashboard] alerts tagged timeout or processor: ['payment timeout rate at 15%', "
        "'card processor unreachable']",
        re.compile(r"pager group: 4 alerts \(pager-1 \d, pager-2 \d\); autoscaler: 4; audit: 4"),
        "every handler group got all 4 alerts",
    ],
    "edge_commands.py": [
        "[edge] offline",
        "[cloud] take_snapshot  (ttl=1)",
        "[edge] run 1. [critical] emergency_stop",
        "[edge] run 2. [urgent] rotate_credentials",
        "[edge] run 3. [normal] report_status",
        "[edge] run 4. [normal] set_config interval_s=30",
        "[edge] run 5. [normal] run_diagnostic",
        "query shows 0 commands left in the mailbox",
        "order run: emergency_stop → rotate_credentials → report_status → set_config → "
        "run_diagnostic",
    ],
    "human_approval.py": [
        "[agent] thread approval-1 paused, waiting for approval-1",
        "[agent] thread approval-2 paused, waiting for approval-2",
        "[agent] replies so far: 0; threads waiting: approval-1, approval-2",
        "[alice] inbox [urgent]: refund order #1042",
        "[alice] rejects approval-2",
        "[alice] approves approval-1",
        "[agent] approval-2 resumed → not done: delete dataset analytics_2023",
        "[agent] approval-1 resumed → done: refund order #1042",
        "approval-1: done: refund order #1042",
    ],
    "wake_agent.py": [
        "[customer] asks about phone",
        re.compile(r"\[helpdesk\] woken: [1-3] message\(s\) waiting in agent\.helpdesk"),
        "[customer] hours: 9 to 5, Monday to Friday",
        "[customer] refund: within 14 days",
        "later, one more question wakes it again",
        "[helpdesk] woken: 1 message(s) waiting",
        re.compile(r"4 questions answered by [23] wakes of an agent that was never left running"),
    ],
    "request_reply.py": [
        "[A] asks req-2 [urgent]",
        "[A] no replies yet (3 pending)",
        "[B] req-2 [urgent] → reserved 5 × sku-7 for order 1042",
        "[A] reply to req-2: reserved 5 × sku-7 for order 1042",
        "[A] reply to req-1: sku-1: 42 in stock",
        "[A] reply to req-3: sku-3: 0 in stock",
        "[B] req-4 [normal] → sku-7: 4 in stock",
        "[A] reply to req-4: sku-7: 4 in stock",
        "in arrival order: req-2, req-1, req-3, req-4",
    ],
    "capability_routing.py": [
        re.compile(r"text 'japanese' → agent\.translator\.fast[.\w]*, agent\.translator\.legal"),
        re.compile(r"route to the least busy: agent\.translator\.legal[.\w]*$"),
        re.compile(
            r"semantic 'translate this supplier contract into Japanese' → "
            r"agent\.translator\.legal"
        ),
        re.compile(r"semantic 'summarize the notes of yesterday's meeting' → agent\.summarizer"),
        re.compile(
            r"^\[agent\.translator\.legal[.\w]*\] got: "
            r"\['translate this supplier contract into Japanese'\]$"
        ),
        re.compile(r"^\[agent\.summarizer[.\w]*\] got: "),
        re.compile(r"^\[agent\.translator\.fast[.\w]*\] unregistered$"),
        re.compile(r"text 'japanese' → agent\.translator\.legal[.\w]*$"),
        "all agents (3)",
    ],
    "agent_calls.py": [
        "model: the offline scripted model",
        re.compile(r"^\[summarizer\] registered as agent\.summarizer[.\w]*, now offline$"),
        re.compile(r'^\[orchestrator\] → call_agent\(agent="summarize an incident report'),
        '"state":"submitted"',
        "[orchestrator] → list_calls()",
        "[orchestrator] → check_call(",
        re.compile(
            r"\[orchestrator\] says: Summary from agent\.summarizer[.\w]*: On Tuesday .*"
            r"Engineers raised the limit to 200"
        ),
        re.compile(r"^agent\.summarizer[.\w]*'s task store: 1 task\(s\), completed$"),
        "✓ the task completed on the broker",
    ],
    "two_agents.py": [
        "model: the offline scripted model",
        "[worker] → agent_register(",
        '"mailbox_created":true',
        "[orchestrator] → agent_discover(",
        "[orchestrator] → create_mailbox(",
        re.compile(r'^\[orchestrator\] → send_message\(mail_address="agent\.summarizer'),
        "[worker] → fetch_messages(",
        re.compile(
            r'^\[worker\] → send_message\(mail_address="[0-9a-v]{20}", '
            r'payload=\{"correlation_id":"summary-1"'
        ),
        "[worker] → ack_messages(",
        "[orchestrator] → fetch_messages(",
        "[orchestrator] → ack_messages(",
        re.compile(
            r"\[orchestrator\] says: Summary from agent\.summarizer[.\w]*: On Tuesday .*"
            r"Engineers raised the limit to 200"
        ),
        "✓ checked on the broker",
    ],
}


# What an example may write to stderr: nothing, though every DeprecationWarning is shown
# (PYTHONWARNINGS in run_example): every agent is langchain.agents.create_agent's, and LangGraph's
# deprecated prebuilt agent, whose notice agent_calls.py once wrote here, is gone.
# A name here maps to the stderr its example may write.
STDERR: dict[str, re.Pattern[str]] = {}


def scenario_scripts() -> list[str]:
    return sorted(p.name for p in EXAMPLES.glob("*.py") if p.name not in HELPERS)


CASES = [f"{name}-{transport}" for name in sorted(EXPECTED) for transport in TRANSPORTS]


class ThreadedBroker:
    """The bundled engine served on a nats-server, from a loop thread of its own, so it keeps
    answering while the test thread waits on subprocesses."""

    def __init__(self, url: str) -> None:
        # The embedding model loads first, at this thread's priority, as mq9-dev-broker loads it
        # before it says ready: loaded on demand by the engine's worker thread (nice 10), it
        # could take longer on a busy machine than the example's first REGISTER waits
        semantic.embedder()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.connection, self.service = self._run(self._start(url))

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    async def _start(self, url: str):
        connection = await nats.connect(url)
        return connection, await serve_on_nats(BrokerEngine(), connection)

    async def _stop(self) -> None:
        await self.service.stop()
        await self.connection.close()

    def stop(self) -> None:
        self._run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


def run_example(name: str, server: str | None) -> subprocess.CompletedProcess:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("MQ9_EXAMPLE_MODEL", "MQ9_SERVER", "NATS_URL")
    }
    env["PYTHONIOENCODING"] = "utf-8"
    env["PYTHONWARNINGS"] = "default::DeprecationWarning"  # from any module, not only __main__
    command = [sys.executable, str(EXAMPLES / name)]
    if server is not None:
        command += ["--server", server]
    return subprocess.run(
        command, cwd=ROOT, env=env, capture_output=True, text=True, encoding="utf-8", timeout=120
    )


@contextmanager
def dev_broker() -> Iterator[str]:
    """A nats-server of its own with the bundled engine on it, as ``mq9-dev-broker`` runs."""
    nats_server = start_nats_server()
    try:
        broker = ThreadedBroker(nats_server.url)
        try:
            yield nats_server.url
        finally:
            broker.stop()
    finally:
        nats_server.stop()


# Examples that discover agents by capability (call_agent, agent_discover) take the best match
# in the whole registry: run side by side on one broker, one would route its work to another's
# agent. So each NATS run gets a broker of its own, and the RobustMQ runs (one shared broker)
# go one at a time.
ROBUSTMQ_TURN = threading.Lock()


def run_case(case: str) -> subprocess.CompletedProcess:
    name, transport = case.rsplit("-", 1)
    if transport == "nats":
        with dev_broker() as url:
            return run_example(name, url)
    if transport == "robustmq":
        with ROBUSTMQ_TURN:
            return run_example(name, ROBUSTMQ_URL)
    return run_example(name, None)


@pytest.fixture(scope="module")
def runs(request):
    """Start every selected run at once (4 at a time); each test waits for its own."""
    wanted = {
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module
        and "case" in getattr(getattr(item, "callspec", None), "params", {})
    } or set(CASES)
    with ThreadPoolExecutor(max_workers=4) as pool:  # leaving it waits for every run
        yield {case: pool.submit(run_case, case) for case in CASES if case in wanted}


def assert_tells(output: str, expected: list[str | re.Pattern]) -> None:
    """Every expected line is there, in order (other lines may come in between)."""
    lines = output.splitlines()
    position = 0
    for wanted in expected:
        for index in range(position, len(lines)):
            line = lines[index]
            if wanted.search(line) if isinstance(wanted, re.Pattern) else wanted in line:
                position = index + 1
                break
        else:
            shown = wanted.pattern if isinstance(wanted, re.Pattern) else wanted
            raise AssertionError(
                f"missing (in this order) after line {position}: {shown!r}\n--- output:\n{output}"
            )


def test_every_example_is_tested():
    assert scenario_scripts() == sorted(EXPECTED)


@pytest.mark.parametrize("case", CASES)
def test_example(case, runs):
    name = case.rsplit("-", 1)[0]
    check_run(name, case, runs[case].result())


def check_run(name: str, run: str, result: subprocess.CompletedProcess) -> None:
    """One run of example ``name`` (called ``run`` in messages) told its story, and only that."""
    assert result.returncode == 0, f"{run} exited {result.returncode}:\n{result.stderr}"
    if name in STDERR:
        assert STDERR[name].search(result.stderr), f"{run} stderr:\n{result.stderr}"
    else:
        assert result.stderr == "", f"{run} wrote to stderr:\n{result.stderr}"
    assert_tells(result.stdout, EXPECTED[name])


# Examples that search the registry right after registering agents, and a broker whose search
# trails its registry as RobustMQ's vector-search build does (a card is found 0.5 s after its
# REGISTER): each waits for its own cards first (else capability_routing.py may route to the
# wrong agent on RobustMQ, and agent_calls.py find no agent there). Two runs each, on one broker.
SEARCH_RIGHT_AFTER_REGISTER = ("agent_calls.py", "capability_routing.py", "two_agents.py")


@pytest.mark.parametrize("name", SEARCH_RIGHT_AFTER_REGISTER)
async def test_an_example_that_searches_waits_for_its_cards_where_search_trails(name):
    semantic.embedder()  # loaded before serving, as mq9-dev-broker does
    async with RobustMQShapedListener(lagging_engine(system_clock)) as listener:
        for run in (1, 2):  # the broker serves on this loop while the example runs
            result = await asyncio.to_thread(run_example, name, listener.url)
            check_run(name, f"{name}, run {run}, search trailing the registry", result)


def test_assert_tells_needs_the_lines_in_order():
    assert_tells("a\nb\nc", ["a", re.compile("^c$")])
    with pytest.raises(AssertionError):
        assert_tells("a\nb\nc", ["c", "a"])
    with pytest.raises(AssertionError):
        assert_tells("a\nb", ["z"])


# -- the model choice helper -------------------------------------------------------------------


def load_models_helper():
    spec = importlib.util.spec_from_file_location("example_models", EXAMPLES / "models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_scripted_model_is_the_default(monkeypatch):
    models = load_models_helper()
    monkeypatch.delenv(models.MODEL_ENV, raising=False)
    model = models.chat_model(["hello"])
    assert isinstance(model, ScriptedChatModel)
    assert model.invoke("hi").content == "hello"
    assert "scripted" in models.describe()


def test_a_real_model_is_named_by_option_or_environment(monkeypatch):
    models = load_models_helper()
    monkeypatch.setenv(models.MODEL_ENV, "from-env:model")
    assert models.model_spec() == "from-env:model"
    assert models.model_spec("openai:gpt-4.1-mini") == "openai:gpt-4.1-mini"  # option wins
    assert models.describe() == "from-env:model"


def test_an_unusable_model_stops_with_a_clear_message(monkeypatch):
    models = load_models_helper()
    monkeypatch.delenv(models.MODEL_ENV, raising=False)
    with pytest.raises(SystemExit, match="no-such-provider:x"):
        models.chat_model(["unused"], "no-such-provider:x")


def test_no_example_or_notebook_silences_a_warning():
    """What the package's users would see (a deprecation, say) is shown in the examples too."""
    silencing = re.compile(r"catch_warnings|filterwarnings|simplefilter")
    sources = [*EXAMPLES.glob("*.py"), *(ROOT / "notebooks").glob("*.ipynb")]
    assert [p.name for p in sources if silencing.search(p.read_text(encoding="utf-8"))] == []
