"""Webhook delivery of MCP Events (``events/subscribe``, ``events/unsubscribe``; ``events.py``),
as SEP-3415 profiles Standard Webhooks: the server POSTs each event to a URL the client gave,
signed with the ``whsec_`` secret the client gave (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, and
``X-MCP-Subscription-Id``), until the subscription's TTL ends unless the client subscribes again
(a refresh: the same key, its principal, event, arguments and URL, of which its id is a digest).

Before the first delivery to a URL the receiver confirms it wants them (the SEP's verification
handshake: a signed ``{"type": "verification", "challenge"}`` it echoes in a 2xx answer), once
per principal and URL: the operator's ``--webhook-hosts`` says where the server may reach, not
what a receiver there agreed to, so an attacker cannot point deliveries at a listed host's
endpoint that never asked for them. A read that had to pass messages over is told to the
receiver as a ``{"type": "gap", "cursor"}`` envelope before the events after it.

A verification is a POST a client has the server make at a host of its choosing, so it is bounded
by the address it goes to (#106): the addresses the SSRF guard checked, each as ``address_text``
writes it (the canonical form the guard's allow-list and the waker's ceilings share), never the
URL's spelling (``127.1``, ``0x7f.1``, ``2130706433``, a trailing dot and a DNS name resolving
there are one address), and the POST connects to those addresses only (``pinned_to``). Of an
address's verifications one client takes at most a share, and a client that had none there in
the window gets one whoever filled the rest (#113), so no number of clients denies another; every
failed verification is one refusal to the client (the reason goes to the operator's log), so that
the refusals do not tell a closed port from an open one that is no webhook.

A URL is the client's data: it goes through the package's SSRF guard (``_http/ssrf.py``), which
lets only the hosts the operator listed (``--webhook-hosts``) be reached and connects to the
addresses it checked; it is https (SEP-3415's "https callback URL"), plain http only to a
loopback address. Only a client with a principal of its own subscribes: over stdio the
process that started the server, over HTTP a request the bearer token let in (a server without
``--auth-token`` has no principals: every local process would be the same one).

Each event is POSTed in msg_id order; a subscription moves its cursor past an event once its URL
answered 2xx, or 410 or 413 (the receiver's "not this one": never tried again). A failed POST is
tried ``ATTEMPTS`` times in all, ``BACKOFF`` seconds apart and doubling; then the delivery waits
``RETRY_SECONDS`` (or new mail) and starts again from the same event, so a URL that was down
gets every event, in order, once it is back (at least once: a receiver dedupes by
``webhook-id``), for as long as the subscription's TTL lasts.
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
import ssl
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv6Address
from typing import Any
from urllib.parse import urlsplit

from mcp import types
from mcp.server.context import ServerRequestContext as Ctx  # one request's
from mcp.shared.exceptions import MCPError

from mq9_platform._http.ssrf import (
    Address,
    HostPolicy,
    HostRefused,
    address_text,
    guarded_client,
    pinned_to,
)
from mq9_platform.operations.results import JsonObject

from .events import (
    CALLBACK_ENDPOINT_CODE,
    FORBIDDEN,
    FORBIDDEN_CODE,
    INVALID_ARGUMENTS,
    NOT_FOUND,
    NOT_FOUND_CODE,
    RESOURCE_EXHAUSTED_CODE,
    TOO_MANY,
    UNAVAILABLE,
    UNSUPPORTED_CODE,
    Batch,
    Reader,
    Source,
    Start,
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
MAX_TTL_MS = 24 * 60 * 60 * 1000  # also the grant to a client asking for no expiry
MIN_TTL_MS = 1000
SECRET_PREFIX = "whsec_"
# After a refresh gave a new secret, deliveries are signed with the old one too for this long
# (the SEP's dual-signing grace window: a receiver may still hold only the old one).
ROTATION_GRACE_SECONDS = 300.0
# A (principal, URL) whose receiver echoed a challenge needs none again for this long.
VERIFIED_SECONDS = MAX_TTL_MS / 1000
# Those remembered: per client, past which its oldest is forgotten, and in all, past which the
# client remembered most often forgets its oldest (forgetting costs only a new handshake).
VERIFIED_PER_CLIENT = 256
VERIFIED_MAX = 8192
# At most this many verification POSTs to one address in ``VERIFY_WINDOW`` seconds, whoever asks
# (the SEP: rate-limited per destination host; an address, as the SSRF guard checked it, so
# that no spelling of it is a host of its own): a failed one makes no subscription, so nothing
# else would bound how often a client has the server POST at a host.
VERIFY_PER_ADDRESS = 10
# Of those, one client's (``owners.client_of``): one client filling its share leaves the rest
# of the address's to the others.
VERIFY_CLIENT_SHARE = 5
# ... and what every client gets at an address whatever the others took (#113): a client that
# asked there fewer times than this in the window is verified even past the address's bound, so
# no number of clients filling it denies another (two at their shares filled all 10, a third was
# refused every minute); the address sees at most its bound plus this for each further client.
VERIFY_EACH = 1
# One client's verification POSTs in the window, to any addresses; and the (POST, address)
# records the window holds in all, the server's (refused, "unavailable", only when that many
# clients each fill their own).
VERIFY_PER_CLIENT = 30
VERIFY_RECORDS = 4096
VERIFY_WINDOW = 60.0
# The one reason every failed verification is refused with: a category per failure
# (connection refused, timeout, an HTTP status, no echo) would tell a closed port from an open
# one that is no webhook receiver, a map of the hosts the operator listed (#106).
UNCONFIRMED = "challenge_failed"
# ... and answered no sooner than this many seconds after the POST began, so that its time does
# not tell them apart either (a closed port refuses in a millisecond, a service answers in a few):
# only a service that takes longer than this (one that never answers: ``TIMEOUT``) still shows.
VERIFY_FLOOR = 1.0
# The receiver's refusals of one delivery that the SEP says are not to be tried again.
NOT_AGAIN = (410, 413)
CALLBACK_FAILED = "callback_endpoint_error"


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The ``webhook-signature`` of ``body`` (Standard Webhooks' v1): the secret's key is the
    base64 after ``whsec_``."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def derived_id(owner: str, url: str, name: str, arguments: JsonObject) -> str:
    """The subscription's id: a digest of its key (principal, URL, event, arguments as canonical
    JSON), the same across refreshes and restarts; a routing handle, never taken as input."""
    key = json.dumps([owner, url, name, arguments], sort_keys=True, separators=(",", ":"))
    return "sub_" + hashlib.sha256(key.encode()).hexdigest()[:32]


def _checked_secret(secret: object) -> str:
    try:
        text = secret if isinstance(secret, str) else ""
        ok = text.startswith(SECRET_PREFIX)
        key = base64.b64decode(text.removeprefix(SECRET_PREFIX), validate=True) if ok else b""
    except ValueError:
        key = b""
    if not 24 <= len(key) <= 64:
        raise event_error(
            types.INVALID_PARAMS,
            INVALID_ARGUMENTS,
            "delivery.secret: whsec_ and the base64 of 24 to 64 random bytes, made by the "
            "client (the server makes none)",
        )
    return str(secret)


def _granted_ms(params: SubscribeParams) -> int:
    """The TTL granted: the client's suggestion held to ``MIN_TTL_MS``..``MAX_TTL_MS`` (the SEP
    has no refusal for a TTL: a grant clamped either way says so by its ``refreshBefore``);
    none asked, the default; no expiry asked (null), the longest finite one: subscriptions
    live in memory only, and the SEP's no-expiry grant must outlive a restart."""
    if not params.ttl_asked:
        return DEFAULT_TTL_MS
    if params.ttl_ms is None:
        return MAX_TTL_MS
    return max(MIN_TTL_MS, min(params.ttl_ms, MAX_TTL_MS))


