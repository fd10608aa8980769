"""The gateway's gRPC binding (A2A 1.0's third): a2a-sdk's own gRPC servicer
(``GrpcHandler``) over the very ``GatewayHandler`` each agent's JSON-RPC and HTTP+JSON routes
use, so the tenants, their tokens and reply mailboxes, the limits and store-and-forward are the
same on every binding (docs/a2a-gateway.md, "Three bindings").

    server = await serve_grpc(app.handlers, tenants, "0.0.0.0:50051")   # ... await server.stop(5)

One gRPC server serves every agent of the gateway: a request names its agent in ``tenant`` (the
card's gRPC interface says which, and a2a-sdk's client sends it); a request without one goes to
the only agent where the gateway serves one. Every call carries a tenant's credential in its
metadata as the card's ``securitySchemes`` says (``authorization: Bearer <token>``, or
``x-api-key``), else UNAUTHENTICATED before its message is read (``_Credentials``: else
grpc reads and parses the message first, and a flood of large unauthenticated calls takes
the server's memory). Each connection carries at most ``MAX_STREAMS`` calls at once and a message
of at most ``MAX_BODY_BYTES`` (``server_options``). Needs grpcio (the a2a-gateway extra).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import grpc  # type: ignore[import-untyped]
import grpc.aio  # type: ignore[import-untyped]
from a2a.auth.user import UnauthenticatedUser, User
from a2a.server.request_handlers.grpc_handler import (
    DefaultGrpcServerCallContextBuilder,
    GrpcHandler,
)
from a2a.types import a2a_pb2_grpc
from a2a.utils.constants import PROTOCOL_VERSION_1_0, VERSION_HEADER
from a2a.utils.errors import (
    A2A_ERROR_REASONS,
    A2AError,
    PushNotificationNotSupportedError,
    UnsupportedOperationError,
    VersionNotSupportedError,
)
from a2a.utils.grpc_status import status_to_grpc
from google.protobuf import any_pb2  # type: ignore[import-untyped]
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from starlette.authentication import SimpleUser
from starlette.datastructures import Headers

from .app import MAX_BODY_BYTES, GatewayHandler, Tenants

UNARY = (
    "SendMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
)
STREAMING = ("SendStreamingMessage", "SubscribeToTask")
# Calls one HTTP/2 connection carries at once (its SETTINGS_MAX_CONCURRENT_STREAMS, RFC 9113's
# recommended least): with the message limit, what one connection can have the gateway read.
# grpc's own defence against streams reset at once (its "overload protection", kept) counts a
# stream until it is freed, so a client past the limit may see a large call refused
# (UNAVAILABLE, "RST_STREAM ... 7"); calls up to the limit at once on one channel are served
MAX_STREAMS = 100
MAX_METADATA_BYTES = 16 * 1024  # a call's headers: its credential, tenant, version
# What a stream may send before its message is asked for (its first HTTP/2 window), not grown by
# grpc's bandwidth probes: an unread call, refused on its metadata, has little in flight
LOOKAHEAD_BYTES = 16 * 1024
IDLE_MS = 5 * 60 * 1000  # a connection with no call for this long is closed
AGE_MS = 60 * 60 * 1000  # then told to go (GOAWAY): its open calls end as they would
HANDSHAKE_MS = 20 * 1000  # a connection that has not begun HTTP/2 by then is closed
# A2A 1.0 section 5.4's gRPC codes where a2a-sdk 1.3 gives others (FAILED_PRECONDITION)
SPEC_CODES: dict[type[A2AError], grpc.StatusCode] = {
    PushNotificationNotSupportedError: grpc.StatusCode.UNIMPLEMENTED,
    UnsupportedOperationError: grpc.StatusCode.UNIMPLEMENTED,
    VersionNotSupportedError: grpc.StatusCode.UNIMPLEMENTED,
}


class _Tenant(User):
    """a2a-sdk's user for a call whose credential named a tenant (``GatewayHandler`` reads
    ``user_name``, as it does of the HTTP bindings' Starlette user)."""

    def __init__(self, name: str) -> None:
        self._user = SimpleUser(name)

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def user_name(self) -> str:
        return self._user.username


