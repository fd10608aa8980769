"""A sequence of strings in a request (a QUERY's ``tags``) read all at once gives exactly what
reading it item by item gives, for any sequence a peer may send: the same strings, or the
first bad item's error in serde's words."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from mq9_wire import protocol as p
from mq9_wire.protocol import shapes
from mq9_wire.protocol.errors import WireError
from mq9_wire.protocol.serde import ERR_NOT_UNICODE

_items = st.one_of(
    st.text(max_size=6),  # lone surrogates included: text Python holds but UTF-8 cannot
    st.sampled_from(["\ud83d", "\ude00", "\udc80", "tag", "x/y"]),
    st.none(),
    st.booleans(),
    st.integers(),
    st.lists(st.text(max_size=2), max_size=2),
)


def _read(read, items):
    try:
        return read(items)
    except WireError as exc:
        return f"error: {exc}"


def _item_by_item(items):
    return [shapes._convert(shapes.STR, item) for item in items]


@given(st.lists(_items, max_size=8))
@example(["a", "\ud83d", "\ude00"])  # two halves of a pair, apart: each a lone surrogate
@example(["\ud83d\ude00"])  # the same two halves in one string: still no UTF-8 form
@example(["a", 5, "\udc80"])  # a number before bad text: the number is the error
@example(["\udc80", 5])  # bad text before a number: the text is the error
@example(["ok", "fine"])
def test_all_at_once_equals_item_by_item(items):
    assert _read(shapes._str_list, items) == _read(_item_by_item, items)


def test_query_tags_read_from_a_body():
    body = b'{"tags":["a","b/c","\xc3\xa9"]}'
    assert p.QUERY_REQUEST.read(body)["tags"] == ["a", "b/c", "\u00e9"]
    # a byte that is not UTF-8 inside the third tag: serde's words, not a crash
    assert _read(p.QUERY_REQUEST.read, b'{"tags":["a","b","\xff"]}') == f"error: {ERR_NOT_UNICODE}"
    assert _read(p.QUERY_REQUEST.read, b'{"tags":["a",7]}') == (
        "error: invalid type: integer `7`, expected a string"
    )
