"""Serving while this broker holds the leader lock (lock.py), standing by otherwise.

Why one serves, not all: one writer keeps each mailbox's msg_ids and each group's position in
one linear order without a lock per mailbox, and the state's stream refuses a write that does
not follow the last one it holds, so two writers would only make each other fail. An answer
is sent only when the lease held both when the request came and once the answer was made
(``LeaseEngine``): every answer the old holder sends was made before a standby could take over.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from ... import protocol as p
from ..engine.engine import BrokerEngine
from .lock import LeaderLock

# LeaderLock too: what serves with a lock is imported from here
__all__ = ["LEASE_ENDED", "NOT_SERVING", "LeaderLock", "LeaseEngine", "serve_while_leader"]

log = logging.getLogger("langchain_mq9.broker")


class LeaseEngine(BrokerEngine):
    """A ``BrokerEngine`` whose answers are those of a lease holder (``serving()``, the
    leader lock's lease, true at the start and at the end of each): a request that comes
    after the lease is refused at once; an answer made when the lease ended meanwhile (a
    write waiting for a JetStream election, a FETCH waiting for messages) is replaced by an
    error saying it may or may not have been done. So every answer sent was made before the
    lease ended, before another broker could serve: never from a state another broker has
    changed since."""

    def __init__(self, serving: Callable[[], bool], **options: Any) -> None:
        self._serving = serving
        super().__init__(**options)

    async def handle(self, subject: str, headers: Any, body: bytes) -> bytes:
        if not self._serving():
            return p.encode(p.ERROR_REPLY.write(error=NOT_SERVING))
        answer = await super().handle(subject, headers, body)
        if not self._serving():  # checked with no wait after the answer was made
            return p.encode(p.ERROR_REPLY.write(error=LEASE_ENDED))
        return answer


NOT_SERVING = (
    "this broker's lease ended: another broker takes over within seconds; nothing of this "
    "request was done, send it again"
)
LEASE_ENDED = (
    "this broker's lease ended while it answered: the request may or may not have been "
    "carried out; another broker takes over within seconds (check before sending it again)"
)


async def serve_while_leader(
    lock: LeaderLock,
    stop: asyncio.Event,
    start: Callable[[], Awaitable[Callable[[], Awaitable[None]]]],
    *,
    standing_by: Callable[[], None],
) -> None:
    """Stand by until ``lock`` is taken, then serve: ``await start()`` serves (with a
    ``LeaseEngine`` on ``lock.holds``) and returns how to stop; until ``stop`` is set, or the
    lease ended (then standing by again, after ``standing_by()``). Leaves the lock released."""
    loop = asyncio.get_running_loop()
    waiting = threading.Event()  # set to end a wait for the lock
    stop_task = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            waiting.clear()
            take = asyncio.ensure_future(asyncio.to_thread(lock.wait_to_take, waiting))
            await asyncio.wait([take, stop_task], return_when=asyncio.FIRST_COMPLETED)
            waiting.set()
            if not await take:
                return
            # Lost while starting or serving: it stops once its loop can, answering nothing
            # meanwhile (LeaseEngine)
            lost = asyncio.Event()
            lock.keep(functools.partial(loop.call_soon_threadsafe, lost.set))
            try:
                stop_serving = await start()
            except Exception as exc:  # no quorum yet, say: let another try, then try again
                log.error("could not start serving: %s: %s; standing by", type(exc).__name__, exc)
                await asyncio.to_thread(lock.release)
                standing_by()
                await asyncio.wait([stop_task], timeout=lock.ttl)
                continue
            lost_task = asyncio.ensure_future(lost.wait())
            await asyncio.wait([lost_task, stop_task], return_when=asyncio.FIRST_COMPLETED)
            lost_task.cancel()
            await stop_serving()
            if lost.is_set() and not stop.is_set():
                log.warning("lost the leader lock: stopped serving, standing by")
                standing_by()
    finally:
        stop_task.cancel()
        waiting.set()
        await asyncio.to_thread(lock.release)
