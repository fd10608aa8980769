"""Wire fuzz (issue #22): random and mutated mq9 requests and raw NATS frames against a real
``python -m mq9_broker --data DIR`` on its own nats-server, on loopback.

Each case is drawn from one seeded ``random.Random`` (the same seed writes the same bytes):
a valid request, a valid request with one mutation (a field's type, a flipped byte, cut JSON,
huge numbers, -0, deep nesting, lone-surrogate escapes, bytes that are not UTF-8, odd headers,
odd subjects, empty bodies, arrays for objects...), random bytes on an mq9 subject, or a raw
NATS frame (malformed control lines, wrong sizes, broken header blocks). Every 25 cases an
honest ``Mq9Client`` sends a message to its own mailbox and reads it back.

What must hold: the broker never exits and never logs or answers an internal error; every
request nats-server delivered to it with a reply subject is answered with JSON holding a
string ``error``; the honest client is answered every time; and after a kill -9 and a restart
on the same data, every message the honest client was told was stored is served.

Which requests the broker was given is not guessed from what was written: nats-server refuses
some frames itself (and closes a raw connection on a protocol error, which is its rule, not
the broker's; the fuzz then opens another). A witness connection subscribed to the broker's
own subject sees exactly what nats-server delivers to the broker, so each of those deliveries
that carries one of the fuzz's reply subjects must get its answer.

    MQ9_FUZZ_SEED=7 MQ9_FUZZ_COUNT=20000 python -m pytest -q -s
    tests/platform/broker/cli/test_wire_fuzz.py

(``-s`` prints the counts.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import pytest

from mq9_platform import Mq9Client
from mq9_wire import protocol as p
from mq9_wire.nats_floor.server_process import LARGEST_MAX_PAYLOAD
from testbed.ports import unclaimed_port
from testbed.support.devbroker_helpers import DevBroker, port_open, process_alive, wait_until
from testbed.support.raw_nats import CRLF, RawPeer, frame

pytestmark = pytest.mark.slow

# Issue #22 asks for at least 5,000; they take about 5 s on 2 busy cores.
COUNT = int(os.environ.get("MQ9_FUZZ_COUNT", "5000"))
SEED = int(os.environ.get("MQ9_FUZZ_SEED", "22"))
HONEST_EVERY = 25
# How long an answer may take beyond the wait its request asked for (a loaded 2-core box).
ANSWER_SLACK = 10.0
# A FETCH that finds nothing waits its max_wait_ms before answering, as RobustMQ does; one
# asking for longer than this is not waited for (it is counted, not judged).
LONGEST_AWAITED_WAIT = 2.0
SETTLE_TIMEOUT = 10.0  # nats-server answers a PING in microseconds; a failure waits this

REPLY_PREFIX = b"_FUZZ."
_OUR_REPLY = re.compile(rb"_FUZZ\.(\d+)")
_SEPARATORS = re.compile(rb"[ \t]+")  # nats-server's argument separators
WITNESS_SID, ANSWER_SID = b"1", b"2"

BOXES = ("fuzz.a", "fuzz.b", "fuzz.c")  # made before the fuzz, so valid requests find them
GROUPS = ("g1", "g2", "workers")
TAGS = ("red", "green", "team/alpha", "team")
AGENTS = tuple(f"fuzz-agent-{n}" for n in range(8))
INTERNAL_ERROR = "internal broker error"  # engine.handle's words for a bug


# -- what is written ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    """One mq9 request as bytes: the subject, the NATS header block (b"" for none), the body."""

    subject: bytes
    body: bytes
    header: bytes = b""


@dataclass(frozen=True)
class Case:
    kind: str
    frame: bytes
    # False when the frame declares more bytes than it carries: nats-server waits for them, so
    # the connection is hung up instead of synced
    complete: bool = True

    def shown(self, limit: int = 400) -> str:
        text = repr(self.frame)
        return text if len(text) <= limit else f"{text[:limit]}... ({len(self.frame)} bytes)"


def _box(rng: random.Random) -> str:
    return rng.choice(BOXES)


def _valid_create(rng: random.Random) -> Request:
    name = rng.choice([None, f"fuzz.n{rng.randrange(100)}", _box(rng)])
    body = p.CREATE_REQUEST.body(
        name=name, ttl=rng.choice([None, 0, 60, 86_400]), desc=rng.choice([None, "", "fuzzed"])
    )
    return Request(p.MAILBOX_CREATE.encode(), body)


def _valid_send(rng: random.Random) -> Request:
    headers = {}
    if rng.random() < 0.5:
        headers[p.HEADER_PRIORITY] = rng.choice([x.value for x in p.Priority])
    if rng.random() < 0.3:
        headers[p.HEADER_KEY] = f"k{rng.randrange(5)}"
    if rng.random() < 0.3:
        headers[p.HEADER_TAGS] = ",".join(rng.sample(TAGS, rng.randint(1, 3)))
    if rng.random() < 0.1:
        headers[p.HEADER_DELAY] = str(rng.randrange(3))
    if rng.random() < 0.2:
        headers[p.HEADER_TTL] = str(rng.choice([1, 60, 3600]))
    body = p.encode({"n": rng.randrange(1000), "text": "fuzz " * rng.randrange(6)})
    return Request(p.send_subject(_box(rng)).encode(), body, p.header_block(headers) or b"")


def _valid_fetch(rng: random.Random) -> Request:
    body = p.FETCH_REQUEST.body(
        group_name=rng.choice([None, *GROUPS]),
        deliver=rng.choice(p.DELIVER_POLICIES),
        # before and after every message (fixed times: the same seed, the same bytes)
        from_time=rng.choice([None, 0, 1_700_000_000, 4_000_000_000]),
        from_id=rng.choice([None, rng.randrange(80)]),
        force_deliver=rng.choice([None, False, True]),
        # 0: a FETCH that finds nothing answers at once (the fuzz waits on no one)
        config={"num_msgs": rng.randint(1, 20), "max_wait_ms": 0},
    )
    return Request(p.fetch_subject(_box(rng)).encode(), body)


def _valid_ack(rng: random.Random) -> Request:
    box = _box(rng)
    body = p.ACK_REQUEST.body(
        group_name=rng.choice(GROUPS), mail_address=box, msg_id=rng.randrange(80)
    )
    return Request(p.ack_subject(box).encode(), body)


def _valid_query(rng: random.Random) -> Request:
    body = p.QUERY_REQUEST.body(
        key=rng.choice([None, f"k{rng.randrange(5)}"]),
        tags=rng.choice([None, list(rng.sample(TAGS, 2))]),
        since=rng.choice([None, 0, rng.randrange(80)]),
        limit=rng.choice([None, 1, 10, 1000]),
    )
    return Request(p.query_subject(_box(rng)).encode(), body)


def _valid_delete(rng: random.Random) -> Request:
    return Request(p.delete_subject(_box(rng), rng.randrange(80)).encode(), b"")


def _valid_register(rng: random.Random) -> Request:
    name = rng.choice(AGENTS)
    if rng.random() < 0.5:
        return Request(p.AGENT_REGISTER.encode(), p.REGISTER_REQUEST.body(name=name, payload="x"))
    card = p.agent_card(name, mailbox=_box(rng), description="fuzzes", skills=["fuzzing"])
    return Request(p.AGENT_REGISTER.encode(), p.encode(card))


def _valid_unregister(rng: random.Random) -> Request:
    return Request(p.AGENT_UNREGISTER.encode(), p.UNREGISTER_REQUEST.body(name=rng.choice(AGENTS)))


def _valid_report(rng: random.Random) -> Request:
    body = p.REPORT_REQUEST.body(name=rng.choice(AGENTS), report_info=rng.choice([None, "busy"]))
    return Request(p.AGENT_REPORT.encode(), body)


def _valid_discover(rng: random.Random) -> Request:
    body = p.DISCOVER_REQUEST.body(
        text=rng.choice([None, "fuzz", ""]),
        semantic=rng.choice([None, "an agent that fuzzes"]),
        limit=rng.choice([None, 1, 5]),
        page=rng.choice([None, 0, 1]),
    )
    return Request(p.AGENT_DISCOVER.encode(), body)


VALID = (
    _valid_create,
    _valid_send,
    _valid_send,
    _valid_fetch,
    _valid_ack,
    _valid_query,
    _valid_delete,
    _valid_register,
    _valid_unregister,
    _valid_report,
    _valid_discover,
)

# -- mutations: each changes one thing of a valid request ---------------------------------------

# Raw JSON for a field's value: other types, numbers at and past every integer bound, -0,
# lone surrogates, bytes that are not UTF-8, and what JSON does not have.
ODD_VALUES = (
    b"null",
    b"true",
    b"false",
    b"-1",
    b"0",
    b"-0",
    b"-0.0",
    b"1.5",
    b"1e400",
    b"-1e400",
    b"4294967295",
    b"4294967296",
    b"9223372036854775808",
    b"18446744073709551615",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"1" + b"0" * 400,
    b'""',
    b'"x"',
    b'"\\ud800"',
    b'"\\udc00\\ud800"',
    b'"a\\u0000b"',
    b'"\xff\xfe"',
    b'"\xed\xa0\x80"',
    b"[]",
    b"{}",
    b'["earliest"]',
    b'{"earliest": null}',
    b'{"earliest": 1}',
    b'{"a": 1}',
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"'single'",
    b"0x10",
    b"+1",
    b"01",
    b'"' + b"z" * 5000 + b'"',
)
# Every field of every request body, so a mutation may also add one the body left out.
FIELDS = sorted(
    {
        name
        for shape in (
            p.CREATE_REQUEST,
            p.FETCH_REQUEST,
            p.FETCH_CONFIG,
            p.ACK_REQUEST,
            p.QUERY_REQUEST,
            p.REGISTER_REQUEST,
            p.REPORT_REQUEST,
            p.DISCOVER_REQUEST,
        )
        for name in shape.fields
    }
)
_MARK = "\x01fuzz-mark"


def _object(body: bytes) -> dict:
    try:
        value = json.loads(body)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _with_value(obj: dict, name: str, raw: bytes) -> bytes:
    """``obj`` as JSON with ``name`` set to the raw JSON text ``raw`` (which may be invalid)."""
    text = json.dumps({**obj, name: _MARK}).encode()
    return text.replace(json.dumps(_MARK).encode(), raw)


def _retype_field(request: Request, rng: random.Random) -> Request:
    obj = _object(request.body)
    name = rng.choice([*obj, *FIELDS])
    return replace(request, body=_with_value(obj, name, rng.choice(ODD_VALUES)))


def _nest(request: Request, rng: random.Random) -> Request:
    depth = rng.choice([64, 127, 128, 129, 1000, 3000])
    if rng.random() < 0.5:  # the whole body, or one field
        return replace(request, body=b"[" * depth + request.body + b"]" * depth)
    deep = b'{"a":' * depth + b"1" + b"}" * depth
    obj = _object(request.body)
    return replace(request, body=_with_value(obj, rng.choice([*obj, *FIELDS]), deep))


def _flip_byte(request: Request, rng: random.Random) -> Request:
    body = bytearray(request.body or b"{}")
    body[rng.randrange(len(body))] ^= rng.randint(1, 255)
    return replace(request, body=bytes(body))


def _truncate(request: Request, rng: random.Random) -> Request:
    body = request.body or b"{}"
    return replace(request, body=body[: rng.randrange(len(body))])


def _insert_not_utf8(request: Request, rng: random.Random) -> Request:
    body = request.body or b"{}"
    at = rng.randrange(len(body) + 1)
    bad = rng.choice([b"\xff", b"\x80", b"\xc3(", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80"])
    return replace(request, body=body[:at] + bad + body[at:])


def _empty_body(request: Request, rng: random.Random) -> Request:
    return replace(request, body=rng.choice([b"", b" ", b"\r\n", b"\t", b"\x00"]))


def _array_for_object(request: Request, rng: random.Random) -> Request:
    values = list(_object(request.body).values())
    values = rng.choice([values, values[:-1], [*values, None], [], [values]])
    return replace(request, body=json.dumps(values).encode())


def _scalar_for_object(request: Request, rng: random.Random) -> Request:
    return replace(request, body=rng.choice(ODD_VALUES))


def _duplicate_field(request: Request, rng: random.Random) -> Request:
    obj = _object(request.body)
    name = rng.choice([*obj, *FIELDS])
    first = _with_value(obj, name, rng.choice(ODD_VALUES))
    return replace(request, body=first[:-1] + b"," + json.dumps(name).encode() + b":1}")


def _extra_text(request: Request, rng: random.Random) -> Request:
    before = rng.choice([b"", b"\xef\xbb\xbf", b" "])
    after = rng.choice([b"", b"x", b"}", b"\x00", b"{}", b" \n"])
    return replace(request, body=before + request.body + after)


def _unknown_fields(request: Request, rng: random.Random) -> Request:
    obj = _object(request.body)
    obj.update({f"unknown{n}": rng.choice([1, "x", None, [1], {"a": 1}]) for n in range(3)})
    return replace(request, body=json.dumps(obj).encode())


def _large_body(request: Request, rng: random.Random) -> Request:
    size = rng.choice([4_096, 65_536, 300_000])
    return replace(request, body=rng.randbytes(size) if rng.random() < 0.3 else b"x" * size)


ODD_HEADER_VALUES = (
    b"",
    b" ",
    b"critical",
    b"CRITICAL",
    b" urgent ",
    b"-1",
    b"0",
    b"+5",
    b" 7 ",
    b"18446744073709551615",
    b"18446744073709551616",
    b"1e3",
    b"0x10",
    b"1" * 400,
    b"\xef\xbc\x95",
    b"\xd9\xa3",
    b"\xff\xfe",
    b"\xed\xa0\x80",
    b"a,b,,c",
    b",,,",
    b"x" * 3000,
    b"\x00",
    b"a\tb",
)
# Names too that nats-py reads but would refuse to write (not RFC 7230 tokens)
ODD_HEADER_NAMES = (
    b"mq9-priority",
    b"MQ9-PRIORITY",
    b"mq9-key",
    b"mq9-tags",
    b"mq9-delay",
    b"mq9-ttl",
    b"Mq9-Ttl",
    b"x-other",
    b"mq9-delay ",
    b"\xff",
    b"",
    b"mq9/key",
    b"[mq9-key]",
    b"a b",
)
BROKEN_HEADER_BLOCKS = (
    b"NATS/1.0\r\n\r\n",
    b"NATS/1.0 503\r\n\r\n",
    b"NATS/1.0 100 Idle Heartbeat\r\nmq9-key: x\r\n\r\n",
    b"NATS/1.0\r\nno colon here\r\n\r\n",
    b"NATS/1.0\r\n: no name\r\n\r\n",
    b"NATS/1.0\r\nmq9-key: x\r\n",
    b"NATS/1.0\r\nmq9-key: x",
    b"NATS/1.0\nmq9-key: x\n\n",
    b"NATS/2.0\r\nmq9-key: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\n",
    b"NATS/1.0\r\n",
    b"NATS/1.0\r\n\tfolded: x\r\n continued\r\n\r\n",
    b"NATS/1.0\r\n" + b"x-many: 1\r\n" * 300 + b"\r\n",
    b"NATS/1.0\r\nmq9-key: a\r\nmq9-key: b\r\n\r\n",
    b"NATS/1.0\r\nmq9-priority: critical\r\nmq9-tags: \xff\r\n\r\n",
)
# Header blocks nats-py cannot read: at most 8 bytes (IndexError in _process_headers), a status
# line or description that is not UTF-8 (UnicodeDecodeError). This fuzz found nats_guard's
# parser dropping such a frame, so the request went unanswered; it now delivers the request
# without its header block (as RobustMQ's SEND ignores a block it cannot read).
UNREADABLE_HEADER_BLOCKS = (
    b"N",
    b"NATS/1.0",
    b"\r\n\r\n",
    b"NATS/1.0 \xff\xfe \xff\r\n\r\n",
    b"NATS/1.0 100 \xff\r\n\r\n",
)
BROKEN_HEADER_BLOCKS += UNREADABLE_HEADER_BLOCKS


def _header_size_inside(header: bytes, rng: random.Random) -> int:
    """A header size that ends anywhere inside ``header`` (nats-py may not read it)."""
    return rng.randrange(len(header) + 1)


def _odd_headers(request: Request, rng: random.Random) -> Request:
    if rng.random() < 0.4:
        return replace(request, header=rng.choice(BROKEN_HEADER_BLOCKS))
    lines = b"".join(
        rng.choice(ODD_HEADER_NAMES) + b": " + rng.choice(ODD_HEADER_VALUES) + CRLF
        for _ in range(rng.randint(1, 4))
    )
    return replace(request, header=b"NATS/1.0\r\n" + lines + CRLF)


ODD_ADDRESSES = (
    b"",
    b"UPPER",
    b"caf\xc3\xa9",
    b"\xff\xfe",
    b"a\x0bb",
    b"a\x0cb",
    b"a\rb",
    b"\x00",
    b"*",
    b">",
    b"a..b",
    b".a",
    b"a.",
    b"fuzz.a.",
    b"fuzz.a.extra.tokens",
    b"a" * 3800,
    b"a" * 3801,
    b"b" * 3990,  # with the rest of its HPUB line, just under nats-server's 4,096
)
ODD_MSG_IDS = (b"", b"abc", b"-1", b"18446744073709551616", b"1.5", b"\xd9\xa3", b"00001", b"+1")
ODD_SUBJECTS = (
    b"$mq9.AI",
    b"$mq9.AI.",
    b"$mq9.AI.MSG",
    b"$mq9.AI.MSG.PURGE.fuzz.a",
    b"$mq9.AI.MSG.SEND",
    b"$mq9.AI.MAILBOX.CREATE.extra",
    b"$mq9.AI.AGENT.DISCOVER.x",
    b"$mq9.AI.AGENT",
    b"$mq9.AI.>",
    b"$mq9.AI.*.SEND.fuzz.a",
    b"$mq9.AI.mailbox.create",
)


def _odd_subject(request: Request, rng: random.Random) -> Request:
    roll = rng.random()
    if roll < 0.5:
        verb = rng.choice([p.MSG_SEND, p.MSG_FETCH, p.MSG_ACK, p.MSG_QUERY]).encode()
        return replace(request, subject=verb + rng.choice(ODD_ADDRESSES))
    if roll < 0.8:
        address = rng.choice([*BOXES, "fuzz.missing"]).encode()
        msg_id = rng.choice(ODD_MSG_IDS)
        return replace(request, subject=p.MSG_DELETE.encode() + address + b"." + msg_id)
    return replace(request, subject=rng.choice(ODD_SUBJECTS))


MUTATIONS: tuple[Callable[[Request, random.Random], Request], ...] = (
    _retype_field,
    _retype_field,
    _retype_field,
    _nest,
    _flip_byte,
    _flip_byte,
    _truncate,
    _truncate,
    _insert_not_utf8,
    _empty_body,
    _array_for_object,
    _scalar_for_object,
    _duplicate_field,
    _extra_text,
    _unknown_fields,
    _large_body,
    _odd_headers,
    _odd_headers,
    _odd_subject,
    _odd_subject,
)

# -- raw NATS frames: what no client library writes ---------------------------------------------

_NOT_AN_OP = bytes(b for b in range(256) if not chr(b).isalpha() and b not in b"+-\r\n")
_TOKEN_BYTES = bytes(b for b in range(256) if b not in b" \t\r\n")


def _random_token(rng: random.Random, size: int) -> bytes:
    """Bytes that stay one argument of a control line (no space, tab, CR or LF)."""
    return bytes(rng.choice(_TOKEN_BYTES) for _ in range(size))


def _raw_frames(rng: random.Random, reply: bytes) -> tuple[str, bytes, bool]:
    """A raw frame's name, its bytes, and whether it carries every byte it declares."""
    subject = p.send_subject(_box(rng)).encode()
    body = b'{"raw":1}'
    roll = rng.randrange(13)
    if roll == 0:
        line = bytes([rng.choice(_NOT_AN_OP)]) + _random_token(rng, rng.randrange(60))
        return "garbage control line", line + CRLF, True
    if roll == 1:
        size = rng.choice([b"abc", b"-1", b"1.5", b"99999999999999999999", b"0x2", b"9" * 30])
        return "bad size", b"PUB %s %s %s\r\n%s\r\n" % (subject, reply, size, body), True
    if roll == 2:
        short = rng.randrange(len(body))
        return "size too small", b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, short, body), True
    if roll == 3:
        more = len(body) + rng.randint(3, 50)
        return "size too large", b"PUB %s %s %d\r\n%s\r\n" % (subject, reply, more, body), False
    if roll == 4:
        size = LARGEST_MAX_PAYLOAD + 1  # above what any nats-server carries
        return "above max_payload", b"PUB %s %s %d\r\n" % (subject, reply, size), True
    if roll == 5:
        line = rng.choice([b"PUB", b"PUB " + subject, b"PUB a b c 2\r\nxx", b"HPUB a 2\r\nxx"])
        return "wrong argument count", line + CRLF, True
    if roll == 6:
        data = rng.choice(BROKEN_HEADER_BLOCKS) + body
        if rng.random() < 0.5:
            size = rng.choice([b"x", b"-1", b""])
            line = b"HPUB %s %s %s %d\r\n" % (subject, reply, size, len(data))
            return "header size not a number", line + data + CRLF, True
        line = b"HPUB %s %s %d %d\r\n" % (subject, reply, len(data) + 5, len(data))
        return "header larger than the whole", line + data + CRLF, True
    if roll == 7:
        header = rng.choice(BROKEN_HEADER_BLOCKS)
        cut = _header_size_inside(header, rng)
        data = header + body
        line = b"HPUB %s %s %d %d\r\n" % (subject, reply, cut, len(data))
        return "header cut", line + data + CRLF, True
    if roll == 8:
        over = rng.random() < 0.5  # nats-server closes on a control line above 4,096 bytes
        pad = (4_200 if over else 4_000) - len(p.MSG_SEND) - len(reply) - 12
        return "long control line", frame(p.MSG_SEND.encode() + b"x" * pad, body, reply), True
    if roll == 9:
        sep = rng.choice([b"\t", b"  ", b" \t "])
        line = sep.join([rng.choice([b"PUB", b"pub", b"Pub"]), subject, reply, b"%d" % len(body)])
        return "odd separators", line + CRLF + body + CRLF, True
    if roll == 10:
        odd_reply = rng.choice([b"_FUZZ.\xff", b"_FUZZ.\x0b1", b"_INBOX", subject])
        return "odd reply subject", frame(subject, body, odd_reply), True
    if roll == 11:
        line = rng.choice(
            [
                b"SUB\r\n",
                b"SUB fuzzsub.x\r\n",
                b"SUB fuzzsub.x q 1 2\r\n",
                b"UNSUB abc\r\n",
                b"UNSUB\r\n",
                b"CONNECT {broken\r\n",
                b"MSG a 1 2\r\nxx\r\n",
                b"INFO {}\r\n",
                b"+OK\r\n",
                b"-ERR 'x'\r\n",
                b"PONG\r\n",
                b"ping\r\n",
            ]
        )
        return "other operation", line, True
    three = b"".join(frame(subject, body, reply) for _ in range(3))
    return "three requests in one write", three, True


