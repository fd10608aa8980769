"""#53 in process: the credential store, the login answers nats-server gets, and the ownership
an enforcing broker checks, on a real ``BrokerEngine`` and each identity store: the SQLite
file, and the JetStream key-value bucket on a real nats-server (requests arrive as nats-py
``Msg`` values, as ``serve.py`` hands them on after the gate). The same attacks over a real
nats-server: test_hostile_requests_credentialed.py; on a cluster: test_credentials_jetstream.py."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid

import pytest
from nats.aio.msg import Msg

import mq9_broker.identities.gate as gate
import mq9_broker.identities.owners as owners
import mq9_broker.identities.ownership as ids
from mq9_broker import BrokerEngine
from mq9_broker.identities.callout import (
    ANSWERS_USER,
    Issuer,
    LoginService,
    claims_of,
    login_name,
)
from mq9_broker.identities.gate import Identities
from mq9_broker.identities.kv_store import KvIdentityStore
from mq9_broker.identities.kv_store import _keyed as ids_kv_key
from mq9_broker.identities.store import (
    LOOK_EVERY,
    BaseIdentityStore,
    CredentialError,
    IdentityStore,
)
from mq9_platform.a2a import mail as wire
from mq9_platform.groups import dead_letters, leases
from mq9_wire import protocol as p
from mq9_wire.protocol import names
from testbed.support.jetstream_servers import JetStreamCluster
from testbed.support.waiting import until_sync

pytest.importorskip("nkeys")  # the credentials extra
from nacl.signing import VerifyKey  # nkeys' own dependency

WAIT = 10.0  # seconds a change made through another store is given to reach this one


@pytest.fixture(scope="module")
def lone_jetstream():
    with JetStreamCluster(1) as cluster:
        yield cluster


@pytest.fixture(params=["sqlite", pytest.param("kv", marks=pytest.mark.slow)])
def store(request, tmp_path):
    """Each identity store, opened as a broker opens it (the KV one: a bucket of its own)."""
    if request.param == "sqlite":
        opened: BaseIdentityStore = IdentityStore(
            tmp_path / "mq9-identities.sqlite3", clock=lambda: 1_700_000_000
        )
    else:
        servers = request.getfixturevalue("lone_jetstream").urls
        stream = f"T{uuid.uuid4().hex[:12]}"
        opened = KvIdentityStore(servers, stream=stream, clock=lambda: 1_700_000_000)
        opened.reopen = lambda: KvIdentityStore(servers, stream=stream, watch=False)  # type: ignore[attr-defined]
    yield opened
    opened.close()


def another_process(store: BaseIdentityStore) -> BaseIdentityStore:
    """The same store as the ``credentials`` command (another process) opens it."""
    if isinstance(store, IdentityStore):
        return IdentityStore(store.path)
    return store.reopen()  # type: ignore[attr-defined, no-any-return]


def until_seen(store: BaseIdentityStore, change) -> None:
    """Until ``store``, a broker's, reads ``change`` (a test of what it knows) as true: at its
    next look for SQLite, when its watch delivers it for KV (bounded)."""
    if isinstance(store, IdentityStore):
        store.monotonic = lambda: time.monotonic() + LOOK_EVERY  # the next look is due
    until_sync(change, timeout=WAIT, what="the change to reach the store", every=0.01)


def last_seen(store: BaseIdentityStore) -> int | None:
    """The one credential's last login, once the store holds it (KV notes it unawaited)."""
    return until_sync(lambda: store.listing()[0].last_seen, timeout=WAIT, what="a last login")


# -- the credential store -------------------------------------------------------------------------


def test_a_secret_is_shown_once_and_kept_only_as_its_hash(tmp_path):
    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    secret = store.issue("alice", "billing worker")
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", secret)  # 32 bytes, base64url, no padding
    assert len(base64.urlsafe_b64decode(secret + "=")) == 32
    store.close()
    kept = b"".join(f.read_bytes() for f in store.path.parent.iterdir())
    assert secret.encode() not in kept
    assert store.path.stat().st_mode & 0o077 == 0


@pytest.mark.slow
def test_the_bucket_keeps_only_the_hash_too(lone_jetstream):
    store = KvIdentityStore(lone_jetstream.urls, stream=f"T{uuid.uuid4().hex[:12]}")
    try:
        secret = store.issue("alice", "billing worker")
        store.seen("alice")
        last_seen(store)
        kept = b"".join(
            store._ask(store._read_all(kind)).__repr__().encode() for kind in ("cred", "seen")
        )
        assert b"sha256" in kept and secret.encode() not in kept
    finally:
        store.close()


