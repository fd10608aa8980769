"""Delivering a webhook subscription's events (``webhooks.py`` makes and ends subscriptions):
each event POSTed to the subscription's URL, signed as Standard Webhooks sign (``sign``), in
msg_id order.

A subscription moves its cursor past an event once its URL answered 2xx, or 410 or 413 (the
receiver's "not this one": never tried again). A failed POST is tried ``ATTEMPTS`` times in all,
``BACKOFF`` seconds apart and doubling; then the delivery waits ``RETRY_SECONDS`` (or new mail)
and starts again from the same event, so a URL that was down gets every event, in order, once it
is back (at least once: a receiver dedupes by ``webhook-id``), for as long as the subscription's
TTL lasts. A read that had to pass messages over is told to the receiver as a
``{"type": "gap", "cursor"}`` envelope before the events after it.

An event's ``webhook-id`` is its ``eventId``, the same on every try: the consumers that ship
(ChatGPT, which takes MCP Events by webhook only, and the Vercel AI SDK) match the header to the
body's ``eventId`` and deduplicate by it, and it is what Standard Webhooks asks of the id (one
message, the same across retries). A per-delivery random id would make every retry a new
message to them. A control envelope (gap, verification) has an id of its own, ``control_id``.
An eventId is unique per mailbox and message, not per subscription: a receiver taking several
subscriptions at one URL keys what it has seen by ``X-MCP-Subscription-Id`` and ``webhook-id``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from mcp.shared.exceptions import MCPError

from .events import Batch, Reader, Source, occurrence

log = logging.getLogger("mq9_mcp")

ATTEMPTS = 3
BACKOFF = 0.5  # seconds before the second try, doubling
RETRY_SECONDS = 30.0  # after the tries of a round failed: the next round
SECRET_PREFIX = "whsec_"
# The receiver's refusals of one delivery that the SEP says are not to be tried again.
NOT_AGAIN = (410, 413)


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` of ``body`` (Standard Webhooks' v1): the secret's key is the
    base64 after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def control_id(hook: Webhook, kind: str, cursor: int) -> str:
    """The ``webhook-id`` of a control envelope: ``msg_<type>_<random>`` as the SEP has it, one
    per message and the same on every try of it, also across rounds after a failed one (a
    receiver deduplicates retries by it): a digest of the subscription, the type and the
    cursor the envelope carries, which only that message has."""
    digest = hashlib.sha256(f"{hook.id}\n{kind}\n{cursor}".encode()).hexdigest()[:24]
    return f"msg_{kind}_{digest}"


@dataclass(eq=False)
class Webhook:
    id: str
    owner: str
    source: Source
    url: str
    secret: str
    cursor: int
    expires: float  # the store's clock
    ttl_ms: int
    old_secret: str | None = None  # the one a refresh replaced, signing beside it until
    old_until: float = 0.0  # (the store's clock)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    delivered: int = 0
    failures: int = 0
    last_delivery: float | None = None  # wall clock
    last_error: str | None = None  # the SEP's category of the last failure, None after a 2xx


@dataclass(frozen=True)
class Answer:
    """What a receiver answered a POST: its status and (at most 64 KiB of) its body."""

    status: int
    body: bytes = b""


Post = Callable[[str, bytes, dict[str, str]], Awaitable[Answer]]

DELIVERED, REFUSED, FAILED = "delivered", "refused", "failed"


class Delivery:
    """The delivering half of ``webhooks.Webhooks`` (its base): a runner per subscription POSTs
    its events until the subscription expires or is dropped."""

    # set by ``webhooks.Webhooks``: where events are read, how a POST is made, its clocks
    reader: Reader
    post: Post
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[None]]

    def _drop(self, hook: Webhook) -> None:
        """Forget ``hook`` and stop its runner (``webhooks.Webhooks``'s)."""
        raise NotImplementedError

    def _headers(self, hook: Webhook, webhook_id: str, body: bytes) -> dict[str, str]:
        """The delivery's headers, signed anew (each try regenerates the timestamp): with the
        old secret too in the grace window after a rotation."""
        timestamp = int(time.time())
        keys = [hook.secret]
        if hook.old_secret is not None and self.clock() < hook.old_until:
            keys.append(hook.old_secret)
        return {
            "content-type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(sign(k, webhook_id, timestamp, body) for k in keys),
            "x-mcp-subscription-id": hook.id,
        }

    async def _deliver(self, hook: Webhook) -> None:
        """Deliver the hook's events until it expires or is dropped."""
        behind = True  # the first round looks at once (a cursor given may be behind)
        while self.clock() < hook.expires:
            if not behind:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(hook.arrived.wait(), RETRY_SECONDS)
            hook.arrived.clear()
            try:
                batch = await self.reader.after(hook.source, hook.cursor)
            except MCPError:
                batch = Batch([], hook.cursor, more=False)
            behind = await self._round(hook, batch)
        self._drop(hook)

    async def _round(self, hook: Webhook, batch: Batch) -> bool:
        """POST the batch's events in order (after a ``gap`` envelope, where the read passed
        messages over); whether more are left (a failure, or more mail)."""
        if batch.truncated:
            resumed = batch.messages[0].msg_id if batch.messages else batch.cursor
            gap = {"type": "gap", "cursor": str(resumed)}
            if await self._post_one(hook, control_id(hook, "gap", resumed), gap) == FAILED:
                return await self._failed(hook)
            hook.cursor = max(hook.cursor, resumed)
        for message in batch.messages:
            event = occurrence(hook.source, message)
            outcome = await self._post_one(hook, event["eventId"], event)
            if outcome == FAILED:
                return await self._failed(hook)
            hook.cursor = int(event["cursor"])  # delivered, or refused for good (410, 413)
            hook.delivered += outcome == DELIVERED
        if batch.messages or batch.more:
            hook.cursor = max(hook.cursor, batch.cursor)
        return batch.more

    async def _failed(self, hook: Webhook) -> bool:
        hook.failures += 1
        await self.sleep(RETRY_SECONDS)
        return True

    async def _post_one(self, hook: Webhook, webhook_id: str, message: Mapping[str, object]) -> str:
        body = json.dumps(message, separators=(",", ":")).encode()
        for attempt in range(ATTEMPTS):
            try:
                status = (
                    await self.post(hook.url, body, self._headers(hook, webhook_id, body))
                ).status
            except Exception as exc:  # refused, unreachable, too slow: tried again
                log.info("webhook %s: POST failed (%s)", hook.id, type(exc).__name__)
                hook.last_error = failure_category(exc)
                status = 0
            if 200 <= status < 300:
                hook.last_delivery, hook.last_error = time.time(), None
                return DELIVERED
            if status:
                hook.last_error = status_category(status)
            if status in NOT_AGAIN:
                log.info(
                    "webhook %s: %s refused (%d), not tried again", hook.id, webhook_id, status
                )
                return REFUSED
            if attempt + 1 < ATTEMPTS:
                await self.sleep(BACKOFF * 2**attempt)
        log.info("webhook %s: %d tries failed; again in %gs", hook.id, ATTEMPTS, RETRY_SECONDS)
        return FAILED


def status_category(status: int) -> str:
    """A receiver's refusal (4xx, 5xx) as one of the SEP's ``lastError`` categories."""
    return "http_5xx" if status >= 500 else "http_4xx"


def failure_category(exc: BaseException) -> str:
    """A failed POST as one of the SEP's ``lastError`` categories."""
    seen: BaseException | None = exc
    for _ in range(8):  # the chain of causes (httpx wraps ssl's and the socket's errors)
        if seen is None:
            break
        if isinstance(seen, ssl.SSLError):
            return "tls_error"
        if isinstance(seen, TimeoutError) or "Timeout" in type(seen).__name__:
            return "timeout"
        seen = seen.__cause__ or seen.__context__
    return "connection_refused"
