"""Telling systemd a server is ready: a unit of ``Type=notify`` starts its
dependents once the server sends ``READY=1`` on the datagram socket systemd names in
``$NOTIFY_SOCKET`` (sd_notify(3)); without that variable (no systemd), nothing is sent.

``tell_when_ready`` asks the server's own readiness (``/readyz``'s) once a second until it is
ready, says ``STATUS=`` why not meanwhile (``systemctl status`` shows it), then ``READY=1``.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Callable

ASK_EVERY = 1.0  # seconds between two readiness checks before the first "ready"


def notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send ``state`` (``READY=1``, ``STATUS=...``) to systemd; False when not under it."""
    where = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not where:
        return False
    address = "\0" + where[1:] if where.startswith("@") else where  # the abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state.encode(), address)
    return True


async def tell_when_ready(why_not_ready: Callable[[], Awaitable[str | None]]) -> None:
    """``READY=1`` once ``why_not_ready()`` is None, ``STATUS=`` each new reason before."""
    said = ""
    while (why := await why_not_ready()) is not None:
        if why != said:
            notify(f"STATUS=not ready: {why}"[:1000])
            said = why
        await asyncio.sleep(ASK_EVERY)
    notify("READY=1\nSTATUS=ready")
