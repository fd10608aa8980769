"""PROTOCOL.md conformance for mailboxes and messages: CREATE, SEND and its headers, TTLs,
delays, keys, QUERY and DELETE, with the exact error texts.

Every test runs over ``memory://`` and over a real nats-server serving the same engine (the
``client``/``broker`` fixtures). Time moves only through ``broker.clock``.
"""

from __future__ import annotations

import base64
import math
import uuid

import pytest

from langchain_mq9 import Mq9Error, Priority
from langchain_mq9 import protocol as p

T0 = 1_700_000_000  # where the fixture's ManualClock starts


def box_name(prefix: str = "box") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:12]}"




async def earliest(client, box: str) -> list:
    return await client.fetch(box, deliver="earliest", max_wait_ms=0)


# -- CREATE ------------------------------------------------------------------------------------


async def test_create_with_name_returns_that_name(client):
    name = box_name("team.alpha")
    assert await client.mailbox_create(name=name) == name
    assert await client.send(name, "hello") == 0


async def test_create_existing_name_fails_with_exact_text(client):
    name = box_name()
    await client.mailbox_create(name=name)
    with pytest.raises(Mq9Error) as caught:
        await client.mailbox_create(name=name)
    assert caught.value.message == f"mailbox {name} already exists"
    assert not caught.value.retryable


async def test_create_existing_name_fails_even_with_other_ttl(client):
    name = box_name()
    await client.mailbox_create(name=name, ttl=100)
    with pytest.raises(Mq9Error, match=f"^mailbox {name} already exists$"):
        await client.mailbox_create(name=name, ttl=0)


async def test_generated_addresses_are_valid_unique_and_random(client):
    addresses = [await client.mailbox_create() for _ in range(120)]
    assert len(set(addresses)) == len(addresses)
    for address in addresses:
        assert p.is_valid_address(address), address
        # the broker accepts it back as a mailbox
    await client.send(addresses[0], "x")
    # Estimate the randomness: positions that vary across the sample, each worth at most
    # log2(distinct characters seen there). 120 samples see all 16 hex digits almost surely.
    width = max(len(a) for a in addresses)
    bits = 0.0
    for index in range(width):
        seen = {a[index] if index < len(a) else "" for a in addresses}
        if len(seen) > 1:
            bits += math.log2(len(seen))
    assert bits >= 96, f"only about {bits:.0f} random bits in generated addresses"


async def test_create_via_raw_empty_body_generates_address(broker):
    reply = await broker.raw(p.MAILBOX_CREATE, b"")
    assert reply["error"] == ""
    assert p.is_valid_address(reply["mail_address"])
    reply = await broker.raw(p.MAILBOX_CREATE, b'{"name":"","ttl":0}')
    assert reply["error"] == "" and p.is_valid_address(reply["mail_address"])


async def test_create_raw_invalid_name_exact_text(broker):
    reply = await broker.raw(p.MAILBOX_CREATE, b'{"name":"Bad-Name"}')
    assert reply["error"] == "invalid mail_address: Bad-Name"


# -- mailbox TTL ---------------------------------------------------------------------------------


async def test_mailbox_ttl_expiry_then_every_command_says_does_not_exist(broker, client):
    name = box_name()
    await client.mailbox_create(name=name, ttl=60)
    msg_id = await client.send(name, "before")
    await client.fetch(name, group_name="g", deliver="earliest", max_wait_ms=0)
    broker.clock.advance(59)
    assert [m.payload for m in await client.query(name)] == [b"before"]

    broker.clock.advance(1)
    missing = f"mailbox {name} does not exist"
    calls = [
        client.send(name, "after"),
        client.fetch(name, max_wait_ms=0),
        client.fetch(name, group_name="g", max_wait_ms=0),
        client.ack(name, "g", msg_id),
        client.query(name),
        client.delete(name, msg_id),
    ]
    for call in calls:
        with pytest.raises(Mq9Error) as caught:
            await call
        assert caught.value.message == missing

    # the name is free again, and the new mailbox starts empty
    assert await client.mailbox_create(name=name) == name
    assert await earliest(client, name) == []
    assert await client.query(name) == []


