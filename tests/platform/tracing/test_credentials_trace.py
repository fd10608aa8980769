"""A credentialed agent traced end to end (issue #53): the spans of its SEND, FETCH and the
handling of a message on the enforcing broker carry no part of its credential's secret, nor a
refusal's (docs/tracing.md's spans, OpenTelemetry's in-memory exporter)."""

from __future__ import annotations

import asyncio

import pytest

from mq9_platform import Mq9Client
from mq9_wire.protocol.errors import Mq9Error
from testbed.support.credentials_support import EnforcingBroker

pytestmark = pytest.mark.slow  # a dev broker process


def _everything(span) -> str:
    """All a span exports: its name, attributes, events, status and links, as text."""
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    return repr((span.name, dict(span.attributes or {}), events, span.status.description))


async def test_no_span_of_a_credentialed_agent_shows_its_secret(tmp_path, spans, tracer):
    broker = EnforcingBroker(tmp_path, "alice", "bob")
    alice, bob = broker.credentials["alice"], broker.credentials["bob"]
    try:
        async with (
            Mq9Client(broker.address(alice)) as agent,  # the credential in the URL
            Mq9Client(broker.url, credential=bob) as other,
        ):
            box = await agent.mailbox_create(name="alice.traced")
            handled = asyncio.Event()
            consumer = await agent.consume(box, lambda _: handled.set(), group_name="g")
            with tracer.start_as_current_span("alice's run"):
                await agent.send(box, "traced")
                await agent.fetch(box, deliver="earliest")
                with pytest.raises(Mq9Error, match="belongs to another agent"):
                    await other.fetch(box)  # a refusal, in a span too
            await asyncio.wait_for(handled.wait(), 20)
            await consumer.stop()
    finally:
        broker.stop()
    finished = spans.get_finished_spans()
    names = {span.name for span in finished}
    assert len(finished) >= 4 and any("send" in name for name in names), names
    for span in finished:
        shown = _everything(span)
        for credential in (alice, bob):
            assert credential.partition(":")[2] not in shown, shown
