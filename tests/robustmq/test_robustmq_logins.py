"""What a login buys on RobustMQ 8bd49dc (issue #53, item 3): it decides who may connect, and
nothing after that. Its NATS front checks a user and password at CONNECT (``auth_required``) and
then serves every ``$mq9.AI.*`` command of every logged-in connection alike: no mailbox, message
or registry entry belongs to anyone. These tests play the second tenant with a login of its own
and record that RobustMQ lets it read, ack, delete and unregister what another login made. If a
later RobustMQ starts refusing, they fail, and docs/security.md's RobustMQ column must change.

They also hold the client to RobustMQ's CONNECT (docs/protocol.md §1.1, point 8: without
``tls_required`` RobustMQ reads no CONNECT, and a right password still gets every publish
refused). They run on the RobustMQ-shaped listener with logins, and on a real RobustMQ started
with ``[nats_runtime] auth_required = true`` and two users made through its admin API (``POST
/api/cluster/user/create``) when ``MQ9_ROBUSTMQ_URL`` names its NATS port and
``MQ9_ROBUSTMQ_LOGINS`` the two logins as ``alice:secret,bob:secret``.
"""

from __future__ import annotations

import os
import uuid
from urllib.parse import urlsplit, urlunsplit

import pytest

from mq9_broker import BrokerEngine
from mq9_platform import Mq9Client
from mq9_wire.protocol import Mq9Error
from testbed.support.robustmq_shaped import RobustMQShapedListener

REAL = os.environ.get("MQ9_ROBUSTMQ_URL")
REAL_LOGINS = os.environ.get("MQ9_ROBUSTMQ_LOGINS")
SHAPED_LOGINS = {"alice": "alice-secret", "bob": "bob-secret"}


@pytest.fixture(params=["shaped", pytest.param("robustmq", marks=pytest.mark.slow)])
async def with_logins(request):
    """(URL without a login, [(user, password), (user, password)]) of a broker requiring logins."""
    if request.param == "robustmq":
        if not (REAL and REAL_LOGINS):
            pytest.skip(
                "set MQ9_ROBUSTMQ_URL and MQ9_ROBUSTMQ_LOGINS=alice:pw,bob:pw "
                "(a RobustMQ with auth_required) to check it too"
            )
        pairs = [login.split(":", 1) for login in REAL_LOGINS.split(",")]
        assert len(pairs) == 2, "MQ9_ROBUSTMQ_LOGINS names two logins"
        yield REAL, [(user, password) for user, password in pairs]
        return
    async with RobustMQShapedListener(BrokerEngine(), logins=SHAPED_LOGINS) as listener:
        yield listener.url, list(SHAPED_LOGINS.items())


def _url_for(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.hostname}:{parts.port}"))


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_right_password_logs_in_and_a_wrong_one_is_refused(with_logins):
    url, [(alice, password), _] = with_logins
    client = await Mq9Client(_url_for(url, alice, password), request_timeout=5.0).connect()
    try:  # fails without tls_required in the CONNECT: every publish refused (point 8)
        box = f"login.probe.{uuid.uuid4().hex[:8]}"
        assert await client.mailbox_create(name=box, ttl=60) == box
    finally:
        await client.close()
    for refused_url in (url, _url_for(url, alice, password + "-wrong")):
        client = Mq9Client(refused_url, request_timeout=3.0)
        with pytest.raises((Mq9Error, OSError)) as refused:
            await client.connect()
            await client.mailbox_create(name=f"login.probe.{uuid.uuid4().hex[:8]}", ttl=60)
        await client.close()
        said = str(refused.value).lower()
        assert "authoriz" in said or "credential" in said


async def test_another_login_reads_acks_deletes_and_unregisters_what_alice_made(with_logins):
    url, [(alice_user, alice_pw), (bob_user, bob_pw)] = with_logins
    alice = await Mq9Client(_url_for(url, alice_user, alice_pw)).connect()
    bob = await Mq9Client(_url_for(url, bob_user, bob_pw)).connect()
    try:
        box = f"alice.private.{uuid.uuid4().hex[:8]}"
        agent = f"alice.agent.{uuid.uuid4().hex[:8]}"
        await alice.mailbox_create(name=box, ttl=300)
        first = await alice.send(box, "for alice only: one")
        second = await alice.send(box, "for alice only: two")
        await alice.agent_register({"name": agent, "description": "alice's agent", "mailbox": box})

        # bob, logged in as himself, reads alice's mailbox ...
        seen = await bob.query(box)
        assert {m.payload for m in seen} >= {b"for alice only: one", b"for alice only: two"}
        # ... consumes it in a group of his choosing and acks ...
        fetched = await bob.fetch(box, group_name="bob-steals", deliver="earliest")
        assert {m.msg_id for m in fetched} >= {first, second}
        await bob.ack(box, "bob-steals", max(first, second))
        # ... deletes a message ...
        await bob.delete(box, first)
        left = {m.msg_id for m in await alice.query(box)}
        assert first not in left and second in left
        # ... and unregisters alice's agent
        await bob.agent_unregister(agent)
        assert agent not in {card["name"] for card in await alice.agent_discover()}
    finally:
        await alice.close()
        await bob.close()
