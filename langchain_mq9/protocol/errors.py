"""What can go wrong with an mq9 call, as exception classes, and the one place that reads them.

Code acts on an error's class, never on its words: ``from_reply`` turns a broker's error reply
into its class, once, where the client reads it; the client's own refusals and the transports'
failures are raised as their class where they happen. The words on the wire stay RobustMQ's
(``protocol/__init__.py``). The classes, their attributes and the texts each is read from:
docs/protocol.md §10.1.
"""

from __future__ import annotations

import re
import sqlite3
from typing import Any


class Mq9Error(Exception):
    """A failed mq9 command: ``message`` is the broker's error text, or the client's own refusal.

    ``retryable`` is true when the same call may succeed later unchanged (the broker was
    unreachable or did not answer in time), false when the request must change: each class has
    its default, ``retryable=`` overrides it. ``details`` set the attributes a class declares
    (``address``, ``fits``, ...).
    """

    retryable: bool = False

    def __init__(self, message: str, *, retryable: bool | None = None, **details: Any) -> None:
        # A text quoting bad input (a subject or name holding a lone surrogate) must still
        # travel as UTF-8 in an error reply: such characters are written as escapes
        message = message.encode("utf-8", "backslashreplace").decode("utf-8")
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        for name, value in details.items():
            if not hasattr(type(self), name):
                raise TypeError(f"{type(self).__name__} has no attribute {name!r}")
            setattr(self, name, value)


class InvalidArgument(Mq9Error):
    """A value refused, by the client before sending or by the broker: change the call."""


class InvalidAddress(InvalidArgument):
    """An address no mailbox can have (RobustMQ's name rules, or too long for a subject)."""


class WireError(InvalidArgument):
    """A body serde_json would refuse; the text follows serde's wording (without its
    line/column position)."""


class MailboxNotFound(Mq9Error):
    """No mailbox has ``address`` (never made, or its TTL ran out)."""

    address: str | None = None


class MailboxExists(Mq9Error):
    """CREATE of a name a mailbox already has."""

    address: str | None = None


class TooLarge(Mq9Error):
    """Something is larger than the broker carries: ``size`` bytes above ``limit``."""

    size: int | None = None
    limit: int | None = None


class PayloadTooLarge(TooLarge):
    """A message above what the broker carries: send a reference to the data instead."""


class AnswerTooLarge(TooLarge):
    """A group FETCH whose whole answer is above what the broker sends; ``fits``: the largest
    num_msgs whose answer fits (ask for that many)."""

    fits: int = 0


class ListingTooLarge(TooLarge):
    """A DISCOVER without text or semantic: the ``count`` agents do not fit in one answer."""

    count: int | None = None


class LimitReached(Mq9Error):
    """A limit on how many (mailboxes, messages, agents, consumer groups) is reached."""


class SearchNotBuilt(Mq9Error):
    """RobustMQ built without its vector-search feature (its default): DISCOVER with text or
    semantic is refused; the client then ranks the listing itself."""


class SearchIndexEmpty(Mq9Error):
    """A vector-search build that has indexed no A2A card yet: no agents."""


class NotAllowed(Mq9Error):
    """The broker refused the caller (its credentials)."""


class NotConnected(Mq9Error):
    """The client is not connected, or is called from another event loop than its own."""


class MalformedReply(Mq9Error):
    """A reply no mq9 broker sends (is this server speaking mq9?)."""


class Unavailable(Mq9Error):
    """The broker could not be reached or did not answer: the same call may pass later."""

    retryable = True


class ConnectFailed(Unavailable):
    """No connection to the broker could be made (nothing listening, DNS, TLS)."""


class RequestTimeout(Unavailable):
    """No answer in time: the request may or may not have been carried out."""


class ConnectionLost(Unavailable):
    """The link to the broker dropped while the request was under way or about to be sent."""


class NoBroker(Unavailable):
    """NATS is there, but nothing answers mq9 subjects on it."""


class ClusterUnavailable(Unavailable):
    """A RobustMQ cluster could not reach a part of itself (a node, a shard, the meta leader).
    ``stored_nothing``: the failed request certainly stored nothing (safe to send again)."""

    stored_nothing: bool = False


# -- RobustMQ's words that say which failure a reply is ---------------------------------------

