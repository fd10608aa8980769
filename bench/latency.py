"""Targets 1–3: what the client and the tools add on top of a NATS round trip and LangChain.

Every "ours" and its baseline talk to the same canned responder (``bench.responders``), which
answers like a broker but does no work, so a ratio shows only what our code adds. The
bundled broker's own time is reported beside it (engine-served figures), not mixed in.
"""

import asyncio
import contextlib
import time
from typing import Any

import nats
from langchain_core.tools import BaseTool
from pydantic import BaseModel

from langchain_mq9 import Mq9Client, Mq9Toolkit
from langchain_mq9 import protocol as p
from langchain_mq9.operations import FetchMessagesInput, SendMessageInput

from .config import Config
from .infra import Network
from .measure import Stats, fmt_seconds, interleave_async, interleave_blocks
from .responders import PAYLOAD_SIZE
from .results import Check, Section

ADDRESS = "bench.latency"
PAYLOAD = b"x" * PAYLOAD_SIZE
TEXT = "x" * PAYLOAD_SIZE
TIMEOUT = 5.0
SEND_ARGS = {"mail_address": ADDRESS, "payload": TEXT}
FETCH_ARGS = {
    "mail_address": ADDRESS,
    "num_msgs": 10,
    "max_wait_ms": 0,
    # A positional read without a group: the same first ten every time (a group's reader
    # would hand each message out only once).
    "deliver": "from_id",
    "from_id": 0,
}
# The bytes Mq9Client puts on the wire for FETCH_ARGS.
FETCH_BODY = p.encode(
    {"deliver": "from_id", "from_id": 0, "config": {"num_msgs": 10, "max_wait_ms": 0}}
)


def tool_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """How an agent (LangGraph's ToolNode) invokes a tool: a ToolCall, answered by a
    ToolMessage."""
    return {"name": name, "args": args, "id": "call_bench", "type": "tool_call"}


# The baseline tools' _run/_arun carry no annotations on purpose: LangChain resolves them on
# every call, and the baseline must be the cheapest bare tool there is.


class RawRequestTool(BaseTool):
    """The baseline: a bare tool with the same name and args schema whose whole body is one
    raw nats-py request of the same bytes. No parsing, no shaping."""

    description: str = "baseline"
    response_format: str = "content_and_artifact"
    nc: Any = None
    subject: str = ""
    body: bytes = b""

    async def _arun(self, **kwargs):
        reply = await self.nc.request(self.subject, self.body, timeout=TIMEOUT)
        return reply.data.decode(), None

    def _run(self, **kwargs):
        raise NotImplementedError


class ConnectPerCallTool(BaseTool):
    """What a tool without a shared connection does: connect, request, drain, every call."""

    description: str = "connect per call"
    response_format: str = "content_and_artifact"
    url: str = ""
    subject: str = ""
    body: bytes = b""

    async def _arun(self, **kwargs):
        nc = await nats.connect(self.url)
        try:
            reply = await nc.request(self.subject, self.body, timeout=TIMEOUT)
        finally:
            await nc.drain()
        return reply.data.decode(), None

    def _run(self, **kwargs):
        raise NotImplementedError


def _bare(schema: type[BaseModel], name: str, **fields: Any) -> RawRequestTool:
    return RawRequestTool(name=name, args_schema=schema, **fields)


def _ratio_check(
    key: str,
    title: str,
    results: dict[str, Stats],
    ours: str,
    baseline: str,
    op: str,
    limit: float,
    *,
    inverse: bool = False,
    note: str = "",
) -> Check:
    a, b = results[ours].median, results[baseline].median
    return Check(
        key=key,
        title=title,
        ours_label=ours,
        ours=fmt_seconds(a),
        baseline_label=baseline,
        baseline=fmt_seconds(b),
        ratio=(b / a) if inverse else (a / b),
        op=op,
        limit=limit,
        ratio_label="baseline / ours" if inverse else "ours / baseline",
        note=note,
    )


def _figures(prefix: str, results: dict[str, Stats]) -> list[tuple[str, str]]:
    return [
        (
            f"{prefix}: {name}",
            f"median {fmt_seconds(s.median)}, p90 {fmt_seconds(s.quantile(0.9))}, n={s.n}",
        )
        for name, s in results.items()
    ]


