"""Issue 88, attack 3: nothing of an unauthenticated gRPC caller is read or kept. Before, the
credential was checked inside the servicer, after grpc had read the whole message (up to the
2 MB limit) and parsed it: 256 calls of 1.9 MB without a credential, at once over 8 channels,
took a ``mq9-a2a-gateway`` from 76 to 296 MiB resident (peak 442 MiB), and it stayed there.

Now a server interceptor refuses a call on its metadata, before its message is read: a message
that is no protobuf at all, one above the size limit, and one that never comes are each
UNAUTHENTICATED (before: UNKNOWN after parsing, RESOURCE_EXHAUSTED after reading, and a call
left waiting). Beside it the legitimate use: a tenant's call works, a too-large one is told
the limit, and one connection holds no more than ``MAX_STREAMS`` calls at once."""

from __future__ import annotations

import asyncio
import contextlib

import grpc
import grpc.aio
import httpx
import pytest
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import SendMessageResponse, TaskState

from mq9_platform.a2a.gateway import MAX_BODY_BYTES
from mq9_platform.a2a.gateway.grpc import MAX_STREAMS
from tests.integration.a2a.test_gateway_grpc import grpc_gateway
from tests.langchain.a2a.test_gateway import ALICE
from tests.platform.a2a.grpc_flood import SEND, flood, gateway_process, memory_kib, send_body

pytestmark = pytest.mark.slow

STREAM = "/lf.a2a.v1.A2AService/SendStreamingMessage"
NOT_PROTOBUF = b"\xff" * 64  # no protobuf message parses from it: reading it fails
TOO_LARGE = send_body(MAX_BODY_BYTES + 1024)
BOUND_KIB = 32 * 1024  # measured +5 MiB; before, +365 MiB (+62 to +139 by the interceptor alone)
GUARD = 30  # seconds: a hang guard, never a timing claim


async def _code(call) -> grpc.StatusCode:
    try:
        async with asyncio.timeout(GUARD):
            await call
    except grpc.aio.AioRpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@contextlib.asynccontextmanager
async def grpc_address(client):
    """``grpc_gateway``'s gRPC server, served: its address (``host:port``, as its card says)."""
    async with grpc_gateway(client) as url, httpx.AsyncClient(timeout=30) as http:
        card = await A2ACardResolver(http, url).get_agent_card()
        [address] = [i.url for i in card.supported_interfaces if i.protocol_binding == "GRPC"]
        yield address


@contextlib.asynccontextmanager
async def grpc_channel(client):
    """A plain gRPC channel to ``grpc_gateway``'s server, with no credential of its own and no
    size limit on what it sends."""
    async with grpc_address(client) as address:
        options = [("grpc.max_send_message_length", -1)]
        async with grpc.aio.insecure_channel(address, options=options) as channel:
            yield channel


async def _never_sent():
    """A request stream whose message never comes (the caller holds the call open)."""
    await asyncio.Event().wait()
    yield b""  # pragma: no cover - never reached


async def test_no_credential_is_refused_before_the_message_is_read(client):
    async with grpc_channel(client) as channel:
        for method in (SEND, STREAM):
            unary = channel.unary_unary(method, request_serializer=None)
            streamed = channel.unary_stream(method, request_serializer=None)
            call = unary if method == SEND else streamed
            for body in (NOT_PROTOBUF, TOO_LARGE):
                for metadata in ((), (("authorization", "Bearer " + "x" * 32),)):
                    code = await _code(_finished(call(body, metadata=metadata)))
                    assert code == grpc.StatusCode.UNAUTHENTICATED, (method, len(body), code)
            # a call whose message never comes is answered at once, not left waiting for it
            held = channel.stream_unary(method, request_serializer=None)
            assert await _code(held(_never_sent())) == grpc.StatusCode.UNAUTHENTICATED


async def test_a_tenant_is_served_and_told_the_size_limit(client):
    bearer = (("authorization", f"Bearer {ALICE}"),)
    async with grpc_channel(client) as channel:
        send = channel.unary_unary(SEND, request_serializer=None)
        answer = SendMessageResponse.FromString(await send(send_body(1000), metadata=bearer))
        assert answer.task.status.state == TaskState.TASK_STATE_SUBMITTED  # agent offline
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await send(TOO_LARGE, metadata=bearer)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert str(MAX_BODY_BYTES) in refused.value.details()  # the limit, said
        # a message that does not parse, from a tenant, is refused as such
        with pytest.raises(grpc.aio.AioRpcError) as garbled:
            await send(NOT_PROTOBUF, metadata=bearer)
        assert garbled.value.code() != grpc.StatusCode.OK


