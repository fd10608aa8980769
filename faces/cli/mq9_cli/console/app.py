"""The console's web application: its routes (the pages, the forms, the event streams, the JSON
API and the static files, each module's), what runs while it is open (the broker client, the
depth sampler, the operator's metrics), and the one error page a broker's refusal becomes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from mq9_platform.a2a.caller import CallError
from mq9_platform.client.client import Mq9Client
from mq9_platform.operations.errors import OperationError
from mq9_wire.protocol.errors import Mq9Error

from .. import overview
from ..connect import NOT_FOUND, UNREACHABLE, failure
from . import actions, api, live, pages, params
from .guard import Guard
from .reads import Console
from .settings import Settings

HERE = Path(__file__).parent
SAMPLER_STOP_WITHIN = 2.0  # seconds the depth sampler gets to stop at shutdown


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

    expected = (OperationError, Mq9Error, CallError, ValueError, overview.Unknown)
    handlers = dict.fromkeys(expected, _failed)
    app = Starlette(routes=routes(), lifespan=lifespan, exception_handlers=handlers)
    app.state.console = console
    app.add_middleware(Guard, console=console)
    if watched is not None:  # outermost: the Guard's refusals are counted too
        from .metrics import Metered

        app.add_middleware(Metered, metrics=watched)
    return app


def routes() -> list[BaseRoute]:
    """Each path and the module's function that answers it: a page (``pages``), a form
    (``actions``), an event stream (``live``), the JSON API (``api``), the static files."""
    return [
        Route("/", lambda r: RedirectResponse("/agents", 303)),
        Route("/login", actions.login, methods=["GET", "POST"]),
        Route("/logout", actions.logout, methods=["POST"]),
        Route("/agents", pages.agents),
        Route("/mailboxes", pages.mailboxes),
        Route("/mailboxes/{address}", pages.mailbox),
        Route("/mailboxes/{address}/messages/{msg_id:int}", pages.message),
        Route("/mailboxes/{address}/messages/{msg_id:int}/payload", pages.payload),
        Route(
            "/mailboxes/{address}/messages/{msg_id:int}/{action}",
            actions.message_action,
            methods=["POST"],
        ),
        Route("/mailboxes/{address}/depth.svg", pages.depth),
        Route("/mailboxes/{address}/dead-letters", pages.dead_letters),
        Route("/mailboxes/{address}/dead-letters/replay", actions.replay, methods=["POST"]),
        Route(
            "/mailboxes/{address}/dead-letters/{msg_id:int}/replay",
            actions.replay,
            methods=["POST"],
        ),
        Route("/log", pages.audit_log),
        Route("/calls", pages.calls),
        Route("/calls/{reply}/{task_id}", pages.call),
        Route("/calls/{reply}/{task_id}/timeline.svg", pages.timeline),
        Route("/calls/{reply}/{task_id}/answer", actions.answer, methods=["POST"]),
        Route("/calls/{reply}/{task_id}/cancel", actions.cancel, methods=["POST"]),
        Route("/events/mailbox/{address}", live.mailbox_events),
        Route("/events/call/{reply}/{task_id}", live.call_events),
        Route("/api/agents", api.agents),
        Route("/api/mailboxes/{address}", api.mailbox),
        Route("/api/mailboxes/{address}/dead-letters", api.dead_letters),
        Route("/api/calls", api.calls),
        Route("/api/log", api.audit_log),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]


async def _failed(request: Request, exc: Exception) -> Response:
    """A broker's refusal or absence as a page (or JSON), in its one line; never a traceback."""
    problem = failure(exc)
    status = {NOT_FOUND: 404, UNREACHABLE: 502}.get(problem.code, 400)
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": str(problem)}, status)
    return params.console_of(request).page(request, "error.html", status, problem=str(problem))


__all__ = ["Console", "Settings", "create_app"]
