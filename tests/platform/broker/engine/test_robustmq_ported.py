"""RobustMQ's own mq9 integration tests, ported to run against the bundled broker.

Source: RobustMQ at commit 8bd49dc, ``tests/tests/mq9/*.rs`` (21 ``#[tokio::test]`` functions).
Each Rust test function is mirrored by exactly one Python test of the same name (prefixed with
``test_`` where the Rust name lacks it): it sends the same subjects, headers and JSON bodies
(serde_json writes every ``None`` field as ``null``, so the bodies here carry those nulls) and
asserts what the Rust test asserts, no more and no less. Replies are read the way serde reads
them into the ``mq9_core::protocol`` reply structs: a reply serde could not parse fails the test.

Every test runs over both transports of the ``broker`` fixture (in-process and a real
nats-server). Sleeps that wait for a TTL, a delay or a mailbox expiry become
``broker.clock.advance``; sleeps that only wait for raft/cache propagation are dropped. Checks
that RobustMQ makes through its admin HTTP API are made over the wire instead (see the test's
docstring).

Rust file::function                                  Python test
agent_core.rs::mq9_agent_register_unregister_test   test_mq9_agent_register_unregister_test
agent_discover.rs::mq9_agent_discover_text_test     test_mq9_agent_discover_text_test
agent_discover.rs::mq9_agent_discover_semantic_test test_mq9_agent_discover_semantic_test
mq9_core.rs::test_mailbox_query                     test_mailbox_query
mq9_core.rs::test_mailbox_send_fetch_base           test_mailbox_send_fetch_base
mq9_delay.rs::test_delay_message                    test_delay_message
mq9_fetch.rs::test_fetch_earliest                   test_fetch_earliest
mq9_fetch.rs::test_fetch_latest                     test_fetch_latest
mq9_fetch.rs::test_fetch_from_time                  test_fetch_from_time
mq9_fetch.rs::test_fetch_from_id                    test_fetch_from_id
mq9_fetch.rs::test_fetch_num_msgs_limit             test_fetch_num_msgs_limit
mq9_fetch.rs::test_fetch_two_groups_independent     test_fetch_two_groups_independent
mq9_fetch.rs::test_fetch_force_deliver              test_fetch_force_deliver
mq9_mail.rs::mq9_mail_test                          test_mq9_mail_test
mq9_mail.rs::mq9_mail_name_test                     test_mq9_mail_name_test
mq9_msg_id.rs::test_msg_key_dedup                   test_msg_key_dedup
mq9_msg_id.rs::test_msg_key_independent             test_msg_key_independent
mq9_msg_tags.rs::test_msg_tags_query                test_msg_tags_query
mq9_msg_tags.rs::test_untagged_messages_excluded    test_untagged_messages_excluded
mq9_msg_ttl.rs::test_msg_ttl                        test_msg_ttl
mq9_priority.rs::test_priority                      test_priority
"""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.slow

ROBUSTMQ_COMMIT = "8bd49dc"

# -- subjects (mq9_core::command::Mq9Command::to_subject) --------------------------------------

PREFIX = "$mq9.AI"
MAILBOX_CREATE = f"{PREFIX}.MAILBOX.CREATE"
AGENT_REGISTER = f"{PREFIX}.AGENT.REGISTER"
AGENT_UNREGISTER = f"{PREFIX}.AGENT.UNREGISTER"
AGENT_DISCOVER = f"{PREFIX}.AGENT.DISCOVER"


def msg_send(mail_address: str) -> str:
    return f"{PREFIX}.MSG.SEND.{mail_address}"


def msg_fetch(mail_address: str) -> str:
    return f"{PREFIX}.MSG.FETCH.{mail_address}"


def msg_ack(mail_address: str) -> str:
    return f"{PREFIX}.MSG.ACK.{mail_address}"


def msg_query(mail_address: str) -> str:
    return f"{PREFIX}.MSG.QUERY.{mail_address}"


# -- request bodies, as serde_json::to_string writes the Rust structs --------------------------


def unique_id() -> str:
    """Stands in for common_base::uuid::unique_id (a 20-character xid)."""
    return uuid.uuid4().hex[:20]


def to_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def mailbox_create_req(name: str | None, ttl: int | None = None) -> bytes:
    return to_json({"name": name, "ttl": ttl, "desc": None})


def fetch_config(num_msgs: int | None) -> dict:
    return {"num_msgs": num_msgs, "max_wait_ms": None}


def msg_fetch_req(
    group_name: str | None,
    deliver: str,
    *,
    from_time: int | None = None,
    from_id: int | None = None,
    force_deliver: bool | None = None,
    config: dict | None = None,
) -> bytes:
    return to_json(
        {
            "group_name": group_name,
            "deliver": deliver,
            "from_time": from_time,
            "from_id": from_id,
            "force_deliver": force_deliver,
            "config": config,
        }
    )


def msg_ack_req(group_name: str, mail_address: str, msg_id: int) -> bytes:
    return to_json({"group_name": group_name, "mail_address": mail_address, "msg_id": msg_id})


def msg_query_req(*, key: str | None = None, tags: list[str] | None = None) -> bytes:
    return to_json({"key": key, "tags": tags, "since": None, "limit": None})


