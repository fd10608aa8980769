"""Where wake rules and a waker's records live on the broker: plain mq9 mailboxes.

- ``mq9.wake.<digest of M>``: mailbox M's rules (mq9-key ``rule.<name>``, tag ``rule``), its
  wake state (mq9-key and tag ``state``: the cursor, per rule the last wake, the cap's window,
  what waits for quiet hours or the minimum interval, and the claim its writer released) and
  wakers' claims (tag ``claim``, mq9-key ``claim.<the waker's instance>``: claims.py). One
  QUERY of the three tags reads them all. On the bundled broker with ``--credentials`` it is
  derived from M: only M's owner creates, writes or reads it, so only M's reader can add a
  rule for M (docs/security.md).
- ``mq9.wake.index``: one record per rules mailbox, its digest (keyed by it): what a waker
  reads to learn which mailboxes have rules, without their names.
- ``mq9.wake.failed`` (open broker) or ``mq9.wake.failed.<digest of the waker's agent>``
  (``--credentials``): wakes set aside after their retries, for the operator.

``RuleBook`` is the client's side: ``add``, ``list``, ``remove``.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from mq9_wire.protocol import Message
from mq9_wire.protocol.errors import MailboxExists, MailboxNotFound, Mq9Error

from ..client import Mq9Client
from .rules import INDEX_ADDRESS, MAX_RULES, RuleError, WakeRule, digest, rules_address

RULE_TAG = "rule"
CLAIM_TAG = "claim"
STATE_KEY = "state"
STATE_TAG = "state"  # a state record an older waker wrote has the key only (claims.py)
PAGE = 200  # records read per FETCH when the index is read whole


async def ensure_mailbox(client: Mq9Client, address: str) -> None:
    with contextlib.suppress(MailboxExists):
        await client.mailbox_create(name=address, ttl=0)


@dataclass
class RuleState:
    """What a waker keeps for one rule (in the mailbox's ``state`` record)."""

    last_wake: float = 0.0  # the waker's clock, seconds
    window_start: float = 0.0
    window_count: int = 0
    pending_from: int = -1  # the first msg_id a wake is still owed for, or -1
    failures: int = 0  # wakes set aside in a row
    last_error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MailboxState:
    """The mailbox's wake cursor (the highest msg_id seen), its rules' states, and the msg_id
    of the claim the waker that wrote it held (``released``: that claim holds nothing more,
    claims.py; -1 in a record an older waker wrote)."""

    seen: int = -1
    rules: dict[str, RuleState] = field(default_factory=dict)
    released: int = -1

    def to_json(self) -> str:
        return json.dumps(
            {
                "seen": self.seen,
                "rules": {n: s.to_dict() for n, s in self.rules.items()},
                "released": self.released,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_message(cls, message: Message | None) -> MailboxState:
        """The state a record holds, each field checked (on an open broker anyone may write
        it): a field of the wrong kind is read as its start value; the waker then holds the
        times and the cursor within what is possible (``Waker``: never in the future, never
        past the mailbox's end), so no record silences a rule for good."""
        if message is None:
            return cls()
        try:
            body = message.json()
        except ValueError:
            return cls()  # a damaged record: start again from what the mailbox holds
        if not isinstance(body, dict):
            return cls()
        rules_found = body.get("rules")
        rules: dict[str, RuleState] = {}
        if isinstance(rules_found, dict):
            for name, fields in list(rules_found.items())[:64]:
                if isinstance(fields, dict):
                    rules[str(name)] = _rule_state(fields)
        return cls(
            seen=_whole(body.get("seen"), -1),
            rules=rules,
            released=_whole(body.get("released"), -1),
        )


def _whole(value: object, default: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and -1 <= value < 2**64:
        return value
    return default


def _seconds(value: object) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return 0.0


def _rule_state(fields: dict[str, Any]) -> RuleState:
    error = fields.get("last_error")
    return RuleState(
        last_wake=_seconds(fields.get("last_wake")),
        window_start=_seconds(fields.get("window_start")),
        window_count=max(_whole(fields.get("window_count"), 0), 0),
        pending_from=_whole(fields.get("pending_from"), -1),
        failures=max(_whole(fields.get("failures"), 0), 0),
        last_error=error[:300] if isinstance(error, str) else "",
    )


class RuleBook:
    """The wake rules of mailboxes, on ``client``'s broker.

    >>> book = RuleBook(client)
    >>> await book.add(WakeRule(mailbox="agent.me", target="webhook", url=..., secret=...))
    >>> await book.list("agent.me")
    """

    def __init__(self, client: Mq9Client) -> None:
        self.client = client

    async def add(self, rule: WakeRule) -> WakeRule:
        """Store ``rule`` (replacing the mailbox's rule of that name) and list its mailbox in
        the index. The mailbox must exist: a rule for a name nobody reads wakes nobody."""
        await self._check_mailbox(rule.mailbox)
        address = rules_address(rule.mailbox)
        await ensure_mailbox(self.client, address)
        present = await self.list(rule.mailbox)
        if rule.name not in {r.name for r in present} and len(present) >= MAX_RULES:
            raise RuleError(f"{rule.mailbox!r} has {MAX_RULES} wake rules: remove one first")
        await self.client.send(address, rule.to_json(), key=rule.key, tags=[RULE_TAG])
        await self._list_in_index(rule.mailbox)
        return rule

    async def _list_in_index(self, mail_address: str) -> None:
        """(Again:) a waker reads the mailbox's rules anew when its entry comes again."""
        d = digest(mail_address)
        try:  # (with --credentials the index is its creator's, and takes every agent's SEND)
            await self.client.send(INDEX_ADDRESS, d, key=d)
        except MailboxNotFound:
            await ensure_mailbox(self.client, INDEX_ADDRESS)
            await self.client.send(INDEX_ADDRESS, d, key=d)

    async def list(self, mail_address: str) -> builtins.list[WakeRule]:
        """The mailbox's rules, by name."""
        return [rule for _, rule in await self.rule_records(mail_address)]

    async def rule_records(self, mail_address: str) -> builtins.list[tuple[int, WakeRule]]:
        try:
            found = await self.client.query(rules_address(mail_address), tags=[RULE_TAG])
        except MailboxNotFound:
            return []
        rules: dict[str, tuple[int, WakeRule]] = {}
        for message in found:
            try:
                rule = WakeRule.from_json(message.payload)
            except RuleError:
                continue  # not a rule this version can read: left alone
            if rule.mailbox == mail_address:  # a record naming another mailbox is no rule
                rules[rule.name] = (message.msg_id, rule)
        return [rules[name] for name in sorted(rules)]

    async def remove(self, mail_address: str, name: str) -> bool:
        """Remove the mailbox's rule ``name``; False if there was none."""
        for msg_id, rule in await self.rule_records(mail_address):
            if rule.name == name:
                await self.client.delete(rules_address(mail_address), msg_id)
                await self._list_in_index(mail_address)
                return True
        return False

    async def _check_mailbox(self, mail_address: str) -> None:
        # A QUERY of one message: the mailbox must be there, and (with --credentials) the
        # asker must be its reader, before anything is written for it.
        try:
            await self.client.query(mail_address, limit=1)
        except Mq9Error as exc:
            raise RuleError(f"no wake rule for {mail_address!r}: {exc}") from None