def _random_request(rng: random.Random) -> Request:
    if rng.random() < 0.5:
        subject = p.PREFIX.encode() + b"." + _random_token(rng, rng.randint(1, 40))
    else:
        verb = rng.choice([p.MSG_SEND, p.MSG_FETCH, p.MSG_ACK, p.MSG_QUERY, p.MSG_DELETE])
        subject = verb.encode() + _random_token(rng, rng.randint(1, 40))
    body = rng.randbytes(rng.randrange(512))
    header = b""
    if rng.random() < 0.3:
        header = b"NATS/1.0\r\n" + rng.randbytes(rng.randrange(64)) + CRLF
    return Request(subject, body, header)


class Fuzz:
    """The cases, drawn from one seeded generator: the same seed writes the same bytes."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def case(self, number: int) -> Case:
        rng = self.rng
        reply = REPLY_PREFIX + b"%d" % number
        roll = rng.random()
        if roll < 0.2:
            make = rng.choice(VALID)
            return self._request(f"valid {make.__name__[7:]}", make(rng), reply)
        if roll < 0.65:
            make, mutate = rng.choice(VALID), rng.choice(MUTATIONS)
            kind = f"mutated {make.__name__[7:]}: {mutate.__name__[1:]}"
            return self._request(kind, mutate(make(rng), rng), reply)
        if roll < 0.75:
            return self._request("random bytes", _random_request(rng), reply)
        name, data, complete = _raw_frames(rng, reply)
        return Case(f"raw frame: {name}", data, complete)

    def _request(self, kind: str, request: Request, reply: bytes) -> Case:
        if self.rng.random() < 0.05:  # now and then a publish: nobody to answer
            kind, reply = f"{kind} (no reply subject)", b""
        return Case(kind, frame(request.subject, request.body, reply, request.header))


# -- the connections ------------------------------------------------------------------------


class Sender:
    """The raw connection the fuzz writes on; opened again after nats-server closes it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.peer: RawPeer | None = None
        self.closed_by_server = 0
        self.server_errors: Counter[bytes] = Counter()

    async def write(self, case: Case) -> None:
        if self.peer is None:
            self.peer = await RawPeer.open(self.url)
        self.peer.writer.write(case.frame)
        if not case.complete:  # nats-server would wait for the bytes it was promised: hang up
            await self._hang_up()
            return
        try:
            taken = await self._settle()
        except TimeoutError:
            # Seen when nobody read nats-server's log: once its stderr pipe was full it stopped
            # closing connections it refused (the dev broker relays that log, see cli.py)
            raise AssertionError(
                f"nats-server neither answered a PING nor closed the connection after "
                f"{case.kind}: {case.shown()}"
            ) from None
        if not taken:
            self.closed_by_server += 1
            await self._hang_up()

    async def _settle(self) -> bool:
        """PING, then read to the PONG (nats-server has then taken the frame); False when
        nats-server closed the connection instead."""
        assert self.peer is not None
        reader, writer = self.peer.reader, self.peer.writer

        async def to_the_pong() -> None:
            while (line := await reader.readuntil(CRLF)) != b"PONG\r\n":
                if line.startswith(b"-ERR"):
                    self.server_errors[line.strip()] += 1
                elif line.startswith(b"MSG "):  # a fuzzed SUB on this connection matched
                    await reader.readexactly(int(line.split()[-1]) + 2)
                elif line == b"PING\r\n":
                    writer.write(b"PONG\r\n")

        try:
            writer.write(b"PING\r\n")
            await writer.drain()
            await asyncio.wait_for(to_the_pong(), SETTLE_TIMEOUT)
        except (asyncio.IncompleteReadError, ConnectionError):
            return False
        return True

    async def _hang_up(self) -> None:
        assert self.peer is not None
        self.peer.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.peer.writer.wait_closed()
        self.peer = None

    async def close(self) -> None:
        if self.peer is not None:
            await self._hang_up()