def agent_discover_req(*, text: str | None = None, semantic: str | None = None) -> bytes:
    return to_json({"text": text, "semantic": semantic, "limit": None, "page": None})


# The a2a_types::AgentCard the Rust tests build. a2a-types 0.2.0 is generated by prost and
# pbjson from the A2A v1 a2a.proto with pbjson_build's default settings: camelCase names, fields
# in proto declaration order, and every field left at its proto default omitted (empty strings,
# empty lists and maps, None). Optional scalars that are Some (the capability flags, all
# Some(false)) are written. Not verified against a compiled crate: the exact field set rests on
# that reading of pbjson (provider, documentationUrl, securitySchemes, securityRequirements,
# signatures, iconUrl, tenant, extensions and empty skill lists are therefore absent).
def a2a_agent_card(
    name: str,
    description: str,
    skill_id: str,
    skill_name: str,
    skill_description: str,
    tags: list[str],
    examples: list[str],
) -> dict:
    skill: dict[str, Any] = {
        "id": skill_id,
        "name": skill_name,
        "description": skill_description,
        "tags": tags,
    }
    if examples:
        skill["examples"] = examples
    return {
        "name": name,
        "description": description,
        "supportedInterfaces": [
            {
                "url": "https://example.com/a2a/v1",
                "protocolBinding": "JSONRPC",
                "protocolVersion": "0.3",
            }
        ],
        "version": "1.0.0",
        "capabilities": {
            "streaming": False,
            "pushNotifications": False,
            "extendedAgentCard": False,
        },
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [skill],
    }


def agent_register_req(name: str, card: dict) -> bytes:
    card_text = json.dumps(card, separators=(",", ":"), ensure_ascii=False)
    return to_json({"name": name, "payload": card_text})


def agent_unregister_req(name: str) -> bytes:
    return to_json({"name": name})


# -- replies, read as serde reads them into mq9_core::protocol ---------------------------------
# ``error: String`` is required in every reply (checked by ``broker.raw``); the other fields
# are #[serde(default)], so a missing one reads as its default. A value of the wrong type is a
# parse failure, which panics the Rust test.


def _is_u64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**64


def _is_i64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


def mail_address_of(reply: dict) -> str:
    """MailboxCreateReply.mail_address."""
    value = reply.get("mail_address", "")
    assert isinstance(value, str), f"failed to parse reply, raw: {reply}"
    return value


def msg_id_of(reply: dict) -> int:
    """MsgSendReply.msg_id (i64)."""
    value = reply.get("msg_id", 0)
    assert _is_i64(value), f"failed to parse send reply, raw: {reply}"
    return value


def messages_of(reply: dict) -> list[dict]:
    """MsgFetchReply.messages / MsgQueryReply.messages: Vec<MsgItem>, each with msg_id: u64,
    payload: String, priority: String, header: Option<Vec<u8>>, create_time: u64."""
    items = reply.get("messages", [])
    assert isinstance(items, list), f"failed to parse reply, raw: {reply}"
    for item in items:
        header = item.get("header") if isinstance(item, dict) else None
        assert (
            isinstance(item, dict)
            and _is_u64(item.get("msg_id"))
            and isinstance(item.get("payload"), str)
            and isinstance(item.get("priority"), str)
            and _is_u64(item.get("create_time"))
            and (
                header is None
                or (isinstance(header, list) and all(_is_u64(b) and b < 256 for b in header))
            )
        ), f"failed to parse reply, raw: {reply}"
    return items


def agents_of(reply: dict) -> list:
    """AgentDiscoverReply.agents: Vec<serde_json::Value>."""
    agents = reply.get("agents", [])
    assert isinstance(agents, list), f"failed to parse reply, raw: {reply}"
    return agents


def agent_name_in_reply(reply: dict, name: str) -> bool:
    return any(isinstance(a, dict) and a.get("name") == name for a in agents_of(reply))


def payloads_of(reply: dict) -> list[str]:
    return [m["payload"] for m in messages_of(reply)]


# -- shared request helpers --------------------------------------------------------------------


async def create_mail(broker, name: str | None, ttl: int | None = None) -> dict:
    reply = await broker.raw(MAILBOX_CREATE, mailbox_create_req(name, ttl))
    mail_address_of(reply)
    return reply


async def send(broker, mail_address: str, payload: str, headers: dict | None = None) -> dict:
    reply = await broker.raw(msg_send(mail_address), payload.encode(), headers)
    msg_id_of(reply)
    return reply


async def query(broker, mail_address: str, body: bytes) -> dict:
    reply = await broker.raw(msg_query(mail_address), body)
    messages_of(reply)
    return reply


async def query_all(broker, mail_address: str) -> dict:
    return await query(broker, mail_address, b"")


async def fetch_raw(broker, mail_address: str, body: bytes) -> dict:
    reply = await broker.raw(msg_fetch(mail_address), body)
    messages_of(reply)
    return reply


async def fetch(broker, mail_address: str, group_name: str, num_msgs: int) -> dict:
    """The ``fetch`` helper of mq9_core/mq9_delay/mq9_msg_id/mq9_msg_ttl/mq9_priority."""
    body = msg_fetch_req(group_name, "earliest", config=fetch_config(num_msgs))
    return await fetch_raw(broker, mail_address, body)


