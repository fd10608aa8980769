"""#53: the attacks of an agent holding a DIFFERENT agent's valid credential, with a raw nats-py
client, on a real nats-server started by ``mq9-dev-broker --credentials``. Each is refused
(by nats-server's permissions or by the broker's ownership checks), nothing changes (checked
with the owner's credential), and with the owner's credential all of it still works. The
hostile bodies of test_hostile_requests.py get the same clear answers through the gate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

import nats
import pytest

from mq9_broker.identities.gate import MARKER
from mq9_broker.identities.ownership import WAKE_FAILED, digest
from mq9_broker.identities.store import IdentityStore, identities_file
from mq9_platform.a2a import mail as wire
from mq9_platform.groups import dead_letters, leases
from mq9_wire import protocol as p
from mq9_wire.nats_floor.guard import flush_in_order
from testbed.support.credentials_support import EnforcingBroker, ask, issue, ok, on_close, revoke
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.raw_nats import socket_request
from testbed.support.waiting import until
from tests.platform.broker.engine.test_hostile_requests import BAD_BYTES, CASES, ESCAPE

pytestmark = pytest.mark.slow  # a dev broker and its nats-server (tests/conftest.py's rule)
pytest.importorskip("nkeys")

AGENTS = ("alice", "bob", "carol", "dave", "erin")
SILENCE = 1.0  # how long a dropped or denied request is given to show an answer (none comes)


@pytest.fixture(scope="module")
def enforcing(tmp_path_factory):
    broker = EnforcingBroker(tmp_path_factory.mktemp("enforcing"), *AGENTS)
    yield broker
    broker.kill()


class Denials:
    """The asynchronous errors nats-server sends a connection (permission violations)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.seen.append(str(exc))

    async def at_least(self, count: int, what: str, timeout: float = 15.0) -> None:
        """Wait on the loop (which delivers them) until ``count`` errors came."""
        seen = self.seen
        await until(lambda: len(seen) >= count, timeout=timeout, what=what, show=lambda: seen)


async def _quiet(coro) -> None:
    """``coro`` (a request) must get no answer."""
    with pytest.raises((nats.errors.TimeoutError, nats.errors.NoRespondersError)):
        await coro


def _refused(reply: dict, *words: str) -> None:
    assert reply["error"], reply
    assert "internal broker error" not in reply["error"], reply
    assert all(word in reply["error"] for word in words), reply


async def _payloads(connection, principal: str, mailbox: str) -> list[str]:
    found = await ok(connection, principal, p.MSG_QUERY + mailbox, {})
    return [m["payload"] for m in found["messages"]]


