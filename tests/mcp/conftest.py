"""The brokers over each transport, with their clients (testbed/brokers.py)."""

from testbed.brokers import broker, client, jetstream_broker, nats_broker

__all__ = ["broker", "client", "jetstream_broker", "nats_broker"]
