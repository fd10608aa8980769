"""Targets 1–3: what the client and the tools add on top of a NATS round trip and LangChain.

Every "ours" and its baseline talk to the same canned responder (``bench.responders``), which
answers like a broker but does no work, so a ratio shows only what our code adds. The
bundled broker's own time is reported beside it (engine-served figures), not mixed in.
"""

import asyncio
import contextlib
import threading
import time
from typing import Any

import nats
from langchain_core.tools import BaseTool
from pydantic import BaseModel

from langchain_mq9 import GroupReader, Mq9Client, Mq9Toolkit
from mq9_platform.operations.catalog import (
    FetchMessagesInput,
    QueryMessagesInput,
    SendMessageInput,
)
from mq9_wire import protocol as p

from .config import Config
from .infra import Network
from .measure import (
    Stats,
    fmt_seconds,
    interleave_async,
    interleave_async_blocks,
    interleave_blocks,
)
from .responders import PAYLOAD_SIZE
from .results import Check, Section

ADDRESS = "bench.latency"
PAYLOAD = b"x" * PAYLOAD_SIZE
TEXT = "x" * PAYLOAD_SIZE
TIMEOUT = 5.0
SEND_ARGS = {"mail_address": ADDRESS, "payload": TEXT}
# A look that consumes nothing: one QUERY, answered with 10 messages.
QUERY_ARGS = {"mail_address": ADDRESS}
# fetch_messages as an agent calls it: the toolkit's group (10 messages a fetch), its worker
# claiming each message.
GROUP_ARGS = {"mail_address": ADDRESS, "max_wait_ms": 0}
GROUP = "default"
# The connection count (3d) looks for the connections of a toolkit with this client name.
MIXED_NAME = "bench-mixed"


def tool_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """How an agent (LangGraph's ToolNode) invokes a tool: a ToolCall, answered by a
    ToolMessage."""
    return {"name": name, "args": args, "id": "call_bench", "type": "tool_call"}


# The baseline tools' _run/_arun carry no annotations on purpose: LangChain resolves them on
# every call, and the baseline must be the cheapest bare tool there is.


class RawRequestTool(BaseTool):
    """The baseline: a bare tool with the same name and args schema whose whole body is the
    raw nats-py requests the mq9 tool makes (recorded from it: the same subjects, bytes and
    headers, one after another as the tool sends them). No parsing, no shaping."""

    description: str = "baseline"
    response_format: str = "content_and_artifact"
    nc: Any = None
    requests: tuple = ()

    async def _arun(self, **kwargs):
        data = b""
        for subject, body, headers in self.requests:
            reply = await self.nc.request(subject, body, timeout=TIMEOUT, headers=headers)
            data += reply.data
        return data.decode(), None

    def _run(self, **kwargs):
        raise NotImplementedError


class ConnectPerCallTool(BaseTool):
    """What a tool without a shared connection does: connect, request, drain, every call."""

    description: str = "connect per call"
    response_format: str = "content_and_artifact"
    url: str = ""
    request: tuple = ()

    async def _arun(self, **kwargs):
        subject, body, headers = self.request
        nc = await nats.connect(self.url)
        try:
            reply = await nc.request(subject, body, timeout=TIMEOUT, headers=headers)
        finally:
            await nc.drain()
        return reply.data.decode(), None

    def _run(self, **kwargs):
        raise NotImplementedError


class GroupReaderTool(BaseTool):
    """The baseline for a group read: a bare tool whose whole body is the ``GroupReader.fetch``
    the fetch_messages tool makes (FETCH, claim SEND, claim QUERY: the same requests, the same
    bytes) on an Mq9Client, with none of the tool's validation, policy or shaping."""

    description: str = "baseline"
    response_format: str = "content_and_artifact"
    reader: Any = None

    async def _arun(self, **kwargs):
        batch = await self.reader.fetch(num_msgs=10, max_wait_ms=0)
        return "", batch

    def _run(self, **kwargs):
        raise NotImplementedError


async def _requests_of(tool: BaseTool, call: dict[str, Any], client: Mq9Client) -> list[tuple]:
    """The (subject, body, headers) of every request ``tool`` (built on ``client``) makes."""
    transport, made = client._transport, []
    request = transport.request

    async def record(subject, body, headers, timeout):
        made.append((subject, bytes(body), dict(headers) if headers else None))
        return await request(subject, body, headers, timeout)

    transport.request = record
    try:
        await tool.ainvoke(call)
    finally:
        del transport.request
    return made


