"""How the client and the broker fail: refusals before any round trip, exact error texts, an
unreachable broker, a nats-server with no mq9 broker behind it, malformed replies from a rogue
responder, and malformed requests that the served engine must answer and survive.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging

import nats
import pytest

from mq9_broker import BrokerEngine, serve_on_nats
from mq9_platform import Mq9Client, Mq9Error, Priority
from mq9_platform.client.transport import NOT_CONNECTED
from mq9_platform.operations.catalog import explain
from mq9_wire import protocol as p
from mq9_wire.nats_floor.guard import flush_in_order
from mq9_wire.protocol.errors import InvalidArgument, MailboxNotFound
from testbed.nats_server import start_nats_server
from testbed.ports import silent_port
from testbed.support.waiting import until

INVALID_ADDRESSES = [
    "Upper",
    "has-hyphen",
    ".leading",
    "trailing.",
    "",
    "with space",
    "per%2ecent",
    "under_score",
    "ünicode",
    "star.*",
    "gt.>",
]


@pytest.fixture
def requests_seen(broker) -> list[str]:
    """Subjects of every request that reaches the engine, over either transport (every
    request goes through ``handle``)."""
    seen: list[str] = []
    engine = broker.cluster if broker.cluster is not None else broker.engine
    handle = engine.handle

    async def recording(subject, headers, body):
        seen.append(subject)
        return await handle(subject, headers, body)

    engine.handle = recording
    return seen


@pytest.fixture(scope="module")
def bare_nats():
    """A nats-server of our own with no mq9 engine served on it (nothing else shares it)."""
    with start_nats_server() as server:
        yield server


def wire_size(body: bytes, headers: dict[str, str]) -> int:
    """What NATS counts against max_payload: the payload plus the whole header block."""
    if not headers:
        return len(body)
    block = (
        b"NATS/1.0\r\n" + b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items()) + b"\r\n"
    )
    return len(block) + len(body)


# -- refusals before any round trip ----------------------------------------------------------


@pytest.mark.parametrize("address", INVALID_ADDRESSES)
async def test_invalid_address_refused_before_any_round_trip(client, requests_seen, address):
    calls = [
        lambda: client.mailbox_create(name=address),
        lambda: client.send(address, "x"),
        lambda: client.fetch(address, max_wait_ms=0),
        lambda: client.ack(address, "g", 0),
        lambda: client.query(address),
        lambda: client.delete(address, 0),
        lambda: client.consume(address, lambda m: None),
    ]
    for call in calls:
        with pytest.raises(Mq9Error) as caught:
            await call()
        assert caught.value.message == p.err_invalid_address(address)
        assert not caught.value.retryable
    assert requests_seen == []


@pytest.mark.parametrize("name", ["a" * 300 + ".b", "0.9", "x"])
async def test_long_addresses_are_accepted(client, name):
    """RobustMQ's CREATE rule has no length limit."""
    assert await client.mailbox_create(name=name) == name
    assert await client.send(name, "x") == 0
    [message] = await client.fetch(name, deliver="earliest", max_wait_ms=0)
    assert message.text() == "x"


async def test_an_address_no_subject_can_carry_is_refused_by_the_client(broker, requests_seen):
    """RobustMQ creates "a..b", but a NATS subject with an empty token reaches nothing."""
    async with broker.client() as client:
        for call in (
            lambda: client.mailbox_create(name="double..dot"),
            lambda: client.send("double..dot", "x"),
            lambda: client.fetch("double..dot", max_wait_ms=0),
        ):
            with pytest.raises(Mq9Error, match="empty segment"):
                await call()
    assert requests_seen == []
    # the broker itself takes the name, as RobustMQ does
    assert (await broker.raw(p.MAILBOX_CREATE, b'{"name":"double..dot"}'))["error"] == ""


async def test_send_to_a_name_no_mailbox_can_have_is_just_a_missing_mailbox(broker):
    for address in ("Upper", "has-hyphen", "under_score"):
        reply = await broker.raw(p.send_subject(address), b"x")
        assert reply["error"] == p.err_mailbox_missing(address)


async def test_unknown_priority_refused_without_fallback(client, requests_seen):
    box = await client.mailbox_create()
    requests_seen.clear()
    with pytest.raises(Mq9Error) as caught:
        await client.send(box, "x", priority="high")
    assert caught.value.message == "invalid priority 'high': use normal, urgent or critical"
    for bad in ("", "low", 1, None):
        with pytest.raises(Mq9Error, match="invalid priority"):
            await client.send(box, "x", priority=bad)
    assert requests_seen == []
    assert await client.query(box) == []


@pytest.mark.parametrize(
    "options",
    [
        {"ttl": -1},
        {"delay": -1},
        {"ttl": True},
        {"delay": 1.5},
        {"ttl": 2**31},
        {"delay": 365 * 86_400 + 1},  # (#100) past RobustMQ's delay queue
        {"delay": 3 * 365 * 86_400},
        {"key": ""},
        {"key": "two\nlines"},
        {"key": " padded "},
        {"tags": "a"},
        {"tags": ["a,b"]},
        {"tags": [""]},
    ],
)
async def test_bad_send_options_refused_before_any_round_trip(client, requests_seen, options):
    box = await client.mailbox_create()
    requests_seen.clear()
    with pytest.raises(Mq9Error) as caught:
        await client.send(box, "x", **options)
    name = next(iter(options))
    assert name.rstrip("s") in caught.value.message
    assert requests_seen == []


async def test_negative_mailbox_ttl_refused(client, requests_seen):
    with pytest.raises(Mq9Error, match="invalid ttl -1"):
        await client.mailbox_create(ttl=-1)
    assert requests_seen == []


@pytest.mark.parametrize(
    "options",
    [
        {"num_msgs": 0},
        {"max_wait_ms": -1},
        {"deliver": "newest"},
        {"deliver": "from_id"},
        {"deliver": "from_time"},
        {"group_name": ""},
        {"from_id": -1, "deliver": "from_id"},
    ],
)
async def test_bad_fetch_options_refused_before_any_round_trip(client, requests_seen, options):
    with pytest.raises(Mq9Error):
        await client.fetch("some.box", **options)
    assert requests_seen == []


