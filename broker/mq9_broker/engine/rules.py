"""The shape of one entry in the engine's command table, ``Command``: its subject, the largest
body read for it, how the body is read, whether it waits or costs, its part in ownership and its
handler, with the small rules its fields name (``parsed_body``, ``large_body``, ``as_is``, ...).

The table itself, one entry a command beside its handler, is engine.py's (``COMMANDS``). What an
entry's ``read`` does with a body is bodies.py's (each body read as RobustMQ's handler reads it,
and the checks that decide before any state is read), the answers' bytes are answers.py's, a
SEND's headers sending.py's. Nothing here reads or writes state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from mq9_wire import protocol as p
from mq9_wire.protocol.errors import Mq9Error

from . import owned as owning
from .limits import BrokerLimits
from .owned import Owned
from .sending import Headers

# A body above this is parsed off the loop (a large QUERY's parsing would hold every other
# request: bench/HOTPATH.md); a QUERY's above it takes its requester's turns (serve.py)
LARGE_BODY = 4096
_ESCAPED = len("\\u0000")  # the most bytes a card's byte takes in JSON text


# -- a command's entry (the table of them: engine.py, beside the handlers) -------------------

E = TypeVar("E")  # the engine whose handler answers a command
R = TypeVar("R")  # what a command's body reads as, handed to its handler


def parsed_body(limits: BrokerLimits) -> int | None:
    return limits.max_request


def card_body(limits: BrokerLimits) -> int | None:
    """A REGISTER's: room for a card of ``max_card_bytes`` with every byte escaped; no card
    limit, none (what NATS carries)."""
    card = limits.max_card_bytes
    return None if card is None else limits.max_request + _ESCAPED * card


def own_rule(_limits: BrokerLimits) -> int | None:
    """None here: SEND keeps its own rule (``check_fits``); DELETE's body is never read."""
    return None


def never_costly(_body: bytes) -> bool:
    return False


def always_costly(_body: bytes) -> bool:
    return True


def large_body(body: bytes) -> bool:
    return len(body) > LARGE_BODY


def as_is(body: bytes, limits: BrokerLimits) -> bytes:
    """A body its handler reads itself: SEND's, with its headers, once its mailbox is found
    live (RobustMQ's order: a SEND to no mailbox is told so, whatever its headers); DELETE's,
    never read (its target is in the subject)."""
    return body


@dataclass(frozen=True)
class Command(Generic[E, R]):
    """One mq9 command whole, as an engine takes it (as the MCP SDK's request handler
    entries hold a handler with its params type).

    ``subject``: the command's subject, or, ending in ".", the prefix a mailbox address (and
    for DELETE ``.msg_id``) follows, handed to the handler as its target. ``handler``:
    ``handler(engine, target, headers, request)``, the answer to a request whose body
    ``read(body, limits)`` made ``request`` (refusing it with ``Mq9Error``). ``body_limit``:
    the largest body read, for the broker's limits (None: not bounded here). ``waits``:
    whether its answer may wait (an empty FETCH, the worker thread, the tag reads of a
    QUERY): the in-process engine answers the others at once under its lock, as one storage
    transaction; a body of a command that waits is read on the worker thread when above
    ``LARGE_BODY``. ``costly``: whether a request with this body costs the broker work while
    it waits, so that a serving transport makes its requester take turns (serve.py).
    ``owned``: what an enforcing broker's ownership checks before it and records after it
    (owned.py), made as part of answering it."""

    subject: str
    handler: Callable[[E, str, Headers, R], Awaitable[bytes]]
    read: Callable[[bytes, BrokerLimits], R]
    body_limit: Callable[[BrokerLimits], int | None] = parsed_body
    waits: bool = False
    costly: Callable[[bytes], bool] = never_costly
    owned: Owned = owning.NOTHING

    @property
    def addressed(self) -> bool:
        return self.subject.endswith(".")

    def check_body(self, limits: BrokerLimits, subject: str, body: bytes) -> None:
        """(our choice; RobustMQ reads any body NATS carries) refuse, unread, a body larger
        than this command needs (``body_limit``)."""
        limit = self.body_limit(limits)
        if limit is not None and len(body) > limit:
            raise Mq9Error(
                f"request body of {len(body)} bytes refused unread: this broker takes at most "
                f"{limit} bytes for {subject}"
            )


def unknown(subject: str) -> Mq9Error:
    # RobustMQ answers a NATS -ERR; a service can only reply (our choice: same words)
    return Mq9Error(p.err_unknown_subject(subject))
