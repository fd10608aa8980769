"""What each mq9 command asks of an enforcing broker's ownership, for its entry in the
engine's table (``rules.Command.owned``): which names the request touches, which check it
passes before it is done, which record its success makes, what a broker sharing its store
with others reads first, and whether its message carries the sender the broker vouches for.

The engine runs them as part of answering a request of a ``Requester`` (the principal the
broker authenticated, and the ``Policy`` deciding what it may): the engine (engine.py) reads
the records and what exists first, since its store may be shared, and what two brokers could
decide differently is claimed in one step before the command is done.
identities/ownership.py is the ``Policy``: who may do what, and how a record is kept.
Nothing here decides: it only says which of the policy's questions a command asks, and about
what.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Container, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from mq9_wire import protocol as p
from mq9_wire.protocol.errors import WireError

Headers = Mapping[str, str] | None
# A record's durable write, once its claim is made in memory: None when kept, else the answer
# that says it could not be (its claim is then undone)
Keep = Callable[[], Awaitable[bytes | None]]
# A claim's undoing, when the request it was made for is refused after it
Undo = Callable[[], Awaitable[None]]
# How every answer that did what it was asked begins (the engine's encoding: compact JSON):
# a refused request made nothing, so records nothing
_SUCCEEDED = p.encode(p.ERROR_REPLY.write(error=""))[:-1]


class Unchanged(bytes):
    """The answer "done" to a request that changed nothing: an UNREGISTER of a name
    no registration held, which RobustMQ answers done. The same bytes on the wire; what it
    tells the record step is that nothing was removed, so nothing is given back (an
    UNREGISTER through one broker, landing while the name's REGISTER is answered by another,
    found nothing yet: it must not free the share that REGISTER has just counted)."""


UNCHANGED = Unchanged(_SUCCEEDED + b"}")


@dataclass(frozen=True, slots=True)
class Named:
    """The names a request touches, read once from its subject and body."""

    mailbox: Any = None  # the mailbox it creates, sends to or reads (a str when it names one)
    agent: Any = None  # the agent name it registers, unregisters or reports on
    listed: bool = False  # whether its check asks if ``agent`` is registered
    group: Any = None  # the group it moves (an ACK's: its record is the group's lease)


class Policy(Protocol):
    """Who may do what, and what a done request makes whose (identities/ownership.py). The
    checks answer None when allowed, else the refusal; they never wait, reading what exists
    from the engine's state (under its lock) or from what ``look_up`` read."""

    def may_create(self, principal: str, name: Any) -> bytes | None: ...
    def may_send(self, principal: str, address: Any, headers: Headers) -> bytes | None: ...
    def may_read(self, principal: str, verb: str, address: Any) -> bytes | None: ...
    def may_name(self, principal: str, verb: str, named: Named) -> bytes | None: ...

    def created(self, principal: str, address: Any) -> Keep | None: ...
    def sent(self, principal: str, address: Any, headers: Headers) -> Keep | None: ...
    def fetched(
        self, principal: str, address: Any, body: bytes, group: Callable[[bytes], Any]
    ) -> Keep | None: ...
    def acked(self, principal: str, address: Any, group: Any) -> Keep | None: ...
    def registered(self, principal: str, name: Any) -> Keep | None: ...
    def unregistered(self, principal: str, name: Any) -> Keep | None: ...

    async def claim_mailbox(
        self, principal: str, name: Any
    ) -> tuple[bytes | None, Undo | None]: ...
    async def claim_agent(self, principal: str, name: Any) -> tuple[bytes | None, Undo | None]: ...
    async def claim_release(
        self, principal: str, name: Any
    ) -> tuple[bytes | None, Undo | None]: ...

    async def look_up(self, principal: str, named: Named) -> None: ...
    async def look_up_send(self, principal: str, named: Named, headers: Headers) -> None: ...


@dataclass(frozen=True, slots=True)
class Requester:
    """Who asks (the principal the broker authenticated) and the policy saying what it may."""

    principal: str
    policy: Policy


class Answering(Protocol):
    """What the policy reads of the engine answering the requests it guards (engine.py):
    which mailboxes and agents exist, as its last look found them (``look_up``, read from
    its store before each check), and the answer itself. (A shape, so that identities/
    imports neither serving room nor engine class for it.)"""

    @property
    def seen_topics(self) -> Container[str]: ...
    @property
    def seen_mailboxes(self) -> Container[str]: ...
    @property
    def seen_agents(self) -> Container[str]: ...

    async def look_up(self, named: Named) -> None: ...
    async def handle(
        self, subject: str, headers: Any, body: bytes, requester: Requester | None = None
    ) -> bytes: ...


Check = Callable[[Policy, str, Named, Headers], "bytes | None"]
Record = Callable[[Policy, str, Named, Headers, bytes, bytes], "Keep | None"]
LookUp = Callable[[Policy, str, Named, Headers], Awaitable[None]]
Claim = Callable[[Policy, str, Named], Awaitable["tuple[bytes | None, Undo | None]"]]