async def test_another_agents_mailbox_is_refused_and_unchanged(enforcing):
    alice, bob = await enforcing.agent("alice"), await enforcing.agent("bob")
    try:
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "a1.inbox"})
        await ok(bob, "bob", p.MSG_SEND + "a1.inbox", b"hello from bob")  # anyone may SEND
        ack = {"group_name": "g", "mail_address": "a1.inbox", "msg_id": 0}
        for subject, body, verb in (
            (p.MSG_FETCH + "a1.inbox", {"group_name": "g"}, "FETCH"),
            (p.MSG_QUERY + "a1.inbox", {}, "QUERY"),
            (p.MSG_ACK + "a1.inbox", ack, "ACK"),
            (p.delete_subject("a1.inbox", 0), b"", "DELETE"),
            (p.MAILBOX_CREATE, {"name": "a1.inbox"}, "CREATE"),
        ):
            _refused(await ask(bob, "bob", subject, body), f"{verb} refused", "another agent")
        # nothing changed: the message is there and no group moved past it
        fetched = await ok(alice, "alice", p.MSG_FETCH + "a1.inbox", {"group_name": "g"})
        assert [m["payload"] for m in fetched["messages"]] == ["hello from bob"]
        # the owner's credential does all of it
        await ok(alice, "alice", p.MSG_ACK + "a1.inbox", ack)
        assert (await ok(alice, "alice", p.MSG_FETCH + "a1.inbox", {"group_name": "g"}))[
            "messages"
        ] == []
        assert (await ok(alice, "alice", p.delete_subject("a1.inbox", 0)))["deleted"] is True
        assert await _payloads(alice, "alice", "a1.inbox") == []
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def test_forging_into_a_reply_mailbox_or_task_store_is_refused(enforcing):
    alice = await enforcing.agent("alice")
    bob = await enforcing.agent("bob")
    carol = await enforcing.agent("carol")
    try:
        # alice serves agent.a2 (its task store beside it); bob calls it with a reply mailbox
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "agent.a2"})
        tasks = wire.store_address("agent.a2")
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": tasks})
        await ok(
            alice,
            "alice",
            p.MSG_SEND + tasks,
            b'{"state":"working"}',
            headers={"mq9-key": "task.t1"},
        )
        reply = wire.caller_address("bob.calls.a2")
        await ok(bob, "bob", p.MAILBOX_CREATE, {"name": reply})
        await ok(
            bob, "bob", p.MSG_SEND + "agent.a2", b"task t1", headers={wire.HEADER_REPLY_TO: reply}
        )
        # carol forges a result into bob's reply mailbox and a state into alice's task store
        _refused(await ask(carol, "carol", p.MSG_SEND + reply, b"forged result"), "SEND refused")
        _refused(await ask(carol, "carol", p.MSG_SEND + tasks, b"forged"), "SEND refused")
        _refused(await ask(carol, "carol", p.MSG_QUERY + tasks, {}), "QUERY refused")
        _refused(await ask(carol, "carol", p.MSG_FETCH + reply, {}), "FETCH refused")
        # ... or squats the names before their owners
        for squat in (
            wire.store_address("agent.a2x"),
            dead_letters.dead_letter_address("agent.a2"),
            leases.lease_address("agent.a2", "workers"),
        ):
            _refused(await ask(carol, "carol", p.MAILBOX_CREATE, {"name": squat}), "CREATE refused")
        # the callee answers, the caller reads; nothing of carol's landed
        await ok(alice, "alice", p.MSG_SEND + reply, b"the result")
        assert await _payloads(bob, "bob", reply) == ["the result"]
        assert await _payloads(alice, "alice", tasks) == ['{"state":"working"}']
        _refused(await ask(alice, "alice", p.MSG_FETCH + reply, {}), "FETCH refused")
    finally:
        await asyncio.gather(alice.close(), bob.close(), carol.close())


