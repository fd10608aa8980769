"""#77 fairness: on the open cluster (docs/deploy.md's files as written) one client cannot take
another's turns with the brokers, nor pose as another, nor learn where a sender connects from.

The agents' requests reach the brokers through the service import of accounts.conf, which
gives every request of one server's clients the reply prefix ``_R_.<prefix>``: a broker keying
its turns by that prefix saw them all as one requester, so one client flooding costly
requests had every other client of its server refused "too many waiting". With ``share:
true`` on the import nats-server adds the requesting connection (``Nats-Request-Info``,
written over any the client sent), and the broker keys its turns by it. That header also
names the client's host: a SEND's stored message never keeps it.

Three nats-servers on deploy.md's node files and accounts.conf, one documented broker; two
anonymous clients on the same server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import nats
import pytest

from mq9_broker.serving.pacing import REQUEST_INFO, requester
from mq9_platform import Mq9Client
from mq9_wire import protocol as p
from testbed.support.waiting import until
from tests.platform.broker.cli.test_documented_cluster import (
    Deployment,
    _documented,
    _serving,
    password_of,
    without_login,
)

pytestmark = pytest.mark.slow  # three nats-servers and a broker
pytest.importorskip("nkeys")

BOX = "fair.box"
# A QUERY of many tags: costly (above LARGE_BODY), each tag a read of the cluster's index
QUERY = p.encode({"tags": [f"fairness-tag-{i:04d}-{'x' * 16}" for i in range(200)]})
REFUSED = "wait already for their turn"  # serve.py's "too many waiting"
BURST = 150  # more than a requester may have running and waiting (4 + 64)
MOST = 20_000  # QUERYs a flooder sends in all: a bound, whatever happens
ANSWER = 180.0  # seconds: a hang guard on a busy machine, never a timing assertion
PROBE = f"{p.PREFIX}.FAIRNESS.probe"  # a subject of the service the brokers' user hears


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """(the servers' URLs for a client, the brokers' password) of a running documented
    cluster with one broker serving."""
    home = tmp_path_factory.mktemp("fair")
    files, commands, _, secret = _documented()
    for name, body in files.items():
        (home / name).write_text(body)
    deployment = Deployment(home)
    password = password_of(secret, deployment.env)
    deployment.env["MQ9_BROKER_PASSWORD"] = password
    servers, brokers = commands[:3], commands[3:]
    try:
        for line in servers:
            deployment.start_server(line)
        _serving([deployment.start_broker(brokers[0])])
        yield without_login(brokers[0]).split()[2].split(","), password
    finally:
        deployment.close()


class Flooder:
    """An anonymous client publishing costly QUERYs without waiting: each answered one is
    replaced by two (one refused if its room is full), so that what it may have waiting stays
    full while the other asks; never more than ``BURST`` unanswered, ``MOST`` in all."""

    def __init__(self, connection, headers: dict[str, str] | None = None) -> None:
        self.connection, self.headers = connection, headers
        self.inbox = connection.new_inbox()
        self.sent = self.refused = self.answered = 0
        self.more: asyncio.Queue[int] = asyncio.Queue()

    async def _on_answer(self, msg) -> None:
        if REFUSED in msg.data.decode(errors="replace"):
            self.refused += 1
        else:
            self.answered += 1
            unanswered = self.sent - self.answered - self.refused
            self.more.put_nowait(max(0, min(2, BURST - unanswered, MOST - self.sent)))

    async def publish(self, times: int) -> None:
        for _ in range(times):
            reply = f"{self.inbox}.{self.sent}"
            await self.connection.publish(
                p.MSG_QUERY + BOX, QUERY, reply=reply, headers=self.headers
            )
            self.sent += 1
        await self.connection.flush()

    async def run(self) -> None:
        await self.connection.subscribe(f"{self.inbox}.*", cb=self._on_answer)
        await self.publish(BURST)
        while True:
            await self.publish(await self.more.get())


async def _flooded(url: str, headers: dict[str, str] | None = None) -> tuple[int, int]:
    """A flooder and another client on ``url``: the other's costly QUERYs are all answered
    while the flooder is refused. The flooder's refusals before and during the other's turn."""
    flooder_nc, other = await nats.connect(url), await nats.connect(url)
    flooder = Flooder(flooder_nc, headers)
    task = asyncio.create_task(flooder.run())
    try:
        await until(lambda: flooder.refused > 0, timeout=ANSWER, what="a flooder's ask refused")
        before = flooder.refused
        for _ in range(3):
            answer = await other.request(p.MSG_QUERY + BOX, QUERY, timeout=ANSWER)
            reply = json.loads(answer.data)
            assert not reply.get("error"), reply  # before the fix: "64 of your requests ..."
            assert "messages" in reply, reply
        return before, flooder.refused
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await flooder_nc.close()
        await other.close()


async def _box(url: str) -> None:
    async with Mq9Client(url, request_timeout=30) as client:
        await client.mailbox_create(name=BOX)
        await client.send(BOX, "tagged", tags=["fairness-tag-0001-" + "x" * 16])


def test_a_flooding_client_does_not_starve_another_on_its_server(cluster):
    urls, _ = cluster
    asyncio.run(_box(urls[0]))
    before, during = asyncio.run(_flooded(urls[0]))
    assert during >= before > 0  # the flood was refused, and went on, while the other asked


async def _probe(url: str, password: str) -> None:
    """What the brokers' account receives of two clients' requests through the import, one
    forging the other's ``Nats-Request-Info``: nats-server's own header, so the forger is
    itself, never the other; and the flood under the other's forged header starves nobody."""
    heard: asyncio.Queue = asyncio.Queue()
    broker_side = await nats.connect(url, user="mq9-broker", password=password)
    victim, forger = await nats.connect(url), await nats.connect(url)
    try:
        await broker_side.subscribe(PROBE, cb=heard.put)
        await broker_side.flush()

        sent = 0

        async def heard_from(nc, headers=None):
            """What the brokers' account heard of a probe of ``nc``'s (each probe's body its
            own: one sent again while the interest was still crossing is told apart)."""
            nonlocal sent
            deadline = time.monotonic() + ANSWER
            while True:
                sent += 1
                token = str(sent).encode()
                await nc.publish(PROBE, token, reply=nc.new_inbox(), headers=headers)
                await nc.flush()
                with contextlib.suppress(TimeoutError):
                    while True:
                        msg = await asyncio.wait_for(heard.get(), 2)
                        if msg.data == token:
                            return msg
                assert time.monotonic() < deadline, "the brokers' account heard no probe"

        real = await heard_from(victim)
        assert real.reply.startswith("_R_."), real.reply
        info = json.loads(real.headers[REQUEST_INFO])
        assert info["acc"] == "CLIENTS" and isinstance(info["id"], int), info
        own = await heard_from(forger)
        for name in (REQUEST_INFO, REQUEST_INFO.lower()):
            forged = await heard_from(forger, {name: real.headers[REQUEST_INFO]})
            assert forged.headers[REQUEST_INFO] != real.headers[REQUEST_INFO], forged.headers
            who = requester(forged.reply, forged.headers)
            assert who == requester(own.reply, own.headers), (forged.headers, own.headers)
            assert who != requester(real.reply, real.headers)
        await forger.close()
    finally:
        await broker_side.close()
        await victim.close()


