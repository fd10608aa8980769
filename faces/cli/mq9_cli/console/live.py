"""What changes while a page is open, as server-sent events: a mailbox's new messages with
its counts, and a call's state until it ends. At most ``MAX_STREAMS`` are open at once; the
page's script sets what they carry as text, never as HTML."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from mq9_wire.protocol.errors import MailboxNotFound

from .. import overview
from ..connect import failure
from ..render import printable, when
from .guard import PlainRefusal
from .params import address_of, console_of, reply_of
from .reads import Console
from .rendering import preview, shown_text

log = logging.getLogger("mq9_cli.console")
MAX_STREAMS = 32  # event streams open at once


def _stream(console: Console, events: AsyncIterator[str]) -> Response:
    if console.streams >= MAX_STREAMS:
        return PlainRefusal("too many live pages open: close some", 503)

    async def counted() -> AsyncIterator[str]:
        console.streams += 1
        try:
            yield "retry: 2000\n\n"
            async for event in events:
                yield event
        except Exception as exc:  # the broker went away: the page's script connects again
            log.debug("an event stream ended: %s", failure(exc))
        finally:
            console.streams -= 1

    headers = {"x-accel-buffering": "no"}
    return StreamingResponse(counted(), media_type="text/event-stream", headers=headers)


def _event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n"


async def mailbox_events(request: Request) -> Response:
    console = console_of(request)
    address = address_of(request)
    try:
        after = int(request.query_params.get("after", "-1"))
    except ValueError:
        after = -1

    async def events() -> AsyncIterator[str]:
        with contextlib.suppress(MailboxNotFound):
            async for message in overview.follow(console.broker, address, after=after):
                shown = overview.message_view(message)
                # the page's script sets these as text: escaped here as the pages escape them
                shown["preview"] = preview(printable(shown.pop("payload")))
                shown["key"] = printable(shown["key"] or "")
                shown["tags"] = [printable(t) for t in shown["tags"]]
                shown["time"] = when(message.create_time)
                figures = await console.figures(address)
                # only a whole count: the page may show one counted further than a QUERY
                shown["counts"] = None if figures.lower_bound else figures.counts
                shown["scheduled"] = figures.scheduled  # None: not told
                shown["next_due"] = when(figures.next_due) if figures.next_due else None
                yield _event("message", shown)

    return _stream(console, events())


async def call_events(request: Request) -> Response:
    console = console_of(request)
    reply, task_id = reply_of(request), request.path_params["task_id"]

    async def events() -> AsyncIterator[str]:
        seen = None
        while True:
            shown = await console.check_call(reply, task_id)
            if shown != seen:
                seen = shown
                yield _event("call", {k: shown_text(v) for k, v in shown.items()})
            if shown["state"] in ("completed", "failed", "canceled", "rejected"):
                return
            await asyncio.sleep(console.settings.poll_seconds)

    return _stream(console, events())
