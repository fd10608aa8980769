"""Webhook delivery of MCP Events (``events/subscribe``, ``events/unsubscribe``; ``events.py``):
the server POSTs each event to a URL the client gave, signed as Standard Webhooks signs
(``webhook-id``, ``webhook-timestamp``, ``webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`` with the subscription's ``whsec_`` secret), until the subscription's TTL
ends unless the client subscribes again (a refresh: the same event, arguments and URL).

A URL is the client's data: it goes through the package's SSRF guard (``_http/ssrf.py``), which
lets only the hosts the operator listed (``--webhook-hosts``) be reached and connects to the
addresses it checked; it is https (SEP-3415's "https callback URL"), plain http only to a
loopback address. Only a client with a principal of its own subscribes: over stdio the
process that started the server, over HTTP a request the bearer token let in (a server without
``--auth-token`` has no principals: every local process would be the same one).

Each event is POSTed in msg_id order; a subscription moves its cursor past an event once its URL
answered 2xx. A failed POST is tried ``ATTEMPTS`` times in all, ``BACKOFF`` seconds apart and
doubling; then the delivery waits ``RETRY_SECONDS`` (or new mail) and starts again from the same
event, so a URL that was down gets every event, in order, once it is back (at least once: a
receiver dedupes by ``webhook-id``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from urllib.parse import urlsplit

from mcp import types
from mcp.server.context import ServerRequestContext as Ctx  # one request's
from mcp.shared.exceptions import MCPError

from langchain_mq9._http.ssrf import HostPolicy, HostRefused, guarded_client
from langchain_mq9.operations.results import JsonObject

from .events import (
    FORBIDDEN,
    INVALID_ARGUMENTS,
    NOT_FOUND,
    Batch,
    Event,
    Reader,
    Source,
    SubscribeParams,
    event_error,
    occurrence,
)
from .owners import client_of
from .watch import Watches

log = logging.getLogger("mcp_server")

ATTEMPTS = 3
BACKOFF = 0.5  # seconds before the second try, doubling
RETRY_SECONDS = 30.0  # after the tries of a round failed: the next round
TIMEOUT = 10.0  # seconds a POST may take
DEFAULT_TTL_MS = 60 * 60 * 1000
MAX_TTL_MS = 24 * 60 * 60 * 1000
MIN_TTL_MS = 1000
SECRET_PREFIX = "whsec_"


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` of ``body`` (Standard Webhooks' v1): the secret's key is the
    base64 after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def _checked_secret(secret: object) -> str:
    try:
        text = secret if isinstance(secret, str) else ""
        ok = text.startswith(SECRET_PREFIX)
        key = base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True) if ok else b""
    except ValueError:
        key = b""
    if len(key) < 24:
        raise event_error(
            types.INVALID_PARAMS,
            INVALID_ARGUMENTS,
            "delivery.secret: whsec_ and the base64 of 24 to 64 random bytes, or none for the "
            "server to make one",
        )
    return str(secret)


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
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    runner: asyncio.Task[None] | None = None
    delivered: int = 0
    failures: int = 0


Post = Callable[[str, bytes, dict[str, str]], Awaitable[int]]


class Webhooks:
    """The webhook subscriptions of one server, each its owner's only."""

    def __init__(
        self,
        reader: Reader,
        watches: Watches,
        hosts: HostPolicy,
        owner_of: Callable[[Ctx], str],
        *,
        clock: Callable[[], float] = time.monotonic,
        post: Post | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.reader = reader
        self.watches = watches
        self.hosts = hosts
        self.owner_of = owner_of
        self.clock = clock
        self.sleep = sleep
        self.post = post or self._post
        self.by_id: dict[str, Webhook] = {}

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        async with guarded_client(self.hosts, timeout=TIMEOUT, max_bytes=64 * 1024) as http:
            response = await http.post(url, content=body, headers=headers)
            return response.status_code

    def offered(self, ctx: Ctx) -> bool:
        return has_principal(ctx) and not self.hosts.empty

    def _expire(self) -> None:
        now = self.clock()
        for hook in [h for h in self.by_id.values() if h.expires <= now]:
            self._drop(hook)

    def _drop(self, hook: Webhook) -> None:
        self.by_id.pop(hook.id, None)
        self.watches.stop(hook)
        if hook.runner is not None:
            hook.runner.cancel()

    async def subscribe(
        self, ctx: Ctx, source: Source, params: SubscribeParams, cursor: int | None
    ) -> JsonObject:
        if not has_principal(ctx):
            raise event_error(
                types.INVALID_PARAMS,
                FORBIDDEN,
                "webhook subscriptions need a client with a principal of its own: over HTTP, "
                "start mq9-mcp with --auth-token; or poll (events/poll) or stream "
                "(events/stream) instead",
            )
        url = params.delivery.get("url")
        if not isinstance(url, str) or not url:
            raise event_error(
                types.INVALID_PARAMS, INVALID_ARGUMENTS, "delivery.url: the URL to POST events to"
            )
        try:
            addresses = await self.hosts.check(url)
        except HostRefused as exc:
            raise event_error(types.INVALID_PARAMS, FORBIDDEN, f"delivery.url: {exc}") from None
        if urlsplit(url).scheme != "https" and not all(map(_loopback, addresses)):
            # SEP-3415: a webhook "registers an https callback URL"; plain http only to a
            # receiver on this machine (a loopback address the operator listed)
            raise event_error(
                types.INVALID_PARAMS,
                INVALID_ARGUMENTS,
                "delivery.url: an https URL (http only to a loopback address, a receiver on "
                "this machine)",
            )
        ttl_ms = params.ttl_ms or DEFAULT_TTL_MS
        if not MIN_TTL_MS <= ttl_ms <= MAX_TTL_MS:
            raise event_error(
                types.INVALID_PARAMS, INVALID_ARGUMENTS, f"ttlMs: {MIN_TTL_MS} to {MAX_TTL_MS}"
            )
        given = params.delivery.get("secret")
        secret = None if given is None else _checked_secret(given)
        owner = self.owner_of(ctx)
        self._expire()
        hook = next(
            (
                h
                for h in self.by_id.values()
                if h.owner == owner and h.source.key == source.key and h.url == url
            ),
            None,
        )
        if hook is not None:  # a refresh: the TTL starts again, the cursor and secret stay
            hook.expires = self.clock() + ttl_ms / 1000
            hook.ttl_ms = ttl_ms
            if secret is not None:
                hook.secret = secret
            return self._answer(hook, shown_secret=False)
        start = await self.reader.now(source)
        hook = Webhook(
            id=secrets.token_urlsafe(16),
            owner=owner,
            source=source,
            url=url,
            secret=secret or new_secret(),
            cursor=start if cursor is None else cursor,
            expires=self.clock() + ttl_ms / 1000,
            ttl_ms=ttl_ms,
        )

        async def arrived() -> None:
            hook.arrived.set()

        await self.watches.start(hook, source.read, arrived, client_of(owner), must_exist=False)
        self.by_id[hook.id] = hook
        hook.runner = asyncio.get_running_loop().create_task(self._deliver(hook))
        return self._answer(hook, shown_secret=secret is None)

    def _answer(self, hook: Webhook, *, shown_secret: bool) -> JsonObject:
        answer: JsonObject = {"id": hook.id, "cursor": str(hook.cursor), "ttlMs": hook.ttl_ms}
        if shown_secret:  # made here: the client's only chance to read it
            answer["secret"] = hook.secret
        return answer

    async def unsubscribe(self, ctx: Ctx, subscription: str) -> JsonObject:
        hook = self.by_id.get(subscription)
        if hook is None or hook.owner != self.owner_of(ctx):  # another's: as one never made
            raise event_error(
                types.INVALID_PARAMS, NOT_FOUND, f"no subscription {subscription[:64]!r}"
            )
        self._drop(hook)
        return {}

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
        """POST the batch's events in order; whether more are left (a failure, or more mail)."""
        for message in batch.messages:
            event = occurrence(hook.source, message)
            if not await self._post_one(hook, event):
                hook.failures += 1
                await self.sleep(RETRY_SECONDS)
                return True
            hook.cursor = int(event["cursor"])
            hook.delivered += 1
        if batch.messages or batch.more:
            hook.cursor = max(hook.cursor, batch.cursor)
        return batch.more

    async def _post_one(self, hook: Webhook, event: Event) -> bool:
        body = json.dumps(event, separators=(",", ":")).encode()
        for attempt in range(ATTEMPTS):
            timestamp = int(time.time())
            headers = {
                "content-type": "application/json",
                "webhook-id": event["eventId"],
                "webhook-timestamp": str(timestamp),
                "webhook-signature": sign(hook.secret, event["eventId"], timestamp, body),
            }
            try:
                status = await self.post(hook.url, body, headers)
            except Exception as exc:  # refused, unreachable, too slow: tried again
                log.info("webhook %s: POST failed (%s)", hook.id, type(exc).__name__)
                status = 0
            if 200 <= status < 300:
                return True
            if attempt + 1 < ATTEMPTS:
                await self.sleep(BACKOFF * 2**attempt)
        log.info("webhook %s: %d tries failed; again in %gs", hook.id, ATTEMPTS, RETRY_SECONDS)
        return False


def _loopback(address: object) -> bool:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return bool(getattr(address, "is_loopback", False))


def has_principal(ctx: Ctx) -> bool:
    """Whether the request's client is a principal of its own: the stdio process, or an HTTP
    request the bearer token let in."""
    request = getattr(ctx, "request", None)
    scope = getattr(request, "scope", None)
    if scope is None:
        return True  # stdio (or in process): the one client that started the server
    user = scope.get("user")
    return bool(getattr(user, "is_authenticated", False))