async def test_other_refusals_before_any_round_trip(client, requests_seen):
    with pytest.raises(Mq9Error, match="invalid msg_id -1"):
        await client.ack("some.box", "g", -1)
    with pytest.raises(Mq9Error, match="invalid group_name"):
        await client.ack("some.box", "", 0)
    with pytest.raises(Mq9Error, match="invalid msg_id -1"):
        await client.delete("some.box", -1)
    with pytest.raises(Mq9Error, match="invalid limit -1"):
        await client.query("some.box", limit=-1)
    with pytest.raises(Mq9Error, match="invalid limit 0"):
        await client.agent_discover(limit=0)
    with pytest.raises(Mq9Error, match="invalid page 0"):
        await client.agent_discover(page=0)
    with pytest.raises(Mq9Error, match="agent report must contain the agent's name"):
        await client.agent_report({"status": "ok"})
    with pytest.raises(ValueError, match="name"):
        await client.agent_unregister("")
    assert requests_seen == []


@pytest.mark.parametrize("payload", [5, 1.5, None, ["list"], object(), {"not": {1, 2}}])
async def test_wrong_payload_type_is_value_error(client, requests_seen, payload):
    box = await client.mailbox_create()
    requests_seen.clear()
    with pytest.raises((ValueError, TypeError)) as caught:
        await client.send(box, payload)
    assert not isinstance(caught.value, Mq9Error)
    assert isinstance(caught.value, ValueError)
    assert requests_seen == []


async def test_bad_card_and_report_types_are_value_errors(client, requests_seen):
    for bad in (["list"], "text", None):
        with pytest.raises(ValueError):
            await client.agent_register(bad)
        with pytest.raises(ValueError):
            await client.agent_report(bad)
    with pytest.raises(ValueError):
        await client.agent_register({"name": "a", "bad": object()})
    for card in (
        {"mailbox": "no.name"},
        {"name": ""},
        {"name": "a", "skills": "translate"},
        {"name": "a", "skills": [{"description": "no name"}]},
        {"name": "a", "mailbox": "Not A Mailbox"},
        {"name": "a", "description": 5},
    ):
        with pytest.raises(ValueError):
            await client.agent_register(card)
    assert requests_seen == []


async def test_non_utf8_bytes_refused_before_sending(client, requests_seen):
    box = await client.mailbox_create()
    requests_seen.clear()
    with pytest.raises(ValueError, match="not UTF-8") as caught:
        await client.send(box, bytes(range(256)))
    assert "base64" in str(caught.value)
    assert requests_seen == []


async def test_delay_zero_is_sent_and_answered_minus_one(client):
    box = await client.mailbox_create()
    assert await client.send(box, "later", delay=0) == -1