# What a RobustMQ cluster answers while a node, its shard or the meta leader is out of reach:
# the request may succeed unchanged a moment later. grpc-clients/src/utils.rs retries transport
# errors itself; what still reaches a client: the storage forward giving up (storage-engine
# clients/connection.rs ~117), a forward to a leader that is gone, and the transport texts.
TRANSIENT_MARKERS = (
    # a mailbox made a moment ago whose shard's offsets are not set up yet (storage-engine
    # core/offset.rs: the offset is read before anything is written): nothing was stored
    NOT_STORED := "Offset state for shard",
    "exceeded max retry times",
    "has to forward request to",
    "meta-service node is not currently the raft leader",
    "tcp connect error",
    "Connection refused",
    "ConnectError",
    "The service is currently unavailable",
)
# DISCOVER with text or semantic on RobustMQ's default build (meta-service
# services/mq9/agent.rs ~143, wrapped by common/base error/common.rs ~132 and tonic's Status).
SEARCH_NOT_BUILT = "agent search is not enabled in this build (missing the 'vector-search' feature)"
# The same on a vector-search build until the first A2A card is registered: no agents yet.
SEARCH_TABLE_MISSING = "Table 'mq9_agents' was not found"
LISTING_TOO_LARGE = "too large to list in one answer"

# (pattern, class, the attributes its groups give); the first that matches wins.
# fmt: off
_READERS: tuple[tuple[re.Pattern[str], type[Mq9Error], tuple[str, ...]], ...] = tuple(
    (re.compile(pattern, re.DOTALL), cls, names)
    for pattern, cls, names in (
        (r"mailbox (\S+) does not exist$", MailboxNotFound, ("address",)),  # SEND
        (r"Tenant \S+ topic '(.*)' not found in broker cache$", MailboxNotFound, ("address",)),
        (r"mailbox not found: (\S+)$", MailboxNotFound, ("address",)),  # ACK
        (r"mailbox (\S+) already exists$", MailboxExists, ("address",)),
        (
            r"the answer would be (\d+) bytes, above the (\d+) bytes .*ask for at most (\d+) "
            r"messages \(num_msgs\)$",
            AnswerTooLarge,
            ("size", "limit", "fits"),
        ),
        (
            rf"the registry's (\d+) agents are {LISTING_TOO_LARGE} \((\d+) bytes, above the "
            r"(\d+) bytes",
            ListingTooLarge,
            ("count", "size", "limit"),
        ),
        (r"message too large: it would take (\d+) bytes .* at most (\d+) bytes", PayloadTooLarge,
         ("size", "limit")),
        (r"agent (?:card|entry) is (\d+) bytes.*?(\d+) bytes", TooLarge, ("size", "limit")),
        (r"message \d+ alone takes (\d+) bytes in an answer, above the (\d+) bytes", TooLarge,
         ("size", "limit")),
        (re.escape(SEARCH_NOT_BUILT), SearchNotBuilt, ()),
        (re.escape(SEARCH_TABLE_MISSING), SearchIndexEmpty, ()),
        # RobustMQ's CREATE name rules, and the client's own address refusals
        (r"invalid mail_address|name may only contain|prefix must", InvalidAddress, ()),
        (r"(?:mailbox|agent|consumer group) limit reached|mailbox \S+ is full", LimitReached, ()),
        # serde's and the handlers' refusals of a request's values
        (r"invalid |missing field|unknown variant|duplicate field|\S+ must not be empty",
         InvalidArgument, ()),
    )
)
# fmt: on


def from_reply(error: str, subject: str = "") -> Mq9Error:
    """The exception for a broker's non-empty ``error`` reply to a request on ``subject``:
    its class by RobustMQ's words (or the bundled broker's), its message those words."""
    if any(marker in error for marker in TRANSIENT_MARKERS):
        stored = (
            "; the message may or may not have been stored: query the mailbox before "
            "sending it again"
            if subject.startswith("$mq9.AI.MSG.SEND.")
            else ""
        )
        return ClusterUnavailable(
            f"{error} — the mq9 cluster could not reach the node that holds this (a node "
            f"or the meta leader is down or changing); try again shortly{stored}",
            stored_nothing=NOT_STORED in error,
        )
    for pattern, cls, names in _READERS:
        found = pattern.search(error)
        if found:
            values = {
                name: int(value) if value.isdigit() else value
                for name, value in zip(names, found.groups(), strict=True)
            }
            return cls(error, **values)
    return Mq9Error(error)


def refused_credentials(exc: BaseException) -> bool:
    """Whether a nats-py error says the server refused the credentials: its AuthorizationError,
    or (while connecting) a plain error quoting the server's -ERR 'Authorization Violation'."""
    from nats.errors import AuthorizationError

    return isinstance(exc, AuthorizationError) or "authorization" in str(exc).lower()


# -- the bundled broker's SQLite store ---------------------------------------------------------


def sqlite_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused because another process holds the database (locked/busy)."""
    return _sqlite_code(exc, ("SQLITE_BUSY", "SQLITE_LOCKED"), "locked")


def sqlite_readonly(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused to write a database it may only read."""
    return _sqlite_code(exc, ("SQLITE_READONLY",), "readonly")


def _sqlite_code(exc: sqlite3.Error, names: tuple[str, ...], words: str) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is None:  # Python 3.10: its words are all there is
        return words in str(exc)
    return any(code & 0xFF == getattr(sqlite3, name) for name in names)