def _iso(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


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


def _less(counts: Counter[Any], key: Any) -> None:
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]  # a Counter keeps its zeros: the keys gone would be kept for good


class Verifications:
    """The verification POSTs of the last ``VERIFY_WINDOW`` seconds, by the client that asked
    each and the addresses it could go to (``address_text``): what bounds them, per address,
    per client's share of an address, per client, and in all (``VERIFY_*``). Kept no longer than
    the window, so never more than ``VERIFY_RECORDS`` (POST, address) pairs. Each client gets
    ``VERIFY_EACH`` at an address whoever filled its bound (#113)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.sent: deque[tuple[float, str, tuple[str, ...]]] = deque()  # oldest first
        self.by_address: Counter[str] = Counter()
        self.by_client: Counter[str] = Counter()
        self.by_share: Counter[tuple[str, str]] = Counter()  # (client, address)
        self.records = 0

    def __len__(self) -> int:
        """The (POST, address) records held."""
        self._prune(self.clock())
        return self.records

    def _prune(self, now: float) -> None:
        while self.sent and self.sent[0][0] <= now - VERIFY_WINDOW:
            _, client, addresses = self.sent.popleft()
            _less(self.by_client, client)
            for address in addresses:
                _less(self.by_address, address)
                _less(self.by_share, (client, address))
            self.records -= len(addresses)

    def take(self, client: str, addresses: tuple[str, ...]) -> None:
        """Count a verification POST of ``client``'s to ``addresses``, or refuse it
        (``ResourceExhausted``, saying whose bound is full) and count nothing."""
        now = self.clock()
        self._prune(now)
        if self.by_client[client] >= VERIFY_PER_CLIENT:
            raise _too_many(
                f"this client had {VERIFY_PER_CLIENT} receivers asked to confirm webhooks in "
                f"the last {VERIFY_WINDOW:g} s",
                VERIFY_PER_CLIENT,
            )
        for address in addresses:
            mine = self.by_share[(client, address)]
            if mine >= VERIFY_CLIENT_SHARE:
                raise _too_many(
                    f"this client had receivers at {address} asked to confirm webhooks "
                    f"{VERIFY_CLIENT_SHARE} times in the last {VERIFY_WINDOW:g} s (a client's "
                    f"share of an address's {VERIFY_PER_ADDRESS})",
                    VERIFY_CLIENT_SHARE,
                )
            # the address's bound, once this client had its VERIFY_EACH there (#113)
            if self.by_address[address] >= VERIFY_PER_ADDRESS and mine >= VERIFY_EACH:
                raise _too_many(
                    f"receivers at {address} were asked to confirm webhooks "
                    f"{VERIFY_PER_ADDRESS} times in the last {VERIFY_WINDOW:g} s, whoever asked",
                    VERIFY_PER_ADDRESS,
                )
        if self.records + len(addresses) > VERIFY_RECORDS:
            raise event_error(
                RESOURCE_EXHAUSTED_CODE,
                UNAVAILABLE,
                f"this server asked receivers to confirm webhooks {VERIFY_RECORDS} times in "
                f"the last {VERIFY_WINDOW:g} s: try again in a minute",
                limit="server_verifications",
                max=VERIFY_RECORDS,
            )
        self.sent.append((now, client, addresses))
        self.by_client[client] += 1
        for address in addresses:
            self.by_address[address] += 1
            self.by_share[(client, address)] += 1
        self.records += len(addresses)


def _too_many(said: str, most: int) -> MCPError:
    return event_error(
        RESOURCE_EXHAUSTED_CODE,
        TOO_MANY,
        f"{said}: try again later",
        limit="verifications",
        max=most,
    )


class Consents:
    """The (principal, URL)s whose receiver echoed a challenge, each for ``VERIFIED_SECONDS``:
    at most ``VERIFIED_PER_CLIENT`` of a client's and ``VERIFIED_MAX`` in all, the URL kept as a
    digest (its length is the client's). Full, the client adding forgets its own oldest, or
    the client remembered most often its oldest: a client forgotten is asked again, no more."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.until: OrderedDict[tuple[str, str], float] = OrderedDict()  # oldest first
        self.held: Counter[str] = Counter()  # by client

    def __len__(self) -> int:
        self._prune()
        return len(self.until)

    def __contains__(self, key: tuple[str, str]) -> bool:
        self._prune()
        return self._key(*key) in self.until

    @staticmethod
    def _key(owner: str, url: str) -> tuple[str, str]:
        return owner, hashlib.sha256(url.encode()).hexdigest()

    def _prune(self) -> None:
        now = self.clock()
        while self.until and next(iter(self.until.values())) <= now:
            self._forget(next(iter(self.until)))

    def _forget(self, key: tuple[str, str]) -> None:
        del self.until[key]
        _less(self.held, client_of(key[0]))

    def add(self, owner: str, url: str) -> None:
        self._prune()
        key, client = self._key(owner, url), client_of(owner)
        if key in self.until:
            self._forget(key)
        if self.held[client] >= VERIFIED_PER_CLIENT:
            self._forget(next(k for k in self.until if client_of(k[0]) == client))
        elif len(self.until) >= VERIFIED_MAX:
            most = self.held.most_common(1)[0][0]
            self._forget(next(k for k in self.until if client_of(k[0]) == most))
        self.until[key] = self.clock() + VERIFIED_SECONDS
        self.held[client] += 1


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
        self.verified = Consents(clock)  # (owner, url)s whose receiver confirmed
        self.verifying = Verifications(clock)  # the verification POSTs of the last minute

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> Answer:
        async with guarded_client(self.hosts, timeout=TIMEOUT, max_bytes=64 * 1024) as http:
            response = await http.post(url, content=body, headers=headers)
            return Answer(response.status_code, response.content)

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

    def _principal(self, ctx: Ctx) -> str:
        if not has_principal(ctx):  # the SEP: webhook calls need an authenticated principal
            raise event_error(
                FORBIDDEN_CODE,
                FORBIDDEN,
                "webhook subscriptions need a client with a principal of its own: over HTTP, "
                "start mq9-mcp with --auth-token; or poll (events/poll) or stream "
                "(events/stream) instead",
            )
        return self.owner_of(ctx)

    async def subscribe(
        self, ctx: Ctx, source: Source, params: SubscribeParams, cursor: int | None
    ) -> JsonObject:
        owner = self._principal(ctx)
        url, addresses = await self._callback_url(params)
        secret = _checked_secret(params.delivery.get("secret"))
        ttl_ms = _granted_ms(params)
        self._expire()
        sub_id = derived_id(owner, url, source.event.name, {"mail_address": source.mail_address})
        hook = self.by_id.get(sub_id)
        if hook is not None and hook.owner == owner:
            # a refresh: the TTL granted again, the secret replaced (the old one signing beside
            # it a while), the cursor a no-op while the subscription is live
            hook.expires = self.clock() + ttl_ms / 1000
            hook.ttl_ms = ttl_ms
            if secret != hook.secret:
                hook.old_secret, hook.secret = hook.secret, secret
                hook.old_until = self.clock() + ROTATION_GRACE_SECONDS
            return {**self._answer(hook, False), "deliveryStatus": self._status(hook)}
        start = Start(await self.reader.now(source)) if cursor is None else await (
            self.reader.start(source, cursor, params.max_age_ms)
        )  # fmt: skip
        hook = Webhook(
            id=sub_id,
            owner=owner,
            source=source,
            url=url,
            secret=secret,
            cursor=start.cursor,
            expires=self.clock() + ttl_ms / 1000,
            ttl_ms=ttl_ms,
        )

        async def arrived() -> None:
            hook.arrived.set()

        # the watch limits first (the SEP: a refused subscription provisions nothing), then
        # the receiver's consent
        await self.watches.start(hook, source.read, arrived, client_of(owner), must_exist=False)
        try:
            await self._verify(hook, addresses)
        except BaseException:
            self.watches.stop(hook)
            raise
        self.by_id[hook.id] = hook
        hook.runner = asyncio.get_running_loop().create_task(self._deliver(hook))
        return self._answer(hook, start.truncated)

    async def _callback_url(self, params: SubscribeParams) -> tuple[str, list[Address]]:
        """The webhook URL a subscribe names, checked: this server delivers webhooks, the mode
        is webhook, the host is one the operator allows, and it is https (http to loopback);
        with the addresses the guard checked for it."""
        if self.hosts.empty:
            raise event_error(
                UNSUPPORTED_CODE,
                "unsupported",
                "this server delivers no webhooks (no --webhook-hosts): poll or stream instead",
                feature="deliveryMode",
                value="webhook",
            )
        mode = params.delivery.get("mode", "webhook")
        if mode != "webhook":
            raise event_error(
                UNSUPPORTED_CODE,
                "unsupported",
                "events/subscribe is for webhook delivery only (delivery.mode 'webhook')",
                feature="deliveryMode",
                value=str(mode)[:40],
            )
        url = params.delivery.get("url")
        if not isinstance(url, str) or not url:
            raise event_error(
                types.INVALID_PARAMS, INVALID_ARGUMENTS, "delivery.url: the URL to POST events to"
            )
        try:
            addresses = await self.hosts.check(url)
        except HostRefused as exc:
            raise event_error(FORBIDDEN_CODE, FORBIDDEN, f"delivery.url: {exc}") from None
        if urlsplit(url).scheme != "https" and not all(map(_loopback, addresses)):
            # SEP-3415: callback URLs "MUST use https://"; plain http only to a receiver on this
            # machine (a loopback address the operator listed), where nothing crosses a network
            raise event_error(
                types.INVALID_PARAMS,
                INVALID_ARGUMENTS,
                "delivery.url: an https URL (http only to a loopback address, a receiver on "
                "this machine)",
            )
        return url, addresses

    def _answer(self, hook: Webhook, truncated: bool) -> JsonObject:
        return {
            "id": hook.id,
            "refreshBefore": _iso(time.time() + hook.ttl_ms / 1000),
            "cursor": str(hook.cursor),
            "truncated": truncated,
        }

    @staticmethod
    def _status(hook: Webhook) -> JsonObject:
        last = None if hook.last_delivery is None else _iso(hook.last_delivery)
        return {"active": True, "lastDeliveryAt": last, "lastError": hook.last_error}

    async def unsubscribe(self, ctx: Ctx, source: Source, url: str) -> JsonObject:
        owner = self._principal(ctx)
        sub_id = derived_id(owner, url, source.event.name, {"mail_address": source.mail_address})
        hook = self.by_id.get(sub_id)
        if hook is None or hook.owner != owner:
            raise event_error(
                NOT_FOUND_CODE,
                NOT_FOUND,
                "no webhook subscription of this client's to that event, arguments and URL",
                kind="subscription",
            )
        self._drop(hook)
        return {}

    async def _verify(self, hook: Webhook, addresses: list[Address]) -> None:
        """The receiver's consent to deliveries (the SEP's verification handshake), once per
        principal and URL: a signed challenge it must echo in a 2xx answer, POSTed to
        ``addresses`` (the guard's, which the bound counted) and nowhere else. A failure is
        ``CallbackEndpointError`` with one reason whatever failed (``UNCONFIRMED``), never the
        receiver's words nor the category, at least ``VERIFY_FLOOR`` after it began: a client
        must not map an internal network's services through it. The category goes to the
        operator's log."""
        if (hook.owner, hook.url) in self.verified:
            return
        texts = tuple(dict.fromkeys(address_text(a) for a in addresses))
        self.verifying.take(client_of(hook.owner), texts)
        challenge = secrets.token_urlsafe(24)
        webhook_id = f"msg_verification_{secrets.token_hex(8)}"
        message = {"type": "verification", "challenge": challenge}
        body = json.dumps(message, separators=(",", ":")).encode()
        reason: str | None
        parts = urlsplit(hook.url)
        began = self.clock()
        try:
            # a name is connected to where it was counted, not to a second DNS answer
            with pinned_to(parts.hostname or "", addresses):
                answer = await self.post(hook.url, body, self._headers(hook, webhook_id, body))
        except Exception as exc:  # refused, unreachable, too slow, too long an answer
            reason = _category(exc)
        else:
            reason = _unconfirmed(answer, challenge)
        if reason is not None:
            log.info(
                "webhook %s: the receiver at %s port %s did not confirm (%s)",
                hook.id, ", ".join(texts), parts.port, reason,
            )  # fmt: skip
            await self.sleep(max(0.0, began + VERIFY_FLOOR - self.clock()))
            raise event_error(
                CALLBACK_ENDPOINT_CODE,
                UNCONFIRMED,
                "delivery.url did not confirm that it takes these deliveries: it must echo the "
                'verification envelope\'s challenge as {"challenge": ...} in a 2xx answer, '
                f"within {TIMEOUT:g} s (why it did not goes to the server's log only)",
            )
        self.verified.add(hook.owner, hook.url)

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
            if await self._post_one(hook, f"msg_gap_{secrets.token_hex(8)}", gap) == FAILED:
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
                hook.last_error = _category(exc)
                status = 0
            if 200 <= status < 300:
                hook.last_delivery, hook.last_error = time.time(), None
                return DELIVERED
            if status:
                hook.last_error = _status_category(status)
            if status in NOT_AGAIN:
                log.info(
                    "webhook %s: %s refused (%d), not tried again", hook.id, webhook_id, status
                )
                return REFUSED
            if attempt + 1 < ATTEMPTS:
                await self.sleep(BACKOFF * 2**attempt)
        log.info("webhook %s: %d tries failed; again in %gs", hook.id, ATTEMPTS, RETRY_SECONDS)
        return FAILED


def _status_category(status: int) -> str:
    return "http_5xx" if status >= 500 else "http_4xx"


def _category(exc: BaseException) -> str:
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


def _unconfirmed(answer: Answer, challenge: str) -> str | None:
    """Why a verification's answer does not confirm it (None: it does)."""
    if answer.status >= 400:
        return _status_category(answer.status)
    try:
        echoed = json.loads(answer.body).get("challenge") if 200 <= answer.status < 300 else None
    except (ValueError, AttributeError):
        echoed = None
    if isinstance(echoed, str) and hmac.compare_digest(echoed.encode(), challenge.encode()):
        return None
    return "challenge_failed"


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
