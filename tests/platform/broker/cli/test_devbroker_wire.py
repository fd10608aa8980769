"""Bad input over the wire: every malformed request to a running dev broker gets the answer
RobustMQ (8bd49dc) gives, and the broker keeps serving.

Requests go out raw with nats-py; header values that are not UTF-8, which nats-py cannot send,
go out over a plain socket speaking the NATS protocol. Bodies are read the serde way (unknown
fields ignored, ``null`` = absent, numbers exactly of their Rust type); bad header values are
ignored as RobustMQ's ``send.rs`` ignores them.
"""

from __future__ import annotations

import json
import socket

import nats
import pytest

from mq9_wire import protocol as p
from testbed.support.devbroker_helpers import DevBroker

pytestmark = pytest.mark.slow

BOX = "wire.box"


@pytest.fixture(scope="module")
def broker():
    with DevBroker("--port", "0") as running:
        yield running
        # no bad input reached the broker's internal-error path or took it down
        assert running.process.poll() is None, running.output()
        status = running.stop()
        assert status == 0, running.output()
        assert not [
            line for line in running.stderr if "internal error" in line or "Traceback" in line
        ], running.output()


@pytest.fixture
async def wire(broker):
    connection = await nats.connect(broker.url)

    async def request(subject: str, body: bytes = b"", headers: dict | None = None) -> dict:
        reply = await connection.request(subject, body, timeout=5, headers=headers)
        answer = json.loads(reply.data)
        assert isinstance(answer, dict) and isinstance(answer.get("error"), str), answer
        return answer

    created = await request(p.MAILBOX_CREATE, p.encode({"name": BOX, "ttl": 0}))
    assert created["error"] in ("", p.err_mailbox_exists(BOX)), created
    yield request
    # and after all of it, the broker still serves a well-formed request
    reply = await request(p.send_subject(BOX), b"still serving")
    assert reply["error"] == "" and reply["msg_id"] >= 0, reply
    await connection.close()


def refused(answer: dict, *words: str) -> None:
    error = answer["error"]
    assert error, f"accepted: {answer}"
    assert not error.startswith("internal broker error"), error
    for word in words:
        assert word in error, error


JSON_COMMANDS = [
    p.MAILBOX_CREATE,
    p.fetch_subject(BOX),
    p.ack_subject(BOX),
    p.query_subject(BOX),
    p.AGENT_REGISTER,
    p.AGENT_UNREGISTER,
    p.AGENT_REPORT,
    p.AGENT_DISCOVER,
]
MALFORMED = [
    b"{not json",
    b'{"name": "x"',
    b"[1, 2, 3]",
    b'"a string"',
    b"42",
    b"\xff\xfe\xfa not utf-8",
    b"[" * 100_000,  # nested too deeply for a recursive parser
    b'{"ttl": ' + b"9" * 5000 + b"}",  # an integer too long to convert
]


@pytest.mark.parametrize("subject", JSON_COMMANDS)
async def test_malformed_json_bodies(wire, subject):
    for body in MALFORMED:
        refused(await wire(subject, body))


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        (p.MAILBOX_CREATE, {"colour": "red"}),
        (p.fetch_subject(BOX), {"group": "g", "config": {"max_wait_ms": 0, "batch": 5}}),
        (p.ack_subject(BOX), {"group_name": "g", "mail_address": BOX, "msg_id": 0, "all": 1}),
        (p.query_subject(BOX), {"keys": ["a"]}),
        (p.AGENT_REGISTER, {"name": "wire.agent", "payload": "p", "mailbox": BOX}),
        (p.AGENT_UNREGISTER, {"name": "wire.agent", "mailbox": BOX}),
        (p.AGENT_REPORT, {"name": "wire.agent", "status": "busy"}),
        (p.AGENT_DISCOVER, {"query": "translator"}),
    ],
)
async def test_unknown_fields_are_ignored(wire, subject, body):
    # no struct in mq9-core/src/protocol.rs denies unknown fields
    answer = await wire(subject, p.encode(body))
    assert answer["error"] == "", answer


