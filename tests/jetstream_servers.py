"""nats-server with JetStream on loopback for tests: bench/js_cluster.py (the cluster store's
kill and chaos lanes, bench/js_kill.py and bench/js_chaos.py, run the same servers); and the
wait for a JetStream broker to serve."""

from __future__ import annotations

import time

from devbroker_helpers import DevBroker

from bench.js_cluster import START_TIMEOUT, JetStreamCluster, JetStreamServer

__all__ = ["START_TIMEOUT", "JetStreamCluster", "JetStreamServer", "wait_serving"]


def wait_serving(broker: DevBroker, timeout: float = 60.0) -> None:
    """Until ``broker`` (``--store jetstream``) serves (every broker of a store serves at
    once: there is no takeover to wait for)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any("ready on" in line for line in broker.stdout):
            return
        assert broker.process.poll() is None, broker.output()
        time.sleep(0.1)
    raise AssertionError(f"not serving in {timeout:g} s; {broker.output()}")
