"""``Owners``: who owns what, as this broker knows it: the records kept in the identity store
(mailboxes, agent names, the grants of reply mailboxes), the names derived from a mailbox found
back to it (its task store, its groups' leases, its dead letters, a caller's reply mailbox),
the records other brokers on the same store make learned as they come, and those a check needs
looked up before it is asked. ``Ownership`` (ownership.py) is the policy over it; the words a
refusal says are here, for both.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import Any

from mq9_wire import protocol as p
from mq9_wire.protocol import names

# The names the library derives from a mailbox's (a task store, a group's leases, dead letters,
# wake rules, a caller's reply mailbox) are computed where the client computes them, so a name
# the client writes is the name checked here
from mq9_wire.protocol.names import (
    DEAD_LETTER_SUFFIX,
    LEASE_ROOT,
    TASKS_ROOT,
    WAKE_ROOT,
    digest,
    is_digest,
    is_reserved,
    is_wake_rules,
)

from ..engine.owned import Answering, Headers, Keep, Named
from .store import BaseIdentityStore, CredentialError

log = logging.getLogger("mq9_broker.identities.ownership")

HEADER_REPLY_TO = "mq9-reply-to"  # where a caller's SEND asks the answers to go
FETCHES_REMEMBERED = 4096  # bodies, then forgotten all at once (read again as they come)
FETCH_BODY_REMEMBERED = 512  # bytes: a larger FETCH body is read again each time, never kept
# The groups' lease names learned from owners' FETCHes and ACKs, at most, per agent and in all;
# beyond, the one learned longest ago (of the agent holding the most, for the bound in all) is
# forgotten and learned again from its owner's next FETCH or ACK of that group
LEASES_PER_AGENT = 4096
LEASES_IN_ALL = 65536
TAKEN = "is registered by another agent"
NOT_OWNED = "done, but it could not be recorded as yours: nobody may use what it made"
NOT_GRANTED = (
    "done (do not send it again), but the agent it reaches could not be allowed to answer in "
    "your reply mailbox"
)


def refused(verb: str, what: str) -> bytes:
    return p.encode(p.ERROR_REPLY.write(error=f"{verb} refused: {what}"))


def not_recorded(verb: str, principal: str, exc: CredentialError, what: str = NOT_OWNED) -> bytes:
    """The answer to ``principal``'s ``verb``, done but its record not kept."""
    log.error("%s by %r done but not recorded: %s", verb, principal, exc)
    return p.encode(p.ERROR_REPLY.write(error=f"{verb} {what} ({exc}); docs/security.md"))


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


def replies_to(headers: Any) -> list[str]:
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


class Owners:
    """Who owns what (kept in ``store``), as this broker knows it, the engine's state telling
    what exists."""

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
        self.fetches: set[tuple[str, bytes]] = set()  # FETCH bodies read for a group already

    # -- derived names -----------------------------------------------------------------------

    def base_of(self, address: str) -> str | None:
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

    def derived(self, address: str) -> bool:
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
            base = self.base_of(address)
            owner = self.mailboxes.get(base) if base is not None else None
        return owner

    def deriver(self, head: str) -> str | None:
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

    def own(self, address: str, principal: str) -> None:
        self.mailboxes[address] = principal
        self._digests[digest(address)] = address
        self._callers[digest(names.caller_name(address))] = address

    def disown(self, address: str, principal: str) -> None:
        """Undo ``own`` (its record could not be kept)."""
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
                    self.disown(name, owner)
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
        special = is_reserved(target) or self.derived(target)
        if special:
            await self.engine.look_up(named)  # (_may_send asks the engine whether it exists)
            names = [target, self.base_of(target) or target]
        await self._look_up_owners(names + replies_to(headers), None)
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
                elif self.derived(name):
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
        base, kind, digest_part = self.base_of(name), *_digest_of(name)
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

    def learn_lease(self, principal: str, address: str, group: Any) -> Keep | None:
        """Remember that the lease of ``group`` on ``address`` is its owner's (``remember_lease``);
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
        self.fetches.clear()

    def remembered(self) -> dict[str, int]:
        """What this remembers beyond the records: lease names by principal, FETCH bodies."""
        held = {who: len(leases) for who, leases in self._leases_of.items()}
        return {**held, "leases in all": len(self._leases), "fetch bodies": len(self.fetches)}
