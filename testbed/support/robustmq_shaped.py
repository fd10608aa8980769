"""A small NATS listener on loopback that serves the bundled engine the way RobustMQ 8bd49dc's
NATS listener serves mq9 (docs/protocol.md §1), so CI proves the client against it:

1. a reply goes out with the sid of an inbox subscription whose subject *equals* the reply
   subject, else with sid 0 (``mq9/process.rs`` ``reply_nats_packet``);
2. ``UNSUB <sid> <max>`` unsubscribes at once, whatever ``max``;
3. inbox subscriptions live in one map for the whole listener: an UNSUB of sid N by any
   connection forgets every connection's inbox with sid N (``core/cache.rs``
   ``remove_inbox_by_sid``);
4. INFO is followed by the listener's own PING; bytes that arrive in one read with CONNECT are
   held until the next read. RobustMQ meets them so when a client writes CONNECT and PING at
   once; here CONNECT is always read together with the line after it, to make that case the
   rule;
5. one connection's requests are answered one at a time, in order: an empty FETCH holds its
   connection for its whole ``max_wait_ms`` (the engine sleeps it, as RobustMQ does);
8. with ``logins`` (user -> password: RobustMQ's ``auth_required``), a CONNECT without one of
   ``ClientConnect``'s required fields is dropped without a word, a wrong password is answered
   ``-ERR 'Authorization Violation'`` with the connection left open, and every SUB and PUB of a
   connection not logged in gets that error too (docs/protocol.md §1.1, point 8);
9. a SEND's ``mq9-idempotency-key`` header is not read (8bd49dc has no such thing): every
   SEND is stored, and its answer has no ``duplicate``;
10. with ``create_takes`` (seconds), a CREATE of a name is under way that long, and a second
   CREATE of a new name that comes meanwhile *crosses* it: both are answered as made, and the
   mailbox has no storage for good, every later command on it answered ``Shard <id>-0 does
   not exist`` (8bd49dc checks, then writes the topic anew for each: docs/protocol-commands.md
   §5.1).

It speaks only what mq9 needs (no plain pub/sub between clients). Every point is also checked
against a real RobustMQ in tests/robustmq/test_robustmq_shaped.py when ``MQ9_ROBUSTMQ_URL``
names one.
Its INFO says ``"go": "robustmq-rust"``, as RobustMQ's (``network-server/.../nats.rs:112``).

``LaggingIndex`` is the search index of RobustMQ's vector-search build, which trails the
registry and keeps some unregistered agents (docs/discovery.md); ``lagging_engine`` gives an
engine with it, on a hand-moved clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import json
from collections.abc import Callable

from mq9_broker import BrokerEngine, ManualClock
from mq9_broker.engine import worker
from mq9_broker.state.registry import AgentEntry, AgentRegistry
from mq9_wire import protocol as p

INBOX_PREFIX = "_INBOX."
KEY_HEADER = p.HEADER_IDEMPOTENCY_KEY.lower()
MAX_PAYLOAD = 1024 * 1024  # RobustMQ's default nats_runtime.max_payload
# ClientConnect's fields that are not an Option (protocol/src/nats/packet.rs:61-89)
CONNECT_REQUIRED = {"verbose", "pedantic", "tls_required", "name", "lang", "version"}


class RobustMQShapedListener:
    """``async with RobustMQShapedListener(engine) as listener:`` serves on ``listener.url``."""

    def __init__(
        self,
        engine: BrokerEngine,
        logins: dict[str, str] | None = None,
        create_takes: float = 0.0,
    ) -> None:
        self.engine = engine
        self.logins = logins
        self.create_takes = create_takes  # (point 10)
        self._creating: dict[str, asyncio.Event] = {}  # names under way -> their end
        self._crossed: set[str] = set()  # names a second CREATE crossed under way
        self.storage_lost: dict[str, str] = {}  # address -> the shard its topic names
        self.inboxes: dict[str, str] = {}  # reply subject -> sid, for every connection at once
        self.url = ""
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task] = set()
        self._logged_in: dict[asyncio.StreamWriter, bool] = {}

    async def __aenter__(self) -> RobustMQShapedListener:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.url = f"nats://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections.add(asyncio.current_task())
        info = {"server_id": "shaped", "proto": 1, "headers": True, "max_payload": MAX_PAYLOAD}
        info["go"] = "robustmq-rust"
        info["auth_required"] = self.logins is not None
        writer.write(b"INFO " + json.dumps(info).encode() + b"\r\nPING\r\n")
        buffer = bytearray()
        connected = False
        self._logged_in[writer] = self.logins is None
        try:
            while data := await reader.read(65536):
                buffer += data
                if not connected and buffer.count(b"\r\n") < 2:
                    continue  # CONNECT is read with what follows it (point 4)
                connected = True
                while (frame := _take_frame(buffer)) is not None:
                    op, args, payload = frame
                    await self._frame(writer, op, args, payload)
                    await writer.drain()
                    if op == "CONNECT":
                        break  # the rest of this read waits for the next one (point 4)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._connections.discard(asyncio.current_task())
            self._logged_in.pop(writer, None)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _frame(self, writer, op: str, args: list[str], payload: bytes | None) -> None:
        if op == "PING":
            writer.write(b"PONG\r\n")
        elif op == "CONNECT":
            self._connect(writer, args[0])
        elif op in ("SUB", "PUB", "HPUB") and not self._logged_in[writer]:
            writer.write(b"-ERR 'Authorization Violation'\r\n")
        elif op == "SUB":
            subject, sid = args[0], args[-1]
            if subject.startswith(INBOX_PREFIX):
                self.inboxes[subject] = sid
        elif op == "UNSUB":
            sid = args[0]  # args[1], the max, is ignored (point 2), for every connection (3)
            for subject in [s for s, known in self.inboxes.items() if known == sid]:
                del self.inboxes[subject]
        elif op in ("PUB", "HPUB"):
            subject = args[0]
            reply = args[1] if len(args) == (4 if op == "HPUB" else 3) else None
            headers, body = _split_headers(op, args, payload)
            if not subject.startswith(p.PREFIX + "."):
                writer.write(f"-ERR 'unrecognized mq9 subject: {subject}'\r\n".encode())
                return
            if headers:  # (point 9)
                headers = {k: v for k, v in headers.items() if k.lower() != KEY_HEADER}
            answer = await self._answer(subject, headers, body)  # one at a time (5)
            if reply is not None:
                sid = self.inboxes.get(reply, "0")  # (point 1)
                writer.write(f"MSG {reply} {sid} {len(answer)}\r\n".encode() + answer + b"\r\n")

    async def _answer(self, subject: str, headers: dict | None, body: bytes) -> bytes:
        if subject == p.MAILBOX_CREATE and self.create_takes:
            return await self._create(headers, body)
        address = _addressed(subject)
        if address in self.storage_lost:  # (point 10)
            lost = p.err_shard_missing(self.storage_lost[address])
            return p.encode(p.ERROR_REPLY.write(error=lost))
        return await self.engine.handle(subject, headers, body)

    async def _create(self, headers: dict | None, body: bytes) -> bytes:
        """A CREATE under way for ``create_takes`` seconds; a second one of its name that
        comes meanwhile crosses it (point 10)."""
        try:
            name = json.loads(body).get("name")
        except (ValueError, AttributeError):
            name = None
        if not isinstance(name, str):
            return await self.engine.handle(p.MAILBOX_CREATE, headers, body)
        if name in self._creating:  # answered as made, when the first is
            self._crossed.add(name)
            await self._creating[name].wait()
            return p.encode(p.CREATE_REPLY.write(error="", mail_address=name))
        self._creating[name] = done = asyncio.Event()
        try:
            await asyncio.sleep(self.create_takes)
            answer = await self.engine.handle(p.MAILBOX_CREATE, headers, body)
            if name in self._crossed and json.loads(answer).get("error") == "":
                self.storage_lost[name] = f"x{len(self.storage_lost):019d}-0"  # never made
            return answer
        finally:
            self._crossed.discard(name)
            del self._creating[name]
            done.set()

    def _connect(self, writer: asyncio.StreamWriter, options: str) -> None:
        if self.logins is None:
            return
        try:
            fields = json.loads(options)
        except ValueError:
            return  # not read: dropped without a word (point 8)
        if not isinstance(fields, dict) or not fields.keys() >= CONNECT_REQUIRED:
            return
        password = fields.get("pass")
        if password is not None and self.logins.get(fields.get("user")) == password:
            self._logged_in[writer] = True
        else:
            writer.write(b"-ERR 'Authorization Violation'\r\n")


def _addressed(subject: str) -> str | None:
    """The mailbox a command's subject names (SEND, FETCH, ACK, QUERY; DELETE's before its
    msg_id), or None."""
    for prefix in (p.MSG_SEND, p.MSG_FETCH, p.MSG_ACK, p.MSG_QUERY):
        if subject.startswith(prefix):
            return subject[len(prefix) :]
    if subject.startswith(p.MSG_DELETE):
        return subject[len(p.MSG_DELETE) :].rpartition(".")[0]
    return None


def _take_frame(buffer: bytearray) -> tuple[str, list[str], bytes | None] | None:
    """The next whole frame of ``buffer`` (removed from it), or None if it is not all here."""
    end = buffer.find(b"\r\n")
    if end < 0:
        return None
    line = bytes(buffer[:end]).decode(errors="replace")
    op, _, rest = line.partition(" ")
    op = op.upper()
    if op in ("PUB", "HPUB"):
        args = rest.split()
        size = int(args[-1])
        if len(buffer) < end + 2 + size + 2:
            return None
        payload = bytes(buffer[end + 2 : end + 2 + size])
        del buffer[: end + 2 + size + 2]
        return op, args, payload
    del buffer[: end + 2]
    return op, rest.split() if op != "CONNECT" else [rest], None


def _split_headers(op: str, args: list[str], payload: bytes) -> tuple[dict | None, bytes]:
    if op != "HPUB":
        return None, payload
    size = int(args[-2])
    block, body = payload[:size], payload[size:]
    headers = {}
    for line in block.decode(errors="replace").split("\r\n")[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip()] = value.strip()
    return headers, body


# RobustMQ 8bd49dc, measured on its vector-search build (one node, loopback): a card is found
# about 0.5 s after REGISTER answers (its embedding comes first); an unregistered card leaves
# text answers about 1 s after UNREGISTER answers, though its delete runs at once.
INDEX_LAG = 0.5
UNINDEX_LAG = 1.0


class SettledClock(ManualClock):
    """A hand-moved clock that first lets the broker's worker thread do what it was handed:
    the engine applies its own REGISTERs and UNREGISTERs to its search index there as it
    answers them (engine/searching.py), so their index writes are timed from the moment they
    were answered, as RobustMQ's are, not from a moment the test moved the clock past."""

    def advance(self, seconds: float) -> None:
        worker.soon(_nothing).result(timeout=30)
        super().advance(seconds)