async def test_payload_above_max_payload_refused_before_sending(broker, client, requests_seen):
    if broker.transport == "memory":
        broker.engine.limits = dataclasses.replace(broker.engine.limits, max_payload=1000)
    limit = 1000 if broker.transport == "memory" else client._transport.max_payload
    box = await client.mailbox_create()
    requests_seen.clear()
    for payload in (b"x" * (limit + 1), "é" * (limit // 2 + 1)):
        with pytest.raises(Mq9Error) as caught:
            await client.send(box, payload)
        assert "payload too large" in caught.value.message
        assert f"max_payload is {limit}" in caught.value.message
        assert not caught.value.retryable
    assert requests_seen == []
    # exactly the limit passes the client; the broker stores it or says what it accepts
    # (a FETCH answer wraps the payload in JSON), and the connection stays usable
    await accepted_or_refused_clearly(client.send(box, b"x" * limit))
    assert requests_seen == [p.send_subject(box)]
    assert await client.send(box, "small") in (0, 1)


async def accepted_or_refused_clearly(send) -> None:
    try:
        await asyncio.wait_for(send, 10)
    except Mq9Error as exc:
        assert "message too large" in exc.message and "carry at most" in exc.message
        assert not exc.retryable


@pytest.mark.parametrize(
    "options",
    [{"priority": "urgent"}, {"priority": "critical", "key": "k", "tags": ["a", "b"], "ttl": 60}],
)
async def test_max_payload_counts_headers_exactly(broker, client, requests_seen, options):
    """The largest message the client lets through is one the server accepts: the connection
    must survive it (nats-server drops a connection that exceeds max_payload)."""
    if broker.transport == "memory":
        broker.engine.limits = dataclasses.replace(broker.engine.limits, max_payload=4096)
    limit = client._transport.max_payload
    box = await client.mailbox_create()
    headers = p.send_headers(
        p.parse_priority(options["priority"]),
        options.get("key"),
        None,
        options.get("ttl"),
        options.get("tags"),
    )
    largest = limit - wire_size(b"", headers)
    requests_seen.clear()
    with pytest.raises(Mq9Error, match="payload too large"):
        await client.send(box, b"y" * (largest + 1), **options)
    assert requests_seen == []
    await accepted_or_refused_clearly(client.send(box, b"y" * largest, **options))
    assert requests_seen == [p.send_subject(box)]
    assert client.is_connected
    assert await client.send(box, "still connected") in (0, 1)


async def test_not_connected_use_is_mq9_error(broker, requests_seen):
    client = broker.client()
    calls = [
        lambda: client.mailbox_create(),
        lambda: client.send("some.box", "x"),
        lambda: client.fetch("some.box", max_wait_ms=0),
        lambda: client.ack("some.box", "g", 0),
        lambda: client.query("some.box"),
        lambda: client.delete("some.box", 0),
        lambda: client.agent_register({"name": "a", "payload": "x"}),
        lambda: client.agent_unregister("a"),
        lambda: client.agent_report({"name": "a"}),
        lambda: client.agent_discover(),
        lambda: client.consume("some.box", lambda m: None, group_name="g"),
    ]
    for round_ in ("before connect", "after close"):
        for call in calls:
            with pytest.raises(Mq9Error) as caught:
                await call()
            assert caught.value.message == NOT_CONNECTED, round_
        if round_ == "before connect":
            await client.connect()
            assert client.is_connected
            await client.close()
            assert not client.is_connected
    assert requests_seen == []  # nothing reached the broker


async def test_closing_is_quiet_and_idempotent(broker, caplog):
    with caplog.at_level(logging.WARNING, logger="langchain_mq9"):
        async with broker.client() as client:
            await client.mailbox_create()
        await client.close()
    assert [r.getMessage() for r in caplog.records] == []


async def test_broker_errors_are_not_retryable(client):
    with pytest.raises(Mq9Error) as caught:
        await client.query("no.such.box")
    assert caught.value.retryable is False


@pytest.mark.parametrize("command", ["fetch", "query", "delete", "send", "ack"])
async def test_a_missing_mailbox_is_said_in_plain_words_with_the_brokers_as_detail(client, command):
    # RobustMQ's storage layer answers FETCH, QUERY and DELETE "Tenant default topic '...' not
    # found in broker cache"; SEND and ACK have words of their own: one plain message for all
    calls = {
        "fetch": lambda: client.fetch("no.such.mailbox"),
        "query": lambda: client.query("no.such.mailbox"),
        "delete": lambda: client.delete("no.such.mailbox", 0),
        "send": lambda: client.send("no.such.mailbox", "hello"),
        "ack": lambda: client.ack("no.such.mailbox", "workers", 0),
    }
    with pytest.raises(MailboxNotFound) as caught:
        await calls[command]()
    missing = caught.value
    assert missing.message == (
        "mailbox 'no.such.mailbox' does not exist (it was never created, or its TTL ran out)"
    )
    assert str(missing) == missing.message and missing.address == "no.such.mailbox"
    assert missing.detail is not None and "no.such.mailbox" in missing.detail
    if command in ("fetch", "query", "delete"):
        assert missing.detail == p.err_topic_missing("no.such.mailbox")
    assert missing.retryable is False


# -- an unreachable broker, and a nats-server with no broker -------------------------------------


@pytest.mark.slow
async def test_connect_to_nothing_fails_fast_and_retryable():
    client = Mq9Client(f"nats://127.0.0.1:{silent_port()}", request_timeout=1)
    with pytest.raises(Mq9Error) as caught:
        await asyncio.wait_for(client.connect(), 5)
    assert caught.value.retryable is True
    message = caught.value.message
    assert message.startswith("cannot connect to the mq9 broker at nats://127.0.0.1:")
    assert message.endswith("; to run one on this machine: mq9-dev-broker")
    # what a tool says (issue #15): the diagnosis once, then what to do, nothing twice
    told = explain(caught.value, operation="create_mailbox")
    assert "Is the broker running" not in told
    assert told == f"{message} — try again shortly"  # not "unreachable" after "cannot connect"


@pytest.mark.slow
@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]"])
async def test_the_hint_to_run_a_broker_here_is_for_a_local_address(host):
    """Issue #117: "to run one on this machine: mq9-dev-broker" was said of any address, a
    remote broker's too, where a broker started here answers nothing."""
    client = Mq9Client(f"nats://{host}:{silent_port()}", request_timeout=1)
    with pytest.raises(Mq9Error) as caught:
        await asyncio.wait_for(client.connect(), 5)
    assert caught.value.message.endswith("; to run one on this machine: mq9-dev-broker")


@pytest.mark.slow
async def test_a_remote_address_gets_no_hint_to_run_a_broker_here():
    # TEST-NET-1 (RFC 5737): routed nowhere, so the dial fails (unreachable or its timeout)
    client = Mq9Client("nats://192.0.2.1:4222", request_timeout=0.5)
    with pytest.raises(Mq9Error) as caught:
        await asyncio.wait_for(client.connect(), 5)
    message = caught.value.message
    assert message.startswith("cannot connect to the mq9 broker at nats://192.0.2.1:4222 (")
    assert "mq9-dev-broker" not in message and caught.value.retryable is True
    assert not client.is_connected
    with pytest.raises(Mq9Error, match="not connected"):
        await client.mailbox_create()


@pytest.mark.slow
async def test_connect_to_a_cluster_of_dead_servers_fails_fast():
    urls = ",".join(f"nats://127.0.0.1:{silent_port()}" for _ in range(3))
    client = Mq9Client(urls, request_timeout=1)
    with pytest.raises(Mq9Error) as caught:
        await asyncio.wait_for(client.connect(), 5)
    assert caught.value.retryable


@pytest.mark.slow
async def test_nats_server_without_mq9_broker_says_so(bare_nats):
    async with Mq9Client(bare_nats.url, request_timeout=2) as client:
        calls = [
            client.mailbox_create(),
            client.send("some.box", "x"),
            client.fetch("some.box", max_wait_ms=0),
            client.fetch("some.box", max_wait_ms=5000),
            client.ack("some.box", "g", 0),
            client.query("some.box"),
            client.delete("some.box", 0),
            client.agent_register({"name": "a", "payload": "x"}),
            client.agent_discover(),
        ]
        for call in calls:
            with pytest.raises(Mq9Error) as caught:
                await asyncio.wait_for(call, 5)
            assert "no mq9 broker is serving" in caught.value.message
            assert bare_nats.url in caught.value.message
            assert caught.value.retryable


# -- a rogue responder: malformed replies -----------------------------------------------------


class Responder:
    """Answers every ``$mq9.AI.>`` request on a bare nats-server with ``reply`` (raw bytes),
    or not at all when ``reply`` is None."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.reply: bytes | None = b""

    async def __aenter__(self) -> Responder:
        self.connection = await nats.connect(self.url)

        async def answer(msg) -> None:
            if self.reply is not None:
                await msg.respond(self.reply)

        await self.connection.subscribe(p.SUBJECT_WILDCARD, cb=answer)
        await flush_in_order(self.connection)  # the SUB on the server before a request
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.connection.close()


def message_json(**fields) -> bytes:
    wire = {"msg_id": 1, "payload": "hi", "priority": "normal", "header": None, "create_time": 1}
    wire.update(fields)
    wire = {k: v for k, v in wire.items() if v is not ...}
    return json.dumps({"error": "", "messages": [wire]}).encode()


MALFORMED = [
    ("create", b"not json at all"),
    ("create", b"\xff\xfe\x00garbage"),
    ("create", b""),
    ("create", b"[1, 2, 3]"),
    ("create", b'"just a string"'),
    ("create", b"null"),
    ("create", b'{"error": 5}'),
    ("create", b'{"error": null}'),
    ("create", b'{"error": ""}'),
    ("create", b'{"error": "", "mail_address": 7}'),
    ("create", b'{"error": "", "mail_address": "Not A Valid.Address"}'),
    ("create", b"[" * 50_000),
    ("create", b'{"error": "", "x": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"),
    ("send", b'{"error": "", "msg_id": "7"}'),
    ("send", b'{"error": "", "msg_id": true}'),
    ("send", b'{"error": ""}'),
    ("send", b'{"msg_id": 7}'),  # no error field: not passed by the fast path
    ("send", b'{"error": "", "msg_id": 7.0}'),
    ("fetch", b'{"error": ""}'),
    ("fetch", b'{"error": "", "messages": {"msg_id": 1}}'),
    ("fetch", b'{"error": "", "messages": [5]}'),
    ("fetch", b'{"error": "", "messages": ["text"]}'),
    ("fetch", b'{"error": "", "messages": [null]}'),
    ("fetch", message_json(payload=5)),
    ("fetch", message_json(payload=[104, 105])),
    ("fetch", message_json(payload=...)),
    ("fetch", message_json(msg_id="one")),
    ("fetch", message_json(msg_id=None)),
    ("fetch", message_json(msg_id=1.5)),
    ("fetch", message_json(msg_id=True)),
    ("fetch", message_json(create_time=2.5)),
    ("fetch", message_json(msg_id=...)),
    ("fetch", message_json(priority="high")),
    ("fetch", message_json(priority=1)),
    ("fetch", message_json(header="NATS/1.0")),
    ("fetch", message_json(header=[256])),
    ("fetch", message_json(header=[-1])),
    ("fetch", message_json(header=[True])),
    ("fetch", message_json(header={"mq9-key": "k"})),
    ("fetch", message_json(create_time="yesterday")),
    ("fetch", message_json(create_time=...)),
    ("query", message_json(payload=None)),
    ("discover", b'{"error": "", "agents": {"a": 1}}'),
    ("discover", b'{"error": "", "agents": [5]}'),
    ("discover", b'{"error": "", "agents": [{"agent_info": "{}"}]}'),
    ("discover", b'{"error": ""}'),
]


async def call(client: Mq9Client, command: str):
    if command == "create":
        return await client.mailbox_create()
    if command == "send":
        return await client.send("some.box", "x")
    if command == "fetch":
        return await client.fetch("some.box", max_wait_ms=0)
    if command == "query":
        return await client.query("some.box")
    if command == "discover":
        return await client.agent_discover()
    raise AssertionError(command)


@pytest.mark.slow
async def test_malformed_replies_become_clean_mq9_errors(bare_nats):
    async with (
        Responder(bare_nats.url) as responder,
        Mq9Client(bare_nats.url, request_timeout=2) as client,
    ):
        for command, reply in MALFORMED:
            responder.reply = reply
            with pytest.raises(Mq9Error) as caught:
                await asyncio.wait_for(call(client, command), 5)
            assert "malformed" in caught.value.message, (command, reply[:60])
        # a well-formed error reply is passed on: its class, the broker's words as detail
        responder.reply = b'{"error": "mailbox some.box does not exist"}'
        with pytest.raises(MailboxNotFound) as caught:
            await call(client, "query")
        assert caught.value.detail == "mailbox some.box does not exist"
        assert caught.value.message.startswith("mailbox 'some.box' does not exist")
        responder.reply = b'{"error": "invalid ttl -1: a whole number of seconds"}'
        with pytest.raises(Mq9Error) as caught:
            await call(client, "query")
        assert caught.value.message == "invalid ttl -1: a whole number of seconds"
        # unknown fields are ignored, known ones decoded; key and tags come from the header
        header = list(p.header_block({"mq9-key": "k", "mq9-tags": "t1, t2"}))
        responder.reply = message_json(extra={"x": 1}, key="ignored", header=header)
        [message] = await call(client, "fetch")
        assert (message.msg_id, message.payload, message.key, message.tags) == (
            1,
            b"hi",
            "k",
            ["t1", "t2"],
        )
        assert message.header == {"mq9-key": "k", "mq9-tags": "t1, t2"}
        # RobustMQ answers "" for a message it has no priority for, and may omit the header
        responder.reply = message_json(priority="", header=...)
        [message] = await call(client, "fetch")
        assert (message.priority, message.header, message.key) == (Priority.NORMAL, {}, None)
        responder.reply = b'{"error": "", "msg_id": 3, "unknown": true}'
        assert await call(client, "send") == 3


@pytest.mark.slow
async def test_silent_responder_times_out_retryably(bare_nats):
    async with (
        Responder(bare_nats.url) as responder,
        Mq9Client(bare_nats.url, request_timeout=0.3) as client,
    ):
        responder.reply = None
        with pytest.raises(Mq9Error) as caught:
            await asyncio.wait_for(client.mailbox_create(), 5)
        assert caught.value.retryable
        assert "did not answer" in caught.value.message


# -- malformed requests: the broker answers clearly and keeps serving ----------------------------


BOX = "bad.requests"
DEEP = b"[" * 20_000 + b"]" * 20_000  # deep, and within the 64 KiB a CREATE body may take
CREATE_BAD = "invalid MAILBOX.CREATE payload: "
QUERY_BAD = "invalid query request: "


def ack(**fields) -> bytes:
    return json.dumps({"group_name": "g", "mail_address": BOX, "msg_id": 0, **fields}).encode()


BAD_REQUESTS = [
    # (subject, body, headers, words the error must contain): serde's words, as RobustMQ's
    (p.MAILBOX_CREATE, b"{not json", None, CREATE_BAD + "key must be a string"),
    (p.MAILBOX_CREATE, b"\xff\xfe", None, CREATE_BAD + "expected value"),
    (p.MAILBOX_CREATE, b"[1]", None, "invalid type: integer `1`, expected a string"),
    (p.MAILBOX_CREATE, b'"box"', None, 'invalid type: string "box", expected struct'),
    (p.MAILBOX_CREATE, DEEP, None, CREATE_BAD + "recursion limit exceeded"),
    (p.MAILBOX_CREATE, b'{"x":' + DEEP + b"}", None, "recursion limit exceeded"),
    (p.MAILBOX_CREATE, b'{"ttl":1e400}', None, "number out of range"),
    (p.MAILBOX_CREATE, b'{"ttl":NaN}', None, CREATE_BAD + "expected value"),
    (p.MAILBOX_CREATE, b'{"ttl":99999999999999999999999999999}', None, "expected u64"),
    (p.MAILBOX_CREATE, b'{"ttl":' + b"9" * 5000 + b"}", None, CREATE_BAD),
    (p.MAILBOX_CREATE, b'{"ttl":-1}', None, "invalid value: integer `-1`, expected u64"),
    (p.MAILBOX_CREATE, b'{"ttl":"10"}', None, 'invalid type: string "10", expected u64'),
    (p.MAILBOX_CREATE, b'{"ttl":2.5}', None, "invalid type: floating point `2.5`"),
    (p.MAILBOX_CREATE, b'{"name":5}', None, "invalid type: integer `5`, expected a string"),
    (p.MAILBOX_CREATE, b'{"name":"Bad"}', None, p.ERR_NAME_CHARS),
    (p.MAILBOX_CREATE, b'{"name":".bad"}', None, p.ERR_NAME_EDGES),
    (p.MAILBOX_CREATE, b'{"name":""}', None, p.ERR_NAME_EMPTY),
    (p.MAILBOX_CREATE, b'{"name":"' + BOX.encode() + b'"}', None, p.err_mailbox_exists(BOX)),
    (p.fetch_subject(BOX), b"[]", None, "expected struct MsgFetchReq"),
    (p.fetch_subject(BOX), b"", None, "EOF while parsing"),
    (p.fetch_subject(BOX), b'{"config":5}', None, "expected struct MsgFetchConfig"),
    (p.fetch_subject(BOX), b'{"config":[]}', None, "expected struct MsgFetchConfig"),
    (p.fetch_subject(BOX), b'{"deliver":""}', None, "unknown variant ``"),
    (p.fetch_subject(BOX), b'{"deliver":null}', None, "expected value"),
    (p.fetch_subject(BOX), b'{"config":{"num_msgs":1e30}}', None, "expected u32"),
    (p.fetch_subject(BOX), b'{"config":{"num_msgs":4294967296}}', None, "expected u32"),
    (p.fetch_subject(BOX), b'{"config":{"max_wait_ms":-5}}', None, "expected u64"),
    (p.fetch_subject(BOX), b'{"config":{"max_wait_ms":1e20}}', None, "expected u64"),
    (p.fetch_subject(BOX), b'{"deliver":"newest"}', None, "unknown variant `newest`"),
    (p.fetch_subject(BOX), b'{"deliver":5}', None, "expected value"),
    (p.fetch_subject(BOX), b'{"deliver":"from_time","from_time":"now"}', None, "expected u64"),
    (p.fetch_subject(BOX), b'{"deliver":"from_id","from_id":-1}', None, "expected u64"),
    (p.fetch_subject(BOX), b'{"group_name":["g"]}', None, "expected a string"),
    (p.fetch_subject(BOX), b'{"force_deliver":"yes"}', None, "expected a boolean"),
    (p.ack_subject(BOX), ack(msg_id="1"), None, 'invalid type: string "1", expected u64'),
    (p.ack_subject(BOX), ack(msg_id=1.5), None, "expected u64"),
    (p.ack_subject(BOX), ack(msg_id=True), None, "expected u64"),
    (
        p.ack_subject(BOX),
        b'{"group_name":"g","mail_address":"bad.requests"}',
        None,
        "missing field `msg_id`",
    ),
    (
        p.ack_subject(BOX),
        b'{"msg_id":0,"mail_address":"bad.requests"}',
        None,
        "missing field `group_name`",
    ),
    (p.ack_subject(BOX), b'{"group_name":"g","msg_id":0}', None, "missing field `mail_address`"),
    # the body's mail_address is the one acked, whatever the subject says
    (p.ack_subject(BOX), ack(mail_address="other.box"), None, "mailbox not found: other.box"),
    (p.query_subject(BOX), b'{"limit":1e999}', None, QUERY_BAD + "number out of range"),
    (p.query_subject(BOX), b'{"since":-1}', None, QUERY_BAD + "invalid value"),
    (p.query_subject(BOX), b'{"tags":"a"}', None, QUERY_BAD + "invalid type: string"),
    (p.query_subject(BOX), b'{"tags":[1]}', None, QUERY_BAD + "invalid type: integer"),
    (p.query_subject(BOX), b'{"key":5}', None, QUERY_BAD + "invalid type: integer"),
    # serde names the first bad field in JSON order, reads -0 as a float, refuses a field
    # given twice and an array of the wrong length
    (p.query_subject(BOX), b'{"limit":"x","key":5}', None, QUERY_BAD + "invalid type: string"),
    (p.query_subject(BOX), b'{"limit":-0}', None, "type: floating point `-0.0`"),
    (p.query_subject(BOX), b'{"key":"a","key":"b"}', None, QUERY_BAD + "duplicate field `key`"),
    (p.ack_subject(BOX), b'["g"]', None, "invalid length 1, expected struct MsgAckReq with 3"),
    (p.AGENT_REGISTER, b"", None, p.ERR_REGISTER_EMPTY),
    (p.AGENT_REGISTER, b"[1]", None, "invalid AGENT.REGISTER payload: invalid type: integer `1`"),
    # an object of A2A card fields only ({} included) is a card: a key of neither shape is not
    (p.AGENT_REGISTER, b'{"nam":"a"}', None, "AGENT.REGISTER payload: missing field `name`"),
    (p.AGENT_REGISTER, b'{"name":"a","x":1}', None, "missing field `payload`"),
    (p.AGENT_REGISTER, b'{"name":"a","payload":""}', None, p.ERR_AGENT_INFO_EMPTY),
    (p.AGENT_REGISTER, DEEP, None, "recursion limit exceeded"),
    (p.AGENT_UNREGISTER, b"{}", None, "invalid AGENT.UNREGISTER payload: missing field `name`"),
    (p.AGENT_UNREGISTER, b'{"name":""}', None, p.ERR_AGENT_NAME_EMPTY),
    (p.AGENT_REPORT, b"nope", None, "invalid AGENT.REPORT payload: expected value"),
    (p.AGENT_REPORT, b'{"name":"a","report_info":{}}', None, "expected a string"),
    (p.AGENT_DISCOVER, b'{"limit":99999999999999999999}', None, "expected u32"),
    # subjects
    ("$mq9.AI.MSG.SEND.Upper", b"x", None, p.err_mailbox_missing("Upper")),
    ("$mq9.AI.MSG.FETCH.a_b", b"{}", None, p.err_topic_missing("a_b")),
    ("$mq9.AI.MSG.QUERY.no.box", b"", None, p.err_topic_missing("no.box")),
    ("$mq9.AI.MSG.SEND", b"x", None, p.err_unknown_subject("$mq9.AI.MSG.SEND")),
    ("$mq9.AI.NOPE", b"", None, p.err_unknown_subject("$mq9.AI.NOPE")),
    ("$mq9.AI.MAILBOX.CREATE.extra", b"", None, "unrecognized mq9 subject"),
    ("$mq9.AI.AGENT.REGISTER.x", b"{}", None, "unrecognized mq9 subject"),
    (p.MSG_DELETE + BOX + ".abc", b"", None, "invalid msg_id: abc"),
    (p.MSG_DELETE + BOX + ".-1", b"", None, "invalid msg_id: -1"),
    (p.MSG_DELETE + BOX + "." + "9" * 25, b"", None, "invalid msg_id"),
    (p.MSG_DELETE + "nodots", b"", None, "unrecognized mq9 subject"),
]


@pytest.mark.parametrize(
    ("subject", "body", "headers", "words"),
    BAD_REQUESTS,
    ids=[f"{i}-{case[0].removeprefix('$mq9.AI.')}" for i, case in enumerate(BAD_REQUESTS)],
)
async def test_malformed_request_gets_clear_error_and_broker_keeps_serving(
    broker, subject, body, headers, words
):
    if BOX not in broker.engine.mailboxes:
        await raw_ok(broker, p.MAILBOX_CREATE, json.dumps({"name": BOX}).encode())
    reply = await broker.raw(subject, body, headers)
    assert set(reply) == {"error"}, reply
    assert words in reply["error"]
    assert not reply["error"].startswith("internal broker error"), reply["error"]
    # still serving, and nothing was stored by the refused request
    ok = await raw_ok(broker, p.query_subject(BOX), b"")
    assert ok["messages"] == []
    assert len(broker.engine.mailboxes) == 1
    assert not broker.engine.registry.entries


LENIENT = [
    # requests RobustMQ takes as serde reads them: unknown fields ignored, a bad header
    # ignored (a bad priority means normal), FETCH's group_name "" and num_msgs 0 accepted
    (p.MAILBOX_CREATE, b'{"nmae":"x"}', None),
    (p.MAILBOX_CREATE, b"", None),
    (p.fetch_subject(BOX), b'{"group":"g","config":{"max_wait_ms":0}}', None),
    (p.fetch_subject(BOX), b'{"config":{"wait":1,"max_wait_ms":0}}', None),
    (p.fetch_subject(BOX), b'{"group_name":"","config":{"max_wait_ms":0}}', None),
    (p.fetch_subject(BOX), b'{"config":{"num_msgs":0,"max_wait_ms":0}}', None),
    (p.fetch_subject(BOX), b'{"deliver":"from_id","config":{"max_wait_ms":0}}', None),
    (p.ack_subject(BOX), ack(extra=1), None),
    (p.ack_subject("other.box"), ack(msg_id=10**6), None),
    (p.query_subject(BOX), b'{"keys":"k","limit":0}', None),
    (p.send_subject(BOX), b"x", {"mq9-priority": "high"}),
    (p.send_subject(BOX), b"x", {"MQ9-PRIORITY": "critical"}),
    (p.send_subject(BOX), b"x", {"mq9-delay": "abc"}),
    (p.send_subject(BOX), b"x", {"mq9-delay": "-1"}),
    (p.send_subject(BOX), b"x", {"mq9-ttl": "2.5"}),
    (p.AGENT_UNREGISTER, b'{"name":"nobody","mailbox":5}', None),
    (p.AGENT_REPORT, b'{"name":"nobody"}', None),
    (p.AGENT_DISCOVER, b'{"limit":5,"extra":true}', None),
    # serde reads a struct from an array of its fields, a unit variant from {"name": null},
    # and ignores an unknown key given twice
    (p.query_subject(BOX), b'[null,["a"],null,5]', None),
    (p.ack_subject(BOX), b'["g","' + BOX.encode() + b'",0]', None),
    (p.fetch_subject(BOX), b'{"deliver":{"earliest":null},"config":[10,0]}', None),
    (p.MAILBOX_CREATE, b'{"x":1,"x":2}', None),
]


@pytest.mark.parametrize(("subject", "body", "headers"), LENIENT)
async def test_requests_robustmq_takes_are_answered_without_error(broker, subject, body, headers):
    if BOX not in broker.engine.mailboxes:
        await raw_ok(broker, p.MAILBOX_CREATE, json.dumps({"name": BOX}).encode())
    reply = await broker.raw(subject, body, headers)
    assert reply["error"] == "", reply
    if subject == p.send_subject(BOX):
        [stored] = (await raw_ok(broker, p.query_subject(BOX), b""))["messages"]
        assert stored["priority"] == "normal"  # unknown or wrongly cased: normal


async def test_deeply_nested_card_does_not_break_discover(broker):
    depth = 900
    card = p.encode(p.agent_card("deep", description="deep card"))[:-1]
    card += b',"x":' + b'{"a":' * depth + b'"v"' + b"}" * depth + b"}"
    first = await broker.raw(p.AGENT_REGISTER, card)
    plain = p.agent_card("plain", description="a finder of things", skills=["finder"])
    await raw_ok(broker, p.AGENT_REGISTER, p.encode(plain))
    await broker.search_settled("plain")  # (RobustMQ's index trails its registry)
    for body in (b"{}", b'{"text":"finder"}', b'{"semantic":"finder"}'):
        found = await raw_ok(broker, p.AGENT_DISCOVER, body)
        assert "plain" in {agent["name"] for agent in found["agents"]}
    if first["error"] == "":
        found = await raw_ok(broker, p.AGENT_DISCOVER, b'{"text":"deep"}')
        assert [agent["name"] for agent in found["agents"]] == ["deep"]


@pytest.mark.slow
async def test_publish_without_reply_subject_is_ignored(broker, nats_server):
    if broker.transport != "nats":
        pytest.skip("a publish without a reply subject exists only on NATS")
    connection = await nats.connect(broker.url)
    try:
        await connection.publish(p.MAILBOX_CREATE, b'{"name":"fire.and.forget"}')
        await connection.publish("$mq9.AI.NOPE", b"garbage")
        await connection.flush()
    finally:
        await connection.close()
    async with broker.client() as client:
        # the broker is still serving; the publish was carried out without an answer
        for _ in range(200):
            if "fire.and.forget" in broker.engine.mailboxes:
                break
            await asyncio.sleep(0.005)
        assert "fire.and.forget" in broker.engine.mailboxes
        assert await client.send("fire.and.forget", "x") == 0


async def test_priority_enum_and_names_are_equivalent(client):
    box = await client.mailbox_create()
    await client.send(box, "a", priority=Priority.URGENT)
    await client.send(box, "b", priority=" Urgent ")
    assert {m.priority for m in await client.query(box)} == {Priority.URGENT}


async def test_an_engine_allowing_more_than_the_nats_server_answers_within_the_server(broker):
    """An engine configured above the server's max_payload keeps its answers within the
    server's (``serve_on_nats`` tells it), and refuses a message no answer could carry."""
    if broker.transport != "nats":
        pytest.skip("only a NATS server limits the size of an answer")
    broker.engine.limits = dataclasses.replace(broker.engine.limits, max_payload=8 << 20)
    async with broker.client() as client:
        limit = client._transport.max_payload
        box = await client.mailbox_create()
        for _ in range(5):
            await client.send(box, b"w" * 300_000)
        found = await asyncio.wait_for(client.fetch(box, deliver="earliest", max_wait_ms=0), 5)
        assert len(found) == 3  # cut to fit the server's max_payload
        with pytest.raises(Mq9Error) as caught:  # a group's answer is whole or refused
            await client.fetch(box, group_name="g", deliver="earliest", max_wait_ms=0)
        assert caught.value.fits == 3
        with pytest.raises(Mq9Error) as caught:
            await client.send(box, b"w" * (limit - 50))  # NATS carries it, no answer could
        assert "message too large" in caught.value.message
        assert f"carry at most {limit} bytes" in caught.value.message


async def test_null_means_not_given_in_request_bodies():
    engine = BrokerEngine()
    created = json.loads(
        await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"n.box","ttl":null}')
    )
    assert created == {"error": "", "mail_address": "n.box"}
    mailbox = engine.mailboxes["n.box"]  # ttl not given: RobustMQ's default of a day
    assert mailbox.expires_at == mailbox.create_time + p.DEFAULT_MAILBOX_TTL
    latest = b'{"from_id":null,"config":{"max_wait_ms":0,"num_msgs":null}}'
    fetched = json.loads(await engine.handle(p.fetch_subject("n.box"), None, latest))
    assert fetched == {"error": "", "messages": []}  # deliver absent = latest: nothing there
    await engine.handle(p.send_subject("n.box"), None, b"hello")
    earliest = b'{"deliver":"earliest","group_name":null,"config":null}'
    fetched = json.loads(await engine.handle(p.fetch_subject("n.box"), None, earliest))
    assert [m["msg_id"] for m in fetched["messages"]] == [0]


