"""What can go wrong with an mq9 call: the exception classes, and ``from_reply``, the one place
that reads a broker's error text as its class.

Code acts on an error's class, never on its words: ``from_reply`` turns a broker's error reply
into its class, once, where the client reads it; the client's own refusals and the transports'
failures are raised as their class where they happen. The words on the wire stay RobustMQ's;
they and the ones the bundled broker and the client write are ``error_texts.py``'s (re-exported
here). ``WIRE_TEXTS`` holds every error text with the class it reads as;
tests/integration/protocol/test_error_texts.py runs it both ways. The classes, their attributes
and the texts each is read from: docs/protocol.md §10.1.

The tree, each class with when it is raised (tests/wire/protocol/test_error_tree.py holds it to
the classes)::

    Mq9Error                        a command failed: the broker's error text, or the client's
        InvalidArgument             a value refused, before sending or by the broker
            InvalidAddress          an address no mailbox can have (RobustMQ's rules, length)
            WireError               a body serde_json would refuse
            NotAwaitingAck          an ACK of a message the group's reader is not waiting on
        MailboxNotFound             no mailbox has the address (never made, or its TTL ran out)
        MailboxExists               CREATE of a name a mailbox already has
        TooLarge                    something larger than the broker carries
            PayloadTooLarge         a message above what the broker carries: send a reference
            AnswerTooLarge          a group FETCH whose answer would not fit: ask for fewer
            ListingTooLarge         a DISCOVER without text whose agents fill more than one answer
        LimitReached                a bound on how many mailboxes, messages, agents or groups
            KeysFull                a keyed SEND with no room for another idempotency key
        SearchNotBuilt              DISCOVER by text on a RobustMQ built without vector search
        SearchIndexEmpty            DISCOVER by text before any agent card is indexed
        NotAllowed                  the broker refused the caller's credentials
        NotOwner                    a --credentials broker refused what is another agent's
        NotConnected                a call on a client not connected, or from another event loop
        MalformedReply              a reply no mq9 broker sends
        Unavailable                 no answer: retryable, the same call may pass later
            ConnectFailed           no connection could be made (nothing listening, DNS, TLS)
            RequestTimeout          no answer in time: the request may or may not have been done
            ConnectionLost          the link dropped while the request was under way
            NoBroker                NATS answers, but nothing serves the mq9 subjects on it
            ClusterUnavailable      a RobustMQ cluster could not reach a part of itself
                StorageMissing      RobustMQ holds no storage shard for the mailbox addressed
                StoreUnavailable    the bundled broker's JetStream store cannot take it for now
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .error_texts import (
    ERR_AGENT_INFO_EMPTY,
    ERR_AGENT_NAME_EMPTY,
    ERR_NAME_CHARS,
    ERR_NAME_EDGES,
    ERR_NAME_EMPTY,
    ERR_REGISTER_EMPTY,
    ERR_SEARCH_NOT_BUILT,
    LISTING_TOO_LARGE,
    MAILBOX_MISSING,
    NO_RESPONDERS,
    NOT_STORED,
    NOT_YOURS,
    NOT_YOURS_REFUSALS,
    OURS,
    REFUSED_WRITE,
    ROBUSTMQ,
    SEARCH_NOT_BUILT,
    SEARCH_TABLE_MISSING,
    SERDE_REFUSALS,
    SHARD_MISSING,
    STORE_OUTAGE,
    STORED_ANYWAY,
    TRANSIENT_MARKERS,
    err_ack_mailbox_missing,
    err_address_too_long,
    err_agent_limit,
    err_answer_too_large,
    err_card_too_large,
    err_delay_too_long,
    err_empty_segment,
    err_entry_too_large,
    err_group_limit,
    err_group_name_too_long,
    err_idempotency_key_reused,
    err_idempotency_key_size,
    err_idempotency_keys_full,
    err_invalid_address,
    err_listing_too_large,
    err_mailbox_exists,
    err_mailbox_full,
    err_mailbox_limit,
    err_mailbox_missing,
    err_message_too_large,
    err_not_awaiting_ack,
    err_reserved_mailbox,
    err_shard_missing,
    err_stored_too_large,
    err_topic_missing,
    err_unknown_subject,
)
from .quoting import quoted
from .subjects import MSG_SEND


class Mq9Error(Exception):
    """A failed mq9 command: ``message`` is the broker's error text, or the client's own refusal.

    ``retryable`` is true when the same call may succeed later unchanged (the broker was
    unreachable or did not answer in time), false when the request must change: each class has
    its default, ``retryable=`` overrides it. ``details`` set the attributes a class declares
    (``address``, ``fits``, ...). ``detail``: the broker's own text, when ``message`` says it
    in plainer words (RobustMQ's storage layer speaks of tenants and topics).
    """

    retryable: bool = False
    detail: str | None = None

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


class NotAwaitingAck(InvalidArgument):
    """An ACK of ``msg_id`` in ``address`` that its group's reader is not waiting for:
    never handed out to it, or acked already (the client's own refusal, before anything is
    sent). ``waiting``: the msg_ids that do wait for an ack, oldest first (none: fetch first)."""

    msg_id: int | None = None
    address: str | None = None
    waiting: tuple[int, ...] = ()


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
    """A message above what the broker carries: send a reference to the data instead;
    ``largest``: the largest payload of plain text the broker takes with its headers."""

    largest: int | None = None


class AnswerTooLarge(TooLarge):
    """A group FETCH whose whole answer is above what the broker sends; ``fits``: the largest
    num_msgs whose answer fits (ask for that many)."""

    fits: int = 0


class ListingTooLarge(TooLarge):
    """A DISCOVER without text or semantic: the ``count`` agents do not fit in one answer."""

    count: int | None = None


class LimitReached(Mq9Error):
    """A limit on how many (mailboxes, messages, agents, consumer groups) is reached."""


class KeysFull(LimitReached):
    """A keyed SEND refused: the sender's (or the broker's) idempotency keys are
    at their bound for now. Nothing was stored; the same SEND without a key, or later, goes.
    The text names whose bound it is and no count, so a server carrying many callers can pass
    it on without telling one caller of the others."""


class SearchNotBuilt(Mq9Error):
    """RobustMQ built without its vector-search feature (its default): DISCOVER with text or
    semantic is refused; the client then ranks the listing itself."""


class SearchIndexEmpty(Mq9Error):
    """A vector-search build that has indexed no A2A card yet: no agents."""


class NotAllowed(Mq9Error):
    """The broker refused the caller (its credentials)."""


class NotOwner(Mq9Error):
    """A ``--credentials`` broker refused what is another agent's, or nobody's (a mailbox or
    agent made before credentials were enforced, a name reserved for another): the same
    request will be refused again; use a mailbox or agent of your own. Not a ``NotAllowed``:
    the credential itself was accepted."""


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
    ``stored_nothing``: the failed request certainly stored nothing (safe to send again).
    ``stored``: the failed SEND certainly stored its message (RobustMQ wrote it, then failed:
    never send it again)."""

    stored_nothing: bool = False
    stored: bool = False


