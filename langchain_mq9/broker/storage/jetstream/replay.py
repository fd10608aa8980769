"""Reading the state stream back: every record from the first, applied in order.

``read_stream`` gives a ``Replay``: the state of the stream's last complete snapshot and the
records after it (or of all its records when it holds no complete snapshot), as the SQLite
store's tables would hold it (``State``); ``State.load_into`` fills a fresh engine. A message
this version cannot read fails the restore (``NotARecord``): retrying would not help.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ...state.mailbox import Mailbox, StoredMessage
from ..base import Restorable, StorageError, restore_agents
from .records import RECORD_VERSION, SNAPSHOT_VERSION, message_from

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = logging.getLogger("langchain_mq9.broker")

_NEXT_TIMEOUT = 2.0  # the wait for the next record while reading


class NotARecord(Exception):
    """A message of the stream this version cannot read: retrying will not help."""


async def read_stream(js: JetStreamContext, stream: str, subject: str) -> Replay:
    """Every record of ``stream`` (on ``subject``), from its first, applied in order."""
    info = await js.stream_info(stream)
    replay = Replay(last_seq=info.state.last_seq)
    if info.state.messages:
        # Many records read back at once make many objects that stay: the garbage
        # collector's passes over them are a good part of the time
        with _cycle_collection_paused():
            await _apply_stream(js, stream, subject, replay)
    return replay


async def _apply_stream(js: JetStreamContext, stream: str, subject: str, replay: Replay) -> None:
    """Take every record of the stream up to ``replay.last_seq``, in order."""
    from nats.js.api import DeliverPolicy

    sub = await js.subscribe(subject, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL)
    try:
        seq = 0
        while seq < replay.last_seq:
            msg = await sub.next_msg(timeout=_NEXT_TIMEOUT)
            seq = msg.metadata.sequence.stream
            try:
                replay.take(msg.data)
            except (ValueError, KeyError, TypeError, IndexError) as exc:
                raise NotARecord(
                    f"stream {stream} message {seq} is not a broker record this "
                    f"version reads: {type(exc).__name__}: {exc}"
                ) from None
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()


@contextlib.contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """Python's cycle collection off meanwhile, for the whole process (objects are still
    freed as they were: only reference cycles wait); on again after, if it was."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@dataclass
class Opened:
    """A snapshot met while reading the stream, its end not yet."""

    id: str
    state: State = field(default_factory=lambda: State())
    parts: int = 0
    size: int = 0
    after: list[tuple[dict[str, Any], bytes]] = field(default_factory=list)  # records since
    after_bytes: int = 0


@dataclass
class Replay:
    """The stream read in order: the state of its last complete snapshot and the records
    after it (or of all its records, when it holds no complete snapshot)."""

    state: State = field(default_factory=lambda: State())
    opened: Opened | None = None
    last_seq: int = 0  # the stream's last record when it was read
    read: int = 0  # stream messages read
    tail_bytes: int = 0  # the bytes of the records after the last complete snapshot
    snapshot_size: int = 0  # the bytes of its parts

    def take(self, data: bytes) -> None:
        self.read += 1
        head, _, blobs = data.partition(b"\n")
        record = json.loads(head)
        opened = self.opened
        if record.get("v") != SNAPSHOT_VERSION:
            self.state.apply_record(record, blobs)
            self.tail_bytes += len(data)
            if opened is not None:
                opened.after.append((record, blobs))
                opened.after_bytes += len(data)
            return
        snapshot_id, kind, n = record["snap"]
        if kind == "begin":  # an open one before it never ends: its broker was cut off
            self.opened = Opened(snapshot_id)
        elif opened is None or opened.id != snapshot_id:
            return  # the rest of a snapshot that was given up
        elif kind == "part":
            if n != opened.parts:
                raise ValueError(f"snapshot {snapshot_id} part {n}, expected {opened.parts}")
            opened.state.apply_record(record, blobs)
            opened.parts += 1
            opened.size += len(data)
        elif kind == "end":
            if n != opened.parts:
                raise ValueError(f"snapshot {snapshot_id} ends after {n} parts, not {opened.parts}")
            for after, after_blobs in opened.after:
                opened.state.apply_record(after, after_blobs)
            self.state, self.opened = opened.state, None
            self.tail_bytes, self.snapshot_size = opened.after_bytes, opened.size
        else:
            raise ValueError(f"snapshot record kind {kind!r}")


@dataclass
class _Mailbox:
    shard: str
    create_time: int
    ttl: int
    desc: str
    next_id: int
    start_offset: int
    live: bool = True
    messages: dict[int, StoredMessage] = field(default_factory=dict)


