"""A SEND's mq9 headers read once, for every engine: one copy of the rules, so that each
store refuses the same SENDs (a line break in a header, say).

``read_send`` turns a SEND's headers and body into the message to store and, for a delayed
one, the second it is due, or raises ``Mq9Error`` with the one-line refusal. RobustMQ's rules
(docs/protocol-commands.md §5.2: exact names, an unknown priority is normal, a number that is
not a u64 is ignored) and ours on top of them: a header is one line, a delay or TTL is at most
``MOST_SECONDS``, and a store may bound tags, keys and delays: each store declares what it takes
(``SendLimits``, its ``send_limits``: the cluster store writes each tag into a subject, which
nats-server bounds), and the engine refuses the rest here, before the store is asked.

The rest of a SEND's headers are read here too: the sender a broker vouches for (``Vouched``)
or the client an open broker told apart (``FromClient``), the idempotency key taken out of the
headers (``idempotency_key``) and what makes two keyed SENDs the same (``fingerprint``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from mq9_wire import protocol as p
from mq9_wire.protocol import PRIORITY_ORDER, Priority
from mq9_wire.protocol.errors import Mq9Error
from mq9_wire.protocol.messages import HEADER_KEY_CALLER, HEADER_KEY_SHARE

from ..state.mailbox import StoredMessage
from ..storage.key_parties import caller_party
from ..storage.mailbox_store import OPEN, SendLimits

Headers = Mapping[str, str] | None
_LANES = tuple(priority.value for priority in PRIORITY_ORDER)

# (our choice; RobustMQ adds any u64 without overflow checks, wrapping round) a delay or TTL
# of at most 100 years: its second must be a time (a date past 9999 is none, and JetStream's
# Nats-TTL is a Go duration, ending at about 292 years)
MOST_SECONDS = 100 * 365 * 86_400


# Headers nats-server adds to a request, never the sender's own: a service import marked
# share (the open cluster's accounts.conf, docs/deploy.md) adds the requesting connection's
# client info (its host, server, account, ...), which a message's receivers must never learn.
# Compared stripped and in any case, as a reader of the stored block would (parse_header_block)
SERVER_HEADERS = frozenset({"nats-request-info"})
# A carrier's naming of a keyed SEND's caller and share: the broker's, never stored
CARRIER_HEADERS = frozenset({HEADER_KEY_CALLER, HEADER_KEY_SHARE})
_NOT_STORED = SERVER_HEADERS | CARRIER_HEADERS
# The longest caller name a carrier may give (a tenant's, a client's digest)
MOST_CALLER = 128


def _kept(headers: Mapping[str, str]) -> Mapping[str, str]:
    """``headers`` without those nats-server added (``SERVER_HEADERS``) and a carrier's
    naming of its caller (``CARRIER_HEADERS``)."""
    if not any(name.strip().lower() in _NOT_STORED for name in headers):
        return headers
    return {n: v for n, v in headers.items() if n.strip().lower() not in _NOT_STORED}


def carried_caller(sender: str, headers: Mapping[str, str], most: int | None) -> str | None:
    """The party a vouched ``sender``'s keyed SEND counts its key against besides the
    sender: the caller its headers name, with its share (at most ``most``, the sender's own
    bound), as ``sent_keys.caller_party``; None when it names none. ``Mq9Error`` in one line
    for a caller or share that is no such thing."""
    caller, share = headers.get(HEADER_KEY_CALLER), headers.get(HEADER_KEY_SHARE)
    if caller is None and share is None:
        return None
    if not caller or len(caller) > MOST_CALLER or not caller.isprintable():
        raise Mq9Error(
            f"SEND refused: {HEADER_KEY_CALLER} names a caller of 1 to {MOST_CALLER} "
            "printable characters, with its share in " + HEADER_KEY_SHARE
        )
    if share is None or not share.isdigit() or not 0 < int(share) < 2**31:
        raise Mq9Error(f"SEND refused: {HEADER_KEY_SHARE} is the caller's share of keys, 1 or more")
    most_share = int(share) if most is None else min(int(share), most)
    return caller_party(sender, caller, most_share)


@dataclass
class Send:
    """A SEND read: the message to store (msg_id -1 until written) and, for a delayed one,
    the second it is due."""

    message: StoredMessage
    due: int | None = None


def read_send(
    headers: Headers, body: bytes, now: int, limits: SendLimits = OPEN, *, keyed: bool = False
) -> Send:
    """A SEND of ``body`` with ``headers`` (the ones to store: a client's own ``mq9-sender``
    already taken out; those nats-server added are left out here) at second ``now``, within
    the store's ``limits`` (``keyed``: the SEND carries an idempotency key);
    ``Mq9Error`` with the refusal."""
    headers = headers or {}
    mq9: Mapping[str, str] = headers
    for name, value in headers.items():
        if "\r\n" in name or "\r\n" in value:
            # (our choice) only an in-process caller can (NATS splits the block at each
            # CRLF): stored, it would read back as a header of the caller's choosing
            raise Mq9Error(
                f"SEND refused: header {p.quoted(name)} holds a line break (CRLF): a "
                "header is one line"
            )
        if "\ufffd" in name or "\ufffd" in value:
            # send.rs parse_mq9_headers reads the header block as UTF-8 or not at all (every
            # mq9 header at its default); nats-py replaces invalid bytes by U+FFFD, so (our
            # approximation) a U+FFFD means the block was not UTF-8
            mq9 = {}
    # Exact names only; a value that is not a known priority means normal (RobustMQ).
    text = (mq9.get(p.HEADER_PRIORITY) or "").strip()
    priority = Priority(text) if text in _LANES else Priority.NORMAL
    key = mq9.get(p.HEADER_KEY)
    key = None if key is None else key.strip()
    tag_header = mq9.get(p.HEADER_TAGS)
    tags = tuple(t.strip() for t in tag_header.split(",") if t.strip()) if tag_header else ()
    _check_key(key, limits)
    _check_tags(tags, limits)
    delay = _seconds(mq9, p.HEADER_DELAY)
    if delay is not None and limits.delay_most is not None and delay > limits.delay_most:
        raise Mq9Error(
            f"SEND refused: mq9-delay of {delay} seconds: this broker's {limits.store} holds a "
            f"delayed message at most {limits.delay_most} s ({limits.delay_most_why})"
        )
    if keyed and delay is None:  # (a delayed SEND's key is written apart from its tags)
        _check_keyed_tags(tags, limits)
    ttl = _seconds(mq9, p.HEADER_TTL)
    message = StoredMessage(
        -1,
        bytes(body),
        priority,
        now,
        key,
        tags,
        p.header_block(_kept(headers)),
        # a TTL counts from the SEND, delay or not (RobustMQ)
        now + ttl if ttl is not None else 0,
    )
    if delay is None:
        return Send(message)
    # delay-message delay.rs keys the queued copy by the queue's own id, and the delivered
    # message keeps that key: the mq9-key is lost (no compaction, no QUERY)
    message.key = None
    return Send(message, due=now + delay)  # whole seconds from the SEND's second (delay.rs)


def _seconds(headers: Mapping[str, str], name: str) -> int | None:
    """A delay or TTL header's seconds: None when absent or not a u64 (RobustMQ ignores it),
    refused beyond ``MOST_SECONDS``."""
    text = headers.get(name)
    number = None if text is None else p.header_u64(text)
    if number is not None and number > MOST_SECONDS:
        raise Mq9Error(
            f"SEND refused: {name} of {number} seconds is beyond this broker's bound of "
            f"{MOST_SECONDS} (100 years)"
        )
    return number


def _check_key(key: str | None, limits: SendLimits) -> None:
    most = limits.key_bytes
    if key is None or most is None:
        return
    size = len(key.encode(errors="surrogatepass"))
    if size > most:
        raise Mq9Error(
            f"SEND refused: an mq9-key of {size} bytes: this broker's {limits.store} takes "
            f"keys of at most {most} bytes"
        )


def _check_tags(tags: tuple[str, ...], limits: SendLimits) -> None:
    most = limits.tags_most
    if most is not None and len(tags) > most and len(set(tags)) > most:
        raise Mq9Error(
            f"SEND refused: a message with {len(set(tags))} distinct tags: this broker's "
            f"{limits.store} takes at most {most}"
        )
    for tag in tags:
        size = len(tag.encode(errors="surrogatepass"))
        if limits.tag_bytes is not None and size > limits.tag_bytes:
            raise Mq9Error(
                f"SEND refused: tag {p.quoted(tag)} is {size} bytes: this broker's "
                f"{limits.store} takes tags of at most {limits.tag_bytes} bytes"
            )
        parts = tag.count("/") + 1
        if limits.tag_parts is not None and parts > limits.tag_parts:
            raise Mq9Error(
                f"SEND refused: tag {p.quoted(tag)} has {parts} '/'-separated parts: this "
                f"broker's {limits.store} takes at most {limits.tag_parts}"
            )


def _check_keyed_tags(tags: tuple[str, ...], limits: SendLimits) -> None:
    """A keyed SEND written at once: its key takes ``keyed_tags_fewer`` of its tags' room."""
    if limits.tags_most is None or not limits.keyed_tags_fewer:
        return
    most = limits.tags_most - limits.keyed_tags_fewer
    if len(tags) > most and len(set(tags)) > most:
        raise Mq9Error(
            f"SEND refused: a message with {len(set(tags))} distinct tags: this broker's "
            f"{limits.store} takes at most {most} with an idempotency key"
        )