def test_verify_takes_the_secret_and_nothing_else(store):
    secret = store.issue("alice")
    other = store.issue("bob")
    assert store.verify("alice", secret)
    assert not store.verify("alice", other)
    assert not store.verify("alice", secret[:-1])
    assert not store.verify("carol", secret)


def test_revoke_then_issue_again_gives_a_new_secret(store):
    old = store.issue("alice")
    with pytest.raises(CredentialError, match="revoke it first"):
        store.issue("alice")
    store.revoke("alice")
    assert not store.verify("alice", old)
    assert not store.active("alice")
    store.revoke("alice")  # twice: nothing more to do
    new = store.issue("alice")
    assert store.verify("alice", new) and not store.verify("alice", old)
    with pytest.raises(CredentialError, match="no credential 'carol'"):
        store.revoke("carol")


@pytest.mark.parametrize("bad", ["", "a.b", "a b", "x" * 65, "mq9-broker", "mq9-sys", "é"])
def test_names_that_cannot_be_a_login_are_refused(store, bad):
    with pytest.raises(CredentialError):
        store.issue(bad)


def test_a_revocation_by_another_process_reaches_the_broker(store):
    store.issue("alice")
    assert store.active("alice")
    other = another_process(store)
    other.revoke("alice")
    other.close()
    until_seen(store, lambda: not store.active("alice"))
    _closes_once(store, "alice")


def test_a_credential_issued_by_another_process_logs_in_at_once(store):
    other = another_process(store)
    secret = other.issue("alice")
    other.close()
    assert store.verify("alice", secret)  # asked of the store itself when not known yet


async def test_an_owner_record_is_never_given_to_another(store):
    await store.own_mailbox("box", "alice")
    await store.own_mailbox("box", "alice")  # the same record again: nothing to do
    with pytest.raises(CredentialError, match="another agent"):
        await store.own_mailbox("box", "bob")
    await store.own_agent("agent.a", "alice")
    with pytest.raises(CredentialError, match="another agent"):
        await store.own_agent("agent.a", "bob")
    await store.grant_send("mq9.calls.x", "bob")
    assert store.owners() == ({"box": "alice"}, {"agent.a": "alice"}, {"mq9.calls.x": {"bob"}})


def test_a_revocation_by_another_process_counts_at_the_next_look(tmp_path):
    now = [100.0]
    store = IdentityStore(tmp_path / "mq9-identities.sqlite3", monotonic=lambda: now[0])
    store.issue("alice")
    assert store.active("alice")
    other = IdentityStore(store.path)  # the CLI's connection
    other.revoke("alice")
    other.close()
    assert store.active("alice")  # looked LOOK_EVERY ago at most: not read yet
    now[0] += LOOK_EVERY
    assert not store.active("alice")
    _closes_once(store, "alice")
    store.close()


def _closes_once(store: BaseIdentityStore, principal: str) -> str:
    """``principal``'s one old secret waits in ``closing`` until ``closed``: its hash."""
    ((closing, sha256),) = store.closing()
    assert closing == principal
    assert store.closing() == {(principal, sha256)}  # asked again: still to be closed
    store.closed(principal, sha256)
    assert store.closing() == set()
    return sha256


def test_a_credential_issued_anew_acts_once_its_old_connections_are_closed(tmp_path):
    """Revoked and issued again between two looks of the broker: the old secret's
    connections are to be closed, and the name acts again only once they are."""
    now = [100.0]
    store = IdentityStore(tmp_path / "mq9-identities.sqlite3", monotonic=lambda: now[0])
    old = store.issue("alice")
    assert store.active("alice") and store.closing() == set()
    other = IdentityStore(store.path)  # the CLI's connection
    other.revoke("alice")
    new = other.issue("alice")
    other.close()
    now[0] += LOOK_EVERY
    assert not store.active("alice") and store.renewing("alice")
    assert store.verify("alice", new) and not store.verify("alice", old)
    ((_, sha256),) = store.closing()
    assert sha256 == hashlib.sha256(old.encode()).hexdigest()  # the old secret's logins
    store.closed("alice", sha256)
    assert store.active("alice") and not store.renewing("alice")
    store.close()


