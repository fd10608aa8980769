"""#61 item 4 in process: what an enforcing broker remembers beyond its ownership records (the
groups' lease names learned from owners' FETCHes and ACKs, the FETCH bodies read already) is
nothing for a refused request and bounded per agent and in all for the rest; a lease name
forgotten is learned again from its owner's next FETCH. On a real ``BrokerEngine`` and the
SQLite identity store, requests handed on as ``serve.py`` hands them after the gate.
"""

from __future__ import annotations

import json
import tracemalloc

import pytest
from nats.aio.msg import Msg

from mq9_broker import BrokerEngine
from mq9_broker.identities.gate import Identities
from mq9_broker.identities.owners import FETCH_BODY_REMEMBERED
from mq9_broker.identities.store import IdentityStore
from mq9_platform.groups import leases
from mq9_wire import protocol as p

pytest.importorskip("nkeys")  # the credentials extra

REFUSED_ACKS = 1000
LONG_GROUP = "g" * 60_000  # the engine keeps group names of 256 characters at most


@pytest.fixture
def identities(tmp_path):
    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    for name in ("alice", "bob"):
        store.issue(name)
    made = Identities(store, BrokerEngine())
    yield made
    store.close()


async def ask(identities: Identities, who: str, subject: str, body=b"") -> dict:
    if isinstance(body, dict):
        body = p.encode(body)
    msg = Msg(None, subject=subject, reply=f"_INBOX.{who}.r.1", data=body)  # type: ignore[arg-type]
    return json.loads(await identities.handle(identities.ownership.engine, msg))


async def ok(identities: Identities, who: str, subject: str, body=b"") -> dict:
    answer = await ask(identities, who, subject, body)
    assert answer["error"] == "", answer
    return answer


def _ack(mailbox: str, group: str) -> dict:
    return {"group_name": group, "mail_address": mailbox, "msg_id": 0}


async def test_refused_acks_leave_nothing_behind(identities):
    """The attack of #61: ACKs on the agent's own mailbox, each naming a new 60,000-character
    group, all refused by the engine (it grew the broker by 182 MB for 4,000)."""
    await ok(identities, "alice", p.MAILBOX_CREATE, {"name": "a.box"})
    await ok(identities, "alice", p.MSG_SEND + "a.box", b"one")
    grown = await _growth(
        ask(identities, "alice", p.MSG_ACK + "a.box", _ack("a.box", f"{n}{LONG_GROUP}"))
        for n in range(REFUSED_ACKS)
    )
    assert identities.ownership.remembered() == {"leases in all": 0, "fetch bodies": 0}
    # what a thousand 60,000-character names would hold is 60 MB: far less stays
    assert grown < 2**20, grown


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_answered_fetches_of_long_group_names_keep_a_digest_each_within_the_bound(
    identities,
):
    """A FETCH of any group is answered (the engine makes a group at its first ACK): each
    teaches the broker a lease name, of which only the digest is kept, and at most
    ``leases_per_agent``."""
    identities.ownership.leases_per_agent = 100
    await ok(identities, "alice", p.MAILBOX_CREATE, {"name": "a.box"})
    await ok(identities, "alice", p.MSG_SEND + "a.box", b"one")  # found at once: no wait
    grown = await _growth(
        ask(identities, "alice", p.MSG_FETCH + "a.box", {"group_name": f"{n}{LONG_GROUP}"})
        for n in range(REFUSED_ACKS)
    )
    assert identities.ownership.remembered() == {
        "alice": 100,
        "leases in all": 100,
        "fetch bodies": 0,
    }
    assert grown < 2**20, grown


async def _growth(requests) -> int:
    """The bytes allocated and still held once every request of ``requests`` was answered
    (each checked to be what the test says: refused for an ACK, answered for a FETCH)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        async for answer in _answers(requests):
            assert answer["error"] or "messages" in answer, answer
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


async def _answers(requests):
    for request in requests:
        yield await request


async def test_the_leases_learned_are_bounded_per_agent_and_in_all(identities):
    ownership = identities.ownership
    ownership.leases_per_agent, ownership.leases_in_all = 8, 12
    await ok(identities, "alice", p.MAILBOX_CREATE, {"name": "a.box"})
    await ok(identities, "bob", p.MAILBOX_CREATE, {"name": "b.box"})
    for n in range(20):
        await ok(identities, "alice", p.MSG_ACK + "a.box", _ack("a.box", f"g{n}"))
    assert ownership.remembered() == {"alice": 8, "leases in all": 8, "fetch bodies": 0}
    for n in range(8):
        await ok(identities, "bob", p.MSG_ACK + "b.box", _ack("b.box", f"g{n}"))
    # the bound in all takes from whoever holds the most: bob gets a share beside alice's
    # (alice lost her oldest until bob held as many, then bob his own)
    assert ownership.remembered() == {"alice": 5, "bob": 7, "leases in all": 12, "fetch bodies": 0}

    # a lease forgotten (alice's g0, learned longest ago) is not open to anyone meanwhile,
    # and its owner's next FETCH of that group learns it again
    forgotten = leases.lease_address("a.box", "g0")
    refused = await ask(identities, "alice", p.MAILBOX_CREATE, {"name": forgotten})
    assert "CREATE refused" in refused["error"], refused
    refused = await ask(identities, "bob", p.MAILBOX_CREATE, {"name": forgotten})
    assert "CREATE refused" in refused["error"], refused
    await ok(identities, "alice", p.MSG_FETCH + "a.box", {"group_name": "g0"})
    await ok(identities, "alice", p.MAILBOX_CREATE, {"name": forgotten})
    refused = await ask(identities, "bob", p.MSG_FETCH + forgotten, {})
    assert "another agent" in refused["error"], refused
    assert ownership.remembered()["leases in all"] == 12


async def test_only_small_fetch_bodies_are_remembered(identities):
    await ok(identities, "alice", p.MAILBOX_CREATE, {"name": "a.box"})
    await ok(identities, "alice", p.MSG_SEND + "a.box", b"one")  # found at once: no wait
    padded = b'{"group_name": "g"' + b" " * FETCH_BODY_REMEMBERED + b"}"
    for _ in range(3):
        await ok(identities, "alice", p.MSG_FETCH + "a.box", padded)
    assert identities.ownership.remembered()["fetch bodies"] == 0
    assert identities.ownership.remembered()["leases in all"] == 1  # learned all the same
    await ok(identities, "alice", p.MSG_FETCH + "a.box", {"group_name": "g"})
    assert identities.ownership.remembered()["fetch bodies"] == 1