@dataclass
class State:
    """What the stream's records add up to, as the SQLite store's tables hold it."""

    mailboxes: dict[str, _Mailbox] = field(default_factory=dict)
    orphans: dict[str, dict[int, StoredMessage]] = field(default_factory=dict)
    delayed: dict[int, tuple[str, int, StoredMessage]] = field(default_factory=dict)
    offsets: dict[tuple[str, str], int] = field(default_factory=dict)
    agents: dict[str, tuple[str, int]] = field(default_factory=dict)  # in registration order
    index: dict[str, tuple[str, str, int]] = field(default_factory=dict)  # in writing order

    def apply_record(self, record: dict[str, Any], blobs: bytes) -> None:
        """Apply a record: its head (the JSON before its newline), read, and its blobs."""
        version = record.get("v")
        if version == 1:  # one request's changes
            self._apply(record["ops"], blobs)
        elif version in (RECORD_VERSION, SNAPSHOT_VERSION):  # changes, their blob bytes
            start = 0
            for ops, size in zip(record["changes"], record["blobs"], strict=True):
                self._apply(ops, blobs[start : start + size])
                start += size
        else:
            raise ValueError(f"record version {version!r}, expected 1 or {RECORD_VERSION}")

    def _apply(self, ops: list[list[Any]], blobs: bytes) -> None:
        for kind, *args in ops:
            getattr(self, f"_op_{kind}")(blobs, *args)

    # One method per change record: replaying them in order rebuilds the state

    def _op_mc(self, _b: bytes, address: str, shard: str, *fields: Any) -> None:
        create_time, ttl, desc, next_id, start_offset = fields
        old = self.mailboxes.get(address)
        # a new log does not take up the messages an interrupted write left under its name
        self.orphans.pop(address, None)
        messages = old.messages if old is not None else {}
        self.mailboxes[address] = _Mailbox(
            shard, create_time, ttl, desc, next_id, start_offset, True, messages
        )

    def _op_mx(self, _b: bytes, address: str) -> None:
        if address in self.mailboxes:
            self.mailboxes[address].live = False

    def _op_mr(self, _b: bytes, address: str) -> None:
        self.mailboxes.pop(address, None)

    def _op_ms(
        self, blobs: bytes, address: str, next_id: int, msg_id: int, cols: list[Any]
    ) -> None:
        message = message_from(msg_id, cols, blobs)
        mailbox = self.mailboxes.get(address)
        if mailbox is None:
            self.orphans.setdefault(address, {})[msg_id] = message
            return
        mailbox.messages[msg_id] = message
        mailbox.next_id = next_id

    def _op_md(self, _b: bytes, address: str, msg_id: int) -> None:
        if address in self.mailboxes:
            self.mailboxes[address].messages.pop(msg_id, None)

    def _op_mo(self, _b: bytes, address: str, start_offset: int) -> None:
        if address in self.mailboxes:
            self.mailboxes[address].start_offset = start_offset

    def _op_da(
        self, blobs: bytes, delayed_id: int, address: str, due: int, cols: list[Any]
    ) -> None:
        self.delayed[delayed_id] = (address, due, message_from(-1, cols, blobs))

    def _op_dr(self, _b: bytes, delayed_id: int) -> None:
        self.delayed.pop(delayed_id, None)

    def _op_oc(self, _b: bytes, lane: str, shard: str, offset: int) -> None:
        self.offsets[(lane, shard)] = offset

    def _op_od(self, _b: bytes, lane: str, shard: str) -> None:
        self.offsets.pop((lane, shard), None)

    def _op_as(self, _b: bytes, name: str, agent_info: str, create_time: int) -> None:
        self.agents.pop(name, None)  # a replaced registration goes last, as in SQLite
        self.agents[name] = (agent_info, create_time)

    def _op_ar(self, _b: bytes, name: str) -> None:
        self.agents.pop(name, None)

    def _op_is(self, _b: bytes, card: str, name: str, agent_info: str, create_time: int) -> None:
        self.index.pop(card, None)
        self.index[card] = (name, agent_info, create_time)

    def _op_ir(self, _b: bytes, card: str) -> None:
        self.index.pop(card, None)

    def load_into(self, engine: Restorable) -> dict[int, int]:
        """Fill ``engine``; returns the engine's heap seq of each delayed id."""
        for address, kept in self.mailboxes.items():
            mailbox = Mailbox(
                address, create_time=kept.create_time, ttl=kept.ttl, desc=kept.desc,
                shard=kept.shard,
            )  # fmt: skip
            mailbox.start_offset = kept.start_offset
            engine.add_mailbox(mailbox, live=kept.live)
            for msg_id in sorted(kept.messages):
                mailbox.insert(kept.messages[msg_id])
            # ids of deleted messages stay used
            mailbox.next_id = max(kept.next_id, mailbox.next_id)
        for (lane, shard), offset in self.offsets.items():
            engine.offsets.setdefault(lane, {})[shard] = offset
        seqs = {
            engine.hold_delayed(due, address, message): delayed_id
            for delayed_id, (address, due, message) in sorted(self.delayed.items())
        }
        try:
            restore_agents(
                engine,
                ((name, *kept) for name, kept in self.agents.items()),
                self.index.values(),
            )
        except ValueError as exc:
            raise StorageError(str(exc)) from None
        for address, messages in self.orphans.items():
            log.warning("skipped %d messages of mailbox %r, not stored", len(messages), address)
        return seqs

    def counts(self) -> dict[str, int]:
        return {
            "mailboxes": len(self.mailboxes),
            "messages": sum(len(m.messages) for m in self.mailboxes.values()),
            "delayed": len(self.delayed),
            "offsets": len(self.offsets),
            "agents": len(self.agents),
            "skipped": sum(len(m) for m in self.orphans.values()),
        }