HUGE = 10**30
BEYOND = "invalid type: floating point"  # serde_json reads a number beyond u64 and i64 as f64
WRONG_NUMBERS = [
    (p.MAILBOX_CREATE, {"ttl": HUGE}, BEYOND),
    (p.MAILBOX_CREATE, {"ttl": -1}, "invalid value"),
    (p.MAILBOX_CREATE, {"ttl": 1.5}, "invalid type"),
    (p.MAILBOX_CREATE, {"ttl": "10"}, "invalid type"),
    (p.MAILBOX_CREATE, {"ttl": True}, "invalid type"),
    (p.fetch_subject(BOX), {"config": {"num_msgs": 2**32}}, "invalid value"),
    (p.fetch_subject(BOX), {"config": {"max_wait_ms": -1}}, "invalid value"),
    (p.fetch_subject(BOX), {"deliver": "from_id", "from_id": -1}, "invalid value"),
    (p.fetch_subject(BOX), {"deliver": "from_time", "from_time": HUGE}, BEYOND),
    (p.ack_subject(BOX), {"group_name": "g", "mail_address": BOX, "msg_id": 2**64}, BEYOND),
    (p.ack_subject(BOX), {"group_name": "g", "mail_address": BOX, "msg_id": -1}, "invalid value"),
    (p.query_subject(BOX), {"limit": HUGE}, BEYOND),
    (p.query_subject(BOX), {"since": -5}, "invalid value"),
    (p.AGENT_DISCOVER, {"page": 2**40}, "invalid value"),
    (p.AGENT_DISCOVER, {"limit": -1}, "invalid value"),
]


@pytest.mark.parametrize(("subject", "body", "words"), WRONG_NUMBERS)
async def test_numbers_outside_their_rust_type(wire, subject, body, words):
    refused(await wire(subject, p.encode(body)), words)


@pytest.mark.parametrize(
    ("subject", "body"),
    [
        (p.fetch_subject(BOX), {"config": {"num_msgs": 0, "max_wait_ms": 0}}),
        (p.fetch_subject(BOX), {"config": {"num_msgs": 2**32 - 1, "max_wait_ms": 0}}),
        (p.query_subject(BOX), {"limit": 2**64 - 1, "since": 2**64 - 1}),
        (p.AGENT_DISCOVER, {"limit": 0, "page": 0}),
        (p.MAILBOX_CREATE, {"ttl": 2**64 - 1}),
    ],
)
async def test_numbers_at_the_edges_of_their_rust_type(wire, subject, body):
    answer = await wire(subject, p.encode(body))
    assert answer["error"] == "", answer


async def test_numbers_json_cannot_hold_as_integers(wire):
    # 1e400 is out of any range, NaN is no JSON at all
    refused(await wire(p.fetch_subject(BOX), b'{"config": {"num_msgs": 1e400}}'))
    refused(await wire(p.MAILBOX_CREATE, b'{"name": "nan.box", "ttl": NaN}'))


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (p.HEADER_DELAY, str(10**20)),  # beyond u64
        (p.HEADER_DELAY, "-5"),
        (p.HEADER_TTL, "-5"),
        (p.HEADER_TTL, "1.5"),
        (p.HEADER_PRIORITY, "highest"),
    ],
)
async def test_bad_send_header_values_are_ignored(wire, header, value):
    # send.rs: .parse().ok() and Priority::parse(..).unwrap_or(Normal)
    answer = await wire(p.send_subject(BOX), b"x", {header: value})
    assert answer["error"] == "" and answer["msg_id"] >= 0, answer
    stored = await wire(p.query_subject(BOX), p.encode({"limit": 100}))
    assert stored["error"] == ""


