"""A FETCH or QUERY item read in one step (``Message.from_wire``'s plain path) gives exactly
what reading it field by field gives (``Message.from_item``), for any item a peer may send:
the same message, or the same error."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mq9_wire.protocol import Message, Priority
from mq9_wire.protocol.errors import MalformedReply
from mq9_wire.protocol.serde import loads

MAX_U64 = 2**64 - 1
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from([-1, 0, MAX_U64, MAX_U64 + 1]),  # u64's edges and just past them
    st.integers(),
    st.sampled_from(["", "normal", "urgent", "critical", "Normal", "high"]),
    st.text(max_size=8),
    st.lists(st.integers(min_value=0, max_value=255), max_size=3),
    st.floats(allow_nan=False, allow_infinity=False),
)
_names = st.sampled_from(["msg_id", "payload", "priority", "header", "create_time", "extra"])


def _read(read, item):
    try:
        return read(item)
    except MalformedReply as exc:
        return str(exc)


_FIELDS = ("msg_id", "payload", "priority", "header", "create_time")
_plain = {
    "msg_id": st.integers(min_value=0, max_value=MAX_U64),
    "payload": st.text(max_size=8),
    "priority": st.sampled_from(["", "normal", "urgent", "critical"]),
    "header": st.none(),
    "create_time": st.integers(min_value=0, max_value=MAX_U64),
}


@st.composite
def _items(draw) -> list[tuple[str, object]]:
    """Mostly the five fields with values as brokers write them, one or two of them changed
    to anything, a field dropped, given twice or an unknown one added."""
    changed = draw(st.sets(st.sampled_from(_FIELDS), max_size=2))
    pairs = [(name, draw(_values if name in changed else _plain[name])) for name in _FIELDS]
    if draw(st.booleans()):
        pairs.pop(draw(st.integers(0, len(pairs) - 1)))
    if draw(st.booleans()):
        name = draw(_names)
        pairs.append((name, draw(_plain.get(name, _values) | _values)))
    return draw(st.permutations(pairs))


def _plain_but(**changed: object) -> list[tuple[str, object]]:
    fields = {"msg_id": 1, "payload": "a", "priority": "normal", "header": None, "create_time": 2}
    return list((fields | changed).items())


@pytest.mark.slow  # over a second on a quiet machine (#89)
@settings(max_examples=400)
@given(_items())
@example(_plain_but(msg_id=-1))
@example(_plain_but(msg_id=MAX_U64 + 1))
@example(_plain_but(create_time=-1))
@example(_plain_but(msg_id=True))
@example(_plain_but(priority="Normal"))
@example(_plain_but(header=[]))
@example([*_plain_but(), ("msg_id", 3)])
@example([pair for pair in _plain_but() if pair[0] != "header"])  # as bench's canned replies
@example([pair for pair in _plain_but(priority="high") if pair[0] != "header"])
def test_any_item_reads_the_same_either_way(pairs):
    text = "{" + ",".join(f"{json.dumps(k)}:{json.dumps(v)}" for k, v in pairs) + "}"
    item = loads(text.encode(), as_struct=True)  # repeated names kept, as a reply parses
    assert _read(Message.from_wire, item) == _read(Message.from_item, item)


@given(
    msg_id=st.integers(min_value=0, max_value=MAX_U64),
    create_time=st.integers(min_value=0, max_value=MAX_U64),
    payload=st.text(),
    priority=st.sampled_from(["", "normal", "urgent", "critical"]),
)
def test_plain_items_read_the_same_either_way(msg_id, create_time, payload, priority):
    item = loads(
        json.dumps(
            {
                "msg_id": msg_id,
                "payload": payload,
                "priority": priority,
                "header": None,
                "create_time": create_time,
            }
        ).encode(),
        as_struct=True,
    )
    message = Message.from_wire(item)
    assert message == Message.from_item(item)
    assert message.payload == payload.encode()  # (st.text() makes no lone surrogates)
    assert message.priority is (Priority(priority) if priority else Priority.NORMAL)


def test_a_payload_that_was_not_utf8_is_refused_in_serdes_words():
    item = loads(
        b'{"msg_id":1,"payload":"a\xffb","priority":"normal","header":null,"create_time":2}',
        as_struct=True,
    )
    assert _read(Message.from_wire, item) == _read(Message.from_item, item)
    assert "malformed message" in _read(Message.from_wire, item)
