"""Hostile input (#12 items 10 and 13): every request the broker can receive gets a clear error
reply, never no reply and never an "internal broker error"; the client refuses text that is
not UTF-8 with an ``Mq9Error`` before anything is sent.

Lone surrogates arrive two ways: as JSON escapes (``"\\ud800"``, valid JSON text that serde
refuses) and as raw bytes that are not UTF-8. Over a real nats-server the raw bytes also go in
a subject and a header, written on a plain socket since nats-py cannot send them.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mq9_broker import BrokerEngine, ManualClock
from mq9_platform import Mq9Error
from mq9_wire import protocol as p
from testbed.support.raw_nats import socket_request

pytestmark = pytest.mark.slow

ESCAPE = '"\\ud800"'  # a JSON escape of a lone surrogate, as it travels (ASCII)
BAD_BYTES = b'"\xff\xfe"'  # a JSON string whose bytes are not UTF-8

# One body per request path, with the hostile string in each string field in turn: {} marks
# where it goes.
BODIES = {
    p.MAILBOX_CREATE: ['{"name":{}}', '{"desc":{}}'],
    p.MSG_FETCH + "box": ['{"group_name":{}}', '{"deliver":{}}'],
    p.MSG_ACK + "box": [
        '{"group_name":"g","mail_address":{},"msg_id":0}',
        '{"group_name":{},"mail_address":"box","msg_id":0}',
    ],
    p.MSG_QUERY + "box": ['{"key":{}}', '{"tags":["a",{}]}'],
    p.AGENT_REGISTER: [
        '{"name":{},"payload":"x"}',
        '{"name":"a","payload":{}}',
        '{"name":{},"description":"card"}',
        '{"name":"a","skills":[{"name":{}}]}',
    ],
    p.AGENT_UNREGISTER: ['{"name":{}}'],
    p.AGENT_REPORT: ['{"name":{}}', '{"name":"a","report_info":{}}'],
    p.AGENT_DISCOVER: ['{"text":{}}', '{"semantic":{}}'],
}
CASES = [(subject, body) for subject, bodies in BODIES.items() for body in bodies]


def _assert_clear(reply: dict, *words: str) -> None:
    error = reply["error"]
    assert error, reply
    assert "internal broker error" not in error, error
    assert any(word in error for word in words), error


def _serde_words(template: str, words: str) -> str:
    """What serde_json says (RobustMQ, checked there): the bad text where a field's string is
    read; nothing where it is skipped, as in a card's skills that fall back to the
    {name, payload} form (agent.rs), which then misses its payload."""
    return "missing field `payload`" if '"skills"' in template else words


async def _setup(broker) -> None:
    created = await broker.raw(p.MAILBOX_CREATE, b'{"name":"box"}')
    assert created["error"] == ""


@pytest.mark.parametrize(("subject", "template"), CASES)
async def test_lone_surrogate_escape_in_every_request_is_refused_clearly(broker, subject, template):
    await _setup(broker)
    reply = await broker.raw(subject, template.replace("{}", ESCAPE).encode())
    _assert_clear(reply, _serde_words(template, p.ERR_LEAD_SURROGATE))


@pytest.mark.parametrize(("subject", "template"), CASES)
async def test_invalid_utf8_bytes_in_every_request_body_are_refused_clearly(
    broker, subject, template
):
    await _setup(broker)
    head, tail = template.split("{}")
    reply = await broker.raw(subject, head.encode() + BAD_BYTES + tail.encode())
    _assert_clear(reply, _serde_words(template, p.ERR_NOT_UNICODE))


async def test_send_body_with_lone_surrogate_escape_is_stored_as_sent(broker):
    """A SEND body is a payload, not JSON: its bytes are kept, whatever they hold."""
    await _setup(broker)
    sent = await broker.raw(p.MSG_SEND + "box", ESCAPE.encode())
    assert sent["error"] == "" and sent["msg_id"] == 0
    found = await broker.raw(p.MSG_QUERY + "box", b"{}")
    assert [m["payload"] for m in found["messages"]] == [ESCAPE]


# -- raw bytes a client library cannot send: a plain socket to nats-server ---------------------


async def _raw_socket(url: str, subject: bytes, body: bytes, headers: bytes | None = None):
    data = await asyncio.to_thread(socket_request, url, subject, body, headers, timeout=5)
    return None if data is None else json.loads(data)


async def test_subject_with_invalid_utf8_bytes_is_answered_and_the_broker_keeps_serving(
    nats_broker,
):
    """Before the fix nats-py's strict decode of the subject ended the serving connection's
    read loop: no reply, and no reply to anyone after."""
    await _setup(nats_broker)
    for subject in (b"$mq9.AI.MSG.SEND.b\xffx", b"$mq9.AI.MSG.FETCH.b\xffx", b"$mq9.AI.X\xfe"):
        reply = await _raw_socket(nats_broker.url, subject, b"{}")
        assert reply is not None, subject
        _assert_clear(reply, "does not exist", "not found", "unrecognized")
    after = await nats_broker.raw(p.MSG_SEND + "box", b"still served")
    assert after == {"error": "", "msg_id": 0}


async def test_header_with_invalid_utf8_bytes_is_answered(nats_broker):
    await _setup(nats_broker)
    headers = b"NATS/1.0\r\nmq9-key: \xff\xfe\r\nmq9-tags: a\r\n\r\n"
    reply = await _raw_socket(nats_broker.url, b"$mq9.AI.MSG.SEND.box", b"x", headers)
    # send.rs reads a header block that is not UTF-8 as no mq9 headers at all
    assert reply == {"error": "", "msg_id": 0}
    found = await nats_broker.raw(p.MSG_QUERY + "box", b'{"tags":["a"]}')
    assert found["messages"] == []


# -- str with lone surrogates handed to the engine in process ----------------------------------


@pytest.mark.parametrize(
    ("subject", "headers"),
    [
        (p.MSG_SEND + "b\udc80x", None),
        (p.MSG_FETCH + "b\udc80x", None),
        (p.MSG_QUERY + "b\udc80x", None),
        (p.MSG_DELETE + "box.\udc80", None),
        (p.MSG_DELETE + "b\udc80x.1", None),
        (p.PREFIX + ".\udc80", None),
        (p.MSG_SEND + "box", {p.HEADER_KEY: "\ud800"}),
        (p.MSG_SEND + "box", {p.HEADER_TAGS: "a,\ud800"}),
        (p.MSG_SEND + "box", {"x-\ud800": "1"}),
    ],
)
async def test_engine_answers_lone_surrogates_in_subjects_and_headers(subject, headers):
    engine = BrokerEngine(clock=ManualClock())
    await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"box"}')
    reply = json.loads((await engine.handle(subject, headers, b"{}")).decode("utf-8"))
    _assert_clear(reply, "exist", "not found", "invalid", "unrecognized", "UTF-8")


# -- the client refuses first ------------------------------------------------------------------

BAD = "a\ud800"


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.mailbox_create(desc=BAD),
        lambda c: c.send("box", "x", key=BAD),
        lambda c: c.send("box", "x", tags=[BAD]),
        lambda c: c.send("box", BAD),
        lambda c: c.fetch("box", group_name=BAD),
        lambda c: c.ack("box", BAD, 0),
        lambda c: c.query("box", key=BAD),
        lambda c: c.query("box", tags=[BAD]),
        lambda c: c.agent_register({"name": BAD, "payload": "x"}),
        lambda c: c.agent_register({"name": "a", "description": BAD}),
        lambda c: c.agent_unregister(BAD),
        lambda c: c.agent_report({"name": BAD}),
        lambda c: c.agent_report({"name": "a", "status": BAD}),
        lambda c: c.agent_discover(text=BAD),
        lambda c: c.agent_discover(semantic=BAD),
    ],
)
async def test_client_refuses_lone_surrogates_with_mq9_error(broker, call):
    async with broker.client() as client:
        await client.mailbox_create(name="box")
        with pytest.raises((Mq9Error, ValueError), match="surrogate") as raised:
            await call(client)
        assert not isinstance(raised.value, UnicodeError)


# -- every request shape with every field of a wrong JSON type ---------------------------------

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
SHAPES = {
    p.MAILBOX_CREATE: p.CREATE_REQUEST,
    p.MSG_FETCH + "box": p.FETCH_REQUEST,
    p.MSG_ACK + "box": p.ACK_REQUEST,
    p.MSG_QUERY + "box": p.QUERY_REQUEST,
    p.AGENT_REGISTER: p.REGISTER_REQUEST,
    p.AGENT_UNREGISTER: p.UNREGISTER_REQUEST,
    p.AGENT_REPORT: p.REPORT_REQUEST,
    p.AGENT_DISCOVER: p.DISCOVER_REQUEST,
}
CARD_FIELDS = sorted({*p.A2A_CARD_FIELDS, "mailbox", "payload"})


def _fields(shape: p.Shape) -> list[str]:
    return [f for f, spec in shape.fields.items() if not isinstance(spec, p.Shape)]


# any code point, lone surrogates included (hypothesis leaves them out by default)
ODD = st.sampled_from(["a", ",", " ", "\ud800", "\udc80", "\ufffd"])
ANY_TEXT = st.text(ODD | st.characters() | st.characters(categories=["Cs"]), max_size=6)
MQ9_HEADERS = [p.HEADER_KEY, p.HEADER_TAGS, p.HEADER_TTL, p.HEADER_DELAY, p.HEADER_PRIORITY]


@st.composite
def _requests(draw) -> tuple[str, dict | None, bytes]:
    subject = draw(st.sampled_from([*SHAPES, "card", "send", "subject"]))
    if subject == "send":  # headers as a transport in process may hand them over
        headers = draw(st.dictionaries(st.sampled_from(MQ9_HEADERS) | ANY_TEXT, ANY_TEXT))
        return p.MSG_SEND + "box", headers, draw(st.binary(max_size=20))
    if subject == "subject":  # any subject under the prefix, bodies of any bytes
        prefix = st.sampled_from([p.MSG_SEND, p.MSG_FETCH, p.MSG_ACK, p.MSG_QUERY, p.MSG_DELETE])
        suffix = draw(prefix) + draw(st.sampled_from(["", "box", "box."]) | ANY_TEXT)
        return suffix, None, draw(st.sampled_from([b"", b"x", b'{"config":{"max_wait_ms":0}}']))
    if subject == "card":  # a REGISTER body shaped like an A2A card, fields of any type
        names = st.sampled_from(CARD_FIELDS)
        body = draw(st.dictionaries(names, JSON, max_size=4))
        return p.AGENT_REGISTER, None, json.dumps(body).encode()
    shape = SHAPES[subject]
    body = draw(st.dictionaries(st.sampled_from([*_fields(shape), "config"]), JSON, max_size=4))
    if shape is p.FETCH_REQUEST and body.get("config") is None:
        body["config"] = {}
    if isinstance(body.get("config"), dict):
        body["config"]["max_wait_ms"] = 0  # an empty FETCH would wait (the default 500 ms)
    return subject, None, json.dumps(body).encode()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests=st.lists(_requests(), min_size=1, max_size=4))
@example(requests=[(p.MSG_SEND + "box", {"\ud800": ""}, b"")])
@example(requests=[(p.MSG_QUERY + "b\udc80", None, b"")])
def test_no_request_shape_gets_an_internal_error(requests):
    async def run() -> None:
        engine = BrokerEngine(clock=ManualClock())
        await engine.handle(p.MAILBOX_CREATE, None, b'{"name":"box"}')
        for subject, headers, body in requests:
            raw = await engine.handle(subject, headers, body)
            reply = json.loads(raw.decode("utf-8"))
            assert isinstance(reply.get("error"), str), reply
            assert "internal broker error" not in reply["error"], (subject, body, reply)

    asyncio.run(run())


@pytest.mark.parametrize(
    ("subject", "body", "expected"),
    [
        (p.AGENT_UNREGISTER, b'{"name":{}}', "invalid type: map, expected a string"),
        (p.AGENT_REPORT, b'{"name":[1]}', "invalid type: sequence, expected a string"),
        (p.AGENT_REPORT, b'{"name":"a","report_info":3}', "invalid type: integer `3`"),
        (p.MSG_ACK + "box", b'{"group_name":"g","mail_address":{},"msg_id":0}', "map"),
    ],
)
async def test_wrong_types_get_serde_texts(broker, subject, body, expected):
    await _setup(broker)
    _assert_clear(await broker.raw(subject, body), expected)
