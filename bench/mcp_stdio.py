"""Target 6: ``send_message`` through ``mq9-mcp`` over stdio against an echo tool served by the
same MCP SDK over stdio that makes the one raw NATS request send_message needs, with the same
input and output schemas (the MCP client checks every result against the outputSchema: about
1 ms per call in the Python SDK, paid on both sides).

Every server runs as a child process of one MCP client session each, opened side by side; the
calls alternate. Both reach the canned responder on nats-server (the broker's work is not the
MCP server's); an echo tool without any request and the engine-served figure are reported
beside them.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import sys
import tempfile

import nats

from langchain_mq9 import Mq9Client, Mq9Error
from mq9_platform.client.connection import Mq9Connection

from .config import Config
from .infra import ROOT, Network, child_env
from .latency import SEND_ARGS
from .measure import fmt_seconds, interleave_async
from .results import Check, Section

INIT_TIMEOUT = 60.0
ADDRESS = SEND_ARGS["mail_address"]
ROUND_TRIP = "broker round trip alone (Mq9Connection.run → send, in the benchmark process)"
ECHO_REQUEST = "echo tool + one raw NATS request (same MCP SDK)"
ECHO = "echo tool without a request (same MCP SDK)"
TITLE = (
    "send_message via mq9-mcp over stdio vs an echo tool over stdio making the same request "
    "(same schemas)"
)


async def _send(client: Mq9Client) -> int:
    return await client.send(ADDRESS, SEND_ARGS["payload"])


def unavailable() -> str | None:
    """Why ``python -m mq9_mcp`` cannot run yet, or None when it can."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    try:
        if importlib.util.find_spec("mq9_mcp") is None:
            return "the mq9_mcp package does not exist yet"
        if importlib.util.find_spec("mq9_mcp.__main__") is None:
            return "mq9_mcp has no __main__ yet (`python -m mq9_mcp` cannot run)"
    except ImportError as exc:
        return f"mq9_mcp cannot be imported: {exc}"
    return None


async def _call(session, name: str, arguments: dict) -> None:
    result = await session.call_tool(name, arguments)
    if result.is_error:
        text = " ".join(getattr(c, "text", "") for c in result.content)
        raise RuntimeError(f"MCP tool {name} failed: {text}")


async def _measure(cfg: Config, net: Network, section: Section, errlog) -> None:
    from mcp import ClientSession, StdioServerParameters
    from mcp.client.stdio import stdio_client

    control = await nats.connect(net.url)
    await net.serve(control, "canned", fetch_count=10)
    env = {**child_env(), "MQ9_SERVER": net.url}
    env.pop("NATS_URL", None)
    servers = {
        "mq9-mcp send_message": ["-m", "mq9_mcp"],
        ECHO_REQUEST: ["-m", "bench.mcp_echo", "--request"],
        ECHO: ["-m", "bench.mcp_echo"],
    }
    try:
        async with contextlib.AsyncExitStack() as stack:
            sessions = {}
            for label, args in servers.items():
                params = StdioServerParameters(
                    command=sys.executable, args=args, env=env, cwd=str(ROOT)
                )
                read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
                sessions[label] = await stack.enter_async_context(ClientSession(read, write))
            await asyncio.wait_for(
                asyncio.gather(*(s.initialize() for s in sessions.values())), INIT_TIMEOUT
            )
            mq9, echo_request, echo = sessions.values()

            async def mq9_send() -> None:
                await _call(mq9, "send_message", SEND_ARGS)

            async def echo_request_call() -> None:
                await _call(echo_request, "echo", SEND_ARGS)

            async def echo_call() -> None:
                await _call(echo, "echo", SEND_ARGS)

            # The broker round trip the way mq9-mcp makes it (shared connection, NATS), here.
            connection = Mq9Connection(net.url)
            stack.push_async_callback(connection.aclose)

            async def round_trip() -> None:
                await connection.run(_send)

            rounds, block = cfg.mcp_rounds
            results = await interleave_async(
                {
                    "mq9-mcp send_message": mq9_send,
                    ECHO_REQUEST: echo_request_call,
                    ECHO: echo_call,
                    ROUND_TRIP: round_trip,
                },
                rounds=rounds,
                block=block,
            )
            a, b = results["mq9-mcp send_message"], results[ECHO_REQUEST]
            section.checks.append(
                Check(
                    key="6",
                    title=TITLE,
                    ours_label="mq9-mcp send_message",
                    ours=fmt_seconds(a.median),
                    baseline_label="echo tool + raw request",
                    baseline=fmt_seconds(b.median),
                    ratio=a.median / b.median,
                    op="<=",
                    limit=1.5,
                )
            )
            echo_only = results[ECHO].median
            section.figures.append(
                (
                    "mq9-mcp send_message / echo tool without a request (information)",
                    f"{a.median / echo_only:.2f}× (echo + raw request: "
                    f"{b.median / echo_only:.2f}×)",
                )
            )
            for name, stats in results.items():
                section.figures.append(
                    (
                        name,
                        f"median {fmt_seconds(stats.median)}, p90 "
                        f"{fmt_seconds(stats.quantile(0.9))}, n={stats.n}",
                    )
                )

            await net.serve(control, "engine")
            async with Mq9Client(net.url) as client:
                with contextlib.suppress(Mq9Error):
                    await client.mailbox_create(name=ADDRESS)
            served = await interleave_async(
                {"mq9-mcp send_message, engine-served": mq9_send},
                rounds=2,
                block=max(3, block),
            )
            stats = served["mq9-mcp send_message, engine-served"]
            section.figures.append(
                ("mq9-mcp send_message, engine-served", f"median {fmt_seconds(stats.median)}")
            )
    finally:
        await control.close()


def run(cfg: Config, net: Network) -> Section:
    section = Section("mcp", "MCP over stdio (target 6)")
    reason = unavailable()
    if reason is not None:
        section.checks.append(
            Check(
                key="6",
                title=TITLE,
                ours_label="mq9-mcp",
                ours="not available yet",
                baseline_label="echo tool",
                baseline="–",
                ratio=None,
                op="<=",
                limit=1.5,
                note=reason,
            )
        )
        return section
    with tempfile.TemporaryFile("w+") as errlog:
        try:
            asyncio.run(_measure(cfg, net, section, errlog))
        except BaseException:
            errlog.seek(0)
            tail = errlog.read()[-2000:]
            if tail.strip():
                print(f"[bench] MCP servers' stderr:\n{tail}", file=sys.stderr)
            raise
    section.notes.append(
        "Each side is one `tools/call` from an MCP `ClientSession` to a server started over "
        "stdio (a child process) with the same arguments (send_message's, 200-byte text "
        "payload); `mq9-mcp` is started as `python -m mq9_mcp` with `MQ9_SERVER` set. The "
        "baseline echo tool makes the one raw NATS request (nats-py, the same SEND bytes) any "
        "broker-backed tool must make, so the difference is what the mq9 server adds: argument "
        "validation, the catalog operation, its broker connection and shaping the result."
    )
    return section