def _no_mailbox(_target: str, _body: bytes) -> Any:
    return None


def _allowed(_policy: Policy, _principal: str, _named: Named, _headers: Headers) -> None:
    return None


def _makes_nothing(
    _policy: Policy, _principal: str, _named: Named, _headers: Headers, _body: bytes, _a: bytes
) -> None:
    return None


async def _look_up_names(policy: Policy, principal: str, named: Named, _headers: Headers) -> None:
    await policy.look_up(principal, named)


async def _claims_nothing(
    _policy: Policy, _principal: str, _named: Named
) -> tuple[bytes | None, Undo | None]:
    return None, None


@dataclass(frozen=True)
class Owned:
    """A command's part in ownership. ``mailbox(target, body)``: the mailbox it touches;
    ``agent(body)``: the agent name (read off the loop when the body is large);
    ``group(body)``: the group it moves; ``listed``: whether its check asks if that agent is
    registered; ``check``, ``record`` and ``look_up``: the policy's questions it asks;
    ``claim``: what a store shared by several brokers decides in one step before the
    command is done (a CREATE's owner record: one requester wins; the engine asks it
    over every store); ``vouched``: its message carries the sender the broker
    authenticated (``sending.Vouched``)."""

    mailbox: Callable[[str, bytes], Any] = _no_mailbox
    agent: Callable[[bytes], Any] | None = None
    group: Callable[[bytes], Any] | None = None
    listed: bool = True
    check: Check = _allowed
    record: Record = _makes_nothing
    look_up: LookUp = _look_up_names
    claim: Claim = _claims_nothing
    vouched: bool = False
    # whether the requests naming one agent take turns from their look-up to their
    # record (``turn``): a REGISTER's share counted and its record written, then its
    # UNREGISTER's done and the share given back, never interleaved
    turns: bool = False

    def turn(self, policy: Policy, named: Named) -> AbstractAsyncContextManager[Any]:
        """The turn a request of this command takes with the others naming its agent (the
        policy's ``agent_turn``, where it has one); no turn for a command that takes none."""
        taking = getattr(policy, "agent_turn", None) if self.turns else None
        if taking is None or not isinstance(named.agent, str):
            return contextlib.nullcontext()
        turn: AbstractAsyncContextManager[Any] = taking(named.agent)
        return turn

    async def names(self, target: str, body: bytes, large: int) -> Named:
        """What the request of ``target`` and ``body`` touches; an agent name read from a
        body above ``large`` bytes on a thread (a card may be large)."""
        agent = None
        if self.agent is not None:
            if len(body) > large:
                agent = await asyncio.to_thread(self.agent, body)
            else:
                agent = self.agent(body)
        listed = self.listed and isinstance(agent, str) and bool(agent)
        # the group read with the mailbox, one after the other: the body is read once
        group = None if self.group is None else self.group(body)
        return Named(self.mailbox(target, body), agent, listed, group)

    def recorded(
        self, requester: Requester, named: Named, headers: Headers, body: bytes, answer: bytes
    ) -> Keep | None:
        """The record ``answer`` makes ``requester``'s, claimed now (a refused request makes
        none); its durable write is what is returned, to await before answering."""
        if not answer.startswith(_SUCCEEDED) or isinstance(answer, Unchanged):
            return None
        return self.record(requester.policy, requester.principal, named, headers, body, answer)


def succeeded(answer: bytes) -> bool:
    """Whether ``answer`` says its request was done."""
    return answer.startswith(_SUCCEEDED)


async def kept(answer: bytes, keep: Keep | None) -> bytes:
    """``answer`` once its record is kept, else the answer saying it could not be."""
    if keep is None:
        return answer
    return (await keep()) or answer


# -- the names a command's body holds, read as the engine reads it --------------------------


