"""#113 item "the registry share cannot be raced".

With ``--credentials`` each agent holds at most its share of registrations (#106), counted by
the identity store as a REGISTER is answered and given back by its UNREGISTER. Played as
mallory would: a REGISTER of a new name with a 50 KB card and its UNREGISTER sent while the
REGISTER is being answered. Before, the UNREGISTER (finding nothing registered yet) gave the
share back, then the REGISTER's write landed: the name stayed registered with her share
free, and round after round she held more names than her share (114 of 156 rounds in the
issue, through a real broker). Now a name's REGISTERs and UNREGISTERs take turns from their
check to their record, so the count and the record change together whatever order they land
in: the names she holds never pass her share, and her next new name is refused.

Played through ``Identities.handle`` (as serve.py hands a credentialed request on) on the
memory and SQLite stores; the UNREGISTER is sent after a varying number of the loop's turns,
so it lands at every point of the REGISTER's answer (no timing asserted).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from mq9_wire import protocol as p
from mq9_wire.protocol.errors import LimitReached, from_reply
from tests.platform.broker.identities.test_registrations_are_the_agents import _agent
from tests.platform.broker.identities.test_sender_vouched import Place, enforcing

pytest.importorskip("nkeys")  # the credentials extra

SHARE = 3  # mallory's share, a few names (the default is 100)
CARD = "x" * 50_000  # as the issue's: a body read off the loop, a REGISTER slow to answer
ROUNDS = 24


@pytest.fixture(params=["memory", "sqlite"])
async def place(request, tmp_path):
    made = Place(request.param, tmp_path)
    yield made
    await made.drop()


@pytest.fixture
def identity_store(tmp_path):
    from mq9_broker.identities.store import IdentityStore

    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    for name in ("alice", "mallory"):
        store.issue(name)
    yield store
    store.close()


async def _later(seconds: float, request):
    # the attacker's aim, not a wait for an event: sent this far into the REGISTER's answer
    await asyncio.sleep(seconds)
    return await request


async def _registered(agents, who: str) -> list[str]:
    listed = (await agents.ok("alice", p.AGENT_DISCOVER, {}))["agents"]
    return sorted(a["name"] for a in listed if a["name"].startswith(f"{who}."))


async def test_a_register_and_its_unregister_racing_never_pass_the_share(place, identity_store):
    engine = await place.open()
    engine.limits = dataclasses.replace(engine.limits, max_agents_per_sender=SHARE)
    agents = enforcing(identity_store, engine)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await agents.ok("mallory", p.AGENT_REGISTER, {"name": "mallory.timed", "payload": CARD})
    answer_time = loop.time() - began  # how long a REGISTER takes to answer, here, now
    await agents.ok("mallory", p.AGENT_UNREGISTER, {"name": "mallory.timed"})
    for n in range(ROUNDS):
        name = f"mallory.{n}"
        card = {"name": name, "payload": CARD}
        unregister = agents("mallory", p.AGENT_UNREGISTER, {"name": name})
        # sent 0-55% into the REGISTER's answer time, as the issue's rounds were
        aim = answer_time * (n % 12) / 20
        await asyncio.gather(agents("mallory", p.AGENT_REGISTER, card), _later(aim, unregister))
        held = await _registered(agents, "mallory")
        assert len(held) <= SHARE, f"round {n}: mallory holds {held}, her share is {SHARE}"
    # whatever she holds now is counted: with her share full her next new name is refused,
    # and with room left it is answered
    held = await _registered(agents, "mallory")
    extra = [f"mallory.more.{n}" for n in range(SHARE - len(held))]
    for name in extra:
        await agents.ok("mallory", p.AGENT_REGISTER, _agent(name))
    refused = await agents("mallory", p.AGENT_REGISTER, _agent("mallory.one-too-many"))
    assert isinstance(from_reply(refused["error"], p.AGENT_REGISTER), LimitReached), refused
    assert len(await _registered(agents, "mallory")) == SHARE
    await place.stop(engine)


async def test_a_register_whose_hold_was_given_back_and_its_room_taken_is_undone(
    place, identity_store, monkeypatch
):
    """The lost race after the write, made to happen: between a REGISTER's hold and its
    assertion after the write, another broker's UNREGISTER gives the hold back and another
    name of hers takes its room (played here on the store, as the other broker would). The
    assertion finds her share full: the registration is removed and the REGISTER refused, so
    she never holds more names than her share (#113)."""
    engine = await place.open()
    engine.limits = dataclasses.replace(engine.limits, max_agents_per_sender=1)
    agents = enforcing(identity_store, engine)
    store, hold = identity_store, identity_store.hold_agent
    calls: list[str] = []

    async def raced(name: str, principal: str, most: int) -> bool:
        calls.append(name)
        if calls == ["mallory.a", "mallory.a"]:  # (the second: the assertion after the write)
            await store.release_agent("mallory.a", "mallory")
            await hold("mallory.b", "mallory", most)
        return await hold(name, principal, most)

    monkeypatch.setattr(store, "hold_agent", raced)
    refused = await agents("mallory", p.AGENT_REGISTER, _agent("mallory.a"))
    assert isinstance(from_reply(refused["error"], p.AGENT_REGISTER), LimitReached), refused
    assert await _registered(agents, "mallory") == []  # "mallory.a" removed; "b" holds her room
    await place.stop(engine)