def test_list_shows_no_secret(store):
    secret = store.issue("alice", "worker")
    store.seen("alice")
    last_seen(store)
    (row,) = store.listing()
    assert (row.id, row.label, row.created, row.revoked, row.last_seen) == (
        "alice",
        "worker",
        1_700_000_000,
        None,
        1_700_000_000,
    )
    assert secret not in repr(row)


# -- the login answers ----------------------------------------------------------------------------


def _verify(token: str, public_key: str) -> dict:
    head, body, signature = token.split(".")
    # an nkey public key: base32 of its prefix byte, the 32-byte ed25519 key and a CRC
    raw = base64.b32decode(public_key + "=" * (-len(public_key) % 8))[1:33]
    padded = signature + "=" * (-len(signature) % 4)
    VerifyKey(raw).verify(f"{head}.{body}".encode(), base64.urlsafe_b64decode(padded))
    return claims_of(token)


def test_a_login_with_a_valid_credential_gets_the_contract_permissions(store):
    secret = store.issue("alice")
    issuer = Issuer()
    login = LoginService(store, issuer, clock=lambda: 1_700_000_000)
    answer = _verify(
        login.answer({"user": "alice", "pass": secret}, "UNKEY", "SRV"), issuer.public_key
    )
    assert answer["sub"] == "UNKEY" and answer["aud"] == "SRV"
    assert "error" not in answer["nats"]
    user = _verify(answer["nats"]["jwt"], issuer.public_key)
    # named after its secret's generation (never the hash itself): the kicks find them by it
    assert user["name"] == login_name("alice", hashlib.sha256(secret.encode()).hexdigest())
    assert user["name"].startswith("alice.") and len(user["name"]) == len("alice.") + 16
    assert user["aud"] == "AGENTS" and user["sub"] == "UNKEY"
    assert user["exp"] == 1_700_000_000 + 3600
    assert user["nats"]["pub"] == {"allow": ["$mq9.U.alice.>", "$mq9.AI.>"]}
    assert user["nats"]["sub"] == {"allow": ["_INBOX.alice.>"]}
    assert last_seen(store) == 1_700_000_000


@pytest.mark.parametrize(
    "options",
    [{}, {"user": "alice"}, {"user": "alice", "pass": "wrong"}, {"user": "a.b", "pass": "x"}],
)
def test_a_login_without_a_valid_credential_is_refused_without_echoing_it(store, options):
    store.issue("alice")
    issuer = Issuer()
    token = LoginService(store, issuer).answer(options, "UNKEY", "SRV")
    answer = _verify(token, issuer.public_key)
    assert "jwt" not in answer["nats"]
    assert "credential" in answer["nats"]["error"]
    assert "wrong" not in answer["nats"]["error"]


def test_the_broker_answers_user_may_publish_only_to_inboxes(store):
    """The user of the connection refusing plain requests: its password derived from the
    issuer's seed (another broker of the cluster, sharing the seed, checks it too), its
    permissions reaching no JetStream API, bucket, state stream or lock."""
    issuer = Issuer()
    twin = Issuer(key=issuer.key)  # another broker loading the same setup file
    assert twin.answers_password == issuer.answers_password
    assert Issuer().answers_password != issuer.answers_password
    login = LoginService(store, twin)
    answer = _verify(
        login.answer({"user": ANSWERS_USER, "pass": issuer.answers_password}, "U", "S"),
        issuer.public_key,
    )
    user = _verify(answer["nats"]["jwt"], issuer.public_key)
    assert user["name"] == ANSWERS_USER and "exp" not in user
    assert user["nats"]["pub"] == {"allow": ["_INBOX.>"]}
    assert user["nats"]["sub"] == {"allow": ["$mq9.AI.>"]}
    for wrong in ({"user": ANSWERS_USER, "pass": "guess"}, {"user": ANSWERS_USER}):
        refused = claims_of(login.answer(wrong, "U", "S"))
        assert "jwt" not in refused["nats"] and refused["nats"]["error"]
    with pytest.raises(CredentialError):
        store.issue(ANSWERS_USER)  # never a credential's name