# -- the senders a broker vouches for --------------------------------------------------------


class Vouched(dict[str, str]):
    """A SEND's headers with the sender the broker authenticated: what an enforcing
    broker hands the engine (identities/gate.py), the client's own ``mq9-sender``, in
    any case or spacing, replaced by ``sender``. Built only in this process: a request off
    the wire is a plain mapping, whose ``mq9-sender`` the engine removes (``stored_headers``)."""

    def __init__(self, headers: Headers, sender: str) -> None:
        super().__init__(_without_sender(headers) or {})
        self[p.HEADER_SENDER] = sender
        self.sender = sender


class FromClient(dict[str, str]):
    """A keyed SEND's headers on an open broker, with the client its serving told
    apart (``client``: the address nats-server vouches for, else the reply inbox, serve.py):
    whose bound its new key counts against, so that one client filling its keys leaves room
    to the others. Built only in this process, as ``Vouched``."""

    def __init__(self, headers: Headers, client: str) -> None:
        super().__init__(headers or {})
        self.client = client


def _is_sender(name: str) -> bool:
    # stripped as parse_header_block strips a name, and in any case: no reader may take a
    # client's "MQ9-Sender " for the broker's
    return name.strip().lower() == p.HEADER_SENDER


def _without_sender(headers: Headers) -> Headers:
    if headers and any(_is_sender(name) for name in headers):
        return {name: value for name, value in headers.items() if not _is_sender(name)}
    return headers