async def _async_part(cfg: Config, net: Network, section: Section, kit: Mq9Toolkit) -> None:
    control = await nats.connect(net.url)
    await net.serve(control, "canned", fetch_count=10)
    client = await Mq9Client(net.url).connect()
    raw = await nats.connect(net.url)
    send_subject, fetch_subject = p.send_subject(ADDRESS), p.fetch_subject(ADDRESS)
    try:
        # -- 1: Mq9Client.send against a raw request of the same bytes -----------------------
        async def client_send() -> None:
            await client.send(ADDRESS, PAYLOAD)

        async def raw_send() -> None:
            await raw.request(send_subject, PAYLOAD, timeout=TIMEOUT)

        rounds, block = cfg.client_rounds
        one = await interleave_async(
            {"Mq9Client.send": client_send, "raw nats-py request": raw_send},
            rounds=rounds,
            block=block,
        )
        section.checks.append(
            _ratio_check(
                "1",
                "Mq9Client.send over NATS vs raw nats-py request (canned responder)",
                one,
                "Mq9Client.send",
                "raw nats-py request",
                "<=",
                1.15,
            )
        )
        section.figures += _figures("1", one)

        # -- 2: the tools against a bare tool doing one raw request ------------------------
        tools = {t.name: t for t in kit.get_tools()}
        same_loop = {t.name: t for t in Mq9Toolkit(client=client).get_tools()}
        bare_send_tool = _bare(
            SendMessageInput, "send_message", nc=raw, subject=send_subject, body=PAYLOAD
        )
        bare_fetch = _bare(
            FetchMessagesInput, "fetch_messages", nc=raw, subject=fetch_subject, body=FETCH_BODY
        )
        send_call = tool_call("send_message", SEND_ARGS)
        fetch_call = tool_call("fetch_messages", FETCH_ARGS)
        rounds, block = cfg.tool_rounds
        for key, name, call, bare in (
            ("2a", "send_message", send_call, bare_send_tool),
            ("2b", "fetch_messages", fetch_call, bare_fetch),
        ):
            ours, mine = tools[name], same_loop[name]

            async def ours_call(ours=ours, call=call) -> None:
                await ours.ainvoke(call)

            async def bare_call(bare=bare, call=call) -> None:
                await bare.ainvoke(call)

            async def mine_call(mine=mine, call=call) -> None:
                await mine.ainvoke(call)

            subject, body = bare.subject, bare.body

            async def raw_call(subject=subject, body=body) -> None:
                await raw.request(subject, body, timeout=TIMEOUT)

            results = await interleave_async(
                {
                    f"{name} tool ainvoke": ours_call,
                    "bare tool + raw request": bare_call,
                    f"{name} tool, client= on the caller's loop": mine_call,
                    "raw request alone": raw_call,
                },
                rounds=rounds,
                block=block,
            )
            what = "10 messages" if name == "fetch_messages" else "200 bytes"
            section.checks.append(
                _ratio_check(
                    key,
                    f"{name} tool ainvoke ({what}) vs bare no-op BaseTool + raw request",
                    results,
                    f"{name} tool ainvoke",
                    "bare tool + raw request",
                    "<=",
                    1.3,
                )
            )
            section.figures += _figures(key, results)

        # -- 3: against connecting per call --------------------------------------------------
        per_call = ConnectPerCallTool(
            name="send_message",
            args_schema=SendMessageInput,
            url=net.url,
            subject=send_subject,
            body=PAYLOAD,
        )
        send_tool = tools["send_message"]

        async def ours_send() -> None:
            await send_tool.ainvoke(send_call)

        async def per_call_send() -> None:
            await per_call.ainvoke(send_call)

        async def bare_send() -> None:
            await bare_send_tool.ainvoke(send_call)

        async def raw_connect_per_call() -> None:
            nc = await nats.connect(net.url)
            try:
                await nc.request(send_subject, PAYLOAD, timeout=TIMEOUT)
            finally:
                await nc.drain()

        rounds, block = cfg.connect_rounds
        three = await interleave_async(
            {
                "send_message tool ainvoke": ours_send,
                "connect-per-call tool": per_call_send,
                "bare tool + raw request": bare_send,
                "Mq9Client.send": client_send,
                "connect + request + drain (no tool)": raw_connect_per_call,
            },
            rounds=rounds,
            block=block,
            warmup=2,
        )
        section.checks.append(
            _ratio_check(
                "3a",
                "send_message tool vs a connect-per-call tool (connect, request, drain)",
                three,
                "send_message tool ainvoke",
                "connect-per-call tool",
                ">=",
                3.0,
                inverse=True,
            )
        )
        section.figures += _figures("3a", three)
        ceiling = three["connect-per-call tool"].median / three["bare tool + raw request"].median
        section.figures.append(
            (
                "3a: the most any tool could reach (connect-per-call tool / bare tool)",
                f"{ceiling:.2f}× — LangChain's own cost per call is in both sides of the ratio",
            )
        )
        transport_level = (
            three["connect + request + drain (no tool)"].median / three["Mq9Client.send"].median
        )
        section.figures.append(
            (
                "3a: without LangChain (connect + request + drain / Mq9Client.send)",
                f"{transport_level:.2f}×",
            )
        )

        # -- the same calls served by the bundled broker (its own work included) -------------
        await net.serve(control, "engine")
        with contextlib.suppress(p.Mq9Error):  # kept from an earlier run on this broker
            await client.mailbox_create(name=ADDRESS)
        for _ in range(20):
            await client.send(ADDRESS, PAYLOAD)

        async def engine_fetch() -> None:
            await tools["fetch_messages"].ainvoke(fetch_call)

        served = await interleave_async(
            {
                "Mq9Client.send": client_send,
                "raw request (SEND)": raw_send,
                "send_message tool ainvoke": ours_send,
                "fetch_messages tool ainvoke (10 messages)": engine_fetch,
            },
            rounds=max(2, rounds),
            block=block,
        )
        section.figures += _figures("engine-served", served)
        await net.serve(control, "canned", fetch_count=10)
    finally:
        await client.close()
        await raw.close()
        await control.close()


