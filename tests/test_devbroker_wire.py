"""Bad input over the wire: every malformed request to a running dev broker gets a clear error
reply, and the broker keeps serving.

Requests go out raw with nats-py (no Mq9Client validation in front); header values that are
not UTF-8, which nats-py cannot send, go out over a plain socket speaking the NATS protocol.
"""

from __future__ import annotations

import json
import socket

import nats
import pytest
from devbroker_helpers import DevBroker

from langchain_mq9 import Mq9Client
from langchain_mq9 import protocol as p
from langchain_mq9.broker.nats_process import free_port

BOX = "wire.box"


@pytest.fixture(scope="module")
def broker():
    with DevBroker("--port", str(free_port())) as running:
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

    created = await request(p.MAILBOX_CREATE, p.encode({"name": BOX}))
    assert created["error"] in ("", p.err_mailbox_exists(BOX)), created
    yield request
    await connection.close()
    # and after all of it, the broker still serves a well-formed request
    async with Mq9Client(broker.url) as client:
        msg_id = await client.send(BOX, "still serving")
        assert [m.msg_id for m in await client.query(BOX, limit=1)] == [msg_id]


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
        refused(await wire(subject, body), "malformed")


@pytest.mark.parametrize(
    ("subject", "body", "field"),
    [
        (p.MAILBOX_CREATE, {"name": "new.box", "colour": "red"}, "colour"),
        (p.fetch_subject(BOX), {"group": "g"}, "group"),
        (p.fetch_subject(BOX), {"config": {"num_msgs": 1, "batch": 5}}, "batch"),
        (p.ack_subject(BOX), {"group_name": "g", "msg_id": 0, "all": True}, "all"),
        (p.query_subject(BOX), {"keys": ["a"]}, "keys"),
        (p.AGENT_DISCOVER, {"query": "translator"}, "query"),
    ],
)
async def test_unknown_fields_are_named(wire, subject, body, field):
    refused(await wire(subject, p.encode(body)), "unknown field", repr(field), "allowed are")


HUGE = 10**30
WRONG_NUMBERS = [
    (p.MAILBOX_CREATE, {"name": "n1", "ttl": HUGE}, "invalid ttl"),
    (p.MAILBOX_CREATE, {"name": "n2", "ttl": -1}, "invalid ttl"),
    (p.MAILBOX_CREATE, {"name": "n3", "ttl": 1.5}, "invalid ttl"),
    (p.MAILBOX_CREATE, {"name": "n4", "ttl": "10"}, "invalid ttl"),
    (p.MAILBOX_CREATE, {"name": "n5", "ttl": True}, "invalid ttl"),
    (p.fetch_subject(BOX), {"config": {"num_msgs": HUGE}}, "invalid num_msgs"),
    (p.fetch_subject(BOX), {"config": {"num_msgs": 0}}, "invalid num_msgs"),
    (p.fetch_subject(BOX), {"config": {"max_wait_ms": 10**12}}, "invalid max_wait_ms"),
    (p.fetch_subject(BOX), {"deliver": "from_id", "from_id": -1}, "invalid from_id"),
    (p.fetch_subject(BOX), {"deliver": "from_time", "from_time": HUGE}, "invalid from_time"),
    (p.ack_subject(BOX), {"group_name": "g", "msg_id": 2**64}, "invalid msg_id"),
    (p.ack_subject(BOX), {"group_name": "g", "msg_id": -1}, "invalid msg_id"),
    (p.query_subject(BOX), {"limit": HUGE}, "invalid limit"),
    (p.query_subject(BOX), {"since": -5}, "invalid since"),
    (p.AGENT_DISCOVER, {"limit": 0}, "invalid limit"),
    (p.AGENT_DISCOVER, {"page": 2**40}, "invalid page"),
]


@pytest.mark.parametrize(("subject", "body", "words"), WRONG_NUMBERS)
async def test_huge_and_wrong_numbers(wire, subject, body, words):
    refused(await wire(subject, p.encode(body)), words, "must be an integer")


async def test_numbers_json_cannot_hold_as_integers(wire):
    # 1e400 parses to infinity, NaN to not-a-number: neither is an integer
    refused(await wire(p.fetch_subject(BOX), b'{"config": {"num_msgs": 1e400}}'), "num_msgs")
    refused(await wire(p.MAILBOX_CREATE, b'{"name": "nan.box", "ttl": NaN}'), "ttl")


@pytest.mark.parametrize(
    ("header", "value", "words"),
    [
        (p.HEADER_DELAY, str(10**20), "invalid mq9-delay header"),
        (p.HEADER_TTL, "-5", "invalid mq9-ttl header"),
        (p.HEADER_TTL, "1.5", "invalid mq9-ttl header"),
        (p.HEADER_PRIORITY, "highest", "invalid priority"),
    ],
)
async def test_bad_send_header_values(wire, header, value, words):
    refused(await wire(p.send_subject(BOX), b"x", {header: value}), words)


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
                if line.startswith(b"HMSG "):  # nats-py's respond() echoes the headers
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
async def test_header_values_that_are_not_utf8(broker, wire, header, value):
    raw = RawNats(broker.url)
    try:
        answer = raw.request(p.send_subject(BOX), b"payload", [(header.encode(), value)])
        refused(answer, f"invalid {header} header", "not valid UTF-8")
        # the same request with a clean value goes through on the same connection
        clean = {
            p.HEADER_PRIORITY: b"urgent",
            p.HEADER_KEY: b"order-1",
            p.HEADER_TAGS: b"ok",
            p.HEADER_DELAY: b"0",
            p.HEADER_TTL: b"60",
        }[header]
        answer = raw.request(p.send_subject(BOX), b"payload", [(header.encode(), clean)])
        assert answer["error"] == "" and answer["msg_id"] >= 0, answer
    finally:
        raw.close()
    stored = await wire(p.query_subject(BOX), b"{}")
    assert not any("\ufffd" in json.dumps(m, ensure_ascii=False) for m in stored["messages"])


@pytest.mark.parametrize(
    ("subject", "words"),
    [
        (p.MSG_SEND + "Wire.Box", "invalid mail_address: Wire.Box"),
        (p.MSG_SEND + "wire_box", "invalid mail_address: wire_box"),
        (p.MSG_SEND + "wire%2ebox", "invalid mail_address: wire%2ebox"),
        (p.MSG_SEND + "a" * 129, "invalid mail_address"),
        (p.MSG_FETCH + "no.such.box", "mailbox no.such.box does not exist"),
        (p.MSG_DELETE + BOX + ".first", "invalid msg_id"),
        (p.MSG_DELETE + BOX + "." + "9" * 30, "invalid msg_id"),
        (p.MSG_DELETE + "wire", "DELETE"),
        (f"{p.PREFIX}.MSG.PEEK.{BOX}", "unknown mq9 command"),
        (p.MAILBOX_CREATE + ".extra", "unknown mq9 command"),
        (f"{p.PREFIX}.AGENT", "unknown mq9 command"),
    ],
)
async def test_invalid_subjects(wire, subject, words):
    refused(await wire(subject, b"{}"), words)
