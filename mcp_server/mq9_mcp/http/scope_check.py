"""Every request's scope, checked before the SDK sees it (``ScopeCheck``), and what a request's
token may use (``granted``), for the lists cut to it. The rules are ``scopes.py``'s tables:
a token is good for what its scopes name through every method, so a mailbox it may not read
with ``query_messages`` it may not read as a resource, as events or through a task either."""

from __future__ import annotations

import json
from collections.abc import Callable

from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.types import INVALID_REQUEST
from starlette.types import ASGIApp, Receive, Scope, Send

from .scopes import OPEN, holds, may_call, needed_scope, operation_of, prompt_scope, scope_for


class ScopeCheck:
    """A request whose token lacks the scope its method needs (``scopes.needed_scope``) is
    answered 403 with ``WWW-Authenticate: Bearer error="insufficient_scope", scope="..."``
    (which the MCP SDK's client answers by asking its user for that scope: the spec's
    step-up), with the request's JSON-RPC id. Sits behind ``UnreadableBodies``, which names
    the request (``mq9.method``, ``mq9.params``). ``prefix``: the server's --tool-prefix (the
    table is read by the operation); ``task_tool(task_id)``: the tool a task held here runs."""

    def __init__(
        self,
        app: ASGIApp,
        metadata_url: str | None,
        prefix: str = "",
        task_tool: Callable[[str], str | None] = lambda _task: None,
    ) -> None:
        self.app = app
        self.metadata_url = metadata_url
        self.prefix = prefix
        self.task_tool = task_tool

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("mq9.method")
        user = scope.get("user")
        if isinstance(method, str) and isinstance(user, AuthenticatedUser):
            params = scope.get("mq9.params") or {}
            needed, what = needed_scope(method, params, self.prefix, self.task_tool)
            if needed != OPEN and not holds(user.scopes, needed):
                await self._refuse(send, what, needed, scope.get("mq9.request_id"))
                return
        await self.app(scope, receive, send)

    async def _refuse(self, send: Send, what: str, needed: str, request_id: object) -> None:
        why = f"{what} needs the scope {needed}"
        parts = ['error="insufficient_scope"', f'scope="{needed}"', f'error_description="{why}"']
        if self.metadata_url:
            parts.append(f'resource_metadata="{self.metadata_url}"')
        text = f"Forbidden: {why}, which your access token was not granted"
        error = {"code": INVALID_REQUEST, "message": text,
                 "data": {"error": "insufficient_scope", "scope": needed}}  # fmt: skip
        # the request's own id (JSON-RPC 2.0: a client matches the error to its call by it)
        body = json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode()),
                   (b"www-authenticate", ("Bearer " + ", ".join(parts)).encode())]  # fmt: skip
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def granted(request: object) -> list[str] | None:
    """The scopes of the token checked for ``request`` (None: no token was checked, as over
    stdio or without --auth-token: everything is served)."""
    scope = getattr(request, "scope", None) or {}
    token = getattr(scope.get("user"), "access_token", None)
    return list(token.scopes) if isinstance(token, AccessToken) else None


def may_use_tool(request: object, tool: str, prefix: str) -> bool:
    """Whether ``request``'s token may call ``tool`` (a name under the server's prefix)."""
    scopes = granted(request)
    return scopes is None or may_call(scopes, operation_of(tool, prefix))


def scope_missing(request: object, tool: str, prefix: str) -> str | None:
    """The scope ``request``'s token lacks to call ``tool`` (None: it holds it, or no token
    was checked)."""
    if may_use_tool(request, tool, prefix):
        return None
    return scope_for(operation_of(tool, prefix))


def may_use(request: object, scope: str) -> bool:
    """Whether ``request``'s token holds ``scope`` (a list's items needing it are shown)."""
    scopes = granted(request)
    return scopes is None or holds(scopes, scope)


def may_use_prompt(request: object, name: str) -> bool:
    return may_use(request, prompt_scope(name))