async def test_a_second_agent_cannot_pass_for_another_as_the_sender(enforcing):
    """#70: bob writes ``mq9-sender: alice`` himself, in two spellings; the broker writes bob,
    once, and alice's own message says alice whatever she wrote."""
    alice, bob = await enforcing.agent("alice"), await enforcing.agent("bob")
    try:
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "s70.inbox"})
        forged = {p.HEADER_SENDER: "alice", "MQ9-Sender": "alice", "x-note": "n"}
        await ok(bob, "bob", p.MSG_SEND + "s70.inbox", b"from bob", headers=forged)
        mine = {p.HEADER_SENDER: "bob"}
        await ok(alice, "alice", p.MSG_SEND + "s70.inbox", b"from alice", headers=mine)
        found = (await ok(alice, "alice", p.MSG_QUERY + "s70.inbox", {}))["messages"]
        assert [(m["payload"], p.parse_header_block(bytes(m["header"]))) for m in found] == [
            ("from bob", {"x-note": "n", p.HEADER_SENDER: "bob"}),
            ("from alice", {p.HEADER_SENDER: "alice"}),
        ]
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def test_naming_another_agents_reply_mailbox_is_refused(enforcing):
    """#70: carol, a raw nats-py client with her own credential, names bob's reply mailbox in
    requests to alice's agent (which leaves a request's answers there): each SEND is refused
    in one line and stores nothing, in nats-py's spellings and in bytes it would not write
    (the name spaced out, the header twice, hers beside his). Her own reply mailbox and bob's
    call still go."""
    alice, bob = await enforcing.agent("alice"), await enforcing.agent("bob")
    carol = await enforcing.agent("carol")
    try:
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "agent.r70"})
        bobs, carols = wire.caller_address("bob.r70"), wire.caller_address("carol.r70")
        await ok(bob, "bob", p.MAILBOX_CREATE, {"name": bobs})
        await ok(carol, "carol", p.MAILBOX_CREATE, {"name": carols})
        send = p.MSG_SEND + "agent.r70"
        for headers in (
            {wire.HEADER_REPLY_TO: bobs},
            {"MQ9-REPLY-TO": bobs, p.HEADER_SENDER: "bob"},
            {wire.HEADER_REPLY_TO: bobs, wire.HEADER_TASK_ID: "t-victims", "x-note": "n"},
        ):
            said = await ask(carol, "carol", send, b"carol's task", headers=headers)
            _refused(said, "SEND refused: mq9-reply-to", "is not a mailbox of yours")
        for block in (
            f"NATS/1.0\r\n  mq9-reply-to  :{bobs}\r\n\r\n",
            f"NATS/1.0\r\nmq9-reply-to: {carols}\r\nmq9-reply-to: {bobs}\r\n\r\n",
            f"NATS/1.0\r\nmq9-reply-to: {bobs}\r\nMQ9-Reply-To : {carols}\r\n\r\n",
        ):
            data = await asyncio.to_thread(
                socket_request,
                enforcing.url,
                b"$mq9.U.carol.AI.MSG.SEND.agent.r70",
                b"socket",
                block.encode(),
                login=enforcing.credentials["carol"],
            )
            assert data is not None
            _refused(json.loads(data), "SEND refused: mq9-reply-to", "is not a mailbox of yours")
        # the legitimate uses beside it
        await ok(carol, "carol", send, b"carol's own", headers={wire.HEADER_REPLY_TO: carols})
        await ok(bob, "bob", send, b"bob's call", headers={wire.HEADER_REPLY_TO: bobs})
        found = (await ok(alice, "alice", p.MSG_QUERY + "agent.r70", {}))["messages"]
        assert [(m["payload"], p.parse_header_block(bytes(m["header"]))) for m in found] == [
            ("carol's own", {wire.HEADER_REPLY_TO: carols, p.HEADER_SENDER: "carol"}),
            ("bob's call", {wire.HEADER_REPLY_TO: bobs, p.HEADER_SENDER: "bob"}),
        ]
        await ok(alice, "alice", p.MSG_SEND + bobs, b"the answer")  # granted by bob's call
        assert await _payloads(bob, "bob", bobs) == ["the answer"]
    finally:
        await asyncio.gather(alice.close(), bob.close(), carol.close())


