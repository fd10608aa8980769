"""Issue 88's third attack on the gateway's gRPC binding, reusable: many large ``SendMessage``
calls at once over several channels, without a credential, and the gateway process's resident
memory before, at its peak and after (``/proc/<pid>/status``: VmRSS, VmHWM).

    python tests/platform/a2a/grpc_flood.py          # the measurement docs/a2a.md quotes (a real
                                            # nats-server, bundled broker, mq9-a2a-gateway)

The tests use ``flood`` and ``gateway_process``
(tests/integration/a2a/test_gateway_grpc_unauthenticated.py).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import secrets
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import grpc
import grpc.aio
from a2a.types.a2a_pb2 import Message, Part, Role, SendMessageRequest

from mq9_platform._http.tokens_file import digest_line
from testbed.ports import unclaimed_port

GATEWAY = [sys.executable, "-m", "mq9_platform.a2a.gateway.cli"]
SEND = "/lf.a2a.v1.A2AService/SendMessage"
AGENT = "agent.flooded"


def send_body(size: int, text: str = "x") -> bytes:
    """A ``SendMessageRequest`` of about ``size`` bytes on the wire (one text part)."""
    message = Message(message_id="m1", role=Role.ROLE_USER, parts=[Part(text=text * size)])
    return SendMessageRequest(message=message).SerializeToString()


def memory_kib(pid: int) -> dict[str, int]:
    """The process's resident memory now (``VmRSS``) and at its peak (``VmHWM``), in KiB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


async def flood(
    address: str,
    body: bytes,
    *,
    calls: int = 256,
    channels: int = 8,
    metadata: Sequence[tuple[str, str]] = (),
    method: str = SEND,
) -> collections.Counter[grpc.StatusCode]:
    """``calls`` calls of ``body`` (raw bytes: nothing re-encoded per call) to ``method`` at
    once, spread over ``channels`` channels (each its own HTTP/2 connection): their codes."""
    opened = [
        grpc.aio.insecure_channel(
            address,
            options=[
                ("grpc.max_send_message_length", -1),
                ("grpc.use_local_subchannel_pool", 1),  # one connection per channel
            ],
        )
        for _ in range(channels)
    ]
    try:
        stubs = [c.unary_unary(method, request_serializer=None, response_deserializer=None)
                 for c in opened]  # fmt: skip

        async def one(index: int) -> grpc.StatusCode:
            try:
                await stubs[index % channels](body, metadata=tuple(metadata), timeout=120)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
            return grpc.StatusCode.OK

        return collections.Counter(await asyncio.gather(*(one(i) for i in range(calls))))
    finally:
        for channel in opened:
            await channel.close()


@contextlib.asynccontextmanager
async def gateway_process(
    server_url: str, tokens: dict[str, str], workdir: Path
) -> AsyncIterator[dict]:
    """A real ``mq9-a2a-gateway`` with ``--grpc-listen`` on loopback: its ``pid``, gRPC
    ``address`` and HTTP ``url``; ended (SIGTERM) on leaving. Its stderr: ``workdir/stderr``."""
    file = workdir / "tokens.json"
    file.write_text("".join(digest_line(n, t) + "\n" for n, t in tokens.items()))
    port, grpc_port = unclaimed_port(), unclaimed_port()
    args = [
        "--server", server_url, "--agent", AGENT, "--listen", f"127.0.0.1:{port}",
        "--tokens-file", str(file), "--grpc-listen", f"127.0.0.1:{grpc_port}",
    ]  # fmt: skip
    with open(workdir / "stderr", "wb") as stderr:
        process = await asyncio.create_subprocess_exec(
            *GATEWAY, *args, stdout=asyncio.subprocess.PIPE, stderr=stderr
        )
    assert process.stdout is not None
    drained = None
    try:
        # its start-up line says the gRPC server listens (printed once it started)
        async with asyncio.timeout(60):  # a hang guard: the process imports a2a-sdk
            while b"gRPC on" not in (line := await process.stdout.readline()):
                if not line:
                    raise AssertionError((workdir / "stderr").read_text())
        drained = asyncio.create_task(process.stdout.read())  # nothing it prints blocks it
        yield {
            "pid": process.pid,
            "address": f"127.0.0.1:{grpc_port}",
            "url": f"http://127.0.0.1:{port}/a2a/{AGENT}",
        }
    finally:
        if process.returncode is None:
            process.terminate()
        await asyncio.wait_for(process.wait(), 15)
        if drained is not None:
            await drained


@contextlib.asynccontextmanager
async def nats_with_broker() -> AsyncIterator[str]:
    """A nats-server on loopback serving the bundled broker (in this process): its URL."""
    import nats

    from mq9_broker import BrokerEngine, serve_on_nats
    from mq9_wire.nats_floor.server_process import start_nats_server

    with start_nats_server() as server:
        connection = await nats.connect(server.url)
        service = await serve_on_nats(BrokerEngine(), connection)
        try:
            yield server.url
        finally:
            await service.stop()
            await connection.close()


async def measure(rounds: int = 3) -> None:
    """The attack of issue 88 (256 calls of 1.9 MB, no credential, 8 channels), ``rounds``
    times against one gateway process: its resident memory at rest, after each round (and its
    peak), and once the calls are over."""
    import tempfile

    body = send_body(1_900_000)
    async with nats_with_broker() as url:
        with tempfile.TemporaryDirectory() as work:
            tokens = {"alice": secrets.token_hex(16)}
            async with gateway_process(url, tokens, Path(work)) as gateway:
                pid = gateway["pid"]
                print(f"gateway pid {pid} at rest: {memory_kib(pid)}", flush=True)
                for round_ in range(rounds):
                    began = time.monotonic()
                    codes = await flood(gateway["address"], body)
                    took = time.monotonic() - began
                    print(f"round {round_ + 1}: {dict(codes)} in {took:.2f} s: {memory_kib(pid)}")
                await asyncio.sleep(2)  # what stays once the calls are over
                print(f"2 s later: {memory_kib(pid)}", flush=True)


if __name__ == "__main__":
    asyncio.run(measure())