async def ack(broker, mail_address: str, group_name: str, msg_id: int) -> dict:
    return await broker.raw(msg_ack(mail_address), msg_ack_req(group_name, mail_address, msg_id))


async def register_agent(broker, name: str, card: dict) -> dict:
    """REGISTER, then (on RobustMQ) the wait for the search index the Rust tests sleep for."""
    reply = await broker.raw(AGENT_REGISTER, agent_register_req(name, card))
    if reply.get("error") == "":
        await broker.search_settled(card["name"])
    return reply


async def unregister_agent(broker, name: str) -> dict:
    """UNREGISTER, then (on RobustMQ) the wait for its search row to go, as the Rust tests
    sleep for it."""
    reply = await broker.raw(AGENT_UNREGISTER, agent_unregister_req(name))
    await broker.search_settled(name, present=False)
    return reply


async def discover(broker, body: bytes) -> dict:
    reply = await broker.raw(AGENT_DISCOVER, body)
    agents_of(reply)
    return reply


# ==============================================================================================
# agent_core.rs
# ==============================================================================================


async def agents_named_like(broker, name: str) -> list[dict]:
    """The admin agent list filtered by name (a substring match), taken with AGENT.DISCOVER {}."""
    reply = await discover(broker, b"{}")
    assert reply["error"] == "", f"agent list failed: {reply['error']}"
    return [
        a
        for a in agents_of(reply)
        if isinstance(a, dict) and isinstance(a.get("name"), str) and name in a["name"]
    ]


async def test_mq9_agent_register_unregister_test(broker):
    """tests/tests/mq9/agent_core.rs::mq9_agent_register_unregister_test.

    RobustMQ lists agents through its admin HTTP API (AgentListReq with name = the agent name,
    a substring filter). That API is not part of mq9, so the list is taken over the wire with
    AGENT.DISCOVER and an empty body ``{}`` (every agent as {"name", "agent_info"}), filtered
    the same way. The propagation sleeps are dropped."""
    agent_name = f"test-agent-{uuid.uuid4().hex[:8]}"
    card = a2a_agent_card(
        agent_name,
        "RobustMQ test agent",
        "echo",
        "Echo",
        "Echoes the input back",
        ["echo"],
        [],
    )

    reply = await register_agent(broker, agent_name, card)
    assert reply["error"] == "", f"register failed: {reply['error']}"

    listed = await agents_named_like(broker, agent_name)
    assert len(listed) == 1, "expected 1 agent after register"
    assert listed[0]["name"] == agent_name

    unregister_reply = await unregister_agent(broker, agent_name)
    assert unregister_reply["error"] == "", f"unregister failed: {unregister_reply['error']}"

    listed_after = await agents_named_like(broker, agent_name)
    assert len(listed_after) == 0, "agent should be removed after unregister"


# ==============================================================================================
# agent_discover.rs
# ==============================================================================================


def make_payment_agent(name: str) -> dict:
    return a2a_agent_card(
        name,
        "Agent specialized in payment processing, invoices, and financial transactions",
        "payment",
        "Payment",
        "Process payments and generate invoices",
        ["payment", "invoice", "billing"],
        ["Pay invoice #1234"],
    )


async def test_mq9_agent_discover_text_test(broker):
    """tests/tests/mq9/agent_discover.rs::mq9_agent_discover_text_test.

    The sleeps waiting for raft and the full-text index are a wait for the index (on RobustMQ)."""
    agent_name = f"payment-agent-{uuid.uuid4().hex[:8]}"
    card = make_payment_agent(agent_name)

    reply = await register_agent(broker, agent_name, card)
    assert reply["error"] == "", f"register failed: {reply['error']}"

    found = await discover(broker, agent_discover_req(text="payment invoice"))
    assert found["error"] == "", f"discover error: {found['error']}"
    assert agent_name_in_reply(found, agent_name), "agent not found by text search"

    unregister_reply = await unregister_agent(broker, agent_name)
    assert unregister_reply["error"] == "", f"unregister failed: {unregister_reply['error']}"

    gone = await discover(broker, agent_discover_req(text="payment invoice"))
    assert gone["error"] == "", f"discover error: {gone['error']}"
    assert not agent_name_in_reply(gone, agent_name), "agent should not be found after unregister"


async def test_mq9_agent_discover_semantic_test(broker):
    """tests/tests/mq9/agent_discover.rs::mq9_agent_discover_semantic_test.

    The sleeps waiting for raft and the vector index are a wait for the index (on RobustMQ)."""
    agent_name = f"payment-agent-{uuid.uuid4().hex[:8]}"
    card = make_payment_agent(agent_name)

    reply = await register_agent(broker, agent_name, card)
    assert reply["error"] == "", f"register failed: {reply['error']}"

    query = "process a payment and generate invoice"
    found = await discover(broker, agent_discover_req(semantic=query))
    assert found["error"] == "", f"discover error: {found['error']}"
    assert agent_name_in_reply(found, agent_name), "agent not found by semantic search"

    unregister_reply = await unregister_agent(broker, agent_name)
    assert unregister_reply["error"] == "", f"unregister failed: {unregister_reply['error']}"

    gone = await discover(broker, agent_discover_req(semantic=query))
    assert gone["error"] == "", f"discover error: {gone['error']}"
    assert not agent_name_in_reply(gone, agent_name), "agent should not be found after unregister"


