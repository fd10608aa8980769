"""The names the library derives from a mailbox (issue #92): the contract, as literal strings.

Every side computes them (the client's groups, A2A and waker, the broker's ownership rules and
its arrivals), so a name that changed by one byte would orphan what is stored under the old
one: a group's leases, an agent's task store, its wake rules, its dead letters. The expected
strings below were computed by the code before the names had one module, and are kept."""

from __future__ import annotations

import pytest

from langchain_mq9.a2a import wire
from langchain_mq9.groups import dead_letters, leases
from langchain_mq9.wake import rules
from mq9_broker.identities import ownership
from mq9_wire import protocol as p

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
def test_every_side_derives_the_same_names(row: tuple[str, ...]) -> None:
    mailbox, d, tasks, caller, calls, lease, dlq, wake, failed = row
    assert wire.digest(mailbox) == rules.digest(mailbox) == ownership.digest(mailbox) == d
    assert wire.store_address(mailbox) == tasks
    assert wire.caller_address(mailbox) == caller
    assert wire.caller_address(mailbox + ".calls") == calls
    assert ownership.CALLS_ROOT + ownership.digest(mailbox + ownership.CALLER_SUFFIX) == calls
    assert leases.lease_address(mailbox, "workers") == lease
    assert ownership.LEASE_ROOT + ownership.digest(f"{mailbox}\nworkers") == lease
    assert dead_letters.dead_letter_address(mailbox) == dlq
    assert rules.rules_address(mailbox) == wake
    assert rules.failed_address(mailbox) == failed
    assert f"{ownership.WAKE_FAILED}.{ownership.digest(mailbox)}" == failed
    assert p.ARRIVALS_PREFIX + ownership.digest(mailbox) == f"$mq9.WAKE.{d}"


def test_the_fixed_names_and_roots() -> None:
    assert leases.RESERVED_ROOT == rules.RESERVED_ROOT == ownership.RESERVED_ROOT == "mq9"
    assert wire.TASKS_ROOT == ownership.TASKS_ROOT == "mq9.tasks."
    assert wire.CALLS_ROOT == ownership.CALLS_ROOT == "mq9.calls."
    assert ownership.LEASE_ROOT == "mq9.lease."
    assert rules.RULES_ROOT == ownership.WAKE_ROOT == "mq9.wake."
    assert rules.INDEX_ADDRESS == ownership.WAKE_INDEX == "mq9.wake.index"
    assert rules.FAILED_ADDRESS == ownership.WAKE_FAILED == rules.failed_address(None)
    assert rules.failed_address(None) == "mq9.wake.failed"
    assert dead_letters.DEAD_LETTER_SUFFIX == ownership.DEAD_LETTER_SUFFIX == ".dlq"
    assert ownership.CALLER_SUFFIX == ".calls"
    assert p.ARRIVALS_PREFIX == "$mq9.WAKE." and rules.ARRIVALS_WILDCARD == "$mq9.WAKE.*"


def test_a_reply_mailbox_is_its_own_caller_address() -> None:
    assert wire.caller_address("mq9.calls.abc") == "mq9.calls.abc"


def test_long_mailboxes_dead_letters() -> None:
    assert dead_letters.dead_letter_address(LONG) == LONG_DLQ
    assert dead_letters.dead_letter_address(CUT_AT_DOT) == CUT_AT_DOT_DLQ
    assert len(LONG_DLQ) == p.MAX_ADDRESS_LENGTH


def test_the_digest_of_any_text() -> None:
    # the empty text and a name beyond ASCII (its UTF-8 bytes are hashed)
    for digest in (wire.digest, rules.digest, ownership.digest):
        assert digest("") == "e3b0c44298fc1c149afbf4c8996fb924"
        assert digest("ü.box") == "f26b1e3e58187c0b7727103d9b64caaa"
        assert digest("x" * 300) == digest("x" * 300)  # past the kept texts: computed again


def test_reserved() -> None:
    for is_reserved in (leases.is_reserved, ownership.is_reserved):
        assert is_reserved("mq9") and is_reserved("mq9.lease.x") and is_reserved("mq9.")
        assert not is_reserved("mq9x") and not is_reserved("team.mq9") and not is_reserved("")