class _LastRead:
    """The body read last, kept by identity: an ACK's body is read by its handler and by two
    of its ownership's questions (its mailbox, its group), each a parse of the body; one request's
    reads follow one another, so the last one read is the one asked again."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        # (shape, body, fields), swapped whole: a body read on the worker thread at the
        # same moment replaces it in one step, never half
        self.last: tuple[p.Shape | None, bytes, dict[str, Any]] = (None, b"", {})

    def read(self, shape: p.Shape, body: bytes) -> dict[str, Any]:
        shape_then, body_then, fields = self.last
        if shape_then is not shape or body_then is not body:
            fields = shape.read(body)  # a refused body raises, and is read again if asked
            self.last = (shape, body, fields)
        return dict(fields)  # each reader its own (the values themselves are never changed)


_LAST_READ = _LastRead()


def fields(shape: p.Shape, body: bytes) -> dict[str, Any]:
    """``shape.read(body)``: the fields of a body, read once for a request however many of
    its parts ask. Raises ``WireError``."""
    return _LAST_READ.read(shape, body)


def _field(shape: p.Shape, body: bytes, name: str) -> Any:
    """One field of a body, or None where the engine refuses the body (it says why)."""
    try:
        return fields(shape, body)[name]
    except WireError:
        return None


def _created_name(_target: str, body: bytes) -> Any:
    return _field(p.CREATE_REQUEST, body, "name") if body else None


def _addressed(target: str, _body: bytes) -> Any:
    return target


def _deleted_from(target: str, _body: bytes) -> Any:
    return target.rpartition(".")[0] or target  # <mailbox>.<msg_id>


def _acked_on(_target: str, body: bytes) -> Any:
    return _field(p.ACK_REQUEST, body, "mail_address")  # the body's, not the subject's


def registered_name(body: bytes) -> Any:
    """The agent name a REGISTER body registers: an A2A card's, else the body's ``name``."""
    try:
        card = p.a2a_card(p.loads(body))
    except WireError:
        card = None
    if card is not None:
        return card.get("name")
    return _field(p.REGISTER_REQUEST, body, "name")


def _unregistered_name(body: bytes) -> Any:
    return _field(p.UNREGISTER_REQUEST, body, "name")


def _reported_name(body: bytes) -> Any:
    return _field(p.REPORT_REQUEST, body, "name")


def _acked_group(body: bytes) -> Any:
    return _field(p.ACK_REQUEST, body, "group_name")


def _fetch_group(body: bytes) -> Any:
    return _field(p.FETCH_REQUEST, body, "group_name")


def _created_address(answer: bytes) -> Any:
    return p.loads(answer).get("mail_address")  # a name the broker chose too


# -- each command's part (its entry in engine.COMMANDS names it) --------------------------------


def _reads(verb: str) -> Check:
    """Only the mailbox's owner does ``verb`` there."""

    def check(policy: Policy, principal: str, named: Named, _headers: Headers) -> bytes | None:
        return policy.may_read(principal, verb, named.mailbox)

    return check


def _names(verb: str) -> Check:
    """Only the agent name's registrant does ``verb`` on it."""

    def check(policy: Policy, principal: str, named: Named, _headers: Headers) -> bytes | None:
        return policy.may_name(principal, verb, named)

    return check


async def _look_up_send(policy: Policy, principal: str, named: Named, headers: Headers) -> None:
    await policy.look_up_send(principal, named, headers)


CREATE = Owned(
    mailbox=_created_name,
    check=lambda policy, who, named, _h: policy.may_create(who, named.mailbox),
    record=lambda policy, who, _n, _h, _b, answer: policy.created(who, _created_address(answer)),
    # on a shared store, the owner record of a named CREATE is won before the mailbox is
    # made: two agents racing one name, one is told it was made
    claim=lambda policy, who, named: policy.claim_mailbox(who, named.mailbox),
)
SEND = Owned(
    mailbox=_addressed,
    check=lambda policy, who, named, headers: policy.may_send(who, named.mailbox, headers),
    record=lambda policy, who, named, headers, _b, _a: policy.sent(who, named.mailbox, headers),
    look_up=_look_up_send,
    vouched=True,  # the message says who sent it, as the broker checked
)
FETCH = Owned(
    mailbox=_addressed,
    check=_reads("FETCH"),
    # a group's lease is its reader's to make: its name is learned from the owner's FETCH
    record=lambda policy, who, named, _h, body, _a: policy.fetched(
        who, named.mailbox, body, _fetch_group
    ),
)
ACK = Owned(
    mailbox=_acked_on,
    group=_acked_group,
    check=_reads("ACK"),
    record=lambda policy, who, named, _h, _b, _a: policy.acked(who, named.mailbox, named.group),
)
QUERY = Owned(mailbox=_addressed, check=_reads("QUERY"))
DELETE = Owned(mailbox=_deleted_from, check=_reads("DELETE"))
REGISTER = Owned(
    agent=registered_name,
    check=_names("REGISTER"),
    record=lambda policy, who, named, _h, _b, _a: policy.registered(who, named.agent),
    # counted against its agent's own share of the registry, in one step of the store
    claim=lambda policy, who, named: policy.claim_agent(who, named.agent),
    turns=True,  # with the name's UNREGISTERs: the share and the record change together
)
UNREGISTER = Owned(
    agent=_unregistered_name,
    check=_names("UNREGISTER"),
    record=lambda policy, who, named, _h, _b, _a: policy.unregistered(who, named.agent),
    # the hold its record gives back, as it was before the registration is removed:
    # one renewed meanwhile (a REGISTER through another broker) is not this one's to free
    claim=lambda policy, who, named: policy.claim_release(who, named.agent),
    turns=True,
)
REPORT = Owned(agent=_reported_name, listed=False, check=_names("REPORT"))  # any name reported on
NOTHING = Owned()  # DISCOVER, and what the engine answers as unknown: anyone may
