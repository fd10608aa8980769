"""Where the cluster store keeps what: the subjects, buckets, headers and bytes of its layout
(docs/broker.md, "The JetStream store kept in the cluster").

Pure functions and one frozen ``Layout``: no I/O, so the mapping is read and tested on its own.
A mailbox, a key, a tag part, a group and an agent name each become one subject token, the
first 32 hex digits of their SHA-256 (the digest the waker names mailboxes by): any name, with
dots, spaces or 3,800 characters, is one token, and a subject never carries a user's text.
"""

from __future__ import annotations

import calendar
import functools
import json
import struct
import time
from dataclasses import dataclass
from typing import Any

from mq9_wire.nats_floor.jetstream.api import TTL, kv_subject

# Where a stored message is announced (the protocol's, which the waker hears); the mailbox's
# token is the waker's digest of its name
from mq9_wire.protocol import ARRIVALS_PREFIX as ARRIVALS_PREFIX
from mq9_wire.protocol import Priority, names

# RobustMQ's: a message is kept 7 days (the store's stream and records say it again)
from ..mailbox_store import RETENTION_SECONDS as RETENTION_SECONDS
from ..mailbox_store import Lanes

DEFAULT_NAME = "MQ9_STATE"
NO_KEY = "-"
TOKEN_DIGITS = names.DIGEST_DIGITS
# The longest TTL handed to the server (Go's durations end at about 292 years): a longer one
# (a u64 TTL of RobustMQ's) gets none, the broker hiding what it must by its own rule
LONGEST_TTL = 100 * 365 * 86_400

# Headers the store writes (never the SEND's own, which travel in the data: a SEND's
# Nats-Msg-Id or Nats-Expected-* must not steer JetStream)
EXPIRE_AT = "Mq9-Expire-At"  # the message TTL's second (RobustMQ's expire_at)
TAGS = "Mq9-Tags"  # the SEND's tags, a JSON list (QUERY by tags reads them)
DELETED = "Mq9-Deleted"  # a deleted newest message's marker: its msg_id stays the last
AHEAD = "Mq9-Ahead"  # on a tag index entry: how many sequences later its message is
# On a mailbox's head: each priority lane's newest msg_id written, critical urgent normal
# (-1: none), as of the head. What a lane read must reach, whichever replica answers it
# (reads.py); decided with the head's expected sequence, so in one step with the write
LANES = "Mq9-Lanes"

_FRAME = struct.Struct(">I")  # the length of the SEND's header block, before it


NO_LANES: Lanes = (-1, -1, -1)


def lanes_text(lanes: Lanes) -> str:
    return " ".join(str(last) for last in lanes)


def lanes_of(headers: dict[str, str]) -> Lanes | None:
    """A head's lanes (``LANES``); None when it has none (written before heads carried
    them), or what it carries is not three numbers (written by something else)."""
    text = headers.get(LANES)
    if text is None:
        return None
    try:
        critical, urgent, normal = (int(last) for last in text.split())
    except ValueError:
        return None
    return critical, urgent, normal


def set_ttl(headers: dict[str, str], seconds: int) -> None:
    """``Nats-TTL`` of ``seconds`` in ``headers``, unless longer than the server takes."""
    if seconds <= LONGEST_TTL:
        headers[TTL] = f"{seconds}s"


def token(text: str) -> str:
    """One subject token for ``text``: the wire's name digest (``names.digest``: 32 hex digits
    of its SHA-256, those of short names kept), the very one the arrivals and ownership carry."""
    return names.digest(text)


STREAMS_MOST = 64  # message streams a layout spreads its mailboxes over at most
STREAMS_KEY = "mq9_streams"  # the stream count, in the first message stream's metadata


