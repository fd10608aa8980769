"""Arrival announcements of the bundled broker (``mq9-dev-broker --announce``, or an engine in
this process): the digest of each mailbox a message was stored in, as it is stored. mq9 itself
announces nothing (RobustMQ neither); without announcements a waker polls.

On nats-server the broker publishes on ``$mq9.WAKE.<digest>`` with an empty body: the digest
of the mailbox's name, never the name, so a listener learns only when a mailbox whose name it
already knows gets mail. With ``--credentials`` agents may subscribe to their reply inboxes
only (docs/security.md): announcements reach the broker's own users, nobody else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..client import Mq9Client
from .rules import ARRIVALS_PREFIX, ARRIVALS_WILDCARD, digest

log = logging.getLogger("langchain_mq9.wake")

OnArrival = Callable[[str], None]  # called on the loop with a mailbox's digest
Unsubscribe = Callable[[], Awaitable[None]]


async def subscribe_arrivals(
    client: Mq9Client, on_arrival: OnArrival, *, mailboxes: Iterable[str] | None = None
) -> Unsubscribe | None:
    """Call ``on_arrival(digest)`` on this loop for each message stored, where the broker
    announces it: a memory:// engine of this process, or a NATS server carrying
    ``$mq9.WAKE.*``. None when nothing can be subscribed (then poll). ``mailboxes``: on NATS,
    only theirs are subscribed to (a listener for a few mailboxes is not sent every one's)."""
    loop = asyncio.get_running_loop()
    transport: Any = getattr(client, "_transport", None)
    engine = getattr(transport, "_handler", None)
    arrivals = getattr(engine, "arrivals", None)
    if isinstance(arrivals, list):  # the engine itself, in this process
        return _on_engine(loop, arrivals, on_arrival)
    connection = getattr(transport, "_connection", None)
    if connection is None or not hasattr(connection, "subscribe"):
        return None

    async def announced(msg: Any) -> None:
        d = msg.subject[len(ARRIVALS_PREFIX) :]
        if len(d) == 32:
            on_arrival(d)

    subjects = [ARRIVALS_WILDCARD]
    if mailboxes is not None:
        subjects = [ARRIVALS_PREFIX + digest(m) for m in set(mailboxes)]
    subscriptions: list[Any] = []

    async def unsubscribe() -> None:
        for subscription in subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    try:
        for subject in subjects:
            subscriptions.append(await connection.subscribe(subject, cb=announced))
        await connection.flush(timeout=client.request_timeout)
    except Exception as exc:  # a server refusing the subscription: poll instead
        log.warning("arrival announcements unavailable (%s): polling", type(exc).__name__)
        await unsubscribe()
        return None
    return unsubscribe


def _on_engine(
    loop: asyncio.AbstractEventLoop, arrivals: list[Callable[[str], None]], on_arrival: OnArrival
) -> Unsubscribe:
    names: dict[str, str] = {}
    thread = threading.get_ident()

    def told(address: str) -> None:  # under the engine's lock: only hand it on, never raise
        if loop.is_closed():  # a listener whose loop ended without unsubscribing
            return
        d = names.get(address)
        if d is None:
            d = names[address] = digest(address)
        try:
            if threading.get_ident() == thread:
                loop.call_soon(on_arrival, d)
            else:
                loop.call_soon_threadsafe(on_arrival, d)
        except RuntimeError:  # closed meanwhile
            pass

    arrivals.append(told)

    async def unsubscribe() -> None:
        with contextlib.suppress(ValueError):
            arrivals.remove(told)

    return unsubscribe
