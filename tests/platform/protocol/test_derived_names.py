"""The names the library derives from a mailbox (issue #92): the contract, as literal strings.

Every side computes them (the client's groups, A2A and waker, the broker's ownership rules and
its arrivals), so a name that changed by one byte would orphan what is stored under the old
one: a group's leases, an agent's task store, its wake rules, its dead letters. The expected
strings below were computed by the code before the names had one module
(``mq9_wire/protocol/names.py``), each side's copy, and are kept."""

from __future__ import annotations

import pytest

from mq9_broker.identities import owners, ownership
from mq9_platform.a2a import mail as wire
from mq9_platform.groups import dead_letters, leases
from mq9_platform.wake import rules
from mq9_wire import protocol as p
from mq9_wire.protocol import names

ALICE = "b83f9e7f72dcfad28a9acdf9674d58db"  # digest("agent.alice")
ORDERS = "ac5ca7166376689d7ef8b0894963ceb9"  # digest("team.orders")
A = "ca978112ca1bbdcafac231b39a23dc4d"  # digest("a")

# (mailbox, digest, task store, caller, caller of "<mailbox>.calls", lease of group "workers",
# dead letters, wake rules, a waker's failed wakes (the mailbox as its principal))
DERIVED = [
    (
        "agent.alice",
        ALICE,
        f"mq9.tasks.{ALICE}",
        f"mq9.calls.{ALICE}",
        "mq9.calls.c721406d7780cf3240db1d962254419b",
        "mq9.lease.f08bf4cd574a75128895ff09e71bc5d9",
        "agent.alice.dlq",
        f"mq9.wake.{ALICE}",
        f"mq9.wake.failed.{ALICE}",
    ),
    (
        "team.orders",
        ORDERS,
        f"mq9.tasks.{ORDERS}",
        f"mq9.calls.{ORDERS}",
        "mq9.calls.7ca2be5e87da0a9530fd87dabcd36ae1",
        "mq9.lease.6ffb19d7b16ceb6bd24a14e1999553cd",
        "team.orders.dlq",
        f"mq9.wake.{ORDERS}",
        f"mq9.wake.failed.{ORDERS}",
    ),
    (
        "a",
        A,
        f"mq9.tasks.{A}",
        f"mq9.calls.{A}",
        "mq9.calls.bda5a610fc012ee6f740b863ac9d5811",
        "mq9.lease.70f801eb5c83c258eb853295b410896b",
        "a.dlq",
        f"mq9.wake.{A}",
        f"mq9.wake.failed.{A}",
    ),
]

# Dead letters of a mailbox too long for "<mailbox>.dlq": as much of its name as fits (no dot
# left at the cut), then ".dlq." and its digest, 3,800 characters at most
LONG = "x" * 3795 + ".box"
LONG_DLQ = "x" * 3763 + ".dlq.b3e2cbfe235f075279cbaf1c78c7f436"
CUT_AT_DOT = "y" * 3762 + "." + "z" * 36
CUT_AT_DOT_DLQ = "y" * 3762 + ".dlq.56d323e435791ae8dae2dcfbe75aea86"


@pytest.mark.parametrize("row", DERIVED, ids=[row[0] for row in DERIVED])
def test_the_names_derived_from_a_mailbox(row: tuple[str, ...]) -> None:
    mailbox, d, tasks, caller, calls, lease, dlq, wake, failed = row
    assert names.digest(mailbox) == d
    assert names.task_store_address(mailbox) == tasks
    assert names.caller_address(mailbox) == caller
    assert names.caller_address(names.caller_name(mailbox)) == calls
    assert names.lease_address(mailbox, "workers") == lease
    assert names.LEASE_ROOT + names.lease_digest(mailbox, "workers") == lease
    assert names.dead_letter_address(mailbox) == dlq
    assert names.wake_rules_address(mailbox) == wake and names.is_wake_rules(wake)
    assert names.wake_failed_address(mailbox) == failed
    assert names.arrival_subject(mailbox) == f"$mq9.WAKE.{d}"


def test_the_fixed_names_and_roots() -> None:
    assert names.RESERVED_ROOT == "mq9"
    assert names.TASKS_ROOT == "mq9.tasks."
    assert names.CALLS_ROOT == "mq9.calls."
    assert names.LEASE_ROOT == "mq9.lease."
    assert names.WAKE_ROOT == "mq9.wake."
    assert names.WAKE_INDEX == "mq9.wake.index"
    assert names.WAKE_FAILED == names.wake_failed_address(None) == "mq9.wake.failed"
    assert names.DEAD_LETTER_SUFFIX == ".dlq"
    assert names.CALLER_SUFFIX == ".calls"
    assert p.ARRIVALS_PREFIX == "$mq9.WAKE." and names.ARRIVALS_WILDCARD == "$mq9.WAKE.*"


def test_a_reply_mailbox_is_its_own_caller_address() -> None:
    assert names.caller_address("mq9.calls.abc") == "mq9.calls.abc"


def test_long_mailboxes_dead_letters() -> None:
    assert names.dead_letter_address(LONG) == LONG_DLQ
    assert names.dead_letter_address(CUT_AT_DOT) == CUT_AT_DOT_DLQ
    assert len(LONG_DLQ) == p.MAX_ADDRESS_LENGTH


def test_the_digest_of_any_text() -> None:
    # the empty text and a name beyond ASCII (its UTF-8 bytes are hashed)
    assert names.digest("") == "e3b0c44298fc1c149afbf4c8996fb924"
    assert names.digest("ü.box") == "f26b1e3e58187c0b7727103d9b64caaa"
    long = "x" * 300  # past the texts whose digest is kept: computed each time, the same
    assert names.digest(long) == names.digest(long) == "0d4e2ca9e9cbced7a7a5380eb29e1a37"
    assert names.is_digest(names.digest("a")) and not names.is_digest("A" * 32)


def test_reserved() -> None:
    assert names.is_reserved("mq9") and names.is_reserved("mq9.lease.x")
    assert names.is_reserved("mq9.")
    assert not names.is_reserved("mq9x") and not names.is_reserved("team.mq9")
    assert not names.is_reserved("")


def test_every_side_takes_them_from_the_one_module() -> None:
    # the same objects, not copies: the client's groups, A2A and waker (their public names
    # kept), and the broker's ownership rules
    assert wire.digest is rules.digest is ownership.digest is names.digest
    assert wire.store_address is names.task_store_address
    assert wire.caller_address is names.caller_address
    assert wire.TASKS_ROOT is owners.TASKS_ROOT is names.TASKS_ROOT
    assert wire.CALLS_ROOT is ownership.CALLS_ROOT is names.CALLS_ROOT
    assert leases.lease_address is names.lease_address
    assert leases.is_reserved is ownership.is_reserved is names.is_reserved
    assert leases.RESERVED_ROOT is rules.RESERVED_ROOT is ownership.RESERVED_ROOT
    assert dead_letters.dead_letter_address is names.dead_letter_address
    assert dead_letters.DEAD_LETTER_SUFFIX is owners.DEAD_LETTER_SUFFIX
    assert rules.rules_address is names.wake_rules_address
    assert rules.failed_address is names.wake_failed_address
    assert rules.RULES_ROOT is owners.WAKE_ROOT is names.WAKE_ROOT
    assert rules.INDEX_ADDRESS is ownership.WAKE_INDEX is names.WAKE_INDEX
    assert rules.FAILED_ADDRESS is ownership.WAKE_FAILED is names.WAKE_FAILED
    assert owners.LEASE_ROOT is names.LEASE_ROOT