def test_a_revoked_credential_cannot_log_in(store):
    secret = store.issue("alice")
    store.revoke("alice")
    answer = claims_of(
        LoginService(store, Issuer()).answer({"user": "alice", "pass": secret}, "U", "S")
    )
    assert "revoked" in answer["nats"]["error"]


def test_the_server_config_sends_logins_to_the_issuer():
    issuer = Issuer()
    config = issuer.server_config()
    assert f"issuer: {issuer.public_key}" in config
    assert "auth_users: [mq9-broker, mq9-sys]" in config
    assert issuer.broker_password in config and issuer.sys_password in config
    assert issuer.public_key.startswith("A")  # an account key, as the callout needs


# -- the names the broker derives: the library's (mq9_wire/protocol/names.py) ------------------


def test_the_derived_names_are_the_librarys():
    """The broker reads back the names the client derives from the module both import (their
    strings: tests/platform/protocol/test_derived_names.py); the reply-to header is the A2A
    wire's."""
    assert owners.HEADER_REPLY_TO == wire.HEADER_REPLY_TO
    assert ids.digest is names.digest and owners.TASKS_ROOT is names.TASKS_ROOT
    long = "a" * (p.MAX_ADDRESS_LENGTH - 2)
    assert dead_letters.dead_letter_address(long).endswith(".dlq." + ids.digest(long))


def test_the_principal_comes_from_the_subject_and_the_reply_must_be_its_inbox():
    assert gate.principal_of("$mq9.U.alice.AI.MSG.SEND.box") == ("alice", "$mq9.AI.MSG.SEND.box")
    assert gate.principal_of("$mq9.U.alice") is None
    assert gate.principal_of("$mq9.AI.MSG.SEND.box") is None
    assert gate.answers_to("_INBOX.alice.x.1") == "alice"
    assert gate.answers_to("_INBOX.alice") is None
    assert gate.answers_to("_R_.abc.x") is None


# -- ownership on a real engine -------------------------------------------------------------------


class Agents:
    """Requests as each principal would send them, through ``Identities.handle``."""

    def __init__(self, identities: Identities, engine: BrokerEngine) -> None:
        self.identities, self.engine = identities, engine

    async def __call__(self, who, subject, body=b"", headers=None) -> dict:
        if isinstance(body, dict):
            body = p.encode(body)
        msg = Msg(None, subject=subject, reply=f"_INBOX.{who}.r.1", data=body, headers=headers)  # type: ignore[arg-type]
        return json.loads(await self.identities.handle(self.engine, msg))


@pytest.fixture
def agents(store):
    for name in ("alice", "bob", "carol"):
        store.issue(name)
    engine = BrokerEngine()
    return Agents(Identities(store, engine), engine)


def _refused(reply: dict, *words: str) -> None:
    assert reply["error"], reply
    assert all(word in reply["error"] for word in words), reply


async def test_only_the_creator_reads_acks_queries_and_deletes(agents):
    assert (await agents("alice", p.MAILBOX_CREATE, {"name": "alice.box"}))["error"] == ""
    sent = await agents("bob", p.MSG_SEND + "alice.box", b"from bob", {"mq9-key": "k"})
    assert sent["error"] == ""
    _refused(await agents("bob", p.MSG_FETCH + "alice.box", {}), "FETCH refused", "another agent")
    _refused(await agents("bob", p.MSG_QUERY + "alice.box", {}), "QUERY refused")
    _refused(await agents("bob", p.delete_subject("alice.box", 0)), "DELETE refused")
    ack = {"group_name": "g", "mail_address": "alice.box", "msg_id": 0}
    _refused(await agents("bob", p.MSG_ACK + "alice.box", ack), "ACK refused")
    _refused(await agents("bob", p.MAILBOX_CREATE, {"name": "alice.box"}), "CREATE refused")
    # nothing changed: the message is there, no group moved
    fetched = await agents("alice", p.MSG_FETCH + "alice.box", {"group_name": "g"})
    assert [m["payload"] for m in fetched["messages"]] == ["from bob"]
    assert (await agents("alice", p.MSG_QUERY + "alice.box", {"key": "k"}))["messages"]
    assert (await agents("alice", p.MSG_ACK + "alice.box", ack))["error"] == ""
    assert (await agents("alice", p.delete_subject("alice.box", 0)))["deleted"] is True


