"""No request takes a broker of the cluster store off NATS (issue #77 item 1).

Two brokers (``Broker``, ``--store jetstream``, each on a server of its own) serve one layout on
a 3-node JetStream cluster on loopback. The attacker is a bare TCP connection writing HPUB
frames (what any client can send): a SEND whose ``mq9-tags`` holds one 4,000-byte deep tag
(``"a/" * 2000``, which the store once wrote as an index subject of 2,000 tokens, over
nats-server's control line: the server closed the broker's connection, and four such SENDs left
no broker serving), a huge ``mq9-delay`` (once "internal broker error: OverflowError"), then a
seeded fuzz of every request type. Each is answered in one line, and afterwards every broker
still serves: its connections connected, and an honest client's SEND and FETCH answered.
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlparse

import pytest

from mq9_broker import Broker
from mq9_broker.config import BrokerConfig
from mq9_broker.engine.sending import MOST_SECONDS
from mq9_broker.storage.jetstream import ClusterStore
from mq9_platform import Mq9Client
from mq9_wire import protocol as p
from testbed.support.jetstream_servers import JetStreamCluster

pytestmark = pytest.mark.slow  # a nats-server cluster

FUZZ_COUNT = 300  # and 135 SENDs, each odd value in each mq9 header
SEED = 77
ANSWER_TIMEOUT = 20.0  # a busy 2-core machine, three servers, two brokers
INTERNAL_ERROR = "internal broker error"
BOX = "hostile.box"


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[str]]:
    with JetStreamCluster(3) as servers:
        yield servers.urls


@pytest.fixture
async def brokers(cluster: list[str]) -> AsyncIterator[list[Broker]]:
    stream = f"H{uuid.uuid4().hex[:10]}"
    started: list[Broker] = []
    try:
        for url in cluster[:2]:
            config = BrokerConfig(nats=url, store="jetstream", stream=stream, search=False)
            started.append(await Broker(config, say=lambda _: None).start())
        async with Mq9Client(cluster[2]) as client:
            await client.mailbox_create(name=BOX, ttl=0)
        yield started
    finally:
        for broker in started:
            await broker.stop()


class Attacker:
    """A bare NATS connection: HPUB frames exactly as given, answers read by reply subject."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.answers: dict[bytes, asyncio.Future[bytes]] = {}
        self._numbers = iter(range(10**9))
        self._reading = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, url: str) -> Attacker:
        where = urlparse(url)
        reader, writer = await asyncio.open_connection(where.hostname, where.port)
        assert (await reader.readline()).startswith(b"INFO ")
        options = {"verbose": False, "pedantic": False, "headers": True, "protocol": 1}
        writer.write(b"CONNECT " + json.dumps(options).encode() + b"\r\nSUB _FZ.* 1\r\n")
        return cls(reader, writer)

    async def _read(self) -> None:
        while line := await self.reader.readline():
            if line.startswith((b"MSG ", b"HMSG ")):
                parts = line.split()
                data = await self.reader.readexactly(int(parts[-1]) + 2)
                start = int(parts[-2]) if line.startswith(b"HMSG") else 0
                answer = self.answers.get(parts[1])
                if answer is not None and not answer.done():
                    answer.set_result(data[start:-2])
            elif line.startswith(b"PING"):
                self.writer.write(b"PONG\r\n")

    async def request(self, subject: str, body: bytes, header: bytes = b"") -> dict:
        """One request's JSON answer (the server must deliver it: the frame is well formed)."""
        reply = b"_FZ.%d" % next(self._numbers)
        answer = asyncio.get_running_loop().create_future()
        self.answers[reply] = answer
        subject_bytes = subject.encode(errors="surrogateescape")
        if header:
            sizes = b"%d %d" % (len(header), len(header) + len(body))
            self.writer.write(
                b"HPUB %s %s %s\r\n%s%s\r\n" % (subject_bytes, reply, sizes, header, body)
            )
        else:
            self.writer.write(b"PUB %s %s %d\r\n%s\r\n" % (subject_bytes, reply, len(body), body))
        await self.writer.drain()
        try:
            data = await asyncio.wait_for(answer, ANSWER_TIMEOUT)
        finally:
            del self.answers[reply]
        decoded = json.loads(data)
        assert isinstance(decoded, dict) and isinstance(decoded.get("error"), str), decoded
        return decoded

    async def close(self) -> None:
        self._reading.cancel()
        self.writer.close()
        await self.writer.wait_closed()


