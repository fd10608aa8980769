"""Serving the state kept in JetStream: an ``Engine`` (engine/engine.py)
is served by ``serve.py`` as any engine is, by any number of brokers at once in the queue
group ``QUEUE``; ``open_store`` opens its store while the cluster forms.
"""

from __future__ import annotations

from collections.abc import Callable

from mq9_wire.nats_floor.jetstream.ready import until_ready

from ..storage.jetstream import ClusterStore

QUEUE = "mq9-brokers"  # every broker of one store answers in it: NATS hands a request to one


async def open_store(store: ClusterStore, tries_until: Callable[[Exception], None]) -> None:
    """``store.open()``, tried again while the cluster cannot place it yet (a leader being
    elected, servers still joining): ``tries_until`` raises once the wait is over."""

    async def opened() -> None:
        try:
            await store.open()
        except Exception:
            await store.close()  # (its reads' subscription: the next try makes its own)
            raise

    await until_ready(opened, tries_until, pause=0.5)