async def _bare(schema: type[BaseModel], call: dict, tool: BaseTool, client, nc) -> RawRequestTool:
    """The bare tool for ``tool``'s requests (``tool`` runs on ``client``): a send is one; a
    look (query_messages) is its QUERY and the one-message FETCH that tells a full page from
    an answer the broker cut (operations/pages.py)."""
    made = await _requests_of(tool, call, client)
    if not made:
        raise RuntimeError(f"{tool.name} made no request")
    return RawRequestTool(name=tool.name, args_schema=schema, nc=nc, requests=tuple(made))


def _timed_group_reads(fetch, ack):
    """A runner for ``interleave_async_blocks``: ``n`` timed group fetches, each followed by an
    untimed ``ack(batch)`` of what it handed out, so every fetch finds the reader in the same
    state."""

    async def run(n: int) -> list[float]:
        clock, out = time.perf_counter, []
        for _ in range(n):
            started = clock()
            batch = await fetch()
            out.append(clock() - started)
            if len(batch) != 10:
                raise RuntimeError(f"a group fetch handed out {len(batch)} messages, not 10")
            await ack(batch)
        return out

    return run


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
    await net.serve(control, "canned", fetch_count=10, groups=True)
    client = await Mq9Client(net.url).connect()
    raw = await nats.connect(net.url)
    send_subject = p.send_subject(ADDRESS)
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

        # -- 2: the tools against a bare tool doing the same requests ----------------------
        tools = {t.name: t for t in kit.get_tools()}
        same_loop = {t.name: t for t in Mq9Toolkit(client=client).get_tools()}
        send_call = tool_call("send_message", SEND_ARGS)
        query_call = tool_call("query_messages", QUERY_ARGS)
        bare_send_tool = await _bare(
            SendMessageInput, send_call, same_loop["send_message"], client, raw
        )
        bare_query = await _bare(
            QueryMessagesInput, query_call, same_loop["query_messages"], client, raw
        )
        rounds, block = cfg.tool_rounds
        for key, name, call, bare in (
            ("2a", "send_message", send_call, bare_send_tool),
            ("2c", "query_messages", query_call, bare_query),
        ):
            ours, mine = tools[name], same_loop[name]

            async def ours_call(ours=ours, call=call) -> None:
                await ours.ainvoke(call)

            async def bare_call(bare=bare, call=call) -> None:
                await bare.ainvoke(call)

            async def mine_call(mine=mine, call=call) -> None:
                await mine.ainvoke(call)

            async def raw_call(requests=bare.requests) -> None:
                for subject, body, headers in requests:
                    await raw.request(subject, body, timeout=TIMEOUT, headers=headers)

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
            what = "a look at 10 messages" if key == "2c" else "200 bytes"
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
        await _group_read(cfg, section, tools, same_loop, client)

        # -- 3: against connecting per call --------------------------------------------------
        per_call = ConnectPerCallTool(
            name="send_message",
            args_schema=SendMessageInput,
            url=net.url,
            request=bare_send_tool.requests[0],
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
        # LangChain's own cost per call is on both sides of "connect-per-call tool / ours", so
        # that ratio can never reach what connecting costs: the target is the share of the
        # time a connect-per-call tool loses that ours saves, against the most any tool could
        # save (a bare tool making one raw request on a shared connection).
        per_call = three["connect-per-call tool"].median
        ours = three["send_message tool ainvoke"].median
        best = three["bare tool + raw request"].median
        section.checks.append(
            Check(
                key="3a",
                title="send_message tool vs the best a tool could do (bare tool + raw request), "
                "in time saved against a connect-per-call tool (connect, request, drain)",
                ours_label="saved by send_message tool",
                ours=fmt_seconds(per_call - ours),
                baseline_label="saved by bare tool + raw request",
                baseline=fmt_seconds(per_call - best),
                ratio=(per_call - ours) / (per_call - best),
                op=">=",
                limit=0.9,
                ratio_label="ours / best",
            )
        )
        section.figures += _figures("3a", three)
        section.figures.append(
            (
                "3a: connect-per-call tool / send_message tool (information)",
                f"{per_call / ours:.2f}× (a bare tool + raw request: {per_call / best:.2f}×; "
                "LangChain's own cost per call is in both sides of these ratios)",
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

        async def engine_query() -> None:
            await tools["query_messages"].ainvoke(query_call)

        served = await interleave_async(
            {
                "Mq9Client.send": client_send,
                "raw request (SEND)": raw_send,
                "send_message tool ainvoke": ours_send,
                "query_messages tool ainvoke (20 messages)": engine_query,
            },
            rounds=max(2, rounds),
            block=block,
        )
        section.figures += _figures("engine-served", served)
        await net.serve(control, "canned", fetch_count=10, groups=True)
    finally:
        await client.close()
        await raw.close()
        await control.close()


async def _group_read(
    cfg: Config, section: Section, tools: dict, same_loop: dict, client: Mq9Client
) -> None:
    """2b: fetch_messages as agents use it (a group read by the group's one reader), against a
    bare tool making the same ``GroupReader.fetch``: what the tool adds on top of it. Beside
    it, the reader against one FETCH of the group (what the reader adds: one request, the
    bookkeeping), and a competing worker's read (FETCH, claim SEND, lease QUERY), reported."""
    reader = GroupReader(client, ADDRESS, GROUP)
    alone = GroupReader(client, ADDRESS, GROUP)
    worker = GroupReader(client, ADDRESS, GROUP, worker="bench-worker")
    bare = GroupReaderTool(name="fetch_messages", args_schema=FetchMessagesInput, reader=reader)
    call = tool_call("fetch_messages", GROUP_ARGS)

    def through(kit_tools: dict):
        fetch_tool, ack_tool = kit_tools["fetch_messages"], kit_tools["ack_messages"]

        async def fetch() -> list:
            return (await fetch_tool.ainvoke(call)).artifact

        async def ack(batch: list) -> None:  # acks everything handed out up to the last one
            args = {"mail_address": ADDRESS, "msg_id": batch[-1].msg_id}
            answer = await ack_tool.ainvoke(tool_call("ack_messages", args))
            if answer.status != "success":
                raise RuntimeError(f"ack_messages failed: {answer.content}")

        return _timed_group_reads(fetch, ack)

    async def bare_fetch() -> list:
        return (await bare.ainvoke(call)).artifact

    async def one_fetch() -> list:
        return await client.fetch(ADDRESS, group_name=GROUP, num_msgs=10, max_wait_ms=0)

    async def nothing(batch: list) -> None:
        return None

    def done(reader: GroupReader):
        async def ack(batch: list) -> None:
            await reader.done([m.msg_id for m in batch])

        return ack

    rounds, block = cfg.tool_rounds
    results = await interleave_async_blocks(
        {
            "fetch_messages tool ainvoke (group read)": through(tools),
            "bare tool + the same GroupReader.fetch": _timed_group_reads(bare_fetch, done(reader)),
            "fetch_messages tool, client= on the caller's loop": through(same_loop),
            "GroupReader.fetch, the group's one reader": _timed_group_reads(
                lambda: alone.fetch(num_msgs=10, max_wait_ms=0), done(alone)
            ),
            "one FETCH of the group (client.fetch)": _timed_group_reads(one_fetch, nothing),
            "GroupReader.fetch, a competing worker (FETCH, claim SEND, lease QUERY)": (
                _timed_group_reads(lambda: worker.fetch(num_msgs=10, max_wait_ms=0), done(worker))
            ),
        },
        rounds=rounds,
        block=block,
    )
    section.checks.append(
        _ratio_check(
            "2b",
            "fetch_messages tool ainvoke (group read, 10 messages) vs a bare BaseTool making "
            "the same GroupReader.fetch",
            results,
            "fetch_messages tool ainvoke (group read)",
            "bare tool + the same GroupReader.fetch",
            "<=",
            1.3,
        )
    )
    section.checks.append(
        _ratio_check(
            "2b-reader",
            "GroupReader.fetch by the group's one reader vs one FETCH of the group",
            results,
            "GroupReader.fetch, the group's one reader",
            "one FETCH of the group (client.fetch)",
            "<=",
            1.2,
        )
    )
    section.checks.append(await _requests_per_fetch(client))
    section.figures += _figures("2b", results)
    worker_ratio = (
        results["GroupReader.fetch, a competing worker (FETCH, claim SEND, lease QUERY)"].median
        / results["one FETCH of the group (client.fetch)"].median
    )
    section.figures.append(("2b: a competing worker's fetch / one FETCH", f"{worker_ratio:.2f}×"))


async def _requests_per_fetch(client: Mq9Client, fetches: int = 50) -> Check:
    """2b-requests: requests the group's one reader sends per fetch (its acks come with done)."""
    reader = GroupReader(client, ADDRESS, GROUP)
    inner, sent = client._transport, 0

    class Counting:
        def __getattr__(self, name):
            return getattr(inner, name)

        async def request(self, *args):
            nonlocal sent
            sent += 1
            return await inner.request(*args)

    client._transport = Counting()
    try:
        for _ in range(fetches):
            before = sent
            batch = await reader.fetch(num_msgs=10, max_wait_ms=0)
            during = sent - before
            await reader.done([m.msg_id for m in batch])
            sent = before + during  # the ack is done's, not the fetch's
    finally:
        client._transport = inner
    return Check(
        key="2b-requests",
        title="requests per fetch of the group's one reader vs one FETCH",
        ours_label="requests per GroupReader.fetch",
        ours=f"{sent / fetches:.2f}",
        baseline_label="one FETCH",
        baseline="1",
        ratio=sent / fetches,
        op="<=",
        limit=1.1,
    )


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


def _end(loop: asyncio.AbstractEventLoop) -> None:
    """End ``loop`` as ``asyncio.run`` ends its own: cancel what is left, then close."""

    async def cancel_the_rest() -> None:
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    loop.run_until_complete(cancel_the_rest())
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


def _connections_part(net: Network, section: Section) -> None:
    """3d: the connections the broker sees from one toolkit used in the mixed pattern: async on
    a loop, then sync from plain code while that loop is idle, then sync from two threads."""
    kit = Mq9Toolkit(server=net.url, client_options={"name": MIXED_NAME})
    tool = {t.name: t for t in kit.get_tools()}["send_message"]
    call = tool_call("send_message", SEND_ARGS)
    counts = {}
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(tool.ainvoke(call))  # async on a loop, which then stays idle
        counts["after the async call"] = net.connections(MIXED_NAME)
        tool.invoke(call)
        counts["after a sync call while that loop is idle"] = net.connections(MIXED_NAME)
        threads = [threading.Thread(target=tool.invoke, args=(call,)) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        counts["after sync calls from two threads"] = net.connections(MIXED_NAME)
        loop.run_until_complete(tool.ainvoke(call))  # the loop again
        counts["after another async call on the loop"] = net.connections(MIXED_NAME)
        kit.close()
    finally:
        _end(loop)
    peak = max(counts.values())
    counts["after toolkit.close() and the loop's end"] = net.connections(MIXED_NAME, settle_to=0)
    allowed = 2
    section.checks.append(
        Check(
            key="3d",
            title="connections the broker sees from one toolkit: async on a loop, then sync "
            "while that loop is idle, then sync from two threads",
            ours_label="connections",
            ours=str(peak),
            baseline_label="allowed (one per live loop + one for sync callers)",
            baseline=str(allowed),
            ratio=peak / allowed,
            op="<=",
            limit=1.0,
            ratio_label="ours / allowed",
        )
    )
    section.figures += [(f"3d: connections {when}", str(n)) for when, n in counts.items()]


def run(cfg: Config, net: Network) -> Section:
    section = Section("latency", "Client and tool overhead over NATS (targets 1–3)")
    kit = Mq9Toolkit(server=net.url)
    try:
        asyncio.run(_async_part(cfg, net, section, kit))
        _sync_part(cfg, section, kit)
    finally:
        kit.close()
    _connections_part(net, section)
    section.checks.sort(key=lambda check: check.key)
    section.notes.append(
        "Every ratio compares two things measured alternately in the same run against the "
        "same canned responder (a separate process on the same nats-server that answers like a "
        "broker but does no work). Payload 200 bytes; FETCH returns 10 such messages."
    )
    section.notes.append(
        "The `client= on the caller's loop` rows are a toolkit built on an Mq9Client opened in "
        "the benchmark's own loop: an async `server=` toolkit should cost the same (it talks to "
        "a client of the caller's own loop too)."
    )
    section.notes.append(
        "2b is fetch_messages as an agent calls it: a read with the toolkit's consumer group "
        "by the group's one reader (docs/groups.md), one FETCH per fetch; its baseline is a "
        "bare tool making the same `GroupReader.fetch`. 2b-reader sets that reader against one "
        "FETCH of the group, and 2b-requests counts its requests per fetch. A competing "
        "worker's read (FETCH, a claim SEND, a lease QUERY) is reported beside them, with no "
        "target. The canned responder plays along (new msg_ids on every group FETCH, every "
        "claim won), and an untimed ack after each fetch keeps the reader in the same state. "
        "2c is a look "
        "at a mailbox that consumes nothing (query_messages: one QUERY answered with 10 "
        "messages, and a one-message FETCH from its last id that tells a full page from an "
        "answer the broker cut to its size limit). Every bare tool replays the requests "
        "recorded from the mq9 tool it stands for: the same subjects, bytes and headers."
    )
    section.notes.append(
        "3a: LangChain's own cost per call (~0.4–0.5 ms here) is on both sides of 'connect-per-"
        "call tool / our tool', so that ratio is capped by LangChain, not by us. The target is "
        "therefore the time our tool saves against connecting per call, as a share of the most "
        "any tool could save (a bare tool making one raw request on an open connection)."
    )
    return section