def header_block(headers: list[tuple[str, str]]) -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers)
    return f"NATS/1.0\r\n{lines}\r\n".encode(errors="surrogateescape")


async def assert_serving(brokers: list[Broker], url: str) -> None:
    """Every broker connected and serving, and honest SENDs (spread over both by the queue
    group) stored and read back."""
    for broker in brokers:
        assert broker.serving, broker
        connected, opened = broker.connections
        assert connected == opened > 0, (broker, broker.connections)
    async with Mq9Client(url) as client:
        box = f"honest.{uuid.uuid4().hex[:8]}"
        await client.mailbox_create(name=box, ttl=0)
        sent = [await client.send(box, f"honest {i}".encode()) for i in range(10)]
        fetched = await client.fetch(box, deliver="earliest", num_msgs=20)
        assert [m.msg_id for m in fetched] == sent == list(range(10))


async def test_a_deep_tag_is_refused_in_one_line_and_every_broker_serves(
    brokers: list[Broker], cluster: list[str]
) -> None:
    attacker = await Attacker.open(cluster[2])
    try:
        deep = header_block([(p.HEADER_TAGS, "a/" * 2000)])
        # twelve: the queue group hands each to either broker (both get one but for 1 in 2,000)
        for _ in range(12):
            answer = await attacker.request(p.send_subject(BOX), b"x", deep)
            assert answer["error"].startswith("SEND refused: tag 'a/a/"), answer
            assert (
                "is 4000 bytes: this broker's cluster store takes tags of at most 1024"
                in (answer["error"])
            )
            assert "\n" not in answer["error"]
        parts = header_block([(p.HEADER_TAGS, "a/" * 40 + "b")])
        answer = await attacker.request(p.send_subject(BOX), b"x", parts)
        assert answer["error"].endswith(
            "has 41 '/'-separated parts: this broker's cluster store takes at most 32"
        ), answer
        many = header_block([(p.HEADER_TAGS, ",".join(f"t{i}" for i in range(999)))])
        answer = await attacker.request(p.send_subject(BOX), b"x", many)
        assert answer["error"] == (
            "SEND refused: a message with 999 distinct tags: this broker's cluster store takes "
            "at most 998"
        )
        key = header_block([(p.HEADER_KEY, "k" * 4097)])
        answer = await attacker.request(p.send_subject(BOX), b"x", key)
        assert answer["error"] == (
            "SEND refused: an mq9-key of 4097 bytes: this broker's cluster store takes keys of "
            "at most 4096 bytes"
        )
        # at the bounds: stored, indexed and found
        fits = header_block([(p.HEADER_TAGS, "/".join(["p"] * 32)), (p.HEADER_KEY, "k" * 4096)])
        answer = await attacker.request(p.send_subject(BOX), b"kept", fits)
        assert answer == {"error": "", "msg_id": 0}
        query = p.encode({"tags": ["p/p"]})
        found = await attacker.request(p.query_subject(BOX), query)
        assert [m["payload"] for m in found["messages"]] == ["kept"]
    finally:
        await attacker.close()
    await assert_serving(brokers, cluster[2])