def test_a_forged_request_info_does_not_let_a_client_pose_as_another(cluster):
    urls, password = cluster
    asyncio.run(_probe(urls[0], password))
    # and flooding under a made-up header changes nothing: its own connection takes the turns
    forged = {REQUEST_INFO: json.dumps({"acc": "CLIENTS", "server": "NX", "id": 1})}
    asyncio.run(_flooded(urls[0], forged))


async def _sent_back(url: str) -> None:
    async with Mq9Client(url, request_timeout=30) as client:
        await client.mailbox_create(name="headers.box")
        sent = [
            await client.send("headers.box", "plain", headers={"x-trace": "t1"}),
            await client.send("headers.box", "bare"),
            await client.send(
                "headers.box", "forged", headers={REQUEST_INFO: '{"host": "1.2.3.4"}'}
            ),
        ]
        fetched = await client.fetch("headers.box", from_id=sent[0], num_msgs=10)
        queried = await client.query("headers.box")
    for messages in (fetched, queried):
        assert sorted(m.msg_id for m in messages) == sorted(sent)
        for message in messages:
            names = {name.strip().lower() for name in message.header}
            assert REQUEST_INFO.lower() not in names, message.header
            assert "127.0.0.1" not in json.dumps(message.header), message.header
    assert {m.header.get("x-trace") for m in queried} == {"t1", None}


def test_a_sends_stored_headers_never_tell_the_senders_connection(cluster):
    urls, _ = cluster
    asyncio.run(_sent_back(urls[1]))
