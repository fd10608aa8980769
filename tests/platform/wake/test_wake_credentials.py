"""On the bundled broker with --credentials (#53), only a mailbox's reader may make its wake
rules: the rules mailbox ``mq9.wake.<digest>`` is derived from the mailbox, its owner's alone,
and the index takes every agent's entry (a digest, no name). Each waker's failed wakes are its
agent's own, and a wake's sender is the one the broker vouches for (#70)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from mq9_platform import Mq9Client
from mq9_platform.wake import (
    Deliverer,
    Limits,
    RuleBook,
    RuleError,
    Waker,
    WakeRule,
    failed_address,
    rules_address,
)
from mq9_platform.wake.rules import FAILED_ADDRESS
from mq9_wire.protocol.errors import Mq9Error
from testbed.support.credentials_support import EnforcingBroker

SECRET = "s3cret-s3cret-s3cret"
pytestmark = pytest.mark.slow  # a process: the enforcing dev broker


@pytest.fixture
def enforcing(tmp_path):
    broker = EnforcingBroker(tmp_path, "alice", "bob")
    yield broker
    broker.stop()


def rule(mailbox: str) -> WakeRule:
    return WakeRule(
        mailbox=mailbox, target="webhook", url="https://hooks.example.com/w", secret=SECRET
    )


def agent(enforcing, name: str) -> Mq9Client:
    """A client logged in as agent ``name``."""
    return Mq9Client(enforcing.url, credential=enforcing.credentials[name])


async def test_only_the_reader_adds_a_rule(enforcing):
    async with agent(enforcing, "alice") as alice, agent(enforcing, "bob") as bob:
        await alice.mailbox_create(name="agent.alice")
        await RuleBook(alice).add(rule("agent.alice"))
        assert [r.mailbox for r in await RuleBook(alice).list("agent.alice")] == ["agent.alice"]
        with pytest.raises(RuleError, match="belongs to another agent"):
            await RuleBook(bob).add(rule("agent.alice"))
        # nor around the book: the rules mailbox is alice's alone, to write and to read
        with pytest.raises(Mq9Error, match="another agent"):
            await bob.send(
                rules_address("agent.alice"),
                rule("agent.alice").to_json(),
                key="rule.evil",
                tags=["rule"],
            )
        with pytest.raises(Mq9Error, match="another agent"):
            await bob.query(rules_address("agent.alice"))
        # bob's own mailbox: his rules, listed in the same index
        await bob.mailbox_create(name="agent.bob")
        await RuleBook(bob).add(rule("agent.bob"))
        assert [r.name for r in await RuleBook(alice).list("agent.alice")] == ["default"]


async def test_a_tenants_waker_wakes_its_own_mailboxes_only(enforcing):
    async with agent(enforcing, "alice") as alice, agent(enforcing, "bob") as bob:
        await alice.mailbox_create(name="agent.alice2")
        await RuleBook(alice).add(
            WakeRule(mailbox="agent.alice2", target="callback", callback="seen", min_interval=0)
        )
        mine: list = []
        theirs: list = []
        # agents cannot hear announcements on this broker: each tenant's waker polls
        alices = await Waker(
            alice,
            Deliverer(callbacks={"seen": mine.append}),
            mailboxes=["agent.alice2"],
            poll_interval=0.05,
        ).start()
        bobs = await Waker(
            bob,
            Deliverer(callbacks={"seen": theirs.append}),
            mailboxes=["agent.alice2"],
            poll_interval=0.05,
        ).start()
        try:
            await bob.send("agent.alice2", "hello alice")  # anyone may send
            for _ in range(600):
                if mine:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert [w.mailbox for w in mine] == ["agent.alice2"]
            assert theirs == []  # bob's waker reads neither alice's rules nor her mailbox
        finally:
            await alices.stop()
            await bobs.stop()


async def test_each_wakers_failed_wakes_are_its_own(enforcing):
    """bob made ``mq9.wake.failed`` first and alice's waker could neither set a wake aside
    nor list its failures (#70): the failed-wakes mailbox is per agent, made by it alone."""
    async with agent(enforcing, "alice") as alice, agent(enforcing, "bob") as bob:
        with pytest.raises(Mq9Error):  # the plain name: nobody's on this broker
            await bob.mailbox_create(name=FAILED_ADDRESS)
        with pytest.raises(Mq9Error):  # alice's: hers alone to make
            await bob.mailbox_create(name=failed_address("alice"))
        await bob.mailbox_create(name=failed_address("bob"))  # his own: fine
        await alice.mailbox_create(name="agent.alice3")
        # a target the waker was not given: the wake is set aside, in alice's mailbox
        await RuleBook(alice).add(rule("agent.alice3"))
        waker = await Waker(
            alice, Deliverer(), mailboxes=["agent.alice3"], poll_interval=0.05
        ).start()
        try:
            assert waker.failed_address == failed_address("alice")
            await bob.send("agent.alice3", "hello")
            for _ in range(600):
                if waker.set_aside:
                    break
                await asyncio.sleep(0.05)
            (record,) = await alice.query(failed_address("alice"))
            assert "refused" in json.loads(record.payload)["reason"]
            with pytest.raises(Mq9Error, match="another agent"):
                await bob.query(failed_address("alice"))
        finally:
            await waker.stop()
        # mq9-wake failed, logged in as alice, lists hers
        listed = subprocess.run(
            [sys.executable, "-m", "mq9_platform.wake", "--server", enforcing.url, "failed"],
            env={**os.environ, "MQ9_CREDENTIAL": enforcing.credentials["alice"]},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert listed.returncode == 0, listed.stderr
        assert "refused" in listed.stdout


async def test_the_sender_of_a_wake_is_who_the_broker_says(enforcing):
    """A wake's ``sender`` (an Agent Server thread per sender) is the broker-written
    ``mq9-sender``: bob writing alice's name in that header, or a reply mailbox, changes
    nothing."""
    async with agent(enforcing, "alice") as alice, agent(enforcing, "bob") as bob:
        await alice.mailbox_create(name="agent.alice4")
        await RuleBook(alice).add(
            WakeRule(mailbox="agent.alice4", target="callback", callback="seen", min_interval=0)
        )
        seen: list = []
        waker = await Waker(
            alice,
            Deliverer(callbacks={"seen": seen.append}, limits=Limits(min_interval=0)),
            mailboxes=["agent.alice4"],
            poll_interval=0.05,
        ).start()
        try:
            # (a SEND may name only a mailbox of its sender's in mq9-reply-to: #70)
            await bob.mailbox_create(name="agent.bob4")
            await bob.send(
                "agent.alice4",
                "from 'alice'",
                headers={"mq9-sender": "alice", "mq9-reply-to": "agent.bob4"},
            )
            for _ in range(600):
                if seen:
                    break
                await asyncio.sleep(0.05)
            assert [w.sender for w in seen] == ["bob"]
        finally:
            await waker.stop()
