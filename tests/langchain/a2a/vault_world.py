"""The set-up of the A2A attacker tests (#70): on a ``--credentials`` dev broker, the served agent
``agent.vault`` under its own credential ``vault``, the caller ``victim`` (its ``AgentCaller``
at ``agent.victim``) and ``mallory``, a raw nats-py client holding her own valid credential.
Each file asks for the variation its attacks need (``world_fixture``): whether the agent is
served for the whole test or started by the test (to be offline while she sends), its graph,
whether it may push, more credentials, and whether mallory has a reply mailbox of her own.

Used by tests/langchain/a2a/test_owner_is_the_sender.py, test_task_ids_are_their_owners.py and
test_reply_mailbox_is_the_senders.py.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pytest
from nats.aio.client import Client as NatsConnection

from mq9_platform import Mq9Client
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.caller import AgentCaller
from mq9_platform.a2a.server import AgentServer
from mq9_platform.wake import Destinations
from mq9_wire import protocol as p
from testbed.support.a2a_support import asking, text_graph, text_io
from testbed.support.credentials_support import EnforcingBroker, ok

AGENT = "agent.vault"
CALLER = "agent.victim"
MINE = w.caller_address("mallory")  # mallory's own reply mailbox, when she has one


@dataclass
class World:
    broker: EnforcingBroker
    vault: Mq9Client
    victim: Mq9Client
    caller: AgentCaller
    mallory: NatsConnection
    work: Any  # the agent's graph's work (``asking``, a ``Counting``...)
    pushes: bool  # the agent may push to loopback
    server: AgentServer | None  # the agent served for the whole test, if the set-up serves it

    def agent(self) -> AgentServer:
        """The served agent (started by ``async with``; a second one reads on where the first
        stopped: the same worker of the same group)."""
        return _agent(self.vault, self.work, self.pushes)


def _agent(vault: Mq9Client, work: Any, pushes: bool) -> AgentServer:
    options: dict[str, Any] = text_io()
    if pushes:
        options["push_destinations"] = Destinations(hosts=["127.0.0.1/32"])
    return AgentServer(text_graph(work), name=AGENT, client=vault, worker="w1", **options)


def world_fixture(
    *,
    served: bool,
    work: Callable[[], Any] = lambda: asking,
    pushes: bool = False,
    also: Iterable[str] = (),
    mallorys_mailbox: bool = False,
) -> Any:
    """The fixture ``world`` of one file's attacks: ``served``, the agent is started before
    the test and stopped after it (else ``World.agent()`` for the test to start); ``work()``
    makes its graph's work; ``pushes``, it may push to loopback; ``also``, credentials besides
    vault, victim and mallory (a gateway's); ``mallorys_mailbox``, mallory has made ``MINE``."""
    names = ("vault", "victim", *also, "mallory")

    @pytest.fixture
    async def world(tmp_path) -> AsyncIterator[World]:
        broker = EnforcingBroker(tmp_path, *names)
        try:
            async with contextlib.AsyncExitStack() as stack:
                vault = await stack.enter_async_context(
                    Mq9Client(broker.url, credential=broker.credentials["vault"])
                )
                victim = await stack.enter_async_context(
                    Mq9Client(broker.url, credential=broker.credentials["victim"])
                )
                made = work()
                server = None
                if served:
                    server = await stack.enter_async_context(_agent(vault, made, pushes))
                caller = await AgentCaller(victim, CALLER).open()
                mallory = await broker.agent("mallory")
                stack.push_async_callback(mallory.close)
                if mallorys_mailbox:
                    await ok(mallory, "mallory", p.MAILBOX_CREATE, {"name": MINE, "ttl": 0})
                yield World(broker, vault, victim, caller, mallory, made, pushes, server)
        finally:
            broker.stop()

    return world