class StorageMissing(ClusterUnavailable):
    """RobustMQ has no storage shard for the mailbox addressed (``Shard <shard> does not
    exist``): on a cluster, a node not yet told of a mailbox made a moment ago; where it lasts,
    a mailbox whose first two CREATEs crossed (RobustMQ 8bd49dc then points the name at a shard
    it never made: docs/protocol-commands.md §5.1). Nothing was stored."""

    stored_nothing: bool = True
    shard: str = ""


class StoreUnavailable(ClusterUnavailable):
    """The bundled broker's JetStream store did not take the request for now: its
    servers electing a stream's leader, without a quorum, or slower than the store's deadline.
    The same request may pass unchanged a moment later; the bundled broker said it (these are
    its words), and it keeps idempotency keys, so a keyed SEND is sent again through it."""


# -- the table: each text, the class it reads as, and the pattern that recognises it ------------


@dataclass(frozen=True, slots=True)
class WireText:
    """One kind of error text: the class it reads as; the pattern that recognises it (searched
    anywhere in a reply; its named groups set the class's attributes, digits as ints); who says
    it; and the texts themselves: the makers above (their parameters are named as the groups
    they fill) or fixed words."""

    cls: type[Mq9Error]
    pattern: re.Pattern[str]
    said_by: str
    texts: tuple[str | Callable[..., str], ...]
    # The error's message in the user's words, filled from the pattern's groups; the broker's
    # text is then its ``detail``. Empty: the broker's text is the message.
    says: str = ""


