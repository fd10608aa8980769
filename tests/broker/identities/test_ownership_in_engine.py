"""#74: ownership is made by the engine as part of answering (each command's entry in its table
names its check and record, engine/owned.py), not around it. On a real ``BrokerEngine``,
requests handed on as ``serve.py`` hands them after the gate (``Identities.handle``):

- what a CREATE makes is its creator's before it is made: its owner record is claimed first,
  also in a store that waits (the cluster's bucket, #77): another agent's request in that
  moment finds no mailbox, or another's, never nobody's;
- a name two agents register at once is owned by the one whose card the registry keeps (the
  other told it is another's, or, when both were checked first, that it was done: a taken
  name keeps its first card);
- asked without a requester (an open broker), the engine checks nothing;
- a check reads only what it asks (#81): whether a mailbox exists only of one nobody owns,
  nothing before a SEND to an ordinary mailbox, an ACK's body once.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from nats.aio.msg import Msg

from mq9_broker import BrokerEngine
from mq9_broker.identities.gate import Identities
from mq9_broker.identities.kv_store import KvIdentityStore
from mq9_broker.identities.store import BaseIdentityStore, IdentityStore
from mq9_wire import protocol as p
from testbed.support.jetstream_servers import JetStreamCluster

pytest.importorskip("nkeys")  # the credentials extra

NAMES = 20  # agent names registered by two agents at once


async def ask(identities: Identities, who: str, subject: str, body: dict | bytes = b"") -> dict:
    raw = body if isinstance(body, bytes) else p.encode(body)
    msg = Msg(None, subject=subject, reply=f"_INBOX.{who}.r.1", data=raw)  # type: ignore[arg-type]
    return json.loads(await identities.handle(identities.ownership.engine, msg))


def _issued(store: BaseIdentityStore) -> BaseIdentityStore:
    for name in ("alice", "bob"):
        store.issue(name)
    return store


@pytest.fixture
def sqlite_store(tmp_path):
    store = _issued(IdentityStore(tmp_path / "mq9-identities.sqlite3"))
    yield store
    store.close()


@pytest.mark.slow
async def test_a_mailbox_is_its_creators_while_its_record_is_written():
    """The KV store's write waits for the cluster: bob's FETCH, answered meanwhile, finds no
    mailbox yet, or alice's (it found it nobody's when the record was made after the engine's
    answer, from outside it)."""
    with JetStreamCluster(1) as cluster:
        store = _issued(KvIdentityStore(cluster.urls, stream=f"T{uuid.uuid4().hex[:12]}"))
        try:
            identities = Identities(store, BrokerEngine())
            made, read = await asyncio.gather(
                ask(identities, "alice", p.MAILBOX_CREATE, {"name": "a.box"}),
                ask(identities, "bob", p.MSG_FETCH + "a.box", {}),
            )
            assert made == {"error": "", "mail_address": "a.box"}
            assert read["error"].startswith(
                ("FETCH refused: mailbox 'a.box' belongs to another", p.err_topic_missing("a.box"))
            ), read
            assert await store.owner("mailbox", "a.box") == "alice"
        finally:
            store.close()


async def test_a_name_registered_by_two_at_once_is_the_one_kept_registrants(sqlite_store):
    identities = Identities(sqlite_store, BrokerEngine())
    names = [f"agent.{n}" for n in range(NAMES)]
    # alice first for even names, bob first for odd ones
    answers = await asyncio.gather(
        *(
            ask(identities, who, p.AGENT_REGISTER, {"name": name, "payload": f"{who}'s card"})
            for n, name in enumerate(names)
            for who in (("alice", "bob") if n % 2 == 0 else ("bob", "alice"))
        )
    )
    for name, pair in zip(names, zip(answers[::2], answers[1::2], strict=True), strict=True):
        taken = f"REGISTER refused: agent {p.quoted(name)} is registered by another agent"
        assert pair[0]["error"] == "" and pair[1]["error"] in ("", taken), (name, pair)
    listing = await ask(identities, "alice", p.AGENT_DISCOVER, {})
    cards = {entry["name"]: entry["agent_info"] for entry in listing["agents"]}
    _, owners, _ = sqlite_store.owners()
    for name in names:
        assert cards[name] == f"{owners[name]}'s card", name
        other = "bob" if owners[name] == "alice" else "alice"
        refused = await ask(identities, other, p.AGENT_UNREGISTER, {"name": name})
        assert refused["error"].startswith("UNREGISTER refused"), refused


async def test_the_engine_asked_without_a_requester_checks_nothing(sqlite_store):
    engine = BrokerEngine()
    identities = Identities(sqlite_store, engine)
    assert (await ask(identities, "alice", p.MAILBOX_CREATE, {"name": "a.box"}))["error"] == ""
    assert (await ask(identities, "bob", p.MSG_FETCH + "a.box", {}))["error"].startswith(
        "FETCH refused"
    )
    open_answer = json.loads(await engine.handle(p.MSG_FETCH + "a.box", None, p.encode({})))
    assert open_answer == {"error": "", "messages": []}


# -- what an enforcing broker reads for its checks, and no more (#81) ---------------------------


class _Counted:
    """Counts the engine's looks at its store for the checks (``Engine.look_up``)."""

    def __init__(self, engine: BrokerEngine) -> None:
        self.looks: list[object] = []
        look_up = engine.look_up

        async def counted(named):  # type: ignore[no-untyped-def]
            self.looks.append(named)
            await look_up(named)

        engine.look_up = counted  # type: ignore[method-assign]


