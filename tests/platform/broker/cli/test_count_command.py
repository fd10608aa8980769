"""#99: the bundled broker's count of a mailbox (``$mq9.AI.MSG.COUNT.<mailbox>``,
engine/counting.py), what the console counts a mailbox with where no read of the protocol
reaches its end. Each lane's live messages (a key's older message replaced, a deleted one and
an expired one gone, a delayed one not yet due not there) and the newest msg_id; an unknown
mailbox answered as a QUERY is; on an enforcing broker, owned as a QUERY: another agent's
mailbox is refused by name, its owner counts it. (On the cluster store:
tests/cli/console/test_console_mixed_counts.py counts 100,000 there.)"""

from __future__ import annotations

import json

import pytest
from nats.aio.msg import Msg

from mq9_broker import BrokerEngine
from mq9_broker.state.clock import ManualClock
from mq9_platform import Mq9Client
from mq9_platform.client.transport import MemoryTransport
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import MailboxNotFound
from mq9_wire.protocol.subjects import count_subject


async def test_a_count_is_each_lanes_live_messages_and_the_newest_id():
    clock = ManualClock()
    engine = BrokerEngine(search=False, clock=clock)
    async with Mq9Client(transport=MemoryTransport(engine)) as client:
        await client.mailbox_create(name="team.count")
        await client.send("team.count", "a", priority="critical")
        for n in range(3):
            await client.send("team.count", f"u{n}", priority="urgent")
        gone = await client.send("team.count", "deleted")
        await client.send("team.count", "old", key="k")
        await client.send("team.count", "new", key="k")  # replaces "old"
        await client.send("team.count", "short", ttl=5)
        await client.send("team.count", "later", delay=3600)
        newest = await client.send("team.count", "last")
        await client.delete("team.count", gone)
        clock.advance(10)  # "short" expired
        counts, top = await client.lane_counts("team.count")
        assert counts == {"critical": 1, "urgent": 3, "normal": 2}  # "new" and "last"
        assert top == newest
        with pytest.raises(MailboxNotFound):
            await client.lane_counts("no.such.box")
    answer = json.loads(await engine.handle(count_subject("no.such.box"), None, b"{}"))
    assert answer == {"error": p.err_topic_missing("no.such.box")}


async def test_on_an_enforcing_broker_a_count_is_its_owners(tmp_path):
    pytest.importorskip("nkeys")  # the credentials extra
    from mq9_broker.identities.gate import Identities
    from mq9_broker.identities.store import IdentityStore

    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    for name in ("alice", "bob"):
        store.issue(name)
    try:
        identities = Identities(store, BrokerEngine(search=False))

        async def ask(who: str, subject: str, body: dict) -> dict:
            msg = Msg(None, subject=subject, reply=f"_INBOX.{who}.r.1", data=p.encode(body))  # type: ignore[arg-type]
            return json.loads(await identities.handle(identities.ownership.engine, msg))

        assert (await ask("alice", p.MAILBOX_CREATE, {"name": "a.box"}))["error"] == ""
        refused = await ask("bob", count_subject("a.box"), {})
        assert refused["error"].startswith("QUERY refused: mailbox 'a.box' belongs to another")
        assert "counts" not in refused
        owned = await ask("alice", count_subject("a.box"), {})
        assert owned == {"error": "", "counts": {"critical": 0, "urgent": 0, "normal": 0},
                         "newest_id": None, "scheduled": 0, "next_due": None}  # fmt: skip
    finally:
        store.close()
