"""The A2A gateway: mq9 agents served to HTTP A2A clients (A2A 1.0, JSON-RPC binding, with
a2a-sdk's server side), store and forward (docs/a2a-gateway.md, "The gateway").

    app = await gateway_app(mq9_client, ["agent.summarizer"], tenants=Tenants({"app": token}),
                            public_url="https://gw.example.com")

Each chosen agent has its card at ``/a2a/<name>/.well-known/agent-card.json`` and its endpoint
at ``/a2a/<name>``. A request is an ``Mq9Transport`` call: SendMessage leaves the task in the
agent's mailbox, and the HTTP client has the task's id at once (streaming, or
``returnImmediately``) even while the agent is offline; GetTask, ListTasks, a stream or a
resubscribe give the result once the agent is back. Every caller authenticates (a bearer
token or an API key, as the card declares) and is a tenant: its tasks live in a reply mailbox
of its own, so another tenant's GetTask, ListTasks, CancelTask or answer never finds them.
The gateway reaches the broker as one mq9 identity, its client's (``MQ9_CREDENTIAL``...), and
needs nothing of any other agent's but a SEND to its public mailbox; to a served agent each
tenant's task is that identity's (the broker vouches for it) AND the tenant's reply mailbox.
Needs the ``a2a-gateway`` extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import hashlib
import json
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping
from typing import Any, cast

from a2a.client.client import ClientCallContext
from a2a.server.context import ServerCallContext
from a2a.server.events.event_queue import Event
from a2a.server.request_handlers import RequestHandler
from a2a.server.request_handlers.response_helpers import build_error_response
from a2a.server.routes import (
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.types.a2a_pb2 import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
)
from a2a.utils.constants import AGENT_CARD_WELL_KNOWN_PATH
from a2a.utils.error_handlers import build_rest_error_payload
from a2a.utils.errors import (
    A2AError,
    ContentTypeNotSupportedError,
    ExtendedAgentCardNotConfiguredError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    PushNotificationNotSupportedError,
)
from a2a.utils.task import apply_history_length, validate_history_length
from google.protobuf.struct_pb2 import Struct  # type: ignore[import-untyped]
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, SimpleUser
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as AsgiMessage

from mq9_wire.protocol import card_mailbox, check_address
from mq9_wire.protocol.errors import KeysFull, Mq9Error

from ...client.client import Mq9Client
from ...client.key_shares import (
    IDENTITY_KEYS,
    CallerKeys,
    KeyShares,
    KeysRefused,
    callers_total,
)
from ...wake.deliver import Refused
from .. import mail as w
from ..arrivals import Arrivals
from ..push_auth import JWKS_PATH, PUSH_JWT_EXTENSION
from ..sdk.protojson import to_proto
from ..sdk.transport import (
    IDEMPOTENCY_KEY,
    LAST_EVENT_ID,
    Mq9Transport,
    cursor_value,
    key_value,
)
from ..shapes import CardJson, JsonObject, JsonValue
from ..store import ensure_mailbox
from .push import GatewayPush

BEARER = "bearer"
API_KEY = "api-key"
API_KEY_HEADER = "X-API-Key"
# How long a blocking SendMessage waits for the task to stop before answering with the task
# as it stands (the client then polls GetTask or resubscribes).
SEND_WAIT = 30.0
# How long a stream (SendStreamingMessage, SubscribeToTask) follows a task.
STREAM_WAIT = 600.0
# How long CancelTask waits for the agent to confirm.
CANCEL_WAIT = 5.0
# The largest request body read: a request goes into one mq9 message (about 1 MB on RobustMQ).
MAX_BODY_BYTES = 2 * 1024 * 1024
# How long a request's body may take to arrive, whole.
BODY_SECONDS = 30.0
GATEWAY = "gateway"  # the default name of the gateway's reply mailboxes, <gateway>.<tenant>


class Tenants:
    """Who may call: each secret (a bearer token or an API key, by ``scheme``) names a tenant."""

    def __init__(self, secrets: Mapping[str, str], *, scheme: str = BEARER) -> None:
        """``secrets``: tenant -> its token. A tenant is a name of letters, digits, '.-_'."""
        for tenant, token in secrets.items():
            if len(token) < 16:
                raise ValueError(f"tenant {tenant[:40]}'s token is shorter than 16 characters")
        self._take({tenant: _digest(token) for tenant, token in secrets.items()}, scheme)

    @classmethod
    def from_digests(cls, digests: Mapping[str, str], *, scheme: str = BEARER) -> Tenants:
        """``digests``: tenant -> the sha256 of its token in hex, as ``--tokens-file`` holds
        them, so the file names no token."""
        tenants = cls.__new__(cls)
        tenants._take({t: bytes.fromhex(hexed) for t, hexed in digests.items()}, scheme)
        return tenants

    def _take(self, digests: Mapping[str, bytes], scheme: str) -> None:
        if scheme not in (BEARER, API_KEY):
            raise ValueError(f"auth scheme {scheme!r}: {BEARER} or {API_KEY}")
        if not digests:
            raise ValueError("the gateway needs at least one tenant and its token")
        self.scheme = scheme
        self._by_digest: dict[bytes, str] = {}
        for tenant, digest in digests.items():
            if not w.is_valid_id(tenant):
                raise ValueError(f"tenant name {tenant[:40]!r}: letters, digits, '.', '-', '_'")
            self._by_digest[digest] = tenant

    @property
    def names(self) -> set[str]:
        return set(self._by_digest.values())

    def find(self, headers: Headers) -> str | None:
        """The tenant the request's credential names, or None."""
        if self.scheme == BEARER:
            kind, _, token = headers.get("authorization", "").partition(" ")
            if kind.lower() != "bearer":
                return None
        else:
            token = headers.get(API_KEY_HEADER, "")
        # Looked up by digest: no comparison runs over the secret itself.
        return self._by_digest.get(_digest(token.strip())) if token.strip() else None

    def card_fields(self) -> CardJson:
        """The A2A card's securitySchemes and securityRequirements for this scheme."""
        if self.scheme == BEARER:
            scheme = {"httpAuthSecurityScheme": {"scheme": "Bearer"}}
        else:
            scheme = {"apiKeySecurityScheme": {"location": "header", "name": API_KEY_HEADER}}
        return {
            "securitySchemes": {self.scheme: scheme},
            "securityRequirements": [{"schemes": {self.scheme: {"list": []}}}],
        }


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class _Authenticated:
    """ASGI middleware: every request but a card's GET carries a tenant's credential."""

    def __init__(self, app: ASGIApp, tenants: Tenants) -> None:
        self.app = app
        self.tenants = tenants
        self.handlers: dict[str, GatewayHandler] = {}  # agent -> its handler (gateway_app)
        self.key_shares: KeyShares | None = None  # the tenants' keys (gateway_app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (
            scope["method"] in ("GET", "HEAD")
            and scope["path"].endswith((AGENT_CARD_WELL_KNOWN_PATH, JWKS_PATH))
        ):
            await self.app(scope, receive, send)
            return
        tenant = self.tenants.find(Headers(scope=scope))
        if tenant is None:
            challenge = "Bearer" if self.tenants.scheme == BEARER else API_KEY_HEADER
            refused = JSONResponse(
                {"error": f"authenticate: {challenge} (see the agent card's securitySchemes)"},
                status_code=401,
                headers={"WWW-Authenticate": challenge},
            )
            await refused(scope, receive, send)
            return
        scope["user"] = SimpleUser(tenant)
        scope["auth"] = AuthCredentials(["authenticated"])
        size = Headers(scope=scope).get("content-length", "")
        if size.isdigit() and int(size) > MAX_BODY_BYTES:
            await _too_large(scope, receive, send)
            return
        # The body is read here, whole, before the SDK sees any of it: one sent without a
        # length (chunked) is refused as soon as it passes the limit, never read to its end
        # (the SDK, reading it itself, read all of it and answered an empty -32603).
        try:
            body = await _bounded(receive)
        except _Disconnected:
            return  # the client left: nobody to answer
        except _Refused as refused:
            await _too_large(scope, receive, send, refused.status, str(refused))
            return
        await self.app(scope, _replay(body, receive), send)


