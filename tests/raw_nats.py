"""A bare TCP connection to nats-server that writes protocol bytes exactly as given.

For frames no NATS client library would write (subjects that are not UTF-8, broken header
blocks, malformed control lines): used by test_malformed_frames.py and test_wire_fuzz.py.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlparse

CRLF = b"\r\n"


def frame(subject: bytes, payload: bytes = b"{}", reply: bytes = b"", header: bytes = b"") -> bytes:
    """One PUB (or, with a header block, HPUB) frame with sizes that match what it carries."""
    reply_part = b" " + reply if reply else b""
    if not header:
        return b"PUB %s%s %d\r\n%s\r\n" % (subject, reply_part, len(payload), payload)
    total = len(header) + len(payload)
    return b"HPUB %s%s %d %d\r\n%s%s\r\n" % (
        subject, reply_part, len(header), total, header, payload
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