async def raw_ok(broker, subject: str, body: bytes) -> dict:
    reply = await broker.raw(subject, body)
    assert reply["error"] == "", reply
    return reply


SERDE_FORMS = [
    # serde's struct and enum forms, and its texts, as RobustMQ answers them (checked there;
    # RobustMQ's texts go on with " at line L column C", which the bundled broker leaves out)
    (p.query_subject(BOX), b'[null,["a"],null,5]', ""),
    (p.fetch_subject(BOX), b'{"deliver":{"earliest":null},"config":[10,0]}', ""),
    (p.query_subject(BOX), b'{"x":1,"x":2}', ""),
    (p.query_subject(BOX), b'{"limit":"x","key":5}',
     QUERY_BAD + 'invalid type: string "x", expected u64'),
    (p.query_subject(BOX), b'{"limit":-0}',
     QUERY_BAD + "invalid type: floating point `-0.0`, expected u64"),
    (p.query_subject(BOX), b'{"key":"a","key":"b"}', QUERY_BAD + "duplicate field `key`"),
    (p.query_subject(BOX), b'{"key":"\\udc00"}',
     QUERY_BAD + "lone leading surrogate in hex escape"),
    (p.ack_subject(BOX), b'["g"]',
     "invalid length 1, expected struct MsgAckReq with 3 elements"),
    (p.ack_subject(BOX), b'["g","a",1,2]', "trailing characters"),
    (p.fetch_subject(BOX), b'{"deliver":{"earliest":1}}',
     "invalid type: integer `1`, expected unit"),
    (p.MAILBOX_CREATE, b"[1]", CREATE_BAD + "invalid type: integer `1`, expected a string"),
    (p.MAILBOX_CREATE, b"\xff\xfe", CREATE_BAD + "expected value"),
    (p.MAILBOX_CREATE, b"{not json", CREATE_BAD + "key must be a string"),
    (p.MAILBOX_CREATE, b'{"name" "x"}', CREATE_BAD + "expected `:`"),
    (p.MAILBOX_CREATE, b'{"name":"x" "ttl":1}', CREATE_BAD + "expected `,` or `}`"),
    (p.query_subject(BOX), b'{"tags":["a" "b"]}', QUERY_BAD + "expected `,` or `]`"),
    (p.MAILBOX_CREATE, b'{"name":"x"} x', CREATE_BAD + "trailing characters"),
    (p.MAILBOX_CREATE, b'{"name":"x', CREATE_BAD + "EOF while parsing a string"),
    (p.MAILBOX_CREATE, b'{"ttl":1e400}', CREATE_BAD + "number out of range"),
    (p.MAILBOX_CREATE, b'{"ttl":NaN}', CREATE_BAD + "expected value"),
    (p.MAILBOX_CREATE, b'{"ttl":-99999999999999999999}',
     CREATE_BAD + "invalid type: floating point `-1e+20`, expected u64"),
    (p.MAILBOX_CREATE, b'{"ttl":' + b"9" * 5000 + b"}", CREATE_BAD + "number out of range"),
    (p.MAILBOX_CREATE, b'{"ttl":99999999999999999999999999999}',
     CREATE_BAD + "invalid type: floating point `1e+29`, expected u64"),
]  # fmt: skip


