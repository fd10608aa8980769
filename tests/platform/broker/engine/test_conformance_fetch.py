"""FETCH and ACK on the wire, as RobustMQ (8bd49dc) answers them.

The rules, from ``src/nats-broker/src/mq9/fetch.rs`` and the storage adapter's
``consumer.rs`` / ``consumer_priority.rs``:

* a group is three committed offsets per mailbox, one per priority lane (``{group}-critical``,
  ``-urgent``, ``-normal``); FETCH reads the lanes critical first, each up to ``num_msgs``
  from its offset, and moves nothing: only ACK commits, and ACK X commits X + 1 to all three;
* until a group has committed anything (anywhere), every FETCH starts from its deliver policy;
  committed offsets are found by group name across mailboxes;
* ``latest`` starts at the newest stored message, ``from_id`` is clamped to the end, a
  ``from_time`` with nothing at or after it falls back to the earliest message;
* an empty FETCH sleeps ``max_wait_ms`` and answers empty, without looking again.

Every request goes out raw (``broker.raw``), over ``memory://`` and over a real nats-server.
Empty FETCHes wait 0 or a few milliseconds; nothing here measures time.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from mq9_wire import protocol as p
from mq9_wire.protocol.errors import from_reply

T0 = 1_700_000_000  # where the fixture's ManualClock starts


# -- raw requests --------------------------------------------------------------------------------


async def create(broker, name: str | None = None, **fields) -> str:
    body = {"name": name, **fields} if name is not None or fields else None
    reply = await broker.raw(p.MAILBOX_CREATE, b"" if body is None else p.encode(body))
    assert reply["error"] == "", reply
    return reply["mail_address"]


async def send(
    broker, box: str, payload: bytes | str = b"x", priority: str | None = None, **headers: str
) -> int:
    if isinstance(payload, str):
        payload = payload.encode()
    wire_headers = {name.replace("_", "-"): value for name, value in headers.items()}
    if priority is not None:
        wire_headers[p.HEADER_PRIORITY] = priority
    reply = await broker.raw(p.send_subject(box), payload, wire_headers or None)
    assert reply["error"] == "", reply
    return reply["msg_id"]


async def filled(broker, *priorities: str, name: str | None = None) -> str:
    """A mailbox holding one message per priority given, msg_ids 0, 1, ... in that order."""
    box = await create(broker, name)
    for index, priority in enumerate(priorities):
        assert await send(broker, box, f"m{index}", priority) == index
    return box


async def fetch_reply(broker, box: str, body: dict | bytes | None = None) -> dict:
    if body is None:
        body = {}
    if isinstance(body, dict):
        body = dict(body)
        body.setdefault("config", {"max_wait_ms": 0})
        body = p.encode(body)
    return await broker.raw(p.fetch_subject(box), body)


async def fetch(broker, box: str, **body) -> list[int]:
    """The msg_ids a FETCH answers, in answer order."""
    if "num_msgs" in body or "max_wait_ms" in body:
        body["config"] = {
            "num_msgs": body.pop("num_msgs", None),
            "max_wait_ms": body.pop("max_wait_ms", 0),
        }
    reply = await fetch_reply(broker, box, body)
    assert reply["error"] == "", reply
    return [m["msg_id"] for m in reply["messages"]]


async def ack(broker, box: str, group: str, msg_id: int, *, subject_box: str | None = None):
    body = {"group_name": group, "mail_address": box, "msg_id": msg_id}
    return await broker.raw(p.ack_subject(subject_box or box), p.encode(body))


async def acked(broker, box: str, group: str, msg_id: int) -> None:
    assert await ack(broker, box, group, msg_id) == {"error": ""}


def set_limits(broker, **changes) -> None:
    broker.engine.limits = dataclasses.replace(broker.engine.limits, **changes)


# -- deliver policies ----------------------------------------------------------------------------


async def test_latest_is_the_newest_stored_message(broker):
    # handler/adapter.rs: end_offset = latest_offset - 1, so "latest" still hands out the
    # newest message written (consumer.rs resolve_initial_offsets)
    box = await filled(broker, "normal", "normal", "normal")
    assert await fetch(broker, box) == [2]  # no deliver: latest (#[serde(default)])
    assert await fetch(broker, box, deliver="latest") == [2]
    assert await fetch(broker, box, deliver="latest") == [2]  # a stateless read, again


async def test_latest_reads_every_lane_from_the_newest_msg_id(broker):
    box = await filled(broker, "critical", "normal", "urgent", "normal")
    assert await fetch(broker, box, deliver="latest") == [3]
    await send(broker, box, "c4", "critical")
    assert await fetch(broker, box, deliver="latest") == [4]


async def test_latest_on_an_empty_mailbox_starts_at_zero(broker):
    box = await create(broker)
    assert await fetch(broker, box) == []
    assert await fetch(broker, box, group_name="g") == []
    await send(broker, box)
    await send(broker, box)
    # the group committed nothing: latest is applied again, to the mailbox as it is now
    assert await fetch(broker, box, group_name="g") == [1]


async def test_earliest_is_every_message_in_priority_order(broker):
    box = await filled(broker, "normal", "critical", "urgent", "normal", "critical")
    assert await fetch(broker, box, deliver="earliest") == [1, 4, 2, 0, 3]
    assert await broker.raw(p.delete_subject(box, 1)) == {"error": "", "deleted": True}
    assert await fetch(broker, box, deliver="earliest") == [4, 2, 0, 3]


async def test_from_time_is_create_time_at_or_after(broker):
    box = await create(broker)
    await send(broker, box, "t0")
    broker.clock.advance(10)
    await send(broker, box, "t10", "critical")
    broker.clock.advance(10)
    await send(broker, box, "t20")
    assert await fetch(broker, box, deliver="from_time", from_time=T0 + 10) == [1, 2]
    assert await fetch(broker, box, deliver="from_time", from_time=T0 + 11) == [2]
    assert await fetch(broker, box, deliver="from_time", from_time=T0 + 20) == [2]
    assert await fetch(broker, box, deliver="from_time", from_time=0) == [1, 0, 2]
    assert await fetch(broker, box, deliver="from_time") == [1, 0, 2]  # missing: 0


async def test_from_time_after_every_message_falls_back_to_the_earliest(broker):
    # rocksdb read.rs get_offset_by_timestamp: nothing at or after the time -> the shard's
    # earliest offset (AdapterOffsetStrategy::Earliest), so a time in the future reads it all
    box = await filled(broker, "normal", "urgent")
    assert await fetch(broker, box, deliver="from_time", from_time=T0 + 3600) == [1, 0]
    assert await fetch(broker, box, group_name="g", deliver="from_time", from_time=2**64 - 1) == [
        1,
        0,
    ]


async def test_from_id_is_msg_id_at_or_after_in_priority_order(broker):
    box = await filled(broker, "normal", "critical", "normal", "urgent", "critical")
    assert await fetch(broker, box, deliver="from_id", from_id=2) == [4, 3, 2]
    assert await fetch(broker, box, deliver="from_id", from_id=0) == [1, 4, 3, 0, 2]
    assert await fetch(broker, box, deliver="from_id") == [1, 4, 3, 0, 2]  # missing: 0


async def test_from_id_past_the_end_is_clamped_to_the_newest_message(broker):
    # consumer.rs ByStartOffset: start.max(start_offset).min(end_offset)
    box = await filled(broker, "normal", "normal", "normal")
    assert await fetch(broker, box, deliver="from_id", from_id=3) == [2]
    assert await fetch(broker, box, deliver="from_id", from_id=2**64 - 1) == [2]
    empty = await create(broker)
    assert await fetch(broker, empty, deliver="from_id", from_id=7) == []


async def test_num_msgs_is_per_lane_so_an_answer_may_hold_more(broker):
    # consumer_priority.rs: each lane reads up to num_msgs; the next lane is read while the
    # answer holds fewer than num_msgs
    box = await filled(broker, "critical", "critical", "urgent", "urgent", "urgent", "normal")
    assert await fetch(broker, box, deliver="earliest", num_msgs=3) == [0, 1, 2, 3, 4]
    assert await fetch(broker, box, deliver="earliest", num_msgs=2) == [0, 1]
    assert await fetch(broker, box, deliver="earliest", num_msgs=1) == [0]
    assert await fetch(broker, box, deliver="earliest", num_msgs=6) == [0, 1, 2, 3, 4, 5]


async def test_num_msgs_zero_reads_nothing(broker):
    box = await filled(broker, "critical", "normal")
    assert await fetch(broker, box, deliver="earliest", num_msgs=0) == []


async def test_default_num_msgs_is_100_per_lane(broker):
    box = await create(broker)
    for _ in range(105):
        await send(broker, box)
    assert await fetch(broker, box, deliver="earliest") == list(range(100))


async def test_expired_messages_are_skipped(broker):
    box = await create(broker)
    await send(broker, box, "short", mq9_ttl="5")
    await send(broker, box, "kept")
    broker.clock.advance(5)
    assert await fetch(broker, box, deliver="earliest") == [0, 1]  # through the second 5
    broker.clock.advance(1)
    assert await fetch(broker, box, deliver="earliest") == [1]


# -- stateless FETCH -----------------------------------------------------------------------------


async def test_stateless_fetch_commits_nothing(broker):
    box = await filled(broker, "normal", "normal", "normal")
    for _ in range(2):
        assert await fetch(broker, box, deliver="earliest") == [0, 1, 2]
    assert await fetch(broker, box, group_name=None, deliver="earliest") == [0, 1, 2]
    assert broker.engine.offsets == {}


# -- groups: offsets move only by ACK ------------------------------------------------------------


async def test_a_group_gets_the_same_messages_until_it_acks(broker):
    box = await filled(broker, "normal", "normal", "normal")
    for _ in range(3):
        assert await fetch(broker, box, group_name="g", deliver="earliest", num_msgs=2) == [0, 1]
    await acked(broker, box, "g", 1)
    assert await fetch(broker, box, group_name="g", num_msgs=2) == [2]
    await acked(broker, box, "g", 2)
    assert await fetch(broker, box, group_name="g") == []


async def test_competing_workers_of_one_group_are_handed_the_same_messages(broker):
    # no leases: what one worker fetched is fetched by the next, until someone acks it
    box = await filled(broker, "normal", "urgent", "normal")
    first = await fetch(broker, box, group_name="workers", deliver="earliest", num_msgs=1)
    second = await fetch(broker, box, group_name="workers", deliver="earliest", num_msgs=1)
    assert first == second == [1]


async def test_ack_moves_all_three_lanes_past_the_msg_id(broker):
    """ACK X stages X for every priority group of the mailbox and commits X + 1 (fetch.rs
    process_ack, consumer.rs commit): lower-priority messages below X are skipped for good."""
    box = await filled(broker, "normal", "normal", "critical", "normal", "urgent")
    answer = await fetch(broker, box, group_name="g", deliver="earliest")
    assert answer == [2, 4, 0, 1, 3]
    await acked(broker, box, "g", 2)  # the first message of the answer
    # every lane now reads from 3: the normal messages 0 and 1 are never handed out again
    assert await fetch(broker, box, group_name="g", deliver="earliest") == [4, 3]
    await acked(broker, box, "g", 4)
    assert await fetch(broker, box, group_name="g") == []
    await send(broker, box, "n5")
    await send(broker, box, "c6", "critical")
    assert await fetch(broker, box, group_name="g") == [6, 5]


async def test_the_deliver_policy_applies_until_the_group_commits(broker):
    box = await filled(broker, "normal", "normal", "normal")
    assert await fetch(broker, box, group_name="g", deliver="earliest") == [0, 1, 2]
    assert await fetch(broker, box, group_name="g", deliver="latest") == [2]
    assert await fetch(broker, box, group_name="g", deliver="from_id", from_id=1) == [1, 2]
    assert broker.engine.offsets == {}  # fetching created nothing
    await acked(broker, box, "g", 0)
    # committed: the deliver policy is ignored from now on
    for deliver in ("earliest", "latest", "from_id"):
        assert await fetch(broker, box, group_name="g", deliver=deliver) == [1, 2]


async def test_committed_offsets_are_found_by_group_name_across_mailboxes(broker):
    """consumer.rs ensure_offsets_loaded: get_offset_by_group(tenant, group) returns the group's
    offsets on every shard; once there are any, the deliver policy is never applied, and a
    mailbox the group never acked on is read from the lane's beginning (read_by_tag(None))."""
    a = await filled(broker, "normal", "normal")
    b = await filled(broker, "normal", "normal", "critical")
    await acked(broker, a, "g", 0)
    assert await fetch(broker, b, group_name="g", deliver="latest") == [2, 0, 1]
    assert await fetch(broker, b, group_name="other", deliver="latest") == [2]
    assert await fetch(broker, a, group_name="g") == [1]


