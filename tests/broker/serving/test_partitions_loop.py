"""The dev broker's event loop (#81): uvloop's where the ``uvloop`` extra is installed, asyncio's
without it or when ``MQ9_EVENT_LOOP=asyncio`` says so; and the servers' partition mapping's
lines (``nats_servers/mappings.py``), which test_partitions.py runs on a real nats-server."""

from __future__ import annotations

import asyncio
import builtins
from typing import Any

import pytest

from mq9_broker.cli import dev_broker
from mq9_broker.nats_servers import mappings


def test_asyncio_when_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MQ9_EVENT_LOOP", "asyncio")
    assert dev_broker.event_loop_runner() is asyncio.run


def test_asyncio_without_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MQ9_EVENT_LOOP", raising=False)
    real = builtins.__import__

    def no_uvloop(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "uvloop":
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_uvloop)
    assert dev_broker.event_loop_runner() is asyncio.run


def test_uvloop_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    uvloop = pytest.importorskip("uvloop")
    monkeypatch.delenv("MQ9_EVENT_LOOP", raising=False)
    assert dev_broker.event_loop_runner() is uvloop.run


def test_one_mapping_per_command_and_token_count() -> None:
    lines = mappings.partition_mappings()
    assert len(lines) == 5 * mappings.DEPTH
    assert len(set(lines)) == len(lines)
    # DELETE's msg_id (its last token) is left out of the hash: it goes where the SENDs go
    delete = next(line for line in lines if line.startswith('"$mq9.AI.MSG.DELETE.*.*.*"'))
    assert f"partition({mappings.COUNT},1,2)" in delete
    send = next(line for line in lines if line.startswith('"$mq9.AI.MSG.SEND.*.*"'))
    assert f"partition({mappings.COUNT},1,2)" in send