async def test_names_derived_from_another_agent_cannot_be_made_first(enforcing):
    """#70: bob takes neither alice's failed-wakes mailbox nor her reply mailboxes (named
    after her id, or a gateway's per-tenant form) before her; nobody takes the plain
    ``mq9.wake.failed``; alice makes and uses hers."""
    alice, bob = await enforcing.agent("alice"), await enforcing.agent("bob")
    try:
        failed = f"{WAKE_FAILED}.{digest('alice')}"
        hers = [failed, wire.caller_address("alice"), f"{wire.CALLS_ROOT}{digest('alice')}.gw.t1"]
        for name in [*hers, WAKE_FAILED]:
            reply = await ask(bob, "bob", p.MAILBOX_CREATE, {"name": name})
            _refused(reply, "CREATE refused")
        _refused(await ask(alice, "alice", p.MAILBOX_CREATE, {"name": WAKE_FAILED}), "per agent")
        for name in hers:
            await ok(alice, "alice", p.MAILBOX_CREATE, {"name": name})
        await ok(alice, "alice", p.MSG_SEND + failed, b"set aside")
        _refused(await ask(bob, "bob", p.MSG_SEND + failed, b"forged"), "SEND refused")
        assert await _payloads(alice, "alice", failed) == ["set aside"]
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def test_another_agents_card_cannot_be_unregistered_or_replaced(enforcing):
    alice, bob = await enforcing.agent("alice"), await enforcing.agent("bob")
    try:
        card = {"name": "agent.cardy", "payload": "alice's card"}
        await ok(alice, "alice", p.AGENT_REGISTER, card)
        _refused(
            await ask(bob, "bob", p.AGENT_UNREGISTER, {"name": "agent.cardy"}), "UNREGISTER refused"
        )
        _refused(
            await ask(bob, "bob", p.AGENT_REGISTER, {"name": "agent.cardy", "payload": "bob's"}),
            "REGISTER refused",
        )
        _refused(await ask(bob, "bob", p.AGENT_REPORT, {"name": "agent.cardy"}), "REPORT refused")
        listing = await ok(bob, "bob", p.AGENT_DISCOVER, {})
        (entry,) = [a for a in listing["agents"] if a["name"] == "agent.cardy"]
        assert "alice's card" in json.dumps(entry)
        await ok(alice, "alice", p.AGENT_UNREGISTER, {"name": "agent.cardy"})
        listing = await ok(alice, "alice", p.AGENT_DISCOVER, {})
        assert "agent.cardy" not in [a["name"] for a in listing["agents"]]
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def test_publishing_as_another_agent_is_denied_by_nats_server(enforcing):
    denials = Denials()
    alice = await enforcing.agent("alice")
    bob = await enforcing.agent("bob", error_cb=denials.record)
    try:
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "a3.inbox"})
        await ok(alice, "alice", p.MSG_SEND + "a3.inbox", b"keep me")
        await _quiet(bob.request("$mq9.U.alice.AI.MSG.DELETE.a3.inbox.0", b"", timeout=SILENCE))
        await _quiet(bob.request("$mq9.U.alice.AI.MSG.FETCH.a3.inbox", b"{}", timeout=SILENCE))
        await denials.at_least(2, "nats-server denied both publishes")
        assert all("permissions violation for publish" in d.lower() for d in denials.seen)
        assert await _payloads(alice, "alice", "a3.inbox") == ["keep me"]
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def test_subscribing_to_others_inboxes_or_requests_is_denied(enforcing):
    denials = Denials()
    alice = await enforcing.agent("alice")
    bob = await enforcing.agent("bob", error_cb=denials.record)
    try:
        overheard = []

        async def keep(msg) -> None:
            overheard.append(msg.subject)

        for subject in ("_INBOX.alice.>", "_INBOX.>", "$mq9.>", "$mq9.U.*.>", "$mq9.AI.>"):
            await bob.subscribe(subject, cb=keep)
        await flush_in_order(bob)
        await denials.at_least(5, "nats-server denied every subscription")
        assert all("permissions violation for subscription" in d.lower() for d in denials.seen)
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "a4.inbox"})
        await ok(alice, "alice", p.MSG_SEND + "a4.inbox", b"private")
        await ok(alice, "alice", p.MSG_FETCH + "a4.inbox", {})
        await asyncio.sleep(0.2)  # what bob would have seen is delivered by now
        assert overheard == []
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def test_a_reply_aimed_at_another_inbox_is_dropped_unanswered(enforcing):
    alice, bob = await enforcing.agent("alice"), await enforcing.agent("bob")
    try:
        await ok(bob, "bob", p.MAILBOX_CREATE, {"name": "b5.inbox"})
        landed = []

        async def keep(msg) -> None:
            landed.append(msg.data)

        await alice.subscribe("_INBOX.alice.aimed.>", cb=keep)
        await flush_in_order(alice)  # listening before bob aims at it: the silence means it
        for subject, body in (
            (p.MSG_SEND + "b5.inbox", b"not executed"),
            (p.MSG_QUERY + "b5.inbox", b"{}"),
        ):
            await bob.publish(
                f"$mq9.U.bob.{subject[len('$mq9.') :]}", body, reply="_INBOX.alice.aimed.1"
            )
        await bob.publish("$mq9.U.bob.AI.MSG.SEND.b5.inbox", b"no reply at all")
        await bob.flush()
        await asyncio.sleep(SILENCE)
        assert landed == []
        assert await _payloads(bob, "bob", "b5.inbox") == []  # and nothing was done
    finally:
        await asyncio.gather(alice.close(), bob.close())