@dataclass
class Delivery:
    """A request as nats-server delivered it to the broker (and to the witness)."""

    subject: bytes
    payload: bytes
    at: float

    def allowed_wait(self) -> float:
        """Seconds the broker may take: a FETCH it reads as one waits up to its max_wait_ms
        when it finds nothing (RobustMQ's rule); everything else is answered at once."""
        fetch = p.MSG_FETCH.encode()
        if not (self.subject.startswith(fetch) and len(self.subject) > len(fetch)):
            return 0.0
        try:
            config = p.FETCH_REQUEST.read(self.payload)["config"] or {}
        except p.WireError:
            return 0.0
        wait = config.get("max_wait_ms")
        return (p.DEFAULT_MAX_WAIT_MS if wait is None else wait) / 1000


class Listener:
    """A connection that only reads: a witness subscribed to the broker's subject, which gets
    exactly what nats-server delivers to the broker, and the inbox of the fuzz's answers."""

    def __init__(self, peer: RawPeer) -> None:
        self.peer = peer
        self.delivered: dict[int, list[Delivery]] = defaultdict(list)  # by case number
        self.answers: dict[int, list[bytes]] = defaultdict(list)
        self.unmatched_replies = 0  # deliveries with a reply subject the fuzz did not track
        self.problems: list[str] = []
        self.answered = asyncio.Event()
        self._pongs: deque[asyncio.Future] = deque()
        self._task: asyncio.Task | None = None

    @classmethod
    async def open(cls, url: str) -> Listener:
        peer = await RawPeer.open(url)
        peer.writer.write(
            b"SUB %s.> %s\r\nSUB %s> %s\r\n"
            % (p.PREFIX.encode(), WITNESS_SID, REPLY_PREFIX, ANSWER_SID)
        )
        await peer.sync()
        listener = cls(peer)
        listener._task = asyncio.create_task(listener._read())
        return listener

    async def barrier(self) -> None:
        """Until every delivery nats-server made before now has been read."""
        pong = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        self.peer.writer.write(b"PING\r\n")
        await self.peer.writer.drain()
        await asyncio.wait_for(pong, SETTLE_TIMEOUT)

    async def _read(self) -> None:
        reader = self.peer.reader
        try:
            while True:
                line = (await reader.readuntil(CRLF))[:-2]
                op, _, rest = line.partition(b" ")
                if op in (b"MSG", b"HMSG"):
                    args = _SEPARATORS.split(rest.strip(b" \t"))
                    data = (await reader.readexactly(int(args[-1]) + 2))[:-2]
                    split = int(args[-2]) if op == b"HMSG" else 0
                    sizes = 2 if op == b"HMSG" else 1
                    reply = args[2] if len(args) == 3 + sizes else b""
                    self._take(args[0], args[1], reply, data[split:])
                elif op == b"PONG":
                    self._pongs.popleft().set_result(None)
                elif op == b"PING":
                    self.peer.writer.write(b"PONG\r\n")
                elif op not in (b"INFO", b"+OK"):
                    self.problems.append(f"the listener was sent {line!r}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # reported: every later check fails on it
            self.problems.append(f"the listener stopped reading: {exc!r}")

    def _take(self, subject: bytes, sid: bytes, reply: bytes, payload: bytes) -> None:
        if sid == ANSWER_SID:
            ours = _OUR_REPLY.fullmatch(subject)
            if ours:
                self.answers[int(ours.group(1))].append(payload)
                self.answered.set()
            return
        ours = _OUR_REPLY.fullmatch(reply)
        if ours:
            self.delivered[int(ours.group(1))].append(Delivery(subject, payload, time.monotonic()))
        elif reply and not reply.startswith(b"_INBOX."):  # the honest client's are _INBOX
            self.unmatched_replies += 1

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.peer.close()


# -- the judge --------------------------------------------------------------------------------


def answer_problem(answer: bytes) -> str | None:
    """What is wrong with one answer of the broker, or None."""
    try:
        decoded = json.loads(answer)
    except ValueError:
        return "the answer is not JSON"
    if not isinstance(decoded, dict) or not isinstance(decoded.get("error"), str):
        return "the answer has no string error"
    if decoded["error"].startswith(INTERNAL_ERROR):
        return f"an internal error: {decoded['error'][:300]}"
    return None


@dataclass
class Judge:
    """Which delivered requests are answered, answered wrongly, or still owed."""

    listener: Listener
    cases: dict[int, Case]
    judged: set[int] = field(default_factory=set)
    left_waiting: set[int] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)
    answers: int = 0
    refused: int = 0  # answers with a non-empty error

    def _fail(self, number: int, what: str) -> None:
        case = self.cases[number]
        self.failures.append(f"case {number} ({case.kind}): {what}\n  frame: {case.shown()}")

    def _owed(self, number: int) -> float | None:
        """When the answers of a delivered case are due; None if it is not waited for."""
        deliveries = self.listener.delivered[number]
        wait = max(delivery.allowed_wait() for delivery in deliveries)
        if wait > LONGEST_AWAITED_WAIT:
            return None
        return max(delivery.at for delivery in deliveries) + wait + ANSWER_SLACK

    async def settle(self, *, everything: bool) -> None:
        """Judge every delivered case that is answered; wait (bounded) for those answered
        at once (and with ``everything``, for those that may wait first)."""
        while True:
            self.listener.answered.clear()
            due = self._judge_answered(everything)
            if due is None:
                return
            remaining = due - time.monotonic()
            if remaining <= 0:
                self._judge_overdue()
                return
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self.listener.answered.wait(), remaining)

    def _judge_answered(self, everything: bool) -> float | None:
        """Judge what is complete; the earliest due time among what is still owed."""
        earliest = None
        for number in list(self.listener.delivered):
            if number in self.judged or number in self.left_waiting:
                continue
            delivered = self.listener.delivered[number]
            answers = self.listener.answers.get(number, [])
            if len(answers) >= len(delivered):
                self.judged.add(number)
                self._judge(number, answers, len(delivered))
                continue
            owed = self._owed(number)
            if owed is None:
                if everything:
                    self.left_waiting.add(number)
                continue
            if not everything and max(d.allowed_wait() for d in delivered) > 0:
                continue  # a FETCH that may wait: judged at the end
            earliest = owed if earliest is None else min(earliest, owed)
        return earliest

    def _judge(self, number: int, answers: list[bytes], delivered: int) -> None:
        self.answers += len(answers)
        if len(answers) > delivered:
            self._fail(number, f"{len(answers)} answers to {delivered} deliveries")
        for answer in answers:
            problem = answer_problem(answer)
            if problem:
                self._fail(number, f"{problem}\n  answer: {answer[:400]!r}")
            elif json.loads(answer)["error"]:
                self.refused += 1

    def _judge_overdue(self) -> None:
        now = time.monotonic()
        for number in list(self.listener.delivered):
            if number in self.judged or number in self.left_waiting:
                continue
            owed = self._owed(number)
            if owed is not None and owed <= now:
                self.judged.add(number)
                answered = len(self.listener.answers.get(number, []))
                delivered = len(self.listener.delivered[number])
                self._fail(number, f"{answered} answers to {delivered} deliveries in time")


