"""The suite's pytest plugin (tests/conftest.py names it): its hooks (the workers, the order, the
quick lane's collection) and the fixtures every distribution's tests may use, which import
nothing of the six distributions until a test asks for them: a real nats-server on loopback,
JetStream alone or clustered, the embedding model, a nats-server that restarts. The brokers
reachable over each transport, with their clients, are the platform's tests' fixtures
(``testbed/brokers.py``).

The real-broker lane: when ``MQ9_ROBUSTMQ_URL`` names a running RobustMQ 8bd49dc (started by
hand on loopback, see docs/protocol.md §1), ``broker`` also runs every such test against it as
``robustmq``. A test that needs what only the bundled broker has (its engine, a hand-moved
clock) is skipped there, with the reason, when it reaches for it.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# No property test fails for its pace: on a busy 2-core machine one example took 266 ms against
# Hypothesis's default 200 ms deadline; timing is never what these tests check. Loaded
# here, before any test module is imported: a test's own @settings(...) copies it then.
settings.register_profile("mq9", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("MQ9_HYPOTHESIS_PROFILE", "mq9"))

ROBUSTMQ_URL = os.environ.get("MQ9_ROBUSTMQ_URL")
# A lane on a real server waits on another process: marked slow where it is listed, as every
# slow test is marked in its own file (tests/project/test_slow_marks.py holds the rule)
BROKERS = ["memory", pytest.param("nats", marks=pytest.mark.slow)] + (
    [pytest.param("robustmq", marks=pytest.mark.slow)] if ROBUSTMQ_URL else []
)


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("MQ9_TEST_STORE", "memory") not in ("", "memory"):
        from testbed.support.store_lane import (  # (a lane asked for: its helpers load)
            STORES,
            TEST_STORE,
        )

        if TEST_STORE not in STORES:
            raise pytest.UsageError(f"MQ9_TEST_STORE={TEST_STORE!r}: expected one of {STORES}")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """The workers of ``-n auto`` (pyproject's addopts): two a core, at most 8, for the suite or
    folders of it. Most tests wait on another process (a nats-server electing, a broker or
    ``mq9-mcp`` starting, a browser), not on this one's CPU. Each file runs in one worker
    (``--dist loadfile``), so a run of named files takes a worker a file, and one file, or
    ``-s``, runs in this process (0): workers started for nothing cost a shared machine their
    imports. The quick lane (``-m "not slow"``) takes one a core: its tests wait on nothing
    but this process's CPU, and each worker collects the lane again (on 2 cores at load 8-10,
    2 workers spent less user CPU than 4). ``-n N`` asks for N;
    PYTEST_XDIST_AUTO_NUM_WORKERS overrides."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    quick = (config.getoption("markexpr") or "").strip() == "not slow"
    workers = min((1 if quick else 2) * (cores or 1), 8)
    if config.getoption("capture") == "no":
        return 0
    if config.args_source == pytest.Config.ArgsSource.ARGS:
        named = {arg.split("::")[0] for arg in config.args}
        if all(os.path.isfile(path) for path in named):
            workers = min(workers, len(named))
    return workers if workers > 1 else 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The repository's checks (tests/project: mypy, the docs' venv, the notebooks, the
    examples, the bench smoke run: a few tests of minutes each) first, the rest in the order
    collected: on parallel workers they start at once and run beside the others, instead of
    being left for last (pyproject's --no-loadscope-reorder keeps this order)."""
    checks = config.rootpath / "tests" / "project"
    items.sort(key=lambda item: not item.path.is_relative_to(checks))  # (a stable sort)


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """The quick lane (``-m "not slow"``, exactly) does not import a test file whose
    ``pytestmark`` marks all its tests slow: it would only deselect them, after each worker had
    paid the file's imports and assertion rewriting (half its start-up). The file says so
    itself (testbed/support/slow_files.py reads its mark; tests/project/test_slow_marks.py holds
    that reading to the full one); another ``-m`` collects every file and deselects."""
    if (config.getoption("markexpr") or "").strip() != "not slow":
        return None
    if collection_path.suffix != ".py" or not collection_path.name.startswith("test"):
        return None
    from testbed.support.slow_files import file_marked_slow  # (only for the quick lane)

    return True if file_marked_slow(collection_path) else None


def pytest_report_header() -> str:
    store = os.environ.get("MQ9_TEST_STORE") or "memory"
    return f"mq9 store of the brokers served on nats-server: {store} (MQ9_TEST_STORE)"


@pytest.fixture(scope="session", autouse=True)
def _state_server():
    """Stops the store lane's JetStream nats-server, if a test started it."""
    yield
    # not imported: no test used the lane's server
    lane = sys.modules.get("testbed.support.store_lane")
    if lane is not None:
        lane.STATE_SERVER.stop()


@pytest.fixture(scope="session")
def nats_server():
    """One nats-server for the session (of each parallel worker), on the loopback port the
    system gives it."""
    from testbed.nats_server import start_nats_server

    with start_nats_server() as server:
        yield server


@pytest.fixture(scope="session")
def embedding_model() -> None:
    """The embedding model loaded once in this process (each parallel worker), for tests of an
    in-process broker whose first REGISTER would otherwise load it under the client's request
    deadline: seconds of CPU on a busy machine, which those tests do not measure."""
    from mq9_wire import semantic

    semantic.embedder()


@pytest.fixture(scope="session")
def shared_jetstream() -> list[str]:
    """The session's (each parallel worker's) JetStream nats-server, the store lane's: its URLs,
    for tests that neither kill, restart nor reconfigure it; each test keeps its state in a
    layout (``--stream``) or bucket of its own. Started at first use, stopped with the session."""
    from testbed.support.store_lane import STATE_SERVER

    return STATE_SERVER.urls


@pytest.fixture(scope="session")
def shared_jetstream_cluster():
    """Three JetStream nats-servers clustered, one for the session (each parallel worker's):
    their URLs, for tests that neither kill, restart nor reconfigure a node, each in a layout
    of its own. A test that does any of that starts a cluster of its own."""
    from testbed.support.jetstream_servers import JetStreamCluster

    with JetStreamCluster(3) as cluster:
        yield cluster.urls


@pytest.fixture
async def restartable_nats():
    """A nats-server of the test's own, which the test stops and starts again on the same port
    (``state["server"]``, ``state["port"]``), under a bundled broker whose connection
    (``state["connection"]``) reconnects for ever; ``state["url"]`` stays valid."""
    import nats

    from mq9_broker import BrokerEngine, serve_on_nats
    from testbed.nats_server import start_nats_server

    first = start_nats_server()  # on the system's choice of port, read back: kept for restarts
    state = {"server": first, "port": first.port}
    connection = await nats.connect(
        state["server"].url, max_reconnect_attempts=-1, reconnect_time_wait=0.05
    )
    service = await serve_on_nats(BrokerEngine(), connection)
    state.update(url=state["server"].url, connection=connection)
    try:
        yield state
    finally:
        await service.stop()
        await connection.close()
        state["server"].stop()


