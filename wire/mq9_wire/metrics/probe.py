"""Whether a server's broker can do the server's job: the ``/readyz``
of the waker, the gateway, the MCP server and the console. A connection that is up says only
that a nats-server is there; a broker that answers a read says only that reads are answered:
a JetStream cluster that lost its quorum answers reads from its replicas for as long as it
likes and acknowledges no write. These servers write (a call's task, a wake's claim, a
person's replay), so their probe is a write.

The write is an AGENT.REPORT of ``PROBE_AGENT``, a name reserved for it: a REPORT is stored
under its name, the last one replacing the one before (one record, whatever the number of
probes: the cluster store's reports bucket holds one key for it, the memory and SQLite stores
one entry, RobustMQ one more report it never reads), DISCOVER never shows it, no agent owns it
(the bundled broker refuses every client's REGISTER, UNREGISTER and CREATE of it, on every
store, so that no agent's request can turn a /readyz 503), and the cluster store
acknowledges it only once a quorum of its servers holds it. When the write is not answered, a
QUERY of ``PROBE_MAILBOX`` (no mailbox: "no such mailbox" is the answer) says whether reads
still are: the console stays up read-only and says so. The broker counts a QUERY of
``PROBE_MAILBOX`` as a probe, not a refusal (``RequestMeter``). One probe serves
``PROBE_KEPT`` seconds, so that a flood of ``/readyz`` (or several scrapers) sends one REPORT a
second at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..protocol.errors import (
    MalformedReply,
    Mq9Error,
    NotConnected,
    StoreUnavailable,
    Unavailable,
)
from ..protocol.names import READYZ_PROBE


class ProbedClient(Protocol):
    """What the probe uses of a client (``langchain_mq9.Mq9Client``: metrics sits below the
    client, docs/architecture.md)."""

    @property
    def is_connected(self) -> bool: ...

    async def query(
        self, mail_address: str, *, limit: int | None = None, again: bool = True
    ) -> Any: ...

    async def agent_report(self, report: dict[str, Any]) -> None: ...


PROBE_MAILBOX = READYZ_PROBE  # a valid address nobody may create
PROBE_AGENT = READYZ_PROBE  # the name the probe's REPORT is stored under, nobody may register
PROBE_DEADLINE = 3.0  # seconds the broker has to answer (a cluster that lost its quorum: 503)
PROBE_KEPT = 1.0
# the longest a /readyz waits for a probe: a probe that takes longer goes on behind it
ANSWER_WITHIN = 0.9
# how old the last probe's answer may be to answer a /readyz whose own probe is still
# under way: older, nothing is known (503)
PROBE_FRESH = PROBE_DEADLINE


@dataclass(frozen=True)
class Answered:
    """One probe: ``writes`` (None: a write was acknowledged, else why not) and ``reads``
    (None: a read was answered, else why not; asked only when the write was not)."""

    writes: str | None
    reads: str | None = None

    @property
    def why_not_ready(self) -> str | None:
        """None when a write was acknowledged, else why not, in one line."""
        if self.writes is None:
            return None
        if self.reads is None:
            return f"read-only: {self.writes} (reads are answered)"
        return self.writes


async def broker_answers(client: ProbedClient, deadline: float = PROBE_DEADLINE) -> str | None:
    """None when a broker answered ``client``'s QUERY within ``deadline``; else why not."""
    # one try (again=False): the broker's first answer says whether it answers reads, where
    # the client would send a read again through an outage until its own deadline
    query = client.query(PROBE_MAILBOX, limit=1, again=False)
    return await _asked(query, client, "a QUERY", deadline)


async def broker_writes(client: ProbedClient, deadline: float = PROBE_DEADLINE) -> Answered:
    """Whether a broker acknowledged ``client``'s write (a REPORT of ``PROBE_AGENT``) within
    ``deadline``, and when it did not, whether it answered a read."""
    report = {"name": PROBE_AGENT, "report_info": "readyz"}
    # any refusal of this REPORT is a write not made (no broker refuses it for its name): a
    # cluster store that lost its quorum answers "JetStream did not acknowledge a write"
    writes = await _asked(
        client.agent_report(report), client, "a write", deadline, refused_is_answer=False
    )
    if writes is None:
        return Answered(None)
    return Answered(writes, await broker_answers(client, deadline))


