"""The official mq9 JavaScript SDK (robustmq/mq9 ``javascript/``) against ``mq9-dev-broker``.

Opt-in: it runs when a snapshot of robustmq/mq9 is on this machine (``MQ9_SDK_REPO`` names a
git directory or a checkout holding ``javascript/``; by default the mirror beside this checkout
that the project's tooling fetches), node and npm are installed and, for the first build, the
npm registry answers; otherwise it is skipped. The SDK is never copied into this repository:
its ``javascript/`` folder is taken from the snapshot, installed from its lock file
(``npm ci``) and compiled (``tsc``) once per snapshot commit in
``~/.cache/langchain-mq9/js-sdk/<commit>`` (``$XDG_CACHE_HOME`` if set), and reused by later
runs. An install that fails or takes over three minutes skips the module.

``testbed/support/interop_driver.mjs`` (our own code) calls every SDK operation against the bundled
broker nats_broker on a real nats-server and prints what each call returned or threw; the tests
here assert on that and on the broker's state. Where the SDK is wrong against RobustMQ, the
tests assert the breakage as it happens, so a fixed SDK (or a broker that drifted from
RobustMQ) shows up here; docs/protocol-differences.md §11 lists the same items:

* Payloads: ``decodeBase64`` reads RobustMQ's plain-text ``payload`` as base64 and never
  fails: characters outside the base64 alphabet are dropped, decoding stops at the first
  ``=``, a last lone character is lost. ``"plain text"`` arrives as 6 unrelated bytes,
  ``"héllo=wörld"`` as 3, and ``"n0"``, ``"n2"``, ``"j0"``… collapse to one byte each, so
  different messages look the same to the handler (FETCH, QUERY, ``consume``).
* ``fetch`` without ``groupName`` sends ``group_name: ""``, which RobustMQ reads as a real
  group named ``""`` shared by every JS client and every mailbox. Nothing moves it until an
  ACK of group ``""`` (from anyone); from then on these "stateless" fetches start after that
  ACK, and on every other mailbox they read from the first message whatever ``deliver``
  says. Before any ACK, the default ``deliver: "latest"`` hands out only the newest message.
* ``consume`` without ``groupName`` never acks: it hands out the newest message again and
  again, with no pause. With a group it acks each message in reply order, so a
  higher-priority message that came first is acked, the next acks rewind the group below it,
  and it is handed out twice.
* ``agentRegister`` refuses (locally) a card without ``mailbox``; a card with ``mailbox`` is
  no A2A card to RobustMQ (unknown key) → ``missing field `payload```. Only
  ``{name, mailbox, payload: <card JSON>}`` registers.
* ``agentReport`` refuses (locally) a report without ``mailbox``; RobustMQ needs ``name``
  (``missing field `name```) and a string ``report_info``.
* ``agentUnregister`` sends ``{mailbox}`` → ``missing field `name```, whatever it is given:
  the SDK cannot unregister an agent.
* Building: the lock file resolves every package on ``registry.npmmirror.com``; the install
  here passes ``--replace-registry-host=always`` to fetch the same tarballs from the
  configured registry.
"""

from __future__ import annotations

import base64
import json
import re
import uuid

import pytest

from testbed.support.js_sdk import drive

pytestmark = pytest.mark.slow

def _prefix() -> str:
    return f"js{uuid.uuid4().hex[:10]}"


def _value(results: dict, call: str):
    outcome = results[call]
    assert "error" not in outcome, f"{call}: {outcome}"
    return outcome["value"]


def _error(results: dict, call: str) -> str:
    outcome = results[call]
    assert outcome.get("type") == "Mq9Error", f"{call}: {outcome}"
    return outcome["error"]


def _ids(results: dict, call: str) -> list[tuple[int, str]]:
    return [(m["msgId"], m["priority"]) for m in _value(results, call)]


def _payloads(results: dict, call: str) -> dict[int, bytes]:
    return {m["msgId"]: bytes.fromhex(m["payload"]) for m in _value(results, call)}