@pytest.mark.parametrize("name", [p.HEADER_DELAY, p.HEADER_TTL])
async def test_a_huge_delay_or_ttl_is_refused_in_one_line(
    brokers: list[Broker], cluster: list[str], name: str
) -> None:
    attacker = await Attacker.open(cluster[0])
    try:
        for seconds in (2**64 - 1, 10**15, MOST_SECONDS + 1):
            header = header_block([(name, str(seconds))])
            answer = await attacker.request(p.send_subject(BOX), b"x", header)
            assert answer == {
                "error": f"SEND refused: {name} of {seconds} seconds is beyond this broker's "
                f"bound of {MOST_SECONDS} (100 years)"
            }
        delay_most = ClusterStore.send_limits.delay_most
        longest = delay_most if name == p.HEADER_DELAY and delay_most else MOST_SECONDS
        header = header_block([(name, str(longest))])
        answer = await attacker.request(p.send_subject(BOX), b"x", header)
        assert answer["error"] == ""
        if name == p.HEADER_DELAY:
            # the cluster store's stream would remove the waiting schedule at its retention
            header = header_block([(name, str(longest + 1))])
            answer = await attacker.request(p.send_subject(BOX), b"x", header)
            assert answer["error"] == (
                f"SEND refused: mq9-delay of {longest + 1} seconds: this broker's cluster store "
                f"holds a delayed message at most {longest} s (its stream keeps a message "
                "604800 s)"
            )
    finally:
        await attacker.close()
    await assert_serving(brokers, cluster[0])


async def test_requests_at_their_body_limits_are_answered_and_every_broker_serves(
    brokers: list[Broker], cluster: list[str]
) -> None:
    # a record the store writes holds the request's text and more (fields, headers): each
    # body is bounded below max_payload (a larger one is refused unread), and one at its bound
    # is written, or refused in one line, never over the server's limits
    attacker = await Attacker.open(cluster[0])
    try:
        for subject, body in (
            (p.MAILBOX_CREATE, p.encode({"name": "hostile.big", "desc": "d" * 65_000, "ttl": 0})),
            (p.AGENT_REGISTER, p.encode({"name": "big.agent", "payload": "d" * 450_000})),
            (p.AGENT_REPORT, p.encode({"name": "big.agent", "report_info": "d" * 65_000})),
            (p.MAILBOX_CREATE, p.encode({"desc": "d" * 70_000})),
        ):
            answer = await attacker.request(subject, body)
            assert INTERNAL_ERROR not in answer["error"] and "\n" not in answer["error"], answer
    finally:
        await attacker.close()
    await assert_serving(brokers, cluster[0])


# -- the fuzz: every request type, hostile headers and bodies ----------------------------------

ODD_NUMBERS = (
    "-1", "0", "1.5", "1e9", "18446744073709551615", "18446744073709551616", "9" * 40,
    str(MOST_SECONDS + 1), " 7 ", "+3", "٣", "",
)  # fmt: skip
ODD_TEXTS = (
    "a/" * 2000, "x" * 8000, "é" * 3000, "\U0001f600" * 500, "a\rb", "a\nb", "a\x00b",
    "..", "*", ">", "a b", "$JS.API.STREAM.DELETE.X", ",,,", "/" * 100, "\udcff",
)  # fmt: skip
ODD_JSON = (
    -1, 2**64, 2**64 - 1, 2**63, 1.5, -0.0, "x", None, True, [], {}, "a/" * 2000, "é" * 4000,
)  # fmt: skip
FIELDS = (
    "name", "ttl", "desc", "group_name", "deliver", "from_time", "from_id", "force_deliver",
    "config", "mail_address", "msg_id", "key", "tags", "since", "limit", "payload", "text",
    "semantic", "page",
)  # fmt: skip


def _subject(rng: random.Random) -> str:
    box = (
        BOX if rng.random() < 0.6 else rng.choice(["fuzz.other", "a/" * 100, "x" * 300, "é.ü", ">"])
    )
    return rng.choice(
        [
            p.MAILBOX_CREATE, p.send_subject(box), p.send_subject(box), p.send_subject(box),
            p.fetch_subject(box), p.ack_subject(box), p.query_subject(box),
            p.delete_subject(box, rng.choice([0, 2**64 - 1])), p.AGENT_REGISTER,
            p.AGENT_UNREGISTER, p.AGENT_REPORT, p.AGENT_DISCOVER,
        ]
    )  # fmt: skip


