"""The console's web application: pages rendered here (Jinja2, every value escaped), two event
streams for what changes while a page is open, SVG pictures, and a read-only JSON API. What it
shows and does is ``overview``'s and the operation catalog's; this module routes and renders.

Anything another agent wrote (payloads, cards, reasons, questions) is shown as text: the
templates escape it, the page's script only ever sets ``textContent``, and the Content Security
Policy runs no script but the console's own file."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from langchain_mq9.a2a.caller import CallError
from langchain_mq9.client.client import Mq9Client
from langchain_mq9.groups.dead_letters import dead_letter_address
from langchain_mq9.operations.errors import OperationError
from langchain_mq9.protocol import QUERY_CAP, is_valid_address
from langchain_mq9.protocol.errors import MailboxNotFound, Mq9Error

from .. import overview
from ..connect import NOT_FOUND, UNREACHABLE, failure
from ..render import when
from . import charts
from .auth import COOKIE, Gate, Session, cookie_header, csrf_ok, same_origin

HERE = Path(__file__).parent
log = logging.getLogger("mq9_cli.console")
PREVIEW_CHARS = 2000  # of a payload in a list; the message's own page shows all of it
MAX_FORM_BYTES = 64 * 1024
MAX_STREAMS = 32  # event streams open at once
MAX_MAILBOXES = 100  # shown on the mailboxes page
MAX_WATCHED = 20  # mailboxes sampled for their depth pictures between page views
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class Settings:
    token: str
    other_secrets: list[str] = field(default_factory=list)
    allow_writes: bool = False
    mailboxes: tuple[str, ...] = ()
    reply_mailboxes: tuple[str, ...] = ()
    server: str = ""
    sample_seconds: float = 5.0
    poll_seconds: float = 0.5


class Console:
    """What every request shares: the settings, the broker client, the depth history."""

    def __init__(
        self,
        connect: Callable[[], Mq9Client],
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connect = connect
        self.settings = settings
        self.gate = Gate(settings.token, settings.other_secrets, clock)
        self.history = charts.DepthHistory(clock)
        self.client: Mq9Client | None = None
        self.streams = 0
        self.watched: dict[str, None] = dict.fromkeys(settings.mailboxes[:MAX_WATCHED])
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True)
        self.env.filters["when"] = when
        self.env.filters["path"] = lambda text: quote(str(text), safe="")
        self.env.filters["preview"] = _preview

    @property
    def broker(self) -> Mq9Client:
        assert self.client is not None, "the console's client opens with the application"
        return self.client

    def page(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        session: Session | None = request.scope.get("mq9_session")
        notice = session.notice if session is not None else None
        if session is not None:
            session.notice = None
        html = self.env.get_template(template).render(
            settings=self.settings,
            csrf=session.csrf if session else "",
            notice=notice,
            unanswered=overview.UNANSWERED,
            **values,
        )
        return HTMLResponse(html, status)

    async def figures(self, address: str) -> overview.MailboxFigures:
        found = await overview.figures(self.broker, address)
        if found.exists:
            self.history.add(address, found.total)
        return found

    async def mailboxes(self) -> list[str]:
        """The mailboxes this console knows: those named, the agents', and the dead-letter
        mailbox of each (mq9 lists none: ``overview.UNANSWERED``)."""
        found = await overview.operate(self.broker, "agent_discover", {"query": ""})
        named = [*self.settings.mailboxes, *(a.get("mailbox") for a in found["agents"])]
        known = [a for a in dict.fromkeys(named) if isinstance(a, str) and is_valid_address(a)]
        known += [dead_letter_address(a) for a in known if not a.endswith(".dlq")]
        return list(dict.fromkeys(known))[: MAX_MAILBOXES * 2]

    def watch(self, address: str) -> None:
        """Sample ``address`` from now on (the ``MAX_WATCHED`` last opened are)."""
        self.watched.pop(address, None)
        self.watched[address] = None
        while len(self.watched) > MAX_WATCHED:
            del self.watched[next(iter(self.watched))]

    async def sample(self) -> None:
        """Look at the mailboxes watched now and then: the depth pictures' points (a QUERY
        each, up to an answer's worth of payloads: so only those, not every one known)."""
        while True:
            await asyncio.sleep(self.settings.sample_seconds)
            for address in list(self.watched):
                try:
                    await self.figures(address)
                except Exception as exc:  # a point missed; the pages say what is wrong
                    log.debug("no depth sample of %s: %s", address, failure(exc))


def _preview(text: str) -> dict[str, Any]:
    return {"text": text[:PREVIEW_CHARS], "more": max(0, len(text) - PREVIEW_CHARS)}