_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_DIGITS = {c: i for i, c in enumerate(_ALPHABET)} | {"-": 62, "_": 63}


def _node_base64(text: str) -> bytes:
    """What Node's ``Buffer.from(text, "base64")`` (the SDK's ``decodeBase64``) makes of a
    text: other characters skipped, ``=`` ends it, 6 bits a character, whole bytes kept."""
    bits = ""
    for char in text:
        if char == "=":
            break
        if char in _DIGITS:
            bits += f"{_DIGITS[char]:06b}"
    return bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits) - 7, 8))


def _assert_garbled(results: dict, calls: list[str], sent: dict[int, str]) -> None:
    """Every message of those calls carries its text as Node decodes it from base64."""
    for call in calls:
        for msg_id, payload in _payloads(results, call).items():
            assert payload == _node_base64(sent[msg_id]), (call, msg_id)
            assert payload != sent[msg_id].encode(), (call, msg_id)


async def test_mailbox_create(js_sdk, nats_broker):
    prefix = _prefix()
    r = await drive(js_sdk, nats_broker.url, "mailbox", prefix)
    assert _error(r, "not_connected") == "Not connected \u2014 call connect() first"
    assert _value(r, "named") == f"{prefix}.inbox"
    assert _value(r, "named_ttl") == f"{prefix}.short"
    generated, again = _value(r, "generated"), _value(r, "generated_again")
    assert re.fullmatch("[0-9a-v]{20}", generated) and generated != again
    # ttl is sent only when given: without one a mailbox lives RobustMQ's default day
    ttls = [
        nats_broker.engine.mailboxes[a].ttl for a in (f"{prefix}.inbox", f"{prefix}.short", again)
    ]
    assert ttls == [0, 60, 86_400]
    assert _error(r, "duplicate") == f"mailbox {prefix}.inbox already exists"
    assert _error(r, "bad_name") == "name may only contain lowercase letters, digits, and dots"


async def test_send_with_priority_key_tags_delay_and_ttl(js_sdk, nats_broker):
    prefix = _prefix()
    r = await drive(js_sdk, nats_broker.url, "send", prefix)
    sent = ["plain", "object", "keyed", "keyed_again", "critical", "bytes"]
    assert [_value(r, call) for call in sent] == [0, 1, 2, 3, 4, 5]
    # a delayed message has no msg_id yet, even with mq9-delay: 0 (RobustMQ)
    assert _value(r, "delayed") == _value(r, "delayed_zero") == -1
    assert _error(r, "missing") == f"mailbox {prefix}.nobody does not exist"

    mailbox = nats_broker.engine.topics[f"{prefix}.inbox"]
    stored = {
        msg_id: (m.payload, m.priority.value, m.key, m.tags)
        for msg_id, m in mailbox.messages.items()
    }
    assert stored == {  # the newer "k" replaced 2; the delay-0 one became 6 on the next request
        0: (b"plain text", "normal", None, ()),
        1: (b'{"task":1}', "urgent", None, ()),
        3: (b"v2", "normal", "k", ("b",)),
        4: (b"abcd", "critical", None, ()),
        5: (b"hi", "normal", None, ()),
        6: (b"now-ish", "normal", None, ()),
    }
    assert mailbox.messages[4].expire_at == mailbox.messages[4].create_time + 60
    nats_broker.clock.advance(30)
    raw = await nats_broker.raw(f"$mq9.AI.MSG.QUERY.{prefix}.inbox", b"{}")
    assert [(m["msg_id"], m["payload"]) for m in raw["messages"]][-1] == (7, "later")


