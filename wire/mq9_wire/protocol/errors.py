"""What can go wrong with an mq9 call: the exception classes, each error text on the wire
beside the pattern that reads it back, and ``from_reply``, the one place that reads them.

Code acts on an error's class, never on its words: ``from_reply`` turns a broker's error reply
into its class, once, where the client reads it; the client's own refusals and the transports'
failures are raised as their class where they happen. The words on the wire stay RobustMQ's.
``WIRE_TEXTS`` holds every error text, with how the protocol writes it and the class it reads
as; tests/integration/protocol/test_error_texts.py runs it both ways. The classes, their attributes and the
texts each is read from: docs/protocol.md §10.1.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .limits import (
    MAX_ADDRESS_LENGTH,
    MAX_CONTROL_LINE,
    MAX_DELAY_SECONDS,
    MAX_GROUP_NAME,
    MAX_IDEMPOTENCY_KEY,
)
from .quoting import quoted
from .subjects import MSG_SEND, TENANT


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


class NotAwaitingAck(InvalidArgument):
    """An ACK of ``msg_id`` in ``address`` that its group's reader is not waiting for:
    never handed out to it, or acked already (the client's own refusal, before anything is
    sent). ``waiting``: the msg_ids that do wait for an ack, oldest first (none: fetch first)."""

    msg_id: int | None = None
    address: str | None = None
    waiting: tuple[int, ...] = ()


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


# -- the words on the wire -----------------------------------------------------------------------

# What a RobustMQ cluster answers while a node, its shard or the meta leader is out of reach
# (RobustMQ's words, only read): the request may succeed unchanged a moment later.
# grpc-clients/src/utils.rs retries transport errors itself; what still reaches a client: the
# storage forward giving up (storage-engine clients/connection.rs ~117), a forward to a leader
# that is gone, and the transport texts.
TRANSIENT_MARKERS = (
    # a mailbox made a moment ago whose shard's offsets are not set up yet (storage-engine
    # core/offset.rs: the offset is read before anything is written): nothing was stored
    NOT_STORED := "Offset state for shard",
    # the same, met after the write (storage-engine core/write.rs:81-112: the offset state read
    # after the record was written, and reads are not held to the high watermark): stored
    STORED_ANYWAY := "shard may not be initialized",
    "exceeded max retry times",
    "has to forward request to",
    "meta-service node is not currently the raft leader",
    "tcp connect error",
    "Connection refused",
    "ConnectError",
    "The service is currently unavailable",
)
# A mailbox whose topic names a shard the storage engine does not hold (storage-engine
# core/error.rs:62, from write.rs:50 before anything is written and read_*.rs): RobustMQ's words
SHARD_MISSING = r"Shard (?P<shard>\S+) does not exist"
# What the bundled broker's JetStream store answers while its servers cannot take a request
# for now (nats-server's words it repeats, and its own for a request unanswered): never a
# refusal. A write JetStream refused, or that reached no stream ("no responders": no leader to
# take it), stored nothing; one unacknowledged may have been stored.
STORE_OUTAGE = (
    "JetStream system temporarily unavailable",  # nats-server: no quorum, no meta leader
    "JetStream cluster can not handle request",  # nats-server: a leader not there yet
    "stream is offline",  # nats-server: its stream's peers not there
    "JetStream did not answer",  # the store: a request unanswered within its deadline
    "JetStream did not acknowledge a write",  # the store: a write unanswered (stored or not)
)
_REFUSED_WRITE = "JetStream refused a write"
_NO_RESPONDERS = "no responders"  # nats-py's words: the request reached no subscriber

# DISCOVER with text or semantic on RobustMQ's default build (meta-service
# services/mq9/agent.rs ~143, wrapped by common/base error/common.rs ~132 and tonic's Status).
SEARCH_NOT_BUILT = "agent search is not enabled in this build (missing the 'vector-search' feature)"
ERR_SEARCH_NOT_BUILT = (
    "Grpc call of the node failed,Grpc status was code: 'Internal error', "
    f'message: "{SEARCH_NOT_BUILT}"'
)
# The same on a vector-search build until the first A2A card is registered: no agents yet.
SEARCH_TABLE_MISSING = "Table 'mq9_agents' was not found"
# A --credentials broker's refusals of what is not the requester's (broker/identities/
# ownership.py writes them, "<VERB> refused: <name> <why>"; a RobustMQ broker has no owners):
# the words after the name that say whose it is, and one written text of each.
NOT_YOURS = (
    "belongs to another agent",
    "has no owner",
    "is another agent's",
    "is registered by another agent",
    "is not a mailbox of yours",
    "that is not yours",
    "a waker's failed wakes are kept per agent",
    "is the reply mailbox of a caller named after another agent",
    "where only the names this library derives are made",
)
NOT_YOURS_REFUSALS = (
    "FETCH refused: mailbox 'alice.inbox' belongs to another agent",
    "QUERY refused: mailbox 'agent.ops' has no owner (it was made before this broker "
    "enforced credentials): nobody may use it; make a new one",
    "SEND refused: 'mq9.calls.x' is another agent's (a reply mailbox takes SENDs from its "
    "owner and the agents it called, a task store, lease or dead-letter mailbox from its "
    "owner only)",
    "REGISTER refused: agent 'alice' is registered by another agent",
    "SEND refused: mq9-reply-to 'alice.replies' is not a mailbox of yours: a request may name "
    "only a reply mailbox its sender created (create yours first; docs/security.md)",
    "CREATE refused: 'alice.inbox.dlq' is derived from a mailbox (its dead letters, task "
    "store or group lease) that is not yours: create and read your own mailbox first",
    "CREATE refused: 'mq9.wake.failed.x': a waker's failed wakes are kept per agent, in "
    "mq9.wake.failed.<digest of its own credential's id>",
    "CREATE refused: 'mq9.calls.ab' is the reply mailbox of a caller named after another "
    "agent or one of its mailboxes: only that agent makes it",
    "CREATE refused: 'mq9.mine' is under 'mq9.', where only the names this library derives "
    "are made (task stores, reply mailboxes, leases, wake rules): give another name",
)
LISTING_TOO_LARGE = "too large to list in one answer"

# RobustMQ's CREATE name rules (broker mq9/create.rs:40,48,54) and its REGISTER, UNREGISTER and
# REPORT checks (mq9/agent.rs:51,70,101,126); docs/protocol.md §10 lists where each is written.
ERR_NAME_EMPTY = "prefix must not be empty"
ERR_NAME_CHARS = "name may only contain lowercase letters, digits, and dots"
ERR_NAME_EDGES = "prefix must start and end with a lowercase letter or digit"
ERR_REGISTER_EMPTY = "payload must not be empty"
ERR_AGENT_INFO_EMPTY = "agent_info must not be empty"
ERR_AGENT_NAME_EMPTY = "agent name must not be empty"
# serde's words for a body it refuses: RobustMQ answers them after its command's prefix
# ("invalid MAILBOX.CREATE payload: ", create.rs:72; bare for FETCH and ACK, fetch.rs:39,215)
# and with serde's position; shapes.py writes the same words without the position.
SERDE_REFUSALS = (
    "missing field `msg_id` at line 1 column 40",
    "invalid MAILBOX.CREATE payload: missing field `name`",
    "unknown variant `newest`, expected one of `earliest`, `latest`, `from_time`, `from_id`",
    "duplicate field `name`",
    "invalid type: integer `1`, expected a string",
)


def err_mailbox_missing(address: str) -> str:
    """SEND to a mailbox that does not exist (or has expired): mq9/send.rs:119."""
    return f"mailbox {address} does not exist"


def err_topic_missing(address: str) -> str:
    """FETCH, QUERY and DELETE on a mailbox that does not exist: RobustMQ's storage layer
    answers for them, in its own words (common/base error/common.rs:165)."""
    return f"Tenant {TENANT} topic '{address}' not found in broker cache"


def err_shard_missing(shard: str) -> str:
    """Any command on a mailbox whose topic names a shard RobustMQ's storage engine does not
    hold (storage-engine core/error.rs:62)."""
    return f"Shard {shard} does not exist"


def err_ack_mailbox_missing(address: str) -> str:
    """ACK naming a mailbox that has no topic: mq9/fetch.rs:224."""
    return f"mailbox not found: {address}"


def err_mailbox_exists(address: str) -> str:
    """CREATE of a name a mailbox has: mq9/create.rs:106."""
    return f"mailbox {address} already exists"


def err_answer_too_large(size: int, limit: int, fits: int) -> str:
    """A group FETCH whose answer would be larger than the broker sends (our broker's rule);
    ``fits``: the largest num_msgs whose whole answer fits."""
    return (
        f"the answer would be {size} bytes, above the {limit} bytes this broker's answers "
        f"carry: ask for at most {fits} messages (num_msgs)"
    )


def err_listing_too_large(count: int, size: int, limit: int) -> str:
    return (
        f"the registry's {count} agents are {LISTING_TOO_LARGE} ({size} bytes, above the "
        f"{limit} bytes this broker's answers carry): search with text or semantic instead"
    )


def err_message_too_large(size: int, limit: int, largest: int, bound: str) -> str:
    """A SEND whose message would not fit in a FETCH answer (our broker's rule): ``limit``
    set by what ``bound`` names, and the largest payload of plain text it would take beside
    the message's headers (docs/protocol.md, "How large a message")."""
    return (
        f"message too large: it would take {size} bytes in a FETCH answer, and this "
        f"broker's answers carry at most {limit} bytes per message ({bound}): the largest "
        f"payload it takes with these headers is {largest} bytes of plain text (a byte JSON "
        "escapes counts 2 to 6); send a reference to the data (a URL or path) instead"
    )


def err_card_too_large(size: int, limit: int) -> str:
    return (
        f"agent card is {size} bytes, above the {limit} bytes this broker keeps per agent: "
        "keep large data out of the card (link to it instead)"
    )


def err_entry_too_large(size: int, limit: int) -> str:
    """A REGISTER whose entry alone would overflow a DISCOVER answer (our broker's rule)."""
    return (
        f"agent entry is {size} bytes: DISCOVER answers carry at most "
        f"{limit} bytes; keep large data out of the card"
    )


def err_stored_too_large(msg_id: int, size: int, limit: int) -> str:
    """A stored message no answer can carry any more (the broker's limits were lowered)."""
    return (
        f"message {msg_id} alone takes {size} bytes in an answer, above "
        f"the {limit} bytes this broker's answers carry (it was stored under larger limits): "
        "raise the broker's answer limit, or delete the message"
    )


def err_invalid_address(value: object) -> str:
    """The client's own refusal of an address no mailbox can have (RobustMQ's CREATE rule)."""
    return (
        f"invalid mail_address: {quoted(value)} (lowercase letters, digits and dots, starting and "
        "ending with a letter or digit)"
    )


def err_address_too_long(address: str) -> str:
    return (
        f"invalid mail_address: {quoted(address)} is longer than {MAX_ADDRESS_LENGTH} "
        f"characters: no NATS subject could carry it (nats-server takes control lines of at "
        f"most {MAX_CONTROL_LINE} bytes)"
    )


def err_empty_segment(address: str) -> str:
    return (
        f"invalid mail_address: {quoted(address)} has an empty segment: RobustMQ creates such a "
        "mailbox, but no NATS subject can reach it"
    )


def err_mailbox_limit(limit: int) -> str:
    return f"mailbox limit reached: this broker holds at most {limit} mailboxes"


def err_agent_limit(limit: int) -> str:
    return (
        f"agent limit reached: this broker holds at most {limit} agents; unregister agents "
        "that are gone"
    )


def err_group_limit(limit: int, address: str) -> str:
    return (
        f"consumer group limit reached: this broker holds at most {limit} groups per mailbox, "
        f"and {address} has them all; read with a group name already in use"
    )


def err_mailbox_full(address: str, limit: int) -> str:
    return (
        f"mailbox {address} is full: it holds at most {limit} messages; "
        "delete some, or wait for message TTLs to expire"
    )


def err_idempotency_key_reused(key: str, address: str, window: int) -> str:
    """A keyed SEND whose key a SEND of something else to the mailbox had within the
    window: never answered with the other message's msg_id."""
    return (
        f"SEND refused: idempotency key {quoted(key)} was used for another SEND to mailbox "
        f"{address} within the last {window} s (another payload, priority, key, delay, ttl or "
        "tags): a new message needs a new key"
    )


def err_delay_too_long(delay: int) -> str:
    """A delay past the longest RobustMQ's delay queue holds (limits.MAX_DELAY_SECONDS):
    the client's refusal, before it is sent, and the bundled broker's."""
    return (
        f"invalid delay {delay}: at most {MAX_DELAY_SECONDS} seconds (365 days), the longest "
        "RobustMQ's delay queue holds; for a later time, send it nearer then, or send it now "
        "with the date in the payload"
    )


def err_reserved_mailbox(address: str) -> str:
    """A CREATE of a mailbox name the broker keeps for itself (the readiness probe's)."""
    return (
        f"CREATE refused: mailbox {address} is reserved by the broker (its readiness probe "
        "asks of it): give another name"
    )


def err_idempotency_keys_full(why: str, window: int) -> str:
    """A keyed SEND with a new key past a broker's bounds on the keys it holds. ``why``:
    which bound, in words said to the sender (its own, with no count of what it or others
    hold; a server speaking for many callers under one identity passes nothing of them on)."""
    return (
        f"SEND refused: no room for another idempotency key ({why}, each kept {window} s): "
        "send it without a key, or once older keys' windows end"
    )


def err_idempotency_key_size(size: int) -> str:
    return (
        f"SEND refused: an mq9-idempotency-key of {size} bytes: this broker takes keys of 1 to "
        f"{MAX_IDEMPOTENCY_KEY} bytes"
    )


def err_not_awaiting_ack(msg_id: int, address: str) -> str:
    """An ACK of a msg_id the group's reader was not handed, or acked already: the
    client's refusal (the tools add what waits and what to call)."""
    return f"msg_id {msg_id} is not waiting for an ack in {address}"


def err_group_name_too_long(length: int) -> str:
    return f"group_name is {length} characters: this broker takes at most {MAX_GROUP_NAME}"


def err_unknown_subject(subject: str) -> str:
    """A subject under $mq9.AI no command has (RobustMQ answers it as a -ERR line, not JSON:
    mq9/process.rs:42)."""
    return f"unrecognized mq9 subject: {subject}"


# -- the table: each text, the class it reads as, and the pattern that recognises it ------------

ROBUSTMQ = "RobustMQ"  # RobustMQ answers it (the bundled broker, where it writes it, alike)
OURS = "ours"  # the bundled broker's or the client's own words: RobustMQ never says them


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


# A mailbox that is not there, whichever command found it missing
MAILBOX_MISSING = "mailbox {address} does not exist (it was never created, or its TTL ran out)"


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
        nothing = _REFUSED_WRITE in error or (unacknowledged and _NO_RESPONDERS in error)
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

