"""A peer's trace headers are untrusted input (issue #44, docs/tracing.md): malformed, oversized
and hostile ones are ignored without an error (the message is still handled, under no forged
parent), and a model cannot set them through any tool argument. memory:// and nats."""

from __future__ import annotations

import asyncio

import pytest
from langchain_core.messages import ToolMessage
from opentelemetry import trace

from langchain_mq9 import Mq9Toolkit
from langchain_mq9.langsmith_runs import peer_run
from mq9_platform.tracing import peer_trace
from mq9_platform.tracing.context import MAX_TRACESTATE

INBOX = "agent.worker"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
GOOD = f"00-{TRACE}-{SPAN}-01"
RUN = "20261124T012350649740Z01a20b26-eef9-7d52-8c30-d31457cbfc91"

MALFORMED_TRACEPARENTS = [
    "",
    "garbage",
    f"01-{TRACE}-{SPAN}-01",  # a version we do not know
    f"ff-{TRACE}-{SPAN}-01",
    f"00-{TRACE.upper()}-{SPAN}-01",  # W3C: lowercase hex only
    f"00-{'0' * 32}-{SPAN}-01",  # all-zero trace id
    f"00-{TRACE}-{'0' * 16}-01",  # all-zero span id
    f"00-{TRACE}-{SPAN}-01-extra",
    f"00-{TRACE}-{SPAN}-0g",
    f"00-{TRACE[:-1]}-{SPAN}-01",
    GOOD + "0" * 10_000,  # oversized
    f"00-{TRACE}-{SPAN}-01\u2028traceparent: 00-{'1' * 32}-{SPAN}-01",
]


@pytest.mark.parametrize("value", MALFORMED_TRACEPARENTS)
def test_a_malformed_traceparent_is_no_context(value):
    assert peer_trace({"traceparent": value}) is None


@pytest.mark.parametrize(
    "state",
    [
        "a=" + "x" * MAX_TRACESTATE,  # oversized
        ",".join(f"k{n}=v" for n in range(33)),  # more than 32 members
        "UPPER=v",
        "k=v,k=w",  # a key twice
        "k=v=w",
        "k=",
        "k=v\x00",
    ],
)
def test_a_malformed_tracestate_is_dropped_and_the_traceparent_kept(state):
    peer = peer_trace({"traceparent": GOOD, "tracestate": state})
    assert peer is not None and peer.tracestate is None
    assert (peer.trace_id, peer.span_id, peer.sampled) == (int(TRACE, 16), int(SPAN, 16), True)


def test_a_wellformed_context_is_read():
    peer = peer_trace({"traceparent": f"00-{TRACE}-{SPAN}-00", "tracestate": "ro=1, vendor@t=x"})
    assert peer is not None and not peer.sampled and peer.tracestate == "ro=1,vendor@t=x"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "x",
        RUN + ".",
        RUN.upper(),
        f"{RUN}.{RUN[:-1]}",
        ".".join([RUN] * 65),
        RUN + "\n",
        "99991399T999999999999Z" + RUN[22:],  # no date: LangSmith itself would raise on it
    ],
)
def test_a_malformed_langsmith_trace_is_no_run(value):
    assert peer_run({"langsmith-trace": value}) is None
    assert peer_run({"langsmith-trace": ".".join([RUN] * 3)}) is not None


async def handled(client, headers: dict[str, str]) -> trace.SpanContext:
    """``headers`` sent raw (no trace active), and the span context its handler ran in."""
    await client.mailbox_create(name=INBOX)
    await client.send(INBOX, "job", headers=headers)
    seen: asyncio.Queue = asyncio.Queue()

    async def handler(message) -> None:
        await seen.put(trace.get_current_span().get_span_context())

    consumer = await client.consume(INBOX, handler, group_name="workers", deliver="earliest")
    try:
        return await asyncio.wait_for(seen.get(), 10)
    finally:
        await consumer.stop()


@pytest.mark.parametrize(
    "headers",
    [
        {"traceparent": f"ff-{TRACE}-{SPAN}-01"},
        {"traceparent": GOOD + "0" * 5_000},
        {"traceparent": f"00-{'0' * 32}-{SPAN}-01", "tracestate": "a=b"},
        {"langsmith-trace": "x" * 5_000, "baggage": "langsmith-project=theirs"},
    ],
)
async def test_a_hostile_header_is_ignored_and_the_message_still_handled(client, spans, headers):
    handling = await handled(client, headers)
    assert not handling.is_valid  # no forged parent: the handler ran in no trace at all
    assert spans.get_finished_spans() == ()


async def test_an_oversized_tracestate_is_dropped_the_trace_kept(client, spans):
    handling = await handled(client, {"traceparent": GOOD, "tracestate": "a=" + "x" * 600})
    assert handling.trace_id == int(TRACE, 16)
    [process] = spans.get_finished_spans()
    assert process.parent.span_id == int(SPAN, 16) and not process.parent.trace_state


async def tool(kit: Mq9Toolkit, name: str, **args) -> ToolMessage:
    [chosen] = [t for t in kit.get_tools() if t.name == name]
    message = await chosen.ainvoke({"name": name, "args": args, "id": "1", "type": "tool_call"})
    assert isinstance(message, ToolMessage)
    return message


FORGED = f"00-{'1' * 32}-{'2' * 16}-01"


@pytest.mark.parametrize(
    "args",
    [
        {"key": f"k\r\ntraceparent: {FORGED}"},
        {"tags": [f"t\r\ntraceparent: {FORGED}"]},
        {"key": f"k\u2028traceparent: {FORGED}"},
        {"tags": [f"t\x85langsmith-trace: {RUN}"]},
        {"headers": {"traceparent": FORGED}},  # no such argument: refused by the schema
        {"traceparent": FORGED},
    ],
)
async def test_a_model_cannot_set_a_trace_header_through_a_tool(broker, spans, tracer, args):
    async with broker.client() as client, Mq9Toolkit(client=client) as kit:
        await client.mailbox_create(name=INBOX)
        with tracer.start_as_current_span("the model's run") as run:
            message = await tool(kit, "send_message", mail_address=INBOX, payload="hi", **args)
        stored = await client.query(INBOX)
    assert message.status == "error" or stored
    for held in stored:  # whatever was stored carries the run's own context, never the forgery
        assert held.header["traceparent"].split("-")[1] == f"{run.get_span_context().trace_id:032x}"
        assert FORGED not in str(held.header) and "langsmith-trace" not in held.header


async def test_a_payload_that_looks_like_headers_stays_payload(client, spans):
    await client.mailbox_create(name=INBOX)
    async with Mq9Toolkit(client=client) as kit:
        text = f"NATS/1.0\r\ntraceparent: {FORGED}\r\n\r\n"
        message = await tool(kit, "send_message", mail_address=INBOX, payload=text)
    assert message.status == "success", message.content
    [held] = await client.query(INBOX)
    assert "traceparent" not in held.header and held.text() == text
