"""nats-py's request with its caller's cancel kept.

nats-py waits for a reply in ``asyncio.wait_for``. On Python 3.11 that returns a reply which
arrived in the same turn of the loop as a cancel of the waiting task, and drops the cancel
(CPython gh-86296, fixed in 3.12 by ``wait_for`` on ``asyncio.timeout``): a loop of requests
stopped that way goes on for ever, and whatever waits for it (a shutdown, a test's gather)
with it. The task's count of cancels says one was asked for: raised again here.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg


def cancels_of(task: asyncio.Task[object] | None) -> int:
    """The cancels asked of ``task`` and not taken back (0 where Python counts none)."""
    counting = getattr(task, "cancelling", None)
    return counting() if counting is not None else 0


async def request(
    connection: Client,
    subject: str,
    payload: bytes,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
) -> Msg:
    """``connection.request``, raising ``CancelledError`` when the caller was cancelled while
    it waited, even if the reply came in the same turn."""
    task = asyncio.current_task()
    cancels = cancels_of(task)
    reply = await connection.request(subject, payload, timeout=timeout, headers=headers)
    if cancels_of(task) > cancels:
        raise asyncio.CancelledError
    return reply