async def _too_large(
    scope: Scope,
    receive: Receive,
    send: Send,
    status: int = 413,
    text: str = f"the request is larger than {MAX_BODY_BYTES} bytes: send less",
) -> None:
    # Connection: close, as the rest of the body is never read
    refused = JSONResponse({"error": text}, status_code=status, headers={"Connection": "close"})
    await refused(scope, receive, send)


class _Disconnected(Exception):
    """The client went away before its body was whole."""


class _Refused(Exception):
    """A body not read to its end: too large (413), or too slow (408)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


async def _bounded(receive: Receive) -> bytes:
    """The request's body, read as it comes: ``_Refused`` once it passes ``MAX_BODY_BYTES``
    (nothing more is read), or when it has not all come within ``BODY_SECONDS`` (a client
    sending a byte at a time holds a connection that long at most)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(BODY_SECONDS):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Disconnected()
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise _Refused(
                        413, f"the request is larger than {MAX_BODY_BYTES} bytes: send less"
                    )
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        raise _Refused(408, f"the request body did not arrive within {BODY_SECONDS:g} s") from None


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app: the body read already, then the connection's own messages (a
    stream learns of the client's leaving there)."""
    given = False

    async def replay() -> AsgiMessage:
        nonlocal given
        if given:
            return await receive()
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


