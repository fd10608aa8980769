"""A webhook receiver for the A2A push tests: a real HTTP server on loopback that keeps every
POST (body, headers) and checks each body's signature against the push config's token."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading

from langchain_mq9.wake import verify


class Receiver:
    """``with Receiver() as receiver:`` serves until the block ends."""

    def __init__(self) -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.requests.append((body, dict(self.headers)))
                self.send_response(200)
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

    def tasks(self, token: str) -> list[dict]:
        """The tasks POSTed so far with ``token``, each body checked against its signature."""
        found = []
        for body, headers in list(self.requests):
            if headers.get("X-A2A-Notification-Token") != token:
                continue
            assert verify(token, body, headers.get("X-Mq9-Signature", "")), headers
            found.append(json.loads(body)["task"])
        return found

    async def until(self, token: str, state: str, timeout: float = 30.0) -> list[dict]:
        """The tasks POSTed once one of them is in ``state`` (hang guard: ``timeout``)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            tasks = self.tasks(token)
            if any(t["status"]["state"] == state for t in tasks):
                return tasks
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no {state} pushed: {[t['status'] for t in tasks]}")
            await asyncio.sleep(0.05)
