"""Wake rules: what to wake, and how often, when mail arrives in a mailbox (docs/wake.md).

A rule is data: JSON stored as a keyed message in the mailbox's rules mailbox
``mq9.wake.<digest of the mailbox>`` (``book.py``), so it lives where the broker keeps state,
survives restarts and is read by every waker. Pure: no I/O here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mq9_wire import protocol as p
from mq9_wire.protocol import names

# The names of a mailbox's wake records, computed where the broker (which tells whose they are)
# and the other sides compute them
from mq9_wire.protocol.names import RESERVED_ROOT as RESERVED_ROOT
from mq9_wire.protocol.names import digest as digest

RULES_ROOT = names.WAKE_ROOT  # + digest(mailbox): that mailbox's rules and records
INDEX_ADDRESS = names.WAKE_INDEX  # one record per rules mailbox: its digest
# Wakes set aside, for the operator: FAILED_ADDRESS on an open broker (nothing is anyone's
# there); with --credentials one per waker's agent, failed_address(its name), which the broker
# lets that agent alone create (else the first agent to create it would own every waker's)
FAILED_ADDRESS = names.WAKE_FAILED
# What the bundled broker publishes (an empty body) when a message is stored in a mailbox,
# with --announce: the digest, never the name (names.arrival_subject)
ARRIVALS_PREFIX = p.ARRIVALS_PREFIX
ARRIVALS_WILDCARD = names.ARRIVALS_WILDCARD
rules_address = names.wake_rules_address  # where a mailbox's rules are kept
failed_address = names.wake_failed_address  # where a waker logged in as an agent sets aside

TARGETS = ("webhook", "agent_server", "command", "callback")
THREADS = ("mailbox", "sender")
MAX_RULES = 20  # per mailbox: every rule is read on every wake
MAX_NAME = 64
MAX_URL = 2048
MAX_ARGV = 32
MAX_ARG = 1024
MAX_ENV = 16
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,63}")
_HOURS = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])-([01][0-9]|2[0-3]):([0-5][0-9])")


class RuleError(ValueError):
    """A rule that cannot be kept: the one line says what to change."""


@dataclass(frozen=True, kw_only=True)
class WakeRule:
    """One rule: when mail waits in ``mailbox``, wake ``target``.

    Targets (one of ``TARGETS``): ``webhook`` (``url``; the body is signed with ``secret``,
    HMAC-SHA256; ``include_payload`` adds the waiting messages' payloads), ``agent_server``
    (``url`` of a LangGraph Agent Server, ``assistant``; a thread per ``thread``: "mailbox" or
    "sender"), ``command`` (``argv``, never a shell; ``env`` added to the environment, with
    the mailbox), ``callback`` (``callback``: the name a waker's owner registered in process).

    How often: ``min_interval`` seconds between two wakes, at most ``cap`` wakes per
    ``cap_window`` seconds (0: no cap), none in ``quiet_hours`` ("22:00-07:00", UTC; what
    arrives then wakes when they end). ``group``: the consumer group the agent reads with, so
    that mail it read already wakes nothing ("" counts every arrival).
    """

    mailbox: str
    name: str = "default"
    target: str
    url: str = ""
    secret: str = field(default="", repr=False)  # never shown (docs/security.md)
    include_payload: bool = False
    assistant: str = ""
    thread: str = "mailbox"
    argv: tuple[str, ...] = ()
    # names to text: a mapping or pairs, kept as sorted pairs (a rule is hashable, frozen)
    env: tuple[tuple[str, str], ...] | Mapping[str, str] = ()
    callback: str = ""
    group: str = ""
    min_interval: float = 1.0
    cap: int = 0
    cap_window: float = 3600.0
    quiet_hours: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", _env_pairs(self.env))
        _check(self)

    @property
    def key(self) -> str:
        """The rule's mq9-key in its rules mailbox (a new rule of the name replaces it)."""
        return "rule." + self.name

    def to_json(self) -> str:
        body: dict[str, Any] = {
            "mailbox": self.mailbox,
            "name": self.name,
            "target": self.target,
            "url": self.url,
            "secret": self.secret,
            "include_payload": self.include_payload,
            "assistant": self.assistant,
            "thread": self.thread,
            "argv": list(self.argv),
            "env": dict(_env_pairs(self.env)),
            "callback": self.callback,
            "group": self.group,
            "min_interval": self.min_interval,
            "cap": self.cap,
            "cap_window": self.cap_window,
            "quiet_hours": self.quiet_hours,
        }
        return json.dumps(body, separators=(",", ":"))

    def view(self) -> dict[str, Any]:
        """What a listing shows: the rule without its secret."""
        shown: dict[str, Any] = json.loads(self.to_json())
        shown["secret"] = "***" if self.secret else ""
        return shown

    @classmethod
    def from_json(cls, text: str | bytes) -> WakeRule:
        try:
            body = json.loads(text)
        except ValueError as exc:
            raise RuleError(f"a wake rule is a JSON object: {exc}") from None
        return cls.from_dict(body)

    @classmethod
    def from_dict(cls, body: object) -> WakeRule:
        if not isinstance(body, dict):
            raise RuleError("a wake rule is a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(body) - known)
        if unknown:
            raise RuleError(f"unknown wake rule field {unknown[0]!r}; known: {sorted(known)}")
        values = dict(body)
        if "argv" in values:
            values["argv"] = _strings("argv", values["argv"])
        if "env" in values and not isinstance(values["env"], dict):
            raise RuleError("env must be an object of names to text")
        try:
            return cls(**values)
        except TypeError as exc:
            raise RuleError(f"wake rule: {exc}") from None


def _env_pairs(env: object) -> tuple[tuple[str, str], ...]:
    if isinstance(env, Mapping):
        items = list(env.items())
    elif isinstance(env, (list, tuple)) and all(
        isinstance(pair, (list, tuple)) and len(pair) == 2 for pair in env
    ):
        items = [(pair[0], pair[1]) for pair in env]
    else:
        raise RuleError("env: a mapping of NAMES to text (or (name, text) pairs)")
    names = [k for k, _ in items]
    if len(set(names)) != len(names):
        raise RuleError("env: each name once")
    if not all(isinstance(k, str) for k in names):
        raise RuleError(f"env: at most {MAX_ENV} NAMES (A-Z, 0-9, _) to text")
    return tuple(sorted(items))


def _strings(name: str, value: object) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise RuleError(f"{name} must be a list of strings (never one shell string)")
    return tuple(value)


def _check(rule: WakeRule) -> None:
    try:
        p.check_address(rule.mailbox)
    except p.Mq9Error as exc:
        raise RuleError(f"mailbox: {exc}") from None
    if names.is_reserved(rule.mailbox):
        raise RuleError(
            f"mailboxes under the reserved root '{RESERVED_ROOT}' cannot have wake rules"
        )
    if not isinstance(rule.name, str) or not _NAME.fullmatch(rule.name):
        raise RuleError("name: 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit")
    if rule.target not in TARGETS:
        raise RuleError(f"target {rule.target!r}: one of {', '.join(TARGETS)}")
    for text_field in ("url", "secret", "assistant", "callback", "group", "quiet_hours"):
        value = getattr(rule, text_field)
        if not isinstance(value, str) or len(value) > MAX_URL or _control(value):
            raise RuleError(f"{text_field} must be text of at most {MAX_URL} characters")
    # any case: a scheme is case-insensitive, and the ceilings key a URL normalised
    # (receivers.py), however it is spelled
    if rule.target in ("webhook", "agent_server") and not rule.url[:8].lower().startswith(
        ("http://", "https://")
    ):
        raise RuleError(f"url: an http:// or https:// URL for a {rule.target} rule")
    if rule.target == "webhook" and len(rule.secret) < 16:
        raise RuleError("secret: at least 16 characters, to sign the webhook's body")
    if rule.target == "agent_server" and not rule.assistant:
        raise RuleError("assistant: the assistant id or graph name the run is for")
    if rule.thread not in THREADS:
        raise RuleError(f"thread {rule.thread!r}: one of {', '.join(THREADS)}")
    if rule.target == "command":
        if not rule.argv or len(rule.argv) > MAX_ARGV:
            raise RuleError(f"argv: 1 to {MAX_ARGV} arguments, the program first")
        if any(not isinstance(a, str) or len(a) > MAX_ARG or "\x00" in a for a in rule.argv):
            raise RuleError(f"argv: text arguments of at most {MAX_ARG} characters")
    pairs = _env_pairs(rule.env)
    if len(pairs) > MAX_ENV or any(
        not _ENV_NAME.fullmatch(k) or not isinstance(v, str) or len(v) > MAX_ARG or "\x00" in v
        for k, v in pairs
    ):
        raise RuleError(f"env: at most {MAX_ENV} NAMES (A-Z, 0-9, _) to text")
    if rule.target == "callback" and not rule.callback:
        raise RuleError("callback: the name the waker's owner registered")
    if not isinstance(rule.include_payload, bool):
        raise RuleError("include_payload must be true or false")
    for number in ("min_interval", "cap_window"):
        value = getattr(rule, number)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RuleError(f"{number} must be a number of seconds")
        if not 0 <= value <= 366 * 86400:
            raise RuleError(f"{number} must be between 0 and a year, in seconds")
    if isinstance(rule.cap, bool) or not isinstance(rule.cap, int) or not 0 <= rule.cap <= 10**6:
        raise RuleError("cap must be a whole number of wakes, 0 for none")
    if rule.cap and rule.cap_window <= 0:
        raise RuleError("cap_window must be positive with a cap")
    if rule.quiet_hours and not _HOURS.fullmatch(rule.quiet_hours):
        raise RuleError("quiet_hours: 'HH:MM-HH:MM' in UTC, e.g. '22:00-07:00'")


def _control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def quiet_until(rule: WakeRule, now: float) -> float | None:
    """When the quiet hours that hold at ``now`` (Unix seconds, UTC) end, or None."""
    match = _HOURS.fullmatch(rule.quiet_hours) if rule.quiet_hours else None
    if match is None:
        return None
    start = int(match[1]) * 3600 + int(match[2]) * 60
    end = int(match[3]) * 3600 + int(match[4]) * 60
    day = now - now % 86400
    second = now - day
    if start == end:
        return None
    if start < end:
        return day + end if start <= second < end else None
    if second >= start:
        return day + 86400 + end
    if second < end:
        return day + end
    return None