@dataclass(frozen=True)
class Layout:
    """The names of one store's streams and buckets, from ``--stream`` (``name``), its
    mailboxes' messages spread over ``streams`` message streams (each stream's leader
    takes its share of the writes). Stream 0 is ``<name>_MSGS`` on ``mq9.<name>``, as a layout
    of one stream always was; stream j is ``<name>_MSGS_<j>`` on ``mq9.<name>.<j>`` (no
    subject of one matches another's: their third tokens differ). A mailbox is in the stream
    its token picks (``stream_of``), all of it: messages, head, delayed messages, tags."""

    name: str = DEFAULT_NAME
    streams: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.streams, int) or not 1 <= self.streams <= STREAMS_MOST:
            raise ValueError(f"streams must be 1 to {STREAMS_MOST}, not {self.streams!r}")

    @property
    def messages(self) -> str:
        """The first message stream (the only one of a layout of one), where the count is."""
        return f"{self.name}_MSGS"

    @property
    def prefix(self) -> str:
        """The first message stream's subjects' prefix."""
        return f"mq9.{self.name}"

    # -- which stream: a mailbox's is a pure function of its token -------------------------

    def stream_of(self, box: str) -> int:
        """The index of the stream holding mailbox ``box`` (its token: 32 hex digits, evenly
        spread, so its first 8 spread the mailboxes evenly over the streams)."""
        streams = self.streams
        return 0 if streams == 1 else int(box[:8], 16) % streams

    def stream_name(self, index: int) -> str:
        return self.messages if index == 0 else f"{self.messages}_{index}"

    def stream_prefix(self, index: int) -> str:
        return self.prefix if index == 0 else f"{self.prefix}.{index}"

    @property
    def message_streams(self) -> tuple[str, ...]:
        """Every message stream's name, the first first."""
        return tuple(self.stream_name(index) for index in range(self.streams))

    def box_stream(self, box: str) -> str:
        """The name of the stream holding mailbox ``box`` (its token)."""
        return self.stream_name(self.stream_of(box))

    def mailbox_stream(self, mailbox: str) -> str:
        """The name of the stream holding ``mailbox`` (its name)."""
        return self.box_stream(token(mailbox))

    def box_prefix(self, box: str) -> str:
        """The subjects' prefix of the stream holding mailbox ``box`` (its token)."""
        return self.stream_prefix(self.stream_of(box))

    @property
    def mailboxes(self) -> str:
        return f"{self.name}_MAILBOXES"

    @property
    def groups(self) -> str:
        return f"{self.name}_GROUPS"

    @property
    def agents(self) -> str:
        return f"{self.name}_AGENTS"

    @property
    def index(self) -> str:
        """The search index's rows, by card name (RobustMQ's search-engine)."""
        return f"{self.name}_INDEX"

    @property
    def reports(self) -> str:
        """Each agent's last AGENT.REPORT (kept, never answered: RobustMQ's)."""
        return f"{self.name}_REPORTS"

    @property
    def buckets(self) -> tuple[str, ...]:
        return (self.mailboxes, self.groups, self.agents, self.index, self.reports)

    # -- the messages stream -------------------------------------------------------------

    @property
    def message_subjects(self) -> list[str]:
        """The first message stream's subjects."""
        return self.subjects_of(0)

    def subjects_of(self, index: int) -> list[str]:
        """Message stream ``index``'s subjects."""
        prefix = self.stream_prefix(index)
        return [
            *(f"{prefix}.{kind}.>" for kind in ("m", "d", "s", "t", "h")),
            f"{prefix}.i.>",  # idempotency keys (key_subject)
        ]

    # A message's subject is m.<mailbox>.<priority>.<key>.<msg_id> (tokens, the msg_id in
    # decimal): the msg_id travels with the message, so the stream's sequence is free to be
    # the stream's, and a publish expecting the mailbox's last sequence numbers it safely

    def message_subject(self, box: str, priority: Priority, key_token: str, msg_id: int) -> str:
        """``box`` is the mailbox's token (``token(name)``), ``key_token`` the key's
        (``NO_KEY`` for none)."""
        return f"{self.box_prefix(box)}.m.{box}.{priority.value}.{key_token}.{msg_id}"

    # A mailbox's head, h.<mailbox>: one message (each write rolls the one before up) holding
    # the next msg_id, written last in every batch of the mailbox's messages and expected by
    # the next. A literal subject: the server finds its last sequence in its subject index
    # at once, where a filter (m.<mailbox>.>, one subject a message) has it match every
    # subject of the mailbox, a cost that grew with the mailbox (docs/broker.md)

    def head_subject(self, box: str) -> str:
        """``box``'s head (``box``: the mailbox's token)."""
        return f"{self.box_prefix(box)}.h.{box}"

    # A keyed SEND's key, i.<mailbox>.<key>: written in the SEND's atomic batch before
    # its message, expecting no entry (Nats-Expected-Last-Subject-Sequence 0), with a Nats-TTL
    # of the window: the servers store the message and its key together or neither, and
    # refuse a second SEND of the key while the first's entry lives (keyed.py)

    def key_subject(self, box: str, key: str) -> str:
        """The entry of idempotency key ``key`` (a SEND's) in mailbox ``box`` (its token)."""
        return f"{self.box_prefix(box)}.i.{box}.{token(key)}"

    def mailbox_filter(self, mailbox: str) -> str:
        """Every message of ``mailbox``, any priority, any key."""
        return self.box_filter(token(mailbox))

    def box_filter(self, box: str) -> str:
        return f"{self.box_prefix(box)}.m.{box}.>"

    def lane_filter(self, mailbox: str, priority: Priority) -> str:
        return self.box_lane_filter(token(mailbox), priority)

    def box_lane_filter(self, box: str, priority: Priority) -> str:
        return f"{self.box_prefix(box)}.m.{box}.{priority.value}.*.*"

    def key_filter(self, mailbox: str, key: str) -> str:
        """``mailbox``'s messages with ``key``, of any priority."""
        return self.box_key_filter(token(mailbox), token(key))

    def box_key_filter(self, box: str, key_token: str) -> str:
        return f"{self.box_prefix(box)}.m.{box}.*.{key_token}.*"

    def id_filter(self, mailbox: str, msg_id: int) -> str:
        """``mailbox``'s message ``msg_id`` (one at most)."""
        return self.box_id_filter(token(mailbox), msg_id)

    def box_id_filter(self, box: str, msg_id: int) -> str:
        return f"{self.box_prefix(box)}.m.{box}.*.*.{msg_id}"

    def schedule_subject(self, mailbox: str, schedule_id: str) -> str:
        """A delayed message's own subject (one schedule a subject)."""
        box = token(mailbox)
        return f"{self.box_prefix(box)}.d.{box}.{schedule_id}"

    def schedule_filter(self, mailbox: str) -> str:
        """Every delayed message of ``mailbox`` held (one subject each)."""
        box = token(mailbox)
        return f"{self.box_prefix(box)}.d.{box}.*"

    def staged_subject(self, mailbox: str, priority: Priority) -> str:
        """Where the servers write a delayed message when due, unnumbered: a broker numbers
        it into the mailbox (a schedule's target is fixed when the SEND is taken, its
        msg_id is known only when it is written)."""
        box = token(mailbox)
        return f"{self.box_prefix(box)}.s.{box}.{priority.value}"

    @property
    def staged_filter(self) -> str:
        return self.staged_filter_of(0)

    def staged_filter_of(self, index: int) -> str:
        """Message stream ``index``'s delayed messages written when due."""
        return f"{self.stream_prefix(index)}.s.>"

    # A tag's index entry is t.<mailbox>.<p1>.<p2>..._ (a token per "/"-separated part, "_"
    # closing it), written in its message's atomic batch: a QUERY for tag X reads
    # t.<mailbox>.<X's parts>.>, which is X and every tag below it (RobustMQ's X or X/...)

    def tag_subject(self, box: str, tag: str) -> str:
        """The index entry's subject of ``tag`` in mailbox ``box`` (its token)."""
        return f"{self.box_prefix(box)}.t.{box}.{_parts(tag)}._"

    def tag_filter(self, mailbox: str, tag: str) -> str:
        """The index entries of ``tag`` and of the tags below it in ``mailbox``."""
        box = token(mailbox)
        return f"{self.box_prefix(box)}.t.{box}.{_parts(tag)}.>"

    def is_message_of(self, subject: str, mailbox: str) -> bool:
        box = token(mailbox)
        return subject.startswith(f"{self.box_prefix(box)}.m.{box}.")

    # -- the buckets' keys ---------------------------------------------------------------

    def kv_subject(self, bucket: str, key: str) -> str:
        return kv_subject(bucket, key)

    @staticmethod
    def position_key(group: str, mailbox: str) -> str:
        return f"{token(group)}.{token(mailbox)}"

    @staticmethod
    def marker_key(group: str) -> str:
        """Present once ``group`` committed on any mailbox (RobustMQ looks groups up by name)."""
        return f"{token(group)}._"