async def test_a_check_reads_whether_a_mailbox_exists_only_of_one_nobody_owns(sqlite_store):
    engine = BrokerEngine(search=False)
    identities = Identities(sqlite_store, engine)
    assert (await ask(identities, "alice", p.MAILBOX_CREATE, {"name": "a.box"}))["error"] == ""
    counted = _Counted(engine)
    # owned: alice's FETCH and bob's both decided by the owner, nothing read
    assert (await ask(identities, "alice", p.MSG_FETCH + "a.box", {}))["error"] == ""
    refused = await ask(identities, "bob", p.MSG_FETCH + "a.box", {})
    assert refused["error"] == "FETCH refused: mailbox 'a.box' belongs to another agent"
    # any agent may SEND to an ordinary mailbox: nothing read before its check
    assert (await ask(identities, "bob", p.MSG_SEND + "a.box", b"hi"))["error"] == ""
    assert counted.looks == []
    # nobody's (made before the broker enforced): whether it exists is read, and refused
    await engine.handle(p.MAILBOX_CREATE, None, p.encode({"name": "old.box"}))
    unowned = await ask(identities, "bob", p.MSG_QUERY + "old.box", {})
    assert unowned["error"].startswith("QUERY refused: mailbox 'old.box' has no owner"), unowned
    # a mailbox derived from alice's (its dead letters): its existence is asked before a SEND
    dead = await ask(identities, "bob", p.MSG_SEND + "a.box.dlq", b"x")
    assert len(counted.looks) == 2, counted.looks
    assert dead["error"] == "" or dead["error"].startswith("SEND refused"), dead


async def test_an_acks_body_is_read_once_for_its_handler_and_its_ownership(
    sqlite_store, monkeypatch
):
    engine = BrokerEngine(search=False)
    identities = Identities(sqlite_store, engine)
    assert (await ask(identities, "alice", p.MAILBOX_CREATE, {"name": "a.box"}))["error"] == ""
    assert (await ask(identities, "alice", p.MSG_SEND + "a.box", b"one"))["error"] == ""
    reads = []
    read = p.ACK_REQUEST.read
    monkeypatch.setattr(p.ACK_REQUEST, "read", lambda body: reads.append(body) or read(body))
    body = {"group_name": "g", "mail_address": "a.box", "msg_id": 0}
    assert (await ask(identities, "alice", p.MSG_ACK + "a.box", body))["error"] == ""
    assert len(reads) == 1  # the handler's, the mailbox's and the group's lease's: one read
    refused = await ask(identities, "bob", p.MSG_ACK + "a.box", body)
    assert refused["error"] == "ACK refused: mailbox 'a.box' belongs to another agent"
    bad = await ask(identities, "alice", p.MSG_ACK + "a.box", b'{"group_name": 7}')
    assert bad["error"] and "ACK refused" not in bad["error"], bad  # the engine's words
