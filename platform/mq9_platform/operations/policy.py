"""``ToolPolicy``: one agent's use of the tools (a toolkit's, or an MCP session's).

A consumer group's FETCH hands the same messages out again until they are acked, and an ACK
moves every priority lane of the group (RobustMQ's rules, ``broker/engine/engine.py``), so the tools
read groups through one ``GroupReader`` per mailbox and group, kept here.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from mq9_wire.protocol import QUOTE_CHARS, Message, check_address, clipped, quoted

from ..a2a.shapes import CardJson
from ..client.api import Mq9ClientLike
from ..groups.dead_letters import (
    DEAD_LETTER_SUFFIX,
    DEFAULT_MAX_DELIVERIES,
    dead_letter_address,
)
from ..groups.leases import RESERVED_ROOT, is_reserved
from ..groups.reader import GroupReader, fixed_start
from .config import ToolConfig
from .errors import OperationError, invalid
from .schemas import MAX_TOOL_WAIT_MS

log = logging.getLogger("mq9_platform")

# How many run identities (``ToolPolicy.for_run``) one toolkit remembers.
MAX_RUN_IDENTITIES = 1000


class _ClientPerLoop:
    """The client a kept reader uses: the one the last call on the running event loop handed
    in (``GroupReading.reader_for``). A toolkit's connection has a client per event loop (each
    ``asyncio.run``, the sync tools' background loop), while a reader's bookkeeping outlives
    them all. It has what a reader uses of a client (``groups.leases.MailboxClient``)."""

    def __init__(self) -> None:
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Mq9ClientLike] = (
            weakref.WeakKeyDictionary()
        )

    def bind(self, client: Mq9ClientLike) -> None:
        self._clients[asyncio.get_running_loop()] = client

    @property
    def _client(self) -> Mq9ClientLike:
        try:
            return self._clients[asyncio.get_running_loop()]
        except (RuntimeError, KeyError):
            raise RuntimeError(
                "a kept group reader runs with the client its call hands in: use "
                "GroupReading.reader_for(client)"
            ) from None

    async def fetch(self, mail_address: str, **options: Any) -> list[Message]:
        return await self._client.fetch(mail_address, **options)

    async def ack(self, mail_address: str, group_name: str, msg_id: int) -> None:
        await self._client.ack(mail_address, group_name, msg_id)

    async def query(self, mail_address: str, **options: Any) -> list[Message]:
        return await self._client.query(mail_address, **options)

    async def send(self, mail_address: str, payload: Any, **options: Any) -> int:
        return await self._client.send(mail_address, payload, **options)

    async def mailbox_create(self, *, name: str | None = None, ttl: int = 0) -> str:
        return await self._client.mailbox_create(name=name, ttl=ttl)

    def warn_once(self, mail_address: str, warning: str) -> None:
        warn = getattr(self._client, "warn_once", None)  # the official SDK's keeps no warnings
        if warn is None:
            log.warning("%s", warning)
        else:
            warn(mail_address, warning)


def _queries_tags(client: Mq9ClientLike) -> bool:
    try:
        return "tags" in inspect.signature(client.query).parameters
    except (TypeError, ValueError):
        return False


@dataclass
class GroupReading:
    """One mailbox read with one group: the reader, and the msg_ids it handed to the model that
    are not acked yet, in the order handed out (ack_messages confirms a prefix of them)."""

    held: GroupReader  # the reader: ``reader`` gives it for the event loop running
    clients: _ClientPerLoop  # the client ``held`` uses, handed in by each call
    unacked: list[int] = field(default_factory=list)
    # Where the group starts, fixed by the first fetch (``reader.fixed_start`` says why).
    start: tuple[str, int | None] | None = None
    _loop: weakref.ref[asyncio.AbstractEventLoop] | None = None  # the loop that last used it

    def reader_for(self, client: Mq9ClientLike) -> GroupReader:
        """The reader, running with ``client`` (the call's) on the event loop running."""
        self.clients.bind(client)
        return self.reader

    @property
    def reader(self) -> GroupReader:
        """The reader, for the event loop running. A reader's asyncio lock serves one loop, and
        a toolkit outlives its loops (each ``asyncio.run``): on another loop the reader goes on
        with the same bookkeeping under a fresh lock (one loop at a time uses a toolkit)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # looked at from sync code: nothing will wait on its lock
            return self.held
        if self._loop is not None and self._loop() is not loop:
            self.held = self.held.for_another_loop()
        self._loop = weakref.ref(loop)
        return self.held

    async def fetch(
        self, client: Mq9ClientLike, num_msgs: int, deliver: str, max_wait_ms: int
    ) -> list[Message]:
        """Up to ``num_msgs`` messages not handed out yet, read with ``client`` (the call's)."""
        reader = self.reader_for(client)
        deliver, from_id = self.start or (deliver, None)
        found = await reader.fetch(
            num_msgs=num_msgs, max_wait_ms=max_wait_ms, deliver=deliver, from_id=from_id
        )
        if self.start is None:
            self.start = fixed_start(deliver, from_id, reader.last_answer)
        self.unacked.extend(m.msg_id for m in found)
        return found

    async def adopt(self, client: Mq9ClientLike, msg_id: int, deliver: str) -> bool:
        """Whether ``msg_id`` was handed out under this reading's identity by another process
        or replica (``GroupReader.adopt``, from the broker's records): then it and what was
        handed out before it wait for an ack here, first, and what it was handed after it
        next: an ack from any process lists every message still waiting for one."""
        reader = self.reader_for(client)
        deliver, from_id = self.start or (deliver, None)
        adopted = await reader.adopt(msg_id, deliver=deliver, from_id=from_id, rest=True)
        if self.start is None:
            self.start = fixed_start(deliver, from_id, reader.last_answer)
        self.unacked = [*adopted, *(i for i in self.unacked if i not in adopted)]
        return bool(adopted)


class KeptPolicies:
    """The ``ToolPolicy`` of each identity a toolkit or server keeps (a worker name, a run's
    identity), each under its **owner** (an MCP client; None when there is one), bounded per
    owner and in all, so one owner's load never costs another its unfinished work.

    ``get(owner, key, make)``: the policy kept under ``(owner, key)``, else ``make()`` kept
    there. To make room the least recently used is dropped: the owner's own first (at
    ``per_owner``); at ``total``, another owner's only when it holds no unfinished work
    (``ToolPolicy.holds_work``); when every other one does, the new one is refused
    (``OperationError``). A policy dropped loses only this process's memory: what it was
    handed is acked later from the broker's records (``GroupReader.adopt``), and nothing it
    was handed is charged a delivery for being forgotten."""

    def __init__(self, *, per_owner: int, total: int) -> None:
        self.per_owner, self.total = per_owner, total
        self._kept: dict[tuple[Hashable, Hashable], ToolPolicy] = {}  # least recently used first
        self._lock = threading.Lock()  # sync tool calls run in threads

    def __len__(self) -> int:
        return len(self._kept)

    def __iter__(self) -> Iterator[ToolPolicy]:
        """The policies kept, least recently used first."""
        with self._lock:
            return iter(list(self._kept.values()))

    def get(self, owner: Hashable, key: Hashable, make: Callable[[], ToolPolicy]) -> ToolPolicy:
        with self._lock:
            policy = self._kept.pop((owner, key), None)
            if policy is None:
                self._make_room(owner)
                policy = make()
            self._kept[(owner, key)] = policy
            return policy

    def _make_room(self, owner: Hashable) -> None:
        mine = [k for k in self._kept if k[0] == owner]
        if len(mine) >= self.per_owner:
            del self._kept[mine[0]]
            return
        if len(self._kept) < self.total:
            return
        idle = next((k for k, kept in self._kept.items() if not kept.holds_work()), None)
        if idle is None and mine:
            idle = mine[0]
        if idle is None:
            raise OperationError(
                "too many readers hold messages that are not acked yet: ack what you were "
                "given, or try again later"
            )
        del self._kept[idle]


class ToolPolicy:
    """The rules of one agent's tools (``config``, whose settings read as the policy's own:
    ``policy.agent_mailbox``) and what it remembers: the mailboxes it ``created`` (allowed
    whatever the allow-list), its group ``readings`` and its agent calls' ``call_state``.

    ``ToolPolicy(config)``, or ``ToolPolicy(**settings)`` for a new ``ToolConfig``."""

    def __init__(self, config: ToolConfig | None = None, /, **settings: Any) -> None:
        self.config = ToolConfig(**settings) if config is None else config
        if config is not None and settings:
            raise TypeError("give a ToolConfig or its settings, not both")
        self.created: set[str] = set()
        self.readings: dict[tuple[str, str], GroupReading] = {}
        self.call_state: dict[str, str] = {}  # "reply": the calls' reply mailbox
        # The policies of the runs that name another identity (``for_run``).
        self.runs = KeptPolicies(per_owner=MAX_RUN_IDENTITIES, total=MAX_RUN_IDENTITIES)

    def __repr__(self) -> str:
        return f"ToolPolicy({self.config!r}, created={self.created!r})"

    def session(self, **changes: Any) -> ToolPolicy:
        """The same rules (with ``changes``, e.g. a worker name) and nothing remembered: for
        another agent (an MCP session), which must neither use this one's mailboxes nor get its
        messages. It reads as the same worker (or the group's one reader) unless told: a
        session is the agent again, e.g. restarted."""
        return ToolPolicy(
            ToolConfig(**{**dict(self.config), **changes}) if changes else self.config
        )

    def for_run(self, **identity: Any) -> ToolPolicy:
        """The policy of a run that names its own ``agent_mailbox``, ``default_group`` or
        ``worker`` (None: this policy's): a ``session`` per identity, kept (at most
        ``MAX_RUN_IDENTITIES``, the least recently used dropped: its unacked messages are
        handed out again), so the runs of one identity share their group readers."""
        given = identity.items()
        key = tuple(sorted((k, v) for k, v in given if v not in (None, getattr(self.config, k))))
        if not key:  # the toolkit's own identity
            return self
        return self.runs.get(None, key, lambda: self.session(**dict(key)))

    def holds_work(self) -> bool:
        """Whether messages were handed to this agent and are not acked yet."""
        return any(reading.unacked for reading in self.readings.values())

    # -- the settings, each read as the policy's own: policy.read_only is config.read_only ---

    @property
    def allowed_mailboxes(self) -> tuple[str, ...] | None:
        return self.config.allowed_mailboxes

    @property
    def read_only(self) -> bool:
        return self.config.read_only

    @property
    def max_payload_chars(self) -> int:
        return self.config.max_payload_chars

    @property
    def max_answer_chars(self) -> int:
        return self.config.max_answer_chars

    @property
    def default_group(self) -> str:
        return self.config.default_group

    @property
    def agent_mailbox(self) -> str | None:
        return self.config.agent_mailbox

    @property
    def agent_card(self) -> CardJson | None:
        return self.config.agent_card

    @property
    def deliver(self) -> Literal["earliest", "latest"]:
        return self.config.deliver

    @property
    def num_msgs(self) -> int:
        return self.config.num_msgs

    @property
    def discover_by(self) -> Literal["semantic", "text"]:
        return self.config.discover_by

    @property
    def discover_limit(self) -> int:
        return self.config.discover_limit

    @property
    def discover_rerank(self) -> bool:
        return self.config.discover_rerank

    @property
    def worker(self) -> str | None:
        return self.config.worker

    @property
    def lease_ttl(self) -> int:
        return self.config.lease_ttl

    @property
    def calls(self) -> bool:
        return self.config.calls

    @property
    def reply_mailbox(self) -> str | None:
        return self.config.reply_mailbox

    @property
    def run_groups(self) -> tuple[str, ...]:
        return self.config.run_groups

    @property
    def run_workers(self) -> tuple[str, ...]:
        return self.config.run_workers

    @property
    def tool_prefix(self) -> str:
        return self.config.tool_prefix

    @property
    def wait_cap_ms(self) -> int:
        """The longest one tool call waits (``ToolConfig.wait_cap_ms``; none given: as asked,
        up to the tools' bound: mq9-mcp gives its own)."""
        cap = self.config.wait_cap_ms
        return MAX_TOOL_WAIT_MS if cap is None else cap

    def tool_name(self, name: str) -> str:
        return self.config.tool_prefix + name

    def reading(self, client: Mq9ClientLike, mail_address: str, group: str) -> GroupReading:
        key = (mail_address, group)
        if key not in self.readings:
            # Leases need QUERY by tags, which the official SDK's client lacks: with it the
            # reader still hands each message out once, but competing toolkits may share one.
            tags = _queries_tags(client)
            worker = self.config.worker if tags else None
            clients = _ClientPerLoop()
            reader = GroupReader(
                clients,
                mail_address,
                group,
                worker=worker,
                lease_ttl=self.config.lease_ttl,
                max_deliveries=DEFAULT_MAX_DELIVERIES if tags else None,  # its records need tags
            )
            self.readings[key] = GroupReading(reader, clients)
        return self.readings[key]

    def check(self, address: str | None) -> None:
        """``address`` is a mailbox address (the client's rule, which quotes it bounded) that
        this agent may use."""
        if address is not None:
            check_address(address)
            then = "use one of those, or ask the user"
            what = f"mailbox {clipped(address, QUOTE_CHARS)}"
            base = address.removesuffix(DEAD_LETTER_SUFFIX)
            if base and base != address:  # a usable mailbox's dead letters are usable too
                with contextlib.suppress(OperationError):
                    return self._check(base, what, "mailboxes", then)
            if self._own_long_dead_letters(address):
                return
            self._check(address, what, "mailboxes", then)

    def _own_long_dead_letters(self, address: str) -> bool:
        """``address`` is the dead-letter mailbox of this agent's own mailbox or one it
        created, named with a digest (``dead_letter_address``: its name was too long for
        ``.dlq``), which no prefix of the allow-list need cover."""
        if f"{DEAD_LETTER_SUFFIX}." not in address:
            return False
        own = [self.config.agent_mailbox, *self.created]
        return any(mailbox and dead_letter_address(mailbox) == address for mailbox in own)

    def check_name(self, name: str) -> None:
        """The allow-list covers registry names as well as mailboxes: the registry is keyed
        by name, so a name outside it would let the model take over, remove or rewrite
        another agent's entry (and have that agent's work sent to it)."""
        then = "register, report and unregister under one of those"
        self._check(name, f"agent name {quoted(name)}", "names", then)

    def _check(self, value: str, what: str, kind: str, then: str) -> None:
        if is_reserved(value):  # the library's own (leases): never the model's
            raise OperationError(
                f"{what} is reserved: addresses under '{RESERVED_ROOT}.' hold this library's "
                "own records (consumer-group leases, agent calls); use another name"
            )
        allowed = self.config.allowed_mailboxes
        if allowed is None or value in self.created or value == self.config.agent_mailbox:
            return
        if not any(value == prefix or value.startswith(prefix + ".") for prefix in allowed):
            mine = [self.config.agent_mailbox] if self.config.agent_mailbox else []
            raise OperationError(
                f"{what} is outside the {kind} this agent may use "
                f"({', '.join([*mine, *allowed])} and mailboxes it created): {then}"
            )

    def own(self, value: str, argument: str = "mail_address") -> str:
        """``value``, or this agent's own mailbox when the model left the argument empty."""
        if value:
            return value
        if self.config.agent_mailbox:
            return self.config.agent_mailbox
        raise invalid(f"{argument}: Field required")
