"""The bundled mq9 broker (the ``mq9-broker`` distribution): one engine, served in-process
(``memory://``) or on NATS.

``Broker(BrokerConfig(...))`` runs it on NATS from Python (``broker.py``, ``config.py``);
``memory_broker(NAME)`` is the engine behind ``memory://NAME``, which ``import langchain_mq9``
registers with the client (``client/transport.py``).

Each name is imported at its first use (PEP 562): ``memory://`` takes the engine over the
state held in this process, and nothing of NATS serving or the JetStream store comes with it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from .lazy import lazy_names

if TYPE_CHECKING:
    from .broker import Broker
    from .config import BrokerConfig, StartupError
    from .engine.limits import BrokerLimits
    from .engine.process import BrokerEngine
    from .serving.serve import serve_on_nats
    from .state.clock import ManualClock

# name -> the module of this package that defines it
_LAZY = {
    "Broker": "broker",
    "BrokerConfig": "config",
    "StartupError": "config",
    "BrokerLimits": "engine.limits",
    "BrokerEngine": "engine.process",
    "serve_on_nats": "serving.serve",
    "ManualClock": "state.clock",
}


__getattr__, __dir__ = lazy_names(__name__, _LAZY)


_memory_brokers: dict[str, BrokerEngine] = {}
_memory_lock = threading.Lock()


def memory_broker(name: str = "") -> BrokerEngine:
    """The in-process broker behind ``memory://NAME`` (created on first use, kept for the
    process's lifetime, shared by every client in the process that names it)."""
    with _memory_lock:
        engine = _memory_brokers.get(name)
        if engine is None:
            from .engine.process import BrokerEngine

            engine = _memory_brokers[name] = BrokerEngine()
        return engine


def install_memory_broker(name: str, engine: BrokerEngine) -> BrokerEngine:
    """Put ``engine`` (e.g. one with a ``ManualClock``) behind ``memory://NAME``."""
    with _memory_lock:
        _memory_brokers[name] = engine
    return engine


def drop_memory_broker(name: str) -> None:
    """Forget ``memory://NAME`` and everything it held."""
    with _memory_lock:
        _memory_brokers.pop(name, None)


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
