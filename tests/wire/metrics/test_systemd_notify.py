"""#91 item 7: under systemd (``$NOTIFY_SOCKET``), a server's operator endpoint tells it
``STATUS=`` why it is not ready, then ``READY=1`` once its ``/readyz`` would answer 200 (a unit
of ``Type=notify`` waits for it); without the variable it sends nothing."""

from __future__ import annotations

import asyncio
import socket

import pytest

from mq9_wire.metrics import OperatorEndpoint, need_prometheus
from mq9_wire.metrics.notify import notify


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_the_endpoint_says_why_not_then_ready(tmp_path, monkeypatch):
    path = str(tmp_path / "notify")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(path)
    systemd.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    loop = asyncio.get_running_loop()
    why: list[str | None] = ["the broker is not there yet"]
    registry = need_prometheus().CollectorRegistry(auto_describe=False)
    endpoint = OperatorEndpoint("127.0.0.1", 0, registry, lambda: why[0])
    try:
        async with endpoint:
            said = await asyncio.wait_for(loop.sock_recv(systemd, 4096), 60)
            assert said == b"STATUS=not ready: the broker is not there yet"
            why[0] = None
            said = await asyncio.wait_for(loop.sock_recv(systemd, 4096), 60)
            assert said == b"READY=1\nSTATUS=ready"
    finally:
        systemd.close()


def test_without_systemd_nothing_is_sent():
    assert notify("READY=1", environ={}) is False
