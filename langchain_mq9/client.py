"""``Mq9Client``: the mq9 commands as typed async methods, mirroring the official ``mq9`` SDK.

Every method validates its arguments before any round trip, encodes the request with
``protocol``, hands bytes to a transport (NATS, or the in-process broker for ``memory://``) and
turns a non-empty ``error`` in the reply into ``Mq9Error``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from . import protocol as p
from .protocol import Mq9Error, Priority
from .transport import NOT_CONNECTED, Transport, open_transport

log = logging.getLogger("langchain_mq9")


@dataclass(frozen=True, slots=True)
class Message:
    """A message as FETCH or QUERY hands it out. ``payload`` holds the exact bytes sent."""

    msg_id: int
    payload: bytes
    priority: Priority
    create_time: int
    key: str | None = None
    tags: list[str] = field(default_factory=list)

    def text(self) -> str:
        """The payload as UTF-8 text (raises ``UnicodeDecodeError`` for binary payloads)."""
        return self.payload.decode()

    def json(self) -> Any:
        """The payload parsed as JSON (raises ``ValueError`` if it is not JSON)."""
        return json.loads(self.payload)

    @classmethod
    def from_wire(cls, wire: Any) -> Message:
        try:
            tags = wire.get("tags") or []
            if not isinstance(tags, list):
                raise TypeError("tags is not a list")
            return cls(
                msg_id=_whole(wire["msg_id"]),
                payload=p.decode_payload(wire["payload"]),
                priority=Priority(wire.get("priority", "normal")),
                create_time=_whole(wire["create_time"]),
                key=wire.get("key"),
                tags=[str(t) for t in tags],
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise Mq9Error(f"malformed message in the broker's reply: {exc!r}") from None


def _whole(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


Handler = Callable[[Message], Awaitable[None] | None]
ErrorHandler = Callable[[Message, Exception], Awaitable[None] | None]


class Mq9Client:
    """An mq9 client over NATS (``nats://``, ``tls://``, comma-separated cluster URLs) or the
    in-process broker (``memory://`` or ``memory://NAME``).

    >>> async with Mq9Client("memory://") as client:
    ...     inbox = await client.mailbox_create(name="agent.inbox")
    ...     await client.send(inbox, {"task": "summarize"}, priority=Priority.URGENT)
    ...     messages = await client.fetch(inbox, group_name="workers", deliver="earliest")
    ...     await client.ack(inbox, "workers", messages[-1].msg_id)

    Credentials go in the URL (``nats://user:pass@host:4222``) or as ``user``/``password``,
    ``token``, ``creds`` (a NATS .creds file) and ``tls`` (an ``ssl.SSLContext``).
    """

    def __init__(
        self,
        server: str,
        *,
        request_timeout: float = 5.0,
        reconnect_attempts: int = 5,
        reconnect_delay: float = 2.0,
        user: str | None = None,
        password: str | None = None,
        token: str | None = None,
        creds: str | None = None,
        tls: ssl.SSLContext | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(request_timeout, (int, float)) or request_timeout <= 0:
            raise ValueError("request_timeout must be a positive number of seconds")
        self.server = server
        self.request_timeout = float(request_timeout)
        self._transport: Transport = open_transport(
            server,
            request_timeout=request_timeout,
            reconnect_attempts=reconnect_attempts,
            reconnect_delay=reconnect_delay,
            user=user,
            password=password,
            token=token,
            creds=creds,
            tls=tls,
            name=name,
        )

    # -- connection ------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        return self._transport.is_connected

    async def connect(self) -> Mq9Client:
        """Open the connection (a no-op when already open). Returns the client."""
        if not self._transport.is_connected:
            await self._transport.connect()
        return self

    async def close(self) -> None:
        await self._transport.close()

    async def __aenter__(self) -> Mq9Client:
        return await self.connect()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _call(
        self,
        subject: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        *,
        extra_wait: float = 0.0,
    ) -> dict[str, Any]:
        raw = await self._transport.request(
            subject, body, headers, self.request_timeout + extra_wait
        )
        try:
            reply = json.loads(raw)
        except (UnicodeDecodeError, ValueError, RecursionError):
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("error", ""), str):
            raise Mq9Error(
                f"malformed reply from the broker on {subject}: {bytes(raw[:200])!r} "
                "(is this server speaking mq9?)"
            )
        if reply.get("error"):
            raise Mq9Error(reply["error"])
        return reply

    def _messages(self, reply: dict[str, Any]) -> list[Message]:
        return [Message.from_wire(m) for m in _reply_field(reply, "messages", list)]

    # -- mailboxes and messages ------------------------------------------------------------

    async def mailbox_create(self, *, name: str | None = None, ttl: int = 0) -> str:
        """Create a mailbox and return its address. Without ``name`` the broker picks an
        unguessable one (a private mailbox). ``ttl`` in seconds, 0 = never expires."""
        request: dict[str, Any] = {"ttl": p.check_int("ttl", ttl, 0, p.MAX_SECONDS)}
        if name is not None:
            request["name"] = p.check_address(name)
        reply = await self._call(p.MAILBOX_CREATE, p.encode(request))
        address = _reply_field(reply, "mail_address", str)
        if not p.is_valid_address(address):
            raise Mq9Error(f"malformed reply from the broker: invalid mail_address {address!r}")
        return address

    async def send(
        self,
        mail_address: str,
        payload: bytes | str | dict,
        *,
        priority: Priority | str = Priority.NORMAL,
        key: str | None = None,
        delay: int | None = None,
        ttl: int | None = None,
        tags: list[str] | None = None,
    ) -> int:
        """Store a message in a mailbox; returns its msg_id (``-1`` for a delayed message).

        ``dict`` payloads are sent as JSON, ``str`` as UTF-8. ``key`` keeps only the newest
        message with that key; ``delay`` hides it for N seconds; ``ttl`` expires it after N.
        """
        p.check_address(mail_address)
        body = p.payload_bytes(payload)
        headers = p.send_headers(
            p.parse_priority(priority),
            None if key is None else p.check_key(key),
            None if delay is None else p.check_int("delay", delay, 0, p.MAX_SECONDS),
            None if ttl is None else p.check_int("ttl", ttl, 0, p.MAX_SECONDS),
            None if tags is None else p.check_tags(tags),
        )
        if not self._transport.is_connected:
            raise Mq9Error(NOT_CONNECTED)
        size = len(body) + _header_block_size(headers)
        limit = self._transport.max_payload
        if size > limit:
            raise Mq9Error(
                f"payload too large: {size} bytes, the broker's max_payload is {limit} bytes; "
                "send a reference to the data (a URL or path) instead of the data itself"
            )
        reply = await self._call(p.send_subject(mail_address), body, headers)
        return _reply_field(reply, "msg_id", int)

    async def fetch(
        self,
        mail_address: str,
        *,
        group_name: str | None = None,
        deliver: str = "latest",
        from_time: int | None = None,
        from_id: int | None = None,
        force_deliver: bool = False,
        num_msgs: int = p.DEFAULT_NUM_MSGS,
        max_wait_ms: int = p.DEFAULT_MAX_WAIT_MS,
    ) -> list[Message]:
        """Pull up to ``num_msgs`` messages, highest priority first, FIFO within a priority.

        With ``group_name`` the broker keeps the group's position and leases what it hands out
        until it is acked; without, nothing is recorded. When nothing is there the broker waits
        up to ``max_wait_ms`` and answers as soon as a message arrives.
        """
        p.check_address(mail_address)
        request = _fetch_request(
            group_name, deliver, from_time, from_id, force_deliver, num_msgs, max_wait_ms
        )
        reply = await self._call(
            p.fetch_subject(mail_address), p.encode(request), extra_wait=max_wait_ms / 1000
        )
        return self._messages(reply)

    async def ack(self, mail_address: str, group_name: str, msg_id: int) -> None:
        """Confirm ``msg_id`` and every message before it in the same FETCH answer."""
        p.check_address(mail_address)
        _check_group(group_name, required=True)
        request = {
            "group_name": group_name,
            "mail_address": mail_address,
            "msg_id": p.check_int("msg_id", msg_id),
        }
        await self._call(p.ack_subject(mail_address), p.encode(request))

    async def consume(
        self,
        mail_address: str,
        handler: Handler,
        *,
        group_name: str | None = None,
        deliver: str = "latest",
        num_msgs: int = 10,
        max_wait_ms: int = p.DEFAULT_MAX_WAIT_MS,
        auto_ack: bool = True,
        error_handler: ErrorHandler | None = None,
    ) -> Consumer:
        """Run a fetch loop in the background that calls ``handler`` for every message.

        Returns at once, with the start point already fixed: messages sent after ``consume``
        returns are seen even with ``deliver="latest"``. A handler that raises leaves its
        message unacked (it comes back after the broker's ack-wait) and the loop goes on.
        """
        p.check_address(mail_address)
        _fetch_request(group_name, deliver, None, None, False, num_msgs, max_wait_ms)
        if not callable(handler):
            raise ValueError("handler must be a callable taking a Message")
        consumer = Consumer(
            self,
            mail_address,
            handler,
            group_name,
            deliver,
            num_msgs,
            max_wait_ms,
            auto_ack,
            error_handler,
        )
        await consumer._start()
        return consumer

    async def query(
        self,
        mail_address: str,
        *,
        key: str | None = None,
        limit: int | None = None,
        since: int | None = None,
        tags: list[str] | None = None,
    ) -> list[Message]:
        """Read a mailbox without consuming: never moves a group's position or lease."""
        p.check_address(mail_address)
        request: dict[str, Any] = {}
        if key is not None:
            request["key"] = p.check_key(key)
        if limit is not None:
            request["limit"] = p.check_int("limit", limit, 1)
        if since is not None:
            request["since"] = p.check_int("since", since)
        if tags:
            request["tags"] = p.check_tags(tags)
        reply = await self._call(p.query_subject(mail_address), p.encode(request))
        return self._messages(reply)

    async def delete(self, mail_address: str, msg_id: int) -> None:
        p.check_address(mail_address)
        await self._call(p.delete_subject(mail_address, p.check_int("msg_id", msg_id)))

    # -- agent registry --------------------------------------------------------------------

    async def agent_register(self, agent_card: dict[str, Any]) -> None:
        """Publish an agent card (e.g. an A2A AgentCard); it must hold a ``mailbox`` field.
        A card with the same mailbox (or name) replaces the earlier one."""
        card = _json_object("agent_card", agent_card)
        mailbox = card.get("mailbox")
        if not isinstance(mailbox, str) or not mailbox.strip():
            raise Mq9Error(p.ERR_CARD_WITHOUT_MAILBOX)
        await self._call(p.AGENT_REGISTER, p.encode(card))

    async def agent_unregister(self, mailbox: str) -> None:
        if not isinstance(mailbox, str) or not mailbox:
            raise ValueError("mailbox must be the non-empty mailbox the agent registered with")
        await self._call(p.AGENT_UNREGISTER, p.encode({"mailbox": mailbox}))

    async def agent_report(self, report: dict[str, Any]) -> None:
        """Merge status fields into a registered agent's entry (kept under ``report``)."""
        body = _json_object("report", report)
        if not any(isinstance(body.get(k), str) and body[k] for k in ("mailbox", "name")):
            raise Mq9Error("agent report must contain a mailbox (or name) field")
        await self._call(p.AGENT_REPORT, p.encode(body))

    async def agent_discover(
        self,
        *,
        text: str | None = None,
        semantic: str | None = None,
        limit: int = p.DEFAULT_DISCOVER_LIMIT,
        page: int = 1,
    ) -> list[dict[str, Any]]:
        """Find agents: ``text`` matches every word, ``semantic`` ranks by meaning and wins
        over ``text``; neither lists every agent. ``limit``/``page`` paginate (page from 1)."""
        request: dict[str, Any] = {
            "limit": p.check_int("limit", limit, 1, p.MAX_DISCOVER_LIMIT),
            "page": p.check_int("page", page, 1, 2**31),
        }
        for name, value in (("text", text), ("semantic", semantic)):
            if value is not None:
                if not isinstance(value, str):
                    raise ValueError(f"{name} must be a string")
                request[name] = value
        reply = await self._call(p.AGENT_DISCOVER, p.encode(request))
        return _reply_field(reply, "agents", list)


class Consumer:
    """A background fetch loop started by ``Mq9Client.consume``."""

    def __init__(
        self,
        client: Mq9Client,
        mail_address: str,
        handler: Handler,
        group_name: str | None,
        deliver: str,
        num_msgs: int,
        max_wait_ms: int,
        auto_ack: bool,
        error_handler: ErrorHandler | None,
    ) -> None:
        self.mail_address = mail_address
        self.group_name = group_name
        self.processed_count = 0
        self._client = client
        self._handler = handler
        self._error_handler = error_handler
        self._deliver = deliver
        self._num_msgs = num_msgs
        self._max_wait_ms = max_wait_ms
        self._auto_ack = auto_ack and group_name is not None
        self._stopping = asyncio.Event()
        self._task: asyncio.Task | None = None
        # Without a group the consumer keeps its own position: everything below ``_floor`` is
        # done, ``_seen`` holds the ids at or above it already handled.
        self._floor = 0
        self._seen: set[int] = set()
        # Handled but not ackable yet (an earlier message of their batch failed): when they
        # come back they are acked without running the handler twice.
        self._handled_unacked: set[int] = set()

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _start(self) -> None:
        first: list[Message] = []
        if self.group_name is not None:
            # Fix the group's start point now, not whenever the task first runs.
            first = await self._fetch(max_wait_ms=0)
        elif self._deliver == "latest":
            newest = await self._client.query(self.mail_address, limit=1)
            self._floor = newest[-1].msg_id + 1 if newest else 0
            self._deliver = "from_id"
        self._task = asyncio.create_task(self._run(first), name=f"mq9-consume-{self.mail_address}")

    async def stop(self) -> None:
        """Finish the fetch and the batch under way, then stop. Nothing leased is dropped."""
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)

    async def _fetch(self, *, max_wait_ms: int) -> list[Message]:
        if self.group_name is not None:
            return await self._client.fetch(
                self.mail_address,
                group_name=self.group_name,
                deliver=self._deliver,
                num_msgs=self._num_msgs,
                max_wait_ms=max_wait_ms,
            )
        asked = min(self._num_msgs + len(self._seen), p.MAX_NUM_MSGS)
        found = await self._client.fetch(
            self.mail_address,
            deliver=self._deliver,
            from_id=self._floor if self._deliver == "from_id" else None,
            num_msgs=asked,
            max_wait_ms=max_wait_ms,
        )
        fresh = [m for m in found if m.msg_id not in self._seen]
        if len(found) < asked:  # everything eligible came back: move the floor past it
            self._floor = max([self._floor - 1, *(m.msg_id for m in found)]) + 1
            self._seen.clear()
        else:
            self._seen.update(m.msg_id for m in fresh)
        self._deliver = "from_id"
        return fresh

    async def _run(self, batch: list[Message]) -> None:
        backoff = 0.1
        while True:
            await self._handle_batch(batch)
            if self._stopping.is_set():
                return
            try:
                batch = await self._fetch(max_wait_ms=self._max_wait_ms)
                backoff = 0.1
            except Mq9Error as exc:
                batch = []
                log.warning("consumer of %s: fetch failed: %s", self.mail_address, exc)
                with contextlib.suppress(asyncio.TimeoutError):  # pause; stop() ends it
                    await asyncio.wait_for(self._stopping.wait(), backoff)
                backoff = min(backoff * 2, 5.0)

    async def _handle_batch(self, batch: list[Message]) -> None:
        ackable = True  # false once a message of this batch failed: acking later ones would
        for message in batch:  # confirm the failed one too (ACK covers the batch before it)
            if message.msg_id in self._handled_unacked:
                self._handled_unacked.discard(message.msg_id)
            else:
                try:
                    await _maybe_await(self._handler(message))
                except Exception as exc:
                    ackable = False
                    await self._report(message, exc)
                    continue
                self.processed_count += 1
            if not self._auto_ack:
                continue
            if not ackable:
                self._handled_unacked.add(message.msg_id)
                continue
            try:
                await self._client.ack(self.mail_address, self.group_name, message.msg_id)
            except Mq9Error as exc:
                # Handled all the same: if its lease runs out and it comes back (the ack was
                # lost with the connection), it is acked then without running the handler again.
                self._handled_unacked.add(message.msg_id)
                log.warning(
                    "consumer of %s: ack %s failed: %s", self.mail_address, message.msg_id, exc
                )

    async def _report(self, message: Message, exc: Exception) -> None:
        if self._error_handler is None:
            log.error(
                "consumer of %s: handler failed on msg %s: %r",
                self.mail_address,
                message.msg_id,
                exc,
            )
            return
        try:
            await _maybe_await(self._error_handler(message, exc))
        except Exception:
            log.exception("consumer of %s: error_handler failed", self.mail_address)


def _reply_field(reply: dict[str, Any], name: str, kind: type) -> Any:
    value = reply.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise Mq9Error(
            f"malformed reply from the broker: {name!r} is missing or not a {kind.__name__}"
        )
    return value


def _header_block_size(headers: dict[str, str]) -> int:
    """What NATS counts of the headers against max_payload: "NATS/1.0\\r\\n", a
    "key: value\\r\\n" line each, and a closing "\\r\\n"; nothing without headers."""
    if not headers:
        return 0
    return 12 + sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items())


async def _maybe_await(result: Any) -> None:
    if inspect.isawaitable(result):
        await result


def _check_group(group_name: object, *, required: bool) -> None:
    if group_name is None and not required:
        return
    p.check_group_name(group_name)


def _fetch_request(
    group_name: str | None,
    deliver: str,
    from_time: int | None,
    from_id: int | None,
    force_deliver: bool,
    num_msgs: int,
    max_wait_ms: int,
) -> dict[str, Any]:
    _check_group(group_name, required=False)
    if deliver not in p.DELIVER_POLICIES:
        raise Mq9Error(p.err_invalid_deliver(deliver))
    if not isinstance(force_deliver, bool):
        raise ValueError("force_deliver must be True or False")
    request: dict[str, Any] = {"deliver": deliver}
    if group_name is not None:
        request["group_name"] = group_name
    if deliver == "from_time":
        if from_time is None:
            raise Mq9Error("deliver='from_time' needs from_time (Unix seconds)")
        request["from_time"] = p.check_int("from_time", from_time)
    if deliver == "from_id":
        if from_id is None:
            raise Mq9Error("deliver='from_id' needs from_id (a msg_id)")
        request["from_id"] = p.check_int("from_id", from_id)
    if force_deliver:
        request["force_deliver"] = True
    request["config"] = {
        "num_msgs": p.check_int("num_msgs", num_msgs, 1, p.MAX_NUM_MSGS),
        "max_wait_ms": p.check_int("max_wait_ms", max_wait_ms, 0, p.MAX_WAIT_MS),
    }
    return request


def _json_object(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict, not {type(value).__name__}")
    try:
        return json.loads(p.encode(value))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be JSON-serializable: {exc}") from None
