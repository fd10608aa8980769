"""The cluster store's layout (issue #72), without a server: subjects never carry a user's
text, a stored message's frame gives back its header block and payload, and a frame that is
not one is refused in words."""

from __future__ import annotations

import pytest

from mq9_broker.storage.jetstream import Layout, token
from mq9_broker.storage.jetstream.mapping import (
    NO_KEY,
    frame,
    msg_id_of,
    parts_of,
    priority_of,
    stamp_second,
    subject_box,
    unframe,
)
from mq9_broker.storage.jetstream.requests import parse_headers
from mq9_platform.wake.rules import digest
from mq9_wire.protocol import Priority


def test_a_mailbox_is_one_token_the_wakers_digest_and_the_msg_id_the_last() -> None:
    layout = Layout("S")
    name = "team.inbox with spaces > * " + "x" * 3800
    box = token(name)
    subject = layout.message_subject(box, Priority.URGENT, token("a.key"), 41)
    assert subject == f"mq9.S.m.{box}.urgent.{token('a.key')}.41"
    assert token(name) == digest(name)  # the waker hears $mq9.WAKE.<the same token>
    assert layout.message_subject(box, Priority.NORMAL, NO_KEY, 0).endswith(".normal.-.0")
    assert layout.is_message_of(subject, name) and not layout.is_message_of(subject, "other")
    assert priority_of(subject) is Priority.URGENT and msg_id_of(subject) == 41
    assert parts_of(subject) == (box, Priority.URGENT, token("a.key"), 41)
    assert subject_box(subject) == box
    assert layout.lane_filter(name, Priority.CRITICAL) == f"mq9.S.m.{box}.critical.*.*"
    assert layout.key_filter(name, "k") == f"mq9.S.m.{box}.*.{token('k')}.*"
    assert layout.id_filter(name, 7) == f"mq9.S.m.{box}.*.*.7"
    assert layout.mailbox_filter(name) == layout.box_filter(box) == f"mq9.S.m.{box}.>"
    # a delayed message is written, unnumbered, where no mailbox filter reaches it
    assert layout.staged_subject(name, Priority.URGENT) == f"mq9.S.s.{box}.urgent"
    # a tag's index entry, a token per "/" part; a tag's filter reaches it and those below
    a, b = token("a.1"), token("b c")
    assert layout.tag_subject(box, "a.1/b c") == f"mq9.S.t.{box}.{a}.{b}._"
    assert layout.tag_filter(name, "a.1") == f"mq9.S.t.{box}.{a}.>"
    assert layout.tag_filter(name, "a.1/") == f"mq9.S.t.{box}.{a}.{token('')}.>"
    assert (layout.messages, layout.mailboxes, layout.groups, layout.agents) == (
        "S_MSGS",
        "S_MAILBOXES",
        "S_GROUPS",
        "S_AGENTS",
    )


@pytest.mark.parametrize(
    ("header", "payload"),
    [(None, b""), (None, b"\x00\xff"), (b"NATS/1.0\r\nmq9-key: k\r\n\r\n", b"body")],
)
def test_a_frame_gives_back_what_the_send_carried(header: bytes | None, payload: bytes) -> None:
    assert unframe(frame(header, payload)) == (header, payload)


@pytest.mark.parametrize("data", [b"", b"\x00\x00", b"\x00\x00\x00\x09short"])
def test_a_frame_that_is_not_one_is_refused_in_words(data: bytes) -> None:
    with pytest.raises(ValueError, match="stored message"):
        unframe(data)


def test_timestamps_and_header_blocks() -> None:
    assert stamp_second("1970-01-01T00:00:10.999999999Z") == 10
    assert stamp_second("2026-11-25T14:50:07Z") == stamp_second("2026-11-25T14:50:07.5Z")
    block = b"NATS/1.0\r\nNats-TTL: 3s\r\nKV-Operation: PURGE\r\n\r\n"
    assert parse_headers(block) == {"Nats-TTL": "3s", "KV-Operation": "PURGE"}