async def test_groups_are_independent(broker):
    box = await filled(broker, "normal", "normal", "normal")
    await acked(broker, box, "a", 2)
    assert await fetch(broker, box, group_name="a", deliver="earliest") == []
    assert await fetch(broker, box, group_name="b", deliver="earliest") == [0, 1, 2]
    await acked(broker, box, "b", 0)
    assert await fetch(broker, box, group_name="b") == [1, 2]
    assert await fetch(broker, box, group_name="a") == []


async def test_an_empty_group_name_is_a_group(broker):
    # the JavaScript SDK sends group_name "" for group-less fetches; RobustMQ takes it as
    # Some(""), a group like any other
    box = await filled(broker, "normal", "normal")
    await acked(broker, box, "", 0)
    assert await fetch(broker, box, group_name="", deliver="earliest") == [1]
    assert await fetch(broker, box, deliver="earliest") == [0, 1]


# -- force_deliver -------------------------------------------------------------------------------


async def test_force_deliver_on_a_new_group_is_an_ordinary_fetch(broker):
    # fetch.rs: the reset happens only if "{group}-normal" has committed offsets
    box = await filled(broker, "normal", "normal", "normal")
    assert await fetch(
        broker, box, group_name="g", deliver="from_id", from_id=1, force_deliver=True
    ) == [1, 2]
    assert broker.engine.offsets == {}
    assert await fetch(broker, box, group_name="g", deliver="earliest") == [0, 1, 2]