def _reads(
    cls: type[Mq9Error],
    pattern: str,
    said_by: str,
    *texts: str | Callable[..., str],
    says: str = "",
) -> WireText:
    return WireText(cls, re.compile(pattern, re.DOTALL), said_by, texts, says)


# The first that matches wins (a more specific text before the words it also holds).
# fmt: off
WIRE_TEXTS = (
    # first: anchored at its start, and the name it quotes is the requester's, which may hold
    # any other entry's words (an agent named "Connection refused")
    _reads(NotOwner, r"^[A-Z]+ refused: .*(?:" + "|".join(map(re.escape, NOT_YOURS)) + ")",
           OURS, *NOT_YOURS_REFUSALS),
    # anywhere in any reply, so early; ``from_reply`` adds what to do (ClusterUnavailable)
    _reads(ClusterUnavailable, "|".join(map(re.escape, TRANSIENT_MARKERS)), ROBUSTMQ,
           *TRANSIENT_MARKERS),
    _reads(StoreUnavailable, "|".join(map(re.escape, STORE_OUTAGE)), OURS, *STORE_OUTAGE),
    _reads(StorageMissing, SHARD_MISSING, ROBUSTMQ, err_shard_missing),
    _reads(MailboxNotFound, r"mailbox (?P<address>\S+) does not exist$", ROBUSTMQ,  # SEND
           err_mailbox_missing, says=MAILBOX_MISSING),
    _reads(MailboxNotFound, r"Tenant \S+ topic '(?P<address>.*)' not found in broker cache$",
           ROBUSTMQ, err_topic_missing, says=MAILBOX_MISSING),
    _reads(MailboxNotFound, r"mailbox not found: (?P<address>\S+)$", ROBUSTMQ,  # ACK
           err_ack_mailbox_missing, says=MAILBOX_MISSING),
    _reads(MailboxExists, r"mailbox (?P<address>\S+) already exists$", ROBUSTMQ,
           err_mailbox_exists),
    _reads(AnswerTooLarge, r"the answer would be (?P<size>\d+) bytes, above the (?P<limit>\d+) "
           r"bytes .*ask for at most (?P<fits>\d+) messages \(num_msgs\)$", OURS,
           err_answer_too_large),
    _reads(ListingTooLarge, rf"the registry's (?P<count>\d+) agents are {LISTING_TOO_LARGE} "
           r"\((?P<size>\d+) bytes, above the (?P<limit>\d+) bytes", OURS, err_listing_too_large),
    _reads(PayloadTooLarge, r"message too large: it would take (?P<size>\d+) bytes .* at most "
           r"(?P<limit>\d+) bytes .*the largest payload it takes .*? is (?P<largest>\d+) bytes",
           OURS, err_message_too_large),
    _reads(TooLarge, r"agent card is (?P<size>\d+) bytes.*?(?P<limit>\d+) bytes", OURS,
           err_card_too_large),
    _reads(TooLarge, r"agent entry is (?P<size>\d+) bytes.*?(?P<limit>\d+) bytes", OURS,
           err_entry_too_large),
    _reads(TooLarge, r"message \d+ alone takes (?P<size>\d+) bytes in an answer, above the "
           r"(?P<limit>\d+) bytes", OURS, err_stored_too_large),
    _reads(SearchNotBuilt, re.escape(SEARCH_NOT_BUILT), ROBUSTMQ, ERR_SEARCH_NOT_BUILT,
           says="this broker has no agent search (a RobustMQ built without its vector-search "
           "feature): list the agents without text or semantic"),
    _reads(SearchIndexEmpty, re.escape(SEARCH_TABLE_MISSING), ROBUSTMQ, SEARCH_TABLE_MISSING,
           says="no agent is registered with this broker yet (its search index is empty)"),
    _reads(InvalidAddress, r"name may only contain|prefix must", ROBUSTMQ,
           ERR_NAME_CHARS, ERR_NAME_EDGES, ERR_NAME_EMPTY),
    _reads(InvalidAddress, r"invalid mail_address", OURS,
           err_invalid_address, err_address_too_long, err_empty_segment),
    _reads(LimitReached, r"(?:mailbox|agent|consumer group) limit reached", OURS,
           err_mailbox_limit, err_agent_limit, err_group_limit),
    _reads(LimitReached, r"mailbox \S+ is full", OURS, err_mailbox_full),
    _reads(InvalidArgument, r"^[A-Z]+ refused: (?:agent name .* is under '|mailbox \S+ is "
           r"reserved by the broker)", OURS, err_reserved_mailbox),
    _reads(KeysFull, r"SEND refused: no room for another idempotency key", OURS,
           err_idempotency_keys_full),
    _reads(InvalidArgument, r"SEND refused: (?:idempotency key .* was used|an mq9-idempotency-key)",
           OURS, err_idempotency_key_reused, err_idempotency_key_size),
    _reads(InvalidArgument, r"invalid delay \d+: at most", OURS, err_delay_too_long),
    _reads(NotAwaitingAck, r"^msg_id (?P<msg_id>\d+) is not waiting for an ack in (?P<address>\S+?)"
           r"(?::|$)", OURS, err_not_awaiting_ack),
    _reads(InvalidArgument, r"invalid |missing field|unknown variant|duplicate field", ROBUSTMQ,
           *SERDE_REFUSALS),  # and the client's own refusals of a value ("invalid ttl ...")
    _reads(InvalidArgument, r"\S+ must not be empty", ROBUSTMQ,
           ERR_REGISTER_EMPTY, ERR_AGENT_INFO_EMPTY, ERR_AGENT_NAME_EMPTY),
    # read as no narrower class: nothing acts on them
    _reads(Mq9Error, r"group_name is \d+ characters", OURS, err_group_name_too_long),
    _reads(Mq9Error, r"unrecognized mq9 subject", ROBUSTMQ, err_unknown_subject),
)
# fmt: on