@pytest.mark.parametrize(("subject", "body", "error"), SERDE_FORMS)
async def test_serde_forms_and_texts_as_robustmq_answers_them(broker, subject, body, error):
    await raw_ok(broker, p.MAILBOX_CREATE, p.encode({"name": BOX}))
    reply = await broker.raw(subject, body)
    assert reply["error"].split(" at line ")[0] == error, reply


@pytest.mark.slow
async def test_a_send_while_no_broker_serves_waits_for_one_within_its_timeout(bare_nats):
    """NATS says nothing listens (between two brokers' turns on a cluster): the SEND reached
    no one, so it is sent again until a broker serves, within ``request_timeout``, and stored
    once."""
    async with Mq9Client(bare_nats.url, request_timeout=10) as client:
        sending = asyncio.ensure_future(client.send("late.box", "hello"))
        await asyncio.sleep(0.3)  # several tries find nobody
        assert not sending.done()
        engine = BrokerEngine()
        await engine.handle(p.MAILBOX_CREATE, None, p.encode({"name": "late.box"}))
        connection = await nats.connect(bare_nats.url)
        service = await serve_on_nats(engine, connection)
        try:
            assert await asyncio.wait_for(sending, 10) == 0
            assert [m.text() for m in await client.query("late.box")] == ["hello"]
        finally:
            await service.stop()
            await connection.close()