# -- the guard ---------------------------------------------------------------------------------


class Guard:
    """Every page, picture, stream and API call needs a session or the bearer token; only the
    login page and the console's own static files do not. Every answer carries the security
    headers; a POST from another origin is refused."""

    def __init__(self, app: ASGIApp, console: Console) -> None:
        self.app = app
        self.console = console

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                headers += [
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"same-origin"),  # no-referrer: Chrome sends Origin: null
                    (b"x-frame-options", b"DENY"),
                    (b"cache-control", b"no-store"),
                ]
            await send(message)

        refusal = self._refusal(request)
        if refusal is not None:
            await refusal(scope, receive, secured)
            return
        await self.app(scope, receive, secured)

    def _refusal(self, request: Request) -> Response | None:
        path = request.url.path
        if request.method == "POST":
            origin = request.headers.get("origin")
            if not same_origin(origin, request.headers.get("host"), request.url.scheme):
                return PlainRefusal("a form from another site: refused", 403)
            size = request.headers.get("content-length")
            if size is None or not size.isdigit() or int(size) > MAX_FORM_BYTES:
                return PlainRefusal("a form must say its length, at most 64 KiB", 413)
        if path.startswith("/static/") or path == "/login":
            return None
        gate = self.console.gate
        session = gate.session(request.cookies.get(COOKIE))
        if session is not None:
            request.scope["mq9_session"] = session
            return None
        if gate.bearer(request.headers.get("authorization")):
            return None
        if path.startswith(("/api/", "/events/")) or path.endswith(".svg"):
            return JSONResponse({"error": "log in first: a session or the bearer token"}, 401)
        return self.console.page(request, "login.html", 401, failed=False)


class PlainRefusal(Response):
    def __init__(self, text: str, status: int) -> None:
        super().__init__(text + "\n", status, media_type="text/plain")


# -- pages -------------------------------------------------------------------------------------


