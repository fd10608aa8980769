"""#77 item 2: a client of the agents' plays the attacker against the brokers' storage on a
cluster of three nats-servers (the JetStream store), as a raw nats-py client: JetStream's API
(the streams listed, a stream's config and messages read, the stream updated, deleted,
purged), the buckets read and written, the state's subjects written and heard. Each must be
refused by nats-server (a permissions violation: nothing reaches JetStream), while the same
client's mq9 requests, a ``Mq9Client``'s calls and a ``GroupReader`` beside it still work.

Used by test_documented_cluster.py (docs/deploy.md's files, open and with credentials) and
test_open_cluster_isolation.py (a cluster moved from the earlier accounts.conf)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import nats

from mq9_broker.storage.jetstream import DEFAULT_NAME, Layout, token
from mq9_platform import Mq9Client
from mq9_platform.groups.reader import GroupReader
from testbed.support.waiting import until

STORAGE = Layout(DEFAULT_NAME)
STREAM = STORAGE.messages
VIOLATION_WITHIN = 30.0  # seconds: a hang guard on a busy machine, never a timing assertion
NO_JETSTREAM = 10039  # JetStream's "JetStream not enabled for account"
SENT = 25  # the messages the legitimate client sends and reads back (issue #77: 1 of 25 left)


def requests_on_storage(mailbox: str) -> list[tuple[str, bytes]]:
    """What the attacker asks JetStream for (subject, body): ``mailbox`` is one whose
    messages and record the brokers keep."""
    box = token(mailbox)
    squeeze = {
        "name": STREAM,
        "subjects": STORAGE.message_subjects,
        "max_msgs": 3,  # issue #77: accepted, and the owner read back 1 of 25 acknowledged
        "num_replicas": 1,
    }
    record = f"$KV.{STORAGE.mailboxes}.{box}"
    return [
        ("$JS.API.STREAM.LIST", b"{}"),
        ("$JS.API.STREAM.NAMES", b"{}"),
        (f"$JS.API.STREAM.INFO.{STREAM}", b""),
        (f"$JS.API.DIRECT.GET.{STREAM}", json.dumps({"seq": 1}).encode()),
        (
            f"$JS.API.DIRECT.GET.{STREAM}",
            json.dumps({"last_by_subj": f"{STORAGE.prefix}.m.{box}.>"}).encode(),
        ),
        (f"$JS.API.STREAM.MSG.GET.{STREAM}", json.dumps({"seq": 1}).encode()),
        (f"$JS.API.STREAM.UPDATE.{STREAM}", json.dumps(squeeze).encode()),
        (f"$JS.API.STREAM.PURGE.{STREAM}", b""),
        (f"$JS.API.STREAM.DELETE.{STREAM}", b""),
        (f"$JS.API.CONSUMER.CREATE.{STREAM}", json.dumps({"stream_name": STREAM}).encode()),
        (f"$JS.API.DIRECT.GET.KV_{STORAGE.mailboxes}.{record}", b""),  # a KV get
        (record, b"{}"),  # a KV put over the mailbox's record
        (f"$JS.API.STREAM.DELETE.KV_{STORAGE.mailboxes}", b""),
        (f"{STORAGE.prefix}.m.{box}.normal.-.99", b"forged"),  # a message written in place
    ]


# What the attacker subscribes to: the state's subjects, JetStream's API and events, everything,
# and the mq9 requests themselves (a client hearing them could answer in the brokers' place)
HEARD_SUBJECTS = [">", "$JS.>", "$JS.API.>", "$KV.>", f"{STORAGE.prefix}.>", "$mq9.AI.>"]


def keeper(into: list[Any]) -> Any:
    """A subscription's callback (nats-py takes coroutines only) keeping what it hears."""

    async def keep(msg: Any) -> None:
        into.append(msg)

    return keep


