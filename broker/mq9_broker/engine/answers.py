"""FETCH and QUERY answers within a byte limit: a lane read capped as RobustMQ's storage caps
it, an answer cut after the last message that fits, and a group's answer whole or refused with
the largest ``num_msgs`` that fits (a reader judges from the lanes how far it may ack)."""

from __future__ import annotations

from collections.abc import Iterable

from mq9_wire import protocol as p
from mq9_wire.protocol.errors import Mq9Error

from ..state.mailbox import StoredMessage

# The reply written around items encoded once each (MSG_ITEM), not re-encoded
_MESSAGES_HEAD = p.encode(p.MESSAGES_REPLY.write(error="", messages=[]))[:-2]
EMPTY_ANSWER = len(_MESSAGES_HEAD) + len(b"]}")


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