def _nothing() -> None:
    """(what the worker is handed to know it did what it held before)"""


class LaggingIndex(AgentRegistry):
    """The registry of RobustMQ's vector-search build: the listing exact at once, the search
    index written in tasks of their own (meta-service ``raft/route/mq9.rs:63-87,97-106``). A
    card's insert lands ``index_lag`` seconds after REGISTER. UNREGISTER's delete runs at once
    and, if it finds the card's row, the card leaves search answers ``unindex_lag`` seconds
    later; if the insert has not landed yet it finds nothing and deletes nothing, the insert
    lands after it and the card stays found for good (search-engine
    ``agent.rs:118,133-137,149-153``: the delete takes no write lock). Before its first card
    is indexed a search finds no table. Due writes land, in order, when the index is read."""

    def __init__(
        self, clock: ManualClock, index_lag: float = INDEX_LAG, unindex_lag: float = UNINDEX_LAG
    ) -> None:
        super().__init__()
        self.clock, self.index_lag, self.unindex_lag = clock, index_lag, unindex_lag
        self._due: list[tuple[float, int, Callable[[], None]]] = []
        self._order = itertools.count()
        self._landing = False
        self.table_made = False

    def put_index(self, entry: AgentEntry) -> None:
        def insert() -> None:
            AgentRegistry.put_index(self, entry)
            self.table_made = True

        self._later(self.index_lag, insert)

    def drop_index(self, card_name: str) -> None:
        if self._landing:  # the insert's own delete of an older row (agent.rs:133-134)
            AgentRegistry.drop_index(self, card_name)
            return
        self._land()
        if card_name in self.index:  # else: no row yet, nothing deleted (the race)
            self._later(self.unindex_lag, lambda: AgentRegistry.drop_index(self, card_name))

    def indexed(self) -> tuple[AgentEntry, ...]:  # what a search ranks
        self._land_for_search()
        return super().indexed()

    def _later(self, seconds: float, write: Callable[[], None]) -> None:
        heapq.heappush(self._due, (self.clock() + seconds, next(self._order), write))

    def _land(self) -> None:
        self._landing = True
        try:
            while self._due and self._due[0][0] <= self.clock():
                heapq.heappop(self._due)[2]()
        finally:
            self._landing = False

    def _land_for_search(self) -> None:
        self._land()
        if not self.table_made:
            raise p.Mq9Error(
                "Grpc call of the node failed,Grpc status was code: 'Internal error', "
                f'message: "{p.SEARCH_TABLE_MISSING}"'
            )


def lagging_engine(clock: ManualClock, **lags: float) -> BrokerEngine:
    """A bundled engine whose search index trails its registry as RobustMQ's does."""
    engine = BrokerEngine(clock=clock)
    engine.search_index.ranker = LaggingIndex(clock, **lags)
    return engine