async def test_a_mailbox_made_with_no_name_is_its_makers(agents):
    made = await agents("alice", p.MAILBOX_CREATE)
    address = made["mail_address"]
    _refused(await agents("bob", p.MSG_FETCH + address, {}), "belongs to another agent")
    assert (await agents("alice", p.MSG_FETCH + address, {}))["error"] == ""


async def test_an_expired_mailbox_stays_its_owners(store):
    from mq9_broker import ManualClock

    store.issue("alice"), store.issue("bob")
    clock = ManualClock()
    engine = BrokerEngine(clock=clock)
    agents = Agents(Identities(store, engine), engine)
    await agents("alice", p.MAILBOX_CREATE, {"name": "short.lived", "ttl": 5})
    await agents("alice", p.MSG_SEND + "short.lived", b"secret")
    clock.advance(10)
    _refused(await agents("bob", p.MAILBOX_CREATE, {"name": "short.lived"}), "CREATE refused")
    _refused(await agents("bob", p.MSG_QUERY + "short.lived", {}), "QUERY refused")


async def test_a_registry_entry_is_its_registrants(agents):
    card = {"name": "agent.alice", "payload": "alice's card"}
    assert (await agents("alice", p.AGENT_REGISTER, card))["error"] == ""
    _refused(await agents("bob", p.AGENT_REGISTER, {**card, "payload": "bob"}), "REGISTER refused")
    _refused(await agents("bob", p.AGENT_UNREGISTER, {"name": "agent.alice"}), "UNREGISTER refused")
    _refused(await agents("bob", p.AGENT_REPORT, {"name": "agent.alice"}), "REPORT refused")
    listing = await agents("carol", p.AGENT_DISCOVER, {})
    assert [a["name"] for a in listing["agents"]] == ["agent.alice"]
    assert "alice's card" in json.dumps(listing)
    assert (await agents("alice", p.AGENT_REPORT, {"name": "agent.alice"}))["error"] == ""
    assert (await agents("alice", p.AGENT_UNREGISTER, {"name": "agent.alice"}))["error"] == ""
    # the name stays alice's: bob cannot take it while she is away
    _refused(await agents("bob", p.AGENT_REGISTER, {**card, "payload": "bob"}), "REGISTER refused")
    assert (await agents("alice", p.AGENT_REGISTER, card))["error"] == ""


