"""Large answers share a byte rate, taken in turns by requester (the dev broker's).

A request of a few bytes can ask for megabytes: the listing of 1,000 agents is 2 MB for the
two bytes ``{}``. Sent back to back, such answers keep both cores of a small machine busy
(nats-server copying them twice, the requester reading them) and every other client's SEND
waits for a core (bench 9d). Paced to a rate the machine carries beside its
other work, they leave the cores free most of the time.

The pace is a virtual clock (GCRA): an answer goes at once while the answers before it have
been paid for, up to ``burst`` bytes ahead; a single large answer after a quiet moment is never
held, however large. Requesters waiting take turns, so one client asking for large answers
back to back holds another's large answer by at most one of its own each turn. A requester is
known by its reply subject without the last token (NATS clients make one inbox prefix per
connection); a client making up prefixes gets as many turns as it makes, as it could make
connections: the dev broker has no authentication. A request through a service import (the
open cluster's agents, docs/deploy.md) is known by the connection nats-server says sent it.

What waits is held in memory, built: a client publishing requests for large answers without
waiting for them held the broker's memory for as long as they took to go. So a
requester may have at most ``PER_REQUESTER`` bytes of answers waiting, and all requesters
together ``IN_ALL``; an answer beyond that is refused (``Backlog``), and its request answered
with that error at once. One answer with nothing else waiting is never refused, however large.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

from mq9_wire.protocol import HEADER_IDEMPOTENCY_KEY

from ..engine.sending import FromClient

if TYPE_CHECKING:
    from nats.aio.msg import Msg

Sleep = Callable[[float], Awaitable[object]]
# A wait shorter than this is none (what float rounding leaves of a pace exactly met)
NEGLIGIBLE = 1e-6  # seconds
# The most bytes of answers that may wait: one requester's, and everyone's
PER_REQUESTER, IN_ALL = 16 * 2**20, 128 * 2**20


class Backlog(Exception):
    """An answer that may not wait: its requester's (or everyone's) answers waiting already
    take the room. The message says so, for the requester."""


# nats-server's client info, added to a request that crossed a service import marked ``share``
# (docs/deploy.md's accounts.conf), and written by the server over any the client sent
REQUEST_INFO = "Nats-Request-Info"
# A reply subject nats-server made for a request that came through a service import: one
# ``_R_.<prefix>`` per importing server, whichever of its clients asked
IMPORTED = "_R_."
# The most of the header read: nats-server's client info is a few hundred bytes
_INFO_MOST = 4096


def requester(reply: str, headers: Mapping[str, str] | None = None) -> str:
    """Who is asking: ``_INBOX.<connection>.<n>`` → ``_INBOX.<connection>``, as far as the
    reply subject shows. A request that came through a service import (``_R_.<prefix>.<x>``)
    has the importing server's prefix there, the same for all its clients: it is told apart
    by the connection that sent it, ``(server, id)`` of its ``Nats-Request-Info``, which
    nats-server writes; without a usable one, the prefix (one requester per server)."""
    return client_of(reply, headers)[0]


def client_of(reply: str, headers: Mapping[str, str] | None = None) -> tuple[str, str | None]:
    """``(requester(reply, headers), address)``: the address is where nats-server says the
    requesting connection comes from (``<account>@<host>`` of its ``Nats-Request-Info``, on a
    request through a service import), None where nothing vouches for one (a reply subject
    is the client's to choose). The connections of one address share a part of the
    broker's waiting room (serve.py), so that many of them take no more than two would."""
    prefix = reply.rpartition(".")[0] or reply
    if not reply.startswith(IMPORTED) or not headers:
        return prefix, None
    found = _connection(headers.get(REQUEST_INFO))
    if found is None:
        return prefix, None
    connection, address = found
    return f"{IMPORTED}{connection}", address


def party_of(reply: str, headers: Mapping[str, str] | None = None) -> str | None:
    """The client an open broker's bound on keys counts a keyed SEND against: the
    address nats-server vouches for (``client_of``), else None. A reply inbox is no party: any
    client may name another's (a watcher of ``_INBOX.>`` learns them), so a bound counted by
    it was another client's to fill; those keys count in the bound in all alone."""
    return client_of(reply, headers)[1]


def from_client(msg: Msg) -> Mapping[str, str] | None:
    """``msg``'s headers as an open broker hands them to the engine: a keyed SEND's with the
    client nats-server vouches for (``FromClient``, ``party_of``), whose bound its new key
    counts against; as sent where none is vouched for."""
    headers = msg.headers
    if headers and HEADER_IDEMPOTENCY_KEY in headers:
        party = party_of(msg.reply or "", headers)
        if party is not None:
            return FromClient(headers, party)
    return headers


def _connection(info: str | None) -> tuple[str, str | None] | None:
    """``<account>/<server>/<id>`` of a client info header, and ``<account>@<host>`` when it
    names a host; None when it is missing or not nats-server's shape (never raises: a bad
    header falls back to the prefix)."""
    if not info or len(info) > _INFO_MOST:
        return None
    try:
        found = json.loads(info)
    except ValueError:
        return None
    if not isinstance(found, dict):
        return None
    server, cid, account = found.get("server"), found.get("id"), found.get("acc", "")
    if not isinstance(server, str) or not server or not isinstance(account, str):
        return None
    if not isinstance(cid, int) or isinstance(cid, bool) or cid < 0:
        return None
    host = found.get("host")
    address = f"{account}@{host}" if isinstance(host, str) and host else None
    return f"{account}/{server}/{cid}", address


class AnswerPacer:
    """At most ``rate`` bytes a second of answers, ``burst`` bytes ahead of that pace;
    ``await pacer.admit(requester, size)`` returns when an answer of ``size`` bytes may go.
    ``clock`` and ``sleep`` are the time it keeps (injected in tests); ``per_requester`` and
    ``in_all`` the bytes that may wait (see the module docstring)."""

    def __init__(
        self,
        rate: float,
        burst: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        per_requester: int = PER_REQUESTER,
        in_all: int = IN_ALL,
    ) -> None:
        if rate <= 0 or burst < 0:
            raise ValueError(f"rate must be above 0 and burst at least 0, not {rate}, {burst}")
        self.rate, self.burst = rate, burst
        self._clock, self._sleep = clock, sleep
        self._paid_until = clock()  # when the answers admitted so far are paid for
        # Requesters in the order of their turns (a dict keeps insertion order), each with
        # its answers waiting: (size, future set when it may go)
        self._waiting: dict[str, deque[tuple[int, asyncio.Future[None]]]] = {}
        self._turns: asyncio.Task[None] | None = None
        self.per_requester, self.in_all = per_requester, in_all
        self._held: dict[str, int] = {}  # bytes waiting, by requester
        self._held_in_all = 0

    async def admit(self, requester: str, size: int) -> None:
        """Return when an answer of ``size`` bytes for ``requester`` may go; raises
        ``Backlog`` at once if it may not wait."""
        if not self._waiting and self._wait() <= NEGLIGIBLE:
            self._pay(size)  # nobody waiting and within the burst: at once
            return
        self._check_room(requester, size)
        future = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(requester, deque()).append((size, future))
        self._hold(requester, size)
        if self._turns is None or self._turns.done():
            self._turns = asyncio.create_task(self._take_turns())
        await future

    def _wait(self) -> float:
        """Seconds until the answers admitted so far are paid for but ``burst`` bytes."""
        return self._paid_until - self.burst / self.rate - self._clock()

    def _check_room(self, requester: str, size: int) -> None:
        mine = self._held.get(requester, 0)
        if mine and mine + size > self.per_requester:
            raise Backlog(
                f"this answer of {size} bytes would wait behind {mine} bytes of your earlier "
                f"answers, above the {self.per_requester} bytes one requester may have waiting "
                f"(large answers leave this broker at {_per_second(self.rate)}): ask again "
                "once those have arrived, or ask for less"
            )
        if self._held_in_all and self._held_in_all + size > self.in_all:
            raise Backlog(
                f"this answer of {size} bytes would wait behind {self._held_in_all} bytes of "
                f"answers, above the {self.in_all} bytes this broker keeps waiting (large "
                f"answers leave it at {_per_second(self.rate)}): ask again later, or for less"
            )

    def _hold(self, requester: str, size: int) -> None:
        self._held[requester] = self._held.get(requester, 0) + size
        self._held_in_all += size

    def _release(self, requester: str, size: int) -> None:
        left = self._held[requester] - size
        if left:
            self._held[requester] = left
        else:
            del self._held[requester]
        self._held_in_all -= size

    def _pay(self, size: int) -> None:
        self._paid_until = max(self._paid_until, self._clock()) + size / self.rate

    async def _take_turns(self) -> None:
        while self._waiting:
            who, queue = next(iter(self._waiting.items()))
            size, future = queue.popleft()
            del self._waiting[who]
            if queue:  # its next answer waits for its next turn, behind everyone else's
                self._waiting[who] = queue
            if future.done():  # its request was cancelled (the broker stopping)
                self._release(who, size)
                continue
            wait = self._wait()
            if wait > NEGLIGIBLE:
                await self._sleep(wait)
            self._pay(size)
            self._release(who, size)
            if not future.done():
                future.set_result(None)

    def close(self) -> None:
        """Stop taking turns (what waits is cancelled with the requests that wait)."""
        if self._turns is not None:
            self._turns.cancel()


def _per_second(rate: float) -> str:
    return f"{rate / 2**20:g} MiB a second"