def idempotency_key(headers: Headers) -> tuple[str | None, Headers]:
    """A SEND's idempotency key (None: none), and its headers without it: the key is the
    broker's, never stored with the message nor shown to its readers."""
    if not headers or p.HEADER_IDEMPOTENCY_KEY not in headers:
        return None, headers
    key = headers[p.HEADER_IDEMPOTENCY_KEY].strip()
    size = len(key) if key.isascii() else len(key.encode(errors="surrogatepass"))
    if not 0 < size <= p.MAX_IDEMPOTENCY_KEY:
        raise Mq9Error(p.err_idempotency_key_size(size))
    if isinstance(headers, Vouched):
        rest = {name: value for name, value in headers.items() if name != p.HEADER_IDEMPOTENCY_KEY}
        return key, Vouched(rest, headers.sender)
    if len(headers) == 1:  # the key alone (most keyed SENDs): no headers to store
        return key, None
    return key, {name: value for name, value in headers.items() if name != p.HEADER_IDEMPOTENCY_KEY}


def fingerprint(message: StoredMessage, mq9_key: str | None, delay: int, body: bytes) -> bytes:
    """What makes two keyed SENDs "the same SEND": the payload, priority, mq9-key, tags,
    delay and TTL (seconds from the SEND; -1: none), not the other headers (a trace context
    differs from one try to the next). 16 bytes of BLAKE2b."""
    ttl = message.expire_at - message.create_time if message.expire_at else -1
    if mq9_key is None and not message.tags and delay == ttl == -1:  # (most: one lane's mark)
        head = _PLAIN_HEADS[message.priority]
    else:
        text = f"{message.priority.value}\n{mq9_key}\n{','.join(message.tags)}\n{delay}\n{ttl}\n"
        head = text.encode(errors="surrogatepass")
    digest = _FINGERPRINT.copy()
    digest.update(head)
    digest.update(body)
    return digest.digest()


# fingerprint's hash, copied for each: blake2b's own keyword arguments, read on each
# call, cost it more than its hashing
_FINGERPRINT = hashlib.blake2b(digest_size=16)


# fingerprint's head of a SEND with a priority and nothing else
_PLAIN_HEADS = {lane: f"{lane.value}\nNone\n\n-1\n-1\n".encode() for lane in p.Priority}


def stored_headers(headers: Headers) -> Headers:
    """The headers a SEND's message is stored with: ``Vouched`` ones as they are, any other
    without a ``mq9-sender`` (our choice: on this broker the header always means vouched;
    RobustMQ stores what the client wrote)."""
    return headers if isinstance(headers, Vouched) else _without_sender(headers)
