"""The names derived from a mailbox's, in one place: every side computes them from here.

mq9 itself derives no names. This library keeps records of its own in mailboxes it names
after the mailbox they serve: a group's leases, an agent's A2A task store, a caller's reply
mailbox, a mailbox's wake rules and dead letters; and the bundled broker announces an arrival
on a subject named after the mailbox. The client writes these names, the broker's ownership
rules (``--credentials``) read them back to find whose they are, and the waker listens on
them: a name that differed by one byte between them would orphan what is stored under it.
``tests/platform/protocol/test_derived_names.py`` holds them to literal strings.

A digest stands for a name where the name must not show (an arrival, the wake index) or
would not fit (a lease names a mailbox and a group, each up to the address limit).
"""

from __future__ import annotations

import functools
import hashlib

from .limits import MAX_ADDRESS_LENGTH
from .subjects import ARRIVALS_PREFIX

# A mailbox whose first segment is this belongs to the library: every tool refuses it, and a
# --credentials broker lets nobody create a name there but the ones below, each its owner's.
RESERVED_ROOT = "mq9"
TASKS_ROOT = RESERVED_ROOT + ".tasks."  # + digest(mailbox): the agent's A2A task store
CALLS_ROOT = RESERVED_ROOT + ".calls."  # + digest(caller's name): a caller's reply mailbox
LEASE_ROOT = RESERVED_ROOT + ".lease."  # + digest(mailbox "\n" group): a group's records
WAKE_ROOT = RESERVED_ROOT + ".wake."  # + digest(mailbox): its wake rules and their state
WAKE_INDEX = WAKE_ROOT + "index"  # where any agent lists its rules mailbox (a digest, no name)
# Wakes set aside, for the operator: WAKE_FAILED on an open broker; with --credentials
# "<WAKE_FAILED>.<digest(principal)>", one per waker's agent, which the broker lets that agent
# alone create (else the first agent to create it would own every waker's)
WAKE_FAILED = WAKE_ROOT + "failed"
DEAD_LETTER_SUFFIX = ".dlq"  # <mailbox>.dlq, or <prefix>.dlq.<digest(mailbox)> when long
CALLER_SUFFIX = ".calls"  # a toolkit's caller is named <its mailbox>.calls
ARRIVALS_WILDCARD = ARRIVALS_PREFIX + "*"  # every mailbox's arrivals
# The readiness probe's (metrics/probe.py): the agent its REPORT is stored under, and
# the mailbox its QUERY asks of. Nobody's: no client registers, unregisters or creates it, on
# any store, so no agent's request can make a server's /readyz fail
READYZ_PROBE = RESERVED_ROOT + ".readyz.probe"

DIGEST_DIGITS = 32  # hex digits: 128 bits of SHA-256
_KEPT_TEXT = 256  # characters: the longest text whose digest is kept (4,096 at most, ~1.5 MB)


def digest(text: str) -> str:
    """32 hex digits of the SHA-256 of ``text``'s UTF-8: the one digest every derived name
    carries. Those of texts short enough are kept, a bounded few: a broker names the same
    mailboxes, leases and principals again on each request."""
    if len(text) <= _KEPT_TEXT:
        return _kept_digest(text)
    return _digest(text)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_DIGITS]


_kept_digest = functools.lru_cache(maxsize=4096)(_digest)


def is_digest(text: str) -> bool:
    """Whether ``text`` is what ``digest`` writes (32 lowercase hex digits)."""
    return len(text) == DIGEST_DIGITS and all(c in "0123456789abcdef" for c in text)


def is_reserved(address: str) -> bool:
    """Whether ``address`` is under the reserved root (the root itself included)."""
    return address == RESERVED_ROOT or address.startswith(RESERVED_ROOT + ".")


def reserved_agent_refusal(verb: str, name: object) -> str | None:
    """Why ``verb`` (REGISTER, UNREGISTER, REPORT) of the agent ``name`` is refused: an
    agent name under the reserved root is the library's and the broker's, nobody's to take.
    The readiness probe alone REPORTs there, on its own name (no registration holds it)."""
    if not isinstance(name, str) or not is_reserved(name):
        return None
    if verb == "REPORT" and name == READYZ_PROBE:
        return None
    return (
        f"{verb} refused: agent name {name!r} is under '{RESERVED_ROOT}.', which the broker "
        "reserves (its readiness probe, task stores, reply mailboxes, leases, wake rules): "
        "give another name"
    )


def task_store_address(agent_mailbox: str) -> str:
    """The A2A task store of the agent served at ``agent_mailbox`` (all its replicas')."""
    return TASKS_ROOT + digest(agent_mailbox)


def caller_address(name: str) -> str:
    """The reply mailbox of the caller called ``name`` (e.g. ``agent.me.calls``): the same for
    every process of that caller, so a restarted one finds its calls; a reply mailbox's own
    address is used as it is."""
    return name if name.startswith(CALLS_ROOT) else CALLS_ROOT + digest(name)


def caller_name(mail_address: str) -> str:
    """The name of the caller a toolkit runs for the agent at ``mail_address``."""
    return mail_address + CALLER_SUFFIX


def lease_address(mail_address: str, group_name: str) -> str:
    """The lease mailbox of one mailbox and group: a digest, so its length never grows with
    theirs and no two pairs share one (a mailbox holds no newline)."""
    return LEASE_ROOT + lease_digest(mail_address, group_name)


def lease_digest(mail_address: str, group_name: str) -> str:
    """The digest ``lease_address`` carries (what a broker learns a lease's mailbox by)."""
    return digest(f"{mail_address}\n{group_name}")


def dead_letter_address(mail_address: str) -> str:
    """The default dead-letter mailbox of ``mail_address``: beside it, under its own name, so
    an allow-list that covers the mailbox's prefix covers it too.

    ``<mailbox>.dlq`` when that is a valid address. A mailbox within ``DEAD_LETTER_SUFFIX``'s
    length of the limit gets ``<as much of its name as fits>.dlq.<digest(mailbox)>``: as long
    as the limit at most, the same for every reader, one per mailbox (the digest), and never
    another mailbox's ``.dlq`` name (its last segment is hex, never ``dlq``)."""
    plain = mail_address + DEAD_LETTER_SUFFIX
    if len(plain) <= MAX_ADDRESS_LENGTH:
        return plain
    tail = f"{DEAD_LETTER_SUFFIX}.{digest(mail_address)}"
    return mail_address[: MAX_ADDRESS_LENGTH - len(tail)].rstrip(".") + tail


def wake_rules_address(mail_address: str) -> str:
    """The mailbox holding ``mail_address``'s wake rules and their state."""
    return WAKE_ROOT + digest(mail_address)


def is_wake_rules(address: str) -> bool:
    """``mq9.wake.<digest>``: a mailbox's wake rules."""
    return address.startswith(WAKE_ROOT) and is_digest(address[len(WAKE_ROOT) :])


def wake_failed_address(principal: str | None) -> str:
    """Where a waker logged in as ``principal`` (None: an open broker) sets wakes aside."""
    return WAKE_FAILED if not principal else f"{WAKE_FAILED}.{digest(principal)}"


def arrival_subject(mail_address: str) -> str:
    """Where the bundled broker (``--announce``) says a message was stored in
    ``mail_address``: the digest, never the name."""
    return ARRIVALS_PREFIX + digest(mail_address)
