"""Agents an enforcing broker can tell apart, and what each owns (docs/security.md).

nats-server makes the requester unforgeable: an agent ``alice`` logs in with her credential
(callout.py) and may publish only ``$mq9.U.alice.>`` (and plain ``$mq9.AI.>``, refused here in
words) and subscribe only ``_INBOX.alice.>``. The broker subscribes to ``$mq9.U.*.>``, takes the
principal from the third token, and hands the request on as the mq9 subject it names
(``$mq9.U.alice.AI.MSG.SEND.box`` -> ``$mq9.AI.MSG.SEND.box``). nats-server does not check
reply subjects, so a request whose reply is not ``_INBOX.<principal>.`` is dropped unanswered:
an answer would let alice aim the broker's words at bob's inbox. Nor could it reach the
broker's own storage: the requests are heard, and answered, on connections of
callout.SERVE_USER, which nats-server lets publish only to inboxes (and wake announcements),
never as the user keeping the state. A plain request (``$mq9.AI.>``, whose sender nothing
tells) is refused on a connection of its own that may publish only to inboxes
(callout.ANSWERS_USER), and only when its reply is one.

Ownership is the broker's to decide (mailbox names travel in bodies, and are chosen at
CREATE). ``Ownership`` is the policy; the engine asks it as part of answering each request, its
command's entry in the engine's table naming the check and the record (engine/owned.py):

- a mailbox belongs to the principal that created it, for good (an expired one too: its log
  would come back with a CREATE); workers of one service share it by sharing a credential;
  only its owner FETCHes, ACKs, QUERYs and DELETEs there; any credentialed agent SENDs to an
  ordinary mailbox;
- an agent name belongs to its first registrant: REGISTER, REPORT and UNREGISTER of another's
  name are refused;
- names derived from a mailbox belong to the mailbox's owner, who alone may create, read or
  send there: its task store ``mq9.tasks.<digest>``, its groups' leases ``mq9.lease.<digest>``
  (digest of mailbox and group, learned from the owner's FETCH and ACK), its dead letters
  ``<mailbox>.dlq`` (or ``<prefix>.dlq.<digest>``);
- names derived from an agent's own name are that agent's to create: a waker's failed
  wakes ``mq9.wake.failed.<digest of its principal>``, the reply mailbox
  ``mq9.calls.<digest>`` of a caller named after its principal or after one of its mailboxes
  ``m`` (``m`` or ``m.calls``, the toolkit's default), and every
  ``mq9.calls.<digest of its principal>.<anything>`` (a gateway's per-tenant reply mailboxes);
  a reply mailbox of another name (``mq9.calls.<random>``, a pinned name's digest) belongs to
  whoever created it first, and nobody makes a name under ``mq9.`` that the library does not
  derive (the plain ``mq9.wake.failed`` included); besides its owner, only an agent it called
  may SEND to a reply mailbox: a SEND by the owner carrying ``mq9-reply-to: <its reply
  mailbox>`` grants the owner of the mailbox sent to (what is recorded stays its creator's);
- a SEND may name in ``mq9-reply-to`` only a mailbox of its sender's, unless it goes into a
  mailbox of the sender's own (a dead letter keeps its caller's reply-to): an agent answers
  where that header says, so naming another's reply mailbox would have the agent leave the
  namer's task states there, under task ids of the namer's choosing.

Every message a SEND stores carries ``mq9-sender: <principal>`` (``engine.Vouched``), written
here from the subject the request came on, whatever the client wrote under that name.

A mailbox or agent without an owner (kept from before the broker enforced credentials) is
nobody's to read or change; what does not exist is left to the engine to say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import nats
from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg

from mq9_wire import protocol as p
from mq9_wire.nats_floor.guard import flush_in_order, protect
from mq9_wire.protocol import names

# The names the library derives from a mailbox's (a task store, a group's leases, dead letters,
# wake rules, a caller's reply mailbox) are computed where the client computes them, so a name
# the client writes is the name checked here
from mq9_wire.protocol.names import (
    CALLS_ROOT,
    DEAD_LETTER_SUFFIX,
    LEASE_ROOT,
    RESERVED_ROOT,
    TASKS_ROOT,
    WAKE_FAILED,
    WAKE_INDEX,
    WAKE_ROOT,
    digest,
    is_digest,
    is_reserved,
    is_wake_rules,
    reserved_agent_refusal,
)

from ..engine.owned import Answering, Headers, Keep, Named, Requester, Undo
from ..nats_servers.processes import server_urls
from .callout import (
    ANSWERS_USER,
    BROKER_USER,
    SERVE_USER,
    SYS_USER,
    Issuer,
    Kicker,
    LoginService,
    login_name,
)
from .store import BaseIdentityStore, CredentialError, OwnedByAnother, ShareFull

log = logging.getLogger("mq9_broker.identities.ownership")

# the wire's names, one place for the client and the broker (protocol/subjects.py)
PRINCIPAL_PREFIX = p.subjects.PRINCIPAL_PREFIX
PRINCIPAL_WILDCARD = PRINCIPAL_PREFIX + "*.>"
MQ9_ROOT = "$mq9."
MARKER = p.subjects.IDENTITIES_MARKER
PLAIN_REFUSAL = p.encode(
    p.ERROR_REPLY.write(
        error=MARKER + "this broker serves credentialed agents on $mq9.U.<id>.<subject without "
        "$mq9.>; connect with a credential (docs/security.md)"
    )
)
REVOKED = p.encode(
    p.ERROR_REPLY.write(error="credential revoked: ask the broker's operator for a new one")
)
RENEWING = p.encode(
    p.ERROR_REPLY.write(
        error="credential issued anew a moment ago: the connections of its old secret are "
        "being closed; ask again in a moment"
    )
)
HEADER_REPLY_TO = "mq9-reply-to"  # where a caller's SEND asks the answers to go
FETCHES_REMEMBERED = 4096  # bodies, then forgotten all at once (read again as they come)
FETCH_BODY_REMEMBERED = 512  # bytes: a larger FETCH body is read again each time, never kept
# The groups' lease names learned from owners' FETCHes and ACKs, at most, per agent and in all;
# beyond, the one learned longest ago (of the agent holding the most, for the bound in all) is
# forgotten and learned again from its owner's next FETCH or ACK of that group
LEASES_PER_AGENT = 4096
LEASES_IN_ALL = 65536
WATCH_SECONDS = 0.25  # how often revocations made by another process are looked for
CLOSINGS_AT_ONCE = 16  # old secrets whose connections are being closed at once
DROPS_LOGGED_EVERY = 10.0  # seconds: dropped requests are counted, logged at most this often
OnRequest = Callable[[Msg], Coroutine[Any, Any, None]]  # what a NATS subscription calls


PLAIN_QUEUE = "mq9-plain-refusals"  # the brokers refusing plain requests, one each
TAKEN = "is registered by another agent"
# An agent at its share of the registry: one line, its own bound and no count of any
# other's ("agent limit reached": read as LimitReached, wire/protocol/errors.py)
SHARE_FULL = (
    "agent limit reached for you: one agent holds at most %d registrations on this broker "
    "(--max-agents-per-sender); unregister one of yours to register another"
)


def principal_of(subject: str) -> tuple[str, str] | None:
    """``$mq9.U.alice.AI.MSG.SEND.box`` -> ``("alice", "$mq9.AI.MSG.SEND.box")``."""
    if not subject.startswith(PRINCIPAL_PREFIX):
        return None
    principal, dot, rest = subject[len(PRINCIPAL_PREFIX) :].partition(".")
    if not (principal and dot and rest):
        return None
    return principal, MQ9_ROOT + rest


def answers_to(reply: str) -> str | None:
    """The principal whose inbox ``reply`` is (``_INBOX.<principal>.…``), or None."""
    head, dot, rest = reply.partition(".")
    principal, dot2, tail = rest.partition(".")
    return principal if head == "_INBOX" and dot and dot2 and principal and tail else None


def _digest_of(name: str) -> tuple[str | None, str]:
    """Which base record a derived ``name`` is found by (``note_base``'s kind and digest):
    ("lease", d) for ``mq9.lease.<d>``, ("digest", d) for a name carrying its mailbox's
    digest (task store, wake rules, long dead letters); (None, "") for one that names its
    mailbox (``<mailbox>.dlq``) or is not derived."""
    for root, kind in ((LEASE_ROOT, "lease"), (TASKS_ROOT, "digest"), (WAKE_ROOT, "digest")):
        if name.startswith(root) and is_digest(name[len(root) :]):
            return kind, name[len(root) :]
    head, marker, tail = name.rpartition(DEAD_LETTER_SUFFIX + ".")
    if head and marker and is_digest(tail):
        return "digest", tail
    return None, ""


def _refused(verb: str, what: str) -> bytes:
    return p.encode(p.ERROR_REPLY.write(error=f"{verb} refused: {what}"))


def _replies_to(headers: Any) -> list[str]:
    """The non-empty values of a request's ``mq9-reply-to`` headers, in whatever case or
    spacing its name was written: a reader stripping names (``parse_header_block``), or
    ignoring their case, would take any of them for it."""
    if not headers:
        return []
    return [
        value.strip()
        for name, value in headers.items()
        if isinstance(name, str)
        and name.strip().lower() == HEADER_REPLY_TO
        and isinstance(value, str)
        and value.strip()
    ]


class _Turn:
    """One agent name's turn (``Ownership.agent_turn``): its lock, and how many requests
    hold or await it."""

    __slots__ = ("held", "lock", "waiting")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.waiting = 0
        # the hold an UNREGISTER holding the turn read before its registration was removed
        # (the store's version of it; None: not its agent's)
        self.held: int | None = None


class Ownership:
    """Who owns what (kept in ``store``), and the policy the engine asks about each request
    (engine/owned.py's ``Policy``: its checks and records), the engine's state telling what
    exists."""

    def __init__(self, store: BaseIdentityStore, engine: Answering) -> None:
        self.store = store
        self.engine = engine
        self.mailboxes, self.agents, self.grants = store.owners()
        # digest(mailbox) -> mailbox: the task store's and a long dead-letter name's digest
        self._digests = {digest(m): m for m in self.mailboxes}
        # digest(mailbox + ".calls") -> mailbox: the reply mailbox of the toolkit's caller
        self._callers = {digest(names.caller_name(m)): m for m in self.mailboxes}
        # digest(principal) -> principal, for the credentials known (read again on a miss)
        self._principals: dict[str, str] = {}
        # lease digest -> mailbox, for the (mailbox, group) pairs its owner read with
        self._leases: dict[str, str] = {}
        # each principal's lease digests, the one learned (or used) longest ago first
        self._leases_of: dict[str, OrderedDict[str, None]] = {}
        self.leases_per_agent, self.leases_in_all = LEASES_PER_AGENT, LEASES_IN_ALL
        self._fetches: set[tuple[str, bytes]] = set()  # FETCH bodies read for a group already
        self.shares_refused = 0  # REGISTERs refused at their agent's own share
        self._turns: dict[str, _Turn] = {}  # agent name -> its requests' turn

    # -- derived names -----------------------------------------------------------------------

    def _base(self, address: str) -> str | None:
        """The mailbox ``address`` is derived from (its task store, a lease of its groups, its
        dead letters), when known."""
        if address.startswith(TASKS_ROOT):
            return self._digests.get(address[len(TASKS_ROOT) :])
        if is_wake_rules(address):
            return self._digests.get(address[len(WAKE_ROOT) :])
        if address.startswith(LEASE_ROOT):
            return self._leases.get(address[len(LEASE_ROOT) :])
        if address.endswith(DEAD_LETTER_SUFFIX):
            return address[: -len(DEAD_LETTER_SUFFIX)] or None
        head, marker, tail = address.rpartition(DEAD_LETTER_SUFFIX + ".")
        if head and marker:
            return self._digests.get(tail)
        return None

    def _derived(self, address: str) -> bool:
        """Whether ``address`` can only be its base mailbox's owner's."""
        if address.startswith((TASKS_ROOT, LEASE_ROOT)) or address.endswith(DEAD_LETTER_SUFFIX):
            return True
        if is_wake_rules(address):
            return True
        head, marker, tail = address.rpartition(DEAD_LETTER_SUFFIX + ".")
        return bool(head and marker and len(tail) == names.DIGEST_DIGITS)

    def holder(self, address: str) -> str | None:
        """Whose ``address`` is: its creator's, or its base mailbox's owner's."""
        owner = self.mailboxes.get(address)
        if owner is None:
            base = self._base(address)
            owner = self.mailboxes.get(base) if base is not None else None
        return owner

    # -- the checks (engine/owned.py's Policy): None when allowed, else the refusal ------------
    # Each command's entry in the engine's table says which it asks, about what; the engine
    # asks it as part of answering the request (under its lock, in the request's transaction)

    def may_create(self, principal: str, name: Any) -> bytes | None:
        """A CREATE of ``name`` (None: the broker chooses it, or the engine refuses the body)."""
        return self._may_create(principal, name) if isinstance(name, str) else None

    def may_send(self, principal: str, address: Any, headers: Headers) -> bytes | None:
        """A SEND to ``address`` with ``headers`` (its ``mq9-reply-to``)."""
        return self._may_send(principal, address) or self._may_reply_to(principal, address, headers)

    def may_read(self, principal: str, verb: str, address: Any) -> bytes | None:
        """``verb`` (FETCH, QUERY, DELETE, ACK) on ``address``: its owner's only."""
        return self._may_read(principal, verb, address) if isinstance(address, str) else None

    def may_name(self, principal: str, verb: str, named: Named) -> bytes | None:
        """``verb`` (REGISTER, UNREGISTER, REPORT) of the agent ``named.agent``: its
        registrant's (one registered before this broker enforced credentials is nobody's
        to change, when ``named.listed``: a REPORT changes nothing of a registration)."""
        return self._may_name(principal, verb, named.agent, named.listed)

    def _may_create(self, principal: str, name: str) -> bytes | None:
        owner = self.holder(name) if self._derived(name) else self.mailboxes.get(name)
        if owner is not None:
            if owner == principal:
                return None
            return _refused("CREATE", f"mailbox {p.quoted(name)} belongs to another agent")
        if self._derived(name):  # nobody may take a name derived from a mailbox not theirs
            return _refused(
                "CREATE",
                f"{p.quoted(name)} is derived from a mailbox (its dead letters, task store or "
                "group lease) that is not yours: create and read your own mailbox first",
            )
        if is_reserved(name):
            refusal = self._reserved_for(principal, name)
            if refusal is not None:
                return refusal
        if name in self.engine.seen_topics:
            return self._unowned("CREATE", name)
        return None

    def _reserved_for(self, principal: str, name: str) -> bytes | None:
        """The refusal of ``principal``'s CREATE of ``name`` (under the reserved root, owned
        by nobody yet, not derived from a mailbox) when it is made for another or for nobody,
        else None."""
        if name == WAKE_FAILED or name.startswith(WAKE_FAILED + "."):
            if name == f"{WAKE_FAILED}.{digest(principal)}":
                return None
            return _refused(
                "CREATE",
                f"{p.quoted(name)}: a waker's failed wakes are kept per agent, in "
                f"{WAKE_FAILED}.<digest of its own credential's id>",
            )
        if name == WAKE_INDEX:
            return None
        if name.startswith(CALLS_ROOT):
            head, dot, _ = name[len(CALLS_ROOT) :].partition(".")
            if not is_digest(head) or head == digest(principal):
                return None  # a name of the caller's choosing (the first to make it), or its own
            if dot:  # mq9.calls.<digest of a principal>.<...>: that principal's alone
                return _refused(
                    "CREATE",
                    f"{p.quoted(name)} is another agent's: mq9.calls.<digest>.<...> is made "
                    "only by the agent whose credential's id the digest is of",
                )
            deriver = self._deriver(head)
            if deriver is None or deriver == principal:
                return None
            return _refused(
                "CREATE",
                f"{p.quoted(name)} is the reply mailbox of a caller named after another agent "
                "or one of its mailboxes: only that agent makes it",
            )
        return _refused(
            "CREATE",
            f"{p.quoted(name)} is under '{RESERVED_ROOT}.', where only the names this library "
            "derives are made (task stores, reply mailboxes, leases, wake rules): give another "
            "name",
        )

    def _deriver(self, head: str) -> str | None:
        """Who a reply mailbox ``mq9.calls.<head>`` is derived from: the principal whose name
        ``head`` is the digest of, else the owner of the mailbox ``m`` whose digest (or of
        ``m.calls``) it is, else None."""
        found = self._principals.get(head)
        if found is None:
            known = self.store.known_ids()
            if len(known) != len(self._principals):  # a credential issued since: read again
                self._principals = {digest(name): name for name in known}
                found = self._principals.get(head)
        if found is not None:
            return found
        mailbox = self._digests.get(head) or self._callers.get(head)
        return self.mailboxes.get(mailbox) if mailbox is not None else None

    def _may_send(self, principal: str, address: str) -> bytes | None:
        if not (is_reserved(address) or self._derived(address)):
            return None  # an ordinary mailbox: any credentialed agent may SEND
        if address == WAKE_INDEX:
            return None  # every agent lists its own rules mailbox there
        owner = self.holder(address)
        if owner == principal or principal in self.grants.get(address, ()):
            return None
        if owner is None and address not in self.engine.seen_mailboxes:
            return None  # the engine says it is not there
        return _refused(
            "SEND",
            f"{p.quoted(address)} is another agent's (a reply mailbox takes SENDs from its "
            "owner and the agents it called, a task store, lease or dead-letter mailbox from "
            "its owner only)",
        )

    def _may_reply_to(self, principal: str, address: str, headers: Any) -> bytes | None:
        """The refusal of a SEND to ``address`` whose ``mq9-reply-to`` names a mailbox that is
        not ``principal``'s, else None. An agent leaves a request's answers where that
        header says, under the sender the broker wrote: naming another's reply mailbox made a
        served agent leave the states of the namer's tasks there, and let a task of the
        namer's take an id the other's request was to have. A SEND into one's own mailbox
        may carry any: a dead letter set aside, or sent back by ``replay``, keeps its
        original caller's reply-to, and only its owner reads it (that grants nothing:
        ``_grant`` asks that the reply mailbox be the sender's)."""
        named = _replies_to(headers)
        if not named or self.holder(address) == principal:
            return None
        for reply_to in named:
            if self.holder(reply_to) != principal:
                return _refused(
                    "SEND",
                    f"{HEADER_REPLY_TO} {p.quoted(reply_to)} is not a mailbox of yours: a "
                    "request may name only a reply mailbox its sender created (create yours "
                    "first; docs/security.md)",
                )
        return None

    def _may_read(self, principal: str, verb: str, address: str) -> bytes | None:
        owner = self.holder(address)
        if owner is None:
            return self._unowned(verb, address) if address in self.engine.seen_topics else None
        if owner == principal:
            return None
        return _refused(verb, f"mailbox {p.quoted(address)} belongs to another agent")

    def _unowned(self, verb: str, address: str) -> bytes:
        return _refused(
            verb,
            f"mailbox {p.quoted(address)} has no owner (it was made before this broker "
            "enforced credentials): nobody may use it; make a new one",
        )

    def _may_name(self, principal: str, verb: str, name: Any, listed: bool) -> bytes | None:
        if not isinstance(name, str) or not name:
            return None  # the engine says what is wrong with the body
        if is_reserved(name):
            # nobody's, whatever a record says (one kept from before this broker refused
            # them): the probe's REPORT passes, every other request is refused, nothing claimed
            refusal = reserved_agent_refusal(verb, name)
            return None if refusal is None else p.encode(p.ERROR_REPLY.write(error=refusal))
        owner = self.agents.get(name)
        if owner == principal:
            return None
        if owner is not None:
            return _refused(verb, f"agent {p.quoted(name)} {TAKEN}")
        if listed and name in self.engine.seen_agents:
            return _refused(
                verb,
                f"agent {p.quoted(name)} has no owner (registered before this broker enforced "
                "credentials): nobody may change it",
            )
        return None

    # -- the records (engine/owned.py's Policy), of what a request did -----------------------
    # Claimed here as the engine answers (under its lock), kept in the store by the ``Keep``
    # returned, which the engine awaits before it answers: a record that cannot be kept is
    # undone, and the answer says so (``CredentialError``). Only what can own or grant
    # something is read: a SEND's headers when they name a reply mailbox, a FETCH by its
    # mailbox's owner (SEND and FETCH are most requests).

    def created(self, principal: str, address: Any) -> Keep | None:
        """A CREATE made ``address``: ``principal``'s for good."""
        if not isinstance(address, str) or address in self.mailboxes:
            return None
        self._own(address, principal)

        async def keep() -> bytes | None:
            try:
                await self.store.own_mailbox(address, principal)
                # (brokers not knowing it yet find its derived names' base)
                await self.store.note_base("digest", digest(address), address)
            except CredentialError as exc:
                self._disown(address, principal)
                return _not_recorded("CREATE", principal, exc)
            return None

        return keep

    async def claim_mailbox(self, principal: str, name: Any) -> tuple[bytes | None, Undo | None]:
        """Before a CREATE of ``name`` on a store several brokers share: its owner record
        won in one step (the bucket's create), so of two agents racing one name through
        two brokers one is told it was made and the other is refused as another's. The
        refusal, or the claim's undoing for when the CREATE is refused after it."""
        if not isinstance(name, str) or self.mailboxes.get(name) == principal:
            return None, None
        try:
            await self.store.own_mailbox(name, principal)
        except OwnedByAnother:
            owner = await self.store.owner("mailbox", name)
            if owner is not None:
                self.learn("mailbox", {"name": name, "principal": owner})
            return _refused("CREATE", f"mailbox {p.quoted(name)} belongs to another agent"), None
        except CredentialError as exc:
            log.error("CREATE by %r not done: its owner could not be recorded: %s", principal, exc)
            return _refused("CREATE", f"its owner could not be recorded ({exc}); ask again"), None
        self._own(name, principal)
        await self.store.note_base("digest", digest(name), name)

        async def undo() -> None:
            self._disown(name, principal)
            await self.store.disown_mailbox(name, principal)

        return None, undo

    @contextlib.asynccontextmanager
    async def agent_turn(self, name: str) -> AsyncIterator[None]:
        """The turn of a request naming agent ``name`` (REGISTER, UNREGISTER), from
        its look-up to its record: an UNREGISTER landing while a REGISTER of the name is
        answered waits for it, so the share counted and the registration written change
        together (before, it gave the share back before the REGISTER's write landed, and
        the name stayed registered uncounted). Kept only while a request holds or awaits it."""
        turn = self._turns.get(name)
        if turn is None:
            turn = self._turns[name] = _Turn()
        turn.waiting += 1
        try:
            async with turn.lock:
                yield
        finally:
            turn.waiting -= 1
            if not turn.waiting:
                del self._turns[name]

    def _share(self) -> int | None:
        """The registrations one agent may hold (``--max-agents-per-sender``), read
        from the engine's limits as each REGISTER comes (None: no share, the bound in all
        alone)."""
        limits = getattr(self.engine, "limits", None)
        return getattr(limits, "max_agents_per_sender", None)

    async def claim_agent(self, principal: str, name: Any) -> tuple[bytes | None, Undo | None]:
        """Before a REGISTER of ``name``: the registration counted against its
        agent's own share, decided by the store in one step (identities/store.py
        ``hold_agent``), so one agent filling its share is refused alone and every other
        agent's REGISTER is answered (the registry's bound in all, ``--max-agents``, stays
        the engine's). The refusal names the agent's own share and no count of another's;
        or the hold's undoing, for when the REGISTER is refused after it."""
        most = self._share()
        if most is None or not (isinstance(name, str) and name) or is_reserved(name):
            return None, None
        try:
            taken = await self.store.hold_agent(name, principal, most)
        except ShareFull:
            self.shares_refused += 1
            return _refused("REGISTER", SHARE_FULL % most), None
        except OwnedByAnother:  # (registered a moment ago through another broker)
            return _refused("REGISTER", f"agent {p.quoted(name)} {TAKEN}"), None
        except CredentialError as exc:
            log.error("REGISTER by %r not done: its share was not counted: %s", principal, exc)
            return _refused("REGISTER", f"its share could not be counted ({exc}); ask again"), None
        if not taken:
            return None, None  # (held already: registered again, counted once)

        async def undo() -> None:
            await self.store.release_agent(name, principal)

        return None, undo

    async def claim_release(self, principal: str, name: Any) -> tuple[bytes | None, Undo | None]:
        """Before an UNREGISTER of ``name``: the version of its agent's hold, read
        before the registration is removed and kept on the name's turn for the record step.
        A REGISTER of the name through another broker renews the hold before it writes its
        registration, so a hold renewed after this read is that REGISTER's, not this
        UNREGISTER's to give back: a race leaves the count one too high (the racer's own
        share smaller), never one too low."""
        turn = self._turns.get(name) if isinstance(name, str) else None
        if turn is None:
            return None, None
        try:
            turn.held = await self.store.held_agent(name, principal)
        except CredentialError as exc:
            turn.held = None  # (nothing given back: the count errs high, and is said)
            log.error("UNREGISTER by %r: its hold could not be read: %s", principal, exc)
        return None, None

    def unregistered(self, principal: str, name: Any) -> Keep | None:
        """An UNREGISTER of ``name`` that removed its registration (engine/owned.py
        records nothing for one that removed none): the agent's share has room again, the
        hold read before the removal given back (the name stays its registrant's)."""
        turn = self._turns.get(name) if isinstance(name, str) else None
        held = None if turn is None else turn.held
        if turn is not None:
            turn.held = None  # (read once: the name's next UNREGISTER reads its own)
        if held is None:
            return None

        async def keep() -> bytes | None:
            try:
                await self.store.release_agent(name, principal, held)
            except CredentialError as exc:
                return _not_recorded("UNREGISTER", principal, exc, "done, its share not freed")
            return None

        return keep

    def registered(self, principal: str, name: Any) -> Keep | None:
        """A REGISTER of ``name`` done: its first registrant's for good, and its hold
        asserted again now that its registration is written."""
        if not (isinstance(name, str) and name):
            return None
        owned = name not in self.agents
        if owned:
            self.agents[name] = principal

        async def keep() -> bytes | None:
            if owned:
                try:
                    await self.store.own_agent(name, principal)
                except CredentialError as exc:
                    if self.agents.get(name) == principal:
                        del self.agents[name]
                    return _not_recorded("REGISTER", principal, exc)
            return await self._held_again(principal, name)

        return keep

    async def _held_again(self, principal: str, name: str) -> bytes | None:
        """The hold of a REGISTER asserted again after its registration is written: an
        UNREGISTER through another broker that read the hold after this REGISTER took it, and
        gave it back before this write landed, left the registration uncounted; taken again
        here (renewed where it stands). Past the share meanwhile (the room it gave back
        taken by another name), the registration is removed and the REGISTER refused."""
        most = self._share()
        if most is None or is_reserved(name):
            return None
        try:
            await self.store.hold_agent(name, principal, most)
        except ShareFull:
            self.shares_refused += 1
            body = p.encode({"name": name})
            await self.engine.handle(p.AGENT_UNREGISTER, None, body)  # (the broker's own)
            return _refused("REGISTER", SHARE_FULL % most)
        except (OwnedByAnother, CredentialError) as exc:
            log.error("REGISTER by %r: its hold not asserted again: %s", principal, exc)
        return None

    def sent(self, principal: str, address: Any, headers: Headers) -> Keep | None:
        """A caller's SEND names its reply mailbox: the agent called may answer there."""
        if not (headers and HEADER_REPLY_TO in headers):
            return None
        reply_to = headers.get(HEADER_REPLY_TO)
        if not (isinstance(reply_to, str) and reply_to.startswith(CALLS_ROOT)):
            return None
        callee = self.holder(address)
        if self.mailboxes.get(reply_to) != principal or callee in (None, principal):
            return None
        granted = self.grants.setdefault(reply_to, set())
        if callee in granted:
            return None
        granted.add(callee)

        async def keep() -> bytes | None:
            try:
                await self.store.grant_send(reply_to, callee)
            except CredentialError as exc:
                self.grants.get(reply_to, set()).discard(callee)
                return _not_recorded("SEND", principal, exc, _NOT_GRANTED)
            return None

        return keep

    def fetched(
        self, principal: str, address: Any, body: bytes, group: Callable[[bytes], Any]
    ) -> Keep | None:
        """An answered FETCH: a group's lease is its reader's to make, so its name is learned
        from the owner's FETCH (``group(body)``: the group it names), once per body; a lease
        learned anew is kept in the store before the answer, for the brokers that did not
        see the FETCH (the lease's CREATE may reach another)."""
        if (address, body) in self._fetches or self.mailboxes.get(address) != principal:
            return None
        keep = self._learn_lease(principal, address, group(body))
        if len(body) <= FETCH_BODY_REMEMBERED:  # a reader's FETCHes repeat one body
            if len(self._fetches) >= FETCHES_REMEMBERED:
                self._fetches.clear()
            self._fetches.add((address, body))
        return keep

    def acked(self, principal: str, address: Any, group: Any) -> Keep | None:
        """An answered ACK of ``group`` on ``address``: its lease name, learned (``fetched``)."""
        return self._learn_lease(principal, address, group) if isinstance(address, str) else None

    def _own(self, address: str, principal: str) -> None:
        self.mailboxes[address] = principal
        self._digests[digest(address)] = address
        self._callers[digest(names.caller_name(address))] = address

    def _disown(self, address: str, principal: str) -> None:
        """Undo ``_own`` (its record could not be kept)."""
        if self.mailboxes.get(address) != principal:
            return
        del self.mailboxes[address]
        for known, key in (
            (self._digests, digest(address)),
            (self._callers, digest(names.caller_name(address))),
        ):
            if known.get(key) == address:
                del known[key]

    # -- records made by other brokers on the same store (a cluster's) --------------------------

    def learn(self, kind: str, record: dict[str, str]) -> None:
        """Keep a record another broker made (``kind``: "mailbox", "agent" or "grant"), as
        ``created``, ``registered`` and ``sent`` keep it here once made."""
        if kind == "mailbox.gone":  # a claim undone (its CREATE refused): forgotten here
            key = record["key"]
            for name, owner in list(self.mailboxes.items()):
                if hashlib.sha256(name.encode()).hexdigest() == key:
                    self._disown(name, owner)
            return
        if kind.endswith(".gone"):
            return
        principal = record["principal"]
        if kind == "mailbox":
            address = record["name"]
            self.mailboxes.setdefault(address, principal)
            self._digests[digest(address)] = address
            self._callers[digest(names.caller_name(address))] = address
        elif kind == "agent":
            self.agents.setdefault(record["name"], principal)
        elif kind == "grant":
            self.grants.setdefault(record["mailbox"], set()).add(principal)

    async def look_up(self, principal: str, named: Named) -> None:
        """Read what a check will ask about and this copy lacks (another broker made it a
        moment ago, before its watch brought it): whether the mailbox or agent ``named``
        exists (the engine's look), and whose it is. The checks ask whether it exists only
        of what nobody owns: one whose owner this broker knows is not looked at. Else
        the look comes first, the owner after: an owner is recorded before what it owns is
        made, so a name found made has its owner found too (read the other way round,
        a CREATE through another broker in between left it made and seemingly nobody's)."""
        if named.listed:
            owned = self.agents.get(named.agent) is not None
        else:
            owned = isinstance(named.mailbox, str) and self.holder(named.mailbox) is not None
        if not owned:
            await self.engine.look_up(named)
        await self._look_up_owners([named.mailbox], named.agent)

    async def look_up_send(self, principal: str, named: Named, headers: Headers) -> None:
        """``look_up`` for a SEND: when the mailbox sent to is reserved or derived, whether
        it exists, its base mailbox and its grants; the reply mailboxes its headers name.
        (Any agent may SEND to an ordinary mailbox: nothing of it is asked, so nothing is
        read.)"""
        target, names = named.mailbox, []
        special = is_reserved(target) or self._derived(target)
        if special:
            await self.engine.look_up(named)  # (_may_send asks the engine whether it exists)
            names = [target, self._base(target) or target]
        await self._look_up_owners(names + _replies_to(headers), None)
        if (
            special
            and self.holder(target) != principal
            and principal not in self.grants.get(target, ())
        ):
            self.grants.setdefault(target, set()).update(await self.store.grantees(target))

    async def _look_up_owners(self, mailboxes: list[Any], agent: Any) -> None:
        for name in mailboxes:
            if isinstance(name, str) and name and self.holder(name) is None:
                owner = await self.store.owner("mailbox", name)
                if owner is not None:
                    self.learn("mailbox", {"name": name, "principal": owner})
                elif self._derived(name):
                    await self._look_up_base(name)
        if isinstance(agent, str) and agent and agent not in self.agents:
            owner = await self.store.owner("agent", agent)
            if owner is not None:
                self.learn("agent", {"name": agent, "principal": owner})

    async def _look_up_base(self, name: str) -> None:
        """Learn the base mailbox of the derived ``name`` and its owner from the store when
        this copy lacks them: the mailbox was made, or its group read, through another
        broker a moment ago (an owner's first FETCH through a group was refused its
        lease's CREATE)."""
        base, kind, digest_part = self._base(name), *_digest_of(name)
        if base is None and kind is not None:
            found = await self.store.base_of(kind, digest_part)
            if found is not None and (kind == "lease" or digest(found) == digest_part):
                base = found
        if base is None:
            return
        owner = self.mailboxes.get(base)
        if owner is None:
            owner = await self.store.owner("mailbox", base)
            if owner is None:
                return
            self.learn("mailbox", {"name": base, "principal": owner})
        if kind == "lease":
            self._remember_lease(owner, digest_part, base)

    def _learn_lease(self, principal: str, address: str, group: Any) -> Keep | None:
        """Remember that the lease of ``group`` on ``address`` is its owner's (``_remember``);
        one new here is kept in the store too, by the ``Keep`` returned."""
        if not (isinstance(group, str) and group) or self.mailboxes.get(address) != principal:
            return None
        lease = names.lease_digest(address, group)
        if not self._remember_lease(principal, lease, address):
            return None

        async def keep() -> bytes | None:
            try:
                await self.store.note_base("lease", lease, address)
            except CredentialError as exc:  # (its CREATE through another broker refused)
                log.warning("a lease of %r could not be kept for other brokers: %s", address, exc)
            return None

        return keep

    def _remember_lease(self, principal: str, lease: str, address: str) -> bool:
        """Remember that the lease digest ``lease`` is of ``address``, ``principal``'s,
        within ``leases_per_agent`` and ``leases_in_all`` (the digest only, not the name);
        False when it was known."""
        mine = self._leases_of.setdefault(principal, OrderedDict())
        if lease in mine:
            mine.move_to_end(lease)
            return False
        if len(mine) >= self.leases_per_agent:
            self._forget_lease(principal)
        elif len(self._leases) >= self.leases_in_all:
            self._forget_lease(max(self._leases_of, key=lambda who: len(self._leases_of[who])))
        mine[lease] = None
        self._leases[lease] = address
        return True

    def _forget_lease(self, principal: str) -> None:
        """Forget ``principal``'s lease learned longest ago (its next FETCH or ACK of that
        group learns it again: the FETCH bodies that would are forgotten too)."""
        lease, _ = self._leases_of[principal].popitem(last=False)
        self._leases.pop(lease, None)
        self._fetches.clear()

    def remembered(self) -> dict[str, int]:
        """What this remembers beyond the records: lease names by principal, FETCH bodies."""
        held = {who: len(leases) for who, leases in self._leases_of.items()}
        return {**held, "leases in all": len(self._leases), "fetch bodies": len(self._fetches)}


class Logins:
    """A broker process's door: answers nats-server's logins (``LoginService``) and closes
    the connections of secrets revoked or replaced meanwhile (``Kicker``), on connections of
    its own.
    One per process: on a cluster, the brokers (all serving) answer logins as one
    queue group (``queue``), each checking the same store."""

    def __init__(
        self, store: BaseIdentityStore, issuer: Issuer | None = None, *, queue: str | None = None
    ) -> None:
        self.store = store
        self.issuer = issuer or Issuer()
        self.service = LoginService(store, self.issuer)
        self.queue = queue
        self.connection: NatsConnection | None = None  # the broker user's, answering logins
        self._connections: list[NatsConnection] = []
        self._watcher: asyncio.Task[None] | None = None

    def broker_login(self) -> dict[str, str]:
        """The nats-py options the broker's own connections log in with (those that keep
        the state, answer logins, or ask whether another broker serves)."""
        return {"user": BROKER_USER, "password": self.issuer.broker_password}

    def serve_login(self) -> dict[str, str]:
        """The nats-py options of the connections that hear requests and publish answers
        (``SERVE_USER``: inboxes and wake announcements only), once these logins are
        answered (that user logs in through them)."""
        return {"user": SERVE_USER, "password": self.issuer.serve_password}

    async def start(self, url: str) -> None:
        """Answer logins, and watch for revocations, on the nats-server(s) at ``url``."""
        login = await nats.connect(
            server_urls(url),
            name="mq9-dev-broker logins",
            max_reconnect_attempts=-1,
            **self.broker_login(),
        )
        self._connections.append(login)
        self.connection = login  # it hears nats-server's login requests only
        system = await nats.connect(
            server_urls(url),
            name="mq9-dev-broker kicks",
            max_reconnect_attempts=-1,
            user=SYS_USER,
            password=self.issuer.sys_password,
        )
        self._connections.append(system)
        await self.service.start(login, queue=self.queue)
        self._watcher = asyncio.create_task(self._watch(Kicker(system)))

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        await self.service.stop()
        for connection in self._connections:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), 5)
        self._connections.clear()
        self.connection = None

    async def _watch(self, kicker: Kicker) -> None:
        """Close the live connections of every secret revoked or replaced meanwhile, each on
        a task of its own (its credential's requests are refused until then:
        ``Identities.handle`` asks ``store.active``)."""
        under_way: dict[tuple[str, str], asyncio.Task[None]] = {}
        try:
            while True:
                self.store.refresh()
                for old in [old for old, task in under_way.items() if task.done()]:
                    del under_way[old]
                for old in sorted(self.store.closing() - under_way.keys()):
                    if len(under_way) >= CLOSINGS_AT_ONCE:
                        break  # (a start finding many credentials revoked) the rest wait
                    under_way[old] = asyncio.create_task(self._close(kicker, *old))
                await asyncio.sleep(WATCH_SECONDS)
        finally:
            for task in under_way.values():
                task.cancel()
            await asyncio.gather(*under_way.values(), return_exceptions=True)

    async def _close(self, kicker: Kicker, principal: str, sha256: str) -> None:
        try:
            closed = await kicker.kick(login_name(principal, sha256))
            # (none: the usual case at a start, for each credential revoked before it)
            log.log(
                logging.INFO if closed else logging.DEBUG,
                "credential %r revoked or issued anew: closed %d connection(s) of its old secret",
                principal,
                closed,
            )
        except Exception as exc:  # a bug: its logins' end closes them (callout.LOGIN_SECONDS)
            log.error("could not close the connections of %r's old secret: %r", principal, exc)
        self.store.closed(principal, sha256)