async def test_a_task_store_dead_letters_and_leases_are_the_mailbox_owners(agents):
    await agents("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    tasks = wire.store_address("agent.alice")
    dlq = dead_letters.dead_letter_address("agent.alice")
    lease = leases.lease_address("agent.alice", "workers")
    for squatted in (tasks, dlq, lease):  # nobody takes them before alice
        _refused(await agents("bob", p.MAILBOX_CREATE, {"name": squatted}), "CREATE refused")
    # alice's lease is hers once she read with that group
    await agents("alice", p.MSG_FETCH + "agent.alice", {"group_name": "workers"})
    for derived in (tasks, dlq, lease):
        assert (await agents("alice", p.MAILBOX_CREATE, {"name": derived}))["error"] == ""
        assert (await agents("alice", p.MSG_SEND + derived, b"mine"))["error"] == ""
        _refused(await agents("bob", p.MSG_SEND + derived, b"forged"), "SEND refused")
        _refused(await agents("bob", p.MSG_QUERY + derived, {}), "QUERY refused")
        kept = await agents("alice", p.MSG_QUERY + derived, {})
        assert [m["payload"] for m in kept["messages"]] == ["mine"]


async def test_a_lease_of_another_mailbox_cannot_be_made(agents):
    await agents("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    await agents("bob", p.MAILBOX_CREATE, {"name": "agent.bob"})
    await agents("bob", p.MSG_FETCH + "agent.bob", {"group_name": "g"})
    # bob read alice's mailbox's group? refused, so nothing learned
    await agents("bob", p.MSG_FETCH + "agent.alice", {"group_name": "g"})
    lease = leases.lease_address("agent.alice", "g")
    _refused(await agents("bob", p.MAILBOX_CREATE, {"name": lease}), "CREATE refused")


async def test_a_reply_mailbox_takes_sends_from_its_caller_and_the_agents_it_called(agents):
    await agents("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    reply = wire.caller_address("bob.calls")
    assert (await agents("bob", p.MAILBOX_CREATE, {"name": reply}))["error"] == ""
    _refused(await agents("carol", p.MAILBOX_CREATE, {"name": reply}), "CREATE refused")
    _refused(await agents("alice", p.MSG_SEND + reply, b"early"), "SEND refused")
    call = {wire.HEADER_REPLY_TO: reply}
    assert (await agents("bob", p.MSG_SEND + "agent.alice", b"do it", call))["error"] == ""
    assert (await agents("alice", p.MSG_SEND + reply, b"done"))["error"] == ""
    _refused(await agents("carol", p.MSG_SEND + reply, b"forged"), "SEND refused")
    _refused(await agents("alice", p.MSG_FETCH + reply, {}), "FETCH refused")
    got = await agents("bob", p.MSG_FETCH + reply, {})
    assert [m["payload"] for m in got["messages"]] == ["done"]


async def test_names_derived_from_an_agents_id_are_its_own_on_each_store(agents):
    """#70 on each identity store (the ids known are read from it): names derived from
    alice's credential id are refused to bob, made by alice."""
    alices = [
        f"{ids.WAKE_FAILED}.{ids.digest('alice')}",
        wire.caller_address("alice"),
        f"{wire.CALLS_ROOT}{ids.digest('alice')}.gateway.t1",
    ]
    for name in alices:
        _refused(await agents("bob", p.MAILBOX_CREATE, {"name": name}), "CREATE refused")
    for name in alices:
        assert (await agents("alice", p.MAILBOX_CREATE, {"name": name}))["error"] == ""


async def test_naming_anothers_reply_mailbox_grants_nothing(agents):
    await agents("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    reply = wire.caller_address("bob.calls")
    await agents("bob", p.MAILBOX_CREATE, {"name": reply})
    # carol asks alice to answer into bob's reply mailbox: alice still may not
    await agents("carol", p.MSG_SEND + "agent.alice", b"x", {wire.HEADER_REPLY_TO: reply})
    _refused(await agents("alice", p.MSG_SEND + reply, b"forged for carol"), "SEND refused")


async def test_what_nobody_owns_is_nobodys(agents):
    # made before the broker enforced credentials: straight into the engine
    await agents.engine.handle(p.MAILBOX_CREATE, None, p.encode({"name": "old.box"}))
    await agents.engine.handle(p.AGENT_REGISTER, None, p.encode({"name": "old", "payload": "c"}))
    _refused(await agents("alice", p.MSG_FETCH + "old.box", {}), "has no owner")
    _refused(await agents("alice", p.MAILBOX_CREATE, {"name": "old.box"}), "has no owner")
    _refused(await agents("alice", p.AGENT_UNREGISTER, {"name": "old"}), "has no owner")
    # what does not exist is the engine's to say
    missing = await agents("alice", p.MSG_FETCH + "no.such.box", {})
    assert "not found" in missing["error"] or "not exist" in missing["error"], missing


async def test_a_revoked_credential_is_refused_at_its_next_request(agents, store):
    await agents("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    other = another_process(store)
    other.revoke("alice")
    other.close()
    until_seen(store, lambda: not store.active("alice"))
    _refused(await agents("alice", p.MSG_FETCH + "agent.alice", {}), "credential revoked")
    assert (await agents("bob", p.MSG_SEND + "agent.alice", b"x"))["error"] == ""


async def test_ownership_outlives_the_broker(agents, store):
    await agents("alice", p.MAILBOX_CREATE, {"name": "agent.alice"})
    await agents("alice", p.AGENT_REGISTER, {"name": "agent.alice", "payload": "c"})
    reply = wire.caller_address("bob.calls")
    await agents("bob", p.MAILBOX_CREATE, {"name": reply})
    await agents("bob", p.MSG_SEND + "agent.alice", b"x", {wire.HEADER_REPLY_TO: reply})
    # a new broker on the same records (the engine's own state restored as it is)
    again = Agents(Identities(store, agents.engine), agents.engine)
    _refused(await again("bob", p.MSG_FETCH + "agent.alice", {}), "another agent")
    _refused(await again("bob", p.AGENT_UNREGISTER, {"name": "agent.alice"}), "another agent")
    assert (await again("alice", p.MSG_SEND + reply, b"answer"))["error"] == ""
    _refused(await again("carol", p.MSG_SEND + reply, b"forged"), "SEND refused")


async def test_the_gate_drops_a_reply_aimed_at_another_inbox(store):
    engine = BrokerEngine()
    identities = Identities(store, engine)
    seen: list[Msg] = []

    async def on_request(msg: Msg) -> None:
        seen.append(msg)

    gated = identities.gate(on_request)
    subject = "$mq9.U.alice.AI.MSG.FETCH.box"
    for reply in ("_INBOX.bob.x.1", "", "_INBOX.alice", "_INBOX.alicex.1"):
        await gated(Msg(None, subject=subject, reply=reply))  # type: ignore[arg-type]
    assert seen == [] and identities.dropped == 4
    await gated(Msg(None, subject=subject, reply="_INBOX.alice.x.1"))  # type: ignore[arg-type]
    assert [m.subject for m in seen] == ["$mq9.AI.MSG.FETCH.box"]


def test_the_refusals_are_the_contracts_words():
    """The wire contract of #53: the client side matches on these words."""
    assert json.loads(gate.PLAIN_REFUSAL) == {
        "error": "mq9 identities: this broker serves credentialed agents on "
        "$mq9.U.<id>.<subject without $mq9.>; connect with a credential (docs/security.md)"
    }
    assert json.loads(gate.REVOKED) == {
        "error": "credential revoked: ask the broker's operator for a new one"
    }


async def test_a_large_card_is_owned_and_a_body_over_the_limit_is_refused_unread(agents):
    card = {"name": "agent.big", "payload": "x" * 20_000}  # read off the loop
    assert (await agents("alice", p.AGENT_REGISTER, card))["error"] == ""
    _refused(await agents("bob", p.AGENT_REGISTER, {**card, "payload": "y" * 20_000}), "REGISTER")
    _refused(await agents("bob", p.AGENT_UNREGISTER, {"name": "agent.big"}), "UNREGISTER refused")
    huge = p.encode({"name": "agent.big", "payload": "z" * 500_000})  # above the engine's bound
    _refused(await agents("bob", p.AGENT_REGISTER, huge), "refused unread")
    listing = await agents("carol", p.AGENT_DISCOVER, {})
    (entry,) = listing["agents"]
    assert "xxxx" in json.dumps(entry)


@pytest.mark.slow
async def test_an_owner_record_the_cluster_did_not_keep_is_said_and_owns_nothing(lone_jetstream):
    """The bucket is gone under the broker (deleted by hand, say): a CREATE's owner record,
    claimed before the mailbox is made (#77), cannot be kept, and the answer says so; nothing
    is made, so nobody finds a mailbox open to all."""
    store = KvIdentityStore(lone_jetstream.urls, stream=f"T{uuid.uuid4().hex[:12]}")
    try:
        store.issue("alice"), store.issue("bob")
        engine = BrokerEngine()
        agents = Agents(Identities(store, engine), engine)
        store._ask(store._keys.api.api(f"STREAM.DELETE.{store._keys.stream}", None))  # type: ignore[attr-defined]
        made = await agents("alice", p.MAILBOX_CREATE, {"name": "lost.box"})
        _refused(made, "CREATE refused: its owner could not be recorded")
        for who in ("alice", "bob"):
            fetched = await agents(who, p.MSG_FETCH + "lost.box", {})
            assert fetched["error"] == p.err_topic_missing("lost.box"), fetched
    finally:
        store.close()


@pytest.mark.slow
async def test_every_record_is_read_back_by_a_broker_taking_over(lone_jetstream):
    """What a broker taking over reads (``owners``): every record, none deleted, nothing of
    a kind that has none, each time (#61: nats-py's watch could say "nothing more" before the
    records the server had sent were read, and a new broker then saw no owner at all)."""
    stream = f"T{uuid.uuid4().hex[:12]}"
    store = KvIdentityStore(lone_jetstream.urls, stream=stream)
    try:
        for n in range(300):
            await store.own_mailbox(f"box.{n}", "alice" if n % 2 else "bob")
        await store.own_agent("agent.a", "alice")
        store._ask(store._keys.delete(ids_kv_key("mailbox", "box.7")))
        for _ in range(20):
            other = KvIdentityStore(lone_jetstream.urls, stream=stream, watch=False)
            try:
                mailboxes, agents, grants = other.owners()
            finally:
                other.close()
            assert len(mailboxes) == 299 and "box.7" not in mailboxes
            assert mailboxes["box.8"] == "bob" and agents == {"agent.a": "alice"}
            assert grants == {}
    finally:
        store.close()