# A delayed message's subject says when it is due, counted down from DUE_MOST so that
# the soonest sorts last: the servers list a filter's subjects sorted and from an offset, so
# the one at the count's offset less one is the soonest due, one subject answered however
# many are held (counts.py). "z" first: after any token of a layout's earlier schedules (hex)
DUE_MOST = 10**12 - 1
_DUE = "z"


def schedule_id(due: int, unique: str) -> str:
    """A delayed message's subject token: when it is due (counted down, so the soonest
    sorts last), then ``unique``."""
    return f"{_DUE}{DUE_MOST - min(max(due, 0), DUE_MOST):012d}-{unique}"


def due_of(subject: str) -> int | None:
    """The second a delayed message's subject says it is due (``schedule_id``); None for
    one held before subjects said it."""
    left, dash, _ = subject.rsplit(".", 1)[1].partition("-")
    if not (dash and left.startswith(_DUE) and left[1:].isdigit()):
        return None
    return DUE_MOST - int(left[1:])


def _parts(tag: str) -> str:
    return ".".join(token(part) for part in tag.split("/"))


def subject_box(subject: str) -> str:
    """The mailbox token a message subject names."""
    return subject.rsplit(".", 4)[1]


def priority_of(subject: str) -> Priority:
    """The priority a message subject names (its third token from the end)."""
    return Priority(subject.rsplit(".", 3)[1])


