"""One trace across agents (issue #44): what one agent sends under a span is handled by
another as a child of that send, after the receiver restarted, on memory:// and the bundled
broker on nats-server; call_agent -> serve_agent -> result is one trace; several messages of
one fetch are links; nothing is added without an active trace."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from langchain_mq9.serving import AgentServer
from mq9_broker import Broker, BrokerConfig
from mq9_platform import Mq9Client, Mq9Error
from mq9_platform.a2a.caller import AgentCaller
from testbed.nats_server import start_nats_server
from testbed.support.a2a_support import text_graph, text_io

INBOX = "agent.worker"
AGENT = "agent.upper"


def named(spans, name: str):
    found = [s for s in spans.get_finished_spans() if s.name == name]
    assert len(found) == 1, [s.name for s in spans.get_finished_spans()]
    return found[0]


async def handled_once(client, mailbox: str) -> trace.SpanContext:
    """Consume ``mailbox`` until one message is handled: the span context it was handled in."""
    seen: asyncio.Queue = asyncio.Queue()

    async def handler(message) -> None:
        await seen.put(trace.get_current_span().get_span_context())

    consumer = await client.consume(mailbox, handler, group_name="workers", deliver="earliest")
    try:
        return await asyncio.wait_for(seen.get(), 10)
    finally:
        await consumer.stop()


async def test_a_task_handled_after_the_receiver_restarted_is_one_trace(broker, spans, tracer):
    async with broker.client() as receiver:  # the receiver runs once, then goes away
        await receiver.mailbox_create(name=INBOX)
        consumer = await receiver.consume(INBOX, lambda m: None, group_name="workers")
        await consumer.stop()
    async with broker.client() as sender:
        with tracer.start_as_current_span("plan the report") as task:
            msg_id = await sender.send(INBOX, {"task": "summarize"})
    async with broker.client() as receiver:  # a new process of the receiver
        handling = await handled_once(receiver, INBOX)

    send = named(spans, f"send {INBOX}")
    process = named(spans, f"process {INBOX}")
    assert send.parent.span_id == task.get_span_context().span_id
    assert process.parent.span_id == send.context.span_id and process.parent.is_remote
    assert {send.context.trace_id, process.context.trace_id} == {task.get_span_context().trace_id}
    assert handling.span_id == process.context.span_id  # the handler ran inside it
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert send.attributes["messaging.system"] == "mq9"
    assert send.attributes["messaging.destination.name"] == INBOX
    assert send.attributes["messaging.message.id"] == str(msg_id)
    assert process.attributes["messaging.message.id"] == str(msg_id)


async def test_without_an_active_trace_nothing_is_added(client, spans):
    await client.mailbox_create(name=INBOX)
    await client.send(INBOX, "plain")
    [message] = await client.fetch(INBOX, deliver="earliest")
    assert "traceparent" not in message.header and "langsmith-trace" not in message.header
    assert spans.get_finished_spans() == ()


async def test_one_fetch_of_several_links_each_send(client, spans, tracer):
    await client.mailbox_create(name=INBOX)
    sends = []
    for n in range(3):
        with tracer.start_as_current_span(f"task {n}") as task:
            await client.send(INBOX, f"job {n}")
        sends.append(task.get_span_context().trace_id)
    with tracer.start_as_current_span("read the inbox") as reading:
        got = await client.fetch(INBOX, group_name="workers", deliver="earliest")
    receive = named(spans, f"receive {INBOX}")
    assert receive.parent.span_id == reading.get_span_context().span_id
    assert receive.kind is SpanKind.CLIENT
    assert receive.attributes["messaging.batch.message_count"] == len(got) == 3
    assert receive.attributes["messaging.consumer.group.name"] == "workers"
    assert sorted(link.context.trace_id for link in receive.links) == sorted(sends)


async def test_a_failed_send_is_an_error_span(client, spans, tracer):
    with tracer.start_as_current_span("task"):
        try:
            await client.send("agent.nobody.here", "lost")
        except Exception as exc:
            error = type(exc).__qualname__
    send = named(spans, "send agent.nobody.here")
    assert send.attributes["error.type"] == error
    assert not send.status.is_ok


async def test_a_failed_fetch_is_an_error_span_over_the_whole_fetch(client, spans, tracer):
    with tracer.start_as_current_span("read") as reading, pytest.raises(Mq9Error) as failed:
        await client.fetch("agent.nobody.here", group_name="workers")
    receive = named(spans, "receive agent.nobody.here")
    assert receive.parent.span_id == reading.get_span_context().span_id
    assert receive.attributes["error.type"] == type(failed.value).__qualname__
    assert receive.attributes["messaging.batch.message_count"] == 0
    assert not receive.status.is_ok
    assert reading.start_time <= receive.start_time <= receive.end_time <= reading.end_time


async def test_call_agent_to_serve_agent_and_back_is_one_trace(client, spans, tracer):
    server = AgentServer(text_graph(str.upper), name=AGENT, client=client, worker="w1", **text_io())
    async with server:
        caller = await AgentCaller(client, "agent.boss.calls").open()
        with tracer.start_as_current_span("delegate") as delegate:
            done = await caller.call(AGENT, "summarize", wait=10)
    assert done.state == "TASK_STATE_COMPLETED", done
    trace_id = delegate.get_span_context().trace_id
    request = named(spans, f"send {AGENT}")
    handling = named(spans, f"process {AGENT}")
    assert handling.parent.span_id == request.context.span_id
    # The agent answers into the caller's reply mailbox while handling the request.
    answers = [s for s in spans.get_finished_spans() if s.name.startswith("send mq9.calls.")]
    assert any(s.parent.span_id == handling.context.span_id for s in answers)
    assert all(s.context.trace_id == trace_id for s in spans.get_finished_spans())


@pytest.mark.slow  # a nats-server, and the bundled broker on it twice
async def test_the_trace_outlives_a_restart_of_the_dev_broker(tmp_path, spans, tracer):
    """The bundled broker with storage (as ``mq9-dev-broker --nats URL --data PATH``),
    stopped and started again between the send and the handling: the context is stored with
    the message, so the trace goes on."""
    with start_nats_server() as nats_server:
        config = BrokerConfig(nats=nats_server.url, data=tmp_path / "data")
        async with Broker(config), Mq9Client(nats_server.url) as sender:
            await sender.mailbox_create(name=INBOX)
            with tracer.start_as_current_span("plan the report") as task:
                await sender.send(INBOX, {"task": "summarize"})
        async with Broker(config), Mq9Client(nats_server.url) as receiver:
            handling = await handled_once(receiver, INBOX)
    send = named(spans, f"send {INBOX}")
    process = named(spans, f"process {INBOX}")
    assert process.parent.span_id == send.context.span_id
    assert handling.trace_id == task.get_span_context().trace_id