def metadata_headers(context: Any) -> Headers:
    """The call's metadata as HTTP headers (gRPC sends them lower-cased), for ``Tenants``.
    ``context``: what has the call's ``invocation_metadata()`` (a ``ServicerContext``)."""
    pairs = [
        (k, v if isinstance(v, str) else v.decode("latin-1"))
        for k, v in context.invocation_metadata() or ()
        if not k.endswith("-bin")
    ]
    return Headers(raw=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs])


class _CallMetadata:
    """A call's metadata as ``metadata_headers`` reads it, before the call has a
    ``ServicerContext`` (in ``_Credentials``)."""

    def __init__(self, metadata: Any) -> None:
        self._metadata = tuple(metadata or ())

    def invocation_metadata(self) -> tuple[Any, ...]:
        return self._metadata


class TenantContext(DefaultGrpcServerCallContextBuilder):
    """Each call's tenant, from the credential in its metadata (``Tenants``, as over HTTP)."""

    def __init__(self, tenants: Tenants) -> None:
        self.tenants = tenants

    def build_user(self, context: grpc.aio.ServicerContext) -> User:
        tenant = self.tenants.find(self.headers(context))
        return _Tenant(tenant) if tenant is not None else UnauthenticatedUser()

    def headers(self, context: grpc.aio.ServicerContext) -> Headers:
        """The call's credentials, as headers (a test's subclass adds a tenant's token here,
        as a proxy in front of the gateway would)."""
        return metadata_headers(context)


class _SpecHandler(GrpcHandler):
    """a2a-sdk's servicer, its errors given A2A's own gRPC codes (``SPEC_CODES``), with the
    ``ErrorInfo`` detail a2a-sdk gives every A2A error."""

    async def abort_context(self, error: A2AError, context: grpc.aio.ServicerContext) -> None:
        code = SPEC_CODES.get(type(error))
        if code is None:
            await super().abort_context(error, context)
            return
        info = error_details_pb2.ErrorInfo(
            reason=A2A_ERROR_REASONS.get(type(error), "UNKNOWN_ERROR"), domain="a2a-protocol.org"
        )
        detail = any_pb2.Any()
        detail.Pack(info)
        message = getattr(error, "message", None) or str(error)
        rich = status_to_grpc(
            status_pb2.Status(code=code.value[0], message=message, details=[detail])
        )
        context.set_trailing_metadata(tuple(rich.trailing_metadata))
        await context.abort(rich.code, rich.details)


def _version_refused(headers: Headers) -> VersionNotSupportedError | None:
    """A2A 1.0 section 3.2.6: a request in a version the gateway does not speak (another
    major; none given is 1.0 here, as a gRPC client of A2A 0.3 had no such binding) is refused."""
    version = headers.get(VERSION_HEADER.lower(), "").strip()
    if not version or version.split(".")[0] == PROTOCOL_VERSION_1_0.split(".")[0]:
        return None
    return VersionNotSupportedError(
        message=f"A2A version {version[:20]!r} is not supported: this gateway speaks "
        f"{PROTOCOL_VERSION_1_0}"
    )


class _Router(a2a_pb2_grpc.A2AServiceServicer):
    """Each call to its agent's ``GrpcHandler``, by the request's ``tenant`` (the agent's
    name); the credential checked first."""

    def __init__(self, handlers: Mapping[str, _SpecHandler], context: TenantContext) -> None:
        self.handlers = dict(handlers)
        self.context = context

    async def _pick(self, request: Any, context: grpc.aio.ServicerContext) -> _SpecHandler:
        # _Credentials refused a call without a credential already; checked again here, where
        # the servicer is served without that interceptor
        if self.context.tenants.find(self.context.headers(context)) is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, _authenticate(self.context))
        refused = _version_refused(self.context.headers(context))
        if refused is not None:
            await next(iter(self.handlers.values())).abort_context(refused, context)
        agent = getattr(request, "tenant", "")
        if not agent and len(self.handlers) == 1:
            return next(iter(self.handlers.values()))
        handler = self.handlers.get(agent)
        if handler is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND,
                f"no agent {agent[:80]!r} here: name one in tenant ({', '.join(self.handlers)})",
            )
        assert handler is not None  # abort raised
        return handler


