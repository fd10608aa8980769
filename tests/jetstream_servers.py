"""nats-server with JetStream on loopback for tests: bench/js_cluster.py (the kill lane of
bench/js_failover.py runs the same servers)."""

from bench.js_cluster import START_TIMEOUT, JetStreamCluster, JetStreamServer

__all__ = ["START_TIMEOUT", "JetStreamCluster", "JetStreamServer"]