# ==============================================================================================
# mq9_core.rs
# ==============================================================================================


async def test_mailbox_query(broker):
    """tests/tests/mq9/mq9_core.rs::test_mailbox_query.

    The 3 s sleep after creating the mailbox (propagation) is dropped."""
    fake_id = f"nonexistent{unique_id()}"
    reply = await send(broker, fake_id, "hello")
    assert reply["error"] != "", "expected an error reply"
    assert "does not exist" in reply["error"], (
        f"expected 'does not exist' in error, got: {reply['error']}"
    )

    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"unexpected error: {reply['error']}"
    mail_address = mail_address_of(reply)
    assert mail_address != "", "mail_address should not be empty"

    sent_payloads = []
    for i in range(10):
        payload = f"message-{i}-{unique_id()}"
        reply = await send(broker, mail_address, payload)
        assert reply["error"] == "", f"msg {i}: unexpected error: {reply['error']}"
        assert msg_id_of(reply) > 0 or i == 0, "msg_id should be a valid offset"
        sent_payloads.append(payload)

    reply = await query_all(broker, mail_address)
    assert reply["error"] == "", f"unexpected error: {reply['error']}"
    messages = messages_of(reply)
    assert len(messages) == 10, f"expected 10 messages, got {len(messages)}"
    for sent in sent_payloads:
        assert any(m["payload"] == sent for m in messages), (
            f"payload '{sent}' not found in query reply"
        )


async def test_mailbox_send_fetch_base(broker):
    """tests/tests/mq9/mq9_core.rs::test_mailbox_send_fetch_base.

    The 3 s sleep after creating the mailbox (propagation) is dropped. The last FETCH finds
    nothing, so the broker waits its default max_wait_ms (500 ms) in real time."""
    group_name = f"grp-{unique_id()}"

    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"create mail error: {reply['error']}"
    mail_address = mail_address_of(reply)

    sent_payloads = []
    for i in range(10):
        payload = f"fetch-msg-{i}-{unique_id()}"
        reply = await send(broker, mail_address, payload)
        assert reply["error"] == "", f"pub {i}: {reply['error']}"
        sent_payloads.append(payload)

    fetch_reply = await fetch(broker, mail_address, group_name, 10)
    assert fetch_reply["error"] == "", f"fetch error: {fetch_reply['error']}"
    messages = messages_of(fetch_reply)
    assert len(messages) == 10, f"expected 10 messages, got {len(messages)}"
    received = [m["payload"] for m in messages]
    for sent in sent_payloads:
        assert any(r == sent for r in received), f"payload '{sent}' not found in fetch reply"

    last_msg_id = messages[-1]["msg_id"]
    ack_reply = await ack(broker, mail_address, group_name, last_msg_id)
    assert ack_reply["error"] == "", f"ack error: {ack_reply['error']}"

    fetch_reply2 = await fetch(broker, mail_address, group_name, 10)
    assert fetch_reply2["error"] == "", f"second fetch error: {fetch_reply2['error']}"
    count = len(messages_of(fetch_reply2))
    assert count == 0, f"expected 0 messages after ack, got {count}"


# ==============================================================================================
# mq9_delay.rs
# ==============================================================================================


async def test_delay_message(broker):
    """tests/tests/mq9/mq9_delay.rs::test_delay_message.

    The 3 s propagation sleep is dropped; the DELAY_SECS + 5 s wait for the delay to pass is
    ``broker.clock.advance(20)``."""
    group_name = f"grp-{unique_id()}"
    delay_secs = 15

    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"create mail error: {reply['error']}"
    mail_address = mail_address_of(reply)

    payload = f"delayed-msg-{unique_id()}"
    send_reply = await send(broker, mail_address, payload, {"mq9-delay": str(delay_secs)})
    assert send_reply["error"] == "", f"send error: {send_reply['error']}"
    assert msg_id_of(send_reply) == -1, "expected msg_id=-1 for delay message"

    query_before = await query_all(broker, mail_address)
    assert query_before["error"] == "", f"query error: {query_before['error']}"
    count = len(messages_of(query_before))
    assert count == 0, f"expected 0 messages during delay window, got {count}"

    fetch_before = await fetch(broker, mail_address, group_name, 10)
    assert fetch_before["error"] == "", f"fetch error: {fetch_before['error']}"
    count = len(messages_of(fetch_before))
    assert count == 0, f"expected 0 messages via fetch during delay window, got {count}"

    broker.clock.advance(delay_secs + 5)

    query_after = await query_all(broker, mail_address)
    assert query_after["error"] == "", f"query error: {query_after['error']}"
    messages = messages_of(query_after)
    assert len(messages) == 1, f"expected 1 message after delay, got {len(messages)}"
    assert messages[0]["payload"] == payload, (
        f"payload mismatch: expected '{payload}', got '{messages[0]['payload']}'"
    )

    fetch_after = await fetch(broker, mail_address, group_name, 10)
    assert fetch_after["error"] == "", f"fetch error: {fetch_after['error']}"
    messages = messages_of(fetch_after)
    assert len(messages) == 1, f"expected 1 message via fetch after delay, got {len(messages)}"
    assert messages[0]["payload"] == payload, (
        f"fetch payload mismatch: expected '{payload}', got '{messages[0]['payload']}'"
    )


