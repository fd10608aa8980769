"""#98 items 5 and 7: what the client learns about keys, and an election read as a retry.

Item 7: the client resends a keyed SEND only where it knows the broker keeps keys (else a
broker ignoring them stores it twice). Before #98 it learned that from any answer carrying
``duplicate``, so a hostile responder on another mailbox made every keyed SEND to a broker
without keys go out three times. Now it is learned per mailbox from the answers to this
client's own keyed SENDs there, or from what the transport says of itself (the in-process
broker).

Item 5: the bundled broker's JetStream store answers "JetStream did not acknowledge a write:
no responders" while a stream's leader is being elected; it read as a final error and the
keyed SEND was not resent. Now it is ``StoreUnavailable`` (retryable), a keyed SEND is sent
again with its key within its ``request_timeout`` (stored once), and an unkeyed one that
reached no stream ("no responders": stored nothing) is sent again too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from mq9_broker import BrokerEngine
from mq9_platform import Mq9Client
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import StoreUnavailable

ELECTING = "JetStream did not acknowledge a write: nats: no responders available for request"
UNSURE = "JetStream did not acknowledge a write: nats: timeout"


async def test_a_hostile_answer_on_another_mailbox_teaches_nothing() -> None:
    tries: dict[str, int] = {}

    async def responders(subject: str, headers: Any, body: bytes) -> bytes:
        box = subject.removeprefix(p.MSG_SEND)
        tries[box] = tries.get(box, 0) + 1
        if box == "hostile.box":  # someone answering there, in a keeping broker's words
            return b'{"error":"","msg_id":0,"duplicate":true}'
        await asyncio.Event().wait()  # a broker without keys, slow: never resent to
        return b""

    async with Mq9Client(transport=responders, request_timeout=0.5) as client:
        client.resend_after = 0.01
        await client.send("hostile.box", "x", idempotency_key="k")
        assert client.keys_recognised_for("hostile.box") is True
        assert client.keys_recognised_for("victim.box") is None
        with pytest.raises((Exception, TimeoutError)):
            await asyncio.wait_for(client.send("victim.box", "x", idempotency_key="k"), 1.0)
    assert tries["victim.box"] == 1


async def test_the_in_process_broker_says_it_keeps_keys() -> None:
    async with Mq9Client("memory://keys-said") as client:
        assert client.keys_recognised is True


def _electing_once(engine: BrokerEngine, answer: str, *, stored: bool) -> tuple[Any, list]:
    """A transport over ``engine`` whose first SEND is answered ``answer`` (the store's words
    in an election), stored first when ``stored``; every later request as the engine does."""
    tries: list[bytes] = []

    async def handler(subject: str, headers: Any, body: bytes) -> bytes:
        if subject.startswith(p.MSG_SEND):
            tries.append(body)
            if len(tries) == 1:
                if stored:
                    await engine.handle(subject, headers, body)
                return p.encode({"error": answer})
        return await engine.handle(subject, headers, body)

    return handler, tries


@pytest.mark.parametrize("answer", [ELECTING, UNSURE])
async def test_a_keyed_send_goes_again_through_an_election_and_is_stored_once(answer) -> None:
    engine = BrokerEngine()
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"elected.box"}')
    handler, tries = _electing_once(engine, answer, stored=answer == UNSURE)
    async with Mq9Client(transport=handler, request_timeout=10) as client:
        client.resend_after = 0.05
        msg_id = await client.send("elected.box", "job", idempotency_key="job-1")
        assert len(tries) >= 2
    stored = json.loads(await engine.handle(p.MSG_QUERY + "elected.box", None, b"{}"))
    assert [m["msg_id"] for m in stored["messages"]] == [msg_id]


async def test_an_unkeyed_send_that_reached_no_stream_goes_again() -> None:
    engine = BrokerEngine()
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"elected.box"}')
    handler, tries = _electing_once(engine, ELECTING, stored=False)
    async with Mq9Client(transport=handler, request_timeout=10) as client:
        await client.send("elected.box", "job")
    assert len(tries) == 2
    stored = json.loads(await engine.handle(p.MSG_QUERY + "elected.box", None, b"{}"))
    assert len(stored["messages"]) == 1


async def test_an_unkeyed_send_maybe_stored_is_a_retryable_error_never_resent() -> None:
    engine = BrokerEngine()
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"elected.box"}')
    handler, tries = _electing_once(engine, UNSURE, stored=True)
    async with Mq9Client(transport=handler, request_timeout=10) as client:
        with pytest.raises(StoreUnavailable) as raised:
            await client.send("elected.box", "job")
    assert raised.value.retryable and not raised.value.stored_nothing
    assert "may or may not have been stored" in str(raised.value)
    assert len(tries) == 1