def _authenticate(context: TenantContext) -> str:
    """What an unauthenticated caller is told: the credential the card asks for."""
    scheme = "authorization: Bearer <token>"
    if context.tenants.scheme != "bearer":
        scheme = "x-api-key: <key>"
    return f"authenticate: {scheme} (see the agent card's securitySchemes)"


class _Credentials(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Each call's credential, checked on its metadata before grpc reads its message.
    grpc.aio reads and parses a unary call's message before any handler runs, so a call
    without a credential is given a handler whose request is a stream it never reads: it is
    answered UNAUTHENTICATED at once, and nothing the caller sent is parsed or kept."""

    def __init__(self, context: TenantContext) -> None:
        self.context = context

        async def refuse(requests: Any, call: grpc.aio.ServicerContext) -> None:
            await call.abort(grpc.StatusCode.UNAUTHENTICATED, _authenticate(context))

        self._refusal = grpc.stream_unary_rpc_method_handler(refuse)

    async def intercept_service(self, continuation: Any, details: Any) -> Any:
        headers = self.context.headers(_CallMetadata(details.invocation_metadata))
        if self.context.tenants.find(headers) is None:
            return self._refusal
        return await continuation(details)


def _unary(name: str) -> Any:
    async def call(self: _Router, request: Any, context: grpc.aio.ServicerContext) -> Any:
        handler = await self._pick(request, context)
        return await getattr(handler, name)(request, context)

    call.__name__ = name
    return call


def _streaming(name: str) -> Any:
    async def call(
        self: _Router, request: Any, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[Any]:
        handler = await self._pick(request, context)
        async for each in getattr(handler, name)(request, context):
            yield each

    call.__name__ = name
    return call


for _name in UNARY:
    setattr(_Router, _name, _unary(_name))
for _name in STREAMING:
    setattr(_Router, _name, _streaming(_name))


def grpc_servicer(
    handlers: Mapping[str, GatewayHandler],
    tenants: Tenants,
    context: TenantContext | None = None,
) -> a2a_pb2_grpc.A2AServiceServicer:
    """The A2A gRPC service over the gateway's handlers (agent name -> ``GatewayHandler``).
    ``context``: a ``TenantContext`` (by default one over ``tenants``)."""
    builder = context or TenantContext(tenants)
    return _Router({n: _SpecHandler(h, builder) for n, h in handlers.items()}, builder)


def server_options() -> list[tuple[str, int]]:
    """The gRPC server's bounds: a message as large as the HTTP bindings take, ``MAX_STREAMS``
    calls at once per connection, small headers, a small first window, idle and half-open
    connections closed. (grpcio has no memory quota a Python server can set.)"""
    return [
        ("grpc.max_receive_message_length", MAX_BODY_BYTES),
        ("grpc.max_send_message_length", MAX_BODY_BYTES),
        ("grpc.max_concurrent_streams", MAX_STREAMS),
        ("grpc.max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.absolute_max_metadata_size", MAX_METADATA_BYTES),
        ("grpc.http2.lookahead_bytes", LOOKAHEAD_BYTES),
        ("grpc.http2.bdp_probe", 0),
        ("grpc.max_connection_idle_ms", IDLE_MS),
        ("grpc.max_connection_age_ms", AGE_MS),
        ("grpc.server_handshake_timeout_ms", HANDSHAKE_MS),
    ]


async def serve_grpc(
    handlers: Mapping[str, GatewayHandler],
    tenants: Tenants,
    address: str,
    *,
    context: TenantContext | None = None,
) -> grpc.aio.Server:
    """A started gRPC server at ``address`` (``host:port``; port 0 picks one: ``server.port``)
    serving ``handlers``. A request larger than the HTTP bindings take is refused the same; a
    call without a tenant's credential is refused before its message is read."""
    builder = context or TenantContext(tenants)
    server = grpc.aio.server(interceptors=[_Credentials(builder)], options=server_options())
    servicer = grpc_servicer(handlers, tenants, builder)
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(address)
    if port == 0:
        raise ValueError(f"gRPC: cannot listen at {address}")
    await server.start()
    server.port = port
    return server
