"""#113 item "the open broker's per-client key bound is not another client's to fill".

An open dev broker (no credentials) once counted a keyed SEND's key against its client known
by the reply inbox's prefix, which any client may name: one that watches ``_INBOX.>`` (nothing
on a plain nats-server forbids it) learns the victim's prefix from an answer it hears, floods
keyed SENDs naming that prefix as their reply, and for the keys' window every keyed SEND of
the victim was refused "you hold as many keys as one sender may" while the attacker's own
were stored. Now a bound per client is kept only for a client nats-server vouches for (its
address, the open cluster's service import): the victim's keyed SEND is answered, and where
the flood reaches the bound in all, the refusal says it is everyone's and names the remedy.

Played on a real nats-server with the broker's serving (serve.py) over the memory store, as
``mq9-dev-broker`` runs without credentials; on the old code the victim's SEND was refused.
"""

from __future__ import annotations

import asyncio
import json

import nats
import pytest

from mq9_broker import BrokerEngine
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.serving.serve import NatsService
from mq9_wire import protocol as p

BOX = "victim.box"
WAIT = 30.0  # seconds: a hang guard on a busy machine, never a timing assertion
FULL = "no room for another idempotency key"


async def _send(connection, key: str) -> dict:
    headers = {p.HEADER_IDEMPOTENCY_KEY: key}
    answer = await connection.request(p.MSG_SEND + BOX, b"x", headers=headers, timeout=WAIT)
    return json.loads(answer.data)


async def _flood_as(attacker, prefix: str, keys: range) -> list[dict]:
    """Keyed SENDs (one per number of ``keys``) naming ``prefix`` (the victim's inbox) as
    their reply; the attacker hears their answers there too (a plain nats-server lets it)."""
    answers: asyncio.Queue[dict] = asyncio.Queue()

    async def heard(msg) -> None:
        await answers.put(json.loads(msg.data))

    sub = await attacker.subscribe(f"{prefix}.*", cb=heard)  # (the victim sends nothing meanwhile)
    for n in keys:
        headers = {p.HEADER_IDEMPOTENCY_KEY: f"mallory-{n}"}
        await attacker.publish(p.MSG_SEND + BOX, b"x", reply=f"{prefix}.flood-{n}", headers=headers)
    got = [await asyncio.wait_for(answers.get(), WAIT) for _ in keys]
    await sub.unsubscribe()
    return got


async def _victims_prefix(attacker, victim) -> str:
    """The victim's inbox prefix, as an attacker watching ``_INBOX.>`` learns it: from an
    answer to one of the victim's requests."""
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def heard(msg) -> None:
        if not seen.done():
            seen.set_result(msg.subject.rpartition(".")[0])

    sub = await attacker.subscribe("_INBOX.>", cb=heard)
    await attacker.flush()
    assert (await _send(victim, "victim-0"))["error"] == ""
    prefix = await asyncio.wait_for(seen, WAIT)
    await sub.unsubscribe()
    return prefix


@pytest.mark.slow  # a nats-server
async def test_a_flood_naming_the_victims_inbox_leaves_the_victims_keyed_send_answered(
    nats_server,
):
    limits = BrokerLimits(idempotency_window=600, max_keys=40, max_keys_per_address=5)
    engine = BrokerEngine(limits=limits)
    main = await nats.connect(nats_server.url)
    service = await NatsService(engine, main).start()
    victim, mallory = await nats.connect(nats_server.url), await nats.connect(nats_server.url)
    try:
        await victim.request(p.MAILBOX_CREATE, p.encode({"name": BOX}), timeout=WAIT)
        prefix = await _victims_prefix(mallory, victim)
        flood = await _flood_as(mallory, prefix, range(20))  # four times the old per-client bound
        # the victim's keyed SEND is its own to make: no bound of its own was filled for it
        # (before #113: "you hold as many keys as one sender may", for 600 s)
        answer = await _send(victim, "victim-1")
        assert answer["error"] == "" and answer["duplicate"] is False, answer
        assert all(a["error"] == "" for a in flood), flood  # within the bound in all
        # the bound in all, reached, says whose it is and names the remedy
        await _flood_as(mallory, prefix, range(20, 20 + 40 - len(engine.store.sent_keys)))
        refused = (await _send(victim, "victim-2"))["error"]
        assert FULL in refused and "--credentials" in refused, refused
        assert "one sender" not in refused
    finally:
        await service.stop()
        for connection in (victim, mallory, main):
            await connection.close()
