"""The read-only JSON API, for programs holding the bearer token: the agents, a mailbox's
figures and a page of its messages, its dead letters, the calls followed, the log of writes."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from mq9_platform.operations.errors import OperationError

from .. import overview
from .params import address_of, console_of, search_of
from .reads import PAGE_COUNT_SECONDS


async def agents(request: Request) -> Response:
    console = console_of(request)
    query = request.query_params.get("q", "")
    return JSONResponse(await overview.operate(console.broker, "agent_discover", {"query": query}))


async def mailbox(request: Request) -> Response:
    console = console_of(request)
    address = address_of(request)
    search = search_of(request)
    figures = await console.figures(address, PAGE_COUNT_SECONDS, overview.COUNT_PAGES)
    if figures.refused is not None:
        raise OperationError(figures.refused)
    if any(search.values()) and figures.exists:
        found = await console.page_of(address, **search)
    else:
        held = list(figures.messages)
        found = overview.Page(held, held[-1].msg_id + 1 if figures.capped and held else None)
    data = figures.view() | {
        "messages": [overview.message_view(m) for m in found.messages],
        "next_from_id": found.next_from,
        "page_may_miss": found.hidden,
    }
    return JSONResponse(data)


async def dead_letters(request: Request) -> Response:
    console = console_of(request)
    dlq, letters = await overview.dead_letters(console.broker, address_of(request))
    views = [letter.view() for letter in letters or ()]
    data = {"dead_letter_mailbox": dlq, "exists": letters is not None, "letters": views}
    return JSONResponse(data)


async def calls(request: Request) -> Response:
    console = console_of(request)
    return JSONResponse({"callers": await console.calls(), "unanswered": overview.UNANSWERED})


async def audit_log(request: Request) -> Response:
    entries = [
        {"time": e.time, "who": e.who, "action": e.action, "target": e.target, **e.detail}
        for e in console_of(request).audit.entries()
    ]
    return JSONResponse({"entries": entries})