async def test_mailbox_ttl_zero_never_expires(broker, client):
    name = await client.mailbox_create(ttl=0)
    await client.send(name, "kept")
    broker.clock.advance(10 * 365 * 24 * 3600)
    assert [m.payload for m in await client.query(name)] == [b"kept"]


async def test_never_created_mailbox_every_command_says_does_not_exist(client):
    name = box_name("nobody")
    missing = f"mailbox {name} does not exist"
    for call in (
        client.send(name, "x"),
        client.fetch(name, max_wait_ms=0),
        client.ack(name, "g", 0),
        client.query(name),
        client.delete(name, 0),
    ):
        with pytest.raises(Mq9Error) as caught:
            await call
        assert caught.value.message == missing


# -- SEND and message fields ------------------------------------------------------------------


async def test_msg_ids_start_at_zero_increase_and_are_never_reused(client):
    box = await client.mailbox_create()
    ids = [await client.send(box, f"m{i}") for i in range(4)]
    assert ids == [0, 1, 2, 3]
    await client.delete(box, 3)
    assert await client.send(box, "m4") == 4


async def test_payload_bytes_str_and_dict_arrive_exactly(client):
    box = await client.mailbox_create()
    binary = bytes(range(256))
    await client.send(box, binary)
    await client.send(box, "héllo ✓")
    await client.send(box, {"task": "summarize", "n": [1, 2]})
    await client.send(box, b"")
    messages = await earliest(client, box)
    assert messages[0].payload == binary
    assert messages[1].payload == "héllo ✓".encode()
    assert messages[1].text() == "héllo ✓"
    assert messages[2].json() == {"task": "summarize", "n": [1, 2]}
    assert messages[3].payload == b""


async def test_message_fields_on_the_wire(broker, client):
    box = await client.mailbox_create()
    broker.clock.advance(12.7)
    await client.send(box, b"\x00\xffdata", priority="urgent", key="k1", tags=["a", "b"])
    reply = await broker.raw(p.query_subject(box))
    assert reply["error"] == ""
    [wire] = reply["messages"]
    assert wire["msg_id"] == 0
    assert base64.b64decode(wire["payload"], validate=True) == b"\x00\xffdata"
    assert wire["priority"] == "urgent"
    assert wire["create_time"] == T0 + 12
    assert wire["key"] == "k1"
    assert wire["tags"] == ["a", "b"]
    [message] = await client.query(box)
    assert (message.priority, message.create_time, message.key, message.tags) == (
        Priority.URGENT, T0 + 12, "k1", ["a", "b"]
    )


async def test_send_reply_is_msg_id(broker, client):
    box = await client.mailbox_create()
    reply = await broker.raw(p.send_subject(box), b"payload")
    assert reply == {"error": "", "msg_id": 0}


async def test_priority_header_orders_fetch_fifo_within_priority(client):
    box = await client.mailbox_create()
    sent = [
        ("n1", Priority.NORMAL), ("c1", Priority.CRITICAL), ("u1", "urgent"),
        ("n2", "normal"), ("c2", "critical"), ("u2", Priority.URGENT), ("n3", "NORMAL"),
    ]
    for payload, priority in sent:
        await client.send(box, payload, priority=priority)
    messages = await earliest(client, box)
    assert [m.text() for m in messages] == ["c1", "c2", "u1", "u2", "n1", "n2", "n3"]
    assert [m.priority for m in messages] == [Priority.CRITICAL] * 2 + [Priority.URGENT] * 2 + [
        Priority.NORMAL
    ] * 3