async def test_force_deliver_resets_an_existing_group_and_commits_one_past(broker):
    """force_reset_offset commits the target through stage_offsets + commit, which stores
    target + 1; the answer itself is read from the target (set_current_offsets)."""
    box = await filled(broker, "normal", "normal", "normal")
    await acked(broker, box, "g", 2)
    assert await fetch(broker, box, group_name="g", deliver="earliest") == []
    forced = await fetch(broker, box, group_name="g", deliver="earliest", force_deliver=True)
    assert forced == [0, 1, 2]
    assert await fetch(broker, box, group_name="g") == [1, 2]  # committed 0 + 1

    forced = await fetch(
        broker, box, group_name="g", deliver="from_id", from_id=2, force_deliver=True
    )
    assert forced == [2]
    assert await fetch(broker, box, group_name="g") == []  # committed 3

    forced = await fetch(broker, box, group_name="g", deliver="latest", force_deliver=True)
    assert forced == [2]  # latest: the newest message
    forced = await fetch(
        broker, box, group_name="g", deliver="from_id", from_id=99, force_deliver=True
    )
    assert forced == [2]  # clamped to the end
    forced = await fetch(
        broker, box, group_name="g", deliver="from_time", from_time=T0 + 999, force_deliver=True
    )
    assert forced == [0, 1, 2]  # nothing that late: the earliest, clamped into range
    assert await fetch(broker, box, group_name="g") == [1, 2]


