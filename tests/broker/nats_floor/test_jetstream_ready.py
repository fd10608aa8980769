"""The one wait for JetStream (``nats_floor/jetstream/ready.py``): asked again while ``not_yet``
lets a failure pass, given up at the deadline on an injected clock, cancelled at once; and,
on a real nats-server started after the wait began, answered once JetStream is there.
"""

from __future__ import annotations

import asyncio

import pytest

from mq9_wire.nats_floor.jetstream.api import (
    ErrorCode,
    deleted,
    err_code,
    expecting,
    removal,
    wrong_last_sequence,
)
from mq9_wire.nats_floor.jetstream.ready import Deadline, past, until_ready


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class _NotYet(Exception):
    pass


async def test_asked_again_until_answered() -> None:
    tries: list[int] = []

    async def ask() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise _NotYet
        return "ready"

    seen: list[Exception] = []
    assert await until_ready(ask, seen.append, pause=0) == "ready"
    assert len(tries) == 3 and all(isinstance(exc, _NotYet) for exc in seen)


async def test_given_up_at_the_deadline_on_its_clock() -> None:
    clock = _Clock()
    deadline = Deadline(10.0, clock)
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    async def ask() -> None:
        raise _NotYet("no leader")

    def not_yet(exc: Exception) -> None:
        past(deadline, exc, lambda exc: TimeoutError(f"gave up: {exc}"))

    with pytest.raises(TimeoutError, match="gave up: no leader"):
        await until_ready(ask, not_yet, pause=2.0, sleep=sleep)
    assert sum(slept) == 10.0 and deadline.left() == 0.0 and deadline.passed()


async def test_a_failure_for_good_is_raised_at_once() -> None:
    asked = 0

    async def ask() -> None:
        nonlocal asked
        asked += 1
        raise ValueError("JetStream off")

    def not_yet(exc: Exception) -> None:
        raise exc

    with pytest.raises(ValueError, match="JetStream off"):
        await until_ready(ask, not_yet, pause=0)
    assert asked == 1


async def test_a_cancel_is_never_taken_for_a_failure() -> None:
    seen: list[Exception] = []

    async def ask() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await until_ready(ask, seen.append, pause=0)
    assert seen == []


def test_the_api_names_read_errors_and_markers() -> None:
    class Refused(Exception):
        err_code = 10071

    assert wrong_last_sequence(Refused()) and err_code(Refused()) == 10071
    assert wrong_last_sequence(Exception("wrong last sequence: 4"))  # (a clustered stream's)
    assert not wrong_last_sequence(Exception("stream not found")) and err_code(Exception()) == 0
    assert ErrorCode(10058) is ErrorCode.STREAM_NAME_IN_USE
    assert deleted({"KV-Operation": "DEL"}) and deleted({"KV-Operation": "PURGE"})
    assert not deleted({}) and not deleted(None) and removal("PURGE") and not removal("PUT")
    assert expecting(3, {"A": "b"}) == {"A": "b", "Nats-Expected-Last-Subject-Sequence": "3"}


@pytest.mark.slow  # a nats-server process
async def test_a_jetstream_started_late_is_waited_for(tmp_path) -> None:
    """The identities' and the loop thread's wait (storage/loop_thread.py) on a server that
    comes up while it waits: answered, not failed."""
    import nats

    from mq9_broker.storage.loop_thread import until_jetstream
    from testbed.ports import unclaimed_port
    from testbed.support.jetstream_servers import JetStreamServer

    (tmp_path / "js").mkdir()
    server = JetStreamServer("late", unclaimed_port(), tmp_path / "js")
    url = server.url
    connected: list[object] = []

    async def ask() -> object:
        connection = await nats.connect(url, connect_timeout=1, max_reconnect_attempts=0)
        connected.append(connection)
        return await connection.jetstream().account_info()

    async def later() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(server.start)

    starting = asyncio.ensure_future(later())
    try:
        info = await until_jetstream(
            ask, wait=60.0, pause=0.2, unavailable=lambda exc: AssertionError(repr(exc))
        )
        assert info is not None
    finally:
        await starting
        for connection in connected:
            await connection.close()  # type: ignore[attr-defined]
        server.stop()