async def test_priority_header_raw_values(broker, client):
    box = await client.mailbox_create()
    for value in ("critical", "Urgent", "normal"):
        reply = await broker.raw(p.send_subject(box), value.encode(), {"mq9-priority": value})
        assert reply["error"] == ""
    assert [m.priority for m in await earliest(client, box)] == [
        Priority.CRITICAL, Priority.URGENT, Priority.NORMAL
    ]
    reply = await broker.raw(p.send_subject(box), b"x", {"mq9-priority": "high"})
    assert reply["error"] == "invalid priority 'high': use normal, urgent or critical"
    assert len(await client.query(box)) == 3  # nothing stored by the refused SEND


async def test_tags_header_and_query_by_tags(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "ab", tags=["a", "b"])
    await client.send(box, "b", tags=["b"])
    await client.send(box, "none")
    await broker.raw(p.send_subject(box), b"raw", {"mq9-tags": " a , c ,,"})
    assert [m.text() for m in await client.query(box, tags=["b"])] == ["ab", "b"]
    assert [m.text() for m in await client.query(box, tags=["a", "b"])] == ["ab"]
    assert [m.text() for m in await client.query(box, tags=["a"])] == ["ab", "raw"]
    assert await client.query(box, tags=["zzz"]) == []
    [raw_message] = await client.query(box, tags=["c"])
    assert raw_message.tags == ["a", "c"]


async def test_message_ttl_expiry_invisible_to_fetch_and_query(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "short", ttl=5)
    await client.send(box, "forever")
    await client.send(box, "long", ttl=50)
    broker.clock.advance(4)
    assert [m.text() for m in await client.query(box)] == ["short", "forever", "long"]
    broker.clock.advance(1)
    assert [m.text() for m in await client.query(box)] == ["forever", "long"]
    assert [m.text() for m in await earliest(client, box)] == ["forever", "long"]
    assert [m.text() for m in await client.fetch(
        box, group_name="g", deliver="earliest", max_wait_ms=0
    )] == ["forever", "long"]
    broker.clock.advance(45)
    assert [m.text() for m in await client.query(box)] == ["forever"]
    assert [m.text() for m in await earliest(client, box)] == ["forever"]


async def test_message_ttl_independent_of_mailbox_ttl(broker, client):
    box = await client.mailbox_create(ttl=100)
    await client.send(box, "m", ttl=500)
    broker.clock.advance(99)
    assert len(await client.query(box)) == 1
    broker.clock.advance(1)
    with pytest.raises(Mq9Error, match="does not exist"):
        await client.query(box)


async def test_delayed_message_gets_id_when_visible(broker, client):
    box = await client.mailbox_create()
    assert await client.send(box, "first") == 0
    assert await client.send(box, "later", delay=10) == -1
    assert await client.send(box, "second") == 1
    assert [m.text() for m in await earliest(client, box)] == ["first", "second"]
    assert [m.text() for m in await client.query(box)] == ["first", "second"]
    broker.clock.advance(9)
    assert len(await client.query(box)) == 2
    broker.clock.advance(1)
    messages = await earliest(client, box)
    assert [(m.msg_id, m.text()) for m in messages] == [(0, "first"), (1, "second"), (2, "later")]
    assert messages[2].create_time == T0 + 10
    assert await client.send(box, "third") == 3


async def test_delayed_raw_reply_is_minus_one(broker, client):
    box = await client.mailbox_create()
    reply = await broker.raw(p.send_subject(box), b"x", {"mq9-delay": "30"})
    assert reply == {"error": "", "msg_id": -1}


async def test_delayed_message_keeps_priority_ttl_key_and_tags(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "n")
    await client.send(box, "d", delay=5, priority="critical", ttl=10, key="k", tags=["t"])
    broker.clock.advance(5)
    messages = await earliest(client, box)
    assert [m.text() for m in messages] == ["d", "n"]
    assert (messages[0].key, messages[0].tags) == ("k", ["t"])
    broker.clock.advance(9)
    assert len(await client.query(box)) == 2
    broker.clock.advance(1)  # TTL counts from when it became visible
    assert [m.text() for m in await client.query(box)] == ["n"]