async def test_a_plain_request_is_told_to_use_a_credential(enforcing):
    bob = await enforcing.agent("bob")
    try:
        answer = json.loads((await bob.request(p.AGENT_DISCOVER, b"{}", timeout=10)).data)
        assert answer["error"].startswith(MARKER), answer
        assert "$mq9.U.<id>." in answer["error"] and "docs/security.md" in answer["error"]
    finally:
        await bob.close()


@pytest.mark.parametrize("login", ["", "bob:wrong-secret@", "nobody:x@", "mq9-broker:guess@"])
async def test_a_wrong_or_missing_credential_is_refused_at_login(enforcing, login):
    with pytest.raises(nats.errors.Error, match="Authorization Violation"):
        await nats.connect(
            enforcing.url.replace("nats://", f"nats://{login}", 1),
            allow_reconnect=False,
            max_reconnect_attempts=0,
            connect_timeout=10,
        )


async def test_a_credential_issued_while_the_broker_runs_works_at_once(enforcing):
    enforcing.credentials.update(issue(enforcing.data, "frank"))
    frank = await enforcing.agent("frank")
    try:
        await ok(frank, "frank", p.MAILBOX_CREATE, {"name": "f.inbox"})
    finally:
        await frank.close()


async def test_a_revoked_credential_is_refused_kicked_and_cannot_log_in_again(enforcing):
    closed, on_closed = on_close()
    dave = await enforcing.agent("dave", closed_cb=on_closed)
    alice = await enforcing.agent("alice")
    try:
        await ok(dave, "dave", p.MAILBOX_CREATE, {"name": "d.inbox"})
        await ok(dave, "dave", p.MSG_SEND + "d.inbox", b"before")
        revoke(enforcing.data, "dave")
        # the next request: refused in words, or the kick closed the connection first
        try:
            reply = await ask(dave, "dave", p.MSG_SEND + "d.inbox", b"after")
        except nats.errors.Error:  # closed, or timed out as it closed
            pass
        else:
            _refused(reply, "credential revoked", "operator")
        await asyncio.wait_for(closed.wait(), 15)  # kicked
        with pytest.raises(nats.errors.Error, match="Authorization Violation"):
            await enforcing.agent("dave", max_reconnect_attempts=0)
        # others are unaffected; dave's mailbox stays his (nobody else's to read)
        await ok(alice, "alice", p.MSG_SEND + "d.inbox", b"still reachable")
        _refused(await ask(alice, "alice", p.MSG_FETCH + "d.inbox", {}), "FETCH refused")
    finally:
        await asyncio.gather(alice.close(), dave.close())


async def test_a_rotation_never_lets_an_old_connection_act_as_the_new_secret(enforcing):
    """#61: revoked and issued again in one go (between two looks of the broker): the old
    secret's connection is refused every request until it is closed; the new secret then
    reads the mail sent after the rotation."""
    closed, on_closed = on_close()
    old = await enforcing.agent("erin", closed_cb=on_closed)
    alice = await enforcing.agent("alice")
    try:
        await ok(old, "erin", p.MAILBOX_CREATE, {"name": "e.inbox"})
        store = IdentityStore(identities_file(enforcing.data))  # the CLI's, another process's
        try:
            store.revoke("erin")
            enforcing.credentials["erin"] = f"erin:{store.issue('erin')}"
        finally:
            store.close()
        await ok(alice, "alice", p.MSG_SEND + "e.inbox", b"for the new erin")
        fetch = (p.MSG_FETCH + "e.inbox", {"group_name": "g"})
        while old.is_connected:
            with contextlib.suppress(nats.errors.Error):  # closed, or timed out as it closed
                _refused(await ask(old, "erin", *fetch))  # revoked, or renewed: never served
            await asyncio.sleep(0.02)
        await asyncio.wait_for(closed.wait(), 15)
        new = await enforcing.agent("erin")
        try:
            for _ in range(500):  # a hang guard: it acts once the old connection is closed
                fetched = await ask(new, "erin", *fetch)
                if not fetched["error"]:
                    break
                _refused(fetched, "issued anew")
                await asyncio.sleep(0.02)
            assert [m["payload"] for m in fetched["messages"]] == ["for the new erin"]
        finally:
            await new.close()
    finally:
        await asyncio.gather(alice.close(), old.close())