class Honest:
    """The honest client: one message to its own mailbox and one read back, each time."""

    def __init__(self, client: Mq9Client, address: str) -> None:
        self.client = client
        self.address = address
        self.stored: dict[int, bytes] = {}  # msg_id -> payload, for every SEND that succeeded

    async def round(self, number: int) -> None:
        key, payload = f"honest.{number}", b"honest message %d" % number
        msg_id = await self.client.send(self.address, payload, key=key)
        self.stored[msg_id] = payload
        found = await self.client.query(self.address, key=key)
        assert [(m.msg_id, m.payload) for m in found] == [(msg_id, payload)], found


# -- the test ---------------------------------------------------------------------------------


async def _prepare(url: str) -> Honest:
    """The fuzz's mailboxes, with messages in them, and the honest client's own mailbox."""
    client = await Mq9Client(url).connect()
    for box in BOXES:
        await client.mailbox_create(name=box)
        for n in range(5):
            await client.send(box, {"n": n}, priority=p.PRIORITY_ORDER[n % 3], tags=["red"])
    return Honest(client, await client.mailbox_create())


def _failure(seed: int, count: int, judge: Judge, broker: DevBroker, what: str) -> str:
    lines = [f"wire fuzz failed (MQ9_FUZZ_SEED={seed} MQ9_FUZZ_COUNT={count}): {what}"]
    lines += judge.failures[:20] + judge.listener.problems[:5]
    return "\n".join(lines) + "\n" + broker.output()[-4000:]