async def test_delayed_message_is_handed_to_a_latest_group(broker, client):
    box = await client.mailbox_create()
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []
    await client.send(box, "d", delay=3)
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []
    broker.clock.advance(3)
    assert [m.text() for m in await client.fetch(box, group_name="g", max_wait_ms=0)] == ["d"]


async def test_key_replaces_older_message(client):
    box = await client.mailbox_create()
    assert await client.send(box, "v1", key="status") == 0
    assert await client.send(box, "other") == 1
    assert await client.send(box, "v2", key="status", priority="urgent") == 2
    assert [(m.msg_id, m.text()) for m in await earliest(client, box)] == [(2, "v2"), (1, "other")]
    assert [(m.msg_id, m.text()) for m in await client.query(box)] == [(1, "other"), (2, "v2")]
    [newest] = await client.query(box, key="status")
    assert (newest.msg_id, newest.text(), newest.key) == (2, "v2", "status")
    with pytest.raises(Mq9Error, match=r"^message not found$"):
        await client.delete(box, 0)


async def test_key_replacement_removes_a_leased_message_from_the_group(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "v1", key="k")
    [leased] = await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    assert leased.text() == "v1"
    await client.send(box, "v2", key="k")
    assert [m.text() for m in await client.fetch(box, group_name="g", max_wait_ms=0)] == ["v2"]
    broker.clock.advance(broker.engine.limits.ack_wait)  # both leases end; only v2 exists
    assert [m.text() for m in await client.fetch(box, group_name="g", max_wait_ms=0)] == ["v2"]


async def test_different_keys_do_not_replace_each_other(client):
    box = await client.mailbox_create()
    await client.send(box, "a", key="ka")
    await client.send(box, "b", key="kb")
    assert [m.text() for m in await client.query(box)] == ["a", "b"]


# -- QUERY ---------------------------------------------------------------------------------------


async def test_query_limit_is_newest_n_in_msg_id_order(client):
    box = await client.mailbox_create()
    for i, priority in enumerate(["critical", "normal", "urgent", "critical", "normal"]):
        await client.send(box, f"m{i}", priority=priority)
    assert [m.msg_id for m in await client.query(box, limit=3)] == [2, 3, 4]
    assert [m.msg_id for m in await client.query(box)] == [0, 1, 2, 3, 4]
    assert [m.msg_id for m in await client.query(box, limit=100)] == [0, 1, 2, 3, 4]


async def test_query_since_is_strictly_after(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "t0")
    broker.clock.advance(10)
    await client.send(box, "t10")
    broker.clock.advance(10)
    await client.send(box, "t20")
    assert [m.text() for m in await client.query(box, since=T0)] == ["t10", "t20"]
    assert [m.text() for m in await client.query(box, since=T0 + 10)] == ["t20"]
    assert [m.text() for m in await client.query(box, since=T0 - 1)] == ["t0", "t10", "t20"]
    assert await client.query(box, since=T0 + 20) == []


async def test_query_filters_combine(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "old-a", tags=["a"])
    broker.clock.advance(5)
    await client.send(box, "new-a1", tags=["a", "x"])
    await client.send(box, "new-b", tags=["b"])
    await client.send(box, "new-a2", tags=["a"], key="k")
    assert [m.text() for m in await client.query(box, tags=["a"], since=T0)] == [
        "new-a1", "new-a2"
    ]
    assert [m.text() for m in await client.query(box, tags=["a"], limit=2)] == [
        "new-a1", "new-a2"
    ]
    assert [m.text() for m in await client.query(box, tags=["a"], limit=1)] == ["new-a2"]
    assert [m.text() for m in await client.query(box, key="k", tags=["a"])] == ["new-a2"]
    assert await client.query(box, key="k", tags=["b"]) == []
    assert await client.query(box, key="nope") == []


