"""#98 items 1, 2 and 6: an idempotency key is its sender's, and the keys held are bounded.

On a ``--credentials`` broker a key is held per mailbox *and sender*: mallory, who may SEND to
alice's mailbox, sends carol's next payload under carol's next key first. Before #98 carol was
told "stored" (``duplicate: true``, mallory's message) and alice's answer went to mallory; a
guess under carol's key was answered ``duplicate`` when right, refused when wrong: an oracle of
carol's payload. Now mallory's SEND is a key of her own, carol's is stored as carol's, and a
guess learns nothing (answered as any new key of one's own). Played on each store (memory,
SQLite, the cluster store on a real JetStream nats-server), through ``Identities.handle`` as
serve.py hands a credentialed request on.

The bounds: the keys a store in this process holds are capped in all and per sender
(``BrokerLimits.max_keys``, ``max_keys_per_sender``), refused in one line past either, room
again once windows end (a ``ManualClock``: nothing sleeps). The window itself is exact to the
millisecond (#98 item 5: a resend 1.2 s into a 2 s window was stored again).
"""

from __future__ import annotations

import json

import pytest

from mq9_broker import BrokerEngine, ManualClock
from mq9_broker.engine.limits import BrokerLimits
from mq9_broker.identities.store import IdentityStore
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import LimitReached, from_reply
from tests.platform.broker.identities.test_sender_vouched import Place, enforcing, senders

pytest.importorskip("nkeys")  # the credentials extra

BOX = "agent.alice"
KEY = {p.HEADER_IDEMPOTENCY_KEY: "bid-7"}


@pytest.fixture(params=["memory", "sqlite", pytest.param("jetstream", marks=pytest.mark.slow)])
async def place(request, tmp_path):
    made = Place(request.param, tmp_path)
    yield made
    await made.drop()


@pytest.fixture
def identity_store(tmp_path):
    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    for name in ("alice", "carol", "mallory"):
        store.issue(name)
    yield store
    store.close()


def _headers(key: dict[str, str], reply_to: str | None = None) -> dict[str, str]:
    return {**key, "mq9-reply-to": reply_to} if reply_to else dict(key)


async def test_another_agent_cannot_answer_for_your_key(place, identity_store):
    agents = enforcing(identity_store, await place.open())
    try:
        await agents.ok("alice", p.MAILBOX_CREATE, {"name": BOX})
        # mallory pre-empts carol's next SEND: her payload, her key, mallory's reply mailbox
        await agents.ok("mallory", p.MAILBOX_CREATE, {"name": "agent.mallory"})
        first = await agents.ok(
            "mallory", p.MSG_SEND + BOX, b"bid 100", _headers(KEY, "agent.mallory")
        )
        assert first["duplicate"] is False
        # carol's own SEND of it: stored as hers, never answered with mallory's message
        carols = await agents.ok("carol", p.MSG_SEND + BOX, b"bid 100", KEY)
        assert carols["duplicate"] is False and carols["msg_id"] != first["msg_id"]
        again = await agents.ok("carol", p.MSG_SEND + BOX, b"bid 100", KEY)  # her resend
        assert again == {**carols, "duplicate": True}
        messages = (await agents.ok("alice", p.MSG_QUERY + BOX, {}))["messages"]
        assert [senders(m["header"]) for m in messages] == [["mallory"], ["carol"]]
        # and whatever mallory holds under the key never blocks carol's next payloads
        other = await agents(
            "mallory", p.MSG_SEND + BOX, b"bid 1", _headers({p.HEADER_IDEMPOTENCY_KEY: "bid-8"})
        )
        assert other["error"] == ""
        assert (await agents.ok("carol", p.MSG_SEND + BOX, b"bid 101", {
            p.HEADER_IDEMPOTENCY_KEY: "bid-8"}))["duplicate"] is False  # fmt: skip
    finally:
        await place.stop(agents.engine)


async def test_a_guess_under_anothers_key_learns_nothing(place, identity_store):
    """carol bids under her key; each of mallory's guesses under it, right or wrong, is
    answered as a new key of mallory's own: the same answer, so it tells her nothing."""
    agents = enforcing(identity_store, await place.open())
    try:
        await agents.ok("alice", p.MAILBOX_CREATE, {"name": BOX})
        await agents.ok("carol", p.MSG_SEND + BOX, b"bid 123", KEY)
        answers = []
        for n, guess in enumerate((b"bid 122", b"bid 123", b"bid 124")):
            key = {p.HEADER_IDEMPOTENCY_KEY: "bid-7"} if n == 0 else KEY
            answers.append(await agents("mallory", p.MSG_SEND + BOX, guess, key))
        # the first guess is her key's first SEND; the later ones, other payloads under her
        # own key, refused as her own key reused: nothing of carol's in any answer
        assert answers[0]["error"] == "" and answers[0]["duplicate"] is False
        assert answers[1] == answers[2]  # the right guess answered as the wrong one
        assert "was used for another SEND" in answers[1]["error"]
        assert all("duplicate" not in a or a["duplicate"] is False for a in answers)
    finally:
        await place.stop(agents.engine)