def _internal_errors_logged(broker: DevBroker) -> list[str]:
    """What the engine logged as a bug (also for requests without a reply subject)."""
    return [line for line in broker.stderr if "internal error" in line]


async def _fuzz(
    url: str, broker: DevBroker, honest: Honest, seed: int, count: int
) -> tuple[Judge, Sender]:
    fuzz, cases = Fuzz(seed), {}
    sender, listener = Sender(url), await Listener.open(url)
    judge = Judge(listener, cases)
    try:
        for start in range(0, count, HONEST_EVERY):
            for number in range(start, min(start + HONEST_EVERY, count)):
                cases[number] = fuzz.case(number)
                await sender.write(cases[number])
            await listener.barrier()
            await judge.settle(everything=False)
            fail = judge.failures or listener.problems or broker.process.poll() is not None
            assert not fail, _failure(seed, count, judge, broker, f"in cases up to {number}")
            await honest.round(number)
        await listener.barrier()
        await judge.settle(everything=True)
        assert not (judge.failures or listener.problems), _failure(seed, count, judge, broker, "")
    finally:
        await sender.close()
        await listener.close()
    return judge, sender


def _summary(
    seed: int, count: int, judge: Judge, sender: Sender, honest: Honest, seconds: float
) -> str:
    kinds = Counter(case.kind.split(":")[0].split(" ")[0] for case in judge.cases.values())
    return (
        f"wire fuzz, seed {seed}: {count} cases ({dict(kinds)}) in {seconds:.1f}s; "
        f"{len(judge.listener.delivered)} reached the broker with a reply subject, "
        f"{judge.answers} answers judged ({judge.refused} refusals), "
        f"{len(judge.left_waiting)} long FETCH waits left "
        f"waiting; {judge.listener.unmatched_replies} deliveries with an odd reply subject; "
        f"nats-server closed the raw connection {sender.closed_by_server} times "
        f"({sum(sender.server_errors.values())} -ERR lines); {len(honest.stored)} honest rounds"
    )


