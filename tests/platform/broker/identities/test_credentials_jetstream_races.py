"""#77 items 4 and 5 as reported, on the deployment docs/deploy.md describes: three
nats-servers configured by ``credentials setup`` and two ``mq9-dev-broker --store jetstream
--credentials`` brokers serving at once (test_credentials_jetstream.py's ``Deployment``);
agents on raw nats-py connections with their own credentials, NATS handing each request to
either broker:

- alice and bob CREATE one name at once, round after round: exactly one is told it was made,
  the other is refused as another's (the report: both told so in 2 of 60 rounds);
- an owner's group FETCH, then the CREATE of that group's lease and a SEND into it (what a
  ``GroupReader`` does first), then her task store and dead letters, round after round: never
  refused (the report: ``CREATE refused: 'mq9.lease.…' is derived from a mailbox … that is
  not yours`` once); bob's CREATE of them is refused.
"""

from __future__ import annotations

import asyncio

import pytest

from mq9_wire import protocol as p
from mq9_wire.protocol import names
from testbed.support.credentials_support import ask, ok
from tests.platform.broker.identities.test_credentials_jetstream import Deployment

pytestmark = pytest.mark.slow  # three nats-servers and two brokers
pytest.importorskip("nkeys")

ROUNDS = 30


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    made = Deployment(tmp_path_factory.mktemp("races"))
    yield made
    made.close()


async def test_alice_and_bob_racing_one_name_one_is_told_it_was_made(deployment):
    alice, bob = await deployment.agent("alice"), await deployment.agent("bob")
    try:
        for n in range(ROUNDS):
            name = f"raced.{n}"
            create = {"name": name, "ttl": 0}
            answers = await asyncio.gather(
                ask(alice, "alice", p.MAILBOX_CREATE, create),
                ask(bob, "bob", p.MAILBOX_CREATE, create),
            )
            pairs = zip(("alice", "bob"), answers, strict=True)
            made = [who for who, reply in pairs if reply["error"] == ""]
            assert len(made) == 1, (n, answers)
            refused = [reply["error"] for reply in answers if reply["error"]]
            assert refused == [f"CREATE refused: mailbox '{name}' belongs to another agent"]
            winner = alice if made == ["alice"] else bob
            await ok(winner, made[0], p.MSG_SEND + name, b"mine")
    finally:
        await alice.close()
        await bob.close()


async def test_an_owners_first_fetch_and_lease_are_never_refused(deployment):
    alice, bob = await deployment.agent("alice"), await deployment.agent("bob")
    try:
        for n in range(ROUNDS):
            box = f"agent.billing.{n}"
            await ok(alice, "alice", p.MAILBOX_CREATE, {"name": box, "ttl": 0})
            fetch = {"group_name": "workers", "deliver": "earliest", "config": {"max_wait_ms": 0}}
            await ok(alice, "alice", p.MSG_FETCH + box, fetch)
            lease = names.lease_address(box, "workers")
            for name in (lease, names.task_store_address(box), names.dead_letter_address(box)):
                await ok(alice, "alice", p.MAILBOX_CREATE, {"name": name, "ttl": 0})
                await ok(alice, "alice", p.MSG_SEND + name, b"claim")
                refused = await ask(bob, "bob", p.MAILBOX_CREATE, {"name": name, "ttl": 0})
                assert refused["error"].startswith("CREATE refused:"), (name, refused)
    finally:
        await alice.close()
        await bob.close()