def from_reply(error: str, subject: str = "") -> Mq9Error:
    """The exception for a broker's non-empty ``error`` reply to a request on ``subject``:
    its class by RobustMQ's words (or the bundled broker's), its message those words, or
    plainer ones (``WireText.says``) with the broker's words as its ``detail``."""
    for text in WIRE_TEXTS:
        found = text.pattern.search(error)
        if found and text.cls in _OUTAGES:
            return _outage(text.cls, error, subject, **_attributes(found))
        if found and text.says:
            quoted_groups = {name: quoted(value) for name, value in found.groupdict().items()}
            message = text.says.format(**quoted_groups)
            return text.cls(message, retryable=None, detail=error, **_attributes(found))
        if found:
            return text.cls(error, retryable=None, **_attributes(found))
    return Mq9Error(error)


def _attributes(found: re.Match[str]) -> dict[str, int | str]:
    """The attributes a matched text gives, numbers as ints."""
    groups = found.groupdict().items()
    return {name: int(value) if value.isdigit() else value for name, value in groups}


# Why each kind of outage answered, and what its words say was stored: a RobustMQ cluster's
# (TRANSIENT_MARKERS) or the bundled broker's JetStream store's (STORE_OUTAGE)
_OUTAGES = {
    ClusterUnavailable: (
        "the mq9 cluster could not reach the node that holds this (a node or the meta leader "
        "is down or changing)",
        "",
    ),
    StorageMissing: (
        "RobustMQ holds no storage for this mailbox: on a cluster, a node not yet told of a "
        "mailbox just made (try again shortly); if it lasts, the mailbox's first two CREATEs "
        "crossed and RobustMQ lost its storage for good (docs/protocol-commands.md §5.1: use "
        "another name, and let one process make a shared mailbox before others use it)",
        "",
    ),
    StoreUnavailable: (
        "the broker's JetStream store cannot take this for now (its servers are electing a "
        "leader, lost their quorum, or are slow)",
        " (a SEND with an idempotency key is sent again by this client, stored once)",
    ),
}


