"""nats-server with JetStream on loopback: one server, or a cluster of three (the kill and
chaos lanes). The servers are testbed/jetstream.py's, which the tests start too: this name
stays for bench/'s modules and anyone who ran them from here."""

from __future__ import annotations

from testbed.jetstream import START_TIMEOUT, JetStreamCluster, JetStreamServer

__all__ = ["START_TIMEOUT", "JetStreamCluster", "JetStreamServer"]