class RawNats:
    """Just enough of the NATS client protocol to publish bytes nats-py would not send."""

    def __init__(self, url: str) -> None:
        host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=5)
        self.buffer = b""
        self.sock.sendall(
            b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,'
            b'"protocol":1}\r\nSUB _INBOX.raw 1\r\nPING\r\n'
        )
        while self._line() != b"PONG":
            pass

    def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            assert chunk, "nats-server closed the connection"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _payload(self, size: int) -> bytes:
        while len(self.buffer) < size + 2:
            self.buffer += self.sock.recv(65536)
        data, self.buffer = self.buffer[:size], self.buffer[size + 2 :]
        return data

    def request(self, subject: str, body: bytes, headers: list[tuple[bytes, bytes]]) -> dict:
        block = b"NATS/1.0\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n"
        self.sock.sendall(
            b"HPUB %s _INBOX.raw %d %d\r\n%s%s\r\n"
            % (subject.encode(), len(block), len(block) + len(body), block, body)
        )
        while True:
            line = self._line()
            if line == b"PING":
                self.sock.sendall(b"PONG\r\n")
            elif line.startswith((b"MSG ", b"HMSG ")):
                data = self._payload(int(line.split()[-1]))
                if line.startswith(b"HMSG "):  # headers: the bundled broker echoed them until #22
                    data = data[int(line.split()[-2]) :]
                return json.loads(data)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (p.HEADER_PRIORITY, b"\xff\xfe"),
        (p.HEADER_KEY, b"order-\xff"),
        (p.HEADER_TAGS, b"ok,\xc3("),
        (p.HEADER_DELAY, b"\x80"),
        (p.HEADER_TTL, b"1\xff"),
    ],
)
async def test_a_header_block_that_is_not_utf8_sets_no_mq9_header(broker, wire, header, value):
    """send.rs parse_mq9_headers: a header block that is not UTF-8 leaves every mq9 header at
    its default, even the well-formed ones beside it: the message is stored at once, normal,
    without key, tags or TTL."""
    box = f"wire.utf8.{header.replace('-', '.')}"
    created = await wire(p.MAILBOX_CREATE, p.encode({"name": box, "ttl": 0}))
    assert created["error"] in ("", p.err_mailbox_exists(box)), created
    raw = RawNats(broker.url)
    try:
        extra = [
            (name, clean)
            for name, clean in ((b"mq9-priority", b"critical"), (b"mq9-tags", b"clean"))
            if name != header.encode()
        ]
        answer = raw.request(p.send_subject(box), b"payload", [(header.encode(), value), *extra])
        assert answer["error"] == "" and answer["msg_id"] >= 0, answer
        # the same request without the bad value takes its headers
        extra = [(b"mq9-priority", b"critical"), (b"mq9-tags", b"clean")]
        answer = raw.request(p.send_subject(box), b"clean", extra)
        assert answer["error"] == "" and answer["msg_id"] >= 0, answer
    finally:
        raw.close()
    stored = await wire(p.query_subject(box), b"{}")
    by_payload = {m["payload"]: m for m in stored["messages"]}
    assert by_payload["payload"]["priority"] == "normal"
    assert by_payload["clean"]["priority"] == "critical"
    tagged = await wire(p.query_subject(box), p.encode({"tags": ["clean"]}))
    assert [m["payload"] for m in tagged["messages"]] == ["clean"]


@pytest.mark.parametrize(
    ("subject", "error"),
    [
        (p.MSG_SEND + "Wire.Box", "mailbox Wire.Box does not exist"),
        (p.MSG_SEND + "wire_box", "mailbox wire_box does not exist"),
        (p.MSG_SEND + "wire%2ebox", "mailbox wire%2ebox does not exist"),
        (p.MSG_SEND + "a" * 129, f"mailbox {'a' * 129} does not exist"),
        (
            p.MSG_FETCH + "no.such.box",
            "Tenant default topic 'no.such.box' not found in broker cache",
        ),
        (p.MSG_DELETE + BOX + ".first", "invalid msg_id: first"),
        (p.MSG_DELETE + BOX + "." + "9" * 30, "invalid msg_id: " + "9" * 30),
        (p.MSG_DELETE + "wire", f"unrecognized mq9 subject: {p.MSG_DELETE}wire"),
        (f"{p.PREFIX}.MSG.PEEK.{BOX}", f"unrecognized mq9 subject: {p.PREFIX}.MSG.PEEK.{BOX}"),
        (p.MAILBOX_CREATE + ".extra", f"unrecognized mq9 subject: {p.MAILBOX_CREATE}.extra"),
        (f"{p.PREFIX}.AGENT", f"unrecognized mq9 subject: {p.PREFIX}.AGENT"),
    ],
)
async def test_subjects(wire, subject, error):
    assert await wire(subject, b"{}") == {"error": error}
