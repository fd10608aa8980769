"""The answers' bytes: the fixed replies (``OK``, ``SENT``, ...), an error's answer, and the
answers that hold messages or agents within a byte limit: a lane read capped as RobustMQ's
storage caps it, a FETCH or QUERY answer cut after the last message that fits, a group's answer
whole or refused with the largest ``num_msgs`` that fits (a reader judges from the lanes how
far it may ack), a DISCOVER answer kept within its limit."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import Any

from mq9_wire import protocol as p
from mq9_wire.protocol.errors import Mq9Error
from mq9_wire.semantic.ranking import AgentEntry

from ..state.mailbox import StoredMessage
from ..storage.mailbox_store import StorageError
from .limits import Carried

log = logging.getLogger("mq9_broker")

# The reply written around items encoded once each (MSG_ITEM), not re-encoded
_MESSAGES_HEAD = p.encode(p.MESSAGES_REPLY.write(error="", messages=[]))[:-2]
EMPTY_ANSWER = len(_MESSAGES_HEAD) + len(b"]}")
OK = p.encode(p.ERROR_REPLY.write(error=""))
DELETED = p.encode(p.DELETE_REPLY.write(error="", deleted=True))
# The replies written around items encoded once each (MSG_ITEM, agents), not re-encoded
DISCOVER_HEAD = p.encode(p.DISCOVER_REPLY.write(error="", agents=[]))[:-2]
# A SEND's answer, written without the encoder (as much as the rest of a SEND's own work);
# tests/broker/engine/test_engine_properties.py holds it to p.SEND_REPLY's encoding
SENT = b'{"error":"","msg_id":%d}'
# A keyed SEND's answer: "duplicate" (JetStream's word in a PubAck) says this broker
# recognises keys, and whether the key's first SEND was answered before (nothing stored now)
SENT_ONCE = b'{"error":"","msg_id":%d,"duplicate":%s}'
# SENT_ONCE's two answers, written with the msg_id alone (a keyed SEND's bytes: bench)
_SENT_NEW = SENT_ONCE.replace(b"%s", b"false")
_SENT_AGAIN = SENT_ONCE.replace(b"%s", b"true")
DELAYED = p.encode(p.SEND_REPLY.write(error="", msg_id=-1))
MSG_ID_ROOM = len(str(p.MAX_U64)) - len("-1")  # a msg_id's widest digits, beyond the -1 sent


def empty_wait(max_wait_ms: int) -> float:
    """The seconds an empty FETCH waits before its empty answer: RobustMQ sleeps the whole
    ``max_wait_ms`` (a u64), ours at most ``MAX_WAIT_MS`` (ten minutes), so that no request
    holds a task, and a broker's shutdown, for ever."""
    return min(max(max_wait_ms, 0), p.MAX_WAIT_MS) / 1000


def capped(messages: Iterable[StoredMessage]) -> list[StoredMessage]:
    """A lane read of a FETCH or a read of a QUERY as RobustMQ's storage engine makes it
    (rocksdb read.rs read_by_tag and read_by_offset): ``messages``, already limited in number,
    pulled until one would take the payload bytes above ``LANE_READ_BYTES`` (30 MiB); the
    first is always taken."""
    cap = p.LANE_READ_BYTES
    taken: list[StoredMessage] = []
    total = 0
    for message in messages:
        total += len(message.payload)
        if taken and total > cap:
            break
        taken.append(message)
    return taken


def answer_size(messages: list[StoredMessage]) -> int:
    """The bytes of an answer holding ``messages``."""
    return EMPTY_ANSWER + sum(len(m.wire()) for m in messages) + max(len(messages) - 1, 0)


def encode_messages(messages: list[StoredMessage]) -> bytes:
    return _MESSAGES_HEAD + b",".join(m.wire() for m in messages) + b"]}"


def _too_large_alone(message: StoredMessage, limit: int) -> Mq9Error:
    return Mq9Error(p.err_stored_too_large(message.msg_id, answer_size([message]), limit))


def cut_answer(found: list[StoredMessage], limit: int | None) -> bytes:
    """A FETCH without a group or a QUERY answer, cut after the last message that fits in
    ``limit`` (reading moves no offset: the rest come with a later request)."""
    if limit is None:
        return encode_messages(found)
    room = limit - EMPTY_ANSWER
    kept = 0
    for message in found:
        room -= len(message.wire()) + (1 if kept else 0)
        if room < 0:
            if not kept:
                raise _too_large_alone(message, limit)
            break
        kept += 1
    return encode_messages(found[:kept])


