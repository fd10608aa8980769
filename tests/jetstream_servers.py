"""nats-server with JetStream on loopback for tests: bench/js_cluster.py (the kill lane of
bench/js_failover.py runs the same servers); and the wait for a JetStream broker to serve."""

from __future__ import annotations

import time

from devbroker_helpers import DevBroker

from bench.js_cluster import START_TIMEOUT, JetStreamCluster, JetStreamServer

__all__ = ["START_TIMEOUT", "JetStreamCluster", "JetStreamServer", "wait_serving"]


def wait_serving(broker: DevBroker, timeout: float = 60.0) -> None:
    """Until ``broker`` (``--store jetstream``) serves: at once, or when it takes over from
    the broker before it (a broker killed with SIGKILL holds the leader lock 3 s more)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.endswith("(serving)") for line in broker.stdout if "ready on" in line):
            return
        assert broker.process.poll() is None, broker.output()
        time.sleep(0.1)
    raise AssertionError(f"not serving in {timeout:g} s; {broker.output()}")