# -- the hostile bodies of test_hostile_requests.py, sent as a credentialed agent ---------------


@pytest.mark.parametrize(("subject", "template"), CASES)
async def test_hostile_bodies_are_refused_clearly_through_the_gate(enforcing, subject, template):
    erin = await enforcing.agent("erin")
    try:
        await ask(erin, "erin", p.MAILBOX_CREATE, {"name": "box"})  # erin's (or exists)
        for body in (
            template.replace("{}", ESCAPE).encode(),
            template.split("{}")[0].encode() + BAD_BYTES + template.split("{}")[1].encode(),
        ):
            reply = await ask(erin, "erin", subject, body)
            # the engine's words about the body, or the broker's refusal: never silence
            assert reply["error"], reply
            assert "internal broker error" not in reply["error"], reply
    finally:
        await erin.close()


async def test_a_subject_that_is_not_utf8_is_answered_and_the_broker_keeps_serving(enforcing):
    credential = enforcing.credentials["erin"]
    data = await asyncio.to_thread(
        socket_request, enforcing.url, b"$mq9.U.erin.AI.MSG.FETCH.b\xffx", login=credential
    )
    assert data is not None
    assert json.loads(data)["error"]
    # a plain one reaches the connection that answers logins: it reads on
    data = await asyncio.to_thread(
        socket_request, enforcing.url, b"$mq9.AI.X\xfe", login=credential
    )
    assert data is not None and json.loads(data)["error"].startswith(MARKER)
    erin = await enforcing.agent("erin")  # a login after it
    try:
        await ok(erin, "erin", p.AGENT_DISCOVER, {})
        plain = json.loads((await erin.request(p.AGENT_DISCOVER, b"{}", timeout=10)).data)
        assert plain["error"].startswith(MARKER)
    finally:
        await erin.close()


async def test_a_header_that_is_not_utf8_is_answered(enforcing):
    erin = await enforcing.agent("erin")
    try:
        await ask(erin, "erin", p.MAILBOX_CREATE, {"name": "e.hdr"})
        header = b"NATS/1.0\r\nmq9-key: k\xff\r\n\r\n"
        data = await asyncio.to_thread(
            socket_request,
            enforcing.url,
            b"$mq9.U.erin.AI.MSG.SEND.e.hdr",
            b"{}",
            header,
            login=enforcing.credentials["erin"],
        )
        assert data is not None
        assert "internal broker error" not in json.loads(data)["error"]
        await ok(erin, "erin", p.AGENT_DISCOVER, {})
    finally:
        await erin.close()


async def test_what_each_agent_owns_outlives_a_restart(tmp_path):
    broker = EnforcingBroker(tmp_path, "alice", "bob")
    try:
        alice = await broker.agent("alice")
        await ok(alice, "alice", p.MAILBOX_CREATE, {"name": "kept.inbox", "ttl": 0})
        await ok(alice, "alice", p.MSG_SEND + "kept.inbox", b"kept")
        await ok(alice, "alice", p.AGENT_REGISTER, {"name": "agent.kept", "payload": "card"})
        await alice.close()
        broker.stop()
        broker.process = DevBroker(
            "--credentials", "--data", str(tmp_path), "--port", str(broker.process.port)
        )
        alice, bob = await broker.agent("alice"), await broker.agent("bob")
        try:
            _refused(await ask(bob, "bob", p.MSG_QUERY + "kept.inbox", {}), "QUERY refused")
            _refused(
                await ask(bob, "bob", p.AGENT_UNREGISTER, {"name": "agent.kept"}),
                "UNREGISTER refused",
            )
            assert await _payloads(alice, "alice", "kept.inbox") == ["kept"]
        finally:
            await asyncio.gather(alice.close(), bob.close())
    finally:
        broker.kill()