async def test_fetch_with_a_group_and_ack(js_sdk, nats_broker):
    prefix = _prefix()
    r = await drive(js_sdk, nats_broker.url, "fetch", prefix)
    every = [(3, "critical"), (1, "urgent"), (0, "normal"), (2, "normal")]
    assert _ids(r, "group_first") == _ids(r, "group_again") == every  # FETCH moves nothing
    assert _value(r, "ack") is None
    # ACK 1 sets every lane of "g" to 2: the critical 3 comes again
    assert _ids(r, "group_after_ack") == [(3, "critical"), (2, "normal")]
    # force_deliver on a group that exists: reads from earliest, commits 1
    assert _ids(r, "force") == every
    assert _ids(r, "after_force") == [(3, "critical"), (1, "urgent"), (2, "normal")]
    assert _ids(r, "from_id") == [(3, "critical"), (2, "normal")]
    assert _ids(r, "num_msgs") == [(3, "critical")]
    assert _error(r, "ack_unknown_mailbox") == f"mailbox not found: {prefix}.nobody"
    assert (
        _error(r, "missing") == f"Tenant default topic '{prefix}.nobody' not found in broker cache"
    )

    calls = ["group_first", "group_again", "group_after_ack", "force", "after_force", "from_id"]
    _assert_garbled(r, calls, {0: "n0", 1: "u1", 2: "n2", 3: "c3"})
    # two different texts, one byte: the handler cannot tell them apart
    assert _payloads(r, "group_first")[0] == _payloads(r, "group_first")[2] == b"\x9f"


async def test_fetch_without_a_group_uses_the_shared_group_named_empty(js_sdk, nats_broker):
    prefix = _prefix()
    r = await drive(js_sdk, nats_broker.url, "shared", prefix)
    # Before anyone ACKs group "", its lanes have no offsets: "latest", the newest message
    assert _ids(r, "before_1") == _ids(r, "before_2") == [(3, "normal")]
    assert _ids(r, "fresh_before") == [(2, "normal")]
    # Another client ACKs msg_id 0 in group "" ...
    assert _value(r, "ack_by_anyone") is None
    # ... and every "stateless" fetch of this mailbox now starts at 1
    assert _ids(r, "after_1") == _ids(r, "after_2") == [(1, "normal"), (2, "normal"), (3, "normal")]
    # ... and on any other mailbox, "" has no offset there: from the first message
    assert _ids(r, "fresh_after") == [(0, "normal"), (1, "normal"), (2, "normal")]
    _assert_garbled(r, ["before_1", "after_1"], {i: f"m{i}" for i in range(4)})
    _assert_garbled(r, ["fresh_before", "fresh_after"], {i: f"f{i}" for i in range(3)})

    shard = nats_broker.engine.topics[f"{prefix}.shared"].shard
    lanes = ("critical", "urgent", "normal")
    assert nats_broker.engine.offsets == {f"-{lane}": {shard: 1} for lane in lanes}
    address = f"{prefix}.shared"
    # A FETCH without group_name really is stateless; group_name "" is not
    stateless = await nats_broker.raw(
        f"$mq9.AI.MSG.FETCH.{address}", b'{"config":{"max_wait_ms":0}}'
    )
    assert [m["msg_id"] for m in stateless["messages"]] == [3]
    shared = await nats_broker.raw(
        f"$mq9.AI.MSG.FETCH.{address}", b'{"group_name":"","config":{"max_wait_ms":0}}'
    )
    assert [m["msg_id"] for m in shared["messages"]] == [1, 2, 3]


