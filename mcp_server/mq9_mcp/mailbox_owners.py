"""Private mailboxes between the principals of one mq9-mcp: what one person makes, another
cannot read, whatever broker credential the server uses for them.

Over HTTP, a request whose token names a principal of its own (a tokens file's line, an OAuth
token: ``owners.principal_of``) reads, fetches, acks and deletes only in the mailboxes it
created (``create_mailbox``, or the mailbox ``agent_register`` made for its agent), a task
timeline of its own, and those the operator shares (``--shared-mailboxes PREFIX[,PREFIX]``,
and the server's own ``--agent-mailbox``). Sending to any address stays open: that is what a
mailbox is for. stdio (one client), the one static ``--auth-token`` and no token at all name no
principal: those behave as before, every mailbox shared.

Who created a mailbox is kept at the broker, not in a process: the first create of a name is
the only one the broker answers with success (a second gets ``MailboxExists``), and right after
it the creator's principal (a digest: ``owners.principal_of``) is stored as the first message of
a record mailbox, ``mq9mcp.owner.<digest of the address>``. The record mailbox is made just
before the mailbox, with its TTL (``prepare``), so it never outlives it: a name made again after
it expired gets a fresh record, never the last creator's. Any replica, or the same server
started again, reads that record (one QUERY of one message) the first time a principal uses a
mailbox, and keeps the answer a while (``OWNED_SECONDS``, never past the mailbox's expiry). A
task's timeline already names its owner in its first message (``task_events``), read the same
way.

Why a record at the broker rather than a name the server could verify alone (a keyed digest in
the address, under a secret the operator configures): the addresses people choose
(``alice.inbox``) stay what they chose, mailboxes the broker names work the same, and replicas
need no secret in common. Why not under the library's reserved root: a broker with
``--credentials`` lets nobody create names there but the ones it derives itself, so the records
live in mq9-mcp's own namespace beside the task timelines, which no principal may create, send
to or read through the tools.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio

from mq9_platform.client.client import Mq9Client
from mq9_platform.client.connection import Mq9Connection
from mq9_wire.protocol import check_address
from mq9_wire.protocol.errors import MailboxExists, Mq9Error
from mq9_wire.protocol.names import DEAD_LETTER_SUFFIX, digest

from .owners import client_of
from .task_events import MAILBOX_PREFIX as TIMELINE_PREFIX

log = logging.getLogger("mq9_mcp")

# Where a mailbox's creator is recorded: + the digest of its address
RECORDS_PREFIX = "mq9mcp.owner."
# mq9-mcp's own mailboxes: no principal creates, sends to or reads them through the tools
OWN_PREFIXES = (RECORDS_PREFIX, TIMELINE_PREFIX)
# How long an answer "this principal owns that mailbox" is used again without reading the
# record: a mailbox that expired and was made again by another is theirs after this at most
OWNED_SECONDS = 300.0
# The answers kept at once (the least recently used go first)
MAX_OWNED = 10_000
# The oldest messages of a timeline read to find its header (an event stored before the header
# is never a task's: ``TaskLog.load``)
TIMELINE_READ = 10


def record_address(mail_address: str) -> str:
    """The record mailbox of ``mail_address``: a digest, so any address fits."""
    return RECORDS_PREFIX + digest(mail_address)


def parse_prefixes(text: str) -> tuple[str, ...]:
    """``PREFIX[,PREFIX]`` as the option takes it: each a mailbox address (``ValueError``)."""
    prefixes = tuple(p.strip() for p in text.split(",") if p.strip())
    if not prefixes:
        raise ValueError("give one or more mailbox prefixes, separated by commas")
    for prefix in prefixes:
        check_address(prefix)
        if prefix.startswith(OWN_PREFIXES) or any(o.startswith(prefix + ".") for o in OWN_PREFIXES):
            raise ValueError(f"{prefix!r} holds mq9-mcp's own records: share another prefix")
    return prefixes


def add_owner_flags(parser: argparse.ArgumentParser) -> None:
    """``--shared-mailboxes``: what every principal of a shared server may read."""
    parser.add_argument_group("principals").add_argument(
        "--shared-mailboxes",
        metavar="PREFIX[,PREFIX]",
        help="over HTTP with a tokens file or OAuth, each principal reads, fetches, acks and "
        "deletes only in the mailboxes it created (and its agent's); these mailboxes (each "
        "PREFIX and the names under 'PREFIX.') every principal may read too. Sending to any "
        "address stays open (default: none shared but --agent-mailbox)",
    )


def shared_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[str, ...]:
    """The option's prefixes, or the parser's one-line error."""
    if args.shared_mailboxes is None:
        return ()
    try:
        return parse_prefixes(args.shared_mailboxes)
    except ValueError as exc:
        parser.error(f"--shared-mailboxes: {exc}")
    return ()  # (parser.error exits)


class MailboxOwners:
    """Who created each mailbox, read from (and written to) the broker over ``connection``
    (the acting one: a principal with a broker credential of its own writes and reads its
    records as itself). ``shared``: the operator's prefixes; ``agent_mailbox``: the server's."""

    def __init__(
        self,
        connection: Mq9Connection,
        timeout: float,
        *,
        agent_mailbox: str | None = None,
        shared: Sequence[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connection, self.timeout = connection, timeout
        self.agent_mailbox = agent_mailbox
        self.shared = tuple(shared)
        self.clock = clock  # the wall clock: a record's expiry is one (the broker's TTL)
        self._owned: OrderedDict[tuple[str, str], float] = OrderedDict()  # -> used until

    def is_shared(self, address: str) -> bool:
        """Whether every principal may read ``address`` (the operator shares it)."""
        if address == self.agent_mailbox:
            return True
        return any(address == p or address.startswith(p + ".") for p in self.shared)

    async def may_read(self, principal: str, address: str) -> bool:
        """Whether ``principal`` may read, fetch, ack and delete in ``address``: shared, its
        own, or the dead letters of one of those."""
        base = address.removesuffix(DEAD_LETTER_SUFFIX)
        if base and base != address and await self.may_read(principal, base):
            return True
        if self.is_shared(address) or self.knows(principal, address):
            return True
        if address.startswith(RECORDS_PREFIX):
            return False  # nobody's through the tools
        found = await self._owner(address)
        if found is None or found[0] != principal:
            return False
        self._remember(principal, address, found[1])
        return True

    async def prepare(self, address: str, ttl: int) -> None:
        """Make the record mailbox of ``address`` before a create of it (``ttl``: the
        mailbox's), so the record expires no later than the mailbox."""
        record = record_address(address)

        async def make(client: Mq9Client) -> None:
            with contextlib.suppress(MailboxExists):  # the mailbox's own, or one made before
                await client.mailbox_create(name=record, ttl=ttl)

        await self._write(address, make)

    async def claim(self, principal: str, address: str, ttl: int) -> None:
        """Record ``principal`` as the creator of ``address`` (which its create just made,
        ``ttl`` its TTL, 0: for ever)."""
        expires = self.clock() + ttl if ttl else 0.0
        self._remember(principal, address, expires)
        record = record_address(address)

        async def write(client: Mq9Client) -> None:
            with contextlib.suppress(MailboxExists):  # made by ``prepare``
                await client.mailbox_create(name=record, ttl=ttl)
            await client.send(record, {"owner": principal, "expires": expires})

        await self._write(address, write)

    async def _write(self, address: str, action: Callable[[Mq9Client], Awaitable[None]]) -> None:
        try:
            with anyio.fail_after(self.timeout):
                await self.connection.run(action)
        except (Mq9Error, TimeoutError) as exc:
            # this process still knows; another replica (or this one restarted) refuses its
            # creator until a create is made again: never another principal's read
            log.warning("could not record who created mailbox %r: %s", address, exc)

    async def _owner(self, address: str) -> tuple[str, float] | None:
        """Who created ``address`` and when the mailbox expires (0: never), as its first
        record (or its timeline's header) says."""
        timeline = address.startswith(TIMELINE_PREFIX)
        where = address if timeline else record_address(address)
        try:
            with anyio.fail_after(self.timeout):
                found = await self.connection.run(
                    lambda c: c.query(where, limit=TIMELINE_READ if timeline else 1)
                )
        except (Mq9Error, TimeoutError):  # none kept, or not this principal's at the broker
            return None
        for message in found:
            record = _record_in(message.payload, "header" if timeline else "owner")
            if record is None:
                continue
            owner, expires = record.get("owner"), record.get("expires", 0)
            if isinstance(owner, str) and owner and isinstance(expires, (int, float)):
                return (client_of(owner) if timeline else owner), float(expires)
        return None

    def knows(self, principal: str, address: str) -> bool:
        """Whether this process answers "``principal`` owns ``address``" without the broker."""
        until = self._owned.get((principal, address))
        if until is None or self.clock() >= until:
            return False
        self._owned.move_to_end((principal, address))
        return True

    def _remember(self, principal: str, address: str, expires: float) -> None:
        until = self.clock() + OWNED_SECONDS
        self._owned[(principal, address)] = min(until, expires) if expires else until
        self._owned.move_to_end((principal, address))
        while len(self._owned) > MAX_OWNED:
            self._owned.popitem(last=False)


def _record_in(payload: bytes, marker: str) -> dict[str, Any] | None:
    """A stored record holding ``marker``, else None."""
    try:
        record: Any = json.loads(payload)
    except ValueError:
        return None
    return record if isinstance(record, dict) and marker in record else None