# ==============================================================================================
# mq9_fetch.rs: its helpers assert that every reply carries no error
# ==============================================================================================


async def create_mailbox(broker) -> str:
    """mq9_fetch.rs::create_mailbox, without its 3 s propagation sleep."""
    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"create mail error: {reply['error']}"
    return mail_address_of(reply)


async def send_msg(broker, mail_address: str, payload: str) -> dict:
    reply = await send(broker, mail_address, payload)
    assert reply["error"] == "", f"send error: {reply['error']}"
    return reply


async def fetch_with(broker, mail_address: str, body: bytes) -> dict:
    reply = await fetch_raw(broker, mail_address, body)
    assert reply["error"] == "", f"fetch error: {reply['error']}"
    return reply


async def fetch_earliest(broker, mail_address: str, group_name: str, num_msgs: int | None):
    config = None if num_msgs is None else fetch_config(num_msgs)
    return await fetch_with(
        broker, mail_address, msg_fetch_req(group_name, "earliest", config=config)
    )


async def ack_ok(broker, mail_address: str, group_name: str, msg_id: int) -> None:
    reply = await ack(broker, mail_address, group_name, msg_id)
    assert reply["error"] == "", f"ack error: {reply['error']}"


async def test_fetch_earliest(broker):
    """tests/tests/mq9/mq9_fetch.rs::test_fetch_earliest.

    The last FETCH finds nothing and waits the default 500 ms in real time."""
    group = f"grp-{unique_id()}"
    mail_address = await create_mailbox(broker)

    for i in range(5):
        await send_msg(broker, mail_address, f"msg-{i}")

    reply = await fetch_earliest(broker, mail_address, group, None)
    messages = messages_of(reply)
    assert len(messages) == 5, f"expected 5, got {len(messages)}"
    for i, msg in enumerate(messages):
        assert msg["payload"] == f"msg-{i}", f"order mismatch at index {i}"

    await ack_ok(broker, mail_address, group, messages[-1]["msg_id"])

    reply = await fetch_earliest(broker, mail_address, group, None)
    count = len(messages_of(reply))
    assert count == 0, f"expected 0 after ack, got {count}"


async def test_fetch_latest(broker):
    """tests/tests/mq9/mq9_fetch.rs::test_fetch_latest."""
    group = f"grp-{unique_id()}"
    mail_address = await create_mailbox(broker)

    for i in range(5):
        await send_msg(broker, mail_address, f"msg-{i}")

    reply = await fetch_with(broker, mail_address, msg_fetch_req(group, "latest"))
    messages = messages_of(reply)
    assert len(messages) == 1, f"latest: expected 1, got {len(messages)}"
    assert messages[0]["payload"] == "msg-4", "latest: wrong payload"


async def test_fetch_from_time(broker):
    """tests/tests/mq9/mq9_fetch.rs::test_fetch_from_time.

    The Rust test sleeps 2 s, takes now_second() as the cut, sleeps 1 s more and sends the
    late batch; here the clock is advanced by the same amounts and the cut read from it."""
    group = f"grp-{unique_id()}"
    mail_address = await create_mailbox(broker)

    for i in range(5):
        await send_msg(broker, mail_address, f"early-{i}")

    broker.clock.advance(2)
    mid_ts = int(broker.clock())
    broker.clock.advance(1)

    for i in range(5):
        await send_msg(broker, mail_address, f"late-{i}")

    reply = await fetch_with(
        broker, mail_address, msg_fetch_req(group, "from_time", from_time=mid_ts)
    )
    messages = messages_of(reply)
    assert len(messages) == 5, f"from_time: expected 5, got {len(messages)}"
    for msg in messages:
        assert msg["payload"].startswith("late-"), f"from_time: unexpected '{msg['payload']}'"


async def test_fetch_from_id(broker):
    """tests/tests/mq9/mq9_fetch.rs::test_fetch_from_id."""
    group = f"grp-{unique_id()}"
    mail_address = await create_mailbox(broker)

    msg_ids = []
    for i in range(10):
        reply = await send_msg(broker, mail_address, f"msg-{i}")
        msg_ids.append(msg_id_of(reply) % 2**64)

    from_id = msg_ids[5]
    reply = await fetch_with(broker, mail_address, msg_fetch_req(group, "from_id", from_id=from_id))
    messages = messages_of(reply)
    assert len(messages) == 5, f"from_id: expected 5, got {len(messages)}"
    for msg in messages:
        assert msg["msg_id"] >= from_id, (
            f"from_id: msg_id {msg['msg_id']} is before from_id {from_id}"
        )


async def test_fetch_num_msgs_limit(broker):
    """tests/tests/mq9/mq9_fetch.rs::test_fetch_num_msgs_limit.

    The last FETCH finds nothing and waits the default 500 ms in real time."""
    group = f"grp-{unique_id()}"
    mail_address = await create_mailbox(broker)

    for i in range(9):
        await send_msg(broker, mail_address, f"msg-{i}")

    for page in ("page1", "page2", "page3"):
        messages = messages_of(await fetch_earliest(broker, mail_address, group, 3))
        assert len(messages) == 3, f"{page}: expected 3, got {len(messages)}"
        await ack_ok(broker, mail_address, group, messages[-1]["msg_id"])

    done = messages_of(await fetch_earliest(broker, mail_address, group, 3))
    assert len(done) == 0, f"done: expected 0, got {len(done)}"


