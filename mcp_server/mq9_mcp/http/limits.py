"""What a POST to mq9-mcp's endpoint may be: one body limit (``MAX_BODY_BYTES``, the SDK given
the same), a body that arrives in time, and a JSON-RPC message the SDK can read; anything else
is answered here with the JSON-RPC error it is owed (``screening.py``: the same answers as
over stdio)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anyio
from mcp.types import INVALID_REQUEST, PARSE_ERROR
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..screening import leading_id, screened
from .auth import CLOSE

# The largest request body: a tool call carries at most a 1 MiB payload (the broker's SEND
# limit), which JSON escaping may make up to six times longer.
MAX_BODY_BYTES = 8 * 1024 * 1024
# How long a request's body may take to arrive.
BODY_SECONDS = 30.0


class UnreadableBodies:
    """A POST whose body is not UTF-8, or is nested past what Python's json reads, is answered
    400 with a JSON-RPC parse error (with the request's id when it can be read), as the SDK
    answers other JSON it cannot parse (the SDK itself would answer it 500). Other POSTs
    go on with ``scope["mq9.calls_tool"]`` saying whether they call a tool (SessionLimits) and
    what they ask named (``name_request``)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.max_body_bytes)
        except ClientDisconnect:
            return
        except BodyRefused as refused:
            reply = body_refusal(str(refused))
            response = JSONResponse(reply, refused.status, headers={"Connection": CLOSE})
            await response(scope, receive, send)
            return
        value, problem = _parse(body)
        if problem is not None:
            found = leading_id(body.decode("utf-8", "replace"))
            error = {"code": PARSE_ERROR, "message": f"Parse error: {problem}"}
            reply = {"jsonrpc": "2.0", "id": found, "error": error}
            await JSONResponse(reply, status_code=400)(scope, receive, send)
            return
        unreadable = unreadable_request(body, value)
        if unreadable is not None:
            await JSONResponse(unreadable, status_code=400)(scope, receive, send)
            return
        scope["mq9.calls_tool"] = isinstance(value, dict) and value.get("method") == "tools/call"
        name_request(scope, value)
        replay: Iterator[Message] = iter([{"type": "http.request", "body": body}])

        async def again() -> Message:
            return next(replay, None) or await receive()

        await self.app(scope, again, send)


def name_request(scope: Scope, value: Any) -> None:
    """What a request asks, for the scope check (``scope_check.py``): its method, its params
    and its id (a refusal answers the request's id). A response, a notification (it asks for
    nothing back) or a body the SDK refuses is not named, and not checked."""
    method = value.get("method") if isinstance(value, dict) else None
    if not isinstance(method, str) or "id" not in value:
        return
    params = value.get("params")
    scope["mq9.method"] = method
    scope["mq9.params"] = params if isinstance(params, dict) else {}
    scope["mq9.request_id"] = value.get("id")


def unreadable_request(body: bytes, value: Any) -> dict[str, Any] | None:
    """The JSON-RPC error owed for a request that is JSON but that the SDK cannot read, as the
    stdio server answers it (``screening.py``); else None."""
    if not isinstance(value, dict):
        return None  # a batch, or no object: the SDK answers it
    answers = screened(body.decode("utf-8"))
    return answers[0].model_dump(by_alias=True, mode="json") if answers else None


def body_refusal(text: str) -> dict[str, Any]:
    """The JSON-RPC answer to a body refused before it was read whole."""
    return {"jsonrpc": "2.0", "id": None, "error": {"code": INVALID_REQUEST, "message": text}}


def too_long(limit: int) -> dict[str, Any]:
    return body_refusal(f"the request body is over {limit} bytes")


class BodyRefused(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status


async def read_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """A request's body, refused while it is read (never buffered whole first) when it is over
    ``limit`` bytes (413) or takes over ``BODY_SECONDS`` to arrive (408): one client cannot
    fill the server's memory or hold a request open by sending slowly."""
    declared = Headers(scope=scope).get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyRefused(413, f"the request body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    with anyio.move_on_after(BODY_SECONDS) as deadline:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise BodyRefused(413, f"the request body is over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)
    assert deadline.cancelled_caught
    raise BodyRefused(408, f"the request body did not arrive within {BODY_SECONDS:g} s")


def _parse(body: bytes) -> tuple[Any, str | None]:
    """The JSON in ``body``, and why the SDK could not read it (None if it can, or if it answers
    the error itself)."""
    try:
        return json.loads(body.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "the body is not UTF-8"
    except RecursionError:
        return None, "the body is nested too deeply"
    except ValueError:  # the SDK's own parse error answers it
        return None, None
