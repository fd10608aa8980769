"""The console's web application: pages rendered here (Jinja2, every value escaped), two event
streams for what changes while a page is open, SVG pictures, and a read-only JSON API. What it
shows and does is ``overview``'s and the operation catalog's; this module routes and renders.

Anything another agent wrote (payloads, cards, reasons, questions) is shown as text: the
templates escape it, the page's script only ever sets ``textContent``, and the Content Security
Policy runs no script but the console's own file."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup
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

from mq9_platform.a2a.caller import CallError
from mq9_platform.client.client import Mq9Client
from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_platform.operations.errors import OperationError
from mq9_wire.protocol import QUERY_CAP, is_valid_address
from mq9_wire.protocol.errors import MailboxNotFound, Mq9Error

from .. import overview
from ..connect import NOT_FOUND, UNREACHABLE, failure
from ..render import printable, when
from . import charts
from .audit import AuditLog
from .auth import COOKIE, Gate, Session, cookie_header, csrf_ok, same_origin
from .census import Census, Censuses

HERE = Path(__file__).parent
log = logging.getLogger("mq9_cli.console")
PREVIEW_CHARS = 2000  # of a payload in a list; the message's own page shows more
# The most of a payload a message's page shows: a payload of many MiB laid out as text stalls
# the browser; the whole one is a download (its size said beside the preview)
MESSAGE_PREVIEW_BYTES = 64 * 1024
MAX_FORM_BYTES = 64 * 1024
MAX_STREAMS = 32  # event streams open at once
MAX_MAILBOXES = 100  # shown on the mailboxes page
PAGE = 100  # messages a mailbox's page lists (then a link to the next page)
# A mailbox whose look answered more payload bytes than this is sampled at most this often:
# a dev broker paces large answers (8 MiB/s), and pages wait behind the sampler's looks
HEAVY_BYTES = 1 << 20
HEAVY_SAMPLE_SECONDS = 60.0
MAX_WATCHED = 20  # mailboxes sampled for their depth pictures between page views
# How long a look counts a mailbox on past its QUERY (census.py): a mailbox's page, the list
# (all its rows together), the depth sampler's look at each watched mailbox
PAGE_COUNT_SECONDS = 2.0
LIST_COUNT_SECONDS = 2.0
SAMPLE_COUNT_SECONDS = 2.0
# A text search's click: it reads pages for up to this long, and at most this
# many (each a page of the mailbox): 100,000 short messages are looked through in a click or
# two, not a hundred
SEARCH_SECONDS = 3.0
SEARCH_PAGES = 2_000
# How long a look that found whether this console may read a mailbox holds (the agents page's
# links): a credential's rights change rarely, a page view should not cost a QUERY a card
ACCESS_SECONDS = 30.0
MAX_ACCESS = 1000  # mailboxes whose access is remembered (then forgotten all at once)
SAMPLER_STOP_WITHIN = 2.0  # seconds the depth sampler gets to stop at shutdown
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
    # The origins a browser may post from besides this console's own Host: the public
    # address behind a reverse proxy that rewrites Host (nginx's default), e.g.
    # https://mq9.example.com
    public_origins: tuple[str, ...] = ()
    audit_log: str | None = None  # a file the log of writes is appended to (and read from)
    metrics: str | None = None  # [HOST:]PORT of the operator's /metrics, /healthz, /readyz


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
        self.censuses = Censuses(clock)
        self.client: Mq9Client | None = None
        self.streams = 0
        self.watched: dict[str, None] = dict.fromkeys(settings.mailboxes[:MAX_WATCHED])
        self.audit = AuditLog(settings.audit_log, clock)
        self.clock = clock
        # when each mailbox was last looked at, and its answer's payload bytes
        self.weight: dict[str, tuple[float, int]] = {}
        # whether this console may open each mailbox's page, and since when it is known
        self.access: dict[str, tuple[float, bool]] = {}
        # Reads that answer payloads (up to 30 MiB each) take turns: a page's read and the
        # depth sampler's would otherwise wait behind each other at the broker's pace, which
        # refuses a requester more than it may have waiting (HTTP 400 on a large mailbox)
        self.reading = asyncio.Lock()
        # Every value a page shows goes through ``shown``: what another agent wrote (a name,
        # a payload, a reason) shows its control characters and bidirectional overrides as
        # escapes (\u202e), as the command line prints them, before Jinja2 escapes the HTML
        self.env = Environment(
            loader=FileSystemLoader(HERE / "templates"), autoescape=True, finalize=shown
        )
        self.env.filters["when"] = when
        self.env.filters["pretty"] = overview.pretty
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

    async def figures(
        self, address: str, count_for: float = 0.0, pages: int = 0
    ) -> overview.MailboxFigures:
        """``address``'s figures: its QUERY's, and past it the mailbox's count (``census``),
        counted on first for ``pages`` pages and then up to ``count_for`` seconds: the one
        count every page, picture and live row shows."""
        async with self.reading:
            found = await overview.figures(self.broker, address)
        self.weight[address] = (self.clock(), sum(len(m.payload) for m in found.messages))
        self._known_access(address, found.exists and found.refused is None)
        if not (found.exists and found.refused is None):
            self.censuses.forget(address)
            return found
        async with self.reading:
            if found.capped:  # more than its QUERY holds: the count, as far as it went
                count = await self.censuses.count(
                    self.broker, address, count_for, pages=pages, seed=list(found.messages)
                )
                found = counted(found, count)
            else:  # whole in its QUERY: the broker's count, for what no read shows
                told = await self.censuses.told(self.broker, address, seed=list(found.messages))
                found = found if told is None else scheduled(found, told)
        self.history.add(address, found.total, found.lower_bound)
        return found

    async def page_of(self, address: str, **search: Any) -> overview.Page:
        """A page of ``address``'s messages; a text search looks through as many pages as
        ``SEARCH_SECONDS`` reach (at most ``SEARCH_PAGES``), so a click goes far."""
        loop = asyncio.get_running_loop()
        until = loop.time() + SEARCH_SECONDS
        async with self.reading:
            return await overview.search(
                self.broker,
                address,
                limit=PAGE,
                scan=SEARCH_PAGES,
                until=until,
                clock=loop.time,
                **search,
            )

    async def mailboxes(self) -> list[str]:
        """The mailboxes this console knows: those named and the agents' (mq9 lists none:
        ``overview.UNANSWERED``); ``survey`` adds the dead-letter mailbox of each it may read."""
        found = await overview.operate(self.broker, "agent_discover", {"query": ""})
        named = [*self.settings.mailboxes, *(a.get("mailbox") for a in found["agents"])]
        known = [a for a in dict.fromkeys(named) if isinstance(a, str) and is_valid_address(a)]
        return known[: MAX_MAILBOXES * 2]

    async def survey(self) -> tuple[list[MailboxRow], list[overview.MailboxFigures]]:
        """The mailboxes page: each known mailbox this console may read, its dead letters
        beside it (their mailbox a row of its own once it exists), and apart, those another
        agent owns (a tenant sees its own, dead letters included; another tenant's are
        never links, and their dead letters are not looked at: they are that tenant's too)."""
        own: list[MailboxRow] = []
        others: list[overview.MailboxFigures] = []
        known = await self.mailboxes()
        seen: set[str] = set()
        loop = asyncio.get_running_loop()
        until = loop.time() + LIST_COUNT_SECONDS  # the rows' counts share it
        for address in known:
            if address in seen:
                continue  # a dead-letter mailbox named too: shown beside its mailbox
            found = await self.figures(address, max(until - loop.time(), 0.0))
            if found.refused is not None:
                others.append(found)
            elif found.exists and len(own) < MAX_MAILBOXES:
                dead = await self._dead_letters_of(address)
                own.append(MailboxRow(found, dead))
                if dead is not None and dead.exists and dead.refused is None:
                    own.append(MailboxRow(dead, None))
                    seen.add(dead.address)
        return own, others

    async def _dead_letters_of(self, address: str) -> overview.MailboxFigures | None:
        """The figures of ``address``'s dead-letter mailbox (None: it is one itself)."""
        dlq = dead_letter_address(address)
        if address.endswith(".dlq") or not is_valid_address(dlq):
            return None
        return await self.figures(dlq, 0.0)

    async def may_open(self, addresses: list[str]) -> dict[str, bool]:
        """Whether this console may open each mailbox's page: every one on a broker it logs in
        to without a credential of its own (an open broker refuses no reader), else what a
        one-message QUERY of each answered (remembered ``ACCESS_SECONDS``): the agents page
        links only those, as another tenant's page opens on a refusal."""
        if self.broker.principal is None:
            return dict.fromkeys(addresses, True)
        now = self.clock()
        for address in dict.fromkeys(addresses):
            known = self.access.get(address)
            if known is not None and now - known[0] < ACCESS_SECONDS:
                continue
            try:
                await self.broker.query(address, limit=1)
                self._known_access(address, True)
            except MailboxNotFound:
                self._known_access(address, False)
            except Mq9Error as exc:
                if overview.refusal(exc) is None:
                    raise
                self._known_access(address, False)
        return {a: self.access[a][1] for a in addresses}

    def _known_access(self, address: str, readable: bool) -> None:
        if len(self.access) >= MAX_ACCESS:
            self.access.clear()
        self.access[address] = (self.clock(), readable)

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
                looked, weight = self.weight.get(address, (0.0, 0))
                if weight > HEAVY_BYTES and self.clock() - looked < HEAVY_SAMPLE_SECONDS:
                    continue  # a look at it costs the broker's pace seconds: less often
                try:
                    await self.figures(address, SAMPLE_COUNT_SECONDS)
                except Exception as exc:  # a point missed; the pages say what is wrong
                    log.debug("no depth sample of %s: %s", address, failure(exc))


def counted(found: overview.MailboxFigures, count: Census) -> overview.MailboxFigures:
    """``found`` (a QUERY's figures) with the mailbox's count in place of the QUERY's."""
    tally = count.tally
    ttls = min(tally.ttls, default=None)
    ids = [i for i in (tally.newest_id, found.newest_id) if i is not None]
    found = dataclasses.replace(
        found,
        counts=dict(tally.counts),
        lower_bound=not count.exact,
        why=count.why(),
        counted_at=count.done_at,
        oldest=tally.oldest if tally.oldest is not None else found.oldest,
        newest_id=max(ids, default=None),
        message_ttl=ttls if ttls is not None else found.message_ttl,
    )
    return scheduled(found, count)


def scheduled(found: overview.MailboxFigures, count: Census) -> overview.MailboxFigures:
    """``found`` with the delayed messages its broker's count told of (None: not
    told), and when the soonest is due."""
    return dataclasses.replace(
        found,
        scheduled=count.scheduled,
        next_due=count.next_due if count.scheduled else None,
    )


@dataclass(frozen=True)
class MailboxRow:
    """A row of the mailboxes page: a mailbox this console may read, and its dead-letter
    mailbox's figures (None: the row is a dead-letter mailbox itself)."""

    figures: overview.MailboxFigures
    dead: overview.MailboxFigures | None


def shown(value: Any) -> Any:
    """A value as a page shows it: text with its control characters escaped (markup the
    templates made, such as ``tojson``'s, too: the escapes are plain text in it)."""
    if isinstance(value, Markup):
        return Markup(printable(str(value)))
    if isinstance(value, str):
        return printable(value)
    return value


def shown_text(value: Any) -> Any:
    return printable(value) if isinstance(value, str) else value


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
            host, scheme = request.headers.get("host"), request.url.scheme
            if not same_origin(origin, host, scheme, self.console.settings.public_origins):
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
        if request.method in ("GET", "HEAD"):  # a person's browser: sent to the login page
            return RedirectResponse("/login", 303)
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
    watched = None
    if settings.metrics is not None:  # (serve.py checked the address and the extra)
        from .metrics import ConsoleMetrics

        watched = ConsoleMetrics(
            settings.metrics,
            lambda: console.client is not None and console.client.is_connected,
            client=lambda: console.client,  # ready while a broker answers
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        console.client = await connect().connect()
        sampler = asyncio.create_task(console.sample())
        try:
            if watched is not None:
                await watched.start()
            yield
        finally:
            sampler.cancel()
            # (bounded: a look in progress ends at its request timeout, the shutdown sooner)
            await asyncio.wait({sampler}, timeout=SAMPLER_STOP_WITHIN)
            if watched is not None:
                await watched.stop()
            await console.broker.close()

    routes = [
        Route("/", lambda r: RedirectResponse("/agents", 303)),
        Route("/login", _login, methods=["GET", "POST"]),
        Route("/logout", _logout, methods=["POST"]),
        Route("/agents", _agents),
        Route("/mailboxes", _mailboxes),
        Route("/mailboxes/{address}", _mailbox),
        Route("/mailboxes/{address}/messages/{msg_id:int}", _message),
        Route("/mailboxes/{address}/messages/{msg_id:int}/payload", _payload),
        Route(
            "/mailboxes/{address}/messages/{msg_id:int}/{action}",
            _message_action,
            methods=["POST"],
        ),
        Route("/mailboxes/{address}/depth.svg", _depth),
        Route("/mailboxes/{address}/dead-letters", _dead_letters),
        Route("/mailboxes/{address}/dead-letters/replay", _replay, methods=["POST"]),
        Route("/mailboxes/{address}/dead-letters/{msg_id:int}/replay", _replay, methods=["POST"]),
        Route("/log", _log),
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
        Route("/api/log", _api_log),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    expected = (OperationError, Mq9Error, CallError, ValueError, overview.Unknown)
    handlers = dict.fromkeys(expected, _failed)
    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers=handlers)
    app.state.console = console
    app.add_middleware(Guard, console=console)
    if watched is not None:  # outermost: the Guard's refusals are counted too
        from .metrics import Metered

        app.add_middleware(Metered, metrics=watched)
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
    opened_by = console.gate.opened_by(given) if isinstance(given, str) else None
    if opened_by is None:
        await asyncio.sleep(0.5)  # a guesser's pace
        return console.page(request, "login.html", 401, failed=True)
    peer = request.client.host if request.client else "?"
    sid, _ = console.gate.open_session(who=f"{opened_by} from {peer}")
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


def _who(request: Request) -> str:
    """Who made a write, for the log: the session's opener, or a program's bearer token."""
    session: Session | None = request.scope.get("mq9_session")
    if session is not None:
        return session.who
    peer = request.client.host if request.client else "?"
    return f"the bearer token from {peer}"


async def _agents(request: Request) -> Response:
    console = _console(request)
    query = request.query_params.get("q", "")
    found = await overview.operate(console.broker, "agent_discover", {"query": query})
    mailboxes = [a.get("mailbox") for a in found["agents"]]
    valid = [m for m in mailboxes if isinstance(m, str) and is_valid_address(m)]
    opens = await console.may_open(valid)
    return console.page(request, "agents.html", agents=found["agents"], query=query, opens=opens)


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
    # a mailbox this console's credential may not read is listed apart as another agent's,
    # with the broker's reason, never as a link: one such mailbox never fails the page
    rows, others = await console.survey()
    return console.page(request, "mailboxes.html", rows=rows, others=others)


def _search(request: Request) -> dict[str, Any]:
    """A mailbox page's search (key, tags, text) and where its page starts."""
    params = request.query_params
    tags = [t.strip() for t in params.get("tags", "").split(",") if t.strip()]
    try:
        from_id = max(0, int(params.get("from_id", "0") or 0))
    except ValueError:
        raise OperationError(f"from_id {params['from_id'][:20]!r} is not a msg_id") from None
    key, text = params.get("key", "").strip(), params.get("text", "").strip()
    return {"key": key, "tags": tags, "text": text, "from_id": from_id}


async def _mailbox(request: Request) -> Response:
    console = _console(request)
    address = _address(request)
    search = _search(request)
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


async def _message(request: Request) -> Response:
    console = _console(request)
    address, msg_id = _address(request), request.path_params["msg_id"]
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


async def _payload(request: Request) -> Response:
    """A message's whole payload, as it was sent, to download (never rendered as a page)."""
    console = _console(request)
    address, msg_id = _address(request), request.path_params["msg_id"]
    held = await overview.message_at(console.broker, address, msg_id)
    if held is None:
        return PlainRefusal(f"no message {msg_id} in {address}", 404)
    name = f"{address}-{msg_id}.txt"
    headers = {"content-disposition": f'attachment; filename="{name}"'}
    return Response(bytes(held.payload), media_type="application/octet-stream", headers=headers)


async def _message_action(request: Request) -> Response:
    """Delete a message, ack a group past it, or set it aside (to its dead letters)."""
    try:
        console, fields = await _written(request)
    except Refused as exc:
        return PlainRefusal(str(exc), 403)
    address, msg_id = _address(request), request.path_params["msg_id"]
    action = request.path_params["action"]
    client, who = console.broker, _who(request)
    if action == "delete":
        if await overview.message_at(client, address, msg_id) is None:
            raise OperationError(f"no message {msg_id} in {address} (nothing deleted)")
        await client.delete(address, msg_id)
        done = f"deleted message {msg_id} of {address}"
    elif action == "ack":
        group = fields.get("group", "").strip() or "default"
        await client.ack(address, group, msg_id)
        done = f"the group {group} went past message {msg_id} of {address} (and all before it)"
    elif action == "set-aside":
        group = fields.get("group", "").strip() or "console"
        reason = fields.get("reason", "").strip() or "set aside in the console"
        try:
            letter = await overview.set_aside(
                client, address, msg_id, group=group, reason=f"{reason} ({who})"
            )
        except LookupError as exc:
            raise OperationError(str(exc)) from None
        done = f"set message {msg_id} aside: it is #{letter} of {dead_letter_address(address)}"
    else:
        return PlainRefusal(f"no action {action[:40]!r}", 404)
    console.audit.add(
        who,
        action,
        address,
        msg_id=msg_id,
        **{k: v for k, v in fields.items() if k in ("group", "reason")},
    )
    _notice(request, done)
    return RedirectResponse(f"/mailboxes/{quote(address, safe='')}", 303)


async def _depth(request: Request) -> Response:
    console = _console(request)
    address = _address(request)
    samples = console.history.samples(address)
    if request.query_params.get("small"):  # a table's thumbnail: the line alone
        return Response(charts.sparkline(address, samples), media_type="image/svg+xml")
    history = console.history
    svg = charts.depth_chart(
        address, samples, lower=history.lower(address), lower_now=history.lower_now(address)
    )
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
        history=console.audit.entries(action="replay", target=address)[:20],
    )


async def _replay(request: Request) -> Response:
    try:
        console, _ = await _written(request)
    except Refused as exc:
        return PlainRefusal(str(exc), 403)
    address = _address(request)
    one = request.path_params.get("msg_id")
    if one is not None:
        try:
            sent = await overview.replay_one(console.broker, address, one)
        except LookupError as exc:
            raise OperationError(str(exc)) from None
        console.audit.add(_who(request), "replay", address, letter=one, sent_as=sent)
        _notice(request, f"sent dead letter {one} back to {address} as message {sent}")
        return RedirectResponse(f"/mailboxes/{quote(address, safe='')}/dead-letters", 303)
    done = await overview.replay_dead_letters(console.broker, address)
    console.audit.add(
        _who(request), "replay", address, sent=done.sent, skipped=sorted(done.skipped)
    )
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
    answered = console.audit.entries(action="answer")
    return console.page(request, "calls.html", callers=await _calls_of(console), answered=answered)


async def _check(console: Console, reply: str, task_id: str) -> dict[str, Any]:
    policy = overview.person_policy(reply_mailbox=reply)
    args = {"task_id": task_id}
    return await overview.operate(console.broker, "check_call", args, policy)


async def _call(request: Request) -> Response:
    console = _console(request)
    reply, task_id = _reply(request), request.path_params["task_id"]
    shown = await _check(console, reply, task_id)
    steps = [e for e in console.audit.entries(target=reply) if e.detail.get("task_id") == task_id]
    return console.page(request, "call.html", reply=reply, call=shown, steps=steps)


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
    question = None
    if operation == "answer_call":
        args["answer"] = fields.get("answer", "")
        # the question this answers: the call's record drops it once the call goes on
        question = (await _check(console, reply, task_id)).get("question")
    policy = overview.person_policy(reply_mailbox=reply)
    shown = await overview.operate(console.broker, operation, args, policy)
    detail = {"task_id": task_id, "agent": shown.get("agent")}
    if operation == "answer_call":
        detail |= {"question": question, "answer": args["answer"]}
    action = "answer" if operation == "answer_call" else "cancel"
    console.audit.add(_who(request), action, reply, **detail)
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
                # the page's script sets these as text: escaped here as the pages escape them
                shown["preview"] = _preview(printable(shown.pop("payload")))
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


async def _call_events(request: Request) -> Response:
    console = _console(request)
    reply, task_id = _reply(request), request.path_params["task_id"]

    async def events() -> AsyncIterator[str]:
        seen = None
        while True:
            shown = await _check(console, reply, task_id)
            if shown != seen:
                seen = shown
                yield _event("call", {k: shown_text(v) for k, v in shown.items()})
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
    search = _search(request)
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


async def _log(request: Request) -> Response:
    console = _console(request)
    return console.page(request, "log.html", entries=console.audit.entries())


async def _api_log(request: Request) -> Response:
    entries = [
        {"time": e.time, "who": e.who, "action": e.action, "target": e.target, **e.detail}
        for e in _console(request).audit.entries()
    ]
    return JSONResponse({"entries": entries})


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
