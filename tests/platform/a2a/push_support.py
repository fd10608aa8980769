"""A webhook receiver for the A2A push tests: a real HTTP server on loopback that keeps every
POST (body, headers) and checks each one's JWT against the sender's public keys (its JWKS, as
a receiver is told out of band: never from the push itself)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable
from typing import Any

import httpx

from mq9_platform.a2a.push_auth import (
    JWKS_PATH,
    PUSH_JWT_EXTENSION,
    PUSH_JWT_HEADER,
    PushRefused,
    verify_push,
)
from testbed.support.waiting import until


class Receiver:
    """``with Receiver() as receiver:`` serves until the block ends."""

    def __init__(self, keys: dict[str, Any] | Callable[[], dict[str, Any]] | None = None) -> None:
        """``keys``: the sender's JWKS, or a function giving it (set ``keys`` later if the
        sender is made after the receiver)."""
        self.keys = keys
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        # Once it has the keys, a push is checked as it arrives, as a receiver would: one
        # whose JWT does not verify (or was seen: a replay) gets 401 and is only noted here
        self.refused: list[str] = []
        self.seen: dict[str, float] = {}
        lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                status = 200
                with lock:
                    try:
                        receiver.check(body, dict(self.headers))
                        receiver.requests.append((body, dict(self.headers)))
                    except PushRefused as refused:
                        receiver.refused.append(str(refused))
                        status = 401
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/push"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def check(self, body: bytes, headers: dict[str, str]) -> None:
        if self.keys is not None:
            jwt = headers.get(PUSH_JWT_HEADER, "")
            verify_push(jwt, body, self.jwks(), audience=self.url, seen=self.seen)

    def jwks(self) -> dict[str, Any]:
        assert self.keys is not None, "the receiver needs the sender's JWKS (Receiver.keys)"
        return self.keys() if callable(self.keys) else self.keys

    def tasks(self, token: str) -> list[dict]:
        """The tasks POSTed so far with ``token``, each one's JWT checked: signed by the
        sender's key, for this body and this receiver's URL."""
        found = []
        for body, headers in list(self.requests):
            if headers.get("X-A2A-Notification-Token") != token:
                continue
            claims = verify_push(
                headers.get(PUSH_JWT_HEADER, ""), body, self.jwks(), audience=self.url
            )
            task = json.loads(body)["task"]
            assert claims["task_id"] == task["id"], (claims, task["id"])
            found.append(task)
        return found

    async def until(self, token: str, state: str, timeout: float = 30.0) -> list[dict]:
        """The tasks POSTed once one of them is in ``state`` (hang guard: ``timeout``)."""

        def pushed() -> list[dict] | None:
            tasks = self.tasks(token)
            return tasks if any(t["status"]["state"] == state for t in tasks) else None

        def statuses() -> list[dict]:
            return [t["status"] for t in self.tasks(token)]

        what = f"a {state} task pushed"
        return await until(pushed, timeout=timeout, what=what, every=0.05, show=statuses)


async def fetch_jwks(url: str) -> dict[str, Any]:
    """The JWKS a gateway publishes (``<agent URL>/.well-known/jwks.json``): what a receiver
    is told to trust, read over HTTP as it would."""
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.get(url.rstrip("/") + JWKS_PATH)
        answer.raise_for_status()
        return answer.json()


async def registered_jwks(client: Any, agent: str) -> dict[str, Any]:
    """The JWKS a served agent's registry card carries (``push_auth.PUSH_JWT_EXTENSION``):
    where a receiver of its pushes finds the keys, through its own mq9 client."""
    for card in await client.agent_discover():
        if card.get("name") == agent:
            for extension in (card.get("capabilities") or {}).get("extensions") or []:
                if extension.get("uri") == PUSH_JWT_EXTENSION:
                    return extension["params"]["jwks"]
    raise AssertionError(f"{agent}'s card carries no push keys")