async def test_force_deliver_false_is_an_ordinary_fetch(broker):
    box = await filled(broker, "normal", "normal")
    await acked(broker, box, "g", 0)
    assert await fetch(broker, box, group_name="g", deliver="earliest", force_deliver=False) == [1]


# -- ACK -----------------------------------------------------------------------------------------


async def test_ack_reply_shape_and_repeats(broker):
    box = await filled(broker, "normal", "normal")
    assert await ack(broker, box, "g", 1) == {"error": ""}
    assert await ack(broker, box, "g", 1) == {"error": ""}
    assert await ack(broker, box, "g", 0) == {"error": ""}  # moves the offset back
    assert await fetch(broker, box, group_name="g") == [1]


async def test_ack_beyond_the_end_succeeds_and_skips_what_comes_below_it(broker):
    box = await filled(broker, "normal")
    assert await ack(broker, box, "g", 50) == {"error": ""}
    for _ in range(3):
        await send(broker, box)
    assert await fetch(broker, box, group_name="g", deliver="earliest") == []


async def test_ack_of_a_deleted_or_never_fetched_message_succeeds(broker):
    box = await filled(broker, "normal", "normal", "normal")
    await broker.raw(p.delete_subject(box, 0))
    assert await ack(broker, box, "g", 0) == {"error": ""}  # never fetched, deleted
    assert await fetch(broker, box, group_name="g", deliver="latest") == [1, 2]