async def _asked(
    request: Awaitable[Any], client: ProbedClient, what: str, deadline: float,
    *, refused_is_answer: bool = True,
) -> str | None:  # fmt: skip
    """None when ``request`` was answered within ``deadline`` (a refusal too, where
    ``refused_is_answer``: "no such mailbox" answers a read); else why not."""
    if not client.is_connected:
        if asyncio.iscoroutine(request):
            request.close()  # never sent: no "never awaited" warning
        return "not connected to the broker (reconnecting)"
    try:
        async with asyncio.timeout(deadline):
            await request
    except TimeoutError:
        return f"no broker answered {what} within {deadline:g} s"
    except StoreUnavailable as exc:
        # the broker answered, its JetStream store could not take the request for now:
        # a write not made; a read the broker itself answered, as it answers any refusal
        if not refused_is_answer:
            return f"no broker answered {what}: {type(exc).__name__}: {exc}"
    except (Unavailable, NotConnected, MalformedReply) as exc:
        return f"no broker answered {what}: {type(exc).__name__}: {exc}"
    except Mq9Error as exc:
        if not refused_is_answer:
            return f"no broker answered {what}: {type(exc).__name__}: {exc}"
        # the broker's own refusal ("no such mailbox", "not yours"): it answered
    return None


class Probe:
    """A readiness check (``ask``: None when ready, else why not) asked at most once every
    ``kept`` seconds, the answer shared by the callers meanwhile; ``clock``: monotonic."""

    def __init__(
        self,
        ask: Callable[[], Awaitable[str | None]],
        *,
        kept: float = PROBE_KEPT,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ask, self.kept, self.clock = ask, kept, clock
        self._last: tuple[float, str | None] | None = None
        self._running: asyncio.Future[str | None] | None = None

    async def __call__(self) -> str | None:
        """Answered within ``ANSWER_WITHIN``: a probe still under way then goes on (its
        answer kept for the next ask), and this one is the last probe's answer while it is
        under ``PROBE_FRESH`` s old, else not ready (a console before its credential answered
        503 after 6 s)."""
        last = self._last
        if last is not None and self.clock() - last[0] < self.kept:
            return last[1]
        if self._running is None or self._running.done():
            self._running = asyncio.ensure_future(self.ask())
            self._running.add_done_callback(self._keep)
        try:
            return await asyncio.wait_for(asyncio.shield(self._running), ANSWER_WITHIN)
        except TimeoutError:
            last = self._last
            if last is None:
                return f"not known yet: no probe of the broker answered within {ANSWER_WITHIN:g} s"
            # the last probe speaks only while it is recent: one from before a cluster
            # lost its quorum, with nothing asked since, would say ready while no write is taken
            if self.clock() - last[0] < PROBE_FRESH:
                return last[1]
            return (
                f"not known: no probe of the broker answered within {ANSWER_WITHIN:g} s, nor one "
                f"in the {PROBE_FRESH:g} s before"
            )

    def _keep(self, done: asyncio.Future[str | None]) -> None:
        if not done.cancelled() and done.exception() is None:
            self._last = (self.clock(), done.result())


def answering(client: Callable[[], ProbedClient | None], deadline: float = PROBE_DEADLINE) -> Probe:
    """The ``Probe`` of ``broker_writes`` for the client ``client()`` gives (None: none yet):
    ready once a broker acknowledged a write."""

    async def ask() -> str | None:
        current = client()
        if current is None:
            return "not connected to the broker yet"
        return (await broker_writes(current, deadline)).why_not_ready

    return Probe(ask)


class ReadsProbe(Probe):
    """The probe of a server whose job is reading (the console): ready while reads are
    answered; ``writes`` says why the last write was not acknowledged (None: it was, or
    nothing was asked yet): the server is up read-only, and says so (``note``)."""

    def __init__(
        self, client: Callable[[], ProbedClient | None], deadline: float = PROBE_DEADLINE
    ) -> None:
        self.writes: str | None = None
        super().__init__(self._reads)
        self.client, self.deadline = client, deadline

    async def _reads(self) -> str | None:
        current = self.client()
        if current is None:
            self.writes = "not connected to the broker yet"
            return self.writes
        answered = await broker_writes(current, self.deadline)
        self.writes = answered.writes
        return answered.writes if answered.reads is not None else None

    def note(self) -> str | None:
        """What ``/readyz`` adds to "ready": ``read-only: why`` while writes are not taken."""
        return None if self.writes is None else f"read-only: {self.writes}"