class GatewayHandler(RequestHandler):
    """a2a-sdk's request handler for one mq9 agent: each method an ``Mq9Transport`` call in the
    calling tenant's own reply mailbox."""

    def __init__(
        self,
        client: Mq9Client,
        mailbox: str,
        card: AgentCard,
        *,
        gateway: str = GATEWAY,
        send_wait: float = SEND_WAIT,
        stream_wait: float = STREAM_WAIT,
        push: GatewayPush | None = None,
        arrivals: Arrivals | None = None,
        closing: asyncio.Event | None = None,
        once_per_message: bool = False,
        key_shares: KeyShares | None = None,
    ) -> None:
        self.client = client
        # the keys each tenant's calls send, out of a share of its own (one ledger for
        # every agent's handler: the broker bounds the gateway's one identity); None: unbounded
        self.key_shares = key_shares
        # the operator's choice (--once-per-message): a tenant's SendMessage sent again
        # with its messageId answers the task the first made. Off by default: the A2A spec
        # makes it a MAY (3.3.1), and its TCK sends many requests under one messageId, each
        # expecting a task of its own
        self.once_per_message = once_per_message
        self.mailbox = mailbox
        self.card = card
        self.gateway = gateway
        self.send_wait = send_wait
        self.stream_wait = stream_wait
        self.push = push  # the tenants' push configs, where the operator allows them
        # The agent's answers read as they arrive where the broker announces them (else polled)
        self.arrivals = arrivals
        self._transports: dict[str, Mq9Transport] = {}  # by tenant: the configured ones
        # Set when the gateway stops (close(), or the event given, shared by every agent's
        # handler): open streams end with their task's state as it stands
        self._closing = closing or asyncio.Event()

    @staticmethod
    def _shown(task: Task) -> Task:
        """A task as the HTTP client sees it: without our own bookkeeping (which reply
        mailbox owns it), with its newest event's number (``seq`` under the resume
        extension's key, unless a stream placed it already)."""
        if "mq9" in task.metadata:
            ours = task.metadata["mq9"]
            seq = ours[w.SEQ] if isinstance(ours, Struct) and w.SEQ in ours else None
            if w.RESUME_EXTENSION not in task.metadata and isinstance(seq, float | int):
                task.metadata[w.RESUME_EXTENSION] = {"seq": int(seq)}
            del task.metadata["mq9"]
        return task

    def _transport(self, context: ServerCallContext) -> Mq9Transport:
        tenant = context.user.user_name if context.user.is_authenticated else ""
        if not w.is_valid_id(tenant):  # the middleware lets no such request through
            raise InvalidRequestError("unauthenticated")
        transport = self._transports.get(tenant)
        if transport is None:  # one per tenant: it learns once that its reply mailbox is there
            reply = reply_mailbox(self.gateway, tenant)
            client = self.client
            if self.key_shares is not None:  # its keyed sends counted against its share
                client = cast(Mq9Client, CallerKeys(client, self.key_shares, tenant))
            transport = Mq9Transport(
                client,
                self.mailbox,
                reply_mailbox=reply,
                card=self.card,
                arrivals=self.arrivals,
                # a client's SendMessage sent again (its messageId again: the answer was
                # lost) answers the task the first one made; another tenant's is its own
                once_per_message=self.once_per_message,
            )
            self._transports[tenant] = transport
        return transport

    async def on_message_send(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> Task | Message:
        validate_history_length(params.configuration)
        transport = self._transport(context)
        timeout = ClientCallContext(timeout=self.send_wait)
        key = idempotency_key(context)
        with _said():
            params, on_sent = await self._push_inline(params, transport)
            answer = await transport.send_message(
                params, context=timeout, on_sent=on_sent, idempotency_key=key
            )
        if answer.HasField("message"):  # the agent answered with a Message, not a task
            return answer.message
        return apply_history_length(self._shown(answer.task), params.configuration)

    async def on_message_send_stream(
        self, params: SendMessageRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        transport = self._transport(context)
        timeout = ClientCallContext(timeout=self.stream_wait)
        key = idempotency_key(context)
        with _said():
            params, on_sent = await self._push_inline(params, transport)
            events = transport.send_message_streaming(
                params, context=timeout, on_sent=on_sent, idempotency_key=key
            )
            async for task in self._until_closing(events, transport):
                yield task

    async def on_get_task(self, params: GetTaskRequest, context: ServerCallContext) -> Task:
        validate_history_length(params)
        with _said():
            task = self._shown(await self._transport(context).get_task(params))
        return apply_history_length(task, params)

    async def on_list_tasks(
        self, params: ListTasksRequest, context: ServerCallContext
    ) -> ListTasksResponse:
        with _said():
            found = await self._transport(context).list_tasks(params)
        for task in found.tasks:
            self._shown(task)
            if params.HasField("history_length"):
                task.CopyFrom(apply_history_length(task, params))
        return found

    async def on_cancel_task(self, params: CancelTaskRequest, context: ServerCallContext) -> Task:
        timeout = ClientCallContext(timeout=CANCEL_WAIT)
        with _said():
            task = await self._transport(context).cancel_task(params, context=timeout)
        return self._shown(task)

    async def on_subscribe_to_task(
        self, params: SubscribeToTaskRequest, context: ServerCallContext
    ) -> AsyncGenerator[Event]:
        transport = self._transport(context)
        timeout = ClientCallContext(timeout=self.stream_wait)
        after = last_event_id(context)  # resumed after the last event the client saw
        with _said():
            events = transport.subscribe(params, context=timeout, after=after)
            async for task in self._until_closing(events, transport):
                yield task

    async def _until_closing(
        self, events: AsyncGenerator[StreamResponse], transport: Mq9Transport
    ) -> AsyncGenerator[Task]:
        """A stream's tasks until it ends, or until the gateway closes (``close()``): then it
        ends with the task's state as it stands, which the client resumes from (GetTask,
        SubscribeToTask on a gateway started again)."""
        newest: Task | None = None
        closing = asyncio.ensure_future(self._closing.wait())
        step: asyncio.Future[StreamResponse] | None = None
        try:
            while True:
                step = asyncio.ensure_future(anext(events))
                await asyncio.wait({step, closing}, return_when=asyncio.FIRST_COMPLETED)
                if not step.done():
                    if newest is not None:
                        now = await _now(transport, newest)
                        if now != newest:
                            yield now
                    return
                try:
                    event = step.result()
                except StopAsyncIteration:
                    return
                newest = self._shown(event.task)
                yield newest
        finally:
            # The stream is over (closing, or the client went away: then this generator is
            # cancelled while ``step`` still runs ``events``): stop that first, then close it
            closing.cancel()
            if step is not None and not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
            await events.aclose()

    async def _push_inline(
        self, params: SendMessageRequest, transport: Mq9Transport
    ) -> tuple[SendMessageRequest, Callable[[str], Awaitable[None]] | None]:
        """A push config given inside SendMessage: its URL checked before anything is sent,
        then kept by the gateway for the task once sent (the request goes on without it)."""
        if not params.configuration.HasField("task_push_notification_config"):
            return params, None
        push = self._pushing()
        config = TaskPushNotificationConfig()
        config.CopyFrom(params.configuration.task_push_notification_config)
        try:
            await push.deliverer.destinations.check_url(config.url)
        except Refused as exc:
            raise InvalidParamsError(f"push notification url refused: {exc}") from None
        bare = SendMessageRequest()
        bare.CopyFrom(params)
        bare.configuration.ClearField("task_push_notification_config")

        async def keep(task_id: str) -> None:
            config.task_id = task_id
            await push.create(transport, config)

        return bare, keep

    def close(self) -> None:
        """End every open stream with its task's state as it stands (the gateway stops)."""
        self._closing.set()

    # Push configs: the gateway keeps them, per tenant, and POSTs the task's states.
    def _pushing(self) -> GatewayPush:
        if self.push is None:
            raise PushNotificationNotSupportedError(
                "push notifications are not enabled on this gateway: poll, stream or resubscribe"
            )
        return self.push

    async def on_create_task_push_notification_config(
        self, params: TaskPushNotificationConfig, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        with _said():
            return await self._pushing().create(self._transport(context), params)

    async def on_get_task_push_notification_config(
        self, params: GetTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> TaskPushNotificationConfig:
        with _said():
            return await self._pushing().get(self._transport(context), params)

    async def on_list_task_push_notification_configs(
        self, params: ListTaskPushNotificationConfigsRequest, context: ServerCallContext
    ) -> ListTaskPushNotificationConfigsResponse:
        with _said():
            return await self._pushing().list(self._transport(context), params)

    async def on_delete_task_push_notification_config(
        self, params: DeleteTaskPushNotificationConfigRequest, context: ServerCallContext
    ) -> None:
        with _said():
            await self._pushing().delete(self._transport(context), params)

    async def on_get_extended_agent_card(self, params: Any, context: Any) -> AgentCard:
        """The card an authenticated tenant gets (the card says ``extendedAgentCard``): the
        public one, as the gateway shows every tenant the same agent (no skill is a tenant's
        own); served so clients that ask for it, as the card lets them, get an answer."""
        self._transport(context)  # a tenant's call only (the middleware let no other in)
        if not self.card.capabilities.extended_agent_card:
            raise ExtendedAgentCardNotConfiguredError()
        return self.card


# A closing stream's last read of its task is bounded well inside the gateway's shutdown
# window (cli.SHUTDOWN_WAIT, 5 s): past it the stream ends with the state it showed last.
CLOSING_READ_SECONDS = 2.0


async def _now(transport: Mq9Transport, task: Task) -> Task:
    """The task as it stands, as the HTTP client sees it (``task`` if it cannot be read in
    ``CLOSING_READ_SECONDS``)."""
    try:
        async with asyncio.timeout(CLOSING_READ_SECONDS):
            now = await transport.get_task(GetTaskRequest(id=task.id))
    except (A2AError, Mq9Error, TimeoutError):
        return task
    now = GatewayHandler._shown(now)
    if w.RESUME_EXTENSION in now.metadata:  # the task as it stands: no event, no cursor
        where = now.metadata[w.RESUME_EXTENSION]
        if isinstance(where, Struct) and "seq" in where:
            now.metadata[w.RESUME_EXTENSION] = {"snapshot": where["seq"]}
    return now


def request_header(context: ServerCallContext, name: str) -> str | None:
    """A request's header (HTTP bindings), or its call's metadata (gRPC), by name
    (``Last-Event-ID``, ``Idempotency-Key``; a2a-sdk's client sends either from
    ``ClientCallContext.service_parameters``)."""
    headers = context.state.get("headers")
    if isinstance(headers, Mapping):
        value = headers.get(name.lower())
        return value if isinstance(value, str) else None
    grpc_context = context.state.get("grpc_context")
    if grpc_context is not None:
        for key, value in grpc_context.invocation_metadata() or ():
            if key.lower() == name.lower() and isinstance(value, str):
                return value
    return None


def last_event_id(context: ServerCallContext) -> int | None:
    """The ``Last-Event-ID`` a SubscribeToTask names (None: none): the number of the last
    event the client saw; InvalidParamsError for one that is no such number."""
    return cursor_value(request_header(context, LAST_EVENT_ID))


def idempotency_key(context: ServerCallContext) -> str | None:
    """The ``Idempotency-Key`` a SendMessage carries (None: none); InvalidParamsError for one
    that is not 1 to 255 visible ASCII characters."""
    return key_value(request_header(context, IDEMPOTENCY_KEY))


def reply_mailbox(gateway: str, tenant: str) -> str:
    """One reply mailbox per tenant: its tasks alone (the caller name ``<gateway>.<tenant>``;
    for a gateway with an identity of its own ``gateway_app`` makes ``gateway`` a name under
    ``mq9.calls.<digest of that identity>``, used as the address itself)."""
    return f"{gateway}.{tenant}"


@contextlib.contextmanager
def _said() -> Iterator[None]:
    """A broker failure as an A2A error in words (a2a-sdk answers others with an empty one);
    a refused key in the tenant's own words (its share's count, never the gateway
    identity's, nor another tenant's)."""
    try:
        yield
    except KeysRefused as exc:
        raise InternalError(str(exc)) from None
    except KeysFull:
        # the broker's own bound, reached by others (an open broker's keys in all): its
        # counts are the broker's or the gateway identity's, none of the tenant's
        raise InternalError(
            "the mq9 broker has no room for another idempotency key now: send without "
            f"{IDEMPOTENCY_KEY}, or later"
        ) from None
    except Mq9Error as exc:
        raise InternalError(f"the mq9 broker did not carry the request: {exc}") from None


REST = "/rest"  # under an agent's endpoint: its HTTP+JSON binding (JSON-RPC at the endpoint)
JSON_TYPES = ("application/json", "application/a2a+json")  # the media types a request may have
CARD_MAX_AGE = 300  # seconds a client may keep an agent card (A2A 8.6: Cache-Control)


def agent_routes(handler: GatewayHandler, card: AgentCard, path: str) -> list[BaseRoute]:
    """One agent's routes: its card, JSON-RPC at ``path`` (with or without a trailing slash:
    clients post to either, and a redirect is not followed by all), HTTP+JSON under
    ``path + REST``."""
    routes: list[BaseRoute] = [
        *create_agent_card_routes(card, card_url=path + AGENT_CARD_WELL_KNOWN_PATH),
        *create_jsonrpc_routes(handler, path),
        *create_jsonrpc_routes(handler, path + "/"),
    ]
    # a2a-sdk adds a catch-all Mount for its own tenant paths: it would shadow the next agent
    return routes + [
        r for r in create_rest_routes(handler, path_prefix=path + REST) if isinstance(r, Route)
    ]


class _Conventions:
    """ASGI middleware for what a2a-sdk's routes leave out: a request body of another media
    type than JSON refused as A2A says (ContentTypeNotSupportedError: JSON-RPC -32005, HTTP+JSON
    415), and an agent card's caching headers (Cache-Control, ETag, Last-Modified)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.started = email.utils.formatdate(usegmt=True)  # the cards are made at startup

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if scope["method"] == "GET" and path.endswith(AGENT_CARD_WELL_KNOWN_PATH):
            await self.app(scope, receive, self._cached(send))
            return
        kind = Headers(scope=scope).get("content-type")
        media = (kind or "").partition(";")[0].strip().lower()
        if (
            scope["method"] in ("POST", "PUT", "PATCH")
            and kind is not None
            and (media not in JSON_TYPES)
        ):
            error = ContentTypeNotSupportedError(
                f"Content-Type {media[:80]!r}: send {' or '.join(JSON_TYPES)}"
            )
            if REST + "/" in path:
                refused = JSONResponse(build_rest_error_payload(error), status_code=415)
            else:
                refused = JSONResponse(build_error_response(None, error))
            await refused(scope, receive, send)
            return
        # A2A 11.1: the HTTP+JSON binding answers application/json (a2a-sdk says a2a+json)
        sent = _plain_json(send) if REST + "/" in path else send
        await self.app(scope, receive, _sse_ids(sent))

    def _cached(self, send: Send) -> Send:
        body_hash = hashlib.sha256()
        held: list[AsgiMessage] = []

        async def cached(message: AsgiMessage) -> None:
            # The card is small: held until its body is known, for its ETag
            if message["type"] == "http.response.start":
                held.append(message)
                return
            if message["type"] == "http.response.body" and held:
                body_hash.update(message.get("body", b""))
                if message.get("more_body"):
                    held.append(message)
                    return
                start, *bodies = held
                held.clear()
                if start.get("status") == 200:
                    headers = list(start.get("headers", []))
                    headers += [
                        (b"cache-control", f"public, max-age={CARD_MAX_AGE}".encode()),
                        (b"etag", f'"{body_hash.hexdigest()[:32]}"'.encode()),
                        (b"last-modified", self.started.encode()),
                    ]
                    start = {**start, "headers": headers}
                for each in (start, *bodies, message):
                    await send(each)
                return
            await send(message)

        return cached


def _sse_ids(send: Send) -> Send:
    """An event stream's events given their SSE ``id``: the task's event number its
    JSON carries (``metadata[RESUME_EXTENSION].seq``), so a client's ``Last-Event-ID`` is
    the last event it got; an event without one (a snapshot ahead of a replay) has no id,
    and an EventSource keeps the one it had."""
    streaming = False
    held = b""

    async def sent(message: AsgiMessage) -> None:
        nonlocal streaming, held
        if message["type"] == "http.response.start":
            kinds = [v for k, v in message.get("headers", []) if k.lower() == b"content-type"]
            streaming = any(v.startswith(b"text/event-stream") for v in kinds)
            await send(message)
            return
        if not streaming or message["type"] != "http.response.body":
            await send(message)
            return
        held += message.get("body", b"")
        more = message.get("more_body", False)
        out: list[bytes] = []
        while True:  # whole events only (an event ends with a blank line)
            cut = _event_end(held)
            if cut is None:
                break
            event, held = held[: cut[0]], held[cut[1] :]
            out.append(_with_id(event) + cut[2])
        if not more and held:
            out.append(held)
            held = b""
        await send({**message, "body": b"".join(out)})

    return sent


def _event_end(data: bytes) -> tuple[int, int, bytes] | None:
    """Where the first whole SSE event in ``data`` ends: (its end, the next's start, the
    blank line between), or None."""
    ends = [(data.find(sep), sep) for sep in (b"\r\n\r\n", b"\n\n", b"\r\r")]
    found = [(i, sep) for i, sep in ends if i >= 0]
    if not found:
        return None
    i, sep = min(found)
    return i, i + len(sep), sep


def _with_id(event: bytes) -> bytes:
    """An SSE event with an ``id:`` line naming its task's event number, if its data says it."""
    lines = event.splitlines()
    if any(line.startswith(b"id:") for line in lines):
        return event
    data = b"\n".join(line[5:].removeprefix(b" ") for line in lines if line.startswith(b"data:"))
    if w.RESUME_EXTENSION.encode() not in data:
        return event
    try:
        body = json.loads(data)
    except ValueError:
        return event
    seq = _event_seq(body)
    if seq is None:
        return event
    newline = b"\r\n" if b"\r\n" in event else b"\n"
    return f"id: {seq}".encode() + newline + event


def _event_seq(body: object) -> int | None:
    """The ``seq`` of the task a streamed JSON-RPC or HTTP+JSON event carries."""
    if isinstance(body, dict) and isinstance(body.get("result"), dict):
        body = body["result"]  # JSON-RPC's envelope
    task = body.get("task") if isinstance(body, dict) else None
    meta = task.get("metadata") if isinstance(task, dict) else None
    place = meta.get(w.RESUME_EXTENSION) if isinstance(meta, dict) else None
    seq = place.get("seq") if isinstance(place, dict) else None
    if isinstance(seq, bool) or not isinstance(seq, int | float) or seq < 0:
        return None
    return int(seq)


def _plain_json(send: Send) -> Send:
    async def sent(message: AsgiMessage) -> None:
        if message["type"] == "http.response.start":
            headers = [
                (k, b"application/json" if k == b"content-type" and v == A2A_JSON else v)
                for k, v in message.get("headers", [])
            ]
            message = {**message, "headers": headers}
        await send(message)

    return sent


A2A_JSON = b"application/a2a+json"


def gateway_card(
    registered: Mapping[str, JsonValue] | None,
    name: str,
    endpoint: str,
    tenants: Tenants,
    *,
    push: bool = False,
    jwks_url: str = "",
    grpc_url: str = "",
) -> CardJson:
    """The HTTP A2A card of mq9 agent ``name`` (its registry card's words and skills, if it
    has one) served at ``endpoint``. ``jwks_url``: where the keys that sign its pushes are;
    ``grpc_url``: the gateway's gRPC server (``host:port``), if it serves one."""
    card = dict(registered or {})
    interfaces = [
        {"url": endpoint, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
        {"url": endpoint + REST, "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
    ]
    if grpc_url:  # one gRPC server for every agent: a request names its agent in ``tenant``
        interfaces.append(
            {"url": grpc_url, "protocolBinding": "GRPC", "protocolVersion": "1.0", "tenant": name}
        )
    capabilities: JsonObject = {
        "streaming": True,
        "pushNotifications": push,
        "extendedAgentCard": True,  # GetExtendedAgentCard answers a tenant (the same card)
    }
    extensions: list[JsonValue] = [resume_extension()]
    if push and jwks_url:
        extensions.append(
            {
                "uri": PUSH_JWT_EXTENSION,
                "description": "each push carries a JWT (X-Mq9-Push-JWT) signed by these keys",
                "required": False,
                "params": {"jwksUrl": jwks_url},
            }
        )
    capabilities["extensions"] = extensions
    return {
        "name": name,
        "description": str(card.get("description") or f"{name}, an mq9 agent"),
        "version": str(card.get("version") or "1.0.0"),
        "supportedInterfaces": interfaces,
        "capabilities": capabilities,
        "defaultInputModes": card.get("defaultInputModes") or ["text/plain"],
        "defaultOutputModes": card.get("defaultOutputModes") or ["text/plain"],
        # A2A requires a skill: an agent that named none takes what its description says
        "skills": card.get("skills")
        or [{"id": "tasks", "name": name, "description": "takes A2A tasks", "tags": ["mq9"]}],
        **tenants.card_fields(),
    }


def resume_extension() -> JsonObject:
    """The card's word for resume with replay (an extension of ours until A2A names one:
    a2aproject/A2A #1986, #1893): where a streamed task carries its event number, where a
    SubscribeToTask names the last one seen, and the SendMessage idempotency key."""
    return {
        "uri": w.RESUME_EXTENSION,
        "description": (
            "each event of a task is numbered (metadata[uri].seq, the SSE id); SubscribeToTask "
            "with the last one seen replays every event after it, then follows; a SendMessage "
            "under one Idempotency-Key reaches the agent once, per tenant"
        ),
        "required": False,
        "params": {
            "eventMetadataKey": w.RESUME_EXTENSION,
            "cursorHeader": LAST_EVENT_ID,
            "cursorGrpcMetadata": LAST_EVENT_ID.lower(),
            "idempotencyHeader": IDEMPOTENCY_KEY,
            "idempotencyGrpcMetadata": IDEMPOTENCY_KEY.lower(),
            "gap": "gap",
        },
    }


def _jwks_route(push: GatewayPush, path: str) -> Route:
    """The public keys the gateway's pushes are signed with (``push_auth``), public as the
    cards are: a receiver checks each push's JWT against them."""
    keys = push.signer.jwks()

    async def jwks(request: Any) -> JSONResponse:
        return JSONResponse(keys, headers={"Cache-Control": f"public, max-age={CARD_MAX_AGE}"})

    return Route(path, jwks, methods=["GET"])


async def gateway_app(
    client: Mq9Client,
    agents: list[str],
    *,
    tenants: Tenants,
    public_url: str,
    grpc_url: str = "",
    **options: Any,
) -> _Authenticated:
    """The ASGI app serving ``agents`` (registry names) to HTTP A2A clients. Each agent's
    mailbox (its card's, else its name) is created if missing, so calls wait there until it
    starts, unless the client has an mq9 identity of its own (a credential): then the gateway
    makes no other agent's mailbox (on a ``--credentials`` broker a mailbox is its maker's for
    good, so the agent makes its own, as ``serve_agent`` does). ``options`` are
    ``GatewayHandler``'s: ``gateway`` (names the tenants' reply mailboxes,
    ``<gateway>.<tenant>``), ``send_wait``, ``stream_wait``, ``push`` (a ``GatewayPush``: the
    tenants' push configs; the cards then say ``pushNotifications``), ``closing`` (an
    ``asyncio.Event``: once set, open streams end with their task's state as it stands),
    ``once_per_message`` (a tenant's SendMessage resent with its messageId answers its task),
    ``key_shares`` (the ``KeyShares`` each tenant's keys count against; default
    ``tenant_key_shares(tenants)``, None: not bounded here).
    The client hears the broker's arrival announcements from here on, where it makes them
    (arrivals.py). ``grpc_url``: where the gateway's gRPC server is reached (``host:port``),
    listed in every card; serve it with ``grpc.serve_grpc(app.handlers, ...)``."""
    if not agents:
        raise ValueError("name at least one mq9 agent to serve")
    if "key_shares" not in options:
        options["key_shares"] = tenant_key_shares(tenants)
    registered = {a.get("name"): a for a in await client.agent_discover()}
    routes: list[BaseRoute] = []
    gateway = options.get("gateway", GATEWAY)
    if client.principal is not None:
        # Tenants' reply mailboxes that only this identity may make: a --credentials broker
        # keeps mq9.calls.<digest of a credential's id>.<...> for that credential, so nobody
        # can make a tenant's before the gateway does (a name anyone may derive, they could)
        gateway = f"{w.CALLS_ROOT}{w.digest(client.principal)}.{gateway}"
        options["gateway"] = gateway
    # One listener for every agent's handler, hearing of the tenants' reply mailboxes
    # (checked here: a --name or tenant that makes no address is said once, at the start)
    replies = [
        check_address(w.caller_address(reply_mailbox(gateway, tenant))) for tenant in tenants.names
    ]
    arrivals = Arrivals(client, replies)
    push: GatewayPush | None = options.get("push")
    jwks_url = public_url.rstrip("/") + JWKS_PATH
    handlers: dict[str, GatewayHandler] = {}
    if push is not None:
        push.signer.issuer = push.signer.issuer or public_url.rstrip("/")
        routes.append(_jwks_route(push, JWKS_PATH))
    for name in agents:
        if not w.is_valid_id(name):  # it becomes a URL path: letters, digits, '.', '-', '_'
            raise ValueError(f"agent name {name[:80]!r}: letters, digits, '.', '-', '_' only")
        entry = registered.get(name)
        mailbox = check_address((entry and card_mailbox(entry)) or name)
        if client.principal is None:
            await ensure_mailbox(client, mailbox)
        path = f"/a2a/{name}"
        card = to_proto(
            gateway_card(
                entry,
                name,
                public_url.rstrip("/") + path,
                tenants,
                push=push is not None,
                jwks_url=jwks_url,
                grpc_url=grpc_url,
            ),
            AgentCard,
        )
        handler = GatewayHandler(client, mailbox, card, arrivals=arrivals, **options)
        handlers[name] = handler
        routes += agent_routes(handler, card, path)
        if push is not None:  # beside the card too: a client may know only the agent's URL
            routes.append(_jwks_route(push, path + JWKS_PATH))
    await arrivals.start()
    app = _Authenticated(_Conventions(Starlette(routes=routes)), tenants)
    app.handlers = handlers  # for the gRPC binding (grpc.serve_grpc)
    app.key_shares = options["key_shares"]  # for the metrics (metrics.py)
    return app


def tenant_key_shares(
    tenants: Tenants, share: int | None = None, identity_keys: int | None = None, **options: Any
) -> KeyShares:
    """The ledger of the tenants' keys: each tenant ``share`` keys (default: the
    callers' part of ``identity_keys``, the broker's per-identity bound, split evenly among
    the tenants), all of them below that part; ``options``: ``KeyShares``'s (window, clock)."""
    total = callers_total(identity_keys or IDENTITY_KEYS)
    each = share if share is not None else max(1, total // len(tenants.names))
    return KeyShares(each, total=total, where="gateway", **options)