class Identities:
    """What makes a serving broker enforcing: its gate on every request, its ownership checks,
    the refusal of plain requests, and (``logins`` not given) its own ``Logins``. ``cli.py``
    starts it beside the engine and ``serve.py`` routes each request through ``gate`` and
    ``handle``. With ``logins`` given (a JetStream broker's, started for as long as the process
    runs), ``start`` and ``stop`` leave them and the store to their owner."""

    def __init__(
        self,
        store: BaseIdentityStore,
        engine: Answering,
        issuer: Issuer | None = None,
        *,
        logins: Logins | None = None,
    ) -> None:
        self.store = store
        self._own_logins = logins is None
        self.logins = logins or Logins(store, issuer)
        self.issuer = self.logins.issuer
        self.ownership = Ownership(store, engine)
        self.subject = PRINCIPAL_WILDCARD
        self.dropped = 0  # requests answered nothing: a reply not the requester's own inbox
        self._dropped_logged = 0
        self._next_drop_log = 0.0
        self._answers: NatsConnection | None = None  # ANSWERS_USER's: plain requests refused
        self._guard: asyncio.Task[None] | None = None

    def broker_login(self) -> dict[str, str]:
        """The nats-py options the broker's own connections log in with."""
        return self.logins.broker_login()

    def serve_login(self) -> dict[str, str]:
        """The nats-py options of the serving connections (``Logins.serve_login``): usable
        once ``start`` returned."""
        return self.logins.serve_login()

    def describe(self) -> str:
        return (
            f"credentials: enforced ({self.store.where}); agents log in with their own "
            "(mq9-dev-broker credentials issue NAME) and send on $mq9.U.<id>.; "
            "docs/security.md"
        )

    async def start(self, url: str) -> None:
        """Refuse plain requests, on a connection of ``ANSWERS_USER`` (which may publish
        only to inboxes), first answering logins and watching for revocations on the
        nats-server at ``url`` when the logins are ours (that user logs in through them)."""
        if self._own_logins:
            await self.logins.start(url)

        async def quietly(exc: Exception) -> None:  # a permission refused is said in the log
            log.debug("nats (plain requests): %s", exc)

        self._answers = await nats.connect(
            server_urls(url),
            name="mq9-dev-broker plain requests",
            user=ANSWERS_USER,
            password=self.issuer.answers_password,
            max_reconnect_attempts=-1,
            error_cb=quietly,
        )
        # Agents publish plain requests to it, whatever their frames: guarded as the serving
        # connection is (nats_floor/guard.py)
        self._guard = protect(self._answers)
        # (brokers serving one store together: one of them refuses each)
        await self._answers.subscribe(p.SUBJECT_WILDCARD, queue=PLAIN_QUEUE, cb=self._refuse_plain)
        loop = asyncio.get_running_loop()

        def learn(kind: str, record: dict[str, str]) -> None:  # on the store's thread
            loop.call_soon_threadsafe(self.ownership.learn, kind, record)

        await asyncio.to_thread(self.store.follow_owners, learn)
        await flush_in_order(self._answers)

    async def stop(self) -> None:
        if self._guard is not None:
            self._guard.cancel()
            self._guard = None
        if self._answers is not None:
            with contextlib.suppress(Exception):  # the connection may be closed already
                await asyncio.wait_for(self._answers.close(), 5)
            self._answers = None
        if self._own_logins:
            await self.logins.stop()
            self.store.close()

    async def _refuse_plain(self, msg: Msg) -> None:
        """A plain request's refusal, to its reply when that is an inbox (nats-server would
        refuse ``ANSWERS_USER`` any other subject, and log it); else dropped and counted."""
        if not msg.reply:
            return
        if answers_to(msg.reply) is None:
            self._drop(msg)
            return
        if self._answers is not None:
            with contextlib.suppress(Exception):  # the requester may be gone
                await self._answers.publish(msg.reply, PLAIN_REFUSAL)

    def gate(self, on_request: OnRequest) -> OnRequest:
        """``on_request`` for ``$mq9.U.<principal>.…`` requests, given as the mq9 subject they
        name; those whose reply is not the principal's own inbox are dropped."""

        async def gated(msg: Msg) -> None:
            found = principal_of(msg.subject)
            if found is None or answers_to(msg.reply or "") != found[0]:
                self._drop(msg)
                return
            msg.subject = found[1]
            await on_request(msg)

        return gated

    def requester(self, reply: str) -> str:
        """Whose turn a request of ``reply`` (passed by ``gate``) takes: its agent's, however
        many inboxes the agent makes up (``_INBOX.<principal>``)."""
        return f"_INBOX.{answers_to(reply)}"

    def _drop(self, msg: Msg) -> None:
        self.dropped += 1
        now = time.monotonic()
        if now >= self._next_drop_log:  # a flood of them must not flood the log
            log.warning(
                "dropped %d request(s) unanswered whose reply was not the requester's own inbox "
                "(last: %s)",
                self.dropped - self._dropped_logged,
                p.quoted(msg.subject),
            )
            self._dropped_logged = self.dropped
            self._next_drop_log = now + DROPS_LOGGED_EVERY

    async def handle(self, engine: Answering, msg: Msg) -> bytes:
        """The answer to a request that passed ``gate``: refused for a revoked credential,
        else the engine's, which makes its command's ownership check and record
        (``engine.Command.owned``) with this broker's ``Ownership`` as the policy."""
        principal = answers_to(msg.reply or "") or ""
        if not self.store.active(principal):
            return RENEWING if self.store.renewing(principal) else REVOKED
        return await engine.handle(
            msg.subject, msg.headers, msg.data, Requester(principal, self.ownership)
        )


_NOT_OWNED = "done, but it could not be recorded as yours: nobody may use what it made"
_NOT_GRANTED = (
    "done (do not send it again), but the agent it reaches could not be allowed to answer in "
    "your reply mailbox"
)


def _not_recorded(verb: str, principal: str, exc: CredentialError, what: str = _NOT_OWNED) -> bytes:
    """The answer to ``principal``'s ``verb``, done but its record not kept."""
    log.error("%s by %r done but not recorded: %s", verb, principal, exc)
    return p.encode(p.ERROR_REPLY.write(error=f"{verb} {what} ({exc}); docs/security.md"))
