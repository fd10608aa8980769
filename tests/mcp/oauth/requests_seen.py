"""What the authorization server was asked: each request's method and path, one line each in a
file, written by a hook node loads before ``authorization_server.mjs`` (``NODE_OPTIONS``), so
a test can count JWKS reads and introspection calls without changing the server. No body is
read: the token asked about never reaches the file."""

from __future__ import annotations

from pathlib import Path

import pytest

HOOK = """\
const fs = require('node:fs');
const http = require('node:http');
const out = process.env.MQ9_REQUESTS_SEEN;
const emit = http.Server.prototype.emit;
http.Server.prototype.emit = function (event, req, ...rest) {
  if (event === 'request') fs.appendFileSync(out, `${req.method} ${req.url.split('?')[0]}\\n`);
  return emit.call(this, event, req, ...rest);
};
"""

INTROSPECTION = "POST /token/introspection"
JWKS = "GET /jwks"


def record_requests(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Path:
    """Set the environment so an authorization server started next records its requests in
    the file returned (``seen``)."""
    hook = folder / "requests_seen.cjs"
    hook.write_text(HOOK)
    seen = folder / "requests_seen.txt"
    seen.write_text("")
    monkeypatch.setenv("NODE_OPTIONS", f"--require={hook}")
    monkeypatch.setenv("MQ9_REQUESTS_SEEN", str(seen))
    return seen


def seen(path: Path, request: str) -> int:
    """How many times ``request`` ("METHOD /path") was asked."""
    return path.read_text().splitlines().count(request)
