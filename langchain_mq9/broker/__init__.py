"""Deprecated: the bundled broker is ``mq9_broker`` (the ``mq9-broker`` distribution) since
0.4.0; this path re-exports its names, with a ``DeprecationWarning``, for one release."""

from mq9_broker import (
    Broker,
    BrokerConfig,
    BrokerEngine,
    BrokerLimits,
    ManualClock,
    StartupError,
    drop_memory_broker,
    install_memory_broker,
    memory_broker,
    serve_on_nats,
)

from .._moved import moved

moved(__name__, "mq9_broker")

__all__ = [
    "Broker",
    "BrokerConfig",
    "BrokerEngine",
    "BrokerLimits",
    "ManualClock",
    "StartupError",
    "drop_memory_broker",
    "install_memory_broker",
    "memory_broker",
    "serve_on_nats",
]
