"""The gateway's gRPC binding (A2A 1.0's third, #79): a2a-sdk's own gRPC servicer
(``GrpcHandler``) over the very ``GatewayHandler`` each agent's JSON-RPC and HTTP+JSON routes
use, so the tenants, their tokens and reply mailboxes, the limits and store-and-forward are the
same on every binding (docs/a2a.md, "Three bindings").

    server = await serve_grpc(app.handlers, tenants, "0.0.0.0:50051")   # ... await server.stop(5)

One gRPC server serves every agent of the gateway: a request names its agent in ``tenant`` (the
card's gRPC interface says which, and a2a-sdk's client sends it); a request without one goes to
the only agent where the gateway serves one. Every call carries a tenant's credential in its
metadata as the card's ``securitySchemes`` says (``authorization: Bearer <token>``, or
``x-api-key``), else UNAUTHENTICATED before anything is read. Needs grpcio (the a2a-gateway
extra).
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

from .gateway import MAX_BODY_BYTES, GatewayHandler, Tenants

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


def metadata_headers(context: grpc.aio.ServicerContext) -> Headers:
    """The call's metadata as HTTP headers (gRPC sends them lower-cased), for ``Tenants``."""
    pairs = [
        (k, v if isinstance(v, str) else v.decode("latin-1"))
        for k, v in context.invocation_metadata() or ()
        if not k.endswith("-bin")
    ]
    return Headers(raw=[(k.encode("latin-1"), v.encode("latin-1")) for k, v in pairs])


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
        if self.context.tenants.find(self.context.headers(context)) is None:
            scheme = "authorization: Bearer <token>"
            if self.context.tenants.scheme != "bearer":
                scheme = "x-api-key: <key>"
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                f"authenticate: {scheme} (see the agent card's securitySchemes)",
            )
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


async def serve_grpc(
    handlers: Mapping[str, GatewayHandler],
    tenants: Tenants,
    address: str,
    *,
    context: TenantContext | None = None,
) -> grpc.aio.Server:
    """A started gRPC server at ``address`` (``host:port``; port 0 picks one: ``server.port``)
    serving ``handlers``. A request larger than the HTTP bindings take is refused the same."""
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_BODY_BYTES),
            ("grpc.max_send_message_length", MAX_BODY_BYTES),
        ]
    )
    servicer = grpc_servicer(handlers, tenants, context)
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    port = server.add_insecure_port(address)
    if port == 0:
        raise ValueError(f"gRPC: cannot listen at {address}")
    await server.start()
    server.port = port
    return server