async def test_fetch_two_groups_independent(broker):
    """tests/tests/mq9/mq9_fetch.rs::test_fetch_two_groups_independent.

    Group A's FETCH after its ACK finds nothing and waits the default 500 ms in real time."""
    group_a = f"grp-a-{unique_id()}"
    group_b = f"grp-b-{unique_id()}"
    mail_address = await create_mailbox(broker)

    for i in range(5):
        await send_msg(broker, mail_address, f"msg-{i}")

    ra = messages_of(await fetch_earliest(broker, mail_address, group_a, None))
    rb = messages_of(await fetch_earliest(broker, mail_address, group_b, None))
    assert len(ra) == 5, "group-a: expected 5"
    assert len(rb) == 5, "group-b: expected 5"

    await ack_ok(broker, mail_address, group_a, ra[-1]["msg_id"])

    ra2 = messages_of(await fetch_earliest(broker, mail_address, group_a, None))
    assert len(ra2) == 0, f"group-a after ack: expected 0, got {len(ra2)}"

    rb2 = messages_of(await fetch_earliest(broker, mail_address, group_b, None))
    assert len(rb2) == 5, f"group-b should still see 5, got {len(rb2)}"


async def test_fetch_force_deliver(broker):
    """tests/tests/mq9/mq9_fetch.rs::test_fetch_force_deliver.

    The FETCH after the ACK finds nothing and waits the default 500 ms in real time."""
    group = f"grp-{unique_id()}"
    mail_address = await create_mailbox(broker)

    for i in range(5):
        await send_msg(broker, mail_address, f"msg-{i}")

    messages = messages_of(await fetch_earliest(broker, mail_address, group, None))
    assert len(messages) == 5
    await ack_ok(broker, mail_address, group, messages[-1]["msg_id"])

    empty = messages_of(await fetch_earliest(broker, mail_address, group, None))
    assert len(empty) == 0, f"expected 0 after ack, got {len(empty)}"

    forced = messages_of(
        await fetch_with(broker, mail_address, msg_fetch_req(group, "earliest", force_deliver=True))
    )
    assert len(forced) == 5, f"force_deliver: expected 5, got {len(forced)}"


# ==============================================================================================
# mq9_mail.rs
# ==============================================================================================


async def test_mq9_mail_test(broker):
    """tests/tests/mq9/mq9_mail.rs::mq9_mail_test.

    RobustMQ lists the mailbox through its admin HTTP API (MailListReq with mail_address) and
    checks that exactly one mail matches, with that address, ttl == 30 and create_time > 0;
    after TTL + one 60 s GC cycle it checks that none matches. mq9 has no command that lists
    mailboxes, so existence is probed over the wire with MSG.SEND to the address: accepted
    while the mailbox exists, refused with "does not exist" (the text test_mailbox_query pins)
    once it is gone. The ttl and create_time checks have no wire equivalent and are left out.
    The 95 s wait is ``broker.clock.advance(95)``."""
    ttl = 30
    wait_after_ttl = ttl + 65

    reply = await create_mail(broker, unique_id().lower(), ttl)
    assert reply["error"] == "", f"unexpected error: {reply['error']}"
    mail_address = mail_address_of(reply)
    assert mail_address != "", "mail_address should not be empty"

    probe = await send(broker, mail_address, f"probe-{unique_id()}")
    assert probe["error"] == "", f"expected the mailbox to exist, got: {probe['error']}"

    broker.clock.advance(wait_after_ttl)

    probe_after = await send(broker, mail_address, f"probe-{unique_id()}")
    assert "does not exist" in probe_after["error"], (
        f"mail should be removed after TTL expiry, got: {probe_after}"
    )


async def test_mq9_mail_name_test(broker):
    """tests/tests/mq9/mq9_mail.rs::mq9_mail_name_test."""
    name = f"risk{unique_id().lower()}"
    reply = await create_mail(broker, name)
    assert reply["error"] == "", f"unexpected error: {reply['error']}"
    mail_address = mail_address_of(reply)
    assert mail_address.startswith(name), (
        f"mail_address '{mail_address}' should start with prefix '{name}'"
    )


# ==============================================================================================
# mq9_msg_id.rs
# ==============================================================================================


async def send_with_key(broker, mail_address: str, key: str, payload: str) -> dict:
    return await send(broker, mail_address, payload, {"mq9-key": key})


async def query_by_key(broker, mail_address: str, key: str) -> dict:
    return await query(broker, mail_address, msg_query_req(key=key))


