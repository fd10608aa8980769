"""Issue #90: a keyed SEND is stored once per mailbox and key within the broker's window, on
the stores held in this process (memory, SQLite); the client sends a keyed SEND again when a
try got no answer, and only to a broker that said it recognises keys.

The window runs on a ``ManualClock`` (nothing sleeps); the SQLite store keeps its keys through
a restart. The cluster store's tests are test_idempotent_send_cluster.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from mq9_broker import BrokerEngine, ManualClock
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.storage import SqliteStorage
from mq9_platform.client import Mq9Client
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import InvalidArgument, Mq9Error

T0 = 1_700_000_000
WINDOW = 600


def _engine(clock: ManualClock, path: Path | None = None) -> BrokerEngine:
    storage = SqliteStorage(path) if path is not None else None
    limits = BrokerLimits(idempotency_window=WINDOW)
    return BrokerEngine(clock=clock, storage=storage, limits=limits)


@pytest.fixture(params=["memory", "sqlite"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    clock = ManualClock(T0)
    engine = _engine(clock, tmp_path / "b.sqlite3" if request.param == "sqlite" else None)
    yield engine
    engine.store.storage.close()


async def test_a_key_stores_one_message_and_answers_its_msg_id(engine: BrokerEngine) -> None:
    async with Mq9Client(transport=engine) as client:
        box = await client.mailbox_create(name="once.box")
        first = await client.send(box, {"n": 1}, idempotency_key="k-1", tags=["a"])
        again = [await client.send(box, {"n": 1}, idempotency_key="k-1", tags=["a"])]
        other = await client.send(box, {"n": 1}, idempotency_key="k-2", tags=["a"])
        assert again == [first] and other != first
        assert client.keys_recognised_for(box) is True
        stored = await client.fetch(box, deliver="earliest")
        assert [m.msg_id for m in stored] == [first, other]
        # the key is the broker's: never stored with the message, never shown to a reader
        assert all(p.HEADER_IDEMPOTENCY_KEY not in m.header for m in stored)
        assert client.warnings == {}


async def test_the_wire_answer_says_duplicate(engine: BrokerEngine) -> None:
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"wire.box"}')
    subject = p.send_subject("wire.box")
    headers = {p.HEADER_IDEMPOTENCY_KEY: "k"}
    first = await engine.handle(subject, headers, b"x")
    again = await engine.handle(subject, headers, b"x")
    assert first == b'{"error":"","msg_id":0,"duplicate":false}'
    assert again == b'{"error":"","msg_id":0,"duplicate":true}'
    # an unkeyed SEND's answer is as it always was
    assert await engine.handle(subject, None, b"x") == b'{"error":"","msg_id":1}'


@pytest.mark.parametrize(
    "change",
    [
        {"payload": "other"},
        {"priority": "urgent"},
        {"key": "k"},
        {"ttl": 30},
        {"tags": ["b"]},
        {"delay": 5},
    ],
)
async def test_the_same_key_for_another_send_is_refused(
    engine: BrokerEngine, change: dict[str, Any]
) -> None:
    async with Mq9Client(transport=engine) as client:
        box = await client.mailbox_create(name="once.refused")
        sent: dict[str, Any] = {"payload": "same", "tags": ["a"]}
        await client.send(box, idempotency_key="k", **sent)
        with pytest.raises(InvalidArgument) as refused:
            await client.send(box, idempotency_key="k", **(sent | change))
        text = str(refused.value)
        assert "\n" not in text and "idempotency key 'k' was used for another SEND" in text
        assert len(await client.fetch(box, deliver="earliest")) == 1


async def test_a_key_is_per_mailbox(engine: BrokerEngine) -> None:
    async with Mq9Client(transport=engine) as client:
        one = await client.mailbox_create(name="once.one")
        two = await client.mailbox_create(name="once.two")
        await client.send(one, "x", idempotency_key="k")
        await client.send(two, "x", idempotency_key="k")
        assert len(await client.fetch(one, deliver="earliest")) == 1
        assert len(await client.fetch(two, deliver="earliest")) == 1


async def test_the_window_ends_on_the_brokers_clock(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    engine = _engine(clock)
    async with Mq9Client(transport=engine) as client:
        box = await client.mailbox_create(name="once.window")
        first = await client.send(box, "x", idempotency_key="k")
        clock.advance(WINDOW - 1)
        assert await client.send(box, "x", idempotency_key="k") == first
        clock.advance(1)  # the window ended: the key is new again
        assert await client.send(box, "x", idempotency_key="k") == first + 1
        assert len(engine.store.sent_keys) == 1  # the ended one dropped as the new one came


async def test_a_delayed_keyed_send_is_held_once(engine: BrokerEngine) -> None:
    async with Mq9Client(transport=engine) as client:
        box = await client.mailbox_create(name="once.delayed")
        assert await client.send(box, "x", delay=5, idempotency_key="k") == -1
        assert await client.send(box, "x", delay=5, idempotency_key="k") == -1
        engine.clock.advance(5)  # type: ignore[attr-defined]
        assert len(await client.fetch(box, deliver="earliest")) == 1


async def test_sqlite_keeps_the_keys_through_a_restart(tmp_path: Path) -> None:
    clock, path = ManualClock(T0), tmp_path / "b.sqlite3"
    engine = _engine(clock, path)
    async with Mq9Client(transport=engine) as client:
        box = await client.mailbox_create(name="once.restart")
        first = await client.send(box, "x", idempotency_key="k")
        await client.send(box, "x", idempotency_key="gone")
        clock.advance(WINDOW)  # "gone" ends here; "k" is written again after it, so kept
        await client.send(box, "y", idempotency_key="k2")
    engine.store.storage.close()
    engine = _engine(clock, path)
    async with Mq9Client(transport=engine) as client:
        # "k"'s window ended too (same second): both new again, one stored each
        assert len(engine.store.sent_keys) == 1
        assert await client.send(box, "y", idempotency_key="k2") == first + 2
    engine.store.storage.close()


async def test_the_broker_refuses_a_key_too_long(engine: BrokerEngine) -> None:
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"long.box"}')
    headers = {p.HEADER_IDEMPOTENCY_KEY: "k" * (p.MAX_IDEMPOTENCY_KEY + 1)}
    answer = await engine.handle(p.send_subject("long.box"), headers, b"x")
    assert b"this broker takes keys of 1 to 256 bytes" in answer


async def test_the_client_sends_again_what_got_no_answer(engine: BrokerEngine) -> None:
    """The first try is taken by the broker, whose answer never comes (killed as it answered):
    the client's second try, with the same key, is answered with the first one's msg_id."""
    tries: list[bytes] = []

    async def dying_then_not(subject: str, headers: Any, body: bytes) -> bytes:
        answer = await engine.handle(subject, headers, body)
        tries.append(answer)
        if len(tries) == 2:  # the keyed SEND's first try: stored, never answered
            await asyncio.Event().wait()
        return answer

    async with Mq9Client(transport=dying_then_not, request_timeout=30) as client:
        client.resend_after = 0.05
        box = "resent.box"
        await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"resent.box"}')
        client.keys_recognised = True  # as a keyed SEND's answer would have said
        tries.append(b"")
        assert await client.send(box, "x", idempotency_key="k") == 0
        assert tries[2] == b'{"error":"","msg_id":0,"duplicate":true}'
    async with Mq9Client(transport=engine) as reader:
        assert len(await reader.fetch(box, deliver="earliest")) == 1


async def test_no_resend_before_the_broker_said_it_recognises_keys(engine: BrokerEngine) -> None:
    calls = 0

    async def silent(subject: str, headers: Any, body: bytes) -> bytes:
        nonlocal calls
        calls += 1
        await asyncio.Event().wait()
        return b""

    async with Mq9Client(transport=silent, request_timeout=0.3) as client:
        client.resend_after = 0.01
        # (a transport in this process waits as long as its handler: the test bounds it)
        with pytest.raises((Mq9Error, TimeoutError)):
            await asyncio.wait_for(client.send("a.box", "x", idempotency_key="k"), 0.5)
    assert calls == 1


async def test_a_broker_without_keys_is_learned_and_never_resent_to() -> None:
    async def old_broker(subject: str, headers: Any, body: bytes) -> bytes:
        return b'{"error":"","msg_id":7}'

    async with Mq9Client(transport=old_broker) as client:
        assert await client.send("a.box", "x", idempotency_key="k") == 7
        assert client.keys_recognised_for("a.box") is False


async def test_robustmq_is_not_sent_the_key() -> None:
    seen: list[Any] = []

    async def robustmq(subject: str, headers: Any, body: bytes) -> bytes:
        seen.append(headers)
        return b'{"error":"","msg_id":3}'

    client = Mq9Client(transport=robustmq)
    client._transport.server_info = {"go": "robustmq-rust"}  # type: ignore[attr-defined]
    async with client:
        await client.send("a.box", "x", idempotency_key="k")
    assert seen == [None]


def test_the_client_refuses_a_bad_key() -> None:
    for key in ["", " k", "a\nb", "k" * 257, 5]:
        with pytest.raises(InvalidArgument, match="invalid idempotency_key"):
            p.check_idempotency_key(key)
    assert p.check_idempotency_key("é" * 128) == "é" * 128
