"""The door every request passes: a session or the bearer token (only the login page and the
console's own static files go without), the security headers on every answer (a Content
Security Policy that runs no script but the console's own file), and a form from another
origin, or of no stated length, refused."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import COOKIE, same_origin
from .reads import Console

MAX_FORM_BYTES = 64 * 1024
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


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
