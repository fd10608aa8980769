"""The serving loop's record writer: JetStream's publish on a connection of its own.

``RecordWriter.publish`` answers as ``JetStreamContext.publish`` does (nats-py's ``APIError``
for JetStream's error, ``NoStreamResponseError`` when nothing answers, a ``TimeoutError``
after ``ATTEMPT_TIMEOUT``), without nats-py's request machinery where the broker's fast path
is on (``_nats/fast_path.py``); where it is off, it is that publish itself. The writer
connects to the server holding the stream's leader when it can tell which
(``connect_near_leader``).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import TYPE_CHECKING, NamedTuple

from ...._nats.fast_path import deliver_inline, engage, write_now
from ...._nats.guard import flush_in_order, protect
from ...._nats.info import server_info
from ..loop_thread import connect

if TYPE_CHECKING:
    from nats.aio.client import Client as NatsClient
    from nats.aio.msg import Msg

ATTEMPT_TIMEOUT = 2.0  # one publish's wait for its acknowledgement


class Ack(NamedTuple):
    seq: int


class RecordWriter:
    """The serving loop's connection for the records, and JetStream's publish on it: the
    acknowledgement comes to an inbox of the writer's own, handed over in the connection's
    read loop (``fast_path.deliver_inline``), and the record leaves at once (``write_now``),
    not on the flusher's next turn (bench/HOTPATH.md)."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.js = nc.jetstream(timeout=ATTEMPT_TIMEOUT)
        self._inbox = nc.new_inbox() + "."
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._watchdog: asyncio.Task[None] | None = None
        self._inline = False

    @classmethod
    async def open(cls, servers: list[str], stream: str) -> RecordWriter:
        """A writer on a connection near ``stream``'s leader (closed again if it cannot start)."""
        writer = cls(await connect_near_leader(servers, stream))
        try:
            return await writer.start()
        except BaseException:
            await writer.close()
            raise

    async def start(self) -> RecordWriter:
        self._watchdog = protect(self.nc)
        if engage(self.nc):
            subscription = await self.nc.subscribe(self._inbox + "*", cb=self._acknowledged)
            self._inline = deliver_inline(self.nc, subscription)
            await flush_in_order(self.nc, int(ATTEMPT_TIMEOUT))
        return self

    async def _acknowledged(self, msg: Msg) -> None:
        waiting = self._waiting.pop(msg.subject, None)
        if waiting is not None and not waiting.done():
            waiting.set_result(msg)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> Ack:
        if not self._inline:
            return Ack((await self.js.publish(subject, payload, headers=headers)).seq)
        from nats.js.errors import APIError, NoStreamResponseError

        inbox = self._inbox + uuid.uuid4().hex  # unguessable, as nats-py's request tokens
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Msg] = loop.create_future()
        self._waiting[inbox] = answered
        # (not asyncio.wait_for: its waiter costs the answer two more turns of the loop)
        timer = loop.call_later(ATTEMPT_TIMEOUT, _time_out, answered)
        try:
            await self.nc.publish(subject, payload, reply=inbox, headers=headers)
            write_now(self.nc)
            msg = await answered
        finally:
            timer.cancel()
            self._waiting.pop(inbox, None)
        if msg.headers and msg.headers.get("Status") == "503":  # nothing answers: no leader
            raise NoStreamResponseError
        answer = json.loads(msg.data)
        if "error" in answer:
            raise APIError.from_error(answer["error"])
        return Ack(int(answer["seq"]))

    async def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
        await self.nc.close()


def _time_out(answered: asyncio.Future[Msg]) -> None:
    if not answered.done():
        answered.set_exception(TimeoutError("JetStream did not acknowledge the write in time"))


async def connect_near_leader(servers: list[str], stream: str) -> NatsClient:
    """A connection to the server that holds ``stream``'s leader, when one of ``servers`` is
    it: a record then crosses no route between servers to the leader and back (bench 14b
    says what it is worth). Else, or when that cannot be told, a
    connection to any of them. After a leader moves the connection stays where it is."""
    nc = await connect(servers)
    if len(servers) < 2:
        return nc
    try:
        info = await nc.jetstream(timeout=ATTEMPT_TIMEOUT).stream_info(stream)
        leader = info.cluster.leader if info.cluster is not None else None
    except Exception:  # no stream yet (it is made on this store's own connection first)
        return nc
    if leader is None or _server_name(nc) in (leader, None):
        return nc
    for url in servers:
        try:
            candidate = await connect([url, *(s for s in servers if s != url)], in_order=True)
        except Exception:
            continue
        if _server_name(candidate) == leader:
            await nc.close()
            return candidate
        await candidate.close()
    return nc


def _server_name(nc: NatsClient) -> str | None:
    """The name of the server ``nc`` is connected to, from the INFO it sent (read
    through the NATS floor: None when it gave none)."""
    name = server_info(nc).get("server_name")
    return name if isinstance(name, str) else None
