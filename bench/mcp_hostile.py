"""9h: one local client against mq9-mcp's HTTP server: another client's p99 latency while
one client holds 300 connections that never finish their headers and keeps posting 150 MB
bodies to a wrong Host, against the same client alone. Target <= 2x.

The server runs as ``mq9-mcp --transport http --server memory://`` (a process of its own, as
users run it); the honest client calls ``query_messages`` in a session of its own, the hostile
one writes raw bytes on sockets. Idle and attacked rounds alternate.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import time

from testbed.ports import unclaimed_port

from .measure import fmt_seconds
from .results import Check

TARGET = 2.0
SLOW_CONNECTIONS = 300
BODY_MB = 150
ACCEPT = {"Accept": "application/json, text/event-stream"}
INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {},
               "clientInfo": {"name": "bench", "version": "1"}},
}  # fmt: skip


def _start(port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "mq9_mcp", "--transport", "http", "--port", str(port),
         "--server", "memory://", "--log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return process


async def _honest_latencies(url: str, calls: int) -> list[float]:
    import httpx2

    async with httpx2.AsyncClient(timeout=60) as http:
        opened = await http.post(url, json=INITIALIZE, headers=ACCEPT)
        session = {**ACCEPT, "mcp-session-id": opened.headers["mcp-session-id"],
                   "mcp-protocol-version": "2025-11-25"}  # fmt: skip
        await http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"},
                        headers=session)  # fmt: skip
        call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                "params": {"name": "create_mailbox", "arguments": {"name": "bench.h"}}}  # fmt: skip
        await http.post(url, json=call, headers=session)
        call["params"] = {"name": "query_messages", "arguments": {"mail_address": "bench.h"}}
        seconds = []
        for _ in range(calls):
            started = time.perf_counter()
            answer = await http.post(url, json=call, headers=session)
            seconds.append(time.perf_counter() - started)
            if answer.status_code != 200:
                raise RuntimeError(f"the honest call failed: {answer.status_code}")
        return seconds


async def _hold_headers(port: int, stop: asyncio.Event) -> None:
    """SLOW_CONNECTIONS connections that never finish their headers, opened again when the
    server closes them."""

    async def one() -> None:
        while not stop.is_set():
            with contextlib.suppress(OSError):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(b"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1")
                with contextlib.suppress(OSError):
                    await reader.read()
                writer.close()
            await asyncio.sleep(0.05)

    await asyncio.gather(*(one() for _ in range(SLOW_CONNECTIONS)))


async def _post_huge_bodies(port: int, stop: asyncio.Event) -> None:
    head = (f"POST /mcp HTTP/1.1\r\nHost: evil.example\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {BODY_MB << 20}\r\n\r\n").encode()  # fmt: skip
    chunk = b"x" * (1 << 20)
    while not stop.is_set():
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            for _ in range(BODY_MB):
                if reader.at_eof() or stop.is_set():
                    break
                writer.write(chunk)
                await writer.drain()
            writer.close()


async def _attack(port: int) -> None:
    """The hostile client, in a process of its own (``--attack PORT``) until it is stopped."""
    stop = asyncio.Event()
    await asyncio.gather(_hold_headers(port, stop), _post_huge_bodies(port, stop))


async def _round(port: int, calls: int, attacked: bool) -> list[float]:
    url = f"http://127.0.0.1:{port}/mcp"
    attacker = None
    if attacked:
        attacker = subprocess.Popen(
            [sys.executable, "-m", "bench.mcp_hostile", "--attack", str(port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        await asyncio.sleep(2)  # its connections are open before the honest client starts
    try:
        return await _honest_latencies(url, calls)
    finally:
        if attacker is not None:
            attacker.terminate()
            attacker.wait(10)


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


async def _measure(calls: int, rounds: int) -> tuple[float, float]:
    port = unclaimed_port()
    process = _start(port)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        idle: list[float] = []
        attacked: list[float] = []
        for _ in range(rounds):
            idle.extend(await _round(port, calls, attacked=False))
            attacked.extend(await _round(port, calls, attacked=True))
        return _p99(attacked), _p99(idle)
    finally:
        process.terminate()
        process.wait(10)


def measure(quick: bool) -> tuple[list[Check], list[tuple[str, str]], list[str]]:
    calls, rounds = (50, 1) if quick else (200, 3)
    ours, baseline = asyncio.run(_measure(calls, rounds))
    check = Check(
        key="9h",
        title="mq9-mcp over HTTP: another client's p99 tool call while one client holds "
        f"{SLOW_CONNECTIONS} unfinished connections and posts {BODY_MB} MB bodies",
        ours_label="under the attack",
        ours=fmt_seconds(ours),
        baseline_label="alone",
        baseline=fmt_seconds(baseline),
        ratio=ours / baseline,
        op="<=",
        limit=TARGET,
        ratio_label="attacked / alone (p99)",
    )
    figures = [("9h: honest calls per variant", f"{calls * rounds}")]
    notes = [
        "9h: the server closes a connection whose headers take over 10 s; it refuses a body to "
        "a wrong Host from the request's head on the connection itself (no app, no more of the "
        "body read; the connection closed 1 s later), any body over 8 MiB while reading it, and "
        "closes sockets off its loop."
    ]
    return [check], figures, notes


if __name__ == "__main__":
    if sys.argv[1:2] == ["--attack"]:
        asyncio.run(_attack(int(sys.argv[2])))
    else:
        for row in measure(quick="--quick" in sys.argv)[0]:
            print(row, row.passed)