async def test_query_and_delete(js_sdk, nats_broker):
    prefix = _prefix()
    r = await drive(js_sdk, nats_broker.url, "query", prefix)
    every = [(0, "normal"), (1, "urgent"), (3, "normal"), (4, "critical"), (5, "normal")]
    assert _ids(r, "all") == every
    assert _ids(r, "key") == [(3, "normal")]
    assert _ids(r, "limit") == every[:2]  # the oldest two
    assert _ids(r, "since") == every  # since is ignored (RobustMQ)
    sent = {0: "plain text", 1: '{"task":1}', 3: "v2", 4: "abcd", 5: "héllo=wörld"}
    _assert_garbled(r, ["all", "key", "limit", "since", "after_delete"], sent)
    payloads = _payloads(r, "all")
    assert payloads[0] == bytes.fromhex("a656a29ed7b1")
    assert payloads[4] == base64.b64decode("abcd")  # valid base64: silently another payload
    assert payloads[5] == _node_base64("hllo")  # "é" dropped, everything after "=" lost

    assert _value(r, "delete") is None
    assert _value(r, "delete_unknown_id") is None  # RobustMQ: deleted, whatever the id
    assert _ids(r, "after_delete") == every[1:]
    missing = f"Tenant default topic '{prefix}.nobody' not found in broker cache"
    assert _error(r, "delete_missing_mailbox") == _error(r, "query_missing_mailbox") == missing


async def test_consume(js_sdk, nats_broker):
    prefix = _prefix()
    r = await drive(js_sdk, nats_broker.url, "consume", prefix)
    # With a group: reply [2, 0, 1], acked in that order (3, then 1, then 2): 2 comes again
    assert _ids(r, "group_seen") == [(2, "critical"), (0, "normal"), (1, "normal"), (2, "critical")]
    assert _value(r, "group_processed") == 4
    assert _value(r, "group_stop") is None and _value(r, "group_running") is False
    assert _value(r, "group_then") == []
    # Without a group: group "" is never acked, the newest message is handed out forever
    assert _ids(r, "nogroup_seen") == [(2, "critical")] * 5
    assert _value(r, "nogroup_stop") is None and _value(r, "nogroup_processed") is True
    _assert_garbled(r, ["group_seen", "nogroup_seen"], {0: "j0", 1: "j1", 2: "j2"})
    assert set(_payloads(r, "group_seen").values()) == {b"\x8f"}  # three texts, one byte

    shard = nats_broker.engine.topics[f"{prefix}.jobs"].shard
    assert nats_broker.engine.offsets == {
        f"c-{lane}": {shard: 3} for lane in ("critical", "urgent", "normal")
    }


async def test_agent_registry(js_sdk, nats_broker):
    prefix = _prefix()
    name = f"{prefix}-translator"
    r = await drive(js_sdk, nats_broker.url, "agents", prefix)
    assert _error(r, "register_card") == "agentCard must include a 'mailbox' field"
    # RobustMQ adds " at line 1 column N" to serde texts; the bundled broker leaves it out
    assert _error(r, "register_card_with_mailbox") == (
        "invalid AGENT.REGISTER payload: missing field `payload`"
    )
    assert _value(r, "register_name_payload") is None  # {name, mailbox, payload}: mailbox ignored

    [hit] = _value(r, "discover_text")
    assert (hit["agent_id"], hit["name"]) == (f"default\x00{name}", name)
    assert hit["description"] == "Turns Japanese contracts into English"
    card = json.loads(hit["agent_info"])  # a string: the SDK hands it over unparsed
    assert card["supportedInterfaces"][0]["url"] == f"mq9://{prefix}.agent"
    assert "mailbox" not in card
    assert _value(r, "discover_text_page") == []
    assert [a["name"] for a in _value(r, "discover_semantic")] == [name]
    listed = _value(r, "discover_list")
    assert [sorted(a) for a in listed] == [["agent_info", "name"]]
    assert json.loads(listed[0]["agent_info"]) == card

    assert _error(r, "report_by_name") == "report must include a 'mailbox' field"
    assert _error(r, "report_mailbox_only") == "invalid AGENT.REPORT payload: missing field `name`"
    assert _error(r, "report_object_info") == (
        "invalid AGENT.REPORT payload: invalid type: map, expected a string"
    )
    assert _value(r, "report") is None
    assert nats_broker.engine.reports[name][0] == "busy"

    missing_name = "invalid AGENT.UNREGISTER payload: missing field `name`"
    assert _error(r, "unregister_mailbox") == _error(r, "unregister_name") == missing_name
    assert _value(r, "discover_list_after") == listed  # still registered
