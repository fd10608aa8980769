"""Each mailbox served by one broker of the moment: partitions, and who holds them.

With ``--store jetstream`` every broker of a ``--stream`` may answer any request, and the
store keeps a mailbox's numbering right whoever writes (each write expects the head's last
sequence). But a broker numbers a mailbox from the head it cached from its own last write:
when NATS hands one mailbox's SENDs to any broker of the queue group, nearly every write finds
another broker's came first, is refused, read again and sent again. The servers route each
mailbox to one broker instead, by their own means: the account maps the mailbox commands'
subjects (``nats_servers/mappings.py``) to ``$mq9.P.<k>.AI.MSG.<command>.<address>``, ``<k>`` =
``partition(count, <the address's tokens>)``, the same ``k`` for every command of a mailbox;
the brokers share the ``count`` partitions out among them, each subscribing to its own in a
queue group of that partition (``mq9-p<k>``: while a partition changes hands both holders are
in it, and NATS hands each request to one).

Who holds what: each broker announces itself every ``BEAT`` seconds on
``$mq9.MEMBERS.<group>.<id>`` (core NATS, nothing stored) and hears the others; a broker not
heard for ``SILENT`` seconds is gone. Each partition goes to the member whose hash with it is
highest (rendezvous hashing: a member joining or leaving moves only the partitions it takes or
held). A broker takes a partition at once (subscribes) and lets one go only once the new
holder has been heard, which it is only after it subscribed: never an interval with no holder,
except when a holder dies. It still answers what the servers handed it before they had its
UNSUB (``drain_in_order``): a request on its way during a hand-over is answered, not dropped.
A SIGKILLed broker's partitions have no holder from the moment the servers close its
connection until the others find it silent (at most ``SILENT`` + ``BEAT`` after its last
beat): requests meanwhile are answered "no responders" by the servers, which the client is
told at once (never a timeout). What it was handed before its connection closed is
lost with it, as without partitions.

Nothing here decides a number: two brokers holding one partition for a moment (a start, a
broker too busy to beat in time) only cost renumbered writes, as every broker did before.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from mq9_wire.nats_floor.fast_path import deliver_inline
from mq9_wire.nats_floor.guard import drain_in_order, flush_in_order

log = logging.getLogger(__name__)

PREFIX = "$mq9.P."  # nats_servers/mappings.py maps the mailbox commands here (the same text)
COUNT = (
    64  # partitions: nats_servers/mappings.py's COUNT (the servers' mapping and the brokers agree)
)
MEMBERS = "$mq9.MEMBERS."
BEAT = 0.2  # seconds between a broker's announcements
SILENT = 0.6  # seconds unheard after which a broker is gone (three beats missed)
GOODBYE = b"gone"  # a broker stopping says so: its partitions move at once

Take = Callable[[Any], Awaitable[None]]


def original(subject: str) -> str:
    """``$mq9.P.<k>.AI.MSG.SEND.box`` -> ``$mq9.AI.MSG.SEND.box``: the subject the client sent."""
    return "$mq9." + subject.split(".", 3)[3]


def holder(partition: int, members: list[str]) -> str:
    """The member holding ``partition``: the highest hash of the two (rendezvous hashing)."""
    return max(members, key=lambda m: hashlib.blake2b(f"{partition}/{m}".encode()).digest())


class Partitions:
    """The partitions ``connection``'s broker holds among those heard on the same ``group``,
    each request of them given to ``take`` with its subject as the client sent it.
    ``clock``: seconds (injected in tests); ``changed``: set each time the held set changes
    (what a test waits on instead of a time)."""

    def __init__(
        self,
        connection: Any,
        take: Take,
        count: int,
        group: str = "mq9-brokers",
        clock: Callable[[], float] = time.monotonic,
        member: str = "",
    ) -> None:
        self.connection, self.take, self.count, self.group = connection, take, count, group
        self.clock = clock
        self.member = member or uuid.uuid4().hex[:12]
        self.heard: dict[str, float] = {}  # other members -> when last heard
        self.held: dict[int, Any] = {}  # partition -> its subscription
        self.changed = asyncio.Event()
        self._beats: asyncio.Task[None] | None = None
        self._listening: Any = None
        self._settling = asyncio.Lock()  # (a beat and a member heard settle one at a time)

    @classmethod
    async def when_mapped(
        cls, connection: Any, take: Take, group: str, count: int = COUNT
    ) -> Partitions | None:
        """Started when the servers map the mailbox commands to partitions (a probe published
        on a mailbox subject comes back on ``$mq9.P.``), else None: every broker serves
        every mailbox in ``group`` as before. The probe is a QUERY without a reply subject
        (nobody is answered) of a name no agent uses."""
        probe = f"mq9-partitions-probe-{uuid.uuid4().hex}"
        listening = await connection.subscribe(f"{PREFIX}*.AI.MSG.QUERY.{probe}")
        try:
            await connection.publish(f"$mq9.AI.MSG.QUERY.{probe}", b"")
            # the server hands this connection the mapped probe before the flush's PONG, and
            # nats-py queues it as it reads: nothing to wait for beyond the flush (in order:
            # nats-py's own may write its PING ahead of the SUB and PUB, nats_floor/guard.py)
            await flush_in_order(connection)
            came = listening.pending_msgs > 0
        finally:
            await listening.unsubscribe()
        if not came:
            return None
        return await cls(connection, take, count, group).start()

    def members(self) -> list[str]:
        now = self.clock()
        return sorted([self.member, *(m for m, t in self.heard.items() if now - t <= SILENT)])

    def owned(self) -> set[int]:
        members = self.members()
        return {k for k in range(self.count) if holder(k, members) == self.member}

    async def start(self) -> Partitions:
        self._listening = await self.connection.subscribe(
            f"{MEMBERS}{self.group}.*", cb=self._heard
        )
        # alone until others are heard: every partition held, so none is without a holder
        await self._settle(release=False)
        await self._announce()
        self._beats = asyncio.get_running_loop().create_task(self._beat())
        return self

    async def _heard(self, msg: Any) -> None:
        member = msg.subject.rsplit(".", 1)[1]
        if member == self.member:
            return
        if msg.data == GOODBYE:
            self.heard.pop(member, None)
        else:
            new = member not in self.heard
            self.heard[member] = self.clock()
            if not new:
                return
        await self._settle()

    async def _announce(self, data: bytes = b"") -> None:
        await self.connection.publish(f"{MEMBERS}{self.group}.{self.member}", data)

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(BEAT)
            try:
                await self._announce()
                await self._settle()
            except Exception as exc:  # a connection down: nats-py reconnects, beats go on
                log.debug("partitions: %s", exc)

    async def _settle(self, release: bool = True) -> None:
        """Subscribe to the partitions this broker now holds; unsubscribe from those another
        heard member holds (it subscribed before it was heard)."""
        async with self._settling:
            await self._settle_now(release)

    async def _settle_now(self, release: bool) -> None:
        wanted = self.owned()
        before = set(self.held)
        for k in sorted(wanted - before):
            subscription = await self.connection.subscribe(
                f"{PREFIX}{k}.>", queue=f"mq9-p{k}", cb=self._request
            )
            deliver_inline(self.connection, subscription)
            self.held[k] = subscription
        if release and before - wanted:
            # what the servers handed this broker before they had its UNSUB is still answered
            # (a plain unsubscribe drops it: a request lost in the hand-over); a partition
            # leaves ``held`` once the servers no longer route it here
            released = sorted(before - wanted)
            with contextlib.suppress(Exception):
                await drain_in_order(self.connection, [self.held[k] for k in released])
            for k in released:
                del self.held[k]
        if set(self.held) != before:
            await flush_in_order(self.connection)
            self.changed.set()

    async def _request(self, msg: Any) -> None:
        msg.subject = original(msg.subject)
        await self.take(msg)

    async def stop(self) -> None:
        """Stop holding: the others are told, and take the partitions at once."""
        if self._beats is not None:
            self._beats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beats
        with contextlib.suppress(Exception):
            if self._listening is not None:
                await self._listening.unsubscribe()
            # told first, then a beat for them to subscribe: no moment without a holder
            await self._announce(GOODBYE)
            await self.connection.flush()
            await asyncio.sleep(BEAT)
            await drain_in_order(self.connection, self.held.values())
        self.held.clear()
