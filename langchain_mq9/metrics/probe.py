"""Whether a server's broker answers (#77 item 6): the ``/readyz`` of the waker, the gateway,
the MCP server and the console. A connection that is up says only that a nats-server is there;
a broker that answers a request says the requests they make will be answered.

The probe is a QUERY of ``PROBE_MAILBOX`` (limit 1), answered by any broker on any store:
"no such mailbox", "not yours" or its messages all say the broker answered; a timeout, no
broker listening or a lost connection say it did not. One probe serves ``PROBE_KEPT`` seconds,
so that a flood of ``/readyz`` (or several scrapers) sends one QUERY a second at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from ..protocol.errors import MalformedReply, Mq9Error, NotConnected, Unavailable


class Mq9Client(Protocol):
    """What the probe uses of a client (``langchain_mq9.Mq9Client``: metrics sits below the
    client, docs/architecture.md)."""

    @property
    def is_connected(self) -> bool: ...

    async def query(self, mail_address: str, *, limit: int | None = None) -> Any: ...


PROBE_MAILBOX = "mq9.readyz.probe"  # a valid address nobody needs to create
PROBE_DEADLINE = 3.0  # seconds the broker has to answer (a cluster that lost its quorum: 503)
PROBE_KEPT = 1.0


async def broker_answers(client: Mq9Client, deadline: float = PROBE_DEADLINE) -> str | None:
    """None when a broker answered ``client``'s QUERY within ``deadline``; else why not."""
    if not client.is_connected:
        return "not connected to the broker (reconnecting)"
    try:
        async with asyncio.timeout(deadline):
            await client.query(PROBE_MAILBOX, limit=1)
    except TimeoutError:
        return f"no broker answered a QUERY within {deadline:g} s"
    except (Unavailable, NotConnected, MalformedReply) as exc:
        return f"no broker answered a QUERY: {type(exc).__name__}: {exc}"
    except Mq9Error:
        pass  # the broker's own refusal ("no such mailbox", "not yours"): it answered
    return None


class Probe:
    """A readiness check (``ask``: None when ready, else why not) asked at most once every
    ``kept`` seconds, the answer shared by the callers meanwhile; ``clock``: monotonic."""

    def __init__(
        self,
        ask: Callable[[], Awaitable[str | None]],
        *,
        kept: float = PROBE_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ask, self.kept, self.clock = ask, kept, clock
        self._last: tuple[float, str | None] | None = None
        self._running: asyncio.Future[str | None] | None = None

    async def __call__(self) -> str | None:
        last = self._last
        if last is not None and self.clock() - last[0] < self.kept:
            return last[1]
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self.ask())
        why = await asyncio.shield(self._running)
        self._last = (self.clock(), why)
        return why


def answering(client: Callable[[], Mq9Client | None], deadline: float = PROBE_DEADLINE) -> Probe:
    """The ``Probe`` of ``broker_answers`` for the client ``client()`` gives (None: none yet)."""

    async def ask() -> str | None:
        current = client()
        if current is None:
            return "not connected to the broker yet"
        return await broker_answers(current, deadline)

    return Probe(ask)