async def test_msg_key_dedup(broker):
    """tests/tests/mq9/mq9_msg_id.rs::test_msg_key_dedup.

    The 3 s propagation sleep is dropped."""
    group_name = f"grp-{unique_id()}"

    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"create mail error: {reply['error']}"
    mail_address = mail_address_of(reply)

    key = f"dedup-key-{unique_id()}"
    last_payload = f"payload-last-{unique_id()}"

    for i in range(4):
        reply = await send_with_key(broker, mail_address, key, f"payload-{i}-{unique_id()}")
        assert reply["error"] == "", f"send {i} error: {reply['error']}"
    reply = await send_with_key(broker, mail_address, key, last_payload)
    assert reply["error"] == "", f"send last error: {reply['error']}"

    query_reply = await query_by_key(broker, mail_address, key)
    assert query_reply["error"] == "", f"query error: {query_reply['error']}"
    messages = messages_of(query_reply)
    assert len(messages) == 1, f"expected exactly 1 message for key, got {len(messages)}"
    assert messages[0]["payload"] == last_payload, (
        f"query: expected last payload, got '{messages[0]['payload']}'"
    )

    fetch_reply = await fetch(broker, mail_address, group_name, 10)
    assert fetch_reply["error"] == "", f"fetch error: {fetch_reply['error']}"
    messages = messages_of(fetch_reply)
    assert len(messages) == 1, f"expected exactly 1 message via fetch, got {len(messages)}"
    assert messages[0]["payload"] == last_payload, (
        f"fetch: expected last payload, got '{messages[0]['payload']}'"
    )


async def test_msg_key_independent(broker):
    """tests/tests/mq9/mq9_msg_id.rs::test_msg_key_independent.

    The 3 s propagation sleep is dropped."""
    group_name = f"grp-{unique_id()}"

    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"create mail error: {reply['error']}"
    mail_address = mail_address_of(reply)

    key_a = f"key-a-{unique_id()}"
    key_b = f"key-b-{unique_id()}"
    last_a = f"last-a-{unique_id()}"
    last_b = f"last-b-{unique_id()}"

    for i in range(2):
        r = await send_with_key(broker, mail_address, key_a, f"a-{i}")
        assert r["error"] == "", f"send a-{i}: {r['error']}"
        r = await send_with_key(broker, mail_address, key_b, f"b-{i}")
        assert r["error"] == "", f"send b-{i}: {r['error']}"
    r = await send_with_key(broker, mail_address, key_a, last_a)
    assert r["error"] == "", f"send last-a: {r['error']}"
    r = await send_with_key(broker, mail_address, key_b, last_b)
    assert r["error"] == "", f"send last-b: {r['error']}"

    qa = await query_by_key(broker, mail_address, key_a)
    assert qa["error"] == "", f"query key-a error: {qa['error']}"
    messages = messages_of(qa)
    assert len(messages) == 1, "key-a: expected 1 message"
    assert messages[0]["payload"] == last_a, "key-a: wrong payload"

    qb = await query_by_key(broker, mail_address, key_b)
    assert qb["error"] == "", f"query key-b error: {qb['error']}"
    messages = messages_of(qb)
    assert len(messages) == 1, "key-b: expected 1 message"
    assert messages[0]["payload"] == last_b, "key-b: wrong payload"

    fetch_reply = await fetch(broker, mail_address, group_name, 10)
    assert fetch_reply["error"] == "", f"fetch error: {fetch_reply['error']}"
    payloads = payloads_of(fetch_reply)
    assert len(payloads) == 2, f"expected 2 messages (one per key), got {len(payloads)}"
    assert last_a in payloads, "fetch missing last-a"
    assert last_b in payloads, "fetch missing last-b"


# ==============================================================================================
# mq9_msg_tags.rs
# ==============================================================================================


async def send_with_tags(broker, mail_address: str, tags: list[str], payload: str) -> dict:
    return await send(broker, mail_address, payload, {"mq9-tags": ",".join(tags)})


async def query_by_tags(broker, mail_address: str, tags: list[str]) -> dict:
    return await query(broker, mail_address, msg_query_req(tags=tags))


async def test_msg_tags_query(broker):
    """tests/tests/mq9/mq9_msg_tags.rs::test_msg_tags_query.

    The 3 s propagation sleep is dropped."""
    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"create mail error: {reply['error']}"
    mail_address = mail_address_of(reply)

    payload_billing = f"billing-msg-{unique_id()}"
    payload_urgent = f"urgent-msg-{unique_id()}"
    payload_both = f"both-msg-{unique_id()}"

    r = await send_with_tags(broker, mail_address, ["billing"], payload_billing)
    assert r["error"] == "", f"send billing error: {r['error']}"
    r = await send_with_tags(broker, mail_address, ["urgent"], payload_urgent)
    assert r["error"] == "", f"send urgent error: {r['error']}"
    r = await send_with_tags(broker, mail_address, ["billing", "urgent"], payload_both)
    assert r["error"] == "", f"send both error: {r['error']}"

    reply = await query_by_tags(broker, mail_address, ["billing"])
    assert reply["error"] == "", f"query billing error: {reply['error']}"
    payloads = payloads_of(reply)
    assert len(payloads) == 2, f"expected 2 messages with tag 'billing', got {len(payloads)}"
    assert payload_billing in payloads, "missing billing-only message"
    assert payload_both in payloads, "missing billing+urgent message"

    reply = await query_by_tags(broker, mail_address, ["nonexistent-tag"])
    assert reply["error"] == "", f"query nonexistent error: {reply['error']}"
    count = len(messages_of(reply))
    assert count == 0, f"expected 0 messages for unknown tag, got {count}"