async def test_ack_of_the_largest_msg_id_wraps_to_offset_zero(broker):
    # consumer.rs commit stores offset + 1 in a u64; RobustMQ builds without overflow checks
    box = await filled(broker, "normal", "normal")
    assert await ack(broker, box, "g", 2**64 - 1) == {"error": ""}
    assert await fetch(broker, box, group_name="g", deliver="latest") == [0, 1]


async def test_ack_uses_the_body_mail_address_not_the_subject(broker):
    a = await filled(broker, "normal", "normal")
    b = await filled(broker, "normal", "normal")
    reply = await ack(broker, b, "g", 0, subject_box=a)
    assert reply == {"error": ""}
    assert await fetch(broker, b, group_name="g") == [1]
    # on a the group has no offset: its lanes are read from the beginning
    assert await fetch(broker, a, group_name="g") == [0, 1]
    # the subject's mailbox need not exist at all
    reply = await ack(broker, b, "g", 1, subject_box="no.such.box")
    assert reply == {"error": ""}


async def test_ack_of_an_unknown_mailbox(broker):
    box = await create(broker)
    reply = await ack(broker, "no.such.box", "g", 0, subject_box=box)
    assert reply == {"error": "mailbox not found: no.such.box"}


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"mail_address": "box", "msg_id": 0}, "missing field `group_name`"),
        ({"group_name": "g", "msg_id": 0}, "missing field `mail_address`"),
        ({"group_name": "g", "mail_address": "box"}, "missing field `msg_id`"),
        ({"group_name": "g", "mail_address": "box", "msg_id": None}, "invalid type: null"),
        ({"group_name": "g", "mail_address": "box", "msg_id": -1}, "invalid value"),
        ({"group_name": "g", "mail_address": "box", "msg_id": 2**64}, "floating point `1.8446744"),
    ],
)
async def test_ack_request_fields(broker, body, error):
    await create(broker, "box")
    reply = await broker.raw(p.ack_subject("box"), p.encode(body))
    assert error in reply["error"], reply


async def test_ack_ignores_unknown_fields(broker):
    box = await filled(broker, "normal", "normal")
    body = {"group_name": "g", "mail_address": box, "msg_id": 0, "all": True}
    assert await broker.raw(p.ack_subject(box), p.encode(body)) == {"error": ""}
    assert await fetch(broker, box, group_name="g") == [1]


# -- request parsing -----------------------------------------------------------------------------


