"""Arrival announcements of the bundled broker (``mq9-dev-broker --announce``, or an engine in
this process): the digest of each mailbox a message was stored in, as it is stored. mq9 itself
announces nothing (RobustMQ neither); without announcements a waker polls.

On nats-server the broker publishes on ``$mq9.WAKE.<digest>`` with an empty body: the digest
of the mailbox's name, never the name, so a listener learns only when a mailbox whose name it
already knows gets mail. With ``--credentials`` agents may subscribe to their reply inboxes
only (docs/security.md): announcements reach the broker's own users, nobody else.

An answer of a broker could be made to arrive there too (a request naming
``$mq9.WAKE.<digest>`` as its reply subject, or through the open cluster's service import,
which delivers an answer to whatever reply its requester named), and was heard as an
announcement. So only a message carrying the headers of a JetStream stream's republish
(``STORED``: how the cluster store announces, and how the dev broker's ``--announce`` says it,
serving/serve.py) is one; a plain answer, nats-server's own replies (a status, "JetStream not
enabled") carry none of them. Where clients may publish on ``$mq9.WAKE.>`` (the dev broker
without credentials, on which anyone may do anything) they can forge those too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Mapping

from ..client import Mq9Client
from ..client.transport import Announcements, StoredArrivals
from ..client.transport import Unsubscribe as Unsubscribe  # the waker's and agent calls' too
from .rules import ARRIVALS_PREFIX, ARRIVALS_WILDCARD, digest

log = logging.getLogger("mq9_platform.wake")

OnArrival = Callable[[str], None]  # called on the loop with a mailbox's digest
# What a stream's republish adds to each message it republishes, and no broker's answer has
STORED = ("Nats-Stream", "Nats-Subject", "Nats-Sequence", "Nats-Last-Sequence")


def from_the_store(headers: Mapping[str, str] | None) -> bool:
    """Whether a message on ``$mq9.WAKE.<digest>`` is an announcement: it has the headers of
    a stream's republish (``STORED``), which a broker's answer never has."""
    return headers is not None and all(headers.get(name) for name in STORED)


async def subscribe_arrivals(
    client: Mq9Client, on_arrival: OnArrival, *, mailboxes: Iterable[str] | None = None
) -> Unsubscribe | None:
    """Call ``on_arrival(digest)`` on this loop for each message stored, where the broker
    announces it: a memory:// engine of this process, or a NATS server carrying
    ``$mq9.WAKE.*``. None when nothing can be subscribed (then poll). ``mailboxes``: on NATS,
    only theirs are subscribed to (a listener for a few mailboxes is not sent every one's)."""
    loop = asyncio.get_running_loop()
    transport = client.transport
    if isinstance(transport, StoredArrivals):  # an engine in this process, if it tells
        told = _on_engine(loop, on_arrival)
        unsubscribe = transport.subscribe_stored(told)
        if unsubscribe is not None:
            return unsubscribe
    if not isinstance(transport, Announcements):
        return None

    def heard(subject: str) -> None:
        d = subject[len(ARRIVALS_PREFIX) :]
        if len(d) == 32:
            on_arrival(d)

    subjects = [ARRIVALS_WILDCARD]
    if mailboxes is not None:
        subjects = [ARRIVALS_PREFIX + digest(m) for m in set(mailboxes)]
    try:
        return await transport.subscribe_announcements(
            subjects, heard, client.request_timeout, accept=from_the_store
        )
    except Exception as exc:  # a server refusing the subscription: poll instead
        log.warning("arrival announcements unavailable (%s): polling", type(exc).__name__)
        return None


def _on_engine(loop: asyncio.AbstractEventLoop, on_arrival: OnArrival) -> Callable[[str], None]:
    """What the engine calls with each mailbox it stores in: ``on_arrival(digest)`` handed to
    ``loop`` (the engine may tell from another thread, under its lock)."""
    names: dict[str, str] = {}
    thread = threading.get_ident()

    def told(address: str) -> None:  # under the engine's lock: only hand it on, never raise
        if loop.is_closed():  # a listener whose loop ended without unsubscribing
            return
        d = names.get(address)
        if d is None:
            d = names[address] = digest(address)
        try:
            if threading.get_ident() == thread:
                loop.call_soon(on_arrival, d)
            else:
                loop.call_soon_threadsafe(on_arrival, d)
        except RuntimeError:  # closed meanwhile
            pass

    return told