def create_app(
    connect: Callable[[], Mq9Client],
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """The console for the client ``connect`` makes (opened with the application)."""
    console = Console(connect, settings, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        console.client = await connect().connect()
        sampler = asyncio.create_task(console.sample())
        try:
            yield
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await console.broker.close()

    routes = [
        Route("/", lambda r: RedirectResponse("/agents", 303)),
        Route("/login", _login, methods=["GET", "POST"]),
        Route("/logout", _logout, methods=["POST"]),
        Route("/agents", _agents),
        Route("/mailboxes", _mailboxes),
        Route("/mailboxes/{address}", _mailbox),
        Route("/mailboxes/{address}/messages/{msg_id:int}", _message),
        Route("/mailboxes/{address}/depth.svg", _depth),
        Route("/mailboxes/{address}/dead-letters", _dead_letters),
        Route("/mailboxes/{address}/dead-letters/replay", _replay, methods=["POST"]),
        Route("/calls", _calls),
        Route("/calls/{reply}/{task_id}", _call),
        Route("/calls/{reply}/{task_id}/timeline.svg", _timeline),
        Route("/calls/{reply}/{task_id}/answer", _answer, methods=["POST"]),
        Route("/calls/{reply}/{task_id}/cancel", _cancel, methods=["POST"]),
        Route("/events/mailbox/{address}", _mailbox_events),
        Route("/events/call/{reply}/{task_id}", _call_events),
        Route("/api/agents", _api_agents),
        Route("/api/mailboxes/{address}", _api_mailbox),
        Route("/api/mailboxes/{address}/dead-letters", _api_dead_letters),
        Route("/api/calls", _api_calls),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    expected = (OperationError, Mq9Error, CallError, ValueError)
    handlers = dict.fromkeys(expected, _failed)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.console = console
    app.add_middleware(Guard, console=console)
    return app


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def _failed(request: Request, exc: Exception) -> Response:
    """A broker's refusal or absence as a page (or JSON), in its one line; never a traceback."""
    problem = failure(exc)
    status = {NOT_FOUND: 404, UNREACHABLE: 502}.get(problem.code, 400)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(problem)}, status)
    return _console(request).page(request, "error.html", status, problem=str(problem))


async def _login(request: Request) -> Response:
    console = _console(request)
    if request.method == "GET":
        return console.page(request, "login.html", failed=False)
    form = await request.form()
    given = form.get("token")
    if not isinstance(given, str) or not console.gate.opens(given):
        await asyncio.sleep(0.5)  # a guesser's pace
        return console.page(request, "login.html", 401, failed=True)
    sid, _ = console.gate.open_session()
    response = RedirectResponse("/agents", 303)
    response.headers["set-cookie"] = cookie_header(sid, secure=request.url.scheme == "https")
    return response


async def _written(request: Request) -> tuple[Console, dict[str, str]]:
    """A write form's fields, once its CSRF token and the console's writes are checked."""
    console = _console(request)
    form = await request.form()
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    session: Session | None = request.scope.get("mq9_session")
    if session is not None and not csrf_ok(session, fields.get("csrf", "")):
        raise Refused("this form is stale or not the console's (CSRF): reload the page")
    if not console.settings.allow_writes and request.url.path != "/logout":
        raise Refused("this console is read-only (start it with --allow-writes)")
    return console, fields


class Refused(Exception):
    pass


async def _logout(request: Request) -> Response:
    try:
        await _written(request)
    except Refused as exc:
        return PlainRefusal(str(exc), 403)
    _console(request).gate.close(request.cookies.get(COOKIE))
    response = RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


def _notice(request: Request, text: str) -> None:
    session: Session | None = request.scope.get("mq9_session")
    if session is not None:
        session.notice = text


async def _agents(request: Request) -> Response:
    console = _console(request)
    query = request.query_params.get("q", "")
    found = await overview.operate(console.broker, "agent_discover", {"query": query})
    return console.page(request, "agents.html", agents=found["agents"], query=query)


def _address(request: Request) -> str:
    address = request.path_params["address"]
    if not is_valid_address(address):
        raise OperationError(f"{address[:80]!r} is not a mailbox address")
    return str(address)


async def _mailboxes(request: Request) -> Response:
    console = _console(request)
    opened = request.query_params.get("address")
    if opened:  # the page's "open a mailbox" form
        return RedirectResponse(f"/mailboxes/{quote(opened.strip(), safe='')}", 303)
    known = await console.mailboxes()
    shown = [await console.figures(a) for a in known]
    rows = [f for f in shown if f.exists][:MAX_MAILBOXES]
    return console.page(request, "mailboxes.html", rows=rows)


async def _mailbox(request: Request) -> Response:
    console = _console(request)
    address = _address(request)
    console.watch(address)
    figures = await console.figures(address)
    found = await overview.messages(console.broker, address) if figures.exists else []
    newest = await overview.newest_id(console.broker, address) if figures.exists else None
    return console.page(
        request,
        "mailbox.html",
        address=address,
        figures=figures,
        messages=[overview.message_view(m) for m in found],
        after=-1 if newest is None else newest,
        dead_letters=dead_letter_address(address),
        cap=QUERY_CAP,
    )


async def _message(request: Request) -> Response:
    console = _console(request)
    address, msg_id = _address(request), request.path_params["msg_id"]
    found = await console.broker.fetch(
        address, deliver="from_id", from_id=msg_id, num_msgs=1, max_wait_ms=0
    )
    held = [m for m in found if m.msg_id == msg_id]
    if not held:
        return console.page(request, "error.html", 404, problem=f"no message {msg_id} in {address}")
    return console.page(
        request, "message.html", address=address, message=overview.message_view(held[0])
    )


async def _depth(request: Request) -> Response:
    console = _console(request)
    address = _address(request)
    samples = console.history.samples(address)
    if request.query_params.get("small"):  # a table's thumbnail: the line alone
        return Response(charts.sparkline(address, samples), media_type="image/svg+xml")
    svg = charts.depth_chart(address, samples, capped=QUERY_CAP)
    return Response(svg, media_type="image/svg+xml")


async def _dead_letters(request: Request) -> Response:
    console = _console(request)
    address = _address(request)
    dlq, letters = await overview.dead_letters(console.broker, address)
    views = [letter.view() for letter in letters or ()]
    return console.page(
        request,
        "dead_letters.html",
        address=address,
        dlq=dlq,
        letters=views,
        exists=letters is not None,
    )


async def _replay(request: Request) -> Response:
    try:
        console, _ = await _written(request)
    except Refused as exc:
        return PlainRefusal(str(exc), 403)
    address = _address(request)
    done = await overview.replay_dead_letters(console.broker, address)
    letters = "dead letter" if len(done.sent) == 1 else "dead letters"
    skipped = f"; skipped {len(done.skipped)} (no dead letter of {address})" if done.skipped else ""
    _notice(request, f"sent {len(done.sent)} {letters} back to {address}{skipped}")
    return RedirectResponse(f"/mailboxes/{quote(address, safe='')}/dead-letters", 303)


def _reply(request: Request) -> str:
    reply = str(request.path_params["reply"])
    if reply not in _console(request).settings.reply_mailboxes:
        raise OperationError(f"this console shows no calls of {reply[:80]!r} (see --calls)")
    return reply


async def _calls_of(console: Console) -> list[dict[str, Any]]:
    callers = []
    for reply in console.settings.reply_mailboxes:
        policy = overview.person_policy(reply_mailbox=reply)
        found = await overview.operate(console.broker, "list_calls", {}, policy)
        callers.append({"reply": reply, "calls": found["calls"]})
    return callers


async def _calls(request: Request) -> Response:
    console = _console(request)
    return console.page(request, "calls.html", callers=await _calls_of(console))


async def _check(console: Console, reply: str, task_id: str) -> dict[str, Any]:
    policy = overview.person_policy(reply_mailbox=reply)
    args = {"task_id": task_id}
    return await overview.operate(console.broker, "check_call", args, policy)


async def _call(request: Request) -> Response:
    console = _console(request)
    reply, task_id = _reply(request), request.path_params["task_id"]
    shown = await _check(console, reply, task_id)
    return console.page(request, "call.html", reply=reply, call=shown)


async def _timeline(request: Request) -> Response:
    console = _console(request)
    reply, task_id = _reply(request), request.path_params["task_id"]
    events = await overview.call_timeline(console.broker, reply, task_id)
    return Response(charts.timeline_chart(task_id, events), media_type="image/svg+xml")


async def _answer(request: Request) -> Response:
    return await _steer(request, "answer_call")


async def _cancel(request: Request) -> Response:
    return await _steer(request, "cancel_call")


async def _steer(request: Request, operation: str) -> Response:
    try:
        console, fields = await _written(request)
    except Refused as exc:
        return PlainRefusal(str(exc), 403)
    reply, task_id = _reply(request), request.path_params["task_id"]
    args = {"task_id": task_id}
    if operation == "answer_call":
        args["answer"] = fields.get("answer", "")
    policy = overview.person_policy(reply_mailbox=reply)
    shown = await overview.operate(console.broker, operation, args, policy)
    done = "your answer went to the agent" if operation == "answer_call" else "cancel asked"
    _notice(request, f"{done} (the call was {shown['state']}; this page follows it)")
    return RedirectResponse(f"/calls/{quote(reply, safe='')}/{quote(task_id, safe='')}", 303)


# -- live --------------------------------------------------------------------------------------


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


async def _mailbox_events(request: Request) -> Response:
    console = _console(request)
    address = _address(request)
    try:
        after = int(request.query_params.get("after", "-1"))
    except ValueError:
        after = -1

    async def events() -> AsyncIterator[str]:
        with contextlib.suppress(MailboxNotFound):
            async for message in overview.follow(console.broker, address, after=after):
                shown = overview.message_view(message)
                shown["preview"] = _preview(shown.pop("payload"))
                shown["time"] = when(message.create_time)
                figures = await console.figures(address)
                shown["counts"] = figures.counts
                yield _event("message", shown)

    return _stream(console, events())


async def _call_events(request: Request) -> Response:
    console = _console(request)
    reply, task_id = _reply(request), request.path_params["task_id"]

    async def events() -> AsyncIterator[str]:
        seen = None
        while True:
            shown = await _check(console, reply, task_id)
            if shown != seen:
                seen = shown
                yield _event("call", shown)
            if shown["state"] in ("completed", "failed", "canceled", "rejected"):
                return
            await asyncio.sleep(console.settings.poll_seconds)

    return _stream(console, events())


# -- the JSON API (read-only) ------------------------------------------------------------------


async def _api_agents(request: Request) -> Response:
    console = _console(request)
    query = request.query_params.get("q", "")
    return JSONResponse(await overview.operate(console.broker, "agent_discover", {"query": query}))


async def _api_mailbox(request: Request) -> Response:
    console = _console(request)
    address = _address(request)
    figures = await console.figures(address)
    found = await overview.messages(console.broker, address) if figures.exists else []
    data = figures.view() | {"messages": [overview.message_view(m) for m in found]}
    return JSONResponse(data)


async def _api_dead_letters(request: Request) -> Response:
    console = _console(request)
    dlq, letters = await overview.dead_letters(console.broker, _address(request))
    views = [letter.view() for letter in letters or ()]
    data = {"dead_letter_mailbox": dlq, "exists": letters is not None, "letters": views}
    return JSONResponse(data)


async def _api_calls(request: Request) -> Response:
    console = _console(request)
    return JSONResponse({"callers": await _calls_of(console), "unanswered": overview.UNANSWERED})


__all__ = ["Console", "Settings", "create_app"]