def _headers(rng: random.Random) -> bytes:
    names = [p.HEADER_TAGS, p.HEADER_KEY, p.HEADER_DELAY, p.HEADER_TTL, p.HEADER_PRIORITY]
    names += ["mq9-sender", "Nats-Msg-Id", "Nats-Expected-Last-Sequence", "x-trace", "Mq9-Tags"]
    headers = []
    for _ in range(rng.randrange(4)):
        value = rng.choice([rng.choice(ODD_NUMBERS), rng.choice(ODD_TEXTS), "critical", "t1,t2"])
        headers.append((rng.choice(names[:5] if rng.random() < 0.7 else names), value))
    return header_block(headers) if headers else b""


def _body(rng: random.Random) -> bytes:
    roll = rng.random()
    if roll < 0.15:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(200)))
    if roll < 0.2:
        return b""
    fields = {}
    for name in rng.sample(FIELDS, rng.randrange(5)):
        fields[name] = rng.choice(ODD_JSON)
    if rng.random() < 0.3:  # an inner object: FETCH's config, a card's skills
        fields["config"] = {"num_msgs": rng.choice(ODD_JSON), "max_wait_ms": rng.choice([0, 1])}
    if rng.random() < 0.4:  # a request that parses, its numbers at and past their edges
        fields["deliver"] = rng.choice(p.DELIVER_POLICIES)
        fields["group_name"] = rng.choice(["g", "a/" * 200, "é" * 100])
        for name in ("from_time", "from_id", "msg_id", "since", "limit", "ttl"):
            fields[name] = rng.choice([0, 2**32, 2**63, 2**64 - 1, 2**64, -1])
        fields["mail_address"] = BOX
    if "tags" in fields and rng.random() < 0.5:
        fields["tags"] = [rng.choice(ODD_TEXTS) for _ in range(rng.randrange(1, 4))]
    body = json.dumps(fields, ensure_ascii=rng.random() < 0.5).encode("utf-8", "surrogatepass")
    return body


async def test_a_fuzz_of_every_request_type_leaves_every_broker_serving(
    brokers: list[Broker], cluster: list[str]
) -> None:
    rng = random.Random(SEED)
    attacker = await Attacker.open(cluster[1])
    internal: list[tuple[str, dict]] = []
    said: Counter[str] = Counter()  # each answer's first words (-s prints them)
    # every odd value in every mq9 header of a SEND once, then the random requests
    names = [p.HEADER_TAGS, p.HEADER_KEY, p.HEADER_DELAY, p.HEADER_TTL, p.HEADER_PRIORITY]
    each = [(name, value) for name in names for value in ODD_TEXTS + ODD_NUMBERS]
    try:
        for name, value in each:
            answer = await attacker.request(
                p.send_subject(BOX), b"x", header_block([(name, value)])
            )
            said[answer["error"][:48]] += 1
            assert INTERNAL_ERROR not in answer["error"] and "\n" not in answer["error"], answer
        for _ in range(FUZZ_COUNT):
            subject = _subject(rng)
            if subject.endswith(".>") or ".>." in subject:
                subject = p.send_subject(BOX)  # (a wildcard subject reaches no broker)
            body = _body(rng)
            if p.MSG_FETCH in subject and b"max_wait_ms" not in body:
                body = b'{"config":{"max_wait_ms":0}}'  # (a FETCH waits what it asks for)
            answer = await attacker.request(subject, body, _headers(rng))
            said[answer["error"][:48]] += 1
            if INTERNAL_ERROR in answer["error"]:
                internal.append((subject, answer))
            assert "\n" not in answer["error"], answer
    finally:
        await attacker.close()
    print(said.most_common())
    assert internal == []
    assert said[""] > 0 and len(said) > 10  # some stored or answered, many refused many ways
    await assert_serving(brokers, cluster[1])