async def test_untagged_messages_excluded(broker):
    """tests/tests/mq9/mq9_msg_tags.rs::test_untagged_messages_excluded.

    The 3 s propagation sleep is dropped."""
    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"create mail error: {reply['error']}"
    mail_address = mail_address_of(reply)

    payload_tagged = f"tagged-{unique_id()}"
    payload_untagged = f"untagged-{unique_id()}"

    r = await send_with_tags(broker, mail_address, ["vip"], payload_tagged)
    assert r["error"] == "", f"send tagged error: {r['error']}"

    r = await send(broker, mail_address, payload_untagged)
    assert r["error"] == "", f"send untagged error: {r['error']}"

    reply = await query_by_tags(broker, mail_address, ["vip"])
    assert reply["error"] == "", f"query vip error: {reply['error']}"
    messages = messages_of(reply)
    assert len(messages) == 1, f"expected 1 message with tag 'vip', got {len(messages)}"
    assert messages[0]["payload"] == payload_tagged, "wrong payload returned for tag query"

    reply = await query_by_tags(broker, mail_address, ["wrong-tag"])
    assert reply["error"] == "", f"query wrong-tag error: {reply['error']}"
    count = len(messages_of(reply))
    assert count == 0, f"expected 0 messages for wrong tag, got {count}"


# ==============================================================================================
# mq9_msg_ttl.rs
# ==============================================================================================


async def test_msg_ttl(broker):
    """tests/tests/mq9/mq9_msg_ttl.rs::test_msg_ttl.

    The 3 s propagation sleep is dropped; the TTL_SECS + 5 s wait for the message to expire is
    ``broker.clock.advance(20)``. The last FETCH finds nothing and waits the default 500 ms in
    real time."""
    group_name = f"grp-{unique_id()}"
    ttl_secs = 15

    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"create mail error: {reply['error']}"
    mail_address = mail_address_of(reply)

    payload = f"ttl-msg-{unique_id()}"
    send_reply = await send(broker, mail_address, payload, {"mq9-ttl": str(ttl_secs)})
    assert send_reply["error"] == "", f"send error: {send_reply['error']}"
    assert msg_id_of(send_reply) >= 0, "expected valid msg_id"

    query_before = await query_all(broker, mail_address)
    assert query_before["error"] == "", f"query error: {query_before['error']}"
    messages = messages_of(query_before)
    assert len(messages) == 1, f"expected 1 message before TTL expiry, got {len(messages)}"
    assert messages[0]["payload"] == payload, (
        f"payload mismatch before TTL: expected '{payload}', got '{messages[0]['payload']}'"
    )

    fetch_before = await fetch(broker, mail_address, group_name, 10)
    assert fetch_before["error"] == "", f"fetch error: {fetch_before['error']}"
    count = len(messages_of(fetch_before))
    assert count == 1, f"expected 1 message via fetch before TTL expiry, got {count}"

    broker.clock.advance(ttl_secs + 5)

    query_after = await query_all(broker, mail_address)
    assert query_after["error"] == "", f"query error: {query_after['error']}"
    count = len(messages_of(query_after))
    assert count == 0, f"expected 0 messages after TTL expiry, got {count}"

    fetch_after = await fetch(broker, mail_address, group_name, 10)
    assert fetch_after["error"] == "", f"fetch error: {fetch_after['error']}"
    count = len(messages_of(fetch_after))
    assert count == 0, f"expected 0 messages via fetch after TTL expiry, got {count}"


# ==============================================================================================
# mq9_priority.rs
# ==============================================================================================


def priority_rank(payload: str) -> int:
    if "[critical]" in payload or "critical-" in payload:
        return 0
    if "[urgent]" in payload or "urgent-" in payload:
        return 1
    return 2


async def test_priority(broker):
    """tests/tests/mq9/mq9_priority.rs::test_priority.

    The 3 s propagation sleep is dropped."""
    group_name = f"grp-{unique_id()}"

    reply = await create_mail(broker, f"test{unique_id().lower()}")
    assert reply["error"] == "", f"create mail error: {reply['error']}"
    mail_address = mail_address_of(reply)

    msgs = [
        ("normal-1", "normal"),
        ("critical-1", "critical"),
        ("urgent-1", "urgent"),
        ("normal-2", "normal"),
        ("critical-2", "critical"),
        ("urgent-2", "urgent"),
        ("normal-3", "normal"),
        ("critical-3", "critical"),
        ("urgent-3", "urgent"),
        ("normal-4", "normal"),
    ]
    for payload, priority in msgs:
        tag = f"[{priority}] {payload}-{unique_id()}"
        reply = await send(broker, mail_address, tag, {"mq9-priority": priority})
        assert reply["error"] == "", f"pub '{payload}' error: {reply['error']}"

    fetch_reply = await fetch(broker, mail_address, group_name, 10)
    assert fetch_reply["error"] == "", f"fetch error: {fetch_reply['error']}"
    received = payloads_of(fetch_reply)
    assert len(received) == 10, f"expected 10 messages, got {len(received)}"

    for first, second in itertools.pairwise(received):
        rank_a, rank_b = priority_rank(first), priority_rank(second)
        assert rank_a <= rank_b, (
            f"priority order violated: '{first}' (rank {rank_a}) came before "
            f"'{second}' (rank {rank_b})"
        )
