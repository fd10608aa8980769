"""#77 items 4 and 5: ownership on the cluster store decided by JetStream, not by a read then a
write. Two brokers in this process, each an ``Engine`` on its own connection to one layout
and an ``Identities`` on its own view of one identities bucket, neither following the other's
records (a broker whose watch has not yet brought what the other just wrote: the moment the
reported races fell in, made to last), requests handed on as ``serve.py`` hands them:

- alice and bob CREATE one name at once, one through each broker, round after round: exactly
  one is told it was made, the other is refused as another's (it was told "already exists",
  which a client takes for done);
- bob's CREATE of a name alice made through the other broker a moment before: refused as hers;
- an owner's derived names (a group's lease learned from her FETCH, her task store, her dead
  letters) created through the broker that did not see her mailbox made or read: never
  refused; bob's CREATE of them: refused;
- a claim whose CREATE was refused (the mailbox bound) is undone: the name is nobody's.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from nats.aio.msg import Msg

from mq9_broker.engine.engine import Engine
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.identities.gate import Identities
from mq9_broker.identities.kv_store import KvIdentityStore
from mq9_broker.storage.jetstream import ClusterStore
from mq9_wire import protocol as p
from mq9_wire.protocol import names
from testbed.support.jetstream_servers import close_store, open_store

pytestmark = pytest.mark.slow  # a nats-server process
pytest.importorskip("nkeys")  # the credentials extra

ROUNDS = 30  # names alice and bob race for


@dataclass
class Broker:
    store: ClusterStore
    identities: Identities

    async def ask(self, who: str, subject: str, body: dict | bytes = b"") -> dict:
        raw = body if isinstance(body, bytes) else p.encode(body)
        msg = Msg(None, subject=subject, reply=f"_INBOX.{who}.r.1", data=raw)  # type: ignore[arg-type]
        return json.loads(await self.identities.handle(self.identities.ownership.engine, msg))


@pytest.fixture(scope="module")
def servers(shared_jetstream: list[str]) -> list[str]:
    # the session's JetStream server: nothing here kills, restarts or reconfigures it
    return shared_jetstream


async def _brokers(servers: list[str], limits: BrokerLimits) -> list[Broker]:
    layout = f"T{uuid.uuid4().hex[:10]}"
    made = []
    for _ in range(2):
        store = await open_store(servers, layout)
        identities = KvIdentityStore(servers, stream=layout, replicas=1)
        if not made:
            for name in ("alice", "bob"):
                identities.issue(name)
        serving = Engine(store, limits=limits, search=False)
        made.append(Broker(store, Identities(identities, serving)))
    return made


async def close_brokers(made: list[Broker]) -> None:
    """Each broker's store and identities closed (what they wrote stays)."""
    for broker in made:
        await close_store(broker.store)
        broker.identities.store.close()


@pytest.fixture
async def brokers(servers: list[str]) -> AsyncIterator[list[Broker]]:
    made = await _brokers(servers, BrokerLimits())
    try:
        yield made
    finally:
        await close_brokers(made)


def _made(reply: dict) -> bool:
    return reply["error"] == ""


async def test_two_agents_racing_one_name_through_two_brokers_one_is_told_it_was_made(brokers):
    first, second = brokers
    for round_number in range(ROUNDS):
        name = f"race.{round_number}"
        # (alice through the first broker in even rounds, through the second in odd ones)
        via = (first, second) if round_number % 2 == 0 else (second, first)
        alice, bob = await asyncio.gather(
            via[0].ask("alice", p.MAILBOX_CREATE, {"name": name, "ttl": 0}),
            via[1].ask("bob", p.MAILBOX_CREATE, {"name": name, "ttl": 0}),
        )
        assert _made(alice) != _made(bob), (round_number, alice, bob)
        loser = bob if _made(alice) else alice
        assert loser["error"] == f"CREATE refused: mailbox '{name}' belongs to another agent"
        winner = "alice" if _made(alice) else "bob"
        owner = await first.identities.store.owner("mailbox", name)
        assert owner == winner
        # the legitimate use beside: the winner reads it through either broker, the loser not
        for broker in brokers:
            assert _made(await broker.ask(winner, p.MSG_FETCH + name, {"config": {}}))
        other = "bob" if winner == "alice" else "alice"
        refused = await second.ask(other, p.MSG_FETCH + name, {"config": {}})
        assert "belongs to another agent" in refused["error"]


async def test_a_name_made_through_one_broker_is_refused_to_another_through_the_other(brokers):
    first, second = brokers
    assert _made(await first.ask("alice", p.MAILBOX_CREATE, {"name": "a.box", "ttl": 0}))
    bob = await second.ask("bob", p.MAILBOX_CREATE, {"name": "a.box", "ttl": 0})
    assert bob["error"] == "CREATE refused: mailbox 'a.box' belongs to another agent"
    again = await second.ask("alice", p.MAILBOX_CREATE, {"name": "a.box", "ttl": 0})
    assert again["error"] == p.err_mailbox_exists("a.box")  # her own, as RobustMQ says


async def test_an_owners_derived_names_are_hers_through_the_broker_that_did_not_see_them(brokers):
    first, second = brokers
    for n in range(10):
        box = f"agent.billing.{n}"
        assert _made(await first.ask("alice", p.MAILBOX_CREATE, {"name": box, "ttl": 0}))
        fetch = {"group_name": "workers", "deliver": "earliest", "config": {"max_wait_ms": 0}}
        assert _made(await first.ask("alice", p.MSG_FETCH + box, fetch))
        lease = names.lease_address(box, "workers")
        derived = [lease, names.task_store_address(box), names.dead_letter_address(box)]
        # (bob first in even rounds: he takes nothing, and alice's come after; in odd ones
        # alice's first, through a broker that learned nothing of her mailbox)
        for who in ("bob", "alice") if n % 2 == 0 else ("alice", "bob"):
            for name in derived:
                reply = await second.ask(who, p.MAILBOX_CREATE, {"name": name, "ttl": 0})
                if who == "bob":
                    assert reply["error"].startswith("CREATE refused:"), (name, reply)
                    assert "belongs to another agent" in reply["error"], (name, reply)
                    continue
                assert _made(reply), (name, reply)
                sent = await second.ask("alice", p.MSG_SEND + name, b"claim")
                assert _made(sent), (name, sent)


async def test_a_claim_whose_create_was_refused_is_undone(servers):
    made = await _brokers(servers, BrokerLimits(max_mailboxes=1))
    try:
        first, second = made
        assert _made(await first.ask("alice", p.MAILBOX_CREATE, {"name": "only", "ttl": 0}))
        refused = await second.ask("alice", p.MAILBOX_CREATE, {"name": "second", "ttl": 0})
        assert refused["error"] == p.err_mailbox_limit(1)
        assert await first.identities.store.owner("mailbox", "second") is None
        assert "second" not in second.identities.ownership.mailboxes
        # bob is told the bound, as alice was, not that the name is hers
        bob = await first.ask("bob", p.MAILBOX_CREATE, {"name": "second", "ttl": 0})
        assert bob["error"] == p.err_mailbox_limit(1)
    finally:
        await close_brokers(made)
