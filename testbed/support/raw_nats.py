"""A bare TCP connection to nats-server that writes protocol bytes exactly as given.

For frames no NATS client library would write (subjects that are not UTF-8, broken header
blocks, malformed control lines): used by test_malformed_frames.py, test_wire_fuzz.py and the
hostile request tests (``socket_request``, open or logged in).
"""

from __future__ import annotations

import asyncio
import json
import socket
from urllib.parse import urlparse

CRLF = b"\r\n"


def socket_request(
    url: str,
    subject: bytes,
    body: bytes = b"{}",
    headers: bytes | None = None,
    *,
    login: str | None = None,
    timeout: float = 10,
) -> bytes | None:
    """One request on a bare NATS connection (logged in as ``login``, ``user:secret``, and
    answered on that user's own inbox when given): bytes nats-py cannot send, such as a subject
    or header that is not UTF-8. The reply's payload, or None when none came."""
    host, port = url.removeprefix("nats://").rsplit(":", 1)
    connect: dict[str, object] = {"verbose": False, "headers": True}
    inbox = b"_INBOX.raw"
    if login is not None:
        user, secret = login.split(":", 1)
        connect |= {"user": user, "pass": secret}
        inbox = f"_INBOX.{user}.raw.1".encode()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        stream = sock.makefile("rb")
        stream.readline()  # the server's INFO
        sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\nSUB " + inbox + b" 1\r\n")
        if headers is None:
            sock.sendall(b"PUB %s %s %d\r\n%s\r\n" % (subject, inbox, len(body), body))
        else:
            sizes = b"%d %d" % (len(headers), len(headers) + len(body))
            sock.sendall(b"HPUB %s %s %s\r\n%s%s\r\n" % (subject, inbox, sizes, headers, body))
        try:
            while line := stream.readline():
                if line.startswith((b"MSG ", b"HMSG ")):
                    parts = line.split()
                    data = stream.read(int(parts[-1]) + 2)[:-2]
                    return data[int(parts[-2]) :] if line.startswith(b"HMSG") else data
        except TimeoutError:
            pass
        return None


def frame(subject: bytes, payload: bytes = b"{}", reply: bytes = b"", header: bytes = b"") -> bytes:
    """One PUB (or, with a header block, HPUB) frame with sizes that match what it carries."""
    reply_part = b" " + reply if reply else b""
    if not header:
        return b"PUB %s%s %d\r\n%s\r\n" % (subject, reply_part, len(payload), payload)
    total = len(header) + len(payload)
    return b"HPUB %s%s %d %d\r\n%s%s\r\n" % (
        subject,
        reply_part,
        len(header),
        total,
        header,
        payload,
    )


class RawPeer:
    """A bare TCP connection to nats-server that writes protocol bytes exactly as given."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, url: str) -> RawPeer:
        where = urlparse(url)
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        assert (await reader.readline()).startswith(b"INFO ")
        options = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
        writer.write(b"CONNECT " + json.dumps(options).encode() + CRLF)
        await cls(reader, writer).sync()
        return cls(reader, writer)

    async def sync(self) -> None:
        """Wait until nats-server has taken everything written so far (PING, PONG)."""
        self.writer.write(b"PING\r\n")
        await self.writer.drain()
        while (line := await asyncio.wait_for(self.reader.readline(), 5)) != b"PONG\r\n":
            assert not line.startswith(b"-ERR"), line

    def pub(self, subject: bytes, payload: bytes = b"{}", reply: bytes = b"") -> None:
        self.writer.write(frame(subject, payload, reply))

    def hpub(self, subject: bytes, header: bytes, payload: bytes = b"{}") -> None:
        self.writer.write(frame(subject, payload, header=header))

    async def next_msg_subject(self) -> bytes:
        """The subject of the next MSG this peer receives (it subscribed first)."""
        while True:
            line = await asyncio.wait_for(self.reader.readline(), 5)
            if line.startswith(b"MSG "):
                await self.reader.readexactly(int(line.split()[-1]) + 2)
                return line.split()[1]

    async def close(self) -> None:
        self.writer.close()
        await self.writer.wait_closed()