def whole_answer(lanes: list[list[StoredMessage]], num_msgs: int, limit: int | None) -> bytes:
    """A group's FETCH answer: ``lanes`` (as ``_read_group`` read them for ``num_msgs``)
    whole, or refused with the largest ``num_msgs`` whose whole answer fits within ``limit``.
    Asked for n < num_msgs, the broker would read a prefix of each lane here (the byte cap
    cuts at the same message whatever the count) until it holds n: an answer computed from
    ``lanes``, which grows with n (so the largest that fits is found by bisection)."""
    found = [m for lane in lanes for m in lane]
    if limit is None or answer_size(found) <= limit:
        return encode_messages(found)

    def answer_for(n: int) -> list[StoredMessage]:
        taken: list[StoredMessage] = []
        for lane in lanes:
            taken += lane[:n]
            if len(taken) >= n:
                break
        return taken

    fit, above = 0, num_msgs  # answer_for(fit) fits, answer_for(above) does not
    while above - fit > 1:
        middle = (fit + above) // 2
        if answer_size(answer_for(middle)) <= limit:
            fit = middle
        else:
            above = middle
    if fit == 0:
        raise _too_large_alone(answer_for(1)[0], limit)
    raise Mq9Error(p.err_answer_too_large(answer_size(found), limit, fit))


def sent_once(msg_id: int, duplicate: bool) -> bytes:
    return (_SENT_AGAIN if duplicate else _SENT_NEW) % msg_id


def error_answer(text: str) -> bytes:
    return p.encode(p.ERROR_REPLY.write(error=text))


def failure_answer(subject: str, exc: Exception) -> bytes:
    """The answer to a request that failed other than by the rules: the store's error as
    it says it, a bug reported (the broker keeps serving)."""
    if isinstance(exc, StorageError):
        return error_answer(str(exc))
    log.exception("internal error on %r", subject, exc_info=exc)
    return error_answer(f"internal broker error: {type(exc).__name__}: {exc}")


def created(address: str) -> bytes:
    return p.encode(p.CREATE_REPLY.write(error="", mail_address=address))


async def fetch_answer(
    engine: Carried,
    lanes: list[list[StoredMessage]],
    request: dict[str, Any],
    num_msgs: int,
    max_wait_ms: int,
) -> bytes:
    """A FETCH's answer of the ``lanes`` read: after an empty read, RobustMQ sleeps the whole
    wait and answers empty, without looking again; a group's answer whole or refused, any
    other cut (answers.py), within the engine's answer limit once the wait is over."""
    if not lanes and max_wait_ms > 0:
        await asyncio.sleep(empty_wait(max_wait_ms))
    if request["group_name"] is not None:
        return whole_answer(lanes, num_msgs, engine.answer_limit)
    return cut_answer([m for lane in lanes for m in lane], engine.answer_limit)


def search_answer(hits: list[AgentEntry], limit: int) -> bytes:
    """(our choice) a search answer keeps within ``limit`` with the best-ranked agents that
    fit, so one large card cannot make DISCOVER fail for everyone."""
    room = limit - len(DISCOVER_HEAD) - 2
    kept: list[bytes] = []
    for entry in hits:
        item = p.encode(entry.found())
        room -= len(item) + (1 if kept else 0)
        if room < 0:
            break
        kept.append(item)
    return DISCOVER_HEAD + b",".join(kept) + b"]}"


def listing_answer(
    entries: list[AgentEntry], listed: Callable[[AgentEntry], bytes], limit: int | None
) -> bytes:
    """``entries`` (in name order) as a listing answers them, each as ``listed`` encodes it;
    refused as soon as the agents encoded so far show it above ``limit`` (our choice:
    RobustMQ sends it whatever its size; a cut list would hide agents)."""
    items: list[bytes] = []
    size = len(DISCOVER_HEAD) + 2
    for entry in entries:
        items.append(listed(entry))
        size += len(items[-1]) + (len(items) > 1)
        if limit is not None and size > limit:
            raise Mq9Error(p.err_listing_too_large(len(entries), size, limit))
    return DISCOVER_HEAD + b",".join(items) + b"]}"