async def test_fetch_request_is_read_the_serde_way(broker):
    box = await filled(broker, "normal", "normal")
    body = {
        "group_name": None,  # null: absent
        "deliver": "earliest",
        "from_time": None,
        "from_id": None,
        "force_deliver": None,
        "config": None,
        "colour": "red",  # unknown: ignored
    }
    reply = await broker.raw(p.fetch_subject(box), p.encode(body))
    assert [m["msg_id"] for m in reply["messages"]] == [0, 1]
    body["config"] = {"num_msgs": None, "max_wait_ms": 0, "batch": 5}
    reply = await broker.raw(p.fetch_subject(box), p.encode(body))
    assert [m["msg_id"] for m in reply["messages"]] == [0, 1]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"", "EOF while parsing"),
        (b"{not json", ""),
        (b'{"deliver": "newest"}', "unknown variant `newest`"),
        (b'{"deliver": null}', ""),  # #[serde(default)] covers absent, not null
        (b'{"config": {"num_msgs": -1}}', "invalid value"),
        (b'{"config": {"num_msgs": 4294967296}}', "invalid value"),
        (b'{"from_id": "3"}', "invalid type"),
        (b'{"force_deliver": 1}', "invalid type"),
        (b'{"group_name": 5}', "invalid type"),
    ],
)
async def test_fetch_requests_serde_refuses(broker, body, error):
    box = await create(broker)
    reply = await broker.raw(p.fetch_subject(box), body)
    assert reply["error"], reply
    assert error in reply["error"], reply
    assert "messages" not in reply


@pytest.mark.parametrize(
    "deliver",
    [b"null", b"5", b"true", b"[]", b"{}", b'{"earliest":null,"latest":null}'],
)
async def test_a_deliver_neither_string_nor_variant_object_is_expected_value(broker, deliver):
    """serde_json reads an enum only from a string or a one-key object; anything else is
    ``expected value`` (serde_json de.rs ``deserialize_enum``). Issue #35: the bundled broker
    answered ``{"deliver":null}`` with ``invalid type: null, expected enum DeliverPolicy`` where
    RobustMQ answers ``expected value at line 1 column 12``."""
    box = await create(broker)
    reply = await broker.raw(p.fetch_subject(box), b'{"deliver":' + deliver + b"}")
    assert reply["error"].startswith("expected value"), reply


async def test_a_deliver_object_is_read_variant_first(broker):
    """The variant's name is read before its value: an unknown one is the error."""
    box = await create(broker)
    reply = await broker.raw(p.fetch_subject(box), b'{"deliver":{"newest":1}}')
    assert reply["error"].startswith("unknown variant `newest`"), reply
    reply = await broker.raw(p.fetch_subject(box), b'{"deliver":{"earliest":1}}')
    assert reply["error"].startswith("invalid type: integer `1`, expected unit"), reply


async def test_an_empty_fetch_waits_then_answers_empty(broker):
    box = await create(broker)
    assert await fetch(broker, box, max_wait_ms=5) == []
    assert await fetch(broker, box, group_name="g", max_wait_ms=3) == []
    assert await fetch(broker, box, num_msgs=0, max_wait_ms=2) == []


# -- missing mailboxes ---------------------------------------------------------------------------


async def test_fetch_of_a_missing_mailbox_is_topic_not_found(broker):
    # storage-adapter driver.rs build_driver: CommonError::TopicNotFoundInBrokerCache
    missing = "Tenant default topic 'no.such.box' not found in broker cache"
    assert (await fetch_reply(broker, "no.such.box")) == {"error": missing}
    assert (await fetch_reply(broker, "no.such.box", {"group_name": "g"})) == {"error": missing}
    box = await filled(broker, "normal")
    await acked(broker, box, "g", 0)  # the group exists: the forced path fails the same way
    forced = {"group_name": "g", "force_deliver": True}
    assert (await fetch_reply(broker, "no.such.box", forced)) == {"error": missing}


async def test_fetch_of_an_expired_mailbox_still_reads_its_log(broker):
    # mail_gc.rs removes the metadata only; FETCH never looks at it (fetch.rs reads the topic)
    box = await create(broker, ttl=30)
    await send(broker, box)
    broker.clock.advance(30)
    assert await fetch(broker, box, deliver="earliest") == [0]


async def test_fetch_of_a_mailbox_never_created_is_topic_not_found(broker):
    reply = await fetch_reply(broker, "never.created", {"deliver": "earliest"})
    assert reply == {"error": "Tenant default topic 'never.created' not found in broker cache"}


# -- each lane read is capped at 30 MiB of payload (fetch.rs max_size, rocksdb read.rs) ----------


