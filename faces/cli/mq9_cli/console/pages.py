"""The pages a person reads: the agents, the mailboxes, a mailbox and its messages, its dead
letters and depth picture, the calls followed and their timelines, and the log of writes.
What each shows is ``overview``'s and the operation catalog's; this module picks and renders."""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_platform.operations.errors import OperationError
from mq9_wire.protocol import QUERY_CAP, is_valid_address

from .. import overview
from . import charts
from .guard import PlainRefusal
from .params import address_of, console_of, reply_of, search_of
from .reads import PAGE_COUNT_SECONDS

# The most of a payload a message's page shows: a payload of many MiB laid out as text stalls
# the browser; the whole one is a download (its size said beside the preview)
MESSAGE_PREVIEW_BYTES = 64 * 1024


async def agents(request: Request) -> Response:
    console = console_of(request)
    query = request.query_params.get("q", "")
    found = await overview.operate(console.broker, "agent_discover", {"query": query})
    named = [a.get("mailbox") for a in found["agents"]]
    valid = [m for m in named if isinstance(m, str) and is_valid_address(m)]
    opens = await console.may_open(valid)
    return console.page(request, "agents.html", agents=found["agents"], query=query, opens=opens)


async def mailboxes(request: Request) -> Response:
    console = console_of(request)
    opened = request.query_params.get("address")
    if opened:  # the page's "open a mailbox" form
        return RedirectResponse(f"/mailboxes/{quote(opened.strip(), safe='')}", 303)
    # a mailbox this console's credential may not read is listed apart as another agent's,
    # with the broker's reason, never as a link: one such mailbox never fails the page
    rows, others = await console.survey()
    return console.page(request, "mailboxes.html", rows=rows, others=others)


async def mailbox(request: Request) -> Response:
    console = console_of(request)
    address = address_of(request)
    search = search_of(request)
    console.watch(address)
    # every page of it shows the one count (census.py), counted on a little at each view
    figures = await console.figures(address, PAGE_COUNT_SECONDS, overview.COUNT_PAGES)
    if figures.refused is not None:
        raise OperationError(figures.refused)
    found = overview.Page([], None)
    if figures.exists:
        if search["key"] or search["tags"] or search["text"] or search["from_id"]:
            found = await console.page_of(address, **search)
        else:  # the first page is the QUERY the figures were read from: one read, not two
            held = list(figures.messages)
            found = overview.Page(held, held[-1].msg_id + 1 if figures.capped and held else None)
    next_link = None
    if found.next_from is not None:
        query = {k: v for k, v in search.items() if v and k != "from_id"}
        query["tags"] = ",".join(search["tags"]) if search["tags"] else ""
        query["from_id"] = found.next_from
        next_link = "?" + "&".join(f"{k}={quote(str(v), safe='')}" for k, v in query.items() if v)
    # New messages arrive live on the last page of all messages only (they belong after it)
    filtering = bool(search["key"] or search["tags"] or search["text"])
    live = figures.exists and not filtering and next_link is None
    newest = figures.newest_id
    if live and figures.lower_bound:  # the count stopped short: where the mailbox ends now
        newest = await overview.newest_id(console.broker, address)
    return console.page(
        request,
        "mailbox.html",
        address=address,
        figures=figures,
        messages=[overview.message_view(m) for m in found.messages],
        after=-1 if newest is None else newest,
        dead_letters=dead_letter_address(address),
        cap=QUERY_CAP,
        search=search | {"tags": ", ".join(search["tags"])},
        searching=filtering,
        live=live,
        next_link=next_link,
        scanned_to=found.scanned_to,
        hidden=found.hidden,
        history=console.audit.entries(target=address)[:20],
    )


async def message(request: Request) -> Response:
    console = console_of(request)
    address, msg_id = address_of(request), request.path_params["msg_id"]
    held = await overview.message_at(console.broker, address, msg_id)
    if held is None:
        return console.page(request, "error.html", 404, problem=f"no message {msg_id} in {address}")
    shown = overview.message_view(held)
    size = len(held.payload)
    whole = size <= MESSAGE_PREVIEW_BYTES
    if not whole:  # a bounded preview: a browser lays out megabytes of text for a minute
        shown["payload"] = bytes(held.payload[:MESSAGE_PREVIEW_BYTES]).decode("utf-8", "ignore")
    return console.page(
        request,
        "message.html",
        address=address,
        message=shown,
        size=size,
        whole=whole,
        more=size - len(shown["payload"].encode()),
        pretty=overview.pretty(shown["payload"]) if whole else None,
        is_dead_letter=address.endswith(".dlq"),
    )


async def payload(request: Request) -> Response:
    """A message's whole payload, as it was sent, to download (never rendered as a page)."""
    console = console_of(request)
    address, msg_id = address_of(request), request.path_params["msg_id"]
    held = await overview.message_at(console.broker, address, msg_id)
    if held is None:
        return PlainRefusal(f"no message {msg_id} in {address}", 404)
    name = f"{address}-{msg_id}.txt"
    headers = {"content-disposition": f'attachment; filename="{name}"'}
    return Response(bytes(held.payload), media_type="application/octet-stream", headers=headers)


async def depth(request: Request) -> Response:
    console = console_of(request)
    address = address_of(request)
    samples = console.history.samples(address)
    if request.query_params.get("small"):  # a table's thumbnail: the line alone
        return Response(charts.sparkline(address, samples), media_type="image/svg+xml")
    history = console.history
    svg = charts.depth_chart(
        address, samples, lower=history.lower(address), lower_now=history.lower_now(address)
    )
    return Response(svg, media_type="image/svg+xml")


async def dead_letters(request: Request) -> Response:
    console = console_of(request)
    address = address_of(request)
    dlq, letters = await overview.dead_letters(console.broker, address)
    views = [letter.view() for letter in letters or ()]
    return console.page(
        request,
        "dead_letters.html",
        address=address,
        dlq=dlq,
        letters=views,
        exists=letters is not None,
        history=console.audit.entries(action="replay", target=address)[:20],
    )


async def calls(request: Request) -> Response:
    console = console_of(request)
    answered = console.audit.entries(action="answer")
    return console.page(request, "calls.html", callers=await console.calls(), answered=answered)


async def call(request: Request) -> Response:
    console = console_of(request)
    reply, task_id = reply_of(request), request.path_params["task_id"]
    shown = await console.check_call(reply, task_id)
    steps = [e for e in console.audit.entries(target=reply) if e.detail.get("task_id") == task_id]
    return console.page(request, "call.html", reply=reply, call=shown, steps=steps)


async def timeline(request: Request) -> Response:
    console = console_of(request)
    reply, task_id = reply_of(request), request.path_params["task_id"]
    events = await overview.call_timeline(console.broker, reply, task_id)
    return Response(charts.timeline_chart(task_id, events), media_type="image/svg+xml")


async def audit_log(request: Request) -> Response:
    console = console_of(request)
    return console.page(request, "log.html", entries=console.audit.entries())