def _kill_9(broker: DevBroker, port: int) -> None:
    """SIGKILL the dev broker; the nats-server it started goes with it (die-with-parent)."""
    broker.process.send_signal(signal.SIGKILL)
    broker.process.wait(10)
    broker.join_output(5)
    wait_until(lambda: not process_alive(broker.nats_pid), 10, "nats-server exits")
    wait_until(lambda: not port_open(port), 10, f"port {port} is closed")


async def test_wire_fuzz_then_kill_9_and_restart(tmp_path):
    seed, count, data, port = SEED, COUNT, str(tmp_path / "data"), unclaimed_port()
    print(f"wire fuzz: MQ9_FUZZ_SEED={seed} MQ9_FUZZ_COUNT={count}")
    # The dev broker as a user runs it, with the nats-server it starts (and whose log it
    # reads: a nats-server whose stderr pipe is full stops closing the connections it refuses)
    broker = DevBroker("--port", str(port), "--data", data)
    try:
        url = broker.url
        assert url is not None
        honest = await _prepare(url)
        try:
            began = time.monotonic()
            judge, sender = await _fuzz(url, broker, honest, seed, count)
            seconds = time.monotonic() - began
        finally:
            await honest.client.close()
        assert broker.process.poll() is None, broker.output()
        assert not _internal_errors_logged(broker), broker.output()[-4000:]
        print(_summary(seed, count, judge, sender, honest, seconds))

        _kill_9(broker, port)
        broker = DevBroker("--port", str(port), "--data", data)
        async with Mq9Client(url) as client:
            served = await client.fetch(
                honest.address,
                deliver="earliest",
                num_msgs=len(honest.stored) + 1,
                max_wait_ms=0,
            )
        assert {m.msg_id: m.payload for m in served} == honest.stored
        assert broker.stop() == 0, broker.output()
    finally:
        broker.kill()
