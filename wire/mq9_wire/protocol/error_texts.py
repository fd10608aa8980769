"""The words of mq9's errors as the wire carries them: RobustMQ's texts, which the client only
reads, and the texts the bundled broker and the client write (``err_*``, each named by what it
refuses; its parameters are named as the attributes ``errors.WIRE_TEXTS`` reads back).

Nothing here decides anything: ``errors.py`` holds the classes and the one table that reads these
words as them, and code acts on an error's class, never on these words. Each text's source, in
RobustMQ or the bundled broker: docs/protocol.md §10.
"""

from __future__ import annotations

from .limits import (
    MAX_ADDRESS_LENGTH,
    MAX_CONTROL_LINE,
    MAX_DELAY_SECONDS,
    MAX_GROUP_NAME,
    MAX_IDEMPOTENCY_KEY,
)
from .quoting import quoted
from .subjects import TENANT

# Who says a text (``WireText.said_by``)
ROBUSTMQ = "RobustMQ"  # RobustMQ answers it (the bundled broker, where it writes it, alike)
OURS = "ours"  # the bundled broker's or the client's own words: RobustMQ never says them

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
REFUSED_WRITE = "JetStream refused a write"  # the store: nothing of the write was kept
NO_RESPONDERS = "no responders"  # nats-py's words: the request reached no subscriber

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


# A mailbox that is not there, whichever command found it missing: the message it reads as, in
# the user's words (``WireText.says``; the broker's text is then its detail)
MAILBOX_MISSING = "mailbox {address} does not exist (it was never created, or its TTL ran out)"