class Attacker:
    """A raw nats-py connection whose asynchronous errors are kept: nats-server tells a
    refused publish or subscription by a ``-ERR`` that nats-py hands to ``error_cb``."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.connection: Any = None

    async def connect(self, url: str, **options: Any) -> Attacker:
        async def kept(exc: Exception) -> None:
            self.errors.append(str(exc).lower())

        self.connection = await nats.connect(url, error_cb=kept, **options)
        return self

    async def close(self) -> None:
        await self.connection.close()

    async def violation(self, what: str, subject: str) -> None:
        """Until nats-server has said that ``what`` (publish, subscription) to ``subject``
        is a permissions violation (nats-py lowercases what the server said)."""
        said = f'permissions violation for {what} to "{subject.lower()}"'
        await until(
            lambda: any(said in error for error in self.errors),
            timeout=VIOLATION_WITHIN,
            what=said,
            show=lambda: self.errors,
        )

    async def refused_request(self, subject: str, body: bytes) -> None:
        """``subject`` asked with an inbox of the attacker's to answer to: nats-server refuses
        the publish, so nothing is asked and no answer comes."""
        answers: list[Any] = []
        inbox = self.connection.new_inbox()
        subscription = await self.connection.subscribe(inbox, cb=keeper(answers))
        await self.connection.publish(subject, body, reply=inbox)
        await self.violation("publish", subject)
        await self.connection.flush()
        await subscription.unsubscribe()
        assert answers == [], (subject, answers)

    async def told_no_jetstream(self) -> None:
        """``$JS.API.INFO``: refused (a credentialed agent), or answered that the client's
        account has no JetStream (the open cluster's CLIENTS: so that a broker started
        without its login is told at once), never the brokers' account's figures."""
        answers: list[Any] = []
        inbox = self.connection.new_inbox()
        subscription = await self.connection.subscribe(inbox, cb=keeper(answers))
        await self.connection.publish("$JS.API.INFO", b"", reply=inbox)
        said = 'permissions violation for publish to "$js.api.info"'
        await until(
            lambda: answers or any(said in error for error in self.errors),
            timeout=VIOLATION_WITHIN,
            what="an answer or a refusal",
            show=lambda: self.errors,
        )
        await subscription.unsubscribe()
        for answer in answers:
            assert json.loads(answer.data)["error"]["err_code"] == NO_JETSTREAM, answer.data

    async def refused_subscription(self, subject: str) -> None:
        await self.connection.subscribe(subject)
        await self.violation("subscription", subject)


async def reaches_no_storage(url: str, mailbox: str, **options: Any) -> None:
    """Every request on the storage and every subscription to it refused, for a client of
    ``url`` (``options``: nats-py's, a credential's login and inbox)."""
    attacker = await Attacker().connect(url, **options)
    try:
        await attacker.told_no_jetstream()
        for subject, body in requests_on_storage(mailbox):
            await attacker.refused_request(subject, body)
        for subject in HEARD_SUBJECTS:
            await attacker.refused_subscription(subject)
        assert attacker.connection.is_connected  # refused, never thrown off
    finally:
        await attacker.close()


async def hears_no_storage_answers(url: str, busy: str) -> None:
    """An anonymous client may hear inboxes (its own answers come there): while another client
    SENDs and FETCHes through the brokers, it hears that client's answers (so it was
    listening) and never one JetStream gave a broker (``Nats-Stream``, JetStream's API)."""
    attacker = await Attacker().connect(url)
    heard: list[Any] = []
    try:
        await attacker.connection.subscribe("_INBOX.>", cb=keeper(heard))
        await attacker.connection.flush()
        async with Mq9Client(url) as client:
            await client.mailbox_create(name=busy)
            for n in range(5):
                await client.send(busy, f"overheard {n}")
            assert len(await client.fetch(busy, deliver="earliest")) == 5
        deadline = time.monotonic() + VIOLATION_WITHIN
        while len(heard) < 7:  # the CREATE, 5 SENDs and the FETCH answered
            assert time.monotonic() < deadline, heard
            await asyncio.sleep(0.02)
        for msg in heard:
            assert not (msg.headers or {}).keys() & {"Nats-Stream", "Nats-Sequence"}, msg
            assert b"io.nats.jetstream" not in msg.data, msg
        assert not attacker.errors, attacker.errors
    finally:
        await attacker.close()


async def still_served(url: str, mailbox: str, credential: str | None = None) -> None:
    """The legitimate use beside the attack: a ``Mq9Client`` makes ``mailbox``, sends it
    ``SENT`` messages, reads every one back, and a ``GroupReader`` finishes them."""
    async with Mq9Client(url, credential=credential) as client:
        await client.mailbox_create(name=mailbox)
        sent = [await client.send(mailbox, f"kept {n}") for n in range(SENT)]
        fetched = await client.fetch(mailbox, deliver="earliest", num_msgs=SENT)
        assert [m.msg_id for m in fetched] == sent
        assert [m.payload for m in fetched] == [f"kept {n}".encode() for n in range(SENT)]
        reader = GroupReader(client, mailbox, "workers")
        got = await reader.fetch(num_msgs=SENT)
        assert [m.msg_id for m in got] == sent
        await reader.done([m.msg_id for m in got])
        assert await GroupReader(client, mailbox, "workers").fetch(num_msgs=SENT) == []


async def stream_unchanged(url: str) -> dict[str, Any]:
    """The messages stream's config, read with the brokers' own login (``url`` carries it):
    no limit on its messages, its replicas as the brokers made it."""
    connection = await nats.connect(url)
    try:
        answer = await connection.request(f"$JS.API.STREAM.INFO.{STREAM}", b"", timeout=20)
    finally:
        await connection.close()
    config: dict[str, Any] = json.loads(answer.data)["config"]
    assert config["max_msgs"] == -1 and config["num_replicas"] == 3, config
    return config
