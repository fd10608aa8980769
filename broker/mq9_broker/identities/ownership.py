"""``Ownership``: what each agent owns on an enforcing broker, the policy the engine asks
(docs/security.md). Which agent sent a request is the gate's (gate.py); what this broker knows
of the owners is owners.py's, each agent's share of registrations agent_shares.py's.

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

A mailbox or agent without an owner (kept from before the broker enforced credentials) is
nobody's to read or change; what does not exist is left to the engine to say so.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from mq9_wire import protocol as p
from mq9_wire.protocol.names import (
    CALLS_ROOT,
    RESERVED_ROOT,
    WAKE_FAILED,
    WAKE_INDEX,
    digest,
    is_digest,
    is_reserved,
    reserved_agent_refusal,
)

from ..engine.owned import Answering, Headers, Keep, Named, Undo
from .agent_shares import AgentShares
from .owners import (
    FETCH_BODY_REMEMBERED,
    FETCHES_REMEMBERED,
    HEADER_REPLY_TO,
    NOT_GRANTED,
    TAKEN,
    Owners,
    log,
    not_recorded,
    refused,
    replies_to,
)
from .store import BaseIdentityStore, CredentialError, OwnedByAnother


class Ownership(Owners):
    """The policy the engine asks about each request (engine/owned.py's ``Policy``: its checks
    and records) over what this broker knows of the owners (``Owners``)."""

    def __init__(self, store: BaseIdentityStore, engine: Answering) -> None:
        super().__init__(store, engine)
        self.shares = AgentShares(store, engine)

    @property
    def shares_refused(self) -> int:
        """REGISTERs refused at their agent's own share."""
        return self.shares.refusals

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
        owner = self.holder(name) if self.derived(name) else self.mailboxes.get(name)
        if owner is not None:
            if owner == principal:
                return None
            return refused("CREATE", f"mailbox {p.quoted(name)} belongs to another agent")
        if self.derived(name):  # nobody may take a name derived from a mailbox not theirs
            return refused(
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
            return refused(
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
                return refused(
                    "CREATE",
                    f"{p.quoted(name)} is another agent's: mq9.calls.<digest>.<...> is made "
                    "only by the agent whose credential's id the digest is of",
                )
            deriver = self.deriver(head)
            if deriver is None or deriver == principal:
                return None
            return refused(
                "CREATE",
                f"{p.quoted(name)} is the reply mailbox of a caller named after another agent "
                "or one of its mailboxes: only that agent makes it",
            )
        return refused(
            "CREATE",
            f"{p.quoted(name)} is under '{RESERVED_ROOT}.', where only the names this library "
            "derives are made (task stores, reply mailboxes, leases, wake rules): give another "
            "name",
        )

    def _may_send(self, principal: str, address: str) -> bytes | None:
        if not (is_reserved(address) or self.derived(address)):
            return None  # an ordinary mailbox: any credentialed agent may SEND
        if address == WAKE_INDEX:
            return None  # every agent lists its own rules mailbox there
        owner = self.holder(address)
        if owner == principal or principal in self.grants.get(address, ()):
            return None
        if owner is None and address not in self.engine.seen_mailboxes:
            return None  # the engine says it is not there
        return refused(
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
        named = replies_to(headers)
        if not named or self.holder(address) == principal:
            return None
        for reply_to in named:
            if self.holder(reply_to) != principal:
                return refused(
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
        return refused(verb, f"mailbox {p.quoted(address)} belongs to another agent")

    def _unowned(self, verb: str, address: str) -> bytes:
        return refused(
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
            return refused(verb, f"agent {p.quoted(name)} {TAKEN}")
        if listed and name in self.engine.seen_agents:
            return refused(
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
        self.own(address, principal)

        async def keep() -> bytes | None:
            try:
                await self.store.own_mailbox(address, principal)
                # (brokers not knowing it yet find its derived names' base)
                await self.store.note_base("digest", digest(address), address)
            except CredentialError as exc:
                self.disown(address, principal)
                return not_recorded("CREATE", principal, exc)
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
            return refused("CREATE", f"mailbox {p.quoted(name)} belongs to another agent"), None
        except CredentialError as exc:
            log.error("CREATE by %r not done: its owner could not be recorded: %s", principal, exc)
            return refused("CREATE", f"its owner could not be recorded ({exc}); ask again"), None
        self.own(name, principal)
        await self.store.note_base("digest", digest(name), name)

        async def undo() -> None:
            self.disown(name, principal)
            await self.store.disown_mailbox(name, principal)

        return None, undo

    def agent_turn(self, name: str) -> AbstractAsyncContextManager[None]:
        """The turn of a request naming agent ``name`` (``AgentShares.turn``)."""
        return self.shares.turn(name)

    async def claim_agent(self, principal: str, name: Any) -> tuple[bytes | None, Undo | None]:
        """Before a REGISTER of ``name``: its share counted (``AgentShares.claim``)."""
        return await self.shares.claim(principal, name)

    async def claim_release(self, principal: str, name: Any) -> tuple[bytes | None, Undo | None]:
        """Before an UNREGISTER of ``name``: its hold read (``AgentShares.read_hold``)."""
        return await self.shares.read_hold(principal, name)

    def unregistered(self, principal: str, name: Any) -> Keep | None:
        """An UNREGISTER that removed its registration: its share given back
        (``AgentShares.released``)."""
        return self.shares.released(principal, name)

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
                    return not_recorded("REGISTER", principal, exc)
            return await self.shares.held_again(principal, name)

        return keep

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
                return not_recorded("SEND", principal, exc, NOT_GRANTED)
            return None

        return keep

    def fetched(
        self, principal: str, address: Any, body: bytes, group: Callable[[bytes], Any]
    ) -> Keep | None:
        """An answered FETCH: a group's lease is its reader's to make, so its name is learned
        from the owner's FETCH (``group(body)``: the group it names), once per body; a lease
        learned anew is kept in the store before the answer, for the brokers that did not
        see the FETCH (the lease's CREATE may reach another)."""
        if (address, body) in self.fetches or self.mailboxes.get(address) != principal:
            return None
        keep = self.learn_lease(principal, address, group(body))
        if len(body) <= FETCH_BODY_REMEMBERED:  # a reader's FETCHes repeat one body
            if len(self.fetches) >= FETCHES_REMEMBERED:
                self.fetches.clear()
            self.fetches.add((address, body))
        return keep

    def acked(self, principal: str, address: Any, group: Any) -> Keep | None:
        """An answered ACK of ``group`` on ``address``: its lease name, learned (``fetched``)."""
        return self.learn_lease(principal, address, group) if isinstance(address, str) else None