async def test_query_never_moves_a_group_position_or_lease(broker, client):
    box = await client.mailbox_create()
    for i in range(3):
        await client.send(box, f"m{i}")
    first = await client.fetch(box, group_name="g", deliver="earliest", num_msgs=1, max_wait_ms=0)
    assert [m.msg_id for m in first] == [0]
    for _ in range(3):
        assert [m.msg_id for m in await client.query(box)] == [0, 1, 2]
        await client.query(box, limit=1)
    second = await client.fetch(box, group_name="g", num_msgs=10, max_wait_ms=0)
    assert [m.msg_id for m in second] == [1, 2]  # 0 still leased, position kept
    await client.ack(box, "g", 2)
    assert [m.msg_id for m in await client.query(box)] == [0, 1, 2]  # acked stays stored
    broker.clock.advance(broker.engine.limits.ack_wait)
    assert [m.msg_id for m in await client.fetch(box, group_name="g", max_wait_ms=0)] == [0]


async def test_query_does_not_create_a_group_position(client):
    box = await client.mailbox_create()
    await client.send(box, "old")
    await client.query(box)
    assert await client.fetch(box, group_name="g", max_wait_ms=0) == []  # latest: nothing old
    await client.send(box, "new")
    assert [m.text() for m in await client.fetch(box, group_name="g", max_wait_ms=0)] == ["new"]


async def test_query_raw_reply_shape(broker, client):
    box = await client.mailbox_create()
    reply = await broker.raw(p.query_subject(box), b"")
    assert reply == {"error": "", "messages": []}


# -- DELETE --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["plain", "team.a.inbox", "a.b.c.d.e.7"])
async def test_delete_message_in_dotted_address(broker, client, name):
    name = f"{name}.{uuid.uuid4().hex[:8]}"
    await client.mailbox_create(name=name)
    await client.send(name, "keep")
    await client.send(name, "drop")
    reply = await broker.raw(p.delete_subject(name, 1))
    assert reply == {"error": "", "deleted": True}
    assert [m.text() for m in await client.query(name)] == ["keep"]
    assert [m.text() for m in await earliest(client, name)] == ["keep"]
    with pytest.raises(Mq9Error) as caught:
        await client.delete(name, 1)
    assert caught.value.message == "message not found"
    await client.delete(name, 0)
    assert await client.query(name) == []


async def test_delete_never_existing_msg_id(client):
    box = await client.mailbox_create()
    await client.send(box, "x")
    for msg_id in (1, 99, 2**62):
        with pytest.raises(Mq9Error, match=r"^message not found$"):
            await client.delete(box, msg_id)


async def test_delete_a_leased_message_is_never_handed_out_again(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "a")
    await client.send(box, "b")
    leased = await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
    assert [m.text() for m in leased] == ["a", "b"]
    await client.delete(box, 0)
    broker.clock.advance(broker.engine.limits.ack_wait)
    assert [m.text() for m in await client.fetch(box, group_name="g", max_wait_ms=0)] == ["b"]


async def test_delete_of_an_expired_message_is_not_found(broker, client):
    box = await client.mailbox_create()
    await client.send(box, "x", ttl=1)
    broker.clock.advance(1)
    with pytest.raises(Mq9Error, match=r"^message not found$"):
        await client.delete(box, 0)


# -- many mailboxes stay separate -----------------------------------------------------------


async def test_mailboxes_are_independent(client):
    boxes = [await client.mailbox_create() for _ in range(3)]
    for index, box in enumerate(boxes):
        for n in range(index + 1):
            await client.send(box, f"{index}-{n}")
    for index, box in enumerate(boxes):
        messages = await client.query(box)
        assert [m.msg_id for m in messages] == list(range(index + 1))  # ids are per mailbox
        assert [m.text() for m in messages] == [f"{index}-{n}" for n in range(index + 1)]
