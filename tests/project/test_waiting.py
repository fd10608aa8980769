"""support/waiting.py, the tests' one way to wait: it returns what held, and a wait that never
ends says what it waited for and what it saw last."""

from __future__ import annotations

import pytest

from testbed.support.waiting import NeverHappened, until, until_sync


async def test_until_returns_the_value_that_held():
    seen = iter([0, [], "ready"])
    assert await until(lambda: next(seen), timeout=5, what="a value", every=0) == "ready"


async def test_until_awaits_an_async_predicate():
    looks: list[int] = []

    async def third_look() -> bool:
        looks.append(1)
        return len(looks) == 3

    assert await until(third_look, timeout=5, what="three looks", every=0) is True


async def test_a_wait_that_never_ends_names_what_it_waited_for_and_what_it_saw():
    with pytest.raises(NeverHappened, match=r"waited 0 s for the door to open; last seen: \[\]"):
        await until(lambda: [], timeout=0, what="the door to open")


def test_until_sync_takes_an_ignored_exception_as_not_yet():
    tries: list[int] = []

    def connect() -> str:
        tries.append(1)
        if len(tries) < 3:
            raise ConnectionRefusedError("not listening yet")
        return "connected"

    found = until_sync(connect, timeout=5, what="a listener", ignoring=(OSError,), every=0)
    assert found == "connected"


def test_until_sync_says_the_last_exception_it_took_as_not_yet():
    def refused() -> bool:
        raise ConnectionRefusedError("not listening yet")

    with pytest.raises(NeverHappened, match="a listener; last seen: ConnectionRefusedError"):
        until_sync(refused, timeout=0, what="a listener", ignoring=(OSError,))