def swept(most: int) -> list[int]:
    """Seconds from 0 to 2^31-1 (what the client takes) where a sum, a unit or a timer wheel
    could turn over: every power of two and its neighbours, ``most`` and its, and the ends."""
    values = {0, 1, most - 1, most, most + 1, 2**31 - 1}
    for k in range(32):
        values |= {2**k - 1, 2**k, 2**k + 1}
    return sorted(v for v in values if 0 <= v <= 2**31 - 1)


async def test_every_delay_and_ttl_the_client_sends_leaves_delayed_delivery_alive(broker, client):
    """#100: a sweep of delays and TTLs from 0 to 2^31-1 through the client. What the broker
    cannot hold is refused in one line before it is sent (a delay past RobustMQ's delay queue)
    or, by the cluster store, for its own shorter bound; every TTL is taken. After it, RobustMQ's
    delay-queue tasks are all alive: ten 1 s delays, dealt to its five tasks in turn, all come."""
    most = p.MAX_DELAY_SECONDS
    if broker.cluster is not None:  # (its stream's retention would drop a longer delay)
        from mq9_broker.storage.jetstream import ClusterStore

        most = ClusterStore.send_limits.delay_most or most
    box = await client.mailbox_create(ttl=0)
    refused = []
    for seconds in swept(p.MAX_DELAY_SECONDS):
        try:
            await client.send(box, f"delay {seconds}", delay=seconds or None)
        except Mq9Error as exc:
            assert seconds > most and "\n" not in exc.message, (seconds, exc.message)
            refused.append(seconds)
        await client.send(box, f"ttl {seconds}", ttl=seconds or None)
    assert refused == [s for s in swept(p.MAX_DELAY_SECONDS) if s > most]
    alive = await client.mailbox_create(ttl=0)
    for i in range(10):
        await client.send(alive, f"late {i}", delay=1)
    hand_moved = broker._clock  # (RobustMQ and the cluster store keep their own time)
    if hand_moved is not None:
        hand_moved.advance(2)

    async def all_delivered() -> bool:
        return len(await client.query(alive, limit=100)) == 10

    await until(all_delivered, timeout=60, what="ten 1 s delays delivered")


async def test_a_delay_past_robustmqs_queue_is_refused_in_one_line_naming_the_bound(client):
    """#100: RobustMQ 8bd49dc's delay task panics on a deadline past its queue's wheel (2^36-1
    ms, about 795 days ahead): a delay longer than a year is refused before it is sent, in one
    line naming the bound and what to choose; a year is taken."""
    box = await client.mailbox_create()
    with pytest.raises(InvalidArgument) as caught:
        await client.send(box, "x", delay=3 * 365 * 86_400)
    text = caught.value.message
    assert "\n" not in text and str(p.MAX_DELAY_SECONDS) in text and "payload" in text
    assert await client.send(box, "x", delay=p.MAX_DELAY_SECONDS) == -1
