"""The broker's requests counted on the paths serve.py answers them by (#73): on the JetStream
store, whose answers wait for their record and go out together from its callback, and on a
``--credentials`` broker, whose ownership checks refuse what is not the requester's. The
counts are exact: what was asked, answered and refused."""

from __future__ import annotations

import uuid

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from mq9_broker import Broker
from mq9_broker.cli.metrics import broker_meter
from mq9_broker.config import BrokerConfig
from mq9_platform import Mq9Client
from mq9_platform.a2a.mail import HEADER_REPLY_TO
from mq9_wire.protocol.errors import MailboxNotFound, NotOwner
from testbed.support.credentials_support import issue
from testbed.support.jetstream_servers import JetStreamCluster

pytestmark = pytest.mark.slow  # nats-servers


class _Families:
    def __init__(self, meter):
        self.meter = meter

    def collect(self):
        return self.meter.families("t")


async def test_sends_on_the_jetstream_store_are_counted_once_stored():
    meter = broker_meter()
    with JetStreamCluster(1) as servers:
        config = BrokerConfig(
            nats=servers.urls[0], store="jetstream", stream=f"MX{uuid.uuid4().hex[:10]}",
            search=False,
        )  # fmt: skip
        async with Broker(config, say=lambda _: None, meter=meter) as broker:
            assert broker.url is not None
            async with Mq9Client(broker.url) as client:
                await client.mailbox_create(name="agent.js")
                for i in range(30):
                    await client.send("agent.js", f"m{i}")
                with pytest.raises(MailboxNotFound):
                    await client.send("agent.none", "x")
    counts = meter.counts()
    assert counts[("SEND", "ok")] == 30
    assert counts[("SEND", "refused")] == 1
    assert counts[("CREATE", "ok")] == 1


async def test_what_is_not_the_requesters_is_counted_as_refused_not_owner(tmp_path):
    """A second agent's tries at the first's mailbox, mailbox name, agent and reply mailbox:
    each refused, read back by the client as ``NotOwner``, and counted under ``not_owner``."""
    credentials = issue(tmp_path, "alice", "bob")
    meter = broker_meter()
    config = BrokerConfig(port=0, data=tmp_path, credentials=True, search=False)
    async with Broker(config, say=lambda _: None, meter=meter) as broker:
        assert broker.url is not None
        async with Mq9Client(broker.url, credential=credentials["alice"]) as a:
            await a.mailbox_create(name="agent.a.inbox")
            await a.mailbox_create(name="agent.a.replies")
            await a.send("agent.a.inbox", "mine")
            await a.agent_register(
                {"name": "agent.a", "capabilities": "does things", "mailbox": "agent.a.inbox"}
            )
        async with Mq9Client(broker.url, credential=credentials["bob"]) as b:
            await b.mailbox_create(name="agent.b.inbox")
            tries = {
                "FETCH": lambda: b.fetch("agent.a.inbox", group_name="g", max_wait_ms=0),
                "QUERY": lambda: b.query("agent.a.inbox"),
                "CREATE": lambda: b.mailbox_create(name="agent.a.inbox"),
                "REGISTER": lambda: b.agent_register(
                    {"name": "agent.a", "capabilities": "mine now", "mailbox": "agent.b.inbox"}
                ),
                "SEND": lambda: b.send(
                    "agent.a.inbox", "answer there", headers={HEADER_REPLY_TO: "agent.a.replies"}
                ),
            }
            for command, attempt in tries.items():
                with pytest.raises(NotOwner) as refused:
                    await attempt()
                assert refused.value.message.startswith(f"{command} refused: "), command
    counts = meter.counts()
    assert counts[("SEND", "ok")] == 1
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families(meter))
    text = generate_latest(registry).decode()
    for command in tries:
        assert counts[(command, "refused")] == 1, command
        assert f't_refusals_total{{command="{command}",reason="not_owner"}} 1.0' in text, text
    assert 'reason="other"' not in text, text