def _sync_part(cfg: Config, section: Section, kit: Mq9Toolkit) -> None:
    """3b/3c: ``invoke`` from plain code and from inside a running loop, against ``ainvoke``."""
    tool = {t.name: t for t in kit.get_tools()}["send_message"]
    call = tool_call("send_message", SEND_ARGS)
    loop = asyncio.new_event_loop()
    clock = time.perf_counter

    def plain(n: int) -> list[float]:
        out = []
        for _ in range(n):
            started = clock()
            tool.invoke(call)
            out.append(clock() - started)
        return out

    async def timed_ainvoke(n: int) -> list[float]:
        out = []
        for _ in range(n):
            started = clock()
            await tool.ainvoke(call)
            out.append(clock() - started)
        return out

    async def timed_invoke_in_loop(n: int) -> list[float]:
        return plain(n)  # a sync call made while this loop runs (a notebook cell)

    try:
        rounds, block = cfg.sync_rounds
        results = interleave_blocks(
            {
                "invoke, plain code": plain,
                "ainvoke": lambda n: loop.run_until_complete(timed_ainvoke(n)),
                "invoke inside a running loop": lambda n: loop.run_until_complete(
                    timed_invoke_in_loop(n)
                ),
            },
            rounds=rounds,
            block=block,
        )
    finally:
        loop.close()
    for key, name in (("3b", "invoke, plain code"), ("3c", "invoke inside a running loop")):
        section.checks.append(
            _ratio_check(
                key,
                f"send_message tool: sync {name} vs ainvoke",
                results,
                name,
                "ainvoke",
                "<=",
                1.3,
            )
        )
    section.figures += _figures("3b/3c", results)


def run(cfg: Config, net: Network) -> Section:
    section = Section("latency", "Client and tool overhead over NATS (targets 1–3)")
    kit = Mq9Toolkit(server=net.url)
    try:
        asyncio.run(_async_part(cfg, net, section, kit))
        _sync_part(cfg, section, kit)
    finally:
        kit.close()
    section.notes.append(
        "Every ratio compares two things measured alternately in the same run against the "
        "same canned responder (a separate process on the same nats-server that answers like a "
        "broker but does no work). Payload 200 bytes; FETCH returns 10 such messages."
    )
    section.notes.append(
        "The `client= on the caller's loop` rows are a toolkit built on an Mq9Client opened in "
        "the benchmark's own loop: the difference to the `server=` toolkit is the hand-over to "
        "the shared connection's background thread."
    )
    return section
