"""Webhook delivery of MCP Events (``events/subscribe``, ``events/unsubscribe``; ``events.py``),
as SEP-3415 profiles Standard Webhooks: the server POSTs each event to a URL the client gave,
signed with the ``whsec_`` secret the client gave (``webhook-id``, ``webhook-timestamp``,
``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, and
``X-MCP-Subscription-Id``), until the subscription's TTL ends unless the client subscribes again
(a refresh: the same key, its principal, event, arguments and URL, of which its id is a digest).
This module makes, refreshes and ends subscriptions; ``webhook_delivery.py`` POSTs their events
(``Webhooks`` is its ``Delivery``), ``webhook_consent.py`` bounds the handshakes below and
remembers their answers. Their public names are re-exported here, where callers found them.

Before the first delivery to a URL the receiver confirms it wants them (the SEP's verification
handshake: a signed ``{"type": "verification", "challenge"}`` it echoes in a 2xx answer), once
per principal and URL: the operator's ``--webhook-hosts`` says where the server may reach, not
what a receiver there agreed to, so an attacker cannot point deliveries at a listed host's
endpoint that never asked for them.

A verification is a POST a client has the server make at a host of its choosing, so it is bounded
by the addresses the SSRF guard checked (``webhook_consent.Verifications``), and the
POST connects to those addresses only (``pinned_to``); every failed verification is one refusal
to the client (the reason goes to the operator's log), so that the refusals do not tell a closed
port from an open one that is no webhook.

A URL is the client's data: it goes through the package's SSRF guard (``_http/ssrf.py``), which
lets only the hosts the operator listed (``--webhook-hosts``) be reached and connects to the
addresses it checked; it is https (SEP-3415's "https callback URL"), plain http only to a
loopback address. Only a client with a principal of its own subscribes: over stdio the
process that started the server, over HTTP a request the bearer token let in (a server without
``--auth-token`` has no principals: every local process would be the same one).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv6Address
from urllib.parse import urlsplit

from mcp import types
from mcp.server.context import ServerRequestContext as Ctx  # one request's

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
    UNSUPPORTED_CODE,
    Reader,
    Source,
    Start,
    SubscribeParams,
    event_error,
)
from .owners import client_of
from .watch import Watches

# Kept in webhook_consent.py and re-exported: the names callers and tests import from here
from .webhook_consent import VERIFIED_MAX as VERIFIED_MAX
from .webhook_consent import VERIFIED_PER_CLIENT as VERIFIED_PER_CLIENT
from .webhook_consent import VERIFY_CLIENT_SHARE as VERIFY_CLIENT_SHARE
from .webhook_consent import VERIFY_EACH as VERIFY_EACH
from .webhook_consent import VERIFY_PER_ADDRESS as VERIFY_PER_ADDRESS
from .webhook_consent import VERIFY_PER_CLIENT as VERIFY_PER_CLIENT
from .webhook_consent import VERIFY_RECORDS as VERIFY_RECORDS
from .webhook_consent import VERIFY_WINDOW as VERIFY_WINDOW
from .webhook_consent import Consents, Verifications
from .webhook_delivery import SECRET_PREFIX, Delivery, Webhook, failure_category, status_category
from .webhook_delivery import Answer as Answer
from .webhook_delivery import Post as Post
from .webhook_delivery import sign as sign

log = logging.getLogger("mq9_mcp")

TIMEOUT = 10.0  # seconds a POST may take
DEFAULT_TTL_MS = 60 * 60 * 1000
MAX_TTL_MS = 24 * 60 * 60 * 1000  # also the grant to a client asking for no expiry
MIN_TTL_MS = 1000
# After a refresh gave a new secret, deliveries are signed with the old one too for this long
# (the SEP's dual-signing grace window: a receiver may still hold only the old one).
ROTATION_GRACE_SECONDS = 300.0
# The one reason every failed verification is refused with: a category per failure
# (connection refused, timeout, an HTTP status, no echo) would tell a closed port from an open
# one that is no webhook receiver, a map of the hosts the operator listed.
UNCONFIRMED = "challenge_failed"
# ... and answered no sooner than this many seconds after the POST began, so that its time does
# not tell them apart either (a closed port refuses in a millisecond, a service answers in a few):
# only a service that takes longer than this (one that never answers: ``TIMEOUT``) still shows.
VERIFY_FLOOR = 1.0
CALLBACK_FAILED = "callback_endpoint_error"


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


class Webhooks(Delivery):
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
            reason = failure_category(exc)
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


def _unconfirmed(answer: Answer, challenge: str) -> str | None:
    """Why a verification's answer does not confirm it (None: it does)."""
    if answer.status >= 400:
        return status_category(answer.status)
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