# -- the bounds on the keys held (stores in this process) ----------------------------------------

T0 = 1_700_000_000


def _bounded(identity_store: IdentityStore, clock: ManualClock, **limits: int):
    engine = BrokerEngine(clock=clock, limits=BrokerLimits(idempotency_window=10, **limits))
    return enforcing(identity_store, engine)


async def test_keys_past_a_senders_bound_are_refused_in_one_line_and_others_go_on(
    identity_store,
):
    clock = ManualClock(T0)
    agents = _bounded(identity_store, clock, max_keys=5, max_keys_per_sender=2)
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": BOX})
    for n in range(2):
        await agents.ok("mallory", p.MSG_SEND + BOX, b"x", {p.HEADER_IDEMPOTENCY_KEY: f"m{n}"})
    refused = await agents("mallory", p.MSG_SEND + BOX, b"x", {p.HEADER_IDEMPOTENCY_KEY: "m2"})
    error = from_reply(refused["error"], p.MSG_SEND + BOX)
    assert isinstance(error, LimitReached) and "\n" not in refused["error"]
    # #106: her own bound, in words, and no count of anyone's (a gateway passes it on)
    assert "key (you hold as many keys as one sender may, each kept 10 s)" in refused["error"]
    # a key she holds still answers, and a SEND without a key still goes
    assert (await agents.ok("mallory", p.MSG_SEND + BOX, b"x", {
        p.HEADER_IDEMPOTENCY_KEY: "m0"}))["duplicate"] is True  # fmt: skip
    await agents.ok("mallory", p.MSG_SEND + BOX, b"plain")
    # carol is not held back by mallory's keys
    await agents.ok("carol", p.MSG_SEND + BOX, b"y", {p.HEADER_IDEMPOTENCY_KEY: "c0"})
    assert agents.engine.keys_refused == 1
    clock.advance(10)  # mallory's windows end: room again
    await agents.ok("mallory", p.MSG_SEND + BOX, b"x", {p.HEADER_IDEMPOTENCY_KEY: "m2"})


async def test_keys_past_the_brokers_bound_are_refused_and_counted(identity_store):
    clock = ManualClock(T0)
    agents = _bounded(identity_store, clock, max_keys=3, max_keys_per_sender=10)
    await agents.ok("alice", p.MAILBOX_CREATE, {"name": BOX})
    for n, who in enumerate(("alice", "carol", "mallory")):
        await agents.ok(who, p.MSG_SEND + BOX, b"x", {p.HEADER_IDEMPOTENCY_KEY: f"k{n}"})
    refused = await agents("carol", p.MSG_SEND + BOX, b"x", {p.HEADER_IDEMPOTENCY_KEY: "k9"})
    # (#106) no count of what others hold
    assert "key (this broker holds as many keys as it may, each kept 10 s)" in refused["error"]
    assert len(agents.engine.store.sent_keys) == 3


async def test_an_open_broker_bounds_its_keys_too():
    clock = ManualClock(T0)
    engine = BrokerEngine(clock=clock, limits=BrokerLimits(idempotency_window=10, max_keys=2))
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"open.box"}')

    async def send(key: str) -> dict:
        headers = {p.HEADER_IDEMPOTENCY_KEY: key}
        return json.loads(await engine.handle(p.MSG_SEND + "open.box", headers, b"x"))

    assert [(await send(k))["error"] for k in ("a", "b")] == ["", ""]
    assert "no room for another idempotency key" in (await send("c"))["error"]
    assert (await send("a"))["duplicate"] is True  # held keys still answer


async def test_the_window_is_exact_to_the_millisecond():
    """A 2 s window, the first SEND 0.9 s into a second: a resend 1.2 s later (the next whole
    second but one) is the same SEND; 2 s after the first, the key is new."""
    clock = ManualClock(T0 + 0.9)
    engine = BrokerEngine(clock=clock, limits=BrokerLimits(idempotency_window=2))
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"exact.box"}')
    headers = {p.HEADER_IDEMPOTENCY_KEY: "k"}

    async def send() -> dict:
        return json.loads(await engine.handle(p.MSG_SEND + "exact.box", headers, b"x"))

    first = await send()
    clock.advance(1.2)
    assert await send() == {**first, "duplicate": True}
    clock.advance(0.799)  # 1.999 s after the first
    assert (await send())["duplicate"] is True
    clock.advance(0.001)  # the window's end
    assert (await send())["duplicate"] is False
