"""#113: a carrier's callers' key shares are the broker's to hold.

A carrier (the A2A gateway, mq9-mcp) sends for many callers as one identity; its keyed SENDs
name the caller and its share (``mq9-key-caller``, ``mq9-key-share``), and a ``--credentials``
broker counts each new key against that share and the identity's own bound in the step that
keeps it, whatever connection, replica or start of the carrier sent it. Played through
``Identities.handle`` (as serve.py hands a credentialed request on) on the memory and SQLite
stores: a caller past its share is refused alone, another caller's key is answered, the
identity's bound still holds over all its callers, a bad naming is refused in one line, and
the naming is never stored with the message.
"""

from __future__ import annotations

import dataclasses

import pytest

from mq9_wire import protocol as p
from mq9_wire.protocol.errors import LimitReached, from_reply
from mq9_wire.protocol.messages import HEADER_KEY_CALLER, HEADER_KEY_SHARE
from tests.platform.broker.identities.test_sender_vouched import Place, enforcing

pytest.importorskip("nkeys")  # the credentials extra

BOX = "carrier.box"


@pytest.fixture(params=["memory", "sqlite"])
async def place(request, tmp_path):
    made = Place(request.param, tmp_path)
    yield made
    await made.drop()


@pytest.fixture
def identity_store(tmp_path):
    from mq9_broker.identities.store import IdentityStore

    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    for name in ("gw", "alice"):
        store.issue(name)
    yield store
    store.close()


def _keyed(key: str, caller: str, share: str = "3") -> dict[str, str]:
    return {p.HEADER_IDEMPOTENCY_KEY: key, HEADER_KEY_CALLER: caller, HEADER_KEY_SHARE: share}


async def test_a_callers_share_is_held_by_the_broker_over_every_connection(place, identity_store):
    engine = await place.open()
    engine.limits = dataclasses.replace(engine.limits, max_keys_per_sender=7)
    agents = enforcing(identity_store, engine)
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": BOX})
    send = p.MSG_SEND + BOX
    for n in range(3):  # (each request as if from another replica: the broker counts them all)
        await agents.ok("gw", send, f"m{n}".encode(), _keyed(f"m{n}", "mallory"))
    refused = (await agents("gw", send, b"m3", _keyed("m3", "mallory")))["error"]
    assert isinstance(from_reply(refused, send), LimitReached), refused
    assert "your share of your carrier's" in refused and "\n" not in refused
    # another share named for her counts the same keys: one more fits a share of 4
    await agents.ok("gw", send, b"m3", _keyed("m3", "mallory", "4"))
    assert "your share" in (await agents("gw", send, b"m4", _keyed("m4", "mallory", "4")))["error"]
    # her keys held still answer; bob's new key is answered
    assert (await agents.ok("gw", send, b"m0", _keyed("m0", "mallory")))["duplicate"] is True
    await agents.ok("gw", send, b"b0", _keyed("b0", "bob"))
    # the identity's own bound holds over all its callers (7: 4 + 3)
    for n in range(1, 3):
        await agents.ok("gw", send, f"b{n}".encode(), _keyed(f"b{n}", "bob"))
    full = (await agents("gw", send, b"c0", _keyed("c0", "carol")))["error"]
    assert "you hold as many keys as one sender may" in full, full
    # a bad naming, refused in one line; the naming is never stored with the message
    for bad in (_keyed("x", "mallory", "0"), _keyed("x", "mallory", "many"), _keyed("x", "")):
        error = (await agents("gw", send, b"x", bad))["error"]
        assert error.startswith("SEND refused: mq9-key-") and "\n" not in error, error
    stored = (await agents.ok("alice", p.MSG_QUERY + BOX, {}))["messages"]
    assert stored and all(b"mq9-key-" not in bytes(m.get("header") or b"") for m in stored)
    await place.stop(engine)


async def test_a_callers_share_holds_across_a_broker_restart(tmp_path, identity_store):
    """A SQLite broker restarted keeps each key counted against the caller it was counted
    for (before, its keys came back counted against the identity only: a caller at her share
    before the restart had her whole share again after it, and two restarts let her fill the
    identity's bound, refusing every other caller)."""
    place = Place("sqlite", tmp_path)
    engine = await place.open()
    engine.limits = dataclasses.replace(engine.limits, max_keys_per_sender=7)
    agents = enforcing(identity_store, engine)
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": BOX})
    send = p.MSG_SEND + BOX
    for n in range(3):
        await agents.ok("gw", send, f"m{n}".encode(), _keyed(f"m{n}", "mallory"))
    await place.stop(engine)
    engine = await place.open()  # the broker started again on its file
    engine.limits = dataclasses.replace(engine.limits, max_keys_per_sender=7)
    agents = enforcing(identity_store, engine)
    refused = (await agents("gw", send, b"m3", _keyed("m3", "mallory")))["error"]
    assert "your share of your carrier's" in refused, refused
    assert (await agents.ok("gw", send, b"m0", _keyed("m0", "mallory")))["duplicate"] is True
    for n in range(4):  # the identity's room left, 7 - 3, all bob's to take
        await agents.ok("gw", send, f"b{n}".encode(), _keyed(f"b{n}", "bob", "4"))
    full = (await agents("gw", send, b"c0", _keyed("c0", "carol")))["error"]
    assert "you hold as many keys as one sender may" in full, full
    await place.stop(engine)