def _outage(
    cls: type[ClusterUnavailable], error: str, subject: str, **details: Any
) -> ClusterUnavailable:
    """``error`` as the outage of kind ``cls``: its words, what happened, what to do; whether
    the failed request certainly stored nothing."""
    if cls is StoreUnavailable:
        unacknowledged = "JetStream did not acknowledge a write" in error
        nothing = REFUSED_WRITE in error or (unacknowledged and NO_RESPONDERS in error)
    else:
        nothing = cls is StorageMissing or NOT_STORED in error
    why, keyed = _OUTAGES[cls]
    sent = subject.startswith(MSG_SEND)
    certain = sent and cls is ClusterUnavailable and STORED_ANYWAY in error
    if certain:
        stored = "; the message was stored (RobustMQ wrote it, then failed): do not send it again"
    elif sent and not (nothing and cls is not ClusterUnavailable):
        stored = (
            "; the message may or may not have been stored: query the mailbox before sending it "
            f"again{keyed}"
        )
    else:
        stored = ""
    again = "" if cls is StorageMissing or certain else "; try again shortly"  # (why says)
    return cls(
        f"{error} — {why}{again}{stored}", stored_nothing=nothing, stored=certain, **details
    )


# What this module offers: its classes and reader, and the texts they are read from
# (error_texts.py's), which code imports from here too
# fmt: off
__all__ = [
    "ERR_AGENT_INFO_EMPTY", "ERR_AGENT_NAME_EMPTY", "ERR_NAME_CHARS", "ERR_NAME_EDGES",
    "ERR_NAME_EMPTY", "ERR_REGISTER_EMPTY", "ERR_SEARCH_NOT_BUILT", "LISTING_TOO_LARGE",
    "MAILBOX_MISSING", "NOT_STORED", "NOT_YOURS", "NOT_YOURS_REFUSALS", "NO_RESPONDERS", "OURS",
    "REFUSED_WRITE", "ROBUSTMQ", "SEARCH_NOT_BUILT", "SEARCH_TABLE_MISSING", "SERDE_REFUSALS",
    "SHARD_MISSING", "STORED_ANYWAY", "STORE_OUTAGE", "TRANSIENT_MARKERS", "WIRE_TEXTS",
    "AnswerTooLarge", "ClusterUnavailable", "ConnectFailed", "ConnectionLost", "InvalidAddress",
    "InvalidArgument", "KeysFull", "LimitReached", "ListingTooLarge", "MailboxExists",
    "MailboxNotFound", "MalformedReply", "Mq9Error", "NoBroker", "NotAllowed", "NotAwaitingAck",
    "NotConnected", "NotOwner", "PayloadTooLarge", "RequestTimeout", "SearchIndexEmpty",
    "SearchNotBuilt", "StorageMissing", "StoreUnavailable", "TooLarge", "Unavailable", "WireError",
    "WireText", "err_ack_mailbox_missing", "err_address_too_long", "err_agent_limit",
    "err_answer_too_large", "err_card_too_large", "err_delay_too_long", "err_empty_segment",
    "err_entry_too_large", "err_group_limit", "err_group_name_too_long",
    "err_idempotency_key_reused", "err_idempotency_key_size", "err_idempotency_keys_full",
    "err_invalid_address", "err_listing_too_large", "err_mailbox_exists", "err_mailbox_full",
    "err_mailbox_limit", "err_mailbox_missing", "err_message_too_large", "err_not_awaiting_ack",
    "err_reserved_mailbox", "err_shard_missing", "err_stored_too_large", "err_topic_missing",
    "err_unknown_subject", "from_reply",
]
# fmt: on
