"""What a request names, checked once: the console it reaches, the mailbox in its path, a
mailbox page's search, the reply mailbox whose calls it shows. A name that is not one is a
one-line refusal (``OperationError``), shown as the error page."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from mq9_platform.operations.errors import OperationError
from mq9_wire.protocol import is_valid_address

from .reads import Console


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def address_of(request: Request) -> str:
    address = request.path_params["address"]
    if not is_valid_address(address):
        raise OperationError(f"{address[:80]!r} is not a mailbox address")
    return str(address)


def search_of(request: Request) -> dict[str, Any]:
    """A mailbox page's search (key, tags, text) and where its page starts."""
    params = request.query_params
    tags = [t.strip() for t in params.get("tags", "").split(",") if t.strip()]
    try:
        from_id = max(0, int(params.get("from_id", "0") or 0))
    except ValueError:
        raise OperationError(f"from_id {params['from_id'][:20]!r} is not a msg_id") from None
    key, text = params.get("key", "").strip(), params.get("text", "").strip()
    return {"key": key, "tags": tags, "text": text, "from_id": from_id}


def reply_of(request: Request) -> str:
    reply = str(request.path_params["reply"])
    if reply not in console_of(request).settings.reply_mailboxes:
        raise OperationError(f"this console shows no calls of {reply[:80]!r} (see --calls)")
    return reply