def msg_id_of(subject: str) -> int:
    """The msg_id a message subject names (its last token); ValueError when none."""
    return int(subject.rsplit(".", 1)[1])


def parts_of(subject: str) -> tuple[str, Priority, str, int]:
    """A message subject's mailbox token, priority, key token and msg_id."""
    box, priority, key_token, msg_id = subject.rsplit(".", 4)[1:]
    return box, Priority(priority), key_token, int(msg_id)


def frame(header: bytes | None, payload: bytes) -> bytes:
    """A stored message's data: the SEND's header block (its length first) and the payload."""
    block = header or b""
    return _FRAME.pack(len(block)) + block + payload


def unframe(data: bytes) -> tuple[bytes | None, bytes]:
    """``frame``'s header block (None when the SEND had none) and payload; ValueError when
    ``data`` is not a frame."""
    if len(data) < _FRAME.size:
        raise ValueError("a stored message shorter than its frame")
    (size,) = _FRAME.unpack_from(data)
    end = _FRAME.size + size
    if end > len(data):
        raise ValueError("a stored message's header block runs past its data")
    return (data[_FRAME.size : end] or None), data[end:]


@functools.lru_cache(maxsize=4096)
def _second_of(stamp: str) -> int:
    return calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))


def stamp_second(stamp: str) -> int:
    """Whole seconds since the epoch of a JetStream timestamp (``2026-11-25T14:50:07.99Z``)."""
    return _second_of(stamp[:19])


def encode_record(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def decode_record(data: bytes) -> dict[str, Any]:
    """A bucket's JSON value; ValueError when it is not an object."""
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("a bucket value that is no JSON object")
    return value
