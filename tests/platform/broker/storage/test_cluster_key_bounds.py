"""#113: the cluster store bounds the idempotency keys one sender holds, counted by JetStream
(storage/jetstream/key_counts.py), shared by every broker of a layout and kept across restarts.

Before, it counted none (docs/security.md): one agent sending keyed SENDs, and acking or
deleting the messages so no mailbox bound stops it, piled up key entries for the window until
the stream's storage limit refused everyone. Two brokers in this process, each an ``Engine``
on its own connection to one layout, requests handed on through ``Identities.handle`` (the
sender vouched for, as serve.py hands a credentialed request on):

- mallory's new keys through both brokers are refused past ``--max-keys-per-sender`` in one
  line, the words the memory and SQLite stores say; her keys held still answer duplicate, and
  carol's new key is taken;
- a broker closed and opened again still counts them;
- the window's end frees her room;
- 2N new keys of hers sent at once through both brokers: exactly N stored;
- a carrier's caller past its share, through both brokers, is refused alone.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from mq9_broker.engine.engine import Engine
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.identities.gate import Identities
from mq9_broker.identities.kv_store import KvIdentityStore
from mq9_broker.storage.jetstream import ClusterStore
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import LimitReached, from_reply
from mq9_wire.protocol.messages import HEADER_KEY_CALLER, HEADER_KEY_SHARE
from testbed.support.jetstream_servers import close_store, open_store
from testbed.support.waiting import until
from tests.platform.broker.identities.test_sender_vouched import Agents

pytestmark = pytest.mark.slow  # a nats-server process
pytest.importorskip("nkeys")  # the credentials extra

BOX = "agent.alice"
MOST = 3  # --max-keys-per-sender
FULL = "key (you hold as many keys as one sender may, each kept"  # the other stores' words


class Rig:
    """Brokers of one layout, each its store, identities and engine."""

    def __init__(self, servers: list[str], limits: BrokerLimits) -> None:
        self.servers, self.limits = servers, limits
        self.layout = f"T{uuid.uuid4().hex[:10]}"
        self.brokers: list[tuple[ClusterStore, KvIdentityStore, Agents]] = []
        self.issued = False

    async def start(self) -> Agents:
        """One more broker of the layout; its requests."""
        store = await open_store(self.servers, self.layout)
        identities = KvIdentityStore(self.servers, stream=self.layout, replicas=1)
        if not self.issued:  # (the layout's identities, kept across restarts)
            for name in ("alice", "carol", "mallory", "gw"):
                identities.issue(name)
            self.issued = True
        agents = Agents(Identities(identities, Engine(store, limits=self.limits, search=False)))
        self.brokers.append((store, identities, agents))
        return agents

    async def stop(self, agents: Agents) -> None:
        """The broker of ``agents`` stops: what its layout keeps stays."""
        for made in self.brokers:
            if made[2] is agents:
                self.brokers.remove(made)
                await close_store(made[0])
                made[1].close()
                return

    async def close(self) -> None:
        for _, _, agents in list(self.brokers):
            await self.stop(agents)


@pytest.fixture(scope="module")
def servers(shared_jetstream: list[str]) -> list[str]:
    # the session's JetStream server: nothing here kills, restarts or reconfigures it
    return shared_jetstream


async def _rig(servers: list[str], most: int = MOST, **limits: int) -> tuple[Rig, Agents, Agents]:
    rig = Rig(servers, BrokerLimits(max_keys_per_sender=most, **limits))
    first, second = await rig.start(), await rig.start()
    await first.ok("alice", p.MAILBOX_CREATE, {"name": BOX, "ttl": 0})
    return rig, first, second


@pytest.fixture
async def rig(servers: list[str]) -> AsyncIterator[tuple[Rig, Agents, Agents]]:
    made = await _rig(servers)
    try:
        yield made
    finally:
        await made[0].close()


def _keyed(key: str) -> dict[str, str]:
    return {p.HEADER_IDEMPOTENCY_KEY: key}


async def _send(agents: Agents, who: str, key: str, payload: bytes = b"bid") -> dict:
    return await agents(who, p.MSG_SEND + BOX, payload, _keyed(key))


def _refused_as_full(answer: dict) -> bool:
    error = answer["error"]
    if not error:
        return False
    assert isinstance(from_reply(error, p.MSG_SEND + BOX), LimitReached), error
    assert "\n" not in error and FULL in error, error
    return True


async def _stored(agents: Agents) -> int:
    answer = await agents.ok("alice", p.MSG_QUERY + BOX, {"limit": 1000})
    return len(answer["messages"])


async def test_a_senders_keys_through_two_brokers_are_refused_past_its_bound(rig):
    _, first, second = rig
    for n in range(MOST):  # mallory's keys, through either broker
        via = first if n % 2 == 0 else second
        answer = await _send(via, "mallory", f"m{n}")
        assert answer["error"] == "" and answer["duplicate"] is False, answer
        # (acked at once: no mailbox bound would stop her)
        assert await via.ok("alice", p.MSG_DELETE + BOX + f".{answer['msg_id']}") is not None
    for via in (first, second):
        assert _refused_as_full(await _send(via, "mallory", "m-next"))
    # a key she holds still answers duplicate, through either broker
    for via in (first, second):
        again = await _send(via, "mallory", "m0")
        assert again["error"] == "" and again["duplicate"] is True, again
    # and her SEND without a key still goes, as carol's new key does
    await first.ok("mallory", p.MSG_SEND + BOX, b"plain")
    carols = await _send(second, "carol", "c0")
    assert carols["error"] == "" and carols["duplicate"] is False, carols
    # the duplicates gave their room back: still refused past MOST, no further
    assert _refused_as_full(await _send(second, "mallory", "m-next"))


async def test_a_restarted_broker_still_counts_a_senders_keys(rig):
    made, first, second = rig
    for n in range(MOST):
        await first.ok("mallory", p.MSG_SEND + BOX, b"bid", _keyed(f"m{n}"))
    await made.stop(first)
    await made.stop(second)
    again = await made.start()  # every broker of the layout restarted
    assert _refused_as_full(await _send(again, "mallory", "m-next"))
    assert (await _send(again, "mallory", "m1"))["duplicate"] is True


async def test_the_window_ending_frees_a_senders_room(servers):
    made, first, second = await _rig(servers, idempotency_window=2)
    try:
        for n in range(MOST):
            await first.ok("mallory", p.MSG_SEND + BOX, b"bid", _keyed(f"m{n}"))
        assert _refused_as_full(await _send(second, "mallory", "m-next"))

        async def taken() -> bool:
            return not _refused_as_full(await _send(second, "mallory", "m-next"))

        await until(taken, timeout=30, what="mallory's room again once her windows end")
    finally:
        await made.close()


async def test_new_keys_sent_at_once_through_two_brokers_store_exactly_the_bound(rig):
    _, first, second = rig
    sends = [_send(first if n % 2 else second, "mallory", f"m{n}") for n in range(2 * MOST)]
    answers = await asyncio.gather(*sends)
    taken = [answer for answer in answers if not _refused_as_full(answer)]
    assert len(taken) == MOST, answers
    assert await _stored(first) == MOST


async def test_a_carriers_caller_past_its_share_through_two_brokers_is_refused_alone(servers):
    made, first, second = await _rig(servers, most=2 * MOST + 1)  # (the carrier's own bound)
    try:

        def keyed(key: str, caller: str) -> dict[str, str]:
            return {**_keyed(key), HEADER_KEY_CALLER: caller, HEADER_KEY_SHARE: str(MOST)}

        send = p.MSG_SEND + BOX
        for n in range(MOST):  # (each through another broker: as the carrier's replicas send)
            await (first if n % 2 else second).ok("gw", send, b"x", keyed(f"m{n}", "mallory"))
        for via in (first, second):
            refused = (await via("gw", send, b"x", keyed("m-next", "mallory")))["error"]
            assert isinstance(from_reply(refused, send), LimitReached), refused
            assert "as many keys as your share of your carrier's" in refused
        # another caller of the same carrier is answered
        await second.ok("gw", send, b"x", keyed("a0", "alice"))
    finally:
        await made.close()