async def test_the_flood_of_issue_88_leaves_the_gateway_as_it_was(nats_broker, tmp_path):
    """256 calls of 1.9 MB without a credential, at once over 8 channels, three times, at a
    real ``mq9-a2a-gateway``: all UNAUTHENTICATED, and its resident memory's peak stays within
    ``BOUND_KIB`` of what it was at rest (before: +225 MiB after one round, peak +365 MiB)."""
    body = send_body(1_900_000)
    async with gateway_process(nats_broker.url, {"alice": ALICE}, tmp_path) as gateway:
        at_rest = memory_kib(gateway["pid"])
        for _ in range(3):
            codes = await flood(gateway["address"], body)
            assert codes == {grpc.StatusCode.UNAUTHENTICATED: 256}
        after = memory_kib(gateway["pid"])
    assert after["VmHWM"] - at_rest["VmRSS"] < BOUND_KIB, (at_rest, after)


async def _finished(call):
    """A call of either kind, to its end (a stream read through)."""
    if isinstance(call, grpc.aio.UnaryStreamCall):
        async for _ in call:
            pass
        return None
    return await call


def _frame(kind: int, flags: int, stream: int, payload: bytes = b"") -> bytes:
    """One HTTP/2 frame (RFC 9113 4.1)."""
    head = len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream.to_bytes(4, "big")
    return head + payload


def _literal(name: str, value: str) -> bytes:
    """One HPACK header field, a literal without indexing (RFC 7541 6.2.2): no table needed."""
    return b"\x00" + bytes([len(name)]) + name.encode() + bytes([len(value)]) + value.encode()


class _RawHttp2:
    """A client speaking HTTP/2 by hand, which ignores the server's stream limit as an
    attacker's would: the frames the server sends back, as (type, flags, stream, payload)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def frame(self) -> tuple[int, int, int, bytes]:
        head = await self.reader.readexactly(9)
        payload = await self.reader.readexactly(int.from_bytes(head[:3], "big"))
        return head[3], head[4], int.from_bytes(head[5:9], "big") & 0x7FFFFFFF, payload

    def open_stream(self, stream: int, address: str, token: str) -> None:
        block = b"".join(
            _literal(k, v)
            for k, v in (
                (":method", "POST"), (":scheme", "http"), (":path", SEND),
                (":authority", address), ("content-type", "application/grpc"),
                ("te", "trailers"), ("authorization", f"Bearer {token}"),
            )
        )  # fmt: skip
        self.writer.write(_frame(0x1, 0x4, stream, block))  # HEADERS, END_HEADERS; no message


async def test_one_connection_carries_at_most_max_streams_calls(client):
    """The server's SETTINGS say ``MAX_STREAMS`` calls at once per connection, and a client
    that opens one more while as many wait for their messages has it refused (RST_STREAM
    REFUSED_STREAM): the most one connection can have the gateway hold is ``MAX_STREAMS``
    messages of ``MAX_BODY_BYTES``."""
    async with grpc_address(client) as address:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        h2 = _RawHttp2(reader, writer)
        try:
            writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + _frame(0x4, 0, 0))
            async with asyncio.timeout(GUARD):
                kind, flags, _, payload = await h2.frame()
                assert (kind, flags) == (0x4, 0)  # the server's SETTINGS come first
                settings = {
                    int.from_bytes(payload[i : i + 2], "big"): int.from_bytes(
                        payload[i + 2 : i + 6], "big"
                    )
                    for i in range(0, len(payload), 6)
                }
                assert settings[0x3] == MAX_STREAMS  # SETTINGS_MAX_CONCURRENT_STREAMS
                writer.write(_frame(0x4, 0x1, 0))  # acknowledged: the limit now holds
                for n in range(MAX_STREAMS + 1):  # each waits for a message that never comes
                    h2.open_stream(2 * n + 1, address, ALICE)
                await writer.drain()
                while True:
                    kind, _, stream, payload = await h2.frame()
                    if kind == 0x3:  # RST_STREAM: the one past the limit, refused
                        assert (stream, int.from_bytes(payload, "big")) == (
                            2 * MAX_STREAMS + 1,
                            0x7,  # REFUSED_STREAM
                        )
                        break
        finally:
            writer.close()
