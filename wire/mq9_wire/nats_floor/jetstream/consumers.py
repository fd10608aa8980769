"""What must follow a stream as it grows, on nats-py's ``nats.js`` (its consumers: flow
control, heartbeats, an ordered consumer's resets): a bucket's keys watched (``watch``) and a
stream read in order up to its end (``read_ordered``). The one module of the floor, and of
the broker, that imports ``nats.js`` (one JetStream client, ``requests.py``, and
nats-py's behind it only here); it uses nats-py's public API only, so no version check.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .api import removal

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient


@dataclass(frozen=True)
class Change:
    """A key's change a watch brought: its value, or ``removed`` (a delete or purge marker:
    no value, ``value`` empty)."""

    key: str
    value: bytes
    removed: bool


class Watch:
    """The changes of a bucket's keys matching a filter, from their current values on."""

    def __init__(self, watcher: Any) -> None:
        self._watcher = watcher

    async def changes(self) -> AsyncIterator[Change]:
        async for entry in self._watcher:
            if entry is None:  # (nats-py's "what was there is read")
                continue
            yield Change(entry.key, entry.value or b"", removal(entry.operation))

    async def stop(self) -> None:
        await self._watcher.stop()


async def watch(connection: NatsClient, bucket: str, keys: str, *, timeout: float) -> Watch:
    """A watch of the keys of ``bucket`` matching ``keys`` (``*``, ``>`` allowed): first the
    current value of each, then every change (none missed in between)."""
    kv = await connection.jetstream(timeout=timeout).key_value(bucket)
    return Watch(await kv.watch(keys))


@dataclass(frozen=True)
class Read:
    """A stream's message as an ordered read brought it."""

    subject: str
    data: bytes
    headers: dict[str, str]
    seq: int


async def read_ordered(
    connection: NatsClient,
    stream: str,
    subject: str,
    *,
    timeout: float,
    last_per_subject: bool = False,
    inactive_threshold: float | None = None,
) -> AsyncIterator[Read]:
    """The messages of ``stream`` on ``subject`` (a filter), oldest first (with
    ``last_per_subject``: the last of each subject), on an ordered consumer, up to the one no
    other follows. (nats-py's KV watch says "nothing more" when the server's count of what it
    has yet to send is 0 and the client has read nothing yet, which is also so when the
    server sent everything a moment before: the consumer's own count is read here.)"""
    from nats.js.api import DeliverPolicy

    policy = DeliverPolicy.LAST_PER_SUBJECT if last_per_subject else DeliverPolicy.ALL
    subscription = await connection.jetstream(timeout=timeout).subscribe(
        subject,
        stream=stream,
        ordered_consumer=True,
        deliver_policy=policy,
        inactive_threshold=inactive_threshold,
    )
    try:
        consumer = await subscription.consumer_info()
        delivered = 0 if consumer.delivered is None else consumer.delivered.consumer_seq
        if consumer.num_pending == 0 and not delivered:
            return  # nothing sent, nothing to send
        while True:
            msg = await subscription.next_msg(timeout)
            yield Read(msg.subject, msg.data, dict(msg.headers or {}), msg.metadata.sequence.stream)
            if msg.metadata.num_pending == 0:
                return
    finally:
        with contextlib.suppress(Exception):  # (a connection closed meanwhile: nothing to end)
            await subscription.unsubscribe()