@pytest.fixture
def small_lane_reads(monkeypatch, broker):
    """RobustMQ's 30 MiB per read, made 2500 bytes: the same rule at a size tests can fill."""
    if broker.transport == "robustmq":
        pytest.skip("makes the bundled broker's 30 MiB read cap small; RobustMQ's is fixed")
    monkeypatch.setattr(p, "LANE_READ_BYTES", 2500)


async def test_each_lane_read_stops_before_the_message_that_would_pass_the_byte_cap(
    broker, small_lane_reads
):
    # read.rs read_by_tag: a record is taken while the payload bytes read so far plus its own
    # stay within max_size; the first is always taken; the count limit is checked first
    box = await create(broker)
    sizes = {"critical": [1000, 1000, 500, 1], "urgent": [3000, 1], "normal": [1200, 1301, 5]}
    ids: dict[str, list[int]] = {}
    for priority, lane in sizes.items():
        ids[priority] = [await send(broker, box, b"c" * size, priority) for size in lane]
    # critical: 1000 + 1000 + 500 = 2500 is within the cap, the 1-byte message is not taken;
    # urgent: the first message is taken whatever its size; normal: 1200 + 1301 > 2500
    expected = ids["critical"][:3] + ids["urgent"][:1] + ids["normal"][:1]
    assert await fetch(broker, box, deliver="earliest") == expected
    assert await fetch(broker, box, group_name="g", deliver="earliest") == expected
    # the count still limits first: num_msgs 2 takes two criticals and reads no other lane
    assert await fetch(broker, box, deliver="earliest", num_msgs=2) == ids["critical"][:2]
    # bytes, not characters: 600 two-byte characters are 1200 bytes
    other = await create(broker)
    first = await send(broker, other, "é" * 600)
    second = await send(broker, other, "é" * 651)
    assert await fetch(broker, other, deliver="earliest") == [first]
    await broker.raw(p.delete_subject(other, first))
    assert await fetch(broker, other, deliver="earliest") == [second]


async def test_expired_and_deleted_messages_take_no_room_in_a_lane_read(broker, small_lane_reads):
    # read.rs skips missing and expired records before counting them
    box = await create(broker)
    gone = await send(broker, box, b"d" * 2000)
    await send(broker, box, b"t" * 2000, mq9_ttl="1")
    kept = [await send(broker, box, b"k" * 1200) for _ in range(3)]
    await broker.raw(p.delete_subject(box, gone))
    broker.clock.advance(2)
    assert await fetch(broker, box, deliver="earliest") == kept[:2]


async def test_query_reads_are_capped_like_lane_reads(broker, small_lane_reads):
    # query.rs reads with the same max_size: every tag read apiece, and a read without filter;
    # a key names one message, read without a cap
    box = await create(broker)
    a = [await send(broker, box, b"a" * 1000, mq9_tags="a") for _ in range(3)]
    b = [await send(broker, box, b"b" * 2000, mq9_tags="b") for _ in range(2)]
    keyed = await send(broker, box, b"k" * 3000, mq9_key="big")

    async def query(body: dict) -> list[int]:
        reply = await broker.raw(p.query_subject(box), p.encode(body))
        assert reply["error"] == "", reply
        return [m["msg_id"] for m in reply["messages"]]

    assert await query({}) == a[:2]
    assert await query({"since": 0}) == a[:2]
    assert await query({"tags": ["a", "b"]}) == a[:2] + b[:1]
    assert await query({"key": "big"}) == [keyed]


# -- answers (our choice: a NATS reply can be no larger than the server's max_payload) -----------


async def test_max_payload_bounds_a_message_and_max_answer_an_answer(broker):
    """``max_payload`` is the largest message SEND takes (as it travels in an answer), not the
    largest answer; in-process nothing bounds an answer, on NATS the server's max_payload."""
    set_limits(broker, max_payload=2000)
    box = await create(broker)
    reply = await broker.raw(p.send_subject(box), b"z" * 2000)
    assert reply["error"].startswith("message too large: "), reply
    for i in range(12):
        await send(broker, box, bytes([65 + i]) * 1000)
    reply = await fetch_reply(broker, box, {"group_name": "g", "deliver": "earliest"})
    assert [m["msg_id"] for m in reply["messages"]] == list(range(12))
    assert len(p.encode(reply)) > 12_000
    # a message must travel alone in an answer: under a smaller max_answer it is refused
    set_limits(broker, max_payload=2000, max_answer=1100)
    reply = await broker.raw(p.send_subject(box), b"z" * 1000)
    assert reply["error"].startswith("message too large: "), reply
    assert "carry at most 1100 bytes per message" in reply["error"], reply


async def test_a_group_fetch_too_large_for_one_answer_is_refused_with_what_fits(broker):
    """(our choice) a group's answer is whole or refused: a reader judges from the lanes how
    far it may ack, and a cut lane would look finished."""
    set_limits(broker, max_answer=4096)
    box = await create(broker)
    for i in range(12):
        await send(broker, box, bytes([65 + i]) * 1000)
    reply = await fetch_reply(broker, box, {"group_name": "g", "deliver": "earliest"})
    fit = from_reply(reply["error"]).fits
    assert fit == 3, reply
    assert "above the 4096 bytes this broker's answers carry" in reply["error"], reply
    handed: list[int] = []
    for _ in range(12):
        body = {"group_name": "g", "deliver": "earliest", "config": {"num_msgs": fit}}
        reply = await fetch_reply(broker, box, body)
        assert len(p.encode(reply)) <= 4096
        batch = [m["msg_id"] for m in reply["messages"]]
        if not batch:
            break
        handed.extend(batch)
        await acked(broker, box, "g", batch[-1])
    assert handed == list(range(12))


async def test_what_fits_counts_every_lane_the_smaller_request_reads(broker):
    """Asked for n, each lane read gives up to n: 2 critical messages and n normal ones. The
    broker answers the largest n whose whole answer fits, not how many of this answer fit."""
    box = await create(broker)
    for i in range(10):
        await send(broker, box, bytes([65 + i]) * 1000, "critical" if i in (4, 8) else None)
    one = len(p.encode({"error": "", "messages": []})) + 1100  # an answer of one message, about
    set_limits(broker, max_answer=one + 5 * 1100)  # about five messages fit, not six
    reply = await fetch_reply(broker, box, {"group_name": "g", "deliver": "earliest"})
    fit = from_reply(reply["error"]).fits
    assert fit == 3, reply  # 2 critical + 3 normal; asked for 5 the broker would send 7
    body = {"group_name": "g", "deliver": "earliest", "config": {"num_msgs": fit}}
    assert await fetch(broker, box, **body) == [4, 8, 0, 1, 2]


async def test_a_fetch_without_a_group_is_cut_to_fit_the_answer_limit(broker):
    set_limits(broker, max_answer=4096)
    box = await create(broker)
    for i in range(12):
        await send(broker, box, bytes([65 + i]) * 1000)
    reply = await fetch_reply(broker, box, {"deliver": "earliest"})
    assert len(p.encode(reply)) <= 4096
    assert [m["msg_id"] for m in reply["messages"]] == [0, 1, 2]


async def test_big_messages_over_real_nats_default_limits(broker):
    """With the default 1 MiB limits a backlog of big messages comes in several answers, and
    the largest message SEND accepts is delivered (no answer NATS would refuse)."""
    box = await create(broker)
    for _ in range(6):
        await send(broker, box, b"b" * 300_000)
    largest = None
    for size in (1_000_000, 900_000, 780_000, 700_000):
        reply = await broker.raw(p.send_subject(box), b"L" * size)
        if reply["error"]:
            assert "message too large" in reply["error"], reply
            continue
        largest = size
        break
    assert largest is not None
    sizes = []
    for _ in range(7):
        body = {"group_name": "g", "deliver": "earliest", "config": {"num_msgs": 1}}
        reply = await fetch_reply(broker, box, body)
        if not reply["messages"]:
            break
        assert len(json.dumps(reply)) <= p.DEFAULT_MAX_PAYLOAD
        sizes.extend(len(m["payload"]) for m in reply["messages"])
        await acked(broker, box, "g", reply["messages"][-1]["msg_id"])
    assert sorted(sizes) == sorted([300_000] * 6 + [largest])
